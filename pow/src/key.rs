//! The node key: one ed25519 key that is the libp2p identity, signs records and, on Tor, is the
//! onion service key.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use ed25519_dalek::Signer;
use rand::rngs::OsRng;

/// Length in bytes of an ed25519 public key.
pub const PUBLIC_KEY_LEN: usize = 32;
/// Length in bytes of an ed25519 signature.
pub const SIGNATURE_LEN: usize = 64;
/// Length in bytes of a secret key file: the 32-byte seed, nothing else.
const SECRET_FILE_LEN: usize = 32;

/// Errors from loading, saving or using keys.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// Reading or writing the key file failed. Nothing was written, or the write was partial and
    /// the file should be removed.
    #[error("key file {path}: {source}")]
    Io {
        /// The file involved.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// The key file can be read by its group or others; it was not loaded. Fix with `chmod 600`.
    #[error(
        "key file {path} has mode {mode:o}; refusing to load a key readable by others (chmod 600)"
    )]
    InsecurePermissions {
        /// The file involved.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The key file does not hold exactly one 32-byte seed. Nothing was loaded.
    #[error("key file {path} holds {len} bytes, expected {SECRET_FILE_LEN}")]
    Malformed {
        /// The file involved.
        path: PathBuf,
        /// How many bytes it held.
        len: usize,
    },
    /// Bytes given as a public key are not a valid ed25519 point.
    #[error("invalid ed25519 public key")]
    InvalidPublicKey,
    /// A signature did not verify against the message and key.
    #[error("invalid signature")]
    InvalidSignature,
}

/// A node's secret ed25519 key.
///
/// `Debug` never prints the secret.
#[derive(Clone)]
pub struct NodeKey {
    signing: ed25519_dalek::SigningKey,
}

impl std::fmt::Debug for NodeKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeKey")
            .field("public", &self.public())
            .finish_non_exhaustive()
    }
}

impl NodeKey {
    /// Generates a fresh key from the operating system's entropy.
    pub fn generate() -> Self {
        Self {
            signing: ed25519_dalek::SigningKey::generate(&mut OsRng),
        }
    }

    /// Builds a key from its 32-byte seed (deterministic; for tests and key import).
    pub fn from_seed(seed: [u8; 32]) -> Self {
        Self {
            signing: ed25519_dalek::SigningKey::from_bytes(&seed),
        }
    }

    /// The 32-byte seed. Handle with care: whoever has it is this node.
    pub fn seed(&self) -> [u8; 32] {
        self.signing.to_bytes()
    }

    /// The public half.
    pub fn public(&self) -> PublicKey {
        PublicKey(self.signing.verifying_key())
    }

    /// Signs `message`.
    pub fn sign(&self, message: &[u8]) -> [u8; SIGNATURE_LEN] {
        self.signing.sign(message).to_bytes()
    }

    /// Writes the seed to `path`, creating it with mode 0600 (the file must not exist yet).
    pub fn save(&self, path: &Path) -> Result<(), KeyError> {
        let io_err = |source| KeyError::Io {
            path: path.to_owned(),
            source,
        };
        let mut options = fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut file = options.open(path).map_err(io_err)?;
        file.write_all(&self.seed()).map_err(io_err)?;
        file.sync_all().map_err(io_err)
    }

    /// Reads a key written by [`NodeKey::save`], refusing a file readable by group or others.
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        let io_err = |source| KeyError::Io {
            path: path.to_owned(),
            source,
        };
        let meta = fs::metadata(path).map_err(io_err)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(KeyError::InsecurePermissions {
                    path: path.to_owned(),
                    mode,
                });
            }
        }
        if meta.len() != SECRET_FILE_LEN as u64 {
            return Err(KeyError::Malformed {
                path: path.to_owned(),
                len: usize::try_from(meta.len()).unwrap_or(usize::MAX),
            });
        }
        let bytes = fs::read(path).map_err(io_err)?;
        let seed: [u8; 32] = bytes.try_into().map_err(|b: Vec<u8>| KeyError::Malformed {
            path: path.to_owned(),
            len: b.len(),
        })?;
        Ok(Self::from_seed(seed))
    }
}

/// A node's public ed25519 key.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicKey(ed25519_dalek::VerifyingKey);

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PublicKey({})", hex::encode(self.to_bytes()))
    }
}

impl PublicKey {
    /// Parses 32 bytes; fails if they are not a valid ed25519 point.
    pub fn from_bytes(bytes: &[u8; PUBLIC_KEY_LEN]) -> Result<Self, KeyError> {
        ed25519_dalek::VerifyingKey::from_bytes(bytes)
            .map(Self)
            .map_err(|_| KeyError::InvalidPublicKey)
    }

    /// Parses a slice of any length; fails unless it is 32 bytes of a valid point.
    pub fn try_from_slice(bytes: &[u8]) -> Result<Self, KeyError> {
        let bytes: &[u8; PUBLIC_KEY_LEN] =
            bytes.try_into().map_err(|_| KeyError::InvalidPublicKey)?;
        Self::from_bytes(bytes)
    }

    /// The 32 bytes of the key.
    pub fn to_bytes(&self) -> [u8; PUBLIC_KEY_LEN] {
        self.0.to_bytes()
    }

    /// Checks `signature` over `message`.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> Result<(), KeyError> {
        let signature = ed25519_dalek::Signature::from_slice(signature)
            .map_err(|_| KeyError::InvalidSignature)?;
        self.0
            .verify_strict(message, &signature)
            .map_err(|_| KeyError::InvalidSignature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_then_verify() {
        let key = NodeKey::generate();
        let sig = key.sign(b"hello");
        key.public().verify(b"hello", &sig).unwrap();
        assert!(key.public().verify(b"hellp", &sig).is_err());
        assert!(key.public().verify(b"hello", &sig[..63]).is_err());
        let other = NodeKey::generate();
        assert!(other.public().verify(b"hello", &sig).is_err());
    }

    #[test]
    fn save_load_round_trips_with_private_mode() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.key");
        let key = NodeKey::generate();
        key.save(&path).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(NodeKey::load(&path).unwrap().seed(), key.seed());
        // Saving over an existing key is refused.
        assert!(matches!(key.save(&path), Err(KeyError::Io { .. })));
    }

    #[test]
    fn load_refuses_readable_by_others() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.key");
        NodeKey::generate().save(&path).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            NodeKey::load(&path),
            Err(KeyError::InsecurePermissions { mode: 0o644, .. })
        ));
    }

    #[test]
    fn load_refuses_wrong_length() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.key");
        fs::write(&path, [0u8; 31]).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        assert!(matches!(
            NodeKey::load(&path),
            Err(KeyError::Malformed { len: 31, .. })
        ));
    }
}
