//! Delivery of outgoing CloudEvents over HTTP(S), encoded by the CloudEvents SDK: one attempt
//! at a time; the caller records each attempt in the JobRun's status and asks its
//! [`RetryPolicy`] when to try again, so retries survive a restart.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::source::git::redact;
use bytes::Bytes;
use cloudevents::binding::http::Serializer;
use cloudevents::message::{BinaryDeserializer, StructuredDeserializer};
use http::{HeaderName, HeaderValue, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use rustls::{ClientConfig, RootCertStore};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::event::CloudEvent;
use crate::secret_file::{SecretFile, SecretFileError};

mod nats;

pub use nats::{NatsAddress, Wildcards, check_subject};
pub mod notify;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SinkMode {
    /// Attributes in `ce-` headers, the data as the body.
    Binary,
    /// The whole event as `application/cloudevents+json`.
    Structured,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SinkError {
    #[error("sink URL {0:?} is not a valid http://, https:// or nats:// URL")]
    InvalidUrl(String),
    #[error("sink headers are sent over HTTP; the NATS sink {0} takes none")]
    HeadersOnNats(String),
    #[error("sink header ({0}) is not `Name: value`")]
    InvalidHeader(String),
    #[error("the CA bundle {path} cannot be used: {reason}")]
    CaFile { path: String, reason: String },
    #[error(transparent)]
    HeaderFile(#[from] SecretFileError),
    #[error("the sink header file {path}: {problem}")]
    HeaderFileContent { path: String, problem: String },
    #[error("TLS cannot be set up: {0}")]
    Tls(String),
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
    /// The sink refused the request's credentials (401, 403): retried for a while, as a
    /// token being rotated reaches the header file within about a minute (the kubelet's sync
    /// of a mounted Secret) and the sink may take the new one first.
    #[error("the sink refused the credentials: {status} {message}")]
    Unauthorized { status: u16, message: String },
    /// Not worth retrying, for the reason the message gives (a notification's target that is
    /// not configured, or refused it; an event that cannot be encoded; no dead-letter sink).
    #[error("{message}")]
    Refused { message: String },
}

/// Where and how events are sent.
#[derive(Debug, Clone, Default)]
pub struct SinkOptions {
    /// `http://` or `https://`.
    pub url: String,
    pub mode: Option<SinkMode>,
    /// `Name: value` lines sent with every event (for example an API token).
    pub headers: Vec<String>,
    /// A file of more `Name: value` lines (a mounted Secret), read again when it changes.
    pub header_file: Option<PathBuf>,
    /// PEM certificates trusted for `https://`, besides the system's trust store.
    pub ca_file: Option<PathBuf>,
    /// How long one attempt may take.
    pub timeout: Duration,
}

/// An HTTP client's connector: plain or TLS (rustls on ring, the system's trust store and a CA
/// bundle).
pub type Connector = HttpsConnector<HttpConnector>;

/// Where outgoing events go: an HTTP endpoint, or NATS JetStream.
#[derive(Debug)]
pub struct Sink {
    transport: Transport,
}

#[derive(Debug)]
enum Transport {
    Http(Box<HttpSink>),
    Nats(Box<nats::NatsSink>),
}

impl Sink {
    /// Checks the URL and the headers, reads the header file and the CA bundle now (a bad one
    /// stops the start, naming the file). A `nats://` URL publishes on NATS JetStream.
    pub fn new(options: &SinkOptions) -> Result<Self, SinkError> {
        let transport = if is_nats(&options.url) {
            if !options.headers.is_empty() || options.header_file.is_some() {
                return Err(SinkError::HeadersOnNats(redact(&options.url)));
            }
            Transport::Nats(Box::new(nats::NatsSink::new(&options.url, options.timeout)))
        } else {
            Transport::Http(Box::new(HttpSink::new(options)?))
        };
        Ok(Sink { transport })
    }

    /// The URL without credentials or query, as the dead-letter event names it.
    pub fn destination(&self) -> String {
        match &self.transport {
            Transport::Http(sink) => sink.destination(),
            Transport::Nats(sink) => sink.destination(),
        }
    }

    /// One attempt to deliver one event.
    pub async fn deliver(&self, event: &CloudEvent) -> Result<(), DeliveryError> {
        match &self.transport {
            Transport::Http(sink) => sink.deliver(event).await,
            Transport::Nats(sink) => sink.deliver(event).await,
        }
    }
}

/// Whether `url` names a NATS server (`nats://`, or `tls://` for NATS over TLS).
pub fn is_nats(url: &str) -> bool {
    url.starts_with("nats://") || url.starts_with("tls://")
}

struct HttpSink {
    client: TrustingClient,
    url: Uri,
    mode: SinkMode,
    headers: Vec<(HeaderName, HeaderValue)>,
    header_file: Option<SecretFile>,
    /// What the URL's `user:password@` makes, sent as `Authorization: Basic`.
    basic: Option<HeaderValue>,
    timeout: Duration,
}

impl std::fmt::Debug for HttpSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpSink")
            .field("url", &self.url)
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

impl HttpSink {
    fn new(options: &SinkOptions) -> Result<Self, SinkError> {
        let checked = check_http_url(&options.url)?;
        let (uri, basic) = match basic_credentials(&options.url) {
            Some((url, basic)) => (check_http_url(&url)?, Some(basic)),
            None => (checked, None),
        };
        let https = uri.scheme_str() == Some("https");
        let headers = options
            .headers
            .iter()
            .map(|line| parse_header(line))
            .collect::<Result<Vec<_>, SinkError>>()?;
        let header_file = match &options.header_file {
            Some(path) => {
                let file = SecretFile::open("sink header file", path.clone())?;
                file_headers(&file)?;
                Some(file)
            }
            None => None,
        };
        Ok(HttpSink {
            client: TrustingClient::new(https, options.ca_file.as_deref(), options.timeout)?,
            url: uri,
            mode: options.mode.unwrap_or(SinkMode::Binary),
            headers,
            header_file,
            basic,
            timeout: options.timeout,
        })
    }

    fn destination(&self) -> String {
        let scheme = self.url.scheme_str().unwrap_or("http");
        let host = self.url.host().unwrap_or_default();
        match self.url.port_u16() {
            Some(port) => format!("{scheme}://{host}:{port}{}", self.url.path()),
            None => format!("{scheme}://{host}{}", self.url.path()),
        }
    }

    async fn deliver(&self, event: &CloudEvent) -> Result<(), DeliveryError> {
        let mut headers = self.headers.clone();
        if let Some(file) = &self.header_file {
            // A header file that went bad is retried: a Secret being rotated is written anew.
            let more = file_headers(file).map_err(|e| DeliveryError::Transient {
                message: e.to_string(),
                retry_after: None,
            })?;
            headers.extend(more);
        }
        with_basic(&mut headers, self.basic.as_ref());
        let request = build_request(event, self.mode, &self.url, &headers).map_err(|e| {
            DeliveryError::Refused {
                message: format!("cannot encode the event: {e}"),
            }
        })?;
        let client = self.client.current();
        match exchange(&client, request, self.timeout).await {
            Ok(answer) => classify(&answer),
            Err(NoAnswer::Unreachable(why)) => Err(DeliveryError::Transient {
                message: format!("cannot reach the sink: {why}"),
                retry_after: None,
            }),
            Err(NoAnswer::TimedOut) => Err(DeliveryError::Transient {
                message: format!("the sink did not answer within {:?}", self.timeout),
                retry_after: None,
            }),
        }
    }
}

/// An HTTP endpoint's answer: its status, its `Retry-After` (in seconds), its `Location`
/// (of a redirect), its body.
pub(crate) struct Answer {
    pub status: StatusCode,
    pub retry_after: Option<Duration>,
    pub location: Option<String>,
    pub body: Bytes,
}

/// Why a request got no answer.
pub(crate) enum NoAnswer {
    /// The connection failed (the error's chain).
    Unreachable(String),
    /// No whole answer within the timeout.
    TimedOut,
}

/// The most of an answer's body that is read: a refusal's message quotes its start.
const ANSWER_BODY_BYTES: usize = 4096;

/// Sends `request` and reads the answer, within `timeout`. The status is the answer: of the
/// body, only the first `ANSWER_BODY_BYTES` are read, and one that is slow or breaks off
/// changes nothing but the message a refusal quotes (a sink that answered 202 has the event).
/// How long the body of a 2xx answer is read at most.
const SUCCESS_BODY_WAIT: Duration = Duration::from_secs(1);

pub(crate) async fn exchange(
    client: &Client<Connector, Full<Bytes>>,
    request: Request<Full<Bytes>>,
    timeout: Duration,
) -> Result<Answer, NoAnswer> {
    let deadline = tokio::time::Instant::now() + timeout;
    let response = tokio::time::timeout_at(deadline, client.request(request))
        .await
        .map_err(|_| NoAnswer::TimedOut)?
        .map_err(|e| NoAnswer::Unreachable(error_chain(&e)))?;
    let status = response.status();
    let retry_after = response
        .headers()
        .get(http::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| retry_after(v, jiff::Timestamp::now()));
    let location = response.headers().get(http::header::LOCATION).map(|v| {
        String::from_utf8_lossy(v.as_bytes())
            .chars()
            .take(300)
            .collect()
    });
    let mut body = response.into_body();
    let mut kept = Vec::new();
    let read = async {
        while kept.len() < ANSWER_BODY_BYTES {
            let Some(Ok(frame)) = body.frame().await else {
                break;
            };
            if let Ok(data) = frame.into_data() {
                let room = ANSWER_BODY_BYTES - kept.len();
                kept.extend_from_slice(&data[..data.len().min(room)]);
            }
        }
    };
    // A delivery is decided by its status: the body of a 2xx is read only briefly (to keep
    // the connection for the next one), so a stalled one does not hold the run's record.
    let body_deadline = match status.is_success() {
        true => deadline.min(tokio::time::Instant::now() + SUCCESS_BODY_WAIT),
        false => deadline,
    };
    let _ = tokio::time::timeout_at(body_deadline, read).await;
    Ok(Answer {
        status,
        retry_after,
        location,
        body: Bytes::from(kept),
    })
}

/// A `Retry-After` value: seconds, or an HTTP date (RFC 9110), as the wait from `now` (none
/// for a date past).
fn retry_after(value: &str, now: jiff::Timestamp) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = jiff::fmt::rfc2822::parse(value).ok()?.timestamp();
    Some(Duration::try_from(at.duration_since(now)).unwrap_or(Duration::ZERO))
}

/// An HTTP/1 client whose trust anchors follow a CA bundle file: a rotated CA (an issuer
/// renewed, its Secret written anew) is trusted from the next attempt on, without a restart.
pub struct TrustingClient {
    https: bool,
    ca_file: Option<SecretFile>,
    connect_timeout: Duration,
    built: std::sync::Mutex<Built>,
}

impl TrustingClient {
    /// Reads the bundle now: one that cannot be used fails at start.
    pub fn new(
        https: bool,
        ca_file: Option<&Path>,
        connect_timeout: Duration,
    ) -> Result<TrustingClient, SinkError> {
        let ca_file = ca_file
            .map(|path| {
                SecretFile::open("CA bundle", path.to_path_buf()).map_err(|e| SinkError::CaFile {
                    path: path.display().to_string(),
                    reason: e.reason,
                })
            })
            .transpose()?;
        let bundle = match &ca_file {
            Some(file) => file.current().map_err(|e| SinkError::CaFile {
                path: e.path,
                reason: e.reason,
            })?,
            None => String::new(),
        };
        let client = http_client_trusting(
            https,
            ca_file.as_ref().map(|f| (f.path(), bundle.as_str())),
            connect_timeout,
        )?;
        Ok(TrustingClient {
            https,
            ca_file,
            connect_timeout,
            built: std::sync::Mutex::new(Built {
                bundle,
                client,
                refused: None,
            }),
        })
    }

    /// The client for the next attempt, built again when the bundle changed. A bundle that
    /// cannot be read or used (written half, or wrong) leaves the last client that could be
    /// built in use, and is said once: its certificates may still be the ones the sink has.
    pub fn current(&self) -> Client<Connector, Full<Bytes>> {
        let mut built = self.built.lock().unwrap_or_else(|e| e.into_inner());
        let Some(file) = &self.ca_file else {
            return built.client.clone();
        };
        let bundle = match file.current() {
            Ok(bundle) => bundle,
            Err(problem) => {
                built.refuse(problem.to_string(), problem.to_string());
                return built.client.clone();
            }
        };
        if bundle != built.bundle && built.refused.as_deref() != Some(bundle.as_str()) {
            match http_client_trusting(
                self.https,
                Some((file.path(), bundle.as_str())),
                self.connect_timeout,
            ) {
                Ok(client) => {
                    tracing::info!(path = %file.path().display(), "the CA bundle changed; trusting its certificates from now on");
                    *built = Built {
                        bundle,
                        client,
                        refused: None,
                    };
                }
                Err(problem) => built.refuse(bundle, problem.to_string()),
            }
        }
        built.client.clone()
    }
}

/// A [`TrustingClient`]'s client and the bundle it trusts.
struct Built {
    bundle: String,
    client: Client<Connector, Full<Bytes>>,
    /// A newer bundle that could not be used (or why the file could not be read): not tried
    /// again until it changes.
    refused: Option<String>,
}

impl Built {
    fn refuse(&mut self, bundle: String, problem: String) {
        if self.refused.as_deref() != Some(bundle.as_str()) {
            tracing::warn!(%problem, "the CA bundle cannot be used; the certificates it had before are trusted meanwhile");
            self.refused = Some(bundle);
        }
    }
}

/// An HTTP/1 client for `http://` and `https://` URLs. Trust anchors are only loaded for
/// `https`: a plain client needs none.
pub fn http_client(
    https: bool,
    connect_timeout: Duration,
) -> Result<Client<Connector, Full<Bytes>>, SinkError> {
    http_client_trusting(https, None, connect_timeout)
}

/// [`http_client`], trusting the certificates of a CA bundle too (its path, for messages, and
/// its PEM text).
fn http_client_trusting(
    https: bool,
    bundle: Option<(&Path, &str)>,
    connect_timeout: Duration,
) -> Result<Client<Connector, Full<Bytes>>, SinkError> {
    let tls = tls_config(https, bundle)?;
    let mut http = HttpConnector::new();
    http.set_connect_timeout(Some(connect_timeout));
    http.set_nodelay(true);
    http.enforce_http(false);
    let connector = HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Ok(Client::builder(TokioExecutor::new()).build(connector))
}

/// A URL as a message shows it: without its credentials, its query and fragment masked.
pub fn shown_url(url: &str) -> String {
    query_masked(&redact(url))
}

/// A URL with its query and fragment masked (a token may be there), as `check-run` shows it.
pub fn query_masked(url: &str) -> String {
    match url.find(['?', '#']) {
        Some(cut) => format!("{}{}****", &url[..cut], &url[cut..=cut]),
        None => url.to_string(),
    }
}

/// Checks a sink URL: `http://`, `https://` or a NATS server's (`nats://host:port`).
pub fn check_url(url: &str) -> Result<(), SinkError> {
    if is_nats(url) {
        let uri: Uri = url
            .parse()
            .map_err(|_| SinkError::InvalidUrl(shown_url(url)))?;
        return match uri.host() {
            Some(_) if port_is_valid(&uri) => Ok(()),
            _ => Err(SinkError::InvalidUrl(shown_url(url))),
        };
    }
    check_http_url(url).map(|_| ())
}

/// An `http://` or `https://` URL with a host (and a port, if it names one).
fn check_http_url(url: &str) -> Result<Uri, SinkError> {
    let invalid = || SinkError::InvalidUrl(shown_url(url));
    let uri: Uri = url.parse().map_err(|_| invalid())?;
    if !matches!(uri.scheme_str(), Some("http" | "https"))
        || uri.host().is_none()
        || !port_is_valid(&uri)
    {
        return Err(invalid());
    }
    Ok(uri)
}

/// Whether a URL's port, if it names one, is a port: `http::Uri` takes `:99999` and `:abc`,
/// whose port is then none, and a client goes to the scheme's default port instead.
pub fn port_is_valid(uri: &Uri) -> bool {
    let Some(authority) = uri.authority() else {
        return true;
    };
    let host_and_port = authority.as_str().rsplit('@').next().unwrap_or_default();
    let after_host = match host_and_port.strip_prefix('[') {
        Some(bracketed) => bracketed.split_once(']').map_or("", |(_, after)| after),
        None => host_and_port
            .find(':')
            .map_or("", |at| &host_and_port[at..]),
    };
    match after_host.strip_prefix(':') {
        None => after_host.is_empty(),
        // `host:` is the default port (RFC 3986).
        Some("") => true,
        Some(port) => port.bytes().all(|b| b.is_ascii_digit()) && port.parse::<u16>().is_ok(),
    }
}

/// An HTTP URL's `user:password@` taken out of it, as curl takes it: the URL without them, and
/// the `Authorization: Basic` value they make (percent-decoded, so a password with `@` or `:`
/// is written `%40`, `%3A`); `None` when the URL names no user. The HTTP client sends nothing
/// of a URL's credentials by itself.
pub fn basic_credentials(url: &str) -> Option<(String, HeaderValue)> {
    let uri: Uri = url.parse().ok()?;
    if !uri
        .authority()
        .is_some_and(|authority| authority.as_str().contains('@'))
    {
        return None;
    }
    let (scheme, credentials, rest) = crate::source::git::split_credentials(url)?;
    let decoded = |text: &str| {
        percent_encoding::percent_decode_str(text)
            .decode_utf8_lossy()
            .into_owned()
    };
    let (user, password) = credentials.split_once(':').unwrap_or((credentials, ""));
    use base64::Engine as _;
    let token = base64::engine::general_purpose::STANDARD.encode(format!(
        "{}:{}",
        decoded(user),
        decoded(password)
    ));
    let mut value = HeaderValue::try_from(format!("Basic {token}")).ok()?;
    value.set_sensitive(true);
    Some((format!("{scheme}://{rest}"), value))
}

/// Adds the `Authorization` a URL's credentials make, unless a header given names one (it
/// wins: it is the one that can be rotated).
fn with_basic(headers: &mut Vec<(HeaderName, HeaderValue)>, basic: Option<&HeaderValue>) {
    if let Some(basic) = basic
        && !headers
            .iter()
            .any(|(name, _)| name == http::header::AUTHORIZATION)
    {
        headers.push((http::header::AUTHORIZATION, basic.clone()));
    }
}

/// One `Name: value` header.
pub fn parse_header(line: &str) -> Result<(HeaderName, HeaderValue), SinkError> {
    // Named by what comes before its `:`, never its value (a token, most often).
    let invalid = || {
        SinkError::InvalidHeader(match line.split_once(':') {
            Some((name, _)) => format!("{}: …", name.trim()),
            None => "without a `:`".into(),
        })
    };
    let (name, value) = line.split_once(':').ok_or_else(invalid)?;
    let name = HeaderName::try_from(name.trim()).map_err(|_| invalid())?;
    let value = HeaderValue::try_from(value.trim()).map_err(|_| invalid())?;
    Ok((name, value))
}

/// A header file's headers: `Name: value` per line, or comma-separated as in
/// `--sink-header`; blank lines and `#` comments are skipped. Values are never shown in errors
/// (only the header's name, or the line number).
pub fn parse_header_lines(text: &str) -> Result<Vec<(HeaderName, HeaderValue)>, String> {
    let mut headers = Vec::new();
    for (index, line) in text.lines().enumerate() {
        for item in line.split(',') {
            let item = item.trim();
            if item.is_empty() || item.starts_with('#') {
                continue;
            }
            let (name, value) = parse_header(item).map_err(|_| {
                let name = item.split_once(':').map_or("", |(n, _)| n.trim());
                if name.is_empty() || HeaderName::try_from(name).is_err() {
                    format!("line {}: not `Name: value`", index + 1)
                } else {
                    format!(
                        "line {}: the value of {name} is not a valid header value",
                        index + 1
                    )
                }
            })?;
            headers.push((name, value));
        }
    }
    Ok(headers)
}

fn file_headers(file: &SecretFile) -> Result<Vec<(HeaderName, HeaderValue)>, SinkError> {
    let text = file.current()?;
    parse_header_lines(&text).map_err(|problem| SinkError::HeaderFileContent {
        path: file.path().display().to_string(),
        problem,
    })
}

/// The TLS client configuration: the system's trust store and the CA bundle, on the `ring`
/// provider kube uses (two providers make rustls refuse to pick one).
fn tls_config(https: bool, bundle: Option<(&Path, &str)>) -> Result<ClientConfig, SinkError> {
    let mut roots = RootCertStore::empty();
    if https {
        // Unreadable entries of the system store are skipped; what is there is used.
        let native = rustls_native_certs::load_native_certs();
        roots.add_parsable_certificates(native.certs);
    }
    if let Some((path, pem)) = bundle {
        let problem = |reason: String| SinkError::CaFile {
            path: path.display().to_string(),
            reason,
        };
        let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| problem(e.to_string()))?;
        if certs.is_empty() {
            return Err(problem("it holds no PEM certificate".to_string()));
        }
        for cert in certs {
            roots.add(cert).map_err(|e| problem(e.to_string()))?;
        }
    }
    ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| SinkError::Tls(e.to_string()))
        .map(|builder| builder.with_root_certificates(roots).with_no_client_auth())
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

/// A redirect's target as the status may show it: without credentials or query (a token in
/// the sink's query would be in the redirect's too), as `HttpSink::destination` shows the sink.
fn shown_location(location: &str) -> Option<String> {
    let uri: Uri = location.parse().ok()?;
    let path = uri.path();
    Some(match (uri.scheme_str(), uri.host(), uri.port_u16()) {
        (Some(scheme), Some(host), Some(port)) => format!("{scheme}://{host}:{port}{path}"),
        (Some(scheme), Some(host), None) => format!("{scheme}://{host}{path}"),
        // A path on the sink's host.
        _ => format!("the path {path}"),
    })
}

/// 2xx is delivered; 408, 429 and 5xx are worth a retry; 401 and 403 refuse the credentials
/// (retried for a while); any other answer is a refusal. A redirect is not followed (the
/// event would be posted where the operator was not told to send it): it says where to.
pub(crate) fn classify(answer: &Answer) -> Result<(), DeliveryError> {
    let status = answer.status;
    if status.is_success() {
        return Ok(());
    }
    let mut message: String = String::from_utf8_lossy(&answer.body)
        .chars()
        .take(300)
        .collect();
    if message.is_empty() {
        message = status.canonical_reason().unwrap_or_default().to_string();
    }
    if status.is_redirection() {
        message = match answer.location.as_deref().and_then(shown_location) {
            Some(location) => {
                format!("a redirect to {location}, which is not followed: make that the sink's URL")
            }
            None => format!("a redirect, which is not followed: {message}"),
        };
    }
    let code = status.as_u16();
    if status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::REQUEST_TIMEOUT
        || status.is_server_error()
    {
        Err(DeliveryError::Transient {
            message: format!("the sink answered {code}: {message}"),
            retry_after: answer.retry_after,
        })
    } else if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
        Err(DeliveryError::Unauthorized {
            status: code,
            message,
        })
    } else {
        Err(DeliveryError::Rejected {
            status: code,
            message,
        })
    }
}

