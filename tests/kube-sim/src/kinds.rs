//! Per-kind behaviour of the API server: defaulting, validation and immutability rules that
//! the real registry strategies apply on create and update.

use base64::Engine;
use serde_json::{Value, json};

use crate::error::ApiError;
use crate::resources::ResourceInfo;
use crate::schema;
use crate::util;

const LABEL_VALUE_MSG: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";
const QUALIFIED_NAME_MSG: &str = "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";
const SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const LABEL_NAME_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";

fn is_alnum(c: char) -> bool {
    c.is_ascii_alphanumeric()
}

/// `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`, at most 63 characters.
pub fn is_qualified_name_part(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars().next().is_some_and(is_alnum)
        && s.chars().last().is_some_and(is_alnum)
        && s.chars()
            .all(|c| is_alnum(c) || matches!(c, '-' | '_' | '.'))
}

pub fn is_label_value(s: &str) -> bool {
    s.is_empty() || is_qualified_name_part(s)
}

pub fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

pub fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns_label)
}

fn is_qualified_key(k: &str) -> bool {
    match k.split_once('/') {
        Some((prefix, name)) => is_dns_subdomain(prefix) && is_qualified_name_part(name),
        None => is_qualified_name_part(k),
    }
}

/// Validates metadata (name, labels, annotation keys) as the API server does.
pub fn validate_meta(info: &ResourceInfo, obj: &Value) -> Result<(), ApiError> {
    let name = util::name(obj);
    let inv =
        |field: &str, why: String| ApiError::invalid(&info.group, &info.kind, name, field, &why);
    let name_ok = if info.plural == "namespaces" {
        is_dns_label(name)
    } else {
        is_dns_subdomain(name)
    };
    if !name_ok {
        let msg = if info.plural == "namespaces" {
            LABEL_NAME_MSG
        } else {
            SUBDOMAIN_MSG
        };
        return Err(inv(
            "metadata.name",
            format!("Invalid value: {name:?}: {msg}"),
        ));
    }
    for (k, v) in util::labels(obj) {
        if !is_qualified_key(&k) {
            return Err(inv(
                "metadata.labels",
                format!("Invalid value: {k:?}: {QUALIFIED_NAME_MSG}"),
            ));
        }
        let v = v.as_str().unwrap_or_default();
        if v.len() > 63 {
            return Err(inv(
                "metadata.labels",
                format!("Invalid value: {v:?}: must be no more than 63 characters"),
            ));
        }
        if !is_label_value(v) {
            return Err(inv(
                "metadata.labels",
                format!("Invalid value: {v:?}: {LABEL_VALUE_MSG}"),
            ));
        }
    }
    if let Some(ann) = util::meta(obj)
        .and_then(|m| m.get("annotations"))
        .and_then(Value::as_object)
    {
        for k in ann.keys() {
            if !is_qualified_key(k) {
                return Err(inv(
                    "metadata.annotations",
                    format!("Invalid value: {k:?}: {QUALIFIED_NAME_MSG}"),
                ));
            }
        }
    }
    Ok(())
}

/// The status an object of this kind starts with (create cannot set status).
pub fn initial_status(info: &ResourceInfo, obj: &mut Value) {
    if !info.status {
        return;
    }
    let Some(map) = obj.as_object_mut() else {
        return;
    };
    match (info.group.as_str(), info.plural.as_str()) {
        ("", "pods") => {
            map.insert(
                "status".into(),
                json!({"phase": "Pending", "qosClass": "BestEffort"}),
            );
        }
        ("", "namespaces") => {
            map.insert("status".into(), json!({"phase": "Active"}));
        }
        ("batch", "jobs") => {
            map.insert("status".into(), json!({}));
        }
        ("apiextensions.k8s.io", _) => {
            map.insert("status".into(), json!({}));
        }
        _ => {
            map.remove("status");
        }
    }
}

