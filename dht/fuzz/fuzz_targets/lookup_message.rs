//! Fuzzes the lookup wire protocol (`/shoal/find/1`) as a node reads it: the request-response
//! CBOR codec with the protocol's size limits, then what the node does with a message: a
//! request's target is hashed, a response's peers are read and fed to a lookup.
//!
//! The first byte picks a request (even) or a response (odd); the rest is the stream's content.
//! Nothing may panic; whatever decodes re-encodes to the same message; a response yields at
//! most `MAX_PEERS` peers, and the lookup it feeds stays within its bounds.

#![no_main]

mod common;

use std::num::NonZeroUsize;

use futures::executor::block_on;
use futures::io::Cursor;
use libfuzzer_sys::fuzz_target;
use libp2p::PeerId;
use libp2p::request_response::Codec as _;
use shoal_dht::lookup::{
    self, ClosestPeers, KeyHash, MAX_PEERS, MAX_REQUEST_LEN, MAX_RESPONSE_LEN, Request, Response,
};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut codec = common::cbor_codec::<Request, Response>(MAX_REQUEST_LEN, MAX_RESPONSE_LEN);
    let mut io = Cursor::new(rest);
    if mode % 2 == 0 {
        let Ok(request) = block_on(codec.read_request(&lookup::PROTOCOL, &mut io)) else {
            return;
        };
        common::round_trip(&request);
        let _ = KeyHash::of(&request.target);
    } else {
        let Ok(response) = block_on(codec.read_response(&lookup::PROTOCOL, &mut io)) else {
            return;
        };
        common::round_trip(&response);
        let peers = lookup::peers_from(response);
        assert!(peers.len() <= MAX_PEERS);
        let asked = PeerId::random();
        let k = NonZeroUsize::new(4).expect("non-zero");
        let mut l = ClosestPeers::new(KeyHash::of(b"fuzz"), PeerId::random(), k, k, [asked]);
        assert_eq!(l.next_peer(), Some(asked));
        l.on_answer(&asked, peers);
        assert!(l.peers().len() <= k.get());
        while l.next_peer().is_some() {}
        assert!(l.counts().requests <= 1 + k.get() as u32);
    }
});
