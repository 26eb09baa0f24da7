//! The `worker` subcommand: holds one slice of the connections in its own
//! process (under the 20,000 open-file cap) and follows the parent's
//! commands from stdin, reporting on stdout (see `protocol`).
//!
//! Hold mode: opens its connections at the planned rate, reports
//! `Connected`, streams `Progress` (deliveries so far) for the publisher's
//! window, and on `Finish` waits for the stragglers and reports what every
//! receiver saw. Churn mode: connect → join → close loops for a while.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::clients::{ConnectSpec, Connection, End, is_reset, message_id};
use crate::histogram::AtomicHistogram;
use crate::net;
use crate::payload;
use crate::protocol::{
    ChurnTally, Command, DeliveryTally, MAX_ERRORS, Report, WorkerMode, WorkerPlan, room_name,
};
use crate::recovery::{Backoff, CatchUp, ClientRecovery, Rng};
use crate::tally::{Arrival, SeqTally};
use crate::tls::Connector;

/// Runs the worker until the parent says `Close` or its stdin ends.
pub fn main() -> std::process::ExitCode {
    // One thread per worker: the parent starts as many workers as cores are
    // worth using, and a single thread keeps the per-delivery cost low.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            emit(&Report::Failed {
                message: format!("cannot start the runtime: {error}"),
            });
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(message) => {
            emit(&Report::Failed { message });
            std::process::ExitCode::FAILURE
        }
    }
}

