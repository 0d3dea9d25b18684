//! The HTTP servers (ingest and admin), with the bounds a slow or idle sender cannot pass.
//!
//! `axum::serve` reads headers without a deadline and serves any number of connections, so a
//! sender that opens connections and trickles bytes into them (or opens them and sends
//! nothing) holds sockets and memory for as long as it likes. Here every connection must send
//! its request headers within the read timeout (an idle keep-alive connection counts as
//! waiting for headers, so it is closed after the same time), and at most `max_connections`
//! are served at once: the next one is accepted when one ends, and waits in the listen backlog
//! meanwhile. A request may have at most [`MAX_HEADERS`] header fields of [`MAX_HEADER_BYTES`]
//! in all (431 beyond). The body's own deadline and size are the ingest handler's (it reads the
//! body).

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

/// The most header fields one request may have; more are answered 431.
pub const MAX_HEADERS: usize = 100;
/// The most bytes of a request's start line and headers; more are answered 431.
pub const MAX_HEADER_BYTES: usize = 64 * 1024;

/// What one server allows a connection.
#[derive(Clone, Copy, Debug)]
pub struct ConnectionLimits {
    /// How long a connection may take to send a request's headers (or stay idle between
    /// requests).
    pub read_timeout: Duration,
    /// How many connections are served at once.
    pub max_connections: usize,
}

/// Serves `app` on `listener` until `shutdown` resolves, then lets the requests in progress
/// finish (each connection closes after its current request) and returns.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()>,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    // Dropping `stop` tells every connection to finish; `open` has one receiver per
    // connection, so `open.closed()` resolves when the last one ended.
    let (stop, stopping) = watch::channel(());
    let (open, connection) = watch::channel(());
    let mut shutdown = pin!(shutdown);
    loop {
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => permit,
            () = &mut shutdown => break,
        };
        // The semaphore is never closed.
        let Ok(permit) = permit else { break };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    // Out of file descriptors and the like: wait instead of spinning.
                    tracing::warn!(%error, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(app.clone());
        let mut stopping = stopping.clone();
        let connection = connection.clone();
        tokio::spawn(async move {
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(limits.read_timeout)
                .max_headers(MAX_HEADERS)
                .max_header_size(MAX_HEADER_BYTES);
            let mut conn = pin!(builder.serve_connection(TokioIo::new(stream), service));
            tokio::select! {
                result = conn.as_mut() => {
                    if let Err(error) = result {
                        tracing::debug!(%error, "connection ended with an error");
                    }
                }
                _ = stopping.changed() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
            drop(permit);
            drop(connection);
        });
    }
    drop(listener);
    drop(stop);
    drop(connection);
    open.closed().await;
}
