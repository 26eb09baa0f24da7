//! What one run measured: the JSON written under `bench/results/` and the
//! human table printed at the end of a run.

use serde::{Deserialize, Serialize};

use crate::clients::Transport;
use crate::histogram::Percentiles;
use crate::proc_stats::ServerResources;
use crate::publisher::PublishOutcome;
use crate::recovery::RecoverySummary;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunResult {
    /// Scenario label (idle, fanout, rooms, churn, scale, smoke…).
    pub scenario: String,
    /// Which server was measured (roomcast, peer).
    pub server: String,
    pub transport: Transport,
    /// The clients spoke TLS (absent in older results: plain).
    #[serde(default)]
    pub tls: bool,
    pub connections: u64,
    pub rooms: u32,
    pub nodes: usize,
    pub workers: usize,
    /// Unix seconds when the run began.
    pub started_unix: u64,
    pub seconds: f64,
    pub connect: ConnectSummary,
    pub resources: ServerResources,
    pub publish: Option<PublishSummary>,
    pub delivery: Option<DeliverySummary>,
    pub churn: Option<ChurnSummary>,
    /// The cluster scenario's per-node and engine figures (absent in older results).
    #[serde(default)]
    pub cluster: Option<ClusterSummary>,
    /// The recovery scenario's figures (`run --kill-node`).
    #[serde(default)]
    pub recovery: Option<RecoverySummary>,
}

