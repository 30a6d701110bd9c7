//! The DHT's wire protocol `/shoal/<network>/dht/4.0.0` ([`crate::Config::dht_protocol`]): every
//! request one node makes of another, and the answers, as CBOR with bounded sizes, carried in
//! frames on long-lived streams ([`crate::link`]).
//!
//! One protocol carries closest-peer lookups, record gets, replica puts, lockstep notices and
//! relayed identity proofs, so the swarm has one behaviour for them and the simulator one codec.
//! Peer ids travel as bytes (a peer's own encoding, see [`crate::core::Peer`]); a list is cut to
//! its bound after decoding and unreadable entries are skipped, so a peer can neither make a node
//! keep more than the bounds nor spoil a whole answer with one bad id.
//!
//! [`encode`] and [`decode`] are the codec (`cbor4ii`'s serde encoding, with the size bound
//! checked first); the transport, the simulator and the fuzz targets call them.

use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;
use shoal_swim::Credential;

use crate::lockstep::MAX_NOTICE_LEN;
use crate::receipt::MAX_RECEIPT_LEN;
use crate::record::{MAX_KEY_LEN, MAX_RECORD_LEN};

/// Most peers in one [`Response::Peers`] or [`Response::Record`] answer.
pub const MAX_PEERS: usize = 32;

/// Most peers asked about, or answered for, in one [`Request::Proofs`] exchange.
pub const MAX_PROOFS: usize = 64;

/// Most notices in one [`Response::Notices`].
pub const MAX_NOTICES: usize = 16;

/// Longest refusal reason sent; longer ones are cut.
pub const MAX_REASON_LEN: usize = 256;

/// Room for one encoded peer id (ed25519 peer ids take 38 bytes; 64 covers every multihash
/// libp2p accepts for a key).
pub const MAX_PEER_ID_LEN: usize = 64;

/// Room for one encoded identity proof (40 bytes for Shoal's scrypt proof).
pub const MAX_PROOF_LEN: usize = 64;

/// Largest encoded request: a replica put of the largest record envelope, with its framing.
pub const MAX_REQUEST_LEN: usize = MAX_RECORD_LEN + 64;

/// Largest encoded response: the largest record, a full list of closer peers, a notice and a
/// receipt.
pub const MAX_RESPONSE_LEN: usize =
    MAX_RECORD_LEN + MAX_PEERS * (MAX_PEER_ID_LEN + 4) + MAX_NOTICE_LEN + MAX_RECEIPT_LEN + 160;

/// A request of one node to another.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// The peers of the answering node's routing table closest to this target (a record key, or
    /// a peer id's bytes). Answered with [`Response::Peers`].
    FindNode(ByteBuf),
    /// The record held under this key, and the peers closest to it. Answered with
    /// [`Response::Record`].
    GetRecord(ByteBuf),
    /// Keep this signed record envelope (a replica put). Answered with [`Response::Kept`] and
    /// the holder's receipt once it passed every check and is kept durably, or
    /// [`Response::Refused`].
    PutRecord(ByteBuf),
    /// Keep this signed record envelope as a copy beyond the put's quorum: checked like
    /// [`Request::PutRecord`] and kept at once, before it is on disk: the holder writes copies
    /// together and makes them durable within its copy flush delay (a crash before that loses
    /// them; the next republish makes them again). The quorum a caller was promised never rests
    /// on these, so the sender does not ask for an answer ([`crate::link`]'s told frames); a
    /// holder asked for one answers [`Response::Stored`] once the copy is kept.
    PutCopy(ByteBuf),
    /// Keep this lockstep notice envelope. Answered with [`Response::Accepted`] once it is kept
    /// durably, or [`Response::Refused`].
    Announce(ByteBuf),
    /// The lockstep notices kept for this key. Answered with [`Response::Notices`].
    Notices(ByteBuf),
    /// The identity proofs held for these peers (peer ids as bytes). Answered with
    /// [`Response::Proofs`].
    Proofs(Vec<ByteBuf>),
    /// As [`Request::GetRecord`], and the holder signs a fresh receipt for the record it holds
    /// ([`crate::receipt`]): its word, at the time of asking, that it keeps that record.
    /// Answered with [`Response::Record`], `receipt` set when a record is held.
    Prove(ByteBuf),
}

