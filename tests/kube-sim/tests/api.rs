#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The API server part: CRUD, conflicts, patches, selectors, paging, status subresource,
//! CRDs, owner-reference cascades and finalizers.

use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::core::{DynamicObject, GroupVersionKind};
use kube::discovery::ApiResource;
use kube_sim::{Sim, wait_until};
use serde_json::json;

fn cm(name: &str) -> ConfigMap {
    serde_json::from_value(
        json!({"metadata": {"name": name, "labels": {"app": "a"}}, "data": {"k": "v"}}),
    )
    .unwrap()
}

fn api_err(e: kube::Error) -> kube::core::Status {
    match e {
        kube::Error::Api(s) => *s,
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test]
async fn crud_conflicts_and_namespaces() {
    let sim = Sim::start().await.unwrap();
    let client = sim.client();
    let nss: Api<Namespace> = Api::all(client.clone());
    let names: Vec<String> = nss
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|n| n.metadata.name.unwrap())
        .collect();
    assert!(names.contains(&"default".to_string()) && names.contains(&"kube-system".to_string()));

    let cms: Api<ConfigMap> = Api::default_namespaced(client.clone());
    let created = cms.create(&PostParams::default(), &cm("a")).await.unwrap();
    let meta = &created.metadata;
    assert!(
        meta.uid.is_some() && meta.creation_timestamp.is_some() && meta.resource_version.is_some()
    );
    assert_eq!(meta.namespace.as_deref(), Some("default"));

    let dup = api_err(
        cms.create(&PostParams::default(), &cm("a"))
            .await
            .unwrap_err(),
    );
    assert_eq!((dup.code, dup.reason.as_str()), (409, "AlreadyExists"));
    assert_eq!(dup.message, "configmaps \"a\" already exists");

    // Update with the current resourceVersion works, a stale one conflicts.
    let mut fresh = created.clone();
    fresh.data = Some([("k".to_string(), "w".to_string())].into());
    let updated = cms
        .replace("a", &PostParams::default(), &fresh)
        .await
        .unwrap();
    assert_ne!(
        updated.metadata.resource_version,
        created.metadata.resource_version
    );
    let stale = api_err(
        cms.replace("a", &PostParams::default(), &fresh)
            .await
            .unwrap_err(),
    );
    assert_eq!((stale.code, stale.reason.as_str()), (409, "Conflict"));
    // A no-op update does not bump the resourceVersion.
    let same = cms
        .replace("a", &PostParams::default(), &updated)
        .await
        .unwrap();
    assert_eq!(
        same.metadata.resource_version,
        updated.metadata.resource_version
    );

    // generateName
    let mut g = cm("");
    g.metadata.name = None;
    g.metadata.generate_name = Some("gen-".into());
    let gen_obj = cms.create(&PostParams::default(), &g).await.unwrap();
    let gname = gen_obj.metadata.name.unwrap();
    assert!(gname.starts_with("gen-") && gname.len() == 9, "{gname}");

    // Missing namespace: 404 NotFound on the namespace.
    let missing: Api<ConfigMap> = Api::namespaced(client.clone(), "nope");
    let e = api_err(
        missing
            .create(&PostParams::default(), &cm("x"))
            .await
            .unwrap_err(),
    );
    assert_eq!(
        (e.code, e.reason.as_str(), e.message.as_str()),
        (404, "NotFound", "namespaces \"nope\" not found")
    );

    // Invalid label value: 422 Invalid.
    let mut bad = cm("bad");
    bad.metadata.labels = Some([("k".to_string(), "a:b".to_string())].into());
    let e = api_err(cms.create(&PostParams::default(), &bad).await.unwrap_err());
    assert_eq!((e.code, e.reason.as_str()), (422, "Invalid"));

    // Get / delete / NotFound.
    cms.get("a").await.unwrap();
    cms.delete("a", &DeleteParams::default()).await.unwrap();
    let e = api_err(cms.get("a").await.unwrap_err());
    assert_eq!(
        (e.code, e.reason.as_str(), e.message.as_str()),
        (404, "NotFound", "configmaps \"a\" not found")
    );

    // Namespace deletion removes its content.
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": "scratch"}})).unwrap();
    nss.create(&PostParams::default(), &ns).await.unwrap();
    let scratch: Api<ConfigMap> = Api::namespaced(client.clone(), "scratch");
    scratch
        .create(&PostParams::default(), &cm("c1"))
        .await
        .unwrap();
    nss.delete("scratch", &DeleteParams::default())
        .await
        .unwrap();
    wait_until(
        || sim.get_object("", "namespaces", "", "scratch").is_none(),
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    assert!(sim.get_object("", "configmaps", "scratch", "c1").is_none());

    // Content with a finalizer keeps a terminating namespace until the finalizer is removed.
    nss.create(&PostParams::default(), &ns).await.unwrap();
    let mut held = cm("held");
    held.metadata.finalizers = Some(vec!["example.com/hold".into()]);
    scratch.create(&PostParams::default(), &held).await.unwrap();
    nss.delete("scratch", &DeleteParams::default())
        .await
        .unwrap();
    wait_until(
        || {
            sim.get_object("", "configmaps", "scratch", "held")
                .is_some_and(|c| c["metadata"]["deletionTimestamp"].is_string())
        },
        Duration::from_secs(5),
    )
    .await
    .unwrap();
    assert!(sim.get_object("", "namespaces", "", "scratch").is_some());
    scratch
        .patch(
            "held",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": null}})),
        )
        .await
        .unwrap();
    wait_until(
        || sim.get_object("", "namespaces", "", "scratch").is_none(),
        Duration::from_secs(5),
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn selectors_and_paging() {
    let sim = Sim::start().await.unwrap();
    let cms: Api<ConfigMap> = Api::default_namespaced(sim.client());
    for (i, tier) in ["web", "web", "db", "cache", "web"].iter().enumerate() {
        let mut c = cm(&format!("c{i}"));
        c.metadata.labels = Some(
            [
                ("tier".to_string(), tier.to_string()),
                (format!("n{i}"), "x".to_string()),
            ]
            .into(),
        );
        cms.create(&PostParams::default(), &c).await.unwrap();
    }
    let names = |l: kube::core::ObjectList<ConfigMap>| -> Vec<String> {
        l.items
            .into_iter()
            .map(|c| c.metadata.name.unwrap())
            .collect()
    };
    let q = |s: &str| ListParams::default().labels(s);
    assert_eq!(
        names(cms.list(&q("tier=web")).await.unwrap()),
        ["c0", "c1", "c4"]
    );
    assert_eq!(
        names(cms.list(&q("tier!=web")).await.unwrap()),
        ["c2", "c3"]
    );
    assert_eq!(
        names(cms.list(&q("tier in (db,cache)")).await.unwrap()),
        ["c2", "c3"]
    );
    assert_eq!(
        names(cms.list(&q("tier notin (web,db)")).await.unwrap()),
        ["c3"]
    );
    assert_eq!(names(cms.list(&q("n1")).await.unwrap()), ["c1"]);
    assert_eq!(
        names(cms.list(&q("!n1,tier=web")).await.unwrap()),
        ["c0", "c4"]
    );
    assert_eq!(
        names(
            cms.list(&ListParams::default().fields("metadata.name=c2"))
                .await
                .unwrap()
        ),
        ["c2"]
    );
    assert_eq!(
        names(
            cms.list(&ListParams::default().fields("metadata.name!=c2,metadata.namespace=default"))
                .await
                .unwrap()
        )
        .len(),
        4
    );
    let e = api_err(
        cms.list(&ListParams::default().fields("data.k=v"))
            .await
            .unwrap_err(),
    );
    assert_eq!(
        (e.code, e.message.as_str()),
        (400, "field label not supported: data.k")
    );

    // Paging: limit + continue, all pages carry the list resourceVersion.
    let mut seen = Vec::new();
    let mut lp = ListParams::default().limit(2);
    loop {
        let page = cms.list(&lp).await.unwrap();
        assert!(page.metadata.resource_version.is_some());
        let cont = page.metadata.continue_.clone();
        seen.extend(names(page));
        match cont.filter(|c| !c.is_empty()) {
            Some(c) => lp = lp.continue_token(&c),
            None => break,
        }
    }
    assert_eq!(seen, ["c0", "c1", "c2", "c3", "c4"]);

    // deletecollection with a selector.
    cms.delete_collection(&DeleteParams::default(), &q("tier=web"))
        .await
        .unwrap();
    assert_eq!(
        names(cms.list(&ListParams::default()).await.unwrap()),
        ["c2", "c3"]
    );
}

#[tokio::test]
async fn patch_formats_and_server_side_apply() {
    let sim = Sim::start().await.unwrap();
    let cms: Api<ConfigMap> = Api::default_namespaced(sim.client());
    cms.create(&PostParams::default(), &cm("p")).await.unwrap();
    let merge = cms
        .patch(
            "p",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"m": "1", "k": null}})),
        )
        .await
        .unwrap();
    assert_eq!(
        merge.data.unwrap(),
        [("m".to_string(), "1".to_string())].into()
    );
    let strategic = cms
        .patch(
            "p",
            &PatchParams::default(),
            &Patch::Strategic(json!({"metadata": {"labels": {"s": "1"}}})),
        )
        .await
        .unwrap();
    assert_eq!(
        strategic
            .metadata
            .labels
            .unwrap()
            .get("s")
            .map(String::as_str),
        Some("1")
    );
    let jp: json_patch_ops::Ops =
        json_patch_ops::ops(json!([{"op": "add", "path": "/data/j", "value": "2"}]));
    let jsonp = cms
        .patch("p", &PatchParams::default(), &Patch::<()>::Json(jp))
        .await
        .unwrap();
    assert_eq!(jsonp.data.unwrap().get("j").map(String::as_str), Some("2"));
    // A failing JSON patch test is 422.
    let jp = json_patch_ops::ops(json!([{"op": "test", "path": "/data/j", "value": "nope"}]));
    let e = api_err(
        cms.patch("p", &PatchParams::default(), &Patch::<()>::Json(jp))
            .await
            .unwrap_err(),
    );
    assert_eq!(e.code, 422);

    // Server-side apply: creates, owns fields, removes fields it no longer applies,
    // conflicts with another manager unless forced.
    let pp = PatchParams::apply("mgr-a");
    let applied = cms.patch("ssa", &pp, &Patch::Apply(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ssa"}, "data": {"x": "1", "y": "2"}}))).await.unwrap();
    assert_eq!(applied.data.as_ref().unwrap().len(), 2);
    assert_eq!(
        applied.metadata.managed_fields.as_ref().unwrap()[0]
            .manager
            .as_deref(),
        Some("mgr-a")
    );
    let rv = applied.metadata.resource_version.clone();
    let again = cms.patch("ssa", &pp, &Patch::Apply(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ssa"}, "data": {"x": "1", "y": "2"}}))).await.unwrap();
    assert_eq!(
        again.metadata.resource_version, rv,
        "a no-op apply must not write"
    );
    let shrunk = cms.patch("ssa", &pp, &Patch::Apply(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ssa"}, "data": {"x": "1"}}))).await.unwrap();
    assert_eq!(
        shrunk.data.unwrap(),
        [("x".to_string(), "1".to_string())].into()
    );
    let other = PatchParams::apply("mgr-b");
    let e = api_err(
        cms.patch(
            "ssa",
            &other,
            &Patch::Apply(json!({"apiVersion": "v1", "kind": "ConfigMap", "data": {"x": "9"}})),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!((e.code, e.reason.as_str()), (409, "Conflict"));
    let forced = cms
        .patch(
            "ssa",
            &other.force(),
            &Patch::Apply(json!({"apiVersion": "v1", "kind": "ConfigMap", "data": {"x": "9"}})),
        )
        .await
        .unwrap();
    assert_eq!(forced.data.unwrap().get("x").map(String::as_str), Some("9"));
    let fm: Vec<String> = sim
        .requests()
        .iter()
        .filter(|r| r.verb == "patch")
        .map(|r| r.field_manager.clone())
        .collect();
    assert!(fm.contains(&"mgr-a".to_string()) && fm.contains(&"mgr-b".to_string()));
}

/// `kube::api::Patch::Json` takes a `json_patch::Patch`.
mod json_patch_ops {
    pub type Ops = json_patch::Patch;
    pub fn ops(v: serde_json::Value) -> Ops {
        serde_json::from_value(v).unwrap()
    }
}

const CRD: &str = r#"{
  "apiVersion": "apiextensions.k8s.io/v1",
  "kind": "CustomResourceDefinition",
  "metadata": {"name": "tasks.example.com"},
  "spec": {
    "group": "example.com",
    "scope": "Namespaced",
    "names": {"plural": "tasks", "singular": "task", "kind": "Task", "shortNames": ["tk"]},
    "versions": [{
      "name": "v1", "served": true, "storage": true,
      "subresources": {"status": {}},
      "additionalPrinterColumns": [{"name": "Phase", "type": "string", "jsonPath": ".status.phase"}],
      "schema": {"openAPIV3Schema": {"type": "object", "properties": {
        "spec": {"type": "object", "properties": {"image": {"type": "string"}, "retries": {"type": "integer", "default": 2}}},
        "status": {"type": "object", "properties": {"phase": {"type": "string"}}}
      }}}
    }]
  }
}"#;

#[tokio::test]
async fn crd_then_custom_resources_with_status_subresource() {
    let sim = Sim::start().await.unwrap();
    let client = sim.client();
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd: CustomResourceDefinition = serde_json::from_str(CRD).unwrap();
    crds.create(&PostParams::default(), &crd).await.unwrap();
    let est = kube::runtime::wait::await_condition(
        crds.clone(),
        "tasks.example.com",
        kube::runtime::conditions::is_crd_established(),
    );
    tokio::time::timeout(Duration::from_secs(5), est)
        .await
        .unwrap()
        .unwrap();

    // Discovery lists the new group.
    let discovery = kube::Discovery::new(client.clone()).run().await.unwrap();
    assert!(discovery.groups().any(|g| g.name() == "example.com"));

    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("example.com", "v1", "Task"),
        "tasks",
    );
    let tasks: Api<DynamicObject> = Api::namespaced_with(client.clone(), "default", &ar);
    let obj: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "example.com/v1", "kind": "Task", "metadata": {"name": "t1"},
        "spec": {"image": "busybox", "unknown": true}, "status": {"phase": "Ignored"}
    }))
    .unwrap();
    let created = tasks.create(&PostParams::default(), &obj).await.unwrap();
    assert_eq!(created.metadata.generation, Some(1));
    assert_eq!(
        created.data["spec"],
        json!({"image": "busybox", "retries": 2}),
        "pruned and defaulted"
    );
    assert!(
        created.data.get("status").is_none(),
        "create ignores status"
    );

    // /status changes only status, and does not bump generation.
    let st = tasks
        .patch_status(
            "t1",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Running"}, "spec": {"image": "other"}})),
        )
        .await
        .unwrap();
    assert_eq!(st.data["status"]["phase"], "Running");
    assert_eq!(st.data["spec"]["image"], "busybox");
    assert_eq!(st.metadata.generation, Some(1));
    // Main resource ignores status; spec change bumps generation; metadata-only does not.
    let main = tasks
        .patch(
            "t1",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "X"}, "spec": {"image": "new"}})),
        )
        .await
        .unwrap();
    assert_eq!(main.data["status"]["phase"], "Running");
    assert_eq!(main.metadata.generation, Some(2));
    let labels = tasks
        .patch(
            "t1",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"a": "b"}}})),
        )
        .await
        .unwrap();
    assert_eq!(labels.metadata.generation, Some(2));
    // Server-side apply on status, as operators do.
    let ssa = tasks.patch_status("t1", &PatchParams::apply("op").force(), &Patch::Apply(json!({"apiVersion": "example.com/v1", "kind": "Task", "status": {"phase": "Done"}}))).await.unwrap();
    assert_eq!(ssa.data["status"]["phase"], "Done");
    // As the real server (Kubernetes v1.36.3, checked by hand): no strategic merge for custom
    // resources, whose lists have no keys to merge by; names are DNS subdomains.
    let strategic = tasks
        .patch(
            "t1",
            &PatchParams::default(),
            &Patch::Strategic(json!({"spec": {"image": "x"}})),
        )
        .await
        .unwrap_err();
    let e = api_err(strategic);
    assert_eq!(e.code, 415);
    assert_eq!(
        e.message,
        "application/strategic-merge-patch+json is not supported by example.com/v1, Kind=Task: \
         the body of the request was in an unknown format - accepted media types include: \
         application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml"
    );
    let mut bad_name = obj.clone();
    bad_name.metadata.name = Some("Bad_Name".into());
    let e = api_err(
        tasks
            .create(&PostParams::default(), &bad_name)
            .await
            .unwrap_err(),
    );
    assert_eq!(e.code, 422);
    assert!(
        e.message
            .contains("metadata.name: Invalid value: \"Bad_Name\""),
        "{}",
        e.message
    );

    // Numbers as the real server's unstructured JSON reads them (checked on Kubernetes
    // v1.36.3): whole ones as integers, so `3.0` passes as an integer and reads back as `3`.
    let whole = tasks
        .patch(
            "t1",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"retries": 3.0}})),
        )
        .await
        .unwrap();
    assert_eq!(whole.data["spec"]["retries"].to_string(), "3");
    // A `/status` write is validated in its status only: a spec the schema now refuses (the
    // CRD changed under the stored object) does not stop it.
    let mut changed: CustomResourceDefinition = serde_json::from_str(CRD).unwrap();
    let mut text = serde_json::to_value(&changed).unwrap().to_string();
    text = text.replace(
        r#""image":{"type":"string"}"#,
        r#""image":{"type":"integer"}"#,
    );
    let stored = crds.get("tasks.example.com").await.unwrap();
    changed = serde_json::from_str(&text).unwrap();
    changed.metadata.resource_version = stored.metadata.resource_version;
    crds.replace("tasks.example.com", &PostParams::default(), &changed)
        .await
        .unwrap();
    let st = tasks
        .patch_status(
            "t1",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Later"}})),
        )
        .await
        .unwrap();
    assert_eq!(st.data["status"]["phase"], "Later");
    let e = api_err(
        tasks
            .patch_status(
                "t1",
                &PatchParams::default(),
                &Patch::Merge(json!({"status": {"phase": 7}})),
            )
            .await
            .unwrap_err(),
    );
    assert_eq!(e.code, 422, "{e:?}");

    // Deleting the CRD removes the resources and the API; an open watch sees the resources
    // deleted and then ends, as the real server's (its watch cache of the resource stops).
    let mut watching = tasks
        .watch(&kube::api::WatchParams::default(), "0")
        .await
        .unwrap()
        .boxed();
    crds.delete("tasks.example.com", &DeleteParams::default())
        .await
        .unwrap();
    let e = api_err(tasks.get("t1").await.unwrap_err());
    assert_eq!(e.code, 404);
    let mut deleted = false;
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(event) = watching.next().await {
            if let Ok(kube::api::WatchEvent::Deleted(task)) = event {
                deleted |= task.metadata.name.as_deref() == Some("t1");
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the watch did not end");
    assert!(deleted, "the deletion was not seen");
}

#[tokio::test]
async fn owner_references_cascade_and_finalizers() {
    let sim = Sim::start().await.unwrap();
    let cms: Api<ConfigMap> = Api::default_namespaced(sim.client());
    let child_of = |name: &str, owner: &ConfigMap, finalizer: bool| -> ConfigMap {
        let mut c = cm(name);
        c.metadata.owner_references = Some(vec![
            k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
                api_version: "v1".into(),
                kind: "ConfigMap".into(),
                name: owner.metadata.name.clone().unwrap(),
                uid: owner.metadata.uid.clone().unwrap(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            },
        ]);
        if finalizer {
            c.metadata.finalizers = Some(vec!["example.com/hold".into()]);
        }
        c
    };
    let gone = |name: &'static str| {
        let sim = &sim;
        move || sim.get_object("", "configmaps", "default", name).is_none()
    };
    let secs = Duration::from_secs(5);

    // Background (default for configmaps).
    let p = cms.create(&PostParams::default(), &cm("bg")).await.unwrap();
    cms.create(&PostParams::default(), &child_of("bg-child", &p, false))
        .await
        .unwrap();
    cms.delete("bg", &DeleteParams::background()).await.unwrap();
    wait_until(gone("bg-child"), secs).await.unwrap();

    // Orphan keeps the child and drops the owner reference.
    let p = cms.create(&PostParams::default(), &cm("or")).await.unwrap();
    cms.create(&PostParams::default(), &child_of("or-child", &p, false))
        .await
        .unwrap();
    cms.delete("or", &DeleteParams::orphan()).await.unwrap();
    wait_until(gone("or"), secs).await.unwrap();
    let child = cms.get("or-child").await.unwrap();
    assert!(
        child
            .metadata
            .owner_references
            .unwrap_or_default()
            .is_empty()
    );

    // Foreground: the owner waits (deletionTimestamp set) for a child held by a finalizer.
    let p = cms.create(&PostParams::default(), &cm("fg")).await.unwrap();
    cms.create(&PostParams::default(), &child_of("fg-child", &p, true))
        .await
        .unwrap();
    let resp = cms.delete("fg", &DeleteParams::foreground()).await.unwrap();
    assert!(resp.is_left(), "the owner is still there");
    wait_until(
        || {
            sim.get_object("", "configmaps", "default", "fg-child")
                .is_some_and(|c| c["metadata"]["deletionTimestamp"].is_string())
        },
        secs,
    )
    .await
    .unwrap();
    let owner = cms.get("fg").await.unwrap();
    assert!(owner.metadata.deletion_timestamp.is_some());
    assert!(
        owner
            .metadata
            .finalizers
            .unwrap()
            .contains(&"foregroundDeletion".to_string())
    );
    // Adding a finalizer to an object being deleted is rejected.
    let e = api_err(
        cms.patch(
            "fg-child",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": ["example.com/hold", "new"]}})),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(e.code, 422);
    // Removing the finalizer lets both go.
    cms.patch(
        "fg-child",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    wait_until(gone("fg-child"), secs).await.unwrap();
    wait_until(gone("fg"), secs).await.unwrap();

    // A finalizer alone keeps an object with a deletionTimestamp.
    let mut f = cm("fin");
    f.metadata.finalizers = Some(vec!["example.com/x".into()]);
    cms.create(&PostParams::default(), &f).await.unwrap();
    cms.delete("fin", &DeleteParams::default()).await.unwrap();
    assert!(
        cms.get("fin")
            .await
            .unwrap()
            .metadata
            .deletion_timestamp
            .is_some()
    );
    cms.patch(
        "fin",
        &PatchParams::default(),
        &Patch::Json::<()>(json_patch_ops::ops(
            json!([{"op": "remove", "path": "/metadata/finalizers/0"}]),
        )),
    )
    .await
    .unwrap();
    wait_until(gone("fin"), secs).await.unwrap();

    // Marked deleting, an object with a generation moves it on, as the API server does.
    let jobs: Api<k8s_openapi::api::batch::v1::Job> = Api::default_namespaced(sim.client());
    let job: k8s_openapi::api::batch::v1::Job = serde_json::from_value(json!({
        "metadata": {"name": "held", "finalizers": ["example.com/x"]},
        "spec": {"suspend": true, "template": {"spec": {"restartPolicy": "Never",
            "containers": [{"name": "c", "image": "alpine"}]}}}
    }))
    .unwrap();
    let created = jobs.create(&PostParams::default(), &job).await.unwrap();
    assert_eq!(created.metadata.generation, Some(1));
    jobs.delete("held", &DeleteParams::default()).await.unwrap();
    assert_eq!(jobs.get("held").await.unwrap().metadata.generation, Some(2));
}
