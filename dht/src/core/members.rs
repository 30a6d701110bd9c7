//! The SWIM membership inside the core: messages in (after admission's filter), transmits and
//! events out, the routing table kept in step with it, joins and leaves.
//!
//! A member enters the routing table when it is admitted and SWIM holds it alive (it joined, or
//! refuted a suspicion), and leaves it when SWIM declares it failed or gone; the slot it frees
//! goes to a replacement the bucket kept, or to a member found in the membership.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use shoal_swim::{Address, CommandError, CommandId, Event, Message, Payload, State};

use super::ops::{Join, Op, Timer};
use super::routing::Inserted;
use super::{
    Action, Checks, Core, JOIN_ATTEMPTS, MAX_SEEDS, Meta, OpId, Peer, Reply, SEED_DIALS, WriteOp,
};
use crate::api::{JoinError, JoinOk};

/// Admitted live members a join goes through besides its seeds, at most.
const ADMITTED_JOIN_SEEDS: usize = 8;

/// How soon after a join the routing snapshot is first saved (then every
/// [`crate::Config::routing_snapshot_interval`]).
const SNAPSHOT_AFTER_JOIN: std::time::Duration = std::time::Duration::from_secs(5);

/// A member known from elsewhere, for [`Core::bootstrap`].
#[derive(Debug, Clone)]
pub struct Known<T> {
    /// The member.
    pub peer: T,
    /// Its addresses.
    pub addrs: Vec<Address>,
    /// Its identity proof's bytes, checked before it is admitted.
    pub proof: Vec<u8>,
    /// Its incarnation, 0 if unknown.
    pub incarnation: u64,
}

impl<T: Peer, C: Checks<T>> Core<T, C> {
    /// Hands an admitted peer's SWIM message to the membership, after admission's filter.
    pub(super) fn pass_to_swim(&mut self, now: Instant, unix: u64, from: T, mut msg: Message<T>) {
        self.filter_updates(now, unix, from, &mut msg);
        let joining = matches!(msg.payload, Payload::PushPull { join: true, .. });
        self.stats.swim_received += 1;
        self.swim.handle_message(now, from, msg);
        self.drain_swim_answering(now, unix, joining.then_some(from));
    }

    /// Turns what the membership produced into actions and applies its events: transmits to
    /// send, members to route or unroute, commands answered. Persists a raised incarnation.
    pub(super) fn drain_swim(&mut self, now: Instant, unix: u64) {
        self.drain_swim_answering(now, unix, None);
    }

    /// [`Core::drain_swim`] right after the membership took a join from `joiner`: its answer,
    /// this node's table, carries every member's proof ([`Core::attach_proofs`]).
    fn drain_swim_answering(&mut self, now: Instant, unix: u64, joiner: Option<T>) {
        loop {
            let mut progress = false;
            while let Some(t) = self.swim.poll_transmit() {
                progress = true;
                // A seed SWIM joined through before its proof was in hand, refused since: it
                // is told nothing more (SWIM keeps its seeds to push-pull with them later),
                // unless it showed a valid proof after all.
                if self.admission.is_refused(&t.to) && !self.admission.is_listed(&t.to) {
                    continue;
                }
                let addrs = self.addrs_of(&t.to);
                let mut msg = t.msg;
                self.attach_proofs(now, &t.to, &mut msg, joiner == Some(t.to));
                self.push(Action::Swim {
                    to: t.to,
                    addrs,
                    msg,
                });
            }
            while let Some(event) = self.swim.poll_event() {
                progress = true;
                self.on_swim_event(now, unix, event);
            }
            if !progress {
                break;
            }
        }
        let incarnation = self.swim.incarnation();
        if incarnation > self.meta.incarnation {
            self.unsettle(now, super::Unsettled::Refuted);
            self.meta.incarnation = incarnation;
            let meta: Meta = self.meta;
            self.write(now, unix, vec![WriteOp::Meta(meta)], None);
        }
    }

