//! The OpenRPC document (<https://spec.open-rpc.org>) returned by `rpc.discover`: every method
//! with its parameters, result and errors. A test checks it against the methods the server
//! really registers.

use serde_json::{Value, json};

use crate::rpc::error::Code;

/// One documented parameter.
struct Param {
    name: &'static str,
    summary: &'static str,
    required: bool,
    schema: fn() -> Value,
}

/// One documented method.
struct Method {
    name: &'static str,
    summary: &'static str,
    params: &'static [Param],
    result: fn() -> Value,
    errors: &'static [Code],
}

fn string() -> Value {
    json!({ "type": "string" })
}

fn integer() -> Value {
    json!({ "type": "integer", "minimum": 0 })
}

fn boolean() -> Value {
    json!({ "type": "boolean", "default": false })
}

fn positive() -> Value {
    json!({ "type": "integer", "minimum": 1 })
}

fn encoding() -> Value {
    json!({ "type": "string", "enum": ["utf8", "hex", "base64"], "default": "utf8" })
}

fn route() -> Value {
    json!({ "type": "string", "enum": ["auto", "iterative"], "default": "auto" })
}

fn path() -> Value {
    json!({
        "type": "string",
        "enum": ["one-hop", "iterative"],
        "description": "How the peers were found: one hop from the node's view of the \
                        membership, or Kademlia's iterative lookup",
    })
}

/// One sample of `node_stats`.
fn sample() -> Value {
    let calls = object(json!({
        "calls": integer(), "errors": integer(),
        "p50_ms": { "type": "number" }, "p99_ms": { "type": "number" },
    }));
    object(json!({
        "t": { "type": "number", "description": "End of the interval, Unix seconds" },
        "rpc": { "type": "object", "additionalProperties": calls },
        "probes": integer(),
        "failed_probes": integer(),
        "refutations": integer(),
        "puts_stored": integer(),
        "puts_refused": integer(),
        "bytes_in": integer(),
        "bytes_out": integer(),
    }))
}

/// The param of the unsubscribe methods.
const SUBSCRIPTION: Param = Param {
    name: "subscription",
    summary: "The subscription id",
    required: true,
    schema: string,
};

fn object(properties: Value) -> Value {
    json!({ "type": "object", "properties": properties })
}

fn strings() -> Value {
    json!({ "type": "array", "items": { "type": "string" } })
}

const KEY: Param = Param {
    name: "key",
    summary: "The key (at most 512 bytes once decoded)",
    required: true,
    schema: string,
};
const VALUE: Param = Param {
    name: "value",
    summary: "The value (at most 65,536 bytes once decoded)",
    required: true,
    schema: string,
};
const ENCODING: Param = Param {
    name: "encoding",
    summary: "Encoding of the value: utf8 (default), hex or base64",
    required: false,
    schema: encoding,
};
const KEY_ENCODING: Param = Param {
    name: "key_encoding",
    summary: "Encoding of the key: utf8 (default), hex or base64",
    required: false,
    schema: encoding,
};
const ROUTE: Param = Param {
    name: "route",
    summary: "auto (default): one hop from the node's view of the membership when that view is \
              settled, else Kademlia's iterative lookup; iterative: always the lookup",
    required: false,
    schema: route,
};
const SEQ: Param = Param {
    name: "seq",
    summary: "Sequence number; default: one above the last one seen, at least the Unix time",
    required: false,
    schema: integer,
};

fn receipt() -> Value {
    json!({
        "type": "object",
        "description": "A replica's signed word that it keeps the record (sha256 of key and \
                        value, sequence, time); `receipt` is its exact signed bytes in hex, \
                        for dht_verifyReceipt or any ed25519 checker",
        "properties": {
            "replica": string(),
            "seq": integer(),
            "value_hash": string(),
            "time": integer(),
            "receipt": string(),
        },
    })
}

fn receipts() -> Value {
    json!({ "type": "array", "items": receipt() })
}

fn put_result() -> Value {
    object(json!({ "key": string(), "seq": integer(), "path": path(), "receipts": receipts() }))
}

