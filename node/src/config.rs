//! The node's TOML configuration: one plain struct with documented defaults, loaded from a file
//! and overridden by flags and environment variables.
//!
//! Precedence, highest first: command-line flags, environment variables (`SHOAL_*`, read by
//! clap), the config file, the defaults. [`DEFAULT_CONFIG`] is the documented default file that
//! `shoal config default` prints; a test checks that it parses to [`Config::default`], so the
//! documentation and the defaults cannot drift apart.

use std::fmt;
use std::net::SocketAddr;
use std::num::{NonZeroU64, NonZeroUsize};
use std::path::{Path, PathBuf};
use std::time::Duration;

use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};
use serde::{Deserialize, Serialize};

use crate::rpc::RpcConfig;
use crate::tor::TorConfig;

/// The documented default configuration file, printed by `shoal config default`.
pub const DEFAULT_CONFIG: &str = include_str!("default-config.toml");

/// Largest config file read, bytes.
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;
/// Most p2p listen addresses.
pub const MAX_LISTEN: usize = 16;
/// Most seeds.
pub const MAX_SEEDS: usize = 64;
/// Most runtime worker threads.
pub const MAX_THREADS: usize = 1024;
/// Largest replication factor accepted.
pub const MAX_REPLICATION: usize = 64;
/// Longest query timeout accepted, seconds.
pub const MAX_QUERY_TIMEOUT_SECS: u64 = 600;
/// Longest record lifetime accepted, seconds (a year).
pub const MAX_TTL_SECS: u64 = 365 * 86_400;
/// Most records a node may be configured to hold.
pub const MAX_RECORDS: usize = 10_000_000;
/// Longest string accepted in an address, seed, token or log filter, bytes.
pub const MAX_STRING: usize = 1024;

/// Why a configuration could not be loaded or is unusable. Nothing was started.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The config file is larger than [`MAX_CONFIG_BYTES`].
    #[error("config file {path} is {len} bytes, more than the {MAX_CONFIG_BYTES} allowed")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its length.
        len: u64,
    },
    /// The config file is not valid TOML for this schema (unknown field, wrong type...); the
    /// message names the field and the line.
    #[error("config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
    /// A field has an unusable value.
    #[error("config field `{field}`: {reason}")]
    Invalid {
        /// The field, as written in the file (`p2p.seeds`).
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A config file's values are unusable.
    #[error("config file {path}: {source}")]
    InFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        source: Box<ConfigError>,
    },
}

fn invalid(field: impl Into<String>, reason: impl fmt::Display) -> ConfigError {
    ConfigError::Invalid {
        field: field.into(),
        reason: reason.to_string(),
    }
}

/// Which network a node belongs to; each is a preset of [`shoal_dht::Config`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Network {
    /// The main network: identity puzzle difficulty 11 (the DHT's default preset).
    #[default]
    Main,
    /// The test network: puzzle difficulty 4, LAN SWIM timing (the DHT's testnet preset).
    Testnet,
    /// Many nodes on one machine: a tiny puzzle, short timeouts (the DHT's local preset).
    Local,
}

impl Network {
    /// The network's name as written in config files.
    pub fn as_str(self) -> &'static str {
        match self {
            Network::Main => "main",
            Network::Testnet => "testnet",
            Network::Local => "local",
        }
    }

    /// The network's DHT preset.
    pub fn preset(self) -> shoal_dht::Config {
        match self {
            Network::Main => shoal_dht::Config::default(),
            Network::Testnet => shoal_dht::Config::testnet(),
            Network::Local => shoal_dht::Config::local(),
        }
    }
}

impl fmt::Display for Network {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How the node reaches peers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// Plain TCP with noise and yamux.
    #[default]
    Tcp,
    /// Tor onion services only: the node never dials, listens on or advertises an IP address.
    Tor,
    /// TCP and Tor: the node bridges TCP-only and Tor-only nodes (and reveals its IP address).
    Both,
}

/// NAT traversal of a TCP node (`[p2p] nat`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum NatMode {
    /// Learn reachability (AutoNAT); when private, reserve slots at public members (circuit
    /// relays), advertise those, and punch holes (DCUtR) where the NAT allows.
    #[default]
    Auto,
    /// Assume the listen addresses are reachable.
    Off,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Human,
    /// One JSON object per line.
    Json,
}

/// The `[p2p]` table: how the node meets peers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct P2pConfig {
    /// TCP multiaddrs to listen on, 1 to [`MAX_LISTEN`] (none with transport `"tor"`, which
    /// listens only on its onion address). Default `["/ip4/0.0.0.0/tcp/7401"]`.
    pub listen: Vec<String>,
    /// Multiaddrs of peers to join through, each ending in `/p2p/<peer id>`; at most
    /// [`MAX_SEEDS`]. Empty means this is its network's first node. Default empty.
    pub seeds: Vec<String>,
    /// The transport: `"tcp"`, `"tor"` or `"both"` (see [`crate::tor`]). Default `"tcp"`.
    pub transport: Transport,
    /// NAT traversal over TCP: `"auto"` or `"off"` (transport `"tcp"` only). Default `"auto"`.
    pub nat: NatMode,
    /// Map the listen port on the network's UPnP gateway (with `nat = "auto"`). Default off.
    pub upnp: bool,
    /// Serve as a circuit relay for nodes behind NATs while this node is publicly reachable,
    /// within the `[relay]` limits (with `nat = "auto"`). Default on.
    pub relay_service: bool,
    /// Seconds after a failed hole punch before a new relayed connection to that peer tries
    /// again (doubled for each further failure, three retries), 1 to 3,600 (with
    /// `nat = "auto"`). Default 60.
    pub hole_punch_retry_secs: u64,
}

