//! What the controller's watches keep of Jobs and pods: only the fields it reads, parsed
//! straight from the watch's JSON (everything else is skipped while parsing, never held).
//!
//! `k8s_openapi`'s `Job` and `Pod` are large even when trimmed (a `Job` with no spec is 2.6 KB,
//! a container holding only its name 2 KB): with ten thousand runs in flight the caches held
//! about 11 KB of them per run. These types hold what `observe` and the logs read.

use std::fmt;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use serde::de::{IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

/// A Job as the controller reads it: who it is, whose it is (the run), and the conditions that
/// end it.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(from = "JobRead")]
pub struct CachedJob {
    pub metadata: ObjectMeta,
    /// Its run's name: its `job-executor.dev/run` label, or else the JobRun that owns it.
    pub run: Option<String>,
    /// The uid of the JobRun that owns it: a run of the same name made since (the one before
    /// deleted, its event sent again) is another run, whose Jobs these are not.
    pub owner_uid: Option<String>,
    /// Its own uid, which its pods carry: the pods of a Job of the same name made before it
    /// (another run's, still stopping) are not its.
    pub uid: Option<UidKey>,
    pub status: Option<CachedJobStatus>,
}

/// An object's uid as the caches keep it: only compared, never shown, so a hash of it (8 bytes,
/// where the text takes about 60 per object).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UidKey(u64);

impl UidKey {
    pub fn of(uid: &str) -> Self {
        use std::hash::{Hash, Hasher};
        // The default hasher's keys are fixed: the same uid gives the same key in the process.
        let mut hasher = std::hash::DefaultHasher::new();
        uid.hash(&mut hasher);
        UidKey(hasher.finish())
    }
}

impl CachedJob {
    /// Whether the run with `uid` made it (any run, when its uid is not known).
    pub fn is_of_run(&self, uid: Option<&str>) -> bool {
        uid.is_none_or(|uid| self.owner_uid.as_deref() == Some(uid))
    }
}

/// A Job as its JSON has it, of which [`CachedJob`] keeps what is read.
#[derive(Deserialize)]
struct JobRead {
    #[serde(default)]
    metadata: Option<ReadMetadata>,
    #[serde(default)]
    status: Option<CachedJobStatus>,
}

impl From<JobRead> for CachedJob {
    fn from(read: JobRead) -> Self {
        let (metadata, labels) = read.metadata.map(ReadMetadata::split).unwrap_or_default();
        let owner = metadata
            .owner_references
            .iter()
            .flatten()
            .find(|owner| owner.kind == "JobRun");
        let owner_uid = owner.map(|owner| owner.uid.clone());
        let owner = owner.map(|owner| owner.name.clone());
        let uid = metadata.uid.as_deref().map(UidKey::of);
        CachedJob {
            metadata: ObjectMeta {
                owner_references: None,
                uid: None,
                ..metadata
            },
            run: labels.run.or(owner),
            owner_uid,
            uid,
            status: read.status,
        }
    }
}

/// Of a Job's status, the conditions that end it (`Complete`, `Failed`, and `FailureTarget`,
/// which says `Failed` will follow once its pods are gone) and the counts of its pods (whether
/// it ever made one); `SuccessCriteriaMet` is not read.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct CachedJobStatus {
    #[serde(default, deserialize_with = "read_job_conditions")]
    pub conditions: Vec<Condition>,
    #[serde(default)]
    pub active: Option<i32>,
    #[serde(default)]
    pub succeeded: Option<i32>,
    #[serde(default)]
    pub failed: Option<i32>,
}

impl CachedJob {
    /// Whether the Job controller counts a pod of it, running or ended (one it deleted at the
    /// Job's deadline counts as failed).
    pub fn made_a_pod(&self) -> bool {
        self.status.as_ref().is_some_and(|status| {
            [status.active, status.succeeded, status.failed]
                .iter()
                .any(|count| count.is_some_and(|count| count > 0))
        })
    }
}

/// A condition as the controller reads it.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct Condition {
    #[serde(rename = "type")]
    pub type_: String,
    pub status: String,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
    /// When it became what it is: kept of `FailureTarget` (how long a Job has been failing) and
    /// `Complete` (how long a pod that succeeded may take to show in the pod watch) only, for
    /// the memory of the many Jobs the watch caches.
    #[serde(default, rename = "lastTransitionTime")]
    pub since: Option<String>,
}

