//! Unit tests of the core, driven by hand.

use std::time::{Duration, Instant};

use super::*;

fn config() -> Config {
    Config {
        rng_seed: Some([7; 32]),
        ..Config::lan()
    }
}

/// A distinct RNG seed for each `id`.
fn seed_of(id: u32) -> [u8; 32] {
    let mut seed = [0; 32];
    seed[..4].copy_from_slice(&id.to_le_bytes());
    seed
}

fn addrs(id: u32) -> Vec<Address> {
    vec![Address(format!("/sim/{id}").into_bytes())]
}

fn core(t0: Instant, id: u32) -> Membership<u32> {
    Membership::new(t0, id, addrs(id), 0, config()).unwrap()
}

/// A core that knows `others` as alive.
fn core_with(t0: Instant, id: u32, others: &[u32]) -> Membership<u32> {
    let mut c = core(t0, id);
    c.restore(others.iter().map(|&o| (o, Arc::from(addrs(o)))));
    c
}

fn update(member: u32, incarnation: u64, state: State, by: Option<u32>) -> Update<u32> {
    Update {
        member,
        incarnation,
        state,
        addrs: addrs(member),
        by,
        credential: Credential::default(),
    }
}

fn gossip(payload: Payload<u32>, updates: Vec<Update<u32>>) -> Message<u32> {
    Message {
        payload,
        gossip: updates,
    }
}

/// Runs timeouts of `c` until `until`, returning every transmit.
fn advance(c: &mut Membership<u32>, until: Instant) -> Vec<Transmit<u32>> {
    let mut out = Vec::new();
    while let Some(t) = c.poll_timeout() {
        if t > until {
            break;
        }
        c.handle_timeout(t);
        while let Some(tx) = c.poll_transmit() {
            out.push(tx);
        }
    }
    c.handle_timeout(until);
    while let Some(tx) = c.poll_transmit() {
        out.push(tx);
    }
    out
}

/// Advances to the first probe and returns (target, seq, time sent).
fn first_probe(c: &mut Membership<u32>) -> (u32, u64, Instant) {
    loop {
        let t = c.poll_timeout().unwrap();
        c.handle_timeout(t);
        while let Some(tx) = c.poll_transmit() {
            if let Payload::Ping { seq } = tx.msg.payload {
                return (tx.to, seq, t);
            }
        }
    }
}

#[test]
fn ping_is_acked() {
    let t0 = Instant::now();
    let mut b = core(t0, 2);
    b.handle_message(t0, 1, gossip(Payload::Ping { seq: 7 }, vec![]));
    expect_message!(b, 1, Payload::Ack { seq: 7 });
}

#[test]
fn silent_target_gets_ping_req_then_suspected_then_failed() {
    let t0 = Instant::now();
    let mut a = core_with(t0, 1, &[2, 3, 4, 5]);
    let (target, seq, sent) = first_probe(&mut a);
    let tx = advance(&mut a, sent + Duration::from_millis(500));
    let reqs: Vec<_> = tx
        .iter()
        .filter(|t| matches!(t.msg.payload, Payload::PingReq { target: x, seq: s } if x == target && s == seq))
        .collect();
    assert_eq!(reqs.len(), 3, "k = 3 helpers: {tx:#?}");
    assert!(reqs.iter().all(|t| t.to != target && t.to != 1));
    // One helper nacks; two stay silent.
    a.handle_message(
        sent + Duration::from_millis(900),
        reqs[0].to,
        gossip(Payload::Nack { seq }, vec![]),
    );
    advance(&mut a, sent + Duration::from_secs(1));
    let e = expect_event!(a, Event::Suspected { .. });
    assert!(matches!(e, Event::Suspected { member, by: 1, .. } if member == target));
    assert_eq!(a.local_health(), 1, "missing nacks count once a probe");
    assert_eq!(a.member(&target).unwrap().state, State::Suspect);
    // No confirmation: the suspicion lasts β · α · max(1, log10 5) · T = 24 s; local health
    // stretches probes, not suspicions (Lifeguard).
    let suspected_at = sent + Duration::from_secs(1);
    advance(&mut a, suspected_at + Duration::from_millis(23_900));
    expect_no_event!(a, Event::Failed { .. });
    advance(&mut a, suspected_at + Duration::from_millis(24_100));
    let e = expect_event!(a, Event::Failed { .. });
    assert!(matches!(e, Event::Failed { member, incarnation: 0, .. } if member == target));
    assert_eq!(a.live_members(), 3);
}

#[test]
fn ack_keeps_target_alive_and_lowers_local_health() {
    let t0 = Instant::now();
    let mut a = core_with(t0, 1, &[2, 3]);
    a.local_health = 3;
    let (target, seq, sent) = first_probe(&mut a);
    a.handle_message(
        sent + Duration::from_millis(3),
        target,
        gossip(Payload::Ack { seq }, vec![]),
    );
    // Local health 3 stretches the probe window to 4 s.
    advance(&mut a, sent + Duration::from_millis(3_990));
    assert_eq!(a.local_health(), 3);
    advance(&mut a, sent + Duration::from_secs(4));
    expect_no_event!(a, Event::Suspected { .. });
    assert_eq!(a.local_health(), 2);
}

