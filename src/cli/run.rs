//! `job-executor run`: the operator. Ingest, controller and admin server, joined; SIGTERM or
//! SIGINT stops them gracefully.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::Router;
use axum::extract::State;
use axum::response::IntoResponse;
use axum::routing::get;
use clap::Args;
use clap::builder::TypedValueParser as _;
use http::StatusCode;
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::InstallArgs;
use crate::config::NotifyRule;
use crate::controller::{self, ControllerOptions};
use crate::health::Health;
use crate::ingest::auth::{Secret, SecretFile, Signatures};
use crate::ingest::{self, IngestState};
use crate::leader::{self, Leadership, LeaseError, LeaseSettings};
use crate::metrics::Metrics;
use crate::serve::{ConnectionLimits, serve};
use crate::sink::notify::{Notifier, NotifyError};
use crate::sink::{self, Backoff, RetryPolicy, Sink, SinkError, SinkMode, SinkOptions};
use crate::source::git::layout;
use crate::source::{CredentialSettings, FetchLimits, GitMetrics, GitSettings, Source};
use crate::throttle::ThrottleLayer;
use k8s_openapi::api::coordination::v1::Lease;

#[derive(Debug, Clone, Args)]
#[command(group(
    clap::ArgGroup::new("config_source")
        .args(["config_dir", "git_url"])
        .required(true)
        .multiple(false)
))]
pub struct RunArgs {
    #[command(flatten)]
    pub install: InstallArgs,
    #[command(flatten)]
    pub operator: OperatorArgs,
    #[command(flatten)]
    pub sink: SinkArgs,
    #[command(flatten)]
    pub git: GitArgs,
    #[command(flatten)]
    pub leader: LeaderArgs,
    #[command(flatten)]
    pub nats: NatsArgs,
    #[command(flatten)]
    pub notify: NotifyArgs,
}

/// Where notifications go and how they are retried; see docs/notifications.md.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Notifications")]
pub struct NotifyArgs {
    /// Where the notifications Secret is mounted: one file per target, named by its key,
    /// holding the target's URL (read at each attempt, so a rotated URL needs no restart).
    #[arg(long, env = "JOB_EXECUTOR_NOTIFY_DIR")]
    pub notify_dir: Option<PathBuf>,
    /// Seconds one notification attempt may take.
    #[arg(long, env = "JOB_EXECUTOR_NOTIFY_TIMEOUT_SECONDS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=300))]
    pub notify_timeout_seconds: u64,
    /// Retries of a notification after its first attempt (the wait doubles from 1 s, at most
    /// a minute), before it is given up.
    #[arg(long, env = "JOB_EXECUTOR_NOTIFY_RETRIES", default_value_t = 5, value_parser = clap::value_parser!(u32).range(0..=100))]
    pub notify_retries: u32,
}

impl NotifyArgs {
    /// The notifier; `installation` are the `--notify` targets.
    pub fn notifier(
        &self,
        installation: &[NotifyRule],
        ca_file: Option<&Path>,
    ) -> Result<Notifier, NotifyError> {
        Notifier::new(
            self.notify_dir.clone(),
            installation,
            ca_file,
            Duration::from_secs(self.notify_timeout_seconds),
        )
    }

    /// Retries every few seconds, then gives up: a notification is not worth the hour an
    /// outgoing event is tried.
    pub fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy {
            retries: Some(self.notify_retries),
            backoff: Backoff::Exponential,
            delay: Duration::from_secs(1),
            give_up_after: Duration::from_secs(3600),
        }
    }
}

/// Keptn's NATS bus as a source of events (`--nats-url`); see docs/nats.md.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "NATS source")]
pub struct NatsArgs {
    /// A NATS server with JetStream (`nats://host:4222`): events are taken from its stream, as
    /// well as over HTTP. Credentials written into it are used and never shown.
    #[arg(long, env = "JOB_EXECUTOR_NATS_URL", hide_env_values = true)]
    pub nats_url: Option<String>,
    /// The JetStream stream events are taken from (Keptn's is `keptn`); created with
    /// --nats-stream-subjects when there is none.
    #[arg(long, env = "JOB_EXECUTOR_NATS_STREAM", default_value = "keptn")]
    pub nats_stream: String,
    /// The subjects of a stream the operator creates, comma-separated.
    #[arg(
        long,
        env = "JOB_EXECUTOR_NATS_STREAM_SUBJECTS",
        value_delimiter = ',',
        default_value = "sh.keptn.>"
    )]
    pub nats_stream_subjects: Vec<String>,
    /// The subjects taken from the stream (e.g. `sh.keptn.event.*.triggered`), comma-separated;
    /// all of the stream's when none is given.
    #[arg(
        long = "nats-subject",
        env = "JOB_EXECUTOR_NATS_SUBJECTS",
        value_delimiter = ','
    )]
    pub nats_subjects: Vec<String>,
    /// The durable consumer every replica shares (each message goes to one of them).
    #[arg(
        long,
        env = "JOB_EXECUTOR_NATS_CONSUMER",
        default_value = "job-executor"
    )]
    pub nats_consumer: String,
    /// Seconds a message may stay unacknowledged before NATS delivers it again (an operator
    /// that died before acknowledging gets it back then), 1 to 86400.
    #[arg(long, env = "JOB_EXECUTOR_NATS_ACK_WAIT_SECONDS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub nats_ack_wait_seconds: u64,
}

impl NatsArgs {
    /// The NATS source, if one is asked for, checked.
    pub fn source(
        &self,
    ) -> Result<Option<crate::ingest::nats::NatsSource>, crate::ingest::nats::NatsError> {
        let Some(url) = self.nats_url.clone().filter(|url| !url.is_empty()) else {
            return Ok(None);
        };
        crate::ingest::nats::NatsSource::new(
            url,
            self.nats_stream.clone(),
            self.nats_stream_subjects.clone(),
            self.nats_subjects.clone(),
            self.nats_consumer.clone(),
            Duration::from_secs(self.nats_ack_wait_seconds),
        )
        .map(Some)
    }
}

