//! The JSON-RPC endpoint in one process: a few DHT nodes over the memory transport, each with its
//! RPC server on loopback. Puts and gets in every encoding, lockstep, subscriptions, OpenRPC,
//! metrics, the auth token, the rate limit, and bad input of every kind: each gets a clear error
//! and the node keeps serving.

use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use jsonrpsee::core::ClientError;
use jsonrpsee::core::client::{ClientT, SubscriptionClientT};
use jsonrpsee::core::params::ObjectParams;
use jsonrpsee::http_client::{HttpClient, HttpClientBuilder};
use jsonrpsee::ws_client::WsClientBuilder;
use libp2p::Multiaddr;
use serde_json::{Value, json};
use shoal_dht::node::{EventLoop, memory_transport};
use shoal_dht::{Client, Config, NodeKeyExt};
use shoal_node::join::JoinStatus;
use shoal_node::rpc::{self, Context, RpcConfig, RpcServer};
use shoal_pow::{CancelToken, MintOptions, NodeKey, Puzzle, mint};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn start_node() -> (Client, Multiaddr) {
    let key = NodeKey::generate();
    let config = Config::local();
    let puzzle = Puzzle::new(config.puzzle.clone()).expect("the local preset is valid");
    let options = MintOptions {
        threads: NonZeroUsize::MIN,
        ..MintOptions::default()
    };
    let proof = mint(
        &puzzle,
        &key.public(),
        &options,
        &CancelToken::new(),
        |_| {},
    )
    .expect("minting at the local difficulty succeeds")
    .proof;
    let transport = memory_transport(&key.to_libp2p());
    let (client, event_loop) =
        EventLoop::new(key, proof, config, transport).expect("the local preset starts");
    tokio::spawn(event_loop.run());
    let addr = client
        .listen("/memory/0".parse().expect("valid multiaddr"))
        .await
        .expect("memory listen");
    (client, addr)
}

fn rpc_config() -> RpcConfig {
    RpcConfig {
        listen: "127.0.0.1:0".parse().expect("valid address"),
        ..RpcConfig::default()
    }
}

async fn serve(node: &Client, config: &RpcConfig) -> RpcServer {
    let context = Context {
        network: "local".into(),
        transport: "tcp",
        onion: None,
        data_dir: None,
        default_ttl: Duration::from_secs(3600),
        join: Arc::new(JoinStatus::new(false)),
    };
    rpc::start(config, node.clone(), context)
        .await
        .expect("the RPC server starts")
}