fn get_result() -> Value {
    object(json!({
        "key": string(),
        "value": string(),
        "encoding": encoding(),
        "publisher": string(),
        "seq": integer(),
        "created_at": integer(),
        "expires_at": integer(),
        "lockstep": { "type": "boolean", "description": "Whether the value was announced" },
        "copies": object(json!({ "valid": integer(), "invalid": integer() })),
        "path": path(),
        "rpcs": { "type": "integer", "description": "Requests sent to peers" },
        "receipts": {
            "type": "array",
            "items": receipt(),
            "description": "With prove: the receipts of the holders of the winning record",
        },
    }))
}

fn notice() -> Value {
    object(json!({
        "key": string(),
        "key_encoding": encoding(),
        "publisher": string(),
        "seq": integer(),
        "value_hash": string(),
        "created_at": integer(),
    }))
}

const METHODS: &[Method] = &[
    Method {
        name: "dht_put",
        summary: "Signs, stamps and stores a record; returns once the quorum of replicas \
                  validated and kept it, while the other replicas still receive it",
        params: &[
            KEY,
            VALUE,
            ENCODING,
            KEY_ENCODING,
            Param {
                name: "ttl",
                summary: "Lifetime in seconds (default from the config, at most 7 days)",
                required: false,
                schema: positive,
            },
            Param {
                name: "quorum",
                summary: "Replicas that must acknowledge (default from the config)",
                required: false,
                schema: positive,
            },
            SEQ,
            ROUTE,
        ],
        result: put_result,
        errors: &[
            Code::InvalidParams,
            Code::TooLarge,
            Code::QuorumFailed,
            Code::ProofInvalid,
            Code::LockstepMismatch,
            Code::Refused,
            Code::Timeout,
        ],
    },
    Method {
        name: "dht_get",
        summary: "Finds the valid record with the highest sequence number for a key",
        params: &[
            KEY,
            ENCODING,
            KEY_ENCODING,
            ROUTE,
            Param {
                name: "prove",
                summary: "Ask every holder found for a signed receipt, and answer once all did \
                          (never from this node's own copy alone); a holder that signed a \
                          receipt for this node's put and now denies the record loses standing",
                required: false,
                schema: boolean,
            },
        ],
        result: get_result,
        errors: &[Code::InvalidParams, Code::NotFound, Code::Timeout],
    },
    Method {
        name: "dht_verifyReceipt",
        summary: "Checks a storage receipt's signature and, given key and value (and seq), that \
                  it is for that record; returns what it vouches for",
        params: &[
            Param {
                name: "receipt",
                summary: "The receipt's bytes, hex",
                required: true,
                schema: string,
            },
            Param {
                name: "key",
                summary: "The record's key, to check the receipt names it",
                required: false,
                schema: string,
            },
            Param {
                name: "value",
                summary: "The record's value (with key), to check the receipt names it",
                required: false,
                schema: string,
            },
            Param {
                name: "seq",
                summary: "The record's sequence number, to check the receipt names it",
                required: false,
                schema: integer,
            },
            ENCODING,
            KEY_ENCODING,
        ],
        result: || {
            object(json!({
                "replica": string(),
                "key": string(),
                "key_encoding": encoding(),
                "seq": integer(),
                "value_hash": string(),
                "time": integer(),
            }))
        },
        errors: &[Code::InvalidParams],
    },
    Method {
        name: "dht_findNode",
        summary: "The peers closest to a peer id, closest first: at once from the node's view of \
                  the membership when it is settled, else (or with route iterative) by \
                  Kademlia's iterative lookup",
        params: &[
            Param {
                name: "peer",
                summary: "The target peer id",
                required: true,
                schema: string,
            },
            ROUTE,
        ],
        result: || {
            object(json!({
                "target": string(),
                "peers": strings(),
                "path": path(),
                "rpcs": { "type": "integer", "description": "Requests sent to peers" },
            }))
        },
        errors: &[Code::InvalidParams, Code::Timeout],
    },
    Method {
        name: "lockstep_announce",
        summary: "Announces sha256(key || value) for a sequence number to the closest peers, \
                  before the value is put",
        params: &[KEY, VALUE, ENCODING, KEY_ENCODING, SEQ],
        result: || {
            object(json!({
                "key": string(),
                "seq": integer(),
                "value_hash": string(),
                "accepted": integer(),
                "refused": integer(),
            }))
        },
        errors: &[
            Code::InvalidParams,
            Code::TooLarge,
            Code::ProofInvalid,
            Code::Refused,
            Code::Timeout,
        ],
    },
    Method {
        name: "lockstep_get",
        summary: "The latest notice of each publisher for a key, newest first",
        params: &[KEY, KEY_ENCODING],
        result: || {
            object(json!({ "key": string(), "notices": { "type": "array", "items": notice() } }))
        },
        errors: &[Code::InvalidParams, Code::Timeout],
    },
    Method {
        name: "lockstep_subscribe",
        summary: "Subscribes (WebSocket) to the notices announced anywhere in the network \
                  that meet every condition given, each once and in its feed's order; \
                  notifications are lockstep_notice {key, key_encoding, publisher, seq, \
                  value_hash, created_at, feed, feed_seq}",
        params: &[
            Param {
                name: "key",
                summary: "Only notices for this key",
                required: false,
                schema: string,
            },
            Param {
                name: "prefix",
                summary: "Only notices for keys that start with this prefix",
                required: false,
                schema: string,
            },
            Param {
                name: "publisher",
                summary: "Only notices of this publisher (a peer id)",
                required: false,
                schema: string,
            },
            KEY_ENCODING,
            Param {
                name: "after",
                summary: "Resume: the last feed_seq seen of each feed (by its notifications' \
                          feed name, at most 1024 feeds); the notices after it that this node \
                          still holds come first",
                required: false,
                schema: || json!({ "type": "object", "additionalProperties": { "type": "integer", "minimum": 0 } }),
            },
        ],
        result: || json!({ "type": "string", "description": "The subscription id" }),
        errors: &[Code::InvalidParams],
    },
    Method {
        name: "lockstep_unsubscribe",
        summary: "Ends a lockstep_subscribe subscription",
        params: &[SUBSCRIPTION],
        result: || json!({ "type": "boolean" }),
        errors: &[],
    },
    Method {
        name: "swim_members",
        summary: "Every member SWIM knows, with its state, incarnation, addresses and whether \
                  this node checked its identity proof yet (a member listed on a relayed proof \
                  waits for its check before the DHT uses it)",
        params: &[],
        result: || {
            json!({ "type": "array", "items": object(json!({
                "peer": string(),
                "state": { "type": "string", "enum": ["alive", "suspect", "dead", "left"] },
                "incarnation": integer(),
                "addrs": strings(),
                "verified": { "type": "boolean" },
                "changed_at": {
                    "type": ["integer", "null"],
                    "description": "When this node last saw its state change (Unix seconds); \
                                    null if not since this node started",
                },
            })) })
        },
        errors: &[],
    },
    Method {
        name: "swim_subscribe",
        summary: "Every change SWIM makes to a member from now on: joined or refuted \
                  (alive), suspected, failed (dead), left. A subscriber that fell behind gets \
                  {lagged: n} and should read swim_members again",
        params: &[],
        result: || json!({ "type": "string", "description": "The subscription id" }),
        errors: &[Code::InvalidParams],
    },
    Method {
        name: "swim_unsubscribe",
        summary: "Ends a swim_subscribe subscription",
        params: &[SUBSCRIPTION],
        result: || json!({ "type": "boolean" }),
        errors: &[],
    },
    Method {
        name: "dht_routingTable",
        summary: "The Kademlia routing table: the bucket size k and each non-empty bucket by \
                  its distance (peers at XOR distance d with 2^distance <= d < 2^(distance+1))",
        params: &[],
        result: || {
            object(json!({
                "k": integer(),
                "size": integer(),
                "buckets": { "type": "array", "items": object(json!({
                    "distance": integer(),
                    "peers": strings(),
                })) },
            }))
        },
        errors: &[Code::Unavailable],
    },
    Method {
        name: "dht_records",
        summary: "A page of the records this node holds, in key order, without their values",
        params: &[
            Param {
                name: "prefix",
                summary: "Only keys that start with this prefix (in key_encoding)",
                required: false,
                schema: string,
            },
            KEY_ENCODING,
            Param {
                name: "after",
                summary: "The next of the page before",
                required: false,
                schema: string,
            },
            Param {
                name: "limit",
                summary: "Records in the page, 1 to 100 (default 50)",
                required: false,
                schema: positive,
            },
        ],
        result: || {
            object(json!({
                "total": { "type": "integer", "description": "Records held in all" },
                "records": { "type": "array", "items": object(json!({
                    "key": string(),
                    "key_encoding": encoding(),
                    "publisher": string(),
                    "seq": integer(),
                    "size": { "type": "integer", "description": "Bytes of the value" },
                    "created_at": integer(),
                    "expires_at": integer(),
                })) },
                "next": {
                    "type": ["string", "null"],
                    "description": "The after of the next page; null on the last",
                },
            }))
        },
        errors: &[Code::InvalidParams],
    },
    Method {
        name: "node_stats",
        summary: "The node's recent activity, one sample per interval (the last 300): calls, \
                  errors and latency per method, SWIM probes and refutations, puts stored and \
                  refused, bytes of peer traffic",
        params: &[],
        result: || {
            object(
                json!({ "interval_secs": integer(), "samples": { "type": "array", "items": sample() } }),
            )
        },
        errors: &[],
    },
    Method {
        name: "node_subscribeStats",
        summary: "Each new sample of node_stats as its interval ends",
        params: &[],
        result: || json!({ "type": "string", "description": "The subscription id" }),
        errors: &[Code::InvalidParams],
    },
    Method {
        name: "node_unsubscribeStats",
        summary: "Ends a node_subscribeStats subscription",
        params: &[SUBSCRIPTION],
        result: || json!({ "type": "boolean" }),
        errors: &[],
    },
    Method {
        name: "node_peers",
        summary: "The peers in the Kademlia routing table; with detail, the connected peers \
                  with the bytes of messages each sent and was sent per protocol since it \
                  connected, its standing, and whether it is routed",
        params: &[
            Param {
                name: "detail",
                summary: "List the connected peers with their traffic and standing",
                required: false,
                schema: boolean,
            },
            Param {
                name: "limit",
                summary: "With detail: only the busiest this many, by bytes both ways",
                required: false,
                schema: positive,
            },
        ],
        result: || {
            let traffic = || object(json!({ "in": integer(), "out": integer() }));
            json!({
                "oneOf": [
                    strings(),
                    { "type": "array", "items": object(json!({
                        "peer": string(),
                        "routed": { "type": "boolean" },
                        "direct": {
                            "type": "boolean",
                            "description": "Whether a connection is direct (not through a relay)",
                        },
                        "hole_punch_failures": {
                            "type": "integer",
                            "description": "Hole punches with it that failed since the last \
                                direct connection to it (each retried later)",
                        },
                        "standing": integer(),
                        "traffic": object(json!({
                            "dht": traffic(), "swim": traffic(), "broadcast": traffic(),
                        })),
                    })) },
                ],
            })
        },
        errors: &[Code::InvalidParams],
    },
    Method {
        name: "trust_peers",
        summary: "Peers whose proven misbehaviour cost them standing (of 100), or that are banned",
        params: &[],
        result: || {
            json!({ "type": "array", "items": object(json!({
                "peer": string(),
                "standing": integer(),
                "banned": { "type": "boolean" },
            })) })
        },
        errors: &[],
    },
    Method {
        name: "node_info",
        summary: "This node: peer id, network, version, addresses, members, records",
        params: &[],
        result: || {
            object(json!({
                "peer_id": string(),
                "network": string(),
                "transport": { "type": "string", "enum": ["tcp", "tor", "tcp+tor"] },
                "onion_address": { "type": ["string", "null"] },
                "reachability": {
                    "type": "string",
                    "description": "How peers can reach this node, as its addresses say",
                },
                "version": string(),
                "uptime_secs": integer(),
                "listen_addrs": strings(),
                "external_addrs": strings(),
                "nat": object(json!({
                    "mode": { "type": "string", "enum": ["auto", "off"] },
                    "reachability": {
                        "type": "string",
                        "enum": ["unknown", "public", "private"],
                        "description": "What AutoNAT found: public once an address was reached \
                            from outside, private once tests failed and none was",
                    },
                    "relays": strings(),
                    "probes_confirmed": integer(),
                    "probes_failed": integer(),
                    "reservations_asked": integer(),
                    "reservations_accepted": integer(),
                    "reservations_lost": integer(),
                    "holes_punched": integer(),
                    "hole_punch_failures": integer(),
                    "hole_punch_retries": integer(),
                    "upnp_mapped": {
                        "type": ["string", "null"],
                        "description": "The address a UPnP gateway maps to the listen port \
                            (with p2p.upnp on), while it does",
                    },
                })),
                "members": object(json!({
                    "alive": integer(), "suspect": integer(), "dead": integer(), "left": integer(),
                })),
                "routing_peers": integer(),
                "connections": { "type": "integer", "description": "Established connections" },
                "dials": { "type": "integer", "description": "Outbound dials since start" },
                "routing": object(json!({
                    "view_settled": {
                        "type": "boolean",
                        "description": "Whether operations now take one hop from the view",
                    },
                    "one_hop": integer(),
                    "iterative": integer(),
                })),
                "records": integer(),
                "notices": integer(),
                "identity_checks": object(json!({
                    "pending": {
                        "type": "integer",
                        "description": "Members listed on a relayed proof, waiting for its check",
                    },
                    "verified": integer(),
                    "listed_before_check": integer(),
                    "proofs_with_news": {
                        "type": "integer", "minimum": 0,
                        "description": "Members whose proof came attached to news of them",
                    },
                    "proof_requests": {
                        "type": "integer", "minimum": 0,
                        "description": "Requests sent to members for proofs of members they named",
                    },
                    "scrypt_evaluations": integer(),
                    "checks_run": integer(),
                    "checks_needed": {
                        "type": "integer",
                        "description": "Checks something waited on (run at the node's priority)",
                    },
                    "scrypt_secs": { "type": "number" },
                    "relayers_distrusted": integer(),
                })),
            }))
        },
        errors: &[Code::Unavailable],
    },
];

