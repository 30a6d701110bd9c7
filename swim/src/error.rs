//! Errors, one enum per module.

use thiserror::Error;

/// A [`Config`](crate::Config) field is outside its documented limits.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ConfigError {
    /// The field is out of range. Nothing was changed: [`Membership::new`](crate::Membership::new)
    /// refuses the config and builds no core.
    #[error("config field `{field}` out of range: must be {limit}")]
    OutOfRange {
        /// Name of the offending field.
        field: &'static str,
        /// The limit it breaks, in words.
        limit: &'static str,
    },
}

/// A message could not be encoded or decoded (see [`message`](crate::message)).
///
/// Decoding never changes any state: a message that fails to decode must simply be dropped (and
/// may be counted against the peer that sent it).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CodecError {
    /// The input or output is larger than the limit.
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
    /// An address is longer than [`MAX_ADDRESS_LEN`](crate::message::MAX_ADDRESS_LEN).
    #[error("address of {len} bytes exceeds the limit of {max} bytes")]
    AddressTooLong {
        /// Length of the address.
        len: usize,
        /// The limit it exceeds.
        max: usize,
    },
    /// A field combination that the protocol never produces (e.g. a suspect update without its
    /// suspector).
    #[error("invalid message: {0}")]
    Invalid(&'static str),
}

/// Why a [`join`](crate::Membership::join) or [`leave`](crate::Membership::leave) command failed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CommandError {
    /// The join was given no seed other than ourselves. No message was sent; the seeds list is
    /// unchanged.
    #[error("no seed to join through")]
    NoSeeds,
    /// No seed answered within [`Config::join_timeout`](crate::Config::join_timeout). The seeds
    /// stay remembered: reconnection keeps trying them, so the node may still join later.
    #[error("no seed answered within the join timeout")]
    NoSeedAnswered,
    /// The command came after [`leave`](crate::Membership::leave). Nothing changed.
    #[error("the member has left")]
    HasLeft,
}
