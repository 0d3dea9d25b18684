//! What each fuzz target feeds its input to, and the properties that must hold for every
//! input. Shared by the libFuzzer targets (`fuzz/fuzz_targets`) and by `tests/fuzz_corpora.rs`,
//! which replays the committed corpora through them on stable. A panic is a finding.
//!
//! The inputs are plain bytes in simple text layouts, so the seeds are readable files:
//! - `cloudevent`: a content type line, then `name: value` lines of `ce-` headers (without
//!   the prefix), an empty line, then the body;
//! - `jsonpath`: a JSONPath line, a value line, then an event (JSON);
//! - `names`: the event's id, type and source on three lines, then the action index;
//! - `config_load` and `stage_paths`: the file or the entry as it is.

use http::{HeaderMap, HeaderName, HeaderValue};
use job_executor::config::{self, EnvFormat};
use job_executor::event::{CloudEvent, EventSketch, LOOKUP_FIELDS};
use job_executor::ingest::parse::{DEFAULT_MAX_BATCH_EVENTS, events_from_request, structured_text};
use job_executor::matching::Matcher;
use job_executor::{files, names, render};

/// A config file as committed by a service team: loaded with every problem located, and when
/// it loads, its matcher compiles.
pub fn config_load(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match config::load(text, "job/config.yaml") {
        Ok(valid) => {
            // Patterns and paths were checked while loading: they compile.
            if let Err(error) = Matcher::compile(&valid.config) {
                panic!("a config that loads has a matcher that does not compile: {error}");
            }
        }
        Err(error) => {
            // Every problem renders as a message (the answer to the sender, `validate`).
            let _ = error.to_string();
        }
    }
}

/// One HTTP request's headers and body, in every content mode.
pub fn cloudevent(data: &[u8]) {
    let (headers, body) = request_parts(data);
    let whole = events_from_request(&headers, body, DEFAULT_MAX_BATCH_EVENTS);
    // The receiver plans most structured events from a sketch: there is one only for a valid
    // event, and every member and every field of `data` reads in it as in the whole event.
    if let Some(mut sketch) = structured_text(&headers, body).and_then(EventSketch::read) {
        let Ok([event]) = whole.as_deref() else {
            panic!("a sketch of a request that is not one valid event: {whole:?}");
        };
        assert_eq!(sketch.id(), event.id(), "a sketch's id is not the event's");
        assert_eq!(
            sketch.event_type(),
            event.event_type(),
            "a sketch's type is not the event's"
        );
        let mut paths: Vec<Vec<String>> = Vec::new();
        if let Some(members) = event.as_value().as_object() {
            for (name, value) in members {
                match value.as_object() {
                    Some(data) if name == "data" => {
                        paths.extend(data.keys().map(|field| vec![name.clone(), field.clone()]))
                    }
                    _ => paths.push(vec![name.clone()]),
                }
            }
        }
        for path in paths {
            let read = sketch
                .resolve(&path)
                .and_then(|text| serde_json::from_str::<serde_json::Value>(text.get()).ok());
            let expected = path
                .iter()
                .try_fold(event.as_value(), |value, name| value.get(name));
            assert_eq!(
                read.as_ref(),
                expected,
                "{path:?} reads otherwise in a sketch"
            );
        }
        let mut cut = event.as_value().clone();
        if let Some(serde_json::Value::Object(data)) = cut.get_mut("data") {
            data.retain(|name, _| LOOKUP_FIELDS.contains(&name.as_str()));
        }
        assert_eq!(
            sketch.event().map(CloudEvent::as_value),
            Some(&cut),
            "a sketch's event is not the whole event's members and lookup fields"
        );
    }
    match whole {
        Ok(events) => {
            assert!(
                (1..=DEFAULT_MAX_BATCH_EVENTS).contains(&events.len()),
                "{} events",
                events.len()
            );
            for event in &events {
                // What the rest of the operator relies on: the required attributes are there.
                let _ = (event.id(), event.source(), event.event_type());
                assert!(CloudEvent::from_value(event.as_value().clone()).is_ok());
            }
        }
        Err(error) => {
            let _ = (error.to_string(), error.status());
        }
    }
}

