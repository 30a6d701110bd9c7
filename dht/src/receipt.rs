//! Signed storage receipts: a replica's signed word that it keeps a record.
//!
//! A replica that kept a record durably answers a put with a [`Receipt`]: its signature over the
//! record's key, sequence number and value hash (`sha256(key || value)`, the hash lockstep
//! announces) and the time it signed, under its own node key. The putter checks each receipt
//! against the record it sent and the peer that answered, hands the quorum's receipts to its
//! caller, and remembers who signed what: a replica that later answers for the key with nothing,
//! or with an older sequence, while the record should still live, denied its own receipt, which
//! lowers its standing. A get can ask holders for a fresh receipt ([`crate::wire::Request::Prove`]),
//! so a caller holds third-party evidence of who served it.
//!
//! A receipt is self-contained: anyone can check it with the replica's public key, which it
//! carries (the replica's peer id is derived from that key).

use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;
use shoal_pow::{NodeKey, PublicKey};

use crate::envelope::{self, EnvelopeError};
use crate::lockstep::value_hash;
use crate::record::{MAX_KEY_LEN, Record};

/// Largest encoded receipt: a key of [`MAX_KEY_LEN`] bytes, a hash, two integers, a key and a
/// signature, with their framing.
pub const MAX_RECEIPT_LEN: usize = MAX_KEY_LEN + 256;

const DOMAIN: &[u8] = b"shoal-receipt-v1";

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Body {
    key: ByteBuf,
    seq: u64,
    value_hash: ByteBuf,
    time: u64,
}

/// Why a receipt was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReceiptError {
    /// Oversized, malformed or badly signed.
    #[error(transparent)]
    Envelope(#[from] EnvelopeError),
    /// Well signed, but for another record than the one it was expected for.
    #[error("receipt is for {what} other than the record's")]
    Mismatch {
        /// The field that differs: `"a key"`, `"a sequence"` or `"a value"`.
        what: &'static str,
    },
    /// Well signed, but by another key than the peer's that answered with it.
    #[error("receipt signed by another key than the answering peer's")]
    WrongSigner,
}

/// A replica's signed receipt for a record (see the module's documentation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    key: Vec<u8>,
    seq: u64,
    value_hash: [u8; 32],
    time: u64,
    replica: PublicKey,
    bytes: Vec<u8>,
}

impl Receipt {
    /// The receipt of `replica` for `record`, signed at `time` (Unix seconds).
    pub fn sign(replica: &NodeKey, record: &Record, time: u64) -> Self {
        let hash = value_hash(&record.key, &record.value);
        Self::sign_parts(replica, &record.key, record.seq, hash, time)
    }

    /// The receipt of `replica` for the record of `key`, `seq` and value hash `hash`, signed at
    /// `time` (Unix seconds).
    pub fn sign_parts(replica: &NodeKey, key: &[u8], seq: u64, hash: [u8; 32], time: u64) -> Self {
        let body = Body {
            key: ByteBuf::from(key.to_vec()),
            seq,
            value_hash: ByteBuf::from(hash.to_vec()),
            time,
        };
        let bytes = envelope::seal(replica, DOMAIN, &body);
        Self {
            key: key.to_vec(),
            seq,
            value_hash: hash,
            time,
            replica: replica.public(),
            bytes,
        }
    }

    /// Decodes a receipt of at most [`MAX_RECEIPT_LEN`] bytes and checks its signature.
    pub fn decode(bytes: &[u8]) -> Result<Self, ReceiptError> {
        let opened = envelope::open("receipt", DOMAIN, bytes, MAX_RECEIPT_LEN)?;
        let body: Body = envelope::from_cbor("receipt body", &opened.body)?;
        let malformed = |reason: &str| EnvelopeError::Malformed {
            what: "receipt",
            reason: reason.into(),
        };
        if body.key.len() > MAX_KEY_LEN {
            return Err(malformed("key over its bound").into());
        }
        let value_hash: [u8; 32] = body
            .value_hash
            .as_slice()
            .try_into()
            .map_err(|_| malformed("value hash is not 32 bytes"))?;
        Ok(Self {
            key: body.key.into_vec(),
            seq: body.seq,
            value_hash,
            time: body.time,
            replica: opened.publisher,
            bytes: bytes.to_vec(),
        })
    }

