//! The sans-IO broadcast core.
//!
//! # Driving a [`Broadcast`]
//!
//! The core performs no I/O, reads no clock and spawns nothing. The caller owns time and the
//! network:
//!
//! 1. Create it with [`Broadcast::new`], then tell it the membership with
//!    [`Broadcast::add_member`] and [`Broadcast::remove_member`] as the peer sampling service
//!    (SWIM in Shoal) reports changes.
//! 2. Whenever a message arrives, decode it ([`message::decode`](crate::message::decode)) and
//!    pass it to [`Broadcast::handle_message`] with the current time and the sender's identity
//!    as the transport authenticated it. When the transport loses a connection to a peer, call
//!    [`Broadcast::link_down`].
//! 3. Whenever the deadline returned by [`Broadcast::poll_timeout`] passes, call
//!    [`Broadcast::handle_timeout`] with the current time.
//! 4. After every `handle_*` call and every command, drain [`Broadcast::poll_transmit`] (send
//!    each message), [`Broadcast::poll_event`] (deliveries, gaps, invalid notices, neighbor
//!    changes) and read [`Broadcast::poll_timeout`] again.
//!
//! Time passed in must not go backwards; an earlier `now` is treated as the latest one seen.
//!
//! # Overlay (HyParView-style)
//!
//! The core keeps the member list it is told (bounded), an active view (the neighbors notices
//! travel over, symmetric: a neighbor has us as a neighbor too) and a passive view (a random
//! sample of the other members, kept so that a lost neighbor is replaced at once). The active
//! view's target grows with the membership as `ceil(log2(n)) + 1`, clamped; while the view is
//! below it, the core asks random passive members (high priority when it has no neighbor at
//! all, which the receiver accepts even when full, dropping a random neighbor). A node accepts
//! an ordinary request while its view holds less than target + 1: the slack of one lets a node
//! one short find room in an overlay where every view is at its target. Requests that time out
//! are replaced by requests to other candidates; refused ones are retried a little later.
//! A neighbor whose link fails is replaced at once and remembered: when it comes back as a
//! member (a healed partition), it is asked first. Periodic rotation swaps one neighbor for a
//! random passive member, so that the overlay keeps mixing.
//!
//! A message that only a neighbor sends (IHave, Graft, Prune, Clock, Pull, Gossip) from a peer
//! that is not one is answered with Disconnect: it thinks the link is up, and the answer makes
//! both ends agree.
//!
//! # Plumtree
//!
//! Notices travel eagerly (Gossip) over the eager links of the active view and are announced
//! lazily (IHave, batched every `ihave_interval`) over the others. New neighbors start eager; a
//! duplicate Gossip makes its sender lazy (Prune), so the eager links settle into a spanning
//! tree, one for all publishers. A notice announced but not received within `graft_timeout` is
//! grafted from its first announcer (which becomes eager again), then from the next ones every
//! `graft_retry`. Three details keep the tree from breaking apart once it has to be repaired
//! (after failures, or under loss), which the paper's rules alone did not in the simulator:
//! - graft timers are jittered by up to half of `graft_timeout`: a node announces to all its
//!   lazy neighbors at once, and without jitter they would all graft together;
//! - a graft asks its announcer for every other missing notice it announced too, so that a
//!   node cut off for a while makes one link eager, not one per notice it missed;
//! - a duplicate from a neighbor we grafted from within `graft_timeout + graft_retry` is not
//!   pruned: it is likely the answer to our graft, beaten by a copy that another node cut off
//!   with us grafted at the same time.
//!
//! Many publishers share the tree, so its depth follows no single source; Plumtree's tree
//! optimization ([`Config::optimization_threshold`]) is off by default for that reason.
//!
//! # Feeds and ordering
//!
//! Notices are delivered once per id and in sequence order per feed (see the `store` module
//! for the position, the gap timer and eviction). When a gap opens, the node grafts the
//! missing ids directly after about a graft timeout, from the neighbor that sent the notice
//! held behind the gap first, then from random neighbors, until the gap fills or `gap_timeout`
//! skips it ([`Event::Gap`]).
//!
//! # Catch-up and anti-entropy
//!
//! When a link comes up, the node that asked for it sends a Clock naming the feeds it changed
//! since it last exchanged clocks with that peer (every feed the first time), with the highest
//! sequence number it holds of each. The receiver answers with the notices it holds above
//! those, and with its own Clock of the feeds it changed since its last exchange with the
//! sender, plus the feeds named where it is behind: the asker then answers with notices too.
//! Answers are bounded; the side that is behind asks again while answers make progress. When a
//! link goes down, the peer is taken to hold what we held shortly before we last heard from it
//! ([`Config::catchup_settle`]), so a link that comes back after a partition names only the
//! feeds that changed meanwhile. Notices learnt by catch-up are relayed into the tree like
//! gossip.
//!
//! Every `pull_interval` the core sends a random neighbor a Bloom filter of the notices it
//! received within `pull_window`; the neighbor answers with those of its own it held for at
//! least `graft_timeout + ihave_interval` (fresher ones are still on their way through the
//! tree) that the filter does not contain. This repairs what loss took from both the eager and
//! the lazy path.
//!
//! # Bounds
//!
//! Every table is bounded by a config field: members, views, pending requests, lazy
//! announcements, missing notices and their announcers (in total and per announcing peer),
//! grafts served per peer per flush, held notices, the store, peer clocks, the pull window, the
//! transmit queue (new transmits are dropped) and the event queue (the oldest event is dropped).
//! Every drop is counted in [`Stats::drops`].

mod overlay;
mod store;

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use self::store::{Inserted, Store};
use crate::bloom::Bloom;
use crate::config::Config;
use crate::error::{ConfigError, PublishError, Rejection};
use crate::message::{self, FeedSeq, Message, MessageKind, Notice, NoticeId};
use crate::{Peer, Verify};

/// A message to send: the caller encodes `msg` and delivers it to `to`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit<T> {
    /// Destination.
    pub to: T,
    /// The message.
    pub msg: Message,
}

/// Something the application should know about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event<T> {
    /// A notice to hand to the application: once per notice id, in sequence order per feed.
    Deliver(Notice),
    /// The notices `from..=to` of a feed were skipped: later ones waited `gap_timeout` (or
    /// filled the hold buffer) without them arriving. If they arrive later they are stored and
    /// relayed, never delivered.
    Gap {
        /// The feed.
        publisher: Vec<u8>,
        /// First sequence number skipped.
        from: u64,
        /// Last sequence number skipped.
        to: u64,
    },
    /// `from` sent a notice that was dropped unstored and unrelayed; the embedder may penalize
    /// it.
    Invalid {
        /// The sender.
        from: T,
        /// Why.
        reason: Rejection,
    },
    /// `peer` joined the active view: keep a connection to it open.
    NeighborUp(T),
    /// `peer` left the active view: its connection is no longer needed for broadcast.
    NeighborDown(T),
}