impl Default for P2pConfig {
    fn default() -> Self {
        Self {
            listen: vec!["/ip4/0.0.0.0/tcp/7401".to_owned()],
            seeds: Vec::new(),
            transport: Transport::Tcp,
            nat: NatMode::Auto,
            upnp: false,
            relay_service: true,
            hole_punch_retry_secs: 60,
        }
    }
}

/// The `[relay]` table: what this node serves at most as a circuit relay
/// (`p2p.relay_service`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RelayConfig {
    /// Reservations held at once, 1 to 4096. Default 128.
    pub max_reservations: usize,
    /// Reservations of one peer, 1 to 64. Default 4.
    pub max_reservations_per_peer: usize,
    /// Circuits open at once, 1 to 4096. Default 64.
    pub max_circuits: usize,
    /// Circuits of one peer, 1 to 64. Default 8.
    pub max_circuits_per_peer: usize,
    /// Seconds one circuit lasts before it is closed, 1 to 86400. Default 1800.
    pub max_circuit_secs: u64,
    /// Bytes one circuit carries before it is closed, 1 to 2^30. Default 16777216 (16 MiB).
    pub max_circuit_bytes: u64,
}

impl Default for RelayConfig {
    fn default() -> Self {
        let d = shoal_dht::RelayLimits::default();
        Self {
            max_reservations: d.max_reservations,
            max_reservations_per_peer: d.max_reservations_per_peer,
            max_circuits: d.max_circuits,
            max_circuits_per_peer: d.max_circuits_per_peer,
            max_circuit_secs: d.max_circuit_duration.as_secs(),
            max_circuit_bytes: d.max_circuit_bytes,
        }
    }
}

impl RelayConfig {
    /// The limits, checked against their bounds.
    pub fn limits(&self) -> Result<shoal_dht::RelayLimits, ConfigError> {
        let within = |field: &str, v: u64, max: u64| {
            if v == 0 || v > max {
                Err(invalid(
                    format!("relay.{field}"),
                    format!("{v} is not 1 to {max}"),
                ))
            } else {
                Ok(())
            }
        };
        within("max_reservations", self.max_reservations as u64, 4096)?;
        within(
            "max_reservations_per_peer",
            self.max_reservations_per_peer as u64,
            64,
        )?;
        within("max_circuits", self.max_circuits as u64, 4096)?;
        within(
            "max_circuits_per_peer",
            self.max_circuits_per_peer as u64,
            64,
        )?;
        within("max_circuit_secs", self.max_circuit_secs, 86_400)?;
        within("max_circuit_bytes", self.max_circuit_bytes, 1 << 30)?;
        Ok(shoal_dht::RelayLimits {
            max_reservations: self.max_reservations,
            max_reservations_per_peer: self.max_reservations_per_peer,
            max_circuits: self.max_circuits,
            max_circuits_per_peer: self.max_circuits_per_peer,
            max_circuit_duration: Duration::from_secs(self.max_circuit_secs),
            max_circuit_bytes: self.max_circuit_bytes,
            ..shoal_dht::RelayLimits::default()
        })
    }
}

impl P2pConfig {
    /// The listen addresses, parsed.
    pub fn listen_addrs(&self) -> Result<Vec<Multiaddr>, ConfigError> {
        self.listen
            .iter()
            .map(|a| parse_multiaddr(a).map_err(|e| invalid("p2p.listen", e)))
            .collect()
    }

    /// The seeds, parsed into their peer ids and addresses (the `/p2p/..` suffix removed).
    pub fn seed_addrs(&self) -> Result<Vec<(PeerId, Multiaddr)>, ConfigError> {
        self.seeds
            .iter()
            .map(|s| parse_seed(s).map_err(|e| invalid("p2p.seeds", e)))
            .collect()
    }
}

fn parse_multiaddr(s: &str) -> Result<Multiaddr, String> {
    if s.len() > MAX_STRING {
        return Err(format!("longer than {MAX_STRING} bytes"));
    }
    s.parse::<Multiaddr>()
        .map_err(|e| format!("{s:?} is not a multiaddr: {e}"))
}

/// Parses a seed: a multiaddr ending in `/p2p/<peer id>`.
pub fn parse_seed(s: &str) -> Result<(PeerId, Multiaddr), String> {
    let mut addr = parse_multiaddr(s)?;
    match addr.pop() {
        Some(Protocol::P2p(peer)) if !addr.is_empty() => Ok((peer, addr)),
        _ => Err(format!(
            "{s:?} must be an address ending in /p2p/<peer id>, such as \
             /ip4/192.0.2.1/tcp/7401/p2p/12D3KooW..."
        )),
    }
}

