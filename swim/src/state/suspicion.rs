//! Running suspicions, laid out for a mass failure.
//!
//! When a fifth of a large cluster crashes at once, every survivor holds a suspicion about each
//! crashed member until it times out: in a simulator of thousands of cores that is millions of
//! suspicions, so their layout sets the memory of the run. One suspicion takes one entry of a
//! d-ary min-heap, ordered by deadline, plus one entry of a map from the member to its place in
//! the heap, and nothing else while `K` stays at most [`INLINE`] + 1:
//!
//! - **Times as [`Ticks`].** The start and the deadline, exact to the nanosecond (so a deadline
//!   fires at the same instant as before), in 8 bytes each with 4-byte alignment.
//! - **Suspectors as a count and fingerprints.** Lifeguard counts distinct suspectors, the first
//!   one included, up to `K + 1`. The first suspector is kept whole (the buddy system tells the
//!   suspect who suspects it); a later one is only compared with those counted before, while the
//!   count is at most `K`, so the core keeps a 32-bit fingerprint of each of the first `K - 1`
//!   confirmations, inline up to [`INLINE`] of them (the default `K` of 3 needs 2) and in a side
//!   map beyond. For an identity whose `Hash` writes at most 4 bytes (integers up to `u32` and
//!   newtypes of them, as in tests and simulators) the fingerprint is those bytes: distinct
//!   suspectors never collide and the count is exact. For a larger identity two suspectors
//!   collide with probability about 2^-32, and a collision can only make the core take a new
//!   suspector for one already counted: the suspicion then shrinks less and lasts longer, never
//!   shorter, and the confirmation is not gossiped on. The fingerprint uses fixed keys, so a
//!   peer can search for an identity that collides with another suspector; all it gains is that
//!   its own confirmation does not count, which it could have had by not sending it.
//! - **The heap is the timer.** Its root is the next deadline; ties are broken by member, so
//!   expiries come in the order a `BTreeSet<(Instant, T)>` gives. A 4-ary heap keeps the tree
//!   shallow: each step that moves an entry also rewrites its place in the map.
//! - **A last check before the deadline.** When the suspicions are built with a lead, a
//!   suspicion with fewer than `K` confirmations comes due once `lead` before its deadline (a
//!   [`Due::Check`]: the core then asks the suspect and a few members whether it is alive), and
//!   again at its deadline. Its key in the heap is the earlier of the two still ahead, and a flag
//!   in the padding after the count says which, so a suspicion stays nine words.

use std::collections::HashMap;
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::time::{Duration, Instant};

use super::ticks::Ticks;
use super::{grow_gently, shrink_gently, shrink_sparse};
use crate::Identity;

/// Fingerprints of confirmations kept inline in a suspicion: enough for `K` up to 3.
const INLINE: usize = 2;

/// Children of a heap node.
const ARITY: usize = 4;

/// One running suspicion. See the module docs.
struct Suspicion<T> {
    member: T,
    /// The first suspector.
    by: T,
    started: Ticks,
    deadline: Ticks,
    /// Fingerprints of the confirmations counted after `by`, oldest first, as far as later
    /// checks need them (the first `K - 1`): the first [`INLINE`] here, the rest in
    /// [`Suspicions::spill`].
    prints: [u32; INLINE],
    /// Distinct suspectors counted, `by` included: from 1 to `K + 1`.
    count: u8,
    /// Whether the last check is done, or not needed: then the suspicion is due at its
    /// deadline, else `lead` before it.
    checked: bool,
}

/// What a suspicion that came due asks of the core.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Due<T> {
    /// Check the member once more: its deadline is `lead` away (or the check came late, and
    /// the deadline was moved to `lead` from now). The suspicion keeps running.
    Check(T),
    /// The suspicion timed out and is removed: declare the member dead.
    Expired(T),
}

