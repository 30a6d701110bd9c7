//! The record store behind Kademlia: validated envelopes in memory, written through to redb.
//!
//! [`RecordStore`] implements libp2p-kad's `RecordStore`, so kad serves gets and replicates from
//! it. Inbound puts never reach it directly (kad runs with `StoreInserts::FilterBoth`): the DHT
//! validates them and calls [`RecordStore::insert`], which keeps the record only if it supersedes
//! the one held (higher sequence wins) and, with persistence on, commits it to disk before
//! returning, so an acknowledged put survives a crash. Provider records are not used by Shoal
//! and are kept in kad's bounded memory store.

mod persist;

use std::borrow::Cow;
use std::collections::{HashMap, hash_map};
use std::sync::Arc;
use std::time::{Duration, Instant};

use libp2p::PeerId;
use libp2p::kad::store::{self as kad_store, MemoryStore};
use libp2p::kad::{ProviderRecord, Record as KadRecord, RecordKey};

pub use persist::{Pairs, Persist, StorageError};

use crate::record::{MAX_RECORD_LEN, SignedRecord};

/// Limits of a [`RecordStore`].
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

/// Why [`RecordStore::insert`] did not keep a record.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A record with a higher (or equal) sequence is held; nothing changed.
    #[error("a record with sequence {held} is already held (got {got})")]
    Stale {
        /// The held record's sequence.
        held: u64,
        /// The refused record's sequence.
        got: u64,
    },
    /// The store holds [`StoreConfig::max_records`] records; nothing changed.
    #[error("record store full ({0} records)")]
    Full(usize),
    /// Writing to disk failed; nothing changed, in memory or on disk.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// How [`RecordStore::insert`] kept a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inserted {
    /// The key was new.
    New,
    /// It replaced an older record.
    Replaced,
    /// The very same envelope was already held.
    Unchanged,
}

/// A held record, decoded once when it was validated, with its expiry on kad's clock (opaque).
#[derive(Debug, Clone)]
pub struct Entry {
    signed: SignedRecord,
    expires: Instant,
}

impl Entry {
    /// The record as kad sees it: the envelope is its value.
    fn kad(&self) -> KadRecord {
        let r = self.signed.record();
        KadRecord {
            key: RecordKey::new(&r.key),
            value: self.signed.as_bytes().to_vec(),
            publisher: Some(r.publisher.peer_id()),
            expires: Some(self.expires),
        }
    }
}

/// The record store: memory, optionally written through to a [`Persist`] database.
pub struct RecordStore {
    config: StoreConfig,
    records: HashMap<RecordKey, Entry>,
    providers: MemoryStore,
    persist: Option<Arc<Persist>>,
}

/// Converts a record's wall-clock expiry to the monotonic clock kad uses.
pub fn expiry_instant(expires_at: u64, now_unix: u64, now: Instant) -> Instant {
    now + Duration::from_secs(expires_at.saturating_sub(now_unix))
}

impl RecordStore {
    /// An in-memory store (for simulations and tests).
    pub fn in_memory(local: PeerId, config: StoreConfig) -> Self {
        Self {
            config,
            records: HashMap::new(),
            providers: MemoryStore::new(local),
            persist: None,
        }
    }

    /// A store backed by `persist`, loaded with the records it holds that are still valid at
    /// `now_unix` according to `validate` (expired or invalid ones are deleted). Returns the
    /// store and how many records were dropped.
    pub fn open(
        local: PeerId,
        config: StoreConfig,
        persist: Arc<Persist>,
        now: Instant,
        now_unix: u64,
        validate: impl Fn(&[u8], &[u8]) -> Option<SignedRecord>,
    ) -> Result<(Self, usize), StorageError> {
        let mut store = Self::in_memory(local, config);
        let mut dropped = 0;
        for (key, envelope) in persist.records()? {
            match validate(&key, &envelope) {
                Some(signed) if store.records.len() < store.config.max_records => {
                    store.insert_memory(signed, now, now_unix);
                }
                _ => {
                    persist.remove_record(&key)?;
                    dropped += 1;
                }
            }
        }
        store.persist = Some(persist);
        Ok((store, dropped))
    }

