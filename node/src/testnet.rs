//! `shoal testnet`: a ready local testnet of `shoal run` processes on loopback.
//!
//! Each node gets its own data directory `DIR/node-i` with its key, identity proof (minted once,
//! at the testnet difficulty), `shoal.toml` and log (`node.log`). Node 1 has no seeds; the others
//! join through it. The launcher waits until every node's JSON-RPC answers and every node sees
//! all the others alive in SWIM with their identity proofs checked (so the DHT uses them: a put
//! made at once finds its replicas), prints one line per node and a ready line, and on SIGINT or
//! SIGTERM stops every node (SIGTERM, then SIGKILL after a bound) and exits.
//!
//! A node can be restarted by hand with `shoal run --config DIR/node-i/shoal.toml` (same ports,
//! same data) when the testnet was started with `--dir` or `--keep`.
//!
//! With `--transport tor` the launcher first starts a private Tor network on loopback
//! (`DIR/tor-network`, as `shoal tor-testnet` does), and the nodes are Tor-only: each listens
//! only on its onion service, and the others join node 1 through its onion address. With
//! `--transport both` the nodes listen on TCP as well (and still join through the onion
//! address). The private network stops with the nodes.

use std::fs;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use libp2p::PeerId;
use serde_json::Value;
use shoal_dht::NodeKeyExt;
use shoal_pow::CancelToken;
use tokio::process::{Child, Command};

use crate::client::{ClientError, RpcClient};
use crate::config::{Config, ConfigError, DhtSettings, LogConfig, Network, P2pConfig, Transport};
use crate::init::{self, InitError, InitOptions};
use crate::rpc::RpcConfig;
use crate::run::{RunError, Signals};
use crate::tor::TorConfig;
use crate::tor_testnet::{self, TorTestnetError};

/// Most nodes in a testnet.
pub const MAX_NODES: u8 = 64;
/// How long stopping nodes may take before they are killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(20);
/// Lines of a node's log shown when it fails.
const LOG_TAIL_LINES: usize = 20;
/// Bytes read from the end of a log for its tail.
const LOG_TAIL_BYTES: u64 = 16 << 10;

