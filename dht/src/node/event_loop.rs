//! The event loop: owns the swarm, the core and the writer, and translates between them.
//!
//! Each turn reads the clocks once, handles what woke it (a swarm event, a command, a commit, a
//! deadline), then, whatever woke it, a bounded number of further swarm events and queued
//! commands and every due deadline, so a swarm that always has an event ready cannot starve
//! clients or timers. It then carries out the core's actions and hands the turn's writes to the
//! writer, which commits them together.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{FutureExt, StreamExt};
use libp2p::core::transport::ListenerId;
use libp2p::swarm::dial_opts::DialOpts;
use libp2p::swarm::dial_opts::PeerCondition;
use libp2p::swarm::{ConnectionId, DialError, Swarm, SwarmEvent};
use libp2p::{Multiaddr, PeerId};
use serde_bytes::ByteBuf;
use shoal_pow::{IdentityProof, IdentityVerifier, NodeKey, Puzzle};
use shoal_swim::{Address, State};
use tokio::sync::{broadcast, mpsc, oneshot};

use super::checks::{Checker, NodeChecks, SharedVerifier, lock};
use super::traversal::Traversal;
use super::{
    Client, Command, ListenError, ListenResult, MAX_LISTED_PEERS, MAX_SNAPSHOT_PEERS, MemberInfo,
    NodeStats, NodeTransport, ReplyTo, Rpcs, SHUTDOWN_LEAVE_BOUND, StartError,
};
use crate::behaviour::{Behaviour, Event};
use crate::config::{Config, ConfigError};
use crate::core::{
    self, Action, Core, Durability, InboundId, OpId, Reply, RequestFailure, Restored, WriteId,
};
use crate::identity::{NodeKeyExt, PublicKeyExt};
use crate::lockstep::SignedNotice;
use crate::store::{self, Batch, Committed, Persist, Writer, WriterError, WriterEvents};
use crate::wire::Request;
use crate::{gate, link};

/// Swarm events handled at most in one turn (after the one that woke it, if any).
const SWARM_BUDGET: usize = 32;

/// Queued commands handled at most in one turn.
const COMMAND_BUDGET: usize = 16;

/// Batches the writer keeps in flight; more wait in the loop, which then stops taking input.
const WRITER_QUEUE: usize = 4096;

/// After SWIM's leave finished, how long the loop still runs so the last departure messages
/// reach their peers.
const LEAVE_GRACE: Duration = Duration::from_millis(200);

/// Wall-clock time, in Unix seconds: the only clock besides the monotonic one the loop reads
/// (tests step it back to check that nothing a node persisted goes backwards).
pub trait WallClock: Send + Sync + std::fmt::Debug {
    /// Seconds since the Unix epoch now.
    fn unix(&self) -> u64;
}

/// The system's clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl WallClock for SystemClock {
    fn unix(&self) -> u64 {
        shoal_pow::unix_now()
    }
}

/// A shutdown under way: SWIM is leaving.
struct Stopping {
    reply: oneshot::Sender<()>,
    leave: OpId,
    /// When the loop ends even if the leave has not finished.
    deadline: Instant,
}

/// Counters kept by the loop itself (what the swarm did).
#[derive(Debug, Default)]
struct Wire {
    dials: usize,
    redials: u64,
    reconnects: u64,
    relay_requests_unconnected: usize,
    swim_sent: u64,
    swim_malformed: u64,
    dht_malformed: u64,
    swim_undeliverable: u64,
    swim_sent_unconnected: u64,
    broadcast_sent: u64,
    broadcast_malformed: u64,
}

/// The outcome of an identity check run off the loop ([`Action::Verify`]).
type Checked = super::checks::Outcome;

/// Owns the swarm and the core; run it with [`EventLoop::run`].
pub struct EventLoop {
    swarm: Swarm<Behaviour>,
    core: Core<PeerId, NodeChecks>,
    commands: mpsc::Receiver<Command>,
    notices: broadcast::Sender<SignedNotice>,
    members: broadcast::Sender<crate::api::MemberChange>,
    clock: Arc<dyn WallClock>,
    verifier: SharedVerifier,
    writer: Option<(Writer, WriterEvents)>,
    /// The database, for the failure-injection hook ([`Client::dangerous_fail_writes`]); only
    /// the writer writes to it.
    persist: Option<Arc<Persist>>,
    /// Writes of this turn and earlier ones not taken by the writer yet, in order.
    writes: VecDeque<(store::WriteId, Batch)>,
    max_swim_bytes: usize,
    broadcast_limits: shoal_broadcast::Limits,
    inbound: HashMap<InboundId, link::ResponseChannel>,
    next_inbound: u64,
    outbound: HashMap<link::RequestId, core::RequestId>,
    replies: HashMap<OpId, ReplyTo>,
    listens: HashMap<ListenerId, (Multiaddr, oneshot::Sender<ListenResult>)>,
    stopping: Option<Stopping>,
    wire: Wire,
    /// The thread that runs the core's identity checks, and where it reports.
    checker: Checker,
    checked: mpsc::Receiver<Checked>,
    /// The core's dials ([`Action::Dial`], [`Action::Redial`]) still under way, by peer: one
    /// failed attempt is reported only when no other is left.
    dialing: HashMap<PeerId, Vec<ConnectionId>>,
    /// The fresh connection of a reconnect ([`Action::Reconnect`]) still being dialed, by peer
    /// (one at a time, as the link dials them); an entry whose dial failed before it began is
    /// replaced by the peer's next, or dropped when its last connection closes.
    fresh: HashMap<PeerId, ConnectionId>,
    /// Connections to close once nothing is coming on them: superseded by a reconnect's fresh
    /// one, or one more of the core's attempts that connected after the first.
    retiring: link::Retiring,
    /// NAT traversal: reachability and relay reservations.
    traversal: Traversal,
}

