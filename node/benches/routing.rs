//! One-hop routing against Kademlia's iterative lookup, over real processes.
//!
//! `cargo bench -p shoal-node --bench routing` starts `shoal testnet --nodes 50` (release build)
//! and waits until every node's view of the membership is settled. Then, for each route (`auto`:
//! one hop from the local view; `iterative`: Kademlia's lookup, asked for per request) and each
//! concurrency (1, 16, 64), it puts 200 random 160-bit keys with 64-byte values through random
//! nodes, then gets each of them through another random node, all over JSON-RPC. It prints a
//! table: throughput, latency p50/p95/p99, CPU time per operation summed over every node process,
//! RPCs per get and the share of operations that took one hop; then the targets of one-hop
//! routing and the ratios to a JavaScript Kademlia library measured on the same machine and
//! workload.
//!
//! Options after `--`: `--nodes N` (50), `--ops N` (200), `--concurrency 1,16,64`, `--value-bytes
//! B` (64), `--routes auto,iterative`, `--seed S` (42), `--warm-up N` (400 puts at concurrency
//! 16 before the measured batches, which open the connections SWIM has not). Under `cargo test --benches` it runs a
//! short smoke version (5 nodes, 20 operations, concurrency 1 and 4), judging nothing.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{
    arg, client, cpu_secs, load_average, machine, params, percentile, quantile, start_testnet,
};
use jsonrpsee::core::client::ClientT;
use jsonrpsee::http_client::HttpClient;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;

struct Options {
    full: bool,
    nodes: usize,
    ops: usize,
    concurrency: Vec<usize>,
    value_bytes: usize,
    routes: Vec<String>,
    seed: u64,
    warm_up: usize,
}

fn options() -> Options {
    let args: Vec<String> = std::env::args().collect();
    let full = args.iter().any(|a| a == "--bench");
    let value = |name: &str| arg(&args, name);
    let number = |name: &str, full_default: usize, smoke: usize| {
        value(name)
            .and_then(|v| v.parse().ok())
            .unwrap_or(if full { full_default } else { smoke })
    };
    Options {
        full,
        nodes: number("--nodes", 50, 5),
        ops: number("--ops", 200, 20),
        concurrency: value("--concurrency")
            .map(|v| v.split(',').filter_map(|c| c.parse().ok()).collect())
            .unwrap_or_else(|| if full { vec![1, 16, 64] } else { vec![1, 4] }),
        value_bytes: number("--value-bytes", 64, 64),
        routes: value("--routes")
            .map(|v| v.split(',').map(str::to_owned).collect())
            .unwrap_or_else(|| vec!["auto".to_owned(), "iterative".to_owned()]),
        seed: number("--seed", 42, 42) as u64,
        warm_up: number("--warm-up", 400, 0),
    }
}

/// One batch of operations: which node each goes through, and its key.
struct Batch {
    keys: Vec<String>,
    nodes: Vec<usize>,
}

/// What a batch measured.
#[derive(Default)]
struct Measured {
    latencies: Vec<Duration>,
    errors: usize,
    first_error: Option<String>,
    elapsed: Duration,
    cpu: f64,
    rpcs: Vec<u64>,
    one_hop: usize,
    /// Dials all nodes made during the batch (new connections, each a handshake).
    dials: u64,
}

impl Measured {
    fn ops_per_sec(&self) -> f64 {
        self.latencies.len() as f64 / self.elapsed.as_secs_f64()
    }

    fn cpu_ms_per_op(&self) -> f64 {
        self.cpu * 1000.0 / self.latencies.len().max(1) as f64
    }

