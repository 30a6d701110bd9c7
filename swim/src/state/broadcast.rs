//! The piggyback queue: membership updates waiting to ride on outgoing messages.
//!
//! One entry per member (newer news about a member replaces older news). Entries are picked
//! freshest-first: fewest transmissions, then most recently queued; [`Broadcasts::take`] picks
//! one member's news out of that order (the core's own news, which rides first). An entry is
//! dropped after it has been sent `limit` times, where the caller passes `λ · ceil(log10(n + 1))`.
//!
//! Dedicated gossip rounds draw on a budget of their own: [`Broadcasts::fill_round`] counts the
//! rounds that carried an entry apart from its piggyback transmissions, and never drops it. A
//! round sends to several random members every few hundred milliseconds; charged to the
//! piggyback count it spent an update's transmissions within a second, before a member that
//! missed the news (one suspected at that moment, which rounds then skipped) could be reached
//! again, and left probes and acks with nothing to carry (a suspicion's holder is corrected only
//! when it gossips its suspicion to a member that knows better).
//!
//! # Layout
//!
//! After a mass failure every survivor queues news about each crashed member, so a simulator
//! of thousands of cores holds millions of entries at once. An entry is therefore kept compact,
//! and rebuilt into an [`Update`] only when it is sent:
//!
//! - **A queue in arrival order.** Entries sit in an array in the order they were queued, so
//!   "most recently queued" is "later in the array" and needs no counter. News that is replaced
//!   or sent its last time leaves a hole, skipped until the holes make up a quarter of the array
//!   and it is compacted (or an eighth, when the array is full and would otherwise grow). A map
//!   gives each member's place in the array.
//! - **Small fields.** The member, the incarnation (two 32-bit halves, so that the entry needs
//!   only 4-byte alignment), the suspector (the member itself stands in when there is none, a
//!   flag telling which) and one 32-bit word for the state, the flags, the transmissions (the
//!   caller's limit stays below 256) and the encoded size, which saturates at a value above any
//!   gossip budget: an update that large never fits, whether its size is exact or not.
//! - **Addresses apart.** Address lists sit in an array parallel to the queue that exists only
//!   while some entry has addresses, and an entry holds a counted reference to the list of the
//!   member table when the news carries the same one, instead of a copy.
//!
//! Picking scans the array from its end (the freshest news) once per transmission count, from
//! the lowest, and stops a count once it met as many entries as it holds (a small array counts
//! the entries of each): it visits the entries in the order `(transmissions, most recent
//! first)`, the order of the `BTreeSet` this layout replaced, which a test checks on random
//! operations.

use std::collections::HashMap;
use std::sync::Arc;

use super::{grow_gently, shrink_gently, shrink_sparse};
use crate::Identity;
use crate::message::{Address, Credential, State, Update, encoded_len};

/// Bits of [`Entry::meta`]: the state in the lowest two.
const STATE_MASK: u32 = 0b11;
/// Set when the update names who suspects or declared the member dead.
const HAS_BY: u32 = 1 << 2;
/// Set on a live entry; clear on a hole.
const LIVE: u32 = 1 << 3;
/// Transmissions so far, in the next 8 bits.
const TRANSMITS_SHIFT: u32 = 4;
/// Encoded size, in the remaining 20 bits.
const SIZE_SHIFT: u32 = 12;
/// Largest size stored: above any gossip budget (at most half of `MAX_MESSAGE_BYTES`).
const MAX_SIZE: usize = (1 << (32 - SIZE_SHIFT)) - 1;
const _: () = assert!(MAX_SIZE > crate::message::MAX_MESSAGE_BYTES / 2);

/// Updates skipped for not fitting the budget before a fill gives up.
const MAX_MISSES: usize = 16;

/// One queued update, without its addresses. See the module docs.
struct Entry<T> {
    member: T,
    /// Who suspects it or declared it dead, if [`HAS_BY`]; else a copy of `member`.
    by: T,
    incarnation: [u32; 2],
    meta: u32,
}

