//! The member table, laid out for clusters of tens of thousands of members.
//!
//! A simulator runs thousands of cores that each hold every other member, so the layout of one
//! record sets the memory of the whole run, and so does every structure that costs a word per
//! member. The table therefore keeps three things and nothing else:
//!
//! - **Slots.** A hash map from identity to a [`Slot`]: the incarnation, the state and the
//!   member's place in the probe order. The slot needs only 4-byte alignment (the incarnation is
//!   kept as two 32-bit halves, the state and the place share one 32-bit word), so with a 4-byte
//!   identity a map entry takes four words and no padding (a test checks the sizes).
//! - **Addresses apart.** Address lists sit in an array parallel to the probe order (below),
//!   which exists only once some member announced addresses; every member without addresses
//!   shares one empty list. A simulator that routes by identity stores no address at all, and
//!   with addresses a member costs one pointer more, not a second hash entry and key.
//! - **The probe order.** A dense array of every member, in any state, shuffled once per round.
//!   Because each slot knows its place in it, removing a member, moving a member that came back
//!   into the rest of the current round and drawing a uniform random member cost the same
//!   whatever the size of the table (no scan, no second index), and a sample without repetition
//!   costs in proportion to its size. Members gone since before the round started wait at the
//!   end of the array, out of the round: probing (which skips members that are not live) and the
//!   choice of helpers see the same members as in an order rebuilt from the live members at
//!   each round, and draw the same random numbers.
//!
//! The order of the array depends only on the core's seeded RNG and on its input, unlike the
//! iteration order of a `HashMap`, so random choices made through it replay with the seed.

use std::collections::HashMap;
use std::sync::Arc;

use rand::Rng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;

use super::{Member, shrink_sparse};
use crate::Identity;
use crate::message::{Address, State};

/// Places in the probe order fit in the bits of [`Slot::meta`] above the state's byte; the
/// config caps `max_members` far below this.
const MAX_PLACE: usize = (1 << 24) - 1;

/// One member's record. See the module docs for why it is split this way.
#[derive(Clone, Copy)]
struct Slot {
    /// The incarnation, low half first.
    incarnation: [u32; 2],
    /// The state in the low byte, the place in the probe order above it.
    meta: u32,
}

impl Slot {
    fn new(incarnation: u64, state: State, place: usize) -> Self {
        debug_assert!(place <= MAX_PLACE, "the table is bounded by max_members");
        Self {
            incarnation: [incarnation as u32, (incarnation >> 32) as u32],
            meta: ((place as u32) << 8) | state_bits(state),
        }
    }

    fn incarnation(self) -> u64 {
        u64::from(self.incarnation[0]) | (u64::from(self.incarnation[1]) << 32)
    }

    fn state(self) -> State {
        match self.meta & 0xff {
            0 => State::Alive,
            1 => State::Suspect,
            2 => State::Dead,
            _ => State::Left,
        }
    }

    fn place(self) -> usize {
        (self.meta >> 8) as usize
    }

    fn set_place(&mut self, place: usize) {
        *self = Slot::new(self.incarnation(), self.state(), place);
    }
}

fn is_live(state: State) -> bool {
    matches!(state, State::Alive | State::Suspect)
}

fn state_bits(state: State) -> u32 {
    match state {
        State::Alive => 0,
        State::Suspect => 1,
        State::Dead => 2,
        State::Left => 3,
    }
}

/// Every member we know (never ourselves), with its record, its addresses and the probe order.
pub(super) struct Table<T> {
    slots: HashMap<T, Slot>,
    /// The addresses of the member at the same place of `order`, if it announced any; empty
    /// (no allocation) while no member holds addresses.
    addrs: Vec<Option<Arc<[Address]>>>,
    /// Members holding addresses.
    with_addrs: usize,
    /// The list handed out for every member without addresses.
    no_addrs: Arc<[Address]>,
    /// Every member of `slots`, each at the place its slot names, in three parts: visited in
    /// this round (before `cursor`), not visited yet (before `active`), and the members gone
    /// that have not been live since the round started (the rest), which probing and
    /// [`Table::random_active`] never see.
    order: Vec<T>,
    cursor: usize,
    active: usize,
}

impl<T: Identity> Table<T> {
    pub(super) fn new() -> Self {
        Self {
            slots: HashMap::new(),
            addrs: Vec::new(),
            with_addrs: 0,
            no_addrs: Arc::from(Vec::new()),
            order: Vec::new(),
            cursor: 0,
            active: 0,
        }
    }

