//! Closest-peer lookups: Kademlia's iterative `FIND_NODE`, seeded from the verified live
//! membership and ended strictly.
//!
//! SWIM holds every verified live member, so a node's own view of the peers closest to a key is
//! already close to the truth. A lookup starts from it ([`ClosestPeers::new`] takes the closest
//! members as seeds) and asks those peers, `alpha` at a time and closest first, for the peers
//! their routing tables hold closest to the key; it ends once the `k` closest peers it knows of
//! (failed ones left out) have all answered.
//!
//! Unlike libp2p-kad's iterator, a lookup never asks a peer outside the current `k` closest.
//! kad's, once stalled, keeps up to `k` requests in flight and sends to ever farther peers while
//! the closest are still answering, so many of its requests go to peers outside the result (the
//! measured share is in CHANGELOG.md). Here a stalled lookup (`alpha` answers in a row that
//! brought no peer into the `k` closest) also asks the rest of the `k` closest at once, but no
//! one else.
//!
//! Answers hold only peers of the answering node's routing table (verified, and alive by SWIM),
//! and the asking node keeps only the peers it verified itself, so an unverified peer never takes
//! part in a lookup. Nothing here does I/O or reads a clock.

use std::collections::BTreeMap;
use std::num::NonZeroUsize;

use sha2::{Digest, Sha256};

use super::Peer;

/// Most candidates one lookup remembers; the farthest not asked are dropped beyond it.
const MAX_CANDIDATES: usize = 1024;

/// A point of Kademlia's key space: the SHA-256 of a key's bytes, as libp2p-kad hashes record
/// keys and peer ids (`KBucketKey::from(peer)` hashes `peer.to_bytes()`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyHash(pub [u8; 32]);

impl KeyHash {
    /// The point of `bytes` (a record key, or a peer id's bytes).
    pub fn of(bytes: &[u8]) -> Self {
        Self(Sha256::digest(bytes).into())
    }

    /// The XOR distance to `other`; byte arrays compare as big-endian numbers.
    pub fn distance(&self, other: &KeyHash) -> [u8; 32] {
        std::array::from_fn(|i| self.0[i] ^ other.0[i])
    }

    /// The k-bucket of `other` seen from `self`: 255 minus the number of leading zero bits of
    /// the distance (0 for the closest half-open range, 255 for the farthest), or `None` for
    /// the same point.
    pub fn bucket(&self, other: &KeyHash) -> Option<u8> {
        let d = self.distance(other);
        let zeros = d
            .iter()
            .position(|b| *b != 0)
            .map(|i| i as u32 * 8 + d[i].leading_zeros())?;
        Some((255 - zeros) as u8)
    }
}

/// The `n` peers of `candidates` closest to `target`, closest first.
pub fn closest<T: Peer>(
    target: &KeyHash,
    candidates: impl IntoIterator<Item = T>,
    n: usize,
) -> Vec<T> {
    closest_of(target, candidates.into_iter().map(|p| (p.point(), p)), n)
}

/// The `n` of `candidates` (each with its point, hashed once by the caller) closest to `target`,
/// closest first.
pub fn closest_of<T>(
    target: &KeyHash,
    candidates: impl IntoIterator<Item = (KeyHash, T)>,
    n: usize,
) -> Vec<T> {
    let mut by_distance: Vec<([u8; 32], T)> = candidates
        .into_iter()
        .map(|(point, p)| (target.distance(&point), p))
        .collect();
    if by_distance.len() > n {
        by_distance.select_nth_unstable_by(n, |a, b| a.0.cmp(&b.0));
        by_distance.truncate(n);
    }
    by_distance.sort_unstable_by_key(|a| a.0);
    by_distance.into_iter().map(|(_, p)| p).collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PeerState {
    NotAsked,
    Waiting,
    Answered,
    Failed,
}

/// What one lookup cost.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Requests sent.
    pub requests: u32,
    /// Requests answered.
    pub answers: u32,
    /// Requests that failed (timeout, dial failure, closed connection).
    pub failures: u32,
}

/// The sans-IO state of one lookup. Drive it with [`next_peer`](Self::next_peer) (ask the peer
/// it returns, until it returns `None`), then [`on_answer`](Self::on_answer) or
/// [`on_failure`](Self::on_failure) for each request, calling `next_peer` again after each;
/// it is done when [`is_finished`](Self::is_finished). Nothing here does I/O or reads a clock.
#[derive(Debug)]
pub struct ClosestPeers<T> {
    target: KeyHash,
    local: T,
    k: usize,
    alpha: usize,
    peers: BTreeMap<[u8; 32], (T, PeerState)>,
    waiting: usize,
    /// Answers in a row that brought no peer into the `k` closest.
    no_progress: usize,
    counts: Counts,
    stopped: bool,
    /// One-hop mode: answers with what was sought (a record copy) that end the search.
    wanted: Option<usize>,
    /// Answers with what was sought.
    hits: usize,
}

