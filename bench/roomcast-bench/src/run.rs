//! The `run` subcommand: one measured run against one server (or several
//! nodes), start to finish, bounded in time.
//!
//! Phases: sample the server → start workers and open every connection at
//! the bounded rate → settle and sample idle memory/CPU → publish (rate or
//! saturating window) while sampling → tell workers publishing is over and
//! collect what receivers saw → close. Churn runs replace the hold/publish
//! phases with connect → join → close loops.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::clients::Transport;
use crate::fleet::{Fleet, FleetError};
use crate::histogram::Histogram;
use crate::proc_stats::{self, GroupSample, ProcError, ServerResources};
use crate::protocol::{ChurnTally, Command, DeliveryTally, Report, WorkerMode, WorkerPlan};
use crate::publisher::{self, Pace, PublishError, PublishPlan, Via};
use crate::recovery::{self, Backoff, KillError, KillPlan};
use crate::result::{
    ChurnSummary, ClusterSummary, ConnectSummary, DeliverySummary, NodeLoad, PublishSummary,
    RunResult,
};
use crate::tls::TlsTarget;

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Scenario label written into the result (idle, fanout, rooms, churn, scale, smoke).
    #[arg(long, default_value = "custom")]
    pub scenario: String,
    /// Which server is measured, for the report (roomcast, peer).
    #[arg(long, default_value = "roomcast")]
    pub server: String,
    #[arg(long, value_enum, default_value = "sio4")]
    pub transport: Transport,
    /// Server address, loopback only (repeat for several nodes; connections round-robin).
    #[arg(long = "target", required = true)]
    pub targets: Vec<SocketAddr>,
    /// Server process id to sample from /proc (repeat per node).
    #[arg(long = "pid", required = true)]
    pub pids: Vec<u32>,
    #[arg(long, default_value_t = 1000)]
    pub connections: u64,
    #[arg(long, default_value_t = 1)]
    pub rooms: u32,
    #[arg(long, default_value = "bench-")]
    pub room_prefix: String,
    /// Connections opened per second, over all workers.
    #[arg(long, default_value_t = 2000.0)]
    pub connect_rate: f64,
    /// Worker processes (default: enough for --max-per-worker, at least 2).
    #[arg(long)]
    pub workers: Option<usize>,
    /// Most connections one worker holds (one process may hold 20,000 files).
    #[arg(long, default_value_t = 15_000)]
    pub max_per_worker: u64,
    /// Handshake timeout per connection, ms.
    #[arg(long, default_value_t = 15_000)]
    pub timeout_ms: u64,
    /// Idle time after the last connection before memory is sampled, s.
    #[arg(long, default_value_t = 3.0)]
    pub settle_s: f64,
    /// Publish through Redis PUBLISH at this URL (loopback).
    #[arg(long, conflicts_with_all = ["publish_http", "publish_mqtt"])]
    pub publish_redis: Option<String>,
    /// With --publish-redis: publish with `FCALL roomcast_publish 1 <room> <payload>`, the
    /// command that writes roomcast's room log (docs/RECOVERY.md), instead of PUBLISH.
    #[arg(long, requires = "publish_redis")]
    pub publish_redis_log: bool,
    /// Publish to this MQTT broker (QoS 1, topic = room), for a server started with
    /// --mqtt-url on the same broker: measures MQTT → client.
    #[arg(long, conflicts_with = "publish_http", value_name = "HOST:PORT")]
    pub publish_mqtt: Option<SocketAddr>,
    /// Publish through POST /api/publish of this server.
    #[arg(long)]
    pub publish_http: Option<SocketAddr>,
    /// Publish to this NATS server (subject `<--nats-prefix>.<room>`), for nodes on
    /// `--broker nats`.
    #[arg(long, conflicts_with_all = ["publish_redis", "publish_http", "publish_mqtt"])]
    pub publish_nats: Option<String>,
    /// Publish with `SPUBLISH` to the masters of the Redis Cluster this seed node belongs
    /// to, for nodes on `--broker redis-cluster`.
    #[arg(long, conflicts_with_all = ["publish_redis", "publish_http", "publish_mqtt", "publish_nats"])]
    pub publish_redis_cluster: Option<String>,
    /// Subject prefix of --publish-nats (roomcast's --nats-prefix).
    #[arg(long, default_value = "roomcast")]
    pub nats_prefix: String,
    /// Cluster scenario: the engine and mode under test, e.g. "redis rooms" (a label
    /// for the report). Per node, the run then reads `roomcast_messages_received_total`
    /// from /metrics and the CPU while publishing.
    #[arg(long)]
    pub engine: Option<String>,
    /// A process of the engine (redis-server, nats-server) whose CPU while publishing
    /// is reported (repeat for several).
    #[arg(long = "engine-pid")]
    pub engine_pids: Vec<u32>,
    /// Bearer key for --publish-http.
    #[arg(long, default_value = "")]
    pub api_key: String,
    /// Messages per second over all rooms (default: saturate).
    #[arg(long)]
    pub rate: Option<f64>,
    /// Saturating window: messages per room ahead of the average receiver.
    #[arg(long, default_value_t = 16)]
    pub window: u64,
    /// Publishing time, s.
    #[arg(long, default_value_t = 10.0)]
    pub duration_s: f64,
    #[arg(long, default_value_t = 100)]
    pub payload_bytes: usize,
    /// How long receivers may take to get the last messages, ms.
    #[arg(long, default_value_t = 5_000)]
    pub drain_ms: u64,
    /// Churn mode: this many concurrent connect → join → close loops.
    #[arg(long)]
    pub churn_concurrency: Option<u64>,
    /// Churn duration, s.
    #[arg(long, default_value_t = 10.0)]
    pub churn_s: f64,
    /// Write the result as JSON here.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Exit non-zero on any failed connection, loss, duplicate, reorder or drop.
    #[arg(long)]
    pub require_clean: bool,
    /// Connect over TLS (`wss://`, `https://`), trusting the CA certificate in this PEM file.
    #[arg(long, value_name = "PEM")]
    pub tls_ca: Option<PathBuf>,
    /// With --tls-ca: the name sent in SNI and checked against the server's certificate.
    #[arg(long, default_value = "localhost", requires = "tls_ca")]
    pub tls_server_name: String,
    /// A shell command run, and waited for, right before publishing starts (every
    /// connection open and settled), e.g. `callgrind_control -i on PID` so a profiler
    /// counts the deliveries only (scripts/bench-instructions).
    #[arg(long, value_name = "COMMAND")]
    pub exec_before_publish: Option<String>,
    /// Recovery scenario: SIGKILL node I (0-based, in --target/--pid order) --kill-after-s
    /// into publishing; every /ws, /sse or sio4 client whose connection ends reconnects to
    /// the next --target with jittered backoff and resumes after the last id it saw (`since`,
    /// `Last-Event-ID`, Socket.IO's `{pid, offset}`). Needs --rate and a logged publish (e.g.
    /// --publish-redis-log).
    #[arg(long, value_name = "I", requires = "rate")]
    pub kill_node: Option<usize>,
    /// With --kill-node: seconds into publishing.
    #[arg(long, default_value_t = 5.0, value_name = "S")]
    pub kill_after_s: f64,
    /// Reconnect backoff: attempt k waits this · 2^k, ± --reconnect-jitter of it,
    /// at most --reconnect-delay-max-ms (socket.io-client's defaults).
    #[arg(long, default_value_t = 1000)]
    pub reconnect_delay_ms: u64,
    #[arg(long, default_value_t = 5000)]
    pub reconnect_delay_max_ms: u64,
    #[arg(long, default_value_t = 0.5)]
    pub reconnect_jitter: f64,
}

