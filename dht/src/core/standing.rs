//! A peer's standing: what its misbehaviour cost it, and the ban it earns.
//!
//! Every peer starts at [`FULL_STANDING`]. Misbehaviour this node can tell (a receipt that does
//! not verify, a receipt its signer later denied, a record whose signature or stamp fails, a
//! peer that stays over a limit, a lookup answer that hides the closest members) takes points
//! off; standing recovers at the trust policy's rate. At zero the peer is banned for the
//! policy's ban period: refused like a deny-listed peer (connections closed, requests refused,
//! never admitted), and back at half standing when the ban ends, so a repeat offender is banned
//! again sooner. Honest peers do not misbehave in these ways: a receipt is signed only for a
//! record kept durably, a record is checked before it is kept or served, and with the whole
//! membership from SWIM an honest lookup answer names the true closest (views can differ for a
//! moment, which is why that one costs little).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::Peer;

/// A peer's standing before any misbehaviour.
pub const FULL_STANDING: u32 = 100;

/// Peers whose standing is remembered, at most; when full, the one closest to full standing
/// is forgotten first (it has the least to remember).
pub const MAX_STANDINGS: usize = 16_384;

/// Bans in force, at most; when full, the one ending first is lifted early.
pub const MAX_BANS: usize = 4096;

/// What a peer did that this node can prove.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Misbehaviour {
    /// It answered a put or a proof request with a receipt that does not verify, or that is for
    /// another record, or signed by another key.
    BadReceipt,
    /// It signed a receipt for a record and later answered for the key with nothing, or with
    /// an older sequence, while the record should still live.
    DeniedReceipt,
    /// It sent a record (a put or a get's copy) whose signature or stamp does not verify.
    InvalidRecord,
    /// With this node's view settled, it answered a lookup leaving out most of the members this
    /// node knows closest to the target, as an eclipse does. Cheap, as views can differ for a
    /// moment: twenty such answers earn a ban.
    EclipseAnswer,
    /// It stayed over the trust policy's request rate or bandwidth for longer than the policy
    /// lets a peer ([`crate::TrustPolicy::over_limit_ban_after`]): banned at once.
    OverLimit,
}

impl Misbehaviour {
    /// Every kind, for metrics.
    pub const ALL: [Self; 5] = [
        Self::BadReceipt,
        Self::DeniedReceipt,
        Self::InvalidRecord,
        Self::OverLimit,
        Self::EclipseAnswer,
    ];

    /// Its name in metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BadReceipt => "bad_receipt",
            Self::DeniedReceipt => "denied_receipt",
            Self::InvalidRecord => "invalid_record",
            Self::OverLimit => "over_limit",
            Self::EclipseAnswer => "eclipse_answer",
        }
    }

    /// Standing it costs: five denied or bad receipts, or ten invalid records, earn a ban.
    fn penalty(self) -> f64 {
        match self {
            Self::BadReceipt | Self::DeniedReceipt => 20.0,
            Self::InvalidRecord => 10.0,
            Self::OverLimit => f64::from(FULL_STANDING),
            Self::EclipseAnswer => 5.0,
        }
    }
}

struct Score {
    standing: f64,
    at: Instant,
}

/// Standings and bans.
pub(super) struct Standings<T> {
    recovery_per_sec: f64,
    ban_period: Duration,
    scores: HashMap<T, Score>,
    bans: HashMap<T, Instant>,
    /// Misbehaviour seen, by kind (in [`Misbehaviour::ALL`]'s order).
    pub(super) seen: [u64; 5],
    /// Bans imposed since start.
    pub(super) banned: u64,
}

impl<T: Peer> Standings<T> {
    /// Standing recovering `per_hour` points an hour; bans of `ban_period` (zero: never ban).
    pub(super) fn new(per_hour: u32, ban_period: Duration) -> Self {
        Self {
            recovery_per_sec: f64::from(per_hour) / 3600.0,
            ban_period,
            scores: HashMap::new(),
            bans: HashMap::new(),
            seen: [0; 5],
            banned: 0,
        }
    }

    /// `peer`'s standing at `now`, 0 to [`FULL_STANDING`].
    pub(super) fn of(&self, now: Instant, peer: &T) -> u32 {
        self.scores
            .get(peer)
            .map_or(FULL_STANDING, |s| self.recovered(s, now).round() as u32)
    }

    fn recovered(&self, score: &Score, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(score.at).as_secs_f64();
        (score.standing + elapsed * self.recovery_per_sec).min(f64::from(FULL_STANDING))
    }

