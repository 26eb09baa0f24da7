//! The Redis broker: `SUBSCRIBE` per room with members here (per-room mode,
//! the default: a node receives only its rooms' messages) or the seed's
//! `PSUBSCRIBE <pattern>` feeds the hub; `PUBLISH` carries this node's
//! messages to every node subscribed (itself included when it has members).
//!
//! Per room, the [`Interest`] tracker says which rooms to subscribe; the
//! subscriber sends them in batches and reports each confirmation, which the
//! joins wait for; after a reconnect every room is subscribed again before
//! the broker is ready.
//!
//! Owns: one dedicated pub/sub connection (`subscriber`: read by hand into
//! the [`Inbox`], pinged when quiet, and re-dialled and re-subscribed after
//! any loss: at once when the lost connection had worked, else with jittered
//! exponential backoff, cut short as soon as the publishing connection finds
//! Redis answering again; each loss counted in
//! `roomcast_broker_disconnects_total{reason}`), one multiplexed publishing
//! connection (redis's `ConnectionManager`, renewed when it stops
//! answering), the fan-out task that empties the inbox into the hub, and the
//! task, spawned on the server's `Shutdown`, that watches both connections
//! and keeps `is_ready()` true only while both work.
//!
//! A publish is acknowledged only if this node's subscription was live from
//! before the PUBLISH was sent until its reply came back: a message Redis
//! accepted while our own subscriber was away would reach none of this
//! node's clients, so it is refused (`broker_unavailable`) instead.
//!
//! Never: panics or exits on a Redis failure (the server keeps serving and
//! `/readyz` says not ready); assumes payloads are UTF-8 (they go to the sink
//! byte for byte); logs per failed attempt (each state change is logged once);
//! knows about clients or rooms.
//!
//! Called by `server`, which builds it with [`start`] from
//! `BrokerConfig::Redis { url, pattern }` and hands it the hub as the [`Sink`].

pub mod cluster;
mod lease;
pub mod log;
mod resp;
pub mod sessions;
pub mod slots;
mod subscriber;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{ErrorKind, RedisError};

use super::inbox::{Inbox, InboxLimits};
use super::interest::Interest;
use super::sessions::{SessionBackend, SessionOp};
use super::{BoxFuture, Broker, BrokerError, Sink};
use crate::backoff::Backoff;
use crate::shutdown::Shutdown;
use crate::telemetry;
pub use log::Layout;
pub use subscriber::Receive;
use subscriber::{ReadStats, Reader, Target};

impl From<&str> for Receive {
    /// A pattern: the seed's `PSUBSCRIBE`.
    fn from(pattern: &str) -> Receive {
        Receive::Pattern(pattern.to_string())
    }
}

impl Receive {
    /// Per room: what `interest` lists, plus the emitter's patterns.
    pub fn rooms(interest: Interest, patterns: Vec<String>) -> Receive {
        Receive::Rooms { interest, patterns }
    }

    fn describe(&self) -> String {
        match self {
            Receive::Pattern(pattern) => format!("PSUBSCRIBE {pattern}"),
            Receive::Rooms { .. } => "SUBSCRIBE per room".to_string(),
            Receive::Shard(_) => "SSUBSCRIBE per room".to_string(),
        }
    }

    fn interest(&self) -> Option<&Interest> {
        match self {
            Receive::Pattern(_) => None,
            Receive::Rooms { interest, .. } | Receive::Shard(interest) => Some(interest),
        }
    }
}

/// Timings of the Redis broker. The defaults suit production; tests shorten them.
#[derive(Debug, Clone)]
pub struct RedisOptions {
    /// First reconnect delay; doubles per failed attempt (with jitter).
    pub backoff_min: Duration,
    /// Longest delay between reconnect attempts.
    pub backoff_max: Duration,
    /// Limit on one connect, subscribe, ping or publish.
    pub op_timeout: Duration,
    /// How often a healthy connection is pinged, to notice a peer that
    /// vanished without closing the socket (network partition, dead host).
    pub health_interval: Duration,
    /// A subscription that stayed up this long resets the reconnect backoff.
    pub stable_after: Duration,
    /// PEM certificates that alone are trusted for a `rediss://` server (a
    /// private CA); `None` trusts the Mozilla roots.
    pub tls_roots: Option<Vec<u8>>,
    /// What may wait between reading and the fan-out; the excess is dropped
    /// and counted (`roomcast_broker_dropped_total`).
    pub inbox: InboxLimits,
    /// The room log (docs/RECOVERY.md): publishes go through the
    /// `roomcast_publish` Function and the log channels are subscribed.
    /// `None`: plain `PUBLISH`, node-local history only.
    pub log: Option<LogBounds>,
}

