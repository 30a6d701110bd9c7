//! Fuzzes the identity gate's wire decoding as a node reads it: the `/shoal/identity/1` codec
//! (exactly one 40-byte proof each way), then the proof decoder.
//!
//! The first byte picks a request (even) or a response (odd); the rest is the stream's content.
//! Nothing may panic; a proof that decodes re-encodes to the bytes read.

#![no_main]

use futures::executor::block_on;
use futures::io::Cursor;
use libfuzzer_sys::fuzz_target;
use libp2p::request_response::Codec as _;
use shoal_dht::gate::{PROTOCOL, ProofCodec};
use shoal_pow::{IdentityProof, PROOF_LEN};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let mut io = Cursor::new(rest);
    let read = if mode % 2 == 0 {
        block_on(ProofCodec.read_request(&PROTOCOL, &mut io))
    } else {
        block_on(ProofCodec.read_response(&PROTOCOL, &mut io))
    };
    let Ok(bytes) = read else {
        assert!(rest.len() < PROOF_LEN, "a full proof must be read");
        return;
    };
    assert_eq!(bytes.len(), PROOF_LEN);
    assert_eq!(bytes, rest[..PROOF_LEN]);
    if let Ok(proof) = IdentityProof::from_bytes(&bytes) {
        assert_eq!(&proof.to_bytes()[..], &bytes[..]);
    }
});
