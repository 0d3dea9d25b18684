//! What the controller's watches keep of Jobs and pods: only the fields it reads, parsed
//! straight from the watch's JSON (everything else is skipped while parsing, never held).
//!
//! `k8s_openapi`'s `Job` and `Pod` are large even when trimmed (a `Job` with no spec is 2.6 KB,
//! a container holding only its name 2 KB): with ten thousand runs in flight the caches held
//! about 11 KB of them per run. These types hold what `observe` and the logs read.

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::api::batch::v1::{Job, JobStatus};
use k8s_openapi::api::core::v1::{Pod, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use serde::de::{IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};

/// A Job as the controller reads it: who it is, whose it is, and its status.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct CachedJob {
    #[serde(default, deserialize_with = "read_metadata")]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub status: Option<JobStatus>,
}

/// A pod as the controller reads it: who it is (its labels name its Job and run), its
/// containers' names (whose logs to read), and its status.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct CachedPod {
    #[serde(default, deserialize_with = "read_metadata")]
    pub metadata: ObjectMeta,
    #[serde(default)]
    pub spec: Option<PodContainers>,
    #[serde(default)]
    pub status: Option<PodStatus>,
}

/// The names of a pod's containers, init containers first when listed.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodContainers {
    #[serde(default)]
    pub init_containers: Vec<ContainerName>,
    #[serde(default)]
    pub containers: Vec<ContainerName>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct ContainerName {
    pub name: String,
}

impl PodContainers {
    /// Every container's name, init containers first.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.init_containers
            .iter()
            .chain(&self.containers)
            .map(|c| c.name.as_str())
    }
}

/// The metadata the controller reads. The field managers (often larger than the rest of the
/// object), annotations, the labels it does not read and the like are skipped while parsing.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ReadMetadata {
    name: Option<String>,
    namespace: Option<String>,
    uid: Option<String>,
    resource_version: Option<String>,
    labels: Option<ReadLabels>,
    owner_references: Option<Vec<OwnerReference>>,
    creation_timestamp: Option<Time>,
    deletion_timestamp: Option<Time>,
}

pub(crate) fn read_metadata<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> Result<ObjectMeta, D::Error> {
    let read = ReadMetadata::deserialize(deserializer)?;
    Ok(ObjectMeta {
        name: read.name,
        namespace: read.namespace,
        uid: read.uid,
        resource_version: read.resource_version,
        labels: read.labels.map(|labels| labels.0),
        owner_references: read.owner_references,
        creation_timestamp: read.creation_timestamp,
        deletion_timestamp: read.deletion_timestamp,
        ..Default::default()
    })
}

/// The labels the controller reads of a Job or pod: the run it belongs to, and a pod's Job (the
/// Job controller sets both spellings). A Job and its pod carry a dozen labels (the task's, the
/// event's, the Job controller's): the rest are skipped while parsing.
const READ_LABELS: [&str; 3] = [
    crate::labels::RUN,
    "batch.kubernetes.io/job-name",
    "job-name",
];

struct ReadLabels(BTreeMap<String, String>);

impl<'de> Deserialize<'de> for ReadLabels {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Kept;

        impl<'de> Visitor<'de> for Kept {
            type Value = ReadLabels;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a map of labels")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ReadLabels, A::Error> {
                let mut kept = BTreeMap::new();
                while let Some(key) = map.next_key::<String>()? {
                    if READ_LABELS.contains(&key.as_str()) {
                        kept.insert(key, map.next_value()?);
                    } else {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
                Ok(ReadLabels(kept))
            }
        }

        deserializer.deserialize_map(Kept)
    }
}

/// Drops from a cached pod's status what the controller does not read: addresses, the QoS
/// class, container images and ids, resources, and every condition but `PodScheduled` (which
/// says when the scheduler cannot place the pod).
pub fn trim_pod_status(pod: &mut CachedPod) {
    let Some(status) = pod.status.as_mut() else {
        return;
    };
    *status = PodStatus {
        phase: status.phase.take(),
        conditions: status.conditions.take().map(|conditions| {
            conditions
                .into_iter()
                .filter(|c| c.type_ == "PodScheduled")
                .collect()
        }),
        init_container_statuses: status.init_container_statuses.take().map(trim_containers),
        container_statuses: status.container_statuses.take().map(trim_containers),
        ..Default::default()
    };
}

fn trim_containers(
    statuses: Vec<k8s_openapi::api::core::v1::ContainerStatus>,
) -> Vec<k8s_openapi::api::core::v1::ContainerStatus> {
    statuses
        .into_iter()
        .map(|c| k8s_openapi::api::core::v1::ContainerStatus {
            name: c.name,
            state: c.state,
            ready: c.ready,
            restart_count: c.restart_count,
            ..Default::default()
        })
        .collect()
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
        let mut pod: CachedPod = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {
                "name": "r-0-abc", "namespace": "jobs", "uid": "u", "resourceVersion": "7",
                "labels": {"batch.kubernetes.io/job-name": "r-0", "job-name": "r-0",
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
                "containerStatuses": [{"name": "task", "image": "y", "imageID": "sha",
                    "ready": true, "restartCount": 0,
                    "state": {"running": {"startedAt": "2026-12-02T00:00:00Z"}}}]
            }
        }))
        .unwrap();
        assert_eq!(pod.metadata.managed_fields, None);
        assert_eq!(pod.metadata.annotations, None);
        let labels = pod.metadata.labels.as_ref().unwrap();
        assert_eq!(
            labels.keys().collect::<Vec<_>>(),
            [
                "batch.kubernetes.io/job-name",
                "job-executor.dev/run",
                "job-name"
            ],
            "only the labels the controller reads"
        );
        assert_eq!(pod.metadata.resource_version.as_deref(), Some("7"));
        assert_eq!(
            pod.metadata.owner_references.as_ref().map(Vec::len),
            Some(1)
        );
        let spec = pod.spec.as_ref().unwrap();
        assert_eq!(spec.names().collect::<Vec<_>>(), ["stage", "task"]);
        trim_pod_status(&mut pod);
        assert_eq!(
            serde_json::to_value(pod.status.unwrap()).unwrap(),
            json!({
                "phase": "Running",
                "conditions": [{"type": "PodScheduled", "status": "True"}],
                "containerStatuses": [{"name": "task", "image": "", "imageID": "",
                    "ready": true, "restartCount": 0,
                    "state": {"running": {"startedAt": "2026-12-02T00:00:00Z"}}}]
            })
        );
    }

    #[test]
    fn a_job_is_read_with_its_owner_and_status() {
        let job: CachedJob = serde_json::from_value(json!({
            "metadata": {"name": "r-0", "ownerReferences": [{"apiVersion": "job-executor.dev/v1alpha1",
                "kind": "JobRun", "name": "r", "uid": "u", "controller": true}],
                "managedFields": [{"manager": "kube-controller-manager"}]},
            "spec": {"template": {"spec": {"containers": [{"name": "task", "image": "y"}]}}},
            "status": {"conditions": [{"type": "Complete", "status": "True"}]}
        }))
        .unwrap();
        assert_eq!(job.metadata.name.as_deref(), Some("r-0"));
        assert_eq!(job.metadata.managed_fields, None);
        assert_eq!(job.metadata.owner_references.unwrap()[0].name, "r");
        assert_eq!(job.status.unwrap().conditions.unwrap().len(), 1);
    }
}
