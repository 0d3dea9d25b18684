//! What the kubelet resolves before a container starts: environment (`env`, `envFrom`,
//! `secretKeyRef`, `configMapKeyRef`, `fieldRef`) and volumes (`emptyDir`, `configMap`,
//! `secret`) materialised as host directories.

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use base64::Engine;
use serde_json::Value;

use crate::Shared;
use crate::runtime::{FileSnapshot, Mount};
use crate::util;

fn get(shared: &Shared, plural: &str, ns: &str, name: &str) -> Option<Value> {
    shared.store.get(&(String::new(), plural.into()), ns, name)
}

fn b64(s: &str) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .unwrap_or_else(|_| s.as_bytes().to_vec())
}

/// Key → bytes of a ConfigMap (data + binaryData) or Secret (data, base64).
fn entries(obj: &Value, secret: bool) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    if let Some(d) = obj.get("data").and_then(Value::as_object) {
        for (k, v) in d {
            let s = v.as_str().unwrap_or_default();
            out.insert(
                k.clone(),
                if secret {
                    b64(s)
                } else {
                    s.as_bytes().to_vec()
                },
            );
        }
    }
    if !secret && let Some(d) = obj.get("binaryData").and_then(Value::as_object) {
        for (k, v) in d {
            out.insert(k.clone(), b64(v.as_str().unwrap_or_default()));
        }
    }
    out
}

/// Expands `$(VAR)` references (`$$(VAR)` escapes) as the kubelet does.
pub fn expand(s: &str, env: &[(String, String)]) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        if let Some(t) = tail.strip_prefix("$$") {
            out.push('$');
            rest = t;
        } else if let Some(t) = tail.strip_prefix("$(")
            && let Some(end) = t.find(')')
        {
            let name = &t[..end];
            match env.iter().rev().find(|(k, _)| k == name) {
                Some((_, v)) => out.push_str(v),
                None => out.push_str(&tail[..end + 3]),
            }
            rest = &t[end + 1..];
        } else {
            out.push('$');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    out
}

fn field_ref(pod: &Value, path: &str) -> String {
    if let Some(k) = path
        .strip_prefix("metadata.labels['")
        .and_then(|k| k.strip_suffix("']"))
    {
        return util::labels(pod)
            .get(k)
            .and_then(Value::as_str)
            .unwrap_or("")
            .into();
    }
    if let Some(k) = path
        .strip_prefix("metadata.annotations['")
        .and_then(|k| k.strip_suffix("']"))
    {
        return pod
            .pointer("/metadata/annotations")
            .and_then(|a| a.get(k))
            .and_then(Value::as_str)
            .unwrap_or("")
            .into();
    }
    match util::path(pod, path) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => String::new(),
        Some(v) => v.to_string(),
    }
}

/// The container's environment, or the `CreateContainerConfigError` message.
pub fn resolve_env(
    shared: &Shared,
    pod: &Value,
    c: &Value,
) -> Result<Vec<(String, String)>, String> {
    let ns = util::namespace(pod);
    let mut env: Vec<(String, String)> = Vec::new();
    for src in c
        .get("envFrom")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
    {
        let prefix = src.get("prefix").and_then(Value::as_str).unwrap_or("");
        for (field, plural, label, secret) in [
            ("configMapRef", "configmaps", "configmap", false),
            ("secretRef", "secrets", "secret", true),
        ] {
            if let Some(r) = src.get(field) {
                let name = r.get("name").and_then(Value::as_str).unwrap_or("");
                let optional = r.get("optional").and_then(Value::as_bool) == Some(true);
                match get(shared, plural, ns, name) {
                    Some(obj) => {
                        for (k, v) in entries(&obj, secret) {
                            env.push((format!("{prefix}{k}"), String::from_utf8_lossy(&v).into()));
                        }
                    }
                    None if optional => {}
                    None => return Err(format!("{label} \"{name}\" not found")),
                }
            }
        }
    }
    for e in c
        .get("env")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
    {
        let name = e
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        if let Some(v) = e.get("value").and_then(Value::as_str) {
            let expanded = expand(v, &env);
            env.push((name, expanded));
            continue;
        }
        let Some(from) = e.get("valueFrom") else {
            env.push((name, String::new()));
            continue;
        };
        for (field, plural, label, kind, secret) in [
            ("secretKeyRef", "secrets", "secret", "Secret", true),
            (
                "configMapKeyRef",
                "configmaps",
                "configmap",
                "ConfigMap",
                false,
            ),
        ] {
            if let Some(r) = from.get(field) {
                let oname = r.get("name").and_then(Value::as_str).unwrap_or("");
                let key = r.get("key").and_then(Value::as_str).unwrap_or("");
                let optional = r.get("optional").and_then(Value::as_bool) == Some(true);
                match get(shared, plural, ns, oname) {
                    None if optional => {}
                    None => return Err(format!("{label} \"{oname}\" not found")),
                    Some(obj) => match entries(&obj, secret).get(key) {
                        Some(v) => env.push((name.clone(), String::from_utf8_lossy(v).into())),
                        None if optional => {}
                        None => {
                            return Err(format!("couldn't find key {key} in {kind} {ns}/{oname}"));
                        }
                    },
                }
            }
        }
        if let Some(r) = from.get("fieldRef") {
            let path = r.get("fieldPath").and_then(Value::as_str).unwrap_or("");
            env.push((name.clone(), field_ref(pod, path)));
        }
        if from.get("resourceFieldRef").is_some() {
            env.push((name.clone(), "0".into()));
        }
    }
    Ok(env)
}