impl<T: Identity> Entry<T> {
    fn new(update: Update<T>, size: usize) -> Self {
        let state = match update.state {
            State::Alive => 0,
            State::Suspect => 1,
            State::Dead => 2,
            State::Left => 3,
        };
        let (by, has_by) = match update.by {
            Some(by) => (by, HAS_BY),
            None => (update.member.clone(), 0),
        };
        Self {
            member: update.member,
            by,
            incarnation: [update.incarnation as u32, (update.incarnation >> 32) as u32],
            meta: state | has_by | LIVE | ((size.min(MAX_SIZE) as u32) << SIZE_SHIFT),
        }
    }

    fn live(&self) -> bool {
        self.meta & LIVE != 0
    }

    fn transmits(&self) -> usize {
        ((self.meta >> TRANSMITS_SHIFT) & 0xff) as usize
    }

    fn set_transmits(&mut self, transmits: usize) {
        let t = transmits.min(0xff) as u32;
        self.meta = (self.meta & !(0xff << TRANSMITS_SHIFT)) | (t << TRANSMITS_SHIFT);
    }

    fn size(&self) -> usize {
        (self.meta >> SIZE_SHIFT) as usize
    }

    fn update(&self, addrs: Option<&Arc<[Address]>>) -> Update<T> {
        let state = match self.meta & STATE_MASK {
            0 => State::Alive,
            1 => State::Suspect,
            2 => State::Dead,
            _ => State::Left,
        };
        Update {
            member: self.member.clone(),
            incarnation: u64::from(self.incarnation[0]) | (u64::from(self.incarnation[1]) << 32),
            state,
            addrs: addrs.map_or_else(Vec::new, |a| a.to_vec()),
            by: (self.meta & HAS_BY != 0).then(|| self.by.clone()),
            credential: Credential::default(),
        }
    }
}

/// Bounded by construction: at most one live entry per distinct member, and the caller only
/// queues members that fit in its bounded table (plus itself); holes are compacted away before
/// they make up a quarter of the array, unless they are fewer than 16.
pub(crate) struct Broadcasts<T> {
    /// Entries in the order they were queued, holes included.
    queue: Vec<Entry<T>>,
    /// The addresses of the entry at the same place of `queue`, if it has any; empty (no
    /// allocation) while no entry has addresses.
    addrs: Vec<Option<Arc<[Address]>>>,
    /// Entries holding addresses.
    with_addrs: usize,
    /// The gossip rounds that carried the entry at the same place of `queue` (saturating): one
    /// byte an entry, kept apart so that an entry stays five words.
    rounds: Vec<u8>,
    /// Whether news other than a suspicion was queued since the last gossip round.
    urgent: bool,
    /// The place in `queue` of each member's entry.
    places: HashMap<T, u32>,
    /// Live entries per number of transmissions.
    levels: Vec<u32>,
    /// Holes in `queue`.
    holes: usize,
}