    fn on_swim_event(&mut self, now: Instant, unix: u64, event: Event<T>) {
        if let Some((member, state, incarnation)) = event.change() {
            self.push(Action::MemberChanged {
                member: *member,
                state,
                incarnation,
            });
        }
        match event {
            Event::Joined { member, .. } | Event::Refuted { member, .. } => {
                self.route(now, &member);
            }
            Event::Failed { member, .. } | Event::Left { member, .. } => {
                self.unroute(now, &member);
                self.on_departed(now, &member);
                self.push(Action::Disconnect { peer: member });
            }
            Event::Suspected { .. } => {}
            Event::JoinFinished { id, result } => self.on_join_finished(now, unix, id, result),
            Event::LeaveFinished { id, .. } => self.on_leave_finished(id),
        }
    }

    /// Whether SWIM holds `peer` alive or suspect.
    pub(super) fn is_live(&self, peer: &T) -> bool {
        self.swim
            .member(peer)
            .is_some_and(|m| matches!(m.state, State::Alive | State::Suspect))
    }

    /// Offers `peer` a slot in the routing table, and a place in the broadcast overlay, if it
    /// is admitted and SWIM holds it alive.
    pub(super) fn route(&mut self, now: Instant, peer: &T) {
        if self.admission.is_verified(peer) && self.is_live(peer) {
            self.table.insert(*peer);
            self.feeds_add(now, peer);
        }
    }

    /// Takes `peer` out of the routing table and the broadcast overlay; a freed slot goes to a
    /// replacement still admitted and alive, or to one found in the membership.
    pub(super) fn unroute(&mut self, now: Instant, peer: &T) {
        self.feeds_remove(now, peer);
        let admission = &self.admission;
        let swim = &self.swim;
        let removed = self.table.remove(peer, |p| {
            admission.is_verified(p)
                && swim
                    .member(p)
                    .is_some_and(|m| matches!(m.state, State::Alive | State::Suspect))
        });
        let Some(bucket) = removed.short else {
            return;
        };
        let mut candidates: Vec<T> = self
            .verified_live()
            .filter(|p| p != peer && self.table.in_bucket(&p.point(), bucket))
            .collect();
        // In peer order, not the membership's hash order: it decides who gets the free slots.
        candidates.sort_unstable();
        for candidate in candidates {
            if self.table.insert(candidate) == Inserted::Full {
                break;
            }
        }
    }

    /// Admits `members` on their proofs (each checked) and makes them live members at once, at
    /// the incarnations given, without gossip: a simulator's converged start, or a node
    /// restoring a member list it had checked before (at incarnation 0 when it does not know
    /// them: any news is then newer). Returns how many were added.
    pub fn bootstrap(
        &mut self,
        now: Instant,
        unix: u64,
        members: impl IntoIterator<Item = Known<T>>,
    ) -> usize {
        let mut admitted = Vec::new();
        for Known {
            peer,
            addrs,
            proof,
            incarnation,
        } in members
        {
            if peer == self.local || !self.permitted(&peer) {
                continue;
            }
            let Ok(proof) = self.checks.verify(now, &peer, &proof) else {
                continue;
            };
            if self.admission.insert_verified(peer, proof) {
                self.stats.verified += 1;
            }
            let addrs: Arc<[Address]> = if addrs.is_empty() {
                self.empty_addrs.clone()
            } else {
                addrs.into()
            };
            admitted.push((peer, addrs, incarnation));
        }
        let peers: Vec<T> = admitted.iter().map(|(p, _, _)| *p).collect();
        let added = self.swim.restore_at(admitted);
        for peer in &peers {
            self.route(now, peer);
        }
        self.drain_swim(now, unix);
        added
    }

