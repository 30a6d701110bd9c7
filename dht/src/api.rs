//! The node's operations as a client sees them: what a put, a get, a lookup, an announcement
//! and a join take and give back, their errors (each says whether anything changed, and carries
//! what a retry needs), and the node's counters. The core ([`crate::core`]) produces them; the
//! [`Client`](crate::Client) hands them out.

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::time::Duration;

use libp2p::{Multiaddr, PeerId};
use shoal_swim::{CommandError, State};

use crate::lockstep::{Announced, LockstepError, SignedNotice};
use crate::receipt::Receipt;
use crate::record::{Record, RecordError, SignedRecord};
use crate::store::StoreError;

/// What [`Client::join`](crate::Client::join) achieved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinOk {
    /// Seeds that passed the identity gate.
    pub verified_seeds: usize,
    /// Live members known when SWIM's join finished.
    pub members: usize,
}

/// Result of [`Client::join`](crate::Client::join).
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

/// How an operation may find the peers closest to its key (see [`crate::core`], "Routing").
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Route {
    /// One hop from the local view of the membership when that view is settled, Kademlia's
    /// iterative lookup otherwise.
    #[default]
    Auto,
    /// Kademlia's iterative lookup, whatever the local view says (for debugging, and wherever
    /// the local view is not to be trusted blindly).
    Iterative,
}

/// How an operation did find the peers closest to its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Path {
    /// From the local view: the closest members asked directly.
    OneHop,
    /// Kademlia's iterative lookup.
    Iterative,
}

impl Path {
    /// Its name in metrics and JSON-RPC answers.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::OneHop => "one-hop",
            Self::Iterative => "iterative",
        }
    }
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
    /// How the replicas are found. Default [`Route::Auto`].
    pub route: Route,
}

/// A successful put.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PutOk {
    /// The key.
    pub key: Vec<u8>,
    /// The sequence number used.
    pub seq: u64,
    /// How the replicas were found.
    pub path: Path,
    /// The receipts of the replicas that kept it, each checked: for this record, signed by the
    /// replica that answered ([`crate::receipt`]). At least `quorum` of them.
    pub receipts: Vec<Receipt>,
}

/// Result of [`Client::put`](crate::Client::put).
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
    /// replica acknowledges only once it validated and kept the record); republishing goes on
    /// offering it. Retrying with the same `seq` is safe.
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

/// Requests sent by this node, by what sent them (see [`NodeStats::rpcs`]), counted as sent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rpcs {
    /// Sent by closest-peer lookups (find node, puts, lockstep): `FindNode` requests.
    pub lookups: u64,
    /// Sent by record gets: `GetRecord` requests.
    pub gets: u64,
    /// Sent by background work: republishing records to their closest peers.
    pub background: u64,
}

/// A record found by [`Client::get`](crate::Client::get).
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
    /// How the copies were found.
    pub path: Path,
    /// Requests sent to peers (none when this node answered from its own copy).
    pub requests: u32,
    /// Asked with proof ([`crate::core::Command::Get`]'s `prove`): the receipts of the holders
    /// of the winning record, signed as they answered, each checked.
    pub receipts: Vec<Receipt>,
}

/// Result of [`Client::get`](crate::Client::get).
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

/// Result of [`Client::find_node`](crate::Client::find_node): the closest peers to the target found, closest first.
pub type FindNodeResult = Result<Vec<PeerId>, FindNodeError>;

/// Why a lookup failed. Nothing changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FindNodeError<T = PeerId> {
    /// The lookup timed out; the peers found so far.
    #[error("lookup timed out with {} peers found", found.len())]
    Timeout {
        /// Peers found before the timeout.
        found: Vec<T>,
    },
    /// The event loop has stopped.
    #[error("the node has stopped")]
    Stopped,
}

/// The counters of one lookup ([`crate::core::lookup`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LookupStats {
    /// Requests sent (`FindNode`, Kademlia's `FIND_NODE`).
    pub requests: u32,
    /// Requests answered.
    pub successes: u32,
    /// Requests that failed or timed out.
    pub failures: u32,
    /// Time from the first request to the last answer, if any request was sent.
    pub duration: Option<Duration>,
}

