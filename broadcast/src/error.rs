//! Errors, one enum per concern.

use thiserror::Error;

/// A [`Config`](crate::Config) field is outside its documented limits.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ConfigError {
    /// The field is out of range. Nothing was built: [`Broadcast::new`](crate::Broadcast::new)
    /// refuses the config.
    #[error("config field `{field}` out of range: must be {limit}")]
    OutOfRange {
        /// Name of the offending field.
        field: &'static str,
        /// The limit it breaks, in words.
        limit: &'static str,
    },
}

/// A message could not be decoded (see [`message`](crate::message)).
///
/// Decoding changes no state: a message that fails to decode must simply be dropped (and may be
/// counted against the peer that sent it).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CodecError {
    /// The input is longer than the limit.
    #[error("message of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// Size of the message.
        len: usize,
        /// The limit it exceeds.
        max: usize,
    },
    /// The bytes are not a CBOR encoding of a [`Message`](crate::Message).
    #[error("malformed message: {0}")]
    Malformed(String),
    /// Bytes follow the message.
    #[error("{0} trailing bytes after the message")]
    TrailingBytes(usize),
    /// A list in the message is longer than its limit.
    #[error("{what}: {len} entries exceed the limit of {max}")]
    TooMany {
        /// Which list.
        what: &'static str,
        /// Its length.
        len: usize,
        /// The limit it exceeds.
        max: usize,
    },
    /// A byte string in the message is longer than its limit.
    #[error("{what}: {len} bytes exceed the limit of {max}")]
    TooLong {
        /// Which field.
        what: &'static str,
        /// Its length.
        len: usize,
        /// The limit it exceeds.
        max: usize,
    },
    /// A value the protocol never produces (a sequence number 0, an empty publisher, a Bloom
    /// filter without hash functions).
    #[error("invalid message: {0}")]
    Invalid(&'static str),
}

/// Why [`Broadcast::publish`](crate::Broadcast::publish) refused a notice. Nothing changed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PublishError {
    /// The notice breaks a size bound or uses sequence number 0.
    #[error("notice refused: {0}")]
    Refused(Rejection),
    /// A notice with the same publisher and sequence number is already stored.
    #[error("a notice with this publisher and sequence number is already stored")]
    Duplicate,
}

/// Why a notice was dropped before it was stored, delivered or relayed. Carried by
/// [`Event::Invalid`](crate::Event::Invalid) (so that the embedder can penalize the sender) and
/// counted per kind in [`Stats::rejected`](crate::Stats::rejected).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Rejection {
    /// The body or the publisher is longer than the configured bound.
    #[error("{what} of {len} bytes exceeds the limit of {max} bytes")]
    Oversized {
        /// `"body"` or `"publisher"`.
        what: &'static str,
        /// Its length.
        len: usize,
        /// The bound.
        max: usize,
    },
    /// A field the protocol never produces: sequence number 0 or an empty publisher.
    #[error("malformed notice: {0}")]
    Malformed(&'static str),
    /// The embedder's [`Verify`](crate::Verify) refused it, for the reason it gave.
    #[error("verification failed: {0}")]
    Invalid(String),
}
