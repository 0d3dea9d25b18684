//! job-executor: turns CloudEvents into Kubernetes Jobs.

pub mod cli;
pub mod config;
pub mod event;
pub mod files;
pub mod matching;
pub mod names;
pub mod render;
pub mod settings;
pub mod stage;
