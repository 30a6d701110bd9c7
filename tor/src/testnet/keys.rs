//! Key generation for the private network: authority certificates and relay identities.

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};

use super::TestNetError;

/// The identities of one tor node.
#[derive(Debug, Clone)]
pub(crate) struct NodeIdentity {
    /// RSA identity fingerprint, 40 uppercase hex digits.
    pub(crate) rsa: String,
    /// ed25519 identity, unpadded base64.
    pub(crate) ed: String,
}

/// Runs `tor-gencert` for an authority whose DirPort is `dir_port`; returns its v3ident.
pub(crate) fn authority_certificate(
    gencert: &Path,
    data_dir: &Path,
    dir_port: u16,
) -> Result<String, TestNetError> {
    let keys = data_dir.join("keys");
    std::fs::create_dir_all(&keys).map_err(TestNetError::io("create the keys directory"))?;
    let mut child = Command::new(gencert)
        .current_dir(data_dir)
        .args([
            "--create-identity-key",
            "--passphrase-fd",
            "0",
            "-i",
            "keys/authority_identity_key",
            "-s",
            "keys/authority_signing_key",
            "-c",
            "keys/authority_certificate",
            "-m",
            "12",
            "-a",
        ])
        .arg(format!("127.0.0.1:{dir_port}"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| TestNetError::spawn(gencert, e))?;
    if let Some(mut stdin) = child.stdin.take() {
        // An empty passphrase, then end of input.
        stdin
            .write_all(b"\n")
            .map_err(TestNetError::io("write to tor-gencert"))?;
    }
    let out = child
        .wait_with_output()
        .map_err(TestNetError::io("wait for tor-gencert"))?;
    if !out.status.success() {
        return Err(TestNetError::Tool {
            tool: "tor-gencert",
            output: String::from_utf8_lossy(&out.stderr).into_owned(),
        });
    }
    let cert_path = keys.join("authority_certificate");
    let cert = std::fs::read_to_string(&cert_path)
        .map_err(TestNetError::io("read authority_certificate"))?;
    cert.lines()
        .find_map(|line| line.strip_prefix("fingerprint "))
        .map(|fp| fp.trim().to_owned())
        .filter(|fp| is_hex40(fp))
        .ok_or(TestNetError::BadKeyFile(cert_path))
}

/// Has tor create the relay keys in `data_dir` and returns its identities.
pub(crate) fn relay_identity(tor: &Path, data_dir: &Path) -> Result<NodeIdentity, TestNetError> {
    std::fs::create_dir_all(data_dir).map_err(TestNetError::io("create a data directory"))?;
    let out = Command::new(tor)
        .args(["--ignore-missing-torrc", "-f", "/dev/null", "--orport", "1"])
        .arg("--datadirectory")
        .arg(data_dir)
        .arg("--list-fingerprint")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| TestNetError::spawn(tor, e))?;
    if !out.status.success() {
        return Err(TestNetError::Tool {
            tool: "tor --list-fingerprint",
            output: String::from_utf8_lossy(&out.stdout).into_owned(),
        });
    }
    let rsa_path = data_dir.join("fingerprint");
    let ed_path = data_dir.join("fingerprint-ed25519");
    let rsa = std::fs::read_to_string(&rsa_path).map_err(TestNetError::io("read fingerprint"))?;
    let ed =
        std::fs::read_to_string(&ed_path).map_err(TestNetError::io("read fingerprint-ed25519"))?;
    // Both files hold "<nickname> <value>".
    let rsa = rsa
        .split_whitespace()
        .nth(1)
        .filter(|fp| is_hex40(fp))
        .ok_or(TestNetError::BadKeyFile(rsa_path))?
        .to_owned();
    let ed = ed
        .split_whitespace()
        .nth(1)
        .filter(|id| id.len() == 43)
        .ok_or(TestNetError::BadKeyFile(ed_path))?
        .to_owned();
    Ok(NodeIdentity { rsa, ed })
}

/// Whether `s` is 40 hexadecimal digits.
fn is_hex40(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit())
}
