//! SWIM + Lifeguard benchmark on the simulator: prints a markdown table.
//!
//! `cargo bench -p shoal-swim --bench swim_sim` runs the full table (about ten minutes in a
//! release build on two cores). Without `--bench` (as under `cargo test --benches`) it runs a
//! tiny version so that CI keeps it compiling and working. `SWIM_BENCH_SEED` overrides the seed.
//!
//! Further arguments (or `SWIM_BENCH_ONLY`, comma-separated) select rows by name, to iterate on
//! a few: `crash` (both sizes and 30% loss), `crash100`, `crash1000`, `crash30` (n = 100 at 30%
//! loss), `crash30-1000` (n = 1,000 at 30% loss, on request only), `fp` (every loss), `fp10`, `fp20`, `fp30`, `fp1000` (n = 1,000 at every loss, or one
//! of `fp1000-10`, `fp1000-20`, `fp1000-30`; not in the default set, as each takes minutes),
//! `slow`, `partition`, `cut` (a one-way cut that heals), `dissemination`, `cost`, `testnet`
//! (n = 20 with 5-40 ms of latency: crash detection and death spread at 0% and 10% loss over
//! several seeds, a join, traffic at 10% loss), `table`, `pending`, `scale`. For example
//! `cargo bench -p shoal-swim --bench swim_sim -- --bench crash fp10`. No selector runs them all
//! but `fp1000`.
//!
//! `--seeds N` pools the 30%-loss crash rows (`crash30`, `crash30-1000`) over the seeds from
//! the seed on (`SWIM_BENCH_SEED`, default 42) to N - 1 after it.
//!
//! The `fp1000` rows print their progress to stderr every virtual minute. `--fp-secs S` runs
//! them for `S` virtual seconds instead of an hour (to time a build), and `--no-checks` runs
//! them without the codec round trip and the view checks, which take a good part of the time
//! (docs/benchmarks.md gives the figure). The run is the same (the checks only observe it), and
//! the invariants checked after every step are still checked.
//!
//! `--fanout F` overrides the preset's `gossip_fanout` (0 turns dedicated gossip rounds off), to
//! compare with and without them.
//!
//! Options of the `table` and `scale` rows: `--scale-n N` (members, default 10,000 with
//! `--bench`), `--scale-secs S` (virtual seconds of `scale`, default 600) and `--no-addrs`
//! (nodes carry no addresses, as in the DHT simulator, which routes by id). For example
//! `cargo bench -p shoal-swim --bench swim_sim -- --bench scale --scale-secs 60 --no-addrs`.
//!
//! `--kill F` makes `scale` a mass failure: a fraction `F` of the nodes (a seeded draw) crash
//! together a few virtual seconds in, and every survivor then holds a suspicion and a queued
//! update about each of them. The row samples the running suspicions and queued updates of the
//! survivors, the resident memory and the bytes held from the allocator every few virtual
//! seconds, and reports the sample with the most of them. Their cost per pair is the growth of
//! each figure divided by their number (which charges them the tombstones, the messages in
//! flight and whatever else the failure added): VmRSS from just before the crash (it
//! understates, as the allocator first reuses the memory of the crashed cores), the heap from
//! just after it. The `pending` row measures the two costs apart, on cores that do not run:
//! members restored as in `table`, a fifth of them refreshed, then suspected, by gossip.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use shoal_swim::sim::scenario::{self, period};
use shoal_swim::sim::{LinkModel, Sim, percentile};
use shoal_swim::{Address, Config, Membership, Message, Payload, State, Update};

/// The system allocator, counting the bytes it holds for the program: unlike VmRSS, the count
/// does not depend on how the allocator reuses freed memory, so it tells what a structure holds.
struct Counting;

static HEAP: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call forwards to `System` with the caller's arguments unchanged; the counter
// only observes the sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        HEAP.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller's contract for `alloc` is `System`'s.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        HEAP.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: `ptr` came from `alloc` or `realloc` above with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        HEAP.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller's contract for `alloc_zeroed` is `System`'s.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller's contract for `realloc` is `System`'s.
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            HEAP.fetch_add(new_size, Ordering::Relaxed);
            HEAP.fetch_sub(layout.size(), Ordering::Relaxed);
        }
        new
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Bytes the program holds from the allocator now (see [`Counting`]).
fn heap_bytes() -> f64 {
    HEAP.load(Ordering::Relaxed) as f64
}

struct Scale {
    crash_n: [usize; 2],
    crashes: usize,
    fp_n: usize,
    fp_time: Duration,
    slow_time: Duration,
    part_n: usize,
    diss_n: usize,
    cost_n: [usize; 2],
    big_n: usize,
    big_time: Duration,
}