impl std::fmt::Debug for EventLoop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventLoop")
            .field("core", &self.core)
            .finish_non_exhaustive()
    }
}

impl EventLoop {
    /// A node with `key`, presenting `proof`, over `transport` (a [`super::BoxedTransport`], or
    /// a [`NodeTransport`] that goes through relays too). Opens the redb store when
    /// [`Config::data_dir`] is set (records, notices and the routing snapshot are loaded back).
    pub fn new(
        key: NodeKey,
        proof: IdentityProof,
        config: Config,
        transport: impl Into<NodeTransport>,
    ) -> Result<(Client, EventLoop), StartError> {
        Self::with_clock(key, proof, config, transport, Arc::new(SystemClock))
    }

    /// [`EventLoop::new`] with the wall clock read from `clock`.
    pub fn with_clock(
        key: NodeKey,
        proof: IdentityProof,
        config: Config,
        transport: impl Into<NodeTransport>,
        clock: Arc<dyn WallClock>,
    ) -> Result<(Client, EventLoop), StartError> {
        config.validate()?;
        let NodeTransport {
            transport,
            relay_client,
        } = transport.into();
        let traversal = Traversal::new(&config.nat, config.nat.auto && relay_client.is_some());
        let local = key.peer_id();
        let keypair = key.to_libp2p();
        let (restored, writer, persist) = match &config.data_dir {
            None => (Restored::default(), None, None),
            Some(dir) => {
                std::fs::create_dir_all(dir)?;
                let persist = Arc::new(Persist::open(&dir.join("shoal.redb"))?);
                let restored = store::read_disk(&persist, local)?;
                let queue = std::num::NonZeroUsize::new(WRITER_QUEUE)
                    .unwrap_or(std::num::NonZeroUsize::MIN);
                let writer = Writer::spawn(persist.clone(), queue)
                    .map_err(|e| StartError::DataDir(std::io::Error::other(e.to_string())))?;
                (restored, Some(writer), Some(persist))
            }
        };
        let puzzle = Puzzle::new(config.puzzle.clone()).map_err(ConfigError::from)?;
        let verifier: SharedVerifier = Arc::new(Mutex::new(IdentityVerifier::new(
            puzzle,
            config.verifier.clone(),
        )));
        let behaviour = Behaviour::new(&keypair, proof, verifier.clone(), &config, relay_client)?;
        let swarm = Swarm::new(
            transport,
            behaviour,
            local,
            libp2p::swarm::Config::with_tokio_executor()
                .with_idle_connection_timeout(config.idle_connection_timeout),
        );
        let (tx, commands) = mpsc::channel(config.command_queue.get());
        let (notices, _) = broadcast::channel(config.notice_buffer.get());
        let (members, _) = broadcast::channel(config.notice_buffer.get());
        let (checked_tx, checked) = mpsc::channel(4);
        let checker = Checker::spawn(NodeChecks::new(verifier.clone()), checked_tx)?;
        let client = Client {
            local,
            tx,
            notices: notices.clone(),
            members: members.clone(),
        };
        let max_swim_bytes = config.swim.max_message_bytes.get();
        let broadcast_limits = config.broadcast.limits();
        let persistent = writer.is_some();
        let core = Core::new(
            Instant::now(),
            clock.unix(),
            local,
            key,
            NodeChecks::new(verifier.clone()),
            config,
            persistent,
            restored,
        )?;
        let event_loop = EventLoop {
            swarm,
            core,
            commands,
            notices,
            members,
            clock,
            verifier,
            writer,
            persist,
            writes: VecDeque::new(),
            max_swim_bytes,
            broadcast_limits,
            inbound: HashMap::new(),
            next_inbound: 0,
            outbound: HashMap::new(),
            replies: HashMap::new(),
            listens: HashMap::new(),
            stopping: None,
            wire: Wire::default(),
            checker,
            checked,
            dialing: HashMap::new(),
            fresh: HashMap::new(),
            retiring: link::Retiring::default(),
            traversal,
        };
        Ok((client, event_loop))
    }

    /// Runs until [`Client::shutdown`] completes or every [`Client`] is dropped, then closes the
    /// node: every queued write is committed, the database closed and the swarm dropped before
    /// it returns.
    pub async fn run(mut self) {
        let now = Instant::now();
        let unix = self.clock.unix();
        self.carry_out(now, unix);
        loop {
            let deadline = [
                self.core.poll_timeout(),
                self.stopping.as_ref().map(|s| s.deadline),
                self.retiring.next_due(),
                self.traversal.next_due(),
            ]
            .into_iter()
            .flatten()
            .min();
            let timer = async move {
                match deadline {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => futures::future::pending().await,
                }
            };
            // Input waits while the writer is behind: every write the core asks for must reach
            // the disk, and the loop must not hold an unbounded backlog of them.
            let open = self.writes.len() < WRITER_QUEUE;
            let mut woke = Woke::Timer;
            tokio::select! {
                event = self.swarm.select_next_some(), if open => woke = Woke::Swarm(event),
                command = self.commands.recv(), if open && self.stopping.is_none() => {
                    match command {
                        Some(c) => woke = Woke::Command(c),
                        None => break,
                    }
                }
                committed = recv_committed(&mut self.writer) => woke = Woke::Committed(committed),
                Some(checked) = self.checked.recv() => woke = Woke::Checked(checked),
                () = timer => {}
            }
            let now = Instant::now();
            let unix = self.clock.unix();
            match woke {
                Woke::Swarm(event) => self.on_swarm_event(now, unix, event),
                Woke::Checked((peer, result)) => {
                    let gate = &mut self.swarm.behaviour_mut().gate;
                    match &result {
                        Ok(_) => gate.confirm(&peer),
                        Err(shoal_pow::ProofError::RateLimited) => {}
                        Err(_) => gate.disconnect(&peer),
                    }
                    self.core.handle_verified(now, unix, peer, result);
                }
                Woke::Command(command) => self.on_command(now, unix, command),
                Woke::Committed(Some(c)) => self.on_committed(now, unix, c),
                Woke::Committed(None) | Woke::Timer => {}
            }
            self.turn(now, unix);
            if self.stopping.as_ref().is_some_and(|s| now >= s.deadline) {
                break;
            }
        }
        self.close().await;
    }

