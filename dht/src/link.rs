//! The DHT protocol's transport: requests and their answers as frames on one long-lived stream
//! per connection and direction, instead of a new stream per request.
//!
//! A put asks twenty replicas. With libp2p's request-response every request opened a yamux
//! stream, negotiated the protocol on it, armed a timer for the negotiation and one for the
//! request (each a wake-up of the global timer thread) and closed the stream again; that
//! per-stream work was most of a put's cost (CHANGELOG.md). Here a node opens one stream to a
//! peer when it first asks it something and keeps it while the connection lasts.
//!
//! Protocol ([`crate::Config::dht_protocol`]): each side asks its questions on the stream it
//! opened and answers the other's on the streams the other opened. A frame is a request id and a
//! length `n` (unsigned LEB128 varints, [`FrameCodec`]), then the `n` bytes of the CBOR message
//! ([`Request`] on a stream one opened, [`Response`] coming back on it). Answers may come in any
//! order; the asker picks the ids, unique among its unanswered requests. Id 0 is a told request
//! ([`Behaviour::tell`]): it wants no answer and gets none. Bounds: a message is at most its
//! bound (a longer one ends the stream, whose framing cannot be trusted after it); at most
//! [`Limits::in_flight`] unanswered requests per stream each way (a node asking more is not read
//! until it is answered, and asking more than that of a peer fails at once); at most
//! [`MAX_INBOUND_STREAMS`] streams a peer opened per connection. A frame that does not decode
//! is answered with a refusal that says why.
//!
//! A request fails when its connection closes, its stream fails, the dial fails, or
//! [`Limits::timeout`] passes (a backstop: the core keeps its own, shorter deadlines). The
//! streams do not keep a connection open by themselves; unanswered requests do, and requests
//! within the last `BUSY_FOR`; then the swarm's idle timeout runs.

use std::collections::{HashMap, HashSet, VecDeque};
use std::io;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use asynchronous_codec::{Bytes, BytesMut, Decoder, Encoder, Framed};
use futures::{SinkExt, StreamExt};
use libp2p::core::transport::PortUse;
use libp2p::core::upgrade::ReadyUpgrade;
use libp2p::core::{Endpoint, Multiaddr};
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::handler::{
    ConnectionEvent, DialUpgradeError, FullyNegotiatedInbound, FullyNegotiatedOutbound,
};
use libp2p::swarm::{
    ConnectionDenied, ConnectionHandler, ConnectionHandlerEvent, ConnectionId, DialError,
    FromSwarm, NetworkBehaviour, NotifyHandler, Stream, StreamUpgradeError, SubstreamProtocol,
    THandler, THandlerInEvent, THandlerOutEvent, ToSwarm,
};
use libp2p::{PeerId, StreamProtocol};

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_bytes::ByteBuf;

use crate::wire::{self, Request, Response};

/// Streams a peer may have opened on one connection; more are dropped when they arrive.
pub const MAX_INBOUND_STREAMS: usize = 4;

/// Requests waiting for an answer in the whole behaviour, at most; more fail at once.
pub const MAX_PENDING: usize = 1 << 16;

/// How often requests past their deadline are failed.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// How long a connection counts as busy after its last request, either way. Without this, a
/// connection whose requests come one at a time would turn idle after each answer, and the
/// swarm would arm (and drop) an idle timer on its global timer thread every time.
const BUSY_FOR: Duration = Duration::from_secs(10);

/// How long a superseded connection, due to close, waits at most for the answers to requests
/// asked on it ([`Retiring`]).
pub const RETIRE_WAIT_MAX: Duration = Duration::from_secs(10);

/// How often a superseded connection on which a request still waits is looked at again.
const RETIRE_RECHECK: Duration = Duration::from_millis(250);

/// Why a connection is retired ([`Retiring`]), which says how long it stays open at least.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retire {
    /// A reconnect's fresh connection replaced it, as stalled: both sides send on the fresh
    /// one (their newest) from now on, and what the peer sent on this one before it saw the
    /// fresh one has a second to arrive.
    Replaced,
    /// It is one more of several attempts to reach a peer that connected after the first,
    /// which is kept (a later one is likely one whose SYN was sent again, and TCP, without a
    /// round-trip sample, then waits a second to send a lost segment again). This node sends
    /// nothing more on it, but the peer sends on it, its newest, until it closes: it stays
    /// long enough for what the peer sent to arrive even after such a wait.
    Extra,
}

impl Retire {
    /// How long a connection retired for this reason stays open at least.
    pub fn grace(self) -> Duration {
        match self {
            Self::Replaced => Duration::from_secs(1),
            Self::Extra => Duration::from_secs(10),
        }
    }
}

/// Connections superseded by another to the same peer, to close once nothing comes on them any
/// more.
///
/// Frames go on a peer's newest connection, on both sides. When another comes up beside it (a
/// reconnect, or one more of several attempts to reach a seed that all connected), one of them
/// is closed, but not at once: what the peer sent on it is still arriving, and so are the
/// answers to requests asked on it. Closed at once, a seed's answer to a join was lost (the
/// joiner waited out the join's timeout), and so was its answer to the joiner's request for the
/// proofs of the members it named. Each is closed once its [`Retire::grace`] passed and no
/// request asked on it waits for an answer, or [`RETIRE_WAIT_MAX`] later whatever waits.
#[derive(Debug, Default)]
pub struct Retiring {
    list: Vec<Retired>,
}

#[derive(Debug)]
struct Retired {
    connection: ConnectionId,
    /// When it is looked at next.
    due: Instant,
    /// When it is closed whatever waits.
    by: Instant,
}

impl Retiring {
    /// `connection`, open, was superseded at `now` for `why`. Holds one entry per connection
    /// (the caller retires only open ones and reports each close, [`Self::closed`]).
    pub fn retire(&mut self, now: Instant, connection: ConnectionId, why: Retire) {
        if self.list.iter().any(|r| r.connection == connection) {
            return;
        }
        let due = now + why.grace();
        self.list.push(Retired {
            connection,
            due,
            by: due + RETIRE_WAIT_MAX,
        });
    }

    /// `connection` closed.
    pub fn closed(&mut self, connection: ConnectionId) {
        self.list.retain(|r| r.connection != connection);
    }

    /// When [`Self::take_due`] has something to look at next.
    pub fn next_due(&self) -> Option<Instant> {
        self.list.iter().map(|r| r.due).min()
    }

    /// The connections to close now: past their grace with nothing waiting on them (`waits`),
    /// or [`RETIRE_WAIT_MAX`] past it.
    pub fn take_due(
        &mut self,
        now: Instant,
        waits: impl Fn(ConnectionId) -> bool,
    ) -> Vec<ConnectionId> {
        let mut close = Vec::new();
        self.list.retain_mut(|r| {
            if r.due > now {
                return true;
            }
            if now >= r.by || !waits(r.connection) {
                close.push(r.connection);
                return false;
            }
            r.due = (now + RETIRE_RECHECK).min(r.by);
            true
        });
        close
    }
}

/// The bounds of a [`Behaviour`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest encoded request.
    pub max_request: usize,
    /// Longest encoded response.
    pub max_response: usize,
    /// Unanswered requests per stream and direction.
    pub in_flight: usize,
    /// How long a request waits for its answer.
    pub timeout: Duration,
}

