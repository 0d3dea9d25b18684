//! The git config source end to end: repositories made with the `git` CLI, served over
//! `file://` and over smart HTTP (`git http-backend` behind a test server with basic auth), the
//! real operator binary against kube-sim.
//!
//! SSH is not tested: that needs an `sshd` (Debian's `openssh-server`) in the test image; the
//! `ssh` command line the operator generates is unit-tested in `src/source/git/fetch.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use kube_sim::{Behavior, ImageRule};
use serde_json::{Value, json};
use support::git::{GitHttpServer, GitRepo};
use support::{Harness, sample, wait_for};

const LONG: Duration = Duration::from_secs(30);

fn temp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("je-git-e2e-{}-{name}", std::process::id()))
}

fn action(name: &str, tasks: &str) -> String {
    format!(
        "apiVersion: v2\nactions:\n  - name: {name}\n    events: [{{name: sh.keptn.event.test.triggered}}]\n    tasks:\n{tasks}"
    )
}

fn task(name: &str, image: &str, files: &str) -> String {
    format!("      - name: {name}\n        image: {image}\n        files: {files}\n")
}

/// `main` holds the project level, `dev` the stage level and the `carts` service; `staging`
/// exists with nothing of its own. Returns (main, dev) commits.
fn sockshop(repo: &GitRepo) -> (String, String) {
    repo.write(
        "job/config.yaml",
        action(
            "project level",
            &task("project", "alpine:project", "[shared/common.txt]"),
        ),
    )
    .write("shared/common.txt", "project common");
    let main = repo.commit("project level");
    repo.switch("dev");
    repo.write(
        "job/config.yaml",
        action(
            "stage level",
            &task("stage", "alpine:stage", "[shared/common.txt]"),
        ),
    )
    .write("shared/common.txt", "stage common")
    .write(
        "carts/job/config.yaml",
        action(
            "service level",
            &[
                task("first", "busybox:first", "[]"),
                task("second", "busybox:second", "[data]"),
                task("third", "busybox:third", "[data, scripts/run.sh, helm]"),
            ]
            .concat(),
        ),
    )
    .write("carts/data/a.txt", "dev a v1")
    .write("carts/data/nested/b.json", "{\"b\": 1}")
    .executable("carts/scripts/run.sh", "#!/bin/sh\necho v1\n")
    .write("carts/helm/Chart.yaml", "name: carts\n")
    .write("carts/helm-abc/other.yaml", "not staged\n");
    let dev = repo.commit("dev");
    repo.git(&["checkout", "-q", "main"]);
    repo.git(&["branch", "staging"]);
    (main, dev)
}

fn event(id: &str, stage: &str, service: &str, pin: Option<&str>) -> Value {
    let mut event = sample("test.triggered.json");
    event["id"] = json!(id);
    event["data"]["stage"] = json!(stage);
    event["data"]["service"] = json!(service);
    if let Some(pin) = pin {
        event["gitcommitid"] = json!(pin);
    }
    event
}

fn run_of(h: &Harness, id: &str) -> Value {
    h.jobruns()
        .into_iter()
        .find(|r| r["spec"]["event"]["id"] == id)
        .unwrap_or_else(|| panic!("no JobRun for {id}"))
}