/// Defaults and validation applied to a new or updated object of this kind (after the generic
/// metadata handling). `old` is the stored object for updates.
pub fn default_and_validate(
    info: &ResourceInfo,
    obj: &mut Value,
    old: Option<&Value>,
) -> Result<(), ApiError> {
    let name = util::name(obj).to_string();
    let inv =
        |field: &str, why: &str| ApiError::invalid(&info.group, &info.kind, &name, field, why);
    match (info.group.as_str(), info.plural.as_str()) {
        ("", "secrets") => {
            if let Some(sd) = obj.get("stringData").and_then(Value::as_object).cloned() {
                let data = obj
                    .as_object_mut()
                    .map(|m| m.entry("data").or_insert_with(|| json!({})));
                if let Some(Value::Object(d)) = data {
                    for (k, v) in sd {
                        let s = v.as_str().unwrap_or_default();
                        d.insert(
                            k,
                            json!(base64::engine::general_purpose::STANDARD.encode(s)),
                        );
                    }
                }
                if let Some(m) = obj.as_object_mut() {
                    m.remove("stringData");
                }
            }
            if obj.get("type").is_none()
                && let Some(m) = obj.as_object_mut()
            {
                m.insert("type".into(), json!("Opaque"));
            }
            if let (Some(old), Some(m)) = (old, obj.as_object_mut())
                && old.get("type") != m.get("type")
            {
                return Err(inv("type", "Invalid value: field is immutable"));
            }
        }
        ("", "namespaces") => {
            let m = util::meta_mut(obj);
            let labels = m.entry("labels").or_insert_with(|| json!({}));
            if let Some(l) = labels.as_object_mut() {
                l.insert("kubernetes.io/metadata.name".into(), json!(name));
            }
            if old.is_none()
                && let Some(map) = obj.as_object_mut()
            {
                map.insert("spec".into(), json!({"finalizers": ["kubernetes"]}));
            }
        }
        ("", "pods") => {
            let spec = obj
                .get_mut("spec")
                .ok_or_else(|| inv("spec.containers", "Required value"))?;
            default_pod_spec(spec, "spec", &inv)?;
            if let Some(old) = old
                && pod_spec_mutable_view(old.get("spec")) != pod_spec_mutable_view(obj.get("spec"))
            {
                return Err(inv(
                    "spec",
                    "Forbidden: pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)",
                ));
            }
        }
        ("batch", "jobs") => default_job(info, obj, old, &inv)?,
        ("apiextensions.k8s.io", "customresourcedefinitions") => {
            let group = util::path(obj, "spec.group")
                .and_then(Value::as_str)
                .unwrap_or("");
            let plural = util::path(obj, "spec.names.plural")
                .and_then(Value::as_str)
                .unwrap_or("");
            if plural.is_empty() {
                return Err(inv("spec.names.plural", "Required value"));
            }
            if util::path(obj, "spec.names.kind")
                .and_then(Value::as_str)
                .is_none()
            {
                return Err(inv("spec.names.kind", "Required value"));
            }
            if name != format!("{plural}.{group}") {
                return Err(inv(
                    "metadata.name",
                    &format!("Invalid value: {name:?}: must be spec.names.plural+\".\"+spec.group"),
                ));
            }
            let versions = util::path(obj, "spec.versions")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            if versions.is_empty() {
                return Err(inv(
                    "spec.versions",
                    "Invalid value: must have exactly one version marked as storage version",
                ));
            }
            let storage = versions
                .iter()
                .filter(|v| v.get("storage").and_then(Value::as_bool) == Some(true))
                .count();
            if storage != 1 {
                return Err(inv(
                    "spec.versions",
                    "Invalid value: must have exactly one version marked as storage version",
                ));
            }
        }
        _ if info.crd => validate_custom(info, obj, &name, |_| true)?,
        _ => {}
    }
    Ok(())
}

/// A write to a custom resource's `/status`: defaulted and pruned whole, but validated only in
/// its status, as the real server's status strategy validates it.
pub fn default_and_validate_status(info: &ResourceInfo, obj: &mut Value) -> Result<(), ApiError> {
    let name = util::name(obj).to_string();
    validate_custom(info, obj, &name, |field| {
        field == "status" || field.starts_with("status.") || field.starts_with("status[")
    })
}