impl Limits {
    /// The DHT protocol's message bounds, `in_flight` and `timeout`.
    pub fn dht(in_flight: usize, timeout: Duration) -> Self {
        Self {
            max_request: wire::MAX_REQUEST_LEN,
            max_response: wire::MAX_RESPONSE_LEN,
            in_flight: in_flight.max(1),
            timeout,
        }
    }
}

/// The messages a link carries, CBOR-encoded ([`wire::encode`]).
pub trait Messages: Send + 'static {
    /// What a node asks.
    type Request: Serialize + DeserializeOwned + std::fmt::Debug + Send + 'static;
    /// What it is answered.
    type Response: Serialize + DeserializeOwned + std::fmt::Debug + Send + 'static;
    /// The answer to a request that did not decode, or whose answer would be over the bound.
    fn refusal(reason: String) -> Self::Response;
}

/// The DHT protocol's messages.
#[derive(Debug)]
pub enum Dht {}

impl Messages for Dht {
    type Request = Request;
    type Response = Response;
    fn refusal(reason: String) -> Response {
        Response::refused(reason)
    }
}

/// SWIM's messages: each an encoded [`shoal_swim::Message`], told (SWIM's answers are
/// messages of their own); a request asked instead of told is answered with nothing.
#[derive(Debug)]
pub enum Swim {}

impl Messages for Swim {
    type Request = ByteBuf;
    type Response = ();
    fn refusal(_: String) {}
}

/// Broadcast messages: each an encoded [`shoal_broadcast::Message`], told, like [`Swim`]'s.
#[derive(Debug)]
pub enum Broadcast {}

impl Messages for Broadcast {
    type Request = ByteBuf;
    type Response = ();
    fn refusal(_: String) {}
}

/// Peers whose connections a behaviour keeps open at most ([`Behaviour::keep_alive`]).
pub const MAX_KEPT: usize = 1024;

/// A request this node sent, unique within its [`Behaviour`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(u64);

/// Where to answer a peer's request ([`Behaviour::send_response`]).
#[derive(Debug)]
pub struct ResponseChannel {
    peer: PeerId,
    connection: ConnectionId,
    stream: u64,
    id: u64,
}

/// Why a request got no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Failure {
    /// No answer within [`Limits::timeout`].
    #[error("no answer in time")]
    Timeout,
    /// The peer could not be reached, or the connection or stream failed before the answer.
    #[error("{0}")]
    Unreachable(String),
}

/// What the behaviour reports.
#[derive(Debug)]
pub enum Event<M: Messages> {
    /// A peer's request; answer it with [`Behaviour::send_response`].
    Request {
        /// Who asks.
        peer: PeerId,
        /// The request, decoded within its bound.
        request: M::Request,
        /// Where the answer goes.
        channel: ResponseChannel,
        /// Its encoded length, for the trust policy's bandwidth.
        bytes: usize,
    },
    /// The answer to a request this node sent.
    Response {
        /// Who answered.
        peer: PeerId,
        /// The request answered.
        id: RequestId,
        /// The answer, decoded within its bound.
        response: M::Response,
    },
    /// A request this node sent that will get no answer.
    Failed {
        /// Who was asked.
        peer: PeerId,
        /// The request.
        id: RequestId,
        /// Why.
        failure: Failure,
    },
    /// A peer's request that did not decode; it was answered with a refusal.
    Malformed {
        /// Who sent it.
        peer: PeerId,
        /// Why it did not decode.
        reason: String,
    },
}

/// A request on its way: where it went and until when it waits.
#[derive(Debug)]
struct Pending {
    peer: PeerId,
    /// `None` while the peer is being dialed.
    connection: Option<ConnectionId>,
    deadline: Instant,
}

/// A protocol's behaviour: [`Dht`] or [`Swim`] messages.
pub struct Behaviour<M: Messages> {
    protocol: StreamProtocol,
    limits: Limits,
    connections: HashMap<PeerId, Vec<ConnectionId>>,
    /// Encoded requests for peers being dialed, sent once connected, by wire id (0: told).
    dialing: HashMap<PeerId, Vec<(u64, Bytes)>>,
    /// Fresh connections being made to replace a peer's stalled ones ([`Self::reconnect`]).
    reconnecting: HashMap<PeerId, ConnectionId>,
    pending: HashMap<RequestId, Pending>,
    /// Peers whose connections stay open however idle ([`Self::keep_alive`]).
    kept: HashSet<PeerId>,
    events: VecDeque<ToSwarm<Event<M>, Command>>,
    next_id: u64,
    /// Made on the first poll, inside the runtime.
    sweep: Option<tokio::time::Interval>,
    /// Bytes of messages each connected peer sent and was sent, since it connected (a peer
    /// without connections is forgotten, so this holds at most one entry per connected peer).
    traffic: HashMap<PeerId, Traffic>,
    /// Bytes of messages in all, since start.
    total: Traffic,
}

/// Bytes of messages (the encoded request or answer, without framing) one way and the other.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Traffic {
    /// Received.
    pub bytes_in: u64,
    /// Sent.
    pub bytes_out: u64,
}

impl<M: Messages> std::fmt::Debug for Behaviour<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("link::Behaviour")
            .field("protocol", &self.protocol)
            .field("pending", &self.pending.len())
            .finish_non_exhaustive()
    }
}

impl<M: Messages> Behaviour<M> {
    /// A behaviour speaking `protocol` within `limits`.
    pub fn new(protocol: StreamProtocol, limits: Limits) -> Self {
        Self {
            protocol,
            limits,
            connections: HashMap::new(),
            dialing: HashMap::new(),
            reconnecting: HashMap::new(),
            pending: HashMap::new(),
            kept: HashSet::new(),
            events: VecDeque::new(),
            next_id: 0,
            sweep: None,
            traffic: HashMap::new(),
            total: Traffic::default(),
        }
    }

    /// Sends `request` to `peer`, dialing it at `addrs` (and the addresses the swarm knows)
    /// if not connected. Its outcome comes as [`Event::Response`] or [`Event::Failed`].
    pub fn send_request_with_addresses(
        &mut self,
        peer: &PeerId,
        request: M::Request,
        addrs: Vec<Multiaddr>,
    ) -> RequestId {
        self.next_id += 1;
        let id = RequestId(self.next_id);
        let peer = *peer;
        let bytes = match self.encode_request(&request) {
            Ok(bytes) => bytes,
            Err(len) => {
                self.fail(peer, id, format!("request of {len} bytes too long"));
                return id;
            }
        };
        if self.pending.len() >= MAX_PENDING {
            self.fail(peer, id, "too many requests waiting".to_owned());
            return id;
        }
        let connection = self.dispatch(peer, id.0, bytes, addrs);
        let deadline = Instant::now() + self.limits.timeout;
        self.pending.insert(
            id,
            Pending {
                peer,
                connection,
                deadline,
            },
        );
        id
    }

    /// Sends `request` to `peer` as [`Self::send_request_with_addresses`] does, but wants no
    /// answer: nothing is reported, whatever happens to it.
    pub fn tell(&mut self, peer: &PeerId, request: M::Request, addrs: Vec<Multiaddr>) {
        match self.encode_request(&request) {
            Ok(bytes) => {
                self.dispatch(*peer, 0, bytes, addrs);
            }
            Err(len) => tracing::warn!(len, "told request over the bound; not sent"),
        }
    }

