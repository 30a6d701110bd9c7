//! Checking peers' identity proofs: one scrypt evaluation per new peer, never per message.
//!
//! [`IdentityVerifier`] remembers the keys it has verified (a bounded LRU cache) and the proofs
//! it has refused, and rate-limits the scrypt evaluations spent on unknown peers with a token
//! bucket. Time comes in as an argument.

use std::num::{NonZeroU32, NonZeroUsize};
use std::time::{Duration, Instant};

use lru::LruCache;

use crate::key::PublicKey;
use crate::puzzle::{IdentityProof, ProofError, Puzzle};

/// Limits of an [`IdentityVerifier`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifierConfig {
    /// Verified keys remembered, least recently used evicted first. Default 16,384 (about 1 MiB).
    pub cache_capacity: NonZeroUsize,
    /// Refused proofs remembered, so a peer repeating a bad proof costs no scrypt. Default 1,024.
    pub rejected_capacity: NonZeroUsize,
    /// Sustained scrypt evaluations per second allowed for unknown peers. Default 20: less than
    /// one core's worth at the measured cost of an evaluation (docs/benchmarks.md, "Proofs of
    /// work"), so unknown peers cannot take a whole core.
    pub rate_per_second: NonZeroU32,
    /// Evaluations allowed in a burst above the sustained rate. Default 40.
    pub burst: NonZeroU32,
}

impl Default for VerifierConfig {
    fn default() -> Self {
        Self {
            cache_capacity: NonZeroUsize::new(16_384).expect("non-zero"),
            rejected_capacity: NonZeroUsize::new(1_024).expect("non-zero"),
            rate_per_second: NonZeroU32::new(20).expect("non-zero"),
            burst: NonZeroU32::new(40).expect("non-zero"),
        }
    }
}

/// How a proof was accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verification {
    /// The key was already verified; no scrypt ran.
    Cached,
    /// The proof was checked now with one scrypt evaluation.
    Verified,
}

/// Counters of an [`IdentityVerifier`], for metrics and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VerifierStats {
    /// scrypt evaluations run.
    pub scrypt_evaluations: u64,
    /// Proofs accepted from the cache.
    pub cache_hits: u64,
    /// Proofs refused (too few bits, wrong key, or a remembered refusal).
    pub rejected: u64,
    /// Verifications refused by the rate limit.
    pub rate_limited: u64,
    /// Time spent in scrypt evaluations, in microseconds.
    pub scrypt_micros: u64,
}

/// What checking a proof needs next ([`IdentityVerifier::begin`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// Decided without an evaluation.
    Done(Verification),
    /// One scrypt evaluation ([`Puzzle::verify`]); a token of the rate limit was taken for it.
    Evaluate,
}

/// Verifies identity proofs with a cache and a rate limit.
#[derive(Debug)]
pub struct IdentityVerifier {
    puzzle: Puzzle,
    verified: LruCache<PublicKey, ()>,
    rejected: LruCache<IdentityProof, ProofError>,
    /// Bounds of the two caches, kept by hand: `LruCache::new` would allocate the whole table up
    /// front (over half a MiB at the default 16,384), which a node holding a few hundred peers,
    /// or a thousand nodes in one test process, should not pay.
    capacity: (usize, usize),
    bucket: TokenBucket,
    stats: VerifierStats,
}

impl IdentityVerifier {
    /// A verifier for `puzzle`'s network.
    pub fn new(puzzle: Puzzle, config: VerifierConfig) -> Self {
        Self {
            puzzle,
            verified: LruCache::unbounded(),
            rejected: LruCache::unbounded(),
            capacity: (config.cache_capacity.get(), config.rejected_capacity.get()),
            bucket: TokenBucket::new(config.rate_per_second, config.burst),
            stats: VerifierStats::default(),
        }
    }

    /// Checks `proof`. A key verified before is accepted without scrypt (whatever the nonce: the
    /// key has shown a valid one); an unknown key costs one evaluation, if the rate limit allows.
    pub fn verify(
        &mut self,
        now: Instant,
        proof: &IdentityProof,
    ) -> Result<Verification, ProofError> {
        match self.begin(now, proof)? {
            Check::Done(how) => Ok(how),
            Check::Evaluate => {
                let started = Instant::now();
                let outcome = self.puzzle.verify(proof);
                self.finish(proof, outcome, started.elapsed())
            }
        }
    }

    /// What can be told of `proof` without an evaluation or a token of the rate limit: `Some`
    /// when the key is known valid or the proof was refused before, `None` when it needs one.
    pub fn cached(&mut self, proof: &IdentityProof) -> Option<Result<Verification, ProofError>> {
        if self.verified.get(&proof.key).is_some() {
            self.stats.cache_hits += 1;
            return Some(Ok(Verification::Cached));
        }
        if let Some(err) = self.rejected.get(proof) {
            self.stats.rejected += 1;
            return Some(Err(err.clone()));
        }
        None
    }

