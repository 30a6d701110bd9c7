//! The node: a cloneable [`Client`] that sends commands over a bounded channel, and the
//! [`EventLoop`] that owns the swarm and applies the rules tying its parts together.
//!
//! - **Identity gate.** A peer enters kad's routing table only when the gate verified it and SWIM
//!   holds it alive ([`Joined`](shoal_swim::behaviour::Event::Joined) or
//!   [`Refuted`](shoal_swim::behaviour::Event::Refuted)); a failed or departed member is removed.
//!   SWIM runs with admission required: the loop admits a peer on
//!   [`Verified`](crate::gate::Event::Verified) and revokes it on
//!   [`Refused`](crate::gate::Event::Refused); a member SWIM discovers in gossip is admitted
//!   on the proof the member who named it relays, or dialed so the gate checks it. A member
//!   declared failed or gone keeps its proof a while, so its refutation readmits it at once.
//! - **Records.** Inbound puts are validated, checked against lockstep notices and only then
//!   stored; refusals are counted per peer. A get validates every copy; the highest valid
//!   sequence wins.
//! - **Shutdown.** [`Client::shutdown`] leaves SWIM gracefully (bounded by
//!   [`SHUTDOWN_LEAVE_BOUND`]), closes the redb database and ends [`EventLoop::run`]; calls made
//!   after it report `Stopped`.
//!
//! Model: libp2p `examples/file-sharing/src/network.rs`. Files: this one holds the client and the
//! public types, `event_loop.rs` the loop, membership and joins, `admission.rs` who enters the
//! membership, `departed.rs` the proofs of departed members, `lookups.rs` closest-peer lookups,
//! `queries.rs` gets and lockstep, `replicate.rs` puts and their replicas.

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::time::Duration;

use libp2p::core::muxing::StreamMuxerBox;
use libp2p::core::transport::{Boxed, MemoryTransport};
use libp2p::core::upgrade::Version;
use libp2p::{Multiaddr, PeerId, Transport, identity, noise, yamux};
use shoal_swim::CommandError;
use shoal_swim::State;
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::config::ConfigError;
use crate::lockstep::protocol::Response;
use crate::lockstep::{Announced, LockstepError, SignedNotice};
use crate::record::{Record, RecordError, SignedRecord};
use crate::store::{StorageError, StoreError};

mod admission;
mod departed;
mod event_loop;
mod lookups;
mod queries;
mod replicate;

pub use event_loop::EventLoop;

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

/// The in-process memory transport with libp2p's plaintext upgrade (public keys exchanged, no
/// encryption, no Diffie-Hellman) and yamux, for simulations of many nodes in one process only:
/// the cost of a real node's noise handshakes is spread over its own machine, while one process
/// running a thousand nodes pays for all of theirs (see `benches/lookup.rs`). Never use it
/// between processes: it neither encrypts nor proves the remote key.
pub fn dangerous_plaintext_memory_transport(keypair: &identity::Keypair) -> BoxedTransport {
    MemoryTransport::default()
        .upgrade(Version::V1)
        .authenticate(libp2p::plaintext::Config::new(keypair))
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
    /// Replicas that must acknowledge; `None` uses [`Config::put_quorum`](crate::Config::put_quorum).
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
    /// Stored locally and durably, but fewer replicas than the quorum kept it in time (a
    /// replica acknowledges only once it validated and kept the record); kad's periodic
    /// replication goes on offering it. Retrying with the same `seq` is safe.
    #[error("put of seq {seq} reached {acked} of {quorum} replicas ({refused} refused{})",
        reason.as_ref().map(|r| format!(", first: {r}")).unwrap_or_default())]
    Quorum {
        /// The key.
        key: Vec<u8>,
        /// The sequence number used.
        seq: u64,
        /// Replicas that kept the record.
        acked: usize,
        /// Replicas needed.
        quorum: usize,
        /// Replicas that refused it.
        refused: usize,
        /// The first refusal's reason, if any replica refused.
        reason: Option<String>,
    },
    /// The value contradicts this node's own lockstep announcement for the key: another value
    /// for the announced sequence, or a sequence older than the announced one. Nothing changed.
    #[error("lockstep: {0}")]
    Lockstep(LockstepError),
    /// The event loop has stopped; the put may or may not have happened.
    #[error("the node has stopped")]
    Stopped,
}

