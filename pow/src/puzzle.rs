//! The identity puzzle: the static crypto puzzle of S/Kademlia with a nonce, so a key can be kept.
//!
//! A proof for public key `pk` is a `nonce: u64` such that
//! `scrypt(pk || nonce_le, salt = network id)` has at least `difficulty` leading zero bits.
//! Checking a proof costs one scrypt evaluation; see [`crate::IdentityVerifier`] for the cache and
//! rate limit that make that cost once per peer.

use std::num::NonZeroU32;

use crate::key::{PUBLIC_KEY_LEN, PublicKey};

/// Length in bytes of an encoded [`IdentityProof`].
pub const PROOF_LEN: usize = PUBLIC_KEY_LEN + 8;

/// Largest difficulty a config may ask for. Past 32 bits a proof would take years to mint.
pub const MAX_DIFFICULTY: u8 = 32;

/// Errors from checking an identity proof.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    /// The scrypt output has fewer leading zero bits than the network requires.
    #[error("identity proof has {got} leading zero bits, {required} required")]
    TooFewBits {
        /// Bits the network requires.
        required: u8,
        /// Bits the proof has.
        got: u8,
    },
    /// The proof's bytes could not be decoded (wrong length or not an ed25519 key).
    #[error("malformed identity proof: {0}")]
    Malformed(&'static str),
    /// The proof belongs to another key than the peer presenting it.
    #[error("identity proof is for another key")]
    WrongKey,
    /// Too many unknown peers asked for verification recently; try again later. No scrypt ran.
    #[error("identity verification rate limit reached; retry later")]
    RateLimited,
}

/// Errors in a [`PuzzleConfig`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// scrypt rejected the cost parameters.
    #[error("invalid scrypt parameters (log_n={log_n}, r={r}, p={p})")]
    InvalidScrypt {
        /// log2 of the CPU/memory cost.
        log_n: u8,
        /// Block size.
        r: u32,
        /// Parallelism.
        p: u32,
    },
    /// The difficulty is above [`MAX_DIFFICULTY`].
    #[error("difficulty {0} is above the maximum {MAX_DIFFICULTY}")]
    DifficultyTooHigh(u8),
    /// The network id is empty or longer than 64 bytes.
    #[error("network id must be 1 to 64 bytes")]
    BadNetworkId,
}

/// Parameters of the identity puzzle for one network.
///
/// Every node of a network must use the same values, or proofs will not verify.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PuzzleConfig {
    /// The network id, used as the scrypt salt so that proofs never cross networks.
    /// 1 to 64 bytes. Default: `"shoal-main"`.
    pub network_id: String,
    /// log2 of scrypt's CPU/memory cost `N`. Default 14 (`N = 16384`). Memory per evaluation is
    /// `128 · r · N` bytes: 16 MiB with the defaults.
    pub log_n: u8,
    /// scrypt block size `r`. Default 8.
    pub r: NonZeroU32,
    /// scrypt parallelism `p`. Default 1.
    pub p: NonZeroU32,
    /// Leading zero bits required of the scrypt output, 0 to [`MAX_DIFFICULTY`].
    /// Main network 11 (mean 2048 evaluations, about a minute on one core), testnet 4.
    pub difficulty: u8,
}

impl Default for PuzzleConfig {
    fn default() -> Self {
        Self::mainnet()
    }
}

impl PuzzleConfig {
    /// The main network: difficulty 11.
    ///
    /// 11 is the difficulty whose mean mint time on one core (2^11 evaluations; the median of the
    /// geometric distribution is ln 2 of the mean) is nearest a minute at the measured cost of an
    /// evaluation (docs/benchmarks.md, "Proofs of work"). Difficulty 12 would double it, which
    /// makes `shoal init` a chore without raising a Sybil attacker's cost meaningfully (it scales
    /// linearly in either case).
    pub fn mainnet() -> Self {
        Self {
            network_id: "shoal-main".to_owned(),
            log_n: 14,
            r: NonZeroU32::new(8).expect("8 is non-zero"),
            p: NonZeroU32::MIN,
            difficulty: 11,
        }
    }