/// An answer to a [`Request`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// Closest peers first.
    Peers(Vec<ByteBuf>),
    /// The record held for the key, if any; without one, the closest peers known, closest
    /// first.
    Record {
        /// The record envelope.
        record: Option<ByteBuf>,
        /// Peers closer to the key (empty with a record).
        closer: Vec<ByteBuf>,
        /// With a record: the latest lockstep notice its publisher made for the key that the
        /// answering node keeps, so the asker can tell whether the value was announced without
        /// another round trip.
        #[serde(default)]
        notice: Option<ByteBuf>,
        /// With a record, asked by [`Request::Prove`]: the holder's receipt for it.
        #[serde(default)]
        receipt: Option<ByteBuf>,
    },
    /// The copy ([`Request::PutCopy`]) passed every check and is kept.
    Stored,
    /// The record ([`Request::PutRecord`]) passed every check and is kept durably: the holder's
    /// receipt for it ([`crate::receipt::Receipt`]).
    Kept(ByteBuf),
    /// The notice was kept.
    Accepted,
    /// The record or notice was not kept (or the asker is not admitted), with the reason.
    Refused(String),
    /// The notices kept for the key, newest first.
    Notices(Vec<ByteBuf>),
    /// For the peers asked about that the answering node knows: what it can say of each (peers
    /// it knows nothing of are left out).
    Proofs(Vec<(ByteBuf, Relayed)>),
}

/// What a relayer says of one peer's identity proof ([`Response::Proofs`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Relayed {
    /// The proof, which the relayer checked (the peer is admitted there, or departed lately).
    Proof(ByteBuf),
    /// The proof as the relayer holds it, not checked there yet: the asker may list the peer and
    /// check the proof itself, but a failure is the peer's, not the relayer's.
    Unchecked(ByteBuf),
    /// The relayer checked the peer's proof and refused it: do not list or dial the peer.
    Refused,
}

impl Relayed {
    /// The credential that carries this on news that the peer is alive
    /// ([`shoal_swim::Credential`]): a tag byte, 1 for [`Relayed::Proof`] and 0 for
    /// [`Relayed::Unchecked`], then the proof. `None` for [`Relayed::Refused`], which no news
    /// carries (a refused peer is not a member).
    pub fn to_credential(&self) -> Option<Credential> {
        let (tag, proof) = match self {
            Relayed::Proof(proof) => (1, proof),
            Relayed::Unchecked(proof) => (0, proof),
            Relayed::Refused => return None,
        };
        let mut bytes = Vec::with_capacity(1 + proof.len());
        bytes.push(tag);
        bytes.extend_from_slice(proof);
        Some(Credential::new(bytes))
    }

    /// What a credential says, if it is one [`Relayed::to_credential`] made: `None` for an
    /// empty one or an unknown tag.
    pub fn from_credential(credential: &Credential) -> Option<Relayed> {
        let (tag, proof) = credential.as_bytes().split_first()?;
        let proof = ByteBuf::from(proof.to_vec());
        match tag {
            1 => Some(Relayed::Proof(proof)),
            0 => Some(Relayed::Unchecked(proof)),
            _ => None,
        }
    }
}

impl Response {
    /// A refusal for `reason`, cut to [`MAX_REASON_LEN`] bytes at a character boundary.
    pub fn refused(reason: impl Into<String>) -> Self {
        let mut reason = reason.into();
        if reason.len() > MAX_REASON_LEN {
            let mut end = MAX_REASON_LEN;
            while !reason.is_char_boundary(end) {
                end -= 1;
            }
            reason.truncate(end);
        }
        Self::Refused(reason)
    }

    /// The name of the variant, for logs and refusals of a mismatched answer.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Peers(_) => "peers",
            Self::Record { .. } => "record",
            Self::Stored => "stored",
            Self::Kept(_) => "kept",
            Self::Accepted => "accepted",
            Self::Refused(_) => "refused",
            Self::Notices(_) => "notices",
            Self::Proofs(_) => "proofs",
        }
    }
}

