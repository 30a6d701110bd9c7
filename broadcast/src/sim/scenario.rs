//! Measured scenarios, shared by the scenario tests (small `n`, asserted bounds) and the
//! benchmark binary (`benches/broadcast_sim.rs`, large `n`, printed table).
//!
//! Every scenario starts `n` nodes that all know each other (through the simulated SWIM), lets
//! the overlay form and the tree settle under a warm-up stream, then measures a window. What is
//! measured per notice is exact: which nodes delivered it, when, and over how many hops.

use std::collections::HashSet;
use std::ops::Range;
use std::time::{Duration, Instant};

use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;

use super::{LinkModel, NodeId, Sim, percentile};
use crate::config::Config;
use crate::state::CatchupStats;

/// A stream of notices: who publishes, how fast, for how long.
#[derive(Debug, Clone, PartialEq)]
pub struct Stream {
    /// Number of publishing nodes (spread evenly over the ids).
    pub publishers: usize,
    /// Notices per second, all publishers together (they take turns).
    pub rate: f64,
    /// Stream before the measured window: the overlay forms and the tree settles.
    pub warmup: Duration,
    /// The measured window.
    pub window: Duration,
    /// Time after the window, without publishing, for the last notices to arrive.
    pub drain: Duration,
}

/// What a set of nodes delivered of a set of notices.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivered {
    /// Notices measured.
    pub notices: usize,
    /// (notice, node) pairs expected.
    pub expected: u64,
    /// Of those, delivered.
    pub delivered: u64,
    /// `delivered / expected`.
    pub reliability: f64,
    /// The smallest fraction of the notices that one node delivered.
    pub worst_node: f64,
    /// Per notice, the hops of its last delivery by gossip: p50 and p99 over notices.
    pub last_hop: Option<(f64, f64)>,
    /// Delivery latency from publication, over every delivery but the publisher's: p50, p99
    /// and max, in milliseconds.
    pub latency_ms: Option<(f64, f64, f64)>,
}

/// Publishes at `rate` notices per second for `d`, the `publishers` taking turns (crashed ones
/// skipped); returns the range of [`Sim::tracks`] published.
pub fn publish_for(sim: &mut Sim, publishers: &[NodeId], rate: f64, d: Duration) -> Range<usize> {
    let start = sim.tracks().len();
    let step = Duration::from_secs_f64(1.0 / rate);
    let until = sim.now() + d;
    let mut turn = start;
    while sim.now() + step <= until {
        sim.run_for(step);
        for _ in 0..publishers.len() {
            let p = publishers[turn % publishers.len()];
            turn += 1;
            if sim.is_up(p) {
                sim.publish(p);
                break;
            }
        }
    }
    sim.run_until(until);
    start..sim.tracks().len()
}

/// `count` node ids spread evenly over `0..n`.
pub fn spread(n: usize, count: usize) -> Vec<NodeId> {
    let count = count.clamp(1, n);
    (0..count).map(|i| (i * n / count) as NodeId).collect()
}

/// What `nodes` delivered of the tracks in `range`.
pub fn delivered(sim: &Sim, range: Range<usize>, nodes: &[NodeId]) -> Delivered {
    let tracks = &sim.tracks()[range];
    let set: HashSet<NodeId> = nodes.iter().copied().collect();
    let mut per_node = vec![0u64; sim.len()];
    let mut delivered = 0u64;
    let mut hops = Vec::new();
    let mut latency = Vec::new();
    for t in tracks {
        let mut last: Option<u32> = None;
        for d in &t.deliveries {
            if !set.contains(&d.node) {
                continue;
            }
            delivered += 1;
            per_node[d.node as usize] += 1;
            if let Some(h) = d.hops {
                last = Some(last.map_or(h, |l| l.max(h)));
            }
            if d.node != t.node {
                latency.push((d.at - t.at).as_secs_f64() * 1000.0);
            }
        }
        if let Some(h) = last {
            hops.push(f64::from(h));
        }
    }
    let expected = (tracks.len() * nodes.len()) as u64;
    let worst = nodes
        .iter()
        .map(|&n| per_node[n as usize])
        .min()
        .unwrap_or(0);
    let last_hop = percentile(&mut hops, 0.5).zip(percentile(&mut hops, 0.99));
    let latency_ms = match (
        percentile(&mut latency, 0.5),
        percentile(&mut latency, 0.99),
        percentile(&mut latency, 1.0),
    ) {
        (Some(a), Some(b), Some(c)) => Some((a, b, c)),
        _ => None,
    };
    Delivered {
        notices: tracks.len(),
        expected,
        delivered,
        reliability: if expected == 0 {
            1.0
        } else {
            delivered as f64 / expected as f64
        },
        worst_node: if tracks.is_empty() {
            1.0
        } else {
            worst as f64 / tracks.len() as f64
        },
        last_hop,
        latency_ms,
    }
}

