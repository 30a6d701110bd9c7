//! SWIM membership with the Lifeguard extensions.
//!
//! Shoal keeps its Kademlia routing table honest with SWIM (Das, Gupta, Motivala 2002) plus the
//! three Lifeguard extensions (Dadgar et al. 2018): local health aware probing, local health
//! aware suspicion, and the buddy system. This crate has three layers:
//!
//! - [`message`]: the wire types and their bounded CBOR codec;
//! - a sans-IO core, [`Membership`]: it takes input through `handle_message` and
//!   `handle_timeout`, and its output is drained with `poll_transmit`, `poll_event` and
//!   `poll_timeout`. It never reads a clock and owns a seeded `StdRng`, so a run is a pure
//!   function of its inputs;
//! - [`sim`]: a simulator that runs thousands of cores on virtual time over a seeded link model
//!   (latency, jitter, loss, one-way loss, partitions, crashes, restarts, slow nodes). It is
//!   public so that the benchmark binary (`benches/swim_sim.rs`) and other crates' tests can use
//!   it; it is plain code without extra dependencies.
//!
//! # Identity, addresses and generations
//!
//! The core is generic over the member identity `T:` [`Identity`] (a libp2p `PeerId` in Shoal,
//! a small integer in tests). Addresses travel next to the identity in each [`Update`]. The role
//! that a "generation" plays elsewhere is played by the incarnation: a restarted node passes a
//! starting incarnation to [`Membership::new`] (for instance the wall-clock seconds at start), and
//! whenever it hears that it is suspected, dead or gone at an incarnation at least its own, it
//! refutes with a higher one. A member believed dead comes back only with a newer incarnation.
//!
//! # Caveats
//!
//! Messages are not authenticated here: the transport (libp2p noise) says who sent them, and the
//! DHT admits only members whose identity proof it checked.

#[cfg(test)]
#[macro_use]
#[path = "tests/macros.rs"]
mod test_macros;

pub mod behaviour;
pub mod config;
pub mod error;
pub mod message;
pub mod protocol;
pub mod sim;
mod state;

#[cfg(test)]
mod tests;

pub use behaviour::{Behaviour, WireStats};
pub use config::Config;
pub use error::{CodecError, CommandError, ConfigError};
pub use message::{Address, Credential, Message, Payload, State, Update};
pub use state::{
    Changes, CommandId, Effect, Event, Member, Membership, QueueLengths, Stats, Transmit,
};

/// Name of the libp2p protocol that carries SWIM messages.
pub const PROTOCOL_NAME: &str = "/shoal/swim/1";

/// A member identity: the key of the membership table and the destination of transmits.
///
/// It must be cheap to clone, totally ordered (suspicions that time out at the same instant
/// expire in identity order) and serializable (it travels in messages). Addresses and
/// incarnation are kept next to it in the member record, not in it, so that the same peer keeps
/// the same key across restarts.
pub trait Identity:
    Clone
    + Eq
    + Ord
    + std::hash::Hash
    + std::fmt::Debug
    + serde::Serialize
    + serde::de::DeserializeOwned
{
}

impl<T> Identity for T where
    T: Clone
        + Eq
        + Ord
        + std::hash::Hash
        + std::fmt::Debug
        + serde::Serialize
        + serde::de::DeserializeOwned
{
}
