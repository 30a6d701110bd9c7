//! Shoal's DHT: Kademlia over a SWIM-driven overlay, with an identity gate, signed stamped
//! records and lockstep.
//!
//! Run a node by building an [`EventLoop`] (key, identity proof, [`Config`], transport), spawning
//! [`EventLoop::run`] on a tokio runtime and driving it through the cloneable [`Client`]: listen,
//! join through seeds, put, get, find nodes, announce values, read and subscribe to notices,
//! read counters and the member list, and shut down gracefully ([`Client::shutdown`]).
//!
//! - [`core`]: every rule of the DHT as a sans-IO state machine (admission, the routing table,
//!   record acceptance, puts and replicas, gets and read repair, lockstep, lookups), with SWIM's
//!   membership inside. It takes time as arguments and returns actions.
//! - [`api`]: what the node's operations take and give back, and its counters.
//! - [`node`]: the client and the event loop, which translates between the swarm and the core
//!   and commits writes off the loop ([`store::Writer`]).
//! - [`sim`]: a deterministic simulator of many cores on virtual time (tests and
//!   `benches/dht_sim.rs`).
//! - [`behaviour`]: the combined libp2p behaviour (identify, SWIM's transport, the gate, the
//!   DHT protocol).
//! - [`wire`]: the DHT protocol `/shoal/<network>/dht/4.0.0` and its bounded codec.
//! - [`link`]: its transport, requests and answers as frames on one long-lived stream per
//!   connection and direction.
//! - [`config`]: the node's configuration and presets.
//! - [`record`]: the signed CBOR record envelope and its validation.
//! - [`receipt`]: a replica's signed receipt for a record it keeps.
//! - [`gate`]: the identity gate behaviour on `/shoal/identity/1`.
//! - [`identity`]: `shoal-pow`'s keys in their libp2p forms (`PeerId`, `Keypair`).
//! - [`lockstep`]: lockstep notices and the book of the latest notice per key and publisher.
//! - [`store`]: the redb database and the group-commit writer.
//! - [`nat`]: NAT traversal's rules: reachability, and the circuit relays a private node
//!   reserves at (AutoNAT, circuit relay v2, DCUtR and UPnP do the protocols).
//!
//! A put is kept locally and durably first, then sent to the `k` closest nodes, and returns once
//! `quorum` of them validated and kept it (each acknowledges only after its own commit). A
//! member learned through gossip is verified with the proof the member that named it relays, so
//! a node connects only to the peers it talks to (connections close when idle).

pub mod api;
pub mod behaviour;
pub mod config;
pub mod core;
mod envelope;
pub mod gate;
pub mod identity;
pub mod link;
pub mod lockstep;
pub mod nat;
pub mod node;
pub mod receipt;
pub mod record;
pub mod sim;
pub mod store;
pub mod wire;

pub use behaviour::Behaviour;
pub use config::{Config, ConfigError, MAX_TRUST_LIST, NatConfig, RelayLimits, TrustPolicy};
pub use envelope::EnvelopeError;
pub use identity::{NodeKeyExt, PublicKeyExt};
pub use node::{Client, EventLoop};