pub use super::LogBounds;

/// A Redis engine that keeps the room log: what a resuming join reads
/// (`server` plugs it into the hub as its `RoomLog`).
pub trait LogReader: Send + Sync + 'static {
    /// Where the rooms' logs live and how their ids are numbered.
    fn layout(&self) -> Layout;

    /// The reply of `roomcast_read` for `room` after id `after`.
    fn read_log<'a>(
        &'a self,
        room: &'a str,
        after: u64,
    ) -> BoxFuture<'a, Result<log::Read, BrokerError>>;
}

impl Default for RedisOptions {
    fn default() -> Self {
        RedisOptions {
            backoff_min: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
            op_timeout: Duration::from_secs(5),
            health_interval: Duration::from_secs(5),
            stable_after: Duration::from_secs(10),
            tls_roots: None,
            inbox: InboxLimits::default(),
            log: None,
        }
    }
}

/// Redis Pub/Sub broker. Dropping it does not stop the subscriber task; the
/// server's [`Shutdown`] does.
pub struct RedisBroker {
    publisher: Arc<Publisher>,
    state: Arc<State>,
    op_timeout: Duration,
    log: Option<LogBounds>,
}

/// The publishing connection, replaceable as a whole: `ConnectionManager`
/// reconnects by itself after I/O errors, but not after timeouts, so a peer
/// that vanished without a FIN/RST (partition, dead host) would leave it
/// timing out until the kernel gives up on the socket (~15 min).
struct Publisher {
    client: redis::Client,
    config: ConnectionManagerConfig,
    current: std::sync::RwLock<ConnectionManager>,
}

impl Publisher {
    /// A lazily dialled publisher for `client`: connecting here would make an
    /// unreachable Redis a start-up error.
    fn new(client: redis::Client, options: &RedisOptions) -> Result<Publisher, BrokerError> {
        // Few, quick retries inside the manager: a publish during an outage
        // should fail fast with a reason, not hang; every failed command
        // triggers a new background reconnect anyway.
        let config = ConnectionManagerConfig::new()
            .set_number_of_retries(1)
            .set_min_delay(options.backoff_min)
            .set_max_delay(options.backoff_max)
            .set_connection_timeout(Some(options.op_timeout))
            .set_response_timeout(Some(options.op_timeout));
        let current = client
            .get_connection_manager_lazy(config.clone())
            .map_err(|e| BrokerError::Config(format!("cannot set up the Redis publisher: {e}")))?;
        Ok(Publisher {
            client,
            config,
            current: std::sync::RwLock::new(current),
        })
    }

