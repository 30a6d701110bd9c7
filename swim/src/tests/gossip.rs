//! Dedicated gossip rounds against refutations: the simulator runs that showed refutations
//! starving, and the tests that keep them from starving again.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::message::{Address, Credential, Message, Payload, State, Update};
use crate::sim::scenario;
use crate::sim::{LinkModel, NodeId, Sim};
use crate::state::{Event, Membership, Transmit};

/// The LAN preset with dedicated gossip rounds of 3 members every 200 ms, whatever the preset's
/// own choice.
fn gossiping() -> Config {
    Config {
        gossip_interval: Duration::from_millis(200),
        gossip_fanout: 3,
        ..Config::lan()
    }
}

/// Seed 1, n = 48, 10% loss for ten minutes: with rounds spending the piggyback budget and
/// skipping suspected members, three healthy members were declared dead. In each case a member
/// that had heard a suspicion was itself suspected by everyone (so skipped by every round) for
/// the second during which the refutation went round, and by then every queue had spent the
/// refutation: neither probes nor acks carried it again, and its suspicion timed out.
#[test]
fn gossip_rounds_do_not_starve_refutations() {
    let report = scenario::false_positives(
        1,
        48,
        0.10,
        Duration::from_secs(600),
        &gossiping(),
        LinkModel::lan(),
    );
    assert_eq!(report.failed_events, 0, "{report:?}");
    assert!(
        report.refutations > 0,
        "loss caused no suspicion: {report:?}"
    );
}

fn addrs(id: u32) -> Vec<Address> {
    vec![Address(format!("/sim/{id}").into_bytes())]
}

/// A core `id` (seeded, gossip rounds on) that knows `others` as alive.
fn core_with(t0: Instant, id: u32, others: &[u32]) -> Membership<u32> {
    let config = Config {
        rng_seed: Some([3; 32]),
        ..gossiping()
    };
    let mut c = Membership::new(t0, id, addrs(id), 0, config).unwrap();
    c.restore(others.iter().map(|&o| (o, Arc::from(addrs(o)))));
    c
}

fn suspect(member: u32, by: u32) -> Update<u32> {
    Update {
        member,
        incarnation: 0,
        state: State::Suspect,
        addrs: Vec::new(),
        by: Some(by),
        credential: Credential::default(),
    }
}

fn gossip(updates: Vec<Update<u32>>) -> Message<u32> {
    Message {
        payload: Payload::Gossip,
        gossip: updates,
    }
}

fn drain(c: &mut Membership<u32>) -> Vec<Transmit<u32>> {
    std::iter::from_fn(|| c.poll_transmit()).collect()
}

/// A member that learns it is suspected sends its refutation at once to its suspector and to a
/// few others, not only on its next messages.
#[test]
fn a_refutation_goes_straight_to_the_suspector() {
    let t0 = Instant::now();
    let mut c = core_with(t0, 1, &[2, 3, 4, 5, 6, 7]);
    c.handle_message(t0, 3, gossip(vec![suspect(1, 2)]));
    assert_eq!(c.incarnation(), 1);
    let sent = drain(&mut c);
    let refuting: Vec<u32> = sent
        .iter()
        .filter(|t| {
            t.msg
                .gossip
                .iter()
                .any(|u| u.member == 1 && u.incarnation == 1 && u.state == State::Alive)
        })
        .map(|t| t.to)
        .collect();
    assert!(refuting.contains(&2), "not to the suspector: {sent:#?}");
    assert!(
        refuting.len() >= 3,
        "not through several members: {sent:#?}"
    );
}

/// A push-pull relays a suspicion under its first suspector's name: its receiver, which holds
/// the same suspicion, must not count the sender as one more independent confirmation.
#[test]
fn a_push_pull_names_the_first_suspector() {
    let t0 = Instant::now();
    let mut c = core_with(t0, 1, &[2, 3, 4]);
    c.handle_message(t0, 3, gossip(vec![suspect(4, 2)]));
    drain(&mut c);
    let ask = Message {
        payload: Payload::PushPull {
            join: false,
            reply: true,
            members: Vec::new(),
        },
        gossip: Vec::new(),
    };
    c.handle_message(t0, 3, ask);
    let sent = drain(&mut c);
    let members = sent
        .iter()
        .find_map(|t| match &t.msg.payload {
            Payload::PushPull { members, .. } if t.to == 3 => Some(members),
            _ => None,
        })
        .expect("a push-pull reply");
    let entry = members.iter().find(|u| u.member == 4).expect("member 4");
    assert_eq!((entry.state, entry.by), (State::Suspect, Some(2)));
}

