//! Puts, gets, lookups and lockstep: starting kad queries and lockstep requests, and folding
//! their answers into the replies.

use std::collections::HashMap;
use std::time::Instant;

use libp2p::PeerId;
use libp2p::kad::{self, QueryId, QueryResult};
use libp2p::request_response::{self as rr, OutboundRequestId};
use serde_bytes::ByteBuf;
use shoal_pow::unix_now;
use tokio::sync::oneshot;

use super::admission::Held;
use super::event_loop::EventLoop;
use super::replicate::PutJob;
use super::{
    AnnounceError, AnnounceOk, AnnounceResult, FindNodeError, GetError, GetOk, GetResult, LookupOk,
    LookupResult, LookupStats, NoticesResult, PutError, PutRequest, PutResult,
};
use crate::behaviour::Exchange;
use crate::lockstep::protocol::{self as lockstep, Request, Response};
use crate::lockstep::{Announced, SignedNotice, value_hash};
use crate::record::{NewRecord, Record, SignedRecord};

/// Gets answered early whose search for a higher sequence goes on in the background, at most.
const MAX_BACKGROUND_GETS: usize = 16;

/// A get under way: copies are validated as they come, then holders are asked whether the
/// winner was announced.
pub(super) struct Get {
    key: Vec<u8>,
    /// `None` once the caller was answered early; the query then only repairs our copy.
    reply: Option<oneshot::Sender<GetResult>>,
    best: Option<SignedRecord>,
    holders: Vec<PeerId>,
    valid: usize,
    invalid: usize,
    asking: usize,
    announced: Announced,
}

/// What a closest-peers query is for.
pub(super) enum Closest {
    FindNode(oneshot::Sender<LookupResult>),
    Announce(Box<SignedNotice>, oneshot::Sender<AnnounceResult>),
    Notices(Box<NoticesQuery>),
    Put(Box<PutJob>),
}

/// An announcement waiting for its peers' answers.
pub(super) struct Announcing {
    seq: u64,
    reply: oneshot::Sender<AnnounceResult>,
    outstanding: usize,
    accepted: usize,
    refused: usize,
}

/// A [`Client::notices`](super::Client::notices) call: the notices found so far, and the peers
/// still to answer.
pub(super) struct NoticesQuery {
    key: Vec<u8>,
    reply: oneshot::Sender<NoticesResult>,
    found: Vec<SignedNotice>,
    outstanding: usize,
}

/// What an outbound lockstep request is for.
pub(super) enum Pending {
    Announce(usize),
    Check(usize),
    Notices(usize),
    Raw(oneshot::Sender<Option<Response>>),
}

impl EventLoop {
    pub(super) fn start_get(&mut self, key: Vec<u8>, reply: oneshot::Sender<GetResult>) {
        let reply = match self.answer_from_copy(&key, reply) {
            Ok(()) => return,
            Err(reply) => reply,
        };
        let id = self.kad_mut().get_record(kad::RecordKey::new(&key));
        self.stats.kad_queries += 1;
        self.gets.insert(
            id,
            Get {
                key,
                reply: Some(reply),
                best: None,
                holders: Vec::new(),
                valid: 0,
                invalid: 0,
                asking: 0,
                announced: Announced::No,
            },
        );
    }

    pub(super) fn start_find_node(&mut self, peer: PeerId, reply: oneshot::Sender<LookupResult>) {
        self.start_lookup(&peer.to_bytes(), Closest::FindNode(reply));
    }

    pub(super) fn start_announce(
        &mut self,
        key: Vec<u8>,
        value: Vec<u8>,
        seq: Option<u64>,
        reply: oneshot::Sender<AnnounceResult>,
    ) {
        let seq = self.next_seq(&key, seq);
        match SignedNotice::create(
            &self.key,
            &key,
            &value,
            seq,
            unix_now(),
            &self.config.stamps,
        ) {
            Ok(notice) => {
                // Keep our own notice, so our later puts are checked against it and a put
                // without a sequence number takes the announced one.
                if let Err(e) = self.book.insert(notice.clone()) {
                    let _ = reply.send(Err(e.into()));
                    return;
                }
                self.start_lookup(&key, Closest::Announce(Box::new(notice), reply));
            }
            Err(e) => {
                let _ = reply.send(Err(e.into()));
            }
        }
    }

