//! The DHT under attack, in the simulator: a share f of the nodes paid for valid identities and
//! act against the others ([`shoal_dht::sim::Adversary`]: eclipse, drop, stale; each its own
//! run). Prints a markdown table per route (one hop from the local view, the default; and
//! Kademlia's iterative lookup, forced): lookup success (of the benign nodes among the true k
//! closest, the share a find-node returns, and the share of lookups that found all), RPCs per
//! lookup, get success (the get returns the latest acknowledged version), put durability (the
//! share of keys some of the benign nodes among the k closest hold); then the same with drop nodes
//! placed at m of the 20 places nearest each of 5 keys (what a Sybil attacker near those keys
//! holds), and what such a placement costs.
//!
//! A one-hop get hears from `get_paths` groups of alpha replicas (`--paths 1,2`, both by
//! default); the iterative route runs with 1 and 2 disjoint lookup paths (`lookup_paths`).
//! Last, lookups that do not start from the full membership (a joiner's first, from a few
//! random peers) over a synthetic network with eclipse attackers
//! ([`shoal_dht::sim::lookups`]), with 1 to 4 disjoint paths: what more paths buy when the
//! view is not full.
//!
//! `cargo bench -p shoal-dht --bench adversary` runs N = 1,000, f = 0, 10, 20 and 30 %. Options
//! after `--`: `--nodes N` (1000), `--seed X` (42), `--puts P` (200), `--gets G` (1000),
//! `--lookups L` (500), `--shares 0,0.1,0.2,0.3`, `--flood-rate R` (12 puts/s per flooder),
//! `--notice-rate R` (48 notices/s per flooder), `--notice-nodes N` (200: every notice reaches
//! every node, so the notice flood runs on a smaller network), `--only routes,placed,flood,
//! notices,views,sybil` (the sections to run). Without `--bench` (as under `cargo test
//! --benches`) it runs 60 nodes with few operations, so CI keeps it compiling and working.

mod common;

use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use shoal_dht::Config;
use shoal_dht::core::{Command, OpId, Peer, Reply};
use shoal_dht::node::{PutRequest, Route};
use shoal_dht::sim::{Adversary, ServiceTimes, Sim, SimConfig, SimPeer};
use shoal_swim::sim::{LinkModel, percentile};

use common::Args;

struct Options {
    full: bool,
    nodes: usize,
    seed: u64,
    puts: usize,
    gets: usize,
    lookups: usize,
    shares: Vec<f64>,
    paths: Vec<usize>,
    flood_rate: f64,
    notice_rate: f64,
    notice_nodes: usize,
    /// The sections to run (`--only`); all when empty.
    only: Vec<String>,
}

impl Options {
    fn runs_full(&self) -> bool {
        self.full
    }

    fn runs(&self, section: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|s| s == section)
    }
}

impl Options {
    fn parse() -> Self {
        let a = Args::parse();
        let full = a.full;
        Self {
            full,
            nodes: a.number("--nodes", 1000, 60),
            seed: a.number("--seed", 42, 42),
            puts: a.number("--puts", 200, 10),
            gets: a.number("--gets", 1000, 20),
            lookups: a.number("--lookups", 500, 20),
            shares: a.list("--shares").unwrap_or_else(|| {
                if full {
                    vec![0.0, 0.1, 0.2, 0.3]
                } else {
                    vec![0.0, 0.2]
                }
            }),
            paths: a.list("--paths").unwrap_or_else(|| vec![1, 2]),
            flood_rate: a.number("--flood-rate", 12.0, 12.0),
            notice_rate: a.number("--notice-rate", 48.0, 48.0),
            notice_nodes: a.number("--notice-nodes", 200, 30),
            only: a.list("--only").unwrap_or_default(),
        }
    }
}

/// Who attacks in one run.
#[derive(Clone, Copy)]
enum Attack {
    /// Nobody.
    None,
    /// A share of the nodes, picked at random, each in the role given.
    Random(Adversary, f64),
    /// Drop nodes at `m` of the 20 places nearest each targeted key (what a Sybil attacker who
    /// paid for identities near those keys holds).
    Placed(usize),
}