/// A network of `n` nodes that all know each other, after `settle` of virtual time.
pub fn network(seed: u64, n: usize, config: &Config, link: LinkModel) -> Sim {
    let mut sim = Sim::new(seed, config.clone(), link);
    sim.add_nodes(n);
    sim.add_all_members();
    sim
}

/// Measurements of a stream over a stable network (or a lossy one).
#[derive(Debug, Clone, PartialEq)]
pub struct StableReport {
    /// Deliveries of the window's notices by every node.
    pub delivered: Delivered,
    /// Relative message redundancy over the window and drain: Gossip received per delivery,
    /// minus one.
    pub rmr: f64,
    /// Control bytes (everything but Gossip and Notices) per node per second.
    pub control_bytes_per_node_s: f64,
    /// Payload bytes (Gossip and Notices) per node per second.
    pub payload_bytes_per_node_s: f64,
    /// Gaps reported during the window.
    pub gaps: u64,
    /// Mean active view size at the end.
    pub mean_active: f64,
    /// Live pairs whose active views disagree at the end.
    pub asymmetric: usize,
}

/// Runs `stream` over `n` nodes and measures its window.
pub fn stable(
    seed: u64,
    n: usize,
    config: &Config,
    link: LinkModel,
    stream: &Stream,
) -> StableReport {
    let mut sim = network(seed, n, config, link);
    let publishers = spread(n, stream.publishers);
    publish_for(&mut sim, &publishers, stream.rate, stream.warmup);
    sim.reset_counters();
    let range = publish_for(&mut sim, &publishers, stream.rate, stream.window);
    sim.run_for(stream.drain);
    let secs = (stream.window + stream.drain).as_secs_f64();
    let all: Vec<NodeId> = sim.live_nodes();
    let views = sim.core_stats().views;
    StableReport {
        delivered: delivered(&sim, range, &all),
        rmr: sim.stats.rmr(),
        control_bytes_per_node_s: sim.stats.control_bytes() as f64 / n as f64 / secs,
        payload_bytes_per_node_s: sim.stats.payload_bytes() as f64 / n as f64 / secs,
        gaps: sim.stats.gaps,
        mean_active: views.active as f64 / all.len() as f64,
        asymmetric: sim.asymmetric_links().len(),
    }
}

/// Measurements of a mass crash during a stream.
#[derive(Debug, Clone, PartialEq)]
pub struct CrashReport {
    /// Nodes crashed.
    pub crashed: usize,
    /// Deliveries, by the survivors, of the notices published from one second before the crash
    /// to the end of the window.
    pub delivered: Delivered,
    /// Gaps reported after the crash.
    pub gaps: u64,
}

/// Runs `stream` over `n` nodes and crashes a random `fraction` of them (publishers spared)
/// at the start of the window.
pub fn crash(
    seed: u64,
    n: usize,
    fraction: f64,
    config: &Config,
    link: LinkModel,
    stream: &Stream,
) -> CrashReport {
    let mut sim = network(seed, n, config, link);
    let publishers = spread(n, stream.publishers);
    publish_for(&mut sim, &publishers, stream.rate, stream.warmup);
    let crash_at = sim.now();
    let first = sim
        .tracks()
        .iter()
        .position(|t| crash_at - t.at <= Duration::from_secs(1))
        .unwrap_or(sim.tracks().len());
    let mut rng = StdRng::seed_from_u64(seed ^ 0xc4a5);
    let mut others: Vec<NodeId> = (0..n as NodeId)
        .filter(|i| !publishers.contains(i))
        .collect();
    others.shuffle(&mut rng);
    let count = ((n as f64 * fraction).round() as usize).min(others.len());
    sim.reset_counters();
    for &v in &others[..count] {
        sim.crash(v);
    }
    let range = publish_for(&mut sim, &publishers, stream.rate, stream.window);
    sim.run_for(stream.drain);
    let live = sim.live_nodes();
    CrashReport {
        crashed: count,
        delivered: delivered(&sim, first..range.end, &live),
        gaps: sim.stats.gaps,
    }
}

/// A partition scenario: `feeds` publishers publish once at the start; then `active_per_side`
/// publishers on each side stream throughout, across a 50/50 split of `split_for` that heals.
#[derive(Debug, Clone, PartialEq)]
pub struct PartitionSpec {
    /// Feeds that exist (each publishes once at the start).
    pub feeds: usize,
    /// Feeds that keep publishing, per side.
    pub active_per_side: usize,
    /// Notices per second, all active publishers together.
    pub rate: f64,
    /// Stream before the split.
    pub warmup: Duration,
    /// Pause of the stream just before the split. A notice still on its way when the split
    /// comes (being grafted, say) can miss one side while the next one, already in flight,
    /// reaches it; that side then skips the first as a gap after `gap_timeout`, and stores it
    /// undelivered when it arrives after healing. A pause of a second lets the tree finish
    /// first; zero measures that boundary effect ([`PartitionReport::late`]).
    pub quiet: Duration,
    /// How long the split lasts.
    pub split_for: Duration,
    /// Stream after healing.
    pub after: Duration,
    /// Time after the stream for the last notices to arrive.
    pub drain: Duration,
}

