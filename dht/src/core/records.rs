//! Records: the store, the one acceptance rule, puts and their replicas, gets and read repair,
//! expiry and republishing.
//!
//! Every record that reaches the store, whatever its way in (this node's own put, a replica put
//! from a peer, a newer copy a get found), and every copy a get considers, goes through
//! [`Core::accept`]: the envelope is valid (signature, sizes, TTL, creation time, expiry, a stamp
//! that paid for it), it agrees with the lockstep notices held, and, to be kept, it supersedes the
//! copy held. A kept record is in memory at once (so the next record of the key is judged against
//! it) and acknowledged only once its write is durable; a failed write puts the previous copy
//! back and is refused.

use std::collections::{BinaryHeap, HashMap};
use std::time::Instant;

use serde_bytes::ByteBuf;

use super::Misbehaviour;
use super::lookup::{ClosestPeers, DisjointPaths, KeyHash, closest, closest_of};
use super::ops::{Lookup, Op, Then, Timer, Waiting};
use super::{
    Checks, Core, Durability, InboundId, MAX_BACKGROUND_GETS, OpId, Peer, Reply, RequestFailure,
    WriteOp, peers_from,
};
use crate::api::{
    FindNodeError, GetError, GetOk, LookupOk, LookupStats, Path, PutError, PutOk, PutRequest, Route,
};
use crate::envelope::EnvelopeError;
use crate::lockstep::{Announced, LockstepError, SignedNotice, announces, value_hash};
use crate::receipt::{Receipt, ReceiptError};
use crate::record::{NewRecord, Record, RecordError, SignedRecord};
use crate::store::StoreConfig;
use crate::wire::{MAX_PEERS, Request, Response};

/// Why the store did not keep a record. Nothing changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// A record with a higher (or equal) sequence is held.
    #[error("a record with sequence {held} is already held (got {got})")]
    Stale {
        /// The held record's sequence.
        held: u64,
        /// The refused record's sequence.
        got: u64,
    },
    /// The store holds [`StoreConfig::max_records`] records.
    #[error("record store full ({0} records)")]
    Full(usize),
    /// Writing the record to disk failed; the previous copy is held again and nothing was
    /// acknowledged.
    #[error("storage: {0}")]
    Write(String),
}

