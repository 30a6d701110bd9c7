//! The identity gate: on every connection the peers exchange identity proofs on
//! `/shoal/identity/1`, and a peer whose proof is invalid is disconnected.
//!
//! When a connection to a peer not yet verified is established, the gate sends its own proof as a
//! request; the other side checks it and answers with its own proof, which the gate checks in
//! turn. Both sides do this, so each verifies the other whoever dialed. The gate decides only
//! what needs no scrypt evaluation ([`shoal_pow::IdentityVerifier::cached`]: a key verified
//! before, a proof refused before, a malformed proof or one for another key); any other proof
//! is [`Event::Presented`] to the node, which evaluates it in its turn (off the swarm, most
//! needed first) and tells the gate the outcome ([`Behaviour::confirm`],
//! [`Behaviour::disconnect`]). A node meeting a whole cluster at once would otherwise spend its
//! swarm's time, or both cores, on evaluations nothing waits for. The DHT lets a peer into its
//! routing table only once its proof passed.

use std::collections::{HashMap, HashSet, VecDeque};
use std::io;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::{AsyncReadExt, AsyncWriteExt};
use libp2p::core::Endpoint;
use libp2p::core::transport::PortUse;
use libp2p::request_response::{self as rr, ProtocolSupport};
use libp2p::swarm::{
    CloseConnection, ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, THandler,
    THandlerInEvent, THandlerOutEvent, ToSwarm,
};
use libp2p::{Multiaddr, PeerId, StreamProtocol};
use shoal_pow::{IdentityProof, PROOF_LEN, ProofError, PublicKey, Verification};

use crate::identity::PublicKeyExt;
use crate::node::SharedVerifier;

/// The gate's protocol name.
pub const PROTOCOL: StreamProtocol = StreamProtocol::new("/shoal/identity/1");

/// What the gate reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The peer showed a valid identity proof for its own key.
    Verified {
        /// The peer.
        peer: PeerId,
        /// Its proof, which the node can relay to members that learn of the peer by gossip.
        proof: IdentityProof,
        /// Whether the proof cost a scrypt evaluation now (`Verified`) or came from the cache.
        how: Verification,
    },
    /// The peer showed a proof for its own key that only an evaluation can decide; the node
    /// evaluates it and calls [`Behaviour::confirm`] or [`Behaviour::disconnect`].
    Presented {
        /// The peer.
        peer: PeerId,
        /// Its proof.
        proof: IdentityProof,
    },
    /// The peer's proof was refused (invalid, for another key, unreadable, or the peer does not
    /// speak the protocol); the gate closed every connection to it. A rate-limited check or a
    /// transient failure is not a refusal: the connection is closed, or left, without this event,
    /// and the next connection repeats the exchange.
    Refused {
        /// The peer.
        peer: PeerId,
        /// Why.
        error: ProofError,
    },
}

/// Reads and writes exactly one 40-byte proof each way; anything else is an I/O error.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProofCodec;

async fn read_proof<T: futures::AsyncRead + Unpin + Send>(io: &mut T) -> io::Result<Vec<u8>> {
    let mut buf = [0u8; PROOF_LEN];
    io.read_exact(&mut buf).await?;
    Ok(buf.to_vec())
}

async fn write_proof<T: futures::AsyncWrite + Unpin + Send>(
    io: &mut T,
    proof: Vec<u8>,
) -> io::Result<()> {
    io.write_all(&proof).await?;
    io.close().await
}

