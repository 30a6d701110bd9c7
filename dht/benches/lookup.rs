//! Whole-DHT benchmark: N real nodes (gate, SWIM, the DHT core) in one process over the memory
//! transport. Prints a markdown table: convergence time, memory per node, recall@20 of lookups
//! against the true 20 closest live peers, RPCs per lookup, lookup/put/get latency, and the same
//! after killing a fifth of the nodes and letting SWIM evict them.
//!
//! `cargo bench -p shoal-dht --bench lookup` runs N = 200 and 1000 (tens of minutes on two
//! cores). Options after `--`: `--nodes 200,1000`, `--quick` (fewer lookups and puts),
//! `--lookups L`, `--puts P`, `--no-churn`, `--swim wan` (SWIM's WAN timing instead of LAN),
//! `--security plaintext` (libp2p's plaintext upgrade instead of noise: one process cannot pay
//! for a thousand nodes' handshakes on two cores, while each real node pays only for its own),
//! `--wave W` (nodes joining at once, 100), `--idle S` (idle-connection timeout, 10 s),
//! `--alpha A` (lookup parallelism, 3), `--bucket B` (k-bucket size, 20), `--gossip-budget B` (SWIM's piggyback bytes). Without
//! `--bench` (as under `cargo test --benches`) it runs 20 nodes with a few lookups, so CI keeps
//! it compiling and working.
//!
//! Memory per node is (VmRSS after convergence − VmRSS before the nodes started) / N, so run
//! one size per process for a clean figure (`--nodes 1000`); later sizes start on a heap the
//! earlier ones grew.

use std::collections::HashSet;
use std::num::NonZeroUsize;
use std::time::{Duration, Instant};

use futures::StreamExt;
use libp2p::{Multiaddr, PeerId};
use shoal_dht::core::KeyHash;
use shoal_dht::node::{EventLoop, dangerous_plaintext_memory_transport, memory_transport};
use shoal_dht::node::{NodeStats, Route};
use shoal_dht::{Client, Config, NodeKeyExt};
use shoal_pow::{CancelToken, MintOptions, NodeKey, Puzzle, mint};

/// Peers a lookup should find, and Kademlia's k.
const K: usize = 20;

/// Default idle-connection timeout (`--idle S`): a SWIM probe goes to another member every
/// second, so connections kept a minute would hold about 120 per node.
const IDLE_SECS: u64 = 10;

/// Nodes joining at once by default (`--wave W`, see `run_size`).
const WAVE: usize = 100;

/// Node count of the first nodes, which the others join through.
const SEEDS: usize = 8;

struct Options {
    full: bool,
    sizes: Vec<usize>,
    lookups: usize,
    puts: usize,
    churn: bool,
    wan: bool,
    idle: Duration,
    alpha: usize,
    gossip_budget: Option<usize>,
    wave: usize,
    plaintext: bool,
    bucket: usize,
}

impl Options {
    fn parse() -> Self {
        let args: Vec<String> = std::env::args().skip(1).collect();
        let full = args.iter().any(|a| a == "--bench");
        let quick = args.iter().any(|a| a == "--quick");
        let value = |name: &str| {
            args.iter()
                .position(|a| a == name)
                .and_then(|i| args.get(i + 1))
                .cloned()
        };
        let sizes = value("--nodes")
            .map(|s| s.split(',').filter_map(|n| n.trim().parse().ok()).collect())
            .unwrap_or_else(|| if full { vec![200, 1000] } else { vec![20] });
        let number = |name: &str, full_default: usize, quick_default: usize, test: usize| {
            value(name)
                .and_then(|v| v.parse().ok())
                .unwrap_or(if !full {
                    test
                } else if quick {
                    quick_default
                } else {
                    full_default
                })
        };
        Self {
            full,
            sizes,
            lookups: number("--lookups", 100, 30, 10),
            puts: number("--puts", 50, 20, 5),
            churn: !args.iter().any(|a| a == "--no-churn"),
            wan: value("--swim").is_some_and(|v| v == "wan"),
            alpha: value("--alpha").and_then(|v| v.parse().ok()).unwrap_or(3),
            gossip_budget: value("--gossip-budget").and_then(|v| v.parse().ok()),
            bucket: value("--bucket")
                .and_then(|v| v.parse().ok())
                .filter(|&b| b > 0)
                .unwrap_or(K),
            plaintext: value("--security").is_some_and(|v| v == "plaintext"),
            wave: value("--wave")
                .and_then(|v| v.parse().ok())
                .filter(|&w| w > 0)
                .unwrap_or(WAVE),
            idle: Duration::from_secs(
                value("--idle")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(IDLE_SECS),
            ),
        }
    }
}

