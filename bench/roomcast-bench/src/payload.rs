//! The benchmark payload: `rcb:<room>:<seq>:<send-µs>:` padded with `x` to
//! the requested size.
//!
//! It is deliberately not JSON, so every transport carries it as a plain
//! string (Socket.IO's first argument, the `data` string of the `/ws` and
//! `/sse` envelope) with nothing to escape: receivers find it by scanning a
//! frame for the `rcb:` marker, without parsing the frame. The send time is
//! wall-clock microseconds, comparable across the bench's processes because
//! they all run on one machine.

use std::time::{SystemTime, UNIX_EPOCH};

const MARKER: &str = "rcb:";

/// Microseconds since the Unix epoch, the clock every process of a run shares.
pub fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// What a receiver learns from one payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    pub room: u32,
    pub seq: u64,
    pub sent_us: u64,
}

/// Builds the payload for `stamp`, padded to at least `size` bytes.
pub fn encode(stamp: Stamp, size: usize) -> String {
    let mut out = format!("{MARKER}{}:{}:{}:", stamp.room, stamp.seq, stamp.sent_us);
    while out.len() < size {
        out.push('x');
    }
    out
}

/// Finds the first payload in `frame` (any wire format) and decodes it.
pub fn find(frame: &str) -> Option<Stamp> {
    let start = frame.find(MARKER)? + MARKER.len();
    let mut fields = frame[start..].splitn(4, ':');
    let room = fields.next()?.parse().ok()?;
    let seq = fields.next()?.parse().ok()?;
    let sent_us = fields.next()?.parse().ok()?;
    // The fourth piece (padding and the rest of the frame) must exist: a
    // truncated payload has no trailing ':' after the timestamp.
    fields.next()?;
    Some(Stamp { room, seq, sent_us })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_inside_every_wire_format() {
        let stamp = Stamp {
            room: 12,
            seq: 3456,
            sent_us: 1_700_000_000_123_456,
        };
        let payload = encode(stamp, 100);
        assert_eq!(payload.len(), 100);
        let frames = [
            format!(r#"42["message","{payload}",{{"room":"r","id":"1","ts":1}}]"#),
            format!(r#"{{"type":"message","channel":"r","data":"{payload}","id":"1","ts":1}}"#),
            format!("event: message\nid: 1\ndata: {{\"data\":\"{payload}\"}}\n\n"),
        ];
        for frame in frames {
            assert_eq!(find(&frame), Some(stamp), "{frame}");
        }
    }

    #[test]
    fn rejects_frames_without_a_whole_payload() {
        assert_eq!(find("42[\"hello\",\"room\"]"), None);
        assert_eq!(find("rcb:1:2:3"), None);
        assert_eq!(find("rcb:a:2:3:"), None);
    }
}