/// The command line: `--bench`, row selectors and the options of the `table` and `scale` rows.
struct Args {
    full: bool,
    select: Select,
    scale_n: Option<usize>,
    scale_secs: Option<u64>,
    no_addrs: bool,
    kill: Option<f64>,
    fanout: Option<usize>,
    seeds: u64,
    fp_secs: Option<u64>,
    no_checks: bool,
}

impl Args {
    fn parse() -> Self {
        let mut args = Args {
            full: false,
            select: Select(Vec::new()),
            scale_n: None,
            scale_secs: None,
            no_addrs: false,
            kill: None,
            fanout: None,
            seeds: 1,
            fp_secs: None,
            no_checks: false,
        };
        let mut it = std::env::args().skip(1);
        while let Some(a) = it.next() {
            match a.as_str() {
                "--bench" => args.full = true,
                "--no-addrs" => args.no_addrs = true,
                "--no-checks" => args.no_checks = true,
                "--fp-secs" => args.fp_secs = Some(number(&a, it.next())),
                "--scale-n" => args.scale_n = Some(number(&a, it.next())),
                "--scale-secs" => args.scale_secs = Some(number(&a, it.next())),
                "--fanout" => args.fanout = Some(number(&a, it.next())),
                "--seeds" => args.seeds = number::<u64>(&a, it.next()).max(1),
                "--kill" => {
                    let f: f64 = number(&a, it.next());
                    if !(0.0..1.0).contains(&f) {
                        eprintln!("--kill takes a fraction in [0, 1)");
                        std::process::exit(2);
                    }
                    args.kill = Some(f);
                }
                // Other flags come from cargo's harness conventions; ignore them.
                _ if a.starts_with('-') => {}
                _ => args.select.0.push(a),
            }
        }
        args.select.add_env();
        args
    }
}

/// The value of option `name`, or exit with a usage error.
fn number<N: std::str::FromStr>(name: &str, value: Option<String>) -> N {
    match value.as_deref().map(str::parse) {
        Some(Ok(v)) => v,
        _ => {
            eprintln!("{name} takes a number");
            std::process::exit(2);
        }
    }
}

/// Which rows to run: every row unless selectors were given.
struct Select(Vec<String>);

impl Select {
    fn add_env(&mut self) {
        if let Ok(only) = std::env::var("SWIM_BENCH_ONLY") {
            self.0.extend(
                only.split(',')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty()),
            );
        }
    }

    /// Whether row `name` (or its group `group`) was selected.
    fn wants(&self, group: &str, name: &str) -> bool {
        self.0.is_empty() || self.0.iter().any(|s| s == group || s == name)
    }
}