/// A custom resource as the real server decodes and checks it: its numbers as Go's
/// unstructured JSON reads them, then pruned, defaulted and validated by its schema; the errors
/// of fields `checked` refuses it.
fn validate_custom(
    info: &ResourceInfo,
    obj: &mut Value,
    name: &str,
    checked: impl Fn(&str) -> bool,
) -> Result<(), ApiError> {
    normalize_numbers(obj);
    let Some(schema) = &info.schema else {
        return Ok(());
    };
    let errors: Vec<(String, String)> = schema::prune_default_validate(obj, schema)
        .into_iter()
        .filter(|(field, _)| checked(field))
        .collect();
    let Some((field, why)) = errors.first() else {
        return Ok(());
    };
    let mut e = ApiError::invalid(&info.group, &info.kind, name, field, why);
    if errors.len() > 1 {
        let all: Vec<String> = errors.iter().map(|(f, w)| format!("{f}: {w}")).collect();
        e.message = format!(
            "{}.{} {:?} is invalid: [{}]",
            info.kind,
            info.group,
            name,
            all.join(", ")
        );
        if let Some(d) = e.details.as_mut() {
            d["causes"] = Value::Array(
                errors
                    .iter()
                    .map(|(f, w)| json!({"reason": "FieldValueInvalid", "message": w, "field": f}))
                    .collect(),
            );
        }
    }
    Err(e)
}

/// Numbers as the real server reads a custom resource (`k8s.io/apimachinery/pkg/util/json`,
/// PreserveInts): a whole number that fits int64 stays an integer, anything else is a float64,
/// so `1.0` and `1e2` read back as `1` and `100`, and an integer past int64 loses precision.
fn normalize_numbers(value: &mut Value) {
    match value {
        Value::Number(n) if n.as_i64().is_none() => {
            let float = n.as_f64().unwrap_or_default();
            let whole = float.fract() == 0.0 && float.abs() < 9.2e18;
            *value = if whole {
                json!(float as i64)
            } else {
                json!(float)
            };
        }
        Value::Array(items) => items.iter_mut().for_each(normalize_numbers),
        Value::Object(map) => map.values_mut().for_each(normalize_numbers),
        _ => {}
    }
}

fn pod_spec_mutable_view(spec: Option<&Value>) -> Value {
    let mut s = spec.cloned().unwrap_or(Value::Null);
    if let Some(m) = s.as_object_mut() {
        for k in [
            "activeDeadlineSeconds",
            "tolerations",
            "terminationGracePeriodSeconds",
            "nodeName",
        ] {
            m.remove(k);
        }
        for list in ["containers", "initContainers"] {
            if let Some(Value::Array(cs)) = m.get_mut(list) {
                for c in cs {
                    if let Some(cm) = c.as_object_mut() {
                        cm.remove("image");
                    }
                }
            }
        }
    }
    s
}

fn default_container(c: &mut Value) {
    let Some(m) = c.as_object_mut() else { return };
    m.entry("terminationMessagePath")
        .or_insert_with(|| json!("/dev/termination-log"));
    m.entry("terminationMessagePolicy")
        .or_insert_with(|| json!("File"));
    m.entry("resources").or_insert_with(|| json!({}));
    let image = m
        .get("image")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let tag_latest = {
        let last = image.rsplit('/').next().unwrap_or("");
        !image.contains('@') && (!last.contains(':') || last.ends_with(":latest"))
    };
    m.entry("imagePullPolicy")
        .or_insert_with(|| json!(if tag_latest { "Always" } else { "IfNotPresent" }));
}

