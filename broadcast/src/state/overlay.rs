//! The HyParView-style overlay: the member list, the active and passive views, neighbor
//! requests, replacement of failed neighbors and rotation. See the parent module's docs.

use std::time::Instant;

use rand::Rng;

use super::{Broadcast, Event, Neighbor, Pending, Purpose, jitter};
use crate::message::Message;
use crate::{Peer, Verify};

impl<T: Peer, V: Verify> Broadcast<T, V> {
    // ----- membership commands -----

    /// The peer sampling service reports `peer` as a member. Members beyond `max_members` are
    /// dropped and counted. A member that was our neighbor until its link failed is asked to
    /// be one again at once.
    pub fn add_member(&mut self, now: Instant, peer: T) {
        let now = self.clock(now);
        if peer == self.me || self.member_index.contains_key(&peer) {
            return;
        }
        if self.members.len() >= self.config.max_members {
            self.stats.drops.members += 1;
            return;
        }
        self.member_index.insert(peer.clone(), self.members.len());
        self.members.push(peer.clone());
        if let Some(i) = self.lost.iter().position(|p| *p == peer) {
            self.lost.remove(i);
            if !self.reconnect.contains(&peer) {
                if self.reconnect.len() >= self.config.passive_max {
                    self.reconnect.pop_front();
                }
                self.reconnect.push_back(peer);
            }
            if self.config.rotate_interval.is_some() {
                self.next_rotate = Some(now);
            }
        } else if !self.is_active(&peer) && !self.pending.iter().any(|p| p.id == peer) {
            // Keep the passive view a uniform sample of the members: once it is full, the
            // n-th member replaces a random entry with probability passive_max / n.
            if self.passive.len() < self.config.passive_max {
                self.passive.push(peer);
            } else {
                let n = self.members.len();
                if self.rng.gen_range(0..n) < self.config.passive_max {
                    let i = self.rng.gen_range(0..self.passive.len());
                    self.passive[i] = peer;
                }
            }
        }
        if self.active.len() + self.pending.len() < self.target() {
            self.next_fill = Some(self.next_fill.map_or(now, |t| t.min(now)));
        }
    }

    /// The peer sampling service reports that `peer` failed or left. If it was an active
    /// neighbor, it is replaced from the passive view at once.
    pub fn remove_member(&mut self, now: Instant, peer: T) {
        let now = self.clock(now);
        if let Some(i) = self.member_index.remove(&peer) {
            self.members.swap_remove(i);
            if let Some(moved) = self.members.get(i) {
                self.member_index.insert(moved.clone(), i);
            }
        }
        self.passive.retain(|p| *p != peer);
        self.reconnect.retain(|p| *p != peer);
        self.pending.retain(|p| p.id != peer);
        if self.is_active(&peer) {
            self.drop_active(&peer, true, false);
        }
        self.fill_active(now);
    }

    /// The transport lost its connection to `peer`. If it was an active neighbor, it is
    /// replaced from the passive view at once, and asked first if it comes back.
    pub fn link_down(&mut self, now: Instant, peer: T) {
        let now = self.clock(now);
        self.passive.retain(|p| *p != peer);
        let was_pending = self.pending.iter().any(|p| p.id == peer);
        self.pending.retain(|p| p.id != peer);
        if self.is_active(&peer) {
            self.drop_active(&peer, true, false);
            self.fill_active(now);
        } else if was_pending {
            self.fill_active(now);
        }
    }

    // ----- messages -----

    pub(super) fn on_neighbor(&mut self, now: Instant, from: T, high_priority: bool) {
        if self.is_active(&from) {
            self.send(
                from,
                Message::NeighborReply { accepted: true },
                Purpose::Other,
            );
            return;
        }
        let cap = self.capacity();
        if self.active.len() >= cap && high_priority && !self.active.is_empty() {
            let i = self.rng.gen_range(0..self.active.len());
            let victim = self.active[i].id.clone();
            self.stats.neighbors.evictions += 1;
            self.drop_active(&victim, false, true);
        }
        if self.active.len() < cap {
            self.add_active(now, from.clone());
            self.send(
                from,
                Message::NeighborReply { accepted: true },
                Purpose::Other,
            );
        } else {
            self.send(
                from,
                Message::NeighborReply { accepted: false },
                Purpose::Other,
            );
        }
    }

