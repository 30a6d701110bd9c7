//! The node: a cloneable [`Client`] that sends commands over a bounded channel, and the
//! [`EventLoop`] that owns the swarm and applies the rules tying its parts together.
//!
//! - **Identity gate.** A peer enters kad's routing table only when the gate verified it and SWIM
//!   holds it alive ([`Joined`](shoal_swim::behaviour::Event::Joined) or
//!   [`Refuted`](shoal_swim::behaviour::Event::Refuted)); a failed or departed member is removed.
//!   SWIM runs with admission required: the loop admits a peer on
//!   [`gate::Event::Verified`] and revokes it on [`gate::Event::Refused`]; members SWIM discovers
//!   in gossip, and peers kad finds routable, are dialed so the gate checks them first.
//! - **Records.** Inbound puts are validated, checked against lockstep notices and only then
//!   stored; refusals are counted per peer. A get validates every copy; the highest valid
//!   sequence wins.
//!
//! Model: libp2p `examples/file-sharing/src/network.rs`.

use std::collections::{HashMap, HashSet};
use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use libp2p::core::muxing::StreamMuxerBox;
use libp2p::core::transport::{Boxed, ListenerId, MemoryTransport};
use libp2p::core::upgrade::Version;
use libp2p::kad::{self, QueryId, QueryResult, Quorum};
use libp2p::request_response::{self as rr, OutboundRequestId};
use libp2p::swarm::dial_opts::DialOpts;
use libp2p::swarm::{Swarm, SwarmEvent};
use libp2p::{Multiaddr, PeerId, Transport, identity, noise, yamux};
use serde_bytes::ByteBuf;
use shoal_pow::{IdentityProof, NodeKey, StampChecker, unix_now};
use shoal_swim::behaviour::Event as SwimEvent;
use shoal_swim::{CommandError, CommandId, State};
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::behaviour::{Behaviour, Event};
use crate::config::{Config, ConfigError};
use crate::gate;
use crate::lockstep::protocol::{self as lockstep, Request, Response};
use crate::lockstep::{Announced, LockstepError, NoticeBook, SignedNotice, value_hash};
use crate::record::{NewRecord, Record, RecordError, SignedRecord};
use crate::store::{Persist, RecordStore, StorageError, StoreError};

/// The transport a node runs on: authenticated and multiplexed.
pub type BoxedTransport = Boxed<(PeerId, StreamMuxerBox)>;

/// The in-process memory transport with noise and yamux, for tests and simulations.
pub fn memory_transport(keypair: &identity::Keypair) -> BoxedTransport {
    MemoryTransport::default()
        .upgrade(Version::V1)
        // Invariant: noise accepts every ed25519 keypair.
        .authenticate(noise::Config::new(keypair).expect("noise accepts ed25519 keys"))
        .multiplex(yamux::Config::default())
        .boxed()
}

/// TCP with noise and yamux.
pub fn tcp_transport(keypair: &identity::Keypair) -> BoxedTransport {
    libp2p::tcp::tokio::Transport::new(libp2p::tcp::Config::default().nodelay(true))
        .upgrade(Version::V1)
        // Invariant: noise accepts every ed25519 keypair.
        .authenticate(noise::Config::new(keypair).expect("noise accepts ed25519 keys"))
        .multiplex(yamux::Config::default())
        .boxed()
}

/// Why the node could not start. Nothing was started.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The redb database could not be opened or read.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The data directory could not be created.
    #[error("data directory: {0}")]
    DataDir(#[from] std::io::Error),
}

/// Result of [`Client::listen`].
pub type ListenResult = Result<Multiaddr, ListenError>;

/// Why listening failed. Nothing changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ListenError {
    /// The transport refused the address.
    #[error("cannot listen on {addr}: {reason}")]
    Transport {
        /// The address asked for.
        addr: Multiaddr,
        /// The transport's reason.
        reason: String,
    },
    /// The event loop has stopped.
    #[error("the node has stopped")]
    Stopped,
}

/// What [`Client::join`] achieved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinOk {
    /// Seeds that passed the identity gate.
    pub verified_seeds: usize,
    /// Live members known when SWIM's join finished.
    pub members: usize,
}

/// Result of [`Client::join`].
pub type JoinResult = Result<JoinOk, JoinError>;