/// Notices dropped before being stored, by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rejected {
    /// Refused by the embedder's verifier.
    pub invalid: u64,
    /// Publisher or body too long.
    pub oversized: u64,
    /// Sequence number 0 or empty publisher.
    pub malformed: u64,
}

/// Messages and bytes sent, per [`MessageKind`] (indexed by `kind as usize`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Traffic {
    /// Messages sent per kind.
    pub messages: [u64; MessageKind::COUNT],
    /// Encoded bytes sent per kind.
    pub bytes: [u64; MessageKind::COUNT],
}

impl Traffic {
    /// Bytes of the messages that carry notices (Gossip, Notices).
    pub fn payload_bytes(&self) -> u64 {
        MessageKind::ALL
            .iter()
            .filter(|k| k.is_payload())
            .map(|k| self.bytes[*k as usize])
            .sum()
    }

    /// Bytes of every other message.
    pub fn control_bytes(&self) -> u64 {
        MessageKind::ALL
            .iter()
            .filter(|k| !k.is_payload())
            .map(|k| self.bytes[*k as usize])
            .sum()
    }
}

/// Overlay maintenance counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NeighborStats {
    /// Neighbor requests sent.
    pub requests: u64,
    /// Our requests accepted.
    pub accepted: u64,
    /// Our requests refused.
    pub refused: u64,
    /// Our requests that timed out.
    pub timeouts: u64,
    /// Neighbors dropped to make room for a high-priority request.
    pub evictions: u64,
    /// Rotations started.
    pub rotations: u64,
    /// Peers that joined the active view.
    pub up: u64,
    /// Peers that left it.
    pub down: u64,
}

/// Catch-up counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CatchupStats {
    /// Clock messages sent.
    pub clocks_sent: u64,
    /// Clock messages received.
    pub clocks_received: u64,
    /// Clocks of our changed feeds sent (opening an exchange or answering one); follow-up
    /// clocks asking for more are not counted.
    pub exchanges: u64,
    /// Of those, exchanges with a peer we had no record of (every feed named).
    pub first_exchanges: u64,
    /// Feeds named in every Clock sent.
    pub feeds_named: u64,
    /// Of those, feeds named in first exchanges.
    pub feeds_named_first: u64,
    /// Of those, feeds named in exchanges with peers we had a record of: the feeds changed
    /// since we last exchanged with them, plus those their clock showed us behind on.
    pub feeds_named_delta: u64,
    /// Notices sent in catch-up answers.
    pub notices_sent: u64,
    /// Bytes of Clock messages and catch-up answers sent.
    pub bytes: u64,
}

/// Current sizes of the views.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Views {
    /// Members known.
    pub members: usize,
    /// Active neighbors.
    pub active: usize,
    /// Of those, eager ones.
    pub eager: usize,
    /// Of those, lazy ones.
    pub lazy: usize,
    /// Passive members.
    pub passive: usize,
    /// Neighbor requests waiting for an answer.
    pub pending: usize,
}

/// What bounded queues and tables dropped.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Drops {
    /// Transmits dropped because the transmit queue was full.
    pub transmits: u64,
    /// Events dropped (oldest first) because the event queue was full.
    pub events: u64,
    /// Announced ids not remembered (missing table full, per peer or in total).
    pub announcements: u64,
    /// Lazy announcements dropped because the lazy queue was full.
    pub lazy: u64,
    /// Grafted ids refused because the peer used its answers for this flush.
    pub graft_answers: u64,
    /// Times a feed held more than `max_held` notices and skipped its gaps at once.
    pub held_overflow: u64,
    /// Members not remembered because the member list was full.
    pub members: u64,
    /// Notices evicted from the store.
    pub evicted_notices: u64,
    /// Feeds forgotten.
    pub evicted_feeds: u64,
    /// Messages only a neighbor sends that came from a peer that is not one.
    pub not_neighbor: u64,
}

/// Counters of the core's life, for metrics, tests and benchmarks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Notices published here.
    pub published: u64,
    /// Notices delivered (each id once).
    pub delivered: u64,
    /// Notices received again (by gossip, catch-up or pull) after they were stored.
    pub duplicates: u64,
    /// Notices stored after delivery passed their sequence number (never delivered).
    pub late: u64,
    /// Gaps reported.
    pub gaps: u64,
    /// Sequence numbers skipped in those gaps.
    pub skipped: u64,
    /// Notices dropped unstored, by reason.
    pub rejected: Rejected,
    /// Gossip messages sent (eager pushes and graft answers).
    pub gossip_sent: u64,
    /// Gossip messages received.
    pub gossip_received: u64,
    /// IHave messages sent.
    pub ihave_sent: u64,
    /// Ids announced in them.
    pub ihave_ids_sent: u64,
    /// Ids announced to us.
    pub ihave_ids_received: u64,
    /// Graft messages sent.
    pub grafts_sent: u64,
    /// Ids asked for in them.
    pub graft_ids_sent: u64,
    /// Graft messages received.
    pub grafts_received: u64,
    /// Notices sent in answer to grafts.
    pub graft_notices_sent: u64,
    /// Prune messages sent.
    pub prunes_sent: u64,
    /// Prune messages received.
    pub prunes_received: u64,
    /// Tree optimizations made (see [`Config::optimization_threshold`]).
    pub optimizations: u64,
    /// Grafts sent to fill a gap in a feed (also counted in `grafts_sent`).
    pub gap_repairs: u64,
    /// Overlay maintenance.
    pub neighbors: NeighborStats,
    /// Catch-up exchanges.
    pub catchup: CatchupStats,
    /// Pulls sent.
    pub pulls_sent: u64,
    /// Pull answers sent.
    pub pull_replies: u64,
    /// Notices sent in pull answers.
    pub pull_notices_sent: u64,
    /// Traffic sent, per message kind.
    pub traffic: Traffic,
    /// View sizes when the stats were taken.
    pub views: Views,
    /// Drops of bounded queues and tables.
    pub drops: Drops,
}

