//! [`SharedSessions`]: the sessions of Socket.IO recovery in an engine every
//! node reads (a [`SessionBackend`]: a single Redis, a Redis Cluster, NATS
//! JetStream), so a client recovers on whichever node it reaches.
//!
//! A node killed at once saves nothing, so a session is written while its
//! connection lives: when it connects and when its rooms change, and it is
//! renewed every third of the window; after a `kill -9` it is still
//! there for at least two thirds of the window. A lost connection (or a
//! drain) renews it for the whole window, writing it only if a failed write
//! left none (the client may already be back on another node, which wrote
//! its own); a goodbye deletes it. Taking one reads and deletes it in one
//! step: it is given out once.
//!
//! One task writes, in order, in batches (two quick joins must not land in
//! the other order); a connection adds only its `pid` to the set of live
//! sessions. The engine down: a write fails with one log line until one
//! succeeds again, a lookup finds nothing and the client gets a new session.
//! An engine that cannot keep sessions now (NATS without JetStream) leaves
//! them in this process ([`MemorySessions`]), as a single node would.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;

use super::{Lookup, MemorySessions, Session, SessionStore};
use crate::brokers::sessions::{SessionBackend, SessionOp};
use crate::shutdown::Shutdown;

/// Writes waiting for the writer; past this they are dropped (logged): a
/// client whose session write was dropped may get a new session.
const QUEUE: usize = 16_384;

/// Writes sent in one batch (on Redis, one pipeline).
const BATCH: usize = 512;

/// At shutdown the writer keeps writing what the closing connections save
/// until none came for this long.
const DRAIN_QUIET: Duration = Duration::from_millis(500);

type Live = Arc<Mutex<HashSet<Box<str>>>>;

/// Sessions in an engine (see the module header).
pub struct SharedSessions {
    broker: Arc<dyn SessionBackend>,
    /// Where sessions go while the engine cannot keep them.
    local: MemorySessions,
    live: Live,
    writes: mpsc::Sender<SessionOp>,
    /// A write was dropped since the writer last wrote (logged once).
    dropping: Arc<AtomicBool>,
}

impl std::fmt::Debug for SharedSessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedSessions")
            .field("engine", &self.broker.engine())
            .finish_non_exhaustive()
    }
}

impl SharedSessions {
    /// A store keeping sessions for `window`, and its writer task (on
    /// `shutdown`, which it outlives until the drain's saves are written).
    pub fn start(
        broker: Arc<dyn SessionBackend>,
        window: Duration,
        shutdown: &Shutdown,
    ) -> Arc<Self> {
        let (writes, queue) = mpsc::channel(QUEUE);
        let live = Live::default();
        let dropping = Arc::new(AtomicBool::new(false));
        let writer = Writer {
            broker: broker.clone(),
            live: live.clone(),
            window,
            failing: false,
            dropping: dropping.clone(),
        };
        shutdown.spawn(writer.run(queue, shutdown.clone()));
        Arc::new(SharedSessions {
            broker,
            local: MemorySessions::default(),
            live,
            writes,
            dropping,
        })
    }

    fn live_set(&self) -> std::sync::MutexGuard<'_, HashSet<Box<str>>> {
        self.live
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn send(&self, op: SessionOp) {
        if self.writes.try_send(op).is_err() && !self.dropping.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                engine = self.broker.engine(),
                "Socket.IO session writes are behind: dropping some; their clients may get a new session"
            );
        }
    }
}

fn encode(session: &Session) -> Vec<u8> {
    // A struct of strings always serializes.
    serde_json::to_vec(session).unwrap_or_default()
}

impl SessionStore for SharedSessions {
    fn keeps_live(&self) -> bool {
        true
    }

    fn live(&self, pid: &str, session: &Session) {
        if !self.broker.keeps_sessions() {
            return;
        }
        let pid: Box<str> = pid.into();
        self.live_set().insert(pid.clone());
        let value = encode(session);
        self.send(SessionOp::Put { pid, value });
    }

    fn save(&self, pid: &str, session: Session, window: Duration) {
        self.live_set().remove(pid);
        if !self.broker.keeps_sessions() {
            return self.local.save(pid, session, window);
        }
        let value = encode(&session);
        self.send(SessionOp::Keep {
            pid: pid.into(),
            value,
        });
    }

    fn end(&self, pid: &str) {
        self.live_set().remove(pid);
        self.send(SessionOp::Delete { pid: pid.into() });
    }

    fn take(&self, pid: &str) -> Lookup {
        if !self.broker.keeps_sessions() {
            return self.local.take(pid);
        }
        let (broker, pid) = (self.broker.clone(), pid.to_owned());
        Box::pin(async move {
            let engine = broker.engine();
            match broker.take_session(&pid).await {
                Ok(Some(value)) => match serde_json::from_slice(&value) {
                    Ok(session) => Some(session),
                    Err(error) => {
                        tracing::warn!(%error, engine, "unreadable Socket.IO session: a new session");
                        None
                    }
                },
                Ok(None) => None,
                Err(error) => {
                    tracing::warn!(%error, engine, "cannot take a Socket.IO session: a new session");
                    None
                }
            }
        })
    }
}

/// The one task that writes sessions.
struct Writer {
    broker: Arc<dyn SessionBackend>,
    live: Live,
    window: Duration,
    /// The last write failed (logged once until one succeeds).
    failing: bool,
    dropping: Arc<AtomicBool>,
}

impl Writer {
    async fn run(mut self, mut queue: mpsc::Receiver<SessionOp>, shutdown: Shutdown) {
        let every = (self.window / 3).max(Duration::from_secs(1));
        let mut renew = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        let mut batch = Vec::new();
        loop {
            tokio::select! {
                biased;
                () = shutdown.requested() => break,
                op = queue.recv() => match op {
                    Some(op) => fill(&mut batch, op, &mut queue),
                    None => return,
                },
                _ = renew.tick() => {
                    let live = self.live.lock().unwrap_or_else(|p| p.into_inner());
                    batch.extend(live.iter().map(|pid| SessionOp::Renew { pid: pid.clone() }));
                }
            }
            self.flush(&mut batch).await;
        }
        // Draining: the closing connections save their sessions now.
        while let Ok(Some(op)) = tokio::time::timeout(DRAIN_QUIET, queue.recv()).await {
            fill(&mut batch, op, &mut queue);
            self.flush(&mut batch).await;
        }
    }

    async fn flush(&mut self, batch: &mut Vec<SessionOp>) {
        for chunk in batch.chunks(BATCH) {
            match self.broker.write_sessions(chunk, self.window).await {
                Ok(()) if self.failing => {
                    self.failing = false;
                    tracing::info!(
                        engine = self.broker.engine(),
                        "Socket.IO sessions are written again"
                    );
                }
                Ok(()) => {}
                Err(error) if !self.failing => {
                    self.failing = true;
                    tracing::warn!(%error, engine = self.broker.engine(), "cannot write Socket.IO sessions: clients that come back meanwhile get a new session");
                }
                Err(_) => {}
            }
        }
        batch.clear();
        self.dropping.store(false, Ordering::Relaxed);
    }
}

/// `op` and whatever else is queued already, up to a batch.
fn fill(batch: &mut Vec<SessionOp>, op: SessionOp, queue: &mut mpsc::Receiver<SessionOp>) {
    batch.push(op);
    while batch.len() < BATCH {
        match queue.try_recv() {
            Ok(op) => batch.push(op),
            Err(_) => break,
        }
    }
}