/// Why a join failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JoinError {
    /// No seed could be dialed and verified; nothing changed (retry with other seeds).
    #[error("none of the {tried} seeds could be dialed and verified")]
    NoSeedVerified {
        /// Seeds tried.
        tried: usize,
    },
    /// Seeds were verified (and admitted), but SWIM's join failed; SWIM keeps trying the seeds
    /// in the background.
    #[error("SWIM join failed: {0}")]
    Swim(CommandError),
    /// The event loop has stopped.
    #[error("the node has stopped")]
    Stopped,
}

/// A put, with its options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutRequest {
    /// The key, at most [`crate::record::MAX_KEY_LEN`] bytes.
    pub key: Vec<u8>,
    /// The value, at most [`crate::record::MAX_VALUE_LEN`] bytes.
    pub value: Vec<u8>,
    /// Lifetime from now.
    pub ttl: Duration,
    /// Replicas that must acknowledge; `None` uses [`Config::put_quorum`].
    pub quorum: Option<NonZeroUsize>,
    /// Sequence number; `None` takes the larger of the last one seen for the key plus one and
    /// the Unix time.
    pub seq: Option<u64>,
}

/// A successful put.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutOk {
    /// The key.
    pub key: Vec<u8>,
    /// The sequence number used.
    pub seq: u64,
}

/// Result of [`Client::put`].
pub type PutResult = Result<PutOk, PutError>;

/// Why a put failed.
#[derive(Debug, thiserror::Error)]
pub enum PutError {
    /// The record could not be made (size, TTL, stamp); nothing changed.
    #[error("record refused: {0}")]
    Record(#[from] RecordError),
    /// The local store refused it (stale sequence, full, disk error); nothing changed.
    #[error("local store refused the record: {0}")]
    Store(#[from] StoreError),
    /// Stored locally and durably, but fewer replicas than the quorum acknowledged in time; kad
    /// keeps replicating in the background. Retrying with the same `seq` is safe.
    #[error("put of seq {seq} reached {acked} of {quorum} replicas")]
    Quorum {
        /// The key.
        key: Vec<u8>,
        /// The sequence number used.
        seq: u64,
        /// Replicas that acknowledged.
        acked: usize,
        /// Replicas needed.
        quorum: usize,
    },
    /// The event loop has stopped; the put may or may not have happened.
    #[error("the node has stopped")]
    Stopped,
}

/// A record found by [`Client::get`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GetOk {
    /// The winning record: the valid one with the highest sequence.
    pub record: Record,
    /// Its envelope.
    pub signed: SignedRecord,
    /// Whether a lockstep notice from its publisher matches its value.
    pub announced: Announced,
    /// Valid copies seen (ours included).
    pub valid: usize,
    /// Copies refused by validation.
    pub invalid: usize,
}

/// Result of [`Client::get`].
pub type GetResult = Result<GetOk, GetError>;

/// Why a get found nothing. Nothing changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GetError {
    /// No valid record was found within the query bound.
    #[error("no valid record found ({invalid} invalid copies refused)")]
    NotFound {
        /// The key.
        key: Vec<u8>,
        /// Copies refused by validation.
        invalid: usize,
    },
    /// The event loop has stopped.
    #[error("the node has stopped")]
    Stopped,
}

/// Result of [`Client::find_node`]: the closest peers to the target found, closest first.
pub type FindNodeResult = Result<Vec<PeerId>, FindNodeError>;

/// Why a lookup failed. Nothing changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FindNodeError {
    /// The lookup timed out; the peers found so far.
    #[error("lookup timed out with {} peers found", found.len())]
    Timeout {
        /// Peers found before the timeout.
        found: Vec<PeerId>,
    },
    /// The event loop has stopped.
    #[error("the node has stopped")]
    Stopped,
}

/// What [`Client::announce`] achieved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnnounceOk {
    /// The sequence number announced (put with this `seq` to match).
    pub seq: u64,
    /// Peers that kept the notice.
    pub accepted: usize,
    /// Peers that refused it or did not answer.
    pub refused: usize,
}

/// Result of [`Client::announce`].
pub type AnnounceResult = Result<AnnounceOk, AnnounceError>;

/// Why an announcement failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AnnounceError {
    /// The notice could not be made (key size, stamp); nothing changed.
    #[error("notice refused: {0}")]
    Notice(#[from] LockstepError),
    /// No peer close to the key was found; nothing was sent.
    #[error("no peer close to the key was found")]
    NoPeers,
    /// No peer kept the notice.
    #[error("none of {tried} peers kept the notice")]
    NoneAccepted {
        /// Peers asked.
        tried: usize,
    },
    /// The event loop has stopped.
    #[error("the node has stopped")]
    Stopped,
}

