//! Onion addresses as multiaddrs, and their binding to libp2p peer identities.
//!
//! A v3 onion address is the base32 encoding of an ed25519 public key, a checksum and a version
//! byte. Shoal uses the node's ed25519 key as the onion service key, so the onion address and
//! the [`PeerId`] are two spellings of the same public key and each proves the other.

use std::fmt;
use std::str::FromStr;

use libp2p::identity::{PeerId, PublicKey};
use libp2p::multiaddr::{Multiaddr, Protocol};
use safelog::DisplayRedacted as _;
use tor_hscrypto::pk::HsId;

/// Why a multiaddr is not an onion address this transport can dial or listen on.
///
/// Returned by the parsers in this module; nothing is changed by a refusal.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum AddrError {
    /// The address names an IP host (`/ip4`, `/ip6`) or a DNS name (`/dns*`). This crate never
    /// touches IP: refused before any traffic.
    #[error("{0} names an IP or DNS host; the Tor transport only dials and listens on /onion3")]
    IpRefused(Multiaddr),
    /// The address does not start with `/onion3` (or is empty).
    #[error("{0} is not an /onion3 address")]
    NotOnion(Multiaddr),
    /// The onion part fails its checksum or version check.
    #[error("{0} holds a corrupt onion address (bad checksum or version)")]
    BadOnion(Multiaddr),
    /// Protocols follow the onion part other than one trailing `/p2p/<id>`.
    #[error("{0} has unsupported protocols after /onion3")]
    TrailingProtocols(Multiaddr),
    /// The onion service key is not a valid ed25519 point, so it cannot be a peer identity.
    #[error("{0} holds an onion key that is not a valid ed25519 public key")]
    BadKey(Multiaddr),
    /// The trailing `/p2p/<id>` names a peer whose key is not the onion key.
    #[error("{addr}: the onion key belongs to {onion_peer}, not to the claimed {claimed}")]
    PeerMismatch {
        /// The whole address as given.
        addr: Multiaddr,
        /// The peer the onion key belongs to.
        onion_peer: Box<PeerId>,
        /// The peer named in `/p2p/<id>`.
        claimed: Box<PeerId>,
    },
}

/// A parsed `/onion3/<56 base32 chars>:<port>[/p2p/<id>]`, checksum verified.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct OnionAddr {
    hsid: HsId,
    port: u16,
}

impl OnionAddr {
    /// The onion address of `key` at `port`.
    pub fn from_public_key(key: &ed25519_dalek::VerifyingKey, port: u16) -> Self {
        Self {
            hsid: HsId::from(key.to_bytes()),
            port,
        }
    }

    /// Parses a multiaddr. Accepts exactly `/onion3/..:port`, optionally followed by
    /// `/p2p/<id>`; when the `/p2p` part is present it must name the onion key's peer.
    pub fn parse(addr: &Multiaddr) -> Result<Self, AddrError> {
        let mut iter = addr.iter();
        let onion = match iter.next() {
            Some(Protocol::Onion3(onion)) => onion,
            Some(
                Protocol::Ip4(_)
                | Protocol::Ip6(_)
                | Protocol::Dns(_)
                | Protocol::Dns4(_)
                | Protocol::Dns6(_)
                | Protocol::Dnsaddr(_),
            ) => return Err(AddrError::IpRefused(addr.clone())),
            _ => return Err(AddrError::NotOnion(addr.clone())),
        };
        let hash: &[u8; 35] = onion.hash();
        let base32 = base32_lower(hash);
        let hsid = HsId::from_str(&format!("{base32}.onion"))
            .map_err(|_| AddrError::BadOnion(addr.clone()))?;
        let parsed = Self {
            hsid,
            port: onion.port(),
        };
        match (iter.next(), iter.next()) {
            (None, _) => {}
            (Some(Protocol::P2p(claimed)), None) => {
                let onion_peer = parsed
                    .peer_id()
                    .ok_or_else(|| AddrError::BadKey(addr.clone()))?;
                if onion_peer != claimed {
                    return Err(AddrError::PeerMismatch {
                        addr: addr.clone(),
                        onion_peer: Box::new(onion_peer),
                        claimed: Box::new(claimed),
                    });
                }
            }
            _ => return Err(AddrError::TrailingProtocols(addr.clone())),
        }
        Ok(parsed)
    }

    /// The virtual port of the onion service.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The 32-byte ed25519 public key that is the onion service identity.
    pub fn key_bytes(&self) -> [u8; 32] {
        *self.hsid.as_ref()
    }

