#!/usr/bin/env node
// Talk to a Shoal node over JSON-RPC from JavaScript, with Node.js built-ins only (the global
// `fetch`, Node.js 18 or later).
//
// Puts a record, gets it back, and shows how the node's errors come back: every error has a
// `code`, a `message`, and `data` with the details (`data.error` names it; `data.param` names
// the parameter at fault).
//
//     node examples/js/shoal_example.mjs [URL]
//
// URL is a node's JSON-RPC URL (default: $SHOAL_RPC, else http://127.0.0.1:7401, node 1 of
// `shoal testnet --base-port 7400`).

// Shoal's error codes used below (the README lists them all).
const INVALID_PARAMS = -32602;
const NOT_FOUND = -32040;

/** A JSON-RPC error returned by the node. */
class RpcError extends Error {
  constructor(error) {
    super(error.message ?? "no message");
    this.code = error.code;
    this.data = error.data ?? {};
  }
}

let nextId = 1;

/** Calls `method` with parameters by name; returns its result or throws an RpcError. */
async function call(url, method, params = {}) {
  const response = await fetch(url, {
    method: "POST",
    // The node refuses any other content type.
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ jsonrpc: "2.0", id: nextId++, method, params }),
    signal: AbortSignal.timeout(60_000),
  });
  const text = await response.text();
  let body;
  try {
    body = JSON.parse(text);
  } catch {
    // Some refusals (a missing token, a wrong content type) are plain HTTP errors.
    throw new Error(`HTTP ${response.status} from ${url}: ${text.slice(0, 200)}`);
  }
  if (body.error) {
    throw new RpcError(body.error);
  }
  return body.result;
}

/** Runs `f`, which must fail with the JSON-RPC error `code`; returns that error. */
async function expectError(code, f) {
  try {
    await f();
  } catch (e) {
    if (e instanceof RpcError && e.code === code) {
      return e;
    }
    throw e;
  }
  throw new Error(`expected JSON-RPC error ${code}, but the call succeeded`);
}

async function main() {
  const url = process.argv[2] ?? process.env.SHOAL_RPC ?? "http://127.0.0.1:7401";

  // Put, then get it back. Keys and values are UTF-8 text unless `encoding` /
  // `key_encoding` say "hex" or "base64".
  const put = await call(url, "dht_put", { key: "js-example", value: "hello from JavaScript" });
  console.log(`put js-example (seq ${put.seq}, route ${put.path})`);
  const got = await call(url, "dht_get", { key: "js-example" });
  console.log(`read back: ${got.value} (seq ${got.seq}, publisher ${got.publisher})`);

  // A key that is not valid hex: "invalid params", and `data.param` says which one.
  const bad = await expectError(INVALID_PARAMS, () =>
    call(url, "dht_get", { key: "not-hex", key_encoding: "hex" }),
  );
  console.log(`bad key refused: ${bad.data.error} (${bad.code}), param '${bad.data.param}': ${bad.message}`);

  // A key nobody put: "not found".
  const missing = await expectError(NOT_FOUND, () =>
    call(url, "dht_get", { key: "js-example-nobody-put-this" }),
  );
  console.log(`missing key: ${missing.data.error} (${missing.code})`);
}

try {
  await main();
} catch (e) {
  if (e instanceof RpcError) {
    console.error(`error: JSON-RPC error ${e.code}: ${e.message} ${JSON.stringify(e.data)}`);
  } else {
    // fetch reports network failures as "fetch failed" with the reason in `cause`.
    console.error(`error: cannot talk to the node: ${e.message}${e.cause ? ` (${e.cause.message ?? e.cause})` : ""}`);
  }
  process.exitCode = 1;
}
