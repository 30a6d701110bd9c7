//! The DHT's rules as a sans-IO state machine: admission, the routing table, record acceptance,
//! puts and their replicas, gets and read repair, lockstep notices, lookups, and the SWIM
//! membership they stand on.
//!
//! # Driving a [`Core`]
//!
//! The core performs no I/O, reads no clock and spawns nothing; the caller (the node's event
//! loop, or the simulator) owns time, the network and the disk:
//!
//! 1. Build it with [`Core::new`], handing in what the disk held ([`Restored`]).
//! 2. Feed it input, each call with the monotonic `now` and the Unix time `unix` read once for
//!    the whole turn:
//!    - [`Core::handle_command`] for a client's command; it returns the [`OpId`] that the
//!      [`Action::Reply`] answering it will carry;
//!    - [`Core::handle_request`] for a peer's request, with an [`InboundId`] of the caller's
//!      choosing, answered by exactly one [`Action::Respond`] with that id;
//!    - [`Core::handle_response`] for the answer (or failure) of a request the core sent;
//!    - [`Core::handle_swim`] for a SWIM message;
//!    - [`Core::handle_gate`] when a connection's identity exchange ended;
//!    - [`Core::handle_verified`] when a proof check asked for with [`Action::Verify`] ended;
//!    - [`Core::handle_dial_failed`] and [`Core::handle_disconnected`] for connection news;
//!    - [`Core::handle_committed`] once a write the core asked for is durable (or failed);
//!    - [`Core::handle_timeout`] whenever [`Core::poll_timeout`] has passed;
//!    - [`Core::set_local_addrs`] when the node's own addresses change.
//! 3. After every input, drain [`Core::poll_action`] and read [`Core::poll_timeout`] again.
//!
//! `poll_action` and `poll_timeout` change only after an input. Time passed in must not go
//! backwards. A write the core asks for ([`Action::Write`]) must be reported with
//! [`Core::handle_committed`]; whatever waits for it (a put's reply, a replica's `Stored`, a
//! notice's `Accepted`) is sent only then, and a failed write is refused, never acknowledged.
//!
//! # Rules, and where they live
//!
//! - `admission.rs`: who enters the membership and the routing table, and when. A peer is
//!   admitted once its identity proof was checked (by the gate on a connection, or relayed by
//!   the admitted member whose gossip named it), and only admitted peers serve the DHT. SWIM
//!   also lists a member whose relayed proof is in hand and queued for its check (off the
//!   protocol loop, one at a time, most needed first); news about any other peer is cut, and
//!   news that would make one live (by [`shoal_swim::Membership::effect`], the very comparison
//!   SWIM applies) is replayed once its proof is in hand. Requests, and SWIM messages from a
//!   peer with no proof in hand, wait in one hold queue.
//! - `members.rs`: the SWIM membership inside the core, joins and leaves.
//! - `routing.rs`: the k-buckets, filled with admitted members SWIM holds alive.
//! - `records.rs`: the record store, the one acceptance rule, puts, replicas, gets, read repair,
//!   expiry and republishing.
//! - `notices.rs`: lockstep notices at the nodes closest to their keys.
//! - `feeds.rs`: lockstep notices network-wide, through the broadcast core, to subscribers.
//! - `view.rs`: routing, when the local view names the closest peers (one hop) and when
//!   Kademlia's iterative lookup runs instead.
//! - `lookup.rs`: closest-peer lookups, iterative and one-hop.
//! - `ops.rs`: the one table of work in flight and the timers.

mod admission;
mod churn;
mod departed;
mod feeds;
mod limits;
pub mod lookup;
mod members;
mod notices;
mod ops;
mod receipts;
mod records;
pub mod routing;
mod standing;
mod view;

#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use libp2p::PeerId;
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde_bytes::ByteBuf;
use shoal_pow::{NodeKey, ProofError, PublicKey, StampChecker};
use shoal_swim::{Address, Membership, State};

use self::admission::Admission;
pub use self::churn::MAX_CHURN_PEERS;
pub use self::departed::{DEPARTED_RETENTION, MAX_DEPARTED};
pub use self::feeds::{MAX_FEED_REPLY, NoticeCheck};
use self::limits::Verdict;
pub use self::limits::{MAX_RATE_BUCKETS, MAX_SLOWED, MAX_SLOWED_PER_PEER};
pub use self::lookup::KeyHash;
pub use self::members::Known;
use self::ops::{Ops, Timer, Timers};
pub use self::receipts::MAX_RECEIPTS;
pub use self::records::{AcceptError, Records, StoreError};
use self::routing::RoutingTable;
pub use self::standing::{FULL_STANDING, MAX_BANS, MAX_STANDINGS, Misbehaviour};
pub use self::view::Unsettled;
use crate::api::{
    AnnounceResult, GetResult, JoinResult, LookupResult, NoticesResult, PutRequest, PutResult,
    Route,
};
use crate::config::{Config, ConfigError};
use crate::lockstep::{NoticeBook, SignedNotice};
use crate::record::SignedRecord;
use crate::wire::{Request, Response};

/// What the core needs of a peer identity: a SWIM identity that is cheap to copy, with a byte
/// form for the wire and a point in Kademlia's key space.
pub trait Peer: shoal_swim::Identity + Copy + Send + Sync + 'static {
    /// The bytes that name the peer on the wire (a libp2p peer id's own encoding).
    fn to_bytes(&self) -> Vec<u8>;
    /// The peer named by `bytes`, if they name one.
    fn from_bytes(bytes: &[u8]) -> Option<Self>;
    /// Its point in the key space: the SHA-256 of its bytes, as libp2p-kad hashes peer ids.
    fn point(&self) -> KeyHash {
        KeyHash::of(&self.to_bytes())
    }
}

impl Peer for PeerId {
    fn to_bytes(&self) -> Vec<u8> {
        PeerId::to_bytes(*self)
    }

    fn from_bytes(bytes: &[u8]) -> Option<Self> {
        PeerId::from_bytes(bytes).ok()
    }
}

/// What the core consults about identities and addresses: the proof check (cached and
/// rate-limited by the implementation) and which addresses this node's transport can reach.
pub trait Checks<T> {
    /// A checked identity proof, as the core keeps and relays it.
    type Proof: Clone + std::fmt::Debug + Send;

    /// Checks the proof `bytes` presented for `peer` at `now`. This may cost an expensive
    /// evaluation (scrypt): the core calls it only in [`Core::bootstrap`]. Relayed proofs go
    /// through [`Checks::precheck`] and, when that cannot decide, to the runtime as
    /// [`Action::Verify`], which calls this off the protocol loop.
    fn verify(&mut self, now: Instant, peer: &T, bytes: &[u8]) -> Result<Self::Proof, ProofError>;

    /// What can be told of `peer`'s proof `bytes` without the expensive evaluation: `Some` when
    /// it is known valid, `None` when it needs one, an error when it is refused on sight
    /// (malformed, not `peer`'s key, or refused before).
    fn precheck(&mut self, peer: &T, bytes: &[u8]) -> Result<Option<Self::Proof>, ProofError>;

    /// The bytes of `peer`'s checked proof, to relay it.
    fn proof_bytes(&self, peer: &T, proof: &Self::Proof) -> Vec<u8>;

    /// Whether a member announcing `theirs` can be reached by a node listening on `ours` (a
    /// TCP-only node cannot reach an onion-only member, nor a Tor-only node an IP one). A node
    /// not listening yet reaches everything.
    fn reachable(&self, ours: &[Address], theirs: &[Address]) -> bool;

    /// Whether `key` is `peer`'s signing key: a receipt counts only when the peer that answered
    /// with it signed it.
    fn signed_by(&self, peer: &T, key: &PublicKey) -> bool;
}

/// Identifies a command, or an operation the core started on its own; the [`Action::Reply`]
/// answering a command carries its id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OpId(pub u64);

/// Identifies a request the core sends; [`Core::handle_response`] takes it back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(pub u64);

