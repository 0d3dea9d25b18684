//! `job-executor send`: replays CloudEvent files to a receiver (the operator's ingest), one
//! progress line per event with the receiver's answer.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use bytes::Bytes;
use clap::Args;
use http::{HeaderName, HeaderValue, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::event::CloudEvent;
use crate::sink::{SinkMode, build_request, error_chain};

/// The longest answer body printed per event.
const MAX_ANSWER_CHARS: usize = 2000;

#[derive(Debug, Clone, Args)]
pub struct SendArgs {
    /// A CloudEvent in structured JSON (`test-events/test.triggered.json`), or a directory of
    /// them (its `*.json` files, sent in name order).
    pub path: PathBuf,
    /// The receiver, an http:// URL, e.g. the operator's ingest `http://localhost:8080/`.
    #[arg(long, env = "JOB_EXECUTOR_SEND_TO")]
    pub to: String,
    /// The bearer token the receiver asks for (the operator's ingest token).
    #[arg(long, env = "JOB_EXECUTOR_INGEST_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// How each event is sent.
    #[arg(
        long,
        env = "JOB_EXECUTOR_SEND_MODE",
        value_enum,
        default_value = "structured"
    )]
    pub mode: SinkMode,
    /// Seconds to wait for each answer (1-3600).
    #[arg(
        long,
        env = "JOB_EXECUTOR_SEND_TIMEOUT_SECONDS",
        default_value_t = 30,
        value_parser = clap::value_parser!(u64).range(1..=3600)
    )]
    pub timeout_seconds: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("--to {0:?} is not an http:// URL")]
    InvalidUrl(String),
    #[error(
        "--to {0:?} carries credentials (user:password@), which are not sent: the operator's \
         ingest takes a bearer token, given with --token"
    )]
    Credentials(String),
    #[error("the token is not a valid header value")]
    InvalidToken,
    // The cause is the error's source, which the binary prints after the message.
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0} holds no *.json files")]
    NoEvents(PathBuf),
    #[error("cannot start the runtime: {0}")]
    Runtime(std::io::Error),
}

/// Sends every event; the exit code is 1 when any event could not be sent or was refused.
pub fn run_send(args: &SendArgs) -> Result<ExitCode, SendError> {
    let shown = crate::source::git::mask_credentials(&args.to);
    let url: Uri = args
        .to
        .parse()
        .map_err(|_| SendError::InvalidUrl(shown.clone()))?;
    if url.scheme_str() != Some("http") || url.host().is_none() || !crate::sink::port_is_valid(&url)
    {
        return Err(SendError::InvalidUrl(shown));
    }
    if url.authority().is_some_and(|a| a.as_str().contains('@')) {
        return Err(SendError::Credentials(shown));
    }
    let mut headers = Vec::new();
    // Trimmed as the operator trims its own: a Secret's key made from a file ends in a newline.
    if let Some(token) = args
        .token
        .as_deref()
        .map(str::trim)
        .filter(|t| !t.is_empty())
    {
        let value = HeaderValue::try_from(format!("Bearer {token}"))
            .map_err(|_| SendError::InvalidToken)?;
        headers.push((http::header::AUTHORIZATION, value));
    }
    let files = event_files(&args.path)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(SendError::Runtime)?;
    let timeout = Duration::from_secs(args.timeout_seconds);
    let failed = runtime.block_on(send_all(&files, &url, args.mode, &headers, timeout));
    crate::outln!(
        "{} event(s): {} accepted, {failed} refused or not sent",
        files.len(),
        files.len() - failed
    );
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The file itself, or the directory's `*.json` files in name order.
fn event_files(path: &Path) -> Result<Vec<PathBuf>, SendError> {
    let read_error = |source| SendError::Read {
        path: path.to_path_buf(),
        source,
    };
    if !path.metadata().map_err(read_error)?.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files = Vec::new();
    for entry in std::fs::read_dir(path).map_err(read_error)? {
        let file = entry.map_err(read_error)?.path();
        if file.is_file() && file.extension().is_some_and(|e| e == "json") {
            files.push(file);
        }
    }
    files.sort();
    if files.is_empty() {
        return Err(SendError::NoEvents(path.to_path_buf()));
    }
    Ok(files)
}

/// Sends the files one after another, printing one line each; returns how many failed.
async fn send_all(
    files: &[PathBuf],
    url: &Uri,
    mode: SinkMode,
    headers: &[(HeaderName, HeaderValue)],
    timeout: Duration,
) -> usize {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(timeout));
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build(connector);
    let mut failed = 0;
    for (index, file) in files.iter().enumerate() {
        let prefix = format!("[{}/{}] {}", index + 1, files.len(), file.display());
        match send_one(&client, file, url, mode, headers, timeout).await {
            Ok((event, status, answer)) => {
                let ok = status.is_success();
                failed += usize::from(!ok);
                crate::outln!(
                    "{prefix} {} id={}: {} {answer}",
                    event.event_type(),
                    event.id(),
                    status.as_u16()
                );
            }
            Err(problem) => {
                failed += 1;
                crate::outln!("{prefix}: not sent: {problem}");
            }
        }
    }
    failed
}

