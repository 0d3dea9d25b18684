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
//!
//! The header deadline is kept by one watchdog per connection, not by hyper's own header
//! timer: that timer is made, armed and dropped for every request (a boxed sleep registered
//! with the runtime's timer and removed again), which cost a tenth of the ingest rate
//! (docs/BENCHMARKS.md). The watchdog sleeps until the connection has been idle for the read
//! timeout, re-armed at most once per timeout however many requests arrive meanwhile; a
//! request marks its connection busy when it starts and idle when its answer is ready, so the
//! time a sender takes to read its answer counts toward the next deadline (one that never reads
//! it is cut off).

use std::future::{Future, poll_fn};
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::task::Poll;
use std::time::Duration;

use axum::Router;
use futures::task::AtomicWaker;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::time::Instant;

/// The most header fields one request may have; more are answered 431. hyper's default, which
/// the server keeps (tests/operator.rs sends one more and expects 431).
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
    // Dropping `stop` tells every connection's watchdog to close it; `open` has one receiver
    // per connection, so `open.closed()` resolves when the last one ended.
    let (stop, stopping) = watch::channel(());
    let (open, open_connection) = watch::channel(());
    let epoch = Instant::now();
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
        let connection = Arc::new(Connection::new(epoch, limits.read_timeout));
        let service = Tracked {
            app: app.clone(),
            connection: connection.clone(),
        };
        let watchdog = tokio::spawn(watch_idle(connection.clone(), stopping.clone()));
        let open = open_connection.clone();
        tokio::spawn(async move {
            let mut builder = hyper::server::conn::http1::Builder::new();
            // MAX_HEADERS is hyper's own limit: set explicitly, hyper would initialise that
            // many header slots for every request (2% of the ingest's time).
            builder.max_header_size(MAX_HEADER_BYTES);
            let mut conn = pin!(builder.serve_connection(TokioIo::new(stream), service));
            let mut finishing = false;
            let result = poll_fn(|cx| {
                connection.waker.register(cx.waker());
                match connection.order() {
                    Order::Serve => {}
                    // Still idle past the deadline (no request since the watchdog looked):
                    // dropping the connection closes it (hyper's graceful shutdown would
                    // wait for the rest of a first request's headers).
                    Order::Cut if connection.idle_past() => {
                        return Poll::Ready(Ok(()));
                    }
                    // The server stopping, or a request since the watchdog looked (its answer
                    // may still be being written): that request is answered first.
                    Order::Finish | Order::Cut => {
                        if !finishing {
                            finishing = true;
                            conn.as_mut().graceful_shutdown();
                        }
                    }
                }
                conn.as_mut().poll(cx)
            })
            .await;
            if let Err(error) = result {
                tracing::debug!(%error, "connection ended with an error");
            }
            watchdog.abort();
            drop(permit);
            drop(open);
        });
    }
    drop(listener);
    drop(stop);
    drop(open_connection);
    open.closed().await;
}

/// `idle_since` while a request is being answered.
const BUSY: u64 = u64::MAX;

/// What a connection's watchdog orders its task to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Order {
    Serve = 0,
    /// Answer the request in progress, if any, then close (the server is stopping).
    Finish = 1,
    /// Close now if idle (it waited the read timeout for a request), else as `Finish`.
    Cut = 2,
}

/// What a connection's requests, its watchdog and its task share.
struct Connection {
    /// The server's start, from which `idle_since` counts.
    epoch: Instant,
    read_timeout: Duration,
    /// Nanoseconds from the server's epoch since which the connection has been waiting for
    /// a request (from its accept, or from the answer to the last one); [`BUSY`] while one
    /// is being answered. Changed only by the connection's task (hyper calls the service
    /// and polls its answers there).
    idle_since: AtomicU64,
    /// An [`Order`], from the watchdog.
    order: AtomicU8,
    /// The connection's task, woken to see the order.
    waker: AtomicWaker,
}

impl Connection {
    fn new(epoch: Instant, read_timeout: Duration) -> Self {
        let connection = Connection {
            epoch,
            read_timeout,
            idle_since: AtomicU64::new(BUSY),
            order: AtomicU8::new(Order::Serve as u8),
            waker: AtomicWaker::new(),
        };
        connection.idle();
        connection
    }

    fn busy(&self) {
        self.idle_since.store(BUSY, Ordering::Release);
    }

    /// Waiting for a request from now on. Below [`BUSY`] for 584 years.
    fn idle(&self) {
        let nanos = u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(BUSY - 1);
        self.idle_since.store(nanos, Ordering::Release);
    }

