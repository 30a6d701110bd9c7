//! Lockstep: a publisher announces `{key, sha256(key || value), seq}` before the value travels;
//! the nodes closest to the key keep the latest notice per key and publisher, refuse a later put
//! whose value does not match, and tell readers whether a value was announced.

pub mod protocol;

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use shoal_pow::{MessageClass, NodeKey, PublicKey, Stamp, StampChecker, StampError, StampPolicy};

use crate::envelope::{self, EnvelopeError};
use crate::record::{MAX_KEY_LEN, Record};

/// Largest encoded notice.
pub const MAX_NOTICE_LEN: usize = MAX_KEY_LEN + 1024;

const DOMAIN: &[u8] = b"shoal-lockstep-v1";

/// The hash a notice announces: `sha256(key || value)`.
pub fn value_hash(key: &[u8], value: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(key);
    h.update(value);
    h.finalize().into()
}

/// Why a notice, or a put checked against notices, was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LockstepError {
    /// The envelope is oversized, malformed or badly signed. Nothing was kept.
    #[error(transparent)]
    Envelope(#[from] EnvelopeError),
    /// The key is over [`MAX_KEY_LEN`]. Nothing was kept.
    #[error("notice key is {0} bytes, at most {MAX_KEY_LEN} allowed")]
    KeyTooLarge(usize),
    /// The notice's stamp does not pay for it. Nothing was kept.
    #[error("notice stamp refused: {0}")]
    Stamp(#[from] StampError),
    /// The notice's stamp text does not parse. Nothing was kept.
    #[error("notice stamp malformed: {0}")]
    StampMalformed(StampError),
    /// A notice with the same or a higher sequence number is already kept. Nothing changed.
    #[error("a notice with sequence {kept} is already kept (got {got})")]
    Stale {
        /// The kept notice's sequence number.
        kept: u64,
        /// The refused notice's sequence number.
        got: u64,
    },
    /// A broadcast notice is not signed for the feed position it travelled under. Nothing was
    /// kept or relayed.
    #[error("notice is not signed for the feed position it arrived as")]
    FeedMismatch,
    /// A put's value does not hash to what its publisher announced for that sequence number.
    /// The put was refused.
    #[error("value does not match the announced hash for sequence {seq}")]
    Mismatch {
        /// The announced sequence number.
        seq: u64,
    },
    /// A put is older than the publisher's latest announcement for the key. The put was refused.
    #[error("put sequence {got} is older than the announced sequence {announced}")]
    Superseded {
        /// The announced sequence number.
        announced: u64,
        /// The put's sequence number.
        got: u64,
    },
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Body {
    #[serde(with = "serde_bytes")]
    key: Vec<u8>,
    #[serde(with = "serde_bytes")]
    value_hash: Vec<u8>,
    seq: u64,
    created_at: u64,
    stamp: String,
    /// The notice's place in its publisher's feed ([`FeedPos`]); absent (0) in notices made
    /// before feeds existed, which stay valid but are not broadcast.
    #[serde(default, skip_serializing_if = "is_zero")]
    feed_epoch: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    feed_seq: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// A notice's place in its publisher's feed: the notices a node publishes are numbered 1, 2, 3…
/// within an epoch (the Unix second the feed began, kept across restarts by a node that keeps
/// its store; a node that lost it begins a new epoch). Signed with the notice, and covered by
/// its stamp, so a relayer can neither reorder a feed nor a publisher reuse one stamp twice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FeedPos {
    /// When the feed began, Unix seconds; at least 1.
    pub epoch: u64,
    /// The notice's number in the feed, from 1.
    pub seq: u64,
}

/// Length of a feed's id ([`FeedPos::feed_id`]).
pub const FEED_ID_LEN: usize = 40;

impl FeedPos {
    /// The id of `publisher`'s feed of this epoch, as the broadcast layer names feeds: the
    /// publisher's key, then the epoch as 8 big-endian bytes.
    pub fn feed_id(publisher: &PublicKey, epoch: u64) -> Vec<u8> {
        let mut id = Vec::with_capacity(FEED_ID_LEN);
        id.extend_from_slice(&publisher.to_bytes());
        id.extend_from_slice(&epoch.to_be_bytes());
        id
    }

    /// The publisher and epoch a feed id names, if it is one.
    pub fn parse_feed_id(id: &[u8]) -> Option<(PublicKey, u64)> {
        if id.len() != FEED_ID_LEN {
            return None;
        }
        let key: [u8; 32] = id[..32].try_into().ok()?;
        let epoch = u64::from_be_bytes(id[32..].try_into().ok()?);
        Some((PublicKey::from_bytes(&key).ok()?, epoch))
    }
}

/// A verified lockstep notice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    /// The announced key.
    pub key: Vec<u8>,
    /// `sha256(key || value)` of the value to come.
    pub value_hash: [u8; 32],
    /// Who announced it.
    pub publisher: PublicKey,
    /// The sequence number the value will carry.
    pub seq: u64,
    /// When the notice was made, Unix seconds.
    pub created_at: u64,
    /// The stamp that paid for it.
    pub stamp: Stamp,
    /// Its place in the publisher's feed, if it has one.
    pub feed: Option<FeedPos>,
}

/// A notice with its exact envelope bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedNotice {
    notice: Notice,
    bytes: Vec<u8>,
}

