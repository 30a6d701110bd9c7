//! Unit tests of the core, driven by hand.

use std::time::{Duration, Instant};

use super::*;
use crate::AcceptAll;

type Core = Broadcast<u32, AcceptAll>;

fn config() -> Config {
    Config {
        rng_seed: Some([7; 32]),
        rotate_interval: None,
        // Pulls only where a test asks for them.
        pull_interval: Duration::from_secs(3600),
        pull_window: Duration::from_secs(3600),
        ..Config::lan()
    }
}

fn core(t0: Instant, id: u32) -> Core {
    Broadcast::new(t0, id, config(), AcceptAll).unwrap()
}

fn core_cfg(t0: Instant, id: u32, config: Config) -> Core {
    Broadcast::new(t0, id, config, AcceptAll).unwrap()
}

fn notice(p: u8, seq: u64) -> Notice {
    Notice {
        publisher: vec![p; 8],
        seq,
        body: vec![p; 16],
    }
}

fn id(p: u8, seq: u64) -> NoticeId {
    notice(p, seq).id()
}

fn drain<V: Verify>(c: &mut Broadcast<u32, V>) -> Vec<Transmit<u32>> {
    std::iter::from_fn(|| c.poll_transmit()).collect()
}

fn events<V: Verify>(c: &mut Broadcast<u32, V>) -> Vec<Event<u32>> {
    std::iter::from_fn(|| c.poll_event()).collect()
}

fn delivered<V: Verify>(c: &mut Broadcast<u32, V>) -> Vec<(u8, u64)> {
    events(c)
        .into_iter()
        .filter_map(|e| match e {
            Event::Deliver(n) => Some((n.publisher[0], n.seq)),
            _ => None,
        })
        .collect()
}

/// Makes `peers` active neighbors of `c` by their asking, and drains everything.
fn connect<V: Verify>(c: &mut Broadcast<u32, V>, now: Instant, peers: &[u32]) {
    for &p in peers {
        c.handle_message(
            now,
            p,
            Message::Neighbor {
                high_priority: false,
            },
        );
        assert!(c.is_active(&p), "{p} was refused");
    }
    drain(c);
    events(c);
}

/// A core with a fixed active view size `k` (so it accepts `k + 1`), `peers` as neighbors.
fn core_with_neighbors(t0: Instant, peers: &[u32]) -> Core {
    let mut c = core_cfg(
        t0,
        0,
        Config {
            active_size: Some(peers.len().max(1)),
            ..config()
        },
    );
    connect(&mut c, t0, peers);
    c
}

/// Runs timeouts of `c` until `until`, returning every transmit.
fn advance<V: Verify>(c: &mut Broadcast<u32, V>, until: Instant) -> Vec<Transmit<u32>> {
    let mut out = Vec::new();
    while let Some(t) = c.poll_timeout() {
        if t > until {
            break;
        }
        c.handle_timeout(t);
        out.extend(drain(c));
    }
    c.handle_timeout(until);
    out.extend(drain(c));
    out
}

fn gossip(n: Notice, round: u32) -> Message {
    Message::Gossip { notice: n, round }
}

// ----- overlay -----

#[test]
fn fills_the_active_view_first_request_high_priority() {
    let t0 = Instant::now();
    let mut c = core(t0, 0);
    for p in 1..=7 {
        c.add_member(t0, p);
    }
    // Seven members and ourselves: ceil(log2 8) + 1 = 4.
    assert_eq!(c.target(), 4);
    c.handle_timeout(t0);
    let sent = drain(&mut c);
    let requests: Vec<_> = sent
        .iter()
        .filter_map(|t| match t.msg {
            Message::Neighbor { high_priority } => Some((t.to, high_priority)),
            _ => None,
        })
        .collect();
    assert_eq!(requests.len(), 4, "{sent:?}");
    assert_eq!(
        requests.iter().filter(|r| r.1).count(),
        1,
        "one high priority"
    );
    assert!(
        requests[0].1,
        "the first request, sent with an empty view, is high priority"
    );
    // An accepted request makes a symmetric neighbor and opens the catch-up.
    let to = requests[1].0;
    c.handle_message(t0, to, Message::NeighborReply { accepted: true });
    assert!(c.is_active(&to) && c.is_eager(&to));
    expect_event!(c, Event::NeighborUp(p) if *p == to);
    expect_message!(c, to, Message::Clock { reply: true, .. });
}

#[test]
fn full_view_refuses_low_priority_and_evicts_for_high() {
    let t0 = Instant::now();
    // Target 2, so it accepts 3.
    let mut c = core_with_neighbors(t0, &[1, 2]);
    connect(&mut c, t0, &[3]);
    c.handle_message(
        t0,
        4,
        Message::Neighbor {
            high_priority: false,
        },
    );
    expect_message!(c, 4, Message::NeighborReply { accepted: false });
    assert!(!c.is_active(&4));
    c.handle_message(
        t0,
        5,
        Message::Neighbor {
            high_priority: true,
        },
    );
    let sent = drain(&mut c);
    assert!(
        sent.iter()
            .any(|t| t.to == 5 && t.msg == Message::NeighborReply { accepted: true })
    );
    let evicted: Vec<_> = sent
        .iter()
        .filter(|t| t.msg == Message::Disconnect)
        .map(|t| t.to)
        .collect();
    assert_eq!(evicted.len(), 1, "{sent:?}");
    assert!(!c.is_active(&evicted[0]) && c.is_active(&5));
    assert_eq!(c.active_view().count(), 3);
    assert_eq!(c.stats().neighbors.evictions, 1);
}

