//! Onion service timings on a private Tor network: time from launch until an onion service is
//! reachable, and stream round-trip latency (p50/p95) over onions.
//!
//! `cargo bench -p shoal-tor --bench onion` starts a private network (needs Debian's `tor`).
//! Under `cargo test --benches` (no `--bench` argument) it only reports that it was skipped,
//! so CI keeps it compiling without starting Tor.

use std::future::poll_fn;
use std::pin::Pin;
use std::time::{Duration, Instant};

use futures::{AsyncReadExt as _, AsyncWriteExt as _};
use libp2p::core::Endpoint;
use libp2p::core::Transport as _;
use libp2p::core::transport::{DialOpts, ListenerId, PortUse, TransportEvent};
use shoal_tor::testnet::{TestNetConfig, TestNetwork};
use shoal_tor::{Transport, any_onion};

/// Round trips measured.
const SAMPLES: usize = 50;
/// Bytes per round trip.
const MESSAGE: usize = 64;

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("onion bench: skipped (run `cargo bench -p shoal-tor --bench onion`; needs tor)");
        return;
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    runtime.block_on(run());
}

async fn transport(net: &TestNetwork, name: &str) -> Transport {
    let keypair = libp2p::identity::Keypair::generate_ed25519();
    let key = shoal_tor::signing_key_from_libp2p(&keypair).expect("an ed25519 keypair");
    Transport::bootstrap(net.client_config(name), key)
        .await
        .expect("arti bootstraps on the private network")
}

/// The next transport event of `t`.
async fn next_event(
    t: &mut Transport,
) -> TransportEvent<<Transport as libp2p::core::Transport>::ListenerUpgrade, shoal_tor::Error> {
    poll_fn(|cx| Pin::new(&mut *t).poll(cx)).await
}

async fn run() {
    let started = Instant::now();
    let net = tokio::task::spawn_blocking(|| TestNetwork::start(TestNetConfig::default()))
        .await
        .expect("the start thread does not panic")
        .expect("the private Tor network starts (is Debian's tor installed?)");
    println!(
        "network: keys {:?}, start to usable consensus {:?}",
        net.timings().keys,
        net.timings().consensus
    );
    let (mut server, client) = tokio::join!(transport(&net, "server"), transport(&net, "client"));
    println!(
        "two arti clients bootstrapped {:?} after start",
        started.elapsed()
    );

    let launched = Instant::now();
    server
        .listen_on(ListenerId::next(), any_onion(80))
        .expect("the onion service launches");
    let addr = match next_event(&mut server).await {
        TransportEvent::NewAddress { listen_addr, .. } => listen_addr,
        _ => panic!("the first listener event is the onion address"),
    };
    // Echo every incoming stream.
    let echo = tokio::spawn(async move {
        loop {
            if let TransportEvent::Incoming { upgrade, .. } = next_event(&mut server).await {
                tokio::spawn(async move {
                    let Ok(mut stream) = upgrade.await else {
                        return;
                    };
                    let mut buf = [0u8; MESSAGE];
                    while stream.read_exact(&mut buf).await.is_ok() {
                        if stream.write_all(&buf).await.is_err() || stream.flush().await.is_err() {
                            break;
                        }
                    }
                });
            }
        }
    });

    let mut client = client;
    let opts = DialOpts {
        role: Endpoint::Dialer,
        port_use: PortUse::New,
    };
    let mut stream = client
        .dial(addr.clone(), opts)
        .expect("an onion address is dialable")
        .await
        .expect("the onion service becomes reachable");
    println!(
        "onion service reachable {:?} after launch",
        launched.elapsed()
    );

    let mut rtts = Vec::with_capacity(SAMPLES);
    let message = [0x5a; MESSAGE];
    let mut reply = [0u8; MESSAGE];
    for _ in 0..SAMPLES {
        let t = Instant::now();
        stream
            .write_all(&message)
            .await
            .expect("write over the onion stream");
        stream.flush().await.expect("flush the onion stream");
        stream.read_exact(&mut reply).await.expect("read the echo");
        assert_eq!(reply, message);
        rtts.push(t.elapsed());
    }
    rtts.sort();
    let pct = |p: usize| rtts[(rtts.len() - 1) * p / 100];
    println!(
        "round trip over onions ({SAMPLES} x {MESSAGE} B): p50 {:?}, p95 {:?}, max {:?}",
        pct(50),
        pct(95),
        rtts[rtts.len() - 1]
    );
    echo.abort();
    let _ = tokio::time::timeout(Duration::from_secs(1), echo).await;
}
