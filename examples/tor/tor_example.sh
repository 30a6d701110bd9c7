#!/usr/bin/env bash
# Three Tor-only Shoal nodes on a private Tor network on loopback, and a put and a get over
# onion services. Needs Debian's `tor` (nothing touches the public Tor network).
#
#   examples/tor/tor_example.sh                 # uses `shoal` from PATH
#   SHOAL=target/release/shoal examples/tor/tor_example.sh
#
# SHOAL_EXAMPLE_DIR keeps the testnet's files there instead of a temporary directory.
set -euo pipefail

shoal=${SHOAL:-shoal}
dir=${SHOAL_EXAMPLE_DIR:-$(mktemp -d)}
mkdir -p "$dir"

# One command starts the private Tor network and the nodes; node 2 and 3 join through node 1's
# onion address. It prints one line per node, then "testnet ready".
"$shoal" testnet --transport tor --nodes 3 --dir "$dir/net" >"$dir/testnet.out" 2>"$dir/testnet.err" &
testnet=$!
stop() {
  # Ctrl-C (SIGINT) stops the nodes, then the Tor network.
  kill -INT "$testnet" 2>/dev/null || true
  wait "$testnet" || true
}
trap stop EXIT

echo "starting a private Tor network and 3 Tor-only nodes (a minute or two)..."
until grep -q '^testnet ready' "$dir/testnet.out"; do
  if ! kill -0 "$testnet" 2>/dev/null; then
    echo "shoal testnet stopped before it was ready:" >&2
    cat "$dir/testnet.err" >&2
    exit 1
  fi
  sleep 1
done
cat "$dir/testnet.out"

# Each node line: node <i>  <RPC URL>  peer <id>  pid <pid>  config <file>  onion <address>
url() { awk -v i="$1" '$1 == "node" && $2 == i { print $3 }' "$dir/testnet.out"; }

echo "put through node 1 (replicated over onion services):"
"$shoal" rpc --url "$(url 1)" dht_put '{"key": "tor-example", "value": "hello over onions"}'
echo "get through node 3:"
"$shoal" rpc --url "$(url 3)" dht_get '{"key": "tor-example"}'
echo "node 3's members, known by their onion addresses only:"
"$shoal" rpc --url "$(url 3)" swim_members
