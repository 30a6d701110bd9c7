//! Configuration of the SWIM core.
//!
//! A [`Config`] is a plain struct: every field is public and documented with its meaning, unit,
//! default (the [`Config::lan`] preset, which is also [`Default`]) and limits. Check a hand-made
//! config with [`Config::validate`]; [`Membership::new`](crate::Membership::new) refuses an
//! invalid one.

use std::num::{NonZeroU32, NonZeroUsize};
use std::time::Duration;

use crate::error::ConfigError;
use crate::message;

/// Tuning of one SWIM member. See the module docs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Time between two probes of the round-robin probe order, before the local health
    /// multiplier scales it. Unit: duration. Default (LAN): 1 s. Limits: at least 1 ms and at
    /// least `probe_timeout`.
    pub probe_interval: Duration,
    /// How long a direct ping waits for its ack before the probe falls back to ping-req through
    /// helpers, before the local health multiplier scales it. Unit: duration. Default (LAN):
    /// 500 ms. Limits: at least 1 ms, at most `probe_interval`.
    ///
    /// A probe ends, and its target is suspected, at `max(probe_interval, 2 * probe_timeout)`
    /// after it started (scaled by local health), which leaves the helpers one probe timeout.
    pub probe_timeout: Duration,
    /// Number of helpers asked to ping a target that missed its direct ack (SWIM's `k`).
    /// Default: 3. Limits: 0 (no indirect probes) to 16.
    pub indirect_probes: usize,
    /// Lifeguard's `α`: the minimum suspicion timeout is `α · max(1, log10 n) · probe_interval`.
    /// Unit: probe intervals. Default: 4. Limits: 1 to 100.
    pub suspicion_alpha: NonZeroU32,
    /// Lifeguard's `β`: the maximum suspicion timeout is `β` times the minimum. A suspicion
    /// starts at the maximum and shrinks logarithmically towards the minimum as independent
    /// confirmations arrive. Default: 6. Limits: 1 to 100.
    pub suspicion_beta: NonZeroU32,
    /// Lifeguard's `K`: the number of independent confirmations after which the suspicion
    /// timeout reaches its minimum. Default: 3. Limits: 1 to 32.
    pub suspicion_confirmations: NonZeroU32,
    /// SWIM's `λ`: each update is piggybacked `λ · ceil(log10(n + 1))` times. Default: 4.
    /// Limits: 1 to 32.
    pub retransmit_mult: NonZeroU32,
    /// Lifeguard's `S`: the maximum of the local health multiplier. Probe interval and probe
    /// timeout are multiplied by `score + 1`, so 8 stretches them up to nine times. Default: 8.
    /// Limits: 0 (disables the multiplier) to 32.
    pub max_local_health: u32,
    /// Time between two rounds of dedicated gossip: while updates are queued, each round sends
    /// those that rounds have not carried enough to `gossip_fanout` random live members in a
    /// message of their own, so news does not wait for probe traffic (which local health slows
    /// down). A death, a join or a refutation brings the next round forward (rounds then stay a
    /// quarter of this apart). Unit: duration. Default (LAN): 200 ms. Limits: at least 1 ms.
    pub gossip_interval: Duration,
    /// Members a gossip round sends to; 0 disables dedicated gossip (updates then ride only on
    /// probes and acks, as in SWIM). Default: 3. Limits: 0 to 16.
    ///
    /// Rounds spend a budget of their own: a death or a departure rides
    /// `ceil(λ · ceil(log10(n + 1)) / fanout)` rounds and other news one, and none of them counts
    /// against the `λ · ceil(log10(n + 1))` piggyback transmissions of the update. Had they
    /// counted, rounds would spend those within a second and leave probes and acks with nothing
    /// to carry: a member that missed a refutation while the rounds ran (because it was
    /// suspected itself at that moment, say) would then keep its suspicion until it declared a
    /// healthy member dead.
    pub gossip_fanout: usize,
    /// Members a seed tells at once, in a message of their own, that a member joined through
    /// it; 0 leaves the news to gossip rounds and the piggyback. Default: 32 (LAN and WAN), 8
    /// (Tor). Limits: 0 to 256.
    ///
    /// A seed is the one member sure to hear of a joiner first, and in a network started
    /// together it is connected to every member: telling them all costs one small message each
    /// and saves the epidemic's hops (each a round wait, often a new connection, and the proof
    /// fetch the DHT does before it lists a member). Past this many members the rest learn
    /// from the ones told, in gossip rounds. Joins that reach the seed within a quarter of
    /// `gossip_interval` of its last announcement go out together in the next one.
    pub join_fanout: usize,
    /// Byte budget of the updates piggybacked on one message (on top of the message itself).
    /// Unit: bytes of CBOR. Default: 8 KiB (about 100 updates). Limits: 64 to
    /// `max_message_bytes / 2`.
    ///
    /// Messages travel on libp2p streams, not datagrams, so no MTU caps them. A budget of a few
    /// updates made news of many members joining at once (a hundred in a network of a thousand)
    /// take several times longer to reach everyone than this one does (`cargo bench -p
    /// shoal-dht --bench lookup`; the figures are in CHANGELOG.md); with nothing to tell,
    /// messages stay small.
    pub gossip_budget: NonZeroUsize,
    /// Time between two push-pull full state exchanges with a random member. Unit: duration.
    /// Default (LAN): 30 s. Limits: at least `probe_interval`.
    pub push_pull_interval: Duration,
    /// Time between two attempts to reach a member believed dead, or a seed that is not a live
    /// member, with a push-pull; this is what heals a partition. Unit: duration. Default (LAN):
    /// 5 s. Limits: at least `probe_interval`.
    pub reconnect_interval: Duration,
    /// How long a dead or departed member is remembered (so that stale gossip cannot revive it,
    /// and so that reconnection can try it). Unit: duration. Default (LAN): 10 min. Limits: at
    /// least `reconnect_interval`.
    pub dead_retention: Duration,
    /// How long a join waits for an answer from any seed before it fails. Unit: duration.
    /// Default (LAN): 3 s. Limits: at least `probe_timeout`.
    pub join_timeout: Duration,
    /// How long a leave keeps gossiping its departure before it reports completion. Unit:
    /// duration. Default (LAN): 2 s. Limits: at least 1 ms.
    pub leave_timeout: Duration,
    /// Maximum number of members remembered, alive or dead, not counting ourselves. News of
    /// further members is dropped (counted in [`Stats`](crate::Stats)). Default: 16384. Limits:
    /// 1 to 1,000,000.
    pub max_members: NonZeroUsize,
    /// Maximum number of members sent in one push-pull; a larger table is sampled at random.
    /// Default: 2048. Limits: 1 to [`message::MAX_PUSH_PULL_MEMBERS`].
    pub max_push_pull_members: NonZeroUsize,
    /// Maximum encoded size of one message. Unit: bytes. Default: 128 KiB. Limits: 1 KiB to
    /// [`message::MAX_MESSAGE_BYTES`].
    pub max_message_bytes: NonZeroUsize,
    /// Maximum number of transmits waiting in [`poll_transmit`](crate::Membership::poll_transmit);
    /// further ones are dropped and counted. Default: 1024. Limits: at least 16.
    pub max_transmit_queue: NonZeroUsize,
    /// Maximum number of events waiting in [`poll_event`](crate::Membership::poll_event); the
    /// oldest is dropped and counted when it overflows. Default: 4096. Limits: at least 16.
    pub max_event_queue: NonZeroUsize,
    /// Maximum number of ping-req requests from other members served at once; further ones are
    /// ignored (the requester sees neither ack nor nack). Default: 256. Limits: at least 1.
    pub max_relays: NonZeroUsize,
    /// Maximum number of seeds remembered for joins and reconnection. Default: 64. Limits: at
    /// least 1.
    pub max_seeds: NonZeroUsize,
    /// Seed of the core's random number generator (probe order, helper choice, push-pull
    /// partner). `None` (default) seeds from OS entropy; tests and the simulator set it.
    pub rng_seed: Option<[u8; 32]>,
}