fn read_job_conditions<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<Vec<Condition>, D::Error> {
    let conditions = Option::<Vec<Condition>>::deserialize(deserializer)?.unwrap_or_default();
    Ok(conditions
        .into_iter()
        .filter(|c| matches!(c.type_.as_str(), "Complete" | "Failed" | "FailureTarget"))
        .map(|mut c| {
            if c.type_ == "Failed" {
                c.since = None;
            }
            c
        })
        .collect())
}

/// A pod as the controller reads it: who it is, the Job and run it belongs to (from its
/// labels), its containers' names (whose logs to read) and what its status says of a start
/// that does not happen or of the task's end.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(from = "PodRead")]
pub struct CachedPod {
    pub metadata: ObjectMeta,
    /// Its Job's name (the Job controller's `batch.kubernetes.io/job-name` label, or the older
    /// `job-name`).
    pub job: Option<String>,
    /// Its Job's uid (the Job controller's `batch.kubernetes.io/controller-uid` label, or the
    /// older `controller-uid`): a new Job of an old one's name is not the old one's pods' Job.
    pub job_uid: Option<UidKey>,
    /// Its run's name (the `job-executor.dev/run` label).
    pub run: Option<String>,
    /// Its containers' names, init containers first.
    pub containers: Vec<String>,
    pub status: Option<CachedPodStatus>,
}

/// Of a pod's status, what says why it does not start or how its task ended.
#[derive(Clone, Debug, Default)]
pub struct CachedPodStatus {
    pub phase: Option<String>,
    /// The scheduler's message when it cannot place the pod (`PodScheduled` False,
    /// `Unschedulable`).
    pub unschedulable: Option<String>,
    pub init_containers: Vec<ContainerSeen>,
    pub containers: Vec<ContainerSeen>,
    /// Why the kubelet or Kubernetes ended the pod, when something did (`Evicted: …`,
    /// `TerminationByKubelet: …`): its `status.reason` and the `DisruptionTarget` condition.
    /// (A pod deleted instead, preempted or drained, is mostly gone by the time its Job fails.)
    pub ended_by: Vec<String>,
}

/// A container's status as the controller reads it.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(from = "ContainerRead")]
pub struct ContainerSeen {
    pub name: String,
    /// Why it waits (`ImagePullBackOff`, …) and the message, while it does.
    pub waiting: Option<Waiting>,
    /// Its termination message, once it terminated (`None` inside when it wrote none).
    pub terminated: Option<Option<String>>,
    /// How it ended, when it failed: its exit code, and the reason unless the plain `Error`
    /// (`OOMKilled`, `ContainerCannotRun`, …).
    pub failed: Option<(i32, Option<String>)>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct Waiting {
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
}

impl CachedPod {
    /// Whether the Job with this uid made it (any Job of its name, when either uid is not
    /// known: the Job controller labels every pod it makes with it).
    pub fn is_of_job(&self, uid: Option<UidKey>) -> bool {
        match (uid, self.job_uid) {
            (Some(job), Some(pods_job)) => job == pods_job,
            _ => true,
        }
    }

