//! Discovery documents: `/version`, `/api`, `/api/v1`, `/apis`, `/apis/<group>[/<version>]`.
//!
//! Only the legacy (unaggregated) documents are served; clients asking for aggregated
//! discovery (`as=APIGroupDiscoveryList`) get them with `Content-Type: application/json` and
//! fall back, as they do against old servers.

use serde_json::{Value, json};

use crate::Shared;
use crate::error::ApiError;
use crate::resources::{ResourceInfo, VERBS};

/// The Kubernetes version the simulator claims to be.
pub const MAJOR: &str = "1";
pub const MINOR: &str = "33";

fn version() -> Value {
    json!({
        "major": MAJOR,
        "minor": MINOR,
        "gitVersion": format!("v{MAJOR}.{MINOR}.0-kube-sim"),
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2025-01-01T00:00:00Z",
        "goVersion": "go1.24.0",
        "compiler": "gc",
        "platform": "linux/amd64",
    })
}

fn resource_entries(r: &ResourceInfo) -> Vec<Value> {
    let mut main = json!({
        "name": r.plural,
        "singularName": r.singular,
        "namespaced": r.namespaced,
        "kind": r.kind,
        "verbs": VERBS,
    });
    if !r.short_names.is_empty() {
        main["shortNames"] = json!(r.short_names);
    }
    if !r.categories.is_empty() {
        main["categories"] = json!(r.categories);
    }
    let mut out = vec![main];
    if r.status {
        out.push(json!({
            "name": format!("{}/status", r.plural),
            "singularName": "",
            "namespaced": r.namespaced,
            "kind": r.kind,
            "verbs": ["get", "patch", "update"],
        }));
    }
    if r.log {
        out.push(json!({
            "name": format!("{}/log", r.plural),
            "singularName": "",
            "namespaced": r.namespaced,
            "kind": r.kind,
            "verbs": ["get"],
        }));
    }
    out
}

fn group_doc(group: &str, versions: &[String]) -> Value {
    let vs: Vec<Value> = versions
        .iter()
        .map(|v| json!({"groupVersion": format!("{group}/{v}"), "version": v}))
        .collect();
    json!({
        "name": group,
        "versions": vs,
        "preferredVersion": vs.first().cloned().unwrap_or(Value::Null),
    })
}

/// Answers a non-resource GET.
pub fn serve(shared: &Shared, path: &str, verb: &str) -> Result<Value, ApiError> {
    if verb != "get" && verb != "head" {
        return Err(ApiError::method_not_allowed());
    }
    let segs: Vec<&str> = path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let registry = shared.registry_read();
    match segs.as_slice() {
        ["version"] => Ok(version()),
        ["api"] => Ok(json!({
            "kind": "APIVersions",
            "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": shared.addr.to_string()}],
        })),
        ["apis"] => {
            let groups: Vec<Value> = registry
                .groups()
                .into_iter()
                .filter(|(g, _)| !g.is_empty())
                .map(|(g, vs)| group_doc(&g, &vs))
                .collect();
            Ok(json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}))
        }
        ["apis", g] => registry
            .groups()
            .into_iter()
            .find(|(name, _)| name == g)
            .map(|(name, vs)| {
                let mut d = group_doc(&name, &vs);
                d["kind"] = json!("APIGroup");
                d["apiVersion"] = json!("v1");
                d
            })
            .ok_or_else(ApiError::no_route),
        ["api", v] | ["apis", _, v] => {
            let group = if segs[0] == "api" { "" } else { segs[1] };
            let rs = registry.in_group_version(group, v);
            if rs.is_empty() {
                return Err(ApiError::no_route());
            }
            let gv = if group.is_empty() {
                v.to_string()
            } else {
                format!("{group}/{v}")
            };
            let resources: Vec<Value> = rs.iter().flat_map(|r| resource_entries(r)).collect();
            Ok(json!({
                "kind": "APIResourceList",
                "apiVersion": "v1",
                "groupVersion": gv,
                "resources": resources,
            }))
        }
        ["openapi", "v3"] => {
            let hash = format!("{:016X}", shared.store.current_rv());
            let mut paths = serde_json::Map::new();
            for (g, vs) in registry.groups() {
                for v in vs {
                    let p = if g.is_empty() {
                        format!("api/{v}")
                    } else {
                        format!("apis/{g}/{v}")
                    };
                    paths.insert(
                        p.clone(),
                        json!({"serverRelativeURL": format!("/openapi/v3/{p}?hash={hash}")}),
                    );
                }
            }
            Ok(json!({"paths": paths}))
        }
        ["openapi", "v3", "api", v] | ["openapi", "v3", "apis", _, v] => {
            let group = if segs[2] == "api" { "" } else { segs[3] };
            let rs = registry.in_group_version(group, v);
            if rs.is_empty() {
                return Err(ApiError::no_route());
            }
            Ok(openapi_v3(group, v, &rs))
        }
        _ => Err(ApiError::no_route()),
    }
}

/// A minimal OpenAPI v3 document for one group/version: one PATCH operation per resource,
/// carrying the GVK extension and the write parameters, which is what kubectl consults to
/// decide that the server validates fields itself (`fieldValidation`). No schemas.
fn openapi_v3(group: &str, version: &str, rs: &[&ResourceInfo]) -> Value {
    let prefix = if group.is_empty() {
        format!("/api/{version}")
    } else {
        format!("/apis/{group}/{version}")
    };
    let mut paths = serde_json::Map::new();
    for r in rs {
        let item = if r.namespaced {
            format!("{prefix}/namespaces/{{namespace}}/{}/{{name}}", r.plural)
        } else {
            format!("{prefix}/{}/{{name}}", r.plural)
        };
        let params: Vec<Value> = ["dryRun", "fieldManager", "fieldValidation", "force"]
            .iter()
            .map(|n| json!({"name": n, "in": "query", "schema": {"type": "string"}, "uniqueItems": true}))
            .collect();
        paths.insert(
            item,
            json!({
                "patch": {
                    "operationId": format!("patch{}", r.kind),
                    "parameters": params,
                    "responses": {"200": {"description": "OK"}},
                    "x-kubernetes-action": "patch",
                    "x-kubernetes-group-version-kind": {"group": group, "version": version, "kind": r.kind},
                }
            }),
        );
    }
    json!({
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": format!("v{MAJOR}.{MINOR}.0")},
        "paths": paths,
        "components": {"schemas": {}},
    })
}
