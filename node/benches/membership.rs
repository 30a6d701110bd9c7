//! Membership over real processes: how fast `shoal run` nodes started together see each other,
//! how fast survivors mark a crashed node dead, and what an idle member costs, in network
//! namespaces with random loss.
//!
//! `cargo bench -p shoal-node --bench membership` (root, `ip` and `nft` needed; the chaos
//! suite's network: one namespace per node on a bridge, loss as `nft` random drop of packets
//! between nodes). For each loss rate: `n` nodes (testnet preset: SWIM probe 1 s, timeout
//! 500 ms) are started at once, node 0 with no seed and every other with node 0 as its only
//! seed; every 100 ms each node's `swim_members` is read, and the time from the start until each
//! node lists every other alive is kept. Once all have checked all and `settle` more seconds passed, a
//! quiet window measures each node's CPU, resident memory and the packets and bytes it sends
//! (its interface's counters, nothing polled meanwhile). Then `crashes` times a random live node other than the seed is SIGKILLed
//! and the survivors are read every 100 ms until each marks it dead: the first suspicion by any
//! survivor, the time until every survivor marked it dead, and the spread between the first and
//! the last. Live members any survivor marked dead are counted as false failures. The join rows
//! also give the time until each node has checked every other's identity proof (a member is
//! listed before its check ends, and the DHT uses it only after), the scrypt evaluations each
//! node ran and their CPU time, and the CPU of all nodes until all checked all.
//!
//! Options after `--`: `--nodes N` (20), `--loss 0,10` (percent), `--crashes N` (10),
//! `--settle S` (10), `--window S` (20). Under `cargo test --benches` it runs 3 nodes, no loss,
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
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chaos::cluster::{Identity, P2P_PORT, RPC_PORT, TOKEN, call, clients, mint};
use chaos::net::{self, Fault, Net};
use chaos::observe::{Seen, parse};
use common::{arg, cpu_secs, load_average, machine};
use jsonrpsee::http_client::HttpClient;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;
use shoal_node::config::{Config, LogConfig, Network, P2pConfig};
use shoal_node::init;
use shoal_node::rpc::RpcConfig;

const SHOAL: &str = env!("CARGO_BIN_EXE_shoal");
/// How often every node's member list is read.
const POLL: Duration = Duration::from_millis(100);
/// Longest wait for all to see all, or for survivors to mark a crash dead.
const LIMIT: Duration = Duration::from_secs(120);

struct Options {
    nodes: usize,
    losses: Vec<u8>,
    crashes: usize,
    settle: Duration,
    window: Duration,
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
    }
}

/// Every listed node's member list, read at once (`None` for a node that did not answer), with
/// how many of its members wait for their identity check.
async fn read_all(
    clients: &[HttpClient],
    which: &[usize],
    peers: &[String],
) -> Vec<Option<(HashMap<usize, Seen>, usize)>> {
    let reads = which.iter().map(|&i| async move {
        let v = call(&clients[i], "swim_members", Value::Null).await.ok()?;
        let unchecked = v.as_array().map_or(0, |members| {
            members
                .iter()
                .filter(|m| m["verified"] == Value::Bool(false))
                .count()
        });
        parse(&v, peers).map(|seen| (seen, unchecked))
    });
    futures::future::join_all(reads).await
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

/// Resident memory of a process, MiB.
fn rss_mib(pid: u32) -> f64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(f64::total_cmp);
    v
}

