//! Connection-level limits shared by every transport: connections in total
//! and per IP (a small sharded map of counters), the connection rate per IP
//! (a token bucket per address), and the per-connection inbound message rate.
//!
//! Owns counting only; the transports ask [`ConnectionGuard::admit`] before
//! they upgrade or stream and keep the returned [`Permit`] for the
//! connection's lifetime (dropping it frees the slot). Locks are std mutexes
//! held for one map operation, never across an `.await`.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

const SHARDS: usize = 16;

/// The numbers, with their documented defaults (see `config`).
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    /// Rooms one connection may be in (every transport).
    pub max_rooms_per_connection: usize,
    /// Open client connections in total; 0 = unlimited.
    pub max_connections: usize,
    /// Open client connections per IP address; 0 = unlimited.
    pub max_connections_per_ip: usize,
    /// New connections per second per IP address (token bucket); 0 = unlimited.
    pub connect_rate_per_ip: f64,
    /// Bucket size of the per-IP connection rate.
    pub connect_burst_per_ip: f64,
    /// Inbound messages per second per connection; 0 = unlimited (burst: 2 s worth).
    pub max_messages_per_s: f64,
    /// Apply the per-IP limits to loopback addresses too (off: a local proxy
    /// would otherwise put every client behind one address).
    pub limit_loopback: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_rooms_per_connection: 64,
            max_connections: 100_000,
            max_connections_per_ip: 1_000,
            connect_rate_per_ip: 20.0,
            connect_burst_per_ip: 100.0,
            max_messages_per_s: 100.0,
            limit_loopback: false,
        }
    }
}

/// Why a connection was not admitted: a stable code for the 503/429 answer,
/// the close reason and the metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitRefusal {
    TooManyConnections,
    TooManyConnectionsPerIp,
    ConnectRate,
}

impl LimitRefusal {
    pub fn code(self) -> &'static str {
        match self {
            LimitRefusal::TooManyConnections => "too_many_connections",
            LimitRefusal::TooManyConnectionsPerIp => "too_many_connections_per_ip",
            LimitRefusal::ConnectRate => "connect_rate_limited",
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            LimitRefusal::TooManyConnections => "the server has reached its connection limit",
            LimitRefusal::TooManyConnectionsPerIp => "too many open connections from your address",
            LimitRefusal::ConnectRate => "too many new connections from your address; slow down",
        }
    }
}

#[derive(Debug, Default)]
struct IpState {
    open: usize,
    tokens: f64,
    refilled: Option<Instant>,
}

/// Counts open connections, in total and per IP, and rate-limits new ones.
#[derive(Debug)]
pub struct ConnectionGuard {
    limits: Limits,
    total: AtomicUsize,
    shards: Box<[Mutex<HashMap<IpAddr, IpState>>]>,
    hasher: RandomState,
}

/// One admitted connection. Dropping it frees its slot.
#[derive(Debug)]
pub struct Permit {
    guard: Arc<ConnectionGuard>,
    ip: Option<IpAddr>,
}

impl ConnectionGuard {
    pub fn new(limits: Limits) -> Arc<Self> {
        Arc::new(ConnectionGuard {
            limits,
            total: AtomicUsize::new(0),
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
        })
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Open connections right now.
    pub fn open(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }

    /// Admits a new connection from `ip` (unknown when the server runs
    /// without peer addresses, e.g. embedded in a test router).
    pub fn admit(self: &Arc<Self>, ip: Option<IpAddr>) -> Result<Permit, LimitRefusal> {
        let max = self.limits.max_connections;
        let previous = self.total.fetch_add(1, Ordering::AcqRel);
        if max > 0 && previous >= max {
            self.total.fetch_sub(1, Ordering::AcqRel);
            return Err(LimitRefusal::TooManyConnections);
        }
        let ip = ip.filter(|ip| self.limits.limit_loopback || !ip.is_loopback());
        if let Some(ip) = ip
            && let Err(refusal) = self.admit_ip(ip)
        {
            self.total.fetch_sub(1, Ordering::AcqRel);
            return Err(refusal);
        }
        Ok(Permit {
            guard: self.clone(),
            ip,
        })
    }

    fn admit_ip(&self, ip: IpAddr) -> Result<(), LimitRefusal> {
        let now = Instant::now();
        let mut shard = self.shard(&ip);
        let state = shard.entry(ip).or_default();
        let per_ip = self.limits.max_connections_per_ip;
        if per_ip > 0 && state.open >= per_ip {
            return Err(LimitRefusal::TooManyConnectionsPerIp);
        }
        let rate = self.limits.connect_rate_per_ip;
        if rate > 0.0 {
            let burst = self.limits.connect_burst_per_ip.max(1.0);
            let tokens = match state.refilled {
                Some(at) => (state.tokens + now.duration_since(at).as_secs_f64() * rate).min(burst),
                None => burst,
            };
            state.refilled = Some(now);
            if tokens < 1.0 {
                state.tokens = tokens;
                return Err(LimitRefusal::ConnectRate);
            }
            state.tokens = tokens - 1.0;
        }
        state.open += 1;
        Ok(())
    }

    fn release(&self, ip: Option<IpAddr>) {
        self.total.fetch_sub(1, Ordering::AcqRel);
        let Some(ip) = ip else { return };
        let mut shard = self.shard(&ip);
        if let Some(state) = shard.get_mut(&ip) {
            state.open = state.open.saturating_sub(1);
            // Forget idle addresses whose bucket is full again, so the map
            // only holds addresses that are connected or recently busy.
            let rate = self.limits.connect_rate_per_ip;
            let refilled = state.refilled.is_none_or(|at| {
                rate <= 0.0
                    || state.tokens + at.elapsed().as_secs_f64() * rate
                        >= self.limits.connect_burst_per_ip
            });
            if state.open == 0 && refilled {
                shard.remove(&ip);
            }
        }
    }

    fn shard(&self, ip: &IpAddr) -> MutexGuard<'_, HashMap<IpAddr, IpState>> {
        let index = self.hasher.hash_one(ip) as usize % SHARDS;
        // One insert/update per critical section: a poisoned shard is consistent.
        self.shards[index]
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Addresses tracked (tests: the map does not grow without bound).
    pub fn tracked_ips(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().map(|m| m.len()).unwrap_or(0))
            .sum()
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.guard.release(self.ip);
    }
}

