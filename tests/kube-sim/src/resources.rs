//! The table of served resources: the built-in ones plus those of established CRDs.

use serde_json::Value;

/// Where objects of a resource are stored: (group, plural), the same for all served versions.
pub type ResKey = (String, String);

/// One additional printer column of a CRD version.
#[derive(Debug, Clone, PartialEq)]
pub struct PrinterColumn {
    pub name: String,
    pub type_: String,
    pub format: String,
    pub description: String,
    pub priority: i64,
    pub json_path: String,
}

/// A served resource (one group/version/plural).
#[derive(Debug, Clone)]
pub struct ResourceInfo {
    pub group: String,
    pub version: String,
    pub kind: String,
    pub list_kind: String,
    pub plural: String,
    pub singular: String,
    pub namespaced: bool,
    pub short_names: Vec<String>,
    pub categories: Vec<String>,
    /// Has a `/status` subresource.
    pub status: bool,
    /// Has `/log` (pods).
    pub log: bool,
    /// Maintains `metadata.generation`.
    pub generation: bool,
    /// Served from a CRD.
    pub crd: bool,
    pub printer_columns: Vec<PrinterColumn>,
    /// The CRD version's `openAPIV3Schema`, used for pruning and defaulting.
    pub schema: Option<Value>,
    /// The CRD version's `selectableFields`, as field selectors name them (`status.done`).
    pub selectable_fields: Vec<String>,
}

impl ResourceInfo {
    /// Whether a PUT without a `resourceVersion` overwrites what is stored (the real server's
    /// `AllowUnconditionalUpdate`): not for custom resources, CRDs and Leases, which answer 422.
    pub fn updates_unconditionally(&self) -> bool {
        !(self.crd
            || self.group == "apiextensions.k8s.io"
            || self.group == "coordination.k8s.io" && self.plural == "leases")
    }

    pub fn key(&self) -> ResKey {
        (self.group.clone(), self.plural.clone())
    }

    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }
}

pub const VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

#[allow(clippy::too_many_arguments)]
fn builtin(
    group: &str,
    version: &str,
    kind: &str,
    plural: &str,
    namespaced: bool,
    short: &[&str],
    status: bool,
    generation: bool,
) -> ResourceInfo {
    ResourceInfo {
        group: group.into(),
        version: version.into(),
        kind: kind.into(),
        list_kind: format!("{kind}List"),
        plural: plural.into(),
        singular: kind.to_lowercase(),
        namespaced,
        short_names: short.iter().map(|s| s.to_string()).collect(),
        categories: vec![],
        status,
        log: false,
        generation,
        crd: false,
        printer_columns: vec![],
        schema: None,
        selectable_fields: vec![],
    }
}

/// The registry of served resources.
#[derive(Debug, Clone)]
pub struct Registry {
    pub resources: Vec<ResourceInfo>,
}

impl Default for Registry {
    fn default() -> Self {
        let mut pods = builtin("", "v1", "Pod", "pods", true, &["po"], true, false);
        pods.log = true;
        pods.categories = vec!["all".into()];
        let mut jobs = builtin("batch", "v1", "Job", "jobs", true, &[], true, true);
        jobs.categories = vec!["all".into()];
        Registry {
            resources: vec![
                builtin(
                    "",
                    "v1",
                    "Namespace",
                    "namespaces",
                    false,
                    &["ns"],
                    true,
                    false,
                ),
                pods,
                builtin(
                    "",
                    "v1",
                    "ConfigMap",
                    "configmaps",
                    true,
                    &["cm"],
                    false,
                    false,
                ),
                builtin("", "v1", "Secret", "secrets", true, &[], false, false),
                builtin(
                    "",
                    "v1",
                    "ServiceAccount",
                    "serviceaccounts",
                    true,
                    &["sa"],
                    false,
                    false,
                ),
                builtin("", "v1", "Event", "events", true, &["ev"], false, false),
                jobs,
                builtin(
                    "coordination.k8s.io",
                    "v1",
                    "Lease",
                    "leases",
                    true,
                    &[],
                    false,
                    false,
                ),
                builtin(
                    "events.k8s.io",
                    "v1",
                    "Event",
                    "events",
                    true,
                    &["ev"],
                    false,
                    false,
                ),
                builtin("", "v1", "Service", "services", true, &["svc"], true, false),
                builtin(
                    "apps",
                    "v1",
                    "Deployment",
                    "deployments",
                    true,
                    &["deploy"],
                    true,
                    true,
                ),
                builtin(
                    "policy",
                    "v1",
                    "PodDisruptionBudget",
                    "poddisruptionbudgets",
                    true,
                    &["pdb"],
                    true,
                    true,
                ),
                builtin(
                    "networking.k8s.io",
                    "v1",
                    "NetworkPolicy",
                    "networkpolicies",
                    true,
                    &["netpol"],
                    false,
                    true,
                ),
                builtin(
                    "rbac.authorization.k8s.io",
                    "v1",
                    "Role",
                    "roles",
                    true,
                    &[],
                    false,
                    false,
                ),
                builtin(
                    "rbac.authorization.k8s.io",
                    "v1",
                    "RoleBinding",
                    "rolebindings",
                    true,
                    &[],
                    false,
                    false,
                ),
                builtin(
                    "rbac.authorization.k8s.io",
                    "v1",
                    "ClusterRole",
                    "clusterroles",
                    false,
                    &[],
                    false,
                    false,
                ),
                builtin(
                    "rbac.authorization.k8s.io",
                    "v1",
                    "ClusterRoleBinding",
                    "clusterrolebindings",
                    false,
                    &[],
                    false,
                    false,
                ),
                builtin(
                    "apiextensions.k8s.io",
                    "v1",
                    "CustomResourceDefinition",
                    "customresourcedefinitions",
                    false,
                    &["crd", "crds"],
                    true,
                    true,
                ),
            ],
        }
    }
}