impl<T: Identity> Broadcasts<T> {
    pub(crate) fn new() -> Self {
        Self {
            queue: Vec::new(),
            addrs: Vec::new(),
            with_addrs: 0,
            rounds: Vec::new(),
            urgent: false,
            places: HashMap::new(),
            levels: Vec::new(),
            holes: 0,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.places.len()
    }

    /// Queues `update`, replacing any queued news about the same member.
    pub(crate) fn push(&mut self, update: Update<T>) {
        self.push_sharing(update, None);
    }

    /// [`Self::push`], keeping a counted reference to `held` instead of a copy of the update's
    /// addresses when they are the same list.
    pub(crate) fn push_sharing(&mut self, mut update: Update<T>, held: Option<&Arc<[Address]>>) {
        let size = encoded_len(&update);
        self.urgent |= update.state != State::Suspect;
        let addrs = std::mem::take(&mut update.addrs);
        let addrs: Option<Arc<[Address]>> = match held {
            _ if addrs.is_empty() => None,
            Some(held) if **held == *addrs => Some(held.clone()),
            _ => Some(addrs.into()),
        };
        if let Some(&old) = self.places.get(&update.member) {
            self.clear(old as usize);
        }
        // A full array with an eighth of holes is compacted rather than grown.
        if self.queue.len() == self.queue.capacity() && self.holes * 8 >= self.queue.len() {
            self.compact();
        }
        let place = self.queue.len();
        self.places.insert(update.member.clone(), place as u32);
        grow_gently(&mut self.queue);
        self.queue.push(Entry::new(update, size));
        grow_gently(&mut self.rounds);
        self.rounds.push(0);
        if !self.addrs.is_empty() {
            grow_gently(&mut self.addrs);
            self.addrs.push(None);
        }
        if let Some(addrs) = addrs {
            if self.addrs.is_empty() {
                self.addrs.resize(self.queue.len(), None);
            }
            self.addrs[place] = Some(addrs);
            self.with_addrs += 1;
        }
        self.count(0, 1);
        self.compact_if_sparse();
    }

    /// Gives back the memory of a drained burst (see [`super::shrink_sparse`]).
    pub(crate) fn shrink(&mut self) {
        shrink_sparse(&mut self.places);
        shrink_gently(&mut self.queue);
        shrink_gently(&mut self.rounds);
        shrink_gently(&mut self.addrs);
    }

    /// Whether news about `member` is still queued.
    pub(crate) fn contains(&self, member: &T) -> bool {
        self.places.contains_key(member)
    }

    /// Appends to `out` the freshest updates that fit in `budget` bytes (at most `max_count`),
    /// skipping news about the members in `skip`, and counts one transmission for each; entries
    /// sent `limit` times are dropped.
    pub(crate) fn fill(
        &mut self,
        mut budget: usize,
        max_count: usize,
        limit: u32,
        skip: &[T],
        out: &mut Vec<Update<T>>,
    ) {
        if self.places.is_empty() {
            return;
        }
        let mut picked: Vec<usize> = Vec::new();
        let mut misses = 0;
        'levels: for (level, &count) in self.levels.iter().enumerate() {
            let mut left = count;
            for (place, entry) in self.queue.iter().enumerate().rev() {
                if left == 0 {
                    break;
                }
                if !entry.live() || entry.transmits() != level {
                    continue;
                }
                if picked.len() >= max_count || budget == 0 || misses >= MAX_MISSES {
                    break 'levels;
                }
                left -= 1;
                if skip.contains(&entry.member) {
                    continue;
                }
                if entry.size() <= budget {
                    budget -= entry.size();
                    picked.push(place);
                } else {
                    misses += 1;
                }
            }
        }
        for place in picked {
            out.push(self.transmit(place, limit));
        }
        self.compact_if_sparse();
    }

    /// The news queued about `member`, if it fits in `budget` bytes, counted as transmitted once
    /// (and dropped at `limit`) as [`Self::fill`] counts it: for news that must not wait behind
    /// fresher news about others (a member's own refutation).
    pub(crate) fn take(&mut self, member: &T, budget: usize, limit: u32) -> Option<Update<T>> {
        let place = *self.places.get(member)? as usize;
        if self.queue[place].size() > budget {
            return None;
        }
        let update = self.transmit(place, limit);
        self.compact_if_sparse();
        Some(update)
    }

    /// The update of the live entry at `place`, with one more transmission counted; the entry
    /// is dropped once sent `limit` times.
    fn transmit(&mut self, place: usize, limit: u32) -> Update<T> {
        let entry = &self.queue[place];
        let update = entry.update(self.addrs.get(place).and_then(Option::as_ref));
        let level = entry.transmits();
        if level + 1 >= limit as usize {
            let member = entry.member.clone();
            self.places.remove(&member);
            self.clear(place);
        } else {
            self.queue[place].set_transmits(level + 1);
            self.count(level, -1);
            self.count(level + 1, 1);
        }
        update
    }

