//! Membership over real processes: how fast `shoal run` nodes started together see each other,
//! how fast survivors mark a crashed node dead, and what an idle member costs, in network
//! namespaces with random loss.
//!
//! `cargo bench -p shoal-node --bench membership` (root, `ip` and `nft` needed; the chaos
//! suite's network: one namespace per node on a bridge, loss as `nft` random drop of packets
//! between nodes). For each loss rate: `n` nodes (testnet preset: SWIM probe 1 s, timeout
//! 500 ms) are started at once, node 0 with no seed and every other with node 0 as its only
//! seed. Nodes are observed through their own logs, not polled: each logs every membership
//! change (joined, suspected, refuted, failed, left) with a timestamp, and the bench reads the
//! logs as they grow (a poll of every node's `swim_members` at 100 ms was 500 calls a second at
//! n = 50, enough to starve the nodes it measured on two cores). The time from the start until
//! each node lists every other alive is kept. Once all have checked all and `settle` more seconds passed, a
//! quiet window measures each node's CPU, resident memory and the packets and bytes it sends
//! (its interface's counters, nothing polled meanwhile). Then `crashes` times a random live node other than the seed is SIGKILLed
//! and the survivors' logs are read until each marks it dead: the first suspicion by any
//! survivor, the time until every survivor marked it dead, and the spread between the first and
//! the last. Every suspicion and failure a node logged of a member that was never crashed, over
//! the whole run, is counted. The join rows also give the time until each node has checked every
//! other's identity proof (a member is listed before its check ends, and the DHT uses it only
//! after; `node_info` read every 500 ms), the scrypt evaluations each node ran and their CPU
//! time, and the CPU of all nodes until all checked all.
//!
//! Options after `--`: `--nodes N` (20), `--loss 0,10` (percent), `--crashes N` (10),
//! `--settle S` (10), `--window S` (20), `--logs DIR` (keep the nodes' data and JSON logs there). Under `cargo test --benches` it runs 3 nodes, no loss,
//! 1 crash, a 1 s settle and a 3 s window, judging nothing; without root, `ip` or `nft` it says so and measures nothing.

mod common;

// The chaos suite's network namespaces (loss only), identities, RPC clients and member-list
// reader; the rest of it is unused here.
#[allow(dead_code)]
#[path = "../tests/chaos"]
mod chaos {
    pub(crate) mod cluster;
    pub(crate) mod net;
    pub(crate) mod observe;
}

use std::collections::HashMap;
use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use chaos::cluster::{Identity, P2P_PORT, call, clients, mint};
use chaos::net::{self, Fault, Net};
use chaos::observe::Seen;
use common::{arg, cpu_secs, load_average, machine};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;
use shoal_node::config::{Config, LogConfig, LogFormat, Network, P2pConfig};
use shoal_node::init;

const SHOAL: &str = env!("CARGO_BIN_EXE_shoal");
/// How often the nodes' logs are read.
const POLL: Duration = Duration::from_millis(100);
/// How often `node_info` is read from nodes whose identity checks are not all done.
const CHECKS_POLL: Duration = Duration::from_millis(500);
/// Longest wait for all to see all, or for survivors to mark a crash dead.
const LIMIT: Duration = Duration::from_secs(120);

struct Options {
    nodes: usize,
    losses: Vec<u8>,
    crashes: usize,
    settle: Duration,
    window: Duration,
    logs: Option<PathBuf>,
}

fn options() -> Options {
    let args: Vec<String> = std::env::args().collect();
    let full = args.iter().any(|a| a == "--bench");
    let number = |name: &str, full_default: usize, smoke: usize| {
        arg(&args, name)
            .and_then(|v| v.parse().ok())
            .unwrap_or(if full { full_default } else { smoke })
    };
    Options {
        nodes: number("--nodes", 20, 3).max(2),
        losses: arg(&args, "--loss")
            .map(|v| v.split(',').filter_map(|l| l.parse().ok()).collect())
            .unwrap_or_else(|| if full { vec![0, 10] } else { vec![0] }),
        crashes: number("--crashes", 10, 1),
        settle: Duration::from_secs(number("--settle", 10, 1) as u64),
        window: Duration::from_secs(number("--window", 20, 3) as u64),
        logs: arg(&args, "--logs").map(PathBuf::from),
    }
}

