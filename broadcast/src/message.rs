//! Wire types and their CBOR codec.
//!
//! Every message is one CBOR value (cbor4ii through serde) with one-letter field names; byte
//! strings (publishers, bodies, Bloom filters) are CBOR byte strings. Every size is bounded:
//! [`decode`] refuses input longer than [`Limits::max_message_bytes`], lists longer than their
//! limit, publishers longer than [`MAX_PUBLISHER_BYTES`], bodies longer than
//! [`Limits::max_notice_bytes`] and Bloom filters longer than [`Limits::max_bloom_bytes`], and
//! values the protocol never produces (sequence number 0, an empty publisher, a Bloom filter
//! without hash functions). Decoding returns a [`CodecError`] and never panics (a property
//! test feeds it arbitrary bytes).
//!
//! The Bloom filter of a [`Message::Pull`] is part of the wire format; [`crate::bloom`] documents
//! its hashing.

use std::fmt;

use cbor4ii::core::dec::{Read as _, Reference};
use serde::{Deserialize, Serialize};

use crate::error::CodecError;

/// Hard ceiling of an encoded message. Unit: bytes.
pub const MAX_MESSAGE_BYTES: usize = 1 << 20;
/// Longest publisher (feed id). Unit: bytes.
pub const MAX_PUBLISHER_BYTES: usize = 64;
/// Hard ceiling of a notice body. Unit: bytes.
pub const MAX_NOTICE_BYTES: usize = 64 << 10;
/// Most ids in one IHave or Graft.
pub const MAX_IDS: usize = 1024;
/// Most feeds named in one Clock.
pub const MAX_FEEDS: usize = 8192;
/// Most notices in one Notices message.
pub const MAX_NOTICES: usize = 1024;
/// Largest Bloom filter. Unit: bytes.
pub const MAX_BLOOM_BYTES: usize = 64 << 10;
/// Most hash functions of a Bloom filter.
pub const MAX_BLOOM_HASHES: u8 = 16;

/// The identity of a notice: its feed and its place in it.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct NoticeId {
    /// The feed: the publisher's id (in Shoal, its public key). 1 to [`MAX_PUBLISHER_BYTES`]
    /// bytes.
    #[serde(rename = "p", with = "serde_bytes")]
    pub publisher: Vec<u8>,
    /// Position in the feed, counting from 1.
    #[serde(rename = "s")]
    pub seq: u64,
}

impl fmt::Debug for NoticeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{}", Hex(&self.publisher), self.seq)
    }
}

/// A notice: an opaque body, the `seq`-th of its publisher's feed.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Notice {
    /// The feed (see [`NoticeId::publisher`]).
    #[serde(rename = "p", with = "serde_bytes")]
    pub publisher: Vec<u8>,
    /// Position in the feed, counting from 1 (0 is refused: catch-up clocks use it for "none").
    #[serde(rename = "s")]
    pub seq: u64,
    /// The payload, opaque here (in Shoal, a signed lockstep notice envelope). At most
    /// [`Config::max_notice_bytes`](crate::Config::max_notice_bytes).
    #[serde(rename = "b", with = "serde_bytes")]
    pub body: Vec<u8>,
}

impl Notice {
    /// Its id.
    pub fn id(&self) -> NoticeId {
        NoticeId {
            publisher: self.publisher.clone(),
            seq: self.seq,
        }
    }
}

impl fmt::Debug for Notice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Notice({}#{}, {} bytes)",
            Hex(&self.publisher),
            self.seq,
            self.body.len()
        )
    }
}

/// How far a peer has a feed: the highest sequence number it holds, 0 for none.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FeedSeq {
    /// The feed.
    #[serde(rename = "p", with = "serde_bytes")]
    pub publisher: Vec<u8>,
    /// Highest sequence number held; 0 when the feed is unknown.
    #[serde(rename = "s")]
    pub max_seq: u64,
}

impl fmt::Debug for FeedSeq {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}<={}", Hex(&self.publisher), self.max_seq)
    }
}

