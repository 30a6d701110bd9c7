//! The node's durable state in one redb file: records, lockstep notices, a routing-table
//! snapshot and the node's metadata.
//!
//! Every write is a [`Batch`] committed in one transaction with redb's immediate durability
//! before [`Persist::commit`] returns, so whatever a node acknowledged after the commit survives
//! `kill -9`. The single-write methods ([`Persist::put_record`] and the like) are one-operation
//! batches, kept for the event loop that still writes inline; the [`Writer`](super::Writer)
//! commits batches off the event loop, several per transaction.

use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};

use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};

use super::batch::{Batch, Op};

/// Record envelopes by record key.
const RECORDS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("records");
/// Lockstep notice envelopes by key ‖ publisher (32 bytes).
const NOTICES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("notices");
/// Known peers: PeerId bytes to a CBOR list of multiaddr bytes.
const ROUTING: TableDefinition<&[u8], &[u8]> = TableDefinition::new("routing");
/// Node metadata by field name (see [`Meta`]).
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// [`META`] key of [`Meta::incarnation`].
const META_INCARNATION: &str = "incarnation";
/// [`META`] key of [`Meta::seq_floor`].
const META_SEQ_FLOOR: &str = "seq_floor";
/// [`META`] key of [`Meta::feed_epoch`].
const META_FEED_EPOCH: &str = "feed_epoch";
/// [`META`] key of [`Meta::feed_seq`].
const META_FEED_SEQ: &str = "feed_seq";

/// Key/value pairs read from a table, in key order.
pub type Pairs = Vec<(Vec<u8>, Vec<u8>)>;

/// A storage failure. Whatever returned it did not take effect: a failed commit leaves the
/// database as it was before the commit began.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// redb failed to open, read or write the database; nothing changed on disk.
    #[error("storage: {0}")]
    Redb(#[from] redb::Error),
    /// The commit was failed on purpose by [`Persist::dangerous_fail_commits`]; nothing changed
    /// on disk.
    #[error("storage: injected commit failure")]
    Injected,
}

macro_rules! storage_from {
    ($($t:ty),*) => {$(
        impl From<$t> for StorageError {
            fn from(e: $t) -> Self {
                Self::Redb(e.into())
            }
        }
    )*};
}
storage_from!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    redb::SetDurabilityError
);

/// Node metadata that must never go backwards across restarts, even when the wall clock was
/// stepped back while the node was down: the core's [`crate::core::Meta`].
pub use crate::core::Meta;

/// The redb file behind a node.
#[derive(Debug)]
pub struct Persist {
    db: Database,
    /// Commits still to fail on purpose (see [`Persist::dangerous_fail_commits`]).
    fail_commits: AtomicU32,
}

impl Persist {
    /// Opens or creates the database at `path` and its tables.
    pub fn open(path: &Path) -> Result<Self, StorageError> {
        Self::with_database(Database::create(path)?)
    }

    /// A database held in memory only, lost when dropped (for simulations and tests: commits
    /// cost no disk flush).
    pub fn in_memory() -> Result<Self, StorageError> {
        let db = Database::builder().create_with_backend(redb::backends::InMemoryBackend::new())?;
        Self::with_database(db)
    }

    fn with_database(db: Database) -> Result<Self, StorageError> {
        let tx = db.begin_write()?;
        tx.open_table(RECORDS)?;
        tx.open_table(NOTICES)?;
        tx.open_table(ROUTING)?;
        tx.open_table(META)?;
        tx.commit()?;
        Ok(Self {
            db,
            fail_commits: AtomicU32::new(0),
        })
    }

    /// Applies every operation of `batch`, in order, in one durable transaction: all of them
    /// take effect or none does.
    pub fn commit(&self, batch: &Batch) -> Result<(), StorageError> {
        self.commit_many(std::iter::once(batch))
    }

