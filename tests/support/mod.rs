//! The end-to-end harness: kube-sim, the real `job-executor` binary talking to it through a
//! kubeconfig, and an HTTP sink that records what the operator sends.
#![allow(dead_code)]

pub mod cluster;
pub mod git;
pub mod nats;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::routing::post;
use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use kube_sim::{Behavior, ImageRule, Outcome, Sim};
use serde_json::{Value, json};

pub const BIN: &str = env!("CARGO_BIN_EXE_job-executor");
pub const INIT_IMAGE: &str = "ghcr.io/job-executor/job-executor:test";

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// An empty directory `je-NAME-PID` under the temporary directory (what a previous run left
/// there is removed first).
pub fn fresh_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("je-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Now, in Unix seconds (the timestamps senders sign).
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Short lease timings, so a takeover happens within seconds: duration 3 s, renew deadline
/// 2 s, retry period 0.5 s.
pub const SHORT_LEASE: [&str; 6] = [
    "--lease-duration-seconds",
    "3",
    "--lease-renew-deadline-seconds",
    "2",
    "--lease-retry-period-seconds",
    "0.5",
];

/// The value of the first line of a `/metrics` text that starts with `line_start` (the name
/// and labels, then a space); 0 when there is none.
pub fn metric_value(text: &str, line_start: &str) -> u64 {
    text.lines()
        .find_map(|line| line.strip_prefix(line_start))
        .map_or(0, |value| value.trim().parse().unwrap())
}

/// Polls `condition` every 200 ms until it holds, or fails the test after `timeout`: for
/// conditions that cost a `kubectl` run or a list of many objects, which polled every 20 ms
/// would take a core of a busy machine from what the test waits for.
pub async fn wait_patiently(what: &str, timeout: Duration, condition: impl FnMut() -> bool) {
    poll(what, timeout, Duration::from_millis(200), condition).await;
}

/// Polls `condition` every 20 ms until it holds, or fails the test after `timeout`.
pub async fn wait_for(what: &str, timeout: Duration, condition: impl FnMut() -> bool) {
    poll(what, timeout, Duration::from_millis(20), condition).await;
}

async fn poll(what: &str, timeout: Duration, every: Duration, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !condition() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(every).await;
    }
}

/// One event the sink received (binary mode: attributes from `ce-` headers).
#[derive(Debug, Clone)]
pub struct Received {
    pub id: String,
    pub event_type: String,
    pub triggered_id: String,
    pub headers: HeaderMap,
    pub data: Value,
    /// Why the CloudEvents SDK could not read the request, if it could not.
    pub sdk_error: Option<String>,
}

/// How the sink answers the next event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    Accept,
    Unavailable,
    /// 400: the event is refused for good.
    Refuse,
    /// Kill the operator before answering (it never learns the event arrived).
    KillOperator,
    /// Take the event and answer nothing for a minute (a sink behind a network that drops
    /// the answers, or one that hangs).
    Hang,
    /// Take the event and answer 202 after this long.
    AcceptAfter(Duration),
}

type Policy = Box<dyn FnMut(&Received) -> Reply + Send>;

#[derive(Clone)]
pub struct TestSink {
    pub url: String,
    received: Arc<Mutex<Vec<Received>>>,
    refused: Arc<Mutex<Vec<Received>>>,
    policy: Arc<Mutex<Option<Policy>>>,
    operator: Arc<Mutex<Option<Child>>>,
}

