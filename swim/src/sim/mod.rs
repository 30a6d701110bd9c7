//! A deterministic simulator of many SWIM cores on virtual time.
//!
//! Each node is a [`Membership<NodeId>`] with an inbox of `(Instant, from, msg)`. A global queue
//! of wake-ups orders the nodes; [`Sim::step`] jumps to the earliest pending delivery or timeout,
//! delivers the messages due, fires the timeout, and routes what the core transmitted through
//! the seeded [`LinkModel`]: latency with jitter, uniform loss, one-way loss between two nodes,
//! partitions between groups, crashed nodes, and slow nodes whose inbound messages wait an extra
//! delay before being processed. Every message is encoded with the real codec (to count bytes),
//! and decoded again when [`Sim::wire_roundtrip`] is set.
//!
//! After every step the simulator checks invariants and panics, naming the seed, when one
//! breaks:
//! - a node's own incarnation never decreases, across restarts too;
//! - a node never has itself in its table (so it never believes itself suspect or dead);
//! - in every node's view, a member's incarnation never decreases, and a member that failed or
//!   left comes back (joined) only with a newer incarnation (checked from events, when
//!   [`Sim::check_views`] is set; it costs memory quadratic in the number of nodes);
//! - every internal queue stays within its configured bound.
//!
//! The module is public (it has no dependency beyond the crate's own) so that the benchmark
//! binary and other crates' tests can drive clusters; it is not meant for production use.

pub mod scenario;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::config::Config;
use crate::message::{self, Address, Message};
use crate::state::{Event, Membership};

/// Identity of a simulated node: its index.
pub type NodeId = u32;

/// A tracer of sent messages: `(now, from, to, message, delivered)`; see [`Sim::trace`].
pub type Trace = Box<dyn FnMut(Instant, NodeId, NodeId, &Message<NodeId>, bool)>;

/// The seeded network model.
#[derive(Debug, Clone, PartialEq)]
pub struct LinkModel {
    /// Smallest one-way latency.
    pub latency_min: Duration,
    /// Largest one-way latency; each message draws uniformly in `[min, max]` (the jitter).
    pub latency_max: Duration,
    /// Probability that any message is lost, `0.0..=1.0`.
    pub loss: f64,
}

impl LinkModel {
    /// 1-5 ms latency, no loss: a LAN.
    pub fn lan() -> Self {
        Self {
            latency_min: Duration::from_millis(1),
            latency_max: Duration::from_millis(5),
            loss: 0.0,
        }
    }
}

/// An event a node emitted, with when and where.
#[derive(Debug, Clone, PartialEq)]
pub struct SimEvent {
    /// Virtual time of emission.
    pub at: Instant,
    /// The node that emitted it.
    pub node: NodeId,
    /// The event.
    pub event: Event<NodeId>,
}

/// Traffic counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SimStats {
    /// Messages sent by live nodes.
    pub messages: u64,
    /// Bytes of those messages (real encoding).
    pub bytes: u64,
    /// Messages dropped by loss, partitions or crashed receivers.
    pub dropped: u64,
    /// Steps taken.
    pub steps: u64,
}

struct Inbound {
    at: Instant,
    seq: u64,
    from: NodeId,
    msg: Message<NodeId>,
}

