//! Network-wide lockstep notices: every notice this node announces also goes, as the next
//! position of its feed, to the broadcast core ([`shoal_broadcast`]), which spreads it to every
//! node over epidemic broadcast trees; every notice the broadcast core delivers (once, in feed
//! order) goes to this node's subscribers.
//!
//! The broadcast overlay is fed by the membership the DHT trusts: a member takes part once it
//! is admitted (its identity proof checked) and SWIM holds it alive, exactly when it enters the
//! routing table (`members.rs`), and leaves when SWIM declares it failed or gone. Broadcast
//! messages from a peer not admitted are dropped and counted. Each notice is checked before the
//! broadcast core stores, delivers or relays it ([`SignedNotice::verify_broadcast`]).

use std::time::Instant;

use shoal_broadcast::{Event, Notice, Verify};
use shoal_pow::StampChecker;

use super::{Action, Checks, Core, Peer};
use crate::lockstep::{FeedPos, SignedNotice};

/// Most notices one [`super::Command::Feed`] answers with.
pub const MAX_FEED_REPLY: usize = 4096;

/// The broadcast core's check of a notice: the lockstep rule, at the time of the turn.
#[derive(Debug)]
pub struct NoticeCheck {
    /// Unix seconds of the current turn (set before every call into the broadcast core).
    pub(super) unix: u64,
    pub(super) stamps: StampChecker,
}

impl Verify for NoticeCheck {
    fn verify(&mut self, notice: &Notice) -> Result<(), String> {
        SignedNotice::verify_broadcast(
            &notice.publisher,
            notice.seq,
            &notice.body,
            self.unix,
            &self.stamps,
        )
        .map(drop)
        .map_err(|e| e.to_string())
    }
}

impl<T: Peer, C: Checks<T>> Core<T, C> {
    /// The next position of this node's feed (the caller writes [`super::Meta`] with the
    /// notice). A node that never published (or lost its store) begins a feed at this second.
    pub(super) fn next_feed_pos(&mut self, unix: u64) -> FeedPos {
        if self.meta.feed_epoch == 0 {
            self.meta.feed_epoch = unix.max(1);
            self.meta.feed_seq = 0;
        }
        self.meta.feed_seq += 1;
        FeedPos {
            epoch: self.meta.feed_epoch,
            seq: self.meta.feed_seq,
        }
    }

    /// Gives back the feed position of a notice that was refused or whose write failed, if no
    /// later one was taken: the feed then has no hole where that notice would have been.
    pub(super) fn release_feed_pos(&mut self, pos: FeedPos) {
        if pos.epoch == self.meta.feed_epoch && pos.seq == self.meta.feed_seq {
            self.meta.feed_seq -= 1;
        }
    }

    /// Publishes this node's durable notice to the whole network.
    pub(super) fn publish_notice(&mut self, now: Instant, notice: &SignedNotice) {
        let Some((feed, seq)) = notice.feed_id() else {
            return;
        };
        let item = Notice {
            publisher: feed,
            seq,
            body: notice.as_bytes().to_vec(),
        };
        if let Err(error) = self.broadcast.publish(now, item) {
            tracing::warn!(%error, "own notice not broadcast");
        }
        self.drain_broadcast();
    }

    /// Handles a broadcast message `from` a peer: only admitted members take part.
    pub fn handle_broadcast(
        &mut self,
        now: Instant,
        unix: u64,
        from: T,
        msg: shoal_broadcast::Message,
    ) {
        if !self.admission.is_verified(&from) {
            self.stats.broadcast_unadmitted += 1;
            return;
        }
        self.broadcast.verifier_mut().unix = unix;
        self.broadcast.handle_message(now, from, msg);
        self.drain_broadcast();
    }

    /// Runs the broadcast core's deadlines up to `now`.
    pub(super) fn broadcast_timeout(&mut self, now: Instant, unix: u64) {
        if self.broadcast.poll_timeout().is_some_and(|t| t <= now) {
            self.broadcast.verifier_mut().unix = unix;
            self.broadcast.handle_timeout(now);
            self.drain_broadcast();
        }
    }

    /// `peer` is admitted and alive: it joins the broadcast overlay's membership.
    pub(super) fn feeds_add(&mut self, now: Instant, peer: &T) {
        self.broadcast.add_member(now, *peer);
        self.drain_broadcast();
    }

    /// `peer` failed or left: the overlay replaces it if it was a neighbor.
    pub(super) fn feeds_remove(&mut self, now: Instant, peer: &T) {
        self.broadcast.remove_member(now, *peer);
        self.drain_broadcast();
    }

    /// The connection to `peer` closed: a neighbor is replaced (and asked first when it is
    /// back).
    pub(super) fn feeds_link_down(&mut self, now: Instant, peer: &T) {
        self.broadcast.link_down(now, *peer);
        self.drain_broadcast();
    }

    /// Turns what the broadcast core produced into actions.
    pub(super) fn drain_broadcast(&mut self) {
        while let Some(t) = self.broadcast.poll_transmit() {
            let addrs = self.addrs_of(&t.to);
            self.push(Action::Broadcast {
                to: t.to,
                addrs,
                msg: t.msg,
            });
        }
        while let Some(event) = self.broadcast.poll_event() {
            match event {
                Event::Deliver(notice) => match SignedNotice::decode(&notice.body) {
                    Ok(signed) => self.push(Action::Notice(Box::new(signed))),
                    // Verified when it arrived; a notice of our own is made by us.
                    Err(error) => tracing::warn!(%error, "a delivered notice does not decode"),
                },
                Event::Gap {
                    publisher,
                    from,
                    to,
                } => {
                    self.stats.feed_gaps += to.saturating_sub(from) + 1;
                    tracing::debug!(
                        feed = %hex::encode(&publisher),
                        from,
                        to,
                        "notices of a feed skipped"
                    );
                }
                Event::Invalid { from, reason } => {
                    tracing::debug!(?from, %reason, "invalid broadcast notice dropped");
                }
                Event::NeighborUp(peer) => self.push(Action::Keep { peer, keep: true }),
                Event::NeighborDown(peer) => self.push(Action::Keep { peer, keep: false }),
            }
        }
    }

    /// The notices of each named feed after the position given, as far as this node's
    /// broadcast store still holds them, in feed order; at most [`MAX_FEED_REPLY`] in all.
    pub(super) fn feed_after(&self, after: &[(Vec<u8>, u64)]) -> Vec<SignedNotice> {
        let mut out = Vec::new();
        for (feed, seq) in after {
            let left = MAX_FEED_REPLY - out.len();
            if left == 0 {
                break;
            }
            out.extend(
                self.broadcast
                    .delivered_after(feed, *seq, left)
                    .into_iter()
                    .filter_map(|n| SignedNotice::decode(&n.body).ok()),
            );
        }
        out
    }

    /// The broadcast core, for its statistics and views.
    pub fn broadcast(&self) -> &shoal_broadcast::Broadcast<T, NoticeCheck> {
        &self.broadcast
    }
}
