//! `shoal run`: start a node and its JSON-RPC endpoint, and shut both down cleanly.
//!
//! [`Node::start`] loads the key and checks the identity proof against the network's puzzle,
//! builds the DHT event loop over TCP, listens, joins through the seeds in the background
//! (retrying with backoff while no seed can be verified), starts the JSON-RPC server and writes
//! its URL to `<data dir>/rpc.url`. [`Node::stop`] stops the server, shuts the DHT down (SWIM
//! leave, storage flushed) and removes `rpc.url`. [`run`] does both around a wait for SIGINT or
//! SIGTERM.

use std::io::{self, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use libp2p::{Multiaddr, PeerId};
use shoal_dht::node::{
    ListenError, NodeTransport, StartError, tcp_transport, tcp_transport_with_relay,
};
use shoal_dht::{Client, EventLoop, NodeKeyExt};
use shoal_pow::{KeyError, NodeKey, Puzzle};
use tokio::task::JoinHandle;
use tracing_subscriber::EnvFilter;

use crate::config::{Config, ConfigError, LogConfig, LogFormat, Transport};
use crate::init::{self, KEY_FILE, PROOF_FILE, ProofFileError};
use crate::join::{self, JoinStatus};
use crate::rpc::{self, RpcServer, RpcStartError};

/// The file in the data directory holding the bound JSON-RPC URL while the node runs.
pub const RPC_URL_FILE: &str = "rpc.url";

/// Longest wait for the DHT event loop to finish after shutdown.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(15);

/// Makes the allocator hand large freed blocks back to the OS at once. Call it before a node
/// starts, in its process (`shoal run` does; `shoal init` and `shoal testnet`, which mint, do
/// not).
///
/// Every identity check runs scrypt, whose working set is 16 MiB (128 · r · N bytes at
/// N = 2^14, r = 8). glibc serves the first such block by `mmap` and returns it on free, but
/// then raises its mmap threshold, so later blocks come from the per-thread heaps and stay
/// resident once freed: after joining, an idle node held several times the memory it used,
/// and `malloc_trim` every few seconds gave back only part of it. A fixed threshold keeps the
/// footprint small at the price of fresh pages for every check (a slower scrypt evaluation),
/// which a running node pays once per member and minting would pay on every try; the figures
/// are in docs/benchmarks.md, "Idle footprint".
///
/// It also keeps one heap (`M_ARENA_MAX` 1) where glibc gives each thread that meets a busy
/// heap one of its own (the runtime's workers and blocking threads), each keeping what a burst
/// freed in it; small blocks still come from each thread's cache without a lock. That lowered a
/// node's own memory and the seed's peak at n = 50 (docs/benchmarks.md, membership). Elsewhere
/// than glibc this does nothing.
pub fn limit_retained_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        set_malloc_parameter(libc::M_MMAP_THRESHOLD, 4 << 20, "M_MMAP_THRESHOLD");
        set_malloc_parameter(libc::M_ARENA_MAX, 1, "M_ARENA_MAX");
    }
}

/// Sets glibc's allocator parameter `param` (named `name` in the log if refused) to `value`.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn set_malloc_parameter(param: libc::c_int, value: libc::c_int, name: &str) {
    // SAFETY: mallopt only sets an allocator parameter.
    if unsafe { libc::mallopt(param, value) } != 1 {
        tracing::debug!("mallopt({name}) refused");
    }
}

/// How often a running node hands the allocator's free pages back to the OS.
const TRIM_EVERY: Duration = Duration::from_secs(30);

