//! The DHT's network behaviour: identify, SWIM's transport, the identity gate and the DHT's own
//! protocol side by side in one swarm. None of them holds a rule of the DHT: they carry
//! messages, and the event loop ([`crate::node`]) hands those to the core ([`crate::core`]).

use std::time::Duration;

use libp2p::swarm::NetworkBehaviour;
use libp2p::{StreamProtocol, identify};
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
}

impl From<link::Event<link::Broadcast>> for Event {
    fn from(e: link::Event<link::Broadcast>) -> Self {
        Self::Broadcast(e)
    }
}

impl From<identify::Event> for Event {
    fn from(e: identify::Event) -> Self {
        Self::Identify(Box::new(e))
    }
}

impl From<link::Event<link::Swim>> for Event {
    fn from(e: link::Event<link::Swim>) -> Self {
        Self::Swim(e)
    }
}

impl From<gate::Event> for Event {
    fn from(e: gate::Event) -> Self {
        Self::Gate(e)
    }
}

impl From<link::Event<link::Dht>> for Event {
    fn from(e: link::Event<link::Dht>) -> Self {
        Self::Dht(e)
    }
}

impl Behaviour {
    /// The behaviour of the node with `keypair`, presenting `proof` to the gate, which checks
    /// peers with `verifier`.
    pub fn new(
        keypair: &libp2p::identity::Keypair,
        proof: IdentityProof,
        verifier: SharedVerifier,
        config: &Config,
    ) -> Result<Self, ConfigError> {
        config.validate()?;
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
        })
    }
}