    /// Starts a join through `seeds` and the peers of the restored routing snapshot (so a
    /// restarted node whose seeds are down gets in through the members it knew): seeds not
    /// admitted yet are dialed so the gate checks them, then SWIM joins through those admitted.
    pub(super) fn start_join(
        &mut self,
        now: Instant,
        unix: u64,
        op: OpId,
        seeds: Vec<(T, Vec<Address>)>,
    ) {
        // Live members this node admitted already join it too, whatever their addresses: a
        // node restarted while its seeds are down is found again by the members that knew it,
        // which may announce no address it could give as a seed, over connections they opened.
        let admitted: Vec<(T, Vec<Address>)> = self
            .verified_live()
            .take(ADMITTED_JOIN_SEEDS)
            .map(|p| (p, Vec::new()))
            .collect();
        let seeds = seeds
            .into_iter()
            .chain(self.snapshot.iter().cloned())
            .chain(admitted);
        let mut by_peer: Vec<(T, Vec<Address>)> = Vec::new();
        let mut index: HashMap<T, usize> = HashMap::new();
        for (peer, addrs) in seeds {
            if peer == self.local {
                continue;
            }
            match index.get(&peer) {
                Some(&i) => by_peer[i].1.extend(addrs),
                None => {
                    index.insert(peer, by_peer.len());
                    by_peer.push((peer, addrs));
                }
            }
        }
        let mut waiting = Vec::new();
        for (peer, addrs) in &by_peer {
            if !addrs.is_empty()
                && (self.seed_addrs.len() < MAX_SEEDS || self.seed_addrs.contains_key(peer))
            {
                self.seed_addrs.insert(*peer, addrs.clone().into());
            }
            if !self.admission.is_verified(peer) {
                waiting.push(*peer);
                self.push(Action::Dial {
                    peer: *peer,
                    addrs: addrs.clone(),
                });
            }
        }
        let tried = by_peer.len();
        // A gate check that never ends (a rate-limited exchange is shed without a report) must
        // not hold the join forever.
        let give_up = now + 2 * self.config.gate_timeout;
        let redial_at = self.config.seed_redial.map(|after| now + after);
        self.ops.insert(
            op,
            Op::Join(Join {
                seeds: by_peer,
                waiting,
                tried,
                swim: None,
                attempts: 0,
                dials: 1,
                redial_at,
                retry_at: None,
                give_up,
            }),
        );
        self.advance_join(now, unix, op);
        self.schedule_join(op);
    }

    /// Sets join `op`'s deadline to the soonest thing it waits for: a retry of SWIM's join, the
    /// next dial of the seeds still awaited, or the end of its patience with them.
    fn schedule_join(&mut self, op: OpId) {
        let Some(Op::Join(join)) = self.ops.get_mut(op) else {
            return;
        };
        let waiting = !join.waiting.is_empty();
        let due = [
            join.retry_at,
            join.redial_at.filter(|_| waiting),
            waiting.then_some(join.give_up),
        ]
        .into_iter()
        .flatten()
        .min();
        if let Some(at) = due {
            self.ops.set_deadline(op, at);
        }
    }

    /// A join's timer fired: a failed SWIM join is tried again, seeds still awaited are dialed
    /// once more while dials remain ([`Action::Redial`]), and once the join's patience with them
    /// is spent it goes on with the seeds whose proofs are in hand, or fails without any.
    pub(super) fn on_join_timer(&mut self, now: Instant, unix: u64, op: OpId) {
        let Some(Op::Join(join)) = self.ops.get_mut(op) else {
            return;
        };
        if join.retry_at.is_some_and(|at| at <= now) {
            join.retry_at = None;
        }
        let mut redials = Vec::new();
        if now >= join.give_up {
            join.waiting.clear();
        } else if join.redial_at.is_some_and(|at| at <= now) && !join.waiting.is_empty() {
            join.dials += 1;
            join.redial_at = match self.config.seed_redial {
                Some(after) if join.dials < SEED_DIALS => Some(now + after),
                _ => None,
            };
            redials = join
                .seeds
                .iter()
                .filter(|(p, addrs)| join.waiting.contains(p) && !addrs.is_empty())
                .map(|(peer, addrs)| Action::Redial {
                    peer: *peer,
                    addrs: addrs.clone(),
                })
                .collect();
        }
        for action in redials {
            self.push(action);
        }
        self.advance_join(now, unix, op);
        self.schedule_join(op);
    }