/// Why an event cannot be put into a request.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    #[error("the CloudEvents SDK does not take it: {0}")]
    Sdk(String),
    #[error(transparent)]
    Http(#[from] http::Error),
}

/// The HTTP request for an event in the given content mode, encoded by the CloudEvents SDK.
/// In binary mode the attribute values are percent-encoded first, as the HTTP binding asks
/// (the SDK writes them as they are, and refuses what is not visible ASCII).
pub fn build_request(
    event: &CloudEvent,
    mode: SinkMode,
    url: &Uri,
    extra: &[(HeaderName, HeaderValue)],
) -> Result<Request<Full<Bytes>>, EncodeError> {
    let mut builder = Request::post(url.clone());
    for (name, value) in extra {
        builder = builder.header(name, value);
    }
    let adapter = RequestAdapter {
        builder: Some(builder),
    };
    let sdk_error = |e: cloudevents::message::Error| EncodeError::Sdk(e.to_string());
    match mode {
        SinkMode::Structured => {
            let event = to_sdk(event.as_value().clone())?;
            StructuredDeserializer::deserialize_structured(event, Serializer::new(adapter))
                .map_err(sdk_error)
        }
        SinkMode::Binary => {
            let mut value = event.as_value().clone();
            if let Some(object) = value.as_object_mut() {
                for (name, attribute) in object.iter_mut() {
                    if let Value::String(text) = attribute
                        && !KEPT_AS_IS.contains(&name.as_str())
                        && needs_percent_encoding(text)
                    {
                        *text = percent_encode(text);
                    }
                }
            }
            let event = to_sdk(value)?;
            BinaryDeserializer::deserialize_binary(event, Serializer::new(adapter))
                .map_err(sdk_error)
        }
    }
}

