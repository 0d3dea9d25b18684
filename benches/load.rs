//! Load harness: the real `job-executor` binary against an API server, driven over HTTP by
//! `wrk`, with the API server's and a bare axum handler's numbers measured in the same run.
//!
//! The API server is kube-sim, in process (the default), or with `LOAD_TARGET=cluster` the real
//! control plane of `scripts/cluster` (started when it is not up), each phase in a fresh
//! namespace where the chart is installed and the operator runs under the installed
//! ServiceAccount's token. The ingest phases (ingest, fetch, push) involve no API server and run
//! on kube-sim only.
//!
//! `cargo bench --bench load` prints the full table (docs/BENCHMARKS.md); under `cargo test`
//! (or with `--quick`) every measurement runs briefly, only to prove the harness works.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
// The tests' git host: `git http-backend` behind axum, here made to answer slowly.
#[allow(dead_code)]
#[path = "../tests/support/git.rs"]
mod git_host;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::response::IntoResponse;
use axum::routing::post;
use bytes::Bytes;
use futures::StreamExt;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use job_executor::crd::{CrdKind, JobRun, crd};
use job_executor::event::CloudEvent;
use job_executor::ingest::plan::{EventPlan, plan_event};
use job_executor::settings::Settings;
use job_executor::source::Source;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Namespace, Pod, ServiceAccount};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::watcher;
use kube_sim::{Behavior, ImageRule, Sim};
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_job-executor");
const CLOUDEVENT: &str = "application/cloudevents+json";

#[derive(Clone, Copy)]
struct Plan {
    wrk_seconds: u32,
    /// The latency phase: one three-task event every `steady_interval` for `steady_seconds`.
    steady_interval: Duration,
    steady_seconds: u64,
    /// How long the latency phase waits for its last runs to finish.
    finish_seconds: u64,
    in_flight_runs: usize,
    /// How long the in-flight phase may take before it reports what it reached.
    in_flight_seconds: u64,
    /// The retained phase: finished runs stored before the operator starts.
    retained_runs: usize,
    /// A smoke run (`cargo test`): its timings are not measurements, so no target is shown
    /// beside them; what is exact (answers, request counts, every phase measured) is checked.
    quick: bool,
}

impl Plan {
    /// ` (target TEXT)` beside a measurement, or nothing in quick mode.
    fn goal(self, text: &str) -> String {
        if self.quick {
            String::new()
        } else {
            format!(" (target {text})")
        }
    }
}

/// What a run of the harness proves beside its numbers, whatever the mode: every answer was
/// 2xx, every phase measured something, a run's API writes stay within their bound and nothing
/// is polled. Each broken one is a line here, and the harness exits 1.
#[derive(Default)]
struct Problems(Mutex<Vec<String>>);

impl Problems {
    fn check(&self, ok: bool, problem: impl FnOnce() -> String) {
        if !ok {
            let problem = problem();
            eprintln!("problem: {problem}");
            self.0.lock().unwrap().push(problem);
        }
    }

    /// `what` was answered only 2xx.
    fn all_2xx(&self, what: &str, non_2xx: u64) {
        self.check(non_2xx == 0, || {
            format!("{what}: {non_2xx} non-2xx answers")
        });
    }
}

const FULL: Plan = Plan {
    wrk_seconds: 10,
    steady_interval: Duration::from_millis(20),
    steady_seconds: 20,
    finish_seconds: 120,
    in_flight_runs: 10_000,
    in_flight_seconds: 600,
    retained_runs: 100_000,
    quick: false,
};

const QUICK: Plan = Plan {
    wrk_seconds: 1,
    steady_interval: Duration::from_millis(20),
    steady_seconds: 1,
    finish_seconds: 60,
    in_flight_runs: 50,
    in_flight_seconds: 60,
    retained_runs: 200,
    quick: true,
};

/// The real control plane keeps up with less: its Job controller finished about 4 Jobs/s here
/// (pods created at about 8/s), consistent with kube-controller-manager's client-side limit of
/// 20 requests/s (client-go's default `--kube-api-qps`, which `scripts/cluster` keeps) and about
/// five requests per Job (create the pod, status updates, the pod's tracking finalizer). So the
/// latency phase sends one three-task event per second (3 Jobs/s), and the in-flight phase
/// holds 2,000 runs.
const FULL_CLUSTER: Plan = Plan {
    wrk_seconds: 10,
    steady_interval: Duration::from_secs(1),
    steady_seconds: 60,
    finish_seconds: 300,
    in_flight_runs: 2_000,
    in_flight_seconds: 600,
    retained_runs: 100_000,
    quick: false,
};

