//! The JSON-RPC methods. Parameters are passed by name (a JSON object); unknown fields are
//! refused. Keys and values are UTF-8 text by default, or hex or base64 (`encoding` for the
//! value, `key_encoding` for the key).
//!
//! | method | params | result |
//! |---|---|---|
//! | `dht_put` | `key, value, encoding?, key_encoding?, ttl?, quorum?, seq?, route?` | `{key, seq, path, receipts}` |
//! | `dht_get` | `key, encoding?, key_encoding?, route?, prove?` | `{key, value, encoding, publisher, seq, created_at, expires_at, lockstep, copies, path, rpcs, receipts}` |
//! | `dht_verifyReceipt` | `receipt, key?, value?, seq?, encoding?, key_encoding?` | `{replica, key, key_encoding, seq, value_hash, time}` |
//! | `dht_findNode` | `peer, route?` | `{target, peers, path, rpcs}` |
//! | `lockstep_announce` | `key, value, encoding?, key_encoding?, seq?` | `{key, seq, value_hash, accepted, refused}` |
//! | `lockstep_get` | `key, key_encoding?` | `{key, notices: [{publisher, seq, value_hash, created_at}]}` |
//! | `lockstep_subscribe` | `key?, prefix?, publisher?, key_encoding?, after?` | subscription; notifications `lockstep_notice` `{key, key_encoding, publisher, seq, value_hash, created_at, feed, feed_seq}` |
//! | `swim_members` | none | `[{peer, state, incarnation, addrs, verified, changed_at}]` |
//! | `swim_subscribe` | none | subscription; notifications `swim_change` `{peer, state, incarnation, at}` |
//! | `dht_routingTable` | none | `{k, size, buckets: [{distance, peers}]}` |
//! | `dht_records` | `prefix?, key_encoding?, after?, limit?` | `{total, records: [{key, key_encoding, publisher, seq, size, created_at, expires_at}], next}` |
//! | `node_stats` | none | `{interval_secs, samples: [{t, rpc, probes, failed_probes, refutations, puts_stored, puts_refused, bytes_in, bytes_out}]}` |
//! | `node_subscribeStats` | none | subscription; notifications `node_stats`, one sample each interval |
//! | `node_peers` | `detail?, limit?` | `[peer id]` (the routing table); with `detail`, the connected peers: `[{peer, routed, standing, traffic}]` |
//! | `trust_peers` | none | `[{peer, standing, banned}]` |
//! | `node_info` | none | `{peer_id, network, version, ...}` |
//! | `rpc.discover` | none | the OpenRPC document |

use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jsonrpsee::core::SubscriptionResult;
use jsonrpsee::server::{PendingSubscriptionSink, RegisterMethodError, RpcModule};
use jsonrpsee::types::{ErrorObjectOwned, Params};
use libp2p::PeerId;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use shoal_dht::PublicKeyExt;
use shoal_dht::lockstep::{Announced, FeedPos, SignedNotice};
use shoal_dht::node::{PutRequest, Route};
use shoal_dht::receipt::{Receipt, ReceiptError};
use tokio::sync::broadcast::error::RecvError;

use crate::metrics::Metrics;
use crate::rpc::Context;
use crate::rpc::encoding::Encoding;
use crate::rpc::error::{Code, RpcError};
use crate::rpc::history::{self, History, MemberTimes};
use crate::rpc::openrpc;

/// What every method shares.
#[derive(Debug)]
pub struct State {
    node: shoal_dht::Client,
    context: Context,
    metrics: Arc<Metrics>,
    call_timeout: Duration,
    started: Instant,
    history: Arc<History>,
    member_times: Arc<MemberTimes>,
}

impl State {
    /// The state of a server for `node`.
    pub fn new(
        node: shoal_dht::Client,
        context: Context,
        metrics: Arc<Metrics>,
        call_timeout: Duration,
    ) -> Self {
        Self {
            node,
            context,
            metrics,
            call_timeout,
            started: Instant::now(),
            history: Arc::new(History::new()),
            member_times: Arc::new(MemberTimes::default()),
        }
    }

    /// Starts what keeps the history and the members' change times; the server aborts them
    /// when it stops.
    pub fn spawn_watchers(&self) -> Vec<tokio::task::JoinHandle<()>> {
        vec![
            self.history.clone().spawn_sampler(self.node.clone()),
            self.member_times.clone().spawn_watcher(&self.node),
        ]
    }
}

/// Parses by-name params into `T`; absent params count as `{}`.
fn parse<T: DeserializeOwned>(params: &Params<'_>) -> Result<T, RpcError> {
    let value: Value = match params.as_str() {
        None => json!({}),
        Some(raw) => serde_json::from_str(raw)
            .map_err(|e| RpcError::new(Code::InvalidParams, e.to_string(), json!({})))?,
    };
    let value = match value {
        Value::Null => json!({}),
        Value::Array(a) if a.is_empty() => json!({}),
        Value::Object(o) => Value::Object(o),
        _ => {
            return Err(RpcError::new(
                Code::InvalidParams,
                "params must be an object of named parameters",
                json!({}),
            ));
        }
    };
    serde_json::from_value(value).map_err(|e| {
        RpcError::new(
            Code::InvalidParams,
            format!("invalid params: {e}"),
            json!({ "detail": e.to_string() }),
        )
    })
}

fn decode(param: &str, text: &str, encoding: Encoding) -> Result<Vec<u8>, RpcError> {
    encoding
        .decode(text)
        .map_err(|e| RpcError::invalid_param(param, e))
}

fn peer_id(param: &str, text: &str) -> Result<PeerId, RpcError> {
    text.parse()
        .map_err(|e| RpcError::invalid_param(param, format!("not a peer id: {e}")))
}

/// Params of `dht_put`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PutParams {
    key: String,
    value: String,
    #[serde(default)]
    encoding: Encoding,
    #[serde(default)]
    key_encoding: Encoding,
    ttl: Option<u64>,
    quorum: Option<NonZeroUsize>,
    seq: Option<u64>,
    #[serde(default)]
    route: RouteParam,
}

/// How an operation finds its peers: `"auto"` (one hop when the node's view is settled) or
/// `"iterative"`.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
enum RouteParam {
    #[default]
    Auto,
    Iterative,
}

