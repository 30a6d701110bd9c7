//! The `shoal` processes of one scenario, each in its own namespace, and what the harness knows
//! about them (the "truth" the observers' views are judged against).
//!
//! Identities are minted once per suite ([`mint`]) and copied into each scenario's fresh data
//! directories. Every node lists every other node as a seed, so any node can restart and rejoin
//! through whichever nodes are up. [`Cluster`] kills every process it started when dropped.

use std::fs;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jsonrpsee::core::client::ClientT;
use jsonrpsee::core::params::ObjectParams;
use jsonrpsee::http_client::{HeaderMap, HeaderValue, HttpClient, HttpClientBuilder};
use serde_json::Value;
use shoal_node::config::{Config, DhtSettings, LogConfig, Network, P2pConfig};
use shoal_node::init::{self, InitOptions};
use shoal_node::rpc::RpcConfig;

use super::net::Net;

const SHOAL: &str = env!("CARGO_BIN_EXE_shoal");
/// Port every node's p2p listens on (each node has its own address).
pub(crate) const P2P_PORT: u16 = 7000;
/// Port every node's JSON-RPC listens on.
pub(crate) const RPC_PORT: u16 = 8000;
/// The RPC bearer token (the RPC address is not loopback, so one is required).
pub(crate) const TOKEN: &str = "chaos-suite-token-0123456789";

/// A minted identity: a directory holding `node.key` and `identity.proof`.
#[derive(Debug, Clone)]
pub(crate) struct Identity {
    dir: PathBuf,
    /// The peer id, as `swim_members` prints it.
    pub(crate) peer: String,
}

impl Identity {
    /// Makes `data_dir` (mode 0700) and copies this identity's key and proof into it.
    pub(crate) fn install(&self, data_dir: &Path) {
        let mut builder = fs::DirBuilder::new();
        builder.recursive(true);
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder.create(data_dir).expect("a node data directory");
        for file in [init::KEY_FILE, init::PROOF_FILE, init::CHECKED_FILE] {
            // fs::copy keeps the key's 0600 mode.
            fs::copy(self.dir.join(file), data_dir.join(file)).expect("copying identity");
        }
    }
}

/// Mints `n` testnet identities under `root/identities`.
pub(crate) fn mint(root: &Path, n: usize) -> Vec<Identity> {
    let puzzle = Network::Testnet.preset().puzzle;
    let threads = std::thread::available_parallelism().unwrap_or(NonZeroUsize::MIN);
    (0..n)
        .map(|i| {
            let dir = root.join("identities").join(format!("node-{i}"));
            let options = InitOptions {
                data_dir: dir.clone(),
                puzzle: puzzle.clone(),
                force: false,
                reuse: true,
                threads,
            };
            let made = init::init(&options, &shoal_pow::CancelToken::new(), |_| {})
                .expect("minting a testnet identity");
            Identity {
                dir,
                peer: made.peer_id().to_string(),
            }
        })
        .collect()
}

/// What a node is doing, as the harness made it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Status {
    /// Running.
    Up,
    /// Killed, stopped, or being stopped or started.
    Down,
    /// SIGSTOPped.
    Frozen,
}

/// The harness's knowledge: each node's status, and when each node and each pair was last
/// disrupted (a status change, or a partition between them starting or ending).
#[derive(Debug)]
pub(crate) struct Truth {
    /// Each node's status.
    pub(crate) status: Vec<Status>,
    /// When each node last changed status.
    pub(crate) changed: Vec<Option<Instant>>,
    /// Whether a fault separates each pair now.
    pub(crate) separated: Vec<Vec<bool>>,
    /// When a fault last separated, or stopped separating, each pair.
    pub(crate) pair_changed: Vec<Vec<Option<Instant>>>,
}

/// The truth, shared by the harness, the workload and the observer.
pub(crate) type SharedTruth = Arc<Mutex<Truth>>;

impl Truth {
    fn new(n: usize) -> Self {
        Self {
            status: vec![Status::Down; n],
            changed: vec![None; n],
            separated: vec![vec![false; n]; n],
            pair_changed: vec![vec![None; n]; n],
        }
    }

    /// The nodes that are up.
    pub(crate) fn up(&self) -> Vec<usize> {
        (0..self.status.len())
            .filter(|&i| self.status[i] == Status::Up)
            .collect()
    }

