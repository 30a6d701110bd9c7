//! End to end with the real binary: `shoal testnet --nodes 5` starts five processes on loopback;
//! a put through one node's JSON-RPC is read through another's; lockstep announce, put, get,
//! and `shoal rpc lockstep_subscribe` following the notices of one publisher under a prefix;
//! one node is killed with SIGKILL and restarted from its config, and still serves its records;
//! SIGINT stops the testnet and every node.
//!
//! Network-wide notices with `shoal testnet --nodes 25`: a subscription at every node sees an
//! announcement made at node 1 (the time it takes is printed); five nodes killed with SIGKILL
//! while node 1 announces, every live subscriber still receives every announcement, in feed
//! order; a subscriber that reconnects with its last position gets what it missed.
//!
//! A node that drops what it stores (`shoal run --dangerous-withhold-records`, test only): it
//! still acknowledges puts with signed receipts, which verify with `dht_verifyReceipt` (a forged
//! or mismatched one is refused); gets asking for proof still succeed through the others, the
//! putter catches each receipt it denies, its standing drops and it is banned.
//!
//! The tests run one at a time (`SERIAL`): 25 processes and the others' testnets beside them
//! would share two cores.
//!
//! The dashboard in headless Chromium against a 3-node testnet: see [`dashboard`].
//!
//! The examples of `examples/` against a real testnet (`shoal testnet --nodes 3`): the Rust
//! `client` (two nodes, WebSocket subscription), the Rust `embed` (joining node 1 as its seed,
//! and on its own), the Python script and the JavaScript one. Each must exit 0 and print what it
//! read back. The Python and JavaScript parts are skipped, with a message, when `python3` or
//! `node` is not installed (`.ci/install-deps` installs both). The Rust examples are built by the
//! cargo running this test, with the flags of the README's test command (`--workspace
//! --all-features`): under `scripts/test` they are already built and the build is a no-op.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use jsonrpsee::core::client::ClientT;
use jsonrpsee::core::params::ObjectParams;
use jsonrpsee::http_client::{HttpClient, HttpClientBuilder};
use serde_json::{Value, json};

const SHOAL: &str = env!("CARGO_BIN_EXE_shoal");

#[path = "e2e/dashboard.rs"]
mod dashboard;

/// Held by each test for its whole run.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// One node line of the testnet's output.
#[derive(Debug, Clone)]
struct Node {
    url: String,
    peer: String,
    pid: u32,
    config: PathBuf,
}

/// Reads a node line: the `http://` URL, the words after `peer`, `pid` and `config`.
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
        peer: after("peer")?.to_owned(),
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

/// Whether `pid` runs, or still holds what it had open. A SIGKILLed process shows as a zombie
/// once its main thread has exited, while its other threads may still be exiting and holding
/// its files (and so its store's lock) for a moment: it is gone when only the zombie is left.
fn alive(pid: u32) -> bool {
    let dir = format!("/proc/{pid}");
    if !std::path::Path::new(&dir).exists() {
        return false;
    }
    let zombie = std::fs::read_to_string(format!("{dir}/stat"))
        .map(|s| s.contains(") Z "))
        .unwrap_or(false);
    !zombie
        || std::fs::read_dir(format!("{dir}/task"))
            .map(|tasks| tasks.count() > 1)
            .unwrap_or(false)
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

/// Starts `shoal testnet --nodes n` in `dir` and reads its node lines until it is ready.
async fn start_testnet(n: usize, dir: &Path) -> (KillOnDrop, Vec<Node>) {
    let mut testnet = KillOnDrop(
        Command::new(SHOAL)
            .args(["testnet", "--nodes", &n.to_string(), "--dir"])
            .arg(dir)
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
    assert_eq!(nodes.len(), n, "{n} node lines: {lines:#?}");
    (testnet, nodes)
}

/// Stops the testnet with SIGINT, as Ctrl-C does, and returns its exit status.
/// `shoal rpc lockstep_subscribe PARAMS` running against a node: its lines of output.
struct Follower {
    child: KillOnDrop,
    lines: tokio::sync::mpsc::UnboundedReceiver<String>,
}

impl Follower {
    /// Starts it and waits until it says, on stderr, that the node accepted the subscription.
    async fn start(url: &str, params: &str) -> Self {
        let mut child = Command::new(SHOAL)
            .args(["rpc", "--url", url, "lockstep_subscribe", params])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("shoal rpc starts");
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, lines) = tokio::sync::mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let said = tokio::task::spawn_blocking(move || {
            let mut said = Vec::new();
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let following = line.starts_with("following");
                said.push(line);
                if following {
                    break;
                }
            }
            said
        });
        let said = tokio::time::timeout(Duration::from_secs(30), said)
            .await
            .expect("subscribed within 30 s")
            .expect("stderr reader");
        assert!(
            said.last().is_some_and(|l| l.starts_with("following")),
            "{said:?}"
        );
        Self {
            child: KillOnDrop(child),
            lines,
        }
    }

    async fn next_line(&mut self, limit: Duration) -> String {
        tokio::time::timeout(limit, self.lines.recv())
            .await
            .expect("a notice within the limit")
            .expect("shoal rpc still running")
    }

    /// SIGINT, as Ctrl-C: it unsubscribes and exits.
    async fn interrupt(self) -> ExitStatus {
        tokio::time::timeout(Duration::from_secs(10), interrupt(self.child))
            .await
            .expect("exits on SIGINT within 10 s")
    }
}

