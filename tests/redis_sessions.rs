//! Socket.IO recovery's sessions in a real `redis-server`, shared by nodes
//! (`transports::sessions::SharedSessions` on Redis): a live connection's session is
//! written so another node can take it (once) even if this node dies, its
//! TTL renewed while it lives; a lost one lasts the window and never
//! overwrites a newer one; a goodbye deletes it; Redis down: no session,
//! never a hang, and writes resume when it is back. On a Redis Cluster each
//! session's key is on its slot's master, taken once from any node, also
//! after a failover of that master.

mod support;

use std::sync::Arc;
use std::time::Duration;

use roomcast::brokers::interest::Interest;
use roomcast::brokers::redis::cluster::{self, ClusterBroker, slot};
use roomcast::brokers::redis::sessions::key;
use roomcast::brokers::redis::{RedisBroker, RedisOptions, start_with};
use roomcast::brokers::{Broker, Sink};
use roomcast::shutdown::Shutdown;
use roomcast::transports::sessions::{Session, SessionStore, SharedSessions};

use support::redis::{RedisCluster, RedisServer};
use support::sessions::{LIMIT, PID, Stored, session, stored_is};
use support::{eventually, init_logs, sessions};

fn options() -> RedisOptions {
    RedisOptions {
        op_timeout: Duration::from_millis(500),
        ..RedisOptions::default()
    }
}

/// One node's store (its own broker connection) keeping sessions `window`.
fn node(redis: &RedisServer, window: Duration, shutdown: &Shutdown) -> Arc<SharedSessions> {
    init_logs();
    let options = options();
    let sink = Sink::new(|_: &str, _| {});
    let broker: Arc<RedisBroker> =
        Arc::new(start_with(&redis.url(), "roomcast-test", options, sink, shutdown).unwrap());
    SharedSessions::start(broker, window, shutdown)
}

/// The stored session (`None`: no key), as JSON.
impl Stored for RedisServer {
    async fn stored(&self, pid: &str) -> Option<Session> {
        let mut conn = self.connection().await;
        let value: Option<Vec<u8>> = redis::cmd("GET")
            .arg(key(pid))
            .query_async(&mut conn)
            .await
            .unwrap();
        value.map(|bytes| serde_json::from_slice(&bytes).unwrap())
    }
}