/// Identifies a write the core asks for; [`Core::handle_committed`] takes it back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WriteId(pub u64);

/// Identifies a peer's request, chosen by the caller; the [`Action::Respond`] answering it carries
/// it back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InboundId(pub u64);

/// A client's command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command<T> {
    /// Join through these seeds (each dialed unless admitted already) and the peers of the
    /// restored routing snapshot.
    Join(Vec<(T, Vec<Address>)>),
    /// Leave the membership gracefully.
    Leave,
    /// Put a record.
    Put(PutRequest),
    /// Get the record of a key.
    Get {
        /// The key.
        key: Vec<u8>,
        /// How the peers holding it are found.
        route: Route,
        /// Whether to ask every holder found for a receipt ([`crate::receipt`]): the get then
        /// answers only once it heard them all, never from this node's copy alone.
        prove: bool,
    },
    /// Find the peers closest to a peer: at once from the local view when it is settled, by
    /// an iterative lookup otherwise or when `route` asks for one.
    FindNode {
        /// The peer.
        peer: T,
        /// How the peers are found.
        route: Route,
    },
    /// Announce a value's hash for a key (lockstep).
    Announce {
        /// The key.
        key: Vec<u8>,
        /// The value to come.
        value: Vec<u8>,
        /// Its sequence number; `None` takes the default rule.
        seq: Option<u64>,
    },
    /// Collect the notices for a key.
    Notices(Vec<u8>),
    /// The notices of each named feed (a feed id, [`crate::lockstep::FeedPos::feed_id`]) after
    /// the position given, that this node's broadcast delivered and still holds: what a
    /// subscriber that saw those positions missed. At most [`MAX_FEED_REPLY`].
    Feed {
        /// Feed ids and the last position seen of each.
        after: Vec<(Vec<u8>, u64)>,
    },
    /// Send an envelope, unchecked and not stored, straight to these peers as a replica put.
    DangerousPutTo {
        /// The key the envelope claims.
        key: Vec<u8>,
        /// The envelope.
        envelope: Vec<u8>,
        /// Where to send it.
        peers: Vec<T>,
    },
    /// Send an envelope, unchecked, straight to a peer as a lockstep announcement.
    DangerousAnnounceTo {
        /// Where to send it.
        peer: T,
        /// The envelope.
        envelope: Vec<u8>,
    },
}

impl<T> Command<T> {
    /// A get of `key` by [`Route::Auto`].
    pub fn get(key: Vec<u8>) -> Self {
        Self::Get {
            key,
            route: Route::Auto,
            prove: false,
        }
    }

    /// A find-node of `peer` by [`Route::Auto`].
    pub fn find_node(peer: T) -> Self {
        Self::FindNode {
            peer,
            route: Route::Auto,
        }
    }
}

/// The answer to a command.
#[derive(Debug)]
pub enum Reply<T> {
    /// To [`Command::Join`].
    Join(JoinResult),
    /// To [`Command::Leave`]: the departure was gossiped (or the leave timeout passed).
    Left,
    /// To [`Command::Put`] and [`Command::DangerousPutTo`].
    Put(PutResult),
    /// To [`Command::Get`] (boxed: a record is large).
    Get(Box<GetResult>),
    /// To [`Command::FindNode`].
    FindNode(LookupResult<T>),
    /// To [`Command::Announce`].
    Announce(AnnounceResult),
    /// To [`Command::Notices`].
    Notices(NoticesResult),
    /// To [`Command::Feed`]: in feed order per feed.
    Feed(Vec<SignedNotice>),
    /// To [`Command::DangerousAnnounceTo`]: the peer's answer, if it answered.
    AnnouncedTo(Option<Response>),
}

/// Why a request the core sent got no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestFailure {
    /// No answer within the core's deadline or the transport's.
    #[error("timed out")]
    Timeout,
    /// The peer could not be reached, or the connection or stream failed.
    #[error("unreachable: {0}")]
    Unreachable(String),
}

/// A durable write: applied in order, all of one [`Action::Write`] in one commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteOp<T> {
    /// Keep a record envelope under its key.
    PutRecord {
        /// The record key.
        key: Vec<u8>,
        /// The envelope.
        envelope: Vec<u8>,
    },
    /// Delete the record of a key.
    RemoveRecord(Vec<u8>),
    /// Keep a notice envelope for its key and publisher.
    PutNotice {
        /// The notice key.
        key: Vec<u8>,
        /// The publisher's public key.
        publisher: [u8; 32],
        /// The envelope.
        envelope: Vec<u8>,
    },
    /// Delete the notice of a key and publisher.
    RemoveNotice {
        /// The notice key.
        key: Vec<u8>,
        /// The publisher's public key.
        publisher: [u8; 32],
    },
    /// Replace the routing snapshot: verified live members and their addresses.
    Snapshot(Vec<(T, Vec<Address>)>),
    /// The node's clocks that must not go backwards across restarts.
    Meta(Meta),
}

/// What must survive a restart even if the wall clock steps back: the SWIM incarnation last
/// used, the highest sequence number used for a record or a notice, and where this node's feed
/// of broadcast notices stands. Every field only moves forward on disk.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Meta {
    /// The SWIM incarnation last used.
    pub incarnation: u64,
    /// The highest sequence number this node used.
    pub seq_floor: u64,
    /// The epoch of this node's feed ([`crate::lockstep::FeedPos`]), 0 before its first notice.
    pub feed_epoch: u64,
    /// The last position used in that feed, 0 before its first notice.
    pub feed_seq: u64,
}

/// What a node's disk held when it started.
#[derive(Debug, Clone)]
pub struct Restored<T> {
    /// Record envelopes with the key each was kept under.
    pub records: Vec<(Vec<u8>, Vec<u8>)>,
    /// Notice envelopes.
    pub notices: Vec<Vec<u8>>,
    /// The routing snapshot: members to dial on start and to join through (besides any seeds).
    pub snapshot: Vec<(T, Vec<Address>)>,
    /// The clocks last written, if any.
    pub meta: Option<Meta>,
}

impl<T> Default for Restored<T> {
    fn default() -> Self {
        Self {
            records: Vec::new(),
            notices: Vec::new(),
            snapshot: Vec::new(),
            meta: None,
        }
    }
}

/// When a write may be reported done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Once it is on disk (and every earlier write with it).
    Flushed,
    /// Once it is applied, before the disk flush: for copies of a record beyond a put's
    /// quorum, whose loss in a crash the next republish repairs. A later flushed write makes it
    /// durable; the core asks for one within [`Config::copy_flush_delay`].
    Deferred,
}