/// Attributes whose values go into a request as the SDK writes them: the spec version, the
/// time, the content type header, and the data. (`dataschema`, a URL to the SDK, is encoded too:
/// a `%` in it sent as it is came back decoded, another URL.)
const KEPT_AS_IS: [&str; 5] = [
    "specversion",
    "time",
    "datacontenttype",
    "data",
    "data_base64",
];

/// The event as the CloudEvents SDK holds it (read from its structured JSON form).
pub fn to_sdk(value: Value) -> Result<cloudevents::Event, EncodeError> {
    serde_json::from_value(value).map_err(|e| EncodeError::Sdk(e.to_string()))
}

/// Builds the request the SDK's serializer describes: its headers after ours, then the body.
struct RequestAdapter {
    builder: Option<http::request::Builder>,
}

impl cloudevents::binding::http::Builder<Request<Full<Bytes>>> for RequestAdapter {
    fn header(&mut self, key: &str, value: HeaderValue) {
        self.builder = self.builder.take().map(|b| b.header(key, value));
    }

    fn body(&mut self, bytes: Vec<u8>) -> cloudevents::message::Result<Request<Full<Bytes>>> {
        self.builder
            .take()
            .unwrap_or_default()
            .body(Full::new(Bytes::from(bytes)))
            .map_err(|e| cloudevents::message::Error::Other {
                source: Box::new(e),
            })
    }

