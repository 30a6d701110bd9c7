//! Arbitrary bytes given to the identity proof decoder never panic, and what decodes re-encodes
//! to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shoal_pow::IdentityProof;

fuzz_target!(|data: &[u8]| {
    if let Ok(proof) = IdentityProof::from_bytes(data) {
        assert_eq!(&proof.to_bytes()[..], data);
    }
});