    pub(super) fn on_neighbor_reply(&mut self, now: Instant, from: T, accepted: bool) {
        let pending = self
            .pending
            .iter()
            .position(|p| p.id == from)
            .map(|i| self.pending.swap_remove(i));
        if !accepted {
            if pending.is_some() {
                self.stats.neighbors.refused += 1;
                self.cool(now, from);
                self.schedule_fill(now);
            }
            return;
        }
        if self.is_active(&from) {
            // Both asked each other at once: each accepted the other's request, so neither
            // opened the catch-up as the acceptor. Both open it now; the second is cheap.
            if pending.is_some() {
                self.stats.neighbors.accepted += 1;
                self.send_clock(from, true, Vec::new());
            }
            return;
        }
        let Some(p) = pending else {
            // A late answer to a request that timed out: take it if we still need neighbors.
            if self.active.len() < self.target() {
                self.add_active(now, from.clone());
                self.send_clock(from, true, Vec::new());
            } else {
                self.send(from, Message::Disconnect, Purpose::Other);
            }
            return;
        };
        self.stats.neighbors.accepted += 1;
        if p.rotation && self.active.len() >= self.target() && !self.active.is_empty() {
            let i = self.rng.gen_range(0..self.active.len());
            let old = self.active[i].id.clone();
            self.drop_active(&old, false, true);
        }
        if self.active.len() >= self.capacity() {
            self.send(from, Message::Disconnect, Purpose::Other);
            return;
        }
        self.add_active(now, from.clone());
        self.send_clock(from, true, Vec::new());
    }

    pub(super) fn on_disconnect(&mut self, now: Instant, from: T) {
        let was_pending = self.pending.iter().any(|p| p.id == from);
        self.pending.retain(|p| p.id != from);
        self.cool(now, from.clone());
        if self.is_active(&from) {
            self.drop_active(&from, false, false);
            self.fill_active(now);
        } else if was_pending {
            self.schedule_fill(now);
        }
    }

    // ----- timers -----

    /// Fails the neighbor requests whose answer is overdue and tries other candidates.
    pub(super) fn expire_pending(&mut self, now: Instant) {
        if !self.pending.iter().any(|p| p.deadline <= now) {
            return;
        }
        let (expired, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut self.pending)
            .into_iter()
            .partition(|p| p.deadline <= now);
        self.pending = kept;
        self.stats.neighbors.timeouts += expired.len() as u64;
        for p in expired {
            self.cool(now, p.id);
        }
        self.fill_active(now);
    }

    /// Swaps one neighbor for a lost neighbor that came back, or else for a random passive
    /// member.
    pub(super) fn rotate(&mut self, now: Instant) {
        let interval = self.config.rotate_interval;
        self.next_rotate = interval.map(|r| now + r / 2 + jitter(&mut self.rng, r));
        if self.pending.iter().any(|p| p.rotation) {
            return;
        }
        if self.active.len() < self.target() {
            // Filling takes the reconnections first.
            self.fill_active(now);
            return;
        }
        let Some(peer) = self.take_candidate(now) else {
            return;
        };
        if !self.reconnect.is_empty() {
            // More to reconnect: soon, not in a whole interval.
            self.next_rotate = Some(now + self.config.neighbor_timeout / 4);
        }
        self.stats.neighbors.rotations += 1;
        self.request(now, peer, false, true);
    }

    // ----- internals -----

    /// The active view's target for the members known.
    pub(super) fn target(&self) -> usize {
        self.config.active_target(self.members.len())
    }

    /// How many neighbors we accept when asked: the target plus one.
    fn capacity(&self) -> usize {
        self.target() + 1
    }

    /// Sends neighbor requests until the active view and the requests in flight reach the
    /// target, or candidates run out; schedules a retry while the view is short.
    pub(super) fn fill_active(&mut self, now: Instant) {
        let target = self.target();
        while self.active.len() + self.pending.len() < target {
            let Some(peer) = self.take_candidate(now) else {
                break;
            };
            let high = self.active.is_empty() && !self.pending.iter().any(|p| p.high_priority);
            self.request(now, peer, high, false);
        }
        if self.active.len() < target {
            self.schedule_fill(now);
        }
    }

    fn schedule_fill(&mut self, now: Instant) {
        let at = now + self.config.neighbor_timeout / 4;
        self.next_fill = Some(self.next_fill.map_or(at, |t| t.min(at)));
    }

    fn request(&mut self, now: Instant, peer: T, high_priority: bool, rotation: bool) {
        self.stats.neighbors.requests += 1;
        self.pending.push(Pending {
            id: peer.clone(),
            deadline: now + self.config.neighbor_timeout,
            high_priority,
            rotation,
        });
        self.send(peer, Message::Neighbor { high_priority }, Purpose::Other);
    }

