//! job-executor: turns CloudEvents into Kubernetes Jobs.
