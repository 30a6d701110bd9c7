//! Admission: who enters the membership and the routing table, and when.
//!
//! A peer is admitted once this node checked its identity proof: the gate's exchange on a
//! connection ([`Core::handle_gate`]), or a proof relayed by the admitted member whose gossip
//! named it. Only admitted peers serve the DHT: the routing table, replicas, lookup answers and
//! requests served. Until then:
//!
//! - its requests wait in one hold queue (bounded per peer and in peers, and in time: a check
//!   that does not end in time drops them, refusing the requests), and so do its SWIM messages
//!   while no proof of it is in hand;
//! - news about it is cut from every SWIM message before the membership sees it; news that would
//!   make it live ([`shoal_swim::Membership::effect`] says so with the comparison SWIM itself
//!   applies) is kept, the newest per member, to be replayed once its proof is in hand;
//! - its proof is asked of the member that named it, in batches; a relayer that holds none, or
//!   requests that keep failing, fall back to dialing it so the gate checks it.
//!
//! Most news needs no request: news that a member is alive carries the member's proof when the
//! sender listed the member in the last half minute (the news of a join, as it spreads;
//! [`shoal_swim::Credential`], [`Core::attach_proofs`]), and a join's answer carries the proof
//! of every member it names, so a joiner lists everyone on the answer alone. A proof taken so is
//! a relayed one in every other way.
//!
//! A relayed proof costs one scrypt evaluation to check, and a node meeting a whole cluster at
//! once has one to run per member: waiting for all of them before listing anyone made a node
//! of 20 started together see the others only after seconds of both cores. So a relayed proof
//! that passes the cheap checks ([`Checks::precheck`]) lists its member in the membership at
//! once, and its evaluation is queued: run off the protocol loop ([`Action::Verify`]), one at a
//! time, the members with held requests first, then the ones nearest this node (whose records
//! it shares). A member that fails its check leaves the membership without a trace
//! ([`shoal_swim::Membership::forget`]), and the relayer that vouched for it is asked for no
//! more proofs (honest relayers pass on only proofs they checked): the members it names are
//! dialed so the gate checks them. While checks are queued the view is not settled, so
//! operations take the iterative path over the admitted members.
//!
//! A member SWIM declares failed or gone leaves the admitted set, but its proof is kept a while
//! ([`super::departed`]): a message from it, or news of its return, readmits it at once.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use serde_bytes::ByteBuf;
use shoal_pow::ProofError;
use shoal_swim::message::encoded_len;
use shoal_swim::{Address, Effect, Message, Payload, State, Update};

use super::departed::Departed;
use super::ops::{Op, Timer};
use super::{
    Action, Checks, Core, InboundId, MAX_HELD_PEERS, MAX_HELD_PER_PEER, MAX_REPORTED, MAX_WANTED,
    Misbehaviour, OpId, Peer, Verdict, peer_bytes, shrink_sparse,
};
use crate::wire::{MAX_PROOFS, Relayed, Request, Response};

/// How long a rate-limited check waits before the proof is asked for again.
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// Proof requests about one member that may fail (time out, lose their connection) before the
/// member is dialed instead. A relayer too busy to answer in time is asked again a little
/// later: dialing the members of a full batch is the dearest answer to a busy network.
const RELAY_ATTEMPTS: u8 = 3;

/// How long a member whose proof request failed waits before it is asked for again.
const RELAY_RETRY_AFTER: Duration = Duration::from_secs(2);

/// How long discovered members are batched before their proofs are asked for: a burst of gossip
/// (a push-pull naming hundreds of members) then costs a few requests, not one each.
const RELAY_BATCH_DELAY: Duration = Duration::from_millis(5);

/// How long after listing a member this node attaches its proof to news that it is alive: long
/// enough for the news of a join to reach everyone, even at heavy loss. News of an older member
/// goes without, as every member has listed it by then (at 30 % loss, refutations of members
/// long known are many, and their proofs grew every probe's gossip for nothing).
const FRESH_FOR: Duration = Duration::from_secs(30);

/// How long news cut about a member that is neither admitted nor awaited is remembered; later
/// news about it is reported again after that.
const REPORTED_TTL: Duration = Duration::from_secs(60);

/// Something a peer sent before it was admitted.
pub(super) enum Held<T> {
    /// A SWIM message.
    Swim(Message<T>),
    /// A request and the id to answer it with.
    Request(InboundId, Request),
}

/// A listed member whose proof waits for its evaluation.
struct Checking<T> {
    /// The proof's bytes.
    proof: Vec<u8>,
    /// The admitted member that relayed it after checking it; `None` when the member showed it
    /// on a connection, or a relayer passed it on unchecked.
    relayer: Option<T>,
    /// Whether the member showed it to this node on a connection.
    met: bool,
    /// Whether something waits on it: another member asked this node for its proof (this node
    /// named it to them). Its requests waiting make it needed too.
    needed: bool,
    /// When a rate-limited check may run again.
    not_before: Option<Instant>,
}

/// The two lanes checks run in: one for members something waits on (at the node's own
/// priority), one for the rest (at the lowest).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Lane {
    /// A member a request waits on, or that others asked this node about.
    Needed,
    /// A listed member nothing waits on yet.
    Background,
}

/// Members whose proof this node refused, remembered at most, and for how long: a relayer
/// answers [`Relayed::Refused`] for them, and news of them is cut without asking anyone.
const MAX_REFUSED: usize = 1024;
const REFUSED_TTL: Duration = Duration::from_secs(600);

/// How long a check handed to the runtime may run before the core stops waiting for it and
/// starts the next (its member is checked again later); a runtime that lost one must not stop
/// every check after it.
const CHECK_STALL: Duration = Duration::from_secs(30);

