//! Lockstep notices: announcing a value's hash to the nodes closest to its key, keeping the
//! notices peers announce (acknowledged once durable), and collecting the notices for a key.
//!
//! The rules of a notice itself (its envelope, its stamp, which notice replaces which, whether a
//! record matches an announcement) live in [`crate::lockstep`]; this file moves notices around.

use std::collections::BTreeMap;
use std::time::Instant;

use serde_bytes::ByteBuf;

use super::ops::{Op, Then, Waiting};
use super::{Checks, Core, InboundId, OpId, Peer, Reply, RequestFailure, WriteOp};
use crate::api::Route;
use crate::api::{AnnounceError, AnnounceOk};
use crate::lockstep::{SignedNotice, decode_notices};
use crate::wire::{Request, Response};

/// An announcement waiting for its peers' answers.
#[derive(Debug)]
pub(super) struct Announcing {
    seq: u64,
    outstanding: usize,
    accepted: usize,
    refused: usize,
}

/// A collection of the notices for a key: those found so far, and the peers still to answer.
#[derive(Debug)]
pub(super) struct NoticesQuery {
    key: Vec<u8>,
    found: Vec<SignedNotice>,
    outstanding: usize,
}

/// How to undo a notice kept in memory whose write failed.
#[derive(Debug)]
pub(super) struct NoticeUndo {
    notice: SignedNotice,
    /// The notice it replaced for the same key and publisher.
    previous: Option<SignedNotice>,
    /// Notices dropped from the book to make room.
    dropped: Vec<SignedNotice>,
}

impl<T: Peer, C: Checks<T>> Core<T, C> {
    /// Keeps `notice` in the book; returns the writes that make it durable and how to undo it.
    fn keep_notice(
        &mut self,
        notice: SignedNotice,
    ) -> Result<(Vec<WriteOp<T>>, NoticeUndo), crate::lockstep::LockstepError> {
        let n = notice.notice();
        let previous = self.book.get(&n.key, &n.publisher).cloned();
        let dropped = self.book.insert(notice.clone())?;
        let mut writes: Vec<WriteOp<T>> = dropped
            .iter()
            .map(|d| WriteOp::RemoveNotice {
                key: d.notice().key.clone(),
                publisher: d.notice().publisher.to_bytes(),
            })
            .collect();
        writes.push(WriteOp::PutNotice {
            key: n.key.clone(),
            publisher: n.publisher.to_bytes(),
            envelope: notice.as_bytes().to_vec(),
        });
        Ok((
            writes,
            NoticeUndo {
                notice,
                previous,
                dropped,
            },
        ))
    }

    /// Takes back a notice whose write failed: what it replaced or pushed out is kept again.
    pub(super) fn undo_notice(&mut self, undo: NoticeUndo) {
        if !self.book.remove_if_kept(&undo.notice) {
            return;
        }
        for notice in undo.previous.into_iter().chain(undo.dropped) {
            // The book had room for them before; a refusal means a newer notice came since.
            let _ = self.book.insert(notice);
        }
    }

    /// Announces `value` for `key`: the notice is made and kept (so this node's later puts are
    /// checked against it, and a put without a sequence takes the announced one), then sent to
    /// the closest peers once durable.
    pub(super) fn start_announce(
        &mut self,
        now: Instant,
        unix: u64,
        op: OpId,
        key: Vec<u8>,
        value: Vec<u8>,
        seq: Option<u64>,
    ) {
        let seq = seq.unwrap_or_else(|| self.next_seq(&key, unix));
        let feed = self.next_feed_pos(unix);
        let stamps = &self.config.stamps;
        let rng = &mut self.rng;
        let made =
            SignedNotice::create_with(&self.key, &key, &value, seq, unix, Some(feed), stamps, rng);
        let kept = made.and_then(|notice| Ok((notice.clone(), self.keep_notice(notice)?)));
        let (notice, (mut writes, undo)) = match kept {
            Ok(kept) => kept,
            Err(e) => {
                self.release_feed_pos(feed);
                return self.reply(op, Reply::Announce(Err(e.into())));
            }
        };
        // The raised sequence floor and feed position are written with the notice, in one
        // commit.
        let _ = self.advance_seq_floor(seq);
        writes.push(WriteOp::Meta(self.meta));
        let waiting = Waiting::OwnNotice(Box::new(notice), undo);
        self.ops.insert(op, Op::Committing(Box::new(waiting)));
        self.write(now, unix, writes, Some(op));
    }

    /// Sends an announcement to up to `k` of `peers`.
    pub(super) fn send_notice(
        &mut self,
        now: Instant,
        op: OpId,
        notice: SignedNotice,
        peers: Vec<T>,
    ) {
        let k = self.config.replication_factor.get();
        let local = self.local;
        let peers: Vec<T> = peers.into_iter().filter(|p| *p != local).take(k).collect();
        if peers.is_empty() {
            return self.reply(op, Reply::Announce(Err(AnnounceError::NoPeers)));
        }
        for peer in &peers {
            let request = Request::Announce(ByteBuf::from(notice.as_bytes().to_vec()));
            self.send(now, op, *peer, request);
        }
        let announcing = Announcing {
            seq: notice.notice().seq,
            outstanding: peers.len(),
            accepted: 0,
            refused: 0,
        };
        self.ops.insert(op, Op::Announce(announcing));
    }

