//! Heartbeat and handshake deadlines of one Engine.IO connection, as plain
//! state: the owner (websocket task or polling timer) asks when to wake and
//! what to do then.
//!
//! v4: the server pings every `interval`; no pong within `timeout` of the
//! ping being queued drops the peer. v3: the client pings; no ping within
//! `interval + timeout` of the previous one (or of the open) drops it. Also
//! carries the upper layer's connect deadline. Never does I/O.

use std::time::Duration;

use tokio::time::Instant;

use super::packet::Version;

#[derive(Debug)]
pub struct Heartbeat {
    version: Version,
    interval: Duration,
    timeout: Duration,
    /// v4: when to send the next ping; v3: unused.
    next_ping: Instant,
    /// v4: a ping is out, the pong is due by then. v3: next client ping due by then.
    due_by: Option<Instant>,
    /// When the upper layer must have completed its handshake.
    connect_by: Option<Instant>,
}

/// What the owner must do when the timer fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Beat {
    /// Write a ping (v4).
    SendPing,
    /// The peer is dead: close with `PingTimeout`.
    TimedOut,
    /// Ask the upper layer whether it connected; close if not.
    CheckConnect,
    /// Nothing yet (woken early).
    Idle,
}

impl Heartbeat {
    pub fn new(
        version: Version,
        interval: Duration,
        timeout: Duration,
        connect_timeout: Option<Duration>,
        now: Instant,
    ) -> Heartbeat {
        Heartbeat {
            version,
            interval,
            timeout,
            next_ping: now + interval,
            due_by: match version {
                Version::V3 => Some(now + interval + timeout),
                Version::V4 => None,
            },
            connect_by: connect_timeout.map(|t| now + t),
        }
    }

    /// When the owner should call [`Heartbeat::fire`] next.
    pub fn next_wake(&self) -> Instant {
        let beat = match (self.version, self.due_by) {
            (_, Some(due)) => due,
            (Version::V4, None) => self.next_ping,
            // v3 always has a due time; keep the type total anyway.
            (Version::V3, None) => self.next_ping,
        };
        self.connect_by.map_or(beat, |c| c.min(beat))
    }

    /// True when the peer missed its deadline (checked on every request so a
    /// late poll never revives a dead session).
    pub fn expired(&self, now: Instant) -> bool {
        self.due_by.is_some_and(|due| now >= due)
    }

    pub fn fire(&mut self, now: Instant) -> Beat {
        if let Some(connect_by) = self.connect_by
            && now >= connect_by
        {
            self.connect_by = None;
            return Beat::CheckConnect;
        }
        if self.expired(now) {
            return Beat::TimedOut;
        }
        if self.version == Version::V4 && self.due_by.is_none() && now >= self.next_ping {
            // Deadlines count from when the ping was due, so timer or
            // scheduling lag does not stretch them (within a bound, so a
            // long stall does not expire the peer on the spot).
            let at = match now.checked_sub(self.timeout / 4) {
                Some(floor) => self.next_ping.max(floor),
                None => self.next_ping,
            };
            self.due_by = Some(at + self.timeout);
            // The next ping is due one interval after this one, not after
            // the pong: a steady beat instead of drifting by each round trip.
            self.next_ping = (at + self.interval).max(now);
            return Beat::SendPing;
        }
        Beat::Idle
    }

    /// v4: the client answered; the next ping is already scheduled.
    pub fn pong(&mut self, _now: Instant) {
        if self.version == Version::V4 {
            self.due_by = None;
        }
    }

    /// v3: the client pinged; it owes the next ping within interval + timeout.
    pub fn ping(&mut self, now: Instant) {
        if self.version == Version::V3 {
            self.due_by = Some(now + self.interval + self.timeout);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn v4_pings_then_times_out_without_pong() {
        let t0 = Instant::now();
        let mut hb = Heartbeat::new(Version::V4, 300 * MS, 200 * MS, None, t0);
        assert_eq!(hb.next_wake(), t0 + 300 * MS);
        assert_eq!(hb.fire(t0 + 100 * MS), Beat::Idle);
        // Fired 5 ms late: the deadline still counts from the due time.
        assert_eq!(hb.fire(t0 + 305 * MS), Beat::SendPing);
        assert_eq!(hb.next_wake(), t0 + 500 * MS);
        hb.pong(t0 + 350 * MS);
        assert_eq!(hb.next_wake(), t0 + 600 * MS, "a steady beat");
        assert_eq!(hb.fire(t0 + 600 * MS), Beat::SendPing);
        assert!(!hb.expired(t0 + 799 * MS));
        assert_eq!(hb.fire(t0 + 800 * MS), Beat::TimedOut);
    }

    #[test]
    fn v3_expects_client_pings() {
        let t0 = Instant::now();
        let mut hb = Heartbeat::new(Version::V3, 300 * MS, 200 * MS, None, t0);
        assert_eq!(hb.next_wake(), t0 + 500 * MS);
        hb.ping(t0 + 300 * MS);
        assert_eq!(hb.fire(t0 + 500 * MS), Beat::Idle);
        assert_eq!(hb.fire(t0 + 800 * MS), Beat::TimedOut);
    }

    #[test]
    fn connect_deadline_comes_first_once() {
        let t0 = Instant::now();
        let mut hb = Heartbeat::new(Version::V4, 300 * MS, 200 * MS, Some(100 * MS), t0);
        assert_eq!(hb.next_wake(), t0 + 100 * MS);
        assert_eq!(hb.fire(t0 + 100 * MS), Beat::CheckConnect);
        assert_eq!(hb.next_wake(), t0 + 300 * MS);
    }
}