impl From<RouteParam> for Route {
    fn from(r: RouteParam) -> Self {
        match r {
            RouteParam::Auto => Route::Auto,
            RouteParam::Iterative => Route::Iterative,
        }
    }
}

/// Params of `dht_get`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GetParams {
    key: String,
    #[serde(default)]
    encoding: Encoding,
    #[serde(default)]
    key_encoding: Encoding,
    #[serde(default)]
    route: RouteParam,
    #[serde(default)]
    prove: bool,
}

/// Params of `dht_verifyReceipt`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReceiptParams {
    receipt: String,
    key: Option<String>,
    value: Option<String>,
    seq: Option<u64>,
    #[serde(default)]
    encoding: Encoding,
    #[serde(default)]
    key_encoding: Encoding,
}

impl ReceiptParams {
    /// The receipt, checked against what the params name.
    fn check(&self) -> Result<Receipt, RpcError> {
        if self.receipt.len() > 2 * shoal_dht::receipt::MAX_RECEIPT_LEN {
            return Err(RpcError::invalid_param(
                "receipt",
                "longer than any receipt",
            ));
        }
        let bytes = hex::decode(&self.receipt)
            .map_err(|e| RpcError::invalid_param("receipt", format!("not hex: {e}")))?;
        let refused = |e: ReceiptError| RpcError::invalid_param("receipt", format!("refused: {e}"));
        let receipt = Receipt::decode(&bytes).map_err(refused)?;
        let key = match &self.key {
            Some(text) => decode("key", text, self.key_encoding)?,
            None => receipt.key().to_vec(),
        };
        let hash = match &self.value {
            Some(text) => {
                if self.key.is_none() {
                    return Err(RpcError::invalid_param("value", "given without its key"));
                }
                let value = decode("value", text, self.encoding)?;
                shoal_dht::lockstep::value_hash(&key, &value)
            }
            None => *receipt.value_hash(),
        };
        let seq = self.seq.unwrap_or(receipt.seq());
        receipt.check_parts(&key, seq, &hash).map_err(refused)?;
        Ok(receipt)
    }
}

/// Params of `dht_findNode`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FindNodeParams {
    peer: String,
    #[serde(default)]
    route: RouteParam,
}

/// Params of `lockstep_announce`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AnnounceParams {
    key: String,
    value: String,
    #[serde(default)]
    encoding: Encoding,
    #[serde(default)]
    key_encoding: Encoding,
    seq: Option<u64>,
}

/// Params of `lockstep_get`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyParams {
    key: Option<String>,
    #[serde(default)]
    key_encoding: Encoding,
}

/// Params of `lockstep_subscribe`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SubscribeParams {
    key: Option<String>,
    prefix: Option<String>,
    publisher: Option<String>,
    #[serde(default)]
    key_encoding: Encoding,
    /// The last position seen of each feed (`"<publisher>:<epoch>"` as notifications name
    /// it): the notices after it that this node still holds come first.
    after: Option<std::collections::BTreeMap<String, u64>>,
}

/// Feeds a subscription may name in `after`, at most.
pub const MAX_RESUME_FEEDS: usize = 1024;

/// A feed's name in notifications and in `after`: its publisher's peer id and its epoch.
fn feed_name(notice: &SignedNotice) -> Option<(String, u64)> {
    let n = notice.notice();
    let feed = n.feed?;
    Some((
        format!("{}:{}", n.publisher.peer_id(), feed.epoch),
        feed.seq,
    ))
}

/// The feed id a name of [`feed_name`]'s form stands for.
fn parse_feed(text: &str) -> Result<Vec<u8>, RpcError> {
    let bad = |why: String| RpcError::invalid_param("after", format!("feed {text:?}: {why}"));
    let (peer, epoch) = text
        .rsplit_once(':')
        .ok_or_else(|| bad("not <publisher>:<epoch>".into()))?;
    let peer: PeerId = peer
        .parse()
        .map_err(|e| bad(format!("not a peer id: {e}")))?;
    let key = shoal_pow::PublicKey::from_peer_id(&peer)
        .map_err(|e| bad(format!("not an ed25519 peer id: {e}")))?;
    let epoch: u64 = epoch
        .parse()
        .map_err(|e| bad(format!("epoch is not a number: {e}")))?;
    Ok(FeedPos::feed_id(&key, epoch))
}

/// Which notices a `lockstep_subscribe` subscription receives: those that meet every condition
/// given (none given: every notice).
#[derive(Debug, Clone, PartialEq, Eq)]
struct NoticeFilter {
    key: Option<Vec<u8>>,
    prefix: Option<Vec<u8>>,
    publisher: Option<PeerId>,
    /// How the notifications spell keys.
    key_encoding: Encoding,
    /// Feeds to resume after a position: feed id, the last position seen.
    after: Vec<(Vec<u8>, u64)>,
}

impl NoticeFilter {
    /// The filter of a `lockstep_subscribe` call, or why its params are invalid; the same check
    /// serves the early validation of a call and the subscription itself.
    fn parse(params: &Params) -> Result<Self, RpcError> {
        let p: SubscribeParams = parse(params)?;
        let bytes = |name: &str, text: Option<String>| {
            text.map(|t| decode(name, &t, p.key_encoding)).transpose()
        };
        let after = p.after.unwrap_or_default();
        if after.len() > MAX_RESUME_FEEDS {
            return Err(RpcError::invalid_param(
                "after",
                format!("names {} feeds, at most {MAX_RESUME_FEEDS}", after.len()),
            ));
        }
        Ok(Self {
            key: bytes("key", p.key)?,
            prefix: bytes("prefix", p.prefix)?,
            publisher: p.publisher.map(|t| peer_id("publisher", &t)).transpose()?,
            key_encoding: p.key_encoding,
            after: after
                .into_iter()
                .map(|(name, seq)| Ok((parse_feed(&name)?, seq)))
                .collect::<Result<_, RpcError>>()?,
        })
    }

