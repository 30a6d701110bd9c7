//! Fuzzes the lockstep wire protocol as a node reads it: the request-response CBOR codec with the
//! protocol's size limits, then `answer` for a request (against a notice book holding one notice)
//! and `notices_from` for a response.
//!
//! The first byte picks a request (even) or a response (odd); the rest is the stream's content.
//! Nothing may panic; whatever decodes re-encodes to the same message.

#![no_main]

mod common;

use std::sync::OnceLock;

use futures::executor::block_on;
use futures::io::Cursor;
use libfuzzer_sys::fuzz_target;
use libp2p::request_response::Codec as _;
use shoal_dht::lockstep::protocol::{
    self, MAX_NOTICES_PER_RESPONSE, MAX_REQUEST_LEN, MAX_RESPONSE_LEN, Request, Response,
};
use shoal_dht::lockstep::{NoticeBook, NoticeBookConfig, SignedNotice};
use shoal_pow::{StampChecker, StampPolicy};

const NOW: u64 = 1_795_435_200;

/// A notice for key `k`, kept in every fresh book.
fn notice() -> &'static SignedNotice {
    static NOTICE: OnceLock<SignedNotice> = OnceLock::new();
    NOTICE.get_or_init(|| {
        SignedNotice::create(common::key(), b"k", b"v", 1, NOW, &StampPolicy::testnet())
            .expect("the testnet policy mints")
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut codec = common::cbor_codec::<Request, Response>(MAX_REQUEST_LEN, MAX_RESPONSE_LEN);
    let mut io = Cursor::new(rest);
    if mode % 2 == 0 {
        let Ok(request) = block_on(codec.read_request(&protocol::PROTOCOL, &mut io)) else {
            return;
        };
        common::round_trip(&request);
        let mut book = NoticeBook::new(NoticeBookConfig::default());
        book.insert(notice().clone())
            .expect("an empty book keeps it");
        let mut stamps = StampChecker::new(StampPolicy::testnet()).expect("valid policy");
        let answer = protocol::answer(&mut book, &mut stamps, NOW, request.clone());
        match (&request, &answer.response) {
            (Request::Announce(_), Response::Accepted) => {
                let accepted = answer.accepted.expect("an accepted notice is returned");
                assert_eq!(
                    book.get(&accepted.notice().key, &accepted.notice().publisher),
                    Some(&accepted)
                );
            }
            (Request::Announce(_), Response::Refused(_)) => assert!(answer.accepted.is_none()),
            (Request::Notices(key), Response::Notices(list)) => {
                assert!(list.len() <= MAX_NOTICES_PER_RESPONSE);
                let kept = protocol::notices_from(key, answer.response.clone()).expect("a list");
                assert_eq!(kept.len(), list.len());
            }
            (request, response) => panic!("{request:?} answered with {response:?}"),
        }
    } else {
        let Ok(response) = block_on(codec.read_response(&protocol::PROTOCOL, &mut io)) else {
            return;
        };
        common::round_trip(&response);
        let is_list = matches!(response, Response::Notices(_));
        let key = notice().notice().key.clone();
        match protocol::notices_from(&key, response) {
            Ok(list) => {
                assert!(is_list && list.len() <= MAX_NOTICES_PER_RESPONSE);
                assert!(list.iter().all(|n| n.notice().key == key));
            }
            Err(_) => assert!(!is_list),
        }
    }
});
