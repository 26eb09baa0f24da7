//! Publishing into a Redis Cluster the way a back end does for roomcast's
//! `--broker redis-cluster`: `SPUBLISH room payload` on the master that owns
//! the room's slot (CRC16 of the name, or of its `{hash tag}`), read once
//! from `CLUSTER SLOTS` at a seed node. The bench's cluster stays still
//! during a run, so there is no `MOVED` handling: a redirect is an error.

use redis::Value;
use redis::aio::MultiplexedConnection;

const SLOTS: usize = 16384;

pub struct ClusterPublisher {
    masters: Vec<MultiplexedConnection>,
    /// Per slot, the index of its master in `masters`.
    owner: Vec<usize>,
}

impl ClusterPublisher {
    pub async fn connect(seed: &str) -> Result<ClusterPublisher, String> {
        let mut connection = open(seed).await?;
        let slots: Value = redis::cmd("CLUSTER")
            .arg("SLOTS")
            .query_async(&mut connection)
            .await
            .map_err(|e| format!("CLUSTER SLOTS at {seed}: {e}"))?;
        let Value::Array(ranges) = slots else {
            return Err(format!("CLUSTER SLOTS at {seed}: not an array"));
        };
        let mut addresses: Vec<String> = Vec::new();
        let mut owner = vec![usize::MAX; SLOTS];
        for range in ranges {
            let (start, end, address) = slot_range(&range)
                .ok_or_else(|| format!("CLUSTER SLOTS at {seed}: unexpected entry {range:?}"))?;
            let index = match addresses.iter().position(|a| *a == address) {
                Some(index) => index,
                None => {
                    addresses.push(address);
                    addresses.len() - 1
                }
            };
            if start > end || end >= SLOTS {
                return Err(format!("CLUSTER SLOTS at {seed}: bad range {start}-{end}"));
            }
            for slot_owner in &mut owner[start..=end] {
                *slot_owner = index;
            }
        }
        if owner.contains(&usize::MAX) {
            return Err(format!("the cluster at {seed} does not cover every slot"));
        }
        let mut masters = Vec::with_capacity(addresses.len());
        for address in &addresses {
            masters.push(open(&format!("redis://{address}")).await?);
        }
        Ok(ClusterPublisher { masters, owner })
    }

    pub async fn publish(&mut self, channel: &str, body: &str) -> Result<(), String> {
        let master = &mut self.masters[self.owner[slot(channel.as_bytes()) as usize]];
        redis::cmd("SPUBLISH")
            .arg(channel)
            .arg(body)
            .query_async::<i64>(master)
            .await
            .map(|_| ())
            .map_err(|e| format!("SPUBLISH {channel}: {e}"))
    }
}

async fn open(url: &str) -> Result<MultiplexedConnection, String> {
    let client = redis::Client::open(url).map_err(|e| format!("{url}: {e}"))?;
    client
        .get_multiplexed_async_connection()
        .await
        .map_err(|e| format!("{url}: {e}"))
}

/// `[start, end, [host, port, …], replicas…]` → (start, end, "host:port").
fn slot_range(range: &Value) -> Option<(usize, usize, String)> {
    let Value::Array(fields) = range else {
        return None;
    };
    let int = |v: &Value| match v {
        Value::Int(n) => usize::try_from(*n).ok(),
        _ => None,
    };
    let Value::Array(master) = fields.get(2)? else {
        return None;
    };
    let host = match master.first()? {
        Value::BulkString(bytes) => String::from_utf8(bytes.clone()).ok()?,
        Value::SimpleString(text) => text.clone(),
        _ => return None,
    };
    Some((
        int(fields.first()?)?,
        int(fields.get(1)?)?,
        format!("{host}:{}", int(master.get(1)?)?),
    ))
}

/// The Redis Cluster slot of `key`: CRC16 (XMODEM) of the key, or of the
/// part between the first `{` and the next `}` when that part is not empty.
pub fn slot(key: &[u8]) -> u16 {
    let hashed = key
        .iter()
        .position(|&b| b == b'{')
        .and_then(|open| {
            let rest = &key[open + 1..];
            rest.iter()
                .position(|&b| b == b'}')
                .filter(|&close| close > 0)
                .map(|close| &rest[..close])
        })
        .unwrap_or(key);
    crc16(hashed) % SLOTS as u16
}

fn crc16(data: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &byte in data {
        crc ^= u16::from(byte) << 8;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_match_redis() {
        // Values from `redis-cli CLUSTER KEYSLOT`.
        assert_eq!(slot(b"foo"), 12182);
        assert_eq!(slot(b"bench-0"), slot(b"{bench-0}.x"));
        assert_eq!(
            slot(b"{}x"),
            crc16(b"{}x") % 16384,
            "an empty tag hashes the whole key"
        );
        assert_eq!(crc16(b"123456789"), 0x31C3);
    }
}