    fn finish(&mut self) -> cloudevents::message::Result<Request<Full<Bytes>>> {
        self.body(Vec::new())
    }
}

/// Whether a header value must be percent-encoded: the CloudEvents HTTP binding allows the
/// visible ASCII characters but `"` and `%` as they are.
fn needs_percent_encoding(text: &str) -> bool {
    text.bytes()
        .any(|b| !(0x21..0x7f).contains(&b) || b == b'%' || b == b'"')
}

/// Space, `"`, `%` and everything outside visible ASCII as `%XX` of its UTF-8 bytes.
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if (0x21..0x7f).contains(&byte) && byte != b'%' && byte != b'"' {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// How the delay between attempts grows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Backoff {
    /// The base delay, doubled at each retry.
    #[default]
    Exponential,
    /// The base delay times the retry's number.
    Linear,
}

/// When an undeliverable event is tried again, and when it is given up (Knative's delivery
/// spec: `retry`, `backoffPolicy`, `backoffDelay`, plus a bound in time).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt; `None`: as many as `give_up_after` allows.
    pub retries: Option<u32>,
    pub backoff: Backoff,
    /// The first retry's delay.
    pub delay: Duration,
    /// How long after the first attempt the event is given up at the latest.
    pub give_up_after: Duration,
}

/// The longest wait between two attempts that the backoff computes (a sink's `Retry-After`
/// may ask for more), unless the base delay itself is longer.
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            retries: None,
            backoff: Backoff::Exponential,
            delay: Duration::from_secs(1),
            give_up_after: Duration::from_secs(3600),
        }
    }
}

