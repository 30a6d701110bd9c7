//! A Shoal node inside your own Rust program, with the `shoal-dht` library: no `shoal` binary
//! and no JSON-RPC, just a [`Client`] handle to call.
//!
//! It starts two nodes in this process, "alice" and "bob", on loopback TCP. Given a seed (the
//! address of a running node), both join the network through it; without one, bob joins
//! through alice. Then:
//!
//! 1. alice puts a record and bob gets it back;
//! 2. bob subscribes to lockstep notices, alice announces a value, bob hears the notice;
//! 3. alice puts the announced value and bob gets it back, marked as announced;
//! 4. both nodes shut down cleanly (they leave the membership and stop their tasks).
//!
//! ```sh
//! cargo run -p shoal-examples --example embed
//! cargo run -p shoal-examples --example embed -- /ip4/127.0.0.1/tcp/7400/p2p/12D3KooW...
//! ```
//!
//! The seed is a node's p2p address ending in `/p2p/<its peer id>`: with
//! `shoal testnet --base-port 7400`, node 1 listens on TCP port 7400 and its line shows its
//! peer id.

use std::num::NonZeroUsize;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};
use shoal_dht::lockstep::Announced;
use shoal_dht::node::{PutRequest, Route, tcp_transport};
use shoal_dht::{Client, Config, EventLoop, NodeKeyExt, PublicKeyExt};
use shoal_pow::{CancelToken, MintOptions, NodeKey, Puzzle, mint};
use tokio::sync::broadcast::error::RecvError;
use tokio::task::JoinHandle;

/// How long to wait for the two nodes to know each other, and for a notice to arrive.
const WAIT: Duration = Duration::from_secs(60);

const USAGE: &str = "usage: embed [SEED]

Runs two Shoal nodes in this process. SEED is the p2p address of a running node of the
`testnet` network, ending in /p2p/<peer id>; both nodes join through it. Without SEED the
second node joins through the first.";

/// A node running in this process.
struct Node {
    /// A name for the output.
    name: &'static str,
    /// The handle to drive it; cheap to clone.
    client: Client,
    /// The p2p address it listens on.
    addr: Multiaddr,
    /// The task running its event loop.
    task: JoinHandle<()>,
}