    /// `request` encoded, or its length if over the bound.
    fn encode_request(&self, request: &M::Request) -> Result<Bytes, usize> {
        let bytes = wire::encode(request);
        if bytes.len() > self.limits.max_request {
            return Err(bytes.len());
        }
        Ok(Bytes::from(bytes))
    }

    /// Replaces the connections to `peer`, which look stalled: a fresh one is dialed at
    /// `addrs`, and once it is up frames go on it (the newest). Closing the others is the
    /// caller's ([`Retiring`]): what the peer sent on them before it saw the fresh one, and the
    /// answers to requests asked on them, are still coming. A TCP connection that lost a
    /// segment several times in a row waits out doubling retransmission timeouts (0.2, 0.4,
    /// 0.8, 1.6 s...) and everything sent on it queues behind that segment; a new connection
    /// starts without that backoff.
    /// Nothing to do if not connected (the next frame dials) or already reconnecting; the fresh
    /// connection's id if one is being dialed for this call.
    pub fn reconnect(&mut self, peer: PeerId, addrs: Vec<Multiaddr>) -> Option<ConnectionId> {
        if !self.connections.contains_key(&peer) || self.reconnecting.contains_key(&peer) {
            return None;
        }
        let opts = DialOpts::peer_id(peer)
            .condition(PeerCondition::Always)
            .addresses(addrs)
            .build();
        let id = opts.connection_id();
        self.reconnecting.insert(peer, id);
        self.events.push_back(ToSwarm::Dial { opts });
        Some(id)
    }

    /// The open connections to `peer`, oldest first (frames go on the last).
    pub fn connections_of(&self, peer: &PeerId) -> &[ConnectionId] {
        self.connections.get(peer).map_or(&[], Vec::as_slice)
    }

    /// Sends nothing more on `connection` to `peer` while another is open (it goes to the front
    /// of the list; frames go on the last).
    pub fn demote(&mut self, peer: &PeerId, connection: ConnectionId) {
        if let Some(list) = self.connections.get_mut(peer)
            && let Some(i) = list.iter().position(|c| *c == connection)
        {
            let c = list.remove(i);
            list.insert(0, c);
        }
    }

    /// Whether a request sent on `connection` still waits for its answer.
    pub fn unanswered_on(&self, connection: ConnectionId) -> bool {
        self.pending
            .values()
            .any(|p| p.connection == Some(connection))
    }

    /// Sends frame `id` (0: told) to `peer` on the last of its connections, the newest unless
    /// [`Self::demote`]d (after a [`Self::reconnect`], the fresh one), or holds it until one is
    /// open; the connection it went to, if one was.
    fn dispatch(
        &mut self,
        peer: PeerId,
        id: u64,
        bytes: Bytes,
        addrs: Vec<Multiaddr>,
    ) -> Option<ConnectionId> {
        self.count(peer, 0, bytes.len());
        match self.connections.get(&peer).and_then(|c| c.last()).copied() {
            Some(connection) => {
                self.events.push_back(ToSwarm::NotifyHandler {
                    peer_id: peer,
                    handler: NotifyHandler::One(connection),
                    event: Command::Send { id, bytes },
                });
                Some(connection)
            }
            None => {
                self.send_when_connected(peer, id, bytes, addrs);
                None
            }
        }
    }

    /// Holds a request for `peer` until it is connected, dialing it at `addrs` unless a dial
    /// for earlier requests is under way.
    fn send_when_connected(&mut self, peer: PeerId, id: u64, bytes: Bytes, addrs: Vec<Multiaddr>) {
        let waiting = self.dialing.entry(peer).or_default();
        // Bounded like a stream: the oldest told or failed request makes room.
        let evicted = (waiting.len() >= self.limits.in_flight).then(|| waiting.remove(0).0);
        waiting.push((id, bytes));
        if waiting.len() == 1 {
            self.events.push_back(ToSwarm::Dial {
                opts: DialOpts::peer_id(peer).addresses(addrs).build(),
            });
        }
        // A told one (0) or one that timed out meanwhile has nobody to tell.
        if let Some(old) = evicted.map(RequestId)
            && self.pending.contains_key(&old)
        {
            self.fail(peer, old, "too many requests waiting for a dial".to_owned());
        }
    }

    /// Answers a peer's request. `Err` gives `response` back if the connection it came on is
    /// gone (nobody to answer).
    pub fn send_response(
        &mut self,
        channel: ResponseChannel,
        response: M::Response,
    ) -> Result<(), M::Response> {
        let open = self
            .connections
            .get(&channel.peer)
            .is_some_and(|c| c.contains(&channel.connection));
        if !open {
            return Err(response);
        }
        if channel.id == 0 {
            // A told request: nobody waits for the answer.
            return Ok(());
        }
        let mut bytes = wire::encode(&response);
        if bytes.len() > self.limits.max_response {
            tracing::warn!(len = bytes.len(), "answer over the bound; refused instead");
            bytes = wire::encode(&M::refusal("answer too long".to_owned()));
        }
        self.count(channel.peer, 0, bytes.len());
        self.events.push_back(ToSwarm::NotifyHandler {
            peer_id: channel.peer,
            handler: NotifyHandler::One(channel.connection),
            event: Command::Respond {
                stream: channel.stream,
                id: channel.id,
                bytes: Bytes::from(bytes),
            },
        });
        Ok(())
    }