    fn matches(&self, notice: &SignedNotice) -> bool {
        let n = notice.notice();
        self.key.as_ref().is_none_or(|k| *k == n.key)
            && self.prefix.as_ref().is_none_or(|p| n.key.starts_with(p))
            && self
                .publisher
                .as_ref()
                .is_none_or(|p| *p == n.publisher.peer_id())
    }
}

/// Params of the methods that take none.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NoParams {}

fn receipt_json(receipt: &Receipt) -> Value {
    json!({
        "replica": receipt.replica().peer_id().to_string(),
        "seq": receipt.seq(),
        "value_hash": hex::encode(receipt.value_hash()),
        "time": receipt.time(),
        "receipt": hex::encode(receipt.as_bytes()),
    })
}

fn notice_json(notice: &SignedNotice, key_encoding: Encoding) -> Value {
    let n = notice.notice();
    let (key, key_encoding) = key_encoding.encode(&n.key);
    let mut json = json!({
        "key": key,
        "key_encoding": key_encoding,
        "publisher": n.publisher.peer_id().to_string(),
        "seq": n.seq,
        "value_hash": hex::encode(n.value_hash),
        "created_at": n.created_at,
    });
    if let Some((feed, feed_seq)) = feed_name(notice) {
        json["feed"] = feed.into();
        json["feed_seq"] = feed_seq.into();
    }
    json
}

async fn put(state: &State, params: Params<'_>) -> Result<Value, RpcError> {
    let p: PutParams = parse(&params)?;
    let key = decode("key", &p.key, p.key_encoding)?;
    let value = decode("value", &p.value, p.encoding)?;
    let ttl = match p.ttl {
        Some(0) => return Err(RpcError::invalid_param("ttl", "must be at least 1 second")),
        Some(secs) => Duration::from_secs(secs),
        None => state.context.default_ttl,
    };
    let ok = state
        .node
        .put_request(PutRequest {
            key,
            value,
            ttl,
            quorum: p.quorum,
            seq: p.seq,
            route: p.route.into(),
        })
        .await?;
    let receipts: Vec<Value> = ok.receipts.iter().map(receipt_json).collect();
    Ok(json!({
        "key": p.key,
        "seq": ok.seq,
        "path": ok.path.as_str(),
        "receipts": receipts,
    }))
}

async fn get(state: &State, params: Params<'_>) -> Result<Value, RpcError> {
    let p: GetParams = parse(&params)?;
    let key = decode("key", &p.key, p.key_encoding)?;
    let found = state.node.get_with(key, p.route.into(), p.prove).await?;
    let r = &found.record;
    let (value, encoding) = p.encoding.encode(&r.value);
    Ok(json!({
        "key": p.key,
        "value": value,
        "encoding": encoding,
        "publisher": r.publisher.peer_id().to_string(),
        "seq": r.seq,
        "created_at": r.created_at,
        "expires_at": r.expires_at(),
        "lockstep": found.announced == Announced::Yes,
        "copies": { "valid": found.valid, "invalid": found.invalid },
        "path": found.path.as_str(),
        "rpcs": found.requests,
        "receipts": found.receipts.iter().map(receipt_json).collect::<Vec<_>>(),
    }))
}

async fn verify_receipt(_: &State, params: Params<'_>) -> Result<Value, RpcError> {
    let p: ReceiptParams = parse(&params)?;
    let receipt = p.check()?;
    let (key, key_encoding) = p.key_encoding.encode(receipt.key());
    Ok(json!({
        "replica": receipt.replica().peer_id().to_string(),
        "key": key,
        "key_encoding": key_encoding,
        "seq": receipt.seq(),
        "value_hash": hex::encode(receipt.value_hash()),
        "time": receipt.time(),
    }))
}

async fn trust_peers(state: &State, params: Params<'_>) -> Result<Value, RpcError> {
    let _: NoParams = parse(&params)?;
    let peers: Vec<Value> = state
        .node
        .standings()
        .await
        .into_iter()
        .map(|(peer, standing, banned)| {
            json!({ "peer": peer.to_string(), "standing": standing, "banned": banned })
        })
        .collect();
    Ok(Value::Array(peers))
}

async fn find_node(state: &State, params: Params<'_>) -> Result<Value, RpcError> {
    let p: FindNodeParams = parse(&params)?;
    let target = peer_id("peer", &p.peer)?;
    let found = state
        .node
        .find_node_with_stats(target, p.route.into())
        .await?;
    let peers: Vec<String> = found.peers.iter().map(ToString::to_string).collect();
    Ok(json!({
        "target": p.peer,
        "peers": peers,
        "path": found.path.as_str(),
        "rpcs": found.stats.requests,
    }))
}

async fn announce(state: &State, params: Params<'_>) -> Result<Value, RpcError> {
    let p: AnnounceParams = parse(&params)?;
    let key = decode("key", &p.key, p.key_encoding)?;
    let value = decode("value", &p.value, p.encoding)?;
    let hash = shoal_dht::lockstep::value_hash(&key, &value);
    let ok = state.node.announce(key, value, p.seq).await?;
    Ok(json!({
        "key": p.key,
        "seq": ok.seq,
        "value_hash": hex::encode(hash),
        "accepted": ok.accepted,
        "refused": ok.refused,
    }))
}

async fn lockstep_get(state: &State, params: Params<'_>) -> Result<Value, RpcError> {
    let p: KeyParams = parse(&params)?;
    let Some(text) = p.key else {
        return Err(RpcError::invalid_param("key", "missing"));
    };
    let key = decode("key", &text, p.key_encoding)?;
    let notices = state
        .node
        .notices(key)
        .await
        .map_err(|_| RpcError::unavailable())?;
    let notices: Vec<Value> = notices
        .iter()
        .map(|n| notice_json(n, p.key_encoding))
        .collect();
    Ok(json!({ "key": text, "notices": notices }))
}

/// A SWIM state as the methods name it.
fn state_name(state: shoal_swim::State) -> &'static str {
    match state {
        shoal_swim::State::Alive => "alive",
        shoal_swim::State::Suspect => "suspect",
        shoal_swim::State::Dead => "dead",
        shoal_swim::State::Left => "left",
    }
}