/// Sends `child` SIGINT and waits for it to exit (a testnet stops its nodes, then itself).
async fn interrupt(mut child: KillOnDrop) -> ExitStatus {
    signal(child.0.id(), "INT");
    tokio::task::spawn_blocking(move || {
        let status = child.0.wait().expect("wait for the child");
        drop(child);
        status
    })
    .await
    .expect("waiter")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_process_testnet() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().expect("temporary directory");
    let (testnet, nodes) = start_testnet(5, dir.path()).await;
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

    // Lockstep: announce through node 2, put the value, get through node 5. `shoal rpc` follows
    // node 5's notices of node 2 under the prefix "l", and prints the one announced.
    let mut follower = Follower::start(
        &nodes[4].url,
        &format!(r#"{{"prefix":"l","publisher":"{}"}}"#, nodes[1].peer),
    )
    .await;
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
    let line = follower.next_line(Duration::from_secs(30)).await;
    let notice: Value = serde_json::from_str(&line).expect("a JSON line");
    assert_eq!(notice["key"], "ls", "{line}");
    assert_eq!(notice["publisher"].as_str(), Some(nodes[1].peer.as_str()));
    assert_eq!(notice["seq"], announced["seq"]);
    let status = follower.interrupt().await;
    assert!(
        status.success(),
        "shoal rpc lockstep_subscribe exit status {status}"
    );
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
    let status = interrupt(testnet).await;
    assert!(status.success(), "testnet exit status {status}");
    for n in &nodes {
        if n.pid != victim.pid {
            assert!(!alive(n.pid), "node {n:?} stopped");
        }
    }
    drop(restarted);
}

// ----- the examples of examples/ -----

/// Bound of one example's run (the Rust examples mint identities; CI machines are slow).
const EXAMPLE_TIMEOUT: Duration = Duration::from_secs(300);

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("node/ is inside the workspace")
        .to_owned()
}

/// Builds the `client` and `embed` examples with cargo and returns their executables.
fn build_examples() -> (PathBuf, PathBuf) {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| env!("CARGO").to_owned());
    let mut command = Command::new(cargo);
    // Cargo gives this test the variables of its package (`CARGO_MANIFEST_DIR`, ...). Passed on,
    // they would differ from a plain build's environment, and build scripts that watch them
    // (ring's watches `CARGO_MANIFEST_DIR`) would rerun, rebuilding their dependents here and
    // again in the next plain build.
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        if name.starts_with("CARGO_PKG_")
            || [
                "CARGO_MANIFEST_DIR",
                "CARGO_MANIFEST_PATH",
                "CARGO_CRATE_NAME",
                "CARGO_BIN_NAME",
                "CARGO_PRIMARY_PACKAGE",
                "CARGO_TARGET_TMPDIR",
                "OUT_DIR",
            ]
            .contains(&name.as_ref())
        {
            command.env_remove(name.as_ref());
        }
    }
    let output = command
        .current_dir(workspace_root())
        // The test profile: `cargo test` built every dependency with it already, so only the
        // examples are compiled here (with the dev profile, every dependency was compiled again,
        // beside the other tests of this binary, which then ran on a machine this build kept
        // busy).
        .args([
            "build",
            "--profile",
            "test",
            "--locked",
            "--workspace",
            "--all-features",
            "--example",
            "client",
            "--example",
            "embed",
            "--message-format=json-render-diagnostics",
        ])
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .expect("cargo runs");
    assert!(
        output.status.success(),
        "cargo build of the examples failed"
    );
    let (mut client, mut embed) = (None, None);
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let Ok(message) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        if message["reason"] != "compiler-artifact" || message["target"]["kind"][0] != "example" {
            continue;
        }
        let Some(exe) = message["executable"].as_str().map(PathBuf::from) else {
            continue;
        };
        match message["target"]["name"].as_str() {
            Some("client") => client = Some(exe),
            Some("embed") => embed = Some(exe),
            _ => {}
        }
    }
    (
        client.expect("cargo reported the client executable"),
        embed.expect("cargo reported the embed executable"),
    )
}

