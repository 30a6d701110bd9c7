//! Unit tests of the core's rules on virtual time: single cores driven by hand, and small
//! networks driven by the simulator ([`crate::sim`]) with fixed seeds.

use std::time::{Duration, Instant};

use serde_bytes::ByteBuf;
use shoal_swim::{Credential, Message, Payload, State, Update};

use super::*;
use crate::api::{AnnounceError, GetError, JoinError, JoinOk, Path, Route};
use crate::lockstep::Announced;
use crate::receipt::Receipt;
use crate::record::NewRecord;
use crate::sim::{self, Adversary, Sim, SimChecks, SimConfig, SimPeer, proof_of};
use crate::wire::Relayed;

const SECRET: u64 = 7;
const UNIX: u64 = crate::sim::START_UNIX;
const TTL: Duration = Duration::from_secs(3600);

fn config() -> Config {
    Config {
        rng_seed: Some([3; 32]),
        ..Config::local()
    }
}

/// A lone core (id `id`), in memory or with a disk.
fn lone(id: u32, persistent: bool) -> (Core<SimPeer, SimChecks>, Instant) {
    let now = Instant::now();
    let key = crate::sim::key_of(SECRET, SimPeer(id));
    let core = Core::new(
        now,
        UNIX,
        SimPeer(id),
        key,
        SimChecks::new(SECRET),
        config(),
        persistent,
        Restored::default(),
    )
    .unwrap();
    (core, now)
}

/// A lone core (id 0) that knows members 1 to 30 and whose view has settled, its actions
/// drained, and the time it settled.
fn settled_lone(persistent: bool) -> (Core<SimPeer, SimChecks>, Instant) {
    let (mut core, start) = lone(0, persistent);
    let members = (1..=30u32).map(|i| Known {
        peer: SimPeer(i),
        addrs: Vec::new(),
        proof: proof(i),
        incarnation: 1,
    });
    core.bootstrap(start, UNIX, members);
    let now = start + core.config().view_settle;
    drain(&mut core);
    (core, now)
}

/// The writes among `actions`: id, operations and durability.
fn writes(actions: &[Action<SimPeer>]) -> Vec<(WriteId, &[WriteOp<SimPeer>], Durability)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Write {
                id,
                ops,
                durability,
            } => Some((*id, &ops[..], *durability)),
            _ => None,
        })
        .collect()
}

fn drain(core: &mut Core<SimPeer, SimChecks>) -> Vec<Action<SimPeer>> {
    std::iter::from_fn(|| core.poll_action()).collect()
}

/// The identity checks among `actions`, in order.
fn checks_asked(actions: &[Action<SimPeer>]) -> Vec<(SimPeer, Vec<u8>)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Verify { peer, proof, .. } => Some((*peer, proof.clone())),
            _ => None,
        })
        .collect()
}

/// Runs the identity checks the core asks for among `actions`, and those it asks for next,
/// as a runtime does; the peers checked, in order, and the actions left.
fn run_checks(
    core: &mut Core<SimPeer, SimChecks>,
    now: Instant,
    mut actions: Vec<Action<SimPeer>>,
) -> (Vec<SimPeer>, Vec<Action<SimPeer>>) {
    let mut checked = Vec::new();
    let mut rest = Vec::new();
    loop {
        let asked = checks_asked(&actions);
        assert!(
            asked.len() <= 2,
            "one check of each kind at a time: {asked:?}"
        );
        rest.extend(
            actions
                .into_iter()
                .filter(|a| !matches!(a, Action::Verify { .. })),
        );
        if asked.is_empty() {
            return (checked, rest);
        }
        actions = Vec::new();
        for (peer, proof) in asked {
            let result = core.checks_mut().verify(now, &peer, &proof);
            core.handle_verified(now, UNIX, peer, result);
            checked.push(peer);
            actions.extend(drain(core));
        }
    }
}

/// A relayer's answer holding the proofs of `members`.
fn proofs_of(members: &[u32]) -> Response {
    Response::Proofs(
        members
            .iter()
            .map(|&m| {
                (
                    ByteBuf::from(SimPeer(m).to_bytes()),
                    Relayed::Proof(ByteBuf::from(proof(m))),
                )
            })
            .collect(),
    )
}

fn proof(id: u32) -> Vec<u8> {
    proof_of(SECRET, SimPeer(id)).to_vec()
}

fn responses(actions: &[Action<SimPeer>]) -> Vec<(InboundId, &Response)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Respond { id, response } => Some((*id, response)),
            _ => None,
        })
        .collect()
}

fn sends(actions: &[Action<SimPeer>]) -> Vec<(SimPeer, RequestId, &Request)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send {
                to, id, request, ..
            } => Some((*to, *id, request)),
            _ => None,
        })
        .collect()
}

fn record(signer: &NodeKey, key: &[u8], value: &[u8], seq: u64) -> SignedRecord {
    let new = NewRecord {
        key: key.to_vec(),
        value: value.to_vec(),
        seq,
        ttl: 3600,
    };
    SignedRecord::create(signer, new, UNIX, &config().stamps).unwrap()
}

fn put(key: &[u8], value: &[u8], seq: Option<u64>) -> Command<SimPeer> {
    put_for(key, value, seq, TTL)
}

fn put_for(key: &[u8], value: &[u8], seq: Option<u64>, ttl: Duration) -> Command<SimPeer> {
    Command::Put(PutRequest {
        key: key.to_vec(),
        value: value.to_vec(),
        ttl,
        quorum: None,
        seq,
        route: Default::default(),
    })
}

fn gossip_from(
    core: &mut Core<SimPeer, SimChecks>,
    now: Instant,
    from: u32,
    news: Vec<Update<SimPeer>>,
) {
    let msg = Message {
        payload: Payload::Gossip,
        gossip: news,
    };
    core.handle_swim(now, UNIX, SimPeer(from), msg);
}

fn news(member: u32, incarnation: u64, state: State, by: u32) -> Update<SimPeer> {
    Update {
        member: SimPeer(member),
        incarnation,
        state,
        addrs: Vec::new(),
        by: matches!(state, State::Suspect | State::Dead).then_some(SimPeer(by)),
        credential: Credential::default(),
    }
}

/// News that `member` is alive carrying `said` of its proof.
fn news_with(member: u32, said: Relayed) -> Update<SimPeer> {
    Update {
        credential: said.to_credential().expect("a proof"),
        ..news(member, 1, State::Alive, 0)
    }
}

/// The SWIM messages among `actions`, with their receivers.
fn swims(actions: &[Action<SimPeer>]) -> Vec<(SimPeer, &Message<SimPeer>)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Swim { to, msg, .. } => Some((*to, msg)),
            _ => None,
        })
        .collect()
}

// ----- admission -----

/// A lone core (id 0) under `trust`.
fn lone_trusting(trust: crate::TrustPolicy) -> (Core<SimPeer, SimChecks>, Instant) {
    let now = Instant::now();
    let config = Config { trust, ..config() };
    let key = crate::sim::key_of(SECRET, SimPeer(0));
    let checks = SimChecks::new(SECRET);
    let core = Core::new(
        now,
        UNIX,
        SimPeer(0),
        key,
        checks,
        config,
        false,
        Restored::default(),
    );
    (core.unwrap(), now)
}

#[test]
fn a_denied_peer_never_enters_the_membership_however_it_comes() {
    let deny = vec![SimPeer(5).to_bytes()];
    let (mut core, now) = lone_trusting(crate::TrustPolicy {
        deny,
        ..Default::default()
    });
    core.handle_gate(now, UNIX, SimPeer(1), Ok(()));
    drain(&mut core);
    // On a connection, with a valid proof: refused and disconnected.
    core.handle_gate(now, UNIX, SimPeer(5), Ok(()));
    let actions = drain(&mut core);
    assert!(
        actions
            .iter()
            .any(|a| matches!(a, Action::Disconnect { peer } if *peer == SimPeer(5))),
        "{actions:?}"
    );
    core.handle_presented(now, UNIX, SimPeer(5), &proof(5));
    assert!(!core.is_checking(&SimPeer(5)));
    // Named in gossip by an admitted member: not listed, its proof not even asked for.
    gossip_from(&mut core, now, 1, vec![news(5, 3, State::Alive, 5)]);
    let actions = drain(&mut core);
    assert!(
        !actions.iter().any(|a| matches!(
            a,
            Action::Send {
                request: Request::Proofs(_),
                ..
            }
        )),
        "{actions:?}"
    );
    // Its own messages: SWIM dropped, requests refused at once.
    gossip_from(&mut core, now, 5, vec![news(5, 3, State::Alive, 5)]);
    let find = Request::FindNode(ByteBuf::from(b"x".to_vec()));
    core.handle_request(now, UNIX, SimPeer(5), InboundId(1), find);
    let actions = drain(&mut core);
    assert!(matches!(
        responses(&actions)[..],
        [(InboundId(1), Response::Refused(why))] if why.contains("trust policy")
    ));
    // Bootstrapped from a member list: skipped.
    let known = |i: u32| Known {
        peer: SimPeer(i),
        addrs: Vec::new(),
        proof: proof(i),
        incarnation: 1,
    };
    assert_eq!(core.bootstrap(now, UNIX, [known(5), known(6)]), 1);
    assert!(!core.is_admitted(&SimPeer(5)));
    assert!(core.membership().member(&SimPeer(5)).is_none());
    assert!(core.is_admitted(&SimPeer(6)));
    assert!(core.stats().denied_peers >= 3);
    assert_eq!(core.stats().denied_messages, 2);
}

#[test]
fn a_peer_over_its_rate_is_slowed_then_refused_per_method_and_recovers() {
    let (mut core, now) = lone_trusting(crate::TrustPolicy {
        peer_requests_per_second: 10,
        peer_request_burst: 5,
        ..Default::default()
    });
    core.handle_gate(now, UNIX, SimPeer(1), Ok(()));
    drain(&mut core);
    let find = || Request::FindNode(ByteBuf::from(b"x".to_vec()));
    let limited = |actions: &[Action<SimPeer>]| {
        responses(actions)
            .iter()
            .filter(|(_, r)| matches!(r, Response::Refused(why) if why.contains("rate limited")))
            .count()
    };
    // The burst is served at once; the 3 over it wait for their tokens, 100 ms apart.
    for i in 0..8 {
        core.handle_request(now, UNIX, SimPeer(1), InboundId(i), find());
    }
    let actions = drain(&mut core);
    assert_eq!(responses(&actions).len(), 5, "the burst answered");
    assert_eq!(limited(&actions), 0, "none refused");
    assert_eq!(core.stats().slowed, 3);
    assert_eq!(core.sizes().slowed, 3);
    // Another method has its own bucket.
    let get = Request::GetRecord(ByteBuf::from(b"k".to_vec()));
    core.handle_request(now, UNIX, SimPeer(1), InboundId(100), get);
    assert_eq!(responses(&drain(&mut core)).len(), 1);
    // As the bucket refills, the slowed ones are served in turn.
    let mut served = Vec::new();
    for ms in [50, 100, 150, 200, 250, 300, 350] {
        let at = now + Duration::from_millis(ms);
        if core.poll_timeout().is_some_and(|t| t <= at) {
            core.handle_timeout(at, UNIX);
        }
        for (id, r) in responses(&drain(&mut core)) {
            assert!(!matches!(r, Response::Refused(_)), "{r:?}");
            served.push((ms, id));
        }
    }
    let ids: Vec<u64> = served.iter().map(|(_, id)| id.0).collect();
    assert_eq!(ids, vec![5, 6, 7], "in the order they came: {served:?}");
    assert!(
        served[0].0 >= 100 && served[2].0 <= 350,
        "at the rate: {served:?}"
    );
    assert_eq!(core.sizes().slowed, 0);
    // A flood past what may wait is refused, counted.
    let later = now + Duration::from_secs(10);
    let n = (5 + crate::core::MAX_SLOWED_PER_PEER + 4) as u64;
    for i in 0..n {
        core.handle_request(later, UNIX, SimPeer(1), InboundId(200 + i), find());
    }
    assert_eq!(limited(&drain(&mut core)), 4);
    assert_eq!(core.stats().rate_limited, 4);
    assert_eq!(core.sizes().slowed, crate::core::MAX_SLOWED_PER_PEER);
}

#[test]
fn a_peer_over_its_bandwidth_is_throttled_then_banned_and_recovers_after_the_period() {
    let ban_period = Duration::from_secs(60);
    let (mut core, t0) = lone_trusting(crate::TrustPolicy {
        peer_bytes_per_second: 1000,
        peer_bytes_burst: 2000,
        over_limit_ban_after: Duration::from_secs(10),
        ban_period,
        ..Default::default()
    });
    let (flooder, other) = (SimPeer(1), SimPeer(2));
    for peer in [flooder, other] {
        core.handle_gate(t0, UNIX, peer, Ok(()));
    }
    drain(&mut core);
    // Its burst, then throttled; another peer has its own share.
    assert!(core.admit_bytes(t0, flooder, 2000));
    assert!(!core.admit_bytes(t0, flooder, 100));
    assert!(core.admit_bytes(t0, other, 1500));
    // Backing off forgives it.
    let t1 = t0 + Duration::from_secs(3);
    assert!(core.admit_bytes(t1, flooder, 1500));
    // Twice its rate: throttled half the time, then banned once over it for ten seconds.
    let mut throttled = 0;
    let mut banned_at = None;
    for tick in 1..=150u32 {
        let now = t1 + Duration::from_millis(100) * tick;
        if !core.admit_bytes(now, flooder, 200) {
            throttled += 1;
        }
        if core.is_banned(&flooder) {
            banned_at = Some(now);
            break;
        }
    }
    let banned_at = banned_at.expect("banned");
    assert!(throttled >= 40, "throttled {throttled} times first");
    assert!(banned_at - t1 >= Duration::from_secs(10));
    let actions = drain(&mut core);
    assert!(
        actions
            .iter()
            .any(|a| matches!(a, Action::Disconnect { peer } if *peer == flooder))
    );
    assert!(!core.is_admitted(&flooder));
    assert_eq!(core.standing(banned_at, &flooder), 0);
    let (seen, banned) = core.misbehaviour();
    assert_eq!(seen[3], (Misbehaviour::OverLimit, 1));
    assert_eq!(banned, 1);
    assert_eq!(core.stats().bandwidth_limited, throttled + 1);
    // Banned: its requests are refused, its proof shown again does not admit it.
    core.handle_request(
        banned_at,
        UNIX,
        flooder,
        InboundId(1),
        Request::Notices(ByteBuf::from(b"k".to_vec())),
    );
    let actions = drain(&mut core);
    assert!(matches!(responses(&actions)[0].1, Response::Refused(why) if why.contains("denied")));
    core.handle_gate(banned_at, UNIX, flooder, Ok(()));
    assert!(!core.is_admitted(&flooder));
    // The period over, it is back, at half standing.
    let mut now = banned_at;
    while now < banned_at + ban_period + Duration::from_secs(2) {
        now = core
            .poll_timeout()
            .expect("the tick")
            .max(now + Duration::from_millis(1));
        core.handle_timeout(now, UNIX);
    }
    drain(&mut core);
    assert!(!core.is_banned(&flooder));
    assert_eq!(core.standing(now, &flooder), FULL_STANDING / 2);
    core.handle_gate(now, UNIX, flooder, Ok(()));
    assert!(core.is_admitted(&flooder));
    assert!(core.admit_bytes(now, flooder, 1000));
}

