//! `shoal rpc METHOD [PARAMS]`: a JSON-RPC client over HTTP.
//!
//! PARAMS is a JSON object (parameters by name, which every shoal method takes) or a JSON array
//! (by position). The result is returned as JSON; a JSON-RPC error keeps its code, message and
//! data.

use std::time::Duration;

use jsonrpsee::core::client::{ClientT, Error as JsonRpcError};
use jsonrpsee::core::params::{ArrayParams, ObjectParams};
use jsonrpsee::http_client::transport::Error as HttpTransportError;
use jsonrpsee::http_client::{HeaderMap, HeaderValue, HttpClient, HttpClientBuilder};
use serde_json::Value;

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
        let mut headers = HeaderMap::new();
        if let Some(token) = token {
            let value = HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|_| ClientError::BadToken)?;
            headers.insert("authorization", value);
        }
        let inner = HttpClientBuilder::default()
            .set_headers(headers)
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
        if method.is_empty() || method.len() > MAX_METHOD_LEN {
            return Err(ClientError::BadMethod);
        }
        let bad = |e: serde_json::Error| ClientError::BadParams(e.to_string());
        let result = match params {
            None => self.inner.request(method, ArrayParams::new()).await,
            Some(Value::Array(items)) => {
                let mut p = ArrayParams::new();
                for item in items {
                    p.insert(item).map_err(bad)?;
                }
                self.inner.request(method, p).await
            }
            Some(Value::Object(fields)) => {
                let mut p = ObjectParams::new();
                for (name, value) in fields {
                    p.insert(&name, value).map_err(bad)?;
                }
                self.inner.request(method, p).await
            }
            Some(other) => {
                return Err(ClientError::BadParams(format!("got {}", kind_of(&other))));
            }
        };
        result.map_err(|e| match e {
            JsonRpcError::Call(err) => ClientError::Rpc {
                code: err.code(),
                message: err.message().to_owned(),
                data: err
                    .data()
                    .and_then(|raw| serde_json::from_str(raw.get()).ok()),
            },
            JsonRpcError::RequestTimeout => ClientError::Timeout(self.timeout),
            JsonRpcError::Transport(e)
                if matches!(
                    e.downcast_ref::<HttpTransportError>(),
                    Some(HttpTransportError::Rejected { status_code: 401 })
                ) =>
            {
                ClientError::Unauthorized
            }
            other => ClientError::Transport(chain_text(&other)),
        })
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
