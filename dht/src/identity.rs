//! A node key as libp2p sees it: its `PeerId`, its `Keypair`, and the way back.
//!
//! `shoal-pow` holds the ed25519 keys and knows nothing of libp2p; these extension traits are
//! the one place their libp2p forms are made. Bring them into scope (`use
//! shoal_dht::identity::{NodeKeyExt, PublicKeyExt}`) to call `key.peer_id()` or
//! `key.to_libp2p()` on a [`NodeKey`] or a [`PublicKey`].

use libp2p::PeerId;
use libp2p::identity::{self, Keypair};
use shoal_pow::{KeyError, NodeKey, PublicKey};

/// The libp2p forms of a node's secret key.
pub trait NodeKeyExt: Sized {
    /// The libp2p PeerId of this key.
    fn peer_id(&self) -> PeerId;

    /// The same key as a libp2p keypair, for building a swarm.
    fn to_libp2p(&self) -> Keypair;

    /// Recovers the key from a libp2p keypair; fails for non-ed25519 keypairs.
    fn from_libp2p(keypair: &Keypair) -> Result<Self, KeyError>;
}

impl NodeKeyExt for NodeKey {
    fn peer_id(&self) -> PeerId {
        self.public().peer_id()
    }

    fn to_libp2p(&self) -> Keypair {
        let mut seed = self.seed();
        // Invariant: any 32 bytes are a valid ed25519 seed.
        let secret = identity::ed25519::SecretKey::try_from_bytes(&mut seed)
            .expect("32-byte seed is always a valid ed25519 secret");
        Keypair::from(identity::ed25519::Keypair::from(secret))
    }

    fn from_libp2p(keypair: &Keypair) -> Result<Self, KeyError> {
        let ed = keypair
            .clone()
            .try_into_ed25519()
            .map_err(|_| KeyError::InvalidPublicKey)?;
        let secret = ed.secret();
        let seed: [u8; 32] = secret
            .as_ref()
            .try_into()
            .map_err(|_| KeyError::InvalidPublicKey)?;
        Ok(Self::from_seed(seed))
    }
}

/// The libp2p forms of a node's public key.
pub trait PublicKeyExt: Sized {
    /// The libp2p PeerId of this key.
    fn peer_id(&self) -> PeerId;

    /// The key as libp2p sees it.
    fn to_libp2p(&self) -> identity::PublicKey;

    /// Recovers the key from a libp2p public key; fails for non-ed25519 keys.
    fn from_libp2p(key: &identity::PublicKey) -> Result<Self, KeyError>;

    /// Recovers the key from a PeerId (ed25519 PeerIds inline their key).
    fn from_peer_id(peer: &PeerId) -> Result<Self, KeyError>;
}

impl PublicKeyExt for PublicKey {
    fn peer_id(&self) -> PeerId {
        self.to_libp2p().to_peer_id()
    }

    fn to_libp2p(&self) -> identity::PublicKey {
        // Invariant: a PublicKey's bytes are always a valid ed25519 point.
        let ed = identity::ed25519::PublicKey::try_from_bytes(&self.to_bytes())
            .expect("a verified ed25519 key converts");
        identity::PublicKey::from(ed)
    }

    fn from_libp2p(key: &identity::PublicKey) -> Result<Self, KeyError> {
        let ed = key
            .clone()
            .try_into_ed25519()
            .map_err(|_| KeyError::InvalidPublicKey)?;
        Self::from_bytes(&ed.to_bytes())
    }

    fn from_peer_id(peer: &PeerId) -> Result<Self, KeyError> {
        let multihash = peer.as_ref();
        // An inlined key uses the identity multihash (code 0) over the protobuf-encoded key.
        if multihash.code() != 0 {
            return Err(KeyError::InvalidPublicKey);
        }
        let key = identity::PublicKey::try_decode_protobuf(multihash.digest())
            .map_err(|_| KeyError::InvalidPublicKey)?;
        Self::from_libp2p(&key)
    }
}

/// The bytes of an ed25519 key's PeerId before the key's own 32: the identity multihash
/// (code 0, 36 bytes) of the protobuf-encoded key (type 1, ed25519; data of 32 bytes).
const ED25519_PEER_ID_PREFIX: [u8; 6] = [0x00, 0x24, 0x08, 0x01, 0x12, 0x20];

/// Whether `peer` is `key`'s PeerId, compared as bytes: an ed25519 PeerId inlines its key, so
/// nothing is decompressed (what [`PublicKeyExt::from_peer_id`] would cost twice, for every
/// receipt a put is answered with).
pub fn is_peer_of(peer: &PeerId, key: &PublicKey) -> bool {
    let bytes = peer.to_bytes();
    bytes.len() == ED25519_PEER_ID_PREFIX.len() + 32
        && bytes[..ED25519_PEER_ID_PREFIX.len()] == ED25519_PEER_ID_PREFIX
        && bytes[ED25519_PEER_ID_PREFIX.len()..] == key.to_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_id_round_trips() {
        let key = NodeKey::generate();
        let peer = key.peer_id();
        assert_eq!(peer, key.to_libp2p().public().to_peer_id());
        assert_eq!(PublicKey::from_peer_id(&peer).unwrap(), key.public());
        let back = NodeKey::from_libp2p(&key.to_libp2p()).unwrap();
        assert_eq!(back.seed(), key.seed());
    }

    #[test]
    fn a_peer_id_is_told_from_its_key_by_its_bytes() {
        let keys: Vec<NodeKey> = (0..20u8).map(|i| NodeKey::from_seed([i; 32])).collect();
        for (i, key) in keys.iter().enumerate() {
            let peer = key.peer_id();
            assert!(is_peer_of(&peer, &key.public()));
            let other = &keys[(i + 1) % keys.len()];
            assert!(!is_peer_of(&peer, &other.public()));
        }
        assert!(!is_peer_of(&PeerId::random(), &keys[0].public()));
    }

    #[test]
    fn a_peer_id_that_inlines_no_key_has_no_public_key() {
        // Random bytes under the identity multihash: not a protobuf-encoded key.
        assert!(PublicKey::from_peer_id(&PeerId::random()).is_err());
    }
}