/// Keys a placed attack targets at most: keys whose 20 nearest nodes are disjoint from those of
/// the keys targeted before them, so one key's attackers never take another's places.
const TARGETED_KEYS: usize = 5;

/// What one run measured.
#[derive(Default)]
struct Outcome {
    recall: Vec<f64>,
    complete: usize,
    lookups: usize,
    rpcs: Vec<f64>,
    gets: usize,
    get_rpcs: Vec<f64>,
    got_latest: usize,
    keys: usize,
    durable: usize,
}

fn config(paths: usize, lookup_paths: usize) -> SimConfig {
    let nz = |n: usize| std::num::NonZeroUsize::new(n).expect("at least one path");
    SimConfig {
        dht: Config {
            network: "sim".to_owned(),
            get_paths: nz(paths),
            lookup_paths: nz(lookup_paths),
            stamps: shoal_pow::StampPolicy::testnet(),
            swim: shoal_swim::Config::lan(),
            ..Config::default()
        },
        link: LinkModel::lan(),
        disk_latency: Duration::from_millis(1),
        dial_timeout: Duration::from_secs(3),
        check_time: Duration::from_millis(30),
        sample_every: Some(Duration::from_secs(10)),
        sample_size: 20,
        service: None,
    }
}

fn main() {
    let o = Options::parse();
    println!("## shoal-dht under attack (simulator)");
    println!();
    println!(
        "seed {}; N = {}; k = 20, put quorum 3, alpha 3; LAN links; \
         {} puts (each key put twice: the stale attack serves the first), {} gets, {} lookups \
         per run, from random benign nodes",
        o.seed, o.nodes, o.puts, o.gets, o.lookups
    );
    let mut runs: Vec<(Route, usize, usize)> =
        o.paths.iter().map(|&d| (Route::Auto, d, 1)).collect();
    runs.push((Route::Iterative, 1, 1));
    runs.push((Route::Iterative, 1, 2));
    if !o.runs("routes") {
        runs.clear();
    }
    for (route, paths, lookup_paths) in runs {
        println!();
        println!(
            "### route: {}",
            match route {
                Route::Auto => format!(
                    "one hop from the local view (default), get_paths = {paths} ({} replicas per get)",
                    3 * paths
                ),
                _ => format!(
                    "iterative (Kademlia's lookup, forced), {lookup_paths} disjoint path{}",
                    if lookup_paths == 1 { "" } else { "s" }
                ),
            }
        );
        println!();
        println!(
            "| attack | f | lookup success: mean / all k found | RPCs per lookup p50 / p95 | \
             get success (latest version) | RPCs per get p50 / p95 | put durability | wall |"
        );
        println!("|---|---|---|---|---|---|---|---|");
        for &f in &o.shares {
            let attacks: Vec<Attack> = if f == 0.0 {
                vec![Attack::None]
            } else {
                [Adversary::Eclipse, Adversary::Drop, Adversary::Stale]
                    .into_iter()
                    .map(|a| Attack::Random(a, f))
                    .collect()
            };
            for attack in attacks {
                let wall = Instant::now();
                let out = run(&o, route, (paths, lookup_paths), attack);
                let mut rpcs = out.rpcs.clone();
                let p50 = percentile(&mut rpcs, 0.5).unwrap_or(f64::NAN);
                let p95 = percentile(&mut rpcs, 0.95).unwrap_or(f64::NAN);
                let mut get_rpcs = out.get_rpcs.clone();
                let g50 = percentile(&mut get_rpcs, 0.5).unwrap_or(f64::NAN);
                let g95 = percentile(&mut get_rpcs, 0.95).unwrap_or(f64::NAN);
                println!(
                    "| {} | {:.0} % | {:.3} / {:.3} | {p50:.0} / {p95:.0} | {:.4} ({} of {}) | {g50:.0} / {g95:.0} | {:.4} | {:.0} s |",
                    match attack {
                        Attack::Random(a, _) => name(a),
                        _ => "none",
                    },
                    f * 100.0,
                    mean(&out.recall),
                    out.complete as f64 / out.lookups.max(1) as f64,
                    out.got_latest as f64 / out.gets.max(1) as f64,
                    out.got_latest,
                    out.gets,
                    out.durable as f64 / out.keys.max(1) as f64,
                    wall.elapsed().as_secs_f64(),
                );
            }
        }
    }
    if o.runs("placed") {
        placed(&o);
    }
    if o.runs("flood") {
        flood(&o);
    }
    if o.runs("notices") {
        notice_flood(&o);
    }
    if o.runs("views") {
        partial_views(&o);
    }
    if o.runs("sybil") {
        sybil_cost(&o);
    }
}