/// Why a record was not accepted. Nothing changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AcceptError {
    /// The envelope is invalid (signature, sizes, TTL, creation time, expiry, stamp).
    #[error(transparent)]
    Record(#[from] RecordError),
    /// The record contradicts a lockstep notice of its publisher.
    #[error("lockstep: {0}")]
    Lockstep(#[from] LockstepError),
    /// The store refused it (stale, full).
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What the acceptance rule found for a record.
#[derive(Debug, Clone)]
pub(super) struct Accepted {
    /// The record, validated.
    pub(super) signed: SignedRecord,
    /// When it is to be kept: whether it changes the store (`false`: the very same envelope is
    /// held already).
    pub(super) changes: bool,
}

/// A record offered to [`Core::accept`].
pub(super) enum Candidate<'a> {
    /// A record this node made (or already validated): only the lockstep and store rules apply.
    Checked(Box<SignedRecord>),
    /// Envelope bytes from a peer, stored or looked up under `key` when the carrier names one.
    /// A copy byte for byte equal to `known` (validated before) is checked for expiry only.
    Wire {
        bytes: &'a [u8],
        key: Option<&'a [u8]>,
        known: Option<&'a SignedRecord>,
    },
}

/// How to undo a record kept in memory whose write failed: the copy it replaced.
#[derive(Debug, Clone)]
pub(super) struct Undo {
    key: Vec<u8>,
    written: Vec<u8>,
    previous: Option<SignedRecord>,
}

/// Copies kept but not yet written (see [`Core::write_copies`]).
#[derive(Debug)]
pub(super) struct PendingCopies<T> {
    writes: Vec<WriteOp<T>>,
    undos: Vec<Undo>,
    bytes: usize,
}

impl<T> Default for PendingCopies<T> {
    fn default() -> Self {
        Self {
            writes: Vec::new(),
            undos: Vec::new(),
            bytes: 0,
        }
    }
}

/// How long a copy's write waits for others to share its commit. Copies are answered when
/// kept, so this delays only their disk write, never an answer; other writes take the
/// waiting copies along at once.
pub(super) const COPY_WRITE_DELAY: std::time::Duration = std::time::Duration::from_millis(100);

/// Copies and bytes of envelopes that wait at most; one more is written at once.
const MAX_PENDING_COPIES: usize = 256;
const MAX_PENDING_COPY_BYTES: usize = 1 << 20;

/// The records held, decoded once when accepted.
#[derive(Debug, Default)]
pub struct Records {
    config: StoreConfig,
    map: HashMap<Vec<u8>, SignedRecord>,
}

impl Records {
    /// An empty store with `config`'s limits.
    pub fn new(config: StoreConfig) -> Self {
        Self {
            config,
            map: HashMap::new(),
        }
    }

    /// The record held under `key`. It was validated when it was kept; only its expiry may have
    /// passed since.
    pub fn get(&self, key: &[u8]) -> Option<&SignedRecord> {
        self.map.get(key)
    }

    /// Records held.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether no record is held.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// Every record held.
    pub fn iter(&self) -> impl Iterator<Item = &SignedRecord> {
        self.map.values()
    }

    /// Up to `limit` records whose keys start with `prefix` and sort after `after`, in key
    /// order, and whether more follow: a page for an operator's listing. One pass over the keys
    /// holding only `limit + 1` of them, so a page of a large store costs no sort of the whole.
    pub fn page(
        &self,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> (Vec<&SignedRecord>, bool) {
        // The `limit + 1` smallest keys that qualify, largest on top.
        let mut smallest: BinaryHeap<&[u8]> = BinaryHeap::with_capacity(limit + 2);
        for key in self.map.keys() {
            let key = key.as_slice();
            if !key.starts_with(prefix) || after.is_some_and(|a| key <= a) {
                continue;
            }
            if smallest.len() <= limit {
                smallest.push(key);
            } else if smallest.peek().is_some_and(|top| key < *top) {
                smallest.pop();
                smallest.push(key);
            }
        }
        let mut keys = smallest.into_sorted_vec();
        let more = keys.len() > limit;
        keys.truncate(limit);
        let page = keys.into_iter().filter_map(|k| self.map.get(k)).collect();
        (page, more)
    }

    /// Whether the store would keep `signed`: `Ok(true)` if it changes what is held, `Ok(false)`
    /// if the very same envelope is held.
    fn check(&self, signed: &SignedRecord) -> Result<bool, StoreError> {
        match self.map.get(&signed.record().key) {
            Some(held) if held.as_bytes() == signed.as_bytes() => Ok(false),
            Some(held) if !signed.supersedes(held) => Err(StoreError::Stale {
                held: held.record().seq,
                got: signed.record().seq,
            }),
            Some(_) => Ok(true),
            None if self.map.len() >= self.config.max_records => {
                Err(StoreError::Full(self.config.max_records))
            }
            None => Ok(true),
        }
    }

    /// Keeps `signed`, returning the copy it replaced.
    pub(super) fn put(&mut self, signed: SignedRecord) -> Option<SignedRecord> {
        self.map.insert(signed.record().key.clone(), signed)
    }

    fn remove(&mut self, key: &[u8]) -> Option<SignedRecord> {
        self.map.remove(key)
    }
}

/// A record on its way to its replicas, counting their answers.
#[derive(Debug)]
pub(super) struct Replication<T> {
    key: Vec<u8>,
    seq: u64,
    quorum: usize,
    envelope: Vec<u8>,
    /// Whether a caller waits for the outcome (`false` once answered, or for background work).
    reply: bool,
    outstanding: usize,
    stored: usize,
    refused: usize,
    reason: Option<String>,
    /// How the replicas were found.
    path: Path,
    /// The closest replicas (`alpha` of them) whose answers the caller's success also waits
    /// for, so that a get asking the closest of the same view finds what was acknowledged.
    first: Vec<T>,
    /// Replicas not sent to yet: the second wave (see [`Core::replicate`]).
    rest: Vec<T>,
    /// What the replicas' receipts must vouch for, when they are checked and kept (this node's
    /// own puts); `None` counts every receipt as it comes (republishing, raw envelopes).
    vouch: Option<Vouch>,
    /// The receipts that verified, one per replica that kept the record.
    receipts: Vec<Receipt>,
}

/// The record a put's receipts must be for.
#[derive(Debug, Clone, Copy)]
pub(super) struct Vouch {
    hash: [u8; 32],
    expires_at: u64,
}

impl Vouch {
    /// What receipts for `record` must name, and when it expires.
    fn of(record: &Record) -> Self {
        Self {
            hash: value_hash(&record.key, &record.value),
            expires_at: record.expires_at(),
        }
    }
}

impl<T> Replication<T> {
    /// A replication of `envelope` (key `key`, sequence `seq`) needing `quorum` replicas;
    /// `reply` says whether a caller waits.
    pub(super) fn new(
        key: Vec<u8>,
        seq: u64,
        quorum: usize,
        envelope: Vec<u8>,
        reply: bool,
    ) -> Self {
        Self {
            key,
            seq,
            quorum,
            envelope,
            reply,
            outstanding: 0,
            stored: 0,
            refused: 0,
            reason: None,
            path: Path::OneHop,
            first: Vec::new(),
            rest: Vec::new(),
            vouch: None,
            receipts: Vec::new(),
        }
    }

    /// Checks and keeps the replicas' receipts for this replication's record, as `vouch`
    /// describes it.
    pub(super) fn vouched(mut self, vouch: Vouch) -> Self {
        self.vouch = Some(vouch);
        self
    }
}

/// A get's search: the copies found so far.
#[derive(Debug)]
pub(super) struct GetState<T> {
    key: Vec<u8>,
    /// Whether the caller still waits (`false` once answered early: the search only repairs).
    reply: bool,
    best: Option<SignedRecord>,
    valid: usize,
    invalid: usize,
    /// Notices the holders sent with their copies (checked; at most [`MAX_GET_NOTICES`]).
    notices: Vec<SignedNotice>,
    /// How the copies were sought.
    path: Path,
    /// Requests sent.
    requests: u32,
    /// Whether holders are asked for receipts ([`Request::Prove`]).
    prove: bool,
    /// The receipts holders sent, with the holder (checked against it; at most one each).
    receipts: Vec<(T, Receipt)>,
}

/// Most notices a get keeps from its answers (each answer carries at most one).
const MAX_GET_NOTICES: usize = 32;

impl<T> GetState<T> {
    /// A valid copy: the best so far if it supersedes the one held.
    fn offer(&mut self, copy: SignedRecord) {
        if self.best.as_ref().is_none_or(|b| copy.supersedes(b)) {
            self.best = Some(copy);
        }
    }

    /// The reply with the best copy, announced or not.
    fn ok(&self, best: SignedRecord, announced: Announced) -> GetOk {
        GetOk {
            announced,
            valid: self.valid,
            invalid: self.invalid,
            path: self.path,
            requests: self.requests,
            receipts: self
                .receipts
                .iter()
                .filter(|(_, r)| r.check(best.record()).is_ok())
                .map(|(_, r)| r.clone())
                .collect(),
            record: best.record().clone(),
            signed: best,
        }
    }
}

impl<T: Peer, C: Checks<T>> Core<T, C> {
    /// The acceptance rule (see the module docs). `keep` asks whether the store would keep it.
    pub(super) fn accept(
        &self,
        unix: u64,
        candidate: Candidate<'_>,
        keep: bool,
    ) -> Result<Accepted, AcceptError> {
        let signed = match candidate {
            Candidate::Checked(signed) => *signed,
            Candidate::Wire { bytes, key, known } => {
                let known = known
                    .or_else(|| key.and_then(|k| self.records.get(k)))
                    .filter(|s| s.as_bytes() == bytes);
                match known {
                    Some(s) if s.is_expired(unix) => {
                        return Err(RecordError::Expired {
                            expires_at: s.record().expires_at(),
                            now: unix,
                        }
                        .into());
                    }
                    Some(s) => s.clone(),
                    None => SignedRecord::validate(
                        bytes,
                        key,
                        unix,
                        &self.config.records,
                        &self.stamps,
                    )?,
                }
            }
        };
        self.book.check_put(signed.record())?;
        let changes = if keep {
            self.records.check(&signed)?
        } else {
            false
        };
        Ok(Accepted { signed, changes })
    }

    /// Keeps an accepted record in memory and returns its write and how to undo it.
    fn keep(&mut self, signed: SignedRecord) -> (WriteOp<T>, Undo) {
        let key = signed.record().key.clone();
        let written = signed.as_bytes().to_vec();
        let previous = self.records.put(signed);
        let op = WriteOp::PutRecord {
            key: key.clone(),
            envelope: written.clone(),
        };
        (
            op,
            Undo {
                key,
                written,
                previous,
            },
        )
    }

    /// Puts back the copy a failed write replaced, unless a later record replaced it since.
    fn undo(&mut self, undo: Undo) {
        let current = self.records.get(&undo.key).map(|s| s.as_bytes());
        if current != Some(undo.written.as_slice()) {
            return;
        }
        match undo.previous {
            Some(previous) => {
                self.records.put(previous);
            }
            None => {
                self.records.remove(&undo.key);
            }
        }
    }

    /// The sequence number of this node's latest notice for `key` if it has not put it yet.
    fn announced_unput_seq(&self, key: &[u8]) -> Option<u64> {
        let us = self.key.public();
        let announced = self.book.get(key, &us)?.notice().seq;
        let held = self
            .records
            .get(key)
            .filter(|s| s.record().publisher == us)
            .map(|s| s.record().seq);
        let put = self.last_seq.get(key).copied().max(held);
        put.is_none_or(|p| announced > p).then_some(announced)
    }

    /// A put: the record is made, accepted and kept, then sent to the closest peers: at once,
    /// its own copy written with the copies, when the persisted sequence floor covers it; else
    /// once the floor and the copy are on disk (see [`Self::on_write_done`]).
    pub(super) fn start_put(&mut self, now: Instant, unix: u64, op: OpId, request: PutRequest) {
        let seq = match request.seq {
            Some(seq) => seq,
            None => self
                .announced_unput_seq(&request.key)
                .unwrap_or_else(|| self.next_seq(&request.key, unix)),
        };
        let quorum = request.quorum.unwrap_or(self.config.put_quorum);
        let new = NewRecord {
            key: request.key.clone(),
            value: request.value,
            seq,
            ttl: request.ttl.as_secs().max(1),
        };
        let stamps = &self.config.stamps;
        let signed = match SignedRecord::create_with(&self.key, new, unix, stamps, &mut self.rng) {
            Ok(s) => s,
            Err(e) => return self.reply(op, Reply::Put(Err(e.into()))),
        };
        let accepted = match self.accept(unix, Candidate::Checked(Box::new(signed)), true) {
            Ok(a) => a,
            Err(e) => return self.reply(op, Reply::Put(Err(put_error(e)))),
        };
        let envelope = accepted.signed.as_bytes().to_vec();
        let vouch = Vouch::of(accepted.signed.record());
        let (write, undo) = self.keep(accepted.signed);
        self.note_seq(&request.key, seq);
        let job = Replication::new(request.key, seq, quorum.get(), envelope, true).vouched(vouch);
        match self.advance_seq_floor(seq) {
            // The persisted floor already covers `seq`, so no restart can reuse it, and the
            // quorum counts other replicas only: nothing the put promises rests on this node's
            // own copy. It is written with the copies, and the record goes out at once.
            None => {
                self.queue_copy(now, unix, write, undo);
                let key = job.key.clone();
                self.start_lookup(now, unix, op, &key, request.route, Then::Put(job));
            }
            // The floor must be on disk before a record above it leaves this node.
            Some(floor) => {
                let waiting = Waiting::OwnPut(job, request.route, undo);
                self.ops.insert(op, Op::Committing(Box::new(waiting)));
                self.write(now, unix, vec![write, floor], Some(op));
            }
        }
    }

    /// A replica put from an admitted peer: accepted and written, answered once the write is
    /// done as `durability` says (on disk, or applied for a copy beyond the quorum).
    pub(super) fn serve_put(
        &mut self,
        now: Instant,
        unix: u64,
        from: T,
        id: InboundId,
        envelope: &[u8],
        durability: Durability,
    ) {
        let candidate = Candidate::Wire {
            bytes: envelope,
            key: None,
            known: None,
        };
        match self.accept(unix, candidate, true) {
            Ok(a) if !a.changes => {
                // The very same envelope is held, durably: nothing to write.
                self.stats.stored_puts += 1;
                let answer = match durability {
                    Durability::Deferred => Response::Stored,
                    Durability::Flushed => self.kept(unix, held_parts(a.signed.record())),
                };
                self.respond(id, answer);
            }
            Ok(a) if durability == Durability::Deferred => {
                // A copy: answered now; its write waits for others to share a commit.
                let (write, undo) = self.keep(a.signed);
                self.stats.stored_puts += 1;
                self.respond(id, Response::Stored);
                self.queue_copy(now, unix, write, undo);
            }
            Ok(a) => {
                let kept = held_parts(a.signed.record());
                let (write, undo) = self.keep(a.signed);
                let op = self.ops.next_op();
                let waiting = Waiting::Replica {
                    inbound: id,
                    from,
                    undo,
                    kept,
                };
                self.ops.insert(op, Op::Committing(Box::new(waiting)));
                self.write(now, unix, vec![write], Some(op));
            }
            Err(error) => {
                tracing::debug!(?from, %error, "inbound put refused");
                self.stats.count_refused_put(from);
                if forged(&error) {
                    self.misbehaved(now, from, Misbehaviour::InvalidRecord);
                }
                self.respond(id, Response::refused(error.to_string()));
            }
        }
    }

    /// The answer to a replica put kept durably: this node's receipt for it, signed now.
    fn kept(&self, unix: u64, (key, seq, hash): (Vec<u8>, u64, [u8; 32])) -> Response {
        let receipt = Receipt::sign_parts(&self.key, &key, seq, hash, unix);
        Response::Kept(ByteBuf::from(receipt.as_bytes().to_vec()))
    }

    /// Answers a get ([`Request::GetRecord`]) or, with `prove`, a request for proof of holding
    /// ([`Request::Prove`]): the record held, with its notice and, proving, a receipt; without
    /// one, the closer peers known.
    pub(super) fn serve_get(&mut self, unix: u64, from: T, id: InboundId, key: &[u8], prove: bool) {
        self.stats.gets_served += 1;
        let held = self.records.get(key).filter(|r| !r.is_expired(unix));
        // A holder's copy is what the asker wanted; only a node without one points it on, to
        // the closer peers it knows.
        let closer = if held.is_some() {
            Vec::new()
        } else {
            let k = self.config.replication_factor.get();
            self.closest_members(&KeyHash::of(key), k, Some(&from))
        };
        let notice = held
            .and_then(|r| self.book.get(key, &r.record().publisher))
            .map(|n| ByteBuf::from(n.as_bytes().to_vec()));
        let receipt = held.filter(|_| prove).map(|r| {
            let receipt = Receipt::sign(&self.key, r.record(), unix);
            ByteBuf::from(receipt.as_bytes().to_vec())
        });
        let record = held.map(|r| ByteBuf::from(r.as_bytes().to_vec()));
        let answer = Response::Record {
            record,
            closer: super::peer_bytes(&closer),
            notice,
            receipt,
        };
        if self.config.dangerous_withhold_records {
            return self.respond(id, answer.withheld());
        }
        self.respond(id, answer);
    }

    /// Queues the write of a kept copy nothing promised rests on, to share one deferred commit
    /// with the others (see [`COPY_WRITE_DELAY`]); `undo` takes it back if that write fails.
    fn queue_copy(&mut self, now: Instant, unix: u64, write: WriteOp<T>, undo: Undo) {
        if !self.persistent {
            return;
        }
        let copies = &mut self.copies;
        copies.bytes += undo.written.len();
        copies.writes.push(write);
        copies.undos.push(undo);
        if copies.writes.len() >= MAX_PENDING_COPIES || copies.bytes >= MAX_PENDING_COPY_BYTES {
            self.write_copies(now, unix);
        } else if !self.timers.is_set(Timer::CopyWrite) {
            self.timers.set(Timer::CopyWrite, now + COPY_WRITE_DELAY);
        }
    }

    /// Asks for the write of the copies kept since the last write, as one deferred commit.
    pub(super) fn write_copies(&mut self, now: Instant, unix: u64) {
        self.timers.clear(Timer::CopyWrite);
        if self.copies.writes.is_empty() {
            return;
        }
        let pending = std::mem::take(&mut self.copies);
        let op = self.ops.next_op();
        let waiting = Waiting::Copies(pending.undos);
        self.ops.insert(op, Op::Committing(Box::new(waiting)));
        self.write_with(now, unix, pending.writes, Some(op), Durability::Deferred);
    }

    /// A write that `op` waited for is durable, or failed.
    pub(super) fn on_write_done(
        &mut self,
        now: Instant,
        unix: u64,
        op: OpId,
        waiting: Waiting<T>,
        result: Result<(), String>,
    ) {
        match (waiting, result) {
            (Waiting::OwnPut(job, route, _), Ok(())) => {
                let key = job.key.clone();
                self.start_lookup(now, unix, op, &key, route, Then::Put(job));
            }
            (Waiting::OwnPut(_, _, undo), Err(e)) => {
                self.undo(undo);
                self.reply(op, Reply::Put(Err(PutError::Store(StoreError::Write(e)))));
            }
            (Waiting::Replica { inbound, kept, .. }, Ok(())) => {
                self.stats.stored_puts += 1;
                let answer = self.kept(unix, kept);
                self.respond(inbound, answer);
            }
            (
                Waiting::Replica {
                    inbound,
                    from,
                    undo,
                    ..
                },
                Err(e),
            ) => {
                self.undo(undo);
                self.stats.count_refused_put(from);
                self.respond(inbound, Response::refused(format!("storage: {e}")));
            }
            (Waiting::Repair(_) | Waiting::Copies(_), Ok(())) => {}
            (Waiting::Repair(undo), Err(_)) => self.undo(undo),
            (Waiting::Copies(undos), Err(_)) => {
                for undo in undos.into_iter().rev() {
                    self.undo(undo);
                }
            }
            (Waiting::NoticeIn { inbound, .. }, Ok(())) => {
                // Subscribers hear of it from the broadcast, which delivers every notice once
                // at every node, in its feed's order.
                self.respond(inbound, Response::Accepted);
            }
            (Waiting::NoticeIn { inbound, undo, .. }, Err(e)) => {
                self.undo_notice(undo);
                self.respond(inbound, Response::refused(format!("storage: {e}")));
            }
            (Waiting::OwnNotice(notice, _), Ok(())) => {
                self.publish_notice(now, &notice);
                let key = notice.notice().key.clone();
                self.start_lookup(now, unix, op, &key, Route::Auto, Then::Announce(notice));
            }
            (Waiting::OwnNotice(notice, undo), Err(e)) => {
                if let Some(pos) = notice.notice().feed {
                    self.release_feed_pos(pos);
                }
                self.undo_notice(undo);
                self.reply(
                    op,
                    Reply::Announce(Err(crate::api::AnnounceError::Storage(e))),
                );
            }
        }
    }

    /// Sends a record to up to `k` of `peers` (this node left out; closest first), in two
    /// waves: first to the closest `max(alpha, quorum)`, then to the rest once those answered, or
    /// at once when one of them did not keep it. The caller is answered as soon as `quorum`
    /// replicas kept it and the `alpha` closest answered (the quorum usually comes from the first
    /// wave, whose writes then do not queue behind the others' on a shared disk), or once every
    /// replica answered. A second wave sent after the quorum was reached goes as copies
    /// ([`Request::PutCopy`]), told without waiting for answers.
    pub(super) fn replicate(
        &mut self,
        now: Instant,
        op: OpId,
        mut job: Replication<T>,
        peers: Vec<T>,
    ) {
        let k = self.config.replication_factor.get();
        let local = self.local;
        let mut peers: Vec<T> = peers.into_iter().filter(|p| *p != local).take(k).collect();
        let alpha = self.config.lookup_parallelism.get();
        job.first = peers.iter().take(alpha).copied().collect();
        job.rest = peers.split_off(peers.len().min(alpha.max(job.quorum)));
        if peers.is_empty() {
            return self.finish_replication(op, job);
        }
        self.send_replicas(now, op, &mut job, peers);
        self.ops.insert(op, Op::Replicate(job));
    }

    /// Sends `job`'s record to `peers`: as copies once the quorum is reached, told and not
    /// awaited (nothing promised rests on them, so their answers would change nothing); else as
    /// replica puts that count toward it.
    fn send_replicas(&mut self, now: Instant, op: OpId, job: &mut Replication<T>, peers: Vec<T>) {
        let copies = job.stored >= job.quorum;
        if !copies {
            job.outstanding += peers.len();
        }
        for peer in peers {
            let envelope = ByteBuf::from(job.envelope.clone());
            if copies {
                self.tell(peer, Request::PutCopy(envelope));
            } else {
                self.send(now, op, peer, Request::PutRecord(envelope));
            }
        }
    }

    /// A replica's answer for `op`.
    pub(super) fn on_replica_answer(
        &mut self,
        now: Instant,
        op: OpId,
        peer: T,
        result: Result<Response, RequestFailure>,
    ) {
        let mut job = match self.ops.take(op) {
            Some(Op::Replicate(job)) => job,
            Some(other) => return self.ops.insert(op, other),
            None => return,
        };
        job.outstanding = job.outstanding.saturating_sub(1);
        job.first.retain(|p| *p != peer);
        let kept = match result {
            Ok(Response::Kept(bytes)) => match self.check_receipt(&job, peer, &bytes) {
                Ok(receipt) => {
                    job.stored += 1;
                    job.receipts.extend(receipt);
                    true
                }
                Err(error) => {
                    tracing::info!(?peer, %error, "a replica's receipt was refused");
                    job.refused += 1;
                    job.reason
                        .get_or_insert(format!("receipt refused: {error}"));
                    self.misbehaved(now, peer, Misbehaviour::BadReceipt);
                    false
                }
            },
            Ok(Response::Refused(reason)) => {
                job.refused += 1;
                job.reason.get_or_insert(reason);
                false
            }
            Ok(_) | Err(_) => false,
        };
        if !job.rest.is_empty() && (!kept || job.outstanding == 0) {
            let rest = std::mem::take(&mut job.rest);
            self.send_replicas(now, op, &mut job, rest);
        }
        if job.reply && job.stored >= job.quorum && job.first.is_empty() {
            job.reply = false;
            let ok = PutOk {
                key: job.key.clone(),
                seq: job.seq,
                path: job.path,
                receipts: job.receipts.clone(),
            };
            self.reply(op, Reply::Put(Ok(ok)));
        }
        if job.outstanding == 0 {
            self.ops.end(op);
            self.finish_replication(op, job);
        } else {
            self.ops.insert(op, Op::Replicate(job));
        }
    }

    /// Answers a replication every replica has answered, if its caller still waits.
    fn finish_replication(&mut self, op: OpId, job: Replication<T>) {
        if !job.reply {
            return;
        }
        let result = if job.stored >= job.quorum {
            Ok(PutOk {
                key: job.key,
                seq: job.seq,
                path: job.path,
                receipts: job.receipts,
            })
        } else {
            Err(PutError::Quorum {
                key: job.key,
                seq: job.seq,
                acked: job.stored,
                quorum: job.quorum,
                refused: job.refused,
                reason: job.reason,
            })
        };
        self.reply(op, Reply::Put(result));
    }

    /// A replica's receipt for `job`'s record, checked: for that record, signed by `peer`.
    /// Kept in the receipt book, to catch a later denial. `None` when `job` does not check
    /// receipts.
    fn check_receipt(
        &mut self,
        job: &Replication<T>,
        peer: T,
        bytes: &[u8],
    ) -> Result<Option<Receipt>, ReceiptError> {
        let Some(vouch) = job.vouch else {
            return Ok(None);
        };
        let receipt = self.checked_receipt(peer, bytes, &job.key, job.seq, &vouch.hash)?;
        self.receipts
            .note(peer, &job.key, job.seq, vouch.expires_at);
        Ok(Some(receipt))
    }

    /// The receipt in `bytes`, if it is well signed, for the record of `key`, `seq` and value
    /// hash `hash`, and signed by `peer`, the node that sent it.
    fn checked_receipt(
        &self,
        peer: T,
        bytes: &[u8],
        key: &[u8],
        seq: u64,
        hash: &[u8; 32],
    ) -> Result<Receipt, ReceiptError> {
        let receipt = Receipt::decode(bytes)?;
        receipt.check_parts(key, seq, hash)?;
        if !self.checks.signed_by(&peer, receipt.replica()) {
            return Err(ReceiptError::WrongSigner);
        }
        Ok(receipt)
    }

    /// A receipt a holder sent with its copy for a get that asks for proof: kept if it is for
    /// that copy and signed by the holder; anything else is the holder's misbehaviour.
    fn on_get_receipt(
        &mut self,
        now: Instant,
        peer: T,
        state: &mut GetState<T>,
        copy: Option<&Record>,
        bytes: &[u8],
    ) {
        let checked = match copy {
            Some(r) => {
                let hash = value_hash(&r.key, &r.value);
                self.checked_receipt(peer, bytes, &r.key, r.seq, &hash)
            }
            None => Err(ReceiptError::Mismatch { what: "a record" }),
        };
        match checked {
            Ok(receipt) if state.receipts.len() < MAX_PEERS => state.receipts.push((peer, receipt)),
            Ok(_) => {}
            Err(error) => {
                tracing::info!(?peer, %error, "a holder's receipt was refused");
                self.misbehaved(now, peer, Misbehaviour::BadReceipt);
            }
        }
    }

    // ----- lookups -----

    /// Finds the peers closest to `target` (a record key, or a peer id's bytes) for `then`, by
    /// the path [`Core::path_for`] gives `route`. One hop: the `k` closest admitted live members
    /// of the local view are handed to `then` at once; a get asks them, closest first (see
    /// [`ClosestPeers::one_hop`]). Iterative: Kademlia's lookup, seeded from the same members,
    /// over [`Config::lookup_paths`](crate::Config::lookup_paths) disjoint paths.
    pub(super) fn start_lookup(
        &mut self,
        now: Instant,
        unix: u64,
        op: OpId,
        target: &[u8],
        route: Route,
        then: Then<T>,
    ) {
        let point = KeyHash::of(target);
        let k = self.config.replication_factor;
        let alpha = self.config.lookup_parallelism;
        let path = self.path_for(now, route);
        self.count_path(path);
        self.stats.queries += 1;
        // Twice k: members that fail (SWIM has not evicted them yet) are replaced by the next
        // closest without waiting for an answer to name them.
        let seeds = closest(&point, self.verified_live(), 2 * k.get());
        let state = match (path, &then) {
            (Path::OneHop, Then::Get(_)) => {
                // get_paths groups of alpha replicas, all asked at once: one round still.
                let wanted = alpha.saturating_mul(self.config.get_paths);
                let search = ClosestPeers::one_hop(point, self.local, k, wanted, seeds, wanted);
                DisjointPaths::single(search)
            }
            (Path::OneHop, _) => {
                let local = self.local;
                let peers = seeds.into_iter().filter(|p| *p != local).take(k.get());
                let stats = LookupStats::default();
                return self.deliver(now, unix, op, then, peers.collect(), stats, path, false);
            }
            (Path::Iterative, _) => {
                let d = self.config.lookup_paths;
                DisjointPaths::new(point, self.local, k, alpha, seeds, d)
            }
        };
        let lookup = Lookup {
            target: ByteBuf::from(target.to_vec()),
            state,
            started: now,
            path,
            then,
        };
        self.ops.set_deadline(op, now + self.config.query_timeout);
        self.advance_lookup(now, unix, op, Box::new(lookup));
    }

    /// Sends the requests lookup `op` has room for, or ends it if it is finished.
    fn advance_lookup(&mut self, now: Instant, unix: u64, op: OpId, mut lookup: Box<Lookup<T>>) {
        let get = match &lookup.then {
            Then::Get(state) => Some(state.prove),
            _ => None,
        };
        while let Some(peer) = lookup.state.next_peer() {
            let request = if let Some(prove) = get {
                self.stats.get_requests += 1;
                let key = lookup.target.clone();
                if prove {
                    Request::Prove(key)
                } else {
                    Request::GetRecord(key)
                }
            } else {
                self.stats.lookup_requests += 1;
                Request::FindNode(lookup.target.clone())
            };
            self.send(now, op, peer, request);
        }
        if lookup.state.is_finished() {
            self.finish_lookup(now, unix, op, *lookup, false);
        } else {
            self.ops.insert(op, Op::Lookup(lookup));
        }
    }

    /// An answer (or failure) of `peer` for lookup `op`.
    pub(super) fn on_lookup_answer(
        &mut self,
        now: Instant,
        unix: u64,
        op: OpId,
        peer: T,
        result: Result<Response, RequestFailure>,
    ) {
        let mut lookup = match self.ops.take(op) {
            Some(Op::Lookup(lookup)) => lookup,
            Some(other) => return self.ops.insert(op, other),
            None => return,
        };
        let closer = match (&mut lookup.then, result) {
            (
                Then::Get(state),
                Ok(Response::Record {
                    record,
                    closer,
                    notice,
                    receipt,
                }),
            ) => {
                let copy = record.and_then(|bytes| self.on_copy(now, unix, peer, state, &bytes));
                if copy.is_some() {
                    lookup.state.on_hit(&peer);
                    if let Some(bytes) = notice {
                        self.on_get_notice(unix, state, &bytes);
                    }
                }
                let answered = copy.as_ref().map(|c| c.record().seq);
                if self.receipts.denies(unix, peer, &state.key, answered) {
                    self.misbehaved(now, peer, Misbehaviour::DeniedReceipt);
                }
                if state.prove
                    && let Some(bytes) = receipt
                {
                    let record = copy.as_ref().map(SignedRecord::record);
                    self.on_get_receipt(now, peer, state, record, &bytes);
                }
                if let Some(copy) = copy {
                    state.offer(copy);
                }
                Some(closer)
            }
            (Then::Get(_), Ok(_)) => None,
            (_, Ok(Response::Peers(closer))) => {
                let named = peers_from::<T>(&closer, MAX_PEERS);
                let point = KeyHash::of(&lookup.target);
                self.judge_lookup_answer(now, peer, &point, &named);
                Some(closer)
            }
            (_, Ok(_) | Err(_)) => None,
        };
        match closer {
            Some(list) => {
                // Peers this node has not admitted take no part.
                let admitted: Vec<T> = peers_from::<T>(&list, MAX_PEERS)
                    .into_iter()
                    .filter(|p| self.admission.is_verified(p))
                    .collect();
                lookup.state.on_answer(&peer, admitted);
            }
            None => lookup.state.on_failure(&peer),
        }
        // With one path a get may answer with the first copy when this node can judge it
        // alone; with more, or asking for proof, the point is to hear every holder first.
        if let Then::Get(state) = &mut lookup.then
            && state.reply
            && state.best.is_some()
            && !state.prove
            && self.config.get_paths.get() == 1
        {
            self.answer_early(op, &mut lookup);
        }
        self.advance_lookup(now, unix, op, lookup);
    }

    /// An operation's deadline passed: a lookup ends with what it found, a join acts on its timer.
    pub(super) fn on_op_deadline(&mut self, now: Instant, unix: u64, op: OpId) {
        match self.ops.take(op) {
            Some(Op::Lookup(lookup)) => self.finish_lookup(now, unix, op, *lookup, true),
            Some(Op::Join(join)) => {
                self.ops.insert(op, Op::Join(join));
                self.on_join_timer(now, unix, op);
            }
            Some(other) => self.ops.insert(op, other),
            None => {}
        }
    }

    /// Ends lookup `op` and hands its peers to what it was for.
    fn finish_lookup(
        &mut self,
        now: Instant,
        unix: u64,
        op: OpId,
        lookup: Lookup<T>,
        timed_out: bool,
    ) {
        self.ops.end(op);
        let counts = lookup.state.counts();
        let stats = LookupStats {
            requests: counts.requests,
            successes: counts.answers,
            failures: counts.failures,
            duration: (counts.requests > 0).then(|| now.saturating_duration_since(lookup.started)),
        };
        let peers = lookup.state.peers();
        let path = lookup.path;
        self.deliver(now, unix, op, lookup.then, peers, stats, path, timed_out);
    }

    /// Hands the peers found for `op` (closest first) to what they were sought for.
    #[allow(clippy::too_many_arguments)]
    fn deliver(
        &mut self,
        now: Instant,
        unix: u64,
        op: OpId,
        then: Then<T>,
        peers: Vec<T>,
        stats: LookupStats,
        path: Path,
        timed_out: bool,
    ) {
        match then {
            Then::FindNode => {
                let reply = if timed_out {
                    Err(FindNodeError::Timeout { found: peers })
                } else {
                    Ok(LookupOk { peers, stats, path })
                };
                self.reply(op, Reply::FindNode(reply));
            }
            Then::Put(mut job) => {
                job.path = path;
                self.replicate(now, op, job, peers);
            }
            Then::Announce(notice) => self.send_notice(now, op, *notice, peers),
            Then::Notices(query) => self.ask_notices(now, op, query, peers),
            Then::Get(mut state) => {
                state.path = path;
                state.requests = stats.requests;
                self.finish_get(now, unix, op, *state);
            }
        }
    }

    // ----- gets -----

    /// Starts a get. This node's own valid copy counts as the first copy: when this node can say
    /// on its own whether it was announced, the caller is answered at once and the search for a
    /// higher sequence goes on in the background, within a budget (one background search per
    /// key, at most [`MAX_BACKGROUND_GETS`]; past it, none). Otherwise the search runs and the
    /// caller is answered as copies come.
    pub(super) fn start_get(
        &mut self,
        now: Instant,
        unix: u64,
        op: OpId,
        key: Vec<u8>,
        route: Route,
        prove: bool,
    ) {
        let own = self
            .records
            .get(&key)
            .filter(|s| !s.is_expired(unix))
            .cloned();
        let mut state = GetState {
            key: key.clone(),
            reply: true,
            valid: usize::from(own.is_some()),
            best: own,
            invalid: 0,
            notices: Vec::new(),
            path: self.path_for(now, route),
            requests: 0,
            prove,
            receipts: Vec::new(),
        };
        // Proof comes from holders: asking for it, the own copy answers nothing alone.
        if !prove
            && let Some(best) = &state.best
            && let Some(announced) = self.announced_by_own_judgement(best)
        {
            let reply = state.ok(best.clone(), announced);
            self.reply(op, Reply::Get(Box::new(Ok(reply))));
            let (background, same) = self.background_searches(&key, None);
            if same || background >= MAX_BACKGROUND_GETS {
                return;
            }
            state.reply = false;
        }
        self.start_lookup(now, unix, op, &key, route, Then::Get(Box::new(state)));
    }

    /// A notice a holder sent with its copy: kept for the announced judgement if it is for the
    /// get's key, well signed and paid for by its stamp.
    fn on_get_notice(&mut self, unix: u64, state: &mut GetState<T>, bytes: &[u8]) {
        if state.notices.len() >= MAX_GET_NOTICES
            || state.notices.iter().any(|n| n.as_bytes() == bytes)
        {
            return;
        }
        match SignedNotice::decode(bytes) {
            Ok(n) if n.notice().key == state.key && n.check_kept(unix, &self.stamps).is_ok() => {
                state.notices.push(n);
            }
            Ok(_) => tracing::debug!("a notice sent with a copy was for another key or unpaid"),
            Err(error) => tracing::debug!(%error, "a notice sent with a copy was refused"),
        }
    }

    /// Weighs a copy `peer` sent for a get: the copy if it was valid (counted; the caller offers
    /// it as the best copy once it is done with it, [`GetState::offer`]).
    fn on_copy(
        &mut self,
        now: Instant,
        unix: u64,
        peer: T,
        state: &mut GetState<T>,
        bytes: &[u8],
    ) -> Option<SignedRecord> {
        let candidate = Candidate::Wire {
            bytes,
            key: Some(&state.key),
            known: state.best.as_ref(),
        };
        match self.accept(unix, candidate, false) {
            Ok(a) => {
                state.valid += 1;
                Some(a.signed)
            }
            Err(error) => {
                tracing::debug!(?peer, %error, "invalid record copy");
                state.invalid += 1;
                if forged(&error) {
                    self.misbehaved(now, peer, Misbehaviour::InvalidRecord);
                }
                None
            }
        }
    }

    /// Whether this node is one of the `k` closest to `key` in its own routing table, and so
    /// holds every lockstep notice for it.
    fn among_closest(&self, key: &[u8]) -> bool {
        let k = self.config.replication_factor.get();
        self.table.closer_than_local(&KeyHash::of(key), k) < k
    }

    /// Whether `signed` was announced, when this node can say so on its own: its book holds a
    /// matching notice, or it is one of the `k` closest to the key and so holds every notice.
    /// `None` when peers must be asked (or the record contradicts a notice).
    fn announced_by_own_judgement(&self, signed: &SignedRecord) -> Option<Announced> {
        match self.book.check_put(signed.record()) {
            Ok(Announced::Yes) => Some(Announced::Yes),
            Ok(Announced::No) if self.among_closest(&signed.record().key) => Some(Announced::No),
            _ => None,
        }
    }

    /// Background searches (gets answered early) other than `except`, and whether one of them
    /// is for `key`.
    fn background_searches(&self, key: &[u8], except: Option<OpId>) -> (usize, bool) {
        self.ops
            .iter()
            .filter(|(id, _)| Some(**id) != except)
            .filter_map(|(_, op)| match op {
                Op::Lookup(l) => match &l.then {
                    Then::Get(s) if !s.reply => Some(s.key.as_slice()),
                    _ => None,
                },
                _ => None,
            })
            .fold((0, false), |(n, same), k| (n + 1, same || k == key))
    }

    /// Answers a get with its best copy so far when this node can say on its own whether it was
    /// announced. The search goes on within a budget (one background search per key, at most
    /// [`MAX_BACKGROUND_GETS`]): a higher sequence found later replaces our copy, so the next
    /// get sees it.
    fn answer_early(&mut self, op: OpId, lookup: &mut Lookup<T>) {
        let Then::Get(state) = &mut lookup.then else {
            return;
        };
        let Some(best) = state.best.clone() else {
            return;
        };
        let Some(announced) = self.announced_by_own_judgement(&best) else {
            return;
        };
        state.reply = false;
        state.requests = lookup.state.counts().requests;
        state.path = lookup.path;
        let reply = state.ok(best, announced);
        let key = state.key.clone();
        self.reply(op, Reply::Get(Box::new(Ok(reply))));
        let (background, same) = self.background_searches(&key, Some(op));
        if background >= MAX_BACKGROUND_GETS || same {
            lookup.state.stop();
        }
    }

    /// Ends a get: repairs this node's copy after an early answer, or answers with the winner.
    /// The winner was announced when this node's book, or a notice a holder sent with its copy,
    /// holds a notice matching it: holders are among the closest to the key, where notices are
    /// sent, so their word stands for the network's.
    fn finish_get(&mut self, now: Instant, unix: u64, op: OpId, state: GetState<T>) {
        if !state.reply {
            return self.repair_copy(now, unix, state);
        }
        let Some(best) = &state.best else {
            let reply = Err(GetError::NotFound {
                key: state.key,
                invalid: state.invalid,
            });
            return self.reply(op, Reply::Get(Box::new(reply)));
        };
        if best.record().publisher == self.key.public() {
            let (key, seq) = (state.key.clone(), best.record().seq);
            self.note_seq(&key, seq);
        }
        let announced = matches!(self.book.check_put(best.record()), Ok(Announced::Yes))
            || state.notices.iter().any(|n| announces(n, best.record()));
        let announced = if announced {
            Announced::Yes
        } else {
            Announced::No
        };
        let reply = state.ok(best.clone(), announced);
        self.reply(op, Reply::Get(Box::new(Ok(reply))));
    }

    /// After an early answer: keeps the best copy found if it supersedes ours (read repair).
    fn repair_copy(&mut self, now: Instant, unix: u64, state: GetState<T>) {
        let Some(best) = state.best else { return };
        let ours_older = self
            .records
            .get(&state.key)
            .is_some_and(|ours| best.supersedes(ours));
        if !ours_older {
            return;
        }
        match self.accept(unix, Candidate::Checked(Box::new(best)), true) {
            Ok(a) if a.changes => {
                let (write, undo) = self.keep(a.signed);
                let op = self.ops.next_op();
                self.ops
                    .insert(op, Op::Committing(Box::new(Waiting::Repair(undo))));
                self.write(now, unix, vec![write], Some(op));
            }
            Ok(_) => {}
            Err(error) => tracing::debug!(%error, "a newer copy found by a get was not kept"),
        }
    }

    // ----- expiry and republishing -----

    /// Drops the records whose lifetime ended, on disk too.
    pub(super) fn expire_records(&mut self, now: Instant, unix: u64) {
        let mut expired: Vec<Vec<u8>> = self
            .records
            .iter()
            .filter(|r| r.is_expired(unix))
            .map(|r| r.record().key.clone())
            .collect();
        // In key order, not the hash map's: it is the order of the write.
        expired.sort_unstable();
        if expired.is_empty() {
            return;
        }
        self.stats.expired_records += expired.len() as u64;
        for key in &expired {
            self.records.remove(key);
        }
        shrink_map(&mut self.records.map);
        let writes = expired.into_iter().map(WriteOp::RemoveRecord).collect();
        self.write(now, unix, writes, None);
    }

    /// Sends every record held to the `k` members closest to its key in the local view (those
    /// holding the same envelope answer at once), so copies lost with failed nodes are made
    /// again on the nodes now closest.
    pub(super) fn republish(&mut self, now: Instant, unix: u64) {
        if self.records.is_empty() {
            return;
        }
        let k = self.config.replication_factor.get();
        // Each member's point hashed once for every record.
        let members: Vec<(KeyHash, T)> = self.verified_live().map(|p| (p.point(), p)).collect();
        let mut jobs: Vec<(Vec<u8>, Vec<u8>)> = self
            .records
            .iter()
            .filter(|r| !r.is_expired(unix))
            .map(|r| (r.record().key.clone(), r.as_bytes().to_vec()))
            .collect();
        // In key order, not the hash map's: it is the order the requests go out in.
        jobs.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        for (key, envelope) in jobs {
            let peers = closest_of(&KeyHash::of(&key), members.iter().copied(), k);
            if peers.is_empty() {
                continue;
            }
            self.stats.republished += 1;
            self.stats.background_requests += peers.len() as u64;
            let op = self.ops.next_op();
            let job = Replication::new(key, 0, 1, envelope, false);
            self.replicate(now, op, job, peers);
        }
    }
}

/// A record's key, sequence and value hash: what a receipt for it names.
fn held_parts(record: &Record) -> (Vec<u8>, u64, [u8; 32]) {
    let hash = value_hash(&record.key, &record.value);
    (record.key.clone(), record.seq, hash)
}

/// Whether a refused record was forged: its signature does not verify, or its stamp does not
/// pay for it (a stamp is checked as of the record's creation, so no clock makes an honest one
/// fail). An honest peer never sends one (every record is checked before it is kept or
/// served); stale or expired records can come from honest peers with other clocks or views,
/// and cost nothing.
fn forged(error: &AcceptError) -> bool {
    matches!(
        error,
        AcceptError::Record(
            RecordError::Envelope(EnvelopeError::BadSignature(_))
                | RecordError::Stamp(_)
                | RecordError::StampMalformed(_)
        )
    )
}

/// The error a put reports for a refused record.
fn put_error(e: AcceptError) -> PutError {
    match e {
        AcceptError::Record(e) => PutError::Record(e),
        AcceptError::Lockstep(e) => PutError::Lockstep(e),
        AcceptError::Store(e) => PutError::Store(e),
    }
}

fn shrink_map<K: Eq + std::hash::Hash, V>(map: &mut HashMap<K, V>) {
    super::shrink_sparse(map);
}
