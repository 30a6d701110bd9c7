//! `swim::Behaviour`: the SWIM core driven by a libp2p swarm.
//!
//! Each transmit of the core becomes one request on `/shoal/swim/1`, sent to the member's
//! addresses (request-response dials if no connection is open); each inbound request is decoded
//! with the size bound and handed to the core as a message from the connection's authenticated
//! peer. The behaviour reads the clock once per `poll`, keeps one timer set to the core's
//! `poll_timeout`, and keeps the core's own addresses in step with the swarm's listen and
//! external addresses. It emits the core's own [`Event`]s, their members being `PeerId`s;
//! [`to_multiaddrs`] reads their addresses as multiaddrs.
//!
//! Every peer that speaks the protocol takes part. An embedding that must vet members first (the
//! DHT admits only peers whose identity proof it checked) drives the core itself, as
//! `shoal_dht::core` does, instead of using this behaviour.

use std::collections::{HashMap, VecDeque};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::FutureExt;
use futures_timer::Delay;
use libp2p::core::Endpoint;
use libp2p::core::transport::PortUse;
use libp2p::request_response::{self as rr, ProtocolSupport};
use libp2p::swarm::{
    ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, THandler, THandlerInEvent,
    THandlerOutEvent, ToSwarm,
};
use libp2p::{Multiaddr, PeerId};

use crate::config::Config;
use crate::error::ConfigError;
use crate::message::{self, Address, State};
use crate::protocol::{Codec, PROTOCOL};
use crate::state::{CommandId, Event, Member, Membership, Stats};

/// Addresses as multiaddrs; bytes that are not a multiaddr are skipped.
pub fn to_multiaddrs(addrs: &[Address]) -> Vec<Multiaddr> {
    addrs
        .iter()
        .filter_map(|a| Multiaddr::try_from(a.0.clone()).ok())
        .collect()
}

/// Counters of the libp2p layer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WireStats {
    /// Messages sent.
    pub sent: u64,
    /// Messages sent to a member with no open connection (each makes request-response dial).
    pub sent_unconnected: u64,
    /// Messages received and decoded.
    pub received: u64,
    /// Inbound messages refused by the decoder (malformed or oversized).
    pub malformed: u64,
    /// Transmits dropped: no address known for the destination, or encoding over the bound.
    pub undeliverable: u64,
}

/// Seeds remembered for dialing, at most this many.
const MAX_SEED_ADDRS: usize = 64;

/// The SWIM network behaviour.
pub struct Behaviour {
    core: Membership<PeerId>,
    inner: rr::Behaviour<Codec>,
    max_message_bytes: usize,
    timer: Option<(Instant, Delay)>,
    listen_addrs: Vec<Multiaddr>,
    external_addrs: Vec<Multiaddr>,
    seed_addrs: HashMap<PeerId, Vec<Multiaddr>>,
    events: VecDeque<Event<PeerId>>,
    wire: WireStats,
}

impl std::fmt::Debug for Behaviour {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("swim::Behaviour")
            .field("local", self.core.local_id())
            .field("live_members", &self.core.live_members())
            .finish_non_exhaustive()
    }
}

impl Behaviour {
    /// A behaviour for the local peer `local`, starting at `incarnation` (a restarted node should
    /// start above any incarnation it used before; wall-clock seconds do). Its own addresses are
    /// taken from the swarm's external addresses, or its listen addresses if it has none.
    pub fn new(local: PeerId, incarnation: u64, config: Config) -> Result<Self, ConfigError> {
        let max_message_bytes = config.max_message_bytes.get();
        let timeout = (config.probe_timeout * 4).max(Duration::from_secs(5));
        let core = Membership::new(Instant::now(), local, Vec::new(), incarnation, config)?;
        let rr_config = rr::Config::default()
            .with_request_timeout(timeout)
            .with_max_concurrent_streams(256);
        Ok(Self {
            core,
            inner: rr::Behaviour::with_codec(
                Codec::new(max_message_bytes),
                [(PROTOCOL, ProtocolSupport::Full)],
                rr_config,
            ),
            max_message_bytes,
            timer: None,
            listen_addrs: Vec::new(),
            external_addrs: Vec::new(),
            seed_addrs: HashMap::new(),
            events: VecDeque::new(),
            wire: WireStats::default(),
        })
    }