/// Relayers remembered as distrusted at most; beyond that their relays are taken again, as
/// before they failed (the next failure is caught by the check all the same).
const MAX_DISTRUSTED: usize = 1024;

/// What one peer sent while its check was under way, and when it is given up.
struct HeldQueue<T> {
    deadline: Instant,
    items: Vec<Held<T>>,
}

/// A member learned through gossip, waiting for its proof.
struct Wanted<T> {
    addrs: Vec<Address>,
    /// The admitted member whose message named it: asked for the proof.
    from: T,
    /// When to ask again (after a rate-limited check or a failed request); `None` while asked
    /// or queued.
    retry_at: Option<Instant>,
    /// Proof requests about it that failed so far.
    failed_requests: u8,
}

/// The admission state of one core.
pub(super) struct Admission<T, P> {
    verified: HashMap<T, P>,
    departed: Departed<T, P>,
    wanted: HashMap<T, Wanted<T>>,
    /// Members to ask each relayer about, sent when [`Timer::RelayFlush`] fires. Ordered, so
    /// the requests go out in relayer order (a run is a function of its inputs).
    batches: BTreeMap<T, Vec<T>>,
    /// The newest news cut about each member not admitted: who sent it, and when it was first cut.
    reported: HashMap<T, (T, Update<T>, Instant)>,
    held: HashMap<T, HeldQueue<T>>,
    checking: HashMap<T, Checking<T>>,
    /// When each member listed in the last [`FRESH_FOR`] was listed here: news that one of them
    /// is alive carries its proof ([`Core::attach_proofs`]).
    fresh: HashMap<T, Instant>,
    /// The member whose check the runtime is running in each lane, and since when.
    running: [Option<(T, Instant)>; 2],
    /// Relayers a relayed proof of which failed its check.
    distrusted: HashSet<T>,
    /// Members whose proof this node refused, and when.
    refused: HashMap<T, Instant>,
}

impl<T, P> Default for Admission<T, P> {
    fn default() -> Self {
        Self {
            verified: HashMap::new(),
            departed: Departed::default(),
            wanted: HashMap::new(),
            batches: BTreeMap::new(),
            reported: HashMap::new(),
            held: HashMap::new(),
            checking: HashMap::new(),
            fresh: HashMap::new(),
            running: [None, None],
            distrusted: HashSet::new(),
            refused: HashMap::new(),
        }
    }
}

impl<T: Peer, P: Clone> Admission<T, P> {
    pub(super) fn is_verified(&self, peer: &T) -> bool {
        self.verified.contains_key(peer)
    }

    /// Records `peer` as admitted; whether it is new.
    pub(super) fn insert_verified(&mut self, peer: T, proof: P) -> bool {
        self.departed.remove(&peer);
        self.verified.insert(peer, proof).is_none()
    }

    pub(super) fn verified_len(&self) -> usize {
        self.verified.len()
    }

    pub(super) fn departed_len(&self) -> usize {
        self.departed.len()
    }

    /// Whether `peer` is listed on a relayed proof whose check has not ended.
    pub(super) fn is_checking(&self, peer: &T) -> bool {
        self.checking.contains_key(peer)
    }

    /// Whether `peer`'s proof is in hand here: admitted, or listed while its check waits (SWIM
    /// listens to it either way).
    pub(super) fn is_listed(&self, peer: &T) -> bool {
        self.is_verified(peer) || self.is_checking(peer)
    }

    /// Whether this node refused `peer`'s proof lately.
    pub(super) fn is_refused(&self, peer: &T) -> bool {
        self.refused.contains_key(peer)
    }

    /// Listed members whose checks have not ended.
    pub(super) fn checking_len(&self) -> usize {
        self.checking.len()
    }

    pub(super) fn wanted_len(&self) -> usize {
        self.wanted.len()
    }

    pub(super) fn reported_len(&self) -> usize {
        self.reported.len()
    }

    /// Peers with held messages, and messages held in all.
    pub(super) fn held_len(&self) -> (usize, usize) {
        (
            self.held.len(),
            self.held.values().map(|q| q.items.len()).sum(),
        )
    }

    /// The addresses gossip gave a member whose proof is awaited.
    pub(super) fn wanted_addrs(&self, peer: &T) -> Option<std::sync::Arc<[Address]>> {
        self.wanted.get(peer).map(|w| w.addrs.clone().into())
    }

    /// Holds `item` from `peer` until `deadline` (if the peer has nothing held yet). Gives it
    /// back when the bounds are reached; a SWIM message then replaces the oldest one held.
    fn hold(&mut self, peer: T, item: Held<T>, deadline: Instant) -> Result<(), Held<T>> {
        if !self.held.contains_key(&peer) && self.held.len() >= MAX_HELD_PEERS {
            return Err(item);
        }
        let queue = self.held.entry(peer).or_insert_with(|| HeldQueue {
            deadline,
            items: Vec::new(),
        });
        if queue.items.len() >= MAX_HELD_PER_PEER {
            let oldest_swim = queue.items.iter().position(|h| matches!(h, Held::Swim(_)));
            match (&item, oldest_swim) {
                (Held::Swim(_), Some(i)) => {
                    queue.items.remove(i);
                }
                _ => return Err(item),
            }
        }
        queue.items.push(item);
        Ok(())
    }
}

