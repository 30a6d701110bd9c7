//! A signed envelope: CBOR body bytes, the publisher's key and an ed25519 signature over
//! a domain tag and the body bytes.
//!
//! The signature covers the body's exact bytes, so decoding never has to re-encode anything to
//! check it. Each kind of body has its own domain tag, so a signature over a record can never pass
//! as a signature over a lockstep notice.

use serde::{Deserialize, Serialize};
use shoal_pow::{NodeKey, PublicKey, SIGNATURE_LEN};

/// Why an envelope was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    /// The input is longer than the limit for its kind. Nothing was decoded.
    #[error("{what} is {len} bytes, at most {max} allowed")]
    TooLarge {
        /// What was being decoded.
        what: &'static str,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The bytes are not a well-formed envelope or body.
    #[error("malformed {what}: {reason}")]
    Malformed {
        /// What was being decoded.
        what: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The signature does not match the body and publisher key.
    #[error("bad signature on {0}")]
    BadSignature(&'static str),
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire {
    #[serde(with = "serde_bytes")]
    body: Vec<u8>,
    #[serde(with = "serde_bytes")]
    publisher: Vec<u8>,
    #[serde(with = "serde_bytes")]
    signature: Vec<u8>,
}

/// A verified envelope: the publisher's key and the body bytes it signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Opened {
    pub(crate) publisher: PublicKey,
    pub(crate) body: Vec<u8>,
}

fn signed_message(domain: &[u8], body: &[u8]) -> Vec<u8> {
    let mut msg = Vec::with_capacity(domain.len() + 1 + body.len());
    msg.extend_from_slice(domain);
    msg.push(0);
    msg.extend_from_slice(body);
    msg
}

/// Encodes `body` as CBOR and wraps it in an envelope signed by `key` under `domain`.
pub(crate) fn seal<T: Serialize>(key: &NodeKey, domain: &[u8], body: &T) -> Vec<u8> {
    let body = to_cbor(body);
    let signature = key.sign(&signed_message(domain, &body));
    to_cbor(&Wire {
        body,
        publisher: key.public().to_bytes().to_vec(),
        signature: signature.to_vec(),
    })
}

/// Decodes an envelope of at most `max` bytes and checks its signature under `domain`.
pub(crate) fn open(
    what: &'static str,
    domain: &[u8],
    bytes: &[u8],
    max: usize,
) -> Result<Opened, EnvelopeError> {
    if bytes.len() > max {
        return Err(EnvelopeError::TooLarge {
            what,
            len: bytes.len(),
            max,
        });
    }
    let wire: Wire = from_cbor(what, bytes)?;
    let publisher =
        PublicKey::try_from_slice(&wire.publisher).map_err(|_| EnvelopeError::Malformed {
            what,
            reason: "publisher is not an ed25519 public key".into(),
        })?;
    if wire.signature.len() != SIGNATURE_LEN {
        return Err(EnvelopeError::BadSignature(what));
    }
    publisher
        .verify(&signed_message(domain, &wire.body), &wire.signature)
        .map_err(|_| EnvelopeError::BadSignature(what))?;
    Ok(Opened {
        publisher,
        body: wire.body,
    })
}

/// Encodes `value` as CBOR.
pub(crate) fn to_cbor<T: Serialize>(value: &T) -> Vec<u8> {
    // Invariant: our wire types are plain structs of integers, strings and byte strings, which
    // always serialize; writing to a Vec cannot fail.
    cbor4ii::serde::to_vec(Vec::new(), value).expect("plain structs always encode")
}

/// Decodes CBOR, naming `what` in the error.
pub(crate) fn from_cbor<'a, T: Deserialize<'a>>(
    what: &'static str,
    bytes: &'a [u8],
) -> Result<T, EnvelopeError> {
    cbor4ii::serde::from_slice(bytes).map_err(|e| EnvelopeError::Malformed {
        what,
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Body {
        n: u64,
    }

    #[test]
    fn seal_then_open() {
        let key = NodeKey::generate();
        let bytes = seal(&key, b"test", &Body { n: 7 });
        let opened = open("test", b"test", &bytes, 1024).unwrap();
        assert_eq!(opened.publisher, key.public());
        let body: Body = from_cbor("body", &opened.body).unwrap();
        assert_eq!(body, Body { n: 7 });
    }

    #[test]
    fn another_domain_does_not_verify() {
        let key = NodeKey::generate();
        let bytes = seal(&key, b"record", &Body { n: 7 });
        assert_eq!(
            open("x", b"notice", &bytes, 1024),
            Err(EnvelopeError::BadSignature("x"))
        );
    }

    #[test]
    fn oversized_and_garbage_are_refused() {
        assert!(matches!(
            open("x", b"d", &[0u8; 2000], 1024),
            Err(EnvelopeError::TooLarge { len: 2000, .. })
        ));
        assert!(matches!(
            open("x", b"d", &[0xff, 0x00, 0x13], 1024),
            Err(EnvelopeError::Malformed { .. })
        ));
    }
}
