//! NAT traversal for TCP nodes: what a node knows of its own reachability, and the circuit
//! relays it holds reservations at while it is private.
//!
//! libp2p's behaviours speak the protocols ([`crate::behaviour`]): AutoNAT v2 tests the
//! addresses identify observed, UPnP maps the listen port on a gateway that offers it, circuit
//! relay v2 reserves slots and carries circuits, DCUtR punches a hole once two nodes share a
//! relayed connection. [`Nat`] holds the rules between them, sans IO: the event loop tells it
//! what those behaviours report (with `now`), and carries out the reservations it asks for
//! ([`Nat::poll`]).
//!
//! - **Reachability.** Public once an address that is not a circuit is confirmed (by AutoNAT or
//!   UPnP); private once an AutoNAT test failed and none is; unknown before either.
//! - **Relays.** A private node keeps [`NatConfig::relays`] reservations at members that offer
//!   the relay protocol (a relay advertises it only while it has a confirmed public address).
//!   A reservation not accepted in time, refused, or lost with its relay makes room for another
//!   member, and that relay is not asked again for [`NatConfig::relay_backoff`]. A node that
//!   becomes public releases its reservations.
//! - **Hole punches.** DCUtR tries a relayed connection's upgrade a few times, once, when the
//!   connection opens. After it gave up with a peer, [`Nat`] asks for a new relayed connection
//!   to it after [`NatConfig::punch_retry`] (doubling for each failure, at most
//!   [`NatConfig::punch_retries`] times), so DCUtR tries again: a NAT's mapping or a firewall
//!   may have changed since. A direct connection to the peer ends the retries.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};

/// How a TCP node handles NATs ([`crate::Config::nat`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatConfig {
    /// Learn reachability with AutoNAT, reserve relays when private and punch holes with DCUtR.
    /// Off, the node assumes it is reachable at its listen addresses. Default off (the library's
    /// default; `shoal run` turns it on).
    pub auto: bool,
    /// Map the listen port on a UPnP gateway and advertise the mapped address (with
    /// [`auto`](Self::auto)). Default off.
    pub upnp: bool,
    /// Serve as a circuit relay for private nodes while this node is publicly reachable,
    /// within [`relay_limits`](Self::relay_limits). Default off.
    pub relay_service: bool,
    /// What a relay serves at most. Default [`RelayLimits::default`].
    pub relay_limits: RelayLimits,
    /// Reservations a private node keeps, 1 to [`MAX_RELAYS`]. Default 2.
    pub relays: usize,
    /// How long a reservation may wait for its relay's answer before another relay is tried.
    /// Default 10 s.
    pub reservation_timeout: Duration,
    /// How long a relay that refused, timed out or dropped a reservation is not asked again.
    /// Default 60 s.
    pub relay_backoff: Duration,
    /// How long after a failed hole punch with a peer a new relayed connection to it is
    /// opened, for another punch; doubled for each failure after the first. Default 60 s.
    pub punch_retry: Duration,
    /// Hole punches retried per peer at most, [`MAX_PUNCH_RETRIES`] at most. Default 3.
    pub punch_retries: u32,
}

impl Default for NatConfig {
    fn default() -> Self {
        Self {
            auto: false,
            upnp: false,
            relay_service: false,
            relay_limits: RelayLimits::default(),
            relays: 2,
            reservation_timeout: Duration::from_secs(10),
            relay_backoff: Duration::from_secs(60),
            punch_retry: Duration::from_secs(60),
            punch_retries: 3,
        }
    }
}

/// Reservations a private node keeps at most.
pub const MAX_RELAYS: usize = 8;

/// Members offering the relay protocol remembered at most.
pub const MAX_OFFERS: usize = 256;

/// Relays remembered as refusing at most (the oldest is forgotten first).
const MAX_BACKOFF: usize = 256;

/// Peers whose hole punch is to be retried, at most (one with no retry pending is dropped
/// first).
pub const MAX_PUNCHES: usize = 256;

/// [`NatConfig::punch_retry`] at most.
pub const MAX_PUNCH_RETRY: Duration = Duration::from_secs(3600);

