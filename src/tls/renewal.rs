//! When to renew and when to retry: pure arithmetic, unit-tested.
//!
//! Renewal starts at 2/3 of the certificate's lifetime (day 60 of 90 for
//! Let's Encrypt), pulled earlier by a random jitter of up to 1% of the
//! lifetime so a fleet sharing a certificate does not hit the CA at once.
//! Failures retry with exponential backoff (1 min doubling to 6 h), each
//! delay jittered by ±20%.

use std::time::{Duration, SystemTime};

const RETRY_BASE: Duration = Duration::from_secs(60);
const RETRY_MAX: Duration = Duration::from_secs(6 * 3600);

/// The moment renewal should start, before jitter.
pub fn renew_at(not_before: SystemTime, not_after: SystemTime) -> SystemTime {
    let lifetime = not_after
        .duration_since(not_before)
        .unwrap_or(Duration::ZERO);
    not_before + lifetime * 2 / 3
}

/// How long to wait from `now` until renewal; `jitter` in [0, 1).
pub fn until_renewal(
    not_before: SystemTime,
    not_after: SystemTime,
    now: SystemTime,
    jitter: f64,
) -> Duration {
    let lifetime = not_after
        .duration_since(not_before)
        .unwrap_or(Duration::ZERO);
    let early = lifetime.mul_f64(0.01 * jitter.clamp(0.0, 1.0));
    let at = renew_at(not_before, not_after)
        .checked_sub(early)
        .unwrap_or(not_before);
    at.duration_since(now).unwrap_or(Duration::ZERO)
}

/// Delay before retry number `failures` (1-based); `jitter` in [0, 1).
pub fn retry_delay(failures: u32, jitter: f64) -> Duration {
    let exp = failures.saturating_sub(1).min(16);
    let base = RETRY_BASE.saturating_mul(1 << exp).min(RETRY_MAX);
    base.mul_f64(0.8 + 0.4 * jitter.clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Duration = Duration::from_secs(86_400);

    #[test]
    fn renews_at_two_thirds_of_the_lifetime() {
        let start = SystemTime::UNIX_EPOCH + 1000 * DAY;
        let end = start + 90 * DAY;
        assert_eq!(renew_at(start, end), start + 60 * DAY);
        assert_eq!(until_renewal(start, end, start, 0.0), 60 * DAY);
        let jittered = until_renewal(start, end, start, 0.99);
        assert!(jittered < 60 * DAY && jittered > 59 * DAY, "{jittered:?}");
        // Past the point (or a cached certificate near expiry): now.
        assert_eq!(
            until_renewal(start, end, start + 61 * DAY, 0.5),
            Duration::ZERO
        );
        // A malformed window never panics.
        assert_eq!(until_renewal(end, start, end, 0.5), Duration::ZERO);
    }

    #[test]
    fn retries_back_off_with_jitter_and_a_cap() {
        assert_eq!(retry_delay(1, 0.5), Duration::from_secs(60));
        assert_eq!(retry_delay(2, 0.5), Duration::from_secs(120));
        assert_eq!(retry_delay(3, 0.5), Duration::from_secs(240));
        assert_eq!(retry_delay(100, 0.5), RETRY_MAX);
        assert!(retry_delay(1, 0.0) >= Duration::from_secs(48));
        assert!(retry_delay(1, 0.999) <= Duration::from_secs(72));
    }
}
