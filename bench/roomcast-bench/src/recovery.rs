//! The recovery scenario (issue 15): during a run on several nodes, the bench
//! SIGKILLs one node; that node's clients reconnect to the next node in the
//! target list with jittered backoff and resume with `since` / `Last-Event-ID`
//! / Socket.IO's `{pid, offset}` = the last id they saw. Measured from the kill: when each one reconnected
//! and when it had every message published up to its reconnect (caught up),
//! plus the surviving nodes' and the engine's CPU meanwhile.
//!
//! Parts: [`Backoff`] (the clients' reconnect pacing), [`ClientRecovery`]
//! (what one client saw, kept by its worker), [`CatchUp`] (when a client has
//! caught up), [`during`] (the kill and the CPU samples, beside the
//! publisher) and [`summarize`] (the figures of the result).

use std::future::Future;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::payload::now_micros;
use crate::proc_stats::{self, ProcError};

/// How a client waits before each reconnect attempt: socket.io-client's
/// defaults (`reconnectionDelay` 1000, `randomizationFactor` 0.5,
/// `reconnectionDelayMax` 5000): attempt k waits `delay · 2^k`, randomized
/// by ± `jitter` of itself, capped at `max`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Backoff {
    pub delay_ms: u64,
    pub max_ms: u64,
    pub jitter: f64,
}

impl Backoff {
    /// The wait before attempt `attempt` (0 = the first reconnect).
    pub fn wait(&self, attempt: u32, rng: &mut Rng) -> Duration {
        let base = self.delay_ms as f64 * 2f64.powi(attempt.min(30) as i32);
        let jitter = self.jitter.clamp(0.0, 1.0);
        let spread = (rng.unit() * 2.0 - 1.0) * jitter * base;
        Duration::from_secs_f64((base + spread).clamp(0.0, self.max_ms as f64) / 1000.0)
    }
}

/// A small xorshift generator, seeded per connection so runs do not depend
/// on a global random source; only the jitter needs it.
pub struct Rng(u64);

impl Rng {
    pub fn seeded(seed: u64) -> Rng {
        // splitmix64 of the seed: neighbouring indices get unrelated streams.
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Rng((z ^ (z >> 31)) | 1)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// What one client whose node died went through, in Unix µs (0 = not yet).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct ClientRecovery {
    /// When it saw its connection end.
    pub lost_us: u64,
    /// When its resuming join was acknowledged on a surviving node.
    pub reconnected_us: u64,
    /// When it held every message published up to `reconnected_us`.
    pub caught_up_us: u64,
    /// Connection attempts until it was back (1 = the first one worked).
    pub attempts: u32,
}

/// Tells when a reconnected client has caught up, from the payloads' send
/// stamps: a room's messages leave in order, so once a message sent after
/// the reconnect arrives with no gap before it, the client holds everything
/// sent up to the reconnect; it held it since the last message sent before
/// the reconnect arrived (or since the reconnect, if that came earlier).
#[derive(Debug, Default)]
pub struct CatchUp {
    reconnected_us: u64,
    /// Arrival of the newest message sent before the reconnect.
    last_before_us: u64,
}

impl CatchUp {
    pub fn reconnected(&mut self, at_us: u64) {
        self.reconnected_us = at_us;
        self.last_before_us = at_us;
    }