#[test]
fn timed_out_request_is_replaced_by_another_candidate() {
    let t0 = Instant::now();
    let mut c = core_cfg(
        t0,
        0,
        Config {
            active_size: Some(1),
            ..config()
        },
    );
    c.add_member(t0, 1);
    c.add_member(t0, 2);
    c.handle_timeout(t0);
    let first = match drain(&mut c).as_slice() {
        [t] if matches!(t.msg, Message::Neighbor { .. }) => t.to,
        other => panic!("{other:?}"),
    };
    // Nothing before the timeout...
    let sent = advance(&mut c, t0 + Duration::from_millis(999));
    assert!(
        !sent
            .iter()
            .any(|t| matches!(t.msg, Message::Neighbor { .. })),
        "{sent:?}"
    );
    // ...then the other member.
    let sent = advance(&mut c, t0 + Duration::from_millis(1000));
    let second = sent
        .iter()
        .find(|t| matches!(t.msg, Message::Neighbor { .. }))
        .map(|t| t.to)
        .expect("a new request");
    assert_ne!(first, second);
    assert_eq!(c.stats().neighbors.timeouts, 1);
}

#[test]
fn failed_neighbor_is_replaced_at_once_and_asked_first_when_back() {
    let t0 = Instant::now();
    let mut c = core_cfg(
        t0,
        0,
        Config {
            active_size: Some(2),
            rotate_interval: Some(Duration::from_secs(60)),
            ..config()
        },
    );
    for p in 1..=5 {
        c.add_member(t0, p);
    }
    connect(&mut c, t0, &[1, 2]);
    c.link_down(t0, 1);
    assert!(!c.is_active(&1));
    expect_event!(c, Event::NeighborDown(1));
    let sent = drain(&mut c);
    let req = sent
        .iter()
        .find(|t| matches!(t.msg, Message::Neighbor { .. }))
        .expect("replaced in the same call");
    assert_ne!(req.to, 1);
    assert!(
        !c.passive_view().any(|p| *p == 1),
        "a lost peer is not a candidate"
    );
    c.handle_message(t0, req.to, Message::NeighborReply { accepted: true });
    drain(&mut c);
    // SWIM drops it, then reports it back (a healed partition): it is asked first, at once.
    let t1 = t0 + Duration::from_secs(5);
    c.remove_member(t1, 1);
    c.add_member(t1, 1);
    let sent = advance(&mut c, t1);
    assert!(
        sent.iter()
            .any(|t| t.to == 1 && matches!(t.msg, Message::Neighbor { .. })),
        "{sent:?}"
    );
    // Once it accepts, a random old neighbor makes room.
    c.handle_message(t1, 1, Message::NeighborReply { accepted: true });
    assert!(c.is_active(&1));
    assert_eq!(c.active_view().count(), 2);
    let sent = drain(&mut c);
    assert_eq!(
        sent.iter().filter(|t| t.msg == Message::Disconnect).count(),
        1
    );
}

#[test]
fn disconnect_moves_the_peer_to_passive() {
    let t0 = Instant::now();
    let mut c = core(t0, 0);
    c.add_member(t0, 1);
    connect(&mut c, t0, &[1]);
    c.handle_message(t0, 1, Message::Disconnect);
    assert!(!c.is_active(&1));
    assert!(c.passive_view().any(|p| *p == 1));
    expect_event!(c, Event::NeighborDown(1));
    // It is not asked again at once.
    assert!(
        !drain(&mut c)
            .iter()
            .any(|t| matches!(t.msg, Message::Neighbor { .. }))
    );
}

#[test]
fn messages_from_a_non_neighbor_get_disconnect() {
    let t0 = Instant::now();
    let mut c = core(t0, 0);
    c.handle_message(
        t0,
        9,
        Message::IHave {
            ids: vec![id(1, 1)],
            round: 0,
        },
    );
    expect_message!(c, 9, Message::Disconnect);
    c.handle_message(t0, 9, gossip(notice(1, 1), 0));
    expect_message!(c, 9, Message::Disconnect);
    // The notice itself is still taken: it is verified like any other.
    assert!(c.contains(&id(1, 1)));
    assert_eq!(c.stats().drops.not_neighbor, 2);
    assert_eq!(c.queue_lengths().missing, 0);
}

// ----- plumtree -----

#[test]
fn publish_pushes_to_eager_and_announces_to_lazy() {
    let t0 = Instant::now();
    let mut c = core_with_neighbors(t0, &[1, 2]);
    c.handle_message(t0, 2, Message::Prune);
    assert!(c.is_eager(&1) && !c.is_eager(&2));
    c.publish(t0, notice(9, 1)).unwrap();
    assert_eq!(delivered(&mut c), vec![(9, 1)]);
    let sent = drain(&mut c);
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0].to, 1);
    assert_eq!(sent[0].msg, gossip(notice(9, 1), 0));
    // The announcement waits for the flush.
    let sent = advance(&mut c, t0 + Duration::from_millis(99));
    assert!(sent.is_empty(), "{sent:?}");
    let sent = advance(&mut c, t0 + Duration::from_millis(100));
    assert_eq!(
        sent,
        vec![Transmit {
            to: 2,
            msg: Message::IHave {
                ids: vec![id(9, 1)],
                round: 0
            }
        }]
    );
    assert_eq!(c.publish(t0, notice(9, 1)), Err(PublishError::Duplicate));
    assert!(matches!(
        c.publish(t0, notice(9, 0)),
        Err(PublishError::Refused(Rejection::Malformed(_)))
    ));
}