#[tokio::main]
async fn main() -> ExitCode {
    let seed = match std::env::args().nth(1).as_deref() {
        None => None,
        Some("-h" | "--help") => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Some(arg) => match parse_seed(arg) {
            Ok(seed) => Some(seed),
            Err(e) => {
                eprintln!("error: {e:#}\n\n{USAGE}");
                return ExitCode::from(2);
            }
        },
    };
    match run(seed).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // `{:#}` prints the error with its causes on one line.
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Starts the two nodes, runs the demo and stops them.
async fn run(seed: Option<(PeerId, Multiaddr)>) -> anyhow::Result<()> {
    // The preset of the network `shoal testnet` runs: its identity puzzle, stamp costs and
    // protocol names. A node only talks to nodes of its own network.
    let config = Config::testnet();
    let alice = start("alice", config.clone()).await?;
    let bob = match start("bob", config).await {
        Ok(bob) => bob,
        Err(e) => {
            stop(alice).await;
            return Err(e);
        }
    };

    // Whatever happens in the demo, both nodes are shut down before the program exits.
    let result = demo(&alice, &bob, seed).await;
    stop(alice).await;
    stop(bob).await;
    result?;
    println!("both nodes stopped");
    Ok(())
}

/// Parses a seed address: a multiaddr ending in `/p2p/<peer id>`.
fn parse_seed(text: &str) -> anyhow::Result<(PeerId, Multiaddr)> {
    let mut addr: Multiaddr = text
        .parse()
        .with_context(|| format!("{text:?} is not a multiaddr"))?;
    match addr.pop() {
        Some(Protocol::P2p(peer)) if !addr.is_empty() => Ok((peer, addr)),
        _ => bail!("{text:?} does not end in /p2p/<peer id>"),
    }
}

/// Starts a node: a fresh identity key, its proof of work, the event loop on a tokio task, and
/// a listener on a free loopback port.
async fn start(name: &'static str, config: Config) -> anyhow::Result<Node> {
    let key = NodeKey::generate();
    // Every node proves its identity with a proof of work on its public key: peers check it
    // before they talk to the node. Minting runs scrypt on every core, so it goes on a
    // blocking thread, away from the async runtime. On the testnet (difficulty 4, 16
    // evaluations on average) it is quick; on the main network it takes about a minute of a core.
    let puzzle = Puzzle::new(config.puzzle.clone()).context("the identity puzzle")?;
    let public = key.public();
    let minted = tokio::task::spawn_blocking(move || {
        mint(
            &puzzle,
            &public,
            &MintOptions::default(),
            &CancelToken::new(),
            |_progress| {},
        )
    })
    .await
    .context("the minting thread")?
    .context("minting the identity proof")?;

    // The event loop owns the network and the node's state; the client is how the program
    // talks to it. With `config.data_dir` set the node would keep its records on disk; here
    // everything stays in memory.
    let transport = tcp_transport(&key.to_libp2p());
    let (client, event_loop) = EventLoop::new(key, minted.proof, config, transport)
        .with_context(|| format!("starting {name}"))?;
    let task = tokio::spawn(event_loop.run());
    let listen: Multiaddr = "/ip4/127.0.0.1/tcp/0"
        .parse()
        .context("the listen address")?;
    let addr = match client.listen(listen).await {
        Ok(addr) => addr,
        Err(e) => {
            client.shutdown().await;
            return Err(e).with_context(|| format!("{name} listening"));
        }
    };
    println!("{name} started: peer {} on {addr}", client.peer_id());
    Ok(Node {
        name,
        client,
        addr,
        task,
    })
}

/// Joins the network, puts, gets, announces and hears the notice.
async fn demo(alice: &Node, bob: &Node, seed: Option<(PeerId, Multiaddr)>) -> anyhow::Result<()> {
    // Join: through the seed, or bob through alice. `join` returns once the seeds passed the
    // identity check and the membership protocol (SWIM) let the node in.
    let alice_as_seed = (alice.client.peer_id(), alice.addr.clone());
    match seed {
        Some(seed) => {
            join(alice, seed.clone()).await?;
            join(bob, seed).await?;
        }
        None => join(bob, alice_as_seed).await?,
    }
    // The members a node learns are checked (their proofs of work) before its DHT uses them;
    // wait until each node has the other in its routing table.
    knows(alice, bob).await?;
    knows(bob, alice).await?;

    // 1. Put through alice, get through bob. The record is signed by alice, stamped, and kept
    // by the nodes closest to its key; `quorum` is how many of them must have validated and
    // kept it before `put` returns (one is enough here: a network of two nodes has a single
    // replica besides alice).
    let key = b"embed-greeting".to_vec();
    let put = alice
        .client
        .put_request(PutRequest {
            key: key.clone(),
            value: b"hello from an embedded node".to_vec(),
            ttl: Duration::from_secs(3600),
            quorum: Some(NonZeroUsize::MIN),
            seq: None,
            route: Route::Auto,
        })
        .await
        .context("alice's put")?;
    println!("alice put embed-greeting (seq {})", put.seq);
    let got = bob.client.get(key).await.context("bob's get")?;
    println!(
        "bob read back: {} (seq {}, published by {})",
        String::from_utf8_lossy(&got.record.value),
        got.record.seq,
        got.record.publisher.peer_id()
    );

    // 2. Lockstep: a publisher announces the hash of a value before the value travels. A node
    // hears the announcements that other nodes send it (it is among the closest to the key)
    // on its subscription.
    let mut notices = bob.client.subscribe();
    let key = b"embed-release".to_vec();
    let value = b"v1.0".to_vec();
    let announced = alice
        .client
        .announce(key.clone(), value.clone(), None)
        .await
        .context("alice's announcement")?;
    println!(
        "alice announced embed-release (seq {}, kept by {} nodes)",
        announced.seq, announced.accepted
    );
    let notice = tokio::time::timeout(WAIT, async {
        loop {
            match notices.recv().await {
                Ok(notice) if notice.notice().key == key => return Ok(notice),
                // A notice for another key, or some missed because this loop was slow.
                Ok(_) | Err(RecvError::Lagged(_)) => continue,
                Err(RecvError::Closed) => bail!("bob stopped"),
            }
        }
    })
    .await
    .with_context(|| format!("bob heard no notice within {WAIT:?}"))??;
    println!(
        "bob heard a notice for embed-release from {} (seq {})",
        notice.notice().publisher.peer_id(),
        notice.notice().seq
    );

    // 3. Put the announced value with the announced sequence number: readers can tell it is
    // the value announced. Another value under that sequence would be refused.
    alice
        .client
        .put_request(PutRequest {
            key: key.clone(),
            value,
            ttl: Duration::from_secs(3600),
            quorum: Some(NonZeroUsize::MIN),
            seq: Some(announced.seq),
            route: Route::Auto,
        })
        .await
        .context("alice's put of the announced value")?;
    let got = bob.client.get(key).await.context("bob's get")?;
    println!(
        "bob read back: {} (announced: {})",
        String::from_utf8_lossy(&got.record.value),
        got.announced == Announced::Yes
    );
    Ok(())
}

/// Joins `node` to the network through `seed`.
async fn join(node: &Node, seed: (PeerId, Multiaddr)) -> anyhow::Result<()> {
    let via = seed.1.clone();
    let joined = tokio::time::timeout(WAIT, node.client.join(vec![seed]))
        .await
        .with_context(|| format!("{} did not join within {WAIT:?}", node.name))?
        .with_context(|| format!("{} joining through {via}", node.name))?;
    println!(
        "{} joined through {via}: {} members known",
        node.name, joined.members
    );
    Ok(())
}

/// Waits until `node` has `other` in its routing table.
async fn knows(node: &Node, other: &Node) -> anyhow::Result<()> {
    let peer = other.client.peer_id();
    tokio::time::timeout(WAIT, async {
        while !node.client.peers().await.contains(&peer) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .with_context(|| {
        format!(
            "{} did not learn of {} within {WAIT:?}",
            node.name, other.name
        )
    })
}

/// Shuts a node down: it leaves the membership (its peers learn at once instead of
/// suspecting it), and its event loop ends.
async fn stop(node: Node) {
    node.client.shutdown().await;
    if let Err(e) = node.task.await {
        eprintln!("{}'s event loop ended abnormally: {e}", node.name);
    }
}
