//! Shoal's DHT: Kademlia over a SWIM-driven overlay, with an identity gate, signed stamped
//! records and lockstep.
//!
//! This crate is being built up in layers. Present so far:
//!
//! - [`record`]: the signed CBOR record envelope and its validation.
//! - [`gate`]: the identity gate behaviour on `/shoal/identity/1`.
//! - [`lockstep`]: lockstep notices and the book of the latest notice per key and publisher.
//! - [`store`]: the record store behind Kademlia, in memory or written through to redb.

pub mod behaviour;
pub mod config;
mod envelope;
pub mod gate;
pub mod lockstep;
pub mod node;
pub mod record;
pub mod store;

pub use behaviour::Behaviour;
pub use config::{Config, ConfigError};
pub use envelope::EnvelopeError;
pub use node::{Client, EventLoop};
