//! Wires config, broker, hub, transports and HTTP together, serves until
//! SIGINT/SIGTERM, then drains: stop accepting, tell every connection task to
//! close, wait for them with a deadline.

mod gaps;

use std::sync::Arc;

use bytes::Bytes;

use crate::brokers::interest::{Interest, Subscribed, Tracker};
use crate::brokers::sessions::SessionBackend;
use crate::brokers::{
    Broker, BrokerError, LogBounds, Logged, Sink, memory::MemoryBroker, nats, redis,
};
use crate::config::{BrokerConfig, RedisSubscribe, ServeArgs};
use crate::emitter::{self, Emitter};
use crate::http::{self, AppState};
use crate::hub::{
    self, Hub, LogEntry, LogFuture, LogId, LogPosition, LogRead, Ready, RoomInterest, RoomLog,
    RoomNamePolicy, WireId,
};
use crate::ingest::mqtt;
use crate::net::accept::Sockets;
use crate::net::serve::serve as serve_http;
use crate::refusal::Refusal;
use crate::security;
use crate::shutdown::Shutdown;
use crate::telemetry;
use crate::tls::{self, Tls};
use crate::transports::sessions::{SessionStore, SharedSessions};
use crate::transports::socketio::{RoomcastHandler, SocketIo, SocketIoConfig};
use crate::transports::{sse, ws};

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot start the {broker} broker: {source}")]
    Broker {
        broker: &'static str,
        source: crate::brokers::BrokerError,
    },
    #[error("HTTPS: {0}")]
    Tls(#[from] crate::tls::TlsError),
    #[error("--auth jwt: {0}")]
    Keys(#[from] security::jwt::KeyError),
    #[error("MQTT ingest: {0}")]
    Mqtt(#[from] crate::ingest::mqtt::MqttConfigError),
    #[error("server error: {0}")]
    Io(#[from] std::io::Error),
    #[error("the drain deadline (--shutdown-timeout-s) passed: {0}")]
    DrainOverrun(String),
}

/// Runs the server until `shutdown` is triggered (by the supervisor thread on
/// SIGTERM/SIGINT, see [`crate::shutdown::supervise`]), then drains.
pub async fn serve(args: ServeArgs, shutdown: Shutdown) -> Result<(), ServeError> {
    let running = start(&args, shutdown.clone()).await?;
    let scheme = if running.tls.is_some() {
        "https"
    } else {
        "http"
    };
    tracing::info!(
        listen = %running.local_addr,
        http_listen = ?running.http_addr,
        broker = running.broker.name(),
        mqtt = running.mqtt.is_some(),
        "roomcast listening; web page at {scheme}://{}/",
        running.local_addr
    );
    shutdown.requested().await;
    tracing::info!("shutting down: draining connections");
    let deadline = args.http.shutdown_timeout();
    if !shutdown.wait(deadline).await {
        return Err(ServeError::DrainOverrun(shutdown.unfinished()));
    }
    Ok(())
}

/// A started server (tests use it to learn the bound port).
pub struct Running {
    pub local_addr: std::net::SocketAddr,
    /// The plain-HTTP listener beside HTTPS (`--http-listen`), when on.
    pub http_addr: Option<std::net::SocketAddr>,
    /// HTTPS controls, when TLS is on.
    pub tls: Option<tls::TlsHandle>,
    pub hub: Arc<Hub>,
    pub broker: Arc<dyn Broker>,
    /// The MQTT ingest's connection state, when `--mqtt-url` is set.
    pub mqtt: Option<mqtt::Readiness>,
}

/// Binds, starts the broker and the HTTP server; returns once accepting.
pub async fn start(args: &ServeArgs, shutdown: Shutdown) -> Result<Running, ServeError> {
    args.validate()?;
    let mqtt_settings = args.mqtt.settings(args.transports.max_payload)?;
    let tls = match args.tls.settings().map_err(tls::TlsError::from)? {
        Some(settings) => Some(Tls::prepare(settings).await?),
        None => None,
    };
    let tls_readiness = tls.as_ref().map(Tls::readiness);
    let mut security = args.security.security()?;
    let broker_config = args.broker.settings()?;
    if matches!(
        broker_config,
        BrokerConfig::Redis { .. } | BrokerConfig::RedisCluster { .. }
    ) {
        // The room log's channels (`roomcast:log:<room>`) and keys.
        security.room_names.reserved_prefix = Some(redis::log::RESERVED_PREFIX);
    }
    let security = Arc::new(security);
    if let Some(verifier) = &security.verifier {
        verifier.watch(&shutdown);
    }
    if mqtt_settings.as_ref().is_some_and(|s| s.retained) && !security.rules.any_cache() {
        return Err(mqtt::MqttConfigError::RetainedWithoutCache.into());
    }
    let hub = Arc::new(Hub::with_config(args.hub.hub_config()));
    if security.rules.any_cache() {
        let rules = security.rules.clone();
        hub.set_cached_rooms(Box::new(move |room: &str| rules.caches_last(room)));
    }
    let sink = {
        let (hub, wanting) = (hub.clone(), hub.clone());
        let emitter = Emitter::new(&args.broker.emitter_key, hub.clone());
        let emitter_key = args.broker.emitter_key.clone();
        Sink::new(move |channel: &str, payload: Bytes| {
            if emitter
                .as_ref()
                .is_some_and(|e| e.handle(channel, &payload))
            {
                return;
            }
            hub.deliver(channel, payload);
        })
        // The emitter's channels name no room but are wanted all the same.
        .wanting(move |channel: &str| {
            wanting.wants(channel) || emitter::is_emitter_channel(&emitter_key, channel)
        })
    };
    let emitter_key = &args.broker.emitter_key;
    // A per-room subscription lingers after the room's last member left as
    // long as its history is kept.
    let linger = args.hub.history_ttl();
    // Socket.IO recovery's sessions: shared through Redis, Redis Cluster or
    // NATS with the room log (a client recovers on any node), else in this
    // process.
    let mut sessions: Option<Arc<dyn SessionStore>> = None;
    let broker: Arc<dyn Broker> = match broker_config {
        BrokerConfig::Memory => Arc::new(MemoryBroker::new(sink)),
        BrokerConfig::Nats {
            urls,
            prefix,
            ca_file,
        } => {
            let interest = Interest::new("nats", linger, nats::check_room, |_: &str| false);
            hub.set_interest(Arc::new(HubInterest(interest.clone())));
            // The room log is the history every node shares; none without one.
            let log = log_bounds(&args.hub);
            let options = nats::NatsOptions {
                urls,
                prefix,
                ca_file,
                log,
            };
            let logging = hub.clone();
            // A hole in a room's live messages (this node's connection was
            // away while the stream kept what was published) is filled from
            // the log, as on Redis.
            let gaps = gaps::Gaps::new(hub.clone(), shutdown.clone());
            let sink = sink.with_logged(move |room: &str, payload: Bytes, at: Logged| {
                let position = LogPosition {
                    epoch: at.epoch,
                    prev: at.prev,
                };
                // A new epoch after another: the stream was deleted and made
                // again, and what was published while it was gone reached
                // no node.
                if logging
                    .last_logged(room)
                    .is_some_and(|last| last.epoch != at.epoch)
                {
                    logging.reset_members(room);
                }
                gaps.deliver(room, payload, at.n, position);
            });
            let broker = Arc::new(
                nats::start(options, interest, sink, &shutdown)
                    .await
                    .map_err(|source| ServeError::Broker {
                        broker: "nats",
                        source,
                    })?,
            );
            if log.is_some() {
                hub.set_log(Arc::new(NatsRoomLog(broker.clone())));
                // In JetStream too (in this process if the server has none).
                sessions = shared_sessions(broker.clone(), args, &shutdown);
            }
            broker
        }
        BrokerConfig::Redis {
            url,
            pattern,
            subscribe,
            ca_file,
        } => {
            if subscribe == RedisSubscribe::Pattern
                && emitter::pattern_misses(&pattern, emitter_key)
            {
                tracing::warn!(
                    %pattern, key = %emitter_key,
                    "--pattern does not match the Socket.IO emitter's channels: its messages will not arrive (--emitter-key '' turns this check off)"
                );
            }
            let broker_error = |source| ServeError::Broker {
                broker: "redis",
                source,
            };
            let mut options = redis_options(ca_file.as_deref()).map_err(broker_error)?;
            options.log = log_bounds(&args.hub);
            let logged = options.log.is_some();
            let sink = match logged {
                true => logged_sink(hub.clone(), sink, redis::Layout::Single, &shutdown),
                false => sink,
            };
            let receive = match subscribe {
                RedisSubscribe::Pattern => redis::Receive::Pattern(pattern),
                RedisSubscribe::Rooms => {
                    let allowed = served_by(pattern);
                    // The emitter's channels come through its patterns.
                    let key = emitter_key.clone();
                    let covered = move |room: &str| emitter::covered_by_patterns(&key, room);
                    let interest = Interest::new("redis", linger, allowed, covered);
                    hub.set_interest(Arc::new(HubInterest(interest.clone())));
                    redis::Receive::rooms(interest, emitter::patterns(emitter_key))
                }
            };
            let broker = Arc::new(
                redis::start_with(&url, receive, options, sink, &shutdown).map_err(broker_error)?,
            );
            if logged {
                hub.set_log(Arc::new(RedisRoomLog(broker.clone())));
            }
            sessions = shared_sessions(broker.clone(), args, &shutdown);
            broker
        }
        BrokerConfig::RedisCluster {
            urls,
            pattern,
            ca_file,
        } => {
            let broker_error = |source| ServeError::Broker {
                broker: "redis-cluster",
                source,
            };
            let mut options = redis_options(ca_file.as_deref()).map_err(broker_error)?;
            options.log = log_bounds(&args.hub);
            let logged = options.log.is_some();
            let sink = match logged {
                true => logged_sink(hub.clone(), sink, redis::Layout::Cluster, &shutdown),
                false => sink,
            };
            let served = served_by(pattern);
            // A logged room needs a key of its own slot (rooms with braces
            // that form no hashtag have none).
            let allowed = Arc::new(move |room: &str| {
                served(room)?;
                match logged {
                    true => redis::Layout::Cluster.key(room).map(drop),
                    false => Ok(()),
                }
            });
            // Sharded pub/sub has no patterns: the Socket.IO emitter's
            // channels are not received (see README "Scaling out").
            let tracker = move || {
                let allowed = allowed.clone();
                Interest::new(
                    "redis-cluster",
                    linger,
                    move |room: &str| allowed(room),
                    |_: &str| false,
                )
            };
            let (broker, rooms) = redis::cluster::start(&urls, tracker, options, sink, &shutdown)
                .map_err(broker_error)?;
            hub.set_interest(Arc::new(HubInterest(rooms)));
            let broker = Arc::new(broker);
            if logged {
                hub.set_log(Arc::new(RedisRoomLog(broker.clone())));
            }
            sessions = shared_sessions(broker.clone(), args, &shutdown);
            broker
        }
    };
    if mqtt_settings.as_ref().is_some_and(|s| s.lease.is_some()) && !broker.keeps_leases() {
        return Err(mqtt::MqttConfigError::LeaseUnsupported(broker.name()).into());
    }
    let mqtt =
        mqtt_settings.map(|settings| mqtt::start(settings, broker.clone(), hub.clone(), &shutdown));
    let state = AppState {
        hub: hub.clone(),
        broker: broker.clone(),
        api_keys: args.http.api_keys(),
        max_payload: args.transports.max_payload,
        room_names: RoomNamePolicy {
            reserved_prefix: security.room_names.reserved_prefix,
            ..RoomNamePolicy::default()
        },
        shutdown: shutdown.clone(),
        metrics: telemetry::install(),
        tls: tls_readiness,
        mqtt: mqtt.clone(),
    };
    let sse = sse::Sse {
        security: security.clone(),
        hub: hub.clone(),
        limits: args.hub.outbox_limits(),
        shutdown: shutdown.clone(),
    };
    let ws = ws::Ws {
        security: security.clone(),
        hub: hub.clone(),
        broker: broker.clone(),
        shutdown: shutdown.clone(),
        limits: args.hub.outbox_limits(),
        max_frame: args.transports.max_payload,
        ping_interval: args.transports.ping_interval(),
        ping_timeout: args.transports.ping_timeout(),
        allow_publish: args.transports.ws_publish,
        emitter_key: emitter_key.clone(),
        max_errors: args.transports.max_protocol_errors,
    };
    let socketio = SocketIo::new(
        SocketIoConfig {
            path: args.transports.socketio_path.clone(),
            ping_interval: args.transports.ping_interval(),
            ping_timeout: args.transports.ping_timeout(),
            max_payload: args.transports.max_payload,
            outbox: args.hub.outbox_limits(),
            security: Some(security.clone()),
            recovery_window: args.transports.recovery_window(),
            sessions,
            ..SocketIoConfig::default()
        },
        hub.clone(),
        Arc::new(RoomcastHandler::new(shutdown.clone())),
        shutdown.clone(),
    );
    let readyz = http::readyz_router(state.clone());
    let health = http::reserve_router(state.clone());
    let app = http::router(state, sse.clone(), ws, socketio.router());

    let listener = bind(args.http.listen).await?;
    let local_addr = listener.local_addr()?;
    let mut http_addr = None;
    // Every socket of every listener counts in the limits from accept on.
    let sockets = Sockets::new(security.clone(), args.http.write_timeout());
    let health = Some((health, shutdown.clone()));
    let (header, keepalive) = (args.http.header_timeout(), args.http.keepalive_timeout());
    let tls = match tls {
        None => {
            let listener = sse::start_listener(sockets.accept(listener, health), sse, header)?;
            serve_http(&shutdown, listener, app, keepalive, "http server");
            None
        }
        Some(tls) => {
            if let Some(addr) = tls.http_listen() {
                let plain = bind(addr).await?;
                http_addr = Some(plain.local_addr()?);
                let router = tls.redirect_router(local_addr.port()).merge(readyz);
                let plain = sockets.accept(plain, health);
                serve_http(&shutdown, plain, router, header, "plain-HTTP listener");
            }
            // No reserve here: a reserve socket would need a TLS handshake;
            // health checks of an HTTPS server use `--http-listen`.
            let listener = sockets.accept(listener, None);
            let listener = tls::listener::start(listener, tls.server_config(), header, &shutdown);
            let listener = sse::start_listener(listener, sse, header)?;
            serve_http(&shutdown, listener, app, keepalive, "https server");
            Some(tls.run(&shutdown))
        }
    };
    Ok(Running {
        local_addr,
        http_addr,
        tls,
        hub,
        broker,
        mqtt,
    })
}

/// The Redis broker's settings from the flags (`--redis-ca-file`).
fn redis_options(ca_file: Option<&std::path::Path>) -> Result<redis::RedisOptions, BrokerError> {
    let tls_roots = match ca_file {
        Some(path) => Some(std::fs::read(path).map_err(|e| {
            BrokerError::Config(format!(
                "cannot read --redis-ca-file {}: {e}",
                path.display()
            ))
        })?),
        None => None,
    };
    Ok(redis::RedisOptions {
        tls_roots,
        ..redis::RedisOptions::default()
    })
}

/// The room log's bounds: the history every node shares; none without one.
fn log_bounds(hub: &crate::config::HubArgs) -> Option<LogBounds> {
    (hub.history_size > 0).then(|| LogBounds {
        max_len: hub.history_size,
        ttl: hub.history_ttl(),
    })
}

/// Socket.IO recovery's sessions in `backend` (one Redis, a cluster, or
/// NATS JetStream), so a client recovers on any node; none without a
/// recovery window.
fn shared_sessions(
    backend: Arc<dyn SessionBackend>,
    args: &ServeArgs,
    shutdown: &Shutdown,
) -> Option<Arc<dyn SessionStore>> {
    let window = args.transports.recovery_window();
    (!window.is_zero())
        .then(|| SharedSessions::start(backend, window, shutdown) as Arc<dyn SessionStore>)
}

/// Per-room Redis: only rooms `--pattern` matches may be joined.
fn served_by(pattern: String) -> impl Fn(&str) -> Result<(), String> + Send + Sync + 'static {
    move |room: &str| {
        if security::rules::glob_match(&pattern, room) {
            Ok(())
        } else {
            Err(format!(
                "room {room:?} is not served by this cluster (--pattern {pattern})"
            ))
        }
    }
}

/// The hub's interest signal, carried to a broker's tracker: the hub never
/// imports a broker, so the glue lives here.
#[derive(Debug)]
struct HubInterest<T>(T);

/// The Redis broker's sink with the room log: a message on a log channel is
/// a logged message of its room (its id and epoch in the envelope); every
/// other channel goes on to `sink` as before.
fn logged_sink(hub: Arc<Hub>, sink: Sink, layout: redis::Layout, shutdown: &Shutdown) -> Sink {
    let gaps = gaps::Gaps::new(hub.clone(), shutdown.clone());
    let wanting = sink.clone();
    let malformed = std::sync::atomic::AtomicU64::new(0);
    Sink::new(move |channel: &str, payload: Bytes| {
        let Some(room) = layout.room_of(channel) else {
            return sink.deliver(channel, payload);
        };
        let parsed = redis::log::Envelope::parse(&payload).and_then(|envelope| {
            let epoch = hub::parse_base36(envelope.epoch)?;
            Some((envelope.id, envelope.prev, epoch, envelope.payload_at))
        });
        match parsed {
            Some((id, prev, epoch, at)) => {
                gaps.deliver(room, payload.slice(at..), id, LogPosition { epoch, prev });
            }
            None => {
                // Logged on the 1st, 2nd, 4th, 8th... not per message.
                let count = malformed.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                if count.is_power_of_two() {
                    tracing::warn!(channel, count, "redis: dropped message(s) on a log channel that are not a roomcast envelope (room names beginning with roomcast: are reserved)");
                }
            }
        }
    })
    .wanting(move |channel: &str| wanting.wants(layout.room_of(channel).unwrap_or(channel)))
}

/// The hub's [`RoomLog`] onto a Redis engine's `roomcast_read`.
struct RedisRoomLog<B>(Arc<B>);

impl<B: redis::LogReader> RoomLog for RedisRoomLog<B> {
    fn read(&self, room: &str, after: LogId) -> LogFuture {
        let (broker, room) = (self.0.clone(), Arc::<str>::from(room));
        Box::pin(async move {
            let layout = broker.layout();
            let read = broker
                .read_log(&room, layout.read_after(after.n))
                .await
                .map_err(|error| error.to_string())?;
            let epoch = read.epoch.as_deref().and_then(hub::parse_base36);
            let client_epoch = WireId {
                n: 0,
                epoch: Some(after.epoch),
            }
            .epoch_text();
            let missed = read.missed(&client_epoch, after.n, layout);
            let gap = missed.is_none();
            let entries = missed.unwrap_or_default().iter().map(|entry| LogEntry {
                id: entry.id,
                prev: entry.prev,
                ts: entry.id >> 16,
                payload: entry.payload.clone(),
            });
            let mut found = LogRead::found(&room, epoch, gap, read.newest, entries);
            found.per_room = layout == redis::Layout::Cluster;
            Ok(found)
        })
    }
}

/// The hub's [`RoomLog`] onto the NATS broker's stream reads.
struct NatsRoomLog(Arc<nats::NatsBroker>);

impl RoomLog for NatsRoomLog {
    fn read(&self, room: &str, after: LogId) -> LogFuture {
        let (broker, room) = (self.0.clone(), Arc::<str>::from(room));
        Box::pin(async move {
            let read = broker
                .read_log(&room, after.n)
                .await
                .map_err(|error| error.to_string())?;
            let missed = read.missed(after.epoch, after.n);
            let gap = missed.is_none();
            // What the client is given up to: the last entry read (a flood
            // may have added more since, which come live), or on a reset
            // the room's newest.
            let newest = match gap {
                true => read.newest,
                false => read.entries.last().map_or(0, |last| last.seq),
            };
            // Each entry follows the one before it in the room.
            let mut prev = 0;
            let entries = missed.unwrap_or_default().iter().map(|entry| LogEntry {
                id: entry.seq,
                prev: std::mem::replace(&mut prev, entry.seq),
                ts: entry.time_ms,
                payload: entry.payload.clone(),
            });
            Ok(LogRead::found(&room, read.epoch, gap, newest, entries))
        })
    }
}

impl<T: Tracker> RoomInterest for HubInterest<T> {
    fn first_member(&self, room: &str) {
        self.0.want(room);
    }

    fn last_member_left(&self, room: &str) {
        self.0.unwant(room);
    }

    fn ready(&self, room: &str) -> Ready {
        match self.0.ready(room) {
            Subscribed::Now => Ready::now(),
            Subscribed::Refused(message) => Ready::refused(Refusal::room_not_served(message)),
            Subscribed::Later(confirmed) => Ready::later(async move {
                confirmed.await;
                Ok(())
            }),
        }
    }
}

async fn bind(addr: std::net::SocketAddr) -> Result<tokio::net::TcpListener, ServeError> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr, source })
}
