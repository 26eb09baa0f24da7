//! Prometheus metrics: the recorder, `/metrics` rendering, and the small
//! helpers every module records through, so names and labels live here.
//!
//! The `metrics` facade is process-global by design; the recorder is
//! installed once (tests start many servers in one process and share it).

use std::sync::OnceLock;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use metrics::{Counter, counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::disconnect::DisconnectReason;

/// Buckets for latency histograms, seconds: 50 µs to 5 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0,
];

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// How often histogram samples are folded into their buckets when nobody
/// scrapes `/metrics`.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// Installs the Prometheus recorder (once per process) and returns its handle.
/// `None` if another recorder was installed first.
pub fn install() -> Option<PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
                .ok()?
                .build_recorder();
            let handle = recorder.handle();
            STATS.started.get_or_init(Instant::now);
            metrics::set_global_recorder(recorder).ok()?;
            describe();
            spawn_upkeep(handle.clone());
            Some(handle)
        })
        .clone()
}

/// The recorder keeps every histogram sample (8 bytes and more each, one or
/// two per delivered message) until a scrape or an upkeep pass drains them
/// into buckets: without this, a node that nobody scrapes grows for ever.
/// A thread rather than a task: the recorder is process-wide and outlives
/// any one runtime (tests start many servers in one process).
fn spawn_upkeep(handle: PrometheusHandle) {
    let upkeep = std::thread::Builder::new()
        .name("metrics-upkeep".into())
        .spawn(move || {
            loop {
                std::thread::sleep(UPKEEP_INTERVAL);
                handle.run_upkeep();
            }
        });
    if let Err(error) = upkeep {
        tracing::warn!(%error, "metrics: no upkeep thread; histogram samples are drained only when /metrics is scraped");
    }
}

/// Renders the metrics page, refreshing the process metrics first.
pub fn render(handle: &PrometheusHandle) -> String {
    metrics_process::Collector::default().collect();
    handle.render()
}

fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    metrics_process::Collector::default().describe();
    describe_gauge!(
        "roomcast_connections",
        "Open client connections, by transport"
    );
    describe_gauge!(
        "roomcast_sockets",
        "Open TCP sockets admitted by the accept loop (every listener; counted in the limits)"
    );
    describe_counter!(
        "roomcast_connects_total",
        "Client connections opened, by transport"
    );
    describe_counter!(
        "roomcast_disconnects_total",
        "Client connections closed, by transport and reason"
    );
    describe_gauge!(
        "roomcast_rooms",
        "Rooms with at least one member on this node"
    );
    describe_counter!(
        "roomcast_messages_received_total",
        "Messages received from the broker"
    );
    describe_counter!(
        "roomcast_messages_published_total",
        "Messages published through this node, by source"
    );
    describe_counter!(
        "roomcast_deliveries_total",
        "Frames queued to clients, by transport"
    );
    describe_counter!(
        "roomcast_slow_consumer_disconnects_total",
        "Clients disconnected because their queue overflowed"
    );
    describe_counter!(
        "roomcast_bytes_out_total",
        Unit::Bytes,
        "Bytes written to clients, by transport"
    );
    describe_gauge!("roomcast_broker_up", "1 while the broker is connected");
    describe_gauge!(
        "roomcast_broker_shard_up",
        "1 while this node's subscription to that Redis Cluster master is live"
    );
    describe_gauge!(
        "roomcast_broker_subscriptions",
        "Rooms this node's broker connection is subscribed to (per-room modes), by broker"
    );
    describe_histogram!(
        "roomcast_broker_subscribe_seconds",
        Unit::Seconds,
        "Time from a room's first join on this node to the broker confirming its subscription"
    );
    describe_counter!(
        "roomcast_broker_reconnects_total",
        "Broker reconnections after a lost connection"
    );
    describe_counter!(
        "roomcast_broker_disconnects_total",
        "Broker subscription connections lost, by broker and reason"
    );
    describe_counter!(
        "roomcast_broker_dropped_total",
        "Messages received from the broker and dropped because the fan-out was too far behind"
    );
    describe_gauge!(
        "roomcast_tls_certificate_expiry_seconds",
        Unit::Seconds,
        "Unix time at which the served TLS certificate expires, by certificate"
    );
    describe_histogram!(
        "roomcast_delivery_latency_seconds",
        Unit::Seconds,
        "Time from the hub receiving a message to its frame leaving the client's queue for the socket (1 frame in 64 sampled)"
    );
    describe_counter!(
        "roomcast_refusals_total",
        "Requests and connections refused, by kind (auth, origin, limit, room, forbidden, rate) and code"
    );
    describe_counter!(
        "roomcast_mqtt_messages_total",
        "MQTT messages received by the ingest, by outcome (published, retained, duplicate, bad_topic, bad_room, too_large, refused)"
    );
    describe_counter!(
        "roomcast_mqtt_reconnects_total",
        "MQTT ingest reconnections after a lost connection"
    );
    describe_gauge!(
        "roomcast_mqtt_up",
        "1 while the MQTT ingest is connected and subscribed"
    );
    describe_histogram!(
        "roomcast_fanout_duration_seconds",
        Unit::Seconds,
        "Time to queue one message to every member of its room"
    );
    describe_counter!(
        "roomcast_socketio_recoveries_total",
        "Socket.IO CONNECTs that asked to recover a session, by outcome (recovered, expired, gap, refused, malformed)"
    );
    describe_counter!(
        "roomcast_live_gaps_total",
        "Holes in a room's live logged messages, by outcome (filled from the log; lost, read_error or overflow: the room's members were told to reset)"
    );
    describe_counter!(
        "roomcast_emitter_messages_total",
        "Messages on the Socket.IO emitter's channels, by kind (broadcast, request, response) and result (done, ignored, malformed)"
    );
}

