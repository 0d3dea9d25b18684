//! Git repositories for tests, made with the `git` CLI, and a smart-HTTP server for them:
//! `git http-backend` run as CGI behind an axum handler that checks HTTP basic auth, logs
//! every request, and can hold its answers (a host that hangs), delay them (a distant one) or
//! trickle the packs it sends (a host, or a proxy, that sends a few bytes now and then).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderValue, StatusCode, header};
use http_body_util::BodyExt;

/// A repository with a work tree; its default branch is `main`.
pub struct GitRepo {
    pub dir: PathBuf,
}

impl GitRepo {
    pub fn new(dir: PathBuf) -> GitRepo {
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let repo = GitRepo { dir };
        repo.git(&["init", "-q", "-b", "main"]);
        repo
    }

    pub fn git(&self, args: &[&str]) -> String {
        let output = Command::new("git")
            .args(args)
            .current_dir(&self.dir)
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_AUTHOR_NAME", "test")
            .env("GIT_AUTHOR_EMAIL", "test@example.com")
            .env("GIT_COMMITTER_NAME", "test")
            .env("GIT_COMMITTER_EMAIL", "test@example.com")
            .output()
            .expect("run git");
        assert!(
            output.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).trim().to_string()
    }

    pub fn write(&self, path: &str, content: impl AsRef<[u8]>) -> &Self {
        let file = self.dir.join(path);
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        let _ = std::fs::remove_file(&file);
        std::fs::write(&file, content).unwrap();
        self
    }

    pub fn executable(&self, path: &str, content: &str) -> &Self {
        use std::os::unix::fs::PermissionsExt;
        self.write(path, content);
        std::fs::set_permissions(self.dir.join(path), std::fs::Permissions::from_mode(0o755))
            .unwrap();
        self
    }

    pub fn link(&self, path: &str, target: &str) -> &Self {
        let file = self.dir.join(path);
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(target, file).unwrap();
        self
    }

    /// Commits everything on the current branch; returns the commit id.
    pub fn commit(&self, message: &str) -> String {
        self.git(&["add", "-A"]);
        self.git(&["commit", "-q", "--allow-empty", "-m", message]);
        self.head()
    }

    /// Switches to `branch`, creating it from the current commit if needed.
    pub fn switch(&self, branch: &str) {
        let exists = Command::new("git")
            .args([
                "rev-parse",
                "--verify",
                "-q",
                &format!("refs/heads/{branch}"),
            ])
            .current_dir(&self.dir)
            .stdout(Stdio::null())
            .status()
            .unwrap()
            .success();
        if exists {
            self.git(&["checkout", "-q", branch]);
        } else {
            self.git(&["checkout", "-q", "-b", branch]);
        }
    }

    /// Adds `count` branches `<prefix>0`, `<prefix>1`, … at the current commit, packed, in one
    /// `git update-ref` (a repository with that many refs makes a client's ref update long).
    pub fn branches(&self, prefix: &str, count: usize) {
        use std::io::Write;
        let head = self.head();
        let mut child = Command::new("git")
            .args(["update-ref", "--stdin"])
            .current_dir(&self.dir)
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .stdin(Stdio::piped())
            .spawn()
            .expect("run git update-ref");
        let mut stdin = child.stdin.take().unwrap();
        let mut commands = String::new();
        for n in 0..count {
            commands.push_str(&format!("create refs/heads/{prefix}{n} {head}\n"));
        }
        stdin.write_all(commands.as_bytes()).unwrap();
        drop(stdin);
        assert!(child.wait().unwrap().success(), "git update-ref failed");
        self.git(&["pack-refs", "--all"]);
    }

    pub fn head(&self) -> String {
        self.git(&["rev-parse", "HEAD"])
    }

    pub fn file_url(&self) -> String {
        format!("file://{}", self.dir.display())
    }
}

/// One request the server answered.
#[derive(Debug, Clone)]
pub struct GitRequest {
    pub method: String,
    pub path: String,
    pub status: u16,
}