/// The names of every method the document describes.
pub fn documented_methods() -> Vec<&'static str> {
    METHODS.iter().map(|m| m.name).collect()
}

fn error_json(code: Code) -> Value {
    json!({ "code": code.number(), "message": code.name() })
}

/// The OpenRPC document.
pub fn document() -> Value {
    let methods: Vec<Value> = METHODS
        .iter()
        .map(|m| {
            let params: Vec<Value> = m
                .params
                .iter()
                .map(|p| {
                    json!({
                        "name": p.name,
                        "summary": p.summary,
                        "required": p.required,
                        "schema": (p.schema)(),
                    })
                })
                .collect();
            let mut errors: Vec<Value> = m.errors.iter().copied().map(error_json).collect();
            errors.push(error_json(Code::RateLimited));
            errors.push(error_json(Code::Unavailable));
            errors.dedup();
            json!({
                "name": m.name,
                "summary": m.summary,
                "paramStructure": "by-name",
                "params": params,
                "result": { "name": "result", "schema": (m.result)() },
                "errors": errors,
            })
        })
        .collect();
    json!({
        "openrpc": "1.3.2",
        "info": {
            "title": "Shoal node JSON-RPC",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Store and find keys on Shoal's DHT, announce values through \
                            lockstep, inspect membership. HTTP and WebSocket on one port.",
        },
        "methods": methods,
    })
}
