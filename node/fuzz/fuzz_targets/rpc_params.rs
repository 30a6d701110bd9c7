//! Fuzzes the JSON-RPC params decoding of every method through `check_params`: the first byte
//! picks the method (or an unknown one), the rest is the params text (even bytes: valid UTF-8 only,
//! odd: lossy UTF-8; an empty rest stands for absent params). Nothing may panic, and every refusal
//! is an invalid-params error.

#![no_main]

use libfuzzer_sys::fuzz_target;
use shoal_node::rpc::api::check_params;
use shoal_node::rpc::error::Code;

/// Every method whose params Shoal decodes, then one it does not know.
const METHODS: [&str; 19] = [
    "dht_put",
    "dht_records",
    "dht_routingTable",
    "swim_subscribe",
    "node_stats",
    "node_subscribeStats",
    "dht_get",
    "dht_verifyReceipt",
    "dht_findNode",
    "lockstep_announce",
    "lockstep_get",
    "lockstep_subscribe",
    "swim_members",
    "node_peers",
    "trust_peers",
    "node_info",
    "rpc.discover",
    "dht_nope",
];

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let method = METHODS[usize::from(pick >> 1) % METHODS.len()];
    let lossy;
    let text = if pick % 2 == 0 {
        let Ok(text) = std::str::from_utf8(rest) else {
            return;
        };
        text
    } else {
        lossy = String::from_utf8_lossy(rest);
        &lossy
    };
    let params = (!text.is_empty()).then_some(text);
    let result = check_params(method, params);
    if let Err(e) = &result {
        assert_eq!(e.code, Code::InvalidParams, "{method} {params:?}: {e:?}");
    }
    if method == "dht_nope" {
        assert!(result.is_err());
    }
});
