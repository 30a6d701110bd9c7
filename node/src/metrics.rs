//! Prometheus metrics, served at `GET /metrics` on the JSON-RPC port in the OpenMetrics text
//! format.
//!
//! Two sources: the JSON-RPC layer counts calls and times them by method (the latency of
//! lookups, gets and puts as clients see it), and each scrape asks the DHT node for its counters
//! (SWIM members by state, probes, refutations, DHT queries, records, notices, identity-proof
//! checks and refusals).

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use shoal_dht::node::NodeStats;

use crate::join::JoinStatus;

/// Labels of a JSON-RPC call counter.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    method: String,
    outcome: String,
}

/// Labels of a per-method histogram.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct MethodLabels {
    method: String,
}

/// Labels naming a state or kind.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: String,
}

/// Labels of a byte count: which protocol, which way.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TrafficLabels {
    protocol: String,
    direction: String,
}

/// Gauges and counters mirrored from the DHT node at each scrape.
#[derive(Debug, Default)]
struct Mirrored {
    members: Family<KindLabels, Gauge>,
    probes: Counter,
    failed_probes: Counter,
    refutations: Counter,
    member_changes: Family<KindLabels, Counter>,
    swim_messages: Family<KindLabels, Counter>,
    kad_queries: Counter,
    paths: Family<KindLabels, Counter>,
    records: Gauge,
    notices: Gauge,
    routing_peers: Gauge,
    puts_stored: Counter,
    puts_refused: Counter,
    proof_checks: Family<KindLabels, Counter>,
    peers_verified: Counter,
    peers_refused: Counter,
    peers_verified_by_relay: Counter,
    relayed_proofs_refused: Counter,
    checks_pending: Gauge,
    scrypt_micros: Counter,
    relayers_distrusted: Counter,
    trust_denied: Family<KindLabels, Counter>,
    trust_misbehaviour: Family<KindLabels, Counter>,
    traffic: Family<TrafficLabels, Counter>,
    trust_banned: Counter,
    trust_churn_holds: Counter,
    trust_slowed: Counter,
    trust_bans: Gauge,
    broadcast_notices: Family<KindLabels, Counter>,
    broadcast_dropped: Family<KindLabels, Counter>,
    broadcast_tree: Family<KindLabels, Counter>,
    broadcast_messages: Family<KindLabels, Counter>,
    broadcast_bytes: Family<KindLabels, Counter>,
    broadcast_views: Family<KindLabels, Gauge>,
    nat_reachability: Family<KindLabels, Gauge>,
    nat_relays: Gauge,
    nat_events: Family<KindLabels, Counter>,
}

/// The node's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    calls: Family<CallLabels, Counter>,
    latency: Family<MethodLabels, Histogram>,
    rate_limited: Counter,
    unauthorized: Counter,
    mirrored: Mirrored,
    /// The join's progress, once the node is running ([`Metrics::watch_join`]).
    join: OnceLock<Arc<JoinStatus>>,
    join_attempts: Counter,
    join_failures: Counter,
    joined: Gauge,
    /// Serialises scrapes so mirrored counters are updated by one scrape at a time.
    scrape: Mutex<()>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Brings a mirrored counter up to `value` (counters only grow; a smaller value is ignored).
fn mirror(counter: &Counter, value: u64) {
    let current = counter.get();
    if value > current {
        counter.inc_by(value - current);
    }
}

fn gauge(value: usize) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

