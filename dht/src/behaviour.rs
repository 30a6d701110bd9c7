//! The DHT's network behaviour: identify, SWIM's transport, the identity gate and the DHT's own
//! protocol side by side in one swarm. None of them holds a rule of the DHT: they carry
//! messages, and the event loop ([`crate::node`]) hands those to the core ([`crate::core`]).

use std::time::Duration;

use libp2p::swarm::NetworkBehaviour;
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::{StreamProtocol, autonat, dcutr, identify, relay, upnp};
use shoal_pow::IdentityProof;

use crate::config::{Config, ConfigError};
use crate::node::SharedVerifier;
use crate::{gate, link};

/// SWIM's protocol: its messages told as frames on long-lived streams ([`link::Swim`]).
pub const SWIM_PROTOCOL: &str = "/shoal/swim/4";

/// How often identify asks a connected peer again, after the exchange that opens every
/// connection. libp2p's default is 5 minutes: with a connection to every member probed, that
/// was a stream and an identify record each way per member every 5 minutes for nothing: a
/// peer's addresses reach this node through SWIM, and the event loop reads none of identify's
/// answers.
const IDENTIFY_INTERVAL: Duration = Duration::from_secs(3600);

/// The combined behaviour.
#[derive(NetworkBehaviour)]
#[behaviour(to_swarm = "Event", prelude = "libp2p::swarm::derive_prelude")]
pub struct Behaviour {
    /// Identify on `/shoal/<network>/id/1.0.0`.
    pub identify: identify::Behaviour,
    /// SWIM's messages on `/shoal/swim/4`, told on long-lived streams ([`link::Swim`]).
    pub swim: link::Behaviour<link::Swim>,
    /// The identity gate on `/shoal/identity/1`.
    pub gate: gate::Behaviour,
    /// The DHT's requests on `/shoal/<network>/dht/4.0.0`, on long-lived streams.
    pub dht: link::Behaviour<link::Dht>,
    /// Broadcast messages on `/shoal/<network>/broadcast/1`, told on long-lived streams
    /// ([`link::Broadcast`]).
    pub broadcast: link::Behaviour<link::Broadcast>,
    /// The circuit relay client, with [`crate::nat::NatConfig::auto`] and a transport that
    /// dials and listens through relays ([`crate::node::tcp_transport_with_relay`]).
    pub relay_client: Toggle<relay::client::Behaviour>,
    /// The circuit relay server, with [`crate::nat::NatConfig::relay_service`]: it offers
    /// itself only while this node has a confirmed public address.
    pub relay: Toggle<relay::Behaviour>,
    /// AutoNAT v2's client, with [`crate::nat::NatConfig::auto`]: tests the addresses peers
    /// observed.
    pub autonat: Toggle<autonat::v2::client::Behaviour>,
    /// AutoNAT v2's server, with [`crate::nat::NatConfig::auto`]: dials back the addresses
    /// peers ask it to test.
    pub autonat_server: Toggle<autonat::v2::server::Behaviour>,
    /// DCUtR, with [`crate::nat::NatConfig::auto`]: hole punching over a relayed connection.
    pub dcutr: Toggle<dcutr::Behaviour>,
    /// UPnP port mapping, with [`crate::nat::NatConfig::upnp`].
    pub upnp: Toggle<upnp::tokio::Behaviour>,
}

/// An event of one of the parts.
#[derive(Debug)]
pub enum Event {
    /// From identify.
    Identify(Box<identify::Event>),
    /// From SWIM's transport.
    Swim(link::Event<link::Swim>),
    /// From the gate.
    Gate(gate::Event),
    /// From the DHT protocol.
    Dht(link::Event<link::Dht>),
    /// From the broadcast protocol.
    Broadcast(link::Event<link::Broadcast>),
    /// From the relay client.
    RelayClient(relay::client::Event),
    /// From the relay server.
    Relay(relay::Event),
    /// From AutoNAT's client.
    Autonat(autonat::v2::client::Event),
    /// From AutoNAT's server.
    AutonatServer(autonat::v2::server::Event),
    /// From DCUtR.
    Dcutr(dcutr::Event),
    /// From UPnP.
    Upnp(upnp::Event),
}

