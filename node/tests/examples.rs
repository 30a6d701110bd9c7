//! The examples of `examples/` against a real testnet: `shoal testnet --nodes 3` on loopback,
//! then the Rust `client` (two nodes, WebSocket subscription), the Rust `embed` (joining node 1
//! as its seed, and on its own), the Python script and the JavaScript one. Each must exit 0 and
//! print what it read back. The Python and JavaScript parts are skipped, with a message, when
//! `python3` or `node` is not installed (`.ci/install-deps` installs both).
//!
//! The Rust examples are built by the cargo running this test, with the flags of the README's
//! test command (`--workspace --all-features`): under `scripts/test` they are already built and
//! the build is a no-op; under `cargo test -p shoal-node --test examples` it builds them (once).

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use jsonrpsee::core::client::ClientT;
use jsonrpsee::core::params::ObjectParams;
use jsonrpsee::http_client::HttpClientBuilder;
use serde_json::{Value, json};

const SHOAL: &str = env!("CARGO_BIN_EXE_shoal");

/// Bound of one example's run (the Rust examples mint identities; CI machines are slow).
const EXAMPLE_TIMEOUT: Duration = Duration::from_secs(300);

/// One node line of the testnet's output.
#[derive(Debug, Clone)]
struct Node {
    url: String,
    peer: String,
}

/// Reads a node line: the `http://` URL and the word after `peer`.
fn parse_node(line: &str) -> Option<Node> {
    let words: Vec<&str> = line.split_whitespace().collect();
    let url = words.iter().find(|w| w.starts_with("http://"))?.to_string();
    let peer = words
        .iter()
        .position(|w| *w == "peer")
        .and_then(|i| words.get(i + 1))?
        .to_string();
    Some(Node { url, peer })
}

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

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
        .args([
            "build",
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

/// Calls `method` on the node at `url` with by-name `params`.
async fn rpc(url: &str, method: &str, params: Value) -> Value {
    let mut p = ObjectParams::new();
    if let Value::Object(map) = params {
        for (k, v) in map {
            p.insert(&k, v).expect("JSON values serialize");
        }
    }
    HttpClientBuilder::default()
        .request_timeout(Duration::from_secs(30))
        .build(url)
        .expect("valid URL")
        .request(method, p)
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
    let (client, embed) = tokio::task::spawn_blocking(build_examples)
        .await
        .expect("builder");

    let dir = tempfile::tempdir().expect("temporary directory");
    let mut testnet = KillOnDrop(
        Command::new(SHOAL)
            .args(["testnet", "--nodes", "3", "--dir"])
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
    assert_eq!(nodes.len(), 3, "three node lines: {lines:#?}");

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
    let status = Command::new("kill")
        .args(["-INT", &testnet.0.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill -INT the testnet");
    let status = tokio::task::spawn_blocking(move || {
        let status = testnet.0.wait().expect("wait for the testnet");
        drop(testnet);
        status
    })
    .await
    .expect("waiter");
    assert!(status.success(), "testnet exit status {status}");
}