/// Every running suspicion of one core. See the module docs.
pub(super) struct Suspicions<T> {
    epoch: Instant,
    /// Min-heap on `(deadline, member)`.
    heap: Vec<Suspicion<T>>,
    /// The place in `heap` of each suspected member.
    places: HashMap<T, u32>,
    /// Fingerprints of confirmations past the [`INLINE`] first ones, kept only when `K` is
    /// configured above `INLINE + 1`.
    spill: HashMap<T, Vec<u32>>,
    /// How long before its deadline a suspicion with fewer than `K` confirmations is checked;
    /// `None`: never.
    lead: Option<Duration>,
    /// `K`: a suspicion with this many confirmations needs no check.
    k: usize,
}

impl<T: Identity> Suspicions<T> {
    /// No suspicion; times are counted from `epoch`, which must not be later than any instant
    /// passed in.
    pub(super) fn new(epoch: Instant) -> Self {
        Self {
            epoch,
            heap: Vec::new(),
            places: HashMap::new(),
            spill: HashMap::new(),
            lead: None,
            k: 0,
        }
    }

    /// [`Self::new`], with a last check `lead` before the deadline of every suspicion that has
    /// fewer than `k` confirmations then (see the module docs).
    pub(super) fn with_checks(epoch: Instant, lead: Duration, k: usize) -> Self {
        Self {
            lead: Some(lead),
            k,
            ..Self::new(epoch)
        }
    }

    /// Number of running suspicions.
    pub(super) fn len(&self) -> usize {
        self.heap.len()
    }

    /// Starts suspecting `member`, first suspected by `by`, until `deadline`; replaces a running
    /// suspicion of `member`.
    pub(super) fn start(&mut self, member: T, by: T, now: Instant, deadline: Instant) {
        self.stop(&member);
        let place = self.heap.len();
        grow_gently(&mut self.heap);
        self.heap.push(Suspicion {
            member: member.clone(),
            by,
            started: Ticks::new(self.epoch, now),
            deadline: Ticks::new(self.epoch, deadline),
            prints: [0; INLINE],
            count: 1,
            checked: self.lead.is_none(),
        });
        self.places.insert(member, place as u32);
        self.sift_up(place);
    }

    /// Whether `member` is suspected.
    #[cfg(test)]
    pub(super) fn contains(&self, member: &T) -> bool {
        self.places.contains_key(member)
    }

    /// The first suspector of `member`, if suspected.
    pub(super) fn by(&self, member: &T) -> Option<&T> {
        self.get(member).map(|s| &s.by)
    }

    /// Distinct suspectors of `member` counted so far, the first included.
    #[cfg(test)]
    pub(super) fn confirmations(&self, member: &T) -> Option<usize> {
        self.get(member).map(|s| usize::from(s.count))
    }

    /// Whether `by` suspecting `member` is a new independent confirmation of its running
    /// suspicion: `by` was not counted yet and fewer than `k` confirmations were (Lifeguard
    /// counts at most `K` besides the first suspector).
    pub(super) fn counts(&self, member: &T, by: &T, k: usize) -> bool {
        let Some(s) = self.get(member) else {
            return false;
        };
        if usize::from(s.count) > k || s.by == *by {
            return false;
        }
        // The fingerprints of every confirmation counted so far are kept while `count <= k`.
        let print = fingerprint(by);
        let others = usize::from(s.count) - 1;
        let inline = &s.prints[..others.min(INLINE)];
        let spilled = (others > INLINE)
            .then(|| self.spill.get(member))
            .flatten()
            .map_or(&[][..], |v| &v[..]);
        !inline.contains(&print) && !spilled.contains(&print)
    }

