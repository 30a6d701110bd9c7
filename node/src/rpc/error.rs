//! The JSON-RPC error codes Shoal returns, besides JSON-RPC's own (`-32700` parse error,
//! `-32600` invalid request, `-32601` method not found, `-32602` invalid params) and the
//! transport's (`-32007` request too big, `-32009` server busy, `-32010` batch too big). Shoal's
//! own codes are `-32040` to `-32048`.
//!
//! Every error carries a `data` object with the details a caller needs to act on it.

use jsonrpsee::types::ErrorObjectOwned;
use serde_json::{Value, json};
use shoal_dht::lockstep::LockstepError;
use shoal_dht::node::{AnnounceError, FindNodeError, GetError, PutError};
use shoal_dht::record::RecordError;

/// A Shoal error code. The numbers are part of the API and never change meaning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Code {
    /// `-32602`: a parameter is missing, of the wrong type, or badly encoded.
    InvalidParams,
    /// `-32040`: no valid record was found for the key.
    NotFound,
    /// `-32041`: the put was stored locally but fewer replicas than the quorum kept it in time
    /// (data: `acked`, `quorum`, `refused`, the first refusal's `reason`); retrying with the same
    /// `seq` is safe.
    QuorumFailed,
    /// `-32042`: a proof of work was refused: a record's or notice's hashcash stamp, or an
    /// identity proof.
    ProofInvalid,
    /// `-32043`: the value does not match what its publisher announced through lockstep for that
    /// sequence number, or the sequence is older than the announced one.
    LockstepMismatch,
    /// `-32044`: the network did not answer in time.
    Timeout,
    /// `-32045`: a key or value is over its size limit.
    TooLarge,
    /// `-32046`: the request is valid but the node refused it (stale sequence, full store, no
    /// peer to send to).
    Refused,
    /// `-32047`: the node is shutting down.
    Unavailable,
    /// `-32048`: this connection sent more requests than its rate limit allows; retry later.
    RateLimited,
}

impl Code {
    /// Every code, for documentation.
    pub const ALL: [Code; 10] = [
        Code::InvalidParams,
        Code::NotFound,
        Code::QuorumFailed,
        Code::ProofInvalid,
        Code::LockstepMismatch,
        Code::Timeout,
        Code::TooLarge,
        Code::Refused,
        Code::Unavailable,
        Code::RateLimited,
    ];

    /// The JSON-RPC error code.
    pub fn number(self) -> i32 {
        match self {
            Code::InvalidParams => -32602,
            Code::NotFound => -32040,
            Code::QuorumFailed => -32041,
            Code::ProofInvalid => -32042,
            Code::LockstepMismatch => -32043,
            Code::Timeout => -32044,
            Code::TooLarge => -32045,
            Code::Refused => -32046,
            Code::Unavailable => -32047,
            Code::RateLimited => -32048,
        }
    }

    /// The short name used in documentation and in the OpenRPC document.
    pub fn name(self) -> &'static str {
        match self {
            Code::InvalidParams => "invalid params",
            Code::NotFound => "not found",
            Code::QuorumFailed => "quorum failed",
            Code::ProofInvalid => "proof invalid",
            Code::LockstepMismatch => "lockstep mismatch",
            Code::Timeout => "timeout",
            Code::TooLarge => "too large",
            Code::Refused => "refused",
            Code::Unavailable => "unavailable",
            Code::RateLimited => "rate limited",
        }
    }
}

/// An error to return to a JSON-RPC caller.
#[derive(Debug, Clone, PartialEq)]
pub struct RpcError {
    /// The code.
    pub code: Code,
    /// A human-readable message.
    pub message: String,
    /// Details (at least `{"error": <code name>}`).
    pub data: Value,
}

impl RpcError {
    /// An error with `data` `{"error": <code name>}` plus the fields of `extra` (an object).
    pub fn new(code: Code, message: impl Into<String>, extra: Value) -> Self {
        let mut data = json!({ "error": code.name() });
        if let (Some(d), Value::Object(extra)) = (data.as_object_mut(), extra) {
            d.extend(extra);
        }
        Self {
            code,
            message: message.into(),
            data,
        }
    }

    /// An invalid-params error naming the parameter.
    pub fn invalid_param(param: &str, why: impl std::fmt::Display) -> Self {
        Self::new(
            Code::InvalidParams,
            format!("invalid parameter {param:?}: {why}"),
            json!({ "param": param }),
        )
    }

    /// The node stopped.
    pub fn unavailable() -> Self {
        Self::new(Code::Unavailable, "the node is shutting down", json!({}))
    }
}

impl From<RpcError> for ErrorObjectOwned {
    fn from(e: RpcError) -> Self {
        ErrorObjectOwned::owned(e.code.number(), e.message, Some(e.data))
    }
}