/// Every [`TRIM_EVERY`], gives the pages the allocator holds free back to the OS
/// (`malloc_trim`), until dropped. A node's memory comes in bursts (a cluster starting: dozens
/// of handshakes, joins and their answers at once, most of a seed's) and glibc keeps what they
/// freed, scattered among live blocks, for good: a seed of 50 held about 1.9 MiB free in its
/// heaps after the start, of which a trim gave back 0.75 MiB (docs/benchmarks.md). A trim of
/// a node's few MiB takes well under a millisecond. Elsewhere than glibc it does nothing.
fn trim_freed_memory() -> Option<JoinHandle<()>> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        Some(tokio::spawn(async {
            let mut every = tokio::time::interval(TRIM_EVERY);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                // SAFETY: malloc_trim only walks the allocator's own free lists.
                unsafe { libc::malloc_trim(0) };
            }
        }))
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        None
    }
}

/// Why the node could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The configuration is unusable; nothing was started.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The data directory holds no node key; nothing was started.
    #[error(
        "no node key at {}: run `shoal init --data-dir {} --network {network}` first",
        key.display(), data_dir.display()
    )]
    NotInitialized {
        /// The key file looked for.
        key: PathBuf,
        /// The data directory.
        data_dir: PathBuf,
        /// The network.
        network: String,
    },
    /// The key file is unusable; nothing was started.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// The identity proof is missing, malformed or does not solve the network's puzzle; nothing
    /// was started.
    #[error(
        "{source}\n`shoal init --data-dir {} --network {network}` mints a proof for the existing key",
        data_dir.display()
    )]
    Proof {
        /// What is wrong with the proof.
        source: ProofFileError,
        /// The data directory.
        data_dir: PathBuf,
        /// The network.
        network: String,
    },
    /// The network's puzzle parameters are invalid; nothing was started.
    #[error("identity puzzle: {0}")]
    Puzzle(#[from] shoal_pow::ConfigError),
    /// arti could not start or bootstrap; nothing was started.
    #[error(transparent)]
    Tor(#[from] crate::tor::TorError),
    /// The DHT node could not start (database, data directory); nothing was started.
    #[error("starting the DHT node: {0}")]
    Start(#[from] StartError),
    /// A p2p listen address could not be bound; the node was shut down.
    #[error("p2p: {0}")]
    Listen(#[from] ListenError),
    /// The JSON-RPC server could not start; the node was shut down.
    #[error("JSON-RPC: {0}")]
    Rpc(#[from] RpcStartError),
    /// The RPC URL file could not be written; the node was shut down.
    #[error("{}: {source}", path.display())]
    RpcUrlFile {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// Signal handlers could not be installed; the node was shut down.
    #[error("installing signal handlers: {0}")]
    Signal(io::Error),
    /// The DHT event loop stopped on its own (it panicked); the RPC server was stopped.
    #[error("the DHT event loop stopped unexpectedly")]
    EventLoopDied,
    /// Logging could not be set up.
    #[error("logging: {0}")]
    Tracing(String),
}

/// Sets up logging to stderr in the configured format and filter.
pub fn init_tracing(log: &LogConfig) -> Result<(), RunError> {
    let filter = EnvFilter::try_new(&log.level).map_err(|e| RunError::Tracing(format!("{e}")))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(io::stderr().is_terminal())
        .with_writer(io::stderr);
    let result = match log.format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    result.map_err(|e| RunError::Tracing(e.to_string()))
}

/// A running node: the DHT event loop, the join task and the JSON-RPC server.
#[derive(Debug)]
pub struct Node {
    client: Client,
    rpc: RpcServer,
    event_loop: JoinHandle<()>,
    joiner: Option<JoinHandle<()>>,
    listen_addrs: Vec<Multiaddr>,
    rpc_url_file: PathBuf,
}

impl Node {
    /// Starts a node for `config` (validated again here). On error, whatever had started is
    /// shut down.
    pub async fn start(config: &Config) -> Result<Self, RunError> {
        config.validate()?;
        let dht_config = config.to_dht_config()?;
        let data_dir = config.resolved_data_dir();
        let network = config.network.as_str().to_owned();
        let key_path = data_dir.join(KEY_FILE);
        let key = match NodeKey::load(&key_path) {
            Ok(key) => key,
            Err(KeyError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                return Err(RunError::NotInitialized {
                    key: key_path,
                    data_dir,
                    network,
                });
            }
            Err(e) => return Err(e.into()),
        };
        let puzzle = Puzzle::new(dht_config.puzzle.clone())?;
        let proof =
            init::load_proof(&data_dir.join(PROOF_FILE), &key, &puzzle).map_err(|source| {
                RunError::Proof {
                    source,
                    data_dir: data_dir.clone(),
                    network: network.clone(),
                }
            })?;
        let mut listen = config.p2p.listen_addrs()?;
        let seeds = config.p2p.seed_addrs()?;
        let peer = key.peer_id();
        let mode = config.p2p.transport;
        tracing::info!(%peer, %network, ?mode, data_dir = %data_dir.display(), "starting node");

        let mut onion = None;
        let transport: NodeTransport = match mode {
            // NAT traversal dials and listens through circuit relays as well.
            Transport::Tcp if dht_config.nat.auto => tcp_transport_with_relay(&key.to_libp2p()),
            Transport::Tcp => tcp_transport(&key.to_libp2p()).into(),
            Transport::Tor | Transport::Both => {
                let with_tcp = mode == Transport::Both;
                let tor = crate::tor::transport(&key, &config.tor, &data_dir, with_tcp).await?;
                tracing::info!(onion = ?tor.onion, "Tor ready");
                listen.push(shoal_tor::any_onion(config.tor.onion_port));
                onion = tor.onion.as_ref().map(ToString::to_string);
                tor.transport.into()
            }
        };
        let (client, event_loop) = EventLoop::new(key, proof, dht_config, transport)?;
        let event_loop = tokio::spawn(event_loop.run());
        let rpc_url_file = data_dir.join(RPC_URL_FILE);
        let up = BringUp {
            listen,
            seeds,
            onion,
            data_dir: &data_dir,
            rpc_url_file: &rpc_url_file,
        };
        match bring_up(&client, config, up).await {
            Ok((listen_addrs, joiner, rpc)) => Ok(Self {
                client,
                rpc,
                event_loop,
                joiner,
                listen_addrs,
                rpc_url_file,
            }),
            Err(e) => {
                shutdown_dht(client, event_loop).await;
                Err(e)
            }
        }
    }

    /// The node's peer id.
    pub fn peer_id(&self) -> PeerId {
        self.client.peer_id()
    }

    /// The p2p addresses bound.
    pub fn listen_addrs(&self) -> &[Multiaddr] {
        &self.listen_addrs
    }

    /// The JSON-RPC URL, `http://ADDR`.
    pub fn rpc_url(&self) -> String {
        self.rpc.url()
    }

    /// A client of the DHT node.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Waits until `signals` reports SIGINT or SIGTERM, or the event loop dies.
    pub async fn wait_for(&mut self, signals: &mut Signals) -> Result<(), RunError> {
        tokio::select! {
            name = signals.recv() => {
                tracing::info!(signal = name, "shutting down");
                Ok(())
            }
            _ = &mut self.event_loop => {
                // Finished handles must not be polled again by `stop`.
                self.event_loop = tokio::spawn(async {});
                Err(RunError::EventLoopDied)
            }
        }
    }

    /// Stops the JSON-RPC server, shuts the DHT node down (leaving SWIM and flushing storage)
    /// and removes the RPC URL file.
    pub async fn stop(self) {
        self.rpc.stop().await;
        if let Some(joiner) = self.joiner {
            joiner.abort();
        }
        shutdown_dht(self.client, self.event_loop).await;
        if let Err(e) = std::fs::remove_file(&self.rpc_url_file)
            && e.kind() != io::ErrorKind::NotFound
        {
            tracing::warn!(file = %self.rpc_url_file.display(), error = %e, "cannot remove");
        }
        tracing::info!("node stopped");
    }
}

/// What [`bring_up`] starts the node with.
struct BringUp<'a> {
    listen: Vec<Multiaddr>,
    seeds: Vec<(PeerId, Multiaddr)>,
    onion: Option<String>,
    data_dir: &'a Path,
    rpc_url_file: &'a Path,
}

/// Listens, starts joining, starts the RPC server and writes its URL file.
async fn bring_up(
    client: &Client,
    config: &Config,
    up: BringUp<'_>,
) -> Result<(Vec<Multiaddr>, Option<JoinHandle<()>>, RpcServer), RunError> {
    let BringUp {
        listen,
        seeds,
        onion,
        data_dir,
        rpc_url_file,
    } = up;
    let mut bound = Vec::with_capacity(listen.len());
    for addr in listen {
        let addr = client.listen(addr).await?;
        tracing::info!(%addr, "p2p listening");
        bound.push(addr);
    }
    let join = Arc::new(JoinStatus::new(!seeds.is_empty()));
    let joiner = if seeds.is_empty() {
        tracing::info!("no seeds: this is the first node of its network");
        None
    } else {
        let (client, join) = (client.clone(), join.clone());
        Some(tokio::spawn(async move {
            join::join_until_joined(client, seeds, &join).await;
        }))
    };
    let context = rpc::Context {
        network: config.network.as_str().to_owned(),
        transport: match config.p2p.transport {
            Transport::Tcp => "tcp",
            Transport::Tor => "tor",
            Transport::Both => "tcp+tor",
        },
        onion,
        data_dir: Some(data_dir.to_owned()),
        default_ttl: config.default_ttl(),
        join,
    };
    let rpc = match rpc::start(&config.rpc, client.clone(), context).await {
        Ok(rpc) => rpc,
        Err(e) => {
            if let Some(j) = joiner {
                j.abort();
            }
            return Err(e.into());
        }
    };
    let url = rpc.url();
    tracing::info!(url = %rpc.dashboard_url(), "dashboard");
    if let Err(source) = init::write_atomic(rpc_url_file, format!("{url}\n").as_bytes()) {
        if let Some(j) = joiner {
            j.abort();
        }
        rpc.stop().await;
        return Err(RunError::RpcUrlFile {
            path: rpc_url_file.to_owned(),
            source,
        });
    }
    Ok((bound, joiner, rpc))
}

/// Shuts the DHT node down (SWIM leave, database closed) and waits, bounded, for its event loop
/// to finish.
async fn shutdown_dht(client: Client, mut event_loop: JoinHandle<()>) {
    let graceful = tokio::time::timeout(SHUTDOWN_TIMEOUT, client.shutdown()).await;
    // The loop also ends once every client is gone.
    drop(client);
    let ended = match graceful {
        Ok(()) => tokio::time::timeout(SHUTDOWN_TIMEOUT, &mut event_loop)
            .await
            .is_ok(),
        Err(_) => false,
    };
    if !ended {
        tracing::warn!("the DHT node did not stop in time; aborting it");
        event_loop.abort();
    }
}

/// The shutdown signals, SIGINT and SIGTERM (Ctrl-C off Unix), caught from creation on.
#[derive(Debug)]
pub struct Signals {
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
}

impl Signals {
    /// Installs the handlers: from now on these signals no longer kill the process.
    pub fn new() -> Result<Self, RunError> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Self {
                interrupt: signal(SignalKind::interrupt()).map_err(RunError::Signal)?,
                terminate: signal(SignalKind::terminate()).map_err(RunError::Signal)?,
            })
        }
        #[cfg(not(unix))]
        Ok(Self {})
    }

    /// Waits for the next signal; returns its name.
    pub async fn recv(&mut self) -> &'static str {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.interrupt.recv() => "SIGINT",
                _ = self.terminate.recv() => "SIGTERM",
            }
        }
        #[cfg(not(unix))]
        {
            // Without a handler Ctrl-C ends the process, which is the best left to do.
            let _ = tokio::signal::ctrl_c().await;
            "Ctrl-C"
        }
    }
}