/// Requests sent by this node's queries, by what started them (see [`NodeStats::kad_rpcs`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KadRpcs {
    /// Sent by closest-peer lookups (find node, puts, lockstep) on `/shoal/find/1`
    /// ([`crate::lookup`]), counted as they are sent.
    pub lookups: u64,
    /// Sent by record gets.
    pub gets: u64,
    /// Sent by kad's own bootstraps.
    pub bootstrap: u64,
    /// Bootstraps kad ran.
    pub bootstraps: u64,
    /// Sent by anything else (kad's record replication).
    pub other: u64,
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

/// The counters of one lookup ([`crate::lookup`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LookupStats {
    /// Requests sent (`/shoal/find/1`, Kademlia's `FIND_NODE`).
    pub requests: u32,
    /// Requests answered.
    pub successes: u32,
    /// Requests that failed or timed out.
    pub failures: u32,
    /// Time from the first request to the last answer, if any request was sent.
    pub duration: Option<Duration>,
}

/// A lookup with its cost, from [`Client::find_node_with_stats`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LookupOk {
    /// The closest peers to the target found, closest first (at most the replication factor).
    pub peers: Vec<PeerId>,
    /// What the lookup cost.
    pub stats: LookupStats,
}

/// Result of [`Client::find_node_with_stats`].
pub type LookupResult = Result<LookupOk, FindNodeError>;

/// Result of [`Client::notices`]: valid notices for the key, the latest per publisher, newest
/// first; empty when none is known.
pub type NoticesResult = Result<Vec<SignedNotice>, NoticesError>;

/// Why [`Client::notices`] failed. Nothing changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoticesError {
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

/// Members of the SWIM table by state (ourselves excluded). Dead and departed members stay in
/// the table until their tombstones expire.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemberCounts {
    /// Answering probes.
    pub alive: usize,
    /// Suspected after a missed probe.
    pub suspect: usize,
    /// Declared failed.
    pub dead: usize,
    /// Left gracefully.
    pub left: usize,
}

/// One member of the SWIM table, from [`Client::member_list`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberInfo {
    /// The member.
    pub peer: PeerId,
    /// Its state.
    pub state: State,
    /// Its incarnation.
    pub incarnation: u64,
    /// Its addresses, as it last announced them.
    pub addrs: Vec<Multiaddr>,
}