fn run_name(h: &Harness, id: &str) -> String {
    run_of(h, id)["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_string()
}

/// What the `task` container of a run's task saw under `/keptn`: path → (text, mode).
fn keptn_files(h: &Harness, id: &str, task: usize) -> Vec<(String, String, u32)> {
    let job = format!("{}-{task}", run_name(h, id));
    let runs = h.sim.pod_runs(&job);
    let main = runs
        .iter()
        .find(|r| r.run.container == "task")
        .unwrap_or_else(|| panic!("no task container ran for {job}"));
    main.files
        .iter()
        .filter(|(path, _)| path.starts_with("/keptn/"))
        .map(|(path, file)| (path.clone(), file.text(), file.mode & 0o777))
        .collect()
}

fn image_of(h: &Harness, id: &str, task: usize) -> String {
    let job = format!("{}-{task}", run_name(h, id));
    let runs = h.sim.pod_runs(&job);
    runs.iter()
        .find(|r| r.run.container == "task")
        .map(|r| r.run.image.clone())
        .unwrap_or_default()
}

async fn expect_success(h: &Harness, id: &str) {
    let finished = h.wait_finished(id, LONG).await;
    assert_eq!(
        finished.data["status"],
        "succeeded",
        "{id}: {}\n{}",
        finished.data,
        h.operator_log()
    );
}

async fn expect_error(h: &Harness, id: &str) -> String {
    let finished = h.wait_finished(id, LONG).await;
    assert_eq!(
        finished.data["status"], "errored",
        "{id}: {}",
        finished.data
    );
    finished.data["message"].as_str().unwrap().to_string()
}

/// `--git-url` with a clone cache of the test's own.
fn git_args(test: &str, url: &str, extra: &[&str]) -> Vec<String> {
    let cache = temp(&format!("{test}-cache"));
    let _ = std::fs::remove_dir_all(&cache);
    let mut args = vec![
        "--git-url".to_string(),
        url.to_string(),
        "--git-cache-dir".to_string(),
        cache.to_str().unwrap().to_string(),
    ];
    args.extend(extra.iter().map(|a| a.to_string()));
    args
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_stage_and_project_levels_are_looked_up_in_order_over_authenticated_http() {
    let root = temp("levels");
    let repo = GitRepo::new(root.join("sockshop"));
    let (main, dev) = sockshop(&repo);
    let server = GitHttpServer::start(&root, Some(("alice", "s3cret"))).await;
    let credentials = temp("levels-credentials");
    std::fs::create_dir_all(&credentials).unwrap();
    std::fs::write(credentials.join("username"), "alice").unwrap();
    std::fs::write(credentials.join("password"), "s3cret\n").unwrap();
    let args = git_args(
        "levels",
        &server.url("sockshop"),
        &["--git-credentials-dir", credentials.to_str().unwrap()],
    );
    let h = Harness::start_with_source(kube_sim::Sim::builder(), args, &[]).await;

    // Service level: `dev:carts/job/config.yaml`, files relative to `carts/`.
    let response = h.post_event(&event("svc", "dev", "carts", None)).await;
    assert_eq!(response.status, 202, "{:?}", response.body);
    expect_success(&h, "svc").await;
    let run = run_of(&h, "svc");
    assert_eq!(run["spec"]["configRevision"], dev.as_str());
    assert_eq!(run["spec"]["configDir"], "carts");
    assert_eq!(run["spec"]["action"]["name"], "service level");
    assert_eq!(
        keptn_files(&h, "svc", 2),
        [
            ("/keptn/data/a.txt".into(), "dev a v1".into(), 0o644),
            (
                "/keptn/data/nested/b.json".into(),
                "{\"b\": 1}".into(),
                0o644
            ),
            (
                "/keptn/helm/Chart.yaml".into(),
                "name: carts\n".into(),
                0o644
            ),
            (
                "/keptn/scripts/run.sh".into(),
                "#!/bin/sh\necho v1\n".into(),
                0o755
            ),
        ],
        "a directory brings everything below it (helm, not helm-abc), with modes"
    );
    let second: Vec<String> = keptn_files(&h, "svc", 1)
        .into_iter()
        .map(|(path, _, _)| path)
        .collect();
    assert_eq!(
        second,
        ["/keptn/data/a.txt", "/keptn/data/nested/b.json"],
        "each task mounts only its own files"
    );
    assert!(
        keptn_files(&h, "svc", 0).is_empty(),
        "a task without files stages nothing"
    );

    // Stage level: no `orders/` on dev, so `dev:job/config.yaml`, files from the top.
    h.post_event(&event("stage", "dev", "orders", None)).await;
    expect_success(&h, "stage").await;
    let run = run_of(&h, "stage");
    assert_eq!(run["spec"]["action"]["name"], "stage level");
    assert_eq!(run["spec"]["configDir"], "");
    assert_eq!(image_of(&h, "stage", 0), "alpine:stage");
    assert_eq!(
        keptn_files(&h, "stage", 0),
        [(
            "/keptn/shared/common.txt".into(),
            "stage common".into(),
            0o644
        )]
    );

    // Project level: `staging` has nothing of its own and `production` is no branch, so the
    // default branch's `job/config.yaml`.
    for (id, stage) in [("staging", "staging"), ("production", "production")] {
        h.post_event(&event(id, stage, "carts", None)).await;
        expect_success(&h, id).await;
        let run = run_of(&h, id);
        assert_eq!(run["spec"]["action"]["name"], "project level", "{id}");
        assert_eq!(run["spec"]["configRevision"], main.as_str(), "{id}");
        assert_eq!(
            keptn_files(&h, id, 0),
            [(
                "/keptn/shared/common.txt".into(),
                "project common".into(),
                0o644
            )]
        );
    }
    assert!(
        server.requests().iter().any(|r| r.status == 401),
        "the server asked for credentials: {:?}",
        server.requests()
    );
}

/// `--git-files-from '{stage}:{service}'`, as Keptn's service read task files: a stage-level
/// and a project-level config's files come from the service's own directory on the stage
/// branch (at the pinned commit when the event pins one); a stage without a branch fails a run
/// whose tasks name files, saying so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_of_a_shared_config_come_from_the_service_on_the_stage_branch() {
    let root = temp("files-from");
    let repo = GitRepo::new(root.join("sockshop"));
    let (main, _) = sockshop(&repo);
    repo.switch("dev");
    repo.write("orders/shared/common.txt", "orders on dev");
    let dev = repo.commit("orders' files on dev");
    repo.switch("staging");
    // Nothing of its own on staging but the files of `carts/`.
    repo.git(&["rm", "-q", "-r", "job", "shared"]);
    repo.write("carts/shared/common.txt", "carts on staging");
    let staging = repo.commit("carts' files on staging");
    repo.switch("main");
    let args = git_args(
        "files-from",
        &repo.file_url(),
        &["--git-files-from", "{stage}:{service}"],
    );
    let h = Harness::start_with_source(kube_sim::Sim::builder(), args, &[]).await;
    let common = |text: &str| {
        vec![(
            "/keptn/shared/common.txt".to_string(),
            text.to_string(),
            0o644,
        )]
    };

    // Stage level (no `orders/job/config.yaml` on dev): the files of `orders/` on dev.
    for (id, pin) in [("stage", None), ("stage-pinned", Some(dev.as_str()))] {
        let response = h.post_event(&event(id, "dev", "orders", pin)).await;
        assert_eq!(response.status, 202, "{:?}", response.body);
        expect_success(&h, id).await;
        let run = run_of(&h, id);
        assert_eq!(run["spec"]["action"]["name"], "stage level", "{id}");
        assert_eq!(run["spec"]["configDir"], "", "{id}");
        assert_eq!(run["spec"]["filesDir"], "orders", "{id}");
        assert_eq!(run["spec"]["filesRevision"], dev.as_str(), "{id}");
        assert_eq!(keptn_files(&h, id, 0), common("orders on dev"), "{id}");
    }

    // Project level (nothing of its own on `staging`): read on the default branch, its files
    // from `carts/` on staging.
    h.post_event(&event("project", "staging", "carts", None))
        .await;
    expect_success(&h, "project").await;
    let run = run_of(&h, "project");
    assert_eq!(run["spec"]["action"]["name"], "project level");
    assert_eq!(run["spec"]["configRevision"], main.as_str());
    assert_eq!(run["spec"]["filesRevision"], staging.as_str());
    assert_eq!(keptn_files(&h, "project", 0), common("carts on staging"));

    // `production` is no branch: the project's config is found, but not its task's files.
    h.post_event(&event("production", "production", "carts", None))
        .await;
    let message = expect_error(&h, "production").await;
    assert!(
        message.contains(
            "the task files are read from carts/ on branch production (--git-files-from), and \
             the repository has no such branch"
        ),
        "{message}"
    );
    assert!(
        !h.jobs_created()
            .iter()
            .any(|job| job.starts_with(&run_name(&h, "production"))),
        "no Job for a run that cannot have its files"
    );
    // Pinned, a lookup on a named branch reads the pinned commit whatever the branch, as Keptn's
    // service read a resource at the event's commit: the files of `carts/` at that commit.
    let id = "production-pinned";
    h.post_event(&event(id, "production", "carts", Some(staging.as_str())))
        .await;
    expect_success(&h, id).await;
    let run = run_of(&h, id);
    assert_eq!(run["spec"]["action"]["name"], "project level");
    assert_eq!(run["spec"]["filesRevision"], staging.as_str());
    assert_eq!(keptn_files(&h, id, 0), common("carts on staging"));
}

/// With a CRD older than `--git-files-from` (applied before it, not upgraded since: Helm does
/// not upgrade CRDs), the API server drops the run's `spec.filesDir` and the run would read its
/// files beside its config: it is deleted and the event answered 503, saying to apply the CRD;
/// once applied, the event runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_from_with_an_older_crd_refuses_events_until_the_crd_is_applied() {
    let root = temp("files-from-crd");
    let repo = GitRepo::new(root.join("sockshop"));
    sockshop(&repo);
    let args = git_args(
        "files-from-crd",
        &repo.file_url(),
        &["--git-files-from", "{stage}:{service}"],
    );
    let h = Harness::start_with_source(kube_sim::Sim::builder(), args, &[]).await;
    let mut crd: Value =
        serde_json::from_str(&h.kubectl(&["get", "crd", "jobruns.job-executor.dev", "-o", "json"]))
            .unwrap();
    let spec = &mut crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"];
    for field in ["filesDir", "filesRevision"] {
        assert!(
            spec.as_object_mut().unwrap().remove(field).is_some(),
            "{field}"
        );
    }
    crd["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("resourceVersion");
    let older = root.join("older-crd.json");
    std::fs::write(&older, crd.to_string()).unwrap();
    h.kubectl(&["apply", "-f", older.to_str().unwrap()]);

    let response = h.post_event(&event("old-crd", "dev", "carts", None)).await;
    assert_eq!(response.status, 503, "{:?}", response.body);
    let said = response.body.to_string();
    assert!(
        said.contains("is older than this operator: it drops spec.filesDir"),
        "{said}"
    );
    assert!(h.jobruns().is_empty(), "{:#?}", h.jobruns());

    h.kubectl(&[
        "apply",
        "-f",
        support::root().join("crds").to_str().unwrap(),
    ]);
    let response = h.post_event(&event("old-crd", "dev", "carts", None)).await;
    assert_eq!(response.status, 202, "{:?}", response.body);
    expect_success(&h, "old-crd").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_keeps_its_commit_while_the_branch_moves_and_gitcommitid_pins_an_old_one() {
    let repo = GitRepo::new(temp("pinning").join("sockshop"));
    let (_, old) = sockshop(&repo);
    let args = git_args(
        "pinning",
        &repo.file_url(),
        &["--git-fetch-interval-seconds", "0"],
    );
    let h = Harness::start_with_source(kube_sim::Sim::builder(), args, &[]).await;
    h.sim
        .runtime()
        .set(ImageRule::image("busybox:first"), Behavior::hold());

    // The run is accepted at `old`; its first task (no files) holds while `dev` moves on.
    h.post_event(&event("moving", "dev", "carts", None)).await;
    wait_for("the first task to run", LONG, || {
        !h.sim.runtime().held().is_empty()
    })
    .await;
    repo.switch("dev");
    repo.write("carts/data/a.txt", "dev a v2").write(
        "carts/job/config.yaml",
        action(
            "service level v2",
            &[
                task("first", "busybox:first", "[]"),
                task("second", "busybox:second-v2", "[data]"),
            ]
            .concat(),
        ),
    );
    let new = repo.commit("move dev");
    repo.git(&["checkout", "-q", "main"]);
    // Another event reads the new head, so the cache has it while the first run goes on.
    h.sim
        .runtime()
        .set(ImageRule::image("busybox:first"), Behavior::succeed());
    h.post_event(&event("new", "dev", "carts", None)).await;
    expect_success(&h, "new").await;
    assert_eq!(run_of(&h, "new")["spec"]["configRevision"], new.as_str());
    assert_eq!(keptn_files(&h, "new", 1)[0].1, "dev a v2");
    assert_eq!(image_of(&h, "new", 1), "busybox:second-v2");

    let first_job = format!("{}-0", run_name(&h, "moving"));
    assert_eq!(h.sim.release(&first_job), 1);
    expect_success(&h, "moving").await;
    assert_eq!(run_of(&h, "moving")["spec"]["configRevision"], old.as_str());
    assert_eq!(image_of(&h, "moving", 1), "busybox:second");
    for task in [1, 2] {
        assert_eq!(
            keptn_files(&h, "moving", task)[0],
            ("/keptn/data/a.txt".into(), "dev a v1".into(), 0o644),
            "task {task} sees the files of the run's commit"
        );
    }

    // `gitcommitid` pins the old commit after the branch moved: its config and its files.
    h.post_event(&event("pinned", "dev", "carts", Some(&old)))
        .await;
    expect_success(&h, "pinned").await;
    let run = run_of(&h, "pinned");
    assert_eq!(run["spec"]["configRevision"], old.as_str());
    assert_eq!(run["spec"]["action"]["name"], "service level");
    assert_eq!(image_of(&h, "pinned", 2), "busybox:third");
    assert_eq!(keptn_files(&h, "pinned", 2)[0].1, "dev a v1");

    // A commit that does not exist fails the run with a message naming it.
    h.post_event(&event(
        "nowhere",
        "dev",
        "carts",
        Some("0123456789abcdef0123"),
    ))
    .await;
    let message = expect_error(&h, "nowhere").await;
    assert!(
        message.contains("commit 0123456789abcdef0123 is not in file://"),
        "{message}"
    );
    // Another service's task of that sequence, pinned alike: no action at the heads runs for
    // it, so it starts nothing, saying why, and no `.finished` fails it.
    let runs = h.jobruns().len();
    let mut evaluation = event(
        "nowhere-evaluation",
        "dev",
        "carts",
        Some("0123456789abcdef0123"),
    );
    evaluation["type"] = json!("sh.keptn.event.evaluation.triggered");
    let response = h.post_event(&evaluation).await;
    assert_eq!(response.status, 200, "{:?}", response.body);
    assert!(
        response
            .body
            .to_string()
            .contains("--git-pin-commits false"),
        "{:?}",
        response.body
    );
    assert_eq!(h.jobruns().len(), runs, "no run, so no .finished");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_oversized_escaping_and_too_many_files_fail_the_run_before_any_job() {
    let repo = GitRepo::new(temp("limits").join("sockshop"));
    sockshop(&repo);
    repo.switch("dev");
    repo.write(
        "missing/job/config.yaml",
        action(
            "missing",
            &task("locust", "locustio/locust:2", "[locust/basic.py]"),
        ),
    )
    .write(
        "big/job/config.yaml",
        action("big", &task("upload", "alpine:3", "[blobs, small.txt]")),
    )
    .write("big/blobs/one.bin", vec![b'1'; 700_000])
    .write("big/blobs/two.bin", vec![b'2'; 400_000])
    .write("big/small.txt", "small")
    .write(
        "escape/job/config.yaml",
        action("escape", &task("read", "alpine:3", "[passwd]")),
    )
    .link("escape/passwd", "../../../etc/passwd")
    .write(
        "many/job/config.yaml",
        action("many", &task("build", "node:22", "[node_modules]")),
    );
    for n in 0..5_000 {
        repo.write(
            &format!("many/node_modules/some-package-with-a-long-name/lib/module-{n:05}.js"),
            "",
        );
    }
    let dev = repo.commit("bad files");
    let h = Harness::start_with_source(
        kube_sim::Sim::builder(),
        git_args("limits", &repo.file_url(), &[]),
        &[],
    )
    .await;

    h.post_event(&event("missing", "dev", "missing", None))
        .await;
    let message = expect_error(&h, "missing").await;
    assert!(
        message.contains(&format!(
            "task 'locust': file or directory \"locust/basic.py\" not found in missing at commit {dev}"
        )),
        "{message}"
    );

    h.post_event(&event("big", "dev", "big", None)).await;
    let message = expect_error(&h, "big").await;
    assert!(
        message.contains("more than the 1000000 bytes one ConfigMap can hold")
            && message.contains(
                "the largest: blobs/one.bin (700000 bytes), blobs/two.bin (400000 bytes)"
            ),
        "{message}"
    );

    h.post_event(&event("escape", "dev", "escape", None)).await;
    let message = expect_error(&h, "escape").await;
    assert!(
        message.contains("task 'read': \"passwd\" is a link that leads outside the repository"),
        "{message}"
    );
    h.post_event(&event("many", "dev", "many", None)).await;
    let message = expect_error(&h, "many").await;
    assert!(
        message.contains("the tasks of this run list 5000 files, which take 843890 bytes in its JobRun and Jobs, more than the 524288 bytes allowed"),
        "{message}"
    );
    assert!(h.jobs_created().is_empty(), "{:?}", h.jobs_created());

    // The operator goes on serving.
    h.post_event(&event("fine", "dev", "carts", None)).await;
    expect_success(&h, "fine").await;
}

/// The `error` of a 503 answer, checking it asks to retry.
fn retry_later(response: &support::Response) -> String {
    assert_eq!(response.status, 503, "{:?}", response.body);
    assert_eq!(
        response
            .headers
            .get("retry-after")
            .map(|v| v.to_str().unwrap()),
        Some("5")
    );
    response.body["error"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_nothing_fetched_an_unreachable_repository_or_refused_credentials_answer_503_until_fixed()
 {
    let root = temp("outage");
    let repo = GitRepo::new(root.join("sockshop"));
    sockshop(&repo);
    let credentials = temp("outage-credentials");
    std::fs::create_dir_all(&credentials).unwrap();
    std::fs::write(credentials.join("username"), "alice").unwrap();
    std::fs::write(credentials.join("password"), "wrong-password").unwrap();
    // A port nothing listens on yet: bound (so no other process can take it) but not
    // listening, so connections are refused until the server starts on this very socket.
    let reserved = tokio::net::TcpSocket::new_v4().unwrap();
    reserved.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = reserved.local_addr().unwrap();
    let url = format!("http://{addr}/sockshop");
    let args = git_args(
        "outage",
        &url,
        &["--git-credentials-dir", credentials.to_str().unwrap()],
    );
    let h = Harness::start_with_source(kube_sim::Sim::builder(), args, &[]).await;

    // Nothing was ever fetched: the sender is asked to retry, and nothing is recorded.
    let down = event("down", "dev", "carts", None);
    let message = retry_later(&h.post_event(&down).await);
    assert!(
        message.starts_with(&format!(
            "the job config cannot be read now:\ncannot fetch {url}: "
        )) && message.contains("Connection refused")
            && message.ends_with("; retry later"),
        "{message}"
    );
    assert!(h.jobruns().is_empty(), "{:?}", h.jobruns());

    // The host is back, but refuses the credentials: the same.
    let listener = reserved.listen(1024).unwrap();
    let server = GitHttpServer::serve(listener, &root, Some(("alice", "s3cret")));
    let message = retry_later(&h.post_event(&down).await);
    assert!(
        message.contains(&format!("cannot fetch {url}: "))
            && message.contains("were not accepted by the remote"),
        "{message}"
    );
    assert!(!message.contains("wrong-password"), "{message}");
    assert!(server.requests().iter().any(|r| r.status == 401));
    assert!(h.jobruns().is_empty(), "{:?}", h.jobruns());

    // The Secret is read at every fetch: fixing it is enough, and the retried event runs.
    std::fs::write(credentials.join("password"), "s3cret").unwrap();
    let response = h.post_event(&down).await;
    assert_eq!(response.status, 202, "{:?}", response.body);
    expect_success(&h, "down").await;
    let finished: Vec<_> = h
        .sink
        .for_trigger("down")
        .into_iter()
        .filter(|e| e.event_type.ends_with(".finished"))
        .collect();
    assert_eq!(finished.len(), 1, "one .finished, the successful one");
    let (_, metrics) = h.get_admin("/metrics").await;
    assert!(
        metrics.contains("job_executor_events_received_total{outcome=\"source_unavailable\"} 2"),
        "{metrics}"
    );
    assert!(h.operator_running());
}

/// A git host that redirects the fetch to another host does not get that host the configured
/// credentials: the other host asks for them, is refused them, and the event waits (503) as for
/// any host that cannot be read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_are_not_sent_to_the_host_a_fetch_is_redirected_to() {
    let root = temp("redirect");
    let repo = GitRepo::new(root.join("sockshop"));
    sockshop(&repo);
    let other = GitHttpServer::start(&root, Some(("alice", "s3cret"))).await;
    // The configured host answers every request with a redirect to the other one.
    let target = other.base.clone();
    let redirector = axum::Router::new().fallback(move |uri: axum::http::Uri| {
        let location = format!(
            "{target}{}",
            uri.path_and_query().map_or("/", |p| p.as_str())
        );
        async move {
            (
                axum::http::StatusCode::FOUND,
                [(axum::http::header::LOCATION, location)],
            )
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/sockshop", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, redirector).await });
    let credentials = temp("redirect-credentials");
    std::fs::create_dir_all(&credentials).unwrap();
    std::fs::write(credentials.join("username"), "alice").unwrap();
    std::fs::write(credentials.join("password"), "s3cret").unwrap();
    let args = git_args(
        "redirect",
        &url,
        &["--git-credentials-dir", credentials.to_str().unwrap()],
    );
    let h = Harness::start_with_source(kube_sim::Sim::builder(), args, &[]).await;

    let message = retry_later(&h.post_event(&event("moved", "dev", "carts", None)).await);
    assert!(
        message.contains(&format!("cannot fetch {url}: "))
            && message.contains(&format!(
                "{url} redirected to {}, which asks for credentials: the credentials of {url} \
                 are not sent to another host",
                other.url("sockshop")
            )),
        "{message}"
    );
    let requests = other.requests();
    assert!(!requests.is_empty(), "the fetch was redirected");
    assert!(
        requests.iter().all(|r| r.status == 401),
        "the other host was never sent the credentials: {requests:?}"
    );
    assert!(h.jobruns().is_empty(), "{:?}", h.jobruns());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn during_a_git_outage_events_run_at_the_last_fetched_commit_and_unknown_pins_wait() {
    let root = temp("blip");
    let repo = GitRepo::new(root.join("sockshop"));
    let (_, before) = sockshop(&repo);
    let mut server = GitHttpServer::start(&root, None).await;
    // Every lookup of a branch head fetches, so every event below meets the outage.
    let args = git_args(
        "blip",
        &server.url("sockshop"),
        &["--git-fetch-interval-seconds", "0"],
    );
    let mut h = Harness::start_with_source(kube_sim::Sim::builder(), args, &[]).await;
    let response = h.post_event(&event("before", "dev", "carts", None)).await;
    assert_eq!(response.status, 202, "{:?}", response.body);
    expect_success(&h, "before").await;

    // The git host goes down, and `dev` moves on meanwhile.
    server.stop().await;
    repo.switch("dev");
    repo.write("carts/data/a.txt", "dev a v2");
    let moved = repo.commit("move dev");
    repo.git(&["checkout", "-q", "main"]);

    // An event runs at the last fetched head of its branch, and its run says so.
    let response = h.post_event(&event("during", "dev", "carts", None)).await;
    assert_eq!(response.status, 202, "{:?}", response.body);
    expect_success(&h, "during").await;
    let run = run_of(&h, "during");
    assert_eq!(run["spec"]["configRevision"], before.as_str());
    let stale = &run["spec"]["configStale"];
    assert!(
        stale["fetchError"]
            .as_str()
            .unwrap()
            .starts_with(&format!("cannot fetch {}: ", server.url("sockshop"))),
        "{stale}"
    );
    assert!(
        stale["fetchedAt"].as_str().unwrap().ends_with('Z'),
        "{stale}"
    );
    assert_eq!(keptn_files(&h, "during", 1)[0].1, "dev a v1");
    assert!(run_of(&h, "before")["spec"].get("configStale").is_none());
    // An event nothing listens for is answered as usual, saying what it was matched against.
    let mut unrelated = event("unrelated", "dev", "carts", None);
    unrelated["type"] = json!("sh.keptn.event.deployment.triggered");
    let response = h.post_event(&unrelated).await;
    assert_eq!(response.status, 200, "{:?}", response.body);
    let reasons = response.body["events"][0]["not_matched"].to_string();
    assert!(
        reasons.contains("the job config was looked up at the branch heads fetched at 20")
            && reasons.contains("as the repository cannot be fetched now: cannot fetch"),
        "{reasons}"
    );

    // A commit the clone does not have may well exist: retry later, nothing is recorded.
    let pinned = event("pinned", "dev", "carts", Some(&moved));
    let message = retry_later(&h.post_event(&pinned).await);
    assert!(
        message.contains(&format!(
            "commit {moved} is not in the clone cache yet, and cannot fetch"
        )),
        "{message}"
    );
    assert!(
        !h.jobruns()
            .iter()
            .any(|r| r["spec"]["event"]["id"] == "pinned")
    );
    let (_, metrics) = h.get_admin("/metrics").await;
    for line in [
        "job_executor_git_stale_lookups_total 2",
        "job_executor_events_received_total{outcome=\"source_unavailable\"} 1",
    ] {
        assert!(metrics.contains(line), "{line}\n{metrics}");
    }

    // Restarted during the outage, the operator reads the heads its clone keeps.
    h.kill_operator();
    h.start_operator().await;
    let response = h
        .post_event(&event("restarted", "dev", "carts", None))
        .await;
    assert_eq!(response.status, 202, "{:?}", response.body);
    expect_success(&h, "restarted").await;
    let run = run_of(&h, "restarted");
    assert_eq!(run["spec"]["configRevision"], before.as_str());
    assert!(run["spec"]["configStale"].is_object(), "{run}");

    // The host is back: the retried event runs at the commit it pins, a new one at the new head.
    server.resume().await;
    let response = h.post_event(&pinned).await;
    assert_eq!(response.status, 202, "{:?}", response.body);
    expect_success(&h, "pinned").await;
    assert_eq!(
        run_of(&h, "pinned")["spec"]["configRevision"],
        moved.as_str()
    );
    assert_eq!(keptn_files(&h, "pinned", 1)[0].1, "dev a v2");
    h.post_event(&event("after", "dev", "carts", None)).await;
    expect_success(&h, "after").await;
    let run = run_of(&h, "after");
    assert_eq!(run["spec"]["configRevision"], moved.as_str());
    assert!(run["spec"].get("configStale").is_none(), "{run}");
}

/// The value of a counter without labels on the operator's metrics page.
async fn counter(h: &Harness, name: &str) -> u64 {
    let (_, metrics) = h.get_admin("/metrics").await;
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(&format!("{name} ")))
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in\n{metrics}"))
}

/// After a push, a burst of events shares one fetch, and one read of each config they need;
/// a config the push left as it was is not compiled again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_events_after_a_push_shares_one_fetch_and_one_read_of_the_config() {
    let root = temp("burst");
    let repo = GitRepo::new(root.join("sockshop"));
    sockshop(&repo);
    let server = GitHttpServer::start(&root, None).await;
    let interval = Duration::from_secs(3);
    let args = git_args(
        "burst",
        &server.url("sockshop"),
        &["--git-fetch-interval-seconds", "3"],
    );
    let h = Harness::start_with_source(kube_sim::Sim::builder(), args, &[]).await;
    h.post_event(&event("warm", "dev", "orders", None)).await;
    expect_success(&h, "warm").await;
    assert_eq!(server.fetches(), 1);
    // The lookup read the service level (nothing there) and the stage level, compiled.
    let reads = "job_executor_git_config_reads_total";
    let compiles = "job_executor_git_config_compiles_total";
    assert_eq!(counter(&h, reads).await, 2);
    assert_eq!(counter(&h, compiles).await, 1);

    // A push; past the interval, a burst of events needs the branch head again: one fetch,
    // and one read of each path at the new commit, for all.
    repo.switch("dev");
    repo.write("orders/notes.txt", "not a config");
    repo.commit("pushed");
    let warm_done = Instant::now();
    wait_for("the fetch interval to pass", LONG, || {
        warm_done.elapsed() > interval + Duration::from_millis(200)
    })
    .await;
    // Counted from here: a slow machine may have fetched again since (the interval is short).
    let before = server.fetches();
    let ids: Vec<String> = (0..6).map(|i| format!("burst-{i}")).collect();
    let events: Vec<Value> = ids
        .iter()
        .map(|id| event(id, "dev", "orders", None))
        .collect();
    let posts = events.iter().map(|event| h.post_event(event));
    for response in futures::future::join_all(posts).await {
        assert_eq!(response.status, 202, "{:?}", response.body);
    }
    for id in &ids {
        expect_success(&h, id).await;
    }
    assert_eq!(server.fetches() - before, 1, "{:?}", server.requests());
    assert_eq!(counter(&h, reads).await, 4);
    // The push left the config as it was: what was compiled at the old commit is used.
    assert_eq!(counter(&h, compiles).await, 1);
    let (_, metrics) = h.get_admin("/metrics").await;
    assert!(
        metrics.contains(&format!(
            "job_executor_git_fetches_total{{outcome=\"ok\"}} {}",
            server.fetches()
        )),
        "{metrics}"
    );
}

/// Under a steady stream of events none waits for a fetch. Late in the fetch interval (a
/// quarter of it left, or twice what the last fetch took) an event starts a fetch ahead and is
/// answered from the heads the operator has; while that fetch hangs on the git host, events are
/// answered the same way. An event once the heads are due waits for the fetch (a config is
/// never older than the interval), and runs the commit pushed meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_a_steady_stream_of_events_none_waits_for_a_fetch() {
    let root = temp("ahead");
    let repo = GitRepo::new(root.join("sockshop"));
    sockshop(&repo);
    let server = GitHttpServer::start(&root, None).await;
    let interval = Duration::from_secs(8);
    let args = git_args(
        "ahead",
        &server.url("sockshop"),
        &["--git-fetch-interval-seconds", "8"],
    );
    let h = Harness::start_with_source(kube_sim::Sim::builder(), args, &[]).await;
    let warm = Instant::now();
    let response = h.post_event(&event("warm", "dev", "carts", None)).await;
    assert_eq!(response.status, 202, "{:?}", response.body);
    // The heads are due from the fetch's start plus the interval, at most this.
    let due = Instant::now() + interval;
    assert_eq!(server.fetches(), 1);

    // The git host hangs from now on, and a commit is pushed.
    server.hold();
    repo.switch("dev");
    repo.write("carts/data/a.txt", "dev a v2");
    let pushed = repo.commit("v2");
    let arrived = server.arrivals();
    let mut unrelated = event("unrelated", "dev", "carts", None);
    unrelated["type"] = json!("sh.keptn.event.unrelated.triggered");
    let answered_at_once = |at: &str| {
        let h = &h;
        let unrelated = unrelated.clone();
        let at = at.to_string();
        async move {
            let response = tokio::time::timeout(Duration::from_secs(5), h.post_event(&unrelated))
                .await
                .unwrap_or_else(|_| panic!("{at}: an event waited for the fetch"));
            assert_eq!(response.status, 200, "{at}: {:?}", response.body);
        }
    };
    // A steady stream: one event each 50 ms until one starts the fetch ahead.
    while server.arrivals() == arrived {
        answered_at_once("before the fetch ahead").await;
        assert!(
            Instant::now() < due,
            "no fetch ahead before the heads were due: {}",
            h.operator_log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        Instant::now() >= warm + interval / 2,
        "fetched ahead before the second half of the interval"
    );
    // The fetch ahead hangs on the host; events go on being answered.
    for _ in 0..5 {
        answered_at_once("while the fetch ahead hangs").await;
    }
    assert!(
        Instant::now() < due,
        "the machine was too slow to tell: the heads were due"
    );

    // Due: an event waits for the fetch (up to --git-fetch-wait-seconds, 10 s by default).
    tokio::time::sleep_until((due + Duration::from_millis(200)).into()).await;
    let waiting = h.post_event_in_background(&event("due", "dev", "carts", None));
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        !waiting.is_finished(),
        "an event read heads past the interval"
    );
    server.release();
    let response = waiting.await.unwrap().expect("answered");
    assert_eq!(response.status, 202, "{:?}", response.body);
    expect_success(&h, "due").await;
    assert_eq!(run_of(&h, "due")["spec"]["configRevision"], pushed.as_str());
    // Not counted further: the fetch ahead took as long as the host hung, so the next one
    // starts early (twice that before due), and a slow machine gets there during the run.
}

/// A git host that trickles its packs (a few bytes now and then, never silent long enough for a
/// read to time out) holds neither events nor the fetches for good: an event whose heads are
/// due waits `--git-fetch-wait-seconds`, then runs at the last fetched commit, marked stale;
/// past `--git-fetch-timeout-seconds` the fetch is given up, and once the host sends at its
/// pace again the next fetch brings the commit pushed meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_git_host_that_trickles_its_pack_holds_neither_events_nor_the_fetch() {
    let root = temp("trickle");
    let repo = GitRepo::new(root.join("sockshop"));
    let (_, before) = sockshop(&repo);
    let server = GitHttpServer::start(&root, None).await;
    let args = git_args(
        "trickle",
        &server.url("sockshop"),
        &[
            "--git-fetch-interval-seconds",
            "1",
            "--git-fetch-wait-seconds",
            "3",
            "--git-fetch-timeout-seconds",
            "8",
        ],
    );
    let h = Harness::start_with_source(kube_sim::Sim::builder(), args, &[]).await;
    let response = h.post_event(&event("before", "dev", "carts", None)).await;
    assert_eq!(response.status, 202, "{:?}", response.body);
    expect_success(&h, "before").await;

    // A push with 64 KiB that do not compress: at 256 bytes per 100 ms, its pack takes over
    // 25 s to arrive.
    repo.switch("dev");
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
    let noise: Vec<u8> = (0..64 * 1024)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed as u8
        })
        .collect();
    repo.write("carts/data/noise.bin", noise);
    repo.write("carts/data/a.txt", "dev a v2");
    let pushed = repo.commit("v2");
    repo.git(&["checkout", "-q", "main"]);
    server.trickle(Some((256, Duration::from_millis(100))));
    tokio::time::sleep(Duration::from_millis(1200)).await;

    let asked = Instant::now();
    let response = h.post_event(&event("during", "dev", "carts", None)).await;
    let waited = asked.elapsed();
    assert_eq!(response.status, 202, "{:?}", response.body);
    assert!(
        waited >= Duration::from_millis(2900) && waited < Duration::from_secs(7),
        "answered after {waited:?}"
    );

    // The event ran at the last fetched commit, marked stale.
    expect_success(&h, "during").await;
    let run = run_of(&h, "during");
    assert_eq!(run["spec"]["configRevision"], before.as_str());
    let stale = run["spec"]["configStale"]["fetchError"].as_str().unwrap();
    assert!(
        stale.contains(
            "has not ended; lookups wait for a fetch at most 3 s (--git-fetch-wait-seconds)"
        ),
        "{stale}"
    );
    assert_eq!(keptn_files(&h, "during", 1)[0].1, "dev a v1");

    // Past the timeout the trickling fetch is given up (its transfer interrupted at the next
    // packet, which the host sends whole only after about 25 s): the host answers at its pace
    // again, and the next event's fetch, started beside it, brings the pushed commit at once.
    tokio::time::sleep_until((asked + Duration::from_millis(8500)).into()).await;
    server.trickle(None);
    let asked = Instant::now();
    let response = h.post_event(&event("after", "dev", "carts", None)).await;
    assert_eq!(response.status, 202, "{:?}", response.body);
    assert!(
        asked.elapsed() < Duration::from_secs(7),
        "waited for the fetch given up: {:?}",
        asked.elapsed()
    );
    expect_success(&h, "after").await;
    let run = run_of(&h, "after");
    assert_eq!(run["spec"]["configRevision"], pushed.as_str());
    assert!(run["spec"].get("configStale").is_none(), "{run}");
    assert_eq!(keptn_files(&h, "after", 1)[0].1, "dev a v2");
    let log = h.operator_log();
    assert!(
        log.contains("is still under way past --git-fetch-timeout-seconds: it is left to itself")
            || log.contains("did not end within 8 s (--git-fetch-timeout-seconds)"),
        "{log}"
    );
}

/// A push fetched ahead is read ahead: the configs the events before the fetch needed are read
/// at the pushed commit before the fetch records it, so the events after it find them in
/// memory, and none waits for a config to be compiled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_fetched_ahead_is_read_before_an_event_needs_it() {
    let root = temp("read-ahead");
    let repo = GitRepo::new(root.join("sockshop"));
    sockshop(&repo);
    let server = GitHttpServer::start(&root, None).await;
    let args = git_args(
        "read-ahead",
        &server.url("sockshop"),
        &["--git-fetch-interval-seconds", "8"],
    );
    let h = Harness::start_with_source(kube_sim::Sim::builder(), args, &[]).await;
    let reads = "job_executor_git_config_reads_total";
    let response = h.post_event(&event("warm", "dev", "carts", None)).await;
    assert_eq!(response.status, 202, "{:?}", response.body);
    assert_eq!(server.fetches(), 1);
    // The service level of `dev` has carts' config: one read.
    assert_eq!(counter(&h, reads).await, 1);

    repo.switch("dev");
    repo.write(
        "carts/job/config.yaml",
        action("service level", &task("only", "busybox:pushed", "[]")),
    );
    let pushed = repo.commit("pushed");
    // A steady stream of events nothing listens for, until one starts the fetch ahead.
    let mut unrelated = event("unrelated", "dev", "carts", None);
    unrelated["type"] = json!("sh.keptn.event.unrelated.triggered");
    while server.fetches() == 1 {
        let response = h.post_event(&unrelated).await;
        assert_eq!(response.status, 200, "{:?}", response.body);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // No event from here on: the config at the pushed commit is read by the fetch.
    let deadline = Instant::now() + LONG;
    while counter(&h, reads).await < 2 {
        assert!(
            Instant::now() < deadline,
            "the pushed config was not read ahead: {}",
            h.operator_log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The next event runs it, and nothing more is read.
    let response = h.post_event(&event("pushed", "dev", "carts", None)).await;
    assert_eq!(response.status, 202, "{:?}", response.body);
    expect_success(&h, "pushed").await;
    assert_eq!(
        run_of(&h, "pushed")["spec"]["configRevision"],
        pushed.as_str()
    );
    assert_eq!(image_of(&h, "pushed", 0), "busybox:pushed");
    assert_eq!(counter(&h, reads).await, 2);
}

/// The operator's clone in a cache directory (one bare repository per URL).
fn cached_clone(cache: &Path) -> Option<PathBuf> {
    std::fs::read_dir(cache)
        .ok()?
        .flatten()
        .map(|entry| entry.path())
        .find(|path| path.extension().is_some_and(|e| e == "git"))
}

/// Whether gitoxide holds a lock in the clone now: `packed-refs.lock`, or the lock of a
/// remote-tracking branch.
fn holds_a_ref_lock(clone: &Path) -> bool {
    clone.join("packed-refs.lock").exists()
        || std::fs::read_dir(clone.join("refs/remotes/origin")).is_ok_and(|entries| {
            entries
                .flatten()
                .any(|entry| entry.file_name().to_string_lossy().ends_with(".lock"))
        })
}

/// Every `*.lock` file in a clone.
fn lock_files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            found.extend(lock_files(&path));
        } else if path.extension().is_some_and(|e| e == "lock") {
            found.push(path);
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_killed_in_the_middle_of_a_fetch_serves_the_event_after_a_restart() {
    let root = temp("killed");
    let repo = GitRepo::new(root.join("sockshop"));
    let (_, dev) = sockshop(&repo);
    // So many branches that gitoxide holds their lock files for a while when it writes their
    // refs into the clone: the kill below lands then, as a crash in the middle of a fetch does.
    repo.branches("load-", 20_000);
    let server = GitHttpServer::start(&root, None).await;
    let args = git_args("killed", &server.url("sockshop"), &[]);
    let cache = temp("killed-cache");
    let mut h = Harness::start_with_source(kube_sim::Sim::builder(), args, &[]).await;

    let sent = event("killed", "dev", "carts", None);
    let answer = h.post_event_in_background(&sent);
    let deadline = Instant::now() + Duration::from_secs(60);
    let clone = loop {
        if let Some(clone) = cached_clone(&cache).filter(|c| holds_a_ref_lock(c)) {
            h.kill_operator();
            break clone;
        }
        assert!(
            !answer.is_finished(),
            "the fetch finished before the kill: {}",
            h.operator_log()
        );
        assert!(Instant::now() < deadline, "no lock file in the clone");
        tokio::time::sleep(Duration::from_millis(1)).await;
    };
    assert!(
        answer.await.unwrap().is_none(),
        "the request died with the operator"
    );
    let left = lock_files(&clone);
    assert!(!left.is_empty(), "the killed fetch left no lock file");

    // Restarted on the same cache (an emptyDir survives a container restart), the operator
    // serves the event its sender sends again.
    h.start_operator().await;
    let response = h.post_event(&sent).await;
    assert_eq!(
        response.status,
        202,
        "{:?}\n{}",
        response.body,
        h.operator_log()
    );
    expect_success(&h, "killed").await;
    assert_eq!(run_of(&h, "killed")["spec"]["configRevision"], dev.as_str());
    assert!(lock_files(&clone).is_empty(), "{:?}", lock_files(&clone));
    assert!(
        h.operator_log().contains(&format!(
            "removed the lock and temporary files of a fetch that was cut short (the operator was killed during it) clone={} count={}",
            clone.display(),
            left.len()
        )),
        "{}",
        h.operator_log()
    );
    // 20,000 refs take room: not left behind.
    drop(h);
    let _ = std::fs::remove_dir_all(&root);
    let _ = std::fs::remove_dir_all(&cache);
}

/// No secret leaves. Every secret the operator holds gets a recognisable value (the git
/// password, the ingest token, a sink header, the HMAC secret); events are accepted, refused
/// for a wrong token and a wrong signature, and run. Then the operator's log at debug level,
/// every object in the API server (JobRuns, Jobs, pods, ConfigMaps, Events), the metrics, every
/// answer and every event the sink received are searched for the values: none is found. (The
/// sink header is meant for the sink: only the events it received are searched, not the
/// requests' headers.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_logs_objects_metrics_answers_or_events() {
    use job_executor::ingest::auth::sign;
    let secrets = [
        "git-pw-7f3a9c",
        "ingest-tok-51d2e8",
        "sink-hdr-0b6c4f",
        "hmac-key-9e1d77",
    ];
    let root = temp("secrets");
    let repo = GitRepo::new(root.join("sockshop"));
    sockshop(&repo);
    let server = GitHttpServer::start(&root, Some(("alice", secrets[0]))).await;
    let credentials = temp("secrets-credentials");
    std::fs::create_dir_all(&credentials).unwrap();
    std::fs::write(credentials.join("username"), "alice").unwrap();
    std::fs::write(credentials.join("password"), secrets[0]).unwrap();
    let hmac_file = credentials.join("hmac");
    std::fs::write(&hmac_file, secrets[3]).unwrap();
    let args = git_args(
        "secrets",
        &server.url("sockshop"),
        &["--git-credentials-dir", credentials.to_str().unwrap()],
    );
    let sink_header = format!("x-token: {}", secrets[2]);
    let h = Harness::start_with_source(
        kube_sim::Sim::builder(),
        args,
        &[
            "--ingest-token",
            secrets[1],
            "--sink-header",
            &sink_header,
            "--ingest-hmac-secret-file",
            hmac_file.to_str().unwrap(),
        ],
    )
    .await;
    let now = support::unix_now();
    let structured = ("content-type", "application/cloudevents+json");
    let bearer = format!("Bearer {}", secrets[1]);
    let mut answers = Vec::new();
    for (id, token, key) in [
        ("secret-run", bearer.as_str(), secrets[3]),
        ("wrong-token", "Bearer not-the-token", secrets[3]),
        ("wrong-signature", bearer.as_str(), "not-the-key"),
    ] {
        let body = event(id, "dev", "carts", None).to_string();
        let signature = sign(key.as_bytes(), now, body.as_bytes());
        let timestamp = now.to_string();
        let response = h
            .post(
                &[
                    structured,
                    ("authorization", token),
                    ("x-signature-256", &signature),
                    ("x-signature-timestamp", &timestamp),
                ],
                body,
            )
            .await;
        answers.push(response.body.to_string());
    }
    expect_success(&h, "secret-run").await;

    let mut places: Vec<(String, String)> = vec![("the operator's log".into(), h.operator_log())];
    for (group, resource) in [
        ("job-executor.dev", "jobruns"),
        ("batch", "jobs"),
        ("", "pods"),
        ("", "configmaps"),
        ("", "events"),
        ("events.k8s.io", "events"),
    ] {
        for object in h.sim.list_objects(group, resource, None) {
            places.push((
                format!("{resource} {}", object["metadata"]["name"]),
                object.to_string(),
            ));
        }
    }
    places.push(("the metrics".into(), h.get_admin("/metrics").await.1));
    for answer in answers {
        places.push(("an answer".into(), answer));
    }
    for received in h.sink.events() {
        places.push((
            format!("the {} the sink got", received.event_type),
            format!(
                "{} {} {}",
                received.id, received.triggered_id, received.data
            ),
        ));
    }
    assert!(places.len() > 10, "{places:?}");
    for (place, text) in &places {
        for secret in secrets {
            assert!(!text.contains(secret), "{secret} in {place}: {text}");
        }
    }
    // The log (at `job_executor=debug`, the harness's level) covers the authenticated fetch
    // and the run: the scan read what it must.
    assert!(
        places[0].1.contains("fetched the config repository")
            && places[0].1.contains("created Job"),
        "{}",
        places[0].1
    );
}

/// A remote whose `HEAD` names no branch it has: an event whose lookups reach `@default` is
/// answered 422 with the reason, whatever its type (no config can tell which types it concerns),
/// and a `.triggered` one is told so in its `.finished`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_whose_head_names_no_branch_fails_the_events_that_reach_it() {
    let root = temp("no-default-branch");
    let repo = GitRepo::new(root.join("configs"));
    repo.write(
        "job/config.yaml",
        "apiVersion: v2\nactions:\n  - name: project level\n    events: [{name: sh.keptn.event.test.triggered}]\n    tasks:\n      - {name: t, image: alpine}\n",
    );
    repo.commit("project config");
    repo.git(&["symbolic-ref", "HEAD", "refs/heads/gone"]);
    let args = git_args("no-default-branch", &repo.file_url(), &[]);
    let h = Harness::start_with_source(kube_sim::Sim::builder(), args, &[]).await;
    for (id, event_type) in [
        ("tests", "sh.keptn.event.test.triggered"),
        ("deployment", "sh.keptn.event.deployment.triggered"),
    ] {
        let mut sent = event(id, "dev", "carts", None);
        sent["type"] = json!(event_type);
        let response = h.post_event(&sent).await;
        assert_eq!(response.status, 422, "{id}: {:?}", response.body);
        let message = expect_error(&h, id).await;
        assert!(
            message.contains("has no default branch (its HEAD names no branch it has)"),
            "{id}: {message}"
        );
    }
}

/// Whose credentials a fetch sends: `--git-username` / `--git-password` before the credentials
/// directory, a password in `--git-url` before both (the directory's, wrong here, alone is
/// refused by the host: the event waits, `503`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_url_s_credentials_come_before_the_flags_and_the_flags_before_the_directory() {
    let root = temp("precedence");
    let repo = GitRepo::new(root.join("sockshop"));
    sockshop(&repo);
    let server = GitHttpServer::start(&root, Some(("alice", "s3cret"))).await;
    let directory = temp("precedence-credentials");
    std::fs::create_dir_all(&directory).unwrap();
    std::fs::write(directory.join("username"), "alice").unwrap();
    std::fs::write(directory.join("password"), "wrong").unwrap();
    let directory = directory.to_str().unwrap();
    let url = server.url("sockshop");
    let (scheme, rest) = url.split_once("://").unwrap();
    let with_password = format!("{scheme}://alice:s3cret@{rest}");
    let cases = [
        ("directory", url.clone(), vec![], 503),
        (
            "flags",
            url.clone(),
            vec!["--git-username", "alice", "--git-password", "s3cret"],
            202,
        ),
        (
            "url",
            with_password,
            vec!["--git-username", "bob", "--git-password", "nope"],
            202,
        ),
    ];
    for (case, url, flags, status) in cases {
        let mut extra = vec!["--git-credentials-dir", directory];
        extra.extend(flags);
        let args = git_args(&format!("precedence-{case}"), &url, &extra);
        let h = Harness::start_with_source(kube_sim::Sim::builder(), args, &[]).await;
        let response = h.post_event(&event(case, "dev", "carts", None)).await;
        assert_eq!(response.status, status, "{case}: {:?}", response.body);
    }
}
