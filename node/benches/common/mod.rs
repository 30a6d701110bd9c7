//! What the benchmarks over real `shoal` processes share: a testnet started with `shoal testnet`,
//! JSON-RPC clients, percentiles, and what the machine and the processes used.

#![allow(dead_code)] // Each benchmark uses its own part.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use jsonrpsee::core::params::ObjectParams;
use jsonrpsee::http_client::{HttpClient, HttpClientBuilder};
use serde_json::Value;

pub(crate) const SHOAL: &str = env!("CARGO_BIN_EXE_shoal");

/// A running `shoal testnet`; dropping it stops every node.
pub(crate) struct Testnet {
    child: Child,
    /// Each node's JSON-RPC URL.
    pub(crate) urls: Vec<String>,
    /// Each node's process id.
    pub(crate) pids: Vec<u32>,
    _dir: tempfile::TempDir,
}

impl Drop for Testnet {
    fn drop(&mut self) {
        // SIGINT lets the testnet stop its nodes cleanly.
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

/// Starts `shoal testnet --nodes N` and waits for its ready line (every node sees every other
/// alive).
pub(crate) fn start_testnet(nodes: usize) -> Testnet {
    let dir = tempfile::tempdir().expect("temporary directory");
    let mut child = Command::new(SHOAL)
        .args(["testnet", "--nodes", &nodes.to_string(), "--dir"])
        .arg(dir.path())
        // Many nodes on a small machine take minutes to all see each other (each checks every
        // other's proof).
        .args(["--ready-timeout", "600"])
        .env("SHOAL_LOG", "warn")
        .stdout(Stdio::piped())
        // Why a testnet failed to start is told on stderr.
        .stderr(Stdio::inherit())
        .spawn()
        .expect("shoal testnet starts");
    let stdout = child.stdout.take().expect("piped stdout");
    let (mut urls, mut pids) = (Vec::new(), Vec::new());
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("utf-8 output");
        let words: Vec<&str> = line.split_whitespace().collect();
        if let Some(url) = words.iter().find(|w| w.starts_with("http://")) {
            urls.push(url.to_string());
            let pid = words
                .iter()
                .position(|w| *w == "pid")
                .and_then(|i| words.get(i + 1))
                .and_then(|p| p.parse().ok())
                .expect("a pid on each node line");
            pids.push(pid);
        }
        if line.contains("ready") {
            break;
        }
    }
    assert_eq!(urls.len(), nodes, "every node reported");
    Testnet {
        child,
        urls,
        pids,
        _dir: dir,
    }
}

/// A JSON-RPC client of `url`.
pub(crate) fn client(url: &str) -> HttpClient {
    HttpClientBuilder::default()
        .request_timeout(Duration::from_secs(30))
        .build(url)
        .expect("valid URL")
}

/// Named params.
pub(crate) fn params(pairs: &[(&str, Value)]) -> ObjectParams {
    let mut p = ObjectParams::new();
    for (k, v) in pairs {
        p.insert(k, v).expect("JSON values serialize");
    }
    p
}

/// The value after `name` on the command line (`--name value`), if any.
pub(crate) fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

/// The `p` quantile of `sorted` (nearest rank), `None` when it is empty.
pub(crate) fn quantile<T: Copy>(sorted: &[T], p: f64) -> Option<T> {
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len().max(1)) - 1;
    sorted.get(i).copied()
}

/// The `p` quantile of `sorted`, in milliseconds (nearest rank).
pub(crate) fn percentile(sorted: &[Duration], p: f64) -> f64 {
    quantile(sorted, p).map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0)
}

/// Resident memory of process `pid`, in MiB.
pub(crate) fn rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// CPU time (user and system) process `pid` used so far, in seconds.
pub(crate) fn cpu_secs(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the command name (which may hold spaces), from the third: utime and stime
    // are the 14th and 15th fields, in clock ticks.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i).and_then(|f| f.parse::<f64>().ok()))
        .sum();
    ticks / clock_ticks()
}

fn clock_ticks() -> f64 {
    // SAFETY: sysconf only reads a system constant.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as f64 } else { 100.0 }
}

/// The CPU model and core count, from `/proc/cpuinfo`.
pub(crate) fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpu
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .unwrap_or("unknown")
        .trim()
        .to_owned();
    let cores = cpu.lines().filter(|l| l.starts_with("processor")).count();
    format!("{model}, {cores} cores")
}

/// The 1-minute load average, from `/proc/loadavg`.
pub(crate) fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "unknown".to_owned())
}
