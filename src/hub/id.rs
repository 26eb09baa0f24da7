//! Message ids as clients see them (docs/RECOVERY.md, "The id").
//!
//! A message's number `n` is node-local (the hub's clock counter: the memory
//! broker, a plain `PUBLISH`) or the log's (a logged message), and a logged
//! message also names the epoch of its log. On the wire the first is `<n>`,
//! the second `<epoch>:<n>`, the epoch in lowercase base 36; `since` and
//! `Last-Event-ID` are parsed back into a [`Since`].

use std::fmt;

/// Where a logged message sits in its room's log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogPosition {
    /// The life of the log it was written to.
    pub epoch: u64,
    /// The id of the room's previous entry in the log (0: none, the room's
    /// log was empty or absent): lets a reader check it holds every entry.
    pub prev: u64,
}

/// A logged message's id: its log's epoch and its number there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogId {
    pub epoch: u64,
    pub n: u64,
}

/// What a resuming client says it saw last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Since {
    /// A node-local id: resumed from this node's history.
    Local(u64),
    /// A logged message's id: resumed from the log, on any node.
    Log(LogId),
}

impl Since {
    /// Parses a wire id: `<n>` or `<epoch>:<n>`. `None` for anything else.
    pub fn parse(text: &str) -> Option<Since> {
        match text.split_once(':') {
            None => text.parse().ok().map(Since::Local),
            Some((epoch, n)) => Some(Since::Log(LogId {
                epoch: parse_base36(epoch)?,
                n: n.parse().ok()?,
            })),
        }
    }
}

/// Formats a message's wire id (`<n>` or `<epoch>:<n>`) without allocating.
pub struct WireId {
    pub n: u64,
    pub epoch: Option<u64>,
}

impl WireId {
    /// The epoch alone as the wire writes it (empty without one).
    pub fn epoch_text(&self) -> String {
        struct Epoch(u64);
        impl fmt::Display for Epoch {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write_base36(f, self.0)
            }
        }
        self.epoch.map(|e| Epoch(e).to_string()).unwrap_or_default()
    }
}

impl fmt::Display for WireId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(epoch) = self.epoch {
            write_base36(f, epoch)?;
            f.write_str(":")?;
        }
        write!(f, "{}", self.n)
    }
}

fn write_base36(f: &mut fmt::Formatter<'_>, mut value: u64) -> fmt::Result {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut buf = [0u8; 13];
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = DIGITS[(value % 36) as usize];
        value /= 36;
        if value == 0 {
            break;
        }
    }
    // Only ASCII digits and letters were written.
    f.write_str(std::str::from_utf8(&buf[at..]).map_err(|_| fmt::Error)?)
}

/// Lowercase base 36, at most 13 digits (a u64), nothing else.
pub fn parse_base36(text: &str) -> Option<u64> {
    if text.is_empty() || text.len() > 13 || text.bytes().any(|b| b.is_ascii_uppercase()) {
        return None;
    }
    u64::from_str_radix(text, 36).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_ids_round_trip() {
        let logged = WireId {
            n: 115_638_624_256_000_123,
            epoch: Some(1_764_504_000_123_456),
        };
        let text = logged.to_string();
        assert_eq!(text, "hdgpy3j39c:115638624256000123");
        assert_eq!(
            Since::parse(&text),
            Some(Since::Log(LogId {
                epoch: 1_764_504_000_123_456,
                n: 115_638_624_256_000_123
            }))
        );
        let local = WireId { n: 42, epoch: None }.to_string();
        assert_eq!(local, "42");
        assert_eq!(Since::parse(&local), Some(Since::Local(42)));
        assert_eq!(
            WireId {
                n: 7,
                epoch: Some(0)
            }
            .to_string(),
            "0:7"
        );
        assert_eq!(
            WireId {
                n: 7,
                epoch: Some(36)
            }
            .to_string(),
            "10:7"
        );
        assert_eq!(
            WireId {
                n: 1,
                epoch: Some(u64::MAX)
            }
            .to_string(),
            "3w5e11264sgsf:1"
        );
    }

    #[test]
    fn malformed_ids_are_refused() {
        for bad in [
            "",
            ":",
            "x",
            "-1",
            "1.5",
            "a:",
            ":1",
            "A:1",
            "a:b",
            "a:-1",
            "a:1:2",
            "3w5e11264sgsg:1",
            "zzzzzzzzzzzzzz:1",
            "18446744073709551616",
        ] {
            assert_eq!(Since::parse(bad), None, "{bad:?}");
        }
    }
}
