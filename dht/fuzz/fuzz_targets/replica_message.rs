//! Fuzzes the replica wire protocol as a node reads it: the request-response CBOR codec with the
//! protocol's size limits, then, for a request, the record validation a replica runs before it
//! keeps anything.
//!
//! The first byte picks a request (even) or a response (odd); the rest is the stream's content.
//! Nothing may panic; whatever decodes re-encodes to the same message, and a refusal a node
//! builds stays within the protocol's bound.

#![no_main]

mod common;

use std::sync::OnceLock;

use futures::executor::block_on;
use futures::io::Cursor;
use libfuzzer_sys::fuzz_target;
use libp2p::request_response::Codec as _;
use shoal_dht::record::{RecordRules, SignedRecord};
use shoal_dht::replica::{
    self, MAX_REASON_LEN, MAX_REQUEST_LEN, MAX_RESPONSE_LEN, Request, Response,
};
use shoal_pow::{StampChecker, StampPolicy};

const NOW: u64 = 1_795_435_200;

fn stamps() -> &'static StampChecker {
    static CHECKER: OnceLock<StampChecker> = OnceLock::new();
    CHECKER.get_or_init(|| StampChecker::new(StampPolicy::testnet()).expect("valid policy"))
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut codec = common::cbor_codec::<Request, Response>(MAX_REQUEST_LEN, MAX_RESPONSE_LEN);
    let mut io = Cursor::new(rest);
    if mode % 2 == 0 {
        let Ok(request) = block_on(codec.read_request(&replica::PROTOCOL, &mut io)) else {
            return;
        };
        common::round_trip(&request);
        // What a replica does with it: validate (decode first, to keep signature checks, the
        // cost of a run, for envelopes that decode), and refuse with a bounded reason.
        if SignedRecord::decode(&request.0).is_ok()
            && let Err(e) =
                SignedRecord::validate(&request.0, None, NOW, &RecordRules::default(), stamps())
        {
            let Response::Refused(reason) = Response::refused(e.to_string()) else {
                panic!("a refusal is a refusal");
            };
            assert!(reason.len() <= MAX_REASON_LEN);
        }
    } else {
        let Ok(response) = block_on(codec.read_response(&replica::PROTOCOL, &mut io)) else {
            return;
        };
        common::round_trip(&response);
    }
});
