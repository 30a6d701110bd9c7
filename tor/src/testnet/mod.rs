//! A private Tor network on 127.0.0.1, run with Debian's `tor` and `tor-gencert`.
//!
//! [`TestNetwork::start`] generates keys and torrcs for the authorities and relays of a
//! [`TestNetConfig`] in a fresh directory with its own port range, starts one `tor` per node,
//! and returns once every node's DirPort serves a consensus listing all nodes as running (with
//! exits and onion-service directories). [`TestNetwork::client_config`] then gives a
//! [`Config`] for arti clients and onion services on that network. Dropping the network stops
//! every `tor` with SIGINT (SIGKILL after a grace period); each `tor` also exits by itself when
//! the process that started it dies.
//!
//! Starting costs 15-45 s (the authorities vote every `voting_interval`), so share one network
//! per test binary. All traffic stays on 127.0.0.1.

mod dirport;
mod keys;
mod ports;
mod torrc;

use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::config::{Config, Fallback, PrivateNetwork};
use dirport::ConsensusSummary;
use torrc::{AuthorityLine, NodeSpec, Role};

/// Why the test network could not start. Every process started so far has been stopped.
#[derive(Debug, thiserror::Error)]
pub enum TestNetError {
    /// A program is missing; install Debian's `tor` (it ships `tor-gencert` too).
    #[error("{program} not found ({source}); install it with `apt-get install -y tor`")]
    MissingProgram {
        /// The program that could not be run.
        program: PathBuf,
        /// The error from running it.
        source: std::io::Error,
    },
    /// A file operation failed.
    #[error("cannot {context}")]
    Io {
        /// What was being done.
        context: &'static str,
        /// The error.
        source: std::io::Error,
    },
    /// `tor-gencert` or `tor --list-fingerprint` failed.
    #[error("{tool} failed: {output}")]
    Tool {
        /// The failing command.
        tool: &'static str,
        /// What it printed.
        output: String,
    },
    /// A key file did not hold what it should.
    #[error("unexpected contents in {0}")]
    BadKeyFile(PathBuf),
    /// No free range of loopback ports was found.
    #[error("no free range of {0} loopback ports")]
    NoFreePorts(u16),
    /// The configuration asks for an impossible network.
    #[error("invalid test network configuration: {0}")]
    BadConfig(&'static str),
    /// A `tor` process exited during start-up.
    #[error("tor node {node} exited early ({status}); end of its log:\n{log}")]
    TorExited {
        /// The node's nickname.
        node: String,
        /// Its exit status.
        status: std::process::ExitStatus,
        /// The last lines of its notice log.
        log: String,
    },
    /// No usable consensus appeared in time.
    #[error(
        "no usable consensus after {waited:?} (last seen: {last:?}); end of that node's log:\n{log}"
    )]
    ConsensusTimeout {
        /// How long it waited.
        waited: Duration,
        /// What the slowest DirPort served last, if anything.
        last: Option<String>,
        /// The last lines of the log of the node that still had none.
        log: String,
    },
}

impl TestNetError {
    fn io(context: &'static str) -> impl FnOnce(std::io::Error) -> Self {
        move |source| Self::Io { context, source }
    }

    fn spawn(program: &Path, source: std::io::Error) -> Self {
        if source.kind() == std::io::ErrorKind::NotFound {
            Self::MissingProgram {
                program: program.to_owned(),
                source,
            }
        } else {
            Self::Io {
                context: "start a tor program",
                source,
            }
        }
    }
}

/// The shape of a test network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestNetConfig {
    /// Directory authorities (they relay too, without exiting). Default 3; at least 1.
    pub authorities: usize,
    /// Relays that exit (to any address, loopback included). Default 2.
    pub exits: usize,
    /// Relays that never exit. Default 2.
    pub middles: usize,
    /// Seconds between consensus votes. Default 20; at least 10.
    pub voting_interval_secs: u32,
    /// Longest wait for a usable consensus. Default 120 s.
    pub consensus_timeout: Duration,
    /// The `tor` program. Default `tor` (looked up in `PATH`).
    pub tor_program: PathBuf,
    /// The `tor-gencert` program. Default `tor-gencert`.
    pub gencert_program: PathBuf,
    /// Where the network keeps keys, torrcs and logs. `None` (default): a fresh temporary
    /// directory, removed on drop. A given directory is kept.
    pub dir: Option<PathBuf>,
}