/// The `[trust]` table: which peers this node admits at all, besides their valid identity
/// proofs, and how much one peer may ask of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrustConfig {
    /// Peer ids never admitted: their connections are closed, their requests refused, news of
    /// them ignored. At most [`shoal_dht::MAX_TRUST_LIST`]. Default empty.
    pub deny: Vec<String>,
    /// When not empty, the only peer ids admitted (a closed network). At most
    /// [`shoal_dht::MAX_TRUST_LIST`]. Default empty (every peer with a valid proof).
    pub allow: Vec<String>,
    /// Requests of one method one peer may make per second on average; 0 turns the limit off.
    /// Default 10,000.
    pub peer_requests_per_second: u32,
    /// Requests of one method one peer may make at once. Default 20,000.
    pub peer_request_burst: u32,
    /// Bytes one peer may send per second on average, all protocols together; beyond it (and
    /// its burst) its requests are refused and its messages dropped. 0 turns the limit off.
    /// Default 33,554,432 (32 MiB).
    pub peer_bytes_per_second: u64,
    /// Bytes one peer may send at once. Default 134,217,728 (128 MiB).
    pub peer_bytes_burst: u64,
    /// Seconds a peer may stay over its request rate or bandwidth without backing off before
    /// it is banned; 0 never bans for it. Default 30.
    pub over_limit_ban_secs: u64,
    /// Departures (failed or left) of one peer within `churn_window_secs` after which it is
    /// held out until fewer stand in the window; 0 turns the filter off. Default 10.
    pub churn_max_departures: u32,
    /// The churn filter's window, seconds, at most a year. Default 3,600.
    pub churn_window_secs: u64,
    /// Seconds a peer whose standing fell to zero is refused as a denied peer is; 0 never
    /// bans. Default 3,600. At most a year.
    pub ban_secs: u64,
    /// Standing a peer regains an hour, of 100. Default 10.
    pub standing_recovery_per_hour: u32,
}

impl Default for TrustConfig {
    fn default() -> Self {
        let policy = shoal_dht::TrustPolicy::default();
        Self {
            deny: Vec::new(),
            allow: Vec::new(),
            peer_requests_per_second: policy.peer_requests_per_second,
            peer_request_burst: policy.peer_request_burst,
            peer_bytes_per_second: policy.peer_bytes_per_second,
            peer_bytes_burst: policy.peer_bytes_burst,
            over_limit_ban_secs: policy.over_limit_ban_after.as_secs(),
            churn_max_departures: policy.churn_max_departures,
            churn_window_secs: policy.churn_window.as_secs(),
            ban_secs: policy.ban_period.as_secs(),
            standing_recovery_per_hour: policy.standing_recovery_per_hour,
        }
    }
}

/// Longest ban `trust.ban_secs` may set: a year (an `Instant` far in the future overflows).
const MAX_BAN_SECS: u64 = 365 * 86_400;

impl TrustConfig {
    /// The DHT's policy: each list's peer ids as bytes.
    pub fn policy(&self) -> Result<shoal_dht::TrustPolicy, ConfigError> {
        let list = |name: &str, ids: &[String]| -> Result<Vec<Vec<u8>>, ConfigError> {
            if ids.len() > shoal_dht::MAX_TRUST_LIST {
                return Err(invalid(
                    name,
                    format!("{} peers, at most {}", ids.len(), shoal_dht::MAX_TRUST_LIST),
                ));
            }
            ids.iter()
                .map(|id| {
                    if id.len() > MAX_STRING {
                        return Err(invalid(name, format!("longer than {MAX_STRING} bytes")));
                    }
                    id.parse::<PeerId>()
                        .map(|p| p.to_bytes())
                        .map_err(|e| invalid(name, format!("{id:?} is not a peer id: {e}")))
                })
                .collect()
        };
        for (name, secs) in [
            ("trust.ban_secs", self.ban_secs),
            ("trust.over_limit_ban_secs", self.over_limit_ban_secs),
            ("trust.churn_window_secs", self.churn_window_secs),
        ] {
            if secs > MAX_BAN_SECS {
                return Err(invalid(
                    name,
                    format!("{secs} s, at most {MAX_BAN_SECS} (a year)"),
                ));
            }
        }
        Ok(shoal_dht::TrustPolicy {
            deny: list("trust.deny", &self.deny)?,
            allow: list("trust.allow", &self.allow)?,
            peer_requests_per_second: self.peer_requests_per_second,
            peer_request_burst: self.peer_request_burst,
            peer_bytes_per_second: self.peer_bytes_per_second,
            peer_bytes_burst: self.peer_bytes_burst,
            over_limit_ban_after: Duration::from_secs(self.over_limit_ban_secs),
            churn_max_departures: self.churn_max_departures,
            churn_window: Duration::from_secs(self.churn_window_secs),
            ban_period: Duration::from_secs(self.ban_secs),
            standing_recovery_per_hour: self.standing_recovery_per_hour,
        })
    }
}