/// Why the testnet could not start. Nodes already started were stopped.
#[derive(Debug, thiserror::Error)]
pub enum TestnetError {
    /// The node count is outside 1 to [`MAX_NODES`].
    #[error("--nodes must be 1 to {MAX_NODES}")]
    NodeCount,
    /// A directory or file could not be created or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// Free ports could not be found, or `--base-port` leaves too few.
    #[error("ports: {0}")]
    Ports(String),
    /// A node's key or proof could not be made.
    #[error("node {index}: {source}")]
    Init {
        /// The node (from 1).
        index: usize,
        /// Why.
        source: InitError,
    },
    /// A node's configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A node process could not be started.
    #[error("starting node {index}: {source}")]
    Spawn {
        /// The node (from 1).
        index: usize,
        /// Why.
        source: io::Error,
    },
    /// A node exited while the testnet was starting.
    #[error("node {index} exited during startup ({status}); last lines of {}:\n{tail}", log.display())]
    NodeDied {
        /// The node (from 1).
        index: usize,
        /// Its exit status.
        status: ExitStatus,
        /// Its log file.
        log: PathBuf,
        /// The end of its log.
        tail: String,
    },
    /// A node was not ready in time.
    #[error("node {index} not ready within {timeout:?}: {what}; last lines of {}:\n{tail}", log.display())]
    NotReady {
        /// The node (from 1).
        index: usize,
        /// What it lacked.
        what: String,
        /// The bound.
        timeout: Duration,
        /// Its log file.
        log: PathBuf,
        /// The end of its log.
        tail: String,
    },
    /// A node's RPC URL is unusable (a bug).
    #[error("RPC client: {0}")]
    Client(#[from] ClientError),
    /// Signal handlers could not be installed.
    #[error(transparent)]
    Signal(#[from] RunError),
    /// Interrupted before the testnet was ready; nodes were stopped.
    #[error("interrupted during startup")]
    Interrupted,
    /// The private Tor network of `--transport tor` or `both` did not start.
    #[error(transparent)]
    Tor(#[from] TorTestnetError),
}

/// How to run the testnet.
#[derive(Debug, Clone)]
pub struct TestnetOptions {
    /// Number of nodes, 1 to [`MAX_NODES`].
    pub nodes: u8,
    /// The directory holding the nodes' data directories; `None` makes a temporary one.
    pub dir: Option<PathBuf>,
    /// First port (node i: p2p `P + 2(i-1)`, RPC `P + 2(i-1) + 1`); `None` picks free ports.
    pub base_port: Option<u16>,
    /// Keep a temporary directory at exit.
    pub keep: bool,
    /// Bound of the wait for every node to be ready.
    pub ready_timeout: Duration,
    /// The `shoal` executable run for each node.
    pub exe: PathBuf,
    /// How the nodes reach each other: TCP on loopback, or onion services of a private Tor
    /// network the launcher starts (Tor only, or both).
    pub transport: Transport,
}

/// One node of the testnet.
#[derive(Debug)]
struct TestNode {
    index: usize,
    peer: PeerId,
    config_path: PathBuf,
    log_path: PathBuf,
    p2p_port: u16,
    rpc_url: String,
    /// Its onion address with `/p2p`, when the testnet runs over Tor.
    onion: Option<String>,
    child: Option<Child>,
}

impl TestNode {
    fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    fn tail(&self) -> String {
        log_tail(&self.log_path)
    }

    /// The exit status if the process has exited.
    fn exited(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }
}

/// Runs the testnet until SIGINT or SIGTERM; prints one line per node and a ready line on
/// stdout, progress and problems on stderr.
pub async fn run(options: TestnetOptions) -> Result<(), TestnetError> {
    if options.nodes == 0 || options.nodes > MAX_NODES {
        return Err(TestnetError::NodeCount);
    }
    let mut signals = Signals::new()?;
    let started = Instant::now();
    let (root, temporary) = match &options.dir {
        Some(dir) => (dir.clone(), false),
        None => (temp_root(), true),
    };
    fs::create_dir_all(&root).map_err(|source| TestnetError::Io {
        path: root.clone(),
        source,
    })?;
    let root = fs::canonicalize(&root).map_err(|source| TestnetError::Io {
        path: root.clone(),
        source,
    })?;
    let result = run_in(&options, &root, &mut signals, started).await;
    if temporary && !options.keep {
        if let Err(e) = fs::remove_dir_all(&root) {
            eprintln!("cannot remove {}: {e}", root.display());
        }
    } else {
        eprintln!("testnet data kept in {}", root.display());
    }
    result
}

async fn run_in(
    options: &TestnetOptions,
    root: &Path,
    signals: &mut Signals,
    started: Instant,
) -> Result<(), TestnetError> {
    let n = usize::from(options.nodes);
    let ports = ports(n, options.base_port)?;
    eprintln!(
        "minting {n} identities (testnet difficulty) in {}",
        root.display()
    );
    let dirs: Vec<PathBuf> = (1..=n).map(|i| root.join(format!("node-{i}"))).collect();
    let minted = mint_all(dirs.clone()).await?;
    eprintln!(
        "identities ready after {:.1} s; starting {n} nodes",
        started.elapsed().as_secs_f64()
    );

    let mut tor = None;
    if options.transport != Transport::Tcp {
        let dir = root.join("tor-network");
        eprintln!(
            "starting a private Tor network in {} (15-60 s)",
            dir.display()
        );
        let (network, _) = tor_testnet::start(&dir).await?;
        eprintln!(
            "private Tor network ready after {:.1} s",
            started.elapsed().as_secs_f64()
        );
        tor = Some(network);
    }
    let tor_config = tor
        .as_ref()
        .map(|network| TorConfig::for_private_network(&network.private_network()));
    let onions: Vec<Option<String>> = minted
        .iter()
        .map(|m| {
            let port = tor_config.as_ref()?.onion_port;
            shoal_tor::onion_address_of(&m.key.to_libp2p().public(), port)
                .map(|onion| format!("{onion}/p2p/{}", m.peer_id()))
        })
        .collect();
    let first_seed = match &onions[0] {
        Some(onion) => onion.clone(),
        None => format!(
            "/ip4/127.0.0.1/tcp/{}/p2p/{}",
            ports[0].0,
            minted[0].peer_id()
        ),
    };
    let mut nodes = Vec::with_capacity(n);
    let threads = threads_per_node(n);
    for (i, (dir, ((p2p, rpc), minted))) in dirs.iter().zip(ports.iter().zip(&minted)).enumerate() {
        let config = Config {
            network: Network::Testnet,
            data_dir: dir.clone(),
            threads,
            p2p: P2pConfig {
                listen: if options.transport == Transport::Tor {
                    Vec::new()
                } else {
                    vec![format!("/ip4/127.0.0.1/tcp/{p2p}")]
                },
                seeds: if i == 0 {
                    Vec::new()
                } else {
                    vec![first_seed.clone()]
                },
                transport: options.transport,
                ..P2pConfig::default()
            },
            relay: Default::default(),
            tor: tor_config.clone().unwrap_or_default(),
            trust: Default::default(),
            dht: DhtSettings {
                put_quorum: testnet_quorum(n),
                ..DhtSettings::default()
            },
            rpc: RpcConfig {
                listen: SocketAddr::from((Ipv4Addr::LOCALHOST, *rpc)),
                ..RpcConfig::default()
            },
            log: LogConfig::default(),
        };
        config.validate()?;
        let config_path = init::write_config(dir, &config, true)
            .map_err(|source| TestnetError::Init {
                index: i + 1,
                source,
            })?
            .unwrap_or_else(|| dir.join(init::CONFIG_FILE));
        nodes.push(TestNode {
            index: i + 1,
            peer: minted.peer_id(),
            log_path: dir.join("node.log"),
            config_path,
            p2p_port: *p2p,
            rpc_url: format!("http://127.0.0.1:{rpc}"),
            onion: onions[i].clone(),
            child: None,
        });
    }

    let deadline = Instant::now() + options.ready_timeout;
    let result = start_all(options, &mut nodes, signals, deadline).await;
    if let Err(e) = result {
        stop_all(&mut nodes).await;
        stop_tor(tor);
        return Err(e);
    }

    let mut out = io::stdout().lock();
    for node in &nodes {
        // A closed stdout must not stop the testnet; the lines are also in the logs.
        let onion = node
            .onion
            .as_deref()
            .map(|o| format!("  onion {o}"))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "node {}  {}  peer {}  pid {}  config {}  dashboard {}/{onion}",
            node.index,
            node.rpc_url,
            node.peer,
            node.pid().unwrap_or(0),
            node.config_path.display(),
            node.rpc_url,
        );
    }
    let _ = writeln!(out, "testnet ready: {n} nodes (Ctrl-C to stop)");
    let _ = out.flush();
    drop(out);
    let reached = match options.transport {
        Transport::Tcp => format!("p2p ports {}..", nodes[0].p2p_port),
        Transport::Tor => "onion services only".to_owned(),
        Transport::Both => format!("onion services and p2p ports {}..", nodes[0].p2p_port),
    };
    eprintln!(
        "started in {:.1} s; {reached}; logs in {}/node-*/node.log",
        started.elapsed().as_secs_f64(),
        root.display()
    );

    watch(&mut nodes, signals).await;
    stop_all(&mut nodes).await;
    stop_tor(tor);
    Ok(())
}

/// Stops the private Tor network, if one runs, after the nodes.
fn stop_tor(tor: Option<shoal_tor::testnet::TestNetwork>) {
    if let Some(mut network) = tor {
        network.stop();
        eprintln!("private Tor network stopped");
    }
}

/// Starts node 1, waits for its RPC, starts the others, and waits for all to see each other.
async fn start_all(
    options: &TestnetOptions,
    nodes: &mut [TestNode],
    signals: &mut Signals,
    deadline: Instant,
) -> Result<(), TestnetError> {
    let (first, rest) = nodes.split_at_mut(1);
    spawn(options, &mut first[0])?;
    wait_until(first, signals, deadline, options.ready_timeout, Ready::Rpc).await?;
    for node in rest.iter_mut() {
        spawn(options, node)?;
    }
    wait_until(nodes, signals, deadline, options.ready_timeout, Ready::Rpc).await?;
    wait_until(
        nodes,
        signals,
        deadline,
        options.ready_timeout,
        Ready::Members,
    )
    .await
}

fn spawn(options: &TestnetOptions, node: &mut TestNode) -> Result<(), TestnetError> {
    let spawn_err = |source| TestnetError::Spawn {
        index: node.index,
        source,
    };
    let log = fs::File::create(&node.log_path).map_err(spawn_err)?;
    let log2 = log.try_clone().map_err(spawn_err)?;
    let mut command = Command::new(&options.exe);
    command
        .arg("run")
        .arg("--config")
        .arg(&node.config_path)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2)
        // A safety net should the launcher return without stopping its nodes.
        .kill_on_drop(true);
    // Should the launcher die without stopping its nodes (SIGKILL), they get SIGTERM.
    #[cfg(target_os = "linux")]
    // SAFETY: between fork and exec the closure only calls prctl(2), which is async-signal-safe
    // and touches no memory of the parent.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) == -1 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    // The nodes' settings come from their config files only.
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("SHOAL_") {
            command.env_remove(name);
        }
    }
    node.child = Some(command.spawn().map_err(spawn_err)?);
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ready {
    /// `node_info` answers.
    Rpc,
    /// SWIM holds every other node alive.
    Members,
}

async fn wait_until(
    nodes: &mut [TestNode],
    signals: &mut Signals,
    mut deadline: Instant,
    timeout: Duration,
    what: Ready,
) -> Result<(), TestnetError> {
    let clients = nodes
        .iter()
        .map(|n| RpcClient::new(&n.rpc_url, None, Duration::from_secs(5)))
        .collect::<Result<Vec<_>, _>>()?;
    let others = nodes.len().saturating_sub(1);
    let total = nodes.len();
    let mut ready = vec![false; total];
    let mut last = vec![String::from("no answer yet"); total];
    // Members listed and checked, summed over the nodes: the checks of n nodes started together
    // cost n·(n−1) scrypt evaluations at the lowest priority (far longer than any fixed wait
    // for a large n on a small machine), so the wait for members goes on while they advance,
    // and ends `timeout` after the last advance.
    let mut listed = vec![0usize; total];
    let mut best = 0usize;
    loop {
        for (i, node) in nodes.iter_mut().enumerate() {
            if ready[i] {
                continue;
            }
            if let Some(status) = node.exited() {
                return Err(TestnetError::NodeDied {
                    index: node.index,
                    status,
                    log: node.log_path.clone(),
                    tail: node.tail(),
                });
            }
            let method = match what {
                Ready::Rpc => "node_info",
                Ready::Members => "swim_members",
            };
            match clients[i].call(method, None).await {
                Ok(v) => match what {
                    Ready::Rpc => ready[i] = true,
                    Ready::Members => {
                        let alive = alive_members(&v);
                        listed[i] = alive;
                        if alive >= others {
                            ready[i] = true;
                        } else {
                            last[i] = format!(
                                "{alive} of {others} other nodes alive in SWIM and checked"
                            );
                        }
                    }
                },
                Err(e) => last[i] = e.to_string(),
            }
        }
        if ready.iter().all(|r| *r) {
            return Ok(());
        }
        deadline = extended(
            deadline,
            &mut best,
            listed.iter().sum(),
            Instant::now(),
            timeout,
        );
        if Instant::now() >= deadline {
            let i = ready.iter().position(|r| !r).unwrap_or(0);
            return Err(TestnetError::NotReady {
                index: nodes[i].index,
                what: last[i].clone(),
                timeout,
                log: nodes[i].log_path.clone(),
                tail: nodes[i].tail(),
            });
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            _ = signals.recv() => return Err(TestnetError::Interrupted),
        }
    }
}

/// The wait's deadline once `sum` members are listed and checked over all nodes: `timeout`
/// from now if that is more than the most seen so far (`best`, updated), else unchanged.
fn extended(
    deadline: Instant,
    best: &mut usize,
    sum: usize,
    now: Instant,
    timeout: Duration,
) -> Instant {
    if sum > *best {
        *best = sum;
        return deadline.max(now + timeout);
    }
    deadline
}

/// Members of a `swim_members` result that are alive and whose identity proofs this node has
/// checked (the node itself is not listed). A member listed before its check is not used by the
/// DHT yet: a testnet called ready with one would fail a put for want of replicas.
fn alive_members(v: &Value) -> usize {
    v.as_array().map_or(0, |members| {
        members
            .iter()
            .filter(|m| {
                m.get("state").and_then(Value::as_str) == Some("alive")
                    && m.get("verified").and_then(Value::as_bool) == Some(true)
            })
            .count()
    })
}

/// Waits for a signal, reporting nodes that exit meanwhile.
async fn watch(nodes: &mut [TestNode], signals: &mut Signals) {
    let mut reported = vec![false; nodes.len()];
    loop {
        tokio::select! {
            name = signals.recv() => {
                eprintln!("{name}: stopping {} nodes", nodes.len());
                return;
            }
            _ = tokio::time::sleep(Duration::from_millis(500)) => {
                for (i, node) in nodes.iter_mut().enumerate() {
                    if !reported[i] && let Some(status) = node.exited() {
                        reported[i] = true;
                        eprintln!(
                            "node {} exited ({status}); last lines of {}:\n{}",
                            node.index,
                            node.log_path.display(),
                            node.tail()
                        );
                    }
                }
            }
        }
    }
}

/// Sends SIGTERM to every running node, waits for them (bounded), then kills the rest.
async fn stop_all(nodes: &mut [TestNode]) {
    for node in nodes.iter() {
        if let Some(pid) = node.pid() {
            terminate(pid);
        }
    }
    let deadline = tokio::time::Instant::now() + STOP_TIMEOUT;
    for node in nodes.iter_mut() {
        let Some(child) = node.child.as_mut() else {
            continue;
        };
        match tokio::time::timeout_at(deadline, child.wait()).await {
            Ok(Ok(status)) if !status.success() => {
                eprintln!("node {} exited with {status}", node.index);
            }
            Ok(_) => {}
            Err(_) => {
                eprintln!("node {} did not stop in time; killing it", node.index);
                // Already exited between the check and the kill is fine.
                let _ = child.kill().await;
            }
        }
    }
}

/// Asks process `pid` to stop with SIGTERM.
fn terminate(pid: u32) {
    #[cfg(unix)]
    {
        let Ok(pid) = libc::pid_t::try_from(pid) else {
            return;
        };
        // SAFETY: kill(2) has no memory-safety preconditions; pid is our own child's id, which
        // cannot be reused while the child is not reaped.
        let _ = unsafe { libc::kill(pid, libc::SIGTERM) };
    }
    #[cfg(not(unix))]
    let _ = pid;
}

/// Mints every node's key and proof (reusing valid ones), a few at a time on one thread each.
async fn mint_all(dirs: Vec<PathBuf>) -> Result<Vec<init::Initialized>, TestnetError> {
    tokio::task::spawn_blocking(move || {
        let puzzle = Network::Testnet.preset().puzzle;
        let workers = std::thread::available_parallelism()
            .map_or(1, NonZeroUsize::get)
            .min(dirs.len());
        let next = AtomicUsize::new(0);
        let results: Mutex<Vec<Option<Result<init::Initialized, InitError>>>> =
            Mutex::new((0..dirs.len()).map(|_| None).collect());
        let cancel = CancelToken::new();
        std::thread::scope(|scope| {
            for _ in 0..workers {
                scope.spawn(|| {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(dir) = dirs.get(i) else { return };
                        let options = InitOptions {
                            data_dir: dir.clone(),
                            puzzle: puzzle.clone(),
                            force: false,
                            reuse: true,
                            threads: NonZeroUsize::MIN,
                        };
                        let result = init::init(&options, &cancel, |_| {});
                        if result.is_err() {
                            cancel.cancel();
                        }
                        let mut results = results.lock().unwrap_or_else(|e| e.into_inner());
                        results[i] = Some(result);
                    }
                });
            }
        });
        let results = results.into_inner().unwrap_or_else(|e| e.into_inner());
        results
            .into_iter()
            .enumerate()
            .map(|(i, r)| {
                r.unwrap_or(Err(InitError::Cancelled(shoal_pow::MintError::Cancelled {
                    attempts: 0,
                })))
                .map_err(|source| TestnetError::Init {
                    index: i + 1,
                    source,
                })
            })
            .collect()
    })
    .await
    .map_err(|e| TestnetError::Io {
        path: PathBuf::from("(minting)"),
        source: io::Error::other(e.to_string()),
    })?
}