/// Per node and engine, while publishing (`run --engine`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ClusterSummary {
    /// The engine and mode, e.g. "redis rooms".
    pub engine: String,
    /// In `--target` order.
    pub nodes: Vec<NodeLoad>,
    pub engine_pids: Vec<u32>,
    /// The engine's own processes (redis-server, nats-server), cores.
    pub engine_cpu_cores: f64,
    pub engine_cpu_us_per_delivery: f64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct NodeLoad {
    /// What the node's broker handed it (`roomcast_messages_received_total`).
    pub messages_received: u64,
    pub cpu_cores: f64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ConnectSummary {
    pub ok: u64,
    pub failed: u64,
    pub seconds: f64,
    /// Connections per second achieved.
    pub rate: f64,
    pub errors: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PublishSummary {
    pub via: String,
    /// `rate N/s` or `saturate window N`.
    pub pace: String,
    pub payload_bytes: usize,
    #[serde(flatten)]
    pub outcome: PublishOutcome,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DeliverySummary {
    pub expected: u64,
    pub unique: u64,
    pub received: u64,
    pub lost: u64,
    pub loss_ratio: f64,
    pub duplicates: u64,
    pub reordered: u64,
    pub foreign: u64,
    pub dropped_connections: u64,
    /// Deliveries per second while publishing.
    pub deliveries_per_s: f64,
    pub latency: Percentiles,
    pub errors: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ChurnSummary {
    pub concurrency: u64,
    pub cycles: u64,
    pub failures: u64,
    pub seconds: f64,
    /// Connect+join+close cycles per second: connects/s = disconnects/s.
    pub cycles_per_s: f64,
    pub join_latency: Percentiles,
    pub rss_after_kib: u64,
    pub cpu_cores: f64,
    pub errors: Vec<String>,
}

impl RunResult {
    /// The transport as the tables name it: `sio4`, or `sio4 TLS` over TLS.
    pub fn wire(&self) -> String {
        if self.tls {
            format!("{} TLS", self.transport.name())
        } else {
            self.transport.name().to_owned()
        }
    }

    /// A few lines for a person watching the run.
    pub fn table(&self) -> String {
        let r = &self.resources;
        let mut rows: Vec<(String, String)> = vec![
            (
                "run".into(),
                format!(
                    "{} / {} / {} — {} connections, {} rooms, {} node(s), {} worker(s)",
                    self.scenario,
                    self.server,
                    self.wire(),
                    self.connections,
                    self.rooms,
                    self.nodes,
                    self.workers
                ),
            ),
            (
                "connected".into(),
                format!(
                    "{} ok, {} failed in {:.1} s ({:.0}/s)",
                    self.connect.ok, self.connect.failed, self.connect.seconds, self.connect.rate
                ),
            ),
            (
                "server RSS".into(),
                format!(
                    "before {} KiB, idle {} KiB → {:.2} KiB per connection; idle CPU {:.3} cores",
                    r.rss_before_kib, r.rss_idle_kib, r.rss_per_connection_kib, r.cpu_idle_cores
                ),
            ),
        ];
        if let Some(p) = &self.publish {
            rows.push((
                "published".into(),
                format!(
                    "{} via {} ({}), {:.0} msg/s over {:.1} s, {} errors{}",
                    p.outcome.published,
                    p.via,
                    p.pace,
                    p.outcome.rate,
                    p.outcome.seconds,
                    p.outcome.errors,
                    if p.outcome.stalled { ", STALLED" } else { "" }
                ),
            ));
        }
        if let Some(d) = &self.delivery {
            rows.push((
                "delivered".into(),
                format!(
                    "{:.0}/s; {} of {} (lost {}, {:.4}%), dup {}, reordered {}, dropped conns {}",
                    d.deliveries_per_s,
                    d.unique,
                    d.expected,
                    d.lost,
                    d.loss_ratio * 100.0,
                    d.duplicates,
                    d.reordered,
                    d.dropped_connections
                ),
            ));
            rows.push((
                "latency".into(),
                format!(
                    "p50 {} µs, p99 {} µs, p999 {} µs, max {} µs",
                    d.latency.p50_us, d.latency.p99_us, d.latency.p999_us, d.latency.max_us
                ),
            ));
            rows.push((
                "server under load".into(),
                format!(
                    "{:.2} cores, {:.2} µs CPU per delivery, max RSS {} KiB",
                    r.cpu_load_cores, r.cpu_us_per_delivery, r.rss_load_max_kib
                ),
            ));
        }
        if let Some(c) = &self.cluster {
            for (i, node) in c.nodes.iter().enumerate() {
                rows.push((
                    format!("node {}", i + 1),
                    format!(
                        "received {} messages, {:.2} cores",
                        node.messages_received, node.cpu_cores
                    ),
                ));
            }
            rows.push((
                c.engine.clone(),
                format!(
                    "{:.2} cores, {:.2} µs CPU per delivery",
                    c.engine_cpu_cores, c.engine_cpu_us_per_delivery
                ),
            ));
        }
        if let Some(r) = &self.recovery {
            let spread = |s: &crate::recovery::Spread| {
                format!(
                    "p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms ({} clients)",
                    s.p50_ms, s.p99_ms, s.max_ms, s.count
                )
            };
            rows.push((
                format!("node {} killed", r.killed_node + 1),
                format!(
                    "{} clients lost it; {} never back, {} never caught up; {} attempts, {} resets",
                    r.clients, r.not_reconnected, r.not_caught_up, r.attempts, r.resets
                ),
            ));
            rows.push(("reconnected after".into(), spread(&r.reconnected)));
            rows.push(("caught up after".into(), spread(&r.caught_up)));
            rows.push((
                "during recovery".into(),
                format!(
                    "{:.1} s: surviving nodes {:.2} cores, engine {:.2} cores",
                    r.window_s, r.survivors_cpu_cores, r.engine_cpu_cores
                ),
            ));
        }
        if let Some(c) = &self.churn {
            rows.push((
                "churn".into(),
                format!(
                    "{} cycles in {:.1} s = {:.0} connects/s and disconnects/s; {} failures; join p99 {} µs; server {:.2} cores, RSS after {} KiB",
                    c.cycles, c.seconds, c.cycles_per_s, c.failures, c.join_latency.p99_us, c.cpu_cores, c.rss_after_kib
                ),
            ));
        }
        let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        rows.iter()
            .map(|(k, v)| format!("{k:>width$}  {v}\n"))
            .collect()
    }
}
