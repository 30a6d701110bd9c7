//! Notices stored per feed, their in-order delivery, the catch-up index and the pull window.
//!
//! # Delivery order
//!
//! Each feed has a position, the next sequence number to deliver. A feed's sequence number 1
//! sets it at once. Any other first notice waits `settle_timeout` for lower ones (the first
//! notices of a feed may arrive out of order, one of them by a slower repair), then the lowest
//! one seen sets it: a node that meets a feed in the middle starts there. A notice at the
//! position is delivered with every stored notice that follows
//! it without a hole; a notice above it is held (stored, relayed, not yet delivered) and arms
//! the feed's gap timer; a notice below it is stored and relayed but never delivered. When the
//! gap timer fires, or when more than `max_held` notices wait, every held notice is delivered
//! in order and each hole skipped is reported as a gap. A sequence number is therefore
//! delivered at most once, and in order.
//!
//! # Eviction
//!
//! Three bounds, each evicting what is least likely to be asked for again:
//! - `max_notices_per_feed`: the feed's lowest sequence numbers go first (they are the oldest
//!   of the feed, and no peer still catching up is likely to lack them alone);
//! - `max_store_bytes`: the lowest notice of the feed that changed least recently goes first,
//!   until the store fits; the feed keeps its position, so nothing is delivered twice;
//! - `max_feeds`: the feed that changed least recently is forgotten with its position (a
//!   notice of it later counts as news). Forgetting a whole feed instead of trimming all feeds
//!   keeps active feeds complete, which is what catch-up serves.
//!
//! # Catch-up index
//!
//! A version counter is bumped at every store; each feed remembers the version of its last
//! change, and an ordered index maps those versions to feeds, so that "the feeds changed since
//! version v" costs their number, not the number of feeds. Marks of `(time, version)` let the
//! core find the version it had at some past instant.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::time::{Duration, Instant};

use super::{Event, Stats};
use crate::bloom;
use crate::config::Config;
use crate::message::{Notice, NoticeId};

/// Bytes counted per stored notice beyond its publisher and body (maps, headers).
pub(crate) const NOTICE_OVERHEAD: usize = 96;

/// Version marks kept at most.
const MAX_MARKS: usize = 1024;

/// One stored notice.
pub(crate) struct Stored<T> {
    pub(crate) notice: Notice,
    /// Hops from its publisher when it came by gossip (0 for our own); `None` when it came in a
    /// catch-up or pull answer, which do not count hops.
    pub(crate) hops: Option<u32>,
    /// The peer whose gossip brought it (for the tree optimization).
    pub(crate) from: Option<T>,
}

struct Feed<T> {
    notices: BTreeMap<u64, Stored<T>>,
    /// Version of the last change.
    changed: u64,
    /// Highest sequence number ever stored.
    max_seq: u64,
    /// Next sequence number to deliver; `None` until the first notice.
    next: Option<u64>,
    /// Sequence numbers below this were evicted: announcements of them are ignored.
    floor: u64,
    gap_deadline: Option<Instant>,
}

/// A notice received within the pull window.
pub(crate) struct Recent {
    pub(crate) at: Instant,
    pub(crate) id: NoticeId,
    pub(crate) hash: [u64; 2],
}

/// Outcome of [`Store::insert`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Inserted {
    /// Stored (it may since have been evicted again, if it was the lowest of a full feed).
    New,
    /// Already stored.
    Duplicate,
}

pub(crate) struct Store<T> {
    feeds: HashMap<Vec<u8>, Feed<T>>,
    /// Version of each feed's last change -> the feed.
    by_change: BTreeMap<u64, Vec<u8>>,
    version: u64,
    bytes: usize,
    count: usize,
    recent: VecDeque<Recent>,
    marks: VecDeque<(Instant, u64)>,
    /// The last mark dropped from `marks` (or the start): versions at times from it on are
    /// known.
    mark_floor: (Instant, u64),
    gap_timers: BTreeSet<(Instant, Vec<u8>)>,
}

impl<T: Clone> Store<T> {
    pub(crate) fn new(now: Instant) -> Self {
        Self {
            feeds: HashMap::new(),
            by_change: BTreeMap::new(),
            version: 0,
            bytes: 0,
            count: 0,
            recent: VecDeque::new(),
            marks: VecDeque::new(),
            mark_floor: (now, 0),
            gap_timers: BTreeSet::new(),
        }
    }

    pub(crate) fn version(&self) -> u64 {
        self.version
    }