/// Counters and gauges of the node, from [`Client::stats`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeStats {
    /// Inbound puts refused (invalid record, lockstep, store), per sending peer. At most
    /// [`MAX_REFUSAL_PEERS`] peers are kept: when a new peer's refusal finds the map full, the
    /// peer with the fewest refusals makes room (its count still shows in
    /// [`refused_puts_total`](Self::refused_puts_total)).
    pub refused_puts: HashMap<PeerId, u64>,
    /// Inbound puts refused in all.
    pub refused_puts_total: u64,
    /// Inbound puts stored.
    pub stored_puts: u64,
    /// Peers the gate verified (and SWIM admitted) since start.
    pub verified: usize,
    /// Peers the gate refused since start.
    pub refused_peers: usize,
    /// Members verified through a relayed proof since start (see [`crate::relay`]); counted in
    /// [`verified`](Self::verified) too.
    pub verified_by_relay: usize,
    /// Relayed identity proofs refused since start.
    pub refused_relayed: usize,
    /// Members dialed because the member that named them relayed no proof for them.
    pub relay_fallback_dials: usize,
    /// Members readmitted since start on the proof kept when SWIM declared them failed or
    /// gone (they refuted, or came back), without asking anyone for it.
    pub readmitted_departed: usize,
    /// Proofs of departed members kept now (bounded, expiring).
    pub departed_proofs: usize,
    /// Outbound connection attempts since start (any behaviour's).
    pub dials: usize,
    /// Proof-relay requests sent since start.
    pub relay_requests: usize,
    /// Proof-relay requests that failed (timed out, lost their connection) since start; their
    /// members are asked again later, and dialed after a few failures.
    pub relay_request_failures: usize,
    /// Proof-relay requests sent to a relayer with no open connection (each dials it).
    pub relay_requests_unconnected: usize,
    /// Requests sent since start by this node's lookups (as sent), and by the kad queries that
    /// ended (gets, and kad's own bootstraps: libp2p-kad runs one on its own while its table
    /// holds fewer than `k` peers).
    pub kad_rpcs: KadRpcs,
    /// Kad requests served since start (`FIND_NODE`, `GET_VALUE`, `PUT_VALUE`, others).
    pub kad_served: u64,
    /// Lookup requests ([`crate::lookup`], `/shoal/find/1`) served since start.
    pub lookups_served: u64,
    /// SWIM messages dropped because the sender was not admitted.
    pub swim_unadmitted: u64,
    /// Members of the SWIM table by state.
    pub members: MemberCounts,
    /// SWIM core counters (probes, failed probes, refutations, drops).
    pub swim: shoal_swim::Stats,
    /// SWIM wire counters (messages sent, received, malformed, unadmitted).
    pub swim_wire: shoal_swim::WireStats,
    /// The identity gate's proof checks (scrypt evaluations, cache hits, refusals, rate limits).
    pub verifier: shoal_pow::VerifierStats,
    /// Records held in the local store.
    pub records: usize,
    /// Lockstep notices held in the local book.
    pub notices: usize,
    /// Peers in kad's routing table.
    pub routing_peers: usize,
    /// Kad queries this node started (puts, gets, lookups) since start.
    pub kad_queries: u64,
    /// Established connections.
    pub connections: usize,
    /// Peers with at least one established connection.
    pub connected_peers: usize,
    /// The swarm's listen addresses.
    pub listen_addrs: Vec<Multiaddr>,
    /// The swarm's confirmed external addresses.
    pub external_addrs: Vec<Multiaddr>,
}

/// Most peers written to the routing-table snapshot.
pub const MAX_SNAPSHOT_PEERS: usize = 256;

/// Most snapshot peers dialed on start and used as seeds by a join without seeds.
pub const MAX_SNAPSHOT_SEEDS: usize = 32;

/// Peers whose put refusals [`NodeStats::refused_puts`] keeps.
pub const MAX_REFUSAL_PEERS: usize = 1024;

impl NodeStats {
    /// Counts a refused put from `peer`, keeping the map bounded (see
    /// [`refused_puts`](Self::refused_puts)).
    pub(crate) fn count_refused_put(&mut self, peer: PeerId) {
        self.refused_puts_total += 1;
        if !self.refused_puts.contains_key(&peer) && self.refused_puts.len() >= MAX_REFUSAL_PEERS {
            let fewest = self
                .refused_puts
                .iter()
                .min_by_key(|(_, n)| **n)
                .map(|(p, _)| *p);
            if let Some(fewest) = fewest {
                self.refused_puts.remove(&fewest);
            }
        }
        *self.refused_puts.entry(peer).or_default() += 1;
    }
}

/// How long [`Client::shutdown`] waits for SWIM's graceful leave to be gossiped before it closes
/// the node anyway.
pub const SHUTDOWN_LEAVE_BOUND: Duration = Duration::from_secs(2);