#[test]
fn new_gossip_is_relayed_with_the_next_round_and_duplicates_prune() {
    let t0 = Instant::now();
    let mut c = core_with_neighbors(t0, &[1, 2, 3]);
    c.handle_message(t0, 3, Message::Prune);
    c.handle_message(t0, 1, gossip(notice(9, 1), 4));
    assert_eq!(delivered(&mut c), vec![(9, 1)]);
    assert_eq!(c.hops(&id(9, 1)), Some(5));
    let sent = drain(&mut c);
    assert_eq!(
        sent,
        vec![Transmit {
            to: 2,
            msg: gossip(notice(9, 1), 5)
        }]
    );
    let sent = advance(&mut c, t0 + Duration::from_millis(100));
    assert!(
        sent.iter()
            .any(|t| t.to == 3 && matches!(&t.msg, Message::IHave { round: 5, .. }))
    );
    assert!(
        !sent.iter().any(|t| t.to == 1),
        "nothing back to the sender"
    );
    // The same notice from 2: duplicate, 2 becomes lazy and is told.
    c.handle_message(t0, 2, gossip(notice(9, 1), 7));
    expect_message!(c, 2, Message::Prune);
    assert!(!c.is_eager(&2));
    assert!(delivered(&mut c).is_empty());
    let s = c.stats();
    assert_eq!((s.duplicates, s.prunes_sent, s.gossip_received), (1, 1, 2));
    // A lazy peer that pushes something new becomes eager again.
    c.handle_message(t0, 2, gossip(notice(9, 2), 0));
    assert!(c.is_eager(&2));
}

#[test]
fn missing_notice_is_grafted_from_announcers_in_turn() {
    let t0 = Instant::now();
    let mut c = core_with_neighbors(t0, &[1, 2, 3]);
    c.handle_message(t0, 1, Message::Prune);
    c.handle_message(t0, 2, Message::Prune);
    let ihave = |r| Message::IHave {
        ids: vec![id(9, 1)],
        round: r,
    };
    c.handle_message(t0, 1, ihave(2));
    c.handle_message(t0 + Duration::from_millis(50), 2, ihave(3));
    assert_eq!(c.queue_lengths().missing, 1);
    // The graft timer: graft_timeout plus up to half of it of jitter.
    let tg = c.poll_timeout().unwrap();
    assert!(
        tg >= t0 + Duration::from_millis(300) && tg < t0 + Duration::from_millis(450),
        "{:?}",
        tg - t0
    );
    let sent = advance(&mut c, tg - Duration::from_micros(1));
    assert!(!sent.iter().any(|t| matches!(t.msg, Message::Graft { .. })));
    let sent = advance(&mut c, tg);
    assert_eq!(
        sent,
        vec![Transmit {
            to: 1,
            msg: Message::Graft {
                ids: vec![id(9, 1)]
            }
        }]
    );
    assert!(c.is_eager(&1), "the grafted announcer is eager again");
    let sent = advance(&mut c, tg + Duration::from_millis(150));
    assert_eq!(
        sent,
        vec![Transmit {
            to: 2,
            msg: Message::Graft {
                ids: vec![id(9, 1)]
            }
        }]
    );
    // The answer ends it: no more grafts, tables empty.
    c.handle_message(tg + Duration::from_millis(160), 2, gossip(notice(9, 1), 3));
    assert_eq!(delivered(&mut c), vec![(9, 1)]);
    let q = c.queue_lengths();
    assert_eq!((q.missing, q.graft_timers, q.announcers), (0, 0, 0));
    let sent = advance(&mut c, t0 + Duration::from_secs(2));
    assert!(!sent.iter().any(|t| matches!(t.msg, Message::Graft { .. })));
    assert_eq!(c.stats().graft_ids_sent, 2);
}

#[test]
fn a_graft_asks_its_announcer_for_everything_it_announced() {
    let t0 = Instant::now();
    let mut c = core_with_neighbors(t0, &[1, 2]);
    c.handle_message(t0, 1, Message::Prune);
    c.handle_message(t0, 2, Message::Prune);
    c.handle_message(
        t0,
        1,
        Message::IHave {
            ids: vec![id(9, 1)],
            round: 0,
        },
    );
    // Announced later, by 2 first, then by 1.
    let t1 = t0 + Duration::from_millis(200);
    for p in [2, 1] {
        c.handle_message(
            t1,
            p,
            Message::IHave {
                ids: vec![id(9, 2)],
                round: 0,
            },
        );
    }
    let tg = c.poll_timeout().unwrap();
    let sent = advance(&mut c, tg);
    // One graft, to 1, for both: no second link is made eager for the younger one.
    assert_eq!(
        sent,
        vec![Transmit {
            to: 1,
            msg: Message::Graft {
                ids: vec![id(9, 1), id(9, 2)]
            }
        }]
    );
    assert!(c.is_eager(&1) && !c.is_eager(&2));
}