    /// When the connection will have waited the read timeout for a request; `None` while a
    /// request is answered.
    fn deadline(&self) -> Option<Instant> {
        match self.idle_since.load(Ordering::Acquire) {
            BUSY => None,
            nanos => Some(self.epoch + Duration::from_nanos(nanos) + self.read_timeout),
        }
    }

    /// Whether the connection has waited the read timeout or longer for a request.
    fn idle_past(&self) -> bool {
        self.deadline()
            .is_some_and(|deadline| deadline <= Instant::now())
    }

    fn order(&self) -> Order {
        match self.order.load(Ordering::Acquire) {
            0 => Order::Serve,
            1 => Order::Finish,
            _ => Order::Cut,
        }
    }

    fn give(&self, order: Order) {
        self.order.store(order as u8, Ordering::Release);
        self.waker.wake();
    }
}

/// Cuts the connection off once it has waited `read_timeout` for a request's headers, and
/// tells it to finish when the server stops (`stopping`'s sender dropped); a connection
/// finishing is still cut off after the same wait. Sleeps until the deadline the last idle
/// moment gives, so requests cost it nothing: it is re-armed at most once per timeout. It runs
/// until the connection ends (which aborts it): a request that came as it gave the order to
/// cut is answered, and the connection cut once it waits again past the timeout (a sender that
/// does not read its answer).
async fn watch_idle(connection: Arc<Connection>, mut stopping: watch::Receiver<()>) {
    let mut stopped = false;
    loop {
        let now = Instant::now();
        let deadline = match connection.deadline() {
            Some(deadline) if deadline <= now => {
                connection.give(Order::Cut);
                now + connection.read_timeout
            }
            Some(deadline) => deadline,
            // Answering: look again a timeout from now (it may be idle by then).
            None => now + connection.read_timeout,
        };
        if stopped {
            tokio::time::sleep_until(deadline).await;
            continue;
        }
        tokio::select! {
            () = tokio::time::sleep_until(deadline) => {}
            _ = stopping.changed() => {
                stopped = true;
                // Not over an order to cut, given already.
                if connection.order() == Order::Serve {
                    connection.give(Order::Finish);
                }
            }
        }
    }
}

/// The app, marking its connection busy while a request is answered.
#[derive(Clone)]
struct Tracked {
    app: Router,
    connection: Arc<Connection>,
}

impl hyper::service::Service<http::Request<Incoming>> for Tracked {
    type Response = axum::response::Response;
    type Error = std::convert::Infallible;
    type Future = std::pin::Pin<
        Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send + 'static>,
    >;