impl<T: Peer, C: Checks<T>> Core<T, C> {
    /// The answer to a proof-relay request: for each peer asked about, the proof if this node
    /// admitted it (or admitted it until it departed lately), pending if its check is queued or
    /// running (which makes it needed: checked in the first lane), refused if its check failed.
    pub(super) fn answer_proofs(&mut self, now: Instant, peers: &[ByteBuf]) -> Response {
        let mut seen = HashSet::new();
        let mut answer = Vec::new();
        for peer in peers
            .iter()
            .take(MAX_PROOFS)
            .filter_map(|bytes| T::from_bytes(bytes))
        {
            if !seen.insert(peer) {
                continue;
            }
            let Some(said) = self.proof_to_pass_on(&peer) else {
                continue;
            };
            if let Relayed::Unchecked(_) = said
                && let Some(c) = self.admission.checking.get_mut(&peer)
            {
                // A peer this node met on a connection has nobody else to vouch for it, so its
                // check here becomes needed: a cheater is refused within a check, and answered
                // as such.
                c.needed |= c.met;
            }
            answer.push((ByteBuf::from(peer.to_bytes()), said));
        }
        self.next_check(now);
        Response::Proofs(answer)
    }

    /// What this node can pass on of `peer`'s proof: the proof if it admitted `peer` (or did
    /// until it departed lately); the proof as it holds it if `peer` is listed while its check
    /// is still to run (the receiver checks it itself, and a failure is then the peer's, not
    /// this node's); refused if its check failed; nothing if it does not know `peer`.
    fn proof_to_pass_on(&self, peer: &T) -> Option<Relayed> {
        let a = &self.admission;
        if let Some(proof) = a
            .verified
            .get(peer)
            .cloned()
            .or_else(|| a.departed.get(peer))
        {
            Some(Relayed::Proof(ByteBuf::from(
                self.checks.proof_bytes(peer, &proof),
            )))
        } else if let Some(c) = a.checking.get(peer) {
            Some(Relayed::Unchecked(ByteBuf::from(c.proof.clone())))
        } else if a.refused.contains_key(peer) {
            Some(Relayed::Refused)
        } else {
            None
        }
    }

    /// Attaches to the news in `msg`, bound for `to`, that a member is alive the member's proof
    /// ([`Relayed::to_credential`]), so that a receiver who does not know the member lists it
    /// at once instead of asking this node for the proof first: in gossip, for a member this
    /// node listed in the last [`FRESH_FOR`] (a joiner, as news of it spreads); in a push-pull
    /// that answers `to`'s join (`whole_table`), for every member, as a joiner knows nobody.
    /// The periodic push-pulls go without: their receivers know most members, and a table of
    /// proofs each time would cost more than the few requests it saves. Stops before the
    /// message would outgrow SWIM's message bound.
    pub(super) fn attach_proofs(
        &self,
        now: Instant,
        to: &T,
        msg: &mut Message<T>,
        whole_table: bool,
    ) {
        let fresh = |member: &T| {
            self.admission
                .fresh
                .get(member)
                .is_some_and(|at| now.saturating_duration_since(*at) < FRESH_FOR)
        };
        let wanted = |u: &Update<T>, in_table: bool| {
            u.state == State::Alive
                && u.member != *to
                && u.member != self.local
                && (in_table || fresh(&u.member))
        };
        let table: &[Update<T>] = match &msg.payload {
            Payload::PushPull { members, .. } if whole_table => members,
            _ => &[],
        };
        if !msg.gossip.iter().any(|u| wanted(u, false)) && !table.iter().any(|u| wanted(u, true)) {
            return;
        }
        // Room for the credentials, less a little for the envelope's length headers growing.
        let max = self.swim.config().max_message_bytes.get();
        let mut room = max.saturating_sub(encoded_len(msg) + 16);
        let Message { gossip, payload } = msg;
        let members: &mut [Update<T>] = match payload {
            Payload::PushPull { members, .. } if whole_table => members,
            _ => &mut [],
        };
        let news = gossip.iter_mut().map(|u| (u, false));
        for (u, in_table) in news.chain(members.iter_mut().map(|u| (u, true))) {
            if !wanted(u, in_table) {
                continue;
            }
            let Some(credential) = self
                .proof_to_pass_on(&u.member)
                .and_then(|said| said.to_credential())
            else {
                continue;
            };
            let cost = credential.encoded_len();
            if cost > room {
                break;
            }
            room -= cost;
            u.credential = credential;
        }
    }

    /// Takes the proofs that came attached to news in `msg` from `from` (see
    /// [`Core::attach_proofs`]) as if `from` had answered a request for them: a member this
    /// node does not know is listed at once while its check waits, or admitted if the proof is
    /// known valid, or refused. A checked proof that fails costs `from` this node's trust, as a
    /// relayed one does; a distrusted sender's proofs are ignored (its news takes the way of any
    /// other, and the members it names are dialed). The credentials are removed either way.
    fn take_proofs(&mut self, now: Instant, unix: u64, from: T, msg: &mut Message<T>) {
        let mut taken = Vec::new();
        let members: &mut [Update<T>] = match &mut msg.payload {
            Payload::PushPull { members, .. } => members,
            _ => &mut [],
        };
        for u in msg.gossip.iter_mut().chain(members.iter_mut()) {
            if !u.credential.is_empty() {
                let credential = std::mem::take(&mut u.credential);
                taken.push((u.member, u.addrs.clone(), credential));
            }
        }
        if taken.is_empty() || self.admission.distrusted.contains(&from) {
            return;
        }
        let mut listed = false;
        for (member, addrs, credential) in taken {
            let a = &self.admission;
            if member == self.local
                || a.is_listed(&member)
                || a.refused.contains_key(&member)
                || a.departed.contains(&member)
                || (!a.wanted.contains_key(&member)
                    && a.wanted.len() + a.checking.len() >= MAX_WANTED)
                || !self.permitted(&member)
                || !self.checks.reachable(&self.local_addrs, &addrs)
            {
                // Known already, or left to the way news without a proof takes (a departed
                // member is readmitted on the proof kept; bounds and the trust policy apply).
                continue;
            }
            let (relayer, proof) = match Relayed::from_credential(&credential) {
                Some(Relayed::Proof(proof)) => (Some(from), proof),
                Some(Relayed::Unchecked(proof)) => (None, proof),
                Some(Relayed::Refused) | None => continue,
            };
            self.stats.proofs_with_news += 1;
            // The member is awaited as if its news had come without the proof, and the proof
            // is taken as an answer about it.
            self.admission.wanted.entry(member).or_insert(Wanted {
                addrs,
                from,
                retry_at: None,
                failed_requests: 0,
            });
            self.check_relayed(now, unix, relayer, member, &proof);
            listed = true;
        }
        if listed {
            self.next_check(now);
        }
    }