#[test]
fn a_peer_that_stays_over_its_request_rate_is_banned() {
    let (mut core, t0) = lone_trusting(crate::TrustPolicy {
        peer_requests_per_second: 10,
        peer_request_burst: 10,
        over_limit_ban_after: Duration::from_secs(5),
        ..Default::default()
    });
    core.handle_gate(t0, UNIX, SimPeer(1), Ok(()));
    drain(&mut core);
    let find = || Request::FindNode(ByteBuf::from(b"x".to_vec()));
    // Twenty a second for six seconds.
    for i in 0..120u32 {
        let now = t0 + Duration::from_millis(50) * i;
        core.handle_request(now, UNIX, SimPeer(1), InboundId(u64::from(i)), find());
    }
    assert!(core.is_banned(&SimPeer(1)));
    assert_eq!(core.misbehaviour().0[3], (Misbehaviour::OverLimit, 1));
}

#[test]
fn an_allow_list_admits_only_the_peers_it_names() {
    let allow = vec![SimPeer(1).to_bytes(), SimPeer(2).to_bytes()];
    let (mut core, now) = lone_trusting(crate::TrustPolicy {
        allow,
        ..Default::default()
    });
    for peer in 1..=3 {
        core.handle_gate(now, UNIX, SimPeer(peer), Ok(()));
    }
    assert!(core.is_admitted(&SimPeer(1)) && core.is_admitted(&SimPeer(2)));
    assert!(!core.is_admitted(&SimPeer(3)));
}

#[test]
fn requests_from_a_peer_not_admitted_wait_for_the_gate() {
    let (mut core, now) = lone(0, false);
    drain(&mut core);
    let find = Request::FindNode(ByteBuf::from(b"x".to_vec()));
    core.handle_request(now, UNIX, SimPeer(1), InboundId(1), find);
    assert!(
        responses(&drain(&mut core)).is_empty(),
        "held, not answered"
    );
    assert_eq!(core.sizes().held, 1);
    core.handle_gate(now, UNIX, SimPeer(1), Ok(()));
    let actions = drain(&mut core);
    assert_eq!(responses(&actions).len(), 1, "answered once admitted");
    assert!(core.is_admitted(&SimPeer(1)));
    assert_eq!(core.sizes().held, 0);
}

#[test]
fn a_peer_met_on_a_connection_takes_part_in_swim_at_once_and_serves_the_dht_once_checked() {
    let (mut core, now) = lone(0, false);
    core.handle_gate(now, UNIX, SimPeer(1), Ok(()));
    drain(&mut core);
    // Peer 5 shows its proof: no evaluation yet, but its SWIM messages reach the membership.
    core.handle_presented(now, UNIX, SimPeer(5), &proof(5));
    assert!(core.is_checking(&SimPeer(5)));
    let actions = drain(&mut core);
    let asked: Vec<_> = actions
        .iter()
        .filter_map(|a| match a {
            Action::Verify { peer, needed, .. } => Some((*peer, *needed)),
            _ => None,
        })
        .collect();
    assert_eq!(asked, vec![(SimPeer(5), false)], "nothing waits on it yet");
    gossip_from(&mut core, now, 5, vec![news(5, 2, State::Alive, 5)]);
    assert_eq!(core.stats().swim_unadmitted, 0);
    assert_eq!(
        core.membership().member(&SimPeer(5)).map(|m| m.incarnation),
        Some(2)
    );
    // Its DHT request waits for the check; a member asking for its proof gets it unchecked (and
    // the check becomes needed).
    let find = Request::FindNode(ByteBuf::from(b"x".to_vec()));
    core.handle_request(now, UNIX, SimPeer(5), InboundId(1), find);
    let ask = Request::Proofs(vec![ByteBuf::from(SimPeer(5).to_bytes())]);
    core.handle_request(now, UNIX, SimPeer(1), InboundId(2), ask.clone());
    let actions = drain(&mut core);
    let answered = responses(&actions);
    assert_eq!(answered.len(), 1);
    assert_eq!(
        answered[0],
        (
            InboundId(2),
            &Response::Proofs(vec![(
                ByteBuf::from(SimPeer(5).to_bytes()),
                Relayed::Unchecked(ByteBuf::from(proof(5)))
            )])
        )
    );
    let result = core.checks_mut().verify(now, &SimPeer(5), &proof(5));
    core.handle_verified(now, UNIX, SimPeer(5), result);
    let actions = drain(&mut core);
    assert_eq!(
        responses(&actions).len(),
        1,
        "its request served once checked"
    );
    assert!(core.is_admitted(&SimPeer(5)));
    core.handle_request(now, UNIX, SimPeer(1), InboundId(3), ask.clone());
    let actions = drain(&mut core);
    assert!(matches!(
        responses(&actions)[0].1,
        Response::Proofs(said) if matches!(said[0].1, Relayed::Proof(_))
    ));

    // A cheater's proof fails its check: forgotten, and refused when asked about.
    core.handle_presented(now, UNIX, SimPeer(6), &proof(7));
    gossip_from(&mut core, now, 6, vec![news(6, 1, State::Alive, 6)]);
    assert!(core.membership().member(&SimPeer(6)).is_some());
    let result = core.checks_mut().verify(now, &SimPeer(6), &proof(7));
    core.handle_verified(now, UNIX, SimPeer(6), result);
    assert!(core.membership().member(&SimPeer(6)).is_none());
    assert!(!core.is_checking(&SimPeer(6)) && !core.is_admitted(&SimPeer(6)));
    assert_eq!(core.stats().refused_peers, 1);
    drain(&mut core);
    let ask = Request::Proofs(vec![ByteBuf::from(SimPeer(6).to_bytes())]);
    core.handle_request(now, UNIX, SimPeer(1), InboundId(4), ask);
    let actions = drain(&mut core);
    assert_eq!(
        responses(&actions)[0].1,
        &Response::Proofs(vec![(
            ByteBuf::from(SimPeer(6).to_bytes()),
            Relayed::Refused
        )])
    );
    // News of it later is cut without asking anyone.
    gossip_from(&mut core, now, 1, vec![news(6, 3, State::Alive, 1)]);
    core.handle_timeout(now + Duration::from_millis(10), UNIX);
    assert!(sends(&drain(&mut core)).is_empty());
}

#[test]
fn an_unchecked_relay_lists_the_member_without_vouching_and_a_refused_one_is_dropped() {
    let (mut core, now) = lone(0, false);
    core.handle_gate(now, UNIX, SimPeer(1), Ok(()));
    gossip_from(
        &mut core,
        now,
        1,
        vec![
            news(2, 1, State::Alive, 1),
            news(3, 1, State::Alive, 1),
            news(4, 1, State::Alive, 1),
        ],
    );
    let later = now + Duration::from_millis(10);
    core.handle_timeout(later, UNIX);
    let (_, id, _) = sends(&drain(&mut core))[0];
    let said = |m: u32, r: Relayed| (ByteBuf::from(SimPeer(m).to_bytes()), r);
    let unchecked = |bytes: Vec<u8>| Relayed::Unchecked(ByteBuf::from(bytes));
    let answer = Response::Proofs(vec![
        said(2, unchecked(proof(2))),
        said(3, unchecked(proof(9))),
        said(4, Relayed::Refused),
    ]);
    core.handle_response(later, UNIX, id, Ok(answer));
    let actions = drain(&mut core);
    assert!(
        !actions.iter().any(|a| matches!(a, Action::Dial { .. })),
        "none is dialed: {actions:?}"
    );
    assert!(core.is_checking(&SimPeer(2)) && core.is_checking(&SimPeer(3)));
    assert!(!core.is_checking(&SimPeer(4)));
    let (checked, _) = run_checks(&mut core, later, actions);
    assert_eq!(checked.len(), 2);
    assert!(core.is_admitted(&SimPeer(2)));
    // Member 3's proof was bad: it is refused, but the relayer, which said it had not checked
    // it, keeps this node's trust.
    assert!(!core.is_admitted(&SimPeer(3)) && core.membership().member(&SimPeer(3)).is_none());
    assert_eq!(core.stats().relayers_distrusted, 0);
    // Member 4 is not asked about again when it is named next.
    gossip_from(&mut core, later, 1, vec![news(4, 2, State::Alive, 1)]);
    core.handle_timeout(later + Duration::from_millis(20), UNIX);
    let actions = drain(&mut core);
    let asked = sends(&actions);
    assert!(
        asked
            .iter()
            .all(|(_, _, r)| **r != Request::Proofs(vec![ByteBuf::from(SimPeer(4).to_bytes())])),
        "{asked:?}"
    );
}

#[test]
fn held_requests_are_refused_when_the_gate_refuses_or_times_out() {
    let (mut core, now) = lone(0, false);
    let envelope = record(&NodeKey::from_seed([9; 32]), b"k", b"v", 1);
    let put = Request::PutRecord(ByteBuf::from(envelope.as_bytes().to_vec()));
    core.handle_request(now, UNIX, SimPeer(1), InboundId(1), put.clone());
    core.handle_request(now, UNIX, SimPeer(2), InboundId(2), put);
    drain(&mut core);
    core.handle_gate(
        now,
        UNIX,
        SimPeer(1),
        Err(ProofError::Malformed("bad proof")),
    );
    let actions = drain(&mut core);
    let refused = responses(&actions);
    assert_eq!(refused.len(), 1);
    assert!(matches!(refused[0].1, Response::Refused(why) if why.contains("not verified")));
    assert_eq!(core.stats().refused_peers, 1);
    // Peer 2's check never ends: its request is refused once the gate's bound passed.
    let later = now + core.config().gate_timeout + Duration::from_secs(2);
    core.handle_timeout(later, UNIX + 7);
    let actions = drain(&mut core);
    assert_eq!(responses(&actions).len(), 1);
    assert_eq!(core.stats().refused_puts_total, 2);
    assert!(core.stored(b"k").is_none());
}

#[test]
fn news_of_an_unadmitted_member_is_cut_and_its_proof_asked_of_the_relayer() {
    let (mut core, now) = lone(0, false);
    core.handle_gate(now, UNIX, SimPeer(1), Ok(()));
    drain(&mut core);
    gossip_from(&mut core, now, 1, vec![news(2, 5, State::Alive, 1)]);
    assert!(
        core.membership().member(&SimPeer(2)).is_none(),
        "cut before SWIM"
    );
    assert_eq!(core.stats().updates_cut, 1);
    // The proof request goes out once the batch window passed.
    drain(&mut core);
    let later = now + Duration::from_millis(10);
    core.handle_timeout(later, UNIX);
    let actions = drain(&mut core);
    let asked = sends(&actions);
    assert_eq!(asked.len(), 1);
    let (to, id, request) = asked[0];
    assert_eq!(to, SimPeer(1));
    assert_eq!(
        *request,
        Request::Proofs(vec![ByteBuf::from(SimPeer(2).to_bytes())])
    );
    let answer = proofs_of(&[2]);
    core.handle_response(later, UNIX, id, Ok(answer));
    // Listed at once, on the proof in hand; not used by the DHT before its check.
    let m = core
        .membership()
        .member(&SimPeer(2))
        .expect("replayed news");
    assert_eq!((m.state, m.incarnation), (State::Alive, 5));
    assert!(core.is_checking(&SimPeer(2)));
    assert!(!core.is_admitted(&SimPeer(2)));
    assert!(!core.routing_table().contains(&SimPeer(2)));
    assert!(!core.live_members().contains(&SimPeer(2)));
    assert!(!core.view_settled(later + core.config().view_settle));
    let actions = drain(&mut core);
    let (checked, _) = run_checks(&mut core, later, actions);
    assert_eq!(checked, vec![SimPeer(2)]);
    assert!(core.is_admitted(&SimPeer(2)));
    assert!(!core.is_checking(&SimPeer(2)));
    assert_eq!(core.stats().verified_by_relay, 1);
    assert_eq!(core.stats().listed_unchecked, 1);
    assert!(core.routing_table().contains(&SimPeer(2)));
}

#[test]
fn news_with_its_proof_lists_the_member_without_asking_and_a_bad_vouched_proof_costs_trust() {
    let (mut core, now) = lone(0, false);
    core.handle_gate(now, UNIX, SimPeer(1), Ok(()));
    drain(&mut core);
    let checked = |p: Vec<u8>| Relayed::Proof(ByteBuf::from(p));
    let unchecked = |p: Vec<u8>| Relayed::Unchecked(ByteBuf::from(p));
    gossip_from(
        &mut core,
        now,
        1,
        vec![
            news_with(2, checked(proof(2))),
            news_with(3, unchecked(proof(3))),
            // Vouched for by member 1, and another member's proof: it fails its check.
            news_with(4, checked(proof(9))),
        ],
    );
    assert_eq!(core.stats().proofs_with_news, 3);
    assert_eq!(core.stats().updates_cut, 0, "none cut: all listed");
    for m in [2, 3, 4] {
        assert!(core.membership().member(&SimPeer(m)).is_some(), "{m}");
        assert!(core.is_checking(&SimPeer(m)) && !core.is_admitted(&SimPeer(m)));
    }
    // Nobody is asked for a proof, and nobody is dialed.
    core.handle_timeout(now + Duration::from_millis(10), UNIX);
    let actions = drain(&mut core);
    assert!(sends(&actions).is_empty(), "{actions:?}");
    assert!(!actions.iter().any(|a| matches!(a, Action::Dial { .. })));
    let (checked_peers, _) = run_checks(&mut core, now, actions);
    assert_eq!(checked_peers.len(), 3);
    assert!(core.is_admitted(&SimPeer(2)) && core.is_admitted(&SimPeer(3)));
    assert!(!core.is_admitted(&SimPeer(4)) && core.membership().member(&SimPeer(4)).is_none());
    assert_eq!(core.stats().relayers_distrusted, 1);
    // A distrusted sender's proofs are not taken: its news is cut, and the member dialed.
    gossip_from(&mut core, now, 1, vec![news_with(5, checked(proof(5)))]);
    assert!(core.membership().member(&SimPeer(5)).is_none());
    assert_eq!(core.stats().proofs_with_news, 3);
    let actions = drain(&mut core);
    assert!(
        actions
            .iter()
            .any(|a| matches!(a, Action::Dial { peer, .. } if *peer == SimPeer(5))),
        "{actions:?}"
    );
}

