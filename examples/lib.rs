//! Runnable examples of using Shoal; the code is in the examples, not in this library.
//!
//! - `embed.rs`: a node running inside a Rust program with `shoal-dht`
//!   (`cargo run -p shoal-examples --example embed`).
//! - `client.rs`: a Rust JSON-RPC client of a running node with `jsonrpsee`
//!   (`cargo run -p shoal-examples --example client`).
//! - `python/shoal_example.py` and `js/shoal_example.mjs`: the same from Python and Node.js.
//!
//! `README.md` beside this file says what each one shows and how to run it against
//! `shoal testnet`.
