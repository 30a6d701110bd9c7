//! The test network: one network namespace per node, joined by veth pairs to a bridge in a hub
//! namespace, plus one veth pair from the bridge to the host so the test process reaches every
//! node's JSON-RPC. Faults are `nft` rules in the nodes' namespaces.
//!
//! Why a namespace per node and not one namespace with many `127.0.0.x` addresses: a TCP
//! connection to `127.0.0.x` from a socket bound to `0.0.0.0` (what libp2p's TCP transport
//! does) always gets source address `127.0.0.1`, so a rule could not tell which node sent a
//! packet, and partitions could not be drawn by address. With a namespace per node, each node's
//! packets carry its own address.
//!
//! Addresses: the subnet is `10.77.X.0/24` with `X` chosen free on the host; the host end is
//! `10.77.X.1`, node `i` (from 0) is `10.77.X.(10 + i)`. Nothing is routed anywhere else: the
//! namespaces have no default route and the host only gains a route to this `/24`.
//!
//! [`Net`] deletes every namespace and link it made when dropped, even on panic.

use std::io::Write;
use std::process::{Command, Stdio};

/// A fault injected with nft rules (node indexes from 0).
#[derive(Debug, Clone)]
pub(crate) enum Fault {
    /// Every packet between two nodes is dropped with this probability, in percent.
    Loss(u8),
    /// No packet crosses between the two groups, either way.
    Partition(Vec<usize>, Vec<usize>),
    /// Packets from the first group to the second are dropped; the other direction works.
    OneWay(Vec<usize>, Vec<usize>),
}

/// The namespaces, links and addresses of one scenario.
#[derive(Debug)]
pub(crate) struct Net {
    /// The hub namespace (the bridge).
    hub: String,
    /// Each node's namespace.
    pub(crate) node_ns: Vec<String>,
    /// Each node's address.
    pub(crate) addrs: Vec<String>,
    /// What was made, deleted on drop.
    made: Made,
}

/// Gives `dev` in namespace `ns` the address `cidr` and brings it up.
pub(crate) fn address(ns: &str, dev: &str, cidr: &str) -> Result<(), String> {
    ip(&["-n", ns, "addr", "add", cidr, "dev", dev])?;
    ip(&["-n", ns, "link", "set", dev, "up"])
}

/// Plugs namespace `ns` into bridge `bridge` of namespace `hub`: a veth pair whose end `port`
/// is on the bridge and whose end `dev`, in `ns`, gets the address `cidr`.
pub(crate) fn plug(
    hub: &str,
    bridge: &str,
    port: &str,
    ns: &str,
    dev: &str,
    cidr: &str,
) -> Result<(), String> {
    ip(&[
        "-n", hub, "link", "add", port, "type", "veth", "peer", "name", dev, "netns", ns,
    ])?;
    ip(&["-n", hub, "link", "set", port, "master", bridge, "up"])?;
    address(ns, dev, cidr)
}

/// The namespaces a test network made and the host's end of its link to them: all deleted on
/// drop, even on panic (the host end goes with its peer; deleting it again covers a partial
/// setup).
#[derive(Debug)]
pub(crate) struct Made {
    host_if: String,
    namespaces: Vec<String>,
}

impl Made {
    /// Nothing made yet; `host_if` names the host's end of the link, made by the caller.
    pub(crate) fn new(host_if: String) -> Self {
        Self {
            host_if,
            namespaces: Vec::new(),
        }
    }

    /// The host's end of the link.
    pub(crate) fn host_if(&self) -> &str {
        &self.host_if
    }

    /// Makes namespace `name`, with its loopback up.
    pub(crate) fn namespace(&mut self, name: &str) -> Result<(), String> {
        ip(&["netns", "add", name])?;
        self.namespaces.push(name.to_owned());
        ip(&["-n", name, "link", "set", "lo", "up"])
    }
}

