//! The routing table: Kademlia's k-buckets, filled only with peers the core admitted and SWIM
//! holds alive.
//!
//! The table answers other nodes' lookups ([`RoutingTable::closest`]) and tells whether this node
//! is among the closest to a key. SWIM already vouches for every live member, so a full bucket is
//! never probed to make room (kad would dial its least recently seen entry); a member that does
//! not fit waits in the bucket's replacement list and takes the first slot SWIM frees. Entries
//! keep their point, so a lookup answer costs no hashing.

use std::collections::BTreeMap;

use super::Peer;
use super::lookup::{KeyHash, closest_of};

/// One k-bucket: entries in insertion order, and replacements waiting for a free slot.
#[derive(Debug, Clone)]
struct Bucket<T> {
    entries: Vec<(T, KeyHash)>,
    replacements: Vec<(T, KeyHash)>,
}

impl<T> Default for Bucket<T> {
    fn default() -> Self {
        Self {
            entries: Vec::new(),
            replacements: Vec::new(),
        }
    }
}

/// What [`RoutingTable::insert`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Inserted {
    /// The peer took a slot.
    Added,
    /// The peer was already in the table.
    Present,
    /// The bucket is full: the peer waits in the replacement list (or was dropped if that is
    /// full too).
    Full,
    /// The peer is this node.
    Local,
}

/// The k-bucket routing table of one node. Only buckets that hold a peer are allocated: most of
/// the 256 stay empty (a network of n nodes fills about log2(n) of them), and a simulator runs
/// thousands of tables.
#[derive(Debug, Clone)]
pub struct RoutingTable<T> {
    local: KeyHash,
    k: usize,
    buckets: BTreeMap<u8, Bucket<T>>,
    len: usize,
}

impl<T: Peer> RoutingTable<T> {
    /// An empty table around `local`, with `k` entries (and `k` replacements) per bucket.
    pub fn new(local: KeyHash, k: usize) -> Self {
        Self {
            local,
            k: k.max(1),
            buckets: BTreeMap::new(),
            len: 0,
        }
    }

    /// Peers in the table.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether `peer` holds a slot.
    pub fn contains(&self, peer: &T) -> bool {
        self.local
            .bucket(&peer.point())
            .and_then(|b| self.buckets.get(&b))
            .is_some_and(|b| b.entries.iter().any(|(p, _)| p == peer))
    }

    /// Offers `peer` a slot: added if its bucket has room, otherwise remembered as a replacement.
    pub fn insert(&mut self, peer: T) -> Inserted {
        let point = peer.point();
        let Some(b) = self.local.bucket(&point) else {
            return Inserted::Local;
        };
        let bucket = self.buckets.entry(b).or_default();
        if bucket.entries.iter().any(|(p, _)| *p == peer) {
            return Inserted::Present;
        }
        if bucket.entries.len() < self.k {
            bucket.replacements.retain(|(p, _)| *p != peer);
            bucket.entries.push((peer, point));
            self.len += 1;
            return Inserted::Added;
        }
        if !bucket.replacements.iter().any(|(p, _)| *p == peer) {
            if bucket.replacements.len() >= self.k {
                bucket.replacements.remove(0);
            }
            bucket.replacements.push((peer, point));
        }
        Inserted::Full
    }

    /// Removes `peer` (from its slot or the replacements). If it held a slot, the freed slot
    /// goes to the newest replacement that `eligible` still accepts (replacements it refuses are
    /// dropped); returns whether `peer` held a slot and whether a full bucket lost a peer with no
    /// replacement left (members that did not fit may exist: the caller may refill it from the
    /// membership; a bucket that was not full already held every member of its range).
    pub fn remove(&mut self, peer: &T, eligible: impl Fn(&T) -> bool) -> Removed {
        let point = peer.point();
        let Some(b) = self.local.bucket(&point) else {
            return Removed::default();
        };
        let Some(bucket) = self.buckets.get_mut(&b) else {
            return Removed::default();
        };
        bucket.replacements.retain(|(p, _)| p != peer);
        let Some(i) = bucket.entries.iter().position(|(p, _)| p == peer) else {
            return Removed::default();
        };
        let was_full = bucket.entries.len() >= self.k;
        bucket.entries.remove(i);
        self.len -= 1;
        while let Some(candidate) = bucket.replacements.pop() {
            if eligible(&candidate.0) {
                bucket.entries.push(candidate);
                self.len += 1;
                return Removed {
                    held_slot: true,
                    short: None,
                };
            }
        }
        if bucket.entries.is_empty() {
            self.buckets.remove(&b);
        }
        Removed {
            held_slot: true,
            short: was_full.then_some(b),
        }
    }

    /// Whether `point` falls in bucket `b` (for a refill from the membership).
    pub fn in_bucket(&self, point: &KeyHash, b: u8) -> bool {
        self.local.bucket(point) == Some(b)
    }