impl<T: Peer> ClosestPeers<T> {
    /// A lookup of the `k` peers closest to `target`, asking `alpha` at a time, starting from
    /// `seeds`; `local` (this node) is never a candidate.
    pub fn new(
        target: KeyHash,
        local: T,
        k: NonZeroUsize,
        alpha: NonZeroUsize,
        seeds: impl IntoIterator<Item = T>,
    ) -> Self {
        let mut lookup = Self {
            target,
            local,
            k: k.get(),
            alpha: alpha.get(),
            peers: BTreeMap::new(),
            waiting: 0,
            no_progress: 0,
            counts: Counts::default(),
            stopped: false,
            wanted: None,
            hits: 0,
        };
        lookup.insert(seeds);
        lookup
    }

    /// A one-hop search among `seeds` (the local view's closest peers to `target`): asks the
    /// closest `alpha` first and another one, next closest, for each that misses or fails, until
    /// `wanted` answers held what was sought ([`Self::on_hit`]) or the `k` closest not failed
    /// have all answered. Closer peers named in answers are asked before farther seeds, so a
    /// replica whose view knows closer members forwards the asker to them.
    pub fn one_hop(
        target: KeyHash,
        local: T,
        k: NonZeroUsize,
        alpha: NonZeroUsize,
        seeds: impl IntoIterator<Item = T>,
        wanted: NonZeroUsize,
    ) -> Self {
        let mut lookup = Self::new(target, local, k, alpha, seeds);
        lookup.wanted = Some(wanted.get());
        lookup
    }

    /// Adds `peers` not known yet; whether one of them entered the `k` closest.
    fn insert(&mut self, peers: impl IntoIterator<Item = T>) -> bool {
        let mut progress = false;
        for peer in peers {
            if peer == self.local {
                continue;
            }
            let d = self.target.distance(&peer.point());
            if self.peers.contains_key(&d) {
                continue;
            }
            self.peers.insert(d, (peer, PeerState::NotAsked));
            progress |= self.rank(&d).is_some_and(|r| r < self.k);
        }
        while self.peers.len() > MAX_CANDIDATES {
            let far = self
                .peers
                .iter()
                .rev()
                .find(|(_, (_, s))| *s != PeerState::Waiting)
                .map(|(d, _)| *d);
            match far {
                Some(d) => self.peers.remove(&d),
                None => break,
            };
        }
        progress
    }

    /// The rank of distance `d` among the peers not failed, if it is not failed itself.
    fn rank(&self, d: &[u8; 32]) -> Option<usize> {
        let mut rank = 0;
        for (other, (_, state)) in &self.peers {
            if *state == PeerState::Failed {
                continue;
            }
            if other == d {
                return Some(rank);
            }
            rank += 1;
        }
        None
    }

    /// The `k` closest peers not failed, closest first, with their states.
    fn closest_alive(&self) -> impl Iterator<Item = &(T, PeerState)> {
        self.peers
            .values()
            .filter(|(_, s)| *s != PeerState::Failed)
            .take(self.k)
    }

    /// The next peer to ask, if the lookup has room for a request: the closest of the `k`
    /// closest not asked yet. Counts the request.
    pub fn next_peer(&mut self) -> Option<T> {
        if self.stopped {
            return None;
        }
        let limit = match self.wanted {
            // Never more in flight than answers still wanted.
            Some(wanted) => self.alpha.min(wanted.saturating_sub(self.hits)),
            None if self.no_progress >= self.alpha => self.k,
            None => self.alpha,
        };
        if self.waiting >= limit {
            return None;
        }
        let peer = self
            .closest_alive()
            .find(|(_, s)| *s == PeerState::NotAsked)
            .map(|(p, _)| *p)?;
        self.set(&peer, PeerState::Waiting);
        self.waiting += 1;
        self.counts.requests += 1;
        Some(peer)
    }

    fn set(&mut self, peer: &T, state: PeerState) -> Option<PeerState> {
        let d = self.target.distance(&peer.point());
        let entry = self.peers.get_mut(&d)?;
        let old = entry.1;
        entry.1 = state;
        Some(old)
    }