    pub(crate) fn contains(&self, id: &NoticeId) -> bool {
        self.feeds
            .get(&id.publisher)
            .is_some_and(|f| f.notices.contains_key(&id.seq))
    }

    pub(crate) fn get(&self, id: &NoticeId) -> Option<&Stored<T>> {
        self.feeds.get(&id.publisher)?.notices.get(&id.seq)
    }

    /// Whether `id` is not stored and not worth fetching: it was evicted, or delivery already
    /// passed it.
    pub(crate) fn is_stale(&self, id: &NoticeId) -> bool {
        self.feeds
            .get(&id.publisher)
            .is_some_and(|f| id.seq < f.floor || f.next.is_some_and(|n| id.seq < n))
    }

    /// Highest sequence number stored of a feed, 0 if unknown.
    pub(crate) fn max_seq(&self, publisher: &[u8]) -> u64 {
        self.feeds.get(publisher).map_or(0, |f| f.max_seq)
    }

    /// Stored notices of `publisher` above `seq`, in order.
    pub(crate) fn notices_above(
        &self,
        publisher: &[u8],
        seq: u64,
    ) -> impl Iterator<Item = &Notice> {
        self.feeds.get(publisher).into_iter().flat_map(move |f| {
            f.notices
                .range(seq.saturating_add(1)..)
                .map(|(_, s)| &s.notice)
        })
    }

    /// Stored notices of `publisher` above `seq` that delivery has passed (delivered, or
    /// skipped behind a gap and stored since), in order.
    pub(crate) fn passed_above(&self, publisher: &[u8], seq: u64) -> impl Iterator<Item = &Notice> {
        self.feeds.get(publisher).into_iter().flat_map(move |f| {
            let next = f.next.unwrap_or(0);
            let from = seq.saturating_add(1);
            f.notices
                .range(from..next.max(from))
                .map(|(_, s)| &s.notice)
        })
    }

    /// Feeds changed after version `since`, oldest change first, with their highest sequence
    /// number.
    pub(crate) fn changed_since(&self, since: u64) -> impl Iterator<Item = (&Vec<u8>, u64)> {
        self.by_change
            .range(since.saturating_add(1)..)
            .map(|(_, p)| (p, self.feeds.get(p).map_or(0, |f| f.max_seq)))
    }

    /// A version we had at `t` or earlier (so at most the version at `t`), if the marks reach
    /// back that far.
    pub(crate) fn version_at(&self, t: Instant) -> Option<u64> {
        if let Some(&(_, v)) = self.marks.iter().rev().find(|(at, _)| *at <= t) {
            return Some(v);
        }
        (t >= self.mark_floor.0).then_some(self.mark_floor.1)
    }

    /// Notices received within `window` before `now` and at least `settle` ago, oldest first.
    pub(crate) fn recent(
        &self,
        now: Instant,
        window: Duration,
        settle: Duration,
    ) -> impl Iterator<Item = &Recent> {
        let from = now.checked_sub(window);
        let to = now.checked_sub(settle);
        self.recent
            .iter()
            .filter(move |r| from.is_none_or(|f| r.at >= f) && to.is_some_and(|t| r.at <= t))
    }

    /// Hashes of every notice received within `window`.
    /// Whether a notice was received within `window` before `now`.
    pub(crate) fn has_recent(&self, now: Instant, window: Duration) -> bool {
        let from = now.checked_sub(window);
        self.recent
            .back()
            .is_some_and(|r| from.is_none_or(|f| r.at >= f))
    }

    pub(crate) fn recent_hashes(&self, now: Instant, window: Duration) -> Vec<[u64; 2]> {
        let from = now.checked_sub(window);
        self.recent
            .iter()
            .filter(|r| from.is_none_or(|f| r.at >= f))
            .map(|r| r.hash)
            .collect()
    }

    /// Drops pull-window entries older than `window` or beyond `max`.
    pub(crate) fn trim_recent(&mut self, now: Instant, window: Duration, max: usize) {
        while self
            .recent
            .front()
            .is_some_and(|r| now.checked_sub(window).is_some_and(|f| r.at < f))
            || self.recent.len() > max
        {
            self.recent.pop_front();
        }
        if self.recent.is_empty() && self.recent.capacity() > 64 {
            self.recent.shrink_to_fit();
        }
    }

