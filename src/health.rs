//! What `/readyz` answers: ready once every watch has listed its objects, and only while no
//! problem is known (the JobRun CRD missing, access refused, the API server not answering),
//! with the reason in the body so `kubectl describe pod` and a person see what is wrong.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, Default)]
pub struct Health {
    synced: AtomicBool,
    /// Known problems by their source (a watch, the API server probe).
    problems: Mutex<BTreeMap<&'static str, Problem>>,
    /// Who leads, as this replica last saw it.
    leader: Mutex<String>,
}

impl Health {
    pub fn set_synced(&self) {
        self.synced.store(true, Ordering::SeqCst);
    }

    /// Whether every watch has listed its objects once.
    pub fn is_synced(&self) -> bool {
        self.synced.load(Ordering::SeqCst)
    }

    /// Records (or, with `None`, clears) the problem `source` sees. Returns whether this
    /// changed the recorded problem, so callers log a problem once, not at every retry.
    pub fn report(&self, source: &'static str, problem: Option<String>) -> bool {
        self.record(source, problem, None, Instant::now())
    }

    /// Records a problem that holds only until `lasts` passes without it being reported again:
    /// for a source that says when it fails but not when it works again (a watch resumed after
    /// an error yields nothing until an object changes, which in a quiet cluster may be never).
    pub fn report_for(
        &self,
        source: &'static str,
        problem: Option<String>,
        lasts: Duration,
    ) -> bool {
        self.record(source, problem, Some(lasts), Instant::now())
    }

    fn record(
        &self,
        source: &'static str,
        problem: Option<String>,
        lasts: Option<Duration>,
        now: Instant,
    ) -> bool {
        let Ok(mut problems) = self.problems.lock() else {
            return false;
        };
        let known = problems
            .get(source)
            .filter(|known| known.holds(now))
            .map(|known| known.text.clone());
        match problem {
            Some(text) => {
                let changed = known.as_ref() != Some(&text);
                let until = lasts.and_then(|lasts| now.checked_add(lasts));
                problems.insert(source, Problem { text, until });
                changed
            }
            None => problems.remove(source).is_some() && known.is_some(),
        }
    }

    /// Records who leads: this replica or another (for `/readyz`).
    pub fn set_leader(&self, leader: String) {
        if let Ok(mut current) = self.leader.lock() {
            *current = leader;
        }
    }

    /// Who leads, as `/readyz` says it: `this replica (NAME)`, another's name, or nobody known.
    pub fn leader(&self) -> String {
        self.leader
            .lock()
            .map(|leader| leader.clone())
            .unwrap_or_default()
    }

    /// `Ok` when ready, else every reason it is not, one per line.
    pub fn status(&self) -> Result<(), String> {
        self.status_at(Instant::now())
    }

