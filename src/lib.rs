//! job-executor: turns CloudEvents into Kubernetes Jobs.

pub mod config;
