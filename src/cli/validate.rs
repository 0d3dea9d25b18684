//! `job-executor validate`: every problem of every file, as `file:line:col: message`.

use std::process::ExitCode;

use super::ValidateArgs;
use crate::config::{self, ConfigError, format_problem};

pub fn run_validate(args: &ValidateArgs) -> ExitCode {
    let mut failed = false;
    for path in &args.files {
        let file = path.display().to_string();
        match config::load_file(path) {
            Ok(valid) => {
                for warning in &valid.warnings {
                    eprintln!("{} (warning)", format_problem(&file, warning));
                }
                // As the operator takes a config: its event names compiled together too (past
                // the glob set's size limit, a config that loads cannot be used).
                if let Err(error) = crate::matching::Matcher::compile(&valid.config) {
                    failed = true;
                    crate::outln!("{file}: {error}");
                    continue;
                }
                crate::outln!("{file}: ok ({} action(s))", valid.config.actions.len());
            }
            Err(ConfigError::Invalid { file, problems, .. }) => {
                failed = true;
                for problem in &problems {
                    crate::outln!("{}", format_problem(&file, problem));
                }
            }
            Err(error) => {
                failed = true;
                crate::outln!("{error}");
            }
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
