//! The churn filter: a peer that departed (failed or left) too often lately is held out for a
//! while before it is admitted again.
//!
//! Every departure of an admitted peer is remembered for the trust policy's churn window. A
//! peer that departs more than the policy's `churn_max_departures` times within the window is
//! held out until its oldest counted departure leaves the window: it comes back at most that
//! often, however often it flaps. A member that flaps makes every node suspect it, declare it
//! dead and readmit it, and each of those is gossiped: holding it out keeps that noise and the
//! replica moves it causes bounded. An honest node restarting now and then never reaches the
//! bound.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use super::Peer;

/// Peers whose departures are remembered, at most; when full, the peer whose last departure
/// is oldest is forgotten first.
pub const MAX_CHURN_PEERS: usize = 16_384;

/// Departures and holds.
pub(super) struct Churn<T> {
    window: Duration,
    max: usize,
    departures: HashMap<T, VecDeque<Instant>>,
    held: HashMap<T, Instant>,
    /// Holds imposed since start.
    pub(super) holds: u64,
}

impl<T: Peer> Churn<T> {
    /// At most `max` departures within `window` (`max` 0: no filter).
    pub(super) fn new(max: u32, window: Duration) -> Self {
        Self {
            window,
            max: max as usize,
            departures: HashMap::new(),
            held: HashMap::new(),
            holds: 0,
        }
    }

    /// `peer` departed at `now`; whether that puts it over the bound (it is held out).
    pub(super) fn departed(&mut self, now: Instant, peer: T) -> bool {
        if self.max == 0 {
            return false;
        }
        if !self.departures.contains_key(&peer) && self.departures.len() >= MAX_CHURN_PEERS {
            // Ties broken by peer, not by the hash map's order.
            let oldest = self
                .departures
                .iter()
                .min_by_key(|(p, d)| (d.back().copied(), **p))
                .map(|(p, _)| *p);
            if let Some(oldest) = oldest {
                self.departures.remove(&oldest);
            }
        }
        let window = self.window;
        let list = self.departures.entry(peer).or_default();
        while list
            .front()
            .is_some_and(|d| now.saturating_duration_since(*d) >= window)
        {
            list.pop_front();
        }
        list.push_back(now);
        if list.len() <= self.max {
            return false;
        }
        // Held until it has departed at most `max` times within the window again.
        let until = list[list.len() - self.max] + window;
        list.pop_front();
        self.holds += 1;
        if !self.held.contains_key(&peer)
            && self.held.len() >= MAX_CHURN_PEERS
            // Ties broken by peer, not by the hash map's order.
            && let Some(first) = self.held.iter().min_by_key(|(p, u)| (**u, **p)).map(|(p, _)| *p)
        {
            self.held.remove(&first);
        }
        self.held.insert(peer, until);
        true
    }

    /// Whether `peer` is held out.
    pub(super) fn is_held(&self, peer: &T) -> bool {
        self.held.contains_key(peer)
    }

    /// Ends the holds that are over by `now`, and forgets departures out of the window.
    pub(super) fn lift(&mut self, now: Instant) {
        self.held.retain(|_, until| *until > now);
        let window = self.window;
        self.departures.retain(|_, list| {
            list.back()
                .is_some_and(|d| now.saturating_duration_since(*d) < window)
        });
    }

    /// Peers remembered (departures and holds; at most twice [`MAX_CHURN_PEERS`]).
    pub(super) fn len(&self) -> usize {
        self.departures.len() + self.held.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::SimPeer;

    #[test]
    fn a_peer_that_departs_too_often_is_held_out_until_its_departures_age() {
        let t0 = Instant::now();
        let min = Duration::from_secs(60);
        let mut churn = Churn::new(3, 10 * min);
        let (flapper, steady) = (SimPeer(1), SimPeer(2));
        for i in 0..3 {
            assert!(!churn.departed(t0 + i * min, flapper));
        }
        assert!(!churn.departed(t0, steady));
        // The fourth departure within ten minutes: held out until only three stand in the
        // window again, when the second (at one minute) ages out.
        assert!(churn.departed(t0 + 3 * min, flapper));
        assert!(churn.is_held(&flapper) && !churn.is_held(&steady));
        churn.lift(t0 + 10 * min);
        assert!(churn.is_held(&flapper));
        churn.lift(t0 + 11 * min);
        assert!(!churn.is_held(&flapper));
        assert_eq!(churn.holds, 1);
        // Departures far apart never reach the bound.
        for i in 0..10 {
            assert!(!churn.departed(t0 + 100 * min + i * 4 * min, steady));
        }
        // Everything ages out.
        churn.lift(t0 + 1000 * min);
        assert_eq!(churn.len(), 0);
    }

    #[test]
    fn no_filter_with_a_bound_of_zero_and_the_table_is_bounded() {
        let t0 = Instant::now();
        let mut off = Churn::new(0, Duration::from_secs(60));
        for _ in 0..100 {
            assert!(!off.departed(t0, SimPeer(1)));
        }
        let mut churn = Churn::new(1, Duration::from_secs(60));
        for i in 0..(MAX_CHURN_PEERS as u32 + 10) {
            churn.departed(t0, SimPeer(i));
        }
        assert!(churn.len() <= 2 * MAX_CHURN_PEERS);
    }
}