#[test]
fn confirmations_shrink_the_suspicion() {
    let t0 = Instant::now();
    let mut a = core_with(t0, 1, &[2, 3, 4, 5, 6]);
    a.handle_message(
        t0,
        3,
        gossip(
            Payload::Ping { seq: 1 },
            vec![update(2, 0, State::Suspect, Some(3))],
        ),
    );
    expect_event!(
        a,
        Event::Suspected {
            member: 2,
            by: 3,
            ..
        }
    );
    for by in [4, 5, 6] {
        a.handle_message(
            t0,
            by,
            gossip(
                Payload::Ping { seq: 1 },
                vec![update(2, 0, State::Suspect, Some(by))],
            ),
        );
    }
    // K = 3 confirmations: the timeout is down to its minimum α · max(1, log10 6) · T = 4 s.
    advance(&mut a, t0 + Duration::from_millis(3_900));
    expect_no_event!(a, Event::Failed { member: 2, .. });
    advance(&mut a, t0 + Duration::from_millis(4_100));
    expect_event!(a, Event::Failed { member: 2, .. });
}

#[test]
fn suspicion_timeout_formula() {
    let t0 = Instant::now();
    let ids: Vec<u32> = (2..=100).collect();
    let a = core_with(t0, 1, &ids);
    // n = 100 live: min = 4 · log10(100) · 1 s = 8 s, max = 48 s.
    assert_eq!(
        a.suspicion_bounds(),
        (Duration::from_secs(8), Duration::from_secs(48))
    );
    assert_eq!(a.suspicion_timeout(0), Duration::from_secs(48));
    assert_eq!(a.suspicion_timeout(3), Duration::from_secs(8));
    assert_eq!(a.suspicion_timeout(30), Duration::from_secs(8));
    let one = a.suspicion_timeout(1).as_secs_f64();
    // 48 - 40 · ln 2 / ln 4 = 28.
    assert!((one - 28.0).abs() < 1e-6, "{one}");
}

#[test]
fn refutes_suspicion_and_uses_the_buddy_system() {
    let t0 = Instant::now();
    let mut a = core_with(t0, 1, &[2, 3]);
    a.handle_message(
        t0,
        2,
        gossip(
            Payload::Ping { seq: 1 },
            vec![update(1, 0, State::Suspect, Some(3))],
        ),
    );
    assert_eq!(a.incarnation(), 1);
    assert_eq!(a.local_health(), 1);
    assert_eq!(a.stats().refutations, 1);
    let ack = expect_message!(a, 2, Payload::Ack { seq: 1 });
    assert!(
        ack.msg.gossip.contains(&update(1, 1, State::Alive, None)),
        "{ack:?}"
    );

    // Buddy system: a ping to a suspect carries its suspicion first.
    let mut b = core_with(t0, 2, &[3]);
    b.handle_message(
        t0,
        1,
        gossip(
            Payload::Ping { seq: 1 },
            vec![update(3, 0, State::Suspect, Some(1))],
        ),
    );
    let (target, _, _) = (3, 0, 0);
    let mut found = false;
    for _ in 0..3 {
        let t = b.poll_timeout().unwrap();
        b.handle_timeout(t);
        while let Some(tx) = b.poll_transmit() {
            if tx.to == target && matches!(tx.msg.payload, Payload::Ping { .. }) {
                assert_eq!(tx.msg.gossip[0].member, 3);
                assert_eq!(tx.msg.gossip[0].state, State::Suspect);
                found = true;
            }
        }
    }
    assert!(found);
}

#[test]
fn our_refutation_rides_first_however_much_news_is_queued() {
    // Regression (simulator, n = 1,000 at 30 % loss): a refutation whose first messages were
    // all lost stayed queued behind a burst of fresher news about others, unsent, until every
    // member declared the refuter dead.
    let t0 = Instant::now();
    let others: Vec<u32> = (2..3000).collect();
    let mut a = core_with(t0, 1, &others);
    for chunk in others.chunks(message::MAX_GOSSIP_UPDATES) {
        let news = chunk
            .iter()
            .map(|&m| update(m, 1, State::Alive, None))
            .collect();
        a.handle_message(t0, 2, gossip(Payload::Gossip, news));
    }
    a.handle_message(
        t0,
        3,
        gossip(Payload::Gossip, vec![update(1, 0, State::Suspect, Some(3))]),
    );
    assert_eq!(a.incarnation(), 1);
    let mine = update(1, 1, State::Alive, None);
    // The refutation goes out at once, in messages of its own (to the suspector and others).
    let first: Vec<_> = std::iter::from_fn(|| a.poll_transmit()).collect();
    assert!(
        first
            .iter()
            .any(|t| t.to == 3 && t.msg.gossip.contains(&mine))
    );
    // Then every probe carries it first until its retransmissions are spent, though thousands
    // of updates about others are fresher.
    let limit = a.retransmit_limit() as usize;
    let mut carried = first
        .iter()
        .filter(|t| t.msg.gossip.contains(&mine))
        .count();
    let mut now = t0;
    let mut pings = 0;
    while carried < limit {
        now += Duration::from_millis(100);
        for t in advance(&mut a, now) {
            if matches!(t.msg.payload, Payload::Ping { .. }) {
                pings += 1;
                assert_eq!(
                    t.msg.gossip.first(),
                    Some(&mine),
                    "ping {pings} to {}",
                    t.to
                );
            }
            carried += usize::from(t.msg.gossip.contains(&mine));
        }
        assert!(
            now < t0 + Duration::from_secs(30),
            "carried {carried} times"
        );
    }
    assert!(pings > 0);
    assert!(
        a.broadcasts.len() > 1000,
        "news about others is still queued"
    );
}