    /// Keeps `signed` if it supersedes the record held under its key, durably when persistence
    /// is on. `now`/`now_unix` map its expiry onto kad's monotonic clock.
    pub fn insert(
        &mut self,
        signed: SignedRecord,
        now: Instant,
        now_unix: u64,
    ) -> Result<Inserted, StoreError> {
        let key = RecordKey::new(&signed.record().key);
        let outcome = match self.records.get(&key) {
            Some(held) if held.signed.as_bytes() == signed.as_bytes() => {
                return Ok(Inserted::Unchanged);
            }
            Some(held) => {
                if !signed.supersedes(&held.signed) {
                    return Err(StoreError::Stale {
                        held: held.signed.record().seq,
                        got: signed.record().seq,
                    });
                }
                Inserted::Replaced
            }
            None if self.records.len() >= self.config.max_records => {
                return Err(StoreError::Full(self.config.max_records));
            }
            None => Inserted::New,
        };
        if let Some(persist) = &self.persist {
            persist.put_record(&signed.record().key, signed.as_bytes())?;
        }
        self.insert_memory(signed, now, now_unix);
        Ok(outcome)
    }

    /// The record held under `key`. It was validated when it was kept and is not verified
    /// again; only its expiry may have passed since (see [`SignedRecord::is_expired`]).
    pub fn signed(&self, key: &[u8]) -> Option<&SignedRecord> {
        self.records.get(&RecordKey::new(&key)).map(|e| &e.signed)
    }

    /// Records held.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether no record is held.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Removes every record whose expiry has passed at `now`; returns how many.
    pub fn remove_expired(&mut self, now: Instant) -> usize {
        let expired: Vec<RecordKey> = self
            .records
            .iter()
            .filter(|(_, e)| now >= e.expires)
            .map(|(k, _)| k.clone())
            .collect();
        for key in &expired {
            kad_store::RecordStore::remove(self, key);
        }
        expired.len()
    }

    fn insert_memory(&mut self, signed: SignedRecord, now: Instant, now_unix: u64) {
        let r = signed.record();
        let key = RecordKey::new(&r.key);
        let expires = expiry_instant(r.expires_at(), now_unix, now);
        self.records.insert(key, Entry { signed, expires });
    }
}

impl std::fmt::Debug for RecordStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordStore")
            .field("records", &self.records.len())
            .field("persistent", &self.persist.is_some())
            .finish_non_exhaustive()
    }
}

type RecordsIter<'a> =
    std::iter::Map<hash_map::Values<'a, RecordKey, Entry>, fn(&'a Entry) -> Cow<'a, KadRecord>>;

impl kad_store::RecordStore for RecordStore {
    type RecordsIter<'a> = RecordsIter<'a>;
    type ProvidedIter<'a> = <MemoryStore as kad_store::RecordStore>::ProvidedIter<'a>;

    fn get(&self, k: &RecordKey) -> Option<Cow<'_, KadRecord>> {
        self.records.get(k).map(|e| Cow::Owned(e.kad()))
    }

    /// Called by kad for the node's own publications. The DHT inserts (durably) before calling
    /// kad's `put_record`, so this normally finds the same envelope and does nothing; anything
    /// else is validated structurally and kept only if it supersedes the held record.
    fn put(&mut self, r: KadRecord) -> kad_store::Result<()> {
        if r.value.len() > MAX_RECORD_LEN {
            return Err(kad_store::Error::ValueTooLarge);
        }
        if self
            .records
            .get(&r.key)
            .is_some_and(|e| e.signed.as_bytes() == r.value)
        {
            return Ok(());
        }
        let Ok(signed) = SignedRecord::decode(&r.value) else {
            return Err(kad_store::Error::ValueTooLarge);
        };
        let now = Instant::now();
        let now_unix = shoal_pow::unix_now();
        match self.insert(signed, now, now_unix) {
            Ok(_) | Err(StoreError::Stale { .. }) => Ok(()),
            Err(StoreError::Full(_)) => Err(kad_store::Error::MaxRecords),
            Err(StoreError::Storage(e)) => {
                tracing::error!(error = %e, "record store write failed");
                Err(kad_store::Error::MaxRecords)
            }
        }
    }

    fn remove(&mut self, k: &RecordKey) {
        if self.records.remove(k).is_some()
            && let Some(persist) = &self.persist
            && let Err(e) = persist.remove_record(k.as_ref())
        {
            tracing::warn!(error = %e, "could not delete a record from disk");
        }
    }

    fn records(&self) -> Self::RecordsIter<'_> {
        self.records.values().map(|e| Cow::Owned(e.kad()))
    }

    fn add_provider(&mut self, record: ProviderRecord) -> kad_store::Result<()> {
        self.providers.add_provider(record)
    }

    fn providers(&self, key: &RecordKey) -> Vec<ProviderRecord> {
        self.providers.providers(key)
    }

    fn provided(&self) -> Self::ProvidedIter<'_> {
        self.providers.provided()
    }

    fn remove_provider(&mut self, k: &RecordKey, p: &PeerId) {
        self.providers.remove_provider(k, p)
    }
}