/// Whether `retry` is a valid [`NatConfig::punch_retry`]: above zero, at most
/// [`MAX_PUNCH_RETRY`].
pub fn punch_retry_in_bounds(retry: Duration) -> bool {
    !retry.is_zero() && retry <= MAX_PUNCH_RETRY
}

/// [`NatConfig::punch_retries`] at most: beyond, the doubled delay exceeds a day.
pub const MAX_PUNCH_RETRIES: u32 = 10;

impl NatConfig {
    /// Checks the bounds; the error names the field.
    pub fn validate(&self) -> Result<(), &'static str> {
        if self.relays == 0 || self.relays > MAX_RELAYS {
            return Err("nat.relays must be 1 to 8");
        }
        if self.reservation_timeout.is_zero() {
            return Err("nat.reservation_timeout must be above zero");
        }
        if !punch_retry_in_bounds(self.punch_retry) {
            return Err("nat.punch_retry must be above zero and at most an hour");
        }
        if self.punch_retries > MAX_PUNCH_RETRIES {
            return Err("nat.punch_retries must be at most 10");
        }
        self.relay_limits.validate()
    }
}

/// What a node serving as a relay accepts at most: libp2p's circuit relay limits, with defaults
/// sized for SWIM's and the DHT's traffic over a circuit (libp2p's own, 2 minutes and 128 KiB a
/// circuit, would cut a relayed member's connection every few minutes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayLimits {
    /// Reservations held at once. Default 128.
    pub max_reservations: usize,
    /// Reservations of one peer. Default 4.
    pub max_reservations_per_peer: usize,
    /// Circuits open at once. Default 64.
    pub max_circuits: usize,
    /// Circuits of one peer (as source or destination). Default 8.
    pub max_circuits_per_peer: usize,
    /// How long one circuit lasts before the relay closes it. Default 30 minutes.
    pub max_circuit_duration: Duration,
    /// Bytes one circuit carries, both ways, before the relay closes it. Default 16 MiB.
    pub max_circuit_bytes: u64,
    /// How long a reservation lasts before the private node renews it. Default 1 hour.
    pub reservation_duration: Duration,
}

impl Default for RelayLimits {
    fn default() -> Self {
        Self {
            max_reservations: 128,
            max_reservations_per_peer: 4,
            max_circuits: 64,
            max_circuits_per_peer: 8,
            max_circuit_duration: Duration::from_secs(30 * 60),
            max_circuit_bytes: 16 << 20,
            reservation_duration: Duration::from_secs(3600),
        }
    }
}

impl RelayLimits {
    /// Checks the bounds (libp2p's protocol carries durations as 32-bit seconds).
    pub fn validate(&self) -> Result<(), &'static str> {
        if self.max_reservations == 0 || self.max_reservations_per_peer == 0 {
            return Err("relay reservations must be above zero");
        }
        if self.max_circuits == 0 || self.max_circuits_per_peer == 0 {
            return Err("relay circuits must be above zero");
        }
        let secs = |d: Duration| d.as_secs() > 0 && d.as_secs() <= u64::from(u32::MAX);
        if !secs(self.max_circuit_duration) || !secs(self.reservation_duration) {
            return Err("relay durations must be 1 s to 2^32 - 1 s");
        }
        if self.max_circuit_bytes == 0 {
            return Err("relay circuit bytes must be above zero");
        }
        Ok(())
    }

    /// libp2p's relay configuration with these limits.
    pub fn to_libp2p(&self) -> libp2p::relay::Config {
        libp2p::relay::Config {
            max_reservations: self.max_reservations,
            max_reservations_per_peer: self.max_reservations_per_peer,
            reservation_duration: self.reservation_duration,
            max_circuits: self.max_circuits,
            max_circuits_per_peer: self.max_circuits_per_peer,
            max_circuit_duration: self.max_circuit_duration,
            max_circuit_bytes: self.max_circuit_bytes,
            ..libp2p::relay::Config::default()
        }
    }
}

/// What a node knows of its own reachability.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Reachability {
    /// Not tested yet (or NAT traversal is off).
    #[default]
    Unknown,
    /// An address that is not a circuit was confirmed reachable from outside.
    Public,
    /// Tests of its addresses failed and none was confirmed: it is reached through relays.
    Private,
}

