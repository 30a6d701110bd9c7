//! Arbitrary bytes given to the stamp parser never panic, and whatever parses is canonical and is
//! checked without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;
use shoal_pow::{MessageClass, Stamp, StampChecker, StampPolicy};

fuzz_target!(|data: &[u8]| {
    if let Ok(stamp) = Stamp::parse(data) {
        assert_eq!(stamp.to_string().as_bytes(), data, "accepted text must be canonical");
        let mut checker = StampChecker::new(StampPolicy::testnet()).expect("valid policy");
        let _ = checker.check(stamp.date, &stamp, MessageClass::Gossip, b"s", b"t", b"p");
    }
});