    /// Requests waiting for an answer.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    fn fail(&mut self, peer: PeerId, id: RequestId, reason: String) {
        self.pending.remove(&id);
        self.events.push_back(ToSwarm::GenerateEvent(Event::Failed {
            peer,
            id,
            failure: Failure::Unreachable(reason),
        }));
    }

    /// Fails the requests past their deadline, and tells their handlers to forget them.
    fn sweep(&mut self, now: Instant) {
        let late: Vec<RequestId> = self
            .pending
            .iter()
            .filter(|(_, p)| p.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in late {
            let Some(p) = self.pending.remove(&id) else {
                continue;
            };
            match p.connection {
                Some(connection) => self.events.push_back(ToSwarm::NotifyHandler {
                    peer_id: p.peer,
                    handler: NotifyHandler::One(connection),
                    event: Command::Cancel { id: id.0 },
                }),
                None => {
                    if let Some(waiting) = self.dialing.get_mut(&p.peer) {
                        waiting.retain(|(i, _)| *i != id.0);
                    }
                }
            }
            self.events.push_back(ToSwarm::GenerateEvent(Event::Failed {
                peer: p.peer,
                id,
                failure: Failure::Timeout,
            }));
        }
    }

    /// Counts `bytes_in` received from and `bytes_out` sent to `peer` (per peer only while it
    /// is connected: what waits for a dial counts once it is sent).
    fn count(&mut self, peer: PeerId, bytes_in: usize, bytes_out: usize) {
        let (bytes_in, bytes_out) = (bytes_in as u64, bytes_out as u64);
        let connected = self.connections.contains_key(&peer);
        let per_peer = connected.then(|| self.traffic.entry(peer).or_default());
        for t in per_peer.into_iter().chain([&mut self.total]) {
            t.bytes_in = t.bytes_in.saturating_add(bytes_in);
            t.bytes_out = t.bytes_out.saturating_add(bytes_out);
        }
    }

    /// Bytes of messages `peer` sent and was sent since it connected, if connected.
    pub fn traffic(&self, peer: &PeerId) -> Option<Traffic> {
        self.traffic.get(peer).copied()
    }

    /// Bytes of messages received and sent in all, since start.
    pub fn total(&self) -> Traffic {
        self.total
    }

    fn on_handler_event(&mut self, peer: PeerId, connection: ConnectionId, event: HandlerEvent) {
        match event {
            HandlerEvent::Response { id, bytes } => {
                self.count(peer, bytes.len(), 0);
                let id = RequestId(id);
                if self.pending.remove(&id).is_none() {
                    // Answered after its deadline; the core was told it failed.
                    return;
                }
                let event = match wire::decode::<M::Response>(&bytes, self.limits.max_response) {
                    Ok(response) => Event::Response { peer, id, response },
                    Err(e) => Event::Failed {
                        peer,
                        id,
                        failure: Failure::Unreachable(format!("unreadable answer: {e}")),
                    },
                };
                self.events.push_back(ToSwarm::GenerateEvent(event));
            }
            HandlerEvent::Failed { ids, reason } => {
                for id in ids {
                    let id = RequestId(id);
                    if self.pending.contains_key(&id) {
                        self.fail(peer, id, reason.clone());
                    }
                }
            }
            HandlerEvent::Request { stream, id, bytes } => {
                self.count(peer, bytes.len(), 0);
                let len = bytes.len();
                let channel = ResponseChannel {
                    peer,
                    connection,
                    stream,
                    id,
                };
                match wire::decode::<M::Request>(&bytes, self.limits.max_request) {
                    Ok(request) => {
                        self.events
                            .push_back(ToSwarm::GenerateEvent(Event::Request {
                                peer,
                                request,
                                channel,
                                bytes: len,
                            }));
                    }
                    Err(e) => {
                        let reason = e.to_string();
                        let refusal = M::refusal(format!("unreadable request: {reason}"));
                        // The connection is open: the frame just came on it.
                        let _ = self.send_response(channel, refusal);
                        self.events
                            .push_back(ToSwarm::GenerateEvent(Event::Malformed { peer, reason }));
                    }
                }
            }
        }
    }

    /// Keeps the connections to `peer` open however idle (`keep`), or lets them close when idle
    /// again. At most [`MAX_KEPT`] peers are kept; more are refused (returns false).
    pub fn keep_alive(&mut self, peer: PeerId, keep: bool) -> bool {
        let changed = if keep {
            if self.kept.len() >= MAX_KEPT && !self.kept.contains(&peer) {
                return false;
            }
            self.kept.insert(peer)
        } else {
            self.kept.remove(&peer)
        };
        if changed {
            for connection in self.connections.get(&peer).into_iter().flatten() {
                self.events.push_back(ToSwarm::NotifyHandler {
                    peer_id: peer,
                    handler: NotifyHandler::One(*connection),
                    event: Command::Keep(keep),
                });
            }
        }
        true
    }

    fn on_connection_established(&mut self, peer: PeerId, connection: ConnectionId) {
        if self.kept.contains(&peer) {
            self.events.push_back(ToSwarm::NotifyHandler {
                peer_id: peer,
                handler: NotifyHandler::One(connection),
                event: Command::Keep(true),
            });
        }
        if self.reconnecting.get(&peer) == Some(&connection) {
            self.reconnecting.remove(&peer);
        }
        self.connections.entry(peer).or_default().push(connection);
        for (id, bytes) in self.dialing.remove(&peer).unwrap_or_default() {
            if id != 0 {
                match self.pending.get_mut(&RequestId(id)) {
                    Some(p) => p.connection = Some(connection),
                    // Timed out while the dial went on.
                    None => continue,
                }
            }
            self.events.push_back(ToSwarm::NotifyHandler {
                peer_id: peer,
                handler: NotifyHandler::One(connection),
                event: Command::Send { id, bytes },
            });
        }
    }

    fn on_connection_closed(&mut self, peer: PeerId, connection: ConnectionId) {
        if let Some(list) = self.connections.get_mut(&peer) {
            list.retain(|c| *c != connection);
            if list.is_empty() {
                self.connections.remove(&peer);
                self.traffic.remove(&peer);
            }
        }
        let lost: Vec<RequestId> = self
            .pending
            .iter()
            .filter(|(_, p)| p.connection == Some(connection))
            .map(|(id, _)| *id)
            .collect();
        for id in lost {
            self.fail(peer, id, "connection closed".to_owned());
        }
    }

    fn on_dial_failure(&mut self, peer: PeerId, error: &DialError) {
        if matches!(error, DialError::DialPeerConditionFalse(_)) {
            // Another dial of the same peer is under way; its outcome decides.
            return;
        }
        if self.connections.contains_key(&peer) {
            return;
        }
        let reason = format!("dial failed: {error}");
        for (id, _) in self.dialing.remove(&peer).unwrap_or_default() {
            let id = RequestId(id);
            if self.pending.contains_key(&id) {
                self.fail(peer, id, reason.clone());
            }
        }
    }
}

impl<M: Messages> NetworkBehaviour for Behaviour<M> {
    type ConnectionHandler = Handler;
    type ToSwarm = Event<M>;

    fn handle_established_inbound_connection(
        &mut self,
        _: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        _: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(Handler::new(self.protocol.clone(), self.limits))
    }

    fn handle_established_outbound_connection(
        &mut self,
        _: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        _: Endpoint,
        _: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(Handler::new(self.protocol.clone(), self.limits))
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        match event {
            FromSwarm::ConnectionEstablished(e) => {
                self.on_connection_established(e.peer_id, e.connection_id);
            }
            FromSwarm::ConnectionClosed(e) => self.on_connection_closed(e.peer_id, e.connection_id),
            FromSwarm::DialFailure(e) => {
                if let Some(peer) = e.peer_id {
                    if self.reconnecting.get(&peer) == Some(&e.connection_id) {
                        // The old connections stay.
                        self.reconnecting.remove(&peer);
                    }
                    self.on_dial_failure(peer, e.error);
                }
            }
            _ => {}
        }
    }

