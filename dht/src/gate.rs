//! The identity gate: on every connection the peers exchange identity proofs on
//! `/shoal/identity/1`, and a peer whose proof is invalid is disconnected.
//!
//! When a connection to a peer not yet verified is established, the gate sends its own proof as a
//! request; the other side checks it and answers with its own proof, which the gate checks in
//! turn. Both sides do this, so each verifies the other whoever dialed. Checks go through
//! [`shoal_pow::IdentityVerifier`]: one scrypt evaluation per new peer, cached, rate-limited. The
//! evaluation runs on the blocking pool, not in the swarm's poll: a node meeting many peers at
//! once would otherwise stop answering probes for tens of milliseconds a peer. The DHT lets a
//! peer into its routing table only after [`Event::Verified`].

use std::collections::{HashMap, HashSet, VecDeque};
use std::io;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::{AsyncReadExt, AsyncWriteExt, FutureExt, StreamExt};
use libp2p::core::Endpoint;
use libp2p::core::transport::PortUse;
use libp2p::request_response::{self as rr, ProtocolSupport};
use libp2p::swarm::{
    CloseConnection, ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, THandler,
    THandlerInEvent, THandlerOutEvent, ToSwarm,
};
use libp2p::{Multiaddr, PeerId, StreamProtocol};
use shoal_pow::{Check, IdentityProof, PROOF_LEN, ProofError, Verification};

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
    /// Peers whose proof is being evaluated, with the requests to answer once it passes (the
    /// peer's own exchange, when it asked first).
    evaluating: HashMap<PeerId, Vec<rr::ResponseChannel<Vec<u8>>>>,
    evaluations: FuturesUnordered<BoxFuture<'static, Evaluated>>,
    events: VecDeque<ToSwarm<Event, THandlerInEvent<rr::Behaviour<ProofCodec>>>>,
}

/// A proof evaluated off the swarm: the peer, its proof, and the outcome with the time it took
/// (`None` if the evaluation did not run to its end: it panicked, or the runtime is stopping).
type Evaluated = (
    PeerId,
    IdentityProof,
    Option<(Result<(), ProofError>, Duration)>,
);

impl std::fmt::Debug for Behaviour {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("gate::Behaviour")
            .field("verified", &self.verified.len())
            .field("pending", &self.pending.len())
            .field("evaluating", &self.evaluating.len())
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
            evaluating: HashMap::new(),
            evaluations: FuturesUnordered::new(),
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

    /// Checks the proof `bytes` that `peer` presented; `channel` is its request to answer with
    /// this node's proof once the check passes (`None` when the proof answered ours). A proof
    /// that needs an evaluation is sent to the blocking pool and decided in [`Self::on_evaluated`].
    fn check(
        &mut self,
        now: Instant,
        peer: PeerId,
        bytes: &[u8],
        channel: Option<rr::ResponseChannel<Vec<u8>>>,
    ) {
        if let Some(waiting) = self.evaluating.get_mut(&peer) {
            // Its request and its answer to ours cost one evaluation, not two.
            waiting.extend(channel);
            return;
        }
        let proof = match IdentityProof::from_bytes(bytes) {
            Ok(proof) => proof,
            Err(error) => return self.refuse(peer, error),
        };
        let step = {
            let mut verifier = crate::node::checks::lock(&self.verifier);
            verifier
                .check_key(&peer, &proof)
                .and_then(|()| verifier.begin(now, &proof))
                .map(|step| (step, verifier.puzzle().clone()))
        };
        match step {
            Ok((Check::Done(how), _)) => self.accept(peer, proof, how, channel),
            Ok((Check::Evaluate, puzzle)) => {
                self.evaluating.insert(peer, channel.into_iter().collect());
                let evaluation = tokio::task::spawn_blocking(move || {
                    crate::node::checks::evaluate(&puzzle, &proof)
                });
                self.evaluations.push(
                    evaluation
                        .map(move |joined| (peer, proof, joined.ok()))
                        .boxed(),
                );
            }
            Err(ProofError::RateLimited) => {
                // Not the peer's fault: shed the connection without holding it against the peer;
                // its next connection repeats the exchange.
                self.pending.remove(&peer);
                self.close(peer);
            }
            Err(error) => self.refuse(peer, error),
        }
    }

