//! `job-executor check-run`: parses `run`'s flags and environment exactly as `run` does, checks
//! the settings and the sink, prints the result and exits, without a cluster. Used to check a
//! Deployment's arguments and environment (tests/install.rs) and by people changing them.

use std::process::ExitCode;
use std::time::Duration;

use super::RunArgs;
use crate::settings::SettingsError;
use crate::sink::{Sink, SinkError};
use crate::source::git::GitError;
use crate::source::git::layout::Lookup;

#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error(transparent)]
    Settings(#[from] SettingsError),
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error(transparent)]
    GitLayout(#[from] GitError),
}

const REDACTED: &str = "<redacted>";

/// Builds what `run` builds before it connects, then prints the arguments (secrets redacted).
pub fn run_check(args: &RunArgs) -> Result<ExitCode, CheckError> {
    args.install.settings()?;
    let operator = &args.operator;
    Sink::new(
        &operator.sink_url,
        operator.sink_mode,
        &operator.sink_headers,
        Duration::from_secs(operator.sink_timeout_seconds),
    )?;
    if args.git.git_url.is_some() {
        for lookup in &args.git.git_lookups {
            Lookup::parse(lookup)?;
        }
    }
    let mut shown = args.clone();
    shown.git.git_password = shown.git.git_password.map(|_| REDACTED.to_string());
    shown.operator.ingest_token = shown.operator.ingest_token.map(|_| REDACTED.to_string());
    shown.operator.sink_headers = shown
        .operator
        .sink_headers
        .iter()
        .map(|line| match line.split_once(':') {
            Some((name, _)) => format!("{}: {REDACTED}", name.trim()),
            None => REDACTED.to_string(),
        })
        .collect();
    println!("{shown:#?}");
    println!("ok: `job-executor run` accepts these arguments and environment");
    Ok(ExitCode::SUCCESS)
}
