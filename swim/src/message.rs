//! Wire types and their CBOR codec.
//!
//! Every message is one CBOR value (cbor4ii through serde) with short field names. Every size is
//! bounded: [`decode`] refuses input longer than its `max_len` argument (at most
//! [`MAX_MESSAGE_BYTES`]), more than [`MAX_GOSSIP_UPDATES`] piggybacked updates, more than
//! [`MAX_PUSH_PULL_MEMBERS`] members in a push-pull, more than [`MAX_ADDRESSES`] addresses per
//! member and addresses longer than [`MAX_ADDRESS_LEN`]. Decoding returns a [`CodecError`] and
//! never panics (a fuzz target in `swim/fuzz` checks it).

use std::fmt;

use cbor4ii::core::dec::{Read as _, Reference};
use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use sha2::{Digest as _, Sha256};

use crate::Identity;
use crate::error::CodecError;

/// Hard ceiling of an encoded message. Unit: bytes.
pub const MAX_MESSAGE_BYTES: usize = 1024 * 1024;
/// Maximum number of updates piggybacked on one message.
pub const MAX_GOSSIP_UPDATES: usize = 512;
/// Maximum number of members in one push-pull.
pub const MAX_PUSH_PULL_MEMBERS: usize = 8192;
/// Maximum number of addresses of one member.
pub const MAX_ADDRESSES: usize = 8;
/// Maximum length of one address. Unit: bytes.
pub const MAX_ADDRESS_LEN: usize = 256;
/// Maximum length of a [`Credential`]. Unit: bytes.
pub const MAX_CREDENTIAL_LEN: usize = 128;

/// An opaque transport address of a member (for libp2p, the bytes of a `Multiaddr`). Encoded as
/// a CBOR byte string of at most [`MAX_ADDRESS_LEN`] bytes.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Address(pub Vec<u8>);

impl fmt::Debug for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match std::str::from_utf8(&self.0) {
            Ok(s) => write!(f, "Address({s:?})"),
            Err(_) => write!(f, "Address({:02x?})", self.0),
        }
    }
}

impl From<&str> for Address {
    fn from(s: &str) -> Self {
        Address(s.as_bytes().to_vec())
    }
}

impl Serialize for Address {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for Address {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        bounded_bytes(d, MAX_ADDRESS_LEN).map(Address)
    }
}

/// Reads a CBOR byte string of at most `max` bytes: the decoder refuses a longer one before
/// copying it.
fn bounded_bytes<'de, D: Deserializer<'de>>(d: D, max: usize) -> Result<Vec<u8>, D::Error> {
    struct V(usize);
    impl<'de> Visitor<'de> for V {
        type Value = Vec<u8>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "a byte string of at most {} bytes", self.0)
        }
        fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
            if v.len() > self.0 {
                return Err(E::invalid_length(v.len(), &self));
            }
            Ok(v.to_vec())
        }
    }
    d.deserialize_bytes(V(max))
}

/// Bytes an application attaches to news that a member is alive, for a receiver that does not
/// know the member yet (Shoal attaches the member's identity proof, so that the receiver can list
/// it without first asking the sender for the proof). SWIM never sets or reads one; it is
/// encoded as a CBOR byte string of at most [`MAX_CREDENTIAL_LEN`] bytes, and left out when
/// empty.
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct Credential(Box<[u8]>);

impl Credential {
    /// A credential of `bytes` (at most [`MAX_CREDENTIAL_LEN`] of them: [`Update::check`]
    /// refuses a longer one).
    pub fn new(bytes: impl Into<Box<[u8]>>) -> Self {
        Credential(bytes.into())
    }

    /// Its bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// What it adds to an update's encoding: the field's key and the byte string.
    pub fn encoded_len(&self) -> usize {
        if self.is_empty() {
            return 0;
        }
        let header = match self.0.len() {
            0..24 => 1,
            24..256 => 2,
            _ => 3,
        };
        // The key "c" (a one-letter text string) and the byte string's header and bytes.
        2 + header + self.0.len()
    }
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Credential({} bytes)", self.0.len())
    }
}

impl Serialize for Credential {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for Credential {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        bounded_bytes(d, MAX_CREDENTIAL_LEN).map(Credential::new)
    }
}

