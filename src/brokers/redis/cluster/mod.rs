//! The Redis Cluster broker (`--broker redis-cluster`): sharded pub/sub.
//!
//! A room is a shard channel: this node `SSUBSCRIBE`s it on the master that
//! serves its slot (CRC16 of the name, or of its `{hashtag}`), and publishes
//! with `SPUBLISH` to that master, which delivers to the subscribers of that
//! shard only. Back ends publish the same way (`redis-cli -c SPUBLISH room
//! text`); a plain `PUBLISH` does not reach sharded subscribers.
//!
//! Owns: the slot map (read with `CLUSTER SLOTS` from a known master or a
//! seed: at start, every `--health` interval, at once when a shard
//! connection is lost or Redis says a slot moved, at least every second
//! while not ready); one [`Shard`] per master: an [`Interest`] tracker of the
//! rooms whose slot it serves, its subscribed connection (the hand-read
//! subscriber of `redis::subscriber`, in its shard-channel form) and its
//! publishing connection; the tracker of rooms no master serves now
//! (`unassigned`, no connection: their joins wait). When the map changes,
//! each room moves, with its members' state and its joins' confirmation
//! watch, to the tracker of its slot's new master, whose connection
//! subscribes it; a master that serves no slot any more is stopped. One
//! inbox and fan-out task for all masters.
//!
//! Why not the redis crate's cluster client (1.8, `cluster-async`): it
//! re-subscribes after its own reconnects and topology refreshes, but it
//! applies the `sunsubscribe` Redis sends when a slot moves as an
//! unsubscribe, so a room whose slot was resharded is silently forgotten;
//! it says nothing about which master's subscriptions are live (readiness
//! per shard, refusing a publish while its shard's path is down); and it
//! hands every message over an unbounded channel as an allocated `Value`.
//!
//! A publish is acknowledged only if the room's master's subscription was
//! live (and the room's own subscription confirmed, when it has members
//! here) from before the SPUBLISH until its reply, as with one Redis.
//!
//! Never: panics on a lost master, knows clients, or sends a command whose
//! channels span slots.
//!
//! Called by `server`, which builds it with [`start`] and plugs [`Rooms`]
//! into the hub.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use redis::{ConnectionAddr, ConnectionInfo, IntoConnectionInfo, Value};
use tokio_util::sync::CancellationToken;

mod sessions;

use super::log::{self, Layout};
pub use super::slots::slot;
use super::slots::{Node, SlotMap};
use super::subscriber::{self, ReadStats, Reader, Receive, Target};
use super::{
    LogReader, Publisher, RedisOptions, Subscription, bounded, client_for, load_library,
    publish_on, read_log_on, read_until_lost,
};
use crate::backoff::Backoff;
use crate::brokers::inbox::Inbox;
use crate::brokers::interest::{Interest, Subscribed, Tracker};
use crate::brokers::{BoxFuture, Broker, BrokerError, Sink};
use crate::shutdown::Shutdown;

/// The engine's name in metrics, logs and `/readyz`.
const NAME: &str = "redis-cluster";

/// How often the slot map is read while not ready (a master is down, or a
/// slot has none): a promoted replica is found within about this.
const UNHEALTHY_REFRESH: Duration = Duration::from_secs(1);

/// Makes a room tracker: every shard's follows the same rules.
type NewTracker = dyn Fn() -> Interest + Send + Sync;

/// The Redis Cluster broker handle.
pub struct ClusterBroker {
    cluster: Arc<Cluster>,
}

/// The hub's side of the cluster's trackers: each call goes to the tracker
/// of the master that serves the room's slot now.
#[derive(Clone)]
pub struct Rooms {
    cluster: Arc<Cluster>,
}

struct Cluster {
    /// `--redis-url` seeds: asked for the slot map when no master answers.
    seeds: Vec<ConnectionInfo>,
    options: RedisOptions,
    topology: RwLock<Topology>,
    /// Asks the topology task to read the slot map now.
    refresh: tokio::sync::Notify,
    /// One slot-map read at a time (the task's, a redirected publish's).
    refreshing: tokio::sync::Mutex<()>,
    new_tracker: Box<NewTracker>,
    /// Rooms whose slot no known master serves: their joins wait.
    unassigned: Interest,
    sink: Sink,
    inbox: Inbox,
    stats: ReadStats,
    shutdown: Shutdown,
}