impl PartialEq for Inbound {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Inbound {}
impl PartialOrd for Inbound {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Inbound {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

struct Node {
    core: Option<Membership<NodeId>>,
    inbox: BinaryHeap<Reverse<Inbound>>,
    wake: Option<Instant>,
    slow: Duration,
    group: u32,
    last_incarnation: u64,
    restarts: u32,
}

/// The simulator. See the module docs.
pub struct Sim {
    seed: u64,
    config: Config,
    /// The link model; may be changed between steps.
    pub link: LinkModel,
    /// Decode every message again after encoding it (slower; checks the codec under load).
    pub wire_roundtrip: bool,
    /// Check the per-view incarnation invariants (memory quadratic in the node count).
    pub check_views: bool,
    /// Keep emitted events for [`Sim::take_events`].
    pub record_events: bool,
    /// Give every node added from now on the address `/sim/{id}`. When false, nodes have no
    /// addresses, as in a simulator that routes by id (the DHT's): the member tables then hold
    /// no address lists at all. Default: true.
    pub addresses: bool,
    /// Traffic counters.
    pub stats: SimStats,
    /// Called for every message a live node sends, after the link model decided its fate:
    /// `(now, from, to, message, delivered)`. For tests that trace how news travelled.
    pub trace: Option<Trace>,
    start: Instant,
    time: Instant,
    rng: StdRng,
    nodes: Vec<Node>,
    addrs: Vec<Arc<[Address]>>,
    queue: BinaryHeap<Reverse<(Instant, u64, NodeId)>>,
    seq: u64,
    one_way_loss: HashMap<(NodeId, NodeId), f64>,
    events: Vec<SimEvent>,
    views: HashMap<(NodeId, NodeId), (u64, bool)>,
    buf: Vec<u8>,
}

impl Sim {
    /// A simulator with no nodes. `config` is every node's config (its `rng_seed` is replaced by
    /// one derived from `seed` and the node). The seed is printed to stderr so that a failing
    /// run can be replayed.
    pub fn new(seed: u64, config: Config, link: LinkModel) -> Self {
        eprintln!("swim sim seed: {seed}");
        // Virtual time starts at an arbitrary real instant; only differences matter.
        let start = Instant::now();
        Self {
            seed,
            config,
            link,
            wire_roundtrip: true,
            check_views: true,
            record_events: true,
            addresses: true,
            stats: SimStats::default(),
            trace: None,
            start,
            time: start,
            rng: StdRng::seed_from_u64(seed),
            nodes: Vec::new(),
            addrs: Vec::new(),
            queue: BinaryHeap::new(),
            seq: 0,
            one_way_loss: HashMap::new(),
            events: Vec::new(),
            views: HashMap::new(),
            buf: Vec::new(),
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

    /// The core of `id`, unless it is crashed.
    pub fn node(&self, id: NodeId) -> Option<&Membership<NodeId>> {
        self.nodes.get(id as usize)?.core.as_ref()
    }

    /// The config shared by the nodes.
    pub fn config(&self) -> &Config {
        &self.config
    }

    fn node_config(&self, id: NodeId, restarts: u32) -> Config {
        let mut c = self.config.clone();
        let mut seed = [0u8; 32];
        seed[..8].copy_from_slice(&self.seed.to_le_bytes());
        seed[8..12].copy_from_slice(&id.to_le_bytes());
        seed[12..16].copy_from_slice(&restarts.to_le_bytes());
        c.rng_seed = Some(seed);
        c
    }

    fn make_core(&self, id: NodeId, incarnation: u64, restarts: u32) -> Membership<NodeId> {
        let addrs = self.addrs[id as usize].to_vec();
        // Invariant: the config was validated by `add_nodes` and only the seed differs.
        Membership::new(
            self.time,
            id,
            addrs,
            incarnation,
            self.node_config(id, restarts),
        )
        .expect("sim config is valid")
    }

    /// Adds `n` nodes that know nobody; returns the first new id.
    ///
    /// # Panics
    /// If the config is invalid (a bug of the caller's test or benchmark).
    pub fn add_nodes(&mut self, n: usize) -> NodeId {
        if let Err(e) = self.config.validate() {
            panic!("invalid sim config: {e}");
        }
        let first = self.nodes.len() as NodeId;
        // One shared empty list, so that address-less nodes cost no allocation each.
        let none: Arc<[Address]> = Arc::from(Vec::new());
        for i in 0..n as NodeId {
            let id = first + i;
            if self.addresses {
                self.addrs
                    .push(vec![Address(format!("/sim/{id}").into_bytes())].into());
            } else {
                self.addrs.push(none.clone());
            }
            let core = self.make_core(id, 0, 0);
            self.nodes.push(Node {
                core: Some(core),
                inbox: BinaryHeap::new(),
                wake: None,
                slow: Duration::ZERO,
                group: 0,
                last_incarnation: 0,
                restarts: 0,
            });
            self.schedule(id);
        }
        first
    }

    /// Adds `n` nodes that all know each other, as a converged cluster would (through
    /// [`Membership::restore`]); returns the first new id.
    pub fn add_converged(&mut self, n: usize) -> NodeId {
        let first = self.add_nodes(n);
        let ids: Vec<NodeId> = (first..first + n as NodeId).collect();
        for &id in &ids {
            let addrs = &self.addrs;
            if let Some(core) = self.nodes[id as usize].core.as_mut() {
                core.restore(ids.iter().map(|&o| (o, addrs[o as usize].clone())));
            }
            if self.check_views {
                for &o in &ids {
                    if o != id {
                        self.views.insert((id, o), (0, false));
                    }
                }
            }
            self.schedule(id);
        }
        first
    }

    /// Makes `id` join through `seeds`.
    pub fn join(&mut self, id: NodeId, seeds: &[NodeId]) {
        let now = self.time;
        if let Some(core) = self.nodes[id as usize].core.as_mut() {
            core.join(now, seeds.iter().copied());
        }
        self.flush(id);
    }

    /// Makes `id` leave gracefully.
    pub fn leave(&mut self, id: NodeId) {
        let now = self.time;
        if let Some(core) = self.nodes[id as usize].core.as_mut() {
            core.leave(now);
        }
        self.flush(id);
    }

    /// Crashes `id`: its state and pending messages are lost; messages to it are dropped.
    pub fn crash(&mut self, id: NodeId) {
        let node = &mut self.nodes[id as usize];
        node.core = None;
        node.inbox.clear();
    }

    /// Whether `id` is running.
    pub fn is_up(&self, id: NodeId) -> bool {
        self.nodes[id as usize].core.is_some()
    }

    /// Restarts a crashed `id` with an empty table and a new incarnation (the virtual seconds
    /// since the start, as a node using its wall clock would), and joins it through `seeds`.
    pub fn restart(&mut self, id: NodeId, seeds: &[NodeId]) {
        let restarts = self.nodes[id as usize].restarts + 1;
        let incarnation = self
            .elapsed()
            .as_secs()
            .max(self.nodes[id as usize].last_incarnation + 1);
        let core = self.make_core(id, incarnation, restarts);
        let node = &mut self.nodes[id as usize];
        node.restarts = restarts;
        node.core = Some(core);
        node.inbox.clear();
        self.join(id, seeds);
    }

    /// Delays every message `id` receives by `delay` before it is processed (a slow node).
    pub fn set_slow(&mut self, id: NodeId, delay: Duration) {
        self.nodes[id as usize].slow = delay;
    }

    /// Extra loss probability on the one-way link `from -> to`.
    pub fn set_one_way_loss(&mut self, from: NodeId, to: NodeId, loss: f64) {
        self.one_way_loss.insert((from, to), loss);
    }

    /// Splits the nodes into groups: messages between different groups are dropped. Nodes not
    /// listed form group 0.
    pub fn partition(&mut self, groups: &[&[NodeId]]) {
        for n in &mut self.nodes {
            n.group = 0;
        }
        for (g, members) in groups.iter().enumerate() {
            for &id in *members {
                self.nodes[id as usize].group = g as u32 + 1;
            }
        }
    }

    /// Removes every partition.
    pub fn heal(&mut self) {
        for n in &mut self.nodes {
            n.group = 0;
        }
    }

    /// Takes the events recorded so far.
    pub fn take_events(&mut self) -> Vec<SimEvent> {
        std::mem::take(&mut self.events)
    }

    /// Runs one step: advances to the earliest pending delivery or timeout and handles it.
    /// Returns false when nothing is pending.
    pub fn step(&mut self) -> bool {
        let Some(Reverse((t, _, id))) = self.queue.pop() else {
            return false;
        };
        self.stats.steps += 1;
        if t > self.time {
            self.time = t;
        }
        let node = &mut self.nodes[id as usize];
        if node.wake == Some(t) {
            node.wake = None;
        }
        let Some(core) = node.core.as_mut() else {
            return true;
        };
        let now = self.time;
        while node.inbox.peek().is_some_and(|Reverse(m)| m.at <= now) {
            // Invariant: `peek` returned an entry just above.
            let Reverse(m) = node.inbox.pop().expect("inbox entry");
            core.handle_message(now, m.from, m.msg);
        }
        if core.poll_timeout().is_some_and(|d| d <= now) {
            core.handle_timeout(now);
        }
        self.flush(id);
        true
    }

    /// Steps until nothing is pending (which a live cluster never reaches: use
    /// [`Sim::drive_bounded`] or [`Sim::run_for`]).
    pub fn drive(&mut self) {
        while self.step() {}
    }

    /// Runs at most `n` steps; returns how many ran.
    pub fn drive_bounded(&mut self, n: usize) -> usize {
        for i in 0..n {
            if !self.step() {
                return i;
            }
        }
        n
    }

    /// Steps until virtual time `until`, then sets the clock to it.
    pub fn run_until(&mut self, until: Instant) {
        while self
            .queue
            .peek()
            .is_some_and(|Reverse((t, _, _))| *t <= until)
        {
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

    /// Runs until `cond` holds (checked every `check_every` of virtual time) or `limit` passed;
    /// returns the virtual time it took, or `None`.
    pub fn run_until_cond(
        &mut self,
        limit: Duration,
        check_every: Duration,
        mut cond: impl FnMut(&Sim) -> bool,
    ) -> Option<Duration> {
        let start = self.time;
        loop {
            if cond(self) {
                return Some(self.time - start);
            }
            if self.time - start >= limit {
                return None;
            }
            self.run_for(check_every);
        }
    }

    /// Drains the transmits and events of `id`, checks its invariants and reschedules it.
    fn flush(&mut self, id: NodeId) {
        let mut outbox = Vec::new();
        let mut events = Vec::new();
        {
            let node = &mut self.nodes[id as usize];
            let Some(core) = node.core.as_mut() else {
                return;
            };
            while let Some(t) = core.poll_transmit() {
                outbox.push(t);
            }
            while let Some(e) = core.poll_event() {
                events.push(e);
            }
        }
        self.check_node(id);
        for e in events {
            if self.check_views {
                self.check_event(id, &e);
            }
            if self.record_events {
                self.events.push(SimEvent {
                    at: self.time,
                    node: id,
                    event: e,
                });
            }
        }
        for t in outbox {
            self.route(id, t.to, t.msg);
        }
        self.schedule(id);
    }

    fn route(&mut self, from: NodeId, to: NodeId, msg: Message<NodeId>) {
        self.buf.clear();
        if let Err(e) = message::encode(&msg, self.config.max_message_bytes.get(), &mut self.buf) {
            panic!(
                "seed {}: node {from} produced an unencodable message: {e}",
                self.seed
            );
        }
        self.stats.messages += 1;
        self.stats.bytes += self.buf.len() as u64;
        let msg = if self.wire_roundtrip {
            match message::decode::<NodeId>(&self.buf, self.config.max_message_bytes.get()) {
                Ok(m) if m == msg => m,
                other => panic!(
                    "seed {}: codec roundtrip failed for {msg:?}: {other:?}",
                    self.seed
                ),
            }
        } else {
            msg
        };
        let Some(dest) = self.nodes.get(to as usize) else {
            self.stats.dropped += 1;
            return;
        };
        let loss = self.link.loss + self.one_way_loss.get(&(from, to)).copied().unwrap_or(0.0);
        let lost = dest.core.is_none()
            || dest.group != self.nodes[from as usize].group
            || (loss > 0.0 && self.rng.gen_bool(loss.min(1.0)));
        if let Some(trace) = self.trace.as_mut() {
            trace(self.time, from, to, &msg, !lost);
        }
        if lost {
            self.stats.dropped += 1;
            return;
        }
        let span = self.link.latency_max.saturating_sub(self.link.latency_min);
        let latency = self.link.latency_min + span.mul_f64(self.rng.r#gen::<f64>());
        let at = self.time + latency + dest.slow;
        self.seq += 1;
        let seq = self.seq;
        self.nodes[to as usize]
            .inbox
            .push(Reverse(Inbound { at, seq, from, msg }));
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

    fn check_node(&mut self, id: NodeId) {
        let seed = self.seed;
        let node = &mut self.nodes[id as usize];
        let Some(core) = node.core.as_ref() else {
            return;
        };
        let inc = core.incarnation();
        assert!(
            inc >= node.last_incarnation,
            "seed {seed}: node {id} incarnation went from {} to {inc}",
            node.last_incarnation
        );
        node.last_incarnation = inc;
        assert!(
            core.member(&id).is_none(),
            "seed {seed}: node {id} has itself in its table"
        );
        let q = core.queue_lengths();
        let c = core.config();
        let max_members = c.max_members.get();
        let ok = q.members <= max_members
            && q.transmits <= c.max_transmit_queue.get()
            && q.events <= c.max_event_queue.get()
            && q.broadcasts <= max_members + 1
            && q.relays <= c.max_relays.get()
            && q.probe_order <= max_members
            && q.suspicions <= max_members
            && q.tombstones <= 2 * max_members + 1;
        assert!(ok, "seed {seed}: node {id} state out of bounds: {q:?}");
    }

    fn check_event(&mut self, observer: NodeId, e: &Event<NodeId>) {
        let (member, inc, gone, joined) = match e {
            Event::Joined {
                member,
                incarnation,
                ..
            } => (*member, *incarnation, false, true),
            Event::Suspected {
                member,
                incarnation,
                ..
            }
            | Event::Refuted {
                member,
                incarnation,
                ..
            } => (*member, *incarnation, false, false),
            Event::Failed {
                member,
                incarnation,
                ..
            }
            | Event::Left {
                member,
                incarnation,
                ..
            } => (*member, *incarnation, true, false),
            Event::JoinFinished { .. } | Event::LeaveFinished { .. } => return,
        };
        let seed = self.seed;
        if let Some(&(prev, was_gone)) = self.views.get(&(observer, member)) {
            assert!(
                inc >= prev,
                "seed {seed}: node {observer} saw member {member}'s incarnation go from {prev} \
                 to {inc} ({e:?})"
            );
            assert!(
                !(joined && was_gone && inc <= prev),
                "seed {seed}: node {observer} revived member {member} at incarnation {inc} \
                 after it was gone at {prev}"
            );
        }
        self.views.insert((observer, member), (inc, gone));
    }
}

/// Percentile (`0.0..=1.0`, nearest rank) of `values`, which it sorts; `None` when empty.
pub fn percentile(values: &mut [f64], p: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(|a, b| a.total_cmp(b));
    let rank = ((p * values.len() as f64).ceil() as usize).clamp(1, values.len());
    Some(values[rank - 1])
}