    /// Applies the operations of every batch in `batches`, in order, in one transaction,
    /// durable when it returns unless every batch is deferred ([`Batch::is_deferred`]; a
    /// deferred commit becomes durable with the next durable one). The result on disk is the
    /// same as committing the batches one after the other, with one disk flush instead of one
    /// per batch; but one failure fails them all.
    pub fn commit_many<'a>(
        &self,
        batches: impl IntoIterator<Item = &'a Batch>,
    ) -> Result<(), StorageError> {
        let batches: Vec<&Batch> = batches.into_iter().collect();
        let mut tx = self.db.begin_write()?;
        // Immediate is redb's default; set it anyway because acknowledging a batch that is not
        // deferred is only sound if the commit is on disk when it returns.
        let durability = if batches.iter().all(|b| b.is_deferred()) {
            Durability::None
        } else {
            Durability::Immediate
        };
        tx.set_durability(durability)?;
        {
            let mut records = tx.open_table(RECORDS)?;
            let mut notices = tx.open_table(NOTICES)?;
            let mut routing = tx.open_table(ROUTING)?;
            let mut meta = tx.open_table(META)?;
            for op in batches.iter().flat_map(|b| b.ops()) {
                match op {
                    Op::PutRecord { key, envelope } => {
                        records.insert(key.as_slice(), envelope.as_slice())?;
                    }
                    Op::RemoveRecord { key } => {
                        records.remove(key.as_slice())?;
                    }
                    Op::PutNotice {
                        key,
                        publisher,
                        envelope,
                    } => {
                        let id = notice_id(key, publisher);
                        notices.insert(id.as_slice(), envelope.as_slice())?;
                    }
                    Op::RemoveNotice { key, publisher } => {
                        let id = notice_id(key, publisher);
                        notices.remove(id.as_slice())?;
                    }
                    Op::ReplaceRouting(peers) => {
                        routing.retain(|_, _| false)?;
                        for (peer, addrs) in peers {
                            routing.insert(peer.as_slice(), addrs.as_slice())?;
                        }
                    }
                    Op::RaiseMeta(m) => {
                        raise(&mut meta, META_INCARNATION, m.incarnation)?;
                        raise(&mut meta, META_SEQ_FLOOR, m.seq_floor)?;
                        raise(&mut meta, META_FEED_EPOCH, m.feed_epoch)?;
                        raise(&mut meta, META_FEED_SEQ, m.feed_seq)?;
                    }
                }
            }
        }
        // Checked after the operations were applied, so an injected failure takes the same
        // path as a real one: the transaction is dropped uncommitted, which rolls it back.
        if self.take_injected_failure() {
            drop(tx);
            return Err(StorageError::Injected);
        }
        tx.commit()?;
        Ok(())
    }

    /// Test hook: makes the next `n` commits (of any kind, including the single-write methods)
    /// fail with [`StorageError::Injected`] and change nothing, as a full or failing disk
    /// would. Replaces any count still pending; `0` turns injection off. Never call it on a
    /// production node: it makes the node refuse writes.
    pub fn dangerous_fail_commits(&self, n: u32) {
        self.fail_commits.store(n, Ordering::SeqCst);
    }

    /// Whether this commit is to fail on purpose; counts it off if so.
    fn take_injected_failure(&self) -> bool {
        self.fail_commits
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    }

    /// Stores a record envelope under `key`, durably.
    pub fn put_record(&self, key: &[u8], envelope: &[u8]) -> Result<(), StorageError> {
        self.commit(Batch::new().put_record(key, envelope))
    }

    /// Removes the record under `key`, durably.
    pub fn remove_record(&self, key: &[u8]) -> Result<(), StorageError> {
        self.commit(Batch::new().remove_record(key))
    }

    /// Every stored record envelope, with its key.
    pub fn records(&self) -> Result<Pairs, StorageError> {
        self.read_all(RECORDS)
    }

    /// Stores a lockstep notice envelope for `key` from `publisher`, durably.
    pub fn put_notice(
        &self,
        key: &[u8],
        publisher: &[u8; 32],
        envelope: &[u8],
    ) -> Result<(), StorageError> {
        self.commit(Batch::new().put_notice(key, *publisher, envelope))
    }

    /// Removes the notice for `key` from `publisher`, durably.
    pub fn remove_notice(&self, key: &[u8], publisher: &[u8; 32]) -> Result<(), StorageError> {
        self.commit(Batch::new().remove_notice(key, *publisher))
    }

    /// Every stored notice envelope.
    pub fn notices(&self) -> Result<Vec<Vec<u8>>, StorageError> {
        Ok(self
            .read_all(NOTICES)?
            .into_iter()
            .map(|(_, v)| v)
            .collect())
    }

    /// Replaces the routing-table snapshot with `peers` (PeerId bytes, encoded addresses).
    pub fn save_routing(&self, peers: &[(Vec<u8>, Vec<u8>)]) -> Result<(), StorageError> {
        self.commit(Batch::new().replace_routing(peers.to_vec()))
    }

    /// The routing-table snapshot.
    pub fn routing(&self) -> Result<Pairs, StorageError> {
        self.read_all(ROUTING)
    }

    /// The node's metadata, or `None` if it was never written. A field never raised reads 0.
    pub fn meta(&self) -> Result<Option<Meta>, StorageError> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(META)?;
        let mut fields = [0; 4];
        let mut any = false;
        let names = [
            META_INCARNATION,
            META_SEQ_FLOOR,
            META_FEED_EPOCH,
            META_FEED_SEQ,
        ];
        for (field, name) in fields.iter_mut().zip(names) {
            if let Some(v) = table.get(name)? {
                *field = v.value();
                any = true;
            }
        }
        let [incarnation, seq_floor, feed_epoch, feed_seq] = fields;
        Ok(any.then_some(Meta {
            incarnation,
            seq_floor,
            feed_epoch,
            feed_seq,
        }))
    }

    fn read_all(&self, def: TableDefinition<&[u8], &[u8]>) -> Result<Pairs, StorageError> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(def)?;
        let mut out = Vec::new();
        for entry in table.iter()? {
            let (k, v) = entry?;
            out.push((k.value().to_vec(), v.value().to_vec()));
        }
        Ok(out)
    }
}

