//! The trust policy's request rate limits: per peer and per method (a request's
//! [`Request::method`](crate::wire::Request::method)), token buckets on the core's clock.

use std::collections::HashMap;
use std::time::Instant;

use super::Peer;

/// Buckets kept at most; when a new one finds the table full, the buckets that refilled (no
/// debt to remember) are dropped first, and if none did, the new peer is refused.
pub const MAX_RATE_BUCKETS: usize = 16_384;

struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn refill(&mut self, now: Instant, rate: f64, burst: f64) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + rate * elapsed).min(burst);
        self.at = now;
    }
}

/// Per-peer, per-method token buckets.
pub(super) struct RateLimits<T> {
    rate: f64,
    burst: f64,
    buckets: HashMap<(T, u8), Bucket>,
}

impl<T: Peer> RateLimits<T> {
    /// `rate` requests a second on average and `burst` at once, per peer and method; a rate
    /// of 0 allows everything.
    pub(super) fn new(rate: u32, burst: u32) -> Self {
        Self {
            rate: f64::from(rate),
            burst: f64::from(burst.max(1)),
            buckets: HashMap::new(),
        }
    }

    /// Whether `peer` may make one more request of `method` at `now` (and takes its token).
    pub(super) fn allow(&mut self, now: Instant, peer: T, method: u8) -> bool {
        if self.rate == 0.0 {
            return true;
        }
        let (rate, burst) = (self.rate, self.burst);
        if !self.buckets.contains_key(&(peer, method)) && self.buckets.len() >= MAX_RATE_BUCKETS {
            self.buckets.retain(|_, b| {
                b.refill(now, rate, burst);
                b.tokens < burst
            });
            if self.buckets.len() >= MAX_RATE_BUCKETS {
                return false;
            }
        }
        let bucket = self.buckets.entry((peer, method)).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        bucket.refill(now, rate, burst);
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Buckets held.
    pub(super) fn len(&self) -> usize {
        self.buckets.len()
    }
}
