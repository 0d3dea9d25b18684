//! A Kubernetes API server simulator for job-executor's tests.