/// A token bucket for one connection's inbound messages: `rate` per second,
/// up to two seconds' worth in a burst. Owned by the connection, no lock.
#[derive(Debug, Clone)]
pub struct MessageRate {
    rate: f64,
    tokens: f64,
    at: Instant,
}

impl MessageRate {
    pub fn new(rate: f64) -> Self {
        MessageRate {
            rate,
            tokens: burst(rate),
            at: Instant::now(),
        }
    }

    /// Takes one token; false when the connection sends too fast.
    pub fn allow(&mut self) -> bool {
        if self.rate <= 0.0 {
            return true;
        }
        let now = Instant::now();
        let elapsed = now.duration_since(self.at).as_secs_f64();
        self.at = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(burst(self.rate));
        if self.tokens < 1.0 {
            return false;
        }
        self.tokens -= 1.0;
        true
    }
}

fn burst(rate: f64) -> f64 {
    (rate * 2.0).max(1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> Option<IpAddr> {
        Some(IpAddr::from([10, 0, 0, last]))
    }

    #[test]
    fn total_and_per_ip_limits_free_on_drop() {
        let guard = ConnectionGuard::new(Limits {
            max_connections: 3,
            max_connections_per_ip: 2,
            connect_rate_per_ip: 0.0,
            ..Limits::default()
        });
        let a = guard.admit(ip(1)).unwrap();
        let _b = guard.admit(ip(1)).unwrap();
        assert_eq!(
            guard.admit(ip(1)).unwrap_err(),
            LimitRefusal::TooManyConnectionsPerIp
        );
        let _c = guard.admit(ip(2)).unwrap();
        assert_eq!(
            guard.admit(ip(3)).unwrap_err(),
            LimitRefusal::TooManyConnections
        );
        drop(a);
        assert_eq!(guard.open(), 2);
        let _d = guard.admit(ip(1)).unwrap();
    }

    #[test]
    fn connect_rate_is_a_token_bucket_per_ip() {
        let guard = ConnectionGuard::new(Limits {
            connect_rate_per_ip: 1.0,
            connect_burst_per_ip: 3.0,
            ..Limits::default()
        });
        let permits: Vec<_> = (0..3).map(|_| guard.admit(ip(1)).unwrap()).collect();
        assert_eq!(guard.admit(ip(1)).unwrap_err(), LimitRefusal::ConnectRate);
        assert!(
            guard.admit(ip(2)).is_ok(),
            "other addresses are not affected"
        );
        drop(permits);
    }

    #[test]
    fn loopback_is_exempt_unless_asked() {
        let limits = Limits {
            max_connections_per_ip: 1,
            ..Limits::default()
        };
        let guard = ConnectionGuard::new(limits.clone());
        let local = Some(IpAddr::from([127, 0, 0, 1]));
        let _a = guard.admit(local).unwrap();
        let _b = guard.admit(local).unwrap();
        let guard = ConnectionGuard::new(Limits {
            limit_loopback: true,
            ..limits
        });
        let _a = guard.admit(local).unwrap();
        assert!(guard.admit(local).is_err());
    }

    #[test]
    fn idle_addresses_are_forgotten() {
        let guard = ConnectionGuard::new(Limits {
            connect_rate_per_ip: 0.0,
            ..Limits::default()
        });
        drop(guard.admit(ip(9)).unwrap());
        assert_eq!(guard.tracked_ips(), 0);
    }

    #[test]
    fn message_rate_allows_a_burst_then_refuses() {
        let mut rate = MessageRate::new(5.0);
        let allowed = (0..20).filter(|_| rate.allow()).count();
        assert_eq!(allowed, 10);
        let mut unlimited = MessageRate::new(0.0);
        assert!((0..1000).all(|_| unlimited.allow()));
    }
}