    /// Marks every pair across `a` and `b` separated or not.
    pub(crate) fn separate(&mut self, a: &[usize], b: &[usize], separated: bool) {
        let now = Instant::now();
        for &i in a {
            for &j in b {
                for (x, y) in [(i, j), (j, i)] {
                    self.separated[x][y] = separated;
                    self.pair_changed[x][y] = Some(now);
                }
            }
        }
    }

    /// Whether `observer` declaring `peer` dead at `at` is explained by a fault: `peer` is not
    /// up, or one of them or the pair was disrupted within `window` before `at`.
    pub(crate) fn excused(
        &self,
        observer: usize,
        peer: usize,
        at: Instant,
        window: Duration,
    ) -> bool {
        let recent =
            |t: Option<Instant>| t.is_some_and(|t| at.saturating_duration_since(t) < window);
        self.status[peer] != Status::Up
            || self.separated[observer][peer]
            || recent(self.changed[peer])
            || recent(self.changed[observer])
            || recent(self.pair_changed[observer][peer])
    }
}

/// One node.
#[derive(Debug)]
struct Node {
    ns: String,
    data_dir: PathBuf,
    config: PathBuf,
    child: Option<Child>,
}

/// The processes of one scenario.
#[derive(Debug)]
pub(crate) struct Cluster {
    nodes: Vec<Node>,
    /// Each node's peer id.
    pub(crate) peers: Vec<String>,
    /// Clients with a short timeout (membership polls, readiness).
    pub(crate) fast: Arc<Vec<HttpClient>>,
    /// Clients with a long timeout (puts and gets).
    pub(crate) slow: Arc<Vec<HttpClient>>,
    /// What the harness did to each node.
    pub(crate) truth: SharedTruth,
}

/// Starts `shoal run --config <config>` in namespace `ns`, its output appended to
/// `<data_dir>/node.log`, without the test's own `SHOAL_*` variables. `ip netns exec` execs the
/// command, so the child's pid is shoal's.
pub(crate) fn spawn_in(ns: &str, config: &Path, data_dir: &Path) -> Child {
    let log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(data_dir.join("node.log"))
        .expect("the node log");
    let mut command = Command::new("ip");
    command
        .args(["netns", "exec", ns, SHOAL, "run", "--config"])
        .arg(config)
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log handle"))
        .stderr(log);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("SHOAL_") {
            command.env_remove(name);
        }
    }
    command.spawn().expect("starting shoal")
}

/// The JSON-RPC of a node at `addr`: port [`RPC_PORT`], bearer token [`TOKEN`].
pub(crate) fn rpc_at(addr: &str) -> RpcConfig {
    RpcConfig {
        listen: format!("{addr}:{RPC_PORT}").parse().expect("an address"),
        auth_token: Some(TOKEN.to_owned()),
        ..RpcConfig::default()
    }
}

/// A client with the bearer token for each node address, with `timeout`.
pub(crate) fn clients(addrs: &[String], timeout: Duration) -> Vec<HttpClient> {
    let mut headers = HeaderMap::new();
    headers.insert(
        "authorization",
        HeaderValue::from_str(&format!("Bearer {TOKEN}")).expect("a valid header value"),
    );
    addrs
        .iter()
        .map(|a| {
            HttpClientBuilder::default()
                .set_headers(headers.clone())
                .request_timeout(timeout)
                .build(format!("http://{a}:{RPC_PORT}"))
                .expect("a valid URL")
        })
        .collect()
}

/// Calls `method` with named `params` through `client`.
pub(crate) async fn call(
    client: &HttpClient,
    method: &str,
    params: Value,
) -> Result<Value, jsonrpsee::core::ClientError> {
    let mut p = ObjectParams::new();
    if let Value::Object(map) = params {
        for (k, v) in map {
            p.insert(&k, v).expect("JSON values serialize");
        }
    }
    client.request(method, p).await
}