/// One message between two cores. The transport says who sent it, so no message names its
/// sender.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    /// Eager push of a notice (also the answer to a Graft).
    #[serde(rename = "g")]
    Gossip {
        /// The notice.
        #[serde(rename = "n")]
        notice: Notice,
        /// Hops it travelled before the sender (0 from its publisher).
        #[serde(rename = "r")]
        round: u32,
    },
    /// Lazy push: the sender holds these notices.
    #[serde(rename = "i")]
    IHave {
        /// The notices (at most [`Limits::max_ids`]).
        #[serde(rename = "i")]
        ids: Vec<NoticeId>,
        /// The largest round at which the sender got any of them.
        #[serde(rename = "r")]
        round: u32,
    },
    /// Asks for notices announced by IHave and makes the receiver push to the sender eagerly.
    /// With no ids it only does the latter.
    #[serde(rename = "f")]
    Graft {
        /// The notices wanted (at most [`Limits::max_ids`]).
        #[serde(rename = "i")]
        ids: Vec<NoticeId>,
    },
    /// The sender got a notice twice: push to it lazily from now on.
    #[serde(rename = "p")]
    Prune,
    /// Asks to become an active neighbor of the receiver.
    #[serde(rename = "n")]
    Neighbor {
        /// The sender has no active neighbor: the receiver accepts even with a full view,
        /// dropping a random neighbor.
        #[serde(rename = "h")]
        high_priority: bool,
    },
    /// The answer to [`Message::Neighbor`].
    #[serde(rename = "a")]
    NeighborReply {
        /// Whether the sender added the receiver to its active view.
        #[serde(rename = "a")]
        accepted: bool,
    },
    /// The sender dropped the receiver from its active view (or never had it there).
    #[serde(rename = "d")]
    Disconnect,
    /// Catch-up: how far the sender has the feeds named, those that changed since it last told
    /// the receiver and those the receiver's own clock showed it behind on. The receiver
    /// answers with the notices it holds above each (one [`Message::Notices`]).
    #[serde(rename = "c")]
    Clock {
        /// The feeds (at most [`Limits::max_feeds`]).
        #[serde(rename = "f")]
        feeds: Vec<FeedSeq>,
        /// The receiver should answer with a clock of its own.
        #[serde(rename = "r")]
        reply: bool,
    },
    /// Notices answering a Clock or a Pull.
    #[serde(rename = "o")]
    Notices {
        /// The notices (at most [`Limits::max_notices`]).
        #[serde(rename = "n")]
        notices: Vec<Notice>,
    },
    /// Anti-entropy: a Bloom filter of the notices the sender received recently; the receiver
    /// answers with recent notices not in it.
    #[serde(rename = "l")]
    Pull {
        /// The filter's bits (see [`crate::bloom`]).
        #[serde(rename = "b", with = "serde_bytes")]
        bloom: Vec<u8>,
        /// Its number of hash functions, 1 to [`MAX_BLOOM_HASHES`].
        #[serde(rename = "k")]
        hashes: u8,
    },
}

/// The kinds of [`Message`], to count traffic per kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MessageKind {
    /// [`Message::Gossip`].
    Gossip = 0,
    /// [`Message::IHave`].
    IHave,
    /// [`Message::Graft`].
    Graft,
    /// [`Message::Prune`].
    Prune,
    /// [`Message::Neighbor`].
    Neighbor,
    /// [`Message::NeighborReply`].
    NeighborReply,
    /// [`Message::Disconnect`].
    Disconnect,
    /// [`Message::Clock`].
    Clock,
    /// [`Message::Notices`].
    Notices,
    /// [`Message::Pull`].
    Pull,
}

impl MessageKind {
    /// Number of kinds.
    pub const COUNT: usize = 10;
    /// Every kind, in index order.
    pub const ALL: [MessageKind; Self::COUNT] = [
        MessageKind::Gossip,
        MessageKind::IHave,
        MessageKind::Graft,
        MessageKind::Prune,
        MessageKind::Neighbor,
        MessageKind::NeighborReply,
        MessageKind::Disconnect,
        MessageKind::Clock,
        MessageKind::Notices,
        MessageKind::Pull,
    ];

