//! Replica puts: a put's record goes to the `k` closest peers on `/shoal/replica/1`, and its
//! quorum counts the replicas that validated and kept it ([`crate::replica`]). Also the replica
//! side: validating and keeping a record a peer sent, on this protocol or through kad.

use std::time::Instant;

use libp2p::PeerId;
use libp2p::request_response::{self as rr, OutboundRequestId, ResponseChannel};
use serde_bytes::ByteBuf;
use shoal_pow::unix_now;
use tokio::sync::oneshot;

use super::admission::Held;
use super::event_loop::EventLoop;
use super::queries::Closest;
use super::{PutError, PutOk, PutResult};
use crate::behaviour::Exchange;
use crate::record::SignedRecord;
use crate::replica::{Request, Response};

/// A put whose record is kept locally, waiting for the lookup of the peers closest to its key.
pub(super) struct PutJob {
    pub(super) key: Vec<u8>,
    pub(super) seq: u64,
    pub(super) quorum: usize,
    pub(super) envelope: Vec<u8>,
    pub(super) reply: oneshot::Sender<PutResult>,
}

/// A put sent to its replicas, counting their answers.
pub(super) struct Replicating {
    key: Vec<u8>,
    seq: u64,
    quorum: usize,
    /// `None` once the caller was answered (quorum reached); the remaining replicas still get
    /// the record.
    reply: Option<oneshot::Sender<PutResult>>,
    outstanding: usize,
    stored: usize,
    refused: usize,
    /// The first refusal's reason.
    reason: Option<String>,
}

impl EventLoop {
    /// Looks up the peers closest to the job's key, then sends them the record.
    pub(super) fn start_replication(&mut self, job: PutJob) {
        let key = job.key.clone();
        self.start_lookup(&key, Closest::Put(Box::new(job)));
    }

    /// Sends the job's record to up to `k` of `peers` (this node left out). The caller is
    /// answered as soon as `quorum` replicas kept it, or once every replica answered.
    pub(super) fn replicate(&mut self, job: PutJob, peers: Vec<PeerId>) {
        let local = *self.swarm.local_peer_id();
        let peers: Vec<PeerId> = peers
            .into_iter()
            .filter(|p| *p != local)
            .take(self.config.replication_factor.get())
            .collect();
        let id = self.next_id;
        self.next_id += 1;
        for peer in &peers {
            let request = Request(ByteBuf::from(job.envelope.clone()));
            let rid = self
                .swarm
                .behaviour_mut()
                .replica
                .send_request(peer, request);
            self.replica_requests.insert(rid, id);
        }
        let put = Replicating {
            key: job.key,
            seq: job.seq,
            quorum: job.quorum,
            reply: Some(job.reply),
            outstanding: peers.len(),
            stored: 0,
            refused: 0,
            reason: None,
        };
        if peers.is_empty() {
            return finish(put);
        }
        self.replicating.insert(id, put);
    }

    pub(super) fn on_replica(&mut self, event: rr::Event<Request, Response>) {
        match Exchange::of(event) {
            Some(Exchange::Request {
                peer,
                request,
                channel,
            }) => self.on_replica_request(peer, request, channel),
            Some(Exchange::Outcome {
                request_id,
                response,
                ..
            }) => self.on_replica_answer(request_id, response),
            None => {}
        }
    }

    /// Keeps a record a peer sent and answers once it is kept. A request from a connected peer
    /// whose identity check is under way waits for it; anyone else not verified is refused.
    pub(super) fn on_replica_request(
        &mut self,
        peer: PeerId,
        request: Request,
        channel: ResponseChannel<Response>,
    ) {
        if !self.verified.contains_key(&peer) {
            if let Err(Held::Replica(_, channel)) = self.hold(peer, Held::Replica(request, channel))
            {
                self.stats.count_refused_put(peer);
                self.answer_replica(channel, Response::refused("identity not verified"));
            }
            return;
        }
        let response = match self.keep_record(peer, &request.0, None) {
            Ok(()) => Response::Stored,
            Err(reason) => Response::refused(reason),
        };
        self.answer_replica(channel, response);
    }

    /// Sends a replica answer; the peer may have gone, then nobody is waiting for it.
    pub(super) fn answer_replica(&mut self, channel: ResponseChannel<Response>, answer: Response) {
        let _ = self
            .swarm
            .behaviour_mut()
            .replica
            .send_response(channel, answer);
    }

    /// Validates `envelope` from `peer` (for `key` when the carrier names one), checks it against
    /// the lockstep notices held and keeps it (durably, with a data directory). A refusal is
    /// counted against the peer and its reason returned.
    pub(super) fn keep_record(
        &mut self,
        peer: PeerId,
        envelope: &[u8],
        key: Option<&[u8]>,
    ) -> Result<(), String> {
        let now_unix = unix_now();
        let outcome =
            SignedRecord::validate(envelope, key, now_unix, &self.config.records, &self.stamps)
                .map_err(|e| e.to_string())
                .and_then(|signed| {
                    self.book
                        .check_put(signed.record())
                        .map_err(|e| e.to_string())?;
                    self.swarm
                        .behaviour_mut()
                        .kad
                        .store_mut()
                        .insert(signed, Instant::now(), now_unix)
                        .map_err(|e| e.to_string())
                });
        match outcome {
            Ok(_) => {
                self.stats.stored_puts += 1;
                Ok(())
            }
            Err(reason) => {
                tracing::debug!(%peer, %reason, "inbound put refused");
                self.stats.count_refused_put(peer);
                Err(reason)
            }
        }
    }

    fn on_replica_answer(&mut self, request: OutboundRequestId, response: Option<Response>) {
        let Some(id) = self.replica_requests.remove(&request) else {
            return;
        };
        let Some(put) = self.replicating.get_mut(&id) else {
            return;
        };
        put.outstanding -= 1;
        match response {
            Some(Response::Stored) => put.stored += 1,
            Some(Response::Refused(reason)) => {
                put.refused += 1;
                put.reason.get_or_insert(reason);
            }
            None => {}
        }
        if put.stored >= put.quorum
            && let Some(reply) = put.reply.take()
        {
            let _ = reply.send(Ok(PutOk {
                key: put.key.clone(),
                seq: put.seq,
            }));
        }
        if put.outstanding == 0
            && let Some(put) = self.replicating.remove(&id)
        {
            finish(put);
        }
    }
}

/// Answers a put every replica has answered, if its caller is still waiting: the quorum was
/// not reached.
fn finish(put: Replicating) {
    let Some(reply) = put.reply else { return };
    let result = if put.stored >= put.quorum {
        Ok(PutOk {
            key: put.key,
            seq: put.seq,
        })
    } else {
        Err(PutError::Quorum {
            key: put.key,
            seq: put.seq,
            acked: put.stored,
            quorum: put.quorum,
            refused: put.refused,
            reason: put.reason,
        })
    };
    let _ = reply.send(result);
}