fn stamp_payload(
    value_hash: &[u8; 32],
    seq: u64,
    created_at: u64,
    feed: Option<FeedPos>,
) -> Vec<u8> {
    let mut payload = value_hash.to_vec();
    payload.extend_from_slice(&seq.to_be_bytes());
    payload.extend_from_slice(&created_at.to_be_bytes());
    if let Some(feed) = feed {
        payload.extend_from_slice(&feed.epoch.to_be_bytes());
        payload.extend_from_slice(&feed.seq.to_be_bytes());
    }
    payload
}

impl SignedNotice {
    /// Announces `value` for `key` at sequence `seq`, created at `now` (Unix seconds), at
    /// `feed` in the signer's feed if given (a feed position's `epoch` and `seq` must be
    /// positive).
    pub fn create(
        signer: &NodeKey,
        key: &[u8],
        value: &[u8],
        seq: u64,
        now: u64,
        feed: Option<FeedPos>,
        policy: &StampPolicy,
    ) -> Result<Self, LockstepError> {
        let rng = &mut rand::thread_rng();
        Self::create_with(signer, key, value, seq, now, feed, policy, rng)
    }

    /// Announces as [`SignedNotice::create`] does, with the stamp's salt drawn from `rng` (a
    /// core's seeded generator makes the notice a function of the seed).
    #[allow(clippy::too_many_arguments)]
    pub fn create_with(
        signer: &NodeKey,
        key: &[u8],
        value: &[u8],
        seq: u64,
        now: u64,
        feed: Option<FeedPos>,
        policy: &StampPolicy,
        rng: &mut impl rand::RngCore,
    ) -> Result<Self, LockstepError> {
        if key.len() > MAX_KEY_LEN {
            return Err(LockstepError::KeyTooLarge(key.len()));
        }
        let feed = feed.filter(|f| f.epoch > 0 && f.seq > 0);
        let hash = value_hash(key, value);
        let publisher = signer.public().to_bytes();
        let payload = stamp_payload(&hash, seq, now, feed);
        let class = MessageClass::LockstepNotice;
        let stamp = policy.mint_with(class, now, &publisher, key, &payload, rng)?;
        let body = Body {
            key: key.to_vec(),
            value_hash: hash.to_vec(),
            seq,
            created_at: now,
            stamp: stamp.to_string(),
            feed_epoch: feed.map_or(0, |f| f.epoch),
            feed_seq: feed.map_or(0, |f| f.seq),
        };
        let bytes = envelope::seal(signer, DOMAIN, &body);
        Ok(Self {
            notice: Notice {
                key: body.key,
                value_hash: hash,
                publisher: signer.public(),
                seq,
                created_at: now,
                stamp,
                feed,
            },
            bytes,
        })
    }

    /// Decodes a notice received at `now` (Unix seconds) and checks its signature and stamp
    /// (class lockstep notice: validity window and future skew apply; replays are refused by
    /// `stamps`' replay cache, so a notice is accepted once).
    pub fn validate(
        bytes: &[u8],
        now: u64,
        stamps: &mut StampChecker,
    ) -> Result<Self, LockstepError> {
        let signed = Self::decode(bytes)?;
        let n = &signed.notice;
        let payload = stamp_payload(&n.value_hash, n.seq, n.created_at, n.feed);
        stamps.check(
            now,
            &n.stamp,
            MessageClass::LockstepNotice,
            &n.publisher.to_bytes(),
            &n.key,
            &payload,
        )?;
        Ok(signed)
    }