async fn members(state: &State, params: Params<'_>) -> Result<Value, RpcError> {
    let _: NoParams = parse(&params)?;
    let members: Vec<Value> = state
        .node
        .member_list()
        .await
        .iter()
        .map(|m| {
            let addrs: Vec<String> = m.addrs.iter().map(ToString::to_string).collect();
            json!({
                "peer": m.peer.to_string(),
                "state": state_name(m.state),
                "incarnation": m.incarnation,
                "addrs": addrs,
                "verified": m.verified,
                "changed_at": state.member_times.get(&m.peer),
            })
        })
        .collect();
    Ok(Value::Array(members))
}

async fn routing_table(state: &State, params: Params<'_>) -> Result<Value, RpcError> {
    let _: NoParams = parse(&params)?;
    let (k, buckets) = state
        .node
        .routing_table()
        .await
        .ok_or_else(RpcError::unavailable)?;
    let size: usize = buckets.iter().map(|b| b.peers.len()).sum();
    let buckets: Vec<Value> = buckets
        .iter()
        .map(|b| {
            let peers: Vec<String> = b.peers.iter().map(ToString::to_string).collect();
            json!({ "distance": b.index, "peers": peers })
        })
        .collect();
    Ok(json!({ "k": k, "size": size, "buckets": buckets }))
}

/// Records a `dht_records` page holds at most, and by default.
pub const MAX_RECORDS_PAGE: usize = 100;
const DEFAULT_RECORDS_PAGE: usize = 50;

/// Params of `dht_records`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RecordsParams {
    prefix: Option<String>,
    #[serde(default)]
    key_encoding: Encoding,
    /// The `next` of the page before: the hex of its last key.
    after: Option<String>,
    limit: Option<usize>,
}

/// A `dht_records` query, decoded.
struct RecordsQuery {
    prefix: Vec<u8>,
    after: Option<Vec<u8>>,
    limit: usize,
}

impl RecordsParams {
    fn check(&self) -> Result<RecordsQuery, RpcError> {
        let prefix = match &self.prefix {
            Some(text) => decode("prefix", text, self.key_encoding)?,
            None => Vec::new(),
        };
        let after = match &self.after {
            Some(cursor) => Some(hex::decode(cursor).map_err(|_| {
                RpcError::invalid_param("after", "not a cursor that dht_records returned")
            })?),
            None => None,
        };
        let limit = match self.limit {
            None => DEFAULT_RECORDS_PAGE,
            Some(n) if (1..=MAX_RECORDS_PAGE).contains(&n) => n,
            Some(n) => {
                return Err(RpcError::invalid_param(
                    "limit",
                    format!("{n} is not within 1..={MAX_RECORDS_PAGE}"),
                ));
            }
        };
        Ok(RecordsQuery {
            prefix,
            after,
            limit,
        })
    }
}

async fn records(state: &State, params: Params<'_>) -> Result<Value, RpcError> {
    let p: RecordsParams = parse(&params)?;
    let q = p.check()?;
    let page = state.node.records(q.prefix, q.after, q.limit).await;
    let next = page
        .more
        .then(|| page.records.last().map(|r| hex::encode(&r.key)))
        .flatten();
    let records: Vec<Value> = page
        .records
        .iter()
        .map(|r| {
            let (key, key_encoding) = p.key_encoding.encode(&r.key);
            json!({
                "key": key,
                "key_encoding": key_encoding,
                "publisher": r.publisher.to_string(),
                "seq": r.seq,
                "size": r.size,
                "created_at": r.created_at,
                "expires_at": r.expires_at,
            })
        })
        .collect();
    Ok(json!({ "total": page.total, "records": records, "next": next }))
}

async fn stats_history(state: &State, params: Params<'_>) -> Result<Value, RpcError> {
    let _: NoParams = parse(&params)?;
    Ok(json!({
        "interval_secs": history::INTERVAL.as_secs(),
        "samples": state.history.samples(),
    }))
}

/// Params of `node_peers`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PeersParams {
    #[serde(default)]
    detail: bool,
    /// With `detail`: only the busiest this many (by bytes both ways).
    limit: Option<usize>,
}

impl PeersParams {
    fn check(&self) -> Result<(), RpcError> {
        match self.limit {
            Some(_) if !self.detail => {
                Err(RpcError::invalid_param("limit", "only with detail: true"))
            }
            Some(0) => Err(RpcError::invalid_param("limit", "must be at least 1")),
            _ => Ok(()),
        }
    }
}

fn traffic_json(t: &shoal_dht::link::Traffic) -> Value {
    json!({ "in": t.bytes_in, "out": t.bytes_out })
}

async fn peers(state: &State, params: Params<'_>) -> Result<Value, RpcError> {
    let p: PeersParams = parse(&params)?;
    p.check()?;
    if p.detail {
        let mut connected = state.node.connected_peers().await;
        if let Some(limit) = p.limit {
            connected.sort_by_key(|info| {
                let t = info.traffic.total();
                std::cmp::Reverse(t.bytes_in + t.bytes_out)
            });
            connected.truncate(limit);
        }
        let peers: Vec<Value> = connected
            .iter()
            .map(|info| {
                let t = &info.traffic;
                json!({
                    "peer": info.peer.to_string(),
                    "routed": info.routed,
                    "direct": info.direct,
                    "hole_punch_failures": info.hole_punch_failures,
                    "standing": info.standing,
                    "traffic": {
                        "dht": traffic_json(&t.dht),
                        "swim": traffic_json(&t.swim),
                        "broadcast": traffic_json(&t.broadcast),
                    },
                })
            })
            .collect();
        return Ok(Value::Array(peers));
    }
    let peers: Vec<String> = state
        .node
        .peers()
        .await
        .iter()
        .map(ToString::to_string)
        .collect();
    Ok(json!(peers))
}

