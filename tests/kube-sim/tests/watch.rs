#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Watches: kube-runtime watcher and reflector across dropped watches and 410 Expired,
//! bookmarks, selectors, server-side timeouts.

use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube_sim::{FaultRule, SimBuilder, wait_until};
use serde_json::json;

fn cm(name: &str, app: &str) -> ConfigMap {
    serde_json::from_value(
        json!({"metadata": {"name": name, "labels": {"app": app}}, "data": {"k": "v"}}),
    )
    .unwrap()
}

#[tokio::test]
async fn reflector_survives_dropped_watches_and_expired_history() {
    let sim = SimBuilder::default()
        .bookmark_interval(Duration::from_millis(50))
        .start()
        .await
        .unwrap();
    let cms: Api<ConfigMap> = Api::default_namespaced(sim.client());
    cms.create(&PostParams::default(), &cm("a", "x"))
        .await
        .unwrap();

    let (reader, writer) = reflector::store();
    let stream = reflector(
        writer,
        watcher(cms.clone(), watcher::Config::default().labels("app=x")),
    )
    .default_backoff()
    .applied_objects();
    let task = tokio::spawn(async move {
        let mut s = std::pin::pin!(stream);
        while s.next().await.is_some() {}
    });
    let has = |names: &[&str]| {
        let mut got: Vec<String> = reader
            .state()
            .iter()
            .map(|c| c.metadata.name.clone().unwrap())
            .collect();
        got.sort();
        got == names
    };
    let t = Duration::from_secs(10);
    wait_until(|| has(&["a"]), t).await.unwrap();

    // A dropped watch: the watcher re-watches from its last resourceVersion.
    let watches_before = sim.requests().iter().filter(|r| r.verb == "watch").count();
    sim.close_watches();
    cms.create(&PostParams::default(), &cm("b", "x"))
        .await
        .unwrap();
    cms.create(&PostParams::default(), &cm("ignored", "y"))
        .await
        .unwrap();
    wait_until(|| has(&["a", "b"]), t).await.unwrap();
    wait_until(
        || sim.requests().iter().filter(|r| r.verb == "watch").count() > watches_before,
        t,
    )
    .await
    .unwrap();

    // Label changes move objects in and out of the selector (ADDED / DELETED to the watcher).
    cms.patch(
        "ignored",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"app": "x"}}})),
    )
    .await
    .unwrap();
    wait_until(|| has(&["a", "b", "ignored"]), t).await.unwrap();
    cms.patch(
        "ignored",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"app": "z"}}})),
    )
    .await
    .unwrap();
    wait_until(|| has(&["a", "b"]), t).await.unwrap();

    // Expired history: the re-watch gets 410, the watcher re-lists.
    // Keep the watcher from re-watching while changes happen and the history is compacted.
    let lists_before = sim.requests().iter().filter(|r| r.verb == "list").count();
    sim.faults()
        .fail_next(FaultRule::new(500).verb("watch").times(1_000_000));
    sim.close_watches();
    cms.delete("a", &DeleteParams::default()).await.unwrap();
    cms.create(&PostParams::default(), &cm("c", "x"))
        .await
        .unwrap();
    sim.compact();
    sim.faults().clear();
    wait_until(|| has(&["b", "c"]), t).await.unwrap();
    assert!(
        sim.requests().iter().filter(|r| r.verb == "list").count() > lists_before,
        "re-listed after 410"
    );
    task.abort();
}

#[tokio::test]
async fn raw_watch_semantics() {
    let sim = SimBuilder::default()
        .bookmark_interval(Duration::from_millis(20))
        .start()
        .await
        .unwrap();
    let cms: Api<ConfigMap> = Api::default_namespaced(sim.client());
    let first = cms
        .create(&PostParams::default(), &cm("w1", "x"))
        .await
        .unwrap();
    let rv = first.metadata.resource_version.clone().unwrap();
    cms.create(&PostParams::default(), &cm("w2", "x"))
        .await
        .unwrap();
    cms.delete("w1", &DeleteParams::default()).await.unwrap();

    // From a resourceVersion: the later events in order, then bookmarks.
    let wp = WatchParams::default().timeout(1);
    let mut s = cms.watch(&wp, &rv).await.unwrap().boxed();
    let mut kinds = Vec::new();
    let started = std::time::Instant::now();
    while let Some(ev) = s.next().await {
        match ev.unwrap() {
            WatchEvent::Added(o) => kinds.push(format!("ADDED {}", o.metadata.name.unwrap())),
            WatchEvent::Deleted(o) => kinds.push(format!("DELETED {}", o.metadata.name.unwrap())),
            WatchEvent::Modified(o) => kinds.push(format!("MODIFIED {}", o.metadata.name.unwrap())),
            WatchEvent::Bookmark(b) => {
                assert!(!b.metadata.resource_version.is_empty());
                kinds.push("BOOKMARK".into());
            }
            WatchEvent::Error(e) => panic!("{e:?}"),
        }
    }
    // The server closed the stream after timeoutSeconds=1.
    assert!(started.elapsed() >= Duration::from_millis(900));
    assert_eq!(&kinds[..2], ["ADDED w2", "DELETED w1"]);
    assert!(kinds.iter().any(|k| k == "BOOKMARK"));

    // A compacted resourceVersion: an ERROR event with 410 Expired.
    sim.compact();
    let mut s = cms
        .watch(&WatchParams::default(), &rv)
        .await
        .unwrap()
        .boxed();
    match s.next().await.unwrap().unwrap() {
        WatchEvent::Error(e) => assert_eq!((e.code, e.reason.as_str()), (410, "Expired")),
        other => panic!("expected 410, got {other:?}"),
    }
}

/// An object that stops matching a watch's selector is sent as DELETED as it was when it last
/// matched, at the resourceVersion of the change (the real API server's watch cache does the
/// same: checked with `kubectl get cm -l app=x --watch --output-watch-events` on Kubernetes
/// 1.36).
#[tokio::test]
async fn an_object_leaving_the_selector_is_deleted_as_it_last_matched() {
    let sim = SimBuilder::default().start().await.unwrap();
    let cms: Api<ConfigMap> = Api::default_namespaced(sim.client());
    let first = cms
        .create(&PostParams::default(), &cm("leaves", "x"))
        .await
        .unwrap();
    let rv = first.metadata.resource_version.clone().unwrap();
    let wp = WatchParams::default().labels("app=x").timeout(1);
    let mut events = cms.watch(&wp, &rv).await.unwrap().boxed();
    let patch = json!({"metadata": {"labels": {"app": "y"}}});
    let changed = cms
        .patch("leaves", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    match events.next().await.unwrap().unwrap() {
        WatchEvent::Deleted(o) => {
            assert_eq!(o.metadata.labels.unwrap()["app"], "x");
            assert_eq!(
                o.metadata.resource_version,
                changed.metadata.resource_version
            );
        }
        other => panic!("expected DELETED, got {other:?}"),
    }
}
