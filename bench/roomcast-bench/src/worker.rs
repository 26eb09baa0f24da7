//! The `worker` subcommand: holds one slice of the connections in its own
//! process (under the 20,000 open-file cap) and follows the parent's
//! commands from stdin, reporting on stdout (see `protocol`).
//!
//! Hold mode: opens its connections at the planned rate, reports
//! `Connected`, streams `Progress` (deliveries so far) for the publisher's
//! window, and on `Finish` waits for the stragglers and reports what every
//! receiver saw. Churn mode: connect → join → close loops for a while.

use std::io::Write;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::clients::{ConnectSpec, Connection, End};
use crate::histogram::AtomicHistogram;
use crate::net;
use crate::payload;
use crate::protocol::{
    ChurnTally, Command, DeliveryTally, MAX_ERRORS, Report, WorkerMode, WorkerPlan, room_name,
};
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
        });
        slots.push(slot.clone());
        tasks.spawn(hold_one(
            spec_for(&plan, &tls, index),
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

/// One held connection: join, then account for every payload it receives.
async fn hold_one(
    spec: ConnectSpec,
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
    let mut tally = SeqTally::new();
    let end = connection
        .pump(&cancel, &mut |text| {
            let Some(stamp) = payload::find(text) else {
                return;
            };
            shared.received.fetch_add(1, Ordering::Relaxed);
            if stamp.room != slot.room {
                shared.foreign.fetch_add(1, Ordering::Relaxed);
                return;
            }
            shared
                .latency
                .record(payload::now_micros().saturating_sub(stamp.sent_us));
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
        })
        .await;
    match end {
        End::Cancelled => connection.close().await,
        End::Lost(error) => {
            shared.dropped.fetch_add(1, Ordering::Relaxed);
            shared.note_error(format!("dropped: {error}"));
        }
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