    /// Stores `notice` (already screened and verified) and delivers what its arrival allows.
    pub(crate) fn insert(
        &mut self,
        now: Instant,
        new: Stored<T>,
        cfg: &Config,
        events: &mut Vec<Event<T>>,
        stats: &mut Stats,
    ) -> Inserted {
        let notice = &new.notice;
        if self.contains(&notice.id()) {
            return Inserted::Duplicate;
        }
        let publisher = notice.publisher.clone();
        let seq = notice.seq;
        if !self.feeds.contains_key(&publisher) {
            while self.feeds.len() >= cfg.max_feeds {
                self.evict_feed(stats);
            }
            self.feeds.insert(
                publisher.clone(),
                Feed {
                    notices: BTreeMap::new(),
                    changed: 0,
                    max_seq: 0,
                    next: None,
                    floor: 0,
                    gap_deadline: None,
                },
            );
        }
        self.version += 1;
        let version = self.version;
        let size = notice_size(notice);
        let hash = bloom::hash_id(&notice.id());
        self.recent.push_back(Recent {
            at: now,
            id: NoticeId {
                publisher: publisher.clone(),
                seq,
            },
            hash,
        });
        self.trim_recent(now, cfg.pull_window, cfg.max_recent);
        match self.marks.back_mut() {
            Some(last) if now.saturating_duration_since(last.0) < cfg.ihave_interval => {
                *last = (now, version);
            }
            _ => {
                self.marks.push_back((now, version));
                if self.marks.len() > MAX_MARKS
                    && let Some(old) = self.marks.pop_front()
                {
                    self.mark_floor = old;
                }
            }
        }

        let Some(feed) = self.feeds.get_mut(&publisher) else {
            return Inserted::Duplicate;
        };
        if feed.changed != 0 {
            self.by_change.remove(&feed.changed);
        }
        feed.changed = version;
        feed.max_seq = feed.max_seq.max(seq);
        self.by_change.insert(version, publisher.clone());
        feed.notices.insert(seq, new);
        self.bytes += size;
        self.count += 1;
        // Delivery.
        let position = feed.next;
        match feed.next {
            None if seq == 1 => {
                feed.next = Some(1);
                deliver_run(feed, events, stats);
            }
            None => {
                // Settling: the timer below is the settle timer.
                if feed.notices.len() > cfg.max_held {
                    stats.drops.held_overflow += 1;
                    settle(feed, events, stats);
                }
            }
            Some(n) if seq < n => stats.late += 1,
            Some(n) if seq == n => deliver_run(feed, events, stats),
            Some(_) => {
                let held = feed.notices.range(feed.next.unwrap_or(0)..).count();
                if held > cfg.max_held {
                    stats.drops.held_overflow += 1;
                    skip_gaps(&publisher, feed, events, stats);
                }
            }
        }
        // The gap timer runs while anything is held (the settle timer while the feed has no
        // position yet).
        let (held, wait) = match feed.next {
            None => (true, cfg.settle_timeout),
            Some(n) => (feed.notices.range(n..).next().is_some(), cfg.gap_timeout),
        };
        // Each hole gets its own wait: when the position moved past one and another remains,
        // the timer starts over.
        let restart = feed.next != position;
        match (held, feed.gap_deadline) {
            (true, None) => {
                let at = now + wait;
                feed.gap_deadline = Some(at);
                self.gap_timers.insert((at, publisher.clone()));
            }
            (true, Some(old)) if restart => {
                self.gap_timers.remove(&(old, publisher.clone()));
                let at = now + wait;
                feed.gap_deadline = Some(at);
                self.gap_timers.insert((at, publisher.clone()));
            }
            (false, Some(at)) => {
                feed.gap_deadline = None;
                self.gap_timers.remove(&(at, publisher.clone()));
            }
            _ => {}
        }

        // Bounds.
        while feed.notices.len() > cfg.max_notices_per_feed {
            if let Some((s, old)) = feed.notices.pop_first() {
                feed.floor = feed.floor.max(s + 1);
                self.bytes -= notice_size(&old.notice);
                self.count -= 1;
                stats.drops.evicted_notices += 1;
            }
        }
        while self.bytes > cfg.max_store_bytes {
            if !self.evict_oldest_notice(stats) {
                break;
            }
        }
        Inserted::New
    }

    /// Delivers the held notices of every feed whose gap timer passed, reporting the gaps; a
    /// feed whose settle timer passed takes the lowest notice seen as its position.
    pub(crate) fn expire_gaps(
        &mut self,
        now: Instant,
        cfg: &Config,
        events: &mut Vec<Event<T>>,
        stats: &mut Stats,
    ) {
        while let Some((at, _)) = self.gap_timers.first()
            && *at <= now
        {
            let Some((_, publisher)) = self.gap_timers.pop_first() else {
                break;
            };
            let Some(feed) = self.feeds.get_mut(&publisher) else {
                continue;
            };
            feed.gap_deadline = None;
            if feed.next.is_some() {
                skip_gaps(&publisher, feed, events, stats);
                continue;
            }
            settle(feed, events, stats);
            // Holes above the position wait like any gap.
            if feed
                .next
                .is_some_and(|n| feed.notices.range(n..).next().is_some())
            {
                let at = now + cfg.gap_timeout;
                feed.gap_deadline = Some(at);
                self.gap_timers.insert((at, publisher));
            }
        }
    }

