//! A deterministic simulator of many DHT cores ([`crate::core`]) on virtual time.
//!
//! Each node is a [`Core<SimPeer, SimChecks>`] with a disk of its own. One queue of timed
//! deliveries drives them all: [`Sim::step`] takes the earliest, hands it to its node (a SWIM
//! message, a request, an answer, the end of a gate exchange, a commit, a deadline) and carries
//! out what the node asked for, through SWIM's seeded link model ([`LinkModel`]: latency with
//! jitter, loss) plus partitions and crashes. Every message goes through the real codecs
//! (SWIM's, and [`crate::wire`]), so sizes and bounds are those of the wire.
//!
//! What the real network does around the core is modelled so:
//!
//! - **Gate.** When a node gets a message from a peer it has not admitted, the peers' gate
//!   exchange runs as it would on the new connection: one latency later each side is shown the
//!   other's proof ([`Core::handle_presented`]) and checks it in its turn ([`SimChecks`]: a
//!   keyed hash of the id stands in for the scrypt puzzle, so a cheater's proof fails
//!   everywhere; each check takes [`SimConfig::check_time`]). A dial does the same, or fails if
//!   the peer is down or cut off.
//! - **Disk.** A write is applied [`SimConfig::disk_latency`] after it was asked for, and only
//!   then reported committed; a crash loses what was not committed, and deferred writes
//!   ([`Durability::Deferred`]) not yet followed by a flushed one. A restarted node starts from
//!   its disk. Writes can be made to fail ([`Sim::fail_writes`]).
//! - **Clocks.** Every node reads the same virtual monotonic time; its Unix time can be set off
//!   ([`Sim::set_clock_offset`]) to model a clock stepped back across a restart.
//!
//! After every step the simulator checks invariants and panics, naming the seed, when one
//! breaks: state stays within its bounds; no node holds an unadmitted
//! or dishonest peer as a live member or in its routing table; and, in the checks
//! [`Sim::check_records`] runs on demand, every acknowledged record is held by one of its closest
//! live nodes and every record held is valid. The full admission check costs a scan of the
//! node's membership, so large runs sample it ([`SimConfig::sample_every`]).

pub mod lookups;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;
use shoal_pow::{NodeKey, ProofError};
use shoal_swim::sim::LinkModel;
use shoal_swim::{Address, State};

use crate::config::Config;
use crate::core::{
    Action, Checks, Command, Core, Durability, InboundId, KeyHash, Known, Meta, OpId, Peer, Reply,
    RequestFailure, RequestId, Restored, WriteId, WriteOp, lookup,
};
use crate::lockstep::SignedNotice;
use crate::record::SignedRecord;
use crate::wire::{self, MAX_REQUEST_LEN, MAX_RESPONSE_LEN, Request, Response};

/// A simulated node's identity: its index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SimPeer(pub u32);

impl Peer for SimPeer {
    fn to_bytes(&self) -> Vec<u8> {
        self.0.to_be_bytes().to_vec()
    }

    fn from_bytes(bytes: &[u8]) -> Option<Self> {
        Some(Self(u32::from_be_bytes(bytes.try_into().ok()?)))
    }
}

/// The proof a simulated node presents: a keyed hash of its id for an honest node, anything
/// else for a cheater. Stands in for the scrypt puzzle (which no simulation of thousands of
/// nodes could afford): a proof is tied to an identity and cannot be made for another.
pub fn proof_of(secret: u64, peer: SimPeer) -> [u8; 8] {
    splitmix(secret ^ u64::from(peer.0)).to_be_bytes()
}

/// The signing key of a simulated node: derived from the same secret as its proof, so the
/// checks can tell whether a receipt was signed by the peer that sent it.
pub fn key_of(secret: u64, peer: SimPeer) -> NodeKey {
    let mut seed = [0xee; 32];
    seed[..8].copy_from_slice(&splitmix(secret ^ 0x6b65_7973).to_le_bytes());
    seed[8..12].copy_from_slice(&peer.0.to_le_bytes());
    NodeKey::from_seed(seed)
}

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The checks of a simulated node: proofs against [`proof_of`], an optional rate limit on
/// checks (as the real verifier's), and every address reachable.
#[derive(Debug, Clone)]
pub struct SimChecks {
    secret: u64,
    /// Checks allowed per second and the burst, if limited.
    pub rate: Option<(u32, u32)>,
    tokens: f64,
    last: Option<Instant>,
    /// Checks made.
    pub checks: u64,
    /// Checks refused by the rate limit.
    pub rate_limited: u64,
}

impl SimChecks {
    /// Checks against proofs made with `secret`, unlimited.
    pub fn new(secret: u64) -> Self {
        Self {
            secret,
            rate: None,
            tokens: 0.0,
            last: None,
            checks: 0,
            rate_limited: 0,
        }
    }
}

impl Checks<SimPeer> for SimChecks {
    type Proof = ();

    fn verify(&mut self, now: Instant, peer: &SimPeer, bytes: &[u8]) -> Result<(), ProofError> {
        if let Some((per_sec, burst)) = self.rate {
            let elapsed = self.last.map_or(f64::from(burst), |l| {
                now.saturating_duration_since(l).as_secs_f64() * f64::from(per_sec)
            });
            self.tokens = (self.tokens + elapsed).min(f64::from(burst));
            self.last = Some(now);
            if self.tokens < 1.0 {
                self.rate_limited += 1;
                return Err(ProofError::RateLimited);
            }
            self.tokens -= 1.0;
        }
        self.checks += 1;
        if bytes == proof_of(self.secret, *peer) {
            Ok(())
        } else {
            Err(ProofError::WrongKey)
        }
    }

    /// The simulator keeps no cache of checked proofs: every proof needs its check, so every
    /// relayed one goes through [`Action::Verify`] and [`SimConfig::check_time`].
    fn precheck(&mut self, _peer: &SimPeer, _bytes: &[u8]) -> Result<Option<()>, ProofError> {
        Ok(None)
    }

    fn proof_bytes(&self, peer: &SimPeer, _proof: &()) -> Vec<u8> {
        proof_of(self.secret, *peer).to_vec()
    }

    fn reachable(&self, _ours: &[Address], _theirs: &[Address]) -> bool {
        true
    }

    fn signed_by(&self, peer: &SimPeer, key: &shoal_pow::PublicKey) -> bool {
        key_of(self.secret, *peer).public() == *key
    }
}

/// How a simulation runs.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// Every node's configuration (its `rng_seed` is replaced by one derived from the seed and
    /// the node).
    pub dht: Config,
    /// Latency, jitter and loss of every link.
    pub link: LinkModel,
    /// How long a write takes to be durable.
    pub disk_latency: Duration,
    /// How long a dial to a peer that is cut off takes to fail.
    pub dial_timeout: Duration,
    /// How long the check of a relayed identity proof takes ([`Action::Verify`]; the node
    /// goes on meanwhile, as its evaluation runs off the protocol loop).
    pub check_time: Duration,
    /// `None`: the full admission check of the stepping node runs after every step. `Some(d)`:
    /// it runs on a sample of nodes every `d` of virtual time (large runs).
    pub sample_every: Option<Duration>,
    /// Nodes checked at each sample.
    pub sample_size: usize,
    /// How long a node takes to handle each message that arrives, one at a time in order of
    /// arrival; `None` (the default) handles everything at once. With it, a node flooded with
    /// work queues it, and what waits behind is late by as much.
    pub service: Option<ServiceTimes>,
}

/// What handling one message costs a node ([`SimConfig::service`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServiceTimes {
    /// A replica put or copy: the record's signature and stamp checked, a receipt signed.
    pub replica_put: Duration,
    /// A notice checked (signature and stamp), on top of [`message`](Self::message): each
    /// notice an announce request or a broadcast message carries.
    pub notice: Duration,
    /// Any other message.
    pub message: Duration,
}