impl rr::Codec for ProofCodec {
    type Protocol = StreamProtocol;
    type Request = Vec<u8>;
    type Response = Vec<u8>;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Vec<u8>>
    where
        T: futures::AsyncRead + Unpin + Send,
    {
        read_proof(io).await
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Vec<u8>>
    where
        T: futures::AsyncRead + Unpin + Send,
    {
        read_proof(io).await
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: Vec<u8>,
    ) -> io::Result<()>
    where
        T: futures::AsyncWrite + Unpin + Send,
    {
        write_proof(io, req).await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        res: Vec<u8>,
    ) -> io::Result<()>
    where
        T: futures::AsyncWrite + Unpin + Send,
    {
        write_proof(io, res).await
    }
}

/// The identity gate behaviour.
pub struct Behaviour {
    inner: rr::Behaviour<ProofCodec>,
    own_proof: IdentityProof,
    verifier: SharedVerifier,
    verified: HashSet<PeerId>,
    pending: HashSet<PeerId>,
    /// Peers connected whose proof was presented to the node and awaits its evaluation.
    presented: HashSet<PeerId>,
    /// Open connections per peer.
    connections: HashMap<PeerId, usize>,
    events: VecDeque<ToSwarm<Event, THandlerInEvent<rr::Behaviour<ProofCodec>>>>,
}

impl std::fmt::Debug for Behaviour {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("gate::Behaviour")
            .field("verified", &self.verified.len())
            .field("pending", &self.pending.len())
            .field("presented", &self.presented.len())
            .finish_non_exhaustive()
    }
}

impl Behaviour {
    /// A gate presenting `own_proof` and checking peers with `verifier` (shared with the core,
    /// which checks relayed proofs with the same cache and rate limit). `timeout` bounds one
    /// exchange (use seconds on TCP, tens of seconds on Tor).
    pub fn new(own_proof: IdentityProof, verifier: SharedVerifier, timeout: Duration) -> Self {
        let config = rr::Config::default()
            .with_request_timeout(timeout)
            .with_max_concurrent_streams(16);
        Self {
            inner: rr::Behaviour::with_codec(
                ProofCodec,
                [(PROTOCOL, ProtocolSupport::Full)],
                config,
            ),
            own_proof,
            verifier,
            verified: HashSet::new(),
            pending: HashSet::new(),
            presented: HashSet::new(),
            connections: HashMap::new(),
            events: VecDeque::new(),
        }
    }

    /// Whether `peer` showed a valid proof on a live connection.
    pub fn is_verified(&self, peer: &PeerId) -> bool {
        self.verified.contains(peer)
    }

    /// Peers verified and connected.
    pub fn verified_peers(&self) -> impl Iterator<Item = &PeerId> {
        self.verified.iter()
    }

    /// The verifier's counters (scrypt evaluations, cache hits, refusals).
    pub fn stats(&self) -> shoal_pow::VerifierStats {
        crate::node::checks::lock(&self.verifier).stats()
    }

    /// Checks the proof `bytes` that `peer` showed; `channel` is its request to answer with
    /// this node's proof (`None` when the proof answered ours). What the verifier's cache
    /// cannot decide is presented to the node; the peer's request is answered meanwhile (a proof
    /// is no secret, and the peer checks it in turn).
    fn check(&mut self, peer: PeerId, bytes: &[u8], channel: Option<rr::ResponseChannel<Vec<u8>>>) {
        let proof = match IdentityProof::from_bytes(bytes) {
            Ok(proof) => proof,
            Err(error) => return self.refuse(peer, error),
        };
        let known = {
            let mut verifier = crate::node::checks::lock(&self.verifier);
            verifier
                .check_key(PublicKey::from_peer_id(&peer).ok(), &proof)
                .map(|()| verifier.cached(&proof))
        };
        match known {
            Ok(Some(Ok(how))) => self.accept(peer, proof, how, channel),
            Ok(Some(Err(error))) | Err(error) => self.refuse(peer, error),
            Ok(None) => {
                self.pending.remove(&peer);
                if !self.verified.contains(&peer) && self.presented.insert(peer) {
                    self.events
                        .push_back(ToSwarm::GenerateEvent(Event::Presented { peer, proof }));
                }
                if let Some(channel) = channel {
                    self.answer(channel);
                }
            }
        }
    }

    /// The node's evaluation of a presented proof passed: `peer` counts as verified.
    pub fn confirm(&mut self, peer: &PeerId) {
        if self.presented.remove(peer) {
            self.verified.insert(*peer);
        }
    }

