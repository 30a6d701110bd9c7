//! Write batches: the writes one event-loop turn asks for, applied in order in one transaction.

use super::persist::{Meta, Pairs};

/// One write to the node's database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Stores a record envelope under its key, replacing any held.
    PutRecord {
        /// The record key.
        key: Vec<u8>,
        /// The signed record envelope.
        envelope: Vec<u8>,
    },
    /// Removes the record held under a key, if any.
    RemoveRecord {
        /// The record key.
        key: Vec<u8>,
    },
    /// Stores a lockstep notice envelope for a key and publisher, replacing any held.
    PutNotice {
        /// The notice key.
        key: Vec<u8>,
        /// The publisher's public key.
        publisher: [u8; 32],
        /// The signed notice envelope.
        envelope: Vec<u8>,
    },
    /// Removes the notice held for a key and publisher, if any.
    RemoveNotice {
        /// The notice key.
        key: Vec<u8>,
        /// The publisher's public key.
        publisher: [u8; 32],
    },
    /// Replaces the whole routing-table snapshot: PeerId bytes to encoded addresses.
    ReplaceRouting(Pairs),
    /// Raises each metadata field to the given value unless a higher one is stored, so that a
    /// field never goes backwards; give 0 to leave a field as it is.
    RaiseMeta(Meta),
}

impl Op {
    /// Bytes of keys and values this operation carries, for bounding how much one commit
    /// writes.
    pub fn payload_len(&self) -> usize {
        match self {
            Op::PutRecord { key, envelope } => key.len() + envelope.len(),
            Op::RemoveRecord { key } => key.len(),
            Op::PutNotice { key, envelope, .. } => key.len() + 32 + envelope.len(),
            Op::RemoveNotice { key, .. } => key.len() + 32,
            Op::ReplaceRouting(peers) => peers.iter().map(|(p, a)| p.len() + a.len()).sum(),
            Op::RaiseMeta(_) => 4 * size_of::<u64>(),
        }
    }
}

/// An ordered list of writes that take effect together or not at all
/// ([`Persist::commit`](super::Persist::commit)). Later operations see earlier ones: a later put
/// of the same key wins, a remove after a put leaves nothing.
///
/// Appending batches ([`Batch::append`]) and committing the result gives the same database as
/// committing them one after the other, which is what lets the [`Writer`](super::Writer) group
/// them.
///
/// A batch is flushed to disk before its commit returns, unless it is marked deferred
/// ([`Batch::set_deferred`]): then a commit of deferred batches only may return before the
/// flush, and the next flushed commit makes it durable.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Batch {
    ops: Vec<Op>,
    deferred: bool,
}

impl Batch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `op` at the end.
    pub fn push(&mut self, op: Op) -> &mut Self {
        self.ops.push(op);
        self
    }

    /// Adds [`Op::PutRecord`].
    pub fn put_record(
        &mut self,
        key: impl Into<Vec<u8>>,
        envelope: impl Into<Vec<u8>>,
    ) -> &mut Self {
        self.push(Op::PutRecord {
            key: key.into(),
            envelope: envelope.into(),
        })
    }

    /// Adds [`Op::RemoveRecord`].
    pub fn remove_record(&mut self, key: impl Into<Vec<u8>>) -> &mut Self {
        self.push(Op::RemoveRecord { key: key.into() })
    }

    /// Adds [`Op::PutNotice`].
    pub fn put_notice(
        &mut self,
        key: impl Into<Vec<u8>>,
        publisher: [u8; 32],
        envelope: impl Into<Vec<u8>>,
    ) -> &mut Self {
        self.push(Op::PutNotice {
            key: key.into(),
            publisher,
            envelope: envelope.into(),
        })
    }

    /// Adds [`Op::RemoveNotice`].
    pub fn remove_notice(&mut self, key: impl Into<Vec<u8>>, publisher: [u8; 32]) -> &mut Self {
        self.push(Op::RemoveNotice {
            key: key.into(),
            publisher,
        })
    }

    /// Adds [`Op::ReplaceRouting`].
    pub fn replace_routing(&mut self, peers: Pairs) -> &mut Self {
        self.push(Op::ReplaceRouting(peers))
    }

    /// Adds [`Op::RaiseMeta`].
    pub fn raise_meta(&mut self, meta: Meta) -> &mut Self {
        self.push(Op::RaiseMeta(meta))
    }

    /// Moves every operation of `other` to the end of this batch; the result is deferred only
    /// if both were.
    pub fn append(&mut self, mut other: Batch) {
        self.ops.append(&mut other.ops);
        self.deferred &= other.deferred;
    }

    /// Marks the batch deferred (its commit may return before the disk flush) or not.
    pub fn set_deferred(&mut self, deferred: bool) -> &mut Self {
        self.deferred = deferred;
        self
    }

    /// Whether the batch may be committed without a disk flush.
    pub fn is_deferred(&self) -> bool {
        self.deferred
    }

    /// The operations, in the order they apply.
    pub fn ops(&self) -> &[Op] {
        &self.ops
    }

    /// Operations in the batch.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// Whether the batch holds no operation (committing it still costs a transaction).
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Bytes of keys and values the batch carries (see [`Op::payload_len`]).
    pub fn payload_len(&self) -> usize {
        self.ops.iter().map(Op::payload_len).sum()
    }
}

impl From<Vec<Op>> for Batch {
    fn from(ops: Vec<Op>) -> Self {
        Self {
            ops,
            deferred: false,
        }
    }
}

impl FromIterator<Op> for Batch {
    fn from_iter<I: IntoIterator<Item = Op>>(iter: I) -> Self {
        Self {
            ops: iter.into_iter().collect(),
            deferred: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builder_keeps_order_and_append_concatenates() {
        let mut a = Batch::new();
        a.put_record(b"k", b"v1").remove_record(b"k");
        let mut b = Batch::new();
        b.put_notice(b"n", [7; 32], b"e").raise_meta(Meta {
            incarnation: 1,
            seq_floor: 2,
            ..Meta::default()
        });
        a.append(b);
        assert_eq!(
            a.ops(),
            &[
                Op::PutRecord {
                    key: b"k".to_vec(),
                    envelope: b"v1".to_vec()
                },
                Op::RemoveRecord { key: b"k".to_vec() },
                Op::PutNotice {
                    key: b"n".to_vec(),
                    publisher: [7; 32],
                    envelope: b"e".to_vec()
                },
                Op::RaiseMeta(Meta {
                    incarnation: 1,
                    seq_floor: 2,
                    ..Meta::default()
                }),
            ]
        );
        assert_eq!(a.len(), 4);
        assert_eq!(a.payload_len(), 3 + 1 + (1 + 32 + 1) + 32);
    }
}