#[test]
fn a_joins_answer_carries_every_proof_and_news_of_a_fresh_member_carries_its_own() {
    let (mut core, now) = lone(0, false);
    for m in [1, 2] {
        core.handle_gate(now, UNIX, SimPeer(m), Ok(()));
    }
    core.handle_presented(now, UNIX, SimPeer(3), &proof(3));
    gossip_from(
        &mut core,
        now,
        1,
        vec![news(2, 1, State::Alive, 0), news(3, 1, State::Alive, 0)],
    );
    drain(&mut core);
    // Member 1 joins through this node: the answer names 2 (checked here) and 3 (listed, its
    // check waiting) with their proofs, this node and member 1 itself without.
    let join = Message {
        payload: Payload::PushPull {
            join: true,
            reply: true,
            members: vec![news(1, 1, State::Alive, 0)],
        },
        gossip: Vec::new(),
    };
    core.handle_swim(now, UNIX, SimPeer(1), join);
    let actions = drain(&mut core);
    let answers: Vec<_> = swims(&actions)
        .into_iter()
        .filter(|(to, m)| *to == SimPeer(1) && matches!(m.payload, Payload::PushPull { .. }))
        .collect();
    assert_eq!(answers.len(), 1, "{actions:?}");
    let Payload::PushPull { members, .. } = &answers[0].1.payload else {
        unreachable!()
    };
    let said = |m: u32| {
        let u = members
            .iter()
            .find(|u| u.member == SimPeer(m))
            .expect("named");
        Relayed::from_credential(&u.credential)
    };
    assert_eq!(said(2), Some(Relayed::Proof(ByteBuf::from(proof(2)))));
    assert_eq!(said(3), Some(Relayed::Unchecked(ByteBuf::from(proof(3)))));
    assert_eq!(said(0), None);
    assert_eq!(said(1), None);
    // The news of member 1's join goes out with its proof to the others, in gossip; push-pulls
    // that answer no join carry none.
    let mut carried = 0;
    let mut at = now;
    for _ in 0..50 {
        at += Duration::from_millis(100);
        core.handle_timeout(at, UNIX);
        for (to, msg) in swims(&drain(&mut core)) {
            for u in &msg.gossip {
                let has = !u.credential.is_empty();
                assert_eq!(
                    has,
                    u.state == State::Alive && u.member != to && u.member != SimPeer(0),
                    "{u:?} to {to:?}"
                );
                carried += usize::from(has && u.member == SimPeer(1));
            }
            if let Payload::PushPull { members, .. } = &msg.payload {
                assert!(members.iter().all(|u| u.credential.is_empty()));
            }
        }
    }
    assert!(carried > 0, "the join's news went out with its proof");
    // Half a minute after they were listed, news of the same members goes without: everyone
    // has listed them by then (a refutation of member 2 here).
    at += Duration::from_secs(30);
    core.handle_timeout(at, UNIX);
    drain(&mut core);
    gossip_from(&mut core, at, 1, vec![news(2, 2, State::Alive, 0)]);
    let mut told = 0;
    for _ in 0..20 {
        at += Duration::from_millis(100);
        core.handle_timeout(at, UNIX);
        for (_, msg) in swims(&drain(&mut core)) {
            for u in msg.gossip.iter().filter(|u| u.member == SimPeer(2)) {
                assert!(u.credential.is_empty(), "{u:?}");
                told += 1;
            }
        }
    }
    assert!(told > 0, "the refutation went out");
}

#[test]
fn news_from_a_relayer_whose_own_check_waits_lists_its_members_on_their_proofs() {
    // A joiner's seed is listed on its proof while its check waits; the members its push-pull
    // names are listed as soon as their proofs come, not on later news from someone checked
    // (under loss, a joiner waited many seconds for that).
    let (mut core, now) = lone(0, false);
    core.handle_presented(now, UNIX, SimPeer(1), &proof(1));
    assert!(core.is_checking(&SimPeer(1)));
    drain(&mut core);
    gossip_from(&mut core, now, 1, vec![news(2, 5, State::Alive, 1)]);
    let later = now + Duration::from_millis(10);
    core.handle_timeout(later, UNIX);
    let actions = drain(&mut core);
    let asked: Vec<_> = sends(&actions)
        .into_iter()
        .filter(|(_, _, r)| matches!(r, Request::Proofs(_)))
        .collect();
    assert_eq!(asked.len(), 1);
    let (to, id, _) = asked[0];
    assert_eq!(to, SimPeer(1));
    core.handle_response(later, UNIX, id, Ok(proofs_of(&[2])));
    let m = core
        .membership()
        .member(&SimPeer(2))
        .expect("listed on the relayer's news");
    assert_eq!((m.state, m.incarnation), (State::Alive, 5));
    assert!(core.is_checking(&SimPeer(2)));
}

#[test]
fn a_member_declared_dead_has_its_connections_closed() {
    // Behind a partition a connection's retransmissions back off to tens of seconds; a
    // reconnection after the heal must not queue behind them (the chaos suite's partition heal
    // did).
    let (mut core, now) = lone(0, false);
    core.handle_gate(now, UNIX, SimPeer(1), Ok(()));
    core.handle_gate(now, UNIX, SimPeer(2), Ok(()));
    gossip_from(&mut core, now, 1, vec![news(2, 1, State::Alive, 1)]);
    let closes = |actions: &[Action<SimPeer>]| {
        actions
            .iter()
            .filter(|a| matches!(a, Action::Disconnect { peer } if *peer == SimPeer(2)))
            .count()
    };
    assert_eq!(closes(&drain(&mut core)), 0, "alive: kept");
    gossip_from(&mut core, now, 1, vec![news(2, 1, State::Dead, 1)]);
    assert_eq!(
        core.membership().member(&SimPeer(2)).map(|m| m.state),
        Some(State::Dead)
    );
    assert_eq!(closes(&drain(&mut core)), 1);
}

#[test]
fn news_of_strangers_that_cannot_make_them_live_is_cut_without_a_trace() {
    let (mut core, now) = lone(0, false);
    core.handle_gate(now, UNIX, SimPeer(1), Ok(()));
    drain(&mut core);
    // Deaths and suspicions of made-up peers: no tombstone, no proof request.
    let gossip = (100..150)
        .map(|id| {
            let state = if id % 2 == 0 {
                State::Dead
            } else {
                State::Suspect
            };
            news(id, 1, state, 1)
        })
        .collect();
    gossip_from(&mut core, now, 1, gossip);
    assert_eq!(core.stats().updates_cut, 50);
    assert_eq!(
        core.membership().states().count(),
        0,
        "no tombstone of a stranger"
    );
    core.handle_timeout(now + Duration::from_millis(10), UNIX);
    assert!(sends(&drain(&mut core)).is_empty(), "no proof asked for");
    assert_eq!(core.sizes().reported, 0);
}

#[test]
fn stale_news_of_a_departed_member_neither_revives_it_nor_asks_for_its_proof() {
    let (mut core, now) = lone(0, false);
    core.handle_gate(now, UNIX, SimPeer(1), Ok(()));
    core.handle_gate(now, UNIX, SimPeer(2), Ok(()));
    gossip_from(&mut core, now, 1, vec![news(2, 3, State::Alive, 1)]);
    assert!(core.routing_table().contains(&SimPeer(2)));
    // Member 2 is declared dead: out of the routing table and the admitted set, proof kept.
    gossip_from(&mut core, now, 1, vec![news(2, 3, State::Dead, 1)]);
    assert!(!core.is_admitted(&SimPeer(2)));
    assert!(!core.routing_table().contains(&SimPeer(2)));
    assert_eq!(core.departed_proofs(), 1);
    drain(&mut core);
    // Stale news still travelling after its death changes nothing.
    for state in [State::Alive, State::Suspect, State::Dead] {
        gossip_from(&mut core, now, 1, vec![news(2, 3, state, 1)]);
    }
    gossip_from(&mut core, now, 1, vec![news(2, 2, State::Alive, 1)]);
    assert!(!core.is_admitted(&SimPeer(2)));
    assert_eq!(
        core.membership().member(&SimPeer(2)).map(|m| m.state),
        Some(State::Dead)
    );
    core.handle_timeout(now + Duration::from_millis(10), UNIX);
    assert!(sends(&drain(&mut core)).is_empty(), "no proof asked for");
    assert_eq!(core.stats().readmitted_departed, 0);
    // Its refutation brings it back at once, on the kept proof.
    gossip_from(&mut core, now, 1, vec![news(2, 4, State::Alive, 1)]);
    assert!(core.is_admitted(&SimPeer(2)));
    assert_eq!(core.stats().readmitted_departed, 1);
    assert_eq!(
        core.membership()
            .member(&SimPeer(2))
            .map(|m| (m.state, m.incarnation)),
        Some((State::Alive, 4))
    );
    assert!(core.routing_table().contains(&SimPeer(2)));
}

#[test]
fn the_newest_news_of_a_member_is_replayed_when_it_is_admitted() {
    let (mut core, now) = lone(0, false);
    core.handle_gate(now, UNIX, SimPeer(1), Ok(()));
    core.handle_gate(now, UNIX, SimPeer(3), Ok(()));
    gossip_from(&mut core, now, 1, vec![news(5, 1, State::Alive, 1)]);
    gossip_from(&mut core, now, 3, vec![news(5, 4, State::Alive, 3)]);
    gossip_from(&mut core, now, 1, vec![news(5, 2, State::Alive, 1)]);
    assert_eq!(core.sizes().reported, 1);
    let later = now + Duration::from_millis(10);
    core.handle_timeout(later, UNIX);
    let actions = drain(&mut core);
    let asked = sends(&actions);
    assert_eq!(asked.len(), 1, "one proof request, to the first relayer");
    let answer = proofs_of(&[5]);
    core.handle_response(later, UNIX, asked[0].1, Ok(answer));
    assert_eq!(
        core.membership().member(&SimPeer(5)).map(|m| m.incarnation),
        Some(4)
    );
}

#[test]
fn swim_messages_from_a_peer_being_checked_are_held_then_replayed() {
    let (mut core, now) = lone(0, false);
    core.handle_gate(now, UNIX, SimPeer(1), Ok(()));
    // Peer 7 talks before its gate check ended: held, counted, not seen by SWIM.
    gossip_from(&mut core, now, 7, vec![news(1, 9, State::Alive, 7)]);
    assert_eq!(core.stats().swim_unadmitted, 1);
    assert!(core.membership().member(&SimPeer(1)).is_none());
    core.handle_gate(now, UNIX, SimPeer(7), Ok(()));
    assert_eq!(
        core.membership().member(&SimPeer(1)).map(|m| m.incarnation),
        Some(9),
        "replayed once admitted"
    );
    // A peer the gate refuses: what it sent is dropped.
    gossip_from(&mut core, now, 8, vec![news(1, 10, State::Alive, 8)]);
    core.handle_gate(now, UNIX, SimPeer(8), Err(ProofError::WrongKey));
    assert_eq!(
        core.membership().member(&SimPeer(1)).map(|m| m.incarnation),
        Some(9)
    );
    assert_eq!(core.sizes().held, 0);
}

#[test]
fn a_bad_relayed_proof_is_refused_and_the_member_stays_out() {
    let (mut core, now) = lone(0, false);
    core.handle_gate(now, UNIX, SimPeer(1), Ok(()));
    gossip_from(&mut core, now, 1, vec![news(2, 1, State::Alive, 1)]);
    let later = now + Duration::from_millis(10);
    core.handle_timeout(later, UNIX);
    let actions = drain(&mut core);
    let (_, id, _) = sends(&actions)[0];
    let forged = Response::Proofs(vec![(
        ByteBuf::from(SimPeer(2).to_bytes()),
        Relayed::Proof(ByteBuf::from(proof(3))),
    )]);
    core.handle_response(later, UNIX, id, Ok(forged));
    // Listed while its check is queued (a forged proof looks like any other until then).
    assert!(core.is_checking(&SimPeer(2)));
    let actions = drain(&mut core);
    let (checked, _) = run_checks(&mut core, later, actions);
    assert_eq!(checked, vec![SimPeer(2)]);
    assert!(!core.is_admitted(&SimPeer(2)));
    assert!(!core.is_checking(&SimPeer(2)));
    assert!(core.membership().member(&SimPeer(2)).is_none());
    assert_eq!(core.membership().live_members(), 0);
    assert_eq!(core.stats().refused_relayed, 1);
    // The relayer is asked for no more proofs: a member it names is dialed, so the gate
    // checks it on a connection of its own.
    assert_eq!(core.stats().relayers_distrusted, 1);
    gossip_from(&mut core, later, 1, vec![news(4, 1, State::Alive, 1)]);
    core.handle_timeout(later + Duration::from_millis(10), UNIX);
    let actions = drain(&mut core);
    assert!(
        sends(&actions).is_empty(),
        "no proof request to a distrusted relayer"
    );
    assert!(
        actions
            .iter()
            .any(|a| matches!(a, Action::Dial { peer, .. } if *peer == SimPeer(4)))
    );
}

#[test]
fn a_check_the_runtime_never_reports_does_not_stop_the_next() {
    let (mut core, now) = lone(0, false);
    core.handle_gate(now, UNIX, SimPeer(1), Ok(()));
    gossip_from(
        &mut core,
        now,
        1,
        vec![news(2, 1, State::Alive, 1), news(3, 1, State::Alive, 1)],
    );
    let later = now + Duration::from_millis(10);
    core.handle_timeout(later, UNIX);
    let (_, id, _) = sends(&drain(&mut core))[0];
    let answer = proofs_of(&[2, 3]);
    core.handle_response(later, UNIX, id, Ok(answer));
    let first = checks_asked(&drain(&mut core));
    assert_eq!(first.len(), 1);
    // Its outcome never comes back; a while later the other member is checked.
    let mut at = later;
    let mut next = Vec::new();
    while next.is_empty() && at < later + Duration::from_secs(120) {
        at += Duration::from_secs(1);
        core.handle_timeout(at, UNIX);
        next = checks_asked(&drain(&mut core));
    }
    assert_eq!(next.len(), 1, "no check after the stalled one");
    assert_ne!(next[0].0, first[0].0);
    let (_, _) = run_checks(
        &mut core,
        at,
        vec![Action::Verify {
            peer: next[0].0,
            proof: next[0].1.clone(),
            needed: false,
        }],
    );
    // The stalled member is checked again in its turn.
    let mut rest = Vec::new();
    while core.checks_pending() > 0 && at < later + Duration::from_secs(240) {
        at += Duration::from_secs(1);
        core.handle_timeout(at, UNIX);
        let actions = drain(&mut core);
        let (checked, _) = run_checks(&mut core, at, actions);
        rest.extend(checked);
    }
    assert_eq!(rest, vec![first[0].0]);
    assert!(core.is_admitted(&SimPeer(2)) && core.is_admitted(&SimPeer(3)));
}