    /// Every container's name, init containers first.
    pub fn container_names(&self) -> impl Iterator<Item = &str> {
        self.containers.iter().map(String::as_str)
    }
}

/// A pod as its JSON has it, of which [`CachedPod`] keeps what is read.
#[derive(Deserialize)]
struct PodRead {
    #[serde(default)]
    metadata: Option<ReadMetadata>,
    #[serde(default)]
    spec: Option<PodSpecRead>,
    #[serde(default)]
    status: Option<PodStatusRead>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PodSpecRead {
    #[serde(default)]
    init_containers: Vec<NameRead>,
    #[serde(default)]
    containers: Vec<NameRead>,
}

#[derive(Deserialize)]
struct NameRead {
    name: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PodStatusRead {
    #[serde(default)]
    phase: Option<String>,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    conditions: Option<Vec<Condition>>,
    #[serde(default)]
    init_container_statuses: Option<Vec<ContainerSeen>>,
    #[serde(default)]
    container_statuses: Option<Vec<ContainerSeen>>,
}

#[derive(Deserialize)]
struct ContainerRead {
    name: String,
    #[serde(default)]
    state: Option<StateRead>,
}

#[derive(Deserialize)]
struct StateRead {
    #[serde(default)]
    waiting: Option<Waiting>,
    #[serde(default)]
    terminated: Option<TerminatedRead>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct TerminatedRead {
    #[serde(default)]
    message: Option<String>,
    #[serde(default)]
    exit_code: i32,
    #[serde(default)]
    reason: Option<String>,
}

impl From<ContainerRead> for ContainerSeen {
    fn from(read: ContainerRead) -> Self {
        let (waiting, terminated) = match read.state {
            Some(state) => (state.waiting, state.terminated),
            None => (None, None),
        };
        let failed = terminated.as_ref().and_then(|t| {
            let reason = t
                .reason
                .clone()
                .filter(|r| r != "Error" && r != "Completed");
            (t.exit_code != 0 || reason.is_some()).then_some((t.exit_code, reason))
        });
        ContainerSeen {
            name: read.name,
            waiting,
            terminated: terminated.map(|t| t.message),
            failed,
        }
    }
}

impl From<PodRead> for CachedPod {
    fn from(read: PodRead) -> Self {
        let (metadata, labels) = read.metadata.map(ReadMetadata::split).unwrap_or_default();
        let containers = read
            .spec
            .map(|spec| {
                spec.init_containers
                    .into_iter()
                    .chain(spec.containers)
                    .map(|c| c.name)
                    .collect()
            })
            .unwrap_or_default();
        let status = read.status.map(|status| {
            let said = |reason: String, message: Option<String>| match message {
                Some(message) if !message.is_empty() => format!("{reason}: {message}"),
                _ => reason,
            };
            let mut ended_by: Vec<String> = status
                .reason
                .map(|reason| said(reason, status.message))
                .into_iter()
                .collect();
            let mut unschedulable = None;
            for c in status.conditions.into_iter().flatten() {
                if c.type_ == "PodScheduled"
                    && c.status == "False"
                    && c.reason.as_deref() == Some("Unschedulable")
                {
                    unschedulable = Some(c.message.unwrap_or_default());
                } else if c.type_ == "DisruptionTarget" && c.status == "True" {
                    let reason = c.reason.unwrap_or_else(|| "DisruptionTarget".into());
                    ended_by.push(said(reason, c.message));
                }
            }
            CachedPodStatus {
                phase: status.phase,
                unschedulable,
                init_containers: status.init_container_statuses.unwrap_or_default(),
                containers: status.container_statuses.unwrap_or_default(),
                ended_by,
            }
        });
        CachedPod {
            metadata: ObjectMeta {
                // A pod's owner (its Job) is named by its label; its uid is not read.
                owner_references: None,
                uid: None,
                ..metadata
            },
            job: labels.job,
            job_uid: labels.job_uid.as_deref().map(UidKey::of),
            run: labels.run,
            containers,
            status,
        }
    }
}

/// The metadata the controller reads. The field managers (often larger than the rest of the
/// object), annotations, the labels it does not read and the like are skipped while parsing.
#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ReadMetadata {
    name: Option<String>,
    namespace: Option<String>,
    uid: Option<String>,
    resource_version: Option<String>,
    #[serde(default)]
    labels: Option<ReadLabels>,
    owner_references: Option<Vec<OwnerReference>>,
    creation_timestamp: Option<Time>,
    deletion_timestamp: Option<Time>,
}

impl ReadMetadata {
    /// The object's metadata without labels, and the labels read.
    fn split(self) -> (ObjectMeta, ReadLabels) {
        let meta = ObjectMeta {
            name: self.name,
            namespace: self.namespace,
            uid: self.uid,
            resource_version: self.resource_version,
            owner_references: self.owner_references,
            creation_timestamp: self.creation_timestamp,
            deletion_timestamp: self.deletion_timestamp,
            ..Default::default()
        };
        (meta, self.labels.unwrap_or_default())
    }
}

/// An object's metadata as the controller reads it: without labels (a Job is its run's by its
/// owner reference), annotations and field managers.
pub(crate) fn read_metadata<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<ObjectMeta, D::Error> {
    Ok(ReadMetadata::deserialize(deserializer)?.split().0)
}

/// The labels the controller reads of a pod: the run it belongs to, and its Job's name and uid
/// (the Job controller sets both spellings of each). A pod carries a dozen labels (the task's, the event's, the
/// Job controller's): the rest are skipped while parsing.
#[derive(Default)]
struct ReadLabels {
    run: Option<String>,
    job: Option<String>,
    job_uid: Option<String>,
}

impl<'de> Deserialize<'de> for ReadLabels {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Kept;