impl Reachability {
    /// The name used in `node_info` and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unknown => "unknown",
            Self::Public => "public",
            Self::Private => "private",
        }
    }
}

/// What [`Nat`] asks of the event loop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NatAction {
    /// Listen through `relay` (reached at `addr`): a reservation.
    Reserve {
        /// The relay.
        relay: PeerId,
        /// Its address, ending in `/p2p/<relay>/p2p-circuit`.
        addr: Multiaddr,
    },
    /// Stop listening through `relay`.
    Release {
        /// The relay.
        relay: PeerId,
    },
    /// Open a new connection to `peer` through a relay, at one of `addrs`, so DCUtR punches
    /// again; [`Nat::on_repunch_failed`] if no connection opens.
    Repunch {
        /// The peer.
        peer: PeerId,
        /// Its circuit addresses through relays that are live members (at least one).
        addrs: Vec<Multiaddr>,
    },
}

/// A peer whose hole punch failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Punch {
    /// Punches that failed.
    failures: u32,
    /// Tries that failed: the punches, and the retries that could not reach the peer through
    /// a relay to punch at all. Each doubles the wait for the next.
    tries: u32,
    /// When to retry; `None` while a retry is under way or after the last one.
    due: Option<Instant>,
}

/// A reservation's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    /// Asked for at this instant, not yet accepted.
    Pending(Instant),
    /// Accepted.
    Active,
}

/// Counters of NAT traversal, since start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NatStats {
    /// AutoNAT tests that confirmed an address.
    pub probes_confirmed: u64,
    /// AutoNAT tests that found an address unreachable.
    pub probes_failed: u64,
    /// Reservations asked for.
    pub reservations_asked: u64,
    /// Reservations accepted (first acceptance of each; renewals not counted).
    pub reservations_accepted: u64,
    /// Reservations refused, timed out or lost with their relay.
    pub reservations_lost: u64,
    /// Relayed connections upgraded to direct ones by hole punching (DCUtR).
    pub holes_punched: u64,
    /// Hole punches that failed.
    pub hole_punch_failures: u64,
    /// Hole punches retried through a new relayed connection.
    pub punches_retried: u64,
}

/// The NAT traversal state of one node; see the module documentation.
#[derive(Debug)]
pub struct Nat {
    relays_wanted: usize,
    reservation_timeout: Duration,
    relay_backoff: Duration,
    punch_retry: Duration,
    punch_retries: u32,
    /// Peers whose hole punch failed and is not yet retried for the last time.
    punches: BTreeMap<PeerId, Punch>,
    /// Confirmed external addresses that are not circuits.
    public: BTreeSet<Multiaddr>,
    /// An AutoNAT test found an address unreachable.
    refused: bool,
    /// Peers whose identify said they serve as relays.
    offers: BTreeSet<PeerId>,
    reservations: BTreeMap<PeerId, Slot>,
    /// Relays not to ask again before the instant.
    backoff: BTreeMap<PeerId, Instant>,
    actions: VecDeque<NatAction>,
    stats: NatStats,
}

/// Whether `addr` goes through a circuit relay.
pub fn is_circuit(addr: &Multiaddr) -> bool {
    addr.iter().any(|p| p == Protocol::P2pCircuit)
}

/// The relay a circuit address goes through: the peer named just before `/p2p-circuit`.
pub(crate) fn circuit_relay(addr: &Multiaddr) -> Option<PeerId> {
    let mut relay = None;
    for p in addr.iter() {
        match p {
            Protocol::P2p(peer) => relay = Some(peer),
            Protocol::P2pCircuit => return relay,
            _ => {}
        }
    }
    None
}

impl Nat {
    /// The state of a node that knows nothing yet.
    pub fn new(config: &NatConfig) -> Self {
        Self {
            relays_wanted: config.relays.clamp(1, MAX_RELAYS),
            reservation_timeout: config.reservation_timeout,
            relay_backoff: config.relay_backoff,
            punch_retry: config.punch_retry,
            punch_retries: config.punch_retries.min(MAX_PUNCH_RETRIES),
            punches: BTreeMap::new(),
            public: BTreeSet::new(),
            refused: false,
            offers: BTreeSet::new(),
            reservations: BTreeMap::new(),
            backoff: BTreeMap::new(),
            actions: VecDeque::new(),
            stats: NatStats::default(),
        }
    }

