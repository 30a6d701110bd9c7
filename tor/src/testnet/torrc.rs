//! torrc files for the authorities and relays of the private network.

use std::fmt::Write as _;
use std::path::Path;

/// The role of a node in the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// A directory authority (also a non-exit relay).
    Authority,
    /// A relay that exits to any address, loopback included.
    Exit,
    /// A relay that never exits.
    Middle,
}

/// What one torrc needs to know about its node.
pub(crate) struct NodeSpec<'a> {
    pub(crate) nickname: &'a str,
    pub(crate) role: Role,
    pub(crate) or_port: u16,
    pub(crate) dir_port: u16,
    pub(crate) data_dir: &'a Path,
}

/// One `DirAuthority` line's worth of facts.
pub(crate) struct AuthorityLine {
    pub(crate) nickname: String,
    pub(crate) or_port: u16,
    pub(crate) dir_port: u16,
    pub(crate) v3ident: String,
    pub(crate) rsa: String,
}

/// The torrc of `node`. `voting_interval` is in seconds; `owner_pid` is the process whose
/// death makes tor exit (so a crashed test leaves no tor behind).
pub(crate) fn torrc(
    node: &NodeSpec<'_>,
    authorities: &[AuthorityLine],
    voting_interval: u32,
    owner_pid: u32,
) -> String {
    let dir = node.data_dir.display();
    let mut s = String::new();
    let mut line = |l: &str| {
        s.push_str(l);
        s.push('\n');
    };
    for l in [
        "TestingTorNetwork 1",
        "PathsNeededToBuildCircuits 0.67",
        "TestingDirAuthVoteExit *",
        "TestingDirAuthVoteHSDir *",
        "TestingDirAuthVoteGuard *",
        "TestingMinExitFlagThreshold 0",
        "V3AuthNIntervalsValid 2",
        "RunAsDaemon 0",
        "ShutdownWaitLength 0",
        "SafeLogging 0",
        "Sandbox 0",
        "SocksPort 0",
        "Address 127.0.0.1",
        "AssumeReachable 1",
        "ServerDNSDetectHijacking 0",
        "ServerDNSTestAddresses",
        "ServerDNSAllowBrokenConfig 1",
        "ServerDNSResolvConfFile /dev/null",
    ] {
        line(l);
    }
    line(&format!("Nickname {}", node.nickname));
    line(&format!("DataDirectory {dir}"));
    line(&format!("PidFile {dir}/tor.pid"));
    line(&format!("Log notice file {dir}/notice.log"));
    line(&format!("ORPort 127.0.0.1:{}", node.or_port));
    line(&format!("DirPort 127.0.0.1:{}", node.dir_port));
    line(&format!("__OwningControllerProcess {owner_pid}"));
    match node.role {
        Role::Authority | Role::Middle => {
            line("ExitRelay 0");
            line("ExitPolicy reject *:*");
        }
        Role::Exit => {
            line("ExitRelay 1");
            line("ExitPolicyRejectPrivate 0");
            line("ExitPolicy accept 127.0.0.0/8:*");
            line("ExitPolicy accept private:*");
            line("ExitPolicy accept *:*");
        }
    }
    if node.role == Role::Authority {
        let half = (voting_interval / 5).max(2);
        line("AuthoritativeDirectory 1");
        line("V3AuthoritativeDirectory 1");
        line(&format!("ContactInfo {}@shoal.invalid", node.nickname));
        line(&format!(
            "TestingV3AuthInitialVotingInterval {voting_interval}"
        ));
        line(&format!("TestingV3AuthInitialVoteDelay {half}"));
        line(&format!("TestingV3AuthInitialDistDelay {half}"));
        line(&format!("V3AuthVotingInterval {voting_interval}"));
        line(&format!("V3AuthVoteDelay {half}"));
        line(&format!("V3AuthDistDelay {half}"));
    }
    for a in authorities {
        // Invariant: writing to a String cannot fail.
        writeln!(
            s,
            "DirAuthority {} orport={} no-v2 v3ident={} 127.0.0.1:{} {}",
            a.nickname, a.or_port, a.v3ident, a.dir_port, a.rsa
        )
        .expect("writing to a String succeeds");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_authority_torrc_votes_and_lists_every_authority() {
        let dir = Path::new("/tmp/net/auth0");
        let node = NodeSpec {
            nickname: "auth0",
            role: Role::Authority,
            or_port: 5000,
            dir_port: 5001,
            data_dir: dir,
        };
        let auths = [
            AuthorityLine {
                nickname: "auth0".into(),
                or_port: 5000,
                dir_port: 5001,
                v3ident: "A".repeat(40),
                rsa: "B".repeat(40),
            },
            AuthorityLine {
                nickname: "auth1".into(),
                or_port: 5002,
                dir_port: 5003,
                v3ident: "C".repeat(40),
                rsa: "D".repeat(40),
            },
        ];
        let text = torrc(&node, &auths, 20, 42);
        assert!(text.contains("V3AuthVotingInterval 20\n"));
        assert!(text.contains("V3AuthVoteDelay 4\n"));
        assert!(text.contains("ExitPolicy reject *:*\n"));
        assert!(text.contains("__OwningControllerProcess 42\n"));
        assert!(text.contains(&format!(
            "DirAuthority auth1 orport=5002 no-v2 v3ident={} 127.0.0.1:5003 {}\n",
            "C".repeat(40),
            "D".repeat(40)
        )));
        assert_eq!(text.matches("DirAuthority ").count(), 2);
    }

    #[test]
    fn an_exit_accepts_loopback_and_does_not_vote() {
        let node = NodeSpec {
            nickname: "exit0",
            role: Role::Exit,
            or_port: 1,
            dir_port: 2,
            data_dir: Path::new("/x"),
        };
        let text = torrc(&node, &[], 20, 1);
        assert!(text.contains("ExitPolicy accept 127.0.0.0/8:*\n"));
        assert!(!text.contains("AuthoritativeDirectory"));
    }
}