    /// Whether `from` may be served now: it is admitted, or it departed lately and is readmitted
    /// on the proof kept (a message from it proves it is back).
    pub(super) fn admit_sender(&mut self, now: Instant, unix: u64, from: &T) -> bool {
        if self.admission.is_verified(from) {
            return true;
        }
        if let Some(proof) = self.admission.departed.remove(from) {
            self.stats.readmitted_departed += 1;
            self.unsettle(now, super::Unsettled::Returned);
            self.admit(now, unix, *from, proof);
            return true;
        }
        false
    }

    /// Holds a request from a peer not admitted yet; refuses it if the hold queue is full.
    pub(super) fn hold_request(&mut self, now: Instant, from: T, id: InboundId, request: Request) {
        if let Request::Proofs(_) = request {
            // Only admitted members are told proofs; the asker learns nothing.
            return self.respond(id, Response::Proofs(Vec::new()));
        }
        let deadline = now + self.config.gate_timeout;
        if let Err(Held::Request(id, request)) =
            self.admission
                .hold(from, Held::Request(id, request), deadline)
        {
            self.refuse_unadmitted(from, id, &request);
        }
    }

    /// Holds a SWIM message from a peer not admitted yet (dropped if the queue is full).
    pub(super) fn hold_swim(&mut self, now: Instant, from: T, msg: Message<T>) {
        tracing::debug!(peer = ?from, "SWIM message held until the sender's proof comes");
        self.stats.swim_unadmitted += 1;
        let deadline = now + self.config.gate_timeout;
        let _ = self.admission.hold(from, Held::Swim(msg), deadline);
    }

    fn refuse_unadmitted(&mut self, from: T, id: InboundId, request: &Request) {
        if request.is_put() {
            self.stats.count_refused_put(from);
        }
        self.respond(id, Response::refused("identity not verified"));
    }

    /// Drops what `peer` sent while unverified: it was refused, its connection closed, or its
    /// check did not end in time. Held requests are refused.
    pub(super) fn drop_held(&mut self, peer: &T) {
        let Some(queue) = self.admission.held.remove(peer) else {
            return;
        };
        for item in queue.items {
            if let Held::Request(id, request) = item {
                self.refuse_unadmitted(*peer, id, &request);
            }
        }
    }

    /// `peer` showed a valid proof (to the gate, or relayed): it is admitted, the newest news cut
    /// about it and what it sent meanwhile reach the membership, and it enters the routing table
    /// if SWIM holds it alive.
    pub(super) fn admit(&mut self, now: Instant, unix: u64, peer: T, proof: C::Proof) {
        if peer == self.local {
            return;
        }
        if !self.permitted(&peer) {
            return self.deny(now, peer);
        }
        if !self.admission.is_listed(&peer) {
            self.admission.fresh.insert(peer, now);
        }
        if self.admission.verified.insert(peer, proof).is_none() {
            self.stats.verified += 1;
        }
        self.admission.departed.remove(&peer);
        self.admission.wanted.remove(&peer);
        self.admission.checking.remove(&peer);
        self.replay_reported(now, unix, &peer);
        if let Some(queue) = self.admission.held.remove(&peer) {
            for item in queue.items {
                match item {
                    Held::Swim(msg) => self.pass_to_swim(now, unix, peer, msg),
                    Held::Request(id, request) => self.serve(now, unix, peer, id, request),
                }
            }
        }
        self.route(now, &peer);
    }

    /// The newest news cut about `peer` reaches the membership, if a member SWIM listens to
    /// sent it (the peer itself, an admitted member, or one listed while its own check waits,
    /// as a joiner's seed is): `peer`'s proof is now in hand.
    fn replay_reported(&mut self, now: Instant, unix: u64, peer: &T) {
        if let Some((from, update, _)) = self.admission.reported.remove(peer)
            && (from == *peer || self.admission.is_listed(&from))
        {
            let msg = Message {
                payload: Payload::Gossip,
                gossip: vec![update],
            };
            self.swim.handle_message(now, from, msg);
            self.drain_swim(now, unix);
        }
    }

    /// Forgets `peer` (refused by the gate, or its relayed proof failed its check): its proof is
    /// no longer kept or relayed, what it sent is dropped, and a membership that listed it
    /// before its check ended no longer does.
    pub(super) fn forget(&mut self, peer: &T) {
        let a = &mut self.admission;
        let verified = a.verified.remove(peer).is_some();
        a.departed.remove(peer);
        a.wanted.remove(peer);
        a.reported.remove(peer);
        a.fresh.remove(peer);
        if a.checking.remove(peer).is_some() && !verified {
            self.swim.forget(peer);
        }
        self.drop_held(peer);
    }

