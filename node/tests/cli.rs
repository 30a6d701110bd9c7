//! The `shoal` command line, run as a process: config files, init, run's errors, the precedence
//! of flags over environment over file, and a 3-node testnet that stops cleanly on SIGINT.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use shoal_dht::PublicKeyExt;
use shoal_node::config::{Config, LogFormat, Network};
use shoal_pow::{IdentityProof, Puzzle};

/// The variables `shoal` reads; cleared so the caller's environment cannot leak in.
const SHOAL_VARS: [&str; 10] = [
    "SHOAL_CONFIG",
    "SHOAL_DATA_DIR",
    "SHOAL_NETWORK",
    "SHOAL_LISTEN",
    "SHOAL_SEEDS",
    "SHOAL_RPC_LISTEN",
    "SHOAL_RPC_TOKEN",
    "SHOAL_LOG_FORMAT",
    "SHOAL_LOG",
    "SHOAL_RPC_URL",
];

fn shoal() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_shoal"));
    for var in SHOAL_VARS {
        command.env_remove(var);
    }
    command
}

/// Runs a command that should exit by itself, killing it after 60 s (a hang fails the test
/// instead of stalling it).
fn run(command: &mut Command) -> Output {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the shoal binary runs");
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().expect("wait").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("output")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn config_default_parses_back_to_the_defaults() {
    let out = run(shoal().args(["config", "default"]));
    assert!(out.status.success(), "{}", stderr(&out));
    let parsed: Config = toml::from_str(&stdout(&out)).expect("the default file parses");
    assert_eq!(parsed, Config::default());
}

#[test]
fn init_creates_a_private_key_and_a_valid_proof_and_refuses_to_overwrite() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = tmp.path().join("data");
    let init = |extra: &[&str]| {
        let mut c = shoal();
        c.args(["init", "--quiet", "--network", "testnet", "--data-dir"])
            .arg(&dir)
            .args(extra);
        run(&mut c)
    };
    let out = init(&[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let peer = peer_line(&stdout(&out));

    let key = dir.join("node.key");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key)
            .expect("key written")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let proof = std::fs::read(dir.join("identity.proof")).expect("proof written");
    assert_eq!(proof.len(), 40);
    let proof = IdentityProof::from_bytes(&proof).expect("a proof");
    let puzzle = Puzzle::new(Network::Testnet.preset().puzzle).expect("preset is valid");
    puzzle
        .verify(&proof)
        .expect("the proof solves the testnet puzzle");
    assert_eq!(proof.key.peer_id().to_string(), peer);
    // The written config records the network, so `shoal run --data-dir` finds it.
    let config = Config::load(&dir.join("shoal.toml")).expect("config written");
    assert_eq!(config.network, Network::Testnet);

    let again = init(&[]);
    assert!(!again.status.success());
    assert!(stderr(&again).contains("--force"), "{}", stderr(&again));

    let forced = init(&["--force"]);
    assert!(forced.status.success(), "{}", stderr(&forced));
    assert_ne!(peer_line(&stdout(&forced)), peer);
}

fn peer_line(out: &str) -> String {
    out.lines()
        .find_map(|l| l.strip_prefix("peer id"))
        .map(|p| p.trim().to_owned())
        .unwrap_or_else(|| panic!("no peer id line in {out}"))
}

#[test]
fn run_without_a_key_says_to_run_init() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let out = run(shoal().arg("run").arg("--data-dir").arg(tmp.path()));
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("run `shoal init"), "{err}");
}