/// A lookup with its cost, from [`Client::find_node_with_stats`](crate::Client::find_node_with_stats).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LookupOk<T = PeerId> {
    /// The closest peers to the target found, closest first (at most the replication factor).
    pub peers: Vec<T>,
    /// What the lookup cost.
    pub stats: LookupStats,
    /// How the peers were found: [`Path::OneHop`] answers from the local view, sending nothing.
    pub path: Path,
}

/// Result of [`Client::find_node_with_stats`](crate::Client::find_node_with_stats).
pub type LookupResult<T = PeerId> = Result<LookupOk<T>, FindNodeError<T>>;

/// Result of [`Client::notices`](crate::Client::notices): valid notices for the key, the latest per publisher, newest
/// first; empty when none is known.
pub type NoticesResult = Result<Vec<SignedNotice>, NoticesError>;

/// Why [`Client::notices`](crate::Client::notices) failed. Nothing changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoticesError {
    /// The event loop has stopped.
    #[error("the node has stopped")]
    Stopped,
}

/// What [`Client::announce`](crate::Client::announce) achieved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnnounceOk {
    /// The sequence number announced (put with this `seq` to match).
    pub seq: u64,
    /// Peers that kept the notice.
    pub accepted: usize,
    /// Peers that refused it or did not answer.
    pub refused: usize,
}

/// Result of [`Client::announce`](crate::Client::announce).
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
    /// This node's own copy of the notice could not be written; nothing was sent and the
    /// notice is not kept.
    #[error("storage: {0}")]
    Storage(String),
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

/// One member of the SWIM table, from [`Client::member_list`](crate::Client::member_list).
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
    /// Whether this node checked its identity proof (false: listed on a relayed proof whose
    /// check is queued; SWIM probes it, the DHT does not use it yet).
    pub verified: bool,
}

/// Bytes of messages per protocol ([`NodeStats::traffic`], [`PeerInfo::traffic`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Traffic {
    /// `/shoal/<network>/dht/…`.
    pub dht: crate::link::Traffic,
    /// `/shoal/swim/…`.
    pub swim: crate::link::Traffic,
    /// `/shoal/<network>/broadcast/…`.
    pub broadcast: crate::link::Traffic,
}

impl Traffic {
    /// The bytes of every protocol together.
    pub fn total(&self) -> crate::link::Traffic {
        let all = [self.dht, self.swim, self.broadcast];
        crate::link::Traffic {
            bytes_in: all.iter().map(|t| t.bytes_in).sum(),
            bytes_out: all.iter().map(|t| t.bytes_out).sum(),
        }
    }
}

/// A change SWIM made to a member, as [`Client::member_changes`](crate::Client::member_changes)
/// reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemberChange {
    /// The member.
    pub peer: PeerId,
    /// Its new state.
    pub state: State,
    /// Its incarnation at the change.
    pub incarnation: u64,
    /// When this node saw the change, in Unix seconds.
    pub at: u64,
}

/// One bucket of the routing table, as [`Client::routing_table`](crate::Client::routing_table)
/// lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketInfo {
    /// Its index: it holds the peers whose XOR distance `d` from this node has
    /// `2^index <= d < 2^(index + 1)`.
    pub index: u8,
    /// The peers holding its slots (at most k).
    pub peers: Vec<PeerId>,
}

/// What [`Client::records`](crate::Client::records) lists of one record held: everything but
/// its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordSummary {
    /// Its key.
    pub key: Vec<u8>,
    /// Its publisher.
    pub publisher: PeerId,
    /// Its sequence number.
    pub seq: u64,
    /// Bytes of its value.
    pub size: usize,
    /// When it was created, in Unix seconds.
    pub created_at: u64,
    /// When it expires, in Unix seconds.
    pub expires_at: u64,
}

/// A page of the records held ([`Client::records`](crate::Client::records)).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecordPage {
    /// Records held in all.
    pub total: usize,
    /// The page: records in key order, after the cursor given.
    pub records: Vec<RecordSummary>,
    /// Whether records follow the page's last.
    pub more: bool,
}