    /// Counts `by` as a confirmation of the suspicion of `member`, which [`Self::counts`]
    /// accepted with the same `k`: the deadline moves to `start + timeout(c)`, `c` being the
    /// number of suspectors counted before this one, if that is earlier.
    pub(super) fn confirm(
        &mut self,
        member: &T,
        by: &T,
        k: usize,
        timeout: impl FnOnce(usize) -> Duration,
    ) {
        let Some(&place) = self.places.get(member) else {
            return;
        };
        let place = place as usize;
        let epoch = self.epoch;
        let s = &mut self.heap[place];
        let counted = usize::from(s.count);
        let deadline = Ticks::new(epoch, s.started.instant(epoch) + timeout(counted));
        // Later checks compare with this confirmation only while the count stays at most `k`.
        let index = counted - 1;
        if counted < k {
            if index < INLINE {
                s.prints[index] = fingerprint(by);
            } else {
                self.spill
                    .entry(member.clone())
                    .or_default()
                    .push(fingerprint(by));
            }
        }
        s.count = s.count.saturating_add(1);
        if deadline < s.deadline {
            s.deadline = deadline;
        }
        // Fully confirmed: no check. The key may move either way, so the entry goes both ways.
        if usize::from(s.count) > self.k {
            s.checked = true;
        }
        let place = self.sift_up(place);
        self.sift_down(place);
    }

    /// Stops the suspicion of `member`, if any.
    pub(super) fn stop(&mut self, member: &T) {
        if let Some(place) = self.places.remove(member) {
            self.remove_at(place as usize);
            if !self.spill.is_empty() {
                self.spill.remove(member);
            }
        }
    }

    /// When the next suspicion comes due: its check or its deadline.
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        (!self.heap.is_empty()).then(|| self.key(0).0.instant(self.epoch))
    }

    /// The suspicion due first, if it is due at `now`: its check (the suspicion keeps running
    /// until its deadline, at least `lead` from now) or its expiry (the suspicion is removed).
    pub(super) fn pop_due(&mut self, now: Instant) -> Option<Due<T>> {
        let first = self.heap.first()?;
        if self.key(0).0.instant(self.epoch) > now {
            return None;
        }
        let member = first.member.clone();
        if first.checked {
            self.stop(&member);
            return Some(Due::Expired(member));
        }
        let lead = self.lead.unwrap_or_default();
        let least = Ticks::new(self.epoch, now + lead);
        let s = &mut self.heap[0];
        s.checked = true;
        // A check that comes late (a confirmation moved the deadline to within `lead`) still
        // leaves its answers `lead` to arrive.
        if s.deadline < least {
            s.deadline = least;
        }
        self.sift_down(0);
        Some(Due::Check(member))
    }

    /// [`Self::pop_due`] for suspicions without checks: the member whose suspicion timed out
    /// first, removed.
    #[cfg(test)]
    pub(super) fn pop_expired(&mut self, now: Instant) -> Option<T> {
        match self.pop_due(now)? {
            Due::Expired(member) | Due::Check(member) => Some(member),
        }
    }

    /// Gives back the memory of a burst of suspicions that has drained.
    pub(super) fn shrink(&mut self) {
        shrink_sparse(&mut self.places);
        shrink_gently(&mut self.heap);
        shrink_sparse(&mut self.spill);
    }

    /// Panics unless the heap and the places agree and the heap is ordered.
    #[cfg(test)]
    pub(super) fn check_invariants(&self) {
        assert_eq!(self.heap.len(), self.places.len());
        for (i, s) in self.heap.iter().enumerate() {
            assert_eq!(self.places[&s.member] as usize, i);
            if i > 0 {
                assert!(
                    self.key(i) >= self.key((i - 1) / ARITY),
                    "heap order at {i}"
                );
            }
        }
        assert!(self.spill.keys().all(|m| self.places.contains_key(m)));
    }

    fn get(&self, member: &T) -> Option<&Suspicion<T>> {
        self.places.get(member).map(|&p| &self.heap[p as usize])
    }

    fn key(&self, place: usize) -> (Ticks, &T) {
        let s = &self.heap[place];
        let due = match self.lead {
            Some(lead) if !s.checked => s.deadline.saturating_sub(lead),
            _ => s.deadline,
        };
        (due, &s.member)
    }

    /// Removes the entry at `place`, whose member is already out of `places`.
    fn remove_at(&mut self, place: usize) {
        self.heap.swap_remove(place);
        if place < self.heap.len() {
            self.set_place(place);
            let place = self.sift_up(place);
            self.sift_down(place);
        }
    }

    /// Moves the entry at `place` up while it is before its parent; returns where it ends.
    fn sift_up(&mut self, mut place: usize) -> usize {
        while place > 0 {
            let parent = (place - 1) / ARITY;
            if self.key(place) >= self.key(parent) {
                break;
            }
            self.heap.swap(place, parent);
            self.set_place(place);
            place = parent;
        }
        self.set_place(place);
        place
    }

    /// Moves the entry at `place` down while a child is before it.
    fn sift_down(&mut self, mut place: usize) {
        loop {
            let first = place * ARITY + 1;
            let Some(child) = (first..(first + ARITY).min(self.heap.len()))
                .min_by(|&a, &b| self.key(a).cmp(&self.key(b)))
            else {
                break;
            };
            if self.key(child) >= self.key(place) {
                break;
            }
            self.heap.swap(place, child);
            self.set_place(place);
            place = child;
        }
        self.set_place(place);
    }

    /// Records in `places` that the entry at `place` sits there.
    fn set_place(&mut self, place: usize) {
        let member = &self.heap[place].member;
        // Invariant: every entry of the heap has its member in `places`.
        *self.places.get_mut(member).expect("suspected member") = place as u32;
    }
}