impl Drop for Made {
    fn drop(&mut self) {
        for ns in self.namespaces.iter().rev() {
            if let Err(e) = ip(&["netns", "del", ns]) {
                eprintln!("test network cleanup: {e}");
            }
        }
        let _ = ip(&["link", "del", &self.host_if]);
    }
}

/// Runs a command; `Err` carries its stderr.
pub(crate) fn run(program: &str, args: &[&str], stdin: Option<&str>) -> Result<String, String> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{program}: {e}"))?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes())
            .map_err(|e| format!("{program} stdin: {e}"))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("{program}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "`{program} {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

pub(crate) fn ip(args: &[&str]) -> Result<(), String> {
    run("ip", args, None).map(|_| ())
}

/// Why this machine cannot build test networks, if it cannot: the suites that do need root,
/// `ip` (iproute2) and `nft` (nftables).
pub(crate) fn preflight() -> Result<(), String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err("it must run as root (it creates network namespaces)".to_owned());
    }
    run("ip", &["-V"], None).map_err(|e| format!("`ip` (iproute2) is needed: {e}"))?;
    run("nft", &["--version"], None).map_err(|e| format!("`nft` (nftables) is needed: {e}"))?;
    Ok(())
}

/// A `/24` of `10.77.0.0/16` no host interface uses, starting the search at `hint`.
fn free_subnet(hint: u32) -> Result<u8, String> {
    let used = run("ip", &["-4", "-o", "addr", "show"], None)?;
    (0..256u32)
        .map(|i| ((hint + i * 37) % 256) as u8)
        .find(|x| !used.contains(&format!("10.77.{x}.")))
        .ok_or_else(|| "no free 10.77.X.0/24 subnet on this host".to_owned())
}

impl Net {
    /// Makes the namespaces for `nodes` nodes of scenario `scenario` of this process.
    pub(crate) fn create(scenario: usize, nodes: usize) -> Result<Self, String> {
        room_for_neighbours(nodes)?;
        let pid = std::process::id();
        let x = free_subnet(pid.wrapping_mul(7).wrapping_add(scenario as u32))?;
        let prefix = format!("shc-{pid}-{scenario}");
        let mut net = Net {
            hub: format!("{prefix}-hub"),
            node_ns: (0..nodes).map(|i| format!("{prefix}-n{i}")).collect(),
            addrs: (0..nodes)
                .map(|i| format!("10.77.{x}.{}", 10 + i))
                .collect(),
            // Interface names are at most 15 bytes: "shc" + pid (<= 7 digits) + "x" + scenario.
            made: Made::new(format!("shc{pid}x{scenario}")),
        };
        let hub = net.hub.clone();
        net.made.namespace(&hub)?;
        ip(&["-n", &hub, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &hub, "link", "set", "br0", "up"])?;
        let host_if = net.made.host_if().to_owned();
        ip(&[
            "link", "add", &host_if, "type", "veth", "peer", "name", "up0", "netns", &hub,
        ])?;
        ip(&["-n", &hub, "link", "set", "up0", "master", "br0", "up"])?;
        ip(&["addr", "add", &format!("10.77.{x}.1/24"), "dev", &host_if])?;
        ip(&["link", "set", &host_if, "up"])?;
        for i in 0..nodes {
            let ns = net.node_ns[i].clone();
            net.made.namespace(&ns)?;
            let cidr = format!("{}/24", net.addrs[i]);
            plug(&hub, "br0", &format!("p{i}"), &ns, "eth0", &cidr)?;
        }
        Ok(net)
    }

    /// Installs `fault` (replacing any earlier one).
    pub(crate) fn inject(&self, fault: &Fault) -> Result<(), String> {
        self.clear()?;
        let set = |nodes: &[usize]| {
            let addrs: Vec<&str> = nodes.iter().map(|&i| self.addrs[i].as_str()).collect();
            format!("{{ {} }}", addrs.join(", "))
        };
        let mut rules: Vec<Vec<String>> = vec![Vec::new(); self.addrs.len()];
        match fault {
            Fault::Loss(percent) => {
                for (i, r) in rules.iter_mut().enumerate() {
                    let others: Vec<usize> = (0..self.addrs.len()).filter(|&j| j != i).collect();
                    // Only node-to-node packets: the host's RPC traffic is never dropped.
                    r.push(format!(
                        "ip saddr {} numgen random mod 100 < {percent} counter drop",
                        set(&others)
                    ));
                }
            }
            Fault::Partition(a, b) => {
                for &i in a {
                    rules[i].push(format!("ip saddr {} counter drop", set(b)));
                }
                for &i in b {
                    rules[i].push(format!("ip saddr {} counter drop", set(a)));
                }
            }
            Fault::OneWay(from, to) => {
                for &i in to {
                    rules[i].push(format!("ip saddr {} counter drop", set(from)));
                }
            }
        }
        for (i, r) in rules.iter().enumerate() {
            if r.is_empty() {
                continue;
            }
            let script = format!(
                "table inet chaos {{\n  chain input {{\n    type filter hook input priority 0; \
                 policy accept;\n    {}\n  }}\n}}\n",
                r.join("\n    ")
            );
            run(
                "ip",
                &["netns", "exec", &self.node_ns[i], "nft", "-f", "-"],
                Some(&script),
            )?;
        }
        Ok(())
    }

    /// Packets the current fault's rules dropped so far, in every namespace.
    pub(crate) fn dropped(&self) -> u64 {
        let mut total = 0;
        for ns in &self.node_ns {
            // No table (no fault in this namespace) counts nothing.
            let Ok(text) = run(
                "ip",
                &["netns", "exec", ns, "nft", "list", "table", "inet", "chaos"],
                None,
            ) else {
                continue;
            };
            let words: Vec<&str> = text.split_whitespace().collect();
            total += words
                .windows(2)
                .filter(|w| w[0] == "packets")
                .filter_map(|w| w[1].parse::<u64>().ok())
                .sum::<u64>();
        }
        total
    }

    /// Removes every fault.
    pub(crate) fn clear(&self) -> Result<(), String> {
        for ns in &self.node_ns {
            // Declaring the table first makes the delete succeed whether or not it existed.
            run(
                "ip",
                &["netns", "exec", ns, "nft", "-f", "-"],
                Some("table inet chaos\ndelete table inet chaos\n"),
            )?;
        }
        Ok(())
    }
}

/// Makes the kernel's neighbour (ARP) table big enough for `nodes` that each talk to every other.
/// The table is one for all namespaces, 1,024 entries by default: past its limit a new
/// neighbour is not resolved and packets to it are dropped, so at 50 nodes (2,550 pairs) dials
/// stayed in SYN-SENT and SWIM suspected live members by the hundred ("neighbor table overflow"
/// in the kernel log). The limits are raised for this machine, never lowered; where they cannot
/// be (a read-only `/proc/sys`), a warning says so and the network is made anyway.
fn room_for_neighbours(nodes: usize) -> Result<(), String> {
    // Each node's neighbours plus the host's, twice over for a second network alive meanwhile,
    // above the default's room for the rest of the machine.
    let needed = 2 * nodes * (nodes + 1) + 1024;
    for (name, want) in [("gc_thresh2", needed), ("gc_thresh3", 2 * needed)] {
        let path = format!("/proc/sys/net/ipv4/neigh/default/{name}");
        let now: usize = std::fs::read_to_string(&path)
            .map_err(|e| format!("{path}: {e}"))?
            .trim()
            .parse()
            .map_err(|e| format!("{path}: {e}"))?;
        if now < want
            && let Err(e) = std::fs::write(&path, want.to_string())
        {
            // A small network fits the default; a large one says why it may not converge.
            eprintln!(
                "cannot raise {path} from {now} to {want} ({e}): {nodes} nodes may overflow it"
            );
        }
    }
    Ok(())
}
