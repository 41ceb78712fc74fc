//! Retry back-off, carried out by the broker rather than a sleeping worker.
//!
//! Each delay the policy can produce has its own delay queue whose queue-level TTL is that delay
//! and whose dead-letter exchange is the jobs exchange: a message waits there and then goes back
//! to the work queue. Because every message in one delay queue has the same TTL, expiry order is
//! queue order, so nothing waits behind a longer delay (the head-of-line blocking of per-message
//! TTL in one shared queue). Jitter is a per-message `expiration` below the queue's TTL: a retry
//! waits between half its delay and the full delay.

/// Exponential back-off with a cap: attempt `n` failed → wait about `base * 2^(n-1)`, at most `cap`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    base_ms: u64,
    cap_ms: u64,
}

/// When and where a failed attempt waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryDelay {
    /// The delay queue's TTL (the longest this retry can wait).
    pub tier_ms: u64,
    /// This message's own expiration: the jittered delay, in `[tier/2, tier]`.
    pub jittered_ms: u64,
}

impl RetryPolicy {
    /// A policy; `cap_ms` is raised to `base_ms` if below it.
    pub fn new(base_ms: u64, cap_ms: u64) -> Self {
        let base_ms = base_ms.max(1);
        RetryPolicy {
            base_ms,
            cap_ms: cap_ms.max(base_ms),
        }
    }

    /// Every delay this policy produces, shortest first: one delay queue each.
    pub fn tiers(&self) -> Vec<u64> {
        let mut tiers = Vec::new();
        let mut delay = self.base_ms;
        while delay < self.cap_ms {
            tiers.push(delay);
            delay = delay.saturating_mul(2);
        }
        tiers.push(self.cap_ms);
        tiers
    }

    /// The longest delay: a wait asked for beyond it is cut to it.
    pub fn cap_ms(&self) -> u64 {
        self.cap_ms
    }

    /// The wait after attempt `failed_attempt` (1-based) failed; `unit` in `[0, 1)` picks the jitter.
    pub fn delay(&self, failed_attempt: u32, unit: f64) -> RetryDelay {
        let doublings = failed_attempt.saturating_sub(1).min(63);
        let tier_ms = self
            .base_ms
            .checked_mul(1u64 << doublings)
            .map_or(self.cap_ms, |d| d.min(self.cap_ms));
        jittered(tier_ms, tier_ms / 2, unit)
    }

    /// The wait for a retry that must not run before `min_ms` (a handler's hint, e.g. a
    /// server's `Retry-After`): the shortest tier at least `min_ms`, jittered no lower than
    /// `min_ms`. Above the cap it is the cap, unjittered: the closest this policy can come.
    pub fn delay_not_before(&self, min_ms: u64, unit: f64) -> RetryDelay {
        let tier_ms = self
            .tiers()
            .into_iter()
            .find(|t| *t >= min_ms)
            .unwrap_or(self.cap_ms);
        jittered(tier_ms, (tier_ms / 2).max(min_ms).min(tier_ms), unit)
    }
}

/// A delay in `tier_ms`'s queue: from `low_ms` up to the tier, `unit` in `[0, 1)` picking where.
fn jittered(tier_ms: u64, low_ms: u64, unit: f64) -> RetryDelay {
    let unit = unit.clamp(0.0, 1.0);
    // Truncation is the intent: jitter is whole milliseconds.
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let extra = ((tier_ms - low_ms) as f64 * unit) as u64;
    RetryDelay {
        tier_ms,
        jittered_ms: (low_ms + extra).clamp(1, tier_ms),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiers_double_up_to_the_cap() {
        assert_eq!(
            RetryPolicy::new(1000, 60_000).tiers(),
            vec![1000, 2000, 4000, 8000, 16_000, 32_000, 60_000]
        );
        assert_eq!(RetryPolicy::new(100, 100).tiers(), vec![100]);
        assert_eq!(RetryPolicy::new(100, 50).tiers(), vec![100]);
    }

    #[test]
    fn delays_grow_stay_in_a_tier_and_jitter_within_it() {
        let p = RetryPolicy::new(1000, 60_000);
        let tiers = p.tiers();
        for attempt in 1..=40 {
            for unit in [0.0, 0.5, 0.999] {
                let d = p.delay(attempt, unit);
                assert!(tiers.contains(&d.tier_ms), "{attempt}: {d:?}");
                assert!(
                    d.jittered_ms >= d.tier_ms / 2 && d.jittered_ms <= d.tier_ms,
                    "{d:?}"
                );
            }
        }
        assert_eq!(p.delay(1, 0.0).tier_ms, 1000);
        assert_eq!(p.delay(3, 0.0).tier_ms, 4000);
        assert_eq!(p.delay(30, 0.0).tier_ms, 60_000);
        assert_eq!(p.delay(2, 0.0).jittered_ms, 1000);
    }

    #[test]
    fn a_hint_picks_the_shortest_tier_at_least_it_and_jitter_stays_above_it() {
        let p = RetryPolicy::new(1000, 60_000);
        let cases = [
            (0, 1000),
            (1, 1000),
            (1000, 1000),
            (1001, 2000),
            (3000, 4000),
            (32_000, 32_000),
            (32_001, 60_000),
            (60_000, 60_000),
        ];
        for (min_ms, tier_ms) in cases {
            for unit in [0.0, 0.3, 0.999, 1.0] {
                let d = p.delay_not_before(min_ms, unit);
                assert_eq!(d.tier_ms, tier_ms, "{min_ms} ms");
                assert!(
                    d.jittered_ms >= min_ms.max(tier_ms / 2) && d.jittered_ms <= tier_ms,
                    "{min_ms} ms, jitter {unit}: {d:?}"
                );
            }
        }
        assert_eq!(p.delay_not_before(3000, 0.0).jittered_ms, 3000);
        // Beyond the cap: the cap, the closest the tiers come.
        let capped = p.delay_not_before(3_600_000, 0.0);
        assert_eq!(
            capped,
            RetryDelay {
                tier_ms: 60_000,
                jittered_ms: 60_000
            }
        );
        assert_eq!(p.cap_ms(), 60_000);
        // The test policy: 200 ms base, 800 ms cap.
        let small = RetryPolicy::new(200, 800);
        assert_eq!(small.delay_not_before(1000, 0.5).jittered_ms, 800);
    }
}