/// `shoal run`: starts the node, prints `rpc http://ADDR` on stdout, waits for SIGINT or
/// SIGTERM, and stops cleanly.
pub async fn run(config: &Config) -> Result<(), RunError> {
    // Installed first, so that a signal during startup stops the node cleanly once started.
    let mut signals = Signals::new()?;
    let mut node = Node::start(config).await?;
    let url = node.rpc_url();
    tracing::info!(%url, peer = %node.peer_id(), "node ready");
    let mut out = io::stdout().lock();
    // A closed stdout (a parent that stopped reading) must not stop the node.
    let _ = writeln!(out, "rpc {url}").and_then(|()| out.flush());
    drop(out);
    let trim = trim_freed_memory();
    let waited = node.wait_for(&mut signals).await;
    if let Some(trim) = trim {
        trim.abort();
    }
    node.stop().await;
    waited
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroUsize;

    /// This process's resident memory, KiB.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn rss_kib() -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").expect("status");
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS")
    }

    #[test]
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn freed_scrypt_sized_blocks_leave_the_process() {
        super::limit_retained_memory();
        // The size of scrypt's working set; without the fixed threshold the second block
        // comes from the heap and stays resident once freed.
        const BLOCK: usize = 16 << 20;
        let before = rss_kib();
        for _ in 0..3 {
            let block = vec![1u8; BLOCK];
            std::hint::black_box(&block);
        }
        // Other tests of this binary allocate meanwhile: one reading near the start suffices
        // (without the fix the retained block stays for good).
        let mut readings = Vec::new();
        for _ in 0..10 {
            readings.push(rss_kib());
            if readings.last().is_some_and(|r| *r < before + 8 * 1024) {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        panic!("RSS grew from {before} KiB to {readings:?} KiB");
    }

    use shoal_dht::node::PutError;
    use shoal_pow::CancelToken;

    use super::*;
    use crate::config::{Network, P2pConfig};
    use crate::init::InitOptions;

    fn local_config(dir: &Path) -> Config {
        let mut config = Config {
            network: Network::Local,
            data_dir: dir.to_owned(),
            p2p: P2pConfig {
                listen: vec!["/ip4/127.0.0.1/tcp/0".into()],
                ..P2pConfig::default()
            },
            ..Config::default()
        };
        config.rpc.listen = "127.0.0.1:0".parse().expect("valid address");
        config
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stopped_node_keeps_its_records_and_removes_its_url_file() {
        let tmp = tempfile::tempdir().expect("temp dir");
        let config = local_config(tmp.path());
        let options = InitOptions {
            data_dir: tmp.path().to_owned(),
            puzzle: Network::Local.preset().puzzle,
            force: false,
            reuse: false,
            threads: NonZeroUsize::MIN,
        };
        init::init(&options, &CancelToken::new(), |_| {}).expect("init");

        let node = Node::start(&config).await.expect("node starts");
        let url_file = tmp.path().join(RPC_URL_FILE);
        let written = std::fs::read_to_string(&url_file).expect("rpc.url written");
        assert_eq!(written.trim(), node.rpc_url());
        assert_eq!(node.listen_addrs().len(), 1);
        let put = node
            .client()
            .put(b"k".to_vec(), b"v".to_vec(), config.default_ttl(), None)
            .await;
        // Alone, the put reaches no replica, but it is stored locally and durably first.
        assert!(
            matches!(put, Ok(_) | Err(PutError::Quorum { .. })),
            "{put:?}"
        );
        node.stop().await;
        assert!(!url_file.exists(), "rpc.url removed on a clean stop");

        let node = Node::start(&config).await.expect("node restarts");
        let stored = node.client().stored(b"k".to_vec()).await;
        assert!(stored.is_some(), "the record survived the restart");
        node.stop().await;
    }
}