    /// The first half of a check that runs its evaluation elsewhere (off a protocol loop, without
    /// holding the verifier): the cached answer, or a token of the rate limit taken for an
    /// evaluation whose outcome goes to [`Self::finish`]. [`Self::verify`] is both halves.
    pub fn begin(&mut self, now: Instant, proof: &IdentityProof) -> Result<Check, ProofError> {
        if let Some(known) = self.cached(proof) {
            return known.map(Check::Done);
        }
        if !self.bucket.take(now) {
            self.stats.rate_limited += 1;
            return Err(ProofError::RateLimited);
        }
        Ok(Check::Evaluate)
    }

    /// Records the outcome of an evaluation [`Self::begin`] asked for, which took `spent`.
    pub fn finish(
        &mut self,
        proof: &IdentityProof,
        outcome: Result<(), ProofError>,
        spent: Duration,
    ) -> Result<Verification, ProofError> {
        self.stats.scrypt_evaluations += 1;
        self.stats.scrypt_micros = self
            .stats
            .scrypt_micros
            .saturating_add(u64::try_from(spent.as_micros()).unwrap_or(u64::MAX));
        match outcome {
            Ok(()) => {
                if self.verified.len() >= self.capacity.0 {
                    self.verified.pop_lru();
                }
                self.verified.put(proof.key, ());
                Ok(Verification::Verified)
            }
            Err(err) => {
                self.stats.rejected += 1;
                if self.rejected.len() >= self.capacity.1 {
                    self.rejected.pop_lru();
                }
                self.rejected.put(*proof, err.clone());
                Err(err)
            }
        }
    }

    /// Checks that `proof` is for `peer_key`, then verifies it as [`Self::verify`] does.
    ///
    /// `peer_key` is the key the peer's connection authenticated (recovered from its libp2p
    /// `PeerId` by `shoal_dht::identity::PublicKeyExt::from_peer_id`); `None` when that identity
    /// is no ed25519 key, which no proof is for.
    pub fn verify_peer(
        &mut self,
        now: Instant,
        peer_key: Option<PublicKey>,
        proof: &IdentityProof,
    ) -> Result<Verification, ProofError> {
        self.check_key(peer_key, proof)?;
        self.verify(now, proof)
    }

    /// Refuses, without scrypt, a proof that is not for `peer_key` (as [`Self::verify_peer`]
    /// takes it).
    pub fn check_key(
        &mut self,
        peer_key: Option<PublicKey>,
        proof: &IdentityProof,
    ) -> Result<(), ProofError> {
        if peer_key != Some(proof.key) {
            self.stats.rejected += 1;
            return Err(ProofError::WrongKey);
        }
        Ok(())
    }

    /// Whether `key` is known to hold a valid proof (does not touch the LRU order).
    pub fn is_verified(&self, key: &PublicKey) -> bool {
        self.verified.contains(key)
    }

    /// Forgets `key`, so its next proof is checked again.
    pub fn forget(&mut self, key: &PublicKey) {
        self.verified.pop(key);
    }

    /// The counters so far.
    pub fn stats(&self) -> VerifierStats {
        self.stats
    }

    /// The puzzle this verifier checks.
    pub fn puzzle(&self) -> &Puzzle {
        &self.puzzle
    }
}

/// A token bucket on caller-supplied time.
#[derive(Debug)]
struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Option<Instant>,
}

impl TokenBucket {
    fn new(rate: NonZeroU32, burst: NonZeroU32) -> Self {
        Self {
            rate: f64::from(rate.get()),
            burst: f64::from(burst.get()),
            tokens: f64::from(burst.get()),
            last: None,
        }
    }