    /// `peer` answered with `closer`. A peer that was not asked is ignored.
    pub fn on_answer(&mut self, peer: &T, closer: impl IntoIterator<Item = T>) {
        if self.state_of(peer) != Some(PeerState::Waiting) {
            return;
        }
        self.set(peer, PeerState::Answered);
        self.waiting -= 1;
        self.counts.answers += 1;
        if self.insert(closer) {
            self.no_progress = 0;
        } else {
            self.no_progress += 1;
        }
    }

    /// `peer`'s answer (to be passed to [`Self::on_answer`] next) held what was sought. A peer
    /// that was not asked is ignored.
    pub fn on_hit(&mut self, peer: &T) {
        if self.state_of(peer) == Some(PeerState::Waiting) {
            self.hits += 1;
        }
    }

    /// The request to `peer` failed. A peer that was not asked is ignored.
    pub fn on_failure(&mut self, peer: &T) {
        if self.state_of(peer) != Some(PeerState::Waiting) {
            return;
        }
        self.set(peer, PeerState::Failed);
        self.waiting -= 1;
        self.counts.failures += 1;
    }

    fn state_of(&self, peer: &T) -> Option<PeerState> {
        let d = self.target.distance(&peer.point());
        self.peers.get(&d).map(|(_, s)| *s)
    }

    /// Whether the `k` closest peers not failed have all answered (or no one is left to ask), a
    /// one-hop search has its hits, or the lookup was stopped.
    pub fn is_finished(&self) -> bool {
        self.stopped
            || self.wanted.is_some_and(|w| self.hits >= w)
            || self.closest_alive().all(|(_, s)| *s == PeerState::Answered)
    }

    /// Ends the lookup now: nothing more is asked, answers still in flight are ignored.
    pub fn stop(&mut self) {
        self.stopped = true;
    }

    /// The peers that answered, closest first, at most `k`.
    pub fn peers(&self) -> Vec<T> {
        self.peers
            .values()
            .filter(|(_, s)| *s == PeerState::Answered)
            .take(self.k)
            .map(|(p, _)| *p)
            .collect()
    }

    /// What the lookup cost so far.
    pub fn counts(&self) -> Counts {
        self.counts
    }

    /// Whether `peer` is among the candidates.
    fn knows(&self, peer: &T) -> bool {
        self.state_of(peer).is_some()
    }
}

/// Lookups over `d` disjoint paths (S/Kademlia): the seeds are dealt to `d` independent
/// [`ClosestPeers`] searches, closest first and in turn, and every peer belongs to the first
/// path that hears of it, so no peer is asked by two paths and one path whose peers lie cannot
/// steer the others. The result is the `k` closest that answered on any path. With one path it
/// is Kademlia's lookup; a one-hop search is always one path. Each path asks until its own `k`
/// closest answered, so `d` paths cost about `d` times the requests, in the same rounds.
#[derive(Debug)]
pub struct DisjointPaths<T> {
    target: KeyHash,
    k: usize,
    paths: Vec<ClosestPeers<T>>,
    /// The path each peer heard of belongs to.
    owner: std::collections::HashMap<T, usize>,
}

/// Paths a lookup takes at most.
pub const MAX_LOOKUP_PATHS: usize = 8;

impl<T: Peer> DisjointPaths<T> {
    /// A lookup of the `k` peers closest to `target` over `d` disjoint paths (at most
    /// [`MAX_LOOKUP_PATHS`]), each asking `alpha` at a time, starting from `seeds`.
    pub fn new(
        target: KeyHash,
        local: T,
        k: NonZeroUsize,
        alpha: NonZeroUsize,
        seeds: impl IntoIterator<Item = T>,
        d: NonZeroUsize,
    ) -> Self {
        let d = d.get().min(MAX_LOOKUP_PATHS);
        let seeds = closest(
            &target,
            seeds.into_iter().filter(|p| *p != local),
            MAX_CANDIDATES,
        );
        let mut dealt: Vec<Vec<T>> = vec![Vec::new(); d];
        let mut owner = std::collections::HashMap::new();
        for (i, peer) in seeds.into_iter().enumerate() {
            if owner.insert(peer, i % d).is_none() {
                dealt[i % d].push(peer);
            }
        }
        let paths = dealt
            .into_iter()
            .map(|seeds| ClosestPeers::new(target, local, k, alpha, seeds))
            .collect();
        Self {
            target,
            k: k.get(),
            paths,
            owner,
        }
    }