    /// The rest of a turn: more ready swarm events, queued commands and due deadlines within
    /// their budgets, then the core's actions.
    fn turn(&mut self, now: Instant, unix: u64) {
        for _ in 0..SWARM_BUDGET {
            if self.writes.len() >= WRITER_QUEUE {
                break;
            }
            match self.swarm.next().now_or_never() {
                Some(Some(event)) => self.on_swarm_event(now, unix, event),
                _ => break,
            }
        }
        if self.stopping.is_none() {
            for _ in 0..COMMAND_BUDGET {
                match self.commands.try_recv() {
                    Ok(command) => self.on_command(now, unix, command),
                    Err(_) => break,
                }
            }
        }
        if self.core.poll_timeout().is_some_and(|t| t <= now) {
            self.core.handle_timeout(now, unix);
        }
        self.close_retired(now);
        let members = self.core.membership();
        self.traversal.drive(now, &mut self.swarm, |peer| {
            members
                .member(peer)
                .filter(|m| m.state == State::Alive)
                .map(|m| shoal_swim::behaviour::to_multiaddrs(&m.addrs))
                .unwrap_or_default()
        });
        self.carry_out(now, unix);
    }

    /// Ends the node: a last routing snapshot, every queued write committed and the database
    /// closed, the swarm dropped, then a pending shutdown is answered.
    async fn close(mut self) {
        let peers = self.core.snapshot(MAX_SNAPSHOT_PEERS);
        if !peers.is_empty() && self.writer.is_some() {
            let mut batch = Batch::new();
            batch.replace_routing(store::snapshot_pairs(peers));
            self.writes.push_back((store::WriteId(u64::MAX), batch));
        }
        if let Some((writer, mut events)) = self.writer.take() {
            while let Some((id, batch)) = self.writes.pop_front() {
                match writer.send(id, batch).await {
                    Ok(()) => {}
                    Err(error) => {
                        tracing::warn!(%error, "a write queued at shutdown was not committed");
                        break;
                    }
                }
                // Keep the in-flight window open: results are no longer needed.
                while events.try_recv().is_some() {}
            }
            drop(events);
            match tokio::task::spawn_blocking(move || writer.close()).await {
                Ok(Ok(_)) => {}
                Ok(Err(error)) => tracing::warn!(%error, "the writer did not close cleanly"),
                Err(error) => tracing::warn!(%error, "the writer did not close cleanly"),
            }
        }
        let reply = self.stopping.take().map(|s| s.reply);
        drop(self);
        if let Some(reply) = reply {
            // The caller may have stopped waiting.
            let _ = reply.send(());
        }
    }

    // ----- input -----