/// Measurements of a partition that heals.
#[derive(Debug, Clone, PartialEq)]
pub struct PartitionReport {
    /// Deliveries of every notice (from the start to the end) by every node.
    pub delivered: Delivered,
    /// Notices published during the split.
    pub split_notices: usize,
    /// From healing until every node delivered every notice published during the split;
    /// `None` if some never were.
    pub heal_to_all: Option<Duration>,
    /// Catch-up counters of every node from healing to the end.
    pub catchup: CatchupStats,
    /// Feeds that exist.
    pub feeds: usize,
    /// Feeds that changed during the split.
    pub feeds_changed: usize,
    /// Gaps reported from healing to the end.
    pub gaps: u64,
    /// (notice, node) pairs stored but never delivered: skipped as a gap, or arrived after a
    /// later notice of their feed set the node's position.
    pub late: u64,
}

/// Runs a partition scenario over `n` nodes.
pub fn partition(
    seed: u64,
    n: usize,
    config: &Config,
    link: LinkModel,
    spec: &PartitionSpec,
) -> PartitionReport {
    let mut sim = network(seed, n, config, link);
    let publishers = spread(n, spec.feeds);
    let mut rng = StdRng::seed_from_u64(seed ^ 0x5e11);
    let mut order: Vec<NodeId> = (0..n as NodeId).collect();
    order.shuffle(&mut rng);
    let (a, b) = order.split_at(n / 2);
    let side_a: HashSet<NodeId> = a.iter().copied().collect();
    let mut active: Vec<NodeId> = publishers
        .iter()
        .copied()
        .filter(|p| side_a.contains(p))
        .take(spec.active_per_side)
        .collect();
    active.extend(
        publishers
            .iter()
            .copied()
            .filter(|p| !side_a.contains(p))
            .take(spec.active_per_side),
    );
    // The overlay forms first: a feed's first notice sets its position at every node, so one
    // published before any link exists can reach some nodes after their second one.
    sim.run_for(Duration::from_secs(2));
    // Every feed once, then the stream.
    let spacing = Duration::from_millis(5);
    for &p in &publishers {
        sim.run_for(spacing);
        sim.publish(p);
    }
    publish_for(&mut sim, &active, spec.rate, spec.warmup);
    sim.run_for(spec.quiet);
    sim.partition(&[a, b]);
    let split = publish_for(&mut sim, &active, spec.rate, spec.split_for);
    let heal_at: Instant = sim.now();
    let before = sim.core_stats().catchup;
    sim.reset_counters();
    sim.heal();
    publish_for(&mut sim, &active, spec.rate, spec.after);
    sim.run_for(spec.drain);
    let all = sim.live_nodes();
    let after = sim.core_stats().catchup;
    let mut heal_to_all = Some(Duration::ZERO);
    for t in &sim.tracks()[split.clone()] {
        let last = t.deliveries.iter().map(|d| d.at).max();
        if t.deliveries.len() < all.len() {
            heal_to_all = None;
            break;
        }
        if let (Some(h), Some(l)) = (heal_to_all, last) {
            heal_to_all = Some(h.max(l.saturating_duration_since(heal_at)));
        }
    }
    let mut late = 0;
    for t in sim.tracks() {
        for &node in &all {
            if !t.delivered_by(node) && sim.node(node).is_some_and(|c| c.contains(&t.id)) {
                late += 1;
            }
        }
    }
    PartitionReport {
        late,
        delivered: delivered(&sim, 0..sim.tracks().len(), &all),
        split_notices: split.len(),
        heal_to_all,
        catchup: catchup_diff(&after, &before),
        feeds: publishers.len(),
        feeds_changed: active.len(),
        gaps: sim.stats.gaps,
    }
}

fn catchup_diff(a: &CatchupStats, b: &CatchupStats) -> CatchupStats {
    CatchupStats {
        clocks_sent: a.clocks_sent - b.clocks_sent,
        clocks_received: a.clocks_received - b.clocks_received,
        exchanges: a.exchanges - b.exchanges,
        first_exchanges: a.first_exchanges - b.first_exchanges,
        feeds_named: a.feeds_named - b.feeds_named,
        feeds_named_first: a.feeds_named_first - b.feeds_named_first,
        feeds_named_delta: a.feeds_named_delta - b.feeds_named_delta,
        notices_sent: a.notices_sent - b.notices_sent,
        bytes: a.bytes - b.bytes,
    }
}