/// The transports whose connections `/api/stats` counts, by metric label.
const TRANSPORTS: [&str; 3] = ["socketio", "ws", "sse"];

/// The few live numbers of the status page, kept beside the Prometheus
/// series by the same helpers (the exporter cannot be read back cheaply).
struct Stats {
    started: OnceLock<Instant>,
    connections: [AtomicI64; TRANSPORTS.len()],
    rooms: AtomicI64,
    received: AtomicU64,
    published: AtomicU64,
    deliveries: AtomicU64,
    slow_consumers: AtomicU64,
}

static STATS: Stats = Stats {
    started: OnceLock::new(),
    connections: [AtomicI64::new(0), AtomicI64::new(0), AtomicI64::new(0)],
    rooms: AtomicI64::new(0),
    received: AtomicU64::new(0),
    published: AtomicU64::new(0),
    deliveries: AtomicU64::new(0),
    slow_consumers: AtomicU64::new(0),
};

fn connections_slot(transport: &str) -> Option<&'static AtomicI64> {
    let index = TRANSPORTS.iter().position(|t| *t == transport)?;
    Some(&STATS.connections[index])
}

/// What `/api/stats` and the status page show. Counters are totals since
/// the process started; the page derives rates from successive samples.
#[derive(Debug, serde::Serialize)]
pub struct StatsSnapshot {
    pub uptime_s: u64,
    pub connections: std::collections::BTreeMap<&'static str, i64>,
    pub rooms: i64,
    pub messages_received: u64,
    pub messages_published: u64,
    pub deliveries: u64,
    pub slow_consumer_disconnects: u64,
}

pub fn stats() -> StatsSnapshot {
    let started = *STATS.started.get_or_init(Instant::now);
    StatsSnapshot {
        uptime_s: started.elapsed().as_secs(),
        connections: TRANSPORTS
            .iter()
            .zip(&STATS.connections)
            .map(|(name, count)| (*name, count.load(Ordering::Relaxed)))
            .collect(),
        rooms: STATS.rooms.load(Ordering::Relaxed),
        messages_received: STATS.received.load(Ordering::Relaxed),
        messages_published: STATS.published.load(Ordering::Relaxed),
        deliveries: STATS.deliveries.load(Ordering::Relaxed),
        slow_consumer_disconnects: STATS.slow_consumers.load(Ordering::Relaxed),
    }
}