/// Current lengths of every internal table, to check that state stays bounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueLengths {
    /// Members known. Bound: `max_members`.
    pub members: usize,
    /// Active neighbors. Bound: `active_max + 1`.
    pub active: usize,
    /// Passive members. Bound: `passive_max`.
    pub passive: usize,
    /// Neighbor requests in flight. Bound: `active_max + 1`.
    pub pending: usize,
    /// Lost neighbors remembered, members to reconnect and candidates cooling down after a
    /// refusal. Bound: `3 * passive_max`.
    pub lost: usize,
    /// Pending transmits. Bound: `max_transmit_queue`.
    pub transmits: usize,
    /// Pending events. Bound: `max_event_queue`.
    pub events: usize,
    /// Lazy announcements waiting for the flush. Bound: `max_lazy_queue`.
    pub lazy: usize,
    /// Missing notices (announced, not received). Bound: `max_missing`.
    pub missing: usize,
    /// Graft timers. Bound: `max_missing`.
    pub graft_timers: usize,
    /// Peers with announcements in the missing table. Bound: `max_missing`.
    pub announcers: usize,
    /// Peers that grafted since the last flush. Bound: `max_peer_clocks`.
    pub graft_peers: usize,
    /// Peers whose last catch-up exchange is remembered. Bound: `max_peer_clocks`.
    pub peer_clocks: usize,
    /// Feeds wanted from neighbors during catch-up. Bound: `(active_max + 1) * MAX_FEEDS`.
    pub wants: usize,
    /// Feeds stored. Bound: `max_feeds`.
    pub feeds: usize,
    /// Notices stored. Bound: `max_feeds * max_notices_per_feed`.
    pub notices: usize,
    /// Bytes stored. Bound: `max_store_bytes` (plus one notice while it is inserted).
    pub store_bytes: usize,
    /// Notices in the pull window. Bound: `max_recent`.
    pub recent: usize,
    /// Version marks. Bound: 1024.
    pub marks: usize,
    /// Gap timers. Bound: `max_feeds`.
    pub gap_timers: usize,
    /// Feeds whose gap is being repaired. Bound: `max_feeds`.
    pub gap_repairs: usize,
}

/// An active neighbor.
struct Neighbor<T> {
    id: T,
    eager: bool,
    last_heard: Instant,
    /// When we last grafted from it.
    grafted: Option<Instant>,
}

/// A neighbor request in flight.
struct Pending<T> {
    id: T,
    deadline: Instant,
    high_priority: bool,
    /// Started by rotation: once accepted, a random old neighbor makes room.
    rotation: bool,
}

/// A notice announced to us but not received.
struct Missing<T> {
    /// Announcers not grafted yet, first come first, with the round they announced.
    announcers: VecDeque<(T, u32)>,
    /// Its graft timer.
    deadline: Instant,
}

/// What a transmit is for, to count catch-up bytes apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Purpose {
    Other,
    Catchup,
}

/// Per-peer record of our version when we last told it our clock, least recently used out.
struct PeerClocks<T> {
    map: HashMap<T, (u64, u64)>,
    tick: u64,
    cap: usize,
}

impl<T: Peer> PeerClocks<T> {
    fn new(cap: usize) -> Self {
        Self {
            map: HashMap::new(),
            tick: 0,
            cap,
        }
    }

    fn get(&self, peer: &T) -> Option<u64> {
        self.map.get(peer).map(|(v, _)| *v)
    }

    /// Records `version` for `peer` unless a later one is recorded.
    fn raise(&mut self, peer: T, version: u64) {
        self.tick += 1;
        let tick = self.tick;
        let entry = self.map.entry(peer).or_insert((version, tick));
        entry.0 = entry.0.max(version);
        entry.1 = tick;
        if self.map.len() > self.cap
            && let Some(oldest) = self
                .map
                .iter()
                .min_by_key(|(_, (_, t))| *t)
                .map(|(p, _)| p.clone())
        {
            self.map.remove(&oldest);
        }
    }
}

/// Outcome of taking in a notice from anywhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Taken {
    New,
    Duplicate,
    Rejected,
}

/// The broadcast state machine of one node. See the module docs for the call order and the
/// protocol.
pub struct Broadcast<T: Peer, V: Verify> {
    config: Config,
    me: T,
    verifier: V,
    rng: StdRng,
    last_now: Instant,

    // Overlay (see `overlay.rs`).
    members: Vec<T>,
    member_index: HashMap<T, usize>,
    active: Vec<Neighbor<T>>,
    passive: Vec<T>,
    pending: Vec<Pending<T>>,
    /// Neighbors whose link failed, to ask first when they come back as members.
    lost: VecDeque<T>,
    /// Lost neighbors that came back, to ask first.
    reconnect: VecDeque<T>,
    /// Peers that refused, ignored or dropped us recently, with when they may be asked again.
    cooldown: VecDeque<(T, Instant)>,
    next_fill: Option<Instant>,
    next_rotate: Option<Instant>,

    // Plumtree.
    store: Store<T>,
    lazy: Vec<(T, NoticeId, u32)>,
    next_flush: Instant,
    missing: HashMap<NoticeId, Missing<T>>,
    graft_timers: BTreeSet<(Instant, NoticeId)>,
    /// Announcer entries in `missing`, per peer.
    announced: HashMap<T, usize>,
    /// Notices served to grafts since the last flush, per peer.
    graft_served: HashMap<T, usize>,
    /// Feeds with a gap being repaired: the next repair time and the attempts made.
    gap_repairs: HashMap<Vec<u8>, (Instant, u32)>,
    repair_timers: BTreeSet<(Instant, Vec<u8>)>,

    // Catch-up and anti-entropy.
    peer_clocks: PeerClocks<T>,
    /// Feeds a neighbor's clock showed us behind on, with the sequence number it has.
    wants: HashMap<T, HashMap<Vec<u8>, u64>>,
    next_pull: Instant,

    transmits: VecDeque<Transmit<T>>,
    events: VecDeque<Event<T>>,
    scratch: Vec<Event<T>>,
    stats: Stats,
}

impl<T: Peer, V: Verify> Broadcast<T, V> {
    /// Creates the core of node `me`. Every notice that arrives is checked with `verifier`
    /// before it is stored, delivered or relayed. Fails if the config is invalid.
    pub fn new(now: Instant, me: T, config: Config, verifier: V) -> Result<Self, ConfigError> {
        config.validate()?;
        let mut rng = match config.rng_seed {
            Some(seed) => StdRng::from_seed(seed),
            None => StdRng::from_entropy(),
        };
        let next_pull = now + jitter(&mut rng, config.pull_interval);
        let next_rotate = config
            .rotate_interval
            .map(|r| now + r / 2 + jitter(&mut rng, r));
        Ok(Self {
            me,
            verifier,
            rng,
            last_now: now,
            members: Vec::new(),
            member_index: HashMap::new(),
            active: Vec::new(),
            passive: Vec::new(),
            pending: Vec::new(),
            lost: VecDeque::new(),
            reconnect: VecDeque::new(),
            cooldown: VecDeque::new(),
            next_fill: None,
            next_rotate,
            store: Store::new(now),
            lazy: Vec::new(),
            next_flush: now + config.ihave_interval,
            missing: HashMap::new(),
            graft_timers: BTreeSet::new(),
            announced: HashMap::new(),
            graft_served: HashMap::new(),
            gap_repairs: HashMap::new(),
            repair_timers: BTreeSet::new(),
            peer_clocks: PeerClocks::new(config.max_peer_clocks),
            wants: HashMap::new(),
            next_pull,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            scratch: Vec::new(),
            stats: Stats::default(),
            config,
        })
    }

    // ----- accessors -----

    /// Our identity.
    pub fn local_id(&self) -> &T {
        &self.me
    }

