//! `job-executor send`, through the binary, against a small receiver.

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use serde_json::Value;

use crate::common::{BIN, root, tempdir};

#[derive(Debug, Clone)]
pub struct Received {
    pub headers: HeaderMap,
    pub body: Bytes,
}

type Log = Arc<Mutex<Vec<Received>>>;

/// A receiver answering 202 with a small JSON body, or 400 for release events.
async fn receiver() -> (String, Log) {
    let log: Log = Arc::default();
    let app = Router::new()
        .route(
            "/events",
            post(
                |State(log): State<Log>, headers: HeaderMap, body: Bytes| async move {
                    let refused = String::from_utf8_lossy(&body).contains("release.triggered")
                        || headers
                            .get("ce-type")
                            .is_some_and(|t| t.to_str().unwrap().contains("release"));
                    log.lock().unwrap().push(Received { headers, body });
                    if refused {
                        (
                            StatusCode::BAD_REQUEST,
                            "{\"error\": \"no releases today\"}",
                        )
                    } else {
                        (StatusCode::ACCEPTED, "{\n  \"events\": []\n}")
                    }
                },
            ),
        )
        .with_state(log.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/events", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, log)
}

async fn send(args: &[&str]) -> (bool, String, String) {
    let output = tokio::process::Command::new(BIN)
        .arg("send")
        .args(args)
        .current_dir(root())
        .env_remove("JOB_EXECUTOR_INGEST_TOKEN")
        .env_remove("JOB_EXECUTOR_SEND_TO")
        .output()
        .await
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test]
async fn sends_one_file_with_the_token_and_prints_the_answer() {
    let (url, log) = receiver().await;
    let (ok, stdout, stderr) = send(&[
        "test-events/test.triggered.json",
        "--to",
        &url,
        "--token",
        // As a Secret's key made from a file holds it: the operator trims it, so does `send`.
        "s3cret\n",
    ])
    .await;
    assert!(ok, "{stdout}{stderr}");
    assert_eq!(
        stdout,
        "[1/1] test-events/test.triggered.json sh.keptn.event.test.triggered id=1a0e2f4c-6b8d-4e1f-a3c5-7d9e0b2a4c6e: 202 { \"events\": [] }\n\
         1 event(s): 1 accepted, 0 refused or not sent\n"
    );
    let received = log.lock().unwrap().clone();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].headers["authorization"], "Bearer s3cret");
    assert_eq!(
        received[0].headers["content-type"],
        "application/cloudevents+json"
    );
    let sent: Value = serde_json::from_slice(&received[0].body).unwrap();
    let file: Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("test-events/test.triggered.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(sent, file);
}

#[tokio::test]
async fn sends_a_directory_in_order_and_fails_when_any_event_is_refused() {
    let (url, log) = receiver().await;
    let (ok, stdout, _) = send(&["test-events", "--to", &url, "--mode", "binary"]).await;
    assert!(!ok, "a refused event makes the exit code 1");
    let mut files: Vec<String> = std::fs::read_dir(root().join("test-events"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".json"))
        .collect();
    files.sort();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), files.len() + 1, "{stdout}");
    for (index, file) in files.iter().enumerate() {
        let prefix = format!("[{}/{}] test-events/{file} ", index + 1, files.len());
        assert!(lines[index].starts_with(&prefix), "{}", lines[index]);
        let status = if file.starts_with("release") {
            400
        } else {
            202
        };
        assert!(
            lines[index].contains(&format!(": {status} ")),
            "{}",
            lines[index]
        );
    }
    assert!(stdout.contains("no releases today"), "{stdout}");
    assert!(
        stdout.ends_with(&format!(
            "{n} event(s): {} accepted, 1 refused or not sent\n",
            files.len() - 1,
            n = files.len()
        )),
        "{stdout}"
    );
    // Binary mode: attributes in ce- headers, no Authorization without a token.
    let received = log.lock().unwrap().clone();
    assert_eq!(received.len(), files.len());
    assert!(
        received
            .iter()
            .all(|r| r.headers.contains_key("ce-id") && !r.headers.contains_key("authorization"))
    );
}

#[tokio::test]
async fn reports_files_that_are_not_events_and_unreachable_receivers() {
    let dir = tempdir("send");
    std::fs::write(dir.join("a.json"), "{\"specversion\": \"1.0\"}").unwrap();
    let (ok, stdout, _) = send(&[dir.to_str().unwrap(), "--to", "http://127.0.0.1:9/"]).await;
    assert!(!ok);
    assert!(
        stdout.contains("a.json: not sent: not a CloudEvent"),
        "{stdout}"
    );
    let (ok, stdout, _) = send(&[
        "test-events/test.triggered.json",
        "--to",
        "http://127.0.0.1:9/",
    ])
    .await;
    assert!(!ok);
    assert!(stdout.contains("not sent: cannot reach"), "{stdout}");
    let (ok, _, stderr) = send(&["test-events", "--to", "https://example.com/"]).await;
    assert!(!ok);
    assert!(stderr.contains("is not an http:// URL"), "{stderr}");
    std::fs::remove_dir_all(dir).unwrap();
}