#[test]
fn a_duplicate_answering_our_graft_does_not_prune() {
    let t0 = Instant::now();
    let mut c = core_with_neighbors(t0, &[1, 2]);
    c.handle_message(t0, 2, Message::Prune);
    c.handle_message(
        t0,
        2,
        Message::IHave {
            ids: vec![id(9, 1)],
            round: 0,
        },
    );
    let tg = c.poll_timeout().unwrap();
    advance(&mut c, tg);
    // The notice comes from 1 first; the answer from 2 is a duplicate, and 2 stays eager.
    c.handle_message(tg, 1, gossip(notice(9, 1), 0));
    c.handle_message(tg, 2, gossip(notice(9, 1), 0));
    assert!(c.is_eager(&2));
    assert!(!drain(&mut c).iter().any(|t| t.msg == Message::Prune));
}

#[test]
fn gossip_before_the_graft_timeout_cancels_the_graft() {
    let t0 = Instant::now();
    let mut c = core_with_neighbors(t0, &[1, 2]);
    c.handle_message(
        t0,
        2,
        Message::IHave {
            ids: vec![id(9, 1)],
            round: 0,
        },
    );
    c.handle_message(t0 + Duration::from_millis(10), 1, gossip(notice(9, 1), 0));
    let sent = advance(&mut c, t0 + Duration::from_secs(1));
    assert!(!sent.iter().any(|t| matches!(t.msg, Message::Graft { .. })));
    assert_eq!(c.queue_lengths().missing, 0);
}

#[test]
fn graft_is_answered_with_the_notices_held() {
    let t0 = Instant::now();
    let mut c = core_with_neighbors(t0, &[1, 2]);
    c.handle_message(t0, 2, Message::Prune);
    c.publish(t0, notice(9, 1)).unwrap();
    drain(&mut c);
    c.handle_message(
        t0,
        2,
        Message::Graft {
            ids: vec![id(9, 1), id(9, 2)],
        },
    );
    assert!(c.is_eager(&2));
    let sent = drain(&mut c);
    assert_eq!(
        sent,
        vec![Transmit {
            to: 2,
            msg: gossip(notice(9, 1), 0)
        }]
    );
}

#[test]
fn tree_optimization_swaps_a_long_eager_path_for_a_short_lazy_one() {
    let t0 = Instant::now();
    let mut c = core_cfg(
        t0,
        0,
        Config {
            active_size: Some(2),
            optimization_threshold: Some(3),
            ..config()
        },
    );
    connect(&mut c, t0, &[1, 2]);
    c.handle_message(t0, 2, Message::Prune);
    // Round 6 over the eager link, round 2 announced over the lazy one.
    c.handle_message(t0, 1, gossip(notice(9, 1), 6));
    drain(&mut c);
    c.handle_message(
        t0,
        2,
        Message::IHave {
            ids: vec![id(9, 1)],
            round: 2,
        },
    );
    let sent = drain(&mut c);
    assert!(sent.contains(&Transmit {
        to: 2,
        msg: Message::Graft { ids: vec![] }
    }));
    assert!(sent.contains(&Transmit {
        to: 1,
        msg: Message::Prune
    }));
    assert!(c.is_eager(&2) && !c.is_eager(&1));
    assert_eq!(c.stats().optimizations, 1);
}

#[test]
fn invalid_notices_are_dropped_reported_and_never_relayed() {
    let t0 = Instant::now();
    let verifier = |n: &Notice| {
        if n.body.starts_with(b"bad") {
            Err("bad signature".to_string())
        } else {
            Ok(())
        }
    };
    let mut c = Broadcast::new(
        t0,
        0,
        Config {
            active_size: Some(2),
            max_notice_bytes: 100,
            ..config()
        },
        verifier,
    )
    .unwrap();
    connect(&mut c, t0, &[1, 2]);
    let bad = Notice {
        publisher: vec![9; 8],
        seq: 1,
        body: b"bad body".to_vec(),
    };
    c.handle_message(t0, 1, gossip(bad.clone(), 0));
    c.handle_message(
        t0,
        1,
        Message::Notices {
            notices: vec![
                bad,
                Notice {
                    publisher: vec![9; 8],
                    seq: 2,
                    body: vec![0; 101],
                },
            ],
        },
    );
    let ev = events(&mut c);
    assert!(matches!(
        &ev[..],
        [
            Event::Invalid {
                from: 1,
                reason: Rejection::Invalid(_)
            },
            Event::Invalid {
                from: 1,
                reason: Rejection::Invalid(_)
            },
            Event::Invalid {
                from: 1,
                reason: Rejection::Oversized { what: "body", .. }
            }
        ]
    ));
    let sent = advance(&mut c, t0 + Duration::from_secs(1));
    assert!(
        !sent.iter().any(|t| matches!(
            t.msg,
            Message::Gossip { .. } | Message::IHave { .. } | Message::Notices { .. }
        )),
        "{sent:?}"
    );
    assert!(!c.contains(&NoticeId {
        publisher: vec![9; 8],
        seq: 1
    }));
    let r = c.stats().rejected;
    assert_eq!((r.invalid, r.oversized, r.malformed), (2, 1, 0));
}