impl Response {
    /// What a node that drops the records it keeps answers in place of this: a record answer
    /// without its record, notice or receipt, and without closer peers; any other answer as it
    /// is. The simulator's drop adversary and the node's test-only misbehaviour both answer so.
    pub fn withheld(self) -> Self {
        match self {
            Self::Record { .. } => Self::Record {
                record: None,
                closer: Vec::new(),
                notice: None,
                receipt: None,
            },
            other => other,
        }
    }
}

impl Request {
    /// The request's method, for per-method limits and counters: 0 `FindNode`, 1 `GetRecord`
    /// and `Prove`, 2 `PutRecord`, 3 `PutCopy`, 4 `Announce`, 5 `Notices`, 6 `Proofs`.
    pub fn method(&self) -> u8 {
        match self {
            Self::FindNode(_) => 0,
            Self::GetRecord(_) | Self::Prove(_) => 1,
            Self::PutRecord(_) => 2,
            Self::PutCopy(_) => 3,
            Self::Announce(_) => 4,
            Self::Notices(_) => 5,
            Self::Proofs(_) => 6,
        }
    }

    /// Whether this asks the peer to keep a record ([`Request::PutRecord`] or
    /// [`Request::PutCopy`]).
    pub fn is_put(&self) -> bool {
        matches!(self, Self::PutRecord(_) | Self::PutCopy(_))
    }

    /// Whether every field is within its bound: keys at most [`MAX_KEY_LEN`] bytes (a lookup
    /// target may also be a peer id), envelopes within their limits, at most [`MAX_PROOFS`] peers.
    pub fn is_bounded(&self) -> bool {
        match self {
            Self::FindNode(target) => target.len() <= MAX_KEY_LEN.max(MAX_PEER_ID_LEN),
            Self::GetRecord(key) | Self::Prove(key) | Self::Notices(key) => {
                key.len() <= MAX_KEY_LEN
            }
            Self::PutRecord(envelope) | Self::PutCopy(envelope) => envelope.len() <= MAX_RECORD_LEN,
            Self::Announce(envelope) => envelope.len() <= MAX_NOTICE_LEN,
            Self::Proofs(peers) => {
                peers.len() <= MAX_PROOFS && peers.iter().all(|p| p.len() <= MAX_PEER_ID_LEN)
            }
        }
    }
}

/// Why a message could not be decoded. Nothing was read beyond the bound.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The message is longer than its bound.
    #[error("message of {len} bytes, at most {max} allowed")]
    TooLong {
        /// Its length.
        len: usize,
        /// The bound.
        max: usize,
    },
    /// The bytes are not a message of this protocol.
    #[error("malformed message: {0}")]
    Malformed(String),
}

/// Encodes a request or response as the protocol carries it.
pub fn encode<M: Serialize>(message: &M) -> Vec<u8> {
    // Invariant: the message types hold only byte strings, text, lists and options, which
    // cbor4ii always encodes.
    cbor4ii::serde::to_vec(Vec::new(), message).expect("wire messages always encode")
}

/// Decodes a request or response of at most `max` bytes.
pub fn decode<M: serde::de::DeserializeOwned>(bytes: &[u8], max: usize) -> Result<M, WireError> {
    if bytes.len() > max {
        return Err(WireError::TooLong {
            len: bytes.len(),
            max,
        });
    }
    cbor4ii::serde::from_slice(bytes).map_err(|e| WireError::Malformed(e.to_string()))
}

