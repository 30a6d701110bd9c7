//! The event loop's side of NAT traversal: it hands [`Nat`] what AutoNAT, UPnP, identify, the
//! relay client and DCUtR report, and turns [`Nat`]'s reservations into listeners on
//! `/p2p-circuit` addresses. Off ([`crate::nat::NatConfig::auto`] false, or a transport without
//! relays), it does nothing.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use libp2p::core::transport::ListenerId;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{ConnectionId, Swarm};
use libp2p::{Multiaddr, PeerId, autonat, dcutr, relay, upnp};

use crate::api::NatReport;
use crate::behaviour::{Behaviour, Event};
use crate::nat::{Nat, NatAction, NatConfig};

/// NAT traversal's state in the event loop.
#[derive(Debug)]
pub(crate) struct Traversal {
    on: bool,
    nat: Nat,
    /// The circuit listener of each reservation.
    listeners: HashMap<ListenerId, PeerId>,
    /// Open connections that go through a relay.
    relayed: HashSet<ConnectionId>,
    /// Dials of a hole punch retry not yet connected or failed, and their peers.
    repunches: HashMap<ConnectionId, PeerId>,
    /// The address a UPnP gateway maps to this node's listen port, while it does.
    upnp_mapped: Option<Multiaddr>,
}

impl Traversal {
    pub(crate) fn new(config: &NatConfig, on: bool) -> Self {
        Self {
            on,
            nat: Nat::new(config),
            listeners: HashMap::new(),
            relayed: HashSet::new(),
            repunches: HashMap::new(),
            upnp_mapped: None,
        }
    }

    /// When [`Traversal::drive`] has something to do without new input.
    pub(crate) fn next_due(&self) -> Option<Instant> {
        self.on.then(|| self.nat.next_due()).flatten()
    }

    /// Asks for and releases reservations as [`Nat`] decides; `addrs_of` gives a live member's
    /// addresses.
    pub(crate) fn drive(
        &mut self,
        now: Instant,
        swarm: &mut Swarm<Behaviour>,
        addrs_of: impl Fn(&PeerId) -> Vec<Multiaddr>,
    ) {
        if !self.on {
            return;
        }
        while let Some(action) = self.nat.poll(now, &addrs_of) {
            match action {
                NatAction::Reserve { relay, addr } => match swarm.listen_on(addr.clone()) {
                    Ok(id) => {
                        tracing::info!(%relay, %addr, "asking a relay for a reservation");
                        self.listeners.insert(id, relay);
                    }
                    Err(error) => {
                        tracing::info!(%relay, %addr, %error, "cannot listen through a relay");
                        self.nat.on_ended(now, relay);
                    }
                },
                NatAction::Release { relay } => {
                    let ids: Vec<ListenerId> = self
                        .listeners
                        .iter()
                        .filter(|(_, r)| **r == relay)
                        .map(|(id, _)| *id)
                        .collect();
                    for id in ids {
                        self.listeners.remove(&id);
                        swarm.remove_listener(id);
                    }
                    tracing::info!(%relay, "relay released");
                }
                NatAction::Repunch { peer, addrs } => {
                    if self.any_direct(swarm.behaviour().swim.connections_of(&peer)) {
                        self.nat.on_direct(&peer);
                        continue;
                    }
                    // A new relayed connection: DCUtR punches once on each.
                    let opts = DialOpts::peer_id(peer)
                        .addresses(addrs.clone())
                        .condition(PeerCondition::Always)
                        .build();
                    let id = opts.connection_id();
                    match swarm.dial(opts) {
                        Ok(()) => {
                            tracing::info!(%peer, ?addrs, "retrying a hole punch");
                            self.repunches.insert(id, peer);
                        }
                        Err(error) => {
                            tracing::info!(%peer, ?addrs, %error, "cannot retry a hole punch");
                            self.nat.on_repunch_failed(now, peer);
                        }
                    }
                }
            }
        }
    }