// ----- feeds and ordering -----

#[test]
fn a_new_feed_starts_at_the_lowest_notice_seen_while_it_settles() {
    let t0 = Instant::now();
    let mut c = core_with_neighbors(t0, &[1]);
    // Sequence number 1 starts a feed at once.
    c.handle_message(t0, 1, gossip(notice(8, 1), 0));
    assert_eq!(delivered(&mut c), vec![(8, 1)]);
    // Any other first notice waits for lower ones.
    c.handle_message(t0, 1, gossip(notice(9, 6), 0));
    c.handle_message(t0 + Duration::from_millis(300), 1, gossip(notice(9, 5), 0));
    advance(&mut c, t0 + Duration::from_millis(999));
    assert!(delivered(&mut c).is_empty());
    advance(&mut c, t0 + Duration::from_secs(1));
    assert_eq!(delivered(&mut c), vec![(9, 5), (9, 6)]);
    // A lower one after that is late.
    c.handle_message(t0 + Duration::from_secs(2), 1, gossip(notice(9, 4), 0));
    assert!(delivered(&mut c).is_empty());
    assert_eq!(c.stats().late, 1);
}

#[test]
fn delivery_holds_notices_behind_a_gap_until_it_fills() {
    let t0 = Instant::now();
    let mut c = core_with_neighbors(t0, &[1]);
    for s in 1..=5 {
        c.handle_message(t0, 1, gossip(notice(9, s), 0));
    }
    assert_eq!(delivered(&mut c).len(), 5);
    c.handle_message(t0, 1, gossip(notice(9, 7), 0));
    c.handle_message(t0, 1, gossip(notice(9, 8), 0));
    assert!(delivered(&mut c).is_empty(), "7 and 8 wait for 6");
    c.handle_message(t0, 1, gossip(notice(9, 6), 0));
    assert_eq!(delivered(&mut c), vec![(9, 6), (9, 7), (9, 8)]);
    assert_eq!(c.queue_lengths().gap_timers, 0);
}

#[test]
fn an_open_gap_is_grafted_from_the_sender_of_the_held_notice() {
    let t0 = Instant::now();
    let mut c = core_with_neighbors(t0, &[1, 2]);
    c.handle_message(t0, 1, gossip(notice(9, 1), 0));
    c.handle_message(t0, 2, gossip(notice(9, 4), 0));
    assert_eq!(delivered(&mut c), vec![(9, 1)]);
    drain(&mut c);
    let sent = advance(&mut c, t0 + Duration::from_millis(299));
    assert!(sent.is_empty(), "{sent:?}");
    let sent = advance(&mut c, t0 + Duration::from_millis(450));
    assert_eq!(
        sent,
        vec![Transmit {
            to: 2,
            msg: Message::Graft {
                ids: vec![id(9, 2), id(9, 3)]
            }
        }]
    );
    // Unanswered: a random neighbor is asked a retry later.
    let sent = advance(&mut c, t0 + Duration::from_millis(600));
    assert!(
        matches!(&sent[..], [Transmit { msg: Message::Graft { ids }, .. }] if ids.len() == 2),
        "{sent:?}"
    );
    c.handle_message(t0 + Duration::from_millis(610), 2, gossip(notice(9, 2), 0));
    c.handle_message(t0 + Duration::from_millis(610), 2, gossip(notice(9, 3), 0));
    assert_eq!(delivered(&mut c), vec![(9, 2), (9, 3), (9, 4)]);
    let sent = advance(&mut c, t0 + Duration::from_secs(3));
    assert!(
        !sent.iter().any(|t| matches!(t.msg, Message::Graft { .. })),
        "{sent:?}"
    );
    assert_eq!(c.stats().gap_repairs, 2);
    assert_eq!(c.queue_lengths().gap_repairs, 0);
}

#[test]
fn each_hole_gets_its_own_gap_timeout() {
    let t0 = Instant::now();
    let mut c = core_with_neighbors(t0, &[1]);
    c.handle_message(t0, 1, gossip(notice(9, 1), 0));
    c.handle_message(t0, 1, gossip(notice(9, 3), 0));
    c.handle_message(t0, 1, gossip(notice(9, 5), 0));
    // The first hole fills late; the second one waits a whole gap timeout from then.
    let t1 = t0 + Duration::from_millis(1500);
    c.handle_message(t1, 1, gossip(notice(9, 2), 0));
    assert_eq!(delivered(&mut c), vec![(9, 1), (9, 2), (9, 3)]);
    advance(&mut c, t1 + Duration::from_millis(1999));
    assert!(delivered(&mut c).is_empty());
    advance(&mut c, t1 + Duration::from_secs(2));
    assert_eq!(delivered(&mut c), vec![(9, 5)]);
}