    /// Remembers that `peer`'s proof was refused (bounded; the oldest is forgotten first).
    fn remember_refused(&mut self, now: Instant, peer: T) {
        let refused = &mut self.admission.refused;
        if refused.len() >= MAX_REFUSED
            // Ties broken by peer, not by the hash map's order.
            && let Some(oldest) = refused.iter().min_by_key(|(p, at)| (**at, **p)).map(|(p, _)| *p)
        {
            refused.remove(&oldest);
        }
        refused.insert(peer, now);
    }

    /// A member SWIM declared failed or gone leaves the admitted set; its proof is kept a while.
    pub(super) fn on_departed(&mut self, now: Instant, peer: &T) {
        if self.churn.departed(now, *peer) {
            tracing::info!(?peer, "departed too often lately: held out for a while");
        }
        let a = &mut self.admission;
        if let Some(proof) = a.verified.remove(peer) {
            a.departed.insert(*peer, proof, now);
        }
    }

    /// Cuts from `msg` every piece of news about a member not admitted: the membership holds no
    /// record of a peer this node has not checked, not even a tombstone (gossip naming made-up
    /// peers could otherwise fill its table). News that would make such a member live is
    /// remembered, the newest per member, and the first time its proof is asked for. News about
    /// this node always passes (it must see suspicions of itself to refute them).
    pub(super) fn filter_updates(
        &mut self,
        now: Instant,
        unix: u64,
        from: T,
        msg: &mut Message<T>,
    ) {
        self.take_proofs(now, unix, from, msg);
        let mut reviving = Vec::new();
        let mut cut = 0u64;
        {
            let local = self.local;
            let admission = &self.admission;
            let swim = &self.swim;
            let mut keep = |u: &Update<T>, push_pull: bool| {
                if u.member == local
                    || admission.is_verified(&u.member)
                    || admission.is_checking(&u.member)
                {
                    return true;
                }
                cut += 1;
                if swim.effect(u, push_pull) == Effect::Revives {
                    reviving.push(u.clone());
                }
                false
            };
            msg.gossip.retain(|u| keep(u, false));
            if let Payload::PushPull { members, .. } = &mut msg.payload {
                members.retain(|u| keep(u, true));
            }
        }
        self.stats.updates_cut += cut;
        for update in reviving {
            self.note_discovered(now, unix, from, update);
        }
    }

    /// Remembers news cut about a member not admitted; the first time, asks for its proof.
    fn note_discovered(&mut self, now: Instant, unix: u64, from: T, update: Update<T>) {
        let member = update.member;
        if let Some((held_from, held, _)) = self.admission.reported.get_mut(&member) {
            // The newest news is the one to replay on admission.
            if (update.incarnation, update.state) >= (held.incarnation, held.state) {
                *held_from = from;
                *held = update;
            }
            return;
        }
        if self.admission.reported.len() >= MAX_REPORTED {
            return;
        }
        let addrs = update.addrs.clone();
        tracing::debug!(?member, ?from, "member named before its proof is in hand");
        self.admission.reported.insert(member, (from, update, now));
        self.on_discovered(now, unix, member, addrs, from);
    }

    /// Whether the trust policy lets `peer` be admitted: not denied, and allowed when there is
    /// an allow list. The one statement of the policy's lists.
    pub(super) fn permitted(&self, peer: &T) -> bool {
        !self.denied.contains(peer)
            && !self.standings.is_banned(peer)
            && !self.churn.is_held(peer)
            && self.allowed.as_ref().is_none_or(|a| a.contains(peer))
    }

    /// `peer` did something this node can prove wrong: its standing drops, and at zero it is
    /// banned (refused as a denied peer is) for the trust policy's ban period.
    pub(super) fn misbehaved(&mut self, now: Instant, peer: T, what: Misbehaviour) {
        tracing::info!(?peer, misbehaviour = what.as_str(), "peer misbehaved");
        if self.standings.penalize(now, peer, what) {
            tracing::warn!(?peer, period = ?self.config.trust.ban_period, "peer banned");
            self.deny(now, peer);
        }
    }

    /// `peer`'s standing at `now`, 0 to [`super::FULL_STANDING`].
    pub fn standing(&self, now: Instant, peer: &T) -> u32 {
        self.standings.of(now, peer)
    }

    /// Every peer below full standing or banned at `now`: its standing and whether it is
    /// banned (at most [`super::MAX_STANDINGS`] + [`super::MAX_BANS`]).
    pub fn standings(&self, now: Instant) -> Vec<(T, u32, bool)> {
        self.standings.list(now)
    }

    /// Whether `peer` is banned for misbehaviour.
    pub fn is_banned(&self, peer: &T) -> bool {
        self.standings.is_banned(peer)
    }

    /// Peers held out by the churn filter since start.
    pub fn churn_holds(&self) -> u64 {
        self.churn.holds
    }

    /// Misbehaviour seen since start, by kind, and bans imposed.
    pub fn misbehaviour(&self) -> (Vec<(Misbehaviour, u64)>, u64) {
        let seen = Misbehaviour::ALL
            .iter()
            .copied()
            .zip(self.standings.seen)
            .collect();
        (seen, self.standings.banned)
    }

    /// `peer` sent `bytes` more (a request or a told message, on any protocol): whether the
    /// trust policy's bandwidth lets it through. Over the limit, the runtime refuses or drops
    /// the message (counted); a peer that stays over it is banned.
    pub fn admit_bytes(&mut self, now: Instant, peer: T, bytes: usize) -> bool {
        match self.bytes.take(now, peer, bytes as u64) {
            Verdict::Pass => true,
            Verdict::Throttle => {
                self.stats.bandwidth_limited += 1;
                false
            }
            Verdict::Ban => {
                self.stats.bandwidth_limited += 1;
                self.misbehaved(now, peer, Misbehaviour::OverLimit);
                false
            }
        }
    }

