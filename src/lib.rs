//! job-executor: turns CloudEvents into Kubernetes Jobs.

pub mod config;
pub mod event;
pub mod matching;
pub mod names;
pub mod render;
pub mod settings;
