//! Records: the signed CBOR envelope the DHT stores under a key.
//!
//! The body holds the key, the value, a sequence number, the creation time, a TTL and a hashcash
//! stamp; the envelope adds the publisher's key and a signature over the body. The stamp's
//! resource binds the publisher, the key and a digest of (value, seq, created_at, ttl), so it
//! cannot pay for another record. Expiry counts from `created_at`, never from the last
//! replication.

use serde::{Deserialize, Serialize};
use shoal_pow::{MessageClass, NodeKey, PublicKey, Stamp, StampChecker, StampError, StampPolicy};

use crate::envelope::{self, EnvelopeError};

/// Longest record key, in bytes.
pub const MAX_KEY_LEN: usize = 512;
/// Largest record value, in bytes: 64 KiB.
pub const MAX_VALUE_LEN: usize = 64 * 1024;
/// Largest encoded record envelope: the value, the key and room for the other fields.
pub const MAX_RECORD_LEN: usize = MAX_VALUE_LEN + MAX_KEY_LEN + 1024;

const DOMAIN: &[u8] = b"shoal-record-v1";

/// Why a record was refused. None of these change any state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// The envelope is oversized, malformed or badly signed.
    #[error(transparent)]
    Envelope(#[from] EnvelopeError),
    /// The key or value is over its limit.
    #[error("{what} is {len} bytes, at most {max} allowed")]
    TooLarge {
        /// `"key"` or `"value"`.
        what: &'static str,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The record was stored under another key than the one it names.
    #[error("record names another key than the one it was stored under")]
    KeyMismatch,
    /// The stamp does not pay for this record.
    #[error("record stamp refused: {0}")]
    Stamp(#[from] StampError),
    /// The stamp text in the body does not parse.
    #[error("record stamp malformed: {0}")]
    StampMalformed(StampError),
    /// The record's TTL ran out.
    #[error("record expired at {expires_at} (now {now}, Unix seconds)")]
    Expired {
        /// When it expired.
        expires_at: u64,
        /// The checker's time.
        now: u64,
    },
    /// The record claims to be created later than now plus the allowed skew.
    #[error("record created at {created_at}, in the future (now {now}, Unix seconds)")]
    FromTheFuture {
        /// The claimed creation time.
        created_at: u64,
        /// The checker's time.
        now: u64,
    },
    /// The TTL is zero or above the maximum.
    #[error("record TTL {ttl} s is not within 1..={max} s")]
    BadTtl {
        /// The record's TTL.
        ttl: u64,
        /// The maximum.
        max: u64,
    },
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Body {
    #[serde(with = "serde_bytes")]
    key: Vec<u8>,
    #[serde(with = "serde_bytes")]
    value: Vec<u8>,
    seq: u64,
    created_at: u64,
    ttl: u64,
    stamp: String,
}

/// A record's fields, after its signature was checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The key.
    pub key: Vec<u8>,
    /// The value.
    pub value: Vec<u8>,
    /// Who signed it.
    pub publisher: PublicKey,
    /// The publisher's sequence number; higher wins.
    pub seq: u64,
    /// Creation time, Unix seconds.
    pub created_at: u64,
    /// Lifetime from `created_at`, seconds.
    pub ttl: u64,
    /// The stamp that paid for it.
    pub stamp: Stamp,
}

impl Record {
    /// When the record expires, Unix seconds.
    pub fn expires_at(&self) -> u64 {
        self.created_at.saturating_add(self.ttl)
    }
}

/// What to publish: the caller's part of a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRecord {
    /// The key, at most [`MAX_KEY_LEN`] bytes.
    pub key: Vec<u8>,
    /// The value, at most [`MAX_VALUE_LEN`] bytes.
    pub value: Vec<u8>,
    /// Sequence number; must grow with each new value of the key for it to win.
    pub seq: u64,
    /// Lifetime in seconds.
    pub ttl: u64,
}

/// A record together with its exact envelope bytes (what the DHT stores and sends).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedRecord {
    record: Record,
    bytes: Vec<u8>,
}