/// The git config source (`--git-url`); see docs/git-source.md.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Git config source")]
pub struct GitArgs {
    /// Repository of job configs and task files: `https://`, `http://`, `ssh://` or `file://`.
    /// Credentials written into it are used as credentials and never shown.
    #[arg(long, env = "JOB_EXECUTOR_GIT_URL", hide_env_values = true)]
    pub git_url: Option<String>,
    /// Where a service's config is, as `BRANCH:PATH` with `{project}`, `{stage}`, `{service}`
    /// (`@default` is the default branch); repeat (comma-separated in the environment) for a
    /// fallback order. Default: Keptn's layout.
    #[arg(
        long = "git-lookup",
        env = "JOB_EXECUTOR_GIT_LAYOUT",
        value_delimiter = ',',
        default_values_t = layout::KEPTN_LAYOUT.map(String::from)
    )]
    pub git_lookups: Vec<String>,
    /// Where task files are read from, as `BRANCH:DIR` with the same placeholders, wherever
    /// the config was found: `{stage}:{service}` reads them from the service's directory on
    /// the stage branch, as Keptn's job-executor-service did for stage- and project-level
    /// configs. Default: beside the config.
    #[arg(long, env = "JOB_EXECUTOR_GIT_FILES_FROM")]
    pub git_files_from: Option<String>,
    /// Whether an event's `gitcommitid` pins the commit the service and stage lookups read.
    /// Keptn sets it to a commit of its upstream repository: `false` for a repository of
    /// configs that is not Keptn's upstream, which has no such commit.
    #[arg(
        long,
        env = "JOB_EXECUTOR_GIT_PIN_COMMITS",
        default_value_t = true,
        action = clap::ArgAction::Set
    )]
    pub git_pin_commits: bool,
    /// A mounted Secret with `username`, `password` or `token` (HTTPS), `ssh-privatekey` and
    /// `known_hosts` (SSH); read at every fetch.
    #[arg(long, env = "JOB_EXECUTOR_GIT_CREDENTIALS_DIR")]
    pub git_credentials_dir: Option<PathBuf>,
    /// HTTPS username (default `x-access-token` with a token).
    #[arg(long, env = "JOB_EXECUTOR_GIT_USERNAME")]
    pub git_username: Option<String>,
    /// HTTPS password or token.
    #[arg(long, env = "JOB_EXECUTOR_GIT_PASSWORD", hide_env_values = true)]
    pub git_password: Option<String>,
    /// A branch head older than this is fetched again before it is used. Under a steady
    /// stream of events it is fetched ahead, before it is this old, so that no event waits.
    #[arg(
        long,
        env = "JOB_EXECUTOR_GIT_FETCH_INTERVAL_SECONDS",
        default_value_t = 10
    )]
    pub git_fetch_interval_seconds: u64,
    /// The clone cache (default: `job-executor-git` in the temporary directory).
    #[arg(long, env = "JOB_EXECUTOR_GIT_CACHE_DIR")]
    pub git_cache_dir: Option<PathBuf>,
    /// The most the clone of the repository may hold (its objects, the whole history): a
    /// fetch that passes it is stopped and fails, and lookups keep reading the branch heads of
    /// the last fetch.
    #[arg(
        long,
        env = "JOB_EXECUTOR_GIT_MAX_REPOSITORY_BYTES",
        default_value_t = 1 << 30
    )]
    pub git_max_repository_bytes: u64,
    /// How long a fetch may take: then its transfer is interrupted where it can be, and the
    /// next lookup that needs a fetch starts a new one instead of waiting for it (unless one is
    /// left so already).
    #[arg(
        long,
        env = "JOB_EXECUTOR_GIT_FETCH_TIMEOUT_SECONDS",
        default_value_t = 600,
        value_parser = clap::value_parser!(u64).range(1..=86_400)
    )]
    pub git_fetch_timeout_seconds: u64,
    /// How long an event (or a run's files) waits for a fetch under way before the branch
    /// heads of the last fetch are read instead, marked stale (503 when there are none).
    #[arg(
        long,
        env = "JOB_EXECUTOR_GIT_FETCH_WAIT_SECONDS",
        default_value_t = 10,
        value_parser = clap::value_parser!(u64).range(1..=3_600)
    )]
    pub git_fetch_wait_seconds: u64,
}

impl GitArgs {
    /// The git source's settings, when `--git-url` is given.
    pub fn settings(self, metrics: GitMetrics) -> Option<GitSettings> {
        let GitArgs {
            git_url,
            git_lookups,
            git_files_from,
            git_pin_commits,
            git_credentials_dir,
            git_username,
            git_password,
            git_fetch_interval_seconds,
            git_cache_dir,
            git_max_repository_bytes,
            git_fetch_timeout_seconds,
            git_fetch_wait_seconds,
        } = self;
        Some(GitSettings {
            url: git_url?,
            lookups: git_lookups,
            files_from: git_files_from,
            pin_commits: git_pin_commits,
            credentials: CredentialSettings {
                dir: git_credentials_dir,
                username: git_username.filter(|u| !u.is_empty()),
                password: git_password.filter(|p| !p.is_empty()),
            },
            fetch_interval: Duration::from_secs(git_fetch_interval_seconds),
            cache_dir: git_cache_dir
                .unwrap_or_else(|| std::env::temp_dir().join("job-executor-git")),
            limits: FetchLimits {
                max_bytes: git_max_repository_bytes,
                timeout: Duration::from_secs(git_fetch_timeout_seconds),
                wait: Duration::from_secs(git_fetch_wait_seconds),
            },
            metrics,
        })
    }
}

