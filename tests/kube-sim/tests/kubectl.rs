#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The `kube-sim` binary driven by the real kubectl.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Server {
    child: Child,
    dir: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `$KUBECTL` (scripts/test sets it to the control plane's kubectl) or the PATH's.
fn kubectl_binary() -> std::ffi::OsString {
    std::env::var_os("KUBECTL").unwrap_or_else(|| "kubectl".into())
}

fn kubectl(dir: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(kubectl_binary())
        .args(args)
        .env("KUBECONFIG", dir.join("kubeconfig"))
        .env("KUBECACHEDIR", dir.join("cache"))
        .env("HOME", dir)
        .output()
        .expect("run kubectl");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn ok(dir: &Path, args: &[&str]) -> String {
    let (success, out, err) = kubectl(dir, args);
    assert!(success, "kubectl {args:?} failed: {err}");
    out
}

#[test]
fn kubectl_against_the_binary() {
    // A missing kubectl fails the test: scripts/test provides it (scripts/cluster builds it).
    let version = Command::new(kubectl_binary())
        .args(["version", "--client"])
        .output();
    assert!(
        version.as_ref().is_ok_and(|out| out.status.success()),
        "kubectl cannot run: {version:?}"
    );
    let dir = std::env::temp_dir().join(format!("kube-sim-kubectl-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_kube-sim"))
        .args(["--listen", "127.0.0.1:0", "--kubeconfig"])
        .arg(dir.join("kubeconfig"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let server = Server {
        child,
        dir: dir.clone(),
    };
    assert!(line.starts_with("http://127.0.0.1:"), "{line}");
    assert!(
        std::fs::read_to_string(dir.join("kubeconfig"))
            .unwrap()
            .contains(line.trim())
    );

    std::fs::write(
        dir.join("objs.yaml"),
        r#"
apiVersion: v1
kind: ConfigMap
metadata:
  name: web-config
  labels: {app: web}
data:
  greeting: hello
---
apiVersion: batch/v1
kind: Job
metadata:
  name: hello
  labels: {app: web}
spec:
  template:
    spec:
      restartPolicy: Never
      containers:
      - name: main
        image: busybox:1.36
        command: [echo, hi]
"#,
    )
    .unwrap();
    let out = ok(
        &dir,
        &["create", "-f", dir.join("objs.yaml").to_str().unwrap()],
    );
    assert!(
        out.contains("configmap/web-config created") && out.contains("job.batch/hello created"),
        "{out}"
    );

    let json: serde_json::Value =
        serde_json::from_str(&ok(&dir, &["get", "configmap", "web-config", "-o", "json"])).unwrap();
    assert_eq!(json["data"]["greeting"], "hello");
    let names = ok(
        &dir,
        &["get", "configmaps,jobs", "-l", "app=web", "-o", "name"],
    );
    assert_eq!(
        names.lines().collect::<Vec<_>>(),
        ["configmap/web-config", "job.batch/hello"]
    );

    // `get jobs` with server-side printing; wait until the Job completes.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let table = ok(&dir, &["get", "jobs"]);
        if table.contains("Complete") {
            assert!(
                table.starts_with("NAME") && table.contains("1/1"),
                "{table}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "job did not complete: {table}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let pods = ok(&dir, &["get", "pods", "-l", "job-name=hello", "-o", "name"]);
    let pod = pods
        .lines()
        .next()
        .unwrap()
        .trim_start_matches("pod/")
        .to_string();
    assert_eq!(ok(&dir, &["logs", &pod]), "echo hi\n");

    // get --watch sees a change made by someone else.
    let mut watch = Command::new(kubectl_binary())
        .args([
            "get",
            "configmap",
            "web-config",
            "--watch",
            "-o",
            "jsonpath={.data.greeting}{\"\\n\"}",
        ])
        .env("KUBECONFIG", dir.join("kubeconfig"))
        .env("KUBECACHEDIR", dir.join("cache"))
        .env("HOME", &dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Lines are read on a thread, so a watch that prints nothing fails the test instead of
    // hanging it.
    let reader = BufReader::new(watch.stdout.take().unwrap());
    let (line_tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in reader.lines().map_while(Result::ok) {
            if line_tx.send(line).is_err() {
                break;
            }
        }
    });
    let next_line = || {
        lines
            .recv_timeout(std::time::Duration::from_secs(30))
            .expect("the watch printed a line within 30 s")
    };
    assert_eq!(next_line().trim(), "hello");
    ok(
        &dir,
        &[
            "patch",
            "configmap",
            "web-config",
            "--type",
            "merge",
            "-p",
            r#"{"data":{"greeting":"bye"}}"#,
        ],
    );
    assert_eq!(next_line().trim(), "bye");
    let _ = watch.kill();
    let _ = watch.wait();

    let out = ok(&dir, &["delete", "configmap", "web-config"]);
    assert!(out.contains("deleted"), "{out}");
    let (success, _, err) = kubectl(&dir, &["get", "configmap", "web-config"]);
    assert!(!success && err.contains("NotFound"), "{err}");
    ok(&dir, &["delete", "job", "hello"]);
    drop(server);
}
