//! The HTTP/1.1 listener with an outage switch: pausing closes the listening socket (new
//! connections are refused) and drops every open connection (in-flight requests and watches
//! fail); resuming binds the same address again.

use std::net::SocketAddr;
use std::sync::Mutex;

use axum::Router;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The running listener.
pub struct Server {
    addr: SocketAddr,
    router: Router,
    accept: Mutex<Option<JoinHandle<()>>>,
    /// Bumped to drop every open connection.
    generation: watch::Sender<u64>,
}

impl Server {
    /// Starts serving `router` on a bound listener.
    pub fn start(listener: TcpListener, router: Router) -> std::io::Result<Server> {
        let addr = listener.local_addr()?;
        let (generation, _) = watch::channel(0u64);
        let server = Server {
            addr,
            router,
            accept: Mutex::new(None),
            generation,
        };
        server.spawn_accept(listener);
        Ok(server)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    fn spawn_accept(&self, listener: TcpListener) {
        let router = self.router.clone();
        let generation = self.generation.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let service = TowerToHyperService::new(router.clone());
                let mut gen_rx = generation.subscribe();
                gen_rx.borrow_and_update();
                tokio::spawn(async move {
                    let builder = hyper::server::conn::http1::Builder::new();
                    let conn = builder.serve_connection(TokioIo::new(stream), service);
                    tokio::select! {
                        _ = conn => {}
                        _ = gen_rx.changed() => {}
                    }
                });
            }
        });
        let mut slot = self.accept.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(old) = slot.replace(task) {
            old.abort();
        }
    }

    /// Stops accepting (connections are refused) and drops all open connections.
    pub async fn pause(&self) {
        let task = self.accept.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(task) = task {
            task.abort();
            let _ = task.await;
        }
        self.generation.send_modify(|g| *g += 1);
    }

    pub fn is_paused(&self) -> bool {
        self.accept
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_none()
    }

    /// Binds the same address again. Retries briefly while the old socket is being released.
    pub async fn resume(&self) -> std::io::Result<()> {
        if !self.is_paused() {
            return Ok(());
        }
        let mut last = None;
        for _ in 0..50 {
            match TcpListener::bind(self.addr).await {
                Ok(l) => {
                    self.spawn_accept(l);
                    return Ok(());
                }
                Err(e) => {
                    last = Some(e);
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
            }
        }
        Err(last.unwrap_or_else(|| std::io::Error::other("could not rebind")))
    }

    /// Stops everything (without waiting).
    pub fn shutdown(&self) {
        if let Some(task) = self.accept.lock().unwrap_or_else(|e| e.into_inner()).take() {
            task.abort();
        }
        self.generation.send_modify(|g| *g += 1);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shutdown();
    }
}