/// What a member is believed to be. Ordered by precedence at equal incarnation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum State {
    /// Answering probes.
    #[serde(rename = "a")]
    Alive,
    /// Missed a probe; declared dead unless it refutes before its suspicion times out.
    #[serde(rename = "s")]
    Suspect,
    /// Declared failed.
    #[serde(rename = "d")]
    Dead,
    /// Left gracefully.
    #[serde(rename = "l")]
    Left,
}

/// One piece of membership news, piggybacked on messages or listed in a push-pull.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(bound = "T: Identity")]
pub struct Update<T> {
    /// The member the news is about.
    #[serde(rename = "m")]
    pub member: T,
    /// The member's incarnation the news refers to.
    #[serde(rename = "i")]
    pub incarnation: u64,
    /// Its state.
    #[serde(rename = "s")]
    pub state: State,
    /// Its addresses (at most [`MAX_ADDRESSES`]).
    #[serde(rename = "a", default)]
    pub addrs: Vec<Address>,
    /// Who suspects it, or declared it dead: present exactly for [`State::Suspect`] and
    /// [`State::Dead`], so that Lifeguard can count independent confirmations.
    #[serde(rename = "b", default, skip_serializing_if = "Option::is_none")]
    pub by: Option<T>,
    /// What the application attached (only to news that the member is alive); SWIM passes it
    /// on untouched and never keeps it.
    #[serde(rename = "c", default, skip_serializing_if = "Credential::is_empty")]
    pub credential: Credential,
}

/// The request or answer a message carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(bound = "T: Identity")]
pub enum Payload<T> {
    /// A probe: answer with [`Payload::Ack`] carrying the same `seq`.
    #[serde(rename = "p")]
    Ping {
        /// Sequence number chosen by the prober.
        #[serde(rename = "q")]
        seq: u64,
    },
    /// Answer to a ping, sent by the target or forwarded by a ping-req helper.
    #[serde(rename = "a")]
    Ack {
        /// The sequence number of the ping (or ping-req) answered.
        #[serde(rename = "q")]
        seq: u64,
    },
    /// Lifeguard's negative ack: a ping-req helper got no ack from the target in time.
    #[serde(rename = "n")]
    Nack {
        /// The sequence number of the ping-req answered.
        #[serde(rename = "q")]
        seq: u64,
    },
    /// Asks a helper to ping `target` and forward its ack (or a nack).
    #[serde(rename = "r")]
    PingReq {
        /// Sequence number chosen by the requester.
        #[serde(rename = "q")]
        seq: u64,
        /// The member to ping.
        #[serde(rename = "t")]
        target: T,
    },
    /// Carries only piggybacked updates; no answer is expected.
    #[serde(rename = "g")]
    Gossip,
    /// Full state exchange (also how a member joins and how partitions heal).
    #[serde(rename = "x")]
    PushPull {
        /// The sender is joining: the answer completes its join.
        #[serde(rename = "j")]
        join: bool,
        /// The sender wants the receiver's state in return.
        #[serde(rename = "r")]
        reply: bool,
        /// The sender's table, itself included (at most [`MAX_PUSH_PULL_MEMBERS`]).
        #[serde(rename = "m")]
        members: Vec<Update<T>>,
    },
    /// The sender's view in brief, for the periodic anti-entropy exchange: a receiver whose own
    /// view hashes otherwise ([`view_digest`]) answers with a [`Payload::PushPull`] that asks
    /// for the sender's table in return; one whose view is the same says nothing. Views that
    /// agree, as an idle cluster's do, then cost one small message instead of two tables.
    #[serde(rename = "d")]
    Digest {
        /// [`view_digest`] of the sender's table, itself included.
        #[serde(rename = "h")]
        hash: u64,
    },
}

/// One SWIM message: a payload plus piggybacked updates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(bound = "T: Identity")]
pub struct Message<T> {
    /// The request or answer.
    #[serde(rename = "p")]
    pub payload: Payload<T>,
    /// Piggybacked membership updates (at most [`MAX_GOSSIP_UPDATES`]); left out when none,
    /// as in most of an idle member's messages.
    #[serde(rename = "g", default, skip_serializing_if = "Vec::is_empty")]
    pub gossip: Vec<Update<T>>,
}

