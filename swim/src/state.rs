//! The sans-IO SWIM core with the Lifeguard extensions.
//!
//! # Driving a [`Membership`]
//!
//! The core performs no I/O, reads no clock and spawns nothing. The caller owns time and the
//! network:
//!
//! 1. Create it with [`Membership::new`], then call [`Membership::join`] with some seeds (or
//!    [`Membership::restore`] with members remembered from an earlier run).
//! 2. Whenever a message arrives, decode it ([`message::decode`](crate::message::decode)) and
//!    pass it to [`Membership::handle_message`] with the current time and the sender's identity
//!    as the transport authenticated it.
//! 3. Whenever the deadline returned by [`Membership::poll_timeout`] passes, call
//!    [`Membership::handle_timeout`] with the current time.
//! 4. After every `handle_*` call and every command, drain [`Membership::poll_transmit`] (send
//!    each message) and [`Membership::poll_event`] (membership changes and command results), and
//!    read [`Membership::poll_timeout`] again.
//!
//! `poll_transmit` and `poll_event` only change when a `handle_*` method or a command ran;
//! `poll_timeout` changes after any of those calls and after a drain of nothing else. Time passed
//! in must not go backwards; an earlier `now` is treated as the latest one seen.
//!
//! # Protocol
//!
//! Every probe period the core pings the next member of a shuffled round-robin order. If no ack
//! comes within the probe timeout it asks `k` helpers to ping the target (ping-req); helpers
//! answer with the forwarded ack or, Lifeguard's addition, a nack when the target stays silent.
//! A target that stays silent to the end of the probe window becomes suspect. The suspicion
//! times out after Lifeguard's dynamic timeout, which starts at `β · min` and shrinks
//! logarithmically towards `min = α · max(1, log10 n) · T` as independent confirmations arrive;
//! then the member is declared dead. A member refutes a suspicion by raising its incarnation.
//! A failed probe raises the local health multiplier (once, however many nacks it missed) and an
//! answered one lowers it; the multiplier stretches the probe interval and timeout (Lifeguard's
//! local health awareness). Beside the round-robin order, a second probe at a time checks
//! members with a hint that they failed: those whose connections all closed (the embedder's
//! [`Membership::probe_soon`]), and, for about `K + 1` random members of any cluster, a member
//! someone else just suspected, which brings a crashed member its `K` confirmations within a
//! probe window. The buddy system puts the suspicion into
//! the ping sent to a suspect so it can refute at once, and a member that refutes sends its
//! refutation at once to its suspector and a few others. Updates ride on every message within a
//! byte budget, and dedicated gossip rounds send fresh news to a few random members (on a budget
//! of their own, so they never take it from the piggyback); a periodic push-pull exchanges full
//! state, and periodic pings to dead members and push-pulls to seeds heal partitions.
//!
//! # Cost at scale
//!
//! Nothing done per message scans the member table. Probe targets, ping-req helpers and
//! push-pull partners are drawn from the probe order (an array of every member) in time that
//! does not grow with the table; a push-pull costs in proportion to the members it carries, and
//! the sizes of its entries are counted without encoding them into a buffer. Only the start of
//! a probe round, once every `n` probes, reshuffles the whole order. A push-pull's entries are
//! looked up in a tight first pass before they are merged: a table of thousands of members does
//! not stay in the processor's cache between messages, and independent lookups done back to
//! back overlap their cache misses. The table costs a few words per member and nothing more for
//! a member without addresses (the `table` module explains the layout). A mass failure leaves
//! every survivor with a running suspicion, a queued update and then a tombstone per member
//! lost; each of those also takes a few words and, for a member without addresses, no
//! allocation of its own (the `suspicion`, `broadcast` and `ticks` modules explain how).
//! Precedence between pieces of news is decided in one place, the `merge` module, which
//! [`Membership::effect`] exposes.

mod broadcast;
mod local_addrs;
mod merge;
mod suspicion;
mod table;
mod ticks;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use self::broadcast::Broadcasts;
pub use self::merge::Effect;
use self::suspicion::{Due, Suspicions};
use self::table::Table;
use self::ticks::Ticks;
use crate::Identity;
use crate::config::Config;
use crate::error::{CommandError, ConfigError};
use crate::message::{self, Address, Credential, Message, Payload, State, Update};

/// Identifies a command ([`Membership::join`], [`Membership::leave`]); the event that answers it
/// carries the same id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CommandId(pub u64);

/// A message to send: the caller encodes `msg` and delivers it to `to`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit<T> {
    /// Destination.
    pub to: T,
    /// The message.
    pub msg: Message<T>,
}

/// Something the application should know about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event<T> {
    /// A member became alive for the first time, or came back from dead or departed with a newer
    /// incarnation.
    Joined {
        /// The member.
        member: T,
        /// Its addresses.
        addrs: Arc<[Address]>,
        /// Its incarnation.
        incarnation: u64,
    },
    /// A member missed a probe (ours or someone else's) and is suspected.
    Suspected {
        /// The member.
        member: T,
        /// Its addresses.
        addrs: Arc<[Address]>,
        /// The incarnation suspected.
        incarnation: u64,
        /// The member whose probe failed.
        by: T,
    },
    /// A suspected member did not refute in time, or someone declared it dead.
    Failed {
        /// The member.
        member: T,
        /// Its addresses.
        addrs: Arc<[Address]>,
        /// The incarnation declared dead.
        incarnation: u64,
    },
    /// A member left gracefully.
    Left {
        /// The member.
        member: T,
        /// Its addresses.
        addrs: Arc<[Address]>,
        /// Its last incarnation.
        incarnation: u64,
    },
    /// A suspected member proved it is alive with a newer incarnation.
    Refuted {
        /// The member.
        member: T,
        /// Its addresses.
        addrs: Arc<[Address]>,
        /// Its new incarnation.
        incarnation: u64,
    },
    /// Answer to [`Membership::join`]: `Ok(n)` once a seed answered, `n` being the number of
    /// live members then known.
    JoinFinished {
        /// The command answered.
        id: CommandId,
        /// Outcome.
        result: Result<usize, CommandError>,
    },
    /// Answer to [`Membership::leave`]: the departure has been gossiped (or the leave timeout
    /// passed); the core is now inert.
    LeaveFinished {
        /// The command answered.
        id: CommandId,
        /// Outcome.
        result: Result<(), CommandError>,
    },
}

impl<T> Event<T> {
    /// The member whose state the event changed, the state it is in now and the incarnation:
    /// joined and refuted are alive. `None` for the answers to this node's own commands.
    pub fn change(&self) -> Option<(&T, State, u64)> {
        match self {
            Event::Joined {
                member,
                incarnation,
                ..
            }
            | Event::Refuted {
                member,
                incarnation,
                ..
            } => Some((member, State::Alive, *incarnation)),
            Event::Suspected {
                member,
                incarnation,
                ..
            } => Some((member, State::Suspect, *incarnation)),
            Event::Failed {
                member,
                incarnation,
                ..
            } => Some((member, State::Dead, *incarnation)),
            Event::Left {
                member,
                incarnation,
                ..
            } => Some((member, State::Left, *incarnation)),
            Event::JoinFinished { .. } | Event::LeaveFinished { .. } => None,
        }
    }
}

/// What the core knows about one member, as [`Membership::member`] and [`Membership::members`]
/// build it: the addresses are shared with the core's table, not copied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Its addresses, as last announced.
    pub addrs: Arc<[Address]>,
    /// Its incarnation.
    pub incarnation: u64,
    /// Its state.
    pub state: State,
}

