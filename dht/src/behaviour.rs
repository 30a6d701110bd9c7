//! The DHT's network behaviour: identify, SWIM's transport, the identity gate and the DHT's own
//! protocol side by side in one swarm. None of them holds a rule of the DHT: they carry
//! messages, and the event loop ([`crate::node`]) hands those to the core ([`crate::core`]).

use std::time::Duration;

use libp2p::request_response::{self as rr, OutboundRequestId, ResponseChannel};
use libp2p::swarm::NetworkBehaviour;
use libp2p::{PeerId, StreamProtocol, identify};
use shoal_pow::IdentityProof;

use crate::config::{Config, ConfigError};
use crate::gate;
use crate::node::SharedVerifier;
use crate::wire;

/// The combined behaviour.
#[derive(NetworkBehaviour)]
#[behaviour(to_swarm = "Event", prelude = "libp2p::swarm::derive_prelude")]
pub struct Behaviour {
    /// Identify on `/shoal/<network>/id/1.0.0`.
    pub identify: identify::Behaviour,
    /// SWIM's messages on `/shoal/swim/1` (one message a stream, acknowledged empty).
    pub swim: rr::Behaviour<shoal_swim::protocol::Codec>,
    /// The identity gate on `/shoal/identity/1`.
    pub gate: gate::Behaviour,
    /// The DHT's requests on `/shoal/<network>/dht/1.0.0`.
    pub dht: wire::Behaviour,
}

/// An event of one of the parts.
#[derive(Debug)]
pub enum Event {
    /// From identify.
    Identify(Box<identify::Event>),
    /// From SWIM's transport.
    Swim(rr::Event<Vec<u8>, ()>),
    /// From the gate.
    Gate(gate::Event),
    /// From the DHT protocol.
    Dht(rr::Event<wire::Request, wire::Response>),
}

impl From<identify::Event> for Event {
    fn from(e: identify::Event) -> Self {
        Self::Identify(Box::new(e))
    }
}

impl From<rr::Event<Vec<u8>, ()>> for Event {
    fn from(e: rr::Event<Vec<u8>, ()>) -> Self {
        Self::Swim(e)
    }
}

impl From<gate::Event> for Event {
    fn from(e: gate::Event) -> Self {
        Self::Gate(e)
    }
}

impl From<rr::Event<wire::Request, wire::Response>> for Event {
    fn from(e: rr::Event<wire::Request, wire::Response>) -> Self {
        Self::Dht(e)
    }
}

/// What a request-response event asks of the node.
pub(crate) enum Exchange<Req, Resp> {
    /// A peer's request, and the channel to answer it on.
    Request {
        peer: PeerId,
        request: Req,
        channel: ResponseChannel<Resp>,
    },
    /// The outcome of a request this node sent: its answer, or why it failed.
    Outcome {
        request_id: OutboundRequestId,
        response: Result<Resp, rr::OutboundFailure>,
    },
}

impl<Req, Resp> Exchange<Req, Resp> {
    /// The exchange `event` is part of; `None` for events the node has nothing to do about
    /// (an inbound failure, a response sent).
    pub(crate) fn of(event: rr::Event<Req, Resp>) -> Option<Self> {
        match event {
            rr::Event::Message {
                peer,
                message:
                    rr::Message::Request {
                        request, channel, ..
                    },
                ..
            } => Some(Self::Request {
                peer,
                request,
                channel,
            }),
            rr::Event::Message {
                message:
                    rr::Message::Response {
                        request_id,
                        response,
                    },
                ..
            } => Some(Self::Outcome {
                request_id,
                response: Ok(response),
            }),
            rr::Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                tracing::debug!(%peer, %error, "request failed");
                Some(Self::Outcome {
                    request_id,
                    response: Err(error),
                })
            }
            rr::Event::InboundFailure { .. } | rr::Event::ResponseSent { .. } => None,
        }
    }
}

/// A CBOR request-response behaviour on `protocol` with bounded message sizes.
pub(crate) fn cbor_request_response<Req, Resp>(
    protocol: StreamProtocol,
    max_request: usize,
    max_response: usize,
    timeout: Duration,
    max_streams: usize,
) -> libp2p::request_response::cbor::Behaviour<Req, Resp>
where
    Req: Send + Clone + serde::Serialize + serde::de::DeserializeOwned + 'static,
    Resp: Send + Clone + serde::Serialize + serde::de::DeserializeOwned + 'static,
{
    let codec = rr::cbor::codec::Codec::default()
        .set_request_size_maximum(max_request as u64)
        .set_response_size_maximum(max_response as u64);
    let config = rr::Config::default()
        .with_request_timeout(timeout)
        .with_max_concurrent_streams(max_streams);
    rr::Behaviour::with_codec(codec, [(protocol, rr::ProtocolSupport::Full)], config)
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
        let identify = identify::Behaviour::new(identify::Config::new(
            config.identify_protocol(),
            keypair.public(),
        ));
        let swim_timeout = (config.swim.probe_timeout * 4).max(Duration::from_secs(5));
        let swim = rr::Behaviour::with_codec(
            shoal_swim::protocol::Codec::new(config.swim.max_message_bytes.get()),
            [(shoal_swim::protocol::PROTOCOL, rr::ProtocolSupport::Full)],
            rr::Config::default()
                .with_request_timeout(swim_timeout)
                .with_max_concurrent_streams(256),
        );
        // The core keeps its own, shorter deadlines; the transport's is a backstop.
        let backstop = 2 * config.request_timeout.max(config.gate_timeout);
        let protocol = StreamProtocol::try_from_owned(config.dht_protocol())
            .map_err(|_| ConfigError::BadNetwork(config.network.clone()))?;
        Ok(Self {
            identify,
            swim,
            gate: gate::Behaviour::new(proof, verifier, config.gate_timeout),
            dht: wire::behaviour(protocol, backstop, 256),
        })
    }
}