impl ServiceTimes {
    /// What handling the DHT request `bytes` costs.
    fn request(&self, bytes: &[u8]) -> Duration {
        match wire::decode::<Request>(bytes, MAX_REQUEST_LEN) {
            Ok(r) if r.is_put() => self.replica_put,
            Ok(Request::Announce(_)) => self.message + self.notice,
            _ => self.message,
        }
    }

    /// What handling the broadcast message `bytes` costs.
    fn broadcast(&self, bytes: &[u8], limits: &shoal_broadcast::message::Limits) -> Duration {
        use shoal_broadcast::Message;
        let notices = match shoal_broadcast::message::decode(bytes, limits) {
            Ok(Message::Gossip { .. }) => 1,
            Ok(Message::Notices { notices }) => notices.len() as u32,
            _ => 0,
        };
        self.message + self.notice * notices
    }
}

impl SimConfig {
    /// Defaults for tests: [`Config::local`] with SWIM's LAN timing, LAN links, a 1 ms disk,
    /// full checks every step.
    pub fn local() -> Self {
        Self {
            dht: Config::local(),
            link: LinkModel::lan(),
            disk_latency: Duration::from_millis(1),
            dial_timeout: Duration::from_secs(1),
            check_time: Duration::from_millis(1),
            sample_every: None,
            sample_size: 0,
            service: None,
        }
    }
}

/// Traffic counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SimStats {
    /// SWIM messages sent by live nodes, and their bytes.
    pub swim_messages: u64,
    /// Bytes of SWIM messages.
    pub swim_bytes: u64,
    /// Broadcast messages sent by live nodes.
    pub broadcast_messages: u64,
    /// Bytes of broadcast messages.
    pub broadcast_bytes: u64,
    /// DHT requests and answers sent by live nodes.
    pub dht_messages: u64,
    /// Bytes of DHT requests and answers.
    pub dht_bytes: u64,
    /// Messages dropped by loss, partitions or crashed receivers.
    pub dropped: u64,
    /// Gate exchanges run.
    pub gates: u64,
    /// Writes committed, and failed.
    pub writes: u64,
    /// Writes failed on purpose.
    pub failed_writes: u64,
    /// Steps taken.
    pub steps: u64,
}

/// A command's answer, with when it was asked and answered.
#[derive(Debug)]
pub struct Answered {
    /// When the command was issued.
    pub asked: Instant,
    /// When its reply came.
    pub at: Instant,
    /// The reply.
    pub reply: Reply<SimPeer>,
}

/// A node's disk.
#[derive(Debug, Default, Clone)]
struct Disk {
    records: BTreeMap<Vec<u8>, Vec<u8>>,
    notices: BTreeMap<(Vec<u8>, [u8; 32]), Vec<u8>>,
    snapshot: Vec<(SimPeer, Vec<Address>)>,
    meta: Option<Meta>,
}

struct Node {
    core: Option<Core<SimPeer, SimChecks>>,
    key: NodeKey,
    disk: Disk,
    cheater: bool,
    group: u32,
    clock_offset: i64,
    /// Counts starts: a commit reported to an earlier start is lost with its crash.
    generation: u32,
    /// Deferred writes reported but not yet on the disk: a flushed write puts them there
    /// first; a crash loses them.
    unflushed: Vec<Vec<WriteOp<SimPeer>>>,
    fail_writes: u32,
    wake: Option<Instant>,
    /// The asker of each request being served, its id (`None`: told, no answer), and for a
    /// lookup or a get, its target (for an adversary's answer).
    inbound: HashMap<InboundId, Inbound>,
    next_inbound: u64,
    issued: HashMap<OpId, Instant>,
    answers: HashMap<OpId, Answered>,
    /// The notices delivered to this node's subscribers ([`Action::Notice`]), in order.
    delivered: Vec<SignedNotice>,
    /// When each of [`delivered`](Self::delivered) was.
    delivered_at: Vec<Instant>,
    /// What this node does against the others, if it is malicious.
    adversary: Option<Adversary>,
    /// Until when it is busy handling what arrived ([`SimConfig::service`]).
    busy_until: Option<Instant>,
    /// How long it spent handling messages in all.
    busy_total: Duration,
    /// A [`Adversary::Stale`] node's first copy of each record it was sent, by key.
    first_copies: HashMap<Vec<u8>, Vec<u8>>,
}

/// What a malicious node does. It paid for a valid identity, is admitted like any node and runs
/// the honest core; the simulator rewrites its answers on their way out, so the attack is
/// exactly what peers see on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Adversary {
    /// Answers lookups and gets only with colluders (the eclipse nodes closest to the target),
    /// never with a record.
    Eclipse,
    /// Accepts stores (and acknowledges them) but serves nothing: its get answers carry neither
    /// a record nor peers.
    Drop,
    /// Serves the first copy it was sent of each record, however many newer ones came since.
    Stale,
}

/// A request being served: its asker, its id (`None`: told, no answer), and for a lookup or a
/// get, its target.
type Inbound = (SimPeer, Option<RequestId>, Option<Vec<u8>>);

/// Which counters a message adds to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Traffic {
    Dht,
    Swim,
    Broadcast,
}

/// Something to hand a node at a time.
enum Delivery {
    Wake(u32),
    Swim {
        from: u32,
        to: u32,
        bytes: Vec<u8>,
    },
    Broadcast {
        from: u32,
        to: u32,
        bytes: Vec<u8>,
    },
    /// `id` is `None` for a told request: nobody waits for its answer.
    Request {
        from: u32,
        to: u32,
        id: Option<RequestId>,
        bytes: Vec<u8>,
    },
    Response {
        to: u32,
        id: RequestId,
        generation: u32,
        bytes: Vec<u8>,
    },
    Failure {
        to: u32,
        id: RequestId,
        generation: u32,
    },
    Gate {
        at: u32,
        peer: u32,
    },
    Checked {
        at: u32,
        generation: u32,
        peer: u32,
        proof: Vec<u8>,
    },
    DialFailed {
        at: u32,
        peer: u32,
    },
    Committed {
        node: u32,
        generation: u32,
        id: WriteId,
        ops: Vec<WriteOp<SimPeer>>,
        durability: Durability,
    },
}

struct Scheduled {
    at: Instant,
    seq: u64,
    delivery: Delivery,
    /// Whether its handling was queued already ([`SimConfig::service`]).
    queued: bool,
}

impl PartialEq for Scheduled {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Scheduled {}
impl PartialOrd for Scheduled {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scheduled {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(other.at, other.seq))
    }
}

/// Unix time at the start of every simulation (a fixed date, so runs replay exactly).
pub const START_UNIX: u64 = 1_795_000_000;

/// The simulator. See the module docs.
pub struct Sim {
    seed: u64,
    config: SimConfig,
    secret: u64,
    start: Instant,
    time: Instant,
    rng: StdRng,
    nodes: Vec<Node>,
    queue: BinaryHeap<Reverse<Scheduled>>,
    seq: u64,
    /// Gate exchanges under way, so a burst of messages runs one.
    gating: HashSet<(u32, u32)>,
    /// Acknowledged records: key to the highest sequence a put was acknowledged with.
    acked: HashMap<Vec<u8>, u64>,
    next_sample: Option<Instant>,
    /// Traffic counters.
    pub stats: SimStats,
}

impl Sim {
    /// A simulator with no nodes. The seed is printed to stderr so a failing run can be
    /// replayed.
    pub fn new(seed: u64, config: SimConfig) -> Self {
        eprintln!("dht sim seed: {seed}");
        // Virtual time starts at an arbitrary real instant; only differences matter.
        let start = Instant::now();
        Self {
            seed,
            secret: splitmix(seed ^ 0x5eed),
            start,
            time: start,
            rng: StdRng::seed_from_u64(seed),
            nodes: Vec::new(),
            queue: BinaryHeap::new(),
            seq: 0,
            gating: HashSet::new(),
            acked: HashMap::new(),
            next_sample: config.sample_every.map(|d| start + d),
            stats: SimStats::default(),
            config,
        }
    }

    /// The most time one node spent handling messages so far ([`SimConfig::service`]), in
    /// seconds: the busiest node's load, over the run's length.
    pub fn busiest(&self) -> f64 {
        self.nodes
            .iter()
            .map(|n| n.busy_total.as_secs_f64())
            .fold(0.0, f64::max)
    }

