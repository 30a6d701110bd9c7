//! The command line: `shoal init | run | testnet | rpc | config`.
//!
//! Every node option can come from a flag, an environment variable (`SHOAL_*`) or the config
//! file; flags win over the environment, which wins over the file, which wins over the defaults.

use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::{LogFormat, Network, Overrides, Transport};

/// The shoal node: a Kademlia DHT over SWIM membership with proof-of-work identities.
#[derive(Debug, Parser)]
#[command(name = "shoal", version, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create the data directory, the node key and its identity proof.
    Init(InitArgs),
    /// Run a node until Ctrl-C or SIGTERM.
    Run(RunArgs),
    /// Run a local testnet of `shoal run` processes on loopback until Ctrl-C.
    Testnet(TestnetArgs),
    /// Run a private Tor network on loopback (Debian's `tor`) until Ctrl-C, to try Tor-only
    /// nodes locally; writes the `[tor]` table nodes need to DIR/tor.toml.
    TorTestnet(TorTestnetArgs),
    /// Call a JSON-RPC method of a running node and print the result.
    Rpc(RpcArgs),
    /// Print configuration files.
    #[command(subcommand)]
    Config(ConfigCommand),
}

/// `shoal config ...`.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print the documented default configuration file.
    Default,
    /// Print the configuration in effect (file, environment and flags merged), documented; the
    /// auth token is hidden.
    Show(RunArgs),
}

/// Where the configuration comes from: shared by `init`, `run` and `config show`.
#[derive(Debug, Clone, Args)]
pub struct ConfigArgs {
    /// Config file. Default: `<data dir>/shoal.toml` if it exists, else the built-in defaults.
    #[arg(long, short = 'c', env = "SHOAL_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Data directory (key, proof, database). Overrides `data_dir`.
    #[arg(long, env = "SHOAL_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Network: main, testnet or local. Overrides `network`.
    #[arg(long, env = "SHOAL_NETWORK", value_enum)]
    pub network: Option<Network>,
}

/// `shoal init`.
#[derive(Debug, Clone, Args)]
pub struct InitArgs {
    /// Config file, data directory and network.
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Replace an existing key (the node gets a new identity).
    #[arg(long)]
    pub force: bool,
    /// No progress bar.
    #[arg(long, short)]
    pub quiet: bool,
    /// Threads minting the identity proof. Default: every core.
    #[arg(long, value_name = "N")]
    pub threads: Option<NonZeroUsize>,
}

/// `shoal run` and `shoal config show`.
#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// Config file, data directory and network.
    #[command(flatten)]
    pub config: ConfigArgs,
    /// P2P listen multiaddrs (repeat or comma-separate). Overrides `p2p.listen`.
    #[arg(
        long,
        env = "SHOAL_LISTEN",
        value_delimiter = ',',
        value_name = "MULTIADDR"
    )]
    pub listen: Vec<String>,
    /// Seeds: multiaddrs ending in /p2p/PEER_ID (repeat or comma-separate). Overrides
    /// `p2p.seeds`; an empty value (SHOAL_SEEDS=) means no seeds.
    #[arg(
        long = "seed",
        env = "SHOAL_SEEDS",
        value_delimiter = ',',
        value_name = "MULTIADDR"
    )]
    pub seeds: Vec<String>,
    /// JSON-RPC listen address. Overrides `rpc.listen`.
    #[arg(long, env = "SHOAL_RPC_LISTEN", value_name = "ADDR")]
    pub rpc_listen: Option<SocketAddr>,
    /// JSON-RPC bearer token. Overrides `rpc.auth_token`.
    #[arg(
        long,
        env = "SHOAL_RPC_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub rpc_token: Option<String>,
    /// Log format: human or json. Overrides `log.format`.
    #[arg(long, env = "SHOAL_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
    /// Log filter (EnvFilter syntax, such as "info,shoal_dht=debug"). Overrides `log.level`.
    #[arg(long = "log", env = "SHOAL_LOG", value_name = "FILTER")]
    pub log_level: Option<String>,
    /// Test only, hidden: serve no record (puts are still acknowledged with receipts), so
    /// tests can show what the other nodes do about a node that drops what it stored.
    #[arg(long, hide = true)]
    pub dangerous_withhold_records: bool,
}

impl ConfigArgs {
    /// The overrides these flags set.
    pub fn overrides(&self) -> Overrides {
        Overrides {
            data_dir: self.data_dir.clone(),
            network: self.network,
            ..Overrides::default()
        }
    }
}

impl RunArgs {
    /// The overrides these flags and variables set.
    pub fn overrides(&self) -> Overrides {
        let given = |v: &Vec<String>| {
            (!v.is_empty()).then(|| v.iter().filter(|s| !s.is_empty()).cloned().collect())
        };
        Overrides {
            listen: given(&self.listen).filter(|l: &Vec<String>| !l.is_empty()),
            seeds: given(&self.seeds),
            rpc_listen: self.rpc_listen,
            rpc_token: self.rpc_token.clone(),
            log_format: self.log_format,
            log_level: self.log_level.clone(),
            dangerous_withhold_records: self.dangerous_withhold_records,
            ..self.config.overrides()
        }
    }
}