/// One membership change a node logged.
struct Change {
    at: SystemTime,
    observer: usize,
    member: usize,
    state: Seen,
}

/// Every node's JSON log, read as it grows, and each node's view built from the changes in it.
struct Logs {
    paths: Vec<PathBuf>,
    /// Bytes of each log read so far (whole lines only).
    read: Vec<usize>,
    peers: Vec<String>,
    views: Vec<HashMap<usize, Seen>>,
}

impl Logs {
    fn new(paths: Vec<PathBuf>, peers: &[String]) -> Self {
        let n = paths.len();
        Self {
            paths,
            read: vec![0; n],
            peers: peers.to_vec(),
            views: vec![HashMap::new(); n],
        }
    }

    /// The changes logged since the last read, each applied to its observer's view; `then`
    /// sees every change right after it is applied, in each node's own order.
    fn read(&mut self, mut then: impl FnMut(&Change, &HashMap<usize, Seen>)) {
        for observer in 0..self.paths.len() {
            // Only what the log gained since the last read.
            let mut fresh = Vec::new();
            let gained = fs::File::open(&self.paths[observer]).and_then(|mut f| {
                f.seek(SeekFrom::Start(self.read[observer] as u64))?;
                f.read_to_end(&mut fresh)
            });
            if gained.is_err() {
                continue;
            }
            // A line still being written waits for the next read.
            let whole = fresh.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
            self.read[observer] += whole;
            for line in fresh[..whole].split(|&b| b == b'\n') {
                let Some(change) = self.parse(observer, line) else {
                    continue;
                };
                self.views[observer].insert(change.member, change.state);
                then(&change, &self.views[observer]);
            }
        }
    }

    /// A membership change from one line of a node's JSON log (`None` for any other line).
    fn parse(&self, observer: usize, line: &[u8]) -> Option<Change> {
        let v: Value = serde_json::from_slice(line).ok()?;
        let fields = &v["fields"];
        let state = match fields["state"].as_str()? {
            "alive" => Seen::Alive,
            "suspect" => Seen::Suspect,
            "dead" => Seen::Dead,
            "left" => Seen::Left,
            _ => return None,
        };
        // The peer is logged in its Debug form, `PeerId("12D3…")`.
        let peer = fields["peer"].as_str()?;
        let member = self.peers.iter().position(|p| peer.contains(p.as_str()))?;
        let at = humantime::parse_rfc3339(v["timestamp"].as_str()?).ok()?;
        Some(Change {
            at,
            observer,
            member,
            state,
        })
    }
}

/// Seconds from `start` to `at` (negative if before).
fn since(start: SystemTime, at: SystemTime) -> f64 {
    match at.duration_since(start) {
        Ok(d) => d.as_secs_f64(),
        Err(e) => -e.duration().as_secs_f64(),
    }
}

/// The network's nodes and their processes; killed when dropped.
struct Nodes {
    children: Vec<Option<Child>>,
}