    /// The host name, `<56 base32 chars>.onion`.
    pub fn host(&self) -> String {
        self.hsid.display_unredacted().to_string()
    }

    /// The peer whose ed25519 key is this onion key, or `None` if the key is not a valid
    /// ed25519 point (such an onion service cannot exist, so nothing can be dialled there).
    pub fn peer_id(&self) -> Option<PeerId> {
        let key = libp2p::identity::ed25519::PublicKey::try_from_bytes(&self.key_bytes()).ok()?;
        Some(PublicKey::from(key).to_peer_id())
    }

    /// The multiaddr `/onion3/<56 chars>:<port>`.
    pub fn to_multiaddr(&self) -> Multiaddr {
        let mut hash = [0u8; 35];
        let host = self.host();
        let base32 = host.trim_end_matches(".onion").to_ascii_uppercase();
        // Invariant: `HsId`'s display is 56 base32 characters of the 35-byte onion encoding.
        let decoded = base32_decode(&base32).expect("HsId displays as valid base32");
        hash.copy_from_slice(&decoded);
        Multiaddr::empty().with(Protocol::Onion3((hash, self.port).into()))
    }
}

impl fmt::Display for OnionAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.to_multiaddr())
    }
}

impl fmt::Debug for OnionAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "OnionAddr({self})")
    }
}

/// The `/onion3/<56 chars>:<port>` multiaddr of the node whose libp2p key is `key`.
///
/// Returns `None` if `key` is not an ed25519 key: only ed25519 keys can be onion keys.
pub fn onion_address_of(key: &PublicKey, port: u16) -> Option<Multiaddr> {
    let ed = key.clone().try_into_ed25519().ok()?;
    let verifying = ed25519_dalek::VerifyingKey::from_bytes(&ed.to_bytes()).ok()?;
    Some(OnionAddr::from_public_key(&verifying, port).to_multiaddr())
}

/// Whether `addr` is an onion address that belongs to `peer`: its onion key is `peer`'s ed25519
/// key (and any trailing `/p2p/<id>` names `peer` too).
///
/// Use it to refuse a peer that advertises an onion address that is not its own. Returns
/// `false` for every non-onion address.
pub fn onion_matches_peer(addr: &Multiaddr, peer: &PeerId) -> bool {
    match OnionAddr::parse(addr) {
        Ok(onion) => onion.peer_id().as_ref() == Some(peer),
        Err(_) => false,
    }
}

/// Whether `addr` names an IP host or a DNS name anywhere (`/ip4`, `/ip6`, `/ip6zone`, `/dns`,
/// `/dns4`, `/dns6`, `/dnsaddr`). A Tor-only node must never dial, listen on or advertise such
/// an address; use this to filter what identify, Kademlia or membership would send.
pub fn reveals_ip(addr: &Multiaddr) -> bool {
    addr.iter().any(|p| {
        matches!(
            p,
            Protocol::Ip4(_)
                | Protocol::Ip6(_)
                | Protocol::Ip6zone(_)
                | Protocol::Dns(_)
                | Protocol::Dns4(_)
                | Protocol::Dns6(_)
                | Protocol::Dnsaddr(_)
        )
    })
}

/// RFC 4648 base32 alphabet, as used in onion addresses.
const BASE32: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/// Lowercase unpadded base32 of 35 bytes (56 characters).
fn base32_lower(bytes: &[u8; 35]) -> String {
    let mut out = String::with_capacity(56);
    for chunk in bytes.chunks(5) {
        // Invariant: 35 is a multiple of 5, so every chunk holds 5 bytes = 40 bits.
        let mut acc = 0u64;
        for b in chunk {
            acc = (acc << 8) | u64::from(*b);
        }
        for i in (0..8).rev() {
            let idx = ((acc >> (i * 5)) & 31) as usize;
            out.push(char::from(BASE32[idx].to_ascii_lowercase()));
        }
    }
    out
}

