//! The node key as an onion service identity key.
//!
//! The onion service key *is* the node's ed25519 key: Tor expands the 32-byte ed25519 seed with
//! SHA-512 exactly as ed25519 signing does, so the onion service's public key equals the
//! libp2p [`PeerId`](libp2p::identity::PeerId)'s public key, and `/onion3/<addr>` and the PeerId
//! name the same key.

use tor_hscrypto::pk::{HsIdKey, HsIdKeypair};
use tor_llcrypto::pk::ed25519 as tor_ed25519;
use zeroize::Zeroizing;

/// Why a libp2p key cannot serve as a node key.
///
/// Nothing is changed by the refusal.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum KeyError {
    /// Only ed25519 keys can be onion service keys.
    #[error("the libp2p key is not an ed25519 key; onion services need ed25519")]
    NotEd25519,
}

/// Extracts the ed25519 signing key from a libp2p keypair.
pub fn signing_key_from_libp2p(
    keypair: &libp2p::identity::Keypair,
) -> Result<ed25519_dalek::SigningKey, KeyError> {
    let ed = keypair
        .clone()
        .try_into_ed25519()
        .map_err(|_| KeyError::NotEd25519)?;
    let secret = ed.secret();
    let seed: &[u8] = secret.as_ref();
    // Invariant: a libp2p ed25519 secret key is exactly 32 bytes.
    let seed: Zeroizing<[u8; 32]> =
        Zeroizing::new(seed.try_into().expect("ed25519 secret key is 32 bytes"));
    Ok(ed25519_dalek::SigningKey::from_bytes(&seed))
}

/// The onion service identity keypair whose public key is `key`'s verifying key.
pub(crate) fn onion_keypair(key: &ed25519_dalek::SigningKey) -> HsIdKeypair {
    let seed = Zeroizing::new(key.to_bytes());
    let tor_key = tor_ed25519::Keypair::from_bytes(&seed);
    let expanded = tor_ed25519::ExpandedKeypair::from(&tor_key);
    HsIdKeypair::from(expanded)
}

/// The 32 public key bytes of an onion service identity keypair.
pub(crate) fn onion_public_bytes(keypair: &HsIdKeypair) -> [u8; 32] {
    let public = HsIdKey::from(keypair);
    *public.id().as_ref()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_onion_key_is_the_node_key() {
        for seed in [[0u8; 32], [1u8; 32], [0xa5; 32]] {
            let node = ed25519_dalek::SigningKey::from_bytes(&seed);
            let onion = onion_keypair(&node);
            assert_eq!(onion_public_bytes(&onion), node.verifying_key().to_bytes());
        }
    }

    #[test]
    fn a_libp2p_key_gives_the_same_public_key() {
        let kp = libp2p::identity::Keypair::generate_ed25519();
        let node = signing_key_from_libp2p(&kp).expect("ed25519 keypair");
        let ed = kp.public().try_into_ed25519().expect("ed25519 public key");
        assert_eq!(node.verifying_key().to_bytes(), ed.to_bytes());
        assert_eq!(
            onion_public_bytes(&onion_keypair(&node)),
            node.verifying_key().to_bytes()
        );
    }
}