/// What the caller must do.
#[derive(Debug)]
pub enum Action<T> {
    /// Send `request` to `to` (dialing `addrs` if no connection is open); report the outcome with
    /// [`Core::handle_response`] and `id`.
    Send {
        /// The peer.
        to: T,
        /// Its known addresses.
        addrs: Arc<[Address]>,
        /// The request's id.
        id: RequestId,
        /// The request.
        request: Request,
    },
    /// Send `request` to `to` (dialing `addrs` if no connection is open) without waiting for an
    /// answer: nothing is reported, and the peer's answer, if it makes one, is dropped.
    Tell {
        /// The peer.
        to: T,
        /// Its known addresses.
        addrs: Arc<[Address]>,
        /// The request.
        request: Request,
    },
    /// Answer the peer's request `id` with `response`.
    Respond {
        /// The request answered.
        id: InboundId,
        /// The answer.
        response: Response,
    },
    /// Send a SWIM message to `to` (dialing `addrs` if needed); no answer is expected.
    Swim {
        /// The peer.
        to: T,
        /// Its known addresses.
        addrs: Arc<[Address]>,
        /// The message.
        msg: shoal_swim::Message<T>,
    },
    /// Open a connection to `peer` so the gate checks it; report a failure with
    /// [`Core::handle_dial_failed`].
    Dial {
        /// The peer.
        peer: T,
        /// Its addresses.
        addrs: Vec<Address>,
    },
    /// A seed has not settled in time: dial it once more beside the attempt of an earlier
    /// [`Action::Dial`] still under way (its SYN may be lost), or, when connected (the identity
    /// exchange is late: a segment of it may sit in TCP's backed-off retransmissions), as
    /// [`Action::Reconnect`]. Nothing to do when not connected and that earlier attempt already
    /// ended (its outcome was reported); report a failure only once every attempt failed.
    Redial {
        /// The peer.
        peer: T,
        /// Its addresses.
        addrs: Vec<Address>,
    },
    /// Replace the connections to `peer`, which look stalled (a SWIM join through it got no
    /// answer in time): open a fresh one at `addrs` and close the others once it is up, so the
    /// next attempt does not queue behind a segment TCP keeps retransmitting with backoff.
    /// Nothing to do when not connected.
    Reconnect {
        /// The peer.
        peer: T,
        /// Its addresses.
        addrs: Vec<Address>,
    },
    /// Close every connection to `peer`: SWIM declared it failed or gone. A connection that
    /// carried nothing through a suspicion may be stalled (behind a partition, TCP's
    /// retransmissions back off to tens of seconds, and messages queued on it after the heal
    /// wait for them); the next message to `peer` dials afresh.
    Disconnect {
        /// The peer.
        peer: T,
    },
    /// Check `peer`'s identity proof `proof` with [`Checks::verify`] (an expensive evaluation:
    /// run it off the protocol loop), then report the outcome with [`Core::handle_verified`].
    /// At most two are outstanding, one of each kind.
    Verify {
        /// The member the proof is for.
        peer: T,
        /// The proof's bytes.
        proof: Vec<u8>,
        /// Whether something waits on it (run it at the node's own priority); otherwise it
        /// may yield to everything else the machine does.
        needed: bool,
    },
    /// Apply these writes in one commit, then call [`Core::handle_committed`] with `id`.
    Write {
        /// The write's id.
        id: WriteId,
        /// What to write, in order (may be empty: a flush of earlier deferred writes).
        ops: Vec<WriteOp<T>>,
        /// Whether the commit must be on disk before it is reported (this one and every
        /// earlier commit), or may be reported first.
        durability: Durability,
    },
    /// Answer a command.
    Reply {
        /// The command answered.
        op: OpId,
        /// The answer.
        reply: Reply<T>,
    },
    /// A notice the broadcast delivered (once, in its feed's order), for this node's
    /// subscribers (boxed: a notice is large).
    Notice(Box<SignedNotice>),
    /// SWIM changed what it holds of `member`, for this node's watchers (the dashboard): it
    /// joined or refuted a suspicion (`Alive`), is suspected, failed or left.
    MemberChanged {
        /// The member.
        member: T,
        /// Its new state.
        state: shoal_swim::State,
        /// Its incarnation at the change.
        incarnation: u64,
    },
    /// Send a broadcast message to `to` (dialing `addrs` if needed); no answer is expected.
    Broadcast {
        /// The peer.
        to: T,
        /// Its known addresses.
        addrs: Arc<[Address]>,
        /// The message.
        msg: shoal_broadcast::Message,
    },
    /// `peer` became (`keep`) or stopped being a broadcast neighbor: keep the connection to it
    /// open while it is one, however idle.
    Keep {
        /// The peer.
        peer: T,
        /// Whether to keep its connection.
        keep: bool,
    },
}

/// Counters of the core's life, for metrics and tests.
#[derive(Debug, Clone)]
pub struct CoreStats<T> {
    /// Inbound puts refused, per sending peer (bounded, see [`MAX_REFUSAL_PEERS`]).
    pub refused_puts: HashMap<T, u64>,
    /// Inbound puts refused in all.
    pub refused_puts_total: u64,
    /// Inbound puts stored (durably, when the node persists).
    pub stored_puts: u64,
    /// Peers admitted on a proof checked by the gate or relayed, since start.
    pub verified: usize,
    /// Peers the gate refused since start.
    pub refused_peers: usize,
    /// Members admitted through a relayed proof since start (also counted in `verified`).
    pub verified_by_relay: usize,
    /// Relayed proofs refused since start.
    pub refused_relayed: usize,
    /// Members dialed because no relayer held their proof.
    pub relay_fallback_dials: usize,
    /// Members listed in the membership on a relayed proof whose check was still to run.
    pub listed_unchecked: usize,
    /// Members whose proof came attached to news of them, so that nobody had to be asked for it.
    pub proofs_with_news: usize,
    /// Checks handed to the runtime ([`Action::Verify`]).
    pub checks_run: usize,
    /// Of those, the ones something waited on (run at the node's own priority).
    pub checks_needed: usize,
    /// Members probed ahead of their turn because their last connection closed.
    pub probes_on_disconnect: u64,
    /// Relayers no longer asked for proofs since a proof they relayed failed its check.
    pub relayers_distrusted: usize,
    /// Members readmitted on the proof kept when they departed.
    pub readmitted_departed: usize,
    /// Proof-relay requests sent.
    pub relay_requests: usize,
    /// Proof-relay requests that failed.
    pub relay_request_failures: usize,
    /// Requests sent by lookups (find node, puts, lockstep).
    pub lookup_requests: u64,
    /// Requests sent by gets.
    pub get_requests: u64,
    /// Requests sent by background work (republishing records, read repair).
    pub background_requests: u64,
    /// Record gets served.
    pub gets_served: u64,
    /// Lookup requests served.
    pub lookups_served: u64,
    /// Lookups, gets and other queries started.
    pub queries: u64,
    /// SWIM messages held or dropped because their sender was not admitted.
    pub swim_unadmitted: u64,
    /// SWIM updates cut because they named a member not admitted.
    pub updates_cut: u64,
    /// SWIM messages passed to the membership.
    pub swim_received: u64,
    /// Writes that failed (their waiters were refused, nothing was acknowledged).
    pub failed_writes: u64,
    /// Records dropped because they expired.
    pub expired_records: u64,
    /// Records sent to their closest peers by republishing.
    pub republished: u64,
    /// Operations (gets, puts, announcements, notice reads, find-node) that found their peers in
    /// one hop from the local view.
    pub one_hop: u64,
    /// Operations that found their peers by Kademlia's iterative lookup (asked for, or the view
    /// was unsettled).
    pub iterative: u64,
    /// Broadcast messages dropped because their sender was not admitted.
    pub broadcast_unadmitted: u64,
    /// Peers refused admission by the trust policy (each time one showed a valid proof or was
    /// named in gossip).
    pub denied_peers: u64,
    /// Requests and SWIM messages from peers the trust policy refuses, dropped or refused.
    pub denied_messages: u64,
    /// Requests refused by the trust policy's per-peer, per-method rate limit.
    pub rate_limited: u64,
    /// Requests over their sender's rate held and served later, at the rate.
    pub slowed: u64,
    /// Requests and told messages refused or dropped by the trust policy's per-peer bandwidth.
    pub bandwidth_limited: u64,
    /// Notices of feeds skipped because they did not arrive in time (see
    /// [`shoal_broadcast::Event::Gap`]).
    pub feed_gaps: u64,
}

impl<T> Default for CoreStats<T> {
    fn default() -> Self {
        Self {
            refused_puts: HashMap::new(),
            refused_puts_total: 0,
            stored_puts: 0,
            verified: 0,
            refused_peers: 0,
            verified_by_relay: 0,
            refused_relayed: 0,
            relay_fallback_dials: 0,
            listed_unchecked: 0,
            proofs_with_news: 0,
            checks_run: 0,
            checks_needed: 0,
            probes_on_disconnect: 0,
            relayers_distrusted: 0,
            readmitted_departed: 0,
            relay_requests: 0,
            relay_request_failures: 0,
            lookup_requests: 0,
            get_requests: 0,
            background_requests: 0,
            gets_served: 0,
            lookups_served: 0,
            queries: 0,
            swim_unadmitted: 0,
            updates_cut: 0,
            swim_received: 0,
            failed_writes: 0,
            expired_records: 0,
            republished: 0,
            one_hop: 0,
            iterative: 0,
            broadcast_unadmitted: 0,
            denied_peers: 0,
            denied_messages: 0,
            rate_limited: 0,
            slowed: 0,
            bandwidth_limited: 0,
            feed_gaps: 0,
        }
    }
}

