//! Configuration of the broadcast core.
//!
//! A [`Config`] is a plain struct: every field is public and documented with its meaning, unit,
//! default (the [`Config::lan`] preset, which is also [`Default`]) and limits. Check a hand-made
//! config with [`Config::validate`]; [`Broadcast::new`](crate::Broadcast::new) refuses an
//! invalid one.

use std::time::Duration;

use crate::error::ConfigError;
use crate::message::{self, Limits};

/// Tuning of one broadcast core. See the module docs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Fixed size of the active view (the neighbors notices travel over). `None` (default)
    /// sizes it from the membership: `ceil(log2(n)) + 1` for `n` known members (ourselves
    /// included), clamped to `[2, active_max]`. Limits: `Some(k)` with `1 <= k <= active_max`.
    ///
    /// This is the target a node fills its view up to by asking others; it accepts one neighbor
    /// more than that when asked (see [`Broadcast`](crate::Broadcast)), so that a node one short
    /// finds room in a network where every view is at its target.
    pub active_size: Option<usize>,
    /// Largest target of the active view. Default: 8. Limits: 2 to 32.
    pub active_max: usize,
    /// Size of the passive view: a random sample of known members, kept to replace active
    /// neighbors. Default: 32. Limits: 1 to 1024.
    pub passive_max: usize,
    /// Members remembered (the peer sampling service's list); further ones are dropped and
    /// counted. Default: 100,000. Limits: 1 to 10,000,000.
    pub max_members: usize,
    /// How long a neighbor request waits for its answer before another candidate is tried.
    /// Refused requests are retried every quarter of it. Unit: duration. Default (LAN): 1 s.
    /// Limits: at least 4 ms.
    pub neighbor_timeout: Duration,
    /// Time between two rotations of the active view: a node whose view is full asks one random
    /// passive member to become its neighbor and, once accepted, drops a random old neighbor.
    /// Without rotation the overlay only changes on failures, so two halves that lost every link
    /// between them (a partition) would stay apart after it healed. Members that were our
    /// neighbors until their link failed and then come back are asked first, and at once.
    /// `None` disables rotation. Unit: duration. Default (LAN): 60 s. Limits: at least
    /// `neighbor_timeout`.
    pub rotate_interval: Option<Duration>,
    /// How long an announced notice (IHave) may stay missing before it is grafted from its first
    /// announcer. Unit: duration. Default (LAN): 300 ms. Limits: at least 1 ms.
    pub graft_timeout: Duration,
    /// How long after one graft the next announcer is grafted, while the notice is still
    /// missing. Unit: duration. Default (LAN): 150 ms. Limits: at least 1 ms.
    pub graft_retry: Duration,
    /// Time between two flushes of the lazy announcements (IHave). Unit: duration. Default
    /// (LAN): 100 ms. Limits: at least 1 ms, less than `graft_timeout`.
    pub ihave_interval: Duration,
    /// Most notice ids in one IHave or Graft message. Default: 256. Limits: 1 to
    /// [`message::MAX_IDS`].
    pub max_ihave_ids: usize,
    /// Plumtree's tree optimization: when an IHave announces, at a round at least this much
    /// smaller, a notice that reached us by gossip, the announcer is grafted and the gossip
    /// sender pruned (the lazy path is shorter). `None` (default) disables it: with many
    /// publishers the rounds of one source say little about the others, and the optimization
    /// then swaps tree links back and forth. Limits: `Some(t)` with `t >= 1`.
    pub optimization_threshold: Option<u32>,
    /// Chance, in percent, that a duplicate Gossip makes its sender lazy (Prune). Plumtree
    /// prunes at every duplicate (100, the default), which settles the eager links into the
    /// best tree when floods seldom overlap. When they often do (many notices per second over
    /// a deep tree), several floods cut the same cycle at once, in different places, and the
    /// tree keeps breaking apart and being grafted together again; pruning at a fraction of
    /// the duplicates lets one cut land before the next, at the price of a deeper tree.
    /// Limits: 1 to 100.
    pub prune_percent: u8,
    /// Announcers remembered per missing notice. Default: 4. Limits: 1 to 64.
    pub max_announcers: usize,
    /// Missing notices remembered at once (each with its announcers and a graft timer); further
    /// announcements are dropped and counted. Default: 8192. Limits: at least 16.
    pub max_missing: usize,
    /// Announcements remembered from one peer at once: a flood of IHave from one peer cannot
    /// take the whole table. Default: 2048. Limits: 1 to `max_missing`.
    pub max_missing_per_peer: usize,
    /// Lazy announcements waiting for the next flush; further ones are dropped and counted.
    /// Default: 65,536. Limits: at least 16.
    pub max_lazy_queue: usize,
    /// Notices served to one peer's Grafts per `ihave_interval`; further grafted ids are
    /// refused and counted. Default: 512. Limits: at least 1.
    pub max_graft_answers: usize,
    /// How long notices after a gap in a feed wait for the gap to fill before they are
    /// delivered anyway (and the gap reported). Unit: duration. Default (LAN): 2 s. Limits: at
    /// least 1 ms.
    pub gap_timeout: Duration,
    /// How long the first notice of a feed, unless it is the feed's first (sequence number 1),
    /// waits for lower ones before the lowest seen sets where delivery of the feed starts. The
    /// first notices of a feed can arrive out of order (one of them through a graft, the next
    /// one eagerly); without the wait, the later one would start the feed and the earlier one
    /// would never be delivered. Unit: duration. Default (LAN): 1 s. Limits: at most
    /// `gap_timeout`.
    pub settle_timeout: Duration,
    /// Notices of one feed held behind a gap; one more delivers them at once and reports the
    /// gap. Default: 256. Limits: 1 to `max_notices_per_feed - 1`.
    pub max_held: usize,
    /// Feeds (publishers) stored. A new feed beyond it evicts the feed that changed least
    /// recently, with its delivery position: a notice of an evicted feed is news again.
    /// Default: 4096. Limits: 1 to 1,000,000.
    pub max_feeds: usize,
    /// Notices stored per feed; a new one beyond it evicts the feed's lowest sequence number.
    /// Default: 1024. Limits: at least 2.
    pub max_notices_per_feed: usize,
    /// Bytes of notices stored (publisher and body, plus a fixed overhead each). Beyond it the
    /// lowest notice of the feed that changed least recently is evicted, until it fits; the
    /// feed keeps its delivery position. Unit: bytes. Default: 64 MiB. Limits: at least
    /// `max_notice_bytes`.
    pub max_store_bytes: usize,
    /// Largest notice body. Unit: bytes. Default: 4096. Limits: 1 to `max_message_bytes / 4`
    /// and [`message::MAX_NOTICE_BYTES`].
    pub max_notice_bytes: usize,
    /// Peers whose last catch-up exchange is remembered (least recently used first out). A peer
    /// not remembered is sent every feed. Default: 1024. Limits: at least 1.
    pub max_peer_clocks: usize,
    /// When a neighbor's link goes down, it is taken to have had every notice we stored up to
    /// this long before we last heard from it: the next catch-up with it names only the feeds
    /// changed since then. Unit: duration. Default (LAN): 1 s. Limits: none.
    pub catchup_settle: Duration,
    /// Notices in one catch-up answer (one Notices message per Clock message); the asker asks
    /// again while answers make progress. Default: 512. Limits: 1 to [`message::MAX_NOTICES`].
    pub max_catchup_notices: usize,
    /// Time between two anti-entropy pulls (a Bloom filter of recent notices sent to a random
    /// active neighbor), while notices flow; a node that received none within `pull_window`
    /// pulls once a `pull_window` until one comes. Unit: duration. Default (LAN): 5 s. Limits:
    /// at least 1 ms.
    pub pull_interval: Duration,
    /// Notices received this recently are named in pulls and may be sent in pull answers.
    /// Unit: duration. Default (LAN): 30 s. Limits: at least `pull_interval`.
    pub pull_window: Duration,
    /// Notices in one pull answer. Default: 256. Limits: 1 to [`message::MAX_NOTICES`].
    pub max_pull_reply: usize,
    /// Notices remembered for pulls (received within `pull_window`); the oldest go first.
    /// Default: 16,384. Limits: at least 1.
    pub max_recent: usize,
    /// Largest Bloom filter sent in a pull; with more recent notices than it holds at ten bits
    /// each, false positives rise and pull answers shrink. Unit: bytes. Default: 32 KiB.
    /// Limits: 8 to [`message::MAX_BLOOM_BYTES`].
    pub max_bloom_bytes: usize,
    /// Largest encoded message this core sends. Unit: bytes. Default: 256 KiB. Limits: 4 KiB
    /// to [`message::MAX_MESSAGE_BYTES`].
    pub max_message_bytes: usize,
    /// Transmits waiting in [`poll_transmit`](crate::Broadcast::poll_transmit); further ones
    /// are dropped and counted. Default: 8192. Limits: at least 16.
    pub max_transmit_queue: usize,
    /// Events waiting in [`poll_event`](crate::Broadcast::poll_event); the oldest is dropped
    /// and counted when it overflows. Default: 8192. Limits: at least 16.
    pub max_event_queue: usize,
    /// Seed of the core's random number generator (neighbor choice, pull partner, jitter).
    /// `None` (default) seeds from OS entropy; tests and the simulator set it.
    pub rng_seed: Option<[u8; 32]>,
}