    /// `peer` misbehaved: its standing drops; whether that earned it a ban.
    pub(super) fn penalize(&mut self, now: Instant, peer: T, what: Misbehaviour) -> bool {
        let kind = Misbehaviour::ALL
            .iter()
            .position(|k| *k == what)
            .unwrap_or(0);
        self.seen[kind] += 1;
        if !self.scores.contains_key(&peer) && self.scores.len() >= MAX_STANDINGS {
            // Ties broken by peer, not by the hash map's order.
            let best = self
                .scores
                .iter()
                .max_by(|a, b| {
                    self.recovered(a.1, now)
                        .total_cmp(&self.recovered(b.1, now))
                        .then(a.0.cmp(b.0))
                })
                .map(|(p, _)| *p);
            if let Some(best) = best {
                self.scores.remove(&best);
            }
        }
        let standing = self
            .scores
            .get(&peer)
            .map_or(f64::from(FULL_STANDING), |s| self.recovered(s, now))
            - what.penalty();
        self.scores.insert(
            peer,
            Score {
                standing: standing.max(0.0),
                at: now,
            },
        );
        // Below one point is nothing left (recovery is fractional).
        if standing >= 1.0 || self.ban_period.is_zero() || self.bans.contains_key(&peer) {
            return false;
        }
        if self.bans.len() >= MAX_BANS
            // Ties broken by peer, not by the hash map's order.
            && let Some(first) = self
                .bans
                .iter()
                .min_by_key(|(p, end)| (**end, **p))
                .map(|(p, _)| *p)
        {
            self.bans.remove(&first);
        }
        self.bans.insert(peer, now + self.ban_period);
        self.banned += 1;
        true
    }

    /// Whether `peer` is banned.
    pub(super) fn is_banned(&self, peer: &T) -> bool {
        self.bans.contains_key(peer)
    }

    /// Lifts the bans that ended by `now`: those peers are back at half standing.
    pub(super) fn lift(&mut self, now: Instant) {
        let ended: Vec<T> = self
            .bans
            .iter()
            .filter(|(_, end)| **end <= now)
            .map(|(p, _)| *p)
            .collect();
        for peer in ended {
            self.bans.remove(&peer);
            tracing::info!(?peer, "ban ended");
            self.scores.insert(
                peer,
                Score {
                    standing: f64::from(FULL_STANDING) / 2.0,
                    at: now,
                },
            );
        }
        // Peers back at full standing have nothing to remember.
        let full = f64::from(FULL_STANDING);
        let rate = self.recovery_per_sec;
        self.scores.retain(|_, s| {
            s.standing + now.saturating_duration_since(s.at).as_secs_f64() * rate < full
        });
    }

    /// Every peer below full standing or banned, with its standing and whether it is banned.
    pub(super) fn list(&self, now: Instant) -> Vec<(T, u32, bool)> {
        let mut peers: Vec<T> = self
            .scores
            .keys()
            .chain(self.bans.keys())
            .copied()
            .collect();
        peers.sort_unstable_by_key(|p| p.to_bytes());
        peers.dedup();
        peers
            .into_iter()
            .map(|p| (p, self.of(now, &p), self.is_banned(&p)))
            .collect()
    }

    /// Bans in force.
    pub(super) fn bans(&self) -> usize {
        self.bans.len()
    }

    /// Standings remembered.
    pub(super) fn len(&self) -> usize {
        self.scores.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::SimPeer;

    #[test]
    fn misbehaviour_lowers_standing_to_a_ban_that_ends_at_half_standing() {
        let t0 = Instant::now();
        let hour = Duration::from_secs(3600);
        let mut s = Standings::new(10, hour);
        let (bad, good) = (SimPeer(1), SimPeer(2));
        assert_eq!(s.of(t0, &bad), FULL_STANDING);
        for _ in 0..4 {
            assert!(!s.penalize(t0, bad, Misbehaviour::DeniedReceipt));
        }
        assert_eq!(s.of(t0, &bad), 20);
        // It recovers ten points an hour.
        assert_eq!(s.of(t0 + hour, &bad), 30);
        assert!(!s.is_banned(&bad));
        assert!(!s.penalize(t0 + hour, bad, Misbehaviour::BadReceipt));
        assert!(s.penalize(t0 + hour, bad, Misbehaviour::InvalidRecord));
        assert!(s.is_banned(&bad) && !s.is_banned(&good));
        assert_eq!(s.of(t0 + hour, &good), FULL_STANDING);
        assert_eq!((s.banned, s.seen), (1, [1, 4, 1, 0, 0]));
        s.lift(t0 + hour + hour / 2);
        assert!(s.is_banned(&bad));
        s.lift(t0 + 2 * hour);
        assert!(!s.is_banned(&bad));
        assert_eq!(s.of(t0 + 2 * hour, &bad), FULL_STANDING / 2);
        // Five hours on it is back at full standing, and then forgotten.
        assert_eq!(s.of(t0 + 7 * hour, &bad), FULL_STANDING);
        s.lift(t0 + 8 * hour);
        assert_eq!(s.len(), 0);
    }

    #[test]
    fn a_zero_ban_period_never_bans_and_the_tables_stay_bounded() {
        let t0 = Instant::now();
        let mut s = Standings::new(0, Duration::ZERO);
        for _ in 0..10 {
            assert!(!s.penalize(t0, SimPeer(1), Misbehaviour::DeniedReceipt));
        }
        assert_eq!((s.of(t0, &SimPeer(1)), s.bans()), (0, 0));
        let mut s = Standings::new(0, Duration::from_secs(1));
        for i in 0..(MAX_STANDINGS + 10) as u32 {
            for _ in 0..5 {
                s.penalize(t0, SimPeer(i), Misbehaviour::DeniedReceipt);
            }
        }
        assert!(s.len() <= MAX_STANDINGS && s.bans() <= MAX_BANS);
    }
}