    /// `peer` is refused by the trust policy: whatever is known of it is forgotten, and its
    /// connections closed.
    fn deny(&mut self, now: Instant, peer: T) {
        tracing::debug!(?peer, "peer denied by the trust policy");
        self.stats.denied_peers += 1;
        self.admission.reported.remove(&peer);
        self.forget(&peer);
        // A member banned while listed leaves the view at once: news naming it later is cut,
        // as news of any peer this node has not admitted.
        self.swim.forget(&peer);
        self.unroute(now, &peer);
        self.push(Action::Disconnect { peer });
    }

    /// SWIM named `member`, not admitted, as live in a message from `from`.
    fn on_discovered(&mut self, now: Instant, unix: u64, member: T, addrs: Vec<Address>, from: T) {
        if !self.permitted(&member) {
            self.stats.denied_peers += 1;
            self.admission.reported.remove(&member);
            return;
        }
        if !self.checks.reachable(&self.local_addrs, &addrs) {
            // A member this node cannot dial (an onion address seen from a TCP-only node, an IP
            // address from a Tor-only one) would only ever be suspected here: it stays out, as
            // it would if the gate had to meet it on a connection. A "both" node bridges them.
            self.admission.reported.remove(&member);
            return;
        }
        if let Some(proof) = self.admission.departed.remove(&member) {
            self.stats.readmitted_departed += 1;
            self.unsettle(now, super::Unsettled::Returned);
            return self.admit(now, unix, member, proof);
        }
        let a = &mut self.admission;
        if a.wanted.contains_key(&member) || a.refused.contains_key(&member) {
            return;
        }
        if a.wanted.len() + a.checking.len() >= MAX_WANTED {
            a.reported.remove(&member);
            return;
        }
        a.wanted.insert(
            member,
            Wanted {
                addrs,
                from,
                retry_at: None,
                failed_requests: 0,
            },
        );
        if a.distrusted.contains(&from) {
            return self.fall_back_to_dialing(vec![member]);
        }
        self.queue_proof_request(now, from, member);
    }

    /// Queues a proof request about `member` to `relayer`; a full batch goes out at once.
    fn queue_proof_request(&mut self, now: Instant, relayer: T, member: T) {
        let batch = self.admission.batches.entry(relayer).or_default();
        batch.push(member);
        if batch.len() >= MAX_PROOFS {
            let members = std::mem::take(batch);
            self.admission.batches.remove(&relayer);
            self.send_proof_request(now, relayer, members);
        } else {
            self.timers
                .set_by(Timer::RelayFlush, now + RELAY_BATCH_DELAY);
        }
    }

    fn send_proof_request(&mut self, now: Instant, relayer: T, members: Vec<T>) {
        self.stats.relay_requests += 1;
        tracing::debug!(
            ?relayer,
            members = members.len(),
            "proofs asked of a relayer"
        );
        let op = self.ops.next_op();
        let request = Request::Proofs(peer_bytes(&members));
        self.ops.insert(op, Op::Proofs(members));
        let timeout = self.config.gate_timeout;
        self.send_within(now, op, relayer, request, timeout);
    }

    /// Sends the queued proof requests, [`MAX_PROOFS`] members per request, with the members
    /// due to be asked about again.
    pub(super) fn flush_relay_requests(&mut self, now: Instant) {
        self.ask_again(now);
        for (relayer, members) in std::mem::take(&mut self.admission.batches) {
            for chunk in members.chunks(MAX_PROOFS) {
                self.send_proof_request(now, relayer, chunk.to_vec());
            }
        }
    }

    /// The answer to a proof-relay request of `op`, sent to `relayer`.
    pub(super) fn on_proofs_answer(
        &mut self,
        now: Instant,
        unix: u64,
        op: OpId,
        relayer: T,
        result: Result<Response, super::RequestFailure>,
    ) {
        let Some(Op::Proofs(asked)) = self.ops.remove(op) else {
            return;
        };
        let Ok(Response::Proofs(pairs)) = result else {
            tracing::debug!(
                ?relayer,
                asked = asked.len(),
                ?result,
                "proof request failed"
            );
            return self.relay_request_failed(now, asked);
        };
        tracing::debug!(?relayer, asked = asked.len(), "proofs answered");
        let mut answered = HashSet::new();
        for (peer, said) in pairs.iter().take(MAX_PROOFS) {
            let Some(member) = T::from_bytes(peer) else {
                continue;
            };
            if !asked.contains(&member) || !answered.insert(member) {
                continue;
            }
            match said {
                Relayed::Proof(proof) => {
                    self.check_relayed(now, unix, Some(relayer), member, proof);
                }
                Relayed::Unchecked(proof) => self.check_relayed(now, unix, None, member, proof),
                Relayed::Refused => {
                    // Not listed and not dialed: the relayer's word costs it nothing to give and
                    // a peer it refused costs everyone else a check. Later news asks again.
                    self.admission.wanted.remove(&member);
                }
            }
        }
        // Once the whole answer is in, so the most needed of its members is checked first.
        self.next_check(now);
        let missing: Vec<T> = asked
            .into_iter()
            .filter(|p| !answered.contains(p))
            .collect();
        self.fall_back_to_dialing(missing);
    }

