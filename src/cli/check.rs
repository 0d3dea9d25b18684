//! `job-executor check-run`: parses `run`'s flags and environment exactly as `run` does, checks
//! the settings and the sink, prints every effective setting with where it came from, and exits,
//! without a cluster. Used to check a Deployment's arguments and environment
//! (tests/install.rs) and by people changing them.

use std::process::ExitCode;

use clap::parser::ValueSource;
use clap::{ArgAction, ArgMatches, CommandFactory};

use super::{Cli, RunArgs};
use crate::settings::SettingsError;
use crate::sink::SinkError;
use crate::source::git::{GitError, GitMetrics, mask_credentials};

#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error(transparent)]
    Settings(#[from] SettingsError),
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error(transparent)]
    GitLayout(#[from] GitError),
    #[error(transparent)]
    Lease(#[from] crate::leader::LeaseError),
    #[error(transparent)]
    Trace(#[from] crate::trace::TraceError),
    #[error(transparent)]
    Nats(#[from] crate::ingest::nats::NatsError),
    #[error(transparent)]
    Notify(#[from] crate::sink::notify::NotifyError),
}

/// What a secret's value is shown as: that it is set, never what it is.
const MASK: &str = "****";

/// One setting as `check-run` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SettingLine {
    /// The flag, e.g. `--job-namespace`.
    name: String,
    /// The effective value as given (list items joined with `,`), secrets masked.
    value: String,
    /// `flag`, `env JOB_EXECUTOR_…` or `default`.
    source: String,
}

/// Builds what `run` builds before it connects, then prints every setting, its value (secrets
/// masked) and its source. `matches` are the parsed `check-run` arguments `args` came from.
pub fn run_check(args: &RunArgs, matches: &ArgMatches) -> Result<ExitCode, CheckError> {
    // First: a misspelt setting may be why a check below fails.
    for unknown in super::unknown_settings_in_environment() {
        eprintln!("warning: {unknown}");
    }
    args.operator.check()?;
    let settings = args.install.settings()?;
    crate::sink::notify::check_targets(args.notify.notify_dir.as_deref(), &settings.notify)?;
    args.leader.settings()?;
    args.sink.check()?;
    args.nats.source()?;
    if let Some(endpoint) = args.operator.otlp_endpoint.as_deref() {
        crate::trace::traces_url(endpoint)?;
    }
    // The git source as `run` builds it, up to the clone cache (which belongs to the running
    // operator): the URL and the lookups.
    if let Some(git) = args.git.clone().settings(GitMetrics::default()) {
        git.parse()?;
    }
    crate::out!("{}", render_table(&setting_lines(matches)));
    crate::outln!("ok: `job-executor run` accepts these arguments and environment");
    Ok(ExitCode::SUCCESS)
}

/// Every option of `run`, in the order `run --help` lists them.
fn setting_lines(matches: &ArgMatches) -> Vec<SettingLine> {
    let cli = Cli::command();
    let Some(command) = cli.find_subcommand("check-run") else {
        return Vec::new();
    };
    command
        .get_arguments()
        .filter(|arg| !matches!(arg.get_action(), ArgAction::Help | ArgAction::Version))
        // As `run --help` lists them: not the hidden test-only ones (`--test-clock`).
        .filter(|arg| !arg.is_hide_set())
        .filter_map(|arg| {
            let long = arg.get_long()?;
            let id = arg.get_id().as_str();
            let raw: Vec<String> = matches
                .try_get_raw(id)
                .ok()
                .flatten()
                .map(|values| {
                    values
                        .map(|value| value.to_string_lossy().into_owned())
                        .collect()
                })
                .unwrap_or_default();
            let source = match matches.value_source(id) {
                Some(ValueSource::CommandLine) => "flag".to_string(),
                Some(ValueSource::EnvVariable) => match arg.get_env() {
                    Some(env) => format!("env {}", env.to_string_lossy()),
                    None => "env".to_string(),
                },
                _ => "default".to_string(),
            };
            // A flag whose environment value `--help` hides is a secret.
            let value = show_value(id, &raw, arg.is_hide_env_values_set());
            Some(SettingLine {
                name: format!("--{long}"),
                value,
                source,
            })
        })
        .collect()
}

/// The value of setting `id` as shown: `(not set)`, `""`, or the values joined with `,`, with
/// secrets masked (a sink header keeps its name, a git URL all but its credentials).
fn show_value(id: &str, raw: &[String], secret: bool) -> String {
    if raw.is_empty() {
        return "(not set)".to_string();
    }
    let shown: Vec<String> = raw
        .iter()
        .map(|value| match (secret, id) {
            _ if value.is_empty() => "\"\"".to_string(),
            (false, _) => value.clone(),
            // A URL that may carry credentials (`nats://user:password@…`, a token in its
            // query) shows all but them; NATS takes a list of servers (a comma elsewhere is
            // the URL's own, as in a query `?fields=a,b&code=…`).
            (true, "nats_url") => value
                .split(',')
                .map(shown_url)
                .collect::<Vec<_>>()
                .join(","),
            (true, "git_url" | "sink_url" | "dead_letter_sink_url" | "otlp_endpoint") => {
                shown_url(value)
            }
            (true, "sink_headers") => match value.split_once(':') {
                Some((name, _)) => format!("{}: {MASK}", name.trim()),
                None => MASK.to_string(),
            },
            (true, _) => MASK.to_string(),
        })
        .collect();
    shown.join(",")
}

/// A URL shown without its credentials, query or fragment.
fn shown_url(url: &str) -> String {
    crate::sink::query_masked(&mask_credentials(url))
}

/// The lines as a table with a header. The value column fits the values of at most
/// `WIDEST_VALUE` characters; a longer value pushes its own source to the right.
fn render_table(lines: &[SettingLine]) -> String {
    const HEADER: (&str, &str, &str) = ("SETTING", "VALUE", "SOURCE");
    const WIDEST_VALUE: usize = 48;
    let name_width = lines
        .iter()
        .map(|line| line.name.chars().count())
        .chain([HEADER.0.len()])
        .max()
        .unwrap_or_default();
    let value_width = lines
        .iter()
        .map(|line| line.value.chars().count())
        .filter(|width| *width <= WIDEST_VALUE)
        .chain([HEADER.1.len()])
        .max()
        .unwrap_or_default();
    let mut table = String::new();
    let rows = [(HEADER.0, HEADER.1, HEADER.2)]
        .into_iter()
        .chain(lines.iter().map(|line| {
            (
                line.name.as_str(),
                line.value.as_str(),
                line.source.as_str(),
            )
        }));
    for (name, value, source) in rows {
        table.push_str(&format!(
            "{name:<name_width$}  {value:<value_width$}  {source}\n"
        ));
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(argv: &[&str]) -> Vec<SettingLine> {
        let mut full = vec!["job-executor", "check-run"];
        full.extend_from_slice(argv);
        let matches = Cli::command().try_get_matches_from(full).unwrap();
        let (_, sub) = matches.subcommand().unwrap();
        setting_lines(sub)
    }

    fn line<'a>(lines: &'a [SettingLine], name: &str) -> &'a SettingLine {
        lines.iter().find(|l| l.name == name).unwrap()
    }

    #[test]
    fn every_option_of_run_is_listed_with_its_source() {
        let shown = lines(&[
            "--config-dir",
            "/c",
            "--sink-url",
            "http://sink",
            "--job-namespace",
            "jobs",
        ]);
        let run = Cli::command();
        let options = run
            .find_subcommand("run")
            .unwrap()
            .get_arguments()
            .filter(|a| a.get_long().is_some() && !a.is_hide_set())
            .count();
        assert_eq!(shown.len(), options);
        assert!(shown.iter().all(|line| line.name != "--test-clock"));
        let namespace = line(&shown, "--job-namespace");
        assert_eq!(
            (namespace.value.as_str(), namespace.source.as_str()),
            ("jobs", "flag")
        );
        let cpu = line(&shown, "--default-cpu-request");
        assert_eq!(cpu.source, "default");
        assert_eq!(cpu.value, crate::settings::DEFAULT_CPU_REQUEST);
        let privileged = line(&shown, "--allow-privileged");
        assert_eq!(
            (privileged.value.as_str(), privileged.source.as_str()),
            ("false", "default")
        );
        let token = line(&shown, "--ingest-token");
        assert_eq!(
            (token.value.as_str(), token.source.as_str()),
            ("(not set)", "default")
        );
        let lookups = line(&shown, "--git-lookup");
        assert!(lookups.value.contains(','), "{lookups:?}");
    }

    #[test]
    fn secrets_are_masked() {
        let shown = lines(&[
            "--git-url",
            "https://alice:s3cret@git.example.com/repo.git",
            "--git-password",
            "pa55word",
            "--sink-url",
            "https://hooks.example/in?fields=a,b&token=qu3ry",
            "--dead-letter-sink-url",
            "https://dl:d3ad@dead.example/x#fr4g",
            "--nats-url",
            "nats://a:4222,nats://u:n4ts@b:4222",
            "--sink-header",
            "x-token: t0ken,authorization: Bearer b3arer",
            "--ingest-token",
            "1ngest",
            "--git-username",
            "alice",
        ]);
        let value = |name: &str| line(&shown, name).value.clone();
        assert_eq!(value("--git-url"), "https://****@git.example.com/repo.git");
        assert_eq!(value("--sink-url"), "https://hooks.example/in?****");
        assert_eq!(
            value("--dead-letter-sink-url"),
            "https://****@dead.example/x#****"
        );
        assert_eq!(value("--nats-url"), "nats://a:4222,nats://****@b:4222");
        assert_eq!(value("--git-password"), MASK);
        assert_eq!(value("--ingest-token"), MASK);
        assert_eq!(value("--sink-header"), "x-token: ****,authorization: ****");
        // The user name is not a secret (the same as in the credentials directory).
        assert_eq!(value("--git-username"), "alice");
        let table = render_table(&shown);
        for secret in [
            "s3cret", "pa55word", "t0ken", "b3arer", "1ngest", "qu3ry", "d3ad", "fr4g", "n4ts",
        ] {
            assert!(!table.contains(secret), "{secret} shown:\n{table}");
        }
        // An empty secret is shown as empty (`run` refuses it, as the check does).
        let shown = lines(&[
            "--config-dir",
            "/c",
            "--sink-url",
            "http://sink",
            "--ingest-token",
            "",
        ]);
        assert_eq!(line(&shown, "--ingest-token").value, "\"\"");
    }

    #[test]
    fn the_secret_options_are_the_ones_masked() {
        let cli = Cli::command();
        let mut secrets: Vec<&str> = cli
            .find_subcommand("check-run")
            .unwrap()
            .get_arguments()
            .filter(|a| a.is_hide_env_values_set())
            .map(|a| a.get_id().as_str())
            .collect();
        secrets.sort_unstable();
        assert_eq!(
            secrets,
            [
                "dead_letter_sink_url",
                "git_password",
                "git_url",
                "ingest_token",
                "nats_url",
                "otlp_endpoint",
                "sink_headers",
                "sink_url"
            ]
        );
    }

    #[test]
    fn the_table_aligns_its_columns() {
        let table = render_table(&[
            SettingLine {
                name: "--a".into(),
                value: "1".into(),
                source: "flag".into(),
            },
            SettingLine {
                name: "--longer".into(),
                value: "(not set)".into(),
                source: "env JOB_EXECUTOR_LONGER".into(),
            },
        ]);
        assert_eq!(
            table,
            "SETTING   VALUE      SOURCE\n\
             --a       1          flag\n\
             --longer  (not set)  env JOB_EXECUTOR_LONGER\n"
        );
    }
}