async fn send_one(
    client: &Client<HttpConnector, Full<Bytes>>,
    file: &Path,
    url: &Uri,
    mode: SinkMode,
    headers: &[(HeaderName, HeaderValue)],
    timeout: Duration,
) -> Result<(CloudEvent, http::StatusCode, String), String> {
    let bytes = std::fs::read(file).map_err(|e| format!("cannot read it: {e}"))?;
    let event =
        CloudEvent::from_json_as_written(&bytes).map_err(|e| format!("not a CloudEvent: {e}"))?;
    let request =
        build_request(&event, mode, url, headers).map_err(|e| format!("cannot encode it: {e}"))?;
    let response = tokio::time::timeout(timeout, client.request(request))
        .await
        .map_err(|_| format!("no answer within {}s", timeout.as_secs()))?
        .map_err(|e| format!("cannot reach {url}: {}", error_chain(&e)))?;
    // The status is the answer (a 2xx: the event was taken); a body that breaks off or does
    // not end is said beside it, not taken for an event not sent.
    let status = response.status();
    let said = match tokio::time::timeout(timeout, response.into_body().collect()).await {
        Ok(Ok(body)) => one_line(&body.to_bytes()),
        Ok(Err(e)) => format!("(its answer broke off: {e})"),
        Err(_) => format!("(its answer did not end within {}s)", timeout.as_secs()),
    };
    Ok((event, status, said))
}

/// The answer on one line, shortened.
fn one_line(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let whole = text.split_whitespace().collect::<Vec<_>>().join(" ");
    // Cut as it is shown: white space collapsed first.
    let mut line: String = whole.chars().take(MAX_ANSWER_CHARS).collect();
    if whole.chars().count() > MAX_ANSWER_CHARS {
        line.push('…');
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_printed_on_one_line() {
        assert_eq!(one_line(b"{\n  \"a\": 1\n}\n"), "{ \"a\": 1 }");
        let long = "x".repeat(MAX_ANSWER_CHARS + 10);
        assert_eq!(
            one_line(long.as_bytes()).chars().count(),
            MAX_ANSWER_CHARS + 1
        );
        // Longer than the cut only before its white space is collapsed: shown whole.
        let spaced = format!("{}{}", "x ".repeat(MAX_ANSWER_CHARS / 2), " ".repeat(500));
        assert!(!one_line(spaced.as_bytes()).ends_with('…'));
    }

    #[test]
    fn directories_are_sent_in_name_order() {
        let dir = std::env::temp_dir().join(format!("send-order-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for name in ["b.json", "a.json", "notes.txt"] {
            std::fs::write(dir.join(name), "{}").unwrap();
        }
        let files = event_files(&dir).unwrap();
        let names: Vec<_> = files.iter().map(|f| f.file_name().unwrap()).collect();
        assert_eq!(names, ["a.json", "b.json"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