/// Decodes 56 uppercase base32 characters into 35 bytes.
fn base32_decode(s: &str) -> Option<Vec<u8>> {
    if s.len() != 56 {
        return None;
    }
    let mut out = Vec::with_capacity(35);
    for chunk in s.as_bytes().chunks(8) {
        let mut acc = 0u64;
        for c in chunk {
            let v = BASE32.iter().position(|x| x == c)?;
            acc = (acc << 5) | v as u64;
        }
        for i in (0..5).rev() {
            out.push((acc >> (i * 8)) as u8);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keypair(seed: u8) -> libp2p::identity::Keypair {
        // Invariant: any 32 bytes are a valid ed25519 secret key.
        libp2p::identity::Keypair::ed25519_from_bytes([seed; 32]).expect("32-byte seed")
    }

    #[test]
    fn onion_of_a_key_parses_back_to_the_same_peer() {
        let kp = keypair(7);
        let addr = onion_address_of(&kp.public(), 4001).expect("ed25519 key");
        let parsed = OnionAddr::parse(&addr).expect("own onion parses");
        assert_eq!(parsed.port(), 4001);
        assert_eq!(parsed.peer_id(), Some(kp.public().to_peer_id()));
        assert_eq!(parsed.host().len(), 56 + ".onion".len());
        assert!(onion_matches_peer(&addr, &kp.public().to_peer_id()));
        assert!(!onion_matches_peer(
            &addr,
            &keypair(8).public().to_peer_id()
        ));
        assert_eq!(parsed.to_multiaddr(), addr);
    }

    #[test]
    fn a_published_onion_address_round_trips() {
        // The example address of rend-spec-v3 section 6 (the Tor Project's own site key).
        let host = "pg6mmjiyjmcrsslvykfwnntlaru7p5svn6y2ymmju6nubxndf4pscryd";
        let addr: Multiaddr = format!("/onion3/{host}:80")
            .parse()
            .expect("valid multiaddr");
        let parsed = OnionAddr::parse(&addr).expect("a real onion address");
        assert_eq!(parsed.host(), format!("{host}.onion"));
        let key = ed25519_dalek::VerifyingKey::from_bytes(&parsed.key_bytes()).expect("valid key");
        assert_eq!(OnionAddr::from_public_key(&key, 80).to_multiaddr(), addr);
        assert!(parsed.peer_id().is_some());
    }

    #[test]
    fn a_p2p_suffix_must_name_the_onion_key() {
        let a = keypair(1);
        let b = keypair(2);
        let onion = onion_address_of(&a.public(), 9).expect("ed25519 key");
        let good = onion.clone().with(Protocol::P2p(a.public().to_peer_id()));
        let bad = onion.with(Protocol::P2p(b.public().to_peer_id()));
        assert!(OnionAddr::parse(&good).is_ok());
        assert!(matches!(
            OnionAddr::parse(&bad),
            Err(AddrError::PeerMismatch { .. })
        ));
        assert!(!onion_matches_peer(&bad, &b.public().to_peer_id()));
        assert!(!onion_matches_peer(&bad, &a.public().to_peer_id()));
    }

    #[test]
    fn ip_and_dns_addresses_are_refused() {
        for text in [
            "/ip4/127.0.0.1/tcp/1",
            "/ip6/::1/tcp/1",
            "/dns/example.org/tcp/1",
            "/dns4/example.org/tcp/1",
        ] {
            let addr: Multiaddr = text.parse().expect("valid multiaddr");
            assert!(matches!(
                OnionAddr::parse(&addr),
                Err(AddrError::IpRefused(_))
            ));
            assert!(!onion_matches_peer(
                &addr,
                &keypair(1).public().to_peer_id()
            ));
        }
        let memory: Multiaddr = "/memory/5".parse().expect("valid multiaddr");
        assert!(matches!(
            OnionAddr::parse(&memory),
            Err(AddrError::NotOnion(_))
        ));
    }

    #[test]
    fn a_corrupted_checksum_is_refused() {
        let onion = onion_address_of(&keypair(3).public(), 1).expect("ed25519 key");
        let Some(Protocol::Onion3(o)) = onion.iter().next() else {
            panic!("onion_address_of returns an /onion3 address");
        };
        let mut hash = *o.hash();
        hash[33] ^= 1;
        let corrupt = Multiaddr::empty().with(Protocol::Onion3((hash, 1).into()));
        assert!(matches!(
            OnionAddr::parse(&corrupt),
            Err(AddrError::BadOnion(_))
        ));
    }

    #[test]
    fn trailing_protocols_are_refused() {
        let onion = onion_address_of(&keypair(3).public(), 1).expect("ed25519 key");
        let extra = onion.with(Protocol::Tcp(5));
        assert!(matches!(
            OnionAddr::parse(&extra),
            Err(AddrError::TrailingProtocols(_))
        ));
    }
}
