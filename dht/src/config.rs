//! The DHT node's configuration: one plain struct with presets.

use std::num::{NonZeroU32, NonZeroUsize};
use std::path::PathBuf;
use std::time::Duration;

use shoal_pow::{PolicyError, PuzzleConfig, StampPolicy, VerifierConfig};

use crate::lockstep::NoticeBookConfig;
pub use crate::nat::{NatConfig, RelayLimits};
use crate::record::RecordRules;
use crate::store::StoreConfig;

/// Why a [`Config`] is unusable. Validation changes nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The network name is empty, longer than 64 bytes, or not lowercase ASCII letters, digits
    /// and `-` (it becomes part of protocol names).
    #[error("network name {0:?} must be 1 to 64 of [a-z0-9-]")]
    BadNetwork(String),
    /// The identity puzzle parameters are invalid.
    #[error("identity puzzle: {0}")]
    Puzzle(#[from] shoal_pow::ConfigError),
    /// The stamp policy is invalid.
    #[error("stamp policy: {0}")]
    Stamps(#[from] PolicyError),
    /// The SWIM configuration is invalid.
    #[error("swim: {0}")]
    Swim(#[from] shoal_swim::ConfigError),
    /// The broadcast configuration is invalid.
    #[error("broadcast: {0}")]
    Broadcast(#[from] shoal_broadcast::ConfigError),
    /// `get_paths` is above 8.
    #[error("get_paths is {0}, at most 8")]
    GetPaths(usize),
    /// `lookup_paths` is above [`crate::core::lookup::MAX_LOOKUP_PATHS`].
    #[error("lookup_paths is {0}, at most 8")]
    LookupPaths(usize),
    /// An allow or deny list names more than [`MAX_TRUST_LIST`] peers.
    #[error("trust.{0} names {1} peers, at most {MAX_TRUST_LIST}")]
    TrustListTooLong(&'static str, usize),
    /// A timeout is zero.
    #[error("{0} must be above zero")]
    ZeroTimeout(&'static str),
    /// The NAT traversal settings are out of bounds.
    #[error("{0}")]
    Nat(&'static str),
    /// The default put quorum exceeds the replication factor.
    #[error("put quorum {quorum} exceeds the replication factor {replication}")]
    QuorumAboveReplication {
        /// The quorum.
        quorum: usize,
        /// The replication factor.
        replication: usize,
    },
}

/// Which peers a node admits at all, besides their valid identity proofs (peer ids as their
/// bytes, `PeerId::to_bytes`), and how much one peer may ask. A peer refused here never enters
/// the membership, the routing table or the broadcast overlay; its connections are closed and
/// its requests refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustPolicy {
    /// Peers never admitted. At most [`MAX_TRUST_LIST`].
    pub deny: Vec<Vec<u8>>,
    /// When not empty, the only peers admitted (a closed network). At most [`MAX_TRUST_LIST`].
    pub allow: Vec<Vec<u8>>,
    /// Requests of one method (find-node, get, put, copy, announce, notices, proofs) one peer
    /// may make per second, on average; beyond it (and its burst) they are refused with "rate
    /// limited" and counted. 0 turns the limit off. Default 10,000: far above what an honest
    /// peer asks of one node (a put asks each replica once), low enough that one peer cannot
    /// take a node's whole capacity for a method.
    pub peer_requests_per_second: u32,
    /// Requests of one method one peer may make at once after a quiet spell. Default 20,000.
    pub peer_request_burst: u32,
    /// Bytes one peer may send this node per second on average, requests and told messages of
    /// every protocol together; beyond it (and its burst) they are refused or dropped and
    /// counted. 0 turns the limit off. Default 32 MiB: far above an honest peer's share (a
    /// put sends a replica one record of at most 64 KiB).
    pub peer_bytes_per_second: u64,
    /// Bytes one peer may send at once after a quiet spell. Default 128 MiB.
    pub peer_bytes_burst: u64,
    /// How long a peer may stay over its request rate or bandwidth without backing off
    /// before it is banned (for [`Self::ban_period`]); zero never bans for it. Default 30 s.
    pub over_limit_ban_after: Duration,
    /// Departures (failed or left) of one peer within [`Self::churn_window`] after which it is
    /// held out, refused as a denied peer is, until fewer stand in the window; 0 turns the
    /// filter off. Default 10 (an hour's window): an honest node restarting now and then
    /// never reaches it.
    pub churn_max_departures: u32,
    /// The churn filter's window. Default one hour.
    pub churn_window: Duration,
    /// How long a peer whose standing fell to zero is refused (as if deny-listed); zero never
    /// bans. Default one hour. See [`crate::core::Misbehaviour`] for what lowers standing.
    pub ban_period: Duration,
    /// Standing a peer regains an hour, of [`crate::core::FULL_STANDING`]. Default 10.
    pub standing_recovery_per_hour: u32,
}

impl Default for TrustPolicy {
    fn default() -> Self {
        Self {
            deny: Vec::new(),
            allow: Vec::new(),
            peer_requests_per_second: 10_000,
            peer_request_burst: 20_000,
            peer_bytes_per_second: 32 << 20,
            peer_bytes_burst: 128 << 20,
            over_limit_ban_after: Duration::from_secs(30),
            churn_max_departures: 10,
            churn_window: Duration::from_secs(3600),
            ban_period: Duration::from_secs(3600),
            standing_recovery_per_hour: 10,
        }
    }
}

/// Peers an allow or a deny list names at most.
pub const MAX_TRUST_LIST: usize = 4096;

/// Configuration of a DHT node.
#[derive(Debug, Clone)]
pub struct Config {
    /// Network name, part of the identify and DHT protocol names (`/shoal/<network>/dht/4.0.0`),
    /// so networks never mix. 1 to 64 of `[a-z0-9-]`. Default `"main"`.
    pub network: String,
    /// The identity puzzle every peer's proof must solve. Default [`PuzzleConfig::mainnet`].
    pub puzzle: PuzzleConfig,
    /// Cache and rate limit of identity verification. Default [`VerifierConfig::default`].
    pub verifier: VerifierConfig,
    /// Stamp bits required of records and lockstep notices. Default [`StampPolicy::default`].
    pub stamps: StampPolicy,
    /// TTL and clock-skew limits of records. Default [`RecordRules::default`] (7 days, 120 s).
    pub records: RecordRules,
    /// SWIM membership. Default [`shoal_swim::Config::wan`].
    pub swim: shoal_swim::Config,
    /// Network-wide broadcast of lockstep notices (`/shoal/<network>/broadcast/1`). Default
    /// [`shoal_broadcast::Config::lan`]; Tor nodes use [`shoal_broadcast::Config::tor`]. Its
    /// `rng_seed` is derived from [`Config::rng_seed`] when that is set.
    pub broadcast: shoal_broadcast::Config,
    /// Allow and deny lists of peers. Default: both empty (every peer with a valid proof).
    pub trust: TrustPolicy,
    /// Kademlia's k: replicas of a record, peers a lookup finds and an answer names. Default 20.
    pub replication_factor: NonZeroUsize,
    /// Entries per k-bucket of the routing table (and replacements kept per bucket). Default 20.
    /// SWIM holds every verified live member and seeds lookups from them, so the table answers
    /// other nodes' lookups and tells whether this node is among the closest to a key.
    pub kbucket_size: NonZeroUsize,
    /// Kademlia's alpha: requests a lookup or a get keeps in flight. Default 3.
    pub lookup_parallelism: NonZeroUsize,
    /// Independent sources a one-hop get hears from, in groups of alpha: it asks
    /// `get_paths × alpha` of the closest replicas at once and returns the highest version among
    /// that many answers holding the record (with one path it may answer with the first copy
    /// when this node can judge it alone), so a version held back by replicas that serve stale
    /// copies wins only if every one of them does. Default 1 (3 replicas; the adversarial
    /// benchmark's figures in docs/benchmarks.md say what 2 buys, at twice the requests). At
    /// most 8.
    pub get_paths: NonZeroUsize,
    /// Disjoint paths an iterative lookup takes (S/Kademlia, [`crate::core::lookup::DisjointPaths`]):
    /// every peer is asked by one path only, and the result is the closest that answered on
    /// any, so peers lying about the closest can mislead only the paths they are on. Each path
    /// costs a lookup's requests. Default 1: a lookup here starts from the full membership
    /// SWIM gives, which already holds the true closest (docs/benchmarks.md, "The DHT under
    /// attack", measures when more paths help). At most 8.
    pub lookup_paths: NonZeroUsize,
    /// Test only: answer gets and proof requests as a node that dropped every record would
    /// ([`crate::wire::Response::withheld`]), while still keeping puts and signing receipts for
    /// them: for tests of what the others do about such a node. Default false.
    pub dangerous_withhold_records: bool,
    /// How long the local view of the membership counts as unsettled after this node started,
    /// joined, refuted a suspicion of itself, or saw a departed member come back: operations
    /// then find the closest peers by Kademlia's iterative lookup instead of one hop from the
    /// view (see [`crate::core`], "Routing"). Default 10 s.
    pub view_settle: Duration,
    /// Bound of one query (lookups, puts, gets), also how long a get keeps looking for a
    /// higher sequence. Default 30 s; must be above zero.
    pub query_timeout: Duration,
    /// Replicas that must acknowledge a put (each after validating and keeping the record, see
    /// [`crate::wire::Request::PutRecord`]) when the caller gives no quorum. At most
    /// `replication_factor`. Default 3.
    pub put_quorum: NonZeroUsize,
    /// Bound of one identity-proof exchange, of a proof-relay request, and of how long a peer's
    /// requests wait for its check. Default 10 s; must be above zero.
    pub gate_timeout: Duration,
    /// How long a join waits for a seed's connection, or for its identity exchange once
    /// connected, before dialing it again beside the first attempt (a fresh connection that
    /// replaces a late one), up to [`SEED_DIALS`](crate::core::SEED_DIALS) attempts; also how
    /// long a SWIM join retry waits for the fresh connection after an attempt got no answer.
    /// `None` never redials. A lost TCP SYN (or SYN-ACK) is sent again by the kernel after 1 s,
    /// then 3 s and 7 s, so on a lossy link one unlucky joiner waits seconds for a connection
    /// that a fresh attempt makes in one round trip. Default 1 s (a few round trips of a long
    /// path, so a healthy exchange is not replaced); 300 ms on the LAN presets (testnet,
    /// local); `None` on Tor, where a second attempt builds another rendezvous circuit.
    pub seed_redial: Option<Duration>,
    /// Bound of one request to a peer: a lookup step, a get step, a replica put, a lockstep
    /// announcement or read. Default 10 s; must be above zero.
    pub request_timeout: Duration,
    /// How often every record held is sent again to the nodes closest to its key in the local
    /// view, so copies lost with failed nodes are made again (libp2p-kad's replication
    /// interval). Default 1 h; must be above zero.
    pub republish_interval: Duration,
    /// How long a copy of a record kept beyond a put's quorum ([`crate::wire::Request::PutCopy`])
    /// may stay off disk: such copies are answered once kept, written together, and a flushed
    /// commit within this delay makes them durable (one disk flush for many copies instead of
    /// one each).
    /// A crash within it loses them; the publisher's next republish makes them again. The
    /// quorum's copies are always on disk before they are acknowledged. Default 1 s; must be
    /// above zero.
    pub copy_flush_delay: Duration,
    /// How long a connection with no open stream is kept. Default 60 s.
    pub idle_connection_timeout: Duration,
    /// Record store limits. Default [`StoreConfig::default`].
    pub store: StoreConfig,
    /// Lockstep notice book limits. Default [`NoticeBookConfig::default`].
    pub notices: NoticeBookConfig,
    /// Directory of the redb database (records and notices survive restarts); `None` keeps
    /// everything in memory. Default `None`.
    pub data_dir: Option<PathBuf>,
    /// How often the routing-table snapshot (verified, live members with their addresses) is
    /// written to the data directory; it is also written on shutdown. Only with
    /// [`data_dir`](Self::data_dir). Default 60 s; must be above zero.
    pub routing_snapshot_interval: Duration,
    /// Commands queued from clients before senders wait. Default 64.
    pub command_queue: NonZeroUsize,
    /// Accepted notices buffered per subscriber before a slow one lags. Default 256.
    pub notice_buffer: NonZeroUsize,
    /// Seed of the core's random number generator (lookup order, SWIM's choices). `None`
    /// (default) seeds from OS entropy; the simulator and tests set it.
    pub rng_seed: Option<[u8; 32]>,
    /// NAT traversal (AutoNAT, circuit relays, hole punching, UPnP). Default
    /// [`NatConfig::default`]: off.
    pub nat: NatConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            network: "main".to_owned(),
            puzzle: PuzzleConfig::mainnet(),
            verifier: VerifierConfig::default(),
            stamps: StampPolicy::default(),
            records: RecordRules::default(),
            swim: shoal_swim::Config::wan(),
            broadcast: shoal_broadcast::Config::lan(),
            trust: TrustPolicy::default(),
            replication_factor: nz(20),
            kbucket_size: nz(20),
            lookup_parallelism: nz(3),
            get_paths: nz(1),
            lookup_paths: nz(1),
            dangerous_withhold_records: false,
            view_settle: Duration::from_secs(10),
            query_timeout: Duration::from_secs(30),
            put_quorum: nz(3),
            gate_timeout: Duration::from_secs(10),
            seed_redial: Some(Duration::from_secs(1)),
            request_timeout: Duration::from_secs(10),
            republish_interval: Duration::from_secs(3600),
            copy_flush_delay: Duration::from_secs(1),
            idle_connection_timeout: Duration::from_secs(60),
            store: StoreConfig::default(),
            notices: NoticeBookConfig::default(),
            data_dir: None,
            routing_snapshot_interval: Duration::from_secs(60),
            command_queue: nz(64),
            notice_buffer: nz(256),
            rng_seed: None,
            nat: NatConfig::default(),
        }
    }
}

fn nz(n: usize) -> NonZeroUsize {
    // Invariant: only called with literal non-zero constants.
    NonZeroUsize::new(n).expect("non-zero constant")
}

impl Config {
    /// The public test network: testnet puzzle (difficulty 4) and cheap stamps, LAN SWIM timing.
    pub fn testnet() -> Self {
        Self {
            network: "testnet".to_owned(),
            puzzle: PuzzleConfig::testnet(),
            stamps: StampPolicy::testnet(),
            swim: shoal_swim::Config::lan(),
            seed_redial: Some(Duration::from_millis(300)),
            ..Self::default()
        }
    }

    /// Many nodes in one process (tests, simulations): a tiny scrypt (`log_n` 4, difficulty 2),
    /// no verification rate limit, cheap stamps, LAN SWIM with frequent push-pulls, short
    /// timeouts, k = 8 (replicas and bucket size), put quorum 2.
    pub fn local() -> Self {
        Self {
            network: "local".to_owned(),
            puzzle: PuzzleConfig {
                network_id: "shoal-local".to_owned(),
                log_n: 4,
                difficulty: 2,
                ..PuzzleConfig::testnet()
            },
            // A log_n 4 evaluation costs microseconds: lift the rate limit so a whole cluster
            // joining through one seed is not refused.
            verifier: VerifierConfig {
                rate_per_second: NonZeroU32::new(100_000).expect("non-zero constant"),
                burst: NonZeroU32::new(100_000).expect("non-zero constant"),
                ..VerifierConfig::default()
            },
            stamps: StampPolicy::testnet(),
            swim: shoal_swim::Config {
                push_pull_interval: Duration::from_secs(2),
                reconnect_interval: Duration::from_secs(1),
                ..shoal_swim::Config::lan()
            },
            replication_factor: nz(8),
            kbucket_size: nz(8),
            query_timeout: Duration::from_secs(10),
            put_quorum: nz(2),
            gate_timeout: Duration::from_secs(5),
            seed_redial: Some(Duration::from_millis(300)),
            request_timeout: Duration::from_secs(5),
            ..Self::default()
        }
    }

    /// Checks every part.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let ok = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-';
        if self.network.is_empty() || self.network.len() > 64 || !self.network.chars().all(ok) {
            return Err(ConfigError::BadNetwork(self.network.clone()));
        }
        self.puzzle.validate()?;
        self.stamps.validate()?;
        self.swim.validate()?;
        self.broadcast.validate()?;
        for (name, list) in [("deny", &self.trust.deny), ("allow", &self.trust.allow)] {
            if list.len() > MAX_TRUST_LIST {
                return Err(ConfigError::TrustListTooLong(name, list.len()));
            }
        }
        for (name, t) in [
            ("query_timeout", self.query_timeout),
            ("gate_timeout", self.gate_timeout),
            ("request_timeout", self.request_timeout),
            ("republish_interval", self.republish_interval),
            ("copy_flush_delay", self.copy_flush_delay),
            ("routing_snapshot_interval", self.routing_snapshot_interval),
        ] {
            if t.is_zero() {
                return Err(ConfigError::ZeroTimeout(name));
            }
        }
        self.nat.validate().map_err(ConfigError::Nat)?;
        if self.seed_redial.is_some_and(|t| t.is_zero()) {
            return Err(ConfigError::ZeroTimeout("seed_redial"));
        }
        if self.lookup_paths.get() > crate::core::lookup::MAX_LOOKUP_PATHS {
            return Err(ConfigError::LookupPaths(self.lookup_paths.get()));
        }
        if self.get_paths.get() > 8 {
            return Err(ConfigError::GetPaths(self.get_paths.get()));
        }
        if self.put_quorum > self.replication_factor {
            return Err(ConfigError::QuorumAboveReplication {
                quorum: self.put_quorum.get(),
                replication: self.replication_factor.get(),
            });
        }
        Ok(())
    }

    /// The identify protocol name: `/shoal/<network>/id/1.0.0`.
    pub fn identify_protocol(&self) -> String {
        format!("/shoal/{}/id/1.0.0", self.network)
    }

    /// The DHT protocol name: `/shoal/<network>/dht/4.0.0`, so networks never mix.
    pub fn dht_protocol(&self) -> String {
        format!("/shoal/{}/dht/4.0.0", self.network)
    }

    /// The broadcast protocol name: `/shoal/<network>/broadcast/1`.
    pub fn broadcast_protocol(&self) -> String {
        format!("/shoal/{}/broadcast/1", self.network)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_validate() {
        for c in [Config::default(), Config::testnet(), Config::local()] {
            c.validate().unwrap();
        }
        assert_eq!(Config::local().dht_protocol(), "/shoal/local/dht/4.0.0");
    }

    #[test]
    fn bad_values_are_refused() {
        let bad = Config {
            network: "Main Net".into(),
            ..Config::local()
        };
        assert!(matches!(bad.validate(), Err(ConfigError::BadNetwork(_))));
        let bad = Config {
            put_quorum: nz(9),
            ..Config::local()
        };
        assert!(matches!(
            bad.validate(),
            Err(ConfigError::QuorumAboveReplication { .. })
        ));
        let bad = Config {
            gate_timeout: Duration::ZERO,
            ..Config::local()
        };
        assert_eq!(
            bad.validate(),
            Err(ConfigError::ZeroTimeout("gate_timeout"))
        );
    }
}