/// A gossip round also goes to suspected members, and does not spend the piggyback: probes of
/// other members still carry the news after the rounds are done with it.
#[test]
fn gossip_rounds_reach_suspects_and_leave_the_piggyback() {
    let t0 = Instant::now();
    let mut c = core_with(t0, 1, &[2, 4]);
    // The round timer started with the core: the suspicion arrives when a round is due.
    let t1 = t0 + Duration::from_secs(5);
    c.handle_message(t1, 3, gossip(vec![suspect(2, 3)]));
    drain(&mut c);
    c.handle_timeout(t1);
    let sent = drain(&mut c);
    assert!(
        sent.iter()
            .any(|t| t.to == 2 && t.msg.payload == Payload::Gossip && !t.msg.gossip.is_empty()),
        "no round to the suspect: {sent:#?}"
    );
    // A second later the rounds are long done with it (a suspicion rides one round); a probe of
    // member 4 (never the suspect, whose probes carry the suspicion anyway) still carries it.
    // Member 4 answers its probes; the suspect, checked at once, does not.
    let mut at = t1;
    let mut piggybacked = false;
    for _ in 0..200 {
        at += Duration::from_millis(100);
        c.handle_timeout(at);
        for t in drain(&mut c) {
            if let (4, Payload::Ping { seq }) = (t.to, &t.msg.payload) {
                piggybacked |=
                    at >= t1 + Duration::from_secs(1) && t.msg.gossip.iter().any(|u| u.member == 2);
                let ack = gossip(vec![]);
                c.handle_message(
                    at,
                    4,
                    Message {
                        payload: Payload::Ack { seq: *seq },
                        ..ack
                    },
                );
            }
        }
    }
    assert!(
        piggybacked,
        "no probe carried the suspicion after the rounds"
    );
}

/// One transmission of news about a member: `(at, from, to, incarnation, state, delivered,
/// gossip round)`.
type Sighting = (Instant, NodeId, NodeId, u64, State, bool, bool);

/// A ping or ping-req aimed at a crashed member: `(at, from, target, direct)`.
type Probing = (Instant, NodeId, NodeId, bool);

/// Runs `n` members at `loss` for `secs` and, for every false failure, prints how the
/// suspicion and its refutation travelled. Diagnostic only.
/// The environment variable `name` parsed, or `default` when unset or unreadable.
fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