    /// A peer's answer to an announcement.
    pub(super) fn on_announce_answer(
        &mut self,
        op: OpId,
        result: Result<Response, RequestFailure>,
    ) {
        let Some(Op::Announce(a)) = self.ops.get_mut(op) else {
            return;
        };
        if matches!(result, Ok(Response::Accepted)) {
            a.accepted += 1;
        } else {
            a.refused += 1;
        }
        a.outstanding = a.outstanding.saturating_sub(1);
        if a.outstanding > 0 {
            return;
        }
        let Some(Op::Announce(a)) = self.ops.remove(op) else {
            return;
        };
        let tried = a.accepted + a.refused;
        let reply = if a.accepted == 0 {
            Err(AnnounceError::NoneAccepted { tried })
        } else {
            Ok(AnnounceOk {
                seq: a.seq,
                accepted: a.accepted,
                refused: a.refused,
            })
        };
        self.reply(op, Reply::Announce(reply));
    }

    /// An admitted peer's announcement: checked (signature, a fresh stamp, not stale) and kept,
    /// answered `Accepted` once durable.
    pub(super) fn serve_announce(
        &mut self,
        now: Instant,
        unix: u64,
        id: InboundId,
        envelope: &[u8],
    ) {
        let kept = SignedNotice::validate(envelope, unix, &mut self.stamps)
            .and_then(|notice| self.keep_notice(notice));
        match kept {
            Ok((writes, undo)) => {
                let op = self.ops.next_op();
                let waiting = Waiting::NoticeIn { inbound: id, undo };
                self.ops.insert(op, Op::Committing(Box::new(waiting)));
                self.write(now, unix, writes, Some(op));
            }
            Err(e) => self.respond(id, Response::refused(e.to_string())),
        }
    }

    /// Collects the notices for `key`: this node's, then those of the closest peers.
    pub(super) fn start_notices(&mut self, now: Instant, unix: u64, op: OpId, key: Vec<u8>) {
        let found = self.book.for_key(&key).into_iter().cloned().collect();
        let query = NoticesQuery {
            key: key.clone(),
            found,
            outstanding: 0,
        };
        self.start_lookup(now, unix, op, &key, Route::Auto, Then::Notices(query));
    }

    /// Asks up to `k` of `peers` for their notices on the query's key.
    pub(super) fn ask_notices(
        &mut self,
        now: Instant,
        op: OpId,
        mut query: NoticesQuery,
        peers: Vec<T>,
    ) {
        let k = self.config.replication_factor.get();
        let local = self.local;
        for peer in peers.into_iter().filter(|p| *p != local).take(k) {
            let request = Request::Notices(ByteBuf::from(query.key.clone()));
            self.send(now, op, peer, request);
            query.outstanding += 1;
        }
        if query.outstanding == 0 {
            return self.finish_notices(op, query);
        }
        self.ops.insert(op, Op::Notices(query));
    }

    /// A peer's notices for a collection: each must have paid for itself when it was made.
    pub(super) fn on_notices_answer(
        &mut self,
        unix: u64,
        op: OpId,
        result: Result<Response, RequestFailure>,
    ) {
        let Some(Op::Notices(query)) = self.ops.get_mut(op) else {
            return;
        };
        if let Ok(Response::Notices(list)) = result {
            let stamps = &self.stamps;
            query.found.extend(
                decode_notices(&query.key, &list)
                    .into_iter()
                    .filter(|n| n.check_kept(unix, stamps).is_ok()),
            );
        }
        query.outstanding = query.outstanding.saturating_sub(1);
        if query.outstanding == 0
            && let Some(Op::Notices(query)) = self.ops.remove(op)
        {
            self.finish_notices(op, query);
        }
    }

    /// Replies with the latest notice per publisher, newest first.
    fn finish_notices(&mut self, op: OpId, query: NoticesQuery) {
        // Ordered by publisher, so notices equally new keep one order (not a hash map's).
        let mut latest: BTreeMap<[u8; 32], SignedNotice> = BTreeMap::new();
        for n in query.found {
            let publisher = n.notice().publisher.to_bytes();
            match latest.get(&publisher) {
                Some(kept) if !n.supersedes(kept) => {}
                _ => {
                    latest.insert(publisher, n);
                }
            }
        }
        let mut list: Vec<SignedNotice> = latest.into_values().collect();
        list.sort_by_key(|n| std::cmp::Reverse((n.notice().created_at, n.notice().seq)));
        self.reply(op, Reply::Notices(Ok(list)));
    }
}
