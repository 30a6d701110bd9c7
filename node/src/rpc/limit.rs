//! The per-connection rate limit: a token bucket per connection, shared by the calls of a
//! WebSocket and by the requests of one HTTP keep-alive connection. A call over the limit gets the
//! rate-limited error and the connection stays open.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use jsonrpsee::core::middleware::{Batch, BatchEntry, BatchEntryErr, Notification, RpcServiceT};
use jsonrpsee::server::ConnectionId;
use jsonrpsee::server::middleware::rpc::MethodResponse;
use jsonrpsee::types::{ErrorObjectOwned, Request};
use serde_json::json;

use crate::metrics::Metrics;
use crate::rpc::error::{Code, RpcError};

/// A token bucket.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

/// The buckets of every connection.
#[derive(Debug)]
struct Buckets {
    rate: f64,
    burst: f64,
    max_entries: usize,
    by_connection: HashMap<ConnectionId, Bucket>,
}

impl Buckets {
    /// Takes `n` tokens from `conn`'s bucket; false (and nothing taken) if it has fewer.
    fn take(&mut self, conn: ConnectionId, n: f64, now: Instant) -> bool {
        if self.by_connection.len() >= self.max_entries && !self.by_connection.contains_key(&conn) {
            // Forget buckets that have refilled completely: they hold no state worth keeping.
            let (rate, burst) = (self.rate, self.burst);
            self.by_connection.retain(|_, b| {
                b.tokens + now.saturating_duration_since(b.last).as_secs_f64() * rate < burst
            });
            if self.by_connection.len() >= self.max_entries {
                // Every bucket is in use: the oldest-refilled one goes.
                if let Some(oldest) = self
                    .by_connection
                    .iter()
                    .min_by_key(|(_, b)| b.last)
                    .map(|(c, _)| *c)
                {
                    self.by_connection.remove(&oldest);
                }
            }
        }
        let bucket = self.by_connection.entry(conn).or_insert(Bucket {
            tokens: self.burst,
            last: now,
        });
        let refill = now.saturating_duration_since(bucket.last).as_secs_f64() * self.rate;
        bucket.tokens = (bucket.tokens + refill).min(self.burst);
        bucket.last = now;
        if bucket.tokens >= n {
            bucket.tokens -= n;
            true
        } else {
            false
        }
    }
}

/// The rate-limit layer, shared by every connection of a server.
#[derive(Debug, Clone)]
pub struct Limiter {
    buckets: Arc<Mutex<Buckets>>,
    metrics: Arc<Metrics>,
}

impl Limiter {
    /// `rate` calls per second with bursts of `burst`, for up to `connections` connections.
    pub fn new(rate: u32, burst: u32, connections: usize, metrics: Arc<Metrics>) -> Self {
        Self {
            buckets: Arc::new(Mutex::new(Buckets {
                rate: f64::from(rate),
                burst: f64::from(burst),
                // Closed connections' buckets linger until they refill; leave room for them.
                max_entries: connections.saturating_mul(4).max(16),
                by_connection: HashMap::new(),
            })),
            metrics,
        }
    }

    fn allow(&self, conn: ConnectionId, calls: usize) -> bool {
        // Invariant: no code panics while holding the lock.
        let mut buckets = self.buckets.lock().expect("rate-limit lock not poisoned");
        let ok = buckets.take(conn, calls as f64, Instant::now());
        if !ok {
            self.metrics.rate_limited(calls as u64);
        }
        ok
    }
}

fn limited() -> ErrorObjectOwned {
    RpcError::new(
        Code::RateLimited,
        "too many requests on this connection; slow down",
        json!({}),
    )
    .into()
}

impl<S> tower::Layer<S> for Limiter {
    type Service = RateLimited<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RateLimited {
            inner,
            limiter: self.clone(),
        }
    }
}

/// The rate-limiting RPC service.
#[derive(Debug, Clone)]
pub struct RateLimited<S> {
    inner: S,
    limiter: Limiter,
}

fn connection(extensions: &http::Extensions) -> ConnectionId {
    extensions
        .get::<ConnectionId>()
        .copied()
        .unwrap_or_default()
}

impl<S> RpcServiceT for RateLimited<S>
where
    S: RpcServiceT<
            MethodResponse = MethodResponse,
            BatchResponse = MethodResponse,
            NotificationResponse = MethodResponse,
        > + Send
        + Sync
        + Clone
        + 'static,
{
    type MethodResponse = S::MethodResponse;
    type NotificationResponse = S::NotificationResponse;
    type BatchResponse = S::BatchResponse;

    fn call<'a>(
        &self,
        request: Request<'a>,
    ) -> impl Future<Output = Self::MethodResponse> + Send + 'a {
        let allowed = self.limiter.allow(connection(request.extensions()), 1);
        let inner = self.inner.clone();
        async move {
            if allowed {
                inner.call(request).await
            } else {
                MethodResponse::error(request.id, limited())
            }
        }
    }

    fn batch<'a>(
        &self,
        mut batch: Batch<'a>,
    ) -> impl Future<Output = Self::BatchResponse> + Send + 'a {
        let calls = batch.len();
        let allowed = self.limiter.allow(connection(batch.extensions()), calls);
        if !allowed {
            for entry in batch.iter_mut() {
                let id = match entry {
                    Ok(BatchEntry::Call(req)) => Some(req.id.clone()),
                    _ => None,
                };
                if let Some(id) = id {
                    *entry = Err(BatchEntryErr::new(id, limited()));
                }
            }
        }
        self.inner.batch(batch)
    }

    fn notification<'a>(
        &self,
        n: Notification<'a>,
    ) -> impl Future<Output = Self::NotificationResponse> + Send + 'a {
        // Notifications get no answer; a limited one is dropped by the inner service's rules
        // anyway, so only count it.
        let _ = self.limiter.allow(connection(n.extensions()), 1);
        self.inner.notification(n)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn buckets(rate: f64, burst: f64, max_entries: usize) -> Buckets {
        Buckets {
            rate,
            burst,
            max_entries,
            by_connection: HashMap::new(),
        }
    }

    #[test]
    fn a_burst_then_the_rate() {
        let mut b = buckets(10.0, 5.0, 16);
        let t0 = Instant::now();
        let conn = ConnectionId(1);
        for _ in 0..5 {
            assert!(b.take(conn, 1.0, t0));
        }
        assert!(!b.take(conn, 1.0, t0), "the burst is spent");
        assert!(
            b.take(ConnectionId(2), 1.0, t0),
            "other connections are unaffected"
        );
        let t1 = t0 + Duration::from_millis(100);
        assert!(
            b.take(conn, 1.0, t1),
            "one token refilled after 100 ms at 10/s"
        );
        assert!(!b.take(conn, 1.0, t1));
        assert!(
            !b.take(conn, 6.0, t0 + Duration::from_secs(60)),
            "a batch above the burst never fits"
        );
    }

    #[test]
    fn the_table_stays_bounded() {
        let mut b = buckets(1.0, 100.0, 16);
        let t0 = Instant::now();
        for c in 0..1000 {
            assert!(b.take(ConnectionId(c), 50.0, t0));
            assert!(b.by_connection.len() <= 16);
        }
    }
}