    /// Collects the notices for `key`: ours now, then those of the closest peers a lookup finds.
    pub(super) fn start_notices(&mut self, key: Vec<u8>, reply: oneshot::Sender<NoticesResult>) {
        let found = self.book.for_key(&key).into_iter().cloned().collect();
        let target = key.clone();
        let query = NoticesQuery {
            key,
            reply,
            found,
            outstanding: 0,
        };
        self.start_lookup(&target, Closest::Notices(Box::new(query)));
    }

    fn ask_notices(&mut self, mut query: NoticesQuery, peers: Vec<PeerId>) {
        let id = self.next_id;
        self.next_id += 1;
        let local = *self.swarm.local_peer_id();
        for peer in peers
            .into_iter()
            .filter(|p| *p != local)
            .take(self.config.replication_factor.get())
        {
            let req = Request::Notices(ByteBuf::from(query.key.clone()));
            let rid = self.swarm.behaviour_mut().lockstep.send_request(&peer, req);
            self.requests.insert(rid, Pending::Notices(id));
            query.outstanding += 1;
        }
        if query.outstanding == 0 {
            self.finish_notices(query);
        } else {
            self.notice_queries.insert(id, query);
        }
    }

    /// Keeps the valid notices of a peer's answer for the query.
    fn on_notices_answer(&mut self, id: usize, response: Option<Response>) {
        let Some(query) = self.notice_queries.get_mut(&id) else {
            return;
        };
        if let Some(response) = response
            && let Ok(notices) = lockstep::notices_from(&query.key, response)
        {
            let now = unix_now();
            query.found.extend(
                notices
                    .into_iter()
                    .filter(|n| n.check_kept(now, &self.stamps).is_ok()),
            );
        }
        query.outstanding -= 1;
        if query.outstanding == 0
            && let Some(query) = self.notice_queries.remove(&id)
        {
            self.finish_notices(query);
        }
    }

    /// Replies with the latest notice per publisher, newest first.
    fn finish_notices(&mut self, query: NoticesQuery) {
        let mut latest: HashMap<[u8; 32], SignedNotice> = HashMap::new();
        for n in query.found {
            let publisher = n.notice().publisher.to_bytes();
            match latest.get(&publisher) {
                Some(kept) if notice_order(kept) >= notice_order(&n) => {}
                _ => {
                    latest.insert(publisher, n);
                }
            }
        }
        let mut list: Vec<SignedNotice> = latest.into_values().collect();
        list.sort_by_key(|n| std::cmp::Reverse((n.notice().created_at, n.notice().seq)));
        let _ = query.reply.send(Ok(list));
    }

    /// The sequence number of our own latest notice for `key` if we have not put it yet.
    fn announced_unput_seq(&mut self, key: &[u8]) -> Option<u64> {
        let us = self.key.public();
        let announced = self.book.get(key, &us)?.notice().seq;
        let held = self
            .swarm
            .behaviour_mut()
            .kad
            .store_mut()
            .signed(key)
            .filter(|s| s.record().publisher == us)
            .map(|s| s.record().seq);
        let put = self.last_seq.get(key).copied().max(held);
        put.is_none_or(|p| announced > p).then_some(announced)
    }

    pub(super) fn start_put(&mut self, request: PutRequest, reply: oneshot::Sender<PutResult>) {
        let seq = match request.seq {
            Some(seq) => seq,
            None => self
                .announced_unput_seq(&request.key)
                .unwrap_or_else(|| self.next_seq(&request.key, None)),
        };
        let now_unix = unix_now();
        let quorum = request.quorum.unwrap_or(self.config.put_quorum);
        let signed = match SignedRecord::create(
            &self.key,
            NewRecord {
                key: request.key.clone(),
                value: request.value,
                seq,
                ttl: request.ttl.as_secs().max(1),
            },
            now_unix,
            &self.config.stamps,
        ) {
            Ok(s) => s,
            Err(e) => {
                let _ = reply.send(Err(e.into()));
                return;
            }
        };
        if let Err(e) = self.book.check_put(signed.record()) {
            let _ = reply.send(Err(PutError::Lockstep(e)));
            return;
        }
        let envelope = signed.as_bytes().to_vec();
        let store = self.swarm.behaviour_mut().kad.store_mut();
        if let Err(e) = store.insert(signed, Instant::now(), now_unix) {
            let _ = reply.send(Err(e.into()));
            return;
        }
        self.last_seq.insert(request.key.clone(), seq);
        self.start_replication(PutJob {
            key: request.key,
            seq,
            quorum: quorum.get(),
            envelope,
            reply,
        });
    }