/// What handling a message costs a simulated node in the flood runs: a replica put checks the
/// record's signature and stamp and signs a receipt (two ed25519 operations, about 75 µs on
/// this machine, and the decoding and the store's bookkeeping around them); anything else is
/// decoded and looked up.
const FLOOD_SERVICE: ServiceTimes = ServiceTimes {
    replica_put: Duration::from_micros(150),
    // One ed25519 check and a stamp's hash, with the decoding around them.
    notice: Duration::from_micros(80),
    message: Duration::from_micros(20),
};

/// The flood attack: a share f of the nodes spend their stamps on puts as fast as the stamp
/// price lets one core, while benign nodes put at their own pace; the benign puts' latency,
/// with every node handling one message at a time ([`FLOOD_SERVICE`]).
fn flood(o: &Options) {
    let secs = if o.nodes >= 1000 { 10 } else { 2 };
    println!();
    println!(
        "### flood: a share f of the nodes put {:.0} records a second each (the main network's \
         20-bit stamps let one core make about 12: 84 ms a stamp; `--flood-rate`), {secs} \
         virtual s; benign nodes make 100 puts/s in all; every node handles one message at a \
         time (a replica put {} µs, anything else {} µs)",
        o.flood_rate,
        FLOOD_SERVICE.replica_put.as_micros(),
        FLOOD_SERVICE.message.as_micros(),
    );
    println!();
    println!(
        "| f | flood puts made | benign puts acknowledged | benign put latency p50 / p99 / max | busiest node's load | wall |"
    );
    println!("|---|---|---|---|---|---|");
    for &f in &o.shares {
        let wall = Instant::now();
        let r = run_flood(o, f, Duration::from_secs(secs));
        let mut latency = r.latency.clone();
        let p50 = percentile(&mut latency, 0.5).unwrap_or(f64::NAN);
        let p99 = percentile(&mut latency, 0.99).unwrap_or(f64::NAN);
        let max = latency.iter().copied().fold(0.0, f64::max);
        println!(
            "| {:.0} % | {} | {} of {} | {p50:.1} / {p99:.1} / {max:.1} ms | {:.1} % | {:.0} s |",
            f * 100.0,
            r.flood_puts,
            r.acked,
            r.asked,
            r.busiest * 100.0,
            wall.elapsed().as_secs_f64(),
        );
    }
}

#[derive(Default)]
struct Flooded {
    flood_puts: usize,
    asked: usize,
    acked: usize,
    latency: Vec<f64>,
    /// The largest share of the run one node spent handling messages.
    busiest: f64,
}

