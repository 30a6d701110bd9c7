//! The libp2p [`Transport`](libp2p::core::Transport) over arti.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use arti_client::{BootstrapBehavior, DataStream, TorClient};
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::{FutureExt as _, StreamExt as _};
use libp2p::Multiaddr;
use libp2p::core::transport::{DialOpts, ListenerId, TransportError, TransportEvent};
use libp2p::multiaddr::Protocol;
use tor_hsservice::HsNickname;
use tor_hsservice::config::OnionServiceConfigBuilder;
use tor_rtcompat::PreferredRuntime;

use crate::address::{AddrError, OnionAddr};
use crate::config::{Config, ConfigError};
use crate::dial::{self, DialFailure, DialPolicy};
use crate::key;
use crate::listener::{Listener, ListenerEvent};

/// Errors of the Tor transport.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration is invalid; nothing was started.
    #[error("invalid configuration")]
    Config(#[from] ConfigError),
    /// No tokio runtime is running; nothing was started.
    #[error("the Tor transport needs a running tokio runtime")]
    NoRuntime(#[source] std::io::Error),
    /// The onion-service state an earlier run left in `state_dir` could not be removed;
    /// nothing was started.
    #[error("cannot remove the stale onion-service state at {path}")]
    StaleState {
        /// The directory.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// arti could not be created or failed to bootstrap; nothing is running.
    #[error("arti failed to start or bootstrap")]
    Bootstrap(#[source] arti_client::Error),
    /// arti did not bootstrap within `bootstrap_timeout`; nothing is running.
    #[error("arti did not bootstrap within {0:?}")]
    BootstrapTimeout(std::time::Duration),
    /// The address is an onion address this transport refuses (corrupt, wrong `/p2p`
    /// suffix, trailing protocols). No traffic was sent.
    #[error("refused address")]
    Addr(#[from] AddrError),
    /// `listen_on` named an onion address whose key is not this node's key. Nothing was
    /// launched.
    #[error("{0} is not this node's onion address")]
    NotOurOnion(Multiaddr),
    /// Onion port 0 is not a valid virtual port. Nothing was launched.
    #[error("onion port 0 is not valid")]
    ZeroPort,
    /// The onion service is already running on this transport (one listener at a time).
    #[error("this transport already listens on {0}")]
    AlreadyListening(Multiaddr),
    /// arti could not launch the onion service; nothing is listening.
    #[error("arti could not launch the onion service")]
    Launch(#[source] arti_client::Error),
    /// arti launched nothing because the service config is disabled (cannot happen with the
    /// configs this crate builds).
    #[error("the onion service is disabled")]
    ServiceDisabled,
    /// Every dial attempt failed; the number of attempts and the last failure are given.
    /// Retrying later may succeed (the service may not be published yet).
    #[error("dialling {addr} failed after {attempts} attempt(s)")]
    Dial {
        /// The onion address dialled.
        addr: Multiaddr,
        /// Attempts made.
        attempts: u32,
        /// Why the last one failed.
        #[source]
        last: DialFailure,
    },
    /// Accepting an incoming onion stream failed; the listener keeps running.
    #[error("accepting an incoming onion stream failed")]
    Accept(#[source] Box<tor_hsservice::ClientError>),
}

/// The future of an incoming or outgoing connection.
type Upgrade = BoxFuture<'static, Result<DataStream, Error>>;

/// The wildcard listen address: listen on this node's own onion address at `port`.
///
/// It is the all-zero `/onion3` (which fails the onion checksum, so it is never a real
/// address), the counterpart of `0.0.0.0`. [`Transport`] reports the real address as a new
/// listen address.
pub fn any_onion(port: u16) -> Multiaddr {
    Multiaddr::empty().with(Protocol::Onion3(([0u8; 35], port).into()))
}

/// A libp2p transport whose connections are arti streams to and from onion services.
///
/// It dials only `/onion3/...:port` (optionally with a trailing `/p2p/<id>` naming the onion
/// key's peer) and listens only on this node's own onion address, launching an onion service
/// whose key is the node key. Every other address — `/ip4`, `/ip6`, `/dns`, ... — is answered
/// with [`TransportError::MultiaddrNotSupported`] before anything is sent, so the transport can
/// be combined with TCP through [`libp2p::core::Transport::or_transport`] while never touching
/// IP itself. Upgrade its output with noise and yamux as for TCP.
pub struct Transport {
    client: Arc<TorClient<PreferredRuntime>>,
    node_key: ed25519_dalek::SigningKey,
    policy: DialPolicy,
    listeners: Vec<Listener>,
    pending: VecDeque<TransportEvent<Upgrade, Error>>,
    rejections: FuturesUnordered<BoxFuture<'static, ()>>,
    launched: u32,
    waker: Option<Waker>,
}

impl Transport {
    /// A transport whose onion key is `node_key`, with an arti client that bootstraps on first
    /// use (the first dial or listen) rather than now. Must run inside a tokio runtime. Opens
    /// (and locks) arti's state directory but sends nothing.
    pub fn new(config: Config, node_key: ed25519_dalek::SigningKey) -> Result<Self, Error> {
        let arti_config = crate::arti::client_config(&config)?;
        if let Some(dir) = &config.state_dir {
            remove_stale_service_state(dir)?;
        }
        // arti's TLS to relays is rustls, which takes its crypto from a provider installed
        // once per process; a second install (another transport) fails harmlessly.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let runtime = PreferredRuntime::current().map_err(Error::NoRuntime)?;
        let client = TorClient::with_runtime(runtime)
            .config(arti_config)
            .bootstrap_behavior(BootstrapBehavior::OnDemand)
            .create_unbootstrapped()
            .map_err(Error::Bootstrap)?;
        Ok(Self {
            client,
            node_key,
            policy: DialPolicy {
                attempts: config.dial_attempts.get(),
                backoff_min: config.dial_backoff_min,
                backoff_max: config.dial_backoff_max,
                timeout: config.connect_timeout,
            },
            listeners: Vec::new(),
            pending: VecDeque::new(),
            rejections: FuturesUnordered::new(),
            launched: 0,
            waker: None,
        })
    }

    /// [`Transport::new`], then waits (at most `config.bootstrap_timeout`) until arti has a
    /// usable directory. Start Tor-dependent work after this returns.
    pub async fn bootstrap(
        config: Config,
        node_key: ed25519_dalek::SigningKey,
    ) -> Result<Self, Error> {
        let limit = config.bootstrap_timeout;
        let transport = Self::new(config, node_key)?;
        let started = std::time::Instant::now();
        tokio::time::timeout(limit, transport.client.bootstrap())
            .await
            .map_err(|_| Error::BootstrapTimeout(limit))?
            .map_err(Error::Bootstrap)?;
        tracing::info!(elapsed = ?started.elapsed(), "arti bootstrapped");
        Ok(transport)
    }

    /// This node's onion address at `port`.
    pub fn onion_address(&self, port: u16) -> Multiaddr {
        OnionAddr::from_public_key(&self.node_key.verifying_key(), port).to_multiaddr()
    }

    /// The arti client, for callers that need Tor beyond this transport.
    pub fn tor_client(&self) -> &Arc<TorClient<PreferredRuntime>> {
        &self.client
    }

    /// Launches the onion service on `port` and registers its listener.
    fn launch(&mut self, id: ListenerId, port: u16) -> Result<(), Error> {
        if let Some(existing) = self.listeners.first() {
            return Err(Error::AlreadyListening(existing.addr.clone()));
        }
        let addr = self.onion_address(port);
        // A fresh nickname per launch: the in-memory keystore refuses to overwrite the key of
        // a nickname it has seen, and a listener may be removed and added again.
        self.launched += 1;
        // Invariant: "shoal" followed by digits is a valid nickname (letters, digits, '-').
        let nickname = HsNickname::new(format!("shoal{}", self.launched))
            .expect("shoal<digits> is a valid onion service nickname");
        let mut builder = OnionServiceConfigBuilder::default();
        builder.nickname(nickname);
        let service_config = builder
            .build()
            .map_err(|e| Error::Config(ConfigError::Arti(e.to_string())))?;
        let hsid = key::onion_keypair(&self.node_key);
        debug_assert_eq!(
            key::onion_public_bytes(&hsid),
            self.node_key.verifying_key().to_bytes()
        );
        let (service, rend_requests) = self
            .client
            .launch_onion_service_with_hsid(service_config, hsid)
            .map_err(Error::Launch)?
            .ok_or(Error::ServiceDisabled)?;
        let requests = tor_hsservice::handle_rend_requests(rend_requests).boxed();
        tracing::info!(%addr, "onion service launched");
        self.listeners
            .push(Listener::new(id, addr, port, service, requests));
        if let Some(waker) = self.waker.take() {
            waker.wake();
        }
        Ok(())
    }

    /// Interprets a listen address: the node's own onion address or [`any_onion`].
    fn listen_port(&self, addr: &Multiaddr) -> Result<u16, TransportError<Error>> {
        let mut iter = addr.iter();
        let port = match (iter.next(), iter.next()) {
            (Some(Protocol::Onion3(onion)), None) if onion.hash() == &[0u8; 35] => onion.port(),
            (Some(Protocol::Onion3(_)), _) => {
                let onion = OnionAddr::parse(addr).map_err(|e| TransportError::Other(e.into()))?;
                if onion.key_bytes() != self.node_key.verifying_key().to_bytes() {
                    return Err(TransportError::Other(Error::NotOurOnion(addr.clone())));
                }
                onion.port()
            }
            _ => return Err(TransportError::MultiaddrNotSupported(addr.clone())),
        };
        if port == 0 {
            return Err(TransportError::Other(Error::ZeroPort));
        }
        Ok(port)
    }
}

/// Removes the onion-service state an earlier run left in arti's state directory `dir`.
///
/// arti records its introduction points there (`hss/<nickname>/`) and keeps their keys in the
/// keystore, which here is in memory only. After a restart it would restore those introduction
/// points without their keys and publish under regenerated ones (logging a "bug" for each)
/// while clients still hold the earlier descriptor; seen on the test network as a restarted
/// service that no client reached for minutes. Without the records, a restart starts the
/// service as new, as its first launch did. Only a directory this transport owns is touched
/// (`Config::state_dir` set; never arti's shared default).
fn remove_stale_service_state(dir: &std::path::Path) -> Result<(), Error> {
    let path = dir.join("hss");
    match std::fs::remove_dir_all(&path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(Error::StaleState { path, source }),
    }
}

impl libp2p::core::Transport for Transport {
    type Output = DataStream;
    type Error = Error;
    type ListenerUpgrade = Upgrade;
    type Dial = Upgrade;

    fn listen_on(&mut self, id: ListenerId, addr: Multiaddr) -> Result<(), TransportError<Error>> {
        let port = self.listen_port(&addr)?;
        self.launch(id, port).map_err(TransportError::Other)
    }

    fn remove_listener(&mut self, id: ListenerId) -> bool {
        let Some(index) = self.listeners.iter().position(|l| l.id == id) else {
            return false;
        };
        // Dropping the listener drops the running service, which stops it.
        let listener = self.listeners.remove(index);
        self.pending.push_back(TransportEvent::AddressExpired {
            listener_id: id,
            listen_addr: listener.addr.clone(),
        });
        self.pending.push_back(TransportEvent::ListenerClosed {
            listener_id: id,
            reason: Ok(()),
        });
        if let Some(waker) = self.waker.take() {
            waker.wake();
        }
        true
    }

    fn dial(
        &mut self,
        addr: Multiaddr,
        _opts: DialOpts,
    ) -> Result<Self::Dial, TransportError<Error>> {
        let onion = match OnionAddr::parse(&addr) {
            Ok(onion) => onion,
            Err(AddrError::IpRefused(_) | AddrError::NotOnion(_)) => {
                tracing::debug!(%addr, "refusing a non-onion address");
                return Err(TransportError::MultiaddrNotSupported(addr));
            }
            Err(e) => return Err(TransportError::Other(e.into())),
        };
        if onion.peer_id().is_none() {
            return Err(TransportError::Other(AddrError::BadKey(addr).into()));
        }
        let client = Arc::clone(&self.client);
        let policy = self.policy;
        Ok(async move {
            dial::connect(client, onion, policy)
                .await
                .map_err(|(attempts, last)| Error::Dial {
                    addr: onion.to_multiaddr(),
                    attempts,
                    last,
                })
        }
        .boxed())
    }

    fn poll(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<TransportEvent<Self::ListenerUpgrade, Error>> {
        let this = self.get_mut();
        while let Poll::Ready(Some(())) = this.rejections.poll_next_unpin(cx) {}
        if let Some(event) = this.pending.pop_front() {
            return Poll::Ready(event);
        }
        let mut index = 0;
        while index < this.listeners.len() {
            let rejections = &this.rejections;
            let listener = &mut this.listeners[index];
            let event = listener.poll_event(cx, &mut |fut| rejections.push(fut));
            match event {
                Poll::Pending => index += 1,
                Poll::Ready(ListenerEvent::NewAddress(listen_addr)) => {
                    return Poll::Ready(TransportEvent::NewAddress {
                        listener_id: listener.id,
                        listen_addr,
                    });
                }
                Poll::Ready(ListenerEvent::Incoming(accept)) => {
                    return Poll::Ready(TransportEvent::Incoming {
                        listener_id: listener.id,
                        upgrade: accept
                            .map(|r| r.map_err(|e| Error::Accept(Box::new(e))))
                            .boxed(),
                        local_addr: listener.addr.clone(),
                        // The remote end of an onion connection is anonymous.
                        send_back_addr: Multiaddr::empty(),
                    });
                }
                Poll::Ready(ListenerEvent::Closed) => {
                    let listener = this.listeners.remove(index);
                    return Poll::Ready(TransportEvent::ListenerClosed {
                        listener_id: listener.id,
                        reason: Ok(()),
                    });
                }
            }
        }
        // New rejections were pushed while polling listeners; give them a first poll.
        while let Poll::Ready(Some(())) = this.rejections.poll_next_unpin(cx) {}
        this.waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU32;

    use libp2p::core::Endpoint;
    use libp2p::core::Transport as _;
    use libp2p::core::transport::PortUse;

    use super::*;
    use crate::config::{Fallback, PrivateNetwork};

    /// A transport on a private network whose only directory is a closed loopback port, so
    /// nothing can leave the machine even if arti tried. These tests never bootstrap it.
    fn transport(dir: &std::path::Path) -> Transport {
        let net = PrivateNetwork {
            authority_v3idents: vec!["0123456789ABCDEF0123456789ABCDEF01234567".into()],
            fallbacks: vec![Fallback {
                rsa_identity: "89ABCDEF0123456789ABCDEF0123456789ABCDEF".into(),
                ed_identity: "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8".into(),
                orports: vec!["127.0.0.1:1".parse().expect("socket address")],
            }],
            hsdir_interval_minutes: NonZeroU32::new(8),
            min_circuit_timeout: Some(std::time::Duration::from_secs(2)),
            dangerous_ignore_subnet_families: true,
        };
        let mut config = Config::private(net, dir);
        config.dangerous_trust_all_file_permissions = true;
        let key = ed25519_dalek::SigningKey::from_bytes(&[9; 32]);
        Transport::new(config, key).expect("an unbootstrapped transport")
    }

    fn opts() -> DialOpts {
        DialOpts {
            role: Endpoint::Dialer,
            port_use: PortUse::New,
        }
    }

    fn other_onion(port: u16) -> Multiaddr {
        let other = ed25519_dalek::SigningKey::from_bytes(&[8; 32]);
        OnionAddr::from_public_key(&other.verifying_key(), port).to_multiaddr()
    }

    #[tokio::test]
    async fn a_new_transport_removes_the_onion_service_state_of_an_earlier_run() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let ipts = dir.path().join("state/hss/shoal1/ipts");
        std::fs::create_dir_all(&ipts).expect("a stale service directory");
        std::fs::write(ipts.join("record.json"), b"{}").expect("a stale record");
        drop(transport(dir.path()));
        assert!(!dir.path().join("state/hss").exists());
        // The rest of arti's state is kept, and a directory without service state is fine.
        assert!(dir.path().join("state").is_dir());
        drop(transport(dir.path()));
    }

    #[tokio::test]
    async fn ip_and_dns_addresses_are_not_supported() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let mut t = transport(dir.path());
        for text in [
            "/ip4/127.0.0.1/tcp/1",
            "/ip6/::1/tcp/1",
            "/dns/localhost/tcp/1",
        ] {
            let addr: Multiaddr = text.parse().expect("valid multiaddr");
            assert!(matches!(
                t.dial(addr.clone(), opts()),
                Err(TransportError::MultiaddrNotSupported(_))
            ));
            assert!(matches!(
                t.listen_on(ListenerId::next(), addr),
                Err(TransportError::MultiaddrNotSupported(_))
            ));
        }
    }

    #[tokio::test]
    async fn a_forged_or_corrupt_onion_is_refused_before_dialling() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let mut t = transport(dir.path());
        let someone = libp2p::identity::Keypair::generate_ed25519()
            .public()
            .to_peer_id();
        let forged = other_onion(5).with(Protocol::P2p(someone));
        assert!(matches!(
            t.dial(forged, opts()),
            Err(TransportError::Other(Error::Addr(
                AddrError::PeerMismatch { .. }
            )))
        ));
        let corrupt = Multiaddr::empty().with(Protocol::Onion3(([7u8; 35], 5).into()));
        assert!(matches!(
            t.dial(corrupt, opts()),
            Err(TransportError::Other(Error::Addr(AddrError::BadOnion(_))))
        ));
    }

    #[tokio::test]
    async fn only_our_own_onion_can_be_listened_on() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let mut t = transport(dir.path());
        assert!(matches!(
            t.listen_on(ListenerId::next(), other_onion(80)),
            Err(TransportError::Other(Error::NotOurOnion(_)))
        ));
        assert!(matches!(
            t.listen_on(ListenerId::next(), any_onion(0)),
            Err(TransportError::Other(Error::ZeroPort))
        ));
        let own = t.onion_address(80);
        let key = ed25519_dalek::SigningKey::from_bytes(&[9; 32]);
        assert_eq!(
            OnionAddr::parse(&own)
                .expect("own onion parses")
                .key_bytes(),
            key.verifying_key().to_bytes()
        );
    }
}