async fn info(state: &State, params: Params<'_>) -> Result<Value, RpcError> {
    let _: NoParams = parse(&params)?;
    let stats = state.node.stats().await.ok_or_else(RpcError::unavailable)?;
    let addrs = |a: &[libp2p::Multiaddr]| a.iter().map(ToString::to_string).collect::<Vec<_>>();
    let reachability = reachability(
        state.context.onion.as_deref(),
        &stats.listen_addrs,
        &stats.external_addrs,
        &stats.nat,
    );
    let nat = &stats.nat;
    Ok(json!({
        "peer_id": state.node.peer_id().to_string(),
        "network": state.context.network,
        "transport": state.context.transport,
        "onion_address": state.context.onion,
        "reachability": reachability,
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_secs": state.started.elapsed().as_secs(),
        "data_dir": state.context.data_dir,
        "listen_addrs": addrs(&stats.listen_addrs),
        "external_addrs": addrs(&stats.external_addrs),
        "nat": {
            "mode": if nat.enabled { "auto" } else { "off" },
            "reachability": nat.reachability.as_str(),
            "relays": nat.relays.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "probes_confirmed": nat.probes_confirmed,
            "probes_failed": nat.probes_failed,
            "reservations_asked": nat.reservations_asked,
            "reservations_accepted": nat.reservations_accepted,
            "reservations_lost": nat.reservations_lost,
            "holes_punched": nat.holes_punched,
            "hole_punch_failures": nat.hole_punch_failures,
            "hole_punch_retries": nat.hole_punch_retries,
            "upnp_mapped": nat.upnp_mapped.as_ref().map(ToString::to_string),
        },
        "members": {
            "alive": stats.members.alive,
            "suspect": stats.members.suspect,
            "dead": stats.members.dead,
            "left": stats.members.left,
        },
        "routing_peers": stats.routing_peers,
        "connections": stats.connections,
        "dials": stats.dials,
        "redials": stats.redials,
        "reconnects": stats.reconnects,
        "routing": {
            "view_settled": stats.view_settled,
            "one_hop": stats.one_hop,
            "iterative": stats.iterative,
        },
        "records": stats.records,
        "notices": stats.notices,
        "identity_checks": {
            "pending": stats.checks_pending,
            "verified": stats.verified,
            "listed_before_check": stats.listed_unchecked,
            "proofs_with_news": stats.proofs_with_news,
            "proof_requests": stats.relay_requests,
            "scrypt_evaluations": stats.verifier.scrypt_evaluations,
            "checks_run": stats.checks_run,
            "checks_needed": stats.checks_needed,
            "scrypt_secs": stats.verifier.scrypt_micros as f64 / 1e6,
            "relayers_distrusted": stats.relayers_distrusted,
        },
        "join": state.context.join.get(),
    }))
}

/// How peers can reach this node, in a phrase for people: what its addresses say (the node does
/// not probe its own reachability yet).
fn reachability(
    onion: Option<&str>,
    listen: &[libp2p::Multiaddr],
    external: &[libp2p::Multiaddr],
    nat: &shoal_dht::node::NatReport,
) -> String {
    use libp2p::multiaddr::Protocol;
    use shoal_dht::nat::{Reachability, is_circuit};
    let loopback = |a: &libp2p::Multiaddr| {
        a.iter().any(|p| match p {
            Protocol::Ip4(ip) => ip.is_loopback(),
            Protocol::Ip6(ip) => ip.is_loopback(),
            _ => false,
        })
    };
    let tcp: Vec<_> = listen
        .iter()
        .filter(|a| !a.iter().any(|p| matches!(p, Protocol::Onion3(_))))
        .collect();
    let relayed = external.iter().filter(|a| is_circuit(a)).count();
    let direct = external.len() - relayed;
    let by_tcp = if direct > 0 {
        Some(format!("at {direct} external address(es)"))
    } else if relayed > 0 {
        Some(format!("behind a NAT, through {relayed} relay address(es)"))
    } else if nat.reachability == Reachability::Private {
        Some("behind a NAT, no relay reserved yet".to_owned())
    } else if tcp.is_empty() {
        None
    } else if tcp.iter().all(|a| loopback(a)) {
        Some("on loopback only".to_owned())
    } else {
        Some("at its listen addresses (not confirmed from outside)".to_owned())
    };
    match (onion, by_tcp) {
        (Some(_), Some(tcp)) => format!("through its onion service, and {tcp}"),
        (Some(_), None) => "through its onion service only".to_owned(),
        (None, Some(tcp)) => tcp,
        (None, None) => "not listening".to_owned(),
    }
}

/// Parses and decodes the params of `method` exactly as the method does (its params struct, the
/// key and value in their encodings, the TTL, peer ids) without touching the network, for fuzzing
/// and validation. `params` is the raw JSON, `None` when the call has none.
///
/// Covers every method whose params Shoal decodes; `lockstep_unsubscribe`'s subscription id is
/// jsonrpsee's. Any other method is refused with [`Code::InvalidParams`].
pub fn check_params(method: &str, params: Option<&str>) -> Result<(), RpcError> {
    let params = Params::new(params);
    match method {
        "dht_put" => {
            let p: PutParams = parse(&params)?;
            decode("key", &p.key, p.key_encoding)?;
            decode("value", &p.value, p.encoding)?;
            if p.ttl == Some(0) {
                return Err(RpcError::invalid_param("ttl", "must be at least 1 second"));
            }
        }
        "dht_get" => {
            let p: GetParams = parse(&params)?;
            decode("key", &p.key, p.key_encoding)?;
        }
        "dht_verifyReceipt" => {
            let p: ReceiptParams = parse(&params)?;
            p.check()?;
        }
        "dht_findNode" => {
            let p: FindNodeParams = parse(&params)?;
            peer_id("peer", &p.peer)?;
        }
        "lockstep_announce" => {
            let p: AnnounceParams = parse(&params)?;
            decode("key", &p.key, p.key_encoding)?;
            decode("value", &p.value, p.encoding)?;
        }
        "lockstep_get" => {
            let p: KeyParams = parse(&params)?;
            let Some(text) = p.key else {
                return Err(RpcError::invalid_param("key", "missing"));
            };
            decode("key", &text, p.key_encoding)?;
        }
        "lockstep_subscribe" => {
            NoticeFilter::parse(&params)?;
        }
        "node_peers" => {
            let p: PeersParams = parse(&params)?;
            p.check()?;
        }
        "dht_records" => {
            let p: RecordsParams = parse(&params)?;
            p.check()?;
        }
        "swim_members"
        | "swim_subscribe"
        | "trust_peers"
        | "node_info"
        | "node_stats"
        | "node_subscribeStats"
        | "dht_routingTable"
        | "rpc.discover" => {
            let _: NoParams = parse(&params)?;
        }
        _ => {
            return Err(RpcError::new(
                Code::InvalidParams,
                format!("unknown method {method}"),
                json!({ "method": method }),
            ));
        }
    }
    Ok(())
}

