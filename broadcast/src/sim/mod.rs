//! A deterministic simulator of many broadcast cores on virtual time.
//!
//! Each node is a [`Broadcast<NodeId, SimVerify>`] with an inbox of encoded messages. A global
//! queue of wake-ups orders the nodes; [`Sim::step`] jumps to the earliest pending delivery,
//! timeout or membership action and handles it. What a core transmits goes through the seeded
//! [`LinkModel`] (uniform latency, uniform loss), partitions between groups and crashed nodes.
//! Every message is encoded with the real codec when sent (so byte counts are real) and decoded
//! on arrival. Links are FIFO, as the streams of a real transport are: a message never
//! overtakes an earlier one between the same two nodes.
//!
//! Membership is simulated, standing in for SWIM: [`Sim::add_all_members`] tells every node
//! about every other, in a shuffled order; a crash makes the live nodes that have the crashed
//! node as an active neighbor get [`link_down`](Broadcast::link_down) after
//! [`Sim::link_detect`], and every live node get
//! [`remove_member`](Broadcast::remove_member) after [`Sim::member_detect`]; a partition
//! brings `link_down` for the neighbors across it after `link_detect` and `remove_member` for
//! the other side after [`Sim::split_detect`]; healing brings `add_member` back after
//! [`Sim::heal_detect`].
//!
//! Every notice published through [`Sim::publish`] is tracked: which nodes delivered it, when,
//! and over how many hops. After every step the simulator checks invariants and panics, naming
//! the seed, when one breaks:
//! - a node delivers a notice at most once, and only a valid one;
//! - no node sends an invalid notice (only [`Sim::inject`] can put one on the wire);
//! - every internal table stays within its configured bound.

pub mod scenario;

use std::cmp::Reverse;
use std::collections::hash_map::DefaultHasher;
use std::collections::{BinaryHeap, HashMap};
use std::hash::Hasher;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use crate::Verify;
use crate::config::Config;
use crate::message::{self, Limits, Message, MessageKind, Notice, NoticeId};
use crate::state::{Broadcast, Event};

/// Identity of a simulated node: its index.
pub type NodeId = u32;

/// A tracer of sent messages: `(now, from, to, message, delivered)`; see [`Sim::trace`].
pub type Trace = Box<dyn FnMut(Instant, NodeId, NodeId, &Message, bool)>;

/// The seeded network model and the percentile of the reports: SWIM's simulator's, shared.
pub use shoal_swim::sim::{LinkModel, percentile};

/// The simulator's stand-in for a signature: a notice is valid when its body ends with an
/// 8-byte tag of its publisher, sequence number and the rest of the body (see [`sign`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SimVerify;

impl Verify for SimVerify {
    fn verify(&mut self, notice: &Notice) -> Result<(), String> {
        if is_signed(notice) {
            Ok(())
        } else {
            Err("bad tag".to_string())
        }
    }
}

fn tag(publisher: &[u8], seq: u64, payload: &[u8]) -> [u8; 8] {
    // SipHash with fixed keys: deterministic, and no forger in the simulation.
    let mut h = DefaultHasher::new();
    h.write(publisher);
    h.write_u64(seq);
    h.write(payload);
    h.finish().to_be_bytes()
}

/// A notice of `publisher` at `seq` whose body is `payload` followed by its tag.
pub fn sign(publisher: Vec<u8>, seq: u64, payload: &[u8]) -> Notice {
    let mut body = payload.to_vec();
    body.extend_from_slice(&tag(&publisher, seq, payload));
    Notice {
        publisher,
        seq,
        body,
    }
}

/// Whether `notice` carries a valid tag.
pub fn is_signed(notice: &Notice) -> bool {
    let Some(split) = notice.body.len().checked_sub(8) else {
        return false;
    };
    let (payload, t) = notice.body.split_at(split);
    tag(&notice.publisher, notice.seq, payload) == t
}

/// The feed id of node `id`: 32 bytes, like a public key.
pub fn feed_of(id: NodeId) -> Vec<u8> {
    let mut p = vec![0xfe; 32];
    p[..4].copy_from_slice(&id.to_be_bytes());
    p
}

/// One delivery of a tracked notice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivery {
    /// The node.
    pub node: NodeId,
    /// When, in virtual time.
    pub at: Instant,
    /// Hops from the publisher, when it came by gossip (see [`Broadcast::hops`]).
    pub hops: Option<u32>,
}