fn run_flood(o: &Options, f: f64, length: Duration) -> Flooded {
    let mut config = config(1, 1);
    config.service = Some(FLOOD_SERVICE);
    let mut sim = Sim::new(o.seed, config);
    sim.add_converged(o.nodes);
    sim.run_for(sim.config().dht.view_settle + Duration::from_secs(1));
    let mut rng = StdRng::seed_from_u64(o.seed ^ 0xf100d);
    let mut ids: Vec<u32> = (0..o.nodes as u32).collect();
    ids.shuffle(&mut rng);
    let (flooders, benign) = ids.split_at((o.nodes as f64 * f).round() as usize);
    let put = |key: Vec<u8>, value: Vec<u8>| {
        Command::Put(PutRequest {
            key,
            value,
            ttl: Duration::from_secs(3600),
            quorum: None,
            seq: None,
            route: Route::Auto,
        })
    };
    let tick = Duration::from_millis(10);
    let per_tick = o.flood_rate * tick.as_secs_f64();
    let mut owed = 0.0;
    let mut out = Flooded::default();
    let mut honest = Vec::new();
    let start = sim.now();
    let mut n = 0u64;
    while sim.now() < start + length {
        owed += per_tick;
        while owed >= 1.0 {
            owed -= 1.0;
            for &id in flooders {
                n += 1;
                let key = format!("flood-{id}-{n}").into_bytes();
                if sim.command(id, put(key, vec![0xf1; 1024])).is_some() {
                    out.flood_puts += 1;
                }
            }
        }
        let node = benign[rng.gen_range(0..benign.len())];
        let key = format!("benign-{n}-{node}").into_bytes();
        n += 1;
        if let Some(op) = sim.command(node, put(key, vec![7; 64])) {
            honest.push((node, op));
        }
        sim.run_for(tick);
    }
    for (node, op) in honest {
        out.asked += 1;
        let Some(answer) = sim.wait(node, op, Duration::from_secs(60)) else {
            continue;
        };
        if matches!(answer.reply, Reply::Put(Ok(_))) {
            out.acked += 1;
            let ms = answer
                .at
                .saturating_duration_since(answer.asked)
                .as_secs_f64()
                * 1000.0;
            out.latency.push(ms);
        }
    }
    let elapsed = sim.now().saturating_duration_since(start).as_secs_f64();
    out.busiest = sim.busiest() / elapsed.max(f64::EPSILON);
    out
}

/// The notice flood: a share f of the nodes announce as fast as the notice stamps' price lets
/// one core (the main network's 18 bits: about 48 a second), and every notice goes to every node
/// through the broadcast; benign nodes announce 10 a second in all. What it costs each node, and
/// how fast benign notices still reach everyone.
fn notice_flood(o: &Options) {
    let n = o.notice_nodes;
    let secs = if o.runs_full() { 3 } else { 1 };
    println!();
    println!(
        "### notice flood: N = {n}, a share f of the nodes announce {:.0} notices a second each \
         (the main network's 18-bit notice stamps let one core make about 48: 21 ms a stamp; \
         `--notice-rate`), {secs} virtual s; benign nodes announce 10 a second in all; every node \
         handles one message at a time (a notice checked {} µs more than the {} µs of any \
         message); then 5 s for the last to arrive",
        o.notice_rate,
        FLOOD_SERVICE.notice.as_micros(),
        FLOOD_SERVICE.message.as_micros(),
    );
    println!();
    println!(
        "| f | flood notices made | flood notices delivered per node per s | benign notices delivered (of benign node × notice pairs) | benign delivery latency p50 / p99 / max | busiest node's load | wall |"
    );
    println!("|---|---|---|---|---|---|---|");
    for &f in &o.shares {
        let wall = Instant::now();
        let r = run_notice_flood(o, f, Duration::from_secs(secs));
        let mut latency = r.latency.clone();
        let p50 = percentile(&mut latency, 0.5).unwrap_or(f64::NAN);
        let p99 = percentile(&mut latency, 0.99).unwrap_or(f64::NAN);
        let max = latency.iter().copied().fold(0.0, f64::max);
        println!(
            "| {:.0} % | {} | {:.0} | {:.4} ({} of {}) | {p50:.0} / {p99:.0} / {max:.0} ms | {:.1} % | {:.0} s |",
            f * 100.0,
            r.flood_notices,
            r.flood_delivered_per_node_s,
            r.delivered as f64 / r.expected.max(1) as f64,
            r.delivered,
            r.expected,
            r.busiest * 100.0,
            wall.elapsed().as_secs_f64(),
        );
    }
}

#[derive(Default)]
struct NoticeFlooded {
    flood_notices: usize,
    flood_delivered_per_node_s: f64,
    expected: usize,
    delivered: usize,
    latency: Vec<f64>,
    busiest: f64,
}

