//! Accepting connections, plain or TLS, and serving HTTP/1.1 on them: a client has
//! `http.header_timeout` to finish its TLS handshake and then each request's headers, every
//! request learns its peer (`ConnectInfo<SocketAddr>` and `Peer`), and shutdown is graceful.
//! Plain connections send blob bodies with `sendfile` (see `sendfile`).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tower::Service;

use super::sendfile::PlainTcp;
use super::tls::{Reloadable, certificate_user};
use crate::api::Peer;

/// What a client that speaks plain HTTP to the TLS port is told before the connection closes.
const PLAIN_TO_TLS: &[u8] = b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nConnection: close\r\n\
Content-Length: 48\r\n\r\nClient sent an HTTP request to an HTTPS server.\n";

/// Most a connection buffers of what it reads (hyper's default is about 400 KiB). Upload bodies
/// are read in pieces of at most this size and handed on without copying; keeping them small
/// keeps each allocation below the size malloc maps on its own (`malloc::REUSED_BELOW`), so
/// freed buffers are reused rather than mapped and unmapped.
const READ_BUFFER_MAX: usize = 128 << 10;
const _: () = assert!(READ_BUFFER_MAX < crate::malloc::REUSED_BELOW);

/// Accept and serve until `stop` resolves; returns the handle that drains open connections.
pub async fn serve(
    listener: TcpListener,
    tls: Option<Arc<Reloadable>>,
    router: Router,
    opts: ConnOptions,
    stop: impl Future<Output = ()>,
) -> GracefulShutdown {
    let graceful = GracefulShutdown::new();
    let mut stop = std::pin::pin!(stop);
    loop {
        let (tcp, addr) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors and the like: wait rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut stop => break,
        };
        let _ = tcp.set_nodelay(true);
        let conn = Conn {
            router: router.clone(),
            watcher: graceful.watcher(),
            opts,
        };
        let tls = tls.clone();
        tokio::spawn(async move {
            match tls {
                None => conn.serve_plain(tcp, addr).await,
                Some(tls) => conn.serve_tls(tcp, addr, &tls).await,
            }
        });
    }
    graceful
}

/// How each connection is served.
#[derive(Debug, Clone, Copy)]
pub struct ConnOptions {
    /// For the TLS handshake and then each request's headers.
    pub header_timeout: Duration,
    /// Send blob bodies on plain connections with `sendfile`.
    pub sendfile: bool,
}

struct Conn {
    router: Router,
    watcher: Watcher,
    opts: ConnOptions,
}

impl Conn {
    async fn serve_plain(self, tcp: TcpStream, addr: SocketAddr) {
        let peer = Peer {
            addr,
            cert_user: None,
            tls: false,
        };
        if self.opts.sendfile {
            self.serve(TokioIo::new(PlainTcp(tcp)), peer).await;
        } else {
            self.serve(TokioIo::new(tcp), peer).await;
        }
    }

    async fn serve_tls(self, mut tcp: TcpStream, addr: SocketAddr, tls: &Reloadable) {
        let mut first = [0u8; 1];
        let peeked = tokio::time::timeout(self.opts.header_timeout, tcp.peek(&mut first)).await;
        if !matches!(peeked, Ok(Ok(1))) {
            return;
        }
        if first[0] != 0x16 {
            // Not a TLS handshake record: most likely plain HTTP.
            let _ = tcp.write_all(PLAIN_TO_TLS).await;
            let _ = tcp.shutdown().await;
            return;
        }
        let handshake = tokio::time::timeout(self.opts.header_timeout, tls.acceptor().accept(tcp)).await;
        let stream = match handshake {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => {
                tracing::debug!(peer = %addr, error = %e, "TLS handshake failed");
                handshake_failed(addr, &e.to_string());
                return;
            }
            Err(_) => {
                tracing::debug!(peer = %addr, "TLS handshake timed out");
                handshake_failed(addr, "timed out");
                return;
            }
        };
        let cert_user = stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|certs| certs.first())
            .and_then(certificate_user);
        let peer = Peer {
            addr,
            cert_user,
            tls: true,
        };
        self.serve(TokioIo::new(stream), peer).await;
    }

    async fn serve<I>(self, io: TokioIo<I>, peer: Peer)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let router = self.router;
        let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer.addr));
            request.extensions_mut().insert(peer.clone());
            router.clone().call(request)
        });
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(self.opts.header_timeout)
            .max_buf_size(READ_BUFFER_MAX);
        let connection = self.watcher.watch(builder.serve_connection(io, service));
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "connection ended with an error");
        }
    }
}

/// How often failed TLS handshakes are reported at info level (each is at debug).
const HANDSHAKE_REPORT_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

/// Count a failed handshake and, at most once per `HANDSHAKE_REPORT_EVERY`, say at info level
/// how many failed and why the latest did: a client with the wrong CA or a scanner shows up in
/// the log without flooding it.
fn handshake_failed(peer: SocketAddr, why: &str) {
    static STATE: std::sync::Mutex<(Option<std::time::Instant>, u64)> = std::sync::Mutex::new((None, 0));
    let mut state = STATE.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    state.1 += 1;
    let due = state.0.is_none_or(|at| at.elapsed() >= HANDSHAKE_REPORT_EVERY);
    if due {
        tracing::info!(failed = state.1, latest_peer = %peer, latest_error = why, "TLS handshakes failed (the count since the last report; each is logged at debug)");
        *state = (Some(std::time::Instant::now()), 0);
    }
}
