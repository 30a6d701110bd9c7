//! Swarm-level tests over a private Tor network on 127.0.0.1.
//!
//! One test function starts the network once (15-45 s) and runs every scenario against it.
//! It needs Debian's `tor` and `tor-gencert` (`apt-get install -y tor`); without them it fails.

use std::net::{Ipv4Addr, TcpListener};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arti_client::TorClient;
use futures::StreamExt as _;
use libp2p::core::transport::TransportError;
use libp2p::core::upgrade::Version;
use libp2p::core::{Multiaddr, Transport as _};
use libp2p::identity::Keypair;
use libp2p::swarm::dial_opts::DialOpts;
use libp2p::swarm::{DialError, NetworkBehaviour, SwarmEvent};
use libp2p::{PeerId, Swarm, kad, noise, ping, yamux};
use shoal_tor::testnet::{TestNetConfig, TestNetwork};
use shoal_tor::{any_onion, onion_address_of, onion_matches_peer};
use tor_rtcompat::PreferredRuntime;

/// Onion virtual port every node listens on.
const PORT: u16 = 4001;
/// Limit of the whole test, network start included.
const TEST_LIMIT: Duration = Duration::from_secs(300);

#[derive(NetworkBehaviour)]
struct Behaviour {
    ping: ping::Behaviour,
    kad: kad::Behaviour<kad::store::MemoryStore>,
}

struct Node {
    name: &'static str,
    keypair: Keypair,
    swarm: Swarm<Behaviour>,
    onion: Multiaddr,
    /// The arti client inside the swarm's transport, to wait for it to stop.
    tor: Arc<TorClient<PreferredRuntime>>,
}

impl Node {
    fn peer(&self) -> PeerId {
        *self.swarm.local_peer_id()
    }
}

/// Drops `node`'s swarm and waits for its Tor client to stop; gives back its key, to start it
/// again with [`node`] (same key, same state directory).
async fn stop(node: Node) -> Keypair {
    let Node {
        name,
        keypair,
        swarm,
        tor,
        ..
    } = node;
    drop(swarm);
    let stopped = tor.wait_for_stop();
    drop(tor);
    tokio::time::timeout(Duration::from_secs(30), stopped)
        .await
        .unwrap_or_else(|_| panic!("{name}'s arti client stops once its swarm is dropped"));
    keypair
}

async fn node(net: &TestNetwork, name: &'static str, keypair: Keypair) -> Node {
    let peer = keypair.public().to_peer_id();
    let node_key = shoal_tor::signing_key_from_libp2p(&keypair).expect("an ed25519 keypair");
    let started = Instant::now();
    let tor = shoal_tor::Transport::bootstrap(net.client_config(name), node_key)
        .await
        .unwrap_or_else(|e| panic!("{name}: arti bootstrap failed: {e:?}"));
    println!("{name}: arti bootstrapped in {:?}", started.elapsed());
    let onion = tor.onion_address(PORT);
    let tor_client = Arc::clone(tor.tor_client());
    assert_eq!(
        Some(onion.clone()),
        onion_address_of(&keypair.public(), PORT)
    );
    let transport = tor
        .upgrade(Version::V1)
        .authenticate(noise::Config::new(&keypair).expect("noise accepts ed25519 keys"))
        .multiplex(yamux::Config::default())
        .boxed();
    let mut kad_config = kad::Config::new(kad::PROTOCOL_NAME);
    kad_config.set_query_timeout(Duration::from_secs(90));
    let mut kad = kad::Behaviour::with_config(peer, kad::store::MemoryStore::new(peer), kad_config);
    kad.set_mode(Some(kad::Mode::Server));
    let behaviour = Behaviour {
        ping: ping::Behaviour::new(ping::Config::new().with_interval(Duration::from_millis(500))),
        kad,
    };
    let config = libp2p::swarm::Config::with_tokio_executor()
        .with_idle_connection_timeout(Duration::from_secs(120));
    let mut swarm = Swarm::new(transport, behaviour, peer, config);
    swarm.add_external_address(onion.clone());
    Node {
        name,
        keypair,
        swarm,
        onion,
        tor: tor_client,
    }
}

