//! Measured scenarios, shared by the scenario tests (small `n`, asserted bounds) and the
//! benchmark binary (`benches/swim_sim.rs`, large `n`, printed table).
//!
//! Times are reported in probe periods: `max(probe_interval, 2 · probe_timeout)` of the config,
//! which is 1 s for the LAN preset.

use std::collections::HashSet;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use super::{LinkModel, NodeId, Sim, SimEvent};
use crate::config::Config;
use crate::message::State;
use crate::state::Event;

/// One probe period of `config`.
pub fn period(config: &Config) -> Duration {
    config.probe_window()
}

/// Lifeguard's worst-case time from a crash until every member marks it failed, in periods:
/// the crash is noticed by the end of the next probe window of some member (at most two
/// windows, the second because a round-robin round can end with it), then the suspicion runs
/// for at most `β · α · max(1, log10 n)` periods (no confirmation at all), and the death is
/// then gossiped: each member piggybacks it `λ · ceil(log10(n + 1))` times on about two
/// messages a period, so within that many periods every member has had it from someone.
pub fn crash_bound_periods(config: &Config, n: usize) -> f64 {
    let interval_periods = config.probe_interval.as_secs_f64() / period(config).as_secs_f64();
    let scale = (n as f64).log10().max(1.0);
    let suspicion = interval_periods
        * config.suspicion_alpha.get() as f64
        * scale
        * config.suspicion_beta.get() as f64;
    let gossip = config.retransmit_mult.get() as f64 * ((n + 1) as f64).log10().ceil();
    2.0 + suspicion + gossip
}

/// The same with the suspicion at its minimum, which Lifeguard reaches once `K` independent
/// confirmations arrived: the expected (not guaranteed) time for a cluster where many members
/// probe the dead one within the minimum timeout.
pub fn crash_expected_periods(config: &Config, n: usize) -> f64 {
    let interval_periods = config.probe_interval.as_secs_f64() / period(config).as_secs_f64();
    let scale = (n as f64).log10().max(1.0);
    let suspicion = interval_periods * config.suspicion_alpha.get() as f64 * scale;
    let gossip = config.retransmit_mult.get() as f64 * ((n + 1) as f64).log10().ceil();
    2.0 + suspicion + gossip
}

/// Crash detection measurements.
#[derive(Debug, Clone)]
pub struct CrashReport {
    /// Per crash: periods from the crash to the first suspicion anywhere.
    pub first_suspicion: Vec<f64>,
    /// Per crash: periods from the crash until every live member marked it failed.
    pub all_failed: Vec<f64>,
    /// Per crash: periods from the first member marking it failed until every live member did
    /// (how fast a death spreads).
    pub spread: Vec<f64>,
    /// Crashes not marked failed by every live member within the limit.
    pub undetected: usize,
    /// Failed events about members that had not crashed.
    pub false_failures: usize,
}