/// The `[dht]` table: overrides of the network preset. Unset options keep the preset's value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DhtSettings {
    /// Kademlia's k: replicas of a record and peers per bucket, 1 to [`MAX_REPLICATION`].
    /// Default: the preset's (20; 8 on local).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replication_factor: Option<NonZeroUsize>,
    /// Replicas that must acknowledge a put when the caller gives no quorum, at most the
    /// replication factor. Default: the preset's (3; 2 on local).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub put_quorum: Option<NonZeroUsize>,
    /// Bound of one query, seconds, 1 to [`MAX_QUERY_TIMEOUT_SECS`]. Default: the preset's
    /// (30; 10 on local).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub query_timeout_secs: Option<NonZeroU64>,
    /// Lifetime of a record put without an explicit TTL, seconds, at most the longest TTL.
    /// Default 86,400 (a day).
    pub default_ttl_secs: NonZeroU64,
    /// Longest record lifetime accepted, seconds, 1 to [`MAX_TTL_SECS`]. Default: the preset's
    /// (604,800: 7 days).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_ttl_secs: Option<NonZeroU64>,
    /// Records held at most, 1 to [`MAX_RECORDS`]. Default: the preset's (65,536).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_records: Option<NonZeroUsize>,
    /// Groups of three replicas a get hears from before it answers, 1 to 8 (more resist
    /// replicas serving stale copies, at that many times the requests). Default 1.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub get_paths: Option<NonZeroUsize>,
    /// Disjoint paths an iterative lookup takes (S/Kademlia), 1 to 8; each costs a lookup's
    /// requests. Default 1.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lookup_paths: Option<NonZeroUsize>,
    /// Test only: answer gets as a node that dropped every record would (nothing held, no
    /// closer peers), while still acknowledging puts with receipts: for tests of what the
    /// others do about such a node. Set by `shoal run --dangerous-withhold-records`, never
    /// written out. Default false.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub dangerous_withhold_records: bool,
}

impl Default for DhtSettings {
    fn default() -> Self {
        Self {
            replication_factor: None,
            put_quorum: None,
            query_timeout_secs: None,
            default_ttl_secs: NonZeroU64::new(86_400).unwrap_or(NonZeroU64::MIN),
            max_ttl_secs: None,
            max_records: None,
            get_paths: None,
            lookup_paths: None,
            dangerous_withhold_records: false,
        }
    }
}

/// The `[log]` table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// Output format on stderr. Default `"human"`.
    pub format: LogFormat,
    /// Filter in tracing's `EnvFilter` syntax (`"info"`, `"info,shoal_dht=debug"`), at most
    /// [`MAX_STRING`] bytes. Default `"info"`.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Human,
            level: "info".to_owned(),
        }
    }
}

/// The node's configuration: the TOML config file's schema.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The network, which picks the DHT preset (identity puzzle, stamps, SWIM timing).
    /// Default `"main"`.
    pub network: Network,
    /// The data directory (key, identity proof, database, `rpc.url`). A leading `~/` is the
    /// home directory ([`Config::resolved_data_dir`]). Default `"~/.shoal"` (`./shoal-data`
    /// without `$HOME`).
    pub data_dir: PathBuf,
    /// Worker threads of the node's async runtime; 0 is one per core. `shoal testnet` gives
    /// each of its nodes the cores divided among them, at least one. Default 0.
    pub threads: usize,
    /// Peers and transport.
    pub p2p: P2pConfig,
    /// What this node serves as a circuit relay.
    pub relay: RelayConfig,
    /// Overrides of the network's DHT preset.
    pub dht: DhtSettings,
    /// Allow and deny lists of peers.
    pub trust: TrustConfig,
    /// Tor, used when `p2p.transport` is `"tor"` or `"both"`.
    pub tor: TorConfig,
    /// The JSON-RPC endpoint.
    pub rpc: RpcConfig,
    /// Logging.
    pub log: LogConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            network: Network::Main,
            data_dir: PathBuf::from("~/.shoal"),
            threads: 0,
            p2p: P2pConfig::default(),
            relay: RelayConfig::default(),
            dht: DhtSettings::default(),
            trust: TrustConfig::default(),
            tor: TorConfig::default(),
            rpc: RpcConfig::default(),
            log: LogConfig::default(),
        }
    }
}

/// Values from flags and environment variables; each set one replaces the config's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Overrides {
    /// Replaces [`Config::data_dir`].
    pub data_dir: Option<PathBuf>,
    /// Replaces [`Config::network`].
    pub network: Option<Network>,
    /// Replaces [`P2pConfig::listen`].
    pub listen: Option<Vec<String>>,
    /// Replaces [`P2pConfig::seeds`].
    pub seeds: Option<Vec<String>>,
    /// Replaces the RPC listen address.
    pub rpc_listen: Option<SocketAddr>,
    /// Replaces the RPC auth token.
    pub rpc_token: Option<String>,
    /// Replaces [`LogConfig::format`].
    pub log_format: Option<LogFormat>,
    /// Replaces [`LogConfig::level`].
    pub log_level: Option<String>,
    /// Sets [`DhtSettings::dangerous_withhold_records`] (test only).
    pub dangerous_withhold_records: bool,
}