fn main() {
    let args = Args::parse();
    let (full, select) = (args.full, &args.select);
    let seed: u64 = std::env::var("SWIM_BENCH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(42);
    let s = if full {
        Scale {
            crash_n: [100, 1000],
            crashes: 20,
            fp_n: 100,
            fp_time: Duration::from_secs(3600),
            slow_time: Duration::from_secs(600),
            part_n: 100,
            diss_n: 1000,
            cost_n: [100, 1000],
            big_n: args.scale_n.unwrap_or(10_000),
            big_time: Duration::from_secs(args.scale_secs.unwrap_or(600)),
        }
    } else {
        Scale {
            crash_n: [16, 32],
            crashes: 3,
            fp_n: 16,
            fp_time: Duration::from_secs(60),
            slow_time: Duration::from_secs(30),
            part_n: 12,
            diss_n: 32,
            cost_n: [16, 32],
            big_n: args.scale_n.unwrap_or(64),
            big_time: Duration::from_secs(args.scale_secs.unwrap_or(30)),
        }
    };
    // Measured first, while the allocator holds no memory freed by other rows that it could
    // hand out again without the resident size growing.
    let table = select
        .wants("table", "table")
        .then(|| table_bytes(s.big_n, TABLE_CORES, !args.no_addrs));
    let pending = select
        .wants("pending", "pending")
        .then(|| pending_bytes(s.big_n, TABLE_CORES, !args.no_addrs));
    let mut config = Config::lan();
    if let Some(f) = args.fanout {
        config.gossip_fanout = f;
    }
    let link = LinkModel::lan();
    let p = period(&config).as_secs_f64();
    println!("## shoal-swim simulator benchmark\n");
    println!(
        "seed {seed}; LAN preset (probe {:?}, timeout {:?}, k = {}, α = {}, β = {}, K = {}, λ = {}, \
         S = {}, gossip {} members every {:?}, push-pull {:?}, reconnect {:?}); link latency \
         {:?}-{:?} uniform; 1 period = {p} s{}\n",
        config.probe_interval,
        config.probe_timeout,
        config.indirect_probes,
        config.suspicion_alpha,
        config.suspicion_beta,
        config.suspicion_confirmations,
        config.retransmit_mult,
        config.max_local_health,
        config.gossip_fanout,
        config.gossip_interval,
        config.push_pull_interval,
        config.reconnect_interval,
        link.latency_min,
        link.latency_max,
        if full {
            ""
        } else {
            " (TINY run: pass --bench for the real table)"
        },
    );
    println!("| scenario | parameters | result | target / bound | ok |");
    println!("|---|---|---|---|---|");

    for (i, n) in s.crash_n.into_iter().enumerate() {
        if !select.wants("crash", ["crash100", "crash1000"][i]) {
            continue;
        }
        let wall = Instant::now();
        let r = scenario::crash_detection(
            seed,
            n,
            s.crashes,
            &config,
            link.clone(),
            Duration::from_secs(300),
        );
        let mut first = r.first_suspicion.clone();
        let mut all = r.all_failed.clone();
        let f50 = percentile(&mut first, 0.5).unwrap_or(f64::NAN);
        let f99 = percentile(&mut first, 0.99).unwrap_or(f64::NAN);
        let a50 = percentile(&mut all, 0.5).unwrap_or(f64::NAN);
        let a99 = percentile(&mut all, 0.99).unwrap_or(f64::NAN);
        let mut spread = r.spread.clone();
        let s50 = percentile(&mut spread, 0.5).unwrap_or(f64::NAN);
        let s99 = percentile(&mut spread, 0.99).unwrap_or(f64::NAN);
        let bound = scenario::crash_bound_periods(&config, n);
        let expected = scenario::crash_expected_periods(&config, n);
        row(
            "crash detection",
            &format!("n = {n}, {} crashes", r.first_suspicion.len()),
            &format!(
                "first suspicion p50 {f50:.2} / p99 {f99:.2} periods; all failed p50 {a50:.2} / \
                 p99 {a99:.2} periods; spread p50 {s50:.2} / p99 {s99:.2} periods; undetected {}; \
                 false failures {} ({:.1} s wall)",
                r.undetected,
                r.false_failures,
                wall.elapsed().as_secs_f64()
            ),
            &format!(
                "first p50 ≤ 1.6; all-failed p99 ≤ {bound:.1} (Lifeguard bound: 2 windows + \
                 β·α·max(1,log10 n) + λ·ceil(log10(n+1)) periods; with K confirmations \
                 {expected:.1})"
            ),
            f50 <= 1.6 && a99 <= bound && r.undetected == 0 && r.false_failures == 0,
        );
    }

    // Crash detection at 30% loss: n = 100 in the default set, n = 1,000 only on request.
    let crash30_row = |n: usize| {
        let wall = Instant::now();
        // Pooled over `--seeds` seeds from `seed` on: ten crashes a seed say little of a tail.
        let mut r = scenario::CrashReport {
            first_suspicion: Vec::new(),
            all_failed: Vec::new(),
            spread: Vec::new(),
            undetected: 0,
            false_failures: 0,
        };
        for seed in seed..seed + args.seeds {
            let one = scenario::crash_detection(
                seed,
                n,
                s.crashes / 2,
                &config,
                LinkModel {
                    loss: 0.30,
                    ..link.clone()
                },
                Duration::from_secs(300),
            );
            r.first_suspicion.extend(one.first_suspicion);
            r.all_failed.extend(one.all_failed);
            r.spread.extend(one.spread);
            r.undetected += one.undetected;
            r.false_failures += one.false_failures;
        }
        let mut first = r.first_suspicion.clone();
        let mut all = r.all_failed.clone();
        let f50 = percentile(&mut first, 0.5).unwrap_or(f64::NAN);
        let a50 = percentile(&mut all, 0.5).unwrap_or(f64::NAN) * p;
        let a99 = percentile(&mut all, 0.99).unwrap_or(f64::NAN) * p;
        let amax = all.iter().copied().fold(f64::NAN, f64::max) * p;
        let seeds = if args.seeds > 1 {
            format!(", seeds {seed}-{}", seed + args.seeds - 1)
        } else {
            String::new()
        };
        row(
            "crash detection",
            &format!(
                "n = {n}, 30% uniform loss, {} crashes{seeds}",
                r.all_failed.len() + r.undetected
            ),
            &format!(
                "first suspicion p50 {f50:.2} periods; all dead p50 {a50:.1} s / p99 {a99:.1} s \
                 / max {amax:.1} s; undetected {}; false failures {} ({:.1} s wall)",
                r.undetected,
                r.false_failures,
                wall.elapsed().as_secs_f64()
            ),
            "all dead ≤ 30 s",
            amax <= 30.0 && r.undetected == 0 && r.false_failures == 0,
        );
    };
    if select.wants("crash", "crash30") {
        crash30_row(s.fp_n);
    }
    if select.0.iter().any(|s| s == "crash30-1000") {
        crash30_row(if full { 1000 } else { 24 });
    }

    // One row of healthy members declared failed: n members for `time` at `loss`.
    // At n = 1,000 the row reports its progress on stderr every virtual minute, and
    // `--no-checks` turns the codec round trip and the view checks off (see the module docs).
    let false_positives_row = |n: usize, loss: f64, time: Duration| {
        let wall = Instant::now();
        let mut sim = Sim::new(
            seed,
            config.clone(),
            LinkModel {
                loss,
                ..link.clone()
            },
        );
        let large = n >= 1000;
        let checks = !(args.no_checks && large);
        sim.wire_roundtrip = checks;
        sim.check_views = checks;
        sim.add_converged(n);
        let mut last_told = Duration::ZERO;
        let r = scenario::false_positives_on(&mut sim, time, &mut |ran, r| {
            if large && ran >= last_told + Duration::from_secs(60) {
                last_told = ran;
                eprintln!(
                    "n = {n}, {:.0}% loss: {} of {} virtual s, {:.0} s wall; {} healthy members \
                     declared failed, {} suspicion events",
                    loss * 100.0,
                    ran.as_secs(),
                    time.as_secs(),
                    wall.elapsed().as_secs_f64(),
                    r.members_failed,
                    r.suspicions
                );
            }
        });
        row(
            "false positives",
            &format!(
                "n = {n}, {:.0}% uniform loss, {} virtual s{}",
                loss * 100.0,
                time.as_secs(),
                if checks {
                    ""
                } else {
                    ", no codec round trip or view checks"
                }
            ),
            &format!(
                "{} healthy members declared failed ({} failed events); {} suspicion events, \
                 {} refutations ({:.1} s wall)",
                r.members_failed,
                r.failed_events,
                r.suspicions,
                r.refutations,
                wall.elapsed().as_secs_f64()
            ),
            "0 failed",
            r.failed_events == 0,
        );
    };
    for (loss, name) in [(0.10, "fp10"), (0.20, "fp20"), (0.30, "fp30")] {
        if !select.wants("fp", name) {
            continue;
        }
        false_positives_row(s.fp_n, loss, s.fp_time);
    }

    for (loss, name) in [
        (0.10, "fp1000-10"),
        (0.20, "fp1000-20"),
        (0.30, "fp1000-30"),
    ] {
        // Only on request: minutes of wall time.
        if !select.0.iter().any(|s| s == "fp1000" || s == name) {
            continue;
        }
        let (n, time) = if full {
            (1000, Duration::from_secs(args.fp_secs.unwrap_or(3600)))
        } else {
            (24, Duration::from_secs(30))
        };
        false_positives_row(n, loss, time);
    }

    if select.wants("cut", "cut") {
        let n = s.part_n;
        let r = scenario::one_way_cut(
            seed,
            n,
            Duration::from_secs(120),
            Duration::from_secs(60),
            &config,
            link.clone(),
        );
        row(
            "one-way cut",
            &format!(
                "n = {n}, member 0 unheard by half the members for 120 s, then healed, 60 s more"
            ),
            &format!(
                "{} members declared failed ({} failed events); {} suspicion events, {} \
                 refutations",
                r.members_failed, r.failed_events, r.suspicions, r.refutations
            ),
            "0 failed",
            r.failed_events == 0,
        );
    }

    if select.wants("testnet", "testnet") {
        testnet_rows(seed, &config, full);
    }

    if select.wants("slow", "slow") {
        let delay = config.probe_timeout * 2;
        let r = scenario::slow_node(seed, s.fp_n, delay, s.slow_time, &config, link.clone());
        row(
            "slow node",
            &format!(
                "n = {}, node 0 processes every message {delay:?} late, {} virtual s",
                s.fp_n,
                s.slow_time.as_secs()
            ),
            &format!(
                "{} healthy members declared failed; {} suspicions of healthy members; slow \
                 node's local health reached {}; slow node itself declared failed: {}",
                r.healthy.members_failed,
                r.healthy.suspicions,
                r.slow_max_local_health,
                r.slow_failed
            ),
            "0 healthy failed",
            r.healthy.failed_events == 0,
        );
    }

    if select.wants("partition", "partition") {
        let wall = Instant::now();
        let n = s.part_n;
        let r = scenario::partition(
            seed,
            n,
            Duration::from_secs(60),
            &config,
            link.clone(),
            Duration::from_secs(600),
        );
        let bound = scenario::partition_bound(&config, n);
        row(
            "partition",
            &format!("n = {n}, 50/50 split for 60 s, then healed"),
            &format!(
                "split detected by all: {}; full membership again {} after heal ({:.1} s wall)",
                r.split_detected,
                r.converge
                    .map_or("NOT within 600 s".to_string(), |d| format!(
                        "{:.1} s",
                        d.as_secs_f64()
                    )),
                wall.elapsed().as_secs_f64()
            ),
            &format!(
                "≤ {:.1} s (1.5·reconnect + (2·λ·ceil(log10(n+1)) + 1) periods)",
                bound.as_secs_f64()
            ),
            r.split_detected && r.converge.is_some_and(|d| d <= bound),
        );
    }

    if select.wants("dissemination", "dissemination") {
        let n = s.diss_n;
        let r = scenario::dissemination(seed, n, &config, link.clone(), Duration::from_secs(300));
        let bound = config.retransmit_mult.get() as f64 * ((n + 1) as f64).log10().ceil();
        row(
            "dissemination",
            &format!("n = {n}, one member joins through one seed"),
            &format!(
                "known by half after {} periods, by all after {} periods",
                fmt_opt(r.half),
                fmt_opt(r.all)
            ),
            &format!("≤ λ·ceil(log10(n+1)) = {bound} periods"),
            r.all.is_some_and(|a| a <= bound),
        );
    }

    for n in s.cost_n {
        if !select.wants("cost", "cost") {
            continue;
        }
        let r = scenario::cost(seed, n, Duration::from_secs(60), &config, link.clone());
        row(
            "cost",
            &format!("n = {n}, steady state, 60 virtual s"),
            &format!(
                "{:.2} messages and {:.0} bytes sent per node per second",
                r.messages_per_node_s, r.bytes_per_node_s
            ),
            "reported",
            true,
        );
    }

    let addrs_note = if args.no_addrs {
        "no addresses"
    } else {
        "one address each"
    };
    if let Some(r) = table {
        let (n, cores) = (s.big_n, TABLE_CORES);
        row(
            "member table",
            &format!("{cores} cores of {n} members restored, {addrs_note}"),
            &format!(
                "{:.0} bytes per core ({:.1} per member): table, probe order and the rest, \
                 measured as the growth of VmRSS (address lists are shared, not counted)",
                r,
                r / n as f64
            ),
            "reported",
            true,
        );
    }

    if let Some(p) = pending {
        let (n, cores) = (s.big_n, TABLE_CORES);
        row(
            "pending news",
            &format!(
                "{cores} cores of {n} members restored, {addrs_note}; {} of them refreshed, then \
                 suspected, by gossip",
                n / 5
            ),
            &format!(
                "heap: {:.1} bytes per queued update, {:.1} per running suspicion, {:.1} per \
                 pair; VmRSS: {:.1}, {:.1}, {:.1}: growth over the updates queued, then over the \
                 suspicions added",
                p.update.0,
                p.suspicion.0,
                p.update.0 + p.suspicion.0,
                p.update.1,
                p.suspicion.1,
                p.update.1 + p.suspicion.1,
            ),
            "reported",
            true,
        );
    }

    if select.wants("scale", "scale") {
        if let Some(f) = args.kill {
            scale_kill(seed, &s, f, &config, &link, addrs_note, !args.no_addrs);
            return;
        }
        let n = s.big_n;
        let wall = Instant::now();
        let mut sim = Sim::new(seed, config.clone(), link.clone());
        sim.check_views = false;
        sim.wire_roundtrip = false;
        sim.addresses = !args.no_addrs;
        sim.add_converged(n);
        let built = wall.elapsed();
        let built_rss = vm_status("VmRSS:");
        sim.run_for(s.big_time);
        let failed = sim
            .take_events()
            .iter()
            .filter(|e| matches!(e.event, shoal_swim::Event::Failed { .. }))
            .count();
        let secs = s.big_time.as_secs_f64() * n as f64;
        row(
            "scale",
            &format!(
                "n = {n}, converged start, {} virtual s, {addrs_note}",
                s.big_time.as_secs()
            ),
            &format!(
                "wall {:.1} s ({:.1} s to build the tables, VmRSS then {built_rss}); peak memory \
                 (VmHWM) {}; {:.2} messages and {:.0} bytes per node per s; {} failed events",
                wall.elapsed().as_secs_f64(),
                built.as_secs_f64(),
                vm_status("VmHWM:"),
                sim.stats.messages as f64 / secs,
                sim.stats.bytes as f64 / secs,
                failed
            ),
            "reported; 0 failed",
            failed == 0,
        );
    }
}

/// When `--kill` crashes its nodes, in virtual time after the start.
const KILL_AT: Duration = Duration::from_secs(5);
/// Virtual time between two samples of the `--kill` run.
const KILL_SAMPLE: Duration = Duration::from_secs(5);

/// The `scale` row with `--kill fraction`: see the module docs.
fn scale_kill(
    seed: u64,
    s: &Scale,
    fraction: f64,
    config: &Config,
    link: &LinkModel,
    addrs_note: &str,
    addresses: bool,
) {
    let n = s.big_n;
    let wall = Instant::now();
    let mut sim = Sim::new(seed, config.clone(), link.clone());
    sim.check_views = false;
    sim.wire_roundtrip = false;
    // Millions of events follow a mass failure; the survivors' views are checked at the end.
    sim.record_events = false;
    sim.addresses = addresses;
    sim.add_converged(n);
    let built = wall.elapsed();
    sim.run_for(KILL_AT.min(s.big_time));
    let mut ids: Vec<u32> = (0..n as u32).collect();
    ids.shuffle(&mut StdRng::seed_from_u64(seed));
    let dead = ((n as f64 * fraction).round() as usize).min(n - 1);
    let (killed, survivors) = ids.split_at(dead);
    let rss_before = rss_bytes().unwrap_or(f64::NAN);
    for &id in killed {
        sim.crash(id);
    }
    // Counted after the crash, whose cores' memory is given back: the allocator hands that
    // memory out again first, which VmRSS does not see (its growth understates) but the heap
    // count does.
    let heap_before = heap_bytes();
    // (virtual s, suspicions, queued updates, VmRSS bytes, heap bytes) at each sample.
    let mut samples: Vec<(f64, usize, usize, f64, f64)> = Vec::new();
    let end = sim.now() + s.big_time.saturating_sub(KILL_AT);
    while sim.now() < end {
        let next = (sim.now() + KILL_SAMPLE).min(end);
        sim.run_until(next);
        let (mut suspicions, mut updates) = (0, 0);
        for &id in survivors {
            if let Some(core) = sim.node(id) {
                let q = core.queue_lengths();
                suspicions += q.suspicions;
                updates += q.broadcasts;
            }
        }
        let (rss, heap) = (rss_bytes().unwrap_or(f64::NAN), heap_bytes());
        samples.push((sim.elapsed().as_secs_f64(), suspicions, updates, rss, heap));
        eprintln!(
            "t = {:.0} s: {suspicions} suspicions, {updates} queued updates, VmRSS {:.2} GB, \
             heap {:.2} GB ({:.0} s wall)",
            sim.elapsed().as_secs_f64(),
            rss / 1e9,
            heap / 1e9,
            wall.elapsed().as_secs_f64()
        );
    }
    // Survivors that hold some other survivor not alive (a false suspicion or failure), and
    // survivors that still hold some crashed node live (its suspicion still runs).
    let (mut false_views, mut slow_views) = (0, 0);
    for &id in survivors {
        let Some(core) = sim.node(id) else { continue };
        let (mut wrong, mut slow) = (false, false);
        for (m, state, _) in core.states() {
            if sim.is_up(*m) {
                wrong |= state != State::Alive;
            } else {
                slow |= matches!(state, State::Alive | State::Suspect);
            }
        }
        false_views += usize::from(wrong);
        slow_views += usize::from(slow);
    }
    let peak = samples
        .iter()
        .copied()
        .max_by_key(|&(_, sus, upd, _, _)| sus + upd)
        .unwrap_or((0.0, 0, 0, f64::NAN, f64::NAN));
    let (at, sus, upd, rss, heap) = peak;
    let pairs = sus.max(upd).max(1) as f64;
    let last = samples.last().copied().unwrap_or(peak);
    row(
        "mass failure",
        &format!(
            "n = {n}, converged start, {dead} crash at {} s, {} virtual s, {addrs_note}",
            KILL_AT.as_secs(),
            s.big_time.as_secs()
        ),
        &format!(
            "wall {:.1} s ({:.1} s to build the tables); peak memory (VmHWM) {}; at {at:.0} s \
             (most pending) {sus} running suspicions and {upd} queued updates, VmRSS {:.2} GB, \
             {:.2} GB more than before the crash, heap {:.2} GB more than after it: {:.0} bytes \
             of VmRSS and {:.0} of heap per (suspicion + update); at the end {} suspicions, {} \
             queued updates, {false_views} survivors holding a survivor not alive, \
             {slow_views} still holding a crashed node live",
            wall.elapsed().as_secs_f64(),
            built.as_secs_f64(),
            vm_status("VmHWM:"),
            rss / 1e9,
            (rss - rss_before) / 1e9,
            (heap - heap_before) / 1e9,
            (rss - rss_before) / pairs,
            (heap - heap_before) / pairs,
            last.1,
            last.2,
        ),
        "reported; no survivor holding a survivor not alive",
        false_views == 0,
    );
}

/// Link of the `testnet` rows: a few milliseconds to tens of them one way, as between hosts of
/// one region.
fn testnet_link(loss: f64) -> LinkModel {
    LinkModel {
        latency_min: Duration::from_millis(5),
        latency_max: Duration::from_millis(40),
        loss,
    }
}

/// The `testnet` rows: n = 20 with the LAN preset (the DHT's testnet SWIM timing).
fn testnet_rows(seed: u64, config: &Config, full: bool) {
    let n = 20;
    // Several seeds of a few crashes each, so that the cluster stays about 20 strong.
    let (seeds, crashes) = if full { (25, 4) } else { (2, 2) };
    let p = period(config).as_secs_f64();
    for loss in [0.0, 0.10] {
        let mut r = scenario::crash_detection(
            seed,
            n,
            crashes,
            config,
            testnet_link(loss),
            Duration::from_secs(120),
        );
        for s in 1..seeds {
            let more = scenario::crash_detection(
                seed + s,
                n,
                crashes,
                config,
                testnet_link(loss),
                Duration::from_secs(120),
            );
            r.first_suspicion.extend(more.first_suspicion);
            r.all_failed.extend(more.all_failed);
            r.spread.extend(more.spread);
            r.undetected += more.undetected;
            r.false_failures += more.false_failures;
        }
        let secs = |v: &[f64], q: f64| {
            let mut v: Vec<f64> = v.iter().map(|x| x * p).collect();
            percentile(&mut v, q).unwrap_or(f64::NAN)
        };
        let f99 = secs(&r.first_suspicion, 0.99) / p;
        let (f50, a50, a99) = (
            secs(&r.first_suspicion, 0.5) / p,
            secs(&r.all_failed, 0.5),
            secs(&r.all_failed, 0.99),
        );
        let (s50, s99) = (secs(&r.spread, 0.5), secs(&r.spread, 0.99));
        row(
            "testnet crash",
            &format!(
                "n = {n}, {:.0}% loss, 5-40 ms latency, {} crashes",
                loss * 100.0,
                r.first_suspicion.len()
            ),
            &format!(
                "first suspicion p50 {f50:.2} / p99 {f99:.2} periods; crash to all dead p50 \
                 {a50:.2} s / p99 \
                 {a99:.2} s; spread (first dead to all dead) p50 {s50:.3} s / p99 {s99:.3} s; \
                 undetected {}; false failures {}",
                r.undetected, r.false_failures
            ),
            "first p50 ≤ 1.6 periods; all dead p99 ≤ 7 s; spread p99 ≤ 0.3 s",
            f50 <= 1.6 && a99 <= 7.0 && s99 <= 0.3 && r.false_failures == 0,
        );
    }
    let r = scenario::dissemination(seed, n, config, testnet_link(0.0), Duration::from_secs(60));
    row(
        "testnet join",
        &format!("n = {n}, 5-40 ms latency, one member joins through one seed"),
        &format!(
            "known by half after {} s, by all after {} s",
            fmt_opt(r.half.map(|h| h * p)),
            fmt_opt(r.all.map(|a| a * p))
        ),
        "all ≤ 1 s",
        r.all.is_some_and(|a| a * p <= 1.0),
    );
    let r = scenario::cost(
        seed,
        n,
        Duration::from_secs(if full { 600 } else { 60 }),
        config,
        testnet_link(0.10),
    );
    row(
        "testnet cost",
        &format!("n = {n}, 10% loss, steady state"),
        &format!(
            "{:.2} messages and {:.0} bytes (SWIM messages only) sent per node per second",
            r.messages_per_node_s, r.bytes_per_node_s
        ),
        "reported",
        true,
    );
}

fn row(scenario: &str, params: &str, result: &str, target: &str, ok: bool) {
    println!(
        "| {scenario} | {params} | {result} | {target} | {} |",
        if ok { "yes" } else { "NO" }
    );
}

fn fmt_opt(v: Option<f64>) -> String {
    v.map_or("never".to_string(), |v| format!("{v:.2}"))
}

/// A memory figure of this process from `/proc/self/status` (Linux): `VmHWM:` is the peak
/// resident memory, `VmRSS:` the current one.
fn vm_status(key: &str) -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .map(|l| l.trim_start_matches(key).trim().to_string())
        })
        .unwrap_or_else(|| "unavailable".to_string())
}