    /// A handle onto the current shared connection (cheap clone; the lock is
    /// never held across an await).
    fn connection(&self) -> ConnectionManager {
        self.current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Drops the current connection for a fresh, lazily dialled one.
    fn replace(&self) {
        match self.client.get_connection_manager_lazy(self.config.clone()) {
            Ok(fresh) => {
                *self
                    .current
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = fresh
            }
            Err(error) => tracing::warn!(%error, "redis: cannot renew the publishing connection"),
        }
    }
}

/// Readiness, shared by the broker handle and its task.
#[derive(Default)]
struct State {
    subscription: Subscription,
    /// The last publish or publisher health check succeeded.
    publisher_ok: AtomicBool,
    /// Asks the publisher watcher to check now: the subscriber saw Redis go
    /// away or come back, or a publish was refused while it was away, so the
    /// publisher's state is probably stale.
    recheck: tokio::sync::Notify,
    /// The publishing connection found Redis answering while the subscriber
    /// was away: the subscriber stops waiting out its backoff.
    redis_answers: tokio::sync::Notify,
    /// The `roomcast` library was loaded on the current publishing
    /// connection's Redis (loaded again after that connection failed).
    library_loaded: AtomicBool,
    /// That Redis has no Functions (before 7.0): publishes are plain
    /// `PUBLISH`es, at-most-once, as without a log (checked again after the
    /// publishing connection failed: Redis may have been upgraded).
    no_functions: AtomicBool,
}

/// The subscription's generation: odd while a PSUBSCRIBE is confirmed on a
/// live connection, even while it is not; every change adds one. A publish
/// that sees the same odd value before and after its PUBLISH ran entirely
/// while one subscription was live.
#[derive(Default)]
struct Subscription(AtomicU64);

impl Subscription {
    /// The current generation while the subscription is live.
    fn live(&self) -> Option<u64> {
        let generation = self.0.load(Ordering::SeqCst);
        (generation % 2 == 1).then_some(generation)
    }

    fn set(&self, up: bool) {
        if self.live().is_some() != up {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// A new generation, live as before: part of what the connection
    /// receives ended (Redis Cluster moved a room's slot), so a publish
    /// that spans this cannot be sure it was received.
    fn bump(&self) {
        self.0.fetch_add(2, Ordering::SeqCst);
    }
}

impl State {
    /// Redis has no Functions (before 7.0): from now on publishes are plain,
    /// said once in the log rather than refusing every publish.
    fn without_functions(&self, error: &RedisError) {
        if !self.no_functions.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                %error,
                "redis: no Functions on this Redis (7.0 or later has them): publishing with plain \
                 PUBLISH, without the room log (at-most-once, node-local history)"
            );
        }
    }

    /// Records the publisher's health, logging only the transitions.
    fn set_publisher(&self, ok: bool, error: Option<&RedisError>) {
        let was = self.publisher_ok.swap(ok, Ordering::Relaxed);
        match (was, ok, error) {
            (false, true, _) => tracing::debug!("redis: publishing connection usable"),
            (true, false, Some(error)) => {
                tracing::warn!(%error, "redis: publishing connection failed; it reconnects on its own")
            }
            _ => {}
        }
    }
}

/// Builds the broker and spawns its subscriber task on `shutdown`.
///
/// Fails only on an unusable URL; an unreachable Redis is not an error here
/// (the task keeps trying and `is_ready()` stays false until it succeeds).
/// Must be called inside a Tokio runtime.
pub fn start(
    url: &str,
    receive: impl Into<Receive>,
    sink: Sink,
    shutdown: &Shutdown,
) -> Result<RedisBroker, BrokerError> {
    start_with(url, receive, RedisOptions::default(), sink, shutdown)
}

/// [`start`] with explicit timings.
pub fn start_with(
    url: &str,
    receive: impl Into<Receive>,
    options: RedisOptions,
    sink: Sink,
    shutdown: &Shutdown,
) -> Result<RedisBroker, BrokerError> {
    let client = client(url, options.tls_roots.as_deref())?;
    let publisher = Arc::new(Publisher::new(client.clone(), &options)?);
    let target = Target::new(
        client.get_connection_info().clone(),
        options.tls_roots.as_deref(),
    )
    .map_err(BrokerError::Config)?;
    let state = Arc::new(State::default());
    let task = Task {
        address: client.get_connection_info().addr().to_string(),
        target,
        receive: receive.into(),
        sink,
        inbox: Inbox::new("redis", options.inbox),
        state: state.clone(),
        options: options.clone(),
        stats: ReadStats::default(),
    };
    let watched = publisher.clone();
    let stop = shutdown.clone();
    shutdown.spawn(async move {
        tokio::select! {
            _ = stop.requested() => {}
            _ = futures_util::future::join3(
                task.subscribe_forever(),
                task.watch_publisher(watched),
                task.inbox.run(&task.sink),
            ) => {}
        }
        task.state.subscription.set(false);
        tracing::debug!("redis: subscriber stopped");
    });
    Ok(RedisBroker {
        publisher,
        state,
        op_timeout: options.op_timeout,
        log: options.log,
    })
}

/// The client for `url`; `rediss://` is TLS (rustls with our ring provider).
fn client(url: &str, tls_roots: Option<&[u8]>) -> Result<redis::Client, BrokerError> {
    use redis::IntoConnectionInfo;
    let info = url
        .into_connection_info()
        .map_err(|e| BrokerError::Config(format!("invalid Redis URL: {e}")))?;
    client_for(info, tls_roots)
}

/// The client for a resolved address (a cluster's masters: the seed URL's
/// scheme and credentials, another host).
fn client_for(
    info: redis::ConnectionInfo,
    tls_roots: Option<&[u8]>,
) -> Result<redis::Client, BrokerError> {
    let tls = matches!(info.addr(), redis::ConnectionAddr::TcpTls { .. });
    if tls {
        // The redis crate asks rustls for the process-wide provider. Err:
        // one is installed already, which is as good.
        let _ = rustls::crypto::CryptoProvider::install_default(
            rustls::crypto::ring::default_provider(),
        );
    }
    let client = match tls_roots {
        Some(_) if !tls => {
            return Err(BrokerError::Config(
                "--redis-ca-file needs a rediss:// URL".into(),
            ));
        }
        Some(roots) => redis::Client::build_with_tls(
            info,
            redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(roots.to_vec()),
            },
        ),
        None => redis::Client::open(info),
    };
    client.map_err(|e| BrokerError::Config(format!("invalid Redis URL or TLS setting: {e}")))
}

