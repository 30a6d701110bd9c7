//! A JSON-RPC client of running Shoal nodes, with `jsonrpsee`'s HTTP and WebSocket clients.
//!
//! It talks to two nodes of one network, A and B (a write through one node is read through
//! another, and a node hears the announcements other nodes make):
//!
//! 1. subscribes to lockstep notices on A over a WebSocket;
//! 2. puts a record through A and gets it back through B;
//! 3. asks B for a key nobody put, and handles the "not found" error;
//! 4. announces a value through B (lockstep), and receives the notice on A's subscription;
//! 5. puts the announced value through B and gets it back through A, marked as announced.
//!
//! ```sh
//! cargo run -p shoal-examples --example client -- http://127.0.0.1:7401 http://127.0.0.1:7403
//! ```
//!
//! Without arguments A is `$SHOAL_RPC` and B `$SHOAL_RPC_2`, else the first two nodes of
//! `shoal testnet --base-port 7400`. Every method takes its parameters by name (a JSON object).

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use jsonrpsee::core::ClientError;
use jsonrpsee::core::client::{ClientT, SubscriptionClientT};
use jsonrpsee::core::params::ObjectParams;
use jsonrpsee::http_client::{HttpClient, HttpClientBuilder};
use jsonrpsee::ws_client::WsClientBuilder;
use serde_json::{Value, json};

/// How long one call may take (a put waits for its replicas), and the wait for a notice.
const TIMEOUT: Duration = Duration::from_secs(60);

/// Shoal's error code for "no valid record for the key".
const NOT_FOUND: i32 = -32040;

const USAGE: &str = "usage: client [URL_A] [URL_B]

