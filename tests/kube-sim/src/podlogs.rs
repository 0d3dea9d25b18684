//! Container output kept by the simulated runtime, per pod, container and attempt.

use std::collections::HashMap;
use std::sync::Mutex;

/// One line of output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// RFC 3339 timestamp with nanoseconds (for `timestamps=true`).
    pub ts: String,
    pub text: String,
}

type Key = (String, String);

/// Logs by (pod uid, container); one entry per attempt (restart).
#[derive(Debug, Default)]
pub struct LogStore {
    inner: Mutex<HashMap<Key, Vec<Vec<LogLine>>>>,
}

impl LogStore {
    /// Starts a new attempt of a container (its previous output becomes `previous`).
    pub fn start_attempt(&self, pod_uid: &str, container: &str) {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry((pod_uid.into(), container.into()))
            .or_default()
            .push(Vec::new());
    }

    pub fn append(&self, pod_uid: &str, container: &str, text: &str) {
        let ts = jiff::Timestamp::now()
            .strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            .to_string();
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let attempts = g.entry((pod_uid.into(), container.into())).or_default();
        if attempts.is_empty() {
            attempts.push(Vec::new());
        }
        if let Some(cur) = attempts.last_mut() {
            cur.push(LogLine {
                ts,
                text: text.to_string(),
            });
        }
    }

    /// The lines of an attempt counted back from the latest (0 = latest).
    pub fn get(&self, pod_uid: &str, container: &str, back: usize) -> Option<Vec<LogLine>> {
        let g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let attempts = g.get(&(pod_uid.to_string(), container.to_string()))?;
        let idx = attempts.len().checked_sub(1 + back)?;
        attempts.get(idx).cloned()
    }
}
