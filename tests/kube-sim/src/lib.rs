//! A Kubernetes API server simulator for job-executor's tests.
//!
//! [`Sim`] serves the Kubernetes HTTP API on loopback (real `kube::Client` and `kubectl` talk
//! to it), keeps objects in memory, runs a simulated Job controller, garbage collector and
//! kubelet whose containers follow a script the test controls, and offers fault injection, a
//! request log and a time scale. See `tests/kube-sim/README.md`.

mod admission;
mod api;
mod clock;
mod crd;
mod discovery;
mod error;
mod events;
mod faults;
mod gc;
mod jobs;
mod kinds;
mod kubeconfig;
mod kubelet;
mod objects;
mod podlogs;
mod rbac;
mod requests;
mod resources;
mod runtime;
mod schema;
mod server;
mod store;
mod util;
mod volumes;
mod wait;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use admission::Admission;
pub use error::ApiError;
pub use faults::{FaultRule, Faults};
pub use requests::RequestRecord;
pub use runtime::{
    Behavior, ContainerRecord, ContainerRun, DEFAULT_RUN_TIME, FileSnapshot, ImageRule, Mount,
    Outcome, Runtime,
};
pub use wait::{TimedOut, wait_until, wait_until_async};

use clock::Clock;
use podlogs::LogStore;
use requests::RequestLog;
use resources::{Registry, ResourceInfo};
use store::{Change, Store};

/// Tunables of the simulated cluster.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    pub bookmark_interval: Duration,
}

/// State shared by the HTTP handlers and the simulated controllers.
pub(crate) struct Shared {
    pub store: Store,
    registry: RwLock<Registry>,
    pub clock: Clock,
    pub faults: Faults,
    pub admission: Admission,
    pub requests: RequestLog,
    /// Bearer tokens of the users whose requests RBAC authorizes.
    pub users: rbac::Users,
    pub logs: LogStore,
    pub runtime: Runtime,
    /// Bumped to end every open watch.
    pub watch_close: watch::Sender<u64>,
    /// Bumped when a resource is unregistered (its CRD deleted): its open watches end.
    pub resource_removed: watch::Sender<u64>,
    /// True while the server is paused in "hang" mode.
    pub hang: watch::Sender<bool>,
    pub opts: Options,
    pub addr: SocketAddr,
}

impl Shared {
    pub fn registry_read(&self) -> RwLockReadGuard<'_, Registry> {
        self.registry.read().unwrap_or_else(|e| e.into_inner())
    }

    pub fn registry_write(&self) -> RwLockWriteGuard<'_, Registry> {
        self.registry.write().unwrap_or_else(|e| e.into_inner())
    }

    pub fn registry_find_any(&self, group: &str, plural: &str) -> Option<ResourceInfo> {
        self.registry_read().find_any(group, plural).cloned()
    }
}

/// Builder for a [`Sim`] with non-default options.
#[derive(Debug, Clone)]
pub struct SimBuilder {
    listen: SocketAddr,
    time_scale: f64,
    watch_history: usize,
    bookmark_interval: Duration,
}

impl Default for SimBuilder {
    fn default() -> Self {
        SimBuilder {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            time_scale: 1.0,
            watch_history: 10_000,
            bookmark_interval: Duration::from_secs(1),
        }
    }
}

impl SimBuilder {
    /// Address to listen on (default `127.0.0.1:0`, a free port).
    pub fn listen(mut self, addr: SocketAddr) -> Self {
        self.listen = addr;
        self
    }

    /// Simulated seconds per real second (default 1.0). Scales container run times, Job
    /// `activeDeadlineSeconds`, `ttlSecondsAfterFinished` and the pod retry back-off.
    pub fn time_scale(mut self, scale: f64) -> Self {
        self.time_scale = scale;
        self
    }

    /// Watch events kept per resource (default 10 000). Watches from a resourceVersion older
    /// than the kept history get `410 Expired`.
    pub fn watch_history(mut self, events: usize) -> Self {
        self.watch_history = events;
        self
    }

    /// How often watches that asked for bookmarks get one (default 1 s, real time).
    pub fn bookmark_interval(mut self, every: Duration) -> Self {
        self.bookmark_interval = every;
        self
    }