/// Counters of the core's life, for metrics and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// Probes started.
    pub probes: u64,
    /// Probes that ended without an ack.
    pub failed_probes: u64,
    /// Times we refuted news of our own suspicion, death or departure.
    pub refutations: u64,
    /// Transmits dropped because the transmit queue was full.
    pub transmits_dropped: u64,
    /// Events dropped (oldest first) because the event queue was full.
    pub events_dropped: u64,
    /// News of new members dropped because the table was full.
    pub members_dropped: u64,
    /// Ping-req requests ignored because too many were in flight.
    pub relays_dropped: u64,
    /// Messages telling a member that another joined through this node
    /// ([`Config::join_fanout`](crate::Config::join_fanout)).
    pub joins_announced: u64,
    /// Membership changes seen, by kind (each also logged at info).
    pub changes: Changes,
}

/// Membership changes seen since start, one count per [`Event`] of that kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Changes {
    /// Members that became alive, or came back with a newer incarnation.
    pub joined: u64,
    /// Suspicions of members.
    pub suspected: u64,
    /// Suspected members that proved they were alive.
    pub refuted: u64,
    /// Members declared dead.
    pub failed: u64,
    /// Members that left gracefully.
    pub left: u64,
}

/// Current lengths of every internal queue, to check that state stays bounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueLengths {
    /// Members in the table (any state). Bound: `max_members`.
    pub members: usize,
    /// Pending transmits. Bound: `max_transmit_queue`.
    pub transmits: usize,
    /// Pending events. Bound: `max_event_queue`.
    pub events: usize,
    /// Queued piggyback updates. Bound: `max_members + 1`.
    pub broadcasts: usize,
    /// Ping-req requests being served. Bound: `max_relays`.
    pub relays: usize,
    /// Entries of the probe order: one per member, in any state. Bound: `max_members`.
    pub probe_order: usize,
    /// Running suspicions. Bound: `max_members`.
    pub suspicions: usize,
    /// Expiry entries of dead and departed members. Bound: `2 * max_members + 1`.
    pub tombstones: usize,
}

/// A dead or departed member to forget at `at`, unless news changed it since.
struct Tombstone<T> {
    at: Ticks,
    id: T,
    /// The incarnation it was buried at, in two halves (4-byte alignment, as [`Ticks`]).
    incarnation: [u32; 2],
}

impl<T> Tombstone<T> {
    fn incarnation(&self) -> u64 {
        u64::from(self.incarnation[0]) | (u64::from(self.incarnation[1]) << 32)
    }
}

/// The two probes a member may have under way at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lane {
    /// The round-robin order, at the pace of the probe interval stretched by local health.
    Round = 0,
    /// Members with a hint that they failed ([`Membership::probe_soon`]): checked beside the
    /// round-robin order, one at a time, so that hints neither wait for the round's probe to end
    /// nor slow the order down (a member that crashed without a hint is found by the order
    /// alone, and under heavy loss every slot it lost to a hint delayed that).
    Check = 1,
}

struct Probe<T> {
    target: T,
    seq: u64,
    indirect_at: Instant,
    ends_at: Instant,
    acked: bool,
    indirect_sent: bool,
    expected_nacks: u32,
    nacks: u32,
}

struct Relay<T> {
    origin: T,
    origin_seq: u64,
    target: T,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Active,
    Leaving { id: CommandId, until: Instant },
    Left,
}

/// Maximum number of reconnection pings remembered.
const MAX_RECONNECT_PINGS: usize = 16;

/// Members at most waiting to be probed ahead of the round-robin order
/// ([`Membership::probe_soon`]).
pub(crate) const MAX_PROBE_SOON: usize = 8;

/// The SWIM + Lifeguard state machine of one member. See the module docs for the call order.
pub struct Membership<T: Identity> {
    config: Config,
    me: T,
    my_addrs: Arc<[Address]>,
    incarnation: u64,
    status: Status,
    rng: StdRng,
    /// The instant the core was created, from which [`Ticks`] count.
    epoch: Instant,
    last_now: Instant,

    /// Every member with its record, addresses and place in the probe order.
    members: Table<T>,
    live: usize,
    suspicions: Suspicions<T>,
    /// Oldest first: each is added `dead_retention` after now.
    tombstones: VecDeque<Tombstone<T>>,

    /// The probes under way, by [`Lane`].
    probes: [Option<Probe<T>>; 2],
    /// Members waiting for the check lane ([`Membership::probe_soon`]).
    soon: VecDeque<T>,
    /// When the round-robin lane starts its next probe.
    next_probe: Instant,
    seq: u64,
    local_health: u32,

    relays: HashMap<u64, Relay<T>>,
    relay_timers: VecDeque<(Instant, u64)>,
    reconnect_pings: VecDeque<(u64, T)>,

    broadcasts: Broadcasts<T>,
    next_push_pull: Instant,
    next_reconnect: Instant,
    next_gossip: Instant,
    last_round: Instant,
    /// Members that joined through this node and are not announced yet (see
    /// [`Membership::announce_join`]).
    joiners: Vec<T>,
    /// The earliest time the next announcement of joiners may go out.
    next_announce: Instant,
    seeds: Vec<T>,
    join: Option<(CommandId, Instant)>,
    next_command: u64,

    transmits: VecDeque<Transmit<T>>,
    events: VecDeque<Event<T>>,
    stats: Stats,
}

impl<T: Identity> Membership<T> {
    /// Creates the core of member `me`, reachable at `addrs`, starting at `incarnation`.
    ///
    /// A node that restarts should start above any incarnation it used before (wall-clock
    /// seconds at start do); if it does not, it refutes the stale news as soon as it hears it.
    /// Fails if the config is invalid or `addrs` breaks the message bounds.
    pub fn new(
        now: Instant,
        me: T,
        addrs: Vec<Address>,
        incarnation: u64,
        config: Config,
    ) -> Result<Self, ConfigError> {
        config.validate()?;
        if addrs.len() > message::MAX_ADDRESSES
            || addrs.iter().any(|a| a.0.len() > message::MAX_ADDRESS_LEN)
        {
            return Err(ConfigError::OutOfRange {
                field: "addrs",
                limit: "at most MAX_ADDRESSES addresses of at most MAX_ADDRESS_LEN bytes",
            });
        }
        let mut rng = match config.rng_seed {
            Some(seed) => StdRng::from_seed(seed),
            None => StdRng::from_entropy(),
        };
        let next_probe = now + jitter(&mut rng, config.probe_interval);
        let next_push_pull =
            now + config.push_pull_interval / 2 + jitter(&mut rng, config.push_pull_interval);
        let next_reconnect = now + jitter(&mut rng, config.reconnect_interval);
        Ok(Self {
            me,
            my_addrs: addrs.into(),
            incarnation,
            status: Status::Active,
            rng,
            epoch: now,
            last_now: now,
            members: Table::new(),
            live: 0,
            suspicions: Suspicions::with_checks(
                now,
                config.probe_timeout,
                config.suspicion_confirmations.get() as usize,
            ),
            tombstones: VecDeque::new(),
            probes: [None, None],
            soon: VecDeque::new(),
            next_probe,
            seq: 0,
            local_health: 0,
            relays: HashMap::new(),
            relay_timers: VecDeque::new(),
            reconnect_pings: VecDeque::new(),
            broadcasts: Broadcasts::new(),
            next_push_pull,
            next_reconnect,
            next_gossip: now,
            last_round: now,
            joiners: Vec::new(),
            next_announce: now,
            seeds: Vec::new(),
            join: None,
            next_command: 0,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            stats: Stats::default(),
            config,
        })
    }