/// Builds a converged cluster of `n`, then crashes `crashes` distinct random members one after
/// the other, each at a random phase of the probe period, and measures how long until the first
/// suspicion and until every live member marked it failed (giving up after `limit`).
pub fn crash_detection(
    seed: u64,
    n: usize,
    crashes: usize,
    config: &Config,
    link: LinkModel,
    limit: Duration,
) -> CrashReport {
    let mut sim = Sim::new(seed, config.clone(), link);
    sim.check_views = n <= 2000;
    sim.add_converged(n);
    let p = period(config);
    sim.run_for(p * 5);
    sim.take_events();
    let mut rng = StdRng::seed_from_u64(seed ^ 0xc4a5);
    let mut order: Vec<NodeId> = (0..n as NodeId).collect();
    order.shuffle(&mut rng);
    let mut report = CrashReport {
        first_suspicion: Vec::new(),
        all_failed: Vec::new(),
        spread: Vec::new(),
        undetected: 0,
        false_failures: 0,
    };
    let mut crashed: HashSet<NodeId> = HashSet::new();
    for &victim in order.iter().take(crashes.min(n.saturating_sub(2))) {
        sim.run_for(p.mul_f64(rng.r#gen::<f64>()));
        let t0 = sim.now();
        sim.crash(victim);
        crashed.insert(victim);
        let live = n - crashed.len();
        let mut first = None;
        let mut failed: HashSet<NodeId> = HashSet::new();
        let mut earliest = None;
        let mut last = None;
        while failed.len() < live && sim.now() - t0 < limit {
            sim.run_for(Duration::from_millis(20));
            for SimEvent { at, node, event } in sim.take_events() {
                match event {
                    Event::Suspected { member, .. } if member == victim => {
                        first.get_or_insert(at - t0);
                    }
                    Event::Failed { member, .. } if member == victim && failed.insert(node) => {
                        earliest.get_or_insert(at - t0);
                        last = Some(at - t0);
                    }
                    Event::Failed { member, .. } if member == victim => {}
                    Event::Failed { member, .. } if !crashed.contains(&member) => {
                        report.false_failures += 1;
                    }
                    _ => {}
                }
            }
        }
        if let Some(f) = first {
            report
                .first_suspicion
                .push(f.as_secs_f64() / p.as_secs_f64());
        }
        match last {
            Some(l) if failed.len() >= live => {
                report.all_failed.push(l.as_secs_f64() / p.as_secs_f64());
                let e = earliest.unwrap_or(l);
                report.spread.push((l - e).as_secs_f64() / p.as_secs_f64());
            }
            _ => report.undetected += 1,
        }
    }
    report
}

/// False positive measurements.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FalsePositiveReport {
    /// Suspected events (any observer, any member): false suspicions, all refutable.
    pub suspicions: usize,
    /// Failed events: healthy members declared failed by someone.
    pub failed_events: usize,
    /// Distinct healthy members declared failed by at least one member.
    pub members_failed: usize,
    /// Refutations made by members.
    pub refutations: u64,
}

/// Runs a converged cluster of `n` healthy members with uniform `loss` for `duration` and
/// counts the false suspicions and failures.
pub fn false_positives(
    seed: u64,
    n: usize,
    loss: f64,
    duration: Duration,
    config: &Config,
    link: LinkModel,
) -> FalsePositiveReport {
    let mut sim = Sim::new(seed, config.clone(), LinkModel { loss, ..link });
    sim.add_converged(n);
    false_positives_on(&mut sim, duration, &mut |_, _| {})
}

/// [`false_positives`] on a simulator the caller set up (its checks, its nodes), calling
/// `progress` with the virtual time run so far and the counts so far after every 10 virtual
/// seconds: an hour at n = 1,000 and heavy loss takes hours of wall time.
pub fn false_positives_on(
    sim: &mut Sim,
    duration: Duration,
    progress: &mut dyn FnMut(Duration, &FalsePositiveReport),
) -> FalsePositiveReport {
    count_false(sim, duration, None, progress)
}

/// Called by [`count_false_into`] after each slice of virtual time.
type Progress<'a> = &'a mut dyn FnMut(Duration, &FalsePositiveReport);

fn count_false(
    sim: &mut Sim,
    duration: Duration,
    skip: Option<NodeId>,
    progress: Progress<'_>,
) -> FalsePositiveReport {
    let mut report = FalsePositiveReport {
        suspicions: 0,
        failed_events: 0,
        members_failed: 0,
        refutations: 0,
    };
    let mut failed = HashSet::new();
    count_false_into(sim, duration, skip, &mut report, &mut failed, progress);
    report
}

/// Adds the false suspicions and failures of `duration` more to `report`; `failed` collects the
/// members declared failed, so that `members_failed` counts them once across calls.
fn count_false_into(
    sim: &mut Sim,
    duration: Duration,
    skip: Option<NodeId>,
    report: &mut FalsePositiveReport,
    failed: &mut HashSet<NodeId>,
    progress: Progress<'_>,
) {
    let start = sim.now();
    let until = start + duration;
    while sim.now() < until {
        sim.run_for(Duration::from_secs(10).min(until - sim.now()));
        for e in sim.take_events() {
            match e.event {
                Event::Suspected { member, .. } if Some(member) != skip => report.suspicions += 1,
                Event::Failed { member, .. } if Some(member) != skip => {
                    report.failed_events += 1;
                    failed.insert(member);
                }
                _ => {}
            }
        }
        report.members_failed = failed.len();
        progress(sim.now() - start, report);
    }
    report.refutations = (0..sim.len() as NodeId)
        .filter_map(|id| sim.node(id))
        .map(|c| c.stats().refutations)
        .sum();
}

/// Cuts one direction of the links from member 0 to the upper half of a converged cluster of
/// `n` for `cut_for` (those members stop hearing it; it still hears them), heals the cut, runs
/// `after` more, and counts false suspicions and failures over the whole run. Helpers outside
/// the cut bridge the probes of member 0; when every helper drawn is inside it, member 0 is
/// suspected and must refute through others.
pub fn one_way_cut(
    seed: u64,
    n: usize,
    cut_for: Duration,
    after: Duration,
    config: &Config,
    link: LinkModel,
) -> FalsePositiveReport {
    let mut sim = Sim::new(seed, config.clone(), link);
    sim.check_views = n <= 2000;
    sim.add_converged(n);
    sim.run_for(period(config) * 3);
    sim.take_events();
    let upper = (n / 2) as NodeId..n as NodeId;
    for to in upper.clone() {
        sim.set_one_way_loss(0, to, 1.0);
    }
    let mut report = FalsePositiveReport {
        suspicions: 0,
        failed_events: 0,
        members_failed: 0,
        refutations: 0,
    };
    let mut failed = HashSet::new();
    count_false_into(
        &mut sim,
        cut_for,
        None,
        &mut report,
        &mut failed,
        &mut |_, _| {},
    );
    for to in upper {
        sim.set_one_way_loss(0, to, 0.0);
    }
    count_false_into(
        &mut sim,
        after,
        None,
        &mut report,
        &mut failed,
        &mut |_, _| {},
    );
    report
}

/// Slow node measurements.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlowNodeReport {
    /// Counts about the healthy members (the slow one excluded).
    pub healthy: FalsePositiveReport,
    /// Highest local health score the slow node reached.
    pub slow_max_local_health: u32,
    /// Whether the slow node itself was ever declared failed.
    pub slow_failed: bool,
}

