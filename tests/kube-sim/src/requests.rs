//! The request log: one record per API request, queryable from tests.

use std::sync::Mutex;

/// One request as the API server saw it. `verb` uses the Kubernetes RBAC verb names (get,
/// list, watch, create, update, patch, delete, deletecollection); discovery and other
/// non-resource requests have an empty `resource` and the lower-cased HTTP method as verb.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestRecord {
    /// Position in the log since the simulator started (never reused, survives `clear`).
    pub seq: u64,
    pub method: String,
    pub path: String,
    pub verb: String,
    pub group: String,
    pub version: String,
    pub resource: String,
    pub subresource: String,
    pub namespace: String,
    pub name: String,
    pub field_manager: String,
    pub user_agent: String,
    /// The authenticated user (see `Sim::token_for`); empty for requests without credentials.
    pub user: String,
    pub status: u16,
    /// When the request arrived (real time, not the simulated clock).
    pub received: std::time::Instant,
}

impl RequestRecord {
    /// `resource` or `resource/subresource`, as in RBAC rules.
    pub fn resource_path(&self) -> String {
        if self.subresource.is_empty() {
            self.resource.clone()
        } else {
            format!("{}/{}", self.resource, self.subresource)
        }
    }

    /// Whether this is a request for a resource (not discovery/version/openapi).
    pub fn is_resource_request(&self) -> bool {
        !self.resource.is_empty()
    }
}

/// The log itself.
#[derive(Debug, Default)]
pub struct RequestLog {
    inner: Mutex<(u64, Vec<RequestRecord>)>,
}

impl RequestLog {
    pub fn push(&self, mut r: RequestRecord) {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        r.seq = g.0;
        g.0 += 1;
        g.1.push(r);
    }

    pub fn all(&self) -> Vec<RequestRecord> {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .1
            .clone()
    }

    /// The sequence number the next request will get (a mark for `since`).
    pub fn mark(&self) -> u64 {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).0
    }

    pub fn since(&self, mark: u64) -> Vec<RequestRecord> {
        let g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        // Records are in seq order: copy only the tail.
        let from = g.1.partition_point(|r| r.seq < mark);
        g.1[from..].to_vec()
    }

    pub fn clear(&self) {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .1
            .clear();
    }
}
