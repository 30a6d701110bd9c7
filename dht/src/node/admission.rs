//! Admitting members: peers verified by the gate on a connection, and members learned through
//! gossip, whose proofs are asked of the member that named them ([`crate::relay`]).
//!
//! A member named in gossip is not dialed: its proof is fetched from the admitted member whose
//! message named it, in batches sent when the swarm has nothing else ready, and checked here. A
//! proof the relayer does not hold falls back to dialing the member so the gate checks it
//! directly; a failed request (a relayer too busy to answer in time) is sent again a little later,
//! and its members are dialed only after a few failures; a rate-limited check is retried a little
//! later.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use libp2p::kad;
use libp2p::request_response::{self as rr, OutboundRequestId, ResponseChannel};
use libp2p::{Multiaddr, PeerId};
use shoal_pow::{IdentityProof, ProofError};
use shoal_swim::State;

use super::event_loop::EventLoop;
use crate::behaviour::Exchange;
use crate::lockstep::protocol::{Request, Response};
use crate::{relay, replica};

/// Members whose proofs are awaited, at most; news of more is dropped (gossip names them again).
const MAX_WANTED: usize = 8192;

/// Swarm events handled at most before queued proof requests are sent anyway.
const FLUSH_EVERY: usize = 64;

/// How long a rate-limited check waits before the proof is asked for again.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// Proof requests about one member that may fail (time out, lose their connection) before the
/// member is dialed instead. A relayer too busy to answer in time is asked again a little
/// later: dialing the members of a 64-peer batch is the dearest answer to a busy network.
const RELAY_ATTEMPTS: u8 = 3;

/// How long a member whose proof request failed waits before it is asked for again.
const RELAY_RETRY_AFTER: Duration = Duration::from_secs(2);

/// Requests held per connected peer whose identity check is under way, at most.
const MAX_HELD_PER_PEER: usize = 16;

/// Peers with held requests, at most.
const MAX_HELD_PEERS: usize = 256;

/// A request from a connected peer not verified yet: kad put its record before the gate's
/// exchange on the same new connection finished. Processed when the peer is verified, dropped
/// when it is refused or disconnects.
pub(super) enum Held {
    /// An inbound kad put (kad already acknowledged it).
    Put(Box<kad::Record>),
    /// A lockstep request and the channel to answer it on.
    Lockstep(Request, ResponseChannel<Response>),
    /// A replica put and the channel to answer it on.
    Replica(replica::Request, ResponseChannel<replica::Response>),
}

/// A member learned through gossip, waiting for its proof.
struct Wanted {
    addrs: Vec<Multiaddr>,
    /// The admitted member whose message named it: asked for the proof.
    from: PeerId,
    /// When to ask again (after a rate-limited check or a failed request); `None` while asked
    /// or queued.
    retry_at: Option<Instant>,
    /// Proof requests about it that failed so far.
    failed_requests: u8,
}

/// The admission state kept by the event loop.
#[derive(Default)]
pub(super) struct Admission {
    wanted: HashMap<PeerId, Wanted>,
    /// Peers to ask each relayer about, sent by [`EventLoop::flush_relay_requests`].
    batches: HashMap<PeerId, Vec<PeerId>>,
    requests: HashMap<OutboundRequestId, Vec<PeerId>>,
    held: HashMap<PeerId, Vec<Held>>,
    events_since_flush: usize,
}

impl Admission {
    /// Whether requests wait to be sent.
    pub(super) fn has_batches(&self) -> bool {
        !self.batches.is_empty()
    }
}

impl EventLoop {
    /// A peer showed a valid proof (to the gate, or relayed): it enters the membership and, if
    /// SWIM holds it alive, the routing table.
    pub(super) fn admit_verified(&mut self, peer: PeerId, proof: IdentityProof) {
        if self.verified.insert(peer, proof).is_none() {
            self.stats.verified += 1;
        }
        self.departed.remove(&peer);
        let addrs = self
            .admission
            .wanted
            .remove(&peer)
            .map(|w| w.addrs)
            .unwrap_or_default();
        self.swarm.behaviour_mut().swim.admit(peer);
        self.route(peer, &addrs);
        for request in self.admission.held.remove(&peer).unwrap_or_default() {
            match request {
                Held::Put(record) => self.on_inbound_put(peer, *record),
                Held::Lockstep(request, channel) => {
                    self.on_lockstep_request(peer, request, channel);
                }
                Held::Replica(request, channel) => {
                    self.on_replica_request(peer, request, channel);
                }
            }
        }
    }