/// Leader election: every replica receives events, one reconciles runs (docs/operator.md).
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Leader election")]
pub struct LeaderArgs {
    /// This replica's identity in the Lease (the chart sets the pod's name). Default: the host
    /// name and the process id, distinct for every process running at once.
    #[arg(long, env = "JOB_EXECUTOR_IDENTITY")]
    pub identity: Option<String>,
    /// The Lease (`coordination.k8s.io/v1`, in the job namespace) the replicas elect a leader
    /// with.
    #[arg(long, env = "JOB_EXECUTOR_LEASE_NAME", default_value = "job-executor", value_parser = super::dns_subdomain)]
    pub lease_name: String,
    /// Seconds a standby waits for a silent leader before it takes over.
    #[arg(
        long,
        env = "JOB_EXECUTOR_LEASE_DURATION_SECONDS",
        default_value = "15",
        value_parser = parse_seconds
    )]
    pub lease_duration_seconds: Duration,
    /// Seconds the leader goes on leading without renewing; shorter than the lease duration,
    /// so a leader that cannot renew stops before a standby may take over.
    #[arg(
        long,
        env = "JOB_EXECUTOR_LEASE_RENEW_DEADLINE_SECONDS",
        default_value = "10",
        value_parser = parse_seconds
    )]
    pub lease_renew_deadline_seconds: Duration,
    /// Seconds between the leader's renewals and a standby's looks.
    #[arg(
        long,
        env = "JOB_EXECUTOR_LEASE_RETRY_PERIOD_SECONDS",
        default_value = "2",
        value_parser = parse_seconds
    )]
    pub lease_retry_period_seconds: Duration,
}

/// The lowest request rate: one request in about 17 minutes.
const MIN_QPS: f64 = 0.001;

fn parse_qps(text: &str) -> Result<f64, String> {
    let qps: f64 = text
        .parse()
        .map_err(|_| format!("{text:?} is not a number of requests a second"))?;
    if qps.is_finite() && qps >= MIN_QPS {
        Ok(qps)
    } else {
        Err(format!(
            "{text} is not a number of requests a second of at least {MIN_QPS}"
        ))
    }
}

fn parse_seconds(text: &str) -> Result<Duration, String> {
    let seconds: f64 = text
        .parse()
        .map_err(|_| format!("{text:?} is not a number of seconds"))?;
    Duration::try_from_secs_f64(seconds)
        .ok()
        .filter(|d| !d.is_zero() && *d <= Duration::from_secs(3600))
        .ok_or_else(|| format!("{text} is not between 0 and 3600 seconds"))
}

impl LeaderArgs {
    pub fn settings(&self) -> Result<LeaseSettings, LeaseError> {
        let identity = match &self.identity {
            Some(identity) if !identity.is_empty() => identity.clone(),
            _ => default_identity(),
        };
        let settings = LeaseSettings {
            name: self.lease_name.clone(),
            identity,
            duration: self.lease_duration_seconds,
            renew_deadline: self.lease_renew_deadline_seconds,
            retry_period: self.lease_retry_period_seconds,
        };
        settings.check()?;
        Ok(settings)
    }
}

/// `HOST-PID`: distinct for every process running at once on one host (and across hosts).
fn default_identity() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "job-executor".to_string());
    format!("{host}-{}", std::process::id())
}

/// Where `.started` / `.finished` go, and how they are retried (Knative's delivery spec).
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Sink")]
pub struct SinkArgs {
    /// Where `.started` / `.finished` events are sent: http://, https://, or a NATS server's
    /// nats:// or tls:// (docs/nats.md).
    #[arg(long, env = "JOB_EXECUTOR_SINK_URL", hide_env_values = true)]
    pub sink_url: String,
    /// How events are sent to the sink.
    #[arg(
        long,
        env = "JOB_EXECUTOR_SINK_MODE",
        value_enum,
        default_value = "binary"
    )]
    pub sink_mode: SinkMode,
    /// Extra headers for the sink, `Name: value`, comma-separated (e.g. `x-token: …`).
    #[arg(
        long = "sink-header",
        env = "JOB_EXECUTOR_SINK_HEADERS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub sink_headers: Vec<String>,
    /// A file of headers for the sink (a mounted Secret's key), `Name: value` per line, read
    /// again when it changes: a rotated token is used from the next attempt on.
    #[arg(long, env = "JOB_EXECUTOR_SINK_HEADER_FILE")]
    pub sink_header_file: Option<PathBuf>,
    /// PEM certificates trusted for an https:// sink (and dead-letter sink), besides the
    /// system's trust store.
    #[arg(long, env = "JOB_EXECUTOR_SINK_CA_FILE")]
    pub sink_ca_file: Option<PathBuf>,
    /// Seconds one delivery attempt may take.
    #[arg(long, env = "JOB_EXECUTOR_SINK_TIMEOUT_SECONDS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=300))]
    pub sink_timeout_seconds: u64,
    /// Retries of an undeliverable event after its first attempt (unset: as many as
    /// `--sink-give-up-after-seconds` allows).
    #[arg(long, env = "JOB_EXECUTOR_SINK_RETRIES")]
    pub sink_retries: Option<u32>,
    /// How the wait between attempts grows.
    #[arg(
        long,
        env = "JOB_EXECUTOR_SINK_BACKOFF_POLICY",
        value_enum,
        default_value = "exponential"
    )]
    pub sink_backoff_policy: Backoff,
    /// The wait before the first retry (`1s`, `250ms`, or ISO 8601 `PT0.25S`); exponential
    /// doubles it at each retry, linear adds it; at most a minute unless it is longer itself.
    #[arg(
        long,
        env = "JOB_EXECUTOR_SINK_BACKOFF_DELAY",
        default_value = "1s",
        value_parser = parse_backoff_delay
    )]
    pub sink_backoff_delay: Duration,
    /// Seconds an undeliverable event is retried at most before the run says it gave up.
    #[arg(
        long,
        env = "JOB_EXECUTOR_SINK_GIVE_UP_AFTER_SECONDS",
        default_value_t = 3600
    )]
    pub sink_give_up_after_seconds: u64,
    /// Where an event goes that the sink refused or that was given up (http://, https://,
    /// nats:// or tls://):
    /// the same event with `deliveryerror`, `deliveryerrordest` and `deliveryattempts`
    /// extensions, retried like the first delivery.
    #[arg(
        long,
        env = "JOB_EXECUTOR_DEAD_LETTER_SINK_URL",
        hide_env_values = true
    )]
    pub dead_letter_sink_url: Option<String>,
    /// A file of headers for the dead-letter sink, like `--sink-header-file` (the sink's
    /// headers are not sent to it).
    #[arg(
        long,
        env = "JOB_EXECUTOR_DEAD_LETTER_SINK_HEADER_FILE",
        requires = "dead_letter_sink_url"
    )]
    pub dead_letter_sink_header_file: Option<PathBuf>,
}