    /// One path: `search` as it is (a one-hop search, say).
    pub fn single(search: ClosestPeers<T>) -> Self {
        Self {
            target: search.target,
            k: search.k,
            paths: vec![search],
            owner: std::collections::HashMap::new(),
        }
    }

    /// The path `peer` belongs to (the only one, with one path).
    fn path_of(&self, peer: &T) -> Option<usize> {
        match self.paths.len() {
            1 => Some(0),
            _ => self.owner.get(peer).copied(),
        }
    }

    /// The next peer to ask on any path.
    pub fn next_peer(&mut self) -> Option<T> {
        self.paths.iter_mut().find_map(ClosestPeers::next_peer)
    }

    /// `peer` answered with `closer`: the peers no other path heard of go to its path.
    pub fn on_answer(&mut self, peer: &T, closer: impl IntoIterator<Item = T>) {
        let Some(path) = self.path_of(peer) else {
            return;
        };
        if self.paths.len() == 1 {
            return self.paths[0].on_answer(peer, closer);
        }
        let owner = &mut self.owner;
        let mine: Vec<T> = closer
            .into_iter()
            .filter(|p| *owner.entry(*p).or_insert(path) == path)
            .collect();
        // Bounded like each path's candidates: the farthest are forgotten past the bound.
        if owner.len() > MAX_CANDIDATES * MAX_LOOKUP_PATHS {
            owner.retain(|p, _| self.paths.iter().any(|s| s.knows(p)));
        }
        self.paths[path].on_answer(peer, mine);
    }

    /// `peer`'s answer held what was sought.
    pub fn on_hit(&mut self, peer: &T) {
        if let Some(path) = self.path_of(peer) {
            self.paths[path].on_hit(peer);
        }
    }

    /// The request to `peer` failed.
    pub fn on_failure(&mut self, peer: &T) {
        if let Some(path) = self.path_of(peer) {
            self.paths[path].on_failure(peer);
        }
    }

    /// Whether every path is finished.
    pub fn is_finished(&self) -> bool {
        self.paths.iter().all(ClosestPeers::is_finished)
    }

    /// Ends every path now.
    pub fn stop(&mut self) {
        self.paths.iter_mut().for_each(ClosestPeers::stop);
    }

    /// The `k` closest peers that answered on any path, closest first.
    pub fn peers(&self) -> Vec<T> {
        let all = self.paths.iter().flat_map(ClosestPeers::peers);
        closest(&self.target, all, self.k)
    }

    /// What every path cost so far, together.
    pub fn counts(&self) -> Counts {
        self.paths.iter().fold(Counts::default(), |mut sum, p| {
            let c = p.counts();
            sum.requests += c.requests;
            sum.answers += c.answers;
            sum.failures += c.failures;
            sum
        })
    }

    /// Paths taken.
    pub fn paths(&self) -> usize {
        self.paths.len()
    }