impl Config {
    /// Preset for a local network: probe every second, 500 ms probe timeout, gossip rounds to 3
    /// members every 200 ms (memberlist's LAN profile). This is also [`Default`].
    pub fn lan() -> Self {
        Self {
            probe_interval: Duration::from_secs(1),
            probe_timeout: Duration::from_millis(500),
            indirect_probes: 3,
            suspicion_alpha: nz32(4),
            suspicion_beta: nz32(6),
            suspicion_confirmations: nz32(3),
            retransmit_mult: nz32(4),
            max_local_health: 8,
            gossip_interval: Duration::from_millis(200),
            gossip_fanout: 3,
            join_fanout: 32,
            gossip_budget: nzu(8192),
            push_pull_interval: Duration::from_secs(30),
            reconnect_interval: Duration::from_secs(5),
            dead_retention: Duration::from_secs(600),
            join_timeout: Duration::from_secs(3),
            leave_timeout: Duration::from_secs(2),
            max_members: nzu(16_384),
            max_push_pull_members: nzu(2048),
            max_message_bytes: nzu(128 * 1024),
            max_transmit_queue: nzu(1024),
            max_event_queue: nzu(4096),
            max_relays: nzu(256),
            max_seeds: nzu(64),
            rng_seed: None,
        }
    }

