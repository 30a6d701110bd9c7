//! Proofs of members SWIM declared failed or gone, kept a while in case they come back.
//!
//! A member declared failed is often alive: it was slow, or the messages about it were lost,
//! and it refutes within seconds. Had its proof been dropped with it, every node that heard
//! the refutation would ask for the proof again, and the node that named it, which may have
//! dropped it too, would leave no way but dialing: after many false failures at once, a storm
//! of dials that slows the network into more of them. A kept proof readmits the member at once.
//! The set is bounded in size and age; a member refused by the gate is removed for good.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use libp2p::PeerId;
use shoal_pow::IdentityProof;

/// Departed members' proofs kept, at most; the oldest goes first.
pub(super) const MAX_DEPARTED: usize = 1024;

/// How long a departed member's proof is kept (SWIM's LAN `dead_retention`).
pub(super) const DEPARTED_RETENTION: Duration = Duration::from_secs(600);

/// The proofs of departed members, with when each departed.
#[derive(Debug, Default)]
pub(super) struct Departed {
    proofs: HashMap<PeerId, (IdentityProof, Instant)>,
}

impl Departed {
    /// Keeps `peer`'s proof from `now`, dropping the longest-departed member if full.
    pub(super) fn insert(&mut self, peer: PeerId, proof: IdentityProof, now: Instant) {
        if !self.proofs.contains_key(&peer) && self.proofs.len() >= MAX_DEPARTED {
            let oldest = self
                .proofs
                .iter()
                .min_by_key(|(_, (_, at))| *at)
                .map(|(p, _)| *p);
            if let Some(oldest) = oldest {
                self.proofs.remove(&oldest);
            }
        }
        self.proofs.insert(peer, (proof, now));
    }

    /// The proof of `peer`, if it departed lately.
    pub(super) fn get(&self, peer: &PeerId) -> Option<IdentityProof> {
        self.proofs.get(peer).map(|(proof, _)| *proof)
    }

    /// Removes `peer` (it came back, or was refused), giving back its proof.
    pub(super) fn remove(&mut self, peer: &PeerId) -> Option<IdentityProof> {
        self.proofs.remove(peer).map(|(proof, _)| proof)
    }

    /// Drops the proofs kept longer than [`DEPARTED_RETENTION`] and gives back their memory.
    pub(super) fn expire(&mut self, now: Instant) {
        self.proofs
            .retain(|_, (_, at)| now.saturating_duration_since(*at) < DEPARTED_RETENTION);
        super::admission::shrink_sparse(&mut self.proofs);
    }

    /// How many proofs are kept.
    pub(super) fn len(&self) -> usize {
        self.proofs.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proof(n: u64) -> IdentityProof {
        IdentityProof {
            key: shoal_pow::NodeKey::generate().public(),
            nonce: n,
        }
    }

    #[test]
    fn a_departed_proof_is_kept_then_expires() {
        let mut d = Departed::default();
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
        let mut d = Departed::default();
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