/// The longest base delay between delivery attempts.
const MAX_BACKOFF_DELAY: Duration = Duration::from_secs(3600);

fn parse_backoff_delay(text: &str) -> Result<Duration, String> {
    let delay: jiff::SignedDuration = text
        .trim()
        .parse()
        .map_err(|e| format!("{text:?} is not a duration like `1s`, `250ms` or `PT0.25S`: {e}"))?;
    let delay = Duration::try_from(delay).map_err(|_| format!("{text:?} is negative"))?;
    if delay.is_zero() || delay > MAX_BACKOFF_DELAY {
        return Err(format!(
            "{text:?} is out of range: more than zero and at most {}s",
            MAX_BACKOFF_DELAY.as_secs()
        ));
    }
    Ok(delay)
}

impl SinkArgs {
    /// The URLs and the headers given directly, checked without reading any file (for
    /// `check-run`, which runs where the pod's mounted files are not).
    pub fn check(&self) -> Result<(), SinkError> {
        sink::check_url(&self.sink_url)?;
        for header in &self.sink_headers {
            sink::parse_header(header)?;
        }
        // NATS takes no headers: refused here as `run` refuses them (`Sink::new`).
        let headers_on_nats = |url: &str, headers: bool| {
            if sink::is_nats(url) && headers {
                Err(SinkError::HeadersOnNats(crate::source::git::redact(url)))
            } else {
                Ok(())
            }
        };
        headers_on_nats(
            &self.sink_url,
            !self.sink_headers.is_empty() || self.sink_header_file.is_some(),
        )?;
        if let Some(url) = &self.dead_letter_sink_url {
            sink::check_url(url)?;
            headers_on_nats(url, self.dead_letter_sink_header_file.is_some())?;
        }
        Ok(())
    }

    /// The sink and the dead-letter sink, checked (URLs, headers, files).
    pub fn sinks(&self) -> Result<(Sink, Option<Sink>), SinkError> {
        let options = |url: &str, headers: &[String], header_file: &Option<PathBuf>| SinkOptions {
            url: url.to_string(),
            mode: Some(self.sink_mode),
            headers: headers.to_vec(),
            header_file: header_file.clone(),
            ca_file: self.sink_ca_file.clone(),
            timeout: Duration::from_secs(self.sink_timeout_seconds),
        };
        let sink = Sink::new(&options(
            &self.sink_url,
            &self.sink_headers,
            &self.sink_header_file,
        ))?;
        let dead_letter = match &self.dead_letter_sink_url {
            Some(url) => Some(Sink::new(&options(
                url,
                &[],
                &self.dead_letter_sink_header_file,
            ))?),
            None => None,
        };
        Ok((sink, dead_letter))
    }

    pub fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy {
            retries: self.sink_retries,
            backoff: self.sink_backoff_policy,
            delay: self.sink_backoff_delay,
            give_up_after: Duration::from_secs(self.sink_give_up_after_seconds),
        }
    }
}

/// A project, stage or service name of `--projects`, `--stages`, `--services`: not empty
/// (spaces around it are ignored, as around the commas).
fn scope_name(text: &str) -> Result<String, String> {
    let name = text.trim();
    if name.is_empty() {
        return Err("an empty name (two commas in a row, or one at an end)".into());
    }
    Ok(name.to_string())
}