impl TestSink {
    pub fn events(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    pub fn refused(&self) -> Vec<Received> {
        self.refused.lock().unwrap().clone()
    }

    pub fn of_type(&self, suffix: &str) -> Vec<Received> {
        self.events()
            .into_iter()
            .filter(|e| e.event_type.ends_with(suffix))
            .collect()
    }

    pub fn for_trigger(&self, triggered_id: &str) -> Vec<Received> {
        self.events()
            .into_iter()
            .filter(|e| e.triggered_id == triggered_id)
            .collect()
    }

    /// Decides the answer to every following event.
    pub fn set_policy(&self, policy: impl FnMut(&Received) -> Reply + Send + 'static) {
        *self.policy.lock().unwrap() = Some(Box::new(policy));
    }

    pub fn accept_all(&self) {
        *self.policy.lock().unwrap() = None;
    }
}

async fn sink_handler(State(sink): State<TestSink>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let received = Received {
        id: header("ce-id"),
        event_type: header("ce-type"),
        triggered_id: header("ce-triggeredid"),
        data: serde_json::from_slice(&body).unwrap_or(Value::Null),
        headers: headers.clone(),
        sdk_error: cloudevents::binding::http::to_event(&headers, body.to_vec())
            .err()
            .map(|e| e.to_string()),
    };
    let reply = match sink.policy.lock().unwrap().as_mut() {
        Some(policy) => policy(&received),
        None => Reply::Accept,
    };
    match reply {
        Reply::Hang => {
            sink.received.lock().unwrap().push(received);
            tokio::time::sleep(Duration::from_secs(60)).await;
            StatusCode::ACCEPTED
        }
        Reply::Accept => {
            sink.received.lock().unwrap().push(received);
            StatusCode::ACCEPTED
        }
        Reply::AcceptAfter(delay) => {
            sink.received.lock().unwrap().push(received);
            tokio::time::sleep(delay).await;
            StatusCode::ACCEPTED
        }
        Reply::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Reply::Refuse => {
            sink.refused.lock().unwrap().push(received);
            StatusCode::BAD_REQUEST
        }
        Reply::KillOperator => {
            if let Some(child) = sink.operator.lock().unwrap().as_mut() {
                let _ = child.kill();
                let _ = child.wait();
            }
            sink.received.lock().unwrap().push(received);
            StatusCode::ACCEPTED
        }
    }
}

/// A response from the operator's ingest.
#[derive(Debug)]
pub struct Response {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

/// The operator as a process: its sink, its addresses, its logs, and an HTTP client for its
/// ingest and admin ports. The kube-sim [`Harness`] and the real-cluster harness both run it.
pub struct Operator {
    pub sink: TestSink,
    pub dir: PathBuf,
    pub kubeconfig: PathBuf,
    pub ingest: Option<SocketAddr>,
    pub admin: Option<SocketAddr>,
    /// Every argument after `run`.
    pub args: Vec<String>,
    process: Arc<Mutex<Option<Child>>>,
    client: Client<HttpConnector, Full<Bytes>>,
    starts: u32,
}

impl Drop for Operator {
    fn drop(&mut self) {
        if let Some(mut child) = self.process.lock().unwrap().take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // The operator's logs and files stay for a test that failed, and go with one that
        // passed.
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// A certificate authority made for one test, and a server certificate it signed for
/// `localhost` and `127.0.0.1`.
pub struct TestTls {
    /// The CA's certificate, PEM: what `--sink-ca-file` points at.
    pub ca_file: PathBuf,
    server: Arc<tokio_rustls::rustls::ServerConfig>,
}

impl TestTls {
    pub fn new(dir: &Path) -> TestTls {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
        use tokio_rustls::rustls;
        use tokio_rustls::rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "job-executor test CA");
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        let issuer = Issuer::new(ca, ca_key);
        let key = KeyPair::generate().unwrap();
        let server = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
        let ca_file = dir.join("test-ca.pem");
        std::fs::write(&ca_file, ca_cert.pem()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![server.der().clone(), ca_cert.der().clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            )
            .unwrap();
        TestTls {
            ca_file,
            server: Arc::new(config),
        }
    }
}

impl TestSink {
    /// A sink of its own (a dead-letter sink, a second receiver).
    pub async fn start() -> TestSink {
        start_sink(Arc::default()).await
    }

    /// Serves this sink over TLS too, on another loopback port: its `https://` URL.
    pub async fn serve_tls(&self, tls: &TestTls) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!(
            "https://localhost:{}/events",
            listener.local_addr().unwrap().port()
        );
        let acceptor = tokio_rustls::TlsAcceptor::from(tls.server.clone());
        let app = Router::new()
            .route("/events", post(sink_handler))
            .with_state(self.clone());
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, app) = (acceptor.clone(), app.clone());
                tokio::spawn(async move {
                    // A client that does not trust the certificate hangs up here.
                    let Ok(stream) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = hyper_util::service::TowerToHyperService::new(app);
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        url
    }
}

/// An OpenTelemetry collector as far as the operator can tell: OTLP over HTTP with JSON, every
/// span it is sent kept.
#[derive(Clone)]
pub struct TestCollector {
    /// What `--otlp-endpoint` is set to.
    pub url: String,
    spans: Arc<Mutex<Vec<Value>>>,
}

impl TestCollector {
    pub async fn start() -> TestCollector {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let collector = TestCollector {
            url: format!("http://{}", listener.local_addr().unwrap()),
            spans: Arc::default(),
        };
        let app = Router::new()
            .route("/v1/traces", post(collect_spans))
            .with_state(collector.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        collector
    }

    /// Every span received so far (`resourceSpans[].scopeSpans[].spans[]`).
    pub fn spans(&self) -> Vec<Value> {
        self.spans.lock().unwrap().clone()
    }
}

async fn collect_spans(
    State(collector): State<TestCollector>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, &'static str) {
    assert_eq!(headers["content-type"], "application/json");
    let request: Value = serde_json::from_slice(&body).unwrap();
    let mut spans = collector.spans.lock().unwrap();
    for resource in request["resourceSpans"].as_array().into_iter().flatten() {
        for scope in resource["scopeSpans"].as_array().into_iter().flatten() {
            spans.extend(scope["spans"].as_array().into_iter().flatten().cloned());
        }
    }
    (StatusCode::OK, "{}")
}

/// Starts a sink on a free loopback port; `operator` is what `Reply::KillOperator` kills.
async fn start_sink(operator: Arc<Mutex<Option<Child>>>) -> TestSink {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let sink = TestSink {
        url: format!("http://{}/events", listener.local_addr().unwrap()),
        received: Arc::default(),
        refused: Arc::default(),
        policy: Arc::default(),
        operator,
    };
    let app = Router::new()
        .route("/events", post(sink_handler))
        .with_state(sink.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    sink
}

impl Operator {
    /// A sink, and the arguments of `job-executor run`: `source_args` (the config source),
    /// the sink, loopback ports, the job namespace, then `extra_args`. Not started yet.
    pub async fn new(
        dir: PathBuf,
        kubeconfig: PathBuf,
        namespace: &str,
        source_args: Vec<String>,
        extra_args: &[&str],
    ) -> Operator {
        let process = Arc::new(Mutex::new(None));
        let sink = start_sink(process.clone()).await;
        let mut args = source_args;
        args.extend(
            [
                "--sink-url",
                &sink.url,
                "--listen",
                "127.0.0.1:0",
                "--admin-listen",
                "127.0.0.1:0",
                "--job-namespace",
                namespace,
                "--init-image",
                INIT_IMAGE,
            ]
            .iter()
            .map(|a| a.to_string()),
        );
        // Short, unless the test sets its own.
        if !extra_args.contains(&"--never-started-timeout-seconds") {
            args.extend(["--never-started-timeout-seconds".into(), "2".into()]);
        }
        args.extend(extra_args.iter().map(|a| a.to_string()));
        Operator {
            sink,
            dir,
            kubeconfig,
            ingest: None,
            admin: None,
            args,
            process,
            client: Client::builder(TokioExecutor::new()).build(HttpConnector::new()),
            starts: 0,
        }
    }

    /// Starts (or restarts) the operator and waits until it listens and its watches synced.
    pub async fn start_operator(&mut self) {
        self.spawn_operator().await;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let (status, _) = self.get_admin("/readyz").await;
            if status == StatusCode::OK {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "operator never ready: {}",
                self.operator_log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Starts (or restarts) the operator and waits until it reports its addresses.
    pub async fn spawn_operator(&mut self) {
        self.starts += 1;
        let log =
            std::fs::File::create(self.dir.join(format!("operator-{}.log", self.starts))).unwrap();
        let mut child = Command::new(BIN)
            .arg("run")
            .args(&self.args)
            .env("KUBECONFIG", &self.kubeconfig)
            // The same identity across restarts, as a pod keeps its name when its container
            // restarts: the restarted operator goes on leading at once (tests of several
            // replicas give each its own `--identity`).
            .env("JOB_EXECUTOR_IDENTITY", "job-executor-test")
            .env("RUST_LOG", "info,job_executor=debug")
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("spawn job-executor run");
        let stdout = child.stdout.take().unwrap();
        *self.process.lock().unwrap() = Some(child);
        let line = tokio::task::spawn_blocking(move || {
            let mut line = String::new();
            BufReader::new(stdout).read_line(&mut line).map(|_| line)
        });
        let line = tokio::time::timeout(Duration::from_secs(20), line)
            .await
            .expect("the operator did not report its addresses")
            .unwrap()
            .unwrap();
        let log = self.operator_log();
        let addr = |key: &str| -> SocketAddr {
            line.split_whitespace()
                .find_map(|part| part.strip_prefix(key))
                .unwrap_or_else(|| panic!("no {key} in {line:?}: {log}"))
                .parse()
                .unwrap()
        };
        self.ingest = Some(addr("ingest="));
        self.admin = Some(addr("admin="));
    }

    /// The operator's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.process.lock().unwrap().as_ref().map(Child::id)
    }

    /// SIGKILL, as a crash or an OOM kill would.
    pub fn kill_operator(&self) {
        if let Some(mut child) = self.process.lock().unwrap().take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, as Kubernetes stops a pod; does not wait for the exit.
    pub fn signal_terminate(&self) {
        let pid = self.pid().unwrap();
        let status = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// SIGTERM, as Kubernetes stops a pod; waits for the exit.
    pub async fn terminate_operator(&self, timeout: Duration) -> std::process::ExitStatus {
        self.signal_terminate();
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(exit) = self
                .process
                .lock()
                .unwrap()
                .as_mut()
                .unwrap()
                .try_wait()
                .unwrap()
            {
                return exit;
            }
            assert!(
                Instant::now() < deadline,
                "the operator did not stop on SIGTERM"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn operator_running(&self) -> bool {
        self.process
            .lock()
            .unwrap()
            .as_mut()
            .is_some_and(|child| child.try_wait().ok().flatten().is_none())
    }

    /// Every log the operator wrote in this test, for failure messages.
    pub fn operator_log(&self) -> String {
        (1..=self.starts)
            .map(|n| {
                std::fs::read_to_string(self.dir.join(format!("operator-{n}.log")))
                    .unwrap_or_default()
            })
            .collect::<Vec<_>>()
            .join("\n--- restart ---\n")
    }

    pub async fn get_admin(&self, path: &str) -> (StatusCode, String) {
        let uri = format!("http://{}{path}", self.admin.unwrap());
        let request = http::Request::get(uri)
            .body(Full::new(Bytes::new()))
            .unwrap();
        match self.client.request(request).await {
            Ok(response) => {
                let status = response.status();
                let body = response.into_body().collect().await.unwrap().to_bytes();
                (status, String::from_utf8_lossy(&body).into_owned())
            }
            Err(_) => (StatusCode::SERVICE_UNAVAILABLE, String::new()),
        }
    }

    /// The `Content-Type` the admin server answers `path` with.
    pub async fn admin_content_type(&self, path: &str) -> Option<String> {
        let uri = format!("http://{}{path}", self.admin.unwrap());
        let request = http::Request::get(uri)
            .body(Full::new(Bytes::new()))
            .unwrap();
        let response = self.client.request(request).await.ok()?;
        let content_type = response.headers().get(http::header::CONTENT_TYPE)?;
        Some(content_type.to_str().ok()?.to_string())
    }

    /// Posts a body to the ingest with the given headers.
    pub async fn post(&self, headers: &[(&str, &str)], body: impl Into<Bytes>) -> Response {
        let mut request = http::Request::post(format!("http://{}/events", self.ingest.unwrap()));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = self
            .client
            .request(request.body(Full::new(body.into())).unwrap())
            .await
            .expect("post to the operator");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        Response {
            status,
            headers,
            body: serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned())),
        }
    }

    /// Posts an event in structured mode from a task of its own, for a request the operator
    /// may die in the middle of: `None` when the connection failed or broke.
    pub fn post_event_in_background(
        &self,
        event: &Value,
    ) -> tokio::task::JoinHandle<Option<Response>> {
        let client = self.client.clone();
        let request = http::Request::post(format!("http://{}/events", self.ingest.unwrap()))
            .header("content-type", "application/cloudevents+json")
            .body(Full::new(Bytes::from(event.to_string())))
            .unwrap();
        tokio::spawn(async move {
            let response = client.request(request).await.ok()?;
            let status = response.status();
            let headers = response.headers().clone();
            let bytes = response.into_body().collect().await.ok()?.to_bytes();
            Some(Response {
                status,
                headers,
                body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            })
        })
    }

    /// Posts an event in structured mode.
    pub async fn post_event(&self, event: &Value) -> Response {
        self.post(
            &[("content-type", "application/cloudevents+json")],
            event.to_string(),
        )
        .await
    }

    /// Waits for the `.finished` event answering `triggered_id`.
    /// Waits for the `.finished` of `triggered_id`, which must say the run succeeded.
    pub async fn wait_succeeded(&self, triggered_id: &str, timeout: Duration) {
        let finished = self.wait_finished(triggered_id, timeout).await;
        assert_eq!(
            finished.data["status"], "succeeded",
            "{triggered_id}: {}",
            finished.data
        );
    }

    pub async fn wait_finished(&self, triggered_id: &str, timeout: Duration) -> Received {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(event) = self
                .sink
                .for_trigger(triggered_id)
                .into_iter()
                .find(|e| e.event_type.ends_with(".finished"))
            {
                return event;
            }
            assert!(
                Instant::now() < deadline,
                "no .finished for {triggered_id} within {timeout:?}; sink got {:?}\noperator log:\n{}",
                self.sink
                    .events()
                    .iter()
                    .map(|e| &e.event_type)
                    .collect::<Vec<_>>(),
                self.operator_log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Operator {
    /// Another replica of this operator (not started): the same arguments, but its own sink,
    /// directory and `--identity`, under `kubeconfig`.
    pub async fn replica(&self, identity: &str, kubeconfig: PathBuf) -> Operator {
        let process = Arc::new(Mutex::new(None));
        let sink = start_sink(process.clone()).await;
        let mut replica = Operator {
            dir: fresh_dir(&format!(
                "replica-{identity}-{}",
                self.dir.file_name().unwrap_or_default().to_string_lossy()
            )),
            sink,
            kubeconfig,
            ingest: None,
            admin: None,
            args: self.args.clone(),
            process,
            client: self.client.clone(),
            starts: 0,
        };
        let sink_url = replica.sink.url.clone();
        replica.set_flag("--sink-url", &sink_url);
        replica.set_flag("--identity", identity);
        replica
    }

    /// Sets `flag` to `value` for the next start (replaces its value, or adds it).
    pub fn set_flag(&mut self, flag: &str, value: &str) {
        match self.args.iter().position(|a| a == flag) {
            Some(i) if i + 1 < self.args.len() => self.args[i + 1] = value.to_string(),
            _ => self.args.extend([flag.to_string(), value.to_string()]),
        }
    }

    /// What `/readyz` says leads: `Some(true)` this replica, `Some(false)` another one, `None`
    /// when it does not answer or knows no leader.
    pub async fn leads(&self) -> Option<bool> {
        let (status, body) = self.get_admin("/readyz").await;
        let leader = body.strip_prefix("ready; leader: ")?;
        if status != StatusCode::OK || leader == "none known" {
            return None;
        }
        Some(leader.starts_with("this replica"))
    }
}

/// One request the API server recorded (kube-sim's request log, the real server's audit log):
/// who asked, what, the answer, and where it falls among the others.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// kube-sim's user name ("" for its admin), or the ServiceAccount's name.
    pub user: String,
    pub verb: String,
    pub resource: String,
    pub name: String,
    pub status: u16,
    /// Orders the records: kube-sim's sequence number, the real server's receipt time in µs.
    pub order: i128,
}

/// An API server where several replicas of the operator run: kube-sim, or a namespace of the
/// real control plane. The replicas are [`Operator::replica`]s of the harness's operator,
/// which itself is not started.
pub trait Replicas: std::ops::Deref<Target = Operator> {
    /// Job creations the API server accepted, by Job name, whoever asked.
    fn jobs_created(&self) -> Vec<String> {
        self.recorded()
            .into_iter()
            .filter(|r| r.verb == "create" && r.resource == "jobs" && r.status == 201)
            .map(|r| r.name)
            .collect()
    }

    fn jobruns(&self) -> Vec<Value>;
    /// The objects of `resource` (of API `group`) in the operator's namespace.
    fn objects(&self, group: &str, resource: &str) -> Vec<Value>;
    /// A kubeconfig of a user of its own named `user`, with the operator's permissions, so
    /// the API server's record tells the replicas apart.
    fn credentials(&self, user: &str) -> impl std::future::Future<Output = PathBuf>;
    /// Every request of the operator's users, in the order the server received them.
    fn recorded(&self) -> Vec<Recorded>;
    /// Which server, for messages.
    fn name(&self) -> &'static str;
    /// Runs a shell script as an administrator types it (`kubectl` on the PATH, the admin's
    /// kubeconfig), with `NAMESPACE` the operator's namespace and `env`; its output, or the test
    /// fails with the script's error.
    fn admin_shell(&self, script: &str, env: &[(&str, &str)]) -> String;

    /// `identities.len()` replicas under the harness's credentials, each started and ready.
    fn start_replicas(
        &self,
        identities: &[&str],
    ) -> impl std::future::Future<Output = Vec<Operator>> {
        async move {
            let mut replicas = Vec::new();
            for identity in identities {
                let mut replica = self.replica(identity, self.kubeconfig.clone()).await;
                replica.start_operator().await;
                replicas.push(replica);
            }
            replicas
        }
    }
}

impl Replicas for Harness {
    fn jobruns(&self) -> Vec<Value> {
        Harness::jobruns(self)
    }

    fn objects(&self, group: &str, resource: &str) -> Vec<Value> {
        self.sim.list_objects(group, resource, Some("default"))
    }

    async fn credentials(&self, user: &str) -> PathBuf {
        use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
        let role: ClusterRole = serde_json::from_value(json!({
            "metadata": {"name": format!("everything-{user}")},
            "rules": [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}],
        }))
        .unwrap();
        let binding: ClusterRoleBinding = serde_json::from_value(json!({
            "metadata": {"name": user},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": format!("everything-{user}")},
            "subjects": [{"kind": "User", "name": user, "apiGroup": "rbac.authorization.k8s.io"}],
        }))
        .unwrap();
        let params = kube::api::PostParams::default();
        kube::Api::<ClusterRole>::all(self.sim.client())
            .create(&params, &role)
            .await
            .unwrap();
        kube::Api::<ClusterRoleBinding>::all(self.sim.client())
            .create(&params, &binding)
            .await
            .unwrap();
        self.sim
            .write_kubeconfig_as(self.dir.join(format!("kubeconfig-{user}")), user)
            .unwrap()
    }

    fn recorded(&self) -> Vec<Recorded> {
        self.sim
            .requests()
            .into_iter()
            .map(|r| Recorded {
                user: r.user,
                verb: r.verb,
                resource: r.resource,
                name: r.name,
                status: r.status,
                order: i128::from(r.seq),
            })
            .collect()
    }

    fn name(&self) -> &'static str {
        "kube-sim"
    }

    fn admin_shell(&self, script: &str, env: &[(&str, &str)]) -> String {
        run_shell(script, &self.kubeconfig, "default", env)
    }
}

/// kube-sim, with the operator running against it.
pub struct Harness {
    pub sim: Sim,
    pub op: Operator,
}

impl std::ops::Deref for Harness {
    type Target = Operator;
    fn deref(&self) -> &Operator {
        &self.op
    }
}

impl std::ops::DerefMut for Harness {
    fn deref_mut(&mut self) -> &mut Operator {
        &mut self.op
    }
}

/// The init container runs the real `stage-files` on the host directories of its mounts.
fn stage_files_for_real(run: &kube_sim::ContainerRun) -> Outcome {
    let (Some(from), Some(to)) = (run.host_path("/job-files"), run.host_path("/keptn")) else {
        return Outcome::exit(2).output(["mounts /job-files and /keptn are missing"]);
    };
    let output = Command::new(BIN)
        .args(["stage-files", "--from"])
        .arg(&from)
        .arg("--to")
        .arg(&to)
        .output()
        .expect("run stage-files");
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    let lines: Vec<String> = text.lines().map(str::to_string).collect();
    match output.status.code() {
        Some(0) => Outcome::success().output(lines),
        code => Outcome::exit(code.unwrap_or(1)).output(lines),
    }
}

impl Harness {
    /// kube-sim with the CRD applied by `kubectl` and the example's Secrets, a sink, and the
    /// operator running against the `examples/` directory.
    pub async fn start(extra_args: &[&str]) -> Harness {
        Self::start_with(kube_sim::Sim::builder(), extra_args).await
    }

    pub async fn start_with(builder: kube_sim::SimBuilder, extra_args: &[&str]) -> Harness {
        Self::start_full(builder, root().join("examples"), extra_args).await
    }

    pub async fn start_full(
        builder: kube_sim::SimBuilder,
        config_dir: PathBuf,
        extra_args: &[&str],
    ) -> Harness {
        let source_args = vec![
            "--config-dir".to_string(),
            path_str(&config_dir).to_string(),
        ];
        Self::start_with_source(builder, source_args, extra_args).await
    }

    /// Like `start_full`, with the config source given by `source_args` (e.g. `--git-url`).
    pub async fn start_with_source(
        builder: kube_sim::SimBuilder,
        source_args: Vec<String>,
        extra_args: &[&str],
    ) -> Harness {
        let sim = builder.start().await.expect("start kube-sim");
        let dir = std::env::temp_dir().join(format!(
            "je-e2e-{}-{}",
            std::process::id(),
            sim.addr().port()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let kubeconfig = sim.write_kubeconfig(dir.join("kubeconfig")).unwrap();
        sim.runtime().set(
            ImageRule::image("ghcr.io/job-executor/job-executor:*"),
            Behavior::run(stage_files_for_real),
        );
        let op = Operator::new(dir, kubeconfig, "default", source_args, extra_args).await;
        let mut harness = Harness { sim, op };
        harness.kubectl(&["apply", "-f", root().join("crds").to_str().unwrap()]);
        harness.create_example_secrets().await;
        harness.start_operator().await;
        harness
    }

    /// kube-sim ready for replicas of an operator watching `config_dir` (see [`Replicas`]):
    /// the harness's own operator is never started.
    pub async fn for_replicas(config_dir: &Path, extra_args: &[&str]) -> Harness {
        let sim = kube_sim::Sim::builder()
            .start()
            .await
            .expect("start kube-sim");
        let dir = fresh_dir(&format!("replicas-{}", sim.addr().port()));
        let kubeconfig = sim.write_kubeconfig(dir.join("kubeconfig")).unwrap();
        let source_args = vec!["--config-dir".to_string(), path_str(config_dir).to_string()];
        let op = Operator::new(dir, kubeconfig, "default", source_args, extra_args).await;
        let harness = Harness { sim, op };
        harness.kubectl(&["apply", "-f", root().join("crds").to_str().unwrap()]);
        harness
    }

    /// The watches of `resource` fail from now on (500 to every attempt) and the open ones
    /// close: nothing of it arrives until [`Harness::relist_watches`].
    pub fn fail_watches(&self, resource: &str) {
        self.sim.faults().fail_next(
            kube_sim::FaultRule::new(500)
                .verb("watch")
                .resource(resource)
                .times(1_000_000),
        );
        self.sim.close_watches();
    }

    /// Lets failed watches back after their history expired (compacted): they come back by
    /// listing their objects again, and miss what changed meanwhile.
    pub fn relist_watches(&self) {
        self.sim.compact();
        self.sim.faults().clear();
    }

    pub fn kubectl(&self, args: &[&str]) -> String {
        let output = Command::new(kubectl())
            .args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .env("KUBECACHEDIR", self.dir.join("kube-cache"))
            .output()
            .expect("run kubectl");
        assert!(
            output.status.success(),
            "kubectl {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    async fn create_example_secrets(&self) {
        use k8s_openapi::api::core::v1::Secret;
        let api: kube::Api<Secret> = kube::Api::namespaced(self.sim.client(), "default");
        for secret in example_secrets() {
            api.create(&Default::default(), &secret).await.unwrap();
        }
    }

    /// Job creations the API server accepted, by Job name.
    pub fn jobs_created(&self) -> Vec<String> {
        self.sim
            .requests()
            .into_iter()
            .filter(|r| r.verb == "create" && r.resource == "jobs" && r.status == 201)
            .map(|r| r.name)
            .collect()
    }

    pub fn jobruns(&self) -> Vec<Value> {
        self.sim
            .list_objects("job-executor.dev", "jobruns", Some("default"))
    }
}

/// The Secrets the example's tasks read (`examples/carts/job/config.yaml`).
pub fn example_secrets() -> Vec<k8s_openapi::api::core::v1::Secret> {
    [
        ("locust-credentials", json!({"LOCUST_USER": "dXNlcg=="})),
        ("carts-api", json!({"token": "c2VjcmV0"})),
    ]
    .into_iter()
    .map(|(name, data)| {
        serde_json::from_value(json!({"metadata": {"name": name}, "data": data})).unwrap()
    })
    .collect()
}

/// The kubectl the tests run: `$KUBECTL` (scripts/test sets it to the kubectl built with the
/// control plane, the version the project claims), else `kubectl` on the PATH.
pub fn kubectl() -> PathBuf {
    if let Some(path) = std::env::var_os("KUBECTL") {
        return PathBuf::from(path);
    }
    PathBuf::from("kubectl")
}

/// Runs `script` with bash, `kubectl` (as [`kubectl`] names it) first on the PATH, `kubeconfig`
/// and `NAMESPACE` set; its output, or the test fails with the script's error.
pub fn run_shell(script: &str, kubeconfig: &Path, namespace: &str, env: &[(&str, &str)]) -> String {
    let mut path = std::env::var_os("PATH").unwrap_or_default();
    if let Some(dir) = kubectl().parent().filter(|d| d.is_absolute()) {
        let mut dirs = vec![dir.to_path_buf()];
        dirs.extend(std::env::split_paths(&path));
        path = std::env::join_paths(dirs).unwrap();
    }
    let output = Command::new("bash")
        .args(["-euo", "pipefail", "-c", script])
        .env("PATH", path)
        .env("KUBECONFIG", kubeconfig)
        .env("NAMESPACE", namespace)
        .envs(env.iter().copied())
        .output()
        .expect("run bash");
    assert!(
        output.status.success(),
        "{script:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The first `sh` block under `heading` (a whole line) of the document at `doc`.
pub fn doc_sh_block(doc: &str, heading: &str) -> String {
    let text = std::fs::read_to_string(root().join(doc)).unwrap();
    let (_, after) = text
        .split_once(&format!("\n{heading}\n"))
        .unwrap_or_else(|| panic!("{doc} has no heading {heading:?}"));
    let (_, block) = after
        .split_once("```sh\n")
        .unwrap_or_else(|| panic!("{doc} {heading:?} has no sh block"));
    block.split_once("```").unwrap().0.to_string()
}

/// A sample event from `test-events/`.
pub fn sample(name: &str) -> Value {
    serde_json::from_slice(&std::fs::read(root().join("test-events").join(name)).unwrap()).unwrap()
}

/// A sample event with a fresh id (so tests in one simulator do not collide).
pub fn sample_with_id(name: &str, id: &str) -> Value {
    let mut event = sample(name);
    event["id"] = json!(id);
    event
}

pub fn path_str(path: &Path) -> &str {
    path.to_str().unwrap()
}
