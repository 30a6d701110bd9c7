//! `shoal init`: the data directory, the node key and its identity proof.
//!
//! A data directory holds [`KEY_FILE`] (the ed25519 seed, mode 0600), [`PROOF_FILE`] (the
//! 40-byte identity proof for the network's puzzle), usually [`CONFIG_FILE`], and the node's
//! database. [`init`] is a library function: `shoal init` calls it with a progress bar, the
//! testnet calls it for every node.

use std::fs;
use std::io::{self, IsTerminal, Write};
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use libp2p::PeerId;
use sha2::{Digest, Sha256};
use shoal_dht::NodeKeyExt;
use shoal_pow::{
    CancelToken, IdentityProof, KeyError, MintError, MintOptions, MintProgress, NodeKey, PROOF_LEN,
    ProofError, Puzzle, PuzzleConfig, mint,
};

use crate::config::{Config, ConfigError};

/// The node key file in a data directory.
pub const KEY_FILE: &str = "node.key";
/// The identity proof file in a data directory.
pub const PROOF_FILE: &str = "identity.proof";
/// Beside the proof: a digest of the proof and the puzzle it was found to solve, so that a node
/// does not spend a scrypt evaluation on its own proof at every start (nodes started at once,
/// as a testnet starts them, would each wait for the cores behind the others' evaluations). A
/// proof that does not match the digest is checked again; a forged digest only lets a node
/// start with a proof every peer refuses.
pub const CHECKED_FILE: &str = "identity.checked";
/// The config file `shoal init` writes into a data directory, and `shoal run` reads from it
/// when no `--config` is given.
pub const CONFIG_FILE: &str = "shoal.toml";

/// Why initialisation failed. Files written before the failure stay (a key without a proof is
/// completed by the next `shoal init`).
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    /// The directory already holds a key with a valid proof; nothing changed.
    #[error(
        "{} already holds a node key (peer {peer}) with a valid identity proof; \
         use --force to replace it with a new identity",
        path.display()
    )]
    AlreadyInitialized {
        /// The key file.
        path: PathBuf,
        /// Its peer id.
        peer: PeerId,
    },
    /// The data directory could not be created, or a file in it written or removed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// The key could not be loaded or saved.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// The proof file exists but is unusable.
    #[error(transparent)]
    Proof(#[from] ProofFileError),
    /// The network's puzzle parameters are invalid.
    #[error("identity puzzle: {0}")]
    Puzzle(#[from] shoal_pow::ConfigError),
    /// Minting was cancelled; the key is kept, the next `shoal init` mints its proof.
    #[error("{0}; run `shoal init` again to finish")]
    Cancelled(#[from] MintError),
    /// The config to write could not be rendered.
    #[error(transparent)]
    Config(#[from] ConfigError),
}

/// Why an identity proof file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ProofFileError {
    /// The file could not be read.
    #[error("identity proof {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// The file is not a 40-byte proof.
    #[error("identity proof {}: {source}", path.display())]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        source: ProofError,
    },
    /// The proof is for another key than the node key.
    #[error("identity proof {} is for another key than the node key", path.display())]
    WrongKey {
        /// The file.
        path: PathBuf,
    },
    /// The proof does not solve this network's puzzle.
    #[error("identity proof {} does not solve the {network:?} puzzle: {source}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The puzzle's network id.
        network: String,
        /// Why it fails.
        source: ProofError,
    },
}

/// What [`init`] does.
#[derive(Debug, Clone)]
pub struct InitOptions {
    /// The data directory (already resolved, no `~`). Created with mode 0700 if missing.
    pub data_dir: PathBuf,
    /// The network's identity puzzle.
    pub puzzle: PuzzleConfig,
    /// Replace an existing key with a new one.
    pub force: bool,
    /// Keep an existing key with a valid proof instead of refusing (the testnet reuses a
    /// directory this way).
    pub reuse: bool,
    /// Minting threads.
    pub threads: NonZeroUsize,
}

/// What [`init`] did.
#[derive(Debug, Clone)]
pub struct Initialized {
    /// The node's key.
    pub key: NodeKey,
    /// Its identity proof.
    pub proof: IdentityProof,
    /// The key file.
    pub key_path: PathBuf,
    /// The proof file.
    pub proof_path: PathBuf,
    /// Whether a new key was generated.
    pub new_key: bool,
    /// scrypt evaluations spent minting and the time taken; `None` if an existing proof was kept.
    pub minted: Option<(u64, Duration)>,
}