fn run_notice_flood(o: &Options, f: f64, length: Duration) -> NoticeFlooded {
    let mut config = config(1, 1);
    config.service = Some(FLOOD_SERVICE);
    let n = o.notice_nodes;
    let mut sim = Sim::new(o.seed, config);
    sim.add_converged(n);
    sim.run_for(sim.config().dht.view_settle + Duration::from_secs(1));
    sim.forget_delivered();
    let mut rng = StdRng::seed_from_u64(o.seed ^ 0x4071ce);
    let mut ids: Vec<u32> = (0..n as u32).collect();
    ids.shuffle(&mut rng);
    let (flooders, benign) = ids.split_at((n as f64 * f).round() as usize);
    let announce = |key: Vec<u8>| Command::Announce {
        key,
        value: vec![0x5a; 64],
        seq: None,
    };
    let tick = Duration::from_millis(10);
    let per_tick = o.notice_rate * tick.as_secs_f64();
    let benign_per_tick = 10.0 * tick.as_secs_f64();
    let (mut owed, mut benign_owed) = (0.0, 0.0);
    let mut out = NoticeFlooded::default();
    // Benign notices by key: when each was announced.
    let mut announced: std::collections::HashMap<Vec<u8>, Instant> = Default::default();
    let start = sim.now();
    let mut k = 0u64;
    while sim.now() < start + length {
        owed += per_tick;
        while owed >= 1.0 {
            owed -= 1.0;
            for &id in flooders {
                k += 1;
                if sim
                    .command(id, announce(format!("flood-{id}-{k}").into_bytes()))
                    .is_some()
                {
                    out.flood_notices += 1;
                }
            }
        }
        benign_owed += benign_per_tick;
        while benign_owed >= 1.0 {
            benign_owed -= 1.0;
            let node = benign[rng.gen_range(0..benign.len())];
            k += 1;
            let key = format!("benign-{node}-{k}").into_bytes();
            if sim.command(node, announce(key.clone())).is_some() {
                announced.insert(key, sim.now());
            }
        }
        sim.run_for(tick);
    }
    sim.run_for(Duration::from_secs(5));
    let elapsed = sim.now().saturating_duration_since(start).as_secs_f64();
    let mut flood_delivered = 0usize;
    for &id in benign {
        for (notice, at) in sim.delivered(id).iter().zip(sim.delivered_at(id)) {
            let key = &notice.notice().key;
            match announced.get(key) {
                Some(asked) => {
                    out.delivered += 1;
                    let ms = at.saturating_duration_since(*asked).as_secs_f64() * 1000.0;
                    out.latency.push(ms);
                }
                None => flood_delivered += 1,
            }
        }
    }
    out.expected = announced.len() * benign.len();
    out.flood_delivered_per_node_s =
        flood_delivered as f64 / benign.len().max(1) as f64 / length.as_secs_f64();
    out.busiest = sim.busiest() / elapsed.max(f64::EPSILON);
    out
}

/// Lookups from a few random peers over a synthetic network with eclipse attackers, with 1 to
/// 4 disjoint paths.
fn partial_views(o: &Options) {
    let seeds = 3;
    println!();
    println!(
        "### lookups from {seeds} random peers, not the full membership (synthetic network, \
         N = {}, honest peers know their 20 closest and 40 others, liars answer with the \
         liars closest to the target; {} lookups each)",
        o.nodes, o.lookups
    );
    println!();
    println!(
        "| liars | paths | honest closest found | lookups that found all | requests per lookup |"
    );
    println!("|---|---|---|---|---|");
    for &f in &o.shares {
        for paths in 1..=4 {
            let found = shoal_dht::sim::lookups::EclipseLookups {
                n: o.nodes,
                liars: f,
                seeds,
                paths,
                lookups: o.lookups,
                k: 20,
                alpha: 3,
                known: 40,
            }
            .run(o.seed);
            println!(
                "| {:.0} % | {paths} | {:.4} | {:.3} | {:.1} |",
                f * 100.0,
                found.share(),
                found.complete as f64 / o.lookups.max(1) as f64,
                found.requests as f64 / o.lookups.max(1) as f64,
            );
        }
    }
}