#[test]
fn a_member_gossiping_stale_bad_news_about_us_gets_our_refutation_at_once() {
    let t0 = Instant::now();
    let mut a = core_with(t0, 1, &[2, 3, 4, 5]);
    let stale = update(1, 0, State::Suspect, Some(2));
    a.handle_message(t0, 2, gossip(Payload::Gossip, vec![stale.clone()]));
    assert_eq!(a.incarnation(), 1);
    while a.poll_transmit().is_some() {}
    let mine = update(1, 1, State::Alive, None);
    // Member 5 missed the refutation and gossips the old suspicion, to us as to anyone: it is
    // told at once, and nothing is refuted again.
    a.handle_message(t0, 5, gossip(Payload::Gossip, vec![stale]));
    let tx = expect_message!(a, 5, Payload::Gossip);
    assert!(tx.msg.gossip.contains(&mine), "{tx:?}");
    assert_eq!(a.incarnation(), 1);
    assert_eq!(a.stats().refutations, 1);
    // A stale death the same way.
    a.handle_message(
        t0,
        4,
        gossip(Payload::Gossip, vec![update(1, 0, State::Dead, Some(2))]),
    );
    let tx = expect_message!(a, 4, Payload::Gossip);
    assert!(tx.msg.gossip.contains(&mine), "{tx:?}");
    // News at our own incarnation is refuted, as before, not answered with the old state.
    a.handle_message(
        t0,
        3,
        gossip(Payload::Gossip, vec![update(1, 1, State::Suspect, Some(3))]),
    );
    assert_eq!(a.incarnation(), 2);
    let sent: Vec<_> = std::iter::from_fn(|| a.poll_transmit()).collect();
    assert!(
        sent.iter().all(|t| !t.msg.gossip.contains(&mine)),
        "{sent:?}"
    );
}

#[test]
fn helper_forwards_ack_or_nacks() {
    let t0 = Instant::now();
    let mut h = core_with(t0, 2, &[1, 3]);
    h.handle_message(
        t0,
        1,
        gossip(Payload::PingReq { seq: 40, target: 3 }, vec![]),
    );
    let ping = expect_message!(h, 3, Payload::Ping { .. });
    let Payload::Ping { seq } = ping.msg.payload else {
        unreachable!()
    };
    h.handle_message(
        t0 + Duration::from_millis(5),
        3,
        gossip(Payload::Ack { seq }, vec![]),
    );
    expect_message!(h, 1, Payload::Ack { seq: 40 });

    h.handle_message(
        t0,
        1,
        gossip(Payload::PingReq { seq: 41, target: 3 }, vec![]),
    );
    expect_message!(h, 3, Payload::Ping { .. });
    let tx = advance(&mut h, t0 + Duration::from_millis(450));
    assert!(
        tx.iter()
            .any(|t| t.to == 1 && t.msg.payload == Payload::Nack { seq: 41 }),
        "{tx:#?}"
    );
}

#[test]
fn an_unreachable_target_is_suspected_within_a_round_trip_not_a_probe_window() {
    let t0 = Instant::now();
    let mut a = core_with(t0, 1, &[2, 3, 4, 5]);
    let (target, seq, sent) = first_probe(&mut a);
    // The dial of the ping is refused 3 ms later: helpers are asked at once, not at 500 ms.
    let refused = sent + Duration::from_millis(3);
    assert!(a.unreachable(refused, &target));
    let mut reqs = Vec::new();
    while let Some(tx) = a.poll_transmit() {
        if matches!(tx.msg.payload, Payload::PingReq { target: x, seq: s } if x == target && s == seq)
        {
            reqs.push(tx.to);
        }
    }
    assert_eq!(reqs.len(), 3, "k = 3 helpers asked at once");
    // Each helper's own dial of the target is refused too, and it nacks at once.
    for (i, &h) in reqs.iter().enumerate() {
        let mut helper = core_with(t0, h, &[1, 2, 3, 4, 5]);
        let at = refused + Duration::from_millis(1);
        helper.handle_message(at, 1, gossip(Payload::PingReq { seq, target }, vec![]));
        expect_message!(helper, target, Payload::Ping { .. });
        assert!(helper.unreachable(at + Duration::from_millis(2), &target));
        let nack = expect_message!(helper, 1, Payload::Nack { .. });
        assert_eq!(nack.msg.payload, Payload::Nack { seq });
        a.handle_message(
            at + Duration::from_millis(4 + i as u64),
            h,
            gossip(Payload::Nack { seq }, vec![]),
        );
    }
    let e = expect_event!(a, Event::Suspected { .. });
    assert!(matches!(e, Event::Suspected { member, by: 1, .. } if member == target));
    assert_eq!(
        a.local_health(),
        0,
        "every helper answered: our messages are not late"
    );
    // News of a member with no probe or relay under way moves nothing; the suspicion's own
    // timeout is untouched (no confirmations: 24 s from the suspicion).
    assert!(!a.unreachable(refused, &target));
    let suspected_at = refused + Duration::from_millis(7);
    advance(&mut a, suspected_at + Duration::from_millis(23_900));
    expect_no_event!(a, Event::Failed { .. });
}