#[test]
fn members_on_relayed_proofs_take_part_in_swim_and_their_checks_run_most_needed_first() {
    let (mut core, now) = lone(0, false);
    core.handle_gate(now, UNIX, SimPeer(1), Ok(()));
    let named: Vec<u32> = (10..20).collect();
    gossip_from(
        &mut core,
        now,
        1,
        named.iter().map(|&m| news(m, 1, State::Alive, 1)).collect(),
    );
    let later = now + Duration::from_millis(10);
    core.handle_timeout(later, UNIX);
    let actions = drain(&mut core);
    let (_, id, _) = sends(&actions)[0];
    // Member 15 asks for a record before anyone vouched for it: its request is held.
    let get = Request::GetRecord(ByteBuf::from(b"k".to_vec()));
    core.handle_request(later, UNIX, SimPeer(15), InboundId(9), get);
    let answer = proofs_of(&named);
    core.handle_response(later, UNIX, id, Ok(answer));
    assert_eq!(core.checks_pending(), 10);
    assert_eq!(core.membership().live_members(), 10, "all listed at once");
    assert!(core.live_members().is_empty(), "none used by the DHT yet");
    // A listed member's SWIM messages reach the membership before its check.
    gossip_from(&mut core, later, 12, vec![news(12, 3, State::Alive, 12)]);
    assert_eq!(
        core.membership()
            .member(&SimPeer(12))
            .map(|m| m.incarnation),
        Some(3)
    );
    let actions = drain(&mut core);
    assert!(
        responses(&actions).is_empty(),
        "the held request waits for the check"
    );
    let (checked, rest) = run_checks(&mut core, later, actions);
    // The member a request waits on first, then the nearest to this node.
    let own = SimPeer(0).point();
    let mut nearest: Vec<SimPeer> = named.iter().map(|&m| SimPeer(m)).collect();
    nearest.retain(|p| *p != SimPeer(15));
    nearest.sort_by_key(|p| own.distance(&p.point()));
    let expected: Vec<SimPeer> = std::iter::once(SimPeer(15)).chain(nearest).collect();
    assert_eq!(checked, expected);
    assert_eq!(responses(&rest).len(), 1, "served once checked");
    assert_eq!(core.checks_pending(), 0);
    assert_eq!(core.live_members().len(), 10);
}

#[test]
fn a_relayer_without_the_proof_makes_the_core_dial_the_member() {
    let (mut core, now) = lone(0, false);
    core.handle_gate(now, UNIX, SimPeer(1), Ok(()));
    let mut named = news(2, 1, State::Alive, 1);
    named.addrs = vec![Address(b"/sim/2".to_vec())];
    gossip_from(&mut core, now, 1, vec![named]);
    let later = now + Duration::from_millis(10);
    core.handle_timeout(later, UNIX);
    let actions = drain(&mut core);
    let (_, id, _) = sends(&actions)[0];
    core.handle_response(later, UNIX, id, Ok(Response::Proofs(Vec::new())));
    let actions = drain(&mut core);
    assert!(actions.iter().any(|a| matches!(
        a,
        Action::Dial { peer, addrs } if *peer == SimPeer(2) && addrs.len() == 1
    )));
    assert_eq!(core.stats().relay_fallback_dials, 1);
    // The gate checks it on the connection; the news cut about it is replayed.
    core.handle_gate(later, UNIX, SimPeer(2), Ok(()));
    assert_eq!(
        core.membership().member(&SimPeer(2)).map(|m| m.state),
        Some(State::Alive)
    );
}

#[test]
fn proofs_are_told_only_to_admitted_members() {
    let (mut core, now) = lone(0, false);
    core.handle_gate(now, UNIX, SimPeer(1), Ok(()));
    drain(&mut core);
    let ask = Request::Proofs(vec![ByteBuf::from(SimPeer(1).to_bytes())]);
    core.handle_request(now, UNIX, SimPeer(9), InboundId(1), ask.clone());
    core.handle_request(now, UNIX, SimPeer(1), InboundId(2), ask);
    let actions = drain(&mut core);
    let answers = responses(&actions);
    assert_eq!(answers[0], (InboundId(1), &Response::Proofs(Vec::new())));
    assert_eq!(
        answers[1],
        (
            InboundId(2),
            &Response::Proofs(vec![(
                ByteBuf::from(SimPeer(1).to_bytes()),
                Relayed::Proof(ByteBuf::from(proof(1)))
            )])
        )
    );
}

// ----- acceptance and puts -----

#[test]
fn an_invalid_replica_put_is_refused_with_its_reason_and_counted() {
    let (mut core, now) = lone(0, false);
    core.handle_gate(now, UNIX, SimPeer(1), Ok(()));
    drain(&mut core);
    let mut bytes = record(&NodeKey::from_seed([9; 32]), b"k", b"v", 1)
        .as_bytes()
        .to_vec();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    core.handle_request(
        now,
        UNIX,
        SimPeer(1),
        InboundId(1),
        Request::PutRecord(ByteBuf::from(bytes)),
    );
    let actions = drain(&mut core);
    assert!(matches!(responses(&actions)[0].1, Response::Refused(_)));
    assert_eq!(core.stats().refused_puts.get(&SimPeer(1)), Some(&1));
    assert!(core.stored(b"k").is_none());
}

#[test]
fn a_replica_acknowledges_only_once_its_write_is_durable() {
    let (mut core, now) = lone(0, true);
    core.handle_gate(now, UNIX, SimPeer(1), Ok(()));
    drain(&mut core);
    let signed = record(&NodeKey::from_seed([9; 32]), b"k", b"v", 1);
    let put = Request::PutRecord(ByteBuf::from(signed.as_bytes().to_vec()));
    core.handle_request(now, UNIX, SimPeer(1), InboundId(1), put.clone());
    let actions = drain(&mut core);
    assert!(responses(&actions).is_empty(), "not before the commit");
    let write = actions
        .iter()
        .find_map(|a| match a {
            Action::Write { id, ops, .. } => Some((*id, ops.clone())),
            _ => None,
        })
        .expect("a write");
    assert!(matches!(&write.1[0], WriteOp::PutRecord { key, .. } if key == b"k"));
    core.handle_committed(now, UNIX, write.0, Ok(()));
    let actions = drain(&mut core);
    // Answered with this node's receipt for the very record.
    let receipt = receipt_of(responses(&actions)[0].1);
    receipt.check(signed.record()).unwrap();
    assert_eq!(receipt.replica(), &sim::key_of(SECRET, SimPeer(0)).public());
    assert_eq!(receipt.time(), UNIX);
    // The same envelope again is already durable: answered at once, no write.
    core.handle_request(now, UNIX, SimPeer(1), InboundId(2), put);
    let actions = drain(&mut core);
    receipt_of(responses(&actions)[0].1)
        .check(signed.record())
        .unwrap();
    assert!(!actions.iter().any(|a| matches!(a, Action::Write { .. })));
}

#[test]
fn a_failed_write_is_refused_never_acknowledged_and_undone() {
    let (mut core, now) = lone(0, true);
    core.handle_gate(now, UNIX, SimPeer(1), Ok(()));
    drain(&mut core);
    let signer = NodeKey::from_seed([9; 32]);
    for (seq, value) in [(1, &b"old"[..]), (2, &b"new"[..])] {
        let signed = record(&signer, b"k", value, seq);
        let put = Request::PutRecord(ByteBuf::from(signed.as_bytes().to_vec()));
        core.handle_request(now, UNIX, SimPeer(1), InboundId(seq), put);
        let actions = drain(&mut core);
        let id = actions
            .iter()
            .find_map(|a| match a {
                Action::Write { id, .. } => Some(*id),
                _ => None,
            })
            .expect("a write");
        let result = if seq == 1 {
            Ok(())
        } else {
            Err("disk full".to_owned())
        };
        core.handle_committed(now, UNIX, id, result);
        let actions = drain(&mut core);
        let answer = responses(&actions)[0].1.clone();
        if seq == 1 {
            assert!(matches!(answer, Response::Kept(_)));
        } else {
            assert!(matches!(answer, Response::Refused(why) if why.contains("disk full")));
        }
    }
    assert_eq!(core.stored(b"k").unwrap().record().value, b"old");
    assert_eq!(core.stats().failed_writes, 1);
    // This node's own put: refused with the storage error, the record not kept.
    let op = core.handle_command(now, UNIX, put(b"mine", b"v", None));
    let actions = drain(&mut core);
    let id = actions
        .iter()
        .find_map(|a| match a {
            Action::Write { id, .. } => Some(*id),
            _ => None,
        })
        .expect("a write");
    core.handle_committed(now, UNIX, id, Err("disk full".to_owned()));
    let actions = drain(&mut core);
    assert!(actions.iter().any(|a| matches!(
        a,
        Action::Reply { op: o, reply: Reply::Put(Err(crate::api::PutError::Store(StoreError::Write(_)))) }
            if *o == op
    )));
    assert!(core.stored(b"mine").is_none());
}

#[test]
fn own_puts_against_own_announcement_are_checked() {
    let (mut core, now) = lone(0, false);
    let op = core.handle_command(
        now,
        UNIX,
        Command::Announce {
            key: b"k".to_vec(),
            value: b"promised".to_vec(),
            seq: Some(5),
        },
    );
    let actions = drain(&mut core);
    // Nobody to tell: the announcement fails, but this node keeps its own notice.
    assert!(actions.iter().any(|a| matches!(
        a,
        Action::Reply { op: o, reply: Reply::Announce(Err(AnnounceError::NoPeers)) } if *o == op
    )));
    let op = core.handle_command(now, UNIX, put(b"k", b"other", Some(5)));
    let actions = drain(&mut core);
    assert!(actions.iter().any(|a| matches!(
        a,
        Action::Reply { op: o, reply: Reply::Put(Err(crate::api::PutError::Lockstep(_))) }
            if *o == op
    )));
    // Without a sequence the put takes the announced one, and matches.
    core.handle_command(now, UNIX, put(b"k", b"promised", None));
    drain(&mut core);
    assert_eq!(core.stored(b"k").unwrap().record().seq, 5);
}

// ----- networks -----

fn network(seed: u64, n: usize) -> Sim {
    let mut sim = Sim::new(seed, SimConfig::local());
    sim.add_converged(n);
    sim.run_for(Duration::from_secs(2));
    sim
}

fn get_result(reply: Reply<SimPeer>) -> crate::api::GetResult {
    match reply {
        Reply::Get(result) => *result,
        other => panic!("not a get's reply: {other:?}"),
    }
}

fn wait_reply(sim: &mut Sim, node: u32, op: OpId) -> Reply<SimPeer> {
    sim.wait(node, op, Duration::from_secs(60))
        .unwrap_or_else(|| panic!("seed {}: no reply", sim.seed()))
        .reply
}

#[test]
fn puts_reach_their_quorum_and_gets_find_the_highest_sequence() {
    let mut sim = network(1, 20);
    let op = sim.command(3, put(b"greeting", b"hello", Some(1))).unwrap();
    let Reply::Put(Ok(ok)) = wait_reply(&mut sim, 3, op) else {
        panic!("put failed");
    };
    assert_eq!(ok.seq, 1);
    let op = sim
        .command(3, put(b"greeting", b"hello again", None))
        .unwrap();
    let Reply::Put(Ok(second)) = wait_reply(&mut sim, 3, op) else {
        panic!("second put failed");
    };
    assert!(second.seq > 1);
    assert_eq!(sim.check_records(), 1);
    for reader in [0, 7, 19] {
        let op = sim
            .command(reader, Command::get(b"greeting".to_vec()))
            .unwrap();
        let Ok(got) = get_result(wait_reply(&mut sim, reader, op)) else {
            panic!("get failed at {reader}");
        };
        assert_eq!(got.record.value, b"hello again");
        assert_eq!(got.invalid, 0);
        assert_eq!(got.announced, Announced::No);
    }
    let op = sim.command(5, Command::get(b"nothing".to_vec())).unwrap();
    assert!(matches!(
        get_result(wait_reply(&mut sim, 5, op)),
        Err(GetError::NotFound { .. })
    ));
}

#[test]
fn a_put_refused_by_its_replicas_reports_the_quorum_it_missed() {
    let mut sim = network(2, 12);
    // Another publisher's notice at every node makes its mismatching put fail everywhere.
    let publisher = 4;
    let op = sim
        .command(
            publisher,
            Command::Announce {
                key: b"locked".to_vec(),
                value: b"promised".to_vec(),
                seq: Some(9),
            },
        )
        .unwrap();
    assert!(matches!(
        wait_reply(&mut sim, publisher, op),
        Reply::Announce(Ok(_))
    ));
    // A record signed by the publisher, but with another value, sent raw by node 0.
    let signer = publisher_key(&sim, publisher);
    let evil = record(&signer, b"locked", b"evil", 9);
    let peers: Vec<SimPeer> = sim.true_closest(b"locked", 8, None);
    let op = sim
        .command(
            0,
            Command::DangerousPutTo {
                key: b"locked".to_vec(),
                envelope: evil.as_bytes().to_vec(),
                peers: peers.clone(),
            },
        )
        .unwrap();
    let Reply::Put(Err(crate::api::PutError::Quorum {
        acked,
        refused,
        reason,
        ..
    })) = wait_reply(&mut sim, 0, op)
    else {
        panic!("not a quorum failure");
    };
    assert_eq!(acked, 0);
    assert!(refused >= 1);
    assert!(reason.unwrap().contains("lockstep"));
    // The announced value goes through, and gets report it as announced.
    let op = sim
        .command(publisher, put(b"locked", b"promised", None))
        .unwrap();
    assert!(matches!(
        wait_reply(&mut sim, publisher, op),
        Reply::Put(Ok(_))
    ));
    let op = sim.command(10, Command::get(b"locked".to_vec())).unwrap();
    let Ok(got) = get_result(wait_reply(&mut sim, 10, op)) else {
        panic!("get failed");
    };
    assert_eq!(got.record.value, b"promised");
    assert_eq!(got.announced, Announced::Yes);
}

fn publisher_key(sim: &Sim, id: u32) -> NodeKey {
    sim.node_key(id)
}

#[test]
fn cheaters_never_enter_and_joiners_are_admitted_through_relayed_proofs() {
    let mut sim = Sim::new(3, SimConfig::local());
    sim.add_nodes(14, 2);
    for id in 1..14 {
        sim.join(id, &[0]);
    }
    let honest: Vec<u32> = (0..12).collect();
    let converged = sim.run_until_cond(Duration::from_secs(60), Duration::from_millis(500), |s| {
        honest
            .iter()
            .all(|&i| s.member_counts(i)[State::Alive as usize] == 11)
    });
    assert!(converged.is_some(), "seed 3: honest nodes did not converge");
    sim.run_for(Duration::from_secs(10));
    let mut by_relay = 0;
    for &i in &honest {
        let core = sim.node(i).unwrap();
        assert_eq!(core.membership().live_members(), 11, "node {i}");
        assert!(!core.is_admitted(&SimPeer(12)) && !core.is_admitted(&SimPeer(13)));
        by_relay += core.stats().verified_by_relay;
    }
    assert!(
        by_relay > 0,
        "gossip members were admitted on relayed proofs"
    );
    assert!(sim.node(0).unwrap().stats().refused_peers >= 2);
}