    /// Takes the proof `relayer` sent for `member`: admitted at once if known valid, refused on
    /// sight if malformed or refused before, otherwise listed and queued for its check (the
    /// caller starts the next check with [`Core::next_check`]).
    /// `relayer` is `None` when the relayer passed the proof on unchecked
    /// ([`Relayed::Unchecked`]): a failure then costs it no trust.
    fn check_relayed(
        &mut self,
        now: Instant,
        unix: u64,
        relayer: Option<T>,
        member: T,
        bytes: &[u8],
    ) {
        if self.admission.is_listed(&member) {
            return;
        }
        match self.checks.precheck(&member, bytes) {
            Ok(Some(proof)) => {
                self.stats.verified_by_relay += 1;
                self.admit(now, unix, member, proof);
            }
            Ok(None) => {
                if self.admission.wanted.remove(&member).is_none() {
                    // No longer awaited (forgotten meanwhile): not listed on this answer.
                    return;
                }
                self.list_unchecked(now, unix, member, bytes, relayer, false);
            }
            Err(error) => self.refuse_checked(now, member, relayer, &error),
        }
    }

    /// Lists `member` on a proof in hand whose check is still to run: the membership sees it
    /// (its news and its own SWIM messages), the DHT does not use it yet.
    fn list_unchecked(
        &mut self,
        now: Instant,
        unix: u64,
        member: T,
        bytes: &[u8],
        relayer: Option<T>,
        met: bool,
    ) {
        if !self.permitted(&member) {
            return self.deny(now, member);
        }
        self.stats.listed_unchecked += 1;
        self.admission.fresh.insert(member, now);
        // Its held requests wait for the check; its held SWIM messages only for the listing,
        // which releases them below (a joiner's push-pull that came before its proof).
        let needed = self
            .admission
            .held
            .get(&member)
            .is_some_and(|q| q.items.iter().any(|item| matches!(item, Held::Request(..))));
        self.admission.checking.insert(
            member,
            Checking {
                proof: bytes.to_vec(),
                relayer,
                met,
                needed,
                not_before: None,
            },
        );
        self.replay_reported(now, unix, &member);
        self.release_held_swim(now, unix, &member);
    }

    /// `member`'s proof is invalid: it is forgotten and remembered as refused. A relayed one
    /// also costs the relayer this node's trust (a relayer passes on only proofs it checked
    /// itself); one shown on a connection gets the peer disconnected by the runtime.
    pub(super) fn refuse_checked(
        &mut self,
        now: Instant,
        member: T,
        relayer: Option<T>,
        error: &ProofError,
    ) {
        self.forget(&member);
        self.unroute(now, &member);
        self.remember_refused(now, member);
        let Some(relayer) = relayer else {
            tracing::info!(peer = ?member, %error, "identity proof refused");
            self.stats.refused_peers += 1;
            return;
        };
        tracing::info!(?relayer, ?member, %error, "relayed identity proof refused");
        self.stats.refused_relayed += 1;
        let distrusted = &mut self.admission.distrusted;
        if distrusted.len() < MAX_DISTRUSTED && distrusted.insert(relayer) {
            self.stats.relayers_distrusted += 1;
        }
    }

    /// `peer` showed a proof on a connection that the cheap checks could not decide: it is
    /// listed as a relayed one would be, and checked in its turn.
    pub(super) fn on_presented(&mut self, now: Instant, unix: u64, peer: T, bytes: &[u8]) {
        if peer == self.local
            || self.admission.is_verified(&peer)
            || self.admission.is_checking(&peer)
        {
            return;
        }
        match self.checks.precheck(&peer, bytes) {
            Ok(Some(proof)) => self.admit(now, unix, peer, proof),
            Ok(None) => {
                self.admission.wanted.remove(&peer);
                self.list_unchecked(now, unix, peer, bytes, None, true);
                self.next_check(now);
            }
            Err(error) => self.refuse_checked(now, peer, None, &error),
        }
    }

    /// The SWIM messages `peer` sent before its proof was in hand reach the membership; its held
    /// requests keep waiting for its check.
    fn release_held_swim(&mut self, now: Instant, unix: u64, peer: &T) {
        let Some(queue) = self.admission.held.get_mut(peer) else {
            return;
        };
        let mut swim = Vec::new();
        for item in std::mem::take(&mut queue.items) {
            match item {
                Held::Swim(msg) => swim.push(msg),
                request => queue.items.push(request),
            }
        }
        if queue.items.is_empty() {
            self.admission.held.remove(peer);
        }
        for msg in swim {
            self.pass_to_swim(now, unix, *peer, msg);
        }
    }

    /// Hands the runtime the next check of each lane that has none running: in the first, the
    /// needed members (requests of theirs wait, or others asked for their proof); in the
    /// second, the member nearest this node (whose records it shares) of the rest, or a needed
    /// one when no other is left.
    pub(super) fn next_check(&mut self, now: Instant) {
        for lane in [Lane::Needed, Lane::Background] {
            let slot = lane as usize;
            if let Some((peer, since)) = self.admission.running[slot] {
                if now.saturating_duration_since(since) < CHECK_STALL {
                    continue;
                }
                tracing::warn!(
                    ?peer,
                    "an identity check did not end; checking the next member"
                );
                self.admission.running[slot] = None;
                if let Some(c) = self.admission.checking.get_mut(&peer) {
                    c.not_before = Some(now + RETRY_AFTER);
                }
            }
            let own = self.local.point();
            let a = &self.admission;
            let running: Vec<T> = a.running.iter().flatten().map(|(p, _)| *p).collect();
            let Some(peer) = a
                .checking
                .iter()
                .filter(|(p, c)| {
                    !running.contains(p)
                        && c.not_before.is_none_or(|at| at <= now)
                        && (lane == Lane::Background || c.needed || a.held.contains_key(*p))
                })
                .min_by_key(|(p, c)| {
                    let needed = c.needed || a.held.contains_key(*p);
                    (!needed, own.distance(&p.point()))
                })
                .map(|(p, _)| *p)
            else {
                continue;
            };
            let proof = self.admission.checking[&peer].proof.clone();
            self.admission.running[slot] = Some((peer, now));
            self.stats.checks_run += 1;
            if lane == Lane::Needed {
                self.stats.checks_needed += 1;
            }
            self.push(Action::Verify {
                peer,
                proof,
                needed: lane == Lane::Needed,
            });
        }
    }

