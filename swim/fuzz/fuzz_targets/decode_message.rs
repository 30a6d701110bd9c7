//! Fuzzes the SWIM message decoder, then feeds whatever decodes to a core: malformed or
//! oversized input must be refused with an error, never a panic, and any decoded message must
//! re-encode to the same message and be handled without a panic.

#![no_main]

use std::sync::Arc;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use shoal_swim::message::{self, MAX_MESSAGE_BYTES};
use shoal_swim::{Address, Config, Membership};

fuzz_target!(|data: &[u8]| {
    let Ok(msg) = message::decode::<u32>(data, MAX_MESSAGE_BYTES) else {
        return;
    };
    let bytes = message::to_vec(&msg, MAX_MESSAGE_BYTES).expect("a decoded message re-encodes");
    let again = message::decode::<u32>(&bytes, MAX_MESSAGE_BYTES).expect("re-encoding decodes");
    assert_eq!(again, msg);

    let now = Instant::now();
    let config = Config {
        rng_seed: Some([1; 32]),
        ..Config::lan()
    };
    let mut core = Membership::new(now, 0u32, vec![Address::from("a")], 5, config)
        .expect("valid config");
    core.restore((1..4u32).map(|i| (i, Arc::from(vec![Address::from("b")]))));
    core.handle_message(now, 1, msg);
    core.handle_timeout(now + Duration::from_secs(2));
    assert!(core.member(&0).is_none());
    assert!(core.incarnation() >= 5);
    while core.poll_transmit().is_some() {}
    while core.poll_event().is_some() {}
});