impl Broker for RedisBroker {
    fn publish<'a>(
        &'a self,
        channel: &'a str,
        payload: Bytes,
    ) -> BoxFuture<'a, Result<(), BrokerError>> {
        let mut conn = self.publisher.connection();
        Box::pin(async move {
            let Some(generation) = self.state.subscription.live() else {
                // Not even sent: Redis would take it and this node's clients
                // would never see it. Let the watcher probe Redis, so that
                // traffic makes the subscriber return as soon as Redis does.
                self.state.recheck.notify_one();
                return Err(BrokerError::Unavailable(
                    "this node's Redis subscription is down; its clients would not receive the message".into(),
                ));
            };
            let publish = async {
                match self.log {
                    Some(bounds) if !self.state.no_functions.load(Ordering::Relaxed) => {
                        self.publish_logged(&mut conn, bounds, channel, &payload)
                            .await
                    }
                    _ => publish_plain(&mut conn, channel, &payload).await,
                }
            };
            match tokio::time::timeout(self.op_timeout, publish).await {
                Ok(Ok(())) => {
                    self.state.set_publisher(true, None);
                    if self.state.subscription.live() != Some(generation) {
                        return Err(BrokerError::Unavailable(
                            "this node's Redis subscription was lost during the publish; the message may not reach its clients".into(),
                        ));
                    }
                    Ok(())
                }
                Ok(Err(error)) => Err(self.publish_error(error)),
                Err(_) => {
                    // Let the watcher decide whether the connection is dead.
                    self.state.recheck.notify_one();
                    Err(BrokerError::Unavailable(format!(
                        "Redis PUBLISH timed out after {:?}",
                        self.op_timeout
                    )))
                }
            }
        })
    }

    /// Ready = the PSUBSCRIBE is live AND the publishing connection works:
    /// a node that receives but cannot publish would silently drop what its
    /// clients and `/api/publish` send, so the load balancer should skip it.
    fn is_ready(&self) -> bool {
        self.state.subscription.live().is_some() && self.state.publisher_ok.load(Ordering::Relaxed)
    }

    fn name(&self) -> &'static str {
        "redis"
    }

    fn keeps_leases(&self) -> bool {
        true
    }

    fn hold_lease<'a>(
        &'a self,
        name: &'a str,
        holder: &'a str,
        ttl: Duration,
    ) -> BoxFuture<'a, Result<bool, BrokerError>> {
        let mut conn = self.publisher.connection();
        Box::pin(async move { lease::hold(&mut conn, name, holder, ttl, self.op_timeout).await })
    }

    fn release_lease<'a>(
        &'a self,
        name: &'a str,
        holder: &'a str,
    ) -> BoxFuture<'a, Result<(), BrokerError>> {
        let mut conn = self.publisher.connection();
        Box::pin(async move { lease::release(&mut conn, name, holder, self.op_timeout).await })
    }
}