    /// The node's evaluation of `peer`'s proof failed: every connection to it is closed (the
    /// node already knows why, so no event).
    pub fn disconnect(&mut self, peer: &PeerId) {
        self.presented.remove(peer);
        self.pending.remove(peer);
        self.verified.remove(peer);
        self.close(*peer);
    }

    /// `peer`'s proof passed: it is verified, and its request (if any) answered.
    fn accept(
        &mut self,
        peer: PeerId,
        proof: IdentityProof,
        how: Verification,
        channel: Option<rr::ResponseChannel<Vec<u8>>>,
    ) {
        self.pending.remove(&peer);
        self.presented.remove(&peer);
        if self.verified.insert(peer) {
            self.events
                .push_back(ToSwarm::GenerateEvent(Event::Verified { peer, proof, how }));
        }
        if let Some(channel) = channel {
            self.answer(channel);
        }
    }

    /// Sends our proof to `peer` as a request (its answer carries the peer's proof); the
    /// exchange is pending until it ends.
    fn present(&mut self, peer: PeerId) {
        self.pending.insert(peer);
        let own = self.own_proof.to_bytes().to_vec();
        self.inner.send_request(&peer, own);
    }

    fn answer(&mut self, channel: rr::ResponseChannel<Vec<u8>>) {
        let own = self.own_proof.to_bytes().to_vec();
        // The peer may have gone already; then there is nobody to answer.
        let _ = self.inner.send_response(channel, own);
    }

    fn close(&mut self, peer: PeerId) {
        self.events.push_back(ToSwarm::CloseConnection {
            peer_id: peer,
            connection: CloseConnection::All,
        });
    }

    fn refuse(&mut self, peer: PeerId, error: ProofError) {
        self.pending.remove(&peer);
        self.verified.remove(&peer);
        self.close(peer);
        self.events
            .push_back(ToSwarm::GenerateEvent(Event::Refused { peer, error }));
    }

    fn on_inner_event(&mut self, event: rr::Event<Vec<u8>, Vec<u8>>) {
        match event {
            rr::Event::Message {
                peer,
                message:
                    rr::Message::Request {
                        request, channel, ..
                    },
                ..
            } => {
                self.check(peer, &request, Some(channel));
            }
            rr::Event::Message {
                peer,
                message: rr::Message::Response { response, .. },
                ..
            } => {
                self.check(peer, &response, None);
            }
            rr::Event::OutboundFailure {
                peer,
                error: rr::OutboundFailure::ConnectionClosed,
                ..
            } if self.connections.contains_key(&peer) => {
                // The connection the exchange went on closed (a stalled one replaced by a
                // fresh one, say) but another is open: exchange again on it. Even if the peer's
                // proof is in hand, ours may not have reached it, and it holds our messages
                // until it has.
                self.present(peer);
            }
            rr::Event::OutboundFailure { peer, error, .. } => {
                self.pending.remove(&peer);
                if self.verified.contains(&peer) || self.presented.contains(&peer) {
                    return;
                }
                tracing::debug!(%peer, %error, "identity exchange failed");
                match error {
                    // The peer does not speak the gate's protocol, or sent something unreadable.
                    rr::OutboundFailure::UnsupportedProtocols | rr::OutboundFailure::Io(_) => {
                        self.refuse(
                            peer,
                            ProofError::Malformed("no valid identity proof received"),
                        );
                    }
                    // Transient: the connection went away, or the answer was late. Nothing is held
                    // against the peer; a late peer is disconnected so its next connection
                    // repeats the exchange.
                    rr::OutboundFailure::Timeout => self.close(peer),
                    rr::OutboundFailure::ConnectionClosed | rr::OutboundFailure::DialFailure => {}
                }
            }
            rr::Event::InboundFailure { peer, error, .. } => {
                let shown = self.verified.contains(&peer) || self.presented.contains(&peer);
                if !shown && matches!(error, rr::InboundFailure::Io(_)) {
                    tracing::debug!(%peer, %error, "identity proof unreadable");
                    self.refuse(peer, ProofError::Malformed("identity proof unreadable"));
                }
            }
            rr::Event::ResponseSent { .. } => {}
        }
    }
}