    /// The seed.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// Node `id`'s signing key (see [`key_of`]).
    pub fn node_key(&self, id: u32) -> NodeKey {
        self.nodes[id as usize].key.clone()
    }

    /// Current virtual time.
    pub fn now(&self) -> Instant {
        self.time
    }

    /// Virtual time elapsed since the start.
    pub fn elapsed(&self) -> Duration {
        self.time - self.start
    }

    /// Nodes ever added.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether no node was added.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The configuration.
    pub fn config(&self) -> &SimConfig {
        &self.config
    }

    /// The configuration, to change the links between steps (the nodes' own configuration is
    /// read when a node starts).
    pub fn config_mut(&mut self) -> &mut SimConfig {
        &mut self.config
    }

    /// The core of `id`, unless it is down.
    pub fn node(&self, id: u32) -> Option<&Core<SimPeer, SimChecks>> {
        self.nodes.get(id as usize)?.core.as_ref()
    }

    /// The routing snapshot on `id`'s disk: the members it would rejoin through.
    pub fn snapshot_on_disk(&self, id: u32) -> &[(SimPeer, Vec<Address>)] {
        &self.nodes[id as usize].disk.snapshot
    }

    /// Whether `id`'s disk holds a record under `key` (what a restart would find).
    pub fn on_disk(&self, id: u32, key: &[u8]) -> bool {
        self.nodes
            .get(id as usize)
            .is_some_and(|n| n.disk.records.contains_key(key))
    }

    /// The core of `id` to change it (a test's fault injection), unless it is down.
    pub fn node_mut(&mut self, id: u32) -> Option<&mut Core<SimPeer, SimChecks>> {
        self.nodes.get_mut(id as usize)?.core.as_mut()
    }

    /// Whether `id` runs.
    pub fn is_up(&self, id: u32) -> bool {
        self.nodes[id as usize].core.is_some()
    }

    /// Whether `id` presents an invalid proof.
    pub fn is_cheater(&self, id: u32) -> bool {
        self.nodes[id as usize].cheater
    }

    /// Makes `id` malicious (or honest again with `None`) from now on.
    pub fn set_adversary(&mut self, id: u32, adversary: Option<Adversary>) {
        self.nodes[id as usize].adversary = adversary;
    }

    /// What `id` does against the others, if it is malicious.
    pub fn adversary(&self, id: u32) -> Option<Adversary> {
        self.nodes[id as usize].adversary
    }

    /// The ids of the honest nodes that run (nodes with a valid proof that act against the
    /// others, [`Sim::set_adversary`], count as honest here: see [`Sim::live_benign`]).
    pub fn live_honest(&self) -> Vec<u32> {
        (0..self.nodes.len() as u32)
            .filter(|&i| self.is_up(i) && !self.is_cheater(i))
            .collect()
    }

    /// The Unix time node `id` reads now.
    pub fn unix(&self, id: u32) -> u64 {
        let base = START_UNIX + self.elapsed().as_secs();
        base.saturating_add_signed(self.nodes[id as usize].clock_offset)
    }

    fn node_config(&self, id: u32, generation: u32) -> Config {
        let mut c = self.config.dht.clone();
        let mut seed = [0u8; 32];
        seed[..8].copy_from_slice(&self.seed.to_le_bytes());
        seed[8..12].copy_from_slice(&id.to_le_bytes());
        seed[12..16].copy_from_slice(&generation.to_le_bytes());
        c.rng_seed = Some(seed);
        c
    }

    fn make_core(&self, id: u32) -> Core<SimPeer, SimChecks> {
        let node = &self.nodes[id as usize];
        let restored = Restored {
            records: node.disk.records.clone().into_iter().collect(),
            notices: node.disk.notices.values().cloned().collect(),
            snapshot: node.disk.snapshot.clone(),
            meta: node.disk.meta,
        };
        let config = self.node_config(id, node.generation);
        // Invariant: the config was validated when the first node was added.
        Core::new(
            self.time,
            self.unix(id),
            SimPeer(id),
            node.key.clone(),
            SimChecks::new(self.secret),
            config,
            true,
            restored,
        )
        .expect("sim config is valid")
    }

    /// Adds `n` nodes that know nobody (`cheaters` of them present invalid proofs); returns the
    /// first new id.
    ///
    /// # Panics
    /// If the config is invalid (a bug of the caller's test or benchmark).
    pub fn add_nodes(&mut self, n: usize, cheaters: usize) -> u32 {
        if let Err(e) = self.config.dht.validate() {
            panic!("invalid sim config: {e}");
        }
        let first = self.nodes.len() as u32;
        for i in 0..n {
            let id = first + i as u32;
            self.nodes.push(Node {
                core: None,
                key: key_of(self.secret, SimPeer(id)),
                disk: Disk::default(),
                cheater: i >= n - cheaters.min(n),
                group: 0,
                clock_offset: 0,
                generation: 0,
                unflushed: Vec::new(),
                fail_writes: 0,
                wake: None,
                inbound: HashMap::new(),
                next_inbound: 0,
                issued: HashMap::new(),
                answers: HashMap::new(),
                delivered: Vec::new(),
                delivered_at: Vec::new(),
                adversary: None,
                busy_until: None,
                busy_total: Duration::ZERO,
                first_copies: HashMap::new(),
            });
            let core = self.make_core(id);
            self.nodes[id as usize].core = Some(core);
            self.flush(id);
        }
        first
    }

    /// Adds `n` honest nodes that all know and admitted each other, each at its incarnation, as a
    /// converged network would ([`Core::bootstrap`]); returns the first new id.
    pub fn add_converged(&mut self, n: usize) -> u32 {
        let first = self.add_nodes(n, 0);
        let ids: Vec<u32> = (first..first + n as u32).collect();
        let secret = self.secret;
        let now = self.time;
        // Each at the incarnation it runs with, so its first messages are not news.
        let incarnations: Vec<u64> = ids
            .iter()
            .map(|&o| self.node(o).map_or(0, |c| c.membership().incarnation()))
            .collect();
        for &id in &ids {
            let unix = self.unix(id);
            let members = ids
                .iter()
                .zip(&incarnations)
                .filter(|(o, _)| **o != id)
                .map(|(&o, &incarnation)| Known {
                    peer: SimPeer(o),
                    addrs: Vec::new(),
                    proof: proof_of(secret, SimPeer(o)).to_vec(),
                    incarnation,
                });
            if let Some(core) = self.nodes[id as usize].core.as_mut() {
                core.bootstrap(now, unix, members);
            }
            self.flush(id);
        }
        first
    }

    fn own_proof(&self, id: u32) -> Vec<u8> {
        let mut proof = proof_of(self.secret, SimPeer(id));
        if self.nodes[id as usize].cheater {
            proof[0] ^= 1;
        }
        proof.to_vec()
    }

    /// Issues `command` at node `id`; its answer is kept for [`Sim::answer`].
    pub fn command(&mut self, id: u32, command: Command<SimPeer>) -> Option<OpId> {
        let now = self.time;
        let unix = self.unix(id);
        let node = &mut self.nodes[id as usize];
        let core = node.core.as_mut()?;
        let op = core.handle_command(now, unix, command);
        node.issued.insert(op, now);
        self.flush(id);
        Some(op)
    }

    /// Makes `id` join through `seeds`.
    pub fn join(&mut self, id: u32, seeds: &[u32]) -> Option<OpId> {
        let seeds = seeds.iter().map(|&s| (SimPeer(s), Vec::new())).collect();
        self.command(id, Command::Join(seeds))
    }

    /// The notices node `id` handed its subscribers, in order (a restart keeps them: they
    /// stand for what its clients saw).
    pub fn delivered(&self, id: u32) -> &[SignedNotice] {
        &self.nodes[id as usize].delivered
    }

    /// When each notice of [`delivered`](Self::delivered) was delivered.
    pub fn delivered_at(&self, id: u32) -> &[Instant] {
        &self.nodes[id as usize].delivered_at
    }