impl RunArgs {
    /// The clients' reconnect pacing, in the recovery scenario.
    fn reconnect(&self) -> Option<Backoff> {
        self.kill_node.map(|_| Backoff {
            delay_ms: self.reconnect_delay_ms,
            max_ms: self.reconnect_delay_max_ms,
            jitter: self.reconnect_jitter,
        })
    }

    /// The node to kill and the processes sampled meanwhile.
    fn kill_plan(&self) -> Result<Option<KillPlan>, RunError> {
        let Some(node) = self.kill_node else {
            return Ok(None);
        };
        if self.targets.len() < 2 || self.pids.len() != self.targets.len() {
            return Err(RunError::Args(
                "--kill-node needs two or more --target, each with its --pid".into(),
            ));
        }
        if !matches!(
            self.transport,
            Transport::Ws | Transport::Sse | Transport::Sio4
        ) {
            return Err(RunError::Args(
                "--kill-node resumes /ws, /sse and Socket.IO v4 clients (--transport ws, sse or sio4)".into(),
            ));
        }
        let Some(&pid) = self.pids.get(node) else {
            return Err(RunError::Args(format!(
                "--kill-node {node}: there are {} nodes",
                self.pids.len()
            )));
        };
        Ok(Some(KillPlan {
            pid,
            after: Duration::from_secs_f64(self.kill_after_s.max(0.0)),
            survivors: self.pids.iter().copied().filter(|&p| p != pid).collect(),
            engine_pids: self.engine_pids.clone(),
        }))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Proc(#[from] ProcError),
    #[error(transparent)]
    Fleet(#[from] FleetError),
    #[error(transparent)]
    Publish(#[from] PublishError),
    #[error(transparent)]
    Net(#[from] crate::net::NetError),
    #[error("cannot write {path}: {error}")]
    Write {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error(transparent)]
    Kill(#[from] KillError),
    #[error("node metrics: {0}")]
    Metrics(String),
    #[error("bad arguments: {0}")]
    Args(String),
    #[error("the run was not clean: {0}")]
    NotClean(String),
    #[error("--exec-before-publish: {0}")]
    Exec(String),
}

fn plans(args: &RunArgs, mode: WorkerMode, total: u64) -> Vec<WorkerPlan> {
    let needed = total.div_ceil(args.max_per_worker.max(1)) as usize;
    let workers = args.workers.unwrap_or(needed.max(2)).max(needed).max(1);
    let workers = workers.min(total.max(1) as usize);
    let per_worker = total / workers as u64;
    let extra = total % workers as u64;
    let mut first = 0;
    (0..workers)
        .map(|w| {
            let count = per_worker + u64::from((w as u64) < extra);
            let plan = WorkerPlan {
                worker: w,
                transport: args.transport,
                servers: args.targets.clone(),
                first_index: first,
                count,
                rooms: args.rooms.max(1),
                room_prefix: args.room_prefix.clone(),
                connect_rate: args.connect_rate / workers as f64,
                timeout_ms: args.timeout_ms,
                mode: mode.clone(),
                tls: args.tls_ca.as_ref().map(|ca_file| TlsTarget {
                    ca_file: ca_file.clone(),
                    server_name: args.tls_server_name.clone(),
                }),
                reconnect: args.reconnect(),
            };
            first += count;
            plan
        })
        .collect()
}

pub async fn run(args: RunArgs) -> Result<RunResult, RunError> {
    for target in &args.targets {
        crate::net::check_loopback(*target)?;
    }
    if args.pids.is_empty() {
        return Err(RunError::Args("at least one --pid".into()));
    }
    // Checked before connecting anyone; used once publishing begins.
    args.kill_plan()?;
    let started = Instant::now();
    let started_unix = crate::payload::now_micros() / 1_000_000;
    let (before, _) = proc_stats::sample_all(&args.pids)?;
    let mut result = RunResult {
        scenario: args.scenario.clone(),
        server: args.server.clone(),
        transport: args.transport,
        tls: args.tls_ca.is_some(),
        connections: args.connections,
        rooms: args.rooms.max(1),
        nodes: args.targets.len(),
        workers: 0,
        started_unix,
        seconds: 0.0,
        connect: ConnectSummary::default(),
        resources: ServerResources {
            pids: args.pids.clone(),
            rss_before_kib: before.rss_kib,
            ..Default::default()
        },
        publish: None,
        delivery: None,
        churn: None,
        cluster: None,
        recovery: None,
    };
    if let Some(concurrency) = args.churn_concurrency {
        churn(&args, concurrency, &before, &mut result).await?;
    } else {
        hold(&args, &before, &mut result).await?;
    }
    result.seconds = started.elapsed().as_secs_f64();
    print!("{}", result.table());
    if let Some(path) = &args.out {
        let json = serde_json::to_string_pretty(&result).map_err(|e| RunError::Write {
            path: path.clone(),
            error: std::io::Error::other(e),
        })?;
        std::fs::write(path, json + "\n").map_err(|error| RunError::Write {
            path: path.clone(),
            error,
        })?;
    }
    if args.require_clean {
        check_clean(&result)?;
    }
    Ok(result)
}

async fn hold(
    args: &RunArgs,
    before: &GroupSample,
    result: &mut RunResult,
) -> Result<(), RunError> {
    let plans = plans(args, WorkerMode::Hold, args.connections);
    let mut fleet = Fleet::spawn(plans).await?;
    result.workers = fleet.len();
    let outcome = hold_phases(args, before, result, &mut fleet).await;
    fleet.close().await;
    outcome
}

async fn hold_phases(
    args: &RunArgs,
    before: &GroupSample,
    result: &mut RunResult,
    fleet: &mut Fleet,
) -> Result<(), RunError> {
    // Connect: every worker joined or failed; generous bound from the rate.
    let connect_bound = Duration::from_secs_f64(
        args.connections as f64 / args.connect_rate.max(1.0)
            + args.timeout_ms as f64 / 1000.0
            + 30.0,
    );
    let connected = fleet
        .collect(connect_bound, |report| match report {
            Report::Connected {
                ok,
                failed,
                seconds,
                errors,
            } => Some((ok, failed, seconds, errors)),
            _ => None,
        })
        .await?;
    let mut summary = ConnectSummary::default();
    for (ok, failed, seconds, errors) in connected {
        summary.ok += ok;
        summary.failed += failed;
        summary.seconds = summary.seconds.max(seconds);
        crate::protocol::merge_errors(&mut summary.errors, &errors);
    }
    summary.rate = summary.ok as f64 / summary.seconds.max(1e-9);
    result.connect = summary;
    eprintln!(
        "roomcast-bench: {} connected ({} failed); settling {:.0} s",
        result.connect.ok, result.connect.failed, args.settle_s
    );

    // Idle: memory after settling, CPU over the settle period.
    let (settle_start, _) = proc_stats::sample_all(&args.pids)?;
    tokio::time::sleep(Duration::from_secs_f64(args.settle_s)).await;
    let (idle, per_node) = proc_stats::sample_all(&args.pids)?;
    let res = &mut result.resources;
    res.rss_idle_kib = idle.rss_kib;
    res.rss_idle_per_node_kib = per_node.iter().map(|s| s.rss_kib).collect();
    res.cpu_idle_cores = proc_stats::cores_between(&settle_start, &idle);
    res.rss_per_connection_kib =
        (idle.rss_kib as f64 - before.rss_kib as f64) / result.connect.ok.max(1) as f64;

    let via = match (&args.publish_redis, args.publish_http) {
        (Some(url), _) => Via::Redis {
            url: url.clone(),
            logged: args.publish_redis_log,
        },
        (None, None) if args.publish_redis_cluster.is_some() => Via::RedisCluster {
            seed: args.publish_redis_cluster.clone().unwrap_or_default(),
        },
        (None, None) if args.publish_nats.is_some() => Via::Nats {
            url: args.publish_nats.clone().unwrap_or_default(),
            prefix: args.nats_prefix.clone(),
        },
        (None, None) if args.publish_mqtt.is_some() => Via::Mqtt {
            broker: args.publish_mqtt.unwrap_or_else(|| unreachable!()),
        },
        (None, Some(server)) => Via::Http {
            server,
            key: args.api_key.clone(),
        },
        (None, None) => return Ok(()),
    };
    let pace = match args.rate {
        Some(rate) => Pace::Rate(rate),
        None => Pace::Saturate {
            window: args.window.max(1),
        },
    };
    let plan = PublishPlan {
        via: via.clone(),
        pace,
        rooms: args.rooms.max(1),
        room_prefix: args.room_prefix.clone(),
        payload_bytes: args.payload_bytes,
        duration: Duration::from_secs_f64(args.duration_s),
        members_per_room: result.connect.ok as f64 / args.rooms.max(1) as f64,
    };
    let kill = args.kill_plan()?;
    // After a kill only the surviving nodes can be sampled.
    let load_pids = match &kill {
        Some(plan) => plan.survivors.clone(),
        None => args.pids.clone(),
    };
    let received = fleet.received_counter();
    let nodes_before = nodes_received(args).await?;
    let received_before = received();
    let (load_start, nodes_start) = proc_stats::sample_all(&load_pids)?;
    let (engine_start, _) = proc_stats::sample_all(&args.engine_pids)?;
    // Sample RSS while publishing, for the peak.
    let pids = load_pids.clone();
    let sampler = tokio::spawn(async move {
        let mut peak = 0;
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tick.tick().await;
            match proc_stats::sample_all(&pids) {
                Ok((sample, _)) => peak = peak.max(sample.rss_kib),
                Err(_) => return peak,
            }
        }
    });
    if let Some(command) = &args.exec_before_publish {
        exec(command).await?;
    }
    let publishing = publisher::run(&plan, fleet.received_counter());
    let (outcome, killed) = match &kill {
        Some(kill) => {
            let (outcome, killed) = recovery::during(kill, publishing).await;
            (outcome, Some(killed?))
        }
        None => (publishing.await, None),
    };
    let (load_end, nodes_end) = proc_stats::sample_all(&load_pids)?;
    let (engine_end, _) = proc_stats::sample_all(&args.engine_pids)?;
    let received_during = received() - received_before;
    let nodes_after = nodes_received(args).await?;
    sampler.abort();
    let peak = sampler.await.unwrap_or(0);
    let outcome = outcome?;

    let res = &mut result.resources;
    res.rss_load_max_kib = peak.max(load_end.rss_kib);
    res.cpu_load_cores = proc_stats::cores_between(&load_start, &load_end);
    let cpu_seconds = load_end.cpu_seconds - load_start.cpu_seconds;
    res.cpu_us_per_delivery = cpu_seconds * 1e6 / received_during.max(1) as f64;
    if let Some(engine) = &args.engine {
        let wall = load_end.at.duration_since(load_start.at).as_secs_f64();
        let nodes = nodes_start
            .iter()
            .zip(&nodes_end)
            .zip(nodes_before.iter().zip(&nodes_after))
            .map(|((start, end), (before, after))| NodeLoad {
                messages_received: after.saturating_sub(*before),
                cpu_cores: (end.cpu_seconds - start.cpu_seconds) / wall.max(1e-9),
            })
            .collect();
        let engine_seconds = engine_end.cpu_seconds - engine_start.cpu_seconds;
        result.cluster = Some(ClusterSummary {
            engine: engine.clone(),
            nodes,
            engine_pids: args.engine_pids.clone(),
            engine_cpu_cores: proc_stats::cores_between(&engine_start, &engine_end),
            engine_cpu_us_per_delivery: engine_seconds * 1e6 / received_during.max(1) as f64,
        });
    }

    fleet
        .send_all(&Command::Finish {
            last_seq: outcome.last_seq.clone(),
            drain_ms: args.drain_ms,
        })
        .await?;
    let tallies = fleet
        .collect(
            Duration::from_millis(args.drain_ms) + Duration::from_secs(30),
            |report| match report {
                Report::Finished(tally) => Some(tally),
                _ => None,
            },
        )
        .await?;
    let mut total = DeliveryTally::default();
    for tally in &tallies {
        total.merge(tally);
    }
    result.delivery = Some(DeliverySummary {
        expected: total.expected,
        unique: total.unique,
        received: total.received,
        lost: total.lost,
        loss_ratio: total.lost as f64 / total.expected.max(1) as f64,
        duplicates: total.duplicates,
        reordered: total.reordered,
        foreign: total.foreign,
        dropped_connections: total.dropped_connections,
        deliveries_per_s: received_during as f64 / outcome.seconds.max(1e-9),
        latency: total.latency.percentiles(),
        errors: total.errors,
    });
    if let (Some(killed), Some(node), Some(backoff)) = (killed, args.kill_node, args.reconnect()) {
        result.recovery = Some(recovery::summarize(
            node,
            backoff,
            &killed,
            &total.recoveries,
            total.resets,
        ));
    }
    result.publish = Some(PublishSummary {
        via: via.name().to_owned(),
        pace: match pace {
            Pace::Rate(rate) => format!("rate {rate}/s"),
            Pace::Saturate { window } => format!("saturate, window {window}"),
        },
        payload_bytes: args.payload_bytes,
        outcome: publisher::PublishOutcome {
            last_seq: Vec::new(),
            ..outcome
        },
    });
    Ok(())
}

/// Runs `command` with `sh -c` and waits for it; a failure ends the run.
async fn exec(command: &str) -> Result<(), RunError> {
    let status = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(command)
        .status()
        .await
        .map_err(|e| RunError::Exec(format!("{command}: {e}")))?;
    match status.success() {
        true => Ok(()),
        false => Err(RunError::Exec(format!("{command}: {status}"))),
    }
}

/// Each node's `roomcast_messages_received_total`, in the cluster scenario
/// (none otherwise).
async fn nodes_received(args: &RunArgs) -> Result<Vec<u64>, RunError> {
    let mut counts = Vec::new();
    if args.engine.is_some() {
        for target in &args.targets {
            counts.push(
                crate::node_metrics::messages_received(*target)
                    .await
                    .map_err(RunError::Metrics)?,
            );
        }
    }
    Ok(counts)
}

async fn churn(
    args: &RunArgs,
    concurrency: u64,
    before: &GroupSample,
    result: &mut RunResult,
) -> Result<(), RunError> {
    let duration_ms = (args.churn_s * 1000.0) as u64;
    // Concurrency is split over the workers like connections are.
    let plans: Vec<WorkerPlan> = plans(args, WorkerMode::Hold, concurrency)
        .into_iter()
        .map(|mut plan| {
            plan.mode = WorkerMode::Churn {
                concurrency: plan.count,
                duration_ms,
            };
            // Each worker's loops use their own block of connection indices.
            plan.first_index *= 1_000_000;
            plan
        })
        .collect();
    let mut fleet = Fleet::spawn(plans).await?;
    result.workers = fleet.len();
    let tallies = fleet
        .collect(
            Duration::from_millis(duration_ms) + Duration::from_secs(60),
            |report| match report {
                Report::Churned(tally) => Some(tally),
                _ => None,
            },
        )
        .await;
    let (after, _) = proc_stats::sample_all(&args.pids)?;
    fleet.close().await;
    let tallies = tallies?;
    let mut total = ChurnTally {
        join_latency: Histogram::default(),
        ..Default::default()
    };
    for tally in &tallies {
        total.merge(tally);
    }
    result.connect = ConnectSummary {
        ok: total.cycles,
        failed: total.failures,
        seconds: total.seconds,
        rate: total.cycles as f64 / total.seconds.max(1e-9),
        errors: total.errors.clone(),
    };
    result.churn = Some(ChurnSummary {
        concurrency,
        cycles: total.cycles,
        failures: total.failures,
        seconds: total.seconds,
        cycles_per_s: total.cycles as f64 / total.seconds.max(1e-9),
        join_latency: total.join_latency.percentiles(),
        rss_after_kib: after.rss_kib,
        cpu_cores: proc_stats::cores_between(before, &after),
        errors: total.errors,
    });
    Ok(())
}

/// The smoke test's verdict: everything connected, nothing lost.
fn check_clean(result: &RunResult) -> Result<(), RunError> {
    let mut problems = Vec::new();
    if result.connect.failed > 0 {
        problems.push(format!("{} connections failed", result.connect.failed));
    }
    if result.connect.ok == 0 {
        problems.push("no connection succeeded".into());
    }
    if let Some(d) = &result.delivery {
        if d.expected == 0 {
            problems.push("nothing was published".into());
        }
        count(
            &mut problems,
            &[
                ("lost", d.lost),
                ("duplicated", d.duplicates),
                ("reordered", d.reordered),
                ("foreign", d.foreign),
                ("dropped connections", d.dropped_connections),
            ],
        );
    }
    if let Some(r) = &result.recovery {
        if r.clients == 0 {
            problems.push("no client lost its connection to the killed node".into());
        }
        count(
            &mut problems,
            &[
                ("clients never reconnected", r.not_reconnected),
                ("clients never caught up", r.not_caught_up),
                ("resets", r.resets),
            ],
        );
    }
    if let Some(p) = &result.publish
        && p.outcome.errors > 0
    {
        problems.push(format!(
            "{} publish errors ({})",
            p.outcome.errors,
            p.outcome.first_error.clone().unwrap_or_default()
        ));
    }
    if let Some(c) = &result.churn
        && c.cycles == 0
    {
        problems.push("no churn cycle completed".into());
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(RunError::NotClean(problems.join("; ")))
    }
}

/// Adds "N what" to `problems` for each count that is not zero.
fn count(problems: &mut Vec<String>, counts: &[(&str, u64)]) {
    for &(what, n) in counts {
        if n > 0 {
            problems.push(format!("{n} {what}"));
        }
    }
}
