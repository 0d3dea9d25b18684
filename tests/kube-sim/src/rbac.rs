//! Authentication by bearer token and authorization by RBAC, as the API server's RBAC
//! authorizer does it, from the Roles, ClusterRoles and their bindings stored in the simulator.
//!
//! Requests without credentials act as a cluster admin (so tests and kubectl set things up as
//! before); a request with a token from [`crate::Sim::token_for`] acts as that user and is
//! allowed only what the stored RBAC objects grant it; an unknown token gets `401`.
//! Non-resource requests (discovery, `/version`, `/openapi`) are allowed to every
//! authenticated user, as the default `system:discovery` and `system:public-info-viewer`
//! ClusterRoles do in a real cluster.

use std::collections::HashMap;
use std::sync::Mutex;

use axum::http::{HeaderMap, header};
use serde_json::{Value, json};

use crate::Shared;
use crate::api::RequestInfo;
use crate::error::ApiError;

const RBAC_GROUP: &str = "rbac.authorization.k8s.io";

/// An authenticated user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserInfo {
    pub name: String,
    pub groups: Vec<String>,
}

impl UserInfo {
    /// The groups the API server gives a user: ServiceAccounts (`system:serviceaccount:NS:NAME`)
    /// get `system:serviceaccounts` and `system:serviceaccounts:NS`; everyone
    /// `system:authenticated`.
    pub fn new(name: &str) -> UserInfo {
        let mut groups = Vec::new();
        if let Some(rest) = name.strip_prefix("system:serviceaccount:")
            && let Some((namespace, _)) = rest.split_once(':')
        {
            groups.push("system:serviceaccounts".to_string());
            groups.push(format!("system:serviceaccounts:{namespace}"));
        }
        groups.push("system:authenticated".to_string());
        UserInfo {
            name: name.to_string(),
            groups,
        }
    }
}

/// Who a request acts as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    /// No credentials: everything is allowed.
    Admin,
    User(UserInfo),
}

/// The token table.
#[derive(Debug, Default)]
pub struct Users {
    tokens: Mutex<HashMap<String, UserInfo>>,
}

impl Users {
    /// The token of `user` (the same one on every call).
    pub fn token_for(&self, user: &str) -> String {
        let mut tokens = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((token, _)) = tokens.iter().find(|(_, u)| u.name == user) {
            return token.clone();
        }
        let token = format!("kube-sim-{}", crate::util::random_suffix(24));
        tokens.insert(token.clone(), UserInfo::new(user));
        token
    }

    pub fn authenticate(&self, headers: &HeaderMap) -> Result<Identity, ApiError> {
        let Some(value) = headers.get(header::AUTHORIZATION) else {
            return Ok(Identity::Admin);
        };
        let token = value
            .to_str()
            .ok()
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .unwrap_or("");
        self.tokens
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(token)
            .cloned()
            .map(Identity::User)
            .ok_or_else(|| ApiError::new(401, "Unauthorized", "Unauthorized"))
    }
}

/// Authenticates and authorizes one request; returns the user name for the request log
/// (empty for the credential-less admin) and the verdict.
pub fn check(
    shared: &Shared,
    headers: &HeaderMap,
    info: &RequestInfo,
) -> (String, Result<(), ApiError>) {
    match shared.users.authenticate(headers) {
        Ok(Identity::Admin) => (String::new(), Ok(())),
        Ok(Identity::User(user)) => {
            let verdict =
                if !info.is_resource || allowed(&rules_for(shared, &user, &info.namespace), info) {
                    Ok(())
                } else {
                    Err(forbidden(&user.name, info))
                };
            (user.name, verdict)
        }
        Err(error) => ("<unknown token>".to_string(), Err(error)),
    }
}

/// The rules that apply to `user` for a request in `namespace` ("" for cluster scope).
pub fn rules_for(shared: &Shared, user: &UserInfo, namespace: &str) -> Vec<Value> {
    let key = |plural: &str| (RBAC_GROUP.to_string(), plural.to_string());
    let role_rules = |kind: &str, namespace: &str, name: &str| -> Vec<Value> {
        let found = match kind {
            "ClusterRole" => shared.store.get(&key("clusterroles"), "", name),
            "Role" => shared.store.get(&key("roles"), namespace, name),
            _ => None,
        };
        found
            .and_then(|role| role.get("rules").and_then(Value::as_array).cloned())
            .unwrap_or_default()
    };
    let mut rules = Vec::new();
    for binding in shared.store.list(&key("clusterrolebindings"), None).0 {
        if binds(&binding, user) && binding.pointer("/roleRef/kind") == Some(&json!("ClusterRole"))
        {
            rules.extend(role_rules(
                "ClusterRole",
                "",
                str_at(&binding, "/roleRef/name"),
            ));
        }
    }
    if !namespace.is_empty() {
        for binding in shared.store.list(&key("rolebindings"), Some(namespace)).0 {
            if binds(&binding, user) {
                rules.extend(role_rules(
                    str_at(&binding, "/roleRef/kind"),
                    namespace,
                    str_at(&binding, "/roleRef/name"),
                ));
            }
        }
    }
    rules
}

fn str_at<'a>(value: &'a Value, pointer: &str) -> &'a str {
    value.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

/// Whether a (Cluster)RoleBinding names the user, one of its groups, or its ServiceAccount.
fn binds(binding: &Value, user: &UserInfo) -> bool {
    let subjects = binding.get("subjects").and_then(Value::as_array);
    subjects.into_iter().flatten().any(|subject| {
        let name = str_at(subject, "/name");
        match str_at(subject, "/kind") {
            "User" => user.name == name,
            "Group" => user.groups.iter().any(|g| g == name),
            "ServiceAccount" => {
                user.name
                    == format!(
                        "system:serviceaccount:{}:{name}",
                        str_at(subject, "/namespace")
                    )
            }
            _ => false,
        }
    })
}

