//! Property tests of the core's invariants, advancing `now` by hand over a tiny network whose
//! deliveries, drops and injected gossip proptest chooses.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use proptest::prelude::*;

use crate::config::Config;
use crate::message::{Address, Message, Payload, State, Update};
use crate::state::{Membership, Transmit};

const NODES: u32 = 4;

#[derive(Debug, Clone)]
enum Op {
    Advance(u16),
    Deliver(usize),
    Drop(usize),
    Inject {
        to: u32,
        member: u32,
        inc: u8,
        state: u8,
        by: u32,
    },
    Join(u32, u32),
    Leave(u32),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (1u16..3000).prop_map(Op::Advance),
        any::<usize>().prop_map(Op::Deliver),
        any::<usize>().prop_map(Op::Deliver),
        any::<usize>().prop_map(Op::Drop),
        (0..NODES, 0..NODES + 2, 0u8..4, 0u8..4, 0..NODES + 2).prop_map(
            |(to, member, inc, state, by)| Op::Inject {
                to,
                member,
                inc,
                state,
                by
            }
        ),
        (0..NODES, 0..NODES).prop_map(|(a, b)| Op::Join(a, b)),
        (0..NODES).prop_map(Op::Leave),
    ]
}

fn check(cores: &[Membership<u32>], last: &mut HashMap<(u32, u32), (u64, State)>, own: &mut [u64]) {
    for (i, c) in cores.iter().enumerate() {
        let i = i as u32;
        assert!(
            c.incarnation() >= own[i as usize],
            "own incarnation decreased"
        );
        own[i as usize] = c.incarnation();
        assert!(c.member(&i).is_none(), "node {i} has itself in its table");
        let live = c
            .members()
            .filter(|(_, m)| matches!(m.state, State::Alive | State::Suspect))
            .count();
        assert_eq!(live, c.live_members(), "live count out of sync");
        for (id, m) in c.members() {
            if let Some(&(inc, state)) = last.get(&(i, *id)) {
                assert!(
                    m.incarnation >= inc,
                    "node {i}: member {id} incarnation decreased"
                );
                let was_gone = matches!(state, State::Dead | State::Left);
                if was_gone && m.state == State::Alive {
                    assert!(
                        m.incarnation > inc,
                        "node {i}: member {id} revived without a newer incarnation"
                    );
                }
            }
            last.insert((i, *id), (m.incarnation, m.state));
        }
        c.check_table();
        let q = c.queue_lengths();
        assert!(q.transmits <= c.config().max_transmit_queue.get());
        assert!(q.events <= c.config().max_event_queue.get());
        assert!(q.broadcasts <= NODES as usize + 2);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn core_invariants_hold(ops in proptest::collection::vec(op(), 1..200)) {
        let t0 = Instant::now();
        let mut now = t0;
        let mut cores: Vec<Membership<u32>> = (0..NODES)
            .map(|i| {
                let config = Config { rng_seed: Some([i as u8; 32]), ..Config::lan() };
                let mut c = Membership::new(now, i, vec![Address::from("x")], 0, config).unwrap();
                c.restore((0..NODES).map(|o| (o, Arc::from(vec![Address::from("x")]))));
                c
            })
            .collect();
        let mut wire: Vec<(u32, Transmit<u32>)> = Vec::new();
        let mut last = HashMap::new();
        let mut own = vec![0u64; NODES as usize];
        for op in ops {
            match op {
                Op::Advance(ms) => {
                    now += Duration::from_millis(ms as u64);
                    for c in cores.iter_mut() {
                        c.handle_timeout(now);
                    }
                }
                Op::Deliver(i) if !wire.is_empty() => {
                    let (from, t) = wire.swap_remove(i % wire.len());
                    cores[t.to as usize].handle_message(now, from, t.msg);
                }
                Op::Drop(i) if !wire.is_empty() => {
                    wire.swap_remove(i % wire.len());
                }
                Op::Deliver(_) | Op::Drop(_) => {}
                Op::Inject { to, member, inc, state, by } => {
                    let state = [State::Alive, State::Suspect, State::Dead, State::Left][state as usize];
                    let by = matches!(state, State::Suspect | State::Dead).then_some(by);
                    let msg = Message {
                        payload: Payload::Ping { seq: 1 },
                        gossip: vec![Update { member, incarnation: inc as u64, state, addrs: vec![], by, credential: Default::default() }],
                    };
                    let from = (to + 1) % NODES;
                    cores[to as usize].handle_message(now, from, msg);
                }
                Op::Join(a, b) => {
                    cores[a as usize].join(now, [b]);
                }
                Op::Leave(a) => {
                    cores[a as usize].leave(now);
                }
            }
            for (i, c) in cores.iter_mut().enumerate() {
                while let Some(t) = c.poll_transmit() {
                    if wire.len() < 512 && t.to < NODES {
                        wire.push((i as u32, t));
                    }
                }
                while c.poll_event().is_some() {}
                prop_assert_eq!(c.poll_timeout().is_none(), c.has_left());
            }
            check(&cores, &mut last, &mut own);
        }
    }
}