    /// Forgets the notices delivered so far (a long flood run would hold them all).
    pub fn forget_delivered(&mut self) {
        for node in &mut self.nodes {
            node.delivered.clear();
            node.delivered_at.clear();
        }
    }

    /// Takes the answer to `op` at `id`, if it came.
    pub fn answer(&mut self, id: u32, op: OpId) -> Option<Answered> {
        self.nodes[id as usize].answers.remove(&op)
    }

    /// Runs until `op` at `id` is answered or `limit` of virtual time passed.
    pub fn wait(&mut self, id: u32, op: OpId, limit: Duration) -> Option<Answered> {
        let until = self.time + limit;
        loop {
            if let Some(a) = self.answer(id, op) {
                return Some(a);
            }
            if self.time >= until || !self.step_until(until) {
                return self.answer(id, op);
            }
        }
    }

    /// Crashes `id`: its state and uncommitted writes are lost; messages to it are dropped.
    pub fn crash(&mut self, id: u32) {
        let node = &mut self.nodes[id as usize];
        node.core = None;
        node.wake = None;
        node.inbound.clear();
        node.issued.clear();
        node.unflushed.clear();
        node.generation += 1;
        node.busy_until = None;
    }

    /// Restarts a crashed `id` from its disk.
    pub fn restart(&mut self, id: u32) {
        if self.is_up(id) {
            return;
        }
        let core = self.make_core(id);
        self.nodes[id as usize].core = Some(core);
        self.flush(id);
    }

    /// Sets `id`'s Unix clock off by `seconds` (negative: behind).
    pub fn set_clock_offset(&mut self, id: u32, seconds: i64) {
        self.nodes[id as usize].clock_offset = seconds;
    }

    /// Makes the next `n` writes of `id` fail.
    pub fn fail_writes(&mut self, id: u32, n: u32) {
        self.nodes[id as usize].fail_writes = n;
    }

