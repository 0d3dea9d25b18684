//! Delivery of outgoing CloudEvents over HTTP: one attempt at a time; the caller records each
//! attempt in the JobRun's status and asks `retry_delay` when to try again, so retries survive
//! a restart.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::event::CloudEvent;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SinkMode {
    /// Attributes in `ce-` headers, the data as the body.
    Binary,
    /// The whole event as `application/cloudevents+json`.
    Structured,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SinkError {
    #[error("sink URL {0:?} is not a valid http:// URL")]
    InvalidUrl(String),
    #[error("sink header {0:?} is not `Name: value`")]
    InvalidHeader(String),
}

/// Why one delivery attempt failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeliveryError {
    /// Worth retrying: the sink was unreachable, slow, overloaded or failing.
    #[error("{message}")]
    Transient {
        message: String,
        retry_after: Option<Duration>,
    },
    /// The sink refused the event; sending it again will not change that.
    #[error("the sink refused the event: {status} {message}")]
    Rejected { status: u16, message: String },
}

pub struct Sink {
    client: Client<HttpConnector, Full<Bytes>>,
    url: Uri,
    mode: SinkMode,
    headers: Vec<(HeaderName, HeaderValue)>,
    timeout: Duration,
}

impl std::fmt::Debug for Sink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sink")
            .field("url", &self.url)
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

impl Sink {
    /// `headers` are `Name: value` lines sent with every event (for example an API token).
    pub fn new(
        url: &str,
        mode: SinkMode,
        headers: &[String],
        timeout: Duration,
    ) -> Result<Self, SinkError> {
        let uri: Uri = url
            .parse()
            .map_err(|_| SinkError::InvalidUrl(url.to_string()))?;
        if uri.scheme_str() != Some("http") || uri.host().is_none() {
            return Err(SinkError::InvalidUrl(url.to_string()));
        }
        let headers = headers
            .iter()
            .map(|line| {
                let (name, value) = line
                    .split_once(':')
                    .ok_or_else(|| SinkError::InvalidHeader(line.clone()))?;
                let name = HeaderName::try_from(name.trim())
                    .map_err(|_| SinkError::InvalidHeader(line.clone()))?;
                let value = HeaderValue::try_from(value.trim())
                    .map_err(|_| SinkError::InvalidHeader(line.clone()))?;
                Ok((name, value))
            })
            .collect::<Result<Vec<_>, SinkError>>()?;
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(timeout));
        connector.set_nodelay(true);
        Ok(Sink {
            client: Client::builder(TokioExecutor::new()).build(connector),
            url: uri,
            mode,
            headers,
            timeout,
        })
    }

    /// One attempt to deliver one event.
    pub async fn deliver(&self, event: &CloudEvent) -> Result<(), DeliveryError> {
        let request = build_request(event, self.mode, &self.url, &self.headers).map_err(|e| {
            DeliveryError::Rejected {
                status: 0,
                message: format!("cannot encode the event: {e}"),
            }
        })?;
        let attempt = async {
            let response =
                self.client
                    .request(request)
                    .await
                    .map_err(|e| DeliveryError::Transient {
                        message: format!("cannot reach the sink: {}", error_chain(&e)),
                        retry_after: None,
                    })?;
            let status = response.status();
            let retry_after = response
                .headers()
                .get(http::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            let body = response
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            classify(status, retry_after, &body)
        };
        match tokio::time::timeout(self.timeout, attempt).await {
            Ok(result) => result,
            Err(_) => Err(DeliveryError::Transient {
                message: format!("the sink did not answer within {:?}", self.timeout),
                retry_after: None,
            }),
        }
    }
}

/// An error and its causes, `outer: inner: …`, for messages people read.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// 2xx is delivered; 408, 429 and 5xx are worth a retry; any other answer is a refusal.
pub fn classify(
    status: StatusCode,
    retry_after: Option<Duration>,
    body: &[u8],
) -> Result<(), DeliveryError> {
    if status.is_success() {
        return Ok(());
    }
    let mut message: String = String::from_utf8_lossy(body).chars().take(300).collect();
    if message.is_empty() {
        message = status.canonical_reason().unwrap_or_default().to_string();
    }
    if status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::REQUEST_TIMEOUT
        || status.is_server_error()
    {
        Err(DeliveryError::Transient {
            message: format!("the sink answered {}: {message}", status.as_u16()),
            retry_after,
        })
    } else {
        Err(DeliveryError::Rejected {
            status: status.as_u16(),
            message,
        })
    }
}

/// The HTTP request for an event in the given content mode.
pub fn build_request(
    event: &CloudEvent,
    mode: SinkMode,
    url: &Uri,
    extra: &[(HeaderName, HeaderValue)],
) -> Result<Request<Full<Bytes>>, http::Error> {
    let mut builder = Request::post(url.clone());
    for (name, value) in extra {
        builder = builder.header(name, value);
    }
    let object = event.as_value().as_object().cloned().unwrap_or_default();
    match mode {
        SinkMode::Structured => builder
            .header(http::header::CONTENT_TYPE, "application/cloudevents+json")
            .body(Full::new(Bytes::from(event.as_value().to_string()))),
        SinkMode::Binary => {
            let mut body = Bytes::new();
            for (name, value) in &object {
                match name.as_str() {
                    "data" => body = Bytes::from(value.to_string()),
                    "datacontenttype" => {
                        builder = builder.header(http::header::CONTENT_TYPE, text(value));
                    }
                    "data_base64" => {}
                    attribute => {
                        builder =
                            builder.header(format!("ce-{attribute}"), percent_encode(&text(value)));
                    }
                }
            }
            builder.body(Full::new(body))
        }
    }
}

fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Header values are printable ASCII; everything else is percent-encoded, as the CloudEvents
/// HTTP binding says.
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if (0x20..0x7f).contains(&byte) && byte != b'%' && byte != b'"' {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// How long to wait before attempt `attempts + 1`: exponential from one second, capped at a
/// minute, with up to 20 % jitter derived from `seed` (so it is stable across restarts), and
/// never sooner than the sink's `Retry-After`.
pub fn retry_delay(attempts: u32, seed: &str, retry_after: Option<Duration>) -> Duration {
    let base = Duration::from_secs(1)
        .saturating_mul(1u32 << attempts.saturating_sub(1).min(6))
        .min(Duration::from_secs(60));
    let digest = Sha256::digest(format!("{seed}/{attempts}").as_bytes());
    let jitter_permille = u64::from(u16::from_be_bytes([digest[0], digest[1]]) % 200);
    let delay = base + base.mul_f64(jitter_permille as f64 / 1000.0);
    delay.max(retry_after.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn event() -> CloudEvent {
        CloudEvent::from_value(json!({
            "specversion": "1.0", "id": "abc", "source": "job-executor",
            "type": "sh.keptn.event.test.finished", "datacontenttype": "application/json",
            "shkeptncontext": "ctx", "data": {"status": "succeeded", "message": "ünïcode"}
        }))
        .unwrap()
    }

    #[test]
    fn binary_requests_carry_attributes_in_headers() {
        let url: Uri = "http://sink.local/events".parse().unwrap();
        let extra = [(
            HeaderName::from_static("x-token"),
            HeaderValue::from_static("secret"),
        )];
        let request = build_request(&event(), SinkMode::Binary, &url, &extra).unwrap();
        let h = request.headers();
        assert_eq!(h["ce-id"], "abc");
        assert_eq!(h["ce-type"], "sh.keptn.event.test.finished");
        assert_eq!(h["ce-shkeptncontext"], "ctx");
        assert_eq!(h["content-type"], "application/json");
        assert_eq!(h["x-token"], "secret");
        assert!(!h.contains_key("ce-data"));
    }

    #[test]
    fn structured_requests_carry_the_whole_event() {
        let url: Uri = "http://sink.local/".parse().unwrap();
        let request = build_request(&event(), SinkMode::Structured, &url, &[]).unwrap();
        assert_eq!(
            request.headers()["content-type"],
            "application/cloudevents+json"
        );
    }

    #[test]
    fn answers_are_classified() {
        assert_eq!(classify(StatusCode::ACCEPTED, None, b""), Ok(()));
        assert!(matches!(
            classify(StatusCode::SERVICE_UNAVAILABLE, None, b"down"),
            Err(DeliveryError::Transient { .. })
        ));
        assert_eq!(
            classify(
                StatusCode::TOO_MANY_REQUESTS,
                Some(Duration::from_secs(7)),
                b""
            ),
            Err(DeliveryError::Transient {
                message: "the sink answered 429: Too Many Requests".into(),
                retry_after: Some(Duration::from_secs(7))
            })
        );
        assert!(matches!(
            classify(StatusCode::BAD_REQUEST, None, b"bad"),
            Err(DeliveryError::Rejected { status: 400, .. })
        ));
    }

    #[test]
    fn retry_delays_grow_cap_and_honour_retry_after() {
        let first = retry_delay(1, "run", None);
        assert!(first >= Duration::from_secs(1) && first < Duration::from_millis(1200));
        let fourth = retry_delay(4, "run", None);
        assert!(fourth >= Duration::from_secs(8) && fourth < Duration::from_millis(9600));
        let late = retry_delay(30, "run", None);
        assert!(late >= Duration::from_secs(60) && late <= Duration::from_secs(72));
        assert_eq!(retry_delay(30, "run", None), late, "stable across calls");
        assert_eq!(
            retry_delay(1, "run", Some(Duration::from_secs(30))),
            Duration::from_secs(30)
        );
    }

    #[test]
    fn urls_and_headers_are_checked() {
        assert!(Sink::new("ftp://x", SinkMode::Binary, &[], Duration::from_secs(1)).is_err());
        assert!(
            Sink::new(
                "http://x",
                SinkMode::Binary,
                &["nocolon".into()],
                Duration::from_secs(1)
            )
            .is_err()
        );
        assert!(
            Sink::new(
                "http://x:8080/e",
                SinkMode::Binary,
                &["x-token: t".into()],
                Duration::from_secs(1)
            )
            .is_ok()
        );
    }

    #[test]
    fn non_ascii_header_values_are_percent_encoded() {
        assert_eq!(percent_encode("a b"), "a b");
        assert_eq!(percent_encode("ü%"), "%C3%BC%25");
    }
}
