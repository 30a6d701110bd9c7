#!/usr/bin/env python3
"""Talk to a Shoal node over JSON-RPC from Python, with the standard library only.

Puts a record, gets it back, and shows how the node's errors come back: every error has a
`code`, a `message`, and `data` with the details (`data.error` names it; `data.param` names
the parameter at fault).

    python3 examples/python/shoal_example.py [URL]

URL is a node's JSON-RPC URL (default: $SHOAL_RPC, else http://127.0.0.1:7401, node 1 of
`shoal testnet --base-port 7400`).
"""

import itertools
import json
import os
import sys
import urllib.error
import urllib.request

# Shoal's error codes used below (the README lists them all).
INVALID_PARAMS = -32602
NOT_FOUND = -32040


class RpcError(Exception):
    """A JSON-RPC error returned by the node."""

    def __init__(self, error):
        super().__init__(error.get("message", "no message"))
        self.code = error.get("code")
        self.message = error.get("message", "")
        self.data = error.get("data") or {}


class Node:
    """A JSON-RPC client of one node: one HTTP POST per call."""

    def __init__(self, url, timeout=60):
        self.url = url
        self.timeout = timeout
        self.ids = itertools.count(1)

    def call(self, method, **params):
        """Calls `method` with parameters by name; returns its result or raises RpcError."""
        request = {"jsonrpc": "2.0", "id": next(self.ids), "method": method, "params": params}
        http_request = urllib.request.Request(
            self.url,
            data=json.dumps(request).encode("utf-8"),
            # The node refuses any other content type.
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(http_request, timeout=self.timeout) as answer:
                body = answer.read()
        except urllib.error.HTTPError as e:
            # Some refusals (a request over the size limit, a missing token) come with an HTTP
            # error status; their body may still be a JSON-RPC error.
            body = e.read()
            try:
                error = json.loads(body)["error"]
            except (ValueError, KeyError, TypeError):
                raise RuntimeError(f"HTTP {e.code} from {self.url}: {body[:200]!r}") from None
            raise RpcError(error) from None
        response = json.loads(body)
        if "error" in response:
            raise RpcError(response["error"])
        return response["result"]


def main():
    url = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("SHOAL_RPC", "http://127.0.0.1:7401")
    node = Node(url)

    # Put, then get it back. Keys and values are UTF-8 text unless `encoding` /
    # `key_encoding` say "hex" or "base64".
    put = node.call("dht_put", key="python-example", value="hello from Python")
    print(f"put python-example (seq {put['seq']}, route {put['path']})")
    got = node.call("dht_get", key="python-example")
    print(f"read back: {got['value']} (seq {got['seq']}, publisher {got['publisher']})")

    # A key that is not valid hex: "invalid params", and `data.param` says which one.
    try:
        node.call("dht_get", key="not-hex", key_encoding="hex")
        raise SystemExit("error: a bad hex key was accepted")
    except RpcError as e:
        if e.code != INVALID_PARAMS:
            raise
        print(f"bad key refused: {e.data.get('error')} ({e.code}), param {e.data.get('param')!r}: {e.message}")

    # A key nobody put: "not found".
    try:
        node.call("dht_get", key="python-example-nobody-put-this")
        raise SystemExit("error: a key nobody put was found")
    except RpcError as e:
        if e.code != NOT_FOUND:
            raise
        print(f"missing key: {e.data.get('error')} ({e.code})")


if __name__ == "__main__":
    try:
        main()
    except RpcError as e:
        sys.exit(f"error: JSON-RPC error {e.code}: {e.message} {json.dumps(e.data)}")
    except (urllib.error.URLError, OSError, RuntimeError) as e:
        sys.exit(f"error: cannot talk to the node: {e}")