impl RetryPolicy {
    /// How long to wait after `attempts` failed attempts: the backoff, capped at
    /// [`MAX_BACKOFF`], with up to 20 % jitter derived from `seed` (so it is stable across
    /// restarts), and never sooner than the sink's `Retry-After`.
    pub fn delay(&self, attempts: u32, seed: &str, retry_after: Option<Duration>) -> Duration {
        let attempts = attempts.max(1);
        let base = match self.backoff {
            Backoff::Exponential => self.delay.saturating_mul(1u32 << (attempts - 1).min(20)),
            Backoff::Linear => self.delay.saturating_mul(attempts),
        };
        let base = base.min(MAX_BACKOFF.max(self.delay));
        let digest = Sha256::digest(format!("{seed}/{attempts}").as_bytes());
        let jitter_permille = u64::from(u16::from_be_bytes([digest[0], digest[1]]) % 200);
        let delay = base + base.mul_f64(jitter_permille as f64 / 1000.0);
        delay.max(retry_after.unwrap_or_default())
    }

    /// Whether an event tried `attempts` times, the first `tried_for` ago, is given up.
    pub fn gives_up(&self, attempts: u32, tried_for: Duration) -> bool {
        self.retries.is_some_and(|retries| attempts > retries) || tried_for >= self.give_up_after
    }
}

