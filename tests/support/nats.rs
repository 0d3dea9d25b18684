//! A real nats-server with JetStream (Debian's `nats-server` package; `scripts/setup-tools`
//! installs it), on a loopback port of its own, its store in a directory that survives a
//! restart.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct NatsServer {
    pub url: String,
    port: u16,
    dir: PathBuf,
    process: Option<Child>,
    starts: u32,
    credentials: Credentials,
}

/// What the server asks of every client.
#[derive(Clone)]
pub enum Credentials {
    None,
    UserAndPassword(String, String),
    Token(String),
}

impl Credentials {
    fn server_args(&self) -> Vec<String> {
        match self {
            Credentials::None => vec![],
            Credentials::UserAndPassword(user, password) => {
                vec![
                    "--user".into(),
                    user.clone(),
                    "--pass".into(),
                    password.clone(),
                ]
            }
            Credentials::Token(token) => vec!["--auth".into(), token.clone()],
        }
    }

    fn options(&self) -> async_nats::ConnectOptions {
        match self {
            Credentials::None => async_nats::ConnectOptions::new(),
            Credentials::UserAndPassword(user, password) => {
                async_nats::ConnectOptions::with_user_and_password(user.clone(), password.clone())
            }
            Credentials::Token(token) => async_nats::ConnectOptions::with_token(token.clone()),
        }
    }
}

/// The nats-server binary: on the PATH, else where Debian puts it.
fn binary() -> PathBuf {
    for dir in std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/bin")])
    {
        let candidate = dir.join("nats-server");
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!("nats-server is missing: apt-get install nats-server (scripts/setup-tools does)")
}

impl NatsServer {
    pub async fn start(name: &str) -> NatsServer {
        NatsServer::start_requiring(name, Credentials::None).await
    }

    /// A server that refuses clients without `credentials`.
    pub async fn start_requiring(name: &str, credentials: Credentials) -> NatsServer {
        let dir = super::fresh_dir(&format!("nats-{name}"));
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut server = NatsServer {
            url: format!("nats://127.0.0.1:{port}"),
            port,
            dir,
            process: None,
            starts: 0,
            credentials,
        };
        server.restart().await;
        server
    }

    /// Starts the server (again, on the same port and store), and waits until it answers.
    pub async fn restart(&mut self) {
        self.kill();
        self.starts += 1;
        let log =
            std::fs::File::create(self.dir.join(format!("nats-{}.log", self.starts))).unwrap();
        let child = Command::new(binary())
            .args(["-js", "-sd"])
            .arg(self.dir.join("store"))
            .args(["-a", "127.0.0.1", "-p", &self.port.to_string()])
            .args(self.credentials.server_args())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start nats-server");
        self.process = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(client) = self.credentials.options().connect(self.url.as_str()).await {
                drop(client);
                return;
            }
            assert!(Instant::now() < deadline, "nats-server did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGKILL, as a crash.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.process.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub async fn client(&self) -> async_nats::Client {
        self.credentials
            .options()
            .connect(self.url.as_str())
            .await
            .unwrap()
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