/// A notice published through [`Sim::publish`] and its deliveries.
#[derive(Debug, Clone)]
pub struct Track {
    /// Its id.
    pub id: NoticeId,
    /// The node that published it.
    pub node: NodeId,
    /// When it was published.
    pub at: Instant,
    /// Every delivery, the publisher's own included, in order.
    pub deliveries: Vec<Delivery>,
    seen: Vec<u64>,
}

impl Track {
    /// Whether `node` delivered it.
    pub fn delivered_by(&self, node: NodeId) -> bool {
        let i = node as usize;
        self.seen
            .get(i / 64)
            .is_some_and(|w| w & (1 << (i % 64)) != 0)
    }
}

/// Traffic and delivery counters, reset by [`Sim::reset_counters`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SimStats {
    /// Messages sent by live nodes, per [`MessageKind`].
    pub messages: [u64; MessageKind::COUNT],
    /// Their encoded bytes, per kind.
    pub bytes: [u64; MessageKind::COUNT],
    /// Messages dropped by loss, partitions or crashed receivers.
    pub dropped: u64,
    /// Gossip messages that reached a live node.
    pub gossip_received: u64,
    /// Deliveries of tracked notices at nodes other than their publisher.
    pub deliveries: u64,
    /// Gaps reported.
    pub gaps: u64,
    /// Invalid notices reported.
    pub invalid: u64,
    /// Steps taken.
    pub steps: u64,
}

impl SimStats {
    /// Bytes of control messages (everything but Gossip and Notices).
    pub fn control_bytes(&self) -> u64 {
        MessageKind::ALL
            .iter()
            .filter(|k| !k.is_payload())
            .map(|k| self.bytes[*k as usize])
            .sum()
    }

    /// Bytes of payload messages (Gossip and Notices).
    pub fn payload_bytes(&self) -> u64 {
        MessageKind::ALL
            .iter()
            .filter(|k| k.is_payload())
            .map(|k| self.bytes[*k as usize])
            .sum()
    }

    /// Relative message redundancy: Gossip received per delivery, minus one.
    pub fn rmr(&self) -> f64 {
        if self.deliveries == 0 {
            return 0.0;
        }
        self.gossip_received as f64 / self.deliveries as f64 - 1.0
    }
}

/// `item`, due at `at`; `seq` (unique, rising) keeps items due at one instant in the order they
/// were queued. Ordered by `(at, seq)` alone, so the item needs no order of its own.
struct Timed<E> {
    at: Instant,
    seq: u64,
    item: E,
}