#[test]
fn a_gap_that_does_not_fill_is_skipped_and_reported() {
    let t0 = Instant::now();
    let mut c = core_with_neighbors(t0, &[1]);
    c.handle_message(t0, 1, gossip(notice(9, 1), 0));
    c.handle_message(t0, 1, gossip(notice(9, 3), 0));
    c.handle_message(t0 + Duration::from_millis(500), 1, gossip(notice(9, 6), 0));
    assert_eq!(delivered(&mut c), vec![(9, 1)]);
    advance(&mut c, t0 + Duration::from_millis(1999));
    assert!(delivered(&mut c).is_empty());
    advance(&mut c, t0 + Duration::from_secs(2));
    let ev = events(&mut c);
    let expect = vec![
        Event::Gap {
            publisher: vec![9; 8],
            from: 2,
            to: 2,
        },
        Event::Deliver(notice(9, 3)),
        Event::Gap {
            publisher: vec![9; 8],
            from: 4,
            to: 5,
        },
        Event::Deliver(notice(9, 6)),
    ];
    assert_eq!(ev, expect);
    // A skipped notice that arrives later is never delivered.
    c.handle_message(t0 + Duration::from_secs(3), 1, gossip(notice(9, 2), 0));
    assert!(delivered(&mut c).is_empty());
    let s = c.stats();
    assert_eq!((s.gaps, s.skipped, s.delivered), (2, 3, 3));
}

#[test]
fn too_many_held_notices_skip_the_gap_at_once() {
    let t0 = Instant::now();
    let mut c = core_cfg(
        t0,
        0,
        Config {
            active_size: Some(1),
            max_held: 3,
            ..config()
        },
    );
    connect(&mut c, t0, &[1]);
    c.handle_message(t0, 1, gossip(notice(9, 1), 0));
    for s in 3..=6 {
        c.handle_message(t0, 1, gossip(notice(9, s), 0));
    }
    assert_eq!(
        delivered(&mut c),
        vec![(9, 1), (9, 3), (9, 4), (9, 5), (9, 6)]
    );
    assert_eq!(c.stats().drops.held_overflow, 1);
}

#[test]
fn store_evicts_lowest_notices_and_least_recent_feeds() {
    let t0 = Instant::now();
    let mut c = core_cfg(
        t0,
        0,
        Config {
            max_notices_per_feed: 3,
            max_held: 2,
            max_feeds: 2,
            ..config()
        },
    );
    for s in 1..=5 {
        c.publish(t0, notice(1, s)).unwrap();
    }
    assert!(!c.contains(&id(1, 2)) && c.contains(&id(1, 3)));
    c.publish(t0, notice(2, 1)).unwrap();
    c.publish(t0, notice(3, 1)).unwrap();
    // Feed 1 changed least recently: forgotten.
    assert!(!c.contains(&id(1, 5)));
    assert_eq!(c.max_seq(&[1; 8]), 0);
    let q = c.queue_lengths();
    assert_eq!((q.feeds, q.notices), (2, 2));
    let d = c.stats().drops;
    assert_eq!((d.evicted_feeds, d.evicted_notices), (1, 5));
}

// ----- catch-up -----

#[test]
fn clock_names_every_feed_first_then_only_the_changed_ones() {
    let t0 = Instant::now();
    let mut c = core_with_neighbors(t0, &[]);
    for p in 1..=4 {
        c.publish(t0, notice(p, 1)).unwrap();
    }
    c.add_member(t0, 1);
    c.handle_timeout(t0);
    drain(&mut c);
    c.handle_message(t0, 1, Message::NeighborReply { accepted: true });
    let m = expect_message!(c, 1, Message::Clock { reply: true, .. });
    let Message::Clock { feeds, .. } = m.msg else {
        unreachable!()
    };
    assert_eq!(feeds.len(), 4);
    // The link goes down well after the exchange; two feeds change meanwhile.
    let t1 = t0 + Duration::from_secs(10);
    c.publish(t1, notice(2, 2)).unwrap();
    c.publish(t1, notice(3, 2)).unwrap();
    c.handle_message(t1 + Duration::from_secs(3), 1, Message::Prune);
    c.link_down(t1 + Duration::from_secs(3), 1);
    c.publish(t1 + Duration::from_secs(20), notice(4, 2))
        .unwrap();
    c.handle_message(
        t1 + Duration::from_secs(30),
        1,
        Message::NeighborReply { accepted: true },
    );
    let m = expect_message!(c, 1, Message::Clock { reply: true, .. });
    let Message::Clock { feeds, .. } = m.msg else {
        unreachable!()
    };
    // Only feed 4 changed since shortly before we last heard from 1.
    assert_eq!(
        feeds,
        vec![FeedSeq {
            publisher: vec![4; 8],
            max_seq: 2
        }]
    );
    let s = c.stats().catchup;
    assert_eq!(
        (s.first_exchanges, s.feeds_named_first, s.feeds_named),
        (1, 4, 5)
    );
}