/// What one loss rate measured.
#[derive(Default)]
struct Measured {
    /// Seconds from the start until each node listed every other alive.
    join: Vec<f64>,
    /// Seconds from the start until each node had also checked every other's identity proof.
    checked: Vec<f64>,
    /// Per node, once all checked: scrypt evaluations, the checks something waited on, and the
    /// evaluations' CPU seconds.
    evaluations: Vec<f64>,
    needed: Vec<f64>,
    proof_cpu: Vec<f64>,
    /// CPU seconds of all nodes together from the start until every node checked every other.
    join_cpu: f64,
    /// Per node over the window: CPU share of a core, RSS MiB, packets/s, bytes/s.
    cpu: Vec<f64>,
    rss: Vec<f64>,
    packets: Vec<f64>,
    bytes: Vec<f64>,
    /// Per crash: first suspicion, every survivor dead, first dead to last dead (seconds).
    suspicion: Vec<f64>,
    all_dead: Vec<f64>,
    spread: Vec<f64>,
    /// Crashes some survivor had not marked dead within the limit.
    undetected: usize,
    /// (observer, member) pairs where a live member was marked dead.
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
            rpc: RpcConfig {
                listen: format!("{}:{RPC_PORT}", net.addrs[i])
                    .parse()
                    .expect("an address"),
                auth_token: Some(TOKEN.to_owned()),
                ..RpcConfig::default()
            },
            log: LogConfig {
                level: "warn".to_owned(),
                ..LogConfig::default()
            },
            ..Config::default()
        };
        config.validate().expect("a valid config");
        let path = init::write_config(&data_dir, &config, true)
            .expect("writing the config")
            .expect("written");
        let log = fs::File::create(data_dir.join("node.log")).expect("a log file");
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
    // All at once; `ip netns exec` execs shoal, so each child's pid is the node's.
    let start = Instant::now();
    let mut nodes = Nodes {
        children: commands
            .iter_mut()
            .map(|c| Some(c.spawn().expect("starting shoal")))
            .collect(),
    };
    let all: Vec<usize> = (0..n).collect();
    let mut joined: Vec<Option<f64>> = vec![None; n];
    let mut checked: Vec<Option<f64>> = vec![None; n];
    while checked.iter().any(Option::is_none) && start.elapsed() < LIMIT {
        let tick = tokio::time::sleep(POLL);
        let views = read_all(&clients, &all, &peers).await;
        let at = start.elapsed().as_secs_f64();
        for (i, view) in views.iter().enumerate() {
            let Some((view, unchecked)) = view else {
                continue;
            };
            let alive = view
                .iter()
                .filter(|(j, s)| **j != i && **s == Seen::Alive)
                .count();
            if alive == n - 1 {
                joined[i].get_or_insert(at);
                if *unchecked == 0 {
                    checked[i].get_or_insert(at);
                }
            }
        }
        tick.await;
    }
    let pids: Vec<u32> = nodes.children.iter().flatten().map(Child::id).collect();
    m.join_cpu = pids.iter().map(|p| cpu_secs(*p)).sum();
    let infinite =
        |v: &[Option<f64>]| sorted(v.iter().map(|j| j.unwrap_or(f64::INFINITY)).collect());
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
        }
    }
    m.evaluations = sorted(std::mem::take(&mut m.evaluations));
    m.needed = sorted(std::mem::take(&mut m.needed));
    m.proof_cpu = sorted(std::mem::take(&mut m.proof_cpu));

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
    }

    let mut rng = StdRng::seed_from_u64(42 + scenario as u64);
    let mut live: Vec<usize> = (0..n).collect();
    for _ in 0..o.crashes.min(n.saturating_sub(2)) {
        let victim = live[rng.gen_range(1..live.len())];
        live.retain(|&i| i != victim);
        if let Some(mut child) = nodes.children[victim].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let crashed = Instant::now();
        let mut suspected: Option<f64> = None;
        let mut dead: Vec<Option<f64>> = vec![None; n];
        while live.iter().any(|&s| dead[s].is_none()) && crashed.elapsed() < LIMIT {
            let tick = tokio::time::sleep(POLL);
            let views = read_all(&clients, &live, &peers).await;
            let at = crashed.elapsed().as_secs_f64();
            for (&s, view) in live.iter().zip(&views) {
                let Some((view, _)) = view else { continue };
                match view.get(&victim) {
                    Some(Seen::Alive) => {}
                    Some(Seen::Suspect) => {
                        suspected.get_or_insert(at);
                    }
                    Some(Seen::Dead | Seen::Left) | None => {
                        suspected.get_or_insert(at);
                        dead[s].get_or_insert(at);
                    }
                }
                m.false_failures += live
                    .iter()
                    .filter(|&&p| p != s && matches!(view.get(&p), Some(Seen::Dead | Seen::Left)))
                    .count();
            }
            tick.await;
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
    m.suspicion = sorted(m.suspicion);
    m.all_dead = sorted(m.all_dead);
    m.spread = sorted(m.spread);
    for v in [&mut m.cpu, &mut m.rss, &mut m.packets, &mut m.bytes] {
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
    let root = tempfile::tempdir().expect("a temporary directory");
    let ids = mint(root.path(), o.nodes);
    let mut results = Vec::new();
    for (scenario, &loss) in o.losses.iter().enumerate() {
        let m = measure(&o, scenario, loss, &ids, root.path()).await;
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
        &|m| {
            format!(
                "{:.2} / {:.2}",
                percentile(&m.join, 0.5),
                percentile(&m.join, 1.0)
            )
        },
    );
    row(
        "… and has checked every other's identity proof: p50 / max s",
        &|m| {
            format!(
                "{:.2} / {:.2}",
                percentile(&m.checked, 0.5),
                percentile(&m.checked, 1.0)
            )
        },
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
        "CPU of all nodes from the start until all checked all, s",
        &|m| format!("{:.1}", m.join_cpu),
    );
    row("crash → first suspicion p50 s", &|m| {
        format!("{:.2}", percentile(&m.suspicion, 0.5))
    });
    row(
        "crash → every survivor marks it dead, p50 / p99 s",
        &|m| {
            format!(
                "{:.2} / {:.2}",
                percentile(&m.all_dead, 0.5),
                percentile(&m.all_dead, 0.99)
            )
        },
    );
    row(
        "first survivor dead → every survivor dead, p50 / p99 s",
        &|m| {
            format!(
                "{:.2} / {:.2}",
                percentile(&m.spread, 0.5),
                percentile(&m.spread, 0.99)
            )
        },
    );
    row("crashes not marked dead by every survivor in 120 s", &|m| {
        m.undetected.to_string()
    });
    row("live members marked dead (observations)", &|m| {
        m.false_failures.to_string()
    });
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
    row("sent per node per s, median: packets / bytes", &|m| {
        format!(
            "{:.1} / {:.0}",
            percentile(&m.packets, 0.5),
            percentile(&m.bytes, 0.5)
        )
    });
    println!("load average after: {}", load_average());
}
