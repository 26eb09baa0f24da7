//! The room log on NATS JetStream (docs/RECOVERY.md, "NATS JetStream"):
//! the one stream over `<prefix>.>` and its settings, the subjects its
//! stored messages are republished on (which carry the epoch and, in
//! headers, the sequence and the room's previous one), and the rules that
//! tell a resumable gap from one that is not.
//!
//! Pure: the broker (`mod.rs`) creates the stream and runs the reads.

use async_nats::jetstream::stream::{Config, Republish};
use bytes::Bytes;

use crate::brokers::{LogBounds, Logged, REORDER_WINDOW_MS};

/// The first token of every republished subject: roomcast's own, outside
/// `<prefix>.>` (a republish must not feed its own stream).
const ROOT: &str = "_roomcast";

/// The stream's name for subject prefix `prefix`: NATS names hold no `.`,
/// whitespace, `*`, `>` or path separators, so anything but letters,
/// digits, `-` and `_` becomes `_`.
pub fn stream_name(prefix: &str) -> String {
    let safe: String = prefix
        .chars()
        .map(|c| match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '-' | '_' => c,
            _ => '_',
        })
        .collect();
    format!("roomcast_{safe}")
}

/// The stream's settings: every subject under the prefix, `bounds.max_len`
/// messages per subject, each kept `bounds.ttl`, stored messages
/// republished under the epoch (see [`republished_room`]).
pub fn stream_config(prefix: &str, bounds: LogBounds, epoch: u64) -> Config {
    Config {
        name: stream_name(prefix),
        subjects: vec![format!("{prefix}.>")],
        max_messages_per_subject: i64::try_from(bounds.max_len).unwrap_or(i64::MAX),
        max_age: bounds.ttl,
        // Reads of one subject's messages after a sequence (`DIRECT.GET`).
        allow_direct: true,
        republish: Some(Republish {
            source: format!("{prefix}.>"),
            destination: format!("{ROOT}.{prefix}.{epoch}.>"),
            headers_only: false,
        }),
        ..Config::default()
    }
}

/// The epoch a stream of ours was created with, from its republish
/// destination; `None` for a stream roomcast did not create.
pub fn epoch_of(config: &Config, prefix: &str) -> Option<u64> {
    let destination = &config.republish.as_ref()?.destination;
    let epoch = destination
        .strip_prefix(ROOT)?
        .strip_prefix('.')?
        .strip_prefix(prefix)?
        .strip_prefix('.')?
        .strip_suffix(".>")?;
    parse_epoch(epoch)
}

/// Whether `have` needs updating to `want` (limits differ, or the republish
/// is missing): the epoch of `have` is kept by the caller.
pub fn differs(have: &Config, want: &Config) -> bool {
    have.subjects != want.subjects
        || have.max_messages_per_subject != want.max_messages_per_subject
        || have.max_age != want.max_age
        || !have.allow_direct
        || have.republish != want.republish
}

/// The subject a node subscribes for `room`: its stored messages as the
/// stream republishes them, under any epoch.
pub fn live_subject(prefix: &str, room: &str) -> String {
    format!("{ROOT}.{prefix}.*.{room}")
}

/// The room and log position of a republished message: the epoch from its
/// subject, `Nats-Sequence` and `Nats-Last-Sequence` (the previous
/// sequence of the same subject, 0 for its first) from its headers.
pub fn republished_room<'a>(
    prefix: &str,
    subject: &'a str,
    headers: Option<&async_nats::HeaderMap>,
) -> Option<(&'a str, Logged)> {
    let rest = subject
        .strip_prefix(ROOT)?
        .strip_prefix('.')?
        .strip_prefix(prefix)?
        .strip_prefix('.')?;
    let (epoch, room) = rest.split_once('.')?;
    let headers = headers?;
    let number = |name: &str| headers.get(name)?.as_str().parse::<u64>().ok();
    Some((
        room,
        Logged {
            epoch: parse_epoch(epoch)?,
            n: number(async_nats::header::NATS_SEQUENCE.as_ref())?,
            prev: number(async_nats::header::NATS_LAST_SEQUENCE.as_ref())?,
        },
    ))
}

/// One message of a room read from the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub seq: u64,
    /// When the stream stored it, ms since the Unix epoch.
    pub time_ms: u64,
    pub payload: Bytes,
}

