//! End to end with the real binary: `shoal testnet --nodes 5` starts five processes on loopback;
//! a put through one node's JSON-RPC is read through another's; lockstep announce, put, get;
//! one node is killed with SIGKILL and restarted from its config, and still serves its records;
//! SIGINT stops the testnet and every node.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use jsonrpsee::core::client::ClientT;
use jsonrpsee::core::params::ObjectParams;
use jsonrpsee::http_client::{HttpClient, HttpClientBuilder};
use serde_json::{Value, json};

const SHOAL: &str = env!("CARGO_BIN_EXE_shoal");

/// One node line of the testnet's output.
#[derive(Debug, Clone)]
struct Node {
    url: String,
    pid: u32,
    config: PathBuf,
}

/// Reads a node line: the `http://` URL, the number after `pid`, the path after `config`.
fn parse_node(line: &str) -> Option<Node> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let url = words.iter().find(|w| w.starts_with("http://"))?.to_string();
    let after = |name: &str| {
        words
            .iter()
            .position(|w| *w == name)
            .and_then(|i| words.get(i + 1))
            .copied()
    };
    Some(Node {
        url,
        pid: after("pid")?.parse().ok()?,
        config: PathBuf::from(after("config")?),
    })
}

fn client(url: &str) -> HttpClient {
    HttpClientBuilder::default()
        .request_timeout(Duration::from_secs(30))
        .build(url)
        .expect("valid URL")
}

async fn call(
    url: &str,
    method: &str,
    params: Value,
) -> Result<Value, jsonrpsee::core::ClientError> {
    let mut p = ObjectParams::new();
    if let Value::Object(map) = params {
        for (k, v) in map {
            p.insert(&k, v).expect("JSON values serialize");
        }
    }
    client(url).request(method, p).await
}

fn signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .args([format!("-{name}"), pid.to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill -{name} {pid}");
}

fn alive(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| s.contains(") Z "))
            .unwrap_or(true)
}

/// Polls `node_info` until it answers, within `limit`.
async fn wait_serving(url: &str, limit: Duration) -> Value {
    let start = Instant::now();
    loop {
        if let Ok(info) = call(url, "node_info", json!({})).await {
            return info;
        }
        assert!(
            start.elapsed() < limit,
            "{url} did not answer within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_process_testnet() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let mut testnet = KillOnDrop(
        Command::new(SHOAL)
            .args(["testnet", "--nodes", "5", "--dir"])
            .arg(dir.path())
            .env("SHOAL_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("shoal testnet starts"),
    );
    let stdout = testnet.0.stdout.take().expect("piped stdout");
    let (nodes, lines) = tokio::task::spawn_blocking(move || {
        let mut nodes = Vec::new();
        let mut lines = Vec::new();
        for line in BufReader::new(stdout).lines() {
            let line = line.expect("utf-8 output");
            lines.push(line.clone());
            if let Some(node) = parse_node(&line) {
                nodes.push(node);
            }
            if line.contains("ready") {
                break;
            }
        }
        (nodes, lines)
    })
    .await
    .expect("reader");
    assert_eq!(nodes.len(), 5, "five node lines: {lines:#?}");
    for n in &nodes {
        assert!(n.url.starts_with("http://127.0.0.1:"), "{n:?}");
    }

    // Put through node 1, get through node 4.
    let put = call(
        &nodes[0].url,
        "dht_put",
        json!({"key": "e2e", "value": "across processes"}),
    )
    .await
    .expect("put");
    let got = call(&nodes[3].url, "dht_get", json!({"key": "e2e"}))
        .await
        .expect("get");
    assert_eq!(got["value"], "across processes");
    assert_eq!(got["seq"], put["seq"]);

    // Lockstep: announce through node 2, put the value, get through node 5.
    let announced = call(
        &nodes[1].url,
        "lockstep_announce",
        json!({"key": "ls", "value": "v1"}),
    )
    .await
    .expect("announce");
    call(
        &nodes[1].url,
        "dht_put",
        json!({"key": "ls", "value": "v1", "seq": announced["seq"]}),
    )
    .await
    .expect("put the announced value");
    let got = call(&nodes[4].url, "dht_get", json!({"key": "ls"}))
        .await
        .expect("get");
    assert_eq!(got["value"], "v1");
    assert_eq!(got["lockstep"], true);
    // A different value for the announced sequence is refused.
    let mismatch = call(
        &nodes[1].url,
        "dht_put",
        json!({"key": "ls", "value": "v2", "seq": announced["seq"]}),
    )
    .await;
    match mismatch {
        Err(jsonrpsee::core::ClientError::Call(e)) => assert_eq!(e.code(), -32043),
        other => panic!("expected lockstep mismatch, got {other:?}"),
    }

    // SIGKILL node 3, restart it from its config while its only seed (node 1) is stopped: its
    // records are still there and served, and its join, failing through the seed, keeps
    // trying and gets in through the members of its routing snapshot.
    let victim = nodes[2].clone();
    // Copies a node keeps beyond a put's quorum (`PutCopy`) reach its disk within the copy
    // flush delay (1 s) of arriving; a crash before that may lose them by design. Wait that out
    // so every record held counts.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let before = call(&victim.url, "node_info", json!({}))
        .await
        .expect("info");
    let held = before["records"].as_u64().expect("records");
    assert!(held >= 2, "node 3 holds the records: {before}");
    signal(victim.pid, "KILL");
    let start = Instant::now();
    while alive(victim.pid) {
        assert!(start.elapsed() < Duration::from_secs(10), "node 3 died");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    signal(nodes[0].pid, "STOP");
    let restarted = KillOnDrop(
        Command::new(SHOAL)
            .args(["run", "--config"])
            .arg(&victim.config)
            .env("SHOAL_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("shoal run starts"),
    );
    let after = wait_serving(&victim.url, Duration::from_secs(30)).await;
    let start = Instant::now();
    let join = loop {
        let info = call(&victim.url, "node_info", json!({}))
            .await
            .expect("info");
        if info["join"]["phase"] == "joined" {
            break info["join"].clone();
        }
        assert_eq!(info["join"]["phase"], "joining", "{info}");
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "node 3 did not join with its seed stopped: {info}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    signal(nodes[0].pid, "CONT");
    println!(
        "node 3 joined {:?} after its restart, its seed stopped: {join}",
        start.elapsed()
    );
    assert!(join["attempts"].as_u64().expect("attempts") >= 2, "{join}");
    assert!(join["failures"].as_u64().expect("failures") >= 1, "{join}");
    assert!(join["last_error"].is_string(), "{join}");
    assert_eq!(after["peer_id"], before["peer_id"]);
    assert!(
        after["records"].as_u64().expect("records") >= held,
        "records survive SIGKILL: before {before}, after {after}"
    );
    let got = call(&victim.url, "dht_get", json!({"key": "e2e"}))
        .await
        .expect("get after restart");
    assert_eq!(got["value"], "across processes");

    // SIGINT stops the testnet and its nodes cleanly.
    signal(testnet.0.id(), "INT");
    let status = tokio::task::spawn_blocking(move || {
        let status = testnet.0.wait().expect("wait for the testnet");
        drop(testnet);
        status
    })
    .await
    .expect("waiter");
    assert!(status.success(), "testnet exit status {status}");
    for n in &nodes {
        if n.pid != victim.pid {
            assert!(!alive(n.pid), "node {n:?} stopped");
        }
    }
    drop(restarted);
}