#[test]
fn members_are_listed_before_their_checks_end_and_used_only_after() {
    // Checks dearer than scrypt here (100 ms each, as on a busy machine; one at a time per
    // node and lane): twenty nodes that start together list each other before they have
    // checked each other. The simulator asserts after every step that no node routes to a
    // member it has not checked.
    let mut config = SimConfig::local();
    config.check_time = Duration::from_millis(100);
    let mut sim = Sim::new(11, config);
    sim.add_nodes(20, 0);
    for id in 1..20 {
        sim.join(id, &[0]);
    }
    let all = |s: &Sim, f: &dyn Fn(&Core<SimPeer, SimChecks>) -> bool| {
        (0..20).all(|i| s.node(i).is_some_and(f))
    };
    let listed = sim.run_until_cond(Duration::from_secs(30), Duration::from_millis(10), |s| {
        all(s, &|c| c.membership().live_members() == 19)
    });
    assert!(
        listed.is_some(),
        "seed 11: the nodes never all listed each other"
    );
    let pending: usize = (0..20).map(|i| sim.node(i).unwrap().checks_pending()).sum();
    assert!(pending > 0, "listing waited for every check");
    let checked = sim.run_until_cond(Duration::from_secs(30), Duration::from_millis(10), |s| {
        all(s, &|c| {
            c.checks_pending() == 0 && c.live_members().len() == 19
        })
    });
    assert!(checked.is_some(), "seed 11: checks did not end");
    let listed_unchecked: usize = (0..20)
        .map(|i| sim.node(i).unwrap().stats().listed_unchecked)
        .sum();
    assert!(listed_unchecked > 0);
    for i in 0..20 {
        sim.check_admission(i);
    }
}

#[test]
fn a_crashed_member_is_evicted_and_readmitted_on_its_kept_proof_when_it_returns() {
    let mut sim = network(4, 10);
    sim.crash(9);
    let gone = sim.run_until_cond(Duration::from_secs(120), Duration::from_secs(1), |s| {
        (0..9).all(|i| !s.node(i).unwrap().routing_table().contains(&SimPeer(9)))
    });
    assert!(gone.is_some(), "seed 4: the crashed node stayed routed");
    for i in 0..9 {
        assert!(!sim.node(i).unwrap().is_admitted(&SimPeer(9)));
        assert!(sim.node(i).unwrap().departed_proofs() >= 1);
    }
    let relays_before: usize = (0..9)
        .map(|i| sim.node(i).unwrap().stats().relay_requests)
        .sum();
    sim.restart(9);
    sim.join(9, &[0]);
    let back = sim.run_until_cond(Duration::from_secs(60), Duration::from_millis(500), |s| {
        (0..9).all(|i| s.node(i).unwrap().routing_table().contains(&SimPeer(9)))
    });
    assert!(
        back.is_some(),
        "seed 4: the restarted node was not readmitted"
    );
    let readmitted: usize = (0..9)
        .map(|i| sim.node(i).unwrap().stats().readmitted_departed)
        .sum();
    assert!(readmitted >= 8, "{readmitted} readmissions");
    let relays_after: usize = (0..9)
        .map(|i| sim.node(i).unwrap().stats().relay_requests)
        .sum();
    assert_eq!(relays_after, relays_before, "no proof had to be asked for");
}

#[test]
fn acknowledged_records_survive_crashes_of_their_replicas_and_restarts() {
    let mut sim = network(5, 16);
    for i in 0..10u8 {
        let op = sim
            .command(u32::from(i), put(&[b'k', i], b"v", None))
            .unwrap();
        assert!(matches!(
            wait_reply(&mut sim, u32::from(i), op),
            Reply::Put(Ok(_))
        ));
    }
    for id in [1, 2, 3] {
        sim.crash(id);
    }
    sim.run_for(Duration::from_secs(5));
    for id in [1, 2, 3] {
        sim.restart(id);
        sim.join(id, &[0]);
    }
    sim.run_for(Duration::from_secs(10));
    assert_eq!(sim.check_records(), 10);
    for i in 0..10u8 {
        let op = sim.command(15, Command::get(vec![b'k', i])).unwrap();
        assert!(get_result(wait_reply(&mut sim, 15, op)).is_ok(), "key {i}");
    }
}

#[test]
fn a_crash_before_the_copy_flush_loses_copies_but_never_the_quorum() {
    let mut sim = network(8, 24);
    let k = sim.config().dht.replication_factor.get();
    let first_wave = sim
        .config()
        .dht
        .lookup_parallelism
        .get()
        .max(sim.config().dht.put_quorum.get());
    let key = b"copies".to_vec();
    let closest = sim.true_closest(&key, k + 1, None);
    // A writer outside the k closest: it sends to exactly the k closest.
    let writer = (0..24u32)
        .find(|w| !closest[..k].contains(&SimPeer(*w)))
        .unwrap();
    let op = sim.command(writer, put(&key, b"v", None)).unwrap();
    assert!(matches!(
        wait_reply(&mut sim, writer, op),
        Reply::Put(Ok(_))
    ));
    // Links take at most 5 ms: every copy is kept, none flushed yet.
    sim.run_for(Duration::from_millis(50));
    let (quorum, copies) = closest[..k].split_at(first_wave);
    for p in quorum {
        assert!(sim.on_disk(p.0, &key), "{p:?} acknowledged from disk");
    }
    for p in copies {
        assert!(
            sim.node(p.0).unwrap().stored(&key).is_some(),
            "{p:?} kept it"
        );
        assert!(!sim.on_disk(p.0, &key), "{p:?} not flushed yet");
    }
    // One copy holder crashes now and loses it; another crashes after its flush and keeps it.
    let (lost, kept) = (copies[0].0, copies[1].0);
    sim.crash(lost);
    // The copy's write waits up to 100 ms for company, then its flush up to the delay.
    sim.run_for(sim.config().dht.copy_flush_delay + Duration::from_millis(200));
    assert!(sim.on_disk(kept, &key));
    sim.crash(kept);
    for id in [lost, kept] {
        sim.restart(id);
    }
    assert!(sim.node(lost).unwrap().stored(&key).is_none());
    assert!(sim.node(kept).unwrap().stored(&key).is_some());
    sim.run_for(Duration::from_secs(5));
    assert_eq!(sim.check_records(), 1);
}

#[test]
fn the_clock_stepped_back_across_a_restart_refuses_nothing_and_needs_no_refutation() {
    // A node restarts with its wall clock an hour behind where it was (a clock that ran ahead,
    // then was corrected): what it persisted (its incarnation, the sequence numbers it used) is
    // an hour ahead of its clock now. Records live a day, so their creation an hour back in the
    // others' eyes is no reason to refuse them.
    const DAY: Duration = Duration::from_secs(86_400);
    let mut sim = network(6, 8);
    let op = sim
        .command(2, put_for(b"clock", b"before", None, DAY))
        .unwrap();
    let Reply::Put(Ok(before)) = wait_reply(&mut sim, 2, op) else {
        panic!("put failed");
    };
    let incarnation = sim.node(2).unwrap().membership().incarnation();
    sim.crash(2);
    sim.set_clock_offset(2, -3600);
    sim.restart(2);
    assert!(
        sim.node(2).unwrap().membership().incarnation() > incarnation,
        "the incarnation never goes backwards"
    );
    sim.join(2, &[0]);
    sim.run_for(Duration::from_secs(5));
    let op = sim
        .command(2, put_for(b"clock", b"after", None, DAY))
        .unwrap();
    let reply = wait_reply(&mut sim, 2, op);
    let Reply::Put(Ok(after)) = reply else {
        panic!("seed 6: put after the clock stepped back failed: {reply:?}");
    };
    assert!(after.seq > before.seq);
    let op = sim.command(2, put_for(b"fresh", b"v", None, DAY)).unwrap();
    let Reply::Put(Ok(fresh)) = wait_reply(&mut sim, 2, op) else {
        panic!("put of a new key failed");
    };
    assert!(fresh.seq >= before.seq, "the sequence floor holds");
    let refused: u64 = (0..8)
        .map(|i| sim.node(i).unwrap().stats().refused_puts_total)
        .sum();
    assert_eq!(refused, 0);
    // Its return is news the others take at once: it never had to refute being gone.
    sim.run_for(Duration::from_secs(30));
    assert_eq!(sim.node(2).unwrap().membership().stats().refutations, 0);
    for i in (0..8).filter(|&i| i != 2) {
        assert_eq!(
            sim.node(i)
                .unwrap()
                .membership()
                .member(&SimPeer(2))
                .map(|m| m.state),
            Some(State::Alive),
            "node {i}"
        );
    }
}

#[test]
fn lookups_find_the_true_closest_under_loss() {
    let mut config = SimConfig::local();
    config.link.loss = 0.05;
    let mut sim = Sim::new(7, config);
    sim.add_converged(40);
    sim.run_for(Duration::from_secs(5));
    // A lost request or answer fails that peer for the lookup (it is not asked twice), so a
    // lossy link costs some recall; none is lost without loss.
    let mut recall = Vec::new();
    for i in 0..20u32 {
        let target = SimPeer(1000 + i);
        let op = sim.command(i, Command::find_node(target)).unwrap();
        // Two lost requests in a row can spend the query's bound: it ends with what it found.
        let found = match wait_reply(&mut sim, i, op) {
            Reply::FindNode(Ok(ok)) => ok.peers,
            Reply::FindNode(Err(crate::api::FindNodeError::Timeout { found })) => found,
            other => panic!("seed 7: lookup {i} failed: {other:?}"),
        };
        let truth = sim.true_closest(&target.to_bytes(), 8, Some(i));
        let hits = found.iter().filter(|p| truth.contains(p)).count();
        recall.push(hits as f64 / truth.len() as f64);
    }
    let mean = recall.iter().sum::<f64>() / recall.len() as f64;
    assert!(
        mean >= 0.85,
        "seed 7: recall {mean:.3} at 5 % loss: {recall:?}"
    );
    sim.config_mut().link.loss = 0.0;
    sim.run_for(Duration::from_secs(5));
    for i in 0..10u32 {
        let target = SimPeer(2000 + i);
        let op = sim.command(i, Command::find_node(target)).unwrap();
        let Reply::FindNode(Ok(found)) = wait_reply(&mut sim, i, op) else {
            panic!("seed 7: lookup {i} failed");
        };
        let truth = sim.true_closest(&target.to_bytes(), 8, Some(i));
        assert_eq!(found.peers, truth, "lookup {i}");
    }
}

#[test]
fn a_partition_heals_and_puts_made_on_both_sides_are_readable() {
    let mut sim = network(8, 12);
    let (a, b): (Vec<u32>, Vec<u32>) = (0..12).partition(|i| i % 2 == 0);
    sim.partition(&[&a, &b]);
    sim.run_for(Duration::from_secs(60));
    let op = sim.command(0, put(b"left", b"a", None)).unwrap();
    let left = wait_reply(&mut sim, 0, op);
    let op = sim.command(1, put(b"right", b"b", None)).unwrap();
    let right = wait_reply(&mut sim, 1, op);
    assert!(matches!(left, Reply::Put(Ok(_))) && matches!(right, Reply::Put(Ok(_))));
    sim.heal();
    let healed = sim.run_until_cond(Duration::from_secs(120), Duration::from_secs(1), |s| {
        (0..12).all(|i| s.node(i).unwrap().membership().live_members() == 11)
    });
    assert!(healed.is_some(), "seed 8: the partition did not heal");
    for (reader, key) in [(11, &b"left"[..]), (10, &b"right"[..])] {
        let op = sim.command(reader, Command::get(key.to_vec())).unwrap();
        assert!(
            get_result(wait_reply(&mut sim, reader, op)).is_ok(),
            "{key:?} from {reader}"
        );
    }
}

#[test]
fn republishing_makes_copies_on_the_nodes_now_closest() {
    let mut config = SimConfig::local();
    config.dht.republish_interval = Duration::from_secs(30);
    let mut sim = Sim::new(9, config);
    sim.add_converged(24);
    sim.run_for(Duration::from_secs(2));
    let k = sim.config().dht.replication_factor.get();
    let holders = sim.true_closest(b"kept", k, None);
    let writer = (0..24)
        .find(|i| !holders.contains(&SimPeer(*i)))
        .expect("a node outside the closest");
    let op = sim.command(writer, put(b"kept", b"v", None)).unwrap();
    assert!(matches!(
        wait_reply(&mut sim, writer, op),
        Reply::Put(Ok(_))
    ));
    // Every holder but two dies; the writer keeps its own copy.
    for p in &holders[2..] {
        sim.crash(p.0);
    }
    sim.run_for(Duration::from_secs(90));
    let now_closest = sim.true_closest(b"kept", k, None);
    let held = now_closest
        .iter()
        .filter(|p| sim.node(p.0).and_then(|c| c.stored(b"kept")).is_some())
        .count();
    assert_eq!(
        held, k,
        "seed 9: {held} of the {k} nodes now closest hold the record"
    );
    let republished: u64 = sim
        .live_honest()
        .iter()
        .map(|&i| sim.node(i).unwrap().stats().republished)
        .sum();
    assert!(republished > 0);
}

/// Puts from random nodes under loss, crashes and restarts (disks kept), more puts, then every
/// acknowledged record must be held by one of its closest live nodes and found by a get.
fn churn(seed: u64) {
    use rand::{Rng, SeedableRng};
    let mut config = SimConfig::local();
    config.link.loss = 0.02;
    let mut sim = Sim::new(seed, config);
    sim.add_converged(30);
    sim.run_for(Duration::from_secs(2));
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut keys = Vec::new();
    let mut put_some = |sim: &mut Sim, rng: &mut rand::rngs::StdRng, round: u8| {
        for i in 0..10u8 {
            let live = sim.live_honest();
            let node = live[rng.gen_range(0..live.len())];
            let key = vec![b'c', round, i];
            if let Some(op) = sim.command(node, put(&key, &[i; 32], None))
                && let Some(answer) = sim.wait(node, op, Duration::from_secs(60))
                && matches!(answer.reply, Reply::Put(Ok(_)))
            {
                keys.push(key);
            }
        }
    };
    put_some(&mut sim, &mut rng, 0);
    let mut crashed = Vec::new();
    while crashed.len() < 5 {
        let id = rng.gen_range(0..30u32);
        if !crashed.contains(&id) {
            sim.crash(id);
            crashed.push(id);
        }
    }
    sim.run_for(Duration::from_secs(20));
    for &id in &crashed[..3] {
        sim.restart(id);
        sim.join(id, &[sim.live_honest()[0]]);
    }
    sim.run_for(Duration::from_secs(20));
    put_some(&mut sim, &mut rng, 1);
    sim.run_for(Duration::from_secs(10));
    assert!(
        keys.len() >= 15,
        "seed {seed}: only {} puts acknowledged",
        keys.len()
    );
    sim.check_records();
    for key in &keys {
        let live = sim.live_honest();
        let reader = live[rng.gen_range(0..live.len())];
        let op = sim.command(reader, Command::get(key.clone())).unwrap();
        let reply = wait_reply(&mut sim, reader, op);
        assert!(
            get_result(reply).is_ok(),
            "seed {seed}: {key:?} not found from node {reader}"
        );
    }
}

#[test]
fn acknowledged_records_outlive_churn_under_loss() {
    churn(11);
}

#[test]
#[ignore = "sweeps 300 seeds; run with --ignored (about 20 s in a release build)"]
fn acknowledged_records_outlive_churn_under_loss_across_seeds() {
    for seed in 100..400 {
        churn(seed);
    }
}

// ----- one-hop routing -----

/// A converged network whose views have settled (one-hop routing applies).
fn settled(seed: u64, n: usize) -> Sim {
    let mut sim = Sim::new(seed, SimConfig::local());
    sim.add_converged(n);
    let settle = sim.config().dht.view_settle;
    sim.run_for(settle + Duration::from_secs(1));
    sim
}