impl RedisBroker {
    /// Maps a PUBLISH failure: an error reply from the server is a refusal
    /// (ACL, OOM, ...), anything else means Redis is unreachable.
    fn publish_error(&self, error: RedisError) -> BrokerError {
        match error.kind() {
            ErrorKind::Server(_) | ErrorKind::Extension => {
                BrokerError::Refused(format!("Redis PUBLISH: {error}"))
            }
            _ => {
                self.state.set_publisher(false, Some(&error));
                self.state.recheck.notify_one();
                BrokerError::Unavailable(format!("Redis PUBLISH: {error}"))
            }
        }
    }

    /// `FCALL roomcast_publish`, loading the library first if Redis does not
    /// have it (restarted without persistence, `FUNCTION FLUSH`); a plain
    /// `PUBLISH` on a Redis without Functions.
    async fn publish_logged(
        &self,
        conn: &mut ConnectionManager,
        bounds: LogBounds,
        channel: &str,
        payload: &[u8],
    ) -> Result<(), RedisError> {
        match publish_on(conn, bounds, Layout::Single, channel, payload).await {
            Err(error) if is_unknown_command(&error) => {
                self.state.without_functions(&error);
                publish_plain(conn, channel, payload).await
            }
            result => result,
        }
    }

    /// Reads `room`'s log after id `after` (`FCALL_RO roomcast_read`).
    async fn read_log(&self, room: &str, after: u64) -> Result<log::Read, BrokerError> {
        let Some(bounds) = self.log else {
            return Err(BrokerError::Config("this node keeps no room log".into()));
        };
        let mut conn = self.publisher.connection();
        let read = read_log_on(&mut conn, bounds, Layout::Single, room, after);
        match bounded(self.op_timeout, read).await {
            Ok(reply) => log::Read::from_reply(reply).map_err(BrokerError::Refused),
            Err(error) => Err(BrokerError::Unavailable(format!(
                "Redis roomcast_read: {error}"
            ))),
        }
    }

    /// True while the PSUBSCRIBE is live (regardless of the publisher).
    pub fn is_subscribed(&self) -> bool {
        self.state.subscription.live().is_some()
    }
}

/// Recovery sessions (`roomcast:session:<pid>`) on the publishing connection.
impl SessionBackend for RedisBroker {
    fn engine(&self) -> &'static str {
        "Redis"
    }

    fn write_sessions<'a>(
        &'a self,
        ops: &'a [SessionOp],
        ttl: Duration,
    ) -> BoxFuture<'a, Result<(), BrokerError>> {
        let mut conn = self.publisher.connection();
        let write = async move { sessions::write(&mut conn, ops, ttl).await };
        Box::pin(answered("Redis sessions", self.op_timeout, write))
    }

    fn take_session<'a>(
        &'a self,
        pid: &'a str,
    ) -> BoxFuture<'a, Result<Option<Vec<u8>>, BrokerError>> {
        let mut conn = self.publisher.connection();
        let take = async move { sessions::take(&mut conn, pid).await };
        Box::pin(answered("Redis session take", self.op_timeout, take))
    }
}

impl LogReader for RedisBroker {
    fn layout(&self) -> Layout {
        Layout::Single
    }

    fn read_log<'a>(
        &'a self,
        room: &'a str,
        after: u64,
    ) -> BoxFuture<'a, Result<log::Read, BrokerError>> {
        Box::pin(RedisBroker::read_log(self, room, after))
    }
}

/// What the subscriber task needs; lives inside the task.
struct Task {
    target: Target,
    /// host:port for logs (the URL may carry a password).
    address: String,
    receive: Receive,
    sink: Sink,
    inbox: Inbox,
    state: Arc<State>,
    options: RedisOptions,
    stats: ReadStats,
}

