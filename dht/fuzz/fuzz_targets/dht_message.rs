//! Fuzzes the DHT's wire protocol (`/shoal/<network>/dht/1.0.0`, [`shoal_dht::wire`]) as a node
//! reads it: the request-response CBOR codec with the protocol's size limits, then the bounds a
//! node checks on what decoded.
//!
//! The first byte picks a request (even) or a response (odd); the rest is the stream's content.
//! Nothing may panic; whatever decodes re-encodes to the same message, and the codec the
//! simulator uses ([`wire::decode`]) agrees with libp2p's.

#![no_main]

mod common;

use futures::executor::block_on;
use futures::io::Cursor;
use libfuzzer_sys::fuzz_target;
use libp2p::StreamProtocol;
use libp2p::request_response::Codec as _;
use shoal_dht::wire::{self, MAX_REQUEST_LEN, MAX_RESPONSE_LEN, Request, Response};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let protocol = StreamProtocol::new("/shoal/fuzz/dht/1.0.0");
    let mut codec = common::cbor_codec::<Request, Response>(MAX_REQUEST_LEN, MAX_RESPONSE_LEN);
    let mut io = Cursor::new(rest);
    if mode % 2 == 0 {
        let Ok(request) = block_on(codec.read_request(&protocol, &mut io)) else {
            return;
        };
        common::round_trip(&request);
        let _ = request.is_bounded();
        let same: Request = wire::decode(rest, MAX_REQUEST_LEN).expect("both codecs agree");
        assert_eq!(same, request);
    } else {
        let Ok(response) = block_on(codec.read_response(&protocol, &mut io)) else {
            return;
        };
        common::round_trip(&response);
        let same: Response = wire::decode(rest, MAX_RESPONSE_LEN).expect("both codecs agree");
        assert_eq!(same, response);
        if let Response::Notices(list) = &response {
            let notices = shoal_dht::lockstep::decode_notices(b"k", list);
            assert!(notices.len() <= wire::MAX_NOTICES);
        }
    }
});