    fn on_connection_handler_event(
        &mut self,
        peer: PeerId,
        connection: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        self.on_handler_event(peer, connection, event);
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<ToSwarm<Event<M>, THandlerInEvent<Self>>> {
        let sweep = self.sweep.get_or_insert_with(|| {
            let mut interval = tokio::time::interval(SWEEP_EVERY);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            interval
        });
        // Polled until pending, so that the next tick wakes the swarm.
        let mut due = false;
        while sweep.poll_tick(cx).is_ready() {
            due = true;
        }
        if due {
            self.sweep(Instant::now());
        }
        match self.events.pop_front() {
            Some(event) => Poll::Ready(event),
            None => Poll::Pending,
        }
    }
}

// ----- the connection handler -----

/// What the behaviour asks of a connection's handler.
#[derive(Debug)]
pub enum Command {
    /// Send request `id` (encoded as `bytes`).
    Send {
        /// The request's id on the stream.
        id: u64,
        /// The encoded request.
        bytes: Bytes,
    },
    /// Forget request `id`: it failed.
    Cancel {
        /// The request's id on the stream.
        id: u64,
    },
    /// Answer request `id` of inbound stream `stream` with `bytes`.
    Respond {
        /// Which of the peer's streams the request came on.
        stream: u64,
        /// The request's id on that stream.
        id: u64,
        /// The encoded answer.
        bytes: Bytes,
    },
    /// Keep the connection open however idle (true), or not.
    Keep(bool),
}

/// What a connection's handler reports.
#[derive(Debug)]
pub enum HandlerEvent {
    /// The answer to request `id`.
    Response {
        /// The request answered.
        id: u64,
        /// The encoded answer.
        bytes: Bytes,
    },
    /// These requests will get no answer.
    Failed {
        /// The requests.
        ids: Vec<u64>,
        /// Why.
        reason: String,
    },
    /// The peer's request `id` on inbound stream `stream`.
    Request {
        /// Which of the peer's streams it came on.
        stream: u64,
        /// Its id on that stream.
        id: u64,
        /// The encoded request.
        bytes: Bytes,
    },
}

/// A stream the peer opened: its requests come in, their answers go out.
struct Inbound {
    key: u64,
    framed: Framed<Stream, FrameCodec>,
    unanswered: HashSet<u64>,
    answers: VecDeque<(u64, Bytes)>,
}

/// The handler of one connection.
pub struct Handler {
    protocol: StreamProtocol,
    limits: Limits,
    /// The stream this node asks on, once open.
    outbound: Option<Framed<Stream, FrameCodec>>,
    opening: bool,
    /// The peer does not speak the protocol: requests fail at once.
    unsupported: bool,
    /// Requests not written yet.
    queue: VecDeque<(u64, Bytes)>,
    /// Requests sent or queued and not answered.
    awaiting: HashSet<u64>,
    inbound: Vec<Inbound>,
    next_stream: u64,
    events: VecDeque<HandlerEvent>,
    /// A request went or came within [`BUSY_FOR`] of `last_request` (see
    /// [`Handler::poll_busy`]).
    busy: bool,
    last_request: Instant,
    /// Fires when the connection may have turned idle; made while busy.
    idle_check: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
    /// Kept open however idle ([`Behaviour::keep_alive`]).
    keep: bool,
}

impl Handler {
    fn new(protocol: StreamProtocol, limits: Limits) -> Self {
        Self {
            protocol,
            limits,
            outbound: None,
            opening: false,
            unsupported: false,
            queue: VecDeque::new(),
            awaiting: HashSet::new(),
            inbound: Vec::new(),
            next_stream: 0,
            events: VecDeque::new(),
            busy: false,
            last_request: Instant::now(),
            idle_check: None,
            keep: false,
        }
    }

    /// Notes a request either way: the connection is busy for [`BUSY_FOR`] more.
    fn note_request(&mut self) {
        self.busy = true;
        self.last_request = Instant::now();
    }

    /// Ends the busy spell once [`BUSY_FOR`] passed without a request. One timer per spell:
    /// when it fires early (requests came meanwhile) it is moved to the new end.
    fn poll_busy(&mut self, cx: &mut Context<'_>) {
        if !self.busy {
            return;
        }
        let end = self.last_request + BUSY_FOR;
        let check = self
            .idle_check
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(end.into())));
        loop {
            if check.as_mut().poll(cx).is_pending() {
                return;
            }
            let end = self.last_request + BUSY_FOR;
            if end <= Instant::now() {
                self.busy = false;
                self.idle_check = None;
                return;
            }
            check.as_mut().reset(end.into());
        }
    }

    /// Fails every request sent or queued; the next request opens a new stream.
    fn fail_outbound(&mut self, reason: String) {
        tracing::debug!(%reason, queued = self.queue.len(), "outbound stream failed");
        self.outbound = None;
        self.queue.clear();
        let ids: Vec<u64> = self.awaiting.drain().collect();
        if !ids.is_empty() {
            self.events.push_back(HandlerEvent::Failed { ids, reason });
        }
    }

    /// Writes what is queued on the outbound stream and reads its answers.
    fn poll_outbound(&mut self, cx: &mut Context<'_>) {
        let Some(framed) = self.outbound.as_mut() else {
            return;
        };
        let mut result = write_queued(framed, &mut self.queue, cx);
        while result.is_ok() {
            match read_frame(framed, cx) {
                Poll::Ready(Ok((id, bytes))) => {
                    // An answer to a cancelled request is dropped.
                    if self.awaiting.remove(&id) {
                        self.events.push_back(HandlerEvent::Response { id, bytes });
                    }
                }
                Poll::Ready(Err(e)) => result = Err(e),
                Poll::Pending => break,
            }
        }
        if let Err(e) = result {
            self.fail_outbound(format!("stream failed: {e}"));
        }
    }

    /// Writes the answers of each inbound stream and reads its requests, while fewer than the
    /// bound are unanswered; drops the streams that failed.
    fn poll_inbound(&mut self, cx: &mut Context<'_>) {
        let in_flight = self.limits.in_flight;
        let mut i = 0;
        while i < self.inbound.len() {
            let stream = &mut self.inbound[i];
            let mut result = write_queued(&mut stream.framed, &mut stream.answers, cx);
            // Read while the peer's unanswered requests and the events not yet taken by the
            // behaviour are within the bound: beyond it, the peer waits (told requests too).
            while result.is_ok()
                && stream.unanswered.len() < in_flight
                && self.events.len() < in_flight
            {
                match read_frame(&mut stream.framed, cx) {
                    Poll::Ready(Ok((id, bytes))) => {
                        if id != 0 && !stream.unanswered.insert(id) {
                            result = Err(io::Error::new(
                                io::ErrorKind::InvalidData,
                                "a request id reused before its answer",
                            ));
                            break;
                        }
                        self.events.push_back(HandlerEvent::Request {
                            stream: stream.key,
                            id,
                            bytes,
                        });
                        self.busy = true;
                        self.last_request = Instant::now();
                    }
                    Poll::Ready(Err(e)) => result = Err(e),
                    Poll::Pending => break,
                }
            }
            match result {
                Err(e) => {
                    tracing::debug!(error = %e, "inbound DHT stream ended");
                    self.inbound.swap_remove(i);
                }
                Ok(()) => i += 1,
            }
        }
    }
}

/// Writes the frames of `queue` while the stream takes them, then flushes what was written.
fn write_queued(
    framed: &mut Framed<Stream, FrameCodec>,
    queue: &mut VecDeque<(u64, Bytes)>,
    cx: &mut Context<'_>,
) -> io::Result<()> {
    while !queue.is_empty() {
        match framed.poll_ready_unpin(cx) {
            Poll::Ready(Ok(())) => {
                let frame = queue.pop_front().expect("not empty");
                framed.start_send_unpin(frame)?;
            }
            Poll::Ready(Err(e)) => return Err(e),
            Poll::Pending => break,
        }
    }
    match framed.poll_flush_unpin(cx) {
        Poll::Ready(Err(e)) => Err(e),
        Poll::Ready(Ok(())) | Poll::Pending => Ok(()),
    }
}

/// `stream` framed with empty buffers that grow with the frames: `Framed::new` allocates 16 KiB
/// a stream, and a member keeps two streams to every member it probes (most of an idle node's
/// heap at n = 50), for messages of a few dozen bytes.
fn framed(stream: Stream, max: usize) -> Framed<Stream, FrameCodec> {
    // FramedParts has no constructor of its own: the default buffers are freed at once.
    let mut parts = Framed::new(stream, FrameCodec::new(max)).into_parts();
    parts.read_buffer = BytesMut::new();
    parts.write_buffer = BytesMut::new();
    Framed::from_parts(parts)
}

/// The next frame of a stream; a stream that ended is an error.
fn read_frame(
    framed: &mut Framed<Stream, FrameCodec>,
    cx: &mut Context<'_>,
) -> Poll<io::Result<(u64, Bytes)>> {
    framed.poll_next_unpin(cx).map(|frame| {
        frame.unwrap_or_else(|| {
            Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "stream closed",
            ))
        })
    })
}