/// The bench preset: the local preset (tiny identity puzzle, no verification rate limit) with
/// kad's usual k = 20, a quorum of 3, and SWIM's plain LAN timing (push-pull every 30 s: the
/// local preset's 2 s push-pull of the whole member list is meant for small test clusters), or
/// its WAN timing with `--swim wan`.
fn config(options: &Options) -> Config {
    let wan = options.wan;
    let mut swim = if wan {
        shoal_swim::Config::wan()
    } else {
        shoal_swim::Config::lan()
    };
    if let Some(budget) = options.gossip_budget.and_then(NonZeroUsize::new) {
        swim.gossip_budget = budget;
    }
    Config {
        idle_connection_timeout: options.idle,
        lookup_parallelism: NonZeroUsize::new(options.alpha).unwrap_or(NonZeroUsize::MIN),
        replication_factor: NonZeroUsize::new(K).expect("non-zero constant"),
        kbucket_size: NonZeroUsize::new(options.bucket).unwrap_or(NonZeroUsize::MIN),
        put_quorum: NonZeroUsize::new(3).expect("non-zero constant"),
        swim,
        ..Config::local()
    }
}

/// SplitMix64: a seeded generator, so runs pick the same sources and targets.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Heap bytes the allocator has handed out and not had back (glibc's `mallinfo2`).
fn heap_in_use() -> u64 {
    // SAFETY: mallinfo2 only reads the allocator's counters.
    let info = unsafe { libc::mallinfo2() };
    (info.uordblks + info.hblkhd) as u64
}

