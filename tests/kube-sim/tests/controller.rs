#![allow(clippy::unwrap_used, clippy::expect_used)]
//! A kube-runtime Controller that owns Jobs and reacts to their status changes.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use kube_sim::{Behavior, ImageRule, Sim, wait_until};
use serde_json::json;

#[derive(Debug, thiserror::Error)]
#[error(transparent)]
struct Error(#[from] kube::Error);

async fn reconcile(req: Arc<ConfigMap>, client: Arc<kube::Client>) -> Result<Action, Error> {
    let ns = req.namespace().unwrap();
    let jobs: Api<Job> = Api::namespaced((*client).clone(), &ns);
    let name = format!("{}-job", req.name_any());
    let owner = req.controller_owner_ref(&()).unwrap();
    let job: Job = serde_json::from_value(json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": name, "ownerReferences": [owner]},
        "spec": {"backoffLimit": 0, "template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "main", "image": "task:1"}]}}}
    })).unwrap();
    let job = jobs
        .patch(
            &name,
            &PatchParams::apply("ctl").force(),
            &Patch::Apply(&job),
        )
        .await?;
    let done = job
        .status
        .and_then(|s| s.conditions)
        .unwrap_or_default()
        .into_iter()
        .find(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True");
    if let Some(c) = done {
        let cms: Api<ConfigMap> = Api::namespaced((*client).clone(), &ns);
        cms.patch(
            &req.name_any(),
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"result": c.type_}})),
        )
        .await?;
    }
    Ok(Action::await_change())
}

#[tokio::test]
async fn controller_reacts_to_owned_job_status() {
    let sim = Sim::start().await.unwrap();
    sim.runtime()
        .set(ImageRule::image("task:*"), Behavior::hold());
    let client = sim.client();
    let cms: Api<ConfigMap> = Api::default_namespaced(client.clone());
    let jobs: Api<Job> = Api::default_namespaced(client.clone());
    let ctl = Controller::new(
        cms.clone(),
        watcher::Config::default().labels("kind=request"),
    )
    .owns(jobs, watcher::Config::default())
    .run(
        reconcile,
        |_, _, _| Action::requeue(Duration::from_millis(50)),
        Arc::new(client.clone()),
    )
    .for_each(|_| async {});
    let task = tokio::spawn(ctl);

    let req: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "r1", "labels": {"kind": "request"}}}))
            .unwrap();
    cms.create(&PostParams::default(), &req).await.unwrap();
    let t = Duration::from_secs(10);
    wait_until(
        || {
            sim.get_object("batch", "jobs", "default", "r1-job")
                .is_some()
        },
        t,
    )
    .await
    .unwrap();
    wait_until(|| !sim.runtime().held().is_empty(), t)
        .await
        .unwrap();
    assert!(
        sim.get_object("", "configmaps", "default", "r1")
            .unwrap()
            .get("data")
            .is_none()
    );
    // The child's status change (Job completes) triggers the parent's reconcile.
    sim.release("r1-job");
    wait_until(
        || {
            sim.get_object("", "configmaps", "default", "r1").unwrap()["data"]["result"]
                == "Complete"
        },
        t,
    )
    .await
    .unwrap();
    // Deleting the parent cascades to the Job and its pods.
    cms.delete("r1", &Default::default()).await.unwrap();
    wait_until(
        || {
            sim.get_object("batch", "jobs", "default", "r1-job")
                .is_none()
        },
        t,
    )
    .await
    .unwrap();
    wait_until(
        || sim.list_objects("", "pods", Some("default")).is_empty(),
        t,
    )
    .await
    .unwrap();
    task.abort();
}
