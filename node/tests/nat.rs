//! NAT traversal with real `shoal` processes in network namespaces.
//!
//! The network: a public segment (a bridge) with three public nodes, and five home networks,
//! each one node behind a router namespace that masquerades its traffic with nft. Three routers
//! map ports the way Linux does by default (a connection from the node's port keeps that port:
//! the "cone" NATs of most home routers, filtering what does not answer a connection the node
//! opened); one maps each connection to a random port (`masquerade random`, a symmetric NAT);
//! one is a cone NAT that also offers UPnP (Debian's `miniupnpd`), and its node has `p2p.upnp`
//! on. The first and third cone-NAT routers also drop what their nodes send to each other
//! until step 7 (a firewall rule). A management network, on which only the JSON-RPC
//! listens, lets the test reach every node; peers never learn those addresses.
//!
//! What is checked, each within a stated bound: every public node finds it is public and every
//! home node that it is private and holds relay reservations, except the UPnP node, which finds
//! it is public through its mapped port and holds none; every node lists every other alive;
//! every node reaches the UPnP node directly; two cone-NAT nodes end up with a direct connection
//! (hole punched through both NATs) while the symmetric-NAT node stays reachable through
//! relays; a value put through one home node is read through the others; a lockstep
//! announcement through the symmetric-NAT node is kept by every node, the cone-NAT nodes
//! reached through relays; killing a relay of a home node moves it to another relay; the hole
//! punch the firewall rule failed is retried once the rule is lifted, and succeeds. The printed
//! table gives the time from start to reachable, the fraction of node pairs connected directly,
//! and get latencies through direct and relayed connections.
//!
//! Needs root, `ip` (iproute2), `nft` (nftables) and `miniupnpd` (Debian's
//! `miniupnpd-nftables`), all installed by `.ci/install-deps`; `SHOAL_CHAOS=skip` skips it (as
//! `scripts/test` does when not root). Logs are kept in the printed directory on failure, or
//! always with `SHOAL_CHAOS_KEEP=1`.

#[allow(dead_code)]
mod chaos {
    pub(crate) mod cluster;
    pub(crate) mod net;
}

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chaos::cluster::{self, Identity, P2P_PORT, call, clients};
use chaos::net::{Made, address, ip, plug, preflight, run};
use jsonrpsee::http_client::HttpClient;
use serde_json::{Value, json};
use shoal_node::config::{Config, LogConfig, Network, P2pConfig};
use shoal_node::init;

/// Bound of the start: every node knows its reachability, home nodes hold a reservation, and
/// every node lists every other alive.
const START_BOUND: Duration = Duration::from_secs(60);
/// Bound of the hole punch between the two cone-NAT nodes, after the start.
const PUNCH_BOUND: Duration = Duration::from_secs(45);
/// Bound of a home node's move to another relay after one of its relays is killed.
const MOVE_BOUND: Duration = Duration::from_secs(30);
/// Bound of every other node's direct connection to the UPnP node, after the start.
const UPNP_BOUND: Duration = Duration::from_secs(30);
/// Seconds before a failed hole punch is retried (60 by default), so that step 7's retry comes
/// within the test's time.
const PUNCH_RETRY_SECS: u64 = 5;
/// Bound of the direct connection after the firewall rule that failed a punch is lifted: a
/// retry's punch can fail too (each takes up to three 8 s attempts), and the next retry waits
/// twice as long.
const RETRY_BOUND: Duration = Duration::from_secs(75);
/// Two cone-NAT nodes whose routers drop what their nodes send to the other's public address
/// until step 7, so that their first hole punch fails.
const PUNCH_BLOCKED: (usize, usize) = (7, 3);
/// Debian's UPnP gateway daemon (package `miniupnpd-nftables`).
const MINIUPNPD: &str = "/usr/sbin/miniupnpd";
/// Gets timed per kind of path.
const GETS: usize = 10;

