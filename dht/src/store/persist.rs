//! The node's durable state in one redb file: records, lockstep notices and a routing-table
//! snapshot.
//!
//! Every write commits with redb's immediate durability before it returns, so whatever a node
//! acknowledged survives `kill -9`.

use std::path::Path;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

/// Record envelopes by record key.
const RECORDS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("records");
/// Lockstep notice envelopes by key ‖ publisher (32 bytes).
const NOTICES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("notices");
/// Known peers: PeerId bytes to a CBOR list of multiaddr bytes.
const ROUTING: TableDefinition<&[u8], &[u8]> = TableDefinition::new("routing");

/// Key/value pairs read from a table, in key order.
pub type Pairs = Vec<(Vec<u8>, Vec<u8>)>;

/// A storage failure. The operation that returned it did not take effect.
#[derive(Debug, thiserror::Error)]
#[error("storage: {0}")]
pub struct StorageError(#[from] redb::Error);

macro_rules! storage_from {
    ($($t:ty),*) => {$(
        impl From<$t> for StorageError {
            fn from(e: $t) -> Self {
                Self(e.into())
            }
        }
    )*};
}
storage_from!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

/// The redb file behind a node.
#[derive(Debug)]
pub struct Persist {
    db: Database,
}

impl Persist {
    /// Opens or creates the database at `path` and its tables.
    pub fn open(path: &Path) -> Result<Self, StorageError> {
        let db = Database::create(path)?;
        let tx = db.begin_write()?;
        tx.open_table(RECORDS)?;
        tx.open_table(NOTICES)?;
        tx.open_table(ROUTING)?;
        tx.commit()?;
        Ok(Self { db })
    }

    /// Stores a record envelope under `key`, durably.
    pub fn put_record(&self, key: &[u8], envelope: &[u8]) -> Result<(), StorageError> {
        self.write(RECORDS, |t| {
            t.insert(key, envelope)?;
            Ok(())
        })
    }

    /// Removes the record under `key`, durably.
    pub fn remove_record(&self, key: &[u8]) -> Result<(), StorageError> {
        self.write(RECORDS, |t| {
            t.remove(key)?;
            Ok(())
        })
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
        let id = notice_id(key, publisher);
        self.write(NOTICES, |t| {
            t.insert(id.as_slice(), envelope)?;
            Ok(())
        })
    }

    /// Removes the notice for `key` from `publisher`, durably.
    pub fn remove_notice(&self, key: &[u8], publisher: &[u8; 32]) -> Result<(), StorageError> {
        let id = notice_id(key, publisher);
        self.write(NOTICES, |t| {
            t.remove(id.as_slice())?;
            Ok(())
        })
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
        let tx = self.db.begin_write()?;
        {
            let mut table = tx.open_table(ROUTING)?;
            table.retain(|_, _| false)?;
            for (peer, addrs) in peers {
                table.insert(peer.as_slice(), addrs.as_slice())?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// The routing-table snapshot.
    pub fn routing(&self) -> Result<Pairs, StorageError> {
        self.read_all(ROUTING)
    }

    fn write(
        &self,
        def: TableDefinition<&[u8], &[u8]>,
        f: impl FnOnce(&mut redb::Table<&[u8], &[u8]>) -> Result<(), StorageError>,
    ) -> Result<(), StorageError> {
        let tx = self.db.begin_write()?;
        {
            let mut table = tx.open_table(def)?;
            f(&mut table)?;
        }
        tx.commit()?;
        Ok(())
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

fn notice_id(key: &[u8], publisher: &[u8; 32]) -> Vec<u8> {
    let mut id = key.to_vec();
    id.extend_from_slice(publisher);
    id
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
