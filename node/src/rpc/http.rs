//! The HTTP layer in front of JSON-RPC: serves the dashboard's page and assets (`GET /`,
//! `/dashboard.js`, `/dashboard.css`: static, compiled in, no secrets, so served without the
//! token: the page asks for it), refuses requests a browser sends from another site's page,
//! checks the bearer token (when one is set) on every other request, WebSocket upgrades
//! included, and answers `GET /metrics` (Prometheus text format) and `GET /health` itself.
//!
//! The token travels in `Authorization: Bearer`, or in the `access_token` query parameter
//! (RFC 6750, 2.3) for a browser's WebSocket, which cannot set headers.

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

const INDEX_HTML: &str = include_str!("dashboard/index.html");
const DASHBOARD_JS: &str = include_str!("dashboard/dashboard.js");
const DASHBOARD_CSS: &str = include_str!("dashboard/dashboard.css");

/// The dashboard's content security policy: nothing but this origin, its own socket included.
const CSP: &str = "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; \
                   style-src 'self'; script-src 'self'; frame-ancestors 'none'";

/// The dashboard's file at `path`, with its content type, if it is one. The page learns from a
/// meta tag whether the node wants a token.
fn dashboard_file(path: &str, auth: bool) -> Option<(&'static str, String)> {
    match path {
        "/" | "/index.html" => Some((
            "text/html; charset=utf-8",
            INDEX_HTML.replace("{{AUTH}}", if auth { "required" } else { "none" }),
        )),
        "/dashboard.js" => Some(("text/javascript; charset=utf-8", DASHBOARD_JS.to_owned())),
        "/dashboard.css" => Some(("text/css; charset=utf-8", DASHBOARD_CSS.to_owned())),
        _ => None,
    }
}

/// The token a request carries: its bearer header, or its `access_token` query parameter
/// (form-encoded, as RFC 6750 says; a malformed escape stays as it is and fails the comparison).
fn given_token(request: &HttpRequest) -> Vec<u8> {
    if let Some(header) = request.headers().get(http::header::AUTHORIZATION) {
        return header.as_bytes().to_vec();
    }
    let query = request.uri().query().unwrap_or_default();
    form_urlencoded::parse(query.as_bytes())
        .find(|(name, _)| name == "access_token")
        .map(|(_, token)| format!("Bearer {token}").into_bytes())
        .unwrap_or_default()
}

/// Whether a browser sent `request` from a page of another origin: its `Origin` is not this
/// server's `Host`. Such a page must not drive the node (a WebSocket is not held back by CORS);
/// programs that send no `Origin` are not browsers' pages and pass.
fn cross_origin(request: &HttpRequest) -> bool {
    let Some(origin) = request.headers().get(http::header::ORIGIN) else {
        return false;
    };
    let host = request
        .headers()
        .get(http::header::HOST)
        .map(|h| h.as_bytes())
        .unwrap_or_default();
    let origin = origin.as_bytes();
    let authority = origin
        .strip_prefix(b"http://")
        .or_else(|| origin.strip_prefix(b"https://"));
    authority != Some(host)
}

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
        // A WebSocket upgrade is a GET of `/` too: it goes on to JSON-RPC.
        if request.method() == http::Method::GET
            && !request.headers().contains_key(http::header::UPGRADE)
            && let Some((content_type, body)) =
                dashboard_file(request.uri().path(), self.layer.expected.is_some())
        {
            let mut response = respond(http::StatusCode::OK, content_type, body);
            let headers = response.headers_mut();
            headers.insert(
                http::header::CONTENT_SECURITY_POLICY,
                http::HeaderValue::from_static(CSP),
            );
            headers.insert(
                http::header::X_CONTENT_TYPE_OPTIONS,
                http::HeaderValue::from_static("nosniff"),
            );
            headers.insert(
                http::header::CACHE_CONTROL,
                http::HeaderValue::from_static("no-cache"),
            );
            return Box::pin(async move { Ok(response) });
        }
        if cross_origin(&request) {
            return Box::pin(async move {
                Ok(respond(
                    http::StatusCode::FORBIDDEN,
                    "text/plain; charset=utf-8",
                    "requests from another site's page are refused\n",
                ))
            });
        }
        if let Some(expected) = &self.layer.expected {
            let given = given_token(&request);
            if !same(&given, expected) {
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

    fn request(uri: &str, headers: &[(http::HeaderName, &str)]) -> HttpRequest {
        let mut request = HttpRequest::new(HttpBody::default());
        *request.uri_mut() = uri.parse().expect("a valid uri");
        for (name, value) in headers {
            request.headers_mut().insert(
                name,
                http::HeaderValue::from_str(value).expect("a valid value"),
            );
        }
        request
    }

    #[test]
    fn the_token_comes_from_the_header_or_the_query() {
        use http::header::AUTHORIZATION;
        let header = request("/", &[(AUTHORIZATION, "Bearer abc")]);
        assert_eq!(given_token(&header), b"Bearer abc");
        let query = request("/?x=1&access_token=a%2Bb%20c", &[]);
        assert_eq!(given_token(&query), b"Bearer a+b c");
        assert_eq!(given_token(&request("/?access=1", &[])), b"");
        let malformed = request("/?access_token=%zz%4", &[]);
        assert_eq!(given_token(&malformed), b"Bearer %zz%4");
    }

    #[test]
    fn pages_of_other_sites_are_told_apart() {
        use http::header::{HOST, ORIGIN};
        let own = [(HOST, "127.0.0.1:7400"), (ORIGIN, "http://127.0.0.1:7400")];
        assert!(!cross_origin(&request("/", &own)));
        let other = [(HOST, "127.0.0.1:7400"), (ORIGIN, "https://evil.example")];
        assert!(cross_origin(&request("/", &other)));
        assert!(cross_origin(&request("/", &[(ORIGIN, "null")])));
        assert!(!cross_origin(&request("/", &[(HOST, "127.0.0.1:7400")])));
    }

    #[test]
    fn the_page_says_whether_a_token_is_needed() {
        let (kind, page) = dashboard_file("/", true).expect("the page");
        assert!(kind.starts_with("text/html"));
        assert!(page.contains(r#"content="required""#) && !page.contains("{{AUTH}}"));
        let (_, page) = dashboard_file("/index.html", false).expect("the page");
        assert!(page.contains(r#"content="none""#));
        assert!(dashboard_file("/dashboard.js", false).is_some());
        assert!(dashboard_file("/metrics", false).is_none());
    }

    #[test]
    fn token_comparison() {
        assert!(same(b"Bearer abc", b"Bearer abc"));
        assert!(!same(b"Bearer abd", b"Bearer abc"));
        assert!(!same(b"Bearer ab", b"Bearer abc"));
        assert!(!same(b"", b"Bearer abc"));
    }
}