impl<T> Payload<T> {
    /// The payload's name, for logs: `ping`, `ack`, `nack`, `ping-req`, `gossip`, `push-pull`,
    /// `join` (a joiner's push-pull), `digest`.
    pub fn kind(&self) -> &'static str {
        match self {
            Payload::Ping { .. } => "ping",
            Payload::Ack { .. } => "ack",
            Payload::Nack { .. } => "nack",
            Payload::PingReq { .. } => "ping-req",
            Payload::Gossip => "gossip",
            Payload::PushPull { join: true, .. } => "join",
            Payload::PushPull { .. } => "push-pull",
            Payload::Digest { .. } => "digest",
        }
    }
}

impl<T: Identity> Message<T> {
    /// Checks the list bounds and field combinations that [`decode`] enforces.
    pub fn check(&self) -> Result<(), CodecError> {
        bound("gossip", self.gossip.len(), MAX_GOSSIP_UPDATES)?;
        for u in &self.gossip {
            u.check()?;
        }
        if let Payload::PushPull { members, .. } = &self.payload {
            bound("push-pull members", members.len(), MAX_PUSH_PULL_MEMBERS)?;
            for u in members {
                u.check()?;
            }
        }
        Ok(())
    }
}

impl<T: Identity> Update<T> {
    /// Checks the address bounds and that `by` is present exactly for suspect and dead.
    pub fn check(&self) -> Result<(), CodecError> {
        bound("addresses", self.addrs.len(), MAX_ADDRESSES)?;
        for a in &self.addrs {
            if a.0.len() > MAX_ADDRESS_LEN {
                return Err(CodecError::AddressTooLong {
                    len: a.0.len(),
                    max: MAX_ADDRESS_LEN,
                });
            }
        }
        let needs_by = matches!(self.state, State::Suspect | State::Dead);
        if needs_by != self.by.is_some() {
            return Err(CodecError::Invalid(
                "`by` must be present exactly for suspect and dead",
            ));
        }
        if self.credential.as_bytes().len() > MAX_CREDENTIAL_LEN {
            return Err(CodecError::TooMany {
                what: "credential bytes",
                len: self.credential.as_bytes().len(),
                max: MAX_CREDENTIAL_LEN,
            });
        }
        if !self.credential.is_empty() && self.state != State::Alive {
            return Err(CodecError::Invalid(
                "a credential rides only on news that a member is alive",
            ));
        }
        Ok(())
    }
}

fn bound(what: &'static str, len: usize, max: usize) -> Result<(), CodecError> {
    if len > max {
        Err(CodecError::TooMany { what, len, max })
    } else {
        Ok(())
    }
}

/// Encodes `msg`, appending to `out`. Fails if the message breaks a bound or its encoding is
/// longer than `max_len` (which is itself capped at [`MAX_MESSAGE_BYTES`]); `out` is then left
/// as it was.
pub fn encode<T: Identity>(
    msg: &Message<T>,
    max_len: usize,
    out: &mut Vec<u8>,
) -> Result<(), CodecError> {
    msg.check()?;
    let start = out.len();
    let buf = std::mem::take(out);
    let mut buf = cbor4ii::serde::to_vec(buf, msg).map_err(|e| {
        // Encoding into a Vec fails only on allocation failure or a serde error.
        CodecError::Malformed(format!("encode: {e:?}"))
    })?;
    let len = buf.len() - start;
    let max = max_len.min(MAX_MESSAGE_BYTES);
    if len > max {
        buf.truncate(start);
        *out = buf;
        return Err(CodecError::TooLarge { len, max });
    }
    *out = buf;
    Ok(())
}

/// Encodes `msg` into a new vector. See [`encode`].
pub fn to_vec<T: Identity>(msg: &Message<T>, max_len: usize) -> Result<Vec<u8>, CodecError> {
    let mut out = Vec::new();
    encode(msg, max_len, &mut out)?;
    Ok(out)
}

/// Size of the CBOR encoding of `value` (used for the gossip byte budget). The encoder writes
/// into a counter, not a buffer: sizing a push-pull's thousands of entries allocates nothing.
pub fn encoded_len<V: Serialize + ?Sized>(value: &V) -> usize {
    let mut counter = cbor4ii::serde::Serializer::new(ByteCounter(0));
    match value.serialize(&mut counter) {
        Ok(()) => counter.into_inner().0,
        // Only a serde error can fail: count the value as unsendable.
        Err(_) => usize::MAX,
    }
}