/// Runs a converged cluster of `n` where member 0 processes every message `delay` late, for
/// `duration`, and counts failures of the healthy members.
pub fn slow_node(
    seed: u64,
    n: usize,
    delay: Duration,
    duration: Duration,
    config: &Config,
    link: LinkModel,
) -> SlowNodeReport {
    let mut sim = Sim::new(seed, config.clone(), link);
    sim.add_converged(n);
    sim.set_slow(0, delay);
    let mut max_lh = 0;
    let mut healthy = FalsePositiveReport {
        suspicions: 0,
        failed_events: 0,
        members_failed: 0,
        refutations: 0,
    };
    let mut slow_failed = false;
    let step = Duration::from_secs(1);
    let mut t = Duration::ZERO;
    let mut failed = HashSet::new();
    while t < duration {
        sim.run_for(step);
        t += step;
        max_lh = max_lh.max(sim.node(0).map_or(0, |c| c.local_health()));
        for e in sim.take_events() {
            match e.event {
                Event::Failed { member: 0, .. } => slow_failed = true,
                Event::Failed { member, .. } => {
                    healthy.failed_events += 1;
                    failed.insert(member);
                }
                Event::Suspected { member, .. } if member != 0 => healthy.suspicions += 1,
                _ => {}
            }
        }
    }
    healthy.members_failed = failed.len();
    SlowNodeReport {
        healthy,
        slow_max_local_health: max_lh,
        slow_failed,
    }
}

/// Whether every running member of `sim` sees every other running member alive, and nothing
/// else as alive or suspect.
pub fn converged(sim: &Sim) -> bool {
    let up: Vec<NodeId> = (0..sim.len() as NodeId).filter(|&i| sim.is_up(i)).collect();
    up.iter().all(|&i| {
        let Some(core) = sim.node(i) else {
            return true;
        };
        core.live_members() == up.len() - 1
            && up
                .iter()
                .all(|&j| j == i || core.member(&j).is_some_and(|m| m.state == State::Alive))
    })
}

/// Partition measurements.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionReport {
    /// Whether, before the heal, every member had marked every member of the other side failed.
    pub split_detected: bool,
    /// Time from the heal until [`converged`], if within the limit.
    pub converge: Option<Duration>,
}

