//! Notifications: one attempt at a time to a target named by its key in the notifications
//! Secret (mounted as a directory, one file per target holding its URL). The URL is read at
//! each attempt, so a rotated or added target takes effect without a restart, and it never
//! appears in a message: errors name the target.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode, Uri, header};
use http_body_util::Full;

use super::{DeliveryError, NoAnswer, SinkError, TrustingClient, exchange};
use crate::config::{NotifyKind, NotifyRule};

/// Why notifications cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    #[error(
        "--notify names the targets {0}, but no --notify-dir says where their URLs are (the \
         notifications Secret, mounted)"
    )]
    NoDir(String),
    #[error("the notifications directory {path} cannot be read: {reason}")]
    Dir { path: String, reason: String },
    #[error(transparent)]
    Client(#[from] SinkError),
}

/// `--notify` targets come with a directory (checked without reading it, for `check-run`,
/// which runs where the pod's mounts are not).
pub fn check_targets(dir: Option<&Path>, installation: &[NotifyRule]) -> Result<(), NotifyError> {
    if dir.is_none() && !installation.is_empty() {
        let names: Vec<&str> = installation.iter().map(|r| r.target.as_str()).collect();
        return Err(NotifyError::NoDir(names.join(", ")));
    }
    Ok(())
}

/// [`check_targets`], and the directory, when one is given, can be read.
fn check_dir(dir: Option<&Path>, installation: &[NotifyRule]) -> Result<(), NotifyError> {
    check_targets(dir, installation)?;
    match dir.map(std::fs::read_dir) {
        Some(Err(error)) => Err(NotifyError::Dir {
            path: dir.map(|d| d.display().to_string()).unwrap_or_default(),
            reason: error.kind().to_string(),
        }),
        _ => Ok(()),
    }
}

/// What a notification sends.
#[derive(Debug, Clone, PartialEq)]
pub enum Notice {
    /// `{"text": …}` for a Slack-compatible incoming webhook.
    Slack(String),
    /// A CloudEvent in structured mode.
    Event(serde_json::Value),
}

impl Notice {
    pub fn kind(&self) -> NotifyKind {
        match self {
            Notice::Slack(_) => NotifyKind::Slack,
            Notice::Event(_) => NotifyKind::Webhook,
        }
    }

    fn body(&self) -> (Bytes, &'static str) {
        match self {
            Notice::Slack(text) => (
                Bytes::from(serde_json::json!({ "text": text }).to_string()),
                "application/json",
            ),
            Notice::Event(event) => (
                Bytes::from(event.to_string()),
                "application/cloudevents+json",
            ),
        }
    }
}

/// Sends notifications to the targets of a directory.
pub struct Notifier {
    /// Where the notifications Secret is mounted; `None`: no target is configured.
    dir: Option<PathBuf>,
    client: TrustingClient,
    timeout: Duration,
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifier")
            .field("dir", &self.dir)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// The most of a target's answer a message repeats.
const MOST_ANSWER: usize = 200;

impl Notifier {
    /// Targets are trusted over `https://` like the sink: the system's trust store and the
    /// certificates of `ca_file`. `installation` are the `--notify` targets, which need a
    /// directory.
    pub fn new(
        dir: Option<PathBuf>,
        installation: &[NotifyRule],
        ca_file: Option<&Path>,
        timeout: Duration,
    ) -> Result<Notifier, NotifyError> {
        check_dir(dir.as_deref(), installation)?;
        Ok(Notifier {
            dir,
            client: TrustingClient::new(true, ca_file, timeout)?,
            timeout,
        })
    }