#[derive(Clone)]
struct ServerState {
    root: PathBuf,
    /// The `Authorization` header a request must carry, if any.
    expected_auth: Option<String>,
    log: Arc<Mutex<Vec<GitRequest>>>,
    /// Requests that arrived, answered or not.
    arrived: Arc<std::sync::atomic::AtomicUsize>,
    /// While true, requests wait before they are answered (a git host that hangs).
    held: Arc<tokio::sync::watch::Sender<bool>>,
    /// Milliseconds each answer waits (a distant git host).
    delay_ms: Arc<std::sync::atomic::AtomicU64>,
    /// While set, a pack is sent this many bytes at a time, with this pause between them.
    trickle: Arc<Mutex<Option<(usize, std::time::Duration)>>>,
}

/// `git http-backend` behind axum, serving every repository under `root` at `/<name>`.
pub struct GitHttpServer {
    pub base: String,
    addr: std::net::SocketAddr,
    state: ServerState,
    log: Arc<Mutex<Vec<GitRequest>>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl GitHttpServer {
    /// Serves on `listener`; with `auth`, only requests with that HTTP basic user and password
    /// are answered (others get 401).
    pub fn serve(
        listener: tokio::net::TcpListener,
        root: &Path,
        auth: Option<(&str, &str)>,
    ) -> GitHttpServer {
        let base = format!("http://{}", listener.local_addr().unwrap());
        let log = Arc::new(Mutex::new(Vec::new()));
        let state = ServerState {
            root: root.to_path_buf(),
            expected_auth: auth.map(|(user, password)| {
                format!("Basic {}", base64(format!("{user}:{password}").as_bytes()))
            }),
            log: log.clone(),
            arrived: Arc::default(),
            held: Arc::new(tokio::sync::watch::Sender::new(false)),
            delay_ms: Arc::default(),
            trickle: Arc::default(),
        };
        let addr = listener.local_addr().unwrap();
        let task = Some(spawn_server(listener, state.clone()));
        GitHttpServer {
            base,
            addr,
            state,
            log,
            task,
        }
    }

    /// Stops listening: a client's next connection is refused, as when the git host is down.
    pub async fn stop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }

    /// Listens again on the same address after [`stop`](Self::stop).
    pub async fn resume(&mut self) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let listener = loop {
            match tokio::net::TcpListener::bind(self.addr).await {
                Ok(listener) => break listener,
                Err(error) => {
                    assert!(
                        std::time::Instant::now() < deadline,
                        "cannot listen on {} again: {error}",
                        self.addr
                    );
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
            }
        };
        self.task = Some(spawn_server(listener, self.state.clone()));
    }

    pub async fn start(root: &Path, auth: Option<(&str, &str)>) -> GitHttpServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::serve(listener, root, auth)
    }

    pub fn url(&self, name: &str) -> String {
        format!("{}/{name}", self.base)
    }

    /// Requests that arrive from now on wait, unanswered, until [`release`](Self::release).
    pub fn hold(&self) {
        self.state.held.send_replace(true);
    }

    /// Each answer from now on waits `delay` first, as a distant host's does.
    pub fn answer_after(&self, delay: std::time::Duration) {
        let millis = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX);
        self.state
            .delay_ms
            .store(millis, std::sync::atomic::Ordering::SeqCst);
    }

    /// Packs sent from now on (the answers to `git-upload-pack`) go out `bytes` at a time, with
    /// `pause` between them; `None` sends them whole again.
    pub fn trickle(&self, pace: Option<(usize, std::time::Duration)>) {
        *self.state.trickle.lock().unwrap() = pace;
    }

    /// Answers the requests held, and the next ones at once.
    pub fn release(&self) {
        self.state.held.send_replace(false);
    }

    /// Requests that arrived, held or answered.
    pub fn arrivals(&self) -> usize {
        self.state.arrived.load(std::sync::atomic::Ordering::SeqCst)
    }

    pub fn requests(&self) -> Vec<GitRequest> {
        self.log.lock().unwrap().clone()
    }

    /// Ref advertisements answered: one per fetch (or ref listing) a client made.
    pub fn fetches(&self) -> usize {
        self.requests()
            .iter()
            .filter(|r| r.path.ends_with("/info/refs") && r.status == 200)
            .count()
    }
}

fn spawn_server(
    listener: tokio::net::TcpListener,
    state: ServerState,
) -> tokio::task::JoinHandle<()> {
    let app = Router::new().fallback(cgi).with_state(state);
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    })
}

