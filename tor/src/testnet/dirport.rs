//! Asking a DirPort whether a usable consensus exists.

use std::io::{Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::Duration;

/// What a DirPort serves as its current microdescriptor consensus.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ConsensusSummary {
    /// Relays listed (`r` lines).
    pub(crate) relays: usize,
    /// Relays with the Running and Valid flags.
    pub(crate) running: usize,
    /// Relays with the Exit flag.
    pub(crate) exits: usize,
    /// Relays with the HSDir flag.
    pub(crate) hsdirs: usize,
}

/// Fetches the microdescriptor consensus from the DirPort at 127.0.0.1:`port` and summarises
/// it; `None` if there is none yet (or the port does not answer).
pub(crate) fn consensus(port: u16) -> Option<ConsensusSummary> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let timeout = Duration::from_secs(2);
    let mut stream = TcpStream::connect_timeout(&addr, timeout).ok()?;
    stream.set_read_timeout(Some(timeout)).ok()?;
    stream.set_write_timeout(Some(timeout)).ok()?;
    stream
        .write_all(
            b"GET /tor/status-vote/current/consensus-microdesc HTTP/1.0\r\n\
              Host: 127.0.0.1\r\n\r\n",
        )
        .ok()?;
    let mut body = Vec::new();
    stream.read_to_end(&mut body).ok()?;
    let text = String::from_utf8_lossy(&body);
    if !text.starts_with("HTTP/1.0 200") {
        return None;
    }
    Some(summarise(&text))
}

/// Counts relays and flags in a consensus document.
fn summarise(text: &str) -> ConsensusSummary {
    let mut summary = ConsensusSummary::default();
    for line in text.lines() {
        if line.starts_with("r ") {
            summary.relays += 1;
        } else if let Some(flags) = line.strip_prefix("s ") {
            let has = |flag: &str| flags.split(' ').any(|f| f == flag);
            if has("Running") && has("Valid") {
                summary.running += 1;
            }
            if has("Exit") {
                summary.exits += 1;
            }
            if has("HSDir") {
                summary.hsdirs += 1;
            }
        }
    }
    summary
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_are_counted() {
        let doc = "network-status-version 3 microdesc\n\
                   r a AAAA 2038-01-01 00:00:00 127.0.0.1 1 2\n\
                   s Exit Fast HSDir Running Stable V2Dir Valid\n\
                   r b BBBB 2038-01-01 00:00:00 127.0.0.1 3 4\n\
                   s Fast Running V2Dir\n";
        assert_eq!(
            summarise(doc),
            ConsensusSummary {
                relays: 2,
                running: 1,
                exits: 1,
                hsdirs: 1
            }
        );
    }

    #[test]
    fn a_closed_port_has_no_consensus() {
        let listener =
            std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind an ephemeral port");
        let port = listener.local_addr().expect("bound address").port();
        drop(listener);
        assert_eq!(consensus(port), None);
    }
}