/// Pod spec defaults (also applied to Job templates) and the basic required-field validation.
fn default_pod_spec(
    spec: &mut Value,
    prefix: &str,
    inv: &dyn Fn(&str, &str) -> ApiError,
) -> Result<(), ApiError> {
    let Some(m) = spec.as_object_mut() else {
        return Err(inv(&format!("{prefix}.containers"), "Required value"));
    };
    let containers = m
        .get("containers")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    if containers.is_empty() {
        return Err(inv(&format!("{prefix}.containers"), "Required value"));
    }
    let mut names = std::collections::BTreeSet::new();
    for list in ["initContainers", "containers"] {
        if let Some(Value::Array(cs)) = m.get_mut(list) {
            for (i, c) in cs.iter_mut().enumerate() {
                let cname = c
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string();
                if cname.is_empty() {
                    return Err(inv(&format!("{prefix}.{list}[{i}].name"), "Required value"));
                }
                if !is_dns_label(&cname) {
                    return Err(inv(
                        &format!("{prefix}.{list}[{i}].name"),
                        &format!("Invalid value: {cname:?}: {LABEL_NAME_MSG}"),
                    ));
                }
                if !names.insert(cname.clone()) {
                    return Err(inv(
                        &format!("{prefix}.{list}[{i}].name"),
                        &format!("Duplicate value: {cname:?}"),
                    ));
                }
                if c.get("image")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .is_empty()
                {
                    return Err(inv(
                        &format!("{prefix}.{list}[{i}].image"),
                        "Required value",
                    ));
                }
                default_container(c);
            }
        }
    }
    validate_mounts_and_privileges(m, prefix, inv)?;
    m.entry("restartPolicy").or_insert_with(|| json!("Always"));
    m.entry("terminationGracePeriodSeconds")
        .or_insert_with(|| json!(30));
    m.entry("dnsPolicy")
        .or_insert_with(|| json!("ClusterFirst"));
    m.entry("securityContext").or_insert_with(|| json!({}));
    m.entry("schedulerName")
        .or_insert_with(|| json!("default-scheduler"));
    let sa = m
        .get("serviceAccountName")
        .or_else(|| m.get("serviceAccount"))
        .cloned()
        .unwrap_or_else(|| json!("default"));
    m.insert("serviceAccountName".into(), sa.clone());
    m.insert("serviceAccount".into(), sa);
    if let Some(Value::Array(vols)) = m.get_mut("volumes") {
        for v in vols {
            for src in ["configMap", "secret"] {
                if let Some(s) = v.get_mut(src).and_then(Value::as_object_mut) {
                    s.entry("defaultMode").or_insert_with(|| json!(420));
                }
            }
        }
    }
    Ok(())
}

