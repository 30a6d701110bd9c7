//! What the core consults about libp2p peers: identity proofs, checked with the verifier the
//! gate shares (one cache, one rate limit for proofs met on connections and relayed ones), and
//! which addresses this node's transport can reach.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};
use shoal_pow::{IdentityProof, IdentityVerifier, ProofError};
use shoal_swim::Address;

use crate::core::Checks;

/// The identity verifier shared by the gate and the core.
pub type SharedVerifier = Arc<Mutex<IdentityVerifier>>;

/// The [`Checks`] of a libp2p node.
#[derive(Debug, Clone)]
pub struct NodeChecks {
    verifier: SharedVerifier,
}

impl NodeChecks {
    /// Checks backed by `verifier` (the gate's).
    pub fn new(verifier: SharedVerifier) -> Self {
        Self { verifier }
    }

    /// The verifier's counters.
    pub fn stats(&self) -> shoal_pow::VerifierStats {
        lock(&self.verifier).stats()
    }
}

/// Locks the verifier. A panic while it was held (a bug) leaves its caches usable: they hold
/// only completed checks.
pub(crate) fn lock(verifier: &SharedVerifier) -> std::sync::MutexGuard<'_, IdentityVerifier> {
    verifier
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Checks<PeerId> for NodeChecks {
    type Proof = IdentityProof;

    fn verify(
        &mut self,
        now: Instant,
        peer: &PeerId,
        bytes: &[u8],
    ) -> Result<IdentityProof, ProofError> {
        let proof = IdentityProof::from_bytes(bytes)?;
        lock(&self.verifier).verify_peer(now, peer, &proof)?;
        Ok(proof)
    }

    fn proof_bytes(&self, _peer: &PeerId, proof: &IdentityProof) -> Vec<u8> {
        proof.to_bytes().to_vec()
    }

    fn reachable(&self, ours: &[Address], theirs: &[Address]) -> bool {
        let ours: Vec<AddressKind> = ours.iter().filter_map(kind_of).collect();
        ours.is_empty() || theirs.iter().filter_map(kind_of).any(|k| ours.contains(&k))
    }
}

/// The kinds of address a transport dials, told apart by an address's first protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AddressKind {
    Ip,
    Onion,
    Memory,
}

fn kind_of(addr: &Address) -> Option<AddressKind> {
    let addr = Multiaddr::try_from(addr.0.clone()).ok()?;
    address_kind(&addr)
}

fn address_kind(addr: &Multiaddr) -> Option<AddressKind> {
    match addr.iter().next()? {
        Protocol::Ip4(_)
        | Protocol::Ip6(_)
        | Protocol::Dns(_)
        | Protocol::Dns4(_)
        | Protocol::Dns6(_)
        | Protocol::Dnsaddr(_) => Some(AddressKind::Ip),
        Protocol::Onion3(_) | Protocol::Onion(..) => Some(AddressKind::Onion),
        Protocol::Memory(_) => Some(AddressKind::Memory),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_kinds() {
        let kind = |a: &str| address_kind(&a.parse().unwrap());
        assert_eq!(kind("/ip4/127.0.0.1/tcp/4001"), Some(AddressKind::Ip));
        assert_eq!(kind("/dns4/example.org/tcp/4001"), Some(AddressKind::Ip));
        assert_eq!(
            kind("/onion3/vww6ybal4bd7szmgncyruucpgfkqahzddi37ktceo3ah7ngmcopnpyyd:4001"),
            Some(AddressKind::Onion)
        );
        assert_eq!(kind("/memory/7"), Some(AddressKind::Memory));
    }

    #[test]
    fn reachability_follows_the_kinds_this_node_listens_on() {
        let addr = |a: &str| Address(a.parse::<Multiaddr>().unwrap().to_vec());
        let tcp = addr("/ip4/127.0.0.1/tcp/4001");
        let onion = addr("/onion3/vww6ybal4bd7szmgncyruucpgfkqahzddi37ktceo3ah7ngmcopnpyyd:4001");
        let checks = NodeChecks::new(Arc::new(Mutex::new(IdentityVerifier::new(
            shoal_pow::Puzzle::new(shoal_pow::PuzzleConfig::testnet()).unwrap(),
            shoal_pow::VerifierConfig::default(),
        ))));
        assert!(checks.reachable(&[], std::slice::from_ref(&onion)));
        assert!(!checks.reachable(std::slice::from_ref(&tcp), std::slice::from_ref(&onion)));
        assert!(checks.reachable(&[tcp.clone(), onion.clone()], &[onion]));
        assert!(checks.reachable(std::slice::from_ref(&tcp), std::slice::from_ref(&tcp)));
    }
}
