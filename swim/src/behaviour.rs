//! `swim::Behaviour`: the SWIM core driven by a libp2p swarm.
//!
//! Each transmit of the core becomes one request on `/shoal/swim/1`, sent to the member's
//! addresses (request-response dials if no connection is open); each inbound request is decoded
//! with the size bound and handed to the core as a message from the connection's authenticated
//! peer. The behaviour reads the clock once per `poll`, keeps one timer set to the core's
//! `poll_timeout`, and keeps the core's own addresses in step with the swarm's listen and
//! external addresses.
//!
//! With [`Behaviour::require_admission`], only admitted peers take part: messages from other
//! peers do not reach the core (counted in [`WireStats::unadmitted`]; the last few per peer are
//! held and replayed if it is admitted), and membership updates about members not admitted are
//! cut from gossip and push-pull before the core sees them; each such member is reported once as
//! [`Event::Discovered`] so the embedding node can verify it and call [`Behaviour::admit`], which
//! hands the core the latest update cut about it.

use std::collections::{HashMap, HashSet, VecDeque};
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
use crate::error::{CommandError, ConfigError};
use crate::message::{self, Address, Message, Payload, State, Update};
use crate::protocol::{Codec, PROTOCOL};
use crate::state::{self, CommandId, Member, Membership, Stats};

/// A membership change or a command's answer, with addresses as multiaddrs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A member became alive for the first time, or came back with a newer incarnation.
    Joined {
        /// The member.
        peer: PeerId,
        /// Its addresses.
        addrs: Vec<Multiaddr>,
        /// Its incarnation.
        incarnation: u64,
    },
    /// A member missed a probe and is suspected.
    Suspected {
        /// The member.
        peer: PeerId,
        /// Its addresses.
        addrs: Vec<Multiaddr>,
        /// The incarnation suspected.
        incarnation: u64,
        /// Whose probe failed.
        by: PeerId,
    },
    /// A member was declared dead.
    Failed {
        /// The member.
        peer: PeerId,
        /// Its addresses.
        addrs: Vec<Multiaddr>,
        /// The incarnation declared dead.
        incarnation: u64,
    },
    /// A member left gracefully.
    Left {
        /// The member.
        peer: PeerId,
        /// Its addresses.
        addrs: Vec<Multiaddr>,
        /// Its last incarnation.
        incarnation: u64,
    },
    /// A suspected member refuted with a newer incarnation.
    Refuted {
        /// The member.
        peer: PeerId,
        /// Its addresses.
        addrs: Vec<Multiaddr>,
        /// Its new incarnation.
        incarnation: u64,
    },
    /// Answer to [`Behaviour::join`].
    JoinFinished {
        /// The command answered.
        id: CommandId,
        /// Live members known once a seed answered, or why the join failed.
        result: Result<usize, CommandError>,
    },
    /// Answer to [`Behaviour::leave`].
    LeaveFinished {
        /// The command answered.
        id: CommandId,
        /// Outcome.
        result: Result<(), CommandError>,
    },
    /// Only with admission required: a member not admitted was named in gossip or a push-pull.
    /// The updates about it were dropped; admit it to let later ones through. Reported once per
    /// peer (up to a bound of remembered peers) until it is admitted or revoked.
    Discovered {
        /// The member.
        peer: PeerId,
        /// The addresses the update gave.
        addrs: Vec<Multiaddr>,
        /// The state the update gave it.
        state: State,
        /// The admitted member whose message named it.
        from: PeerId,
    },
}

/// Addresses as multiaddrs; bytes that are not a multiaddr are skipped.
pub fn to_multiaddrs(addrs: &[Address]) -> Vec<Multiaddr> {
    addrs
        .iter()
        .filter_map(|a| Multiaddr::try_from(a.0.clone()).ok())
        .collect()
}

impl From<state::Event<PeerId>> for Event {
    fn from(e: state::Event<PeerId>) -> Self {
        use state::Event as E;
        match e {
            E::Joined {
                member,
                addrs,
                incarnation,
            } => Self::Joined {
                peer: member,
                addrs: to_multiaddrs(&addrs),
                incarnation,
            },
            E::Suspected {
                member,
                addrs,
                incarnation,
                by,
            } => Self::Suspected {
                peer: member,
                addrs: to_multiaddrs(&addrs),
                incarnation,
                by,
            },
            E::Failed {
                member,
                addrs,
                incarnation,
            } => Self::Failed {
                peer: member,
                addrs: to_multiaddrs(&addrs),
                incarnation,
            },
            E::Left {
                member,
                addrs,
                incarnation,
            } => Self::Left {
                peer: member,
                addrs: to_multiaddrs(&addrs),
                incarnation,
            },
            E::Refuted {
                member,
                addrs,
                incarnation,
            } => Self::Refuted {
                peer: member,
                addrs: to_multiaddrs(&addrs),
                incarnation,
            },
            E::JoinFinished { id, result } => Self::JoinFinished { id, result },
            E::LeaveFinished { id, result } => Self::LeaveFinished { id, result },
        }
    }
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
    /// Inbound messages kept from the core because their sender is not admitted (the last few
    /// per sender are held for replay on admission).
    pub unadmitted: u64,
    /// Membership updates about members not admitted, cut from inbound messages.
    pub updates_dropped: u64,
    /// Of those, updates about members the core holds as dead or gone that were no newer
    /// than what it holds: cut without an [`Event::Discovered`].
    pub stale_updates: u64,
}

