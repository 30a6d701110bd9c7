//! The event loop: owns the swarm, runs commands, applies the gate and SWIM to kad's routing
//! table, runs joins and the graceful shutdown.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use libp2p::core::transport::ListenerId;
use libp2p::kad::{self, QueryId};
use libp2p::request_response::OutboundRequestId;
use libp2p::swarm::dial_opts::DialOpts;
use libp2p::swarm::{DialError, Swarm, SwarmEvent};
use libp2p::{Multiaddr, PeerId};
use serde_bytes::ByteBuf;
use shoal_pow::{IdentityProof, NodeKey, StampChecker, unix_now};
use shoal_swim::behaviour::Event as SwimEvent;
use shoal_swim::{CommandError, CommandId, State};
use tokio::sync::{broadcast, mpsc, oneshot};

use super::admission::Admission;
use super::departed::Departed;
use super::lookups::Lookups;
use super::queries::{Announcing, Get, NoticesQuery, Pending};
use super::replicate::{PutJob, Replicating};
use super::{
    BoxedTransport, Client, Command, JoinError, JoinOk, JoinResult, ListenError, ListenResult,
    MAX_SNAPSHOT_PEERS, MAX_SNAPSHOT_SEEDS, MemberCounts, MemberInfo, NodeStats,
    SHUTDOWN_LEAVE_BOUND, StartError,
};
use crate::behaviour::{Behaviour, Event};
use crate::config::{Config, ConfigError};
use crate::gate;
use crate::lockstep::protocol::Request;
use crate::lockstep::{NoticeBook, SignedNotice};
use crate::record::SignedRecord;
use crate::store::{Persist, RecordStore};

struct Join {
    reply: oneshot::Sender<JoinResult>,
    tried: usize,
    waiting: HashSet<PeerId>,
    seeds: Vec<(PeerId, Vec<Multiaddr>)>,
    swim: Option<CommandId>,
    attempts: u32,
}

/// libp2p-kad bootstraps by itself after an insert into a table with fewer peers than this (its
/// `K_VALUE`, whatever the bucket size).
const KAD_BOOTSTRAP_BELOW: usize = 20;

/// SWIM join attempts before a join is reported failed.
const JOIN_ATTEMPTS: u32 = 3;

/// Owns the swarm; run it with [`EventLoop::run`].
pub struct EventLoop {
    pub(super) swarm: Swarm<Behaviour>,
    commands: mpsc::Receiver<Command>,
    pub(super) notices: broadcast::Sender<SignedNotice>,
    pub(super) key: NodeKey,
    pub(super) config: Config,
    pub(super) stamps: StampChecker,
    pub(super) book: NoticeBook,
    pub(super) persist: Option<Arc<Persist>>,
    /// Members verified (by the gate, or through a relayed proof), with their proofs.
    pub(super) verified: HashMap<PeerId, IdentityProof>,
    /// Proofs of members SWIM declared failed or gone lately, readmitted without a request
    /// if they come back.
    pub(super) departed: Departed,
    pub(super) admission: Admission,
    pub(super) stats: NodeStats,
    pub(super) last_seq: HashMap<Vec<u8>, u64>,
    listens: HashMap<ListenerId, (Multiaddr, oneshot::Sender<ListenResult>)>,
    joins: Vec<Join>,
    pub(super) replicating: HashMap<usize, Replicating>,
    pub(super) replica_requests: HashMap<OutboundRequestId, usize>,
    pub(super) gets: HashMap<QueryId, Get>,
    pub(super) checks: HashMap<usize, Get>,
    pub(super) lookups: Lookups,
    pub(super) announcing: HashMap<usize, Announcing>,
    pub(super) notice_queries: HashMap<usize, NoticesQuery>,
    pub(super) requests: HashMap<OutboundRequestId, Pending>,
    pub(super) next_id: usize,
    stopping: Option<Stopping>,
    /// Peers of the routing-table snapshot read on start: dialed on start, and the seeds of a
    /// join without seeds. At most [`MAX_SNAPSHOT_SEEDS`].
    snapshot: Vec<(PeerId, Vec<Multiaddr>)>,
}

