//! The JSON-RPC endpoint: HTTP and WebSocket on one port, with Prometheus metrics at
//! `GET /metrics` and a liveness check at `GET /health` on the same port.
//!
//! - [`api`]: the methods and their parameters.
//! - [`error`]: Shoal's error codes.
//! - [`encoding`]: how keys and values travel in JSON.
//! - [`openrpc`]: the OpenRPC document `rpc.discover` returns.
//! - [`limit`]: the per-connection rate limit.
//! - [`http`]: the HTTP layer: bearer-token check, `/metrics`, `/health`, the dashboard.
//! - [`history`]: the recent activity the dashboard draws.
//!
//! Safety: the server binds loopback by default and refuses to start on any other address
//! without an auth token; request and response sizes, connections, batch sizes and per-connection
//! request rates are bounded.

pub mod api;
pub mod encoding;
pub mod error;
pub mod history;
pub mod http;
pub mod limit;
pub mod openrpc;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use jsonrpsee::server::middleware::rpc::RpcServiceBuilder;
use jsonrpsee::server::{BatchRequestConfig, ServerBuilder, ServerConfig, ServerHandle};
use serde::{Deserialize, Serialize};

use crate::join::JoinStatus;
use crate::metrics::Metrics;

/// Largest batch accepted, in calls.
pub const MAX_BATCH: u32 = 64;

/// The JSON-RPC endpoint's settings: the `[rpc]` table of the config file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RpcConfig {
    /// Address of the JSON-RPC server (HTTP and WebSocket, plus `/metrics` and `/health`).
    /// Default `127.0.0.1:7400`. Any address that is not loopback requires `auth_token`.
    pub listen: SocketAddr,
    /// Bearer token every HTTP request and WebSocket upgrade must carry
    /// (`Authorization: Bearer <token>`). Default none; required when `listen` is not loopback.
    /// At least 16 characters when set.
    pub auth_token: Option<String>,
    /// Largest request body, bytes. Default 262,144 (a 64 KiB value fits in any encoding).
    pub max_request_bytes: u32,
    /// Largest response body, bytes. Default 1,048,576.
    pub max_response_bytes: u32,
    /// Connections served at once; more are refused. Default 128.
    pub max_connections: u32,
    /// Calls per second allowed on one connection (token bucket), batches counting each call.
    /// Default 5,000; at least 1.
    pub requests_per_second: u32,
    /// Calls a connection may make in a burst above its rate. Default 10,000; at least 1.
    pub burst: u32,
    /// Longest time a call may take before it fails with the timeout error, seconds.
    /// Default 60; at least 1.
    pub call_timeout_secs: u64,
}

impl Default for RpcConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 7400),
            auth_token: None,
            max_request_bytes: 262_144,
            max_response_bytes: 1_048_576,
            max_connections: 128,
            requests_per_second: 5_000,
            burst: 10_000,
            call_timeout_secs: 60,
        }
    }
}

/// Shortest auth token accepted.
pub const MIN_TOKEN_LEN: usize = 16;

