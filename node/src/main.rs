//! The `shoal` binary: parses the command line and dispatches to the library.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use shoal_node::cli::{Cli, Command, ConfigArgs, ConfigCommand, InitArgs, RpcArgs, RunArgs};
use shoal_node::client::ClientError;
use shoal_node::config::{Config, DEFAULT_CONFIG, Transport, resolve_home};
use shoal_node::init::{self, CONFIG_FILE, InitOptions};
use shoal_node::testnet::TestnetOptions;
use shoal_node::{client, run, testnet};
use shoal_pow::CancelToken;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match dispatch(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", chain(&e));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes, skipping a cause whose text the message already holds (our error
/// types name their cause in their message).
fn chain(e: &anyhow::Error) -> String {
    let mut text = e.to_string();
    for cause in e.chain().skip(1) {
        let cause = cause.to_string();
        if !text.contains(&cause) {
            text.push_str(": ");
            text.push_str(&cause);
        }
    }
    text
}

fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Init(args) => init_command(&args),
        Command::Run(args) => {
            let config = resolve(&args)?;
            run::init_tracing(&config.log)?;
            // After the logger, so that a refusal can be logged; before the node's threads.
            run::limit_retained_memory();
            runtime_with(config.threads)?.block_on(run::run(&config))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Testnet(args) => {
            let exe = std::env::current_exe().context("locating the shoal executable")?;
            let options = TestnetOptions {
                nodes: args.nodes,
                dir: args.dir,
                base_port: args.base_port,
                keep: args.keep,
                ready_timeout: Duration::from_secs(args.ready_timeout.unwrap_or(
                    match args.transport {
                        Transport::Tcp => 60,
                        // Every node bootstraps arti and publishes an onion service first.
                        Transport::Tor | Transport::Both => 300,
                    },
                )),
                exe,
                transport: args.transport,
            };
            runtime()?.block_on(testnet::run(options))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::TorTestnet(args) => {
            runtime()?.block_on(shoal_node::tor_testnet::run(&args.dir))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Rpc(args) => rpc_command(&args),
        Command::Config(ConfigCommand::Default) => {
            print!("{DEFAULT_CONFIG}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Config(ConfigCommand::Show(args)) => {
            let mut config = resolve(&args)?;
            // The effective config may be pasted into an issue: never print the token.
            if config.rpc.auth_token.is_some() {
                config.rpc.auth_token = Some("(set, hidden)".to_owned());
            }
            print!("{}", config.to_documented_toml()?);
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    runtime_with(0)
}

/// A runtime with `threads` workers (0: tokio's default, one per core).
fn runtime_with(threads: usize) -> anyhow::Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if threads > 0 {
        builder.worker_threads(threads);
    }
    builder
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// The config file to read: `--config`, else `<data dir>/shoal.toml` if it exists.
fn config_file(args: &ConfigArgs) -> Option<PathBuf> {
    if let Some(path) = &args.config {
        return Some(path.clone());
    }
    let data_dir = args
        .data_dir
        .clone()
        .unwrap_or_else(|| Config::default().data_dir);
    let path = resolve_home(&data_dir).join(CONFIG_FILE);
    path.exists().then_some(path)
}

fn resolve(args: &RunArgs) -> anyhow::Result<Config> {
    let file = config_file(&args.config);
    Ok(Config::resolve(file.as_deref(), &args.overrides())?)
}

fn init_command(args: &InitArgs) -> anyhow::Result<ExitCode> {
    let file = config_file(&args.config);
    let config = Config::resolve(file.as_deref(), &args.config.overrides())?;
    let dht = config.to_dht_config()?;
    let data_dir = config.resolved_data_dir();
    let options = InitOptions {
        data_dir: data_dir.clone(),
        puzzle: dht.puzzle.clone(),
        force: args.force,
        reuse: false,
        threads: args
            .threads
            .or_else(|| std::thread::available_parallelism().ok())
            .unwrap_or(std::num::NonZeroUsize::MIN),
    };
    let bar = init::progress_bar(args.quiet, dht.puzzle.difficulty);
    let cancel = CancelToken::new();
    let done = init::init(&options, &cancel, |p| {
        bar.set_message(init::progress_message(p))
    });
    bar.finish_and_clear();
    let done = done?;
    // A config file beside the key, so `shoal run --data-dir DIR` finds the network.
    let written = if args.config.config.is_none() {
        let config = Config {
            data_dir: data_dir.clone(),
            ..config.clone()
        };
        init::write_config(&data_dir, &config, false)?
    } else {
        None
    };
    let mut out = std::io::stdout().lock();
    if done.new_key {
        writeln!(out, "key       {}", done.key_path.display())?;
    } else {
        writeln!(out, "key       {} (kept)", done.key_path.display())?;
    }
    match done.minted {
        Some((attempts, elapsed)) => writeln!(
            out,
            "proof     {} ({} network, {attempts} attempts in {:.1} s)",
            done.proof_path.display(),
            config.network,
            elapsed.as_secs_f64()
        )?,
        None => writeln!(out, "proof     {} (kept)", done.proof_path.display())?,
    }
    if let Some(path) = written {
        writeln!(out, "config    {}", path.display())?;
    }
    writeln!(out, "peer id   {}", done.peer_id())?;
    Ok(ExitCode::SUCCESS)
}

fn rpc_command(args: &RpcArgs) -> anyhow::Result<ExitCode> {
    if client::is_subscription(&args.method) {
        return follow_command(args);
    }
    let result = runtime()?.block_on(client::run(
        &args.url,
        args.token.as_deref(),
        &args.method,
        args.params.as_deref(),
        Duration::from_secs(args.timeout.max(1)),
    ));
    match result {
        Ok(value) => {
            println!("{}", serde_json::to_string_pretty(&value)?);
            Ok(ExitCode::SUCCESS)
        }
        Err(e @ ClientError::Rpc { .. }) => {
            eprintln!("{e}");
            Ok(ExitCode::FAILURE)
        }
        Err(e) => Err(e).with_context(|| format!("calling {} at {}", args.method, args.url)),
    }
}

/// `shoal rpc METHOD_subscribe [PARAMS]`: prints each notification as one line of JSON until
/// the node ends the subscription or Ctrl-C.
fn follow_command(args: &RpcArgs) -> anyhow::Result<ExitCode> {
    let stdout = std::io::stdout();
    let result = runtime()?.block_on(client::follow(
        args,
        async {
            let _ = tokio::signal::ctrl_c().await;
        },
        || eprintln!("following {} at {}; Ctrl-C stops", args.method, args.url),
        |item| {
            let mut out = stdout.lock();
            writeln!(out, "{item}")?;
            out.flush()
        },
    ));
    match result {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e @ ClientError::Rpc { .. }) => {
            eprintln!("{e}");
            Ok(ExitCode::FAILURE)
        }
        Err(e) => Err(e).with_context(|| format!("following {} at {}", args.method, args.url)),
    }
}