impl Task {
    /// Connect, subscribe, deliver until the connection is lost; repeat.
    async fn subscribe_forever(&self) {
        let mut backoff = Backoff::new(self.options.backoff_min, self.options.backoff_max);
        // Failed attempts since the last good connection, and since when.
        let mut failed_attempts: u64 = 0;
        let mut down_since = Instant::now();
        let mut ever_connected = false;
        loop {
            match subscriber::subscribe(
                &self.target,
                &self.receive,
                self.options.log.map(|_| Layout::Single),
                self.options.op_timeout,
            )
            .await
            {
                Err(error) => {
                    if failed_attempts == 0 && !ever_connected {
                        tracing::warn!(
                            address = %self.address, %error,
                            "redis: cannot connect; retrying in the background"
                        );
                    } else {
                        tracing::debug!(address = %self.address, %error, attempt = failed_attempts + 1, "redis: connect attempt failed");
                    }
                    failed_attempts += 1;
                    self.wait_to_retry(backoff.next_delay()).await;
                }
                Ok(subscribed) => {
                    if ever_connected && failed_attempts == 0 {
                        // Back at the first try: the loss's own line says enough
                        // (a flood can cut many times a second).
                        tracing::debug!(
                            address = %self.address,
                            down_ms = down_since.elapsed().as_millis() as u64,
                            "redis: re-subscribed"
                        );
                    } else if ever_connected {
                        tracing::info!(
                            address = %self.address, receive = %self.receive.describe(),
                            attempts = failed_attempts + 1,
                            down_ms = down_since.elapsed().as_millis() as u64,
                            "redis: reconnected and re-subscribed"
                        );
                    } else {
                        tracing::info!(
                            address = %self.address, receive = %self.receive.describe(),
                            attempts = failed_attempts + 1,
                            "redis: connected and subscribed"
                        );
                    }
                    ever_connected = true;
                    let connected_at = Instant::now();
                    let reader = Reader {
                        sink: &self.sink,
                        inbox: &self.inbox,
                        stats: &self.stats,
                        interest: self.receive.interest(),
                        moved: &|| {},
                    };
                    let lost = read_until_lost(
                        subscribed,
                        reader,
                        &self.state.subscription,
                        &|| self.state.recheck.notify_one(),
                        &self.options,
                    )
                    .await;
                    self.state.recheck.notify_one();
                    tracing::warn!(
                        address = %self.address, reason = lost.reason.code(), detail = %lost.detail,
                        up_ms = connected_at.elapsed().as_millis() as u64,
                        "redis: subscription lost; reconnecting{}",
                        if lost.reason == subscriber::LostReason::Closed {
                            " (a subscriber that falls behind is cut by Redis's client-output-buffer-limit pubsub)"
                        } else {
                            ""
                        }
                    );
                    // Only a connection that stayed up resets the backoff: one
                    // that dies right after it was made (Redis still loading,
                    // a proxy dropping us) must not loop at the minimum delay.
                    if connected_at.elapsed() >= self.options.stable_after {
                        backoff.reset();
                    }
                    failed_attempts = 0;
                    down_since = Instant::now();
                    // A connection that worked (Redis cut a subscriber that
                    // fell behind, a restart) is re-dialled at once: every
                    // moment away loses messages. The backoff is for failures.
                    if !lost.had_worked {
                        self.wait_to_retry(backoff.next_delay()).await;
                    }
                }
            }
        }
    }