    /// Drives the lookup to its end against `answer`, which says what each peer asked answers
    /// (`None`: the request failed), in the order asked: for benchmarks and tests of lookups
    /// over a synthetic network. Returns the peers asked, in order.
    pub fn run_with(&mut self, mut answer: impl FnMut(&T) -> Option<Vec<T>>) -> Vec<T> {
        let mut asked = Vec::new();
        let mut in_flight = std::collections::VecDeque::new();
        loop {
            while let Some(p) = self.next_peer() {
                in_flight.push_back(p);
                asked.push(p);
            }
            let Some(p) = in_flight.pop_front() else {
                break;
            };
            match answer(&p) {
                Some(closer) => self.on_answer(&p, closer),
                None => self.on_failure(&p),
            }
            if self.is_finished() {
                break;
            }
        }
        asked
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use libp2p::PeerId;
    use proptest::prelude::*;

    use super::*;

    fn peers(n: usize) -> Vec<PeerId> {
        (0..n).map(|_| PeerId::random()).collect()
    }

    fn nz(n: usize) -> NonZeroUsize {
        NonZeroUsize::new(n).unwrap()
    }

    /// Runs a lookup over a network where each peer answers with the `k` closest of the peers
    /// it knows (`views`), failing the peers in `dead`. Returns the result and its counts.
    fn run(
        target: KeyHash,
        seeds: Vec<PeerId>,
        views: &HashMap<PeerId, Vec<PeerId>>,
        dead: &[PeerId],
        k: usize,
    ) -> (Vec<PeerId>, Counts) {
        let local = PeerId::random();
        let mut lookup = ClosestPeers::new(target, local, nz(k), nz(3), seeds);
        let mut in_flight = std::collections::VecDeque::new();
        for _ in 0..10_000 {
            while let Some(p) = lookup.next_peer() {
                in_flight.push_back(p);
            }
            let Some(p) = in_flight.pop_front() else {
                break;
            };
            if dead.contains(&p) {
                lookup.on_failure(&p);
            } else {
                let view = views.get(&p).cloned().unwrap_or_default();
                lookup.on_answer(&p, closest(&target, view, k));
            }
            if lookup.is_finished() {
                break;
            }
        }
        assert!(lookup.is_finished());
        (lookup.peers(), lookup.counts())
    }

    #[test]
    fn a_one_hop_search_asks_the_closest_few_and_widens_only_on_misses_and_failures() {
        let pool = peers(30);
        let target = KeyHash::of(b"one-hop");
        let ordered = closest(&target, pool.clone(), 30);
        // k = 8, alpha = 3, three copies wanted.
        let search = |seeds: &[PeerId]| {
            ClosestPeers::one_hop(
                target,
                PeerId::random(),
                nz(8),
                nz(3),
                seeds.iter().copied(),
                nz(3),
            )
        };
        let mut l = search(&pool);
        let first: Vec<PeerId> = std::iter::from_fn(|| l.next_peer()).collect();
        assert_eq!(first, ordered[..3]);
        // The closest holds it; the second misses; the third fails: two more are asked, the
        // next closest, and only them.
        l.on_hit(&first[0]);
        l.on_answer(&first[0], []);
        l.on_answer(&first[1], []);
        l.on_failure(&first[2]);
        let more: Vec<PeerId> = std::iter::from_fn(|| l.next_peer()).collect();
        assert_eq!(more, ordered[3..5]);
        for p in &more {
            l.on_hit(p);
            l.on_answer(p, []);
        }
        assert!(l.is_finished());
        assert_eq!(l.next_peer(), None);
        assert_eq!(l.counts().requests, 5);
        // A closer peer named in an answer is asked before farther seeds.
        let mut l = search(&ordered[1..]);
        let asked: Vec<PeerId> = std::iter::from_fn(|| l.next_peer()).collect();
        assert_eq!(asked, ordered[1..4]);
        l.on_answer(&asked[0], [ordered[0]]);
        assert_eq!(l.next_peer(), Some(ordered[0]));
        // Nobody holds it: the search ends once the k closest answered.
        let mut l = search(&pool);
        for _ in 0..100 {
            let Some(p) = l.next_peer() else { break };
            l.on_answer(&p, []);
        }
        assert!(l.is_finished());
        assert_eq!(l.counts().requests, 8);
    }

    #[test]
    fn disjoint_paths_never_share_a_peer_and_merge_to_the_true_closest() {
        let all = peers(300);
        let target = KeyHash::of(b"paths");
        let truth = closest(&target, all.clone(), 20);
        for d in 1..=4 {
            // Seeded with the full membership's 40 closest, as the core seeds a lookup.
            let seeds = closest(&target, all.clone(), 40);
            let mut lookup =
                DisjointPaths::new(target, PeerId::random(), nz(20), nz(3), seeds, nz(d));
            assert_eq!(lookup.paths(), d);
            let asked = lookup.run_with(|_| Some(closest(&target, all.clone(), 20)));
            let mut unique = asked.clone();
            unique.sort();
            unique.dedup();
            assert_eq!(unique.len(), asked.len(), "d = {d}: a peer asked twice");
            assert!(lookup.is_finished());
            assert_eq!(lookup.peers(), truth, "d = {d}");
            assert_eq!(lookup.counts().requests as usize, asked.len());
        }
    }

    #[test]
    fn full_membership_seeds_cost_k_requests() {
        let all = peers(300);
        let views: HashMap<_, _> = all.iter().map(|p| (*p, all.clone())).collect();
        let target = KeyHash::of(b"some key");
        let truth = closest(&target, all.clone(), 20);
        let (found, counts) = run(target, truth.clone(), &views, &[], 20);
        assert_eq!(found, truth);
        assert_eq!(
            counts.requests, 20,
            "each of the k closest asked once, no one else"
        );
    }

    #[test]
    fn far_seeds_walk_to_the_closest() {
        let all = peers(500);
        let target = KeyHash::of(b"walk");
        // Each peer knows 40 random others and its own 20 closest (a Kademlia-like view).
        let views: HashMap<_, _> = all
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let mut v: Vec<PeerId> = (0..40).map(|j| all[(i * 7 + j * 13) % 500]).collect();
                v.extend(closest(&p.point(), all.clone(), 20));
                (*p, v)
            })
            .collect();
        // Seeds: 20 peers far from the target.
        let mut far = all.clone();
        far.sort_by_key(|p| std::cmp::Reverse(target.distance(&p.point())));
        let seeds = far[..20].to_vec();
        let truth = closest(&target, all.clone(), 20);
        let (found, counts) = run(target, seeds, &views, &[], 20);
        let hits = found.iter().filter(|p| truth.contains(p)).count();
        assert!(hits >= 18, "recall {hits}/20");
        assert!(counts.requests < 60, "{counts:?}");
    }

    #[test]
    fn failed_peers_are_replaced_by_the_next_closest() {
        let all = peers(100);
        let views: HashMap<_, _> = all.iter().map(|p| (*p, all.clone())).collect();
        let target = KeyHash::of(b"dead");
        let truth = closest(&target, all.clone(), 40);
        let dead = truth[..5].to_vec();
        // Seeds beyond the k closest (as the event loop gives) replace the failed ones, though
        // every answer names the dead.
        let (found, counts) = run(target, truth.clone(), &views, &dead, 20);
        assert_eq!(found, truth[5..25].to_vec());
        assert_eq!(counts.failures, 5);
        assert_eq!(counts.requests, 25);
    }

    #[test]
    fn the_local_node_and_unasked_answers_are_ignored() {
        let local = PeerId::random();
        let others = peers(5);
        let target = KeyHash::of(b"x");
        let mut l = ClosestPeers::new(target, local, nz(3), nz(1), [local, others[0]]);
        let first = l.next_peer().unwrap();
        assert_eq!(first, others[0]);
        assert_eq!(l.next_peer(), None, "alpha 1");
        l.on_answer(&others[1], others.clone()); // never asked
        assert_eq!(l.counts().answers, 0);
        l.on_answer(&first, [local, others[1], others[2]]);
        assert!(!l.peers().contains(&local));
        while let Some(p) = l.next_peer() {
            l.on_answer(&p, []);
        }
        assert!(l.is_finished());
        assert_eq!(l.peers().len(), 3);
    }

    #[test]
    fn buckets_count_leading_zero_bits() {
        let a = KeyHash([0; 32]);
        assert_eq!(a.bucket(&a), None);
        let mut b = [0; 32];
        b[31] = 1;
        assert_eq!(a.bucket(&KeyHash(b)), Some(0));
        b[0] = 0x80;
        assert_eq!(a.bucket(&KeyHash(b)), Some(255));
        let mut c = [0; 32];
        c[1] = 0x10;
        assert_eq!(a.bucket(&KeyHash(c)), Some(255 - 11));
    }

    #[test]
    fn an_empty_lookup_is_finished() {
        let l: ClosestPeers<PeerId> =
            ClosestPeers::new(KeyHash::of(b"e"), PeerId::random(), nz(20), nz(3), []);
        assert!(l.is_finished());
        assert!(l.peers().is_empty());
    }

    proptest! {
        /// Whatever the answers and failures, a lookup ends, never has more than `k` requests
        /// in flight, and returns at most `k` peers that answered.
        #[test]
        fn lookups_end_within_bounds(
            seed_count in 0usize..40,
            script in proptest::collection::vec((any::<bool>(), 0usize..8), 0..200),
        ) {
            let pool = peers(64);
            let target = KeyHash::of(b"prop");
            let k = 8;
            let mut l = ClosestPeers::new(
                target, PeerId::random(), nz(k), nz(2), pool.iter().take(seed_count).copied());
            let mut in_flight = Vec::new();
            let mut steps = script.into_iter();
            for _ in 0..1000 {
                while let Some(p) = l.next_peer() {
                    in_flight.push(p);
                }
                prop_assert!(in_flight.len() <= k);
                if in_flight.is_empty() {
                    break;
                }
                let (fail, more) = steps.next().unwrap_or((false, 0));
                let p = in_flight.remove(0);
                if fail {
                    l.on_failure(&p);
                } else {
                    l.on_answer(&p, pool.iter().skip(more * 8).take(8).copied());
                }
            }
            prop_assert!(in_flight.is_empty());
            prop_assert!(l.is_finished());
            prop_assert!(l.peers().len() <= k);
            let c = l.counts();
            prop_assert_eq!(c.requests, c.answers + c.failures);
        }
    }
}