#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Operator")]
pub struct OperatorArgs {
    /// Directory of job configs, laid out as `<service>/job/config.yaml` with the task files
    /// beside them (development and tests; production reads a repository: `--git-url`).
    #[arg(long, env = "JOB_EXECUTOR_CONFIG_DIR")]
    pub config_dir: Option<PathBuf>,
    /// Address of the CloudEvents receiver.
    #[arg(long, env = "JOB_EXECUTOR_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,
    /// An OpenTelemetry collector (OTLP over HTTP, JSON): spans of each event's ingest, each
    /// run's reconciles and steps, continuing the events' `traceparent`, are sent to
    /// `<URL>/v1/traces`. Unset: no spans are recorded.
    #[arg(long, env = "JOB_EXECUTOR_OTLP_ENDPOINT", hide_env_values = true)]
    pub otlp_endpoint: Option<String>,
    /// How log lines are written to stderr: `text` (a line per event, its fields as
    /// `key=value`) or `json` (an object per line, for log collectors that parse JSON).
    #[arg(
        long,
        env = "JOB_EXECUTOR_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    pub log_format: crate::trace::LogFormat,
    /// For tests only: JobSchedules are judged by a clock that starts at START (RFC 3339 or
    /// `now`) and runs SCALE times as fast (`now*60`: an hour of schedule in a minute).
    #[arg(long, env = "JOB_EXECUTOR_TEST_CLOCK", hide = true, value_parser = parse_clock)]
    pub test_clock: Option<crate::schedule::Clock>,
    /// Address of `/livez`, `/readyz` and `/metrics`.
    #[arg(
        long,
        env = "JOB_EXECUTOR_ADMIN_LISTEN",
        default_value = "0.0.0.0:9090"
    )]
    pub admin_listen: SocketAddr,
    /// A bearer token senders must present.
    #[arg(long, env = "JOB_EXECUTOR_INGEST_TOKEN", hide_env_values = true)]
    pub ingest_token: Option<String>,
    /// A file holding the bearer token senders must present (a mounted Secret's key), read
    /// again when it changes: a rotated token takes effect within a second, without a restart.
    #[arg(
        long,
        env = "JOB_EXECUTOR_INGEST_TOKEN_FILE",
        conflicts_with = "ingest_token"
    )]
    pub ingest_token_file: Option<PathBuf>,
    /// A file holding the secret senders sign requests with (HMAC-SHA256 of `TIMESTAMP.BODY`,
    /// sent as `x-signature-256: sha256=HEX` with `x-signature-timestamp`), read again when it
    /// changes.
    #[arg(long, env = "JOB_EXECUTOR_INGEST_HMAC_SECRET_FILE")]
    pub ingest_hmac_secret_file: Option<PathBuf>,
    /// How far a signature's timestamp may be from now, in seconds; within it a signature is
    /// accepted once.
    #[arg(
        long,
        env = "JOB_EXECUTOR_INGEST_HMAC_WINDOW_SECONDS",
        default_value_t = 300,
        value_parser = clap::value_parser!(u64).range(1..=86_400)
    )]
    pub ingest_hmac_window_seconds: u64,
    /// The largest request body accepted.
    #[arg(
        long,
        env = "JOB_EXECUTOR_MAX_BODY_BYTES",
        default_value_t = 1024 * 1024,
        value_parser = clap::value_parser!(u32).range(1..).map(|n| n as usize)
    )]
    pub max_body_bytes: usize,
    /// The bytes of request bodies read at once, across connections (a body holds its length,
    /// or `--max-body-bytes` when sent in chunks); past it a request gets 503 with
    /// `Retry-After` before its body is read. At least `--max-body-bytes`.
    #[arg(
        long,
        env = "JOB_EXECUTOR_MAX_BODY_BYTES_IN_FLIGHT",
        default_value_t = 64 * 1024 * 1024,
        value_parser = clap::value_parser!(u32).range(1..).map(|n| n as usize)
    )]
    pub max_body_bytes_in_flight: usize,
    /// The most events one batch request (`application/cloudevents-batch+json`) may carry; a
    /// larger batch is refused whole with 413.
    #[arg(
        long,
        env = "JOB_EXECUTOR_MAX_BATCH_EVENTS",
        default_value_t = crate::ingest::parse::DEFAULT_MAX_BATCH_EVENTS,
        value_parser = clap::value_parser!(u16).range(1..).map(usize::from)
    )]
    pub max_batch_events: usize,
    /// Seconds a connection may take to send a request's headers, and then its body (an idle
    /// keep-alive connection is closed after as long); a slower sender gets 408 or is cut off.
    #[arg(
        long,
        env = "JOB_EXECUTOR_READ_TIMEOUT_SECONDS",
        default_value_t = 30,
        value_parser = clap::value_parser!(u64).range(1..=86_400)
    )]
    pub read_timeout_seconds: u64,
    /// Connections served at once, on each of the ingest and admin ports; more wait to be
    /// accepted.
    #[arg(
        long,
        env = "JOB_EXECUTOR_MAX_CONNECTIONS",
        default_value_t = 1024,
        value_parser = clap::value_parser!(u32).range(1..).map(|n| n as usize)
    )]
    pub max_connections: usize,
    /// Total bytes of log excerpts in one run's `.finished` event (at most 256 KiB: the run's
    /// record holds them twice, beside its event, within etcd's 1.5 MiB for an object).
    #[arg(
        long,
        env = "JOB_EXECUTOR_LOG_EXCERPT_BYTES",
        default_value_t = 64 * 1024,
        value_parser = clap::value_parser!(u32).range(0..=262_144).map(|n| n as usize)
    )]
    pub log_excerpt_bytes: usize,
    /// Seconds a task's pod may fail to start (image pull, missing Secret, unschedulable).
    #[arg(
        long,
        env = "JOB_EXECUTOR_NEVER_STARTED_TIMEOUT_SECONDS",
        default_value_t = 300,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub never_started_timeout_seconds: u64,
    /// Runs reconciled at the same time.
    #[arg(
        long,
        env = "JOB_EXECUTOR_CONCURRENCY",
        default_value_t = 16,
        value_parser = clap::value_parser!(u16).range(1..)
    )]
    pub concurrency: u16,
    /// Seconds a finished run (its JobRun, with its Jobs and files) is kept once its
    /// `.finished` is delivered; 0 keeps runs for good. A run whose `.finished` could not be
    /// delivered is kept. An event redelivered after its run was deleted runs again.
    #[arg(
        long,
        env = "JOB_EXECUTOR_JOBRUN_RETENTION_SECONDS",
        default_value_t = 7 * 24 * 3600
    )]
    pub jobrun_retention_seconds: u64,
    /// Requests a second the controller and the leader election send to the API server at
    /// most, on average (a token bucket, as client-go's QPS); ingest's stores are bounded by
    /// `--max-runs-in-flight` instead.
    #[arg(
        long,
        env = "JOB_EXECUTOR_KUBE_API_QPS",
        default_value_t = 500.0,
        value_parser = parse_qps
    )]
    pub kube_api_qps: f64,
    /// Requests the operator may send at once after a quiet time (client-go's Burst).
    #[arg(
        long,
        env = "JOB_EXECUTOR_KUBE_API_BURST",
        default_value_t = 1000,
        value_parser = clap::value_parser!(u32).range(1..)
    )]
    pub kube_api_burst: u32,
    /// Seconds the controller waits for the API server to answer a request (for each read of
    /// an answer under way, such as a log): a connection to a server that died leaves a
    /// request unanswered for ever, and the run waiting on it stuck. Watches are not bound by
    /// it (the API server ends them itself).
    #[arg(
        long,
        env = "JOB_EXECUTOR_KUBE_API_READ_TIMEOUT_SECONDS",
        default_value_t = 120,
        value_parser = clap::value_parser!(u64).range(1..=3600)
    )]
    pub kube_api_read_timeout_seconds: u64,
    /// Runs in flight (not finished, or their `.finished` not delivered yet) beyond which new
    /// runs are refused with 429 and `Retry-After`; 0: no bound.
    #[arg(
        long,
        env = "JOB_EXECUTOR_MAX_RUNS_IN_FLIGHT",
        default_value_t = 10_000
    )]
    pub max_runs_in_flight: usize,
    /// Take only events of these projects (`data.project`), comma-separated; the others
    /// start nothing here (answered 200, saying why), as a Keptn Uniform subscription's filter
    /// left them to another installation. Unset: every project.
    #[arg(long, env = "JOB_EXECUTOR_PROJECTS", value_delimiter = ',', value_parser = scope_name)]
    pub projects: Vec<String>,
    /// Take only events of these stages (`data.stage`), comma-separated (a remote execution
    /// plane's). Unset: every stage.
    #[arg(long, env = "JOB_EXECUTOR_STAGES", value_delimiter = ',', value_parser = scope_name)]
    pub stages: Vec<String>,
    /// Take only events of these services (`data.service`), comma-separated. Unset: every
    /// service.
    #[arg(long, env = "JOB_EXECUTOR_SERVICES", value_delimiter = ',', value_parser = scope_name)]
    pub services: Vec<String>,
    /// Seconds ingest waits for the API server to store a run before it answers 503 with
    /// `Retry-After` (the sender retries; a run stored late is then a duplicate).
    #[arg(
        long,
        env = "JOB_EXECUTOR_STORE_TIMEOUT_SECONDS",
        default_value_t = 5,
        value_parser = clap::value_parser!(u64).range(1..=300)
    )]
    pub store_timeout_seconds: u64,
    /// Seconds between SIGTERM and the stop during which the replica still answers events,
    /// `/readyz` saying it stops: the time the Service's endpoints take to drop a pod that
    /// terminates (a request sent to it meanwhile is answered rather than refused).
    #[arg(
        long,
        env = "JOB_EXECUTOR_SHUTDOWN_DELAY_SECONDS",
        default_value_t = 0,
        value_parser = clap::value_parser!(u64).range(0..=60)
    )]
    pub shutdown_delay_seconds: u64,
}

