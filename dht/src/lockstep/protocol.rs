//! Lockstep on the wire: announcements and notice reads travel on the DHT's protocol
//! ([`crate::wire`], `/shoal/<network>/dht/4.0.0`) as
//! [`Request::Announce`](crate::wire::Request::Announce) and
//! [`Request::Notices`](crate::wire::Request::Notices); a peer answers with
//! [`Response::Accepted`], [`Response::Refused`] or [`Response::Notices`].

pub use crate::wire::Response;

/// Most notices in one [`Response::Notices`].
pub const MAX_NOTICES_PER_RESPONSE: usize = crate::wire::MAX_NOTICES;