impl<E> PartialEq for Timed<E> {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl<E> Eq for Timed<E> {}
impl<E> PartialOrd for Timed<E> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl<E> Ord for Timed<E> {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

/// A message on its way to a node.
struct Inbound {
    from: NodeId,
    bytes: Vec<u8>,
}

/// A membership change the simulated SWIM reports later.
enum Action {
    /// Live nodes with `peer` as an active neighbor lose the link.
    LinkCheck(NodeId),
    /// Every live node removes `peer`.
    Remove(NodeId),
    /// Live nodes lose their links across the groups.
    SplitLinks(Arc<Vec<u32>>),
    /// Every live node removes the members of the other groups.
    SplitRemove(Arc<Vec<u32>>),
    /// Every live node adds back the live members of the other groups.
    HealAdd(Arc<Vec<u32>>),
}

struct Node {
    core: Option<Broadcast<NodeId, SimVerify>>,
    inbox: BinaryHeap<Reverse<Timed<Inbound>>>,
    wake: Option<Instant>,
    group: u32,
    next_seq: u64,
}

/// The simulator. See the module docs.
pub struct Sim {
    seed: u64,
    config: Config,
    limits: Limits,
    /// The link model; may be changed between steps.
    pub link: LinkModel,
    /// How long after a crash or a split the transport notices lost links. Default: 500 ms.
    pub link_detect: Duration,
    /// How long after a crash SWIM declares the node failed everywhere. Default: 6 s.
    pub member_detect: Duration,
    /// How long after a split SWIM removes the other side. Default: 3 s.
    pub split_detect: Duration,
    /// How long after healing SWIM adds the other side back. Default: 3 s.
    pub heal_detect: Duration,
    /// Payload bytes of each published notice (its 8-byte tag comes on top). Default: 120.
    pub payload_len: usize,
    /// Keep the gaps and invalid-notice events for [`Sim::take_events`].
    pub record_events: bool,
    /// Counters.
    pub stats: SimStats,
    /// Called for every message a live node sends, after the link model decided its fate.
    pub trace: Option<Trace>,
    start: Instant,
    time: Instant,
    rng: StdRng,
    nodes: Vec<Node>,
    queue: BinaryHeap<Reverse<(Instant, u64, NodeId)>>,
    actions: BinaryHeap<Reverse<Timed<Action>>>,
    seq: u64,
    fifo: HashMap<(NodeId, NodeId), Instant>,
    tracks: Vec<Track>,
    track_index: HashMap<NoticeId, usize>,
    events: Vec<(Instant, NodeId, Event<NodeId>)>,
}

impl Sim {
    /// A simulator with no nodes. `config` is every node's config (its `rng_seed` is replaced by
    /// one derived from `seed` and the node). The seed is printed to stderr so that a failing
    /// run can be replayed.
    ///
    /// # Panics
    /// If the config is invalid (a bug of the caller's test or benchmark).
    pub fn new(seed: u64, config: Config, link: LinkModel) -> Self {
        eprintln!("broadcast sim seed: {seed}");
        if let Err(e) = config.validate() {
            panic!("invalid sim config: {e}");
        }
        // Virtual time starts at an arbitrary real instant; only differences matter.
        let start = Instant::now();
        Self {
            seed,
            limits: config.limits(),
            config,
            link,
            link_detect: Duration::from_millis(500),
            member_detect: Duration::from_secs(6),
            split_detect: Duration::from_secs(3),
            heal_detect: Duration::from_secs(3),
            payload_len: 120,
            record_events: false,
            stats: SimStats::default(),
            trace: None,
            start,
            time: start,
            rng: StdRng::seed_from_u64(seed),
            nodes: Vec::new(),
            queue: BinaryHeap::new(),
            actions: BinaryHeap::new(),
            seq: 0,
            fifo: HashMap::new(),
            tracks: Vec::new(),
            track_index: HashMap::new(),
            events: Vec::new(),
        }
    }

    /// The seed.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Current virtual time.
    pub fn now(&self) -> Instant {
        self.time
    }

    /// Virtual time elapsed since the start.
    pub fn elapsed(&self) -> Duration {
        self.time - self.start
    }

    /// Number of nodes ever added (crashed ones included).
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether no node was added.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The config shared by the nodes.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The core of `id`, unless it is crashed.
    pub fn node(&self, id: NodeId) -> Option<&Broadcast<NodeId, SimVerify>> {
        self.nodes.get(id as usize)?.core.as_ref()
    }

    /// Whether `id` is running.
    pub fn is_up(&self, id: NodeId) -> bool {
        self.nodes[id as usize].core.is_some()
    }

    /// The running nodes.
    pub fn live_nodes(&self) -> Vec<NodeId> {
        (0..self.nodes.len() as NodeId)
            .filter(|&i| self.is_up(i))
            .collect()
    }

    /// The notices published through [`Sim::publish`], in order.
    pub fn tracks(&self) -> &[Track] {
        &self.tracks
    }

    /// Takes the recorded gap and invalid-notice events (see [`Sim::record_events`]).
    pub fn take_events(&mut self) -> Vec<(Instant, NodeId, Event<NodeId>)> {
        std::mem::take(&mut self.events)
    }

    /// Resets [`Sim::stats`], to measure a window.
    pub fn reset_counters(&mut self) {
        self.stats = SimStats::default();
    }

    /// Adds `n` nodes that know nobody; returns the first new id.
    pub fn add_nodes(&mut self, n: usize) -> NodeId {
        let first = self.nodes.len() as NodeId;
        for i in 0..n as NodeId {
            let id = first + i;
            let mut c = self.config.clone();
            let mut seed = [0u8; 32];
            seed[..8].copy_from_slice(&self.seed.to_le_bytes());
            seed[8..12].copy_from_slice(&id.to_le_bytes());
            c.rng_seed = Some(seed);
            // Invariant: the config was validated by `new` and only the seed differs.
            let core = Broadcast::new(self.time, id, c, SimVerify).expect("sim config is valid");
            self.nodes.push(Node {
                core: Some(core),
                inbox: BinaryHeap::new(),
                wake: None,
                group: 0,
                next_seq: 1,
            });
            self.schedule(id);
        }
        first
    }