impl Initialized {
    /// The node's peer id.
    pub fn peer_id(&self) -> PeerId {
        self.key.peer_id()
    }
}

/// Creates the data directory, the key (unless one exists) and its identity proof (unless a
/// valid one exists), calling `progress` while minting. Refuses a directory that already holds
/// a key with a valid proof unless `force` (new key) or `reuse` (keep it).
pub fn init(
    options: &InitOptions,
    cancel: &CancelToken,
    progress: impl FnMut(&MintProgress),
) -> Result<Initialized, InitError> {
    let dir = &options.data_dir;
    create_private_dir(dir)?;
    let key_path = dir.join(KEY_FILE);
    let proof_path = dir.join(PROOF_FILE);
    let puzzle = Puzzle::new(options.puzzle.clone())?;

    let existing = if key_path.exists() && !options.force {
        Some(NodeKey::load(&key_path)?)
    } else {
        None
    };
    let (key, new_key) = match existing {
        Some(key) => {
            if proof_path.exists()
                && let Ok(proof) = load_proof(&proof_path, &key, &puzzle)
            {
                if options.reuse {
                    return Ok(Initialized {
                        key,
                        proof,
                        key_path,
                        proof_path,
                        new_key: false,
                        minted: None,
                    });
                }
                return Err(InitError::AlreadyInitialized {
                    path: key_path,
                    peer: key.peer_id(),
                });
            }
            (key, false)
        }
        None => {
            for path in [&key_path, &proof_path] {
                remove_if_exists(path)?;
            }
            let key = NodeKey::generate();
            key.save(&key_path)?;
            (key, true)
        }
    };

    let mint_options = MintOptions {
        threads: options.threads,
        ..MintOptions::default()
    };
    let minted = mint(&puzzle, &key.public(), &mint_options, cancel, progress)?;
    write_file(&proof_path, &minted.proof.to_bytes())?;
    mark_checked(&proof_path, &puzzle, &minted.proof);
    Ok(Initialized {
        key,
        proof: minted.proof,
        key_path,
        proof_path,
        new_key,
        minted: Some((minted.attempts, minted.elapsed)),
    })
}

/// Reads the proof at `path` and checks that it belongs to `key` and solves `puzzle`.
pub fn load_proof(
    path: &Path,
    key: &NodeKey,
    puzzle: &Puzzle,
) -> Result<IdentityProof, ProofFileError> {
    let read = |source| ProofFileError::Read {
        path: path.to_owned(),
        source,
    };
    let len = fs::metadata(path).map_err(read)?.len();
    if len != PROOF_LEN as u64 {
        return Err(ProofFileError::Malformed {
            path: path.to_owned(),
            source: ProofError::Malformed("identity proof must be 40 bytes"),
        });
    }
    let bytes = fs::read(path).map_err(read)?;
    let proof = IdentityProof::from_bytes(&bytes).map_err(|source| ProofFileError::Malformed {
        path: path.to_owned(),
        source,
    })?;
    if proof.key != key.public() {
        return Err(ProofFileError::WrongKey {
            path: path.to_owned(),
        });
    }
    if fs::read_to_string(checked_path(path)).is_ok_and(|m| m == checked_mark(puzzle, &proof)) {
        return Ok(proof);
    }
    puzzle
        .verify(&proof)
        .map_err(|source| ProofFileError::Invalid {
            path: path.to_owned(),
            network: puzzle.config().network_id.clone(),
            source,
        })?;
    mark_checked(path, puzzle, &proof);
    Ok(proof)
}

/// [`CHECKED_FILE`] beside the proof file at `proof_path`.
fn checked_path(proof_path: &Path) -> PathBuf {
    proof_path.with_file_name(CHECKED_FILE)
}