/// Counts one open connection of a transport while alive.
pub struct ConnectionMetric {
    transport: &'static str,
}

impl ConnectionMetric {
    pub fn open(transport: &'static str) -> Self {
        gauge!("roomcast_connections", "transport" => transport).increment(1.0);
        counter!("roomcast_connects_total", "transport" => transport).increment(1);
        if let Some(slot) = connections_slot(transport) {
            slot.fetch_add(1, Ordering::Relaxed);
        }
        ConnectionMetric { transport }
    }
}

impl Drop for ConnectionMetric {
    fn drop(&mut self) {
        gauge!("roomcast_connections", "transport" => self.transport).decrement(1.0);
        if let Some(slot) = connections_slot(self.transport) {
            slot.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

/// Counts one admitted TCP socket while alive (zero-sized: an idle socket
/// pays nothing for it).
pub struct SocketMetric(());

impl SocketMetric {
    pub fn open() -> Self {
        gauge!("roomcast_sockets").increment(1.0);
        SocketMetric(())
    }
}

impl Drop for SocketMetric {
    fn drop(&mut self) {
        gauge!("roomcast_sockets").decrement(1.0);
    }
}

/// Counts a closed connection by reason (called once per connection).
pub fn disconnected(transport: &'static str, reason: DisconnectReason) {
    counter!("roomcast_disconnects_total", "transport" => transport, "reason" => reason.code())
        .increment(1);
    if reason == DisconnectReason::SlowConsumer {
        STATS.slow_consumers.fetch_add(1, Ordering::Relaxed);
        counter!("roomcast_slow_consumer_disconnects_total", "transport" => transport).increment(1);
    }
}

/// A counter labelled by transport whose series are looked up once: on the
/// delivery path (per write, per message) `counter!` with a label would find
/// its series in the recorder's registry on every call, hashing the key and
/// taking a lock: counting bytes out that way cost 6% of Socket.IO's
/// instructions per delivery (scripts/bench-instructions, docs/BENCHMARKS.md).
/// The recorder is installed before any connection, so the handles are its
/// own.
struct PerTransport {
    name: &'static str,
    series: [OnceLock<Counter>; TRANSPORTS.len()],
}

impl PerTransport {
    const fn new(name: &'static str) -> Self {
        PerTransport {
            name,
            series: [const { OnceLock::new() }; TRANSPORTS.len()],
        }
    }

    fn increment(&self, transport: &'static str, by: u64) {
        let name = self.name;
        match TRANSPORTS.iter().position(|t| *t == transport) {
            Some(index) => self.series[index]
                .get_or_init(|| counter!(name, "transport" => transport))
                .increment(by),
            None => counter!(name, "transport" => transport).increment(by),
        }
    }
}

static BYTES_OUT: PerTransport = PerTransport::new("roomcast_bytes_out_total");
static DELIVERIES: PerTransport = PerTransport::new("roomcast_deliveries_total");

pub fn bytes_out(transport: &'static str, bytes: usize) {
    BYTES_OUT.increment(transport, bytes as u64);
}

pub fn deliveries(transport: &'static str, count: usize) {
    DELIVERIES.increment(transport, count as u64);
    STATS.deliveries.fetch_add(count as u64, Ordering::Relaxed);
}

pub fn fanout_duration(seconds: f64) {
    histogram!("roomcast_fanout_duration_seconds").record(seconds);
}

pub fn delivery_latency(seconds: f64) {
    histogram!("roomcast_delivery_latency_seconds").record(seconds);
}

/// A Socket.IO client asked to recover its session, and what came of it.
pub fn socketio_recovery(outcome: &'static str) {
    counter!("roomcast_socketio_recoveries_total", "outcome" => outcome).increment(1);
}

/// A hole in a room's live logged messages and what came of it (`filled`;
/// `lost`: the log no longer holds it, `read_error`, `overflow`: too much
/// arrived while the log was read).
pub fn live_gap(outcome: &'static str) {
    counter!("roomcast_live_gaps_total", "outcome" => outcome).increment(1);
}

/// A message on one of the Socket.IO emitter's channels and what came of it.
pub fn emitter_message(kind: &'static str, result: &'static str) {
    counter!("roomcast_emitter_messages_total", "kind" => kind, "result" => result).increment(1);
}

/// Messages a broker received (wanted here or not), counted per batch.
pub fn messages_received(broker: &'static str, count: u64) {
    counter!("roomcast_messages_received_total", "broker" => broker).increment(count);
    STATS.received.fetch_add(count, Ordering::Relaxed);
}

pub fn message_published(source: &'static str) {
    counter!("roomcast_messages_published_total", "source" => source).increment(1);
    STATS.published.fetch_add(1, Ordering::Relaxed);
}

pub fn rooms_changed(delta: f64) {
    gauge!("roomcast_rooms").increment(delta);
    STATS.rooms.fetch_add(delta as i64, Ordering::Relaxed);
}

/// Rooms this node's broker connection subscribed (confirmed) changed by `delta`.
pub fn broker_subscriptions(broker: &'static str, delta: f64) {
    gauge!("roomcast_broker_subscriptions", "broker" => broker).increment(delta);
}

/// A room's subscription was confirmed `seconds` after it was asked for.
pub fn broker_subscribe_seconds(broker: &'static str, seconds: f64) {
    histogram!("roomcast_broker_subscribe_seconds", "broker" => broker).record(seconds);
}

pub fn broker_up(broker: &'static str, up: bool) {
    gauge!("roomcast_broker_up", "broker" => broker).set(if up { 1.0 } else { 0.0 });
}

/// One part of the broker (a Redis Cluster master) is reachable or not.
pub fn broker_shard_up(broker: &'static str, shard: String, up: bool) {
    gauge!("roomcast_broker_shard_up", "broker" => broker, "shard" => shard).set(if up {
        1.0
    } else {
        0.0
    });
}

pub fn broker_reconnected(broker: &'static str) {
    counter!("roomcast_broker_reconnects_total", "broker" => broker).increment(1);
}

/// The broker's subscribed connection ended (`reason`: closed, io_error,
/// no_answer, error_reply, protocol_error).
pub fn broker_disconnected(broker: &'static str, reason: &'static str) {
    counter!("roomcast_broker_disconnects_total", "broker" => broker, "reason" => reason)
        .increment(1);
}

/// Messages received but dropped because the fan-out was too far behind.
pub fn broker_dropped(broker: &'static str, count: usize) {
    counter!("roomcast_broker_dropped_total", "broker" => broker).increment(count as u64);
}

/// One MQTT message handled by the ingest (`outcome`: published, or why not).
pub fn mqtt_message(outcome: &'static str) {
    counter!("roomcast_mqtt_messages_total", "outcome" => outcome).increment(1);
}

pub fn mqtt_reconnected() {
    counter!("roomcast_mqtt_reconnects_total").increment(1);
}

pub fn mqtt_up(up: bool) {
    gauge!("roomcast_mqtt_up").set(if up { 1.0 } else { 0.0 });
}

/// The served certificate's expiry, as a Unix timestamp (alert on
/// `roomcast_tls_certificate_expiry_seconds - time() < 14 * 86400`).
pub fn tls_certificate_expiry(certificate: &str, not_after: std::time::SystemTime) {
    let seconds = not_after
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    gauge!("roomcast_tls_certificate_expiry_seconds", "certificate" => certificate.to_string())
        .set(seconds);
}

/// One refusal by the security layer (`kind`: auth, origin, limit, room,
/// forbidden, rate; `code`: the stable error code the client got).
pub fn refused(kind: &'static str, code: &'static str) {
    counter!("roomcast_refusals_total", "kind" => kind, "code" => code).increment(1);
}
