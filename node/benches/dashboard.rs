//! What the dashboard's page costs its node on the wire, at scale: the JSON it receives on load
//! and per minute in each view, with 1,000 members and with 100,000 records.
//!
//! `cargo bench -p shoal-node --bench dashboard` starts, in one process over the memory
//! transport, `--members` real nodes (1,000; gate, SWIM with its WAN timing and the DHT,
//! libp2p's plaintext upgrade as `shoal-dht`'s lookup benchmark uses, so one process can pay for
//! them) joining in waves through a few seeds, with node 0 serving JSON-RPC; and one more node
//! holding `--records` records (100,000), put by its one peer. Over a WebSocket it makes the calls the page makes, as the page
//! makes them (on load; then every 5 s the visible view's own; subscriptions throughout), and
//! prints the JSON bytes of each and the total per view per minute. Without `--bench` (as under
//! `cargo test --benches`) it runs 20 members and 2,000 records, judging nothing.
//!
//! The page's own counter (`#wire` in the page, read by the browser test) measures the same
//! stream in a browser; this benchmark reaches the sizes a test cannot start.

use std::num::NonZeroUsize;
use std::time::{Duration, Instant};

use futures::StreamExt;
use jsonrpsee::core::client::{ClientT, SubscriptionClientT};
use jsonrpsee::core::params::ObjectParams;
use jsonrpsee::ws_client::{WsClient, WsClientBuilder};
use libp2p::Multiaddr;
use serde_json::{Value, json};
use shoal_dht::node::{EventLoop, dangerous_plaintext_memory_transport};
use shoal_dht::{Client, Config, NodeKeyExt};
use shoal_node::join::JoinStatus;
use shoal_node::rpc::{self, Context, RpcConfig, RpcServer};
use shoal_pow::{CancelToken, MintOptions, NodeKey, Puzzle, mint};

/// Seconds between the page's refreshes of the visible view.
const REFRESH_SECS: u64 = 5;

/// Nodes joining at once.
const WAVE: usize = 100;

struct Options {
    members: usize,
    records: usize,
    /// How long the subscriptions are watched (a minute; a few seconds in the short run).
    window: Duration,
}

impl Options {
    fn parse() -> Self {
        let args: Vec<String> = std::env::args().collect();
        let full = args.iter().any(|a| a == "--bench");
        let value = |name: &str, default: usize| {
            args.iter()
                .position(|a| a == name)
                .and_then(|i| args.get(i + 1))
                .and_then(|v| v.parse().ok())
                .unwrap_or(default)
        };
        Self {
            members: value("--members", if full { 1_000 } else { 20 }),
            records: value("--records", if full { 100_000 } else { 2_000 }),
            window: Duration::from_secs(if full { 60 } else { 3 }),
        }
    }
}

fn config(records: usize) -> Config {
    // SWIM's WAN timing (a probe every 5 s): a thousand nodes in one process on two cores cannot
    // keep LAN timing's pace, while each real node runs only its own.
    let mut config = Config {
        swim: shoal_swim::Config::wan(),
        idle_connection_timeout: Duration::from_secs(10),
        ..Config::local()
    };
    config.store.max_records = config.store.max_records.max(records + 1_000);
    config
}

async fn start_node(puzzle: &Puzzle, config: Config) -> (Client, Multiaddr) {
    let key = NodeKey::generate();
    let minting = MintOptions {
        threads: NonZeroUsize::MIN,
        ..MintOptions::default()
    };
    let proof = mint(puzzle, &key.public(), &minting, &CancelToken::new(), |_| {})
        .expect("minting at the local difficulty succeeds")
        .proof;
    let transport = dangerous_plaintext_memory_transport(&key.to_libp2p());
    let (client, event_loop) = EventLoop::new(key, proof, config, transport).expect("starts");
    tokio::spawn(event_loop.run());
    let addr = client
        .listen("/memory/0".parse().expect("valid multiaddr"))
        .await
        .expect("memory listen");
    (client, addr)
}

async fn serve(node: &Client) -> RpcServer {
    let context = Context {
        network: "local".into(),
        transport: "tcp",
        onion: None,
        data_dir: None,
        default_ttl: Duration::from_secs(3600),
        join: std::sync::Arc::new(JoinStatus::new(false)),
    };
    let config = RpcConfig {
        listen: "127.0.0.1:0".parse().expect("valid address"),
        requests_per_second: 10_000,
        burst: 10_000,
        ..RpcConfig::default()
    };
    rpc::start(&config, node.clone(), context)
        .await
        .expect("the RPC server starts")
}