/// Peers whose put refusals [`CoreStats::refused_puts`] keeps; when a new peer's refusal finds
/// the map full, the peer with the fewest refusals makes room.
pub const MAX_REFUSAL_PEERS: usize = 1024;

impl<T: Peer> CoreStats<T> {
    /// Counts a refused put from `peer`, keeping the map bounded.
    pub(crate) fn count_refused_put(&mut self, peer: T) {
        self.refused_puts_total += 1;
        if !self.refused_puts.contains_key(&peer) && self.refused_puts.len() >= MAX_REFUSAL_PEERS {
            // Ties broken by peer, not by the hash map's order.
            let fewest = self
                .refused_puts
                .iter()
                .min_by_key(|(p, n)| (**n, **p))
                .map(|(p, _)| *p);
            if let Some(fewest) = fewest {
                self.refused_puts.remove(&fewest);
            }
        }
        *self.refused_puts.entry(peer).or_default() += 1;
    }
}

/// Lengths of the core's collections, to check that its state stays bounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sizes {
    /// Operations in flight.
    pub ops: usize,
    /// Requests and writes awaited.
    pub pending: usize,
    /// Actions not drained yet.
    pub actions: usize,
    /// Peers with held messages.
    pub held_peers: usize,
    /// Messages held in all.
    pub held: usize,
    /// Members whose proof is awaited.
    pub wanted: usize,
    /// Members cut from gossip and remembered until admitted.
    pub reported: usize,
    /// Departed members' proofs kept.
    pub departed: usize,
    /// Peers admitted.
    pub verified: usize,
    /// Routing-table entries and replacements.
    pub routing: usize,
    /// Records held.
    pub records: usize,
    /// Notices held.
    pub notices: usize,
    /// Rate-limit buckets (peer and method, and peer for bytes). Bound: twice
    /// [`MAX_RATE_BUCKETS`].
    pub rate_buckets: usize,
    /// Requests slowed. Bound: [`MAX_SLOWED`].
    pub slowed: usize,
    /// Standings remembered. Bound: [`MAX_STANDINGS`].
    pub standings: usize,
    /// Bans in force. Bound: [`MAX_BANS`].
    pub bans: usize,
    /// Peers whose departures are remembered or that are held out. Bound: twice
    /// [`MAX_CHURN_PEERS`].
    pub churn: usize,
    /// Receipts remembered. Bound: [`MAX_RECEIPTS`].
    pub receipts: usize,
}

/// Most peers written to the routing-table snapshot.
pub const MAX_SNAPSHOT_PEERS: usize = 256;

/// Most snapshot peers dialed on start and used as seeds by every join.
pub const MAX_SNAPSHOT_SEEDS: usize = 32;

/// Held messages per peer, at most.
pub const MAX_HELD_PER_PEER: usize = 16;
/// Peers with held messages, at most.
pub const MAX_HELD_PEERS: usize = 256;
/// Members whose proofs are awaited, at most; news of more is dropped (gossip names them again).
pub const MAX_WANTED: usize = 8192;
/// Members cut from gossip and remembered until admitted, at most.
pub const MAX_REPORTED: usize = 8192;
/// Gets answered early whose search for a higher sequence goes on in the background, at most.
pub const MAX_BACKGROUND_GETS: usize = 16;
/// SWIM join attempts before a join is reported failed.
pub const JOIN_ATTEMPTS: u32 = 3;
/// Dial attempts of one seed a join keeps in flight at once, at most (see
/// [`Config::seed_redial`](crate::Config::seed_redial)): with 10 % loss each way a TCP
/// handshake fails about one time in five, so four fail together about one time in 600.
pub const SEED_DIALS: u32 = 4;
/// Most seeds whose addresses the core keeps for SWIM's messages to them.
pub const MAX_SEEDS: usize = 64;
/// How far past a sequence number the persisted floor is raised, so that the puts and notices
/// that follow find it ahead of them and need no write of their own: default sequence numbers
/// follow the wall clock in seconds, so this is about an hour of them; a restart skips at most
/// that many.
pub const SEQ_FLOOR_RESERVE: u64 = 3_600;

/// The DHT state machine of one node. See the module docs for the call order.
pub struct Core<T: Peer, C: Checks<T>> {
    config: Config,
    local: T,
    key: NodeKey,
    checks: C,
    persistent: bool,
    swim: Membership<T>,
    admission: Admission<T, C::Proof>,
    table: RoutingTable<T>,
    records: Records,
    book: NoticeBook,
    stamps: StampChecker,
    broadcast: shoal_broadcast::Broadcast<T, NoticeCheck>,
    /// The trust policy's lists ([`Config::trust`]), as peers.
    denied: HashSet<T>,
    allowed: Option<HashSet<T>>,
    /// Requests per peer and method.
    limits: limits::Buckets<(T, u8)>,
    /// Requests over their rate, waiting for their turn.
    slowed: limits::Slowed<T>,
    /// Bytes a peer sends ([`Core::admit_bytes`]).
    bytes: limits::Buckets<T>,
    /// Departures of peers lately, and the peers held out for departing too often.
    churn: churn::Churn<T>,
    /// What peers' provable misbehaviour cost them, and the bans it earned.
    standings: standing::Standings<T>,
    /// Receipts given for this node's puts, to catch a replica denying one.
    receipts: receipts::ReceiptBook<T>,
    ops: Ops<T>,
    timers: Timers,
    /// Copies kept ([`Request::PutCopy`]) whose write is not yet asked for: written together
    /// at [`Timer::CopyWrite`], or before any other write (so writes reach the disk in the
    /// order they were made).
    copies: records::PendingCopies<T>,
    actions: VecDeque<Action<T>>,
    stats: CoreStats<T>,
    /// The highest sequence number this node used or saw for each key it published.
    last_seq: HashMap<Vec<u8>, u64>,
    meta: Meta,
    /// Every default sequence number of this run is above this: the highest one used before
    /// the restart (so none goes backwards if the clock did, whatever key it was for).
    restart_seq_floor: u64,
    local_addrs: Vec<Address>,
    /// Addresses of join seeds that are not members yet, for SWIM's messages to them.
    seed_addrs: HashMap<T, Arc<[Address]>>,
    /// Peers of the restored routing snapshot: seeds of every join, besides the given ones.
    snapshot: Vec<(T, Vec<Address>)>,
    empty_addrs: Arc<[Address]>,
    /// Until when the local view counts as unsettled (see `view.rs`).
    unsettled_until: Instant,
    /// Draws the salts of the stamps this node mints: seeded from [`Config::rng_seed`] when
    /// set, so a simulated run is a function of its seed.
    rng: StdRng,
}

impl<T: Peer, C: Checks<T>> std::fmt::Debug for Core<T, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Core")
            .field("local", &self.local)
            .field("verified", &self.admission.verified_len())
            .field("routing", &self.table.len())
            .field("records", &self.records.len())
            .finish_non_exhaustive()
    }
}

/// How often the core's housekeeping tick runs (retries, expiries, bounds).
const TICK: Duration = Duration::from_secs(1);

/// How often expired records are dropped.
const EXPIRE_EVERY: Duration = Duration::from_secs(60);