    pub(super) fn len(&self) -> usize {
        self.slots.len()
    }

    pub(super) fn contains(&self, id: &T) -> bool {
        self.slots.contains_key(id)
    }

    /// The incarnation and state of `id`.
    pub(super) fn get(&self, id: &T) -> Option<(u64, State)> {
        self.slots.get(id).map(|s| (s.incarnation(), s.state()))
    }

    /// The incarnation, state and addresses of `id`, in one lookup.
    pub(super) fn record(&self, id: &T) -> Option<(u64, State, &Arc<[Address]>)> {
        let s = self.slots.get(id)?;
        let addrs = match self.addrs.get(s.place()) {
            Some(Some(addrs)) => addrs,
            _ => &self.no_addrs,
        };
        Some((s.incarnation(), s.state(), addrs))
    }

    /// Looks up every member of `ids` once, so that the lookups of a long list that follow
    /// find their records in the cache: done back to back, independent lookups overlap their
    /// cache misses, which the work between them in the real pass prevents.
    pub(super) fn warm<'a>(&self, ids: impl Iterator<Item = &'a T>)
    where
        T: 'a,
    {
        for id in ids {
            std::hint::black_box(self.slots.get(id));
        }
    }

    /// The state of `id`.
    pub(super) fn state(&self, id: &T) -> Option<State> {
        self.slots.get(id).map(|s| s.state())
    }

    /// Whether `id` is a live member (alive or suspect).
    pub(super) fn is_live(&self, id: &T) -> bool {
        self.state(id).is_some_and(is_live)
    }

    /// The addresses of `id`: the shared empty list if it has none or is unknown.
    pub(super) fn addrs(&self, id: &T) -> &Arc<[Address]> {
        if self.addrs.is_empty() {
            return &self.no_addrs;
        }
        self.record(id)
            .map_or(&self.no_addrs, |(_, _, addrs)| addrs)
    }

    /// The empty list shared by every member without addresses.
    pub(super) fn no_addrs(&self) -> &Arc<[Address]> {
        &self.no_addrs
    }

    /// The public view of `id`'s record.
    pub(super) fn member(&self, id: &T) -> Option<Member> {
        let (incarnation, state, addrs) = self.record(id)?;
        Some(Member {
            addrs: addrs.clone(),
            incarnation,
            state,
        })
    }

    /// Every member with its state and incarnation, in no particular order.
    pub(super) fn iter(&self) -> impl Iterator<Item = (&T, State, u64)> {
        self.slots
            .iter()
            .map(|(id, s)| (id, s.state(), s.incarnation()))
    }

    /// Makes room for `additional` members at once (a restore), so that the map is not rehashed
    /// at every doubling and the order array gets no spare half.
    pub(super) fn reserve(&mut self, additional: usize) {
        self.slots.reserve(additional);
        self.order.reserve_exact(additional);
    }

    /// Adds `id`, which must not be in the table, at the end of the probe order: the end of
    /// this round if it is live (call [`Self::new_round`] after a batch), else among the gone.
    pub(super) fn push(&mut self, id: T, incarnation: u64, state: State, addrs: Arc<[Address]>) {
        let place = self.order.len();
        self.slots
            .insert(id.clone(), Slot::new(incarnation, state, place));
        self.order.push(id);
        if !self.addrs.is_empty() {
            self.addrs.push(None);
        }
        self.store_addrs(place, addrs);
        if is_live(state) {
            self.activate(place);
        }
    }

    /// Adds `id`, which must not be in the table and is live, at a random place of the rest of
    /// the current probe round, so that a new member is probed within this round but not first.
    pub(super) fn insert(
        &mut self,
        id: T,
        incarnation: u64,
        state: State,
        addrs: Arc<[Address]>,
        rng: &mut StdRng,
    ) {
        self.push(id, incarnation, state, addrs);
        let place = self.active - 1;
        let to = rng.gen_range(self.cursor..=place);
        self.swap(place, to);
    }

    /// Sets the incarnation and state of `id`, if known. A member gone that becomes live joins
    /// the end of this round; [`Self::reschedule`] then moves it to a random place of it.
    pub(super) fn set(&mut self, id: &T, incarnation: u64, state: State) {
        let Some(s) = self.slots.get_mut(id) else {
            return;
        };
        let place = s.place();
        *s = Slot::new(incarnation, state, place);
        if is_live(state) {
            self.activate(place);
        }
    }

    /// Replaces the addresses of `id` with `addrs` unless the list is empty (news without
    /// addresses keeps the known ones) or unchanged (the stored allocation is kept); returns the
    /// addresses now held.
    pub(super) fn set_addrs(&mut self, id: &T, addrs: &[Address]) -> Arc<[Address]> {
        let held = self.addrs(id);
        if addrs.is_empty() || **held == *addrs {
            return held.clone();
        }
        let Some(place) = self.slots.get(id).map(|s| s.place()) else {
            return self.no_addrs.clone();
        };
        let addrs: Arc<[Address]> = addrs.into();
        self.store_addrs(place, addrs.clone());
        addrs
    }

    /// Removes `id`, keeping every other member in its part of the order.
    pub(super) fn remove(&mut self, id: &T) {
        let Some(slot) = self.slots.get(id) else {
            return;
        };
        let mut place = slot.place();
        if place < self.active {
            // Hand its place to a member of the same part, moving it to the edge of each part
            // in turn: the last visited place becomes the first unvisited one, and the last
            // unvisited place becomes the first of the gone.
            if place < self.cursor {
                self.cursor -= 1;
                self.swap(place, self.cursor);
                place = self.cursor;
            }
            self.active -= 1;
            self.swap(place, self.active);
            place = self.active;
        }
        let last = self.order.len() - 1;
        self.swap(place, last);
        self.order.pop();
        self.slots.remove(id);
        if let Some(Some(_)) = self.addrs.pop() {
            self.with_addrs -= 1;
            if self.with_addrs == 0 {
                self.addrs = Vec::new();
            }
        }
    }

    /// Moves `id` (a live member that came back) to a random place of the rest of the round.
    pub(super) fn reschedule(&mut self, id: &T, rng: &mut StdRng) {
        let Some(mut place) = self.slots.get(id).map(|s| s.place()) else {
            return;
        };
        if place >= self.active {
            return;
        }
        if place < self.cursor {
            self.cursor -= 1;
            self.swap(place, self.cursor);
            place = self.cursor;
        }
        let to = rng.gen_range(self.cursor..self.active);
        self.swap(place, to);
    }

    /// The next member of the round-robin probe order that is alive or suspect; a new round,
    /// freshly shuffled, starts when one ends. `None` if no member is live.
    pub(super) fn next_live(&mut self, rng: &mut StdRng) -> Option<T> {
        // Two passes at most: the end of this round, then a whole new one.
        for _ in 0..2 {
            while self.cursor < self.active {
                let id = &self.order[self.cursor];
                self.cursor += 1;
                if self.is_live(id) {
                    return Some(id.clone());
                }
            }
            self.new_round(rng);
        }
        None
    }

    /// Shuffles the probe order and starts a new round with the members live now; the members
    /// gone follow them, out of the round. Each part is sorted first, so that a round depends
    /// only on the RNG and on who is in the table, not on the order in which members came and
    /// went.
    pub(super) fn new_round(&mut self, rng: &mut StdRng) {
        let slots = &self.slots;
        let gone = |id: &T| !slots.get(id).is_some_and(|s| is_live(s.state()));
        if self.addrs.is_empty() {
            self.order
                .sort_unstable_by(|a, b| (gone(a), a).cmp(&(gone(b), b)));
            self.active = self.order.partition_point(|id| !gone(id));
            self.order[..self.active].shuffle(rng);
        } else {
            // The same permutation for both arrays (the shuffle draws only on the length).
            let mut pairs: Vec<(T, Option<Arc<[Address]>>)> =
                self.order.drain(..).zip(self.addrs.drain(..)).collect();
            pairs.sort_unstable_by(|a, b| (gone(&a.0), &a.0).cmp(&(gone(&b.0), &b.0)));
            self.active = pairs.partition_point(|(id, _)| !gone(id));
            pairs[..self.active].shuffle(rng);
            (self.order, self.addrs) = pairs.into_iter().unzip();
        }
        for (place, id) in self.order.iter().enumerate() {
            if let Some(s) = self.slots.get_mut(id) {
                s.set_place(place);
            }
        }
        self.cursor = 0;
    }

    /// Every member, in probe order.
    pub(super) fn in_order(&self) -> impl Iterator<Item = &T> {
        self.order.iter()
    }

    /// A uniform random member among those of the current round: live when it started or since
    /// (some may have died since).
    pub(super) fn random_active(&self, rng: &mut StdRng) -> Option<&T> {
        if self.active == 0 {
            return None;
        }
        Some(&self.order[rng.gen_range(0..self.active)])
    }

    /// Number of members of the current round (see [`Self::random_active`]).
    pub(super) fn active_len(&self) -> usize {
        self.active
    }

    /// `amount` distinct members drawn uniformly (all of them if there are fewer), in random
    /// order.
    pub(super) fn sample<'a>(
        &'a self,
        rng: &mut StdRng,
        amount: usize,
    ) -> impl Iterator<Item = &'a T> + use<'a, T> {
        let amount = amount.min(self.order.len());
        rand::seq::index::sample(rng, self.order.len(), amount)
            .into_iter()
            .map(|i| &self.order[i])
    }

    /// Gives back the memory of a table that shrank to a quarter of its capacity or less.
    pub(super) fn shrink(&mut self) {
        shrink_sparse(&mut self.slots);
        if self.order.capacity() > 64 && self.order.len() * 4 <= self.order.capacity() {
            self.order.shrink_to_fit();
            self.addrs.shrink_to_fit();
        }
    }

    /// Panics unless the order, the slots and the address array agree (see the fields' docs).
    #[cfg(test)]
    pub(super) fn check_invariants(&self) {
        assert_eq!(self.order.len(), self.slots.len());
        assert!(self.cursor <= self.active && self.active <= self.order.len());
        assert!(self.addrs.is_empty() || self.addrs.len() == self.order.len());
        assert_eq!(self.addrs.iter().flatten().count(), self.with_addrs);
        assert!(self.addrs.iter().flatten().all(|a| !a.is_empty()));
        for (place, id) in self.order.iter().enumerate() {
            assert_eq!(self.slots[id].place(), place, "member {id:?}");
        }
        for id in &self.order[self.active..] {
            assert!(
                !is_live(self.slots[id].state()),
                "{id:?} is live out of the round"
            );
        }
    }

    /// Moves the member at `place`, which just became live, into the current round (at its
    /// end) if it was among the gone.
    fn activate(&mut self, place: usize) {
        if place >= self.active {
            self.swap(place, self.active);
            self.active += 1;
        }
    }

    /// Stores the addresses of the member at `place`, allocating the address array on the first
    /// member that has some.
    fn store_addrs(&mut self, place: usize, addrs: Arc<[Address]>) {
        if addrs.is_empty() {
            return;
        }
        if self.addrs.is_empty() {
            self.addrs.resize(self.order.len(), None);
        }
        if self.addrs[place].replace(addrs).is_none() {
            self.with_addrs += 1;
        }
    }

    fn swap(&mut self, a: usize, b: usize) {
        if a == b {
            return;
        }
        self.order.swap(a, b);
        if !self.addrs.is_empty() {
            self.addrs.swap(a, b);
        }
        for place in [a, b] {
            if let Some(s) = self.slots.get_mut(&self.order[place]) {
                s.set_place(place);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use rand::SeedableRng;

    use super::*;

    fn check(t: &Table<u32>) {
        t.check_invariants();
        for (place, a) in t.addrs.iter().enumerate() {
            if let Some(a) = a {
                let id = t.order[place];
                assert_eq!(**a, [address(id)], "member {id}");
            }
        }
    }

    #[test]
    fn an_entry_takes_four_words() {
        assert_eq!(std::mem::size_of::<Slot>(), 12);
        assert_eq!(std::mem::align_of::<Slot>(), 4);
        assert_eq!(std::mem::size_of::<(u32, Slot)>(), 16);
    }

    #[test]
    fn slots_round_trip() {
        for inc in [0, 1, u32::MAX as u64, 1 << 40, u64::MAX] {
            for state in [State::Alive, State::Suspect, State::Dead, State::Left] {
                for place in [0, 1, MAX_PLACE] {
                    let s = Slot::new(inc, state, place);
                    assert_eq!((s.incarnation(), s.state(), s.place()), (inc, state, place));
                }
            }
        }
    }

    fn address(id: u32) -> Address {
        Address::from(format!("/{id}").as_str())
    }

    #[test]
    fn order_stays_consistent_and_rounds_visit_every_live_member() {
        // Without any address, then with addresses for the even members.
        order_case(|_| Vec::new());
        order_case(|id| {
            if id % 2 == 0 {
                vec![address(id)]
            } else {
                Vec::new()
            }
        });
    }

    fn order_case(addrs: impl Fn(u32) -> Vec<Address>) {
        let mut rng = StdRng::seed_from_u64(1);
        let mut t = Table::new();
        for id in 0..50u32 {
            t.push(id, 0, State::Alive, addrs(id).into());
        }
        for id in 50..55u32 {
            t.push(id, 0, State::Dead, addrs(id).into());
        }
        t.new_round(&mut rng);
        check(&t);
        assert_eq!(t.active_len(), 50);
        // Half a round, then churn: removals in every part, a newcomer, a member that died and
        // came back in the visited part, and one that came back from the gone.
        let mut seen = HashSet::new();
        for _ in 0..25 {
            seen.insert(t.next_live(&mut rng).unwrap());
        }
        let (visited, unvisited) = (t.order[0], t.order[40]);
        t.remove(&visited);
        t.remove(&unvisited);
        t.remove(&54);
        check(&t);
        t.insert(100, 0, State::Alive, addrs(100).into(), &mut rng);
        t.set_addrs(&7, &[address(7)]);
        let back = t.order[3];
        t.set(&back, 1, State::Dead);
        t.set(&back, 2, State::Alive);
        t.reschedule(&back, &mut rng);
        t.set(&50, 1, State::Alive);
        t.reschedule(&50, &mut rng);
        check(&t);
        let dead = *t.order[t.cursor..t.active]
            .iter()
            .find(|&&id| id != 100 && id != back && id != 50)
            .unwrap();
        t.set(&dead, 1, State::Dead);
        check(&t);
        let live_rest = t.order[t.cursor..t.active]
            .iter()
            .filter(|id| t.state(id) == Some(State::Alive))
            .count();
        let rest: HashSet<u32> = (0..live_rest)
            .map(|_| t.next_live(&mut rng).unwrap())
            .collect();
        check(&t);
        assert_eq!(rest.len(), live_rest, "each visited once");
        assert!(
            [100, back, 50].iter().all(|id| rest.contains(id)),
            "{rest:?}"
        );
        assert!(!rest.contains(&dead) && !rest.contains(&unvisited));
        let live: HashSet<u32> = t
            .iter()
            .filter(|(_, s, _)| *s == State::Alive)
            .map(|(id, _, _)| *id)
            .collect();
        assert!(live.is_subset(&seen.union(&rest).copied().collect()));
        // The next round holds exactly the live members.
        t.next_live(&mut rng);
        check(&t);
        assert_eq!(t.active_len(), live.len());
    }

    #[test]
    fn addresses_are_kept_apart() {
        let mut rng = StdRng::seed_from_u64(3);
        let mut t = Table::new();
        t.push(1, 0, State::Alive, Arc::from(Vec::new()));
        t.push(2, 0, State::Alive, Arc::from(vec![address(2)]));
        assert!(t.with_addrs == 1 && t.addrs(&1).is_empty());
        assert_eq!(t.set_addrs(&2, &[]).len(), 1, "empty news keeps them");
        assert_eq!(*t.set_addrs(&1, &[address(1)]), [address(1)]);
        t.push(3, 0, State::Dead, Arc::from(Vec::new()));
        t.new_round(&mut rng);
        check(&t);
        t.remove(&2);
        assert_eq!(t.with_addrs, 1);
        assert_eq!(t.member(&1).unwrap().addrs.len(), 1);
        check(&t);
        t.remove(&1);
        assert!(
            t.addrs.is_empty() && t.addrs.capacity() == 0,
            "freed with the last"
        );
    }

    #[test]
    fn samples_are_distinct() {
        let mut rng = StdRng::seed_from_u64(2);
        let mut t = Table::new();
        for id in 0..100u32 {
            t.push(id, 0, State::Dead, Arc::from(Vec::new()));
        }
        let s: HashSet<u32> = t.sample(&mut rng, 30).copied().collect();
        assert_eq!(s.len(), 30);
        assert_eq!(t.sample(&mut rng, 500).count(), 100);
        assert!(t.random_active(&mut rng).is_none(), "nobody is live");
    }
}
