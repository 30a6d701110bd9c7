//! The one table of work in flight, and the timers.
//!
//! Every operation (a client's command, or work the core started itself) has an [`OpId`] and one
//! entry in [`Ops`], whose [`Op`] says what it is for and holds its state. Requests the core sent
//! and writes it asked for map to the operation waiting for them, with their deadlines, so an
//! answer, a commit or a timeout finds its operation in one lookup (libp2p-kad's `QueryPool` and
//! `QueryInfo` are the model). Periodic work runs off one small table of timers indexed by
//! [`Timer`] (quinn-proto's `TimerTable`).

use std::collections::{BTreeSet, HashMap};
use std::time::Instant;

use serde_bytes::ByteBuf;
use shoal_swim::CommandId;

use super::lookup::DisjointPaths;
use super::notices::{Announcing, NoticeUndo, NoticesQuery};
use super::records::{GetState, Replication, Undo};
use super::{InboundId, OpId, Peer, RequestId, WriteId, shrink_sparse};
use crate::api::{Path, Route};
use crate::lockstep::SignedNotice;

/// What an operation is for, with its state.
pub(super) enum Op<T> {
    /// A join: seeds dialed and checked by the gate, then SWIM's join.
    Join(Join<T>),
    /// A graceful leave: SWIM's leave command.
    Leave(CommandId),
    /// A lookup of the closest peers (a get's included), and what follows it.
    Lookup(Box<Lookup<T>>),
    /// A record sent to its replicas, counting their answers.
    Replicate(Replication<T>),
    /// A notice sent to the closest peers, counting their answers.
    Announce(Announcing),
    /// The closest peers asked for their notices on a key.
    Notices(NoticesQuery),
    /// A proof-relay request about these members.
    Proofs(Vec<T>),
    /// A raw announcement sent to one peer.
    AnnounceTo,
    /// Waiting for a write to be durable.
    Committing(Box<Waiting<T>>),
}

/// The kind of an [`Op`], to dispatch an answer without borrowing the op.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Lookup,
    Replicate,
    Announce,
    Notices,
    Proofs,
    AnnounceTo,
    Other,
}

/// A join under way.
pub(super) struct Join<T> {
    /// Seeds asked for, with their addresses.
    pub(super) seeds: Vec<(T, Vec<super::Address>)>,
    /// Seeds still being dialed or checked.
    pub(super) waiting: Vec<T>,
    /// How many seeds were tried.
    pub(super) tried: usize,
    /// SWIM's join command, once sent.
    pub(super) swim: Option<CommandId>,
    /// SWIM joins that failed while a seed's proof was in hand.
    pub(super) attempts: u32,
    /// Dials of each waiting seed so far (the first included).
    pub(super) dials: u32,
    /// When the waiting seeds are dialed again, while dials remain.
    pub(super) redial_at: Option<Instant>,
    /// When a failed SWIM join is tried again (on the fresh connections asked for).
    pub(super) retry_at: Option<Instant>,
    /// When the join stops waiting for seeds that did not settle.
    pub(super) give_up: Instant,
}

/// A lookup under way.
pub(super) struct Lookup<T> {
    /// The key (or peer id bytes) as sent in each request.
    pub(super) target: ByteBuf,
    /// The iterative search.
    pub(super) state: DisjointPaths<T>,
    /// When it started.
    pub(super) started: Instant,
    /// One hop (a get asking the closest of the local view) or iterative.
    pub(super) path: Path,
    /// What to do with the peers found (and, for a get, the copies found).
    pub(super) then: Then<T>,
}

/// What a lookup is for.
pub(super) enum Then<T> {
    /// Answer a find-node command.
    FindNode,
    /// Send a put's record to the closest peers.
    Put(Replication<T>),
    /// Send an announcement to the closest peers.
    Announce(Box<SignedNotice>),
    /// Ask the closest peers for their notices.
    Notices(NoticesQuery),
    /// A get: every answer may carry a copy of the record.
    Get(Box<GetState<T>>),
}