    /// What this node knows of its reachability.
    pub fn reachability(&self) -> Reachability {
        if !self.public.is_empty() {
            Reachability::Public
        } else if self.refused {
            Reachability::Private
        } else {
            Reachability::Unknown
        }
    }

    /// The relays whose reservations were accepted.
    pub fn relays(&self) -> impl Iterator<Item = &PeerId> {
        self.reservations
            .iter()
            .filter(|(_, s)| **s == Slot::Active)
            .map(|(p, _)| p)
    }

    /// The counters.
    pub fn stats(&self) -> &NatStats {
        &self.stats
    }

    /// An external address was confirmed (by AutoNAT, UPnP, or a relay's reservation).
    pub fn on_confirmed(&mut self, addr: &Multiaddr) {
        if !is_circuit(addr) {
            self.public.insert(addr.clone());
        }
    }

    /// An external address expired.
    pub fn on_expired(&mut self, addr: &Multiaddr) {
        self.public.remove(addr);
    }

    /// An AutoNAT test of `addr` ended: `ok` if it was reached from outside. (A confirmed
    /// address also arrives through [`Nat::on_confirmed`].) Only tests of direct IP addresses
    /// count: a circuit address is reachable through its relay whatever the NAT does, and
    /// identify sometimes offers a bare `/p2p/..` candidate, which no one can dial.
    pub fn on_probe(&mut self, addr: &Multiaddr, ok: bool) {
        if !crate::node::checks::is_ip(addr) || is_circuit(addr) {
            return;
        }
        if ok {
            self.stats.probes_confirmed += 1;
        } else {
            self.stats.probes_failed += 1;
            self.refused = true;
        }
    }

    /// `peer`'s identify said whether it serves as a relay now.
    pub fn on_offer(&mut self, peer: PeerId, offers: bool) {
        if !offers {
            self.offers.remove(&peer);
        } else if self.offers.len() < MAX_OFFERS {
            self.offers.insert(peer);
        }
    }

    /// `relay` accepted (or renewed) the reservation.
    pub fn on_accepted(&mut self, relay: PeerId) {
        if let Some(slot) = self.reservations.get_mut(&relay)
            && *slot != Slot::Active
        {
            *slot = Slot::Active;
            self.stats.reservations_accepted += 1;
        }
    }

    /// The reservation at `relay` ended: refused, its listener failed, or its connection closed.
    pub fn on_ended(&mut self, now: Instant, relay: PeerId) {
        if self.reservations.remove(&relay).is_some() {
            self.stats.reservations_lost += 1;
            self.back_off(now, relay);
        }
    }

    /// DCUtR gave up punching a hole to `peer`: a retry is due after [`NatConfig::punch_retry`],
    /// doubled for each earlier failed try, unless this was the last allowed.
    pub fn on_punch_failed(&mut self, now: Instant, peer: PeerId) {
        self.stats.hole_punch_failures += 1;
        self.try_failed(now, peer, true);
    }

    /// The new relayed connection a retry asked for ([`NatAction::Repunch`]) did not open (its
    /// relay went away, say): that try failed without a punch, and the next is scheduled as
    /// after a failed punch. Without this a retry through a dead relay was the last one.
    pub fn on_repunch_failed(&mut self, now: Instant, peer: PeerId) {
        if self.punches.contains_key(&peer) {
            self.try_failed(now, peer, false);
        }
    }

    fn try_failed(&mut self, now: Instant, peer: PeerId, punched: bool) {
        if !self.punches.contains_key(&peer)
            && self.punches.len() >= MAX_PUNCHES
            && let Some((&idle, _)) = self.punches.iter().min_by_key(|(_, p)| p.due.is_some())
        {
            self.punches.remove(&idle);
        }
        let punch = self.punches.entry(peer).or_insert(Punch {
            failures: 0,
            tries: 0,
            due: None,
        });
        if punched {
            punch.failures = punch.failures.saturating_add(1);
        }
        punch.tries = punch.tries.saturating_add(1);
        punch.due = (punch.tries <= self.punch_retries)
            .then(|| now + self.punch_retry * (1u32 << (punch.tries - 1).min(MAX_PUNCH_RETRIES)));
    }

