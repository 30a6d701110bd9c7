//! The node's recent activity, for the dashboard: every [`INTERVAL`] one sample of the JSON-RPC
//! calls per method (count, errors, latency p50 and p99), SWIM probes and refutations, puts
//! stored and refused, and bytes of peer traffic, kept for the last [`MAX_SAMPLES`] intervals.
//!
//! Bounded: latencies go into a fixed log-scale histogram per method (no list of durations
//! grows with the call rate), methods are the server's own fixed set, and the ring holds
//! [`MAX_SAMPLES`]. `node_stats` reads the ring; `node_subscribeStats` follows new samples.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use libp2p::PeerId;
use serde::Serialize;
use shoal_dht::Client;
use shoal_dht::api::{MemberChange, NodeStats};
use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;
use tokio::task::JoinHandle;

/// Time between samples.
pub const INTERVAL: Duration = Duration::from_secs(2);

/// Samples kept: ten minutes at [`INTERVAL`].
pub const MAX_SAMPLES: usize = 300;

/// Methods tracked in one interval, at most (the server's methods are a fixed set, far fewer).
const MAX_METHODS: usize = 64;

/// Histogram buckets: bucket `b > 0` holds durations in `[FIRST·GROWTH^(b-1), FIRST·GROWTH^b)`
/// microseconds, so a percentile is known within 7 % from 10 µs to beyond a minute.
const BUCKETS: usize = 128;
const FIRST_MICROS: f64 = 10.0;
const GROWTH: f64 = 1.15;

/// One interval's calls of one method.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MethodSample {
    /// Calls that ended in the interval.
    pub calls: u64,
    /// Of them, those that ended in an error.
    pub errors: u64,
    /// Median latency, milliseconds.
    pub p50_ms: f64,
    /// 99th percentile latency, milliseconds.
    pub p99_ms: f64,
}

/// One interval of the node's activity; counts are within the interval.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Sample {
    /// When the interval ended, Unix seconds.
    pub t: f64,
    /// Calls per method.
    pub rpc: BTreeMap<&'static str, MethodSample>,
    /// SWIM probes started.
    pub probes: u64,
    /// SWIM probes that got no ack.
    pub failed_probes: u64,
    /// Times this node refuted a suspicion of itself.
    pub refutations: u64,
    /// Replica puts stored.
    pub puts_stored: u64,
    /// Replica puts refused.
    pub puts_refused: u64,
    /// Bytes of peer messages received.
    pub bytes_in: u64,
    /// Bytes of peer messages sent.
    pub bytes_out: u64,
}

/// The node's cumulative counters a sample is the difference of.
#[derive(Debug, Clone, Copy, Default)]
struct Counters {
    probes: u64,
    failed_probes: u64,
    refutations: u64,
    puts_stored: u64,
    puts_refused: u64,
    bytes_in: u64,
    bytes_out: u64,
}

impl Counters {
    fn of(stats: &NodeStats) -> Self {
        let t = stats.traffic.total();
        Self {
            probes: stats.swim.probes,
            failed_probes: stats.swim.failed_probes,
            refutations: stats.swim.refutations,
            puts_stored: stats.stored_puts,
            puts_refused: stats.refused_puts_total,
            bytes_in: t.bytes_in,
            bytes_out: t.bytes_out,
        }
    }
}

/// One method's calls in the open interval.
#[derive(Debug, Clone)]
struct Calls {
    errors: u64,
    latencies: [u32; BUCKETS],
}

impl Default for Calls {
    fn default() -> Self {
        Self {
            errors: 0,
            latencies: [0; BUCKETS],
        }
    }
}

fn bucket(elapsed: Duration) -> usize {
    let micros = elapsed.as_secs_f64() * 1e6;
    if micros < FIRST_MICROS {
        return 0;
    }
    // Truncation is the bucketing; the value is finite and at least 0 here.
    let b = ((micros / FIRST_MICROS).ln() / GROWTH.ln()) as usize + 1;
    b.min(BUCKETS - 1)
}