/// How a node meets the public segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Site {
    /// On the public segment.
    Public,
    /// Behind a router that keeps the node's source port (a cone NAT).
    Cone,
    /// Behind a router that maps each connection to a random port (a symmetric NAT).
    Symmetric,
    /// Behind a cone NAT whose router offers UPnP (Debian's `miniupnpd`); the node maps its
    /// port there (`p2p.upnp = true`).
    Upnp,
}

const SITES: [Site; 8] = [
    Site::Public,
    Site::Public,
    Site::Public,
    Site::Cone,
    Site::Cone,
    Site::Symmetric,
    Site::Upnp,
    Site::Cone,
];

/// The UPnP router's firewall: what [`Site::Cone`]'s does, plus the chains `miniupnpd` (nftables
/// build, its default table and chain names) fills with a port mapping's forward and
/// destination NAT rules.
const UPNP_RULES: &str = "table inet filter {
  chain forward {
    type filter hook forward priority 0; policy accept;
    jump miniupnpd
  }
  chain miniupnpd {
  }
  chain prerouting {
    type nat hook prerouting priority dstnat; policy accept;
    jump prerouting_miniupnpd
  }
  chain prerouting_miniupnpd {
  }
  chain postrouting {
    type nat hook postrouting priority srcnat; policy accept;
    jump postrouting_miniupnpd
    oifname \"wan\" masquerade
  }
  chain postrouting_miniupnpd {
  }
  chain input {
    type filter hook input priority 0; policy accept;
    iifname \"wan\" ct state new drop
  }
}
";

/// `miniupnpd`'s configuration: the gateway's outside and inside interfaces, and mappings
/// only for the home network's own hosts, each to its own address.
fn miniupnpd_config(home: &str) -> String {
    format!(
        "ext_ifname=wan\nlistening_ip=lan\nport=0\nenable_upnp=yes\nenable_natpmp=no\n\
         secure_mode=yes\nsystem_uptime=yes\nuuid=5e0a1c2d-3b4f-4a6b-8c7d-9e0f1a2b3c4d\n\
         allow 1024-65535 {home}.0/24 1024-65535\ndeny 0-65535 0.0.0.0/0 0-65535\n"
    )
}

fn in_ns(ns: &str, program: &str, args: &[&str], stdin: Option<&str>) -> Result<String, String> {
    let mut all = vec!["netns", "exec", ns, program];
    all.extend_from_slice(args);
    run("ip", &all, stdin)
}

/// The namespaces and links; all deleted on drop.
#[derive(Debug)]
struct Topology {
    made: Made,
    /// Each node's namespace.
    node_ns: Vec<String>,
    /// Each node's p2p address (on the public segment, or in its home network).
    p2p: Vec<String>,
    /// Each node's management address (JSON-RPC only).
    mgmt: Vec<String>,
    /// Each node's router namespace (`None` on the public segment).
    router: Vec<Option<String>>,
    /// The routers that offer UPnP: namespace and home network prefix.
    upnp_routers: Vec<(String, String)>,
}