    /// Holds `request` from `peer`, not verified, until the gate's check on its connection ends.
    /// Gives it back if the peer is not connected (no check can be under way) or the bounds
    /// are reached.
    pub(super) fn hold(&mut self, peer: PeerId, request: Held) -> Result<(), Held> {
        if !self.swarm.is_connected(&peer) {
            return Err(request);
        }
        let held = &mut self.admission.held;
        if !held.contains_key(&peer) && held.len() >= MAX_HELD_PEERS {
            return Err(request);
        }
        let queue = held.entry(peer).or_default();
        if queue.len() >= MAX_HELD_PER_PEER {
            return Err(request);
        }
        queue.push(request);
        Ok(())
    }

    /// Answers a lockstep request from a peer that is not verified with a refusal.
    pub(super) fn refuse_unverified(&mut self, channel: ResponseChannel<Response>) {
        let refusal = Response::Refused("identity not verified".into());
        // The peer may have gone; then there is nobody to answer.
        let _ = self
            .swarm
            .behaviour_mut()
            .lockstep
            .send_response(channel, refusal);
    }

    /// Drops what `peer` sent while unverified: it was refused, or its last connection closed.
    pub(super) fn drop_held(&mut self, peer: &PeerId) {
        for request in self.admission.held.remove(peer).unwrap_or_default() {
            match request {
                Held::Put(_) => self.stats.count_refused_put(*peer),
                Held::Lockstep(_, channel) => self.refuse_unverified(channel),
                Held::Replica(_, channel) => {
                    self.stats.count_refused_put(*peer);
                    self.answer_replica(
                        channel,
                        replica::Response::refused("identity not verified"),
                    );
                }
            }
        }
    }

    /// SWIM named `peer`, not admitted yet, in a message from `from`.
    pub(super) fn on_discovered(
        &mut self,
        peer: PeerId,
        addrs: Vec<Multiaddr>,
        state: State,
        from: PeerId,
    ) {
        if !matches!(state, State::Alive | State::Suspect) {
            // News of a departure: nothing to admit. Forget it so that news of its return is
            // reported again.
            self.swarm.behaviour_mut().swim.revoke(&peer);
            return;
        }
        if !self.can_reach(&addrs) {
            // A member this node cannot dial (an onion address seen from a TCP-only node, an IP
            // address from a Tor-only one) would only ever be suspected here: it stays out, as
            // it would if the gate had to meet it on a connection. A "both" node bridges them.
            self.swarm.behaviour_mut().swim.revoke(&peer);
            return;
        }
        if let Some(proof) = self.verified.get(&peer).copied() {
            return self.admit_verified(peer, proof);
        }
        if let Some(proof) = self.departed.get(&peer) {
            self.stats.readmitted_departed += 1;
            return self.admit_verified(peer, proof);
        }
        let a = &mut self.admission;
        if a.wanted.contains_key(&peer) {
            return;
        }
        if a.wanted.len() >= MAX_WANTED {
            self.swarm.behaviour_mut().swim.revoke(&peer);
            return;
        }
        a.wanted.insert(
            peer,
            Wanted {
                addrs,
                from,
                retry_at: None,
                failed_requests: 0,
            },
        );
        let batch = a.batches.entry(from).or_default();
        batch.push(peer);
        // A full batch goes out at once: on a busy node the swarm always has an event ready,
        // and the loop's idle-time flush would wait.
        if batch.len() >= relay::MAX_PEERS {
            let peers = std::mem::take(batch);
            a.batches.remove(&from);
            self.send_relay_request(from, peers);
        }
    }