    /// Tells every live node about every other node, each in its own shuffled order, as SWIM
    /// would once converged.
    pub fn add_all_members(&mut self) {
        let now = self.time;
        let n = self.nodes.len() as NodeId;
        let mut order: Vec<NodeId> = (0..n).collect();
        for id in 0..n {
            order.shuffle(&mut self.rng);
            if let Some(core) = self.nodes[id as usize].core.as_mut() {
                for &m in &order {
                    if m != id {
                        core.add_member(now, m);
                    }
                }
            }
            self.flush(id);
        }
    }

    /// Publishes the next notice of `node`'s feed ([`feed_of`]); returns its id.
    ///
    /// # Panics
    /// If the node is down or refuses the notice.
    pub fn publish(&mut self, node: NodeId) -> NoticeId {
        let now = self.time;
        let words = self.nodes.len().div_ceil(64);
        let n = &mut self.nodes[node as usize];
        let seq = n.next_seq;
        n.next_seq += 1;
        let mut payload = vec![0u8; self.payload_len];
        self.rng.fill(&mut payload[..]);
        let notice = sign(feed_of(node), seq, &payload);
        let id = notice.id();
        self.track_index.insert(id.clone(), self.tracks.len());
        self.tracks.push(Track {
            id: id.clone(),
            node,
            at: now,
            deliveries: Vec::new(),
            seen: vec![0; words],
        });
        let seed = self.seed;
        let Some(core) = n.core.as_mut() else {
            panic!("seed {seed}: publish on crashed node {node}");
        };
        if let Err(e) = core.publish(now, notice) {
            panic!("seed {seed}: node {node} refused its own notice: {e}");
        }
        self.flush(node);
        id
    }

    /// Sends `msg` to `to` as if `from` had sent it, bypassing `from`'s core (to inject what no
    /// core would send, such as an invalid notice).
    pub fn inject(&mut self, from: NodeId, to: NodeId, msg: &Message) {
        let bytes = message::encode(msg);
        self.deliver_later(from, to, bytes);
    }

    /// Crashes `id`: its state and pending messages are lost, messages to it are dropped, and
    /// the simulated SWIM reports it (see the module docs).
    pub fn crash(&mut self, id: NodeId) {
        let node = &mut self.nodes[id as usize];
        node.core = None;
        node.inbox.clear();
        let now = self.time;
        self.schedule_action(now + self.link_detect, Action::LinkCheck(id));
        self.schedule_action(now + self.member_detect, Action::Remove(id));
    }

    /// Splits the nodes into groups: messages between different groups are dropped. Nodes not
    /// listed form group 0. The simulated SWIM reports the split (see the module docs).
    pub fn partition(&mut self, groups: &[&[NodeId]]) {
        for n in &mut self.nodes {
            n.group = 0;
        }
        for (g, members) in groups.iter().enumerate() {
            for &id in *members {
                self.nodes[id as usize].group = g as u32 + 1;
            }
        }
        let snapshot: Arc<Vec<u32>> = Arc::new(self.nodes.iter().map(|n| n.group).collect());
        let now = self.time;
        self.schedule_action(now + self.link_detect, Action::SplitLinks(snapshot.clone()));
        self.schedule_action(now + self.split_detect, Action::SplitRemove(snapshot));
    }

    /// Removes every partition; the simulated SWIM adds the other sides back after
    /// [`Sim::heal_detect`].
    pub fn heal(&mut self) {
        let snapshot: Arc<Vec<u32>> = Arc::new(self.nodes.iter().map(|n| n.group).collect());
        for n in &mut self.nodes {
            n.group = 0;
        }
        let now = self.time;
        self.schedule_action(now + self.heal_detect, Action::HealAdd(snapshot));
    }

    /// Runs one step: advances to the earliest pending delivery, timeout or membership action
    /// and handles it. Returns false when nothing is pending.
    pub fn step(&mut self) -> bool {
        let wake = self.queue.peek().map(|Reverse((t, _, _))| *t);
        let action = self.actions.peek().map(|Reverse(s)| s.at);
        match (wake, action) {
            (None, None) => false,
            (w, Some(a)) if w.is_none_or(|w| a <= w) => {
                // Invariant: `peek` returned an entry just above.
                let Reverse(s) = self.actions.pop().expect("action");
                if s.at > self.time {
                    self.time = s.at;
                }
                self.apply(s.item);
                true
            }
            _ => {
                self.wake_step();
                true
            }
        }
    }