/// A shutdown under way: SWIM is leaving.
struct Stopping {
    reply: oneshot::Sender<()>,
    leave: CommandId,
    /// When the loop ends even if the leave has not finished.
    deadline: Instant,
}

/// After SWIM's leave finished, how long the loop still runs so the last departure messages
/// reach their peers.
const LEAVE_GRACE: Duration = Duration::from_millis(200);

impl std::fmt::Debug for EventLoop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventLoop")
            .field("peer", self.swarm.local_peer_id())
            .field("verified", &self.verified.len())
            .finish_non_exhaustive()
    }
}

impl EventLoop {
    /// A node with `key`, presenting `proof`, over `transport`. Opens the redb store when
    /// [`Config::data_dir`] is set (records and notices are loaded back).
    pub fn new(
        key: NodeKey,
        proof: IdentityProof,
        config: Config,
        transport: BoxedTransport,
    ) -> Result<(Client, EventLoop), StartError> {
        config.validate()?;
        let local = key.peer_id();
        let stamps = StampChecker::new(config.stamps.clone()).map_err(ConfigError::from)?;
        let mut book = NoticeBook::new(config.notices.clone());
        let mut snapshot = Vec::new();
        let (store, persist) = match &config.data_dir {
            None => (RecordStore::in_memory(local, config.store.clone()), None),
            Some(dir) => {
                std::fs::create_dir_all(dir)?;
                let persist = Arc::new(Persist::open(&dir.join("shoal.redb"))?);
                let (now, now_unix) = (Instant::now(), unix_now());
                let (store, dropped) = RecordStore::open(
                    local,
                    config.store.clone(),
                    persist.clone(),
                    now,
                    now_unix,
                    |key, bytes| {
                        SignedRecord::validate(bytes, Some(key), now_unix, &config.records, &stamps)
                            .ok()
                    },
                )?;
                if dropped > 0 {
                    tracing::info!(dropped, "expired or invalid records dropped on open");
                }
                for bytes in persist.notices()? {
                    if let Ok(n) = SignedNotice::decode(&bytes) {
                        // A full book drops its oldest; the store keeps what it has.
                        let _ = book.insert(n);
                    }
                }
                snapshot = decode_snapshot(persist.routing()?, local);
                (store, Some(persist))
            }
        };
        let behaviour = Behaviour::new(&key, proof, &config, store)?;
        let swarm = Swarm::new(
            transport,
            behaviour,
            local,
            libp2p::swarm::Config::with_tokio_executor()
                .with_idle_connection_timeout(config.idle_connection_timeout),
        );
        let (tx, commands) = mpsc::channel(config.command_queue.get());
        let (notices, _) = broadcast::channel(config.notice_buffer.get());
        let client = Client {
            local,
            tx,
            notices: notices.clone(),
        };
        let event_loop = EventLoop {
            swarm,
            commands,
            notices,
            key,
            config,
            stamps,
            book,
            persist,
            verified: HashMap::new(),
            departed: Departed::default(),
            admission: Admission::default(),
            stats: NodeStats::default(),
            last_seq: HashMap::new(),
            listens: HashMap::new(),
            joins: Vec::new(),
            replicating: HashMap::new(),
            replica_requests: HashMap::new(),
            gets: HashMap::new(),
            checks: HashMap::new(),
            lookups: Lookups::default(),
            announcing: HashMap::new(),
            notice_queries: HashMap::new(),
            requests: HashMap::new(),
            next_id: 0,
            stopping: None,
            snapshot,
        };
        Ok((client, event_loop))
    }