/// Runs one call: bounds it in time, maps its error and records it in the metrics.
async fn call<F, Fut>(
    state: Arc<State>,
    method: &'static str,
    f: F,
) -> Result<Value, ErrorObjectOwned>
where
    F: FnOnce(Arc<State>) -> Fut,
    Fut: Future<Output = Result<Value, RpcError>>,
{
    let start = Instant::now();
    let timeout = state.call_timeout;
    let result = match tokio::time::timeout(timeout, f(state.clone())).await {
        Ok(r) => r,
        Err(_) => Err(RpcError::new(
            Code::Timeout,
            format!("no answer within {} s", timeout.as_secs()),
            json!({ "timeout_secs": timeout.as_secs() }),
        )),
    };
    let outcome = match &result {
        Ok(_) => "ok",
        Err(e) => e.code.name(),
    };
    let elapsed = start.elapsed();
    state.metrics.observe(method, outcome, elapsed);
    state.history.observe(method, result.is_ok(), elapsed);
    result.map_err(Into::into)
}

/// Registers one async method that maps its `RpcError` into a JSON-RPC error.
macro_rules! method {
    ($module:expr, $name:literal, $f:path) => {
        $module.register_async_method($name, |params, state, _| async move {
            call(state, $name, |s| async move { $f(&s, params).await }).await
        })?;
    };
}

/// Every method with the server's state; `rpc.discover` lists exactly these.
pub fn module(state: State) -> Result<RpcModule<State>, RegisterMethodError> {
    let mut module = RpcModule::new(state);
    method!(module, "dht_put", put);
    method!(module, "dht_get", get);
    method!(module, "dht_verifyReceipt", verify_receipt);
    method!(module, "dht_findNode", find_node);
    method!(module, "lockstep_announce", announce);
    method!(module, "lockstep_get", lockstep_get);
    method!(module, "swim_members", members);
    method!(module, "node_peers", peers);
    method!(module, "trust_peers", trust_peers);
    method!(module, "node_info", info);
    method!(module, "dht_routingTable", routing_table);
    method!(module, "dht_records", records);
    method!(module, "node_stats", stats_history);
    module.register_subscription(
        "swim_subscribe",
        "swim_change",
        "swim_unsubscribe",
        follow_members,
    )?;
    module.register_subscription(
        "node_subscribeStats",
        "node_stats",
        "node_unsubscribeStats",
        follow_stats,
    )?;
    module.register_subscription(
        "lockstep_subscribe",
        "lockstep_notice",
        "lockstep_unsubscribe",
        subscribe,
    )?;
    let document = openrpc::document();
    module.register_method("rpc.discover", move |params, _, _| {
        let _: NoParams = parse(&params).map_err(ErrorObjectOwned::from)?;
        Ok::<Value, ErrorObjectOwned>(document.clone())
    })?;
    Ok(module)
}

/// `lockstep_subscribe`: every notice announced anywhere in the network that meets the filter
/// (a key, a key prefix, a publisher, any combination), once, in feed order per publisher. With
/// `after`, the notices of the feeds named after the positions given come first (those this
/// node still holds), then the live ones, none twice.
async fn subscribe(
    params: Params<'static>,
    pending: PendingSubscriptionSink,
    state: Arc<State>,
    _: jsonrpsee::Extensions,
) -> SubscriptionResult {
    let filter = match NoticeFilter::parse(&params) {
        Ok(f) => f,
        Err(e) => {
            pending.reject(ErrorObjectOwned::from(e)).await;
            return Ok(());
        }
    };
    // Live notices are taken from here on, before the backlog is read, so none falls between.
    let notices = state.node.subscribe();
    let sink = pending.accept().await?;
    let send = |notice: &SignedNotice| {
        serde_json::value::to_raw_value(&notice_json(notice, filter.key_encoding))
    };
    // The last position sent of each feed resumed: live notices at or below it were sent
    // from the backlog already.
    let mut sent: std::collections::HashMap<Vec<u8>, u64> = filter.after.iter().cloned().collect();
    let mut is_new = |notice: &SignedNotice| {
        if sent.is_empty() {
            return true;
        }
        match notice
            .feed_id()
            .and_then(|(id, seq)| Some((sent.get_mut(&id)?, seq)))
        {
            Some((last, seq)) if seq <= *last => false,
            Some((last, seq)) => {
                *last = seq;
                true
            }
            None => true,
        }
    };
    if !filter.after.is_empty() {
        for notice in state.node.feed_after(filter.after.clone()).await {
            if is_new(&notice) && filter.matches(&notice) {
                sink.send(send(&notice)?).await?;
            }
        }
    }
    pump(&sink, notices, |notice| {
        (is_new(notice) && filter.matches(notice)).then(|| notice_json(notice, filter.key_encoding))
    })
    .await
}

/// Sends what `source` yields, as `to_json` makes it (`None`: not for this subscriber), to an
/// accepted subscription until the client leaves or the source ends. A subscriber that fell
/// behind is told how many items it missed (`{"lagged": n}`) and should read the whole state
/// again.
async fn pump<T: Clone>(
    sink: &jsonrpsee::SubscriptionSink,
    mut source: tokio::sync::broadcast::Receiver<T>,
    mut to_json: impl FnMut(&T) -> Option<Value>,
) -> SubscriptionResult {
    loop {
        let message = tokio::select! {
            _ = sink.closed() => return Ok(()),
            received = source.recv() => match received {
                Ok(item) => match to_json(&item) {
                    Some(message) => message,
                    None => continue,
                },
                Err(RecvError::Lagged(missed)) => json!({ "lagged": missed }),
                Err(RecvError::Closed) => return Ok(()),
            },
        };
        sink.send(serde_json::value::to_raw_value(&message)?)
            .await?;
    }
}

