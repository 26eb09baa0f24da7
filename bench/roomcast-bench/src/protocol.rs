//! The JSON-lines protocol between the bench (parent) and its worker
//! processes: the parent writes [`Command`]s to a worker's stdin, the worker
//! writes [`Report`]s to its stdout, one JSON object per line.
//!
//! Workers exist because one process may hold at most 20,000 open files:
//! each worker holds a slice of the connections (global indices
//! `first_index..first_index + count`), so the parent only coordinates,
//! publishes and samples the server.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::clients::Transport;
use crate::histogram::Histogram;
use crate::recovery::{Backoff, ClientRecovery};
use crate::tls::TlsTarget;

/// What a worker does with its connections.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum WorkerMode {
    /// Open every connection, join, and receive until told to close.
    Hold,
    /// Keep `concurrency` loops of connect → join → close going for
    /// `duration_ms`.
    Churn { concurrency: u64, duration_ms: u64 },
}

/// A worker's share of the run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkerPlan {
    pub worker: usize,
    pub transport: Transport,
    /// Connection `i` goes to `servers[i % servers.len()]`.
    pub servers: Vec<SocketAddr>,
    pub first_index: u64,
    pub count: u64,
    /// Connection `i` joins room `i % rooms`, named `room_prefix` + number.
    pub rooms: u32,
    pub room_prefix: String,
    /// Connections opened per second by this worker.
    pub connect_rate: f64,
    pub timeout_ms: u64,
    pub mode: WorkerMode,
    /// Connect over TLS (`run --tls-ca`).
    pub tls: Option<TlsTarget>,
    /// A connection the server ends reconnects to the next server with this
    /// backoff and resumes after the last id it saw (`run --kill-node`).
    #[serde(default)]
    pub reconnect: Option<Backoff>,
}

impl WorkerPlan {
    pub fn room_of(&self, index: u64) -> u32 {
        (index % self.rooms.max(1) as u64) as u32
    }

    pub fn server_of(&self, index: u64) -> SocketAddr {
        self.servers[(index % self.servers.len() as u64) as usize]
    }
}

pub fn room_name(prefix: &str, room: u32) -> String {
    format!("{prefix}{room}")
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Command {
    Start(WorkerPlan),
    /// Publishing is over: `last_seq[r]` is the last sequence number sent to
    /// room `r`. Wait up to `drain_ms` for every delivery, then report.
    Finish {
        last_seq: Vec<u64>,
        drain_ms: u64,
    },
    /// Close every connection and exit.
    Close,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Report {
    /// Every connection of the worker is joined or has failed.
    Connected {
        ok: u64,
        failed: u64,
        seconds: f64,
        errors: Vec<String>,
    },
    /// Sent every ~25 ms once connected: deliveries so far, open connections.
    Progress {
        received: u64,
        alive: u64,
    },
    Finished(DeliveryTally),
    Churned(ChurnTally),
    Closed,
    /// The worker could not do its job at all.
    Failed {
        message: String,
    },
}

/// What the receivers of one worker saw.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DeliveryTally {
    /// Every benchmark payload received.
    pub received: u64,
    /// Deliveries each receiver should have had (`Σ last_seq[room]`).
    pub expected: u64,
    /// Distinct sequence numbers received (≤ expected per receiver).
    pub unique: u64,
    pub lost: u64,
    pub duplicates: u64,
    pub reordered: u64,
    /// Payloads for a room the receiver did not join.
    pub foreign: u64,
    /// Connections the server or the network closed during the run.
    pub dropped_connections: u64,
    pub errors: Vec<String>,
    pub latency: Histogram,
    /// Reset frames/events (a resume the log could not fill).
    #[serde(default)]
    pub resets: u64,
    /// Every connection that was lost and reconnected (or tried to).
    #[serde(default)]
    pub recoveries: Vec<ClientRecovery>,
}

impl DeliveryTally {
    pub fn merge(&mut self, other: &DeliveryTally) {
        self.received += other.received;
        self.expected += other.expected;
        self.unique += other.unique;
        self.lost += other.lost;
        self.duplicates += other.duplicates;
        self.reordered += other.reordered;
        self.foreign += other.foreign;
        self.dropped_connections += other.dropped_connections;
        merge_errors(&mut self.errors, &other.errors);
        self.latency.merge(&other.latency);
        self.resets += other.resets;
        self.recoveries.extend_from_slice(&other.recoveries);
    }
}

/// What one worker's churn loops did.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ChurnTally {
    /// Connect → join → close cycles completed.
    pub cycles: u64,
    pub failures: u64,
    pub seconds: f64,
    pub errors: Vec<String>,
    /// Time from connect to join acknowledged.
    pub join_latency: Histogram,
}

impl ChurnTally {
    pub fn merge(&mut self, other: &ChurnTally) {
        self.cycles += other.cycles;
        self.failures += other.failures;
        self.seconds = self.seconds.max(other.seconds);
        merge_errors(&mut self.errors, &other.errors);
        self.join_latency.merge(&other.join_latency);
    }
}

/// Keeps a few distinct error messages, enough to tell what went wrong.
pub const MAX_ERRORS: usize = 5;

pub fn merge_errors(into: &mut Vec<String>, from: &[String]) {
    for error in from {
        if into.len() < MAX_ERRORS && !into.contains(error) {
            into.push(error.clone());
        }
    }
}