/// The next event of any of three nodes, with the node's index.
async fn next_event(nodes: &mut [Node; 3]) -> (usize, SwarmEvent<BehaviourEvent>) {
    let [a, b, c] = nodes;
    tokio::select! {
        e = a.swarm.select_next_some() => (0, e),
        e = b.swarm.select_next_some() => (1, e),
        e = c.swarm.select_next_some() => (2, e),
    }
}

/// Drives all nodes until `done` returns `Some`, or for at most `limit` (then `None`).
async fn drive_for<T>(
    nodes: &mut [Node; 3],
    limit: Duration,
    mut done: impl FnMut(usize, SwarmEvent<BehaviourEvent>) -> Option<T>,
) -> Option<T> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let (i, event) = tokio::time::timeout_at(deadline, next_event(nodes))
            .await
            .ok()?;
        if let SwarmEvent::OutgoingConnectionError { error, .. } = &event {
            println!("{}: outgoing connection error: {error}", nodes[i].name);
        }
        if let Some(value) = done(i, event) {
            return Some(value);
        }
    }
}

/// Drives all nodes until `done` returns `Some`, or panics after `limit`.
async fn drive_until<T>(
    nodes: &mut [Node; 3],
    limit: Duration,
    what: &str,
    done: impl FnMut(usize, SwarmEvent<BehaviourEvent>) -> Option<T>,
) -> T {
    drive_for(nodes, limit, done)
        .await
        .unwrap_or_else(|| panic!("timed out after {limit:?} waiting for {what}"))
}

/// The Debug text of a transport error. The upgrade layers wrap the Tor transport's
/// [`Error`] in `Either`s inside an `io::Error`, which hide it from `source()` chains, so the
/// tests match on its Debug form (variant names and peer ids).
fn debug_text(err: &std::io::Error) -> String {
    format!("{err:?}")
}

/// Dials `addr` from node `i` and returns the transport errors of the failed dial.
async fn failed_dial(
    nodes: &mut [Node; 3],
    i: usize,
    addr: Multiaddr,
) -> Vec<(Multiaddr, TransportError<std::io::Error>)> {
    let opts = DialOpts::from(addr.clone());
    let wanted = opts.connection_id();
    nodes[i]
        .swarm
        .dial(opts)
        .expect("the swarm accepts the dial");
    let what = format!("the dial of {addr} to fail");
    drive_until(nodes, Duration::from_secs(60), &what, |_, e| match e {
        SwarmEvent::OutgoingConnectionError {
            connection_id,
            error,
            ..
        } if connection_id == wanted => match error {
            DialError::Transport(errors) => Some(errors),
            other => panic!("dialling {addr}: unexpected error {other:?}"),
        },
        SwarmEvent::ConnectionEstablished { connection_id, .. } if connection_id == wanted => {
            panic!("dialling {addr} must fail, but it connected")
        }
        _ => None,
    })
    .await
}

