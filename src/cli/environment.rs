//! Environment variables that look like settings of `run` but are none: a misspelt key of the
//! `job-executor-local` ConfigMap would otherwise be ignored without a word.

use clap::CommandFactory;

use super::Cli;

/// What every setting's environment variable starts with.
const PREFIX: &str = "JOB_EXECUTOR_";

/// Variables of the project's own scripts (`scripts/cluster`, the demo), which may be in the
/// environment the operator is started from.
const SCRIPT_VARIABLES: [&str; 4] = [
    "JOB_EXECUTOR_CLUSTER_DIR",
    "JOB_EXECUTOR_CLUSTER_CACHE",
    "JOB_EXECUTOR_DEMO_BIN",
    "JOB_EXECUTOR_DEMO_CHILD",
];

/// A variable named like a setting that is none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownSetting {
    pub name: String,
    /// The setting's variable it is most likely a misspelling of.
    pub closest: Option<String>,
}

impl std::fmt::Display for UnknownSetting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} is no setting of `job-executor run`", self.name)?;
        if let Some(closest) = &self.closest {
            write!(f, " (did you mean {closest}?)")?;
        }
        write!(f, "; it is ignored")
    }
}

/// The environment variables of `run`'s settings, and of `send`'s (a shell that runs the
/// operator may send events too, as the docs show).
fn setting_variables() -> Vec<String> {
    let cli = Cli::command();
    ["run", "send"]
        .into_iter()
        .filter_map(|name| cli.find_subcommand(name))
        .flat_map(|command| {
            command
                .get_arguments()
                .filter_map(|arg| arg.get_env())
                .map(|name| name.to_string_lossy().into_owned())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Those of the variables (name and value) that start like a setting's variable but are
/// none, in the order given.
pub fn unknown_settings<'a>(
    variables: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Vec<UnknownSetting> {
    let known = setting_variables();
    variables
        .into_iter()
        .filter(|(name, _)| name.starts_with(PREFIX))
        .filter(|(name, _)| !known.iter().any(|k| k == name) && !SCRIPT_VARIABLES.contains(name))
        .filter(|(name, value)| !is_service_link(name, value))
        .map(|(name, _)| UnknownSetting {
            closest: crate::config::suggest(name, known.iter().map(String::as_str))
                .map(str::to_string),
            name: name.to_string(),
        })
        .collect()
}

/// Whether `name=value` is one the kubelet sets for a Service of the pod's namespace (service
/// links: a Service `job-executor` gives `JOB_EXECUTOR_SERVICE_HOST=10.96.0.12`,
/// `JOB_EXECUTOR_PORT=tcp://10.96.0.12:8080` and the like). The value decides too: a
/// misspelt `JOB_EXECUTOR_LISTEN_PORT=9000` is no link.
fn is_service_link(name: &str, value: &str) -> bool {
    let address = || value.parse::<std::net::IpAddr>().is_ok();
    let port = || !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit());
    let url = || {
        ["tcp://", "udp://", "sctp://"]
            .iter()
            .any(|scheme| value.starts_with(scheme))
    };
    if name.ends_with("_SERVICE_HOST") {
        return address();
    }
    if name.ends_with("_SERVICE_PORT")
        || name
            .rsplit_once("_SERVICE_PORT_")
            .is_some_and(|(_, n)| !n.is_empty())
    {
        return port();
    }
    // `<SERVICE>_PORT`, `<SERVICE>_PORT_<number>_<PROTOCOL>` and that with `_PROTO`, `_PORT`
    // or `_ADDR` after it.
    if name.ends_with("_PORT") && url() {
        return true;
    }
    let Some((_, rest)) = name.rsplit_once("_PORT_") else {
        return false;
    };
    let (rest, is_value) = match ["_PROTO", "_ADDR", "_PORT"]
        .iter()
        .find_map(|suffix| rest.strip_suffix(suffix).map(|rest| (rest, *suffix)))
    {
        Some((rest, "_PROTO")) => (rest, ["tcp", "udp", "sctp"].contains(&value)),
        Some((rest, "_ADDR")) => (rest, address()),
        Some((rest, _)) => (rest, port()),
        None => (rest, url()),
    };
    is_value
        && rest.split_once('_').is_some_and(|(number, protocol)| {
            !number.is_empty()
                && number.bytes().all(|b| b.is_ascii_digit())
                && matches!(protocol, "TCP" | "UDP" | "SCTP")
        })
}

/// The unknown settings in this process's environment (variables that are no UTF-8 are not
/// ours).
pub fn unknown_settings_in_environment() -> Vec<UnknownSetting> {
    let variables: Vec<(String, String)> = std::env::vars_os()
        .filter_map(|(name, value)| Some((name.into_string().ok()?, value.into_string().ok()?)))
        .collect();
    unknown_settings(
        variables
            .iter()
            .map(|(name, value)| (name.as_str(), value.as_str())),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unknown(variables: &[(&str, &str)]) -> Vec<String> {
        unknown_settings(variables.iter().copied())
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn a_misspelt_setting_is_named_with_the_closest_one() {
        assert_eq!(
            unknown(&[
                ("JOB_EXECUTOR_GIT_URL", "https://git.example.com/c.git"),
                ("JOB_EXECUTOR_GIT_UR", "https://git.example.com/c.git"),
                ("JOB_EXECUTOR_REPOSITORY", "x"),
                ("PATH", "/bin"),
                ("JOB_EXECUTOR_CLUSTER_DIR", "/tmp"),
                // `send`'s, set in the shell that runs the operator too.
                ("JOB_EXECUTOR_SEND_TO", "http://localhost:8080/"),
                ("JOB_EXECUTOR_SEND_TIMEOUT_SECONDS", "5"),
                // Named like a service link, valued like a setting.
                ("JOB_EXECUTOR_LISTEN_PORT", "9000"),
            ]),
            [
                "JOB_EXECUTOR_GIT_UR is no setting of `job-executor run` (did you mean \
                 JOB_EXECUTOR_GIT_URL?); it is ignored",
                "JOB_EXECUTOR_REPOSITORY is no setting of `job-executor run`; it is ignored",
                "JOB_EXECUTOR_LISTEN_PORT is no setting of `job-executor run`; it is ignored",
            ]
        );
    }

    /// The kubelet's variables for the Services `job-executor` and `job-executor-admin`
    /// (ports named `http` and `admin`) are no settings and said nothing of.
    #[test]
    fn service_links_are_not_taken_for_settings() {
        let links = [
            ("JOB_EXECUTOR_SERVICE_HOST", "10.96.0.12"),
            ("JOB_EXECUTOR_SERVICE_PORT", "8080"),
            ("JOB_EXECUTOR_SERVICE_PORT_HTTP", "8080"),
            ("JOB_EXECUTOR_PORT", "tcp://10.96.0.12:8080"),
            ("JOB_EXECUTOR_PORT_8080_TCP", "tcp://10.96.0.12:8080"),
            ("JOB_EXECUTOR_PORT_8080_TCP_PROTO", "tcp"),
            ("JOB_EXECUTOR_PORT_8080_TCP_PORT", "8080"),
            ("JOB_EXECUTOR_PORT_8080_TCP_ADDR", "10.96.0.12"),
            ("JOB_EXECUTOR_ADMIN_SERVICE_HOST", "fd00::12"),
            ("JOB_EXECUTOR_ADMIN_SERVICE_PORT_ADMIN", "9090"),
            ("JOB_EXECUTOR_ADMIN_PORT_9090_UDP_ADDR", "10.96.0.13"),
        ];
        assert_eq!(unknown(&links), Vec::<String>::new());
        assert_eq!(
            unknown(&[
                ("JOB_EXECUTOR_PORT_HTTP_TCP", "tcp://10.96.0.12:8080"),
                ("JOB_EXECUTOR_SERVICE_PORT_", "8080"),
                ("JOB_EXECUTOR_SERVICE_HOST", "my-host"),
                ("JOB_EXECUTOR_ADMIN_PORT", "9090"),
            ])
            .len(),
            4
        );
    }

    #[test]
    fn every_setting_has_its_variable() {
        let known = setting_variables();
        assert!(known.contains(&"JOB_EXECUTOR_GIT_URL".to_string()));
        assert!(
            known.iter().all(|name| name.starts_with(PREFIX)),
            "{known:?}"
        );
    }
}