    /// Whether messages of this kind carry notices (Gossip, Notices); the others are control
    /// traffic.
    pub fn is_payload(self) -> bool {
        matches!(self, MessageKind::Gossip | MessageKind::Notices)
    }

    /// Short name, for tables.
    pub fn name(self) -> &'static str {
        match self {
            MessageKind::Gossip => "gossip",
            MessageKind::IHave => "ihave",
            MessageKind::Graft => "graft",
            MessageKind::Prune => "prune",
            MessageKind::Neighbor => "neighbor",
            MessageKind::NeighborReply => "neighbor-reply",
            MessageKind::Disconnect => "disconnect",
            MessageKind::Clock => "clock",
            MessageKind::Notices => "notices",
            MessageKind::Pull => "pull",
        }
    }
}

impl Message {
    /// Its kind.
    pub fn kind(&self) -> MessageKind {
        match self {
            Message::Gossip { .. } => MessageKind::Gossip,
            Message::IHave { .. } => MessageKind::IHave,
            Message::Graft { .. } => MessageKind::Graft,
            Message::Prune => MessageKind::Prune,
            Message::Neighbor { .. } => MessageKind::Neighbor,
            Message::NeighborReply { .. } => MessageKind::NeighborReply,
            Message::Disconnect => MessageKind::Disconnect,
            Message::Clock { .. } => MessageKind::Clock,
            Message::Notices { .. } => MessageKind::Notices,
            Message::Pull { .. } => MessageKind::Pull,
        }
    }

    /// Checks every bound of `limits` and the values the protocol never produces, as
    /// [`decode`] does.
    pub fn check(&self, limits: &Limits) -> Result<(), CodecError> {
        match self {
            Message::Gossip { notice, .. } => check_notice(notice, limits),
            Message::IHave { ids, .. } | Message::Graft { ids } => {
                bound("ids", ids.len(), limits.max_ids)?;
                ids.iter()
                    .try_for_each(|id| check_publisher(&id.publisher, id.seq))
            }
            Message::Clock { feeds, .. } => {
                bound("feeds", feeds.len(), limits.max_feeds)?;
                feeds.iter().try_for_each(|f| {
                    if f.publisher.is_empty() {
                        return Err(CodecError::Invalid("empty publisher"));
                    }
                    long("publisher", f.publisher.len(), MAX_PUBLISHER_BYTES)
                })
            }
            Message::Notices { notices } => {
                bound("notices", notices.len(), limits.max_notices)?;
                notices.iter().try_for_each(|n| check_notice(n, limits))
            }
            Message::Pull { bloom, hashes } => {
                long("bloom", bloom.len(), limits.max_bloom_bytes)?;
                if *hashes == 0 || *hashes > MAX_BLOOM_HASHES {
                    return Err(CodecError::Invalid("bloom hashes out of range"));
                }
                Ok(())
            }
            Message::Prune
            | Message::Neighbor { .. }
            | Message::NeighborReply { .. }
            | Message::Disconnect => Ok(()),
        }
    }
}

fn check_notice(n: &Notice, limits: &Limits) -> Result<(), CodecError> {
    check_publisher(&n.publisher, n.seq)?;
    long("body", n.body.len(), limits.max_notice_bytes)
}

fn check_publisher(publisher: &[u8], seq: u64) -> Result<(), CodecError> {
    if publisher.is_empty() {
        return Err(CodecError::Invalid("empty publisher"));
    }
    if seq == 0 {
        return Err(CodecError::Invalid("sequence number 0"));
    }
    long("publisher", publisher.len(), MAX_PUBLISHER_BYTES)
}

fn bound(what: &'static str, len: usize, max: usize) -> Result<(), CodecError> {
    if len > max {
        Err(CodecError::TooMany { what, len, max })
    } else {
        Ok(())
    }
}

fn long(what: &'static str, len: usize, max: usize) -> Result<(), CodecError> {
    if len > max {
        Err(CodecError::TooLong { what, len, max })
    } else {
        Ok(())
    }
}

