//! The whole loop on one machine: a Kubernetes API (the project's simulator, or with `--cluster`
//! the real control plane of `scripts/cluster`), the JobRun CRD and what the example needs, the
//! operator running against `examples/`, a local sink for `.started` / `.finished`, a local
//! Slack-compatible receiver told of every run's end, and every event of `test-events/` sent to
//! it, shown as it happens. Run it with `scripts/demo`, which
//! builds the binaries first; it stops everything it started.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use axum::Router;
use axum::extract::State;
use axum::routing::post;
use futures::StreamExt;
use http::{HeaderMap, StatusCode};
use job_executor::crd::{JobRun, RunPhase, TaskPhase};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Namespace, Secret, ServiceAccount};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::{Value, json};

const NAMESPACE: &str = "job-executor-demo";
const INIT_IMAGE: &str = "ghcr.io/job-executor/job-executor:demo";
/// Every run tells the demo's Slack-compatible receiver how it ended.
const NOTIFY: &str = "slack:demo-channel:succeeded,failed";
/// How long the demo waits for every run to finish and report.
const DEADLINE: Duration = Duration::from_secs(180);

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `target/<profile>/job-executor`, beside this example's own directory (`$JOB_EXECUTOR_DEMO_BIN`
/// when set: tests/demo.rs runs this code from its own binary).
fn operator_binary() -> anyhow::Result<PathBuf> {
    if let Some(bin) = std::env::var_os("JOB_EXECUTOR_DEMO_BIN") {
        return Ok(PathBuf::from(bin));
    }
    let exe = std::env::current_exe()?;
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .map(|dir| dir.join("job-executor"))
        .context("cannot locate the target directory")?;
    if !bin.exists() {
        bail!(
            "{} is missing: run scripts/demo, which builds it",
            bin.display()
        );
    }
    Ok(bin)
}