    fn wake_step(&mut self) {
        let Some(Reverse((t, _, id))) = self.queue.pop() else {
            return;
        };
        self.stats.steps += 1;
        if t > self.time {
            self.time = t;
        }
        let now = self.time;
        let seed = self.seed;
        let node = &mut self.nodes[id as usize];
        if node.wake == Some(t) {
            node.wake = None;
        }
        let Some(core) = node.core.as_mut() else {
            return;
        };
        while node.inbox.peek().is_some_and(|Reverse(m)| m.at <= now) {
            // Invariant: `peek` returned an entry just above.
            let Reverse(m) = node.inbox.pop().expect("inbox entry");
            let msg = match message::decode(&m.item.bytes, &self.limits) {
                Ok(msg) => msg,
                Err(e) => panic!("seed {seed}: node {id} got an undecodable message: {e}"),
            };
            if let Message::Gossip { .. } = msg {
                self.stats.gossip_received += 1;
            }
            core.handle_message(now, m.item.from, msg);
        }
        if core.poll_timeout().is_some_and(|d| d <= now) {
            core.handle_timeout(now);
        }
        self.flush(id);
    }

    /// Steps until virtual time `until`, then sets the clock to it.
    pub fn run_until(&mut self, until: Instant) {
        loop {
            let wake = self.queue.peek().map(|Reverse((t, _, _))| *t);
            let action = self.actions.peek().map(|Reverse(s)| s.at);
            let next = match (wake, action) {
                (Some(a), Some(b)) => a.min(b),
                (a, b) => match a.or(b) {
                    Some(t) => t,
                    None => break,
                },
            };
            if next > until {
                break;
            }
            self.step();
        }
        if until > self.time {
            self.time = until;
        }
    }

    /// Runs for `d` of virtual time.
    pub fn run_for(&mut self, d: Duration) {
        let until = self.time + d;
        self.run_until(until);
    }

    /// Pairs `(a, b)` of live nodes where `a` has `b` as an active neighbor but `b` does not
    /// have `a` (transiently normal while requests and disconnects are in flight).
    pub fn asymmetric_links(&self) -> Vec<(NodeId, NodeId)> {
        let mut out = Vec::new();
        for (a, n) in self.nodes.iter().enumerate() {
            let Some(core) = n.core.as_ref() else {
                continue;
            };
            for &b in core.active_view() {
                if self.node(b).is_some_and(|c| !c.is_active(&(a as NodeId))) {
                    out.push((a as NodeId, b));
                }
            }
        }
        out
    }

    /// Sum of the core stats of the live nodes (view sizes summed too).
    pub fn core_stats(&self) -> crate::Stats {
        let mut sum = crate::Stats::default();
        for n in &self.nodes {
            if let Some(c) = n.core.as_ref() {
                add_stats(&mut sum, &c.stats());
            }
        }
        sum
    }

    fn apply(&mut self, action: Action) {
        let now = self.time;
        let n = self.nodes.len() as NodeId;
        match action {
            Action::LinkCheck(peer) => {
                for id in 0..n {
                    if let Some(core) = self.nodes[id as usize].core.as_mut()
                        && core.is_active(&peer)
                    {
                        core.link_down(now, peer);
                        self.flush(id);
                    }
                }
            }
            Action::Remove(peer) => {
                for id in 0..n {
                    if let Some(core) = self.nodes[id as usize].core.as_mut() {
                        core.remove_member(now, peer);
                        self.flush(id);
                    }
                }
            }
            Action::SplitLinks(groups) => {
                for id in 0..n {
                    let g = groups[id as usize];
                    if let Some(core) = self.nodes[id as usize].core.as_mut() {
                        let across: Vec<NodeId> = core
                            .active_view()
                            .copied()
                            .filter(|p| groups[*p as usize] != g)
                            .collect();
                        for p in across {
                            core.link_down(now, p);
                        }
                        self.flush(id);
                    }
                }
            }
            Action::SplitRemove(groups) => {
                for id in 0..n {
                    let g = groups[id as usize];
                    if let Some(core) = self.nodes[id as usize].core.as_mut() {
                        for p in 0..n {
                            if groups[p as usize] != g {
                                core.remove_member(now, p);
                            }
                        }
                        self.flush(id);
                    }
                }
            }
            Action::HealAdd(groups) => {
                let up: Vec<bool> = self.nodes.iter().map(|x| x.core.is_some()).collect();
                let mut order: Vec<NodeId> = (0..n).collect();
                for id in 0..n {
                    order.shuffle(&mut self.rng);
                    let g = groups[id as usize];
                    if let Some(core) = self.nodes[id as usize].core.as_mut() {
                        for &p in &order {
                            if groups[p as usize] != g && up[p as usize] {
                                core.add_member(now, p);
                            }
                        }
                        self.flush(id);
                    }
                }
            }
        }
    }