impl From<RecordError> for RpcError {
    fn from(e: RecordError) -> Self {
        let message = e.to_string();
        match e {
            RecordError::TooLarge { what, len, max } => Self::new(
                Code::TooLarge,
                message,
                json!({ "param": what, "len": len, "max": max }),
            ),
            RecordError::Stamp(_) | RecordError::StampMalformed(_) => {
                Self::new(Code::ProofInvalid, message, json!({}))
            }
            RecordError::BadTtl { ttl, max } => Self::new(
                Code::InvalidParams,
                message,
                json!({ "param": "ttl", "ttl": ttl, "max": max }),
            ),
            _ => Self::new(Code::Refused, message, json!({})),
        }
    }
}

impl From<LockstepError> for RpcError {
    fn from(e: LockstepError) -> Self {
        let message = e.to_string();
        match e {
            LockstepError::KeyTooLarge(len) => Self::new(
                Code::TooLarge,
                message,
                json!({ "param": "key", "len": len, "max": shoal_dht::record::MAX_KEY_LEN }),
            ),
            LockstepError::Stamp(_) | LockstepError::StampMalformed(_) => {
                Self::new(Code::ProofInvalid, message, json!({}))
            }
            LockstepError::Mismatch { seq } => Self::new(
                Code::LockstepMismatch,
                message,
                json!({ "announced_seq": seq }),
            ),
            LockstepError::Superseded { announced, got } => Self::new(
                Code::LockstepMismatch,
                message,
                json!({ "announced_seq": announced, "seq": got }),
            ),
            LockstepError::Stale { kept, got } => Self::new(
                Code::Refused,
                message,
                json!({ "kept_seq": kept, "seq": got }),
            ),
            LockstepError::Envelope(_) | LockstepError::FeedMismatch => {
                Self::new(Code::Refused, message, json!({}))
            }
        }
    }
}

impl From<PutError> for RpcError {
    fn from(e: PutError) -> Self {
        let message = e.to_string();
        match e {
            PutError::Record(e) => e.into(),
            PutError::Lockstep(e) => e.into(),
            PutError::Store(e) => {
                Self::new(Code::Refused, message, json!({ "reason": e.to_string() }))
            }
            PutError::Quorum {
                seq,
                acked,
                quorum,
                refused,
                reason,
                ..
            } => Self::new(
                Code::QuorumFailed,
                message,
                json!({
                    "seq": seq,
                    "acked": acked,
                    "quorum": quorum,
                    "refused": refused,
                    "reason": reason,
                }),
            ),
            PutError::Stopped => Self::unavailable(),
        }
    }
}

impl From<GetError> for RpcError {
    fn from(e: GetError) -> Self {
        let message = e.to_string();
        match e {
            GetError::NotFound { invalid, .. } => Self::new(
                Code::NotFound,
                message,
                json!({ "invalid_copies": invalid }),
            ),
            GetError::Stopped => Self::unavailable(),
        }
    }
}

impl From<FindNodeError> for RpcError {
    fn from(e: FindNodeError) -> Self {
        let message = e.to_string();
        match e {
            FindNodeError::Timeout { found } => {
                let found: Vec<String> = found.iter().map(ToString::to_string).collect();
                Self::new(Code::Timeout, message, json!({ "found": found }))
            }
            FindNodeError::Stopped => Self::unavailable(),
        }
    }
}

impl From<AnnounceError> for RpcError {
    fn from(e: AnnounceError) -> Self {
        let message = e.to_string();
        match e {
            AnnounceError::Notice(e) => e.into(),
            AnnounceError::NoPeers => Self::new(Code::Refused, message, json!({})),
            AnnounceError::NoneAccepted { tried } => {
                Self::new(Code::Refused, message, json!({ "tried": tried }))
            }
            AnnounceError::Storage(reason) => {
                Self::new(Code::Refused, message, json!({ "reason": reason }))
            }
            AnnounceError::Stopped => Self::unavailable(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_distinct() {
        let mut numbers: Vec<i32> = Code::ALL.iter().map(|c| c.number()).collect();
        numbers.sort_unstable();
        numbers.dedup();
        assert_eq!(numbers.len(), Code::ALL.len());
    }

    #[test]
    fn data_names_the_error_and_keeps_details() {
        let e: ErrorObjectOwned = RpcError::from(PutError::Quorum {
            key: b"k".to_vec(),
            seq: 7,
            acked: 1,
            quorum: 3,
            refused: 1,
            reason: Some("stale sequence".into()),
        })
        .into();
        assert_eq!(e.code(), -32041);
        let data: Value =
            serde_json::from_str(e.data().expect("data is set").get()).expect("data is JSON");
        assert_eq!(data["error"], "quorum failed");
        assert_eq!(data["acked"], 1);
        assert_eq!(data["quorum"], 3);
        assert_eq!(data["refused"], 1);
        assert_eq!(data["reason"], "stale sequence");
    }
}