    fn on_command(&mut self, now: Instant, unix: u64, command: Command) {
        match command {
            Command::Listen(addr, reply) => match self.swarm.listen_on(addr.clone()) {
                Ok(id) => {
                    self.listens.insert(id, (addr, reply));
                }
                Err(e) => {
                    let _ = reply.send(Err(ListenError::Transport {
                        addr,
                        reason: e.to_string(),
                    }));
                }
            },
            Command::Core(command, reply) => {
                let op = self.core.handle_command(now, unix, command);
                self.replies.insert(op, reply);
            }
            Command::Members(reply) => {
                let _ = reply.send(self.core.live_members());
            }
            Command::Peers(reply) => {
                let _ = reply.send(self.core.routing_table().peers().copied().collect());
            }
            Command::Connected(reply) => {
                let b = self.swarm.behaviour();
                let routed: HashSet<PeerId> = self.core.routing_table().peers().copied().collect();
                let list = self
                    .swarm
                    .connected_peers()
                    .take(MAX_LISTED_PEERS)
                    .map(|peer| crate::api::PeerInfo {
                        peer: *peer,
                        routed: routed.contains(peer),
                        traffic: crate::api::Traffic {
                            dht: b.dht.traffic(peer).unwrap_or_default(),
                            swim: b.swim.traffic(peer).unwrap_or_default(),
                            broadcast: b.broadcast.traffic(peer).unwrap_or_default(),
                        },
                        standing: self.core.standing(now, peer),
                        direct: self.traversal.any_direct(b.swim.connections_of(peer)),
                        hole_punch_failures: self.traversal.punch_failures(peer),
                    })
                    .collect();
                let _ = reply.send(list);
            }
            Command::Standings(reply) => {
                let _ = reply.send(self.core.standings(now));
            }
            Command::Stored(key, reply) => {
                let _ = reply.send(self.core.stored(&key).cloned());
            }
            Command::Routing(reply) => {
                let table = self.core.routing_table();
                let buckets = table
                    .buckets()
                    .map(|(index, peers)| crate::api::BucketInfo {
                        index,
                        peers: peers.copied().collect(),
                    })
                    .collect();
                let _ = reply.send((table.k(), buckets));
            }
            Command::Records(query, reply) => {
                let held = self.core.records();
                let (page, more) = held.page(&query.prefix, query.after.as_deref(), query.limit);
                let records = page
                    .into_iter()
                    .map(|signed| {
                        let r = signed.record();
                        crate::api::RecordSummary {
                            key: r.key.clone(),
                            publisher: r.publisher.peer_id(),
                            seq: r.seq,
                            size: r.value.len(),
                            created_at: r.created_at,
                            expires_at: r.expires_at(),
                        }
                    })
                    .collect();
                let _ = reply.send(crate::api::RecordPage {
                    total: held.len(),
                    records,
                    more,
                });
            }
            Command::Stats(reply) => {
                let _ = reply.send(self.full_stats(now));
            }
            Command::FailWrites(n, reply) => {
                if let Some(persist) = &self.persist {
                    persist.dangerous_fail_commits(n);
                }
                let _ = reply.send(self.persist.is_some());
            }
            Command::MemberList(reply) => {
                let list = self
                    .core
                    .membership()
                    .members()
                    .map(|(peer, m)| MemberInfo {
                        peer: *peer,
                        state: m.state,
                        incarnation: m.incarnation,
                        addrs: shoal_swim::behaviour::to_multiaddrs(&m.addrs),
                        verified: !self.core.is_checking(peer),
                    })
                    .collect();
                let _ = reply.send(list);
            }
            Command::Shutdown(reply) => {
                tracing::info!("shutting down");
                // Commands already queued are dropped unanswered when the loop ends (their
                // callers see `Stopped`); new ones are refused at once.
                self.commands.close();
                let leave = self.core.handle_command(now, unix, core::Command::Leave);
                self.stopping = Some(Stopping {
                    reply,
                    leave,
                    deadline: now + SHUTDOWN_LEAVE_BOUND,
                });
            }
        }
    }

    fn on_swarm_event(&mut self, now: Instant, unix: u64, event: SwarmEvent<Event>) {
        match event {
            SwarmEvent::Behaviour(Event::Gate(gate::Event::Verified { peer, proof, .. })) => {
                self.core.handle_gate(now, unix, peer, Ok(proof));
            }
            SwarmEvent::Behaviour(Event::Gate(gate::Event::Presented { peer, proof })) => {
                self.core
                    .handle_presented(now, unix, peer, &proof.to_bytes());
            }
            SwarmEvent::Behaviour(Event::Gate(gate::Event::Refused { peer, error })) => {
                self.core.handle_gate(now, unix, peer, Err(error));
            }
            SwarmEvent::Behaviour(Event::Swim(event)) => self.on_swim(now, unix, event),
            SwarmEvent::Behaviour(Event::Dht(event)) => self.on_dht(now, unix, event),
            SwarmEvent::Behaviour(Event::Broadcast(event)) => self.on_broadcast(now, unix, event),
            SwarmEvent::Behaviour(event) if self.traversal.on_event(now, &event) => {}
            SwarmEvent::Behaviour(_) => {}
            SwarmEvent::Dialing { .. } => self.wire.dials += 1,
            SwarmEvent::ConnectionClosed {
                peer_id,
                connection_id,
                num_established,
                cause,
                ..
            } => {
                self.retiring.closed(connection_id);
                self.traversal.on_closed(connection_id);
                tracing::debug!(
                    peer = %peer_id,
                    left = num_established,
                    cause = ?cause,
                    "connection closed"
                );
                if num_established == 0 {
                    self.fresh.remove(&peer_id);
                    self.core.handle_disconnected(now, unix, peer_id);
                }
            }
            SwarmEvent::NewListenAddr {
                listener_id,
                address,
            } => {
                if let Some((_, reply)) = self.listens.remove(&listener_id) {
                    let _ = reply.send(Ok(address));
                }
                self.update_local_addrs();
            }
            SwarmEvent::ExternalAddrConfirmed { address } => {
                tracing::info!(%address, "external address confirmed");
                self.traversal.on_confirmed(&address);
                self.update_local_addrs();
            }
            SwarmEvent::ExternalAddrExpired { address } => {
                tracing::info!(%address, "external address expired");
                self.traversal.on_expired(&address);
                self.update_local_addrs();
            }
            SwarmEvent::ExpiredListenAddr { .. } => self.update_local_addrs(),
            SwarmEvent::ListenerClosed {
                listener_id,
                reason,
                ..
            } => {
                let why = match &reason {
                    Ok(()) => "closed".to_owned(),
                    Err(e) => e.to_string(),
                };
                if let Some(relay) = self.traversal.on_listener_closed(now, listener_id, &why) {
                    // AutoNAT tests circuit addresses too, and the swarm keeps what it confirmed
                    // (under another form than the relay client's, which expires with the
                    // reservation): without this the node announced a circuit through a relay
                    // gone for good, and peers retried hole punches through it.
                    let stale: Vec<Multiaddr> = self
                        .swarm
                        .external_addresses()
                        .filter(|a| crate::nat::circuit_relay(a) == Some(relay))
                        .cloned()
                        .collect();
                    for addr in stale {
                        self.swarm.remove_external_address(&addr);
                    }
                }
                if let Some((addr, reply)) = self.listens.remove(&listener_id) {
                    let _ = reply.send(Err(ListenError::Transport { addr, reason: why }));
                }
                self.update_local_addrs();
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                num_established,
                endpoint,
                ..
            } => {
                tracing::debug!(
                    peer = %peer_id,
                    dialer = endpoint.is_dialer(),
                    relayed = endpoint.is_relayed(),
                    connections = num_established.get(),
                    "connected"
                );
                self.traversal
                    .on_connected(&peer_id, connection_id, endpoint.is_relayed());
                let ours = self.dial_ended(peer_id, connection_id).is_some();
                if self.fresh_ended(peer_id, connection_id) {
                    // A reconnect's fresh connection: frames go on it (the newest) on both
                    // sides now, and the stalled ones go once nothing is coming on them.
                    let older: Vec<ConnectionId> = (self.swarm.behaviour().swim)
                        .connections_of(&peer_id)
                        .iter()
                        .copied()
                        .filter(|c| *c != connection_id)
                        .collect();
                    for c in older {
                        self.retiring.retire(now, c, link::Retire::Replaced);
                    }
                } else if ours && num_established.get() > 1 {
                    // One more of the core's attempts to reach a seed connected after the first:
                    // the first is kept, this one carries nothing more of ours and goes later
                    // (see `link::Retire::Extra`). Closed at once, what the peer had sent on it,
                    // its newest, was lost (a seed's answer to a join).
                    let b = self.swarm.behaviour_mut();
                    b.swim.demote(&peer_id, connection_id);
                    b.dht.demote(&peer_id, connection_id);
                    b.broadcast.demote(&peer_id, connection_id);
                    self.retiring
                        .retire(now, connection_id, link::Retire::Extra);
                }
            }
            SwarmEvent::OutgoingConnectionError {
                peer_id: Some(peer),
                connection_id,
                error,
            } => {
                tracing::debug!(%peer, %error, "dial failed");
                self.traversal.on_dial_failed(now, connection_id, &error);
                self.fresh_ended(peer, connection_id);
                let others = self.dial_ended(peer, connection_id).unwrap_or(false);
                if !others && !self.swarm.is_connected(&peer) {
                    self.core.handle_dial_failed(now, unix, peer);
                }
            }
            _ => {}
        }
    }

