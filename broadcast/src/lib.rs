//! Network-wide broadcast of small signed notices.
//!
//! Shoal spreads notices (in Shoal, signed lockstep notice envelopes) to every node with
//! Plumtree (epidemic broadcast trees: Leitão, Pereira, Rodrigues 2007) over a HyParView-style
//! overlay: a small symmetric active view that notices travel over, and a larger passive view
//! to replace failed neighbors from. Notices belong to per-publisher feeds and are delivered in
//! order per feed. A link that comes up exchanges only the feeds that changed since the two
//! nodes last exchanged (catch-up), and a periodic pull with a Bloom filter repairs what loss
//! took (anti-entropy). This crate has three layers:
//!
//! - [`message`]: the wire types and their bounded CBOR codec, and [`bloom`], the filter of
//!   pulls (part of the wire format);
//! - a sans-IO core, [`Broadcast`]: it takes input through `handle_message`, `handle_timeout`
//!   and membership commands (SWIM is the peer sampling service), and its output is drained
//!   with `poll_transmit`, `poll_event` and `poll_timeout`. It never reads a clock and owns a
//!   seeded `StdRng`, so a run is a pure function of its inputs;
//! - [`sim`]: a simulator that runs thousands of cores on virtual time over a seeded link model
//!   (latency, loss, partitions, crashes) with simulated membership, and measures every notice's
//!   reliability, hops and latency. It is public so that the benchmark binary
//!   (`benches/broadcast_sim.rs`) and other crates' tests can use it.
//!
//! # Identity and verification
//!
//! The core is generic over the peer identity `T:` [`Peer`] (a libp2p `PeerId` in Shoal, a
//! small integer in tests); messages do not name their sender, the transport does. Notices are
//! opaque here: the embedder's [`Verify`] checks each one (its signature, its publisher's right
//! to publish) before it is stored, delivered or relayed.
//!
//! # Caveats
//!
//! Delivery is once per notice id and in order per feed, but not reliable in the face of
//! unbounded loss: a hole that neither grafts, pulls nor catch-up fill within `gap_timeout` is
//! skipped and reported ([`Event::Gap`]). A node restarted with an empty store is sent, by
//! peers that remember it, only the feeds that changed since they last exchanged with it.

#[cfg(test)]
#[macro_use]
#[path = "tests/macros.rs"]
mod test_macros;

pub mod bloom;
pub mod config;
pub mod error;
pub mod message;
pub mod sim;
mod state;

#[cfg(test)]
mod tests;

pub use config::Config;
pub use error::{CodecError, ConfigError, PublishError, Rejection};
pub use message::{FeedSeq, Limits, Message, MessageKind, Notice, NoticeId};
pub use state::{
    Broadcast, CatchupStats, Drops, Event, NeighborStats, QueueLengths, Rejected, Stats, Traffic,
    Transmit, Views,
};

/// A peer identity: the key of the views and the destination of transmits.
///
/// It must be cheap to clone and totally ordered (announcements and grafts to several peers are
/// batched in identity order, which keeps runs deterministic).
pub trait Peer: Clone + Eq + Ord + std::hash::Hash + std::fmt::Debug + Send + 'static {}

impl<T> Peer for T where T: Clone + Eq + Ord + std::hash::Hash + std::fmt::Debug + Send + 'static {}

/// The embedder's check of a notice (in Shoal: the envelope's signature by the publisher's
/// key). `Err` carries a reason for logs; the notice is then dropped, counted and reported
/// with [`Event::Invalid`], never stored, delivered or relayed.
pub trait Verify {
    /// Checks `notice`.
    fn verify(&mut self, notice: &Notice) -> Result<(), String>;
}

impl<F> Verify for F
where
    F: FnMut(&Notice) -> Result<(), String>,
{
    fn verify(&mut self, notice: &Notice) -> Result<(), String> {
        self(notice)
    }
}

/// A verifier that accepts every notice, for tests and for embedders that verify elsewhere.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AcceptAll;

impl Verify for AcceptAll {
    fn verify(&mut self, _: &Notice) -> Result<(), String> {
        Ok(())
    }
}