fn write_file(root: &Path, rel: &str, content: &[u8], mode: u32) -> std::io::Result<()> {
    let path = root.join(rel.trim_start_matches('/'));
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&path, content)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
}

/// Materialises the pod's volumes under `dir`; returns volume name → host directory, or the
/// `FailedMount`-style message if a referenced ConfigMap/Secret (not optional) is missing.
pub fn materialize(
    shared: &Shared,
    pod: &Value,
    dir: &Path,
) -> Result<HashMap<String, PathBuf>, String> {
    let ns = util::namespace(pod);
    let mut out = HashMap::new();
    for v in pod
        .pointer("/spec/volumes")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
    {
        let name = v
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let host = dir.join(&name);
        std::fs::create_dir_all(&host).map_err(|e| e.to_string())?;
        for (field, plural, name_key, secret, label) in [
            ("configMap", "configmaps", "name", false, "configmap"),
            ("secret", "secrets", "secretName", true, "secret"),
        ] {
            let Some(src) = v.get(field) else { continue };
            let oname = src.get(name_key).and_then(Value::as_str).unwrap_or("");
            let optional = src.get("optional").and_then(Value::as_bool) == Some(true);
            let default_mode = src
                .get("defaultMode")
                .and_then(Value::as_u64)
                .unwrap_or(0o644) as u32;
            let Some(obj) = get(shared, plural, ns, oname) else {
                if optional {
                    continue;
                }
                return Err(format!(
                    "MountVolume.SetUp failed for volume \"{name}\" : {label} \"{oname}\" not found"
                ));
            };
            let data = entries(&obj, secret);
            match src.get("items").and_then(Value::as_array) {
                Some(items) => {
                    for it in items {
                        let key = it.get("key").and_then(Value::as_str).unwrap_or("");
                        let path = it.get("path").and_then(Value::as_str).unwrap_or(key);
                        let mode = it
                            .get("mode")
                            .and_then(Value::as_u64)
                            .map_or(default_mode, |m| m as u32);
                        match data.get(key) {
                            Some(content) => {
                                write_file(&host, path, content, mode).map_err(|e| e.to_string())?
                            }
                            None if optional => {}
                            None => {
                                return Err(format!(
                                    "MountVolume.SetUp failed for volume \"{name}\" : configmap references non-existent config key: {key}"
                                ));
                            }
                        }
                    }
                }
                None => {
                    for (k, content) in &data {
                        write_file(&host, k, content, default_mode).map_err(|e| e.to_string())?;
                    }
                }
            }
        }
        out.insert(name, host);
    }
    Ok(out)
}

/// The container's mounts resolved against the materialised volumes.
pub fn mounts(c: &Value, volumes: &HashMap<String, PathBuf>) -> Vec<Mount> {
    c.get("volumeMounts")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter_map(|m| {
            let vol = m.get("name").and_then(Value::as_str)?;
            let base = volumes.get(vol)?;
            let sub = m.get("subPath").and_then(Value::as_str).unwrap_or("");
            let host_path = if sub.is_empty() {
                base.clone()
            } else {
                base.join(sub)
            };
            if !sub.is_empty() {
                let _ = std::fs::create_dir_all(&host_path);
            }
            Some(Mount {
                volume: vol.to_string(),
                mount_path: m
                    .get("mountPath")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
                host_path,
                read_only: m.get("readOnly").and_then(Value::as_bool) == Some(true),
            })
        })
        .collect()
}

const MAX_SNAPSHOT_FILE: u64 = 1 << 20;

/// Files under the mounts, keyed by their path inside the container.
pub fn snapshot(mounts: &[Mount]) -> BTreeMap<String, FileSnapshot> {
    let mut out = BTreeMap::new();
    fn walk(dir: &Path, prefix: &str, out: &mut BTreeMap<String, FileSnapshot>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd.flatten() {
            let path = e.path();
            let name = e.file_name().to_string_lossy().into_owned();
            let inner = format!("{}/{name}", prefix.trim_end_matches('/'));
            let Ok(md) = std::fs::symlink_metadata(&path) else {
                continue;
            };
            if md.is_dir() {
                walk(&path, &inner, out);
            } else if md.is_file()
                && md.len() <= MAX_SNAPSHOT_FILE
                && let Ok(content) = std::fs::read(&path)
            {
                out.insert(
                    inner,
                    FileSnapshot {
                        content,
                        mode: md.permissions().mode() & 0o7777,
                    },
                );
            }
        }
    }
    for m in mounts {
        walk(&m.host_path, &m.mount_path, &mut out);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expands_like_the_kubelet() {
        let env = vec![("A".to_string(), "1".to_string())];
        assert_eq!(expand("x$(A)y", &env), "x1y");
        assert_eq!(expand("$(B)", &env), "$(B)");
        assert_eq!(expand("$$(A)", &env), "$(A)");
        assert_eq!(expand("cost $5", &env), "cost $5");
    }
}