    /// Starts the simulator.
    pub async fn start(self) -> anyhow::Result<Sim> {
        let listener = tokio::net::TcpListener::bind(self.listen).await?;
        let addr = listener.local_addr()?;
        let workdir = std::env::temp_dir().join(format!(
            "kube-sim-{}-{}",
            std::process::id(),
            util::random_suffix(8)
        ));
        std::fs::create_dir_all(&workdir)?;
        let shared = Arc::new(Shared {
            store: Store::new(self.watch_history),
            registry: RwLock::new(Registry::default()),
            clock: Clock::new(self.time_scale),
            faults: Faults::default(),
            admission: Admission::default(),
            requests: RequestLog::default(),
            users: rbac::Users::default(),
            logs: LogStore::default(),
            runtime: Runtime::new(workdir),
            watch_close: watch::channel(0u64).0,
            resource_removed: watch::channel(0u64).0,
            hang: watch::channel(false).0,
            opts: Options {
                bookmark_interval: self.bookmark_interval,
            },
            addr,
        });
        for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            seed_namespace(&shared, ns)?;
        }
        let tasks = vec![
            tokio::spawn(gc::run(shared.clone())),
            tokio::spawn(jobs::run(shared.clone())),
            tokio::spawn(kubelet::run(shared.clone())),
        ];
        let server = server::Server::start(listener, api::router(shared.clone()))?;
        let url = format!("http://{addr}");
        let config = kube::Config::new(url.parse()?);
        let client = kube::Client::try_from(config)?;
        Ok(Sim {
            shared,
            server,
            client,
            tasks,
        })
    }
}

fn seed_namespace(shared: &Shared, name: &str) -> anyhow::Result<()> {
    let info = shared
        .registry_find_any("", "namespaces")
        .ok_or_else(|| anyhow::anyhow!("namespaces are not registered"))?;
    objects::create(
        shared,
        &info,
        "",
        json!({"metadata": {"name": name}}),
        &objects::WriteOpts::default(),
    )?;
    Ok(())
}

/// A running simulated cluster. Dropping it stops the server and all simulated controllers.
pub struct Sim {
    shared: Arc<Shared>,
    server: server::Server,
    client: kube::Client,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Sim {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        self.server.shutdown();
        self.shared.watch_close.send_modify(|g| *g += 1);
        let _ = std::fs::remove_dir_all(self.shared.runtime.workdir());
    }
}

impl Sim {
    /// Starts a simulator on `127.0.0.1:<free port>` with default options.
    pub async fn start() -> anyhow::Result<Sim> {
        SimBuilder::default().start().await
    }