#[test]
#[ignore = "diagnostic: cargo test -p shoal-swim --release starvation_trace -- --ignored --nocapture"]
fn starvation_trace() {
    let seed: u64 = env("SEED", 42);
    let n: usize = env("N", 100);
    let secs: u64 = env("SECS", 600);
    let loss: f64 = env("LOSS", 0.1);
    let fanout: usize = env("FANOUT", 3);
    let config = Config {
        gossip_fanout: fanout,
        ..gossiping()
    };
    let run = |watch: HashSet<NodeId>| {
        let mut sim = Sim::new(
            seed,
            config.clone(),
            LinkModel {
                loss,
                ..LinkModel::lan()
            },
        );
        let seen: Rc<RefCell<HashMap<NodeId, Vec<Sighting>>>> = Rc::default();
        let kinds: Rc<RefCell<HashMap<&'static str, (u64, u64)>>> = Rc::default();
        let sink = seen.clone();
        let kinds_sink = kinds.clone();
        let pings: Rc<RefCell<Vec<Probing>>> = Rc::default();
        let pings_sink = pings.clone();
        let crashes_seen: u32 = env("CRASHES", 0);
        sim.trace = Some(Box::new(move |at, from, to, msg, delivered| {
            if (1..=crashes_seen).contains(&to) {
                let direct = matches!(msg.payload, Payload::Ping { .. });
                let req = matches!(msg.payload, Payload::PingReq { target, .. } if target == to);
                if direct || req {
                    pings_sink.borrow_mut().push((at, from, to, direct));
                }
            }
            let kind = msg.payload.kind();
            let size = crate::message::to_vec(msg, 1 << 20).map_or(0, |v| v.len() as u64);
            let k = &mut *kinds_sink.borrow_mut();
            let e = k.entry(kind).or_default();
            e.0 += 1;
            e.1 += size;
            let round = msg.payload == Payload::Gossip;
            for u in &msg.gossip {
                if watch.contains(&u.member) {
                    sink.borrow_mut().entry(u.member).or_default().push((
                        at,
                        from,
                        to,
                        u.incarnation,
                        u.state,
                        delivered,
                        round,
                    ));
                }
            }
        }));
        sim.add_converged(n);
        let start = sim.now();
        let mut events = Vec::new();
        // CRASHES=k crashes members 1, 2, ... k, one every 30 s from the start, to look at
        // false failures around real ones.
        let crashes: u32 = env("CRASHES", 0);
        for i in 0..secs / 10 {
            if i % 3 == 2 && ((i / 3) as u32) < crashes {
                sim.crash((i / 3) as u32 + 1);
            }
            sim.run_for(Duration::from_secs(10));
            events.extend(sim.take_events());
        }
        let msgs = sim.stats.messages;
        sim.trace = None;
        for victim in 1..=crashes_seen.min(n as u32 - 1) {
            let crashed_at = start + Duration::from_secs(20 + 30 * u64::from(victim - 1));
            let after = |t: Instant| t >= crashed_at;
            let first_ping = pings
                .borrow()
                .iter()
                .find(|p| p.2 == victim && p.3 && after(p.0))
                .map(|p| (p.0 - crashed_at).as_secs_f64());
            let first_sus = events
                .iter()
                .find(|e| {
                    after(e.at)
                        && matches!(e.event, Event::Suspected { member, .. } if member == victim)
                })
                .map(|e| (e.at - crashed_at).as_secs_f64());
            println!(
                "victim {victim}: first probe {first_ping:.2?} s, first suspicion {first_sus:.2?} s"
            );
        }
        let per = (n as f64) * secs as f64;
        let mut k: Vec<_> = kinds
            .borrow()
            .iter()
            .map(|(k, v)| (*k, v.0 as f64 / per, v.1 as f64 / per))
            .collect();
        k.sort_by(|a, b| a.0.cmp(b.0));
        println!("per node per s (kind, msgs, bytes): {k:.2?}");
        let seen = seen.borrow().clone();
        (start, events, seen, msgs)
    };
    let crashes: u32 = env("CRASHES", 0);
    let crashed = |m: NodeId| (1..=crashes).contains(&m);
    let (_, events, _, msgs) = run(HashSet::new());
    let failed: Vec<_> = events
        .iter()
        .filter_map(|e| match e.event {
            Event::Failed {
                member,
                incarnation,
                ..
            } if !crashed(member) => Some((e.at, e.node, member, incarnation)),
            _ => None,
        })
        .collect();
    let suspicions = events
        .iter()
        .filter(|e| matches!(e.event, Event::Suspected { .. }))
        .count();
    println!(
        "seed {seed} n {n} loss {loss} fanout {fanout}: {} failed events, {suspicions} \
         suspicions, {:.2} msgs/node/s",
        failed.len(),
        msgs as f64 / (n as f64 * secs as f64)
    );
    let watch: HashSet<NodeId> = failed.iter().map(|f| f.2).collect();
    // The rerun is deterministic but starts at another real instant: use its own times.
    let (start, events2, seen, _) = run(watch);
    assert_eq!(events2.len(), events.len(), "the rerun is deterministic");
    let events = events2;
    let failed: Vec<_> = events
        .iter()
        .filter_map(|e| match e.event {
            Event::Failed {
                member,
                incarnation,
                ..
            } if !crashed(member) => Some((e.at, e.node, member, incarnation)),
            _ => None,
        })
        .collect();
    let t = |i: Instant| (i - start).as_secs_f64();
    for &(at, x, m, inc) in failed.iter().take(12) {
        let sus = events.iter().find(|e| {
            e.node == x
                && e.at <= at
                && matches!(e.event, Event::Suspected { member, incarnation, .. }
                    if member == m && incarnation == inc)
        });
        let Some(sus) = sus else { continue };
        let Event::Suspected { by, .. } = sus.event else {
            continue;
        };
        let news = &seen[&m];
        // Earliest sighting of the refutation anywhere.
        let refuted = news
            .iter()
            .filter(|s| s.3 > inc && s.4 == State::Alive)
            .map(|s| s.0)
            .min();
        // Who held the first suspicion: its origin, and every member that got it.
        let first_sus = news
            .iter()
            .filter(|s| s.3 == inc && s.4 == State::Suspect && s.1 == by)
            .map(|s| s.0)
            .min();
        let got_refutation_before: Vec<_> = news
            .iter()
            .filter(|s| s.2 == x && s.3 > inc && s.0 <= at)
            .collect();
        let sent_suspicion = news
            .iter()
            .filter(|s| s.1 == x && s.3 == inc && s.4 == State::Suspect)
            .collect::<Vec<_>>();
        let sent_after_refute = sent_suspicion
            .iter()
            .filter(|s| refuted.is_some_and(|r| s.0 >= r))
            .count();
        let refute_tx: Vec<_> = news
            .iter()
            .filter(|s| s.3 == inc + 1 && s.4 == State::Alive && s.0 <= at)
            .collect();
        let senders: HashSet<NodeId> = refute_tx.iter().map(|s| s.1).collect();
        let receivers: HashSet<NodeId> = refute_tx.iter().filter(|s| s.5).map(|s| s.2).collect();
        let by_m = refute_tx.iter().filter(|s| s.1 == m).count();
        let by_m_round = refute_tx.iter().filter(|s| s.1 == m && s.6).count();
        let rounds = refute_tx.iter().filter(|s| s.6).count();
        println!(
            "member {m}@{inc} failed by {x} at {:.2}: suspected by {by} (origin first sent at \
             {:?}), {x} suspected at {:.2}; refutation first seen {:?}; {x} got it {} times \
             before; {x} sent the suspicion {} times ({} after the refutation, last at {:?}); \
             refutation sent {} times ({} in gossip rounds) by {} members to {} members ({} by \
             {m} itself, {} in rounds)",
            t(at),
            first_sus.map(t),
            t(sus.at),
            refuted.map(t),
            got_refutation_before.len(),
            sent_suspicion.len(),
            sent_after_refute,
            sent_suspicion.last().map(|s| t(s.0)),
            refute_tx.len(),
            rounds,
            senders.len(),
            receivers.len(),
            by_m,
            by_m_round,
        );
        let mut sus_events: Vec<_> = events
            .iter()
            .filter_map(|e| match e.event {
                Event::Suspected {
                    member,
                    incarnation,
                    by,
                    ..
                } if member == m && incarnation == inc => Some((t(e.at), e.node, by)),
                _ => None,
            })
            .collect();
        sus_events.truncate(8);
        println!("  suspected events (at, node, by): {sus_events:.2?}");
        let firsts: Vec<_> = news
            .iter()
            .filter(|s| s.3 == inc && s.4 == State::Suspect)
            .take(6)
            .map(|s| (t(s.0), s.1, s.2, s.5, s.6))
            .collect();
        println!("  first suspicion transmissions (at, from, to, delivered, round): {firsts:.2?}");
        let to_m: Vec<_> = news
            .iter()
            .filter(|s| s.2 == m && s.3 == inc && s.4 != State::Alive)
            .take(6)
            .map(|s| (t(s.0), s.1, s.5, s.6))
            .collect();
        println!("  bad news sent to {m} (at, from, delivered, round): {to_m:.2?}");
        let about_x: Vec<_> = events
            .iter()
            .filter(|e| e.at + Duration::from_secs(30) >= sus.at && e.at <= at)
            .filter_map(|e| match e.event {
                Event::Suspected { member, by, .. } if member == x => {
                    Some((t(e.at), e.node, "suspect", by))
                }
                Event::Refuted { member, .. } if member == x => {
                    Some((t(e.at), e.node, "refuted", x))
                }
                _ => None,
            })
            .collect();
        let n_sus = about_x.iter().filter(|a| a.2 == "suspect").count();
        let n_ref = about_x.iter().filter(|a| a.2 == "refuted").count();
        println!(
            "  {x} itself in the 30 s before: {n_sus} suspected, {n_ref} refuted events; first              {:.2?}, last {:.2?}",
            about_x.first(),
            about_x.last()
        );
    }
}

