//! The node: a cloneable [`Client`] that sends commands over a bounded channel, and the
//! [`EventLoop`] that owns the swarm and the DHT's sans-IO core ([`crate::core`]) and translates
//! between them.
//!
//! Every rule (who is admitted, what enters the routing table, which records and notices are
//! kept, how puts, gets and lookups proceed) lives in the core; the loop reads the clock once
//! per turn, hands the core what the swarm, the clients and the disk report, and carries out
//! what the core asks: sends, answers, dials, writes and replies. Writes go to a writer thread
//! that commits the writes of a turn together ([`crate::store::Writer`]); what waits for a write
//! (a put's reply, a replica's `Stored`, a notice's `Accepted`) is sent only after its commit.
//!
//! - **Shutdown.** [`Client::shutdown`] leaves SWIM gracefully (bounded by
//!   [`SHUTDOWN_LEAVE_BOUND`]), commits every queued write, closes the redb database and ends
//!   [`EventLoop::run`]; calls made after it report `Stopped`.
//!
//! Model: libp2p `examples/file-sharing/src/network.rs`. Files: this one holds the client and the
//! public types, `event_loop.rs` the loop, `checks.rs` the identity checks and reachability the
//! core consults.

use std::num::NonZeroUsize;
use std::time::Duration;

use libp2p::core::muxing::StreamMuxerBox;
use libp2p::core::transport::{Boxed, MemoryTransport};
use libp2p::core::upgrade::Version;
use libp2p::{Multiaddr, PeerId, Transport, identity, noise, yamux};
use tokio::sync::{broadcast, mpsc, oneshot};

use shoal_swim::Address;

use crate::config::ConfigError;
use crate::core;
use crate::lockstep::SignedNotice;
use crate::lockstep::protocol::Response;
use crate::record::SignedRecord;
use crate::store::StorageError;

pub(crate) mod checks;
mod event_loop;
mod traversal;

pub use crate::api::*;
pub use crate::core::{MAX_REFUSAL_PEERS, MAX_SNAPSHOT_PEERS, MAX_SNAPSHOT_SEEDS};
pub use checks::{NodeChecks, SharedVerifier};
pub use event_loop::{EventLoop, SystemClock, WallClock};

/// The transport a node runs on: authenticated and multiplexed.
pub type BoxedTransport = Boxed<(PeerId, StreamMuxerBox)>;

/// The in-process memory transport with noise and yamux, for tests and simulations.
pub fn memory_transport(keypair: &identity::Keypair) -> BoxedTransport {
    secured(MemoryTransport::default(), keypair)
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
    secured(tcp(), keypair)
}

fn tcp() -> libp2p::tcp::tokio::Transport {
    libp2p::tcp::tokio::Transport::new(libp2p::tcp::Config::default().nodelay(true))
}

/// `base` with noise and yamux.
fn secured<T>(base: T, keypair: &identity::Keypair) -> BoxedTransport
where
    T: Transport + Send + Unpin + 'static,
    T::Output: futures::AsyncRead + futures::AsyncWrite + Send + Unpin + 'static,
    T::Dial: Send + 'static,
    T::ListenerUpgrade: Send + 'static,
    T::Error: Send + Sync + 'static,
{
    base.upgrade(Version::V1)
        // Invariant: noise accepts every ed25519 keypair.
        .authenticate(noise::Config::new(keypair).expect("noise accepts ed25519 keys"))
        .multiplex(yamux::Config::default())
        .timeout(CONNECT_TIMEOUT)
        .boxed()
}

/// Bound of a connection's establishment: the dial, noise and yamux. A NAT's firewall drops a
/// connection nobody inside asked for rather than refusing it, and the kernel would wait for
/// minutes before it gave up (AutoNAT's dial-back to a private node, a hole punch that missed).
/// Below AutoNAT's 10 s bound on a test request, so that a dial-back that cannot connect is
/// reported as a failed test instead of a lost request.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(8);

/// A node's transport and, when it also dials and listens through circuit relays, the relay
/// client that drives them: the two halves `libp2p::relay::client::new` makes, which only work
/// together. [`EventLoop::new`] takes either a bare [`BoxedTransport`] or one of these.
pub struct NodeTransport {
    /// The transport.
    pub transport: BoxedTransport,
    /// The relay client, if the transport goes through relays too.
    pub relay_client: Option<libp2p::relay::client::Behaviour>,
}