/// Stores `value` under `field` unless a higher value is stored: metadata only moves forward.
fn raise(table: &mut redb::Table<&str, u64>, field: &str, value: u64) -> Result<(), StorageError> {
    let held = table.get(field)?.map(|v| v.value());
    if held.is_none_or(|held| value > held) {
        table.insert(field, value)?;
    }
    Ok(())
}

fn notice_id(key: &[u8], publisher: &[u8; 32]) -> Vec<u8> {
    let mut id = key.to_vec();
    id.extend_from_slice(publisher);
    id
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Everything a database holds, for comparing two of them.
    #[derive(Debug, PartialEq, Eq)]
    struct Contents {
        records: Pairs,
        notices: Vec<Vec<u8>>,
        routing: Pairs,
        meta: Option<Meta>,
    }

    fn contents(p: &Persist) -> Contents {
        Contents {
            records: p.records().unwrap(),
            notices: p.notices().unwrap(),
            routing: p.routing().unwrap(),
            meta: p.meta().unwrap(),
        }
    }

    fn pair(k: &[u8], v: &[u8]) -> (Vec<u8>, Vec<u8>) {
        (k.to_vec(), v.to_vec())
    }

    #[test]
    fn survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.redb");
        {
            let p = Persist::open(&path).unwrap();
            p.put_record(b"a", b"env-a").unwrap();
            p.put_record(b"b", b"env-b").unwrap();
            p.remove_record(b"a").unwrap();
            p.put_notice(b"k", &[1; 32], b"notice").unwrap();
            p.save_routing(&[(b"peer1".to_vec(), b"addrs".to_vec())])
                .unwrap();
            p.save_routing(&[(b"peer2".to_vec(), b"addrs2".to_vec())])
                .unwrap();
        }
        let p = Persist::open(&path).unwrap();
        assert_eq!(
            p.records().unwrap(),
            vec![(b"b".to_vec(), b"env-b".to_vec())]
        );
        assert_eq!(p.notices().unwrap(), vec![b"notice".to_vec()]);
        assert_eq!(
            p.routing().unwrap(),
            vec![(b"peer2".to_vec(), b"addrs2".to_vec())]
        );
        p.remove_notice(b"k", &[1; 32]).unwrap();
        assert!(p.notices().unwrap().is_empty());
    }

    #[test]
    fn batch_applies_in_order_and_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.redb");
        {
            let p = Persist::open(&path).unwrap();
            let mut batch = Batch::new();
            batch
                .put_record(b"a", b"a1")
                .put_record(b"b", b"b1")
                .put_record(b"a", b"a2")
                .remove_record(b"b")
                .put_notice(b"k", [1; 32], b"n1")
                .put_notice(b"k", [2; 32], b"n2")
                .remove_notice(b"k", [1; 32])
                .put_notice(b"k", [2; 32], b"n3")
                .replace_routing(vec![pair(b"p1", b"x")])
                .replace_routing(vec![pair(b"p2", b"y"), pair(b"p3", b"z")])
                .raise_meta(Meta {
                    incarnation: 3,
                    seq_floor: 10,
                    ..Meta::default()
                });
            p.commit(&batch).unwrap();
        }
        let p = Persist::open(&path).unwrap();
        assert_eq!(
            contents(&p),
            Contents {
                records: vec![pair(b"a", b"a2")],
                notices: vec![b"n3".to_vec()],
                routing: vec![pair(b"p2", b"y"), pair(b"p3", b"z")],
                meta: Some(Meta {
                    incarnation: 3,
                    seq_floor: 10,
                    ..Meta::default()
                }),
            }
        );
    }

    #[test]
    fn deferred_commits_are_readable_at_once_and_durable_after_a_flushed_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.redb");
        {
            let p = Persist::open(&path).unwrap();
            let mut copy = Batch::new();
            copy.put_record(b"copy", b"c").set_deferred(true);
            p.commit(&copy).unwrap();
            assert_eq!(contents(&p).records, vec![pair(b"copy", b"c")]);
            // A group of a deferred and a flushed batch is flushed; so is an empty flush.
            let mut other = Batch::new();
            other.put_record(b"other", b"o").set_deferred(true);
            let mut replica = Batch::new();
            replica.put_record(b"replica", b"r");
            let mut merged = other.clone();
            merged.append(replica.clone());
            assert!(!merged.is_deferred());
            p.commit_many([&other, &replica]).unwrap();
            p.commit(&Batch::new()).unwrap();
        }
        let p = Persist::open(&path).unwrap();
        assert_eq!(
            contents(&p).records,
            vec![
                pair(b"copy", b"c"),
                pair(b"other", b"o"),
                pair(b"replica", b"r")
            ]
        );
    }

    #[test]
    fn meta_round_trips_and_never_goes_backwards() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.redb");
        {
            let p = Persist::open(&path).unwrap();
            assert_eq!(p.meta().unwrap(), None);
            p.commit(Batch::new().raise_meta(Meta {
                incarnation: 0,
                seq_floor: 7,
                ..Meta::default()
            }))
            .unwrap();
            assert_eq!(
                p.meta().unwrap(),
                Some(Meta {
                    incarnation: 0,
                    seq_floor: 7,
                    ..Meta::default()
                })
            );
            p.commit(Batch::new().raise_meta(Meta {
                incarnation: 5,
                seq_floor: 2,
                ..Meta::default()
            }))
            .unwrap();
        }
        let p = Persist::open(&path).unwrap();
        assert_eq!(
            p.meta().unwrap(),
            Some(Meta {
                incarnation: 5,
                seq_floor: 7,
                ..Meta::default()
            })
        );
    }

    #[test]
    fn injected_failure_fails_only_that_commit_and_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.redb");
        let p = Persist::open(&path).unwrap();
        p.put_record(b"a", b"a1").unwrap();
        let before = contents(&p);

        p.dangerous_fail_commits(2);
        let mut batch = Batch::new();
        batch
            .put_record(b"a", b"a2")
            .put_record(b"b", b"b1")
            .put_notice(b"k", [1; 32], b"n")
            .replace_routing(vec![pair(b"p", b"x")])
            .raise_meta(Meta {
                incarnation: 1,
                seq_floor: 1,
                ..Meta::default()
            });
        assert!(matches!(p.commit(&batch), Err(StorageError::Injected)));
        assert!(matches!(
            p.put_record(b"c", b"c1"),
            Err(StorageError::Injected)
        ));
        assert_eq!(contents(&p), before);

        p.commit(&batch).unwrap();
        drop(p);
        let p = Persist::open(&path).unwrap();
        assert_eq!(
            p.records().unwrap(),
            vec![pair(b"a", b"a2"), pair(b"b", b"b1")]
        );
        assert_eq!(p.routing().unwrap(), vec![pair(b"p", b"x")]);
    }

    fn op() -> impl Strategy<Value = Op> {
        // A small key space so that later operations often hit earlier keys.
        let key = || prop::sample::select(vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]);
        let value = || prop::collection::vec(any::<u8>(), 0..4);
        let publisher = || (0u8..2).prop_map(|b| [b; 32]);
        prop_oneof![
            (key(), value()).prop_map(|(key, envelope)| Op::PutRecord { key, envelope }),
            key().prop_map(|key| Op::RemoveRecord { key }),
            (key(), publisher(), value()).prop_map(|(key, publisher, envelope)| {
                Op::PutNotice {
                    key,
                    publisher,
                    envelope,
                }
            }),
            (key(), publisher()).prop_map(|(key, publisher)| Op::RemoveNotice { key, publisher }),
            prop::collection::vec((key(), value()), 0..3).prop_map(Op::ReplaceRouting),
            (0u64..4, 0u64..4, 0u64..4).prop_map(|(incarnation, seq_floor, feed_seq)| {
                Op::RaiseMeta(Meta {
                    incarnation,
                    seq_floor,
                    feed_epoch: 1,
                    feed_seq,
                })
            }),
        ]
    }

    proptest! {
        #[test]
        fn merged_commit_equals_commits_in_sequence(
            batches in prop::collection::vec(prop::collection::vec(op(), 0..6), 0..6),
        ) {
            let batches: Vec<Batch> = batches.into_iter().map(Batch::from).collect();
            let one_by_one = Persist::in_memory().unwrap();
            for batch in &batches {
                one_by_one.commit(batch).unwrap();
            }
            let grouped = Persist::in_memory().unwrap();
            grouped.commit_many(&batches).unwrap();
            let mut merged = Batch::new();
            for batch in batches {
                merged.append(batch);
            }
            let concatenated = Persist::in_memory().unwrap();
            concatenated.commit(&merged).unwrap();
            prop_assert_eq!(contents(&grouped), contents(&one_by_one));
            prop_assert_eq!(contents(&concatenated), contents(&one_by_one));
        }
    }
}
