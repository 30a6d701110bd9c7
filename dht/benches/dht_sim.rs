//! The DHT simulator as a benchmark: N simulated nodes (the DHT core with SWIM inside, every
//! message through the real codecs) on virtual time. Prints a markdown table: recall@20 of
//! lookups against the true 20 closest live nodes, RPCs per lookup, put and get latency in
//! virtual time, before and after killing a fifth of the nodes; messages and bytes per node per
//! second; wall time and peak memory.
//!
//! `cargo bench -p shoal-dht --bench dht_sim` runs N = 1,000 and N = 10,000 for 10 virtual
//! minutes each (the larger one takes most of the time; run one size per process for a clean
//! memory figure). Options after `--`: `--nodes 1000,10000`, `--secs S` (virtual seconds per run,
//! 600), `--seed X` (42), `--kill F` (fraction killed, 0.2), `--lookups L` (200), `--puts P`
//! (200), `--swim lan|wan` (SWIM timing, wan), `--loss P` (link loss, 0). Without `--bench` (as
//! under `cargo test --benches`) it runs 60 nodes for 60 virtual seconds, so CI keeps it
//! compiling and working.

use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use shoal_dht::Config;
use shoal_dht::core::{Command, OpId, Peer, Reply};
use shoal_dht::node::PutRequest;
use shoal_dht::sim::{Sim, SimConfig, SimPeer};
use shoal_swim::sim::{LinkModel, percentile};

/// Peers a lookup should find, and the replication factor.
const K: usize = 20;

struct Options {
    full: bool,
    sizes: Vec<usize>,
    secs: u64,
    seed: u64,
    kill: f64,
    lookups: usize,
    puts: usize,
    wan: bool,
    loss: f64,
}

impl Options {
    fn parse() -> Self {
        let args: Vec<String> = std::env::args().skip(1).collect();
        let full = args.iter().any(|a| a == "--bench");
        let value = |name: &str| {
            args.iter()
                .position(|a| a == name)
                .and_then(|i| args.get(i + 1))
                .cloned()
        };
        let number = |name: &str, full_default: f64, test: f64| {
            value(name).and_then(|v| v.parse().ok()).unwrap_or(if full {
                full_default
            } else {
                test
            })
        };
        Self {
            full,
            sizes: value("--nodes")
                .map(|s| s.split(',').filter_map(|n| n.trim().parse().ok()).collect())
                .unwrap_or_else(|| if full { vec![1000, 10_000] } else { vec![60] }),
            secs: number("--secs", 600.0, 60.0) as u64,
            seed: number("--seed", 42.0, 42.0) as u64,
            kill: number("--kill", 0.2, 0.2),
            lookups: number("--lookups", 200.0, 20.0) as usize,
            puts: number("--puts", 200.0, 10.0) as usize,
            wan: value("--swim").is_none_or(|s| s != "lan"),
            loss: number("--loss", 0.0, 0.0),
        }
    }
}

/// What one phase of operations measured.
#[derive(Default)]
struct Phase {
    recall: Vec<f64>,
    rpcs: Vec<f64>,
    lookup_ms: Vec<f64>,
    put_ms: Vec<f64>,
    get_ms: Vec<f64>,
    failed: usize,
    found: usize,
    gets: usize,
}

fn main() {
    let o = Options::parse();
    println!(
        "dht_sim: seed {}, {} virtual s per run, kill {:.0} %, {} lookups and {} puts + gets per \
         phase, SWIM {}, link 1-5 ms, loss {:.0} %, k = {K}{}",
        o.seed,
        o.secs,
        o.kill * 100.0,
        o.lookups,
        o.puts,
        if o.wan {
            "WAN (probe 5 s)"
        } else {
            "LAN (probe 1 s)"
        },
        o.loss * 100.0,
        if o.full {
            ""
        } else {
            " (TINY run: pass --bench for the real table)"
        }
    );
    println!();
    println!(
        "| N | phase | recall@20 mean / min | RPCs per lookup p50 / p95 | lookup ms p50 / p99 | put \
         ms p50 / p99 | get ms p50 / p99 | gets found | failed ops |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for &n in &o.sizes {
        run(&o, n);
    }
}