/// What a read of one room's subject after a sequence found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Read {
    /// The stream's epoch; `None`: there is no stream (deleted, never made).
    pub epoch: Option<u64>,
    /// `max_msgs_per_subject`.
    pub limit: u64,
    /// Whether the stream drops messages by age (`max_age` > 0).
    pub ages: bool,
    /// Messages of the subject kept now.
    pub count: u64,
    /// The subject's oldest kept sequence, if any.
    pub oldest: Option<u64>,
    /// Message `since` (of any subject), if it is still kept.
    pub since: Option<Since>,
    /// The subject's newest sequence (0: none).
    pub newest: u64,
    /// The subject's messages after `since`, oldest first; when `since` is
    /// another room's, from a window before it (see [`Read::missed`]).
    pub entries: Vec<Entry>,
}

/// The message a client resumes after, as the stream keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Since {
    /// It is the read room's own.
    pub own: bool,
    /// When the stream stored it, ms since the Unix epoch.
    pub time_ms: u64,
}

impl Read {
    /// Whether a client that saw `n` of `epoch` last cannot be given exactly
    /// what it missed from these entries. Nothing of the subject kept at or
    /// before `n` means something after `n` may have been dropped: by the
    /// per-subject limit (the subject is at it; its count never falls but
    /// by age) or by age (`n` itself is gone: messages expire oldest first,
    /// so while `n` is kept nothing after it expired).
    pub fn is_gap(&self, epoch: u64, n: u64) -> bool {
        if self.epoch != Some(epoch) {
            return true;
        }
        let kept_up_to_n = self.oldest.is_some_and(|oldest| oldest <= n);
        !kept_up_to_n && (self.count >= self.limit || (self.ages && self.since.is_none()))
    }

    /// What a client that saw `n` of `epoch` last missed; `None` when that
    /// cannot be known exactly (the client is told to reset).
    ///
    /// `n` of this room: the entries after it. Another room's (one id for
    /// several rooms: a Socket.IO offset, an SSE `Last-Event-ID`): each
    /// room reaches a node on its own subscription, so an entry stored
    /// within [`REORDER_WINDOW_MS`] either side of `n` may have reached the
    /// client before or after `n` did; only with none that near is every
    /// entry clearly seen (before) or missed (after), as on Redis Cluster
    /// (`redis::log::Read::missed`). An `n` no longer kept has no time:
    /// another room's then cannot be placed.
    pub fn missed(&self, epoch: u64, n: u64) -> Option<&[Entry]> {
        if self.is_gap(epoch, n) {
            return None;
        }
        let after = self.entries.partition_point(|entry| entry.seq <= n);
        match self.since {
            Some(Since { own: true, .. }) => {}
            Some(Since {
                own: false,
                time_ms,
            }) => {
                let near = |entry: &Entry| entry.time_ms.abs_diff(time_ms) <= REORDER_WINDOW_MS;
                if self.entries.iter().any(near) {
                    return None;
                }
            }
            None if n == 0 => {}
            None => return None,
        }
        Some(&self.entries[after..])
    }
}