/// The placed attack: drop nodes at `m` of the 20 places nearest each of the targeted keys; gets
/// of those keys only.
fn placed(o: &Options) {
    println!();
    println!(
        "### placed: drop nodes at m of the 20 places nearest each of up to {TARGETED_KEYS} keys \
         whose places do not overlap (gets of those keys only)"
    );
    println!();
    println!(
        "| route | m of 20 | get success (latest version) | RPCs per get p50 | put durability |"
    );
    println!("|---|---|---|---|---|");
    let mut runs: Vec<(Route, usize)> = o.paths.iter().map(|&d| (Route::Auto, d)).collect();
    runs.push((Route::Iterative, 1));
    for (route, paths) in runs {
        for m in [10, 17, 20] {
            let out = run(o, route, (paths, 1), Attack::Placed(m));
            let mut get_rpcs = out.get_rpcs.clone();
            let g50 = percentile(&mut get_rpcs, 0.5).unwrap_or(f64::NAN);
            println!(
                "| {} | {m} | {:.4} ({} of {}) | {g50:.0} | {:.4} |",
                match route {
                    Route::Auto => format!("one hop, get_paths = {paths}"),
                    _ => "iterative".to_owned(),
                },
                out.got_latest as f64 / out.gets.max(1) as f64,
                out.got_latest,
                out.gets,
                out.durable as f64 / out.keys.max(1) as f64,
            );
        }
    }
}

fn name(a: Adversary) -> &'static str {
    match a {
        Adversary::Eclipse => "eclipse",
        Adversary::Drop => "drop",
        Adversary::Stale => "stale",
    }
}

fn run(
    o: &Options,
    route: Route,
    (paths, lookup_paths): (usize, usize),
    attack: Attack,
) -> Outcome {
    let mut sim = Sim::new(o.seed, config(paths, lookup_paths));
    sim.add_converged(o.nodes);
    let mut rng = StdRng::seed_from_u64(o.seed ^ 0xadd);
    let mut ids: Vec<u32> = (0..o.nodes as u32).collect();
    ids.shuffle(&mut rng);
    let mut keys: Vec<Vec<u8>> = (0..o.puts)
        .map(|i| format!("key-{i}").into_bytes())
        .collect();
    let targeted = match attack {
        Attack::None => keys.len(),
        Attack::Random(kind, f) => {
            for &id in ids.iter().take((o.nodes as f64 * f).round() as usize) {
                sim.set_adversary(id, Some(kind));
            }
            keys.len()
        }
        Attack::Placed(m) => {
            let k = sim.config().dht.replication_factor.get();
            let mut taken: Vec<SimPeer> = Vec::new();
            let mut chosen = Vec::new();
            for (i, key) in keys.iter().enumerate() {
                let near = sim.true_closest(key, k, None);
                if near.iter().any(|p| taken.contains(p)) {
                    continue;
                }
                taken.extend(&near);
                chosen.push(i);
                for p in near.iter().take(m) {
                    sim.set_adversary(p.0, Some(Adversary::Drop));
                }
                if chosen.len() == TARGETED_KEYS {
                    break;
                }
            }
            // The targeted keys first: gets and durability look at those only.
            for (to, &from) in chosen.iter().enumerate() {
                keys.swap(to, from);
            }
            chosen.len().max(1)
        }
    };
    sim.run_for(sim.config().dht.view_settle + Duration::from_secs(1));
    let benign = sim.live_benign();
    let pick = |rng: &mut StdRng| benign[rng.gen_range(0..benign.len())];
    let spacing = Duration::from_millis(20);
    let mut out = Outcome::default();

    // Every key is put twice, from the same node: a stale node keeps serving the first copy.
    for version in 0..2u8 {
        let mut ops = Vec::new();
        for (i, key) in keys.iter().enumerate() {
            let node = benign[i % benign.len()];
            let put = Command::Put(PutRequest {
                key: key.clone(),
                value: vec![version; 64],
                ttl: Duration::from_secs(86_400),
                quorum: None,
                seq: Some(u64::from(version) + 1),
                route,
            });
            if let Some(op) = sim.command(node, put) {
                ops.push((node, op));
            }
            sim.run_for(spacing);
        }
        for (node, op) in ops {
            sim.wait(node, op, Duration::from_secs(120));
        }
    }
    sim.run_for(Duration::from_secs(2));
    let k = sim.config().dht.replication_factor.get();
    for key in &keys[..targeted] {
        out.keys += 1;
        // The benign nodes among the k closest of all: where the puts went.
        let held = sim.true_closest(key, k, None).iter().any(|p| {
            sim.adversary(p.0).is_none()
                && sim
                    .node(p.0)
                    .and_then(|c| c.stored(key))
                    .is_some_and(|r| r.record().seq == 2)
        });
        out.durable += usize::from(held);
    }

    let mut gets = Vec::new();
    for _ in 0..o.gets {
        let key = keys[rng.gen_range(0..targeted)].clone();
        let node = pick(&mut rng);
        if let Some(op) = sim.command(
            node,
            Command::Get {
                key,
                route,
                prove: false,
            },
        ) {
            gets.push((node, op));
        }
        sim.run_for(spacing);
    }
    let mut lookups: Vec<(u32, OpId, SimPeer)> = Vec::new();
    for _ in 0..o.lookups {
        let target = SimPeer(rng.gen_range(10_000_000..20_000_000));
        let node = pick(&mut rng);
        if let Some(op) = sim.command(
            node,
            Command::FindNode {
                peer: target,
                route,
            },
        ) {
            lookups.push((node, op, target));
        }
        sim.run_for(spacing);
    }
    for (node, op) in gets {
        out.gets += 1;
        let Some(answer) = sim.wait(node, op, Duration::from_secs(120)) else {
            continue;
        };
        if let Reply::Get(result) = answer.reply
            && let Ok(found) = *result
        {
            out.get_rpcs.push(f64::from(found.requests));
            out.got_latest += usize::from(found.record.seq == 2);
        }
    }
    for (node, op, target) in lookups {
        out.lookups += 1;
        let Some(answer) = sim.wait(node, op, Duration::from_secs(120)) else {
            out.recall.push(0.0);
            continue;
        };
        let Reply::FindNode(Ok(found)) = answer.reply else {
            out.recall.push(0.0);
            continue;
        };
        // The benign nodes among the true k closest of every live node: an adversary closer to
        // the target is rightly in the answer, a benign one missing was hidden.
        let truth: Vec<SimPeer> = sim
            .true_closest(&target.to_bytes(), k, Some(node))
            .into_iter()
            .filter(|p| sim.adversary(p.0).is_none())
            .collect();
        let hits = found.peers.iter().filter(|p| truth.contains(p)).count();
        out.recall.push(hits as f64 / truth.len().max(1) as f64);
        out.complete += usize::from(hits == truth.len());
        out.rpcs.push(f64::from(found.stats.requests));
    }
    out
}