/// Limits that a record must respect beyond its signature and stamp.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordRules {
    /// Longest TTL accepted, seconds. Default 7 days.
    pub max_ttl: u64,
    /// How far in the future `created_at` may be, seconds. Default 120.
    pub future_skew: u64,
}

impl Default for RecordRules {
    fn default() -> Self {
        Self {
            max_ttl: 7 * 86_400,
            future_skew: 120,
        }
    }
}

fn stamp_payload(value: &[u8], seq: u64, created_at: u64, ttl: u64) -> Vec<u8> {
    let mut payload = Vec::with_capacity(value.len() + 24);
    payload.extend_from_slice(value);
    for n in [seq, created_at, ttl] {
        payload.extend_from_slice(&n.to_be_bytes());
    }
    payload
}

fn check_sizes(key: &[u8], value: &[u8]) -> Result<(), RecordError> {
    if key.len() > MAX_KEY_LEN {
        return Err(RecordError::TooLarge {
            what: "key",
            len: key.len(),
            max: MAX_KEY_LEN,
        });
    }
    if value.len() > MAX_VALUE_LEN {
        return Err(RecordError::TooLarge {
            what: "value",
            len: value.len(),
            max: MAX_VALUE_LEN,
        });
    }
    Ok(())
}

impl SignedRecord {
    /// Stamps and signs a new record created at `now` (Unix seconds). Minting the stamp costs
    /// `2^bits` hashes for the policy's record-put bits.
    pub fn create(
        key: &NodeKey,
        new: NewRecord,
        now: u64,
        policy: &StampPolicy,
    ) -> Result<Self, RecordError> {
        Self::create_with(key, new, now, policy, &mut rand::thread_rng())
    }

    /// Creates a record as [`SignedRecord::create`] does, with the stamp's salt drawn from
    /// `rng` (a core's seeded generator makes the record a function of the seed).
    pub fn create_with(
        key: &NodeKey,
        new: NewRecord,
        now: u64,
        policy: &StampPolicy,
        rng: &mut impl rand::RngCore,
    ) -> Result<Self, RecordError> {
        check_sizes(&new.key, &new.value)?;
        let payload = stamp_payload(&new.value, new.seq, now, new.ttl);
        let publisher = key.public().to_bytes();
        let class = MessageClass::RecordPut;
        let stamp = policy.mint_with(class, now, &publisher, &new.key, &payload, rng)?;
        let body = Body {
            key: new.key,
            value: new.value,
            seq: new.seq,
            created_at: now,
            ttl: new.ttl,
            stamp: stamp.to_string(),
        };
        let bytes = envelope::seal(key, DOMAIN, &body);
        let record = Record {
            key: body.key,
            value: body.value,
            publisher: key.public(),
            seq: body.seq,
            created_at: body.created_at,
            ttl: body.ttl,
            stamp,
        };
        Ok(Self { record, bytes })
    }

    /// Decodes an envelope and checks its structure and signature only (no stamp, no time).
    pub fn decode(bytes: &[u8]) -> Result<Self, RecordError> {
        let opened = envelope::open("record", DOMAIN, bytes, MAX_RECORD_LEN)?;
        let body: Body = envelope::from_cbor("record body", &opened.body)?;
        check_sizes(&body.key, &body.value)?;
        let stamp = Stamp::parse(body.stamp.as_bytes()).map_err(RecordError::StampMalformed)?;
        Ok(Self {
            record: Record {
                key: body.key,
                value: body.value,
                publisher: opened.publisher,
                seq: body.seq,
                created_at: body.created_at,
                ttl: body.ttl,
                stamp,
            },
            bytes: bytes.to_vec(),
        })
    }