    /// Preset for a wide-area network: probe every 5 s with a 3 s timeout, a longer suspicion
    /// (`α` = 6), gossip rounds every 500 ms and a push-pull every minute (memberlist's WAN
    /// profile).
    pub fn wan() -> Self {
        Self {
            probe_interval: Duration::from_secs(5),
            probe_timeout: Duration::from_secs(3),
            suspicion_alpha: nz32(6),
            push_pull_interval: Duration::from_secs(60),
            gossip_interval: Duration::from_millis(500),
            reconnect_interval: Duration::from_secs(30),
            dead_retention: Duration::from_secs(3600),
            join_timeout: Duration::from_secs(15),
            leave_timeout: Duration::from_secs(10),
            ..Self::lan()
        }
    }

    /// Preset for onion services over Tor, where a round trip takes seconds and a fresh circuit
    /// can take ten: probe every 20 s with a 10 s timeout, `α` = 6, gossip rounds every 2 s,
    /// push-pull every 2 min.
    pub fn tor() -> Self {
        Self {
            probe_interval: Duration::from_secs(20),
            probe_timeout: Duration::from_secs(10),
            suspicion_alpha: nz32(6),
            push_pull_interval: Duration::from_secs(120),
            gossip_interval: Duration::from_secs(2),
            reconnect_interval: Duration::from_secs(60),
            dead_retention: Duration::from_secs(4 * 3600),
            join_timeout: Duration::from_secs(60),
            leave_timeout: Duration::from_secs(40),
            // Every message to a member not connected yet builds a circuit.
            join_fanout: 8,
            ..Self::lan()
        }
    }

