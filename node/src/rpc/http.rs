//! The HTTP layer in front of JSON-RPC: checks the bearer token (when one is set) on every
//! request, WebSocket upgrades included, and answers `GET /metrics` (Prometheus text format) and
//! `GET /health` itself.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use jsonrpsee::core::BoxError;
use jsonrpsee::server::{HttpBody, HttpRequest, HttpResponse};

use crate::metrics::Metrics;

/// The layer; see the module docs.
#[derive(Debug, Clone)]
pub struct HttpGateLayer {
    expected: Option<Arc<[u8]>>,
    metrics: Arc<Metrics>,
    node: shoal_dht::Client,
}

impl HttpGateLayer {
    /// A layer requiring `Authorization: Bearer <token>` when `token` is set.
    pub fn new(token: Option<&str>, metrics: Arc<Metrics>, node: shoal_dht::Client) -> Self {
        Self {
            expected: token.map(|t| Arc::from(format!("Bearer {t}").into_bytes())),
            metrics,
            node,
        }
    }
}

impl<S> tower::Layer<S> for HttpGateLayer {
    type Service = HttpGate<S>;

    fn layer(&self, inner: S) -> Self::Service {
        HttpGate {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service the layer makes.
#[derive(Debug, Clone)]
pub struct HttpGate<S> {
    inner: S,
    layer: HttpGateLayer,
}

/// Compares in time independent of where the first difference is.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn respond(
    status: http::StatusCode,
    content_type: &str,
    body: impl Into<HttpBody>,
) -> HttpResponse {
    let mut response = HttpResponse::new(body.into());
    *response.status_mut() = status;
    if let Ok(v) = http::HeaderValue::from_str(content_type) {
        response.headers_mut().insert(http::header::CONTENT_TYPE, v);
    }
    response
}

type BoxFuture = Pin<Box<dyn Future<Output = Result<HttpResponse, BoxError>> + Send>>;

impl<S> tower::Service<HttpRequest> for HttpGate<S>
where
    S: tower::Service<HttpRequest, Response = HttpResponse, Error = BoxError>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = HttpResponse;
    type Error = BoxError;
    type Future = BoxFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: HttpRequest) -> Self::Future {
        if let Some(expected) = &self.layer.expected {
            let given = request
                .headers()
                .get(http::header::AUTHORIZATION)
                .map(|v| v.as_bytes())
                .unwrap_or_default();
            if !same(given, expected) {
                self.layer.metrics.unauthorized();
                let mut response = respond(
                    http::StatusCode::UNAUTHORIZED,
                    "text/plain; charset=utf-8",
                    "missing or wrong bearer token\n",
                );
                response.headers_mut().insert(
                    http::header::WWW_AUTHENTICATE,
                    http::HeaderValue::from_static("Bearer"),
                );
                return Box::pin(async move { Ok(response) });
            }
        }
        if request.method() == http::Method::GET {
            match request.uri().path() {
                "/metrics" => {
                    let (metrics, node) = (self.layer.metrics.clone(), self.layer.node.clone());
                    return Box::pin(async move {
                        let text = metrics.render(&node).await;
                        Ok(respond(
                            http::StatusCode::OK,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                            text,
                        ))
                    });
                }
                "/health" => {
                    let node = self.layer.node.clone();
                    return Box::pin(async move {
                        Ok(match node.stats().await {
                            Some(_) => respond(http::StatusCode::OK, "text/plain", "ok\n"),
                            None => respond(
                                http::StatusCode::SERVICE_UNAVAILABLE,
                                "text/plain",
                                "stopped\n",
                            ),
                        })
                    });
                }
                _ => {}
            }
        }
        Box::pin(self.inner.call(request))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_comparison() {
        assert!(same(b"Bearer abc", b"Bearer abc"));
        assert!(!same(b"Bearer abd", b"Bearer abc"));
        assert!(!same(b"Bearer ab", b"Bearer abc"));
        assert!(!same(b"", b"Bearer abc"));
    }
}