    /// A behaviour's event that concerns NAT traversal; `false` if `event` is not one.
    pub(crate) fn on_event(&mut self, now: Instant, event: &Event) -> bool {
        match event {
            Event::Identify(e) => {
                if let libp2p::identify::Event::Received { peer_id, info, .. } = e.as_ref() {
                    let offers = info.protocols.contains(&relay::HOP_PROTOCOL_NAME);
                    self.nat.on_offer(*peer_id, offers);
                }
            }
            Event::RelayClient(relay::client::Event::ReservationReqAccepted {
                relay_peer_id,
                renewal,
                ..
            }) => {
                if !renewal {
                    tracing::info!(relay = %relay_peer_id, "reservation accepted");
                }
                self.nat.on_accepted(*relay_peer_id);
            }
            Event::RelayClient(e) => tracing::debug!(event = ?e, "relay client"),
            Event::Relay(e) => tracing::debug!(event = ?e, "relay service"),
            Event::Autonat(autonat::v2::client::Event {
                tested_addr,
                server,
                result,
                ..
            }) => {
                match result {
                    Ok(()) => tracing::info!(addr = %tested_addr, %server, "address reachable"),
                    Err(error) => {
                        tracing::info!(addr = %tested_addr, %server, %error, "address not reachable")
                    }
                }
                self.nat.on_probe(tested_addr, result.is_ok());
            }
            Event::AutonatServer(e) => {
                tracing::debug!(client = %e.client, addr = %e.tested_addr, "tested a peer's address")
            }
            Event::Dcutr(dcutr::Event {
                remote_peer_id,
                result,
            }) => match result {
                Ok(_) => {
                    tracing::info!(peer = %remote_peer_id, "direct connection through the NAT");
                    self.nat.on_punched(remote_peer_id);
                }
                Err(error) => {
                    tracing::info!(peer = %remote_peer_id, %error, "hole punch failed");
                    self.nat.on_punch_failed(now, *remote_peer_id);
                }
            },
            Event::Upnp(upnp::Event::NewExternalAddr {
                local_addr,
                external_addr,
            }) => {
                tracing::info!(local = %local_addr, external = %external_addr, "UPnP gateway mapped the listen port");
                self.upnp_mapped = Some(external_addr.clone());
            }
            Event::Upnp(upnp::Event::ExpiredExternalAddr {
                local_addr,
                external_addr,
            }) => {
                tracing::warn!(local = %local_addr, external = %external_addr, "UPnP gateway did not renew the mapping");
                if self.upnp_mapped.as_ref() == Some(external_addr) {
                    self.upnp_mapped = None;
                }
            }
            Event::Upnp(upnp::Event::GatewayNotFound) => {
                tracing::info!("no UPnP gateway found on the local network")
            }
            Event::Upnp(upnp::Event::NonRoutableGateway) => {
                tracing::info!("the UPnP gateway is itself behind a NAT: its mappings are not used")
            }
            _ => return false,
        }
        true
    }

    /// An external address was confirmed.
    pub(crate) fn on_confirmed(&mut self, addr: &Multiaddr) {
        self.nat.on_confirmed(addr);
    }

    /// An external address expired.
    pub(crate) fn on_expired(&mut self, addr: &Multiaddr) {
        self.nat.on_expired(addr);
    }

    /// A listener closed: if it held a reservation, the reservation ended, and the relay is
    /// returned.
    pub(crate) fn on_listener_closed(
        &mut self,
        now: Instant,
        id: ListenerId,
        reason: &str,
    ) -> Option<PeerId> {
        let relay = self.listeners.remove(&id)?;
        tracing::info!(%relay, %reason, "reservation ended");
        self.nat.on_ended(now, relay);
        Some(relay)
    }

    /// A connection to `peer` opened; `relayed` if it goes through a relay.
    pub(crate) fn on_connected(&mut self, peer: &PeerId, id: ConnectionId, relayed: bool) {
        self.repunches.remove(&id);
        if relayed {
            self.relayed.insert(id);
        } else {
            self.nat.on_direct(peer);
        }
    }

    /// A connection closed.
    pub(crate) fn on_closed(&mut self, id: ConnectionId) {
        self.relayed.remove(&id);
    }

    /// A dial failed: if it was a hole punch retry's, that try failed and the next is due later.
    pub(crate) fn on_dial_failed(
        &mut self,
        now: Instant,
        id: ConnectionId,
        error: &impl std::fmt::Display,
    ) {
        if let Some(peer) = self.repunches.remove(&id) {
            tracing::info!(%peer, %error, "no relayed connection for a hole punch retry");
            self.nat.on_repunch_failed(now, peer);
        }
    }

    /// Whether one of `connections` is direct.
    pub(crate) fn any_direct(&self, connections: &[ConnectionId]) -> bool {
        connections.iter().any(|c| !self.relayed.contains(c))
    }

    /// Hole punches with `peer` that failed since the last direct connection to it.
    pub(crate) fn punch_failures(&self, peer: &PeerId) -> u32 {
        self.nat.punch_failures(peer)
    }

    /// What `node_info` and metrics show.
    pub(crate) fn report(&self) -> NatReport {
        let s = self.nat.stats();
        NatReport {
            enabled: self.on,
            reachability: self.nat.reachability(),
            relays: self.nat.relays().copied().collect(),
            probes_confirmed: s.probes_confirmed,
            probes_failed: s.probes_failed,
            reservations_asked: s.reservations_asked,
            reservations_accepted: s.reservations_accepted,
            reservations_lost: s.reservations_lost,
            holes_punched: s.holes_punched,
            hole_punch_failures: s.hole_punch_failures,
            hole_punch_retries: s.punches_retried,
            upnp_mapped: self.upnp_mapped.clone(),
        }
    }
}