/// What waits for a write.
pub(super) enum Waiting<T> {
    /// This node's put: replicate once the record is durable.
    OwnPut(Replication<T>, Route, Undo),
    /// A replica put from a peer: answer with a receipt once durable.
    Replica {
        inbound: InboundId,
        from: T,
        undo: Undo,
        /// The record kept: key, sequence, value hash, for the receipt.
        kept: (Vec<u8>, u64, [u8; 32]),
    },
    /// An announcement from a peer: answer `Accepted` once durable.
    NoticeIn {
        inbound: InboundId,
        undo: NoticeUndo,
    },
    /// This node's announcement: send it once durable.
    OwnNotice(Box<SignedNotice>, NoticeUndo),
    /// A newer copy a get found, kept as read repair.
    Repair(Undo),
    /// Copies from peers, already answered: undone (newest first) if the write fails.
    Copies(Vec<Undo>),
}

/// The work in flight and its deadlines.
pub(super) struct Ops<T> {
    next: u64,
    ops: HashMap<OpId, Op<T>>,
    requests: HashMap<RequestId, (OpId, T, Instant)>,
    request_deadlines: BTreeSet<(Instant, RequestId)>,
    writes: HashMap<WriteId, Option<OpId>>,
    op_deadlines: BTreeSet<(Instant, OpId)>,
    deadline_of: HashMap<OpId, Instant>,
}

impl<T> Default for Ops<T> {
    fn default() -> Self {
        Self {
            next: 0,
            ops: HashMap::new(),
            requests: HashMap::new(),
            request_deadlines: BTreeSet::new(),
            writes: HashMap::new(),
            op_deadlines: BTreeSet::new(),
            deadline_of: HashMap::new(),
        }
    }
}

impl<T: Peer> Ops<T> {
    /// A fresh operation id.
    pub(super) fn next_op(&mut self) -> OpId {
        self.next += 1;
        OpId(self.next)
    }

    fn next_token(&mut self) -> u64 {
        self.next += 1;
        self.next
    }

    /// Operations in flight.
    pub(super) fn len(&self) -> usize {
        self.ops.len()
    }

    /// Requests and writes awaited.
    pub(super) fn pending_len(&self) -> usize {
        self.requests.len() + self.writes.len()
    }

    /// Records `op`.
    pub(super) fn insert(&mut self, op: OpId, what: Op<T>) {
        self.ops.insert(op, what);
    }

    /// Takes `op` out (its deadline goes with it; its requests, if any, stay until answered and
    /// then find no operation).
    pub(super) fn remove(&mut self, op: OpId) -> Option<Op<T>> {
        self.end(op);
        self.ops.remove(&op)
    }

    /// Takes `op` out to work on it, keeping its deadline: put it back with [`Self::insert`], or
    /// end it with [`Self::end`].
    pub(super) fn take(&mut self, op: OpId) -> Option<Op<T>> {
        self.ops.remove(&op)
    }

    /// Clears the deadline of an operation taken out for good.
    pub(super) fn end(&mut self, op: OpId) {
        if let Some(at) = self.deadline_of.remove(&op) {
            self.op_deadlines.remove(&(at, op));
        }
    }

    /// The operation `op`, to update it in place.
    pub(super) fn get_mut(&mut self, op: OpId) -> Option<&mut Op<T>> {
        self.ops.get_mut(&op)
    }

    /// Every operation, to count or search them.
    pub(super) fn iter(&self) -> impl Iterator<Item = (&OpId, &Op<T>)> {
        self.ops.iter()
    }

    /// The kind of `op`.
    pub(super) fn kind(&self, op: OpId) -> Option<Kind> {
        Some(match self.ops.get(&op)? {
            Op::Lookup(_) => Kind::Lookup,
            Op::Replicate(_) => Kind::Replicate,
            Op::Announce(_) => Kind::Announce,
            Op::Notices(_) => Kind::Notices,
            Op::Proofs(_) => Kind::Proofs,
            Op::AnnounceTo => Kind::AnnounceTo,
            Op::Join(_) | Op::Leave(_) | Op::Committing(_) => Kind::Other,
        })
    }