/// A hash of a view, given as its entries (member, incarnation, state, addresses) in any order:
/// the entries' CBOR encodings in member order, hashed with SHA-256 and cut to 64 bits. Two views
/// hash alike when they hold the same entries (and otherwise with a chance of 2^-64, which only
/// skips one anti-entropy exchange); the encoding, not the machine, fixes the bytes hashed, so
/// nodes built apart agree.
pub fn view_digest<'a, T: Identity + 'a>(
    entries: impl IntoIterator<Item = (&'a T, u64, State, &'a [Address])>,
) -> u64 {
    let mut entries: Vec<_> = entries.into_iter().collect();
    entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
    let mut hasher = cbor4ii::serde::Serializer::new(Hashing(Sha256::new()));
    for entry in &entries {
        // Writing into a hash cannot fail, and these types raise no serde error.
        let _ = entry.serialize(&mut hasher);
    }
    let hash = hasher.into_inner().0.finalize();
    let mut first = [0; 8];
    first.copy_from_slice(&hash[..8]);
    u64::from_le_bytes(first)
}

/// A CBOR sink that hashes the bytes written to it.
struct Hashing(Sha256);

impl cbor4ii::core::enc::Write for Hashing {
    type Error = std::convert::Infallible;

    fn push(&mut self, input: &[u8]) -> Result<(), Self::Error> {
        self.0.update(input);
        Ok(())
    }
}

/// A CBOR sink that only counts the bytes written to it.
struct ByteCounter(usize);

impl cbor4ii::core::enc::Write for ByteCounter {
    type Error = std::convert::Infallible;

    fn push(&mut self, input: &[u8]) -> Result<(), Self::Error> {
        self.0 += input.len();
        Ok(())
    }
}