impl Config {
    /// Preset for a local network: grafts after 300 ms, IHave flushed every 100 ms, pulls every
    /// 5 s, gaps wait 2 s (a new feed 1 s), neighbor requests 1 s. This is also [`Default`].
    pub fn lan() -> Self {
        Self {
            active_size: None,
            active_max: 8,
            passive_max: 32,
            max_members: 100_000,
            neighbor_timeout: Duration::from_secs(1),
            rotate_interval: Some(Duration::from_secs(60)),
            graft_timeout: Duration::from_millis(300),
            graft_retry: Duration::from_millis(150),
            ihave_interval: Duration::from_millis(100),
            max_ihave_ids: 256,
            optimization_threshold: None,
            prune_percent: 100,
            max_announcers: 4,
            max_missing: 8192,
            max_missing_per_peer: 2048,
            max_lazy_queue: 65_536,
            max_graft_answers: 512,
            gap_timeout: Duration::from_secs(2),
            settle_timeout: Duration::from_secs(1),
            max_held: 256,
            max_feeds: 4096,
            max_notices_per_feed: 1024,
            max_store_bytes: 64 << 20,
            max_notice_bytes: 4096,
            max_peer_clocks: 1024,
            catchup_settle: Duration::from_secs(1),
            max_catchup_notices: 512,
            pull_interval: Duration::from_secs(5),
            pull_window: Duration::from_secs(30),
            max_pull_reply: 256,
            max_recent: 16_384,
            max_bloom_bytes: 32 << 10,
            max_message_bytes: 256 << 10,
            max_transmit_queue: 8192,
            max_event_queue: 8192,
            rng_seed: None,
        }
    }

