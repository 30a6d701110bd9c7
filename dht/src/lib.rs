//! Shoal's DHT: Kademlia over a SWIM-driven overlay, with an identity gate, signed stamped
//! records and lockstep.
//!
//! Run a node by building an [`EventLoop`] (key, identity proof, [`Config`], transport), spawning
//! [`EventLoop::run`] on a tokio runtime and driving it through the cloneable [`Client`]: listen,
//! join through seeds, put, get, find nodes, announce values, read and subscribe to notices,
//! read counters and the member list, and shut down gracefully ([`Client::shutdown`]).
//!
//! - [`node`]: the client and event loop, and the rules tying the parts together (a peer enters
//!   the routing table only once the gate verified it and SWIM holds it alive).
//! - [`behaviour`]: the combined libp2p behaviour (identify, kad, SWIM, gate, lockstep, replica
//!   puts, proof relay).
//! - [`config`]: the node's configuration and presets.
//! - [`record`]: the signed CBOR record envelope and its validation.
//! - [`gate`]: the identity gate behaviour on `/shoal/identity/1`.
//! - [`relay`]: proofs of members learned through gossip, asked of the member that named them.
//! - [`lockstep`]: lockstep notices and the book of the latest notice per key and publisher.
//! - [`replica`]: puts a replica acknowledges only once it validated and kept the record.
//! - [`lookup`]: closest-peer lookups seeded from the verified membership, ended strictly.
//! - [`store`]: the record store behind Kademlia, in memory or written through to redb.
//!
//! A put's quorum counts replicas that validated and kept the record ([`replica`]); kad's own
//! replication still moves records with `PUT_VALUE`, filtered and validated the same way. With
//! a data directory, the verified live
//! members are written as a routing-table snapshot every
//! [`Config::routing_snapshot_interval`] and on shutdown; after a restart they are dialed and
//! a join without seeds goes through them. A member learned through gossip is verified with the
//! proof the member that named it relays ([`relay`]), so a node connects only to the peers it
//! talks to (connections close when idle): see `benches/lookup.rs` for what a large cluster
//! costs.

pub mod behaviour;
pub mod config;
mod envelope;
pub mod gate;
pub mod lockstep;
pub mod lookup;
pub mod node;
pub mod record;
pub mod relay;
pub mod replica;
pub mod store;

pub use behaviour::Behaviour;
pub use config::{Config, ConfigError};
pub use envelope::EnvelopeError;
pub use node::{Client, EventLoop};
