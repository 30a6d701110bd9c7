//! Tor end to end with the real binary, over a private Tor network on loopback (Debian's `tor`;
//! `.ci/install-deps` installs it): three Tor-only nodes join through an onion seed address, a
//! "both" node bridges them to a TCP-only node; SWIM membership converges; a put through one
//! node's JSON-RPC is read through the others across the kinds; a notice announced at a Tor-only
//! node reaches the subscribers of another Tor-only node and of the TCP-only node (through the
//! bridge); and no IP-bearing address of a Tor-only node reaches any other node. A second test runs `examples/tor/tor_example.sh`:
//! `shoal testnet --transport tor`, the one command that does the Tor-only part for a user.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use jsonrpsee::core::client::ClientT;
use jsonrpsee::core::params::ObjectParams;
use jsonrpsee::http_client::HttpClientBuilder;
use serde_json::{Value, json};
use shoal_dht::NodeKeyExt;
use shoal_node::config::{Config, DhtSettings, Network, P2pConfig, Transport};
use shoal_node::rpc::RpcConfig;
use shoal_node::tor::TorConfig;
use shoal_pow::NodeKey;

const SHOAL: &str = env!("CARGO_BIN_EXE_shoal");
/// Onion virtual port of every node.
const ONION_PORT: u16 = 4001;

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

struct Node {
    name: &'static str,
    dir: PathBuf,
    url: String,
    peer: String,
    onion: String,
    tcp: Option<String>,
}

/// `shoal init` in `dir`; returns the peer id and the onion address (with `/p2p`).
fn init(dir: &Path) -> (String, String) {
    let status = Command::new(SHOAL)
        .args(["init", "--quiet", "--network", "testnet", "--data-dir"])
        .arg(dir)
        .stdout(Stdio::null())
        .status()
        .expect("shoal init runs");
    assert!(status.success(), "shoal init in {}", dir.display());
    let key = NodeKey::load(&dir.join("node.key")).expect("the key init wrote");
    let peer = key.peer_id();
    let onion = shoal_tor::onion_address_of(&key.to_libp2p().public(), ONION_PORT)
        .expect("an ed25519 key has an onion address");
    (peer.to_string(), format!("{onion}/p2p/{peer}"))
}

fn config(
    node: &Node,
    transport: Transport,
    seeds: Vec<String>,
    tor: &TorConfig,
    rpc_port: u16,
) -> String {
    let config = Config {
        network: Network::Testnet,
        data_dir: node.dir.clone(),
        p2p: P2pConfig {
            listen: node.tcp.iter().cloned().collect(),
            seeds,
            transport,
            ..P2pConfig::default()
        },
        dht: DhtSettings {
            // A TCP-only node reaches a single peer (the bridge); a quorum of one lets it put.
            put_quorum: std::num::NonZeroUsize::new(1),
            ..DhtSettings::default()
        },
        tor: TorConfig {
            onion_port: ONION_PORT,
            ..tor.clone()
        },
        rpc: RpcConfig {
            listen: format!("127.0.0.1:{rpc_port}").parse().expect("an address"),
            ..RpcConfig::default()
        },
        ..Config::default()
    };
    config.to_documented_toml().expect("a valid config renders")
}

async fn call(url: &str, method: &str, params: Value) -> Result<Value, String> {
    let client = HttpClientBuilder::default()
        .request_timeout(Duration::from_secs(120))
        .build(url)
        .expect("valid URL");
    let mut p = ObjectParams::new();
    if let Value::Object(map) = params {
        for (k, v) in map {
            p.insert(&k, v).expect("JSON values serialize");
        }
    }
    client.request(method, p).await.map_err(|e| e.to_string())
}

/// Alive members `url` sees.
async fn alive(url: &str) -> Vec<Value> {
    call(url, "swim_members", json!({}))
        .await
        .ok()
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default()
        .into_iter()
        .filter(|m| m["state"] == "alive")
        .collect()
}