/// Counters of the node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeStats {
    /// Inbound puts refused (invalid record, lockstep, store), per sending peer.
    pub refused_puts: HashMap<PeerId, u64>,
    /// Inbound puts stored.
    pub stored_puts: u64,
    /// Peers the gate verified (and SWIM admitted) since start.
    pub verified: usize,
    /// Peers the gate refused since start.
    pub refused_peers: usize,
    /// SWIM messages dropped because the sender was not admitted.
    pub swim_unadmitted: u64,
}

enum Command {
    Listen(Multiaddr, oneshot::Sender<ListenResult>),
    Join(Vec<(PeerId, Multiaddr)>, oneshot::Sender<JoinResult>),
    Put(PutRequest, oneshot::Sender<PutResult>),
    Get(Vec<u8>, oneshot::Sender<GetResult>),
    FindNode(PeerId, oneshot::Sender<FindNodeResult>),
    Announce {
        key: Vec<u8>,
        value: Vec<u8>,
        seq: Option<u64>,
        reply: oneshot::Sender<AnnounceResult>,
    },
    Members(oneshot::Sender<Vec<PeerId>>),
    Peers(oneshot::Sender<Vec<PeerId>>),
    Stored(Vec<u8>, oneshot::Sender<Option<SignedRecord>>),
    Stats(oneshot::Sender<NodeStats>),
    RawNotice {
        peer: PeerId,
        envelope: Vec<u8>,
        reply: oneshot::Sender<Option<Response>>,
    },
    RawPut {
        key: Vec<u8>,
        envelope: Vec<u8>,
        peers: Vec<PeerId>,
        reply: oneshot::Sender<PutResult>,
    },
}

/// A handle on a running node; cheap to clone.
#[derive(Debug, Clone)]
pub struct Client {
    local: PeerId,
    tx: mpsc::Sender<Command>,
    notices: broadcast::Sender<SignedNotice>,
}

impl Client {
    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Option<T> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(make(reply)).await.ok()?;
        rx.await.ok()
    }

    /// This node's peer id.
    pub fn peer_id(&self) -> PeerId {
        self.local
    }

    /// Listens on `addr`; returns the address actually bound (e.g. for `/memory/0`).
    pub async fn listen(&self, addr: Multiaddr) -> ListenResult {
        self.ask(|r| Command::Listen(addr, r))
            .await
            .unwrap_or(Err(ListenError::Stopped))
    }

    /// Joins through `seeds`: dials them, waits for the identity gate, joins SWIM through those
    /// verified, and starts a kad bootstrap.
    pub async fn join(&self, seeds: Vec<(PeerId, Multiaddr)>) -> JoinResult {
        self.ask(|r| Command::Join(seeds, r))
            .await
            .unwrap_or(Err(JoinError::Stopped))
    }

    /// Puts `value` under `key` for `ttl` with the default sequence rule; returns once `quorum`
    /// replicas (default [`Config::put_quorum`]) acknowledged.
    pub async fn put(
        &self,
        key: Vec<u8>,
        value: Vec<u8>,
        ttl: Duration,
        quorum: Option<NonZeroUsize>,
    ) -> PutResult {
        self.put_request(PutRequest {
            key,
            value,
            ttl,
            quorum,
            seq: None,
        })
        .await
    }

    /// Puts with every option: the record is stored locally and durably first, then replicated.
    pub async fn put_request(&self, request: PutRequest) -> PutResult {
        self.ask(|r| Command::Put(request, r))
            .await
            .unwrap_or(Err(PutError::Stopped))
    }

    /// Looks `key` up; every copy is validated and the highest valid sequence wins.
    pub async fn get(&self, key: Vec<u8>) -> GetResult {
        self.ask(|r| Command::Get(key, r))
            .await
            .unwrap_or(Err(GetError::Stopped))
    }

    /// The peers closest to `peer` in the DHT.
    pub async fn find_node(&self, peer: PeerId) -> FindNodeResult {
        self.ask(|r| Command::FindNode(peer, r))
            .await
            .unwrap_or(Err(FindNodeError::Stopped))
    }

    /// Announces `value` for `key` to the peers closest to the key (lockstep). `seq` defaults as
    /// for puts; put with the returned `seq` to match the notice.
    pub async fn announce(&self, key: Vec<u8>, value: Vec<u8>, seq: Option<u64>) -> AnnounceResult {
        self.ask(|reply| Command::Announce {
            key,
            value,
            seq,
            reply,
        })
        .await
        .unwrap_or(Err(AnnounceError::Stopped))
    }

    /// Live SWIM members (alive or suspect), ourselves excluded; empty if the node stopped.
    pub async fn members(&self) -> Vec<PeerId> {
        self.ask(Command::Members).await.unwrap_or_default()
    }

    /// Peers in kad's routing table; empty if the node stopped.
    pub async fn peers(&self) -> Vec<PeerId> {
        self.ask(Command::Peers).await.unwrap_or_default()
    }

    /// The record this node stores under `key`, if any.
    pub async fn stored(&self, key: Vec<u8>) -> Option<SignedRecord> {
        self.ask(|r| Command::Stored(key, r)).await.flatten()
    }

    /// The node's counters; `None` if the node stopped.
    pub async fn stats(&self) -> Option<NodeStats> {
        self.ask(Command::Stats).await
    }

    /// Sends `envelope` as the record for `key` straight to `peers`, unchecked and not stored
    /// locally. Dangerous: for tests of what peers do with bad records. Succeeds when every peer
    /// acknowledged (kad acknowledges before filtering, so an acknowledgement is not storage);
    /// the reported `seq` is 0.
    pub async fn dangerous_put_to(
        &self,
        key: Vec<u8>,
        envelope: Vec<u8>,
        peers: Vec<PeerId>,
    ) -> PutResult {
        self.ask(|reply| Command::RawPut {
            key,
            envelope,
            peers,
            reply,
        })
        .await
        .unwrap_or(Err(PutError::Stopped))
    }

    /// Sends `envelope` as a lockstep announcement straight to `peer`, unchecked. Dangerous: for
    /// tests of what peers do with bad or replayed notices. Returns the peer's answer, or `None`
    /// if it did not answer (or the node stopped).
    pub async fn dangerous_announce_to(&self, peer: PeerId, envelope: Vec<u8>) -> Option<Response> {
        self.ask(|reply| Command::RawNotice {
            peer,
            envelope,
            reply,
        })
        .await
        .flatten()
    }

    /// Lockstep notices this node accepts from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<SignedNotice> {
        self.notices.subscribe()
    }
}

