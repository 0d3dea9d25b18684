#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Thousands of Jobs at once: the Job controller and the garbage collector do work per event
//! proportional to the objects it touches, so 2,000 held Jobs all get a Running pod, and a
//! background delete of all of them removes every pod. The timeouts are failure guards only.

use std::time::Duration;

use futures_util::{StreamExt, TryStreamExt, stream};
use k8s_openapi::api::batch::v1::Job;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube_sim::{Behavior, ImageRule, Sim};
use serde_json::json;

const JOBS: usize = 2_000;
const GUARD: Duration = Duration::from_secs(120);

fn held_job(i: usize) -> Job {
    serde_json::from_value(json!({
        "metadata": {"name": format!("hold-{i}")},
        "spec": {"template": {"spec": {"restartPolicy": "Never",
            "containers": [{"name": "main", "image": "bench:hold"}]}}}
    }))
    .unwrap()
}

/// Waits for `cond` until `GUARD`; polls every 100 ms, since each look copies thousands of
/// pods (`wait_until` polls every 10 ms).
async fn wait_for(mut cond: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + GUARD;
    while !cond() {
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    true
}

fn count_pods(sim: &Sim, phase: &str) -> usize {
    sim.list_objects("", "pods", Some("default"))
        .iter()
        .filter(|p| p["status"]["phase"] == phase)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_held_jobs_all_run_and_are_collected() {
    let sim = Sim::start().await.unwrap();
    sim.runtime()
        .set(ImageRule::image("bench:hold"), Behavior::hold());
    let jobs: Api<Job> = Api::default_namespaced(sim.client());
    stream::iter(0..JOBS)
        .map(|i| {
            let jobs = jobs.clone();
            async move { jobs.create(&PostParams::default(), &held_job(i)).await }
        })
        .buffer_unordered(16)
        .try_for_each(|_| async { Ok(()) })
        .await
        .unwrap();

    assert!(
        wait_for(|| count_pods(&sim, "Running") == JOBS).await,
        "only {} of {JOBS} pods Running",
        count_pods(&sim, "Running")
    );
    let listed = jobs.list(&ListParams::default()).await.unwrap();
    assert_eq!(listed.items.len(), JOBS);
    assert!(
        listed
            .items
            .iter()
            .all(|j| j.status.as_ref().and_then(|s| s.active) == Some(1)),
        "every Job counts its one active pod"
    );

    // Background propagation: the collector removes the pods once their Jobs are gone.
    jobs.delete_collection(&DeleteParams::background(), &ListParams::default())
        .await
        .unwrap();
    assert!(
        wait_for(|| sim.list_objects("", "pods", Some("default")).is_empty()).await,
        "{} pods left after deleting their Jobs",
        sim.list_objects("", "pods", Some("default")).len()
    );
    assert!(
        sim.list_objects("batch", "jobs", Some("default"))
            .is_empty()
    );
}