/// Gives free heap pages back to the system, so resident memory counts what is held rather than
/// what a busier moment once needed.
fn trim_heap() {
    // SAFETY: malloc_trim only releases free memory.
    unsafe {
        libc::malloc_trim(0);
    }
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn machine() -> String {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = info
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map_or("unknown CPU".to_owned(), |m| m.trim().to_owned());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{model}, {cores} cores available")
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(f64::total_cmp);
    v
}

struct Node {
    client: Client,
    addr: Multiaddr,
    task: tokio::task::JoinHandle<()>,
}

async fn start_node(puzzle: &Puzzle, options: &Options) -> Node {
    let key = NodeKey::generate();
    let minting = MintOptions {
        threads: NonZeroUsize::MIN,
        ..MintOptions::default()
    };
    let proof = mint(puzzle, &key.public(), &minting, &CancelToken::new(), |_| {})
        .expect("minting at the local difficulty succeeds")
        .proof;
    let transport = if options.plaintext {
        dangerous_plaintext_memory_transport(&key.to_libp2p())
    } else {
        memory_transport(&key.to_libp2p())
    };
    let (client, event_loop) =
        EventLoop::new(key, proof, config(options), transport).expect("the bench preset starts");
    let task = tokio::spawn(event_loop.run());
    let addr = client
        .listen("/memory/0".parse().expect("valid multiaddr"))
        .await
        .expect("memory listen");
    Node { client, addr, task }
}

/// Waits until every node in `live` counts `live.len() - 1` live members (alive or suspect) and
/// no other; returns the time it took, or `None` after `bound`.
async fn converge(nodes: &[Node], live: &[usize], bound: Duration) -> Option<Duration> {
    let start = Instant::now();
    let want = live.len() - 1;
    let mut last_report = Instant::now();
    loop {
        let stats = all_stats(nodes, live).await;
        let members = |s: &NodeStats| s.members.alive + s.members.suspect;
        let done = stats.iter().filter(|s| members(s) == want).count();
        if done == live.len() {
            return Some(start.elapsed());
        }
        if last_report.elapsed() > Duration::from_secs(10) {
            eprintln!(
                "  {:>5.0} s: {done}/{} nodes converged, {}",
                start.elapsed().as_secs_f64(),
                live.len(),
                progress(&stats, want)
            );
            last_report = Instant::now();
        }
        if start.elapsed() > bound {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(1000)).await;
    }
}

/// One progress line's counters, summed over `stats`, members counted against `want`.
fn progress(stats: &[NodeStats], want: usize) -> String {
    let members = |s: &NodeStats| s.members.alive + s.members.suspect;
    let min = stats.iter().map(members).min().unwrap_or(0);
    let max = stats.iter().map(members).max().unwrap_or(0);
    let routing = stats.iter().map(|s| s.routing_peers).min().unwrap_or(0);
    let sum = |f: fn(&NodeStats) -> u64| stats.iter().map(f).sum::<u64>();
    format!(
        "members {min}..{max} of {want}, routing ≥ {routing}, {} connections, {} dials ({} for \
         want of a relayed proof), {} readmitted on a kept proof, {} relay requests ({} \
         unconnected, {} failed), SWIM {} sent ({} unconnected, {} updates cut), {} \
         probes, {} failed, {} refutations, RPCs {} lookups {} gets {} background",
        sum(|s| s.connections as u64),
        sum(|s| s.dials as u64),
        sum(|s| s.relay_fallback_dials as u64),
        sum(|s| s.readmitted_departed as u64),
        sum(|s| s.relay_requests as u64),
        sum(|s| s.relay_requests_unconnected as u64),
        sum(|s| s.relay_request_failures as u64),
        sum(|s| s.swim_wire.sent),
        sum(|s| s.swim_wire.sent_unconnected),
        sum(|s| s.swim_updates_cut),
        sum(|s| s.swim.probes),
        sum(|s| s.swim.failed_probes),
        sum(|s| s.swim.refutations),
        sum(|s| s.rpcs.lookups),
        sum(|s| s.rpcs.gets),
        sum(|s| s.rpcs.background),
    )
}

/// Every node's counters.
async fn all_stats(nodes: &[Node], live: &[usize]) -> Vec<NodeStats> {
    futures::stream::iter(live.iter().copied())
        .map(|i| async move { nodes[i].client.stats().await.unwrap_or_default() })
        .buffer_unordered(32)
        .collect()
        .await
}

/// Open connections per node (each connection counts at both ends).
async fn connections_per_node(nodes: &[Node], live: &[usize]) -> f64 {
    let total: usize = futures::stream::iter(live.iter().copied())
        .map(|i| async move { nodes[i].client.stats().await.map_or(0, |s| s.connections) })
        .buffer_unordered(32)
        .fold(0, |a, b| async move { a + b })
        .await;
    total as f64 / live.len().max(1) as f64
}

#[derive(Default)]
struct Lookups {
    recall: Vec<f64>,
    rpcs: Vec<f64>,
    latency_ms: Vec<f64>,
    timeouts: usize,
}

async fn lookups(nodes: &[Node], live: &[usize], count: usize, rng: &mut Rng) -> Lookups {
    let mut out = Lookups::default();
    for _ in 0..count {
        let source = live[rng.below(live.len())];
        let target = NodeKey::generate().peer_id();
        let target_key = KeyHash::of(&target.to_bytes());
        let mut truth: Vec<PeerId> = live
            .iter()
            .filter(|&&i| i != source)
            .map(|&i| nodes[i].client.peer_id())
            .collect();
        truth.sort_by_key(|p| target_key.distance(&KeyHash::of(&p.to_bytes())));
        truth.truncate(K);
        let truth: HashSet<PeerId> = truth.into_iter().collect();
        let started = Instant::now();
        match nodes[source]
            .client
            .find_node_with_stats(target, Route::Iterative)
            .await
        {
            Ok(ok) => {
                out.latency_ms
                    .push(started.elapsed().as_secs_f64() * 1000.0);
                let hits = ok.peers.iter().filter(|p| truth.contains(p)).count();
                out.recall.push(hits as f64 / truth.len().max(1) as f64);
                out.rpcs.push(f64::from(ok.stats.requests));
            }
            Err(e) => {
                eprintln!("  lookup from node {source} failed: {e}");
                out.timeouts += 1;
                out.recall.push(0.0);
            }
        }
    }
    out
}

#[derive(Default)]
struct PutsGets {
    put_ms: Vec<f64>,
    put_ok: usize,
    get_ms: Vec<f64>,
    get_ok: usize,
}

async fn puts(nodes: &[Node], live: &[usize], count: usize, rng: &mut Rng) -> PutsGets {
    let mut out = PutsGets::default();
    for i in 0..count {
        let writer = live[rng.below(live.len())];
        let started = Instant::now();
        let put = nodes[writer]
            .client
            .put(key(i), value(i), Duration::from_secs(3600), None)
            .await;
        out.put_ms.push(started.elapsed().as_secs_f64() * 1000.0);
        match put {
            Ok(_) => out.put_ok += 1,
            Err(e) => eprintln!("  put {i} from node {writer}: {e}"),
        }
    }
    out
}

async fn gets(nodes: &[Node], live: &[usize], count: usize, rng: &mut Rng, out: &mut PutsGets) {
    for i in 0..count {
        let reader = live[rng.below(live.len())];
        let started = Instant::now();
        let got = nodes[reader].client.get(key(i)).await;
        out.get_ms.push(started.elapsed().as_secs_f64() * 1000.0);
        match got {
            Ok(g) if g.record.value == value(i) => out.get_ok += 1,
            Ok(_) => eprintln!("  get {i} at node {reader}: another value"),
            Err(e) => eprintln!("  get {i} at node {reader}: {e}"),
        }
    }
}

fn key(i: usize) -> Vec<u8> {
    format!("bench-key-{i}").into_bytes()
}

fn value(i: usize) -> Vec<u8> {
    format!("bench-value-{i}-").repeat(8).into_bytes()
}

struct Row {
    n: usize,
    start: Duration,
    converge: Option<Duration>,
    mem_mib: f64,
    connections: f64,
    before: Lookups,
    io: PutsGets,
    churn: Option<Churn>,
}

struct Churn {
    killed: usize,
    evict: Option<Duration>,
    after: Lookups,
    get_ok: usize,
    get_total: usize,
}

async fn run_size(n: usize, options: &Options, rng: &mut Rng) -> Row {
    eprintln!("== {n} nodes");
    let puzzle = Puzzle::new(config(options).puzzle).expect("the local preset is valid");
    trim_heap();
    let (rss_before, heap_before) = (rss_kib(), heap_in_use());
    let t = Instant::now();
    let mut nodes = Vec::with_capacity(n);
    for _ in 0..n {
        nodes.push(start_node(&puzzle, options).await);
    }
    eprintln!(
        "  started, not joined: {:.2} MiB heap in use per node",
        heap_in_use().saturating_sub(heap_before) as f64 / (1024.0 * 1024.0) / n as f64
    );
    let seeds = n.min(SEEDS);
    for i in 1..seeds {
        let seed = (nodes[0].client.peer_id(), nodes[0].addr.clone());
        if let Err(e) = nodes[i].client.join(vec![seed]).await {
            eprintln!("  seed {i} join: {e}");
        }
    }
    // Nodes join in waves of WAVE, each wave waiting (within a bound) until the nodes already
    // joined count one another, as a network grows, rather than a thousand joins at once.
    let mut failed = 0;
    let mut joined = seeds;
    while joined < n {
        let wave: Vec<(usize, usize)> = (joined..(joined + options.wave).min(n))
            .map(|i| (i, rng.below(seeds)))
            .collect();
        let before = joined;
        joined += wave.len();
        let joining = std::cell::Cell::new(true);
        let report = async {
            let started = Instant::now();
            let mut last = Instant::now();
            while joining.get() {
                tokio::time::sleep(Duration::from_millis(500)).await;
                if last.elapsed() >= Duration::from_secs(10) && joining.get() {
                    let members: Vec<usize> = (0..before).collect();
                    let stats = all_stats(&nodes, &members).await;
                    let new: Vec<usize> = (before..joined).collect();
                    let new_stats = all_stats(&nodes, &new).await;
                    eprintln!(
                        "  {:>5.0} s joining {before}..{joined}: members: {}\n    joiners: {}",
                        started.elapsed().as_secs_f64(),
                        progress(&stats, joined - 1),
                        progress(&new_stats, joined - 1)
                    );
                    last = Instant::now();
                }
            }
        };
        let joins = futures::stream::iter(wave)
            .map(|(i, s)| {
                let nodes = &nodes;
                async move {
                    let seed = (nodes[s].client.peer_id(), nodes[s].addr.clone());
                    for _ in 0..3 {
                        if nodes[i].client.join(vec![seed.clone()]).await.is_ok() {
                            return 0;
                        }
                    }
                    1
                }
            })
            .buffer_unordered(16)
            .fold(0, |a, b| async move { a + b });
        let joins = async {
            let failed = joins.await;
            joining.set(false);
            failed
        };
        let (failed_now, ()) = futures::join!(joins, report);
        failed += failed_now;
        let members: Vec<usize> = (0..joined).collect();
        let settled = converge(&nodes, &members, Duration::from_secs(120)).await;
        eprintln!(
            "  {joined} joined at {:.0} s (wave settled: {}), heap in use {} MiB",
            t.elapsed().as_secs_f64(),
            settled.is_some(),
            heap_in_use() >> 20
        );
    }
    let start = t.elapsed();
    eprintln!("  started and joined in {start:?} ({failed} joins failed)");
    let live: Vec<usize> = (0..n).collect();
    let bound = Duration::from_secs(if options.full { 300 } else { 60 });
    let converged = converge(&nodes, &live, bound).await;
    eprintln!("  converged: {converged:?}");
    // Memory in steady state: the connections the joins opened have gone idle and closed.
    tokio::time::sleep(options.idle + Duration::from_secs(5)).await;
    let connections = connections_per_node(&nodes, &live).await;
    trim_heap();
    let mem_mib = (rss_kib().saturating_sub(rss_before)) as f64 / 1024.0 / n as f64;
    let heap_mib = heap_in_use().saturating_sub(heap_before) as f64 / (1024.0 * 1024.0) / n as f64;
    eprintln!(
        "  memory per node: {mem_mib:.2} MiB resident, {heap_mib:.2} MiB heap in use, \
         {connections:.1} connections"
    );
    if let Some(settle) = std::env::var("BENCH_SETTLE")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        let early = lookups(&nodes, &live, options.lookups, rng).await;
        eprintln!("  right after convergence: {}", lookup_cells(&early));
        tokio::time::sleep(Duration::from_secs(settle)).await;
    }
    let before = lookups(&nodes, &live, options.lookups, rng).await;
    let mut io = puts(&nodes, &live, options.puts, rng).await;
    gets(&nodes, &live, options.puts, rng, &mut io).await;
    let mut churn = None;
    if options.churn {
        let killed = n / 5;
        let mut order: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            order.swap(i, rng.below(i + 1));
        }
        let dead: HashSet<usize> = order.into_iter().take(killed).collect();
        for &i in &dead {
            nodes[i].task.abort();
        }
        let live: Vec<usize> = (0..n).filter(|i| !dead.contains(i)).collect();
        let evict = converge(&nodes, &live, bound).await;
        eprintln!("  evicted {killed}: {evict:?}");
        let after = lookups(&nodes, &live, options.lookups, rng).await;
        let mut again = PutsGets::default();
        gets(&nodes, &live, options.puts, rng, &mut again).await;
        churn = Some(Churn {
            killed,
            evict,
            after,
            get_ok: again.get_ok,
            get_total: options.puts,
        });
    }
    for node in &nodes {
        node.task.abort();
    }
    for node in nodes {
        let _ = node.task.await;
    }
    Row {
        n,
        start,
        converge: converged,
        mem_mib,
        connections,
        before,
        io,
        churn,
    }
}

