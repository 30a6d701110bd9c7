//! The trust policy's limits on what one peer may send: requests per method (a request's
//! [`Request::method`](crate::wire::Request::method)) and bytes, as token buckets on the core's
//! clock.
//!
//! A peer over a limit is slowed, then refused: a request over its rate waits ([`Slowed`]) until
//! its bucket has a token again, and is served then, at the rate; what does not fit in the wait
//! (a peer's [`MAX_SLOWED_PER_PEER`], everyone's [`MAX_SLOWED`]) is refused, a told message over
//! the byte limit dropped, and counted. A peer that backs off refills its bucket, which forgives
//! it; one that stays over its limit for the policy's `over_limit_ban_after` is banned (see
//! [`super::standing`]).

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

use super::InboundId;
use crate::wire::Request;

/// Buckets kept per limit at most; when a new one finds the table full, the buckets that
/// refilled (no debt to remember) are dropped first, and if none did, the new peer is
/// throttled.
pub const MAX_RATE_BUCKETS: usize = 16_384;

/// What a limit says of one more request or message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    /// Within the limit.
    Pass,
    /// Over it: refuse or drop this one.
    Throttle,
    /// Over it for longer than the policy lets a peer stay: ban the peer.
    Ban,
}

struct Bucket {
    tokens: f64,
    at: Instant,
    /// Since when the peer has been over its limit without backing off.
    over_since: Option<Instant>,
}

/// One token bucket per key (a peer, or a peer and a method).
pub(super) struct Buckets<K> {
    rate: f64,
    burst: f64,
    ban_after: Option<Duration>,
    buckets: HashMap<K, Bucket>,
}

impl<K: Eq + Hash + Copy> Buckets<K> {
    /// `rate` a second on average and `burst` at once, per key; a rate of 0 allows everything.
    /// A key over its limit for `ban_after` is to be banned (`None`: never).
    pub(super) fn new(rate: u64, burst: u64, ban_after: Option<Duration>) -> Self {
        Self {
            rate: rate as f64,
            burst: burst.max(1) as f64,
            ban_after,
            buckets: HashMap::new(),
        }
    }

    /// Whether `key` may have `amount` more at `now` (and takes it if so).
    pub(super) fn take(&mut self, now: Instant, key: K, amount: u64) -> Verdict {
        if self.rate == 0.0 {
            return Verdict::Pass;
        }
        let (rate, burst) = (self.rate, self.burst);
        let refill = |b: &mut Bucket| {
            let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
            b.tokens = (b.tokens + rate * elapsed).min(burst);
            b.at = now;
            if b.tokens >= burst {
                b.over_since = None;
            }
        };
        if !self.buckets.contains_key(&key) && self.buckets.len() >= MAX_RATE_BUCKETS {
            self.buckets.retain(|_, b| {
                refill(b);
                b.tokens < burst
            });
            if self.buckets.len() >= MAX_RATE_BUCKETS {
                return Verdict::Throttle;
            }
        }
        let bucket = self.buckets.entry(key).or_insert(Bucket {
            tokens: burst,
            at: now,
            over_since: None,
        });
        refill(bucket);
        // More than a whole burst at once can never fit: it takes the whole bucket.
        let amount = (amount as f64).min(burst);
        if bucket.tokens >= amount {
            bucket.tokens -= amount;
            return Verdict::Pass;
        }
        let since = *bucket.over_since.get_or_insert(now);
        match self.ban_after {
            Some(after) if now.saturating_duration_since(since) >= after => {
                self.buckets.remove(&key);
                Verdict::Ban
            }
            _ => Verdict::Throttle,
        }
    }

    /// How long until `key` has one token again: zero if it has one (or there is no limit).
    pub(super) fn wait(&self, now: Instant, key: &K) -> Duration {
        self.wait_for(now, key, 1)
    }

    /// How long until `key` has `amount` tokens (at most a burst) again: zero if it has them
    /// (or there is no limit).
    pub(super) fn wait_for(&self, now: Instant, key: &K, amount: u64) -> Duration {
        if self.rate == 0.0 {
            return Duration::ZERO;
        }
        let Some(b) = self.buckets.get(key) else {
            return Duration::ZERO;
        };
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        let tokens = (b.tokens + self.rate * elapsed).min(self.burst);
        let amount = (amount as f64).min(self.burst);
        Duration::from_secs_f64(((amount - tokens) / self.rate).max(0.0))
    }

    /// The time between two tokens (zero without a limit).
    pub(super) fn period(&self) -> Duration {
        if self.rate == 0.0 {
            return Duration::ZERO;
        }
        Duration::from_secs_f64(1.0 / self.rate)
    }