/// Pooled first-suspicion medians with and without gossip rounds over many seeds. Diagnostic.
#[test]
#[ignore = "diagnostic: cargo test -p shoal-swim --release first_suspicion_sweep -- --ignored --nocapture"]
fn first_suspicion_sweep() {
    for n in [16, 48] {
        for fanout in [0, 3] {
            let config = Config {
                gossip_fanout: fanout,
                ..Config::lan()
            };
            let mut first = Vec::new();
            for seed in 1..=60 {
                let r = scenario::crash_detection(
                    seed,
                    n,
                    5,
                    &config,
                    LinkModel::lan(),
                    Duration::from_secs(120),
                );
                first.extend(r.first_suspicion);
            }
            let count = first.len();
            let p50 = crate::sim::percentile(&mut first, 0.5).unwrap();
            let mean = first.iter().sum::<f64>() / count as f64;
            println!("n {n} fanout {fanout}: {count} crashes, p50 {p50:.3}, mean {mean:.3}");
        }
    }
}

/// A suspicion short of `K` confirmations asks the suspect and a few members once more, one
/// probe timeout before its deadline; an answer carrying the refutation ends it.
#[test]
fn a_suspicion_checks_once_before_it_expires() {
    let t0 = Instant::now();
    let start = || {
        let mut c = core_with(t0, 1, &[2, 3, 4, 5, 6]);
        c.handle_message(t0, 3, gossip(vec![suspect(2, 3)]));
        drain(&mut c);
        c
    };
    // Runs the timeouts due at `at`; members other than 2 ack their pings at once.
    let step = |c: &mut Membership<u32>, at: Instant| {
        c.handle_timeout(at);
        let sent = drain(c);
        for t in &sent {
            if let (to, Payload::Ping { seq }) = (t.to, &t.msg.payload)
                && to != 2
            {
                let ack = Message {
                    payload: Payload::Ack { seq: *seq },
                    gossip: Vec::new(),
                };
                c.handle_message(at, to, ack);
            }
        }
        drain(c);
        sent
    };
    // Left alone (member 2 answers nothing), the core declares member 2 dead at some deadline.
    let mut alone = start();
    let mut deadline = None;
    while deadline.is_none() {
        let at = alone.poll_timeout().unwrap();
        assert!(at < t0 + Duration::from_secs(120), "member 2 never failed");
        step(&mut alone, at);
        while let Some(e) = alone.poll_event() {
            if matches!(e, Event::Failed { member: 2, .. }) {
                deadline = Some(at);
            }
        }
    }
    let deadline = deadline.unwrap();
    // The same core, same seed: one probe timeout before that deadline it asks.
    let lead = alone.config().probe_timeout;
    let mut c = start();
    let mut asked = Vec::new();
    loop {
        let at = c.poll_timeout().unwrap();
        if at > deadline - lead {
            break;
        }
        let sent = step(&mut c, at);
        if at == deadline - lead {
            asked = sent;
        }
    }
    let names = |t: &Transmit<u32>| {
        t.msg
            .gossip
            .iter()
            .any(|u| u.member == 2 && u.state == State::Suspect)
    };
    assert!(
        asked
            .iter()
            .any(|t| t.to == 2 && matches!(t.msg.payload, Payload::Ping { .. }) && names(t)),
        "the suspect was not asked: {asked:#?}"
    );
    let others = asked
        .iter()
        .filter(|t| t.to != 2 && t.msg.payload == Payload::Gossip && names(t))
        .count();
    assert!(others >= 2, "members asked: {others}: {asked:#?}");
    // The suspect's answer carries its refutation: no death.
    let refutation = Update {
        member: 2,
        incarnation: 1,
        state: State::Alive,
        addrs: addrs(2),
        by: None,
        credential: Credential::default(),
    };
    let answer = Message {
        payload: Payload::Ack { seq: 0 },
        gossip: vec![refutation],
    };
    c.handle_message(deadline - lead + Duration::from_millis(5), 2, answer);
    c.handle_timeout(deadline + Duration::from_millis(1));
    assert_eq!(c.member(&2).map(|m| m.state), Some(State::Alive));
}
