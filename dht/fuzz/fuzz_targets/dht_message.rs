//! Fuzzes the DHT's wire protocol (`/shoal/<network>/dht/4.0.0`, [`shoal_dht::wire`]) as a node
//! reads a stream of it: frames cut by [`shoal_dht::link::FrameCodec`] with the protocol's
//! bounds, each message decoded by [`wire::decode`], then the bounds a node checks on it, and
//! the storage receipts answers carry ([`shoal_dht::receipt::Receipt::decode`]).
//!
//! The first byte picks a stream of requests (even) or of responses (odd); the rest is the
//! stream's content. Nothing may panic; a frame is never longer than its bound; whatever
//! decodes re-encodes to the same message.

#![no_main]

mod common;

use asynchronous_codec::{BytesMut, Decoder};
use libfuzzer_sys::fuzz_target;
use shoal_dht::link::FrameCodec;
use shoal_dht::receipt::Receipt;
use shoal_dht::wire::{self, MAX_REQUEST_LEN, MAX_RESPONSE_LEN, Request, Response};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let requests = mode % 2 == 0;
    let max = if requests { MAX_REQUEST_LEN } else { MAX_RESPONSE_LEN };
    let mut codec = FrameCodec::new(max);
    let mut buf = BytesMut::from(rest);
    while let Ok(Some((_, body))) = codec.decode(&mut buf) {
        assert!(body.len() <= max);
        if requests {
            if let Ok(request) = wire::decode::<Request>(&body, max) {
                common::round_trip(&request);
                let _ = request.is_bounded();
            }
        } else if let Ok(response) = wire::decode::<Response>(&body, max) {
            common::round_trip(&response);
            if let Response::Notices(list) = &response {
                let notices = shoal_dht::lockstep::decode_notices(b"k", list);
                assert!(notices.len() <= wire::MAX_NOTICES);
            }
            let receipt = match &response {
                Response::Kept(bytes) => Some(bytes),
                Response::Record { receipt, .. } => receipt.as_ref(),
                _ => None,
            };
            if let Some(Ok(receipt)) = receipt.map(|b| Receipt::decode(b)) {
                assert!(receipt.key().len() <= shoal_dht::record::MAX_KEY_LEN);
                assert_eq!(Receipt::decode(receipt.as_bytes()), Ok(receipt.clone()));
            }
        }
    }
});