#[test]
fn run_refuses_a_proof_that_does_not_solve_the_network_puzzle() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let out = run(shoal()
        .args(["init", "--quiet", "--network", "local", "--data-dir"])
        .arg(tmp.path()));
    assert!(out.status.success(), "{}", stderr(&out));
    // Replace the proof with one for the same key that fails the testnet puzzle.
    let key = shoal_pow::NodeKey::load(&tmp.path().join("node.key")).expect("key");
    let puzzle = Puzzle::new(Network::Testnet.preset().puzzle).expect("preset is valid");
    let bad = (0u64..)
        .map(|nonce| IdentityProof {
            key: key.public(),
            nonce,
        })
        .find(|p| puzzle.verify(p).is_err())
        .expect("most nonces fail");
    std::fs::write(tmp.path().join("identity.proof"), bad.to_bytes()).expect("write");
    let out = run(shoal()
        .args(["run", "--network", "testnet", "--rpc-listen", "127.0.0.1:0"])
        .args(["--listen", "/ip4/127.0.0.1/tcp/0", "--data-dir"])
        .arg(tmp.path()));
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("does not solve") && err.contains("mints a proof for the existing key"),
        "{err}"
    );
}

#[test]
fn bad_config_names_the_file_and_the_field() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let file = tmp.path().join("bad.toml");
    std::fs::write(&file, "[p2p]\nseeds = [\"/ip4/127.0.0.1/tcp/1\"]\n").expect("write");
    let out = run(shoal().args(["config", "show", "--config"]).arg(&file));
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("bad.toml") && err.contains("p2p.seeds"),
        "{err}"
    );
    std::fs::write(&file, "[p2p]\ntransport = \"tor\"\n").expect("write");
    let err = stderr(&run(shoal()
        .args(["config", "show", "--config"])
        .arg(&file)));
    assert!(
        err.contains("p2p.listen") && err.contains("Tor-only"),
        "a Tor-only node with the default TCP listen address is refused: {err}"
    );
}

#[test]
fn flags_beat_environment_beats_file_beats_defaults() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let file = tmp.path().join("shoal.toml");
    std::fs::write(
        &file,
        "network = \"local\"\ndata_dir = \"/from/file\"\n\
         [p2p]\nlisten = [\"/ip4/127.0.0.1/tcp/1\"]\n[log]\nlevel = \"warn\"\n",
    )
    .expect("write");
    let show = |env: &[(&str, &str)], flags: &[&str]| -> Config {
        let mut c = shoal();
        c.args(["config", "show", "--config"])
            .arg(&file)
            .args(flags);
        for (k, v) in env {
            c.env(k, v);
        }
        let out = run(&mut c);
        assert!(out.status.success(), "{}", stderr(&out));
        toml::from_str(&stdout(&out)).expect("shown config parses")
    };

    let file_only = show(&[], &[]);
    assert_eq!(file_only.network, Network::Local);
    assert_eq!(file_only.data_dir, PathBuf::from("/from/file"));
    assert_eq!(file_only.log.level, "warn");
    assert_eq!(file_only.log.format, LogFormat::Human, "default kept");

    let env = [
        ("SHOAL_DATA_DIR", "/from/env"),
        ("SHOAL_NETWORK", "testnet"),
        ("SHOAL_LOG_FORMAT", "json"),
        (
            "SHOAL_SEEDS",
            "/ip4/127.0.0.1/tcp/2/p2p/12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA",
        ),
        ("SHOAL_RPC_LISTEN", "127.0.0.1:9999"),
        ("SHOAL_RPC_TOKEN", "a-token-of-sixteen-or-more"),
    ];
    let with_env = show(&env, &[]);
    assert_eq!(with_env.data_dir, PathBuf::from("/from/env"));
    assert_eq!(with_env.network, Network::Testnet);
    assert_eq!(with_env.log.format, LogFormat::Json);
    assert_eq!(with_env.p2p.seeds.len(), 1);
    assert_eq!(with_env.rpc.listen.port(), 9999);
    assert_eq!(
        with_env.rpc.auth_token.as_deref(),
        Some("(set, hidden)"),
        "the token is set but never printed"
    );
    assert_eq!(with_env.log.level, "warn", "file value kept");
    assert_eq!(
        with_env.p2p.listen,
        vec!["/ip4/127.0.0.1/tcp/1"],
        "file value kept"
    );

    let with_flags = show(
        &env,
        &[
            "--data-dir",
            "/from/flag",
            "--network",
            "main",
            "--log",
            "debug",
        ],
    );
    assert_eq!(with_flags.data_dir, PathBuf::from("/from/flag"));
    assert_eq!(with_flags.network, Network::Main);
    assert_eq!(with_flags.log.level, "debug");
    assert_eq!(with_flags.log.format, LogFormat::Json, "environment kept");
}

