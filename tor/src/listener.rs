//! One onion service listener: turns rendezvous stream requests into incoming connections.

use std::sync::Arc;
use std::task::{Context, Poll};

use arti_client::DataStream;
use futures::future::BoxFuture;
use futures::stream::BoxStream;
use futures::{FutureExt as _, StreamExt as _};
use libp2p::Multiaddr;
use libp2p::core::transport::ListenerId;
use tor_cell::relaycell::msg::{Connected, End};
use tor_hsservice::{RunningOnionService, StreamRequest};
use tor_proto::stream::IncomingStreamRequest;

/// What a listener has to report.
pub(crate) enum ListenerEvent {
    /// The onion address is now announced (reported once, first).
    NewAddress(Multiaddr),
    /// A stream to our port: accepting it yields the connection.
    Incoming(BoxFuture<'static, Result<DataStream, tor_hsservice::ClientError>>),
    /// The onion service stopped producing requests.
    Closed,
}

/// A running onion service and its stream of requests.
pub(crate) struct Listener {
    pub(crate) id: ListenerId,
    pub(crate) addr: Multiaddr,
    port: u16,
    announced: bool,
    /// Kept so the service keeps running; dropping it stops the service.
    _service: Arc<RunningOnionService>,
    requests: BoxStream<'static, StreamRequest>,
}

impl Listener {
    pub(crate) fn new(
        id: ListenerId,
        addr: Multiaddr,
        port: u16,
        service: Arc<RunningOnionService>,
        requests: BoxStream<'static, StreamRequest>,
    ) -> Self {
        Self {
            id,
            addr,
            port,
            announced: false,
            _service: service,
            requests,
        }
    }

    /// Polls for the next event. Requests for other ports or other kinds (BEGIN_DIR, RESOLVE)
    /// are refused through `reject`, which returns the refusal to drive.
    pub(crate) fn poll_event(
        &mut self,
        cx: &mut Context<'_>,
        reject: &mut dyn FnMut(BoxFuture<'static, ()>),
    ) -> Poll<ListenerEvent> {
        if !self.announced {
            self.announced = true;
            return Poll::Ready(ListenerEvent::NewAddress(self.addr.clone()));
        }
        loop {
            match self.requests.poll_next_unpin(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => return Poll::Ready(ListenerEvent::Closed),
                Poll::Ready(Some(req)) => {
                    let wanted = matches!(
                        req.request(),
                        IncomingStreamRequest::Begin(begin) if begin.port() == self.port
                    );
                    if wanted {
                        let accept = async move { req.accept(Connected::new_empty()).await };
                        return Poll::Ready(ListenerEvent::Incoming(accept.boxed()));
                    }
                    tracing::debug!(port = self.port, "refusing an onion stream request");
                    reject(
                        async move {
                            let _ = req.reject(End::new_misc()).await;
                        }
                        .boxed(),
                    );
                }
            }
        }
    }
}