/// The periodic anti-entropy exchange: views that agree cost one digest and no tables; a view
/// that differs answers with its table, asks for the sender's, and both then agree.
#[test]
fn agreeing_views_exchange_a_digest_and_differing_ones_their_tables() {
    let t0 = Instant::now();
    let mut a = core_with(t0, 1, &[2]);
    // Runs `a` until its periodic exchange, its probes answered at once.
    let next_digest = |a: &mut Membership<u32>, from: Instant| {
        let mut at = from;
        loop {
            at += Duration::from_millis(100);
            assert!(at < from + Duration::from_secs(120), "no digest sent");
            let mut digest = None;
            for t in advance(a, at) {
                match t.msg.payload {
                    Payload::Ping { seq } => {
                        a.handle_message(at, t.to, gossip(Payload::Ack { seq }, vec![]))
                    }
                    Payload::Digest { .. } => digest = Some(t),
                    Payload::PushPull { .. } => panic!("a table, not a digest: {t:?}"),
                    _ => {}
                }
            }
            if let Some(t) = digest {
                return (t, at);
            }
        }
    };
    let tables = |c: &mut Membership<u32>| {
        let mut out = Vec::new();
        while let Some(t) = c.poll_transmit() {
            if matches!(t.msg.payload, Payload::PushPull { .. }) {
                out.push(t);
            }
        }
        out
    };
    let (digest, at) = next_digest(&mut a, t0);
    assert_eq!(digest.to, 2);
    // Member 2 holds the same view: it says nothing.
    let mut same = core_with(t0, 2, &[1]);
    same.handle_message(at, 1, digest.msg.clone());
    assert!(tables(&mut same).is_empty());
    // Member 2 also knows member 3: it sends its table and asks for member 1's.
    let mut other = core_with(t0, 2, &[1, 3]);
    other.handle_message(at, 1, digest.msg);
    let answer = tables(&mut other);
    assert_eq!(answer.len(), 1);
    assert!(matches!(
        answer[0].msg.payload,
        Payload::PushPull {
            reply: true,
            join: false,
            ..
        }
    ));
    a.handle_message(at, 2, answer[0].msg.clone());
    assert_eq!(a.member(&3).map(|m| m.state), Some(State::Alive));
    let reply: Vec<_> = tables(&mut a).into_iter().filter(|t| t.to == 2).collect();
    assert_eq!(reply.len(), 1, "member 1's table in return");
    other.handle_message(at, 1, reply[0].msg.clone());
    // Now they agree: the next digest draws no table.
    let (digest, at) = next_digest(&mut a, at);
    if digest.to == 2 {
        other.handle_message(at, 1, digest.msg);
        assert!(tables(&mut other).is_empty());
    } else {
        let mut third = core_with(t0, 3, &[1, 2]);
        third.handle_message(at, 1, digest.msg);
        assert!(tables(&mut third).is_empty());
    }
}

#[test]
fn join_through_a_seed() {
    let t0 = Instant::now();
    let mut a = core(t0, 1);
    let mut seed = core_with(t0, 2, &[3]);
    let id = a.join(t0, [2, 1, 2]);
    let tx = expect_message!(
        a,
        2,
        Payload::PushPull {
            join: true,
            reply: true,
            ..
        }
    );
    seed.handle_message(t0, 1, tx.msg);
    expect_event!(seed, Event::Joined { member: 1, .. });
    let reply = expect_message!(seed, 1, Payload::PushPull { reply: false, .. });
    a.handle_message(t0, 2, reply.msg);
    let mut events = Vec::new();
    while let Some(e) = a.poll_event() {
        events.push(e);
    }
    assert!(
        events.contains(&Event::JoinFinished { id, result: Ok(2) }),
        "{events:#?}"
    );
    assert_eq!(a.live_members(), 2);

    let mut lonely = core(t0, 9);
    let id = lonely.join(t0, [9]);
    expect_event!(lonely, Event::JoinFinished { id: i, result: Err(CommandError::NoSeeds) } if *i == id);
    let id = lonely.join(t0, [5]);
    advance(&mut lonely, t0 + Duration::from_secs(4));
    expect_event!(lonely, Event::JoinFinished { id: i, result: Err(CommandError::NoSeedAnswered) } if *i == id);
}

