//! The node's Tor side: the `[tor]` table of the config file, the libp2p transport for each
//! `p2p.transport` mode, and the timing a node reached through onion services needs.
//!
//! - `tcp`: TCP only; `[tor]` is ignored.
//! - `tor`: onion services only. The node never dials, listens on or advertises an IP address:
//!   the Tor transport refuses IP addresses before any traffic, the node listens only on its
//!   own onion address (derived from its key, so the address and the peer id prove each other),
//!   and its SWIM, identify and Kademlia addresses are that onion address alone.
//! - `both`: TCP and onion services; the node bridges TCP-only and Tor-only nodes. It reveals its
//!   IP address, like any TCP node.
//!
//! Misuse warning: Tor hides a node's address only if nothing else reveals it. Do not give a
//! Tor-only node IP seeds or IP listen addresses (the configuration refuses both), and do not
//! reuse a Tor-only node's key on a TCP node: the onion address is the key.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::time::Duration;

use libp2p::core::upgrade::Version;
use libp2p::{Multiaddr, Transport as _, noise, yamux};
use serde::{Deserialize, Serialize};
use shoal_dht::NodeKeyExt;
use shoal_dht::node::BoxedTransport;
use shoal_pow::NodeKey;

/// Which Tor network the node uses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TorNetwork {
    /// The public Tor network (arti's built-in directory authorities). The default.
    #[default]
    Public,
    /// A private network given by `authorities` and `fallbacks` (such as the one
    /// `shoal tor-testnet` starts).
    Private,
}

/// A directory cache of a private Tor network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TorFallback {
    /// The relay's RSA identity fingerprint, 40 hex digits.
    pub rsa_identity: String,
    /// The relay's ed25519 identity, unpadded base64.
    pub ed_identity: String,
    /// The relay's OR ports, at least one.
    pub orports: Vec<SocketAddr>,
}

/// The `[tor]` table: used when `p2p.transport` is `"tor"` or `"both"`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TorConfig {
    /// Virtual port of the node's onion service. Default 7402.
    pub onion_port: u16,
    /// `"public"` or `"private"`. Default `"public"`.
    pub network: TorNetwork,
    /// Private network only: the v3 identity fingerprints of its directory authorities.
    pub authorities: Vec<String>,
    /// Private network only: its directory caches.
    pub fallbacks: Vec<TorFallback>,
    /// Private network only: the onion-service directory period in minutes (a test network
    /// voting every `v` seconds needs `24 * v / 60`). Default: the consensus value.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hsdir_interval_minutes: Option<NonZeroU32>,
    /// Private network only: the least time arti allows a circuit build or a round trip, in
    /// milliseconds (Tor's `cbtmintimeout`; a loopback network needs about 2,000, or arti
    /// learns timeouts a busy machine cannot meet). Default: the consensus value.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_circuit_timeout_ms: Option<NonZeroU32>,
    /// Private loopback test networks only: build circuits through relays sharing one address.
    /// Default `false`.
    pub dangerous_ignore_subnet_families: bool,
    /// Where arti keeps its state and directory cache. Default `<data_dir>/tor`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state_dir: Option<PathBuf>,
    /// Test directories only: trust any file permissions on arti's directories. Default
    /// `false`.
    pub dangerous_trust_all_file_permissions: bool,
}

impl Default for TorConfig {
    fn default() -> Self {
        Self {
            onion_port: 7402,
            network: TorNetwork::Public,
            authorities: Vec::new(),
            fallbacks: Vec::new(),
            hsdir_interval_minutes: None,
            min_circuit_timeout_ms: None,
            dangerous_ignore_subnet_families: false,
            state_dir: None,
            dangerous_trust_all_file_permissions: false,
        }
    }
}

