//! The write paths every request and every simulated controller goes through: create, update
//! (including `/status`), patch and delete, with the generic metadata rules of the API server.

use serde_json::{Value, json};

use crate::Shared;
use crate::api::patch;
use crate::error::ApiError;
use crate::kinds;
use crate::resources::ResourceInfo;
use crate::store::{Change, Outcome};
use crate::util;

/// Options shared by write requests.
#[derive(Debug, Clone, Default)]
pub struct WriteOpts {
    pub dry_run: bool,
    pub field_manager: Option<String>,
    pub force: bool,
}

/// Deletion propagation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Propagation {
    Orphan,
    Background,
    Foreground,
}

/// `DeleteOptions` as far as the simulator honours them.
#[derive(Debug, Clone, Default)]
pub struct DeleteOpts {
    pub propagation: Option<Propagation>,
    pub precondition_uid: Option<String>,
    pub precondition_rv: Option<String>,
    pub dry_run: bool,
}

impl DeleteOpts {
    pub fn background() -> Self {
        DeleteOpts {
            propagation: Some(Propagation::Background),
            ..Default::default()
        }
    }
    pub fn foreground() -> Self {
        DeleteOpts {
            propagation: Some(Propagation::Foreground),
            ..Default::default()
        }
    }
}

/// The result of a delete: removed now, or kept (being deleted, waiting for finalizers).
pub enum Deleted {
    Gone(Value),
    Pending(Value),
}

fn body_object(body: Value) -> Result<Value, ApiError> {
    if body.is_object() {
        Ok(body)
    } else {
        Err(ApiError::bad_request(
            "the body of the request was not a JSON object",
        ))
    }
}

/// Checks that the namespace exists and is not terminating.
pub fn check_namespace(shared: &Shared, ns: &str) -> Result<(), ApiError> {
    match shared
        .store
        .get(&(String::new(), "namespaces".into()), "", ns)
    {
        None => Err(ApiError::not_found("", "namespaces", ns)),
        Some(n) if util::is_deleting(&n) => Err(ApiError::forbidden(format!(
            "unable to create new content in namespace {ns} because it is being terminated"
        ))
        .with_details(json!({"name": ns, "kind": "namespaces"}))),
        Some(_) => Ok(()),
    }
}

fn spec_view(info: &ResourceInfo, obj: &Value) -> Value {
    let mut v = obj.clone();
    if let Some(m) = v.as_object_mut() {
        m.remove("metadata");
        m.remove("apiVersion");
        m.remove("kind");
        if info.status {
            m.remove("status");
        }
    }
    v
}

