//! Publishing into a Redis Cluster the way a back end does for roomcast's
//! `--broker redis-cluster`: `SPUBLISH room payload` on the master that owns
//! the room's slot (CRC16 of the name, or of its `{hash tag}`), read once
//! from `CLUSTER SLOTS` at a seed node (slot and map from roomcast's own
//! `brokers::redis::slots`). The bench's cluster stays still
//! during a run, so there is no `MOVED` handling: a redirect is an error.

use redis::Value;
use redis::aio::MultiplexedConnection;
use roomcast::brokers::redis::slots::{SLOTS, SlotMap, slot};

pub struct ClusterPublisher {
    masters: Vec<MultiplexedConnection>,
    /// Per slot, the index of its master in `masters`.
    owner: Vec<usize>,
}

impl ClusterPublisher {
    pub async fn connect(seed: &str) -> Result<ClusterPublisher, String> {
        let mut connection = open(seed).await?;
        let reply: Value = redis::cmd("CLUSTER")
            .arg("SLOTS")
            .query_async(&mut connection)
            .await
            .map_err(|e| format!("CLUSTER SLOTS at {seed}: {e}"))?;
        // roomcast's own parser: the bench routes exactly as the broker does.
        let queried = seed.trim_start_matches("redis://");
        let map = SlotMap::parse(&reply, queried).map_err(|e| format!("{e} (at {seed})"))?;
        let owner = (0..SLOTS)
            .map(|s| {
                let master = map.owner(s as u16)?;
                map.masters().iter().position(|m| m == master)
            })
            .collect::<Option<Vec<usize>>>()
            .ok_or_else(|| format!("the cluster at {seed} does not cover every slot"))?;
        let mut masters = Vec::with_capacity(map.masters().len());
        for address in map.masters() {
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