    /// Splits the nodes into groups: messages between different groups are dropped. Nodes not
    /// listed form group 0.
    pub fn partition(&mut self, groups: &[&[u32]]) {
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

    /// Deliveries scheduled and not made yet.
    pub fn pending(&self) -> usize {
        self.queue.len()
    }

    /// The records acknowledged so far: key to the highest acknowledged sequence.
    pub fn acked(&self) -> &HashMap<Vec<u8>, u64> {
        &self.acked
    }

    // ----- running -----

    /// Runs one step; false when nothing is pending.
    pub fn step(&mut self) -> bool {
        let Some(Reverse(s)) = self.queue.pop() else {
            return false;
        };
        self.stats.steps += 1;
        if s.at > self.time {
            self.time = s.at;
        }
        if !s.queued
            && let Some(start) = self.queue_for_service(&s)
            && start > s.at
        {
            self.seq += 1;
            self.queue.push(Reverse(Scheduled {
                at: start,
                seq: self.seq,
                delivery: s.delivery,
                queued: true,
            }));
            return true;
        }
        let node = self.deliver(s.at, s.delivery);
        if let Some(id) = node {
            self.flush(id);
            self.check_node(id);
        }
        if let Some(at) = self.next_sample
            && self.time >= at
        {
            self.next_sample = self.config.sample_every.map(|d| self.time + d);
            self.check_sample();
        }
        true
    }

    /// Steps while the next delivery is due by `until`; false if nothing is pending.
    fn step_until(&mut self, until: Instant) -> bool {
        match self.queue.peek() {
            Some(Reverse(s)) if s.at <= until => self.step(),
            Some(_) => {
                self.time = until;
                true
            }
            None => false,
        }
    }

    /// Steps until virtual time `until`, then sets the clock to it.
    pub fn run_until(&mut self, until: Instant) {
        while self.queue.peek().is_some_and(|Reverse(s)| s.at <= until) {
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

    /// Runs until `cond` holds (checked every `check_every`) or `limit` passed; returns the time
    /// it took.
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

    /// Hands a delivery to its node; returns the node to flush.
    fn deliver(&mut self, at: Instant, delivery: Delivery) -> Option<u32> {
        let now = self.time;
        match delivery {
            Delivery::Wake(id) => {
                let node = &mut self.nodes[id as usize];
                if node.wake == Some(at) {
                    node.wake = None;
                }
                let core = node.core.as_mut()?;
                if core.poll_timeout().is_some_and(|t| t <= now) {
                    let unix = self.unix(id);
                    self.nodes[id as usize]
                        .core
                        .as_mut()?
                        .handle_timeout(now, unix);
                }
                Some(id)
            }
            Delivery::Swim { from, to, bytes } => {
                self.nodes[to as usize].core.as_ref()?;
                self.gate_if_needed(to, from);
                let max = self.config.dht.swim.max_message_bytes.get();
                let msg = shoal_swim::message::decode::<SimPeer>(&bytes, max).ok()?;
                let unix = self.unix(to);
                self.nodes[to as usize]
                    .core
                    .as_mut()?
                    .handle_swim(now, unix, SimPeer(from), msg);
                Some(to)
            }
            Delivery::Broadcast { from, to, bytes } => {
                self.nodes[to as usize].core.as_ref()?;
                let limits = self.config.dht.broadcast.limits();
                let msg = shoal_broadcast::message::decode(&bytes, &limits).ok()?;
                let unix = self.unix(to);
                self.nodes[to as usize].core.as_mut()?.handle_broadcast(
                    now,
                    unix,
                    SimPeer(from),
                    msg,
                );
                Some(to)
            }
            Delivery::Request {
                from,
                to,
                id,
                bytes,
            } => {
                if self.nodes[to as usize].core.is_none() {
                    // Connection refused: the asker learns it one latency later.
                    let id = id?;
                    let generation = self.nodes[from as usize].generation;
                    let latency = self.latency();
                    self.schedule(
                        now + latency,
                        Delivery::Failure {
                            to: from,
                            id,
                            generation,
                        },
                    );
                    return None;
                }
                self.gate_if_needed(to, from);
                let request: Request = wire::decode(&bytes, MAX_REQUEST_LEN).ok()?;
                let unix = self.unix(to);
                let node = &mut self.nodes[to as usize];
                node.next_inbound += 1;
                let inbound = InboundId(node.next_inbound);
                let target = match &request {
                    Request::FindNode(t) | Request::GetRecord(t) | Request::Prove(t) => {
                        Some(t.to_vec())
                    }
                    Request::PutRecord(envelope) | Request::PutCopy(envelope)
                        if node.adversary == Some(Adversary::Stale) =>
                    {
                        if let Ok(r) = SignedRecord::decode(envelope) {
                            let key = r.record().key.clone();
                            node.first_copies.entry(key).or_insert(envelope.to_vec());
                        }
                        None
                    }
                    _ => None,
                };
                node.inbound.insert(inbound, (SimPeer(from), id, target));
                node.core
                    .as_mut()?
                    .handle_request(now, unix, SimPeer(from), inbound, request);
                Some(to)
            }
            Delivery::Response {
                to,
                id,
                generation,
                bytes,
            } => {
                if self.nodes[to as usize].generation != generation {
                    return None;
                }
                let response: Response = wire::decode(&bytes, MAX_RESPONSE_LEN).ok()?;
                let unix = self.unix(to);
                self.nodes[to as usize]
                    .core
                    .as_mut()?
                    .handle_response(now, unix, id, Ok(response));
                Some(to)
            }
            Delivery::Failure { to, id, generation } => {
                if self.nodes[to as usize].generation != generation {
                    return None;
                }
                let unix = self.unix(to);
                self.nodes[to as usize].core.as_mut()?.handle_response(
                    now,
                    unix,
                    id,
                    Err(RequestFailure::Unreachable("connection refused".into())),
                );
                Some(to)
            }
            Delivery::Gate { at, peer } => {
                self.gating.remove(&(at, peer));
                if !self.is_up(peer) || !self.is_up(at) || !self.connected(at, peer) {
                    return None;
                }
                let proof = self.own_proof(peer);
                let unix = self.unix(at);
                self.stats.gates += 1;
                // The simulated checks keep no cache, so the gate never decides alone: the
                // proof is presented and checked in its turn, as a real one missing the cache.
                let core = self.nodes[at as usize].core.as_mut()?;
                core.handle_presented(now, unix, SimPeer(peer), &proof);
                Some(at)
            }
            Delivery::Checked {
                at,
                generation,
                peer,
                proof,
            } => {
                if self.nodes[at as usize].generation != generation {
                    return None;
                }
                let unix = self.unix(at);
                let core = self.nodes[at as usize].core.as_mut()?;
                let result = core.checks_mut().verify(now, &SimPeer(peer), &proof);
                core.handle_verified(now, unix, SimPeer(peer), result);
                Some(at)
            }
            Delivery::DialFailed { at, peer } => {
                let unix = self.unix(at);
                self.nodes[at as usize]
                    .core
                    .as_mut()?
                    .handle_dial_failed(now, unix, SimPeer(peer));
                Some(at)
            }
            Delivery::Committed {
                node,
                generation,
                id,
                ops,
                durability,
            } => {
                if self.nodes[node as usize].generation != generation {
                    // Lost with a crash: never applied, never reported.
                    return None;
                }
                let result = if self.nodes[node as usize].fail_writes > 0 {
                    self.nodes[node as usize].fail_writes -= 1;
                    self.stats.failed_writes += 1;
                    Err("injected write failure".to_owned())
                } else {
                    match durability {
                        // Kept off the disk until a flushed write; a crash loses it.
                        Durability::Deferred => self.nodes[node as usize].unflushed.push(ops),
                        Durability::Flushed => {
                            let earlier = std::mem::take(&mut self.nodes[node as usize].unflushed);
                            for ops in earlier.into_iter().chain([ops]) {
                                self.apply_writes(node, ops);
                            }
                        }
                    }
                    self.stats.writes += 1;
                    Ok(())
                };
                let unix = self.unix(node);
                self.nodes[node as usize]
                    .core
                    .as_mut()?
                    .handle_committed(now, unix, id, result);
                Some(node)
            }
        }
    }

    /// Whether a message between `a` and `b` can pass (both in the same group).
    fn connected(&self, a: u32, b: u32) -> bool {
        self.nodes[a as usize].group == self.nodes[b as usize].group
    }

    /// Runs the gate exchange between `at` and `peer` if `at` has not admitted `peer`: as on a
    /// new connection, each side checks the other one latency later.
    fn gate_if_needed(&mut self, at: u32, peer: u32) {
        let admitted = self.nodes[at as usize]
            .core
            .as_ref()
            .is_some_and(|c| c.is_admitted(&SimPeer(peer)));
        if admitted {
            return;
        }
        let later = self.time + self.latency();
        if self.gating.insert((at, peer)) {
            self.schedule(later, Delivery::Gate { at, peer });
        }
        let back = self.nodes[peer as usize]
            .core
            .as_ref()
            .is_some_and(|c| c.is_admitted(&SimPeer(at)));
        if !back && self.gating.insert((peer, at)) {
            self.schedule(later, Delivery::Gate { at: peer, peer: at });
        }
    }

    fn apply_writes(&mut self, id: u32, ops: Vec<WriteOp<SimPeer>>) {
        let unix = self.unix(id);
        let config = self.config.dht.clone();
        let disk = &mut self.nodes[id as usize].disk;
        for op in ops {
            match op {
                WriteOp::PutRecord { key, envelope } => {
                    let stamps = shoal_pow::StampChecker::new(config.stamps.clone())
                        .expect("valid stamp policy");
                    if let Err(e) = SignedRecord::validate(
                        &envelope,
                        Some(&key),
                        unix,
                        &config.records,
                        &stamps,
                    ) {
                        panic!(
                            "seed {}: node {id} wrote an invalid record for {key:?}: {e}",
                            self.seed
                        );
                    }
                    disk.records.insert(key, envelope);
                }
                WriteOp::RemoveRecord(key) => {
                    disk.records.remove(&key);
                }
                WriteOp::PutNotice {
                    key,
                    publisher,
                    envelope,
                } => {
                    disk.notices.insert((key, publisher), envelope);
                }
                WriteOp::RemoveNotice { key, publisher } => {
                    disk.notices.remove(&(key, publisher));
                }
                WriteOp::Snapshot(peers) => disk.snapshot = peers,
                WriteOp::Meta(meta) => {
                    let old = disk.meta.unwrap_or_default();
                    disk.meta = Some(Meta {
                        incarnation: old.incarnation.max(meta.incarnation),
                        seq_floor: old.seq_floor.max(meta.seq_floor),
                        feed_epoch: old.feed_epoch.max(meta.feed_epoch),
                        feed_seq: old.feed_seq.max(meta.feed_seq),
                    });
                }
            }
        }
    }

    /// One draw of the link's latency.
    fn latency(&mut self) -> Duration {
        let (lo, hi) = (self.config.link.latency_min, self.config.link.latency_max);
        if hi <= lo {
            return lo;
        }
        lo + Duration::from_nanos(self.rng.gen_range(0..=(hi - lo).as_nanos() as u64))
    }

    /// Whether a message from `from` to `to` is lost (loss, or a partition between them).
    fn lost(&mut self, from: u32, to: u32) -> bool {
        if !self.connected(from, to) {
            return true;
        }
        let loss = self.config.link.loss;
        loss > 0.0 && self.rng.gen_bool(loss.min(1.0))
    }

    /// With [`SimConfig::service`], a message for a live node takes its turn: when the node
    /// starts on it (after what arrived before), its handling booked. `None` for what costs
    /// nothing (timers, dials, commits) or without the model.
    fn queue_for_service(&mut self, s: &Scheduled) -> Option<Instant> {
        let service = self.config.service?;
        let (to, cost) = match &s.delivery {
            Delivery::Swim { to, .. } | Delivery::Response { to, .. } => (*to, service.message),
            Delivery::Broadcast { to, bytes, .. } => {
                let limits = self.config.dht.broadcast.limits();
                (*to, service.broadcast(bytes, &limits))
            }
            Delivery::Request { to, bytes, .. } => (*to, service.request(bytes)),
            _ => return None,
        };
        let node = &mut self.nodes[to as usize];
        node.core.as_ref()?;
        let start = node.busy_until.map_or(s.at, |b| b.max(s.at));
        node.busy_until = Some(start + cost);
        node.busy_total += cost;
        Some(start)
    }

    fn schedule(&mut self, at: Instant, delivery: Delivery) {
        self.seq += 1;
        self.queue.push(Reverse(Scheduled {
            at,
            seq: self.seq,
            delivery,
            queued: false,
        }));
    }

    /// Carries out what node `id` asked for, and schedules its next wake-up.
    fn flush(&mut self, id: u32) {
        let now = self.time;
        while let Some(action) = self.nodes[id as usize]
            .core
            .as_mut()
            .and_then(Core::poll_action)
        {
            self.carry_out(id, now, action);
        }
        let next = self.nodes[id as usize]
            .core
            .as_ref()
            .and_then(Core::poll_timeout);
        if let Some(t) = next {
            let t = t.max(now);
            let node = &mut self.nodes[id as usize];
            if node.wake.is_none_or(|w| t < w) {
                node.wake = Some(t);
                self.schedule(t, Delivery::Wake(id));
            }
        }
    }

    /// Sends one message from `from` to `to` over the link model: counted, then lost (SWIM's
    /// also when `to` is down, as a datagram to a dead host is) or delivered after the link's
    /// latency.
    fn transmit(
        &mut self,
        now: Instant,
        (from, to): (u32, u32),
        (traffic, len): (Traffic, usize),
        delivery: Delivery,
    ) {
        let (messages, bytes) = match traffic {
            Traffic::Dht => (&mut self.stats.dht_messages, &mut self.stats.dht_bytes),
            Traffic::Swim => (&mut self.stats.swim_messages, &mut self.stats.swim_bytes),
            Traffic::Broadcast => (
                &mut self.stats.broadcast_messages,
                &mut self.stats.broadcast_bytes,
            ),
        };
        *messages += 1;
        *bytes += len as u64;
        let down = traffic != Traffic::Dht && !self.is_up(to);
        if down || self.lost(from, to) {
            self.stats.dropped += 1;
            return;
        }
        let at = now + self.latency();
        self.schedule(at, delivery);
    }

    fn carry_out(&mut self, id: u32, now: Instant, action: Action<SimPeer>) {
        match action {
            Action::Send {
                to,
                id: rid,
                request,
                ..
            } => {
                let bytes = wire::encode(&request);
                let len = bytes.len();
                let delivery = Delivery::Request {
                    from: id,
                    to: to.0,
                    id: Some(rid),
                    bytes,
                };
                self.transmit(now, (id, to.0), (Traffic::Dht, len), delivery);
            }
            Action::Tell { to, request, .. } => {
                let bytes = wire::encode(&request);
                let len = bytes.len();
                let delivery = Delivery::Request {
                    from: id,
                    to: to.0,
                    id: None,
                    bytes,
                };
                self.transmit(now, (id, to.0), (Traffic::Dht, len), delivery);
            }
            Action::Respond {
                id: inbound,
                response,
            } => {
                let Some((from, Some(rid), target)) =
                    self.nodes[id as usize].inbound.remove(&inbound)
                else {
                    return;
                };
                let response = match self.nodes[id as usize].adversary {
                    Some(adversary) => self.tamper(id, adversary, target.as_deref(), response),
                    None => response,
                };
                let bytes = wire::encode(&response);
                let len = bytes.len();
                let delivery = Delivery::Response {
                    to: from.0,
                    id: rid,
                    generation: self.nodes[from.0 as usize].generation,
                    bytes,
                };
                self.transmit(now, (id, from.0), (Traffic::Dht, len), delivery);
            }
            Action::Swim { to, msg, .. } => {
                let max = self.config.dht.swim.max_message_bytes.get();
                // Invariant: the core bounds its messages by the same limit.
                let bytes = shoal_swim::message::to_vec(&msg, max).expect("SWIM message fits");
                let len = bytes.len();
                let delivery = Delivery::Swim {
                    from: id,
                    to: to.0,
                    bytes,
                };
                self.transmit(now, (id, to.0), (Traffic::Swim, len), delivery);
            }
            Action::Broadcast { to, msg, .. } => {
                let bytes = shoal_broadcast::message::encode(&msg);
                let len = bytes.len();
                let delivery = Delivery::Broadcast {
                    from: id,
                    to: to.0,
                    bytes,
                };
                self.transmit(now, (id, to.0), (Traffic::Broadcast, len), delivery);
            }
            // The simulator has no connections to close or keep, and its dials lose no
            // handshake that a second attempt would make up for.
            Action::Disconnect { .. }
            | Action::MemberChanged { .. }
            | Action::Redial { .. }
            | Action::Reconnect { .. }
            | Action::Keep { .. } => {}
            Action::Dial { peer, .. } => {
                if peer.0 as usize >= self.nodes.len() {
                    let at = now + self.config.dial_timeout;
                    self.schedule(
                        at,
                        Delivery::DialFailed {
                            at: id,
                            peer: peer.0,
                        },
                    );
                    return;
                }
                let rtt = self.latency() + self.latency();
                if !self.is_up(peer.0) || !self.connected(id, peer.0) {
                    let at = now
                        + if self.is_up(peer.0) {
                            self.config.dial_timeout
                        } else {
                            rtt
                        };
                    self.schedule(
                        at,
                        Delivery::DialFailed {
                            at: id,
                            peer: peer.0,
                        },
                    );
                    return;
                }
                for (a, b) in [(id, peer.0), (peer.0, id)] {
                    if self.gating.insert((a, b)) {
                        self.schedule(now + rtt, Delivery::Gate { at: a, peer: b });
                    }
                }
            }
            Action::Write {
                id: wid,
                ops,
                durability,
            } => {
                let generation = self.nodes[id as usize].generation;
                let at = now + self.config.disk_latency;
                self.schedule(
                    at,
                    Delivery::Committed {
                        node: id,
                        generation,
                        id: wid,
                        ops,
                        durability,
                    },
                );
            }
            Action::Verify { peer, proof, .. } => {
                let generation = self.nodes[id as usize].generation;
                let at = now + self.config.check_time;
                self.schedule(
                    at,
                    Delivery::Checked {
                        at: id,
                        generation,
                        peer: peer.0,
                        proof,
                    },
                );
            }
            Action::Reply { op, reply } => {
                if let Reply::Put(Ok(ok)) = &reply {
                    let seq = self.acked.entry(ok.key.clone()).or_default();
                    *seq = (*seq).max(ok.seq);
                }
                let node = &mut self.nodes[id as usize];
                let asked = node.issued.remove(&op).unwrap_or(now);
                node.answers.insert(
                    op,
                    Answered {
                        asked,
                        at: now,
                        reply,
                    },
                );
            }
            Action::Notice(notice) => {
                let node = &mut self.nodes[id as usize];
                node.delivered.push(*notice);
                node.delivered_at.push(now);
            }
        }
    }

    /// What adversary `id` answers instead of `response`.
    fn tamper(
        &self,
        id: u32,
        adversary: Adversary,
        target: Option<&[u8]>,
        response: Response,
    ) -> Response {
        let k = self.config.dht.replication_factor.get();
        match (adversary, response) {
            (Adversary::Eclipse, Response::Peers(_)) => {
                Response::Peers(self.colluders(target.unwrap_or_default(), k))
            }
            (Adversary::Eclipse, Response::Record { .. }) => Response::Record {
                record: None,
                closer: self.colluders(target.unwrap_or_default(), k),
                notice: None,
                receipt: None,
            },
            (Adversary::Drop, response) => response.withheld(),
            (
                Adversary::Stale,
                Response::Record {
                    record: Some(record),
                    closer,
                    notice,
                    ..
                },
            ) => {
                let first = SignedRecord::decode(&record)
                    .ok()
                    .and_then(|r| self.nodes[id as usize].first_copies.get(&r.record().key))
                    .map(|b| ByteBuf::from(b.clone()));
                // Its receipts would name the record it holds; it sends none.
                Response::Record {
                    record: Some(first.unwrap_or(record)),
                    closer,
                    notice,
                    receipt: None,
                }
            }
            (_, response) => response,
        }
    }

    /// The live eclipse nodes closest to `target`, at most `k`, as peer bytes.
    fn colluders(&self, target: &[u8], k: usize) -> Vec<ByteBuf> {
        let eclipse = (0..self.nodes.len() as u32)
            .filter(|&i| {
                self.is_up(i) && self.nodes[i as usize].adversary == Some(Adversary::Eclipse)
            })
            .map(SimPeer);
        lookup::closest(&KeyHash::of(target), eclipse, k)
            .into_iter()
            .map(|p| ByteBuf::from(p.to_bytes()))
            .collect()
    }

    // ----- invariants -----

    /// The checks run after every step on the node that stepped: its state within bounds and,
    /// unless sampling, no unadmitted or dishonest live member or routing entry.
    fn check_node(&self, id: u32) {
        let Some(core) = self.node(id) else { return };
        let seed = self.seed;
        let s = core.sizes();
        let c = core.config();
        let k = c.kbucket_size.get();
        let ok = s.held_peers <= crate::core::MAX_HELD_PEERS
            && s.held <= crate::core::MAX_HELD_PEERS * crate::core::MAX_HELD_PER_PEER
            && s.wanted <= crate::core::MAX_WANTED
            && s.reported <= crate::core::MAX_REPORTED
            && s.departed <= crate::core::MAX_DEPARTED
            && s.routing <= 2 * k * 256
            && s.records <= c.store.max_records
            && s.notices <= c.notices.max_notices
            && s.rate_buckets <= 2 * crate::core::MAX_RATE_BUCKETS
            && s.standings <= crate::core::MAX_STANDINGS
            && s.bans <= crate::core::MAX_BANS
            && s.receipts <= crate::core::MAX_RECEIPTS
            && s.churn <= 2 * crate::core::MAX_CHURN_PEERS
            && s.verified <= c.swim.max_members.get() + crate::core::MAX_HELD_PEERS
            && s.ops <= 1_000_000
            && s.pending <= 1_000_000;
        assert!(ok, "seed {seed}: node {id} state out of bounds: {s:?}");
        let q = core.membership().queue_lengths();
        let max_members = c.swim.max_members.get();
        assert!(
            q.members <= max_members
                && q.transmits <= c.swim.max_transmit_queue.get()
                && q.events <= c.swim.max_event_queue.get(),
            "seed {seed}: node {id} SWIM state out of bounds: {q:?}"
        );
        assert!(
            core.broadcast().within_bounds(),
            "seed {seed}: node {id} broadcast state out of bounds: {:?}",
            core.broadcast().queue_lengths()
        );
        if self.config.sample_every.is_none() {
            self.check_admission(id);
        }
    }

    /// No unadmitted or dishonest peer is a live member of `id` or in its routing table.
    pub fn check_admission(&self, id: u32) {
        let Some(core) = self.node(id) else { return };
        if self.is_cheater(id) {
            return;
        }
        let seed = self.seed;
        for (peer, state, _) in core.membership().states() {
            if matches!(state, State::Alive | State::Suspect) {
                // A peer met on a connection is listed while its proof is checked, a
                // cheater too; none is admitted.
                let admitted = core.is_admitted(peer) && !self.is_cheater(peer.0);
                assert!(
                    admitted || core.is_checking(peer),
                    "seed {seed}: node {id} holds {peer:?} live without having admitted it or \
                     holding its proof (cheater: {})",
                    self.is_cheater(peer.0)
                );
            }
        }
        for peer in core.routing_table().peers() {
            assert!(
                core.is_admitted(peer) && !self.is_cheater(peer.0),
                "seed {seed}: node {id} routes to {peer:?} without having admitted it"
            );
        }
    }

    fn check_sample(&mut self) {
        let n = self.nodes.len() as u32;
        if n == 0 {
            return;
        }
        for _ in 0..self.config.sample_size {
            let id = self.rng.gen_range(0..n);
            self.check_admission(id);
        }
    }

    /// Every acknowledged record is held, at its acknowledged sequence or a higher one, by at
    /// least one of the `k` live honest nodes closest to its key, and every record any live
    /// node holds is valid at that node's clock. Returns the acknowledged keys checked.
    pub fn check_records(&self) -> usize {
        let seed = self.seed;
        let live = self.live_honest();
        let k = self.config.dht.replication_factor.get();
        let stamps =
            shoal_pow::StampChecker::new(self.config.dht.stamps.clone()).expect("valid policy");
        for &id in &live {
            let Some(core) = self.node(id) else { continue };
            let unix = self.unix(id);
            for signed in core.records().iter() {
                if signed.is_expired(unix) {
                    continue;
                }
                let r = signed.record();
                if let Err(e) = SignedRecord::validate(
                    signed.as_bytes(),
                    Some(&r.key),
                    unix,
                    &self.config.dht.records,
                    &stamps,
                ) {
                    panic!("seed {seed}: node {id} holds an invalid record: {e}");
                }
            }
        }
        for (key, seq) in &self.acked {
            let closest = lookup::closest(&KeyHash::of(key), live.iter().map(|&i| SimPeer(i)), k);
            let held = closest.iter().any(|p| {
                self.node(p.0)
                    .and_then(|c| c.stored(key))
                    .is_some_and(|s| s.record().seq >= *seq)
            });
            assert!(
                held,
                "seed {seed}: acknowledged record {key:?} (seq {seq}) is held by none of its \
                 {k} closest live nodes"
            );
        }
        self.acked.len()
    }

    /// The `k` live honest nodes closest to `target`, closest first, `except` left out (a
    /// lookup never names the node that runs it): the truth a lookup is measured against.
    /// The ids of the nodes that run, with a valid proof and no [`Adversary`] role.
    pub fn live_benign(&self) -> Vec<u32> {
        self.live_honest()
            .into_iter()
            .filter(|&i| self.nodes[i as usize].adversary.is_none())
            .collect()
    }

    /// The `k` live benign nodes ([`Sim::live_benign`]) closest to `target`.
    pub fn benign_closest(&self, target: &[u8], k: usize) -> Vec<SimPeer> {
        lookup::closest(
            &KeyHash::of(target),
            self.live_benign().into_iter().map(SimPeer),
            k,
        )
    }

    /// The `k` live honest nodes closest to `target`, `except` one.
    pub fn true_closest(&self, target: &[u8], k: usize, except: Option<u32>) -> Vec<SimPeer> {
        lookup::closest(
            &KeyHash::of(target),
            self.live_honest()
                .into_iter()
                .filter(|&i| Some(i) != except)
                .map(SimPeer),
            k,
        )
    }

    /// Nodes of `id`'s membership in each state.
    pub fn member_counts(&self, id: u32) -> [usize; 4] {
        let mut counts = [0; 4];
        if let Some(core) = self.node(id) {
            for (_, state, _) in core.membership().states() {
                counts[state as usize] += 1;
            }
        }
        counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::NewRecord;

    fn envelope(sim: &Sim, key: &[u8], seq: u64) -> Vec<u8> {
        let new = NewRecord {
            key: key.to_vec(),
            value: vec![seq as u8],
            seq,
            ttl: 3600,
        };
        let signer = &sim.nodes[0].key;
        SignedRecord::create(signer, new, START_UNIX, &sim.config.dht.stamps)
            .unwrap()
            .as_bytes()
            .to_vec()
    }

    fn record_answer(bytes: &[u8]) -> Response {
        Response::Record {
            record: Some(ByteBuf::from(bytes.to_vec())),
            closer: Vec::new(),
            notice: None,
            receipt: None,
        }
    }

    /// A delivery as the trace of a run shows it: its kind, its nodes, and a digest of its bytes.
    fn describe(delivery: &Delivery) -> String {
        use std::hash::{DefaultHasher, Hash, Hasher};
        let digest = |bytes: &[u8]| {
            // Fixed keys: the same bytes give the same digest in both runs.
            let mut h = DefaultHasher::new();
            bytes.hash(&mut h);
            h.finish()
        };
        match delivery {
            Delivery::Wake(id) => format!("wake {id}"),
            Delivery::Swim { from, to, bytes } => format!("swim {from}>{to} {:x}", digest(bytes)),
            Delivery::Broadcast { from, to, bytes } => {
                format!("broadcast {from}>{to} {:x}", digest(bytes))
            }
            Delivery::Request {
                from,
                to,
                id,
                bytes,
            } => format!("request {from}>{to} {id:?} {:x}", digest(bytes)),
            Delivery::Response { to, id, bytes, .. } => {
                format!("response >{to} {id:?} {:x}", digest(bytes))
            }
            Delivery::Failure { to, id, .. } => format!("failure >{to} {id:?}"),
            Delivery::Gate { at, peer } => format!("gate {at}:{peer}"),
            Delivery::Checked { at, peer, .. } => format!("checked {at}:{peer}"),
            Delivery::DialFailed { at, peer } => format!("dial failed {at}:{peer}"),
            Delivery::Committed { node, id, ops, .. } => {
                let ops = digest(format!("{ops:?}").as_bytes());
                format!("committed {node} {id:?} {ops:x}")
            }
        }
    }

    /// Runs `sim` for `d` as [`Sim::run_for`] does, noting every delivery made in `trace`.
    fn run_traced(sim: &mut Sim, d: Duration, trace: &mut Vec<String>) {
        let until = sim.time + d;
        while let Some(Reverse(s)) = sim.queue.peek()
            && s.at <= until
        {
            let at = s.at - sim.start;
            trace.push(format!("{at:?} #{} {}", s.seq, describe(&s.delivery)));
            sim.step();
        }
        sim.time = sim.time.max(until);
    }

    /// Runs a small network through puts (most expiring), gets, two publishers' announcements
    /// of one key, crashes, a restart from a saved routing snapshot, joins and republishing.
    /// Returns every delivery in the order made, then the commands' answers, the traffic
    /// counters, and each node's disk, state sizes, counters, routing table, membership and
    /// delivered notices.
    fn fingerprint(seed: u64) -> (Vec<String>, Vec<String>) {
        let n: u32 = 40;
        let mut config = SimConfig::local();
        // Checks slow enough that joiners' proofs are relayed and checked concurrently.
        config.check_time = Duration::from_millis(30);
        config.dht.routing_snapshot_interval = Duration::from_secs(5);
        config.dht.republish_interval = Duration::from_secs(20);
        let mut sim = Sim::new(seed, config);
        let mut trace = Vec::new();
        let mut seen = Vec::new();
        sim.add_converged(n as usize);
        run_traced(&mut sim, Duration::from_secs(2), &mut trace);
        // Issues each command 20 ms after the last, then runs until all are answered (or 30 s).
        let mut batch = |sim: &mut Sim, trace: &mut Vec<String>, commands: Vec<_>| {
            let mut ops = Vec::new();
            for (node, command) in commands {
                ops.push((node, sim.command(node, command)));
                run_traced(sim, Duration::from_millis(20), trace);
            }
            let until = sim.time + Duration::from_secs(30);
            let pending = |sim: &Sim| {
                ops.iter().any(|&(node, op): &(u32, Option<OpId>)| {
                    op.is_some_and(|op| !sim.nodes[node as usize].answers.contains_key(&op))
                })
            };
            while pending(sim) && sim.time < until {
                run_traced(sim, Duration::from_millis(100), trace);
            }
            for &(node, op) in &ops {
                let answer = op.and_then(|op| sim.answer(node, op));
                seen.push(format!(
                    "node {node}: {:?}",
                    answer.map(|a| (a.asked - sim.start, a.at - sim.start, a.reply))
                ));
            }
        };
        let put = |i: u32, ttl: u64| {
            Command::Put(crate::node::PutRequest {
                key: format!("key-{i}").into_bytes(),
                value: vec![i as u8; 32],
                ttl: Duration::from_secs(ttl),
                quorum: None,
                seq: None,
                route: Default::default(),
            })
        };
        let get = |i: u32| Command::get(format!("key-{i}").into_bytes());
        let announce = || Command::Announce {
            key: b"lock".to_vec(),
            value: b"next".to_vec(),
            seq: Some(3),
        };
        let notices = || Command::Notices(b"lock".to_vec());
        let ttl = |i: u32| if i < 6 { 30 } else { 3600 };
        let puts = (0..8).map(|i| ((i * 7) % n, put(i, ttl(i)))).collect();
        batch(&mut sim, &mut trace, puts);
        // Two publishers' notices for one key, equally new.
        batch(&mut sim, &mut trace, vec![(5, announce()), (9, announce())]);
        batch(&mut sim, &mut trace, vec![(17, notices())]);
        run_traced(&mut sim, Duration::from_secs(5), &mut trace);
        for id in [2, 11, 23] {
            sim.crash(id);
        }
        run_traced(&mut sim, Duration::from_secs(5), &mut trace);
        let gets = (0..8).map(|i| ((i * 5 + 1) % n, get(i))).collect();
        batch(&mut sim, &mut trace, gets);
        sim.restart(11);
        let first = sim.add_nodes(6, 0);
        for j in first..first + 6 {
            sim.join(j, &[(j * 7) % n]);
        }
        run_traced(&mut sim, Duration::from_secs(10), &mut trace);
        let mut commands: Vec<_> = (8..12).map(|i| ((i * 3) % n, put(i, 3600))).collect();
        commands.extend((0..12).map(|i| (first + i % 6, get(i))));
        batch(&mut sim, &mut trace, commands);
        // Past the expiry of the short-lived record, and republishing.
        run_traced(&mut sim, Duration::from_secs(45), &mut trace);
        batch(&mut sim, &mut trace, vec![(first, notices())]);
        seen.push(format!("{:?} at {:?}", sim.stats, sim.elapsed()));
        for (id, node) in sim.nodes.iter().enumerate() {
            let disk = &node.disk;
            seen.push(format!(
                "node {id} disk: {:?} {:?} {:?} {:?}",
                disk.records, disk.notices, disk.snapshot, disk.meta
            ));
            let Some(core) = &node.core else {
                seen.push(format!("node {id}: down"));
                continue;
            };
            let mut stats = core.stats().clone();
            let refused: BTreeMap<_, _> = std::mem::take(&mut stats.refused_puts)
                .into_iter()
                .collect();
            let routes: Vec<SimPeer> = core.routing_table().peers().copied().collect();
            seen.push(format!(
                "node {id}: {:?} {stats:?} {refused:?} {routes:?} {:?} {:?}",
                core.sizes(),
                sim.member_counts(id as u32),
                node.delivered
            ));
        }
        (trace, seen)
    }

    #[test]
    fn the_same_seed_gives_the_same_run() {
        let (trace, seen) = fingerprint(5);
        let (trace_again, seen_again) = fingerprint(5);
        // The first divergence, rather than two long lists.
        for (i, (a, b)) in trace.iter().zip(&trace_again).enumerate() {
            assert_eq!(a, b, "seed 5: the runs diverged at delivery {i}");
        }
        assert_eq!(trace.len(), trace_again.len(), "seed 5: deliveries made");
        for (a, b) in seen.iter().zip(&seen_again) {
            assert_eq!(a, b, "seed 5: two runs diverged");
        }
        assert_eq!(seen.len(), seen_again.len());
    }

    #[test]
    fn adversaries_rewrite_their_answers_as_their_role_says() {
        let mut sim = Sim::new(1, SimConfig::local());
        sim.add_converged(6);
        sim.set_adversary(1, Some(Adversary::Eclipse));
        sim.set_adversary(2, Some(Adversary::Eclipse));
        sim.set_adversary(3, Some(Adversary::Drop));
        sim.set_adversary(4, Some(Adversary::Stale));
        assert_eq!(sim.live_benign(), vec![0, 5]);
        let first = envelope(&sim, b"k", 1);
        let second = envelope(&sim, b"k", 2);
        // A put to the stale node is seen on its way in; the first copy is what it keeps serving.
        for bytes in [&first, &second] {
            let request = wire::encode(&Request::PutRecord(ByteBuf::from(bytes.clone())));
            let now = sim.now();
            sim.deliver(
                now,
                Delivery::Request {
                    from: 0,
                    to: 4,
                    id: None,
                    bytes: request,
                },
            );
        }
        let stale = sim.tamper(4, Adversary::Stale, Some(b"k"), record_answer(&second));
        assert_eq!(stale, record_answer(&first));
        // An eclipse node names only colluders, and never the record.
        let peers = Response::Peers(vec![ByteBuf::from(SimPeer(0).to_bytes())]);
        let Response::Peers(named) = sim.tamper(1, Adversary::Eclipse, Some(b"t"), peers) else {
            panic!("not peers");
        };
        let mut named: Vec<Vec<u8>> = named.into_iter().map(|b| b.to_vec()).collect();
        named.sort();
        let mut colluders = vec![SimPeer(1).to_bytes(), SimPeer(2).to_bytes()];
        colluders.sort();
        assert_eq!(named, colluders);
        let Response::Record { record, closer, .. } =
            sim.tamper(2, Adversary::Eclipse, Some(b"k"), record_answer(&second))
        else {
            panic!("not a record answer");
        };
        assert!(record.is_none() && closer.len() == 2);
        // A dropper acknowledges stores but serves nothing.
        assert_eq!(
            sim.tamper(3, Adversary::Drop, Some(b"k"), Response::Stored),
            Response::Stored
        );
        assert_eq!(
            sim.tamper(3, Adversary::Drop, Some(b"k"), record_answer(&second)),
            Response::Record {
                record: None,
                closer: Vec::new(),
                notice: None,
                receipt: None,
            }
        );
    }
}