    /// Joins the cluster through `seeds` (peer and addresses). [`Event::JoinFinished`] with the
    /// returned id reports the outcome.
    pub fn join(&mut self, seeds: impl IntoIterator<Item = (PeerId, Vec<Multiaddr>)>) -> CommandId {
        let mut ids = Vec::new();
        for (peer, addrs) in seeds {
            if self.seed_addrs.len() < MAX_SEED_ADDRS || self.seed_addrs.contains_key(&peer) {
                self.seed_addrs.insert(peer, addrs);
            }
            ids.push(peer);
        }
        self.core.join(Instant::now(), ids)
    }

    /// Leaves gracefully; [`Event::LeaveFinished`] reports when the departure was gossiped.
    pub fn leave(&mut self) -> CommandId {
        self.core.leave(Instant::now())
    }

    /// Every member known, with its state and addresses. [`states`](Self::states) is cheaper
    /// when addresses are not needed.
    pub fn members(&self) -> impl Iterator<Item = (&PeerId, Member)> {
        self.core.members()
    }

    /// Every member known, with its state and incarnation.
    pub fn states(&self) -> impl Iterator<Item = (&PeerId, State, u64)> {
        self.core.states()
    }

    /// The member `peer`, if known.
    pub fn member(&self, peer: &PeerId) -> Option<Member> {
        self.core.member(peer)
    }

    /// Members believed alive or suspect, ourselves excluded.
    pub fn live_members(&self) -> usize {
        self.core.live_members()
    }

    /// Lifeguard's local health multiplier (0 is healthy).
    pub fn local_health(&self) -> u32 {
        self.core.local_health()
    }

    /// The core's counters (probes, refutations, ...).
    pub fn stats(&self) -> &Stats {
        self.core.stats()
    }

    /// The wire counters.
    pub fn wire_stats(&self) -> WireStats {
        self.wire
    }

    /// Our incarnation.
    pub fn incarnation(&self) -> u64 {
        self.core.incarnation()
    }

    fn addresses_of(&self, peer: &PeerId) -> Vec<Multiaddr> {
        let mut addrs = self
            .core
            .member(peer)
            .map(|m| to_multiaddrs(&m.addrs))
            .unwrap_or_default();
        if let Some(seed) = self.seed_addrs.get(peer) {
            addrs.extend(seed.iter().cloned());
        }
        addrs
    }

    fn update_local_addrs(&mut self) {
        let chosen = if self.external_addrs.is_empty() {
            &self.listen_addrs
        } else {
            &self.external_addrs
        };
        let addrs: Vec<Address> = chosen
            .iter()
            .take(message::MAX_ADDRESSES)
            .map(|a| Address(a.to_vec()))
            .filter(|a| a.0.len() <= message::MAX_ADDRESS_LEN)
            .collect();
        // Invariant: the list was cut to the message bounds just above.
        let _ = self.core.set_local_addrs(addrs);
    }

    fn on_inner_event(&mut self, now: Instant, event: rr::Event<Vec<u8>, ()>) {
        match event {
            rr::Event::Message {
                peer,
                message:
                    rr::Message::Request {
                        request, channel, ..
                    },
                ..
            } => {
                // The acknowledgement only closes the stream; SWIM's acks are messages.
                let _ = self.inner.send_response(channel, ());
                match message::decode::<PeerId>(&request, self.max_message_bytes) {
                    Ok(msg) => {
                        self.wire.received += 1;
                        self.core.handle_message(now, peer, msg);
                    }
                    Err(error) => {
                        self.wire.malformed += 1;
                        tracing::debug!(%peer, %error, "malformed SWIM message");
                    }
                }
            }
            rr::Event::OutboundFailure { peer, error, .. } => {
                tracing::trace!(%peer, %error, "SWIM message not delivered");
            }
            rr::Event::InboundFailure { peer, error, .. } => {
                if matches!(error, rr::InboundFailure::Io(_)) {
                    self.wire.malformed += 1;
                }
                tracing::trace!(%peer, %error, "SWIM message not received");
            }
            rr::Event::Message { .. } | rr::Event::ResponseSent { .. } => {}
        }
    }

    fn send_transmits(&mut self) -> bool {
        let mut sent = false;
        while let Some(t) = self.core.poll_transmit() {
            let addrs = self.addresses_of(&t.to);
            let bytes = match message::to_vec(&t.msg, self.max_message_bytes) {
                Ok(bytes) => bytes,
                Err(error) => {
                    self.wire.undeliverable += 1;
                    tracing::warn!(%error, "SWIM message over the size bound");
                    continue;
                }
            };
            if addrs.is_empty() && !self.inner.is_connected(&t.to) {
                self.wire.undeliverable += 1;
                continue;
            }
            if !self.inner.is_connected(&t.to) {
                self.wire.sent_unconnected += 1;
            }
            self.inner.send_request_with_addresses(&t.to, bytes, addrs);
            self.wire.sent += 1;
            sent = true;
        }
        sent
    }
}