    fn on_swim(&mut self, now: Instant, unix: u64, event: link::Event<link::Swim>) {
        let max = self.max_swim_bytes;
        match told(&mut self.swarm.behaviour_mut().swim, event, "SWIM") {
            Told::Message(peer, bytes) if !self.core.admit_bytes(now, peer, bytes.len()) => {}
            Told::Message(peer, bytes) => {
                match shoal_swim::message::decode::<PeerId>(&bytes, max) {
                    Ok(msg) => {
                        tracing::trace!(
                            %peer,
                            kind = msg.payload.kind(),
                            gossip = msg.gossip.len(),
                            "SWIM message received"
                        );
                        self.core.handle_swim(now, unix, peer, msg)
                    }
                    Err(error) => {
                        self.wire.swim_malformed += 1;
                        tracing::debug!(%peer, %error, "malformed SWIM message");
                    }
                }
            }
            Told::Malformed => self.wire.swim_malformed += 1,
            Told::Nothing => {}
        }
    }

    fn on_broadcast(&mut self, now: Instant, unix: u64, event: link::Event<link::Broadcast>) {
        let limits = self.broadcast_limits;
        match told(
            &mut self.swarm.behaviour_mut().broadcast,
            event,
            "broadcast",
        ) {
            Told::Message(peer, bytes) if !self.core.admit_bytes(now, peer, bytes.len()) => {}
            Told::Message(peer, bytes) => match shoal_broadcast::message::decode(&bytes, &limits) {
                Ok(msg) => self.core.handle_broadcast(now, unix, peer, msg),
                Err(error) => {
                    self.wire.broadcast_malformed += 1;
                    tracing::debug!(%peer, %error, "malformed broadcast message");
                }
            },
            Told::Malformed => self.wire.broadcast_malformed += 1,
            Told::Nothing => {}
        }
    }

    fn on_dht(&mut self, now: Instant, unix: u64, event: link::Event<link::Dht>) {
        match event {
            link::Event::Request {
                peer,
                request,
                channel,
                bytes,
            } => {
                // Metered in the core: a request over the peer's bandwidth or rate waits for its
                // turn there, then is answered, or is refused.
                self.next_inbound += 1;
                let id = InboundId(self.next_inbound);
                self.inbound.insert(id, channel);
                self.core
                    .handle_sized_request(now, unix, peer, id, request, bytes);
            }
            link::Event::Response { id, response, .. } => {
                if let Some(id) = self.outbound.remove(&id) {
                    self.core.handle_response(now, unix, id, Ok(response));
                }
            }
            link::Event::Failed { peer, id, failure } => {
                tracing::debug!(%peer, %failure, "request failed");
                if let Some(id) = self.outbound.remove(&id) {
                    let failure = match failure {
                        link::Failure::Timeout => RequestFailure::Timeout,
                        link::Failure::Unreachable(why) => RequestFailure::Unreachable(why),
                    };
                    self.core.handle_response(now, unix, id, Err(failure));
                }
            }
            link::Event::Malformed { peer, reason } => {
                self.wire.dht_malformed += 1;
                tracing::debug!(%peer, %reason, "malformed DHT request refused");
            }
        }
    }

    fn on_committed(&mut self, now: Instant, unix: u64, committed: Committed) {
        let result = committed.result.map_err(|e| e.to_string());
        for id in committed.ids {
            self.core
                .handle_committed(now, unix, WriteId(id.0), result.clone());
        }
    }