    /// The config in use.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Counters, with the current view sizes.
    pub fn stats(&self) -> Stats {
        let mut s = self.stats.clone();
        let eager = self.active.iter().filter(|n| n.eager).count();
        s.views = Views {
            members: self.members.len(),
            active: self.active.len(),
            eager,
            lazy: self.active.len() - eager,
            passive: self.passive.len(),
            pending: self.pending.len(),
        };
        s
    }

    /// The active neighbors, in no particular order.
    pub fn active_view(&self) -> impl Iterator<Item = &T> {
        self.active.iter().map(|n| &n.id)
    }

    /// The passive members, in no particular order.
    pub fn passive_view(&self) -> impl Iterator<Item = &T> {
        self.passive.iter()
    }

    /// Whether `peer` is an active neighbor we push to eagerly.
    pub fn is_eager(&self, peer: &T) -> bool {
        self.active.iter().any(|n| n.id == *peer && n.eager)
    }

    /// Whether `peer` is an active neighbor.
    pub fn is_active(&self, peer: &T) -> bool {
        self.active.iter().any(|n| n.id == *peer)
    }

    /// Whether the notice `id` is stored.
    pub fn contains(&self, id: &NoticeId) -> bool {
        self.store.contains(id)
    }

    /// Hops the stored notice `id` travelled from its publisher (0 for our own), when it came
    /// by gossip; `None` when it came by catch-up or pull, or is not stored.
    pub fn hops(&self, id: &NoticeId) -> Option<u32> {
        self.store.get(id)?.hops
    }

    /// Highest sequence number stored of a feed, 0 if none.
    pub fn max_seq(&self, publisher: &[u8]) -> u64 {
        self.store.max_seq(publisher)
    }

    /// The notices of feed `publisher` above `seq` that this node delivered (or skipped behind
    /// a gap and stored since), in order, at most `max`: what a subscriber that saw the feed up
    /// to `seq` missed, as far as the store still holds it.
    pub fn delivered_after(&self, publisher: &[u8], seq: u64, max: usize) -> Vec<&Notice> {
        self.store.passed_above(publisher, seq).take(max).collect()
    }

    /// The embedder's verifier, to update what it checks against (the time, in Shoal).
    pub fn verifier_mut(&mut self) -> &mut V {
        &mut self.verifier
    }

    /// Whether every table is within the bound its config sets: the simulator checks it after
    /// every step, the fuzz target after every input.
    pub fn within_bounds(&self) -> bool {
        let q = self.queue_lengths();
        let c = &self.config;
        q.members <= c.max_members
            && q.active <= c.active_max + 1
            && q.passive <= c.passive_max
            && q.pending <= c.active_max + 1
            && q.lost <= 3 * c.passive_max
            && q.transmits <= c.max_transmit_queue
            && q.events <= c.max_event_queue
            && q.lazy <= c.max_lazy_queue
            && q.missing <= c.max_missing
            && q.graft_timers <= c.max_missing
            && q.announcers <= c.max_missing
            && q.graft_peers <= c.max_peer_clocks
            && q.peer_clocks <= c.max_peer_clocks
            && q.wants <= (c.active_max + 1) * message::MAX_FEEDS
            && q.feeds <= c.max_feeds
            && q.notices <= c.max_feeds * c.max_notices_per_feed
            && q.store_bytes <= c.max_store_bytes
            && q.recent <= c.max_recent
            && q.marks <= 1024
            && q.gap_timers <= c.max_feeds
            && q.gap_repairs <= c.max_feeds
    }

    /// Lengths of the internal tables.
    pub fn queue_lengths(&self) -> QueueLengths {
        let (feeds, notices, store_bytes, recent, marks, gap_timers) = self.store.lengths();
        QueueLengths {
            members: self.members.len(),
            active: self.active.len(),
            passive: self.passive.len(),
            pending: self.pending.len(),
            lost: self.lost.len() + self.reconnect.len() + self.cooldown.len(),
            transmits: self.transmits.len(),
            events: self.events.len(),
            lazy: self.lazy.len(),
            missing: self.missing.len(),
            graft_timers: self.graft_timers.len(),
            announcers: self.announced.len(),
            graft_peers: self.graft_served.len(),
            peer_clocks: self.peer_clocks.map.len(),
            wants: self.wants.values().map(HashMap::len).sum(),
            feeds,
            notices,
            store_bytes,
            recent,
            marks,
            gap_timers,
            gap_repairs: self.gap_repairs.len().max(self.repair_timers.len()),
        }
    }

    // ----- commands -----

    /// Publishes a notice: stores it, delivers it here (subject to the feed's order, like any
    /// notice) and pushes it to the eager neighbors, announcing it to the lazy ones. The
    /// verifier is not consulted: the embedder signed it. Refused, with nothing changed, if it
    /// breaks a bound or its id is already stored.
    pub fn publish(&mut self, now: Instant, notice: Notice) -> Result<(), PublishError> {
        let now = self.clock(now);
        self.screen(&notice).map_err(PublishError::Refused)?;
        if self.store.contains(&notice.id()) {
            return Err(PublishError::Duplicate);
        }
        let copy = notice.clone();
        self.insert(now, notice, Some(0), None);
        self.stats.published += 1;
        self.relay(now, &copy, 0, None);
        Ok(())
    }

    // ----- input -----

    /// Handles a message that `from` sent us.
    pub fn handle_message(&mut self, now: Instant, from: T, msg: Message) {
        let now = self.clock(now);
        if from == self.me {
            return;
        }
        let active = match self.active.iter_mut().find(|n| n.id == from) {
            Some(n) => {
                n.last_heard = now;
                true
            }
            None => false,
        };
        match msg {
            Message::Gossip { notice, round } => self.on_gossip(now, from, active, notice, round),
            Message::IHave { ids, round } => self.on_ihave(now, from, active, ids, round),
            Message::Graft { ids } => self.on_graft(from, active, ids),
            Message::Prune => {
                self.stats.prunes_received += 1;
                if active {
                    self.set_eager(&from, false);
                } else {
                    self.not_neighbor(from);
                }
            }
            Message::Neighbor { high_priority } => self.on_neighbor(now, from, high_priority),
            Message::NeighborReply { accepted } => self.on_neighbor_reply(now, from, accepted),
            Message::Disconnect => self.on_disconnect(now, from),
            Message::Clock { feeds, reply } => self.on_clock(from, active, feeds, reply),
            Message::Notices { notices } => self.on_notices(now, from, active, notices),
            Message::Pull { bloom, hashes } => self.on_pull(now, from, active, bloom, hashes),
        }
    }