impl OperatorArgs {
    /// What `run` refuses of these flags before it starts anything (`check-run` too).
    pub fn check(&self) -> Result<(), crate::settings::SettingsError> {
        use crate::settings::SettingsError::Invalid;
        // Empty (a variable that was not set, a Secret's empty key): refused rather than taken
        // for no token, which would let anyone who reaches the port create runs.
        if self
            .ingest_token
            .as_deref()
            .is_some_and(|token| token.trim().is_empty())
        {
            return Err(Invalid {
                setting: "--ingest-token",
                value: String::new(),
                reason: "empty: give the token, or leave the setting out for none".into(),
            });
        }
        if self.max_body_bytes_in_flight < self.max_body_bytes {
            return Err(Invalid {
                setting: "--max-body-bytes-in-flight",
                value: self.max_body_bytes_in_flight.to_string(),
                reason: format!(
                    "less than --max-body-bytes ({}): a body of that size could never be read",
                    self.max_body_bytes
                ),
            });
        }
        Ok(())
    }
}

fn parse_clock(text: &str) -> Result<crate::schedule::Clock, String> {
    crate::schedule::Clock::parse(text)
}

pub async fn run_operator(args: RunArgs) -> anyhow::Result<()> {
    let RunArgs {
        install,
        operator,
        sink: sink_args,
        git,
        leader: leader_args,
        nats: nats_args,
        notify: notify_args,
    } = args;
    operator.check()?;
    let OperatorArgs {
        config_dir,
        listen,
        // Read before the runtime starts (src/main.rs).
        otlp_endpoint: _,
        log_format: _,
        test_clock,
        admin_listen,
        ingest_token,
        ingest_token_file,
        ingest_hmac_secret_file,
        ingest_hmac_window_seconds,
        max_body_bytes,
        max_body_bytes_in_flight,
        max_batch_events,
        read_timeout_seconds,
        max_connections,
        log_excerpt_bytes,
        never_started_timeout_seconds,
        concurrency,
        jobrun_retention_seconds,
        max_runs_in_flight,
        projects,
        stages,
        services,
        kube_api_qps,
        kube_api_burst,
        kube_api_read_timeout_seconds,
        store_timeout_seconds,
        shutdown_delay_seconds,
    } = operator;
    for unknown in super::unknown_settings_in_environment() {
        tracing::warn!("{unknown}");
    }
    let settings = Arc::new(install.settings()?);
    let lease = leader_args.settings()?;
    // Secret files are read now: a missing one stops the start with its path.
    // Trimmed as a token file is: a Secret's key made from a file ends in a newline.
    let ingest_token = ingest_token.map(|token| token.trim().to_string());
    let token = match (ingest_token, ingest_token_file) {
        (_, Some(path)) => Some(Secret::File(SecretFile::open("ingest token", path)?)),
        (Some(token), None) => Some(Secret::Value(token)),
        (None, None) => None,
    };
    let signatures = match ingest_hmac_secret_file {
        Some(path) => Some(Signatures::new(
            Secret::File(SecretFile::open("ingest HMAC secret", path)?),
            Duration::from_secs(ingest_hmac_window_seconds),
        )),
        None => None,
    };
    if token.is_none() && signatures.is_none() {
        // Allowed (a sidecar or a mesh may authenticate), but whoever reaches the port then
        // chooses which tasks run, with what data.
        tracing::warn!(
            "events over HTTP are accepted from anyone who reaches the port: no \
             --ingest-token-file, --ingest-token or --ingest-hmac-secret-file is set"
        );
    }
    let nats_source = nats_args.source()?;
    let (sink, dead_letter_sink) = sink_args.sinks()?;
    let (sink, dead_letter_sink) = (Arc::new(sink), dead_letter_sink.map(Arc::new));
    let notifier = notify_args.notifier(&settings.notify, sink_args.sink_ca_file.as_deref())?;
    if notify_args.notify_dir.is_some() {
        let targets = notifier.targets();
        for rule in &settings.notify {
            if !targets.contains(&rule.target) {
                tracing::warn!(
                    target = rule.target,
                    "--notify names a target the notifications directory has no file for; its notifications will fail until it has one"
                );
            }
        }
        tracing::info!(targets = targets.join(", "), "notification targets");
    }
    let notifier = Arc::new(notifier);
    let config = kube::Config::infer()
        .await
        .context("cannot configure the Kubernetes client (KUBECONFIG or in-cluster)")?;
    // Ingest stores what senders send, as fast as they send it (bounded by
    // --max-runs-in-flight and the connection limit); the controller's own requests, which
    // grow with the runs in flight, go through the client-side limit.
    let ingest_client =
        kube::Client::try_from(config.clone()).context("cannot configure the Kubernetes client")?;
    // Watches last minutes without a byte when nothing changes: they get a client without the
    // read timeout, drawing on the same request limit.
    let throttle = ThrottleLayer::new(kube_api_qps, kube_api_burst);
    // kube's own retries (429, 503, 504, `Retry-After` honoured) sit inside the limit's layer
    // and would pass it: the limited clients retry outside it instead, each try taking a token.
    let mut limited_config = config;
    limited_config.default_retry = false;
    // (A retry sends the request again through what is below it, which must be cloned: the
    // limited stack is shared through a buffer.)
    let retry = tower::retry::RetryLayer::new(kube::client::retry::RetryPolicy::server_retry());
    let shared = tower::buffer::BufferLayer::new(1024);
    let watch_client = kube::client::ClientBuilder::try_from(limited_config.clone())
        .context("cannot configure the Kubernetes client")?
        .with_layer(&throttle)
        .with_layer(&shared)
        .with_layer(&retry)
        .build();
    let mut request_config = limited_config;
    request_config.read_timeout = Some(Duration::from_secs(kube_api_read_timeout_seconds));
    // Counted from each request, not from when its pooled connection went idle.
    request_config.reset_reader_on_write = true;
    let client = kube::client::ClientBuilder::try_from(request_config)
        .context("cannot configure the Kubernetes client")?
        .with_layer(&throttle)
        .with_layer(&shared)
        .with_layer(&retry)
        .build();
    let metrics = Arc::new(Metrics::new());
    let git = git.settings(metrics.git());
    let source = Arc::new(match (git, config_dir) {
        (Some(settings), _) => Source::git(settings)?,
        (None, Some(dir)) => Source::directory(dir),
        (None, None) => anyhow::bail!("give --config-dir or --git-url"),
    });
    let health = Arc::new(Health::default());
    let (stop_tx, stop_rx) = watch::channel(false);

    let ingest_listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let admin_listener = TcpListener::bind(admin_listen)
        .await
        .with_context(|| format!("cannot listen on {admin_listen}"))?;
    // One line for people and scripts (the tests read it to find ports chosen with :0).
    crate::outln!(
        "listening ingest={} admin={}",
        ingest_listener.local_addr()?,
        admin_listener.local_addr()?
    );

    let known_runs = Arc::new(controller::known::KnownRuns::new(metrics.runs_in_flight()));
    let ingest_state = Arc::new(IngestState {
        runs: kube::Api::namespaced(ingest_client.clone(), &settings.job_namespace),
        source: source.clone(),
        settings: settings.clone(),
        metrics: metrics.clone(),
        token,
        signatures,
        max_body_bytes,
        body_budget: ingest::BodyBudget::new(max_body_bytes_in_flight),
        max_batch_events,
        read_timeout: Duration::from_secs(read_timeout_seconds),
        store_timeout: Duration::from_secs(store_timeout_seconds),
        known_runs: known_runs.clone(),
        health: health.clone(),
        max_runs_in_flight: (max_runs_in_flight > 0).then_some(max_runs_in_flight),
        scope: ingest::plan::EventScope {
            projects,
            stages,
            services,
        },
    });
    let ingest_app = ingest::router(ingest_state.clone());
    let (nats_ingest, stop_rx_nats) = (ingest_state.clone(), stop_rx.clone());
    let admin_app = admin_router(AdminState {
        metrics: metrics.clone(),
        health: health.clone(),
    });

    let shutdown_delay = Duration::from_secs(shutdown_delay_seconds);
    let stopping_health = health.clone();
    // Set once a signal came: a replica that stops takes no Lease (it keeps one it holds
    // until it releases it).
    let signalled = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let signal_seen = signalled.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        signal_seen.store(true, std::sync::atomic::Ordering::SeqCst);
        if !shutdown_delay.is_zero() {
            // A pod that terminates leaves the Service's endpoints only as fast as they are
            // updated: until then, events still reach it, and are answered. A second signal
            // stops at once.
            tracing::info!(
                seconds = shutdown_delay.as_secs(),
                "stopping: events are still answered meanwhile"
            );
            stopping_health.report(
                "stopping",
                Some(format!(
                    "this replica stops (a signal came): it answers events for {}s more, while \
                     it leaves the Service's endpoints",
                    shutdown_delay.as_secs()
                )),
            );
            tokio::select! {
                () = tokio::time::sleep(shutdown_delay) => {}
                () = wait_for_signal() => {}
            }
        }
        tracing::info!("shutting down");
        let _ = stop_tx.send(true);
    });
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };

    tokio::spawn(crate::health::probe_api_server(
        ingest_client,
        health.clone(),
        stopped(stop_rx.clone()),
    ));
    let limits = ConnectionLimits {
        read_timeout: Duration::from_secs(read_timeout_seconds),
        max_connections,
    };
    let ingest_server = serve(
        ingest_listener,
        ingest_app,
        limits,
        stopped(stop_rx.clone()),
    );
    let admin_server = serve(admin_listener, admin_app, limits, stopped(stop_rx.clone()));
    // Every replica serves ingest and keeps its watches; the one holding the Lease reconciles.
    // The Lease is released only once the controller and the schedules have finished their
    // in-flight steps.
    let (leadership_tx, leadership) = watch::channel(Leadership::Following { holder: None });
    tokio::spawn(report_leadership(
        leadership.clone(),
        lease.identity.clone(),
        metrics.clone(),
        health.clone(),
    ));
    let controller_done = Arc::new(tokio::sync::Notify::new());
    let schedules_done = Arc::new(tokio::sync::Notify::new());
    let identity = lease.identity.clone();
    let schedules = ingest::schedule::run(
        ingest::schedule::ScheduleParts {
            schedules: kube::Api::namespaced(client.clone(), &settings.job_namespace),
            watched: kube::Api::namespaced(watch_client.clone(), &settings.job_namespace),
            history: controller::Publisher::start(
                client.clone(),
                identity.clone(),
                leadership.clone(),
            ),
            leadership: leadership.clone(),
            ingest: ingest_state.clone(),
            clock: test_clock.unwrap_or_default(),
        },
        stopped(stop_rx.clone()),
    );
    let ready_to_lead = health.clone();
    let election = leader::elect(
        kube::Api::<Lease>::namespaced(client.clone(), &settings.job_namespace),
        lease,
        leadership_tx,
        // Its watches listed once: a replica whose runs cannot be listed (a CRD older than it)
        // leads nothing. Not every problem of `/readyz`: one all replicas share (a watch
        // resumed in a quiet cluster, the retained runs' list) would leave no leader.
        Box::new(move || {
            if signalled.load(std::sync::atomic::Ordering::SeqCst) {
                Err("this replica stops (a signal came)".into())
            } else if ready_to_lead.is_synced() {
                Ok(())
            } else {
                Err(ready_to_lead
                    .status()
                    .err()
                    .unwrap_or_else(|| "its watches have not listed yet".into()))
            }
        }),
        health.clone(),
        {
            // Nor before a schedule's firing in flight is over (a new leader would fire it
            // again: a duplicate, harmless, but not what stopping promises).
            let done = controller_done.clone();
            let schedules_done = schedules_done.clone();
            async move {
                tokio::join!(done.notified(), schedules_done.notified());
            }
        },
    );
    let controller = controller::run(
        controller::Parts {
            client,
            watch_client,
            settings,
            source,
            sink,
            dead_letter_sink,
            notifier,
            metrics,
            options: ControllerOptions {
                log_excerpt_bytes,
                never_started_timeout: Duration::from_secs(never_started_timeout_seconds),
                delivery: sink_args.retry_policy(),
                notification: notify_args.retry_policy(),
                concurrency,
                jobrun_retention: (jobrun_retention_seconds > 0)
                    .then(|| Duration::from_secs(jobrun_retention_seconds)),
            },
            leadership,
            identity,
            known_runs,
        },
        health,
        stopped(stop_rx),
    );
    let controller = async move {
        controller.await;
        controller_done.notify_one();
    };
    let schedules = async move {
        schedules.await;
        schedules_done.notify_one();
    };
    let nats = async move {
        if let Some(source) = nats_source {
            ingest::nats::run(source, nats_ingest, stopped(stop_rx_nats)).await;
        }
    };
    tokio::join!(
        on_workers(ingest_server),
        on_workers(admin_server),
        on_workers(controller),
        on_workers(election),
        on_workers(schedules),
        on_workers(nats)
    );
    Ok(())
}