    /// Appends to `out` the freshest updates that fit in `budget` bytes (at most `max_count`)
    /// and that fewer gossip rounds carried than their limit: `gone` rounds for a death or a
    /// departure, `news` rounds for the rest. Counts one round for each. Their piggyback
    /// transmissions are neither counted nor checked: a round does not spend what probes and
    /// acks will carry, and an update leaves the queue only by the piggyback limit.
    pub(crate) fn fill_round(
        &mut self,
        mut budget: usize,
        max_count: usize,
        (news, gone): (u32, u32),
        out: &mut Vec<Update<T>>,
    ) {
        self.urgent = false;
        let mut misses = 0;
        let mut picked = Vec::new();
        for (place, entry) in self.queue.iter().enumerate().rev() {
            if picked.len() >= max_count || budget == 0 || misses >= MAX_MISSES {
                break;
            }
            let limit = if entry.meta & STATE_MASK >= 2 {
                gone
            } else {
                news
            };
            if !entry.live() || u32::from(self.rounds[place]) >= limit {
                continue;
            }
            if entry.size() <= budget {
                budget -= entry.size();
                picked.push(place);
            } else {
                misses += 1;
            }
        }
        for place in picked {
            let entry = &self.queue[place];
            out.push(entry.update(self.addrs.get(place).and_then(Option::as_ref)));
            self.rounds[place] = self.rounds[place].saturating_add(1);
        }
    }

    /// Whether news other than a suspicion was queued since the last
    /// [`fill_round`](Self::fill_round).
    pub(crate) fn has_urgent(&self) -> bool {
        self.urgent
    }

    /// Panics unless the queue, the places, the counts and the address array agree.
    #[cfg(test)]
    fn check_invariants(&self) {
        assert_eq!(self.rounds.len(), self.queue.len());
        let live = self.queue.iter().filter(|e| e.live()).count();
        assert_eq!(live, self.places.len());
        assert_eq!(self.queue.len() - live, self.holes);
        for (member, &place) in &self.places {
            let e = &self.queue[place as usize];
            assert!(e.live() && e.member == *member);
        }
        for (level, &count) in self.levels.iter().enumerate() {
            let n = self
                .queue
                .iter()
                .filter(|e| e.live() && e.transmits() == level)
                .count();
            assert_eq!(n, count as usize, "level {level}");
        }
        assert!(self.addrs.is_empty() || self.addrs.len() == self.queue.len());
        assert_eq!(self.addrs.iter().flatten().count(), self.with_addrs);
    }

    /// Adds `delta` to the live entries sent `level` times.
    fn count(&mut self, level: usize, delta: i32) {
        if self.levels.len() <= level {
            self.levels.resize(level + 1, 0);
        }
        let c = &mut self.levels[level];
        *c = c.saturating_add_signed(delta);
        // Trailing empty counts would only lengthen every fill's walk over them.
        while self.levels.last() == Some(&0) {
            self.levels.pop();
        }
    }

    /// Turns the entry at `place`, whose member no longer points to it, into a hole.
    fn clear(&mut self, place: usize) {
        let entry = &mut self.queue[place];
        if entry.live() {
            let level = entry.transmits();
            entry.meta &= !LIVE;
            self.holes += 1;
            self.count(level, -1);
        }
        if let Some(slot) = self.addrs.get_mut(place)
            && slot.take().is_some()
        {
            self.with_addrs -= 1;
        }
    }

    /// Removes the holes once they make up a quarter of the queue, or all of it.
    fn compact_if_sparse(&mut self) {
        if self.places.is_empty() {
            self.queue.clear();
            self.rounds.clear();
            self.addrs = Vec::new();
            self.holes = 0;
        } else if self.holes * 4 >= self.queue.len() && self.holes >= 16 {
            self.compact();
        }
    }