    /// Handles every deadline up to `now`. Call it when [`poll_timeout`](Self::poll_timeout)
    /// passes; calling it early is harmless.
    pub fn handle_timeout(&mut self, now: Instant) {
        let now = self.clock(now);
        self.expire_pending(now);
        self.expire_grafts(now);
        self.repair_gaps(now);
        let mut out = std::mem::take(&mut self.scratch);
        self.store
            .expire_gaps(now, &self.config, &mut out, &mut self.stats);
        self.emit_all(&mut out);
        if now >= self.next_flush {
            self.next_flush = now + self.config.ihave_interval;
            self.flush_lazy();
            self.graft_served.clear();
            self.store
                .trim_recent(now, self.config.pull_window, self.config.max_recent);
            shrink_drained(&mut self.transmits);
            shrink_drained(&mut self.events);
        }
        if self.next_fill.is_some_and(|t| now >= t) {
            self.next_fill = None;
            self.fill_active(now);
        }
        if self.next_rotate.is_some_and(|t| now >= t) {
            self.rotate(now);
        }
        if now >= self.next_pull {
            // A node that received nothing within the pull window pulls once a window: in a
            // quiet network pulls find nothing (an idle node's only broadcast traffic), and a
            // node that lost every notice of a busy one is still repaired within about a
            // window, sooner by its neighbors' IHaves and its gap repairs. The first notice
            // stored brings the next pull back to the interval (`insert`).
            let quiet = !self.store.has_recent(now, self.config.pull_window);
            let every = if quiet {
                self.config.pull_window
            } else {
                self.config.pull_interval
            };
            self.next_pull = now + every / 2 + jitter(&mut self.rng, every);
            self.pull(now);
        }
    }

    // ----- output -----