    pub(super) fn on_kad(&mut self, event: kad::Event) {
        if let kad::Event::InboundRequest { .. } = &event {
            self.stats.kad_served += 1;
        }
        if let kad::Event::OutboundQueryProgressed {
            result,
            stats,
            step,
            ..
        } = &event
        {
            // A bootstrap's steps are queries of their own, each with its own counts; the other
            // kinds report their whole count with the last step.
            let rpcs = &mut self.stats.kad_rpcs;
            let sent = u64::from(stats.num_requests());
            match result {
                QueryResult::Bootstrap(_) => {
                    rpcs.bootstrap += sent;
                    rpcs.bootstraps += u64::from(step.last);
                }
                _ if !step.last => {}
                QueryResult::GetRecord(_) => rpcs.gets += sent,
                _ => rpcs.other += sent,
            }
        }
        match event {
            kad::Event::RoutablePeer { peer, address }
            | kad::Event::PendingRoutablePeer { peer, address } => {
                if self.verified.contains_key(&peer) {
                    self.route(peer, &[address]);
                } else {
                    self.dial(peer, vec![address]);
                }
            }
            kad::Event::UnroutablePeer { peer } => {
                // Connected without a known address: the gate checks it on this connection, and
                // SWIM supplies its addresses once it is admitted.
                tracing::trace!(%peer, "unroutable peer");
            }
            kad::Event::InboundRequest {
                request:
                    kad::InboundRequest::PutRecord {
                        source,
                        record: Some(record),
                        ..
                    },
            } => self.on_inbound_put(source, record),
            kad::Event::OutboundQueryProgressed {
                id,
                result: QueryResult::Bootstrap(_),
                step,
                ..
            } => {
                // The next step of a bootstrap (see `EventLoop::suppress_kad_bootstrap`) ends
                // before it sends anything.
                if !step.last
                    && let Some(mut query) = self.kad_mut().query_mut(&id)
                {
                    query.finish();
                }
            }
            kad::Event::OutboundQueryProgressed {
                id, result, step, ..
            } => self.on_query(id, result, step.last),
            _ => {}
        }
    }

    /// Validates and keeps a record a peer put through kad (its replication, or a peer that
    /// does not use [`crate::replica`]). A put from a connected peer whose identity check
    /// is under way waits for it; anyone else not verified is refused.
    pub(super) fn on_inbound_put(&mut self, source: PeerId, record: kad::Record) {
        if !self.verified.contains_key(&source) {
            if self.hold(source, Held::Put(Box::new(record))).is_err() {
                tracing::debug!(peer = %source, "inbound put refused: identity not verified");
                self.stats.count_refused_put(source);
            }
            return;
        }
        // kad has already acknowledged it; a refusal is counted and logged.
        let _ = self.keep_record(source, &record.value, Some(record.key.as_ref()));
    }

    /// A kad get's progress: each copy found is validated as it comes; the last step ends it.
    fn on_query(&mut self, id: QueryId, result: QueryResult, last: bool) {
        let QueryResult::GetRecord(r) = result else {
            return;
        };
        if !self.gets.contains_key(&id) {
            return;
        }
        if let Ok(kad::GetRecordOk::FoundRecord(found)) = r {
            let copy = self.accept_copy(id, &found.record.value);
            let Some(get) = self.gets.get_mut(&id) else {
                return;
            };
            match copy {
                Ok(signed) => {
                    get.valid += 1;
                    if let Some(peer) = found.peer {
                        get.holders.push(peer);
                    }
                    if get.best.as_ref().is_none_or(|b| signed.supersedes(b)) {
                        get.best = Some(signed);
                    }
                    if get.reply.is_some() {
                        self.answer_early(id);
                    }
                }
                Err(error) => {
                    tracing::debug!(peer = ?found.peer, %error, "invalid record copy");
                    get.invalid += 1;
                }
            }
            if !last {
                return;
            }
        }
        if let Some(get) = self.gets.remove(&id) {
            self.finish_get(get);
        }
    }

