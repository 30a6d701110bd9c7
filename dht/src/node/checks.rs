//! What the core consults about libp2p peers: identity proofs, checked with the verifier the
//! gate shares (one cache, one rate limit for proofs met on connections and relayed ones), and
//! which addresses this node's transport can reach.

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use libp2p::multiaddr::Protocol;
use libp2p::{Multiaddr, PeerId};
use shoal_pow::{Check, IdentityProof, IdentityVerifier, ProofError, PublicKey, Puzzle};
use shoal_swim::Address;

use crate::core::Checks;
use crate::identity::PublicKeyExt;

/// scrypt evaluations running in this process, and the condition a waiting one sleeps on.
static RUNNING: (Mutex<usize>, Condvar) = (Mutex::new(0), Condvar::new());

/// Evaluates `proof` (one scrypt) on the calling thread, which must be allowed to block: at
/// most one evaluation per core runs in the process at a time, the others wait their turn. Each
/// takes tens of milliseconds and 16 MiB, and a node meeting a whole cluster at once (or many
/// nodes in one test process) would otherwise run dozens side by side. Returns the outcome and
/// the CPU time the evaluation took (not the wall time: on a busy machine that counts the
/// other processes' turns).
pub(crate) fn evaluate(
    puzzle: &Puzzle,
    proof: &IdentityProof,
) -> (Result<(), ProofError>, Duration) {
    static SLOTS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    let slots = *SLOTS.get_or_init(|| {
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    });
    let (count, freed) = &RUNNING;
    {
        let mut running = count.lock().unwrap_or_else(|p| p.into_inner());
        while *running >= slots {
            running = freed.wait(running).unwrap_or_else(|p| p.into_inner());
        }
        *running += 1;
    }
    let started = thread_cpu();
    let outcome = puzzle.verify(proof);
    let spent = thread_cpu().saturating_sub(started);
    *count.lock().unwrap_or_else(|p| p.into_inner()) -= 1;
    freed.notify_one();
    (outcome, spent)
}

/// The CPU time the calling thread has used (zero if the clock cannot be read).
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec and the clock id a constant the kernel knows.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return Duration::ZERO;
    }
    let secs = u64::try_from(ts.tv_sec).unwrap_or(0);
    let nanos = u32::try_from(ts.tv_nsec).unwrap_or(0);
    Duration::new(secs, nanos)
}

/// One identity check for the [`Checker`]: the member, its proof's bytes and when it was asked.
type Job = (PeerId, Vec<u8>, Instant);

/// Where a [`Checker`] reports: the member and the outcome.
pub(crate) type Outcome = (PeerId, Result<IdentityProof, ProofError>);

/// Runs the core's identity checks ([`crate::core::Action::Verify`]). A needed one (a request
/// waits on it, or another member asked for the proof) runs on the blocking pool at the node's
/// own priority; the others on a thread of their own, one at a time, at the lowest scheduling
/// priority, so that everything else this node and other processes do goes first. Twenty nodes
/// started together on two cores each have nineteen to run: at equal priority they held up the
/// seed's checks of the joiners, which every other node waited on. The thread ends when the
/// checker is dropped.
pub(crate) struct Checker {
    checks: NodeChecks,
    jobs: std::sync::mpsc::Sender<Job>,
    outcomes: tokio::sync::mpsc::Sender<Outcome>,
}

impl Checker {
    /// Starts the thread; outcomes go to `outcomes`.
    pub(crate) fn spawn(
        checks: NodeChecks,
        outcomes: tokio::sync::mpsc::Sender<Outcome>,
    ) -> std::io::Result<Self> {
        let (jobs, queue) = std::sync::mpsc::channel::<Job>();
        let (mut background, tx) = (checks.clone(), outcomes.clone());
        std::thread::Builder::new()
            .name("shoal-identity-checks".to_owned())
            .spawn(move || {
                lower_priority();
                while let Ok((peer, proof, asked)) = queue.recv() {
                    let result = Checks::verify(&mut background, asked, &peer, &proof);
                    if tx.blocking_send((peer, result)).is_err() {
                        // The node's loop ended.
                        return;
                    }
                }
            })?;
        Ok(Self {
            checks,
            jobs,
            outcomes,
        })
    }

    /// Starts the check of `peer`'s proof (the core asks for at most one of each kind at a
    /// time); its outcome comes back through the outcomes channel.
    pub(crate) fn check(&self, peer: PeerId, proof: Vec<u8>, now: Instant, needed: bool) {
        if needed {
            let (mut checks, tx) = (self.checks.clone(), self.outcomes.clone());
            tokio::task::spawn_blocking(move || {
                let result = Checks::verify(&mut checks, now, &peer, &proof);
                // The loop may have ended meanwhile; then nobody waits for the outcome.
                let _ = tx.blocking_send((peer, result));
            });
        } else {
            // The thread ends only once this sender, or the loop's receiver, is dropped.
            let _ = self.jobs.send((peer, proof, now));
        }
    }
}

/// Gives the calling thread the lowest scheduling priority (nice 19); a failure only leaves it
/// at the node's own.
fn lower_priority() {
    // SAFETY: plain system calls about the calling thread: `gettid` takes nothing, and
    // `setpriority` with `PRIO_PROCESS` and a thread id changes only that thread.
    let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, 19) };
    if rc != 0 {
        let error = std::io::Error::last_os_error();
        tracing::debug!(%error, "identity checks keep the node's priority");
    }
}

/// The identity verifier shared by the gate and the core.
pub type SharedVerifier = Arc<Mutex<IdentityVerifier>>;

