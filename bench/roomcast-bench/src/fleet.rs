//! The parent's side of the worker processes: spawns `roomcast-bench worker`
//! children, sends them commands, and collects their reports. Progress
//! reports are folded into per-worker counters the publisher's window reads;
//! every other report is queued for the run to await.

use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command as ProcessCommand};
use tokio::sync::mpsc;

use crate::protocol::{Command, Report, WorkerPlan};

#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error("cannot start worker process: {0}")]
    Spawn(std::io::Error),
    #[error("worker {worker}: {message}")]
    Worker { worker: usize, message: String },
    #[error("timed out after {0:?} waiting for the workers")]
    Timeout(Duration),
}

struct Worker {
    child: Child,
    stdin: ChildStdin,
}

pub struct Fleet {
    workers: Vec<Worker>,
    reports: mpsc::UnboundedReceiver<(usize, Report)>,
    received: Arc<Vec<AtomicU64>>,
}

impl Fleet {
    /// Starts one worker process per plan and sends it its plan.
    pub async fn spawn(plans: Vec<WorkerPlan>) -> Result<Fleet, FleetError> {
        let exe = std::env::current_exe().map_err(FleetError::Spawn)?;
        let received: Arc<Vec<AtomicU64>> =
            Arc::new(plans.iter().map(|_| AtomicU64::new(0)).collect());
        // Unbounded but tiny: each worker sends a handful of non-progress reports.
        let (tx, reports) = mpsc::unbounded_channel();
        let mut workers = Vec::with_capacity(plans.len());
        for (index, plan) in plans.into_iter().enumerate() {
            let mut child = ProcessCommand::new(&exe)
                .arg("worker")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .kill_on_drop(true)
                .spawn()
                .map_err(FleetError::Spawn)?;
            let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
                return Err(FleetError::Spawn(std::io::Error::other("no pipes")));
            };
            let tx = tx.clone();
            let received = received.clone();
            tokio::spawn(async move {
                let mut lines = BufReader::new(stdout).lines();
                loop {
                    match lines.next_line().await {
                        Ok(Some(line)) => match serde_json::from_str::<Report>(&line) {
                            Ok(Report::Progress { received: r, .. }) => {
                                received[index].store(r, Ordering::Relaxed);
                            }
                            Ok(report) => {
                                let _ = tx.send((index, report));
                            }
                            Err(error) => {
                                let message = format!("bad report {line:?}: {error}");
                                let _ = tx.send((index, Report::Failed { message }));
                            }
                        },
                        Ok(None) | Err(_) => {
                            let message = "worker exited".to_owned();
                            let _ = tx.send((index, Report::Failed { message }));
                            break;
                        }
                    }
                }
            });
            let mut worker = Worker { child, stdin };
            send(&mut worker, index, &Command::Start(plan)).await?;
            workers.push(worker);
        }
        Ok(Fleet {
            workers,
            reports,
            received,
        })
    }

    pub fn len(&self) -> usize {
        self.workers.len()
    }

    /// Deliveries received so far by every worker (a cheap handle for the publisher).
    pub fn received_counter(&self) -> impl Fn() -> u64 + use<> {
        let received = self.received.clone();
        move || received.iter().map(|r| r.load(Ordering::Relaxed)).sum()
    }

    pub async fn send_all(&mut self, command: &Command) -> Result<(), FleetError> {
        for (index, worker) in self.workers.iter_mut().enumerate() {
            send(worker, index, command).await?;
        }
        Ok(())
    }

    /// Waits for one report from every worker that `pick` accepts; a
    /// `Failed` report ends the wait with an error.
    pub async fn collect<T>(
        &mut self,
        timeout: Duration,
        mut pick: impl FnMut(Report) -> Option<T>,
    ) -> Result<Vec<T>, FleetError> {
        let mut got: Vec<Option<T>> = (0..self.workers.len()).map(|_| None).collect();
        let deadline = tokio::time::Instant::now() + timeout;
        while got.iter().any(Option::is_none) {
            let next = tokio::time::timeout_at(deadline, self.reports.recv())
                .await
                .map_err(|_| FleetError::Timeout(timeout))?;
            let Some((worker, report)) = next else {
                return Err(FleetError::Timeout(timeout));
            };
            if let Report::Failed { message } = report {
                return Err(FleetError::Worker { worker, message });
            }
            if let Some(value) = pick(report) {
                got[worker] = Some(value);
            }
        }
        Ok(got.into_iter().flatten().collect())
    }

    /// Tells every worker to close its connections and waits for them to exit.
    pub async fn close(mut self) {
        let _ = self.send_all(&Command::Close).await;
        for worker in &mut self.workers {
            if tokio::time::timeout(Duration::from_secs(15), worker.child.wait())
                .await
                .is_err()
            {
                let _ = worker.child.start_kill();
                let _ = worker.child.wait().await;
            }
        }
    }
}

async fn send(worker: &mut Worker, index: usize, command: &Command) -> Result<(), FleetError> {
    let mut line = serde_json::to_string(command).map_err(|e| FleetError::Worker {
        worker: index,
        message: e.to_string(),
    })?;
    line.push('\n');
    worker
        .stdin
        .write_all(line.as_bytes())
        .await
        .map_err(|e| FleetError::Worker {
            worker: index,
            message: format!("cannot send a command: {e}"),
        })
}