    fn call(&self, request: http::Request<Incoming>) -> Self::Future {
        self.connection.busy();
        let answer = tower::ServiceExt::oneshot(self.app.clone(), request);
        let connection = self.connection.clone();
        Box::pin(async move {
            let response = answer.await;
            connection.idle();
            response
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::routing::get;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    const REQUEST: &[u8] = b"GET / HTTP/1.1\r\nhost: x\r\n\r\n";
    /// More than loopback's socket buffers hold, so its write waits for the reader.
    const LARGE_ANSWER: usize = 64 << 20;

    struct Server {
        address: std::net::SocketAddr,
        stop: Option<tokio::sync::oneshot::Sender<()>>,
        served: tokio::task::JoinHandle<()>,
        /// Told when a request to `/slow` is being handled.
        slow_begun: Arc<tokio::sync::Notify>,
    }

    async fn start(read_timeout: Duration) -> Server {
        let slow_begun = Arc::new(tokio::sync::Notify::new());
        let begun = slow_begun.clone();
        let app = Router::new()
            .route("/", get(|| async { "ok" }))
            .route("/large", get(|| async { vec![b'x'; LARGE_ANSWER] }))
            .route(
                "/slow",
                get(move || {
                    begun.notify_one();
                    async {
                        tokio::time::sleep(Duration::from_millis(300)).await;
                        "done"
                    }
                }),
            );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let limits = ConnectionLimits {
            read_timeout,
            max_connections: 16,
        };
        let served = tokio::spawn(serve(listener, app, limits, async {
            let _ = stopped.await;
        }));
        Server {
            address,
            stop: Some(stop),
            served,
            slow_begun,
        }
    }

    /// Reads until `ending` has arrived; `None` if the connection closed first or nothing
    /// came within 10 s.
    async fn read_answer(stream: &mut TcpStream, ending: &str) -> Option<String> {
        let mut received = Vec::new();
        let mut buffer = [0u8; 1024];
        loop {
            let read = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buffer))
                .await
                .ok()?
                .ok()?;
            if read == 0 {
                return None;
            }
            received.extend_from_slice(&buffer[..read]);
            let text = String::from_utf8_lossy(&received);
            if text.ends_with(ending) {
                return Some(text.into_owned());
            }
        }
    }

    /// Waits up to 10 s for the peer to close; true if it did.
    async fn closed(stream: &mut TcpStream) -> bool {
        let mut buffer = [0u8; 64];
        loop {
            match tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buffer)).await {
                Ok(Ok(0) | Err(_)) => return true,
                Ok(Ok(_)) => continue,
                Err(_) => return false,
            }
        }
    }

    #[tokio::test]
    async fn an_idle_connection_is_closed_after_the_read_timeout_and_not_before() {
        let server = start(Duration::from_millis(400)).await;
        let started = std::time::Instant::now();
        let mut idle = TcpStream::connect(server.address).await.unwrap();
        assert!(closed(&mut idle).await, "an idle connection is closed");
        assert!(started.elapsed() >= Duration::from_millis(400));

        // Idle after an answer: closed a timeout after the answer.
        let mut kept = TcpStream::connect(server.address).await.unwrap();
        kept.write_all(REQUEST).await.unwrap();
        assert!(read_answer(&mut kept, "ok").await.is_some());
        let answered = std::time::Instant::now();
        assert!(closed(&mut kept).await);
        assert!(answered.elapsed() >= Duration::from_millis(400));
    }

    #[tokio::test]
    async fn requests_keep_a_connection_open_past_the_read_timeout() {
        let server = start(Duration::from_secs(1)).await;
        let mut stream = TcpStream::connect(server.address).await.unwrap();
        let started = std::time::Instant::now();
        // Ten requests 200 ms apart: 2 s on one connection, each wait a fifth of the timeout.
        for request in 0..10 {
            stream.write_all(REQUEST).await.unwrap();
            assert!(
                read_answer(&mut stream, "ok").await.is_some(),
                "request {request} answered"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert!(started.elapsed() > Duration::from_secs(1));
    }

    #[tokio::test]
    async fn headers_trickled_in_do_not_extend_the_deadline() {
        let server = start(Duration::from_millis(500)).await;
        let started = std::time::Instant::now();
        let mut stream = TcpStream::connect(server.address).await.unwrap();
        stream.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        // A header byte every 100 ms, for up to 10 s: the connection is closed long before.
        let mut cut_off = false;
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if stream.write_all(b"x").await.is_err() {
                cut_off = true;
                break;
            }
            let mut buffer = [0u8; 64];
            if let Ok(Ok(0) | Err(_)) =
                tokio::time::timeout(Duration::from_millis(1), stream.read(&mut buffer)).await
            {
                cut_off = true;
                break;
            }
        }
        assert!(cut_off, "a trickle of header bytes is cut off");
        let elapsed = started.elapsed();
        assert!(
            elapsed >= Duration::from_millis(500) && elapsed < Duration::from_secs(5),
            "{elapsed:?}"
        );
    }

    #[tokio::test]
    async fn a_sender_that_does_not_read_its_answer_is_cut_off() {
        let server = start(Duration::from_millis(300)).await;
        let mut stream = TcpStream::connect(server.address).await.unwrap();
        stream
            .write_all(b"GET /large HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        // Not read for ten timeouts: the answer's write cannot finish, the deadline passes.
        tokio::time::sleep(Duration::from_secs(3)).await;
        let mut received = 0usize;
        let mut buffer = vec![0u8; 1 << 16];
        loop {
            match tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buffer)).await {
                Ok(Ok(0) | Err(_)) => break,
                Ok(Ok(read)) => received += read,
                Err(_) => panic!("the connection stayed open"),
            }
        }
        assert!(received < LARGE_ANSWER, "{received} bytes arrived");
    }

    #[tokio::test]
    async fn stopping_closes_idle_connections_at_once_and_finishes_requests_in_progress() {
        let mut server = start(Duration::from_secs(30)).await;
        let mut idle = TcpStream::connect(server.address).await.unwrap();
        idle.write_all(REQUEST).await.unwrap();
        assert!(read_answer(&mut idle, "ok").await.is_some());
        let mut busy = TcpStream::connect(server.address).await.unwrap();
        busy.write_all(b"GET /slow HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        tokio::time::timeout(Duration::from_secs(10), server.slow_begun.notified())
            .await
            .expect("the slow request is being handled");

        let stopped = std::time::Instant::now();
        server.stop.take().unwrap().send(()).unwrap();
        let answer = read_answer(&mut busy, "done").await;
        assert!(answer.is_some(), "the request in progress is answered");
        assert!(closed(&mut busy).await, "then its connection is closed");
        assert!(closed(&mut idle).await, "an idle connection is closed");
        tokio::time::timeout(Duration::from_secs(5), server.served)
            .await
            .expect("serve returns once every connection ended")
            .unwrap();
        assert!(stopped.elapsed() < Duration::from_secs(5));
    }
}
