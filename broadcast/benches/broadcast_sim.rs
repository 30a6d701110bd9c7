//! Broadcast benchmark on the simulator: prints a markdown table.
//!
//! `cargo bench -p shoal-broadcast --bench broadcast_sim -- --bench` runs the full table.
//! Without `--bench` (as under `cargo test --benches`) it runs a tiny version in seconds, so
//! that CI keeps it compiling and working. `BROADCAST_BENCH_SEED` overrides the seed (42).
//!
//! Further arguments select rows by name: `stable` (both sizes), `stable1000`, `stable10000`,
//! `crash`, `loss`, `partition`. For example
//! `cargo bench -p shoal-broadcast --bench broadcast_sim -- --bench crash partition`. No
//! selector runs them all.
//!
//! Every node knows every other (the simulated SWIM), the LAN preset runs on a LAN link model
//! (1-5 ms, uniform), notices carry 128-byte bodies from 32-byte publisher ids, and the
//! overlay forms and the tree settles under a warm-up stream before anything is measured.

use std::time::{Duration, Instant};

use shoal_broadcast::Config;
use shoal_broadcast::sim::LinkModel;
use shoal_broadcast::sim::scenario::{self, Delivered, PartitionSpec, Stream};

struct Scale {
    n: usize,
    big_n: usize,
    stable: Stream,
    big: Stream,
    crash: Stream,
    loss: Stream,
    partition: PartitionSpec,
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn main() {
    let mut full = false;
    let mut select: Vec<String> = Vec::new();
    for a in std::env::args().skip(1) {
        match a.as_str() {
            "--bench" => full = true,
            // Other flags come from cargo's harness conventions; ignore them.
            _ if a.starts_with('-') => {}
            _ => select.push(a),
        }
    }
    let wants = |group: &str, name: &str| {
        select.is_empty() || select.iter().any(|s| s == group || s == name)
    };
    let seed: u64 = std::env::var("BROADCAST_BENCH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(42);
    let s = if full {
        Scale {
            n: 1000,
            big_n: 10_000,
            stable: Stream {
                publishers: 10,
                rate: 20.0,
                warmup: secs(10),
                window: secs(20),
                drain: secs(3),
            },
            big: Stream {
                publishers: 10,
                rate: 10.0,
                warmup: secs(6),
                window: secs(10),
                drain: secs(2),
            },
            crash: Stream {
                publishers: 10,
                rate: 100.0,
                warmup: secs(8),
                window: secs(10),
                drain: secs(5),
            },
            loss: Stream {
                publishers: 10,
                rate: 20.0,
                warmup: secs(10),
                window: secs(20),
                drain: secs(12),
            },
            partition: PartitionSpec {
                feeds: 200,
                active_per_side: 5,
                rate: 20.0,
                warmup: secs(8),
                quiet: secs(1),
                split_for: secs(30),
                after: secs(10),
                drain: secs(5),
            },
        }
    } else {
        Scale {
            n: 40,
            big_n: 100,
            stable: Stream {
                publishers: 4,
                rate: 10.0,
                warmup: secs(4),
                window: secs(4),
                drain: secs(2),
            },
            big: Stream {
                publishers: 4,
                rate: 10.0,
                warmup: secs(4),
                window: secs(2),
                drain: secs(2),
            },
            crash: Stream {
                publishers: 4,
                rate: 20.0,
                warmup: secs(4),
                window: secs(4),
                drain: secs(4),
            },
            loss: Stream {
                publishers: 4,
                rate: 10.0,
                warmup: secs(4),
                window: secs(4),
                drain: secs(12),
            },
            partition: PartitionSpec {
                feeds: 20,
                active_per_side: 2,
                rate: 10.0,
                warmup: secs(4),
                quiet: secs(1),
                split_for: secs(10),
                after: secs(5),
                drain: secs(5),
            },
        }
    };
    let config = Config::lan();
    let link = LinkModel::lan();
    println!("## shoal-broadcast simulator benchmark\n");
    println!(
        "seed {seed}; LAN preset (active view ceil(log2 n) + 1 up to {}, passive {}, graft after \
         {:?} + up to half of it, retry {:?}, IHave every {:?}, pull every {:?} over {:?}, gaps \
         wait {:?}); link latency {:?}-{:?} uniform; simulated SWIM: link loss noticed after \
         500 ms, a crash declared after 6 s, a split after 3 s, a heal after 3 s{}\n",
        config.active_max,
        config.passive_max,
        config.graft_timeout,
        config.graft_retry,
        config.ihave_interval,
        config.pull_interval,
        config.pull_window,
        config.gap_timeout,
        link.latency_min,
        link.latency_max,
        if full {
            ""
        } else {
            " (TINY run: pass --bench for the real table)"
        },
    );
    println!("| scenario | parameters | result | target | ok | wall |");
    println!("|---|---|---|---|---|---|");

    for (name, n, stream, note) in [
        ("stable1000", s.n, &s.stable, ""),
        (
            "stable10000",
            s.big_n,
            &s.big,
            "; short window, to stay within minutes",
        ),
    ] {
        if !wants("stable", name) {
            continue;
        }
        let wall = Instant::now();
        let r = scenario::stable(seed, n, &config, link.clone(), stream);
        let d = &r.delivered;
        let ok = d.delivered == d.expected && r.rmr <= 0.1;
        println!(
            "| stable, n = {n} | {} | {}; RMR {:.3}; control {:.0} B/node/s, payload {:.0} \
             B/node/s; mean active view {:.1} | every node delivers every notice; RMR ≤ 0.1 | {} \
             | {:.0} s |",
            stream_params(stream, note),
            delivered_text(d),
            r.rmr,
            r.control_bytes_per_node_s,
            r.payload_bytes_per_node_s,
            r.mean_active,
            yes(ok),
            wall.elapsed().as_secs_f64(),
        );
    }

    if wants("crash", "crash") {
        let wall = Instant::now();
        let r = scenario::crash(seed, s.n, 0.2, &config, link.clone(), &s.crash);
        let d = &r.delivered;
        let max = d.latency_ms.map_or(f64::INFINITY, |l| l.2);
        let ok = d.worst_node >= 0.999 && max <= 5000.0;
        println!(
            "| 20 % crash, n = {} | {} crashed at once at the window's start (publishers spared); \
             {}; notices from 1 s before the crash | {}; worst survivor {:.2} %; gaps {} | every \
             survivor ≥ 99.9 %, each within 5 s | {} | {:.0} s |",
            s.n,
            r.crashed,
            stream_params(&s.crash, ""),
            delivered_text(d),
            d.worst_node * 100.0,
            r.gaps,
            yes(ok),
            wall.elapsed().as_secs_f64(),
        );
    }

    if wants("loss", "loss") {
        let wall = Instant::now();
        let lossy = LinkModel {
            loss: 0.1,
            ..link.clone()
        };
        let r = scenario::stable(seed, s.n, &config, lossy, &s.loss);
        let d = &r.delivered;
        let ok = d.delivered == d.expected;
        println!(
            "| 10 % loss, n = {} | {} | {}; gaps {}; RMR {:.3}; control {:.0} B/node/s | every \
             node delivers every notice | {} | {:.0} s |",
            s.n,
            stream_params(&s.loss, ""),
            delivered_text(d),
            r.gaps,
            r.rmr,
            r.control_bytes_per_node_s,
            yes(ok),
            wall.elapsed().as_secs_f64(),
        );
    }

    if wants("partition", "partition") {
        let wall = Instant::now();
        let p = &s.partition;
        let r = scenario::partition(seed, s.n, &config, link.clone(), p);
        let d = &r.delivered;
        let c = &r.catchup;
        let delta = c.exchanges - c.first_exchanges;
        let per_delta = c.feeds_named_delta as f64 / delta.max(1) as f64;
        let heal = r
            .heal_to_all
            .map_or("never".to_string(), |h| format!("{:.2} s", h.as_secs_f64()));
        let ok = d.delivered == d.expected
            && r.heal_to_all.is_some_and(|h| h <= Duration::from_secs(10));
        println!(
            "| 50/50 partition, n = {} | {} feeds publish once, then {} per side stream {} /s \
             in all; split {:?} (stream paused {:?} before it), healed, {:?} more | every split \
             notice everywhere {heal} after healing; all {} notices: {}; late {}; catch-up \
             after healing: {} exchanges with known peers naming {:.1} feeds each of {} ({} \
             changed), {} first exchanges naming all {}; {} notices and {:.0} KiB in catch-up \
             | everything everywhere within 10 s of healing; catch-up names about the changed \
             feeds | {} | {:.0} s |",
            s.n,
            r.feeds,
            p.active_per_side,
            p.rate,
            p.split_for,
            p.quiet,
            p.after,
            d.notices,
            delivered_text(d),
            r.late,
            delta,
            per_delta,
            r.feeds,
            r.feeds_changed,
            c.first_exchanges,
            r.feeds,
            c.notices_sent,
            c.bytes as f64 / 1024.0,
            yes(ok),
            wall.elapsed().as_secs_f64(),
        );
    }
}

fn stream_params(s: &Stream, note: &str) -> String {
    format!(
        "{} publishers, {} notices/s; warm-up {:?}, window {:?}, drain {:?}{note}",
        s.publishers, s.rate, s.warmup, s.window, s.drain
    )
}

fn delivered_text(d: &Delivered) -> String {
    let hops = d
        .last_hop
        .map_or("-".to_string(), |(a, b)| format!("{a:.0} / {b:.0}"));
    let lat = d.latency_ms.map_or("-".to_string(), |(a, b, c)| {
        format!("{a:.0} / {b:.0} / {c:.0} ms")
    });
    format!(
        "{} notices, reliability {:.4} % ({} of {}); last hop p50 / p99 {hops}; latency p50 / \
         p99 / max {lat}",
        d.notices,
        d.reliability * 100.0,
        d.delivered,
        d.expected,
    )
}

fn yes(ok: bool) -> &'static str {
    if ok { "yes" } else { "NO" }
}