    /// Whether this receipt is for `record`: the same key, sequence number and value.
    pub fn check(&self, record: &Record) -> Result<(), ReceiptError> {
        self.check_parts(
            &record.key,
            record.seq,
            &value_hash(&record.key, &record.value),
        )
    }

    /// Whether this receipt is for the record of `key`, `seq` and `hash` (its
    /// [`value_hash`]).
    pub fn check_parts(&self, key: &[u8], seq: u64, hash: &[u8; 32]) -> Result<(), ReceiptError> {
        let what = if self.key != key {
            "a key"
        } else if self.seq != seq {
            "a sequence"
        } else if &self.value_hash != hash {
            "a value"
        } else {
            return Ok(());
        };
        Err(ReceiptError::Mismatch { what })
    }

    /// The record's key.
    pub fn key(&self) -> &[u8] {
        &self.key
    }

    /// The record's sequence number.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// `sha256(key || value)` of the record.
    pub fn value_hash(&self) -> &[u8; 32] {
        &self.value_hash
    }

    /// When the replica signed, Unix seconds (by its clock).
    pub fn time(&self) -> u64 {
        self.time
    }

    /// The replica's public key (its peer id is derived from it).
    pub fn replica(&self) -> &PublicKey {
        &self.replica
    }

    /// The exact signed bytes, as they travel and as a client keeps them.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{NewRecord, SignedRecord};
    use shoal_pow::{StampPolicy, unix_now};

    fn record(value: &[u8], seq: u64) -> Record {
        let publisher = NodeKey::from_seed([9; 32]);
        let new = NewRecord {
            key: b"k".to_vec(),
            value: value.to_vec(),
            seq,
            ttl: 60,
        };
        let policy = StampPolicy::testnet();
        SignedRecord::create(&publisher, new, unix_now(), &policy)
            .unwrap()
            .record()
            .clone()
    }

    #[test]
    fn a_receipt_verifies_for_its_record_only() {
        let replica = NodeKey::from_seed([3; 32]);
        let kept = record(b"v", 7);
        let receipt = Receipt::sign(&replica, &kept, 1_000);
        let back = Receipt::decode(receipt.as_bytes()).unwrap();
        assert_eq!(back, receipt);
        assert_eq!(back.replica(), &replica.public());
        assert_eq!((back.seq(), back.time(), back.key()), (7, 1_000, &b"k"[..]));
        back.check(&kept).unwrap();
        let other_value = record(b"w", 7);
        assert_eq!(
            back.check(&other_value),
            Err(ReceiptError::Mismatch { what: "a value" })
        );
        assert_eq!(
            back.check(&record(b"v", 8)),
            Err(ReceiptError::Mismatch { what: "a sequence" })
        );
    }

    #[test]
    fn a_forged_or_oversized_receipt_is_refused() {
        let receipt = Receipt::sign(&NodeKey::from_seed([3; 32]), &record(b"v", 7), 1_000);
        // Any flipped bit of the signed bytes spoils the signature or the encoding.
        for i in 0..receipt.as_bytes().len() {
            let mut forged = receipt.as_bytes().to_vec();
            forged[i] ^= 0x01;
            assert!(Receipt::decode(&forged).is_err(), "byte {i}");
        }
        let long = vec![0u8; MAX_RECEIPT_LEN + 1];
        assert!(matches!(
            Receipt::decode(&long),
            Err(ReceiptError::Envelope(EnvelopeError::TooLarge { .. }))
        ));
        assert!(Receipt::decode(&[0xff; 16]).is_err());
    }
}