fn percentile(sorted: &[Duration], p: usize) -> Duration {
    sorted[(sorted.len() - 1) * p / 100]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn onion_swarms_over_a_private_tor_network() {
    tokio::time::timeout(TEST_LIMIT, scenarios())
        .await
        .expect("the Tor test exceeded its time limit");
}

async fn scenarios() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "shoal_tor=info".into()),
        )
        .with_test_writer()
        .try_init();

    let net = tokio::task::spawn_blocking(|| TestNetwork::start(TestNetConfig::default()))
        .await
        .expect("the start thread does not panic")
        .unwrap_or_else(|e| {
            panic!(
                "cannot start the private Tor network: {e}\n\
                 This test needs Debian's `tor` and `tor-gencert`: apt-get install -y tor"
            )
        });
    let timings = net.timings();
    println!(
        "private network: keys {:?}, start to usable consensus {:?} ({})",
        timings.keys,
        timings.consensus,
        net.dir().display()
    );

    let started = Instant::now();
    let (a, b, c) = tokio::join!(
        node(&net, "a", Keypair::generate_ed25519()),
        node(&net, "b", Keypair::generate_ed25519()),
        node(&net, "c", Keypair::generate_ed25519())
    );
    println!("three arti clients bootstrapped in {:?}", started.elapsed());
    let mut nodes = [a, b, c];

    // Each node's advertised onion address is its own key, and no one else's.
    for n in &nodes {
        assert!(
            onion_matches_peer(&n.onion, &n.peer()),
            "{}: onion is not its key",
            n.name
        );
    }
    assert!(!onion_matches_peer(&nodes[0].onion, &nodes[1].peer()));

    // Listening: the wildcard launches the service and reports the real onion address.
    let onions: Vec<Multiaddr> = nodes.iter().map(|n| n.onion.clone()).collect();
    let launched = Instant::now();
    for n in &mut nodes {
        n.swarm
            .listen_on(any_onion(PORT))
            .expect("listen on the wildcard onion");
    }
    let mut reported = [false; 3];
    drive_until(
        &mut nodes,
        Duration::from_secs(30),
        "listen addresses",
        |i, event| {
            if let SwarmEvent::NewListenAddr { address, .. } = event {
                assert_eq!(address, onions[i], "node {i} reported another address");
                reported[i] = true;
            }
            reported.iter().all(|r| *r).then_some(())
        },
    )
    .await;

    // Another node's onion cannot be listened on, nor a second onion service started.
    let other_onion = nodes[1].onion.clone();
    match nodes[0].swarm.listen_on(other_onion) {
        Err(TransportError::Other(e)) => {
            assert!(debug_text(&e).contains("NotOurOnion("), "{e:?}");
        }
        other => panic!("listening on another node's onion must fail, got {other:?}"),
    }
    match nodes[0].swarm.listen_on(any_onion(PORT + 1)) {
        Err(TransportError::Other(e)) => {
            assert!(debug_text(&e).contains("AlreadyListening("), "{e:?}");
        }
        other => panic!("a second onion listener must be refused, got {other:?}"),
    }

    // IP and DNS addresses are refused without any traffic: a loopback listener sees nothing.
    let tcp = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind a loopback port");
    tcp.set_nonblocking(true).expect("nonblocking listener");
    let tcp_port = tcp.local_addr().expect("bound address").port();
    for text in [
        format!("/ip4/127.0.0.1/tcp/{tcp_port}"),
        format!("/ip6/::1/tcp/{tcp_port}"),
        format!("/dns/localhost/tcp/{tcp_port}"),
    ] {
        let addr: Multiaddr = text.parse().expect("valid multiaddr");
        let errors = failed_dial(&mut nodes, 1, addr.clone()).await;
        assert!(!errors.is_empty());
        assert!(
            errors
                .iter()
                .all(|(_, e)| matches!(e, TransportError::MultiaddrNotSupported(_))),
            "{text}: {errors:?}"
        );
        assert!(
            matches!(
                nodes[1].swarm.listen_on(addr),
                Err(TransportError::MultiaddrNotSupported(_))
            ),
            "listening on {text} must be refused"
        );
    }
    assert!(
        matches!(tcp.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "the Tor transport touched an IP address"
    );

    // An onion address whose key is not the claimed peer's is refused before any traffic.
    let a_peer = nodes[0].peer();
    let c_peer = nodes[2].peer();
    let forged = nodes[0]
        .onion
        .clone()
        .with(libp2p::multiaddr::Protocol::P2p(c_peer));
    assert!(!onion_matches_peer(&forged, &c_peer));
    let errors = failed_dial(&mut nodes, 1, forged).await;
    assert!(
        errors.iter().any(|(_, e)| match e {
            TransportError::Other(io) => {
                let text = debug_text(io);
                text.contains("PeerMismatch")
                    && text.contains(&format!("onion_peer: PeerId(\"{a_peer}\")"))
                    && text.contains(&format!("claimed: PeerId(\"{c_peer}\")"))
            }
            TransportError::MultiaddrNotSupported(_) => false,
        }),
        "{errors:?}"
    );

    // A round trip: b dials a's onion; ping answers over Tor.
    let dial_addr = nodes[0]
        .onion
        .clone()
        .with(libp2p::multiaddr::Protocol::P2p(a_peer));
    let dialled = Instant::now();
    nodes[1].swarm.dial(dial_addr).expect("dial a's onion");
    drive_until(
        &mut nodes,
        Duration::from_secs(120),
        "b connected to a",
        |i, e| match e {
            SwarmEvent::ConnectionEstablished { peer_id, .. } if i == 1 && peer_id == a_peer => {
                Some(())
            }
            _ => None,
        },
    )
    .await;
    println!(
        "b reached a's onion {:?} after the dial, {:?} after the service launched",
        dialled.elapsed(),
        launched.elapsed()
    );
    let mut rtts = Vec::new();
    drive_until(
        &mut nodes,
        Duration::from_secs(60),
        "ten pings b->a",
        |i, e| {
            if let SwarmEvent::Behaviour(BehaviourEvent::Ping(ping::Event { peer, result, .. })) = e
                && i == 1
                && peer == a_peer
            {
                match result {
                    Ok(rtt) => rtts.push(rtt),
                    Err(err) => println!("ping failure: {err}"),
                }
            }
            (rtts.len() >= 10).then_some(())
        },
    )
    .await;
    rtts.sort();
    println!(
        "ping over onions: p50 {:?}, p95 {:?}, max {:?} ({} samples)",
        percentile(&rtts, 50),
        percentile(&rtts, 95),
        rtts[rtts.len() - 1],
        rtts.len()
    );
    assert!(rtts.iter().all(|rtt| *rtt > Duration::ZERO));

    // Kademlia: c joins through a's onion, stores a record; b finds it through a.
    let a_onion = nodes[0].onion.clone();
    nodes[2]
        .swarm
        .behaviour_mut()
        .kad
        .add_address(&a_peer, a_onion.clone());
    nodes[1]
        .swarm
        .behaviour_mut()
        .kad
        .add_address(&a_peer, a_onion);
    let key = kad::RecordKey::new(&"shoal-tor-test");
    let value = b"stored over onion services".to_vec();
    let record = kad::Record::new(key.clone(), value.clone());
    let put_started = Instant::now();
    let put = nodes[2]
        .swarm
        .behaviour_mut()
        .kad
        .put_record(record, kad::Quorum::One)
        .expect("the memory store accepts the record");
    drive_until(
        &mut nodes,
        Duration::from_secs(120),
        "kad put from c",
        |i, e| match e {
            SwarmEvent::Behaviour(BehaviourEvent::Kad(kad::Event::OutboundQueryProgressed {
                id,
                result: kad::QueryResult::PutRecord(result),
                ..
            })) if i == 2 && id == put => {
                result.expect("the put reaches a");
                Some(())
            }
            _ => None,
        },
    )
    .await;
    println!("kad put c->a over onions took {:?}", put_started.elapsed());
    let get_started = Instant::now();
    let get = nodes[1].swarm.behaviour_mut().kad.get_record(key);
    let found = drive_until(
        &mut nodes,
        Duration::from_secs(120),
        "kad get from b",
        |i, e| match e {
            SwarmEvent::Behaviour(BehaviourEvent::Kad(kad::Event::OutboundQueryProgressed {
                id,
                result: kad::QueryResult::GetRecord(result),
                ..
            })) if i == 1 && id == get => match result {
                Ok(kad::GetRecordOk::FoundRecord(peer_record)) => Some(peer_record.record.value),
                Ok(kad::GetRecordOk::FinishedWithNoAdditionalRecord { .. }) => None,
                Err(err) => panic!("kad get failed: {err:?}"),
            },
            _ => None,
        },
    )
    .await;
    println!("kad get b->a over onions took {:?}", get_started.elapsed());
    assert_eq!(found, value);

    // A stream to a port the service does not listen on is refused.
    let wrong_port = onion_address_of(&nodes[0].keypair.public(), PORT + 1)
        .expect("ed25519 key")
        .with(libp2p::multiaddr::Protocol::P2p(a_peer));
    let refused = Instant::now();
    let errors = failed_dial(&mut nodes, 1, wrong_port).await;
    assert!(
        errors
            .iter()
            .all(|(_, e)| matches!(e, TransportError::Other(_))),
        "{errors:?}"
    );
    println!(
        "a dial to an unserved port failed after {:?}",
        refused.elapsed()
    );

    // A restarted node (same key, same state directory) serves the same onion address again.
    let [a, b, c] = nodes;
    let a_keypair = stop(a).await;
    let restarted = Instant::now();
    let a = node(&net, "a", a_keypair).await;
    assert_eq!(a.peer(), a_peer);
    let mut nodes = [a, b, c];
    nodes[0]
        .swarm
        .listen_on(any_onion(PORT))
        .expect("listen again after a restart");
    let dial_addr = nodes[0]
        .onion
        .clone()
        .with(libp2p::multiaddr::Protocol::P2p(a_peer));
    // A dial made right after the restart can meet the old service's descriptor and sit in
    // arti's retries for minutes (seen once in a full test run: nothing within 120 s, where it
    // usually takes about a second); a client that gets no connection dials again, as a node's
    // next probe would.
    let reached_a = move |i, e| match e {
        SwarmEvent::ConnectionEstablished { peer_id, .. } if i == 1 && peer_id == a_peer => {
            Some(())
        }
        _ => None,
    };
    let mut reconnected = false;
    for attempt in 1..=3 {
        nodes[1]
            .swarm
            .dial(DialOpts::from(dial_addr.clone()))
            .expect("dial a's onion again");
        let established = drive_for(&mut nodes, Duration::from_secs(45), reached_a).await;
        if established.is_some() {
            reconnected = true;
            break;
        }
        println!(
            "b: no connection to the restarted a within 45 s of dial {attempt}, dialing again"
        );
    }
    if !reconnected {
        // Seen in 3 of 7 runs on this machine on 2026-12-05 (restarts 99 s and 54 s before and
        // 5 s after the end of an onion-service time period, which lasts 8 minutes on the test
        // network; restarts 71 s before and 1-4 minutes away from one reconnected in about a
        // second): b's client did not reach the restarted a within four dials over 180 s; once
        // (CI, 2026-12-06) a fresh client for b found no descriptor of a either. Those restarts
        // restored arti's introduction points without their keys (the keystore is in memory),
        // which the transport no longer lets happen (`remove_stale_service_state`); whether
        // that was the whole cause is not established. A fresh client for b tells whether a
        // serves its address again, which is what this part of the test is about.
        println!("b: restarting b's Tor client, whose state kept it from the restarted a");
        let [a, b, c] = nodes;
        // The old client is dropped, not waited on: once it also failed to stop within 30 s of
        // its swarm's drop (2026-12-05, in `scripts/test`). A state directory of its own keeps
        // the fresh client apart from it.
        let Node {
            keypair,
            swarm,
            tor,
            ..
        } = b;
        drop(swarm);
        drop(tor);
        let b = node(&net, "b-fresh", keypair).await;
        nodes = [a, b, c];
        nodes[1]
            .swarm
            .dial(DialOpts::from(dial_addr.clone()))
            .expect("dial a's onion from a fresh client");
        reconnected = drive_for(&mut nodes, Duration::from_secs(60), reached_a)
            .await
            .is_some();
    }
    assert!(
        reconnected,
        "b reconnected to the restarted a within three dials, or with a fresh client"
    );
    println!(
        "a restarted and was reachable again after {:?}",
        restarted.elapsed()
    );

    drop(nodes);
    drop(net);
}