    // ----- accessors -----

    /// Our identity.
    pub fn local_id(&self) -> &T {
        &self.me
    }

    /// Our current incarnation. Never decreases.
    pub fn incarnation(&self) -> u64 {
        self.incarnation
    }

    /// Whether [`leave`](Self::leave) completed: the core then ignores all input.
    pub fn has_left(&self) -> bool {
        self.status == Status::Left
    }

    /// Lifeguard's local health score, `0..=max_local_health`; probe interval and timeout are
    /// multiplied by `score + 1`.
    pub fn local_health(&self) -> u32 {
        self.local_health
    }

    /// The config in use.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// What we know about `id` (never ourselves).
    pub fn member(&self, id: &T) -> Option<Member> {
        self.members.member(id)
    }

    /// Every member in the table, in any state, in no particular order. Each item holds a
    /// counted reference to the member's addresses; [`states`](Self::states) is cheaper when
    /// only states are needed.
    pub fn members(&self) -> impl Iterator<Item = (&T, Member)> {
        self.members.iter().map(|(id, state, incarnation)| {
            let member = Member {
                addrs: self.members.addrs(id).clone(),
                incarnation,
                state,
            };
            (id, member)
        })
    }

    /// Every member in the table with its state and incarnation, in no particular order,
    /// without touching addresses.
    pub fn states(&self) -> impl Iterator<Item = (&T, State, u64)> {
        self.members.iter()
    }

    /// Number of members believed alive or suspect (ourselves excluded).
    pub fn live_members(&self) -> usize {
        self.live
    }

    /// Counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Panics unless the member table is consistent and `live` counts its live members.
    #[cfg(test)]
    pub(crate) fn check_table(&self) {
        self.members.check_invariants();
        let live = self
            .states()
            .filter(|(_, s, _)| matches!(s, State::Alive | State::Suspect))
            .count();
        assert_eq!(live, self.live, "live count out of sync");
    }

    /// Lengths of the internal queues.
    pub fn queue_lengths(&self) -> QueueLengths {
        QueueLengths {
            members: self.members.len(),
            transmits: self.transmits.len(),
            events: self.events.len(),
            broadcasts: self.broadcasts.len(),
            relays: self.relays.len(),
            probe_order: self.members.len(),
            suspicions: self.suspicions.len(),
            tombstones: self.tombstones.len(),
        }
    }

    // ----- commands -----

    /// Joins the cluster through `seeds`: sends each (at most `max_seeds`, ourselves excluded) a
    /// push-pull. [`Event::JoinFinished`] with the returned id reports the first answer, or
    /// [`CommandError::NoSeedAnswered`] after `join_timeout`. The seeds are remembered:
    /// reconnection keeps trying those that are not live members.
    pub fn join(&mut self, now: Instant, seeds: impl IntoIterator<Item = T>) -> CommandId {
        let now = self.clock(now);
        let id = self.command_id();
        if self.status != Status::Active {
            self.emit(Event::JoinFinished {
                id,
                result: Err(CommandError::HasLeft),
            });
            return id;
        }
        let mut list: Vec<T> = Vec::new();
        for s in seeds {
            if s != self.me && !list.contains(&s) && list.len() < self.config.max_seeds.get() {
                list.push(s);
            }
        }
        if list.is_empty() {
            self.emit(Event::JoinFinished {
                id,
                result: Err(CommandError::NoSeeds),
            });
            return id;
        }
        if let Some((old, _)) = self.join.take() {
            self.emit(Event::JoinFinished {
                id: old,
                result: Err(CommandError::NoSeedAnswered),
            });
        }
        self.broadcasts.push(self.my_update());
        for seed in &list {
            self.send_push_pull(seed.clone(), true, true);
        }
        self.seeds = list;
        self.join = Some((id, now + self.config.join_timeout));
        id
    }

    /// Leaves gracefully: gossips our departure until it has been retransmitted enough or
    /// `leave_timeout` passed, then reports [`Event::LeaveFinished`] and stops.
    pub fn leave(&mut self, now: Instant) -> CommandId {
        let now = self.clock(now);
        let id = self.command_id();
        if self.status != Status::Active {
            self.emit(Event::LeaveFinished {
                id,
                result: Err(CommandError::HasLeft),
            });
            return id;
        }
        self.status = Status::Leaving {
            id,
            until: now + self.config.leave_timeout,
        };
        let update = Update {
            member: self.me.clone(),
            incarnation: self.incarnation,
            state: State::Left,
            addrs: self.my_addrs.to_vec(),
            by: None,
            credential: Credential::default(),
        };
        self.broadcasts.push(update);
        // Tell a few members directly so the news does not wait for the next probe.
        let fanout = self.config.indirect_probes.max(1);
        for to in self.random_live(fanout, None) {
            let seq = self.next_seq();
            self.send(to, Payload::Ping { seq }, None);
        }
        id
    }

    /// Adds members remembered from an earlier run (a persisted snapshot, or a simulator
    /// bootstrapping a converged cluster) as alive at incarnation 0, without events or gossip.
    /// They are probed like any member, so one that is gone is soon suspected. Members already
    /// known and ourselves are skipped. Returns how many were added.
    pub fn restore(&mut self, members: impl IntoIterator<Item = (T, Arc<[Address]>)>) -> usize {
        self.restore_at(members.into_iter().map(|(id, addrs)| (id, addrs, 0)))
    }

    /// [`restore`](Self::restore) with each member's incarnation: for a caller that knows them
    /// (a simulator starting a converged network), so their first messages are not news to
    /// gossip again.
    pub fn restore_at(
        &mut self,
        members: impl IntoIterator<Item = (T, Arc<[Address]>, u64)>,
    ) -> usize {
        let members = members.into_iter();
        // Room for the whole list at once: no rehash at every doubling while it is copied in.
        let room = self.config.max_members.get() - self.members.len();
        self.members.reserve(members.size_hint().0.min(room));
        let mut added = 0;
        for (id, addrs, incarnation) in members {
            if id == self.me || self.members.contains(&id) {
                continue;
            }
            if self.members.len() >= self.config.max_members.get() {
                self.stats.members_dropped += 1;
                continue;
            }
            // Empty lists are not stored: every member without addresses shares one.
            self.members.push(id, incarnation, State::Alive, addrs);
            self.live += 1;
            added += 1;
        }
        self.members.new_round(&mut self.rng);
        added
    }

    /// Probes `id` (a live member) soon, beside the round-robin order: for a caller with a hint
    /// that it may have failed, such as every connection to it closing at once, as a crashed
    /// process's do. Such checks run one at a time, each a whole probe (ping, then helpers), the
    /// next when the one under way ends (at once if none is); the round-robin order keeps its
    /// pace. At most eight wait. Returns whether it was queued.
    pub fn probe_soon(&mut self, now: Instant, id: &T) -> bool {
        let probing = self.probes.iter().flatten().any(|p| p.target == *id);
        if !self.members.is_live(id)
            || probing
            || self.soon.contains(id)
            || self.soon.len() >= MAX_PROBE_SOON
        {
            return false;
        }
        self.soon.push_back(id.clone());
        self.start_check(now);
        true
    }