    fn send_relay_request(&mut self, from: PeerId, peers: Vec<PeerId>) {
        self.stats.relay_requests += 1;
        if !self.swarm.is_connected(&from) {
            self.stats.relay_requests_unconnected += 1;
        }
        let request = relay::request(&peers);
        let id = self
            .swarm
            .behaviour_mut()
            .relay
            .send_request(&from, request);
        self.admission.requests.insert(id, peers);
    }

    /// Whether one of `addrs` is of a kind this node listens on (onion, IP or DNS, memory), and
    /// so of a kind its transport dials. A node not listening yet reaches everything.
    fn can_reach(&self, addrs: &[Multiaddr]) -> bool {
        let ours: Vec<AddressKind> = self.swarm.listeners().filter_map(address_kind).collect();
        ours.is_empty()
            || addrs
                .iter()
                .filter_map(address_kind)
                .any(|kind| ours.contains(&kind))
    }

    /// Sends the queued proof requests, [`relay::MAX_PEERS`] peers per request.
    pub(super) fn flush_relay_requests(&mut self) {
        self.admission.events_since_flush = 0;
        for (from, peers) in std::mem::take(&mut self.admission.batches) {
            for chunk in peers.chunks(relay::MAX_PEERS) {
                self.send_relay_request(from, chunk.to_vec());
            }
        }
    }

    /// Counts one event handled; flushes the queued requests every [`FLUSH_EVERY`] events, so a
    /// node whose swarm is never idle still sends them.
    pub(super) fn count_event(&mut self) {
        self.admission.events_since_flush += 1;
        if self.admission.events_since_flush >= FLUSH_EVERY && self.admission.has_batches() {
            self.flush_relay_requests();
        }
    }

    /// Asks again for the proofs whose check was rate-limited or whose request failed. Also
    /// gives back the memory of drained bursts (a joining node wants a proof for every member).
    pub(super) fn retry_wanted(&mut self) {
        let now = Instant::now();
        let a = &mut self.admission;
        shrink_sparse(&mut a.wanted);
        shrink_sparse(&mut a.requests);
        shrink_sparse(&mut a.held);
        for (peer, w) in &mut a.wanted {
            if w.retry_at.is_some_and(|at| at <= now) {
                w.retry_at = None;
                a.batches.entry(w.from).or_default().push(*peer);
            }
        }
    }

    pub(super) fn on_relay(&mut self, event: rr::Event<relay::Request, relay::Response>) {
        match Exchange::of(event) {
            Some(Exchange::Request {
                peer,
                request,
                channel,
            }) => {
                // Only admitted members are answered: anyone else gets an empty list.
                let response = if self.verified.contains_key(&peer) {
                    relay::answer(request, |p| {
                        self.verified
                            .get(p)
                            .copied()
                            .or_else(|| self.departed.get(p))
                    })
                } else {
                    relay::Response(Vec::new())
                };
                // The peer may have gone; then there is nobody to answer.
                let _ = self
                    .swarm
                    .behaviour_mut()
                    .relay
                    .send_response(channel, response);
            }
            Some(Exchange::Outcome {
                peer,
                request_id,
                response: Some(response),
            }) => {
                let asked = self
                    .admission
                    .requests
                    .remove(&request_id)
                    .unwrap_or_default();
                let asked_set: HashSet<PeerId> = asked.iter().copied().collect();
                let mut answered = HashSet::new();
                for (member, bytes) in relay::proofs_from(response, &asked_set) {
                    answered.insert(member);
                    self.check_relayed(peer, member, &bytes);
                }
                self.fall_back_to_dialing(asked.into_iter().filter(|p| !answered.contains(p)));
            }
            Some(Exchange::Outcome {
                request_id,
                response: None,
                ..
            }) => {
                let asked = self
                    .admission
                    .requests
                    .remove(&request_id)
                    .unwrap_or_default();
                self.relay_request_failed(asked);
            }
            None => {}
        }
    }