impl Cluster {
    /// Writes a data directory and config for each node under `root` (not started yet).
    pub(crate) fn new(net: &Net, ids: &[Identity], root: &Path, quorum: usize) -> Self {
        let n = net.addrs.len();
        let seed = |j: usize| format!("/ip4/{}/tcp/{P2P_PORT}/p2p/{}", net.addrs[j], ids[j].peer);
        let mut nodes = Vec::with_capacity(n);
        for (i, id) in ids.iter().enumerate().take(n) {
            let data_dir = root.join(format!("node-{i}"));
            id.install(&data_dir);
            let config = Config {
                network: Network::Testnet,
                data_dir: data_dir.clone(),
                threads: 0,
                p2p: P2pConfig {
                    listen: vec![format!("/ip4/{}/tcp/{P2P_PORT}", net.addrs[i])],
                    seeds: (0..n).filter(|&j| j != i).map(seed).collect(),
                    ..P2pConfig::default()
                },
                relay: Default::default(),
                dht: DhtSettings {
                    put_quorum: NonZeroUsize::new(quorum),
                    ..DhtSettings::default()
                },
                tor: Default::default(),
                trust: Default::default(),
                rpc: rpc_at(&net.addrs[i]),
                log: LogConfig {
                    level: "info".to_owned(),
                    ..LogConfig::default()
                },
            };
            config.validate().expect("a valid node config");
            let path = init::write_config(&data_dir, &config, true)
                .expect("writing the config")
                .expect("overwritten");
            nodes.push(Node {
                ns: net.node_ns[i].clone(),
                data_dir,
                config: path,
                child: None,
            });
        }
        Self {
            nodes,
            peers: ids.iter().map(|id| id.peer.clone()).collect(),
            fast: Arc::new(clients(&net.addrs, Duration::from_secs(2))),
            slow: Arc::new(clients(&net.addrs, Duration::from_secs(30))),
            truth: Arc::new(Mutex::new(Truth::new(n))),
        }
    }

    /// Number of nodes.
    pub(crate) fn len(&self) -> usize {
        self.nodes.len()
    }

    fn set(&self, i: usize, status: Status) {
        let mut truth = self.truth.lock().expect("truth lock");
        truth.status[i] = status;
        truth.changed[i] = Some(Instant::now());
    }

    /// Starts node `i` and waits until its JSON-RPC answers.
    pub(crate) async fn start(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        node.child = Some(spawn_in(&node.ns, &node.config, &node.data_dir));
        let start = Instant::now();
        loop {
            if call(&self.fast[i], "node_info", Value::Null).await.is_ok() {
                break;
            }
            if let Some(status) = self.nodes[i]
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "node {i} exited at startup ({status}); see {}",
                    self.log(i).display()
                );
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "node {i} did not answer within 60 s; see {}",
                self.log(i).display()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.set(i, Status::Up);
    }

    /// Node `i`'s log file.
    pub(crate) fn log(&self, i: usize) -> PathBuf {
        self.nodes[i].data_dir.join("node.log")
    }

    fn pid(&self, i: usize) -> i32 {
        let child = self.nodes[i].child.as_ref().expect("node is running");
        i32::try_from(child.id()).expect("a pid fits i32")
    }

    fn signal(&self, i: usize, signal: i32) {
        // SAFETY: kill(2) has no memory-safety preconditions; the pid is our unreaped child.
        let rc = unsafe { libc::kill(self.pid(i), signal) };
        assert_eq!(rc, 0, "kill({}, {signal})", self.pid(i));
    }

    /// `kill -9` node `i` and reaps it.
    pub(crate) fn kill9(&mut self, i: usize) {
        self.set(i, Status::Down);
        self.signal(i, libc::SIGKILL);
        let mut child = self.nodes[i].child.take().expect("node is running");
        child.wait().expect("reaping a killed node");
    }

    /// Stops node `i` gracefully (SIGTERM; SIGKILL after 20 s) and reaps it.
    pub(crate) async fn stop(&mut self, i: usize) {
        self.set(i, Status::Down);
        self.signal(i, libc::SIGTERM);
        let mut child = self.nodes[i].child.take().expect("node is running");
        let start = Instant::now();
        while child.try_wait().expect("waiting for a node").is_none() {
            if start.elapsed() > Duration::from_secs(20) {
                eprintln!("chaos: node {i} ignored SIGTERM for 20 s; killing it");
                let _ = child.kill();
                let _ = child.wait();
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGSTOPs node `i`.
    pub(crate) fn freeze(&mut self, i: usize) {
        self.set(i, Status::Frozen);
        self.signal(i, libc::SIGSTOP);
    }

    /// SIGCONTs node `i`.
    pub(crate) fn thaw(&mut self, i: usize) {
        self.signal(i, libc::SIGCONT);
        self.set(i, Status::Up);
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                // SIGKILL also ends a stopped process.
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}