/// Creates an object. `url_ns` is the namespace of the request path ("" for cluster scope).
pub fn create(
    shared: &Shared,
    info: &ResourceInfo,
    url_ns: &str,
    body: Value,
    opts: &WriteOpts,
) -> Result<Value, ApiError> {
    let mut obj = body_object(body)?;
    if let Some(m) = obj.as_object_mut() {
        m.insert("apiVersion".into(), json!(info.api_version()));
        m.insert("kind".into(), json!(info.kind));
    }
    let ns = if info.namespaced {
        let body_ns = util::namespace(&obj).to_string();
        if !body_ns.is_empty() && !url_ns.is_empty() && body_ns != url_ns {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
        let ns = if url_ns.is_empty() {
            body_ns
        } else {
            url_ns.to_string()
        };
        if ns.is_empty() {
            return Err(ApiError::bad_request("the namespace must be set"));
        }
        check_namespace(shared, &ns)?;
        util::meta_mut(&mut obj).insert("namespace".into(), json!(ns));
        ns
    } else {
        util::meta_mut(&mut obj).remove("namespace");
        String::new()
    };
    let generate = util::meta_str(&obj, "generateName").map(str::to_string);
    let explicit = util::name(&obj).to_string();
    if explicit.is_empty() && generate.as_deref().unwrap_or("").is_empty() {
        return Err(ApiError::invalid(
            &info.group,
            &info.kind,
            "",
            "metadata.name",
            "Required value: name or generateName is required",
        ));
    }
    // The real storage refuses a create that names a version (an object read back and posted
    // again; kubectl drops it first), before it looks whether the name is taken; a dry run
    // never reaches it.
    let version_set = util::meta_str(&obj, "resourceVersion")
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|v| v != 0);
    {
        let uid = util::new_uid();
        let m = util::meta_mut(&mut obj);
        for k in [
            "resourceVersion",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "selfLink",
        ] {
            m.remove(k);
        }
        m.insert("uid".into(), json!(uid));
        m.insert("creationTimestamp".into(), json!(util::now_rfc3339()));
        if info.generation {
            m.insert("generation".into(), json!(1));
        } else {
            m.remove("generation");
        }
    }
    kinds::initial_status(info, &mut obj);
    for attempt in 0..8 {
        let mut candidate = obj.clone();
        let name = if explicit.is_empty() {
            let prefix: String = generate
                .clone()
                .unwrap_or_default()
                .chars()
                .take(58)
                .collect();
            format!("{prefix}{}", util::random_suffix(5))
        } else {
            explicit.clone()
        };
        util::meta_mut(&mut candidate).insert("name".into(), json!(name));
        kinds::validate_meta(info, &candidate)?;
        kinds::default_and_validate(info, &mut candidate, None)?;
        if info.group.is_empty() && info.plural == "pods" {
            shared.admission.admit_pod(&candidate)?;
        }
        let mut stored = None;
        let result = shared.store.modify(&info.key(), &ns, &name, |existing| {
            if version_set && !opts.dry_run {
                return Err(ApiError::new(
                    500,
                    "",
                    "resourceVersion should not be set on objects to be created",
                ));
            }
            if existing.is_some() {
                return Err(ApiError::already_exists(&info.group, &info.plural, &name));
            }
            if opts.dry_run {
                stored = Some(candidate.clone());
                return Ok(Change::Keep);
            }
            Ok(Change::Put(candidate))
        });
        match result {
            Err(e) if e.code == 409 && explicit.is_empty() && attempt < 7 => continue,
            Err(e) => return Err(e),
            Ok(Outcome::Stored(v)) => {
                return after_write(shared, info, v);
            }
            Ok(_) => return stored.ok_or_else(|| ApiError::internal("dry run produced nothing")),
        }
    }
    Err(ApiError::internal("could not generate a unique name"))
}

/// Hooks that run after a successful write (CRD registration).
fn after_write(shared: &Shared, info: &ResourceInfo, obj: Value) -> Result<Value, ApiError> {
    if info.group == "apiextensions.k8s.io" && info.plural == "customresourcedefinitions" {
        return crate::crd::established(shared, obj);
    }
    Ok(obj)
}

