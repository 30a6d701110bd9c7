//! The command line of the simulator benchmarks: `--bench` (which `cargo bench` adds) asks for
//! the full run's defaults; without it (as under `cargo test --benches`) the short ones apply.

// Each benchmark binary includes this module and uses part of it.
#![allow(dead_code)]

use std::str::FromStr;

/// The arguments after the binary's name.
pub(crate) struct Args {
    args: Vec<String>,
    /// Whether this is a full run (`--bench` given).
    pub(crate) full: bool,
}

impl Args {
    /// This process's arguments.
    pub(crate) fn parse() -> Self {
        let args: Vec<String> = std::env::args().skip(1).collect();
        let full = args.iter().any(|a| a == "--bench");
        Self { args, full }
    }

    /// The word after `name`, if `name` is given.
    pub(crate) fn value(&self, name: &str) -> Option<String> {
        self.args
            .iter()
            .position(|a| a == name)
            .and_then(|i| self.args.get(i + 1))
            .cloned()
    }

    /// Whether the flag `name` is given.
    pub(crate) fn flag(&self, name: &str) -> bool {
        self.args.iter().any(|a| a == name)
    }

    /// The number after `name`, or the full run's or the short run's default.
    pub(crate) fn number<T: FromStr>(&self, name: &str, full: T, short: T) -> T {
        self.value(name)
            .and_then(|v| v.parse().ok())
            .unwrap_or(if self.full { full } else { short })
    }

    /// The comma-separated list after `name`, if given (entries that do not parse are skipped).
    pub(crate) fn list<T: FromStr>(&self, name: &str) -> Option<Vec<T>> {
        self.value(name)
            .map(|s| s.split(',').filter_map(|x| x.trim().parse().ok()).collect())
    }
}