/// A connected peer, as [`Client::connected_peers`](crate::Client::connected_peers) lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerInfo {
    /// The peer.
    pub peer: PeerId,
    /// Whether it is in the routing table.
    pub routed: bool,
    /// Bytes of messages it sent and was sent since it connected, per protocol.
    pub traffic: Traffic,
    /// Its standing here, of [`crate::core::FULL_STANDING`].
    pub standing: u32,
    /// Whether one of its connections is direct; `false` if all go through a circuit relay.
    pub direct: bool,
    /// Hole punches with it that failed since the last direct connection to it.
    pub hole_punch_failures: u32,
}

/// NAT traversal's state (see [`crate::nat`]), in [`NodeStats::nat`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NatReport {
    /// Whether NAT traversal runs ([`crate::nat::NatConfig::auto`] with a relay transport).
    pub enabled: bool,
    /// What the node knows of its reachability.
    pub reachability: crate::nat::Reachability,
    /// The relays holding an accepted reservation for this node.
    pub relays: Vec<PeerId>,
    /// AutoNAT tests that confirmed an address, since start.
    pub probes_confirmed: u64,
    /// AutoNAT tests that found an address unreachable, since start.
    pub probes_failed: u64,
    /// Reservations asked for, since start.
    pub reservations_asked: u64,
    /// Reservations accepted, since start (renewals not counted).
    pub reservations_accepted: u64,
    /// Reservations refused, timed out or lost with their relay, since start.
    pub reservations_lost: u64,
    /// Relayed connections upgraded to direct ones by hole punching (DCUtR), since start.
    pub holes_punched: u64,
    /// Hole punches that failed, since start.
    pub hole_punch_failures: u64,
    /// Hole punches retried through a new relayed connection after one failed, since start.
    pub hole_punch_retries: u64,
    /// The address a UPnP gateway maps to this node's listen port, while it does.
    pub upnp_mapped: Option<Multiaddr>,
}

/// Broadcast messages on the wire (see [`NodeStats::broadcast_wire`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BroadcastWire {
    /// Messages sent.
    pub sent: u64,
    /// Received messages or frames that did not decode (dropped).
    pub malformed: u64,
    /// Received messages from peers not admitted (dropped).
    pub unadmitted: u64,
    /// Notices of feeds skipped because they did not arrive in time.
    pub gaps: u64,
}