    fn take(&mut self, now: Instant) -> bool {
        if let Some(last) = self.last {
            let elapsed = now.saturating_duration_since(last).as_secs_f64();
            self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        }
        // Time never runs backwards for the bucket: an earlier `now` adds nothing.
        self.last = Some(self.last.map_or(now, |last| last.max(now)));
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::NodeKey;
    use crate::mint::{CancelToken, MintOptions, mint};
    use crate::puzzle::PuzzleConfig;

    fn puzzle() -> Puzzle {
        Puzzle::new(PuzzleConfig {
            log_n: 4,
            difficulty: 6,
            ..PuzzleConfig::testnet()
        })
        .unwrap()
    }

    fn minted(key: &NodeKey) -> IdentityProof {
        mint(
            &puzzle(),
            &key.public(),
            &MintOptions::default(),
            &CancelToken::new(),
            |_| {},
        )
        .unwrap()
        .proof
    }

    #[test]
    fn second_check_of_a_peer_costs_no_scrypt() {
        let key = NodeKey::generate();
        let proof = minted(&key);
        let mut v = IdentityVerifier::new(puzzle(), VerifierConfig::default());
        let now = Instant::now();
        assert_eq!(
            v.verify_peer(now, Some(key.public()), &proof),
            Ok(Verification::Verified)
        );
        for _ in 0..100 {
            assert_eq!(
                v.verify_peer(now, Some(key.public()), &proof),
                Ok(Verification::Cached)
            );
        }
        assert_eq!(v.stats().scrypt_evaluations, 1);
        assert_eq!(v.stats().cache_hits, 100);
    }

    #[test]
    fn a_check_split_around_its_evaluation_records_like_one_call() {
        let key = NodeKey::generate();
        let proof = minted(&key);
        let mut v = IdentityVerifier::new(puzzle(), VerifierConfig::default());
        let now = Instant::now();
        assert_eq!(v.cached(&proof), None);
        assert_eq!(v.begin(now, &proof), Ok(Check::Evaluate));
        // The evaluation runs without the verifier, as a worker thread runs it.
        let outcome = v.puzzle().clone().verify(&proof);
        assert_eq!(
            v.finish(&proof, outcome, Duration::from_millis(3)),
            Ok(Verification::Verified)
        );
        assert_eq!(v.cached(&proof), Some(Ok(Verification::Cached)));
        assert_eq!(v.begin(now, &proof), Ok(Check::Done(Verification::Cached)));
        assert_eq!(v.stats().scrypt_evaluations, 1);
        assert_eq!(v.stats().scrypt_micros, 3_000);

        let mut bad = proof;
        while v.puzzle().verify(&bad).is_ok() {
            bad.nonce = bad.nonce.wrapping_add(1);
        }
        let mut fresh = IdentityVerifier::new(puzzle(), VerifierConfig::default());
        assert_eq!(fresh.begin(now, &bad), Ok(Check::Evaluate));
        let outcome = fresh.puzzle().verify(&bad);
        let refused = fresh.finish(&bad, outcome, Duration::ZERO).unwrap_err();
        assert_eq!(fresh.cached(&bad), Some(Err(refused)));
    }

    #[test]
    fn refused_proof_is_remembered() {
        let key = NodeKey::generate();
        let mut proof = minted(&key);
        let p = puzzle();
        // Find a nonce that does not solve the puzzle.
        while p.verify(&proof).is_ok() {
            proof.nonce = proof.nonce.wrapping_add(1);
        }
        let mut v = IdentityVerifier::new(p, VerifierConfig::default());
        let now = Instant::now();
        let first = v.verify(now, &proof).unwrap_err();
        assert!(matches!(first, ProofError::TooFewBits { required: 6, .. }));
        assert_eq!(v.verify(now, &proof).unwrap_err(), first);
        assert_eq!(v.stats().scrypt_evaluations, 1);
        assert_eq!(v.stats().rejected, 2);
        assert!(!v.is_verified(&key.public()));
    }

    #[test]
    fn proof_for_another_key_is_refused_without_scrypt() {
        let key = NodeKey::generate();
        let proof = minted(&key);
        let mut v = IdentityVerifier::new(puzzle(), VerifierConfig::default());
        let other = NodeKey::generate().public();
        assert_eq!(
            v.verify_peer(Instant::now(), Some(other), &proof),
            Err(ProofError::WrongKey)
        );
        assert_eq!(
            v.verify_peer(Instant::now(), None, &proof),
            Err(ProofError::WrongKey)
        );
        assert_eq!(v.stats().scrypt_evaluations, 0);
    }

    #[test]
    fn unknown_peers_are_rate_limited() {
        let config = VerifierConfig {
            rate_per_second: NonZeroU32::new(2).unwrap(),
            burst: NonZeroU32::new(3).unwrap(),
            ..VerifierConfig::default()
        };
        let mut v = IdentityVerifier::new(puzzle(), config);
        let t0 = Instant::now();
        let proofs: Vec<_> = (0..6)
            .map(|i| IdentityProof {
                key: NodeKey::from_seed([i; 32]).public(),
                nonce: 0,
            })
            .collect();
        let results: Vec<_> = proofs.iter().map(|p| v.verify(t0, p)).collect();
        let limited = results
            .iter()
            .filter(|r| **r == Err(ProofError::RateLimited))
            .count();
        assert_eq!(limited, 3, "burst of 3 then refusals: {results:?}");
        assert_eq!(v.stats().scrypt_evaluations, 3);
        // Half a second later one more token (rate 2/s) is available.
        let t1 = t0 + Duration::from_millis(500);
        assert_ne!(v.verify(t1, &proofs[3]), Err(ProofError::RateLimited));
        assert_eq!(v.verify(t1, &proofs[4]), Err(ProofError::RateLimited));
    }

    #[test]
    fn cache_is_bounded() {
        let config = VerifierConfig {
            cache_capacity: NonZeroUsize::new(2).unwrap(),
            ..VerifierConfig::default()
        };
        let mut v = IdentityVerifier::new(puzzle(), config);
        let keys: Vec<_> = (0..3).map(|i| NodeKey::from_seed([i; 32])).collect();
        let now = Instant::now();
        for key in &keys {
            v.verify(now, &minted(key)).unwrap();
        }
        assert!(!v.is_verified(&keys[0].public()));
        assert!(v.is_verified(&keys[1].public()));
        assert!(v.is_verified(&keys[2].public()));
        v.forget(&keys[2].public());
        assert!(!v.is_verified(&keys[2].public()));
    }
}