impl Metrics {
    /// A registry with every metric at zero.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("shoal");
        let calls = Family::<CallLabels, Counter>::default();
        let latency = Family::<MethodLabels, Histogram>::new_with_constructor(|| {
            // 100 µs to about 52 s.
            Histogram::new(exponential_buckets(0.0001, 2.0, 20))
        });
        let (rate_limited, unauthorized) = (Counter::default(), Counter::default());
        let m = Mirrored::default();
        registry.register(
            "rpc_calls",
            "JSON-RPC calls by method and outcome",
            calls.clone(),
        );
        registry.register(
            "rpc_call_duration_seconds",
            "Time to answer a JSON-RPC call, by method (dht_get and dht_findNode are lookups)",
            latency.clone(),
        );
        registry.register(
            "rpc_rate_limited",
            "JSON-RPC calls refused by the per-connection rate limit",
            rate_limited.clone(),
        );
        registry.register(
            "rpc_unauthorized",
            "HTTP requests refused for a missing or wrong bearer token",
            unauthorized.clone(),
        );
        registry.register(
            "swim_members",
            "SWIM members known, by state (alive, suspect, dead, left)",
            m.members.clone(),
        );
        registry.register("swim_probes", "SWIM probes started", m.probes.clone());
        registry.register(
            "nat_reachability",
            "1 for what AutoNAT found of this node's reachability (unknown, public, private)",
            m.nat_reachability.clone(),
        );
        registry.register(
            "nat_relays",
            "Circuit relays holding an accepted reservation for this node",
            m.nat_relays.clone(),
        );
        registry.register(
            "nat_events",
            "NAT traversal since start, by kind (probe_confirmed, probe_failed, \
             reservation_asked, reservation_accepted, reservation_lost, hole_punched, \
             hole_punch_failed, hole_punch_retried)",
            m.nat_events.clone(),
        );
        registry.register(
            "swim_failed_probes",
            "SWIM probes that ended without an ack",
            m.failed_probes.clone(),
        );
        registry.register(
            "swim_refutations",
            "Times this node refuted news of its own suspicion or death",
            m.refutations.clone(),
        );
        registry.register(
            "swim_member_changes",
            "SWIM membership changes seen, by kind (joined, suspected, refuted, failed, left)",
            m.member_changes.clone(),
        );
        registry.register(
            "swim_messages",
            "SWIM messages by kind (sent, received, malformed)",
            m.swim_messages.clone(),
        );
        registry.register(
            "dht_queries",
            "Queries started (puts, gets, lookups, notice reads)",
            m.kad_queries.clone(),
        );
        registry.register(
            "dht_query_paths",
            "Queries by how they found their peers (one-hop from the local view, or iterative)",
            m.paths.clone(),
        );
        registry.register(
            "dht_records",
            "Records held by this node",
            m.records.clone(),
        );
        registry.register(
            "lockstep_notices",
            "Lockstep notices held by this node",
            m.notices.clone(),
        );
        registry.register(
            "dht_routing_peers",
            "Peers in the Kademlia routing table",
            m.routing_peers.clone(),
        );
        registry.register(
            "dht_puts_stored",
            "Inbound puts validated and stored",
            m.puts_stored.clone(),
        );
        registry.register(
            "dht_puts_refused",
            "Inbound puts refused (invalid record, lockstep, store)",
            m.puts_refused.clone(),
        );
        registry.register(
            "identity_proof_checks",
            "Identity-proof checks by kind (scrypt, cached, rejected, rate_limited)",
            m.proof_checks.clone(),
        );
        registry.register(
            "peers_verified",
            "Peers whose identity proof was verified",
            m.peers_verified.clone(),
        );
        registry.register(
            "peers_refused",
            "Peers refused for an invalid identity proof",
            m.peers_refused.clone(),
        );
        registry.register(
            "peers_verified_by_relay",
            "Members verified through a proof relayed by the member that named them",
            m.peers_verified_by_relay.clone(),
        );
        registry.register(
            "relayed_proofs_refused",
            "Relayed identity proofs that did not verify",
            m.relayed_proofs_refused.clone(),
        );
        registry.register(
            "identity_checks_pending",
            "Members listed on a relayed identity proof whose check has not ended",
            m.checks_pending.clone(),
        );
        registry.register(
            "identity_check_microseconds",
            "Time spent in identity-proof scrypt evaluations",
            m.scrypt_micros.clone(),
        );
        registry.register(
            "relayers_distrusted",
            "Relayers no longer asked for proofs since one they relayed failed its check",
            m.relayers_distrusted.clone(),
        );
        registry.register(
            "trust_denied",
            "Refusals of the trust policy (peers: admissions refused by the allow and deny lists; \
             messages: requests and SWIM messages of refused peers; rate_limited: requests \
             over a peer's rate for their method; bandwidth_limited: requests and messages over \
             a peer's bandwidth)",
            m.trust_denied.clone(),
        );
        registry.register(
            "trust_misbehaviour",
            "Misbehaviour of peers this node proved, by kind (bad_receipt: a receipt that does \
             not verify for the record or its sender; denied_receipt: a replica answered without \
             a record it signed a receipt for; invalid_record: a record with a forged signature or \
             stamp; over_limit: stayed over a request rate or bandwidth; eclipse_answer: a lookup \
             answer hiding the closest members)",
            m.trust_misbehaviour.clone(),
        );
        registry.register(
            "traffic_bytes",
            "Bytes of messages (requests, answers, told messages; without framing) received and \
             sent, by protocol (dht, swim, broadcast) and direction (in, out)",
            m.traffic.clone(),
        );
        registry.register(
            "trust_banned",
            "Peers banned since start because their standing fell to zero",
            m.trust_banned.clone(),
        );
        registry.register(
            "trust_slowed",
            "Requests over their sender's rate held and served later, at the rate",
            m.trust_slowed.clone(),
        );
        registry.register(
            "trust_churn_holds",
            "Peers held out since start because they failed or left too often lately",
            m.trust_churn_holds.clone(),
        );
        registry.register(
            "trust_bans",
            "Bans for misbehaviour in force",
            m.trust_bans.clone(),
        );
        registry.register(
            "broadcast_notices",
            "Network-wide lockstep notices by fate (published here, delivered to subscribers, \
             duplicate, late: arrived after delivery passed it, skipped: given up on in a gap)",
            m.broadcast_notices.clone(),
        );
        registry.register(
            "broadcast_dropped",
            "Broadcast notices and messages dropped, by reason (invalid: failed the lockstep \
             check, oversized, malformed, malformed_message, unadmitted: sender not admitted, \
             ihave_flood and graft_flood: announcements and grafts over a peer's share, \
             not_neighbor, queue_full)",
            m.broadcast_dropped.clone(),
        );
        registry.register(
            "broadcast_tree",
            "Broadcast tree repair (grafts_sent, grafts_received, prunes_sent, \
             prunes_received, neighbors_up, neighbors_down)",
            m.broadcast_tree.clone(),
        );
        registry.register(
            "broadcast_messages",
            "Broadcast messages sent, by kind",
            m.broadcast_messages.clone(),
        );
        registry.register(
            "broadcast_sent_bytes",
            "Bytes of broadcast messages sent, by kind",
            m.broadcast_bytes.clone(),
        );
        registry.register(
            "broadcast_view",
            "Broadcast overlay views (active, eager, lazy, passive, members)",
            m.broadcast_views.clone(),
        );
        let (join_attempts, join_failures, joined) =
            (Counter::default(), Counter::default(), Gauge::default());
        registry.register(
            "join_attempts",
            "Attempts to join the network through the seeds",
            join_attempts.clone(),
        );
        registry.register(
            "join_failures",
            "Join attempts that failed (each logged with its reason; the node keeps trying)",
            join_failures.clone(),
        );
        registry.register(
            "joined",
            "1 once the node joined its network (or has no seeds: it is the first), else 0",
            joined.clone(),
        );
        Self {
            registry,
            calls,
            latency,
            rate_limited,
            unauthorized,
            mirrored: m,
            join: OnceLock::new(),
            join_attempts,
            join_failures,
            joined,
            scrape: Mutex::new(()),
        }
    }

    /// Reports `join`'s progress from now on (the first call wins).
    pub fn watch_join(&self, join: Arc<JoinStatus>) {
        let _ = self.join.set(join);
    }

    /// Mirrors the join's progress, if watched.
    fn update_join(&self) {
        let Some(join) = self.join.get() else {
            return;
        };
        let state = join.get();
        mirror(&self.join_attempts, state.attempts);
        mirror(&self.join_failures, state.failures);
        self.joined
            .set(i64::from(state.phase != crate::join::Phase::Joining));
    }

    /// Records one JSON-RPC call: its method, its outcome (`"ok"` or an error name) and how long
    /// it took.
    pub fn observe(&self, method: &str, outcome: &str, elapsed: Duration) {
        self.calls
            .get_or_create(&CallLabels {
                method: method.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
        self.latency
            .get_or_create(&MethodLabels {
                method: method.to_owned(),
            })
            .observe(elapsed.as_secs_f64());
    }

    /// Counts calls refused by the rate limit.
    pub fn rate_limited(&self, calls: u64) {
        self.rate_limited.inc_by(calls);
    }

    /// Counts a request refused for its token.
    pub fn unauthorized(&self) {
        self.unauthorized.inc();
    }

    /// Mirrors the DHT node's counters.
    fn update(&self, stats: &NodeStats) {
        let m = &self.mirrored;
        for (kind, n) in [
            ("alive", stats.members.alive),
            ("suspect", stats.members.suspect),
            ("dead", stats.members.dead),
            ("left", stats.members.left),
        ] {
            m.members
                .get_or_create(&KindLabels { kind: kind.into() })
                .set(gauge(n));
        }
        mirror(&m.probes, stats.swim.probes);
        mirror(&m.failed_probes, stats.swim.failed_probes);
        mirror(&m.refutations, stats.swim.refutations);
        let changes = &stats.swim.changes;
        for (kind, n) in [
            ("joined", changes.joined),
            ("suspected", changes.suspected),
            ("refuted", changes.refuted),
            ("failed", changes.failed),
            ("left", changes.left),
        ] {
            mirror(
                &m.member_changes
                    .get_or_create(&KindLabels { kind: kind.into() }),
                n,
            );
        }
        for (kind, n) in [
            ("sent", stats.swim_wire.sent),
            ("received", stats.swim_wire.received),
            ("malformed", stats.swim_wire.malformed),
        ] {
            mirror(
                &m.swim_messages
                    .get_or_create(&KindLabels { kind: kind.into() }),
                n,
            );
        }
        mirror(&m.kad_queries, stats.queries);
        for (kind, n) in [("one-hop", stats.one_hop), ("iterative", stats.iterative)] {
            mirror(&m.paths.get_or_create(&KindLabels { kind: kind.into() }), n);
        }
        m.records.set(gauge(stats.records));
        m.notices.set(gauge(stats.notices));
        m.routing_peers.set(gauge(stats.routing_peers));
        mirror(&m.puts_stored, stats.stored_puts);
        mirror(&m.puts_refused, stats.refused_puts.values().sum());
        for (kind, n) in [
            ("scrypt", stats.verifier.scrypt_evaluations),
            ("cached", stats.verifier.cache_hits),
            ("rejected", stats.verifier.rejected),
            ("rate_limited", stats.verifier.rate_limited),
        ] {
            mirror(
                &m.proof_checks
                    .get_or_create(&KindLabels { kind: kind.into() }),
                n,
            );
        }
        mirror(&m.peers_verified, stats.verified as u64);
        mirror(&m.peers_refused, stats.refused_peers as u64);
        mirror(&m.peers_verified_by_relay, stats.verified_by_relay as u64);
        mirror(&m.relayed_proofs_refused, stats.refused_relayed as u64);
        m.checks_pending.set(gauge(stats.checks_pending));
        mirror(&m.scrypt_micros, stats.verifier.scrypt_micros);
        mirror(&m.relayers_distrusted, stats.relayers_distrusted as u64);
        for (kind, n) in [
            ("peers", stats.denied.0),
            ("messages", stats.denied.1),
            ("rate_limited", stats.rate_limited),
            ("bandwidth_limited", stats.bandwidth_limited),
        ] {
            mirror(
                &m.trust_denied
                    .get_or_create(&KindLabels { kind: kind.into() }),
                n,
            );
        }
        for (kind, n) in &stats.misbehaviour {
            mirror(
                &m.trust_misbehaviour.get_or_create(&KindLabels {
                    kind: (*kind).into(),
                }),
                *n,
            );
        }
        mirror(&m.trust_banned, stats.bans.0);
        mirror(&m.trust_churn_holds, stats.churn_holds);
        mirror(&m.trust_slowed, stats.slowed);
        let t = &stats.traffic;
        for (protocol, traffic) in [("dht", t.dht), ("swim", t.swim), ("broadcast", t.broadcast)] {
            for (direction, n) in [("in", traffic.bytes_in), ("out", traffic.bytes_out)] {
                let labels = TrafficLabels {
                    protocol: protocol.into(),
                    direction: direction.into(),
                };
                mirror(&m.traffic.get_or_create(&labels), n);
            }
        }
        m.trust_bans.set(gauge(stats.bans.1));
        self.update_broadcast(stats);
        self.update_nat(&stats.nat);
    }

    /// Mirrors NAT traversal's state and counters.
    fn update_nat(&self, nat: &shoal_dht::node::NatReport) {
        use shoal_dht::nat::Reachability;
        let m = &self.mirrored;
        for r in [
            Reachability::Unknown,
            Reachability::Public,
            Reachability::Private,
        ] {
            m.nat_reachability
                .get_or_create(&KindLabels {
                    kind: r.as_str().into(),
                })
                .set(i64::from(r == nat.reachability));
        }
        m.nat_relays.set(gauge(nat.relays.len()));
        for (kind, n) in [
            ("probe_confirmed", nat.probes_confirmed),
            ("probe_failed", nat.probes_failed),
            ("reservation_asked", nat.reservations_asked),
            ("reservation_accepted", nat.reservations_accepted),
            ("reservation_lost", nat.reservations_lost),
            ("hole_punched", nat.holes_punched),
            ("hole_punch_failed", nat.hole_punch_failures),
            ("hole_punch_retried", nat.hole_punch_retries),
        ] {
            mirror(
                &m.nat_events
                    .get_or_create(&KindLabels { kind: kind.into() }),
                n,
            );
        }
    }

    /// Mirrors the broadcast's counters.
    fn update_broadcast(&self, stats: &NodeStats) {
        let m = &self.mirrored;
        let b = &stats.broadcast;
        let w = &stats.broadcast_wire;
        let counters = [
            (&m.broadcast_notices, "published", b.published),
            (&m.broadcast_notices, "delivered", b.delivered),
            (&m.broadcast_notices, "duplicate", b.duplicates),
            (&m.broadcast_notices, "late", b.late),
            (&m.broadcast_notices, "skipped", b.skipped),
            (&m.broadcast_dropped, "invalid", b.rejected.invalid),
            (&m.broadcast_dropped, "oversized", b.rejected.oversized),
            (&m.broadcast_dropped, "malformed", b.rejected.malformed),
            (&m.broadcast_dropped, "malformed_message", w.malformed),
            (&m.broadcast_dropped, "unadmitted", w.unadmitted),
            (&m.broadcast_dropped, "ihave_flood", b.drops.announcements),
            (&m.broadcast_dropped, "graft_flood", b.drops.graft_answers),
            (&m.broadcast_dropped, "not_neighbor", b.drops.not_neighbor),
            (
                &m.broadcast_dropped,
                "queue_full",
                b.drops.transmits + b.drops.lazy,
            ),
            (&m.broadcast_tree, "grafts_sent", b.grafts_sent),
            (&m.broadcast_tree, "grafts_received", b.grafts_received),
            (&m.broadcast_tree, "prunes_sent", b.prunes_sent),
            (&m.broadcast_tree, "prunes_received", b.prunes_received),
            (&m.broadcast_tree, "neighbors_up", b.neighbors.up),
            (&m.broadcast_tree, "neighbors_down", b.neighbors.down),
        ];
        for (family, kind, n) in counters {
            mirror(&family.get_or_create(&KindLabels { kind: kind.into() }), n);
        }
        for kind in shoal_broadcast::MessageKind::ALL {
            let label = KindLabels {
                kind: kind.name().into(),
            };
            let i = kind as usize;
            mirror(
                &m.broadcast_messages.get_or_create(&label),
                b.traffic.messages[i],
            );
            mirror(&m.broadcast_bytes.get_or_create(&label), b.traffic.bytes[i]);
        }
        let v = &b.views;
        for (kind, n) in [
            ("active", v.active),
            ("eager", v.eager),
            ("lazy", v.lazy),
            ("passive", v.passive),
            ("members", v.members),
        ] {
            m.broadcast_views
                .get_or_create(&KindLabels { kind: kind.into() })
                .set(gauge(n));
        }
    }

    /// Asks `node` for its counters and renders every metric in the OpenMetrics text format.
    pub async fn render(&self, node: &shoal_dht::Client) -> String {
        let stats = node.stats().await;
        // Invariant: no code panics while holding the lock.
        let _one_scrape = self.scrape.lock().expect("scrape lock not poisoned");
        if let Some(stats) = &stats {
            self.update(stats);
        }
        self.update_join();
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirrored_counters_follow_the_node() {
        let metrics = Metrics::new();
        let mut stats = NodeStats::default();
        stats.swim.probes = 10;
        stats.members.alive = 4;
        metrics.update(&stats);
        stats.swim.probes = 12;
        stats.swim.changes.suspected = 3;
        stats.broadcast.delivered = 5;
        stats.broadcast.views.active = 4;
        stats.broadcast_wire.unadmitted = 2;
        stats.broadcast.traffic.messages[shoal_broadcast::MessageKind::Gossip as usize] = 9;
        stats.nat.reachability = shoal_dht::nat::Reachability::Private;
        stats.nat.holes_punched = 2;
        metrics.update(&stats);
        assert_eq!(metrics.mirrored.probes.get(), 12);
        metrics.observe("dht_get", "ok", Duration::from_millis(3));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &metrics.registry)
            .expect("encoding to a String succeeds");
        assert!(text.contains("shoal_swim_probes_total 12"), "{text}");
        assert!(
            text.contains("shoal_swim_members{kind=\"alive\"} 4"),
            "{text}"
        );
        assert!(
            text.contains("shoal_swim_member_changes_total{kind=\"suspected\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("shoal_rpc_calls_total{method=\"dht_get\",outcome=\"ok\"} 1"),
            "{text}"
        );
        for line in [
            "shoal_broadcast_notices_total{kind=\"delivered\"} 5",
            "shoal_broadcast_view{kind=\"active\"} 4",
            "shoal_broadcast_dropped_total{kind=\"unadmitted\"} 2",
            "shoal_broadcast_messages_total{kind=\"gossip\"} 9",
            "shoal_nat_reachability{kind=\"private\"} 1",
            "shoal_nat_reachability{kind=\"public\"} 0",
            "shoal_nat_events_total{kind=\"hole_punched\"} 2",
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
    }
}
