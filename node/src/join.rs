//! Joining the network: a node with seeds keeps trying until it is in, and says how it goes.
//!
//! [`join_until_joined`] asks the DHT node to join through the configured seeds, and after a
//! failed attempt through them plus members it already knows (restored from its routing
//! snapshot, or learned since), with a doubling backoff, until one attempt succeeds or the node
//! stops. Every attempt's outcome is logged (a failure at warn, with its reason) and kept in a
//! [`JoinStatus`] that `node_info` and the metrics read.

use std::sync::Mutex;
use std::time::Duration;

use libp2p::{Multiaddr, PeerId};
use serde::Serialize;
use shoal_dht::Client;
use shoal_dht::api::JoinError;
use shoal_swim::State;

/// Wait after the first failed attempt; it doubles after each failure. Short: nodes started
/// together (a testnet, a rack after a power cut) often dial their seed before it listens, and
/// a second wait of a whole second held most of a cluster of 20 that long.
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
/// Longest wait between attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// Longest one attempt may take before it counts as failed (a join normally answers within the
/// gate and SWIM timeouts, well under this).
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(90);
/// Known members added to the configured seeds on a retry, at most.
const MAX_KNOWN_SEEDS: usize = 8;

/// Where the node's join stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// No seeds configured: the first node of its network; others join it.
    NoSeeds,
    /// Attempts are under way (or waiting for the next one).
    Joining,
    /// An attempt succeeded.
    Joined,
}

/// A snapshot of the join's progress, as `node_info` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct JoinState {
    /// Where it stands.
    pub phase: Phase,
    /// Attempts started.
    pub attempts: u64,
    /// Attempts that failed.
    pub failures: u64,
    /// Why the last failed attempt failed, if one did.
    pub last_error: Option<String>,
    /// Live members the node knew when its join succeeded.
    pub members_at_join: Option<usize>,
}

/// The join's progress, shared by the join task and its readers.
#[derive(Debug)]
pub struct JoinStatus {
    state: Mutex<JoinState>,
}

impl JoinStatus {
    /// A status for a node with seeds (`Joining`) or without (`NoSeeds`).
    pub fn new(has_seeds: bool) -> Self {
        let phase = if has_seeds {
            Phase::Joining
        } else {
            Phase::NoSeeds
        };
        Self {
            state: Mutex::new(JoinState {
                phase,
                attempts: 0,
                failures: 0,
                last_error: None,
                members_at_join: None,
            }),
        }
    }

    /// The current state.
    pub fn get(&self) -> JoinState {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, JoinState> {
        // A panic while holding the lock leaves counters only: still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn started(&self) -> u64 {
        let mut s = self.lock();
        s.attempts += 1;
        s.attempts
    }

    fn failed(&self, error: String) {
        let mut s = self.lock();
        s.failures += 1;
        s.last_error = Some(error);
    }

    fn joined(&self, members: usize) {
        let mut s = self.lock();
        s.phase = Phase::Joined;
        s.members_at_join = Some(members);
    }
}

/// Joins through `seeds` until an attempt succeeds or the node stops (see the module docs).
pub async fn join_until_joined(
    client: Client,
    seeds: Vec<(PeerId, Multiaddr)>,
    status: &JoinStatus,
) {
    let mut delay = FIRST_BACKOFF;
    let mut tried = seeds.clone();
    loop {
        let attempt = status.started();
        let outcome = tokio::time::timeout(ATTEMPT_TIMEOUT, client.join(tried.clone())).await;
        let error = match outcome {
            Ok(Ok(ok)) => {
                tracing::info!(
                    attempt,
                    verified_seeds = ok.verified_seeds,
                    members = ok.members,
                    "joined the network"
                );
                status.joined(ok.members);
                return;
            }
            Ok(Err(JoinError::Stopped)) => return,
            Ok(Err(error)) => error.to_string(),
            Err(_) => format!("no answer within {} s", ATTEMPT_TIMEOUT.as_secs()),
        };
        tracing::warn!(
            attempt,
            seeds = tried.len(),
            %error,
            retry_in_secs = delay.as_secs_f64(),
            "join attempt failed; retrying"
        );
        status.failed(error);
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(MAX_BACKOFF);
        tried = with_known_members(&seeds, client.member_list().await);
    }
}

/// The configured seeds, then up to [`MAX_KNOWN_SEEDS`] live members the node knows with an
/// address (restored from its routing snapshot or learned since) that are not seeds already.
fn with_known_members(
    seeds: &[(PeerId, Multiaddr)],
    members: Vec<shoal_dht::api::MemberInfo>,
) -> Vec<(PeerId, Multiaddr)> {
    let mut all = seeds.to_vec();
    let known = members
        .into_iter()
        .filter(|m| matches!(m.state, State::Alive | State::Suspect))
        .filter(|m| !seeds.iter().any(|(p, _)| *p == m.peer))
        .filter_map(|m| Some((m.peer, m.addrs.into_iter().next()?)))
        .take(MAX_KNOWN_SEEDS);
    all.extend(known);
    all
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_dht::api::MemberInfo;

    fn peer() -> PeerId {
        PeerId::random()
    }

    fn member(peer: PeerId, state: State, addrs: Vec<Multiaddr>) -> MemberInfo {
        MemberInfo {
            peer,
            state,
            incarnation: 1,
            addrs,
            verified: true,
        }
    }

    #[test]
    fn retries_add_live_known_members_with_an_address_after_the_seeds() {
        let addr: Multiaddr = "/ip4/127.0.0.1/tcp/7401".parse().unwrap();
        let seed = (peer(), addr.clone());
        let (alive, dead, bare) = (peer(), peer(), peer());
        let members = vec![
            member(seed.0, State::Alive, vec![addr.clone()]),
            member(alive, State::Alive, vec![addr.clone()]),
            member(dead, State::Dead, vec![addr.clone()]),
            member(bare, State::Suspect, Vec::new()),
        ];
        let tried = with_known_members(std::slice::from_ref(&seed), members);
        assert_eq!(tried, vec![seed, (alive, addr.clone())]);
        let many = (0..20)
            .map(|_| member(peer(), State::Alive, vec![addr.clone()]))
            .collect();
        assert_eq!(with_known_members(&[], many).len(), MAX_KNOWN_SEEDS);
    }

    #[test]
    fn status_counts_attempts_and_keeps_the_last_reason() {
        let status = JoinStatus::new(true);
        assert_eq!(status.get().phase, Phase::Joining);
        assert_eq!(status.started(), 1);
        status.failed("none of the 1 seeds could be dialed and verified".into());
        assert_eq!(status.started(), 2);
        status.joined(7);
        let s = status.get();
        assert_eq!((s.phase, s.attempts, s.failures), (Phase::Joined, 2, 1));
        assert_eq!(s.members_at_join, Some(7));
        assert!(s.last_error.unwrap().contains("seeds"));
        assert_eq!(JoinStatus::new(false).get().phase, Phase::NoSeeds);
    }
}
