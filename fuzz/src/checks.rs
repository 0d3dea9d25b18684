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
use job_executor::event::CloudEvent;
use job_executor::ingest::parse::{DEFAULT_MAX_BATCH_EVENTS, events_from_request};
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
    match events_from_request(&headers, body, DEFAULT_MAX_BATCH_EVENTS) {
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