    /// Next message to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit<T>> {
        self.transmits.pop_front()
    }

    /// Next event.
    pub fn poll_event(&mut self) -> Option<Event<T>> {
        self.events.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) must next be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        let mut consider = |t: Option<Instant>| {
            if let Some(t) = t
                && next.is_none_or(|n| t < n)
            {
                next = Some(t);
            }
        };
        if !self.lazy.is_empty() || !self.graft_served.is_empty() {
            consider(Some(self.next_flush));
        }
        consider(self.graft_timers.first().map(|(t, _)| *t));
        consider(self.store.next_gap_deadline());
        consider(self.repair_timers.first().map(|(t, _)| *t));
        consider(self.pending.iter().map(|p| p.deadline).min());
        consider(self.next_fill);
        consider(self.next_rotate);
        if !self.active.is_empty() {
            consider(Some(self.next_pull));
        }
        next
    }

    // ----- internals: notices -----

    /// Checks the bounds of a notice that verification does not cover.
    fn screen(&self, n: &Notice) -> Result<(), Rejection> {
        if n.publisher.is_empty() {
            return Err(Rejection::Malformed("empty publisher"));
        }
        if n.seq == 0 {
            return Err(Rejection::Malformed("sequence number 0"));
        }
        if n.publisher.len() > message::MAX_PUBLISHER_BYTES {
            return Err(Rejection::Oversized {
                what: "publisher",
                len: n.publisher.len(),
                max: message::MAX_PUBLISHER_BYTES,
            });
        }
        if n.body.len() > self.config.max_notice_bytes {
            return Err(Rejection::Oversized {
                what: "body",
                len: n.body.len(),
                max: self.config.max_notice_bytes,
            });
        }
        Ok(())
    }

    /// Takes in a notice from `from`: screens, deduplicates, verifies, stores and delivers it.
    /// Returns a copy to relay when it is new.
    fn take(
        &mut self,
        now: Instant,
        from: &T,
        notice: Notice,
        hops: Option<u32>,
    ) -> (Taken, Option<Notice>) {
        if let Err(reason) = self.screen(&notice) {
            match reason {
                Rejection::Oversized { .. } => self.stats.rejected.oversized += 1,
                _ => self.stats.rejected.malformed += 1,
            }
            self.emit(Event::Invalid {
                from: from.clone(),
                reason,
            });
            return (Taken::Rejected, None);
        }
        if self.store.contains(&notice.id()) {
            self.stats.duplicates += 1;
            return (Taken::Duplicate, None);
        }
        if let Err(reason) = self.verifier.verify(&notice) {
            self.stats.rejected.invalid += 1;
            tracing::debug!(peer = ?from, notice = ?notice, %reason, "invalid notice");
            self.emit(Event::Invalid {
                from: from.clone(),
                reason: Rejection::Invalid(reason),
            });
            return (Taken::Rejected, None);
        }
        let copy = notice.clone();
        self.insert(now, notice, hops, Some(from.clone()));
        (Taken::New, Some(copy))
    }

    fn insert(&mut self, now: Instant, notice: Notice, hops: Option<u32>, from: Option<T>) {
        let id = notice.id();
        let mut out = std::mem::take(&mut self.scratch);
        let inserted = self.store.insert(
            now,
            store::Stored { notice, hops, from },
            &self.config,
            &mut out,
            &mut self.stats,
        );
        self.emit_all(&mut out);
        if inserted == Inserted::New {
            let soon = now + self.config.pull_interval;
            if self.next_pull > soon {
                self.next_pull = soon;
            }
            self.forget_missing(&id);
            if !self.gap_repairs.contains_key(&id.publisher)
                && self.gap_repairs.len() < self.config.max_feeds
                && self.store.holes(&id.publisher, 0).is_some()
            {
                // A gap opened: if neither gossip nor IHave fills it by a graft timeout, ask
                // for the missing ids directly.
                let at = now
                    + self.config.graft_timeout
                    + jitter(&mut self.rng, self.config.graft_timeout / 2);
                self.gap_repairs.insert(id.publisher.clone(), (at, 0));
                self.repair_timers.insert((at, id.publisher));
            }
        }
    }

    /// Grafts the missing ids of every feed whose gap is still open at its repair time: from
    /// the peer that sent the lowest held notice first (it had the feed that far), then from
    /// random neighbors every `graft_retry`, until the gap fills or `gap_timeout` skips it.
    fn repair_gaps(&mut self, now: Instant) {
        while let Some((t, _)) = self.repair_timers.first()
            && *t <= now
        {
            let Some((_, publisher)) = self.repair_timers.pop_first() else {
                break;
            };
            let Some((_, attempt)) = self.gap_repairs.remove(&publisher) else {
                continue;
            };
            let Some((missing, from)) = self.store.holes(&publisher, self.config.max_ihave_ids)
            else {
                continue;
            };
            let to = match from {
                Some(p) if attempt == 0 && self.is_active(&p) => Some(p),
                _ if self.active.is_empty() => None,
                _ => {
                    let i = self.rng.gen_range(0..self.active.len());
                    Some(self.active[i].id.clone())
                }
            };
            if let Some(to) = to
                && !missing.is_empty()
            {
                let ids = missing
                    .into_iter()
                    .map(|seq| NoticeId {
                        publisher: publisher.clone(),
                        seq,
                    })
                    .collect();
                self.stats.gap_repairs += 1;
                self.stats.grafts_sent += 1;
                self.send(to, Message::Graft { ids }, Purpose::Other);
            }
            let at = now + self.config.graft_retry;
            self.gap_repairs
                .insert(publisher.clone(), (at, attempt + 1));
            self.repair_timers.insert((at, publisher));
        }
    }

    /// Pushes a new notice to the eager neighbors and queues its announcement to the lazy ones,
    /// `except` the peer it came from.
    fn relay(&mut self, now: Instant, notice: &Notice, round: u32, except: Option<&T>) {
        let mut eager = Vec::new();
        let was_empty = self.lazy.is_empty();
        for n in &self.active {
            if Some(&n.id) == except {
                continue;
            }
            if n.eager {
                eager.push(n.id.clone());
            } else if self.lazy.len() < self.config.max_lazy_queue {
                self.lazy.push((n.id.clone(), notice.id(), round));
            } else {
                self.stats.drops.lazy += 1;
            }
        }
        if was_empty && !self.lazy.is_empty() && self.next_flush <= now {
            self.next_flush = now + self.config.ihave_interval;
        }
        for to in eager {
            self.stats.gossip_sent += 1;
            self.send(
                to,
                Message::Gossip {
                    notice: notice.clone(),
                    round,
                },
                Purpose::Other,
            );
        }
    }

    fn on_gossip(&mut self, now: Instant, from: T, active: bool, notice: Notice, round: u32) {
        self.stats.gossip_received += 1;
        let hops = round.saturating_add(1);
        match self.take(now, &from, notice, Some(hops)) {
            (Taken::New, Some(n)) => {
                if active {
                    self.set_eager(&from, true);
                }
                self.relay(now, &n, hops, Some(&from));
            }
            (Taken::Duplicate, _) if active && self.grafted_recently(now, &from) => {}
            (Taken::Duplicate, _) if active => {
                let percent = u32::from(self.config.prune_percent);
                if !self.is_eager(&from) || percent >= 100 || self.rng.gen_range(0..100) < percent {
                    self.set_eager(&from, false);
                    self.stats.prunes_sent += 1;
                    self.send(from.clone(), Message::Prune, Purpose::Other);
                }
            }
            _ => {}
        }
        if !active {
            self.not_neighbor(from);
        }
    }

    fn on_ihave(&mut self, now: Instant, from: T, active: bool, ids: Vec<NoticeId>, round: u32) {
        if !active {
            self.not_neighbor(from);
            return;
        }
        self.stats.ihave_ids_received += ids.len() as u64;
        let mut optimized = false;
        for id in ids.into_iter().take(message::MAX_IDS) {
            if let Some(stored) = self.store.get(&id) {
                if !optimized && let Some(th) = self.config.optimization_threshold {
                    // The round we got it at is its hops minus one.
                    let ours = stored.hops.map(|h| h.saturating_sub(1));
                    if let (Some(ours), Some(src)) = (ours, stored.from.clone())
                        && round.saturating_add(th) <= ours
                        && src != from
                        && self.is_eager(&src)
                    {
                        optimized = true;
                        self.stats.optimizations += 1;
                        self.set_eager(&from, true);
                        self.stats.grafts_sent += 1;
                        self.send(from.clone(), Message::Graft { ids: vec![] }, Purpose::Other);
                        self.set_eager(&src, false);
                        self.stats.prunes_sent += 1;
                        self.send(src, Message::Prune, Purpose::Other);
                    }
                }
                continue;
            }
            if self.store.is_stale(&id) {
                continue;
            }
            self.announce(now, &from, id, round);
        }
    }

    /// Remembers that `from` announced the missing notice `id`, arming its graft timer.
    fn announce(&mut self, now: Instant, from: &T, id: NoticeId, round: u32) {
        let per_peer = self.announced.get(from).copied().unwrap_or(0);
        if per_peer >= self.config.max_missing_per_peer {
            self.stats.drops.announcements += 1;
            return;
        }
        match self.missing.get_mut(&id) {
            Some(m) => {
                if m.announcers.len() >= self.config.max_announcers
                    || m.announcers.iter().any(|(p, _)| p == from)
                {
                    return;
                }
                m.announcers.push_back((from.clone(), round));
            }
            None => {
                if self.missing.len() >= self.config.max_missing {
                    self.stats.drops.announcements += 1;
                    return;
                }
                // A node announces to all its lazy neighbors at once, so their timers would
                // all fire together and each would graft: the jitter lets the first answer
                // flood the tree and cancel the other grafts (each one made a link eager, and
                // several at once make cycles that overlapping floods then cut in several
                // places, starting over).
                let deadline = now
                    + self.config.graft_timeout
                    + jitter(&mut self.rng, self.config.graft_timeout / 2);
                self.graft_timers.insert((deadline, id.clone()));
                self.missing.insert(
                    id,
                    Missing {
                        announcers: VecDeque::from([(from.clone(), round)]),
                        deadline,
                    },
                );
            }
        }
        *self.announced.entry(from.clone()).or_insert(0) += 1;
    }

    /// Forgets a missing notice (it arrived), with its timer and announcer counts.
    fn forget_missing(&mut self, id: &NoticeId) {
        if let Some(m) = self.missing.remove(id) {
            self.graft_timers.remove(&(m.deadline, id.clone()));
            for (p, _) in m.announcers {
                self.unannounce(&p);
            }
        }
    }

    fn unannounce(&mut self, peer: &T) {
        if let Some(c) = self.announced.get_mut(peer) {
            *c -= 1;
            if *c == 0 {
                self.announced.remove(peer);
            }
        }
    }

    /// Grafts every missing notice whose timer passed from its next announcer that is still a
    /// neighbor, and re-arms its timer for the one after. Each announcer grafted is also asked
    /// for every other missing notice it announced: a node cut off from the tree misses every
    /// notice published while its first graft waits, and grafting each of them from whichever
    /// neighbor announced it first would make many links eager at once (cycles, that
    /// overlapping floods then cut in several places, cutting it off again).
    fn expire_grafts(&mut self, now: Instant) {
        let mut grafts: Vec<(T, NoticeId)> = Vec::new();
        while let Some((t, _)) = self.graft_timers.first()
            && *t <= now
        {
            let Some((_, id)) = self.graft_timers.pop_first() else {
                break;
            };
            let Some(mut m) = self.missing.remove(&id) else {
                continue;
            };
            let mut target = None;
            while let Some((p, _)) = m.announcers.pop_front() {
                self.unannounce(&p);
                if self.is_active(&p) {
                    target = Some(p);
                    break;
                }
            }
            let Some(p) = target else {
                // Nobody left to ask: anti-entropy pulls will find it if it still matters.
                for (p, _) in m.announcers {
                    self.unannounce(&p);
                }
                continue;
            };
            grafts.push((p, id.clone()));
            // Keep the entry (even without announcers) until the retry passes, so that the
            // answer, or the next announcer, has its time.
            m.deadline = now + self.config.graft_retry;
            self.graft_timers.insert((m.deadline, id.clone()));
            self.missing.insert(id, m);
        }
        if grafts.is_empty() {
            return;
        }
        let targets: HashSet<T> = grafts.iter().map(|(p, _)| p.clone()).collect();
        let expired: HashSet<NoticeId> = grafts.iter().map(|(_, id)| id.clone()).collect();
        let mut also = Vec::new();
        for (id, m) in &mut self.missing {
            if expired.contains(id) {
                continue;
            }
            if let Some(k) = m.announcers.iter().position(|(p, _)| targets.contains(p)) {
                let Some((p, _)) = m.announcers.remove(k) else {
                    continue;
                };
                also.push((p, id.clone(), m.deadline));
                m.deadline = now + self.config.graft_retry;
            }
        }
        for (p, id, old) in also {
            self.unannounce(&p);
            self.graft_timers.remove(&(old, id.clone()));
            self.graft_timers
                .insert((now + self.config.graft_retry, id.clone()));
            grafts.push((p, id));
        }
        for n in &mut self.active {
            if targets.contains(&n.id) {
                n.grafted = Some(now);
            }
        }
        if grafts.is_empty() {
            return;
        }
        // By peer, then id: `missing` is a hash map, whose order must not reach the wire (a run
        // is a function of its inputs).
        grafts.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        let mut i = 0;
        while i < grafts.len() {
            let peer = grafts[i].0.clone();
            let mut ids = Vec::new();
            while i < grafts.len() && grafts[i].0 == peer {
                ids.push(grafts[i].1.clone());
                i += 1;
            }
            self.set_eager(&peer, true);
            for chunk in ids.chunks(self.config.max_ihave_ids) {
                self.stats.grafts_sent += 1;
                self.stats.graft_ids_sent += chunk.len() as u64;
                self.send(
                    peer.clone(),
                    Message::Graft {
                        ids: chunk.to_vec(),
                    },
                    Purpose::Other,
                );
            }
        }
    }

    /// Whether we grafted from `from` recently. Its gossip may then be a graft answer: when
    /// other nodes cut off with us grafted too, their copy may beat the answer to ours, and
    /// pruning the link that answered would cut us off again (and every such race would then
    /// repeat at the next notice).
    fn grafted_recently(&self, now: Instant, from: &T) -> bool {
        let window = self.config.graft_timeout + self.config.graft_retry;
        self.active.iter().any(|n| {
            n.id == *from
                && n.grafted
                    .is_some_and(|t| now.saturating_duration_since(t) <= window)
        })
    }

    fn on_graft(&mut self, from: T, active: bool, ids: Vec<NoticeId>) {
        self.stats.grafts_received += 1;
        if !active {
            self.not_neighbor(from);
            return;
        }
        self.set_eager(&from, true);
        if ids.is_empty() {
            return;
        }
        let served = self.graft_served.get(&from).copied().unwrap_or(0);
        if served == 0 && self.graft_served.len() >= self.config.max_peer_clocks {
            self.stats.drops.graft_answers += ids.len() as u64;
            return;
        }
        let budget = self.config.max_graft_answers.saturating_sub(served);
        let mut sent = 0;
        let mut answers = Vec::new();
        for id in ids.iter().take(message::MAX_IDS) {
            if sent >= budget {
                self.stats.drops.graft_answers += 1;
                continue;
            }
            if let Some(s) = self.store.get(id) {
                answers.push((s.notice.clone(), s.hops.unwrap_or(0)));
                sent += 1;
            }
        }
        *self.graft_served.entry(from.clone()).or_insert(0) += sent;
        for (notice, round) in answers {
            self.stats.gossip_sent += 1;
            self.stats.graft_notices_sent += 1;
            self.send(
                from.clone(),
                Message::Gossip { notice, round },
                Purpose::Other,
            );
        }
    }

    /// Sends the queued lazy announcements, one IHave per peer per `max_ihave_ids`.
    fn flush_lazy(&mut self) {
        if self.lazy.is_empty() {
            return;
        }
        let mut lazy = std::mem::take(&mut self.lazy);
        lazy.sort_by(|a, b| a.0.cmp(&b.0));
        let mut i = 0;
        while i < lazy.len() {
            let peer = lazy[i].0.clone();
            let start = i;
            while i < lazy.len() && lazy[i].0 == peer {
                i += 1;
            }
            if !self.is_active(&peer) {
                continue;
            }
            for chunk in lazy[start..i].chunks(self.config.max_ihave_ids) {
                let round = chunk.iter().map(|e| e.2).max().unwrap_or(0);
                let ids: Vec<NoticeId> = chunk.iter().map(|e| e.1.clone()).collect();
                self.stats.ihave_sent += 1;
                self.stats.ihave_ids_sent += ids.len() as u64;
                self.send(peer.clone(), Message::IHave { ids, round }, Purpose::Other);
            }
        }
        lazy.clear();
        if lazy.capacity() <= 4 * self.config.max_ihave_ids {
            self.lazy = lazy;
        }
    }

    fn set_eager(&mut self, peer: &T, eager: bool) {
        if let Some(n) = self.active.iter_mut().find(|n| n.id == *peer) {
            n.eager = eager;
        }
    }

    // ----- internals: catch-up -----

    /// Sends `to` our clock: the feeds changed since our last exchange with it (all of them
    /// the first time) and `behind` (feeds its clock showed us behind on).
    fn send_clock(&mut self, to: T, reply: bool, behind: Vec<FeedSeq>) {
        let since = self.peer_clocks.get(&to);
        let mut feeds = behind;
        let named: std::collections::HashSet<Vec<u8>> =
            feeds.iter().map(|f| f.publisher.clone()).collect();
        feeds.extend(
            self.store
                .changed_since(since.unwrap_or(0))
                .filter(|(p, _)| !named.contains(*p))
                .map(|(p, max_seq)| FeedSeq {
                    publisher: p.clone(),
                    max_seq,
                }),
        );
        self.stats.catchup.exchanges += 1;
        if since.is_none() {
            self.stats.catchup.first_exchanges += 1;
            self.stats.catchup.feeds_named_first += feeds.len() as u64;
        } else {
            self.stats.catchup.feeds_named_delta += feeds.len() as u64;
        }
        self.peer_clocks.raise(to.clone(), self.store.version());
        self.send_feeds(to, feeds, reply);
    }

    /// Sends `feeds` in as many Clock messages as they need, `reply` set on the last.
    fn send_feeds(&mut self, to: T, feeds: Vec<FeedSeq>, reply: bool) {
        if feeds.is_empty() && !reply {
            return;
        }
        self.stats.catchup.feeds_named += feeds.len() as u64;
        // Each entry is at most a publisher and a 9-byte integer with its framing.
        let per_msg = ((self.config.max_message_bytes - 64) / (message::MAX_PUBLISHER_BYTES + 16))
            .min(message::MAX_FEEDS);
        let chunks: Vec<Vec<FeedSeq>> = if feeds.is_empty() {
            vec![Vec::new()]
        } else {
            feeds.chunks(per_msg).map(<[FeedSeq]>::to_vec).collect()
        };
        let last = chunks.len() - 1;
        for (i, feeds) in chunks.into_iter().enumerate() {
            self.stats.catchup.clocks_sent += 1;
            self.send(
                to.clone(),
                Message::Clock {
                    feeds,
                    reply: reply && i == last,
                },
                Purpose::Catchup,
            );
        }
    }

    fn on_clock(&mut self, from: T, active: bool, feeds: Vec<FeedSeq>, reply: bool) {
        self.stats.catchup.clocks_received += 1;
        if !active {
            self.not_neighbor(from);
            return;
        }
        let budget = self.config.max_message_bytes - 64;
        let mut bytes = 0;
        let mut out: Vec<Notice> = Vec::new();
        let mut full = false;
        let mut behind = Vec::new();
        for f in feeds.into_iter().take(message::MAX_FEEDS) {
            let ours = self.store.max_seq(&f.publisher);
            if ours > f.max_seq {
                for n in self.store.notices_above(&f.publisher, f.max_seq) {
                    let len = message::encoded_len(n);
                    if full || out.len() >= self.config.max_catchup_notices || bytes + len > budget
                    {
                        full = true;
                        break;
                    }
                    bytes += len;
                    out.push(n.clone());
                }
            } else if ours < f.max_seq {
                let wants = self.wants.entry(from.clone()).or_default();
                if wants.len() < message::MAX_FEEDS {
                    wants.insert(f.publisher.clone(), f.max_seq);
                }
                behind.push(FeedSeq {
                    publisher: f.publisher,
                    max_seq: ours,
                });
            }
        }
        if !out.is_empty() {
            self.stats.catchup.notices_sent += out.len() as u64;
            self.send(
                from.clone(),
                Message::Notices { notices: out },
                Purpose::Catchup,
            );
        }
        if reply {
            self.send_clock(from, false, behind);
        } else if !behind.is_empty() {
            self.send_feeds(from, behind, false);
        }
    }

    fn on_notices(&mut self, now: Instant, from: T, active: bool, notices: Vec<Notice>) {
        let mut progress = false;
        for notice in notices.into_iter().take(message::MAX_NOTICES) {
            if let (Taken::New, Some(n)) = self.take(now, &from, notice, None) {
                progress = true;
                self.relay(now, &n, 0, Some(&from));
            }
        }
        // A catch-up answer is bounded: ask again for what is still behind, while answers
        // make progress.
        let Some(mut wants) = self.wants.remove(&from) else {
            return;
        };
        wants.retain(|p, target| self.store.max_seq(p) < *target);
        if !progress || !active || wants.is_empty() {
            return;
        }
        let mut feeds: Vec<FeedSeq> = wants
            .keys()
            .map(|p| FeedSeq {
                publisher: p.clone(),
                max_seq: self.store.max_seq(p),
            })
            .collect();
        // In publisher order, not the hash map's.
        feeds.sort_by(|a, b| a.publisher.cmp(&b.publisher));
        self.wants.insert(from.clone(), wants);
        self.send_feeds(from, feeds, false);
    }

    // ----- internals: anti-entropy -----

    fn pull(&mut self, now: Instant) {
        if self.active.is_empty() {
            return;
        }
        let i = self.rng.gen_range(0..self.active.len());
        let to = self.active[i].id.clone();
        let hashes = self.store.recent_hashes(now, self.config.pull_window);
        let mut bloom = Bloom::for_items(hashes.len(), self.config.max_bloom_bytes);
        for h in hashes {
            bloom.insert(h);
        }
        let (bloom, hashes) = bloom.into_parts();
        self.stats.pulls_sent += 1;
        self.send(to, Message::Pull { bloom, hashes }, Purpose::Other);
    }

    fn on_pull(&mut self, now: Instant, from: T, active: bool, bloom: Vec<u8>, hashes: u8) {
        if !active {
            self.not_neighbor(from);
            return;
        }
        let bloom = Bloom::from_parts(bloom, hashes.clamp(1, message::MAX_BLOOM_HASHES));
        let settle = self.config.graft_timeout + self.config.ihave_interval;
        let budget = self.config.max_message_bytes - 64;
        let mut bytes = 0;
        let mut out = Vec::new();
        for r in self.store.recent(now, self.config.pull_window, settle) {
            if out.len() >= self.config.max_pull_reply {
                break;
            }
            if bloom.contains(r.hash) {
                continue;
            }
            if let Some(s) = self.store.get(&r.id) {
                let len = message::encoded_len(&s.notice);
                if bytes + len > budget {
                    break;
                }
                bytes += len;
                out.push(s.notice.clone());
            }
        }
        if out.is_empty() {
            return;
        }
        self.stats.pull_replies += 1;
        self.stats.pull_notices_sent += out.len() as u64;
        self.send(from, Message::Notices { notices: out }, Purpose::Other);
    }

    // ----- internals: output -----

    fn send(&mut self, to: T, msg: Message, purpose: Purpose) {
        let kind = msg.kind() as usize;
        let len = message::encoded_len(&msg) as u64;
        self.stats.traffic.messages[kind] += 1;
        self.stats.traffic.bytes[kind] += len;
        if purpose == Purpose::Catchup {
            self.stats.catchup.bytes += len;
        }
        if self.transmits.len() >= self.config.max_transmit_queue {
            self.stats.drops.transmits += 1;
            return;
        }
        self.transmits.push_back(Transmit { to, msg });
    }

    fn emit(&mut self, event: Event<T>) {
        if self.events.len() >= self.config.max_event_queue {
            self.events.pop_front();
            self.stats.drops.events += 1;
        }
        self.events.push_back(event);
    }

    fn emit_all(&mut self, out: &mut Vec<Event<T>>) {
        for e in out.drain(..) {
            self.emit(e);
        }
        self.scratch = std::mem::take(out);
    }

    /// Answers a message only a neighbor sends from a peer that is not one.
    fn not_neighbor(&mut self, from: T) {
        self.stats.drops.not_neighbor += 1;
        if self.pending.iter().any(|p| p.id == from) {
            // Our request is on its way: its answer decides.
            return;
        }
        self.send(from, Message::Disconnect, Purpose::Other);
    }

    fn clock(&mut self, now: Instant) -> Instant {
        if now > self.last_now {
            self.last_now = now;
        }
        self.last_now
    }
}

fn jitter(rng: &mut StdRng, d: Duration) -> Duration {
    d.mul_f64(rng.r#gen::<f64>())
}

/// Gives back the memory of a queue that a burst grew and that is empty again.
fn shrink_drained<X>(queue: &mut VecDeque<X>) {
    if queue.is_empty() && queue.capacity() > 256 {
        queue.shrink_to_fit();
    }
}

#[cfg(test)]
mod tests;