    /// A payload sent at `sent_us` arrived at `now_us`; `gapless`: the
    /// client misses no earlier sequence number. Returns the caught-up time
    /// once it is known.
    pub fn arrived(&mut self, sent_us: u64, now_us: u64, gapless: bool) -> Option<u64> {
        if self.reconnected_us == 0 {
            return None;
        }
        if sent_us <= self.reconnected_us {
            self.last_before_us = self.last_before_us.max(now_us);
            return None;
        }
        gapless.then_some(self.last_before_us)
    }
}

/// The node to kill and what to sample meanwhile.
#[derive(Debug, Clone)]
pub struct KillPlan {
    pub pid: u32,
    /// After publishing began.
    pub after: Duration,
    /// The other nodes' processes.
    pub survivors: Vec<u32>,
    pub engine_pids: Vec<u32>,
}

/// One CPU reading after the kill, in seconds of CPU since the kill.
#[derive(Debug, Clone, Copy)]
struct CpuSample {
    at_us: u64,
    survivors_s: f64,
    engine_s: f64,
}

/// The kill and the CPU samples that followed it.
#[derive(Debug, Clone)]
pub struct Killed {
    pub kill_us: u64,
    samples: Vec<CpuSample>,
}

#[derive(Debug, thiserror::Error)]
pub enum KillError {
    #[error("publishing ended before the kill (--kill-after-s beyond --duration-s)")]
    TooLate,
    #[error("cannot kill node pid {pid}: {error}")]
    Kill { pid: u32, error: String },
    #[error(transparent)]
    Proc(#[from] ProcError),
}

/// Runs `publishing` and, beside it, kills the node `after` into it, then
/// samples the survivors' and the engine's CPU every 100 ms until
/// publishing ends.
pub async fn during<T>(
    plan: &KillPlan,
    publishing: impl Future<Output = T>,
) -> (T, Result<Killed, KillError>) {
    let done = CancellationToken::new();
    let publish = async {
        let out = publishing.await;
        done.cancel();
        out
    };
    tokio::join!(publish, kill_and_sample(plan, &done))
}

async fn kill_and_sample(plan: &KillPlan, done: &CancellationToken) -> Result<Killed, KillError> {
    tokio::select! {
        _ = tokio::time::sleep(plan.after) => {}
        _ = done.cancelled() => return Err(KillError::TooLate),
    }
    let (survivors_0, _) = proc_stats::sample_all(&plan.survivors)?;
    let (engine_0, _) = proc_stats::sample_all(&plan.engine_pids)?;
    let kill_us = now_micros();
    kill(plan.pid)?;
    let mut samples = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = done.cancelled() => break,
        }
        let (survivors, _) = proc_stats::sample_all(&plan.survivors)?;
        let (engine, _) = proc_stats::sample_all(&plan.engine_pids)?;
        samples.push(CpuSample {
            at_us: now_micros(),
            survivors_s: survivors.cpu_seconds - survivors_0.cpu_seconds,
            engine_s: engine.cpu_seconds - engine_0.cpu_seconds,
        });
    }
    Ok(Killed { kill_us, samples })
}

/// SIGKILL, as a crash or the OOM killer would: no goodbye to any client.
fn kill(pid: u32) -> Result<(), KillError> {
    let status = std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .map_err(|e| KillError::Kill {
            pid,
            error: e.to_string(),
        })?;
    if status.success() {
        Ok(())
    } else {
        Err(KillError::Kill {
            pid,
            error: format!("kill exited with {status}"),
        })
    }
}

/// Milliseconds from the kill, over the clients that recovered.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct Spread {
    pub count: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Spread {
    fn of(mut ms: Vec<f64>) -> Spread {
        ms.sort_by(f64::total_cmp);
        let at = |q: f64| {
            if ms.is_empty() {
                return 0.0;
            }
            let rank = ((q * ms.len() as f64).ceil() as usize).clamp(1, ms.len());
            ms[rank - 1]
        };
        Spread {
            count: ms.len() as u64,
            p50_ms: at(0.50),
            p99_ms: at(0.99),
            max_ms: ms.last().copied().unwrap_or(0.0),
        }
    }
}

/// The recovery figures of a run (`run --kill-node`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RecoverySummary {
    /// Index of the killed node in `--target` order.
    pub killed_node: usize,
    pub backoff: Option<Backoff>,
    /// Clients whose connection ended (those of the killed node).
    pub clients: u64,
    /// Kill → the client saw its connection end.
    pub noticed: Spread,
    /// Kill → resuming join acknowledged on a surviving node.
    pub reconnected: Spread,
    /// Kill → holding every message published up to its reconnect.
    pub caught_up: Spread,
    /// Clients that never reconnected, and reconnected ones never seen caught up.
    pub not_reconnected: u64,
    pub not_caught_up: u64,
    /// Connection attempts of all recovering clients (≥ clients).
    pub attempts: u64,
    /// Reset frames/events received (the log could not fill a gap), and
    /// Socket.IO reconnects that were not recovered.
    pub resets: u64,
    /// From the kill until every client caught up (or publishing ended).
    pub window_s: f64,
    pub survivors_cpu_cores: f64,
    pub engine_cpu_cores: f64,
}