fn config(o: &Options) -> SimConfig {
    let swim = if o.wan {
        shoal_swim::Config::wan()
    } else {
        shoal_swim::Config::lan()
    };
    SimConfig {
        dht: Config {
            network: "sim".to_owned(),
            stamps: shoal_pow::StampPolicy::testnet(),
            swim,
            ..Config::default()
        },
        link: LinkModel {
            loss: o.loss,
            ..LinkModel::lan()
        },
        disk_latency: Duration::from_millis(1),
        dial_timeout: Duration::from_secs(3),
        sample_every: Some(Duration::from_secs(10)),
        sample_size: 20,
    }
}

fn run(o: &Options, n: usize) {
    let wall = Instant::now();
    let mut sim = Sim::new(o.seed, config(o));
    sim.add_converged(n);
    let built = wall.elapsed();
    let mut rng = StdRng::seed_from_u64(o.seed ^ 0xb0b);
    let total = Duration::from_secs(o.secs);
    sim.run_for(Duration::from_secs(5));

    let mut keys = Vec::new();
    let before = phase(&mut sim, &mut rng, o, &mut keys, "before");
    report(n, "before", &before);
    sim.check_records();

    let mut live = sim.live_honest();
    live.shuffle(&mut rng);
    let killed: Vec<u32> = live
        .iter()
        .copied()
        .take((n as f64 * o.kill) as usize)
        .collect();
    for &id in &killed {
        sim.crash(id);
    }
    let kill_at = sim.elapsed();
    // Until a sample of survivors evicted every killed node from its routing table (or the run's
    // time is nearly spent).
    let sample: Vec<u32> = sim.live_honest().into_iter().take(50).collect();
    let budget = total.saturating_sub(sim.elapsed() + Duration::from_secs(60));
    let evicted = sim.run_until_cond(budget, Duration::from_secs(5), |s| {
        sample.iter().all(|&i| {
            s.node(i)
                .is_none_or(|c| c.routing_table().peers().all(|p| s.is_up(p.0)))
        })
    });
    let after = phase(&mut sim, &mut rng, o, &mut keys, "after");
    report(n, "after", &after);
    sim.check_records();
    if sim.elapsed() < total {
        sim.run_until(sim.now() + (total - sim.elapsed()));
    }
    println!("state after the run: {}", state_summary(&sim));
    let secs = sim.elapsed().as_secs_f64() * sim.len() as f64;
    let s = &sim.stats;
    println!();
    println!(
        "N = {n}: {} virtual s in {:.1} s wall ({:.1} s to build the converged tables); peak \
         memory {}; per node per second: {:.2} SWIM messages / {:.0} B, {:.2} DHT messages / \
         {:.0} B; killed {} at {:.0} s, evicted from sampled tables {}; {} steps",
        sim.elapsed().as_secs(),
        wall.elapsed().as_secs_f64(),
        built.as_secs_f64(),
        vm_hwm(),
        s.swim_messages as f64 / secs,
        s.swim_bytes as f64 / secs,
        s.dht_messages as f64 / secs,
        s.dht_bytes as f64 / secs,
        killed.len(),
        kill_at.as_secs_f64(),
        evicted.map_or("not within the run".to_owned(), |d| format!(
            "{:.0} s later",
            d.as_secs_f64()
        )),
        s.steps,
    );
    let ok = mean(&before.recall) >= 0.99 && mean(&after.recall) >= 0.97;
    println!(
        "targets: recall >= 0.99 before ({:.3}) and >= 0.97 after ({:.3}): {}",
        mean(&before.recall),
        mean(&after.recall),
        if ok { "met" } else { "NOT MET" }
    );
    println!();
}

/// Puts, gets of every key put so far, and lookups of random targets, issued 20 ms apart from
/// random live nodes; waits for all.
fn phase(
    sim: &mut Sim,
    rng: &mut StdRng,
    o: &Options,
    keys: &mut Vec<Vec<u8>>,
    name: &str,
) -> Phase {
    let mut p = Phase::default();
    let live = sim.live_honest();
    let mut ops: Vec<(u32, OpId, Kind)> = Vec::new();
    let spacing = Duration::from_millis(20);
    for i in 0..o.puts {
        let key = format!("{name}-{i}").into_bytes();
        let node = live[rng.gen_range(0..live.len())];
        let put = Command::Put(PutRequest {
            key: key.clone(),
            value: vec![7; 64],
            ttl: Duration::from_secs(86_400),
            quorum: None,
            seq: None,
        });
        if let Some(op) = sim.command(node, put) {
            ops.push((node, op, Kind::Put));
        }
        keys.push(key);
        sim.run_for(spacing);
    }
    collect(sim, &mut ops, &mut p);
    for key in keys.iter() {
        let node = live[rng.gen_range(0..live.len())];
        if let Some(op) = sim.command(node, Command::Get(key.clone())) {
            ops.push((node, op, Kind::Get));
        }
        sim.run_for(spacing);
    }
    for _ in 0..o.lookups {
        let target = SimPeer(rng.gen_range(10_000_000..20_000_000));
        let node = live[rng.gen_range(0..live.len())];
        if let Some(op) = sim.command(node, Command::FindNode(target)) {
            ops.push((node, op, Kind::Lookup(target)));
        }
        sim.run_for(spacing);
    }
    collect(sim, &mut ops, &mut p);
    p
}