struct Topology {
    map: SlotMap,
    shards: HashMap<Node, Arc<Shard>>,
}

/// One master: its rooms, its subscribed connection's state, its publisher.
struct Shard {
    node: Node,
    interest: Interest,
    subscription: Subscription,
    publisher: Publisher,
    target: Target,
    stop: CancellationToken,
}

/// Builds the broker and spawns its topology task on `shutdown`. Fails only
/// on unusable URLs; an unreachable cluster is retried in the background.
pub fn start(
    urls: &[String],
    new_tracker: impl Fn() -> Interest + Send + Sync + 'static,
    options: RedisOptions,
    sink: Sink,
    shutdown: &Shutdown,
) -> Result<(ClusterBroker, Rooms), BrokerError> {
    if urls.is_empty() {
        return Err(BrokerError::Config(
            "--broker redis-cluster needs at least one seed node URL".into(),
        ));
    }
    let seeds = urls
        .iter()
        .map(|url| {
            let info = url
                .as_str()
                .into_connection_info()
                .map_err(|e| BrokerError::Config(format!("invalid Redis URL: {e}")))?;
            match info.addr() {
                ConnectionAddr::Tcp(..) | ConnectionAddr::TcpTls { .. } => Ok(info),
                _ => Err(BrokerError::Config(
                    "a Redis Cluster node is a TCP address, not a Unix socket".into(),
                )),
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    // Checks the TLS settings once, as every master will use them.
    Target::new(seeds[0].clone(), options.tls_roots.as_deref()).map_err(BrokerError::Config)?;
    let cluster = Arc::new(Cluster {
        seeds,
        unassigned: new_tracker(),
        new_tracker: Box::new(new_tracker),
        inbox: Inbox::new(NAME, options.inbox),
        options,
        topology: RwLock::new(Topology {
            map: SlotMap::empty(),
            shards: HashMap::new(),
        }),
        refresh: tokio::sync::Notify::new(),
        refreshing: tokio::sync::Mutex::new(()),
        sink,
        stats: ReadStats::default(),
        shutdown: shutdown.clone(),
    });
    let task = cluster.clone();
    let stop = shutdown.clone();
    shutdown.spawn(async move {
        tokio::select! {
            _ = stop.requested() => {}
            _ = futures_util::future::join(task.watch_topology(), task.inbox.run(&task.sink)) => {}
        }
    });
    Ok((
        ClusterBroker {
            cluster: cluster.clone(),
        },
        Rooms { cluster },
    ))
}

impl Tracker for Rooms {
    fn want(&self, room: &str) {
        self.cluster
            .with_tracker(room, |tracker| tracker.want(room))
    }

    fn unwant(&self, room: &str) {
        self.cluster
            .with_tracker(room, |tracker| tracker.unwant(room))
    }

    /// Resolves once `room` is subscribed on its master (wherever the room
    /// moves meanwhile: its confirmation watch moves with it).
    fn ready(&self, room: &str) -> Subscribed {
        self.cluster
            .with_tracker(room, |tracker| tracker.ready(room))
    }
}

impl std::fmt::Debug for Rooms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("redis_cluster::Rooms")
    }
}

impl Cluster {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Topology> {
        // Every update leaves the topology consistent.
        self.topology
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Runs `f` on the tracker that holds `room`, under the topology's read
    /// lock, so that a move cannot happen in between.
    fn with_tracker<T>(&self, room: &str, f: impl FnOnce(&Interest) -> T) -> T {
        let topology = self.read();
        match topology.shard_of(room) {
            Some(shard) => f(&shard.interest),
            None => f(&self.unassigned),
        }
    }

    /// The address of a master, with the seeds' scheme, credentials and TLS.
    fn node_info(&self, node: &str) -> Result<ConnectionInfo, String> {
        let (host, port) = node
            .rsplit_once(':')
            .and_then(|(host, port)| Some((host, port.parse::<u16>().ok()?)))
            .ok_or_else(|| format!("bad node address {node:?}"))?;
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let template = &self.seeds[0];
        let addr = match template.addr() {
            ConnectionAddr::TcpTls {
                insecure,
                tls_params,
                ..
            } => ConnectionAddr::TcpTls {
                host,
                port,
                insecure: *insecure,
                tls_params: tls_params.clone(),
            },
            _ => ConnectionAddr::Tcp(host, port),
        };
        Ok(template.clone().set_addr(addr))
    }

    fn new_shard(&self, node: &str) -> Result<Shard, String> {
        let info = self.node_info(node)?;
        let tls_roots = self.options.tls_roots.as_deref();
        let client = client_for(info.clone(), tls_roots).map_err(|e| e.to_string())?;
        Ok(Shard {
            node: node.to_string(),
            interest: (self.new_tracker)(),
            subscription: Subscription::default(),
            publisher: Publisher::new(client, &self.options).map_err(|e| e.to_string())?,
            target: Target::new(info, tls_roots)?,
            stop: CancellationToken::new(),
        })
    }

    /// Reads the slot map (live masters first: they know the latest; then
    /// the others and the seeds) and applies it.
    async fn refresh_now(self: &Arc<Self>) -> Result<(), String> {
        let _one_at_a_time = self.refreshing.lock().await;
        let mut masters: Vec<Arc<Shard>> = self.read().shards.values().cloned().collect();
        masters.sort_by_key(|shard| shard.subscription.live().is_none());
        let mut last_error = String::from("no node to ask");
        for shard in &masters {
            let mut conn = shard.publisher.connection();
            let slots = redis::cmd("CLUSTER").arg("SLOTS").to_owned();
            match bounded(
                self.options.op_timeout,
                slots.query_async::<Value>(&mut conn),
            )
            .await
            {
                Ok(reply) => return self.apply(SlotMap::parse(&reply, &shard.node)?),
                Err(error) => last_error = format!("{}: {error}", shard.node),
            }
        }
        for seed in &self.seeds {
            let address = seed.addr().to_string();
            let ask = async {
                let client = client_for(seed.clone(), self.options.tls_roots.as_deref())
                    .map_err(|e| redis::RedisError::from(std::io::Error::other(e.to_string())))?;
                let mut conn = client.get_multiplexed_async_connection().await?;
                redis::cmd("CLUSTER")
                    .arg("SLOTS")
                    .query_async::<Value>(&mut conn)
                    .await
            };
            match bounded(self.options.op_timeout, ask).await {
                Ok(reply) => return self.apply(SlotMap::parse(&reply, &address)?),
                Err(error) => last_error = format!("{address}: {error}"),
            }
        }
        Err(last_error)
    }

    /// Makes `map` the topology: new masters get a shard and its task, every
    /// room goes to the tracker of its slot's master, masters without slots
    /// stop; every room not subscribed is then sent (again).
    fn apply(self: &Arc<Self>, map: SlotMap) -> Result<(), String> {
        let mut topology = self
            .topology
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if topology.map != map {
            for node in map.masters() {
                if topology.shards.contains_key(node) {
                    continue;
                }
                match self.new_shard(node) {
                    Ok(shard) => {
                        let shard = Arc::new(shard);
                        self.spawn_shard(shard.clone());
                        topology.shards.insert(node.clone(), shard);
                    }
                    Err(error) => tracing::warn!(%node, %error, "redis-cluster: cannot use master"),
                }
            }
            topology.map = map;
            // From every tracker to every other, the rooms whose slot another
            // master serves now (the rest stay where they are subscribed).
            let trackers: Vec<(Option<&Node>, &Interest)> = topology
                .shards
                .iter()
                .map(|(node, shard)| (Some(node), &shard.interest))
                .chain([(None, &self.unassigned)])
                .collect();
            let mut moved = 0;
            for (to, into) in &trackers {
                for (from, out) in &trackers {
                    if from == to {
                        continue;
                    }
                    let going =
                        out.take_where(|room| topology.shard_of(room).map(|s| &s.node) == *to);
                    moved += going.len();
                    into.put(going);
                }
            }
            let Topology { map, shards } = &mut *topology;
            shards.retain(|node, shard| {
                let serves = map.masters().contains(node);
                if !serves {
                    shard.stop.cancel();
                    shard.subscription.set(false);
                    tracing::info!(%node, "redis-cluster: no longer a master with slots; disconnected");
                }
                serves
            });
            tracing::info!(
                masters = topology.shards.len(),
                complete = topology.map.complete(),
                rooms_moved = moved,
                "redis-cluster: slot map changed"
            );
        }
        for shard in topology.shards.values() {
            shard.interest.resend();
        }
        Ok(())
    }

    /// Reads the slot map when asked, and regularly (more often while not ready).
    async fn watch_topology(self: &Arc<Self>) {
        let mut failing = false;
        loop {
            let started = Instant::now();
            match self.refresh_now().await {
                Ok(()) if failing => {
                    failing = false;
                    tracing::info!("redis-cluster: slot map read again");
                }
                Ok(()) => {}
                Err(error) if !failing => {
                    failing = true;
                    tracing::warn!(%error, "redis-cluster: cannot read the slot map; retrying");
                }
                Err(error) => tracing::debug!(%error, "redis-cluster: slot map read failed"),
            }
            let every = if self.ready() {
                self.options.health_interval
            } else {
                UNHEALTHY_REFRESH
            };
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = self.refresh.notified() => {}
            }
            // A burst of losses or redirects costs one read.
            tokio::time::sleep_until((started + self.options.backoff_min).into()).await;
        }
    }

    fn ready(&self) -> bool {
        let topology = self.read();
        topology.map.complete()
            && topology
                .shards
                .values()
                .all(|shard| shard.subscription.live().is_some())
    }

    /// Loads the `roomcast` library on `shard`'s master when the log is on:
    /// back ends may call it before this node publishes there (a promoted
    /// replica has it already, through replication; loading again is
    /// harmless). A publish or read that finds it missing loads it too.
    async fn load_library(&self, shard: &Shard) {
        let Some(bounds) = self.options.log else {
            return;
        };
        let mut conn = shard.publisher.connection();
        let load = load_library(&mut conn, bounds, Layout::Cluster);
        if let Err(error) = bounded(self.options.op_timeout, load).await {
            tracing::warn!(node = %shard.node, %error, "redis-cluster: cannot load the roomcast library (FUNCTION LOAD); logged publishes will try again");
        }
    }

    fn spawn_shard(self: &Arc<Self>, shard: Arc<Shard>) {
        let cluster = self.clone();
        let shutdown = self.shutdown.clone();
        self.shutdown.spawn(async move {
            tokio::select! {
                _ = shutdown.requested() => {}
                _ = shard.stop.cancelled() => {}
                _ = cluster.subscribe_forever(&shard) => {}
            }
        });
    }

    /// One master's subscribed connection: connect, subscribe its rooms,
    /// read until lost; again, with backoff after failures. Each loss asks
    /// for the slot map: the master may have failed over.
    async fn subscribe_forever(&self, shard: &Shard) {
        let mut backoff = Backoff::new(self.options.backoff_min, self.options.backoff_max);
        let receive = Receive::Shard(shard.interest.clone());
        let node = &shard.node;
        let mut failed_attempts = 0u64;
        let moved = || {
            // The connection's rooms changed: publishes in flight are unsure.
            shard.subscription.bump();
            self.refresh.notify_one();
        };
        loop {
            let log = self.options.log.map(|_| Layout::Cluster);
            match subscriber::subscribe(&shard.target, &receive, log, self.options.op_timeout).await
            {
                Err(error) => {
                    if failed_attempts == 0 {
                        tracing::warn!(%node, %error, "redis-cluster: cannot connect to master; retrying");
                    }
                    failed_attempts += 1;
                    self.refresh.notify_one();
                    tokio::time::sleep(backoff.next_delay()).await;
                }
                Ok(subscribed) => {
                    tracing::info!(%node, attempts = failed_attempts + 1, "redis-cluster: connected to master");
                    failed_attempts = 0;
                    self.load_library(shard).await;
                    let connected_at = Instant::now();
                    let reader = Reader {
                        sink: &self.sink,
                        inbox: &self.inbox,
                        stats: &self.stats,
                        interest: Some(&shard.interest),
                        moved: &moved,
                    };
                    let lost = read_until_lost(
                        subscribed,
                        reader,
                        &shard.subscription,
                        &|| {},
                        &self.options,
                    )
                    .await;
                    self.refresh.notify_one();
                    tracing::warn!(
                        %node, reason = lost.reason.code(), detail = %lost.detail,
                        up_ms = connected_at.elapsed().as_millis() as u64,
                        "redis-cluster: subscription to master lost; reconnecting"
                    );
                    if connected_at.elapsed() >= self.options.stable_after {
                        backoff.reset();
                    }
                    if !lost.had_worked {
                        tokio::time::sleep(backoff.next_delay()).await;
                    }
                }
            }
        }
    }
}

impl Topology {
    /// The shard that serves the slot of `key` (a room's name, or a key)
    /// now, if any.
    fn shard_of(&self, key: &str) -> Option<&Arc<Shard>> {
        self.map
            .owner(slot(key.as_bytes()))
            .and_then(|node| self.shards.get(node))
    }
}

impl ClusterBroker {
    /// The shard of the master that serves the slot of `key` (a room, or a
    /// key of its own) now (unknown: the slot map is read again).
    fn master_of(&self, key: &str) -> Result<Arc<Shard>, BrokerError> {
        let shard = self.cluster.read().shard_of(key).cloned();
        shard.ok_or_else(|| {
            self.cluster.refresh.notify_one();
            BrokerError::Unavailable(format!(
                "no Redis Cluster master is known for slot {} of {key:?}",
                slot(key.as_bytes())
            ))
        })
    }

    /// One publish on the room's master (`SPUBLISH`, or with the log `FCALL roomcast_publish`), acknowledged only if this node's
    /// subscription path to that master was live throughout. `Ok(None)`:
    /// Redis redirected it (the slot moved).
    async fn publish_once(
        &self,
        channel: &str,
        payload: &Bytes,
    ) -> Result<Option<()>, BrokerError> {
        let shard = self.master_of(channel)?;
        let Some(generation) = shard.subscription.live() else {
            return Err(BrokerError::Unavailable(format!(
                "this node's subscription to Redis Cluster master {} is down; its clients would not receive the message",
                shard.node
            )));
        };
        if !shard.interest.settled(channel) {
            return Err(BrokerError::Unavailable(format!(
                "this node's subscription to room {channel:?} is not confirmed yet (its slot moved)"
            )));
        }
        let mut conn = shard.publisher.connection();
        let sent = async {
            match self.cluster.options.log {
                Some(bounds) => {
                    publish_on(&mut conn, bounds, Layout::Cluster, channel, payload).await
                }
                None => {
                    let mut command = redis::cmd("SPUBLISH");
                    command.arg(channel).arg(payload.as_ref());
                    command
                        .query_async::<redis::Value>(&mut conn)
                        .await
                        .map(drop)
                }
            }
        };
        let op_timeout = self.cluster.options.op_timeout;
        match tokio::time::timeout(op_timeout, sent).await {
            Ok(Ok(())) if shard.subscription.live() == Some(generation) => Ok(Some(())),
            Ok(Ok(_)) => Err(BrokerError::Unavailable(format!(
                "this node's subscription to Redis Cluster master {} changed during the publish; the message may not reach its clients",
                shard.node
            ))),
            Ok(Err(error)) if error.is_cluster_error() => {
                tracing::debug!(node = %shard.node, %error, "redis-cluster: SPUBLISH redirected");
                Ok(None)
            }
            Ok(Err(error)) if matches!(error.kind(), redis::ErrorKind::Server(_)) => Err(
                BrokerError::Refused(format!("Redis SPUBLISH on {}: {error}", shard.node)),
            ),
            Ok(Err(error)) => Err(BrokerError::Unavailable(format!(
                "Redis SPUBLISH on {}: {error}",
                shard.node
            ))),
            Err(_) => {
                shard.publisher.replace();
                Err(BrokerError::Unavailable(format!(
                    "Redis publish on {} timed out after {op_timeout:?}",
                    shard.node
                )))
            }
        }
    }

    /// One `FCALL_RO roomcast_read` on the room's master. `Ok(None)`: Redis
    /// redirected it (the slot moved).
    async fn read_once(&self, room: &str, after: u64) -> Result<Option<log::Read>, BrokerError> {
        let Some(bounds) = self.cluster.options.log else {
            return Err(BrokerError::Config("this node keeps no room log".into()));
        };
        let shard = self.master_of(room)?;
        let mut conn = shard.publisher.connection();
        let read = read_log_on(&mut conn, bounds, Layout::Cluster, room, after);
        match bounded(self.cluster.options.op_timeout, read).await {
            Ok(reply) => log::Read::from_reply(reply)
                .map(Some)
                .map_err(BrokerError::Refused),
            Err(error) if error.is_cluster_error() => Ok(None),
            Err(error) => Err(BrokerError::Unavailable(format!(
                "Redis roomcast_read on {}: {error}",
                shard.node
            ))),
        }
    }
}

impl LogReader for ClusterBroker {
    fn layout(&self) -> Layout {
        Layout::Cluster
    }

    /// On the room's master; once more after a redirection (the slot moved).
    fn read_log<'a>(
        &'a self,
        room: &'a str,
        after: u64,
    ) -> BoxFuture<'a, Result<log::Read, BrokerError>> {
        Box::pin(async move {
            if let Some(read) = self.read_once(room, after).await? {
                return Ok(read);
            }
            let _ = self.cluster.refresh_now().await;
            self.read_once(room, after).await?.ok_or_else(|| {
                BrokerError::Unavailable(format!(
                    "the slot of room {room:?} is moving between Redis Cluster masters; retry"
                ))
            })
        })
    }
}