fn get_via(sim: &mut Sim, node: u32, key: &[u8], route: Route) -> crate::api::GetResult {
    let command = Command::Get {
        key: key.to_vec(),
        route,
        prove: false,
    };
    let op = sim.command(node, command).unwrap();
    get_result(wait_reply(sim, node, op))
}

fn put_ok(sim: &mut Sim, node: u32, key: &[u8], value: &[u8]) -> crate::api::PutOk {
    let op = sim.command(node, put(key, value, None)).unwrap();
    match wait_reply(sim, node, op) {
        Reply::Put(Ok(ok)) => ok,
        other => panic!("seed {}: put of {key:?} at {node}: {other:?}", sim.seed()),
    }
}

#[test]
fn a_young_view_routes_iteratively_then_gets_take_one_round_trip_to_the_closest() {
    let mut sim = Sim::new(21, SimConfig::local());
    sim.add_converged(40);
    sim.run_for(Duration::from_secs(1));
    // Just started: the view is unsettled, the put finds its replicas by a lookup.
    let early = put_ok(&mut sim, 0, b"early", b"v");
    assert_eq!(early.path, Path::Iterative);
    assert!(!sim.node(0).unwrap().view_settled(sim.now()));
    let settle = sim.config().dht.view_settle;
    sim.run_for(settle);
    assert!(sim.node(0).unwrap().view_settled(sim.now()));
    let k = sim.config().dht.replication_factor.get();
    let alpha = sim.config().dht.lookup_parallelism.get() as u32;
    for i in 0..10u8 {
        let key = [b'o', i];
        let writer = u32::from(i);
        assert_eq!(put_ok(&mut sim, writer, &key, b"value").path, Path::OneHop);
        // Readers that hold no copy (they are not among the k closest), so they must ask.
        let holders = sim.true_closest(&key, k, None);
        let reader = (20..40).find(|r| !holders.contains(&SimPeer(*r))).unwrap();
        let got = get_via(&mut sim, reader, &key, Route::Auto).expect("one-hop get");
        assert_eq!(got.record.value, b"value");
        assert_eq!(got.path, Path::OneHop);
        // The alpha closest were asked and all held it: nothing more was asked.
        assert_eq!(got.requests, alpha, "key {i}");
        let iterative = get_via(&mut sim, reader, &key, Route::Iterative).expect("lookup get");
        assert_eq!(iterative.path, Path::Iterative);
        assert!(iterative.requests as usize >= k, "{}", iterative.requests);
        assert_eq!(iterative.record.value, got.record.value);
    }
    let stats = sim.node(0).unwrap().stats();
    assert!(stats.one_hop >= 1 && stats.iterative >= 1, "{stats:?}");
    // A key nobody holds: the k closest are asked, then the get gives up.
    let missing = get_via(&mut sim, 5, b"missing", Route::Auto);
    assert!(matches!(missing, Err(GetError::NotFound { .. })));
}

#[test]
fn find_node_answers_from_the_view_at_once_and_the_forced_lookup_agrees() {
    let mut sim = settled(22, 40);
    let k = sim.config().dht.replication_factor.get();
    for i in 0..10u32 {
        let target = SimPeer(5000 + i);
        let truth = sim.true_closest(&target.to_bytes(), k, Some(i));
        let op = sim.command(i, Command::find_node(target)).unwrap();
        let Reply::FindNode(Ok(local)) = wait_reply(&mut sim, i, op) else {
            panic!("find-node {i}");
        };
        assert_eq!(local.path, Path::OneHop);
        assert_eq!(local.stats.requests, 0);
        assert_eq!(local.peers, truth);
        let forced = Command::FindNode {
            peer: target,
            route: Route::Iterative,
        };
        let op = sim.command(i, forced).unwrap();
        let Reply::FindNode(Ok(walked)) = wait_reply(&mut sim, i, op) else {
            panic!("iterative find-node {i}");
        };
        assert_eq!(walked.path, Path::Iterative);
        assert!(walked.stats.requests > 0);
        assert_eq!(walked.peers, local.peers, "target {i}");
    }
}

#[test]
fn a_put_answers_once_the_closest_replicas_answered_so_a_get_finds_it_in_one_hop() {
    let mut sim = settled(23, 30);
    let alpha = sim.config().dht.lookup_parallelism.get();
    // Links take 1 to 5 ms: the quorum is often reached by farther replicas first, but the
    // caller is answered only once the closest (which a one-hop get asks first) kept it too.
    for i in 0..20u8 {
        let key = [b's', i];
        let closest = sim.true_closest(&key, alpha, None);
        let writer = (0..30).find(|w| !closest.contains(&SimPeer(*w))).unwrap();
        let op = sim.command(writer, put(&key, b"v1", None)).unwrap();
        let answer = sim.wait(writer, op, Duration::from_secs(60)).unwrap();
        assert!(matches!(answer.reply, Reply::Put(Ok(_))));
        for p in &closest {
            let held = sim
                .node(p.0)
                .unwrap()
                .stored(&key)
                .map(|s| s.record().value.clone());
            assert_eq!(
                held.as_deref(),
                Some(&b"v1"[..]),
                "key {i}, closest replica {p:?}"
            );
        }
    }
}

#[test]
fn gets_and_puts_succeed_through_a_join_wave_and_a_kill_while_views_disagree() {
    let n = 30u32;
    let mut sim = settled(24, n as usize);
    let mut keys: Vec<Vec<u8>> = Vec::new();
    for i in 0..10u8 {
        let key = vec![b'w', i];
        put_ok(&mut sim, u32::from(i), &key, &[i; 16]);
        keys.push(key);
    }
    // A tenth of the nodes crash (their death not yet known), and a tenth more join through
    // node 0 at once.
    for id in [27, 28, 29] {
        sim.crash(id);
    }
    let first = sim.add_nodes(3, 0);
    let joiners: Vec<u32> = (first..first + 3).collect();
    for &j in &joiners {
        sim.join(j, &[0]);
    }
    let view = |sim: &Sim, id: u32| {
        let mut v = sim.node(id).unwrap().live_members();
        v.sort();
        v
    };
    // Until the seed has admitted a joiner, looked at every millisecond: its news reaches the
    // rest within milliseconds here, as the seed takes the join's push-pull the moment the
    // joiner's proof is in hand.
    let seen = sim.run_until_cond(Duration::from_secs(5), Duration::from_millis(1), |s| {
        joiners.iter().any(|j| view(s, 0).contains(&SimPeer(*j)))
    });
    assert!(seen.is_some(), "seed 24: the seed never admitted a joiner");
    // Node 0 (the seed) already knows the joiners; node 20 has not heard of them: the two views
    // differ, and both still list the crashed nodes.
    let (seed_view, far_view) = (view(&sim, 0), view(&sim, 20));
    assert_ne!(seed_view, far_view, "the views should differ");
    assert!(joiners.iter().any(|j| seed_view.contains(&SimPeer(*j))));
    assert!(joiners.iter().all(|j| !far_view.contains(&SimPeer(*j))));
    assert!(far_view.contains(&SimPeer(29)));
    // Puts through both views, gets of old and new keys through both, and through a joiner
    // (whose young view takes the iterative path).
    for (i, writer) in [0u32, 20, 0, 20].into_iter().enumerate() {
        let key = vec![b'n', i as u8];
        put_ok(&mut sim, writer, &key, b"during");
        keys.push(key);
    }
    for reader in [0, 20, joiners[0]] {
        for key in &keys {
            let got = get_via(&mut sim, reader, key, Route::Auto);
            assert!(got.is_ok(), "seed 24: {key:?} from {reader}: {got:?}");
        }
    }
    let paths = |sim: &Sim, id: u32| {
        let s = sim.node(id).unwrap().stats();
        (s.one_hop, s.iterative)
    };
    assert!(paths(&sim, 20).0 > 0, "node 20 routed in one hop");
    assert!(
        paths(&sim, joiners[0]).1 > 0,
        "the joiner fell back to lookups"
    );
    sim.check_records();
}

#[test]
fn a_put_goes_to_the_closest_first_and_to_the_rest_once_they_answered_or_one_refused() {
    // The rest go as copies (told, no answer awaited) once the quorum is reached, and as
    // replica puts that count toward it when it is not.
    let (mut core, now) = settled_lone(false);
    let k = core.config().replication_factor.get();
    let alpha = core.config().lookup_parallelism.get();
    let first_wave = alpha.max(core.config().put_quorum.get());
    let wave = |core: &mut Core<SimPeer, SimChecks>| -> Vec<(SimPeer, RequestId)> {
        sends(&drain(core))
            .into_iter()
            .filter(|(_, _, r)| matches!(r, Request::PutRecord(_)))
            .map(|(to, id, _)| (to, id))
            .collect()
    };
    let reply = |actions: &[Action<SimPeer>]| {
        actions.iter().any(|a| matches!(a, Action::Reply { reply: Reply::Put(Ok(ok)), .. } if ok.path == Path::OneHop))
    };
    // The closest replicas first; the rest once they all kept it.
    core.handle_command(now, UNIX, put(b"waves", b"v", None));
    let first = wave(&mut core);
    let truth = lookup::closest(&KeyHash::of(b"waves"), (1..=30).map(SimPeer), k);
    assert_eq!(
        first.iter().map(|(p, _)| *p).collect::<Vec<_>>(),
        truth[..first_wave]
    );
    let kept = core.stored(b"waves").unwrap().record().clone();
    for (i, (peer, id)) in first.iter().enumerate() {
        core.handle_response(now, UNIX, *id, Ok(kept_by(*peer, &kept)));
        let actions = drain(&mut core);
        let last = i + 1 == first.len();
        // Answered once the quorum and the alpha closest kept it: with the last of the wave.
        assert_eq!(reply(&actions), last, "answer {i}");
        // The rest go as copies, told: no answer is awaited, so the put is over.
        assert!(sends(&actions).is_empty(), "answer {i}");
        let told: Vec<_> = actions
            .iter()
            .filter_map(|a| match a {
                Action::Tell { to, request, .. } => Some((*to, request)),
                _ => None,
            })
            .collect();
        assert_eq!(
            told.len(),
            if last { k - first_wave } else { 0 },
            "answer {i}"
        );
        assert!(told.iter().all(|(_, r)| matches!(r, Request::PutCopy(_))));
        assert_eq!(
            told.iter().map(|(p, _)| *p).collect::<Vec<_>>(),
            if last {
                truth[first_wave..].to_vec()
            } else {
                Vec::new()
            }
        );
    }
    assert_eq!(core.sizes().ops, 0, "nothing waits for the copies");
    // A refusal in the first wave sends the rest at once, so the quorum can come from them.
    core.handle_command(now, UNIX, put(b"refused", b"v", None));
    let first = wave(&mut core);
    assert_eq!(first.len(), first_wave);
    core.handle_response(now, UNIX, first[0].1, Ok(Response::refused("full")));
    assert_eq!(wave(&mut core).len(), k - first_wave);
}

#[test]
fn a_put_waits_for_a_write_only_when_the_sequence_floor_must_rise() {
    let (mut core, now) = settled_lone(true);
    let first_wave = core
        .config()
        .lookup_parallelism
        .get()
        .max(core.config().put_quorum.get());
    let replica_puts = |actions: &[Action<SimPeer>]| {
        sends(actions)
            .iter()
            .filter(|(_, _, r)| matches!(r, Request::PutRecord(_)))
            .count()
    };
    let flushed = |actions: &[Action<SimPeer>]| -> Vec<(WriteId, Vec<WriteOp<SimPeer>>)> {
        writes(actions)
            .into_iter()
            .filter(|(_, _, durability)| *durability == Durability::Flushed)
            .map(|(id, ops, _)| (id, ops.to_vec()))
            .collect()
    };
    // The first put raises the floor past its sequence: nothing leaves before that is durable.
    core.handle_command(now, UNIX, put(b"first", b"v", None));
    let actions = drain(&mut core);
    assert_eq!(replica_puts(&actions), 0, "not before the floor is on disk");
    let writes = flushed(&actions);
    assert_eq!(writes.len(), 1);
    let floor = writes[0].1.iter().find_map(|op| match op {
        WriteOp::Meta(m) => Some(m.seq_floor),
        _ => None,
    });
    let seq = core.stored(b"first").unwrap().record().seq;
    assert_eq!(floor, Some(seq + SEQ_FLOOR_RESERVE), "reserved ahead");
    core.handle_committed(now, UNIX, writes[0].0, Ok(()));
    assert_eq!(replica_puts(&drain(&mut core)), first_wave);
    // The next puts are under the floor: sent at once, their own copies written as copies.
    core.handle_command(now, UNIX, put(b"second", b"v", None));
    let actions = drain(&mut core);
    assert_eq!(replica_puts(&actions), first_wave, "sent in the same turn");
    assert!(flushed(&actions).is_empty());
    assert!(core.stored(b"second").is_some(), "kept before its write");
    core.handle_timeout(now + records::COPY_WRITE_DELAY, UNIX);
    let actions = drain(&mut core);
    assert!(actions.iter().any(|a| matches!(
        a,
        Action::Write { ops, durability: Durability::Deferred, .. }
            if matches!(&ops[..], [WriteOp::PutRecord { key, .. }] if key == b"second")
    )));
    // A sequence above the floor (the caller's) waits for the floor again.
    core.handle_command(
        now,
        UNIX,
        put(b"third", b"v", Some(seq + 2 * SEQ_FLOOR_RESERVE)),
    );
    let actions = drain(&mut core);
    assert_eq!(replica_puts(&actions), 0);
    assert_eq!(flushed(&actions).len(), 1);
}

#[test]
fn a_copy_is_answered_when_kept_written_soon_and_flushed_within_the_delay() {
    let (mut core, now) = lone(0, true);
    core.handle_gate(now, UNIX, SimPeer(1), Ok(()));
    drain(&mut core);
    let signer = NodeKey::from_seed([9; 32]);
    let writes = |actions: &[Action<SimPeer>]| -> Vec<(WriteId, usize, Durability)> {
        writes(actions)
            .into_iter()
            .map(|(id, ops, durability)| (id, ops.len(), durability))
            .collect()
    };
    let copy = |key: &[u8]| {
        let signed = record(&signer, key, b"v", 1);
        Request::PutCopy(ByteBuf::from(signed.as_bytes().to_vec()))
    };
    // Two copies: answered at once, written together a little later, without a flush.
    core.handle_request(now, UNIX, SimPeer(1), InboundId(1), copy(b"a"));
    core.handle_request(now, UNIX, SimPeer(1), InboundId(2), copy(b"a2"));
    let actions = drain(&mut core);
    assert_eq!(responses(&actions).len(), 2);
    assert!(responses(&actions).iter().all(|r| r.1 == &Response::Stored));
    assert!(writes(&actions).is_empty());
    let written = core.poll_timeout().expect("the copies' write is due");
    assert!(written > now && written - now < Duration::from_secs(1));
    core.handle_timeout(written, UNIX);
    let w = writes(&drain(&mut core));
    assert_eq!(w.len(), 1);
    assert_eq!((w[0].1, w[0].2), (2, Durability::Deferred));
    core.handle_committed(written, UNIX, w[0].0, Ok(()));
    // Within the flush delay, nothing else; at its end, one empty flushed write.
    let delay = core.config().copy_flush_delay;
    core.handle_timeout(written + delay / 2, UNIX);
    assert!(writes(&drain(&mut core)).is_empty());
    core.handle_timeout(written + delay, UNIX);
    let flush = writes(&drain(&mut core));
    assert_eq!(flush.len(), 1);
    assert_eq!((flush[0].1, flush[0].2), (0, Durability::Flushed));
    core.handle_committed(written + delay, UNIX, flush[0].0, Ok(()));
    // A replica put (flushed) after a copy takes the copy's write along, first, and makes it
    // durable too: no separate write or flush follows.
    let later = written + delay * 2;
    core.handle_request(later, UNIX, SimPeer(1), InboundId(3), copy(b"b"));
    let signed = record(&signer, b"c", b"v", 1);
    let put = Request::PutRecord(ByteBuf::from(signed.as_bytes().to_vec()));
    core.handle_request(later, UNIX, SimPeer(1), InboundId(4), put);
    let w = writes(&drain(&mut core));
    assert_eq!(
        w.iter().map(|w| w.2).collect::<Vec<_>>(),
        [Durability::Deferred, Durability::Flushed]
    );
    core.handle_timeout(later + delay * 2, UNIX);
    assert!(writes(&drain(&mut core)).is_empty());
}