    /// Sets `op`'s deadline (replacing any).
    pub(super) fn set_deadline(&mut self, op: OpId, at: Instant) {
        if let Some(old) = self.deadline_of.insert(op, at) {
            self.op_deadlines.remove(&(old, op));
        }
        self.op_deadlines.insert((at, op));
    }

    /// Records a request to `peer` for `op`, failing at `deadline`.
    pub(super) fn add_request(&mut self, op: OpId, peer: T, deadline: Instant) -> RequestId {
        let id = RequestId(self.next_token());
        self.requests.insert(id, (op, peer, deadline));
        self.request_deadlines.insert((deadline, id));
        id
    }

    /// The operation and peer of request `id`, which is no longer awaited.
    pub(super) fn take_request(&mut self, id: RequestId) -> Option<(OpId, T)> {
        let (op, peer, deadline) = self.requests.remove(&id)?;
        self.request_deadlines.remove(&(deadline, id));
        Some((op, peer))
    }

    /// Records a write for `op` (`None`: nothing waits for it).
    pub(super) fn add_write(&mut self, op: Option<OpId>) -> WriteId {
        let id = WriteId(self.next_token());
        self.writes.insert(id, op);
        id
    }

    /// The operation waiting for write `id`, which is no longer awaited; `None` if unknown or
    /// nothing waits.
    pub(super) fn take_write(&mut self, id: WriteId) -> Option<OpId> {
        self.writes.remove(&id).flatten()
    }

    /// Requests whose deadline passed, no longer awaited.
    pub(super) fn expired_requests(&mut self, now: Instant) -> Vec<(RequestId, OpId, T)> {
        let mut out = Vec::new();
        while let Some(&(at, id)) = self.request_deadlines.first() {
            if at > now {
                break;
            }
            self.request_deadlines.pop_first();
            if let Some((op, peer, _)) = self.requests.remove(&id) {
                out.push((id, op, peer));
            }
        }
        out
    }

    /// Operations whose deadline passed (their deadline is cleared; they stay in the table).
    pub(super) fn expired_ops(&mut self, now: Instant) -> Vec<OpId> {
        let mut out = Vec::new();
        while let Some(&(at, op)) = self.op_deadlines.first() {
            if at > now {
                break;
            }
            self.op_deadlines.pop_first();
            self.deadline_of.remove(&op);
            out.push(op);
        }
        out
    }

    /// The earliest request or operation deadline.
    pub(super) fn next_deadline(&self) -> Option<Instant> {
        let r = self.request_deadlines.first().map(|(t, _)| *t);
        let o = self.op_deadlines.first().map(|(t, _)| *t);
        match (r, o) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Gives back the memory of a drained burst.
    pub(super) fn shrink(&mut self) {
        shrink_sparse(&mut self.ops);
        shrink_sparse(&mut self.requests);
        shrink_sparse(&mut self.writes);
        shrink_sparse(&mut self.deadline_of);
    }
}

/// The core's periodic work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Timer {
    /// Housekeeping: retries of proof requests, expiries, bounds.
    Tick,
    /// Send the queued proof-relay requests, and ask again about members whose relayer was
    /// still checking them.
    RelayFlush,
    /// Save the routing snapshot.
    Snapshot,
    /// Drop expired records.
    Expire,
    /// Send held records to their closest peers.
    Republish,
    /// Write the copies kept since the last write.
    CopyWrite,
    /// Make the copies kept without a disk flush durable (see [`Config::copy_flush_delay`]).
    ///
    /// [`Config::copy_flush_delay`]: crate::Config::copy_flush_delay
    CopyFlush,
    /// Serve the slowed requests now due (see [`super::limits::Slowed`]).
    Slowed,
}

const TIMERS: [Timer; 8] = [
    Timer::Tick,
    Timer::RelayFlush,
    Timer::Snapshot,
    Timer::Expire,
    Timer::Republish,
    Timer::CopyWrite,
    Timer::CopyFlush,
    Timer::Slowed,
];

/// One deadline per [`Timer`].
#[derive(Debug, Default)]
pub(super) struct Timers {
    at: [Option<Instant>; TIMERS.len()],
}

impl Timers {
    fn index(timer: Timer) -> usize {
        timer as usize
    }