/// What placing Sybil identities near a key costs, from the puzzle's parameters: an identity
/// lands among the k closest of N nodes to a given key with probability about k / N, so one
/// near a target costs N / k identities, and taking all k places (an eclipse of the key) about
/// N of them.
fn sybil_cost(o: &Options) {
    let config = Config::default();
    let testnet = Config::testnet();
    let k = config.replication_factor.get() as f64;
    let n = o.nodes as f64;
    // One scrypt evaluation (N = 2^14, r = 8, p = 1) takes about 30 ms on this machine
    // (docs/benchmarks.md, "Proofs of work"); each try of the puzzle is one.
    let eval_s = 0.030;
    println!();
    println!("### Sybil placement (from the puzzle's parameters; one scrypt evaluation ≈ 30 ms)");
    println!();
    println!(
        "| network | puzzle difficulty (bits) | CPU per identity | one identity among the k closest of a key (N / k identities) | all k places of a key (≈ N identities) |"
    );
    println!("|---|---|---|---|---|");
    for (label, c) in [("main", &config), ("testnet", &testnet)] {
        let per = 2f64.powi(i32::from(c.puzzle.difficulty)) * eval_s;
        println!(
            "| {label} | {} | {} | {} | {} |",
            c.puzzle.difficulty,
            human(per),
            human(per * n / k),
            human(per * n),
        );
    }
    println!();
    println!("N = {} here; the cost grows linearly with N.", o.nodes);
}

fn human(secs: f64) -> String {
    if secs < 120.0 {
        format!("{secs:.1} CPU-s")
    } else if secs < 7200.0 {
        format!("{:.1} CPU-min", secs / 60.0)
    } else if secs < 172_800.0 {
        format!("{:.1} CPU-h", secs / 3600.0)
    } else {
        format!("{:.1} CPU-days", secs / 86_400.0)
    }
}

fn mean(v: &[f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.iter().sum::<f64>() / v.len() as f64
}