/// What [`CHECKED_FILE`] holds for `proof` found to solve `puzzle`: a SHA-256 over both, hex.
fn checked_mark(puzzle: &Puzzle, proof: &IdentityProof) -> String {
    let mut h = Sha256::new();
    h.update(b"shoal identity proof checked\n");
    // Every parameter of the puzzle: a proof checked for one network is checked again for
    // another.
    h.update(format!("{:?}\n", puzzle.config()).as_bytes());
    h.update(proof.to_bytes());
    hex::encode(h.finalize())
}

/// Records that `proof` solves `puzzle`. Best effort: a data directory that cannot be written
/// costs a check at the next start, nothing more.
fn mark_checked(proof_path: &Path, puzzle: &Puzzle, proof: &IdentityProof) {
    let path = checked_path(proof_path);
    if let Err(error) = write_atomic(&path, checked_mark(puzzle, proof).as_bytes()) {
        tracing::debug!(path = %path.display(), %error, "identity check not recorded");
    }
}

/// Writes `config`, documented, to `<data_dir>/shoal.toml`; unless `overwrite`, an existing
/// file is kept and `None` returned.
pub fn write_config(
    data_dir: &Path,
    config: &Config,
    overwrite: bool,
) -> Result<Option<PathBuf>, InitError> {
    let path = data_dir.join(CONFIG_FILE);
    if !overwrite && path.exists() {
        return Ok(None);
    }
    write_file(&path, config.to_documented_toml()?.as_bytes())?;
    Ok(Some(path))
}

fn create_private_dir(dir: &Path) -> Result<(), InitError> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir).map_err(|source| InitError::Io {
        path: dir.to_owned(),
        source,
    })
}

fn remove_if_exists(path: &Path) -> Result<(), InitError> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(InitError::Io {
            path: path.to_owned(),
            source: e,
        }),
        _ => Ok(()),
    }
}

/// Writes `bytes` to a temporary file beside `path`, syncs it and renames it over `path`.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut file = fs::File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    fs::rename(&tmp, path)
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), InitError> {
    write_atomic(path, bytes).map_err(|source| InitError::Io {
        path: path.to_owned(),
        source,
    })
}