/// Counters and gauges of the node, from [`Client::stats`](crate::Client::stats).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeStats {
    /// Inbound puts refused (invalid record, lockstep, store), per sending peer. At most
    /// [`MAX_REFUSAL_PEERS`](crate::core::MAX_REFUSAL_PEERS) peers are kept: when a new peer's refusal finds the map full, the
    /// peer with the fewest refusals makes room (its count still shows in
    /// [`refused_puts_total`](Self::refused_puts_total)).
    pub refused_puts: HashMap<PeerId, u64>,
    /// Inbound puts refused in all.
    pub refused_puts_total: u64,
    /// Inbound puts stored.
    pub stored_puts: u64,
    /// DHT requests from peers that did not decode (each answered with a refusal).
    pub malformed_requests: u64,
    /// Peers the gate verified (and SWIM admitted) since start.
    pub verified: usize,
    /// Peers the gate refused since start.
    pub refused_peers: usize,
    /// Members verified through a proof relayed by the member that named them, since start;
    /// counted in [`verified`](Self::verified) too.
    pub verified_by_relay: usize,
    /// Relayed identity proofs refused since start.
    pub refused_relayed: usize,
    /// Members dialed because the member that named them relayed no proof for them.
    pub relay_fallback_dials: usize,
    /// Members listed on a relayed proof before its check ended, since start.
    pub listed_unchecked: usize,
    /// Members whose proof came attached to news of them (nobody was asked for it), since start.
    pub proofs_with_news: usize,
    /// Listed members whose identity checks have not ended, now.
    pub checks_pending: usize,
    /// Identity checks run since start, and those of them something waited on.
    pub checks_run: usize,
    /// See [`checks_run`](Self::checks_run).
    pub checks_needed: usize,
    /// Relayers no longer asked for proofs because one they relayed failed its check.
    pub relayers_distrusted: usize,
    /// Members readmitted since start on the proof kept when SWIM declared them failed or
    /// gone (they refuted, or came back), without asking anyone for it.
    pub readmitted_departed: usize,
    /// Proofs of departed members kept now (bounded, expiring).
    pub departed_proofs: usize,
    /// Outbound connection attempts since start (any behaviour's).
    pub dials: usize,
    /// Of [`dials`](Self::dials), second and later attempts at a seed whose first was late
    /// ([`crate::Config::seed_redial`]).
    pub redials: u64,
    /// Connections to a seed replaced because its identity exchange or a SWIM join through it
    /// got no answer in time (see
    /// [`crate::core::Action::Reconnect`]).
    pub reconnects: u64,
    /// Proof-relay requests sent since start.
    pub relay_requests: usize,
    /// Proof-relay requests that failed (timed out, lost their connection) since start; their
    /// members are asked again later, and dialed after a few failures.
    pub relay_request_failures: usize,
    /// Proof-relay requests sent to a relayer with no open connection (each dials it).
    pub relay_requests_unconnected: usize,
    /// Requests sent since start, by what sent them.
    pub rpcs: Rpcs,
    /// Record gets served since start.
    pub gets_served: u64,
    /// Lookup requests (`FindNode`) served since start.
    pub lookups_served: u64,
    /// SWIM messages held or dropped because the sender was not admitted.
    pub swim_unadmitted: u64,
    /// SWIM updates cut because they named a member not admitted.
    pub swim_updates_cut: u64,
    /// Writes that failed since start (nothing waiting for them was acknowledged).
    pub failed_writes: u64,
    /// Group commits made since start, and the writes they carried.
    pub commits: u64,
    /// Writes committed since start.
    pub writes: u64,
    /// Members of the SWIM table by state.
    pub members: MemberCounts,
    /// SWIM core counters (probes, failed probes, refutations, drops).
    pub swim: shoal_swim::Stats,
    /// SWIM wire counters (messages sent, received, malformed, unadmitted).
    pub swim_wire: shoal_swim::WireStats,
    /// The identity gate's proof checks (scrypt evaluations, cache hits, refusals, rate limits).
    pub verifier: shoal_pow::VerifierStats,
    /// Peers refused admission by the trust policy's lists (each time one showed a valid proof
    /// or was named in gossip), and their requests and SWIM messages refused or dropped.
    pub denied: (u64, u64),
    /// Requests refused by the trust policy's per-peer, per-method rate limit.
    pub rate_limited: u64,
    /// Requests over that rate held and served later, at the rate.
    pub slowed: u64,
    /// Misbehaviour this node proved of peers since start, by kind
    /// ([`crate::core::Misbehaviour::as_str`]).
    pub misbehaviour: Vec<(&'static str, u64)>,
    /// Peers banned for misbehaviour since start, and bans in force now.
    pub bans: (u64, usize),
    /// Requests and told messages refused or dropped by the trust policy's per-peer bandwidth.
    pub bandwidth_limited: u64,
    /// Peers held out by the churn filter since start.
    pub churn_holds: u64,
    /// Bytes of messages received and sent since start, per protocol: the DHT's, SWIM's, the
    /// broadcast's.
    pub traffic: Traffic,
    /// The broadcast core's counters (notices delivered, duplicates, grafts, prunes, views).
    pub broadcast: shoal_broadcast::Stats,
    /// Broadcast messages sent, and received ones that did not decode or came from a peer
    /// not admitted.
    pub broadcast_wire: BroadcastWire,
    /// Records held in the local store.
    pub records: usize,
    /// Lockstep notices held in the local book.
    pub notices: usize,
    /// Peers in the routing table.
    pub routing_peers: usize,
    /// Queries this node started (puts, gets, lookups, notices) since start.
    pub queries: u64,
    /// Of those, the ones that found their peers in one hop from the local view.
    pub one_hop: u64,
    /// Of those, the ones that took Kademlia's iterative lookup.
    pub iterative: u64,
    /// Whether the local view is settled now (operations then take one hop).
    pub view_settled: bool,
    /// Established connections.
    pub connections: usize,
    /// Peers with at least one established connection.
    pub connected_peers: usize,
    /// The swarm's listen addresses.
    pub listen_addrs: Vec<Multiaddr>,
    /// The swarm's confirmed external addresses.
    pub external_addrs: Vec<Multiaddr>,
    /// NAT traversal.
    pub nat: NatReport,
}