    pub fn builder() -> SimBuilder {
        SimBuilder::default()
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.server.addr()
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr())
    }

    /// A client for the simulator (default namespace `default`).
    pub fn client(&self) -> kube::Client {
        self.client.clone()
    }

    /// A kubeconfig (YAML) pointing at the simulator, context `kube-sim`, namespace `default`.
    pub fn kubeconfig_yaml(&self) -> String {
        kubeconfig::yaml(self.addr())
    }

    /// Writes [`Sim::kubeconfig_yaml`] to `path` (for `KUBECONFIG=path` or `kubectl --kubeconfig`).
    pub fn write_kubeconfig(&self, path: impl AsRef<Path>) -> std::io::Result<PathBuf> {
        std::fs::write(path.as_ref(), self.kubeconfig_yaml())?;
        Ok(path.as_ref().to_path_buf())
    }

    /// The bearer token of `user` (e.g. `system:serviceaccount:NS:NAME`). Requests with it act
    /// as that user and are authorized by RBAC from the stored Roles, ClusterRoles and their
    /// bindings (`403 Forbidden` otherwise); requests without credentials stay cluster-admin.
    pub fn token_for(&self, user: &str) -> String {
        self.shared.users.token_for(user)
    }

    /// A kubeconfig like [`Sim::kubeconfig_yaml`] that authenticates as `user`.
    pub fn kubeconfig_yaml_as(&self, user: &str) -> String {
        kubeconfig::yaml_with_token(self.addr(), &self.token_for(user))
    }

    /// Writes [`Sim::kubeconfig_yaml_as`] to `path`.
    pub fn write_kubeconfig_as(
        &self,
        path: impl AsRef<Path>,
        user: &str,
    ) -> std::io::Result<PathBuf> {
        std::fs::write(path.as_ref(), self.kubeconfig_yaml_as(user))?;
        Ok(path.as_ref().to_path_buf())
    }

    /// The container runtime script: `sim.runtime().set(ImageRule::image(..), Behavior::..)`.
    pub fn runtime(&self) -> &Runtime {
        &self.shared.runtime
    }

    /// What the containers of a Job's pods saw and did, in the order they finished.
    pub fn pod_runs(&self, job: &str) -> Vec<ContainerRecord> {
        self.shared.runtime.job_runs(job)
    }

    /// Every container run so far.
    pub fn container_runs(&self) -> Vec<ContainerRecord> {
        self.shared.runtime.records()
    }

    /// Releases the `Behavior::hold()` containers of the pod or Job named `target`;
    /// returns how many were released (0 if none is held yet).
    pub fn release(&self, target: &str) -> usize {
        self.shared.runtime.release(target)
    }

    /// Fault injection controls.
    pub fn faults(&self) -> &Faults {
        &self.shared.faults
    }

    /// Pods the API server refuses on creation: `sim.admission().refuse_pods(image, why)`.
    pub fn admission(&self) -> &Admission {
        &self.shared.admission
    }

    /// Ends every open watch (clients see the stream close and re-watch).
    pub fn close_watches(&self) {
        self.shared.watch_close.send_modify(|g| *g += 1);
    }

    /// Simulates an API server outage: the listening socket is closed, so new connections are
    /// refused at once, and every open connection (including watches) is dropped.
    pub async fn pause(&self) {
        self.server.pause().await;
        self.close_watches();
    }

    /// Ends an outage started by [`Sim::pause`] or [`Sim::pause_hanging`].
    pub async fn resume(&self) -> std::io::Result<()> {
        self.shared.hang.send_replace(false);
        self.server.resume().await
    }

    /// Simulates an unresponsive API server: connections are accepted but every request
    /// hangs until [`Sim::resume`]; open watches are closed.
    pub fn pause_hanging(&self) {
        self.shared.hang.send_replace(true);
        self.close_watches();
    }

    /// Every request received so far (since the last [`Sim::clear_requests`]).
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.shared.requests.all()
    }

    /// A mark for [`Sim::requests_since`].
    pub fn request_mark(&self) -> u64 {
        self.shared.requests.mark()
    }

    /// Requests received since `mark` (from [`Sim::request_mark`]).
    pub fn requests_since(&self, mark: u64) -> Vec<RequestRecord> {
        self.shared.requests.since(mark)
    }

    pub fn clear_requests(&self) {
        self.shared.requests.clear();
    }

    /// Changes the time scale (simulated seconds per real second).
    pub fn set_time_scale(&self, scale: f64) {
        self.shared.clock.set_scale(scale);
    }

    pub fn time_scale(&self) -> f64 {
        self.shared.clock.scale()
    }

    /// Forgets the watch history, as an etcd compaction does: watches (and list continue
    /// tokens) from any resourceVersion before now get `410 Expired`.
    pub fn compact(&self) {
        self.shared.store.compact();
    }

    /// The current global resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.shared.store.current_rv()
    }

    /// Reads an object straight from the store (no request is logged). `group` is "" for
    /// core, `resource` the plural; `namespace` "" for cluster-scoped objects.
    pub fn get_object(
        &self,
        group: &str,
        resource: &str,
        namespace: &str,
        name: &str,
    ) -> Option<Value> {
        self.shared
            .store
            .get(&(group.to_string(), resource.to_string()), namespace, name)
    }

    /// Lists objects straight from the store (namespace `None` = all).
    pub fn list_objects(&self, group: &str, resource: &str, namespace: Option<&str>) -> Vec<Value> {
        self.shared
            .store
            .list(&(group.to_string(), resource.to_string()), namespace)
            .0
    }

    /// Removes an object from the store at once, bypassing finalizers (test cleanup).
    pub fn force_remove(&self, group: &str, resource: &str, namespace: &str, name: &str) -> bool {
        matches!(
            self.shared.store.modify(
                &(group.to_string(), resource.to_string()),
                namespace,
                name,
                |_| Ok(Change::Delete),
            ),
            Ok(store::Outcome::Deleted(_))
        )
    }
}