/// The bounds [`decode`] enforces. [`Limits::default`] is the hard ceiling of every field;
/// [`Config::limits`](crate::Config::limits) narrows it to what cores of that config send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest encoded message, at most [`MAX_MESSAGE_BYTES`]. Unit: bytes.
    pub max_message_bytes: usize,
    /// Longest notice body, at most [`MAX_NOTICE_BYTES`]. Unit: bytes.
    pub max_notice_bytes: usize,
    /// Most ids in an IHave or a Graft, at most [`MAX_IDS`].
    pub max_ids: usize,
    /// Most feeds in a Clock, at most [`MAX_FEEDS`].
    pub max_feeds: usize,
    /// Most notices in a Notices message, at most [`MAX_NOTICES`].
    pub max_notices: usize,
    /// Longest Bloom filter, at most [`MAX_BLOOM_BYTES`]. Unit: bytes.
    pub max_bloom_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_message_bytes: MAX_MESSAGE_BYTES,
            max_notice_bytes: MAX_NOTICE_BYTES,
            max_ids: MAX_IDS,
            max_feeds: MAX_FEEDS,
            max_notices: MAX_NOTICES,
            max_bloom_bytes: MAX_BLOOM_BYTES,
        }
    }
}

impl Limits {
    /// The same limits, none above its hard ceiling.
    fn capped(&self) -> Limits {
        Limits {
            max_message_bytes: self.max_message_bytes.min(MAX_MESSAGE_BYTES),
            max_notice_bytes: self.max_notice_bytes.min(MAX_NOTICE_BYTES),
            max_ids: self.max_ids.min(MAX_IDS),
            max_feeds: self.max_feeds.min(MAX_FEEDS),
            max_notices: self.max_notices.min(MAX_NOTICES),
            max_bloom_bytes: self.max_bloom_bytes.min(MAX_BLOOM_BYTES),
        }
    }
}

/// Encodes `msg`. The core only builds messages within the limits of its config
/// ([`Config::limits`](crate::Config::limits)); a hand-built message is checked by the
/// receiver's [`decode`].
pub fn encode(msg: &Message) -> Vec<u8> {
    let mut out = Vec::with_capacity(encoded_len(msg));
    encode_into(msg, &mut out);
    out
}

/// Encodes `msg`, appending to `out`.
pub fn encode_into(msg: &Message, out: &mut Vec<u8>) {
    let buf = std::mem::take(out);
    *out = match cbor4ii::serde::to_vec(buf, msg) {
        Ok(buf) => buf,
        // Serializing these types into a vector only fails when memory runs out, which aborts
        // the process first: no error reaches here.
        Err(e) => unreachable!("encoding into a vector failed: {e:?}"),
    };
}

/// Size of the CBOR encoding of a value, without encoding it: SWIM's codec's, shared.
pub use shoal_swim::message::encoded_len;

/// Decodes one message, checking every bound of `limits` (each capped at its hard ceiling).
/// Never panics.
pub fn decode(bytes: &[u8], limits: &Limits) -> Result<Message, CodecError> {
    let limits = limits.capped();
    if bytes.len() > limits.max_message_bytes {
        return Err(CodecError::TooLarge {
            len: bytes.len(),
            max: limits.max_message_bytes,
        });
    }
    let reader = cbor4ii::core::utils::SliceReader::new(bytes);
    let mut de = cbor4ii::serde::Deserializer::new(reader);
    let msg = Message::deserialize(&mut de).map_err(|e| CodecError::Malformed(format!("{e:?}")))?;
    let mut reader = de.into_inner();
    let rest = match reader.fill(1) {
        Ok(Reference::Long(b)) => b.len(),
        Ok(Reference::Short(b)) => b.len(),
        Err(_) => 0,
    };
    if rest > 0 {
        return Err(CodecError::TrailingBytes(rest));
    }
    msg.check(&limits)?;
    Ok(msg)
}

/// Lower-case hex of the first bytes of a publisher, for logs.
pub(crate) struct Hex<'a>(pub(crate) &'a [u8]);