/// `shoal tor-testnet`.
#[derive(Debug, Clone, Args)]
pub struct TorTestnetArgs {
    /// Directory for the network's keys, torrcs and logs, and its `tor.toml`; kept at exit.
    #[arg(long, default_value = "shoal-tor-testnet", value_name = "DIR")]
    pub dir: PathBuf,
}

/// `shoal testnet`.
#[derive(Debug, Clone, Args)]
pub struct TestnetArgs {
    /// Number of nodes, 1 to 64.
    #[arg(long, short, default_value_t = 5, value_parser = clap::value_parser!(u8).range(1..=64))]
    pub nodes: u8,
    /// Directory holding every node's data directory (`DIR/node-1`, ...). Default: a new
    /// temporary directory, removed at exit unless --keep.
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// First port: node i (from 1) listens for peers on P + 2(i-1) and for JSON-RPC on
    /// P + 2(i-1) + 1. Default: free ports chosen by the system.
    #[arg(long, value_name = "P")]
    pub base_port: Option<u16>,
    /// Keep the temporary directory at exit.
    #[arg(long)]
    pub keep: bool,
    /// How long to wait for the nodes to be ready, seconds (default 60, or 300 over Tor).
    /// While they are still checking each other's identity proofs (n·(n−1) scrypt
    /// evaluations) the wait goes on as long as one more check ends within it.
    #[arg(long, value_name = "SECS")]
    pub ready_timeout: Option<u64>,
    /// How the nodes reach each other: `tcp` on loopback; `tor`: a private Tor network on
    /// loopback (Debian's `tor`) and Tor-only nodes joining through node 1's onion address;
    /// `both`: onion services and TCP.
    #[arg(long, value_enum, default_value_t = Transport::Tcp)]
    pub transport: Transport,
}

/// `shoal rpc`.
#[derive(Debug, Clone, Args)]
pub struct RpcArgs {
    /// The method, such as node_info. A subscription (a method ending in _subscribe, such as
    /// lockstep_subscribe) is followed over WebSocket: one line of JSON per notification until
    /// Ctrl-C.
    pub method: String,
    /// Parameters: a JSON object (by name) or array (by position).
    pub params: Option<String>,
    /// The node's JSON-RPC URL.
    #[arg(long, env = "SHOAL_RPC_URL", default_value = "http://127.0.0.1:7400")]
    pub url: String,
    /// Bearer token (the node's rpc.auth_token).
    #[arg(long, env = "SHOAL_RPC_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Request timeout, seconds.
    #[arg(long, default_value_t = 60, value_name = "SECS")]
    pub timeout: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn flags_parse_into_overrides() {
        let cli = Cli::try_parse_from([
            "shoal",
            "run",
            "--data-dir",
            "/d",
            "--seed",
            "/ip4/1.2.3.4/tcp/1/p2p/x,/ip4/1.2.3.5/tcp/1/p2p/y",
            "--log-format",
            "json",
        ])
        .unwrap();
        let Command::Run(args) = cli.command else {
            panic!("expected run");
        };
        let o = args.overrides();
        assert_eq!(o.data_dir, Some(PathBuf::from("/d")));
        assert_eq!(o.seeds.map(|s| s.len()), Some(2));
        assert_eq!(o.log_format, Some(LogFormat::Json));

        let cli = Cli::try_parse_from(["shoal", "run", "--seed", ""]).unwrap();
        let Command::Run(args) = cli.command else {
            panic!("expected run");
        };
        assert_eq!(args.overrides().seeds, Some(Vec::new()), "empty clears");
        assert_eq!(args.overrides().listen, None, "not given");
    }

    #[test]
    fn testnet_nodes_are_bounded() {
        assert!(Cli::try_parse_from(["shoal", "testnet", "--nodes", "0"]).is_err());
        assert!(Cli::try_parse_from(["shoal", "testnet", "--nodes", "65"]).is_err());
        let Command::Testnet(a) = Cli::try_parse_from(["shoal", "testnet"]).unwrap().command else {
            panic!("expected testnet");
        };
        assert_eq!(a.nodes, 5);
        assert_eq!(a.transport, Transport::Tcp);
        let Command::Testnet(a) = Cli::try_parse_from(["shoal", "testnet", "--transport", "tor"])
            .unwrap()
            .command
        else {
            panic!("expected testnet");
        };
        assert_eq!(a.transport, Transport::Tor);
        assert!(Cli::try_parse_from(["shoal", "testnet", "--transport", "udp"]).is_err());
    }
}