    /// The transport could not reach `id` at all: a dial to it was refused or failed, and no
    /// connection to it is open (a crashed process's host refuses at once). Waiting out the
    /// probe timeout cannot bring an ack over a connection that does not exist, so a probe of
    /// `id` still waiting for its direct ack asks its helpers now, and pings this node relays to
    /// `id` are nacked now: a crash then reaches its first suspicion within a round trip or two
    /// instead of a probe window, while the suspicion's own timeout, which gives a live member
    /// its time to refute, is untouched. A loss of a message on the way is no such news (it
    /// only goes unanswered), so loss cannot trigger this. Returns whether anything moved.
    pub fn unreachable(&mut self, now: Instant, id: &T) -> bool {
        let now = self.clock(now);
        let mut moved = false;
        for p in self.probes.iter_mut().flatten() {
            if p.target == *id && !p.acked && !p.indirect_sent && p.indirect_at > now {
                p.indirect_at = now;
                moved = true;
            }
        }
        let mut failed: Vec<u64> = self
            .relays
            .iter()
            .filter(|(_, r)| r.target == *id)
            .map(|(seq, _)| *seq)
            .collect();
        // In sequence order, not the hash map's: the nacks go out in this order.
        failed.sort_unstable();
        for seq in failed {
            moved |= self.nack_relay(seq);
        }
        if moved {
            self.run_probe(now);
        }
        moved
    }

    /// Drops `id` at once, without an event, a tombstone or gossip: for a caller that finds a
    /// member should never have been listed (an identity check that ended after SWIM learned of
    /// it refused the member). Later news naming it is taken as news of a stranger. Returns
    /// whether it was listed.
    pub fn forget(&mut self, id: &T) -> bool {
        let Some((_, state)) = self.members.get(id) else {
            return false;
        };
        if matches!(state, State::Alive | State::Suspect) {
            self.live -= 1;
        }
        self.suspicions.stop(id);
        self.members.remove(id);
        true
    }

    // ----- input -----

    /// Handles a message that `from` sent us.
    pub fn handle_message(&mut self, now: Instant, from: T, msg: Message<T>) {
        let now = self.clock(now);
        if self.status == Status::Left || from == self.me {
            return;
        }
        let mut corrections = Vec::new();
        for update in msg.gossip.into_iter().take(message::MAX_GOSSIP_UPDATES) {
            if let Some(fresher) = self.fresher_than(&update) {
                corrections.push(fresher);
            }
            self.apply(now, update, false);
        }
        self.correct(from.clone(), corrections);
        self.hasten_round(now);
        match msg.payload {
            Payload::Ping { seq } => {
                let buddy = self.news_about(&from);
                self.send(from, Payload::Ack { seq }, buddy);
            }
            Payload::Ack { seq } => self.on_ack(now, from, seq),
            Payload::Nack { seq } => {
                if let Some(p) = self.probe_by_seq(seq) {
                    p.nacks += 1;
                    if p.nacks >= p.expected_nacks {
                        self.run_probe(now);
                    }
                }
            }
            Payload::PingReq { seq, target } => self.on_ping_req(now, from, seq, target),
            Payload::Digest { hash } => {
                if !self.whole_view_fits() || self.view_digest() != hash {
                    self.send_push_pull(from, false, true);
                }
            }
            Payload::Gossip => {}
            Payload::PushPull {
                join,
                reply,
                members,
            } => {
                // A joiner this node did not hold alive is news to announce once it is applied.
                let news = join && self.members.state(&from) != Some(State::Alive);
                let mut members = members;
                members.truncate(message::MAX_PUSH_PULL_MEMBERS);
                self.members.warm(members.iter().map(|u| &u.member));
                for update in members {
                    self.apply(now, update, true);
                }
                if reply {
                    self.send_push_pull(from.clone(), false, false);
                }
                if news {
                    self.announce_join(now, from.clone());
                }
                if let Some((id, _)) = self.join.take() {
                    let live = self.live;
                    self.emit(Event::JoinFinished {
                        id,
                        result: Ok(live),
                    });
                }
            }
        }
    }

    /// Handles every deadline up to `now`. Call it when [`poll_timeout`](Self::poll_timeout)
    /// passes; calling it early is harmless.
    pub fn handle_timeout(&mut self, now: Instant) {
        let now = self.clock(now);
        if self.status == Status::Left {
            return;
        }
        if let Status::Leaving { id, until } = self.status
            && (now >= until || !self.broadcasts.contains(&self.me))
        {
            self.status = Status::Left;
            self.probes = [None, None];
            self.transmits
                .retain(|t| matches!(t.msg.payload, Payload::Ack { .. }));
            self.emit(Event::LeaveFinished { id, result: Ok(()) });
            return;
        }
        if let Some((id, deadline)) = self.join
            && now >= deadline
        {
            self.join = None;
            self.emit(Event::JoinFinished {
                id,
                result: Err(CommandError::NoSeedAnswered),
            });
        }
        self.expire_relays(now);
        self.expire_suspicions(now);
        self.hasten_round(now);
        self.expire_tombstones(now);
        self.broadcasts.shrink();
        self.members.shrink();
        self.suspicions.shrink();
        shrink_drained(&mut self.events);
        shrink_drained(&mut self.transmits);
        self.run_probe(now);
        if now >= self.next_push_pull {
            self.next_push_pull = now
                + self.config.push_pull_interval / 2
                + jitter(&mut self.rng, self.config.push_pull_interval);
            if let Some(to) = self.random_live(1, None).pop() {
                self.start_sync(to);
            }
        }
        if now >= self.next_gossip {
            self.next_gossip = now + self.config.gossip_interval;
            self.last_round = now;
            self.gossip_round();
        }
        if !self.joiners.is_empty() && now >= self.next_announce {
            self.flush_joiners(now);
        }
        if now >= self.next_reconnect {
            self.next_reconnect = now
                + self.config.reconnect_interval / 2
                + jitter(&mut self.rng, self.config.reconnect_interval);
            self.reconnect();
        }
    }

    // ----- output -----

    /// Next message to send. Changes only after a `handle_*` call or a command.
    pub fn poll_transmit(&mut self) -> Option<Transmit<T>> {
        self.transmits.pop_front()
    }