/// A subscription that takes no params (anything else is refused before it starts), each item
/// of `source` sent as `to_json` makes it.
async fn forward<T: Clone>(
    params: Params<'static>,
    pending: PendingSubscriptionSink,
    source: tokio::sync::broadcast::Receiver<T>,
    to_json: impl Fn(&T) -> Value,
) -> SubscriptionResult {
    if let Err(e) = parse::<NoParams>(&params) {
        pending.reject(ErrorObjectOwned::from(e)).await;
        return Ok(());
    }
    let sink = pending.accept().await?;
    pump(&sink, source, |item| Some(to_json(item))).await
}

/// `swim_subscribe`: every change SWIM makes to a member from now on.
async fn follow_members(
    params: Params<'static>,
    pending: PendingSubscriptionSink,
    state: Arc<State>,
    _: jsonrpsee::Extensions,
) -> SubscriptionResult {
    forward(params, pending, state.node.member_changes(), |c| {
        json!({
            "peer": c.peer.to_string(),
            "state": state_name(c.state),
            "incarnation": c.incarnation,
            "at": c.at,
        })
    })
    .await
}

/// `node_subscribeStats`: each new sample of the node's activity.
async fn follow_stats(
    params: Params<'static>,
    pending: PendingSubscriptionSink,
    state: Arc<State>,
    _: jsonrpsee::Extensions,
) -> SubscriptionResult {
    forward(params, pending, state.history.follow(), |sample| {
        json!(sample)
    })
    .await
}

#[cfg(test)]
mod tests {
    use shoal_dht::NodeKeyExt;

    use super::*;

    fn params(json: &'static str) -> Params<'static> {
        Params::new(Some(json))
    }

    #[test]
    fn put_params_parse_by_name() {
        let p: PutParams = parse(&params(
            r#"{"key":"a","value":"00ff","encoding":"hex","ttl":60}"#,
        ))
        .expect("valid params");
        assert_eq!(p.encoding, Encoding::Hex);
        assert_eq!(p.ttl, Some(60));
        assert_eq!(p.key_encoding, Encoding::Utf8);
    }

    #[test]
    fn bad_params_get_invalid_params() {
        for bad in [
            r#"{"key":5,"value":"v"}"#,
            r#"{"value":"v"}"#,
            r#"{"key":"k","value":"v","colour":"red"}"#,
            r#"{"key":"k","value":"v","encoding":"rot13"}"#,
            r#"{"key":"k","value":"v","quorum":0}"#,
            r#"["k","v"]"#,
            r#""k""#,
        ] {
            let e = parse::<PutParams>(&params(bad)).expect_err(bad);
            assert_eq!(e.code, Code::InvalidParams, "{bad}");
        }
    }

    /// The methods a real server registers.
    fn registered_methods() -> Vec<&'static str> {
        let key = shoal_pow::NodeKey::generate();
        let config = shoal_dht::Config::local();
        let puzzle =
            shoal_pow::Puzzle::new(config.puzzle.clone()).expect("the local preset is valid");
        let proof = shoal_pow::mint(
            &puzzle,
            &key.public(),
            &shoal_pow::MintOptions::default(),
            &shoal_pow::CancelToken::new(),
            |_| {},
        )
        .expect("minting at the local difficulty succeeds")
        .proof;
        let transport = shoal_dht::node::memory_transport(&key.to_libp2p());
        let (node, _event_loop) = shoal_dht::EventLoop::new(key, proof, config, transport)
            .expect("the local preset starts");
        let context = Context {
            network: "local".into(),
            transport: "tcp",
            onion: None,
            data_dir: None,
            default_ttl: Duration::from_secs(60),
            join: Arc::new(crate::join::JoinStatus::new(false)),
        };
        let state = State::new(
            node,
            context,
            Arc::new(Metrics::new()),
            Duration::from_secs(1),
        );
        let module = module(state).expect("methods register");
        module.method_names().collect()
    }

    #[tokio::test]
    async fn openrpc_documents_exactly_the_registered_methods() {
        let mut documented = openrpc::documented_methods();
        documented.push("rpc.discover");
        documented.sort_unstable();
        let mut registered = registered_methods();
        registered.sort_unstable();
        assert_eq!(documented, registered);
    }

