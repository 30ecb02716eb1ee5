//! Accepting TCP connections under caps. At most `max_connections` are
//! open at once (the rest wait in the kernel's listen queue, costing the
//! daemon no file descriptor), at most `max_connections_per_address` from
//! one IP address (the rest are closed at once), and a failed `accept`
//! (out of file descriptors) pauses the loop instead of spinning on it.
//! TLS handshakes then run, each in a task of its own with its own timeout
//! (`tls_handshake_timeout_secs`), so a slow client holds up no other.
//!
//! Each connection reads its socket through a buffer of [`READ_BUFFER`]
//! bytes: rustls asks for at most one TLS record (16 KiB) at a time, so
//! without it an upload cost a `recvfrom` a record, 72 a MB.

use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, BufReader, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tokio_stream::StreamExt as _;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::{Connected, TcpConnectInfo};

/// How long the accept loop waits after `accept` fails.
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);

/// A connection's read buffer: up to four TLS records a `recvfrom` (32 MiB
/// in all at the default of 512 connections).
const READ_BUFFER: usize = 64 * 1024;

/// An accepted connection holding its places; they are given back when it
/// closes.
pub struct Admitted {
    /// Writes go straight through; reads come through the buffer.
    stream: BufReader<TcpStream>,
    peer: std::net::SocketAddr,
    _total: OwnedSemaphorePermit,
    _address: AddressPlace,
}

/// One connection's place in its address's count.
struct AddressPlace {
    ip: IpAddr,
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl Drop for AddressPlace {
    fn drop(&mut self) {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = open.get_mut(&self.ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

/// Accepts from `listener` in a task of its own, and yields each admitted
/// connection; ends when the stream is dropped.
pub fn incoming(
    listener: TcpListener,
    max_connections: usize,
    max_per_address: usize,
) -> ReceiverStream<io::Result<Admitted>> {
    let (tx, rx) = mpsc::channel(1);
    let total = Arc::new(Semaphore::new(max_connections));
    let open: Arc<Mutex<HashMap<IpAddr, usize>>> = Arc::default();
    tokio::spawn(async move {
        loop {
            let permit = tokio::select! {
                () = tx.closed() => return,
                permit = Arc::clone(&total).acquire_owned() => match permit {
                    Ok(p) => p,
                    Err(_) => return,
                },
            };
            let (stream, peer) = tokio::select! {
                () = tx.closed() => return,
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "accepting a connection failed; pausing");
                        tokio::time::sleep(ACCEPT_PAUSE).await;
                        continue;
                    }
                },
            };
            let ip = peer.ip();
            let admitted = {
                let mut open = open.lock().unwrap_or_else(|e| e.into_inner());
                let n = open.entry(ip).or_default();
                if *n >= max_per_address {
                    false
                } else {
                    *n += 1;
                    true
                }
            };
            if !admitted {
                tracing::debug!(%ip, "too many connections from one address; closed");
                continue;
            }
            let _ = stream.set_nodelay(true);
            let conn = Admitted {
                stream: BufReader::with_capacity(READ_BUFFER, stream),
                peer,
                _total: permit,
                _address: AddressPlace {
                    ip,
                    open: Arc::clone(&open),
                },
            };
            if tx.send(Ok(conn)).await.is_err() {
                return;
            }
        }
    });
    ReceiverStream::new(rx)
}

impl Admitted {
    /// The caller's address.
    pub fn peer(&self) -> std::net::SocketAddr {
        self.peer
    }
}

/// Runs the TLS handshake of each connection `admitted` yields, and yields
/// those that complete within `timeout`; the others are closed.
pub fn handshakes(
    mut admitted: ReceiverStream<io::Result<Admitted>>,
    acceptor: TlsAcceptor,
    timeout: Duration,
) -> ReceiverStream<io::Result<TlsStream<Admitted>>> {
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(async move {
        loop {
            let next = tokio::select! {
                () = tx.closed() => return,
                next = admitted.next() => next,
            };
            let Some(Ok(conn)) = next else { return };
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(timeout, acceptor.accept(conn)).await {
                    Ok(Ok(tls)) => {
                        let _ = tx.send(Ok(tls)).await;
                    }
                    Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
                    Err(_) => tracing::debug!("TLS handshake timed out"),
                }
            });
        }
    });
    ReceiverStream::new(rx)
}

impl Connected for Admitted {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.stream.get_ref().connect_info()
    }
}

impl AsyncRead for Admitted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Admitted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.get_ref().is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;

    /// More bytes than the read buffer holds, written in pieces and read in
    /// small reads (as rustls makes them), come through whole and in order;
    /// writes go straight back to the client.
    #[tokio::test]
    async fn an_admitted_connection_reads_through_its_buffer_and_writes_back() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut admitted = incoming(listener, 4, 4);
        let sent: Vec<u8> = (0..3 * READ_BUFFER + 123)
            .map(|i| u8::try_from(i % 251).unwrap())
            .collect();
        let client = {
            let sent = sent.clone();
            tokio::spawn(async move {
                let mut client = TcpStream::connect(addr).await.unwrap();
                for piece in sent.chunks(5000) {
                    client.write_all(piece).await.unwrap();
                }
                let mut back = [0u8; 5];
                client.read_exact(&mut back).await.unwrap();
                back
            })
        };
        let mut conn = admitted.next().await.unwrap().unwrap();
        assert_eq!(conn.peer().ip(), addr.ip());
        let mut got = vec![0u8; sent.len()];
        let mut at = 0;
        while at < got.len() {
            let end = (at + 4096).min(got.len());
            let n = conn.read(&mut got[at..end]).await.unwrap();
            assert!(n > 0, "the connection ended after {at} bytes");
            at += n;
        }
        assert_eq!(got, sent);
        conn.write_all(b"done!").await.unwrap();
        assert_eq!(&client.await.unwrap(), b"done!");
    }
}
