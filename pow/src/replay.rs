//! A replay cache for stamps that covers their whole validity window in bounded memory.
//!
//! Each accepted stamp is remembered, by the first 16 bytes of its SHA-256, until its validity
//! ends. Memory is at most `capacity` entries of about 80 bytes each (a hash-map slot and an
//! ordered-set node): 65,536 entries take about 5 MiB. When every slot holds an unexpired stamp,
//! new stamps are refused rather than risk forgetting one that could be replayed.

use std::collections::{BTreeSet, HashMap};
use std::num::NonZeroUsize;

/// Outcome of [`ReplayCache::insert`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Insert {
    /// First time seen; now remembered.
    Fresh,
    /// Seen before and still within its validity window.
    Replayed,
    /// Full of unexpired entries; nothing remembered.
    Full,
}

/// Remembers stamp hashes until they expire.
#[derive(Debug)]
pub(crate) struct ReplayCache {
    capacity: NonZeroUsize,
    expiry_of: HashMap<[u8; 16], u64>,
    by_expiry: BTreeSet<(u64, [u8; 16])>,
}

impl ReplayCache {
    pub(crate) fn new(capacity: NonZeroUsize) -> Self {
        Self {
            capacity,
            expiry_of: HashMap::new(),
            by_expiry: BTreeSet::new(),
        }
    }

    /// Records `hash` as valid until `expires` (Unix seconds), first dropping entries expired at
    /// `now`.
    pub(crate) fn insert(&mut self, now: u64, hash: &[u8; 32], expires: u64) -> Insert {
        self.prune(now);
        let mut key = [0u8; 16];
        key.copy_from_slice(&hash[..16]);
        if self.expiry_of.contains_key(&key) {
            return Insert::Replayed;
        }
        if self.expiry_of.len() >= self.capacity.get() {
            return Insert::Full;
        }
        self.expiry_of.insert(key, expires);
        self.by_expiry.insert((expires, key));
        Insert::Fresh
    }

    /// Entries currently remembered.
    pub(crate) fn len(&self) -> usize {
        self.expiry_of.len()
    }

    fn prune(&mut self, now: u64) {
        while let Some(&(expires, key)) = self.by_expiry.first() {
            if expires >= now {
                break;
            }
            self.by_expiry.pop_first();
            self.expiry_of.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_until_expiry_and_is_bounded() {
        let mut cache = ReplayCache::new(NonZeroUsize::new(2).unwrap());
        let (a, b, c) = ([1u8; 32], [2u8; 32], [3u8; 32]);
        assert_eq!(cache.insert(100, &a, 200), Insert::Fresh);
        assert_eq!(cache.insert(150, &a, 200), Insert::Replayed);
        assert_eq!(cache.insert(150, &b, 300), Insert::Fresh);
        assert_eq!(cache.insert(150, &c, 300), Insert::Full);
        assert_eq!(cache.len(), 2);
        // At 200 `a` is still valid (inclusive end); after it, it is forgotten.
        assert_eq!(cache.insert(200, &a, 200), Insert::Replayed);
        assert_eq!(cache.insert(201, &c, 300), Insert::Fresh);
        assert_eq!(cache.len(), 2);
    }
}