/// Current resident memory in bytes, if `/proc/self/status` tells.
fn rss_bytes() -> Option<f64> {
    let kb: f64 = vm_status("VmRSS:")
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb * 1024.0)
}

/// Cores built by the `table` row, so that the allocator's page granularity does not matter.
const TABLE_CORES: usize = 50;

/// Heap of one core holding `n` restored members, averaged over `cores` cores: the growth of
/// VmRSS while building them.
fn table_bytes(n: usize, cores: usize, with_addrs: bool) -> f64 {
    let list: Vec<(u32, Arc<[Address]>)> = (1..=n as u32)
        .map(|id| {
            let addrs: Vec<Address> = if with_addrs {
                vec![Address(format!("/sim/{id}").into_bytes())]
            } else {
                Vec::new()
            };
            (id, addrs.into())
        })
        .collect();
    let before = rss_bytes().unwrap_or(f64::NAN);
    let now = Instant::now();
    let built: Vec<Membership<u32>> = (0..cores)
        .map(|_| {
            // Invariant: the LAN preset is valid and the core has no addresses of its own.
            let mut core = Membership::new(now, 0, Vec::new(), 0, Config::lan()).expect("valid");
            core.restore(list.iter().map(|(id, a)| (*id, a.clone())));
            core
        })
        .collect();
    let after = rss_bytes().unwrap_or(f64::NAN);
    drop(built);
    (after - before) / cores as f64
}