impl fmt::Display for Hex<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0.iter().take(6) {
            write!(f, "{b:02x}")?;
        }
        if self.0.len() > 6 {
            write!(f, "…")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn id(p: u8, seq: u64) -> NoticeId {
        NoticeId {
            publisher: vec![p; 32],
            seq,
        }
    }

    fn notice(p: u8, seq: u64, len: usize) -> Notice {
        Notice {
            publisher: vec![p; 32],
            seq,
            body: vec![0xab; len],
        }
    }

    fn every_kind() -> Vec<Message> {
        vec![
            Message::Gossip {
                notice: notice(1, 7, 100),
                round: 3,
            },
            Message::IHave {
                ids: vec![id(1, 1), id(2, u64::MAX)],
                round: 9,
            },
            Message::Graft {
                ids: vec![id(3, 4)],
            },
            Message::Graft { ids: vec![] },
            Message::Prune,
            Message::Neighbor {
                high_priority: true,
            },
            Message::NeighborReply { accepted: false },
            Message::Disconnect,
            Message::Clock {
                feeds: vec![FeedSeq {
                    publisher: vec![5; 64],
                    max_seq: 0,
                }],
                reply: true,
            },
            Message::Notices {
                notices: vec![notice(1, 1, 0), notice(2, 2, 10)],
            },
            Message::Pull {
                bloom: vec![0x55; 40],
                hashes: 7,
            },
        ]
    }

    #[test]
    fn roundtrip_every_kind() {
        let mut kinds = std::collections::HashSet::new();
        for msg in every_kind() {
            let bytes = encode(&msg);
            assert_eq!(encoded_len(&msg), bytes.len(), "counted size of {msg:?}");
            assert_eq!(decode(&bytes, &Limits::default()).unwrap(), msg);
            kinds.insert(msg.kind());
        }
        assert_eq!(kinds.len(), MessageKind::COUNT);
        for (i, k) in MessageKind::ALL.iter().enumerate() {
            assert_eq!(*k as usize, i);
        }
    }

    #[test]
    fn control_messages_are_small() {
        assert!(encode(&Message::Prune).len() <= 2);
        assert!(
            encode(&Message::Neighbor {
                high_priority: false
            })
            .len()
                <= 8
        );
        // An IHave id costs the publisher plus a few bytes of framing.
        let one = encode(&Message::IHave {
            ids: vec![id(1, 1000)],
            round: 2,
        })
        .len();
        let two = encode(&Message::IHave {
            ids: vec![id(1, 1000), id(2, 1000)],
            round: 2,
        })
        .len();
        assert!(two - one <= 32 + 10, "{}", two - one);
    }

    #[test]
    fn rejects_out_of_bounds() {
        let limits = Limits {
            max_notice_bytes: 50,
            max_ids: 1,
            ..Limits::default()
        };
        let big = encode(&Message::Gossip {
            notice: notice(1, 1, 51),
            round: 0,
        });
        assert!(matches!(
            decode(&big, &limits),
            Err(CodecError::TooLong { what: "body", .. })
        ));
        let many = encode(&Message::Graft {
            ids: vec![id(1, 1), id(1, 2)],
        });
        assert!(matches!(
            decode(&many, &limits),
            Err(CodecError::TooMany { what: "ids", .. })
        ));
        let long_pub = encode(&Message::Graft {
            ids: vec![NoticeId {
                publisher: vec![1; MAX_PUBLISHER_BYTES + 1],
                seq: 1,
            }],
        });
        assert!(matches!(
            decode(&long_pub, &Limits::default()),
            Err(CodecError::TooLong {
                what: "publisher",
                ..
            })
        ));
        let zero = encode(&Message::Gossip {
            notice: notice(1, 0, 1),
            round: 0,
        });
        assert_eq!(
            decode(&zero, &Limits::default()),
            Err(CodecError::Invalid("sequence number 0"))
        );
        let no_hash = encode(&Message::Pull {
            bloom: vec![1],
            hashes: 0,
        });
        assert!(matches!(
            decode(&no_hash, &Limits::default()),
            Err(CodecError::Invalid(_))
        ));
        let small = Limits {
            max_message_bytes: 10,
            ..Limits::default()
        };
        assert!(matches!(
            decode(&big, &small),
            Err(CodecError::TooLarge { .. })
        ));
    }

    #[test]
    fn rejects_trailing_bytes_and_garbage() {
        let mut bytes = encode(&Message::Prune);
        bytes.push(0);
        assert_eq!(
            decode(&bytes, &Limits::default()),
            Err(CodecError::TrailingBytes(1))
        );
        assert!(decode(&[], &Limits::default()).is_err());
        assert!(decode(&[0xff; 64], &Limits::default()).is_err());
        // Deeply nested arrays must fail cleanly, not overflow the stack.
        assert!(decode(&[0x81; 100_000], &Limits::default()).is_err());
        assert!(decode(&[0xa1; 100_000], &Limits::default()).is_err());
        // A list that claims billions of entries must fail without allocating them.
        let mut huge = vec![0xa1, 0x61, b'o', 0xa1, 0x61, b'n', 0x9b];
        huge.extend_from_slice(&u64::MAX.to_be_bytes());
        assert!(decode(&huge, &Limits::default()).is_err());
    }

    fn arb_bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(any::<u8>(), 0..=max)
    }

    fn arb_publisher() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(any::<u8>(), 1..=MAX_PUBLISHER_BYTES)
    }

    fn arb_id() -> impl Strategy<Value = NoticeId> {
        (arb_publisher(), 1..=u64::MAX).prop_map(|(publisher, seq)| NoticeId { publisher, seq })
    }

    fn arb_notice() -> impl Strategy<Value = Notice> {
        (arb_publisher(), 1..=u64::MAX, arb_bytes(300)).prop_map(|(publisher, seq, body)| Notice {
            publisher,
            seq,
            body,
        })
    }

    fn arb_message() -> impl Strategy<Value = Message> {
        prop_oneof![
            (arb_notice(), any::<u32>())
                .prop_map(|(notice, round)| Message::Gossip { notice, round }),
            (proptest::collection::vec(arb_id(), 0..8), any::<u32>())
                .prop_map(|(ids, round)| Message::IHave { ids, round }),
            proptest::collection::vec(arb_id(), 0..8).prop_map(|ids| Message::Graft { ids }),
            Just(Message::Prune),
            any::<bool>().prop_map(|high_priority| Message::Neighbor { high_priority }),
            any::<bool>().prop_map(|accepted| Message::NeighborReply { accepted }),
            Just(Message::Disconnect),
            (
                proptest::collection::vec(
                    (arb_publisher(), any::<u64>())
                        .prop_map(|(publisher, max_seq)| FeedSeq { publisher, max_seq }),
                    0..8
                ),
                any::<bool>()
            )
                .prop_map(|(feeds, reply)| Message::Clock { feeds, reply }),
            proptest::collection::vec(arb_notice(), 0..4)
                .prop_map(|notices| Message::Notices { notices }),
            (arb_bytes(200), 1..=MAX_BLOOM_HASHES)
                .prop_map(|(bloom, hashes)| Message::Pull { bloom, hashes }),
        ]
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode(&bytes, &Limits::default());
        }

        #[test]
        fn decode_never_panics_on_mutated_messages(
            msg in arb_message(),
            flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
            cut in any::<usize>(),
        ) {
            let mut bytes = encode(&msg);
            for (at, v) in flips {
                let i = at % bytes.len();
                bytes[i] = v;
            }
            let _ = decode(&bytes, &Limits::default());
            let keep = cut % (bytes.len() + 1);
            let _ = decode(&bytes[..keep], &Limits::default());
        }

        #[test]
        fn roundtrip_arbitrary(msg in arb_message()) {
            let bytes = encode(&msg);
            prop_assert_eq!(encoded_len(&msg), bytes.len());
            prop_assert_eq!(decode(&bytes, &Limits::default()).unwrap(), msg);
        }
    }
}
