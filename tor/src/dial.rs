//! Outgoing onion connections, retried within bounds.

use std::sync::Arc;
use std::time::Duration;

use arti_client::config::BoolOrAuto;
use arti_client::{DataStream, StreamPrefs, TorClient};
use tor_rtcompat::PreferredRuntime;

use crate::address::OnionAddr;

/// How one dial retries.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DialPolicy {
    /// Attempts, the first included; at least 1.
    pub(crate) attempts: u32,
    /// Wait after the first failure; doubles up to `backoff_max`.
    pub(crate) backoff_min: Duration,
    /// Upper bound of the wait.
    pub(crate) backoff_max: Duration,
    /// Limit of one attempt.
    pub(crate) timeout: Duration,
}

/// Why the last attempt of a dial failed.
#[derive(Debug, thiserror::Error)]
pub enum DialFailure {
    /// arti could not connect (no descriptor, introduction or rendezvous failed, ...).
    #[error("arti could not connect")]
    Arti(#[source] arti_client::Error),
    /// The attempt took longer than `connect_timeout`.
    #[error("the attempt timed out after {0:?}")]
    Timeout(Duration),
}

/// Connects to `onion`, retrying failed attempts after a doubling back-off.
///
/// Returns the stream of the first attempt that succeeds, or the number of attempts made and
/// why the last one failed.
pub(crate) async fn connect(
    client: Arc<TorClient<PreferredRuntime>>,
    onion: OnionAddr,
    policy: DialPolicy,
) -> Result<DataStream, (u32, DialFailure)> {
    let mut prefs = StreamPrefs::new();
    prefs.connect_to_onion_services(BoolOrAuto::Explicit(true));
    let host = onion.host();
    let attempts = policy.attempts.max(1);
    let mut backoff = policy.backoff_min;
    let mut attempt = 1;
    loop {
        let started = std::time::Instant::now();
        let outcome = tokio::time::timeout(
            policy.timeout,
            client.connect_with_prefs((host.as_str(), onion.port()), &prefs),
        )
        .await;
        let failure = match outcome {
            Ok(Ok(stream)) => {
                tracing::debug!(%onion, attempt, elapsed = ?started.elapsed(), "onion connected");
                return Ok(stream);
            }
            Ok(Err(e)) => DialFailure::Arti(e),
            Err(_) => DialFailure::Timeout(policy.timeout),
        };
        tracing::debug!(%onion, attempt, error = %failure, "onion connect attempt failed");
        if attempt >= attempts {
            return Err((attempt, failure));
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(policy.backoff_max);
        attempt += 1;
    }
}