/// Why the Tor side could not start. Nothing was started.
#[derive(Debug, thiserror::Error)]
pub enum TorError {
    /// The configuration is unusable.
    #[error("tor: {0}")]
    Config(#[from] shoal_tor::ConfigError),
    /// arti could not start or bootstrap.
    #[error("tor: {0}")]
    Transport(#[from] shoal_tor::Error),
    /// The node key could not be turned into an onion key.
    #[error("tor: {0}")]
    Key(#[from] shoal_tor::KeyError),
}

impl TorConfig {
    /// The transport crate's configuration, with arti's state under `data_dir/tor` unless
    /// `state_dir` says otherwise.
    pub fn transport_config(&self, data_dir: &Path) -> Result<shoal_tor::Config, TorError> {
        let dir = self
            .state_dir
            .clone()
            .unwrap_or_else(|| data_dir.join("tor"));
        let mut config = match self.network {
            TorNetwork::Public => shoal_tor::Config {
                state_dir: Some(dir.join("state")),
                cache_dir: Some(dir.join("cache")),
                ..shoal_tor::Config::public()
            },
            TorNetwork::Private => shoal_tor::Config::private(
                shoal_tor::PrivateNetwork {
                    authority_v3idents: self.authorities.clone(),
                    fallbacks: self
                        .fallbacks
                        .iter()
                        .map(|f| shoal_tor::Fallback {
                            rsa_identity: f.rsa_identity.clone(),
                            ed_identity: f.ed_identity.clone(),
                            orports: f.orports.clone(),
                        })
                        .collect(),
                    hsdir_interval_minutes: self.hsdir_interval_minutes,
                    min_circuit_timeout: self
                        .min_circuit_timeout_ms
                        .map(|ms| Duration::from_millis(ms.get().into())),
                    dangerous_ignore_subnet_families: self.dangerous_ignore_subnet_families,
                },
                &dir,
            ),
        };
        config.dangerous_trust_all_file_permissions = self.dangerous_trust_all_file_permissions;
        config.validate()?;
        Ok(config)
    }

    /// The `[tor]` table of a private network, as written by `shoal tor-testnet`.
    pub fn for_private_network(network: &shoal_tor::PrivateNetwork) -> Self {
        Self {
            network: TorNetwork::Private,
            authorities: network.authority_v3idents.clone(),
            fallbacks: network
                .fallbacks
                .iter()
                .map(|f| TorFallback {
                    rsa_identity: f.rsa_identity.clone(),
                    ed_identity: f.ed_identity.clone(),
                    orports: f.orports.clone(),
                })
                .collect(),
            hsdir_interval_minutes: network.hsdir_interval_minutes,
            min_circuit_timeout_ms: network.min_circuit_timeout.map(|t| {
                NonZeroU32::new(u32::try_from(t.as_millis()).unwrap_or(u32::MAX))
                    .unwrap_or(NonZeroU32::MIN)
            }),
            dangerous_ignore_subnet_families: network.dangerous_ignore_subnet_families,
            dangerous_trust_all_file_permissions: true,
            ..Self::default()
        }
    }
}

/// A node's transport, with the onion address it will listen on when Tor is used.
pub struct NodeTransport {
    /// The authenticated, multiplexed transport.
    pub transport: BoxedTransport,
    /// The node's onion address (`tor` and `both` modes).
    pub onion: Option<Multiaddr>,
}

impl std::fmt::Debug for NodeTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeTransport")
            .field("onion", &self.onion)
            .finish_non_exhaustive()
    }
}

/// Starts arti (bootstrapping it, bounded by the transport config) and builds the transport:
/// Tor alone when `with_tcp` is false, TCP or Tor otherwise.
pub async fn transport(
    key: &NodeKey,
    tor: &TorConfig,
    data_dir: &Path,
    with_tcp: bool,
) -> Result<NodeTransport, TorError> {
    let keypair = key.to_libp2p();
    let onion_key = shoal_tor::signing_key_from_libp2p(&keypair)?;
    let tor_transport =
        shoal_tor::Transport::bootstrap(tor.transport_config(data_dir)?, onion_key).await?;
    let onion = tor_transport.onion_address(tor.onion_port);
    // Invariant: noise accepts every ed25519 keypair.
    let noise = noise::Config::new(&keypair).expect("noise accepts ed25519 keys");
    let transport = if with_tcp {
        let tcp = libp2p::tcp::tokio::Transport::new(libp2p::tcp::Config::default().nodelay(true));
        tcp.or_transport(tor_transport)
            .upgrade(Version::V1)
            .authenticate(noise)
            .multiplex(yamux::Config::default())
            .boxed()
    } else {
        tor_transport
            .upgrade(Version::V1)
            .authenticate(noise)
            .multiplex(yamux::Config::default())
            .boxed()
    };
    Ok(NodeTransport {
        transport,
        onion: Some(onion),
    })
}

/// Fits a DHT configuration to onion round trips (hundreds of milliseconds to seconds, and
/// slow first connections): SWIM's and the broadcast's Tor presets, longer query, gate and
/// request bounds, and no second dial of a seed (another rendezvous circuit).
pub fn fit_for_onions(config: &mut shoal_dht::Config) {
    config.swim = shoal_swim::Config::tor();
    config.broadcast = shoal_broadcast::Config::tor();
    config.seed_redial = None;
    config.query_timeout = config.query_timeout.max(Duration::from_secs(90));
    config.gate_timeout = config.gate_timeout.max(Duration::from_secs(60));
    config.request_timeout = config.request_timeout.max(Duration::from_secs(60));
    config.idle_connection_timeout = config.idle_connection_timeout.max(Duration::from_secs(300));
}

/// Whether an address would reveal an IP address or a DNS name (a Tor-only node never uses
/// such an address).
pub fn reveals_ip(addr: &Multiaddr) -> bool {
    shoal_tor::reveals_ip(addr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_table_is_the_public_network() {
        let config = TorConfig::default();
        let t = config
            .transport_config(Path::new("/tmp/shoal-test"))
            .expect("the public network validates");
        assert_eq!(t.network, shoal_tor::Network::Public);
        assert_eq!(
            t.state_dir,
            Some(PathBuf::from("/tmp/shoal-test/tor/state"))
        );
    }

    #[test]
    fn a_private_network_needs_authorities() {
        let config = TorConfig {
            network: TorNetwork::Private,
            ..TorConfig::default()
        };
        assert!(config.transport_config(Path::new("/tmp/x")).is_err());
    }

    #[test]
    fn onion_timing_is_slower() {
        let mut c = shoal_dht::Config::testnet();
        fit_for_onions(&mut c);
        assert_eq!(c.swim, shoal_swim::Config::tor());
        assert_eq!(c.broadcast, shoal_broadcast::Config::tor());
        assert!(c.query_timeout >= Duration::from_secs(90));
        assert_eq!(c.seed_redial, None, "no second rendezvous circuit per seed");
        c.validate().expect("the fitted config is valid");
    }
}