impl Default for TestNetConfig {
    fn default() -> Self {
        Self {
            authorities: 3,
            exits: 2,
            middles: 2,
            voting_interval_secs: 20,
            consensus_timeout: Duration::from_secs(120),
            tor_program: "tor".into(),
            gencert_program: "tor-gencert".into(),
            dir: None,
        }
    }
}

/// A running tor node.
struct Node {
    nickname: String,
    dir_port: u16,
    data_dir: PathBuf,
    child: Child,
}

impl Node {
    /// Sends `signal` to the node's `tor`.
    fn signal(&self, signal: libc::c_int) {
        if let Ok(pid) = libc::pid_t::try_from(self.child.id()) {
            // SAFETY: kill(2) has no memory effects; `pid` is our own unreaped child, so it
            // cannot have been recycled for another process.
            unsafe {
                libc::kill(pid, signal);
            }
        }
    }
}

/// How often a node still without a usable consensus is told to fetch one again, once some
/// node serves one.
const NUDGE_EVERY: Duration = Duration::from_secs(5);

/// Timings of a network start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StartTimings {
    /// Key and torrc generation.
    pub keys: Duration,
    /// From starting the first `tor` until every DirPort served a usable consensus.
    pub consensus: Duration,
}

/// A running private Tor network. Dropping it stops every `tor`.
pub struct TestNetwork {
    nodes: Vec<Node>,
    network: PrivateNetwork,
    dir: PathBuf,
    _temp: Option<tempfile::TempDir>,
    timings: StartTimings,
}

