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

/// The environment variables of `run`'s settings.
fn setting_variables() -> Vec<String> {
    let cli = Cli::command();
    cli.find_subcommand("run")
        .map(|run| {
            run.get_arguments()
                .filter_map(|arg| arg.get_env())
                .map(|name| name.to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Those of `names` that start like a setting's variable but are none, in the order given.
pub fn unknown_settings(names: impl IntoIterator<Item = String>) -> Vec<UnknownSetting> {
    let known = setting_variables();
    names
        .into_iter()
        .filter(|name| name.starts_with(PREFIX))
        .filter(|name| !known.contains(name) && !SCRIPT_VARIABLES.contains(&name.as_str()))
        .filter(|name| !is_service_link(name))
        .map(|name| UnknownSetting {
            closest: crate::config::suggest(&name, known.iter().map(String::as_str))
                .map(str::to_string),
            name,
        })
        .collect()
}

/// Whether `name` is one the kubelet sets for a Service of the pod's namespace (service links:
/// a Service `job-executor` gives `JOB_EXECUTOR_SERVICE_HOST`, `JOB_EXECUTOR_PORT_8080_TCP_ADDR`
/// and the like).
fn is_service_link(name: &str) -> bool {
    if name.ends_with("_SERVICE_HOST") || name.ends_with("_PORT") {
        return true;
    }
    if let Some((_, port_name)) = name.rsplit_once("_SERVICE_PORT_") {
        return !port_name.is_empty();
    }
    // `<SERVICE>_PORT_<number>_<PROTOCOL>` with `_PROTO`, `_PORT` or `_ADDR` after it, or not.
    let Some((_, rest)) = name.rsplit_once("_PORT_") else {
        return false;
    };
    let rest = ["_PROTO", "_ADDR"]
        .iter()
        .find_map(|suffix| rest.strip_suffix(suffix))
        .unwrap_or(rest);
    match rest.split_once('_') {
        Some((port, protocol)) => {
            !port.is_empty()
                && port.bytes().all(|b| b.is_ascii_digit())
                && matches!(protocol, "TCP" | "UDP" | "SCTP")
        }
        None => false,
    }
}

/// The unknown settings in this process's environment (names that are no UTF-8 are not ours).
pub fn unknown_settings_in_environment() -> Vec<UnknownSetting> {
    unknown_settings(std::env::vars_os().filter_map(|(name, _)| name.into_string().ok()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unknown(names: &[&str]) -> Vec<String> {
        unknown_settings(names.iter().map(|name| name.to_string()))
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn a_misspelt_setting_is_named_with_the_closest_one() {
        assert_eq!(
            unknown(&[
                "JOB_EXECUTOR_GIT_URL",
                "JOB_EXECUTOR_GIT_UR",
                "JOB_EXECUTOR_REPOSITORY",
                "PATH",
                "JOB_EXECUTOR_CLUSTER_DIR",
            ]),
            [
                "JOB_EXECUTOR_GIT_UR is no setting of `job-executor run` (did you mean \
                 JOB_EXECUTOR_GIT_URL?); it is ignored",
                "JOB_EXECUTOR_REPOSITORY is no setting of `job-executor run`; it is ignored",
            ]
        );
    }

    /// The kubelet's variables for the Services `job-executor` and `job-executor-admin`
    /// (ports named `http` and `admin`) are no settings and said nothing of.
    #[test]
    fn service_links_are_not_taken_for_settings() {
        let links = [
            "JOB_EXECUTOR_SERVICE_HOST",
            "JOB_EXECUTOR_SERVICE_PORT",
            "JOB_EXECUTOR_SERVICE_PORT_HTTP",
            "JOB_EXECUTOR_PORT",
            "JOB_EXECUTOR_PORT_8080_TCP",
            "JOB_EXECUTOR_PORT_8080_TCP_PROTO",
            "JOB_EXECUTOR_PORT_8080_TCP_PORT",
            "JOB_EXECUTOR_PORT_8080_TCP_ADDR",
            "JOB_EXECUTOR_ADMIN_SERVICE_HOST",
            "JOB_EXECUTOR_ADMIN_SERVICE_PORT_ADMIN",
            "JOB_EXECUTOR_ADMIN_PORT_9090_UDP_ADDR",
        ];
        assert_eq!(unknown(&links), Vec::<String>::new());
        assert_eq!(
            unknown(&["JOB_EXECUTOR_PORT_HTTP_TCP", "JOB_EXECUTOR_SERVICE_PORT_"]).len(),
            2
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