/// A JSONPath condition and an env JSONPath, evaluated on an arbitrary event: matching decides
/// the same as it explains, and reading the env value never panics.
pub fn jsonpath(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut parts = text.splitn(3, '\n');
    let (Some(path), Some(expected), Some(event)) = (parts.next(), parts.next(), parts.next())
    else {
        return;
    };
    let sketch = EventSketch::read(event);
    let Ok(event) = CloudEvent::from_json(event.as_bytes()) else {
        return;
    };
    let quote = |s: &str| serde_json::Value::String(s.to_string()).to_string();
    let config = format!(
        "apiVersion: v2\nactions:\n  - name: fuzz\n    events:\n      - name: {}\n        jsonpath: {{property: {}, match: {}}}\n      - name: \"*\"\n        jsonpath: {{property: {}, match: {}}}\n    tasks: [{{image: alpine}}]\n",
        quote(event.event_type()),
        quote(path),
        quote(expected),
        quote(path),
        quote("x"),
    );
    if let Ok(valid) = config::load(&config, "fuzz.yaml")
        && let Ok(matcher) = Matcher::compile(&valid.config)
    {
        let decision = matcher.decide(&event);
        // What the receiver's sketch relies on: decided alike from the event's text.
        if let Some(from_sketch) = sketch.as_ref().and_then(|s| matcher.decide_sketch(s)) {
            assert_eq!(from_sketch, decision, "decided otherwise from the sketch");
        }
        let explained = matcher.explain(&event);
        let runs: Vec<usize> = explained
            .iter()
            .filter(|verdict| verdict.outcome.is_ok())
            .map(|verdict| verdict.index)
            .collect();
        assert_eq!(decision.matched, runs, "decide and explain disagree");
        for refused in &decision.refused {
            assert_eq!(
                &explained[refused.index], refused,
                "decide and explain disagree"
            );
        }
    }
    for format in [
        None,
        Some(EnvFormat::Json),
        Some(EnvFormat::Yaml),
        Some(EnvFormat::String),
    ] {
        let _ = render::env_from_event(&event, path, format);
    }
}

/// The names derived from an event: every one a valid Kubernetes name, whatever the event.
pub fn names(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut lines = text.split('\n');
    let (id, event_type, source) = (
        lines.next().unwrap_or_default(),
        lines.next().unwrap_or_default(),
        lines.next().unwrap_or_default(),
    );
    let index = lines
        .next()
        .and_then(|l| l.trim().parse::<usize>().ok())
        .unwrap_or(0)
        % 1000;
    let Ok(event) = CloudEvent::from_value(serde_json::json!({
        "specversion": "1.0",
        "id": id,
        "type": event_type,
        "source": source,
    })) else {
        return;
    };
    let run = names::run_name(&event, index);
    assert_dns_label(&run);
    assert_dns_label(&names::config_failure_run_name(&event));
    assert_dns_label(&names::job_name(&run, index));
    assert_dns_label(&names::files_config_map_name(&run));
    for text in [id, event_type, source] {
        let value = names::label_value(text);
        assert!(
            value.len() <= 63
                && value
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
                && (value.is_empty()
                    || (value.starts_with(|c: char| c.is_ascii_alphanumeric())
                        && value.ends_with(|c: char| c.is_ascii_alphanumeric()))),
            "label value {value:?} of {text:?}"
        );
    }
}

/// A `files` entry of a task: normalized to a relative path that cannot climb, and its
/// ConfigMap key valid.
pub fn stage_paths(data: &[u8]) {
    let Ok(entry) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(path) = files::normalize_entry(entry) {
        assert!(!path.starts_with('/'), "{path:?} is absolute");
        assert!(
            path.split('/')
                .all(|part| !part.is_empty() && part != ".." && part != "."),
            "{path:?} of {entry:?}"
        );
        let key = files::config_map_key(7, &path);
        assert!(files::is_config_map_key(&key), "key {key:?}");
    }
}