    #[test]
    fn check_params_decodes_like_the_methods() {
        let peer = PeerId::random().to_string();
        let find_node = format!(r#"{{"peer":"{peer}"}}"#);
        let signer = shoal_pow::NodeKey::from_seed([5; 32]);
        let new = shoal_dht::record::NewRecord {
            key: b"k".to_vec(),
            value: b"v".to_vec(),
            seq: 4,
            ttl: 60,
        };
        let now = shoal_pow::unix_now();
        let policy = shoal_pow::StampPolicy::testnet();
        let record = shoal_dht::record::SignedRecord::create(&signer, new, now, &policy).unwrap();
        let receipt = hex::encode(Receipt::sign(&signer, record.record(), now).as_bytes());
        let verify = format!(r#"{{"receipt":"{receipt}","key":"k","value":"v","seq":4}}"#);
        let wrong_value = format!(r#"{{"receipt":"{receipt}","key":"k","value":"w"}}"#);
        let wrong_seq = format!(r#"{{"receipt":"{receipt}","seq":5}}"#);
        let value_alone = format!(r#"{{"receipt":"{receipt}","value":"v"}}"#);
        for (method, ok) in [
            ("dht_get", r#"{"key":"a","prove":true}"#),
            ("dht_verifyReceipt", verify.as_str()),
            ("trust_peers", "{}"),
            ("node_peers", r#"{"detail":true}"#),
            ("node_peers", r#"{"detail":true,"limit":100}"#),
            (
                "dht_put",
                r#"{"key":"a","value":"00ff","encoding":"hex","ttl":60}"#,
            ),
            ("dht_get", r#"{"key":"YQ==","key_encoding":"base64"}"#),
            ("dht_findNode", find_node.as_str()),
            ("lockstep_announce", r#"{"key":"k","value":"v","seq":3}"#),
            ("lockstep_get", r#"{"key":"k"}"#),
            ("lockstep_subscribe", "{}"),
            ("lockstep_subscribe", r#"{"prefix":"ab","key":"abc"}"#),
            ("node_info", "[]"),
            ("dht_records", "{}"),
            (
                "dht_records",
                r#"{"prefix":"ab","key_encoding":"hex","after":"abcd","limit":100}"#,
            ),
            ("dht_routingTable", "{}"),
            ("swim_subscribe", "{}"),
            ("node_stats", "{}"),
            ("node_subscribeStats", "{}"),
        ] {
            check_params(method, Some(ok)).unwrap_or_else(|e| panic!("{method} {ok}: {e:?}"));
        }
        check_params("swim_members", None).expect("no params");
        for (method, bad) in [
            ("dht_put", r#"{"key":"a","value":"0f0","encoding":"hex"}"#),
            ("dht_put", r#"{"key":"a","value":"v","ttl":0}"#),
            ("dht_get", r#"{"key":"***","key_encoding":"base64"}"#),
            ("dht_findNode", r#"{"peer":"not-a-peer"}"#),
            ("lockstep_get", "{}"),
            ("lockstep_subscribe", r#"{"key":"zz","key_encoding":"hex"}"#),
            (
                "lockstep_subscribe",
                r#"{"prefix":"zz","key_encoding":"hex"}"#,
            ),
            ("lockstep_subscribe", r#"{"publisher":"nobody"}"#),
            ("lockstep_subscribe", r#"{"topic":"a"}"#),
            ("node_peers", r#"{"x":1}"#),
            ("dht_verifyReceipt", r#"{"receipt":"zz"}"#),
            ("dht_verifyReceipt", r#"{"receipt":"00ff"}"#),
            ("dht_verifyReceipt", wrong_value.as_str()),
            ("dht_verifyReceipt", wrong_seq.as_str()),
            ("dht_verifyReceipt", value_alone.as_str()),
            ("dht_nope", "{}"),
            ("node_peers", r#"{"limit":10}"#),
            ("node_peers", r#"{"detail":true,"limit":0}"#),
            ("dht_records", r#"{"limit":0}"#),
            ("dht_records", r#"{"limit":101}"#),
            ("dht_records", r#"{"after":"not a cursor"}"#),
            ("dht_records", r#"{"prefix":"zz","key_encoding":"hex"}"#),
            ("dht_routingTable", r#"{"k":1}"#),
            ("swim_subscribe", r#"{"all":true}"#),
            ("node_stats", r#"{"since":1}"#),
        ] {
            let e = check_params(method, Some(bad)).expect_err(bad);
            assert_eq!(e.code, Code::InvalidParams, "{method} {bad}");
        }
    }

    #[test]
    fn notice_filters_take_every_condition_given() {
        let policy = shoal_pow::StampPolicy::testnet();
        let alice = shoal_pow::NodeKey::generate();
        let bob = shoal_pow::NodeKey::generate();
        let notice = |key: &shoal_pow::NodeKey, k: &str| {
            SignedNotice::create(key, k.as_bytes(), b"value", 1, 1_700_000_000, None, &policy)
                .expect("a notice")
        };
        let filter = |json: String| NoticeFilter::parse(&Params::new(Some(&json))).expect(&json);
        let alice_id = alice.peer_id().to_string();
        let all = filter("{}".into());
        let by_prefix = filter(r#"{"prefix":"app/"}"#.into());
        let by_key = filter(r#"{"key":"app/x"}"#.into());
        let by_alice = filter(format!(r#"{{"publisher":"{alice_id}"}}"#));
        let alice_prefix = filter(format!(r#"{{"publisher":"{alice_id}","prefix":"app/"}}"#));
        let hex_prefix = filter(r#"{"prefix":"6170","key_encoding":"hex"}"#.into());
        for (n, expected) in [
            (
                notice(&alice, "app/x"),
                [true, true, true, true, true, true],
            ),
            (
                notice(&bob, "app/y"),
                [true, true, false, false, false, true],
            ),
            (
                notice(&alice, "other"),
                [true, false, false, true, false, false],
            ),
        ] {
            let got = [
                &all,
                &by_prefix,
                &by_key,
                &by_alice,
                &alice_prefix,
                &hex_prefix,
            ]
            .map(|f| f.matches(&n));
            assert_eq!(got, expected, "{:?}", n.notice().key);
        }
    }

    #[test]
    fn resume_positions_name_feeds_as_notifications_do() {
        let policy = shoal_pow::StampPolicy::testnet();
        let alice = shoal_pow::NodeKey::generate();
        let pos = FeedPos {
            epoch: 1_700_000_000,
            seq: 7,
        };
        let notice = SignedNotice::create(&alice, b"k", b"v", 1, 1_700_000_000, Some(pos), &policy)
            .expect("a notice");
        let json = notice_json(&notice, Encoding::Utf8);
        let name = json["feed"].as_str().expect("feed").to_owned();
        assert_eq!(json["feed_seq"], 7);
        let p = format!(r#"{{"after":{{"{name}":6}}}}"#);
        let filter = NoticeFilter::parse(&Params::new(Some(&p))).expect("valid");
        let (id, _) = notice.feed_id().expect("a feed");
        assert_eq!(filter.after, vec![(id, 6)]);
        let bad_name = name.replace(':', "/");
        for bad in [
            r#"{"after":{"nonsense":1}}"#.to_owned(),
            format!(r#"{{"after":{{"{bad_name}":1}}}}"#),
            format!(r#"{{"after":{{"{name}x":1}}}}"#),
            format!(r#"{{"after":{{"{name}":-1}}}}"#),
            r#"{"after":[1]}"#.to_owned(),
        ] {
            let e = NoticeFilter::parse(&Params::new(Some(&bad))).expect_err(&bad);
            assert_eq!(e.code, Code::InvalidParams, "{bad}");
        }
        let many: serde_json::Map<String, Value> = (0..=MAX_RESUME_FEEDS)
            .map(|i| (format!("{}:{}", alice.peer_id(), i + 1), json!(1)))
            .collect();
        let p = json!({ "after": many }).to_string();
        assert!(NoticeFilter::parse(&Params::new(Some(&p))).is_err());
    }

    #[test]
    fn absent_params_are_empty() {
        parse::<NoParams>(&Params::new(None)).expect("no params");
        parse::<NoParams>(&params("[]")).expect("empty array");
        assert!(parse::<NoParams>(&params(r#"{"x":1}"#)).is_err());
    }
}