impl Broker for ClusterBroker {
    fn publish<'a>(
        &'a self,
        channel: &'a str,
        payload: Bytes,
    ) -> BoxFuture<'a, Result<(), BrokerError>> {
        Box::pin(async move {
            if self.cluster.options.log.is_some() {
                Layout::Cluster.key(channel).map_err(BrokerError::Refused)?;
            }
            if let Some(done) = self.publish_once(channel, &payload).await? {
                return Ok(done);
            }
            // Redirected: read the slot map, wait (briefly) until the room is
            // subscribed at its new master if it has members here, once more.
            let _ = self.cluster.refresh_now().await;
            let ready = Rooms {
                cluster: self.cluster.clone(),
            }
            .ready(channel);
            if let Subscribed::Later(confirmed) = ready {
                let _ = tokio::time::timeout(self.cluster.options.op_timeout, confirmed).await;
            }
            match self.publish_once(channel, &payload).await? {
                Some(done) => Ok(done),
                None => Err(BrokerError::Unavailable(format!(
                    "the slot of room {channel:?} is moving between Redis Cluster masters; retry"
                ))),
            }
        })
    }

    /// Ready = every slot has a master and this node's subscribed connection
    /// to every master is live.
    fn is_ready(&self) -> bool {
        self.cluster.ready()
    }

    fn name(&self) -> &'static str {
        NAME
    }

    fn shards(&self) -> Vec<(String, bool)> {
        let topology = self.cluster.read();
        let mut shards: Vec<(String, bool)> = topology
            .shards
            .values()
            .map(|shard| (shard.node.clone(), shard.subscription.live().is_some()))
            .collect();
        shards.sort();
        shards
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tracker() -> Interest {
        Interest::new(
            "test",
            Duration::from_secs(60),
            |_: &str| Ok(()),
            |_: &str| false,
        )
    }

    #[tokio::test]
    async fn bad_seeds_are_errors_at_start() {
        let shutdown = Shutdown::new();
        let sink = Sink::new(|_: &str, _: Bytes| {});
        for urls in [
            vec![],
            vec!["not a url".to_string()],
            vec!["redis+unix:///tmp/x".into()],
        ] {
            let result = start(
                &urls,
                tracker,
                RedisOptions::default(),
                sink.clone(),
                &shutdown,
            );
            assert!(matches!(result, Err(BrokerError::Config(_))), "{urls:?}");
        }
    }

    #[tokio::test]
    async fn an_unreachable_cluster_is_not_ready_and_refuses_publishes() {
        let shutdown = Shutdown::new();
        let sink = Sink::new(|_: &str, _: Bytes| {});
        let (broker, rooms) = start(
            &["redis://127.0.0.1:1".to_string()],
            tracker,
            RedisOptions::default(),
            sink,
            &shutdown,
        )
        .unwrap();
        rooms.want("a");
        assert!(
            matches!(rooms.ready("a"), Subscribed::Later(_)),
            "no master yet"
        );
        assert!(!broker.is_ready());
        let error = broker
            .publish("a", Bytes::from_static(b"x"))
            .await
            .unwrap_err();
        assert!(matches!(error, BrokerError::Unavailable(_)), "{error:?}");
        shutdown.trigger();
        assert!(shutdown.wait(Duration::from_secs(2)).await);
    }
}