/// `n` nodes, node 0 the first seed, joined in waves; returns them once node 0 lists 99 % of the
/// others as live members (or after 5 minutes, saying how many it lists).
async fn network(n: usize) -> Vec<Client> {
    let puzzle = Puzzle::new(config(0).puzzle).expect("the local preset is valid");
    let mut nodes = Vec::with_capacity(n);
    for _ in 0..n {
        nodes.push(start_node(&puzzle, config(0)).await);
    }
    let seeds = n.min(8);
    for node in &nodes[1..seeds] {
        let _ = node
            .0
            .join(vec![(nodes[0].0.peer_id(), nodes[0].1.clone())])
            .await;
    }
    let mut joined = seeds;
    while joined < n {
        let wave = joined..(joined + WAVE).min(n);
        futures::stream::iter(wave.clone())
            .map(|i| {
                let seed = &nodes[i % seeds];
                let joiner = nodes[i].0.clone();
                let seed = (seed.0.peer_id(), seed.1.clone());
                async move {
                    let _ = joiner.join(vec![seed]).await;
                }
            })
            .buffer_unordered(WAVE)
            .collect::<Vec<_>>()
            .await;
        joined = wave.end;
        eprintln!("  {joined} of {n} joined");
    }
    let start = Instant::now();
    loop {
        let live = nodes[0].0.members().await.len();
        if live * 100 >= (n - 1) * 99 {
            eprintln!(
                "  node 0 lists {live} members after {:.0?}",
                start.elapsed()
            );
            break;
        }
        if start.elapsed() > Duration::from_secs(300) {
            eprintln!("  node 0 lists {live} of {} members after 5 min", n - 1);
            break;
        }
        eprintln!("  node 0 lists {live} members");
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
    nodes.into_iter().map(|(c, _)| c).collect()
}

fn params(value: Value) -> ObjectParams {
    let mut p = ObjectParams::new();
    if let Value::Object(map) = value {
        for (k, v) in map {
            p.insert(&k, v).expect("JSON values serialize");
        }
    }
    p
}

/// The JSON bytes of the result of one call.
async fn bytes_of(client: &WsClient, method: &str, p: Value) -> usize {
    let result: Value = client
        .request(method, params(p))
        .await
        .unwrap_or_else(|e| panic!("{method}: {e}"));
    serde_json::to_string(&result).map_or(0, |s| s.len())
}

/// Bytes a subscription delivers in `window`, and how many notifications.
async fn subscription_bytes(
    client: &WsClient,
    method: &str,
    unsubscribe: &str,
    window: Duration,
) -> (usize, usize) {
    let mut sub = client
        .subscribe::<Value, _>(method, params(json!({})), unsubscribe)
        .await
        .unwrap_or_else(|e| panic!("{method}: {e}"));
    let (mut bytes, mut count) = (0, 0);
    let deadline = tokio::time::Instant::now() + window;
    while let Ok(Some(Ok(item))) = tokio::time::timeout_at(deadline, sub.next()).await {
        bytes += serde_json::to_string(&item).map_or(0, |s| s.len());
        count += 1;
    }
    (bytes, count)
}

fn kib(bytes: f64) -> String {
    format!("{:.1} KiB", bytes / 1024.0)
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let load = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_owned))
        .unwrap_or_default();
    format!(
        "{cpu}, {} cores, load average {load}",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    )
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let options = Options::parse();
    println!("# Dashboard traffic ({})", machine());
    let per_minute = 60 / REFRESH_SECS as usize;

    eprintln!("== {} members", options.members);
    let nodes = network(options.members).await;
    let server = serve(&nodes[0]).await;
    let listed = nodes[0].members().await.len();
    let ws = WsClientBuilder::default()
        .max_response_size(64 << 20)
        .build(format!("ws://{}", server.local_addr()))
        .await
        .expect("WebSocket");
    // Let the history fill a little, as on a page opened on a running node.
    tokio::time::sleep(options.window / 6).await;
    let info = bytes_of(&ws, "node_info", json!({})).await;
    let members = bytes_of(&ws, "swim_members", json!({})).await;
    let stats = bytes_of(&ws, "node_stats", json!({})).await;
    let routing = bytes_of(&ws, "dht_routingTable", json!({})).await;
    let peers = bytes_of(&ws, "node_peers", json!({"detail": true})).await;
    let trust = bytes_of(&ws, "trust_peers", json!({})).await;
    let window = options.window;
    // What the subscriptions delivered in the window, as bytes a minute.
    let per_min = |bytes: usize| bytes as f64 * 60.0 / window.as_secs_f64();
    let (changes, n_changes) = {
        // Member changes while 10 % of the members crash.
        let crashing = options.members / 10;
        let victims: Vec<Client> = nodes[nodes.len() - crashing..].to_vec();
        let watch = subscription_bytes(&ws, "swim_subscribe", "swim_unsubscribe", window);
        let crash = async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            for v in victims {
                tokio::spawn(async move { v.shutdown().await });
            }
        };
        let (watched, ()) = tokio::join!(watch, crash);
        watched
    };
    let (samples, n_samples) =
        subscription_bytes(&ws, "node_subscribeStats", "node_unsubscribeStats", window).await;
    let load = info + members + stats;

    println!();
    println!(
        "## {} members (node 0 lists {listed} live; 10 % of them crash during the change window)",
        options.members
    );
    println!();
    println!("| what the page receives | bytes |");
    println!("|---|---|");
    println!(
        "| on load: node_info + swim_members + node_stats | {} + {} + {} = {} |",
        kib(info as f64),
        kib(members as f64),
        kib(stats as f64),
        kib(load as f64)
    );
    println!(
        "| swim_change notifications in the window while {} members crash | {} ({n_changes} changes) |",
        options.members / 10,
        kib(changes as f64)
    );
    println!(
        "| node_stats samples in the window | {} ({n_samples} samples) |",
        kib(samples as f64)
    );
    println!(
        "| one dht_routingTable (the routing view, every {REFRESH_SECS} s) | {} |",
        kib(routing as f64)
    );
    println!(
        "| one node_peers detail + trust_peers (the traffic view, every {REFRESH_SECS} s) | {} + {} |",
        kib(peers as f64),
        kib(trust as f64)
    );
    println!(
        "| per minute, membership view open (subscriptions only) | {} |",
        kib(per_min(changes + samples))
    );
    println!(
        "| per minute, routing view open | {} |",
        kib(per_min(changes + samples) + (per_minute * routing) as f64)
    );
    println!(
        "| per minute, traffic view open | {} |",
        kib(per_min(changes + samples) + (per_minute * (peers + trust)) as f64)
    );
    drop(ws);
    server.stop().await;
    // Dropped, not shut down one by one (a graceful leave each would take minutes): an event
    // loop ends once its last client is gone.
    drop(nodes);

    eprintln!("== {} records", options.records);
    let puzzle = Puzzle::new(config(0).puzzle).expect("the local preset is valid");
    // A put needs a replica besides its putter: the holder stores what its one peer puts.
    let (holder, holder_addr) = start_node(&puzzle, config(options.records)).await;
    let (putter, _) = start_node(&puzzle, config(options.records)).await;
    putter
        .join(vec![(holder.peer_id(), holder_addr)])
        .await
        .expect("the putter joins the holder");
    while holder.members().await.is_empty() || putter.peers().await.is_empty() {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let started = Instant::now();
    futures::stream::iter(0..options.records)
        .map(|i| {
            let putter = putter.clone();
            async move {
                putter
                    .put(
                        format!("record-{i:07}").into_bytes(),
                        vec![7; 64],
                        Duration::from_secs(3600),
                        NonZeroUsize::new(1),
                    )
                    .await
                    .expect("the holder keeps the put")
            }
        })
        .buffer_unordered(64)
        .collect::<Vec<_>>()
        .await;
    eprintln!(
        "  {} records put in {:.0?}",
        options.records,
        started.elapsed()
    );
    let server = serve(&holder).await;
    let ws = WsClientBuilder::default()
        .build(format!("ws://{}", server.local_addr()))
        .await
        .expect("WebSocket");
    let first = bytes_of(&ws, "dht_records", json!({})).await;
    let t = Instant::now();
    let rounds = 20;
    for _ in 0..rounds {
        bytes_of(&ws, "dht_records", json!({})).await;
    }
    let page_ms = t.elapsed().as_secs_f64() * 1e3 / rounds as f64;
    let middle = bytes_of(
        &ws,
        "dht_records",
        json!({"prefix": "record-005", "limit": 50}),
    )
    .await;
    let info = bytes_of(&ws, "node_info", json!({})).await;
    println!();
    println!("## {} records held by one node", options.records);
    println!();
    println!("| what the page receives | bytes |");
    println!("|---|---|");
    println!(
        "| one page of dht_records (50 records; the records view, every {REFRESH_SECS} s) | {} ({page_ms:.1} ms a page over the whole store) |",
        kib(first as f64)
    );
    println!("| one page of a prefix search | {} |", kib(middle as f64));
    println!(
        "| per minute, records view open (a page and node_info every {REFRESH_SECS} s) | {} |",
        kib((per_minute * (first + info)) as f64)
    );
    server.stop().await;
    holder.shutdown().await;
}