    /// The `n` peers of the table closest to `target`, closest first, `except` left out.
    pub fn closest(&self, target: &KeyHash, n: usize, except: Option<&T>) -> Vec<T> {
        let entries = self
            .buckets
            .values()
            .flat_map(|b| b.entries.iter())
            .filter(|(p, _)| Some(p) != except)
            .map(|(p, point)| (*point, *p));
        closest_of(target, entries, n)
    }

    /// How many peers of the table are closer to `target` than this node, counting at most
    /// `limit`.
    pub fn closer_than_local(&self, target: &KeyHash, limit: usize) -> usize {
        let ours = self.local.distance(target);
        self.buckets
            .values()
            .flat_map(|b| b.entries.iter())
            .filter(|(_, point)| point.distance(target) < ours)
            .take(limit)
            .count()
    }

    /// Every peer holding a slot.
    pub fn peers(&self) -> impl Iterator<Item = &T> {
        self.buckets
            .values()
            .flat_map(|b| b.entries.iter().map(|(p, _)| p))
    }

    /// The peers of each non-empty bucket, nearest bucket first.
    pub fn buckets(&self) -> impl Iterator<Item = (u8, impl Iterator<Item = &T>)> {
        self.buckets
            .iter()
            .filter(|(_, b)| !b.entries.is_empty())
            .map(|(index, b)| (*index, b.entries.iter().map(|(p, _)| p)))
    }

    /// The bucket size k.
    pub fn k(&self) -> usize {
        self.k
    }

    /// Peers per non-empty bucket, as `(bucket, slots used)`, farthest bucket first.
    pub fn fill(&self) -> Vec<(u8, usize)> {
        self.buckets
            .iter()
            .rev()
            .filter(|(_, b)| !b.entries.is_empty())
            .map(|(b, bucket)| (*b, bucket.entries.len()))
            .collect()
    }

    /// Entries and replacements held, for the bound checks of tests and the simulator.
    pub fn held(&self) -> usize {
        self.buckets
            .values()
            .map(|b| b.entries.len() + b.replacements.len())
            .sum()
    }
}

/// What [`RoutingTable::remove`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Removed {
    /// The peer held a slot.
    pub held_slot: bool,
    /// The bucket that lost a peer and found no replacement.
    pub short: Option<u8>,
}

#[cfg(test)]
mod tests {
    use libp2p::PeerId;

    use super::*;

    fn peers(n: usize) -> Vec<PeerId> {
        (0..n).map(|_| PeerId::random()).collect()
    }

    #[test]
    fn full_buckets_keep_replacements_for_freed_slots() {
        let local = KeyHash::of(b"local");
        let mut table = RoutingTable::new(local, 2);
        // Fill the farthest bucket (about half of random points land there).
        let far: Vec<PeerId> = peers(400)
            .into_iter()
            .filter(|p| local.bucket(&p.point()) == Some(255))
            .take(5)
            .collect();
        assert_eq!(table.insert(far[0]), Inserted::Added);
        assert_eq!(table.insert(far[0]), Inserted::Present);
        assert_eq!(table.insert(far[1]), Inserted::Added);
        assert_eq!(table.insert(far[2]), Inserted::Full);
        assert_eq!(table.insert(far[3]), Inserted::Full);
        assert_eq!(table.insert(far[4]), Inserted::Full);
        assert_eq!(table.len(), 2);
        assert_eq!(table.held(), 4, "two slots and two replacements");
        // The newest replacement (far[4]) is refused as no longer eligible, far[3] takes the slot.
        let removed = table.remove(&far[0], |p| *p != far[4]);
        assert_eq!(
            removed,
            Removed {
                held_slot: true,
                short: None
            }
        );
        assert!(table.contains(&far[3]));
        assert!(!table.contains(&far[4]));
        // A full bucket with no replacement left is reported short; one that was not full is not.
        let removed = table.remove(&far[1], |_| true);
        assert_eq!(removed.short, Some(255));
        let removed = table.remove(&far[3], |_| true);
        assert_eq!(removed.short, None);
        assert!(table.is_empty());
    }

    #[test]
    fn closest_is_ordered_and_leaves_the_asker_out() {
        let local = KeyHash::of(b"local");
        let mut table = RoutingTable::new(local, 20);
        let all = peers(50);
        for p in &all {
            table.insert(*p);
        }
        let target = KeyHash::of(b"key");
        let held: Vec<PeerId> = table.peers().copied().collect();
        let truth = super::super::lookup::closest(&target, held.clone(), 5);
        assert_eq!(table.closest(&target, 5, None), truth);
        let without = table.closest(&target, 5, Some(&truth[0]));
        assert_eq!(without[..4], truth[1..]);
        assert!(table.closer_than_local(&target, 100) <= held.len());
    }
}