    /// Checks the proof `relayer` sent for `member`.
    fn check_relayed(&mut self, relayer: PeerId, member: PeerId, bytes: &[u8]) {
        let now = Instant::now();
        let b = self.swarm.behaviour_mut();
        match b.gate.check_relayed(now, &member, bytes) {
            Ok((proof, _)) => {
                if !self.verified.contains_key(&member) {
                    self.stats.verified_by_relay += 1;
                }
                self.admit_verified(member, proof);
            }
            Err(ProofError::RateLimited) => {
                if let Some(w) = self.admission.wanted.get_mut(&member) {
                    w.retry_at = Some(now + RETRY_AFTER);
                }
            }
            Err(error) => {
                // A relayer passes on only proofs it checked itself: this one did not.
                tracing::info!(%relayer, %member, %error, "relayed identity proof refused");
                self.stats.refused_relayed += 1;
                self.admission.wanted.remove(&member);
                b.swim.revoke(&member);
            }
        }
    }

    /// A proof request about `asked` failed: each is asked again later, or dialed once
    /// [`RELAY_ATTEMPTS`] requests about it failed.
    fn relay_request_failed(&mut self, asked: Vec<PeerId>) {
        self.stats.relay_request_failures += 1;
        let retry_at = Instant::now() + RELAY_RETRY_AFTER;
        let mut give_up = Vec::new();
        for member in asked {
            let Some(w) = self.admission.wanted.get_mut(&member) else {
                continue;
            };
            w.failed_requests = w.failed_requests.saturating_add(1);
            if w.failed_requests >= RELAY_ATTEMPTS {
                give_up.push(member);
            } else {
                w.retry_at = Some(retry_at);
            }
        }
        self.fall_back_to_dialing(give_up.into_iter());
    }

    /// The relayer held no proof for these members (or could not be asked): dial them, so the
    /// gate checks them on a connection of their own.
    fn fall_back_to_dialing(&mut self, members: impl Iterator<Item = PeerId>) {
        for member in members {
            if let Some(w) = self.admission.wanted.remove(&member) {
                self.stats.relay_fallback_dials += 1;
                self.dial(member, w.addrs);
            }
        }
    }

    /// Forgets `peer` (it failed, left, or was refused): its proof is no longer relayed.
    pub(super) fn forget(&mut self, peer: &PeerId) {
        self.verified.remove(peer);
        self.departed.remove(peer);
        self.admission.wanted.remove(peer);
        self.drop_held(peer);
    }
}

/// Shrinks a map holding a quarter of its capacity or less (amortised, as in SWIM's core).
pub(super) fn shrink_sparse<K: Eq + std::hash::Hash, V>(map: &mut HashMap<K, V>) {
    if map.capacity() > 64 && map.len() * 4 <= map.capacity() {
        map.shrink_to_fit();
    }
}

/// The kinds of address a transport dials, told apart by an address's first protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AddressKind {
    Ip,
    Onion,
    Memory,
}

fn address_kind(addr: &Multiaddr) -> Option<AddressKind> {
    use libp2p::multiaddr::Protocol;
    match addr.iter().next()? {
        Protocol::Ip4(_)
        | Protocol::Ip6(_)
        | Protocol::Dns(_)
        | Protocol::Dns4(_)
        | Protocol::Dns6(_)
        | Protocol::Dnsaddr(_) => Some(AddressKind::Ip),
        Protocol::Onion3(_) | Protocol::Onion(..) => Some(AddressKind::Onion),
        Protocol::Memory(_) => Some(AddressKind::Memory),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_kinds() {
        let kind = |a: &str| address_kind(&a.parse().unwrap());
        assert_eq!(kind("/ip4/127.0.0.1/tcp/4001"), Some(AddressKind::Ip));
        assert_eq!(kind("/dns4/example.org/tcp/4001"), Some(AddressKind::Ip));
        assert_eq!(
            kind("/onion3/vww6ybal4bd7szmgncyruucpgfkqahzddi37ktceo3ah7ngmcopnpyyd:4001"),
            Some(AddressKind::Onion)
        );
        assert_eq!(kind("/memory/7"), Some(AddressKind::Memory));
    }
}
