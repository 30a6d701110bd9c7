//! Whole nodes in one process over the memory transport: they join through one seed, put and get
//! records from random nodes, keep them through the loss of a fifth of the nodes, keep a node
//! without a valid proof out, refuse a tampered envelope, a replayed notice and a put that
//! contradicts its lockstep notice, and keep a put on redb across a restart; report their
//! counters, members and notices, and shut down gracefully. A flooded node still serves its
//! clients, and a write that fails on disk is refused, never acknowledged.

use std::num::NonZeroUsize;
use std::time::Duration;

use libp2p::{Multiaddr, PeerId};
use shoal_dht::core::KeyHash;
use shoal_dht::lockstep::protocol::Response;
use shoal_dht::lockstep::{Announced, LockstepError};
use shoal_dht::node::{
    EventLoop, GetError, JoinError, PutError, PutRequest, Route, StartError, memory_transport,
};
use shoal_dht::record::{NewRecord, SignedRecord};
use shoal_dht::{Client, Config, NodeKeyExt, PublicKeyExt};
use shoal_pow::{CancelToken, IdentityProof, MintOptions, NodeKey, Puzzle, mint, unix_now};

const TTL: Duration = Duration::from_secs(3600);

fn config() -> Config {
    Config::local()
}

fn valid_proof(key: &NodeKey) -> IdentityProof {
    let puzzle = Puzzle::new(config().puzzle).expect("the local preset is valid");
    let options = MintOptions {
        threads: NonZeroUsize::MIN,
        ..MintOptions::default()
    };
    mint(
        &puzzle,
        &key.public(),
        &options,
        &CancelToken::new(),
        |_| {},
    )
    .expect("minting at difficulty 2 succeeds")
    .proof
}

fn invalid_proof(key: &NodeKey) -> IdentityProof {
    let puzzle = Puzzle::new(config().puzzle).expect("the local preset is valid");
    let mut proof = valid_proof(key);
    while puzzle.verify(&proof).is_ok() {
        proof.nonce = proof.nonce.wrapping_add(1);
    }
    proof
}

/// Event loops of the nodes started, so a test can kill some.
static TASKS: std::sync::Mutex<Vec<(PeerId, tokio::task::AbortHandle)>> =
    std::sync::Mutex::new(Vec::new());

/// Kills the node `peer` (its event loop and swarm are dropped).
fn kill(peer: PeerId) {
    // Invariant: no test panics while holding the lock.
    let tasks = TASKS.lock().expect("lock not poisoned");
    for (p, task) in tasks.iter() {
        if *p == peer {
            task.abort();
        }
    }
}

/// Starts a node listening on the memory transport; returns its client and address.
/// Key seeds of the nodes started, so a test can sign as one of them.
static SEEDS: std::sync::Mutex<Vec<(PeerId, [u8; 32])>> = std::sync::Mutex::new(Vec::new());

/// The key of the node `peer` started by [`start`].
fn key_of(peer: PeerId) -> NodeKey {
    // Invariant: no test panics while holding the lock.
    let seeds = SEEDS.lock().expect("lock not poisoned");
    let (_, seed) = seeds
        .iter()
        .find(|(p, _)| *p == peer)
        .expect("the node was started by start()");
    NodeKey::from_seed(*seed)
}

async fn start(proof: impl FnOnce(&NodeKey) -> IdentityProof) -> (Client, Multiaddr) {
    let key = NodeKey::generate();
    // Invariant: no test panics while holding the lock.
    SEEDS
        .lock()
        .expect("lock not poisoned")
        .push((key.peer_id(), key.seed()));
    let proof = proof(&key);
    let (client, addr, _) = start_with(key, proof, config()).await;
    (client, addr)
}

/// Starts a node with `config`; returns its client, address and event loop task.
async fn start_with(
    key: NodeKey,
    proof: IdentityProof,
    config: Config,
) -> (Client, Multiaddr, tokio::task::JoinHandle<()>) {
    let transport = memory_transport(&key.to_libp2p());
    let (client, event_loop) =
        EventLoop::new(key, proof, config, transport).expect("the local preset starts");
    let task = tokio::spawn(event_loop.run());
    // Invariant: no test panics while holding the lock.
    TASKS
        .lock()
        .expect("lock not poisoned")
        .push((client.peer_id(), task.abort_handle()));
    let addr = client
        .listen("/memory/0".parse().expect("valid multiaddr"))
        .await
        .expect("memory listen");
    (client, addr, task)
}

/// Waits up to `secs` seconds for `check` to hold, polling every 100 ms.
async fn eventually<F: Future<Output = bool>>(secs: u64, mut check: impl FnMut() -> F) -> bool {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while tokio::time::Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    check().await
}

