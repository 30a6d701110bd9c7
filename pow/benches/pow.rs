//! criterion benchmarks of shoal-pow: scrypt, identity verification and minting, hashcash.
//!
//! Run with `cargo bench -p shoal-pow --bench pow`. For the main-network mint time, which is too
//! slow for criterion, see the `mint_time` bench.

// criterion_group! defines an undocumented public function.
#![allow(missing_docs)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use shoal_pow::{
    CancelToken, IdentityVerifier, MessageClass, MintOptions, NodeKey, Puzzle, PuzzleConfig,
    Resource, Stamp, StampChecker, StampPolicy, VerifierConfig, mint,
};

const NOW: u64 = 1_795_435_200;

fn scrypt(c: &mut Criterion) {
    let puzzle = Puzzle::new(PuzzleConfig::mainnet()).expect("preset is valid");
    let key = NodeKey::from_seed([1; 32]).public();
    let mut nonce = 0u64;
    c.bench_function("scrypt_evaluation (N=2^14, r=8, p=1)", |b| {
        b.iter(|| {
            nonce += 1;
            black_box(puzzle.evaluate(&key, nonce))
        })
    });
}

fn identity(c: &mut Criterion) {
    let puzzle = Puzzle::new(PuzzleConfig::testnet()).expect("preset is valid");
    let key = NodeKey::from_seed([2; 32]);
    let proof = mint(
        &puzzle,
        &key.public(),
        &MintOptions::default(),
        &CancelToken::new(),
        |_| {},
    )
    .expect("not cancelled")
    .proof;
    let mut group = c.benchmark_group("identity_verify");
    group.bench_function("new_peer", |b| {
        b.iter_batched(
            || IdentityVerifier::new(puzzle.clone(), VerifierConfig::default()),
            |mut v| {
                v.verify_peer(Instant::now(), Some(key.public()), &proof)
                    .expect("valid proof")
            },
            BatchSize::SmallInput,
        )
    });
    let mut cached = IdentityVerifier::new(puzzle.clone(), VerifierConfig::default());
    let peer = Some(key.public());
    cached
        .verify_peer(Instant::now(), peer, &proof)
        .expect("valid proof");
    group.bench_function("cached_peer", |b| {
        b.iter(|| cached.verify_peer(Instant::now(), peer, black_box(&proof)))
    });
    assert_eq!(
        cached.stats().scrypt_evaluations,
        1,
        "a cached peer must cost no scrypt"
    );
    group.finish();

    let mut group = c.benchmark_group("identity_mint");
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(20));
    for (name, threads) in [
        ("testnet_d4_all_cores", None),
        ("testnet_d4_one_core", Some(1)),
    ] {
        let options = MintOptions {
            threads: threads
                .and_then(std::num::NonZeroUsize::new)
                .unwrap_or(MintOptions::default().threads),
            ..MintOptions::default()
        };
        group.bench_function(name, |b| {
            b.iter_batched(
                || NodeKey::generate().public(),
                |k| mint(&puzzle, &k, &options, &CancelToken::new(), |_| {}),
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

fn hashcash(c: &mut Criterion) {
    let policy = StampPolicy::default();
    let stamp = policy
        .mint(MessageClass::RecordPut, NOW, b"alice", b"key", b"value")
        .expect("date in range");
    let checker = StampChecker::new(policy.clone()).expect("default policy is valid");
    let mut group = c.benchmark_group("hashcash_verify");
    group.bench_function("parse_and_check_stateless", |b| {
        let text = stamp.to_string();
        b.iter(|| {
            let s = Stamp::parse(black_box(text.as_bytes())).expect("well formed");
            checker
                .check_stateless(NOW, &s, MessageClass::RecordPut, b"alice", b"key", b"value")
                .expect("valid")
        })
    });
    let cheap = StampPolicy::testnet();
    let stamps: Vec<Stamp> = (0..1000)
        .map(|_| {
            cheap
                .mint(MessageClass::RecordPut, NOW, b"alice", b"key", b"value")
                .expect("date in range")
        })
        .collect();
    group.throughput(Throughput::Elements(stamps.len() as u64));
    group.bench_function("check_with_replay_cache", |b| {
        b.iter_batched(
            || StampChecker::new(StampPolicy::testnet()).expect("valid policy"),
            |mut c| {
                for s in &stamps {
                    // Two independent mints may collide at 8 bits only with negligible odds.
                    let _ = c.check(NOW, s, MessageClass::RecordPut, b"alice", b"key", b"value");
                }
                c
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();

    let mut group = c.benchmark_group("hashcash_mint");
    let resource = Resource::new(b"alice", b"key", "record-put", b"value");
    for bits in [8u8, 12, 16, 20] {
        if bits >= 16 {
            group.sample_size(20);
        }
        group.bench_function(format!("{bits}_bits"), |b| {
            b.iter(|| Stamp::mint(bits, NOW, resource).expect("date in range"))
        });
    }
    group.finish();
}

criterion_group!(benches, scrypt, identity, hashcash);
criterion_main!(benches);