impl Drop for Nodes {
    fn drop(&mut self) {
        for child in self.children.iter_mut().flatten() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Bytes and packets node `i`'s interface sent so far.
fn sent(net: &Net, i: usize) -> (u64, u64) {
    let text = net::run(
        "ip",
        &["-n", &net.node_ns[i], "-s", "-j", "link", "show", "eth0"],
        None,
    )
    .unwrap_or_default();
    let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    let tx = &v[0]["stats64"]["tx"];
    (
        tx["bytes"].as_u64().unwrap_or(0),
        tx["packets"].as_u64().unwrap_or(0),
    )
}

/// Field `name` (kB) of a `/proc/<pid>/` file, in MiB.
fn proc_mib(pid: u32, file: &str, name: &str) -> f64 {
    let text = fs::read_to_string(format!("/proc/{pid}/{file}")).unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix(name))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Resident memory of a process, MiB.
fn rss_mib(pid: u32) -> f64 {
    proc_mib(pid, "status", "VmRSS:")
}

/// The part of it no other process shares, MiB: most of a node's resident memory is the
/// executable's pages, which every node on the machine maps once.
fn private_mib(pid: u32) -> f64 {
    proc_mib(pid, "smaps_rollup", "Private_Dirty:")
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// A table cell: the median and the `q` quantile of `sorted`, in seconds.
fn median_and(sorted: &[f64], q: f64) -> String {
    format!(
        "{:.2} / {:.2}",
        percentile(sorted, 0.5),
        percentile(sorted, q)
    )
}

fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(f64::total_cmp);
    v
}

/// What one loss rate measured.
#[derive(Default)]
struct Measured {
    /// Seconds from the start until each node listed its first member (the seed's answer to
    /// its join, or for the seed its first joiner).
    first: Vec<f64>,
    /// Seconds from the start until each node listed every other alive.
    join: Vec<f64>,
    /// Seconds from the start until each node had also checked every other's identity proof.
    checked: Vec<f64>,
    /// Per node, once all checked: scrypt evaluations, the checks something waited on, and the
    /// evaluations' CPU seconds.
    evaluations: Vec<f64>,
    needed: Vec<f64>,
    proof_cpu: Vec<f64>,
    /// Per node, once all checked: proof requests sent, and proofs that came with news instead.
    asked: Vec<f64>,
    with_news: Vec<f64>,
    /// CPU seconds of all nodes together from the start until every node checked every other.
    join_cpu: f64,
    /// Per node over the window: CPU share of a core, RSS and private MiB, packets/s, bytes/s.
    cpu: Vec<f64>,
    rss: Vec<f64>,
    private: Vec<f64>,
    packets: Vec<f64>,
    bytes: Vec<f64>,
    /// Per crash: first suspicion, every survivor dead, first dead to last dead (seconds).
    suspicion: Vec<f64>,
    all_dead: Vec<f64>,
    spread: Vec<f64>,
    /// Crashes some survivor had not marked dead within the limit.
    undetected: usize,
    /// Suspicions and failures a node logged of a member that had not crashed.
    false_suspicions: usize,
    false_failures: usize,
}

async fn measure(
    o: &Options,
    scenario: usize,
    loss: u8,
    ids: &[Identity],
    root: &Path,
) -> Measured {
    let n = o.nodes;
    let net = Net::create(scenario, n).expect("the bench network");
    if loss > 0 {
        net.inject(&Fault::Loss(loss)).expect("loss rules");
    }
    let peers: Vec<String> = ids.iter().map(|id| id.peer.clone()).collect();
    let seed = format!("/ip4/{}/tcp/{P2P_PORT}/p2p/{}", net.addrs[0], peers[0]);
    let mut commands = Vec::new();
    let mut logs = Vec::new();
    for (i, id) in ids.iter().enumerate() {
        let data_dir = root
            .join(format!("run-{scenario}"))
            .join(format!("node-{i}"));
        id.install(&data_dir);
        let config = Config {
            network: Network::Testnet,
            data_dir: data_dir.clone(),
            // As `shoal testnet` gives them: the cores shared among the nodes.
            threads: 1,
            p2p: P2pConfig {
                listen: vec![format!("/ip4/{}/tcp/{P2P_PORT}", net.addrs[i])],
                seeds: if i == 0 {
                    Vec::new()
                } else {
                    vec![seed.clone()]
                },
                ..P2pConfig::default()
            },
            rpc: chaos::cluster::rpc_at(&net.addrs[i]),
            // Membership changes are logged by shoal_swim at info; `SHOAL_BENCH_LOG` (a filter
            // that keeps shoal_swim at info) logs more for a diagnosis.
            log: LogConfig {
                level: std::env::var("SHOAL_BENCH_LOG")
                    .unwrap_or_else(|_| "warn,shoal_swim=info".to_owned()),
                format: LogFormat::Json,
            },
            ..Config::default()
        };
        config.validate().expect("a valid config");
        let path = init::write_config(&data_dir, &config, true)
            .expect("writing the config")
            .expect("written");
        let log = fs::File::create(data_dir.join("node.log")).expect("a log file");
        logs.push(data_dir.join("node.log"));
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", &net.node_ns[i], SHOAL, "run", "--config"])
            .arg(path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("a log handle"))
            .stderr(log);
        commands.push(command);
    }
    let clients = clients(&net.addrs, Duration::from_secs(2));
    let mut m = Measured::default();
    let mut logs = Logs::new(logs, &peers);
    // When each node was killed, for counting suspicions and failures of live members.
    let mut crashed: Vec<Option<SystemTime>> = vec![None; n];
    let count_false = |m: &mut Measured, c: &Change, crashed: &[Option<SystemTime>]| {
        if crashed[c.member].is_none_or(|at| c.at < at) {
            match c.state {
                Seen::Suspect => m.false_suspicions += 1,
                Seen::Dead | Seen::Left => m.false_failures += 1,
                Seen::Alive => {}
            }
        }
    };
    // All at once; `ip netns exec` execs shoal, so each child's pid is the node's.
    let start = SystemTime::now();
    let begun = Instant::now();
    let mut nodes = Nodes {
        children: commands
            .iter_mut()
            .map(|c| Some(c.spawn().expect("starting shoal")))
            .collect(),
    };
    let mut first: Vec<Option<f64>> = vec![None; n];
    let mut joined: Vec<Option<f64>> = vec![None; n];
    let mut checked: Vec<Option<f64>> = vec![None; n];
    let mut next_check = begun;
    while checked.iter().any(Option::is_none) && begun.elapsed() < LIMIT {
        tokio::time::sleep(POLL).await;
        logs.read(|c, view| {
            count_false(&mut m, c, &crashed);
            first[c.observer].get_or_insert(since(start, c.at));
            let alive = view
                .iter()
                .filter(|(j, s)| **j != c.observer && **s == Seen::Alive)
                .count();
            if alive == n - 1 && joined[c.observer].is_none() {
                joined[c.observer] = Some(since(start, c.at));
            }
        });
        // Identity checks are read from `node_info`, less often, and only from nodes that list
        // everyone and have not checked everyone.
        if Instant::now() >= next_check {
            next_check = Instant::now() + CHECKS_POLL;
            let waiting: Vec<usize> = (0..n)
                .filter(|&i| joined[i].is_some() && checked[i].is_none())
                .collect();
            let reads = waiting
                .iter()
                .map(|&i| call(&clients[i], "node_info", Value::Null));
            let infos = futures::future::join_all(reads).await;
            let at = begun.elapsed().as_secs_f64();
            for (&i, info) in waiting.iter().zip(infos) {
                if info.is_ok_and(|v| v["identity_checks"]["pending"] == 0) {
                    checked[i] = Some(at);
                }
            }
        }
    }
    let pids: Vec<u32> = nodes.children.iter().flatten().map(Child::id).collect();
    m.join_cpu = pids.iter().map(|p| cpu_secs(*p)).sum();
    let infinite =
        |v: &[Option<f64>]| sorted(v.iter().map(|j| j.unwrap_or(f64::INFINITY)).collect());
    m.first = infinite(&first);
    m.join = infinite(&joined);
    m.checked = infinite(&checked);
    for client in &clients {
        if let Ok(info) = call(client, "node_info", Value::Null).await {
            let checks = &info["identity_checks"];
            m.evaluations
                .push(checks["scrypt_evaluations"].as_f64().unwrap_or(f64::NAN));
            m.needed
                .push(checks["checks_needed"].as_f64().unwrap_or(f64::NAN));
            m.proof_cpu
                .push(checks["scrypt_secs"].as_f64().unwrap_or(f64::NAN));
            m.asked
                .push(checks["proof_requests"].as_f64().unwrap_or(f64::NAN));
            m.with_news
                .push(checks["proofs_with_news"].as_f64().unwrap_or(f64::NAN));
        }
    }
    m.evaluations = sorted(std::mem::take(&mut m.evaluations));
    m.needed = sorted(std::mem::take(&mut m.needed));
    m.proof_cpu = sorted(std::mem::take(&mut m.proof_cpu));
    m.asked = sorted(std::mem::take(&mut m.asked));
    m.with_news = sorted(std::mem::take(&mut m.with_news));

    // The steady state: after the joins' own traffic (proof checks, table fills) has settled,
    // a window with nothing polled.
    tokio::time::sleep(o.settle).await;
    let cpu0: Vec<f64> = pids.iter().map(|p| cpu_secs(*p)).collect();
    let sent0: Vec<(u64, u64)> = (0..n).map(|i| sent(&net, i)).collect();
    tokio::time::sleep(o.window).await;
    let secs = o.window.as_secs_f64();
    for i in 0..n {
        let (bytes, packets) = sent(&net, i);
        m.bytes.push((bytes - sent0[i].0) as f64 / secs);
        m.packets.push((packets - sent0[i].1) as f64 / secs);
        m.cpu.push((cpu_secs(pids[i]) - cpu0[i]) / secs * 100.0);
        m.rss.push(rss_mib(pids[i]));
        m.private.push(private_mib(pids[i]));
    }

    // What the quiet window logged.
    logs.read(|c, _| count_false(&mut m, c, &crashed));

    let mut rng = StdRng::seed_from_u64(42 + scenario as u64);
    let mut live: Vec<usize> = (0..n).collect();
    for _ in 0..o.crashes.min(n.saturating_sub(2)) {
        let victim = live[rng.gen_range(1..live.len())];
        live.retain(|&i| i != victim);
        let killed = SystemTime::now();
        let begun = Instant::now();
        if let Some(mut child) = nodes.children[victim].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        crashed[victim] = Some(killed);
        let mut suspected: Option<f64> = None;
        let mut dead: Vec<Option<f64>> = vec![None; n];
        while live.iter().any(|&s| dead[s].is_none()) && begun.elapsed() < LIMIT {
            tokio::time::sleep(POLL).await;
            logs.read(|c, _| {
                count_false(&mut m, c, &crashed);
                if c.member != victim || c.at < killed {
                    return;
                }
                let at = since(killed, c.at);
                match c.state {
                    Seen::Alive => {}
                    Seen::Suspect => {
                        suspected.get_or_insert(at);
                    }
                    Seen::Dead | Seen::Left => {
                        suspected.get_or_insert(at);
                        dead[c.observer].get_or_insert(at);
                    }
                }
            });
        }
        let times: Vec<f64> = live.iter().filter_map(|&s| dead[s]).collect();
        if times.len() < live.len() {
            m.undetected += 1;
        }
        if let Some(first) = suspected {
            m.suspicion.push(first);
        }
        let last = times.iter().copied().fold(f64::NAN, f64::max);
        let first = times.iter().copied().fold(f64::NAN, f64::min);
        m.all_dead.push(last);
        m.spread.push(last - first);
        // Let the survivors settle before the next crash.
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    logs.read(|c, _| count_false(&mut m, c, &crashed));
    m.suspicion = sorted(m.suspicion);
    m.all_dead = sorted(m.all_dead);
    m.spread = sorted(m.spread);
    for v in [
        &mut m.cpu,
        &mut m.rss,
        &mut m.private,
        &mut m.packets,
        &mut m.bytes,
    ] {
        *v = sorted(std::mem::take(v));
    }
    drop(nodes);
    m
}

fn usable() -> Result<(), String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err("not root".to_owned());
    }
    net::run("ip", &["-V"], None)?;
    net::run("nft", &["--version"], None)?;
    Ok(())
}

#[tokio::main]
async fn main() {
    let o = options();
    if let Err(why) = usable() {
        println!("membership bench skipped: it needs root, ip and nft ({why})");
        return;
    }
    println!(
        "# membership over real processes: {} `shoal run` nodes in network namespaces, started \
         at once with one seed, {} crashes; machine: {}; load average before: {}",
        o.nodes,
        o.crashes,
        machine(),
        load_average()
    );
    // The nodes' data and logs: kept under `--logs DIR` for reading afterwards.
    let temporary = tempfile::tempdir().expect("a temporary directory");
    let root = o
        .logs
        .clone()
        .unwrap_or_else(|| temporary.path().to_owned());
    let ids = mint(&root, o.nodes);
    let mut results = Vec::new();
    for (scenario, &loss) in o.losses.iter().enumerate() {
        let m = measure(&o, scenario, loss, &ids, &root).await;
        results.push((loss, m));
    }
    let header: Vec<String> = results.iter().map(|(l, _)| format!("{l} % loss")).collect();
    println!("\n| n = {} | {} |", o.nodes, header.join(" | "));
    println!("|---|{}", "---|".repeat(results.len()));
    let row = |name: &str, cell: &dyn Fn(&Measured) -> String| {
        let cells: Vec<String> = results.iter().map(|(_, m)| cell(m)).collect();
        println!("| {name} | {} |", cells.join(" | "));
    };
    row(
        "every node lists every other alive, from the start: p50 / max s",
        &|m| median_and(&m.join, 1.0),
    );
    row(
        "… its first member (joined the seed): p50 / max s",
        &|m| median_and(&m.first, 1.0),
    );
    row(
        "… and has checked every other's identity proof: p50 / max s",
        &|m| median_and(&m.checked, 1.0),
    );
    row(
        "identity checks per node: scrypt evaluations / of them needed / CPU s, median (max)",
        &|m| {
            format!(
                "{:.0} / {:.0} / {:.2} ({:.0} / {:.0} / {:.2})",
                percentile(&m.evaluations, 0.5),
                percentile(&m.needed, 0.5),
                percentile(&m.proof_cpu, 0.5),
                percentile(&m.evaluations, 1.0),
                percentile(&m.needed, 1.0),
                percentile(&m.proof_cpu, 1.0)
            )
        },
    );
    row(
        "proof requests sent / proofs that came with news, per node, median (max)",
        &|m| {
            format!(
                "{:.0} / {:.0} ({:.0} / {:.0})",
                percentile(&m.asked, 0.5),
                percentile(&m.with_news, 0.5),
                percentile(&m.asked, 1.0),
                percentile(&m.with_news, 1.0)
            )
        },
    );
    row(
        "CPU of all nodes from the start until all checked all, s",
        &|m| format!("{:.1}", m.join_cpu),
    );
    row("crash → first suspicion p50 s", &|m| {
        format!("{:.2}", percentile(&m.suspicion, 0.5))
    });
    row(
        "crash → every survivor marks it dead, p50 / p99 s",
        &|m| median_and(&m.all_dead, 0.99),
    );
    row(
        "first survivor dead → every survivor dead, p50 / p99 s",
        &|m| median_and(&m.spread, 0.99),
    );
    row("crashes not marked dead by every survivor in 120 s", &|m| {
        m.undetected.to_string()
    });
    row(
        "suspicions / failures logged of live members, whole run",
        &|m| format!("{} / {}", m.false_suspicions, m.false_failures),
    );
    row("CPU of an idle member, median % of a core", &|m| {
        format!("{:.2}", percentile(&m.cpu, 0.5))
    });
    row("resident memory per node, median / max MiB", &|m| {
        format!(
            "{:.1} / {:.1}",
            percentile(&m.rss, 0.5),
            percentile(&m.rss, 1.0)
        )
    });
    row(
        "of which private (not shared with other nodes), median / max MiB",
        &|m| {
            format!(
                "{:.1} / {:.1}",
                percentile(&m.private, 0.5),
                percentile(&m.private, 1.0)
            )
        },
    );
    row("sent per node per s, median: packets / bytes", &|m| {
        format!(
            "{:.1} / {:.0}",
            percentile(&m.packets, 0.5),
            percentile(&m.bytes, 0.5)
        )
    });
    println!("load average after: {}", load_average());
}