#[test]
fn incarnation_rules() {
    let t0 = Instant::now();
    let mut a = core_with(t0, 1, &[2]);
    a.handle_message(
        t0,
        2,
        gossip(
            Payload::Ping { seq: 1 },
            vec![update(2, 3, State::Dead, Some(4))],
        ),
    );
    expect_event!(
        a,
        Event::Failed {
            member: 2,
            incarnation: 3,
            ..
        }
    );
    // Same incarnation cannot revive it; neither can suspicion.
    a.handle_message(
        t0,
        2,
        gossip(
            Payload::Ping { seq: 1 },
            vec![
                update(2, 3, State::Alive, None),
                update(2, 5, State::Suspect, Some(4)),
            ],
        ),
    );
    assert_eq!(a.member(&2).unwrap().state, State::Dead);
    a.handle_message(
        t0,
        2,
        gossip(
            Payload::Ping { seq: 1 },
            vec![update(2, 4, State::Alive, None)],
        ),
    );
    expect_event!(
        a,
        Event::Joined {
            member: 2,
            incarnation: 4,
            ..
        }
    );

    // Unknown members: suspicion ignored, death remembered as a tombstone.
    a.handle_message(
        t0,
        2,
        gossip(
            Payload::Ping { seq: 1 },
            vec![
                update(7, 0, State::Suspect, Some(2)),
                update(8, 2, State::Dead, Some(2)),
            ],
        ),
    );
    assert!(a.member(&7).is_none());
    assert_eq!(a.member(&8).unwrap().state, State::Dead);
    expect_no_event!(a, Event::Failed { member: 8, .. });
    a.handle_message(
        t0,
        2,
        gossip(
            Payload::Ping { seq: 1 },
            vec![update(8, 1, State::Alive, None)],
        ),
    );
    assert_eq!(a.member(&8).unwrap().state, State::Dead);
    // Older news never lowers an incarnation.
    a.handle_message(
        t0,
        2,
        gossip(
            Payload::Ping { seq: 1 },
            vec![update(2, 1, State::Suspect, Some(5))],
        ),
    );
    assert_eq!(a.member(&2).unwrap().incarnation, 4);
    assert_eq!(a.member(&2).unwrap().state, State::Alive);
}

#[test]
fn push_pull_softens_dead_to_suspect() {
    let t0 = Instant::now();
    let mut a = core_with(t0, 1, &[2, 3]);
    let msg = gossip(
        Payload::PushPull {
            join: false,
            reply: true,
            members: vec![
                update(3, 0, State::Alive, None),
                update(2, 0, State::Dead, Some(3)),
            ],
        },
        vec![],
    );
    a.handle_message(t0, 3, msg);
    expect_event!(
        a,
        Event::Suspected {
            member: 2,
            by: 3,
            ..
        }
    );
    assert_eq!(a.member(&2).unwrap().state, State::Suspect);
    expect_message!(a, 3, Payload::PushPull { reply: false, .. });
}

#[test]
fn leave_gossips_then_stops() {
    let t0 = Instant::now();
    let mut a = core_with(t0, 1, &[2, 3, 4]);
    let mut b = core_with(t0, 2, &[1, 3, 4]);
    let id = a.leave(t0);
    let mut sent = Vec::new();
    while let Some(t) = a.poll_transmit() {
        sent.push(t);
    }
    // Invariant of the test: leave pings `indirect_probes` live members at once.
    let tx = sent
        .into_iter()
        .find(|t| matches!(t.msg.payload, Payload::Ping { .. }))
        .unwrap();
    assert!(
        tx.msg
            .gossip
            .iter()
            .any(|u| u.member == 1 && u.state == State::Left)
    );
    b.handle_message(t0, 1, tx.msg.clone());
    // `b` may or may not be the one pinged; feed it the gossip directly.
    b.handle_message(t0, 1, gossip(Payload::Ping { seq: 5 }, tx.msg.gossip));
    expect_event!(b, Event::Left { member: 1, .. });
    advance(&mut a, t0 + Duration::from_secs(3));
    expect_event!(a, Event::LeaveFinished { id: i, result: Ok(()) } if *i == id);
    assert!(a.has_left());
    assert_eq!(a.poll_timeout(), None);
    let again = a.leave(t0 + Duration::from_secs(4));
    expect_event!(a, Event::LeaveFinished { id: i, result: Err(CommandError::HasLeft) } if *i == again);
}

#[test]
fn reconnect_pings_dead_members_and_seeds() {
    let t0 = Instant::now();
    let mut a = core_with(t0, 1, &[2]);
    a.seeds = vec![9];
    a.handle_message(
        t0,
        3,
        gossip(
            Payload::Ping { seq: 1 },
            vec![update(2, 0, State::Dead, Some(3))],
        ),
    );
    let tx = advance(&mut a, t0 + Duration::from_secs(60));
    let pinged_dead = tx.iter().any(|t| {
        t.to == 2
            && matches!(t.msg.payload, Payload::Ping { .. })
            && t.msg
                .gossip
                .first()
                .is_some_and(|u| u.member == 2 && u.state == State::Dead)
    });
    let pushed_seed = tx
        .iter()
        .any(|t| t.to == 9 && matches!(t.msg.payload, Payload::PushPull { reply: true, .. }));
    assert!(pinged_dead && pushed_seed, "{tx:#?}");
}

#[test]
fn time_never_goes_backwards_and_timeout_is_not_in_the_past() {
    let t0 = Instant::now();
    let mut a = core_with(t0, 1, &[2, 3]);
    a.handle_timeout(t0 + Duration::from_secs(5));
    a.handle_timeout(t0);
    assert!(a.poll_timeout().unwrap() > t0 + Duration::from_secs(5));
}