impl Config {
    /// Parses TOML text (no validation).
    pub fn from_toml(text: &str, path: &Path) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string().trim_end().to_owned(),
        })
    }

    /// Reads, parses and validates the config file at `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let read = |source| ConfigError::Read {
            path: path.to_owned(),
            source,
        };
        let len = std::fs::metadata(path).map_err(read)?.len();
        if len > MAX_CONFIG_BYTES {
            return Err(ConfigError::TooLarge {
                path: path.to_owned(),
                len,
            });
        }
        let text = std::fs::read_to_string(path).map_err(read)?;
        let config = Self::from_toml(&text, path)?;
        config.validate().map_err(|e| ConfigError::InFile {
            path: path.to_owned(),
            source: Box::new(e),
        })?;
        Ok(config)
    }

    /// The configuration in effect: the file at `file` (or the defaults), then `overrides`,
    /// validated.
    pub fn resolve(file: Option<&Path>, overrides: &Overrides) -> Result<Self, ConfigError> {
        let mut config = match file {
            Some(path) => Self::load(path)?,
            None => Self::default(),
        };
        config.apply(overrides);
        config.validate()?;
        Ok(config)
    }

    /// Replaces every value `overrides` sets.
    pub fn apply(&mut self, overrides: &Overrides) {
        let o = overrides.clone();
        if let Some(v) = o.data_dir {
            self.data_dir = v;
        }
        if let Some(v) = o.network {
            self.network = v;
        }
        if let Some(v) = o.listen {
            self.p2p.listen = v;
        }
        if let Some(v) = o.seeds {
            self.p2p.seeds = v;
        }
        if let Some(v) = o.rpc_listen {
            self.rpc.listen = v;
        }
        if let Some(v) = o.rpc_token {
            self.rpc.auth_token = Some(v);
        }
        if let Some(v) = o.log_format {
            self.log.format = v;
        }
        if let Some(v) = o.log_level {
            self.log.level = v;
        }
        if o.dangerous_withhold_records {
            self.dht.dangerous_withhold_records = true;
        }
    }

    /// Checks every value; the error names the field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.data_dir.as_os_str().is_empty() {
            return Err(invalid("data_dir", "must not be empty"));
        }
        if self.data_dir.as_os_str().len() > MAX_STRING {
            return Err(invalid(
                "data_dir",
                format!("longer than {MAX_STRING} bytes"),
            ));
        }
        if self.threads > MAX_THREADS {
            return Err(invalid("threads", format!("more than {MAX_THREADS}")));
        }
        let tor_only = self.p2p.transport == Transport::Tor;
        match self.p2p.listen.len() {
            0 if !tor_only => return Err(invalid("p2p.listen", "needs at least one address")),
            n if n > MAX_LISTEN => {
                return Err(invalid(
                    "p2p.listen",
                    format!("{n} addresses, at most {MAX_LISTEN}"),
                ));
            }
            _ => {}
        }
        self.p2p.listen_addrs()?;
        if self.p2p.seeds.len() > MAX_SEEDS {
            return Err(invalid(
                "p2p.seeds",
                format!("{} seeds, at most {MAX_SEEDS}", self.p2p.seeds.len()),
            ));
        }
        let seeds = self.p2p.seed_addrs()?;
        let retry = Duration::from_secs(self.p2p.hole_punch_retry_secs);
        if !shoal_dht::nat::punch_retry_in_bounds(retry) {
            return Err(invalid(
                "p2p.hole_punch_retry_secs",
                format!("must be 1 to {}", shoal_dht::nat::MAX_PUNCH_RETRY.as_secs()),
            ));
        }
        if tor_only {
            // A Tor-only node never listens on or dials an IP address.
            if let Some(a) = self.p2p.listen.first() {
                return Err(invalid(
                    "p2p.listen",
                    format!(
                        "{a:?}: a Tor-only node listens only on its onion address; \
                         set listen = [] (or transport = \"both\")"
                    ),
                ));
            }
            if let Some((_, a)) = seeds.iter().find(|(_, a)| crate::tor::reveals_ip(a)) {
                return Err(invalid(
                    "p2p.seeds",
                    format!("{a}: a Tor-only node accepts only /onion3 seeds"),
                ));
            }
        }
        if self.p2p.transport != Transport::Tcp {
            self.tor
                .transport_config(&self.resolved_data_dir())
                .map_err(|e| invalid("tor", e))?;
        }
        let dht = &self.dht;
        if let Some(k) = dht.replication_factor
            && k.get() > MAX_REPLICATION
        {
            return Err(invalid(
                "dht.replication_factor",
                format!("{k} is above {MAX_REPLICATION}"),
            ));
        }
        if let Some(t) = dht.query_timeout_secs
            && t.get() > MAX_QUERY_TIMEOUT_SECS
        {
            return Err(invalid(
                "dht.query_timeout_secs",
                format!("{t} is above {MAX_QUERY_TIMEOUT_SECS}"),
            ));
        }
        if let Some(t) = dht.max_ttl_secs
            && t.get() > MAX_TTL_SECS
        {
            return Err(invalid(
                "dht.max_ttl_secs",
                format!("{t} is above {MAX_TTL_SECS}"),
            ));
        }
        if let Some(n) = dht.max_records
            && n.get() > MAX_RECORDS
        {
            return Err(invalid(
                "dht.max_records",
                format!("{n} is above {MAX_RECORDS}"),
            ));
        }
        let max_ttl = self.max_ttl();
        if dht.default_ttl_secs.get() > max_ttl.as_secs() {
            return Err(invalid(
                "dht.default_ttl_secs",
                format!(
                    "{} is above the longest TTL, {} s",
                    dht.default_ttl_secs,
                    max_ttl.as_secs()
                ),
            ));
        }
        self.rpc.validate().map_err(|e| invalid("rpc", e))?;
        if self.log.level.len() > MAX_STRING {
            return Err(invalid(
                "log.level",
                format!("longer than {MAX_STRING} bytes"),
            ));
        }
        tracing_subscriber::EnvFilter::try_new(&self.log.level)
            .map_err(|e| invalid("log.level", format!("{:?}: {e}", self.log.level)))?;
        self.to_dht_config().map(|_| ())
    }

    fn max_ttl(&self) -> Duration {
        let secs = match self.dht.max_ttl_secs {
            Some(t) => t.get(),
            None => self.network.preset().records.max_ttl,
        };
        Duration::from_secs(secs)
    }

    /// The TTL of puts that give none.
    pub fn default_ttl(&self) -> Duration {
        Duration::from_secs(self.dht.default_ttl_secs.get())
    }

    /// The data directory with a leading `~/` replaced by `$HOME` (`./shoal-data` when the
    /// default `~/.shoal` is used without `$HOME`).
    pub fn resolved_data_dir(&self) -> PathBuf {
        resolve_home(&self.data_dir)
    }

    /// The DHT configuration: the network's preset, this file's `[dht]` overrides and the
    /// data directory, validated.
    pub fn to_dht_config(&self) -> Result<shoal_dht::Config, ConfigError> {
        let mut c = self.network.preset();
        let d = &self.dht;
        if let Some(k) = d.replication_factor {
            c.replication_factor = k;
        }
        if let Some(q) = d.put_quorum {
            c.put_quorum = q;
        }
        if let Some(t) = d.query_timeout_secs {
            c.query_timeout = Duration::from_secs(t.get());
        }
        if let Some(t) = d.max_ttl_secs {
            c.records.max_ttl = t.get();
        }
        if let Some(n) = d.max_records {
            c.store.max_records = n.get();
        }
        if let Some(d) = d.get_paths {
            c.get_paths = d;
        }
        if let Some(d) = d.lookup_paths {
            c.lookup_paths = d;
        }
        c.dangerous_withhold_records = d.dangerous_withhold_records;
        c.trust = self.trust.policy()?;
        c.data_dir = Some(self.resolved_data_dir());
        // NAT traversal is for TCP: a Tor node is reached through its onion service.
        let tcp = self.p2p.transport == Transport::Tcp;
        c.nat.auto = tcp && self.p2p.nat == NatMode::Auto;
        c.nat.upnp = c.nat.auto && self.p2p.upnp;
        c.nat.relay_service = c.nat.auto && self.p2p.relay_service;
        c.nat.relay_limits = self.relay.limits()?;
        c.nat.punch_retry = Duration::from_secs(self.p2p.hole_punch_retry_secs);
        if !tcp {
            crate::tor::fit_for_onions(&mut c);
        }
        c.validate().map_err(|e| invalid("dht", e))?;
        Ok(c)
    }

    /// This configuration as TOML, with the documentation of [`DEFAULT_CONFIG`].
    pub fn to_documented_toml(&self) -> Result<String, ConfigError> {
        let value = toml::Value::try_from(self).map_err(|e| invalid("(config)", e))?;
        let mut out = String::with_capacity(DEFAULT_CONFIG.len() + 256);
        let mut table: Option<String> = None;
        for line in DEFAULT_CONFIG.lines() {
            let trimmed = line.trim();
            if let Some(name) = trimmed.strip_prefix('[').and_then(|t| t.strip_suffix(']')) {
                table = Some(name.to_owned());
            } else if let Some((key, commented)) = option_line(trimmed) {
                let scope = match &table {
                    Some(t) => value.get(t.as_str()),
                    None => Some(&value),
                };
                match scope.and_then(|s| s.get(key)) {
                    Some(v) => {
                        out.push_str(&format!("{key} = {v}\n"));
                        continue;
                    }
                    // An unset option keeps its commented line.
                    None if commented => {}
                    // A set option always serializes; keep the line if it somehow did not.
                    None => {}
                }
            }
            out.push_str(line);
            out.push('\n');
        }
        Ok(out)
    }
}