    /// Keeps `peer` from being asked again for a while: it refused, did not answer, or dropped
    /// us, and asking it again at once would likely end the same way.
    fn cool(&mut self, now: Instant, peer: T) {
        if self.cooldown.len() >= self.config.passive_max {
            self.cooldown.pop_front();
        }
        self.cooldown
            .push_back((peer, now + self.config.neighbor_timeout * 4));
    }

    fn cooling(&self, peer: &T) -> bool {
        self.cooldown.iter().any(|(p, _)| p == peer)
    }

    /// The next peer to ask: a lost neighbor that came back, else a random passive member not
    /// cooling down (refilling the passive view from the members first).
    fn take_candidate(&mut self, now: Instant) -> Option<T> {
        while self
            .cooldown
            .front()
            .is_some_and(|(_, until)| *until <= now)
        {
            self.cooldown.pop_front();
        }
        while let Some(p) = self.reconnect.pop_front() {
            if self.member_index.contains_key(&p)
                && !self.is_active(&p)
                && !self.pending.iter().any(|x| x.id == p)
            {
                self.passive.retain(|x| *x != p);
                return Some(p);
            }
        }
        self.refill_passive();
        let ready: Vec<usize> = (0..self.passive.len())
            .filter(|&i| !self.cooling(&self.passive[i]))
            .collect();
        if ready.is_empty() {
            return None;
        }
        let i = ready[self.rng.gen_range(0..ready.len())];
        Some(self.passive.swap_remove(i))
    }

    /// Tops the passive view up with random members that are in no view and not lost.
    fn refill_passive(&mut self) {
        let want = self.config.passive_max.saturating_sub(self.passive.len());
        if want == 0 || self.members.is_empty() {
            return;
        }
        // Random draws, a bounded number: with few members most draws hit a view, and an
        // exhaustive scan would cost the whole list on every call.
        for _ in 0..want * 3 {
            if self.passive.len() >= self.config.passive_max {
                break;
            }
            let m = &self.members[self.rng.gen_range(0..self.members.len())];
            if self.passive.contains(m)
                || self.active.iter().any(|n| n.id == *m)
                || self.pending.iter().any(|p| p.id == *m)
                || self.lost.contains(m)
                || self.cooling(m)
            {
                continue;
            }
            let m = m.clone();
            self.passive.push(m);
        }
    }

    pub(super) fn add_active(&mut self, now: Instant, peer: T) {
        if self.is_active(&peer) {
            return;
        }
        self.passive.retain(|p| *p != peer);
        self.pending.retain(|p| p.id != peer);
        self.lost.retain(|p| *p != peer);
        self.reconnect.retain(|p| *p != peer);
        self.active.push(Neighbor {
            id: peer.clone(),
            eager: true,
            last_heard: now,
            grafted: None,
        });
        self.stats.neighbors.up += 1;
        tracing::debug!(peer = ?peer, active = self.active.len(), "neighbor up");
        self.emit(Event::NeighborUp(peer));
    }

    /// Drops `peer` from the active view. A lost link is remembered for reconnection; a
    /// voluntary drop puts the peer in the passive view (telling it when `tell`).
    pub(super) fn drop_active(&mut self, peer: &T, lost: bool, tell: bool) {
        let Some(i) = self.active.iter().position(|n| n.id == *peer) else {
            return;
        };
        let n = self.active.swap_remove(i);
        // The tree kept the neighbor up to date while the link was up: take it to hold what we
        // held a little before we last heard from it, so that a catch-up after reconnection
        // names only what changed since.
        if let Some(t) = n.last_heard.checked_sub(self.config.catchup_settle)
            && let Some(v) = self.store.version_at(t)
        {
            self.peer_clocks.raise(n.id.clone(), v);
        }
        self.wants.remove(peer);
        if lost {
            if self.lost.len() >= self.config.passive_max {
                self.lost.pop_front();
            }
            self.lost.push_back(n.id.clone());
        } else if self.member_index.contains_key(peer) && !self.passive.contains(peer) {
            if self.passive.len() >= self.config.passive_max && !self.passive.is_empty() {
                let j = self.rng.gen_range(0..self.passive.len());
                self.passive.swap_remove(j);
            }
            self.passive.push(n.id.clone());
        }
        if tell {
            self.send(peer.clone(), Message::Disconnect, Purpose::Other);
        }
        self.stats.neighbors.down += 1;
        tracing::debug!(peer = ?peer, lost, active = self.active.len(), "neighbor down");
        self.emit(Event::NeighborDown(n.id));
    }
}