/// Computes the stored form of an update of `old` to `candidate` (main resource or `status`).
fn finish_update(
    info: &ResourceInfo,
    old: &Value,
    candidate: Value,
    subresource: &str,
    keep_managed: bool,
) -> Result<Value, ApiError> {
    let mut new = body_object(candidate)?;
    let candidate_managed = util::meta(&new)
        .and_then(|m| m.get("managedFields"))
        .cloned();
    let name = util::name(old).to_string();
    let body_name = util::name(&new).to_string();
    if !body_name.is_empty() && body_name != name {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({body_name}) does not match the name on the URL ({name})"
        )));
    }
    if subresource == "status" {
        let mut result = old.clone();
        if let Some(m) = result.as_object_mut() {
            match new.get("status") {
                Some(s) => {
                    m.insert("status".into(), s.clone());
                }
                None => {
                    m.remove("status");
                }
            }
        }
        if info.crd {
            kinds::default_and_validate_status(info, &mut result)?;
        }
        if keep_managed && let Some(mf) = candidate_managed {
            util::meta_mut(&mut result).insert("managedFields".into(), mf);
        }
        return Ok(result);
    }
    if let Some(m) = new.as_object_mut() {
        m.insert("apiVersion".into(), json!(info.api_version()));
        m.insert("kind".into(), json!(info.kind));
    }
    {
        let old_meta = util::meta(old).cloned().unwrap_or_default();
        let m = util::meta_mut(&mut new);
        for k in [
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
            "namespace",
            "name",
            "managedFields",
        ] {
            match old_meta.get(k) {
                Some(v) => {
                    m.insert(k.into(), v.clone());
                }
                None => {
                    m.remove(k);
                }
            }
        }
        m.remove("generateName");
        if let Some(g) = old_meta.get("generateName") {
            m.insert("generateName".into(), g.clone());
        }
    }
    if info.status
        && let Some(m) = new.as_object_mut()
    {
        match old.get("status") {
            Some(s) => {
                m.insert("status".into(), s.clone());
            }
            None => {
                m.remove("status");
            }
        }
    }
    if util::is_deleting(old) {
        let before = util::finalizers(old);
        let added: Vec<String> = util::finalizers(&new)
            .into_iter()
            .filter(|f| !before.contains(f))
            .collect();
        if !added.is_empty() {
            return Err(ApiError::invalid(
                &info.group,
                &info.kind,
                &name,
                "metadata.finalizers",
                &format!(
                    "Forbidden: no new finalizers can be added if the object is being deleted, found new finalizers {added:?}"
                ),
            ));
        }
    }
    kinds::validate_meta(info, &new)?;
    kinds::default_and_validate(info, &mut new, Some(old))?;
    if info.generation && spec_view(info, old) != spec_view(info, &new) {
        let g = util::meta(old)
            .and_then(|m| m.get("generation"))
            .and_then(Value::as_i64)
            .unwrap_or(0);
        util::meta_mut(&mut new).insert("generation".into(), json!(g + 1));
    }
    if keep_managed && let Some(mf) = candidate_managed {
        util::meta_mut(&mut new).insert("managedFields".into(), mf);
    }
    Ok(new)
}

fn rv_of(v: &Value) -> &str {
    util::meta_str(v, "resourceVersion").unwrap_or("")
}

/// Read-modify-write of an existing object: `compute` turns the stored object into the
/// candidate (the request body, or the patched object). The candidate's resourceVersion, if
/// set, must match (optimistic concurrency).
#[allow(clippy::too_many_arguments)]
fn write_existing<F>(
    shared: &Shared,
    info: &ResourceInfo,
    ns: &str,
    name: &str,
    subresource: &str,
    opts: &WriteOpts,
    keep_managed: bool,
    compute: F,
) -> Result<Value, ApiError>
where
    F: FnOnce(&Value) -> Result<Value, ApiError>,
{
    let mut dry = None;
    let out = shared.store.modify(&info.key(), ns, name, |existing| {
        let old = existing.ok_or_else(|| ApiError::not_found(&info.group, &info.plural, name))?;
        let candidate = compute(old)?;
        let want_rv = rv_of(&candidate);
        if !want_rv.is_empty() && want_rv != rv_of(old) {
            return Err(ApiError::stale(&info.group, &info.plural, name));
        }
        let new = finish_update(info, old, candidate, subresource, keep_managed)?;
        if opts.dry_run {
            dry = Some(new);
            return Ok(Change::Keep);
        }
        Ok(Change::Put(new))
    })?;
    if let Some(d) = dry {
        return Ok(d);
    }
    match out {
        Outcome::Stored(v) => after_write(shared, info, v),
        Outcome::Deleted(v) => Ok(v),
        Outcome::Absent => Err(ApiError::not_found(&info.group, &info.plural, name)),
    }
}