async fn cgi(State(state): State<ServerState>, request: Request) -> Response {
    state
        .arrived
        .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let _ = state.held.subscribe().wait_for(|held| !*held).await;
    let delay = state.delay_ms.load(std::sync::atomic::Ordering::SeqCst);
    tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
    let (parts, body) = request.into_parts();
    let path = parts.uri.path().to_string();
    let method = parts.method.to_string();
    let record = |status: StatusCode| {
        state.log.lock().unwrap().push(GitRequest {
            method: method.clone(),
            path: path.clone(),
            status: status.as_u16(),
        });
    };
    if let Some(expected) = &state.expected_auth {
        let given = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        if given != Some(expected.as_str()) {
            record(StatusCode::UNAUTHORIZED);
            let mut response =
                (StatusCode::UNAUTHORIZED, "authentication required").into_response();
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Basic realm=\"git\""),
            );
            return response;
        }
    }
    let body: Bytes = body.collect().await.unwrap().to_bytes();
    let header_text = |name: header::HeaderName| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let mut command = Command::new("git");
    command
        .arg("http-backend")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_PROJECT_ROOT", &state.root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("REQUEST_METHOD", parts.method.as_str())
        .env("PATH_INFO", &path)
        .env("QUERY_STRING", parts.uri.query().unwrap_or_default())
        .env("CONTENT_TYPE", header_text(header::CONTENT_TYPE))
        .env("CONTENT_LENGTH", body.len().to_string())
        .env("REMOTE_ADDR", "127.0.0.1")
        .env("REMOTE_USER", "test")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(protocol) = parts
        .headers
        .get("git-protocol")
        .and_then(|v| v.to_str().ok())
    {
        command.env("GIT_PROTOCOL", protocol);
    }
    let encoding = header_text(header::CONTENT_ENCODING);
    if !encoding.is_empty() {
        command.env("HTTP_CONTENT_ENCODING", encoding);
    }
    let output = tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut child = command.spawn().expect("spawn git http-backend");
        let mut stdin = child.stdin.take().unwrap();
        let writer = std::thread::spawn(move || {
            let _ = stdin.write_all(&body);
        });
        let output = child.wait_with_output().unwrap();
        let _ = writer.join();
        output
    })
    .await
    .unwrap();
    let (status, response) = cgi_response(&output.stdout);
    record(status);
    let pace = *state.trickle.lock().unwrap();
    match pace {
        Some((bytes, pause)) if path.ends_with("/git-upload-pack") => {
            trickled(response, bytes, pause).await
        }
        _ => response,
    }
}

/// `response` with its body sent `bytes` at a time, `pause` between them.
async fn trickled(response: Response, bytes: usize, pause: std::time::Duration) -> Response {
    let (mut parts, body) = response.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    parts.headers.remove(header::CONTENT_LENGTH);
    let chunks = futures::stream::unfold(0, move |at| {
        let body = body.clone();
        async move {
            if at >= body.len() {
                return None;
            }
            if at > 0 {
                tokio::time::sleep(pause).await;
            }
            let end = (at + bytes).min(body.len());
            Some((Ok::<_, std::io::Error>(body.slice(at..end)), end))
        }
    });
    Response::from_parts(parts, Body::from_stream(chunks))
}

/// Splits CGI output into headers and body.
fn cgi_response(stdout: &[u8]) -> (StatusCode, Response) {
    let (head, body) = match find(stdout, b"\r\n\r\n") {
        Some(at) => (&stdout[..at], &stdout[at + 4..]),
        None => match find(stdout, b"\n\n") {
            Some(at) => (&stdout[..at], &stdout[at + 2..]),
            None => (stdout, &[][..]),
        },
    };
    let mut status = StatusCode::OK;
    let mut builder = http::Response::builder();
    for line in String::from_utf8_lossy(head).lines() {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("status") {
            status = value
                .split_whitespace()
                .next()
                .and_then(|code| code.parse().ok())
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        } else {
            builder = builder.header(name.trim(), value);
        }
    }
    let response = builder
        .status(status)
        .body(Body::from(body.to_vec()))
        .unwrap();
    (status, response)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn base64(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}