    /// The targets the directory names now (its files), for the start-up log.
    pub fn targets(&self) -> Vec<String> {
        let Some(dir) = &self.dir else {
            return Vec::new();
        };
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            // A Secret volume's own entries (`..data`, `..2026_…`) start with two dots.
            .filter(|entry| !entry.file_name().to_string_lossy().starts_with(".."))
            .filter(|entry| entry.path().is_file())
            .map(|entry| entry.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    /// Whether `target` is a key of the notifications Secret now (a file of the directory).
    pub fn has_target(&self, target: &str) -> bool {
        crate::config::formats::check_notify_target(target).is_ok()
            && self
                .dir
                .as_ref()
                .is_some_and(|dir| dir.join(target).is_file())
    }

    /// The URL of `target`, read now, and the `Authorization` its `user:password@` makes.
    fn url(&self, target: &str) -> Result<(Uri, Option<http::HeaderValue>), DeliveryError> {
        let refused = |message: String| DeliveryError::Refused { message };
        // A run's record names its targets; one edited to a path must not read another file.
        crate::config::formats::check_notify_target(target).map_err(refused)?;
        let Some(dir) = &self.dir else {
            return Err(refused(format!(
                "no notification target {target:?}: no notifications Secret is mounted \
                 (--notify-dir)"
            )));
        };
        let path = dir.join(target);
        let text = std::fs::read_to_string(&path).map_err(|e| {
            refused(format!(
                "no notification target {target:?}: {} cannot be read: {}",
                path.display(),
                e.kind()
            ))
        })?;
        let (text, basic) = match crate::sink::basic_credentials(text.trim()) {
            Some((url, basic)) => (url, Some(basic)),
            None => (text.trim().to_string(), None),
        };
        let uri: Uri = text.parse().map_err(|_| {
            refused(format!(
                "the notification target {target:?} ({}) is not a URL",
                path.display()
            ))
        })?;
        if !matches!(uri.scheme_str(), Some("http" | "https"))
            || uri.host().is_none()
            || !crate::sink::port_is_valid(&uri)
        {
            return Err(refused(format!(
                "the notification target {target:?} ({}) is not an http:// or https:// URL",
                path.display()
            )));
        }
        Ok((uri, basic))
    }

    /// One attempt to send `notice` to `target`.
    pub async fn send(&self, target: &str, notice: &Notice) -> Result<(), DeliveryError> {
        let (uri, basic) = self.url(target)?;
        let (body, content_type) = notice.body();
        let mut request = Request::post(uri);
        if let Some(basic) = basic {
            request = request.header(header::AUTHORIZATION, basic);
        }
        let request = request
            .header(header::CONTENT_TYPE, content_type)
            .header(
                header::USER_AGENT,
                concat!("job-executor/", env!("CARGO_PKG_VERSION")),
            )
            .body(Full::new(body))
            .map_err(|e| DeliveryError::Refused {
                message: format!("the notification to {target:?} cannot be built: {e}"),
            })?;
        let client = self.client.current();
        match exchange(&client, request, self.timeout).await {
            Ok(answer) => classify(target, answer.status, answer.retry_after, &answer.body),
            Err(NoAnswer::Unreachable(why)) => Err(DeliveryError::Transient {
                message: format!("cannot reach {target:?}: {why}"),
                retry_after: None,
            }),
            Err(NoAnswer::TimedOut) => Err(DeliveryError::Transient {
                message: format!(
                    "{target:?} did not answer within {}s",
                    self.timeout.as_secs_f64()
                ),
                retry_after: None,
            }),
        }
    }
}

/// 2xx is delivered; 408, 429 and 5xx are worth a retry; any other answer is a refusal.
fn classify(
    target: &str,
    status: StatusCode,
    retry_after: Option<Duration>,
    body: &[u8],
) -> Result<(), DeliveryError> {
    if status.is_success() {
        return Ok(());
    }
    let mut said: String = String::from_utf8_lossy(body)
        .chars()
        .take(MOST_ANSWER)
        .collect();
    if said.trim().is_empty() {
        said = status.canonical_reason().unwrap_or_default().to_string();
    }
    let message = format!("{target:?} answered {}: {}", status.as_u16(), said.trim());
    if status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::REQUEST_TIMEOUT
        || status.is_server_error()
    {
        Err(DeliveryError::Transient {
            message,
            retry_after,
        })
    } else {
        Err(DeliveryError::Refused { message })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_sorted_into_delivered_retried_and_refused() {
        assert_eq!(classify("t", StatusCode::OK, None, b"ok"), Ok(()));
        let retry = classify("ops", StatusCode::SERVICE_UNAVAILABLE, None, b"");
        assert_eq!(
            retry,
            Err(DeliveryError::Transient {
                message: "\"ops\" answered 503: Service Unavailable".into(),
                retry_after: None
            })
        );
        let refused = classify("ops", StatusCode::NOT_FOUND, None, b"no_service");
        assert_eq!(
            refused,
            Err(DeliveryError::Refused {
                message: "\"ops\" answered 404: no_service".into()
            })
        );
        let slow = Some(Duration::from_secs(3));
        assert!(matches!(
            classify("ops", StatusCode::TOO_MANY_REQUESTS, slow, b""),
            Err(DeliveryError::Transient { retry_after, .. }) if retry_after == slow
        ));
    }

    #[test]
    fn a_target_is_read_from_its_file_and_never_shown() {
        let dir = std::env::temp_dir().join(format!("je-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("ops"), "https://hooks.example/T0/B0/s3cr3t\n").unwrap();
        std::fs::write(dir.join("bad"), "s3cr3t-not-a-url").unwrap();
        std::fs::write(dir.join("basic"), "https://bot:s3cr3t@hooks.example/x").unwrap();
        let notifier = Notifier::new(Some(dir.clone()), &[], None, Duration::from_secs(1)).unwrap();
        assert_eq!(notifier.targets(), ["bad", "basic", "ops"]);
        assert_eq!(
            notifier.url("ops").unwrap().0.to_string(),
            "https://hooks.example/T0/B0/s3cr3t"
        );
        assert_eq!(notifier.url("ops").unwrap().1, None);
        // A URL's `user:password@` is sent as Basic authorization, not in the URL.
        let (uri, basic) = notifier.url("basic").unwrap();
        assert_eq!(uri.to_string(), "https://hooks.example/x");
        assert_eq!(basic.unwrap(), "Basic Ym90OnMzY3IzdA==");
        for target in ["bad", "missing"] {
            let error = notifier.url(target).unwrap_err().to_string();
            assert!(error.contains(target), "{error}");
            assert!(!error.contains("s3cr3t"), "{error}");
        }
        // A target edited into a run's record as a path reads no file beside the Secret's.
        std::fs::write(
            dir.join("..").join("je-notify-outside"),
            "https://elsewhere/",
        )
        .ok();
        for target in ["../je-notify-outside", "/etc/hostname"] {
            let error = notifier.url(target).unwrap_err().to_string();
            assert!(error.contains("is not a notification target"), "{error}");
        }
        let none = Notifier::new(None, &[], None, Duration::from_secs(1)).unwrap();
        let error = none.url("ops").unwrap_err().to_string();
        assert!(error.contains("--notify-dir"), "{error}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn installation_targets_need_a_directory_that_exists() {
        let ops = NotifyRule::parse("slack:ops").unwrap();
        let error = check_dir(None, std::slice::from_ref(&ops))
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("ops") && error.contains("--notify-dir"),
            "{error}"
        );
        let missing = Path::new("/nonexistent/notify");
        let error = check_dir(Some(missing), &[ops]).unwrap_err().to_string();
        assert!(error.contains("/nonexistent/notify"), "{error}");
        assert!(check_dir(None, &[]).is_ok());
    }
}