/// The receiver as a whole: one request through the ingest router, with a store in memory in
/// place of the API server. The input is a store line (`failing` makes every create answer
/// 500), an `authorization` line, then the `cloudevent` layout. The service's config comes from
/// `examples/` (the `carts` service).
///
/// Properties: no panic and no 500; the receiver only ever creates JobRuns (and lists them by
/// an event's label, when its config cannot be used); the runs the answer
/// names are exactly the ones stored; a refused request (4xx, 503) stores nothing; a 202 means
/// its runs are stored; delivering a 202 request again stores nothing more and answers every run
/// `duplicate`.
pub fn ingest(data: &[u8]) {
    let (store_line, rest) = split_once(data, b"\n");
    let (authorization, request) = split_once(rest, b"\n");
    let failing = store_line == b"failing";
    let (mut headers, body) = request_parts(request);
    if let Ok(value) = HeaderValue::from_bytes(authorization) {
        headers.insert(http::header::AUTHORIZATION, value);
    }
    receiver::RUNTIME.with(|runtime| {
        runtime.block_on(async {
            let store = receiver::MemoryStore::new(failing);
            let (status, answer) = receiver::send(&store, &headers, body).await;
            let stored = store.names();
            assert_ne!(status, 500, "{answer}");
            let answered = receiver::answered_runs(&answer);
            if status == 202 || status == 200 || status == 422 {
                let created: std::collections::BTreeSet<String> = answered
                    .iter()
                    .filter(|(_, status)| status == "created")
                    .map(|(name, _)| name.clone())
                    .collect();
                assert_eq!(created, stored, "created runs in {answer}");
                for (name, _) in &answered {
                    assert!(stored.contains(name), "{name} answered but not stored");
                }
                assert_eq!(status == 202, answer_has_runs_plan(&answer), "{answer}");
            } else {
                assert!(stored.is_empty(), "{status} stored {stored:?}: {answer}");
            }
            if failing {
                assert_ne!(status, 202, "a failing store accepted: {answer}");
            }
            if status == 202 {
                let (again, second) = receiver::send(&store, &headers, body).await;
                assert_eq!(again, 202, "{second}");
                assert_eq!(store.names(), stored, "a redelivery stored more");
                for (name, status) in receiver::answered_runs(&second) {
                    assert_eq!(status, "duplicate", "{name} on redelivery: {second}");
                }
            }
        })
    });
}

/// Whether some event of an answer matched actions (its `runs` hold them; an answer with
/// `not_matched` only, or an `error`, did not).
fn answer_has_runs_plan(answer: &serde_json::Value) -> bool {
    answer["events"].as_array().is_some_and(|events| {
        events.iter().any(|event| {
            event["error"].is_null()
                && event["runs"]
                    .as_array()
                    .is_some_and(|runs| !runs.is_empty())
        })
    })
}

/// The receiver's router over a store in memory.
mod receiver {
    use std::collections::{BTreeMap, BTreeSet};
    use std::path::PathBuf;
    use std::sync::{Arc, Mutex, OnceLock};
    use std::time::Duration;

    use bytes::Bytes;
    use http::{HeaderMap, Request, Response, StatusCode};
    use http_body_util::{BodyExt, Full};
    use job_executor::ingest::{IngestState, auth, router};
    use job_executor::metrics::Metrics;
    use job_executor::settings::Settings;
    use job_executor::source::Source;
    use tower::ServiceExt;

    pub const TOKEN: &str = "fuzz-token";

    thread_local! {
        pub static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("a tokio runtime");
    }

    /// JobRuns by name, as the API server would keep them.
    #[derive(Clone)]
    pub struct MemoryStore {
        runs: Arc<Mutex<BTreeMap<String, serde_json::Value>>>,
        failing: bool,
    }

    impl MemoryStore {
        pub fn new(failing: bool) -> Self {
            MemoryStore {
                runs: Arc::default(),
                failing,
            }
        }