/// The figures of `records` (every recovering client of every worker).
pub fn summarize(
    killed_node: usize,
    backoff: Backoff,
    killed: &Killed,
    records: &[ClientRecovery],
    resets: u64,
) -> RecoverySummary {
    let since_kill = |us: u64| us.saturating_sub(killed.kill_us) as f64 / 1000.0;
    let times = |pick: fn(&ClientRecovery) -> u64| {
        Spread::of(
            records
                .iter()
                .map(pick)
                .filter(|&us| us > 0)
                .map(since_kill)
                .collect(),
        )
    };
    let caught_up = times(|r| r.caught_up_us);
    let reconnected = times(|r| r.reconnected_us);
    // CPU from the kill to the last catch-up: the first sample at or after it.
    let end_us = killed.kill_us + (caught_up.max_ms * 1000.0) as u64;
    let sample = killed
        .samples
        .iter()
        .find(|s| s.at_us >= end_us)
        .or(killed.samples.last());
    let (window_s, survivors_cpu_cores, engine_cpu_cores) = match sample {
        Some(s) => {
            let wall = since_kill(s.at_us) / 1000.0;
            (
                wall,
                s.survivors_s / wall.max(1e-9),
                s.engine_s / wall.max(1e-9),
            )
        }
        None => (0.0, 0.0, 0.0),
    };
    RecoverySummary {
        killed_node,
        backoff: Some(backoff),
        clients: records.len() as u64,
        noticed: times(|r| r.lost_us),
        not_reconnected: records.len() as u64 - reconnected.count,
        not_caught_up: records.len() as u64 - caught_up.count,
        reconnected,
        caught_up,
        attempts: records.iter().map(|r| u64::from(r.attempts)).sum(),
        resets,
        window_s,
        survivors_cpu_cores,
        engine_cpu_cores,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_within_its_jitter_and_cap() {
        let backoff = Backoff {
            delay_ms: 1000,
            max_ms: 5000,
            jitter: 0.5,
        };
        let mut rng = Rng::seeded(7);
        for _ in 0..1000 {
            let first = backoff.wait(0, &mut rng).as_secs_f64();
            assert!((0.5..=1.5).contains(&first), "{first}");
            let second = backoff.wait(1, &mut rng).as_secs_f64();
            assert!((1.0..=3.0).contains(&second), "{second}");
            assert!(backoff.wait(9, &mut rng).as_secs_f64() <= 5.0);
        }
    }

    #[test]
    fn caught_up_when_a_later_message_arrives_without_a_gap() {
        let mut c = CatchUp::default();
        assert_eq!(c.arrived(10, 20, true), None); // not reconnected yet
        c.reconnected(100);
        assert_eq!(c.arrived(90, 130, true), None); // replayed from the log
        assert_eq!(c.arrived(95, 140, true), None);
        assert_eq!(c.arrived(150, 160, false), None); // a hole before it
        assert_eq!(c.arrived(155, 170, true), Some(140));
        // Nothing was missing: caught up at the reconnect itself.
        let mut c = CatchUp::default();
        c.reconnected(100);
        assert_eq!(c.arrived(120, 125, true), Some(100));
    }

    #[test]
    fn summary_counts_from_the_kill() {
        let killed = Killed {
            kill_us: 1_000_000,
            samples: vec![
                CpuSample {
                    at_us: 1_500_000,
                    survivors_s: 0.5,
                    engine_s: 0.1,
                },
                CpuSample {
                    at_us: 2_000_000,
                    survivors_s: 1.5,
                    engine_s: 0.2,
                },
            ],
        };
        let record = |lost, back, caught| ClientRecovery {
            lost_us: lost,
            reconnected_us: back,
            caught_up_us: caught,
            attempts: 1,
        };
        let records = [
            record(1_001_000, 1_400_000, 1_450_000),
            record(1_002_000, 1_600_000, 1_700_000),
            record(1_002_000, 0, 0),
        ];
        let backoff = Backoff {
            delay_ms: 1000,
            max_ms: 5000,
            jitter: 0.5,
        };
        let s = summarize(1, backoff, &killed, &records, 0);
        assert_eq!(s.clients, 3);
        assert_eq!(s.not_reconnected, 1);
        assert_eq!(s.not_caught_up, 1);
        assert_eq!(s.caught_up.max_ms, 700.0);
        assert_eq!(s.reconnected.p50_ms, 400.0);
        assert_eq!(s.window_s, 1.0);
        assert_eq!(s.survivors_cpu_cores, 1.5);
    }
}