impl NetworkBehaviour for Behaviour {
    type ConnectionHandler = THandler<rr::Behaviour<ProofCodec>>;
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
        self.inner
            .handle_pending_outbound_connection(id, peer, addresses, role)
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
            FromSwarm::ConnectionEstablished(e) => {
                *self.connections.entry(e.peer_id).or_default() += 1;
                if !self.verified.contains(&e.peer_id) && !self.pending.contains(&e.peer_id) {
                    self.present(e.peer_id);
                }
            }
            FromSwarm::ConnectionClosed(e) if e.remaining_established == 0 => {
                self.connections.remove(&e.peer_id);
                self.verified.remove(&e.peer_id);
                self.pending.remove(&e.peer_id);
                self.presented.remove(&e.peer_id);
            }
            FromSwarm::ConnectionClosed(e) => {
                self.connections.insert(e.peer_id, e.remaining_established);
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
        loop {
            if let Some(event) = self.events.pop_front() {
                return Poll::Ready(event);
            }
            match self.inner.poll(cx) {
                Poll::Ready(ToSwarm::GenerateEvent(event)) => self.on_inner_event(event),
                Poll::Ready(other) => {
                    return Poll::Ready(other.map_out(|_| unreachable!("mapped above")));
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use libp2p::Swarm;
    use libp2p::swarm::SwarmEvent;
    use libp2p_swarm_test::SwarmExt;
    use shoal_pow::{
        CancelToken, IdentityVerifier, MintOptions, NodeKey, Puzzle, PuzzleConfig, VerifierConfig,
        mint,
    };

    use super::*;
    use crate::identity::NodeKeyExt;

    fn puzzle() -> Puzzle {
        Puzzle::new(PuzzleConfig {
            log_n: 4,
            difficulty: 6,
            ..PuzzleConfig::testnet()
        })
        .unwrap()
    }

    fn valid_proof(key: &NodeKey) -> IdentityProof {
        let options = MintOptions::default();
        mint(
            &puzzle(),
            &key.public(),
            &options,
            &CancelToken::new(),
            |_| {},
        )
        .unwrap()
        .proof
    }

    fn invalid_proof(key: &NodeKey) -> IdentityProof {
        let mut proof = valid_proof(key);
        while puzzle().verify(&proof).is_ok() {
            proof.nonce = proof.nonce.wrapping_add(1);
        }
        proof
    }

    fn gate(proof: impl FnOnce(&NodeKey) -> IdentityProof) -> Swarm<Behaviour> {
        Swarm::new_ephemeral_tokio(|keypair| {
            let key = NodeKey::from_libp2p(&keypair).unwrap();
            let verifier = IdentityVerifier::new(puzzle(), VerifierConfig::default());
            let verifier = std::sync::Arc::new(std::sync::Mutex::new(verifier));
            Behaviour::new(proof(&key), verifier, Duration::from_secs(5))
        })
    }

    async fn next_gate_event(swarm: &mut Swarm<Behaviour>) -> Event {
        loop {
            if let SwarmEvent::Behaviour(e) = swarm.next_swarm_event().await {
                return e;
            }
        }
    }

    /// What the node does with a presented proof: evaluates it and tells the gate.
    fn decide(swarm: &mut Swarm<Behaviour>, peer: PeerId, proof: &IdentityProof) -> bool {
        let gate = swarm.behaviour_mut();
        let verifier = gate.verifier.clone();
        let passed = crate::node::checks::lock(&verifier)
            .verify_peer(
                std::time::Instant::now(),
                PublicKey::from_peer_id(&peer).ok(),
                proof,
            )
            .is_ok();
        if passed {
            gate.confirm(&peer);
        } else {
            gate.disconnect(&peer);
        }
        passed
    }

    #[tokio::test]
    async fn valid_peers_present_proofs_the_cache_then_decides() {
        let mut a = gate(valid_proof);
        let mut b = gate(valid_proof);
        let (addr, _) = b.listen().with_memory_addr_external().await;
        a.connect(&mut b).await;
        let (ea, eb) = libp2p_swarm_test::drive(&mut a, &mut b).await;
        let ([ea], [eb]): ([Event; 1], [Event; 1]) = (ea, eb);
        let (a_id, b_id) = (*a.local_peer_id(), *b.local_peer_id());
        // No evaluation in the gate: each side is shown the other's proof.
        let presented = |event: &Event, peer: PeerId| matches!(event, Event::Presented { peer: p, proof } if *p == peer && proof.key.peer_id() == peer);
        assert!(presented(&ea, b_id), "{ea:?}");
        assert!(presented(&eb, a_id), "{eb:?}");
        assert!(!a.behaviour().is_verified(&b_id));
        assert_eq!(a.behaviour().stats().scrypt_evaluations, 0);
        let Event::Presented { proof, .. } = ea else {
            unreachable!()
        };
        assert!(decide(&mut a, b_id, &proof));
        assert!(a.behaviour().is_verified(&b_id));
        // Once known, a peer's next connection is decided from the cache.
        let _ = a.disconnect_peer_id(b_id);
        let _ = b.disconnect_peer_id(a_id);
        let mut again = Vec::new();
        a.dial(addr).unwrap();
        tokio::time::timeout(Duration::from_secs(10), async {
            while again.is_empty() {
                tokio::select! {
                    e = a.next_swarm_event() => {
                        if let SwarmEvent::Behaviour(e) = e {
                            again.push(e);
                        }
                    }
                    _ = b.next_swarm_event() => {}
                }
            }
        })
        .await
        .expect("the second exchange ends");
        assert!(
            matches!(
                again[0],
                Event::Verified { peer, how: Verification::Cached, .. } if peer == b_id
            ),
            "{again:?}"
        );
        assert_eq!(a.behaviour().stats().scrypt_evaluations, 1);
    }

    #[tokio::test]
    async fn an_invalid_proof_is_presented_and_its_peer_disconnected_once_evaluated() {
        let mut honest = gate(valid_proof);
        let mut cheat = gate(invalid_proof);
        honest.listen().with_memory_addr_external().await;
        cheat.connect(&mut honest).await;
        let cheat_id = *cheat.local_peer_id();
        tokio::spawn(cheat.loop_on_next());
        let event = tokio::time::timeout(Duration::from_secs(10), next_gate_event(&mut honest))
            .await
            .expect("the gate shows the proof within the timeout");
        let Event::Presented { peer, proof } = event else {
            panic!("{event:?}");
        };
        assert_eq!(peer, cheat_id);
        assert!(!decide(&mut honest, cheat_id, &proof));
        let closed = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                if let SwarmEvent::ConnectionClosed { peer_id, .. } =
                    honest.next_swarm_event().await
                    && peer_id == cheat_id
                {
                    return;
                }
            }
        })
        .await;
        assert!(closed.is_ok(), "the cheat's connection was not closed");
        assert!(!honest.behaviour().is_verified(&cheat_id));
        // Its proof is remembered as refused: shown again, the gate refuses it by itself.
        let verifier = honest.behaviour().verifier.clone();
        assert!(matches!(
            crate::node::checks::lock(&verifier).cached(&proof),
            Some(Err(ProofError::TooFewBits { .. }))
        ));
    }

    #[tokio::test]
    async fn proof_of_another_key_is_refused() {
        let stolen = valid_proof(&NodeKey::generate());
        let mut honest = gate(valid_proof);
        let mut thief = gate(|_| stolen);
        honest.listen().with_memory_addr_external().await;
        thief.connect(&mut honest).await;
        let thief_id = *thief.local_peer_id();
        tokio::spawn(thief.loop_on_next());
        let event = tokio::time::timeout(Duration::from_secs(10), next_gate_event(&mut honest))
            .await
            .expect("the gate decides within the timeout");
        assert_eq!(
            event,
            Event::Refused {
                peer: thief_id,
                error: ProofError::WrongKey
            }
        );
    }
}
