//! Prometheus metrics: the recorder, `/metrics` rendering, and the small
//! helpers every module records through, so names and labels live here.
//!
//! The `metrics` facade is process-global by design; the recorder is
//! installed once (tests start many servers in one process and share it).

use std::sync::OnceLock;

use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::disconnect::DisconnectReason;

/// Buckets for latency histograms, seconds: 50 µs to 5 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0,
];

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

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
            metrics::set_global_recorder(recorder).ok()?;
            describe();
            Some(handle)
        })
        .clone()
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
    describe_counter!(
        "roomcast_broker_reconnects_total",
        "Broker reconnections after a lost connection"
    );
    describe_counter!(
        "roomcast_refusals_total",
        "Requests and connections refused, by kind (auth, origin, limit, room, forbidden, rate) and code"
    );
    describe_histogram!(
        "roomcast_fanout_duration_seconds",
        Unit::Seconds,
        "Time to queue one message to every member of its room"
    );
}

/// Counts one open connection of a transport while alive; records the
/// disconnect reason when dropped.
pub struct ConnectionMetric {
    transport: &'static str,
    reason: DisconnectReason,
}

impl ConnectionMetric {
    pub fn open(transport: &'static str) -> Self {
        gauge!("roomcast_connections", "transport" => transport).increment(1.0);
        counter!("roomcast_connects_total", "transport" => transport).increment(1);
        ConnectionMetric {
            transport,
            reason: DisconnectReason::ClientClosed,
        }
    }

    /// Sets the reason recorded when the connection ends.
    pub fn closing(&mut self, reason: DisconnectReason) {
        self.reason = reason;
    }
}

impl Drop for ConnectionMetric {
    fn drop(&mut self) {
        gauge!("roomcast_connections", "transport" => self.transport).decrement(1.0);
        counter!("roomcast_disconnects_total", "transport" => self.transport, "reason" => self.reason.code())
            .increment(1);
        if self.reason == DisconnectReason::SlowConsumer {
            counter!("roomcast_slow_consumer_disconnects_total", "transport" => self.transport)
                .increment(1);
        }
    }
}

pub fn bytes_out(transport: &'static str, bytes: usize) {
    counter!("roomcast_bytes_out_total", "transport" => transport).increment(bytes as u64);
}

pub fn deliveries(transport: &'static str, count: usize) {
    counter!("roomcast_deliveries_total", "transport" => transport).increment(count as u64);
}

pub fn fanout_duration(seconds: f64) {
    histogram!("roomcast_fanout_duration_seconds").record(seconds);
}

pub fn message_received() {
    counter!("roomcast_messages_received_total").increment(1);
}

pub fn message_published(source: &'static str) {
    counter!("roomcast_messages_published_total", "source" => source).increment(1);
}

pub fn rooms_changed(delta: f64) {
    gauge!("roomcast_rooms").increment(delta);
}

pub fn broker_up(broker: &'static str, up: bool) {
    gauge!("roomcast_broker_up", "broker" => broker).set(if up { 1.0 } else { 0.0 });
}

pub fn broker_reconnected(broker: &'static str) {
    counter!("roomcast_broker_reconnects_total", "broker" => broker).increment(1);
}

/// One refusal by the security layer (`kind`: auth, origin, limit, room,
/// forbidden, rate; `code`: the stable error code the client got).
pub fn refused(kind: &'static str, code: &'static str) {
    counter!("roomcast_refusals_total", "kind" => kind, "code" => code).increment(1);
}