    fn p50(&self) -> f64 {
        percentile(&self.latencies, 0.5)
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Op {
    Put,
    Get,
}

/// Runs `batch` as `op` by `route` with `workers` concurrent callers.
async fn run(
    clients: &Arc<Vec<HttpClient>>,
    pids: &[u32],
    op: Op,
    route: &str,
    batch: &Arc<Batch>,
    workers: usize,
    value: &Arc<String>,
) -> Measured {
    let next = Arc::new(AtomicUsize::new(0));
    let cpu_before: f64 = pids.iter().map(|p| cpu_secs(*p)).sum();
    let start = Instant::now();
    let tasks: Vec<_> = (0..workers)
        .map(|_| {
            let (clients, batch, next, value) =
                (clients.clone(), batch.clone(), next.clone(), value.clone());
            let route = route.to_owned();
            tokio::spawn(async move {
                let mut m = Measured::default();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(key) = batch.keys.get(i) else { break };
                    let c = &clients[batch.nodes[i]];
                    let mut p = vec![
                        ("key", Value::from(key.as_str())),
                        ("key_encoding", "hex".into()),
                        ("route", route.as_str().into()),
                    ];
                    if op == Op::Put {
                        p.push(("value", value.as_str().into()));
                    }
                    let method = if op == Op::Put { "dht_put" } else { "dht_get" };
                    let t = Instant::now();
                    let result: Result<Value, _> = c.request(method, params(&p)).await;
                    match result {
                        Ok(answer) => {
                            m.latencies.push(t.elapsed());
                            if let Some(n) = answer.get("rpcs").and_then(Value::as_u64) {
                                m.rpcs.push(n);
                            }
                            m.one_hop += usize::from(answer["path"] == "one-hop");
                        }
                        Err(e) => {
                            m.errors += 1;
                            m.first_error.get_or_insert(e.to_string());
                        }
                    }
                }
                m
            })
        })
        .collect();
    let mut all = Measured::default();
    for t in tasks {
        let m = t.await.expect("worker");
        all.latencies.extend(m.latencies);
        all.rpcs.extend(m.rpcs);
        all.errors += m.errors;
        all.one_hop += m.one_hop;
        if all.first_error.is_none() {
            all.first_error = m.first_error;
        }
    }
    all.elapsed = start.elapsed();
    // The copies that follow a put's answer are part of its cost: the CPU is counted until the
    // nodes are quiet again (with their idle SWIM traffic meanwhile, at most 30 s).
    wait_quiet(pids, Duration::from_secs(30)).await;
    all.cpu = pids.iter().map(|p| cpu_secs(*p)).sum::<f64>() - cpu_before;
    all.latencies.sort_unstable();
    all.rpcs.sort_unstable();
    all
}

/// Waits until the nodes together use under 0.3 of a core over a quarter of a second (above what
/// idle nodes use for SWIM's probes), at most `limit`; how long that took.
async fn wait_quiet(pids: &[u32], limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    let window = Duration::from_millis(250);
    while start.elapsed() < limit {
        let before: f64 = pids.iter().map(|p| cpu_secs(*p)).sum();
        tokio::time::sleep(window).await;
        let used: f64 = pids.iter().map(|p| cpu_secs(*p)).sum::<f64>() - before;
        if used < 0.3 * window.as_secs_f64() {
            return Some(start.elapsed());
        }
    }
    None
}

/// The sum over all nodes of `node_info`'s `field`.
async fn total(clients: &[HttpClient], field: &str) -> u64 {
    let mut sum = 0;
    for c in clients {
        let info: Result<Value, _> = c.request("node_info", params(&[])).await;
        sum += info.ok().and_then(|i| i[field].as_u64()).unwrap_or(0);
    }
    sum
}

/// Waits until every node says its view is settled (one-hop routing applies).
async fn wait_settled(clients: &[HttpClient], limit: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let mut settled = 0;
        for c in clients {
            let info: Result<Value, _> = c.request("node_info", params(&[])).await;
            if info.is_ok_and(|i| i["routing"]["view_settled"] == true) {
                settled += 1;
            }
        }
        if settled == clients.len() {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < limit,
            "only {settled} of {} views settled within {limit:?}",
            clients.len()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::main]
async fn main() {
    let o = options();
    println!(
        "# one-hop routing over JSON-RPC: {} nodes (`shoal testnet`), {} puts of random 160-bit \
         keys x {} B through random nodes, then a get of each through another random node; \
         machine: {}; load average before: {}",
        o.nodes,
        o.ops,
        o.value_bytes,
        machine(),
        load_average()
    );
    let started = Instant::now();
    let net = start_testnet(o.nodes);
    println!("testnet ready in {:.1} s", started.elapsed().as_secs_f64());
    let clients = Arc::new(net.urls.iter().map(|u| client(u)).collect::<Vec<_>>());
    let waited = wait_settled(&clients, Duration::from_secs(120)).await;
    println!("every view settled {:.1} s later", waited.as_secs_f64());
    let value = Arc::new("v".repeat(o.value_bytes));
    let mut rng = StdRng::seed_from_u64(o.seed);
    // Connections SWIM has not opened yet are opened by the first operations; a warm-up
    // batch pays for them, so that the measured batches show the steady state.
    let warm = Arc::new(Batch {
        keys: (0..o.warm_up)
            .map(|_| hex::encode(rng.r#gen::<[u8; 20]>()))
            .collect(),
        nodes: (0..o.warm_up).map(|_| rng.gen_range(0..o.nodes)).collect(),
    });
    if o.warm_up > 0 {
        let dials_before = total(&clients, "dials").await;
        let m = run(&clients, &net.pids, Op::Put, "auto", &warm, 16, &value).await;
        let dials = total(&clients, "dials").await.saturating_sub(dials_before);
        println!(
            "warm-up: {} puts at concurrency 16 ({} failed), {dials} new connections",
            m.latencies.len(),
            m.errors
        );
    }
    let mut results: Vec<(String, Op, usize, Measured)> = Vec::new();
    println!(
        "\n| route | op | concurrency | ops/s | p50 ms | p95 ms | p99 ms | CPU ms per op (all \
         nodes) | RPCs per get p50 / p95 | one-hop | dials | ok | errors |\n|---|---|---|---|---|---|\
         ---|---|---|---|---|---|---|"
    );
    for route in &o.routes {
        for &c in &o.concurrency {
            let keys: Vec<String> = (0..o.ops)
                .map(|_| hex::encode(rng.r#gen::<[u8; 20]>()))
                .collect();
            let put_nodes: Vec<usize> = (0..o.ops).map(|_| rng.gen_range(0..o.nodes)).collect();
            // Each get through another node than the one its key was put through.
            let get_nodes: Vec<usize> = put_nodes
                .iter()
                .map(|&p| (p + rng.gen_range(1..o.nodes.max(2))) % o.nodes)
                .collect();
            let puts = Arc::new(Batch {
                keys: keys.clone(),
                nodes: put_nodes,
            });
            let gets = Arc::new(Batch {
                keys,
                nodes: get_nodes,
            });
            for (op, batch) in [(Op::Put, &puts), (Op::Get, &gets)] {
                // A put is answered once its first replicas kept it; the others receive it
                // after. Each batch starts once that work is done, so it is measured alone.
                let quiet = wait_quiet(&net.pids, Duration::from_secs(30)).await;
                let dials_before = total(&clients, "dials").await;
                let records_before = total(&clients, "records").await;
                let mut m = run(&clients, &net.pids, op, route, batch, c, &value).await;
                m.dials = total(&clients, "dials").await.saturating_sub(dials_before);
                // Every put's copies, counted once the nodes are quiet: the k closest and the
                // publisher's own (when it is not among them), so 20 to 21 a put.
                let held = total(&clients, "records")
                    .await
                    .saturating_sub(records_before);
                let rpcs = match (quantile(&m.rpcs, 0.5), quantile(&m.rpcs, 0.95)) {
                    (Some(p50), Some(p95)) if op == Op::Get => format!("{p50} / {p95}"),
                    _ => "-".to_owned(),
                };
                println!(
                    "| {route} | {} | {c} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} | {rpcs} | {:.2} \
                     | {} | {} | {} |",
                    if op == Op::Put {
                        "put (quorum 3)"
                    } else {
                        "get"
                    },
                    m.ops_per_sec(),
                    m.p50(),
                    percentile(&m.latencies, 0.95),
                    percentile(&m.latencies, 0.99),
                    m.cpu_ms_per_op(),
                    m.one_hop as f64 / m.latencies.len().max(1) as f64,
                    m.dials,
                    m.latencies.len(),
                    m.errors,
                );
                if op == Op::Put {
                    println!(
                        "  copies held: {:.2} per put acknowledged",
                        held as f64 / m.latencies.len().max(1) as f64
                    );
                }
                if quiet.is_none() {
                    println!("  (the nodes were not quiet within 30 s before this batch)");
                }
                if let Some(e) = &m.first_error {
                    println!("  first error: {e}");
                }
                results.push((route.clone(), op, c, m));
            }
        }
    }
    println!("load average after: {}", load_average());
    if o.full {
        judge(&results);
    }
}

/// The targets of one-hop routing (route `auto`), and the ratios to the reference: a widely
/// used JavaScript Kademlia library (2019) on the same workload and machine, at N = 50.
fn judge(results: &[(String, Op, usize, Measured)]) {
    let find = |route: &str, op: Op, c: usize| {
        results
            .iter()
            .find(|(r, o, cc, _)| r == route && *o == op && *cc == c)
            .map(|(_, _, _, m)| m)
    };
    let verdict = |met: bool| if met { "met" } else { "NOT met" };
    println!("\ntargets (route auto) and the reference's figures:");
    if let Some(m) = find("auto", Op::Get, 1) {
        let (p50, ops) = (m.p50(), m.ops_per_sec());
        println!(
            "- get, concurrency 1: p50 {p50:.2} ms (<= 1.5; reference 6.5, {:.1}x faster), \
             {ops:.0}/s (>= 600; reference 143, {:.1}x): {}",
            6.5 / p50,
            ops / 143.0,
            verdict(p50 <= 1.5 && ops >= 600.0)
        );
        let cpu = m.cpu_ms_per_op();
        println!(
            "- CPU per get, all nodes: {cpu:.2} ms (<= 2; reference 10-13): {}",
            verdict(cpu <= 2.0)
        );
    }
    if let Some(m) = find("auto", Op::Get, 64) {
        let ops = m.ops_per_sec();
        println!(
            "- get, concurrency 64: {ops:.0}/s (>= 1,500; reference 194, {:.1}x): {}",
            ops / 194.0,
            verdict(ops >= 1500.0)
        );
    }
    if let Some(m) = find("auto", Op::Put, 1) {
        let (p50, ops) = (m.p50(), m.ops_per_sec());
        println!(
            "- put to quorum 3, concurrency 1: p50 {p50:.2} ms (<= 5; reference 51, {:.1}x), \
             {ops:.0}/s (>= 200; reference 19, {:.1}x): {}",
            51.0 / p50,
            ops / 19.0,
            verdict(p50 <= 5.0 && ops >= 200.0)
        );
    }
    if let Some(m) = find("auto", Op::Put, 64) {
        let ops = m.ops_per_sec();
        println!(
            "- put, concurrency 64: {ops:.0}/s (>= 500; reference 21, {:.1}x): {}",
            ops / 21.0,
            verdict(ops >= 500.0)
        );
    }
    for (op, c) in [(Op::Get, 1), (Op::Get, 64), (Op::Put, 1), (Op::Put, 64)] {
        if let (Some(a), Some(i)) = (find("auto", op, c), find("iterative", op, c)) {
            println!(
                "- one hop against iterative, {} at concurrency {c}: {:.1}x the throughput, \
                 {:.2} against {:.2} ms p50, {:.2} against {:.2} CPU ms per op",
                if op == Op::Put { "puts" } else { "gets" },
                a.ops_per_sec() / i.ops_per_sec(),
                a.p50(),
                i.p50(),
                a.cpu_ms_per_op(),
                i.cpu_ms_per_op()
            );
        }
    }
}