impl ConnectionHandler for Handler {
    type FromBehaviour = Command;
    type ToBehaviour = HandlerEvent;
    type InboundProtocol = ReadyUpgrade<StreamProtocol>;
    type OutboundProtocol = ReadyUpgrade<StreamProtocol>;
    type InboundOpenInfo = ();
    type OutboundOpenInfo = ();

    fn listen_protocol(&self) -> SubstreamProtocol<Self::InboundProtocol> {
        SubstreamProtocol::new(ReadyUpgrade::new(self.protocol.clone()), ())
    }

    fn connection_keep_alive(&self) -> bool {
        self.keep
            || self.busy
            || !self.awaiting.is_empty()
            || self
                .inbound
                .iter()
                .any(|s| !s.unanswered.is_empty() || !s.answers.is_empty())
    }

    fn on_behaviour_event(&mut self, command: Command) {
        match command {
            Command::Send { id: 0, bytes } => {
                // Told: nobody waits, so it is dropped rather than queued without bound.
                if self.unsupported || self.queue.len() >= self.limits.in_flight {
                    tracing::debug!("told request dropped");
                } else {
                    self.note_request();
                    self.queue.push_back((0, bytes));
                }
            }
            Command::Send { id, bytes } => {
                let reason = if self.unsupported {
                    Some("the peer does not speak the DHT protocol")
                } else if self.awaiting.len() >= self.limits.in_flight {
                    Some("too many requests waiting for this peer")
                } else {
                    None
                };
                match reason {
                    Some(reason) => self.events.push_back(HandlerEvent::Failed {
                        ids: vec![id],
                        reason: reason.to_owned(),
                    }),
                    None => {
                        self.note_request();
                        self.awaiting.insert(id);
                        self.queue.push_back((id, bytes));
                    }
                }
            }
            Command::Keep(keep) => self.keep = keep,
            Command::Cancel { id } => {
                self.awaiting.remove(&id);
                self.queue.retain(|(i, _)| *i != id);
            }
            Command::Respond { stream, id, bytes } => {
                // The stream may have ended meanwhile: then nobody waits for the answer.
                if let Some(s) = self.inbound.iter_mut().find(|s| s.key == stream)
                    && s.unanswered.remove(&id)
                {
                    s.answers.push_back((id, bytes));
                }
            }
        }
    }

    fn poll(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<ConnectionHandlerEvent<Self::OutboundProtocol, (), Self::ToBehaviour>> {
        if let Some(event) = self.events.pop_front() {
            return Poll::Ready(ConnectionHandlerEvent::NotifyBehaviour(event));
        }
        if self.outbound.is_none() && !self.opening && !self.queue.is_empty() {
            self.opening = true;
            let protocol = SubstreamProtocol::new(ReadyUpgrade::new(self.protocol.clone()), ());
            return Poll::Ready(ConnectionHandlerEvent::OutboundSubstreamRequest { protocol });
        }
        self.poll_outbound(cx);
        self.poll_inbound(cx);
        self.poll_busy(cx);
        match self.events.pop_front() {
            Some(event) => Poll::Ready(ConnectionHandlerEvent::NotifyBehaviour(event)),
            None => Poll::Pending,
        }
    }

    fn on_connection_event(
        &mut self,
        event: ConnectionEvent<Self::InboundProtocol, Self::OutboundProtocol>,
    ) {
        match event {
            ConnectionEvent::FullyNegotiatedOutbound(FullyNegotiatedOutbound {
                protocol: mut stream,
                ..
            }) => {
                stream.ignore_for_keep_alive();
                self.opening = false;
                self.outbound = Some(framed(stream, self.limits.max_response));
            }
            ConnectionEvent::FullyNegotiatedInbound(FullyNegotiatedInbound {
                protocol: mut stream,
                ..
            }) => {
                if self.inbound.len() >= MAX_INBOUND_STREAMS {
                    tracing::debug!("a peer opened too many DHT streams; one dropped");
                    return;
                }
                stream.ignore_for_keep_alive();
                self.next_stream += 1;
                self.inbound.push(Inbound {
                    key: self.next_stream,
                    framed: framed(stream, self.limits.max_request),
                    unanswered: HashSet::new(),
                    answers: VecDeque::new(),
                });
            }
            ConnectionEvent::DialUpgradeError(DialUpgradeError { error, .. }) => {
                self.opening = false;
                let reason = match error {
                    StreamUpgradeError::NegotiationFailed => {
                        self.unsupported = true;
                        "the peer does not speak the DHT protocol".to_owned()
                    }
                    StreamUpgradeError::Timeout => "opening a stream timed out".to_owned(),
                    StreamUpgradeError::Io(e) => format!("opening a stream failed: {e}"),
                    StreamUpgradeError::Apply(never) => match never {},
                };
                self.fail_outbound(reason);
            }
            _ => {}
        }
    }
}

// ----- framing -----

/// Frames of the protocol: the request id and the message's length as unsigned LEB128 varints
/// (at most 10 and 5 bytes, minimal encodings only), then the message. Most frames are told
/// SWIM messages of a few dozen bytes with id 0, so fixed-width fields (a 4-byte length and an
/// 8-byte id) were a large share of every frame (docs/benchmarks.md).
#[derive(Debug, Clone, Copy)]
pub struct FrameCodec {
    /// Longest message accepted (the id not counted).
    max: usize,
}

impl FrameCodec {
    /// A codec accepting messages of at most `max` bytes.
    pub fn new(max: usize) -> Self {
        Self { max }
    }
}

/// The varint at the start of `src` and the bytes it took, `None` while it is incomplete.
fn varint(src: &[u8], what: &str) -> Result<Option<(u64, usize)>, io::Error> {
    match unsigned_varint::decode::u64(src) {
        Ok((value, rest)) => Ok(Some((value, src.len() - rest.len()))),
        Err(unsigned_varint::decode::Error::Insufficient) => Ok(None),
        Err(e) => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("bad {what} varint: {e}"),
        )),
    }
}

impl Decoder for FrameCodec {
    type Item = (u64, Bytes);
    type Error = io::Error;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Self::Item>, io::Error> {
        let Some((id, id_bytes)) = varint(src, "request id")? else {
            return Ok(None);
        };
        let Some((len, len_bytes)) = varint(&src[id_bytes..], "length")? else {
            return Ok(None);
        };
        // Refused from the prefix alone: a peer cannot make a node buffer a long frame.
        let len = usize::try_from(len)
            .ok()
            .filter(|len| *len <= self.max)
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("message of {len} bytes; at most {} allowed", self.max),
                )
            })?;
        let head = id_bytes + len_bytes;
        if src.len() < head + len {
            src.reserve(head + len - src.len());
            return Ok(None);
        }
        let _ = src.split_to(head);
        Ok(Some((id, src.split_to(len).freeze())))
    }
}

impl Encoder for FrameCodec {
    type Item<'a> = (u64, Bytes);
    type Error = io::Error;