URL_A and URL_B are the JSON-RPC URLs of two nodes of one network (default $SHOAL_RPC and
$SHOAL_RPC_2, else http://127.0.0.1:7401 and http://127.0.0.1:7403: the first two nodes of
`shoal testnet --base-port 7400`).";

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "-h" || a == "--help") {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    if args.len() > 2 {
        eprintln!("error: at most two URLs\n\n{USAGE}");
        return ExitCode::from(2);
    }
    let url = |i: usize, var: &str, default: &str| {
        args.get(i)
            .cloned()
            .or_else(|| std::env::var(var).ok())
            .unwrap_or_else(|| default.to_owned())
    };
    let url_a = url(0, "SHOAL_RPC", "http://127.0.0.1:7401");
    let url_b = url(1, "SHOAL_RPC_2", "http://127.0.0.1:7403");
    match run(&url_a, &url_b).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // `{:#}` prints the error with its causes on one line.
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs the five steps against nodes A and B.
async fn run(url_a: &str, url_b: &str) -> anyhow::Result<()> {
    let a = http_client(url_a)?;
    let b = http_client(url_b)?;
    // The node's information answers at once: a quick check that the URL is right.
    let info = call(&a, "node_info", json!({})).await.with_context(|| {
        format!("calling node_info at {url_a} (is a Shoal node listening there?)")
    })?;
    println!("A is {} on network {}", info["peer_id"], info["network"]);

    // 1. Subscribe on A to the notices for one key. HTTP and WebSocket share the node's port;
    // subscriptions need the WebSocket.
    let ws_url = websocket_url(url_a)?;
    let ws = WsClientBuilder::default()
        .request_timeout(TIMEOUT)
        .build(&ws_url)
        .await
        .with_context(|| format!("opening a WebSocket to {ws_url}"))?;
    let mut notices = ws
        .subscribe::<Value, _>(
            "lockstep_subscribe",
            params(json!({"key": "client-release"}))?,
            "lockstep_unsubscribe",
        )
        .await
        .context("subscribing to notices")?;

    // 2. Put through A, get through B. The put returns once enough replicas kept the record.
    let put = call(
        &a,
        "dht_put",
        json!({"key": "client-greeting", "value": "hello from jsonrpsee"}),
    )
    .await
    .context("put")?;
    println!("put client-greeting through A (seq {})", put["seq"]);
    let got = call(&b, "dht_get", json!({"key": "client-greeting"}))
        .await
        .context("get")?;
    println!(
        "read back through B: {} (seq {}, valid copies {})",
        got["value"], got["seq"], got["copies"]["valid"]
    );

    // 3. Errors are typed: a code, a message, and `data` with the details.
    match call(&b, "dht_get", json!({"key": "client-nobody-put-this"})).await {
        Err(ClientError::Call(e)) if e.code() == NOT_FOUND => {
            println!(
                "get of a missing key: not found ({}): {}",
                e.code(),
                e.message()
            );
        }
        Err(e) => return Err(e).context("get of a missing key"),
        Ok(v) => bail!("a key nobody put was found: {v}"),
    }

    // 4. Lockstep: B announces the hash of a value before the value travels; A, among the nodes
    // closest to the key, keeps the notice and tells its subscribers.
    let announced = call(
        &b,
        "lockstep_announce",
        json!({"key": "client-release", "value": "v1.0"}),
    )
    .await
    .context("announce")?;
    println!(
        "announced client-release through B (seq {}, kept by {} nodes)",
        announced["seq"], announced["accepted"]
    );
    let notice = tokio::time::timeout(TIMEOUT, async {
        loop {
            match notices.next().await {
                Some(Ok(n)) if n["seq"] == announced["seq"] => return Ok(n),
                // An older announcement of the same key, or a note that some were missed.
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(anyhow::Error::new(e).context("a notice")),
                None => bail!("the subscription closed"),
            }
        }
    })
    .await
    .with_context(|| format!("no notice within {TIMEOUT:?}"))??;
    println!(
        "notice on A's subscription: {} seq {} from {} (value hash {})",
        notice["key"], notice["seq"], notice["publisher"], notice["value_hash"]
    );
    notices
        .unsubscribe()
        .await
        .context("ending the subscription")?;

    // 5. Put the announced value with the announced sequence number, read it through A.
    call(
        &b,
        "dht_put",
        json!({"key": "client-release", "value": "v1.0", "seq": announced["seq"]}),
    )
    .await
    .context("put of the announced value")?;
    let got = call(&a, "dht_get", json!({"key": "client-release"}))
        .await
        .context("get of the announced value")?;
    println!(
        "read back through A: {} (lockstep: {})",
        got["value"], got["lockstep"]
    );
    Ok(())
}

fn http_client(url: &str) -> anyhow::Result<HttpClient> {
    HttpClientBuilder::default()
        .request_timeout(TIMEOUT)
        .build(url)
        .with_context(|| format!("{url:?} is not a usable URL"))
}

/// The WebSocket URL of an HTTP endpoint: same host and port, `ws` for `http`.
fn websocket_url(url: &str) -> anyhow::Result<String> {
    if let Some(rest) = url.strip_prefix("http://") {
        Ok(format!("ws://{rest}"))
    } else if let Some(rest) = url.strip_prefix("https://") {
        Ok(format!("wss://{rest}"))
    } else if url.starts_with("ws://") || url.starts_with("wss://") {
        Ok(url.to_owned())
    } else {
        bail!("{url:?} is not an http:// or ws:// URL")
    }
}

/// A JSON object as by-name parameters.
fn params(object: Value) -> anyhow::Result<ObjectParams> {
    let Value::Object(fields) = object else {
        bail!("parameters must be a JSON object");
    };
    let mut params = ObjectParams::new();
    for (name, value) in fields {
        params.insert(&name, value)?;
    }
    Ok(params)
}

/// Calls `method` with by-name parameters.
async fn call(client: &HttpClient, method: &str, object: Value) -> Result<Value, ClientError> {
    let params = params(object).map_err(|e| ClientError::Custom(e.to_string()))?;
    client.request(method, params).await
}