    /// Hands the peers a lookup found (closest first) to what it was for.
    pub(super) fn on_closest(
        &mut self,
        what: Closest,
        peers: Vec<PeerId>,
        timed_out: bool,
        stats: LookupStats,
    ) {
        match what {
            Closest::FindNode(reply) => {
                let _ = reply.send(if timed_out {
                    Err(FindNodeError::Timeout { found: peers })
                } else {
                    Ok(LookupOk { peers, stats })
                });
            }
            Closest::Announce(notice, reply) => self.send_notice(*notice, peers, reply),
            Closest::Notices(query) => self.ask_notices(*query, peers),
            Closest::Put(job) => self.replicate(*job, peers),
        }
    }

    /// Validates a copy of a record found by get query `id`. A copy byte for byte equal to one
    /// already validated (the node's own, or the query's best so far) is not verified again: only
    /// its expiry is checked. A copy contradicting a notice we hold is refused like a bad one.
    fn accept_copy(&mut self, id: QueryId, bytes: &[u8]) -> Result<SignedRecord, String> {
        let now = unix_now();
        let Some(get) = self.gets.get(&id) else {
            return Err("query gone".to_owned());
        };
        let key = get.key.clone();
        let known = match get.best.as_ref().filter(|b| b.as_bytes() == bytes) {
            Some(best) => Some(best.clone()),
            None => {
                let store = self.swarm.behaviour_mut().kad.store_mut();
                store
                    .signed(&key)
                    .filter(|s| s.as_bytes() == bytes)
                    .cloned()
            }
        };
        let signed = match known {
            Some(s) if s.is_expired(now) => return Err("record expired".to_owned()),
            Some(s) => s,
            None => {
                SignedRecord::validate(bytes, Some(&key), now, &self.config.records, &self.stamps)
                    .map_err(|e| e.to_string())?
            }
        };
        self.book
            .check_put(signed.record())
            .map_err(|e| e.to_string())?;
        Ok(signed)
    }

    /// Whether this node is one of the `k` closest to `key` in its own routing table, and so
    /// should hold every lockstep notice for it.
    fn among_closest(&mut self, key: &[u8]) -> bool {
        let target = kad::KBucketKey::new(kad::RecordKey::new(&key));
        let ours = kad::KBucketKey::from(*self.swarm.local_peer_id()).distance(&target);
        let k = self.config.replication_factor.get();
        let closer = self
            .kad_mut()
            .get_closest_local_peers(&target)
            .take(k)
            .filter(|p| p.distance(&target) < ours)
            .count();
        closer < k
    }

    /// Answers a get with its first valid record when this node can say on its own whether the
    /// value was announced (its book holds a matching notice, or it is one of the `k` closest to
    /// the key and so holds every notice). The query goes on: a higher sequence found later
    /// replaces our copy, so the next get sees it.
    fn answer_early(&mut self, id: QueryId) {
        let Some(get) = self.gets.get(&id) else {
            return;
        };
        let Some(best) = get.best.clone() else {
            return;
        };
        let key = get.key.clone();
        let Some(announced) = self.announced_by_own_judgement(best.record()) else {
            return;
        };
        let Some(get) = self.gets.get_mut(&id) else {
            return;
        };
        if let Some(reply) = get.reply.take() {
            let _ = reply.send(Ok(GetOk {
                record: best.record().clone(),
                signed: best,
                announced,
                valid: get.valid,
                invalid: get.invalid,
            }));
        }
        // The search goes on within a budget: one background search per key, at most
        // MAX_BACKGROUND_GETS in all, so a burst of gets does not turn into a flood of queries.
        let (background, same) = self.background_searches(&key, Some(id));
        if (background >= MAX_BACKGROUND_GETS || same)
            && let Some(mut query) = self.kad_mut().query_mut(&id)
        {
            query.finish();
        }
    }

    /// Background searches (gets answered early, other than `except`), and whether one of them
    /// is for `key`.
    fn background_searches(&self, key: &[u8], except: Option<QueryId>) -> (usize, bool) {
        self.gets
            .iter()
            .filter(|(id, g)| g.reply.is_none() && Some(**id) != except)
            .fold((0, false), |(n, same), (_, g)| {
                (n + 1, same || g.key == key)
            })
    }