/// Decodes one message of at most `max_len` bytes (capped at [`MAX_MESSAGE_BYTES`]), checking
/// every bound. Never panics.
pub fn decode<T: Identity>(bytes: &[u8], max_len: usize) -> Result<Message<T>, CodecError> {
    let max = max_len.min(MAX_MESSAGE_BYTES);
    if bytes.len() > max {
        return Err(CodecError::TooLarge {
            len: bytes.len(),
            max,
        });
    }
    let reader = cbor4ii::core::utils::SliceReader::new(bytes);
    let mut de = cbor4ii::serde::Deserializer::new(reader);
    let msg =
        Message::<T>::deserialize(&mut de).map_err(|e| CodecError::Malformed(format!("{e:?}")))?;
    let mut reader = de.into_inner();
    let rest = match reader.fill(1) {
        Ok(Reference::Long(b)) => b.len(),
        Ok(Reference::Short(b)) => b.len(),
        Err(_) => 0,
    };
    if rest > 0 {
        return Err(CodecError::TrailingBytes(rest));
    }
    msg.check()?;
    Ok(msg)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn update(member: u32, state: State) -> Update<u32> {
        let by = matches!(state, State::Suspect | State::Dead).then_some(7);
        Update {
            member,
            incarnation: 3,
            state,
            addrs: vec![Address::from("/ip4/10.0.0.1/tcp/4001")],
            by,
            credential: Credential::default(),
        }
    }

    fn roundtrip(msg: &Message<u32>) {
        let bytes = to_vec(msg, MAX_MESSAGE_BYTES).unwrap();
        assert_eq!(
            encoded_len(msg),
            bytes.len(),
            "the counted size is the encoded size"
        );
        for u in msg.gossip.iter() {
            let one = cbor4ii::serde::to_vec(Vec::new(), u).unwrap();
            assert_eq!(encoded_len(u), one.len(), "{u:?}");
        }
        let back: Message<u32> = decode(&bytes, MAX_MESSAGE_BYTES).unwrap();
        assert_eq!(&back, msg);
    }

    const PINNED: u64 = 0x4162_39df_64b1_4245;

    #[test]
    fn a_view_digest_depends_on_every_entry_and_not_on_their_order() {
        let a = Address::from("/ip4/10.0.0.1/tcp/4001");
        let b = Address::from("/ip4/10.0.0.2/tcp/4001");
        let (one, two) = ([a.clone()], [b.clone()]);
        let view = [
            (&1u32, 3, State::Alive, &one[..]),
            (&2u32, 0, State::Suspect, &two[..]),
        ];
        let d = view_digest(view);
        assert_eq!(d, view_digest([view[1], view[0]]), "order does not matter");
        for other in [
            [view[0], (&2, 1, State::Suspect, &two[..])],
            [view[0], (&2, 0, State::Alive, &two[..])],
            [view[0], (&2, 0, State::Suspect, &one[..])],
            [view[0], (&3, 0, State::Suspect, &two[..])],
        ] {
            assert_ne!(d, view_digest(other), "{other:?}");
        }
        assert_ne!(d, view_digest([view[0]]));
        // Fixed by the encoding, not the machine: the empty view is SHA-256 of nothing (its
        // first 8 bytes, little-endian), and this view's value is pinned so that a change of
        // the encoding, which nodes of two versions would disagree on, shows here.
        let empty = [0xe3, 0xb0, 0xc4, 0x42, 0x98, 0xfc, 0x1c, 0x14];
        assert_eq!(view_digest::<u32>([]), u64::from_le_bytes(empty));
        assert_eq!(d, PINNED, "{d:#x}");
    }

    #[test]
    fn roundtrip_every_payload() {
        let gossip = vec![
            update(1, State::Alive),
            update(2, State::Suspect),
            update(3, State::Dead),
            update(4, State::Left),
        ];
        for payload in [
            Payload::Ping { seq: 1 },
            Payload::Ack { seq: u64::MAX },
            Payload::Nack { seq: 0 },
            Payload::Gossip,
            Payload::PingReq { seq: 9, target: 5 },
            Payload::Digest { hash: u64::MAX },
            Payload::PushPull {
                join: true,
                reply: false,
                members: gossip.clone(),
            },
        ] {
            roundtrip(&Message {
                payload,
                gossip: gossip.clone(),
            });
        }
    }

    #[test]
    fn ping_is_small() {
        let bytes = to_vec(
            &Message::<u32> {
                payload: Payload::Ping { seq: 1000 },
                gossip: vec![],
            },
            MAX_MESSAGE_BYTES,
        )
        .unwrap();
        assert!(bytes.len() < 20, "{} bytes", bytes.len());
    }

    #[test]
    fn rejects_oversized_input() {
        let bytes = vec![0u8; 2000];
        assert_eq!(
            decode::<u32>(&bytes, 1000),
            Err(CodecError::TooLarge {
                len: 2000,
                max: 1000
            })
        );
    }

    #[test]
    fn rejects_too_many_addresses() {
        let mut u = update(1, State::Alive);
        u.addrs = vec![Address::from("a"); MAX_ADDRESSES + 1];
        let msg = Message {
            payload: Payload::Ping { seq: 1 },
            gossip: vec![u],
        };
        assert!(matches!(
            to_vec(&msg, MAX_MESSAGE_BYTES),
            Err(CodecError::TooMany { .. })
        ));
        // Bypass the encoder's check to make sure the decoder refuses it too.
        let bytes = cbor4ii::serde::to_vec(Vec::new(), &msg).unwrap();
        assert!(matches!(
            decode::<u32>(&bytes, MAX_MESSAGE_BYTES),
            Err(CodecError::TooMany { .. })
        ));
    }

    #[test]
    fn rejects_long_address_and_missing_suspector() {
        let mut u = update(1, State::Alive);
        u.addrs = vec![Address(vec![1; MAX_ADDRESS_LEN + 1])];
        let msg = Message {
            payload: Payload::Ping { seq: 1 },
            gossip: vec![u],
        };
        let bytes = cbor4ii::serde::to_vec(Vec::new(), &msg).unwrap();
        assert!(matches!(
            decode::<u32>(&bytes, MAX_MESSAGE_BYTES),
            Err(CodecError::Malformed(_))
        ));
        let mut u = update(1, State::Suspect);
        u.by = None;
        let msg = Message {
            payload: Payload::Ping { seq: 1 },
            gossip: vec![u],
        };
        let bytes = cbor4ii::serde::to_vec(Vec::new(), &msg).unwrap();
        assert!(matches!(
            decode::<u32>(&bytes, MAX_MESSAGE_BYTES),
            Err(CodecError::Invalid(_))
        ));
    }

    #[test]
    fn a_credential_rides_only_on_alive_news_within_its_bound() {
        let gossip = |u: Update<u32>| Message {
            payload: Payload::Ping { seq: 1 },
            gossip: vec![u],
        };
        // Its encoded cost is what the update grows by.
        for len in [1, 23, 24, 40, MAX_CREDENTIAL_LEN] {
            let mut u = update(1, State::Alive);
            let bare = encoded_len(&u);
            u.credential = Credential::new(vec![7; len]);
            assert_eq!(
                encoded_len(&u),
                bare + u.credential.encoded_len(),
                "{len} bytes"
            );
            roundtrip(&gossip(u));
        }
        // Longer than the bound: refused by the decoder, and by the encoder's check.
        let mut u = update(1, State::Alive);
        u.credential = Credential::new(vec![7; MAX_CREDENTIAL_LEN + 1]);
        let bytes = cbor4ii::serde::to_vec(Vec::new(), &gossip(u.clone())).unwrap();
        assert!(matches!(
            decode::<u32>(&bytes, MAX_MESSAGE_BYTES),
            Err(CodecError::Malformed(_))
        ));
        assert!(to_vec(&gossip(u), MAX_MESSAGE_BYTES).is_err());
        // On news of a suspicion, a death or a departure: invalid.
        for state in [State::Suspect, State::Dead, State::Left] {
            let mut u = update(1, state);
            u.credential = Credential::new(vec![7; 40]);
            let bytes = cbor4ii::serde::to_vec(Vec::new(), &gossip(u)).unwrap();
            assert!(matches!(
                decode::<u32>(&bytes, MAX_MESSAGE_BYTES),
                Err(CodecError::Invalid(_))
            ));
        }
    }

    #[test]
    fn rejects_trailing_bytes_and_garbage() {
        let mut bytes = to_vec(
            &Message::<u32> {
                payload: Payload::Ping { seq: 1 },
                gossip: vec![],
            },
            MAX_MESSAGE_BYTES,
        )
        .unwrap();
        bytes.push(0);
        assert_eq!(
            decode::<u32>(&bytes, MAX_MESSAGE_BYTES),
            Err(CodecError::TrailingBytes(1))
        );
        assert!(decode::<u32>(&[], MAX_MESSAGE_BYTES).is_err());
        assert!(decode::<u32>(&[0xff; 64], MAX_MESSAGE_BYTES).is_err());
        // Deeply nested arrays must fail cleanly, not overflow the stack.
        assert!(decode::<u32>(&[0x81; 100_000], MAX_MESSAGE_BYTES).is_err());
    }

    #[test]
    fn encoder_refuses_over_limit() {
        let msg = Message::<u32> {
            payload: Payload::PushPull {
                join: false,
                reply: false,
                members: (0..200).map(|i| update(i, State::Alive)).collect(),
            },
            gossip: vec![],
        };
        let mut out = vec![1, 2, 3];
        assert!(matches!(
            encode(&msg, 1024, &mut out),
            Err(CodecError::TooLarge { .. })
        ));
        assert_eq!(out, vec![1, 2, 3]);
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode::<u32>(&bytes, MAX_MESSAGE_BYTES);
        }

        #[test]
        fn roundtrip_arbitrary(seq in any::<u64>(), inc in any::<u64>(), m in any::<u32>(),
                               addr in proptest::collection::vec(any::<u8>(), 0..64),
                               cred in proptest::collection::vec(any::<u8>(), 0..=MAX_CREDENTIAL_LEN)) {
            let msg = Message {
                payload: Payload::PingReq { seq, target: m },
                gossip: vec![
                    Update { member: m, incarnation: inc, state: State::Dead,
                             addrs: vec![Address(addr.clone())], by: Some(m ^ 1),
                             credential: Credential::default() },
                    Update { member: m ^ 2, incarnation: inc, state: State::Alive,
                             addrs: vec![Address(addr)], by: None,
                             credential: Credential::new(cred) },
                ],
            };
            let bytes = to_vec(&msg, MAX_MESSAGE_BYTES).unwrap();
            prop_assert_eq!(decode::<u32>(&bytes, MAX_MESSAGE_BYTES).unwrap(), msg);
        }
    }
}