    /// Buckets held.
    pub(super) fn len(&self) -> usize {
        self.buckets.len()
    }
}

/// Requests slowed at most, of all peers.
pub const MAX_SLOWED: usize = 1_024;

/// Requests of one peer slowed at most: past them, a peer over its rate is refused.
pub const MAX_SLOWED_PER_PEER: usize = 32;

/// A request waiting for its sender's bucket: the request and the bytes of it still to be
/// metered (zero once paid).
pub(super) type Held = (InboundId, Request, u64);

/// When a held request is due, and whose it is.
type Waiting<T> = (Instant, T, Held);

/// Requests over their sender's rate, held until they are due (each a token's period after the
/// one before it from the same peer), then served. Bounded by [`MAX_SLOWED`] and
/// [`MAX_SLOWED_PER_PEER`]; a small list scanned when a deadline passes.
pub(super) struct Slowed<T> {
    waiting: Vec<Waiting<T>>,
}

impl<T> Default for Slowed<T> {
    fn default() -> Self {
        Self {
            waiting: Vec::new(),
        }
    }
}

impl<T: Eq + Copy> Slowed<T> {
    /// Holds `request` of `from` until `now + wait`, after the peer's requests held already, each
    /// `period` apart; gives it back if the peer or everyone holds the most allowed.
    pub(super) fn hold(
        &mut self,
        now: Instant,
        (wait, period): (Duration, Duration),
        from: T,
        held: Held,
    ) -> Result<(), (InboundId, Request)> {
        let of_peer = self.waiting.iter().filter(|w| w.1 == from).count();
        if of_peer >= MAX_SLOWED_PER_PEER || self.waiting.len() >= MAX_SLOWED {
            return Err((held.0, held.1));
        }
        let due = now + wait + period * of_peer as u32;
        self.waiting.push((due, from, held));
        Ok(())
    }

    /// The requests due at `now`, in the order they came.
    pub(super) fn due(&mut self, now: Instant) -> Vec<(T, Held)> {
        let (due, waiting): (Vec<_>, Vec<_>) = self.waiting.drain(..).partition(|w| w.0 <= now);
        self.waiting = waiting;
        due.into_iter()
            .map(|(_, from, held)| (from, held))
            .collect()
    }

    /// When the next request is due.
    pub(super) fn next(&self) -> Option<Instant> {
        self.waiting.iter().map(|w| w.0).min()
    }

    /// Requests held.
    pub(super) fn len(&self) -> usize {
        self.waiting.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_over_its_rate_is_throttled_then_banned_unless_it_backs_off() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut b = Buckets::new(100, 200, Some(10 * s));
        // The burst, then throttled.
        assert_eq!(b.take(t0, 1, 200), Verdict::Pass);
        assert_eq!(b.take(t0, 1, 1), Verdict::Throttle);
        assert_eq!(b.take(t0, 2, 150), Verdict::Pass, "keys are apart");
        // Backing off refills the bucket, which forgives.
        assert_eq!(b.take(t0 + 2 * s, 1, 150), Verdict::Pass);
        assert_eq!(b.take(t0 + 2 * s, 1, 150), Verdict::Throttle);
        assert_eq!(b.take(t0 + 5 * s, 1, 200), Verdict::Pass);
        // Sending at twice the rate for ten seconds earns a ban.
        let mut verdicts = Vec::new();
        for tick in 1..=120 {
            let now = t0 + 5 * s + tick * s / 10;
            verdicts.push(b.take(now, 1, 20));
        }
        assert!(verdicts.contains(&Verdict::Throttle));
        assert!(verdicts[..100].iter().all(|v| *v != Verdict::Ban));
        assert_eq!(verdicts.iter().filter(|v| **v == Verdict::Ban).count(), 1);
        // A larger amount than the burst takes a full bucket instead of never passing.
        let mut b = Buckets::new(100, 200, None);
        assert_eq!(b.take(t0, 1, 10_000), Verdict::Pass);
        assert_eq!(b.take(t0 + 100 * s, 1, 1), Verdict::Pass);
    }

    #[test]
    fn a_rate_of_zero_allows_everything_and_the_table_is_bounded() {
        let t0 = Instant::now();
        let mut off = Buckets::new(0, 0, Some(Duration::ZERO));
        assert_eq!(off.take(t0, 1u32, u64::MAX), Verdict::Pass);
        assert_eq!(off.len(), 0);
        let mut b = Buckets::new(1, 1, None);
        for key in 0..(MAX_RATE_BUCKETS as u32 + 10) {
            b.take(t0, key, 1);
        }
        assert!(b.len() <= MAX_RATE_BUCKETS);
    }
}