    fn schedule_action(&mut self, at: Instant, action: Action) {
        self.seq += 1;
        self.actions.push(Reverse(Timed {
            at,
            seq: self.seq,
            item: action,
        }));
    }

    /// Drains the transmits and events of `id`, records deliveries, checks its invariants and
    /// reschedules it.
    fn flush(&mut self, id: NodeId) {
        let seed = self.seed;
        let now = self.time;
        let mut outbox = Vec::new();
        {
            let node = &mut self.nodes[id as usize];
            let Some(core) = node.core.as_mut() else {
                return;
            };
            while let Some(t) = core.poll_transmit() {
                outbox.push(t);
            }
            while let Some(e) = core.poll_event() {
                match &e {
                    Event::Deliver(notice) => {
                        assert!(
                            is_signed(notice),
                            "seed {seed}: node {id} delivered an invalid notice {notice:?}"
                        );
                        let nid = notice.id();
                        if let Some(&i) = self.track_index.get(&nid) {
                            let track = &mut self.tracks[i];
                            let (w, b) = (id as usize / 64, id as usize % 64);
                            assert!(
                                track.seen[w] & (1 << b) == 0,
                                "seed {seed}: node {id} delivered {nid:?} twice"
                            );
                            track.seen[w] |= 1 << b;
                            track.deliveries.push(Delivery {
                                node: id,
                                at: now,
                                hops: core.hops(&nid),
                            });
                            if track.node != id {
                                self.stats.deliveries += 1;
                            }
                        }
                    }
                    Event::Gap { .. } => {
                        self.stats.gaps += 1;
                        if self.record_events {
                            self.events.push((now, id, e));
                        }
                    }
                    Event::Invalid { .. } => {
                        self.stats.invalid += 1;
                        if self.record_events {
                            self.events.push((now, id, e));
                        }
                    }
                    Event::NeighborUp(_) | Event::NeighborDown(_) => {}
                }
            }
            check_bounds(seed, id, core);
        }
        for t in outbox {
            if let Message::Gossip { notice, .. } = &t.msg {
                assert!(
                    is_signed(notice),
                    "seed {seed}: node {id} relayed an invalid notice"
                );
            }
            if let Message::Notices { notices } = &t.msg {
                assert!(
                    notices.iter().all(is_signed),
                    "seed {seed}: node {id} relayed an invalid notice"
                );
            }
            let bytes = message::encode(&t.msg);
            let kind = t.msg.kind() as usize;
            self.stats.messages[kind] += 1;
            self.stats.bytes[kind] += bytes.len() as u64;
            if let Some(trace) = self.trace.as_mut() {
                let dest = &self.nodes[t.to as usize];
                let up = dest.core.is_some() && dest.group == self.nodes[id as usize].group;
                trace(now, id, t.to, &t.msg, up);
            }
            self.deliver_later(id, t.to, bytes);
        }
        self.schedule(id);
    }

