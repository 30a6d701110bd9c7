//! Shoal over onion services: `cargo bench -p shoal-node --bench tor` starts a private Tor
//! network on loopback (Debian's `tor`), three Tor-only `shoal` nodes joined through an onion
//! seed, then measures and prints:
//! - how long a fourth node takes from its start until its onion service is reachable (the
//!   seed counts it an alive member, which needs an onion connection both ways), and until it
//!   serves JSON-RPC (arti bootstrap);
//! - put (to quorum) and get latency p50/p95 through JSON-RPC, over onions.
//!
//! Options after `--`: `--samples N` (default 30). Under `cargo test --benches` it only checks
//! that `tor` is installed: the full run takes two to three minutes, and the Tor end-to-end test
//! (`cargo test -p shoal-node --test tor`) covers the same path in CI.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use jsonrpsee::core::client::ClientT;
use jsonrpsee::core::params::ObjectParams;
use jsonrpsee::http_client::HttpClientBuilder;
use serde_json::{Value, json};
use shoal_dht::NodeKeyExt;
use shoal_node::config::{Config, Network, P2pConfig, Transport};
use shoal_node::rpc::RpcConfig;
use shoal_node::tor::TorConfig;
use shoal_pow::NodeKey;

const SHOAL: &str = env!("CARGO_BIN_EXE_shoal");
const ONION_PORT: u16 = 4001;

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        std::thread::sleep(Duration::from_secs(3));
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn call(url: &str, method: &str, params: Value) -> Result<Value, String> {
    let client = HttpClientBuilder::default()
        .request_timeout(Duration::from_secs(120))
        .build(url)
        .map_err(|e| e.to_string())?;
    let mut p = ObjectParams::new();
    if let Value::Object(map) = params {
        for (k, v) in map {
            p.insert(&k, v).map_err(|e| e.to_string())?;
        }
    }
    client.request(method, p).await.map_err(|e| e.to_string())
}

/// Initialises a Tor-only node in `dir`, starts it and returns it with its RPC URL and its onion
/// seed address.
fn start_node(dir: &Path, seed: Option<&str>, tor: &TorConfig) -> (Proc, String, String) {
    let status = Command::new(SHOAL)
        .args(["init", "--quiet", "--network", "testnet", "--data-dir"])
        .arg(dir)
        .stdout(Stdio::null())
        .status()
        .expect("shoal init runs");
    assert!(status.success());
    let key = NodeKey::load(&dir.join("node.key")).expect("the key init wrote");
    let onion = shoal_tor::onion_address_of(&key.to_libp2p().public(), ONION_PORT)
        .expect("an ed25519 key has an onion address");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let config = Config {
        network: Network::Testnet,
        data_dir: dir.to_owned(),
        p2p: P2pConfig {
            listen: Vec::new(),
            seeds: seed.map(str::to_owned).into_iter().collect(),
            transport: Transport::Tor,
            ..P2pConfig::default()
        },
        tor: TorConfig {
            onion_port: ONION_PORT,
            ..tor.clone()
        },
        rpc: RpcConfig {
            listen: format!("127.0.0.1:{port}").parse().expect("an address"),
            ..RpcConfig::default()
        },
        ..Config::default()
    };
    let file = dir.join("shoal.toml");
    std::fs::write(&file, config.to_documented_toml().expect("renders")).expect("write config");
    let log = std::fs::File::create(dir.join("node.log")).expect("log file");
    let child = Command::new(SHOAL)
        .args(["run", "--config"])
        .arg(&file)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("shoal run starts");
    (
        Proc(child),
        format!("http://127.0.0.1:{port}"),
        format!("{onion}/p2p/{}", key.peer_id()),
    )
}

async fn wait<F, Fut>(what: &str, limit: Duration, mut done: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    while !done().await {
        assert!(start.elapsed() < limit, "{what} not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn alive(url: &str) -> usize {
    call(url, "swim_members", json!({}))
        .await
        .ok()
        .and_then(|v| {
            v.as_array()
                .map(|a| a.iter().filter(|m| m["state"] == "alive").count())
        })
        .unwrap_or(0)
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i].as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if !args.iter().any(|a| a == "--bench") {
        let found = Command::new("tor").arg("--version").output().is_ok();
        assert!(found, "Debian's tor is needed: apt-get install -y tor");
        println!(
            "tor bench: test mode checks only that tor is installed; run `cargo bench -p shoal-node --bench tor`"
        );
        return;
    }
    let samples: usize = args
        .iter()
        .position(|a| a == "--samples")
        .and_then(|i| args.get(i + 1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    let root = tempfile::tempdir().expect("temporary directory");
    let t = Instant::now();
    let (network, tor_file) = shoal_node::tor_testnet::start(&root.path().join("tor"))
        .await
        .expect("the private Tor network starts");
    println!("# Shoal over onion services (private Tor network on loopback)");
    println!(
        "private Tor network ready: {:.1} s",
        t.elapsed().as_secs_f64()
    );
    #[derive(serde::Deserialize)]
    struct Table {
        tor: TorConfig,
    }
    let text = std::fs::read_to_string(tor_file).expect("tor.toml");
    let tor = toml::from_str::<Table>(&text).expect("parses").tor;

    let (a, a_url, seed) = start_node(&root.path().join("a"), None, &tor);
    let (b, b_url, _) = start_node(&root.path().join("b"), Some(&seed), &tor);
    let (c, c_url, _) = start_node(&root.path().join("c"), Some(&seed), &tor);
    for url in [&a_url, &b_url, &c_url] {
        wait("three members", Duration::from_secs(300), || async {
            alive(url).await == 2
        })
        .await;
    }
    // A fourth node: from its start until it serves JSON-RPC, and until the seed sees it alive.
    let t = Instant::now();
    let (d, d_url, _) = start_node(&root.path().join("d"), Some(&seed), &tor);
    wait("node d serving", Duration::from_secs(120), || async {
        call(&d_url, "node_info", json!({})).await.is_ok()
    })
    .await;
    let serving = t.elapsed();
    wait("node d reachable", Duration::from_secs(300), || async {
        alive(&a_url).await == 3
    })
    .await;
    let reachable = t.elapsed();

    let (mut puts, mut gets) = (Vec::new(), Vec::new());
    for i in 0..samples {
        let key = format!("onion-{i}");
        let t = Instant::now();
        call(&a_url, "dht_put", json!({"key": key, "value": "v"}))
            .await
            .expect("put");
        puts.push(t.elapsed());
        let t = Instant::now();
        let got = call(&c_url, "dht_get", json!({"key": key}))
            .await
            .expect("get");
        gets.push(t.elapsed());
        assert_eq!(got["value"], "v");
    }
    puts.sort_unstable();
    gets.sort_unstable();
    println!("\n| measure | value |\n|---|---|");
    println!(
        "| new node: start to serving JSON-RPC (arti bootstrap) | {:.1} s |",
        serving.as_secs_f64()
    );
    println!(
        "| new node: start to onion service reachable (alive at the seed) | {:.1} s |",
        reachable.as_secs_f64()
    );
    println!(
        "| put to quorum over onions, p50 / p95 ({samples} puts) | {:.0} / {:.0} ms |",
        percentile(&puts, 0.5),
        percentile(&puts, 0.95)
    );
    println!(
        "| get over onions from another node, p50 / p95 | {:.0} / {:.0} ms |",
        percentile(&gets, 0.5),
        percentile(&gets, 0.95)
    );
    drop((a, b, c, d));
    drop(network);
}
