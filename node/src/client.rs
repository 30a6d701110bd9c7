//! `shoal rpc METHOD [PARAMS]`: a JSON-RPC client over HTTP, and over WebSocket for a
//! subscription (a method whose name ends in `_subscribe`), which it follows until the node ends
//! it or the caller stops.
//!
//! PARAMS is a JSON object (parameters by name, which every shoal method takes) or a JSON array
//! (by position). The result is returned as JSON; a JSON-RPC error keeps its code, message and
//! data.

use std::future::Future;
use std::time::Duration;

use jsonrpsee::client_transport::ws::WsHandshakeError;
use jsonrpsee::core::client::{ClientT, Error as JsonRpcError, SubscriptionClientT};
use jsonrpsee::core::traits::ToRpcParams;
use jsonrpsee::http_client::transport::Error as HttpTransportError;
use jsonrpsee::http_client::{HeaderMap, HeaderValue, HttpClient, HttpClientBuilder};
use jsonrpsee::ws_client::WsClientBuilder;
use serde_json::Value;
use serde_json::value::RawValue;

use crate::cli::RpcArgs;

/// Longest method name accepted, bytes.
pub const MAX_METHOD_LEN: usize = 256;
/// Largest PARAMS accepted, bytes.
pub const MAX_PARAMS_LEN: usize = 4 << 20;
/// Largest response accepted, bytes.
pub const MAX_RESPONSE_LEN: u32 = 16 << 20;

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The method name is empty or too long; nothing was sent.
    #[error("method name must be 1 to {MAX_METHOD_LEN} bytes")]
    BadMethod,
    /// PARAMS is not a JSON object or array, or is too large; nothing was sent.
    #[error("PARAMS must be a JSON object or array of at most {MAX_PARAMS_LEN} bytes: {0}")]
    BadParams(String),
    /// The token is not a valid header value; nothing was sent.
    #[error("the token must be visible ASCII")]
    BadToken,
    /// The URL is unusable.
    #[error("cannot use {url}: {reason}")]
    BadUrl {
        /// The URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// The node answered with a JSON-RPC error.
    #[error("error {code}: {message}{}", data.as_ref().map(|d| format!(" ({d})")).unwrap_or_default())]
    Rpc {
        /// The error code.
        code: i32,
        /// The message.
        message: String,
        /// Extra data, if any.
        data: Option<Value>,
    },
    /// The node refused the request for a missing or wrong bearer token; nothing was done.
    #[error(
        "the node refused the request (401): pass its rpc.auth_token with --token or SHOAL_RPC_TOKEN"
    )]
    Unauthorized,
    /// No answer in time; the call may or may not have taken effect.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The node could not be reached or its answer not understood.
    #[error("{0}")]
    Transport(String),
}

/// An HTTP JSON-RPC client for one node.
#[derive(Debug, Clone)]
pub struct RpcClient {
    inner: HttpClient,
    timeout: Duration,
}

impl RpcClient {
    /// A client of the node at `url`, sending `token` as a bearer token if given.
    pub fn new(url: &str, token: Option<&str>, timeout: Duration) -> Result<Self, ClientError> {
        let inner = HttpClientBuilder::default()
            .set_headers(auth_headers(token)?)
            .request_timeout(timeout)
            .max_response_size(MAX_RESPONSE_LEN)
            .build(url)
            .map_err(|e| ClientError::BadUrl {
                url: url.to_owned(),
                reason: e.to_string(),
            })?;
        Ok(Self { inner, timeout })
    }

    /// Calls `method` with `params` (a JSON object, array or nothing).
    pub async fn call(&self, method: &str, params: Option<Value>) -> Result<Value, ClientError> {
        let params = JsonParams::new(method, params)?;
        self.inner
            .request(method, params)
            .await
            .map_err(|e| map_error(e, self.timeout))
    }
}

/// The `authorization` header for `token`, if any.
fn auth_headers(token: Option<&str>) -> Result<HeaderMap, ClientError> {
    let mut headers = HeaderMap::new();
    if let Some(token) = token {
        let value =
            HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| ClientError::BadToken)?;
        headers.insert("authorization", value);
    }
    Ok(headers)
}

/// A call's params as the JSON the user gave: an object, an array or nothing.
struct JsonParams(Option<Value>);

impl JsonParams {
    /// Checks `method` and `params` before anything is sent.
    fn new(method: &str, params: Option<Value>) -> Result<Self, ClientError> {
        if method.is_empty() || method.len() > MAX_METHOD_LEN {
            return Err(ClientError::BadMethod);
        }
        match params {
            None | Some(Value::Array(_) | Value::Object(_)) => Ok(Self(params)),
            Some(other) => Err(ClientError::BadParams(format!("got {}", kind_of(&other)))),
        }
    }
}

impl ToRpcParams for JsonParams {
    fn to_rpc_params(self) -> Result<Option<Box<RawValue>>, serde_json::Error> {
        self.0
            .map(|v| serde_json::value::to_raw_value(&v))
            .transpose()
    }
}

/// A client error as the user should see it.
fn map_error(e: JsonRpcError, timeout: Duration) -> ClientError {
    match e {
        JsonRpcError::Call(err) => ClientError::Rpc {
            code: err.code(),
            message: err.message().to_owned(),
            data: err
                .data()
                .and_then(|raw| serde_json::from_str(raw.get()).ok()),
        },
        JsonRpcError::RequestTimeout => ClientError::Timeout(timeout),
        JsonRpcError::Transport(e)
            if matches!(
                e.downcast_ref::<HttpTransportError>(),
                Some(HttpTransportError::Rejected { status_code: 401 })
            ) || matches!(
                e.downcast_ref::<WsHandshakeError>(),
                Some(WsHandshakeError::Rejected { status_code: 401 })
            ) =>
        {
            ClientError::Unauthorized
        }
        other => ClientError::Transport(chain_text(&other)),
    }
}