/// PUT of the main resource or a subresource.
pub fn update(
    shared: &Shared,
    info: &ResourceInfo,
    ns: &str,
    name: &str,
    subresource: &str,
    body: Value,
    opts: &WriteOpts,
) -> Result<Updated, ApiError> {
    let body = body_object(body)?;
    if info.namespaced {
        let body_ns = util::namespace(&body);
        if !body_ns.is_empty() && body_ns != ns {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
    }
    let body_name = util::name(&body);
    if !body_name.is_empty() && body_name != name {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({body_name}) does not match the name on the URL ({name})"
        )));
    }
    let body_uid = util::meta_str(&body, "uid").unwrap_or("").to_string();
    // The update's precondition: the uid the body names (as read) is the stored object's. The
    // real server checks it before anything else, against nothing when the name is not there.
    let precondition_failed = |stored_uid: &str| {
        ApiError::conflict(
            &info.group,
            &info.plural,
            name,
            &format!(
                "StorageError: invalid object, Precondition failed: UID in precondition: \
                 {body_uid}, UID in object meta: {stored_uid}"
            ),
        )
    };
    if subresource.is_empty() && update_creates(shared, &info.group, &info.plural, ns, name) {
        if !body_uid.is_empty() {
            return Err(precondition_failed(""));
        }
        // A Lease is made by a PUT of its name (`AllowCreateOnUpdate`), whatever version the
        // body names.
        let mut body = body;
        util::meta_mut(&mut body).remove("resourceVersion");
        let object = create(shared, info, ns, body, opts)?;
        return Ok(Updated {
            object,
            created: true,
        });
    }
    let object = write_existing(shared, info, ns, name, subresource, opts, false, |old| {
        let stored_uid = util::uid(old);
        if !body_uid.is_empty() && body_uid != stored_uid {
            return Err(precondition_failed(stored_uid));
        }
        if rv_of(&body).is_empty() && !info.updates_unconditionally() {
            // The real server names the resource here, not the kind.
            return Err(ApiError::invalid(
                &info.group,
                &info.plural,
                name,
                "metadata.resourceVersion",
                "Invalid value: 0: must be specified for an update",
            ));
        }
        Ok(body)
    })?;
    Ok(Updated {
        object,
        created: false,
    })
}

/// What a PUT wrote: the object, and whether the PUT made it.
pub struct Updated {
    pub object: Value,
    pub created: bool,
}

/// Whether a PUT of `name` makes the object: a kind the real server lets a PUT create
/// (`AllowCreateOnUpdate`; of those kube-sim serves, Leases) and no such object yet. The real
/// server authorizes such a PUT as a `create` too, and answers 201.
pub fn update_creates(shared: &Shared, group: &str, plural: &str, ns: &str, name: &str) -> bool {
    group == "coordination.k8s.io"
        && plural == "leases"
        && shared
            .store
            .get(&(group.to_string(), plural.to_string()), ns, name)
            .is_none()
}

/// The patch formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    Merge,
    Json,
    Strategic,
    Apply,
}

impl PatchType {
    pub fn from_content_type(ct: &str) -> Option<Self> {
        let base = ct.split(';').next().unwrap_or("").trim();
        match base {
            "application/merge-patch+json" => Some(PatchType::Merge),
            "application/json-patch+json" => Some(PatchType::Json),
            "application/strategic-merge-patch+json" => Some(PatchType::Strategic),
            "application/apply-patch+yaml" | "application/apply-patch+cbor" => {
                Some(PatchType::Apply)
            }
            _ => None,
        }
    }
}

/// PATCH of the main resource or a subresource. Returns the object and whether it was created
/// (server-side apply of a missing object).
#[allow(clippy::too_many_arguments)]
pub fn patch(
    shared: &Shared,
    info: &ResourceInfo,
    ns: &str,
    name: &str,
    subresource: &str,
    ptype: PatchType,
    body: Value,
    opts: &WriteOpts,
) -> Result<(Value, bool), ApiError> {
    if ptype == PatchType::Apply {
        return apply(shared, info, ns, name, subresource, body, opts);
    }
    // Custom resources have no strategy to merge lists by key: the real server refuses it.
    if ptype == PatchType::Strategic && info.crd {
        let mut error = ApiError::unsupported_media_type("application/strategic-merge-patch+json");
        error.message = format!(
            "application/strategic-merge-patch+json is not supported by {}/{}, Kind={}: the body \
             of the request was in an unknown format - accepted media types include: \
             application/json-patch+json, application/merge-patch+json, \
             application/apply-patch+yaml",
            info.group, info.version, info.kind
        );
        return Err(error);
    }
    if ptype != PatchType::Json && !body.is_object() {
        return Err(ApiError::bad_request("the patch is not a JSON object"));
    }
    let v = write_existing(shared, info, ns, name, subresource, opts, false, |old| {
        let mut doc = old.clone();
        match ptype {
            PatchType::Merge => patch::merge_patch(&mut doc, &body),
            PatchType::Strategic => patch::strategic_merge_patch(&mut doc, &body),
            PatchType::Json => patch::json_patch(&mut doc, &body)?,
            PatchType::Apply => {}
        }
        // A patch only carries a resourceVersion precondition if it sets one explicitly.
        let patch_rv = match ptype {
            PatchType::Json => {
                if rv_of(&doc) != rv_of(old) {
                    rv_of(&doc).to_string()
                } else {
                    String::new()
                }
            }
            _ => body
                .pointer("/metadata/resourceVersion")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
        };
        util::meta_mut(&mut doc).insert("resourceVersion".into(), json!(patch_rv));
        Ok(doc)
    })?;
    Ok((v, false))
}