    /// Next event. Changes only after a `handle_*` call or a command.
    pub fn poll_event(&mut self) -> Option<Event<T>> {
        self.events.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) must next be called; `None` once the core
    /// has left. Changes after every `handle_*` call and command.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut next = match self.status {
            Status::Left => return None,
            Status::Leaving { until, .. } => until.min(self.next_probe),
            Status::Active => self.next_probe,
        };
        let mut consider = |t: Instant| {
            if t < next {
                next = t;
            }
        };
        for p in self.probes.iter().flatten() {
            if !p.acked && !p.indirect_sent {
                consider(p.indirect_at);
            }
            consider(p.ends_at);
        }
        if let Some(t) = self.suspicions.next_deadline() {
            consider(t);
        }
        if let Some((t, _)) = self.relay_timers.front() {
            consider(*t);
        }
        if let Some(t) = self.tombstones.front() {
            consider(t.at.instant(self.epoch));
        }
        if let Some((_, t)) = self.join {
            consider(t);
        }
        consider(self.next_push_pull);
        consider(self.next_reconnect);
        if self.broadcasts.len() > 0 && self.config.gossip_fanout > 0 {
            consider(self.next_gossip);
        }
        if !self.joiners.is_empty() {
            consider(self.next_announce);
        }
        Some(next)
    }

    // ----- internals: probing -----

    fn run_probe(&mut self, now: Instant) {
        for lane in [Lane::Round, Lane::Check] {
            self.advance_probe(now, lane);
        }
        if self.probes[Lane::Round as usize].is_none()
            && now >= self.next_probe
            && self.status != Status::Left
        {
            let mult = self.local_health + 1;
            match self.next_target() {
                Some(target) => self.next_probe = self.start_probe(now, Lane::Round, target),
                None => self.next_probe = now + self.config.probe_interval * mult,
            }
        }
        self.start_check(now);
    }

    /// Moves the probe of `lane` on: helpers once its direct ping timed out, its end (and the
    /// suspicion of a silent target) once its window passed or every helper nacked.
    fn advance_probe(&mut self, now: Instant, lane: Lane) {
        let slot = lane as usize;
        if let Some(p) = &mut self.probes[slot]
            && !p.acked
            && !p.indirect_sent
            && now >= p.indirect_at
        {
            p.indirect_sent = true;
            let (target, seq) = (p.target.clone(), p.seq);
            let helpers = self.random_live(self.config.indirect_probes, Some(&target));
            if let Some(p) = &mut self.probes[slot] {
                p.expected_nacks = helpers.len() as u32;
            }
            for h in helpers {
                self.send(
                    h,
                    Payload::PingReq {
                        seq,
                        target: target.clone(),
                    },
                    None,
                );
            }
        }
        // The probe ends at the end of its window or, earlier, once every helper has nacked:
        // then no indirect ack can come, and a direct one is long overdue.
        if let Some(p) = &self.probes[slot]
            && (now >= p.ends_at
                || (!p.acked && p.expected_nacks > 0 && p.nacks >= p.expected_nacks))
        {
            // Invariant: checked `is_some` just above.
            let p = self.probes[slot].take().expect("probe is present");
            if p.acked {
                self.local_health = self.local_health.saturating_sub(1);
            } else {
                self.stats.failed_probes += 1;
                // Lifeguard: a failed probe with nacks missing says our own messages may be
                // late. Once per probe, not once per missing nack: under loss that the whole
                // network shares, nacks go missing as often as pings, and counting each of them
                // held the score near its maximum at 30 % loss, stretching every probe window
                // nine times; members then probed so rarely that a crash could go unnoticed for
                // half a minute. A member that is slow itself misses every ack, and its score
                // still climbs by one a probe.
                let missed = p.expected_nacks == 0 || p.nacks < p.expected_nacks;
                self.local_health =
                    (self.local_health + u32::from(missed)).min(self.config.max_local_health);
                self.suspect_locally(now, p.target);
            }
            if lane == Lane::Round {
                // Keep the probe rate: the next probe starts when this window would have ended.
                self.next_probe = p.ends_at.max(now);
            }
        }
    }

    /// Starts the check lane's next probe if it is free and a member waits for it.
    fn start_check(&mut self, now: Instant) {
        if self.probes[Lane::Check as usize].is_some() || self.status != Status::Active {
            return;
        }
        while let Some(id) = self.soon.pop_front() {
            let in_round = self.probes[Lane::Round as usize]
                .as_ref()
                .is_some_and(|p| p.target == id);
            if self.members.is_live(&id) && !in_round {
                self.start_probe(now, Lane::Check, id);
                return;
            }
        }
    }

    /// Pings `target` and opens the probe of `lane`, whose window the local health stretches;
    /// returns when that window ends.
    fn start_probe(&mut self, now: Instant, lane: Lane, target: T) -> Instant {
        let mult = self.local_health + 1;
        self.stats.probes += 1;
        let seq = self.next_seq();
        let buddy = self.news_about(&target);
        self.send(target.clone(), Payload::Ping { seq }, buddy);
        let ends_at = now + self.config.probe_window() * mult;
        self.probes[lane as usize] = Some(Probe {
            target,
            seq,
            indirect_at: now + self.config.probe_timeout * mult,
            ends_at,
            acked: false,
            indirect_sent: false,
            expected_nacks: 0,
            nacks: 0,
        });
        ends_at
    }

    /// The probe under way whose ping carried `seq`.
    fn probe_by_seq(&mut self, seq: u64) -> Option<&mut Probe<T>> {
        self.probes.iter_mut().flatten().find(|p| p.seq == seq)
    }

    /// Next member of the shuffled round-robin order that is alive or suspect.
    fn next_target(&mut self) -> Option<T> {
        if self.live == 0 {
            return None;
        }
        self.members.next_live(&mut self.rng)
    }

    fn on_ack(&mut self, now: Instant, from: T, seq: u64) {
        if let Some(p) = self.probe_by_seq(seq) {
            p.acked = true;
            return;
        }
        if let Some(relay) = self.relays.remove(&seq) {
            self.send(
                relay.origin,
                Payload::Ack {
                    seq: relay.origin_seq,
                },
                None,
            );
            return;
        }
        if let Some(pos) = self.reconnect_pings.iter().position(|(s, _)| *s == seq) {
            // A member we believed dead answered: exchange full state to merge both views.
            self.reconnect_pings.remove(pos);
            let _ = now;
            self.send_push_pull(from, false, true);
        }
    }

    fn on_ping_req(&mut self, now: Instant, from: T, seq: u64, target: T) {
        if target == self.me {
            self.send(from, Payload::Ack { seq }, None);
            return;
        }
        if self.relays.len() >= self.config.max_relays.get() {
            self.stats.relays_dropped += 1;
            return;
        }
        let my_seq = self.next_seq();
        self.relays.insert(
            my_seq,
            Relay {
                origin: from,
                origin_seq: seq,
                target: target.clone(),
            },
        );
        // Nack early enough for the requester to count it within its probe window.
        self.relay_timers
            .push_back((now + self.config.probe_timeout * 4 / 5, my_seq));
        let buddy = self.news_about(&target);
        self.send(target, Payload::Ping { seq: my_seq }, buddy);
    }

    fn expire_relays(&mut self, now: Instant) {
        while let Some(&(t, seq)) = self.relay_timers.front() {
            if t > now {
                break;
            }
            self.relay_timers.pop_front();
            self.nack_relay(seq);
        }
    }

    /// Ends the relayed ping `seq`, if still under way, with a nack to the member that asked
    /// for it. Returns whether it was under way.
    fn nack_relay(&mut self, seq: u64) -> bool {
        let Some(relay) = self.relays.remove(&seq) else {
            return false;
        };
        self.send(
            relay.origin,
            Payload::Nack {
                seq: relay.origin_seq,
            },
            None,
        );
        true
    }

    fn reconnect(&mut self) {
        if self.status != Status::Active {
            return;
        }
        // Candidates: a random dead member (from the tombstones) or a seed that is not live.
        let mut dead = None;
        for _ in 0..8 {
            if self.tombstones.is_empty() {
                break;
            }
            let i = self.rng.gen_range(0..self.tombstones.len());
            let id = &self.tombstones[i].id;
            if self.members.state(id) == Some(State::Dead) {
                dead = Some(id.clone());
                break;
            }
        }
        let seeds: Vec<T> = self
            .seeds
            .iter()
            .filter(|s| !self.members.is_live(s))
            .cloned()
            .collect();
        let use_seed = match (&dead, seeds.is_empty()) {
            (None, true) => return,
            (None, false) => true,
            (Some(_), true) => false,
            (Some(_), false) => self.rng.gen_bool(0.5),
        };
        if use_seed {
            // Invariant: `use_seed` implies `seeds` is not empty.
            let seed = seeds
                .choose(&mut self.rng)
                .expect("seeds not empty")
                .clone();
            self.send_push_pull(seed, false, true);
        } else if let Some(id) = dead {
            let seq = self.next_seq();
            if self.reconnect_pings.len() >= MAX_RECONNECT_PINGS {
                self.reconnect_pings.pop_front();
            }
            self.reconnect_pings.push_back((seq, id.clone()));
            let buddy = self.news_about(&id);
            self.send(id, Payload::Ping { seq }, buddy);
        }
    }

    // ----- internals: suspicion -----

    /// Our own probe of `target` failed.
    fn suspect_locally(&mut self, now: Instant, target: T) {
        let Some((incarnation, state)) = self.members.get(&target) else {
            return;
        };
        if !matches!(state, State::Alive | State::Suspect) {
            return;
        }
        let update = Update {
            member: target,
            incarnation,
            state: State::Suspect,
            addrs: Vec::new(),
            by: Some(self.me.clone()),
            credential: Credential::default(),
        };
        self.apply(now, update, false);
    }

    /// `(min, max)` suspicion timeouts for the current cluster size.
    fn suspicion_bounds(&self) -> (Duration, Duration) {
        let n = (self.live + 1) as f64;
        let scale = n.log10().max(1.0);
        let min = self
            .config
            .probe_interval
            .mul_f64(self.config.suspicion_alpha.get() as f64 * scale);
        (min, min * self.config.suspicion_beta.get())
    }

    /// The suspicion timeout after `confirmations` (see [`suspicion_timeout`]).
    fn suspicion_timeout(&self, confirmations: usize) -> Duration {
        let (min, max) = self.suspicion_bounds();
        let k = self.config.suspicion_confirmations.get() as usize;
        suspicion_timeout(min, max, k, confirmations)
    }

    fn start_suspicion(&mut self, now: Instant, member: T, by: T) {
        let deadline = now + self.suspicion_timeout(0);
        self.suspicions.start(member, by, now, deadline);
    }

    /// Someone else suspects `member`, news to us: with probability `(K + 1) / live` we probe it
    /// next ourselves, so that about `K + 1` members of any size of cluster check it at once.
    /// A crashed member then gets the `K` independent confirmations that bring its suspicion to
    /// the minimum timeout within about a probe window of the first suspicion, instead of
    /// waiting for the round-robin orders to reach it, which under heavy loss (local health
    /// stretching every window) took tens of seconds; a live one answers, and its refutation
    /// rides our ping. These probes take the check lane ([`Lane::Check`]), so members that hear
    /// of many suspicions still keep their round-robin order's pace.
    fn maybe_confirm_soon(&mut self, now: Instant, member: &T) {
        let k = self.config.suspicion_confirmations.get() as f64;
        let share = (k + 1.0) / self.live.max(1) as f64;
        if self.rng.gen_bool(share.min(1.0)) {
            self.probe_soon(now, member);
        }
    }

    /// Whether `by` suspecting `member` counts as a new independent confirmation of the
    /// suspicion we hold (Lifeguard counts at most `K` besides the first suspector).
    fn counts_as_confirmation(&self, member: &T, by: &T) -> bool {
        let k = self.config.suspicion_confirmations.get() as usize;
        self.suspicions.counts(member, by, k)
    }

    /// Counts a confirmation that [`Self::counts_as_confirmation`] accepted, shortening the
    /// suspicion.
    fn confirm_suspicion(&mut self, member: &T, by: &T) {
        let k = self.config.suspicion_confirmations.get() as usize;
        // The timeout of a confirmation uses the cluster size when the confirmation arrives.
        let (min, max) = self.suspicion_bounds();
        let timeout = |c| suspicion_timeout(min, max, k, c);
        self.suspicions.confirm(member, by, k, timeout);
    }

    fn stop_suspicion(&mut self, member: &T) {
        self.suspicions.stop(member);
    }

    fn expire_suspicions(&mut self, now: Instant) {
        while let Some(due) = self.suspicions.pop_due(now) {
            let member = match due {
                Due::Check(member) => {
                    self.check_suspect(member);
                    continue;
                }
                Due::Expired(member) => member,
            };
            let Some((incarnation, State::Suspect)) = self.members.get(&member) else {
                continue;
            };
            let update = Update {
                member,
                incarnation,
                state: State::Dead,
                addrs: Vec::new(),
                by: Some(self.me.clone()),
                credential: Credential::default(),
            };
            self.apply(now, update, false);
        }
    }

    /// The last check of a suspicion short of `K` confirmations, one probe timeout before it
    /// declares `member` dead: we tell the suspect (whose ack carries its refutation, if it made
    /// one) and a few random members (each corrects us at once if it knows of a refutation; see
    /// [`Self::correct`]). A member that missed a refutation while everyone else heard it, as
    /// one suspected itself at the time can under heavy loss, then learns it before declaring a
    /// healthy member dead. A real crash costs each member these few messages, once; a
    /// suspicion with `K` confirmations, the usual crash of a large cluster, needs no check.
    fn check_suspect(&mut self, member: T) {
        if self.status != Status::Active {
            return;
        }
        let Some(news) = self.news_about(&member) else {
            return;
        };
        if news.state != State::Suspect {
            return;
        }
        let seq = self.next_seq();
        self.send(member.clone(), Payload::Ping { seq }, Some(news.clone()));
        for to in self.random_live(self.config.indirect_probes.max(1), Some(&member)) {
            self.send(to, Payload::Gossip, Some(news.clone()));
        }
    }

    fn expire_tombstones(&mut self, now: Instant) {
        while let Some(t) = self.tombstones.front() {
            if t.at.instant(self.epoch) > now {
                break;
            }
            // Invariant: `front` returned an entry just above.
            let t = self.tombstones.pop_front().expect("tombstone exists");
            if let Some((incarnation, State::Dead | State::Left)) = self.members.get(&t.id)
                && incarnation == t.incarnation()
            {
                self.members.remove(&t.id);
            }
        }
    }

    fn add_tombstone(&mut self, now: Instant, id: T, incarnation: u64) {
        if self.tombstones.len() > 2 * self.config.max_members.get() {
            let members = &self.members;
            self.tombstones.retain(|t| {
                members.get(&t.id).is_some_and(|(incarnation, state)| {
                    matches!(state, State::Dead | State::Left) && incarnation == t.incarnation()
                })
            });
        }
        self.tombstones.push_back(Tombstone {
            at: Ticks::new(self.epoch, now + self.config.dead_retention),
            id,
            incarnation: [incarnation as u32, (incarnation >> 32) as u32],
        });
    }

    // ----- internals: news -----

    /// Sends `to` the refutations it missed, in a gossip-only message of their own (bounded by
    /// the gossip budget), so that a member holding a stale suspicion learns the refutation
    /// before its suspicion timer declares a live member dead. Piggyback alone retransmits a
    /// refutation only `λ · log(n + 1)` times to random members and can miss it.
    fn correct(&mut self, to: T, updates: Vec<Update<T>>) {
        if updates.is_empty() || self.status != Status::Active {
            return;
        }
        let mut budget = self.config.gossip_budget.get();
        let mut gossip = Vec::new();
        for u in updates {
            let size = message::encoded_len(&u);
            if size > budget || gossip.len() >= message::MAX_GOSSIP_UPDATES {
                break;
            }
            budget -= size;
            gossip.push(u);
        }
        self.push_transmit(Transmit {
            to,
            msg: Message {
                payload: Payload::Gossip,
                gossip,
            },
        });
    }

    /// The news to tell `id` about itself if we do not believe it alive (the buddy system).
    fn news_about(&self, id: &T) -> Option<Update<T>> {
        let (incarnation, state) = self.members.get(id)?;
        if state == State::Alive {
            return None;
        }
        let by = match state {
            State::Suspect => Some(
                self.suspicions
                    .by(id)
                    .map_or_else(|| self.me.clone(), T::clone),
            ),
            State::Dead => Some(self.me.clone()),
            _ => None,
        };
        Some(Update {
            member: id.clone(),
            incarnation,
            state,
            addrs: Vec::new(),
            by,
            credential: Credential::default(),
        })
    }

    fn my_update(&self) -> Update<T> {
        Update {
            member: self.me.clone(),
            incarnation: self.incarnation,
            state: State::Alive,
            addrs: self.my_addrs.to_vec(),
            by: None,
            credential: Credential::default(),
        }
    }

    // ----- internals: output -----

    fn send(&mut self, to: T, payload: Payload<T>, buddy: Option<Update<T>>) {
        let mut gossip = Vec::new();
        let mut budget = self.config.gossip_budget.get();
        if let Some(b) = buddy {
            budget = budget.saturating_sub(message::encoded_len(&b));
            gossip.push(b);
        }
        let limit = self.retransmit_limit();
        // Our own news rides first, until its retransmissions are spent. Queued freshest-first
        // among everyone's, a refutation waited behind all newer news about others: under heavy
        // loss in a large cluster, where suspicions are queued by the hundred, only the first of
        // the refutation's own messages carried it, and when those few were lost it stayed
        // queued, unsent, until the suspicion timed out everywhere.
        if let Some(mine) = self.broadcasts.take(&self.me, budget, limit) {
            budget = budget.saturating_sub(message::encoded_len(&mine));
            gossip.push(mine);
        }
        let skip: Vec<T> = gossip.iter().map(|u| u.member.clone()).collect();
        self.broadcasts.fill(
            budget,
            message::MAX_GOSSIP_UPDATES - gossip.len().max(1),
            limit,
            &skip,
            &mut gossip,
        );
        if payload == Payload::Gossip && gossip.is_empty() {
            return;
        }
        self.push_transmit(Transmit {
            to,
            msg: Message { payload, gossip },
        });
    }

    /// One round of dedicated gossip: the queued updates that rounds have not carried enough,
    /// in one message to `gossip_fanout` random live members.
    ///
    /// A death or a departure rides `ceil(λ · ceil(log10(n + 1)) / fanout)` rounds, as many
    /// members as the piggyback reaches, so that every member hears of it within a few rounds.
    /// Other news (suspicions, refutations, joins) rides one round: under loss it is most of the
    /// traffic (a suspicion and a refutation per missed probe), one round already brings it to
    /// most members within tens of milliseconds, and the piggyback then carries it to the rest.
    ///
    /// Suspected members are among the recipients: one is most likely alive, and a round that
    /// skipped it left it without the news that went round while it was suspected. Rounds have
    /// a budget of their own (see [`Broadcasts::fill_round`]), so the piggyback on probes and
    /// acks still carries every update its `λ · ceil(log10(n + 1))` times.
    fn gossip_round(&mut self) {
        let fanout = self.config.gossip_fanout;
        if fanout == 0 || self.broadcasts.len() == 0 || self.status == Status::Left {
            return;
        }
        let gone = self.retransmit_limit().div_ceil(fanout as u32);
        let mut gossip = Vec::new();
        self.broadcasts.fill_round(
            self.config.gossip_budget.get(),
            message::MAX_GOSSIP_UPDATES,
            (1, gone),
            &mut gossip,
        );
        if gossip.is_empty() {
            return;
        }
        for to in self.random_members(fanout, None, true) {
            self.push_transmit(Transmit {
                to,
                msg: Message {
                    payload: Payload::Gossip,
                    gossip: gossip.clone(),
                },
            });
        }
    }

    /// Brings the next gossip round forward when news other than a suspicion was queued, so that
    /// a death, a join or a refutation does not wait for the round timer; rounds stay at least a
    /// quarter of `gossip_interval` apart, so a burst of news shares one.
    fn hasten_round(&mut self, now: Instant) {
        if self.config.gossip_fanout == 0 || !self.broadcasts.has_urgent() {
            return;
        }
        let soonest = (self.last_round + self.config.gossip_interval / 4).max(now);
        self.next_gossip = self.next_gossip.min(soonest);
    }

    /// SWIM's `λ · ceil(log10(n + 1))`: how many times the piggyback carries each update.
    fn retransmit_limit(&self) -> u32 {
        let n = (self.live + 2) as f64;
        self.config.retransmit_mult.get() * n.log10().ceil().max(1.0) as u32
    }

    fn send_push_pull(&mut self, to: T, join: bool, reply: bool) {
        let max = self.config.max_push_pull_members.get();
        let mine = self.my_update();
        // Stay within the message size: stop before the first entry that would not fit, leaving
        // room for the envelope (payload tag, flags, list header).
        let mut budget = self
            .config
            .max_message_bytes
            .get()
            .saturating_sub(16 + message::encoded_len(&mine));
        let mut members = Vec::with_capacity(max.min(self.members.len() + 1));
        members.push(mine);
        // A table larger than a push-pull holds is sampled uniformly, in random order: every
        // member, live or gone, has the same chance to be told, whatever the size cut drops. A
        // smaller one is sent whole, in probe order (already shuffled).
        let table = &self.members;
        let ids: Vec<&T> = if table.len() < max {
            table.in_order().collect()
        } else {
            table.sample(&mut self.rng, max - 1).collect()
        };
        table.warm(ids.iter().copied());
        for id in ids {
            let Some(u) = self.update_of(id) else {
                continue;
            };
            let size = message::encoded_len(&u);
            if size > budget {
                break;
            }
            budget -= size;
            members.push(u);
        }
        self.push_transmit(Transmit {
            to,
            msg: Message {
                payload: Payload::PushPull {
                    join,
                    reply,
                    members,
                },
                gossip: Vec::new(),
            },
        });
    }

    /// The periodic anti-entropy exchange with `to`: the view's digest while the whole view
    /// fits in one push-pull (`to` answers with its table only if its view differs), the
    /// push-pull itself once it does not (a sampled table proves nothing by its hash).
    fn start_sync(&mut self, to: T) {
        if self.whole_view_fits() {
            let hash = self.view_digest();
            self.send(to, Payload::Digest { hash }, None);
        } else {
            self.send_push_pull(to, false, true);
        }
    }

    /// Whether a push-pull carries the whole table rather than a sample of it.
    fn whole_view_fits(&self) -> bool {
        self.members.len() < self.config.max_push_pull_members.get()
    }

    /// [`message::view_digest`] of what a push-pull of the whole table would carry.
    fn view_digest(&self) -> u64 {
        let mine = (&self.me, self.incarnation, State::Alive, &self.my_addrs[..]);
        let table = &self.members;
        let others = table.in_order().filter_map(|id| {
            let (incarnation, state, addrs) = table.record(id)?;
            Some((id, incarnation, state, &addrs[..]))
        });
        message::view_digest(std::iter::once(mine).chain(others))
    }

    /// What this node holds about `id`, as an update to tell others.
    fn update_of(&self, id: &T) -> Option<Update<T>> {
        let (incarnation, state, addrs) = self.members.record(id)?;
        // A suspicion names its first suspector, not us: we relay it, and a receiver that holds
        // it too must not count us as one more independent confirmation (each push-pull would
        // otherwise shorten every running suspicion of its receiver and, through the
        // confirmation it gossips on, everyone's).
        let by = match state {
            State::Suspect => Some(self.suspicions.by(id).unwrap_or(&self.me).clone()),
            State::Dead => Some(self.me.clone()),
            State::Alive | State::Left => None,
        };
        Some(Update {
            member: id.clone(),
            incarnation,
            state,
            addrs: addrs.to_vec(),
            by,
            credential: Credential::default(),
        })
    }

    /// Tells up to `join_fanout` random members that `joiner` joined through this node (see
    /// [`Config::join_fanout`]): at once if no announcement went out in the last quarter of
    /// `gossip_interval`, else with the others that join meanwhile, in one message per member.
    /// In a network started together the joins reach a seed a few milliseconds apart; a
    /// message per joiner and member made the seed send thousands of small messages while
    /// it was the busiest node.
    fn announce_join(&mut self, now: Instant, joiner: T) {
        if self.config.join_fanout == 0 {
            return;
        }
        if !self.joiners.contains(&joiner) && self.joiners.len() < message::MAX_GOSSIP_UPDATES {
            self.joiners.push(joiner);
        }
        if now >= self.next_announce {
            self.flush_joiners(now);
        }
    }

    /// Sends the waiting joiners' news (those still alive, up to `gossip_budget` bytes; the
    /// rest wait for the next announcement) to up to `join_fanout` random members, each told
    /// of the joiners other than itself.
    fn flush_joiners(&mut self, now: Instant) {
        let budget = self.config.gossip_budget.get();
        let mut used = 0;
        let mut news: Vec<Update<T>> = Vec::new();
        let mut later = Vec::new();
        for joiner in std::mem::take(&mut self.joiners) {
            let Some(update) = self.update_of(&joiner).filter(|u| u.state == State::Alive) else {
                continue;
            };
            let len = message::encoded_len(&update);
            if !news.is_empty() && used + len > budget {
                later.push(joiner);
                continue;
            }
            used += len;
            news.push(update);
        }
        self.joiners = later;
        if news.is_empty() {
            return;
        }
        let except = (news.len() == 1).then(|| news[0].member.clone());
        for to in self.random_members(self.config.join_fanout, except.as_ref(), false) {
            let gossip: Vec<Update<T>> = news.iter().filter(|u| u.member != to).cloned().collect();
            if gossip.is_empty() {
                continue;
            }
            self.next_announce = now + self.config.gossip_interval / 4;
            self.stats.joins_announced += 1;
            self.push_transmit(Transmit {
                to,
                msg: Message {
                    payload: Payload::Gossip,
                    gossip,
                },
            });
        }
    }

    fn push_transmit(&mut self, t: Transmit<T>) {
        if self.transmits.len() >= self.config.max_transmit_queue.get() {
            self.stats.transmits_dropped += 1;
            return;
        }
        self.transmits.push_back(t);
    }

    fn emit(&mut self, event: Event<T>) {
        // Every change is counted and logged here, once, even if the event queue drops it.
        let changes = &mut self.stats.changes;
        match &event {
            Event::Joined {
                member,
                incarnation,
                ..
            } => {
                changes.joined += 1;
                tracing::info!(peer = ?member, state = "alive", incarnation, "member joined");
            }
            Event::Suspected {
                member,
                incarnation,
                by,
                ..
            } => {
                changes.suspected += 1;
                tracing::info!(peer = ?member, state = "suspect", incarnation, by = ?by, "member suspected");
            }
            Event::Refuted {
                member,
                incarnation,
                ..
            } => {
                changes.refuted += 1;
                tracing::info!(peer = ?member, state = "alive", incarnation, "member refuted a suspicion");
            }
            Event::Failed {
                member,
                incarnation,
                ..
            } => {
                changes.failed += 1;
                tracing::info!(peer = ?member, state = "dead", incarnation, "member failed");
            }
            Event::Left {
                member,
                incarnation,
                ..
            } => {
                changes.left += 1;
                tracing::info!(peer = ?member, state = "left", incarnation, "member left");
            }
            Event::JoinFinished { .. } | Event::LeaveFinished { .. } => {}
        }
        if self.events.len() >= self.config.max_event_queue.get() {
            self.events.pop_front();
            self.stats.events_dropped += 1;
        }
        self.events.push_back(event);
    }

    // ----- internals: helpers -----

    /// Up to `count` random members believed alive, excluding `except`.
    fn random_live(&mut self, count: usize, except: Option<&T>) -> Vec<T> {
        self.random_members(count, except, false)
    }

    /// Up to `count` random members believed alive, or suspect too if `suspects`, excluding
    /// `except`.
    fn random_members(&mut self, count: usize, except: Option<&T>, suspects: bool) -> Vec<T> {
        if count == 0 || self.live == 0 {
            return Vec::new();
        }
        // Draw from this probe round's members (live when it started or since) and skip those
        // not alive: a few tries per member wanted, more when many died during the round, never
        // a scan.
        let spread = self.members.active_len().div_ceil(self.live).min(8);
        let tries = (count * 4 + 8) * spread;
        let mut out: Vec<T> = Vec::with_capacity(count);
        for _ in 0..tries {
            if out.len() >= count {
                break;
            }
            let Some(id) = self.members.random_active(&mut self.rng) else {
                break;
            };
            if Some(id) == except || out.contains(id) {
                continue;
            }
            match self.members.state(id) {
                Some(State::Alive) => out.push(id.clone()),
                Some(State::Suspect) if suspects => out.push(id.clone()),
                _ => {}
            }
        }
        out
    }

    fn next_seq(&mut self) -> u64 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    fn command_id(&mut self) -> CommandId {
        self.next_command += 1;
        CommandId(self.next_command)
    }

    fn clock(&mut self, now: Instant) -> Instant {
        if now > self.last_now {
            self.last_now = now;
        }
        self.last_now
    }
}