    /// Checks a decoded notice kept by a peer, long after it was announced: its stamp must have
    /// paid for it when it was made (resource, bits, validity at `created_at`; replays are not
    /// checked, the stamp was consumed when the notice was first accepted), and it must not be
    /// dated beyond the future skew from `now` (Unix seconds).
    pub fn check_kept(&self, now: u64, stamps: &StampChecker) -> Result<(), LockstepError> {
        let n = &self.notice;
        let payload = stamp_payload(&n.value_hash, n.seq, n.created_at, n.feed);
        stamps.check_stateless(
            n.created_at.min(now),
            &n.stamp,
            MessageClass::LockstepNotice,
            &n.publisher.to_bytes(),
            &n.key,
            &payload,
        )?;
        Ok(())
    }

    /// Checks a notice that arrived by broadcast as the `seq`-th of the feed `feed_id` (the
    /// broadcast layer's names for it): its envelope's signature, that the feed position it
    /// signed is that one, and its stamp as [`check_kept`](Self::check_kept) does (a notice
    /// may be caught up with long after it was made; a stamp pays for one feed position, and
    /// the broadcast layer delivers each position once, so no replay cache is needed).
    pub fn verify_broadcast(
        feed_id: &[u8],
        seq: u64,
        body: &[u8],
        now: u64,
        stamps: &StampChecker,
    ) -> Result<Self, LockstepError> {
        let signed = Self::decode(body)?;
        if signed
            .feed_id()
            .is_none_or(|(id, s)| id != feed_id || s != seq)
        {
            return Err(LockstepError::FeedMismatch);
        }
        signed.check_kept(now, stamps)?;
        Ok(signed)
    }

    /// Decodes a notice and checks its signature only (for notices read back from storage).
    pub fn decode(bytes: &[u8]) -> Result<Self, LockstepError> {
        let opened = envelope::open("lockstep notice", DOMAIN, bytes, MAX_NOTICE_LEN)?;
        let body: Body = envelope::from_cbor("lockstep notice body", &opened.body)?;
        if body.key.len() > MAX_KEY_LEN {
            return Err(LockstepError::KeyTooLarge(body.key.len()));
        }
        let value_hash: [u8; 32] =
            body.value_hash
                .as_slice()
                .try_into()
                .map_err(|_| EnvelopeError::Malformed {
                    what: "lockstep notice body",
                    reason: "value hash is not 32 bytes".into(),
                })?;
        let stamp = Stamp::parse(body.stamp.as_bytes()).map_err(LockstepError::StampMalformed)?;
        let feed = match (body.feed_epoch, body.feed_seq) {
            (0, 0) => None,
            (epoch, seq) if epoch > 0 && seq > 0 => Some(FeedPos { epoch, seq }),
            _ => {
                return Err(EnvelopeError::Malformed {
                    what: "lockstep notice body",
                    reason: "a feed position needs both its epoch and its sequence".into(),
                }
                .into());
            }
        };
        Ok(Self {
            notice: Notice {
                key: body.key,
                value_hash,
                publisher: opened.publisher,
                seq: body.seq,
                created_at: body.created_at,
                stamp,
                feed,
            },
            bytes: bytes.to_vec(),
        })
    }

    /// The notice's fields.
    pub fn notice(&self) -> &Notice {
        &self.notice
    }

    /// Whether `self` should replace `other`, a notice of the same publisher for the same key,
    /// in a list of the latest notices: higher sequence wins, then the later creation.
    pub fn supersedes(&self, other: &SignedNotice) -> bool {
        (self.notice.seq, self.notice.created_at) > (other.notice.seq, other.notice.created_at)
    }

    /// The exact envelope bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The id of the feed the notice belongs to ([`FeedPos::feed_id`]) and its place in it.
    pub fn feed_id(&self) -> Option<(Vec<u8>, u64)> {
        let feed = self.notice.feed?;
        Some((
            FeedPos::feed_id(&self.notice.publisher, feed.epoch),
            feed.seq,
        ))
    }
}

/// Whether `notice` announces `record`: same key and publisher, same sequence number, and the
/// hash of the record's value. The one statement of the "announced" rule.
pub fn announces(notice: &SignedNotice, record: &Record) -> bool {
    let n = notice.notice();
    n.key == record.key
        && n.publisher == record.publisher
        && n.seq == record.seq
        && n.value_hash == value_hash(&record.key, &record.value)
}

/// The notices of a peer's answer for `key`, at most [`protocol::MAX_NOTICES_PER_RESPONSE`]; those
/// badly signed or for another key are dropped. Their stamps are not checked here.
pub fn decode_notices(key: &[u8], list: &[serde_bytes::ByteBuf]) -> Vec<SignedNotice> {
    list.iter()
        .take(protocol::MAX_NOTICES_PER_RESPONSE)
        .filter_map(|bytes| SignedNotice::decode(bytes).ok())
        .filter(|n| n.notice().key == key)
        .collect()
}