/// Peer ids as bytes, at most `max` of them.
pub fn peer_list<'a>(peers: impl IntoIterator<Item = &'a [u8]>, max: usize) -> Vec<ByteBuf> {
    peers
        .into_iter()
        .take(max)
        .map(|p| ByteBuf::from(p.to_vec()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_credential_says_what_a_relayer_says_of_a_proof() {
        let proof = ByteBuf::from(vec![5; 40]);
        for said in [
            Relayed::Proof(proof.clone()),
            Relayed::Unchecked(proof.clone()),
        ] {
            let credential = said.to_credential().expect("a proof");
            assert_eq!(credential.as_bytes().len(), 41);
            assert_eq!(Relayed::from_credential(&credential), Some(said));
        }
        assert_eq!(Relayed::Refused.to_credential(), None);
        assert_eq!(Relayed::from_credential(&Credential::default()), None);
        assert_eq!(
            Relayed::from_credential(&Credential::new(vec![2, 5, 5])),
            None
        );
    }

    #[test]
    fn refusal_reasons_are_bounded_at_a_char_boundary() {
        let Response::Refused(short) = Response::refused("stale") else {
            panic!("not a refusal");
        };
        assert_eq!(short, "stale");
        let long = "é".repeat(MAX_REASON_LEN);
        let Response::Refused(cut) = Response::refused(long) else {
            panic!("not a refusal");
        };
        assert!(cut.len() <= MAX_REASON_LEN && cut.len() >= MAX_REASON_LEN - 1);
        assert!(cut.chars().all(|c| c == 'é'));
    }

    #[test]
    fn largest_messages_fit_their_bounds() {
        let request = Request::PutRecord(ByteBuf::from(vec![0xff; MAX_RECORD_LEN]));
        assert!(request.is_bounded());
        assert!(encode(&request).len() <= MAX_REQUEST_LEN);
        let proofs = Request::Proofs(vec![ByteBuf::from(vec![7; MAX_PEER_ID_LEN]); MAX_PROOFS]);
        assert!(encode(&proofs).len() <= MAX_REQUEST_LEN);
        let record = Response::Record {
            record: Some(ByteBuf::from(vec![0xff; MAX_RECORD_LEN])),
            closer: vec![ByteBuf::from(vec![1; MAX_PEER_ID_LEN]); MAX_PEERS],
            notice: Some(ByteBuf::from(vec![2; MAX_NOTICE_LEN])),
            receipt: Some(ByteBuf::from(vec![3; MAX_RECEIPT_LEN])),
        };
        assert!(encode(&record).len() <= MAX_RESPONSE_LEN);
        let notices = Response::Notices(vec![ByteBuf::from(vec![2; MAX_NOTICE_LEN]); MAX_NOTICES]);
        assert!(encode(&notices).len() <= MAX_RESPONSE_LEN);
        let proofs = Response::Proofs(vec![
            (
                ByteBuf::from(vec![1; MAX_PEER_ID_LEN]),
                Relayed::Proof(ByteBuf::from(vec![2; MAX_PROOF_LEN]))
            );
            MAX_PROOFS
        ]);
        assert!(encode(&proofs).len() <= MAX_RESPONSE_LEN);
        assert!(encode(&Response::refused("x".repeat(4 * MAX_REASON_LEN))).len() < 512);
    }

    #[test]
    fn messages_round_trip_and_garbage_is_refused() {
        for request in [
            Request::FindNode(ByteBuf::from(b"target".to_vec())),
            Request::GetRecord(ByteBuf::from(b"key".to_vec())),
            Request::Prove(ByteBuf::from(b"key".to_vec())),
            Request::Announce(ByteBuf::from(vec![1, 2, 3])),
            Request::Notices(ByteBuf::from(b"key".to_vec())),
            Request::Proofs(vec![ByteBuf::from(vec![1; 38])]),
        ] {
            let back: Request = decode(&encode(&request), MAX_REQUEST_LEN).unwrap();
            assert_eq!(back, request);
        }
        assert!(matches!(
            decode::<Request>(&[0xff; 10], MAX_REQUEST_LEN),
            Err(WireError::Malformed(_))
        ));
        assert!(matches!(
            decode::<Request>(&vec![0; MAX_REQUEST_LEN + 1], MAX_REQUEST_LEN),
            Err(WireError::TooLong { .. })
        ));
        let oversized = Request::GetRecord(ByteBuf::from(vec![0; MAX_KEY_LEN + 1]));
        assert!(!oversized.is_bounded());
    }
}