#[test]
fn clock_is_answered_with_missing_notices_and_a_clock_asking_for_the_rest() {
    let t0 = Instant::now();
    let mut c = core_with_neighbors(t0, &[1]);
    for s in 1..=3 {
        c.publish(t0, notice(5, s)).unwrap();
    }
    c.publish(t0, notice(6, 1)).unwrap();
    drain(&mut c);
    c.handle_message(
        t0,
        1,
        Message::Clock {
            feeds: vec![
                FeedSeq {
                    publisher: vec![5; 8],
                    max_seq: 1,
                },
                FeedSeq {
                    publisher: vec![7; 8],
                    max_seq: 4,
                },
            ],
            reply: true,
        },
    );
    let sent = drain(&mut c);
    assert_eq!(
        sent[0],
        Transmit {
            to: 1,
            msg: Message::Notices {
                notices: vec![notice(5, 2), notice(5, 3)]
            }
        }
    );
    let Message::Clock { feeds, reply } = &sent[1].msg else {
        panic!("{sent:?}")
    };
    assert!(!reply);
    // Feed 7, where we are behind, first; then every feed (first exchange with 1).
    assert_eq!(
        feeds[0],
        FeedSeq {
            publisher: vec![7; 8],
            max_seq: 0
        }
    );
    assert_eq!(feeds.len(), 3);
    // Its answer makes progress but not all the way: we ask again for the rest.
    c.handle_message(
        t0,
        1,
        Message::Notices {
            notices: vec![notice(7, 1), notice(7, 2)],
        },
    );
    let m = expect_message!(c, 1, Message::Clock { reply: false, .. });
    assert_eq!(
        m.msg,
        Message::Clock {
            feeds: vec![FeedSeq {
                publisher: vec![7; 8],
                max_seq: 2
            }],
            reply: false
        }
    );
    // Caught up: no more asking.
    c.handle_message(
        t0,
        1,
        Message::Notices {
            notices: vec![notice(7, 3), notice(7, 4)],
        },
    );
    assert!(
        !drain(&mut c)
            .iter()
            .any(|t| matches!(t.msg, Message::Clock { .. }))
    );
    assert_eq!(c.queue_lengths().wants, 0);
}

#[test]
fn catchup_answer_is_bounded() {
    let t0 = Instant::now();
    let mut c = core_cfg(
        t0,
        0,
        Config {
            active_size: Some(1),
            max_catchup_notices: 2,
            ..config()
        },
    );
    connect(&mut c, t0, &[1]);
    for s in 1..=5 {
        c.publish(t0, notice(5, s)).unwrap();
    }
    drain(&mut c);
    c.handle_message(
        t0,
        1,
        Message::Clock {
            feeds: vec![FeedSeq {
                publisher: vec![5; 8],
                max_seq: 0,
            }],
            reply: false,
        },
    );
    let m = expect_message!(c, 1, Message::Notices { .. });
    assert_eq!(
        m.msg,
        Message::Notices {
            notices: vec![notice(5, 1), notice(5, 2)]
        }
    );
}

// ----- anti-entropy -----

#[test]
fn pull_is_answered_with_settled_notices_missing_from_the_filter() {
    let t0 = Instant::now();
    let mut c = core_with_neighbors(t0, &[1]);
    for s in 1..=3 {
        c.publish(t0, notice(5, s)).unwrap();
    }
    let fresh = t0 + Duration::from_secs(10);
    c.publish(fresh, notice(5, 4)).unwrap();
    drain(&mut c);
    let mut bloom = Bloom::for_items(10, 1024);
    bloom.insert(crate::bloom::hash_id(&id(5, 2)));
    let (bloom, hashes) = bloom.into_parts();
    c.handle_message(
        fresh + Duration::from_millis(100),
        1,
        Message::Pull { bloom, hashes },
    );
    let m = expect_message!(c, 1, Message::Notices { .. });
    // 2 is in the filter; 4 is too fresh (still on its way through the tree).
    assert_eq!(
        m.msg,
        Message::Notices {
            notices: vec![notice(5, 1), notice(5, 3)]
        }
    );
}

/// A core with one neighbor (1) that pulls every 5 s over a 30 s window.
fn pulling_core(t0: Instant) -> Core {
    let mut c = core_cfg(
        t0,
        0,
        Config {
            active_size: Some(1),
            pull_interval: Duration::from_secs(5),
            pull_window: Duration::from_secs(30),
            ..config()
        },
    );
    connect(&mut c, t0, &[1]);
    c
}

#[test]
fn pulls_go_to_a_neighbor_every_interval() {
    let t0 = Instant::now();
    let mut c = pulling_core(t0);
    c.publish(t0, notice(5, 1)).unwrap();
    let sent = advance(&mut c, t0 + Duration::from_secs(8));
    let pulls: Vec<_> = sent
        .iter()
        .filter(|t| matches!(t.msg, Message::Pull { .. }))
        .collect();
    // The first within one interval, the next ones every half to one and a half.
    assert!(!pulls.is_empty() && pulls.len() <= 3, "{pulls:?}");
    let Message::Pull { bloom, hashes } = &pulls[0].msg else {
        unreachable!()
    };
    let b = Bloom::from_parts(bloom.clone(), *hashes);
    assert!(b.contains(crate::bloom::hash_id(&id(5, 1))));
}

#[test]
fn a_quiet_node_pulls_once_a_window_and_the_first_notice_brings_the_interval_back() {
    let t0 = Instant::now();
    let mut c = pulling_core(t0);
    let pulls = |sent: &[Transmit<u32>]| {
        sent.iter()
            .filter(|t| matches!(t.msg, Message::Pull { .. }))
            .count()
    };
    // Nothing received: after the first pull, one every 15 to 45 s.
    let quiet = advance(&mut c, t0 + Duration::from_secs(300));
    assert!((6..=21).contains(&pulls(&quiet)), "{}", pulls(&quiet));
    // A notice arrives: pulls come every 2.5 to 7.5 s again while it is recent.
    let t1 = t0 + Duration::from_secs(300);
    c.handle_message(t1, 1, gossip(notice(5, 1), 0));
    let busy = advance(&mut c, t1 + Duration::from_secs(25));
    assert!((3..=11).contains(&pulls(&busy)), "{}", pulls(&busy));
}