    /// Removes the holes, keeping the order of the entries.
    fn compact(&mut self) {
        let mut kept = 0;
        for place in 0..self.queue.len() {
            if !self.queue[place].live() {
                continue;
            }
            self.queue.swap(kept, place);
            self.rounds.swap(kept, place);
            if !self.addrs.is_empty() {
                self.addrs.swap(kept, place);
            }
            let member = &self.queue[kept].member;
            // Invariant: every live entry has its member in `places`.
            *self.places.get_mut(member).expect("queued member") = kept as u32;
            kept += 1;
        }
        self.queue.truncate(kept);
        self.rounds.truncate(kept);
        if !self.addrs.is_empty() {
            self.addrs.truncate(kept);
        }
        if self.with_addrs == 0 {
            self.addrs = Vec::new();
        }
        self.holes = 0;
    }
}

#[cfg(test)]
mod tests {
    use std::cmp::Reverse;
    use std::collections::BTreeSet;

    use proptest::prelude::*;

    use super::*;

    fn alive(member: u32, incarnation: u64) -> Update<u32> {
        Update {
            member,
            incarnation,
            state: State::Alive,
            addrs: vec![],
            by: None,
            credential: Credential::default(),
        }
    }

    #[test]
    fn freshest_first_and_retransmit_limit() {
        let mut b = Broadcasts::new();
        b.push(alive(1, 0));
        b.push(alive(2, 0));
        let mut out = Vec::new();
        b.fill(1000, 1, 2, &[], &mut out);
        assert_eq!(out[0].member, 2, "most recent first");
        out.clear();
        b.fill(1000, 1, 2, &[], &mut out);
        assert_eq!(out[0].member, 1, "fewest transmissions first");
        out.clear();
        b.fill(1000, 10, 2, &[], &mut out);
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
        b.fill(1000, 10, 3, &[], &mut out);
        assert_eq!(out, vec![alive(1, 5)]);
        for i in 0..100 {
            b.push(alive(i, 0));
        }
        out.clear();
        let one = encoded_len(&alive(50, 0));
        b.fill(one * 3, 100, 3, &[99], &mut out);
        assert!(out.len() <= 3 && !out.is_empty());
        assert!(out.iter().all(|u| u.member != 99));
    }

    #[test]
    fn an_entry_takes_five_words() {
        assert_eq!(std::mem::size_of::<Entry<u32>>(), 20);
        assert_eq!(std::mem::align_of::<Entry<u32>>(), 4);
    }

    #[test]
    fn updates_come_back_whole_and_addresses_are_shared() {
        let table: Arc<[Address]> = vec![Address::from("/a"), Address::from("/b")].into();
        let updates = [
            Update {
                member: 7,
                incarnation: u64::MAX - 1,
                state: State::Suspect,
                addrs: table.to_vec(),
                by: Some(9),
                credential: Credential::default(),
            },
            Update {
                member: 8,
                incarnation: 1 << 33,
                state: State::Dead,
                addrs: vec![Address::from("/c")],
                by: Some(8),
                credential: Credential::default(),
            },
            Update {
                member: 10,
                incarnation: 3,
                state: State::Left,
                addrs: vec![],
                by: None,
                credential: Credential::default(),
            },
        ];
        let mut b = Broadcasts::new();
        for u in updates.iter().cloned() {
            b.push_sharing(u, Some(&table));
        }
        b.check_invariants();
        assert_eq!(
            Arc::strong_count(&table),
            2,
            "the same list is shared, not copied"
        );
        let mut out = Vec::new();
        b.fill(10_000, 10, 1, &[], &mut out);
        out.reverse();
        assert_eq!(out, updates);
        b.check_invariants();
        assert_eq!(Arc::strong_count(&table), 1, "released with the entry");
        assert!(b.addrs.is_empty() && b.queue.is_empty());
    }

    #[test]
    fn sizes_saturate_above_any_budget() {
        let mut e = Entry::new(alive(1, 0), usize::MAX);
        assert_eq!(e.size(), MAX_SIZE);
        e.set_transmits(255);
        assert_eq!((e.size(), e.transmits()), (MAX_SIZE, 255));
        assert!(e.live());
    }

    /// The queue this module replaced, kept as the reference for the order of picks.
    struct Reference {
        entries: HashMap<u32, (Update<u32>, usize, u32, u64)>,
        order: BTreeSet<(u32, Reverse<u64>, u32)>,
        next_id: u64,
    }