/// Whether a record's value was announced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Announced {
    /// A notice from the record's publisher for its key and sequence matches its value.
    Yes,
    /// No notice from the publisher covers this record.
    No,
}

/// Limits of a [`NoticeBook`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoticeBookConfig {
    /// Notices kept in all. Default 65,536. When full, the oldest notice (by creation time) is
    /// dropped to make room.
    pub max_notices: usize,
    /// Publishers kept per key. Default 16. When full, a new publisher's notice is refused unless
    /// it is newer than the oldest kept one, which it replaces.
    pub max_publishers_per_key: usize,
}

impl Default for NoticeBookConfig {
    fn default() -> Self {
        Self {
            max_notices: 65_536,
            max_publishers_per_key: 16,
        }
    }
}

/// The latest notice per key and publisher, bounded.
#[derive(Debug, Default)]
pub struct NoticeBook {
    config: NoticeBookConfig,
    by_key: HashMap<Vec<u8>, HashMap<PublicKey, SignedNotice>>,
    by_age: BTreeMap<(u64, Vec<u8>, [u8; 32]), ()>,
    len: usize,
}

impl NoticeBook {
    /// An empty book.
    pub fn new(config: NoticeBookConfig) -> Self {
        Self {
            config,
            ..Self::default()
        }
    }

    /// Keeps `notice` if it is newer than the one kept for its key and publisher. Returns the
    /// notices dropped to make room (for the caller's persistent copy).
    pub fn insert(&mut self, notice: SignedNotice) -> Result<Vec<SignedNotice>, LockstepError> {
        let n = notice.notice();
        let mut dropped = Vec::new();
        let publishers = self.by_key.entry(n.key.clone()).or_default();
        if let Some(kept) = publishers.get(&n.publisher) {
            if kept.notice().seq >= n.seq {
                return Err(LockstepError::Stale {
                    kept: kept.notice().seq,
                    got: n.seq,
                });
            }
        } else if publishers.len() >= self.config.max_publishers_per_key.max(1) {
            // Invariant: the map is non-empty since its length reached a positive bound.
            // Ties broken by publisher, not by the hash map's order.
            let oldest = publishers
                .values()
                .min_by_key(|s| (s.notice().created_at, s.notice().publisher.to_bytes()))
                .expect("non-empty")
                .clone();
            if oldest.notice().created_at >= n.created_at {
                return Err(LockstepError::Stale {
                    kept: oldest.notice().seq,
                    got: n.seq,
                });
            }
            self.remove(&oldest);
            dropped.push(oldest);
        }
        let replaced = self
            .by_key
            .entry(n.key.clone())
            .or_default()
            .insert(n.publisher, notice.clone());
        if let Some(old) = replaced {
            self.by_age.remove(&age_key(old.notice()));
        } else {
            self.len += 1;
        }
        self.by_age.insert(age_key(notice.notice()), ());
        while self.len > self.config.max_notices.max(1) {
            let Some((&(_, ref key, publisher), _)) = self.by_age.first_key_value() else {
                break;
            };
            let Ok(publisher) = PublicKey::from_bytes(&publisher) else {
                break;
            };
            let key = key.clone();
            if let Some(oldest) = self.get(&key, &publisher).cloned() {
                self.remove(&oldest);
                dropped.push(oldest);
            } else {
                break;
            }
        }
        Ok(dropped)
    }

    /// The notice kept for `key` from `publisher`.
    pub fn get(&self, key: &[u8], publisher: &PublicKey) -> Option<&SignedNotice> {
        self.by_key.get(key)?.get(publisher)
    }

    /// Every notice kept for `key`, newest first.
    pub fn for_key(&self, key: &[u8]) -> Vec<&SignedNotice> {
        let mut all: Vec<_> = self
            .by_key
            .get(key)
            .map(|m| m.values().collect())
            .unwrap_or_default();
        // Ties broken by publisher, not by the hash map's order.
        all.sort_by_key(|s| {
            let n = s.notice();
            (
                std::cmp::Reverse((n.created_at, n.seq)),
                n.publisher.to_bytes(),
            )
        });
        all
    }