/// Runs one part of the operator as a task of the runtime's worker threads. The thread that
/// blocks on the operator is not one of them: a part polled there (the watches, the
/// reconciles) is woken across threads for every read of its sockets, a context switch each,
/// which cost a third of the operator's CPU while it listed 30,000 runs. A part that panics
/// still ends the process, as it did when polled in place.
async fn on_workers(part: impl std::future::Future<Output = ()> + Send + 'static) {
    if let Err(error) = tokio::spawn(part).await
        && error.is_panic()
    {
        std::panic::resume_unwind(error.into_panic());
    }
}

/// Keeps `/metrics` (`job_executor_leader`) and `/readyz` saying who leads, and logs changes.
async fn report_leadership(
    mut leadership: watch::Receiver<Leadership>,
    identity: String,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
) {
    loop {
        let (leading, leader) = match &*leadership.borrow_and_update() {
            Leadership::Leading { .. } => (true, format!("this replica ({identity})")),
            Leadership::Following {
                holder: Some(holder),
            } => (false, holder.clone()),
            Leadership::Following { holder: None } => (false, "none known".to_string()),
        };
        metrics.set_leader(leading);
        health.set_leader(leader);
        if leadership.changed().await.is_err() {
            return;
        }
    }
}

async fn wait_for_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
}