/// Where the Kubernetes API comes from.
enum Backend {
    /// Kept for its lifetime: the simulator stops when dropped.
    Simulator(#[allow(dead_code)] kube_sim::Sim),
    /// `scripts/cluster`; `started` when the demo brought it up (and so takes it down).
    Cluster { started: bool },
}

struct Demo {
    backend: Backend,
    client: kube::Client,
    dir: PathBuf,
    /// The kubeconfig the operator runs with.
    operator_kubeconfig: PathBuf,
    operator: Option<Child>,
}

impl Drop for Demo {
    fn drop(&mut self) {
        if let Some(mut child) = self.operator.take() {
            // SIGTERM lets it stop as it would in a cluster; where `kill` cannot be run (procps
            // not installed) it is killed, rather than waited for forever.
            let termed = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status()
                .is_ok_and(|status| status.success());
            if !termed {
                let _ = child.kill();
            }
            let _ = child.wait();
        }
        if let Backend::Cluster { started } = self.backend {
            // Waited for, so a second demo right after does not meet a terminating namespace.
            let _ = cluster_kubectl(&["delete", "namespace", NAMESPACE, "--timeout=60s"]);
            if started {
                let _ = Command::new(root().join("scripts/cluster"))
                    .arg("down")
                    .status();
            }
        }
    }
}

impl Demo {
    fn is_cluster(&self) -> bool {
        matches!(self.backend, Backend::Cluster { .. })
    }
}

fn cluster_env() -> anyhow::Result<BTreeMap<String, String>> {
    let out = Command::new(root().join("scripts/cluster"))
        .arg("env")
        .output()?;
    if !out.status.success() {
        bail!(
            "scripts/cluster env: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| line.strip_prefix("export "))
        .filter_map(|line| line.split_once('='))
        .map(|(k, v)| (k.to_string(), v.trim_matches('\'').to_string()))
        .collect())
}

/// The control plane's own kubectl (or helm), as its admin.
fn cluster_tool(tool: &str, args: &[&str]) -> anyhow::Result<String> {
    let env = cluster_env()?;
    let out = Command::new(&env["CLUSTER_BIN"])
        .arg(tool)
        .args(args)
        .env("KUBECONFIG", &env["KUBECONFIG"])
        .output()?;
    if !out.status.success() {
        bail!(
            "{tool} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn cluster_kubectl(args: &[&str]) -> anyhow::Result<String> {
    cluster_tool("kubectl", args)
}

/// The simulator's init containers run the real `stage-files` on their mounts.
fn stage_files(bin: PathBuf) -> impl Fn(&kube_sim::ContainerRun) -> kube_sim::Outcome {
    move |run| {
        let (Some(from), Some(to)) = (run.host_path("/job-files"), run.host_path("/keptn")) else {
            return kube_sim::Outcome::exit(2).output(["mounts /job-files and /keptn are missing"]);
        };
        match Command::new(&bin)
            .args(["stage-files", "--from"])
            .arg(&from)
            .arg("--to")
            .arg(&to)
            .output()
        {
            Ok(out) if out.status.success() => kube_sim::Outcome::success(),
            Ok(out) => kube_sim::Outcome::exit(out.status.code().unwrap_or(1))
                .output([String::from_utf8_lossy(&out.stderr).into_owned()]),
            Err(error) => kube_sim::Outcome::exit(1).output([error.to_string()]),
        }
    }
}

impl Demo {
    async fn simulator(bin: &Path, dir: PathBuf) -> anyhow::Result<Demo> {
        let sim = kube_sim::Sim::builder().start().await?;
        sim.runtime().set(
            kube_sim::ImageRule::image("ghcr.io/job-executor/job-executor:*"),
            kube_sim::Behavior::run(stage_files(bin.to_path_buf())),
        );
        let kubeconfig = sim.write_kubeconfig(dir.join("kubeconfig"))?;
        println!(
            "· Kubernetes API: the simulator (tests/kube-sim) at {}",
            sim.url()
        );
        let client = sim.client();
        let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
        for file in ["crds/jobrun.yaml", "crds/jobschedule.yaml"] {
            let crd: CustomResourceDefinition =
                serde_saphyr::from_str(&std::fs::read_to_string(root().join(file))?)?;
            crds.create(&PostParams::default(), &crd).await?;
        }
        let namespaces: Api<Namespace> = Api::all(client.clone());
        namespaces
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({"metadata": {"name": NAMESPACE}}))?,
            )
            .await?;
        println!("· installed the JobRun and JobSchedule CRDs (crds/), namespace {NAMESPACE}");
        Ok(Demo {
            backend: Backend::Simulator(sim),
            client,
            dir,
            operator_kubeconfig: kubeconfig,
            operator: None,
        })
    }

    async fn cluster(dir: PathBuf) -> anyhow::Result<Demo> {
        let script = root().join("scripts/cluster");
        let started = !Command::new(&script).arg("status").status()?.success();
        if started {
            println!(
                "· starting the real control plane (scripts/cluster up; the first time builds it)"
            );
            if !Command::new(&script).arg("up").status()?.success() {
                bail!("scripts/cluster up failed");
            }
        }
        let env = cluster_env()?;
        let config = kube::Config::from_custom_kubeconfig(
            kube::config::Kubeconfig::read_from(&env["KUBECONFIG"])?,
            &Default::default(),
        )
        .await?;
        let client = kube::Client::try_from(config)?;
        let demo = Demo {
            backend: Backend::Cluster { started },
            client,
            dir: dir.clone(),
            operator_kubeconfig: dir.join("operator.kubeconfig"),
            operator: None,
        };
        println!(
            "· Kubernetes API: the real control plane of scripts/cluster ({})",
            cluster_kubectl(&["version", "-o", "json"])
                .ok()
                .and_then(|v| serde_json::from_str::<Value>(&v).ok())
                .and_then(|v| v["serverVersion"]["gitVersion"].as_str().map(String::from))
                .unwrap_or_default()
        );
        let _ = cluster_kubectl(&["create", "namespace", NAMESPACE]);
        cluster_kubectl(&[
            "label",
            "--overwrite",
            "namespace",
            NAMESPACE,
            "pod-security.kubernetes.io/enforce=restricted",
        ])?;
        // Helm installs a chart's CRDs only where there are none: ones left by an older version
        // of this repository are brought up to date first, as an upgrade does (install.md).
        let crds = root().join("crds");
        let crds = crds.to_str().context("the repository path is not UTF-8")?;
        cluster_kubectl(&["apply", "-f", crds])?;
        let chart = root().join("charts/job-executor");
        let chart = chart.to_str().context("the repository path is not UTF-8")?;
        cluster_tool(
            "helm",
            &[
                "upgrade",
                "--install",
                "job-executor",
                chart,
                "--namespace",
                NAMESPACE,
                "--set",
                "replicas=0",
            ],
        )?;
        println!(
            "· helm install job-executor charts/job-executor (the CRD, the operator's \
             ServiceAccount and Role) in namespace {NAMESPACE}, which enforces the restricted \
             Pod Security Standard; the operator runs here, with that ServiceAccount's token"
        );
        let token = cluster_kubectl(&["-n", NAMESPACE, "create", "token", "job-executor"])?;
        let admin = std::fs::read_to_string(&env["KUBECONFIG"])?;
        let operator = admin
            .lines()
            .map(|line| match line.trim_start().strip_prefix("token: ") {
                Some(_) => format!("    token: {}", token.trim()),
                None => line.to_string(),
            })
            .collect::<Vec<_>>()
            .join("\n");
        // A credential: readable by this user only (made anew, so a file left by an earlier
        // run cannot keep its own mode).
        let _ = std::fs::remove_file(&demo.operator_kubeconfig);
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&demo.operator_kubeconfig)?;
        file.write_all(operator.as_bytes())?;
        Ok(demo)
    }

    /// The Secrets and ServiceAccounts `examples/carts/job/config.yaml` names.
    async fn install_example_needs(&self) -> anyhow::Result<()> {
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), NAMESPACE);
        for (name, data) in [
            // valueFrom: secret — every key becomes an env var of the locust task.
            ("locust-credentials", json!({"LOCUST_USER": "ZGVtbw=="})),
            // secretName/key: API_TOKEN of the locust task.
            ("carts-api", json!({"token": "ZGVtby10b2tlbg=="})),
        ] {
            let secret = serde_json::from_value(json!({"metadata": {"name": name}, "data": data}))?;
            create_or_keep(secrets.create(&PostParams::default(), &secret).await)?;
        }
        let pull: Secret = serde_json::from_value(json!({
            "metadata": {"name": "regcred"},
            "type": "kubernetes.io/dockerconfigjson",
            "data": {".dockerconfigjson": "eyJhdXRocyI6e319"}
        }))?;
        create_or_keep(secrets.create(&PostParams::default(), &pull).await)?;
        let accounts: Api<ServiceAccount> = Api::namespaced(self.client.clone(), NAMESPACE);
        for name in ["carts-deployer", "carts-scaler", "job-executor-jobs"] {
            let account = serde_json::from_value(json!({"metadata": {"name": name}}))?;
            create_or_keep(accounts.create(&PostParams::default(), &account).await)?;
        }
        println!(
            "· created what the example config names: Secrets locust-credentials, carts-api, \
             regcred; ServiceAccounts carts-deployer, carts-scaler"
        );
        Ok(())
    }

    /// Starts the operator; returns its ingest address once it is ready. `notify_dir` stands in
    /// for the mounted Secret of notification targets.
    async fn start_operator(
        &mut self,
        bin: &Path,
        sink: &str,
        notify_dir: &Path,
    ) -> anyhow::Result<String> {
        let log = std::fs::File::create(self.dir.join("operator.log"))?;
        let examples = root().join("examples");
        let mut child = Command::new(bin)
            .arg("run")
            .arg("--config-dir")
            .arg(&examples)
            .args([
                "--sink-url",
                sink,
                "--job-namespace",
                NAMESPACE,
                "--init-image",
                INIT_IMAGE,
                "--listen",
                "127.0.0.1:0",
                "--admin-listen",
                "127.0.0.1:0",
                "--notify",
                NOTIFY,
            ])
            .arg("--notify-dir")
            .arg(notify_dir)
            .env("KUBECONFIG", &self.operator_kubeconfig)
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()?;
        let stdout = child.stdout.take().context("no stdout")?;
        self.operator = Some(child);
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        let addr = |key: &str| {
            line.split_whitespace()
                .find_map(|part| part.strip_prefix(key))
                .map(str::to_string)
                .with_context(|| format!("the operator did not start: {line}"))
        };
        let (ingest, admin) = (addr("ingest=")?, addr("admin=")?);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = reqwest_get(&format!("http://{admin}/readyz")).await;
            if ready.as_ref().is_ok_and(|(status, _)| *status == 200) {
                break;
            }
            if Instant::now() > deadline {
                bail!(
                    "the operator is not ready: {ready:?}; see {}/operator.log",
                    self.dir.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        println!(
            "· job-executor run --config-dir examples/ --job-namespace {NAMESPACE} --sink-url {sink} \
             --notify {NOTIFY}: ready, ingest on http://{ingest}/ (log: {}/operator.log)",
            self.dir.display()
        );
        Ok(ingest)
    }
}

fn create_or_keep<T>(result: Result<T, kube::Error>) -> anyhow::Result<()> {
    match result {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
        Err(error) => Err(error.into()),
    }
}

/// A GET with hyper (the readiness probe).
async fn reqwest_get(url: &str) -> anyhow::Result<(u16, String)> {
    use http_body_util::BodyExt;
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build(hyper_util::client::legacy::connect::HttpConnector::new());
    let request = http::Request::get(url).body(http_body_util::Full::new(bytes::Bytes::new()))?;
    let response = client.request(request).await?;
    let status = response.status().as_u16();
    let body = response.into_body().collect().await?.to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// The local sink: prints each `.started` / `.finished` as it arrives.
async fn start_sink() -> anyhow::Result<String> {
    async fn receive(State(()): State<()>, headers: HeaderMap, body: bytes::Bytes) -> StatusCode {
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string()
        };
        let data: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let kind = header("ce-type");
        let short = kind.strip_prefix("sh.keptn.event.").unwrap_or(&kind);
        if kind.ends_with(".finished") {
            println!(
                "  ← sink got {short}  status={} result={}  (for event {})",
                data["status"].as_str().unwrap_or("?"),
                data["result"].as_str().unwrap_or("?"),
                header("ce-triggeredid")
            );
            let message = data["message"].as_str().unwrap_or_default();
            for line in message.lines().take(6) {
                println!("      │ {line}");
            }
            if message.lines().count() > 6 {
                println!("      │ … ({} lines in all)", message.lines().count());
            }
        } else {
            println!(
                "  ← sink got {short}  (for event {})",
                header("ce-triggeredid")
            );
        }
        StatusCode::ACCEPTED
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/events", listener.local_addr()?);
    let app = Router::new().route("/events", post(receive)).with_state(());
    tokio::spawn(async move { axum::serve(listener, app).await });
    println!("· a local sink for .started / .finished at {url}");
    Ok(url)
}

/// A Slack-compatible incoming webhook that prints the first line of each message; its URL is
/// written where the operator reads its notification targets (`demo-channel`), as the Secret
/// of targets would be mounted.
async fn start_slack(notify_dir: &Path) -> anyhow::Result<()> {
    async fn receive(body: bytes::Bytes) -> StatusCode {
        let message: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let text = message["text"].as_str().unwrap_or_default();
        println!(
            "  ✉ slack demo-channel: {}",
            text.lines().next().unwrap_or_default()
        );
        StatusCode::OK
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/hooks/demo-channel", listener.local_addr()?);
    let app = Router::new().route("/hooks/demo-channel", post(receive));
    tokio::spawn(async move { axum::serve(listener, app).await });
    std::fs::create_dir_all(notify_dir)?;
    std::fs::write(notify_dir.join("demo-channel"), &url)?;
    println!(
        "· a Slack-compatible receiver at {url}, target demo-channel in {}",
        notify_dir.display()
    );
    Ok(())
}

/// Prints each JobRun's and Job's changes as the watches see them.
fn watch_progress(client: &kube::Client) {
    let runs: Api<JobRun> = Api::namespaced(client.clone(), NAMESPACE);
    tokio::spawn(async move {
        let mut seen: BTreeMap<String, String> = BTreeMap::new();
        let mut stream = watcher(runs, watcher::Config::default())
            .applied_objects()
            .boxed();
        while let Some(Ok(run)) = stream.next().await {
            let name = run.metadata.name.clone().unwrap_or_default();
            let status = run.status.clone().unwrap_or_default();
            let line = format!(
                "{:<32} {:<28} {:<10} {}",
                name,
                run.spec.action.name,
                format!("{:?}", status.phase),
                status
                    .current_task
                    .map(|t| format!("task {t}"))
                    .unwrap_or_default()
            );
            if seen.insert(name.clone(), line.clone()).as_ref() != Some(&line) {
                println!("  ◦ jobrun {line}");
            }
        }
    });
    let jobs: Api<Job> = Api::namespaced(client.clone(), NAMESPACE);
    tokio::spawn(async move {
        let mut seen: BTreeMap<String, String> = BTreeMap::new();
        let mut stream = watcher(jobs, watcher::Config::default())
            .applied_objects()
            .boxed();
        while let Some(Ok(job)) = stream.next().await {
            let name = job.metadata.name.clone().unwrap_or_default();
            let status = job.status.clone().unwrap_or_default();
            let state = if status.succeeded.unwrap_or(0) > 0 {
                "succeeded"
            } else if status.failed.unwrap_or(0) > 0 {
                "failed"
            } else if status.active.unwrap_or(0) > 0 {
                "running"
            } else {
                "created"
            };
            let image = job
                .spec
                .as_ref()
                .and_then(|s| s.template.spec.as_ref())
                .and_then(|s| s.containers.first())
                .and_then(|c| c.image.clone())
                .unwrap_or_default();
            // Shown only when it moves on: the real Job controller reports no active pod for
            // a moment between a pod's end and the Job's, which is not "created" again.
            let rank = |state: &str| match state {
                "created" => 0,
                "running" => 1,
                _ => 2,
            };
            if seen
                .get(&name)
                .is_none_or(|before| rank(state) > rank(before))
            {
                seen.insert(name.clone(), state.to_string());
                println!("  ◦ job    {name:<32} {state:<10} {image}");
            }
        }
    });
}

/// `job-executor send FILE --to URL`, started.
fn spawn_send(bin: &Path, file: &Path, ingest: &str) -> anyhow::Result<Child> {
    Ok(Command::new(bin)
        .arg("send")
        .arg(file)
        .arg("--to")
        .arg(format!("http://{ingest}/"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?)
}

/// Waits for a `send`, printing its answer.
fn print_answer(name: &str, send: Child) -> anyhow::Result<()> {
    let out = send.wait_with_output()?;
    let answer = String::from_utf8_lossy(&out.stdout);
    for line in answer.lines() {
        println!("  {line}");
    }
    if !out.status.success() {
        bail!(
            "sending {name} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// The event of `file` again, under another id: a second event of the same kind.
fn another_of(file: &Path, dir: &Path) -> anyhow::Result<PathBuf> {
    let mut event: Value = serde_json::from_slice(&std::fs::read(file)?)?;
    let id = event["id"].as_str().unwrap_or_default().to_string();
    event["id"] = json!(format!("{id}-again"));
    let copy = dir.join("deployment.triggered.again.json");
    std::fs::write(&copy, serde_json::to_vec_pretty(&event)?)?;
    Ok(copy)
}

/// The sample event sent twice at once, showing the example's concurrency group.
const SENT_TWICE: &str = "deployment.triggered.json";

/// Sends every file of `test-events/` with `job-executor send`, printing each answer. The
/// deployment is sent twice at the same moment: its action's concurrency group runs one
/// deployment of a service at a time, so the other shows `Queued` until the first is done.
fn send_events(bin: &Path, ingest: &str, dir: &Path) -> anyhow::Result<()> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(root().join("test-events"))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    for file in files {
        let name = file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        println!("→ job-executor send test-events/{name} --to http://{ingest}/");
        if name == SENT_TWICE {
            let again = another_of(&file, dir)?;
            println!(
                "→ and at the same moment the same deployment under another id: its action's \
                 concurrency group (deploy/{{project}}/{{stage}}/{{service}}) runs one at a time"
            );
            let first = spawn_send(bin, &file, ingest)?;
            let second = spawn_send(bin, &again, ingest)?;
            print_answer(&name, first)?;
            print_answer(&name, second)?;
        } else {
            print_answer(&name, spawn_send(bin, &file, ingest)?)?;
        }
        // Let each event's progress show before the next one.
        std::thread::sleep(Duration::from_millis(300));
    }
    Ok(())
}

/// Waits until every run is over and its `.finished` delivered; returns the runs.
async fn wait_for_runs(client: &kube::Client) -> anyhow::Result<Vec<JobRun>> {
    let runs: Api<JobRun> = Api::namespaced(client.clone(), NAMESPACE);
    let deadline = Instant::now() + DEADLINE;
    loop {
        let list = runs.list(&Default::default()).await?.items;
        let done = |run: &JobRun| {
            let status = run.status.clone().unwrap_or_default();
            matches!(status.phase, RunPhase::Succeeded | RunPhase::Failed)
                && status
                    .finished
                    .as_ref()
                    .is_none_or(|f| !matches!(f.state, job_executor::crd::DeliveryState::Pending))
        };
        if !list.is_empty() && list.iter().all(done) {
            return Ok(list);
        }
        if Instant::now() > deadline {
            bail!("runs still going after {DEADLINE:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `runs` as `kubectl get jobruns` shows them: the columns the CRD names, each as wide as its
/// widest cell and three spaces apart, the age as kubectl writes one under three hours.
fn print_jobruns(runs: &[JobRun]) {
    let now = jiff::Timestamp::now();
    let mut rows = vec![
        [
            "NAME", "ACTION", "SERVICE", "STAGE", "PHASE", "TASK", "TASKS", "AGE",
        ]
        .map(String::from),
    ];
    for run in runs {
        let status = run.status.clone().unwrap_or_default();
        let age = (run.metadata.creation_timestamp.as_ref())
            .map(|created| (now.as_second() - created.0.as_second()).max(0))
            .map(|s| match (s, s % 60) {
                (0..120, _) => format!("{s}s"),
                (120..600, 1..) => format!("{}m{}s", s / 60, s % 60),
                _ => format!("{}m", s / 60),
            })
            .unwrap_or_else(|| "<unknown>".into());
        let label = |key: &str| {
            (run.metadata.labels.as_ref())
                .and_then(|labels| labels.get(key).cloned())
                .unwrap_or_default()
        };
        rows.push([
            run.metadata.name.clone().unwrap_or_default(),
            run.spec.action.name.clone(),
            label("keptn.sh/service"),
            label("keptn.sh/stage"),
            format!("{:?}", status.phase),
            (status.current_task)
                .map(|t| t.to_string())
                .unwrap_or_default(),
            status.task_summary,
            age,
        ]);
    }
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|column| {
            let widest = rows.iter().map(|row| row[column].chars().count()).max();
            widest.unwrap_or(0)
        })
        .collect();
    for row in &rows {
        let cells: Vec<String> = (row.iter().zip(&widths))
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        println!("{}", cells.join("   ").trim_end());
    }
}

fn main() -> std::process::ExitCode {
    if run(std::env::args().any(|a| a == "--cluster")) {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::FAILURE
    }
}

/// The demo, on the real control plane with `cluster`; false when it failed (said on stderr).
pub fn run(cluster: bool) -> bool {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("demo: cannot start the async runtime: {error}");
            return false;
        }
    };
    match runtime.block_on(demo(cluster)) {
        Ok(()) => true,
        Err(error) => {
            eprintln!("demo: {error:#}");
            false
        }
    }
}

async fn demo(cluster: bool) -> anyhow::Result<()> {
    let bin = operator_binary()?;
    let dir = std::env::temp_dir().join(format!("job-executor-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let result = demo_in(cluster, &bin, dir.clone()).await;
    // Everything the demo started is stopped by now; its files (the operator's log, the
    // kubeconfigs) are kept only to read why it failed.
    match &result {
        Ok(()) => {
            let _ = std::fs::remove_dir_all(&dir);
        }
        Err(_) => eprintln!(
            "demo: the operator's log and the demo's files are in {}",
            dir.display()
        ),
    }
    result
}

async fn demo_in(cluster: bool, bin: &Path, dir: PathBuf) -> anyhow::Result<()> {
    let mut demo = if cluster {
        Demo::cluster(dir).await?
    } else {
        Demo::simulator(bin, dir).await?
    };
    demo.install_example_needs().await?;
    let sink = start_sink().await?;
    let notify_dir = demo.dir.join("notify");
    start_slack(&notify_dir).await?;
    let ingest = demo.start_operator(bin, &sink, &notify_dir).await?;
    watch_progress(&demo.client);
    send_events(bin, &ingest, &demo.dir)?;
    let runs = wait_for_runs(&demo.client).await?;

    println!();
    println!("kubectl -n {NAMESPACE} get jobruns");
    if demo.is_cluster() {
        print!("{}", cluster_kubectl(&["-n", NAMESPACE, "get", "jobruns"])?);
    } else {
        // No kubectl beside the simulator: the CRD's printer columns, as kubectl shows them.
        print_jobruns(&runs);
    }
    let mut failed = Vec::new();
    for run in &runs {
        let status = run.status.clone().unwrap_or_default();
        if status.phase == RunPhase::Failed {
            let why = status
                .tasks
                .iter()
                .find(|t| t.phase == TaskPhase::Failed)
                .and_then(|t| t.message.clone())
                .or_else(|| status.outcome.as_ref().map(|o| o.message.clone()))
                .unwrap_or_default();
            failed.push(format!("{}: {why}", run.spec.action.name));
        }
    }
    println!();
    if failed.is_empty() {
        // A silent action sends no `.started`/`.finished`: the sink hears nothing of it.
        let silent = runs.iter().filter(|run| run.spec.action.silent).count();
        let silent = match silent {
            0 => String::new(),
            n => format!(" ({n} silent: their action sends no events to the sink)"),
        };
        println!(
            "✓ {} runs, every one succeeded and reported{silent}; stopping everything the demo started",
            runs.len()
        );
        Ok(())
    } else {
        for failure in &failed {
            println!("✗ {failure}");
        }
        bail!("{} of {} runs failed", failed.len(), runs.len())
    }
}
