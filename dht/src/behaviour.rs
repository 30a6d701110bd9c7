//! The DHT's network behaviour: identify, Kademlia, SWIM, the identity gate, lockstep, replica
//! puts, the proof relay and closest-peer lookups, side by side in one swarm. The rules tying them together live in the event loop ([`crate::node`]).

use libp2p::request_response::{self as rr, OutboundRequestId, ResponseChannel};
use libp2p::swarm::NetworkBehaviour;
use libp2p::{PeerId, StreamProtocol, identify, kad};
use shoal_pow::{IdentityProof, IdentityVerifier, NodeKey, Puzzle, unix_now};

use crate::config::{Config, ConfigError};
use crate::gate;
use crate::lockstep::protocol as lockstep;
use crate::lookup;
use crate::record::MAX_RECORD_LEN;
use crate::relay;
use crate::replica;
use crate::store::RecordStore;

/// Kad's packet limit: one record envelope plus room for the message around it.
pub const MAX_KAD_PACKET: usize = MAX_RECORD_LEN + 16 * 1024;

/// The combined behaviour.
#[derive(NetworkBehaviour)]
#[behaviour(to_swarm = "Event", prelude = "libp2p::swarm::derive_prelude")]
pub struct Behaviour {
    /// Identify on `/shoal/<network>/id/1.0.0`.
    pub identify: identify::Behaviour,
    /// Kademlia on `/shoal/<network>/kad/1.0.0`, manual bucket inserts, filtered stores.
    pub kad: kad::Behaviour<RecordStore>,
    /// SWIM membership with admission required.
    pub swim: shoal_swim::Behaviour,
    /// The identity gate.
    pub gate: gate::Behaviour,
    /// Lockstep requests.
    pub lockstep: lockstep::Behaviour,
    /// Relayed identity proofs of members learned through gossip.
    pub relay: relay::Behaviour,
    /// Puts acknowledged once the replica validated and kept the record.
    pub replica: replica::Behaviour,
    /// Closest-peer lookups seeded from the membership.
    pub find: lookup::Behaviour,
}

/// An event of one of the parts.
#[derive(Debug)]
pub enum Event {
    /// From identify.
    Identify(Box<identify::Event>),
    /// From kad.
    Kad(Box<kad::Event>),
    /// From SWIM.
    Swim(shoal_swim::behaviour::Event),
    /// From the gate.
    Gate(gate::Event),
    /// From lockstep.
    Lockstep(libp2p::request_response::Event<lockstep::Request, lockstep::Response>),
    /// From the proof relay.
    Relay(libp2p::request_response::Event<relay::Request, relay::Response>),
    /// From replica puts.
    Replica(libp2p::request_response::Event<replica::Request, replica::Response>),
    /// From closest-peer lookups.
    Find(libp2p::request_response::Event<lookup::Request, lookup::Response>),
}

impl From<identify::Event> for Event {
    fn from(e: identify::Event) -> Self {
        Self::Identify(Box::new(e))
    }
}

impl From<kad::Event> for Event {
    fn from(e: kad::Event) -> Self {
        Self::Kad(Box::new(e))
    }
}

impl From<shoal_swim::behaviour::Event> for Event {
    fn from(e: shoal_swim::behaviour::Event) -> Self {
        Self::Swim(e)
    }
}

impl From<gate::Event> for Event {
    fn from(e: gate::Event) -> Self {
        Self::Gate(e)
    }
}

impl From<libp2p::request_response::Event<lockstep::Request, lockstep::Response>> for Event {
    fn from(e: libp2p::request_response::Event<lockstep::Request, lockstep::Response>) -> Self {
        Self::Lockstep(e)
    }
}

impl From<libp2p::request_response::Event<relay::Request, relay::Response>> for Event {
    fn from(e: libp2p::request_response::Event<relay::Request, relay::Response>) -> Self {
        Self::Relay(e)
    }
}

impl From<libp2p::request_response::Event<replica::Request, replica::Response>> for Event {
    fn from(e: libp2p::request_response::Event<replica::Request, replica::Response>) -> Self {
        Self::Replica(e)
    }
}

impl From<libp2p::request_response::Event<lookup::Request, lookup::Response>> for Event {
    fn from(e: libp2p::request_response::Event<lookup::Request, lookup::Response>) -> Self {
        Self::Find(e)
    }
}

/// What a request-response event of the lockstep, relay or replica protocol asks of the node.
pub(crate) enum Exchange<Req, Resp> {
    /// A peer's request, and the channel to answer it on.
    Request {
        peer: PeerId,
        request: Req,
        channel: ResponseChannel<Resp>,
    },
    /// The outcome of a request this node sent to `peer`: its answer, or `None` if it failed
    /// (timeout, dial failure, connection closed, refused protocol).
    Outcome {
        peer: PeerId,
        request_id: OutboundRequestId,
        response: Option<Resp>,
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
                peer,
                message:
                    rr::Message::Response {
                        request_id,
                        response,
                    },
                ..
            } => Some(Self::Outcome {
                peer,
                request_id,
                response: Some(response),
            }),
            rr::Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                tracing::debug!(%peer, %error, "request failed");
                Some(Self::Outcome {
                    peer,
                    request_id,
                    response: None,
                })
            }
            rr::Event::InboundFailure { .. } | rr::Event::ResponseSent { .. } => None,
        }
    }
}

/// A CBOR request-response behaviour on `protocol` with bounded message sizes: the shape of the
/// lockstep, proof-relay and replica protocols.
pub(crate) fn cbor_request_response<Req, Resp>(
    protocol: StreamProtocol,
    max_request: usize,
    max_response: usize,
    timeout: std::time::Duration,
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
    /// The behaviour of the node with `key`, presenting `proof`, serving `store`.
    pub fn new(
        key: &NodeKey,
        proof: IdentityProof,
        config: &Config,
        store: RecordStore,
    ) -> Result<Self, ConfigError> {
        config.validate()?;
        let peer = key.peer_id();
        let keypair = key.to_libp2p();
        let identify = identify::Behaviour::new(identify::Config::new(
            config.identify_protocol(),
            keypair.public(),
        ));
        let kad_protocol = StreamProtocol::try_from_owned(config.kad_protocol())
            .map_err(|_| ConfigError::BadNetwork(config.network.clone()))?;
        let mut kad_config = kad::Config::new(kad_protocol);
        kad_config
            .set_kbucket_inserts(kad::BucketInserts::Manual)
            .set_record_filtering(kad::StoreInserts::FilterBoth)
            .set_max_packet_size(MAX_KAD_PACKET)
            .set_query_timeout(config.query_timeout)
            .set_replication_factor(config.replication_factor)
            .set_parallelism(config.lookup_parallelism)
            .set_kbucket_size(config.kbucket_size)
            .set_periodic_bootstrap_interval(None);
        let mut kad = kad::Behaviour::with_config(peer, store, kad_config);
        kad.set_mode(Some(kad::Mode::Server));
        let mut swim = shoal_swim::Behaviour::new(peer, unix_now(), config.swim.clone())?;
        swim.require_admission();
        let verifier =
            IdentityVerifier::new(Puzzle::new(config.puzzle.clone())?, config.verifier.clone());
        Ok(Self {
            identify,
            kad,
            swim,
            gate: gate::Behaviour::new(proof, verifier, config.gate_timeout),
            lockstep: lockstep::behaviour(config.lockstep_timeout),
            relay: relay::behaviour(config.gate_timeout),
            replica: replica::behaviour(config.lockstep_timeout),
            find: lookup::behaviour(config.lockstep_timeout),
        })
    }
}