        pub fn names(&self) -> BTreeSet<String> {
            (self.runs.lock().expect("the store's lock").keys())
                .cloned()
                .collect()
        }

        /// One API request: a JobRun create, or a list of JobRuns by their labels (an
        /// event's runs, looked for when its config cannot be used).
        async fn answer(self, request: Request<kube::client::Body>) -> Response<Full<Bytes>> {
            let (parts, body) = request.into_parts();
            assert!(
                parts.uri.path().ends_with("/jobruns"),
                "the receiver asked for {}",
                parts.uri
            );
            if self.failing {
                return status(500, "InternalError", "the store is failing");
            }
            if parts.method == http::Method::GET {
                return self.list(parts.uri.query().unwrap_or_default());
            }
            assert_eq!(parts.method, http::Method::POST, "{}", parts.uri);
            let body = body.collect().await.expect("the request body").to_bytes();
            let run: serde_json::Value = serde_json::from_slice(&body).expect("a JobRun");
            let name = run["metadata"]["name"]
                .as_str()
                .expect("a named run")
                .to_string();
            let created = match self
                .runs
                .lock()
                .expect("the store's lock")
                .entry(name.clone())
            {
                std::collections::btree_map::Entry::Occupied(_) => false,
                std::collections::btree_map::Entry::Vacant(place) => {
                    place.insert(run);
                    true
                }
            };
            if !created {
                return status(
                    409,
                    "AlreadyExists",
                    &format!("jobruns {name:?} already exists"),
                );
            }
            let mut response = Response::new(Full::new(body));
            *response.status_mut() = StatusCode::CREATED;
            response
        }
    }

    impl MemoryStore {
        /// The runs whose labels hold every `key=value` of the query's `labelSelector`.
        fn list(&self, query: &str) -> Response<Full<Bytes>> {
            let selector = query
                .split('&')
                .find_map(|pair| pair.strip_prefix("labelSelector="))
                .map(percent_decoded)
                .unwrap_or_default();
            let wanted: Vec<(&str, &str)> = selector
                .split(',')
                .filter_map(|term| term.split_once('='))
                .collect();
            let items: Vec<serde_json::Value> = (self.runs.lock().expect("the store's lock"))
                .values()
                .filter(|run| {
                    wanted
                        .iter()
                        .all(|(key, value)| run["metadata"]["labels"][*key] == *value)
                })
                .cloned()
                .collect();
            let body = serde_json::json!({
                "kind": "JobRunList", "apiVersion": "job-executor.dev/v1alpha1",
                "metadata": {"resourceVersion": "1"}, "items": items,
            });
            Response::new(Full::new(Bytes::from(body.to_string())))
        }
    }

    /// `%XX` escapes read as their bytes.
    fn percent_decoded(text: &str) -> String {
        let bytes = text.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut at = 0;
        while at < bytes.len() {
            let escaped = (bytes[at] == b'%')
                .then(|| text.get(at + 1..at + 3))
                .flatten()
                .and_then(|hex| u8::from_str_radix(hex, 16).ok());
            match escaped {
                Some(byte) => {
                    out.push(byte);
                    at += 3;
                }
                None => {
                    out.push(bytes[at]);
                    at += 1;
                }
            }
        }
        String::from_utf8_lossy(&out).into_owned()
    }