    /// Tells the core its own addresses: the confirmed external ones, else the listen ones.
    fn update_local_addrs(&mut self) {
        let external: Vec<Multiaddr> = self.swarm.external_addresses().cloned().collect();
        let chosen = if external.is_empty() {
            self.swarm.listeners().cloned().collect()
        } else {
            external
        };
        let addrs = chosen
            .iter()
            .take(shoal_swim::message::MAX_ADDRESSES)
            .map(|a| Address(a.to_vec()))
            .filter(|a| a.0.len() <= shoal_swim::message::MAX_ADDRESS_LEN)
            .collect();
        self.core.set_local_addrs(addrs);
    }

    // ----- output -----

    /// Carries out everything the core asked for, then hands the writes to the writer.
    fn carry_out(&mut self, now: Instant, unix: u64) {
        while let Some(action) = self.core.poll_action() {
            match action {
                Action::Send {
                    to,
                    addrs,
                    id,
                    request,
                } => {
                    let connected = self.swarm.is_connected(&to);
                    if matches!(request, Request::Proofs(_)) && !connected {
                        self.wire.relay_requests_unconnected += 1;
                    }
                    let addrs = shoal_swim::behaviour::to_multiaddrs(&addrs);
                    let rid = self
                        .swarm
                        .behaviour_mut()
                        .dht
                        .send_request_with_addresses(&to, request, addrs);
                    self.outbound.insert(rid, id);
                }
                Action::Tell { to, addrs, request } => {
                    let addrs = shoal_swim::behaviour::to_multiaddrs(&addrs);
                    self.swarm.behaviour_mut().dht.tell(&to, request, addrs);
                }
                Action::Respond { id, response } => {
                    if let Some(channel) = self.inbound.remove(&id) {
                        // The peer may have gone; then there is nobody to answer.
                        let _ = self
                            .swarm
                            .behaviour_mut()
                            .dht
                            .send_response(channel, response);
                    }
                }
                Action::Swim { to, addrs, msg } => self.send_swim(to, &addrs, &msg),
                Action::Disconnect { peer } => {
                    // Not connected is fine.
                    let _ = self.swarm.disconnect_peer_id(peer);
                }
                Action::Dial { peer, addrs } => {
                    let addrs = shoal_swim::behaviour::to_multiaddrs(&addrs);
                    self.dial(now, unix, peer, addrs);
                }
                Action::Redial { peer, addrs } => {
                    let addrs = shoal_swim::behaviour::to_multiaddrs(&addrs);
                    self.redial(peer, addrs);
                }
                Action::Reconnect { peer, addrs } => {
                    let addrs = shoal_swim::behaviour::to_multiaddrs(&addrs);
                    self.reconnect(peer, addrs);
                }
                Action::Write {
                    id,
                    ops,
                    durability,
                } => {
                    let mut batch = store::to_batch(ops);
                    batch.set_deferred(durability == Durability::Deferred);
                    self.writes.push_back((store::WriteId(id.0), batch));
                }
                Action::Verify {
                    peer,
                    proof,
                    needed,
                } => self.checker.check(peer, proof, now, needed),
                Action::Reply { op, reply } => self.on_reply(now, op, reply),
                Action::Notice(notice) => {
                    // No subscriber is fine.
                    let _ = self.notices.send(*notice);
                }
                Action::MemberChanged {
                    member,
                    state,
                    incarnation,
                } => {
                    // No watcher is fine.
                    let _ = self.members.send(crate::api::MemberChange {
                        peer: member,
                        state,
                        incarnation,
                        at: unix,
                    });
                }
                Action::Broadcast { to, addrs, msg } => {
                    let bytes = shoal_broadcast::message::encode(&msg);
                    let addrs = shoal_swim::behaviour::to_multiaddrs(&addrs);
                    self.swarm
                        .behaviour_mut()
                        .broadcast
                        .tell(&to, ByteBuf::from(bytes), addrs);
                    self.wire.broadcast_sent += 1;
                }
                Action::Keep { peer, keep } => {
                    // The core keeps fewer neighbors than the bound.
                    let _ = self.swarm.behaviour_mut().broadcast.keep_alive(peer, keep);
                }
            }
        }
        self.hand_writes();
    }

    /// Gives the writer the writes waiting, as long as it takes them.
    fn hand_writes(&mut self) {
        let Some((writer, _)) = &self.writer else {
            return;
        };
        while let Some((id, batch)) = self.writes.pop_front() {
            match writer.try_send(id, batch) {
                Ok(()) => {}
                Err(WriterError::Full(id, batch)) => {
                    self.writes.push_front((id, batch));
                    return;
                }
                Err(error) => {
                    // The writer thread is gone (a bug): nothing more can be made durable.
                    tracing::error!(%error, "the writer stopped; writes are refused");
                    return;
                }
            }
        }
    }

    fn send_swim(&mut self, to: PeerId, addrs: &[Address], msg: &shoal_swim::Message<PeerId>) {
        let bytes = match shoal_swim::message::to_vec(msg, self.max_swim_bytes) {
            Ok(bytes) => bytes,
            Err(error) => {
                self.wire.swim_undeliverable += 1;
                tracing::warn!(%error, "SWIM message over the size bound");
                return;
            }
        };
        let connected = self.swarm.is_connected(&to);
        tracing::trace!(
            %to,
            kind = msg.payload.kind(),
            gossip = msg.gossip.len(),
            bytes = bytes.len(),
            connected,
            "SWIM message sent"
        );
        if addrs.is_empty() && !connected {
            self.wire.swim_undeliverable += 1;
            return;
        }
        if !connected {
            self.wire.swim_sent_unconnected += 1;
        }
        let addrs = shoal_swim::behaviour::to_multiaddrs(addrs);
        self.swarm
            .behaviour_mut()
            .swim
            .tell(&to, ByteBuf::from(bytes), addrs);
        self.wire.swim_sent += 1;
    }