const QUICK_CLUSTER: Plan = Plan {
    wrk_seconds: 1,
    steady_interval: Duration::from_secs(1),
    steady_seconds: 3,
    finish_seconds: 120,
    in_flight_runs: 20,
    in_flight_seconds: 120,
    retained_runs: 200,
    quick: true,
};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The bench's job configs. The task of the `hold` action stays running: kube-sim holds
/// `bench:hold`; on the real control plane KWOK runs `job-executor.test/sleep` for `args[0]`
/// seconds (docs/cluster.md).
fn config_dir(hold_task: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("je-load-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("bench/job")).unwrap();
    let gates = common::gate_actions();
    std::fs::write(
        dir.join("bench/job/config.yaml"),
        format!(
            "apiVersion: v2\nactions:\n\
             \x20 - name: one\n    events: [{{name: sh.keptn.event.one.triggered}}]\n    tasks:\n      - {{name: only, image: 'bench:quick'}}\n\
             \x20 - name: three\n    events: [{{name: sh.keptn.event.three.triggered}}]\n    tasks:\n      - {{name: first, image: 'bench:quick'}}\n      - {{name: second, image: 'bench:quick'}}\n      - {{name: third, image: 'bench:quick'}}\n\
             \x20 - name: hold\n    events: [{{name: sh.keptn.event.hold.triggered}}]\n    tasks:\n      - {hold_task}\n{gates}",
        ),
    )
    .unwrap();
    dir
}

fn event(event_type: &str, id: &str) -> Value {
    json!({
        "specversion": "1.0", "id": id, "source": "load", "type": event_type,
        "shkeptncontext": "5f0b6c2e-3d4a-4b8f-9e1c-2a7d6f3b8c90",
        "data": {"project": "load", "stage": "dev", "service": "bench",
                 "labels": {"run": "load"}, "padding": "x".repeat(1500)}
    })
}

/// The real control plane of `scripts/cluster`, as the admin sees it.
struct Cluster {
    admin_kubeconfig: PathBuf,
    /// The multi-call binary: `kubectl`, `helm`.
    bin: PathBuf,
    /// The state directory (`audit.log`).
    dir: PathBuf,
    /// `https://127.0.0.1:PORT`
    url: String,
    admin_token: String,
    client: kube::Client,
    /// Process ids of the components, by `scripts/cluster env` name (`APISERVER_PID`, …).
    pids: BTreeMap<String, u32>,
    /// Namespaces of earlier phases still being deleted: a phase starts when they are gone.
    deleting: Mutex<Vec<String>>,
}

impl Cluster {
    /// `scripts/cluster up` (at once when it already runs), its environment, the JobRun CRD.
    async fn connect() -> Cluster {
        let script = root().join("scripts/cluster");
        let up = Command::new(&script)
            .arg("up")
            .status()
            .expect("run scripts/cluster up");
        assert!(
            up.success(),
            "scripts/cluster up failed (its output is above)"
        );
        let out = Command::new(&script)
            .arg("env")
            .output()
            .expect("run scripts/cluster env");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let env: BTreeMap<String, String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|line| line.strip_prefix("export "))
            .filter_map(|line| line.split_once('='))
            .map(|(k, v)| (k.to_string(), v.trim_matches('\'').to_string()))
            .collect();
        let admin_kubeconfig = PathBuf::from(&env["KUBECONFIG"]);
        let text = std::fs::read_to_string(&admin_kubeconfig).unwrap();
        let admin_token = text
            .lines()
            .find_map(|l| l.trim().strip_prefix("token: "))
            .expect("a token in the admin kubeconfig")
            .trim()
            .to_string();
        let config = kube::Config::from_custom_kubeconfig(
            Kubeconfig::read_from(&admin_kubeconfig).unwrap(),
            &KubeConfigOptions::default(),
        )
        .await
        .unwrap();
        let cluster = Cluster {
            bin: PathBuf::from(&env["CLUSTER_BIN"]),
            dir: PathBuf::from(&env["CLUSTER_DIR"]),
            url: format!("https://127.0.0.1:{}", env["API_PORT"]),
            admin_token,
            client: kube::Client::try_from(config).unwrap(),
            pids: env
                .iter()
                .filter(|(k, _)| k.ends_with("_PID"))
                .filter_map(|(k, v)| Some((k.clone(), v.parse().ok()?)))
                .collect(),
            admin_kubeconfig,
            deleting: Mutex::new(Vec::new()),
        };
        let crds = root().join("crds");
        cluster.kubectl(&["apply", "-f", crds.to_str().unwrap()]);
        cluster.kubectl(&[
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "customresourcedefinition/jobruns.job-executor.dev",
        ]);
        cluster
    }

    /// `kubectl ARGS` as the admin. A request that never reached the server (its TLS handshake
    /// timed out, the connection was refused: two cores shared with a busy control plane) is
    /// sent again, up to three times; any other failure is kubectl's answer.
    fn kubectl_output(&self, args: &[&str]) -> Output {
        let mut attempt = 1;
        loop {
            let output = Command::new(&self.bin)
                .arg("kubectl")
                .args(args)
                .env("KUBECONFIG", &self.admin_kubeconfig)
                .env("KUBECACHEDIR", self.dir.join("kube-cache"))
                .output()
                .expect("run kubectl");
            let stderr = String::from_utf8_lossy(&output.stderr);
            let unsent = stderr.contains("TLS handshake timeout")
                || stderr.contains("connect: connection refused");
            if output.status.success() || !unsent || attempt == 3 {
                return output;
            }
            eprintln!(
                "(kubectl {args:?}: not sent, again in 2 s: {})",
                stderr.trim()
            );
            attempt += 1;
            std::thread::sleep(Duration::from_secs(2));
        }
    }

    /// `kubectl ARGS` as the admin; its output, or the run fails with kubectl's error.
    fn kubectl(&self, args: &[&str]) -> String {
        let output = self.kubectl_output(args);
        assert!(
            output.status.success(),
            "kubectl {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    fn helm(&self, args: &[&str]) {
        let output = Command::new(&self.bin)
            .arg("helm")
            .args(args)
            .env("KUBECONFIG", &self.admin_kubeconfig)
            .env("HELM_CACHE_HOME", self.dir.join("helm/cache"))
            .env("HELM_CONFIG_HOME", self.dir.join("helm/config"))
            .env("HELM_DATA_HOME", self.dir.join("helm/data"))
            .output()
            .expect("run helm");
        assert!(
            output.status.success(),
            "helm {args:?} failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// A fresh namespace enforcing the `restricted` Pod Security Standard, the chart installed
    /// in it (the operator's Deployment scaled to 0), and a kubeconfig with a token of the
    /// installed ServiceAccount (`kubectl create token`), written to `file`.
    async fn install(&self, namespace: &str, file: &Path) {
        self.kubectl(&["create", "namespace", namespace]);
        self.kubectl(&[
            "label",
            "namespace",
            namespace,
            "pod-security.kubernetes.io/enforce=restricted",
            "pod-security.kubernetes.io/enforce-version=latest",
        ]);
        let chart = root().join("charts/job-executor");
        self.helm(&[
            "install",
            "job-executor",
            chart.to_str().unwrap(),
            "--namespace",
            namespace,
            "--set",
            "replicas=0",
        ]);
        let token = self.kubectl(&[
            "-n",
            namespace,
            "create",
            "token",
            "job-executor",
            "--duration",
            "6h",
        ]);
        let admin = std::fs::read_to_string(&self.admin_kubeconfig).unwrap();
        std::fs::write(file, admin.replace(&self.admin_token, token.trim())).unwrap();
        // The Job controller cannot create pods before the namespace's `default` account exists.
        let accounts: Api<ServiceAccount> = Api::namespaced(self.client.clone(), namespace);
        let deadline = Instant::now() + Duration::from_secs(30);
        while accounts.get_opt("default").await.unwrap().is_none() {
            assert!(
                Instant::now() < deadline,
                "no default ServiceAccount in {namespace}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Starts deleting a phase's namespace (and so everything in it); the next phase waits for
    /// it to be gone.
    fn delete_namespace(&self, namespace: &str) {
        let _ = self.kubectl_output(&["delete", "namespace", namespace, "--wait=false"]);
        self.deleting.lock().unwrap().push(namespace.to_string());
    }

    /// Waits (at most 10 minutes) until the namespaces of earlier phases are gone, so no phase
    /// inherits another's objects or the controllers' backlog for them.
    async fn wait_deleted(&self) {
        let namespaces: Api<Namespace> = Api::all(self.client.clone());
        let pending: Vec<String> = std::mem::take(&mut *self.deleting.lock().unwrap());
        let started = Instant::now();
        for namespace in pending {
            while namespaces.get_opt(&namespace).await.unwrap().is_some() {
                if started.elapsed() > Duration::from_secs(600) {
                    eprintln!("warning: namespace {namespace} still there after 600 s; going on");
                    break;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            eprintln!(
                "(namespace {namespace} deleted, waited {:.0} s)",
                started.elapsed().as_secs_f64()
            );
        }
    }

    /// The first JobRun the API server stores after the CRD was created takes it seconds
    /// (requests stall meanwhile): one created in a dry run takes that out of the measurements.
    async fn warm_up(&self, dir: &Path) {
        let runs: Api<JobRun> = Api::namespaced(self.client.clone(), "default");
        let params = PostParams {
            dry_run: true,
            ..PostParams::default()
        };
        let started = Instant::now();
        let mut run = ceiling_run(dir, "default");
        run.metadata.name = Some("warm-up".into());
        runs.create(&params, &run).await.unwrap();
        eprintln!(
            "(a JobRun created in a dry run in {:.2} s)",
            started.elapsed().as_secs_f64()
        );
    }

    /// CPU seconds of the API server and etcd so far.
    fn server_cpu(&self) -> (f64, f64) {
        (
            cpu_seconds(self.pids["APISERVER_PID"]),
            cpu_seconds(self.pids["ETCD_PID"]),
        )
    }

    fn audit_len(&self) -> u64 {
        std::fs::metadata(self.dir.join("audit.log")).map_or(0, |m| m.len())
    }

    /// The audit records written after byte `offset` of the audit log (`scripts/cluster` logs
    /// every request of a ServiceAccount, Metadata level) of `user`, one per request.
    fn audit_since(&self, offset: u64, user: &str) -> Vec<Value> {
        let mut file = std::fs::File::open(self.dir.join("audit.log")).unwrap();
        file.seek(SeekFrom::Start(offset)).unwrap();
        let mut text = String::new();
        file.read_to_string(&mut text).unwrap();
        let mut seen = BTreeSet::new();
        text.lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter(|e| e["user"]["username"] == user)
            // A watch is logged when it starts and when it ends: count each request once.
            .filter(|e| seen.insert(e["auditID"].as_str().unwrap_or_default().to_string()))
            .collect()
    }
}

/// Where the phases that involve an API server run (`LOAD_TARGET`).
#[derive(Clone)]
enum Target {
    Sim,
    Cluster(Arc<Cluster>),
}

impl Target {
    fn name(&self) -> &'static str {
        match self {
            Target::Sim => "kube-sim",
            Target::Cluster(_) => "the real API server",
        }
    }
}

struct Operator {
    child: Child,
    ingest: SocketAddr,
    admin: SocketAddr,
}

impl Operator {
    /// A gauge or counter without labels from the operator's `/metrics`.
    async fn metric(&self, name: &str) -> Option<f64> {
        let client: Client<HttpConnector, Full<Bytes>> =
            Client::builder(TokioExecutor::new()).build(HttpConnector::new());
        let response = client
            .get(format!("http://{}/metrics", self.admin).parse().ok()?)
            .await
            .ok()?;
        let body = response.into_body().collect().await.ok()?.to_bytes();
        String::from_utf8_lossy(&body).lines().find_map(|line| {
            let (key, value) = line.split_once(' ')?;
            (key == name).then(|| value.trim().parse().ok())?
        })
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

enum Server {
    Sim(Sim),
    Cluster(Arc<Cluster>),
}

/// Where a request count starts.
enum Mark {
    Sim(u64),
    Audit(u64),
}

/// A fresh API server (kube-sim) or a fresh namespace of the real one with the chart installed,
/// and the operator against it, ready: each phase gets its own, so no phase inherits another's
/// objects or backlog.
struct Stack {
    /// `LOAD_REPLICAS` replicas of the operator (one by default), the first started first.
    operators: Vec<Operator>,
    server: Server,
    /// Where the operator puts JobRuns and Jobs.
    namespace: String,
    /// The admin's client (kube-sim's, or the cluster admin's).
    client: kube::Client,
}

impl Drop for Stack {
    fn drop(&mut self) {
        if let Server::Cluster(cluster) = &self.server {
            for operator in &mut self.operators {
                let _ = operator.child.kill();
                let _ = operator.child.wait();
            }
            cluster.delete_namespace(&self.namespace);
        }
    }
}

impl Stack {
    async fn start(
        target: &Target,
        config: &Path,
        phase: &str,
        sink: &str,
        replicas: usize,
        limits: Limits,
    ) -> Stack {
        match target {
            Target::Sim => {
                let sim = Sim::builder().start().await.unwrap();
                sim.runtime()
                    .set(ImageRule::image("bench:hold"), Behavior::hold());
                let kubeconfig = sim
                    .write_kubeconfig(config.join(format!("kubeconfig-{phase}")))
                    .unwrap();
                let crds: Api<CustomResourceDefinition> = Api::all(sim.client());
                for crd in [crd(CrdKind::Jobrun), crd(CrdKind::Jobschedule)] {
                    crds.create(&PostParams::default(), &crd).await.unwrap();
                }
                let operators =
                    start_operators(&kubeconfig, config, sink, "default", replicas, limits).await;
                Stack {
                    operators,
                    client: sim.client(),
                    server: Server::Sim(sim),
                    namespace: "default".into(),
                }
            }
            Target::Cluster(cluster) => {
                cluster.wait_deleted().await;
                let namespace = format!("load-{phase}-{}", std::process::id());
                let kubeconfig = config.join(format!("kubeconfig-{phase}"));
                cluster.install(&namespace, &kubeconfig).await;
                let operators =
                    start_operators(&kubeconfig, config, sink, &namespace, replicas, limits).await;
                Stack {
                    operators,
                    client: cluster.client.clone(),
                    server: Server::Cluster(cluster.clone()),
                    namespace,
                }
            }
        }
    }

    /// The first replica's process.
    fn pid(&self) -> u32 {
        self.operators[0].child.id()
    }

    /// The first replica's ingest.
    fn ingest(&self) -> SocketAddr {
        self.operators[0].ingest
    }

    /// CPU seconds of every replica.
    fn cpu_seconds(&self) -> f64 {
        self.operators
            .iter()
            .map(|o| cpu_seconds(o.child.id()))
            .sum()
    }

    /// The URL of the JobRuns of the stack's namespace, and the headers a request to it needs.
    fn jobruns_url(&self) -> (String, Vec<(String, String)>) {
        match &self.server {
            Server::Sim(sim) => jobruns_endpoint(&sim.url(), &self.namespace, None),
            Server::Cluster(cluster) => {
                jobruns_endpoint(&cluster.url, &self.namespace, Some(&cluster.admin_token))
            }
        }
    }

    async fn count_jobruns(&self) -> usize {
        match &self.server {
            Server::Sim(sim) => sim
                .list_objects("job-executor.dev", "jobruns", Some(&self.namespace))
                .len(),
            Server::Cluster(_) => {
                let runs: Api<JobRun> = Api::namespaced(self.client.clone(), &self.namespace);
                runs.list_metadata(&ListParams::default())
                    .await
                    .unwrap()
                    .items
                    .len()
            }
        }
    }

    /// Reads every JobRun of the namespace in pages of 500, as the operator's watch lists them,
    /// over the same transport, without building them: what listing them costs the API server
    /// and the connection alone. The number of runs read.
    async fn list_jobruns_bare(&self) -> usize {
        #[derive(serde::Deserialize)]
        struct Page {
            metadata: PageMetadata,
            items: Vec<serde::de::IgnoredAny>,
        }
        #[derive(serde::Deserialize)]
        struct PageMetadata {
            #[serde(rename = "continue")]
            next: Option<String>,
        }
        let request = kube::core::Request::new(format!(
            "/apis/job-executor.dev/v1alpha1/namespaces/{}/jobruns",
            self.namespace
        ));
        let mut params = ListParams::default().limit(500);
        let mut read = 0;
        loop {
            let text = self
                .client
                .request_text(request.list(&params).unwrap())
                .await
                .unwrap();
            let page: Page = serde_json::from_str(&text).unwrap();
            read += page.items.len();
            match page.metadata.next.filter(|next| !next.is_empty()) {
                Some(next) => params.continue_token = Some(next),
                None => return read,
            }
        }
    }

    /// Tasks whose pod runs (kube-sim: containers it holds).
    async fn running_tasks(&self) -> usize {
        match &self.server {
            Server::Sim(sim) => sim.runtime().held().len(),
            Server::Cluster(_) => {
                let pods: Api<Pod> = Api::namespaced(self.client.clone(), &self.namespace);
                pods.list_metadata(&ListParams::default().fields("status.phase=Running"))
                    .await
                    .map_or(0, |list| list.items.len())
            }
        }
    }

    fn request_mark(&self) -> Mark {
        match &self.server {
            Server::Sim(sim) => Mark::Sim(sim.request_mark()),
            Server::Cluster(cluster) => Mark::Audit(cluster.audit_len()),
        }
    }

    /// The operator's API requests since `mark`, counted by `verb resource[/subresource]`:
    /// kube-sim's request log, or the real API server's audit log of the installed
    /// ServiceAccount.
    fn requests_since(&self, mark: Mark) -> BTreeMap<String, u64> {
        let mut by_verb: BTreeMap<String, u64> = BTreeMap::new();
        for (request, _) in self.request_log_since(mark) {
            *by_verb.entry(request).or_default() += 1;
        }
        by_verb
    }

    /// The operator's API requests since `mark` as `verb resource[/subresource]`, each with
    /// when the server received it (seconds, from an arbitrary origin).
    fn request_log_since(&self, mark: Mark) -> Vec<(String, f64)> {
        match (&self.server, mark) {
            (Server::Sim(sim), Mark::Sim(mark)) => {
                let requests = sim.requests_since(mark);
                let Some(origin) = requests.first().map(|r| r.received) else {
                    return Vec::new();
                };
                requests
                    .into_iter()
                    .map(|request| {
                        // A non-resource URL (`/version`) is named by its path.
                        let resource = if request.is_resource_request() {
                            request.resource_path()
                        } else {
                            request.path.clone()
                        };
                        let at = request.received.saturating_duration_since(origin);
                        (format!("{} {resource}", request.verb), at.as_secs_f64())
                    })
                    .collect()
            }
            (Server::Cluster(cluster), Mark::Audit(offset)) => {
                let user = format!("system:serviceaccount:{}:job-executor", self.namespace);
                cluster
                    .audit_since(offset, &user)
                    .into_iter()
                    .map(|record| {
                        let object = &record["objectRef"];
                        let resource =
                            match (object["resource"].as_str(), object["subresource"].as_str()) {
                                (Some(resource), Some(sub)) => format!("{resource}/{sub}"),
                                (Some(resource), None) => resource.to_string(),
                                // A non-resource URL (`/version`) is named by its path.
                                _ => record["requestURI"]
                                    .as_str()
                                    .unwrap_or_default()
                                    .split('?')
                                    .next()
                                    .unwrap_or_default()
                                    .to_string(),
                            };
                        let verb = record["verb"].as_str().unwrap_or_default();
                        let at = record["requestReceivedTimestamp"]
                            .as_str()
                            .and_then(|t| t.parse::<jiff::Timestamp>().ok())
                            .map_or(0.0, |t| t.as_microsecond() as f64 / 1e6);
                        (format!("{verb} {resource}"), at)
                    })
                    .collect()
            }
            _ => unreachable!("a mark of another server"),
        }
    }

    /// How long the server's records of a request may lag behind its answer.
    fn settle(&self) -> Duration {
        match self.server {
            Server::Sim(_) => Duration::from_millis(300),
            Server::Cluster(_) => Duration::from_secs(1),
        }
    }

    /// CPU seconds the API server and etcd used so far (the real control plane only).
    fn server_cpu(&self) -> Option<(f64, f64)> {
        match &self.server {
            Server::Sim(_) => None,
            Server::Cluster(cluster) => Some(cluster.server_cpu()),
        }
    }
}

/// `replicas` operators, each started and ready, under distinct identities.
async fn start_operators(
    kubeconfig: &Path,
    config: &Path,
    sink: &str,
    namespace: &str,
    replicas: usize,
    limits: Limits,
) -> Vec<Operator> {
    let mut operators = Vec::new();
    for replica in 0..replicas {
        let identity = format!("load-{replica}");
        let source = directory_source(config);
        operators
            .push(start_operator(kubeconfig, &source, sink, namespace, &identity, limits).await);
    }
    operators
}

/// The operator's flags that bound its work, passed explicitly so the table says what each
/// phase ran with.
#[derive(Clone, Copy)]
struct Limits {
    /// `--kube-api-qps`, `--kube-api-burst`: the controller's request limit.
    qps: u32,
    burst: u32,
    /// `--max-runs-in-flight` (0: no bound).
    max_runs_in_flight: u32,
}

/// As shipped (the flags' defaults).
const SHIPPED: Limits = Limits {
    qps: 500,
    burst: 1000,
    max_runs_in_flight: 10_000,
};

impl Limits {
    fn args(self) -> Vec<String> {
        [
            "--kube-api-qps".to_string(),
            self.qps.to_string(),
            "--kube-api-burst".to_string(),
            self.burst.to_string(),
            "--max-runs-in-flight".to_string(),
            self.max_runs_in_flight.to_string(),
        ]
        .to_vec()
    }
}

/// The flags that read the bench's configs from the directory `config`.
fn directory_source(config: &Path) -> Vec<String> {
    vec!["--config-dir".into(), config.to_str().unwrap().into()]
}

/// The flags that read the bench's configs from a git repository made of the directory
/// `config` (its one service at `bench/job/config.yaml` of branch `dev`: Keptn's layout for the
/// events' stage), reached through `file://`, with the shipped fetch interval.
fn git_source(config: &Path) -> Vec<String> {
    let repo = config.join("repo");
    config_repository(config, &repo);
    vec![
        "--git-url".into(),
        format!("file://{}", repo.display()),
        "--git-cache-dir".into(),
        config.join("git-cache").to_str().unwrap().into(),
    ]
}

/// Makes `repo` anew a git repository whose branch `dev` holds the bench's config of the
/// directory `config`, at the same path.
fn config_repository(config: &Path, repo: &Path) {
    let _ = std::fs::remove_dir_all(repo);
    std::fs::create_dir_all(repo.join("bench/job")).unwrap();
    std::fs::copy(
        config.join("bench/job/config.yaml"),
        repo.join("bench/job/config.yaml"),
    )
    .unwrap();
    common::commit_as_repository(repo, "dev");
}

async fn start_operator(
    kubeconfig: &Path,
    source: &[String],
    sink: &str,
    namespace: &str,
    identity: &str,
    limits: Limits,
) -> Operator {
    let mut child = Command::new(BIN)
        .arg("run")
        .args(source)
        .args([
            "--sink-url",
            sink,
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--job-namespace",
            namespace,
            "--concurrency",
            "64",
            "--identity",
            identity,
        ])
        .args(limits.args())
        .env("KUBECONFIG", kubeconfig)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let address = |key: &str| -> SocketAddr {
        line.split_whitespace()
            .find_map(|p| p.strip_prefix(key))
            .unwrap()
            .parse()
            .unwrap()
    };
    let (ingest, admin) = (address("ingest="), address("admin="));
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    // Long enough for a start with 100,000 runs to list (the retained phase reports the time).
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let ready = client
            .get(format!("http://{admin}/readyz").parse().unwrap())
            .await
            .is_ok_and(|r| r.status() == 200);
        if ready {
            break;
        }
        assert!(Instant::now() < deadline, "the operator never became ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Operator {
        child,
        ingest,
        admin,
    }
}

/// A fresh kube-sim stack, and an operator reading its config from the git repository at
/// `url`, fetched every `interval_seconds`: the ingest phases with a git host.
async fn start_with_git_host(
    dir: &Path,
    sink: &str,
    phase: &str,
    url: &str,
    interval_seconds: u32,
) -> (Stack, Operator) {
    let stack = Stack::start(&Target::Sim, dir, phase, sink, 1, SHIPPED).await;
    let cache = dir.join(format!("{phase}-git-cache"));
    let _ = std::fs::remove_dir_all(&cache);
    let interval = interval_seconds.to_string();
    let source = [
        "--git-url",
        url,
        "--git-cache-dir",
        cache.to_str().unwrap(),
        "--git-fetch-interval-seconds",
        &interval,
    ]
    .map(String::from);
    let operator = start_operator(
        &dir.join(format!("kubeconfig-{phase}")),
        &source,
        sink,
        "default",
        &format!("load-{phase}"),
        SHIPPED,
    )
    .await;
    (stack, operator)
}

/// User plus system CPU time of a process, from `/proc/<pid>/stat`.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 after the name.
    (ticks(11) + ticks(12)) / 100.0
}

/// A process's resident memory, and of it what is anonymous (heap, stacks) and what is mapped
/// from files (the binary's code and data as the page cache holds them).
struct Memory {
    rss: f64,
    anonymous: f64,
    file: f64,
}

impl Memory {
    fn summary(&self) -> String {
        format!(
            "{:.1} MiB (anonymous {:.1}, mapped from the binary {:.1})",
            self.rss, self.anonymous, self.file
        )
    }
}

fn memory(pid: u32) -> Memory {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    };
    Memory {
        rss: field("VmRSS:"),
        anonymous: field("RssAnon:"),
        file: field("RssFile:"),
    }
}

/// The machine's 1-minute load average (`uptime`), from `/proc/loadavg`.
fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}

/// Requests per second `wrk -t2 -c32` reached, and how many answers were not 2xx.
fn wrk(url: &str, script: &Path, seconds: u32) -> (f64, u64) {
    wrk_with(url, script, seconds, 2, 32)
}

/// `wrk` on every `(url, script)` at once, the 2 threads and 32 connections of [`wrk`] shared
/// among them: the summed rate and non-2xx answers.
fn wrk_each(senders: &[(String, PathBuf)], seconds: u32) -> (f64, u64) {
    if let [(url, script)] = senders {
        return wrk(url, script, seconds);
    }
    let threads = (2 / senders.len()).max(1);
    let connections = (32 / senders.len()).max(1);
    std::thread::scope(|scope| {
        let runs: Vec<_> = senders
            .iter()
            .map(|(url, script)| {
                scope.spawn(move || wrk_with(url, script, seconds, threads, connections))
            })
            .collect();
        runs.into_iter()
            .map(|run| run.join().unwrap())
            .fold((0.0, 0), |(rate, errors), (r, e)| (rate + r, errors + e))
    })
}

fn wrk_with(
    url: &str,
    script: &Path,
    seconds: u32,
    threads: usize,
    connections: usize,
) -> (f64, u64) {
    let measured = wrk_run(url, script, seconds, threads, connections, &[]);
    (measured.rate, measured.non_2xx)
}

/// What one `wrk` run printed.
struct Wrk {
    rate: f64,
    non_2xx: u64,
    /// The whole output (`--latency` adds the percentiles).
    text: String,
}

impl Wrk {
    /// A latency `wrk` printed, as it printed it: `max` of the `Latency` row, or a percentile
    /// (`99%`) of `--latency`'s distribution.
    fn latency(&self, which: &str) -> Option<&str> {
        self.text.lines().find_map(|line| {
            let mut words = line.split_whitespace();
            match (which, words.next()) {
                ("max", Some("Latency")) => words.nth(2),
                (percent, Some(first)) if first == percent => words.next(),
                _ => None,
            }
        })
    }

    /// `p50 …, p90 …, p99 …, max …` as `wrk --latency` printed them; a problem of `what` when
    /// it printed no such lines.
    fn latencies(&self, what: &str, problems: &Problems) -> String {
        let [p50, p90, p99, max] = ["50%", "90%", "99%", "max"].map(|which| self.latency(which));
        let found = (|| {
            Some(format!(
                "p50 {}, p90 {}, p99 {}, max {}",
                p50?, p90?, p99?, max?
            ))
        })();
        problems.check(found.is_some(), || {
            format!("{what}: wrk printed no latencies: {}", self.text)
        });
        found.unwrap_or_default()
    }
}

fn wrk_run(
    url: &str,
    script: &Path,
    seconds: u32,
    threads: usize,
    connections: usize,
    extra: &[&str],
) -> Wrk {
    let output = Command::new("wrk")
        .args([
            &format!("-t{threads}"),
            &format!("-c{connections}"),
            &format!("-d{seconds}s"),
        ])
        .args(extra)
        .arg("-s")
        .arg(script)
        .arg(url)
        .output()
        .expect("wrk is installed by scripts/setup-tools (apt-get install wrk)");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let Some(rate) = text
        .lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
    else {
        panic!(
            "wrk {url} measured nothing: {text}{}",
            String::from_utf8_lossy(&output.stderr)
        );
    };
    let non_2xx = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Non-2xx or 3xx responses:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    Wrk {
        rate,
        non_2xx,
        text,
    }
}

/// What a wrk script changes in the body of each request.
#[derive(Clone, Copy)]
enum Vary {
    Nothing,
    /// `EVENTID` replaced with a fresh id.
    EventId,
    /// `SERVICE` replaced with `bench-N`, N going round the services in turn.
    Service(usize),
}

/// A wrk script posting `body` with `headers`, each request's body changed as `vary` says.
fn wrk_script(
    dir: &Path,
    name: &str,
    body: &Value,
    headers: &[(String, String)],
    vary: Vary,
) -> PathBuf {
    let lua = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
    let body = lua(&body.to_string());
    let replace = match vary {
        Vary::Nothing => None,
        Vary::EventId => Some("\"EVENTID\", tid .. \"-\" .. n".to_string()),
        Vary::Service(services) => Some(format!("\"SERVICE\", \"bench-\" .. (n % {services})")),
    };
    let script = if let Some(replace) = replace {
        let table = headers
            .iter()
            .map(|(k, v)| format!("[\"{}\"] = \"{}\"", lua(k), lua(v)))
            .collect::<Vec<_>>()
            .join(", ");
        format!(
            "local threads = 0\nfunction setup(thread)\n  threads = threads + 1\n  thread:set(\"tid\", threads)\nend\nlocal n = 0\nrequest = function()\n  n = n + 1\n  local body = string.gsub(\"{body}\", {replace})\n  return wrk.format(\"POST\", nil, {{{table}}}, body)\nend\n"
        )
    } else {
        let mut script = format!("wrk.method = \"POST\"\nwrk.body = \"{body}\"\n");
        for (k, v) in headers {
            script.push_str(&format!("wrk.headers[\"{}\"] = \"{}\"\n", lua(k), lua(v)));
        }
        script
    };
    let path = dir.join(name);
    std::fs::write(&path, script).unwrap();
    path
}

fn content_type(value: &str) -> Vec<(String, String)> {
    vec![("content-type".into(), value.into())]
}

fn percentiles(mut samples: Vec<Duration>) -> String {
    if samples.is_empty() {
        return "no samples".into();
    }
    samples.sort();
    let at = |p: f64| samples[((samples.len() as f64 - 1.0) * p).round() as usize];
    format!(
        "p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms (n = {})",
        at(0.5).as_secs_f64() * 1e3,
        at(0.99).as_secs_f64() * 1e3,
        samples[samples.len() - 1].as_secs_f64() * 1e3,
        samples.len()
    )
}

async fn post_event(
    client: &Client<HttpConnector, Full<Bytes>>,
    addr: SocketAddr,
    body: &Value,
) -> (u16, Value) {
    let request = http::Request::post(format!("http://{addr}/events"))
        .header("content-type", "application/cloudevents+json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap();
    let response = client.request(request).await.unwrap();
    let status = response.status().as_u16();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

#[derive(Default)]
struct JobTimes {
    created: HashMap<String, Instant>,
    completed: HashMap<String, Instant>,
}

/// One line of the table: what, the result, and the machine's load when its phase started.
struct Row {
    name: String,
    value: String,
    load: f64,
}

/// Prints each result as soon as it is measured (a long run keeps what it got) and keeps it for
/// the table.
fn report(rows: &mut Vec<Row>, load: f64, name: String, value: String) {
    eprintln!("{name}: {value} (load average {load:.2} at the phase's start)");
    rows.push(Row { name, value, load });
}

/// The sink every operator reports to, and the bare handler ingest is compared with: both only
/// answer 202. Returns their addresses and the count of `.finished` events the sink received.
async fn start_receivers() -> (SocketAddr, SocketAddr, Arc<Mutex<usize>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sink_addr = listener.local_addr().unwrap();
    let finished = Arc::new(Mutex::new(0usize));
    let counter = finished.clone();
    let app = Router::new().route(
        "/events",
        post(move |headers: http::HeaderMap, _body: Bytes| {
            let counter = counter.clone();
            async move {
                if headers
                    .get("ce-type")
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|t| t.ends_with(".finished"))
                {
                    *counter.lock().unwrap() += 1;
                }
                http::StatusCode::ACCEPTED
            }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    let bare_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let bare_addr = bare_listener.local_addr().unwrap();
    // `/events` reads the body and answers; `/parse` also parses it as JSON, as any handler
    // of events must: the floor of what ingest can cost.
    let bare = Router::new()
        .route(
            "/events",
            post(|_body: Bytes| async { http::StatusCode::ACCEPTED }),
        )
        .route(
            "/parse",
            post(|body: Bytes| async move {
                match serde_json::from_slice::<Value>(&body) {
                    Ok(_) => http::StatusCode::ACCEPTED,
                    Err(_) => http::StatusCode::BAD_REQUEST,
                }
            }),
        );
    tokio::spawn(async move { axum::serve(bare_listener, bare).await });
    (sink_addr, bare_addr, finished)
}

/// What the operator answers an event no action listens for: the stack handler answers as much.
const STACK_ANSWER: &str = r#"{"events":[{"id":"nomatch","type":"sh.keptn.event.nothing.triggered","runs":[],"not_matched":[{"action":"","reason":"no action listens for event type \"sh.keptn.event.nothing.triggered\""}]}]}"#;

/// A handler with the operator's whole HTTP stack but none of its work: served by the
/// operator's own server (hyper's HTTP/1 under the header deadline, the connection limit,
/// `TCP_NODELAY`) with the shipped limits, it reads the body under the shipped deadline and
/// size limit, parses it as JSON (`/events`) or only checks it is JSON, building nothing
/// (`/check`: the least a receiver that answers 400 to what is not JSON can do), and answers as
/// much JSON as the operator does for case (a). What ingest costs beyond it is the operator's
/// own work.
async fn start_stack_handler() -> SocketAddr {
    const READ_TIMEOUT: Duration = Duration::from_secs(30);
    async fn read_and_answer(
        body: axum::body::Body,
        valid: fn(&[u8]) -> bool,
    ) -> axum::response::Response {
        let read = tokio::time::timeout(READ_TIMEOUT, axum::body::to_bytes(body, 1 << 20));
        if !matches!(read.await, Ok(Ok(bytes)) if valid(&bytes)) {
            return http::StatusCode::BAD_REQUEST.into_response();
        }
        (
            http::StatusCode::OK,
            [(http::header::CONTENT_TYPE, "application/json")],
            STACK_ANSWER,
        )
            .into_response()
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new()
        .route(
            "/events",
            post(|body: axum::body::Body| {
                read_and_answer(body, |b| serde_json::from_slice::<Value>(b).is_ok())
            }),
        )
        .route(
            "/check",
            post(|body: axum::body::Body| {
                read_and_answer(body, |b| {
                    serde_json::from_slice::<serde::de::IgnoredAny>(b).is_ok()
                })
            }),
        );
    let limits = job_executor::serve::ConnectionLimits {
        read_timeout: READ_TIMEOUT,
        max_connections: 1024,
    };
    tokio::spawn(job_executor::serve::serve(
        listener,
        app,
        limits,
        std::future::pending(),
    ));
    addr
}

fn non_2xx(count: u64) -> String {
    if count > 0 {
        format!("; {count} non-2xx")
    } else {
        String::new()
    }
}

/// The most entries of `times` (seconds, sorted) within any `window` seconds.
fn busiest_window(times: &[f64], window: f64) -> usize {
    let mut start = 0;
    let mut most = 0;
    for (end, at) in times.iter().enumerate() {
        while times[start] <= at - window {
            start += 1;
        }
        most = most.max(end + 1 - start);
    }
    most
}

/// The controller's requests (everything but ingest's JobRun creates) under the accept phase's
/// load: a token bucket of `limits.qps` and `limits.burst` lets at most burst + qps through in
/// any second. Checked in every mode (a count of the server's record, with a margin
/// for the server receiving a burst closer together than it was sent).
fn request_limit(log: &[(String, f64)], limits: Limits, problems: &Problems) -> (String, String) {
    let mut times: Vec<f64> = log
        .iter()
        .filter(|(request, _)| request != "create jobruns")
        .map(|(_, at)| *at)
        .collect();
    times.sort_by(f64::total_cmp);
    let busiest = busiest_window(&times, 1.0);
    let limit = limits.qps + limits.burst;
    let span = times.last().zip(times.first()).map_or(0.0, |(l, f)| l - f);
    problems.check(busiest as f64 <= f64::from(limit) * 1.02, || {
        format!("the controller sent {busiest} requests within 1 s, more than {limit}")
    });
    (
        format!(
            "the controller's API requests under the accept load (--kube-api-qps {}, \
             --kube-api-burst {}: at most {limit} in any 1 s)",
            limits.qps, limits.burst
        ),
        format!(
            "busiest 1 s window {busiest}; {} requests over {span:.1} s ({:.0}/s)",
            times.len(),
            times.len() as f64 / span.max(1e-3)
        ),
    )
}

/// Phase 1, ingest of events that start nothing, against a bare axum handler: (a) an event no
/// action listens for, (b) one that twenty actions listen for and all refuse (their conditions
/// fail). Each alternates with the bare handler twice, so a neighbour's burst on the machine
/// does not land on one side only; and so does a second operator that reads the same config
/// from a git repository (`from_git`, its ingest address), the production source.
fn ingest_phase(
    plan: Plan,
    stack: &Stack,
    from_git: SocketAddr,
    dir: &Path,
    bare_addr: SocketAddr,
    stack_addr: SocketAddr,
    problems: &Problems,
) -> Vec<(String, String)> {
    let mut refused = event("sh.keptn.event.gate.triggered", "refused");
    refused["data"]["test"] = json!({"teststrategy": "none"});
    let cases = [
        (
            "non-matching events",
            "nomatch.lua",
            event("sh.keptn.event.nothing.triggered", "nomatch"),
        ),
        (
            "events 20 actions listen for and refuse",
            "refused.lua",
            refused,
        ),
    ];
    let operator_url = format!("http://{}/events", stack.ingest());
    let git_url = format!("http://{from_git}/events");
    let bare_url = format!("http://{bare_addr}/events");
    let parse_url = format!("http://{bare_addr}/parse");
    let stack_url = format!("http://{stack_addr}/events");
    let check_url = format!("http://{stack_addr}/check");
    let mut rows = Vec::new();
    for (what, file, event) in cases {
        let script = wrk_script(dir, file, &event, &content_type(CLOUDEVENT), Vary::Nothing);
        // Warm-up: connections, the config's first load (the git source's first fetch).
        wrk(&operator_url, &script, 1);
        wrk(&git_url, &script, 1);
        let (mut ingest_rates, mut git_rates, mut bare_rates, mut parse_rates, mut stack_rates) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut check_rates = Vec::new();
        let mut errors = 0;
        for _ in 0..2 {
            let (rate, failed) = wrk(&operator_url, &script, plan.wrk_seconds);
            ingest_rates.push(rate);
            errors += failed;
            bare_rates.push(wrk(&bare_url, &script, plan.wrk_seconds).0);
            let (rate, failed) = wrk(&git_url, &script, plan.wrk_seconds);
            git_rates.push(rate);
            errors += failed;
            let (rate, failed) = wrk(&parse_url, &script, plan.wrk_seconds);
            parse_rates.push(rate);
            errors += failed;
            let (rate, failed) = wrk(&stack_url, &script, plan.wrk_seconds);
            stack_rates.push(rate);
            errors += failed;
            let (rate, failed) = wrk(&check_url, &script, plan.wrk_seconds);
            check_rates.push(rate);
            errors += failed;
        }
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
        let (ingest, bare, parse) = (mean(&ingest_rates), mean(&bare_rates), mean(&parse_rates));
        let (git, stack, check) = (mean(&git_rates), mean(&stack_rates), mean(&check_rates));
        problems.all_2xx(&format!("ingest of {what}"), errors);
        problems.check(
            [ingest, git, bare, parse, stack, check]
                .iter()
                .all(|rate| *rate > 0.0),
            || {
                format!(
                    "ingest of {what}: nothing measured ({ingest:.0} req/s, from git {git:.0} \
                     req/s, bare {bare:.0} req/s, parsing {parse:.0} req/s, the operator's \
                     stack {stack:.0} req/s, checking {check:.0} req/s)"
                )
            },
        );
        rows.push((
            format!("ingest, {what} (wrk -t2 -c32, mean of 2 alternating runs each)"),
            format!(
                "{ingest:.0} req/s vs bare axum {bare:.0} req/s: ratio {:.2}{}; bare axum parsing the event as JSON {parse:.0} req/s ({:.2} of bare), ingest {:.2} of it{}",
                ingest / bare.max(1.0),
                plan.goal("≥ 0.8"),
                parse / bare.max(1.0),
                ingest / parse.max(1.0),
                non_2xx(errors)
            ),
        ));
        rows.push((
            format!("ingest, {what}, the config in a git repository (the same runs)"),
            format!(
                "{git:.0} req/s vs bare axum {bare:.0} req/s: ratio {:.2}{}; {:.2} of the directory config's rate",
                git / bare.max(1.0),
                plan.goal("≥ 0.8"),
                git / ingest.max(1.0),
            ),
        ));
        for (does, rate) in [
            ("only parses", stack),
            ("only checks the event is JSON, building nothing", check),
        ] {
            rows.push((
                format!(
                    "ingest, {what}: a handler with the operator's HTTP stack that {does} (the same runs)"
                ),
                format!(
                    "{rate:.0} req/s: {:.2} of bare axum; ingest {:.2} of it, from git {:.2}",
                    rate / bare.max(1.0),
                    ingest / rate.max(1.0),
                    git / rate.max(1.0),
                ),
            ));
        }
    }
    rows
}

/// How long the git host of the fetch phase takes to answer each request: a fetch is two
/// requests, so about as long as a fetch from a distant host takes.
const SLOW_GIT_HOST: Duration = Duration::from_millis(300);
/// The fetch phase's fetch interval: short, so that a run of `wrk` sees several fetches.
const FETCH_PHASE_INTERVAL_SECONDS: u32 = 2;

/// Ingest of events 20 actions refuse under `wrk`'s closed loop, the config on a git host that
/// takes [`SLOW_GIT_HOST`] to answer each request, fetched every
/// [`FETCH_PHASE_INTERVAL_SECONDS`]: whether events wait for the fetches shows in the latency's
/// tail. The operator's ingest and the host.
async fn fetch_phase(
    plan: Plan,
    operator: SocketAddr,
    host: &git_host::GitHttpServer,
    dir: &Path,
    problems: &Problems,
) -> Vec<(String, String)> {
    let mut refused = event("sh.keptn.event.gate.triggered", "refused");
    refused["data"]["test"] = json!({"teststrategy": "none"});
    let script = wrk_script(
        dir,
        "fetch.lua",
        &refused,
        &content_type(CLOUDEVENT),
        Vary::Nothing,
    );
    let url = format!("http://{operator}/events");
    // Warm-up: connections, and the first fetch (the clone) behind.
    let warm = url.clone();
    let warm_script = script.clone();
    tokio::task::spawn_blocking(move || wrk(&warm, &warm_script, 1))
        .await
        .unwrap();
    let fetches = host.fetches();
    let seconds = plan.wrk_seconds;
    let measured =
        tokio::task::spawn_blocking(move || wrk_run(&url, &script, seconds, 2, 32, &["--latency"]))
            .await
            .unwrap();
    let fetched = host.fetches() - fetches;
    problems.all_2xx("ingest from a slow git host", measured.non_2xx);
    problems.check(measured.rate > 0.0, || {
        "ingest from a slow git host: nothing measured".to_string()
    });
    vec![(
        format!(
            "ingest latency, events 20 actions listen for and refuse, the config on a git host \
             answering each request in {} ms, fetched every {FETCH_PHASE_INTERVAL_SECONDS} s \
             (wrk -t2 -c32 --latency, {seconds} s)",
            SLOW_GIT_HOST.as_millis()
        ),
        format!(
            "{}; {:.0} req/s; {fetched} fetches in the run{}",
            measured.latencies("ingest from a slow git host", problems),
            measured.rate,
            plan.goal("no event waits for a fetch: p99 far below a fetch"),
        ),
    )]
}

/// The projects the push phase's operator reads: their services, and the actions each config
/// has beside the bench's. Each listens for an event type of its own, with a condition and a
/// task with an env var, so that a config takes a while to compile (a large project's config).
#[derive(Clone, Copy)]
struct PushedProject {
    services: usize,
    more_actions: usize,
}

impl PushedProject {
    /// One service, a large config: the events after a push need it read again.
    const ONE_LARGE: PushedProject = PushedProject {
        services: 1,
        more_actions: 180,
    };
    /// Many services, more than the bound of kept configs (256), events for
    /// all of them, a push to one: whether every config in use stays in memory, and whether
    /// the others' configs are compiled again, and kept, when the branch moves.
    const MANY: PushedProject = PushedProject {
        services: 300,
        more_actions: 40,
    };

    fn service(&self, n: usize) -> String {
        if self.services == 1 {
            "bench".into()
        } else {
            format!("bench-{n}")
        }
    }

    /// Service `n`'s config, `comment` last: every service's differs, as a real project's do.
    fn config(&self, config: &Path, n: usize, comment: &str) -> String {
        let mut text = std::fs::read_to_string(config.join("bench/job/config.yaml")).unwrap();
        for a in 0..self.more_actions {
            text.push_str(&format!(
                "  - name: other-{a}\n    events:\n      - name: sh.keptn.event.other-{a}.triggered\n        \
                 jsonpath: {{property: $.data.test.teststrategy, match: strategy-{a}}}\n    tasks:\n      \
                 - name: only\n        image: 'bench:quick'\n        env:\n          \
                 - {{name: PROJECT, value: $.data.project, valueFrom: event}}\n"
            ));
        }
        text.push_str(&format!("# {}: {comment}\n", self.service(n)));
        text
    }

    /// Writes service `n`'s config into the work tree of `repo`.
    fn write(&self, repo: &Path, config: &Path, n: usize, comment: &str) {
        let dir = repo.join(self.service(n)).join("job");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("config.yaml"), self.config(config, n, comment)).unwrap();
    }
}

/// Ingest of events 20 actions refuse, each service's config large and on a git host fetched
/// every second ([`PushedProject`]), under `wrk`'s closed loop, events for every service in
/// turn: first with no push, then with a push that changes one service's config every second
/// (the next service each time), so that each fetch brings a config that was never compiled.
/// Whether the events after a push wait for a read of the config shows in the latency's tail;
/// how many reads and compiles a push costs, in what the operator counts.
async fn push_phase(
    plan: Plan,
    operator: &Operator,
    (repo, project): (&Path, PushedProject),
    config: &Path,
    dir: &Path,
    problems: &Problems,
) -> Vec<(String, String)> {
    let mut refused = event("sh.keptn.event.gate.triggered", "refused");
    refused["data"]["test"] = json!({"teststrategy": "none"});
    let vary = if project.services == 1 {
        Vary::Nothing
    } else {
        refused["data"]["service"] = json!("SERVICE");
        Vary::Service(project.services)
    };
    let name = format!("push-{}.lua", project.services);
    let script = wrk_script(dir, &name, &refused, &content_type(CLOUDEVENT), vary);
    let url = format!("http://{}/events", operator.ingest);
    let counters = [
        "job_executor_git_config_reads_total",
        "job_executor_git_config_compiles_total",
    ];
    let counted = async || {
        let mut counted = [None; 2];
        for (value, name) in counted.iter_mut().zip(counters) {
            *value = operator.metric(name).await.map(|v| v as u64);
        }
        counted
    };
    let actions = project
        .config(config, 0, "")
        .matches("\n  - name: ")
        .count();
    // Every service's config read once first, one event at a time (a debug build takes a
    // while to compile 150 configs): the runs count only what pushes cost.
    if project.services > 1 {
        let client = Client::builder(TokioExecutor::new()).build(HttpConnector::new());
        for n in 0..project.services {
            let mut first = refused.clone();
            first["data"]["service"] = json!(project.service(n));
            let (status, answer) = post_event(&client, operator.ingest, &first).await;
            assert_eq!(status, 200, "{answer}");
        }
    }
    // Warm-up: connections, the clone and the configs' first reads behind.
    let (warm, warm_script) = (url.clone(), script.clone());
    tokio::task::spawn_blocking(move || wrk(&warm, &warm_script, 1))
        .await
        .unwrap();
    let seconds = plan.wrk_seconds;
    let mut rows = Vec::new();
    for pushing in [false, true] {
        let before = counted().await;
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let pusher = pushing.then(|| {
            let (stop, repo, config) = (stop.clone(), repo.to_path_buf(), config.to_path_buf());
            std::thread::spawn(move || {
                let mut pushes = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let service = pushes % project.services;
                    pushes += 1;
                    project.write(&repo, &config, service, &format!("push {pushes}"));
                    common::commit_all(&repo, &format!("push {pushes}"));
                    std::thread::sleep(Duration::from_secs(1));
                }
                pushes
            })
        });
        let (run_url, run_script) = (url.clone(), script.clone());
        let measured = tokio::task::spawn_blocking(move || {
            wrk_run(&run_url, &run_script, seconds, 2, 32, &["--latency"])
        })
        .await
        .unwrap();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let pushes = pusher.map(|p| p.join().unwrap());
        let after = counted().await;
        let [reads, compiles] = [0, 1].map(|i| after[i].zip(before[i]).map(|(a, b)| a - b));
        let what = match (pushing, project.services) {
            (false, 1) => "without a push".to_string(),
            (true, 1) => "with a push".to_string(),
            (false, services) => format!("for {services} services without a push"),
            (true, services) => format!("for {services} services with a push"),
        };
        problems.all_2xx(&format!("ingest {what}"), measured.non_2xx);
        problems.check(measured.rate > 0.0, || {
            format!("ingest {what}: nothing measured")
        });
        // Exact, whatever the timing: a config read once per commit and path, compiled once
        // per content.
        let pushed = pushes.unwrap_or(0) as u64;
        problems.check(compiles.is_some_and(|c| c <= pushed), || {
            format!("ingest {what}: {compiles:?} compiles of a config for {pushed} pushes")
        });
        problems.check(
            reads.is_some_and(|r| r <= pushed * project.services as u64),
            || {
                format!(
                    "ingest {what}: {reads:?} reads of a config for {pushed} pushes and {} \
                     services",
                    project.services
                )
            },
        );
        let latencies = measured.latencies(&format!("ingest {what}"), problems);
        // Every config the events use compiled and kept: what keeping them costs.
        let memory = memory(operator.child.id()).summary();
        let shown = |n: Option<u64>| n.map_or("?".to_string(), |n| n.to_string());
        let (reads, compiles) = (shown(reads), shown(compiles));
        let counts = format!("{reads} reads and {compiles} compiles of a config");
        let (name, value) = match (pushes, project.services) {
            (Some(pushes), 1) => (
                "… with a push changing the config every second".to_string(),
                format!(
                    "{latencies}; {:.0} req/s; {pushes} pushes, {counts}{}",
                    measured.rate,
                    plan.goal("one read of the config per push, not one per event"),
                ),
            ),
            (Some(pushes), _) => (
                "… with a push changing one service's config every second".to_string(),
                format!(
                    "{latencies}; {:.0} req/s; {pushes} pushes, {counts}{}",
                    measured.rate,
                    plan.goal("one compile per push, not one per service"),
                ),
            ),
            (None, 1) => (
                format!(
                    "ingest latency, events 20 actions listen for and refuse, a config of \
                     {actions} actions on a git host fetched every second, no push"
                ),
                format!(
                    "{latencies}; {:.0} req/s; {counts}; the operator's resident memory \
                     {memory}",
                    measured.rate
                ),
            ),
            (None, services) => (
                format!(
                    "ingest latency, the same events for {services} services in turn, each \
                     with a config of {actions} actions, no push"
                ),
                format!(
                    "{latencies}; {:.0} req/s; {counts}; the operator's resident memory \
                     {memory}",
                    measured.rate
                ),
            ),
        };
        rows.push((
            format!("{name} (wrk -t2 -c32 --latency, {seconds} s)"),
            value,
        ));
    }
    rows
}

/// The URL of the JobRuns of `namespace` on the API server at `server`, and the headers a
/// request needs (the admin's token on the real server).
fn jobruns_endpoint(
    server: &str,
    namespace: &str,
    token: Option<&str>,
) -> (String, Vec<(String, String)>) {
    let url = format!("{server}/apis/job-executor.dev/v1alpha1/namespaces/{namespace}/jobruns");
    let mut headers = content_type("application/json");
    if let Some(token) = token {
        headers.push(("authorization".into(), format!("Bearer {token}")));
    }
    (url, headers)
}

/// Phase 2a, the API server's own ceiling: the JobRun ingest would create for a one-task event
/// (built by the operator's own planner, with a fresh name and event id per request), posted
/// straight to the API server (kube-sim, or the real one as the admin) by the same load
/// generator.
fn create_ceiling(
    plan: Plan,
    dir: &Path,
    namespace: &str,
    (url, headers): (String, Vec<(String, String)>),
) -> (f64, u64) {
    let script = wrk_script(
        dir,
        "ceiling.lua",
        &serde_json::to_value(ceiling_run(dir, namespace)).unwrap(),
        &headers,
        Vary::EventId,
    );
    wrk(&url, &script, plan.wrk_seconds)
}

/// The JobRun the operator's planner builds for a one-task event, named `ceiling-EVENTID`.
fn ceiling_run(dir: &Path, namespace: &str) -> JobRun {
    let source = Source::directory(dir);
    let cloud_event =
        CloudEvent::from_value(event("sh.keptn.event.one.triggered", "EVENTID")).unwrap();
    let settings = Settings {
        job_namespace: namespace.to_string(),
        ..Settings::defaults()
    };
    let EventPlan::Runs { mut runs, .. } = plan_event(&cloud_event, &source, &settings) else {
        panic!("the one-task action must match");
    };
    let mut run = runs.remove(0);
    run.metadata.name = Some("ceiling-EVENTID".into());
    run.metadata.namespace = Some(namespace.to_string());
    run
}

/// The create ceiling with nothing behind it: a fresh kube-sim, or a fresh namespace of the
/// real server, and no operator reconciling what is created. Returns the rate, the non-2xx
/// answers and the JobRuns stored.
async fn bare_ceiling(plan: Plan, target: &Target, dir: &Path) -> (f64, u64, usize) {
    match target {
        Target::Sim => {
            let sim = Sim::builder().start().await.unwrap();
            let crds: Api<CustomResourceDefinition> = Api::all(sim.client());
            crds.create(&PostParams::default(), &crd(CrdKind::Jobrun))
                .await
                .unwrap();
            let endpoint = jobruns_endpoint(&sim.url(), "default", None);
            let (rate, errors) = create_ceiling(plan, dir, "default", endpoint);
            let created = sim
                .list_objects("job-executor.dev", "jobruns", Some("default"))
                .len();
            (rate, errors, created)
        }
        Target::Cluster(cluster) => {
            cluster.wait_deleted().await;
            let namespace = format!("load-bare-{}", std::process::id());
            cluster.kubectl(&["create", "namespace", &namespace]);
            let endpoint = jobruns_endpoint(&cluster.url, &namespace, Some(&cluster.admin_token));
            let (rate, errors) = create_ceiling(plan, dir, &namespace, endpoint);
            let runs: Api<JobRun> = Api::namespaced(cluster.client.clone(), &namespace);
            let created = runs
                .list_metadata(&ListParams::default())
                .await
                .unwrap()
                .items
                .len();
            cluster.delete_namespace(&namespace);
            (rate, errors, created)
        }
    }
}

/// Phase 3, latencies at a steady rate of three-task runs, as a watch on Jobs sees them.
async fn latency_phase(
    plan: Plan,
    stack: &Stack,
    limits: Limits,
    problems: &Problems,
) -> Vec<(String, String)> {
    let times = Arc::new(Mutex::new(JobTimes::default()));
    let recorder = times.clone();
    let jobs: Api<Job> = Api::namespaced(stack.client.clone(), &stack.namespace);
    let (watching_tx, watching) = tokio::sync::oneshot::channel();
    let watch = tokio::spawn(async move {
        let mut watching_tx = Some(watching_tx);
        let mut stream = watcher(jobs, watcher::Config::default()).boxed();
        while let Some(Ok(event)) = stream.next().await {
            if matches!(event, watcher::Event::InitDone) {
                if let Some(tx) = watching_tx.take() {
                    let _ = tx.send(());
                }
                continue;
            }
            if let watcher::Event::Apply(job) | watcher::Event::InitApply(job) = event {
                let name = job.metadata.name.clone().unwrap_or_default();
                let now = Instant::now();
                let mut times = recorder.lock().unwrap();
                times.created.entry(name.clone()).or_insert(now);
                let complete = job
                    .status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|c| {
                        c.iter()
                            .any(|c| c.type_ == "Complete" && c.status == "True")
                    });
                if complete {
                    times.completed.entry(name).or_insert(now);
                }
            }
        }
    });
    watching.await.unwrap();
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    // Open loop: one event per interval whatever the answers take, as a steady sender would.
    let mut ticker = tokio::time::interval(plan.steady_interval);
    let steady_start = Instant::now();
    let mut sends = Vec::new();
    let mut n = 0;
    while steady_start.elapsed() < Duration::from_secs(plan.steady_seconds) {
        ticker.tick().await;
        n += 1;
        // Senders alternate over the replicas, as a Service spreads them.
        let ingest = stack.operators[n % stack.operators.len()].ingest;
        let client = client.clone();
        sends.push(tokio::spawn(async move {
            let (status, body) = post_event(
                &client,
                ingest,
                &event("sh.keptn.event.three.triggered", &format!("steady-{n}")),
            )
            .await;
            let at = Instant::now();
            assert_eq!(status, 202, "{body}");
            let run = body["events"][0]["runs"][0]["name"]
                .as_str()
                .unwrap()
                .to_string();
            (run, at)
        }));
    }
    let mut accepted: Vec<(String, Instant)> = Vec::new();
    for send in sends {
        accepted.push(send.await.unwrap());
    }
    let finish_deadline = Instant::now() + Duration::from_secs(plan.finish_seconds);
    loop {
        let done = {
            let times = times.lock().unwrap();
            accepted
                .iter()
                .all(|(run, _)| times.completed.contains_key(&format!("{run}-2")))
        };
        if done || Instant::now() > finish_deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    watch.abort();
    let times = times.lock().unwrap();
    let mut first = Vec::new();
    let mut next = Vec::new();
    let mut finished = 0;
    for (run, at) in &accepted {
        if let Some(created) = times.created.get(&format!("{run}-0")) {
            first.push(created.saturating_duration_since(*at));
        }
        for task in 0..2 {
            if let (Some(done), Some(created)) = (
                times.completed.get(&format!("{run}-{task}")),
                times.created.get(&format!("{run}-{}", task + 1)),
            ) {
                next.push(created.saturating_duration_since(*done));
            }
        }
        if times.completed.contains_key(&format!("{run}-2")) {
            finished += 1;
        }
    }
    // Rounded: an interval of 1/300 s reads back as 300.00003 events/s.
    let rate = (1.0 / plan.steady_interval.as_secs_f64()).round();
    problems.check(!first.is_empty() && !next.is_empty(), || {
        format!(
            "latency phase: nothing measured ({} first Jobs, {} next Jobs of {} runs)",
            first.len(),
            next.len(),
            accepted.len()
        )
    });
    // Within the deadline: a timing in a full run (reported), a broken run in a smoke run.
    problems.check(!plan.quick || finished == accepted.len(), || {
        format!(
            "latency phase: only {finished} of {} runs finished within {} s",
            accepted.len(),
            plan.finish_seconds
        )
    });
    let unfinished = if finished < accepted.len() {
        format!(
            "; only {finished} of {} runs finished within {} s",
            accepted.len(),
            plan.finish_seconds
        )
    } else {
        String::new()
    };
    vec![
        (
            format!(
                "accept → first Job created, {rate} events/s (--kube-api-qps {}, --kube-api-burst {})",
                limits.qps, limits.burst
            ),
            format!(
                "{}{}{unfinished}",
                percentiles(first),
                plan.goal("p99 < 50 ms")
            ),
        ),
        (
            format!("Job complete → next Job created, {rate} events/s"),
            format!("{}{}", percentiles(next), plan.goal("p99 < 50 ms")),
        ),
    ]
}

/// Phase 4, API requests per run, by verb, from the API server's record of them (kube-sim's
/// request log, the real server's audit log): one run alone at a time.
async fn requests_phase(
    plan: Plan,
    stack: &Stack,
    finished: &Arc<Mutex<usize>>,
    problems: &Problems,
) -> Vec<(String, String)> {
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    let mut rows = Vec::new();
    for (event_type, label, tasks) in [
        ("sh.keptn.event.one.triggered", "one task", 1u64),
        ("sh.keptn.event.three.triggered", "three tasks", 3),
    ] {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let before = *finished.lock().unwrap();
        let mark = stack.request_mark();
        post_event(
            &client,
            stack.ingest(),
            &event(event_type, &format!("count-{tasks}")),
        )
        .await;
        let deadline = Instant::now() + Duration::from_secs(60);
        while *finished.lock().unwrap() == before && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(
            *finished.lock().unwrap() > before,
            "the run of {label} did not finish within 60 s"
        );
        tokio::time::sleep(stack.settle()).await;
        let by_verb = stack.requests_since(mark);
        // Its Events (its history for `kubectl describe`) record nothing a restart needs.
        let writes: u64 = by_verb
            .iter()
            .filter(|(k, _)| is_write(k) && !k.ends_with(" events"))
            .map(|(_, n)| n)
            .sum();
        // Reads of objects other than through a watch. The logs are read once per task, after
        // the watch said it is over; `get /version` is the readiness probe of the API server
        // (every 5 s whatever runs, `src/health.rs`), and a standby reads the Lease every retry
        // period: neither is a read of the run's objects.
        let polls: u64 = by_verb
            .iter()
            .filter(|(k, _)| {
                k.starts_with("list ")
                    || (k.starts_with("get ")
                        && !k.ends_with("/log")
                        && !k.starts_with("get /")
                        && k.as_str() != "get leases")
            })
            .map(|(_, n)| n)
            .sum();
        // Counts, not timings: checked in every mode.
        let most_writes = 3 + 3 * tasks;
        let requests = by_verb
            .iter()
            .map(|(k, n)| format!("{k}: {n}"))
            .collect::<Vec<_>>()
            .join(", ");
        problems.check(writes <= most_writes && polls == 0, || {
            format!(
                "one run of {label}: {writes} writes (at most {most_writes}) and {polls} list/get \
                 polls (none): {requests}"
            )
        });
        rows.push((
            format!("API requests for one run of {label}"),
            format!(
                "{requests} — writes {writes}{}, list/get polls {polls}{}",
                plan.goal(&format!("≤ {most_writes}")),
                plan.goal("0")
            ),
        ));
    }
    rows
}

/// Phase 5, resident memory with many runs in flight (tasks that stay running).
async fn in_flight_phase(plan: Plan, stack: &Stack, problems: &Problems) -> (String, String) {
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build(HttpConnector::new());
    let target = plan.in_flight_runs;
    let started = Instant::now();
    let mut sent = 0;
    while sent < target {
        let batch: Vec<Value> = (sent..(sent + 100).min(target))
            .map(|i| event("sh.keptn.event.hold.triggered", &format!("hold-{i}")))
            .collect();
        sent += batch.len();
        let request = http::Request::post(format!("http://{}/events", stack.ingest()))
            .header("content-type", "application/cloudevents-batch+json")
            .body(Full::new(Bytes::from(Value::Array(batch).to_string())))
            .unwrap();
        let response = client.request(request).await.unwrap();
        assert_eq!(response.status(), 202);
    }
    let deadline = started + Duration::from_secs(plan.in_flight_seconds);
    let poll = match stack.server {
        Server::Sim(_) => Duration::from_millis(500),
        Server::Cluster(_) => Duration::from_secs(2),
    };
    let mut peak: f64 = 0.0;
    let mut running = 0;
    while running < target && Instant::now() < deadline {
        peak = peak.max(memory(stack.pid()).rss);
        tokio::time::sleep(poll).await;
        running = stack.running_tasks().await;
    }
    let all_started = started.elapsed().as_secs_f64();
    // Let the last status writes land, then read the steady state.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let running = stack.running_tasks().await;
    let now = memory(stack.pid());
    let rss = now.rss;
    problems.check(!plan.quick || running >= target, || {
        format!("in-flight phase: {running} of {target} tasks running after {all_started:.0} s")
    });
    (
        format!("resident memory, {target} runs in flight"),
        format!(
            "{} (peak while starting {:.1} MiB) with {running} tasks running, {} after {all_started:.0} s{}",
            now.summary(),
            peak.max(rss),
            if running >= target {
                "all started"
            } else {
                "not all started"
            },
            plan.goal("< 100 MiB at 10,000")
        ),
    )
}

/// Whether a request (`verb resource[/subresource]`) writes, other than the leader's Lease
/// renewals (one per retry period whatever runs).
fn is_write(request: &str) -> bool {
    ["create", "patch", "update", "delete"]
        .iter()
        .any(|verb| request.starts_with(verb))
        && !request.ends_with(" leases")
}

/// Phase 6, the retained record: `retained_runs` finished runs in the API server (each the
/// planner's run of the one-task action for the 2 KiB event, its `.started` and `.finished`
/// delivered, 1 KiB of the task's logs in its status, finished now: the shipped retention of a
/// week keeps them), then the operator starts: how long until it is ready, its memory then and
/// once it has looked at every run, and that it writes nothing.
async fn retained_phase(
    plan: Plan,
    target: &Target,
    dir: &Path,
    sink: &str,
    problems: &Problems,
) -> Vec<(String, String)> {
    let mut stack = Stack::start(target, dir, "retained", sink, 0, SHIPPED).await;
    let seeding = Instant::now();
    seed_done_runs(&stack, dir, plan.retained_runs).await;
    let seeded = seeding.elapsed().as_secs_f64();
    // The floor: the same pages read by a client that builds nothing from them.
    let listing = Instant::now();
    let listed = stack.list_jobruns_bare().await;
    let bare = listing.elapsed().as_secs_f64();
    problems.check(listed == plan.retained_runs, || {
        format!(
            "retained phase: a bare list read {listed} of the {} runs",
            plan.retained_runs
        )
    });
    let mark = stack.request_mark();
    let started = Instant::now();
    stack.operators = start_operators(
        &dir.join("kubeconfig-retained"),
        dir,
        sink,
        &stack.namespace,
        1,
        SHIPPED,
    )
    .await;
    let ready = started.elapsed().as_secs_f64();
    let at_ready = memory(stack.pid());
    // The operator lists the retained runs once it is ready, apart from the runs it works on,
    // and counts those whose deletion it scheduled.
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut counted = 0.0;
    while Instant::now() < deadline {
        counted = stack.operators[0]
            .metric("job_executor_runs_retained")
            .await
            .unwrap_or_default();
        if counted >= plan.retained_runs as f64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let listed_all = started.elapsed().as_secs_f64();
    problems.check(counted == plan.retained_runs as f64, || {
        format!(
            "retained phase: the operator scheduled the deletion of {counted} of the {} retained runs",
            plan.retained_runs
        )
    });
    // Settled once its CPU time stops growing.
    let mut cpu = stack.cpu_seconds();
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = stack.cpu_seconds();
        if now - cpu < 0.02 || Instant::now() > deadline {
            break;
        }
        cpu = now;
    }
    let settled = started.elapsed().as_secs_f64();
    let after = memory(stack.pid());
    let cpu = stack.cpu_seconds();
    tokio::time::sleep(stack.settle()).await;
    let writes: Vec<String> = stack
        .requests_since(mark)
        .into_iter()
        .filter(|(k, _)| is_write(k))
        .map(|(k, n)| format!("{k}: {n}"))
        .collect();
    let stored = stack.count_jobruns().await;
    problems.check(writes.is_empty() && stored == plan.retained_runs, || {
        format!(
            "retained phase: the operator wrote to {} retained runs ({}), {stored} of them left",
            plan.retained_runs,
            writes.join(", ")
        )
    });
    vec![
        (
            format!(
                "start-up with {} finished runs retained",
                plan.retained_runs
            ),
            format!(
                "ready after {ready:.1} s{} (the runs stored in {seeded:.0} s beforehand; a client that only reads their pages lists them in {bare:.1} s); every retained run listed and its deletion scheduled after {listed_all:.1} s, settled after {settled:.1} s, operator CPU {cpu:.1} s; writes {}",
                plan.goal("< 10 s"),
                if writes.is_empty() {
                    "0".to_string()
                } else {
                    writes.join(", ")
                }
            ),
        ),
        (
            format!(
                "resident memory with {} finished runs retained",
                plan.retained_runs
            ),
            format!(
                "{} when ready, {} once every retained run was listed{}",
                at_ready.summary(),
                after.summary(),
                plan.goal("< 300 MiB")
            ),
        ),
    ]
}

/// Stores `count` finished runs through the API, as the operator leaves them: created, then
/// their status written.
async fn seed_done_runs(stack: &Stack, dir: &Path, count: usize) {
    let runs: Api<JobRun> = Api::namespaced(stack.client.clone(), &stack.namespace);
    let template = ceiling_run(dir, &stack.namespace);
    let now = jiff::Timestamp::now().to_string();
    let logs = "a line the task printed, as tasks print them\n".repeat(24);
    futures::stream::iter(0..count)
        .map(|i| {
            let runs = runs.clone();
            let mut run = template.clone();
            let name = format!("done-{i}");
            run.metadata.name = Some(name.clone());
            let status = json!({"status": {
                "revision": 4, "done": true, "phase": "Succeeded", "taskSummary": "1/1 succeeded",
                "tasks": [{"name": "only", "jobName": format!("{name}-0"), "phase": "Succeeded",
                           "startTime": now, "completionTime": now, "logs": logs}],
                "started": {"id": format!("{name}-started"), "state": "Delivered", "attempts": 1,
                            "firstAttempt": now, "nextAttempt": null, "deliveredAt": now},
                "finished": {"id": format!("{name}-finished"), "state": "Delivered", "attempts": 1,
                             "firstAttempt": now, "nextAttempt": null, "deliveredAt": now},
                "outcome": {"status": "succeeded", "message": "All 1 tasks succeeded"},
                "startedAt": now, "finishedAt": now,
                "conditions": [{"type": "Succeeded", "status": "True", "reason": "Succeeded",
                                "message": "", "lastTransitionTime": now}]
            }});
            async move {
                runs.create(&PostParams::default(), &run).await.unwrap();
                runs.patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
                    .await
                    .unwrap();
            }
        })
        .buffer_unordered(32)
        .collect::<()>()
        .await;
}

async fn run(
    plan: Plan,
    target: &Target,
    replicas: usize,
    phases: &[String],
    problems: &Problems,
) -> String {
    let hold_task = match target {
        Target::Sim => "{name: stays, image: 'bench:hold'}",
        Target::Cluster(_) => {
            "{name: stays, image: 'job-executor.test/sleep', args: ['86400'], maxPollDuration: 86400}"
        }
    };
    let dir = config_dir(hold_task);
    if let Target::Cluster(cluster) = target {
        cluster.warm_up(&dir).await;
    }
    let (sink_addr, bare_addr, finished) = start_receivers().await;
    let stack_addr = start_stack_handler().await;
    let sink = format!("http://{sink_addr}/events");
    // Every phase by default; on the real cluster every phase that involves an API server; with
    // several replicas the phases where they differ from one (ingest and memory are a replica's
    // own).
    let wanted = |phase: &str| {
        if phases.is_empty() {
            let no_api_server = ["ingest", "fetch", "push"].contains(&phase)
                && matches!(target, Target::Cluster(_));
            let one_replicas_own =
                replicas > 1 && ["ingest", "fetch", "push", "memory", "retained"].contains(&phase);
            !no_api_server && !one_replicas_own
        } else {
            phases.iter().any(|p| p == phase)
        }
    };
    let server = target.name();
    let mut rows: Vec<Row> = Vec::new();

    if wanted("ingest") {
        // No API server is involved: kube-sim only, whatever the target.
        let load = load_average();
        let stack = Stack::start(&Target::Sim, &dir, "ingest", &sink, 1, SHIPPED).await;
        let from_git = start_operator(
            &dir.join("kubeconfig-ingest"),
            &git_source(&dir),
            &sink,
            "default",
            "load-git",
            SHIPPED,
        )
        .await;
        let rows_of_phase = ingest_phase(
            plan,
            &stack,
            from_git.ingest,
            &dir,
            bare_addr,
            stack_addr,
            problems,
        );
        drop(from_git);
        for (name, value) in rows_of_phase {
            report(&mut rows, load, name, value);
        }
    }

    if wanted("fetch") {
        // No API server is involved: kube-sim only, whatever the target.
        let load = load_average();
        let root = dir.join("git-host");
        config_repository(&dir, &root.join("bench"));
        let host = git_host::GitHttpServer::start(&root, None).await;
        host.answer_after(SLOW_GIT_HOST);
        let (stack, operator) = start_with_git_host(
            &dir,
            &sink,
            "fetch",
            &host.url("bench"),
            FETCH_PHASE_INTERVAL_SECONDS,
        )
        .await;
        let rows_of_phase = fetch_phase(plan, operator.ingest, &host, &dir, problems).await;
        drop(operator);
        drop(stack);
        for (name, value) in rows_of_phase {
            report(&mut rows, load, name, value);
        }
    }

    if wanted("push") {
        // No API server is involved: kube-sim only, whatever the target.
        let root = dir.join("push-host");
        let host = git_host::GitHttpServer::start(&root, None).await;
        for project in [PushedProject::ONE_LARGE, PushedProject::MANY] {
            let load = load_average();
            let name = format!("push-{}", project.services);
            let repo = root.join(&name);
            config_repository(&dir, &repo);
            for n in 0..project.services {
                project.write(&repo, &dir, n, "as first fetched");
            }
            common::commit_all(&repo, "large configs");
            let (stack, operator) =
                start_with_git_host(&dir, &sink, &name, &host.url(&name), 1).await;
            let rows_of_phase =
                push_phase(plan, &operator, (&repo, project), &dir, &dir, problems).await;
            drop(operator);
            drop(stack);
            for (name, value) in rows_of_phase {
                report(&mut rows, load, name, value);
            }
        }
    }

    if wanted("accept") {
        // 2a and 2b each on a fresh stack: the same JobRuns, the same controller work behind
        // them; only the way in differs. First, for scale, the ceiling with no operator.
        let load = load_average();
        let (bare, bare_errors, bare_created) = bare_ceiling(plan, target, &dir).await;
        // No bound on runs in flight: the phase measures how fast ingest stores runs, and
        // sends more of them in 10 s than the shipped bound (10,000) lets in.
        let accept_limits = Limits {
            max_runs_in_flight: 0,
            ..SHIPPED
        };
        let stack = Stack::start(target, &dir, "ceiling", &sink, replicas, accept_limits).await;
        let server_cpu = stack.server_cpu();
        let (ceiling, ceiling_errors) =
            create_ceiling(plan, &dir, &stack.namespace, stack.jobruns_url());
        let ceiling_cpu = stack
            .server_cpu()
            .zip(server_cpu)
            .map(|(b, a)| (b.0 - a.0, b.1 - a.1));
        let created = stack.count_jobruns().await;
        drop(stack);
        let stack = Stack::start(target, &dir, "accept", &sink, replicas, accept_limits).await;
        // One wrk per replica, each with its share of the threads and connections, and event
        // ids of its own.
        let senders: Vec<(String, PathBuf)> = stack
            .operators
            .iter()
            .enumerate()
            .map(|(i, operator)| {
                let script = wrk_script(
                    &dir,
                    &format!("accept-{i}.lua"),
                    &event("sh.keptn.event.one.triggered", &format!("r{i}-EVENTID")),
                    &content_type(CLOUDEVENT),
                    Vary::EventId,
                );
                (format!("http://{}/events", operator.ingest), script)
            })
            .collect();
        let cpu = stack.cpu_seconds();
        let server_cpu = stack.server_cpu();
        let mark = stack.request_mark();
        let (rate, errors) = wrk_each(&senders, plan.wrk_seconds);
        let cpu = stack.cpu_seconds() - cpu;
        let accept_cpu = stack
            .server_cpu()
            .zip(server_cpu)
            .map(|(b, a)| (b.0 - a.0, b.1 - a.1));
        tokio::time::sleep(stack.settle()).await;
        let limit_row = request_limit(&stack.request_log_since(mark), accept_limits, problems);
        let persisted = stack.count_jobruns().await;
        drop(stack);
        problems.all_2xx("the create ceiling with no operator", bare_errors);
        problems.all_2xx("the create ceiling", ceiling_errors);
        problems.all_2xx("accepted runs", errors);
        problems.check(bare_created > 0 && created > 0 && persisted > 0, || {
            format!(
                "accept phase: nothing stored ({bare_created} and {created} JobRuns by the \
                 ceilings, {persisted} by the operator)"
            )
        });
        let server_cpu = match (accept_cpu, ceiling_cpu) {
            (Some((api, etcd)), Some((ceiling_api, ceiling_etcd))) => format!(
                "; API server CPU {api:.1} s, etcd {etcd:.1} s (ceiling: {ceiling_api:.1} s, {ceiling_etcd:.1} s)"
            ),
            _ => String::new(),
        };
        report(
            &mut rows,
            load,
            format!(
                "accepted runs/s (one-task action, JobRun persisted before 202, --max-runs-in-flight 0; wrk -t2 -c32{})",
                if replicas > 1 {
                    ", shared by one wrk per replica"
                } else {
                    ""
                }
            ),
            format!(
                "{rate:.0} runs/s ({persisted} JobRuns) vs {server}'s create ceiling {ceiling:.0}/s ({created} JobRuns, wrk -t2 -c32{}): ratio {:.2}{}; operator CPU {cpu:.1} s{server_cpu}{}; the ceiling with no operator reconciling: {bare:.0}/s ({bare_created} JobRuns{})",
                non_2xx(ceiling_errors),
                rate / ceiling.max(1.0),
                plan.goal("≥ 0.5"),
                non_2xx(errors),
                non_2xx(bare_errors)
            ),
        );
        report(&mut rows, load, limit_row.0, limit_row.1);
    }

    if wanted("latency") {
        let load = load_average();
        // 50 three-task runs/s take about 600 requests/s (12 per run, the requests phase), more
        // than the shipped 500: the phase doubles the limit so it measures the operator, not
        // the limit's queue (docs/BENCHMARKS.md).
        // `LOAD_QPS` sets another limit (the burst twice it), to find the operator's own
        // ceiling at rates the shipped limit cannot carry.
        let qps = std::env::var("LOAD_QPS")
            .ok()
            .and_then(|v| v.parse::<u32>().ok())
            .filter(|q| *q > 0)
            .unwrap_or(2 * SHIPPED.qps);
        let latency_limits = Limits {
            qps,
            burst: 2 * qps,
            ..SHIPPED
        };
        let stack = Stack::start(target, &dir, "latency", &sink, replicas, latency_limits).await;
        for (name, value) in latency_phase(plan, &stack, latency_limits, problems).await {
            report(&mut rows, load, name, value);
        }
    }

    if wanted("requests") {
        let load = load_average();
        let stack = Stack::start(target, &dir, "requests", &sink, replicas, SHIPPED).await;
        for (name, value) in requests_phase(plan, &stack, &finished, problems).await {
            report(&mut rows, load, name, value);
        }
    }

    if wanted("memory") {
        let load = load_average();
        let stack = Stack::start(target, &dir, "memory", &sink, 1, SHIPPED).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        report(
            &mut rows,
            load,
            "resident memory, idle (watches synced, no runs)".into(),
            format!("{}{}", memory(stack.pid()).summary(), plan.goal("< 10 MiB")),
        );
        let (name, value) = in_flight_phase(plan, &stack, problems).await;
        report(&mut rows, load, name, value);
    }
    if wanted("retained") {
        let load = load_average();
        for (name, value) in retained_phase(plan, target, &dir, &sink, problems).await {
            report(&mut rows, load, name, value);
        }
    }
    if let Target::Cluster(cluster) = target {
        // Leave the cluster as found: the last phase's namespace gone too.
        cluster.wait_deleted().await;
    }
    let _ = std::fs::remove_dir_all(&dir);

    let mut table = String::from(
        "| measurement | result | load average at the phase's start |\n| --- | --- | --- |\n",
    );
    for row in rows {
        table.push_str(&format!(
            "| {} | {} | {:.2} |\n",
            row.name, row.value, row.load
        ));
    }
    table
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test` does not: then run briefly.
    let args: Vec<String> = std::env::args().collect();
    let quick = !args.iter().any(|a| a == "--bench") || args.iter().any(|a| a == "--quick");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    // `LOAD_TARGET=cluster` runs the phases that involve an API server against the real control
    // plane of `scripts/cluster` (kube-sim by default).
    let target = match std::env::var("LOAD_TARGET").as_deref() {
        Err(_) | Ok("" | "sim" | "kube-sim") => Target::Sim,
        Ok("cluster") => Target::Cluster(Arc::new(runtime.block_on(Cluster::connect()))),
        Ok(other) => panic!("LOAD_TARGET={other}: expected kube-sim or cluster"),
    };
    let mut plan = match (&target, quick) {
        (Target::Sim, false) => FULL,
        (Target::Sim, true) => QUICK,
        (Target::Cluster(_), false) => FULL_CLUSTER,
        (Target::Cluster(_), true) => QUICK_CLUSTER,
    };
    if let Some(runs) = std::env::var("LOAD_IN_FLIGHT")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        plan.in_flight_runs = runs;
    }
    if let Some(runs) = std::env::var("LOAD_RETAINED")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        plan.retained_runs = runs;
    }
    // Events per second of the latency phase.
    if let Some(rate) = std::env::var("LOAD_RATE")
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|r| *r > 0.0)
    {
        plan.steady_interval = Duration::from_secs_f64(1.0 / rate);
    }
    // `LOAD_PHASES=ingest,accept` runs only those (of ingest, fetch, push, accept, latency,
    // requests, memory, retained); all by default (on the cluster all but ingest, fetch and
    // push).
    let phases: Vec<String> = std::env::var("LOAD_PHASES")
        .map(|v| v.split(',').map(|p| p.trim().to_string()).collect())
        .unwrap_or_default();
    let load = load_average();
    let problems = Problems::default();
    // `LOAD_REPLICAS=2` runs that many replicas of the operator in the phases that involve
    // an API server but memory (one by default): ingest alternates over them, one leads.
    let replicas: usize = std::env::var("LOAD_REPLICAS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n| *n >= 1)
        .unwrap_or(1);
    let table = runtime.block_on(run(plan, &target, replicas, &phases, &problems));
    println!(
        "target: {}; replicas: {replicas}; load average (1 min) {load:.2} at the start, {:.2} at the end\n",
        target.name(),
        load_average()
    );
    println!("{table}");
    if quick {
        println!(
            "load harness: quick mode, a smoke run: the numbers above are not measurements \
             (a debug build, about a second per phase), so no target is shown"
        );
    }
    let problems = problems.0.into_inner().unwrap();
    if !problems.is_empty() {
        eprintln!("load harness: {} problem(s):", problems.len());
        for problem in &problems {
            eprintln!("  - {problem}");
        }
        std::process::exit(1);
    }
    println!(
        "load harness: checked: every answer 2xx, every phase measured, API writes per run \
         within bounds, no list/get polls"
    );
}