    /// Notices kept.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no notice is kept.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Checks a put against the publisher's notice for its key: refused if the value does not
    /// match the notice for its sequence, or if the publisher announced a newer sequence.
    pub fn check_put(&self, record: &Record) -> Result<Announced, LockstepError> {
        let Some(kept) = self.get(&record.key, &record.publisher) else {
            return Ok(Announced::No);
        };
        let n = kept.notice();
        if n.seq > record.seq {
            return Err(LockstepError::Superseded {
                announced: n.seq,
                got: record.seq,
            });
        }
        if n.seq < record.seq {
            return Ok(Announced::No);
        }
        if !announces(kept, record) {
            return Err(LockstepError::Mismatch { seq: n.seq });
        }
        Ok(Announced::Yes)
    }

    /// Removes `notice` if it is the one kept for its key and publisher; whether it was.
    pub fn remove_if_kept(&mut self, notice: &SignedNotice) -> bool {
        let n = notice.notice();
        if self.get(&n.key, &n.publisher) != Some(notice) {
            return false;
        }
        self.remove(notice);
        true
    }

    fn remove(&mut self, notice: &SignedNotice) {
        let n = notice.notice();
        if let Some(publishers) = self.by_key.get_mut(&n.key) {
            if publishers.remove(&n.publisher).is_some() {
                self.len -= 1;
                self.by_age.remove(&age_key(n));
            }
            if publishers.is_empty() {
                self.by_key.remove(&n.key);
            }
        }
    }
}

