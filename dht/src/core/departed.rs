//! Proofs of members SWIM declared failed or gone, kept a while in case they come back.
//!
//! A member declared failed is often alive: it was slow, or the messages about it were lost,
//! and it refutes within seconds. Had its proof been dropped with it, every node that heard
//! the refutation would ask for the proof again, and the node that named it, which may have
//! dropped it too, would leave no way but dialing: after many false failures at once, a storm
//! of dials that slows the network into more of them. A kept proof readmits the member at once.
//! The set is bounded in size and age; a member refused by the gate is removed for good.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// Departed members' proofs kept, at most; the oldest goes first.
pub const MAX_DEPARTED: usize = 1024;

/// How long a departed member's proof is kept (SWIM's LAN `dead_retention`).
pub const DEPARTED_RETENTION: Duration = Duration::from_secs(600);

/// The proofs of departed members, with when each departed; oldest first in `order` (entries
/// of members re-inserted or removed since stay there until they reach the front). Times are
/// whole seconds since the first departure: a simulator keeps a thousand of these per node.
#[derive(Debug)]
pub(super) struct Departed<T, P> {
    proofs: HashMap<T, (P, u32)>,
    order: VecDeque<(u32, T)>,
    epoch: Option<Instant>,
}

impl<T, P> Default for Departed<T, P> {
    fn default() -> Self {
        Self {
            proofs: HashMap::new(),
            order: VecDeque::new(),
            epoch: None,
        }
    }
}

impl<T: Copy + Eq + std::hash::Hash, P: Clone> Departed<T, P> {
    /// `now` in whole seconds since the epoch (saturating: 136 years).
    fn stamp(&mut self, now: Instant) -> u32 {
        let epoch = *self.epoch.get_or_insert(now);
        u32::try_from(now.saturating_duration_since(epoch).as_secs()).unwrap_or(u32::MAX)
    }

    /// Keeps `peer`'s proof from `now`, dropping the longest-departed member if full.
    pub(super) fn insert(&mut self, peer: T, proof: P, now: Instant) {
        let at = self.stamp(now);
        if !self.proofs.contains_key(&peer) && self.proofs.len() >= MAX_DEPARTED {
            self.pop_oldest();
        }
        self.proofs.insert(peer, (proof, at));
        self.order.push_back((at, peer));
        if self.order.len() > 2 * MAX_DEPARTED {
            let proofs = &self.proofs;
            self.order
                .retain(|(at, p)| proofs.get(p).is_some_and(|(_, t)| t == at));
        }
    }

    /// Drops the member that departed longest ago.
    fn pop_oldest(&mut self) {
        while let Some((at, peer)) = self.order.pop_front() {
            if self.proofs.get(&peer).is_some_and(|(_, t)| *t == at) {
                self.proofs.remove(&peer);
                return;
            }
        }
    }

    /// The proof of `peer`, if it departed lately.
    pub(super) fn get(&self, peer: &T) -> Option<P> {
        self.proofs.get(peer).map(|(proof, _)| proof.clone())
    }

    /// Whether `peer` departed lately (its proof is kept).
    pub(super) fn contains(&self, peer: &T) -> bool {
        self.proofs.contains_key(peer)
    }

    /// Removes `peer` (it came back, or was refused), giving back its proof.
    pub(super) fn remove(&mut self, peer: &T) -> Option<P> {
        self.proofs.remove(peer).map(|(proof, _)| proof)
    }

    /// Drops the proofs kept [`DEPARTED_RETENTION`] or longer and gives back their memory.
    pub(super) fn expire(&mut self, now: Instant) {
        if self.epoch.is_none() {
            return;
        }
        let now = self.stamp(now);
        let retention = u32::try_from(DEPARTED_RETENTION.as_secs()).unwrap_or(u32::MAX);
        while let Some((at, peer)) = self.order.front().copied() {
            if now.saturating_sub(at) < retention {
                break;
            }
            self.order.pop_front();
            if self.proofs.get(&peer).is_some_and(|(_, t)| *t == at) {
                self.proofs.remove(&peer);
            }
        }
        super::shrink_sparse(&mut self.proofs);
        if self.order.capacity() > 64 && self.order.len() * 4 <= self.order.capacity() {
            self.order.shrink_to_fit();
        }
    }

    /// How many proofs are kept.
    pub(super) fn len(&self) -> usize {
        self.proofs.len()
    }
}

#[cfg(test)]
mod tests {
    use libp2p::PeerId;
    use shoal_pow::IdentityProof;

    use super::*;

    fn proof(n: u64) -> IdentityProof {
        IdentityProof {
            key: shoal_pow::NodeKey::generate().public(),
            nonce: n,
        }
    }

    #[test]
    fn a_departed_proof_is_kept_then_expires() {
        let mut d: Departed<PeerId, IdentityProof> = Departed::default();
        let t0 = Instant::now();
        let peer = PeerId::random();
        d.insert(peer, proof(1), t0);
        assert_eq!(d.get(&peer).map(|p| p.nonce), Some(1));
        d.expire(t0 + DEPARTED_RETENTION - Duration::from_secs(1));
        assert_eq!(d.len(), 1);
        d.expire(t0 + DEPARTED_RETENTION);
        assert_eq!(d.get(&peer), None);
    }

    #[test]
    fn the_oldest_goes_first_when_full() {
        let mut d: Departed<PeerId, IdentityProof> = Departed::default();
        let t0 = Instant::now();
        let peers: Vec<PeerId> = (0..=MAX_DEPARTED).map(|_| PeerId::random()).collect();
        for (i, p) in peers.iter().enumerate() {
            d.insert(*p, proof(i as u64), t0 + Duration::from_millis(i as u64));
        }
        assert_eq!(d.len(), MAX_DEPARTED);
        assert_eq!(d.get(&peers[0]), None, "the oldest was dropped");
        assert!(d.get(&peers[1]).is_some());
        assert!(d.get(&peers[MAX_DEPARTED]).is_some());
        // Inserting a kept member again does not drop anyone.
        d.insert(peers[5], proof(5), t0 + Duration::from_secs(5));
        assert_eq!(d.len(), MAX_DEPARTED);
        assert_eq!(d.remove(&peers[5]).map(|p| p.nonce), Some(5));
        assert_eq!(d.len(), MAX_DEPARTED - 1);
    }
}