/// Whether any rule allows the request (the RBAC authorizer's `RuleAllows`).
pub fn allowed(rules: &[Value], info: &RequestInfo) -> bool {
    let resource = if info.subresource.is_empty() {
        info.resource.clone()
    } else {
        format!("{}/{}", info.resource, info.subresource)
    };
    let list = |rule: &Value, field: &str| -> Vec<String> {
        rule.get(field)
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default()
    };
    rules.iter().any(|rule| {
        let verbs = list(rule, "verbs");
        let groups = list(rule, "apiGroups");
        let resources = list(rule, "resources");
        let names = list(rule, "resourceNames");
        (verbs.iter().any(|v| v == "*" || *v == info.verb))
            && groups.iter().any(|g| g == "*" || *g == info.group)
            && resources.iter().any(|r| {
                r == "*"
                    || *r == resource
                    || (!info.subresource.is_empty()
                        && r.strip_prefix("*/") == Some(info.subresource.as_str()))
            })
            && (names.is_empty() || (!info.name.is_empty() && names.contains(&info.name)))
    })
}

/// The API server's `403 Forbidden` for an RBAC denial.
pub fn forbidden(user: &str, info: &RequestInfo) -> ApiError {
    let resource = if info.subresource.is_empty() {
        info.resource.clone()
    } else {
        format!("{}/{}", info.resource, info.subresource)
    };
    let scope = if info.namespace.is_empty() {
        "at the cluster scope".to_string()
    } else {
        format!("in the namespace \"{}\"", info.namespace)
    };
    let reason = format!(
        "User \"{user}\" cannot {} resource \"{resource}\" in API group \"{}\" {scope}",
        info.verb, info.group
    );
    let qualified = crate::error::qualified(&info.group, &info.resource);
    let message = if info.name.is_empty() {
        format!("{qualified} is forbidden: {reason}")
    } else {
        format!("{qualified} \"{}\" is forbidden: {reason}", info.name)
    };
    let mut details = json!({"kind": info.resource});
    if !info.name.is_empty() {
        details["name"] = json!(info.name);
    }
    if !info.group.is_empty() {
        details["group"] = json!(info.group);
    }
    ApiError::forbidden(message).with_details(details)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(verb: &str, group: &str, resource: &str, sub: &str, name: &str) -> RequestInfo {
        RequestInfo {
            verb: verb.into(),
            group: group.into(),
            version: "v1".into(),
            resource: resource.into(),
            subresource: sub.into(),
            namespace: "ops".into(),
            name: name.into(),
            is_resource: true,
        }
    }

    #[test]
    fn rules_match_verbs_groups_resources_subresources_and_names() {
        let rules = vec![
            json!({"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["create", "list"]}),
            json!({"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]}),
            json!({"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"], "resourceNames": ["settings"]}),
            json!({"apiGroups": ["x.dev"], "resources": ["*/status"], "verbs": ["*"]}),
        ];
        let allows = |r: RequestInfo| allowed(&rules, &r);
        assert!(allows(request("create", "batch", "jobs", "", "")));
        assert!(!allows(request("delete", "batch", "jobs", "", "j")));
        assert!(
            !allows(request("create", "", "jobs", "", "")),
            "the group counts"
        );
        assert!(allows(request("get", "", "pods", "log", "p")));
        assert!(
            !allows(request("get", "", "pods", "", "p")),
            "a subresource grants only itself"
        );
        assert!(allows(request("get", "", "configmaps", "", "settings")));
        assert!(!allows(request("get", "", "configmaps", "", "other")));
        assert!(!allows(request("list", "", "configmaps", "", "")));
        assert!(allows(request("patch", "x.dev", "runs", "status", "r")));
        assert!(!allows(request("patch", "x.dev", "runs", "", "r")));
    }

    #[test]
    fn denials_read_like_the_api_server() {
        let e = forbidden(
            "system:serviceaccount:ops:op",
            &request("create", "batch", "jobs", "", ""),
        );
        assert_eq!(e.code, 403);
        assert_eq!(
            e.message,
            "jobs.batch is forbidden: User \"system:serviceaccount:ops:op\" cannot create resource \"jobs\" in API group \"batch\" in the namespace \"ops\""
        );
        let e = forbidden("u", &request("get", "", "pods", "log", "p-1"));
        assert_eq!(
            e.message,
            "pods \"p-1\" is forbidden: User \"u\" cannot get resource \"pods/log\" in API group \"\" in the namespace \"ops\""
        );
        let mut cluster = request("list", "", "namespaces", "", "");
        cluster.namespace.clear();
        assert!(
            forbidden("u", &cluster)
                .message
                .ends_with("at the cluster scope")
        );
    }

    #[test]
    fn service_accounts_get_their_groups() {
        let user = UserInfo::new("system:serviceaccount:ops:op");
        assert_eq!(
            user.groups,
            [
                "system:serviceaccounts",
                "system:serviceaccounts:ops",
                "system:authenticated"
            ]
        );
        assert!(binds(
            &json!({"subjects": [{"kind": "ServiceAccount", "name": "op", "namespace": "ops"}]}),
            &user
        ));
        assert!(!binds(
            &json!({"subjects": [{"kind": "ServiceAccount", "name": "op", "namespace": "other"}]}),
            &user
        ));
        assert!(binds(
            &json!({"subjects": [{"kind": "Group", "name": "system:serviceaccounts:ops"}]}),
            &user
        ));
    }
}