/// What the real server's `ValidateVolumeMounts` and container security context checks refuse
/// of a pod spec (pkg/apis/core/validation): a mount of a volume the pod does not declare, two
/// mounts at one path in a container, `privileged` with `allowPrivilegeEscalation: false`, and
/// a ConfigMap's or Secret's item at a path that is absolute or steps back
/// (`ValidateLocalNonReservedPath`).
fn validate_mounts_and_privileges(
    m: &serde_json::Map<String, Value>,
    prefix: &str,
    inv: &dyn Fn(&str, &str) -> ApiError,
) -> Result<(), ApiError> {
    let sources = m
        .get("volumes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten();
    for (i, volume) in sources.enumerate() {
        for source in ["configMap", "secret"] {
            let items = volume.get(source).and_then(|s| s.get("items"));
            for (j, item) in items
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .enumerate()
            {
                let at = format!("{prefix}.volumes[{i}].{source}.items[{j}].path");
                let path = item.get("path").and_then(Value::as_str).unwrap_or("");
                let why = if path.is_empty() {
                    return Err(inv(&at, "Required value"));
                } else if path.starts_with('/') {
                    "must be a relative path"
                } else if path.split('/').any(|part| part == "..") {
                    "must not contain '..'"
                } else if path.starts_with("..") {
                    "must not start with '..'"
                } else {
                    continue;
                };
                return Err(inv(&at, &format!("Invalid value: {path:?}: {why}")));
            }
        }
    }
    let volumes: std::collections::BTreeSet<&str> = m
        .get("volumes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|v| v.get("name").and_then(Value::as_str))
        .collect();
    for list in ["initContainers", "containers"] {
        let containers = m.get(list).and_then(Value::as_array).into_iter().flatten();
        for (i, c) in containers.enumerate() {
            let mut paths = std::collections::BTreeSet::new();
            let mounts = c.get("volumeMounts").and_then(Value::as_array);
            for (j, mount) in mounts.into_iter().flatten().enumerate() {
                let at = format!("{prefix}.{list}[{i}].volumeMounts[{j}]");
                let name = mount.get("name").and_then(Value::as_str).unwrap_or("");
                if !volumes.contains(name) {
                    return Err(inv(&format!("{at}.name"), &format!("Not found: {name:?}")));
                }
                let path = mount.get("mountPath").and_then(Value::as_str).unwrap_or("");
                if !paths.insert(path) {
                    return Err(inv(
                        &format!("{at}.mountPath"),
                        &format!("Invalid value: {path:?}: must be unique"),
                    ));
                }
            }
            let security = c.get("securityContext");
            let flag = |key: &str| security.and_then(|s| s.get(key)).and_then(Value::as_bool);
            if flag("allowPrivilegeEscalation") == Some(false) && flag("privileged") == Some(true) {
                return Err(inv(
                    &format!("{prefix}.{list}[{i}].securityContext"),
                    "Invalid value: cannot set `allowPrivilegeEscalation` to false and \
                     `privileged` to true",
                ));
            }
        }
    }
    Ok(())
}

pub const JOB_LABELS: [&str; 4] = [
    "batch.kubernetes.io/controller-uid",
    "batch.kubernetes.io/job-name",
    "controller-uid",
    "job-name",
];

fn default_job(
    _info: &ResourceInfo,
    obj: &mut Value,
    old: Option<&Value>,
    inv: &dyn Fn(&str, &str) -> ApiError,
) -> Result<(), ApiError> {
    let name = util::name(obj).to_string();
    let uid = util::uid(obj).to_string();
    if name.len() > 63 {
        return Err(inv(
            "metadata.name",
            &format!("Invalid value: {name:?}: must be no more than 63 characters"),
        ));
    }
    let manual = util::path(obj, "spec.manualSelector").and_then(Value::as_bool) == Some(true);
    let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) else {
        return Err(inv("spec.template", "Required value"));
    };
    let Some(template) = spec.get_mut("template").and_then(Value::as_object_mut) else {
        return Err(inv("spec.template", "Required value"));
    };
    if old.is_none() && !manual {
        let tm = template.entry("metadata").or_insert_with(|| json!({}));
        if let Some(tm) = tm.as_object_mut() {
            let labels = tm.entry("labels").or_insert_with(|| json!({}));
            if let Some(l) = labels.as_object_mut() {
                // The API server keeps a value the client set, and its validation then refuses
                // one that is not the Job's own (`ValidateHasLabel`).
                for (key, expected) in JOB_LABELS.iter().zip([&uid, &name, &uid, &name]) {
                    match l.get(*key) {
                        Some(set) if set.as_str() != Some(expected.as_str()) => {
                            return Err(inv(
                                &format!("spec.template.metadata.labels[{key}]"),
                                &format!("Invalid value: {set}: must be '{expected}'"),
                            ));
                        }
                        _ => {
                            l.insert((*key).into(), json!(expected));
                        }
                    }
                }
            }
        }
    }
    let tspec = template.entry("spec").or_insert_with(|| json!({}));
    default_pod_spec(tspec, "spec.template.spec", inv)?;
    let rp = tspec
        .get("restartPolicy")
        .and_then(Value::as_str)
        .unwrap_or("Always")
        .to_string();
    if rp != "Never" && rp != "OnFailure" {
        return Err(inv(
            "spec.template.spec.restartPolicy",
            &format!("Unsupported value: {rp:?}: supported values: \"OnFailure\", \"Never\""),
        ));
    }
    if old.is_none() && !manual {
        spec.insert(
            "selector".into(),
            json!({"matchLabels": {JOB_LABELS[0]: uid}}),
        );
    }
    if !spec.contains_key("completions") && !spec.contains_key("parallelism") {
        spec.insert("completions".into(), json!(1));
    }
    spec.entry("parallelism").or_insert_with(|| json!(1));
    spec.entry("backoffLimit").or_insert_with(|| json!(6));
    spec.entry("completionMode")
        .or_insert_with(|| json!("NonIndexed"));
    spec.entry("suspend").or_insert_with(|| json!(false));
    spec.entry("podReplacementPolicy")
        .or_insert_with(|| json!("TerminatingOrFailed"));
    if let Some(old) = old {
        for field in ["template", "selector", "completionMode"] {
            let before = old.pointer(&format!("/spec/{field}"));
            if before.is_some() && before != spec.get(field) {
                return Err(inv(
                    &format!("spec.{field}"),
                    &format!(
                        "Invalid value: {}: field is immutable",
                        spec.get(field).cloned().unwrap_or(Value::Null)
                    ),
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_rules() {
        assert!(is_label_value(""));
        assert!(is_label_value("a.b-c_d"));
        assert!(!is_label_value("a:b"));
        assert!(!is_label_value("-a"));
        assert!(is_qualified_key("app.kubernetes.io/name"));
        assert!(!is_qualified_key("Bad_Prefix/x"));
        assert!(is_dns_subdomain("a.b-c"));
        assert!(!is_dns_subdomain("A"));
    }
}