    /// An evaluation the blocking pool ran ended. Its outcome is recorded whether or not the
    /// peer is still connected (its next connection then costs nothing), and acted on if it is.
    fn on_evaluated(&mut self, (peer, proof, evaluated): Evaluated) {
        let channels = self.evaluating.remove(&peer).unwrap_or_default();
        let Some((outcome, spent)) = evaluated else {
            // Not evaluated after all: shed like a rate-limited check.
            self.pending.remove(&peer);
            return self.close(peer);
        };
        let recorded = crate::node::checks::lock(&self.verifier).finish(&proof, outcome, spent);
        if !self.pending.contains(&peer) {
            // Its connection closed meanwhile: nothing to answer, nobody to disconnect.
            return;
        }
        match recorded {
            Ok(how) => {
                let mut channels = channels.into_iter();
                let first = channels.next();
                self.accept(peer, proof, how, first);
                for channel in channels {
                    self.answer(channel);
                }
            }
            Err(error) => self.refuse(peer, error),
        }
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
        if self.verified.insert(peer) {
            self.events
                .push_back(ToSwarm::GenerateEvent(Event::Verified { peer, proof, how }));
        }
        if let Some(channel) = channel {
            self.answer(channel);
        }
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

    fn on_inner_event(&mut self, now: Instant, event: rr::Event<Vec<u8>, Vec<u8>>) {
        match event {
            rr::Event::Message {
                peer,
                message:
                    rr::Message::Request {
                        request, channel, ..
                    },
                ..
            } => {
                self.check(now, peer, &request, Some(channel));
            }
            rr::Event::Message {
                peer,
                message: rr::Message::Response { response, .. },
                ..
            } => {
                self.check(now, peer, &response, None);
            }
            rr::Event::OutboundFailure { peer, error, .. } => {
                self.pending.remove(&peer);
                if self.verified.contains(&peer) {
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
                if !self.verified.contains(&peer) && matches!(error, rr::InboundFailure::Io(_)) {
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
            FromSwarm::ConnectionEstablished(e)
                if !self.verified.contains(&e.peer_id) && self.pending.insert(e.peer_id) =>
            {
                let own = self.own_proof.to_bytes().to_vec();
                self.inner.send_request(&e.peer_id, own);
            }
            FromSwarm::ConnectionClosed(e) if e.remaining_established == 0 => {
                self.verified.remove(&e.peer_id);
                self.pending.remove(&e.peer_id);
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
                return Poll::Ready(event);
            }
            if let Poll::Ready(Some(evaluated)) = self.evaluations.poll_next_unpin(cx) {
                self.on_evaluated(evaluated);
                continue;
            }
            match self.inner.poll(cx) {
                Poll::Ready(ToSwarm::GenerateEvent(event)) => self.on_inner_event(now, event),
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

    #[tokio::test]
    async fn valid_peers_verify_each_other() {
        let mut a = gate(valid_proof);
        let mut b = gate(valid_proof);
        b.listen().with_memory_addr_external().await;
        a.connect(&mut b).await;
        let (ea, eb) = libp2p_swarm_test::drive(&mut a, &mut b).await;
        let ([ea], [eb]): ([Event; 1], [Event; 1]) = (ea, eb);
        let (a_id, b_id) = (*a.local_peer_id(), *b.local_peer_id());
        let verified = |event: &Event, peer: PeerId| {
            matches!(event, Event::Verified { peer: p, proof, how: Verification::Verified }
                if *p == peer && proof.key.peer_id() == peer)
        };
        assert!(verified(&ea, b_id), "{ea:?}");
        assert!(verified(&eb, a_id), "{eb:?}");
        assert!(a.behaviour().is_verified(b.local_peer_id()));
        assert_eq!(a.behaviour().stats().scrypt_evaluations, 1);
    }

    #[tokio::test]
    async fn invalid_proof_is_refused_and_disconnected() {
        let mut honest = gate(valid_proof);
        let mut cheat = gate(invalid_proof);
        honest.listen().with_memory_addr_external().await;
        cheat.connect(&mut honest).await;
        let cheat_id = *cheat.local_peer_id();
        tokio::spawn(cheat.loop_on_next());
        let event = tokio::time::timeout(Duration::from_secs(10), next_gate_event(&mut honest))
            .await
            .expect("the gate decides within the timeout");
        assert!(
            matches!(
                event,
                Event::Refused { peer, error: ProofError::TooFewBits { .. } } if peer == cheat_id
            ),
            "{event:?}"
        );
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
    }

    #[tokio::test]
    async fn a_rate_limited_check_closes_without_refusing() {
        use shoal_pow::{NodeKey, VerifierConfig};
        // The honest node may run one scrypt, then none for a long while.
        let mut honest = Swarm::new_ephemeral_tokio(|keypair| {
            let key = NodeKey::from_libp2p(&keypair).unwrap();
            let config = VerifierConfig {
                rate_per_second: std::num::NonZeroU32::MIN,
                burst: std::num::NonZeroU32::MIN,
                ..VerifierConfig::default()
            };
            let verifier = IdentityVerifier::new(puzzle(), config);
            let verifier = std::sync::Arc::new(std::sync::Mutex::new(verifier));
            Behaviour::new(valid_proof(&key), verifier, Duration::from_secs(5))
        });
        let (addr, _) = honest.listen().with_memory_addr_external().await;
        for _ in 0..2 {
            let mut peer = gate(valid_proof);
            peer.dial(addr.clone()).unwrap();
            tokio::spawn(peer.loop_on_next());
        }
        // Watch every event of the honest node: one peer gets verified, the other is
        // disconnected, and nobody is refused.
        let mut verified = Vec::new();
        let mut closed = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), async {
            while verified.is_empty() || closed.is_empty() {
                match honest.next_swarm_event().await {
                    SwarmEvent::Behaviour(Event::Refused { peer, error }) => {
                        panic!("{peer} refused for {error}")
                    }
                    SwarmEvent::Behaviour(Event::Verified { peer, .. }) => verified.push(peer),
                    SwarmEvent::ConnectionClosed { peer_id, .. } => closed.push(peer_id),
                    _ => {}
                }
            }
        })
        .await
        .expect("one peer verified, the other disconnected");
        assert_eq!(verified.len(), 1);
        assert!(!closed.contains(&verified[0]));
        assert!(!honest.behaviour().is_verified(&closed[0]));
        let stats = honest.behaviour().stats();
        // The limited peer's request and its answer to ours were both turned away unchecked.
        assert!(stats.rate_limited >= 1, "{stats:?}");
        assert_eq!(
            (stats.scrypt_evaluations, stats.rejected),
            (1, 0),
            "{stats:?}"
        );
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