impl TestNetwork {
    /// Generates keys and torrcs, starts every node and waits for a usable consensus.
    /// Blocks for 15-45 s with the default voting interval; call it from a blocking context.
    pub fn start(config: TestNetConfig) -> Result<Self, TestNetError> {
        if config.authorities == 0 {
            return Err(TestNetError::BadConfig("at least one authority is needed"));
        }
        if config.voting_interval_secs < 10 {
            return Err(TestNetError::BadConfig("voting_interval_secs below 10"));
        }
        let started = Instant::now();
        let (temp, dir) = match &config.dir {
            Some(dir) => {
                std::fs::create_dir_all(dir).map_err(TestNetError::io("create the directory"))?;
                (None, dir.clone())
            }
            None => {
                let temp = tempfile::Builder::new()
                    .prefix("shoal-tor-testnet-")
                    .tempdir()
                    .map_err(TestNetError::io("create a temporary directory"))?;
                let dir = temp.path().to_owned();
                (Some(temp), dir)
            }
        };
        let roles: Vec<(String, Role)> = (0..config.authorities)
            .map(|i| (format!("auth{i}"), Role::Authority))
            .chain((0..config.exits).map(|i| (format!("exit{i}"), Role::Exit)))
            .chain((0..config.middles).map(|i| (format!("relay{i}"), Role::Middle)))
            .collect();
        let count = u16::try_from(roles.len() * 2)
            .map_err(|_| TestNetError::BadConfig("too many nodes"))?;
        let base = ports::free_range(count, 50).ok_or(TestNetError::NoFreePorts(count))?;
        let port = |i: usize, offset: usize| base + (2 * i + offset) as u16;

        // Keys, in parallel: authorities need tor-gencert and every node a relay identity.
        let data_dirs: Vec<PathBuf> = roles.iter().map(|(nick, _)| dir.join(nick)).collect();
        let results: Vec<Result<(Option<String>, keys::NodeIdentity), TestNetError>> =
            std::thread::scope(|scope| {
                let handles: Vec<_> = roles
                    .iter()
                    .enumerate()
                    .map(|(i, (_, role))| {
                        let data_dir = &data_dirs[i];
                        let config = &config;
                        let dir_port = port(i, 1);
                        scope.spawn(move || {
                            let v3 = if *role == Role::Authority {
                                Some(keys::authority_certificate(
                                    &config.gencert_program,
                                    data_dir,
                                    dir_port,
                                )?)
                            } else {
                                None
                            };
                            let id = keys::relay_identity(&config.tor_program, data_dir)?;
                            Ok((v3, id))
                        })
                    })
                    .collect();
                handles
                    .into_iter()
                    // Invariant: the key generation closures do not panic.
                    .map(|h| h.join().expect("key generation thread panicked"))
                    .collect()
            });
        let identities = results.into_iter().collect::<Result<Vec<_>, _>>()?;

        let authority_lines: Vec<AuthorityLine> = identities
            .iter()
            .enumerate()
            .filter_map(|(i, (v3, id))| {
                v3.as_ref().map(|v3ident| AuthorityLine {
                    nickname: roles[i].0.clone(),
                    or_port: port(i, 0),
                    dir_port: port(i, 1),
                    v3ident: v3ident.clone(),
                    rsa: id.rsa.clone(),
                })
            })
            .collect();
        let owner = std::process::id();
        let mut torrcs = Vec::with_capacity(roles.len());
        for (i, (nickname, role)) in roles.iter().enumerate() {
            let spec = NodeSpec {
                nickname,
                role: *role,
                or_port: port(i, 0),
                dir_port: port(i, 1),
                data_dir: &data_dirs[i],
            };
            let text = torrc::torrc(&spec, &authority_lines, config.voting_interval_secs, owner);
            let path = data_dirs[i].join("torrc");
            std::fs::write(&path, text).map_err(TestNetError::io("write a torrc"))?;
            torrcs.push(path);
        }
        let network = PrivateNetwork {
            authority_v3idents: authority_lines.iter().map(|a| a.v3ident.clone()).collect(),
            fallbacks: identities
                .iter()
                .enumerate()
                .map(|(i, (_, id))| Fallback {
                    rsa_identity: id.rsa.clone(),
                    ed_identity: id.ed.clone(),
                    orports: vec![([127, 0, 0, 1], port(i, 0)).into()],
                })
                .collect(),
            hsdir_interval_minutes: NonZeroU32::new(24 * config.voting_interval_secs / 60),
            // Loopback circuits build in milliseconds; without a floor arti's learned timeouts
            // are too short for a busy machine (see the field).
            min_circuit_timeout: Some(Duration::from_secs(2)),
            dangerous_ignore_subnet_families: true,
        };
        let keys_done = started.elapsed();

        let mut net = Self {
            nodes: Vec::with_capacity(roles.len()),
            network,
            dir,
            _temp: temp,
            timings: StartTimings {
                keys: keys_done,
                consensus: Duration::ZERO,
            },
        };
        let launch = Instant::now();
        for (i, (nickname, _)) in roles.iter().enumerate() {
            let child = Command::new(&config.tor_program)
                .arg("-f")
                .arg(&torrcs[i])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| TestNetError::spawn(&config.tor_program, e))?;
            net.nodes.push(Node {
                nickname: nickname.clone(),
                dir_port: port(i, 1),
                data_dir: data_dirs[i].clone(),
                child,
            });
        }
        net.wait_for_consensus(roles.len(), config.exits, config.consensus_timeout)?;
        net.timings.consensus = launch.elapsed();
        tracing::info!(
            dir = %net.dir.display(),
            keys = ?net.timings.keys,
            consensus = ?net.timings.consensus,
            "private Tor network is up"
        );
        Ok(net)
    }

    /// Polls every DirPort until each serves a consensus in which all `nodes` run, `exits`
    /// of them exit and all are onion-service directories.
    ///
    /// Until the authorities publish their first consensus every relay's fetch of it fails,
    /// and tor backs off after each failure by a random delay of up to three times the one
    /// before, with no ceiling: after the seven or eight failures of a start a relay may not
    /// ask again for minutes (docs/tor.md has the runs). So once some node serves a usable
    /// consensus, every node that does not is sent
    /// SIGHUP, which makes tor forget its download failures and fetch at once, and again every
    /// [`NUDGE_EVERY`] while it still lags.
    fn wait_for_consensus(
        &mut self,
        nodes: usize,
        exits: usize,
        timeout: Duration,
    ) -> Result<(), TestNetError> {
        let deadline = Instant::now() + timeout;
        let usable = |s: &ConsensusSummary| {
            s.relays >= nodes && s.running >= nodes && s.exits >= exits && s.hsdirs >= nodes
        };
        let mut nudged: Vec<Option<Instant>> = vec![None; self.nodes.len()];
        loop {
            for node in &mut self.nodes {
                if let Ok(Some(status)) = node.child.try_wait() {
                    return Err(TestNetError::TorExited {
                        node: node.nickname.clone(),
                        status,
                        log: log_tail(&node.data_dir, 20),
                    });
                }
            }
            let summaries: Vec<Option<ConsensusSummary>> = self
                .nodes
                .iter()
                .map(|n| dirport::consensus(n.dir_port))
                .collect();
            let ready: Vec<bool> = summaries
                .iter()
                .map(|s| s.as_ref().is_some_and(usable))
                .collect();
            if ready.iter().all(|&r| r) {
                return Ok(());
            }
            let now = Instant::now();
            if ready.iter().any(|&r| r) {
                for ((node, &ready), nudged) in self.nodes.iter().zip(&ready).zip(&mut nudged) {
                    if !ready && nudged.is_none_or(|at| now.duration_since(at) >= NUDGE_EVERY) {
                        tracing::debug!(node = %node.nickname, "no usable consensus yet; SIGHUP");
                        node.signal(libc::SIGHUP);
                        *nudged = Some(now);
                    }
                }
            }
            if now >= deadline {
                let lagging = ready.iter().position(|&r| !r);
                return Err(TestNetError::ConsensusTimeout {
                    waited: timeout,
                    last: lagging
                        .map(|i| format!("{}: {:?}", self.nodes[i].nickname, summaries[i])),
                    log: lagging
                        .map(|i| log_tail(&self.nodes[i].data_dir, 30))
                        .unwrap_or_default(),
                });
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// The network's authorities and directory caches, for [`Config::private`].
    pub fn private_network(&self) -> PrivateNetwork {
        self.network.clone()
    }

    /// A transport configuration for a client named `name` on this network: state and cache
    /// under `<dir>/clients/<name>`, file permissions trusted (test directories only).
    pub fn client_config(&self, name: &str) -> Config {
        let mut config =
            Config::private(self.private_network(), &self.dir.join("clients").join(name));
        config.dangerous_trust_all_file_permissions = true;
        config
    }

    /// The directory holding keys, torrcs (`<node>/torrc`) and logs (`<node>/notice.log`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// How long the start took.
    pub fn timings(&self) -> StartTimings {
        self.timings
    }

    /// The process ids of the running `tor` nodes.
    pub fn pids(&self) -> Vec<u32> {
        self.nodes.iter().map(|n| n.child.id()).collect()
    }

    /// Stops every node: SIGINT to each PID, then SIGKILL to any still alive after 5 s.
    /// Called by `drop`; calling it twice is harmless.
    pub fn stop(&mut self) {
        for node in &self.nodes {
            node.signal(libc::SIGINT);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        for node in &mut self.nodes {
            loop {
                match node.child.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) if Instant::now() >= deadline => {
                        tracing::warn!(
                            node = %node.nickname,
                            log = %log_tail(&node.data_dir, 5),
                            "tor did not stop within 5 s of SIGINT; killing it"
                        );
                        let _ = node.child.kill();
                        let _ = node.child.wait();
                        break;
                    }
                    Ok(None) => std::thread::sleep(Duration::from_millis(50)),
                }
            }
        }
        self.nodes.clear();
    }
}

impl Drop for TestNetwork {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The last `lines` lines of a node's notice log.
fn log_tail(data_dir: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(data_dir.join("notice.log")).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