/// `n` nodes joined through the first, each with an RPC server; waits for full membership.
async fn cluster(n: usize) -> Vec<(Client, RpcServer)> {
    let mut nodes = Vec::new();
    let mut seed = None;
    for _ in 0..n {
        let (client, addr) = start_node().await;
        if let Some(seed) = &seed {
            client
                .join(vec![Clone::clone(seed)])
                .await
                .expect("join through the seed");
        } else {
            seed = Some((client.peer_id(), addr));
        }
        let server = serve(&client, &rpc_config()).await;
        nodes.push((client, server));
    }
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let mut done = true;
            for (c, _) in &nodes {
                done &= c.members().await.len() == n - 1 && c.peers().await.len() == n - 1;
            }
            if done {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("the cluster converges in 30 s");
    nodes
}

fn http(server: &RpcServer) -> HttpClient {
    HttpClientBuilder::default()
        .request_timeout(Duration::from_secs(30))
        .build(server.url())
        .expect("valid URL")
}

fn params(value: Value) -> ObjectParams {
    let mut p = ObjectParams::new();
    if let Value::Object(map) = value {
        for (k, v) in map {
            p.insert(&k, v).expect("JSON values serialize");
        }
    }
    p
}

async fn call(client: &impl ClientT, method: &str, p: Value) -> Result<Value, ClientError> {
    client.request(method, params(p)).await
}

/// The code and data of a JSON-RPC error.
fn error_of(result: Result<Value, ClientError>) -> (i32, Value) {
    match result {
        Err(ClientError::Call(e)) => {
            let data = e
                .data()
                .map(|d| serde_json::from_str(d.get()).expect("data is JSON"))
                .unwrap_or(Value::Null);
            (e.code(), data)
        }
        other => panic!("expected a JSON-RPC error, got {other:?}"),
    }
}

/// Sends raw bytes as an HTTP POST body and returns the status line and body.
async fn raw_post(server: &RpcServer, body: &[u8], headers: &str) -> (String, String) {
    let mut stream = tokio::net::TcpStream::connect(server.local_addr())
        .await
        .expect("connect");
    let head = format!(
        "POST / HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n{headers}\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.expect("write head");
    // The server may answer and close before reading an oversized body.
    let _ = stream.write_all(body).await;
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response).await;
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text.lines().next().unwrap_or_default().to_owned();
    let body = text.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned();
    (status, body)
}

async fn raw_get(server: &RpcServer, path: &str, headers: &str) -> (String, String) {
    let mut stream = tokio::net::TcpStream::connect(server.local_addr())
        .await
        .expect("connect");
    let head =
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n{headers}\r\n");
    stream.write_all(head.as_bytes()).await.expect("write head");
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response).await;
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text.lines().next().unwrap_or_default().to_owned();
    let body = text.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned();
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_rpc_end_to_end_in_one_process() {
    let nodes = cluster(3).await;
    let (writer, reader) = (http(&nodes[0].1), http(&nodes[1].1));

    // Put through one node, get through another, in each encoding.
    let put = call(
        &writer,
        "dht_put",
        json!({"key": "greeting", "value": "hello"}),
    )
    .await
    .expect("put");
    let got = call(&reader, "dht_get", json!({"key": "greeting"}))
        .await
        .expect("get");
    assert_eq!(got["value"], "hello");
    assert_eq!(got["encoding"], "utf8");
    assert_eq!(got["seq"], put["seq"]);
    assert_eq!(got["publisher"], nodes[0].0.peer_id().to_string());
    assert_eq!(got["lockstep"], false);
    assert!(got["created_at"].as_u64().expect("created_at") > 1_600_000_000);
    call(
        &writer,
        "dht_put",
        json!({"key": "00ff", "key_encoding": "hex", "value": "AAEC/w==", "encoding": "base64", "ttl": 60, "quorum": 2}),
    )
    .await
    .expect("binary put");
    let got = call(
        &reader,
        "dht_get",
        json!({"key": "00ff", "key_encoding": "hex", "encoding": "hex"}),
    )
    .await
    .expect("binary get");
    assert_eq!(got["value"], "000102ff");
    assert_eq!(got["encoding"], "hex");
    // Non-UTF-8 bytes asked for as utf8 come back as base64, and say so.
    let got = call(
        &reader,
        "dht_get",
        json!({"key": "00ff", "key_encoding": "hex"}),
    )
    .await
    .expect("binary get as utf8");
    assert_eq!(got["encoding"], "base64");
    assert_eq!(got["value"], "AAEC/w==");

    // A missing key is "not found".
    let (code, data) = error_of(call(&reader, "dht_get", json!({"key": "nobody-put-this"})).await);
    assert_eq!(code, -32040);
    assert_eq!(data["error"], "not found");

    // Lockstep: announce, put the announced value, get says it was announced.
    let announced = call(
        &writer,
        "lockstep_announce",
        json!({"key": "release", "value": "v1.0"}),
    )
    .await
    .expect("announce");
    assert!(announced["accepted"].as_u64().expect("accepted") >= 1);
    let notices = call(&reader, "lockstep_get", json!({"key": "release"}))
        .await
        .expect("notices");
    assert_eq!(notices["notices"][0]["seq"], announced["seq"]);
    assert_eq!(notices["notices"][0]["value_hash"], announced["value_hash"]);
    call(
        &writer,
        "dht_put",
        json!({"key": "release", "value": "v1.0", "seq": announced["seq"]}),
    )
    .await
    .expect("put of the announced value");
    let got = call(&reader, "dht_get", json!({"key": "release"}))
        .await
        .expect("get");
    assert_eq!(got["lockstep"], true);
    assert_eq!(got["value"], "v1.0");
    // Another value for the announced sequence, or an older sequence, is a lockstep mismatch.
    let (code, data) = error_of(
        call(
            &writer,
            "dht_put",
            json!({"key": "release", "value": "v1.0-evil", "seq": announced["seq"]}),
        )
        .await,
    );
    assert_eq!(code, -32043);
    assert_eq!(data["announced_seq"], announced["seq"]);
    // A put without a sequence number takes the announced one.
    let second = call(
        &writer,
        "lockstep_announce",
        json!({"key": "release", "value": "v2.0"}),
    )
    .await
    .expect("second announce");
    let put = call(
        &writer,
        "dht_put",
        json!({"key": "release", "value": "v2.0"}),
    )
    .await
    .expect("put");
    assert_eq!(put["seq"], second["seq"]);
    // The reader may answer first with its older copy while the put travels; its search goes
    // on and the newer value wins within the query bound.
    let got = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            let got = call(&reader, "dht_get", json!({"key": "release"}))
                .await
                .expect("get");
            if got["seq"] == put["seq"] {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("the newer put reaches the reader");
    assert_eq!(
        (got["value"].as_str(), got["lockstep"].as_bool()),
        (Some("v2.0"), Some(true))
    );

    // Membership, peers, info, OpenRPC.
    let members = call(&reader, "swim_members", json!({}))
        .await
        .expect("members");
    assert_eq!(members.as_array().expect("array").len(), 2);
    assert_eq!(members[0]["state"], "alive");
    // Both routed to above, so both checked: listed, then verified.
    assert_eq!(members[0]["verified"], true);
    assert_eq!(members[1]["verified"], true);
    let peers = call(&reader, "node_peers", json!({})).await.expect("peers");
    assert_eq!(peers.as_array().expect("array").len(), 2);
    // In detail: the connected peers, the bytes each sent and was sent, their standing. A
    // member listed from news (with its proof) may not have exchanged a SWIM message with the
    // reader yet: its first probe or gossip round comes within a probe period or so.
    let swim_both_ways = |p: &Value| {
        let swim = &p["traffic"]["swim"];
        swim["in"].as_u64() > Some(0) && swim["out"].as_u64() > Some(0)
    };
    let mut detail = Value::Null;
    for _ in 0..100 {
        detail = call(&reader, "node_peers", json!({"detail": true}))
            .await
            .expect("peers in detail");
        if detail
            .as_array()
            .is_some_and(|d| d.len() == 2 && d.iter().all(swim_both_ways))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let detail = detail.as_array().expect("array");
    assert_eq!(detail.len(), 2, "{detail:?}");
    for p in detail {
        assert_eq!(p["standing"], 100, "{p}");
        assert_eq!(p["routed"], true, "{p}");
        assert!(swim_both_ways(p), "{p}");
    }
    let writer_entry = detail
        .iter()
        .find(|p| p["peer"] == nodes[0].0.peer_id().to_string())
        .expect("the writer is connected");
    // It sent the reader a replica put.
    assert!(
        writer_entry["traffic"]["dht"]["in"].as_u64() > Some(0),
        "{writer_entry}"
    );
    let info = call(&reader, "node_info", json!({})).await.expect("info");
    assert_eq!(info["peer_id"], nodes[1].0.peer_id().to_string());
    assert_eq!(info["members"]["alive"], 2);
    let checks = &info["identity_checks"];
    assert_eq!(checks["pending"], 0);
    assert!(checks["verified"].as_u64() >= Some(2), "{checks}");
    assert!(checks["scrypt_evaluations"].as_u64() >= Some(1), "{checks}");
    let found = call(
        &reader,
        "dht_findNode",
        json!({"peer": nodes[2].0.peer_id().to_string()}),
    )
    .await
    .expect("find node");
    assert!(
        found["peers"]
            .as_array()
            .expect("array")
            .contains(&json!(nodes[2].0.peer_id().to_string()))
    );
    let doc = call(&reader, "rpc.discover", json!({}))
        .await
        .expect("discover");
    let mut documented: Vec<String> = doc["methods"]
        .as_array()
        .expect("methods")
        .iter()
        .map(|m| m["name"].as_str().expect("name").to_owned())
        .collect();
    documented.sort();
    let mut expected: Vec<String> = shoal_node::rpc::openrpc::documented_methods()
        .into_iter()
        .map(String::from)
        .collect();
    expected.sort();
    assert_eq!(documented, expected);

    // Metrics on the same port.
    let (status, text) = raw_get(&nodes[1].1, "/metrics", "").await;
    assert!(status.contains("200"), "{status}");
    assert!(
        text.contains("shoal_swim_members{kind=\"alive\"} 2"),
        "{text}"
    );
    assert!(
        text.contains("shoal_rpc_calls_total{method=\"dht_get\",outcome=\"ok\"}"),
        "{text}"
    );
    assert!(
        text.contains("shoal_rpc_call_duration_seconds_bucket"),
        "{text}"
    );
    let (status, _) = raw_get(&nodes[1].1, "/health", "").await;
    assert!(status.contains("200"), "{status}");

    // A WebSocket subscription sees a notice another node announces.
    let ws = WsClientBuilder::default()
        .build(format!("ws://{}", nodes[2].1.local_addr()))
        .await
        .expect("websocket");
    let mut sub = ws
        .subscribe::<Value, _>(
            "lockstep_subscribe",
            params(json!({"key": "news"})),
            "lockstep_unsubscribe",
        )
        .await
        .expect("subscribe");
    call(
        &writer,
        "lockstep_announce",
        json!({"key": "other", "value": "x"}),
    )
    .await
    .expect("announce");
    call(
        &writer,
        "lockstep_announce",
        json!({"key": "news", "value": "extra"}),
    )
    .await
    .expect("announce");
    let notice = tokio::time::timeout(Duration::from_secs(10), sub.next())
        .await
        .expect("a notice within 10 s")
        .expect("subscription open")
        .expect("notice decodes");
    assert_eq!(notice["key"], "news", "the key filter holds");
    assert_eq!(notice["publisher"], nodes[0].0.peer_id().to_string());
    let base = notice["feed_seq"].as_u64().expect("a feed position");
    let feed = notice["feed"].as_str().expect("a feed name").to_owned();

    // A subscriber that saw the position before that one resumes: it and the next come from
    // the backlog, the live one after, none twice.
    call(
        &writer,
        "lockstep_announce",
        json!({"key": "more", "value": "y"}),
    )
    .await
    .expect("announce");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut resumed = ws
        .subscribe::<Value, _>(
            "lockstep_subscribe",
            params(json!({"after": {feed.clone(): base - 1}})),
            "lockstep_unsubscribe",
        )
        .await
        .expect("subscribe with after");
    call(
        &writer,
        "lockstep_announce",
        json!({"key": "last", "value": "z"}),
    )
    .await
    .expect("announce");
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let n = tokio::time::timeout(Duration::from_secs(10), resumed.next())
            .await
            .expect("a notice within 10 s")
            .expect("subscription open")
            .expect("notice decodes");
        assert_eq!(n["feed"], feed.as_str());
        seen.push((
            n["feed_seq"].as_u64().unwrap(),
            n["key"].as_str().unwrap().to_owned(),
        ));
    }
    assert_eq!(
        seen,
        vec![
            (base, "news".into()),
            (base + 1, "more".into()),
            (base + 2, "last".into())
        ]
    );
    let bad = ws
        .subscribe::<Value, _>(
            "lockstep_subscribe",
            params(json!({"after": {"not-a-feed": 1}})),
            "lockstep_unsubscribe",
        )
        .await;
    assert!(bad.is_err(), "a bad feed name is refused");

    bad_input_gets_clear_errors(&nodes[0].1, &writer).await;
    // After all of that, the node still serves.
    let got = call(&writer, "dht_get", json!({"key": "greeting"}))
        .await
        .expect("still serving");
    assert_eq!(got["value"], "hello");
}

async fn bad_input_gets_clear_errors(server: &RpcServer, client: &HttpClient) {
    // Malformed JSON: parse error.
    let (status, body) = raw_post(server, b"{\"jsonrpc\":\"2.0\",\"method\":", "").await;
    assert!(status.contains("200") || status.contains("400"), "{status}");
    assert!(body.contains("-32700"), "{body}");
    // Not JSON-RPC at all.
    let (_, body) = raw_post(server, b"[1,2,3]", "").await;
    assert!(body.contains("-32600"), "{body}");
    // Unknown method.
    let (code, _) = error_of(call(client, "dht_delete", json!({"key": "k"})).await);
    assert_eq!(code, -32601);
    // Wrong types, missing and unknown fields, positional params.
    for bad in [
        json!({"key": 7, "value": "v"}),
        json!({"value": "v"}),
        json!({"key": "k", "value": "v", "ttl": "soon"}),
        json!({"key": "k", "value": "v", "ttl": 0}),
        json!({"key": "k", "value": "v", "quorum": 0}),
        json!({"key": "k", "value": "v", "colour": "red"}),
    ] {
        let (code, data) = error_of(call(client, "dht_put", bad.clone()).await);
        assert_eq!(code, -32602, "{bad}");
        assert_eq!(data["error"], "invalid params", "{bad}");
    }
    let positional: Result<Value, _> = client.request("dht_get", jsonrpsee::rpc_params!["k"]).await;
    assert_eq!(error_of(positional).0, -32602);
    // Bad encodings name the parameter.
    let (code, data) = error_of(
        call(
            client,
            "dht_put",
            json!({"key": "k", "value": "xyz", "encoding": "hex"}),
        )
        .await,
    );
    assert_eq!(code, -32602);
    assert_eq!(data["param"], "value");
    let (code, _) = error_of(
        call(
            client,
            "dht_put",
            json!({"key": "k", "value": "v", "encoding": "rot13"}),
        )
        .await,
    );
    assert_eq!(code, -32602);
    let (code, data) = error_of(
        call(
            client,
            "dht_get",
            json!({"key": "!!", "key_encoding": "base64"}),
        )
        .await,
    );
    assert_eq!(code, -32602);
    assert_eq!(data["param"], "key");
    let (code, _) = error_of(call(client, "dht_findNode", json!({"peer": "not-a-peer"})).await);
    assert_eq!(code, -32602);
    // Oversized value and key: "too large" with the limit.
    let big = "x".repeat(64 * 1024 + 1);
    let (code, data) = error_of(call(client, "dht_put", json!({"key": "k", "value": big})).await);
    assert_eq!(code, -32045);
    assert_eq!(data["max"], 65536);
    let (code, _) = error_of(
        call(
            client,
            "dht_put",
            json!({"key": "k".repeat(513), "value": "v"}),
        )
        .await,
    );
    assert_eq!(code, -32045);
    // An oversized request body is refused before parsing.
    let huge = format!(
        "{{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"dht_put\",\"params\":{{\"key\":\"k\",\"value\":\"{}\"}}}}",
        "y".repeat(300 * 1024)
    );
    let (status, body) = raw_post(server, huge.as_bytes(), "").await;
    assert!(
        status.contains("413") || body.contains("-32007"),
        "{status} {body}"
    );
    // A batch over the limit is refused as a whole.
    let batch: Vec<Value> = (0..65)
        .map(|i| json!({"jsonrpc": "2.0", "id": i, "method": "node_info"}))
        .collect();
    let (_, body) = raw_post(
        server,
        serde_json::to_string(&batch).expect("JSON").as_bytes(),
        "",
    )
    .await;
    assert!(body.contains("-32010"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_token_and_rate_limit() {
    let (node, _) = start_node().await;
    let token = "a-long-enough-test-token";
    let config = RpcConfig {
        auth_token: Some(token.into()),
        requests_per_second: 1,
        burst: 3,
        ..rpc_config()
    };
    let server = serve(&node, &config).await;
    let body = br#"{"jsonrpc":"2.0","id":1,"method":"node_info"}"#;
    let (status, _) = raw_post(&server, body, "").await;
    assert!(status.contains("401"), "no token: {status}");
    let (status, _) = raw_post(
        &server,
        body,
        "Authorization: Bearer wrong-token-of-some-length\r\n",
    )
    .await;
    assert!(status.contains("401"), "wrong token: {status}");
    let (status, _) = raw_get(&server, "/metrics", "").await;
    assert!(
        status.contains("401"),
        "metrics need the token too: {status}"
    );
    let auth = format!("Authorization: Bearer {token}\r\n");
    // One WebSocket, so one connection by construction (an HTTP client may open a second
    // keep-alive connection, with a bucket of its own): three calls fit the burst, the fourth
    // is limited.
    let mut headers = http::HeaderMap::new();
    headers.insert(
        http::header::AUTHORIZATION,
        format!("Bearer {token}").parse().expect("valid header"),
    );
    let client = WsClientBuilder::default()
        .set_headers(headers)
        .build(format!("ws://{}", server.local_addr()))
        .await
        .expect("the WebSocket opens with the token");
    let (mut allowed, mut limited) = (0u64, 0u64);
    let started = std::time::Instant::now();
    for _ in 0..10 {
        match call(&client, "node_info", json!({})).await {
            Ok(info) => {
                assert_eq!(info["peer_id"], node.peer_id().to_string());
                allowed += 1;
            }
            Err(e) => {
                assert_eq!(error_of(Err(e)).0, -32048);
                limited += 1;
            }
        }
    }
    // The burst, plus one call per second the loop took (a loaded machine may be slow).
    let refilled = started.elapsed().as_secs() + 1;
    assert!(
        allowed <= 3 + refilled,
        "{allowed} calls allowed in {:?}",
        started.elapsed()
    );
    if refilled < 7 {
        assert!(limited >= 1, "the rate limit held");
    }
    let (status, body) = raw_post(&server, body, &auth).await;
    assert!(status.contains("200"), "{status} {body}");

    // The dashboard's page loads without the token and says it needs one; its socket carries
    // the token in the query; a page of another site is refused even with the token.
    let (status, page) = raw_get(&server, "/", "").await;
    assert!(status.contains("200"), "{status}");
    assert!(page.contains(r#"name="shoal-auth" content="required""#));
    let client = WsClientBuilder::default()
        .build(format!(
            "ws://{}/?access_token={token}",
            server.local_addr()
        ))
        .await
        .expect("the WebSocket opens with the token in its query");
    tokio::time::sleep(Duration::from_secs(2)).await;
    call(&client, "node_info", json!({}))
        .await
        .expect("a call on the socket opened with the query's token");
    assert!(
        WsClientBuilder::default()
            .build(format!("ws://{}/?access_token=wrong", server.local_addr()))
            .await
            .is_err(),
        "a wrong token in the query is refused"
    );
    let (status, _) = raw_post(
        &server,
        br#"{"jsonrpc":"2.0","id":1,"method":"node_info"}"#,
        &format!("{auth}Origin: http://evil.example\r\n"),
    )
    .await;
    assert!(status.contains("403"), "another site's page: {status}");

    // Binding beyond loopback without a token is refused.
    let open = RpcConfig {
        listen: "0.0.0.0:0".parse().expect("valid address"),
        ..RpcConfig::default()
    };
    let context = Context {
        network: "local".into(),
        transport: "tcp",
        onion: None,
        data_dir: None,
        default_ttl: Duration::from_secs(60),
        join: Arc::new(JoinStatus::new(false)),
    };
    assert!(matches!(
        rpc::start(&open, node.clone(), context).await,
        Err(rpc::RpcStartError::TokenRequired(_))
    ));
}

/// The methods the dashboard draws from: records in pages, the routing table, member changes as
/// they happen, and the activity history.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboards_methods_list_page_and_follow() {
    let nodes = cluster(3).await;
    let client = WsClientBuilder::default()
        .build(format!("ws://{}", nodes[0].1.local_addr()))
        .await
        .expect("WebSocket");
    let mut changes = client
        .subscribe::<Value, _>("swim_subscribe", params(json!({})), "swim_unsubscribe")
        .await
        .expect("subscribed to member changes");

    for i in 0..7 {
        call(
            &client,
            "dht_put",
            json!({"key": format!("page-{i}"), "value": "v"}),
        )
        .await
        .expect("put");
    }
    call(&client, "dht_put", json!({"key": "other", "value": "vv"}))
        .await
        .expect("put");
    // Pages of 3 under the prefix, in key order, until `next` is null.
    let mut keys = Vec::new();
    let mut after = Value::Null;
    loop {
        let mut p = json!({"prefix": "page-", "limit": 3});
        if !after.is_null() {
            p["after"] = after.clone();
        }
        let page = call(&client, "dht_records", p).await.expect("a page");
        assert_eq!(page["total"], 8, "{page}");
        let records = page["records"].as_array().expect("records");
        assert!(records.len() <= 3);
        for r in records {
            assert_eq!(r["size"], 1);
            assert_eq!(r["publisher"], nodes[0].0.peer_id().to_string());
            keys.push(r["key"].as_str().expect("key").to_owned());
        }
        after = page["next"].clone();
        if after.is_null() {
            break;
        }
    }
    let expected: Vec<String> = (0..7).map(|i| format!("page-{i}")).collect();
    assert_eq!(keys, expected);

    let table = call(&client, "dht_routingTable", json!({}))
        .await
        .expect("routing table");
    assert_eq!(table["size"], 2);
    let mut routed: Vec<String> = table["buckets"]
        .as_array()
        .expect("buckets")
        .iter()
        .flat_map(|b| b["peers"].as_array().expect("peers").clone())
        .map(|p| p.as_str().expect("a peer id").to_owned())
        .collect();
    routed.sort();
    let mut others: Vec<String> = nodes[1..]
        .iter()
        .map(|(c, _)| c.peer_id().to_string())
        .collect();
    others.sort();
    assert_eq!(routed, others);
    let members = call(&client, "swim_members", json!({}))
        .await
        .expect("members");
    for m in members.as_array().expect("a list") {
        assert!(m["changed_at"].as_u64().is_some(), "seen joining: {m}");
    }

    // Node 3 leaves: the subscription says so.
    let leaver = nodes[2].0.peer_id().to_string();
    nodes[2].0.shutdown().await;
    let change = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let change = changes
                .next()
                .await
                .expect("the subscription stays open")
                .expect("a change");
            if change["peer"] == leaver.as_str() {
                return change;
            }
        }
    })
    .await
    .expect("node 3's departure within 30 s");
    assert!(
        change["state"] == "left" || change["state"] == "dead",
        "{change}"
    );
    assert!(change["at"].as_u64().is_some());

    // Samples every interval: the puts above are in them.
    let history = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let h = call(&client, "node_stats", json!({})).await.expect("stats");
            let samples = h["samples"].as_array().expect("samples").clone();
            let puts: u64 = samples
                .iter()
                .filter_map(|s| s["rpc"]["dht_put"]["calls"].as_u64())
                .sum();
            if puts >= 8 {
                return h;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    })
    .await
    .expect("the puts in the history");
    assert_eq!(history["interval_secs"], 2);
    let mut samples = client
        .subscribe::<Value, _>(
            "node_subscribeStats",
            params(json!({})),
            "node_unsubscribeStats",
        )
        .await
        .expect("subscribed to samples");
    let next = tokio::time::timeout(Duration::from_secs(10), samples.next())
        .await
        .expect("a sample within 10 s")
        .expect("open")
        .expect("a sample");
    assert!(
        next["t"].as_f64().is_some() && next["probes"].as_u64().is_some(),
        "{next}"
    );
}