    /// Puts `bytes` on the link from `from` to `to`, unless the link model drops them.
    fn deliver_later(&mut self, from: NodeId, to: NodeId, bytes: Vec<u8>) {
        let Some(dest) = self.nodes.get(to as usize) else {
            self.stats.dropped += 1;
            return;
        };
        let lost = dest.core.is_none()
            || dest.group != self.nodes[from as usize].group
            || (self.link.loss > 0.0 && self.rng.gen_bool(self.link.loss.min(1.0)));
        if lost {
            self.stats.dropped += 1;
            return;
        }
        let span = self.link.latency_max.saturating_sub(self.link.latency_min);
        let latency = self.link.latency_min + span.mul_f64(self.rng.r#gen::<f64>());
        let mut at = self.time + latency;
        let last = self.fifo.entry((from, to)).or_insert(at);
        if *last > at {
            at = *last;
        }
        *last = at;
        self.seq += 1;
        let seq = self.seq;
        self.nodes[to as usize].inbox.push(Reverse(Timed {
            at,
            seq,
            item: Inbound { from, bytes },
        }));
        self.wake_at(to, at);
    }

    fn schedule(&mut self, id: NodeId) {
        let node = &self.nodes[id as usize];
        let Some(core) = node.core.as_ref() else {
            return;
        };
        let inbox = node.inbox.peek().map(|Reverse(m)| m.at);
        let next = match (core.poll_timeout(), inbox) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if let Some(t) = next {
            self.wake_at(id, t.max(self.time));
        }
    }

    fn wake_at(&mut self, id: NodeId, t: Instant) {
        let node = &mut self.nodes[id as usize];
        if node.wake.is_none_or(|w| t < w) {
            node.wake = Some(t);
            self.seq += 1;
            self.queue.push(Reverse((t, self.seq, id)));
        }
    }
}

/// Panics unless every table of `core` is within its bound.
fn check_bounds(seed: u64, id: NodeId, core: &Broadcast<NodeId, SimVerify>) {
    assert!(
        core.within_bounds(),
        "seed {seed}: node {id} state out of bounds: {:?}",
        core.queue_lengths()
    );
}

/// Adds every counter of `b` to `a`.
fn add_stats(a: &mut crate::Stats, b: &crate::Stats) {
    a.published += b.published;
    a.delivered += b.delivered;
    a.duplicates += b.duplicates;
    a.late += b.late;
    a.gaps += b.gaps;
    a.skipped += b.skipped;
    a.rejected.invalid += b.rejected.invalid;
    a.rejected.oversized += b.rejected.oversized;
    a.rejected.malformed += b.rejected.malformed;
    a.gossip_sent += b.gossip_sent;
    a.gossip_received += b.gossip_received;
    a.ihave_sent += b.ihave_sent;
    a.ihave_ids_sent += b.ihave_ids_sent;
    a.ihave_ids_received += b.ihave_ids_received;
    a.grafts_sent += b.grafts_sent;
    a.graft_ids_sent += b.graft_ids_sent;
    a.grafts_received += b.grafts_received;
    a.graft_notices_sent += b.graft_notices_sent;
    a.prunes_sent += b.prunes_sent;
    a.prunes_received += b.prunes_received;
    a.optimizations += b.optimizations;
    a.gap_repairs += b.gap_repairs;
    let (n, m) = (&mut a.neighbors, &b.neighbors);
    n.requests += m.requests;
    n.accepted += m.accepted;
    n.refused += m.refused;
    n.timeouts += m.timeouts;
    n.evictions += m.evictions;
    n.rotations += m.rotations;
    n.up += m.up;
    n.down += m.down;
    let (c, d) = (&mut a.catchup, &b.catchup);
    c.clocks_sent += d.clocks_sent;
    c.clocks_received += d.clocks_received;
    c.exchanges += d.exchanges;
    c.first_exchanges += d.first_exchanges;
    c.feeds_named_delta += d.feeds_named_delta;
    c.feeds_named += d.feeds_named;
    c.feeds_named_first += d.feeds_named_first;
    c.notices_sent += d.notices_sent;
    c.bytes += d.bytes;
    a.pulls_sent += b.pulls_sent;
    a.pull_replies += b.pull_replies;
    a.pull_notices_sent += b.pull_notices_sent;
    for k in 0..MessageKind::COUNT {
        a.traffic.messages[k] += b.traffic.messages[k];
        a.traffic.bytes[k] += b.traffic.bytes[k];
    }
    let (v, w) = (&mut a.views, &b.views);
    v.members += w.members;
    v.active += w.active;
    v.eager += w.eager;
    v.lazy += w.lazy;
    v.passive += w.passive;
    v.pending += w.pending;
    let (x, y) = (&mut a.drops, &b.drops);
    x.transmits += y.transmits;
    x.events += y.events;
    x.announcements += y.announcements;
    x.lazy += y.lazy;
    x.graft_answers += y.graft_answers;
    x.held_overflow += y.held_overflow;
    x.members += y.members;
    x.evicted_notices += y.evicted_notices;
    x.evicted_feeds += y.evicted_feeds;
    x.not_neighbor += y.not_neighbor;
}