/// Why the JSON-RPC server did not start. Nothing was started.
#[derive(Debug, thiserror::Error)]
pub enum RpcStartError {
    /// The listen address is not loopback and no auth token is set.
    #[error(
        "refusing to serve JSON-RPC on {0} without an auth token: set rpc.auth_token \
         (or SHOAL_RPC_TOKEN) or listen on loopback"
    )]
    TokenRequired(SocketAddr),
    /// The token is too short or not a valid header value.
    #[error("rpc.auth_token must be at least {MIN_TOKEN_LEN} visible ASCII characters")]
    BadToken,
    /// A limit is zero.
    #[error("rpc.{0} must be at least 1")]
    Zero(&'static str),
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// A method could not be registered (a bug).
    #[error("registering methods: {0}")]
    Register(#[from] jsonrpsee::server::RegisterMethodError),
}

impl RpcConfig {
    /// Checks the settings: a token where needed, limits above zero.
    pub fn validate(&self) -> Result<(), RpcStartError> {
        match &self.auth_token {
            None if !self.listen.ip().is_loopback() => {
                return Err(RpcStartError::TokenRequired(self.listen));
            }
            Some(t) if t.len() < MIN_TOKEN_LEN || !t.bytes().all(|b| b.is_ascii_graphic()) => {
                return Err(RpcStartError::BadToken);
            }
            _ => {}
        }
        for (name, v) in [
            ("max_request_bytes", u64::from(self.max_request_bytes)),
            ("max_response_bytes", u64::from(self.max_response_bytes)),
            ("max_connections", u64::from(self.max_connections)),
            ("requests_per_second", u64::from(self.requests_per_second)),
            ("burst", u64::from(self.burst)),
            ("call_timeout_secs", self.call_timeout_secs),
        ] {
            if v == 0 {
                return Err(RpcStartError::Zero(name));
            }
        }
        Ok(())
    }
}

/// What the RPC server reports in `node_info` and uses for defaults.
#[derive(Debug, Clone)]
pub struct Context {
    /// The network's name.
    pub network: String,
    /// The transports the node uses: `tcp`, `tor` or `tcp+tor`.
    pub transport: &'static str,
    /// Its onion address, with Tor.
    pub onion: Option<String>,
    /// The node's data directory, if it has one.
    pub data_dir: Option<PathBuf>,
    /// TTL of a put that gives none.
    pub default_ttl: Duration,
    /// How the node's join goes (`node_info.join`, the `shoal_join_*` metrics).
    pub join: Arc<JoinStatus>,
}

/// A running JSON-RPC server.
#[derive(Debug)]
pub struct RpcServer {
    local_addr: SocketAddr,
    handle: ServerHandle,
    /// The tasks that keep the dashboard's history; aborted when the server goes.
    watchers: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for RpcServer {
    fn drop(&mut self) {
        for watcher in &self.watchers {
            watcher.abort();
        }
    }
}

impl RpcServer {
    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The server's URL, `http://ADDR`.
    pub fn url(&self) -> String {
        format!("http://{}", self.local_addr)
    }

    /// Stops accepting connections and waits until open calls have finished.
    pub async fn stop(self) {
        // Already stopped is fine: the goal is a stopped server.
        let _ = self.handle.stop();
        self.handle.clone().stopped().await;
    }

    /// The dashboard's URL.
    pub fn dashboard_url(&self) -> String {
        format!("http://{}/", self.local_addr)
    }
}

/// Starts the JSON-RPC server for `node`.
pub async fn start(
    config: &RpcConfig,
    node: shoal_dht::Client,
    context: Context,
) -> Result<RpcServer, RpcStartError> {
    config.validate()?;
    let metrics = Arc::new(Metrics::new());
    metrics.watch_join(context.join.clone());
    let state = api::State::new(
        node.clone(),
        context,
        metrics.clone(),
        Duration::from_secs(config.call_timeout_secs),
    );
    let watchers = state.spawn_watchers();
    let module = api::module(state)?;
    let server_config = ServerConfig::builder()
        .max_request_body_size(config.max_request_bytes)
        .max_response_body_size(config.max_response_bytes)
        .max_connections(config.max_connections)
        .set_batch_request_config(BatchRequestConfig::Limit(MAX_BATCH))
        .max_subscriptions_per_connection(16)
        .build();
    let limiter = limit::Limiter::new(
        config.requests_per_second,
        config.burst,
        config.max_connections as usize,
        metrics.clone(),
    );
    let rpc_middleware = RpcServiceBuilder::new().layer(limiter);
    let http_middleware = tower::ServiceBuilder::new().layer(http::HttpGateLayer::new(
        config.auth_token.as_deref(),
        metrics,
        node,
    ));
    let server = ServerBuilder::with_config(server_config)
        .set_rpc_middleware(rpc_middleware)
        .set_http_middleware(http_middleware)
        .build(config.listen)
        .await
        .map_err(|source| RpcStartError::Bind {
            addr: config.listen,
            source,
        })?;
    let local_addr = server.local_addr().map_err(|source| RpcStartError::Bind {
        addr: config.listen,
        source,
    })?;
    let handle = server.start(module);
    tracing::info!(%local_addr, "JSON-RPC listening");
    Ok(RpcServer {
        local_addr,
        handle,
        watchers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_loopback_needs_a_token() {
        let open = RpcConfig {
            listen: "0.0.0.0:7400".parse().expect("valid address"),
            ..RpcConfig::default()
        };
        assert!(matches!(
            open.validate(),
            Err(RpcStartError::TokenRequired(_))
        ));
        let short = RpcConfig {
            auth_token: Some("short".into()),
            ..open.clone()
        };
        assert!(matches!(short.validate(), Err(RpcStartError::BadToken)));
        let ok = RpcConfig {
            auth_token: Some("a-long-enough-secret".into()),
            ..open
        };
        ok.validate().expect("a token makes any address acceptable");
        RpcConfig::default()
            .validate()
            .expect("the default is loopback");
    }

    #[test]
    fn zero_limits_are_refused() {
        let zero = RpcConfig {
            burst: 0,
            ..RpcConfig::default()
        };
        assert!(matches!(zero.validate(), Err(RpcStartError::Zero("burst"))));
    }
}