    /// Decodes and fully validates a record received at `now` (Unix seconds): signature, sizes,
    /// TTL, creation time, expiry, and a stamp that paid for this record when it was created.
    /// `expected_key` is the key it was stored or looked up under, if any.
    pub fn validate(
        bytes: &[u8],
        expected_key: Option<&[u8]>,
        now: u64,
        rules: &RecordRules,
        stamps: &StampChecker,
    ) -> Result<Self, RecordError> {
        let signed = Self::decode(bytes)?;
        signed.check(expected_key, now, rules, stamps)?;
        Ok(signed)
    }

    /// Every check of [`Self::validate`] but the signature, which decoding already made: the key
    /// it was stored or looked up under, TTL, creation time, expiry and the stamp.
    pub fn check(
        &self,
        expected_key: Option<&[u8]>,
        now: u64,
        rules: &RecordRules,
        stamps: &StampChecker,
    ) -> Result<(), RecordError> {
        let r = &self.record;
        if expected_key.is_some_and(|k| k != r.key.as_slice()) {
            return Err(RecordError::KeyMismatch);
        }
        if r.ttl == 0 || r.ttl > rules.max_ttl {
            return Err(RecordError::BadTtl {
                ttl: r.ttl,
                max: rules.max_ttl,
            });
        }
        if r.created_at > now.saturating_add(rules.future_skew) {
            return Err(RecordError::FromTheFuture {
                created_at: r.created_at,
                now,
            });
        }
        if self.is_expired(now) {
            return Err(RecordError::Expired {
                expires_at: r.expires_at(),
                now,
            });
        }
        // The stamp must have been valid when the record was created: replicas re-check it long
        // after its validity window has passed.
        let payload = stamp_payload(&r.value, r.seq, r.created_at, r.ttl);
        stamps.check_stateless(
            r.created_at,
            &r.stamp,
            MessageClass::RecordPut,
            &r.publisher.to_bytes(),
            &r.key,
            &payload,
        )?;
        Ok(())
    }

    /// The record's fields.
    pub fn record(&self) -> &Record {
        &self.record
    }