    /// Hole punches with `peer` that failed since the last direct connection to it.
    pub fn punch_failures(&self, peer: &PeerId) -> u32 {
        self.punches.get(peer).map_or(0, |p| p.failures)
    }

    /// A hole punch to `peer` succeeded: a direct connection, no more punches to retry.
    pub fn on_punched(&mut self, peer: &PeerId) {
        self.stats.holes_punched += 1;
        self.on_direct(peer);
    }

    /// A direct connection to `peer` opened: no more punches to retry with it.
    pub fn on_direct(&mut self, peer: &PeerId) {
        self.punches.remove(peer);
    }

    fn back_off(&mut self, now: Instant, relay: PeerId) {
        if self.backoff.len() >= MAX_BACKOFF
            && let Some((&oldest, _)) = self.backoff.iter().min_by_key(|(_, t)| **t)
        {
            self.backoff.remove(&oldest);
        }
        self.backoff.insert(relay, now + self.relay_backoff);
    }

    /// The earliest instant [`Nat::poll`] has something to do without new input.
    pub fn next_due(&self) -> Option<Instant> {
        let pending = self.reservations.values().filter_map(|s| match s {
            Slot::Pending(since) => Some(*since + self.reservation_timeout),
            Slot::Active => None,
        });
        let backoff = self.backoff.values().copied();
        let punches = self.punches.values().filter_map(|p| p.due);
        pending.chain(backoff).chain(punches).min()
    }

    /// Moves the state on at `now` and returns the next thing to do. `addrs_of` gives a live
    /// member's addresses (none if it is not one): relays are chosen among live members only.
    pub fn poll(
        &mut self,
        now: Instant,
        addrs_of: impl Fn(&PeerId) -> Vec<Multiaddr>,
    ) -> Option<NatAction> {
        if let Some(action) = self.actions.pop_front() {
            return Some(action);
        }
        self.backoff.retain(|_, until| *until > now);
        let late: Vec<PeerId> = self
            .reservations
            .iter()
            .filter(|(_, s)| matches!(s, Slot::Pending(since) if now >= *since + self.reservation_timeout))
            .map(|(p, _)| *p)
            .collect();
        for relay in late {
            self.on_ended(now, relay);
            self.actions.push_back(NatAction::Release { relay });
        }
        if self.reachability() == Reachability::Public {
            let held: Vec<PeerId> = self.reservations.keys().copied().collect();
            for relay in held {
                self.reservations.remove(&relay);
                self.actions.push_back(NatAction::Release { relay });
            }
        } else if self.reachability() == Reachability::Private {
            self.choose(now, &addrs_of);
        }
        self.repunch(now, &addrs_of);
        self.actions.pop_front()
    }

    /// Asks for a new relayed connection to each peer whose retry is due, through the relays
    /// of its circuit addresses that are live members. A peer that is no live member, or has no
    /// circuit address, is forgotten; one whose circuits all go through relays gone (it has not
    /// told of new ones yet) counts a failed try, so the next waits longer and the tries stay
    /// bounded.
    fn repunch(&mut self, now: Instant, addrs_of: &impl Fn(&PeerId) -> Vec<Multiaddr>) {
        let due: Vec<PeerId> = self
            .punches
            .iter()
            .filter(|(_, p)| p.due.is_some_and(|at| at <= now))
            .map(|(peer, _)| *peer)
            .collect();
        for peer in due {
            let circuits: Vec<Multiaddr> = addrs_of(&peer).into_iter().filter(is_circuit).collect();
            if circuits.is_empty() {
                self.punches.remove(&peer);
                continue;
            }
            let addrs: Vec<Multiaddr> = circuits
                .into_iter()
                .filter(|a| circuit_relay(a).is_some_and(|r| !addrs_of(&r).is_empty()))
                .collect();
            if addrs.is_empty() {
                self.try_failed(now, peer, false);
                continue;
            }
            if let Some(p) = self.punches.get_mut(&peer) {
                p.due = None;
            }
            self.stats.punches_retried += 1;
            self.actions.push_back(NatAction::Repunch { peer, addrs });
        }
    }