    fn dial(&mut self, now: Instant, unix: u64, peer: PeerId, addrs: Vec<Multiaddr>) {
        if self.swarm.is_connected(&peer) || peer == *self.swarm.local_peer_id() {
            return;
        }
        match self.start_dial(peer, DialOpts::peer_id(peer).addresses(addrs).build()) {
            Ok(()) => {}
            // Already being dialed: that dial's outcome settles it.
            Err(DialError::DialPeerConditionFalse(_)) => {}
            Err(error) => {
                tracing::debug!(%peer, %error, "dial failed");
                self.core.handle_dial_failed(now, unix, peer);
            }
        }
    }

    /// One more attempt beside the core's dial of `peer` still under way, or a fresh
    /// connection to replace one whose identity exchange is late (see [`Action::Redial`]); a
    /// failed attempt is reported only if it is the last to end.
    fn redial(&mut self, peer: PeerId, addrs: Vec<Multiaddr>) {
        if self.swarm.is_connected(&peer) {
            self.reconnect(peer, addrs);
            return;
        }
        if !self.dialing.contains_key(&peer) {
            return;
        }
        let opts = DialOpts::peer_id(peer)
            .condition(PeerCondition::Always)
            .addresses(addrs)
            .build();
        match self.start_dial(peer, opts) {
            Ok(()) => self.wire.redials += 1,
            // The attempt under way still decides.
            Err(error) => tracing::debug!(%peer, %error, "redial failed"),
        }
    }

    /// Dials `peer` with `opts` for the core, keeping the attempt in [`Self::dialing`] so its
    /// outcome is reported once with the others'.
    fn start_dial(&mut self, peer: PeerId, opts: DialOpts) -> Result<(), DialError> {
        let id = opts.connection_id();
        self.swarm.dial(opts)?;
        self.dialing.entry(peer).or_default().push(id);
        Ok(())
    }

    /// Replaces the connections to `peer` with a fresh one ([`Action::Reconnect`]).
    fn reconnect(&mut self, peer: PeerId, addrs: Vec<Multiaddr>) {
        if let Some(id) = self.swarm.behaviour_mut().swim.reconnect(peer, addrs) {
            self.wire.reconnects += 1;
            self.fresh.insert(peer, id);
        }
    }

    /// Attempt `id` to `peer` ended: whether it was a reconnect's fresh connection (then no
    /// longer awaited).
    fn fresh_ended(&mut self, peer: PeerId, id: ConnectionId) -> bool {
        let fresh = self.fresh.get(&peer) == Some(&id);
        if fresh {
            self.fresh.remove(&peer);
        }
        fresh
    }

    /// Closes the superseded connections nothing is coming on any more ([`link::Retiring`]).
    fn close_retired(&mut self, now: Instant) {
        let b = self.swarm.behaviour();
        let due = self.retiring.take_due(now, |c| {
            b.swim.unanswered_on(c) || b.dht.unanswered_on(c) || b.broadcast.unanswered_on(c)
        });
        for connection in due {
            self.swarm.close_connection(connection);
        }
    }

    /// Attempt `id` to `peer` ended: `None` if it was not the core's, else whether another of
    /// the core's attempts is still under way.
    fn dial_ended(&mut self, peer: PeerId, id: ConnectionId) -> Option<bool> {
        let ids = self.dialing.get_mut(&peer)?;
        let before = ids.len();
        ids.retain(|i| *i != id);
        let ours = ids.len() < before;
        let others = !ids.is_empty();
        if !others {
            self.dialing.remove(&peer);
        }
        ours.then_some(others)
    }

    fn on_reply(&mut self, now: Instant, op: OpId, reply: Reply<PeerId>) {
        if let Some(s) = &mut self.stopping
            && s.leave == op
        {
            s.deadline = s.deadline.min(now + LEAVE_GRACE);
            return;
        }
        // A caller that stopped waiting is fine.
        match (self.replies.remove(&op), reply) {
            (Some(ReplyTo::Join(tx)), Reply::Join(r)) => drop(tx.send(r)),
            (Some(ReplyTo::Put(tx)), Reply::Put(r)) => drop(tx.send(r)),
            (Some(ReplyTo::Get(tx)), Reply::Get(r)) => drop(tx.send(*r)),
            (Some(ReplyTo::FindNode(tx)), Reply::FindNode(r)) => drop(tx.send(r)),
            (Some(ReplyTo::Announce(tx)), Reply::Announce(r)) => drop(tx.send(r)),
            (Some(ReplyTo::Notices(tx)), Reply::Notices(r)) => drop(tx.send(r)),
            (Some(ReplyTo::AnnouncedTo(tx)), Reply::AnnouncedTo(r)) => drop(tx.send(r)),
            (Some(ReplyTo::Feed(tx)), Reply::Feed(r)) => drop(tx.send(r)),
            (_, reply) => tracing::debug!(?op, ?reply, "a reply nobody waits for"),
        }
    }

    // ----- stats -----