    /// Sets `timer` to fire at `at`.
    pub(super) fn set(&mut self, timer: Timer, at: Instant) {
        self.at[Self::index(timer)] = Some(at);
    }

    /// Sets `timer` to fire at `at` unless it is set to fire sooner.
    pub(super) fn set_by(&mut self, timer: Timer, at: Instant) {
        let slot = &mut self.at[Self::index(timer)];
        *slot = Some(slot.map_or(at, |t| t.min(at)));
    }

    /// Clears `timer`.
    pub(super) fn clear(&mut self, timer: Timer) {
        self.at[Self::index(timer)] = None;
    }

    /// Whether `timer` is set.
    pub(super) fn is_set(&self, timer: Timer) -> bool {
        self.at[Self::index(timer)].is_some()
    }

    /// The earliest deadline.
    pub(super) fn next(&self) -> Option<Instant> {
        self.at.iter().flatten().min().copied()
    }

    /// A timer whose deadline passed at `now`, cleared; earliest first.
    pub(super) fn expired(&mut self, now: Instant) -> Option<Timer> {
        let (i, _) = self
            .at
            .iter()
            .enumerate()
            .filter_map(|(i, t)| t.filter(|t| *t <= now).map(|t| (i, t)))
            .min_by_key(|(_, t)| *t)?;
        self.at[i] = None;
        Some(TIMERS[i])
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use libp2p::PeerId;

    use super::*;

    #[test]
    fn requests_expire_in_deadline_order_and_answers_find_their_op() {
        let mut ops: Ops<PeerId> = Ops::default();
        let t0 = Instant::now();
        let op = ops.next_op();
        ops.insert(op, Op::AnnounceTo);
        let (a, b) = (PeerId::random(), PeerId::random());
        let late = ops.add_request(op, a, t0 + Duration::from_secs(2));
        let early = ops.add_request(op, b, t0 + Duration::from_secs(1));
        assert_eq!(ops.next_deadline(), Some(t0 + Duration::from_secs(1)));
        assert_eq!(
            ops.expired_requests(t0 + Duration::from_secs(1)),
            vec![(early, op, b)]
        );
        assert_eq!(ops.take_request(early), None, "expired requests are gone");
        assert_eq!(ops.take_request(late), Some((op, a)));
        assert_eq!(ops.next_deadline(), None);
        assert_eq!(ops.kind(op), Some(Kind::AnnounceTo));
        let w = ops.add_write(Some(op));
        assert_eq!(ops.take_write(w), Some(op));
        assert_eq!(ops.take_write(w), None);
    }

    #[test]
    fn op_deadlines_fire_once_and_leave_with_their_op() {
        let mut ops: Ops<PeerId> = Ops::default();
        let t0 = Instant::now();
        let (x, y) = (ops.next_op(), ops.next_op());
        ops.insert(x, Op::AnnounceTo);
        ops.insert(y, Op::AnnounceTo);
        ops.set_deadline(x, t0 + Duration::from_secs(5));
        ops.set_deadline(x, t0 + Duration::from_secs(3));
        ops.set_deadline(y, t0 + Duration::from_secs(4));
        ops.remove(y);
        assert_eq!(ops.expired_ops(t0 + Duration::from_secs(10)), vec![x]);
        assert!(ops.expired_ops(t0 + Duration::from_secs(10)).is_empty());
        assert!(
            ops.get_mut(x).is_some(),
            "an expired op stays until its owner ends it"
        );
    }

    #[test]
    fn timers_fire_earliest_first() {
        let mut timers = Timers::default();
        let t0 = Instant::now();
        timers.set(Timer::Snapshot, t0 + Duration::from_secs(2));
        timers.set(Timer::Tick, t0 + Duration::from_secs(1));
        assert_eq!(timers.next(), Some(t0 + Duration::from_secs(1)));
        assert_eq!(timers.expired(t0), None);
        let now = t0 + Duration::from_secs(3);
        assert_eq!(timers.expired(now), Some(Timer::Tick));
        assert_eq!(timers.expired(now), Some(Timer::Snapshot));
        assert_eq!(timers.expired(now), None);
        assert!(!timers.is_set(Timer::Tick));
    }
}