    /// Sleeps `delay`, or less if the publishing connection finds Redis
    /// answering meanwhile.
    async fn wait_to_retry(&self, delay: Duration) {
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = self.state.redis_answers.notified() => {
                tracing::debug!("redis: answering again; the subscriber retries now");
            }
        }
    }

    /// Loads the `roomcast` library if the log is on and it is not loaded
    /// yet on this connection's Redis: back ends may call it without
    /// roomcast ever publishing.
    async fn load_library_once(&self, conn: &mut ConnectionManager) {
        let Some(bounds) = self.options.log else {
            return;
        };
        if self.state.library_loaded.load(Ordering::Relaxed) {
            return;
        }
        match bounded(
            self.options.op_timeout,
            load_library(conn, bounds, Layout::Single),
        )
        .await
        {
            Ok(()) => {
                self.state.library_loaded.store(true, Ordering::Relaxed);
                tracing::debug!("redis: roomcast library loaded");
            }
            Err(error) if is_unknown_command(&error) => self.state.without_functions(&error),
            Err(error) => {
                tracing::warn!(%error, "redis: cannot load the roomcast library (FUNCTION LOAD); logged publishes will try again")
            }
        }
    }

    /// Keeps `publisher_ok` current even when nobody publishes, so readiness
    /// comes back after an outage without waiting for a client's publish;
    /// tells the subscriber when Redis answers again while it is away.
    async fn watch_publisher(&self, publisher: Arc<Publisher>) {
        let mut backoff = Backoff::new(self.options.backoff_min, self.options.backoff_max);
        loop {
            let pinged_at = Instant::now();
            let mut conn = publisher.connection();
            let command = redis::cmd("PING");
            let ping = command.query_async::<redis::Value>(&mut conn);
            let delay = match bounded(self.options.op_timeout, ping).await {
                Ok(_) => {
                    self.state.set_publisher(true, None);
                    self.load_library_once(&mut conn).await;
                    if self.state.subscription.live().is_none() {
                        self.state.redis_answers.notify_one();
                    }
                    backoff.reset();
                    self.options.health_interval
                }
                Err(error) => {
                    self.state.set_publisher(false, Some(&error));
                    self.state.library_loaded.store(false, Ordering::Relaxed);
                    self.state.no_functions.store(false, Ordering::Relaxed);
                    if error.is_timeout() {
                        tracing::debug!(
                            "redis: publishing connection timed out; dialling a new one"
                        );
                        publisher.replace();
                    }
                    backoff.next_delay()
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = self.state.recheck.notified() => {
                    // Refused publishes ask often during an outage: probe
                    // Redis at most once per `backoff_min`.
                    tokio::time::sleep_until((pinged_at + self.options.backoff_min).into()).await;
                }
            }
        }
    }
}

/// Reads a subscribed connection until it is lost. `subscription` is live
/// (and `on_live` called) once its first subscriptions are confirmed (per
/// room: every room this node has, again after a reconnect); when lost, it
/// is down, the loss counted, and the joins wait again until the rooms are
/// re-subscribed.
async fn read_until_lost(
    subscribed: subscriber::Subscribed,
    reader: Reader<'_>,
    subscription: &Subscription,
    on_live: &(dyn Fn() + Sync),
    options: &RedisOptions,
) -> subscriber::Lost {
    let live = || {
        subscription.set(true);
        on_live();
    };
    let lost = subscribed
        .run(reader, &live, options.health_interval, options.op_timeout)
        .await;
    subscription.set(false);
    if let Some(interest) = reader.interest {
        interest.lost();
    }
    telemetry::broker_disconnected(reader.inbox.broker(), lost.reason.code());
    lost
}

/// Redis answers a call of a function it does not have so.
fn is_missing_function(error: &RedisError) -> bool {
    error.to_string().contains("Function not found")
}

/// Redis before 7.0 answers `FCALL` and `FUNCTION` with "unknown command".
fn is_unknown_command(error: &RedisError) -> bool {
    error.to_string().contains("unknown command")
}

/// The seed's `PUBLISH room payload`.
async fn publish_plain(
    conn: &mut ConnectionManager,
    channel: &str,
    payload: &[u8],
) -> Result<(), RedisError> {
    redis::cmd("PUBLISH")
        .arg(channel)
        .arg(payload)
        .query_async::<redis::Value>(conn)
        .await
        .map(drop)
}

/// `FCALL roomcast_publish 1 <room> <payload>`, loading the library first
/// if Redis does not have it (restarted without persistence, `FUNCTION
/// FLUSH`, a replica promoted before it had it).
async fn publish_on(
    conn: &mut ConnectionManager,
    bounds: LogBounds,
    layout: Layout,
    room: &str,
    payload: &[u8],
) -> Result<(), RedisError> {
    let mut call = redis::cmd("FCALL");
    call.arg("roomcast_publish").arg(1).arg(room).arg(payload);
    match call.query_async::<redis::Value>(conn).await {
        Err(error) if is_missing_function(&error) => {
            load_library(conn, bounds, layout).await?;
            call.query_async::<redis::Value>(conn).await.map(drop)
        }
        result => result.map(drop),
    }
}