    fn status(code: u16, reason: &str, message: &str) -> Response<Full<Bytes>> {
        let body = serde_json::json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "reason": reason, "message": message, "code": code,
        });
        let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
        *response.status_mut() = StatusCode::from_u16(code).expect("a status code");
        response
    }

    /// The config source (`examples/`), read once: its cache keeps the parsed config.
    fn source() -> Arc<Source> {
        static SOURCE: OnceLock<Arc<Source>> = OnceLock::new();
        SOURCE
            .get_or_init(|| {
                // The main crate's directory, from the fuzz crate or from the main crate's tests.
                let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
                let examples = [here.join("examples"), here.join("../examples")]
                    .into_iter()
                    .find(|dir| dir.join("carts/job/config.yaml").is_file())
                    .expect("examples/carts/job/config.yaml");
                Arc::new(Source::directory(examples))
            })
            .clone()
    }

    fn settings() -> Arc<Settings> {
        static SETTINGS: OnceLock<Arc<Settings>> = OnceLock::new();
        SETTINGS
            .get_or_init(|| Arc::new(Settings::defaults()))
            .clone()
    }

    /// Sends one request to a receiver storing into `store`: its status and its JSON answer.
    pub async fn send(
        store: &MemoryStore,
        headers: &HeaderMap,
        body: &[u8],
    ) -> (u16, serde_json::Value) {
        let service_store = store.clone();
        let api = tower::service_fn(move |request| {
            let store = service_store.clone();
            async move { Ok::<_, std::convert::Infallible>(store.answer(request).await) }
        });
        let client = kube::Client::new(api, "default");
        let state = IngestState {
            runs: kube::Api::namespaced(client, "default"),
            source: source(),
            settings: settings(),
            metrics: Arc::new(Metrics::new()),
            token: Some(auth::Secret::Value(TOKEN.to_string())),
            signatures: None,
            max_body_bytes: 1 << 20,
            body_budget: job_executor::ingest::BodyBudget::new(64 << 20),
            max_batch_events: job_executor::ingest::parse::DEFAULT_MAX_BATCH_EVENTS,
            read_timeout: Duration::from_secs(30),
            store_timeout: Duration::from_secs(30),
            known_runs: Arc::default(),
            health: Arc::default(),
            max_runs_in_flight: None,
            scope: Default::default(),
        };
        let mut request = Request::post("/")
            .body(axum::body::Body::from(body.to_vec()))
            .expect("a request");
        *request.headers_mut() = headers.clone();
        let response = router(Arc::new(state))
            .oneshot(request)
            .await
            .expect("the router answers");
        let status = response.status().as_u16();
        let bytes = response
            .into_body()
            .collect()
            .await
            .expect("the answer's body")
            .to_bytes();
        let answer = serde_json::from_slice(&bytes)
            .unwrap_or_else(|error| panic!("the answer is not JSON ({error}): {bytes:?}"));
        (status, answer)
    }

    /// The runs an answer names, with their status (`created` or `duplicate`).
    pub fn answered_runs(answer: &serde_json::Value) -> Vec<(String, String)> {
        answer["events"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|event| event["runs"].as_array().into_iter().flatten())
            .map(|run| {
                (
                    run["name"].as_str().unwrap_or_default().to_string(),
                    run["status"].as_str().unwrap_or_default().to_string(),
                )
            })
            .collect()
    }
}

/// A request in the `cloudevent` layout: a content type line, `ce-` header lines without the
/// prefix, an empty line, the body.
fn request_parts(data: &[u8]) -> (HeaderMap, &[u8]) {
    let (head, body) = split_once(data, b"\n\n");
    let mut lines = head.split(|b| *b == b'\n');
    let mut headers = HeaderMap::new();
    if let Some(value) = lines
        .next()
        .and_then(|line| HeaderValue::from_bytes(line).ok())
    {
        headers.insert(http::header::CONTENT_TYPE, value);
    }
    for line in lines {
        let (name, value) = split_once(line, b": ");
        let name = [b"ce-".as_slice(), name].concat();
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(&name),
            HeaderValue::from_bytes(value),
        ) {
            headers.append(name, value);
        }
    }
    (headers, body)
}

/// A DNS-1123 label: at most 63 lowercase letters, digits and `-`, starting and ending with a
/// letter or digit.
fn assert_dns_label(name: &str) {
    assert!(
        !name.is_empty()
            && name.len() <= 63
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && !name.starts_with('-')
            && !name.ends_with('-'),
        "{name:?} is not a DNS label"
    );
}

fn split_once<'a>(data: &'a [u8], separator: &[u8]) -> (&'a [u8], &'a [u8]) {
    match data
        .windows(separator.len())
        .position(|window| window == separator)
    {
        Some(at) => (&data[..at], &data[at + separator.len()..]),
        None => (data, &[]),
    }
}