    /// Asks for reservations at offering members until [`NatConfig::relays`] are held or asked.
    fn choose(&mut self, now: Instant, addrs_of: &impl Fn(&PeerId) -> Vec<Multiaddr>) {
        let mut offers = self.offers.iter();
        while self.reservations.len() < self.relays_wanted {
            let Some(relay) = offers.next() else { return };
            if self.reservations.contains_key(relay) || self.backoff.contains_key(relay) {
                continue;
            }
            // A relay reached through another relay would be no use: its direct address only.
            let Some(addr) = addrs_of(relay).into_iter().find(|a| !is_circuit(a)) else {
                continue;
            };
            let addr = addr
                .with_p2p(*relay)
                .unwrap_or_else(|a| a)
                .with(Protocol::P2pCircuit);
            self.reservations.insert(*relay, Slot::Pending(now));
            self.stats.reservations_asked += 1;
            self.actions.push_back(NatAction::Reserve {
                relay: *relay,
                addr,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(i: u8) -> Multiaddr {
        format!("/ip4/192.0.2.{i}/tcp/7401").parse().expect("valid")
    }

    /// `peer`'s circuit address through `relay`, listening at `addr(i)`.
    fn circuit(i: u8, relay: PeerId, peer: PeerId) -> Multiaddr {
        addr(i)
            .with(Protocol::P2p(relay))
            .with(Protocol::P2pCircuit)
            .with(Protocol::P2p(peer))
    }

    /// A node that retries a failed hole punch after 10 s (doubling), `retries` times.
    fn retrying(retries: u32) -> Nat {
        Nat::new(&NatConfig {
            punch_retry: Duration::from_secs(10),
            punch_retries: retries,
            ..NatConfig::default()
        })
    }

    fn drain(nat: &mut Nat, now: Instant, members: &[(PeerId, Multiaddr)]) -> Vec<NatAction> {
        let addrs_of = |p: &PeerId| {
            members
                .iter()
                .filter(|(m, _)| m == p)
                .map(|(_, a)| a.clone())
                .collect()
        };
        std::iter::from_fn(|| nat.poll(now, addrs_of)).collect()
    }

    #[test]
    fn reachability_follows_confirmations_and_failed_probes() {
        let mut nat = Nat::new(&NatConfig::default());
        assert_eq!(nat.reachability(), Reachability::Unknown);
        let circuit = addr(1)
            .with(Protocol::P2p(PeerId::random()))
            .with(Protocol::P2pCircuit);
        nat.on_confirmed(&circuit);
        assert_eq!(
            nat.reachability(),
            Reachability::Unknown,
            "a circuit is not public"
        );
        nat.on_probe(&circuit, false);
        let bare = Multiaddr::empty().with(Protocol::P2p(PeerId::random()));
        nat.on_probe(&bare, false);
        assert_eq!(
            nat.reachability(),
            Reachability::Unknown,
            "only IP addresses count"
        );
        nat.on_probe(&addr(3), false);
        assert_eq!(nat.reachability(), Reachability::Private);
        nat.on_confirmed(&addr(2));
        assert_eq!(nat.reachability(), Reachability::Public);
        nat.on_expired(&addr(2));
        assert_eq!(nat.reachability(), Reachability::Private);
    }

    #[test]
    fn a_private_node_reserves_at_offering_members_and_replaces_lost_relays() {
        let config = NatConfig::default();
        let mut nat = Nat::new(&config);
        let now = Instant::now();
        let relays: Vec<(PeerId, Multiaddr)> =
            (1..=3).map(|i| (PeerId::random(), addr(i))).collect();
        for (p, _) in &relays {
            nat.on_offer(*p, true);
        }
        // An offer from a peer that is not a live member is not used.
        nat.on_offer(PeerId::random(), true);
        assert!(
            drain(&mut nat, now, &relays).is_empty(),
            "unknown: no reservation"
        );
        nat.on_probe(&addr(9), false);
        let asked = drain(&mut nat, now, &relays);
        assert_eq!(asked.len(), 2, "{asked:?}");
        for a in &asked {
            let NatAction::Reserve { relay, addr } = a else {
                panic!("{a:?}")
            };
            assert!(is_circuit(addr));
            assert!(addr.iter().any(|p| p == Protocol::P2p(*relay)));
            nat.on_accepted(*relay);
        }
        assert_eq!(nat.relays().count(), 2);
        // The first relay drops: the third takes its place, and the dropped one is not asked
        // again until its backoff ends.
        let NatAction::Reserve { relay: lost, .. } = asked[0].clone() else {
            unreachable!()
        };
        nat.on_ended(now, lost);
        let next = drain(&mut nat, now, &relays);
        assert_eq!(next.len(), 1);
        let NatAction::Reserve { relay: third, .. } = next[0].clone() else {
            panic!("{next:?}")
        };
        assert_ne!(third, lost);
        // The third never answers: released at its timeout; the first is still backed off.
        let later = now + config.reservation_timeout;
        assert_eq!(nat.next_due(), Some(later));
        let after = drain(&mut nat, later, &relays);
        assert_eq!(after, vec![NatAction::Release { relay: third }]);
        assert_eq!(nat.stats().reservations_lost, 2);
        // Once the backoffs end, both are asked again.
        let end = now + config.relay_backoff + config.reservation_timeout;
        let again = drain(&mut nat, end, &relays);
        assert_eq!(again.len(), 1, "one slot free: {again:?}");
    }

    #[test]
    fn a_node_that_becomes_public_releases_its_relays() {
        let mut nat = Nat::new(&NatConfig::default());
        let now = Instant::now();
        let relay = (PeerId::random(), addr(1));
        nat.on_offer(relay.0, true);
        nat.on_probe(&addr(8), false);
        let asked = drain(&mut nat, now, std::slice::from_ref(&relay));
        assert_eq!(asked.len(), 1);
        nat.on_accepted(relay.0);
        nat.on_confirmed(&addr(9));
        let released = drain(&mut nat, now, std::slice::from_ref(&relay));
        assert_eq!(released, vec![NatAction::Release { relay: relay.0 }]);
        assert_eq!(nat.relays().count(), 0);
    }

    #[test]
    fn a_failed_hole_punch_is_retried_with_doubling_delays_until_direct_or_given_up() {
        let mut nat = retrying(2);
        let now = Instant::now();
        let peer = PeerId::random();
        let relay = PeerId::random();
        let circuit = circuit(1, relay, peer);
        let members = [(peer, addr(2)), (peer, circuit.clone()), (relay, addr(1))];
        let repunch = NatAction::Repunch {
            peer,
            addrs: vec![circuit.clone()],
        };
        nat.on_punch_failed(now, peer);
        assert_eq!(nat.punch_failures(&peer), 1);
        assert_eq!(nat.next_due(), Some(now + Duration::from_secs(10)));
        assert!(drain(&mut nat, now + Duration::from_secs(9), &members).is_empty());
        let at = now + Duration::from_secs(10);
        assert_eq!(drain(&mut nat, at, &members), vec![repunch.clone()]);
        assert_eq!(
            nat.next_due(),
            None,
            "nothing due while the retry is under way"
        );
        assert!(drain(&mut nat, at + Duration::from_secs(100), &members).is_empty());
        // The retry failed too: the next one waits twice as long.
        nat.on_punch_failed(at, peer);
        assert_eq!(nat.next_due(), Some(at + Duration::from_secs(20)));
        let at = at + Duration::from_secs(20);
        assert_eq!(drain(&mut nat, at, &members), vec![repunch]);
        // The last allowed retry failed: no more.
        nat.on_punch_failed(at, peer);
        assert_eq!(nat.next_due(), None);
        assert!(drain(&mut nat, at + Duration::from_secs(3600), &members).is_empty());
        assert_eq!(nat.stats().punches_retried, 2);

        // A direct connection ends the retries; a peer with no circuit address is forgotten.
        let other = PeerId::random();
        nat.on_punch_failed(now, other);
        nat.on_direct(&other);
        assert_eq!(nat.punch_failures(&other), 0);
        assert_eq!(nat.next_due(), None);
        nat.on_punch_failed(now, other);
        assert!(drain(&mut nat, now + Duration::from_secs(10), &[(other, addr(3))]).is_empty());
        assert!(!nat.punches.contains_key(&other));
        assert_eq!(nat.stats().hole_punch_failures, 5);
        nat.on_punch_failed(now, other);
        nat.on_punched(&other);
        assert_eq!(nat.punch_failures(&other), 0);
        assert_eq!(nat.stats().holes_punched, 1);
    }

    #[test]
    fn a_retry_goes_through_live_relays_only_and_one_that_cannot_connect_is_not_the_last() {
        let mut nat = retrying(3);
        let now = Instant::now();
        let peer = PeerId::random();
        let (gone, live) = (PeerId::random(), PeerId::random());
        let (via_gone, via_live) = (circuit(1, gone, peer), circuit(2, live, peer));
        let members = [
            (peer, addr(3)),
            (peer, via_gone.clone()),
            (peer, via_live.clone()),
            (live, addr(2)),
        ];
        nat.on_punch_failed(now, peer);
        let at = now + Duration::from_secs(10);
        // The circuit through a relay that is no member is left out.
        assert_eq!(
            drain(&mut nat, at, &members),
            vec![NatAction::Repunch {
                peer,
                addrs: vec![via_live.clone()]
            }]
        );
        // The relayed connection did not open: not a punch failure, but the next try is due
        // after twice the wait, as after one.
        nat.on_repunch_failed(at, peer);
        assert_eq!(nat.punch_failures(&peer), 1);
        assert_eq!(nat.next_due(), Some(at + Duration::from_secs(20)));
        // Its only circuit now goes through a relay gone: that try fails at once, without a
        // dial, and the one after waits longer still.
        let at = at + Duration::from_secs(20);
        let stale = [(peer, addr(3)), (peer, via_gone)];
        assert!(drain(&mut nat, at, &stale).is_empty());
        assert_eq!(nat.next_due(), Some(at + Duration::from_secs(40)));
        // The peer told of a new relay: the last allowed try goes through it.
        let at = at + Duration::from_secs(40);
        assert_eq!(drain(&mut nat, at, &members).len(), 1);
        nat.on_repunch_failed(at, peer);
        assert_eq!(nat.next_due(), None, "three tries were allowed");
        assert_eq!(nat.stats().punches_retried, 2);
        assert_eq!(nat.stats().hole_punch_failures, 1);
        // A retry's dial that fails for a peer no longer tracked changes nothing.
        let other = PeerId::random();
        nat.on_repunch_failed(at, other);
        assert!(!nat.punches.contains_key(&other));
    }

    #[test]
    fn punch_retries_are_bounded() {
        let mut nat = Nat::new(&NatConfig::default());
        let now = Instant::now();
        for _ in 0..MAX_PUNCHES + 10 {
            nat.on_punch_failed(now, PeerId::random());
        }
        assert_eq!(nat.punches.len(), MAX_PUNCHES);
    }

    #[test]
    fn offers_are_bounded_and_withdrawn() {
        let mut nat = Nat::new(&NatConfig::default());
        for _ in 0..MAX_OFFERS + 10 {
            nat.on_offer(PeerId::random(), true);
        }
        assert_eq!(nat.offers.len(), MAX_OFFERS);
        let first = *nat.offers.iter().next().expect("one");
        nat.on_offer(first, false);
        assert_eq!(nat.offers.len(), MAX_OFFERS - 1);
    }

    #[test]
    fn config_bounds() {
        assert!(NatConfig::default().validate().is_ok());
        let zero = NatConfig {
            relays: 0,
            ..NatConfig::default()
        };
        assert!(zero.validate().is_err());
        let long = NatConfig {
            relay_limits: RelayLimits {
                max_circuit_duration: Duration::from_secs(u64::from(u32::MAX) + 1),
                ..RelayLimits::default()
            },
            ..NatConfig::default()
        };
        assert!(long.validate().is_err());
        for bad in [
            NatConfig {
                punch_retry: Duration::ZERO,
                ..NatConfig::default()
            },
            NatConfig {
                punch_retries: MAX_PUNCH_RETRIES + 1,
                ..NatConfig::default()
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
    }
}