    /// Preset for onion services over Tor, where each hop of a circuit adds 0.5-2 s and a new
    /// circuit can take ten: grafts after 4 s (then every 2 s), IHave flushed every second,
    /// pulls every 30 s over a 3 min window, gaps wait 10 s (a new feed 8 s), neighbor requests
    /// 10 s, rotation every 10 min.
    pub fn tor() -> Self {
        Self {
            neighbor_timeout: Duration::from_secs(10),
            rotate_interval: Some(Duration::from_secs(600)),
            graft_timeout: Duration::from_secs(4),
            graft_retry: Duration::from_secs(2),
            ihave_interval: Duration::from_secs(1),
            gap_timeout: Duration::from_secs(10),
            settle_timeout: Duration::from_secs(8),
            catchup_settle: Duration::from_secs(10),
            pull_interval: Duration::from_secs(30),
            pull_window: Duration::from_secs(180),
            ..Self::lan()
        }
    }

    /// Checks every limit documented on the fields.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let ms = Duration::from_millis(1);
        check(
            (2..=32).contains(&self.active_max),
            "active_max",
            "between 2 and 32",
        )?;
        if let Some(k) = self.active_size {
            check(
                k >= 1 && k <= self.active_max,
                "active_size",
                "between 1 and active_max",
            )?;
        }
        check(
            (1..=1024).contains(&self.passive_max),
            "passive_max",
            "between 1 and 1024",
        )?;
        check(
            (1..=10_000_000).contains(&self.max_members),
            "max_members",
            "between 1 and 10,000,000",
        )?;
        check(
            self.neighbor_timeout >= ms * 4,
            "neighbor_timeout",
            "at least 4 ms",
        )?;
        if let Some(r) = self.rotate_interval {
            check(
                r >= self.neighbor_timeout,
                "rotate_interval",
                "at least neighbor_timeout",
            )?;
        }
        check(self.graft_timeout >= ms, "graft_timeout", "at least 1 ms")?;
        check(self.graft_retry >= ms, "graft_retry", "at least 1 ms")?;
        check(
            self.ihave_interval >= ms && self.ihave_interval < self.graft_timeout,
            "ihave_interval",
            "at least 1 ms and less than graft_timeout",
        )?;
        check(
            (1..=message::MAX_IDS).contains(&self.max_ihave_ids),
            "max_ihave_ids",
            "between 1 and message::MAX_IDS",
        )?;
        if let Some(t) = self.optimization_threshold {
            check(t >= 1, "optimization_threshold", "at least 1")?;
        }
        check(
            (1..=100).contains(&self.prune_percent),
            "prune_percent",
            "between 1 and 100",
        )?;
        check(
            (1..=64).contains(&self.max_announcers),
            "max_announcers",
            "between 1 and 64",
        )?;
        check(self.max_missing >= 16, "max_missing", "at least 16")?;
        check(
            (1..=self.max_missing).contains(&self.max_missing_per_peer),
            "max_missing_per_peer",
            "between 1 and max_missing",
        )?;
        check(self.max_lazy_queue >= 16, "max_lazy_queue", "at least 16")?;
        check(
            self.max_graft_answers >= 1,
            "max_graft_answers",
            "at least 1",
        )?;
        check(self.gap_timeout >= ms, "gap_timeout", "at least 1 ms")?;
        check(
            self.settle_timeout <= self.gap_timeout,
            "settle_timeout",
            "at most gap_timeout",
        )?;
        check(
            self.max_notices_per_feed >= 2,
            "max_notices_per_feed",
            "at least 2",
        )?;
        check(
            self.max_held >= 1 && self.max_held < self.max_notices_per_feed,
            "max_held",
            "between 1 and max_notices_per_feed - 1",
        )?;
        check(
            (1..=1_000_000).contains(&self.max_feeds),
            "max_feeds",
            "between 1 and 1,000,000",
        )?;
        check(
            self.max_message_bytes >= 4096 && self.max_message_bytes <= message::MAX_MESSAGE_BYTES,
            "max_message_bytes",
            "between 4 KiB and message::MAX_MESSAGE_BYTES",
        )?;
        check(
            self.max_notice_bytes >= 1
                && self.max_notice_bytes <= self.max_message_bytes / 4
                && self.max_notice_bytes <= message::MAX_NOTICE_BYTES,
            "max_notice_bytes",
            "between 1 and max_message_bytes / 4 (and message::MAX_NOTICE_BYTES)",
        )?;
        check(
            self.max_store_bytes >= self.max_notice_bytes,
            "max_store_bytes",
            "at least max_notice_bytes",
        )?;
        check(self.max_peer_clocks >= 1, "max_peer_clocks", "at least 1")?;
        check(
            (1..=message::MAX_NOTICES).contains(&self.max_catchup_notices),
            "max_catchup_notices",
            "between 1 and message::MAX_NOTICES",
        )?;
        check(self.pull_interval >= ms, "pull_interval", "at least 1 ms")?;
        check(
            self.pull_window >= self.pull_interval,
            "pull_window",
            "at least pull_interval",
        )?;
        check(
            (1..=message::MAX_NOTICES).contains(&self.max_pull_reply),
            "max_pull_reply",
            "between 1 and message::MAX_NOTICES",
        )?;
        check(self.max_recent >= 1, "max_recent", "at least 1")?;
        check(
            (8..=message::MAX_BLOOM_BYTES).contains(&self.max_bloom_bytes),
            "max_bloom_bytes",
            "between 8 and message::MAX_BLOOM_BYTES",
        )?;
        check(
            self.max_transmit_queue >= 16,
            "max_transmit_queue",
            "at least 16",
        )?;
        check(self.max_event_queue >= 16, "max_event_queue", "at least 16")?;
        Ok(())
    }

    /// The decoding limits that match what a core with this config sends: pass them to
    /// [`message::decode`] for messages from peers that share the config.
    pub fn limits(&self) -> Limits {
        Limits {
            max_message_bytes: self.max_message_bytes,
            max_notice_bytes: self.max_notice_bytes,
            ..Limits::default()
        }
    }

    /// The active view target for `members` known members, ourselves excluded.
    pub fn active_target(&self, members: usize) -> usize {
        if let Some(k) = self.active_size {
            return k;
        }
        let n = members + 1;
        // ceil(log2(n)) for n >= 1.
        let log = usize::BITS - (n - 1).leading_zeros();
        (log as usize + 1).clamp(2, self.active_max)
    }
}

