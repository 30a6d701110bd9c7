//! `shoal tor-testnet`: a private Tor network on loopback (3 directory authorities, 2 exits,
//! 2 middle relays, run with Debian's `tor`), so a user can try Tor-only nodes without touching
//! the public Tor network. It writes the `[tor]` table nodes need to `DIR/tor.toml`, prints it,
//! and runs until Ctrl-C or SIGTERM, then stops every `tor` it started.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;
use shoal_tor::testnet::{TestNetConfig, TestNetError, TestNetwork};

use crate::tor::TorConfig;

/// The file, in the network's directory, holding the `[tor]` table for nodes.
pub const TOR_TABLE_FILE: &str = "tor.toml";

/// Why the private network could not run.
#[derive(Debug, thiserror::Error)]
pub enum TorTestnetError {
    /// The network did not start (missing `tor`, no consensus in time, ...). Nothing runs.
    #[error("private Tor network: {0}")]
    Start(#[from] TestNetError),
    /// The directory or the `[tor]` file could not be written. The network was stopped.
    #[error("writing {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The waiting task failed.
    #[error("the start task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
}

#[derive(Serialize)]
struct Table<'a> {
    tor: &'a TorConfig,
}

/// The `[tor]` table for nodes of `network`, as TOML.
pub fn tor_table(network: &TestNetwork) -> String {
    let tor = TorConfig::for_private_network(&network.private_network());
    // Serialising a plain struct of strings, numbers and lists cannot fail.
    toml::to_string(&Table { tor: &tor }).unwrap_or_default()
}

/// Starts a private network in `dir` (kept after exit) and returns it with the path of the
/// `[tor]` file written there.
pub async fn start(dir: &Path) -> Result<(TestNetwork, PathBuf), TorTestnetError> {
    std::fs::create_dir_all(dir).map_err(|source| TorTestnetError::Write {
        path: dir.to_owned(),
        source,
    })?;
    let config = TestNetConfig {
        dir: Some(dir.to_owned()),
        ..TestNetConfig::default()
    };
    let network = tokio::task::spawn_blocking(move || TestNetwork::start(config)).await??;
    let path = dir.join(TOR_TABLE_FILE);
    std::fs::write(&path, tor_table(&network)).map_err(|source| TorTestnetError::Write {
        path: path.clone(),
        source,
    })?;
    Ok((network, path))
}

/// Runs `shoal tor-testnet`: starts the network, prints how to use it, waits for a signal.
pub async fn run(dir: &Path) -> Result<(), TorTestnetError> {
    let started = Instant::now();
    eprintln!(
        "starting a private Tor network in {} (15-60 s)",
        dir.display()
    );
    let (mut network, path) = start(dir).await?;
    println!("{}", tor_table(&network));
    println!(
        "private Tor network ready in {:.0} s; its [tor] table is in {}.\n\
         Add it to a node's config with p2p.transport = \"tor\" (or \"both\") and \
         p2p.listen = [] for a Tor-only node. Ctrl-C stops the network.",
        started.elapsed().as_secs_f64(),
        path.display()
    );
    wait_for_signal().await;
    network.stop();
    eprintln!("private Tor network stopped");
    Ok(())
}

async fn wait_for_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async {
            match term.as_mut() {
                Some(t) => { t.recv().await; }
                None => std::future::pending::<()>().await,
            }
        } => {}
    }
}