/// Writes one report line; the parent reads stdout continuously.
fn emit(report: &Report) {
    let Ok(line) = serde_json::to_string(report) else {
        return;
    };
    let mut out = std::io::stdout().lock();
    // A parent that went away ends us through stdin EOF; nothing to do here.
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Counters shared by every connection task of this worker.
#[derive(Default)]
struct Shared {
    joined: AtomicU64,
    failed: AtomicU64,
    settled: Notify,
    received: AtomicU64,
    duplicates: AtomicU64,
    reordered: AtomicU64,
    foreign: AtomicU64,
    dropped: AtomicU64,
    resets: AtomicU64,
    latency: AtomicHistogram,
    errors: Mutex<Vec<String>>,
}

impl Shared {
    fn note_error(&self, error: String) {
        if let Ok(mut errors) = self.errors.lock()
            && errors.len() < MAX_ERRORS
            && !errors.contains(&error)
        {
            errors.push(error);
        }
    }

    fn errors(&self) -> Vec<String> {
        self.errors.lock().map(|e| e.clone()).unwrap_or_default()
    }
}

/// One held connection as the worker sees it from outside its task.
struct Slot {
    room: u32,
    joined: AtomicBool,
    unique: AtomicU64,
    /// Set once the connection was lost (`WorkerPlan::reconnect` only).
    recovery: Mutex<Option<ClientRecovery>>,
}

impl Slot {
    fn note_recovery(&self, recovery: ClientRecovery) {
        if let Ok(mut slot) = self.recovery.lock() {
            *slot = Some(recovery);
        }
    }
}

async fn serve() -> Result<(), String> {
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let plan = match next_command(&mut lines).await? {
        Some(Command::Start(plan)) => plan,
        Some(other) => return Err(format!("expected Start, got {other:?}")),
        None => return Ok(()),
    };
    for server in &plan.servers {
        net::check_loopback(*server).map_err(|e| e.to_string())?;
    }
    let tls = plan.tls.as_ref().map(Connector::new).transpose()?;
    match plan.mode.clone() {
        WorkerMode::Hold => hold(plan, tls, &mut lines).await,
        WorkerMode::Churn {
            concurrency,
            duration_ms,
        } => {
            let tally = churn(&plan, tls, concurrency, Duration::from_millis(duration_ms)).await;
            emit(&Report::Churned(tally));
            // Wait for Close (or EOF) so the parent sees every report first.
            while let Some(command) = next_command(&mut lines).await? {
                if matches!(command, Command::Close) {
                    break;
                }
            }
            emit(&Report::Closed);
            Ok(())
        }
    }
}

type Lines = tokio::io::Lines<BufReader<tokio::io::Stdin>>;

async fn next_command(lines: &mut Lines) -> Result<Option<Command>, String> {
    let Some(line) = lines
        .next_line()
        .await
        .map_err(|e| format!("reading commands: {e}"))?
    else {
        return Ok(None);
    };
    serde_json::from_str(&line)
        .map(Some)
        .map_err(|e| format!("bad command {line:?}: {e}"))
}

fn spec_for(plan: &WorkerPlan, tls: &Option<Connector>, index: u64) -> ConnectSpec {
    ConnectSpec {
        transport: plan.transport,
        server: plan.server_of(index),
        source: net::source_for(index),
        room: room_name(&plan.room_prefix, plan.room_of(index)),
        timeout: Duration::from_millis(plan.timeout_ms),
        tls: tls.clone(),
        since: None,
        pid: None,
    }
}

async fn hold(plan: WorkerPlan, tls: Option<Connector>, lines: &mut Lines) -> Result<(), String> {
    let shared = Arc::new(Shared::default());
    let cancel = CancellationToken::new();
    let tasks = tokio_util::task::TaskTracker::new();
    let mut slots = Vec::with_capacity(plan.count as usize);
    let started = Instant::now();
    let rate = plan.connect_rate.max(1.0);
    for n in 0..plan.count {
        let due = started + Duration::from_secs_f64(n as f64 / rate);
        tokio::time::sleep_until(due.into()).await;
        let index = plan.first_index + n;
        let slot = Arc::new(Slot {
            room: plan.room_of(index),
            joined: AtomicBool::new(false),
            unique: AtomicU64::new(0),
            recovery: Mutex::new(None),
        });
        slots.push(slot.clone());
        let reconnect = plan.reconnect.map(|backoff| Reconnect {
            backoff,
            servers: plan.servers.clone(),
            rng: Rng::seeded(index),
        });
        tasks.spawn(hold_one(
            spec_for(&plan, &tls, index),
            reconnect,
            slot,
            shared.clone(),
            cancel.clone(),
        ));
    }
    // Every connection joined or failed; each has its own handshake timeout.
    loop {
        let settled = shared.settled.notified();
        if shared.joined.load(Ordering::Relaxed) + shared.failed.load(Ordering::Relaxed)
            >= plan.count
        {
            break;
        }
        settled.await;
    }
    emit(&Report::Connected {
        ok: shared.joined.load(Ordering::Relaxed),
        failed: shared.failed.load(Ordering::Relaxed),
        seconds: started.elapsed().as_secs_f64(),
        errors: shared.errors(),
    });

    let mut progress = tokio::time::interval(Duration::from_millis(25));
    loop {
        tokio::select! {
            _ = progress.tick() => {
                let alive = shared.joined.load(Ordering::Relaxed) - shared.dropped.load(Ordering::Relaxed);
                emit(&Report::Progress { received: shared.received.load(Ordering::Relaxed), alive });
            }
            command = next_command(lines) => match command? {
                Some(Command::Finish { last_seq, drain_ms }) => {
                    let tally = finish(&shared, &slots, &last_seq, Duration::from_millis(drain_ms)).await;
                    emit(&Report::Finished(tally));
                }
                Some(Command::Start(_)) => return Err("Start sent twice".into()),
                Some(Command::Close) | None => break,
            }
        }
    }
    cancel.cancel();
    tasks.close();
    // Close frames go out concurrently; bounded by each close's own timeout.
    let _ = tokio::time::timeout(Duration::from_secs(10), tasks.wait()).await;
    emit(&Report::Closed);
    Ok(())
}

/// How a lost connection comes back (the recovery scenario).
struct Reconnect {
    backoff: Backoff,
    servers: Vec<SocketAddr>,
    rng: Rng,
}

impl Reconnect {
    /// Reconnects to the server after `spec.server` in the list (then the
    /// next, on failure), resuming after `since`; `None` when the run ends
    /// first.
    async fn connect(
        &mut self,
        spec: &mut ConnectSpec,
        since: Option<String>,
        recovery: &mut ClientRecovery,
        shared: &Shared,
        cancel: &CancellationToken,
    ) -> Option<Connection> {
        spec.since = since;
        for attempt in 0.. {
            let wait = self.backoff.wait(attempt, &mut self.rng);
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = cancel.cancelled() => return None,
            }
            let at = self
                .servers
                .iter()
                .position(|s| *s == spec.server)
                .unwrap_or(0);
            spec.server = self.servers[(at + 1) % self.servers.len()];
            recovery.attempts += 1;
            match Connection::open(spec).await {
                Ok(connection) => return Some(connection),
                Err(error) => shared.note_error(format!("reconnect: {error}")),
            }
        }
        None
    }
}