    /// The exact envelope bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The envelope bytes, consuming the record.
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }

    /// Whether `self` should replace `other` for the same key: higher sequence wins; on a tie the
    /// later creation, then the larger envelope bytes, so every node picks the same one.
    pub fn supersedes(&self, other: &SignedRecord) -> bool {
        self.precedence() > other.precedence()
    }

    /// The order in which records of one key replace each other (see [`Self::supersedes`]).
    fn precedence(&self) -> (u64, u64, &[u8]) {
        (self.record.seq, self.record.created_at, &self.bytes)
    }

    /// Whether the record's lifetime has ended at `now` (Unix seconds).
    pub fn is_expired(&self, now: u64) -> bool {
        now >= self.record.expires_at()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) const NOW: u64 = 1_795_435_200;

    fn rules_and_checker() -> (RecordRules, StampChecker) {
        (
            RecordRules::default(),
            StampChecker::new(StampPolicy::testnet()).unwrap(),
        )
    }

    fn new(key: &str, value: &str, seq: u64) -> NewRecord {
        NewRecord {
            key: key.into(),
            value: value.into(),
            seq,
            ttl: 3600,
        }
    }

    #[test]
    fn create_then_validate() {
        let key = NodeKey::generate();
        let signed =
            SignedRecord::create(&key, new("k", "v", 1), NOW, &StampPolicy::testnet()).unwrap();
        let (rules, checker) = rules_and_checker();
        let back =
            SignedRecord::validate(signed.as_bytes(), Some(b"k"), NOW + 10, &rules, &checker)
                .unwrap();
        assert_eq!(back, signed);
        assert_eq!(back.record().publisher, key.public());
        assert_eq!(back.record().expires_at(), NOW + 3600);
    }

    #[test]
    fn replicas_accept_it_after_the_stamp_window_until_ttl() {
        let key = NodeKey::generate();
        let mut n = new("k", "v", 1);
        n.ttl = 86_400;
        let signed = SignedRecord::create(&key, n, NOW, &StampPolicy::testnet()).unwrap();
        let (rules, checker) = rules_and_checker();
        let later = NOW + 20 * 3600;
        SignedRecord::validate(signed.as_bytes(), None, later, &rules, &checker).unwrap();
        assert_eq!(
            SignedRecord::validate(signed.as_bytes(), None, NOW + 86_400, &rules, &checker),
            Err(RecordError::Expired {
                expires_at: NOW + 86_400,
                now: NOW + 86_400
            })
        );
    }

    #[test]
    fn refuses_wrong_key_future_and_bad_ttl() {
        let key = NodeKey::generate();
        let policy = StampPolicy::testnet();
        let (rules, checker) = rules_and_checker();
        let signed = SignedRecord::create(&key, new("k", "v", 1), NOW, &policy).unwrap();
        assert_eq!(
            SignedRecord::validate(signed.as_bytes(), Some(b"j"), NOW, &rules, &checker),
            Err(RecordError::KeyMismatch)
        );
        assert!(matches!(
            SignedRecord::validate(signed.as_bytes(), None, NOW - 1000, &rules, &checker),
            Err(RecordError::FromTheFuture { .. })
        ));
        let mut n = new("k", "v", 1);
        n.ttl = 0;
        let zero = SignedRecord::create(&key, n, NOW, &policy).unwrap();
        assert!(matches!(
            SignedRecord::validate(zero.as_bytes(), None, NOW, &rules, &checker),
            Err(RecordError::BadTtl { ttl: 0, .. })
        ));
    }

    #[test]
    fn refuses_oversized_values() {
        let key = NodeKey::generate();
        let n = NewRecord {
            value: vec![0; MAX_VALUE_LEN + 1],
            ..new("k", "", 1)
        };
        assert!(matches!(
            SignedRecord::create(&key, n, NOW, &StampPolicy::testnet()),
            Err(RecordError::TooLarge { what: "value", .. })
        ));
    }

    #[test]
    fn a_stamp_for_another_record_is_refused() {
        // Re-sign a body whose stamp was minted for another value: signature valid, stamp not.
        let key = NodeKey::generate();
        let policy = StampPolicy::testnet();
        let honest = SignedRecord::create(&key, new("k", "v1", 1), NOW, &policy).unwrap();
        let forged = envelope::seal(
            &key,
            DOMAIN,
            &Body {
                key: b"k".to_vec(),
                value: b"v2".to_vec(),
                seq: 1,
                created_at: NOW,
                ttl: 3600,
                stamp: honest.record().stamp.to_string(),
            },
        );
        let (rules, checker) = rules_and_checker();
        assert_eq!(
            SignedRecord::validate(&forged, None, NOW, &rules, &checker),
            Err(RecordError::Stamp(StampError::WrongResource))
        );
    }

    #[test]
    fn tampering_with_any_byte_is_refused() {
        let key = NodeKey::generate();
        let signed =
            SignedRecord::create(&key, new("k", "value", 1), NOW, &StampPolicy::testnet()).unwrap();
        let (rules, checker) = rules_and_checker();
        for i in 0..signed.as_bytes().len() {
            let mut bytes = signed.as_bytes().to_vec();
            bytes[i] ^= 0x01;
            assert!(
                SignedRecord::validate(&bytes, None, NOW, &rules, &checker).is_err(),
                "flipping byte {i} went unnoticed"
            );
        }
    }

    #[test]
    fn higher_sequence_supersedes() {
        let key = NodeKey::generate();
        let policy = StampPolicy::testnet();
        let a = SignedRecord::create(&key, new("k", "a", 1), NOW, &policy).unwrap();
        let b = SignedRecord::create(&key, new("k", "b", 2), NOW - 10, &policy).unwrap();
        assert!(b.supersedes(&a));
        assert!(!a.supersedes(&b));
        assert!(!a.supersedes(&a));
    }
}