impl Topology {
    /// Public segment `11.78.X.0/24` (a global range, as a real public network's would be; it
    /// is routed nowhere but between these namespaces), management `10.79.X.0/24` (the host
    /// end is `.1`), home networks `192.168.(10 + i).0/24`.
    fn create() -> Result<Self, String> {
        let pid = std::process::id();
        let used = run("ip", &["-4", "-o", "addr", "show"], None)?;
        let x = (0..256u32)
            .map(|i| ((pid + i * 37) % 256) as u8)
            .find(|x| !used.contains(&format!("10.79.{x}.")))
            .ok_or("no free 10.79.X.0/24 subnet")?;
        let prefix = format!("shn-{pid}");
        let mut t = Topology {
            made: Made::new(format!("shn{pid}")),
            node_ns: Vec::new(),
            p2p: Vec::new(),
            mgmt: Vec::new(),
            router: Vec::new(),
            upnp_routers: Vec::new(),
        };
        let hub = format!("{prefix}-hub");
        t.made.namespace(&hub)?;
        for br in ["br0", "br1"] {
            ip(&["-n", &hub, "link", "add", br, "type", "bridge"])?;
            ip(&["-n", &hub, "link", "set", br, "up"])?;
        }
        let host_if = t.made.host_if().to_owned();
        ip(&[
            "link", "add", &host_if, "type", "veth", "peer", "name", "host", "netns", &hub,
        ])?;
        ip(&["-n", &hub, "link", "set", "host", "master", "br1", "up"])?;
        ip(&["addr", "add", &format!("10.79.{x}.1/24"), "dev", &host_if])?;
        ip(&["link", "set", &host_if, "up"])?;
        for (i, site) in SITES.iter().enumerate() {
            let ns = format!("{prefix}-n{i}");
            t.made.namespace(&ns)?;
            // Management: a port on br1.
            let mgmt = format!("10.79.{x}.{}", 10 + i);
            plug(
                &hub,
                "br1",
                &format!("m{i}"),
                &ns,
                "mgmt",
                &format!("{mgmt}/24"),
            )?;
            t.mgmt.push(mgmt);
            let wan_port = format!("p{i}");
            match site {
                Site::Public => {
                    let addr = format!("11.78.{x}.{}", 10 + i);
                    plug(&hub, "br0", &wan_port, &ns, "eth0", &format!("{addr}/24"))?;
                    t.p2p.push(addr);
                    t.router.push(None);
                }
                Site::Cone | Site::Symmetric | Site::Upnp => {
                    let router = format!("{prefix}-r{i}");
                    t.made.namespace(&router)?;
                    let wan = format!("11.78.{x}.{}/24", 30 + i);
                    plug(&hub, "br0", &wan_port, &router, "wan", &wan)?;
                    ip(&[
                        "-n", &router, "link", "add", "lan", "type", "veth", "peer", "name",
                        "eth0", "netns", &ns,
                    ])?;
                    let home = format!("192.168.{}", 10 + i);
                    address(&router, "lan", &format!("{home}.1/24"))?;
                    address(&ns, "eth0", &format!("{home}.2/24"))?;
                    ip(&[
                        "-n",
                        &ns,
                        "route",
                        "add",
                        "default",
                        "via",
                        &format!("{home}.1"),
                    ])?;
                    in_ns(
                        &router,
                        "sh",
                        &["-c", "echo 1 > /proc/sys/net/ipv4/ip_forward"],
                        None,
                    )?;
                    let random = if *site == Site::Symmetric {
                        " random"
                    } else {
                        ""
                    };
                    // Like a home router: it masquerades what goes out, and its firewall drops
                    // connections from outside that nobody inside asked for (instead of
                    // answering them with a reset, which would also end the mapping a hole
                    // punch is opening from the other side).
                    let rules = if *site == Site::Upnp {
                        UPNP_RULES.to_owned()
                    } else {
                        format!(
                            "table ip nat {{\n  chain post {{\n    type nat hook postrouting \
                             priority srcnat; policy accept;\n    oifname \"wan\" \
                             masquerade{random}\n  }}\n}}\ntable inet filter {{\n  chain input \
                             {{\n    type filter hook input priority 0; policy accept;\n    \
                             iifname \"wan\" ct state new drop\n  }}\n}}\n"
                        )
                    };
                    in_ns(&router, "nft", &["-f", "-"], Some(&rules))?;
                    // The firewall rule of step 7, on both routers, in front of their
                    // connection tracking (priority raw): a dropped punch leaves no half-open
                    // entry behind on either side.
                    let (late, blocked) = PUNCH_BLOCKED;
                    if i == late || i == blocked {
                        let other = format!("11.78.{x}.{}", 30 + (late + blocked - i));
                        let block = format!(
                            "table inet punchblock {{\n  chain pre {{\n    type filter hook \
                             prerouting priority raw; policy accept;\n    iifname \"lan\" ip \
                             daddr {other} drop\n  }}\n}}\n"
                        );
                        in_ns(&router, "nft", &["-f", "-"], Some(&block))?;
                    }
                    if *site == Site::Upnp {
                        t.upnp_routers.push((router.clone(), home.clone()));
                    }
                    t.p2p.push(format!("{home}.2"));
                    t.router.push(Some(router.clone()));
                }
            }
            t.node_ns.push(ns);
        }
        Ok(t)
    }
}

