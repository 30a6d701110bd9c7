//! The DHT simulator as a benchmark: N simulated nodes (the DHT core with SWIM inside, every
//! message through the real codecs) on virtual time. Prints a markdown table: recall@20 of
//! find-node against the true 20 closest live nodes, RPCs per find-node and per get, the share of
//! gets answered in one round (at most alpha requests, all sent at once), put and get latency in
//! virtual time, get success and the share of operations that took the one-hop path; in four
//! phases: settled ("before"), right after killing a fifth of the nodes ("kill", their deaths
//! not yet known), once they are evicted ("after"), and while a tenth more join ("joins"). Then
//! messages and bytes per node per second, wall time and peak memory.
//!
//! Find-node and gets use the default route (one hop from the local view once it is settled);
//! `--iterative` forces Kademlia's lookup for every operation, for comparison.
//!
//! `cargo bench -p shoal-dht --bench dht_sim` runs N = 1,000 and N = 10,000 for 10 virtual
//! minutes each (the larger one takes most of the time; run one size per process for a clean
//! memory figure). Options after `--`: `--nodes 1000,10000`, `--secs S` (virtual seconds per run,
//! 600), `--seed X` (42), `--kill F` (fraction killed, 0.2), `--lookups L` (200), `--puts P`
//! (200), `--swim lan|wan` (SWIM timing, wan), `--loss P` (link loss, 0). Without `--bench` (as
//! under `cargo test --benches`) it runs 60 nodes for 60 virtual seconds, so CI keeps it
//! compiling and working.

mod common;

use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use shoal_dht::Config;
use shoal_dht::core::{Command, OpId, Peer, Reply};
use shoal_dht::node::{Path, PutRequest, Route};
use shoal_dht::sim::{Sim, SimConfig, SimPeer};
use shoal_swim::sim::{LinkModel, percentile};

use common::Args;

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
    route: Route,
}

impl Options {
    fn parse() -> Self {
        let a = Args::parse();
        let full = a.full;
        Self {
            full,
            sizes: a
                .list("--nodes")
                .unwrap_or_else(|| if full { vec![1000, 10_000] } else { vec![60] }),
            secs: a.number("--secs", 600.0, 60.0) as u64,
            seed: a.number("--seed", 42.0, 42.0) as u64,
            kill: a.number("--kill", 0.2, 0.2),
            lookups: a.number("--lookups", 200.0, 20.0) as usize,
            puts: a.number("--puts", 200.0, 10.0) as usize,
            wan: a.value("--swim").is_none_or(|s| s != "lan"),
            loss: a.number("--loss", 0.0, 0.0),
            route: if a.flag("--iterative") {
                Route::Iterative
            } else {
                Route::Auto
            },
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
    get_rpcs: Vec<f64>,
    one_round: usize,
    failed: usize,
    found: usize,
    gets: usize,
    one_hop: usize,
    operations: usize,
}

fn main() {
    let o = Options::parse();
    println!(
        "dht_sim: seed {}, {} virtual s per run, kill {:.0} %, {} lookups and {} puts + gets per \
         phase, SWIM {}, link 1-5 ms, loss {:.0} %, k = {K}, route {:?}{}",
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
        o.route,
        if o.full {
            ""
        } else {
            " (TINY run: pass --bench for the real table)"
        }
    );
    println!();
    println!(
        "| N | phase | recall@20 mean / min | RPCs per find-node p50 / p95 | RPCs per get p50 / \
         p95 | gets in one round | find-node ms p50 / p99 | put ms p50 / p99 | get ms p50 / p99 | \
         gets found | one-hop ops | failed ops |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
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
        // About one scrypt evaluation of the real puzzle (N = 2^14); the measured figure is in
        // docs/benchmarks.md, "Proofs of work".
        check_time: Duration::from_millis(30),
        sample_every: Some(Duration::from_secs(10)),
        sample_size: 20,
        service: None,
    }
}

fn run(o: &Options, n: usize) {
    let wall = Instant::now();
    let mut sim = Sim::new(o.seed, config(o));
    sim.add_converged(n);
    let built = wall.elapsed();
    let mut rng = StdRng::seed_from_u64(o.seed ^ 0xb0b);
    let total = Duration::from_secs(o.secs);
    // Until the views count as settled (one-hop routing applies).
    sim.run_for(sim.config().dht.view_settle + Duration::from_secs(1));

    let mut keys = Vec::new();
    let mut success = Vec::new();
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
    let kill = phase(&mut sim, &mut rng, o, &mut keys, "kill");
    report(n, "kill", &kill);
    success.push(kill.success());
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
    success.push(after.success());
    sim.check_records();
    // A wave of joins: a tenth more nodes, each through a random live member, all at once.
    let joining = n / 10;
    let seeds = sim.live_honest();
    let first = sim.add_nodes(joining, 0);
    for j in first..first + joining as u32 {
        let seed = seeds[rng.gen_range(0..seeds.len())];
        sim.join(j, &[seed]);
    }
    let joins = phase(&mut sim, &mut rng, o, &mut keys, "joins");
    report(n, "joins", &joins);
    success.push(joins.success());
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
    let mut rpcs = before.get_rpcs.clone();
    let p50 = percentile(&mut rpcs, 0.5).unwrap_or(f64::NAN);
    let worst = success.iter().copied().fold(1.0, f64::min);
    let ok = p50 <= 3.0 && worst >= 0.999;
    println!(
        "targets: RPCs per get p50 <= 3 ({p50:.0}), get success >= 0.999 after the kill and \
         during joins (worst phase {worst:.4}): {}",
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
    let alpha = sim.config().dht.lookup_parallelism.get() as u32;
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
            route: o.route,
        });
        if let Some(op) = sim.command(node, put) {
            ops.push((node, op, Kind::Put));
        }
        keys.push(key);
        sim.run_for(spacing);
    }
    collect(sim, &mut ops, &mut p, alpha);
    for key in keys.iter() {
        let node = live[rng.gen_range(0..live.len())];
        let get = Command::Get {
            key: key.clone(),
            route: o.route,
            prove: false,
        };
        if let Some(op) = sim.command(node, get) {
            ops.push((node, op, Kind::Get));
        }
        sim.run_for(spacing);
    }
    for _ in 0..o.lookups {
        let target = SimPeer(rng.gen_range(10_000_000..20_000_000));
        let node = live[rng.gen_range(0..live.len())];
        let find = Command::FindNode {
            peer: target,
            route: o.route,
        };
        if let Some(op) = sim.command(node, find) {
            ops.push((node, op, Kind::Lookup(target)));
        }
        sim.run_for(spacing);
    }
    collect(sim, &mut ops, &mut p, alpha);
    p
}