/// A spinner on stderr fed by [`mint`]'s progress reports: attempts, rate and the expected
/// time to a proof. Hidden when `quiet` or when stderr is not a terminal.
pub fn progress_bar(quiet: bool, difficulty: u8) -> ProgressBar {
    if quiet || !io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new_spinner();
    // The template is a constant; fall back to the default style should it ever be refused.
    let style = ProgressStyle::with_template("{spinner} {prefix} {msg} [{elapsed}]")
        .unwrap_or_else(|_| ProgressStyle::default_spinner());
    bar.set_style(style);
    bar.set_prefix(format!("minting identity proof (difficulty {difficulty}):"));
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

/// The message [`progress_bar`] shows for a report.
pub fn progress_message(p: &MintProgress) -> String {
    format!(
        "{} attempts, {:.1}/s, about {} expected in all",
        p.attempts,
        p.rate,
        human_duration(p.expected_remaining)
    )
}

fn human_duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0 => format!("{} ms", d.as_millis()),
        1..=119 => format!("{s} s"),
        120..=7199 => format!("{} min", s / 60),
        _ => format!("{} h", s / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cheap() -> PuzzleConfig {
        PuzzleConfig {
            log_n: 4,
            difficulty: 4,
            ..PuzzleConfig::testnet()
        }
    }

    fn options(dir: &Path) -> InitOptions {
        InitOptions {
            data_dir: dir.to_owned(),
            puzzle: cheap(),
            force: false,
            reuse: false,
            threads: NonZeroUsize::MIN,
        }
    }

    fn tmp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("shoal-init-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn init_refuses_twice_then_forces_and_completes_a_missing_proof() {
        let dir = tmp("twice");
        let opts = options(&dir.join("data"));
        let first = init(&opts, &CancelToken::new(), |_| {}).unwrap();
        assert!(first.new_key && first.minted.is_some());
        let puzzle = Puzzle::new(cheap()).unwrap();
        assert_eq!(
            load_proof(&first.proof_path, &first.key, &puzzle).unwrap(),
            first.proof
        );

        let again = init(&opts, &CancelToken::new(), |_| {}).unwrap_err();
        assert!(
            matches!(again, InitError::AlreadyInitialized { .. }),
            "{again}"
        );

        let reused = init(
            &InitOptions {
                reuse: true,
                ..opts.clone()
            },
            &CancelToken::new(),
            |_| {},
        )
        .unwrap();
        assert_eq!(reused.peer_id(), first.peer_id());
        assert!(reused.minted.is_none());

        fs::remove_file(&first.proof_path).unwrap();
        let completed = init(&opts, &CancelToken::new(), |_| {}).unwrap();
        assert_eq!(completed.peer_id(), first.peer_id());
        assert!(!completed.new_key && completed.minted.is_some());

        let forced = init(
            &InitOptions {
                force: true,
                ..opts.clone()
            },
            &CancelToken::new(),
            |_| {},
        )
        .unwrap();
        assert_ne!(forced.peer_id(), first.peer_id());
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_proof_for_another_network_is_reminted() {
        let dir = tmp("network");
        let opts = options(&dir);
        let first = init(&opts, &CancelToken::new(), |_| {}).unwrap();
        let other = InitOptions {
            puzzle: PuzzleConfig {
                network_id: "another".into(),
                difficulty: 8,
                ..cheap()
            },
            ..opts
        };
        let puzzle = Puzzle::new(other.puzzle.clone()).unwrap();
        // The old proof almost surely fails the new puzzle (odds 2^-8 otherwise).
        if load_proof(&first.proof_path, &first.key, &puzzle).is_err() {
            let second = init(&other, &CancelToken::new(), |_| {}).unwrap();
            assert_eq!(second.peer_id(), first.peer_id());
            load_proof(&second.proof_path, &second.key, &puzzle).unwrap();
        }
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn bad_proof_files_are_refused() {
        let dir = tmp("bad");
        fs::create_dir_all(&dir).unwrap();
        let key = NodeKey::generate();
        let puzzle = Puzzle::new(cheap()).unwrap();
        let path = dir.join(PROOF_FILE);
        fs::write(&path, [0u8; 39]).unwrap();
        assert!(matches!(
            load_proof(&path, &key, &puzzle),
            Err(ProofFileError::Malformed { .. })
        ));
        let other = IdentityProof {
            key: NodeKey::generate().public(),
            nonce: 1,
        };
        fs::write(&path, other.to_bytes()).unwrap();
        assert!(matches!(
            load_proof(&path, &key, &puzzle),
            Err(ProofFileError::WrongKey { .. })
        ));
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_proof_checked_once_is_not_checked_again_and_a_changed_one_is() {
        let dir = tmp("checked");
        let made = init(&options(&dir), &CancelToken::new(), |_| {}).unwrap();
        let puzzle = Puzzle::new(cheap()).unwrap();
        let marker = dir.join(CHECKED_FILE);
        assert_eq!(
            fs::read_to_string(&marker).unwrap(),
            checked_mark(&puzzle, &made.proof),
            "minting records the check"
        );
        // A proof of the same key that does not solve the puzzle, written over the good one.
        let bad = (0..)
            .map(|nonce| IdentityProof {
                key: made.key.public(),
                nonce,
            })
            .find(|p| puzzle.verify(p).is_err())
            .unwrap();
        fs::write(&made.proof_path, bad.to_bytes()).unwrap();
        assert!(matches!(
            load_proof(&made.proof_path, &made.key, &puzzle),
            Err(ProofFileError::Invalid { .. })
        ));
        // A record that does not match is checked again and rewritten.
        fs::write(&made.proof_path, made.proof.to_bytes()).unwrap();
        fs::write(&marker, "stale").unwrap();
        assert_eq!(
            load_proof(&made.proof_path, &made.key, &puzzle).unwrap(),
            made.proof
        );
        assert_eq!(
            fs::read_to_string(&marker).unwrap(),
            checked_mark(&puzzle, &made.proof)
        );
        // The record is trusted: no scrypt runs for a proof it names, even one that fails (the
        // node's own loss: every peer refuses it).
        fs::write(&made.proof_path, bad.to_bytes()).unwrap();
        fs::write(&marker, checked_mark(&puzzle, &bad)).unwrap();
        assert_eq!(
            load_proof(&made.proof_path, &made.key, &puzzle).unwrap(),
            bad
        );
        fs::remove_dir_all(&dir).unwrap();
    }
}