async fn pttl(redis: &RedisServer) -> i64 {
    let mut conn = redis.connection().await;
    redis::cmd("PTTL")
        .arg(format!("roomcast:session:{PID}"))
        .query_async(&mut conn)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_live_session_is_taken_once_on_another_node_with_its_latest_rooms() {
    let redis = RedisServer::start().await;
    let shutdown = Shutdown::new();
    let window = Duration::from_secs(60);
    let (a, b) = (
        node(&redis, window, &shutdown),
        node(&redis, window, &shutdown),
    );

    sessions::live_writes_land_in_order(&redis, &a).await;
    let ttl = pttl(&redis).await;
    assert!(ttl > 0 && ttl <= 60_000, "PTTL {ttl}");
    sessions::taken_once_on_another_node(&a, &b).await;
}

#[tokio::test]
async fn a_lost_session_lasts_its_window_and_never_overwrites_a_newer_one() {
    let redis = RedisServer::start().await;
    let shutdown = Shutdown::new();
    let (a, b) = (
        node(&redis, Duration::from_secs(60), &shutdown),
        node(&redis, Duration::from_secs(60), &shutdown),
    );
    sessions::a_loss_never_overwrites_a_newer_one(&redis, &a, &b).await;

    let short = Duration::from_millis(300);
    sessions::a_lost_session_expires(&redis, &node(&redis, short, &shutdown), short).await;
}

#[tokio::test]
async fn a_live_session_is_renewed_while_it_lives_and_a_goodbye_deletes_it() {
    let redis = RedisServer::start().await;
    let shutdown = Shutdown::new();
    // Renewed every second (a third of the window, at least 1 s).
    let window = Duration::from_millis(1500);
    let a = node(&redis, window, &shutdown);
    sessions::renewed_while_live_then_ended(&redis, &a, window).await;
}

#[tokio::test]
async fn with_redis_down_a_lookup_finds_nothing_and_writes_resume_after() {
    let mut redis = RedisServer::start().await;
    let shutdown = Shutdown::new();
    let a = node(&redis, Duration::from_secs(60), &shutdown);
    a.live(PID, &session(&["x"]));
    stored_is(&redis, Some(session(&["x"]))).await;

    redis.kill();
    // Bounded by the broker's op_timeout: a new session, not a hang.
    let lookup = tokio::time::timeout(LIMIT, a.take(PID)).await;
    assert_eq!(lookup.expect("the lookup ends"), None);
    a.live(PID, &session(&["lost"]));

    redis.restart().await;
    a.live(PID, &session(&["back"]));
    stored_is(&redis, Some(session(&["back"]))).await;
}

/// One node's store on `cluster` (its own cluster broker), once the broker
/// knows the slot map.
async fn cluster_node(cluster: &RedisCluster, shutdown: &Shutdown) -> Arc<SharedSessions> {
    init_logs();
    let seeds: Vec<String> = cluster.urls().split(',').map(String::from).collect();
    let tracker = || Interest::new("test", Duration::ZERO, |_: &str| Ok(()), |_: &str| false);
    let sink = Sink::new(|_: &str, _| {});
    let (broker, _rooms) = cluster::start(&seeds, tracker, options(), sink, shutdown).unwrap();
    let broker: Arc<ClusterBroker> = Arc::new(broker);
    let ready = eventually(LIMIT, || async { broker.is_ready().then_some(()) }).await;
    assert!(ready.is_some(), "the cluster broker is ready");
    SharedSessions::start(broker, Duration::from_secs(60), shutdown)
}

/// The session stored under `pid`, read on its slot's master.
fn stored_in(cluster: &RedisCluster, pid: &str) -> Option<Session> {
    let key = key(pid);
    let value = cluster.owner(slot(key.as_bytes())).cli(&["GET", &key]);
    let value = value.trim();
    (!value.is_empty()).then(|| serde_json::from_str(value).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_redis_cluster_a_session_is_on_its_keys_master_and_taken_once_after_a_failover() {
    let cluster = RedisCluster::start(3, 1).await;
    let shutdown = Shutdown::new();
    let (a, b) = (
        cluster_node(&cluster, &shutdown).await,
        cluster_node(&cluster, &shutdown).await,
    );
    // Sessions on every master, written by one node in one batch.
    let pids: Vec<String> = (0..12).map(|i| format!("{PID}{i:02}")).collect();
    let masters: std::collections::HashSet<u16> = pids
        .iter()
        .map(|pid| cluster.owner(slot(key(pid).as_bytes())).port)
        .collect();
    assert_eq!(masters.len(), 3, "the sessions' keys span the masters");
    for pid in &pids {
        a.live(pid, &session(&["x", pid]));
    }
    for pid in &pids {
        let found = eventually(LIMIT, || async {
            (stored_in(&cluster, pid) == Some(session(&["x", pid]))).then_some(())
        })
        .await;
        assert!(
            found.is_some(),
            "{pid} on its master: {:?}",
            stored_in(&cluster, pid)
        );
    }
    // Node A died: B takes each once, from whichever master holds it.
    for pid in &pids[1..] {
        assert_eq!(b.take(pid).await, Some(session(&["x", pid])), "{pid}");
        assert_eq!(a.take(pid).await, None, "{pid} taken once");
    }

    // A graceful failover of the first session's master: the replica has
    // it, and both nodes' stale slot maps are redirected to the new master.
    let first = &pids[0];
    let master = cluster.owner(slot(key(first).as_bytes()));
    let master_port = master.port;
    let answer = cluster.replica_of(master).cli(&["CLUSTER", "FAILOVER"]);
    assert_eq!(answer.trim(), "OK", "CLUSTER FAILOVER: {answer}");
    let moved = eventually(LIMIT, || async {
        (cluster.owner(slot(key(first).as_bytes())).port != master_port).then_some(())
    })
    .await;
    assert!(moved.is_some(), "the replica took over");
    assert_eq!(stored_in(&cluster, first), Some(session(&["x", first])));
    a.live(first, &session(&["after"]));
    let found = eventually(LIMIT, || async {
        (stored_in(&cluster, first) == Some(session(&["after"]))).then_some(())
    })
    .await;
    assert!(
        found.is_some(),
        "written on the new master: {:?}",
        stored_in(&cluster, first)
    );
    assert_eq!(b.take(first).await, Some(session(&["after"])));
    assert_eq!(b.take(first).await, None, "taken once");
}