/// `FCALL_RO roomcast_read 1 <room> <after>`, loading the library first if
/// Redis does not have it: the reply, for [`log::Read::from_reply`].
async fn read_log_on(
    conn: &mut ConnectionManager,
    bounds: LogBounds,
    layout: Layout,
    room: &str,
    after: u64,
) -> Result<redis::Value, RedisError> {
    let mut call = redis::cmd("FCALL_RO");
    call.arg("roomcast_read")
        .arg(1)
        .arg(room)
        .arg(log::stream_id(after));
    match call.query_async::<redis::Value>(conn).await {
        Err(error) if is_missing_function(&error) => {
            load_library(conn, bounds, layout).await?;
            call.query_async::<redis::Value>(conn).await
        }
        result => result,
    }
}

/// `FUNCTION LOAD REPLACE` of the `roomcast` library.
async fn load_library(
    conn: &mut ConnectionManager,
    bounds: LogBounds,
    layout: Layout,
) -> Result<(), RedisError> {
    let source = log::library(bounds.max_len, bounds.ttl.as_millis() as u64, layout);
    redis::cmd("FUNCTION")
        .arg("LOAD")
        .arg("REPLACE")
        .arg(source)
        .query_async::<redis::Value>(conn)
        .await
        .map(drop)
}

/// A command's answer within `timeout`: an error reply from the server
/// (ACL, OOM, scripts disabled) is a refusal, anything else unavailable.
async fn answered<T>(
    what: &str,
    timeout: Duration,
    command: impl Future<Output = redis::RedisResult<T>>,
) -> Result<T, BrokerError> {
    bounded(timeout, command)
        .await
        .map_err(|error| failed(what, error))
}

/// A failed command as a broker error: an error reply is a refusal (ACL,
/// OOM, ...), anything else (no answer in time included) an unavailable
/// Redis.
fn failed(what: &str, error: RedisError) -> BrokerError {
    match error.kind() {
        ErrorKind::Server(_) | ErrorKind::Extension => {
            BrokerError::Refused(format!("{what}: {error}"))
        }
        _ => BrokerError::Unavailable(format!("{what}: {error}")),
    }
}

/// Awaits `future` at most `limit`; a timeout becomes an I/O error.
async fn bounded<T>(
    limit: Duration,
    future: impl Future<Output = Result<T, RedisError>>,
) -> Result<T, RedisError> {
    match tokio::time::timeout(limit, future).await {
        Ok(result) => result,
        Err(_) => Err(RedisError::from(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("no answer from Redis within {limit:?}"),
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn invalid_url_is_an_error_at_start() {
        let shutdown = Shutdown::new();
        let sink = Sink::new(|_: &str, _: Bytes| {});
        for url in ["not a url", "http://127.0.0.1:6379", ""] {
            let result = start(url, "*", sink.clone(), &shutdown);
            assert!(
                matches!(result, Err(BrokerError::Config(_))),
                "{url}: {:?}",
                result.err()
            );
        }
    }

    #[tokio::test]
    async fn unreachable_redis_is_not_an_error_and_not_ready() {
        let shutdown = Shutdown::new();
        let sink = Sink::new(|_: &str, _: Bytes| {});
        // Port 1 on loopback: nothing listens there; connects are refused.
        let broker = start("redis://127.0.0.1:1", "*", sink, &shutdown).unwrap();
        assert!(!broker.is_ready());
        let error = broker
            .publish("room", Bytes::from_static(b"x"))
            .await
            .unwrap_err();
        assert!(matches!(error, BrokerError::Unavailable(_)), "{error:?}");
        assert!(!broker.is_ready());
        shutdown.trigger();
        assert!(shutdown.wait(Duration::from_secs(2)).await);
    }
}
