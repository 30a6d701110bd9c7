//! Replica puts on `/shoal/replica/1`: how a put reaches its quorum.
//!
//! kad acknowledges a `PUT_VALUE` before the receiving node has looked at the record, so a
//! quorum of kad acknowledgements says nothing about copies that exist. A publisher instead sends
//! its signed envelope to each of the `k` closest nodes on this protocol, and a replica answers
//! [`Response::Stored`] only once the record passed every check (envelope, signature, stamp,
//! lockstep) and is kept, written to redb first when the node has a data directory. A put's
//! quorum counts those answers.
//!
//! Messages are CBOR over libp2p request-response, bounded in size.

use std::time::Duration;

use libp2p::StreamProtocol;
use libp2p::request_response as rr;
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;

use crate::record::MAX_RECORD_LEN;

/// The protocol name.
pub const PROTOCOL: StreamProtocol = StreamProtocol::new("/shoal/replica/1");

/// Longest refusal reason sent; longer ones are cut.
pub const MAX_REASON_LEN: usize = 256;

/// Largest encoded request: one record envelope and its framing.
pub const MAX_REQUEST_LEN: usize = MAX_RECORD_LEN + 64;

/// Largest encoded response.
pub const MAX_RESPONSE_LEN: usize = MAX_REASON_LEN + 64;

/// Keep this signed record envelope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request(pub ByteBuf);

/// A replica's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// The record passed every check and is kept (durably, when the node persists).
    Stored,
    /// The record was not kept, with the reason.
    Refused(String),
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
}

/// The request-response behaviour carrying the protocol.
pub type Behaviour = rr::cbor::Behaviour<Request, Response>;

/// A replica behaviour whose requests time out after `timeout`.
pub fn behaviour(timeout: Duration) -> Behaviour {
    crate::behaviour::cbor_request_response(
        PROTOCOL,
        MAX_REQUEST_LEN,
        MAX_RESPONSE_LEN,
        timeout,
        64,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let request = Request(ByteBuf::from(vec![0xff; MAX_RECORD_LEN]));
        let bytes = cbor4ii::serde::to_vec(Vec::new(), &request).unwrap();
        assert!(bytes.len() <= MAX_REQUEST_LEN, "{}", bytes.len());
        let response = Response::refused("x".repeat(2 * MAX_REASON_LEN));
        let bytes = cbor4ii::serde::to_vec(Vec::new(), &response).unwrap();
        assert!(bytes.len() <= MAX_RESPONSE_LEN, "{}", bytes.len());
    }
}