/// Kills the testnet if the test fails before stopping it.
struct Reap(Child);

impl Drop for Reap {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[cfg(unix)]
fn alive(pid: i32) -> bool {
    // SAFETY: kill with signal 0 only checks that the process exists.
    unsafe { libc::kill(pid, 0) == 0 }
}

#[cfg(unix)]
#[test]
fn testnet_of_three_answers_and_stops_on_sigint() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = tmp.path().join("net");
    let started = Instant::now();
    let child = shoal()
        .args(["testnet", "--nodes", "3", "--ready-timeout", "45", "--dir"])
        .arg(&dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("testnet starts");
    let mut testnet = Reap(child);
    let (tx, rx) = mpsc::channel();
    let out = testnet.0.stdout.take().expect("piped stdout");
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let mut lines = Vec::new();
    let deadline = started + Duration::from_secs(50);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if line.starts_with("testnet ready") => {
                assert_eq!(line, "testnet ready: 3 nodes (Ctrl-C to stop)");
                break;
            }
            Ok(line) => lines.push(line),
            Err(_) => {
                let _ = testnet.0.kill();
                let mut err = String::new();
                if let Some(mut pipe) = testnet.0.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut pipe, &mut err);
                }
                panic!("testnet not ready: {lines:?}\n{err}");
            }
        }
    }
    eprintln!(
        "testnet of 3 ready in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(lines.len(), 3, "{lines:?}");
    let mut pids = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let words: Vec<&str> = line.split_whitespace().collect();
        // node I  URL  peer ID  pid PID  config PATH
        assert_eq!(words[..2], ["node", &(i + 1).to_string()[..]], "{line}");
        let url = words[2];
        assert!(url.starts_with("http://127.0.0.1:"), "{line}");
        assert_eq!(words[5], "pid");
        pids.push(words[6].parse::<i32>().expect("a pid"));
        assert_eq!(
            Path::new(words[8]),
            dir.join(format!("node-{}", i + 1))
                .join("shoal.toml")
                .as_path()
        );
        let info = run(shoal().args(["rpc", "node_info", "--url", url]));
        assert!(info.status.success(), "{}", stderr(&info));
        let info: serde_json::Value = serde_json::from_slice(&info.stdout).expect("JSON result");
        assert_eq!(info["peer_id"], words[4], "{info}");
        assert_eq!(info["network"], "testnet", "{info}");
    }
    let unknown = run(shoal().args([
        "rpc",
        "no_such_method",
        "--url",
        lines[0].split_whitespace().nth(2).unwrap_or(""),
    ]));
    assert_eq!(unknown.status.code(), Some(1));
    assert!(stderr(&unknown).contains("-32601"), "{}", stderr(&unknown));
    assert!(pids.iter().all(|p| alive(*p)));

    // SAFETY: kill(2) on our own child's pid.
    let pid = i32::try_from(testnet.0.id()).expect("pid fits");
    assert_eq!(unsafe { libc::kill(pid, libc::SIGINT) }, 0);
    let stop_deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = testnet.0.try_wait().expect("wait") {
            break status;
        }
        assert!(Instant::now() < stop_deadline, "testnet did not stop");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}");
    for pid in pids {
        assert!(!alive(pid), "node pid {pid} still running");
    }
    for i in 1..=3 {
        let node = dir.join(format!("node-{i}"));
        assert!(
            !node.join("rpc.url").exists(),
            "node {i} did not shut down cleanly"
        );
        let log = std::fs::read_to_string(node.join("node.log")).expect("node log");
        assert!(log.contains("node stopped"), "{log}");
    }
}
