//! Proof relay on `/shoal/identity-relay/1`: how a node verifies a member it only heard of.
//!
//! SWIM gossip names members the node has never connected to. Rather than dialing each one so
//! the gate can check its proof (which would connect every member to every other), the node asks
//! the member that named it for the identity proofs it holds, and checks each proof itself:
//! one scrypt evaluation per new peer, cached and rate-limited like the gate's own checks. A
//! member is admitted only after that check, so the rule holds that an unverified peer enters
//! neither the membership nor the routing table. A relayer can only pass on proofs; it cannot
//! vouch for a peer whose proof is not valid.
//!
//! Messages are CBOR over libp2p request-response, bounded in count and size.

use std::collections::HashSet;
use std::time::Duration;

use libp2p::request_response as rr;
use libp2p::{PeerId, StreamProtocol};
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;
use shoal_pow::{IdentityProof, PROOF_LEN};

/// The protocol name.
pub const PROTOCOL: StreamProtocol = StreamProtocol::new("/shoal/identity-relay/1");

/// Most peers asked about, or answered for, in one message.
pub const MAX_PEERS: usize = 64;

/// Room for one encoded peer id (ed25519 peer ids take 38 bytes; 64 covers every multihash
/// libp2p accepts for a key).
const MAX_PEER_ID_LEN: usize = 64;

/// Largest encoded request.
pub const MAX_REQUEST_LEN: usize = 16 + MAX_PEERS * (MAX_PEER_ID_LEN + 4);

/// Largest encoded response.
pub const MAX_RESPONSE_LEN: usize = 16 + MAX_PEERS * (MAX_PEER_ID_LEN + PROOF_LEN + 8);

/// Asks for the identity proofs of these peers (peer ids as bytes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request(pub Vec<ByteBuf>);

/// The proofs held for the peers asked about: `(peer id, proof)` pairs. Peers the answering node
/// holds no proof for are left out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response(pub Vec<(ByteBuf, ByteBuf)>);

/// The request-response behaviour carrying the protocol.
pub type Behaviour = rr::cbor::Behaviour<Request, Response>;

/// A relay behaviour whose requests time out after `timeout`.
pub fn behaviour(timeout: Duration) -> Behaviour {
    crate::behaviour::cbor_request_response(
        PROTOCOL,
        MAX_REQUEST_LEN,
        MAX_RESPONSE_LEN,
        timeout,
        16,
    )
}

/// The request asking for `peers` (at most [`MAX_PEERS`] are taken).
pub fn request(peers: &[PeerId]) -> Request {
    Request(
        peers
            .iter()
            .take(MAX_PEERS)
            .map(|p| ByteBuf::from(p.to_bytes()))
            .collect(),
    )
}

/// Answers `request` with the proofs `held` knows, for at most [`MAX_PEERS`] peers; unreadable
/// peer ids are skipped.
pub fn answer(request: Request, held: impl Fn(&PeerId) -> Option<IdentityProof>) -> Response {
    Response(
        request
            .0
            .into_iter()
            .take(MAX_PEERS)
            .filter_map(|bytes| PeerId::from_bytes(&bytes).ok())
            .filter_map(|peer| {
                let proof = held(&peer)?;
                Some((
                    ByteBuf::from(peer.to_bytes()),
                    ByteBuf::from(proof.to_bytes().to_vec()),
                ))
            })
            .collect(),
    )
}

/// The `(peer, proof bytes)` pairs of `response` for peers in `asked`, each peer once, at most
/// [`MAX_PEERS`]; anything else (unreadable ids, peers not asked about) is dropped. The proofs
/// are not checked here.
pub fn proofs_from(response: Response, asked: &HashSet<PeerId>) -> Vec<(PeerId, Vec<u8>)> {
    let mut seen = HashSet::new();
    response
        .0
        .into_iter()
        .take(MAX_PEERS)
        .filter_map(|(peer, proof)| Some((PeerId::from_bytes(&peer).ok()?, proof.into_vec())))
        .filter(|(peer, _)| asked.contains(peer) && seen.insert(*peer))
        .collect()
}

#[cfg(test)]
mod tests {
    use shoal_pow::{CancelToken, MintOptions, NodeKey, Puzzle, PuzzleConfig, mint};

    use super::*;

    fn proof(key: &NodeKey) -> IdentityProof {
        let puzzle = Puzzle::new(PuzzleConfig {
            log_n: 4,
            difficulty: 2,
            ..PuzzleConfig::testnet()
        })
        .unwrap();
        mint(
            &puzzle,
            &key.public(),
            &MintOptions::default(),
            &CancelToken::new(),
            |_| {},
        )
        .unwrap()
        .proof
    }

    #[test]
    fn only_held_proofs_of_asked_peers_come_back() {
        let (a, b, c) = (
            NodeKey::generate(),
            NodeKey::generate(),
            NodeKey::generate(),
        );
        let (pa, pb) = (proof(&a), proof(&b));
        let asked = [a.peer_id(), c.peer_id()];
        let response = answer(request(&asked), |p| {
            [(a.peer_id(), pa), (b.peer_id(), pb)]
                .into_iter()
                .find(|(q, _)| q == p)
                .map(|(_, proof)| proof)
        });
        // c has no proof held; b was not asked about.
        assert_eq!(response.0.len(), 1);
        let asked: HashSet<PeerId> = asked.into_iter().collect();
        let got = proofs_from(response, &asked);
        assert_eq!(got, vec![(a.peer_id(), pa.to_bytes().to_vec())]);
    }

    #[test]
    fn unasked_duplicate_and_unreadable_entries_are_dropped() {
        let (a, b) = (NodeKey::generate(), NodeKey::generate());
        let pa = ByteBuf::from(proof(&a).to_bytes().to_vec());
        let response = Response(vec![
            (ByteBuf::from(vec![1, 2, 3]), pa.clone()),
            (ByteBuf::from(b.peer_id().to_bytes()), pa.clone()),
            (ByteBuf::from(a.peer_id().to_bytes()), pa.clone()),
            (
                ByteBuf::from(a.peer_id().to_bytes()),
                ByteBuf::from(vec![0; 3]),
            ),
        ]);
        let asked: HashSet<PeerId> = [a.peer_id()].into_iter().collect();
        let got = proofs_from(response, &asked);
        assert_eq!(got, vec![(a.peer_id(), pa.into_vec())]);
    }

    #[test]
    fn a_full_request_and_response_fit_their_bounds() {
        let keys: Vec<NodeKey> = (0..MAX_PEERS + 5).map(|_| NodeKey::generate()).collect();
        let peers: Vec<PeerId> = keys.iter().map(NodeKey::peer_id).collect();
        let p = proof(&keys[0]);
        let req = request(&peers);
        assert_eq!(req.0.len(), MAX_PEERS);
        let bytes = cbor4ii::serde::to_vec(Vec::new(), &req).unwrap();
        assert!(bytes.len() <= MAX_REQUEST_LEN);
        let response = answer(req, |_| Some(p));
        assert_eq!(response.0.len(), MAX_PEERS);
        let bytes = cbor4ii::serde::to_vec(Vec::new(), &response).unwrap();
        assert!(bytes.len() <= MAX_RESPONSE_LEN, "{} bytes", bytes.len());
    }
}
