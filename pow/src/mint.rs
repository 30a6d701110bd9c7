//! Minting identity proofs on every core, with progress reports and cancellation.

use std::num::NonZeroUsize;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::key::PublicKey;
use crate::puzzle::{IdentityProof, Puzzle, leading_zero_bits};

/// Errors from minting.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MintError {
    /// The [`CancelToken`] was triggered before a proof was found. Nothing is kept; minting again
    /// starts over (any nonce is as good as any other).
    #[error("minting cancelled after {attempts} attempts")]
    Cancelled {
        /// Evaluations done before cancelling.
        attempts: u64,
    },
}

/// Stops a running [`mint`] from another thread (for example a Ctrl-C handler).
#[derive(Debug, Clone, Default)]
pub struct CancelToken(Arc<AtomicBool>);

impl CancelToken {
    /// A token that is not cancelled.
    pub fn new() -> Self {
        Self::default()
    }

    /// Asks the minting threads to stop; they stop after their current evaluation.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    /// Whether [`CancelToken::cancel`] was called.
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// How to mint.
#[derive(Debug, Clone)]
pub struct MintOptions {
    /// Worker threads. Default: every available core.
    pub threads: NonZeroUsize,
    /// The first nonce tried; thread `t` tries `start_nonce + t + k·threads`. Default: random, so
    /// that two runs do not repeat each other's work.
    pub start_nonce: u64,
    /// How often the progress callback runs. Default 250 ms.
    pub progress_interval: Duration,
}

impl Default for MintOptions {
    fn default() -> Self {
        Self {
            threads: std::thread::available_parallelism().unwrap_or(NonZeroUsize::MIN),
            start_nonce: rand::random(),
            progress_interval: Duration::from_millis(250),
        }
    }
}

/// A progress report, given to the callback every [`MintOptions::progress_interval`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MintProgress {
    /// scrypt evaluations so far, over all threads.
    pub attempts: u64,
    /// Time since minting started.
    pub elapsed: Duration,
    /// Evaluations per second so far.
    pub rate: f64,
    /// Expected attempts for the difficulty: `2^difficulty`.
    pub expected_attempts: u64,
    /// Expected time until a proof is found at the current rate. The search is memoryless, so
    /// this does not shrink with the attempts already made: it is `2^difficulty / rate`.
    pub expected_remaining: Duration,
}

/// A minted proof and what it cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Minted {
    /// The proof.
    pub proof: IdentityProof,
    /// scrypt evaluations over all threads.
    pub attempts: u64,
    /// Wall time taken.
    pub elapsed: Duration,
}

/// Searches for a nonce that solves `puzzle` for `key`, on `options.threads` threads.
///
/// Calls `progress` on this thread every `options.progress_interval`. Returns when a proof is found
/// or `cancel` is triggered.
pub fn mint(
    puzzle: &Puzzle,
    key: &PublicKey,
    options: &MintOptions,
    cancel: &CancelToken,
    mut progress: impl FnMut(&MintProgress),
) -> Result<Minted, MintError> {
    let start = Instant::now();
    let threads = options.threads.get() as u64;
    let attempts = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    let difficulty = puzzle.config().difficulty;
    let expected_attempts = 1u64 << difficulty.min(63);
    let (found_tx, found_rx) = mpsc::sync_channel::<u64>(options.threads.get());

    let found = std::thread::scope(|scope| {
        for t in 0..threads {
            let found_tx = found_tx.clone();
            let (attempts, stop) = (&attempts, &stop);
            scope.spawn(move || {
                let mut nonce = options.start_nonce.wrapping_add(t);
                while !stop.load(Ordering::Relaxed) && !cancel.is_cancelled() {
                    let out = puzzle.evaluate(key, nonce);
                    attempts.fetch_add(1, Ordering::Relaxed);
                    if leading_zero_bits(&out) >= difficulty {
                        // The receiver may be gone if another thread won; that is fine.
                        let _ = found_tx.try_send(nonce);
                        return;
                    }
                    nonce = nonce.wrapping_add(threads);
                }
            });
        }
        drop(found_tx);
        let found = loop {
            match found_rx.recv_timeout(options.progress_interval) {
                Ok(nonce) => break Some(nonce),
                Err(mpsc::RecvTimeoutError::Disconnected) => break None,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    progress(&report(&attempts, start, expected_attempts));
                }
            }
        };
        stop.store(true, Ordering::Relaxed);
        found
    });

    let attempts = attempts.load(Ordering::Relaxed);
    match found {
        Some(nonce) => Ok(Minted {
            proof: IdentityProof { key: *key, nonce },
            attempts,
            elapsed: start.elapsed(),
        }),
        None => Err(MintError::Cancelled { attempts }),
    }
}

fn report(attempts: &AtomicU64, start: Instant, expected_attempts: u64) -> MintProgress {
    let attempts = attempts.load(Ordering::Relaxed);
    let elapsed = start.elapsed();
    let rate = attempts as f64 / elapsed.as_secs_f64().max(1e-9);
    let expected_remaining = if rate > 0.0 {
        Duration::from_secs_f64((expected_attempts as f64 / rate).min(1e9))
    } else {
        Duration::MAX
    };
    MintProgress {
        attempts,
        elapsed,
        rate,
        expected_attempts,
        expected_remaining,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::NodeKey;
    use crate::puzzle::PuzzleConfig;

    fn cheap(difficulty: u8) -> Puzzle {
        Puzzle::new(PuzzleConfig {
            log_n: 4,
            difficulty,
            ..PuzzleConfig::testnet()
        })
        .unwrap()
    }

    #[test]
    fn minted_proof_verifies() {
        let puzzle = cheap(8);
        let key = NodeKey::generate().public();
        let minted = mint(
            &puzzle,
            &key,
            &MintOptions::default(),
            &CancelToken::new(),
            |_| {},
        )
        .unwrap();
        puzzle.verify(&minted.proof).unwrap();
        assert!(minted.attempts >= 1);
        assert_eq!(minted.proof.key, key);
    }

    #[test]
    fn cancel_stops_minting_and_progress_is_reported() {
        // Difficulty 32 at any cost will not be solved during this test.
        let puzzle = cheap(32);
        let key = NodeKey::generate().public();
        let cancel = CancelToken::new();
        let options = MintOptions {
            threads: NonZeroUsize::new(2).unwrap(),
            progress_interval: Duration::from_millis(10),
            ..MintOptions::default()
        };
        let mut reports = Vec::new();
        let result = mint(&puzzle, &key, &options, &cancel, |p| {
            reports.push(*p);
            if reports.len() == 3 {
                cancel.cancel();
            }
        });
        let Err(MintError::Cancelled { attempts }) = result else {
            panic!("expected cancellation, got {result:?}");
        };
        assert!(reports.len() >= 3);
        assert!(reports.windows(2).all(|w| w[0].attempts <= w[1].attempts));
        assert!(attempts >= reports[2].attempts);
        assert_eq!(reports[0].expected_attempts, 1 << 32);
        assert!(reports[2].rate > 0.0);
    }
}
