//! Fault injection: fail matching requests with a chosen status, add latency.

use std::sync::Mutex;
use std::time::Duration;

use crate::util::glob_match;

/// A rule failing the next `count` requests that match it.
///
/// Empty `verb`/`resource`/`namespace` match anything; `name_glob` is a shell glob (`*`, `?`)
/// on the object name (for create, the name in the body; empty matches anything, including
/// collection requests).
/// `resource` may name a subresource as `jobs/status`.
#[derive(Debug, Clone, PartialEq)]
pub struct FaultRule {
    pub verb: String,
    pub resource: String,
    pub namespace: String,
    pub name_glob: String,
    pub status: u16,
    pub count: usize,
    /// Seconds for `Retry-After` (sent with any status when set).
    pub retry_after: Option<u64>,
}

impl Default for FaultRule {
    fn default() -> Self {
        FaultRule {
            verb: String::new(),
            resource: String::new(),
            namespace: String::new(),
            name_glob: String::new(),
            status: 500,
            count: 1,
            retry_after: None,
        }
    }
}

impl FaultRule {
    /// A rule failing the next request (any verb, any resource) with `status`.
    pub fn new(status: u16) -> Self {
        FaultRule {
            status,
            ..Default::default()
        }
    }
    pub fn verb(mut self, verb: &str) -> Self {
        self.verb = verb.into();
        self
    }
    pub fn resource(mut self, resource: &str) -> Self {
        self.resource = resource.into();
        self
    }
    pub fn namespace(mut self, ns: &str) -> Self {
        self.namespace = ns.into();
        self
    }
    pub fn name(mut self, glob: &str) -> Self {
        self.name_glob = glob.into();
        self
    }
    pub fn times(mut self, count: usize) -> Self {
        self.count = count;
        self
    }
    pub fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs);
        self
    }

    fn matches(&self, verb: &str, resource: &str, ns: &str, name: &str) -> bool {
        (self.verb.is_empty() || self.verb == verb)
            && (self.resource.is_empty() || self.resource == resource)
            && (self.namespace.is_empty() || self.namespace == ns)
            && (self.name_glob.is_empty() || glob_match(&self.name_glob, name))
    }
}

/// The fault controls of a running simulator.
#[derive(Debug, Default)]
pub struct Faults {
    rules: Mutex<Vec<FaultRule>>,
    latency: Mutex<Duration>,
    /// `(verb, resource, hold)`: such requests are carried out, and their answers held.
    late_answers: Mutex<Option<(String, String, Duration)>>,
    /// `(verb, resource, name glob, hold)`: the next such request is carried out only after
    /// `hold`.
    late_request: Mutex<Option<(String, String, String, Duration)>>,
}

impl Faults {
    /// Adds a rule; rules are consulted in the order added.
    pub fn fail_next(&self, rule: FaultRule) {
        self.rules
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(rule);
    }

    /// Adds latency to every request (zero removes it).
    pub fn latency(&self, d: Duration) {
        *self.latency.lock().unwrap_or_else(|e| e.into_inner()) = d;
    }

    pub fn current_latency(&self) -> Duration {
        *self.latency.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Carries out requests of `verb` on `resource` (`plural` or `plural/subresource`) as usual
    /// and holds their answers for `hold` (zero ends it): the write landed, the client does not
    /// know yet — as when the connection breaks after the API server stored an object.
    pub fn delay_answers(&self, verb: &str, resource: &str, hold: Duration) {
        *self.late_answers.lock().unwrap_or_else(|e| e.into_inner()) =
            (!hold.is_zero()).then(|| (verb.to_string(), resource.to_string(), hold));
    }

    /// How long the answer to a request of `verb` on `resource` is held.
    pub fn answer_delay(&self, verb: &str, resource: &str) -> Duration {
        match &*self.late_answers.lock().unwrap_or_else(|e| e.into_inner()) {
            Some((v, r, hold)) if v == verb && r == resource => *hold,
            _ => Duration::ZERO,
        }
    }

    /// Holds the next request of `verb` on `resource` for `hold` before carrying it out: a
    /// request a client sent long ago (a paused process's, one stuck in a proxy) lands on what
    /// the object became meanwhile. `name_glob` matches the object's name (empty: any).
    pub fn delay_next_request(&self, verb: &str, resource: &str, name_glob: &str, hold: Duration) {
        *self.late_request.lock().unwrap_or_else(|e| e.into_inner()) = Some((
            verb.to_string(),
            resource.to_string(),
            name_glob.to_string(),
            hold,
        ));
    }

    /// Whether the request [`Self::delay_next_request`] waits for has not come yet.
    pub fn request_delay_pending(&self) -> bool {
        self.late_request
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
    }

    /// How long to hold a request of `verb` on `resource` of object `name` before carrying it
    /// out (taking the one-off delay if it matches).
    pub fn request_delay(&self, verb: &str, resource: &str, name: &str) -> Duration {
        let mut late = self.late_request.lock().unwrap_or_else(|e| e.into_inner());
        match late.as_ref() {
            Some((v, r, glob, hold))
                if v == verb && r == resource && (glob.is_empty() || glob_match(glob, name)) =>
            {
                let hold = *hold;
                *late = None;
                hold
            }
            _ => Duration::ZERO,
        }
    }

    /// Removes all rules, the latency, held answers and a held request not come yet.
    pub fn clear(&self) {
        self.rules.lock().unwrap_or_else(|e| e.into_inner()).clear();
        self.latency(Duration::ZERO);
        *self.late_answers.lock().unwrap_or_else(|e| e.into_inner()) = None;
        *self.late_request.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// Rules not used up yet.
    pub fn pending(&self) -> Vec<FaultRule> {
        self.rules.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Consumes one use of the first matching rule; `resource` is `plural` or
    /// `plural/subresource`.
    pub fn take(&self, verb: &str, resource: &str, ns: &str, name: &str) -> Option<FaultRule> {
        let mut rules = self.rules.lock().unwrap_or_else(|e| e.into_inner());
        let idx = rules
            .iter()
            .position(|r| r.count > 0 && r.matches(verb, resource, ns, name))?;
        let hit = rules[idx].clone();
        rules[idx].count -= 1;
        if rules[idx].count == 0 {
            rules.remove(idx);
        }
        Some(hit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_are_consumed() {
        let f = Faults::default();
        f.fail_next(
            FaultRule::new(503)
                .verb("create")
                .resource("jobs")
                .name("a-*")
                .times(2),
        );
        assert!(f.take("get", "jobs", "default", "a-1").is_none());
        assert!(f.take("create", "jobs", "default", "b").is_none());
        assert_eq!(
            f.take("create", "jobs", "default", "a-1").unwrap().status,
            503
        );
        assert!(f.take("create", "jobs", "default", "a-2").is_some());
        assert!(f.take("create", "jobs", "default", "a-3").is_none());
    }
}