/// Starts `n` honest nodes, all joined through node 0, and waits until every node has every
/// other in its membership and at least `min_peers` in its routing table.
async fn cluster(n: usize, min_peers: usize) -> Vec<Client> {
    let mut nodes = Vec::new();
    let mut seed = None;
    for _ in 0..n {
        let (client, addr) = start(valid_proof).await;
        if seed.is_none() {
            seed = Some((client.peer_id(), addr));
        }
        nodes.push(client);
    }
    let seed = seed.expect("n > 0");
    eprintln!("seed {}", seed.0);
    let joins = nodes[1..].iter().map(|c| {
        let seed = seed.clone();
        async move { c.join(vec![seed]).await }
    });
    for result in futures::future::join_all(joins).await {
        result.expect("join through the seed");
    }
    let converged = tokio::time::timeout(Duration::from_secs(50), async {
        loop {
            let mut done = true;
            for c in &nodes {
                if c.members().await.len() < n - 1 || c.peers().await.len() < min_peers {
                    done = false;
                    break;
                }
            }
            if done {
                return;
            }
            if std::env::var_os("SHOAL_TEST_PROGRESS").is_some() {
                let mut members = Vec::new();
                let mut refused = 0;
                for c in &nodes {
                    members.push(c.members().await.len());
                    refused += c.stats().await.map_or(0, |s| s.refused_peers);
                }
                members.sort_unstable();
                eprintln!(
                    "members (lowest 5) {:?}, gate refusals {refused}",
                    &members[..5]
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    if converged.is_err() {
        for c in &nodes {
            eprintln!(
                "{}: {} members, {} peers, {:?}",
                c.peer_id(),
                c.members().await.len(),
                c.peers().await.len(),
                c.stats().await
            );
        }
        panic!("the cluster did not converge in 50 s");
    }
    nodes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_and_get_across_the_cluster() {
    const N: usize = 8;
    let nodes = cluster(N, N - 1).await;
    for i in 0..6 {
        let writer = &nodes[(i * 3 + 1) % N];
        let reader = &nodes[(i * 5 + 2) % N];
        let key = format!("key-{i}").into_bytes();
        let value = format!("value-{i}").into_bytes();
        let put = writer
            .put(key.clone(), value.clone(), TTL, None)
            .await
            .expect("put reaches its quorum");
        // The quorum counts replicas that kept the record: they hold it the moment the put
        // returns.
        let mut holders = 0;
        for other in nodes.iter().filter(|c| c.peer_id() != writer.peer_id()) {
            let held = other.stored(key.clone()).await;
            holders += usize::from(held.is_some_and(|s| s.record().seq == put.seq));
        }
        assert!(holders >= config().put_quorum.get(), "{holders} holders");
        let got = reader.get(key.clone()).await.expect("the record is found");
        assert_eq!(got.record.value, value);
        assert_eq!(got.record.seq, put.seq);
        assert_eq!(got.record.publisher.peer_id(), writer.peer_id());
        assert_eq!(got.invalid, 0);
        assert_eq!(got.announced, Announced::No);
    }
    // A newer put of the same key by the same publisher wins.
    let key = b"key-0".to_vec();
    let writer = &nodes[1];
    let first = writer.get(key.clone()).await.expect("found").record.seq;
    let second = writer
        .put(key.clone(), b"newer".to_vec(), TTL, None)
        .await
        .expect("second put");
    assert!(second.seq > first);
    // A get answers with the first valid copy, which may be the reader's older one while the
    // put still travels; its search goes on and replaces that copy, so the newer value wins
    // within the query bound.
    let got = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            let got = nodes[6].get(key.clone()).await.expect("found");
            if got.record.seq == second.seq {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("the newer put reaches the reader");
    assert_eq!(got.record.value, b"newer");
    // A get answers with the first valid copy (here the reader's own) and keeps looking: a
    // higher sequence held elsewhere replaces the reader's copy, so the next get sees it.
    let signer = NodeKey::generate();
    let record = |seq: u64, value: &[u8]| {
        SignedRecord::create(
            &signer,
            NewRecord {
                key: b"repaired".to_vec(),
                value: value.to_vec(),
                seq,
                ttl: 3600,
            },
            unix_now(),
            &config().stamps,
        )
        .expect("create")
        .into_bytes()
    };
    let reader = &nodes[4];
    // Everyone but the sender, which cannot send to itself.
    let all: Vec<PeerId> = nodes[1..].iter().map(Client::peer_id).collect();
    let others: Vec<PeerId> = all
        .iter()
        .copied()
        .filter(|p| *p != reader.peer_id())
        .collect();
    nodes[0]
        .dangerous_put_to(b"repaired".to_vec(), record(1, b"old"), all)
        .await
        .expect("everyone acknowledges");
    nodes[0]
        .dangerous_put_to(b"repaired".to_vec(), record(2, b"new"), others)
        .await
        .expect("everyone else acknowledges");
    let first = reader.get(b"repaired".to_vec()).await.expect("found");
    assert_eq!(first.record.seq, 1, "the reader's own copy answers first");
    let repaired = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            let got = reader.get(b"repaired".to_vec()).await.expect("found");
            if got.record.seq == 2 {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("the higher sequence reaches the reader within the query bound");
    assert_eq!(repaired.record.value, b"new");
    assert_eq!(
        reader
            .stored(b"repaired".to_vec())
            .await
            .map(|s| s.record().seq),
        Some(2)
    );

    // Lookups find the peers.
    let closest = nodes[3]
        .find_node(nodes[5].peer_id())
        .await
        .expect("lookup");
    assert!(closest.contains(&nodes[5].peer_id()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_without_valid_proof_stays_out() {
    const N: usize = 6;
    let nodes = cluster(N, N - 1).await;
    let seed = (
        nodes[0].peer_id(),
        // The seed's address is found again by listening: ask the seed for a second address.
        nodes[0]
            .listen("/memory/0".parse().expect("valid multiaddr"))
            .await
            .expect("listen"),
    );
    let (cheat, _) = start(invalid_proof).await;
    // The seed lists a peer that showed a proof while the proof is checked, so the cheat's join
    // may be answered in that window; its check then fails, and it is refused and disconnected.
    let joined = cheat.join(vec![seed]).await;
    assert!(
        matches!(
            joined,
            Ok(_) | Err(JoinError::NoSeedVerified { .. } | JoinError::Swim(_))
        ),
        "{joined:?}"
    );
    let put = cheat.put(b"cheat".to_vec(), b"x".to_vec(), TTL, None).await;
    assert!(
        matches!(put, Err(PutError::Quorum { acked: 0, .. })),
        "{put:?}"
    );
    // Give gossip time to spread anything it would.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for c in &nodes {
        assert!(!c.members().await.contains(&cheat.peer_id()));
        assert!(!c.peers().await.contains(&cheat.peer_id()));
        assert!(c.stored(b"cheat".to_vec()).await.is_none());
    }
    let stats = nodes[0].stats().await.expect("running");
    assert!(stats.refused_peers >= 1, "{stats:?}");
    // The cheat itself may list the members it met while the seed checked it (their proofs are
    // valid); what matters is that none of them lists or routes to it, asserted above.
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_envelope_replayed_notice_and_lockstep_mismatch_are_refused() {
    const N: usize = 6;
    let nodes = cluster(N, N - 1).await;
    let others: Vec<PeerId> = nodes[1..].iter().map(Client::peer_id).collect();

    // A record whose value was altered after signing.
    let signer = NodeKey::generate();
    let record = SignedRecord::create(
        &signer,
        NewRecord {
            key: b"tampered".to_vec(),
            value: b"original value".to_vec(),
            seq: 1,
            ttl: 3600,
        },
        unix_now(),
        &config().stamps,
    )
    .expect("create");
    let mut bytes = record.into_bytes();
    let at = bytes
        .windows(8)
        .position(|w| w == b"original")
        .expect("the value is in the envelope");
    bytes[at] = b'O';
    assert!(SignedRecord::decode(&bytes).is_err());
    let put = nodes[0]
        .dangerous_put_to(b"tampered".to_vec(), bytes, others.clone())
        .await;
    assert!(
        matches!(put, Err(PutError::Quorum { acked: 0, refused, reason: Some(_), .. }) if refused == N - 1),
        "every replica refuses it, and says so: {put:?}"
    );
    // Peers refuse it: nobody stores it, and each counted a refusal from the sender.
    for c in &nodes[1..] {
        assert!(c.stored(b"tampered".to_vec()).await.is_none());
        let stats = c.stats().await.expect("running");
        assert_eq!(stats.refused_puts.get(&nodes[0].peer_id()), Some(&1));
    }

    // Lockstep: announce one value, then put another under the announced sequence.
    let publisher = &nodes[2];
    let announced = publisher
        .announce(b"locked".to_vec(), b"promised".to_vec(), None)
        .await
        .expect("announce");
    assert_eq!(announced.accepted, N - 1);
    // The publisher's own node refuses it: it holds its own notice.
    let own = publisher
        .put_request(PutRequest {
            key: b"locked".to_vec(),
            value: b"something else".to_vec(),
            ttl: TTL,
            quorum: None,
            seq: Some(announced.seq),
            route: Default::default(),
        })
        .await;
    assert!(
        matches!(own, Err(PutError::Lockstep(LockstepError::Mismatch { seq })) if seq == announced.seq),
        "{own:?}"
    );
    // Signed by the publisher and sent straight to every other node, peers refuse it too.
    let contradicting = SignedRecord::create(
        &key_of(publisher.peer_id()),
        NewRecord {
            key: b"locked".to_vec(),
            value: b"something else".to_vec(),
            seq: announced.seq,
            ttl: 3600,
        },
        unix_now(),
        &config().stamps,
    )
    .expect("create");
    let everyone_else: Vec<PeerId> = nodes
        .iter()
        .filter(|c| c.peer_id() != publisher.peer_id())
        .map(Client::peer_id)
        .collect();
    let put = publisher
        .dangerous_put_to(
            b"locked".to_vec(),
            contradicting.into_bytes(),
            everyone_else,
        )
        .await;
    assert!(
        matches!(put, Err(PutError::Quorum { acked: 0, refused, reason: Some(ref why), .. })
            if refused == N - 1 && why.contains("announced")),
        "{put:?}"
    );
    for (i, c) in nodes.iter().enumerate() {
        if i != 2 {
            assert!(c.stored(b"locked".to_vec()).await.is_none(), "node {i}");
            let refused = c.stats().await.expect("running").refused_puts;
            assert_eq!(refused.get(&publisher.peer_id()), Some(&1), "node {i}");
        }
    }
    // Nobody holds a copy: a get finds nothing.
    let got = nodes[4].get(b"locked".to_vec()).await;
    assert!(got.is_err(), "{got:?}");

    // A put matching its notice is stored and reported announced.
    let publisher = &nodes[3];
    let mut notices = nodes[5].subscribe();
    let announced = publisher
        .announce(b"kept".to_vec(), b"promised".to_vec(), None)
        .await
        .expect("announce");
    // `announce` returns once the replicas accepted the notice; subscribers hear notices from
    // the broadcast overlay, which may bring the earlier "locked" one to node 5 only now. That
    // one, and no other, may come first.
    let notice = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let notice = notices.recv().await.expect("no lag");
            if notice.notice().key == b"kept" {
                return notice;
            }
            assert_eq!(notice.notice().key, b"locked", "only the earlier notice");
        }
    })
    .await
    .expect("the subscriber hears the notice");
    // The same notice sent again is a replay of its stamp, and refused.
    let replay = nodes[0]
        .dangerous_announce_to(nodes[5].peer_id(), notice.as_bytes().to_vec())
        .await;
    assert!(
        matches!(replay, Some(Response::Refused(ref why)) if why.contains("replayed")),
        "{replay:?}"
    );
    publisher
        .put_request(PutRequest {
            key: b"kept".to_vec(),
            value: b"promised".to_vec(),
            ttl: TTL,
            quorum: None,
            seq: Some(announced.seq),
            route: Default::default(),
        })
        .await
        .expect("put");
    let got = nodes[1].get(b"kept".to_vec()).await.expect("found");
    assert_eq!(got.record.value, b"promised");
    assert_eq!(got.announced, Announced::Yes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_nodes_put_get_and_survive_killing_a_fifth() {
    const N: usize = 50;
    let started = std::time::Instant::now();
    let nodes = cluster(N, Config::local().replication_factor.get()).await;
    eprintln!("{N} nodes converged in {:?}", started.elapsed());
    // Every node verified every member, most of them through proofs relayed by the member that
    // named them rather than over a connection of their own.
    let (mut by_relay, mut connected) = (0, 0);
    for n in &nodes {
        let s = n.stats().await.expect("node running");
        assert!(
            s.verified >= N - 1,
            "{} verified only {}",
            n.peer_id(),
            s.verified
        );
        assert_eq!(s.refused_relayed, 0);
        by_relay += s.verified_by_relay;
        connected += s.connected_peers;
    }
    eprintln!("{by_relay} members verified by relay; {connected} connected pairs (both ends)");
    assert!(
        by_relay > N,
        "members are verified through relayed proofs ({by_relay})"
    );
    // A fixed pseudo-random walk over writers and readers (printed, so a failure can be replayed).
    let mut x: usize = 0x5eed;
    let mut next = || {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (x >> 33) % N
    };
    for i in 0..20 {
        let (w, r) = (next(), next());
        let key = format!("big-{i}").into_bytes();
        let value = vec![i as u8; 1000 + i * 3000];
        nodes[w]
            .put(key.clone(), value.clone(), TTL, None)
            .await
            .unwrap_or_else(|e| panic!("put {i} from node {w}: {e}"));
        let got = nodes[r]
            .get(key)
            .await
            .unwrap_or_else(|e| panic!("get {i} at node {r}: {e}"));
        assert_eq!(
            got.record.value, value,
            "key {i} written by {w}, read by {r}"
        );
    }
    eprintln!("puts and gets done in {:?}", started.elapsed());
    // Lookups from random nodes find exactly the k closest peers to random targets, asking each
    // of them and hardly anyone else (the seeds come from the verified membership).
    let k = Config::local().replication_factor.get();
    for i in 0..10 {
        let from = next();
        let target = NodeKey::generate().peer_id();
        let key = KeyHash::of(&target.to_bytes());
        let mut truth: Vec<PeerId> = nodes
            .iter()
            .map(|n| n.peer_id())
            .filter(|p| *p != nodes[from].peer_id())
            .collect();
        truth.sort_by_key(|p| key.distance(&KeyHash::of(&p.to_bytes())));
        truth.truncate(k);
        let found = nodes[from]
            .find_node_with_stats(target, Route::Auto)
            .await
            .unwrap_or_else(|e| panic!("lookup {i} from node {from}: {e}"));
        assert_eq!(found.peers, truth, "lookup {i} from node {from}");
        assert!(
            found.stats.requests as usize <= 2 * k && found.stats.failures == 0,
            "lookup {i} from node {from}: {:?}",
            found.stats
        );
    }
    // Kill 20% of the nodes (writers among them): every record is still found by the others.
    let dead = N / 5;
    for n in &nodes[N - dead..] {
        kill(n.peer_id());
    }
    let survivors = &nodes[..N - dead];
    for i in 0..20 {
        let r = next() % survivors.len();
        let got = survivors[r]
            .get(format!("big-{i}").into_bytes())
            .await
            .unwrap_or_else(|e| panic!("get {i} at node {r} after the kill: {e}"));
        assert_eq!(got.record.value, vec![i as u8; 1000 + i * 3000]);
    }
    eprintln!("done in {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_is_durable_before_replication_and_survives_a_restart() {
    let dir = tempfile::tempdir().expect("temp dir");
    let key = NodeKey::generate();
    let proof = valid_proof(&key);
    let config = Config {
        data_dir: Some(dir.path().to_path_buf()),
        ..config()
    };
    let run = |key: NodeKey| {
        let transport = memory_transport(&key.to_libp2p());
        let (client, event_loop) =
            EventLoop::new(key, proof, config.clone(), transport).expect("the local preset starts");
        (client, tokio::spawn(event_loop.run()))
    };
    let (client, task) = run(NodeKey::from_seed(key.seed()));
    // Alone, the put cannot reach its quorum, but it was stored durably first.
    let put = client
        .put(b"durable".to_vec(), b"kept".to_vec(), TTL, None)
        .await;
    let Err(PutError::Quorum { seq, acked: 0, .. }) = put else {
        panic!("{put:?}");
    };
    drop(client);
    task.await
        .expect("the event loop ends when its clients are gone");

    let (client, _task) = run(key);
    let held = client
        .stored(b"durable".to_vec())
        .await
        .expect("the record was loaded back from redb");
    assert_eq!(held.record().value, b"kept");
    assert_eq!(held.record().seq, seq);
    // The sequence rule continues above the stored record.
    let again = client
        .put(b"durable".to_vec(), b"newer".to_vec(), TTL, None)
        .await;
    assert!(
        matches!(again, Err(PutError::Quorum { seq: s, .. }) if s > seq),
        "{again:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_members_notices_and_graceful_shutdown() {
    const N: usize = 6;
    let nodes = cluster(N, N - 1).await;

    // Counters and gauges. Membership can converge (through relayed proofs) before node 1's
    // first probe period ends: wait for its first probe.
    let probed = eventually(5, || async {
        nodes[1].stats().await.is_some_and(|s| s.swim.probes > 0)
    })
    .await;
    assert!(probed, "node 1 never probed");
    let before = nodes[1].stats().await.expect("running");
    assert_eq!(before.members.alive, N - 1, "{before:?}");
    assert_eq!(before.members.dead + before.members.left, 0, "{before:?}");
    assert_eq!(before.routing_peers, N - 1, "{before:?}");
    assert!(before.swim.probes > 0, "{before:?}");
    assert!(before.swim_wire.sent > 0 && before.swim_wire.received > 0);
    assert!(
        before.verifier.scrypt_evaluations + before.verifier.cache_hits >= (N - 1) as u64,
        "{before:?}"
    );
    assert_eq!(before.listen_addrs.len(), 1, "{before:?}");
    let lookup = nodes[1]
        .find_node_with_stats(nodes[4].peer_id(), Route::Iterative)
        .await
        .expect("lookup");
    assert!(lookup.peers.contains(&nodes[4].peer_id()));
    assert!(lookup.stats.requests >= 1 && lookup.stats.successes >= 1);
    nodes[1]
        .put(b"counted".to_vec(), b"v".to_vec(), TTL, None)
        .await
        .expect("put");
    let after = nodes[1].stats().await.expect("running");
    assert!(after.queries >= before.queries + 2, "{after:?}");
    assert_eq!(after.records, before.records + 1);
    assert!(after.rpcs.lookups >= 1, "{after:?}");
    // The lookups' requests were served by the others.
    let mut served = 0;
    for c in &nodes {
        let stats = c.stats().await.expect("running");
        served += stats.lookups_served;
    }
    assert!(served >= after.rpcs.lookups, "{served} served");

    // The member list names every other node, alive, with its address.
    let list = nodes[2].member_list().await;
    assert_eq!(list.len(), N - 1);
    for m in &list {
        assert_eq!(m.state, shoal_swim::State::Alive, "{m:?}");
        assert!(!m.addrs.is_empty(), "{m:?}");
        assert!(nodes.iter().any(|c| c.peer_id() == m.peer));
    }

    // Notices: nothing known is an empty answer; then the latest per publisher, newest first.
    assert!(
        nodes[0]
            .notices(b"quiet".to_vec())
            .await
            .expect("ok")
            .is_empty()
    );
    let first = nodes[3]
        .announce(b"noted".to_vec(), b"one".to_vec(), Some(1))
        .await
        .expect("announce");
    nodes[3]
        .announce(b"noted".to_vec(), b"two".to_vec(), Some(2))
        .await
        .expect("announce");
    // A second publisher, a second later so the order by creation time is certain.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    nodes[4]
        .announce(b"noted".to_vec(), b"other".to_vec(), Some(7))
        .await
        .expect("announce");
    assert_eq!(first.seq, 1);
    for reader in [&nodes[0], &nodes[3]] {
        let found = reader.notices(b"noted".to_vec()).await.expect("ok");
        let got: Vec<(PeerId, u64)> = found
            .iter()
            .map(|n| (n.notice().publisher.peer_id(), n.notice().seq))
            .collect();
        assert_eq!(
            got,
            vec![(nodes[4].peer_id(), 7), (nodes[3].peer_id(), 2)],
            "at {}",
            reader.peer_id()
        );
    }
    assert!(nodes[0].stats().await.expect("running").notices >= 2);

    // A node on redb joins, puts, and shuts down gracefully.
    let dir = tempfile::tempdir().expect("temp dir");
    let on_disk = Config {
        data_dir: Some(dir.path().to_path_buf()),
        ..config()
    };
    let key = NodeKey::generate();
    let proof = valid_proof(&key);
    let seed_addr = nodes[0]
        .listen("/memory/0".parse().expect("valid multiaddr"))
        .await
        .expect("listen");
    let (leaver, _, task) =
        start_with(NodeKey::from_seed(key.seed()), proof, on_disk.clone()).await;
    leaver
        .join(vec![(nodes[0].peer_id(), seed_addr)])
        .await
        .expect("join");
    assert!(
        eventually(20, || async { leaver.members().await.len() == N }).await,
        "the new node sees everyone"
    );
    let put = leaver
        .put(b"on-disk".to_vec(), b"kept".to_vec(), TTL, None)
        .await
        .expect("put");
    let started = std::time::Instant::now();
    tokio::time::timeout(Duration::from_secs(5), leaver.shutdown())
        .await
        .expect("shutdown returns within its bound");
    tokio::time::timeout(Duration::from_secs(1), task)
        .await
        .expect("the event loop has ended")
        .expect("the event loop did not panic");
    eprintln!("shutdown took {:?}", started.elapsed());
    assert!(matches!(
        leaver.get(b"on-disk".to_vec()).await,
        Err(GetError::Stopped)
    ));
    assert!(leaver.stats().await.is_none());
    leaver.shutdown().await; // Harmless when already stopped.

    // The others saw it leave (not fail).
    let gone = leaver.peer_id();
    let saw_leave = eventually(10, || async {
        for c in &nodes {
            let state = c
                .member_list()
                .await
                .into_iter()
                .find(|m| m.peer == gone)
                .map(|m| m.state);
            if state != Some(shoal_swim::State::Left) {
                return false;
            }
        }
        true
    })
    .await;
    assert!(saw_leave, "every node saw the departure");
    for c in &nodes {
        assert!(!c.peers().await.contains(&gone));
    }

    // The database was closed: it reopens at once, with the record.
    let transport = memory_transport(&key.to_libp2p());
    let (client, _task) = match EventLoop::new(key, proof, on_disk, transport) {
        Ok((client, event_loop)) => (client, tokio::spawn(event_loop.run())),
        Err(StartError::Storage(e)) => panic!("the database is still open: {e}"),
        Err(e) => panic!("{e}"),
    };
    let held = client
        .stored(b"on-disk".to_vec())
        .await
        .expect("the record was loaded back");
    assert_eq!(held.record().value, b"kept");
    assert_eq!(held.record().seq, put.seq);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routing_snapshot_rejoins_without_seeds_after_a_restart() {
    const N: usize = 4;
    let nodes = cluster(N, N - 1).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let on_disk = Config {
        data_dir: Some(dir.path().to_path_buf()),
        ..config()
    };
    let key = NodeKey::generate();
    let proof = valid_proof(&key);

    // Alone and without a snapshot, a join without seeds has nobody to ask.
    let (node, _, task) = start_with(NodeKey::from_seed(key.seed()), proof, on_disk.clone()).await;
    assert!(matches!(
        node.join(Vec::new()).await,
        Err(JoinError::NoSeedVerified { tried: 0 })
    ));
    let seed_addr = nodes[0]
        .listen("/memory/0".parse().expect("valid multiaddr"))
        .await
        .expect("listen");
    node.join(vec![(nodes[0].peer_id(), seed_addr)])
        .await
        .expect("join");
    assert!(
        eventually(20, || async { node.members().await.len() == N }).await,
        "the new node sees everyone"
    );
    // Shutdown writes the snapshot.
    node.shutdown().await;
    task.await.expect("the event loop ended cleanly");

    // Restarted on the same data directory, it joins without seeds and is seen alive again.
    let (node, _, _task) = start_with(key, proof, on_disk).await;
    // Under a loaded test run SWIM's join can time out; a node retries, and so does the test.
    let mut joined = node.join(Vec::new()).await;
    for _ in 0..2 {
        match &joined {
            Err(JoinError::Swim(e)) => eprintln!("join through the snapshot: {e}; again"),
            _ => break,
        }
        joined = node.join(Vec::new()).await;
    }
    let joined = joined.expect("join through the snapshot");
    assert!(joined.verified_seeds >= 1, "{joined:?}");
    let me = node.peer_id();
    let back = eventually(20, || async {
        if node.members().await.len() != N {
            return false;
        }
        for c in &nodes {
            if !c.members().await.contains(&me) {
                return false;
            }
        }
        true
    })
    .await;
    assert!(back, "the restarted node rejoined everyone");
}

/// A node whose swarm always has inbound traffic ready still serves its own clients: commands
/// are taken every turn of its loop, whatever the swarm holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooded_node_still_answers_its_clients_in_time() {
    const BOUND: Duration = Duration::from_secs(1);
    let nodes = cluster(3, 2).await;
    let target = nodes[0].clone();
    target
        .put(b"kept".to_vec(), b"v".to_vec(), TTL, None)
        .await
        .expect("put");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut flood = Vec::new();
    for i in 0..64 {
        let from = nodes[1 + i % 2].clone();
        let stop = stop.clone();
        let to = target.peer_id();
        flood.push(tokio::spawn(async move {
            let mut sent = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                // Garbage announcements: each costs the target a decode and a refusal.
                let _ = from.dangerous_announce_to(to, vec![0xa5; 2048]).await;
                sent += 1;
            }
            sent
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut slowest = Duration::ZERO;
    for _ in 0..20 {
        let started = tokio::time::Instant::now();
        let got = tokio::time::timeout(BOUND, target.get(b"kept".to_vec()))
            .await
            .expect("a get within its bound while flooded")
            .expect("found");
        assert_eq!(got.record.value, b"v");
        let stats = tokio::time::timeout(BOUND, target.stats())
            .await
            .expect("stats within their bound while flooded");
        assert!(stats.is_some());
        slowest = slowest.max(started.elapsed());
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut sent = 0;
    for task in flood {
        sent += task.await.expect("flood task");
    }
    eprintln!("{sent} requests flooded in; slowest get + stats {slowest:?}");
    assert!(sent > 100, "the flood ran ({sent} requests)");
}

/// A write that fails on disk is refused, never acknowledged: a replica answers with the storage
/// error and does not keep the record; the node's own put reports it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_write_is_refused_not_acknowledged() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut nodes = Vec::new();
    let mut seed = None;
    for i in 0..3 {
        let key = NodeKey::generate();
        let proof = valid_proof(&key);
        let config = Config {
            data_dir: Some(dir.path().join(format!("node{i}"))),
            put_quorum: NonZeroUsize::MIN,
            ..config()
        };
        let (client, addr, _) = start_with(key, proof, config).await;
        if seed.is_none() {
            seed = Some((client.peer_id(), addr));
        }
        nodes.push(client);
    }
    let seed = seed.expect("three nodes");
    for c in &nodes[1..] {
        c.join(vec![seed.clone()]).await.expect("join");
    }
    let converged = eventually(20, || async {
        for c in &nodes {
            if c.peers().await.len() < 2 {
                return false;
            }
        }
        true
    })
    .await;
    assert!(converged);

    // One replica's disk fails: its answer says so and it keeps nothing; the other keeps it.
    assert!(nodes[2].dangerous_fail_writes(1).await);
    let all = NonZeroUsize::new(2);
    let result = nodes[0]
        .put(b"failing".to_vec(), b"v".to_vec(), TTL, all)
        .await;
    let Err(PutError::Quorum {
        acked,
        refused,
        reason,
        ..
    }) = result
    else {
        panic!("a quorum of both replicas cannot be met: {result:?}");
    };
    assert_eq!((acked, refused), (1, 1));
    assert!(reason.expect("a reason").contains("storage"));
    assert!(nodes[2].stored(b"failing".to_vec()).await.is_none());
    assert!(nodes[1].stored(b"failing".to_vec()).await.is_some());
    let stats = nodes[2].stats().await.expect("running");
    assert_eq!(stats.failed_writes, 1);

    // The node's own disk fails. A put whose sequence number must first raise the persisted
    // floor is refused and the record not kept.
    let put_seq = |key: &[u8], seq: u64| PutRequest {
        key: key.to_vec(),
        value: b"v".to_vec(),
        ttl: TTL,
        quorum: None,
        seq: Some(seq),
        route: Route::Auto,
    };
    let high = unix_now() + 10 * shoal_dht::core::SEQ_FLOOR_RESERVE;
    assert!(nodes[0].dangerous_fail_writes(1).await);
    let result = nodes[0].put_request(put_seq(b"mine", high)).await;
    assert!(matches!(result, Err(PutError::Store(_))), "{result:?}");
    assert!(nodes[0].stored(b"mine".to_vec()).await.is_none());
    // The disk works again: the same put goes through.
    nodes[0]
        .put_request(put_seq(b"mine", high))
        .await
        .expect("put once the disk works");
    // Under the floor, the replicas' acknowledgements are the put's; the node's own copy is
    // written with the copies, and dropped when that write fails.
    assert!(nodes[0].dangerous_fail_writes(1).await);
    nodes[0]
        .put_request(put_seq(b"below", high - 1))
        .await
        .expect("acknowledged by the replicas");
    let dropped = eventually(10, || async {
        nodes[0].stored(b"below".to_vec()).await.is_none()
    })
    .await;
    assert!(dropped, "the own copy whose write failed is not kept");
    assert!(nodes[1].stored(b"below".to_vec()).await.is_some());
}

/// A wall clock set off from the system's by a number of seconds.
#[derive(Debug)]
struct OffsetClock(i64);

impl shoal_dht::node::WallClock for OffsetClock {
    fn unix(&self) -> u64 {
        unix_now().saturating_add_signed(self.0)
    }
}

/// A node restarts with its wall clock stepped back an hour: the incarnation and the sequence
/// numbers it persisted stay ahead of the clock, so its return is news the others take at once
/// (no refutation) and its puts are not refused as stale.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_clock_stepped_back_an_hour_across_a_restart() {
    const DAY: Duration = Duration::from_secs(86_400);
    let nodes = cluster(4, 3).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let key = NodeKey::generate();
    let proof = valid_proof(&key);
    let config = Config {
        data_dir: Some(dir.path().to_path_buf()),
        ..config()
    };
    let seed = {
        let addr = nodes[0]
            .stats()
            .await
            .expect("running")
            .listen_addrs
            .first()
            .cloned()
            .expect("listening");
        (nodes[0].peer_id(), addr)
    };
    let start = |offset: i64| {
        let key = NodeKey::from_seed(key.seed());
        let transport = memory_transport(&key.to_libp2p());
        let clock = std::sync::Arc::new(OffsetClock(offset));
        let (client, event_loop) =
            EventLoop::with_clock(key, proof, config.clone(), transport, clock)
                .expect("the local preset starts");
        let task = tokio::spawn(event_loop.run());
        (client, task)
    };
    // It starts on the system's clock, and restarts an hour behind it (a clock that stepped
    // back). Its records live a day, so their creation an hour back in the others' eyes is no
    // reason to refuse them.
    let (client, _task) = start(0);
    client
        .listen("/memory/0".parse().expect("valid multiaddr"))
        .await
        .expect("listen");
    client.join(vec![seed.clone()]).await.expect("join");
    let joined = eventually(20, || async { client.peers().await.len() == 4 }).await;
    assert!(joined, "the node knows the cluster");
    let first = client
        .put(b"stepped".to_vec(), b"before".to_vec(), DAY, None)
        .await
        .expect("put before the restart");
    let before = client.stats().await.expect("running");
    client.shutdown().await;

    let (client, _task) = start(-3600);
    client
        .listen("/memory/0".parse().expect("valid multiaddr"))
        .await
        .expect("listen");
    client.join(vec![seed]).await.expect("rejoin");
    let joined = eventually(20, || async { client.peers().await.len() == 4 }).await;
    assert!(joined, "the node knows the cluster again");
    let again = client
        .put(b"stepped".to_vec(), b"after".to_vec(), DAY, None)
        .await
        .expect("a put after the clock stepped back is not refused");
    assert!(again.seq > first.seq, "{} after {}", again.seq, first.seq);
    let fresh = client
        .put(b"fresh".to_vec(), b"v".to_vec(), DAY, None)
        .await
        .expect("put of a new key");
    assert!(fresh.seq > first.seq, "sequence numbers never go backwards");
    let back = eventually(20, || async {
        for c in &nodes {
            let list = c.member_list().await;
            let alive = list
                .iter()
                .any(|m| m.peer == client.peer_id() && m.state == shoal_swim::State::Alive);
            if !alive {
                return false;
            }
        }
        true
    })
    .await;
    assert!(back, "the others hold the restarted node alive");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = client.stats().await.expect("running");
    assert_eq!(after.swim.refutations, 0, "{after:?}");
    assert_eq!(before.swim.refutations, 0, "{before:?}");
    for c in &nodes {
        let stats = c.stats().await.expect("running");
        assert_eq!(stats.refused_puts_total, 0, "{stats:?}");
    }
    let got = nodes[2]
        .get(b"stepped".to_vec())
        .await
        .expect("the newer value is found");
    assert_eq!(got.record.value, b"after");
}
