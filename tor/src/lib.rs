//! Shoal over Tor: a libp2p transport on arti onion services.
//!
//! [`Transport`] implements [`libp2p::core::Transport`] with arti (the Rust Tor client):
//!
//! - **dial** `/onion3/<56 chars>:<port>` (with an optional trailing `/p2p/<id>`, which must
//!   name the onion key's peer) through a Tor circuit; attempts are retried within the bounds
//!   of [`Config`];
//! - **listen** on [`any_onion`]`(port)` or the node's own `/onion3` address: this launches an
//!   onion service whose identity key is the node's ed25519 key, and reports the real
//!   `/onion3/<addr>:<port>` as a new listen address;
//! - **never touch IP**: `/ip4`, `/ip6` and `/dns` addresses are refused before any traffic
//!   ([`TransportError::MultiaddrNotSupported`](libp2p::core::transport::TransportError), and
//!   [`AddrError::IpRefused`] from [`OnionAddr::parse`]).
//!
//! Because the onion key is the node key, an onion address and a [`PeerId`](libp2p::PeerId)
//! prove each other: [`onion_address_of`] computes a peer's address, [`onion_matches_peer`]
//! tells whether an advertised onion address really belongs to the peer advertising it, and
//! [`reveals_ip`] finds addresses a Tor-only node must never dial, listen on or advertise.
//!
//! # Driving it
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use libp2p::core::{Transport as _, upgrade::Version};
//! let keypair = libp2p::identity::Keypair::generate_ed25519();
//! let node_key = shoal_tor::signing_key_from_libp2p(&keypair)?;
//! let tor = shoal_tor::Transport::bootstrap(shoal_tor::Config::public(), node_key).await?;
//! let transport = tor
//!     .upgrade(Version::V1)
//!     .authenticate(libp2p::noise::Config::new(&keypair)?)
//!     .multiplex(libp2p::yamux::Config::default())
//!     .boxed();
//! // Build a Swarm from `transport`, then:
//! // swarm.listen_on(shoal_tor::any_onion(4001))?;
//! # let _ = transport; Ok(()) }
//! ```
//! Kademlia over this transport needs server mode and the onion address added as an external
//! address (`Swarm::add_external_address`), since no address is observed from outside.
//!
//! # Misuse warning
//! Tor hides your IP address only if *nothing else* reveals it. This crate keeps its own
//! traffic inside Tor, but it cannot stop the rest of the program: combining it with TCP
//! (`or_transport`), advertising IP addresses through identify or Kademlia, DNS lookups,
//! or any direct socket deanonymises the node. The onion address is the node key: a node
//! that should not be linked to its Tor identity needs a separate key. Never point tests at
//! the public Tor network; use the private network of the `testnet` feature.
//! [`PrivateNetwork::dangerous_ignore_subnet_families`] and
//! [`Config::dangerous_trust_all_file_permissions`] are for loopback test networks only.
//!
//! # Features
//! - `testnet`: `testnet::TestNetwork`, a private Tor network on 127.0.0.1 run with Debian's
//!   `tor` and `tor-gencert` (tests, local demos).

mod address;
mod arti;
mod config;
mod dial;
mod key;
mod listener;
#[cfg(feature = "testnet")]
pub mod testnet;
mod transport;

pub use address::{AddrError, OnionAddr, onion_address_of, onion_matches_peer, reveals_ip};
pub use config::{Config, ConfigError, Fallback, Network, PrivateNetwork};
pub use dial::DialFailure;
pub use key::{KeyError, signing_key_from_libp2p};
pub use transport::{Error, Transport, any_onion};

/// The arti stream type carried by every connection of [`Transport`].
pub use arti_client::DataStream;