fn age_key(n: &Notice) -> (u64, Vec<u8>, [u8; 32]) {
    (n.created_at, n.key.clone(), n.publisher.to_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{NewRecord, SignedRecord};

    const NOW: u64 = 1_795_435_200;

    fn policy() -> StampPolicy {
        StampPolicy::testnet()
    }

    fn record(key: &NodeKey, k: &str, v: &str, seq: u64) -> Record {
        let new = NewRecord {
            key: k.into(),
            value: v.into(),
            seq,
            ttl: 3600,
        };
        SignedRecord::create(key, new, NOW, &policy())
            .unwrap()
            .record()
            .clone()
    }

    #[test]
    fn notice_round_trips_and_is_accepted_once() {
        let key = NodeKey::generate();
        let notice = SignedNotice::create(&key, b"k", b"v", 3, NOW, None, &policy()).unwrap();
        let mut stamps = StampChecker::new(policy()).unwrap();
        let back = SignedNotice::validate(notice.as_bytes(), NOW, &mut stamps).unwrap();
        assert_eq!(back, notice);
        assert_eq!(back.notice().value_hash, value_hash(b"k", b"v"));
        assert_eq!(
            SignedNotice::validate(notice.as_bytes(), NOW, &mut stamps),
            Err(LockstepError::Stamp(StampError::Replayed))
        );
    }

    #[test]
    fn a_feed_position_is_signed_and_checked_against_the_one_it_travels_under() {
        let key = NodeKey::generate();
        let pos = FeedPos { epoch: NOW, seq: 4 };
        let notice = SignedNotice::create(&key, b"k", b"v", 3, NOW, Some(pos), &policy()).unwrap();
        let stamps = StampChecker::new(policy()).unwrap();
        let (feed, seq) = notice.feed_id().unwrap();
        assert_eq!(FeedPos::parse_feed_id(&feed), Some((key.public(), NOW)));
        assert_eq!(seq, 4);
        let bytes = notice.as_bytes();
        // Checked long after it was made (a catch-up): the stamp paid for it then.
        let back = SignedNotice::verify_broadcast(&feed, 4, bytes, NOW + 86_400, &stamps).unwrap();
        assert_eq!(back.notice().feed, Some(pos));
        assert_eq!(
            SignedNotice::verify_broadcast(&feed, 5, bytes, NOW, &stamps),
            Err(LockstepError::FeedMismatch)
        );
        let mut other = feed.clone();
        other[39] ^= 1;
        assert_eq!(
            SignedNotice::verify_broadcast(&other, 4, bytes, NOW, &stamps),
            Err(LockstepError::FeedMismatch)
        );
        // A notice without a feed position is never a broadcast one.
        let plain = SignedNotice::create(&key, b"k", b"v", 3, NOW, None, &policy()).unwrap();
        assert_eq!(plain.feed_id(), None);
        assert_eq!(
            SignedNotice::verify_broadcast(&feed, 4, plain.as_bytes(), NOW, &stamps),
            Err(LockstepError::FeedMismatch)
        );
    }

    #[test]
    fn a_stamp_pays_for_one_feed_position() {
        // The publisher reuses the stamp of position 4 for position 5: the envelope is signed,
        // but the stamp's resource names the other position.
        let key = NodeKey::generate();
        let paid = FeedPos { epoch: NOW, seq: 4 };
        let notice = SignedNotice::create(&key, b"k", b"v", 3, NOW, Some(paid), &policy()).unwrap();
        let body = Body {
            key: b"k".to_vec(),
            value_hash: value_hash(b"k", b"v").to_vec(),
            seq: 3,
            created_at: NOW,
            stamp: notice.notice().stamp.to_string(),
            feed_epoch: NOW,
            feed_seq: 5,
        };
        let bytes = envelope::seal(&key, DOMAIN, &body);
        let feed = FeedPos::feed_id(&key.public(), NOW);
        let stamps = StampChecker::new(policy()).unwrap();
        assert_eq!(
            SignedNotice::verify_broadcast(&feed, 5, &bytes, NOW, &stamps),
            Err(LockstepError::Stamp(StampError::WrongResource))
        );
        // And a feed position without its epoch (or its sequence) does not decode.
        let half = Body {
            feed_epoch: 0,
            ..body
        };
        let bytes = envelope::seal(&key, DOMAIN, &half);
        assert!(matches!(
            SignedNotice::decode(&bytes),
            Err(LockstepError::Envelope(_))
        ));
    }

    #[test]
    fn put_must_match_the_announced_hash() {
        let key = NodeKey::generate();
        let mut book = NoticeBook::new(NoticeBookConfig::default());
        book.insert(SignedNotice::create(&key, b"k", b"good", 2, NOW, None, &policy()).unwrap())
            .unwrap();
        assert_eq!(
            book.check_put(&record(&key, "k", "good", 2)),
            Ok(Announced::Yes)
        );
        assert_eq!(
            book.check_put(&record(&key, "k", "evil", 2)),
            Err(LockstepError::Mismatch { seq: 2 })
        );
        assert_eq!(
            book.check_put(&record(&key, "k", "good", 1)),
            Err(LockstepError::Superseded {
                announced: 2,
                got: 1
            })
        );
        assert_eq!(
            book.check_put(&record(&key, "k", "newer", 3)),
            Ok(Announced::No)
        );
        // Another publisher's notice does not bind this one.
        let other = NodeKey::generate();
        assert_eq!(
            book.check_put(&record(&other, "k", "evil", 2)),
            Ok(Announced::No)
        );
    }

    #[test]
    fn keeps_only_the_latest_per_key_and_publisher() {
        let key = NodeKey::generate();
        let mut book = NoticeBook::new(NoticeBookConfig::default());
        book.insert(SignedNotice::create(&key, b"k", b"a", 2, NOW, None, &policy()).unwrap())
            .unwrap();
        assert_eq!(
            book.insert(SignedNotice::create(&key, b"k", b"b", 1, NOW, None, &policy()).unwrap()),
            Err(LockstepError::Stale { kept: 2, got: 1 })
        );
        book.insert(SignedNotice::create(&key, b"k", b"c", 3, NOW, None, &policy()).unwrap())
            .unwrap();
        assert_eq!(book.len(), 1);
        assert_eq!(
            book.get(b"k", &key.public()).unwrap().notice().value_hash,
            value_hash(b"k", b"c")
        );
    }

    #[test]
    fn book_is_bounded() {
        let mut book = NoticeBook::new(NoticeBookConfig {
            max_notices: 3,
            max_publishers_per_key: 2,
        });
        let keys: Vec<_> = (0..4).map(|i| NodeKey::from_seed([i; 32])).collect();
        // Three publishers on one key: the third replaces the oldest.
        for (i, k) in keys.iter().take(3).enumerate() {
            book.insert(
                SignedNotice::create(k, b"k", b"v", 1, NOW + i as u64, None, &policy()).unwrap(),
            )
            .unwrap();
        }
        assert_eq!(book.for_key(b"k").len(), 2);
        assert!(book.get(b"k", &keys[0].public()).is_none());
        // Two more keys: the total stays at 3, dropping the oldest.
        for (i, k) in [b"x", b"y"].iter().enumerate() {
            book.insert(
                SignedNotice::create(&keys[3], *k, b"v", 1, NOW + 10 + i as u64, None, &policy())
                    .unwrap(),
            )
            .unwrap();
        }
        assert_eq!(book.len(), 3);
        assert!(book.get(b"k", &keys[1].public()).is_none());
        assert!(book.get(b"y", &keys[3].public()).is_some());
    }
}