#[test]
fn rejects_bad_own_addresses() {
    let t0 = Instant::now();
    let too_many = vec![Address::from("x"); message::MAX_ADDRESSES + 1];
    assert!(Membership::new(t0, 1u32, too_many, 0, config()).is_err());
    let mut bad = config();
    bad.probe_timeout = Duration::ZERO;
    assert!(Membership::new(t0, 1u32, vec![], 0, bad).is_err());
}

/// A core (member 1) holding 2 alive, 3 suspect (suspected by 2), 4 dead and 5 departed, all at
/// incarnation 1.
fn effect_core(config: Config) -> Membership<u32> {
    let t0 = Instant::now();
    let mut c = Membership::new(t0, 1, addrs(1), 0, config).unwrap();
    c.restore([2, 3, 4, 5].map(|o| (o, Arc::from(addrs(o)))));
    let news = vec![
        update(2, 1, State::Alive, None),
        update(3, 1, State::Suspect, Some(2)),
        update(4, 1, State::Dead, Some(2)),
        update(5, 1, State::Left, None),
    ];
    c.handle_message(t0, 2, gossip(Payload::Gossip, news));
    while c.poll_event().is_some() {}
    while c.poll_transmit().is_some() {}
    c
}

/// News about `member` at `incarnation` in `state`, suspected by `by` where that applies.
fn news(member: u32, incarnation: u64, state: State, by: u32) -> Update<u32> {
    let by = matches!(state, State::Suspect | State::Dead).then_some(by);
    update(member, incarnation, state, by)
}

#[test]
fn effect_of_every_kind_of_news() {
    use Effect::{Changes, Ignored, Local, Revives};
    use State::{Alive, Dead, Left, Suspect};
    let c = effect_core(config());
    let e = |member, incarnation, state, push_pull| {
        c.effect(&news(member, incarnation, state, 6), push_pull)
    };
    // Malformed news, and news about ourselves.
    assert_eq!(c.effect(&update(2, 5, Suspect, None), false), Ignored);
    for state in [Alive, Suspect, Dead, Left] {
        assert_eq!(e(1, 0, state, false), Local);
        assert_eq!(e(1, 0, state, true), Local);
    }
    // A member we never heard of: alive news makes it join, suspicion is ignored, death and
    // departure leave a tombstone (a push-pull's "dead" is not softened: nothing to suspect).
    for pp in [false, true] {
        assert_eq!(e(9, 0, Alive, pp), Revives);
        assert_eq!(e(9, 0, Suspect, pp), Ignored);
        assert_eq!(e(9, 0, Dead, pp), Changes);
        assert_eq!(e(9, 0, Left, pp), Changes);
    }
    // Alive at 1: only a newer incarnation refreshes it; suspicion and death at its incarnation
    // or a newer one change it; older news never does.
    let table = [
        // (incarnation, state, effect in gossip, effect in a push-pull)
        (0, Alive, Ignored, Ignored),
        (1, Alive, Ignored, Ignored),
        (2, Alive, Changes, Changes),
        (0, Suspect, Ignored, Ignored),
        (1, Suspect, Changes, Changes),
        (2, Suspect, Changes, Changes),
        (0, Dead, Ignored, Ignored),
        // A push-pull's "dead" only suspects it: still a change.
        (1, Dead, Changes, Changes),
        (1, Left, Changes, Changes),
        (0, Left, Ignored, Ignored),
    ];
    for (inc, state, gossip, push_pull) in table {
        assert_eq!(
            e(2, inc, state, false),
            gossip,
            "alive member, {state:?} at {inc}"
        );
        assert_eq!(
            e(2, inc, state, true),
            push_pull,
            "alive member, {state:?} at {inc}"
        );
    }
    // Suspect at 1 (suspected by 2): a new suspector confirms (a change), the same one does not;
    // so does a push-pull's "dead", softened; refutation needs a newer incarnation.
    let table = [
        (0, Alive, Ignored, Ignored),
        (1, Alive, Ignored, Ignored),
        (2, Alive, Changes, Changes),
        (0, Suspect, Ignored, Ignored),
        (1, Suspect, Changes, Changes),
        (2, Suspect, Changes, Changes),
        (1, Dead, Changes, Changes),
        (0, Dead, Ignored, Ignored),
        (1, Left, Changes, Changes),
    ];
    for (inc, state, gossip, push_pull) in table {
        assert_eq!(
            e(3, inc, state, false),
            gossip,
            "suspect member, {state:?} at {inc}"
        );
        assert_eq!(
            e(3, inc, state, true),
            push_pull,
            "suspect member, {state:?} at {inc}"
        );
    }
    assert_eq!(c.effect(&news(3, 1, Suspect, 2), false), Ignored);
    assert_eq!(c.effect(&news(3, 1, Dead, 2), true), Ignored);
    // Dead at 1: only alive news at a newer incarnation revives it; suspicion never touches
    // it; a later state or a newer incarnation of bad news is a newer tombstone.
    let table = [
        (1, Alive, Ignored),
        (2, Alive, Revives),
        (2, Suspect, Ignored),
        (0, Dead, Ignored),
        (1, Dead, Ignored),
        (2, Dead, Changes),
        (1, Left, Changes),
        (0, Left, Ignored),
    ];
    for (inc, state, effect) in table {
        for pp in [false, true] {
            assert_eq!(
                e(4, inc, state, pp),
                effect,
                "dead member, {state:?} at {inc}"
            );
        }
    }
    // Departed at 1: "dead" at the same incarnation is older news.
    let table = [
        (1, Alive, Ignored),
        (2, Alive, Revives),
        (1, Dead, Ignored),
        (2, Dead, Changes),
        (1, Left, Ignored),
        (2, Left, Changes),
    ];
    for (inc, state, effect) in table {
        for pp in [false, true] {
            assert_eq!(
                e(5, inc, state, pp),
                effect,
                "departed member, {state:?} at {inc}"
            );
        }
    }
}

