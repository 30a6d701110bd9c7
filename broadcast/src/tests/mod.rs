//! Scenario tests on the simulator, at small `n` with fixed seeds, asserting bounds.
//!
//! Every simulated run prints its seed (`broadcast sim seed: N`) so a failure can be replayed.
//! Beyond what each test asserts, the simulator itself panics if a node delivers a notice
//! twice, delivers or relays an invalid one, or lets a table outgrow its bound.

use std::time::Duration;

use crate::config::Config;
use crate::message::{Message, Notice};
use crate::sim::scenario::{self, PartitionSpec, Stream};
use crate::sim::{self, LinkModel, NodeId};

fn lan() -> Config {
    Config::lan()
}

fn stream(publishers: usize, rate: f64, window: u64, drain: u64) -> Stream {
    Stream {
        publishers,
        rate,
        warmup: Duration::from_secs(5),
        window: Duration::from_secs(window),
        drain: Duration::from_secs(drain),
    }
}

#[test]
fn stable_network_delivers_everything_once_in_order() {
    let r = scenario::stable(1, 40, &lan(), LinkModel::lan(), &stream(4, 10.0, 10, 3));
    let d = &r.delivered;
    assert!(d.notices >= 90, "{r:?}");
    assert_eq!(d.delivered, d.expected, "{r:?}");
    assert_eq!(r.gaps, 0, "{r:?}");
    assert_eq!(r.asymmetric, 0, "active views are symmetric: {r:?}");
    // 40 nodes: target ceil(log2 40) + 1 = 7, and a node accepts one more.
    assert!((6.0..=8.0).contains(&r.mean_active), "{r:?}");
    let (_, p99, _) = d.latency_ms.unwrap();
    assert!(
        p99 < 100.0,
        "eager paths deliver in a few hops of 1-5 ms: {r:?}"
    );
}

#[test]
fn duplicates_stop_once_the_tree_settles() {
    // One publisher: the eager links settle into its spanning tree.
    let r = scenario::stable(2, 60, &lan(), LinkModel::lan(), &stream(1, 10.0, 10, 2));
    assert_eq!(r.delivered.delivered, r.delivered.expected, "{r:?}");
    assert!(r.rmr <= 0.02, "RMR {} after warm-up: {r:?}", r.rmr);
    // Several publishers share the tree.
    let r = scenario::stable(3, 60, &lan(), LinkModel::lan(), &stream(6, 10.0, 10, 2));
    assert_eq!(r.delivered.delivered, r.delivered.expected, "{r:?}");
    assert!(r.rmr <= 0.1, "RMR {} after warm-up: {r:?}", r.rmr);
}

#[test]
fn ten_percent_loss_every_live_node_delivers_everything() {
    let link = LinkModel {
        loss: 0.1,
        ..LinkModel::lan()
    };
    // The drain leaves time for pulls (every 5 s) to repair what both paths lost.
    let r = scenario::stable(4, 40, &lan(), link, &stream(4, 10.0, 10, 12));
    assert_eq!(r.delivered.delivered, r.delivered.expected, "{r:?}");
    assert_eq!(r.gaps, 0, "{r:?}");
}

#[test]
fn twenty_percent_crash_during_a_stream() {
    let s = Stream {
        publishers: 5,
        rate: 20.0,
        warmup: Duration::from_secs(5),
        window: Duration::from_secs(10),
        drain: Duration::from_secs(5),
    };
    let r = scenario::crash(5, 50, 0.2, &lan(), LinkModel::lan(), &s);
    assert_eq!(r.crashed, 10);
    assert_eq!(r.delivered.delivered, r.delivered.expected, "{r:?}");
    assert_eq!(r.delivered.worst_node, 1.0, "{r:?}");
    let (_, _, max) = r.delivered.latency_ms.unwrap();
    assert!(max <= 5000.0, "{r:?}");
}

#[test]
fn partition_heals_and_catchup_names_only_changed_feeds() {
    let spec = PartitionSpec {
        feeds: 20,
        active_per_side: 2,
        rate: 10.0,
        warmup: Duration::from_secs(5),
        quiet: Duration::from_secs(1),
        split_for: Duration::from_secs(20),
        after: Duration::from_secs(10),
        drain: Duration::from_secs(5),
    };
    let r = scenario::partition(6, 40, &lan(), LinkModel::lan(), &spec);
    assert_eq!(r.delivered.delivered, r.delivered.expected, "{r:?}");
    assert!(r.split_notices >= 190, "{r:?}");
    let heal = r
        .heal_to_all
        .expect("every split notice delivered everywhere");
    assert!(heal <= Duration::from_secs(10), "{r:?}");
    assert_eq!(r.gaps, 0, "{r:?}");
    // Links that come back exchange only the feeds that changed since they went down: on
    // average about the feeds that changed, far from all of them. (A peer dropped while the
    // overlay formed, before any notice, has a record from then: an exchange with it names
    // every feed, rightly.)
    let c = &r.catchup;
    let delta = c.exchanges - c.first_exchanges;
    assert!(delta > 0, "some links came back: {r:?}");
    assert!(
        c.feeds_named_delta * 2 <= delta * 3 * r.feeds_changed as u64,
        "{r:?}"
    );
    assert_eq!(
        c.feeds_named_first,
        c.first_exchanges * r.feeds as u64,
        "a first exchange names every feed: {r:?}"
    );
}

/// Two runs of one seed agree exactly: hash maps (whose order differs between instances, even
/// in one process) must not decide what the core sends.
#[test]
fn a_run_is_a_function_of_its_seed() {
    let spec = PartitionSpec {
        feeds: 20,
        active_per_side: 2,
        rate: 10.0,
        warmup: Duration::from_secs(5),
        quiet: Duration::from_secs(1),
        split_for: Duration::from_secs(20),
        after: Duration::from_secs(10),
        drain: Duration::from_secs(5),
    };
    let first = scenario::partition(6, 40, &lan(), LinkModel::lan(), &spec);
    for _ in 0..3 {
        let again = scenario::partition(6, 40, &lan(), LinkModel::lan(), &spec);
        assert_eq!(again, first);
    }
}

#[test]
fn invalid_notice_is_never_delivered_or_relayed() {
    let mut sim = scenario::network(7, 20, &lan(), LinkModel::lan());
    sim.record_events = true;
    sim.run_for(Duration::from_secs(3));
    let good = sim::sign(sim::feed_of(0), 1, b"payload");
    let mut bad = good.clone();
    bad.body[0] ^= 1;
    let forged = Notice {
        body: b"no tag".to_vec(),
        ..good.clone()
    };
    for to in 1..6 as NodeId {
        sim.inject(
            0,
            to,
            &Message::Gossip {
                notice: bad.clone(),
                round: 0,
            },
        );
        sim.inject(
            0,
            to,
            &Message::Notices {
                notices: vec![forged.clone()],
            },
        );
    }
    sim.run_for(Duration::from_secs(10));
    // The simulator panics if any node delivered or sent them; each receiver reported both.
    let events = sim.take_events();
    assert_eq!(events.len(), 10, "{events:?}");
    assert_eq!(sim.stats.invalid, 10);
    assert!(
        (0..20)
            .filter_map(|i| sim.node(i))
            .all(|c| !c.contains(&good.id()))
    );
}
