//! Which master of a Redis Cluster owns a room: the key slot of its name and
//! the slot map read from `CLUSTER SLOTS`.
//!
//! Owns: [`slot`] (CRC16/XMODEM of the name, or of its `{hashtag}`, modulo
//! 16384, exactly as Redis computes it for keys and shard channels) and
//! [`SlotMap`], parsed from the reply of `CLUSTER SLOTS` (masters only: a
//! shard channel is served by its slot's master). Never: talks to Redis
//! (the cluster's topology task does and hands the reply here).
//!
//! Called by the cluster broker (routing joins, publishes, moves), by the
//! bench's cluster publisher (it routes as the broker does), and by the
//! subscriber (shard channels are subscribed one slot per command; a `MOVED
//! <slot>` reply names the rooms it concerns).

use redis::Value;

/// Slots of a Redis Cluster.
pub const SLOTS: usize = 16384;

/// The slot of a key or shard channel: CRC16 of the part between the first
/// `{` and the next `}` when that part is not empty, else of the whole name.
pub fn slot(name: &[u8]) -> u16 {
    let hashed = match name.iter().position(|&b| b == b'{') {
        Some(open) => match name[open + 1..].iter().position(|&b| b == b'}') {
            Some(len) if len > 0 => &name[open + 1..open + 1 + len],
            _ => name,
        },
        None => name,
    };
    crc16(hashed) % SLOTS as u16
}

/// CRC16/XMODEM (polynomial 0x1021, initial 0), the one Redis Cluster uses.
fn crc16(bytes: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &byte in bytes {
        crc ^= (byte as u16) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// A master's address as the cluster announces it: `host:port`.
pub type Node = String;

/// The master of every slot (`None`: no master serves it now).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotMap {
    owners: Vec<Option<usize>>,
    masters: Vec<Node>,
}

impl SlotMap {
    /// No slot served: before the first `CLUSTER SLOTS` answered.
    pub fn empty() -> SlotMap {
        SlotMap {
            owners: vec![None; SLOTS],
            masters: Vec::new(),
        }
    }

    /// Parses a `CLUSTER SLOTS` reply: `[[start, end, [host, port, id, ...],
    /// replica...], ...]`. `queried` stands in for a master announced with an
    /// empty host (Redis: "the same host as the node answering").
    pub fn parse(reply: &Value, queried: &str) -> Result<SlotMap, String> {
        let Value::Array(ranges) = reply else {
            return Err(format!("CLUSTER SLOTS: not an array: {reply:?}"));
        };
        let mut map = SlotMap::empty();
        for range in ranges {
            let Value::Array(items) = range else {
                return Err("CLUSTER SLOTS: a range is not an array".into());
            };
            let (Some(start), Some(end), Some(Value::Array(master))) =
                (integer(items.first()), integer(items.get(1)), items.get(2))
            else {
                return Err("CLUSTER SLOTS: a range lacks start, end or master".into());
            };
            if !(0..SLOTS as i64).contains(&start) || !(start..SLOTS as i64).contains(&end) {
                return Err(format!("CLUSTER SLOTS: bad range {start}-{end}"));
            }
            let host = match master.first() {
                Some(Value::BulkString(host)) => String::from_utf8_lossy(host).into_owned(),
                Some(Value::SimpleString(host)) => host.clone(),
                _ => return Err("CLUSTER SLOTS: a master lacks its host".into()),
            };
            let Some(port) = integer(master.get(1)) else {
                return Err("CLUSTER SLOTS: a master lacks its port".into());
            };
            let host = match host.as_str() {
                // Unknown endpoint: the queried node's host.
                "" | "?" => queried
                    .rsplit_once(':')
                    .map_or(queried, |(h, _)| h)
                    .to_string(),
                _ => host,
            };
            let node = if host.contains(':') {
                format!("[{host}]:{port}")
            } else {
                format!("{host}:{port}")
            };
            let index = match map.masters.iter().position(|m| *m == node) {
                Some(index) => index,
                None => {
                    map.masters.push(node);
                    map.masters.len() - 1
                }
            };
            for owner in &mut map.owners[start as usize..=end as usize] {
                *owner = Some(index);
            }
        }
        Ok(map)
    }

    /// The master serving `slot`.
    pub fn owner(&self, slot: u16) -> Option<&Node> {
        self.owners
            .get(slot as usize)
            .copied()
            .flatten()
            .map(|index| &self.masters[index])
    }

    /// Every master that serves at least one slot.
    pub fn masters(&self) -> &[Node] {
        &self.masters
    }

    /// True when every slot has a master.
    pub fn complete(&self) -> bool {
        self.owners.iter().all(Option::is_some)
    }
}

fn integer(value: Option<&Value>) -> Option<i64> {
    match value {
        Some(Value::Int(n)) => Some(*n),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_match_redis() {
        // Values from the Redis Cluster specification and `CLUSTER KEYSLOT`.
        assert_eq!(crc16(b"123456789"), 0x31C3);
        assert_eq!(slot(b"foo"), 12182);
        assert_eq!(slot(b"bar"), 5061);
        assert_eq!(slot(b"{user1000}.following"), slot(b"user1000"));
        assert_eq!(slot(b"{user1000}.followers"), slot(b"user1000"));
        // An empty tag hashes the whole name; only the first `{` counts.
        assert_eq!(slot(b"foo{}{bar}"), crc16(b"foo{}{bar}") % 16384);
        assert_eq!(slot(b"foo{{bar}}zap"), slot(b"{bar"));
        assert_eq!(slot(b"foo{bar}{zap}"), slot(b"bar"));
        assert_eq!(slot(b""), 0);
    }

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    fn range(start: i64, end: i64, host: &str, port: i64) -> Value {
        Value::Array(vec![
            Value::Int(start),
            Value::Int(end),
            Value::Array(vec![bulk(host), Value::Int(port), bulk("id")]),
            Value::Array(vec![bulk(host), Value::Int(port + 1), bulk("replica")]),
        ])
    }

    #[test]
    fn a_cluster_slots_reply_maps_every_slot_to_its_master() {
        let reply = Value::Array(vec![
            range(0, 5460, "10.0.0.1", 7000),
            range(5461, 10922, "", 7002),
            range(10923, 16383, "::1", 7004),
        ]);
        let map = SlotMap::parse(&reply, "10.0.0.9:7002").unwrap();
        assert!(map.complete());
        assert_eq!(map.owner(0).unwrap(), "10.0.0.1:7000");
        assert_eq!(map.owner(5461).unwrap(), "10.0.0.9:7002");
        assert_eq!(map.owner(16383).unwrap(), "[::1]:7004");
        assert_eq!(map.masters().len(), 3);

        let partial = SlotMap::parse(&Value::Array(vec![range(0, 10, "h", 1)]), "q:1").unwrap();
        assert!(!partial.complete());
        assert_eq!(partial.owner(11), None);

        for bad in [
            Value::Int(1),
            Value::Array(vec![Value::Int(1)]),
            Value::Array(vec![range(10, 5, "h", 1)]),
            Value::Array(vec![range(0, 16384, "h", 1)]),
        ] {
            assert!(SlotMap::parse(&bad, "q:1").is_err(), "{bad:?}");
        }
    }
}
