//! Main-network identity mint time on one core, as a table.
//!
//! `cargo bench -p shoal-pow --bench mint_time -- --samples 10` mints 10 real main-network
//! identities on one thread and prints their median and p90 beside the expectation from the
//! measured scrypt rate (the number of attempts is geometric: median = ln 2 · 2^d evaluations).
//! Without `--samples` it measures the rate only and prints the expectation. When run by
//! `cargo test --benches` (no `--bench` flag) it does a tiny run so it keeps compiling and working.

use std::num::NonZeroUsize;
use std::time::{Duration, Instant};

use shoal_pow::{CancelToken, MintOptions, NodeKey, Puzzle, PuzzleConfig, mint};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = !args.iter().any(|a| a == "--bench");
    let samples: usize = args
        .iter()
        .position(|a| a == "--samples")
        .and_then(|i| args.get(i + 1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);

    let config = PuzzleConfig::mainnet();
    let puzzle = Puzzle::new(config.clone()).expect("preset is valid");
    let key = NodeKey::from_seed([3; 32]).public();
    let evals = if quick { 3 } else { 200 };
    let t = Instant::now();
    for nonce in 0..evals {
        std::hint::black_box(puzzle.evaluate(&key, nonce));
    }
    let per_eval = t.elapsed() / evals as u32;
    let expected_mean = per_eval * (1u32 << config.difficulty);
    let expected_median = expected_mean.mul_f64(std::f64::consts::LN_2);

    println!(
        "| measure (main network, d = {}, one core) | value |",
        config.difficulty
    );
    println!("|---|---|");
    println!("| scrypt evaluation (mean of {evals}) | {per_eval:.2?} |");
    println!("| expected mint time, mean (2^d evaluations) | {expected_mean:.1?} |");
    println!("| expected mint time, median (ln 2 · 2^d) | {expected_median:.1?} |");

    if quick || samples == 0 {
        return;
    }
    let options = MintOptions {
        threads: NonZeroUsize::MIN,
        ..MintOptions::default()
    };
    let mut times: Vec<Duration> = (0..samples)
        .map(|_| {
            let key = NodeKey::generate().public();
            let minted =
                mint(&puzzle, &key, &options, &CancelToken::new(), |_| {}).expect("not cancelled");
            eprintln!(
                "mint: {:.1?} ({} attempts)",
                minted.elapsed, minted.attempts
            );
            minted.elapsed
        })
        .collect();
    times.sort();
    let pct = |p: f64| times[((times.len() - 1) as f64 * p).round() as usize];
    println!(
        "| measured mint time, median of {samples} | {:.1?} |",
        pct(0.5)
    );
    println!(
        "| measured mint time, p90 of {samples} | {:.1?} |",
        pct(0.9)
    );
}