#[cfg(test)]
mod tests {
    use libp2p::kad::store::RecordStore as _;
    use shoal_pow::{NodeKey, StampPolicy};

    use super::*;
    use crate::record::NewRecord;

    const NOW: u64 = 1_795_435_200;

    fn signed(key: &NodeKey, k: &str, v: &str, seq: u64) -> SignedRecord {
        let new = NewRecord {
            key: k.into(),
            value: v.into(),
            seq,
            ttl: 3600,
        };
        SignedRecord::create(key, new, NOW, &StampPolicy::testnet()).unwrap()
    }

    #[test]
    fn higher_sequence_wins_and_limits_hold() {
        let key = NodeKey::generate();
        let mut store = RecordStore::in_memory(key.peer_id(), StoreConfig { max_records: 1 });
        let t = Instant::now();
        assert_eq!(
            store.insert(signed(&key, "k", "a", 1), t, NOW).unwrap(),
            Inserted::New
        );
        assert_eq!(
            store.insert(signed(&key, "k", "b", 2), t, NOW).unwrap(),
            Inserted::Replaced
        );
        assert!(matches!(
            store.insert(signed(&key, "k", "c", 1), t, NOW),
            Err(StoreError::Stale { held: 2, got: 1 })
        ));
        assert!(matches!(
            store.insert(signed(&key, "other", "x", 1), t, NOW),
            Err(StoreError::Full(1))
        ));
        assert_eq!(store.signed(b"k").unwrap().record().value, b"b");
        let kad = store.get(&RecordKey::new(&b"k")).unwrap();
        assert_eq!(kad.expires, Some(t + Duration::from_secs(3600)));
        assert_eq!(kad.publisher, Some(key.peer_id()));
    }

    #[test]
    fn expired_records_are_removed() {
        let key = NodeKey::generate();
        let mut store = RecordStore::in_memory(key.peer_id(), StoreConfig::default());
        let t = Instant::now();
        store.insert(signed(&key, "k", "a", 1), t, NOW).unwrap();
        assert_eq!(store.remove_expired(t + Duration::from_secs(3599)), 0);
        assert_eq!(store.remove_expired(t + Duration::from_secs(3601)), 1);
        assert!(store.is_empty());
    }

    #[test]
    fn persistent_store_reloads_valid_records() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.redb");
        let key = NodeKey::generate();
        let t = Instant::now();
        {
            let persist = Arc::new(Persist::open(&path).unwrap());
            let (mut store, _) = RecordStore::open(
                key.peer_id(),
                StoreConfig::default(),
                persist,
                t,
                NOW,
                |_, e| SignedRecord::decode(e).ok(),
            )
            .unwrap();
            store.insert(signed(&key, "k", "a", 1), t, NOW).unwrap();
            store.insert(signed(&key, "k", "b", 2), t, NOW).unwrap();
            store.insert(signed(&key, "gone", "x", 1), t, NOW).unwrap();
            store.remove(&RecordKey::new(&b"gone"));
        }
        let persist = Arc::new(Persist::open(&path).unwrap());
        let (store, dropped) = RecordStore::open(
            key.peer_id(),
            StoreConfig::default(),
            persist,
            t,
            NOW,
            |_, e| SignedRecord::decode(e).ok(),
        )
        .unwrap();
        assert_eq!(dropped, 0);
        assert_eq!(store.len(), 1);
        assert_eq!(store.signed(b"k").unwrap().record().value, b"b");
    }
}