/// Bytes of one queued update and of one running suspicion, as the `pending` row measures them:
/// `(heap, resident)`, the growth of the allocator's count and of VmRSS.
struct Pending {
    update: (f64, f64),
    suspicion: (f64, f64),
}

/// Builds `cores` cores of `n` restored members, then gossips to each news that a fifth of its
/// members are alive at a newer incarnation (one queued update each, no suspicion), then that
/// they are suspected (a suspicion each; the queued update is replaced, so their number stays).
/// Each cost is the growth of the heap count and of VmRSS over its step, per core and per member
/// concerned.
fn pending_bytes(n: usize, cores: usize, with_addrs: bool) -> Pending {
    let list: Vec<(u32, Arc<[Address]>)> = (1..=n as u32)
        .map(|id| {
            let addrs: Vec<Address> = if with_addrs {
                vec![Address(format!("/sim/{id}").into_bytes())]
            } else {
                Vec::new()
            };
            (id, addrs.into())
        })
        .collect();
    let now = Instant::now();
    let mut built: Vec<Membership<u32>> = (0..cores)
        .map(|_| {
            // Invariant: the LAN preset is valid and the core has no addresses of its own.
            let mut core = Membership::new(now, 0, Vec::new(), 0, Config::lan()).expect("valid");
            core.restore(list.iter().map(|(id, a)| (*id, a.clone())));
            core
        })
        .collect();
    let m = n / 5;
    // Every fifth member, spread over the table, by a member that is not among them.
    let news = |state: State| -> Vec<Update<u32>> {
        (0..m as u32)
            .map(|i| Update {
                member: 5 * i + 2,
                incarnation: 1,
                state,
                addrs: Vec::new(),
                by: (state == State::Suspect).then_some(1),
                credential: Default::default(),
            })
            .collect()
    };
    let mut step = |state: State| -> (f64, f64) {
        let before = (heap_bytes(), rss_bytes().unwrap_or(f64::NAN));
        let updates = news(state);
        for core in &mut built {
            for chunk in updates.chunks(shoal_swim::message::MAX_GOSSIP_UPDATES) {
                let msg = Message {
                    payload: Payload::Gossip,
                    gossip: chunk.to_vec(),
                };
                core.handle_message(now, 1, msg);
            }
            while core.poll_event().is_some() {}
            while core.poll_transmit().is_some() {}
            // Gives back the drained event queue, as a running core does at its next timeout,
            // so that the events of the burst are not charged to the suspicions.
            core.handle_timeout(now);
            while core.poll_transmit().is_some() {}
        }
        let after = (heap_bytes(), rss_bytes().unwrap_or(f64::NAN));
        let per = (cores * m.max(1)) as f64;
        ((after.0 - before.0) / per, (after.1 - before.1) / per)
    };
    let update = step(State::Alive);
    let suspicion = step(State::Suspect);
    for core in &built {
        let q = core.queue_lengths();
        assert!(q.broadcasts >= m && q.suspicions == m, "{q:?}");
    }
    Pending { update, suspicion }
}
