//! The wire protocol `/shoal/swim/1`: one SWIM message per stream, answered by an empty
//! acknowledgement, carried by libp2p request-response.
//!
//! A message is its CBOR encoding (see [`crate::message`]) and nothing else; the stream's end
//! delimits it. A reader takes at most `max_message_bytes` and refuses anything longer, so a peer
//! can never make us buffer more.

use std::io;

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::StreamProtocol;
use libp2p::request_response as rr;

/// The protocol name.
pub const PROTOCOL: StreamProtocol = StreamProtocol::new(crate::PROTOCOL_NAME);

/// Reads and writes raw encoded SWIM messages, bounded by `max_message_bytes`.
#[derive(Debug, Clone, Copy)]
pub struct Codec {
    max_message_bytes: usize,
}

impl Codec {
    /// A codec refusing messages longer than `max_message_bytes`.
    pub fn new(max_message_bytes: usize) -> Self {
        Self { max_message_bytes }
    }
}

impl rr::Codec for Codec {
    type Protocol = StreamProtocol;
    type Request = Vec<u8>;
    type Response = ();

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Vec<u8>>
    where
        T: AsyncRead + Unpin + Send,
    {
        let mut buf = Vec::new();
        let limit = self.max_message_bytes as u64 + 1;
        io.take(limit).read_to_end(&mut buf).await?;
        if buf.len() > self.max_message_bytes {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("SWIM message over {} bytes", self.max_message_bytes),
            ));
        }
        Ok(buf)
    }

    /// Waits for the empty acknowledgement: the stream's clean end, which the other side sends
    /// only after its behaviour took the message. A reset or any byte is an error.
    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<()>
    where
        T: AsyncRead + Unpin + Send,
    {
        let mut buf = Vec::new();
        io.take(1).read_to_end(&mut buf).await?;
        if !buf.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "SWIM acknowledgement is not empty",
            ));
        }
        Ok(())
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: Vec<u8>,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        io.write_all(&req).await?;
        io.close().await
    }

    async fn write_response<T>(&mut self, _: &StreamProtocol, io: &mut T, _: ()) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        io.close().await
    }
}