fn apply(
    shared: &Shared,
    info: &ResourceInfo,
    ns: &str,
    name: &str,
    subresource: &str,
    body: Value,
    opts: &WriteOpts,
) -> Result<(Value, bool), ApiError> {
    let manager = opts
        .field_manager
        .clone()
        .filter(|m| !m.is_empty())
        .ok_or_else(|| {
            ApiError::invalid(
                "meta.k8s.io",
                "PatchOptions",
                "",
                "fieldManager",
                "Required value: is required for apply patch",
            )
        })?;
    let applied = body_object(body)?;
    let body_name = util::name(&applied);
    if !body_name.is_empty() && body_name != name {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({body_name}) does not match the name on the URL ({name})"
        )));
    }
    let now = util::now_rfc3339();
    let av = info.api_version();
    let existing = shared.store.get(&info.key(), ns, name);
    if existing.is_none() {
        if !subresource.is_empty() {
            return Err(ApiError::not_found(&info.group, &info.plural, name));
        }
        let base = json!({"metadata": {"name": name}});
        let a = patch::apply(&base, &applied, &manager, "", &av, opts.force, &now)?;
        let mut obj = a.object;
        util::meta_mut(&mut obj).insert("name".into(), json!(name));
        patch::write_managed(&mut obj, &a.managed);
        return create(shared, info, ns, obj, opts).map(|v| (v, true));
    }
    let v = write_existing(shared, info, ns, name, subresource, opts, true, |old| {
        let a = patch::apply(old, &applied, &manager, subresource, &av, opts.force, &now)?;
        let mut doc = a.object;
        patch::write_managed(&mut doc, &a.managed);
        util::meta_mut(&mut doc).insert("resourceVersion".into(), json!(""));
        Ok(doc)
    })?;
    Ok((v, false))
}