/// `(p2p, rpc)` ports for `n` nodes: from `base`, or free ports chosen by the system.
fn ports(n: usize, base: Option<u16>) -> Result<Vec<(u16, u16)>, TestnetError> {
    if let Some(base) = base {
        let last = u32::from(base) + 2 * n as u32 - 1;
        if base == 0 || last > u32::from(u16::MAX) {
            return Err(TestnetError::Ports(format!(
                "--base-port {base} leaves too few ports for {n} nodes"
            )));
        }
        return Ok((0..n as u16)
            .map(|i| (base + 2 * i, base + 2 * i + 1))
            .collect());
    }
    // Hold every listener until all ports are chosen, so none is handed out twice.
    let listeners = (0..2 * n)
        .map(|_| TcpListener::bind((Ipv4Addr::LOCALHOST, 0)))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TestnetError::Ports(e.to_string()))?;
    let ports = listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TestnetError::Ports(e.to_string()))?;
    Ok(ports.chunks(2).map(|c| (c[0], c[1])).collect())
}

fn temp_root() -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    std::env::temp_dir().join(format!("shoal-testnet-{}-{nanos}", std::process::id()))
}

/// The last lines of a log file (bounded read).
fn log_tail(path: &Path) -> String {
    let read = || -> io::Result<String> {
        let mut file = fs::File::open(path)?;
        let len = file.metadata()?.len();
        file.seek(SeekFrom::Start(len.saturating_sub(LOG_TAIL_BYTES)))?;
        let mut bytes = Vec::new();
        file.take(LOG_TAIL_BYTES).read_to_end(&mut bytes)?;
        let text = String::from_utf8_lossy(&bytes);
        let lines: Vec<&str> = text.lines().collect();
        let start = lines.len().saturating_sub(LOG_TAIL_LINES);
        Ok(lines[start..].join("\n"))
    };
    read().unwrap_or_else(|e| format!("(cannot read the log: {e})"))
}