#[derive(Clone)]
struct AdminState {
    metrics: Arc<Metrics>,
    health: Arc<Health>,
}

fn admin_router(state: AdminState) -> Router {
    Router::new()
        .route("/livez", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(|State(state): State<AdminState>| async move {
                match state.health.status() {
                    Ok(()) => (
                        StatusCode::OK,
                        format!("ready; leader: {}", state.health.leader()),
                    ),
                    Err(reasons) => (StatusCode::SERVICE_UNAVAILABLE, reasons),
                }
            }),
        )
        .route(
            "/metrics",
            get(|State(state): State<AdminState>| async move {
                // What `prometheus_client` writes is OpenMetrics (`# TYPE x counter` for the
                // samples `x_total`, `# EOF`): said so, Prometheus reads it as that, where the
                // classic text format's name would leave every counter's type unknown.
                (
                    [(
                        http::header::CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    state.metrics.render(),
                )
                    .into_response()
            }),
        )
        .with_state(state)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A rate so low its wait would not fit a `Duration` is refused, naming the lowest.
    #[test]
    fn request_rates_have_a_floor() {
        assert_eq!(parse_qps("0.001"), Ok(0.001));
        assert_eq!(parse_qps("50"), Ok(50.0));
        for text in ["1e-20", "0", "-1", "inf", "NaN"] {
            assert_eq!(
                parse_qps(text),
                Err(format!(
                    "{text} is not a number of requests a second of at least 0.001"
                )),
                "{text}"
            );
        }
    }

    #[test]
    fn backoff_delays_read_like_durations() {
        assert_eq!(parse_backoff_delay("1s"), Ok(Duration::from_secs(1)));
        assert_eq!(parse_backoff_delay("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_backoff_delay("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(
            parse_backoff_delay("PT0.25S"),
            Ok(Duration::from_millis(250))
        );
        for bad in ["0s", "2h", "-1s", "soon"] {
            let error = parse_backoff_delay(bad).unwrap_err();
            assert!(error.starts_with(&format!("{bad:?}")), "{error}");
        }
    }
}