    /// The check of `peer`'s relayed proof ended.
    pub(super) fn on_checked(
        &mut self,
        now: Instant,
        unix: u64,
        peer: T,
        result: Result<C::Proof, ProofError>,
    ) {
        for running in &mut self.admission.running {
            if running.is_some_and(|(p, _)| p == peer) {
                *running = None;
            }
        }
        let Some(checking) = self.admission.checking.get_mut(&peer) else {
            // Admitted meanwhile (its proof was in the verifier's cache), or forgotten.
            return self.next_check(now);
        };
        match result {
            Ok(proof) => {
                if checking.relayer.is_some() {
                    self.stats.verified_by_relay += 1;
                }
                self.admit(now, unix, peer, proof);
                self.on_seed_settled(now, unix, &peer);
            }
            Err(ProofError::RateLimited) => checking.not_before = Some(now + RETRY_AFTER),
            Err(error) => {
                let relayer = checking.relayer;
                self.refuse_checked(now, peer, relayer, &error);
                self.on_seed_settled(now, unix, &peer);
            }
        }
        self.next_check(now);
    }

    /// A proof request about `asked` failed: each is asked again later, or dialed once
    /// [`RELAY_ATTEMPTS`] requests about it failed.
    fn relay_request_failed(&mut self, now: Instant, asked: Vec<T>) {
        self.stats.relay_request_failures += 1;
        let mut give_up = Vec::new();
        for member in asked {
            let Some(w) = self.admission.wanted.get_mut(&member) else {
                continue;
            };
            w.failed_requests = w.failed_requests.saturating_add(1);
            if w.failed_requests >= RELAY_ATTEMPTS {
                give_up.push(member);
            } else {
                w.retry_at = Some(now + RELAY_RETRY_AFTER);
            }
        }
        self.fall_back_to_dialing(give_up);
    }

    /// No relayer held a proof for these members (or could be asked): dial them, so the gate
    /// checks them on a connection of their own.
    fn fall_back_to_dialing(&mut self, members: Vec<T>) {
        for member in members {
            if let Some(w) = self.admission.wanted.remove(&member) {
                self.stats.relay_fallback_dials += 1;
                self.push(Action::Dial {
                    peer: member,
                    addrs: w.addrs,
                });
            }
        }
    }

    /// A dial to `peer` failed: news cut about it may report it again later.
    pub(super) fn on_dial_failed(&mut self, peer: &T) {
        if !self.admission.wanted.contains_key(peer) {
            self.admission.reported.remove(peer);
        }
    }

    /// Housekeeping: retries of proofs asked for, expiry of departed proofs, held messages and
    /// stale reports; memory of drained bursts given back.
    pub(super) fn admission_tick(&mut self, now: Instant) {
        self.admission.departed.expire(now);
        let mut late: Vec<T> = self
            .admission
            .held
            .iter()
            .filter(|(_, q)| q.deadline <= now)
            .map(|(p, _)| *p)
            .collect();
        // In peer order, not the hash map's: the refusals go out in this order.
        late.sort_unstable();
        for peer in late {
            self.drop_held(&peer);
        }
        self.flush_relay_requests(now);
        self.next_check(now);
        let a = &mut self.admission;
        let wanted = &a.wanted;
        a.reported.retain(|member, (_, _, at)| {
            wanted.contains_key(member) || now.saturating_duration_since(*at) < REPORTED_TTL
        });
        shrink_sparse(&mut a.wanted);
        shrink_sparse(&mut a.reported);
        shrink_sparse(&mut a.held);
        shrink_sparse(&mut a.checking);
        a.fresh
            .retain(|_, at| now.saturating_duration_since(*at) < FRESH_FOR);
        shrink_sparse(&mut a.fresh);
        a.refused
            .retain(|_, at| now.saturating_duration_since(*at) < REFUSED_TTL);
        shrink_sparse(&mut a.refused);
    }

    /// Queues the proof requests due again (after a rate-limited check, a failed request, or a
    /// relayer still checking).
    fn ask_again(&mut self, now: Instant) {
        let mut retry = Vec::new();
        for (member, w) in &mut self.admission.wanted {
            if w.retry_at.is_some_and(|at| at <= now) {
                w.retry_at = None;
                retry.push((w.from, *member));
            }
        }
        // In member order, not the hash map's: it is the order of each request's list.
        retry.sort_unstable_by_key(|&(_, member)| member);
        for (relayer, member) in retry {
            self.admission
                .batches
                .entry(relayer)
                .or_default()
                .push(member);
        }
    }

    /// Sends `request` to `peer` for `op` with its own `timeout`.
    pub(super) fn send_within(
        &mut self,
        now: Instant,
        op: OpId,
        peer: T,
        request: Request,
        timeout: Duration,
    ) {
        let id = self.ops.add_request(op, peer, now + timeout);
        let addrs = self.addrs_of(&peer);
        self.push(Action::Send {
            to: peer,
            addrs,
            id,
            request,
        });
    }

    /// Sends `request` to `peer` expecting no answer ([`Action::Tell`]).
    pub(super) fn tell(&mut self, peer: T, request: Request) {
        let addrs = self.addrs_of(&peer);
        self.push(Action::Tell {
            to: peer,
            addrs,
            request,
        });
    }
}
