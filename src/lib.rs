//! job-executor: turns CloudEvents into Kubernetes Jobs.

pub mod cli;
pub mod config;
pub mod controller;
pub mod crd;
pub mod event;
pub mod files;
pub mod health;
pub mod ingest;
pub mod json_text;
pub mod labels;
pub mod leader;
pub mod matching;
pub mod metrics;
pub mod names;
pub mod render;
pub mod schedule;
pub mod secret_file;
pub mod serve;
pub mod settings;
pub mod sink;
pub mod source;
pub mod stage;
pub mod throttle;
pub mod trace;