/// The middle of bucket `b` (geometric), milliseconds.
fn bucket_ms(b: usize) -> f64 {
    if b == 0 {
        return FIRST_MICROS / 2.0 / 1e3;
    }
    let low = FIRST_MICROS * GROWTH.powi(b as i32 - 1);
    low * GROWTH.sqrt() / 1e3
}

impl Calls {
    fn total(&self) -> u64 {
        self.latencies.iter().map(|&n| u64::from(n)).sum()
    }

    /// The `q` quantile, milliseconds (0 when there were no calls).
    fn quantile_ms(&self, q: f64) -> f64 {
        let total = self.total();
        if total == 0 {
            return 0.0;
        }
        // The rank of the quantile, 1-based: the smallest bucket whose running count reaches it.
        let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
        let mut seen = 0;
        for (b, &n) in self.latencies.iter().enumerate() {
            seen += u64::from(n);
            if seen >= rank {
                return bucket_ms(b);
            }
        }
        bucket_ms(BUCKETS - 1)
    }

    fn sample(&self) -> MethodSample {
        MethodSample {
            calls: self.total(),
            errors: self.errors,
            p50_ms: self.quantile_ms(0.5),
            p99_ms: self.quantile_ms(0.99),
        }
    }
}

#[derive(Debug, Default)]
struct Inner {
    open: HashMap<&'static str, Calls>,
    samples: VecDeque<Sample>,
    last: Option<Counters>,
}

/// The history; see the module docs. Shared by the RPC methods (which record their calls) and
/// the sampler task.
#[derive(Debug)]
pub struct History {
    inner: Mutex<Inner>,
    samples: broadcast::Sender<Sample>,
}

impl Default for History {
    fn default() -> Self {
        Self::new()
    }
}

impl History {
    /// An empty history.
    pub fn new() -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            samples: broadcast::channel(16).0,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic elsewhere while holding it leaves counts, never a broken invariant.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records one call of `method` that took `elapsed`.
    pub fn observe(&self, method: &'static str, ok: bool, elapsed: Duration) {
        let mut inner = self.lock();
        if !inner.open.contains_key(method) && inner.open.len() >= MAX_METHODS {
            return;
        }
        let calls = inner.open.entry(method).or_default();
        let b = bucket(elapsed);
        calls.latencies[b] = calls.latencies[b].saturating_add(1);
        if !ok {
            calls.errors += 1;
        }
    }

    /// Closes the open interval with the node's counters now, keeps its sample and tells the
    /// followers. The first call only takes the counters as the base.
    pub fn close(&self, stats: &NodeStats, t: f64) -> Option<Sample> {
        let now = Counters::of(stats);
        let mut inner = self.lock();
        let open = std::mem::take(&mut inner.open);
        let last = inner.last.replace(now)?;
        let sample = Sample {
            t,
            rpc: open.iter().map(|(m, calls)| (*m, calls.sample())).collect(),
            probes: now.probes.saturating_sub(last.probes),
            failed_probes: now.failed_probes.saturating_sub(last.failed_probes),
            refutations: now.refutations.saturating_sub(last.refutations),
            puts_stored: now.puts_stored.saturating_sub(last.puts_stored),
            puts_refused: now.puts_refused.saturating_sub(last.puts_refused),
            bytes_in: now.bytes_in.saturating_sub(last.bytes_in),
            bytes_out: now.bytes_out.saturating_sub(last.bytes_out),
        };
        if inner.samples.len() >= MAX_SAMPLES {
            inner.samples.pop_front();
        }
        inner.samples.push_back(sample.clone());
        drop(inner);
        // No follower is fine.
        let _ = self.samples.send(sample.clone());
        Some(sample)
    }

    /// The samples kept, oldest first.
    pub fn samples(&self) -> Vec<Sample> {
        self.lock().samples.iter().cloned().collect()
    }

    /// Samples from now on.
    pub fn follow(&self) -> broadcast::Receiver<Sample> {
        self.samples.subscribe()
    }