#[test]
fn effect_once_the_suspicion_is_fully_confirmed() {
    let t0 = Instant::now();
    let mut c = effect_core(config());
    // K = 3 confirmations besides the first suspector.
    for by in [6, 7, 8] {
        assert_eq!(
            c.effect(&news(3, 1, State::Suspect, by), false),
            Effect::Changes
        );
        c.handle_message(
            t0,
            2,
            gossip(Payload::Gossip, vec![news(3, 1, State::Suspect, by)]),
        );
    }
    assert_eq!(
        c.effect(&news(3, 1, State::Suspect, 9), false),
        Effect::Ignored
    );
    assert_eq!(
        c.effect(&news(3, 2, State::Suspect, 9), false),
        Effect::Changes,
        "a newer incarnation starts a new suspicion"
    );
}

#[test]
fn effect_when_the_table_is_full() {
    let full = effect_core(Config {
        max_members: std::num::NonZeroUsize::new(4).unwrap(),
        ..config()
    });
    for state in [State::Alive, State::Suspect, State::Dead, State::Left] {
        assert_eq!(full.effect(&news(9, 0, state, 6), false), Effect::Ignored);
    }
    assert_eq!(
        full.effect(&news(4, 2, State::Alive, 6), false),
        Effect::Revives,
        "members already held are not affected"
    );
    assert_eq!(
        full.effect(&news(1, 0, State::Suspect, 6), false),
        Effect::Local
    );
}

