//! `swim::Behaviour` in real swarms: several nodes in one process, over the memory transport and
//! over TCP on loopback, form a cluster through a seed and detect a crashed member.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, PeerId, Swarm};
use libp2p_swarm_test::SwarmExt;
use shoal_swim::{Behaviour, Config, Event};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// A quick LAN profile so the tests take seconds.
fn fast_config() -> Config {
    Config {
        probe_interval: Duration::from_millis(200),
        probe_timeout: Duration::from_millis(100),
        gossip_interval: Duration::from_millis(100),
        push_pull_interval: Duration::from_secs(2),
        reconnect_interval: Duration::from_secs(1),
        ..Config::lan()
    }
}

fn node() -> Swarm<Behaviour> {
    Swarm::new_ephemeral_tokio(|keypair| {
        Behaviour::new(keypair.public().to_peer_id(), 1, fast_config()).expect("valid config")
    })
}

/// Runs a swarm in a task, forwarding its SWIM events tagged with its id.
fn spawn(mut swarm: Swarm<Behaviour>, tx: mpsc::Sender<(PeerId, Event<PeerId>)>) -> JoinHandle<()> {
    let me = *swarm.local_peer_id();
    tokio::spawn(async move {
        loop {
            if let SwarmEvent::Behaviour(e) = swarm.next_swarm_event().await
                && tx.send((me, e)).await.is_err()
            {
                return;
            }
        }
    })
}

/// Waits until `done` holds over the events seen, failing after `limit`.
async fn wait_for(
    rx: &mut mpsc::Receiver<(PeerId, Event<PeerId>)>,
    limit: Duration,
    mut done: impl FnMut(PeerId, &Event<PeerId>) -> bool,
) {
    tokio::time::timeout(limit, async {
        while let Some((who, e)) = rx.recv().await {
            if done(who, &e) {
                return;
            }
        }
        panic!("event stream ended");
    })
    .await
    .expect("condition not reached in time");
}

async fn cluster_forms_and_detects_a_crash(tcp: bool) {
    const N: usize = 4;
    let mut nodes: Vec<Swarm<Behaviour>> = (0..N).map(|_| node()).collect();
    let mut addrs: Vec<Multiaddr> = Vec::new();
    for n in &mut nodes {
        let (addr, _) = if tcp {
            n.listen().with_tcp_addr_external().await
        } else {
            n.listen().with_memory_addr_external().await
        };
        addrs.push(addr);
    }
    let ids: Vec<PeerId> = nodes.iter().map(|n| *n.local_peer_id()).collect();
    // Everyone joins through node 0, knowing only its peer id and address.
    for n in nodes.iter_mut().skip(1) {
        n.behaviour_mut().join([(ids[0], vec![addrs[0].clone()])]);
    }
    let (tx, mut rx) = mpsc::channel(1024);
    let mut tasks: Vec<JoinHandle<()>> = nodes.into_iter().map(|n| spawn(n, tx.clone())).collect();

    // Every node learns of every other.
    let mut known: HashMap<PeerId, HashSet<PeerId>> = HashMap::new();
    wait_for(&mut rx, Duration::from_secs(20), |who, e| {
        if let Event::Joined { member, addrs, .. } = e {
            assert!(!addrs.is_empty(), "joined members carry addresses");
            known.entry(who).or_default().insert(*member);
        }
        ids.iter()
            .all(|id| known.get(id).is_some_and(|k| k.len() == N - 1))
    })
    .await;

    // Crash the last node: the others suspect it, then mark it failed.
    let victim = ids[N - 1];
    tasks.pop().expect("N > 0").abort();
    let mut failed_at: HashSet<PeerId> = HashSet::new();
    let mut suspected = false;
    wait_for(&mut rx, Duration::from_secs(30), |who, e| {
        match e {
            Event::Suspected { member, .. } if *member == victim => suspected = true,
            Event::Failed { member, .. } if *member == victim => {
                failed_at.insert(who);
            }
            Event::Failed { member, .. } | Event::Left { member, .. } => {
                panic!("healthy member {member} declared failed or gone by {who}")
            }
            _ => {}
        }
        failed_at.len() == N - 1
    })
    .await;
    assert!(suspected, "failure is preceded by suspicion");
    for t in tasks {
        t.abort();
    }
}

#[tokio::test]
async fn memory_transport_cluster() {
    cluster_forms_and_detects_a_crash(false).await;
}

#[tokio::test]
async fn tcp_loopback_cluster() {
    cluster_forms_and_detects_a_crash(true).await;
}

#[tokio::test]
async fn oversized_and_garbage_messages_are_refused() {
    use libp2p::request_response as rr;
    // A raw request-response client speaking /shoal/swim/1 with junk.
    let mut target = node();
    let (addr, _) = target.listen().with_memory_addr_external().await;
    let target_id = *target.local_peer_id();
    let mut junk = Swarm::new_ephemeral_tokio(|_| {
        rr::Behaviour::with_codec(
            shoal_swim::protocol::Codec::new(4 * 1024 * 1024),
            [(shoal_swim::protocol::PROTOCOL, rr::ProtocolSupport::Full)],
            rr::Config::default(),
        )
    });
    junk.behaviour_mut().send_request_with_addresses(
        &target_id,
        vec![0xff; 16],
        vec![addr.clone()],
    );
    junk.behaviour_mut().send_request_with_addresses(
        &target_id,
        vec![0u8; 2 * 1024 * 1024],
        vec![addr],
    );
    // Drive both until the junk sender knows the fate of both requests.
    let mut outcomes = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), async {
        use futures::StreamExt;
        while outcomes.len() < 2 {
            tokio::select! {
                e = junk.select_next_some() => match e {
                    SwarmEvent::Behaviour(rr::Event::Message { .. }) => outcomes.push(Ok(())),
                    SwarmEvent::Behaviour(rr::Event::OutboundFailure { error, .. }) => {
                        outcomes.push(Err(error.to_string()))
                    }
                    _ => {}
                },
                _ = target.select_next_some() => {}
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("junk not answered: {:?}", target.behaviour().wire_stats()));
    // The garbage was decoded and refused; the oversized message was cut off by the codec at
    // the bound, so it never reached the decoder nor the core.
    assert_eq!(target.behaviour().wire_stats().malformed, 1, "{outcomes:?}");
    // The garbage was taken (and acknowledged); the oversized message was not.
    assert!(outcomes.contains(&Ok(())), "{outcomes:?}");
    assert!(outcomes.iter().any(|o| o.is_err()), "{outcomes:?}");
    assert_eq!(target.behaviour().wire_stats().received, 0);
    assert_eq!(target.behaviour().live_members(), 0);
}
