//! Reconnect delays shared by every long-lived outbound connection (the
//! Redis broker, the MQTT ingest): exponential, capped, jittered.
//!
//! Owns only the arithmetic; callers sleep and decide when to reset.

use std::time::Duration;

/// Exponential backoff with "equal jitter": each delay is drawn from
/// [d/2, d], d doubling from `min` to `max`, so many nodes that lost a peer at
/// once do not reconnect in lockstep.
#[derive(Debug)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    current: Duration,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Self {
        Backoff {
            min,
            max: max.max(min),
            current: min,
        }
    }

    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self.current;
        self.current = (self.current * 2).min(self.max);
        let half = ceiling / 2;
        half + half.mul_f64(rand::random::<f64>())
    }

    pub fn reset(&mut self) {
        self.current = self.min;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_the_cap_with_jitter_and_resets() {
        let min = Duration::from_millis(100);
        let max = Duration::from_secs(5);
        let mut backoff = Backoff::new(min, max);
        let mut ceiling = min;
        for _ in 0..12 {
            let delay = backoff.next_delay();
            assert!(
                delay >= ceiling / 2 && delay <= ceiling,
                "{delay:?} vs {ceiling:?}"
            );
            ceiling = (ceiling * 2).min(max);
        }
        assert!(backoff.next_delay() >= max / 2);
        backoff.reset();
        assert!(backoff.next_delay() <= min);
    }
}
