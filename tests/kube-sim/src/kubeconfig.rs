//! The kubeconfig that points clients (kube-rs, kubectl, a spawned operator) at the simulator.

use std::net::SocketAddr;

/// Cluster, context and user name used in the kubeconfig.
pub const CONTEXT: &str = "kube-sim";

/// A kubeconfig (YAML) for `http://addr`, default namespace `default`, no credentials.
pub fn yaml(addr: SocketAddr) -> String {
    with_user(addr, "{}")
}

/// The same, authenticating with a bearer token.
pub fn yaml_with_token(addr: SocketAddr, token: &str) -> String {
    with_user(addr, &format!("{{token: {token}}}"))
}

fn with_user(addr: SocketAddr, user: &str) -> String {
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: {CONTEXT}
  cluster:
    server: http://{addr}
contexts:
- name: {CONTEXT}
  context:
    cluster: {CONTEXT}
    user: {CONTEXT}
    namespace: default
current-context: {CONTEXT}
users:
- name: {CONTEXT}
  user: {user}
preferences: {{}}
"
    )
}
