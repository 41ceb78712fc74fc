//! Per-key rate limits: one token bucket per API key, in this process (so per API replica).
//! Hand-written rather than `governor`: the answer needs the remaining count and the time to a
//! full bucket for the `RateLimit` headers, and a batch of N jobs takes N at once.

use std::{
    collections::HashMap,
    sync::{Mutex, PoisonError},
    time::Instant,
};

/// A bucket's state after a request, for the `RateLimit-Policy` and `RateLimit` headers
/// (draft-ietf-httpapi-ratelimit-headers: `"default";q=<burst>;w=<window>` and
/// `"default";r=<remaining>;t=<seconds to a full bucket>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    /// The bucket's size (`q`).
    pub burst: u32,
    /// Seconds an empty bucket takes to fill (`w`).
    pub window_s: u64,
    /// Whole requests left now (`r`).
    pub remaining: u32,
    /// Seconds until the bucket is full again (`t`).
    pub reset_s: u64,
}

impl Quota {
    /// The `RateLimit-Policy` header value.
    pub fn policy_header(&self) -> String {
        format!("\"default\";q={};w={}", self.burst, self.window_s)
    }

    /// The `RateLimit` header value.
    pub fn header(&self) -> String {
        format!("\"default\";r={};t={}", self.remaining, self.reset_s)
    }
}

/// A request over its key's limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OverLimit {
    /// The bucket now.
    pub quota: Quota,
    /// Whole seconds (at least 1) until the request would fit.
    pub retry_after_s: u64,
    /// What the request cost.
    pub cost: u32,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Every key's bucket.
#[derive(Debug, Default)]
pub struct RateLimiter {
    buckets: Mutex<HashMap<String, Bucket>>,
}

fn ceil_s(seconds: f64) -> u64 {
    // Finite and non-negative by construction; `as` saturates.
    seconds.max(0.0).ceil() as u64
}

impl RateLimiter {
    /// Takes `cost` from the bucket of `key` (refilling `per_s` a second up to `burst`), or
    /// says how long until it could.
    pub fn take(&self, key: &str, per_s: u32, burst: u32, cost: u32) -> Result<Quota, OverLimit> {
        self.take_at(key, per_s, burst, cost, Instant::now())
    }

    fn take_at(
        &self,
        key: &str,
        per_s: u32,
        burst: u32,
        cost: u32,
        now: Instant,
    ) -> Result<Quota, OverLimit> {
        let (rate, size) = (f64::from(per_s.max(1)), f64::from(burst.max(1)));
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        let bucket = buckets.entry(key.to_owned()).or_insert(Bucket {
            tokens: size,
            at: now,
        });
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * rate).min(size);
        bucket.at = now;
        let quota = |tokens: f64| Quota {
            burst,
            window_s: ceil_s(size / rate).max(1),
            remaining: tokens.floor().max(0.0) as u32,
            reset_s: ceil_s((size - tokens) / rate),
        };
        let wanted = f64::from(cost);
        if bucket.tokens >= wanted {
            bucket.tokens -= wanted;
            Ok(quota(bucket.tokens))
        } else {
            Err(OverLimit {
                quota: quota(bucket.tokens),
                retry_after_s: ceil_s((wanted - bucket.tokens) / rate).max(1),
                cost,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_bucket_allows_its_burst_then_refills_at_its_rate() {
        let limiter = RateLimiter::default();
        let t0 = Instant::now();
        for i in 0..3 {
            let q = limiter.take_at("a", 1, 3, 1, t0).expect("within burst");
            assert_eq!(q.remaining, 2 - i);
        }
        let over = limiter.take_at("a", 1, 3, 1, t0).expect_err("over");
        assert_eq!(over.retry_after_s, 1);
        assert_eq!(over.quota.remaining, 0);
        assert_eq!(over.quota.reset_s, 3);
        assert_eq!(over.quota.policy_header(), "\"default\";q=3;w=3");
        // Another key has its own bucket.
        limiter.take_at("b", 1, 3, 1, t0).expect("own bucket");
        let later = t0 + Duration::from_millis(1100);
        let q = limiter.take_at("a", 1, 3, 1, later).expect("refilled one");
        assert_eq!(q.header(), "\"default\";r=0;t=3");
    }

    #[test]
    fn a_batch_costs_its_size() {
        let limiter = RateLimiter::default();
        let t0 = Instant::now();
        limiter.take_at("a", 10, 100, 60, t0).expect("60 of 100");
        let over = limiter.take_at("a", 10, 100, 60, t0).expect_err("40 left");
        assert_eq!(over.retry_after_s, 2, "20 missing at 10/s");
        assert_eq!(over.cost, 60);
    }
}
