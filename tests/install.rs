//! The installation, as users do it: the container image's Dockerfile, the Helm chart (rendered
//! and linted by the real Helm engine), the plain manifests in deploy/ (the chart rendered with
//! documented values), all validated against the upstream Kubernetes schemas; the Deployment's
//! arguments and environment accepted by `job-executor run`; `job-executor send`; and the
//! shipped Role proven least-privilege against kube-sim enforcing it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "install/common.rs"]
mod common;

#[path = "install/image.rs"]
mod image;

#[path = "install/chart.rs"]
mod chart;

#[path = "install/settings.rs"]
mod settings;

#[path = "install/send.rs"]
mod send;

#[path = "install/rbac.rs"]
mod rbac;
