//! Configuration of the Tor transport: which Tor network, where arti keeps its files, and how
//! hard a dial tries.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A configuration value that cannot work. Nothing was started.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum ConfigError {
    /// A private network needs at least one directory authority.
    #[error("a private Tor network needs at least one authority v3ident")]
    NoAuthorities,
    /// A private network needs at least one fallback directory cache.
    #[error("a private Tor network needs at least one fallback directory cache")]
    NoFallbacks,
    /// A v3ident or RSA identity is not 40 hexadecimal digits.
    #[error("{0:?} is not an RSA identity fingerprint (40 hex digits)")]
    BadRsaIdentity(String),
    /// An ed25519 identity is not the unpadded base64 of 32 bytes.
    #[error("{0:?} is not an ed25519 identity (base64 of 32 bytes)")]
    BadEdIdentity(String),
    /// A fallback lists no OR port.
    #[error("fallback {0} lists no OR port")]
    NoOrPorts(String),
    /// `dial_backoff_min` exceeds `dial_backoff_max`, or a duration is zero.
    #[error("invalid duration: {0}")]
    BadDuration(&'static str),
    /// arti refused the configuration built from this one.
    #[error("arti refused the configuration: {0}")]
    Arti(String),
}

/// Which Tor network to use.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Network {
    /// The public Tor network, with arti's built-in authorities and fallbacks.
    #[default]
    Public,
    /// A private Tor network, such as the loopback test network of the `testnet` feature.
    Private(PrivateNetwork),
}

/// A private Tor network: its directory authorities and its directory caches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrivateNetwork {
    /// The v3 identity fingerprints of the directory authorities (40 hex digits each, the
    /// `fingerprint` line of each `authority_certificate`). Must not be empty.
    pub authority_v3idents: Vec<String>,
    /// Relays (authorities too) whose directory information the client may fetch first.
    /// Must not be empty.
    pub fallbacks: Vec<Fallback>,
    /// The onion-service directory time period in minutes (Tor's `hsdir_interval` network
    /// parameter). A test network that votes every `v` seconds needs `24 * v / 60`, or arti and
    /// C tor compute different time periods and cannot find each other's descriptors. `None`
    /// keeps the consensus value (default 1440, one day).
    pub hsdir_interval_minutes: Option<NonZeroU32>,
    /// The least time arti allows a circuit build or a round trip on a circuit (Tor's
    /// `cbtmintimeout` network parameter). arti learns its timeouts from the build times it
    /// sees; on loopback those are milliseconds, so it learns timeouts of a few tens of
    /// milliseconds, and once the machine is busy every onion-service descriptor fetch times
    /// out (seen after a service restarted at a time-period change: its clients could not
    /// fetch the new descriptor for minutes). `None` keeps the consensus value (default 10 ms).
    pub min_circuit_timeout: Option<Duration>,
    /// Treat relays on one IPv4 /16 or IPv6 /32 as unrelated when building paths. Needed when
    /// all relays share one address (127.0.0.1); on a real network it lets a single operator's
    /// subnet carry a whole circuit. Default `false`.
    pub dangerous_ignore_subnet_families: bool,
}

/// A directory cache of a private network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fallback {
    /// The relay's RSA identity fingerprint, 40 hex digits.
    pub rsa_identity: String,
    /// The relay's ed25519 identity, unpadded base64 (as in tor's `fingerprint-ed25519`).
    pub ed_identity: String,
    /// The relay's OR ports. Must not be empty.
    pub orports: Vec<SocketAddr>,
}