    /// The sequence numbers missing below the held notices of a feed (at most `max`), and the
    /// peer whose gossip brought the lowest held one; `None` when nothing is held.
    pub(crate) fn holes(&self, publisher: &[u8], max: usize) -> Option<(Vec<u64>, Option<T>)> {
        let feed = self.feeds.get(publisher)?;
        let next = feed.next?;
        let (_, first) = feed.notices.range(next..).next()?;
        let mut missing = Vec::new();
        let mut want = next;
        for &s in feed.notices.range(next..).map(|(s, _)| s) {
            while want < s && missing.len() < max {
                missing.push(want);
                want += 1;
            }
            want = s + 1;
            if missing.len() >= max {
                break;
            }
        }
        Some((missing, first.from.clone()))
    }

    pub(crate) fn next_gap_deadline(&self) -> Option<Instant> {
        self.gap_timers.first().map(|(at, _)| *at)
    }

    fn evict_feed(&mut self, stats: &mut Stats) {
        let Some((_, publisher)) = self.by_change.pop_first() else {
            return;
        };
        if let Some(feed) = self.feeds.remove(&publisher) {
            for s in feed.notices.values() {
                self.bytes -= notice_size(&s.notice);
            }
            self.count -= feed.notices.len();
            stats.drops.evicted_notices += feed.notices.len() as u64;
            if let Some(at) = feed.gap_deadline {
                self.gap_timers.remove(&(at, publisher));
            }
        }
        stats.drops.evicted_feeds += 1;
    }

    /// Evicts the lowest notice of the feed that changed least recently and still holds one.
    fn evict_oldest_notice(&mut self, stats: &mut Stats) -> bool {
        for publisher in self.by_change.values() {
            if let Some(feed) = self.feeds.get_mut(publisher)
                && let Some((s, old)) = feed.notices.pop_first()
            {
                feed.floor = feed.floor.max(s + 1);
                self.bytes -= notice_size(&old.notice);
                self.count -= 1;
                stats.drops.evicted_notices += 1;
                return true;
            }
        }
        false
    }

    /// (feeds, notices, bytes, pull-window entries, version marks, gap timers).
    pub(crate) fn lengths(&self) -> (usize, usize, usize, usize, usize, usize) {
        (
            self.feeds.len(),
            self.count,
            self.bytes,
            self.recent.len(),
            self.marks.len(),
            self.gap_timers.len(),
        )
    }
}

/// Gives a feed without a position the lowest notice seen as its position, delivering from it.
fn settle<T>(feed: &mut Feed<T>, events: &mut Vec<Event<T>>, stats: &mut Stats) {
    if let Some((&lowest, _)) = feed.notices.first_key_value() {
        feed.next = Some(lowest);
        deliver_run(feed, events, stats);
    }
}

/// Delivers the notice at the feed's position and every one that follows without a hole.
fn deliver_run<T>(feed: &mut Feed<T>, events: &mut Vec<Event<T>>, stats: &mut Stats) {
    let Some(mut next) = feed.next else {
        return;
    };
    while let Some(s) = feed.notices.get(&next) {
        events.push(Event::Deliver(s.notice.clone()));
        stats.delivered += 1;
        next += 1;
    }
    feed.next = Some(next);
}

/// Delivers every held notice of the feed, reporting each hole skipped as a gap.
fn skip_gaps<T>(
    publisher: &[u8],
    feed: &mut Feed<T>,
    events: &mut Vec<Event<T>>,
    stats: &mut Stats,
) {
    loop {
        let Some(next) = feed.next else {
            return;
        };
        let Some((&first, _)) = feed.notices.range(next..).next() else {
            return;
        };
        if first > next {
            events.push(Event::Gap {
                publisher: publisher.to_vec(),
                from: next,
                to: first - 1,
            });
            stats.gaps += 1;
            stats.skipped += first - next;
            feed.next = Some(first);
        }
        deliver_run(feed, events, stats);
    }
}

fn notice_size(n: &Notice) -> usize {
    n.publisher.len() + n.body.len() + NOTICE_OVERHEAD
}