        impl<'de> Visitor<'de> for Kept {
            type Value = ReadLabels;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a map of labels")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ReadLabels, A::Error> {
                let mut kept = ReadLabels::default();
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        crate::labels::RUN => kept.run = Some(map.next_value()?),
                        "batch.kubernetes.io/job-name" => kept.job = Some(map.next_value()?),
                        "job-name" if kept.job.is_none() => kept.job = Some(map.next_value()?),
                        "batch.kubernetes.io/controller-uid" => {
                            kept.job_uid = Some(map.next_value()?);
                        }
                        "controller-uid" if kept.job_uid.is_none() => {
                            kept.job_uid = Some(map.next_value()?);
                        }
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(kept)
            }
        }

        deserializer.deserialize_map(Kept)
    }
}

/// The API identities of the cached types are those of the objects they are read from.
macro_rules! read_as {
    ($cached:ty, $kind:ty) => {
        impl k8s_openapi::Resource for $cached {
            const API_VERSION: &'static str = <$kind as k8s_openapi::Resource>::API_VERSION;
            const GROUP: &'static str = <$kind as k8s_openapi::Resource>::GROUP;
            const KIND: &'static str = <$kind as k8s_openapi::Resource>::KIND;
            const VERSION: &'static str = <$kind as k8s_openapi::Resource>::VERSION;
            const URL_PATH_SEGMENT: &'static str =
                <$kind as k8s_openapi::Resource>::URL_PATH_SEGMENT;
            type Scope = <$kind as k8s_openapi::Resource>::Scope;
        }

        impl k8s_openapi::Metadata for $cached {
            type Ty = ObjectMeta;

            fn metadata(&self) -> &ObjectMeta {
                &self.metadata
            }

            fn metadata_mut(&mut self) -> &mut ObjectMeta {
                &mut self.metadata
            }
        }
    };
}

read_as!(CachedJob, Job);
read_as!(CachedPod, Pod);

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_pod_is_read_with_only_what_the_controller_reads() {
        let pod: CachedPod = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {
                "name": "r-0-abc", "namespace": "jobs", "uid": "u", "resourceVersion": "7",
                "labels": {"job-name": "r-0", "batch.kubernetes.io/job-name": "r-0",
                           "job-executor.dev/run": "r", "keptn.sh/project": "p",
                           "batch.kubernetes.io/controller-uid": "j"},
                "annotations": {"a": "b"},
                "managedFields": [{"manager": "kubelet", "fieldsV1": {"f:status": {}}}],
                "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": "r-0",
                                     "uid": "j", "controller": true}]
            },
            "spec": {
                "initContainers": [{"name": "stage", "image": "x", "env": [{"name": "A", "value": "1"}]}],
                "containers": [{"name": "task", "image": "y", "args": ["long"]}]
            },
            "status": {
                "phase": "Running", "hostIP": "10.0.0.1", "qosClass": "Burstable",
                "conditions": [
                    {"type": "Ready", "status": "True"},
                    {"type": "PodScheduled", "status": "True"}
                ],
                "initContainerStatuses": [{"name": "stage", "image": "x", "imageID": "sha",
                    "ready": false, "restartCount": 0,
                    "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}],
                "containerStatuses": [{"name": "task", "image": "y", "imageID": "sha",
                    "ready": true, "restartCount": 0,
                    "state": {"running": {"startedAt": "2026-12-02T00:00:00Z"}}}]
            }
        }))
        .unwrap();
        let meta = &pod.metadata;
        assert_eq!(meta.managed_fields, None);
        assert_eq!(meta.annotations, None);
        assert_eq!(meta.labels, None, "the labels read are fields of their own");
        assert_eq!(
            meta.owner_references, None,
            "a pod's Job is named by its label"
        );
        assert_eq!(meta.resource_version.as_deref(), Some("7"));
        assert_eq!(pod.job.as_deref(), Some("r-0"));
        assert_eq!(pod.run.as_deref(), Some("r"));
        assert_eq!(pod.job_uid, Some(UidKey::of("j")));
        assert_eq!(pod.container_names().collect::<Vec<_>>(), ["stage", "task"]);
        let status = pod.status.unwrap();
        assert_eq!(status.phase.as_deref(), Some("Running"));
        assert_eq!(status.unschedulable, None);
        let stage = &status.init_containers[0];
        assert_eq!(
            (stage.name.as_str(), stage.terminated.clone()),
            ("stage", Some(None))
        );
        let task = &status.containers[0];
        assert_eq!(task.name, "task");
        assert!(task.waiting.is_none() && task.terminated.is_none());
    }

    #[test]
    fn a_job_is_read_with_its_owner_and_the_conditions_that_end_it() {
        let job: CachedJob = serde_json::from_value(json!({
            "metadata": {"name": "r-0", "ownerReferences": [{"apiVersion": "job-executor.dev/v1alpha1",
                "kind": "JobRun", "name": "r", "uid": "u", "controller": true}],
                "labels": {"job-executor.dev/run": "r"},
                "managedFields": [{"manager": "kube-controller-manager"}]},
            "spec": {"template": {"spec": {"containers": [{"name": "task", "image": "y"}]}}},
            "status": {"active": 1, "conditions": [
                {"type": "SuccessCriteriaMet", "status": "True"},
                {"type": "Complete", "status": "True"}
            ]}
        }))
        .unwrap();
        assert_eq!(job.metadata.name.as_deref(), Some("r-0"));
        assert_eq!(job.metadata.managed_fields, None);
        assert_eq!(job.metadata.labels, None);
        assert_eq!(job.run.as_deref(), Some("r"));
        assert_eq!(job.metadata.owner_references, None, "its run is a field");
        // A Job without the label (made by hand, say) is its owner's.
        let owned: CachedJob = serde_json::from_value(json!({
            "metadata": {"name": "r-1", "ownerReferences": [{"apiVersion": "job-executor.dev/v1alpha1",
                "kind": "JobRun", "name": "s", "uid": "u", "controller": true}]}
        }))
        .unwrap();
        assert_eq!(owned.run.as_deref(), Some("s"));
        assert_eq!(job.uid, None);
        assert_eq!(owned.uid, None);
        let conditions = job.status.unwrap().conditions;
        assert_eq!(conditions.len(), 1);
        assert_eq!(conditions[0].type_, "Complete");
    }
    #[test]
    fn a_pod_is_its_job_s_by_the_job_s_uid_and_a_job_of_the_name_made_before_is_another() {
        let job = |uid: &str| -> CachedJob {
            serde_json::from_value(json!({"metadata": {"name": "r-0", "uid": uid}})).unwrap()
        };
        let pod = |labels: serde_json::Value| -> CachedPod {
            serde_json::from_value(json!({"metadata": {"name": "r-0-x", "labels": labels}}))
                .unwrap()
        };
        let (old, new) = (job("a"), job("b"));
        let of_old = pod(json!({"job-name": "r-0", "batch.kubernetes.io/controller-uid": "a"}));
        assert!(of_old.is_of_job(old.uid));
        assert!(!of_old.is_of_job(new.uid));
        // Kubernetes before 1.27 set only the older label.
        let older_label = pod(json!({"job-name": "r-0", "controller-uid": "b"}));
        assert!(older_label.is_of_job(new.uid) && !older_label.is_of_job(old.uid));
        // Unknown on either side: any Job of the name.
        let unlabelled = pod(json!({"job-name": "r-0"}));
        assert!(unlabelled.is_of_job(old.uid) && unlabelled.is_of_job(new.uid));
        assert!(of_old.is_of_job(None));
    }
}