    /// A test network: same scrypt cost, difficulty 4 (16 evaluations on average, under a second).
    pub fn testnet() -> Self {
        Self {
            network_id: "shoal-testnet".to_owned(),
            difficulty: 4,
            ..Self::mainnet()
        }
    }

    /// Checks that the parameters are usable.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.network_id.is_empty() || self.network_id.len() > 64 {
            return Err(ConfigError::BadNetworkId);
        }
        if self.difficulty > MAX_DIFFICULTY {
            return Err(ConfigError::DifficultyTooHigh(self.difficulty));
        }
        self.scrypt_params().map(|_| ())
    }

    pub(crate) fn scrypt_params(&self) -> Result<scrypt::Params, ConfigError> {
        scrypt::Params::new(self.log_n, self.r.get(), self.p.get(), 32).map_err(|_| {
            ConfigError::InvalidScrypt {
                log_n: self.log_n,
                r: self.r.get(),
                p: self.p.get(),
            }
        })
    }
}

/// A prepared puzzle: a validated config with its scrypt parameters ready.
#[derive(Debug, Clone)]
pub struct Puzzle {
    config: PuzzleConfig,
    params: scrypt::Params,
}

impl Puzzle {
    /// Validates `config` and prepares it.
    pub fn new(config: PuzzleConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        let params = config.scrypt_params()?;
        Ok(Self { config, params })
    }

    /// The config this puzzle was built from.
    pub fn config(&self) -> &PuzzleConfig {
        &self.config
    }

    /// One scrypt evaluation: the 32-byte output for `key` and `nonce`.
    pub fn evaluate(&self, key: &PublicKey, nonce: u64) -> [u8; 32] {
        let mut input = [0u8; PROOF_LEN];
        input[..PUBLIC_KEY_LEN].copy_from_slice(&key.to_bytes());
        input[PUBLIC_KEY_LEN..].copy_from_slice(&nonce.to_le_bytes());
        let mut out = [0u8; 32];
        // Invariant: the output length 32 is the one the params were built for.
        scrypt::scrypt(
            &input,
            self.config.network_id.as_bytes(),
            &self.params,
            &mut out,
        )
        .expect("output length matches params");
        out
    }

    /// Checks `proof` with one scrypt evaluation. Prefer [`crate::IdentityVerifier`] for peers:
    /// it caches and rate-limits.
    pub fn verify(&self, proof: &IdentityProof) -> Result<(), ProofError> {
        let got = leading_zero_bits(&self.evaluate(&proof.key, proof.nonce));
        if got < self.config.difficulty {
            return Err(ProofError::TooFewBits {
                required: self.config.difficulty,
                got,
            });
        }
        Ok(())
    }
}

/// A key together with the nonce that solves the puzzle for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IdentityProof {
    /// The node's public key.
    pub key: PublicKey,
    /// The solving nonce.
    pub nonce: u64,
}

impl IdentityProof {
    /// Encodes as 40 bytes: the key then the nonce, little-endian.
    pub fn to_bytes(&self) -> [u8; PROOF_LEN] {
        let mut out = [0u8; PROOF_LEN];
        out[..PUBLIC_KEY_LEN].copy_from_slice(&self.key.to_bytes());
        out[PUBLIC_KEY_LEN..].copy_from_slice(&self.nonce.to_le_bytes());
        out
    }

    /// Decodes [`IdentityProof::to_bytes`]; any other length or an invalid key is an error.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ProofError> {
        if bytes.len() != PROOF_LEN {
            return Err(ProofError::Malformed("identity proof must be 40 bytes"));
        }
        let (key, nonce) = bytes.split_at(PUBLIC_KEY_LEN);
        let key = PublicKey::try_from_slice(key)
            .map_err(|_| ProofError::Malformed("not an ed25519 public key"))?;
        // Invariant: split_at(32) of a 40-byte slice leaves exactly 8 bytes.
        let nonce = u64::from_le_bytes(nonce.try_into().expect("8 bytes"));
        Ok(Self { key, nonce })
    }
}