#[derive(Clone, Copy)]
enum Kind {
    Put,
    Get,
    Lookup(SimPeer),
}

fn collect(sim: &mut Sim, ops: &mut Vec<(u32, OpId, Kind)>, p: &mut Phase, alpha: u32) {
    for (node, op, kind) in ops.drain(..) {
        let Some(answer) = sim.wait(node, op, Duration::from_secs(120)) else {
            p.failed += 1;
            continue;
        };
        let ms = (answer.at - answer.asked).as_secs_f64() * 1000.0;
        match (kind, answer.reply) {
            (Kind::Put, Reply::Put(Ok(ok))) => {
                p.put_ms.push(ms);
                p.count(ok.path);
            }
            (Kind::Get, Reply::Get(result)) => {
                p.gets += 1;
                if let Ok(ok) = *result {
                    p.found += 1;
                    p.get_ms.push(ms);
                    p.get_rpcs.push(f64::from(ok.requests));
                    p.one_round += usize::from(ok.requests <= alpha);
                    p.count(ok.path);
                }
            }
            (Kind::Lookup(target), Reply::FindNode(Ok(found))) => {
                p.count(found.path);
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

impl Phase {
    fn count(&mut self, path: Path) {
        self.operations += 1;
        self.one_hop += usize::from(path == Path::OneHop);
    }

    fn success(&self) -> f64 {
        self.found as f64 / self.gets.max(1) as f64
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
        "| {n} | {name} | {:.3} / {:.3} | {} | {} | {:.3} | {} | {} | {} | {} of {} | {:.3} | {} |",
        mean(&p.recall),
        if min.is_finite() { min } else { 0.0 },
        pair(&p.rpcs, 0.5, 0.95),
        pair(&p.get_rpcs, 0.5, 0.95),
        p.one_round as f64 / p.found.max(1) as f64,
        pair(&p.lookup_ms, 0.5, 0.99),
        pair(&p.put_ms, 0.5, 0.99),
        pair(&p.get_ms, 0.5, 0.99),
        p.found,
        p.gets,
        p.one_hop as f64 / p.operations.max(1) as f64,
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
