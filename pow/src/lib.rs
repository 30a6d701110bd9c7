//! Shoal's proofs of work: node keys, the identity puzzle and hashcash stamps.
//!
//! This crate does no networking and knows nothing of libp2p (`shoal_dht::identity` gives these
//! keys their libp2p forms). It gives the DHT and the node:
//!
//! - [`NodeKey`] / [`PublicKey`]: the ed25519 key that is a node's libp2p identity, signs its
//!   records and, on Tor, is its onion service key. Saved with mode 0600; a key file readable by
//!   others is refused.
//! - The identity puzzle ([`Puzzle`], [`PuzzleConfig`]): a proof is a nonce such that
//!   `scrypt(pubkey || nonce, salt = network id)` has `difficulty` leading zero bits. [`mint`]
//!   searches on every core with progress and cancellation; [`IdentityVerifier`] checks peers'
//!   proofs with one scrypt evaluation per new peer, a bounded cache and a rate limit.
//! - Hashcash stamps ([`Stamp`], [`StampPolicy`], [`StampChecker`]): version-1 stamps over
//!   SHA-256 whose resource binds sender, target, method and payload; bits per
//!   [`MessageClass`]; a validity window, a future skew and a bounded replay cache.
//!
//! # Time
//!
//! Nothing here reads the clock on a verification path: [`IdentityVerifier::verify`] takes an
//! [`std::time::Instant`] for its rate limit and [`StampChecker::check`] takes Unix seconds.
//! [`unix_now`] reads the system clock for callers that need it.
//!
//! # Caveats
//!
//! - A stamp proves work, not honesty: the DHT must still check signatures.
//! - When the replay cache is full of unexpired stamps, new stamps are refused
//!   ([`StampError::ReplayCacheFull`]) rather than risk a replay. Size it for the expected
//!   rate × validity window.

mod date;
mod key;
mod mint;
mod policy;
mod puzzle;
mod replay;
mod stamp;
mod verifier;

pub use key::{KeyError, NodeKey, PUBLIC_KEY_LEN, PublicKey, SIGNATURE_LEN};
pub use mint::{CancelToken, MintError, MintOptions, MintProgress, Minted, mint};
pub use policy::{MessageClass, PolicyError, StampChecker, StampPolicy};
pub use puzzle::{
    ConfigError, IdentityProof, MAX_DIFFICULTY, PROOF_LEN, ProofError, Puzzle, PuzzleConfig,
    leading_zero_bits,
};
pub use stamp::{MAX_EXT_LEN, MAX_RAND_LEN, MAX_STAMP_LEN, Resource, Stamp, StampError};
pub use verifier::{Check, IdentityVerifier, Verification, VerifierConfig, VerifierStats};

/// The system clock in Unix seconds (0 if the clock is before 1970).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