/// `key = ...` or `# key = ...` with a lowercase snake-case key: the key and whether the line
/// is commented out.
fn option_line(line: &str) -> Option<(&str, bool)> {
    let (rest, commented) = match line.strip_prefix("# ") {
        Some(rest) => (rest, true),
        None => (line, false),
    };
    let (key, _) = rest.split_once(" = ")?;
    let snake = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_';
    (!key.is_empty() && key.chars().all(snake)).then_some((key, commented))
}

/// `path` with a leading `~` or `~/` replaced by `$HOME`; without `$HOME`, `~/.shoal` becomes
/// `./shoal-data` and other `~` paths are relative to the working directory.
pub fn resolve_home(path: &Path) -> PathBuf {
    let Ok(rest) = path.strip_prefix("~") else {
        return path.to_owned();
    };
    match std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        Some(home) => PathBuf::from(home).join(rest),
        None if rest == Path::new(".shoal") => PathBuf::from("shoal-data"),
        None => rest.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documented_default_file_is_the_default() {
        let parsed = Config::from_toml(DEFAULT_CONFIG, Path::new("default-config.toml")).unwrap();
        assert_eq!(parsed, Config::default());
        Config::default().validate().unwrap();
        // Rendering the defaults gives the documented file back, byte for byte.
        assert_eq!(
            Config::default().to_documented_toml().unwrap(),
            DEFAULT_CONFIG
        );
    }

    #[test]
    fn documented_rendering_round_trips_every_option() {
        let seed =
            "/ip4/127.0.0.1/tcp/7401/p2p/12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA";
        let config = Config {
            network: Network::Testnet,
            data_dir: PathBuf::from("/var/lib/shoal"),
            threads: 3,
            p2p: P2pConfig {
                listen: vec!["/ip4/127.0.0.1/tcp/9000".into(), "/ip6/::1/tcp/9000".into()],
                seeds: vec![seed.into()],
                transport: Transport::Tcp,
                nat: NatMode::Off,
                upnp: true,
                relay_service: false,
                hole_punch_retry_secs: 120,
            },
            relay: RelayConfig {
                max_reservations: 7,
                max_reservations_per_peer: 2,
                max_circuits: 9,
                max_circuits_per_peer: 3,
                max_circuit_secs: 60,
                max_circuit_bytes: 1 << 20,
            },
            dht: DhtSettings {
                replication_factor: NonZeroUsize::new(10),
                put_quorum: NonZeroUsize::new(2),
                query_timeout_secs: NonZeroU64::new(20),
                default_ttl_secs: NonZeroU64::new(3600).unwrap(),
                max_ttl_secs: NonZeroU64::new(7200),
                max_records: NonZeroUsize::new(1000),
                get_paths: NonZeroUsize::new(2),
                lookup_paths: NonZeroUsize::new(3),
                dangerous_withhold_records: false,
            },
            trust: TrustConfig {
                deny: vec!["12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA".into()],
                allow: Vec::new(),
                peer_requests_per_second: 500,
                peer_request_burst: 1000,
                peer_bytes_per_second: 1_000_000,
                peer_bytes_burst: 4_000_000,
                over_limit_ban_secs: 60,
                churn_max_departures: 4,
                churn_window_secs: 900,
                ban_secs: 600,
                standing_recovery_per_hour: 30,
            },
            tor: TorConfig {
                onion_port: 4001,
                network: crate::tor::TorNetwork::Private,
                authorities: vec!["0123456789ABCDEF0123456789ABCDEF01234567".into()],
                fallbacks: vec![crate::tor::TorFallback {
                    rsa_identity: "0123456789ABCDEF0123456789ABCDEF01234567".into(),
                    ed_identity: "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8".into(),
                    orports: vec!["127.0.0.1:5000".parse().unwrap()],
                }],
                hsdir_interval_minutes: std::num::NonZeroU32::new(8),
                min_circuit_timeout_ms: std::num::NonZeroU32::new(2000),
                dangerous_ignore_subnet_families: true,
                state_dir: Some(PathBuf::from("/var/lib/shoal/arti")),
                dangerous_trust_all_file_permissions: true,
            },
            rpc: RpcConfig {
                listen: "0.0.0.0:9001".parse().unwrap(),
                auth_token: Some("a-\"secret\"-token-0123456789".into()),
                max_connections: 7,
                ..RpcConfig::default()
            },
            log: LogConfig {
                format: LogFormat::Json,
                level: "debug,libp2p=info".into(),
            },
        };
        config.validate().unwrap();
        let text = config.to_documented_toml().unwrap();
        assert_eq!(Config::from_toml(&text, Path::new("x")).unwrap(), config);
        assert!(text.contains("# Kademlia's k"), "documentation kept");
        let dht = config.to_dht_config().unwrap();
        assert_eq!(dht.network, "testnet");
        assert_eq!(dht.replication_factor.get(), 10);
        assert_eq!(dht.query_timeout, Duration::from_secs(20));
        assert_eq!(dht.records.max_ttl, 7200);
        assert_eq!(dht.store.max_records, 1000);
        assert_eq!(dht.data_dir, Some(PathBuf::from("/var/lib/shoal")));
    }

    #[test]
    fn presets_follow_the_network() {
        for (network, name) in [
            (Network::Main, "main"),
            (Network::Testnet, "testnet"),
            (Network::Local, "local"),
        ] {
            let config = Config {
                network,
                ..Config::default()
            };
            let dht = config.to_dht_config().unwrap();
            assert_eq!(dht.network, name);
            assert_eq!(dht.puzzle, network.preset().puzzle);
        }
    }

    #[test]
    fn unknown_fields_and_bad_types_name_the_field() {
        let err = Config::from_toml("[p2p]\nlisen = []\n", Path::new("a.toml")).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("a.toml") && msg.contains("lisen"), "{msg}");
        let err = Config::from_toml("network = \"moon\"\n", Path::new("a.toml")).unwrap_err();
        assert!(err.to_string().contains("moon"), "{err}");
        let err = Config::from_toml("[dht]\nput_quorum = 0\n", Path::new("a.toml")).unwrap_err();
        assert!(err.to_string().contains("put_quorum"), "{err}");
    }

    fn field_of(config: Config) -> String {
        match config.validate() {
            Err(ConfigError::Invalid { field, .. }) => field,
            other => panic!("expected an invalid field, got {other:?}"),
        }
    }

    #[test]
    fn trust_lists_take_peer_ids() {
        let peer = "12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA";
        let mut c = Config::default();
        c.trust.deny = vec![peer.into()];
        let policy = c.to_dht_config().expect("valid").trust;
        assert_eq!(
            policy.deny,
            vec![peer.parse::<PeerId>().unwrap().to_bytes()]
        );
        assert!(policy.allow.is_empty());
        c.trust.allow = vec!["not-a-peer".into()];
        assert_eq!(field_of(c), "trust.allow");
        let mut c = Config::default();
        c.trust.deny = vec![peer.into(); shoal_dht::MAX_TRUST_LIST + 1];
        assert_eq!(field_of(c), "trust.deny");
    }

    #[test]
    fn validation_names_the_field() {
        let mut c = Config::default();
        c.p2p.seeds = vec!["/ip4/127.0.0.1/tcp/1".into()];
        assert_eq!(field_of(c), "p2p.seeds");
        let mut c = Config::default();
        c.p2p.listen = vec!["not an address".into()];
        assert_eq!(field_of(c), "p2p.listen");
        let mut c = Config::default();
        c.p2p.listen.clear();
        assert_eq!(field_of(c), "p2p.listen");
        // A Tor-only node: no IP listen address, only onion seeds, a usable [tor] table.
        let mut c = Config::default();
        c.p2p.transport = Transport::Tor;
        assert_eq!(field_of(c.clone()), "p2p.listen");
        c.p2p.listen.clear();
        c.validate().expect("Tor-only on the public network");
        c.p2p.seeds = vec![
            "/ip4/192.0.2.1/tcp/7401/p2p/12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA"
                .into(),
        ];
        assert_eq!(field_of(c.clone()), "p2p.seeds");
        c.p2p.seeds.clear();
        c.tor.network = crate::tor::TorNetwork::Private;
        assert_eq!(field_of(c.clone()), "tor");
        // "both" keeps TCP listen addresses and IP seeds.
        let mut c = Config::default();
        c.p2p.transport = Transport::Both;
        c.validate().expect("both on the public network");
        assert_eq!(
            c.to_dht_config().expect("valid").swim,
            shoal_swim::Config::tor()
        );
        for secs in [0, 3601] {
            let mut c = Config::default();
            c.p2p.hole_punch_retry_secs = secs;
            assert_eq!(field_of(c), "p2p.hole_punch_retry_secs");
        }
        let mut c = Config::default();
        c.rpc.listen = "0.0.0.0:7400".parse().unwrap();
        assert_eq!(field_of(c), "rpc");
        let mut c = Config::default();
        c.dht.put_quorum = NonZeroUsize::new(30);
        assert_eq!(field_of(c), "dht");
        let mut c = Config::default();
        c.dht.default_ttl_secs = NonZeroU64::new(8 * 86_400).unwrap();
        assert_eq!(field_of(c), "dht.default_ttl_secs");
        let mut c = Config::default();
        c.log.level = "info,=[".into();
        assert_eq!(field_of(c), "log.level");
        let c = Config {
            threads: MAX_THREADS + 1,
            ..Config::default()
        };
        assert_eq!(field_of(c), "threads");
    }

    #[test]
    fn overrides_replace_file_values() {
        let dir = std::env::temp_dir().join(format!("shoal-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("shoal.toml");
        std::fs::write(
            &path,
            "network = \"testnet\"\ndata_dir = \"/from/file\"\n[log]\nlevel = \"warn\"\n",
        )
        .unwrap();
        let file_only = Config::resolve(Some(&path), &Overrides::default()).unwrap();
        assert_eq!(file_only.data_dir, PathBuf::from("/from/file"));
        assert_eq!(file_only.network, Network::Testnet);
        let overrides = Overrides {
            data_dir: Some("/from/flag".into()),
            log_format: Some(LogFormat::Json),
            ..Overrides::default()
        };
        let both = Config::resolve(Some(&path), &overrides).unwrap();
        assert_eq!(both.data_dir, PathBuf::from("/from/flag"));
        assert_eq!(both.network, Network::Testnet, "file value kept");
        assert_eq!(both.log.level, "warn", "file value kept");
        assert_eq!(both.log.format, LogFormat::Json);
        std::fs::write(&path, "network = \"testnet\"\n[p2p]\ntransport = \"tor\"\n").unwrap();
        let err = Config::resolve(Some(&path), &Overrides::default()).unwrap_err();
        assert!(matches!(err, ConfigError::InFile { .. }), "{err}");
        assert!(err.to_string().contains("shoal.toml"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn home_is_resolved() {
        assert_eq!(resolve_home(Path::new("/abs")), PathBuf::from("/abs"));
        assert_eq!(resolve_home(Path::new("rel/dir")), PathBuf::from("rel/dir"));
        if let Some(home) = std::env::var_os("HOME") {
            assert_eq!(
                resolve_home(Path::new("~/.shoal")),
                PathBuf::from(home).join(".shoal")
            );
        }
    }

    #[test]
    fn seeds_parse() {
        let (peer, addr) = parse_seed(
            "/ip4/127.0.0.1/tcp/7401/p2p/12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA",
        )
        .unwrap();
        assert_eq!(addr.to_string(), "/ip4/127.0.0.1/tcp/7401");
        assert_eq!(
            peer.to_string(),
            "12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA"
        );
        assert!(parse_seed("/p2p/12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA").is_err());
    }
}