    impl Reference {
        fn push(&mut self, update: Update<u32>) {
            let size = encoded_len(&update);
            let id = self.next_id;
            self.next_id += 1;
            if let Some((_, _, t, old)) = self.entries.remove(&update.member) {
                self.order.remove(&(t, Reverse(old), update.member));
            }
            self.order.insert((0, Reverse(id), update.member));
            self.entries.insert(update.member, (update, size, 0, id));
        }

        fn fill(
            &mut self,
            mut budget: usize,
            max_count: usize,
            limit: u32,
            skip: Option<&u32>,
            out: &mut Vec<Update<u32>>,
        ) {
            let mut picked = Vec::new();
            let mut misses = 0;
            for key in self.order.iter() {
                if picked.len() >= max_count || budget == 0 || misses >= MAX_MISSES {
                    break;
                }
                if skip == Some(&key.2) {
                    continue;
                }
                let size = self.entries[&key.2].1;
                if size <= budget {
                    budget -= size;
                    picked.push(*key);
                } else {
                    misses += 1;
                }
            }
            for key in picked {
                self.order.remove(&key);
                let e = self.entries.get_mut(&key.2).unwrap();
                out.push(e.0.clone());
                e.2 += 1;
                if e.2 >= limit {
                    self.entries.remove(&key.2);
                } else {
                    self.order.insert((e.2, key.1, key.2));
                }
            }
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        Push {
            member: u32,
            incarnation: u64,
            state: u8,
            addrs: u8,
        },
        Fill {
            budget: usize,
            max_count: usize,
            limit: u32,
            skip: Option<u32>,
        },
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => (0..40u32, 0..4u64, 0..4u8, 0..3u8).prop_map(
                |(member, incarnation, state, addrs)| Op::Push {
                    member,
                    incarnation,
                    state,
                    addrs,
                }
            ),
            2 => (0..400usize, 0..12usize, 1..6u32, proptest::option::of(0..40u32)).prop_map(
                |(budget, max_count, limit, skip)| Op::Fill {
                    budget,
                    max_count,
                    limit,
                    skip,
                }
            ),
        ]
    }

    fn update(member: u32, incarnation: u64, state: u8, addrs: u8) -> Update<u32> {
        let state = [State::Alive, State::Suspect, State::Dead, State::Left][state as usize];
        Update {
            member,
            incarnation,
            state,
            addrs: (0..addrs)
                .map(|i| Address(vec![b'x'; 10 * i as usize + 1]))
                .collect(),
            by: matches!(state, State::Suspect | State::Dead).then_some(member + 1),
            credential: Credential::default(),
        }
    }

    proptest! {
        /// The compact queue sends the same updates in the same order as the queue it replaced.
        #[test]
        fn picks_as_the_old_queue_did(ops in proptest::collection::vec(op(), 1..300)) {
            let mut new = Broadcasts::new();
            let mut old = Reference { entries: HashMap::new(), order: BTreeSet::new(), next_id: 0 };
            let shared: Arc<[Address]> = update(0, 0, 0, 1).addrs.into();
            for op in ops {
                match op {
                    Op::Push { member, incarnation, state, addrs } => {
                        let u = update(member, incarnation, state, addrs);
                        old.push(u.clone());
                        new.push_sharing(u, Some(&shared));
                    }
                    Op::Fill { budget, max_count, limit, skip } => {
                        let (mut a, mut b) = (Vec::new(), Vec::new());
                        old.fill(budget, max_count, limit, skip.as_ref(), &mut a);
                        new.fill(budget, max_count, limit, skip.as_slice(), &mut b);
                        prop_assert_eq!(a, b);
                    }
                }
                new.check_invariants();
                prop_assert_eq!(new.len(), old.entries.len());
                for m in 0..40 {
                    prop_assert_eq!(new.contains(&m), old.entries.contains_key(&m));
                }
            }
        }
    }
}