    fn full_stats(&mut self, now: Instant) -> NodeStats {
        let c = self.core.stats();
        let mut stats = NodeStats {
            refused_puts: c.refused_puts.clone(),
            refused_puts_total: c.refused_puts_total,
            stored_puts: c.stored_puts,
            verified: c.verified,
            refused_peers: c.refused_peers,
            verified_by_relay: c.verified_by_relay,
            refused_relayed: c.refused_relayed,
            relay_fallback_dials: c.relay_fallback_dials,
            listed_unchecked: c.listed_unchecked,
            proofs_with_news: c.proofs_with_news,
            checks_pending: self.core.checks_pending(),
            checks_run: c.checks_run,
            checks_needed: c.checks_needed,
            relayers_distrusted: c.relayers_distrusted,
            readmitted_departed: c.readmitted_departed,
            departed_proofs: self.core.departed_proofs(),
            dials: self.wire.dials,
            redials: self.wire.redials,
            reconnects: self.wire.reconnects,
            relay_requests: c.relay_requests,
            relay_request_failures: c.relay_request_failures,
            relay_requests_unconnected: self.wire.relay_requests_unconnected,
            rpcs: Rpcs {
                lookups: c.lookup_requests,
                gets: c.get_requests,
                background: c.background_requests,
            },
            gets_served: c.gets_served,
            malformed_requests: self.wire.dht_malformed,
            lookups_served: c.lookups_served,
            swim_unadmitted: c.swim_unadmitted,
            swim_updates_cut: c.updates_cut,
            failed_writes: c.failed_writes,
            queries: c.queries,
            one_hop: c.one_hop,
            iterative: c.iterative,
            view_settled: self.core.view_settled(now),
            records: self.core.records().len(),
            notices: self.core.notices().len(),
            routing_peers: self.core.routing_table().len(),
            verifier: lock(&self.verifier).stats(),
            ..NodeStats::default()
        };
        if let Some((writer, _)) = &self.writer {
            let w = writer.stats();
            stats.commits = w.commits;
            stats.writes = w.batches;
        }
        let membership = self.core.membership();
        stats.swim = membership.stats().clone();
        stats.swim_wire = shoal_swim::WireStats {
            sent: self.wire.swim_sent,
            received: c.swim_received,
            malformed: self.wire.swim_malformed,
            undeliverable: self.wire.swim_undeliverable,
            sent_unconnected: self.wire.swim_sent_unconnected,
        };
        stats.denied = (c.denied_peers, c.denied_messages);
        stats.rate_limited = c.rate_limited;
        stats.slowed = c.slowed;
        let (seen, banned) = self.core.misbehaviour();
        stats.misbehaviour = seen.iter().map(|(k, n)| (k.as_str(), *n)).collect();
        stats.bans = (banned, self.core.sizes().bans);
        stats.bandwidth_limited = c.bandwidth_limited;
        stats.churn_holds = self.core.churn_holds();
        let b = self.swarm.behaviour();
        stats.traffic = crate::api::Traffic {
            dht: b.dht.total(),
            swim: b.swim.total(),
            broadcast: b.broadcast.total(),
        };
        stats.broadcast = self.core.broadcast().stats();
        stats.broadcast_wire = crate::api::BroadcastWire {
            sent: self.wire.broadcast_sent,
            malformed: self.wire.broadcast_malformed,
            unadmitted: c.broadcast_unadmitted,
            gaps: c.feed_gaps,
        };
        for (_, state, _) in membership.states() {
            match state {
                State::Alive => stats.members.alive += 1,
                State::Suspect => stats.members.suspect += 1,
                State::Dead => stats.members.dead += 1,
                State::Left => stats.members.left += 1,
            }
        }
        let info = self.swarm.network_info();
        stats.connections = info.connection_counters().num_established() as usize;
        stats.connected_peers = info.num_peers();
        stats.listen_addrs = self.swarm.listeners().cloned().collect();
        stats.external_addrs = self.swarm.external_addresses().cloned().collect();
        stats.nat = self.traversal.report();
        stats
    }
}

/// What an event of a told protocol (SWIM's, the broadcast's) brings.
enum Told {
    /// A message's bytes from a peer.
    Message(PeerId, ByteBuf),
    /// A frame that did not decode.
    Malformed,
    /// Nothing for the core.
    Nothing,
}

/// Reads an event of a told protocol's link: a peer that asked instead of telling is answered
/// with nothing; a failed delivery is only logged (nothing waits for one).
fn told<M>(behaviour: &mut link::Behaviour<M>, event: link::Event<M>, what: &str) -> Told
where
    M: link::Messages<Request = ByteBuf, Response = ()>,
{
    match event {
        link::Event::Request {
            peer,
            request,
            channel,
            ..
        } => {
            // The peer may have gone; then there is nobody to answer.
            let _ = behaviour.send_response(channel, ());
            Told::Message(peer, request)
        }
        link::Event::Malformed { peer, reason } => {
            tracing::debug!(%peer, %reason, "malformed {what} frame");
            Told::Malformed
        }
        link::Event::Failed { peer, failure, .. } => {
            tracing::trace!(%peer, %failure, "{what} message not delivered");
            Told::Nothing
        }
        link::Event::Response { .. } => Told::Nothing,
    }
}

/// What woke a turn.
enum Woke {
    Swarm(SwarmEvent<Event>),
    Checked(Checked),
    Command(Command),
    Committed(Option<Committed>),
    Timer,
}

/// The next commit report, or never when the node has no disk.
async fn recv_committed(writer: &mut Option<(Writer, WriterEvents)>) -> Option<Committed> {
    match writer {
        Some((_, events)) => events.recv().await,
        None => futures::future::pending().await,
    }
}