    /// Whether `record` was announced, when this node can say so on its own: its book holds a
    /// matching notice, or it is one of the `k` closest to the key and so holds every notice.
    /// `None` when peers must be asked (or the record contradicts a notice).
    fn announced_by_own_judgement(&mut self, record: &Record) -> Option<Announced> {
        match self.book.check_put(record) {
            Ok(Announced::Yes) => Some(Announced::Yes),
            Ok(Announced::No) if self.among_closest(&record.key) => Some(Announced::No),
            _ => None,
        }
    }

    /// Answers a get from this node's own valid copy without a query when a query could add
    /// nothing now: a background search for the key is already under way, or the background
    /// budget is spent (the search is then left to later gets). Gives `reply` back otherwise.
    fn answer_from_copy(
        &mut self,
        key: &[u8],
        reply: oneshot::Sender<GetResult>,
    ) -> Result<(), oneshot::Sender<GetResult>> {
        let (background, same) = self.background_searches(key, None);
        if !same && background < MAX_BACKGROUND_GETS {
            return Err(reply);
        }
        let held = self.swarm.behaviour_mut().kad.store_mut().signed(key);
        let Some(signed) = held.filter(|s| !s.is_expired(unix_now())).cloned() else {
            return Err(reply);
        };
        let Some(announced) = self.announced_by_own_judgement(signed.record()) else {
            return Err(reply);
        };
        let _ = reply.send(Ok(GetOk {
            record: signed.record().clone(),
            signed,
            announced,
            valid: 1,
            invalid: 0,
        }));
        Ok(())
    }

    /// After an early answer: keeps the best copy found if it supersedes ours.
    fn repair_copy(&mut self, get: Get) {
        let Some(best) = get.best else { return };
        let store = self.swarm.behaviour_mut().kad.store_mut();
        let newer = store
            .signed(&get.key)
            .is_some_and(|ours| best.supersedes(ours));
        if newer && let Err(error) = store.insert(best, Instant::now(), unix_now()) {
            tracing::debug!(%error, "a newer copy found by a get was not kept");
        }
    }

    fn finish_get(&mut self, mut get: Get) {
        if get.reply.is_none() {
            return self.repair_copy(get);
        }
        let Some(best) = &get.best else {
            if let Some(reply) = get.reply {
                let _ = reply.send(Err(GetError::NotFound {
                    key: get.key,
                    invalid: get.invalid,
                }));
            }
            return;
        };
        if best.record().publisher == self.key.public() {
            let seq = best.record().seq;
            let seen = self.last_seq.entry(get.key.clone()).or_default();
            *seen = (*seen).max(seq);
        }
        if matches!(self.book.check_put(best.record()), Ok(Announced::Yes)) {
            get.announced = Announced::Yes;
            return self.reply_get(get);
        }
        let mut holders = std::mem::take(&mut get.holders);
        holders.dedup();
        let id = self.next_id;
        self.next_id += 1;
        for peer in holders.into_iter().take(self.config.announced_checks.get()) {
            let req = Request::Notices(ByteBuf::from(get.key.clone()));
            let rid = self.swarm.behaviour_mut().lockstep.send_request(&peer, req);
            self.requests.insert(rid, Pending::Check(id));
            get.asking += 1;
        }
        if get.asking == 0 {
            return self.reply_get(get);
        }
        self.checks.insert(id, get);
    }

    fn reply_get(&mut self, get: Get) {
        // Invariant: only called with a winning record.
        let (Some(best), Some(reply)) = (get.best, get.reply) else {
            return;
        };
        let _ = reply.send(Ok(GetOk {
            record: best.record().clone(),
            signed: best,
            announced: get.announced,
            valid: get.valid,
            invalid: get.invalid,
        }));
    }

    fn send_notice(
        &mut self,
        notice: SignedNotice,
        peers: Vec<PeerId>,
        reply: oneshot::Sender<AnnounceResult>,
    ) {
        let peers: Vec<PeerId> = peers
            .into_iter()
            .take(self.config.replication_factor.get())
            .collect();
        if peers.is_empty() {
            let _ = reply.send(Err(AnnounceError::NoPeers));
            return;
        }
        let id = self.next_id;
        self.next_id += 1;
        for peer in &peers {
            let req = Request::Announce(ByteBuf::from(notice.as_bytes().to_vec()));
            let rid = self.swarm.behaviour_mut().lockstep.send_request(peer, req);
            self.requests.insert(rid, Pending::Announce(id));
        }
        self.announcing.insert(
            id,
            Announcing {
                seq: notice.notice().seq,
                reply,
                outstanding: peers.len(),
                accepted: 0,
                refused: 0,
            },
        );
    }