// ----- bounds -----

#[test]
fn an_ihave_flood_from_one_peer_is_bounded() {
    let t0 = Instant::now();
    let mut c = core_cfg(
        t0,
        0,
        Config {
            active_size: Some(2),
            max_missing: 100,
            max_missing_per_peer: 40,
            ..config()
        },
    );
    connect(&mut c, t0, &[1, 2]);
    for batch in 0..10u64 {
        let ids = (1..=50).map(|s| id(9, batch * 50 + s)).collect();
        c.handle_message(t0, 1, Message::IHave { ids, round: 0 });
    }
    let q = c.queue_lengths();
    assert_eq!(q.missing, 40);
    assert_eq!(c.stats().drops.announcements, 460);
    // Another peer still has room.
    c.handle_message(
        t0,
        2,
        Message::IHave {
            ids: vec![id(8, 1)],
            round: 0,
        },
    );
    assert_eq!(c.queue_lengths().missing, 41);
}

#[test]
fn a_graft_flood_is_served_within_the_budget() {
    let t0 = Instant::now();
    let mut c = core_cfg(
        t0,
        0,
        Config {
            active_size: Some(1),
            max_graft_answers: 3,
            ..config()
        },
    );
    connect(&mut c, t0, &[1]);
    for s in 1..=10 {
        c.publish(t0, notice(5, s)).unwrap();
    }
    drain(&mut c);
    let ids: Vec<_> = (1..=10).map(|s| id(5, s)).collect();
    c.handle_message(t0, 1, Message::Graft { ids: ids.clone() });
    c.handle_message(t0, 1, Message::Graft { ids: ids.clone() });
    assert_eq!(drain(&mut c).len(), 3);
    assert_eq!(c.stats().drops.graft_answers, 17);
    // The budget renews at the next flush.
    advance(&mut c, t0 + Duration::from_millis(100));
    c.handle_message(t0 + Duration::from_millis(100), 1, Message::Graft { ids });
    assert_eq!(drain(&mut c).len(), 3);
}

#[test]
fn event_queue_drops_the_oldest() {
    let t0 = Instant::now();
    let mut c = core_cfg(
        t0,
        0,
        Config {
            max_event_queue: 16,
            ..config()
        },
    );
    for s in 1..=20 {
        c.publish(t0, notice(5, s)).unwrap();
    }
    let ev = events(&mut c);
    assert_eq!(ev.len(), 16);
    assert_eq!(ev[0], Event::Deliver(notice(5, 5)));
    assert_eq!(c.stats().drops.events, 4);
}

#[test]
fn transmit_queue_drops_new_transmits_when_full() {
    let t0 = Instant::now();
    let mut c = core_cfg(
        t0,
        0,
        Config {
            active_size: Some(1),
            max_transmit_queue: 16,
            ..config()
        },
    );
    connect(&mut c, t0, &[1]);
    for s in 1..=20 {
        c.publish(t0, notice(5, s)).unwrap();
    }
    assert_eq!(drain(&mut c).len(), 16);
    assert_eq!(c.stats().drops.transmits, 4);
}

#[test]
fn stats_count_bytes_per_kind() {
    let t0 = Instant::now();
    let mut c = core_with_neighbors(t0, &[1]);
    c.publish(t0, notice(5, 1)).unwrap();
    let sent = drain(&mut c);
    let len = message::encode(&sent[0].msg).len() as u64;
    let s = c.stats();
    assert_eq!(s.traffic.bytes[MessageKind::Gossip as usize], len);
    assert_eq!(s.traffic.payload_bytes(), len);
    assert_eq!(s.views.active, 1);
    assert_eq!(s.views.eager, 1);
}

#[test]
fn delivered_after_names_what_delivery_passed_never_what_waits_behind_a_gap() {
    let t0 = Instant::now();
    let mut c = core_with_neighbors(t0, &[1]);
    for seq in [1, 2, 3, 5] {
        c.handle_message(t0, 1, gossip(notice(9, seq), 0));
    }
    assert_eq!(delivered(&mut c), vec![(9, 1), (9, 2), (9, 3)]);
    let seqs = |c: &Core, after: u64, max: usize| -> Vec<u64> {
        c.delivered_after(&[9; 8], after, max)
            .iter()
            .map(|n| n.seq)
            .collect()
    };
    // 5 waits for 4: a subscriber resuming is not handed it out of order.
    assert_eq!(seqs(&c, 0, 10), vec![1, 2, 3]);
    assert_eq!(seqs(&c, 1, 10), vec![2, 3]);
    assert_eq!(seqs(&c, 1, 1), vec![2]);
    assert!(c.delivered_after(&[8; 8], 0, 10).is_empty());
    // Once the gap is given up on, 5 is passed too.
    let gap_timeout = c.config().gap_timeout;
    advance(&mut c, t0 + gap_timeout + Duration::from_millis(1));
    assert_eq!(seqs(&c, 3, 10), vec![5]);
}