/// The SWIM messages among `actions` to `to` that are a push-pull (`join` or not), in order.
fn push_pulls_to(actions: &[Action<SimPeer>], to: SimPeer, join: bool) -> Vec<Message<SimPeer>> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Swim { to: t, msg, .. }
                if *t == to
                    && matches!(msg.payload, Payload::PushPull { join: j, .. } if j == join) =>
            {
                Some(msg.clone())
            }
            _ => None,
        })
        .collect()
}

/// The answer to command `op` among `actions`.
fn join_reply(actions: &[Action<SimPeer>], op: OpId) -> Option<&Result<JoinOk, JoinError>> {
    actions.iter().find_map(|a| match a {
        Action::Reply {
            op: o,
            reply: Reply::Join(r),
        } if *o == op => Some(r),
        _ => None,
    })
}

#[test]
fn a_joins_push_pull_goes_to_every_seed_with_the_dial_without_waiting_for_a_proof() {
    let (mut core, now) = lone(0, false);
    let addr = |i: u32| vec![Address(format!("/sim/{i}").into_bytes())];
    core.handle_command(
        now,
        UNIX,
        Command::Join(vec![(SimPeer(1), addr(1)), (SimPeer(2), addr(2))]),
    );
    let actions = drain(&mut core);
    let dials = actions
        .iter()
        .filter(|a| matches!(a, Action::Dial { .. }))
        .count();
    assert_eq!(dials, 2);
    for seed in [1, 2] {
        assert_eq!(
            push_pulls_to(&actions, SimPeer(seed), true).len(),
            1,
            "SWIM's join went out to seed {seed} beside its dial"
        );
    }
    // Seed 1 passes the gate, seed 2 never answers: nothing is sent again meanwhile.
    core.handle_gate(now, UNIX, SimPeer(1), Ok(()));
    assert!(push_pulls_to(&drain(&mut core), SimPeer(1), true).is_empty());
}

#[test]
fn a_join_costs_one_exchange_each_side_holding_the_others_push_pull_until_its_proof_comes() {
    let (mut joiner, t0) = lone(0, false);
    let (mut seed, t1) = lone(1, false);
    let now = t0.max(t1);
    let op = joiner.handle_command(
        now,
        UNIX,
        Command::Join(vec![(SimPeer(1), vec![Address(b"/sim/1".to_vec())])]),
    );
    let push = push_pulls_to(&drain(&mut joiner), SimPeer(1), true);
    assert_eq!(push.len(), 1);
    // The push-pull comes before the joiner's proof (another stream of the same connection):
    // the seed holds it, unanswered.
    seed.handle_swim(now, UNIX, SimPeer(0), push[0].clone());
    assert!(push_pulls_to(&drain(&mut seed), SimPeer(0), false).is_empty());
    // The proof comes: the push-pull is taken and answered, and the joiner's check is left to
    // the lowest priority, as nothing but SWIM waited on it.
    seed.handle_presented(now, UNIX, SimPeer(0), &proof(0));
    let actions = drain(&mut seed);
    assert!(
        actions.iter().any(|a| matches!(
            a,
            Action::Verify { peer, needed: false, .. } if *peer == SimPeer(0)
        )),
        "{actions:?}"
    );
    let answer = push_pulls_to(&actions, SimPeer(0), false);
    assert_eq!(answer.len(), 1, "{actions:?}");
    // The answer, likewise before the seed's proof: the joiner holds it, and the join waits.
    joiner.handle_swim(now, UNIX, SimPeer(1), answer[0].clone());
    assert_eq!(join_reply(&drain(&mut joiner), op), None);
    joiner.handle_presented(now, UNIX, SimPeer(1), &proof(1));
    let actions = drain(&mut joiner);
    assert!(
        matches!(
            join_reply(&actions, op),
            Some(Ok(JoinOk {
                verified_seeds: 1,
                members: 1
            }))
        ),
        "{actions:?}"
    );
    assert!(joiner.is_live(&SimPeer(1)));
}

#[test]
fn a_join_through_a_seed_refused_by_the_gate_fails_and_tells_the_seed_nothing_more() {
    let (mut core, now) = lone(0, false);
    let op = core.handle_command(
        now,
        UNIX,
        Command::Join(vec![(SimPeer(1), vec![Address(b"/sim/1".to_vec())])]),
    );
    assert_eq!(push_pulls_to(&drain(&mut core), SimPeer(1), true).len(), 1);
    // Its proof is for another key.
    core.handle_gate(now, UNIX, SimPeer(1), Err(ProofError::WrongKey));
    let actions = drain(&mut core);
    assert!(
        matches!(
            join_reply(&actions, op),
            Some(Err(JoinError::NoSeedVerified { tried: 1 }))
        ),
        "{actions:?}"
    );
    // SWIM keeps its seeds to push-pull with later; none of it reaches the refused one.
    let mut at = now;
    for _ in 0..600 {
        at += Duration::from_millis(100);
        core.handle_timeout(at, UNIX);
        let actions = drain(&mut core);
        assert!(
            !actions
                .iter()
                .any(|a| matches!(a, Action::Swim { to, .. } if *to == SimPeer(1))),
            "{actions:?}"
        );
    }
}

#[test]
fn a_seed_whose_connection_is_late_is_dialed_again_up_to_the_bound_then_the_join_goes_on() {
    let (mut core, start) = lone(0, false);
    let redial = core.config().seed_redial.expect("local config redials");
    let addr = |i: u32| vec![Address(format!("/sim/{i}").into_bytes())];
    let op = core.handle_command(
        start,
        UNIX,
        Command::Join(vec![(SimPeer(1), addr(1)), (SimPeer(2), addr(2))]),
    );
    drain(&mut core);
    let redials_at = |core: &mut Core<SimPeer, SimChecks>, at: Instant| -> Vec<SimPeer> {
        core.handle_timeout(at, UNIX);
        drain(core)
            .into_iter()
            .filter_map(|a| match a {
                Action::Redial { peer, addrs } => {
                    assert_eq!(addrs, addr(peer.0));
                    Some(peer)
                }
                _ => None,
            })
            .collect()
    };
    assert!(redials_at(&mut core, start + redial / 2).is_empty());
    assert!(core.poll_timeout().is_some_and(|t| t <= start + redial));
    assert_eq!(
        redials_at(&mut core, start + redial),
        [SimPeer(1), SimPeer(2)]
    );
    // Seed 2's dial failed for good: only seed 1 is dialed again.
    core.handle_dial_failed(start + redial, UNIX, SimPeer(2));
    drain(&mut core);
    let mut at = start + redial;
    for _ in 2..SEED_DIALS {
        at += redial;
        assert_eq!(redials_at(&mut core, at), [SimPeer(1)]);
    }
    // The bound is reached: no more attempts, and the join waits for its seeds' outcome.
    assert!(redials_at(&mut core, at + redial).is_empty());
    let give_up = start + 2 * core.config().gate_timeout;
    assert_eq!(core.poll_timeout().map(|t| t <= give_up), Some(true));
    core.handle_timeout(give_up, UNIX);
    let actions = drain(&mut core);
    let failed = join_reply(&actions, op);
    assert!(
        matches!(failed, Some(Err(JoinError::NoSeedVerified { tried: 2 }))),
        "{failed:?}"
    );
}

#[test]
fn seeds_are_not_dialed_again_without_a_redial_delay() {
    let now = Instant::now();
    let mut core = Core::new(
        now,
        UNIX,
        SimPeer(0),
        crate::sim::key_of(SECRET, SimPeer(0)),
        SimChecks::new(SECRET),
        Config {
            seed_redial: None,
            ..config()
        },
        false,
        Restored::default(),
    )
    .unwrap();
    core.handle_command(
        now,
        UNIX,
        Command::Join(vec![(SimPeer(1), vec![Address(b"/sim/1".to_vec())])]),
    );
    drain(&mut core);
    let step = Duration::from_millis(100);
    let mut at = now;
    while at + step < now + 2 * core.config().gate_timeout {
        at += step;
        core.handle_timeout(at, UNIX);
        let actions = drain(&mut core);
        assert!(!actions.iter().any(|a| matches!(a, Action::Redial { .. })));
    }
}

#[test]
fn a_swim_join_without_answer_is_tried_again_on_fresh_connections() {
    let (mut core, start) = lone(0, false);
    let redial = core.config().seed_redial.expect("local config redials");
    let join_timeout = core.config().swim.join_timeout;
    let seed = vec![Address(b"/sim/1".to_vec())];
    core.handle_command(start, UNIX, Command::Join(vec![(SimPeer(1), seed.clone())]));
    core.handle_gate(start, UNIX, SimPeer(1), Ok(()));
    let pushes = |actions: &[Action<SimPeer>]| push_pulls_to(actions, SimPeer(1), true).len();
    assert_eq!(pushes(&drain(&mut core)), 1);
    // The seed never answers: the attempt times out, the seed's connection is replaced, and the
    // next attempt waits for it.
    let failed = start + join_timeout + Duration::from_millis(1);
    core.handle_timeout(failed, UNIX);
    let actions = drain(&mut core);
    assert!(
        actions.iter().any(
            |a| matches!(a, Action::Reconnect { peer, addrs } if *peer == SimPeer(1) && *addrs == seed)
        ),
        "{actions:?}"
    );
    assert_eq!(
        pushes(&actions),
        0,
        "the retry waits for the fresh connection"
    );
    core.handle_timeout(failed + redial, UNIX);
    assert_eq!(pushes(&drain(&mut core)), 1);
}

#[test]
fn a_join_through_a_seed_listed_already_starts_at_once() {
    let (mut core, now) = lone(0, false);
    let seed = vec![Address(b"/sim/1".to_vec())];
    // Met on a connection: its proof is in hand, its check still waits.
    core.handle_presented(now, UNIX, SimPeer(1), &proof(1));
    drain(&mut core);
    core.handle_command(now, UNIX, Command::Join(vec![(SimPeer(1), seed)]));
    let joined = !push_pulls_to(&drain(&mut core), SimPeer(1), true).is_empty();
    assert!(joined, "SWIM's join went out without waiting for the check");
}

// ----- network-wide notices (feeds.rs) -----

fn announce(sim: &mut Sim, node: u32, key: &[u8]) {
    let op = sim
        .command(
            node,
            Command::Announce {
                key: key.to_vec(),
                value: b"coming".to_vec(),
                seq: None,
            },
        )
        .unwrap();
    assert!(
        matches!(wait_reply(sim, node, op), Reply::Announce(Ok(_))),
        "seed {}: announcement refused",
        sim.seed()
    );
}

/// The feed positions node `at` delivered of `publisher`'s notices, in delivery order.
fn delivered_from(sim: &Sim, at: u32, publisher: u32) -> Vec<u64> {
    let key = publisher_key(sim, publisher).public();
    sim.delivered(at)
        .iter()
        .filter(|n| n.notice().publisher == key)
        .map(|n| n.notice().feed.expect("broadcast notices have a feed").seq)
        .collect()
}

#[test]
fn every_node_delivers_every_announcement_once_in_feed_order() {
    for seed in [1, 2] {
        let mut sim = network(seed, 30);
        for i in 0..10u8 {
            announce(&mut sim, 3, &[b'k', i]);
        }
        sim.run_for(Duration::from_secs(3));
        let want: Vec<u64> = (1..=10).collect();
        for node in 0..30 {
            assert_eq!(
                delivered_from(&sim, node, 3),
                want,
                "seed {seed} node {node}"
            );
        }
        // Only the k closest keep each notice for puts; the broadcast reached the rest.
        let stats = sim.node(0).unwrap().broadcast().stats();
        assert_eq!(stats.rejected.invalid, 0);
        assert!(stats.views.active >= 2, "{:?}", stats.views);
    }
}

#[test]
fn crashes_while_announcing_lose_no_notice_at_the_survivors() {
    let mut sim = network(5, 30);
    let crashed = [7, 11, 19, 23, 28];
    for i in 0..20u8 {
        if i == 5 {
            for &c in &crashed {
                sim.crash(c);
            }
        }
        announce(&mut sim, 1, &[b'c', i]);
        sim.run_for(Duration::from_millis(50));
    }
    sim.run_for(Duration::from_secs(10));
    let want: Vec<u64> = (1..=20).collect();
    for node in (0..30).filter(|n| !crashed.contains(n)) {
        assert_eq!(delivered_from(&sim, node, 1), want, "node {node}");
    }
}

#[test]
fn a_restarted_publisher_continues_its_feed_and_a_subscriber_resumes_after_its_position() {
    let mut sim = network(8, 12);
    announce(&mut sim, 2, b"one");
    announce(&mut sim, 2, b"two");
    sim.run_for(Duration::from_secs(2));
    sim.crash(2);
    sim.run_for(Duration::from_secs(1));
    sim.restart(2);
    sim.run_for(Duration::from_secs(5));
    announce(&mut sim, 2, b"three");
    sim.run_for(Duration::from_secs(3));
    assert_eq!(delivered_from(&sim, 5, 2), vec![1, 2, 3]);
    let (feed, _) = sim.delivered(5)[0].feed_id().unwrap();
    // What a subscriber that saw position 1 missed, at another node.
    let op = sim
        .command(
            9,
            Command::Feed {
                after: vec![(feed, 1)],
            },
        )
        .unwrap();
    let Reply::Feed(missed) = wait_reply(&mut sim, 9, op) else {
        panic!("not a feed reply");
    };
    let seqs: Vec<u64> = missed
        .iter()
        .map(|n| n.notice().feed.unwrap().seq)
        .collect();
    assert_eq!(seqs, vec![2, 3]);
}