/// Number of leading zero bits of `bytes`, most significant bit of the first byte first.
pub fn leading_zero_bits(bytes: &[u8]) -> u8 {
    let mut bits: u32 = 0;
    for &b in bytes {
        if b == 0 {
            bits += 8;
        } else {
            bits += b.leading_zeros();
            break;
        }
    }
    u8::try_from(bits).unwrap_or(u8::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::NodeKey;

    #[test]
    fn leading_zero_bits_counts() {
        assert_eq!(leading_zero_bits(&[0x80]), 0);
        assert_eq!(leading_zero_bits(&[0x01]), 7);
        assert_eq!(leading_zero_bits(&[0, 0x10]), 11);
        assert_eq!(leading_zero_bits(&[0, 0]), 16);
        assert_eq!(leading_zero_bits(&[0u8; 40]), u8::MAX);
    }

    #[test]
    fn presets_validate() {
        PuzzleConfig::mainnet().validate().unwrap();
        PuzzleConfig::testnet().validate().unwrap();
        let bad = PuzzleConfig {
            difficulty: 33,
            ..PuzzleConfig::testnet()
        };
        assert_eq!(bad.validate(), Err(ConfigError::DifficultyTooHigh(33)));
        let bad = PuzzleConfig {
            network_id: String::new(),
            ..PuzzleConfig::testnet()
        };
        assert_eq!(bad.validate(), Err(ConfigError::BadNetworkId));
        let bad = PuzzleConfig {
            log_n: 64,
            ..PuzzleConfig::testnet()
        };
        assert!(matches!(
            bad.validate(),
            Err(ConfigError::InvalidScrypt { .. })
        ));
    }

    #[test]
    fn proof_bytes_round_trip_and_refuse_bad_lengths() {
        let proof = IdentityProof {
            key: NodeKey::generate().public(),
            nonce: 0x0102_0304_0506_0708,
        };
        assert_eq!(IdentityProof::from_bytes(&proof.to_bytes()).unwrap(), proof);
        assert!(IdentityProof::from_bytes(&proof.to_bytes()[..39]).is_err());
        assert!(IdentityProof::from_bytes(&[0u8; 41]).is_err());
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(32))]

        /// A minted proof verifies; changing its nonce or its key makes it fail, unless the
        /// change happens to land on another genuine solution (odds 2^-10 a case), which the test
        /// recognises by evaluating the puzzle for the changed proof.
        #[test]
        fn changing_a_proof_breaks_it(seed in proptest::prelude::any::<[u8; 32]>(),
                                      flip in 1u64..,
                                      change_key in proptest::prelude::any::<bool>()) {
            use crate::mint::{CancelToken, MintOptions, mint};
            let puzzle = Puzzle::new(PuzzleConfig { log_n: 4, difficulty: 10, ..PuzzleConfig::testnet() })
                .unwrap();
            let key = NodeKey::from_seed(seed).public();
            let options = MintOptions { threads: std::num::NonZeroUsize::MIN, ..MintOptions::default() };
            let proof = mint(&puzzle, &key, &options, &CancelToken::new(), |_| {}).unwrap().proof;
            proptest::prop_assert!(puzzle.verify(&proof).is_ok());
            let mut changed = proof;
            if change_key {
                let mut other = seed;
                other[0] ^= 1;
                changed.key = NodeKey::from_seed(other).public();
            } else {
                changed.nonce ^= flip;
            }
            let genuine = leading_zero_bits(&puzzle.evaluate(&changed.key, changed.nonce)) >= 10;
            proptest::prop_assert_eq!(puzzle.verify(&changed).is_ok(), genuine);
            if !genuine {
                let is_too_few_bits = matches!(
                    puzzle.verify(&changed),
                    Err(ProofError::TooFewBits { required: 10, .. })
                );
                proptest::prop_assert!(is_too_few_bits);
            }
        }
    }

    #[test]
    fn network_id_is_the_salt() {
        let key = NodeKey::from_seed([7; 32]).public();
        let a = Puzzle::new(PuzzleConfig::testnet()).unwrap();
        let b = Puzzle::new(PuzzleConfig {
            network_id: "other".into(),
            ..PuzzleConfig::testnet()
        })
        .unwrap();
        assert_ne!(a.evaluate(&key, 1), b.evaluate(&key, 1));
        assert_eq!(a.evaluate(&key, 1), a.evaluate(&key, 1));
    }
}