/// One held connection: join, then account for every payload it receives;
/// with `reconnect`, come back after losing it and resume.
async fn hold_one(
    mut spec: ConnectSpec,
    mut reconnect: Option<Reconnect>,
    slot: Arc<Slot>,
    shared: Arc<Shared>,
    cancel: CancellationToken,
) {
    let mut connection = match Connection::open(&spec).await {
        Ok(connection) => connection,
        Err(error) => {
            shared.note_error(format!("connect: {error}"));
            shared.failed.fetch_add(1, Ordering::Relaxed);
            shared.settled.notify_one();
            return;
        }
    };
    slot.joined.store(true, Ordering::Relaxed);
    shared.joined.fetch_add(1, Ordering::Relaxed);
    shared.settled.notify_one();
    spec.pid = connection.pid().map(str::to_owned);
    let mut tally = SeqTally::new();
    let mut last_id: Option<String> = None;
    let mut recovery = ClientRecovery::default();
    let mut catch_up = CatchUp::default();
    loop {
        let end = connection
            .pump(&cancel, &mut |text| {
                if is_reset(text) {
                    shared.resets.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                let Some(stamp) = payload::find(text) else {
                    return;
                };
                shared.received.fetch_add(1, Ordering::Relaxed);
                if stamp.room != slot.room {
                    shared.foreign.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                let now = payload::now_micros();
                shared.latency.record(now.saturating_sub(stamp.sent_us));
                if reconnect.is_some() {
                    last_id = message_id(text).map(str::to_owned);
                }
                match tally.observe(stamp.seq) {
                    Arrival::InOrder => {}
                    Arrival::Reordered => {
                        shared.reordered.fetch_add(1, Ordering::Relaxed);
                    }
                    Arrival::Duplicate => {
                        shared.duplicates.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                }
                slot.unique.store(tally.unique, Ordering::Relaxed);
                if recovery.caught_up_us == 0
                    && let Some(at) = catch_up.arrived(stamp.sent_us, now, tally.gapless())
                {
                    recovery.caught_up_us = at;
                    slot.note_recovery(recovery);
                }
            })
            .await;
        let error = match end {
            End::Cancelled => {
                connection.close().await;
                return;
            }
            End::Lost(error) => error,
        };
        let Some(reconnect) = reconnect.as_mut() else {
            shared.dropped.fetch_add(1, Ordering::Relaxed);
            shared.note_error(format!("dropped: {error}"));
            return;
        };
        if recovery.lost_us == 0 {
            recovery.lost_us = payload::now_micros();
        }
        recovery.reconnected_us = 0;
        recovery.caught_up_us = 0;
        slot.note_recovery(recovery);
        let since = last_id.clone();
        let Some(back) = reconnect
            .connect(&mut spec, since, &mut recovery, &shared, &cancel)
            .await
        else {
            shared.dropped.fetch_add(1, Ordering::Relaxed);
            shared.note_error(format!("dropped, not back before the end: {error}"));
            return;
        };
        if back.not_recovered() {
            shared.resets.fetch_add(1, Ordering::Relaxed);
        }
        spec.pid = back.pid().map(str::to_owned);
        connection = back;
        recovery.reconnected_us = payload::now_micros();
        catch_up.reconnected(recovery.reconnected_us);
        slot.note_recovery(recovery);
    }
}

/// Waits until every joined receiver has all it should, or `drain` passes.
async fn finish(
    shared: &Shared,
    slots: &[Arc<Slot>],
    last_seq: &[u64],
    drain: Duration,
) -> DeliveryTally {
    let expected_of = |slot: &Slot| last_seq.get(slot.room as usize).copied().unwrap_or(0);
    let deadline = Instant::now() + drain;
    let (expected, unique) = loop {
        let mut expected = 0;
        let mut unique = 0;
        for slot in slots.iter().filter(|s| s.joined.load(Ordering::Relaxed)) {
            let want = expected_of(slot);
            expected += want;
            unique += slot.unique.load(Ordering::Relaxed).min(want);
        }
        if unique >= expected || Instant::now() >= deadline {
            break (expected, unique);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    DeliveryTally {
        received: shared.received.load(Ordering::Relaxed),
        expected,
        unique,
        lost: expected - unique,
        duplicates: shared.duplicates.load(Ordering::Relaxed),
        reordered: shared.reordered.load(Ordering::Relaxed),
        foreign: shared.foreign.load(Ordering::Relaxed),
        dropped_connections: shared.dropped.load(Ordering::Relaxed),
        errors: shared.errors(),
        latency: shared.latency.snapshot(),
        resets: shared.resets.load(Ordering::Relaxed),
        recoveries: slots
            .iter()
            .filter_map(|slot| slot.recovery.lock().ok().and_then(|r| *r))
            .collect(),
    }
}

/// Connect → join → close loops; each loop uses fresh connection indices so
/// source addresses rotate.
async fn churn(
    plan: &WorkerPlan,
    tls: Option<Connector>,
    concurrency: u64,
    duration: Duration,
) -> ChurnTally {
    let shared = Arc::new(Shared::default());
    let cycles = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + duration;
    let mut loops = tokio::task::JoinSet::new();
    for lane in 0..concurrency.max(1) {
        let plan = plan.clone();
        let tls = tls.clone();
        let shared = shared.clone();
        let cycles = cycles.clone();
        loops.spawn(async move {
            let mut n = 0u64;
            while Instant::now() < deadline {
                let index = plan.first_index + lane + n * concurrency.max(1);
                n += 1;
                let begun = Instant::now();
                match Connection::open(&spec_for(&plan, &tls, index)).await {
                    Ok(connection) => {
                        shared.latency.record(begun.elapsed().as_micros() as u64);
                        connection.close().await;
                        cycles.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(error) => {
                        shared.failed.fetch_add(1, Ordering::Relaxed);
                        shared.note_error(format!("connect: {error}"));
                        // Do not spin on a refusing server.
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
        });
    }
    while loops.join_next().await.is_some() {}
    ChurnTally {
        cycles: cycles.load(Ordering::Relaxed),
        failures: shared.failed.load(Ordering::Relaxed),
        seconds: started.elapsed().as_secs_f64(),
        errors: shared.errors(),
        join_latency: shared.latency.snapshot(),
    }
}