    /// Samples `node` every [`INTERVAL`] until the task is aborted.
    pub fn spawn_sampler(self: Arc<Self>, node: Client) -> JoinHandle<()> {
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(INTERVAL);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                // A stopped node has nothing to sample; the server stops soon after.
                if let Some(stats) = node.stats().await {
                    self.close(&stats, unix_now());
                }
            }
        })
    }
}

/// Members whose last change is remembered, at most (SWIM's own table is smaller).
const MAX_MEMBER_TIMES: usize = 65_536;

/// When this node last saw each member change state (`swim_members.changed_at`), since the
/// node started.
#[derive(Debug, Default)]
pub struct MemberTimes {
    map: Mutex<HashMap<PeerId, u64>>,
}

impl MemberTimes {
    fn lock(&self) -> MutexGuard<'_, HashMap<PeerId, u64>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Remembers `change`; when full, forgets the member that changed longest ago.
    pub fn record(&self, change: &MemberChange) {
        let mut map = self.lock();
        if map.len() >= MAX_MEMBER_TIMES
            && !map.contains_key(&change.peer)
            && let Some(oldest) = map.iter().min_by_key(|(_, at)| **at).map(|(p, _)| *p)
        {
            map.remove(&oldest);
        }
        map.insert(change.peer, change.at);
    }

    /// When `peer` last changed, Unix seconds, if this node saw it change.
    pub fn get(&self, peer: &PeerId) -> Option<u64> {
        self.lock().get(peer).copied()
    }

    /// Follows `node`'s member changes until the node stops or the task is aborted.
    pub fn spawn_watcher(self: Arc<Self>, node: &Client) -> JoinHandle<()> {
        let mut changes = node.member_changes();
        tokio::spawn(async move {
            loop {
                match changes.recv().await {
                    Ok(change) => self.record(&change),
                    // The times of the changes missed stay older; nothing else is lost.
                    Err(RecvError::Lagged(_)) => {}
                    Err(RecvError::Closed) => return,
                }
            }
        })
    }
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_fall_in_the_bucket_of_the_true_value() {
        let history = History::new();
        for ms in 1..=100u64 {
            history.observe("dht_get", ms != 100, Duration::from_millis(ms));
        }
        history.observe("dht_put", true, Duration::from_micros(3));
        let mut stats = NodeStats::default();
        assert!(
            history.close(&stats, 1.0).is_none(),
            "the first close is the base"
        );
        for ms in 1..=100u64 {
            history.observe("dht_get", ms != 100, Duration::from_millis(ms));
        }
        stats.swim.probes = 7;
        stats.traffic.swim.bytes_in = 1_000;
        let sample = history.close(&stats, 3.0).expect("a sample");
        let get = &sample.rpc["dht_get"];
        assert_eq!((get.calls, get.errors), (100, 1));
        assert!((get.p50_ms / 50.0 - 1.0).abs() < 0.08, "{get:?}");
        assert!((get.p99_ms / 99.0 - 1.0).abs() < 0.08, "{get:?}");
        assert!(
            !sample.rpc.contains_key("dht_put"),
            "the first interval was closed"
        );
        assert_eq!((sample.probes, sample.bytes_in), (7, 1_000));
        assert_eq!(history.samples(), vec![sample]);
    }

    #[test]
    fn the_ring_and_the_histogram_are_bounded() {
        let history = History::new();
        let stats = NodeStats::default();
        for t in 0..(MAX_SAMPLES + 10) {
            history.observe("node_info", true, Duration::from_secs(3_600));
            history.close(&stats, t as f64);
        }
        let samples = history.samples();
        assert_eq!(samples.len(), MAX_SAMPLES);
        assert_eq!(samples[0].t, 10.0, "the oldest went first");
        let info = &samples[MAX_SAMPLES - 1].rpc["node_info"];
        assert_eq!(info.calls, 1);
        assert!(
            info.p99_ms > 60_000.0,
            "the last bucket holds what is beyond: {info:?}"
        );
        assert_eq!(bucket(Duration::ZERO), 0);
    }
}