/// Peers reported as [`Event::Discovered`] and remembered so they are reported once, at most
/// this many.
const MAX_DISCOVERED: usize = 16_384;

/// Messages from peers not yet admitted held for replay on admission, per peer.
const MAX_HELD_MESSAGES: usize = 4;

/// Peers not yet admitted whose messages are held, at most this many.
const MAX_HELD_PEERS: usize = 256;

/// The admission set: who may talk to the core and be named to it.
#[derive(Debug, Default)]
struct Admission {
    admitted: HashSet<PeerId>,
    /// Members reported as discovered, with the sender and the latest update cut about them, to
    /// hand to the core on admission (gossip is not repeated forever).
    reported: HashMap<PeerId, (PeerId, Update<PeerId>)>,
    /// Messages from senders not admitted yet, replayed on admission: a peer that verified us
    /// first may probe us before we verified it.
    held: HashMap<PeerId, Vec<Message<PeerId>>>,
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
    events: VecDeque<Event>,
    wire: WireStats,
    admission: Option<Admission>,
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
            admission: None,
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

    /// From now on only admitted peers take part (see the module docs). Off by default: every
    /// peer is admitted.
    pub fn require_admission(&mut self) {
        self.admission.get_or_insert_with(Admission::default);
    }

    /// Admits `peer`: its messages and updates about it reach the core. A no-op unless
    /// admission is required.
    pub fn admit(&mut self, peer: PeerId) {
        let Some(a) = self.admission.as_mut() else {
            return;
        };
        if !a.admitted.insert(peer) {
            return;
        }
        let update = a.reported.remove(&peer);
        let held = a.held.remove(&peer).unwrap_or_default();
        crate::state::shrink_sparse(&mut a.reported);
        crate::state::shrink_sparse(&mut a.held);
        let now = Instant::now();
        if let Some((from, update)) = update
            && self.is_admitted(&from)
        {
            let msg = Message {
                payload: Payload::Gossip,
                gossip: vec![update],
            };
            self.core.handle_message(now, from, msg);
        }
        for mut msg in held {
            self.filter_updates(peer, &mut msg);
            self.core.handle_message(now, peer, msg);
        }
    }

    /// Revokes `peer`'s admission: its messages and updates about it are dropped again, and the
    /// next update naming it reports it as discovered again. A no-op unless admission is
    /// required.
    pub fn revoke(&mut self, peer: &PeerId) {
        if let Some(a) = self.admission.as_mut() {
            a.admitted.remove(peer);
            a.reported.remove(peer);
            a.held.remove(peer);
        }
    }

    /// Whether `peer` is admitted (always true when admission is not required).
    pub fn is_admitted(&self, peer: &PeerId) -> bool {
        self.admission
            .as_ref()
            .is_none_or(|a| a.admitted.contains(peer))
    }

    /// Cuts updates about members not admitted from `msg`, reporting each new one. Updates about
    /// ourselves always pass (we must see suspicions of us to refute them). An update about a
    /// member the core holds as dead or gone, no newer than what it holds (a stale "alive" or
    /// "suspect" still travelling after the death), is cut without a report: the core would
    /// ignore it, and a report would have the node verify a member that is gone.
    fn filter_updates(&mut self, from: PeerId, msg: &mut Message<PeerId>) {
        let local = *self.core.local_id();
        let Some(admission) = self.admission.as_mut() else {
            return;
        };
        let core = &self.core;
        let mut dropped = 0u64;
        let mut stale = 0u64;
        let mut keep = |u: &Update<PeerId>| {
            if u.member == local || admission.admitted.contains(&u.member) {
                return true;
            }
            dropped += 1;
            if core.member(&u.member).is_some_and(|m| {
                matches!(m.state, State::Dead | State::Left)
                    && (u.incarnation, u.state) <= (m.incarnation, m.state)
            }) {
                stale += 1;
                return false;
            }
            if let Some(held) = admission.reported.get_mut(&u.member) {
                // Keep the newest news for replay on admission.
                if (u.incarnation, u.state) >= (held.1.incarnation, held.1.state) {
                    *held = (from, u.clone());
                }
            } else if admission.reported.len() < MAX_DISCOVERED {
                admission.reported.insert(u.member, (from, u.clone()));
                self.events.push_back(Event::Discovered {
                    peer: u.member,
                    addrs: to_multiaddrs(&u.addrs),
                    state: u.state,
                    from,
                });
            }
            false
        };
        msg.gossip.retain(&mut keep);
        if let Payload::PushPull { members, .. } = &mut msg.payload {
            members.retain(&mut keep);
        }
        self.wire.updates_dropped += dropped;
        self.wire.stale_updates += stale;
    }

