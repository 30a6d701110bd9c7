//! Fuzzes the broadcast message decoder, then feeds whatever decodes to a core, once from an
//! active neighbor and once from a stranger: malformed or oversized input must be refused with
//! an error, never a panic; a decoded message must re-encode to the same message; the core must
//! handle it without a panic and keep every table within its bound.

#![no_main]

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use shoal_broadcast::message::{self, Message};
use shoal_broadcast::{AcceptAll, Broadcast, Config};

fuzz_target!(|data: &[u8]| {
    let config = Config {
        rng_seed: Some([1; 32]),
        ..Config::lan()
    };
    let Ok(msg) = message::decode(data, &config.limits()) else {
        return;
    };
    let bytes = message::encode(&msg);
    let again = message::decode(&bytes, &config.limits()).expect("re-encoding decodes");
    assert_eq!(again, msg);

    let now = Instant::now();
    let mut core = Broadcast::new(now, 0u32, config, AcceptAll).expect("valid config");
    for member in 1..6u32 {
        core.add_member(now, member);
    }
    // Member 1 accepts our neighbor request, so the message also comes from an active neighbor.
    core.handle_message(now, 1, Message::NeighborReply { accepted: true });
    for from in [1u32, 9] {
        core.handle_message(now, from, msg.clone());
        assert!(core.within_bounds(), "{:?}", core.queue_lengths());
    }
    core.handle_timeout(now + Duration::from_secs(10));
    assert!(core.within_bounds(), "{:?}", core.queue_lengths());
    while core.poll_transmit().is_some() {}
    while core.poll_event().is_some() {}
});