/// The put quorum of an `n`-node testnet: the preset's 3, or every other node when there are
/// fewer than 4 (a put can only be acknowledged by the others); `None` keeps the preset.
fn testnet_quorum(n: usize) -> Option<NonZeroUsize> {
    (n < 4).then(|| NonZeroUsize::new(n.saturating_sub(1)).unwrap_or(NonZeroUsize::MIN))
}

/// Runtime worker threads for each node of an `n`-node testnet: the cores divided among the
/// nodes, at least one. Every worker a node does not need is woken now and then to look for
/// work, and with many nodes on a few cores those wake-ups cost more than the work.
fn threads_per_node(n: usize) -> usize {
    let cores = std::thread::available_parallelism().map_or(1, NonZeroUsize::get);
    (cores / n.max(1)).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wait_for_members_goes_on_while_checks_advance() {
        let t0 = Instant::now();
        let timeout = Duration::from_secs(60);
        let mut best = 0;
        let first = t0 + timeout;
        // Progress 50 s in: the deadline moves to 60 s after it.
        let later = t0 + Duration::from_secs(50);
        assert_eq!(
            extended(first, &mut best, 10, later, timeout),
            later + timeout
        );
        assert_eq!(best, 10);
        // No progress: unchanged, whenever asked.
        let now = t0 + Duration::from_secs(100);
        assert_eq!(
            extended(later + timeout, &mut best, 10, now, timeout),
            later + timeout
        );
        // Progress never brings the deadline closer.
        assert_eq!(extended(first, &mut best, 11, t0, timeout), first);
        assert_eq!(best, 11);
    }

    #[test]
    fn testnet_nodes_share_the_cores() {
        let cores = std::thread::available_parallelism().map_or(1, NonZeroUsize::get);
        assert_eq!(threads_per_node(1), cores);
        assert_eq!(threads_per_node(cores * 2), 1);
        assert_eq!(threads_per_node(0), cores);
    }

    #[test]
    fn small_testnets_lower_the_quorum() {
        assert_eq!(testnet_quorum(1).map(NonZeroUsize::get), Some(1));
        assert_eq!(testnet_quorum(2).map(NonZeroUsize::get), Some(1));
        assert_eq!(testnet_quorum(3).map(NonZeroUsize::get), Some(2));
        assert_eq!(testnet_quorum(4), None);
    }

    #[test]
    fn base_ports_are_consecutive_and_bounded() {
        assert_eq!(
            ports(2, Some(9000)).unwrap(),
            vec![(9000, 9001), (9002, 9003)]
        );
        assert!(ports(3, Some(65_532)).is_err());
        let free = ports(3, None).unwrap();
        let mut all: Vec<u16> = free.iter().flat_map(|(a, b)| [*a, *b]).collect();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), 6);
    }

    #[test]
    fn alive_members_counts_alive_and_checked_only() {
        let v = serde_json::json!([
            {"peer": "a", "state": "alive", "verified": true},
            {"peer": "b", "state": "suspect", "verified": true},
            {"peer": "c", "state": "alive", "verified": true},
            {"peer": "d", "state": "alive", "verified": false},
            {"peer": "e", "state": "alive"},
        ]);
        assert_eq!(alive_members(&v), 2);
        assert_eq!(alive_members(&serde_json::json!({})), 0);
    }
}
