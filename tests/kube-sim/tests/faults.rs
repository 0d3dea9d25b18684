#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Fault injection, outages, the request log and the time scale.

use std::time::{Duration, Instant};

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, PostParams};
use kube_sim::{Behavior, FaultRule, ImageRule, Sim, wait_until};
use serde_json::json;

fn cm(name: &str) -> ConfigMap {
    serde_json::from_value(json!({"metadata": {"name": name}})).unwrap()
}

fn code(e: kube::Error) -> u16 {
    match e {
        kube::Error::Api(s) => s.code,
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test]
async fn injected_failures_latency_and_request_log() {
    let sim = Sim::start().await.unwrap();
    let cms: Api<ConfigMap> = Api::default_namespaced(sim.client());
    sim.faults().fail_next(
        FaultRule::new(500)
            .verb("create")
            .resource("configmaps")
            .name("x-*")
            .times(2),
    );
    sim.faults().fail_next(FaultRule {
        verb: "get".into(),
        status: 429,
        retry_after: Some(1),
        ..Default::default()
    });
    let mark = sim.request_mark();
    assert_eq!(
        code(
            cms.create(&PostParams::default(), &cm("x-1"))
                .await
                .unwrap_err()
        ),
        500
    );
    cms.create(&PostParams::default(), &cm("other"))
        .await
        .unwrap();
    assert_eq!(
        code(
            cms.create(&PostParams::default(), &cm("x-1"))
                .await
                .unwrap_err()
        ),
        500
    );
    cms.create(&PostParams::default(), &cm("x-1"))
        .await
        .unwrap();
    // kube's client retries 429/503/504 itself (honouring Retry-After): the caller sees success.
    cms.get("x-1").await.unwrap();
    assert!(sim.faults().pending().is_empty());

    let log = sim.requests_since(mark);
    let summary: Vec<(String, String, String, u16)> = log
        .iter()
        .map(|r| (r.verb.clone(), r.resource.clone(), r.name.clone(), r.status))
        .collect();
    // A create is logged with the name from its body, as an audit log's objectRef.
    assert_eq!(
        summary[0],
        ("create".into(), "configmaps".into(), "x-1".into(), 500)
    );
    assert_eq!(summary.iter().filter(|s| s.3 == 201).count(), 2);
    let n = summary.len();
    assert_eq!(
        summary[n - 2],
        ("get".into(), "configmaps".into(), "x-1".into(), 429)
    );
    assert_eq!(
        summary[n - 1],
        ("get".into(), "configmaps".into(), "x-1".into(), 200)
    );
    assert!(
        log.iter()
            .all(|r| r.namespace == "default" && r.version == "v1")
    );

    sim.faults().latency(Duration::from_millis(150));
    let t = Instant::now();
    cms.get("x-1").await.unwrap();
    assert!(t.elapsed() >= Duration::from_millis(150));
    sim.faults().clear();
    sim.clear_requests();
    assert!(sim.requests().is_empty());
}

#[tokio::test]
async fn outages_refuse_or_hang() {
    let sim = Sim::start().await.unwrap();
    let cms: Api<ConfigMap> = Api::default_namespaced(sim.client());
    cms.create(&PostParams::default(), &cm("a")).await.unwrap();

    sim.pause().await;
    let t = Instant::now();
    assert!(cms.get("a").await.is_err());
    assert!(t.elapsed() < Duration::from_secs(2), "refused, not hanging");
    sim.resume().await.unwrap();
    cms.get("a").await.unwrap();

    sim.pause_hanging();
    let pending = tokio::spawn({
        let cms = cms.clone();
        async move { cms.get("a").await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!pending.is_finished(), "requests hang while paused");
    sim.resume().await.unwrap();
    pending.await.unwrap().unwrap();
}

#[tokio::test]
async fn time_scale_makes_long_tasks_fast() {
    // A five-minute task finishes within 10 s: the builder's scale, and then a scale set on a
    // running simulator that started at 1.
    let scaled = Sim::builder().time_scale(10_000.0).start().await.unwrap();
    let unscaled = Sim::builder().start().await.unwrap();
    unscaled.set_time_scale(10_000.0);
    for sim in [&scaled, &unscaled] {
        sim.runtime().set(
            ImageRule::image("long"),
            Behavior::succeed().after(Duration::from_secs(300)),
        );
        let jobs: Api<Job> = Api::default_namespaced(sim.client());
        let job: Job = serde_json::from_value(json!({"metadata": {"name": "five-min"}, "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "main", "image": "long"}]}}}})).unwrap();
        jobs.create(&PostParams::default(), &job).await.unwrap();
        wait_until(
            || {
                sim.get_object("batch", "jobs", "default", "five-min")
                    .is_some_and(|j| j["status"]["succeeded"] == 1)
            },
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    }
}

#[tokio::test]
async fn a_held_answer_comes_late_but_the_write_landed_at_once() {
    let sim = Sim::start().await.unwrap();
    let cms: Api<ConfigMap> = Api::default_namespaced(sim.client());
    sim.faults()
        .delay_answers("create", "configmaps", Duration::from_secs(30));
    let (params, held) = (PostParams::default(), cm("held"));
    let create = cms.create(&params, &held);
    // The client gives up before the answer comes; the object is stored all the same.
    assert!(
        tokio::time::timeout(Duration::from_millis(500), create)
            .await
            .is_err()
    );
    assert!(
        sim.get_object("", "configmaps", "default", "held")
            .is_some()
    );
    // Other requests are answered at once; ended, creates are too.
    cms.get("held").await.unwrap();
    sim.faults()
        .delay_answers("create", "configmaps", Duration::ZERO);
    let started = Instant::now();
    cms.create(&PostParams::default(), &cm("prompt"))
        .await
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(5));
}
