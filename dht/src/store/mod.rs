//! The node's durable state: the redb database ([`Persist`]) and the writer that commits to it
//! off the event loop ([`Writer`]).
//!
//! Writes are [`Batch`]es, each committed in one durable transaction; the [`Writer`] commits
//! them on a thread of its own, grouping whatever is queued into one transaction, and reports
//! each result so that the event loop acknowledges a write only once it is on disk. The records
//! themselves live in memory in the DHT core ([`crate::core::Records`]), which decides what is
//! kept; this module only makes it durable and reads it back on start.

mod batch;
mod disk;
mod persist;
mod writer;

pub use batch::{Batch, Op};
pub use disk::{read_disk, snapshot_pairs, to_batch};
pub use persist::{Meta, Pairs, Persist, StorageError};
pub use writer::{
    Committed, MAX_GROUP_BATCHES, MAX_GROUP_BYTES, WriteId, Writer, WriterError, WriterEvents,
    WriterStats,
};

pub use crate::core::StoreError;

/// Limits of the record store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreConfig {
    /// Records held at most. Default 65,536.
    pub max_records: usize,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            max_records: 65_536,
        }
    }
}