/// The UPnP daemons of the routers that offer it; killed on drop.
struct Gateways(Vec<Child>);

impl Gateways {
    fn start(t: &Topology, root: &Path) -> Result<Self, String> {
        let mut gateways = Gateways(Vec::new());
        for (k, (router, home)) in t.upnp_routers.iter().enumerate() {
            let config = root.join(format!("miniupnpd-{k}.conf"));
            fs::write(&config, miniupnpd_config(home)).map_err(|e| e.to_string())?;
            let log = fs::File::create(root.join(format!("miniupnpd-{k}.log")))
                .map_err(|e| e.to_string())?;
            let child = Command::new("ip")
                .args(["netns", "exec", router, MINIUPNPD, "-d", "-f"])
                .arg(&config)
                .arg("-P")
                .arg(root.join(format!("miniupnpd-{k}.pid")))
                .stdin(Stdio::null())
                .stdout(log.try_clone().map_err(|e| e.to_string())?)
                .stderr(log)
                .spawn()
                .map_err(|e| format!("starting {MINIUPNPD}: {e}"))?;
            gateways.0.push(child);
        }
        Ok(gateways)
    }
}

impl Drop for Gateways {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The processes; killed on drop.
struct Nodes {
    children: Vec<Option<Child>>,
    dirs: Vec<PathBuf>,
}

impl Drop for Nodes {
    fn drop(&mut self) {
        for child in self.children.iter_mut().flatten() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Nodes {
    fn start(t: &Topology, ids: &[Identity], root: &Path) -> Self {
        let publics: Vec<usize> = (0..SITES.len())
            .filter(|&i| SITES[i] == Site::Public)
            .collect();
        let mut nodes = Nodes {
            children: Vec::new(),
            dirs: Vec::new(),
        };
        for (i, id) in ids.iter().enumerate() {
            let dir = root.join(format!("node-{i}"));
            id.install(&dir);
            let config = Config {
                network: Network::Testnet,
                data_dir: dir.clone(),
                p2p: P2pConfig {
                    listen: vec![format!("/ip4/{}/tcp/{P2P_PORT}", t.p2p[i])],
                    upnp: SITES[i] == Site::Upnp,
                    hole_punch_retry_secs: PUNCH_RETRY_SECS,
                    seeds: publics
                        .iter()
                        .filter(|&&j| j != i)
                        .map(|&j| format!("/ip4/{}/tcp/{P2P_PORT}/p2p/{}", t.p2p[j], ids[j].peer))
                        .collect(),
                    ..P2pConfig::default()
                },
                rpc: cluster::rpc_at(&t.mgmt[i]),
                log: LogConfig {
                    level: "info".to_owned(),
                    ..LogConfig::default()
                },
                ..Config::default()
            };
            config.validate().expect("a valid node config");
            let path = init::write_config(&dir, &config, true)
                .expect("writing the config")
                .expect("overwritten");
            nodes
                .children
                .push(Some(cluster::spawn_in(&t.node_ns[i], &path, &dir)));
            nodes.dirs.push(dir);
        }
        nodes
    }

    fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.children[i].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A node's `node_info`, or `Null` if it did not answer.
async fn info(client: &HttpClient) -> Value {
    call(client, "node_info", Value::Null)
        .await
        .unwrap_or(Value::Null)
}

/// The peers `client`'s node lists alive.
async fn alive(client: &HttpClient) -> Vec<String> {
    let Ok(Value::Array(members)) = call(client, "swim_members", Value::Null).await else {
        return Vec::new();
    };
    members
        .iter()
        .filter(|m| m["state"] == "alive")
        .filter_map(|m| m["peer"].as_str().map(str::to_owned))
        .collect()
}

/// `client`'s node's `node_peers` entry for `peer` (`Null` if not connected).
async fn peer_entry(client: &HttpClient, peer: &str) -> Value {
    let Ok(Value::Array(peers)) = call(client, "node_peers", json!({"detail": true})).await else {
        return Value::Null;
    };
    peers
        .into_iter()
        .find(|p| p["peer"] == peer)
        .unwrap_or(Value::Null)
}

/// The connected peers `client`'s node reaches directly, and through relays only.
async fn connections(client: &HttpClient) -> (Vec<String>, Vec<String>) {
    let Ok(Value::Array(peers)) = call(client, "node_peers", json!({"detail": true})).await else {
        return (Vec::new(), Vec::new());
    };
    let (direct, relayed): (Vec<&Value>, Vec<&Value>) =
        peers.iter().partition(|p| p["direct"] == true);
    let names = |v: Vec<&Value>| {
        v.iter()
            .filter_map(|p| p["peer"].as_str().map(str::to_owned))
            .collect()
    };
    (names(direct), names(relayed))
}

fn relays_of(info: &Value) -> Vec<String> {
    info["nat"]["relays"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|r| r.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Whether node `i` knows what it should of its reachability (and holds a relay if private).
fn reachable_as_expected(i: usize, info: &Value) -> bool {
    match SITES[i] {
        Site::Public => info["nat"]["reachability"] == "public",
        Site::Cone | Site::Symmetric => {
            info["nat"]["reachability"] == "private" && !relays_of(info).is_empty()
        }
        // Its port mapped on the gateway, a test from outside reaches it: public, and it needs
        // no relay (one reserved before the mapping is released).
        Site::Upnp => {
            info["nat"]["reachability"] == "public"
                && relays_of(info).is_empty()
                && info["nat"]["upnp_mapped"]
                    .as_str()
                    .is_some_and(|a| a.starts_with("/ip4/11.78."))
        }
    }
}

fn p50(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

async fn scenario(t: &Topology, ids: &[Identity], root: &Path) -> Result<Vec<String>, String> {
    let n = SITES.len();
    let peers: Vec<String> = ids.iter().map(|id| id.peer.clone()).collect();
    let rpc = clients(&t.mgmt, Duration::from_secs(30));
    let _gateways = Gateways::start(t, root)?;
    let started = Instant::now();
    let mut nodes = Nodes::start(t, ids, root);
    let mut table = Vec::new();

    // 1. Reachability and membership.
    let mut reachable_at: Vec<Option<Duration>> = vec![None; n];
    let mut all_alive_at: Option<Duration> = None;
    loop {
        for i in 0..n {
            if reachable_at[i].is_none() && reachable_as_expected(i, &info(&rpc[i]).await) {
                reachable_at[i] = Some(started.elapsed());
            }
        }
        if all_alive_at.is_none() {
            let mut all = true;
            for (i, client) in rpc.iter().enumerate() {
                let seen = alive(client).await;
                all &= (0..n).filter(|&j| j != i).all(|j| seen.contains(&peers[j]));
            }
            if all {
                all_alive_at = Some(started.elapsed());
            }
        }
        if all_alive_at.is_some() && reachable_at.iter().all(Option::is_some) {
            break;
        }
        if started.elapsed() > START_BOUND {
            let mut why = Vec::new();
            for i in 0..n {
                let info = info(&rpc[i]).await;
                why.push(format!(
                    "node {i} ({:?}): nat {}, alive {}",
                    SITES[i],
                    info["nat"],
                    alive(&rpc[i]).await.len()
                ));
            }
            return Err(format!(
                "not every node reachable and seeing all within {START_BOUND:?}:\n{}",
                why.join("\n")
            ));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    for i in 0..n {
        table.push(format!(
            "| node {i} ({:?}) reachable as expected after | {:.1} s |",
            SITES[i],
            reachable_at[i].unwrap_or_default().as_secs_f64()
        ));
    }
    table.push(format!(
        "| every node lists every other alive after | {:.1} s |",
        all_alive_at.unwrap_or_default().as_secs_f64()
    ));

    // 2. The node whose gateway mapped its port is reached directly by every other node,
    // those behind NATs included, with no relay.
    let upnp = (0..n)
        .find(|&i| SITES[i] == Site::Upnp)
        .expect("a UPnP site");
    let upnp_start = Instant::now();
    loop {
        let mut waiting = Vec::new();
        for (i, client) in rpc.iter().enumerate() {
            if i != upnp && !connections(client).await.0.contains(&peers[upnp]) {
                waiting.push(i);
            }
        }
        if waiting.is_empty() {
            break;
        }
        if upnp_start.elapsed() > UPNP_BOUND {
            return Err(format!(
                "nodes {waiting:?} not connected directly to node {upnp} (UPnP) within \
                 {UPNP_BOUND:?}; node {upnp}: {}",
                info(&rpc[upnp]).await["nat"]
            ));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    table.push(format!(
        "| every node connected directly to the UPnP node after | {:.1} s from start |",
        started.elapsed().as_secs_f64()
    ));

    // 3. The two cone-NAT nodes end up connected directly; the symmetric one through relays.
    let cones: Vec<usize> = (0..n).filter(|&i| SITES[i] == Site::Cone).collect();
    let sym = (0..n)
        .find(|&i| SITES[i] == Site::Symmetric)
        .expect("a symmetric site");
    let (a, b) = (cones[0], cones[1]);
    let punch_start = Instant::now();
    loop {
        let (direct, _) = connections(&rpc[a]).await;
        if direct.contains(&peers[b]) {
            break;
        }
        if punch_start.elapsed() > PUNCH_BOUND {
            return Err(format!(
                "nodes {a} and {b} (both behind cone NATs) not connected directly within \
                 {PUNCH_BOUND:?}; node {a}: {}",
                info(&rpc[a]).await["nat"]
            ));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    table.push(format!(
        "| cone ↔ cone connected directly after | {:.1} s from start |",
        started.elapsed().as_secs_f64()
    ));
    let mut direct_pairs = 0;
    let mut pairs = 0;
    for (i, client) in rpc.iter().enumerate() {
        let (direct, relayed) = connections(client).await;
        for peer in &peers[i + 1..] {
            if direct.contains(peer) || relayed.contains(peer) {
                pairs += 1;
                direct_pairs += usize::from(direct.contains(peer));
            }
        }
        if i == sym
            && let Some(c) = cones.iter().find(|&&c| direct.contains(&peers[c]))
        {
            return Err(format!(
                "node {sym}, behind a symmetric NAT, has a direct connection to node {c}, \
                 behind a cone NAT: the NATs are not what this test says they are"
            ));
        }
    }
    table.push(format!(
        "| node pairs connected directly | {direct_pairs} of {pairs} connected pairs |"
    ));

    // 4. A put through one home node, read through the others. Every node holds a copy (k is
    // above n), so a plain get answers from the reader's own copy; a get with receipts asks
    // every holder and answers once all did: from a public node every holder is reached
    // directly, from the symmetric-NAT node the cone-NAT ones through relays.
    let key = format!("nat-{}", std::process::id());
    call(
        &rpc[a],
        "dht_put",
        json!({"key": key, "value": "behind-a-nat"}),
    )
    .await
    .map_err(|e| format!("put through node {a}: {e}"))?;
    let public = (0..n)
        .find(|&i| SITES[i] == Site::Public)
        .expect("a public site");
    // Puts store at every node (k above n) and answer once the quorum acknowledged: timed
    // through a public node (every holder direct) and through the symmetric-NAT node (the
    // cone-NAT holders relayed).
    for (writer, what) in [
        (public, "put through a public node (every holder direct)"),
        (
            sym,
            "put through the symmetric-NAT node (the cone-NAT holders relayed)",
        ),
    ] {
        let mut v = Vec::with_capacity(GETS);
        for j in 0..GETS {
            let t0 = Instant::now();
            call(
                &rpc[writer],
                "dht_put",
                json!({"key": format!("{key}-{writer}-{j}"), "value": "timed"}),
            )
            .await
            .map_err(|e| format!("put through node {writer}: {e}"))?;
            v.push(t0.elapsed());
        }
        table.push(format!("| {what}, p50 of {GETS} | {} |", ms(p50(v))));
    }
    for (reader, prove, what) in [
        (
            b,
            false,
            "plain get through the other cone-NAT node (its own copy)",
        ),
        (
            sym,
            false,
            "plain get through the symmetric-NAT node (its own copy)",
        ),
        (
            public,
            true,
            "get with receipts through a public node (every holder direct)",
        ),
        (
            sym,
            true,
            "get with receipts through the symmetric-NAT node (the cone-NAT holders relayed)",
        ),
    ] {
        let mut v = Vec::with_capacity(GETS);
        for _ in 0..GETS {
            let t0 = Instant::now();
            let got = call(&rpc[reader], "dht_get", json!({"key": key, "prove": prove}))
                .await
                .map_err(|e| format!("get through node {reader}: {e}"))?;
            if got["value"] != "behind-a-nat" {
                return Err(format!("get through node {reader}: {got}"));
            }
            v.push(t0.elapsed());
        }
        table.push(format!("| {what}, p50 of {GETS} | {} |", ms(p50(v))));
    }

    // 5. Lockstep through relays: the symmetric-NAT node announces a key's hash; every other
    // node keeps the notice, the cone-NAT nodes reached through relays; the value put under the
    // announced sequence is read through a cone-NAT node as lockstep-checked.
    let lkey = format!("nat-lockstep-{}", std::process::id());
    let t0 = Instant::now();
    let announced = call(
        &rpc[sym],
        "lockstep_announce",
        json!({"key": lkey, "value": "announced-behind-a-nat"}),
    )
    .await
    .map_err(|e| format!("announce through node {sym}: {e}"))?;
    let announce_took = t0.elapsed();
    if announced["accepted"] != n - 1 {
        return Err(format!(
            "node {sym}'s announcement kept by {} of the {} other nodes: {announced}",
            announced["accepted"],
            n - 1
        ));
    }
    for &cone in &cones {
        let got = call(&rpc[cone], "lockstep_get", json!({"key": lkey}))
            .await
            .map_err(|e| format!("lockstep_get through node {cone}: {e}"))?;
        let kept = got["notices"].as_array().is_some_and(|notices| {
            notices
                .iter()
                .any(|x| x["publisher"] == peers[sym].as_str() && x["seq"] == announced["seq"])
        });
        if !kept {
            return Err(format!(
                "node {cone} lacks node {sym}'s announced notice: {got}"
            ));
        }
    }
    call(
        &rpc[sym],
        "dht_put",
        json!({"key": lkey, "value": "announced-behind-a-nat", "seq": announced["seq"]}),
    )
    .await
    .map_err(|e| format!("put of the announced value through node {sym}: {e}"))?;
    let got = call(&rpc[a], "dht_get", json!({"key": lkey}))
        .await
        .map_err(|e| format!("get of the announced value through node {a}: {e}"))?;
    if got["value"] != "announced-behind-a-nat" || got["lockstep"] != true {
        return Err(format!(
            "get of the announced value through node {a}: {got}"
        ));
    }
    table.push(format!(
        "| lockstep announce through the symmetric-NAT node, kept by all {} others | {} |",
        n - 1,
        ms(announce_took)
    ));

    // 6. One of a home node's relays is killed: it holds reservations elsewhere again.
    let before = relays_of(&info(&rpc[a]).await);
    let killed = (0..n)
        .find(|&j| before.contains(&peers[j]))
        .ok_or("the home node lists no relay")?;
    nodes.kill(killed);
    let kill_at = Instant::now();
    let via_killed = format!("/p2p/{}/p2p-circuit", peers[killed]);
    loop {
        let node = info(&rpc[a]).await;
        let now = relays_of(&node);
        // No address announced through the dead relay either (one AutoNAT confirmed through it
        // outlived the reservation once, and peers' hole punch retries went to it).
        let through_killed: Vec<&str> = node["external_addrs"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .filter(|addr| addr.contains(&via_killed))
            .collect();
        if now.len() >= before.len() && !now.contains(&peers[killed]) && through_killed.is_empty() {
            table.push(format!(
                "| node {a} holds {} reservations again, none at the killed relay, after | {:.1} s |",
                now.len(),
                kill_at.elapsed().as_secs_f64()
            ));
            break;
        }
        if kill_at.elapsed() > MOVE_BOUND {
            return Err(format!(
                "node {a} did not move off killed relay {killed} within {MOVE_BOUND:?}: relays \
                 {now:?}, addresses through it {through_killed:?}, nat {}",
                node["nat"]
            ));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // 7. The routers of the third and the first cone-NAT nodes dropped what each sent to the
    // other's public address since the start (a firewall rule), so their hole punch failed.
    // The rule is lifted: the punch is retried on a new relayed connection and succeeds.
    let (late, blocked) = PUNCH_BLOCKED;
    let fail_start = Instant::now();
    loop {
        let failures = peer_entry(&rpc[late], &peers[blocked]).await["hole_punch_failures"]
            .as_u64()
            .unwrap_or(0)
            + peer_entry(&rpc[blocked], &peers[late]).await["hole_punch_failures"]
                .as_u64()
                .unwrap_or(0);
        if failures > 0 {
            break;
        }
        if fail_start.elapsed() > PUNCH_BOUND {
            return Err(format!(
                "no failed hole punch between nodes {late} and {blocked} within {PUNCH_BOUND:?}, \
                 though their routers drop their direct traffic: {}",
                peer_entry(&rpc[late], &peers[blocked]).await
            ));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    if connections(&rpc[late]).await.0.contains(&peers[blocked]) {
        return Err(format!(
            "nodes {late} and {blocked} connected directly while a firewall drops their traffic"
        ));
    }
    for i in [late, blocked] {
        let router = t.router[i].as_ref().ok_or("a cone-NAT node has a router")?;
        in_ns(
            router,
            "nft",
            &["delete", "table", "inet", "punchblock"],
            None,
        )?;
    }
    let lifted = Instant::now();
    loop {
        if connections(&rpc[late]).await.0.contains(&peers[blocked]) {
            table.push(format!(
                "| a failed hole punch retried (after {PUNCH_RETRY_SECS} s) once the firewall let \
                 it through: connected directly after | {:.1} s |",
                lifted.elapsed().as_secs_f64()
            ));
            break;
        }
        if lifted.elapsed() > RETRY_BOUND {
            return Err(format!(
                "nodes {late} and {blocked} not connected directly within {RETRY_BOUND:?} of \
                 the firewall rule's removal: node {late}: {}, nat {}",
                peer_entry(&rpc[late], &peers[blocked]).await,
                info(&rpc[late]).await["nat"]
            ));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Ok(table)
}

#[test]
fn nodes_behind_nats_join_are_reachable_and_punch_holes() {
    if std::env::var("SHOAL_CHAOS").unwrap_or_default() == "skip" {
        eprintln!("NAT suite skipped (SHOAL_CHAOS=skip)");
        return;
    }
    if let Err(why) = preflight() {
        panic!(
            "the NAT suite cannot run: {why}. Run it as root with iproute2 and nftables \
             installed (`.ci/install-deps` installs them), or set SHOAL_CHAOS=skip to skip it"
        );
    }
    assert!(
        Path::new(MINIUPNPD).exists(),
        "the NAT suite's UPnP router needs {MINIUPNPD}: apt-get install miniupnpd-nftables \
         (`.ci/install-deps` installs it), or set SHOAL_CHAOS=skip to skip the suite"
    );
    let root = std::env::temp_dir().join(format!("shoal-nat-{}", std::process::id()));
    fs::create_dir_all(&root).expect("the suite's directory");
    let ids = cluster::mint(&root, SITES.len());
    let topology = Topology::create().expect("creating the NAT network");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let result = runtime.block_on(scenario(&topology, &ids, &root));
    drop(topology);
    match result {
        Ok(table) => {
            println!("\nNAT traversal, {} nodes\n", SITES.len());
            println!("| measure | value |\n|---|---|");
            for row in table {
                println!("{row}");
            }
            if std::env::var_os("SHOAL_CHAOS_KEEP").is_some() {
                println!("node logs kept in {}", root.display());
            } else {
                let _ = fs::remove_dir_all(&root);
            }
        }
        Err(why) => panic!("{why}\n(node logs kept in {})", root.display()),
    }
}