enum Command {
    Listen(Multiaddr, oneshot::Sender<ListenResult>),
    Join(Vec<(PeerId, Multiaddr)>, oneshot::Sender<JoinResult>),
    Put(PutRequest, oneshot::Sender<PutResult>),
    Get(Vec<u8>, oneshot::Sender<GetResult>),
    FindNode(PeerId, oneshot::Sender<LookupResult>),
    Notices(Vec<u8>, oneshot::Sender<NoticesResult>),
    MemberList(oneshot::Sender<Vec<MemberInfo>>),
    Shutdown(oneshot::Sender<()>),
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

    /// Joins through `seeds`: dials them, waits for the identity gate, and joins SWIM through
    /// those verified; the members SWIM learns fill kad's routing table. With no seeds, the peers of the routing-table
    /// snapshot saved in the data directory (at most [`MAX_SNAPSHOT_SEEDS`]) are the seeds.
    pub async fn join(&self, seeds: Vec<(PeerId, Multiaddr)>) -> JoinResult {
        self.ask(|r| Command::Join(seeds, r))
            .await
            .unwrap_or(Err(JoinError::Stopped))
    }

    /// Puts `value` under `key` for `ttl` with the default sequence rule; returns once `quorum`
    /// replicas (default [`Config::put_quorum`](crate::Config::put_quorum)) acknowledged.
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
        self.find_node_with_stats(peer).await.map(|ok| ok.peers)
    }

    /// The peers closest to `peer` in the DHT, with what the lookup cost.
    pub async fn find_node_with_stats(&self, peer: PeerId) -> LookupResult {
        self.ask(|r| Command::FindNode(peer, r))
            .await
            .unwrap_or(Err(FindNodeError::Stopped))
    }

    /// The lockstep notices for `key`: those this node keeps plus those kept by the peers closest
    /// to the key (a kad lookup, then one lockstep request to each of up to
    /// [`Config::replication_factor`](crate::Config::replication_factor) of them). Each is
    /// checked (signature, and a stamp that paid for it when it was made); the latest per
    /// publisher is kept, newest first. Peers that do not answer are skipped.
    pub async fn notices(&self, key: Vec<u8>) -> NoticesResult {
        self.ask(|r| Command::Notices(key, r))
            .await
            .unwrap_or(Err(NoticesError::Stopped))
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

    /// Every member SWIM knows (any state, ourselves excluded); empty if the node stopped.
    pub async fn member_list(&self) -> Vec<MemberInfo> {
        self.ask(Command::MemberList).await.unwrap_or_default()
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

    /// Sends `envelope` as the record for `key` straight to `peers` on the replica protocol,
    /// unchecked and not stored locally. Dangerous: for tests of what peers do with bad records.
    /// Succeeds when every peer kept it; otherwise [`PutError::Quorum`] counts those that kept
    /// and refused it. The reported `seq` is 0.
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

    /// Stops the node gracefully: leaves SWIM (waiting for the departure to be gossiped, at most
    /// [`SHUTDOWN_LEAVE_BOUND`]), closes the redb database (every acknowledged write was already
    /// committed durably) and ends [`EventLoop::run`]. Returns once the loop has ended; at once if
    /// it had already stopped. Operations still in flight, and every later call from any client,
    /// report `Stopped`.
    pub async fn shutdown(&self) {
        // No answer means the loop ended (or was already gone): either way it has stopped.
        let _ = self.ask(Command::Shutdown).await;
    }

    /// Lockstep notices this node accepts from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<SignedNotice> {
        self.notices.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusal_map_stays_bounded_and_keeps_the_worst() {
        let mut stats = NodeStats::default();
        let worst = PeerId::random();
        for _ in 0..5 {
            stats.count_refused_put(worst);
        }
        for _ in 0..3 * MAX_REFUSAL_PEERS {
            stats.count_refused_put(PeerId::random());
        }
        assert_eq!(stats.refused_puts.len(), MAX_REFUSAL_PEERS);
        assert_eq!(stats.refused_puts.get(&worst), Some(&5));
        assert_eq!(stats.refused_puts_total, 5 + 3 * MAX_REFUSAL_PEERS as u64);
    }
}