/// Upper bound on convergence after a heal: within `1.5 · reconnect_interval` every member has
/// pinged a member it believes dead (the reconnect timer is jittered in `[R/2, 3R/2)`), which
/// tells that member of its death so it refutes; each refutation then spreads by piggyback
/// within `λ · ceil(log10(n + 1))` periods, twice over (refutations of the cross-side views
/// that push-pull merges soften into suspicions), plus one probe window of slack.
pub fn partition_bound(config: &Config, n: usize) -> Duration {
    let gossip = config.retransmit_mult.get() as f64 * ((n + 1) as f64).log10().ceil();
    config.reconnect_interval.mul_f64(1.5) + period(config).mul_f64(2.0 * gossip + 1.0)
}

/// Splits a converged cluster of `n` in two halves for `split_for`, heals, and measures the
/// time until full membership again (giving up after `limit`).
pub fn partition(
    seed: u64,
    n: usize,
    split_for: Duration,
    config: &Config,
    link: LinkModel,
    limit: Duration,
) -> PartitionReport {
    let mut sim = Sim::new(seed, config.clone(), link);
    sim.check_views = n <= 2000;
    sim.record_events = false;
    sim.add_converged(n);
    sim.run_for(period(config) * 3);
    let half = n as NodeId / 2;
    let a: Vec<NodeId> = (0..half).collect();
    let b: Vec<NodeId> = (half..n as NodeId).collect();
    sim.partition(&[&a, &b]);
    sim.run_for(split_for);
    let split_detected = (0..n as NodeId).all(|i| {
        let other = if i < half { &b } else { &a };
        sim.node(i).is_some_and(|c| {
            other
                .iter()
                .all(|j| c.member(j).is_some_and(|m| m.state == State::Dead))
        })
    });
    sim.heal();
    let converge = sim.run_until_cond(limit, Duration::from_millis(250), converged);
    PartitionReport {
        split_detected,
        converge,
    }
}

/// Dissemination measurements.
#[derive(Debug, Clone, PartialEq)]
pub struct DisseminationReport {
    /// Periods until half the members knew the newcomer.
    pub half: Option<f64>,
    /// Periods until every member knew the newcomer.
    pub all: Option<f64>,
}

/// A newcomer joins a converged cluster of `n` through one seed; measures how long until every
/// member emitted `Joined` for it.
pub fn dissemination(
    seed: u64,
    n: usize,
    config: &Config,
    link: LinkModel,
    limit: Duration,
) -> DisseminationReport {
    let mut sim = Sim::new(seed, config.clone(), link);
    sim.check_views = n <= 2000;
    sim.add_converged(n);
    let p = period(config);
    sim.run_for(p * 3);
    sim.take_events();
    let newcomer = sim.add_nodes(1);
    let t0 = sim.now();
    sim.join(newcomer, &[0]);
    let mut knowing: HashSet<NodeId> = HashSet::new();
    let mut half = None;
    let mut all = None;
    while all.is_none() && sim.now() - t0 < limit {
        sim.run_for(Duration::from_millis(20));
        for e in sim.take_events() {
            if let Event::Joined { member, .. } = e.event
                && member == newcomer
            {
                knowing.insert(e.node);
                let periods = (e.at - t0).as_secs_f64() / p.as_secs_f64();
                if half.is_none() && knowing.len() >= n / 2 {
                    half = Some(periods);
                }
                if knowing.len() >= n {
                    all = Some(periods);
                }
            }
        }
    }
    DisseminationReport { half, all }
}

/// Cost measurements.
#[derive(Debug, Clone, PartialEq)]
pub struct CostReport {
    /// Messages sent per member per second.
    pub messages_per_node_s: f64,
    /// Bytes sent per member per second.
    pub bytes_per_node_s: f64,
}

/// Measures the steady-state traffic of a converged cluster of `n` over `duration` (after one
/// push-pull interval of warm-up).
pub fn cost(
    seed: u64,
    n: usize,
    duration: Duration,
    config: &Config,
    link: LinkModel,
) -> CostReport {
    let mut sim = Sim::new(seed, config.clone(), link);
    sim.check_views = false;
    sim.record_events = false;
    sim.wire_roundtrip = false;
    sim.add_converged(n);
    sim.run_for(config.push_pull_interval);
    let before = sim.stats.clone();
    sim.run_for(duration);
    let secs = duration.as_secs_f64() * n as f64;
    CostReport {
        messages_per_node_s: (sim.stats.messages - before.messages) as f64 / secs,
        bytes_per_node_s: (sim.stats.bytes - before.bytes) as f64 / secs,
    }
}