impl NetworkBehaviour for Behaviour {
    type ConnectionHandler = THandler<rr::Behaviour<Codec>>;
    type ToSwarm = Event<PeerId>;

    fn handle_pending_inbound_connection(
        &mut self,
        id: ConnectionId,
        local: &Multiaddr,
        remote: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        self.inner
            .handle_pending_inbound_connection(id, local, remote)
    }

    fn handle_established_inbound_connection(
        &mut self,
        id: ConnectionId,
        peer: PeerId,
        local: &Multiaddr,
        remote: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.inner
            .handle_established_inbound_connection(id, peer, local, remote)
    }

    fn handle_pending_outbound_connection(
        &mut self,
        id: ConnectionId,
        peer: Option<PeerId>,
        addresses: &[Multiaddr],
        role: Endpoint,
    ) -> Result<Vec<Multiaddr>, ConnectionDenied> {
        let mut addrs = self
            .inner
            .handle_pending_outbound_connection(id, peer, addresses, role)?;
        if let Some(peer) = peer {
            addrs.extend(self.addresses_of(&peer));
        }
        Ok(addrs)
    }

    fn handle_established_outbound_connection(
        &mut self,
        id: ConnectionId,
        peer: PeerId,
        addr: &Multiaddr,
        role: Endpoint,
        port_use: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.inner
            .handle_established_outbound_connection(id, peer, addr, role, port_use)
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        match &event {
            FromSwarm::NewListenAddr(e) if !self.listen_addrs.contains(e.addr) => {
                self.listen_addrs.push(e.addr.clone());
                self.update_local_addrs();
            }
            FromSwarm::ExpiredListenAddr(e) => {
                self.listen_addrs.retain(|a| a != e.addr);
                self.update_local_addrs();
            }
            FromSwarm::ExternalAddrConfirmed(e) if !self.external_addrs.contains(e.addr) => {
                self.external_addrs.push(e.addr.clone());
                self.update_local_addrs();
            }
            FromSwarm::ExternalAddrExpired(e) => {
                self.external_addrs.retain(|a| a != e.addr);
                self.update_local_addrs();
            }
            _ => {}
        }
        self.inner.on_swarm_event(event);
    }

    fn on_connection_handler_event(
        &mut self,
        peer: PeerId,
        id: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        self.inner.on_connection_handler_event(peer, id, event);
    }

    fn poll(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<ToSwarm<Event<PeerId>, THandlerInEvent<Self>>> {
        let now = Instant::now();
        loop {
            if let Some(event) = self.events.pop_front() {
                return Poll::Ready(ToSwarm::GenerateEvent(event));
            }
            match self.inner.poll(cx) {
                Poll::Ready(ToSwarm::GenerateEvent(e)) => {
                    self.on_inner_event(now, e);
                    continue;
                }
                Poll::Ready(other) => {
                    // Invariant: GenerateEvent was handled by the arm above.
                    return Poll::Ready(other.map_out(|_| unreachable!("handled above")));
                }
                Poll::Pending => {}
            }
            if self.core.poll_timeout().is_some_and(|t| t <= now) {
                self.core.handle_timeout(now);
            }
            let sent = self.send_transmits();
            while let Some(e) = self.core.poll_event() {
                self.events.push_back(e);
            }
            if sent || !self.events.is_empty() {
                continue;
            }
            crate::state::shrink_drained(&mut self.events);
            let Some(deadline) = self.core.poll_timeout() else {
                self.timer = None;
                return Poll::Pending;
            };
            if self.timer.as_ref().is_none_or(|(at, _)| *at != deadline) {
                let delay = Delay::new(deadline.saturating_duration_since(now));
                self.timer = Some((deadline, delay));
            }
            if let Some((_, delay)) = self.timer.as_mut()
                && delay.poll_unpin(cx).is_ready()
            {
                self.timer = None;
                // The deadline passed while we were polling: handle it with a fresh clock.
                self.core.handle_timeout(Instant::now().max(deadline));
                continue;
            }
            return Poll::Pending;
        }
    }
}
