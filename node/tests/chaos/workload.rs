//! The client workload: unique keys put through random live nodes at a steady rate, each
//! acknowledged write (a success answer to `dht_put`) recorded with its value; and the end
//! check that reads every acknowledged key from every live node.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use jsonrpsee::http_client::HttpClient;
use serde_json::{Value, json};
use tokio::task::{JoinHandle, JoinSet};

use super::cluster::{SharedTruth, call};

/// Puts in flight at most; a tick finding them all busy skips its put.
const MAX_IN_FLIGHT: usize = 32;
/// Gets in flight during the end check.
const CHECK_CONCURRENCY: usize = 16;

/// A small deterministic generator (splitmix64), seeded per scenario.
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    /// A generator from `seed`.
    pub(crate) fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next number.
    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number below `n` (n > 0).
    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Counts of the workload's puts.
#[derive(Debug, Default, Clone)]
pub(crate) struct Counts {
    /// Puts sent.
    pub(crate) sent: usize,
    /// Ticks skipped because [`MAX_IN_FLIGHT`] puts were pending or no node was up.
    pub(crate) skipped: usize,
    /// Failed puts by reason (JSON-RPC error name, or the client error).
    pub(crate) failed: BTreeMap<String, usize>,
}

#[derive(Debug, Default)]
struct Record {
    acked: Vec<(String, String)>,
    counts: Counts,
}

/// A running workload.
#[derive(Debug)]
pub(crate) struct Workload {
    record: Arc<Mutex<Record>>,
    stop: Arc<AtomicBool>,
    task: Option<JoinHandle<()>>,
}

fn reason(e: &jsonrpsee::core::ClientError) -> String {
    match e {
        jsonrpsee::core::ClientError::Call(c) => c
            .data()
            .and_then(|d| serde_json::from_str::<Value>(d.get()).ok())
            .and_then(|d| d["error"].as_str().map(str::to_owned))
            .unwrap_or_else(|| format!("code {}", c.code())),
        jsonrpsee::core::ClientError::RequestTimeout => "client timeout".to_owned(),
        other => {
            let s = other.to_string();
            s.chars().take(60).collect()
        }
    }
}

impl Workload {
    /// Starts putting `rate` keys a second, named `prefix-<n>`, through the nodes `truth` says
    /// are up.
    pub(crate) fn start(
        clients: Arc<Vec<HttpClient>>,
        truth: SharedTruth,
        rate: u32,
        prefix: String,
        mut rng: Rng,
    ) -> Self {
        let record = Arc::new(Mutex::new(Record::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let task = {
            let (record, stop) = (record.clone(), stop.clone());
            tokio::spawn(async move {
                let mut tasks = JoinSet::new();
                let mut tick = tokio::time::interval(Duration::from_secs(1) / rate.max(1));
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    tick.tick().await;
                    while tasks.try_join_next().is_some() {}
                    let up = truth.lock().expect("truth lock").up();
                    if up.is_empty() || tasks.len() >= MAX_IN_FLIGHT {
                        record.lock().expect("record lock").counts.skipped += 1;
                        continue;
                    }
                    let node = up[rng.below(up.len())];
                    let key = format!("{prefix}-{n}");
                    let value = format!("value-{n}-{:016x}", rng.next());
                    n += 1;
                    record.lock().expect("record lock").counts.sent += 1;
                    let (client, record) = (clients[node].clone(), record.clone());
                    tasks.spawn(async move {
                        let put = call(&client, "dht_put", json!({"key": key, "value": value}));
                        let result = put.await;
                        let mut record = record.lock().expect("record lock");
                        match result {
                            Ok(v) if v["key"] == key.as_str() => record.acked.push((key, value)),
                            Ok(v) => {
                                *record
                                    .counts
                                    .failed
                                    .entry(format!("odd answer {v}"))
                                    .or_default() += 1;
                            }
                            Err(e) => *record.counts.failed.entry(reason(&e)).or_default() += 1,
                        }
                    });
                }
                // Every put sent is either acknowledged or not before the workload ends.
                while tasks.join_next().await.is_some() {}
            })
        };
        Self {
            record,
            stop,
            task: Some(task),
        }
    }

    /// Stops putting, waits for the puts in flight, and returns the acknowledged writes and the
    /// counts.
    pub(crate) async fn stop(mut self) -> (Vec<(String, String)>, Counts) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(task) = self.task.take() {
            task.await.expect("the workload task");
        }
        let record = self.record.lock().expect("record lock");
        (record.acked.clone(), record.counts.clone())
    }
}

impl Drop for Workload {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// A read that did not return the acknowledged value.
#[derive(Debug, Clone)]
pub(crate) struct Miss {
    /// The key.
    pub(crate) key: String,
    /// The node read.
    pub(crate) node: usize,
    /// What came back.
    pub(crate) got: String,
}

/// Reads every acknowledged key from every node in `nodes`; a read that fails is retried up to
/// `passes` times, `pause` apart. Returns the reads that never returned the acknowledged value.
pub(crate) async fn check(
    clients: &[HttpClient],
    nodes: &[usize],
    acked: &[(String, String)],
    passes: usize,
    pause: Duration,
) -> Vec<Miss> {
    let mut todo: Vec<(usize, usize)> = acked
        .iter()
        .enumerate()
        .flat_map(|(k, _)| nodes.iter().map(move |&n| (k, n)))
        .collect();
    let mut misses = Vec::new();
    for pass in 0..passes.max(1) {
        if pass > 0 {
            tokio::time::sleep(pause).await;
        }
        let reads = futures::stream::iter(todo.iter().copied())
            .map(|(k, n)| {
                let (key, value) = &acked[k];
                async move {
                    let got = call(&clients[n], "dht_get", json!({"key": key})).await;
                    let miss = match got {
                        Ok(v) if v["value"] == value.as_str() => None,
                        Ok(v) => Some(format!("value {}", v["value"])),
                        Err(e) => Some(reason(&e)),
                    };
                    miss.map(|got| (k, n, got))
                }
            })
            .buffer_unordered(CHECK_CONCURRENCY)
            .filter_map(|m| async move { m })
            .collect::<Vec<_>>()
            .await;
        todo = reads.iter().map(|&(k, n, _)| (k, n)).collect();
        misses = reads
            .into_iter()
            .map(|(k, node, got)| Miss {
                key: acked[k].0.clone(),
                node,
                got,
            })
            .collect();
        if todo.is_empty() {
            break;
        }
    }
    misses
}