    /// Checks every limit documented on the fields.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let ms = Duration::from_millis(1);
        check(self.probe_interval >= ms, "probe_interval", "at least 1 ms")?;
        check(self.probe_timeout >= ms, "probe_timeout", "at least 1 ms")?;
        check(
            self.probe_timeout <= self.probe_interval,
            "probe_timeout",
            "at most probe_interval",
        )?;
        check(self.indirect_probes <= 16, "indirect_probes", "at most 16")?;
        check(
            self.gossip_interval >= ms,
            "gossip_interval",
            "at least 1 ms",
        )?;
        check(self.gossip_fanout <= 16, "gossip_fanout", "at most 16")?;
        check(self.join_fanout <= 256, "join_fanout", "at most 256")?;
        check(
            self.suspicion_alpha.get() <= 100,
            "suspicion_alpha",
            "at most 100",
        )?;
        check(
            self.suspicion_beta.get() <= 100,
            "suspicion_beta",
            "at most 100",
        )?;
        check(
            self.suspicion_confirmations.get() <= 32,
            "suspicion_confirmations",
            "at most 32",
        )?;
        check(
            self.retransmit_mult.get() <= 32,
            "retransmit_mult",
            "at most 32",
        )?;
        check(
            self.max_local_health <= 32,
            "max_local_health",
            "at most 32",
        )?;
        check(
            self.max_message_bytes.get() >= 1024
                && self.max_message_bytes.get() <= message::MAX_MESSAGE_BYTES,
            "max_message_bytes",
            "between 1 KiB and message::MAX_MESSAGE_BYTES",
        )?;
        check(
            self.gossip_budget.get() >= 64
                && self.gossip_budget.get() <= self.max_message_bytes.get() / 2,
            "gossip_budget",
            "between 64 and max_message_bytes / 2",
        )?;
        check(
            self.push_pull_interval >= self.probe_interval,
            "push_pull_interval",
            "at least probe_interval",
        )?;
        check(
            self.reconnect_interval >= self.probe_interval,
            "reconnect_interval",
            "at least probe_interval",
        )?;
        check(
            self.dead_retention >= self.reconnect_interval,
            "dead_retention",
            "at least reconnect_interval",
        )?;
        check(
            self.join_timeout >= self.probe_timeout,
            "join_timeout",
            "at least probe_timeout",
        )?;
        check(self.leave_timeout >= ms, "leave_timeout", "at least 1 ms")?;
        check(
            self.max_members.get() <= 1_000_000,
            "max_members",
            "at most 1,000,000",
        )?;
        check(
            self.max_push_pull_members.get() <= message::MAX_PUSH_PULL_MEMBERS,
            "max_push_pull_members",
            "at most message::MAX_PUSH_PULL_MEMBERS",
        )?;
        check(
            self.max_transmit_queue.get() >= 16,
            "max_transmit_queue",
            "at least 16",
        )?;
        check(
            self.max_event_queue.get() >= 16,
            "max_event_queue",
            "at least 16",
        )?;
        Ok(())
    }

    /// The time a probe may take before its target is suspected, before local health scaling.
    pub fn probe_window(&self) -> Duration {
        self.probe_interval.max(self.probe_timeout * 2)
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

fn nz32(v: u32) -> NonZeroU32 {
    // Invariant: only called with literal non-zero constants above.
    NonZeroU32::new(v).expect("preset constant is non-zero")
}

fn nzu(v: usize) -> NonZeroUsize {
    // Invariant: only called with literal non-zero constants above.
    NonZeroUsize::new(v).expect("preset constant is non-zero")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_are_valid() {
        Config::lan().validate().unwrap();
        Config::wan().validate().unwrap();
        Config::tor().validate().unwrap();
        assert_eq!(Config::default(), Config::lan());
    }

    #[test]
    fn validate_rejects_out_of_range() {
        let mut c = Config::lan();
        c.probe_timeout = Duration::from_secs(2);
        assert_eq!(
            c.validate(),
            Err(ConfigError::OutOfRange {
                field: "probe_timeout",
                limit: "at most probe_interval"
            })
        );
        let mut c = Config::lan();
        c.gossip_budget = NonZeroUsize::new(10).unwrap();
        assert!(c.validate().is_err());
        let mut c = Config::lan();
        c.max_message_bytes = NonZeroUsize::new(message::MAX_MESSAGE_BYTES + 1).unwrap();
        assert!(c.validate().is_err());
        let mut c = Config::lan();
        c.indirect_probes = 17;
        assert!(c.validate().is_err());
    }
}