    /// Starts SWIM's join of `op` through every seed whose proof is in hand or still awaited,
    /// unless one is under way or a retry waits for fresh connections; reports failure once no
    /// seed is either.
    ///
    /// The join's push-pull does not wait for the seed's proof: it goes out with the connection
    /// being made, beside the identity exchange, and each side holds the other's SWIM message
    /// until the sender's proof is in hand ([`Core::handle_swim`]). A join then costs one
    /// exchange on a fresh connection instead of two in turn (the proofs, then the push-pull),
    /// each exposed to a lost segment's retransmission and to a seed busy with a whole cluster
    /// joining at once.
    pub(super) fn advance_join(&mut self, now: Instant, unix: u64, op: OpId) {
        let Some(Op::Join(join)) = self.ops.get_mut(op) else {
            return;
        };
        let admission = &self.admission;
        let waiting = &join.waiting;
        join.seeds
            .retain(|(p, _)| admission.is_listed(p) || waiting.contains(p));
        if join.seeds.is_empty() {
            let tried = join.tried;
            self.ops.remove(op);
            self.reply(op, Reply::Join(Err(JoinError::NoSeedVerified { tried })));
            return;
        }
        if join.swim.is_some() || join.retry_at.is_some() {
            return;
        }
        let seeds: Vec<T> = join.seeds.iter().map(|(p, _)| *p).collect();
        let id = self.swim.join(now, seeds);
        if let Some(Op::Join(join)) = self.ops.get_mut(op) {
            join.swim = Some(id);
        }
        self.drain_swim(now, unix);
    }

    /// A seed's dial or gate check ended (either way): joins waiting for it go on.
    pub(super) fn on_seed_settled(&mut self, now: Instant, unix: u64, peer: &T) {
        let mut joins: Vec<OpId> = self
            .ops
            .iter()
            .filter_map(|(id, op)| match op {
                Op::Join(j) if j.waiting.contains(peer) => Some(*id),
                _ => None,
            })
            .collect();
        // Oldest first, not in the hash map's order.
        joins.sort_unstable();
        for op in joins {
            if let Some(Op::Join(j)) = self.ops.get_mut(op) {
                j.waiting.retain(|p| p != peer);
            }
            self.advance_join(now, unix, op);
        }
    }

    fn on_join_finished(
        &mut self,
        now: Instant,
        unix: u64,
        id: CommandId,
        result: Result<usize, CommandError>,
    ) {
        let Some(op) = self.ops.iter().find_map(|(op, what)| match what {
            Op::Join(j) if j.swim == Some(id) => Some(*op),
            _ => None,
        }) else {
            return;
        };
        let Some(Op::Join(mut join)) = self.ops.remove(op) else {
            return;
        };
        match result {
            Ok(members) => {
                self.unsettle(now, super::Unsettled::Joined);
                // The members a join brought are worth keeping before a whole snapshot interval
                // passed: a node that crashes in its first minute then rejoins through them
                // even if its seeds are down. Their checks get a moment first (only admitted
                // members are saved).
                self.timers
                    .set_by(Timer::Snapshot, now + SNAPSHOT_AFTER_JOIN);
                let admission = &self.admission;
                let verified_seeds = join
                    .seeds
                    .iter()
                    .filter(|(p, _)| admission.is_listed(p))
                    .count();
                self.reply(
                    op,
                    Reply::Join(Ok(JoinOk {
                        verified_seeds,
                        members,
                    })),
                );
            }
            Err(error) => {
                // An attempt counts once a seed's proof was in hand when it failed: before that,
                // its push-pull waited on connections still being made, which the seeds' own
                // dials and the join's patience with them bound.
                let admission = &self.admission;
                if join.seeds.iter().any(|(p, _)| admission.is_listed(p)) {
                    join.attempts += 1;
                }
                if join.attempts >= JOIN_ATTEMPTS {
                    return self.reply(op, Reply::Join(Err(JoinError::Swim(error))));
                }
                // The seed may not have admitted us yet when our first push-pull came in, or
                // the push-pull (or its answer) sits behind a segment TCP retransmits with
                // backoff: the next attempt goes on fresh connections, once they had time.
                tracing::debug!(%error, "SWIM join failed, retrying");
                join.swim = None;
                for (peer, addrs) in &join.seeds {
                    if self.admission.is_listed(peer) {
                        self.push(Action::Reconnect {
                            peer: *peer,
                            addrs: addrs.clone(),
                        });
                    }
                }
                join.retry_at = self.config.seed_redial.map(|wait| now + wait);
                self.ops.insert(op, Op::Join(join));
                self.advance_join(now, unix, op);
                self.schedule_join(op);
            }
        }
    }

    fn on_leave_finished(&mut self, id: CommandId) {
        let Some(op) = self.ops.iter().find_map(|(op, what)| match what {
            Op::Leave(cmd) if *cmd == id => Some(*op),
            _ => None,
        }) else {
            return;
        };
        self.ops.remove(op);
        self.reply(op, Reply::Left);
    }
}