/// The extension attributes a dead-lettered event carries: why it was not delivered, where
/// it should have gone, and how often it was tried.
pub const DEAD_LETTER_REASON: &str = "deliveryerror";
pub const DEAD_LETTER_DESTINATION: &str = "deliveryerrordest";
pub const DEAD_LETTER_ATTEMPTS: &str = "deliveryattempts";

/// The event as the dead-letter sink receives it: the same event (id, type, data), with the
/// reason it could not be delivered as extensions.
pub fn dead_letter_event(
    event: &CloudEvent,
    reason: &str,
    destination: &str,
    attempts: u32,
) -> CloudEvent {
    let mut value = event.as_value().clone();
    // An attribute's string holds no control character (a sink's error page quoted in the
    // reason has line breaks): each is a space.
    let reason: String = reason
        .chars()
        .map(|c| {
            if crate::event::is_disallowed_in_attributes(c) {
                ' '
            } else {
                c
            }
        })
        .collect();
    if let Some(object) = value.as_object_mut() {
        object.insert(DEAD_LETTER_REASON.into(), Value::String(reason));
        object.insert(
            DEAD_LETTER_DESTINATION.into(),
            Value::String(destination.into()),
        );
        object.insert(DEAD_LETTER_ATTEMPTS.into(), Value::from(attempts));
    }
    CloudEvent::from_value(value).unwrap_or_else(|_| event.clone())
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
    fn retry_after_is_read_in_seconds_or_as_an_http_date() {
        let now: jiff::Timestamp = "2026-10-21T07:27:00Z".parse().unwrap();
        assert_eq!(retry_after(" 120 ", now), Some(Duration::from_secs(120)));
        assert_eq!(
            retry_after("Wed, 21 Oct 2026 07:28:00 GMT", now),
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            retry_after("Wed, 21 Oct 2026 07:00:00 GMT", now),
            Some(Duration::ZERO),
            "a date past: at once"
        );
        assert_eq!(retry_after("soon", now), None);
    }

    /// A server that answers every connection with `answer` (raw HTTP), then keeps the
    /// connection open for a minute.
    async fn answering(answer: Vec<u8>) -> Uri {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let answer = answer.clone();
                tokio::spawn(async move {
                    let mut request = [0u8; 4096];
                    let _ = socket.read(&mut request).await;
                    let _ = socket.write_all(&answer).await;
                    tokio::time::sleep(Duration::from_secs(60)).await;
                });
            }
        });
        url.parse().unwrap()
    }

    fn post(url: &Uri) -> Request<Full<Bytes>> {
        Request::post(url.clone())
            .body(Full::new(Bytes::from_static(b"{}")))
            .unwrap()
    }

    #[tokio::test]
    async fn the_status_is_the_answer_whatever_the_body_does() {
        let client = http_client(false, Duration::from_secs(1)).unwrap();
        // Accepted, then the body stalls: delivered, after a second's wait for the body, not
        // the attempt's whole time.
        let url =
            answering(b"HTTP/1.1 202 Accepted\r\nContent-Length: 100\r\n\r\npartial".to_vec())
                .await;
        let asked = std::time::Instant::now();
        let answer = exchange(&client, post(&url), Duration::from_secs(60))
            .await
            .ok()
            .unwrap();
        assert!(
            asked.elapsed() < Duration::from_secs(30),
            "waited for the body"
        );
        assert_eq!(answer.status, StatusCode::ACCEPTED);
        assert_eq!(answer.body, "partial");
        assert_eq!(classify(&answer), Ok(()));

        // Refused with a body of a mebibyte: the start of it is kept, nothing more.
        let mut refusal =
            b"HTTP/1.1 400 Bad Request\r\nRetry-After: 7\r\nContent-Length: 1048576\r\n\r\n"
                .to_vec();
        refusal.extend(std::iter::repeat_n(b'x', 1 << 20));
        let url = answering(refusal).await;
        let answer = exchange(&client, post(&url), Duration::from_secs(5))
            .await
            .ok()
            .unwrap();
        assert_eq!(answer.status, StatusCode::BAD_REQUEST);
        assert_eq!(answer.retry_after, Some(Duration::from_secs(7)));
        assert_eq!(answer.body.len(), ANSWER_BODY_BYTES);

        // No answer at all: timed out.
        let url = answering(Vec::new()).await;
        assert!(matches!(
            exchange(&client, post(&url), Duration::from_millis(200)).await,
            Err(NoAnswer::TimedOut)
        ));
    }

    #[test]
    fn a_port_that_is_none_is_refused() {
        for good in [
            "http://sink",
            "http://sink:8080/",
            "http://sink:/",
            "https://u:p@sink:443/x",
            "http://[::1]:65535/",
            "http://[fd00::1]/",
        ] {
            assert!(check_url(good).is_ok(), "{good}");
        }
        for bad in [
            "http://sink:99999/",
            "http://sink:abc/",
            "http://sink:65536",
            "http://[::1]:70000/",
            "nats://nats:99999",
        ] {
            assert!(check_url(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn binary_requests_carry_attributes_in_headers() {
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
        // What ingest reads back is the event sent, a `%` in a URL attribute too.
        let mut value = event().as_value().clone();
        value["dataschema"] = json!("https://schemas.example/test%20v1.json");
        value["subject"] = json!("50% off");
        let sent = CloudEvent::from_value(value).unwrap();
        let request = build_request(&sent, SinkMode::Binary, &url, &[]).unwrap();
        let body = http_body_util::BodyExt::collect(request.body().clone())
            .await
            .unwrap()
            .to_bytes();
        let read = crate::ingest::parse::binary_event(request.headers(), &body).unwrap();
        for attribute in ["dataschema", "subject", "data"] {
            assert_eq!(
                read.as_value()[attribute],
                sent.as_value()[attribute],
                "{attribute}"
            );
        }
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
        let answer = |status: StatusCode, body: &'static [u8]| Answer {
            status,
            retry_after: None,
            location: None,
            body: Bytes::from_static(body),
        };
        assert_eq!(classify(&answer(StatusCode::ACCEPTED, b"")), Ok(()));
        assert!(matches!(
            classify(&answer(StatusCode::SERVICE_UNAVAILABLE, b"down")),
            Err(DeliveryError::Transient { .. })
        ));
        let slow = Answer {
            retry_after: Some(Duration::from_secs(7)),
            ..answer(StatusCode::TOO_MANY_REQUESTS, b"")
        };
        assert_eq!(
            classify(&slow),
            Err(DeliveryError::Transient {
                message: "the sink answered 429: Too Many Requests".into(),
                retry_after: Some(Duration::from_secs(7))
            })
        );
        assert!(matches!(
            classify(&answer(StatusCode::BAD_REQUEST, b"bad")),
            Err(DeliveryError::Rejected { status: 400, .. })
        ));
        for status in [StatusCode::UNAUTHORIZED, StatusCode::FORBIDDEN] {
            assert!(matches!(
                classify(&answer(status, b"token expired")),
                Err(DeliveryError::Unauthorized { .. })
            ));
        }
        let moved = Answer {
            location: Some("https://bot:pw@keptn.example.com/api/v1/event?token=s3cr3t".into()),
            ..answer(StatusCode::PERMANENT_REDIRECT, b"<html>moved</html>")
        };
        assert_eq!(
            classify(&moved).map_err(|e| e.to_string()),
            Err("the sink refused the event: 308 a redirect to \
                 https://keptn.example.com/api/v1/event, which is not followed: make that the \
                 sink's URL"
                .into())
        );
    }

    #[test]
    fn retry_delays_grow_cap_and_honour_retry_after() {
        let policy = RetryPolicy::default();
        let first = policy.delay(1, "run", None);
        assert!(first >= Duration::from_secs(1) && first < Duration::from_millis(1200));
        let fourth = policy.delay(4, "run", None);
        assert!(fourth >= Duration::from_secs(8) && fourth < Duration::from_millis(9600));
        let late = policy.delay(30, "run", None);
        assert!(late >= Duration::from_secs(60) && late <= Duration::from_secs(72));
        assert_eq!(policy.delay(30, "run", None), late, "stable across calls");
        assert_eq!(
            policy.delay(1, "run", Some(Duration::from_secs(30))),
            Duration::from_secs(30)
        );
    }

    #[test]
    fn linear_backoff_adds_the_delay_and_retries_are_counted() {
        let policy = RetryPolicy {
            retries: Some(3),
            backoff: Backoff::Linear,
            delay: Duration::from_millis(500),
            ..RetryPolicy::default()
        };
        for (attempts, base) in [(1, 500), (2, 1000), (3, 1500)] {
            let delay = policy.delay(attempts, "run", None);
            let base = Duration::from_millis(base);
            assert!(
                delay >= base && delay < base.mul_f64(1.2),
                "{attempts}: {delay:?}"
            );
        }
        assert!(
            !policy.gives_up(3, Duration::ZERO),
            "the first and three retries"
        );
        assert!(policy.gives_up(4, Duration::ZERO));
        assert!(
            policy.gives_up(1, Duration::from_secs(3600)),
            "and the time"
        );
        // A base delay longer than the cap is kept.
        let slow = RetryPolicy {
            delay: Duration::from_secs(120),
            ..RetryPolicy::default()
        };
        assert!(slow.delay(3, "run", None) >= Duration::from_secs(120));
    }

    #[test]
    fn a_dead_letter_says_why_where_and_how_often() {
        let letter =
            dead_letter_event(&event(), "the sink answered 503: down", "https://sink/e", 4);
        assert_eq!(letter.id(), "abc");
        assert_eq!(letter.event_type(), "sh.keptn.event.test.finished");
        assert_eq!(letter.data(), event().data());
        assert_eq!(
            letter.extension(DEAD_LETTER_REASON).as_deref(),
            Some("the sink answered 503: down")
        );
        assert_eq!(
            letter.extension(DEAD_LETTER_DESTINATION).as_deref(),
            Some("https://sink/e")
        );
        assert_eq!(letter.extension(DEAD_LETTER_ATTEMPTS).as_deref(), Some("4"));
        // A sink's error page quoted in the reason: its line breaks are spaces, and the reason
        // is still there.
        let page = "the sink answered 502: <html>\r\n<head><title>502 Bad Gateway</title>";
        let letter = dead_letter_event(&event(), page, "https://sink/e", 4);
        assert_eq!(
            letter.extension(DEAD_LETTER_REASON).as_deref(),
            Some("the sink answered 502: <html>  <head><title>502 Bad Gateway</title>")
        );
        assert_eq!(letter.extension(DEAD_LETTER_ATTEMPTS).as_deref(), Some("4"));
    }

    #[test]
    fn header_files_hold_lines_and_never_show_values() {
        let headers =
            parse_header_lines("# the token\nAuthorization: Bearer abc\n\nx-a: 1, x-b: 2\n")
                .unwrap();
        let names: Vec<&str> = headers.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["authorization", "x-a", "x-b"]);
        assert_eq!(headers[0].1, "Bearer abc");
        let problem = parse_header_lines("x-ok: 1\nAuthorization: Bearer \u{7}secret").unwrap_err();
        assert_eq!(
            problem,
            "line 2: the value of Authorization is not a valid header value"
        );
        assert_eq!(
            parse_header_lines("just-a-token").unwrap_err(),
            "line 1: not `Name: value`"
        );
    }

    fn options(url: &str, headers: &[&str]) -> SinkOptions {
        SinkOptions {
            url: url.into(),
            headers: headers.iter().map(|h| h.to_string()).collect(),
            timeout: Duration::from_secs(1),
            ..SinkOptions::default()
        }
    }

    /// The requests a server got (their heads and the start of their bodies), each answered
    /// 202.
    async fn recording() -> (String, tokio::sync::mpsc::UnboundedReceiver<String>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let tx = tx.clone();
                tokio::spawn(async move {
                    let mut request = [0u8; 4096];
                    let read = socket.read(&mut request).await.unwrap_or(0);
                    let _ = tx.send(String::from_utf8_lossy(&request[..read]).into_owned());
                    let answer = b"HTTP/1.1 202 Accepted\r\nContent-Length: 0\r\n\r\n";
                    let _ = socket.write_all(answer).await;
                });
            }
        });
        (address.to_string(), rx)
    }

    #[tokio::test]
    async fn a_urls_credentials_are_sent_as_basic_authorization() {
        let (address, mut requests) = recording().await;
        // `p@ss` percent-encoded in the URL, as a password with `@` must be.
        let sink = Sink::new(&options(&format!("http://robot:p%40ss@{address}/e"), &[])).unwrap();
        assert_eq!(sink.destination(), format!("http://{address}/e"));
        sink.deliver(&event()).await.unwrap();
        let request = requests.recv().await.unwrap().to_ascii_lowercase();
        assert!(request.starts_with("post /e http/1.1\r\n"), "{request}");
        // base64 of `robot:p@ss`.
        assert!(
            request.contains("\r\nauthorization: basic cm9ib3q6cebzcw==\r\n"),
            "{request}"
        );
        assert!(!request.contains("robot:"), "{request}");
        // A header given names its own: that one is sent, alone.
        let sink = Sink::new(&options(
            &format!("http://robot:p%40ss@{address}/e"),
            &["Authorization: Bearer t0ken"],
        ))
        .unwrap();
        sink.deliver(&event()).await.unwrap();
        let request = requests.recv().await.unwrap().to_ascii_lowercase();
        assert_eq!(request.matches("authorization:").count(), 1, "{request}");
        assert!(request.contains("authorization: bearer t0ken"), "{request}");
    }

    #[test]
    fn urls_and_headers_are_checked() {
        assert!(Sink::new(&options("ftp://x", &[])).is_err());
        assert!(Sink::new(&options("http://x", &["nocolon"])).is_err());
        assert!(Sink::new(&options("http://x:8080/e", &["x-token: t"])).is_ok());
        assert!(Sink::new(&options("https://x:8443/e", &[])).is_ok());
        let sink = Sink::new(&options("https://user:pw@x:8443/e?token=1", &[])).unwrap();
        assert_eq!(sink.destination(), "https://x:8443/e", "no credentials");
        // What is refused is named without its secrets: a header by its name, a URL without
        // its credentials.
        let error = Sink::new(&options("http://x", &["Authorization: Bearer a\nb"]))
            .unwrap_err()
            .to_string();
        assert_eq!(error, "sink header (Authorization: …) is not `Name: value`");
        let error = Sink::new(&options("ftp://user:s3cret@x/", &[]))
            .unwrap_err()
            .to_string();
        assert!(
            !error.contains("s3cret") && error.contains("ftp://x/"),
            "{error}"
        );
        let error = Sink::new(&options("nats://user:s3cret@x:4222", &["x-token: t"]))
            .unwrap_err()
            .to_string();
        assert!(!error.contains("s3cret"), "{error}");
        let missing = SinkOptions {
            ca_file: Some("/nonexistent/ca.pem".into()),
            ..options("https://x/", &[])
        };
        let error = Sink::new(&missing).unwrap_err().to_string();
        assert!(
            error.starts_with("the CA bundle /nonexistent/ca.pem cannot be used"),
            "{error}"
        );
    }

    #[test]
    fn non_ascii_header_values_are_percent_encoded() {
        assert_eq!(percent_encode("a b"), "a%20b");
        assert!(!needs_percent_encoding("sh.keptn.event.test.triggered"));
        assert!(needs_percent_encoding("a b"));
        assert_eq!(percent_encode("ü%"), "%C3%BC%25");
    }
}