/// `From` for each part's event (identify's is boxed, below).
macro_rules! from_event {
    ($($variant:ident($ty:ty)),* $(,)?) => {
        $(impl From<$ty> for Event {
            fn from(e: $ty) -> Self {
                Self::$variant(e)
            }
        })*
    };
}

from_event!(
    Swim(link::Event<link::Swim>),
    Gate(gate::Event),
    Dht(link::Event<link::Dht>),
    Broadcast(link::Event<link::Broadcast>),
    RelayClient(relay::client::Event),
    Relay(relay::Event),
    Autonat(autonat::v2::client::Event),
    AutonatServer(autonat::v2::server::Event),
    Dcutr(dcutr::Event),
    Upnp(upnp::Event),
);

impl From<identify::Event> for Event {
    fn from(e: identify::Event) -> Self {
        Self::Identify(Box::new(e))
    }
}

impl Behaviour {
    /// The behaviour of the node with `keypair`, presenting `proof` to the gate, which checks
    /// peers with `verifier`. `relay_client` is the relay transport's other half (with
    /// [`crate::nat::NatConfig::auto`]); without it, the node neither reserves relays nor
    /// punches holes.
    pub fn new(
        keypair: &libp2p::identity::Keypair,
        proof: IdentityProof,
        verifier: SharedVerifier,
        config: &Config,
        relay_client: Option<relay::client::Behaviour>,
    ) -> Result<Self, ConfigError> {
        config.validate()?;
        let local = keypair.public().to_peer_id();
        let nat = &config.nat;
        let auto = nat.auto && relay_client.is_some();
        let identify = identify::Behaviour::new(
            identify::Config::new(config.identify_protocol(), keypair.public())
                .with_interval(IDENTIFY_INTERVAL),
        );
        // SWIM's messages are told: nothing waits for an answer, so the timeout only bounds
        // a request a peer asked instead; the bound leaves room for the byte string's header.
        let swim_limits = link::Limits {
            max_request: config.swim.max_message_bytes.get() + 16,
            max_response: 16,
            in_flight: 256,
            timeout: (config.swim.probe_timeout * 4).max(Duration::from_secs(5)),
        };
        let swim = link::Behaviour::new(StreamProtocol::new(SWIM_PROTOCOL), swim_limits);
        // The core keeps its own, shorter deadlines; the transport's is a backstop.
        let backstop = 2 * config.request_timeout.max(config.gate_timeout);
        let protocol = StreamProtocol::try_from_owned(config.dht_protocol())
            .map_err(|_| ConfigError::BadNetwork(config.network.clone()))?;
        let broadcast_limits = link::Limits {
            max_request: config.broadcast.max_message_bytes + 16,
            max_response: 16,
            in_flight: 256,
            timeout: backstop,
        };
        let broadcast_protocol = StreamProtocol::try_from_owned(config.broadcast_protocol())
            .map_err(|_| ConfigError::BadNetwork(config.network.clone()))?;
        Ok(Self {
            identify,
            swim,
            gate: gate::Behaviour::new(proof, verifier, config.gate_timeout),
            dht: link::Behaviour::new(protocol, link::Limits::dht(256, backstop)),
            broadcast: link::Behaviour::new(broadcast_protocol, broadcast_limits),
            relay_client: relay_client.filter(|_| auto).into(),
            relay: nat
                .relay_service
                .then(|| relay::Behaviour::new(local, nat.relay_limits.to_libp2p()))
                .into(),
            autonat: auto.then(autonat::v2::client::Behaviour::default).into(),
            autonat_server: auto.then(autonat::v2::server::Behaviour::default).into(),
            dcutr: auto.then(|| dcutr::Behaviour::new(local)).into(),
            upnp: (auto && nat.upnp)
                .then(upnp::tokio::Behaviour::default)
                .into(),
        })
    }
}