    fn status_at(&self, now: Instant) -> Result<(), String> {
        let problems = self
            .problems
            .lock()
            .map(|p| {
                p.values()
                    .filter(|problem| problem.holds(now))
                    .map(|problem| problem.text.clone())
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default();
        if !problems.is_empty() {
            return Err(problems.join("\n"));
        }
        if !self.synced.load(Ordering::SeqCst) {
            return Err("the watches of JobRuns, Jobs and pods have not listed yet".into());
        }
        Ok(())
    }
}

/// A known problem, and until when it holds unless reported again (`None`: until cleared).
#[derive(Debug)]
struct Problem {
    text: String,
    until: Option<Instant>,
}

impl Problem {
    fn holds(&self, now: Instant) -> bool {
        self.until.is_none_or(|until| now < until)
    }
}

/// Whether the API server failed to store an object because etcd refuses one that large
/// (`etcdserver: request is too large`, answered 500): storing it again fails again.
pub fn too_large_to_store(status: &kube::core::Status) -> bool {
    status.code == 500 && status.message.contains("request is too large")
}

/// Whether the API server refused a write because an admission webhook or a
/// ValidatingAdmissionPolicy denied it ("admission webhook \"…\" denied the request: …",
/// "ValidatingAdmissionPolicy '…' with binding '…' denied request: …"): the same write would be
/// denied again.
pub fn denied_by_admission(status: &kube::core::Status) -> bool {
    status.code == 403
        && (status.message.contains("denied the request")
            || status.message.contains("denied request"))
}

/// What a failed request in the job namespace says of the namespace itself, if anything: it
/// does not exist, or is being deleted (no run can be stored there).
pub fn namespace_problem(error: &kube::Error) -> Option<String> {
    match error {
        kube::Error::Api(status) if namespace_missing(status) || namespace_ending(status) => {
            Some(explain(error))
        }
        _ => None,
    }
}

fn namespace_missing(status: &kube::core::Status) -> bool {
    status.code == 404
        && (status
            .details
            .as_ref()
            .is_some_and(|d| d.kind == "namespaces")
            || status.message.starts_with("namespaces \""))
}

fn namespace_ending(status: &kube::core::Status) -> bool {
    status.code == 403 && status.message.contains("because it is being terminated")
}

/// What a failed request to the API server means for a person: a missing CRD and refused
/// access get their fix; anything else is shown as it is.
pub fn explain(error: &kube::Error) -> String {
    match error {
        // The namespace the object goes to, not its kind, is missing.
        kube::Error::Api(status) if namespace_missing(status) => {
            format!(
                "the job namespace does not exist ({}): create it, or set --job-namespace to \
                 one that does",
                status.message
            )
        }
        kube::Error::Api(status)
            if status.code == 403 && status.message.contains("exceeded quota") =>
        {
            format!(
                "a ResourceQuota of the job namespace is used up ({}): raise it, or wait for \
                 finished runs to be removed",
                status.message
            )
        }
        kube::Error::Api(status) if namespace_ending(status) => {
            format!("the job namespace is being deleted ({})", status.message)
        }
        kube::Error::Api(status) if status.code == 404 => format!(
            "the CustomResourceDefinition {} is not installed: kubectl apply -f crds/ \
             (waiting for it)",
            crate::crd::CRD_NAME
        ),
        kube::Error::Api(status) if status.code == 401 || status.code == 403 => format!(
            "the Kubernetes API refuses the operator's identity ({}): check its \
             ServiceAccount and Role (docs/install.md)",
            status.message
        ),
        // The controller watches JobRuns with a field selector on `status.done`, a selectable
        // field of this version's CRD (Kubernetes 1.31 and later).
        kube::Error::Api(status)
            if status.code == 400 && status.message.contains("field label not supported") =>
        {
            format!(
                "the installed CustomResourceDefinition {} is older than this operator (the \
                 API server answered: {}): kubectl apply -f crds/ (Helm does not upgrade CRDs); \
                 Kubernetes 1.31 or later is needed",
                crate::crd::CRD_NAME,
                status.message
            )
        }
        kube::Error::Api(status) => format!(
            "the Kubernetes API answered {} {}: {}",
            status.code, status.reason, status.message
        ),
        other => format!("the Kubernetes API server cannot be reached: {other}"),
    }
}

/// How often, and how patiently, the API server is asked whether it answers.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(5);
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// Asks the API server for its version every [`PROBE_INTERVAL`] until `stop` resolves, and
/// records in `health` whether it answered within [`PROBE_TIMEOUT`]: a replica that cannot
/// store runs stops being ready, so a Service routes events to one that can.
pub async fn probe_api_server(
    client: kube::Client,
    health: Arc<Health>,
    stop: impl std::future::Future<Output = ()>,
) {
    let probing = async {
        loop {
            let problem =
                match tokio::time::timeout(PROBE_TIMEOUT, client.apiserver_version()).await {
                    Ok(Ok(_)) => None,
                    Ok(Err(error)) => Some(explain(&error)),
                    Err(_) => Some(format!(
                        "the Kubernetes API server did not answer within {}s",
                        PROBE_TIMEOUT.as_secs()
                    )),
                };
            if health.report("apiserver", problem.clone()) {
                match problem {
                    Some(problem) => tracing::error!("{problem}"),
                    None => tracing::info!("the Kubernetes API server answers again"),
                }
            }
            tokio::time::sleep(PROBE_INTERVAL).await;
        }
    };
    tokio::select! {
        () = probing => {}
        () = stop => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admission_denials_are_told_from_other_refusals() {
        let status = |code: u16, message: &str| {
            let mut status = kube::core::Status::failure(message, "Forbidden");
            status.code = code;
            status
        };
        assert!(denied_by_admission(&status(
            403,
            "admission webhook \"policy.example.com\" denied the request: no"
        )));
        assert!(denied_by_admission(&status(
            403,
            "ValidatingAdmissionPolicy 'p' with binding 'b' denied request: no Jobs here"
        )));
        assert!(!denied_by_admission(&status(
            403,
            "jobs.batch \"x\" is forbidden: exceeded quota: no-jobs"
        )));
        assert!(!denied_by_admission(&status(422, "denied request")));
    }

    #[test]
    fn ready_only_when_synced_and_without_problems() {
        let health = Health::default();
        assert!(health.status().unwrap_err().contains("have not listed"));
        health.set_synced();
        assert_eq!(health.status(), Ok(()));
        assert!(health.report("jobruns", Some("CRD missing".into())));
        assert!(
            !health.report("jobruns", Some("CRD missing".into())),
            "same problem"
        );
        assert!(health.report("apiserver", Some("unreachable".into())));
        assert_eq!(health.status(), Err("unreachable\nCRD missing".into()));
        assert!(health.report("jobruns", None));
        assert!(!health.report("jobruns", None));
        assert_eq!(health.status(), Err("unreachable".into()));
        health.report("apiserver", None);
        assert_eq!(health.status(), Ok(()));
    }

    /// A watch's problem, reported again at each failed retry, goes once no retry failed for
    /// as long as it lasts: the watch resumed (and says nothing until an object changes).
    #[test]
    fn a_problem_reported_for_a_while_goes_unless_reported_again() {
        let health = Health::default();
        health.set_synced();
        let lasts = Duration::from_secs(120);
        let start = Instant::now();
        let at = |seconds: u64| start + Duration::from_secs(seconds);
        let problem = || Some("the API server cannot be reached".to_string());
        assert!(health.record("jobruns", problem(), Some(lasts), at(0)));
        assert!(
            !health.record("jobruns", problem(), Some(lasts), at(60)),
            "the same"
        );
        assert!(health.status_at(at(170)).is_err(), "reported again at 60 s");
        assert_eq!(health.status_at(at(180)), Ok(()));
        // Reported after it lapsed, it is news again; cleared, it goes at once.
        assert!(health.record("jobruns", problem(), Some(lasts), at(200)));
        assert!(health.status_at(at(201)).is_err());
        assert!(health.record("jobruns", None, None, at(202)));
        assert_eq!(health.status_at(at(202)), Ok(()));
        // A lapsed problem cleared later is no news.
        health.record("jobruns", problem(), Some(lasts), at(300));
        assert!(!health.record("jobruns", None, None, at(500)));
    }

    #[test]
    fn a_missing_crd_and_refused_access_say_how_to_fix_them() {
        let api = |code: u16| {
            kube::Error::Api(Box::new(kube::core::Status {
                code,
                message: "denied".into(),
                ..Default::default()
            }))
        };
        assert!(explain(&api(404)).contains("kubectl apply -f crds/"));
        assert!(explain(&api(404)).contains("jobruns.job-executor.dev"));
        assert!(explain(&api(403)).contains("denied"));
        assert!(explain(&api(500)).starts_with("the Kubernetes API answered 500"));
        let old_crd = kube::Error::Api(Box::new(kube::core::Status {
            code: 400,
            message: "field label not supported: status.done".into(),
            ..Default::default()
        }));
        assert!(explain(&old_crd).contains("is older than this operator"));
        assert!(explain(&old_crd).contains("kubectl apply -f crds/"));
        // A 403 or 404 that is about the job namespace, not the identity or the CRD.
        let with = |code: u16, message: &str| {
            explain(&kube::Error::Api(Box::new(kube::core::Status {
                code,
                message: message.into(),
                ..Default::default()
            })))
        };
        assert_eq!(
            with(404, "namespaces \"team-jobs\" not found"),
            "the job namespace does not exist (namespaces \"team-jobs\" not found): create it, \
             or set --job-namespace to one that does"
        );
        let quota = "jobruns.job-executor.dev \"r\" is forbidden: exceeded quota: runs, \
                     requested: count/jobruns.job-executor.dev=1, used: \
                     count/jobruns.job-executor.dev=10, limited: count/jobruns.job-executor.dev=10";
        assert!(
            with(403, quota).starts_with("a ResourceQuota of the job namespace is used up ("),
            "{}",
            with(403, quota)
        );
        let terminating = "jobruns.job-executor.dev \"r\" is forbidden: unable to create new \
                           content in namespace team-jobs because it is being terminated";
        assert!(with(403, terminating).starts_with("the job namespace is being deleted ("));
        let unreachable = kube::Error::Service("connection refused".into());
        assert!(explain(&unreachable).starts_with("the Kubernetes API server cannot be reached"));
    }
}