/// The epoch as a subject token: decimal (the wire's base 36 is the hub's).
fn parse_epoch(text: &str) -> Option<u64> {
    match text.bytes().all(|b| b.is_ascii_digit()) {
        true => text.parse().ok(),
        false => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const BOUNDS: LogBounds = LogBounds {
        max_len: 3,
        ttl: Duration::from_secs(300),
    };

    #[test]
    fn the_stream_names_its_epoch_and_prefix() {
        let config = stream_config("rc.app", BOUNDS, 1_764_504_000_123_456);
        assert_eq!(config.name, "roomcast_rc_app");
        assert_eq!(config.subjects, vec!["rc.app.>".to_string()]);
        assert_eq!(config.max_messages_per_subject, 3);
        assert_eq!(
            config.republish.as_ref().unwrap().destination,
            "_roomcast.rc.app.1764504000123456.>"
        );
        assert_eq!(epoch_of(&config, "rc.app"), Some(1_764_504_000_123_456));
        assert_eq!(epoch_of(&config, "rc"), None);
        assert_eq!(epoch_of(&Config::default(), "rc.app"), None);
        assert!(differs(&config, &stream_config("rc.app", BOUNDS, 1)));
        let mut same_epoch = stream_config("rc.app", BOUNDS, 1_764_504_000_123_456);
        assert!(!differs(&config, &same_epoch));
        same_epoch.max_messages_per_subject = 4;
        assert!(differs(&config, &same_epoch));
        assert_eq!(stream_name("a/b c*"), "roomcast_a_b_c_");
    }

    #[test]
    fn republished_messages_carry_their_position() {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Sequence", "12");
        headers.insert("Nats-Last-Sequence", "9");
        let at = republished_room("rc", "_roomcast.rc.1764504000123456.a.b", Some(&headers));
        assert_eq!(
            at,
            Some((
                "a.b",
                Logged {
                    epoch: 1_764_504_000_123_456,
                    n: 12,
                    prev: 9
                }
            ))
        );
        assert_eq!(live_subject("rc", "a.b"), "_roomcast.rc.*.a.b");
        assert_eq!(
            republished_room("rc", "_roomcast.rc.1764504000123456.a", None),
            None
        );
        assert_eq!(
            republished_room("rc", "_roomcast.other.7.a", Some(&headers)),
            None
        );
        assert_eq!(
            republished_room("rc", "_roomcast.rc.x7.a", Some(&headers)),
            None
        );
        let mut no_last = async_nats::HeaderMap::new();
        no_last.insert("Nats-Sequence", "12");
        assert_eq!(
            republished_room("rc", "_roomcast.rc.7.a", Some(&no_last)),
            None
        );
    }

    fn read(oldest: Option<u64>, count: u64, since_kept: bool) -> Read {
        Read {
            epoch: Some(7),
            limit: 3,
            ages: true,
            count,
            oldest,
            since: since_kept.then_some(Since {
                own: false,
                time_ms: 0,
            }),
            newest: 0,
            entries: Vec::new(),
        }
    }

    #[test]
    fn gaps_are_told_from_what_can_be_filled() {
        // The subject keeps something at or before the client's id: its
        // entries after the id are all there.
        assert!(!read(Some(5), 3, false).is_gap(7, 5));
        assert!(!read(Some(2), 3, true).is_gap(7, 5));
        // Another epoch, or no stream.
        assert!(read(Some(2), 3, true).is_gap(8, 5));
        assert!(
            Read {
                epoch: None,
                ..read(None, 0, true)
            }
            .is_gap(7, 5)
        );
        // Oldest kept after the id, below the limit, the id still kept
        // (another room's): nothing was dropped.
        assert!(!read(Some(9), 2, true).is_gap(7, 5));
        assert!(!read(None, 0, true).is_gap(7, 5));
        // At the limit: what came between may have been dropped.
        assert!(read(Some(9), 3, true).is_gap(7, 5));
        // The id itself expired: what followed may have too.
        assert!(read(Some(9), 1, false).is_gap(7, 5));
        assert!(read(None, 0, false).is_gap(7, 5));
        // Without max_age, only the limit drops.
        assert!(
            !Read {
                ages: false,
                ..read(Some(9), 1, false)
            }
            .is_gap(7, 5)
        );
    }

    fn entry(seq: u64, time_ms: u64) -> Entry {
        Entry {
            seq,
            time_ms,
            payload: Bytes::new(),
        }
    }

    #[test]
    fn another_rooms_id_is_exact_only_far_from_this_rooms_entries() {
        const AT: u64 = 1_764_504_000_000;
        let resumed = |own: bool, entries: Vec<Entry>| Read {
            since: Some(Since { own, time_ms: AT }),
            oldest: entries.first().map(|entry| entry.seq),
            count: entries.len() as u64,
            limit: 100,
            entries,
            ..read(None, 0, true)
        };
        let seqs = |missed: Option<&[Entry]>| {
            missed.map(|entries| entries.iter().map(|entry| entry.seq).collect::<Vec<_>>())
        };
        // Its own entry: exactly what follows, however near.
        let own = resumed(
            true,
            vec![entry(9, AT - 5), entry(10, AT), entry(11, AT + 3)],
        );
        assert_eq!(seqs(own.missed(7, 10)), Some(vec![11]));
        // Another room's, with an entry of this room a few ms before or
        // after it: may have reached the client either way.
        let before = resumed(false, vec![entry(9, AT - 3)]);
        assert_eq!(seqs(before.missed(7, 10)), None);
        let after = resumed(false, vec![entry(11, AT + REORDER_WINDOW_MS)]);
        assert_eq!(seqs(after.missed(7, 10)), None);
        // None that near: the older ones were seen, the newer missed.
        let far = resumed(
            false,
            vec![entry(4, AT - REORDER_WINDOW_MS - 1), entry(30, AT + 5_000)],
        );
        assert_eq!(seqs(far.missed(7, 10)), Some(vec![30]));
        // The id no longer kept: another room's cannot be placed in time.
        let unplaced = Read {
            since: None,
            ages: false,
            ..resumed(false, vec![entry(30, AT + 5_000)])
        };
        assert_eq!(seqs(unplaced.missed(7, 10)), None);
        // Another epoch stays a gap.
        assert_eq!(seqs(far.missed(8, 10)), None);
    }
}