    fn encode(&mut self, (id, body): (u64, Bytes), dst: &mut BytesMut) -> Result<(), io::Error> {
        let mut id_buf = unsigned_varint::encode::u64_buffer();
        let mut len_buf = unsigned_varint::encode::u64_buffer();
        let id = unsigned_varint::encode::u64(id, &mut id_buf);
        let len = unsigned_varint::encode::u64(body.len() as u64, &mut len_buf);
        dst.reserve(id.len() + len.len() + body.len());
        dst.extend_from_slice(id);
        dst.extend_from_slice(len);
        dst.extend_from_slice(&body);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use libp2p::Swarm;
    use libp2p_swarm_test::SwarmExt;
    use proptest::prelude::*;
    use serde_bytes::ByteBuf;

    /// Two behaviours with `timeout`, `a` connected to `b` (listening on a memory address), and
    /// `b`'s peer id.
    async fn connected(
        timeout: Duration,
    ) -> (Swarm<Behaviour<Dht>>, Swarm<Behaviour<Dht>>, PeerId) {
        let make = || {
            Swarm::new_ephemeral_tokio(|_| {
                Behaviour::new(
                    StreamProtocol::new("/shoal/test/dht/3.0.0"),
                    Limits::dht(8, timeout),
                )
            })
        };
        let (mut a, mut b) = (make(), make());
        b.listen().with_memory_addr_external().await;
        a.connect(&mut b).await;
        let peer = *b.local_peer_id();
        (a, b, peer)
    }

    /// `b`'s address, to dial it again.
    fn address_of(b: &Swarm<Behaviour<Dht>>) -> Multiaddr {
        b.external_addresses().next().expect("b's address").clone()
    }

    fn find(i: u32) -> Request {
        Request::FindNode(ByteBuf::from(i.to_be_bytes().to_vec()))
    }

    /// Many requests at once on one connection: each answer reaches the request it answers,
    /// though they are answered in reverse order and more are asked than the per-stream bound.
    #[tokio::test]
    async fn answers_reach_their_requests_in_any_order() {
        let (mut a, mut b, peer) = connected(Duration::from_secs(30)).await;
        let mut sent = HashMap::new();
        // The first 8 fill the stream's bound; the 9th fails at once, the rest after answers.
        for i in 0..8 {
            let id = a
                .behaviour_mut()
                .send_request_with_addresses(&peer, find(i), Vec::new());
            sent.insert(id, i);
        }
        let over = a
            .behaviour_mut()
            .send_request_with_addresses(&peer, find(99), Vec::new());
        let mut held = Vec::new();
        let mut answered = 0;
        let mut refused_over = false;
        while answered < 8 || !refused_over {
            tokio::select! {
                e = a.next_behaviour_event() => match e {
                    Event::Response { id, response, .. } => {
                        let i = sent.remove(&id).expect("an answer to a request sent");
                        assert_eq!(response, Response::refused(format!("{i}")));
                        answered += 1;
                    }
                    Event::Failed { id, failure, .. } => {
                        assert_eq!(id, over);
                        assert!(matches!(failure, Failure::Unreachable(why) if why.contains("too many")));
                        refused_over = true;
                    }
                    other => panic!("unexpected {other:?}"),
                },
                e = b.next_behaviour_event() => match e {
                    Event::Request { request: Request::FindNode(x), channel, .. } => {
                        held.push((u32::from_be_bytes(x[..].try_into().unwrap()), channel));
                        if held.len() == 8 {
                            while let Some((i, channel)) = held.pop() {
                                b.behaviour_mut()
                                    .send_response(channel, Response::refused(format!("{i}")))
                                    .unwrap();
                            }
                        }
                    }
                    other => panic!("unexpected {other:?}"),
                },
            }
        }
        assert_eq!(a.behaviour().pending(), 0);
        // A told request arrives; its answer goes nowhere, so the next event at `a` is the
        // answer to the request asked after it.
        a.behaviour_mut().tell(&peer, find(7), Vec::new());
        let asked = a
            .behaviour_mut()
            .send_request_with_addresses(&peer, find(8), Vec::new());
        let mut seen = Vec::new();
        loop {
            tokio::select! {
                e = a.next_behaviour_event() => match e {
                    Event::Response { id, response, .. } => {
                        assert_eq!(id, asked);
                        assert_eq!(response, Response::refused("8"));
                        break;
                    }
                    other => panic!("unexpected {other:?}"),
                },
                e = b.next_behaviour_event() => match e {
                    Event::Request { request: Request::FindNode(x), channel, .. } => {
                        let i = u32::from_be_bytes(x[..].try_into().unwrap());
                        seen.push(i);
                        b.behaviour_mut()
                            .send_response(channel, Response::refused(format!("{i}")))
                            .unwrap();
                    }
                    other => panic!("unexpected {other:?}"),
                },
            }
        }
        assert_eq!(seen, vec![7, 8], "told, then asked, on the same stream");
    }

    /// After a reconnect, the next request goes on the fresh connection and is answered; the
    /// old connection stays open (closing it is the caller's, [`Retiring`]), and the request
    /// left on it is still answered there.
    #[tokio::test]
    async fn a_reconnect_moves_to_a_fresh_connection_and_keeps_the_old_open() {
        let (mut a, mut b, peer) = connected(Duration::from_secs(30)).await;
        let addr = address_of(&b);
        let old = a.behaviour().connections_of(&peer).to_vec();
        assert_eq!(old.len(), 1);
        let early = a
            .behaviour_mut()
            .send_request_with_addresses(&peer, find(1), Vec::new());
        let fresh = a
            .behaviour_mut()
            .reconnect(peer, vec![addr.clone()])
            .expect("a fresh connection is dialed");
        assert_eq!(
            a.behaviour_mut().reconnect(peer, vec![addr]),
            None,
            "one fresh connection at a time"
        );
        assert!(a.behaviour().unanswered_on(old[0]));
        let mut held = None;
        let mut asked = None;
        let mut answered = Vec::new();
        while answered.len() < 2 {
            if asked.is_none() && a.behaviour().connections_of(&peer) == [old[0], fresh] {
                let id = a
                    .behaviour_mut()
                    .send_request_with_addresses(&peer, find(2), Vec::new());
                assert!(a.behaviour().unanswered_on(fresh), "asked on the fresh one");
                asked = Some(id);
            }
            tokio::select! {
                e = a.next_behaviour_event() => match e {
                    Event::Response { id, response, .. } => {
                        let want = if id == early { "1" } else { "2" };
                        assert!(id == early || Some(id) == asked);
                        assert_eq!(response, Response::refused(want));
                        answered.push(id);
                    }
                    other => panic!("unexpected {other:?}"),
                },
                e = b.next_behaviour_event() => match e {
                    Event::Request { request: Request::FindNode(x), channel, .. } => {
                        let i = u32::from_be_bytes(x[..].try_into().unwrap());
                        if i == 1 {
                            // The old connection's request is answered only once the second
                            // was asked on the fresh one.
                            held = Some(channel);
                        } else {
                            b.behaviour_mut()
                                .send_response(channel, Response::refused(format!("{i}")))
                                .unwrap();
                            if let Some(c) = held.take() {
                                b.behaviour_mut()
                                    .send_response(c, Response::refused("1"))
                                    .unwrap();
                            }
                        }
                    }
                    other => panic!("unexpected {other:?}"),
                },
                // Both swarms are driven by the branches above; this one only lets the loop
                // look at `a`'s connections again once the fresh one is up.
                () = tokio::time::sleep(Duration::from_millis(10)) => {}
            }
        }
        assert_eq!(a.behaviour().connections_of(&peer), [old[0], fresh]);
        assert!(a.behaviour().reconnecting.is_empty());
        assert!(!a.behaviour().unanswered_on(old[0]));
    }

    /// Frames go on the newest connection, unless it was demoted: then on the one before.
    #[tokio::test]
    async fn a_demoted_connection_carries_no_new_frames() {
        let (mut a, mut b, peer) = connected(Duration::from_secs(30)).await;
        let addr = address_of(&b);
        let first = a.behaviour().connections_of(&peer)[0];
        let second = a
            .behaviour_mut()
            .reconnect(peer, vec![addr])
            .expect("a second connection is dialed");
        while a.behaviour().connections_of(&peer).len() < 2 {
            tokio::select! {
                _ = a.next_swarm_event() => {}
                _ = b.next_swarm_event() => {}
            }
        }
        a.behaviour_mut()
            .send_request_with_addresses(&peer, find(1), Vec::new());
        assert!(a.behaviour().unanswered_on(second));
        a.behaviour_mut().demote(&peer, second);
        assert_eq!(a.behaviour().connections_of(&peer), [second, first]);
        a.behaviour_mut()
            .send_request_with_addresses(&peer, find(2), Vec::new());
        assert!(
            a.behaviour().unanswered_on(first),
            "the demoted one is skipped"
        );
    }

    #[test]
    fn a_superseded_connection_closes_after_its_grace_once_nothing_waits_on_it() {
        let start = Instant::now();
        let (quiet, busy, closed, extra) = (
            ConnectionId::new_unchecked(1),
            ConnectionId::new_unchecked(2),
            ConnectionId::new_unchecked(3),
            ConnectionId::new_unchecked(4),
        );
        let replaced = Retire::Replaced.grace();
        assert!(Retire::Extra.grace() > replaced);
        let mut retiring = Retiring::default();
        for c in [quiet, busy, closed, quiet] {
            retiring.retire(start, c, Retire::Replaced);
        }
        retiring.retire(start, extra, Retire::Extra);
        assert_eq!(retiring.next_due(), Some(start + replaced));
        retiring.closed(closed);
        let waits = |c: ConnectionId| c == busy;
        // Not before its grace, even with nothing waiting.
        assert!(retiring.take_due(start, waits).is_empty());
        let just_before = start + replaced - Duration::from_millis(1);
        assert!(retiring.take_due(just_before, waits).is_empty());
        assert_eq!(retiring.take_due(start + replaced, waits), [quiet]);
        // The busy one is looked at again, and closed once its answer came...
        let again = retiring.next_due().expect("the busy one");
        assert!(again > start + replaced && again <= start + replaced + RETIRE_RECHECK);
        assert!(retiring.take_due(again, waits).is_empty());
        let next = retiring.next_due().expect("still the busy one");
        assert_eq!(retiring.take_due(next, |_| false), [busy]);
        // The extra one after its longer grace.
        assert_eq!(retiring.next_due(), Some(start + Retire::Extra.grace()));
        assert_eq!(
            retiring.take_due(start + Retire::Extra.grace(), waits),
            [extra]
        );
        assert_eq!(retiring.next_due(), None);
        // ...or at the latest `RETIRE_WAIT_MAX` after its grace, whatever waits.
        retiring.retire(start, busy, Retire::Replaced);
        let mut closed_at = None;
        while let Some(at) = retiring.next_due() {
            if !retiring.take_due(at, |_| true).is_empty() {
                closed_at = Some(at);
            }
        }
        assert_eq!(closed_at, Some(start + replaced + RETIRE_WAIT_MAX));
    }

    /// A request the peer never answers fails once the timeout passed; a request to a peer
    /// that cannot be dialed fails at once.
    #[tokio::test]
    async fn unanswered_requests_time_out_and_undialable_peers_fail() {
        let (mut a, mut b, peer) = connected(Duration::from_millis(1500)).await;
        let started = tokio::time::Instant::now();
        let id = a
            .behaviour_mut()
            .send_request_with_addresses(&peer, find(1), Vec::new());
        let stranger = PeerId::random();
        let lost = a
            .behaviour_mut()
            .send_request_with_addresses(&stranger, find(2), Vec::new());
        let mut failed = HashMap::new();
        let mut kept = Vec::new();
        while failed.len() < 2 {
            tokio::select! {
                e = a.next_behaviour_event() => match e {
                    Event::Failed { id, failure, .. } => {
                        failed.insert(id, (failure, started.elapsed()));
                    }
                    other => panic!("unexpected {other:?}"),
                },
                e = b.next_behaviour_event() => if let Event::Request { channel, .. } = e {
                    // Held, never answered.
                    kept.push(channel);
                },
            }
        }
        let (failure, after) = &failed[&id];
        assert_eq!(*failure, Failure::Timeout);
        assert!(*after >= Duration::from_millis(1500) && *after < Duration::from_secs(4));
        assert!(matches!(&failed[&lost].0, Failure::Unreachable(why) if why.contains("dial")));
        assert_eq!(kept.len(), 1);
        assert_eq!(a.behaviour().pending(), 0);
    }

    fn frame(id: u64, body: &[u8]) -> BytesMut {
        let mut out = BytesMut::new();
        FrameCodec::new(usize::MAX >> 1)
            .encode((id, Bytes::copy_from_slice(body)), &mut out)
            .unwrap();
        out
    }

    #[test]
    fn frames_round_trip_and_wait_for_their_bytes() {
        let mut codec = FrameCodec::new(16);
        let mut buf = frame(7, b"hello");
        buf.extend_from_slice(&frame(u64::MAX, b"")[..]);
        let whole = buf.clone();
        // Byte by byte: nothing until a frame is complete.
        let mut partial = BytesMut::new();
        let mut got = Vec::new();
        for b in whole.iter() {
            partial.extend_from_slice(&[*b]);
            while let Some(f) = codec.decode(&mut partial).unwrap() {
                got.push(f);
            }
        }
        assert_eq!(
            got,
            vec![(7, Bytes::from_static(b"hello")), (u64::MAX, Bytes::new())]
        );
    }

    #[test]
    fn frames_are_short_and_bad_prefixes_refused() {
        // A told message of 20 bytes: one byte of id, one of length.
        assert_eq!(frame(0, &[0; 20]).len(), 22);
        let mut codec = FrameCodec::new(4);
        let mut long = frame(1, b"12345");
        assert_eq!(
            codec.decode(&mut long).unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
        // Refused from the prefix alone: a peer cannot make a node buffer a long frame.
        let mut prefix = BytesMut::from(&[0x00, 0xff, 0xff, 0xff, 0xff, 0x0f][..]);
        assert!(codec.decode(&mut prefix).is_err());
        // An id that does not fit 64 bits, and a length padded to more bytes than it needs.
        let mut overflow = BytesMut::from(&[0xff; 11][..]);
        assert!(codec.decode(&mut overflow).is_err());
        let mut padded = BytesMut::from(&[0x01, 0x81, 0x00][..]);
        assert!(codec.decode(&mut padded).is_err());
        // An incomplete prefix waits for more.
        let mut partial = BytesMut::from(&[0x80][..]);
        assert!(codec.decode(&mut partial).unwrap().is_none());
    }

    proptest! {
        #[test]
        fn any_bytes_decode_to_frames_or_a_typed_error(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let mut codec = FrameCodec::new(64);
            let mut buf = BytesMut::from(&bytes[..]);
            while let Ok(Some((_, body))) = codec.decode(&mut buf) {
                prop_assert!(body.len() <= 64);
            }
        }
    }
}