/// One private Tor network at a time: two at once on a 2-core machine slow both past their
/// bounds.
static ONE_NETWORK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn reveals_ip(addr: &str) -> bool {
    ["/ip4/", "/ip6/", "/dns"].iter().any(|p| addr.contains(p))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tor_only_and_mixed_networks() {
    let _one = ONE_NETWORK.lock().await;
    let root = tempfile::tempdir().expect("temporary directory");
    let started = Instant::now();
    let (network, tor_file) = shoal_node::tor_testnet::start(&root.path().join("tor"))
        .await
        .expect("the private Tor network starts (needs Debian's tor)");
    println!("private Tor network ready in {:?}", started.elapsed());
    let tor: TorConfig = {
        #[derive(serde::Deserialize)]
        struct Table {
            tor: TorConfig,
        }
        let text = std::fs::read_to_string(&tor_file).expect("tor.toml");
        toml::from_str::<Table>(&text).expect("tor.toml parses").tor
    };

    // a, b, c: Tor only; d: both (bridge); e: TCP only.
    let names = ["a", "b", "c", "d", "e"];
    let mut nodes = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let dir = root.path().join(name);
        let (peer, onion) = init(&dir);
        let tcp = (i >= 3).then(|| format!("/ip4/127.0.0.1/tcp/{}", free_port()));
        nodes.push(Node {
            name,
            dir,
            url: String::new(),
            peer,
            onion,
            tcp,
        });
    }
    let seed_onion = nodes[0].onion.clone();
    let bridge_tcp = format!(
        "{}/p2p/{}",
        nodes[3].tcp.clone().expect("d listens on TCP"),
        nodes[3].peer
    );
    let mut procs = Vec::new();
    for (i, node) in nodes.iter_mut().enumerate() {
        let (transport, seeds) = match i {
            0 => (Transport::Tor, vec![]),
            1 | 2 => (Transport::Tor, vec![seed_onion.clone()]),
            3 => (Transport::Both, vec![seed_onion.clone()]),
            _ => (Transport::Tcp, vec![bridge_tcp.clone()]),
        };
        let rpc_port = free_port();
        node.url = format!("http://127.0.0.1:{rpc_port}");
        let file = node.dir.join("shoal.toml");
        std::fs::write(&file, config(node, transport, seeds, &tor, rpc_port))
            .expect("write config");
        let log = std::fs::File::create(node.dir.join("node.log")).expect("log file");
        procs.push(Proc(
            Command::new(SHOAL)
                .args(["run", "--config"])
                .arg(&file)
                .env("SHOAL_LOG", "info")
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("shoal run starts"),
        ));
    }

    // Every node serves JSON-RPC once arti has bootstrapped.
    for n in &nodes {
        let deadline = Instant::now() + Duration::from_secs(120);
        while call(&n.url, "node_info", json!({})).await.is_err() {
            assert!(
                Instant::now() < deadline,
                "{} never served JSON-RPC",
                n.name
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    println!("every node serves JSON-RPC after {:?}", started.elapsed());

    // Membership converges. A node admits only members whose addresses it can dial: Tor-only
    // nodes see each other and the bridge, the bridge sees everyone, the TCP-only node sees the
    // bridge.
    let expect = [3, 3, 3, 4, 1];
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        let mut seen = Vec::new();
        for n in &nodes {
            seen.push(alive(&n.url).await.len());
        }
        if seen == expect {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "membership did not converge: alive members {seen:?}, expected {expect:?}"
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    println!("membership converged after {:?}", started.elapsed());

    // Puts and gets across the kinds.
    // A put returns once `quorum` replicas kept it. The Tor-only writer's replicas are b, c and
    // the bridge; the TCP-only reader finds the value only on the bridge, so that put waits for
    // all three (with a quorum of one it could return before the bridge's copy is written, and
    // the read race it). The TCP-only writer reaches the bridge alone: a quorum of one.
    let put = |from: usize, key: &'static str, quorum: usize| {
        let url = nodes[from].url.clone();
        async move {
            call(
                &url,
                "dht_put",
                json!({"key": key, "value": format!("from {from}"), "quorum": quorum}),
            )
            .await
            .unwrap_or_else(|e| panic!("put {key} through node {from}: {e}"))
        }
    };
    put(0, "tor-key", 3).await;
    put(4, "tcp-key", 1).await;
    for (reader, key, from) in [
        (2, "tor-key", 0),
        (4, "tor-key", 0),
        (1, "tcp-key", 4),
        (3, "tcp-key", 4),
    ] {
        let t = Instant::now();
        let got = call(&nodes[reader].url, "dht_get", json!({"key": key}))
            .await
            .unwrap_or_else(|e| panic!("get {key} through {}: {e}", nodes[reader].name));
        assert_eq!(got["value"], format!("from {from}"));
        println!(
            "get {key} through {} in {:?}",
            nodes[reader].name,
            t.elapsed()
        );
    }

    // A notice announced at a reaches the subscribers of c (over onions) and of e (through d).
    let mut subs = Vec::new();
    for i in [2, 4] {
        let ws = jsonrpsee::ws_client::WsClientBuilder::default()
            .build(nodes[i].url.replacen("http://", "ws://", 1))
            .await
            .expect("websocket");
        let sub = jsonrpsee::core::client::SubscriptionClientT::subscribe::<Value, _>(
            &ws,
            "lockstep_subscribe",
            jsonrpsee::rpc_params![],
            "lockstep_unsubscribe",
        )
        .await
        .expect("subscribed");
        subs.push((i, ws, sub));
    }
    let t = Instant::now();
    call(
        &nodes[0].url,
        "lockstep_announce",
        json!({"key": "over-tor", "value": "v"}),
    )
    .await
    .expect("announce through a");
    for (i, _ws, sub) in &mut subs {
        let notice = tokio::time::timeout(Duration::from_secs(90), sub.next())
            .await
            .unwrap_or_else(|_| panic!("{} heard no notice within 90 s", nodes[*i].name))
            .expect("subscription open")
            .expect("notice decodes");
        assert_eq!(notice["key"], "over-tor");
        assert_eq!(notice["publisher"].as_str(), Some(nodes[0].peer.as_str()));
        println!(
            "a notice announced at a reached {}'s subscriber in {:?}",
            nodes[*i].name,
            t.elapsed()
        );
    }
    drop(subs);

    // No IP-bearing address of a Tor-only node reaches anyone.
    let tor_only: Vec<&str> = nodes[..3].iter().map(|n| n.peer.as_str()).collect();
    for n in &nodes {
        for m in alive(&n.url).await {
            let peer = m["peer"].as_str().expect("peer");
            if tor_only.contains(&peer) {
                let addrs = m["addrs"].as_array().expect("addrs");
                assert!(!addrs.is_empty(), "{}: no address for {peer}", n.name);
                for a in addrs {
                    let a = a.as_str().expect("address");
                    assert!(!reveals_ip(a), "{} knows {peer} at {a}", n.name);
                    assert!(a.starts_with("/onion3/"), "{} knows {peer} at {a}", n.name);
                }
            }
        }
    }
    // The Tor-only nodes' own view of their addresses holds only the onion address.
    for n in &nodes[..3] {
        let info = call(&n.url, "node_info", json!({})).await.expect("info");
        // Identify advertises the listen and external addresses: neither holds an IP.
        for field in ["listen_addrs", "external_addrs"] {
            for a in info[field].as_array().expect("an address list") {
                assert!(!reveals_ip(a.as_str().expect("address")), "{}: {a}", n.name);
            }
        }
    }
    drop(procs);
    drop(network);
    println!("done after {:?}", started.elapsed());
}

/// `shoal testnet --transport tor`, through `examples/tor/tor_example.sh`: one command starts a
/// private Tor network and three Tor-only nodes seeded through node 1's onion address and prints
/// each node's URL and onion address; a put and a get go over onions; members are known by their
/// onion addresses only; Ctrl-C stops the nodes and the network, and nothing is left running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn testnet_command_over_tor_example() {
    let _one = ONE_NETWORK.lock().await;
    let root = tempfile::tempdir().expect("temporary directory");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/tor/tor_example.sh");
    let started = Instant::now();
    let run = tokio::process::Command::new("bash")
        .arg(&script)
        .env("SHOAL", SHOAL)
        .env("SHOAL_EXAMPLE_DIR", root.path())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(480), run)
        .await
        .expect("the example ends within 480 s")
        .expect("bash runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = std::fs::read_to_string(root.path().join("testnet.err")).unwrap_or_default();
    println!("{stdout}\n{stderr}");
    assert!(
        output.status.success(),
        "the example failed: {}",
        output.status
    );
    println!("example done in {:?}", started.elapsed());

    let node_lines: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("node ") && l.contains("  http://"))
        .collect();
    assert_eq!(node_lines.len(), 3, "one line per node");
    for line in &node_lines {
        let onion = line.split("  onion ").nth(1).expect("an onion address");
        assert!(
            onion.starts_with("/onion3/") && onion.contains("/p2p/"),
            "{line}"
        );
    }
    assert!(
        stdout.contains(r#""value": "hello over onions""#),
        "the get read the put"
    );
    let members = stdout
        .split("known by their onion addresses only:")
        .nth(1)
        .expect("members printed");
    let members: Value = serde_json::from_str(members.trim()).expect("members as JSON");
    let members = members.as_array().expect("a member list");
    assert_eq!(members.len(), 2, "node 3 sees the two others");
    for m in members {
        assert_eq!(m["state"], "alive");
        for a in m["addrs"].as_array().expect("addrs") {
            let a = a.as_str().expect("address");
            assert!(a.starts_with("/onion3/") && !reveals_ip(a), "{a}");
        }
    }

    // The script's exit stopped the testnet: nodes, then the private network.
    assert!(stderr.contains("private Tor network stopped"), "{stderr}");
    let left = Command::new("pgrep")
        .args(["-f", &root.path().display().to_string()])
        .output()
        .expect("pgrep runs");
    assert!(
        left.stdout.is_empty(),
        "processes left running: {}",
        String::from_utf8_lossy(&left.stdout)
    );
}