/// Configuration of the Tor transport.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Which Tor network. Default: [`Network::Public`].
    pub network: Network,
    /// Where arti keeps persistent state (guards and the like). `None`: arti's default
    /// (`$ARTI_LOCAL_DATA`). Two clients must never share one. The onion service key is never
    /// written there: it is held in memory only.
    pub state_dir: Option<PathBuf>,
    /// Where arti caches directory documents. `None`: arti's default (`$ARTI_CACHE`).
    pub cache_dir: Option<PathBuf>,
    /// Trust every file permission on `state_dir` and `cache_dir` (arti normally refuses
    /// directories that other users can write). Only for tests in temporary directories.
    /// Default `false`.
    pub dangerous_trust_all_file_permissions: bool,
    /// Attempts per dial, the first included. Onion connects often fail in the first seconds
    /// after a service starts. Default 4.
    pub dial_attempts: NonZeroU32,
    /// Wait after the first failed attempt; it doubles after each failure. Default 500 ms.
    pub dial_backoff_min: Duration,
    /// Upper bound of the wait between attempts. Default 5 s.
    pub dial_backoff_max: Duration,
    /// Time limit of one connection attempt (descriptor fetch, introduction, rendezvous).
    /// Default 60 s.
    pub connect_timeout: Duration,
    /// Time limit for arti to bootstrap (fetch a consensus and enough microdescriptors).
    /// Default 120 s.
    pub bootstrap_timeout: Duration,
    /// How long arti waits before asking one onion-service directory again for a service's
    /// descriptor. When an introduction is refused (the service restarted with new
    /// introduction points), arti refetches the descriptor once per connect, each time from a
    /// directory not asked within this interval: while the restarted service has not published
    /// yet, every dial attempt uses up one directory, and once all were asked the stale
    /// descriptor stays in use until the interval ends. Default 15 min (arti's and C tor's);
    /// the private preset uses 5 s, since test services restart within seconds.
    pub hsdir_requery_interval: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            network: Network::Public,
            state_dir: None,
            cache_dir: None,
            dangerous_trust_all_file_permissions: false,
            dial_attempts: NonZeroU32::new(4).expect("4 is not zero"),
            dial_backoff_min: Duration::from_millis(500),
            dial_backoff_max: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(60),
            bootstrap_timeout: Duration::from_secs(120),
            hsdir_requery_interval: Duration::from_secs(15 * 60),
        }
    }
}

impl Config {
    /// The public Tor network with arti's default directories: the same as `Config::default()`.
    pub fn public() -> Self {
        Self::default()
    }

    /// A private network, with state and cache under `data_dir` (`state/` and `cache/`).
    /// File permissions are still checked; tests in a temporary directory may set
    /// `dangerous_trust_all_file_permissions`.
    pub fn private(network: PrivateNetwork, data_dir: &Path) -> Self {
        Self {
            network: Network::Private(network),
            state_dir: Some(data_dir.join("state")),
            cache_dir: Some(data_dir.join("cache")),
            dial_backoff_min: Duration::from_millis(250),
            dial_backoff_max: Duration::from_secs(2),
            dial_attempts: NonZeroU32::new(8).expect("8 is not zero"),
            connect_timeout: Duration::from_secs(30),
            hsdir_requery_interval: Duration::from_secs(5),
            ..Self::default()
        }
    }

    /// Checks every value; [`crate::Transport::bootstrap`] calls it.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.dial_backoff_min.is_zero() {
            return Err(ConfigError::BadDuration("dial_backoff_min is zero"));
        }
        if self.dial_backoff_min > self.dial_backoff_max {
            return Err(ConfigError::BadDuration(
                "dial_backoff_min exceeds dial_backoff_max",
            ));
        }
        if self.connect_timeout.is_zero() {
            return Err(ConfigError::BadDuration("connect_timeout is zero"));
        }
        if self.bootstrap_timeout.is_zero() {
            return Err(ConfigError::BadDuration("bootstrap_timeout is zero"));
        }
        if self.hsdir_requery_interval.is_zero() {
            return Err(ConfigError::BadDuration("hsdir_requery_interval is zero"));
        }
        if let Network::Private(net) = &self.network {
            net.validate()?;
        }
        Ok(())
    }
}

