//! The piggyback queue: membership updates waiting to ride on outgoing messages.
//!
//! One entry per member (newer news about a member replaces older news). Entries are picked
//! freshest-first: fewest transmissions, then most recently queued. An entry is dropped after
//! it has been sent `limit` times, where the caller passes `λ · ceil(log10(n + 1))`.

use std::cmp::Reverse;
use std::collections::{BTreeSet, HashMap};

use crate::Identity;
use crate::message::{Update, encoded_len};

struct Entry<T> {
    update: Update<T>,
    size: usize,
    transmits: u32,
    id: u64,
}

/// Bounded by construction: at most one entry per distinct member, and the caller only queues
/// members that fit in its bounded table (plus itself).
pub(crate) struct Broadcasts<T> {
    entries: HashMap<T, Entry<T>>,
    order: BTreeSet<(u32, Reverse<u64>, T)>,
    next_id: u64,
}

impl<T: Identity> Broadcasts<T> {
    pub(crate) fn new() -> Self {
        Self {
            entries: HashMap::new(),
            order: BTreeSet::new(),
            next_id: 0,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Queues `update`, replacing any queued news about the same member.
    pub(crate) fn push(&mut self, update: Update<T>) {
        let size = encoded_len(&update);
        let id = self.next_id;
        self.next_id += 1;
        let member = update.member.clone();
        if let Some(old) = self.entries.remove(&member) {
            self.order
                .remove(&(old.transmits, Reverse(old.id), member.clone()));
        }
        self.order.insert((0, Reverse(id), member.clone()));
        self.entries.insert(
            member,
            Entry {
                update,
                size,
                transmits: 0,
                id,
            },
        );
    }

    /// Gives back the memory of a drained burst (see [`super::shrink_sparse`]).
    pub(crate) fn shrink(&mut self) {
        super::shrink_sparse(&mut self.entries);
    }

    /// Whether news about `member` is still queued.
    pub(crate) fn contains(&self, member: &T) -> bool {
        self.entries.contains_key(member)
    }

    /// Appends to `out` the freshest updates that fit in `budget` bytes (at most `max_count`),
    /// skipping news about `skip`, and counts one transmission for each; entries sent `limit`
    /// times are dropped.
    pub(crate) fn fill(
        &mut self,
        mut budget: usize,
        max_count: usize,
        limit: u32,
        skip: Option<&T>,
        out: &mut Vec<Update<T>>,
    ) {
        if self.entries.is_empty() {
            return;
        }
        let mut picked: Vec<(u32, Reverse<u64>, T)> = Vec::new();
        let mut misses = 0;
        for key in self.order.iter() {
            if picked.len() >= max_count || budget == 0 || misses >= 16 {
                break;
            }
            if skip == Some(&key.2) {
                continue;
            }
            // Invariant: `order` and `entries` hold the same members.
            let Some(entry) = self.entries.get(&key.2) else {
                continue;
            };
            if entry.size <= budget {
                budget -= entry.size;
                picked.push(key.clone());
            } else {
                misses += 1;
            }
        }
        for key in picked {
            self.order.remove(&key);
            let member = key.2;
            let Some(entry) = self.entries.get_mut(&member) else {
                continue;
            };
            out.push(entry.update.clone());
            entry.transmits += 1;
            if entry.transmits >= limit {
                self.entries.remove(&member);
            } else {
                self.order
                    .insert((entry.transmits, Reverse(entry.id), member));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::State;

    fn alive(member: u32, incarnation: u64) -> Update<u32> {
        Update {
            member,
            incarnation,
            state: State::Alive,
            addrs: vec![],
            by: None,
        }
    }

    #[test]
    fn freshest_first_and_retransmit_limit() {
        let mut b = Broadcasts::new();
        b.push(alive(1, 0));
        b.push(alive(2, 0));
        let mut out = Vec::new();
        b.fill(1000, 1, 2, None, &mut out);
        assert_eq!(out[0].member, 2, "most recent first");
        out.clear();
        b.fill(1000, 1, 2, None, &mut out);
        assert_eq!(out[0].member, 1, "fewest transmissions first");
        out.clear();
        b.fill(1000, 10, 2, None, &mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(b.len(), 0, "both sent twice, dropped");
    }

    #[test]
    fn newer_news_replaces_and_budget_holds() {
        let mut b = Broadcasts::new();
        b.push(alive(1, 0));
        b.push(alive(1, 5));
        assert_eq!(b.len(), 1);
        let mut out = Vec::new();
        b.fill(1000, 10, 3, None, &mut out);
        assert_eq!(out, vec![alive(1, 5)]);
        for i in 0..100 {
            b.push(alive(i, 0));
        }
        out.clear();
        let one = encoded_len(&alive(50, 0));
        b.fill(one * 3, 100, 3, Some(&99), &mut out);
        assert!(out.len() <= 3 && !out.is_empty());
        assert!(out.iter().all(|u| u.member != 99));
    }
}