impl<T: Peer, C: Checks<T>> Core<T, C> {
    /// The core of `local`, signing with `key`, under `config`, starting from what the disk
    /// held. `persistent` says whether writes reach a disk: without one, the core completes its
    /// own writes at once and never emits [`Action::Write`]. Emits a dial to every snapshot peer
    /// and, when persistent, a write of the clocks it starts from.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        now: Instant,
        unix: u64,
        local: T,
        key: NodeKey,
        checks: C,
        config: Config,
        persistent: bool,
        restored: Restored<T>,
    ) -> Result<Self, ConfigError> {
        config.validate()?;
        let meta = restored.meta.unwrap_or_default();
        // A restarted node starts above every incarnation it used, even if the clock stepped
        // back: others would otherwise take its news for stale and it would have to refute.
        let incarnation = unix.max(meta.incarnation.saturating_add(1));
        let mut swim_config = config.swim.clone();
        if let Some(mut seed) = config.rng_seed {
            // SWIM's generator is derived from the core's seed, so a run is one function of it.
            seed[0] ^= 0x5a;
            swim_config.rng_seed = Some(seed);
        }
        let swim = Membership::new(now, local, Vec::new(), incarnation, swim_config)?;
        let stamps = StampChecker::new(config.stamps.clone()).map_err(ConfigError::from)?;
        let mut broadcast_config = config.broadcast.clone();
        if let Some(mut seed) = config.rng_seed {
            seed[0] ^= 0xb7;
            broadcast_config.rng_seed = Some(seed);
        }
        let check = NoticeCheck {
            unix,
            stamps: StampChecker::new(config.stamps.clone()).map_err(ConfigError::from)?,
        };
        let broadcast = shoal_broadcast::Broadcast::new(now, local, broadcast_config, check)?;
        let rng = match config.rng_seed {
            Some(mut seed) => {
                seed[0] ^= 0x3c;
                StdRng::from_seed(seed)
            }
            None => StdRng::from_entropy(),
        };
        let peers = |list: &[Vec<u8>]| -> HashSet<T> {
            list.iter().filter_map(|b| T::from_bytes(b)).collect()
        };
        let denied = peers(&config.trust.deny);
        let allowed = (!config.trust.allow.is_empty()).then(|| peers(&config.trust.allow));
        let trust = &config.trust;
        let ban_after =
            (!trust.over_limit_ban_after.is_zero()).then_some(trust.over_limit_ban_after);
        let limits = limits::Buckets::new(
            trust.peer_requests_per_second.into(),
            trust.peer_request_burst.into(),
            ban_after,
        );
        let bytes = limits::Buckets::new(
            trust.peer_bytes_per_second,
            trust.peer_bytes_burst,
            ban_after,
        );
        let standings = standing::Standings::new(
            config.trust.standing_recovery_per_hour,
            config.trust.ban_period,
        );
        let mut core = Self {
            broadcast,
            denied,
            allowed,
            limits,
            slowed: limits::Slowed::default(),
            bytes,
            standings,
            churn: churn::Churn::new(config.trust.churn_max_departures, config.trust.churn_window),
            receipts: receipts::ReceiptBook::new(),
            table: RoutingTable::new(local.point(), config.kbucket_size.get()),
            records: Records::new(config.store.clone()),
            book: NoticeBook::new(config.notices.clone()),
            stamps,
            local,
            key,
            checks,
            persistent,
            swim,
            admission: Admission::default(),
            ops: Ops::default(),
            timers: Timers::default(),
            copies: records::PendingCopies::default(),
            actions: VecDeque::new(),
            stats: CoreStats::default(),
            last_seq: HashMap::new(),
            meta: Meta {
                incarnation,
                ..meta
            },
            restart_seq_floor: meta.seq_floor,
            local_addrs: Vec::new(),
            seed_addrs: HashMap::new(),
            snapshot: Vec::new(),
            empty_addrs: Arc::from(Vec::new()),
            unsettled_until: now,
            rng,
            config,
        };
        core.unsettle(now, view::Unsettled::Started);
        core.restore(now, unix, restored);
        core.timers.set(Timer::Tick, now + TICK);
        core.timers.set(Timer::Expire, now + EXPIRE_EVERY);
        core.timers
            .set(Timer::Snapshot, now + core.config.routing_snapshot_interval);
        core.timers
            .set(Timer::Republish, now + core.config.republish_interval);
        Ok(core)
    }

    /// Loads what the disk held: records still valid (the others are deleted), notices, the
    /// routing snapshot (dialed now), and writes the clocks this run starts from.
    fn restore(&mut self, now: Instant, unix: u64, restored: Restored<T>) {
        let mut ops = Vec::new();
        for bytes in restored.notices {
            if let Ok(notice) = SignedNotice::decode(&bytes) {
                // A full book drops its oldest; the disk keeps what it has until replaced.
                let _ = self.book.insert(notice);
            }
        }
        for (key, envelope) in restored.records {
            let candidate = records::Candidate::Wire {
                bytes: &envelope,
                key: Some(&key),
                known: None,
            };
            match self.accept(unix, candidate, true) {
                Ok(accepted) => {
                    let record = accepted.signed.record();
                    if record.publisher == self.key.public() {
                        self.note_seq(&key, record.seq);
                    }
                    self.records.put(accepted.signed);
                }
                Err(error) => {
                    tracing::info!(%error, "a record read back from disk is dropped");
                    ops.push(WriteOp::RemoveRecord(key));
                }
            }
        }
        for (peer, addrs) in restored.snapshot {
            if peer != self.local && !addrs.is_empty() && self.snapshot.len() < MAX_SNAPSHOT_SEEDS {
                self.push(Action::Dial {
                    peer,
                    addrs: addrs.clone(),
                });
                self.snapshot.push((peer, addrs));
            }
        }
        ops.push(WriteOp::Meta(self.meta));
        self.write(now, unix, ops, None);
    }

    // ----- accessors -----

    /// This node.
    pub fn local(&self) -> T {
        self.local
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The SWIM membership (every member, any state).
    pub fn membership(&self) -> &Membership<T> {
        &self.swim
    }

    /// Whether `peer` is admitted (its proof was checked, and it has not departed since).
    pub fn is_admitted(&self, peer: &T) -> bool {
        self.admission.is_verified(peer)
    }

    /// Whether the membership lists `peer` on a relayed proof whose check has not ended (SWIM
    /// probes it; the DHT does not use it yet).
    pub fn is_checking(&self, peer: &T) -> bool {
        self.admission.is_checking(peer)
    }

    /// Listed members whose identity checks have not ended.
    pub fn checks_pending(&self) -> usize {
        self.admission.checking_len()
    }

    /// Admitted members SWIM holds alive or suspect.
    pub fn live_members(&self) -> Vec<T> {
        self.verified_live().collect()
    }

    fn verified_live(&self) -> impl Iterator<Item = T> + '_ {
        self.swim
            .states()
            .filter(|(p, s, _)| {
                matches!(s, State::Alive | State::Suspect) && self.admission.is_verified(p)
            })
            .map(|(p, _, _)| *p)
    }

    /// The `k` admitted live members closest to `point`, this node and `except` left out: what
    /// this node answers a lookup with. SWIM gives it the whole membership, so an honest answer
    /// names the true closest (a k-bucket table would hold only `k` of a far bucket's
    /// members), which lets an asker tell an answer that hides them.
    fn closest_members(&self, point: &KeyHash, k: usize, except: Option<&T>) -> Vec<T> {
        let local = self.local;
        let members = self
            .verified_live()
            .filter(|p| *p != local && Some(p) != except);
        lookup::closest(point, members, k)
    }

    /// Judges `peer`'s answer `named` to a lookup of `point`: with this node's view settled
    /// (so it knows every live member), an answer that leaves out more than half of the `k`
    /// members this node knows closest (the answerer and this node left out, as the answerer
    /// leaves them out) hides them, as an eclipse does.
    fn judge_lookup_answer(&mut self, now: Instant, peer: T, point: &KeyHash, named: &[T]) {
        let k = self.config.replication_factor.get();
        if !self.view_settled(now) {
            return;
        }
        let ours = self.closest_members(point, k, Some(&peer));
        if ours.len() < k {
            // A network this small has nothing to hide behind.
            return;
        }
        let missing = ours.iter().filter(|m| !named.contains(m)).count();
        if missing * 2 > k {
            self.misbehaved(now, peer, Misbehaviour::EclipseAnswer);
        }
    }

    /// The routing table.
    pub fn routing_table(&self) -> &RoutingTable<T> {
        &self.table
    }

    /// The records held.
    pub fn records(&self) -> &Records {
        &self.records
    }

    /// The record held for `key`.
    pub fn stored(&self, key: &[u8]) -> Option<&SignedRecord> {
        self.records.get(key)
    }

    /// The notices held.
    pub fn notices(&self) -> &NoticeBook {
        &self.book
    }

    /// The counters.
    pub fn stats(&self) -> &CoreStats<T> {
        &self.stats
    }

    /// Departed members' proofs kept now.
    pub fn departed_proofs(&self) -> usize {
        self.admission.departed_len()
    }

    /// The clocks that survive restarts.
    pub fn meta(&self) -> Meta {
        self.meta
    }

    /// The sizes of the core's collections.
    pub fn sizes(&self) -> Sizes {
        let (held_peers, held) = self.admission.held_len();
        Sizes {
            ops: self.ops.len(),
            pending: self.ops.pending_len(),
            actions: self.actions.len(),
            held_peers,
            held,
            wanted: self.admission.wanted_len(),
            reported: self.admission.reported_len(),
            departed: self.admission.departed_len(),
            verified: self.admission.verified_len(),
            routing: self.table.held(),
            records: self.records.len(),
            notices: self.book.len(),
            rate_buckets: self.limits.len() + self.bytes.len(),
            slowed: self.slowed.len(),
            standings: self.standings.len(),
            bans: self.standings.bans(),
            churn: self.churn.len(),
            receipts: self.receipts.len(),
        }
    }

    /// The checks in use (for the simulator's gate, and tests).
    pub fn checks_mut(&mut self) -> &mut C {
        &mut self.checks
    }

    /// The verified live members with their addresses (at most `max`): the routing snapshot,
    /// nearest this node first.
    pub fn snapshot(&self, max: usize) -> Vec<(T, Vec<Address>)> {
        let live = self.swim.members().filter(|(p, m)| {
            matches!(m.state, State::Alive | State::Suspect) && self.admission.is_verified(p)
        });
        // Chosen and ordered by distance, not by the membership's hash order: a restart dials
        // them in this order.
        let live = live.map(|(p, m)| (p.point(), (*p, m.addrs)));
        lookup::closest_of(&self.local.point(), live, max)
            .into_iter()
            .map(|(p, addrs)| (p, addrs.to_vec()))
            .collect()
    }

    // ----- input -----

    /// Sets this node's own addresses (what SWIM announces, and what reachability is judged
    /// against).
    pub fn set_local_addrs(&mut self, addrs: Vec<Address>) {
        // Invariant of the caller: addresses fit SWIM's bounds; a refused list keeps the old one.
        let _ = self.swim.set_local_addrs(addrs.clone());
        self.local_addrs = addrs;
    }

    /// Starts a client's command; its [`Action::Reply`] carries the returned id.
    pub fn handle_command(&mut self, now: Instant, unix: u64, command: Command<T>) -> OpId {
        let op = self.ops.next_op();
        match command {
            Command::Join(seeds) => self.start_join(now, unix, op, seeds),
            Command::Leave => {
                let id = self.swim.leave(now);
                self.ops.insert(op, ops::Op::Leave(id));
                self.drain_swim(now, unix);
            }
            Command::Put(request) => self.start_put(now, unix, op, request),
            Command::Get { key, route, prove } => self.start_get(now, unix, op, key, route, prove),
            Command::FindNode { peer, route } => {
                let target = peer.to_bytes();
                self.start_lookup(now, unix, op, &target, route, ops::Then::FindNode);
            }
            Command::Announce { key, value, seq } => {
                self.start_announce(now, unix, op, key, value, seq);
            }
            Command::Notices(key) => self.start_notices(now, unix, op, key),
            Command::Feed { after } => {
                let notices = self.feed_after(&after);
                self.reply(op, Reply::Feed(notices));
            }
            Command::DangerousPutTo {
                key,
                envelope,
                peers,
            } => {
                let job = records::Replication::new(key, 0, peers.len().max(1), envelope, true);
                self.replicate(now, op, job, peers);
            }
            Command::DangerousAnnounceTo { peer, envelope } => {
                self.ops.insert(op, ops::Op::AnnounceTo);
                self.send(now, op, peer, Request::Announce(ByteBuf::from(envelope)));
            }
        }
        op
    }

    /// Handles a peer's request; exactly one [`Action::Respond`] with `id` answers it, now or
    /// later. Not metered against the peer's bandwidth: see
    /// [`handle_sized_request`](Self::handle_sized_request).
    pub fn handle_request(
        &mut self,
        now: Instant,
        unix: u64,
        from: T,
        id: InboundId,
        request: Request,
    ) {
        self.handle_sized_request(now, unix, from, id, request, 0);
    }

    /// [`handle_request`](Self::handle_request) for a request that took `bytes` on the wire,
    /// metered against its sender's bandwidth as well as its request rate.
    pub fn handle_sized_request(
        &mut self,
        now: Instant,
        unix: u64,
        from: T,
        id: InboundId,
        request: Request,
        bytes: usize,
    ) {
        if !self.permitted(&from) {
            self.stats.denied_messages += 1;
            return self.respond(id, Response::refused("denied by this node's trust policy"));
        }
        self.serve_request(now, unix, from, id, request, bytes as u64, true);
    }

    /// Whether a request of `from` that took `bytes` (still to be paid) fits its limits: its
    /// bandwidth first, then its rate of the request's method. When it does not, the verdict,
    /// what it waits for to fit, the time between its peer's turns, the bytes still owed, and
    /// the reason a refusal gives.
    fn over_limits(
        &mut self,
        now: Instant,
        from: T,
        method: u8,
        bytes: u64,
    ) -> Option<(Verdict, (Duration, Duration), u64, &'static str)> {
        if bytes > 0 {
            let verdict = self.bytes.take(now, from, bytes);
            if verdict != Verdict::Pass {
                let wait = self.bytes.wait_for(now, &from, bytes);
                return Some((
                    verdict,
                    (wait, Duration::ZERO),
                    bytes,
                    "over this node's bandwidth limit for the peer",
                ));
            }
        }
        let key = (from, method);
        match self.limits.take(now, key, 1) {
            Verdict::Pass => None,
            verdict => {
                let wait = (self.limits.wait(now, &key), self.limits.period());
                Some((verdict, wait, 0, "rate limited by this node's trust policy"))
            }
        }
    }

    /// [`handle_request`](Self::handle_request) past the trust lists: a request over its
    /// sender's bandwidth or rate is slowed if `may_slow` and there is room (served when due),
    /// else refused; staying over a limit bans.
    #[allow(clippy::too_many_arguments)]
    fn serve_request(
        &mut self,
        now: Instant,
        unix: u64,
        from: T,
        id: InboundId,
        request: Request,
        bytes: u64,
        may_slow: bool,
    ) {
        if let Some((verdict, wait, owed, why)) =
            self.over_limits(now, from, request.method(), bytes)
        {
            let (id, request) = if verdict == Verdict::Throttle && may_slow {
                match self.slowed.hold(now, wait, from, (id, request, owed)) {
                    Ok(()) => {
                        self.stats.slowed += 1;
                        if let Some(due) = self.slowed.next() {
                            self.timers.set(Timer::Slowed, due);
                        }
                        return;
                    }
                    Err(back) => back,
                }
            } else {
                (id, request)
            };
            if owed > 0 {
                self.stats.bandwidth_limited += 1;
            } else {
                self.stats.rate_limited += 1;
            }
            if request.is_put() {
                self.stats.count_refused_put(from);
            }
            self.respond(id, Response::refused(why));
            if verdict == Verdict::Ban {
                self.misbehaved(now, from, Misbehaviour::OverLimit);
            }
            return;
        }
        // A peer that showed its proof may ask for the proofs of the members it was told of
        // while its own check waits: a joiner asks its seed for all of them at once, and an
        // empty answer would send it dialing every one.
        let may_ask = matches!(request, Request::Proofs(_)) && self.admission.is_checking(&from);
        if !(self.admit_sender(now, unix, &from) || may_ask) {
            self.hold_request(now, from, id, request);
            return;
        }
        self.serve(now, unix, from, id, request);
    }

    /// Answers an admitted peer's request.
    fn serve(&mut self, now: Instant, unix: u64, from: T, id: InboundId, request: Request) {
        if !request.is_bounded() {
            if request.is_put() {
                self.stats.count_refused_put(from);
            }
            return self.respond(id, Response::refused("request over its bounds"));
        }
        match request {
            Request::FindNode(target) => {
                self.stats.lookups_served += 1;
                let k = self.config.replication_factor.get();
                let closest = self.closest_members(&KeyHash::of(&target), k, Some(&from));
                self.respond(id, Response::Peers(peer_bytes(&closest)));
            }
            Request::GetRecord(key) => self.serve_get(unix, from, id, &key, false),
            Request::Prove(key) => self.serve_get(unix, from, id, &key, true),
            Request::PutRecord(envelope) => {
                self.serve_put(now, unix, from, id, &envelope, Durability::Flushed)
            }
            Request::PutCopy(envelope) => {
                self.serve_put(now, unix, from, id, &envelope, Durability::Deferred)
            }
            Request::Announce(envelope) => self.serve_announce(now, unix, id, &envelope),
            Request::Notices(key) => {
                let notices = self
                    .book
                    .for_key(&key)
                    .into_iter()
                    .take(crate::wire::MAX_NOTICES)
                    .map(|n| ByteBuf::from(n.as_bytes().to_vec()))
                    .collect();
                self.respond(id, Response::Notices(notices));
            }
            Request::Proofs(peers) => {
                let response = self.answer_proofs(now, &peers);
                self.respond(id, response);
            }
        }
    }

    /// Handles the answer to request `id` (or its failure).
    pub fn handle_response(
        &mut self,
        now: Instant,
        unix: u64,
        id: RequestId,
        result: Result<Response, RequestFailure>,
    ) {
        let Some((op, peer)) = self.ops.take_request(id) else {
            // Already timed out by the core: the late answer changes nothing.
            return;
        };
        self.on_answer(now, unix, op, peer, result);
    }

    /// Dispatches the outcome of a request to the operation that sent it.
    fn on_answer(
        &mut self,
        now: Instant,
        unix: u64,
        op: OpId,
        peer: T,
        result: Result<Response, RequestFailure>,
    ) {
        match self.ops.kind(op) {
            Some(ops::Kind::Lookup) => self.on_lookup_answer(now, unix, op, peer, result),
            Some(ops::Kind::Replicate) => self.on_replica_answer(now, op, peer, result),
            Some(ops::Kind::Announce) => self.on_announce_answer(op, result),
            Some(ops::Kind::Notices) => self.on_notices_answer(unix, op, result),
            Some(ops::Kind::Proofs) => self.on_proofs_answer(now, unix, op, peer, result),
            Some(ops::Kind::AnnounceTo) => {
                self.ops.remove(op);
                self.reply(op, Reply::AnnouncedTo(result.ok()));
            }
            Some(ops::Kind::Other) | None => {}
        }
    }

    /// Handles a SWIM message `from` a peer.
    pub fn handle_swim(&mut self, now: Instant, unix: u64, from: T, msg: shoal_swim::Message<T>) {
        if !self.permitted(&from) {
            self.stats.denied_messages += 1;
            return;
        }
        // A member listed before its check ended takes part in SWIM (not in the DHT) meanwhile.
        if !self.admit_sender(now, unix, &from) && !self.admission.is_checking(&from) {
            self.hold_swim(now, from, msg);
            return;
        }
        self.pass_to_swim(now, unix, from, msg);
    }

    /// Handles a proof `peer` showed on a connection that the gate could not decide without an
    /// evaluation ([`Checks::precheck`] could not): the peer takes part in SWIM at once and is
    /// checked in its turn ([`Action::Verify`]); the runtime disconnects it if the check fails.
    pub fn handle_presented(&mut self, now: Instant, unix: u64, peer: T, proof: &[u8]) {
        tracing::debug!(?peer, "identity proof presented");
        self.on_presented(now, unix, peer, proof);
        self.on_seed_settled(now, unix, &peer);
    }

    /// Handles the end of a connection's identity exchange with `peer`: its checked proof, or
    /// why it was refused (a rate-limited check is not a refusal, and is not reported here).
    pub fn handle_gate(
        &mut self,
        now: Instant,
        unix: u64,
        peer: T,
        result: Result<C::Proof, ProofError>,
    ) {
        match result {
            Ok(proof) => {
                self.admit(now, unix, peer, proof);
                self.on_seed_settled(now, unix, &peer);
            }
            Err(error) => {
                self.refuse_checked(now, peer, None, &error);
                self.on_seed_settled(now, unix, &peer);
            }
        }
    }

    /// Handles the outcome of the check an [`Action::Verify`] asked for.
    pub fn handle_verified(
        &mut self,
        now: Instant,
        unix: u64,
        peer: T,
        result: Result<C::Proof, ProofError>,
    ) {
        self.on_checked(now, unix, peer, result);
    }

    /// A dial to `peer` failed and no connection to it is open: SWIM's probes of it and pings
    /// relayed to it stop waiting for an ack that cannot come
    /// ([`shoal_swim::Membership::unreachable`]).
    pub fn handle_dial_failed(&mut self, now: Instant, unix: u64, peer: T) {
        self.on_dial_failed(&peer);
        if self.swim.unreachable(now, &peer) {
            self.drain_swim(now, unix);
        }
        self.on_seed_settled(now, unix, &peer);
    }

    /// The last connection to `peer` closed: what it sent while unverified is dropped, and a
    /// live member is checked at once, beside the round robin
    /// ([`shoal_swim::Membership::probe_soon`]): the connections of a process that crashed all
    /// close at once, so every member connected to it probes it together, and its suspicion
    /// has its confirmations from the start.
    pub fn handle_disconnected(&mut self, now: Instant, unix: u64, peer: T) {
        if !self.admission.is_listed(&peer) {
            self.drop_held(&peer);
        }
        self.feeds_link_down(now, &peer);
        if self.is_live(&peer) && self.swim.probe_soon(now, &peer) {
            self.stats.probes_on_disconnect += 1;
            self.drain_swim(now, unix);
        }
    }

    /// Handles the outcome of write `id`.
    pub fn handle_committed(
        &mut self,
        now: Instant,
        unix: u64,
        id: WriteId,
        result: Result<(), String>,
    ) {
        if let Err(error) = &result {
            tracing::warn!(%error, "write failed");
            self.stats.failed_writes += 1;
        }
        if let Some(op) = self.ops.take_write(id) {
            self.on_committed(now, unix, op, result);
        }
    }

    /// Handles every deadline up to `now`.
    pub fn handle_timeout(&mut self, now: Instant, unix: u64) {
        if self.swim.poll_timeout().is_some_and(|t| t <= now) {
            self.swim.handle_timeout(now);
            self.drain_swim(now, unix);
        }
        self.broadcast_timeout(now, unix);
        for (id, op, peer) in self.ops.expired_requests(now) {
            let _ = id;
            self.on_answer(now, unix, op, peer, Err(RequestFailure::Timeout));
        }
        for op in self.ops.expired_ops(now) {
            self.on_op_deadline(now, unix, op);
        }
        while let Some(timer) = self.timers.expired(now) {
            match timer {
                Timer::Tick => {
                    self.timers.set(Timer::Tick, now + TICK);
                    self.admission_tick(now);
                    self.standings.lift(now);
                    self.churn.lift(now);
                    self.ops.shrink();
                }
                Timer::RelayFlush => self.flush_relay_requests(now),
                Timer::Snapshot => {
                    let every = self.config.routing_snapshot_interval;
                    self.timers.set(Timer::Snapshot, now + every);
                    self.save_snapshot(now, unix);
                }
                Timer::Expire => {
                    self.timers.set(Timer::Expire, now + EXPIRE_EVERY);
                    self.expire_records(now, unix);
                    self.receipts.expire(unix);
                }
                Timer::CopyWrite => self.write_copies(now, unix),
                Timer::Slowed => {
                    for (from, (id, request, owed)) in self.slowed.due(now) {
                        // Still refused if its sender was banned or denied since.
                        if self.permitted(&from) {
                            self.serve_request(now, unix, from, id, request, owed, false);
                        } else {
                            self.respond(
                                id,
                                Response::refused("denied by this node's trust policy"),
                            );
                        }
                    }
                    if let Some(due) = self.slowed.next() {
                        self.timers.set(Timer::Slowed, due);
                    }
                }
                Timer::CopyFlush => {
                    // An empty flushed commit makes the deferred ones before it durable.
                    let id = self.ops.add_write(None);
                    self.push(Action::Write {
                        id,
                        ops: Vec::new(),
                        durability: Durability::Flushed,
                    });
                }
                Timer::Republish => {
                    let every = self.config.republish_interval;
                    self.timers.set(Timer::Republish, now + every);
                    self.republish(now, unix);
                }
            }
        }
    }

    // ----- output -----

    /// The next thing to do. Changes only after an input.
    pub fn poll_action(&mut self) -> Option<Action<T>> {
        self.actions.pop_front()
    }

    /// When [`Core::handle_timeout`] must next be called. Changes only after an input.
    pub fn poll_timeout(&self) -> Option<Instant> {
        [
            self.swim.poll_timeout(),
            self.broadcast.poll_timeout(),
            self.timers.next(),
            self.ops.next_deadline(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    // ----- shared helpers -----

    fn push(&mut self, action: Action<T>) {
        self.actions.push_back(action);
    }

    fn respond(&mut self, id: InboundId, response: Response) {
        self.push(Action::Respond { id, response });
    }

    fn reply(&mut self, op: OpId, reply: Reply<T>) {
        self.push(Action::Reply { op, reply });
    }

    /// The addresses known for `peer`: SWIM's, else a seed's.
    fn addrs_of(&self, peer: &T) -> Arc<[Address]> {
        match self.swim.member(peer) {
            Some(m) if !m.addrs.is_empty() => m.addrs,
            _ => self
                .seed_addrs
                .get(peer)
                .cloned()
                .or_else(|| self.admission.wanted_addrs(peer))
                .unwrap_or_else(|| self.empty_addrs.clone()),
        }
    }

    /// Sends `request` to `peer` for `op`, failing after [`Config::request_timeout`].
    fn send(&mut self, now: Instant, op: OpId, peer: T, request: Request) {
        let timeout = self.config.request_timeout;
        self.send_within(now, op, peer, request, timeout);
    }

    /// Asks for `ops` to be made durable for `op` (`None`: nothing waits). Without a disk the
    /// write completes at once.
    fn write(&mut self, now: Instant, unix: u64, ops: Vec<WriteOp<T>>, op: Option<OpId>) {
        self.write_with(now, unix, ops, op, Durability::Flushed);
    }

    /// [`Self::write`], reported before the disk flush when `durability` is
    /// [`Durability::Deferred`]; a flush then follows within [`Config::copy_flush_delay`],
    /// unless a flushed write comes first (a flushed commit makes every earlier one durable).
    fn write_with(
        &mut self,
        now: Instant,
        unix: u64,
        ops: Vec<WriteOp<T>>,
        op: Option<OpId>,
        durability: Durability,
    ) {
        if ops.is_empty() && op.is_none() {
            return;
        }
        if !self.persistent {
            if let Some(op) = op {
                self.on_committed(now, unix, op, Ok(()));
            }
            return;
        }
        self.write_copies(now, unix);
        match durability {
            Durability::Flushed => self.timers.clear(Timer::CopyFlush),
            Durability::Deferred if !self.timers.is_set(Timer::CopyFlush) => {
                let at = now + self.config.copy_flush_delay;
                self.timers.set(Timer::CopyFlush, at);
            }
            Durability::Deferred => {}
        }
        let id = self.ops.add_write(op);
        self.push(Action::Write {
            id,
            ops,
            durability,
        });
    }

    /// Dispatches a write's outcome to the operation waiting for it.
    fn on_committed(&mut self, now: Instant, unix: u64, op: OpId, result: Result<(), String>) {
        match self.ops.remove(op) {
            Some(ops::Op::Committing(waiting)) => {
                self.on_write_done(now, unix, op, *waiting, result);
            }
            Some(other) => {
                // Not waiting for a write: put it back untouched.
                self.ops.insert(op, other);
            }
            None => {}
        }
    }

    /// Notes that `seq` was used or seen for one of this node's keys.
    fn note_seq(&mut self, key: &[u8], seq: u64) {
        let seen = self.last_seq.entry(key.to_vec()).or_default();
        *seen = (*seen).max(seq);
    }

    /// The default sequence number for a new value of `key`: above the last used or seen for
    /// it, at least the wall clock, and above every sequence number used before the restart.
    fn next_seq(&self, key: &[u8], unix: u64) -> u64 {
        let held = self
            .records
            .get(key)
            .filter(|s| s.record().publisher == self.key.public())
            .map(|s| s.record().seq);
        let seen = self.last_seq.get(key).copied().max(held);
        let floor = self.restart_seq_floor.saturating_add(1);
        seen.map_or(0, |s| s.saturating_add(1)).max(unix).max(floor)
    }

    /// The write that raises the persisted sequence floor past `seq`, if it is behind. The floor
    /// is raised [`SEQ_FLOOR_RESERVE`] beyond `seq`, so that the puts and notices that follow
    /// find it ahead of them and need no write of their own.
    fn advance_seq_floor(&mut self, seq: u64) -> Option<WriteOp<T>> {
        (seq > self.meta.seq_floor).then(|| {
            self.meta.seq_floor = seq.saturating_add(SEQ_FLOOR_RESERVE);
            WriteOp::Meta(self.meta)
        })
    }

    /// Saves the routing snapshot (verified live members with their addresses).
    fn save_snapshot(&mut self, now: Instant, unix: u64) {
        if !self.persistent {
            return;
        }
        let peers = self.snapshot(MAX_SNAPSHOT_PEERS);
        // Nothing is written while no member is known, so a node restarting alone keeps the
        // snapshot it had.
        if !peers.is_empty() {
            self.write(now, unix, vec![WriteOp::Snapshot(peers)], None);
        }
    }
}

/// Peers as wire bytes.
fn peer_bytes<T: Peer>(peers: &[T]) -> Vec<ByteBuf> {
    peers.iter().map(|p| ByteBuf::from(p.to_bytes())).collect()
}

/// The readable peers of a wire list, at most `max`, each once.
fn peers_from<T: Peer>(list: &[ByteBuf], max: usize) -> Vec<T> {
    let mut out: Vec<T> = Vec::new();
    for bytes in list.iter().take(max) {
        if let Some(p) = T::from_bytes(bytes)
            && !out.contains(&p)
        {
            out.push(p);
        }
    }
    out
}

/// Shrinks a map holding a quarter of its capacity or less (amortised): a burst (a joining
/// node wants a proof for every member) must not keep its peak allocation.
pub(crate) fn shrink_sparse<K: Eq + std::hash::Hash, V>(map: &mut HashMap<K, V>) {
    if map.capacity() > 64 && map.len() * 4 <= map.capacity() {
        map.shrink_to_fit();
    }
}