/// Whether `method` opens a subscription, which `shoal rpc` follows over WebSocket.
pub fn is_subscription(method: &str) -> bool {
    method.ends_with("_subscribe")
}

/// The WebSocket URL of the node whose HTTP URL is `url` (both are served on one port).
fn ws_url(url: &str) -> Result<String, ClientError> {
    let bad = |reason: &str| ClientError::BadUrl {
        url: url.to_owned(),
        reason: reason.to_owned(),
    };
    if let Some(rest) = url.strip_prefix("http://") {
        Ok(format!("ws://{rest}"))
    } else if let Some(rest) = url.strip_prefix("https://") {
        Ok(format!("wss://{rest}"))
    } else if url.starts_with("ws://") || url.starts_with("wss://") {
        Ok(url.to_owned())
    } else {
        Err(bad("not an http(s):// or ws(s):// URL"))
    }
}

/// Follows subscription `args.method` (its name ends in `_subscribe`; `_unsubscribe` ends it)
/// at the node at `args.url`, with `args.params`: calls `subscribed` once the node accepted the
/// subscription, then hands each notification to `each`, in order, until the node ends the
/// subscription (`Ok`), `stop` completes (`Ok`, after unsubscribing) or `each` fails.
pub async fn follow(
    args: &RpcArgs,
    stop: impl Future<Output = ()>,
    subscribed: impl FnOnce(),
    mut each: impl FnMut(Value) -> std::io::Result<()>,
) -> Result<(), ClientError> {
    let (url, method) = (args.url.as_str(), args.method.as_str());
    let token = args.token.as_deref();
    let timeout = Duration::from_secs(args.timeout.max(1));
    let Some(base) = method.strip_suffix("_subscribe") else {
        return Err(ClientError::BadMethod);
    };
    let params = args.params.as_deref().map(parse_params).transpose()?;
    let params = JsonParams::new(method, params)?;
    let client = WsClientBuilder::default()
        .set_headers(auth_headers(token)?)
        .request_timeout(timeout)
        .connection_timeout(timeout)
        .max_response_size(MAX_RESPONSE_LEN)
        .build(ws_url(url)?)
        .await
        .map_err(|e| map_error(e, timeout))?;
    let unsubscribe = format!("{base}_unsubscribe");
    let mut subscription = client
        .subscribe::<Value, _>(method, params, &unsubscribe)
        .await
        .map_err(|e| map_error(e, timeout))?;
    subscribed();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => {
                // Best effort: the node also ends it when the connection closes.
                let _ = subscription.unsubscribe().await;
                return Ok(());
            }
            item = subscription.next() => match item {
                Some(Ok(value)) => each(value).map_err(|e| ClientError::Transport(e.to_string()))?,
                Some(Err(e)) => return Err(ClientError::Transport(e.to_string())),
                None => return Ok(()),
            },
        }
    }
}

/// An error with its causes (hyper's "client error (Connect)" alone hides "connection refused").
fn chain_text(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(c) = cause {
        let c_text = c.to_string();
        if !text.contains(&c_text) {
            text.push_str(": ");
            text.push_str(&c_text);
        }
        cause = c.source();
    }
    text
}

/// Parses PARAMS text: a JSON object or array.
pub fn parse_params(text: &str) -> Result<Value, ClientError> {
    if text.len() > MAX_PARAMS_LEN {
        return Err(ClientError::BadParams(format!("{} bytes", text.len())));
    }
    let value: Value =
        serde_json::from_str(text).map_err(|e| ClientError::BadParams(e.to_string()))?;
    match value {
        Value::Object(_) | Value::Array(_) => Ok(value),
        other => Err(ClientError::BadParams(format!("got {}", kind_of(&other)))),
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// `shoal rpc`: calls `method` with the PARAMS text and returns the result.
pub async fn run(
    url: &str,
    token: Option<&str>,
    method: &str,
    params: Option<&str>,
    timeout: Duration,
) -> Result<Value, ClientError> {
    let params = params.map(parse_params).transpose()?;
    RpcClient::new(url, token, timeout)?
        .call(method, params)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_must_be_object_or_array() {
        assert!(parse_params("{\"key\": \"a\"}").is_ok());
        assert!(parse_params("[1, 2]").is_ok());
        assert!(matches!(parse_params("3"), Err(ClientError::BadParams(_))));
        assert!(matches!(parse_params("{"), Err(ClientError::BadParams(_))));
    }

    #[tokio::test]
    async fn unreachable_node_is_a_transport_error() {
        // Port 1 on loopback is closed on any sane test machine.
        let client = RpcClient::new("http://127.0.0.1:1", None, Duration::from_secs(5)).unwrap();
        let err = client.call("node_info", None).await.unwrap_err();
        assert!(matches!(err, ClientError::Transport(_)), "{err}");
        assert!(matches!(
            RpcClient::new("not a url", None, Duration::from_secs(1)),
            Err(ClientError::BadUrl { .. })
        ));
        assert!(matches!(
            client.call("", None).await,
            Err(ClientError::BadMethod)
        ));
    }
}