    pub(super) fn on_lockstep(&mut self, event: rr::Event<Request, Response>) {
        match Exchange::of(event) {
            Some(Exchange::Request {
                peer,
                request,
                channel,
            }) => self.on_lockstep_request(peer, request, channel),
            Some(Exchange::Outcome {
                request_id,
                response,
                ..
            }) => self.on_lockstep_answer(request_id, response),
            None => {}
        }
    }

    /// Answers a lockstep request. A request from a connected peer whose identity check is under
    /// way waits for it; anyone else not verified is refused.
    pub(super) fn on_lockstep_request(
        &mut self,
        peer: PeerId,
        request: Request,
        channel: rr::ResponseChannel<Response>,
    ) {
        if !self.verified.contains_key(&peer) {
            if let Err(Held::Lockstep(_, channel)) =
                self.hold(peer, Held::Lockstep(request, channel))
            {
                self.refuse_unverified(channel);
            }
            return;
        }
        let answer = lockstep::answer(&mut self.book, &mut self.stamps, unix_now(), request);
        if let Some(persist) = &self.persist {
            for n in &answer.dropped {
                let n = n.notice();
                if let Err(e) = persist.remove_notice(&n.key, &n.publisher.to_bytes()) {
                    tracing::warn!(error = %e, "cannot delete a notice");
                }
            }
            if let Some(n) = &answer.accepted {
                let p = n.notice().publisher.to_bytes();
                if let Err(e) = persist.put_notice(&n.notice().key, &p, n.as_bytes()) {
                    tracing::warn!(error = %e, "cannot persist a notice");
                }
            }
        }
        if let Some(n) = answer.accepted {
            // No subscriber is fine.
            let _ = self.notices.send(n);
        }
        let _ = self
            .swarm
            .behaviour_mut()
            .lockstep
            .send_response(channel, answer.response);
    }

    fn on_lockstep_answer(&mut self, request: OutboundRequestId, response: Option<Response>) {
        match self.requests.remove(&request) {
            Some(Pending::Announce(id)) => {
                let Some(a) = self.announcing.get_mut(&id) else {
                    return;
                };
                if matches!(response, Some(Response::Accepted)) {
                    a.accepted += 1;
                } else {
                    a.refused += 1;
                }
                a.outstanding -= 1;
                if a.outstanding == 0
                    && let Some(a) = self.announcing.remove(&id)
                {
                    let tried = a.accepted + a.refused;
                    let _ = a.reply.send(if a.accepted == 0 {
                        Err(AnnounceError::NoneAccepted { tried })
                    } else {
                        Ok(AnnounceOk {
                            seq: a.seq,
                            accepted: a.accepted,
                            refused: a.refused,
                        })
                    });
                }
            }
            Some(Pending::Check(id)) => {
                let Some(get) = self.checks.get_mut(&id) else {
                    return;
                };
                if let (Some(best), Some(response)) = (&get.best, response)
                    && let Ok(notices) = lockstep::notices_from(&get.key, response)
                {
                    let r = best.record();
                    let hash = value_hash(&r.key, &r.value);
                    if notices.iter().any(|n| {
                        let n = n.notice();
                        n.publisher == r.publisher && n.seq == r.seq && n.value_hash == hash
                    }) {
                        get.announced = Announced::Yes;
                    }
                }
                get.asking -= 1;
                if get.asking == 0
                    && let Some(get) = self.checks.remove(&id)
                {
                    self.reply_get(get);
                }
            }
            Some(Pending::Notices(id)) => self.on_notices_answer(id, response),
            Some(Pending::Raw(reply)) => {
                let _ = reply.send(response);
            }
            None => {}
        }
    }
}

/// The order in which one publisher's notices for a key replace each other.
fn notice_order(n: &SignedNotice) -> (u64, u64) {
    (n.notice().seq, n.notice().created_at)
}