/// The [`Checks`] of a libp2p node.
#[derive(Debug, Clone)]
pub struct NodeChecks {
    verifier: SharedVerifier,
}

impl NodeChecks {
    /// Checks backed by `verifier` (the gate's).
    pub fn new(verifier: SharedVerifier) -> Self {
        Self { verifier }
    }

    /// The verifier's counters.
    pub fn stats(&self) -> shoal_pow::VerifierStats {
        lock(&self.verifier).stats()
    }
}

/// Locks the verifier. A panic while it was held (a bug) leaves its caches usable: they hold
/// only completed checks.
pub(crate) fn lock(verifier: &SharedVerifier) -> std::sync::MutexGuard<'_, IdentityVerifier> {
    verifier
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Checks<PeerId> for NodeChecks {
    type Proof = IdentityProof;

    /// Holds the verifier only around the evaluation, not during it: the gate and the metrics
    /// read it from the protocol loop.
    fn verify(
        &mut self,
        now: Instant,
        peer: &PeerId,
        bytes: &[u8],
    ) -> Result<IdentityProof, ProofError> {
        let proof = IdentityProof::from_bytes(bytes)?;
        let puzzle = {
            let mut verifier = lock(&self.verifier);
            verifier.check_key(PublicKey::from_peer_id(peer).ok(), &proof)?;
            match verifier.begin(now, &proof)? {
                Check::Done(_) => return Ok(proof),
                Check::Evaluate => verifier.puzzle().clone(),
            }
        };
        let (outcome, spent) = evaluate(&puzzle, &proof);
        lock(&self.verifier).finish(&proof, outcome, spent)?;
        Ok(proof)
    }

    fn precheck(
        &mut self,
        peer: &PeerId,
        bytes: &[u8],
    ) -> Result<Option<IdentityProof>, ProofError> {
        let proof = IdentityProof::from_bytes(bytes)?;
        let mut verifier = lock(&self.verifier);
        verifier.check_key(PublicKey::from_peer_id(peer).ok(), &proof)?;
        match verifier.cached(&proof) {
            Some(known) => known.map(|_| Some(proof)),
            None => Ok(None),
        }
    }

    fn proof_bytes(&self, _peer: &PeerId, proof: &IdentityProof) -> Vec<u8> {
        proof.to_bytes().to_vec()
    }

    fn reachable(&self, ours: &[Address], theirs: &[Address]) -> bool {
        let ours: Vec<AddressKind> = ours.iter().filter_map(kind_of).collect();
        ours.is_empty() || theirs.iter().filter_map(kind_of).any(|k| ours.contains(&k))
    }

    fn signed_by(&self, peer: &PeerId, key: &PublicKey) -> bool {
        crate::identity::is_peer_of(peer, key)
    }
}

/// The kinds of address a transport dials, told apart by an address's first protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AddressKind {
    Ip,
    Onion,
    Memory,
}

/// Whether `addr` starts with an IP address or a DNS name (TCP's addresses, a circuit's too).
pub(crate) fn is_ip(addr: &Multiaddr) -> bool {
    address_kind(addr) == Some(AddressKind::Ip)
}

fn kind_of(addr: &Address) -> Option<AddressKind> {
    let addr = Multiaddr::try_from(addr.0.clone()).ok()?;
    address_kind(&addr)
}

fn address_kind(addr: &Multiaddr) -> Option<AddressKind> {
    match addr.iter().next()? {
        Protocol::Ip4(_)
        | Protocol::Ip6(_)
        | Protocol::Dns(_)
        | Protocol::Dns4(_)
        | Protocol::Dns6(_)
        | Protocol::Dnsaddr(_) => Some(AddressKind::Ip),
        Protocol::Onion3(_) | Protocol::Onion(..) => Some(AddressKind::Onion),
        Protocol::Memory(_) => Some(AddressKind::Memory),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_kinds() {
        let kind = |a: &str| address_kind(&a.parse().unwrap());
        assert_eq!(kind("/ip4/127.0.0.1/tcp/4001"), Some(AddressKind::Ip));
        assert_eq!(kind("/dns4/example.org/tcp/4001"), Some(AddressKind::Ip));
        assert_eq!(
            kind("/onion3/vww6ybal4bd7szmgncyruucpgfkqahzddi37ktceo3ah7ngmcopnpyyd:4001"),
            Some(AddressKind::Onion)
        );
        assert_eq!(kind("/memory/7"), Some(AddressKind::Memory));
    }

    #[test]
    fn reachability_follows_the_kinds_this_node_listens_on() {
        let addr = |a: &str| Address(a.parse::<Multiaddr>().unwrap().to_vec());
        let tcp = addr("/ip4/127.0.0.1/tcp/4001");
        let onion = addr("/onion3/vww6ybal4bd7szmgncyruucpgfkqahzddi37ktceo3ah7ngmcopnpyyd:4001");
        let checks = NodeChecks::new(Arc::new(Mutex::new(IdentityVerifier::new(
            shoal_pow::Puzzle::new(shoal_pow::PuzzleConfig::testnet()).unwrap(),
            shoal_pow::VerifierConfig::default(),
        ))));
        assert!(checks.reachable(&[], std::slice::from_ref(&onion)));
        assert!(!checks.reachable(std::slice::from_ref(&tcp), std::slice::from_ref(&onion)));
        assert!(checks.reachable(&[tcp.clone(), onion.clone()], &[onion]));
        assert!(checks.reachable(std::slice::from_ref(&tcp), std::slice::from_ref(&tcp)));
    }
}
