//! Helpers shared by the DHT fuzz targets: reading fields off the input and sealing a body in a
//! validly signed envelope, so the fuzzer reaches the body decoder behind the signature check.

#![allow(dead_code)]

use std::sync::OnceLock;

use serde::Serialize;
use shoal_pow::NodeKey;

/// A fixed start of the stamps' date range (2000-01-01) and its length (99 years), so the dates
/// made here can carry a minted stamp.
const DATE_START: u64 = 946_684_800;
const DATE_SPAN: u64 = 99 * 365 * 86_400;

/// The signing key of the envelopes sealed here.
pub fn key() -> &'static NodeKey {
    static KEY: OnceLock<NodeKey> = OnceLock::new();
    KEY.get_or_init(|| NodeKey::from_seed([7; 32]))
}

/// The envelope's wire form, as `shoal_dht::envelope` writes it.
#[derive(Serialize)]
struct Wire<'a> {
    #[serde(with = "serde_bytes")]
    body: &'a [u8],
    #[serde(with = "serde_bytes")]
    publisher: &'a [u8],
    #[serde(with = "serde_bytes")]
    signature: &'a [u8],
}

/// Wraps `body` in an envelope signed by [`key`] under `domain` (the envelope's signed message is
/// `domain || 0 || body`).
pub fn seal(domain: &[u8], body: &[u8]) -> Vec<u8> {
    let key = key();
    let mut message = domain.to_vec();
    message.push(0);
    message.extend_from_slice(body);
    let signature = key.sign(&message);
    let wire = Wire {
        body,
        publisher: &key.public().to_bytes(),
        signature: &signature,
    };
    cbor4ii::serde::to_vec(Vec::new(), &wire).expect("byte strings always encode")
}

/// Reads fields off the fuzzer's input; an exhausted input reads as zeros.
pub struct Input<'a>(pub &'a [u8]);

impl<'a> Input<'a> {
    pub fn u8(&mut self) -> u8 {
        let (first, rest) = self.0.split_first().unwrap_or((&0, &[]));
        self.0 = rest;
        *first
    }

    pub fn u64(&mut self) -> u64 {
        let mut n = [0u8; 8];
        for b in &mut n {
            *b = self.u8();
        }
        u64::from_be_bytes(n)
    }

    /// A date a stamp can carry (2000 to 2098).
    pub fn date(&mut self) -> u64 {
        DATE_START + self.u64() % DATE_SPAN
    }

    /// Up to `max` bytes, the length given by the next two bytes.
    pub fn bytes(&mut self, max: usize) -> &'a [u8] {
        let len = (usize::from(self.u8()) << 8 | usize::from(self.u8())) % (max + 1);
        let len = len.min(self.0.len());
        let (taken, rest) = self.0.split_at(len);
        self.0 = rest;
        taken
    }

    /// What is left.
    pub fn rest(self) -> &'a [u8] {
        self.0
    }
}

/// A request-response CBOR codec with the size limits a protocol module sets.
pub fn cbor_codec<Req, Resp>(
    max_request: usize,
    max_response: usize,
) -> libp2p::request_response::cbor::codec::Codec<Req, Resp> {
    libp2p::request_response::cbor::codec::Codec::default()
        .set_request_size_maximum(max_request as u64)
        .set_response_size_maximum(max_response as u64)
}

/// Checks that a decoded message re-encodes to itself.
pub fn round_trip<T>(msg: &T)
where
    T: Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let bytes = cbor4ii::serde::to_vec(Vec::new(), msg).expect("a decoded message re-encodes");
    let back: T = cbor4ii::serde::from_slice(&bytes).expect("its encoding decodes");
    assert_eq!(&back, msg);
}
