//! The `shoal` node: what people run. A command line (`shoal init`, `run`, `testnet`, `rpc`,
//! `config default`), a documented TOML configuration, a JSON-RPC endpoint over HTTP and
//! WebSocket on one port (with Prometheus metrics at `/metrics`), and a local testnet of
//! processes on loopback.
//!
//! - [`cli`]: the command line.
//! - [`config`]: the TOML configuration, its documented defaults and overrides.
//! - [`init`]: the data directory, node key and identity proof.
//! - [`run`]: starting a node and its endpoints, and shutting them down cleanly.
//! - [`testnet`]: a local testnet of `shoal run` processes.
//! - [`client`]: the `shoal rpc` client.
//! - [`rpc`]: the JSON-RPC server, its methods, errors and OpenRPC document.
//! - [`metrics`]: the Prometheus metrics.
//! - [`tor`]: the `[tor]` table, the transport of each `p2p.transport` mode, onion timing.
//! - [`tor_testnet`]: `shoal tor-testnet`, a private Tor network on loopback.

pub mod cli;
pub mod client;
pub mod config;
pub mod init;
pub mod join;
pub mod metrics;
pub mod rpc;
pub mod run;
pub mod testnet;
pub mod tor;
pub mod tor_testnet;