impl From<BoxedTransport> for NodeTransport {
    fn from(transport: BoxedTransport) -> Self {
        Self {
            transport,
            relay_client: None,
        }
    }
}

impl std::fmt::Debug for NodeTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeTransport")
            .field("relayed", &self.relay_client.is_some())
            .finish_non_exhaustive()
    }
}

/// TCP and circuit relays (`/p2p-circuit` addresses), with noise and yamux: what a node with NAT
/// traversal ([`crate::nat::NatConfig::auto`]) runs on.
pub fn tcp_transport_with_relay(keypair: &identity::Keypair) -> NodeTransport {
    with_relay(tcp(), keypair)
}

/// The memory transport and circuit relays, with noise and yamux, for tests of relayed
/// connections in one process.
pub fn memory_transport_with_relay(keypair: &identity::Keypair) -> NodeTransport {
    with_relay(MemoryTransport::default(), keypair)
}

/// Circuit relays or `base`, with noise and yamux, and the relay client that drives them.
fn with_relay<T>(base: T, keypair: &identity::Keypair) -> NodeTransport
where
    T: Transport + Send + Unpin + 'static,
    T::Output: futures::AsyncRead + futures::AsyncWrite + Send + Unpin + 'static,
    T::Dial: Send + 'static,
    T::ListenerUpgrade: Send + 'static,
    T::Error: Send + Sync + 'static,
{
    let (relayed, relay_client) = libp2p::relay::client::new(keypair.public().to_peer_id());
    NodeTransport {
        transport: secured(relayed.or_transport(base), keypair),
        relay_client: Some(relay_client),
    }
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

/// How long [`Client::shutdown`] waits for SWIM's graceful leave to be gossiped before it closes
/// the node anyway.
pub const SHUTDOWN_LEAVE_BOUND: Duration = Duration::from_secs(2);

/// Peers [`Client::connected_peers`] lists at most.
pub const MAX_LISTED_PEERS: usize = 4096;

/// Where the answer to a core command goes.
enum ReplyTo {
    Join(oneshot::Sender<JoinResult>),
    Put(oneshot::Sender<PutResult>),
    Get(oneshot::Sender<GetResult>),
    FindNode(oneshot::Sender<LookupResult>),
    Announce(oneshot::Sender<AnnounceResult>),
    Notices(oneshot::Sender<NoticesResult>),
    AnnouncedTo(oneshot::Sender<Option<Response>>),
    Feed(oneshot::Sender<Vec<SignedNotice>>),
}

enum Command {
    Listen(Multiaddr, oneshot::Sender<ListenResult>),
    /// A command of the core, and where its answer goes.
    Core(core::Command<PeerId>, ReplyTo),
    MemberList(oneshot::Sender<Vec<MemberInfo>>),
    Shutdown(oneshot::Sender<()>),
    Members(oneshot::Sender<Vec<PeerId>>),
    Peers(oneshot::Sender<Vec<PeerId>>),
    Standings(oneshot::Sender<Vec<(PeerId, u32, bool)>>),
    Connected(oneshot::Sender<Vec<crate::api::PeerInfo>>),
    Stored(Vec<u8>, oneshot::Sender<Option<SignedRecord>>),
    Routing(oneshot::Sender<(usize, Vec<BucketInfo>)>),
    Records(RecordQuery, oneshot::Sender<RecordPage>),
    Stats(oneshot::Sender<NodeStats>),
    FailWrites(u32, oneshot::Sender<bool>),
}

/// What [`Client::records`] lists.
#[derive(Debug)]
struct RecordQuery {
    prefix: Vec<u8>,
    after: Option<Vec<u8>>,
    limit: usize,
}

/// Records a page of [`Client::records`] holds at most.
pub const MAX_RECORD_PAGE: usize = 1_000;

/// A handle on a running node; cheap to clone.
#[derive(Debug, Clone)]
pub struct Client {
    local: PeerId,
    tx: mpsc::Sender<Command>,
    notices: broadcast::Sender<SignedNotice>,
    members: broadcast::Sender<MemberChange>,
}

impl Client {
    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Option<T> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(make(reply)).await.ok()?;
        rx.await.ok()
    }

    /// Runs `command` in the core; `to` says which kind of answer to wait for.
    async fn run<T>(
        &self,
        command: core::Command<PeerId>,
        to: impl FnOnce(oneshot::Sender<T>) -> ReplyTo,
    ) -> Option<T> {
        self.ask(|reply| Command::Core(command, to(reply))).await
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
    /// those verified; the members SWIM learns fill the routing table. The peers of the
    /// routing-table snapshot saved in the data directory (at most [`MAX_SNAPSHOT_SEEDS`]) are
    /// seeds too, so a restarted node whose seeds are down gets in through the members it knew.
    pub async fn join(&self, seeds: Vec<(PeerId, Multiaddr)>) -> JoinResult {
        let seeds = seeds
            .into_iter()
            .map(|(peer, addr)| (peer, vec![Address(addr.to_vec())]))
            .collect();
        self.run(core::Command::Join(seeds), ReplyTo::Join)
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
            route: Route::Auto,
        })
        .await
    }

    /// Puts with every option: the record is stored locally and durably first, then replicated.
    pub async fn put_request(&self, request: PutRequest) -> PutResult {
        self.run(core::Command::Put(request), ReplyTo::Put)
            .await
            .unwrap_or(Err(PutError::Stopped))
    }

    /// Looks `key` up; every copy is validated and the highest valid sequence wins.
    pub async fn get(&self, key: Vec<u8>) -> GetResult {
        self.get_via(key, Route::Auto).await
    }

    /// Looks `key` up by `route` (see [`Route`]).
    pub async fn get_via(&self, key: Vec<u8>, route: Route) -> GetResult {
        self.get_with(key, route, false).await
    }

    /// Looks `key` up by `route`; with `prove`, every holder found is asked for a receipt
    /// ([`crate::receipt`]) and the get answers once it heard them all.
    pub async fn get_with(&self, key: Vec<u8>, route: Route, prove: bool) -> GetResult {
        let command = core::Command::Get { key, route, prove };
        self.run(command, ReplyTo::Get)
            .await
            .unwrap_or(Err(GetError::Stopped))
    }

    /// The peers closest to `peer` in the DHT.
    pub async fn find_node(&self, peer: PeerId) -> FindNodeResult {
        self.find_node_with_stats(peer, Route::Auto)
            .await
            .map(|ok| ok.peers)
    }

    /// The peers closest to `peer` in the DHT, with what the lookup cost, found by `route`
    /// (one hop from the local view costs nothing; see [`Route`]).
    pub async fn find_node_with_stats(&self, peer: PeerId, route: Route) -> LookupResult {
        self.run(core::Command::FindNode { peer, route }, ReplyTo::FindNode)
            .await
            .unwrap_or(Err(FindNodeError::Stopped))
    }

    /// The lockstep notices for `key`: those this node keeps plus those kept by the peers closest
    /// to the key (a lookup, then one lockstep request to each of up to
    /// [`Config::replication_factor`](crate::Config::replication_factor) of them). Each is
    /// checked (signature, and a stamp that paid for it when it was made); the latest per
    /// publisher is kept, newest first. Peers that do not answer are skipped.
    pub async fn notices(&self, key: Vec<u8>) -> NoticesResult {
        self.run(core::Command::Notices(key), ReplyTo::Notices)
            .await
            .unwrap_or(Err(NoticesError::Stopped))
    }

    /// Announces `value` for `key` to the peers closest to the key (lockstep). `seq` defaults as
    /// for puts; put with the returned `seq` to match the notice.
    pub async fn announce(&self, key: Vec<u8>, value: Vec<u8>, seq: Option<u64>) -> AnnounceResult {
        let command = core::Command::Announce { key, value, seq };
        self.run(command, ReplyTo::Announce)
            .await
            .unwrap_or(Err(AnnounceError::Stopped))
    }

    /// The notices of each named feed after the position given (feed ids as
    /// [`FeedPos::feed_id`](crate::lockstep::FeedPos::feed_id) makes them), that this node's
    /// broadcast delivered and still holds, in feed order: what a subscriber that saw those
    /// positions missed. At most [`MAX_FEED_REPLY`](crate::core::MAX_FEED_REPLY); empty if the
    /// node stopped.
    pub async fn feed_after(&self, after: Vec<(Vec<u8>, u64)>) -> Vec<SignedNotice> {
        self.run(core::Command::Feed { after }, ReplyTo::Feed)
            .await
            .unwrap_or_default()
    }

    /// Live SWIM members (alive or suspect), ourselves excluded; empty if the node stopped.
    pub async fn members(&self) -> Vec<PeerId> {
        self.ask(Command::Members).await.unwrap_or_default()
    }

    /// Every member SWIM knows (any state, ourselves excluded); empty if the node stopped.
    pub async fn member_list(&self) -> Vec<MemberInfo> {
        self.ask(Command::MemberList).await.unwrap_or_default()
    }

    /// Peers in the routing table; empty if the node stopped.
    pub async fn peers(&self) -> Vec<PeerId> {
        self.ask(Command::Peers).await.unwrap_or_default()
    }

    /// The connected peers (at most [`MAX_LISTED_PEERS`]): whether each is routed, the bytes
    /// of messages it sent and was sent per protocol since it connected, and its standing.
    pub async fn connected_peers(&self) -> Vec<crate::api::PeerInfo> {
        self.ask(Command::Connected).await.unwrap_or_default()
    }

    /// Every peer whose misbehaviour cost it standing, or that is banned: its standing (of
    /// [`crate::core::FULL_STANDING`]) and whether it is banned.
    pub async fn standings(&self) -> Vec<(PeerId, u32, bool)> {
        self.ask(Command::Standings).await.unwrap_or_default()
    }

    /// The record this node stores under `key`, if any.
    pub async fn stored(&self, key: Vec<u8>) -> Option<SignedRecord> {
        self.ask(|r| Command::Stored(key, r)).await.flatten()
    }

    /// The routing table: its bucket size k and its non-empty buckets, nearest first; `None`
    /// if the node stopped.
    pub async fn routing_table(&self) -> Option<(usize, Vec<BucketInfo>)> {
        self.ask(Command::Routing).await
    }

    /// A page of the records this node holds: at most `limit` (at most [`MAX_RECORD_PAGE`])
    /// whose keys start with `prefix` and sort after `after`, in key order, without their
    /// values. Empty if the node stopped.
    pub async fn records(
        &self,
        prefix: Vec<u8>,
        after: Option<Vec<u8>>,
        limit: usize,
    ) -> RecordPage {
        let query = RecordQuery {
            prefix,
            after,
            limit: limit.min(MAX_RECORD_PAGE),
        };
        self.ask(|r| Command::Records(query, r))
            .await
            .unwrap_or_default()
    }

    /// Changes SWIM makes to members from now on (a subscriber that falls behind by more than
    /// the notice buffer loses the oldest and is told how many it lost).
    pub fn member_changes(&self) -> broadcast::Receiver<MemberChange> {
        self.members.subscribe()
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
        let command = core::Command::DangerousPutTo {
            key,
            envelope,
            peers,
        };
        self.run(command, ReplyTo::Put)
            .await
            .unwrap_or(Err(PutError::Stopped))
    }

    /// Sends `envelope` as a lockstep announcement straight to `peer`, unchecked. Dangerous: for
    /// tests of what peers do with bad or replayed notices. Returns the peer's answer, or `None`
    /// if it did not answer (or the node stopped).
    pub async fn dangerous_announce_to(&self, peer: PeerId, envelope: Vec<u8>) -> Option<Response> {
        let command = core::Command::DangerousAnnounceTo { peer, envelope };
        self.run(command, ReplyTo::AnnouncedTo).await.flatten()
    }

    /// Makes the node's next `n` disk commits fail, as a failing disk would. Dangerous: for tests
    /// that a failed write is refused, never acknowledged. Returns whether the node has a disk
    /// (`false` also if it stopped).
    pub async fn dangerous_fail_writes(&self, n: u32) -> bool {
        self.ask(|reply| Command::FailWrites(n, reply))
            .await
            .unwrap_or(false)
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