impl Registry {
    pub fn find(&self, group: &str, version: &str, plural: &str) -> Option<&ResourceInfo> {
        self.resources
            .iter()
            .find(|r| r.group == group && r.version == version && r.plural == plural)
    }

    /// Any served version of (group, plural): used by internal controllers.
    pub fn find_any(&self, group: &str, plural: &str) -> Option<&ResourceInfo> {
        self.resources
            .iter()
            .find(|r| r.group == group && r.plural == plural)
    }

    /// All groups with their versions, in registration order (core group first, as "").
    pub fn groups(&self) -> Vec<(String, Vec<String>)> {
        let mut out: Vec<(String, Vec<String>)> = Vec::new();
        for r in &self.resources {
            match out.iter_mut().find(|(g, _)| *g == r.group) {
                Some((_, vs)) => {
                    if !vs.contains(&r.version) {
                        vs.push(r.version.clone());
                    }
                }
                None => out.push((r.group.clone(), vec![r.version.clone()])),
            }
        }
        out
    }

    pub fn in_group_version(&self, group: &str, version: &str) -> Vec<&ResourceInfo> {
        self.resources
            .iter()
            .filter(|r| r.group == group && r.version == version)
            .collect()
    }

    /// Registers (or re-registers) the served versions of a CRD.
    pub fn register_crd(&mut self, crd: &Value) -> Result<(), String> {
        let spec = crd.get("spec").ok_or("spec: Required value")?;
        let group = spec
            .get("group")
            .and_then(Value::as_str)
            .ok_or("spec.group: Required value")?;
        let names = spec.get("names").ok_or("spec.names: Required value")?;
        let plural = names
            .get("plural")
            .and_then(Value::as_str)
            .ok_or("spec.names.plural: Required value")?;
        let kind = names
            .get("kind")
            .and_then(Value::as_str)
            .ok_or("spec.names.kind: Required value")?;
        let namespaced = spec.get("scope").and_then(Value::as_str) != Some("Cluster");
        let strs = |v: Option<&Value>| -> Vec<String> {
            v.and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|x| x.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default()
        };
        let versions = spec
            .get("versions")
            .and_then(Value::as_array)
            .ok_or("spec.versions: Required value")?;
        self.unregister(group, plural);
        for v in versions {
            if v.get("served").and_then(Value::as_bool) == Some(false) {
                continue;
            }
            let Some(version) = v.get("name").and_then(Value::as_str) else {
                continue;
            };
            let printer_columns = v
                .get("additionalPrinterColumns")
                .and_then(Value::as_array)
                .map(|cols| {
                    cols.iter()
                        .map(|c| PrinterColumn {
                            name: str_of(c, "name"),
                            type_: str_of(c, "type"),
                            format: str_of(c, "format"),
                            description: str_of(c, "description"),
                            priority: c.get("priority").and_then(Value::as_i64).unwrap_or(0),
                            json_path: str_of(c, "jsonPath"),
                        })
                        .collect()
                })
                .unwrap_or_default();
            self.resources.push(ResourceInfo {
                group: group.into(),
                version: version.into(),
                kind: kind.into(),
                list_kind: names
                    .get("listKind")
                    .and_then(Value::as_str)
                    .map(str::to_string)
                    .unwrap_or_else(|| format!("{kind}List")),
                plural: plural.into(),
                singular: names
                    .get("singular")
                    .and_then(Value::as_str)
                    .map(str::to_string)
                    .unwrap_or_else(|| kind.to_lowercase()),
                namespaced,
                short_names: strs(names.get("shortNames")),
                categories: strs(names.get("categories")),
                status: v
                    .get("subresources")
                    .and_then(|s| s.get("status"))
                    .is_some(),
                log: false,
                generation: true,
                crd: true,
                printer_columns,
                schema: v
                    .get("schema")
                    .and_then(|s| s.get("openAPIV3Schema"))
                    .cloned(),
                selectable_fields: v
                    .get("selectableFields")
                    .and_then(Value::as_array)
                    .map(|fields| {
                        fields
                            .iter()
                            .map(|f| str_of(f, "jsonPath").trim_start_matches('.').to_string())
                            .collect()
                    })
                    .unwrap_or_default(),
            });
        }
        Ok(())
    }

    pub fn unregister(&mut self, group: &str, plural: &str) {
        self.resources
            .retain(|r| !(r.crd && r.group == group && r.plural == plural));
    }
}

fn str_of(v: &Value, key: &str) -> String {
    v.get(key)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}