/// Lifeguard's suspicion timeout after `confirmations` independent confirmations, with `k` the
/// most that count: `max - (max - min) · log(c + 1) / log(k + 1)`, never below `min`.
fn suspicion_timeout(min: Duration, max: Duration, k: usize, confirmations: usize) -> Duration {
    let k = k as f64;
    let c = (confirmations as f64).min(k);
    let frac = (c + 1.0).ln() / (k + 1.0).ln();
    let t = max.as_secs_f64() - (max - min).as_secs_f64() * frac;
    Duration::from_secs_f64(t.max(min.as_secs_f64()))
}

/// A random duration in `[0, d)`.
fn jitter(rng: &mut StdRng, d: Duration) -> Duration {
    d.mul_f64(rng.r#gen::<f64>())
}

/// Gives back the memory of a map that holds a quarter of its capacity or less: a burst (a
/// hundred members joining, a wave of suspicions) must not keep its peak allocation for good.
/// Amortised: after shrinking, the map must lose three quarters again before the next one.
pub(crate) fn shrink_sparse<K: Eq + std::hash::Hash, V>(map: &mut HashMap<K, V>) {
    if map.capacity() > 64 && map.len() * 4 <= map.capacity() {
        map.shrink_to_fit();
    }
}

/// Makes room for one more element in a vector that is full, growing it by a quarter instead of
/// doubling it: the per-member arrays of a core hold millions of entries across a simulator
/// after a mass failure, and a doubled array would leave up to half of its room unused.
/// Amortised like doubling (each element is moved a bounded number of times on average).
pub(crate) fn grow_gently<T>(v: &mut Vec<T>) {
    if v.len() == v.capacity() {
        v.reserve_exact(v.len() / 4 + 4);
    }
}

/// Gives back the room of a vector that holds half of its capacity or less, keeping a quarter
/// spare so that the next pushes do not grow it at once.
pub(crate) fn shrink_gently<T>(v: &mut Vec<T>) {
    if v.capacity() > 64 && v.len() * 2 <= v.capacity() {
        v.shrink_to(v.len() + v.len() / 4);
    }
}

/// Gives back the memory of a drained queue that once held a burst (a joining node's thousand
/// `Joined` events).
pub(crate) fn shrink_drained<T>(queue: &mut VecDeque<T>) {
    if queue.is_empty() && queue.capacity() > 64 {
        queue.shrink_to_fit();
    }
}

#[cfg(test)]
mod tests;