/// Whether `program --version` runs.
fn installed(program: &str) -> bool {
    Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Says on the terminal, past the test harness's capture, what was skipped.
fn skipped(what: &str) {
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED {what} (.ci/install-deps installs it)"
    );
}

/// Calls `method` on the node at `url`; a failure fails the test.
async fn rpc(url: &str, method: &str, params: Value) -> Value {
    call(url, method, params)
        .await
        .unwrap_or_else(|e| panic!("{method} at {url}: {e}"))
}

/// Runs an example to its end; asserts that it exited 0 and printed every one of `expected`.
async fn run_example(name: &str, mut command: tokio::process::Command, expected: &[&str]) {
    command
        .current_dir(workspace_root())
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let output: Output = tokio::time::timeout(EXAMPLE_TIMEOUT, command.output())
        .await
        .unwrap_or_else(|_| panic!("{name} did not finish within {EXAMPLE_TIMEOUT:?}"))
        .unwrap_or_else(|e| panic!("{name} did not start: {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("--- {name}:\n{stdout}{stderr}");
    assert!(
        output.status.success(),
        "{name} exited with {}:\n{stdout}\n{stderr}",
        output.status
    );
    for line in expected {
        assert!(
            stdout.contains(line),
            "{name} did not print {line:?}:\n{stdout}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn examples_run_against_a_testnet() {
    let _serial = SERIAL.lock().await;
    let (client, embed) = tokio::task::spawn_blocking(build_examples)
        .await
        .expect("builder");

    let dir = tempfile::tempdir().expect("temporary directory");
    let (testnet, nodes) = start_testnet(3, dir.path()).await;

    // Node 1's p2p address, the seed for `embed`: its listen address and its peer id.
    let info = rpc(&nodes[0].url, "node_info", json!({})).await;
    let listen = info["listen_addrs"][0].as_str().expect("a listen address");
    let seed = format!("{listen}/p2p/{}", nodes[0].peer);

    let mut command = tokio::process::Command::new(&client);
    command.args([&nodes[0].url, &nodes[1].url]);
    run_example(
        "client",
        command,
        &[
            "read back through B: \"hello from jsonrpsee\"",
            "get of a missing key: not found (-32040)",
            "notice on A's subscription: \"client-release\"",
            "read back through A: \"v1.0\" (lockstep: true)",
        ],
    )
    .await;

    let embed_lines = [
        "bob read back: hello from an embedded node",
        "bob heard a notice for embed-release",
        "bob read back: v1.0 (announced: true)",
        "both nodes stopped",
    ];
    let mut command = tokio::process::Command::new(&embed);
    command.arg(&seed);
    let joined = format!("alice joined through {listen}");
    let mut expected = embed_lines.to_vec();
    expected.push(&joined);
    run_example("embed (through the testnet)", command, &expected).await;
    // The embedded nodes are gone; the record alice put stays with the testnet's nodes.
    let got = rpc(&nodes[2].url, "dht_get", json!({"key": "embed-greeting"})).await;
    assert_eq!(got["value"], "hello from an embedded node", "{got}");
    run_example(
        "embed (on its own)",
        tokio::process::Command::new(&embed),
        &embed_lines,
    )
    .await;

    let script_lines = [
        "bad key refused: invalid params (-32602), param 'key'",
        "missing key: not found (-32040)",
    ];
    if installed("python3") {
        // The URL from the environment, as a user with `SHOAL_RPC` set would run it.
        let mut command = tokio::process::Command::new("python3");
        command
            .arg("examples/python/shoal_example.py")
            .env("SHOAL_RPC", &nodes[2].url);
        let mut expected = script_lines.to_vec();
        expected.push("read back: hello from Python");
        run_example("python", command, &expected).await;
    } else {
        skipped("the Python example: python3 is not installed");
    }
    if installed("node") {
        let mut command = tokio::process::Command::new("node");
        command
            .arg("examples/js/shoal_example.mjs")
            .arg(&nodes[1].url);
        let mut expected = script_lines.to_vec();
        expected.push("read back: hello from JavaScript");
        run_example("javascript", command, &expected).await;
    } else {
        skipped("the JavaScript example: node is not installed");
    }

    // SIGINT stops the testnet cleanly.
    let status = interrupt(testnet).await;
    assert!(status.success(), "testnet exit status {status}");
}

/// A `lockstep_subscribe` subscription over WebSocket, in the test process.
type Subscription = jsonrpsee::core::client::Subscription<Value>;

async fn subscribe(url: &str, params: Value) -> (jsonrpsee::ws_client::WsClient, Subscription) {
    let ws = jsonrpsee::ws_client::WsClientBuilder::default()
        .build(url.replacen("http://", "ws://", 1))
        .await
        .expect("websocket");
    let mut p = ObjectParams::new();
    if let Value::Object(map) = params {
        for (k, v) in map {
            p.insert(&k, v).expect("JSON values serialize");
        }
    }
    let sub = jsonrpsee::core::client::SubscriptionClientT::subscribe(
        &ws,
        "lockstep_subscribe",
        p,
        "lockstep_unsubscribe",
    )
    .await
    .expect("subscribed");
    (ws, sub)
}

/// The next notice of a subscription, within `limit`.
async fn next_notice(sub: &mut Subscription, limit: Duration) -> Option<Value> {
    tokio::time::timeout(limit, sub.next()).await.ok()??.ok()
}

/// A notice's feed position and key.
fn position(notice: &Value) -> (u64, String) {
    (
        notice["feed_seq"].as_u64().expect("a feed position"),
        notice["key"].as_str().expect("a key").to_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notices_reach_every_node_of_25_through_crashes() {
    let _serial = SERIAL.lock().await;
    const N: usize = 25;
    let dir = tempfile::tempdir().expect("temporary directory");
    let (testnet, nodes) = start_testnet(N, dir.path()).await;
    // Every node lists every other alive, then the broadcast overlay has a moment to form.
    let start = Instant::now();
    for node in &nodes {
        loop {
            let members = call(&node.url, "swim_members", json!({})).await;
            let alive = members.ok().and_then(|m| {
                m.as_array()
                    .map(|a| a.iter().filter(|m| m["state"] == "alive").count())
            });
            if alive == Some(N - 1) {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(120),
                "{} sees {alive:?} alive",
                node.url
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let publisher = nodes[0].peer.clone();
    let mut subs = Vec::new();
    for node in &nodes {
        subs.push(subscribe(&node.url, json!({ "publisher": publisher })).await);
    }

    // One announcement at node 1: every subscription sees it.
    let sent = Instant::now();
    call(
        &nodes[0].url,
        "lockstep_announce",
        json!({"key": "b0", "value": "v"}),
    )
    .await
    .expect("announce");
    let mut slowest = Duration::ZERO;
    let mut first: Option<Value> = None;
    for (i, (_, sub)) in subs.iter_mut().enumerate() {
        let notice = next_notice(sub, Duration::from_secs(30))
            .await
            .unwrap_or_else(|| panic!("node {} got no notice", i + 1));
        slowest = slowest.max(sent.elapsed());
        assert_eq!(notice["key"], "b0");
        assert!(first.as_ref().is_none_or(|f| f["feed"] == notice["feed"]));
        first = Some(notice);
    }
    let first = first.expect("25 subscriptions");
    let feed = first["feed"].as_str().expect("a feed name").to_owned();
    let (base, _) = position(&first);
    println!("an announcement reached all {N} subscribers in {slowest:?} (announce call included)");
    assert!(slowest <= Duration::from_secs(2), "{slowest:?}");

    // Nodes 21 to 25 are killed while node 1 announces 20 more; the survivors' subscribers get
    // all of them, in order. Node 4's subscriber leaves after the 5th and resumes later after
    // the position it saw.
    let victims: Vec<u32> = nodes[N - 5..].iter().map(|n| n.pid).collect();
    let mut left = None;
    for i in 1..=20u64 {
        if i == 6 {
            for &pid in &victims {
                signal(pid, "KILL");
            }
            let (ws, mut sub) = subs.remove(3);
            let mut last = base;
            while last < base + 5 {
                let notice = next_notice(&mut sub, Duration::from_secs(10))
                    .await
                    .expect("node 4's subscriber hears the first five");
                last = position(&notice).0;
            }
            drop(sub);
            drop(ws);
            left = Some(last);
        }
        call(
            &nodes[0].url,
            "lockstep_announce",
            json!({"key": format!("b{i}"), "value": "v"}),
        )
        .await
        .expect("announce while nodes die");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let want: Vec<(u64, String)> = (1..=20u64).map(|i| (base + i, format!("b{i}"))).collect();
    // The live nodes' subscribers: nodes 1 to 3 and 5 to 20 (node 4's was taken out).
    for (i, (_, sub)) in subs.iter_mut().take(N - 6).enumerate() {
        let mut got = Vec::new();
        while got.len() < want.len() {
            match next_notice(sub, Duration::from_secs(30)).await {
                Some(n) => got.push(position(&n)),
                None => break,
            }
        }
        assert_eq!(got, want, "subscriber {i}");
    }
    let left = left.expect("node 4's subscriber left");
    let (_ws, mut resumed) = subscribe(&nodes[3].url, json!({ "after": { feed: left } })).await;
    let mut got = Vec::new();
    while got.len() < (base + 20 - left) as usize {
        match next_notice(&mut resumed, Duration::from_secs(10)).await {
            Some(n) => got.push(position(&n)),
            None => break,
        }
    }
    let missed: Vec<(u64, String)> = want.into_iter().filter(|(seq, _)| *seq > left).collect();
    assert_eq!(got, missed, "node 4's subscriber resumed after {left}");
    drop(subs);
    let status = interrupt(testnet).await;
    assert!(status.success(), "testnet exit status {status}");
}

// ----- a node that drops what it stores -----

/// The text of `url`'s `/metrics`.
async fn metrics(url: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = url.trim_start_matches("http://").trim_end_matches('/');
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let head = "GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    stream.write_all(head.as_bytes()).await.expect("write");
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response).await;
    String::from_utf8_lossy(&response).into_owned()
}

/// The value of the metric line starting with `name` (labels included).
fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(name))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// `peer`'s entry in `url`'s `trust_peers`, if it lost standing.
async fn standing_of(url: &str, peer: &str) -> Option<Value> {
    let peers = call(url, "trust_peers", json!({}))
        .await
        .expect("trust_peers");
    peers
        .as_array()
        .expect("a list")
        .iter()
        .find(|p| p["peer"] == peer)
        .cloned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_drops_its_records_is_found_out_by_its_receipts_and_banned() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().expect("temporary directory");
    let (testnet, nodes) = start_testnet(5, dir.path()).await;
    let (writer, reader, dropper) = (&nodes[0], &nodes[1], nodes[4].clone());
    // Node 5 comes back as a node that keeps and acknowledges puts but serves nothing.
    signal(dropper.pid, "KILL");
    let start = Instant::now();
    while alive(dropper.pid) {
        assert!(start.elapsed() < Duration::from_secs(10), "node 5 died");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let restarted = KillOnDrop(
        Command::new(SHOAL)
            .args(["run", "--dangerous-withhold-records", "--config"])
            .arg(&dropper.config)
            .env("SHOAL_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("shoal run starts"),
    );
    wait_serving(&dropper.url, Duration::from_secs(30)).await;
    let start = Instant::now();
    loop {
        let info = call(&dropper.url, "node_info", json!({}))
            .await
            .expect("info");
        let members = call(&writer.url, "swim_members", json!({}))
            .await
            .expect("members");
        let listed = members.as_array().expect("a list").iter().any(|m| {
            m["peer"] == dropper.peer.as_str() && m["state"] == "alive" && m["verified"] == true
        });
        if info["join"]["phase"] == "joined" && listed {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "node 5 did not rejoin: {info}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Puts through node 1 until node 5 signed receipts for five keys.
    let mut keys = Vec::new();
    let mut checked = false;
    for i in 0..100 {
        let key = format!("kept-{i}");
        let put = call(&writer.url, "dht_put", json!({"key": key, "value": "held"}))
            .await
            .expect("put");
        let receipts = put["receipts"].as_array().expect("receipts").clone();
        assert!(
            !receipts.is_empty(),
            "a put returns its quorum's receipts: {put}"
        );
        for r in &receipts {
            assert_eq!(r["seq"], put["seq"], "{put}");
        }
        if !checked {
            // Anyone can check a receipt: it verifies for its record, not for another.
            let r = &receipts[0];
            let ok = call(
                &reader.url,
                "dht_verifyReceipt",
                json!({"receipt": r["receipt"], "key": key, "value": "held", "seq": put["seq"]}),
            )
            .await
            .expect("the receipt verifies");
            assert_eq!(ok["replica"], r["replica"]);
            assert_eq!(ok["key"], key.as_str());
            let other = call(
                &reader.url,
                "dht_verifyReceipt",
                json!({"receipt": r["receipt"], "key": key, "value": "other"}),
            )
            .await;
            let text = format!("{other:?}");
            assert!(text.contains("for a value other"), "{text}");
            let mut forged = r["receipt"].as_str().expect("hex").to_owned();
            let last = if forged.ends_with('0') { "1" } else { "0" };
            forged.replace_range(forged.len() - 1.., last);
            let refused = call(&reader.url, "dht_verifyReceipt", json!({"receipt": forged})).await;
            let text = format!("{refused:?}");
            assert!(text.contains("bad signature"), "{text}");
            checked = true;
        }
        if receipts
            .iter()
            .any(|r| r["replica"] == dropper.peer.as_str())
        {
            keys.push(key);
        }
        if keys.len() == 5 {
            break;
        }
    }
    assert_eq!(keys.len(), 5, "node 5 signed for five keys");

    // Gets asking for proof still succeed through the others; each catches node 5 denying a
    // receipt it signed, until it is banned.
    for (i, key) in keys.iter().enumerate() {
        let got = call(&writer.url, "dht_get", json!({"key": key, "prove": true}))
            .await
            .expect("the others serve it");
        assert_eq!(got["value"], "held");
        let receipts = got["receipts"].as_array().expect("receipts");
        assert!(!receipts.is_empty(), "holders proved it: {got}");
        assert!(
            receipts
                .iter()
                .all(|r| r["replica"] != dropper.peer.as_str())
        );
        let entry = standing_of(&writer.url, &dropper.peer)
            .await
            .expect("it lost standing");
        if i < 4 {
            assert_eq!(entry["standing"], 100 - 20 * (i as u64 + 1), "{entry}");
            assert_eq!(entry["banned"], false, "{entry}");
        } else {
            assert_eq!(entry["banned"], true, "{entry}");
        }
        // Any node still reads it.
        let got = call(&reader.url, "dht_get", json!({"key": key}))
            .await
            .expect("get");
        assert_eq!(got["value"], "held");
    }
    let text = metrics(&writer.url).await;
    assert_eq!(
        metric(
            &text,
            "shoal_trust_misbehaviour_total{kind=\"denied_receipt\"}"
        ),
        Some(5.0),
        "{text}"
    );
    assert_eq!(metric(&text, "shoal_trust_bans "), Some(1.0), "{text}");
    // Banned: out of node 1's membership.
    let start = Instant::now();
    loop {
        let members = call(&writer.url, "swim_members", json!({}))
            .await
            .expect("members");
        let listed = members
            .as_array()
            .expect("a list")
            .iter()
            .any(|m| m["peer"] == dropper.peer.as_str());
        if !listed {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "still listed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Nobody else holds its receipts, so nobody else judged it.
    assert!(standing_of(&reader.url, &dropper.peer).await.is_none());

    let status = interrupt(testnet).await;
    assert!(status.success(), "testnet exit status {status}");
    drop(restarted);
}
