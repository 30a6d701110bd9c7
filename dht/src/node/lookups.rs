//! Closest-peer lookups ([`crate::lookup`]) run by the event loop: seeded from the verified live
//! members, sent on `/shoal/find/1`, answered from kad's routing table.

use std::collections::HashMap;
use std::time::Instant;

use libp2p::PeerId;
use libp2p::kad::KBucketKey;
use libp2p::request_response::{self as rr, OutboundRequestId};
use serde_bytes::ByteBuf;

use super::LookupStats;
use super::event_loop::EventLoop;
use super::queries::Closest;
use crate::behaviour::Exchange;
use crate::lookup::{self, ClosestPeers, KeyHash};

/// A lookup under way.
pub(super) struct Lookup {
    /// The key as sent in each request.
    target: ByteBuf,
    state: ClosestPeers,
    what: Closest,
    started: Instant,
}

/// The lookups of one event loop and their requests.
#[derive(Default)]
pub(super) struct Lookups {
    running: HashMap<usize, Lookup>,
    requests: HashMap<OutboundRequestId, usize>,
}

impl EventLoop {
    /// Starts a lookup of the peers closest to `target` (a record key, or a peer id's bytes);
    /// `what` says what to do with them.
    pub(super) fn start_lookup(&mut self, target: &[u8], what: Closest) {
        let hash = KeyHash::of(target);
        let local = *self.swarm.local_peer_id();
        let k = self.config.replication_factor;
        let members = self.verified_live_members();
        // Twice k: members that fail (SWIM has not evicted them yet) are replaced by the next
        // closest without waiting for an answer to name them.
        let seeds = lookup::closest(&hash, members, 2 * k.get());
        let state = ClosestPeers::new(hash, local, k, self.config.lookup_parallelism, seeds);
        let id = self.next_id;
        self.next_id += 1;
        self.stats.kad_queries += 1;
        self.lookups.running.insert(
            id,
            Lookup {
                target: ByteBuf::from(target),
                state,
                what,
                started: Instant::now(),
            },
        );
        self.advance_lookup(id);
    }

    /// Sends the requests lookup `id` has room for, or ends it if it is finished.
    fn advance_lookup(&mut self, id: usize) {
        let Some(l) = self.lookups.running.get_mut(&id) else {
            return;
        };
        let target = l.target.clone();
        let mut sent = Vec::new();
        while let Some(peer) = l.state.next_peer() {
            sent.push(peer);
        }
        let finished = l.state.is_finished();
        for peer in sent {
            let request = lookup::Request {
                target: target.clone(),
            };
            let rid = self.swarm.behaviour_mut().find.send_request(&peer, request);
            self.lookups.requests.insert(rid, id);
            self.stats.kad_rpcs.lookups += 1;
        }
        if finished {
            self.finish_lookup(id, false);
        }
    }

    /// Ends lookup `id` and hands its peers to what it was for.
    fn finish_lookup(&mut self, id: usize, timed_out: bool) {
        let Some(l) = self.lookups.running.remove(&id) else {
            return;
        };
        let counts = l.state.counts();
        let stats = LookupStats {
            requests: counts.requests,
            successes: counts.answers,
            failures: counts.failures,
            duration: (counts.requests > 0).then(|| l.started.elapsed()),
        };
        self.on_closest(l.what, l.state.peers(), timed_out, stats);
    }

    /// Ends the lookups older than [`crate::Config::query_timeout`] with what they found.
    pub(super) fn expire_lookups(&mut self, now: Instant) {
        let bound = self.config.query_timeout;
        let late: Vec<usize> = self
            .lookups
            .running
            .iter()
            .filter(|(_, l)| now.duration_since(l.started) >= bound)
            .map(|(id, _)| *id)
            .collect();
        for id in late {
            self.finish_lookup(id, true);
        }
    }

    pub(super) fn on_find(&mut self, event: rr::Event<lookup::Request, lookup::Response>) {
        match Exchange::of(event) {
            Some(Exchange::Request {
                peer,
                request,
                channel,
            }) => {
                self.stats.lookups_served += 1;
                // Only admitted members are answered, from the routing table (verified peers
                // SWIM holds alive), the asker left out.
                let response = if self.verified.contains_key(&peer) {
                    let k = self.config.replication_factor.get();
                    let key = KBucketKey::new(request.target.into_vec());
                    let closest: Vec<PeerId> = self
                        .kad_mut()
                        .get_closest_local_peers(&key)
                        .map(|entry| *entry.preimage())
                        .filter(|p| *p != peer)
                        .take(k)
                        .collect();
                    lookup::answer(closest)
                } else {
                    lookup::answer([])
                };
                // The peer may have gone; then there is nobody to answer.
                let _ = self
                    .swarm
                    .behaviour_mut()
                    .find
                    .send_response(channel, response);
            }
            Some(Exchange::Outcome {
                peer,
                request_id,
                response,
            }) => {
                let Some(id) = self.lookups.requests.remove(&request_id) else {
                    return;
                };
                let verified = &self.verified;
                let Some(l) = self.lookups.running.get_mut(&id) else {
                    return;
                };
                match response {
                    // Peers this node has not verified take no part (see `crate::lookup`).
                    Some(response) => l.state.on_answer(
                        &peer,
                        lookup::peers_from(response)
                            .into_iter()
                            .filter(|p| verified.contains_key(p)),
                    ),
                    None => l.state.on_failure(&peer),
                }
                self.advance_lookup(id);
            }
            None => {}
        }
    }
}