struct Join {
    reply: oneshot::Sender<JoinResult>,
    tried: usize,
    waiting: HashSet<PeerId>,
    seeds: Vec<(PeerId, Vec<Multiaddr>)>,
    swim: Option<CommandId>,
    attempts: u32,
}

struct Get {
    key: Vec<u8>,
    reply: oneshot::Sender<GetResult>,
    best: Option<SignedRecord>,
    holders: Vec<PeerId>,
    valid: usize,
    invalid: usize,
    asking: usize,
    announced: Announced,
}

enum Closest {
    FindNode(oneshot::Sender<FindNodeResult>),
    Announce(Box<SignedNotice>, oneshot::Sender<AnnounceResult>),
}

struct Announcing {
    seq: u64,
    reply: oneshot::Sender<AnnounceResult>,
    outstanding: usize,
    accepted: usize,
    refused: usize,
}

enum Pending {
    Announce(usize),
    Check(usize),
    Raw(oneshot::Sender<Option<Response>>),
}

/// SWIM join attempts before a join is reported failed.
const JOIN_ATTEMPTS: u32 = 3;

/// Owns the swarm; run it with [`EventLoop::run`].
pub struct EventLoop {
    swarm: Swarm<Behaviour>,
    commands: mpsc::Receiver<Command>,
    notices: broadcast::Sender<SignedNotice>,
    key: NodeKey,
    config: Config,
    stamps: StampChecker,
    book: NoticeBook,
    persist: Option<Arc<Persist>>,
    verified: HashSet<PeerId>,
    stats: NodeStats,
    last_seq: HashMap<Vec<u8>, u64>,
    listens: HashMap<ListenerId, (Multiaddr, oneshot::Sender<ListenResult>)>,
    joins: Vec<Join>,
    puts: HashMap<QueryId, (Vec<u8>, u64, usize, oneshot::Sender<PutResult>)>,
    gets: HashMap<QueryId, Get>,
    checks: HashMap<usize, Get>,
    closest: HashMap<QueryId, Closest>,
    announcing: HashMap<usize, Announcing>,
    requests: HashMap<OutboundRequestId, Pending>,
    next_id: usize,
}

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
            verified: HashSet::new(),
            stats: NodeStats::default(),
            last_seq: HashMap::new(),
            listens: HashMap::new(),
            joins: Vec::new(),
            puts: HashMap::new(),
            gets: HashMap::new(),
            checks: HashMap::new(),
            closest: HashMap::new(),
            announcing: HashMap::new(),
            requests: HashMap::new(),
            next_id: 0,
        };
        Ok((client, event_loop))
    }

    /// Runs until every [`Client`] is dropped.
    pub async fn run(mut self) {
        loop {
            tokio::select! {
                event = self.swarm.select_next_some() => self.on_swarm_event(event),
                command = self.commands.recv() => match command {
                    Some(c) => self.on_command(c),
                    None => return,
                },
            }
        }
    }

    fn next_seq(&mut self, key: &[u8], explicit: Option<u64>) -> u64 {
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

    /// Adds `peer` to kad's routing table if it is verified and alive.
    fn route(&mut self, peer: PeerId, addrs: &[Multiaddr]) {
        if !self.verified.contains(&peer) {
            return;
        }
        let Some(mut known) = self.is_alive(&peer) else {
            return;
        };
        known.extend(addrs.iter().cloned());
        for addr in known {
            self.swarm.behaviour_mut().kad.add_address(&peer, addr);
        }
    }

    fn dial(&mut self, peer: PeerId, addrs: Vec<Multiaddr>) {
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
            Command::Get(key, reply) => {
                let id = self
                    .swarm
                    .behaviour_mut()
                    .kad
                    .get_record(kad::RecordKey::new(&key));
                self.gets.insert(
                    id,
                    Get {
                        key,
                        reply,
                        best: None,
                        holders: Vec::new(),
                        valid: 0,
                        invalid: 0,
                        asking: 0,
                        announced: Announced::No,
                    },
                );
            }
            Command::FindNode(peer, reply) => {
                let id = self.swarm.behaviour_mut().kad.get_closest_peers(peer);
                self.closest.insert(id, Closest::FindNode(reply));
            }
            Command::Announce {
                key,
                value,
                seq,
                reply,
            } => {
                let seq = self.next_seq(&key, seq);
                match SignedNotice::create(
                    &self.key,
                    &key,
                    &value,
                    seq,
                    unix_now(),
                    &self.config.stamps,
                ) {
                    Ok(notice) => {
                        let id = self.swarm.behaviour_mut().kad.get_closest_peers(key);
                        self.closest
                            .insert(id, Closest::Announce(Box::new(notice), reply));
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e.into()));
                    }
                }
            }
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
                let _ = reply.send(self.swarm.behaviour_mut().kad.store_mut().signed(&key));
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
                let quorum = peers.len().max(1);
                let record = kad::Record {
                    key: kad::RecordKey::new(&key),
                    value: envelope,
                    publisher: None,
                    expires: None,
                };
                let id = self.swarm.behaviour_mut().kad.put_record_to(
                    record,
                    peers.into_iter(),
                    Quorum::All,
                );
                self.puts.insert(id, (key, 0, quorum, reply));
            }
            Command::Stats(reply) => {
                let mut stats = self.stats.clone();
                stats.swim_unadmitted = self.swarm.behaviour().swim.wire_stats().unadmitted;
                let _ = reply.send(stats);
            }
        }
    }

    fn start_join(&mut self, seeds: Vec<(PeerId, Multiaddr)>, reply: oneshot::Sender<JoinResult>) {
        let mut by_peer: HashMap<PeerId, Vec<Multiaddr>> = HashMap::new();
        for (peer, addr) in seeds {
            by_peer.entry(peer).or_default().push(addr);
        }
        let tried = by_peer.len();
        let mut waiting = HashSet::new();
        for (peer, addrs) in &by_peer {
            let ready = self.verified.contains(peer) && self.swarm.is_connected(peer);
            if !ready {
                waiting.insert(*peer);
                if self.swarm.is_connected(peer) {
                    continue; // The gate is at work on the open connection.
                }
                let opts = DialOpts::peer_id(*peer).addresses(addrs.clone()).build();
                if let Err(error) = self.swarm.dial(opts) {
                    tracing::debug!(%peer, %error, "cannot dial seed");
                    waiting.remove(peer);
                }
            }
        }
        let seeds = by_peer
            .into_iter()
            .filter(|(p, _)| waiting.contains(p) || self.verified.contains(p))
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
            j.seeds.retain(|(p, _)| self.verified.contains(p));
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
                // No routable peer yet is not an error: SWIM will add them.
                let _ = self.swarm.behaviour_mut().kad.bootstrap();
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

    fn start_put(&mut self, request: PutRequest, reply: oneshot::Sender<PutResult>) {
        let seq = self.next_seq(&request.key, request.seq);
        let now_unix = unix_now();
        let quorum = request.quorum.unwrap_or(self.config.put_quorum);
        let signed = match SignedRecord::create(
            &self.key,
            NewRecord {
                key: request.key.clone(),
                value: request.value,
                seq,
                ttl: request.ttl.as_secs().max(1),
            },
            now_unix,
            &self.config.stamps,
        ) {
            Ok(s) => s,
            Err(e) => {
                let _ = reply.send(Err(e.into()));
                return;
            }
        };
        let expires = Instant::now() + request.ttl.max(Duration::from_secs(1));
        let kad = &mut self.swarm.behaviour_mut().kad;
        if let Err(e) = kad
            .store_mut()
            .insert(signed.clone(), Instant::now(), now_unix)
        {
            let _ = reply.send(Err(e.into()));
            return;
        }
        self.last_seq.insert(request.key.clone(), seq);
        let record = kad::Record {
            key: kad::RecordKey::new(&request.key),
            value: signed.into_bytes(),
            publisher: Some(self.key.peer_id()),
            expires: Some(expires),
        };
        match kad.put_record(record, Quorum::N(quorum)) {
            Ok(id) => {
                self.puts
                    .insert(id, (request.key, seq, quorum.get(), reply));
            }
            Err(e) => {
                // Invariant: the record was just inserted in this store, which accepts it again.
                tracing::warn!(error = %e, "kad refused a record our store accepted");
                let _ = reply.send(Err(PutError::Quorum {
                    key: request.key,
                    seq,
                    acked: 0,
                    quorum: quorum.get(),
                }));
            }
        }
    }

    fn on_swarm_event(&mut self, event: SwarmEvent<Event>) {
        match event {
            SwarmEvent::Behaviour(Event::Gate(e)) => self.on_gate(e),
            SwarmEvent::Behaviour(Event::Swim(e)) => self.on_swim(e),
            SwarmEvent::Behaviour(Event::Kad(e)) => self.on_kad(*e),
            SwarmEvent::Behaviour(Event::Lockstep(e)) => self.on_lockstep(e),
            SwarmEvent::Behaviour(Event::Identify(_)) => {}
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
            gate::Event::Verified { peer, .. } => {
                if self.verified.insert(peer) {
                    self.stats.verified += 1;
                }
                self.swarm.behaviour_mut().swim.admit(peer);
                self.route(peer, &[]);
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
                self.verified.remove(&peer);
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
                b.kad.remove_peer(&peer);
                // Forget a departed peer unless it is still connected and verified, so the sets
                // stay bounded by the live membership; if it comes back, gossip names it again
                // and it is dialed and verified anew (a cache hit for the verifier).
                if !b.gate.is_verified(&peer) {
                    b.swim.revoke(&peer);
                    self.verified.remove(&peer);
                }
            }
            SwimEvent::Discovered { peer, addrs } => self.dial(peer, addrs),
            SwimEvent::JoinFinished { id, result } => self.on_join_finished(id, result),
            SwimEvent::Suspected { .. } | SwimEvent::LeaveFinished { .. } => {}
        }
    }

    fn on_kad(&mut self, event: kad::Event) {
        match event {
            kad::Event::RoutablePeer { peer, address }
            | kad::Event::PendingRoutablePeer { peer, address } => {
                if self.verified.contains(&peer) {
                    self.route(peer, &[address]);
                } else {
                    self.dial(peer, vec![address]);
                }
            }
            kad::Event::UnroutablePeer { peer } => {
                // Connected without a known address: the gate checks it on this connection, and
                // SWIM supplies its addresses once it is admitted.
                tracing::trace!(%peer, "unroutable peer");
            }
            kad::Event::InboundRequest {
                request:
                    kad::InboundRequest::PutRecord {
                        source,
                        record: Some(record),
                        ..
                    },
            } => self.on_inbound_put(source, record),
            kad::Event::OutboundQueryProgressed {
                id, result, step, ..
            } => self.on_query(id, result, step.last),
            _ => {}
        }
    }

    fn on_inbound_put(&mut self, source: PeerId, record: kad::Record) {
        let now_unix = unix_now();
        let verified = if self.verified.contains(&source) {
            Ok(())
        } else {
            Err("sender's identity not verified".to_owned())
        };
        let outcome = verified
            .and_then(|()| {
                SignedRecord::validate(
                    &record.value,
                    Some(record.key.as_ref()),
                    now_unix,
                    &self.config.records,
                    &self.stamps,
                )
                .map_err(|e| e.to_string())
            })
            .and_then(|signed| {
                self.book
                    .check_put(signed.record())
                    .map_err(|e| e.to_string())?;
                self.swarm
                    .behaviour_mut()
                    .kad
                    .store_mut()
                    .insert(signed, Instant::now(), now_unix)
                    .map_err(|e| e.to_string())
            });
        match outcome {
            Ok(_) => self.stats.stored_puts += 1,
            Err(reason) => {
                tracing::debug!(peer = %source, %reason, "inbound put refused");
                *self.stats.refused_puts.entry(source).or_default() += 1;
            }
        }
    }

    fn on_query(&mut self, id: QueryId, result: QueryResult, last: bool) {
        match result {
            QueryResult::PutRecord(r) => {
                let Some((key, seq, quorum, reply)) = self.puts.remove(&id) else {
                    return;
                };
                let result = match r {
                    Ok(_) => Ok(PutOk { key, seq }),
                    Err(kad::PutRecordError::QuorumFailed { success, .. })
                    | Err(kad::PutRecordError::Timeout { success, .. }) => Err(PutError::Quorum {
                        key,
                        seq,
                        acked: success.len(),
                        quorum,
                    }),
                };
                let _ = reply.send(result);
            }
            QueryResult::GetRecord(r) => {
                let Some(get) = self.gets.get_mut(&id) else {
                    return;
                };
                if let Ok(kad::GetRecordOk::FoundRecord(found)) = r {
                    let book = &self.book;
                    match SignedRecord::validate(
                        &found.record.value,
                        Some(&get.key),
                        unix_now(),
                        &self.config.records,
                        &self.stamps,
                    )
                    .map_err(|e| e.to_string())
                    .and_then(|s| match book.check_put(s.record()) {
                        // A copy contradicting a notice we hold is refused like a bad one.
                        Err(e) => Err(e.to_string()),
                        Ok(_) => Ok(s),
                    }) {
                        Ok(signed) => {
                            get.valid += 1;
                            if let Some(peer) = found.peer {
                                get.holders.push(peer);
                            }
                            if get.best.as_ref().is_none_or(|b| signed.supersedes(b)) {
                                get.best = Some(signed);
                            }
                        }
                        Err(error) => {
                            tracing::debug!(peer = ?found.peer, %error, "invalid record copy");
                            get.invalid += 1;
                        }
                    }
                    if !last {
                        return;
                    }
                }
                if let Some(get) = self.gets.remove(&id) {
                    self.finish_get(get);
                }
            }
            QueryResult::GetClosestPeers(r) => {
                let Some(what) = self.closest.remove(&id) else {
                    return;
                };
                let (peers, timed_out) = match r {
                    Ok(ok) => (ok.peers.into_iter().map(|p| p.peer_id).collect(), false),
                    Err(kad::GetClosestPeersError::Timeout { peers, .. }) => {
                        (peers.into_iter().map(|p| p.peer_id).collect(), true)
                    }
                };
                match what {
                    Closest::FindNode(reply) => {
                        let _ = reply.send(if timed_out {
                            Err(FindNodeError::Timeout { found: peers })
                        } else {
                            Ok(peers)
                        });
                    }
                    Closest::Announce(notice, reply) => self.send_notice(*notice, peers, reply),
                }
            }
            _ => {}
        }
    }

    fn finish_get(&mut self, mut get: Get) {
        let Some(best) = &get.best else {
            let _ = get.reply.send(Err(GetError::NotFound {
                key: get.key,
                invalid: get.invalid,
            }));
            return;
        };
        if best.record().publisher == self.key.public() {
            let seq = best.record().seq;
            let seen = self.last_seq.entry(get.key.clone()).or_default();
            *seen = (*seen).max(seq);
        }
        if matches!(self.book.check_put(best.record()), Ok(Announced::Yes)) {
            get.announced = Announced::Yes;
            return self.reply_get(get);
        }
        let mut holders = std::mem::take(&mut get.holders);
        holders.dedup();
        let id = self.next_id;
        self.next_id += 1;
        for peer in holders.into_iter().take(self.config.announced_checks.get()) {
            let req = Request::Notices(ByteBuf::from(get.key.clone()));
            let rid = self.swarm.behaviour_mut().lockstep.send_request(&peer, req);
            self.requests.insert(rid, Pending::Check(id));
            get.asking += 1;
        }
        if get.asking == 0 {
            return self.reply_get(get);
        }
        self.checks.insert(id, get);
    }

    fn reply_get(&mut self, get: Get) {
        // Invariant: only called with a winning record.
        let Some(best) = get.best else { return };
        let _ = get.reply.send(Ok(GetOk {
            record: best.record().clone(),
            signed: best,
            announced: get.announced,
            valid: get.valid,
            invalid: get.invalid,
        }));
    }

    fn send_notice(
        &mut self,
        notice: SignedNotice,
        peers: Vec<PeerId>,
        reply: oneshot::Sender<AnnounceResult>,
    ) {
        let peers: Vec<PeerId> = peers
            .into_iter()
            .take(self.config.replication_factor.get())
            .collect();
        if peers.is_empty() {
            let _ = reply.send(Err(AnnounceError::NoPeers));
            return;
        }
        let id = self.next_id;
        self.next_id += 1;
        for peer in &peers {
            let req = Request::Announce(ByteBuf::from(notice.as_bytes().to_vec()));
            let rid = self.swarm.behaviour_mut().lockstep.send_request(peer, req);
            self.requests.insert(rid, Pending::Announce(id));
        }
        self.announcing.insert(
            id,
            Announcing {
                seq: notice.notice().seq,
                reply,
                outstanding: peers.len(),
                accepted: 0,
                refused: 0,
            },
        );
    }

    fn on_lockstep(&mut self, event: rr::Event<Request, Response>) {
        match event {
            rr::Event::Message {
                peer,
                message:
                    rr::Message::Request {
                        request, channel, ..
                    },
                ..
            } => {
                if !self.verified.contains(&peer) {
                    let refusal = Response::Refused("identity not verified".into());
                    let _ = self
                        .swarm
                        .behaviour_mut()
                        .lockstep
                        .send_response(channel, refusal);
                    return;
                }
                let answer =
                    lockstep::answer(&mut self.book, &mut self.stamps, unix_now(), request);
                if let Some(persist) = &self.persist {
                    for n in &answer.dropped {
                        let n = n.notice();
                        if let Err(e) = persist.remove_notice(&n.key, &n.publisher.to_bytes()) {
                            tracing::warn!(error = %e, "cannot delete a notice");
                        }
                    }
                    if let Some(n) = &answer.accepted {
                        let p = n.notice().publisher.to_bytes();
                        if let Err(e) = persist.put_notice(&n.notice().key, &p, n.as_bytes()) {
                            tracing::warn!(error = %e, "cannot persist a notice");
                        }
                    }
                }
                if let Some(n) = answer.accepted {
                    // No subscriber is fine.
                    let _ = self.notices.send(n);
                }
                let _ = self
                    .swarm
                    .behaviour_mut()
                    .lockstep
                    .send_response(channel, answer.response);
            }
            rr::Event::Message {
                message:
                    rr::Message::Response {
                        request_id,
                        response,
                    },
                ..
            } => self.on_lockstep_answer(request_id, Some(response)),
            rr::Event::OutboundFailure { request_id, .. } => {
                self.on_lockstep_answer(request_id, None)
            }
            _ => {}
        }
    }

    fn on_lockstep_answer(&mut self, request: OutboundRequestId, response: Option<Response>) {
        match self.requests.remove(&request) {
            Some(Pending::Announce(id)) => {
                let Some(a) = self.announcing.get_mut(&id) else {
                    return;
                };
                if matches!(response, Some(Response::Accepted)) {
                    a.accepted += 1;
                } else {
                    a.refused += 1;
                }
                a.outstanding -= 1;
                if a.outstanding == 0
                    && let Some(a) = self.announcing.remove(&id)
                {
                    let tried = a.accepted + a.refused;
                    let _ = a.reply.send(if a.accepted == 0 {
                        Err(AnnounceError::NoneAccepted { tried })
                    } else {
                        Ok(AnnounceOk {
                            seq: a.seq,
                            accepted: a.accepted,
                            refused: a.refused,
                        })
                    });
                }
            }
            Some(Pending::Check(id)) => {
                let Some(get) = self.checks.get_mut(&id) else {
                    return;
                };
                if let (Some(best), Some(response)) = (&get.best, response)
                    && let Ok(notices) = lockstep::notices_from(&get.key, response)
                {
                    let r = best.record();
                    let hash = value_hash(&r.key, &r.value);
                    if notices.iter().any(|n| {
                        let n = n.notice();
                        n.publisher == r.publisher && n.seq == r.seq && n.value_hash == hash
                    }) {
                        get.announced = Announced::Yes;
                    }
                }
                get.asking -= 1;
                if get.asking == 0
                    && let Some(get) = self.checks.remove(&id)
                {
                    self.reply_get(get);
                }
            }
            Some(Pending::Raw(reply)) => {
                let _ = reply.send(response);
            }
            None => {}
        }
    }
}
