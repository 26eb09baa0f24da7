//! Graceful shutdown: one token every long-lived task watches, one tracker
//! the server waits on (with a deadline) before exiting, and the supervisor
//! thread that hears SIGTERM/SIGINT and bounds the whole drain.

use std::time::Duration;

pub use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Handles shared by every task that must stop on SIGTERM/SIGINT.
#[derive(Clone, Default)]
pub struct Shutdown {
    token: CancellationToken,
    tasks: TaskTracker,
}

impl Shutdown {
    pub fn new() -> Self {
        Self::default()
    }

    /// Resolves once shutdown has begun.
    pub async fn requested(&self) {
        self.token.cancelled().await
    }

    pub fn is_requested(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Begins shutdown: every task watching `requested()` winds down.
    pub fn trigger(&self) {
        self.token.cancel();
    }

    /// A shutdown of one part of the server: requested with this one, or
    /// alone by its own `trigger`; its tasks are waited for with the
    /// server's.
    pub fn child(&self) -> Shutdown {
        Shutdown {
            token: self.token.child_token(),
            tasks: self.tasks.clone(),
        }
    }

    /// Spawns a task the server will wait for on shutdown. No detached spawns.
    pub fn spawn<F>(&self, future: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.tasks.spawn(future)
    }

    /// Tracked tasks still running.
    pub fn running(&self) -> usize {
        self.tasks.len()
    }

    /// What is still running, for the log line of an overrun drain.
    pub fn unfinished(&self) -> String {
        let connections = crate::telemetry::stats()
            .connections
            .iter()
            .map(|(transport, open)| format!("{transport}={open}"))
            .collect::<Vec<_>>()
            .join(" ");
        format!(
            "{} tracked tasks still running; open connections: {connections}",
            self.running()
        )
    }

    /// Waits for every tracked task to end, at most `deadline`. Returns false
    /// when the deadline passed with tasks still running.
    pub async fn wait(&self, deadline: Duration) -> bool {
        self.tasks.close();
        tokio::time::timeout(deadline, self.tasks.wait())
            .await
            .is_ok()
    }
}

/// How long after the drain deadline the supervisor ends the process itself:
/// time for the server's own orderly exit to win.
const SUPERVISOR_GRACE: Duration = Duration::from_secs(2);

/// Starts the supervisor thread: it waits for SIGINT/SIGTERM (or a shutdown
/// begun elsewhere), triggers `shutdown`, and if the process is still running
/// `deadline` + 2 s later calls `expire` with what did not finish (the server
/// logs it and exits non-zero). It has its own one-thread runtime, so a server
/// whose every worker is stuck in a task that never yields still hears the
/// signal and still ends.
pub fn supervise(
    shutdown: Shutdown,
    deadline: Duration,
    expire: impl FnOnce(String) + Send + 'static,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name("roomcast-shutdown".into())
        .spawn(move || {
            runtime.block_on(async {
                tokio::select! {
                    () = signal() => shutdown.trigger(),
                    () = shutdown.requested() => {}
                }
                tokio::time::sleep(deadline + SUPERVISOR_GRACE).await;
            });
            expire(shutdown.unfinished());
        })
}

/// Resolves on SIGINT or SIGTERM.
pub async fn signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(
            tokio::signal::unix::SignalKind::terminate(),
        ) {
            Ok(term) => term,
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM; only SIGINT stops the server");
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::mpsc;

    use super::*;

    #[test]
    fn a_task_that_never_yields_cannot_hold_the_exit() {
        let Ok(runtime) = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
        else {
            panic!("build a runtime");
        };
        let shutdown = Shutdown::new();
        // Stands for a busy-loop bug: occupies the only worker, never yields.
        let release = Arc::new(AtomicBool::new(false));
        let stuck = release.clone();
        let _guard = runtime.enter();
        shutdown.spawn(async move {
            while !stuck.load(Ordering::Relaxed) {
                std::hint::spin_loop();
            }
        });
        let (expired, report) = mpsc::channel();
        let deadline = Duration::from_millis(100);
        let _supervisor = supervise(shutdown.clone(), deadline, move |what| {
            let _ = expired.send(what);
        });
        shutdown.trigger();
        let what = report.recv_timeout(Duration::from_secs(10));
        release.store(true, Ordering::Relaxed);
        let what = what.unwrap_or_else(|_| panic!("the supervisor did not end the drain"));
        assert!(what.starts_with("1 tracked tasks still running"), "{what}");
        runtime.shutdown_timeout(Duration::from_secs(1));
    }

    #[test]
    fn the_supervisor_waits_for_shutdown_to_begin() {
        let shutdown = Shutdown::new();
        let (expired, report) = mpsc::channel();
        let _supervisor = supervise(shutdown.clone(), Duration::ZERO, move |what| {
            let _ = expired.send(what);
        });
        assert!(report.recv_timeout(Duration::from_millis(300)).is_err());
        shutdown.trigger();
        assert!(report.recv_timeout(Duration::from_secs(10)).is_ok());
    }
}