impl Default for Config {
    fn default() -> Self {
        Self::lan()
    }
}

fn check(ok: bool, field: &'static str, limit: &'static str) -> Result<(), ConfigError> {
    if ok {
        Ok(())
    } else {
        Err(ConfigError::OutOfRange { field, limit })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_are_valid() {
        Config::lan().validate().unwrap();
        Config::tor().validate().unwrap();
        assert_eq!(Config::default(), Config::lan());
    }

    #[test]
    fn validate_rejects_out_of_range() {
        let mut c = Config::lan();
        c.ihave_interval = c.graft_timeout;
        assert_eq!(
            c.validate(),
            Err(ConfigError::OutOfRange {
                field: "ihave_interval",
                limit: "at least 1 ms and less than graft_timeout"
            })
        );
        let mut c = Config::lan();
        c.active_size = Some(9);
        assert!(c.validate().is_err());
        let mut c = Config::lan();
        c.max_held = c.max_notices_per_feed;
        assert!(c.validate().is_err());
        let mut c = Config::lan();
        c.max_notice_bytes = c.max_message_bytes;
        assert!(c.validate().is_err());
        let mut c = Config::lan();
        c.pull_window = c.pull_interval / 2;
        assert!(c.validate().is_err());
        let mut c = Config::lan();
        c.prune_percent = 0;
        assert!(c.validate().is_err());
        let mut c = Config::lan();
        c.settle_timeout = c.gap_timeout * 2;
        assert!(c.validate().is_err());
    }

    #[test]
    fn active_target_follows_log2() {
        let c = Config::lan();
        // n counts ourselves: 1 member known is n = 2, ceil(log2 2) + 1 = 2.
        assert_eq!(c.active_target(0), 2);
        assert_eq!(c.active_target(1), 2);
        assert_eq!(c.active_target(3), 3);
        assert_eq!(c.active_target(19), 6);
        assert_eq!(c.active_target(20), 6);
        assert_eq!(c.active_target(31), 6);
        assert_eq!(c.active_target(32), 7);
        assert_eq!(c.active_target(999), 8);
        let fixed = Config {
            active_size: Some(3),
            ..Config::lan()
        };
        assert_eq!(fixed.active_target(10_000), 3);
    }
}
