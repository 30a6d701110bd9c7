//! Routing: when the local view of the membership is trusted to name the peers closest to a key.
//!
//! SWIM gives every node the full verified live membership, so the `k` peers closest to a key can
//! be computed locally and asked directly, one round trip (one-hop routing, as one-hop DHTs and
//! Dynamo-style stores do). Views disagree at the edges while members join, fail or a partition
//! heals; what covers that:
//!
//! - a get asks the closest few (`alpha`) of its view and widens to the next closest only when
//!   one misses, refuses or fails, and adds the closer peers an answer names (a replica forwards
//!   the asker to closer members it knows);
//! - a replica keeps any valid record sent to it, whether or not its own view counts it among
//!   the closest;
//! - a put answers its caller only once the `alpha` closest replicas answered (besides its
//!   quorum), so a get through the same view finds what was acknowledged;
//! - a node whose view is young or unsettled uses Kademlia's iterative lookup instead
//!   ([`Core::path_for`] says when), and so does any operation that asks for it
//!   ([`Route::Iterative`]).
//!
//! Both paths are counted ([`super::CoreStats::one_hop`], [`super::CoreStats::iterative`]).

use std::time::Instant;

use super::{Checks, Core, Peer};
use crate::api::{Path, Route};

/// Why the view was last judged unsettled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unsettled {
    /// The node started (its view is the restored snapshot, or empty).
    Started,
    /// The node's join finished: the first push-pulls are still filling its view.
    Joined,
    /// A member held departed came back (a partition healing, or a false failure).
    Returned,
    /// This node refuted a suspicion of itself: others could not reach it, so it may have been
    /// cut off.
    Refuted,
}

impl<T: Peer, C: Checks<T>> Core<T, C> {
    /// The path an operation asking for `route` takes at `now`: one hop when the view is
    /// settled, iterative otherwise. The view is unsettled for [`crate::Config::view_settle`]
    /// after any [`Unsettled`] event, while Lifeguard's local health score is above half its
    /// maximum (this node is missing acknowledgements, so its view of who is alive lags), and
    /// while listed members wait for their identity checks.
    pub(super) fn path_for(&self, now: Instant, route: Route) -> Path {
        match route {
            Route::Iterative => Path::Iterative,
            Route::Auto if self.view_settled(now) => Path::OneHop,
            Route::Auto => Path::Iterative,
        }
    }

    /// Whether the local view is settled at `now`: no [`Unsettled`] event within
    /// [`crate::Config::view_settle`], Lifeguard's local health score at most half its maximum,
    /// and no listed member waiting for its identity check (the DHT cannot use it yet, so the
    /// view it routes by lacks it). Operations then take one hop (see
    /// [`crate::api::Route::Auto`]).
    pub fn view_settled(&self, now: Instant) -> bool {
        let health = self.swim.local_health();
        let max = self.swim.config().max_local_health;
        now >= self.unsettled_until && health * 2 <= max && self.admission.checking_len() == 0
    }

    /// Marks the view unsettled from `now` for [`crate::Config::view_settle`].
    pub(super) fn unsettle(&mut self, now: Instant, why: Unsettled) {
        let until = now + self.config.view_settle;
        if until > self.unsettled_until {
            tracing::debug!(?why, "view unsettled");
            self.unsettled_until = until;
        }
    }

    /// Counts an operation's path.
    pub(super) fn count_path(&mut self, path: Path) {
        match path {
            Path::OneHop => self.stats.one_hop += 1,
            Path::Iterative => self.stats.iterative += 1,
        }
    }
}