    /// Leaves gracefully; [`Event::LeaveFinished`] reports when the departure was gossiped.
    pub fn leave(&mut self) -> CommandId {
        self.core.leave(Instant::now())
    }

    /// Every member known, with its state.
    pub fn members(&self) -> impl Iterator<Item = (&PeerId, &Member)> {
        self.core.members()
    }

    /// The member `peer`, if known.
    pub fn member(&self, peer: &PeerId) -> Option<&Member> {
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
                let admitted = self.is_admitted(&peer);
                match message::decode::<PeerId>(&request, self.max_message_bytes) {
                    Ok(msg) if !admitted => {
                        self.wire.unadmitted += 1;
                        tracing::trace!(%peer, "SWIM message from a peer not admitted held");
                        if let Some(a) = self.admission.as_mut()
                            && (a.held.len() < MAX_HELD_PEERS || a.held.contains_key(&peer))
                        {
                            let held = a.held.entry(peer).or_default();
                            if held.len() == MAX_HELD_MESSAGES {
                                held.remove(0);
                            }
                            held.push(msg);
                        }
                    }
                    Ok(mut msg) => {
                        self.wire.received += 1;
                        self.filter_updates(peer, &mut msg);
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
    type ToSwarm = Event;

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

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<ToSwarm<Event, THandlerInEvent<Self>>> {
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
                self.events.push_back(e.into());
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

#[cfg(test)]
mod tests {
    use super::*;

    fn update(member: PeerId, incarnation: u64, state: State, by: PeerId) -> Update<PeerId> {
        Update {
            member,
            incarnation,
            state,
            addrs: Vec::new(),
            by: matches!(state, State::Suspect | State::Dead).then_some(by),
        }
    }

    fn gossip(updates: Vec<Update<PeerId>>) -> Message<PeerId> {
        Message {
            payload: Payload::Gossip,
            gossip: updates,
        }
    }

    fn discovered(b: &mut Behaviour) -> Vec<(PeerId, State)> {
        b.events
            .drain(..)
            .filter_map(|e| match e {
                Event::Discovered { peer, state, .. } => Some((peer, state)),
                _ => None,
            })
            .collect()
    }

    /// After a member died and was revoked, stale news of it alive or suspected is cut without
    /// a report; news newer than its death (a refutation) is reported.
    #[test]
    fn stale_news_of_a_dead_member_is_not_reported() {
        let (me, relayer, gone) = (PeerId::random(), PeerId::random(), PeerId::random());
        let mut b = Behaviour::new(me, 1, Config::lan()).expect("the LAN preset is valid");
        b.require_admission();
        b.admit(relayer);
        b.admit(gone);
        let now = Instant::now();
        b.core.handle_message(
            now,
            relayer,
            gossip(vec![update(gone, 3, State::Alive, relayer)]),
        );
        b.core.handle_message(
            now,
            relayer,
            gossip(vec![update(gone, 3, State::Dead, relayer)]),
        );
        assert_eq!(b.core.member(&gone).map(|m| m.state), Some(State::Dead));
        b.revoke(&gone);
        b.events.clear();

        for stale in [State::Alive, State::Suspect, State::Dead] {
            let mut msg = gossip(vec![update(gone, 3, stale, relayer)]);
            b.filter_updates(relayer, &mut msg);
            assert!(
                msg.gossip.is_empty(),
                "news of a member not admitted is cut"
            );
        }
        let mut older = gossip(vec![update(gone, 2, State::Alive, relayer)]);
        b.filter_updates(relayer, &mut older);
        assert_eq!(discovered(&mut b), Vec::new());
        assert_eq!(b.wire.stale_updates, 4);

        let mut refuted = gossip(vec![update(gone, 4, State::Alive, relayer)]);
        b.filter_updates(relayer, &mut refuted);
        assert_eq!(discovered(&mut b), vec![(gone, State::Alive)]);
        assert_eq!(b.wire.stale_updates, 4);
    }
}
