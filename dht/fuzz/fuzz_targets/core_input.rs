//! Fuzzes the DHT core ([`shoal_dht::core`]) with what peers send it: requests from an admitted
//! peer and from a stranger, and answers to the requests it sent (a lookup, a get, a replica put,
//! an announcement, a proof relay), each decoded with the wire codec from the input, and broadcast
//! messages from an admitted peer and from a stranger.
//!
//! Each step takes one byte (what to feed) and a length-prefixed message. Nothing may panic, the
//! core's state stays within its bounds, every request it was handed is answered exactly once,
//! and it never answers one it was not handed.

#![no_main]

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use shoal_dht::Config;
use shoal_dht::core::{Action, Command, Core, InboundId, Known, RequestId, Restored};
use shoal_dht::node::PutRequest;
use shoal_dht::sim::{SimChecks, SimPeer, proof_of};
use shoal_dht::wire::{self, MAX_REQUEST_LEN, MAX_RESPONSE_LEN, Request, Response};
use shoal_pow::NodeKey;

const UNIX: u64 = 1_795_435_200;
const SECRET: u64 = 11;

fuzz_target!(|data: &[u8]| {
    let mut input = common::Input(data);
    let mut now = Instant::now();
    let config = Config {
        rng_seed: Some([1; 32]),
        ..Config::local()
    };
    let key = NodeKey::from_seed([2; 32]);
    let mut core = Core::new(
        now,
        UNIX,
        SimPeer(0),
        key,
        SimChecks::new(SECRET),
        config,
        false,
        Restored::default(),
    )
    .expect("the local preset is valid");
    // Three admitted peers, so lookups and puts have someone to ask.
    for peer in 1..4 {
        let proof = proof_of(SECRET, SimPeer(peer)).to_vec();
        let known = Known {
            peer: SimPeer(peer),
            addrs: Vec::new(),
            proof,
            incarnation: 0,
        };
        core.bootstrap(now, UNIX, [known]);
    }
    for command in [
        Command::find_node(SimPeer(9)),
        Command::get(b"k".to_vec()),
        Command::Put(PutRequest {
            key: b"k".to_vec(),
            value: b"v".to_vec(),
            ttl: Duration::from_secs(60),
            quorum: None,
            seq: None,
            route: Default::default(),
        }),
        Command::Notices(b"k".to_vec()),
    ] {
        core.handle_command(now, UNIX, command);
    }
    let mut sent: Vec<RequestId> = Vec::new();
    let mut handed: HashSet<InboundId> = HashSet::new();
    let mut answered: HashSet<InboundId> = HashSet::new();
    let mut next_inbound = 0;
    for _ in 0..32 {
        drain(&mut core, &mut sent, &handed, &mut answered);
        if input.0.is_empty() {
            break;
        }
        let what = input.u8();
        let bytes = input.bytes(4096);
        match what % 6 {
            4 | 5 => {
                let limits = shoal_broadcast::Limits::default();
                let Ok(msg) = shoal_broadcast::message::decode(bytes, &limits) else {
                    continue;
                };
                let from = if what % 6 == 4 { SimPeer(2) } else { SimPeer(50) };
                core.handle_broadcast(now, UNIX, from, msg);
            }
            0 | 1 => {
                let Ok(request) = wire::decode::<Request>(bytes, MAX_REQUEST_LEN) else {
                    continue;
                };
                next_inbound += 1;
                let id = InboundId(next_inbound);
                handed.insert(id);
                // Peer 1 is admitted; peer 50 is a stranger whose check never ends.
                let from = if what % 6 == 0 { SimPeer(1) } else { SimPeer(50) };
                core.handle_request(now, UNIX, from, id, request);
            }
            2 => {
                let Ok(response) = wire::decode::<Response>(bytes, MAX_RESPONSE_LEN) else {
                    continue;
                };
                if let Some(id) = sent.pop() {
                    core.handle_response(now, UNIX, id, Ok(response));
                }
            }
            _ => {
                now += Duration::from_millis(u64::from(input.u8()) * 50);
                core.handle_timeout(now, UNIX);
            }
        }
        let s = core.sizes();
        assert!(s.held <= shoal_dht::core::MAX_HELD_PEERS * shoal_dht::core::MAX_HELD_PER_PEER);
        assert!(s.wanted <= shoal_dht::core::MAX_WANTED);
        assert!(core.broadcast().within_bounds());
    }
    // Past every bound, every request handed in has been answered.
    now += Duration::from_secs(120);
    core.handle_timeout(now, UNIX);
    drain(&mut core, &mut sent, &handed, &mut answered);
    assert_eq!(handed, answered, "every request answered exactly once");
});

fn drain(
    core: &mut Core<SimPeer, SimChecks>,
    sent: &mut Vec<RequestId>,
    handed: &HashSet<InboundId>,
    answered: &mut HashSet<InboundId>,
) {
    while let Some(action) = core.poll_action() {
        match action {
            Action::Send { id, .. } => sent.push(id),
            Action::Respond { id, .. } => {
                assert!(handed.contains(&id), "answered a request never handed in");
                assert!(answered.insert(id), "answered a request twice");
            }
            _ => {}
        }
    }
}