/// A 32-bit digest of `id`: the bytes its `Hash` writes when they are at most 4, else a hash of
/// them (see the module docs).
fn fingerprint<T: Hash>(id: &T) -> u32 {
    let mut f = Fingerprint {
        small: 0,
        len: 0,
        hash: DefaultHasher::new(),
    };
    id.hash(&mut f);
    f.finish() as u32
}

/// The hasher behind [`fingerprint`].
struct Fingerprint {
    /// The first 4 bytes written, the first in the low byte.
    small: u32,
    /// Bytes written.
    len: usize,
    /// Every byte written, hashed (SipHash with fixed keys).
    hash: DefaultHasher,
}

impl Hasher for Fingerprint {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if self.len < 4 {
                self.small |= u32::from(b) << (8 * self.len);
            }
            self.len = self.len.saturating_add(1);
        }
        self.hash.write(bytes);
    }

    fn finish(&self) -> u64 {
        if self.len <= 4 {
            u64::from(self.small)
        } else {
            let h = self.hash.finish();
            h ^ (h >> 32)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use proptest::prelude::*;

    use super::*;

    #[test]
    fn a_suspicion_takes_nine_words() {
        assert_eq!(std::mem::size_of::<Suspicion<u32>>(), 36);
        assert_eq!(std::mem::align_of::<Suspicion<u32>>(), 4);
    }

    #[test]
    fn small_identities_have_distinct_fingerprints() {
        let mut seen = std::collections::HashSet::new();
        for id in 0..=u16::MAX {
            assert!(seen.insert(fingerprint(&u32::from(id))));
        }
        for id in [u32::MAX, u32::MAX - 1, 1 << 31, 0x0100_0000] {
            assert!(seen.insert(fingerprint(&id)), "{id}");
        }
        assert_eq!(
            fingerprint(&0x0102_0304u32),
            0x0102_0304u32
                .to_ne_bytes()
                .map(u32::from)
                .iter()
                .enumerate()
                .fold(0, |acc, (i, b)| acc | (b << (8 * i)))
        );
        // Larger identities are hashed: distinct here, and stable.
        let long: Vec<String> = (0..1000).map(|i| format!("peer-{i}")).collect();
        let prints: std::collections::HashSet<u32> = long.iter().map(fingerprint).collect();
        assert_eq!(prints.len(), long.len());
        assert_eq!(fingerprint(&long[3]), fingerprint(&"peer-3".to_string()));
    }

    /// The structure this module replaced: a map of suspicions holding every suspector, and a
    /// set of timers.
    #[derive(Default)]
    struct Reference {
        map: HashMap<u32, (Instant, Instant, Vec<u32>)>,
        timers: BTreeSet<(Instant, u32)>,
    }

    impl Reference {
        fn start(&mut self, member: u32, by: u32, now: Instant, deadline: Instant) {
            self.stop(member);
            self.timers.insert((deadline, member));
            self.map.insert(member, (now, deadline, vec![by]));
        }

        fn counts(&self, member: u32, by: u32, k: usize) -> bool {
            self.map
                .get(&member)
                .is_some_and(|s| !s.2.contains(&by) && s.2.len() <= k)
        }

        fn confirm(&mut self, member: u32, by: u32, timeout: impl Fn(usize) -> Duration) {
            let s = self.map.get_mut(&member).unwrap();
            let deadline = s.0 + timeout(s.2.len());
            s.2.push(by);
            if deadline < s.1 {
                self.timers.remove(&(s.1, member));
                s.1 = deadline;
                self.timers.insert((deadline, member));
            }
        }

        fn stop(&mut self, member: u32) {
            if let Some(s) = self.map.remove(&member) {
                self.timers.remove(&(s.1, member));
            }
        }

        fn pop_expired(&mut self, now: Instant) -> Option<u32> {
            let &(t, member) = self.timers.first()?;
            if t > now {
                return None;
            }
            self.timers.pop_first();
            self.map.remove(&member);
            Some(member)
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        Start {
            member: u32,
            by: u32,
            at: u64,
            timeout: u64,
        },
        Suspect {
            member: u32,
            by: u32,
        },
        Stop {
            member: u32,
        },
        Expire {
            at: u64,
        },
    }

    fn op() -> impl Strategy<Value = Op> {
        // Few members and coarse times, so that suspicions are replaced, confirmed up to and
        // past `K`, and share deadlines (ties are broken by member).
        prop_oneof![
            2 => (0..12u32, 0..12u32, 0..20u64, 0..8u64)
                .prop_map(|(member, by, at, timeout)| Op::Start { member, by, at, timeout }),
            4 => (0..12u32, 0..12u32).prop_map(|(member, by)| Op::Suspect { member, by }),
            1 => (0..12u32).prop_map(|member| Op::Stop { member }),
            1 => (0..40u64).prop_map(|at| Op::Expire { at }),
        ]
    }

    proptest! {
        /// Same confirmations counted, same deadlines, same order of expiry as before, for `K`
        /// within the inline fingerprints and beyond them.
        #[test]
        fn behaves_as_the_old_suspicions(
            k in 1..7usize,
            ops in proptest::collection::vec(op(), 1..200),
        ) {
            let epoch = Instant::now();
            let at = |s: u64| epoch + Duration::from_millis(500 * s);
            // Shrinks with confirmations; odd nanoseconds check that no rounding happens.
            let timeout = |c: usize| Duration::from_nanos(7_000_000_001 / (c as u64 + 1));
            let mut new = Suspicions::new(epoch);
            let mut old = Reference::default();
            for op in ops {
                match op {
                    Op::Start { member, by, at: t, timeout: d } => {
                        let deadline = at(t) + Duration::from_millis(250 * d);
                        new.start(member, by, at(t), deadline);
                        old.start(member, by, at(t), deadline);
                    }
                    Op::Suspect { member, by } => {
                        let counts = old.counts(member, by, k);
                        prop_assert_eq!(new.counts(&member, &by, k), counts);
                        if counts {
                            new.confirm(&member, &by, k, timeout);
                            old.confirm(member, by, timeout);
                        }
                    }
                    Op::Stop { member } => {
                        new.stop(&member);
                        old.stop(member);
                    }
                    Op::Expire { at: t } => loop {
                        let a = new.pop_expired(at(t));
                        prop_assert_eq!(a, old.pop_expired(at(t)));
                        if a.is_none() {
                            break;
                        }
                    },
                }
                new.check_invariants();
                prop_assert_eq!(new.len(), old.map.len());
                prop_assert_eq!(new.next_deadline(), old.timers.first().map(|t| t.0));
                for m in 0..12 {
                    let s = old.map.get(&m);
                    prop_assert_eq!(new.contains(&m), s.is_some());
                    prop_assert_eq!(new.by(&m), s.map(|s| &s.2[0]));
                    prop_assert_eq!(new.confirmations(&m), s.map(|s| s.2.len()));
                }
            }
        }
    }
}