impl PrivateNetwork {
    /// Checks that there are authorities and fallbacks and that every identity parses.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.authority_v3idents.is_empty() {
            return Err(ConfigError::NoAuthorities);
        }
        if self.fallbacks.is_empty() {
            return Err(ConfigError::NoFallbacks);
        }
        if let Some(floor) = self.min_circuit_timeout {
            // Tor's bounds of `cbtmintimeout`, in milliseconds.
            if floor < Duration::from_millis(10) || floor.as_millis() > i32::MAX as u128 {
                return Err(ConfigError::BadDuration(
                    "min_circuit_timeout is outside 10 ms ..= 2^31 - 1 ms",
                ));
            }
        }
        for id in &self.authority_v3idents {
            parse_rsa_identity(id)?;
        }
        for fallback in &self.fallbacks {
            parse_rsa_identity(&fallback.rsa_identity)?;
            parse_ed_identity(&fallback.ed_identity)?;
            if fallback.orports.is_empty() {
                return Err(ConfigError::NoOrPorts(fallback.rsa_identity.clone()));
            }
        }
        Ok(())
    }
}

/// Parses a 40-hex-digit RSA identity fingerprint.
pub(crate) fn parse_rsa_identity(
    s: &str,
) -> Result<tor_llcrypto::pk::rsa::RsaIdentity, ConfigError> {
    tor_llcrypto::pk::rsa::RsaIdentity::from_hex(s.trim())
        .ok_or_else(|| ConfigError::BadRsaIdentity(s.to_owned()))
}

/// Parses an unpadded base64 ed25519 identity.
pub(crate) fn parse_ed_identity(
    s: &str,
) -> Result<tor_llcrypto::pk::ed25519::Ed25519Identity, ConfigError> {
    tor_llcrypto::pk::ed25519::Ed25519Identity::from_base64(s.trim())
        .ok_or_else(|| ConfigError::BadEdIdentity(s.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn network() -> PrivateNetwork {
        PrivateNetwork {
            authority_v3idents: vec!["0123456789ABCDEF0123456789ABCDEF01234567".into()],
            fallbacks: vec![Fallback {
                rsa_identity: "89ABCDEF0123456789ABCDEF0123456789ABCDEF".into(),
                ed_identity: "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8".into(),
                orports: vec!["127.0.0.1:5000".parse().expect("socket address")],
            }],
            hsdir_interval_minutes: NonZeroU32::new(8),
            min_circuit_timeout: Some(Duration::from_secs(2)),
            dangerous_ignore_subnet_families: true,
        }
    }

    #[test]
    fn defaults_and_presets_validate() {
        Config::default().validate().expect("default is valid");
        Config::private(network(), Path::new("/tmp/x"))
            .validate()
            .expect("private preset is valid");
    }

    #[test]
    fn bad_values_are_refused() {
        let mut net = network();
        net.authority_v3idents.clear();
        assert_eq!(net.validate(), Err(ConfigError::NoAuthorities));

        let mut net = network();
        net.fallbacks[0].rsa_identity = "xyz".into();
        assert!(matches!(
            net.validate(),
            Err(ConfigError::BadRsaIdentity(_))
        ));

        let mut net = network();
        net.fallbacks[0].ed_identity = "not base64!".into();
        assert!(matches!(net.validate(), Err(ConfigError::BadEdIdentity(_))));

        let mut net = network();
        net.fallbacks[0].orports.clear();
        assert!(matches!(net.validate(), Err(ConfigError::NoOrPorts(_))));

        for floor in [Duration::from_millis(9), Duration::from_secs(1 << 22)] {
            let mut net = network();
            net.min_circuit_timeout = Some(floor);
            assert!(
                matches!(net.validate(), Err(ConfigError::BadDuration(_))),
                "{floor:?}"
            );
        }

        let config = Config {
            dial_backoff_min: Duration::from_secs(10),
            dial_backoff_max: Duration::from_secs(1),
            ..Config::default()
        };
        assert!(matches!(
            config.validate(),
            Err(ConfigError::BadDuration(_))
        ));
        let config = Config {
            hsdir_requery_interval: Duration::ZERO,
            ..Config::default()
        };
        assert_eq!(
            config.validate(),
            Err(ConfigError::BadDuration("hsdir_requery_interval is zero"))
        );
    }
}