fn secs(d: Option<Duration>) -> String {
    d.map_or("no (bound)".to_owned(), |d| {
        format!("{:.1} s", d.as_secs_f64())
    })
}

fn lookup_cells(l: &Lookups) -> String {
    let recall: f64 = l.recall.iter().sum::<f64>() / l.recall.len().max(1) as f64;
    let rpcs = sorted(l.rpcs.clone());
    let lat = sorted(l.latency_ms.clone());
    format!(
        "{recall:.3} | {:.0} / {:.0} | {:.0} / {:.0} ms | {}",
        percentile(&rpcs, 0.5),
        percentile(&rpcs, 0.95),
        percentile(&lat, 0.5),
        percentile(&lat, 0.95),
        l.timeouts
    )
}

fn print(rows: &[Row], options: &Options) {
    println!("## shoal-dht lookup benchmark\n");
    println!("machine: {}", machine());
    println!(
        "preset: Config::local() with k = {K}, k-buckets of {}, put quorum 3, SWIM \
         Config::{}(); memory transport with {}, idle connections closed after {} s, waves of {}; \
         {} lookups (random source, random target), {} puts and gets per size\n",
        options.bucket,
        if options.wan { "wan" } else { "lan" },
        if options.plaintext {
            "plaintext"
        } else {
            "noise"
        },
        options.idle.as_secs(),
        options.wave,
        options.lookups,
        options.puts
    );
    println!(
        "| nodes | start+join | converged | mem/node (connections) | recall@20 | RPCs/lookup p50/p95 | \
         lookup p50/p95 | failed lookups | put p50/p95 (ok) | get p50/p95 (found) |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for r in rows {
        let put = sorted(r.io.put_ms.clone());
        let get = sorted(r.io.get_ms.clone());
        println!(
            "| {} | {:.1} s | {} | {:.2} MiB ({:.1}) | {} | {:.0} / {:.0} ms ({}/{}) | {:.0} / {:.0} ms ({}/{}) |",
            r.n,
            r.start.as_secs_f64(),
            secs(r.converge),
            r.mem_mib,
            r.connections,
            lookup_cells(&r.before),
            percentile(&put, 0.5),
            percentile(&put, 0.95),
            r.io.put_ok,
            r.io.put_ms.len(),
            percentile(&get, 0.5),
            percentile(&get, 0.95),
            r.io.get_ok,
            r.io.get_ms.len(),
        );
    }
    if rows.iter().any(|r| r.churn.is_some()) {
        println!("\nAfter killing 20 % of the nodes (SWIM evicts them, then the same measures):\n");
        println!(
            "| nodes | killed | evicted in | recall@20 | RPCs/lookup p50/p95 | lookup p50/p95 | \
             failed lookups | earlier records found |"
        );
        println!("|---|---|---|---|---|---|---|---|");
        for r in rows {
            if let Some(c) = &r.churn {
                println!(
                    "| {} | {} | {} | {} | {}/{} |",
                    r.n,
                    c.killed,
                    secs(c.evict),
                    lookup_cells(&c.after),
                    c.get_ok,
                    c.get_total
                );
            }
        }
    }
}

fn main() {
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    let options = Options::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let wall = Instant::now();
    let rows = runtime.block_on(async {
        let mut rng = Rng(0x5eed_1000);
        let mut rows = Vec::new();
        for &n in &options.sizes {
            rows.push(run_size(n, &options, &mut rng).await);
        }
        rows
    });
    print(&rows, &options);
    println!("\ntotal wall time {:.0} s", wall.elapsed().as_secs_f64());
    if !options.full {
        // Test mode: the small cluster must work, not just compile.
        for r in &rows {
            assert!(r.converge.is_some(), "{} nodes did not converge", r.n);
            assert!(r.io.put_ok > 0 && r.io.get_ok > 0, "puts and gets work");
        }
    }
}