#[test]
fn forged_and_unadmitted_broadcasts_are_dropped_and_counted() {
    let mut sim = network(4, 8);
    announce(&mut sim, 1, b"real");
    sim.run_for(Duration::from_secs(2));
    let real = sim.delivered(0)[0].clone();
    let (feed, seq) = real.feed_id().unwrap();
    let now = sim.now();
    let unix = sim.unix(0);
    let gossip = |publisher: Vec<u8>, seq: u64, body: Vec<u8>| shoal_broadcast::Message::Gossip {
        notice: shoal_broadcast::Notice {
            publisher,
            seq,
            body,
        },
        round: 0,
    };
    let core = sim.node_mut(0).unwrap();
    let before = core.broadcast().stats().rejected.invalid;
    // A real envelope under another feed position, one under another feed, and a body that is
    // no envelope at all, each from an admitted member.
    core.handle_broadcast(
        now,
        unix,
        SimPeer(2),
        gossip(feed.clone(), seq + 1, real.as_bytes().to_vec()),
    );
    let mut other = feed.clone();
    other[39] ^= 1;
    core.handle_broadcast(
        now,
        unix,
        SimPeer(2),
        gossip(other, seq, real.as_bytes().to_vec()),
    );
    let mut tampered = real.as_bytes().to_vec();
    let last = tampered.len() - 1;
    tampered[last] ^= 1;
    core.handle_broadcast(
        now,
        unix,
        SimPeer(2),
        gossip(feed.clone(), seq + 2, tampered),
    );
    assert_eq!(core.broadcast().stats().rejected.invalid, before + 3);
    // The same from a peer never admitted is not even looked at.
    core.handle_broadcast(
        now,
        unix,
        SimPeer(999),
        gossip(feed, seq + 1, real.as_bytes().to_vec()),
    );
    assert_eq!(core.stats().broadcast_unadmitted, 1);
    while let Some(action) = core.poll_action() {
        assert!(
            !matches!(action, Action::Notice(_)),
            "a forged notice was delivered"
        );
    }
}

// ----- receipts and standing -----

/// The receipt in a replica's answer.
fn receipt_of(response: &Response) -> Receipt {
    match response {
        Response::Kept(bytes) => Receipt::decode(bytes).unwrap(),
        other => panic!("not a receipt: {other:?}"),
    }
}

/// `peer`'s answer that it kept `record`, with its receipt.
fn kept_by(peer: SimPeer, record: &crate::record::Record) -> Response {
    let receipt = Receipt::sign(&sim::key_of(SECRET, peer), record, UNIX);
    Response::Kept(ByteBuf::from(receipt.as_bytes().to_vec()))
}

#[test]
fn a_put_returns_the_quorums_receipts_and_a_forged_one_marks_its_sender() {
    let (mut core, now) = settled_lone(false);
    let quorum = core.config().put_quorum.get();
    core.handle_command(now, UNIX, put(b"r", b"v", None));
    let first: Vec<(SimPeer, RequestId)> = sends(&drain(&mut core))
        .into_iter()
        .filter(|(_, _, r)| matches!(r, Request::PutRecord(_)))
        .map(|(to, id, _)| (to, id))
        .collect();
    assert!(first.len() >= quorum);
    let kept = core.stored(b"r").unwrap().record().clone();
    // One replica answers with another's receipt, one with a receipt for another value: both
    // refused, both senders marked; the rest go out at once to make up the quorum.
    let (liar, mismatched) = (first[0].0, first[1].0);
    let other = SimPeer(liar.0 % 30 + 1);
    core.handle_response(now, UNIX, first[0].1, Ok(kept_by(other, &kept)));
    let mut wrong_value = kept.clone();
    wrong_value.value = b"w".to_vec();
    let answer = kept_by(mismatched, &wrong_value);
    core.handle_response(now, UNIX, first[1].1, Ok(answer));
    let mut actions = drain(&mut core);
    let mut rest: Vec<(SimPeer, RequestId)> = sends(&actions)
        .into_iter()
        .filter(|(_, _, r)| matches!(r, Request::PutRecord(_)))
        .map(|(to, id, _)| (to, id))
        .collect();
    rest.extend(first[2..].iter().copied());
    for (peer, id) in rest {
        core.handle_response(now, UNIX, id, Ok(kept_by(peer, &kept)));
        actions.extend(drain(&mut core));
    }
    let ok = actions
        .iter()
        .find_map(|a| match a {
            Action::Reply {
                reply: Reply::Put(Ok(ok)),
                ..
            } => Some(ok.clone()),
            _ => None,
        })
        .expect("the put succeeded");
    assert!(ok.receipts.len() >= quorum);
    for receipt in &ok.receipts {
        receipt.check(&kept).unwrap();
        let signer = (1..=30)
            .map(SimPeer)
            .find(|p| sim::key_of(SECRET, *p).public() == *receipt.replica())
            .expect("signed by a replica");
        assert!(signer != liar && signer != mismatched);
    }
    let (seen, banned) = core.misbehaviour();
    assert_eq!(seen[0], (Misbehaviour::BadReceipt, 2));
    assert_eq!(banned, 0);
    assert_eq!(core.standing(now, &liar), FULL_STANDING - 20);
    assert_eq!(core.standing(now, &other), FULL_STANDING);
}

#[test]
fn a_replica_that_denies_its_receipts_loses_standing_then_is_banned_and_gets_still_succeed() {
    let mut sim = settled(31, 20);
    let (writer, dropper) = (0, 7);
    let dropper_key = sim.node_key(dropper).public();
    // Keys whose quorum receipts include the dropper's.
    let mut keys = Vec::new();
    for i in 0..200u32 {
        let key = format!("denied-{i}").into_bytes();
        let ok = put_ok(&mut sim, writer, &key, b"kept");
        assert!(ok.receipts.len() >= sim.config().dht.put_quorum.get());
        if ok.receipts.iter().any(|r| *r.replica() == dropper_key) {
            keys.push(key);
        }
        if keys.len() == 5 {
            break;
        }
    }
    assert_eq!(keys.len(), 5, "the dropper signed for five keys");
    sim.set_adversary(dropper, Some(Adversary::Drop));
    for (i, key) in keys.iter().enumerate() {
        let op = sim
            .command(
                writer,
                Command::Get {
                    key: key.clone(),
                    route: Route::Auto,
                    prove: true,
                },
            )
            .unwrap();
        let got = get_result(wait_reply(&mut sim, writer, op)).expect("the others serve it");
        assert_eq!(got.record.value, b"kept");
        // Every holder that answered proved it; the dropper proved nothing.
        assert!(!got.receipts.is_empty());
        assert!(got.receipts.iter().all(|r| *r.replica() != dropper_key));
        let now = sim.now();
        let core = sim.node(writer).unwrap();
        let standing = core.standing(now, &SimPeer(dropper));
        if i < 4 {
            assert_eq!(standing, FULL_STANDING - 20 * (i as u32 + 1), "after {i}");
            assert!(!core.is_banned(&SimPeer(dropper)));
        } else {
            assert!(core.is_banned(&SimPeer(dropper)), "banned after five");
        }
    }
    let (seen, banned) = sim.node(writer).unwrap().misbehaviour();
    assert_eq!((seen[1], banned), ((Misbehaviour::DeniedReceipt, 5), 1));
    // Banned: out of the writer's view, whatever the others say of it.
    sim.run_for(Duration::from_secs(5));
    let core = sim.node(writer).unwrap();
    assert!(!core.verified_live().any(|p| p == SimPeer(dropper)));
    // Nobody else holds a receipt of it, so nobody else judged it.
    let now = sim.now();
    assert_eq!(
        sim.node(1).unwrap().standing(now, &SimPeer(dropper)),
        FULL_STANDING
    );
}

#[test]
fn a_member_that_departs_too_often_is_held_out_until_its_departures_age() {
    let mut config = SimConfig::local();
    config.dht.trust.churn_max_departures = 2;
    config.dht.trust.churn_window = Duration::from_secs(600);
    let mut sim = Sim::new(43, config);
    sim.add_converged(8);
    let flapper = 7;
    let others = 0..7u32;
    let admitted_by_all = |s: &Sim| {
        others
            .clone()
            .all(|i| s.node(i).unwrap().is_admitted(&SimPeer(flapper)))
    };
    let gone_at_all = |s: &Sim| {
        others
            .clone()
            .all(|i| !s.node(i).unwrap().is_admitted(&SimPeer(flapper)))
    };
    for round in 0..3 {
        sim.crash(flapper);
        let gone = sim.run_until_cond(
            Duration::from_secs(60),
            Duration::from_millis(500),
            gone_at_all,
        );
        assert!(gone.is_some(), "round {round}: the crash was noticed");
        sim.restart(flapper);
        sim.join(flapper, &[0]);
        let back = sim.run_until_cond(
            Duration::from_secs(30),
            Duration::from_millis(500),
            admitted_by_all,
        );
        if round < 2 {
            assert!(back.is_some(), "round {round}: readmitted");
        } else {
            // The third departure within the window: held out everywhere.
            assert!(back.is_none(), "held out after its third departure");
            assert!(gone_at_all(&sim));
        }
    }
    let holds: u64 = others
        .clone()
        .map(|i| sim.node(i).unwrap().churn_holds())
        .sum();
    assert_eq!(holds, 7);
    // Once its departures age out of the window, it is admitted again.
    let back = sim.run_until_cond(
        Duration::from_secs(700),
        Duration::from_secs(1),
        admitted_by_all,
    );
    assert!(back.is_some(), "admitted again after the window");
}

#[test]
fn a_lookup_answer_that_hides_the_closest_costs_standing_and_honest_answers_never_do() {
    let mut sim = settled(47, 30);
    let liar = 5;
    sim.set_adversary(liar, Some(Adversary::Eclipse));
    let mut asked_liar = 0;
    for t in 0..20u32 {
        let target = SimPeer(1_000_000 + t);
        let k = sim.config().dht.replication_factor.get();
        if sim
            .true_closest(&target.to_bytes(), k, Some(0))
            .contains(&SimPeer(liar))
        {
            asked_liar += 1;
        }
        let command = Command::FindNode {
            peer: target,
            route: Route::Iterative,
        };
        let op = sim.command(0, command).unwrap();
        match wait_reply(&mut sim, 0, op) {
            Reply::FindNode(Ok(found)) => assert_eq!(found.path, Path::Iterative),
            other => panic!("{other:?}"),
        }
    }
    assert!(
        asked_liar >= 2,
        "the liar was among the closest {asked_liar} times"
    );
    let now = sim.now();
    let core = sim.node(0).unwrap();
    let (seen, _) = core.misbehaviour();
    assert_eq!(seen[4].0, Misbehaviour::EclipseAnswer);
    assert!(seen[4].1 >= 2, "{seen:?}");
    assert!(core.standing(now, &SimPeer(liar)) < FULL_STANDING);
    // Nobody else lost standing anywhere: honest answers name the true closest.
    for id in 0..30 {
        for (peer, _, _) in sim.node(id).unwrap().standings(now) {
            assert_eq!(peer, SimPeer(liar), "node {id} judged {peer:?}");
        }
    }
}

#[test]
fn a_joiner_saves_its_routing_snapshot_soon_after_joining() {
    let mut sim = Sim::new(53, SimConfig::local());
    sim.add_converged(6);
    let joiner = sim.add_nodes(1, 0);
    let op = sim.join(joiner, &[0]).unwrap();
    assert!(matches!(
        wait_reply(&mut sim, joiner, op),
        Reply::Join(Ok(_))
    ));
    assert!(sim.snapshot_on_disk(joiner).is_empty());
    // Well within the snapshot interval (a minute): a crash now keeps the members it knew.
    assert!(sim.config().dht.routing_snapshot_interval >= Duration::from_secs(60));
    sim.run_for(Duration::from_secs(7));
    assert!(
        sim.snapshot_on_disk(joiner).len() >= 5,
        "{:?}",
        sim.snapshot_on_disk(joiner)
    );
}

// ----- what an operator sees -----

#[test]
fn member_changes_are_reported_as_they_happen() {
    let (mut core, now) = settled_lone(false);
    gossip_from(&mut core, now, 1, vec![news(3, 1, State::Suspect, 1)]);
    gossip_from(&mut core, now, 1, vec![news(3, 1, State::Dead, 1)]);
    let changes: Vec<(SimPeer, State, u64)> = drain(&mut core)
        .into_iter()
        .filter_map(|a| match a {
            Action::MemberChanged {
                member,
                state,
                incarnation,
            } => Some((member, state, incarnation)),
            _ => None,
        })
        .collect();
    assert_eq!(
        changes,
        vec![
            (SimPeer(3), State::Suspect, 1),
            (SimPeer(3), State::Dead, 1)
        ]
    );
}

#[test]
fn records_page_in_key_order_under_a_prefix() {
    let (mut core, _) = lone(0, false);
    let signer = NodeKey::from_seed([9; 32]);
    for key in ["b/3", "a/1", "b/1", "c", "b/2", "b/0"] {
        core.records.put(record(&signer, key.as_bytes(), b"v", 1));
    }
    let keys = |page: Vec<&SignedRecord>| -> Vec<String> {
        page.iter()
            .map(|r| String::from_utf8_lossy(&r.record().key).into_owned())
            .collect()
    };
    let (page, more) = core.records().page(b"b/", None, 3);
    assert_eq!(
        (keys(page), more),
        (vec!["b/0".into(), "b/1".into(), "b/2".into()], true)
    );
    let (page, more) = core.records().page(b"b/", Some(b"b/2"), 3);
    assert_eq!((keys(page), more), (vec!["b/3".to_owned()], false));
    let (page, more) = core.records().page(b"", None, 10);
    assert_eq!(keys(page).len(), 6);
    assert!(!more);
    let (page, more) = core.records().page(b"zz", None, 10);
    assert!(page.is_empty() && !more);
}

#[test]
fn a_request_over_its_peers_bandwidth_waits_for_the_bytes_then_is_served() {
    let (mut core, now) = lone_trusting(crate::TrustPolicy {
        peer_bytes_per_second: 1_000,
        peer_bytes_burst: 1_000,
        ..Default::default()
    });
    core.handle_gate(now, UNIX, SimPeer(1), Ok(()));
    drain(&mut core);
    let find = || Request::FindNode(ByteBuf::from(b"x".to_vec()));
    // 800 bytes fit the burst; the next 800 wait 600 ms for the bytes to come back.
    core.handle_sized_request(now, UNIX, SimPeer(1), InboundId(1), find(), 800);
    core.handle_sized_request(now, UNIX, SimPeer(1), InboundId(2), find(), 800);
    assert_eq!(responses(&drain(&mut core)).len(), 1);
    assert_eq!(core.stats().slowed, 1);
    let mut served = None;
    for ms in (50..=1_000).step_by(50) {
        let at = now + Duration::from_millis(ms);
        while core.poll_timeout().is_some_and(|t| t <= at) {
            core.handle_timeout(at, UNIX);
        }
        let actions = drain(&mut core);
        let answered = responses(&actions);
        if let Some((_, r)) = answered.first() {
            assert!(!matches!(r, Response::Refused(_)), "{r:?}");
            served = Some(ms);
            break;
        }
    }
    assert!(
        served.is_some_and(|ms| (600..=700).contains(&ms)),
        "served when the bytes came back: {served:?} ms"
    );
    assert_eq!(core.stats().bandwidth_limited, 0);
}