    /// Runs until [`Client::shutdown`] completes or every [`Client`] is dropped, then closes the
    /// node (the swarm and the redb database are dropped before it returns).
    pub async fn run(mut self) {
        for (peer, addrs) in self.snapshot.clone() {
            self.dial(peer, addrs);
        }
        let every = self.config.routing_snapshot_interval;
        let mut snapshot_tick =
            tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        snapshot_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut retry_tick = tokio::time::interval(Duration::from_secs(1));
        retry_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let deadline = self.stopping.as_ref().map(|s| s.deadline);
            let stop_timer = async move {
                match deadline {
                    Some(at) => tokio::time::sleep_until(at.into()).await,
                    None => futures::future::pending().await,
                }
            };
            let batches = self.admission.has_batches();
            tokio::select! {
                // Biased, so the proof requests queued by a burst of swarm events go out in
                // batches once the swarm has nothing more ready.
                biased;
                event = self.swarm.select_next_some() => {
                    self.on_swarm_event(event);
                    self.count_event();
                }
                command = self.commands.recv(), if self.stopping.is_none() => match command {
                    Some(c) => self.on_command(c),
                    None => break,
                },
                () = stop_timer => break,
                _ = snapshot_tick.tick(), if self.persist.is_some() => self.save_snapshot(),
                _ = retry_tick.tick() => {
                    self.retry_wanted();
                    self.departed.expire(Instant::now());
                    self.expire_lookups(Instant::now());
                }
                () = std::future::ready(()), if batches => self.flush_relay_requests(),
            }
        }
        self.close();
    }

    /// Starts a graceful shutdown: SWIM leaves, and the loop ends when the leave finished (plus
    /// [`LEAVE_GRACE`]) or after [`SHUTDOWN_LEAVE_BOUND`].
    fn start_shutdown(&mut self, reply: oneshot::Sender<()>) {
        tracing::info!("shutting down");
        // Commands already queued are dropped unanswered when the loop ends (their callers see
        // `Stopped`); new ones are refused at once.
        self.commands.close();
        let leave = self.swarm.behaviour_mut().swim.leave();
        self.stopping = Some(Stopping {
            reply,
            leave,
            deadline: Instant::now() + SHUTDOWN_LEAVE_BOUND,
        });
    }

    fn on_leave_finished(&mut self, id: CommandId, result: Result<(), CommandError>) {
        let Some(s) = &mut self.stopping else {
            return;
        };
        if s.leave == id {
            if let Err(e) = result {
                tracing::debug!(error = %e, "SWIM leave failed");
            }
            s.deadline = s.deadline.min(Instant::now() + LEAVE_GRACE);
        }
    }

    /// Ends the node: everything is dropped (the redb database is closed once the swarm's store
    /// and this loop let go of it), then a pending shutdown is answered.
    fn close(mut self) {
        self.save_snapshot();
        let reply = self.stopping.take().map(|s| s.reply);
        drop(self);
        if let Some(reply) = reply {
            // The caller may have stopped waiting.
            let _ = reply.send(());
        }
    }

    /// Writes the verified, live members with their addresses (at most [`MAX_SNAPSHOT_PEERS`])
    /// as the routing-table snapshot. Nothing is written while no member is known, so a node
    /// that restarts alone keeps the snapshot it had.
    fn save_snapshot(&mut self) {
        let Some(persist) = &self.persist else {
            return;
        };
        let peers: Vec<(Vec<u8>, Vec<u8>)> = self
            .swarm
            .behaviour()
            .swim
            .members()
            .filter(|(p, m)| {
                matches!(m.state, State::Alive | State::Suspect) && self.verified.contains_key(p)
            })
            .take(MAX_SNAPSHOT_PEERS)
            .map(|(p, m)| {
                let addrs: Vec<ByteBuf> = shoal_swim::behaviour::to_multiaddrs(&m.addrs)
                    .into_iter()
                    .map(|a| ByteBuf::from(a.to_vec()))
                    .collect();
                // Invariant: a list of byte strings always encodes.
                let addrs = cbor4ii::serde::to_vec(Vec::new(), &addrs).expect("bytes encode");
                (p.to_bytes(), addrs)
            })
            .collect();
        if peers.is_empty() {
            return;
        }
        if let Err(e) = persist.save_routing(&peers) {
            tracing::warn!(error = %e, "cannot save the routing-table snapshot");
        }
    }

    pub(super) fn kad_mut(&mut self) -> &mut kad::Behaviour<RecordStore> {
        &mut self.swarm.behaviour_mut().kad
    }

    fn routing_peers(&mut self) -> usize {
        self.kad_mut().kbuckets().map(|b| b.num_entries()).sum()
    }

    fn full_stats(&mut self) -> NodeStats {
        let mut stats = self.stats.clone();
        stats.routing_peers = self.routing_peers();
        stats.records = self.kad_mut().store_mut().len();
        stats.notices = self.book.len();
        let b = self.swarm.behaviour();
        stats.swim = b.swim.stats().clone();
        stats.swim_wire = b.swim.wire_stats();
        stats.swim_unadmitted = stats.swim_wire.unadmitted;
        stats.verifier = b.gate.stats();
        stats.members = MemberCounts::default();
        for (_, m) in b.swim.members() {
            match m.state {
                State::Alive => stats.members.alive += 1,
                State::Suspect => stats.members.suspect += 1,
                State::Dead => stats.members.dead += 1,
                State::Left => stats.members.left += 1,
            }
        }
        let info = self.swarm.network_info();
        stats.connections = info.connection_counters().num_established() as usize;
        stats.departed_proofs = self.departed.len();
        stats.connected_peers = info.num_peers();
        stats.listen_addrs = self.swarm.listeners().cloned().collect();
        stats.external_addrs = self.swarm.external_addresses().cloned().collect();
        stats
    }

    pub(super) fn next_seq(&mut self, key: &[u8], explicit: Option<u64>) -> u64 {
        explicit.unwrap_or_else(|| {
            let held = self
                .swarm
                .behaviour_mut()
                .kad
                .store_mut()
                .signed(key)
                .map(|s| s.record().seq);
            let seen = self.last_seq.get(key).copied().max(held);
            seen.map_or(0, |s| s.saturating_add(1)).max(unix_now())
        })
    }

    fn is_alive(&self, peer: &PeerId) -> Option<Vec<Multiaddr>> {
        let m = self.swarm.behaviour().swim.member(peer)?;
        matches!(m.state, State::Alive | State::Suspect)
            .then(|| shoal_swim::behaviour::to_multiaddrs(&m.addrs))
    }

    /// Adds `peer` to kad's routing table if it is verified, alive, and its bucket has room.
    /// A full bucket is left alone: kad would dial its least recently seen entry to make room,
    /// but SWIM already says every entry is alive, and evicts those that fail.
    pub(super) fn route(&mut self, peer: PeerId, addrs: &[Multiaddr]) {
        if !self.verified.contains_key(&peer) {
            return;
        }
        let Some(mut known) = self.is_alive(&peer) else {
            return;
        };
        let k = self.config.kbucket_size.get();
        let (full, present) = self.kad_mut().kbucket(peer).map_or((false, false), |b| {
            let present = b.iter().any(|e| *e.node.key.preimage() == peer);
            (b.num_entries() >= k, present)
        });
        if full && !present {
            return;
        }
        known.extend(addrs.iter().cloned());
        for addr in known {
            self.swarm.behaviour_mut().kad.add_address(&peer, addr);
        }
        if !present {
            self.suppress_kad_bootstrap();
        }
    }

    /// libp2p-kad 0.49 starts a bootstrap by itself half a second after a peer enters a table
    /// holding fewer than 20 peers, and offers no switch for it. Inserts are manual here, so
    /// what a bootstrap finds never enters the table: it would only open connections (about 250
    /// requests each; 59,000 in the first wave of 108 nodes of the lookup bench). Starting one
    /// now and ending it before it sends anything clears kad's pending timer; [`Self::on_kad`]
    /// ends each later step of a bootstrap the same way.
    fn suppress_kad_bootstrap(&mut self) {
        let kad = self.kad_mut();
        let entries: usize = kad.kbuckets().map(|b| b.num_entries()).sum();
        if entries < KAD_BOOTSTRAP_BELOW
            && let Ok(id) = kad.bootstrap()
            && let Some(mut query) = kad.query_mut(&id)
        {
            query.finish();
        }
    }

    /// After a routed peer failed or left: offers every verified live member to the routing
    /// table again, so the freed slot goes to one that [`Self::route`] skipped while the bucket
    /// was full.
    fn refill_routing(&mut self) {
        for peer in self.verified_live_members() {
            self.route(peer, &[]);
        }
    }

    /// The members SWIM holds alive (or suspect) whose proofs this node checked.
    pub(super) fn verified_live_members(&self) -> Vec<PeerId> {
        self.swarm
            .behaviour()
            .swim
            .members()
            .filter(|(p, m)| {
                matches!(m.state, State::Alive | State::Suspect) && self.verified.contains_key(*p)
            })
            .map(|(p, _)| *p)
            .collect()
    }

    pub(super) fn dial(&mut self, peer: PeerId, addrs: Vec<Multiaddr>) {
        if self.swarm.is_connected(&peer) || peer == *self.swarm.local_peer_id() {
            return;
        }
        let opts = DialOpts::peer_id(peer).addresses(addrs).build();
        if let Err(error) = self.swarm.dial(opts) {
            tracing::debug!(%peer, %error, "dial failed");
        }
    }

    fn on_command(&mut self, command: Command) {
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
            Command::Join(seeds, reply) => self.start_join(seeds, reply),
            Command::Put(request, reply) => self.start_put(request, reply),
            Command::Get(key, reply) => self.start_get(key, reply),
            Command::FindNode(peer, reply) => self.start_find_node(peer, reply),
            Command::Announce {
                key,
                value,
                seq,
                reply,
            } => self.start_announce(key, value, seq, reply),
            Command::Members(reply) => {
                let members = self
                    .swarm
                    .behaviour()
                    .swim
                    .members()
                    .filter(|(p, m)| {
                        *p != self.swarm.local_peer_id()
                            && matches!(m.state, State::Alive | State::Suspect)
                    })
                    .map(|(p, _)| *p)
                    .collect();
                let _ = reply.send(members);
            }
            Command::Peers(reply) => {
                let peers = self
                    .swarm
                    .behaviour_mut()
                    .kad
                    .kbuckets()
                    .flat_map(|b| b.iter().map(|e| *e.node.key.preimage()).collect::<Vec<_>>())
                    .collect();
                let _ = reply.send(peers);
            }
            Command::Stored(key, reply) => {
                let held = self.swarm.behaviour_mut().kad.store_mut().signed(&key);
                let _ = reply.send(held.cloned());
            }
            Command::RawNotice {
                peer,
                envelope,
                reply,
            } => {
                let req = Request::Announce(ByteBuf::from(envelope));
                let rid = self.swarm.behaviour_mut().lockstep.send_request(&peer, req);
                self.requests.insert(rid, Pending::Raw(reply));
            }
            Command::RawPut {
                key,
                envelope,
                peers,
                reply,
            } => {
                let job = PutJob {
                    key,
                    seq: 0,
                    quorum: peers.len().max(1),
                    envelope,
                    reply,
                };
                self.replicate(job, peers);
            }
            Command::Stats(reply) => {
                let _ = reply.send(self.full_stats());
            }
            Command::MemberList(reply) => {
                let list = self
                    .swarm
                    .behaviour()
                    .swim
                    .members()
                    .map(|(peer, m)| MemberInfo {
                        peer: *peer,
                        state: m.state,
                        incarnation: m.incarnation,
                        addrs: shoal_swim::behaviour::to_multiaddrs(&m.addrs),
                    })
                    .collect();
                let _ = reply.send(list);
            }
            Command::Notices(key, reply) => self.start_notices(key, reply),
            Command::Shutdown(reply) => self.start_shutdown(reply),
        }
    }

    fn start_join(&mut self, seeds: Vec<(PeerId, Multiaddr)>, reply: oneshot::Sender<JoinResult>) {
        let mut by_peer: HashMap<PeerId, Vec<Multiaddr>> = HashMap::new();
        if seeds.is_empty() {
            by_peer.extend(self.snapshot.iter().cloned());
        }
        for (peer, addr) in seeds {
            by_peer.entry(peer).or_default().push(addr);
        }
        let tried = by_peer.len();
        let mut waiting = HashSet::new();
        for (peer, addrs) in &by_peer {
            let ready = self.verified.contains_key(peer) && self.swarm.is_connected(peer);
            if !ready {
                waiting.insert(*peer);
                if self.swarm.is_connected(peer) {
                    continue; // The gate is at work on the open connection.
                }
                let opts = DialOpts::peer_id(*peer).addresses(addrs.clone()).build();
                match self.swarm.dial(opts) {
                    // Already being dialed (e.g. a snapshot peer dialed on start): that dial's
                    // outcome settles the wait.
                    Ok(()) | Err(DialError::DialPeerConditionFalse(_)) => {}
                    Err(error) => {
                        tracing::debug!(%peer, %error, "cannot dial seed");
                        waiting.remove(peer);
                    }
                }
            }
        }
        let seeds = by_peer
            .into_iter()
            .filter(|(p, _)| waiting.contains(p) || self.verified.contains_key(p))
            .collect();
        self.joins.push(Join {
            reply,
            tried,
            waiting,
            seeds,
            swim: None,
            attempts: 0,
        });
        self.advance_joins();
    }

    fn advance_joins(&mut self) {
        let mut i = 0;
        while i < self.joins.len() {
            let j = &mut self.joins[i];
            if j.swim.is_some() || !j.waiting.is_empty() {
                i += 1;
                continue;
            }
            j.seeds.retain(|(p, _)| self.verified.contains_key(p));
            if j.seeds.is_empty() {
                let j = self.joins.swap_remove(i);
                let _ = j
                    .reply
                    .send(Err(JoinError::NoSeedVerified { tried: j.tried }));
                continue;
            }
            j.attempts += 1;
            let seeds = j.seeds.clone();
            j.swim = Some(self.swarm.behaviour_mut().swim.join(seeds));
            i += 1;
        }
    }

    fn on_join_finished(&mut self, id: CommandId, result: Result<usize, CommandError>) {
        let Some(i) = self.joins.iter().position(|j| j.swim == Some(id)) else {
            return;
        };
        match result {
            Ok(members) => {
                let j = self.joins.swap_remove(i);
                // No kad bootstrap: inserts are manual, so the peers a bootstrap finds would not
                // enter the routing table anyway; SWIM's member list fills it instead, without
                // a connection to each peer a bootstrap lookup would reach.
                let _ = j.reply.send(Ok(JoinOk {
                    verified_seeds: j.seeds.len(),
                    members,
                }));
            }
            Err(e) if self.joins[i].attempts < JOIN_ATTEMPTS => {
                // The seed may not have verified us yet when our first push-pull came in.
                tracing::debug!(error = %e, "SWIM join failed, retrying");
                self.joins[i].swim = None;
                self.advance_joins();
            }
            Err(e) => {
                let j = self.joins.swap_remove(i);
                let _ = j.reply.send(Err(JoinError::Swim(e)));
            }
        }
    }

    fn on_swarm_event(&mut self, event: SwarmEvent<Event>) {
        match event {
            SwarmEvent::Behaviour(Event::Gate(e)) => self.on_gate(e),
            SwarmEvent::Behaviour(Event::Swim(e)) => self.on_swim(e),
            SwarmEvent::Behaviour(Event::Kad(e)) => self.on_kad(*e),
            SwarmEvent::Behaviour(Event::Lockstep(e)) => self.on_lockstep(e),
            SwarmEvent::Behaviour(Event::Relay(e)) => self.on_relay(e),
            SwarmEvent::Behaviour(Event::Replica(e)) => self.on_replica(e),
            SwarmEvent::Behaviour(Event::Find(e)) => self.on_find(e),
            SwarmEvent::Dialing { .. } => self.stats.dials += 1,
            SwarmEvent::Behaviour(Event::Identify(_)) => {}
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established: 0,
                ..
            } if !self.verified.contains_key(&peer_id) => self.drop_held(&peer_id),
            SwarmEvent::NewListenAddr {
                listener_id,
                address,
            } => {
                if let Some((_, reply)) = self.listens.remove(&listener_id) {
                    let _ = reply.send(Ok(address));
                }
            }
            SwarmEvent::ListenerClosed {
                listener_id,
                reason,
                ..
            } => {
                if let Some((addr, reply)) = self.listens.remove(&listener_id) {
                    let reason = match reason {
                        Ok(()) => "closed".to_owned(),
                        Err(e) => e.to_string(),
                    };
                    let _ = reply.send(Err(ListenError::Transport { addr, reason }));
                }
            }
            SwarmEvent::OutgoingConnectionError {
                peer_id: Some(peer),
                ..
            } if !self.swarm.is_connected(&peer) => {
                let mut changed = false;
                for j in &mut self.joins {
                    changed |= j.waiting.remove(&peer);
                }
                if changed {
                    self.advance_joins();
                }
            }
            _ => {}
        }
    }

    fn on_gate(&mut self, event: gate::Event) {
        match event {
            gate::Event::Verified { peer, proof, .. } => {
                self.admit_verified(peer, proof);
                let mut changed = false;
                for j in &mut self.joins {
                    changed |= j.waiting.remove(&peer);
                }
                if changed {
                    self.advance_joins();
                }
            }
            gate::Event::Refused { peer, error } => {
                tracing::info!(%peer, %error, "identity proof refused");
                self.stats.refused_peers += 1;
                self.forget(&peer);
                let b = self.swarm.behaviour_mut();
                b.swim.revoke(&peer);
                b.kad.remove_peer(&peer);
                let mut changed = false;
                for j in &mut self.joins {
                    changed |= j.waiting.remove(&peer);
                }
                if changed {
                    self.advance_joins();
                }
            }
        }
    }

    fn on_swim(&mut self, event: SwimEvent) {
        match event {
            SwimEvent::Joined { peer, addrs, .. } | SwimEvent::Refuted { peer, addrs, .. } => {
                self.route(peer, &addrs);
            }
            SwimEvent::Failed { peer, .. } | SwimEvent::Left { peer, .. } => {
                let b = self.swarm.behaviour_mut();
                let routed = b.kad.remove_peer(&peer).is_some();
                // Forget a departed peer unless it is still connected and verified, so the sets
                // stay bounded by the live membership; its proof is kept a while (bounded), so
                // that if it refutes or comes back, gossip naming it readmits it at once.
                if !b.gate.is_verified(&peer) {
                    b.swim.revoke(&peer);
                    let proof = self.verified.get(&peer).copied();
                    self.forget(&peer);
                    if let Some(proof) = proof {
                        self.departed.insert(peer, proof, Instant::now());
                    }
                }
                if routed {
                    self.refill_routing();
                }
            }
            SwimEvent::Discovered {
                peer,
                addrs,
                state,
                from,
            } => self.on_discovered(peer, addrs, state, from),
            SwimEvent::JoinFinished { id, result } => self.on_join_finished(id, result),
            SwimEvent::LeaveFinished { id, result } => self.on_leave_finished(id, result),
            SwimEvent::Suspected { .. } => {}
        }
    }
}

/// Decodes the snapshot's entries, skipping unreadable ones and ourselves; at most
/// [`MAX_SNAPSHOT_SEEDS`] peers with at least one address.
fn decode_snapshot(pairs: crate::store::Pairs, local: PeerId) -> Vec<(PeerId, Vec<Multiaddr>)> {
    pairs
        .into_iter()
        .filter_map(|(peer, addrs)| {
            let peer = PeerId::from_bytes(&peer).ok()?;
            let addrs: Vec<ByteBuf> = cbor4ii::serde::from_slice(&addrs).ok()?;
            let addrs: Vec<Multiaddr> = addrs
                .into_iter()
                .take(16)
                .filter_map(|a| Multiaddr::try_from(a.into_vec()).ok())
                .collect();
            (peer != local && !addrs.is_empty()).then_some((peer, addrs))
        })
        .take(MAX_SNAPSHOT_SEEDS)
        .collect()
}