#[derive(Clone, Copy)]
enum Kind {
    Put,
    Get,
    Lookup(SimPeer),
}

fn collect(sim: &mut Sim, ops: &mut Vec<(u32, OpId, Kind)>, p: &mut Phase) {
    for (node, op, kind) in ops.drain(..) {
        let Some(answer) = sim.wait(node, op, Duration::from_secs(120)) else {
            p.failed += 1;
            continue;
        };
        let ms = (answer.at - answer.asked).as_secs_f64() * 1000.0;
        match (kind, answer.reply) {
            (Kind::Put, Reply::Put(Ok(_))) => p.put_ms.push(ms),
            (Kind::Get, Reply::Get(result)) => {
                p.gets += 1;
                if result.is_ok() {
                    p.found += 1;
                    p.get_ms.push(ms);
                }
            }
            (Kind::Lookup(target), Reply::FindNode(Ok(found))) => {
                let truth = sim.true_closest(&target.to_bytes(), K, Some(node));
                let hits = found.peers.iter().filter(|p| truth.contains(p)).count();
                p.recall.push(hits as f64 / truth.len().max(1) as f64);
                p.rpcs.push(f64::from(found.stats.requests));
                p.lookup_ms.push(ms);
            }
            _ => p.failed += 1,
        }
    }
}

fn report(n: usize, name: &str, p: &Phase) {
    let pair = |v: &[f64], a: f64, b: f64| {
        let mut v = v.to_vec();
        match (percentile(&mut v, a), percentile(&mut v, b)) {
            (Some(x), Some(y)) => format!("{x:.1} / {y:.1}"),
            _ => "-".to_owned(),
        }
    };
    let min = p.recall.iter().copied().fold(f64::INFINITY, f64::min);
    println!(
        "| {n} | {name} | {:.3} / {:.3} | {} | {} | {} | {} | {} of {} | {} |",
        mean(&p.recall),
        if min.is_finite() { min } else { 0.0 },
        pair(&p.rpcs, 0.5, 0.95),
        pair(&p.lookup_ms, 0.5, 0.99),
        pair(&p.put_ms, 0.5, 0.99),
        pair(&p.get_ms, 0.5, 0.99),
        p.found,
        p.gets,
        p.failed
    );
}

/// Sums of the nodes' queues and tables: what holds the memory a run peaks at.
fn state_summary(sim: &Sim) -> String {
    let mut swim = [0usize; 5];
    let mut core = [0usize; 6];
    for id in sim.live_honest() {
        let Some(c) = sim.node(id) else { continue };
        let q = c.membership().queue_lengths();
        for (total, n) in swim.iter_mut().zip([
            q.suspicions,
            q.broadcasts,
            q.tombstones,
            q.transmits,
            q.events,
        ]) {
            *total += n;
        }
        let s = c.sizes();
        for (total, n) in core
            .iter_mut()
            .zip([s.departed, s.reported, s.wanted, s.held, s.ops, s.pending])
        {
            *total += n;
        }
    }
    format!(
        "SWIM suspicions {}, queued updates {}, tombstones {}, transmits {}, events {}; core \
         departed proofs {}, reported {}, wanted {}, held {}, ops {}, pending {}; sim deliveries \
         {}",
        swim[0],
        swim[1],
        swim[2],
        swim[3],
        swim[4],
        core[0],
        core[1],
        core[2],
        core[3],
        core[4],
        core[5],
        sim.pending()
    )
}

fn mean(v: &[f64]) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.iter().sum::<f64>() / v.len() as f64
}

/// Peak resident memory of this process, from `/proc/self/status` (Linux).
fn vm_hwm() -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .map(|l| l.trim_start_matches("VmHWM:").trim().to_string())
        })
        .unwrap_or_else(|| "unavailable".to_string())
}