/// `apply` does what `effect` announced, for every kind of news about every kind of member.
#[test]
fn apply_does_what_effect_says() {
    let t0 = Instant::now();
    for member in [2, 3, 4, 5, 9] {
        for inc in 0..3 {
            for state in [State::Alive, State::Suspect, State::Dead, State::Left] {
                for by in [2, 6] {
                    for push_pull in [false, true] {
                        let mut c = effect_core(config());
                        let u = news(member, inc, state, by);
                        let effect = c.effect(&u, push_pull);
                        let before = c.member(&member);
                        let confirmations = c.suspicions.confirmations(&member);
                        let msg = if push_pull {
                            let members = vec![u.clone()];
                            gossip(
                                Payload::PushPull {
                                    join: false,
                                    reply: false,
                                    members,
                                },
                                vec![],
                            )
                        } else {
                            gossip(Payload::Gossip, vec![u.clone()])
                        };
                        c.handle_message(t0, 7, msg);
                        let after = c.member(&member);
                        let joined = std::iter::from_fn(|| c.poll_event())
                            .any(|e| matches!(e, Event::Joined { member: m, .. } if m == member));
                        let confirmed = c.suspicions.confirmations(&member);
                        let case = format!("{u:?}, push-pull {push_pull}: {effect:?}");
                        match effect {
                            Effect::Ignored => {
                                assert_eq!(before, after, "{case}");
                                assert_eq!(confirmations, confirmed, "{case}");
                            }
                            Effect::Revives => {
                                assert!(joined, "{case}");
                                assert_eq!(after.map(|m| m.state), Some(State::Alive), "{case}");
                            }
                            Effect::Changes => {
                                assert!(!joined, "{case}");
                                assert!(before != after || confirmations < confirmed, "{case}");
                            }
                            Effect::Local => unreachable!("{case}"),
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn tombstones_are_compact_and_expire_on_time() {
    assert_eq!(std::mem::size_of::<Tombstone<u32>>(), 20);
    assert_eq!(std::mem::align_of::<Tombstone<u32>>(), 4);
    let t0 = Instant::now();
    let mut a = core_with(t0, 1, &[2]);
    // An instant that is not a whole number of milliseconds after the core's creation.
    let t1 = t0 + Duration::from_nanos(123_456_789);
    let dead = update(9, 1 << 40, State::Dead, Some(2));
    a.handle_message(t1, 2, gossip(Payload::Gossip, vec![dead]));
    assert_eq!(a.member(&9).map(|m| m.state), Some(State::Dead));
    assert_eq!(a.queue_lengths().tombstones, 1);
    let expiry = t1 + a.config().dead_retention;
    assert!(a.poll_timeout().unwrap() <= expiry);
    a.handle_timeout(expiry - Duration::from_nanos(1));
    assert!(a.member(&9).is_some(), "kept until its expiry");
    a.handle_timeout(expiry);
    assert!(a.member(&9).is_none(), "forgotten at its expiry");
    assert_eq!(a.queue_lengths().tombstones, 0);
}

#[test]
fn vectors_grow_and_shrink_by_a_quarter() {
    let mut v: Vec<u32> = Vec::new();
    let mut last = 0;
    for i in 0..10_000 {
        grow_gently(&mut v);
        v.push(i);
        if v.capacity() != last {
            assert!(
                v.capacity() <= last + last / 4 + 4,
                "{last} -> {}",
                v.capacity()
            );
            last = v.capacity();
        }
    }
    assert!(v.capacity() <= 10_000 + 10_000 / 4 + 4);
    v.truncate(7_000);
    shrink_gently(&mut v);
    assert!(v.capacity() >= 10_000, "more than half used: kept");
    v.truncate(1_000);
    shrink_gently(&mut v);
    assert!((1_250..2_000).contains(&v.capacity()), "{}", v.capacity());
}

#[test]
fn a_forgotten_member_leaves_no_trace_and_is_news_again() {
    let t0 = Instant::now();
    let mut c = core_with(t0, 1, &[2, 3]);
    c.handle_message(
        t0,
        2,
        gossip(Payload::Gossip, vec![update(3, 0, State::Suspect, Some(2))]),
    );
    assert_eq!(c.member(&3).map(|m| m.state), Some(State::Suspect));
    while c.poll_event().is_some() {}
    assert!(c.forget(&3));
    assert!(!c.forget(&3));
    c.check_table();
    assert_eq!(c.member(&3), None);
    assert_eq!(c.live_members(), 1);
    assert!(c.poll_event().is_none(), "forgetting is silent");
    // No suspicion of it runs on: nothing about it happens later.
    advance(&mut c, t0 + Duration::from_secs(60));
    while let Some(e) = c.poll_event() {
        assert!(!matches!(e, Event::Failed { member: 3, .. }), "{e:?}");
    }
    // News of it later lists it again, as a new member.
    c.handle_message(
        t0 + Duration::from_secs(61),
        2,
        gossip(Payload::Gossip, vec![update(3, 1, State::Alive, None)]),
    );
    assert_eq!(c.member(&3).map(|m| m.state), Some(State::Alive));
    c.check_table();
}

#[test]
fn a_member_to_probe_soon_is_checked_beside_the_round_robin_order() {
    let t0 = Instant::now();
    let others: Vec<u32> = (2..=20).collect();
    let mut c = core_with(t0, 1, &others);
    let (first, first_seq, at) = first_probe(&mut c);
    let target = if first == 17 { 18 } else { 17 };
    let other = if first == 16 { 15 } else { 16 };
    assert!(c.probe_soon(at, &target));
    assert!(!c.probe_soon(at, &target), "queued once");
    assert!(!c.probe_soon(at, &99), "not a member");
    assert!(c.probe_soon(at, &other));
    // The check starts at once, beside the round-robin probe under way.
    let check_seq = match expect_message!(c, target, Payload::Ping { .. }).msg.payload {
        Payload::Ping { seq } => seq,
        _ => unreachable!(),
    };
    // The first member acks the round's probe, the checked one acks its check.
    c.handle_message(at, first, gossip(Payload::Ack { seq: first_seq }, vec![]));
    c.handle_message(at, target, gossip(Payload::Ack { seq: check_seq }, vec![]));
    // The next check waits for this one's window; the round-robin order keeps its pace: one
    // probe a window, to members other than those checked.
    let window = config().probe_window();
    let sent = advance(&mut c, at + window + Duration::from_millis(1));
    let pings: Vec<u32> = sent
        .iter()
        .filter(|t| matches!(t.msg.payload, Payload::Ping { .. }))
        .map(|t| t.to)
        .collect();
    assert_eq!(pings.len(), 2, "{sent:?}");
    assert!(pings.contains(&other), "{sent:?}");
    assert!(
        pings.iter().any(|p| *p != other && *p != target),
        "{sent:?}"
    );
    expect_no_event!(c, Event::Suspected { .. });
}

#[test]
fn a_suspicion_heard_from_others_makes_a_share_of_members_check_the_suspect() {
    // With (K + 1) / live members checking, a member of a cluster of at most K + 1 always does.
    let t0 = Instant::now();
    let mut c = core_with(t0, 1, &[2, 3, 4]);
    c.handle_message(
        t0,
        2,
        gossip(Payload::Gossip, vec![update(3, 0, State::Suspect, Some(2))]),
    );
    expect_event!(c, Event::Suspected { .. });
    expect_message!(c, 3, Payload::Ping { .. });
    // In a large cluster, about K + 1 of the members that hear of a suspicion check it.
    let others: Vec<u32> = (2..=101).collect();
    let mut checked = 0;
    for id in 0..400u32 {
        let mut c = Membership::new(
            t0,
            5000 + id,
            addrs(5000 + id),
            0,
            Config {
                rng_seed: Some(seed_of(id)),
                ..Config::lan()
            },
        )
        .unwrap();
        c.restore(others.iter().map(|&o| (o, Arc::from(addrs(o)))));
        c.handle_message(
            t0,
            2,
            gossip(Payload::Gossip, vec![update(3, 0, State::Suspect, Some(2))]),
        );
        while let Some(tx) = c.poll_transmit() {
            if tx.to == 3 && matches!(tx.msg.payload, Payload::Ping { .. }) {
                checked += 1;
            }
        }
    }
    // 400 members hearing it, each checking with probability 4 / 100: 16 expected.
    assert!((6..=30).contains(&checked), "{checked} of 400 checked");
}
