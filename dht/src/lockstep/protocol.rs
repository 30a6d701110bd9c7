//! The lockstep wire protocol on `/shoal/lockstep/1`: announce a notice, or ask for the notices
//! kept for a key. CBOR over libp2p request-response with bounded message sizes.

use std::time::Duration;

use libp2p::StreamProtocol;
use libp2p::request_response as rr;
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;
use shoal_pow::StampChecker;

use super::{LockstepError, MAX_NOTICE_LEN, NoticeBook, SignedNotice};

/// The protocol name.
pub const PROTOCOL: StreamProtocol = StreamProtocol::new("/shoal/lockstep/1");

/// Most notices in one [`Response::Notices`].
pub const MAX_NOTICES_PER_RESPONSE: usize = 16;

/// Largest encoded request.
pub const MAX_REQUEST_LEN: usize = MAX_NOTICE_LEN + 64;

/// Largest encoded response.
pub const MAX_RESPONSE_LEN: usize = MAX_NOTICES_PER_RESPONSE * (MAX_NOTICE_LEN + 16) + 64;

/// A lockstep request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Keep this notice envelope.
    Announce(ByteBuf),
    /// Send the notices kept for this key.
    Notices(ByteBuf),
}

/// A lockstep response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// The notice was kept.
    Accepted,
    /// The notice was refused, with the reason.
    Refused(String),
    /// The notices kept for the key asked about, newest first.
    Notices(Vec<ByteBuf>),
}

/// The request-response behaviour carrying the protocol.
pub type Behaviour = rr::cbor::Behaviour<Request, Response>;

/// A lockstep behaviour whose requests time out after `timeout`.
pub fn behaviour(timeout: Duration) -> Behaviour {
    crate::behaviour::cbor_request_response(
        PROTOCOL,
        MAX_REQUEST_LEN,
        MAX_RESPONSE_LEN,
        timeout,
        64,
    )
}

/// What answering a request did.
#[derive(Debug)]
pub struct Answer {
    /// The response to send.
    pub response: Response,
    /// A notice newly kept, for persistence and subscribers.
    pub accepted: Option<SignedNotice>,
    /// Notices dropped from the book to make room, to delete from persistence.
    pub dropped: Vec<SignedNotice>,
}

/// Answers `request` at `now` (Unix seconds) from `book`, validating announcements with `stamps`.
pub fn answer(
    book: &mut NoticeBook,
    stamps: &mut StampChecker,
    now: u64,
    request: Request,
) -> Answer {
    match request {
        Request::Announce(bytes) => match SignedNotice::validate(&bytes, now, stamps)
            .and_then(|notice| Ok((notice.clone(), book.insert(notice)?)))
        {
            Ok((notice, dropped)) => Answer {
                response: Response::Accepted,
                accepted: Some(notice),
                dropped,
            },
            Err(e) => Answer {
                response: Response::Refused(e.to_string()),
                accepted: None,
                dropped: Vec::new(),
            },
        },
        Request::Notices(key) => Answer {
            response: Response::Notices(
                book.for_key(&key)
                    .into_iter()
                    .take(MAX_NOTICES_PER_RESPONSE)
                    .map(|n| ByteBuf::from(n.as_bytes().to_vec()))
                    .collect(),
            ),
            accepted: None,
            dropped: Vec::new(),
        },
    }
}

/// Decodes the notices a peer sent for `key`, dropping those that are badly signed or for another
/// key. Returns an error only if the response is not a notice list.
pub fn notices_from(key: &[u8], response: Response) -> Result<Vec<SignedNotice>, LockstepError> {
    let Response::Notices(list) = response else {
        return Err(LockstepError::Envelope(crate::EnvelopeError::Malformed {
            what: "lockstep response",
            reason: "expected a notice list".into(),
        }));
    };
    Ok(list
        .into_iter()
        .take(MAX_NOTICES_PER_RESPONSE)
        .filter_map(|bytes| SignedNotice::decode(&bytes).ok())
        .filter(|n| n.notice().key == key)
        .collect())
}

#[cfg(test)]
mod tests {
    use shoal_pow::{NodeKey, StampPolicy};

    use super::*;
    use crate::lockstep::NoticeBookConfig;

    const NOW: u64 = 1_795_435_200;

    #[test]
    fn announce_then_ask() {
        let mut book = NoticeBook::new(NoticeBookConfig::default());
        let mut stamps = StampChecker::new(StampPolicy::testnet()).unwrap();
        let key = NodeKey::generate();
        let notice =
            SignedNotice::create(&key, b"k", b"v", 1, NOW, &StampPolicy::testnet()).unwrap();
        let bytes = ByteBuf::from(notice.as_bytes().to_vec());
        let a = answer(
            &mut book,
            &mut stamps,
            NOW,
            Request::Announce(bytes.clone()),
        );
        assert_eq!(a.response, Response::Accepted);
        assert_eq!(a.accepted.as_ref(), Some(&notice));
        // The same envelope again is a replay of its stamp.
        let again = answer(&mut book, &mut stamps, NOW, Request::Announce(bytes));
        assert!(matches!(again.response, Response::Refused(ref r) if r.contains("replayed")));
        let asked = answer(
            &mut book,
            &mut stamps,
            NOW,
            Request::Notices(ByteBuf::from(b"k".to_vec())),
        );
        assert_eq!(notices_from(b"k", asked.response).unwrap(), vec![notice]);
    }

    #[test]
    fn garbage_is_refused_with_a_reason() {
        let mut book = NoticeBook::new(NoticeBookConfig::default());
        let mut stamps = StampChecker::new(StampPolicy::testnet()).unwrap();
        let a = answer(
            &mut book,
            &mut stamps,
            NOW,
            Request::Announce(ByteBuf::from(vec![0xff; 10])),
        );
        assert!(matches!(a.response, Response::Refused(_)));
        assert!(book.is_empty());
        assert!(notices_from(b"k", Response::Accepted).is_err());
    }

    #[test]
    fn notices_for_another_key_are_dropped() {
        let key = NodeKey::generate();
        let other =
            SignedNotice::create(&key, b"x", b"v", 1, NOW, &StampPolicy::testnet()).unwrap();
        let response = Response::Notices(vec![
            ByteBuf::from(other.as_bytes().to_vec()),
            ByteBuf::from(vec![1, 2, 3]),
        ]);
        assert!(notices_from(b"k", response).unwrap().is_empty());
    }

    #[test]
    fn messages_round_trip_through_cbor() {
        for msg in [
            Request::Announce(ByteBuf::from(vec![1, 2])),
            Request::Notices(ByteBuf::from(b"key".to_vec())),
        ] {
            let bytes = cbor4ii::serde::to_vec(Vec::new(), &msg).unwrap();
            assert!(bytes.len() <= MAX_REQUEST_LEN);
            let back: Request = cbor4ii::serde::from_slice(&bytes).unwrap();
            assert_eq!(back, msg);
        }
    }
}