/// Deletes an object honouring finalizers and the propagation policy.
pub fn delete(
    shared: &Shared,
    info: &ResourceInfo,
    ns: &str,
    name: &str,
    opts: &DeleteOpts,
) -> Result<Deleted, ApiError> {
    let key = info.key();
    let current = shared
        .store
        .get(&key, ns, name)
        .ok_or_else(|| ApiError::not_found(&info.group, &info.plural, name))?;
    let policy = opts
        .propagation
        .unwrap_or(if info.group == "batch" && info.plural == "jobs" {
            Propagation::Orphan
        } else {
            Propagation::Background
        });
    let check = |obj: &Value| -> Result<(), ApiError> {
        if let Some(u) = &opts.precondition_uid
            && u != util::uid(obj)
        {
            return Err(ApiError::conflict(
                &info.group,
                &info.plural,
                name,
                &format!(
                    "Precondition failed: UID in precondition: {u}, UID in object meta: {}",
                    util::uid(obj)
                ),
            ));
        }
        if let Some(rv) = &opts.precondition_rv
            && rv != rv_of(obj)
        {
            return Err(ApiError::conflict(
                &info.group,
                &info.plural,
                name,
                &format!(
                    "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                    rv_of(obj)
                ),
            ));
        }
        Ok(())
    };
    check(&current)?;
    if opts.dry_run {
        return Ok(if util::finalizers(&current).is_empty() {
            Deleted::Gone(current)
        } else {
            Deleted::Pending(current)
        });
    }
    if policy == Propagation::Orphan {
        crate::gc::orphan_dependents(shared, util::uid(&current));
    }
    let now = util::now_rfc3339();
    let out = shared.store.modify(&key, ns, name, |existing| {
        let old = existing.ok_or_else(|| ApiError::not_found(&info.group, &info.plural, name))?;
        check(old)?;
        let mut obj = old.clone();
        let mut fins = util::finalizers(&obj);
        if policy == Propagation::Foreground && !fins.iter().any(|f| f == "foregroundDeletion") {
            fins.push("foregroundDeletion".into());
        }
        util::set_finalizers(&mut obj, fins);
        if !util::is_deleting(&obj) {
            let m = util::meta_mut(&mut obj);
            m.insert("deletionTimestamp".into(), json!(now));
            m.insert("deletionGracePeriodSeconds".into(), json!(0));
            // As the API server marks an object deleting: its generation moves on.
            if let Some(generation) = m.get("generation").and_then(Value::as_i64)
                && generation > 0
            {
                m.insert("generation".into(), json!(generation + 1));
            }
        }
        if info.group.is_empty()
            && info.plural == "namespaces"
            && let Some(m) = obj.as_object_mut()
        {
            m.insert("status".into(), json!({"phase": "Terminating"}));
        }
        Ok(Change::Put(obj))
    })?;
    // The garbage collector sees the change as a store event.
    match out {
        Outcome::Deleted(v) => {
            if info.plural == "customresourcedefinitions" {
                crate::crd::removed(shared, &v);
            }
            Ok(Deleted::Gone(v))
        }
        Outcome::Stored(v) => Ok(Deleted::Pending(v)),
        Outcome::Absent => Err(ApiError::not_found(&info.group, &info.plural, name)),
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::coordination::v1::Lease;
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::{Api, PostParams};

    fn status_of(error: kube::Error) -> (u16, String) {
        match error {
            kube::Error::Api(status) => (status.code, status.message),
            other => panic!("{other}"),
        }
    }

    /// A PUT as the real server answers it (checked on Kubernetes v1.36.3 with kubectl
    /// replace): a Lease is made by a PUT of its name unless the body names the uid of the one
    /// deleted (the update's precondition, 409); a PUT without a resourceVersion is refused for
    /// a Lease (422) and taken for a ConfigMap.
    #[tokio::test]
    async fn a_put_answers_as_the_real_server_does() {
        let sim = crate::Sim::builder().start().await.unwrap();
        let leases = Api::<Lease>::namespaced(sim.client(), "default");
        let lease: Lease = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "l"}, "spec": {"holderIdentity": "a"}
        }))
        .unwrap();
        let made = leases.create(&PostParams::default(), &lease).await.unwrap();
        leases.delete("l", &Default::default()).await.unwrap();
        let put = |lease: &Lease| {
            let leases = leases.clone();
            let lease = lease.clone();
            async move { leases.replace("l", &PostParams::default(), &lease).await }
        };
        let (code, message) = status_of(put(&made).await.unwrap_err());
        assert_eq!(code, 409, "{message}");
        assert!(
            message.contains("Precondition failed: UID in precondition"),
            "{message}"
        );
        let mut without_uid = made.clone();
        without_uid.metadata.uid = None;
        let remade = put(&without_uid).await.unwrap();
        assert_ne!(remade.metadata.uid, made.metadata.uid);
        let mut unversioned = remade.clone();
        unversioned.metadata.resource_version = None;
        let (code, message) = status_of(put(&unversioned).await.unwrap_err());
        assert_eq!(code, 422, "{message}");
        assert!(
            message.contains("must be specified for an update"),
            "{message}"
        );

        let maps = Api::<ConfigMap>::namespaced(sim.client(), "default");
        let map: ConfigMap =
            serde_json::from_value(serde_json::json!({"metadata": {"name": "m"}})).unwrap();
        let mut made = maps.create(&PostParams::default(), &map).await.unwrap();
        made.metadata.resource_version = None;
        maps.replace("m", &PostParams::default(), &made)
            .await
            .unwrap();
        maps.delete("m", &Default::default()).await.unwrap();
        made.metadata.uid = None;
        let (code, _) = status_of(
            maps.replace("m", &PostParams::default(), &made)
                .await
                .unwrap_err(),
        );
        assert_eq!(code, 404, "only some kinds are made by a PUT");
    }
}
