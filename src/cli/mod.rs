//! The command line: subcommands and the installation settings shared by `render` and `run`.

/// Writes to stdout as `print!` does ([`write_out`]).
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::cli::write_out(format_args!($($arg)*))
    };
}

/// Writes a line to stdout as `println!` does ([`write_out`]).
#[macro_export]
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::cli::write_out(format_args!("{}\n", format_args!($($arg)*)))
    };
}

mod check;
mod environment;
mod render;
mod run;
mod schedule;
mod send;
mod validate;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::config::{NotifyRule, Quantity, formats};
use crate::settings::{self, DefaultResources, ImageAllowList, SecurityDefaults, Settings};

pub use check::{CheckError, run_check};
pub use environment::unknown_settings_in_environment;
pub use render::run_render;
pub use run::{OperatorArgs, RunArgs, run_operator};
pub use schedule::{PreviewError, run_schedule};
pub use send::{SendArgs, SendError, run_send};
pub use validate::run_validate;

/// Writes `text` to stdout. A reader that went away (`job-executor validate … | head -1`) ends
/// the process quietly with the status a shell gives one that SIGPIPE ended (141), as other
/// Unix tools end: Rust ignores SIGPIPE, so `print!` would panic. Another error ends it with 1.
pub fn write_out(text: std::fmt::Arguments<'_>) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    if let Err(error) = out.write_fmt(text).and_then(|()| out.flush()) {
        if error.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(141);
        }
        eprintln!("error: cannot write the output: {error}");
        std::process::exit(1);
    }
}

#[derive(Debug, Parser)]
#[command(
    name = "job-executor",
    version,
    about = "Turns CloudEvents into Kubernetes Jobs"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the Jobs and events an event would cause, without a cluster.
    Render(Box<RenderArgs>),
    /// Check job config files; prints `file:line:col: message` per problem.
    Validate(ValidateArgs),
    /// Print the JSON Schema of the job config format.
    Schema,
    /// Copy staged task files into the task's volume (the init container of every task).
    StageFiles(StageFilesArgs),
    /// Run the operator: receive events, run Jobs, report the outcome.
    Run(Box<RunArgs>),
    /// Print the CustomResourceDefinitions (JobRun and JobSchedule), or the one named.
    Crd {
        /// Only this one.
        #[arg(value_enum)]
        kind: Option<crate::crd::CrdKind>,
    },
    /// Send CloudEvent files to a receiver (the operator's ingest), printing each answer.
    Send(SendArgs),
    /// Check `run`'s flags and environment without starting (no cluster needed).
    CheckRun(Box<RunArgs>),
    /// List when a cron schedule fires, in its time zone (daylight-saving changes included).
    Schedule(ScheduleArgs),
}

#[derive(Debug, Args)]
pub struct ScheduleArgs {
    /// Five fields (minute hour day-of-month month day-of-week), e.g. "30 2 * * 1-5", or
    /// @yearly, @monthly, @weekly, @daily, @hourly.
    pub cron: String,
    /// An IANA time zone, e.g. Europe/Berlin (default: UTC).
    #[arg(long)]
    pub time_zone: Option<String>,
    /// How many slots to list (1 to 1000).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u16).range(1..=1000))]
    pub count: u16,
    /// List the slots after this time (RFC 3339; default: now).
    #[arg(long)]
    pub from: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Yaml,
    Json,
}

#[derive(Debug, Args)]
pub struct RenderArgs {
    /// A CloudEvent in structured JSON mode.
    #[arg(long)]
    pub event: PathBuf,
    /// The job config (`<service>/job/config.yaml`; files are read from `<service>/`).
    #[arg(long)]
    pub config: PathBuf,
    #[arg(long, value_enum, default_value = "yaml")]
    pub format: OutputFormat,
    #[command(flatten)]
    pub install: InstallArgs,
}

#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// Config files to check.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
}

#[derive(Debug, Args)]
pub struct StageFilesArgs {
    /// The mounted ConfigMap of the run's files.
    #[arg(long, default_value = crate::render::FILES_MOUNT_DIR)]
    pub from: PathBuf,
    /// The task's files volume.
    #[arg(long, default_value = crate::render::KEPTN_DIR)]
    pub to: PathBuf,
}

fn quantity(value: &str) -> Result<Quantity, String> {
    formats::check_quantity(value).map(|()| Quantity(value.to_string()))
}

fn dns_label(value: &str) -> Result<String, String> {
    formats::check_dns_label(value).map(|()| value.to_string())
}

/// `key=value`: a label every Job gets; the operator's own keys are reserved.
fn job_label(value: &str) -> Result<(String, String), String> {
    let (key, label) = value
        .split_once('=')
        .ok_or_else(|| format!("invalid job label {value:?}: expected key=value"))?;
    let (key, label) = (key.trim(), label.trim());
    formats::check_qualified_name(key)?;
    if crate::labels::is_reserved(key) {
        return Err(format!("label {key:?} is set by job-executor"));
    }
    if crate::labels::set_by_job_api(key) {
        return Err(format!(
            "label {key:?} is set on every pod of a Job by Kubernetes' Job API (the API server \
             refuses a Job whose pods set it)"
        ));
    }
    if !formats::is_label_value(label) {
        return Err(format!("invalid label value {label:?} for {key:?}"));
    }
    Ok((key.to_string(), label.to_string()))
}

/// The `source` of the events sent: a CloudEvents URI-reference, so not empty and without
/// blanks or control characters (a receiver that checks it would refuse every event, and the
/// refusal gives each up at once).
fn event_source(value: &str) -> Result<String, String> {
    if value.is_empty() {
        return Err("the events' source must not be empty (a URI-reference)".into());
    }
    if let Some(c) = value.chars().find(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "invalid event source {value:?}: a URI-reference holds no {c:?} (write blanks as %20)"
        ));
    }
    Ok(value.to_string())
}

/// A user or group ID of task pods, or none (`image`: the image's own).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PodId(pub Option<i64>);

fn pod_id(value: &str) -> Result<PodId, String> {
    if value == "image" {
        return Ok(PodId(None));
    }
    match value.parse::<i64>() {
        Ok(id) if (0..=i64::from(i32::MAX)).contains(&id) => Ok(PodId(Some(id))),
        _ => Err(format!(
            "expected a user or group ID from 0 to {} or `image` (the image's own), found {value:?}",
            i32::MAX
        )),
    }
}

pub(crate) fn dns_subdomain(value: &str) -> Result<String, String> {
    formats::check_dns_subdomain(value).map(|()| value.to_string())
}

/// A Secret's name, or the start of names followed by `*` (`sh.helm.release.v1.*`).
fn secret_name_or_prefix(value: &str) -> Result<String, String> {
    let Some(prefix) = value.strip_suffix('*') else {
        return dns_subdomain(value);
    };
    let fits = prefix.len() < 253
        && prefix
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric())
        && prefix
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
    if fits {
        Ok(value.to_string())
    } else {
        Err(format!(
            "{value:?} is neither a Secret's name nor the start of names followed by `*` \
             (lower-case letters, digits, '-' and '.', starting with a letter or digit), e.g. \
             \"sh.helm.release.v1.*\""
        ))
    }
}

/// What the platform team decides for every Job. Each flag has an environment variable, so a
/// Deployment can set them from a ConfigMap.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Installation settings")]
pub struct InstallArgs {
    /// The namespace Jobs are created in (the only one).
    #[arg(long, env = "JOB_EXECUTOR_JOB_NAMESPACE", default_value = settings::DEFAULT_JOB_NAMESPACE, value_parser = dns_label)]
    pub job_namespace: String,
    /// CPU request of tasks that set none.
    #[arg(long, env = "JOB_EXECUTOR_DEFAULT_CPU_REQUEST", default_value = settings::DEFAULT_CPU_REQUEST, value_parser = quantity)]
    pub default_cpu_request: Quantity,
    /// Memory request of tasks that set none.
    #[arg(long, env = "JOB_EXECUTOR_DEFAULT_MEMORY_REQUEST", default_value = settings::DEFAULT_MEMORY_REQUEST, value_parser = quantity)]
    pub default_memory_request: Quantity,
    /// CPU limit of tasks that set none.
    #[arg(long, env = "JOB_EXECUTOR_DEFAULT_CPU_LIMIT", default_value = settings::DEFAULT_CPU_LIMIT, value_parser = quantity)]
    pub default_cpu_limit: Quantity,
    /// Memory limit of tasks that set none.
    #[arg(long, env = "JOB_EXECUTOR_DEFAULT_MEMORY_LIMIT", default_value = settings::DEFAULT_MEMORY_LIMIT, value_parser = quantity)]
    pub default_memory_limit: Quantity,
    /// Size limit of the `/keptn` emptyDir of tasks that set none.
    #[arg(long, env = "JOB_EXECUTOR_EMPTY_DIR_SIZE_LIMIT", default_value = settings::DEFAULT_EMPTY_DIR_SIZE_LIMIT, value_parser = quantity)]
    pub empty_dir_size_limit: Quantity,
    /// Image patterns tasks may use, comma-separated globs (`*` matches anything, `/` too).
    #[arg(
        long,
        env = "JOB_EXECUTOR_ALLOWED_IMAGES",
        value_delimiter = ',',
        default_value = "*"
    )]
    pub allowed_images: Vec<String>,
    /// Let tasks ask for privileged containers.
    #[arg(long, env = "JOB_EXECUTOR_ALLOW_PRIVILEGED")]
    pub allow_privileged: bool,
    /// Task containers run as non-root unless the task says otherwise.
    #[arg(long, env = "JOB_EXECUTOR_RUN_AS_NON_ROOT", default_value_t = true, action = clap::ArgAction::Set)]
    pub run_as_non_root: bool,
    /// The user task pods run as, unless the task says otherwise (`image`: the image's own,
    /// which must then be a numeric non-root user while `--run-as-non-root` holds).
    #[arg(long, env = "JOB_EXECUTOR_RUN_AS_USER", default_value = "1000", value_parser = pod_id)]
    pub run_as_user: PodId,
    /// The group task pods run as, unless the task says otherwise (`image`: the image's).
    #[arg(long, env = "JOB_EXECUTOR_RUN_AS_GROUP", default_value = "2000", value_parser = pod_id)]
    pub run_as_group: PodId,
    /// The group that owns task pods' volumes (`image`: none).
    #[arg(long, env = "JOB_EXECUTOR_FS_GROUP", default_value = "2000", value_parser = pod_id)]
    pub fs_group: PodId,
    /// Task containers get a read-only root filesystem unless the task says otherwise.
    #[arg(long, env = "JOB_EXECUTOR_READ_ONLY_ROOT_FILESYSTEM", default_value_t = true, action = clap::ArgAction::Set)]
    pub read_only_root_filesystem: bool,
    /// The image of the init container that stages files (this operator's image).
    #[arg(long, env = "JOB_EXECUTOR_INIT_IMAGE", default_value = settings::DEFAULT_INIT_IMAGE)]
    pub init_image: String,
    /// Secrets for pulling the init image (a private registry), comma-separated; put on every
    /// task pod that stages files, beside the task's own.
    #[arg(long, env = "JOB_EXECUTOR_INIT_IMAGE_PULL_SECRETS", value_delimiter = ',', value_parser = dns_subdomain)]
    pub init_image_pull_secrets: Vec<String>,
    /// The ServiceAccount of task pods that name none (its token is not mounted).
    #[arg(long, env = "JOB_EXECUTOR_DEFAULT_SERVICE_ACCOUNT", value_parser = dns_subdomain)]
    pub default_service_account: Option<String>,
    /// ServiceAccounts of the job namespace no task may run as, comma-separated: the
    /// operator's own, when Jobs run in its namespace (its token may create Jobs and read every
    /// task's logs); the chart sets it so.
    #[arg(long, env = "JOB_EXECUTOR_REFUSED_SERVICE_ACCOUNTS", value_delimiter = ',', value_parser = dns_subdomain)]
    pub refused_service_accounts: Vec<String>,
    /// Secrets of the job namespace no task may read (`valueFrom: secret`), comma-separated,
    /// each a name or the start of names followed by `*`: the operator's own (its ingest token,
    /// the sink's headers, the git credentials) when Jobs run in its namespace, the image pull
    /// secrets, Helm's release records (`sh.helm.release.v1.*`, which hold every value
    /// rendered, a generated token too); the chart sets it so.
    #[arg(long, env = "JOB_EXECUTOR_REFUSED_SECRETS", value_delimiter = ',', value_parser = secret_name_or_prefix)]
    pub refused_secrets: Vec<String>,
    /// Seconds a task may run when it sets no `maxPollDuration`.
    #[arg(long, env = "JOB_EXECUTOR_DEFAULT_MAX_POLL_DURATION", default_value_t = settings::DEFAULT_MAX_POLL_DURATION, value_parser = clap::value_parser!(i64).range(1..))]
    pub default_max_poll_duration: i64,
    /// Seconds a finished Job is kept when the task sets no `ttlSecondsAfterFinished`.
    #[arg(long, env = "JOB_EXECUTOR_DEFAULT_TTL_SECONDS_AFTER_FINISHED", default_value_t = settings::DEFAULT_TTL_SECONDS_AFTER_FINISHED, value_parser = clap::value_parser!(i32).range(60..))]
    pub default_ttl_seconds_after_finished: i32,
    /// Labels put on every Job and its pods, `key=value`, comma-separated.
    #[arg(long, env = "JOB_EXECUTOR_JOB_LABELS", value_delimiter = ',', value_parser = job_label)]
    pub job_labels: Vec<(String, String)>,
    /// The `source` of the events this operator sends.
    #[arg(long, env = "JOB_EXECUTOR_EVENT_SOURCE", default_value = settings::DEFAULT_EVENT_SOURCE, value_parser = event_source)]
    pub event_source: String,
    /// A notification target of every run, `KIND:TARGET[:WHEN,…]` (`slack:ops` or
    /// `webhook:audit:started,succeeded,failed`; WHEN defaults to `failed`); TARGET is a key of
    /// the notifications Secret (--notify-dir). Repeat it, or separate targets with `;`.
    #[arg(
        long = "notify",
        env = "JOB_EXECUTOR_NOTIFY",
        value_delimiter = ';',
        value_parser = NotifyRule::parse
    )]
    pub notify: Vec<NotifyRule>,
}

impl InstallArgs {
    pub fn settings(&self) -> Result<Settings, settings::SettingsError> {
        let InstallArgs {
            job_namespace,
            default_cpu_request,
            default_memory_request,
            default_cpu_limit,
            default_memory_limit,
            empty_dir_size_limit,
            allowed_images,
            allow_privileged,
            run_as_non_root,
            run_as_user,
            run_as_group,
            fs_group,
            read_only_root_filesystem,
            init_image,
            init_image_pull_secrets,
            default_service_account,
            refused_service_accounts,
            refused_secrets,
            default_max_poll_duration,
            default_ttl_seconds_after_finished,
            job_labels,
            event_source,
            notify,
        } = self.clone();
        if let Some(account) = default_service_account
            .as_ref()
            .filter(|account| refused_service_accounts.contains(account))
        {
            return Err(settings::SettingsError::Invalid {
                setting: "--default-service-account",
                value: account.clone(),
                reason: "one of --refused-service-accounts".into(),
            });
        }
        // Every pod would be refused by the kubelet ("container has runAsNonRoot and image
        // will run as root"): said at the start instead.
        if run_as_non_root && run_as_user.0 == Some(0) {
            return Err(settings::SettingsError::Invalid {
                setting: "--run-as-user",
                value: "0".into(),
                reason: "root, which --run-as-non-root (true) forbids: set --run-as-non-root \
                         false too, or another user"
                    .into(),
            });
        }
        // Every task without a `resources` block would be refused by the API server.
        for (setting, request, limit_flag, limit) in [
            (
                "--default-cpu-request",
                &default_cpu_request,
                "--default-cpu-limit",
                &default_cpu_limit,
            ),
            (
                "--default-memory-request",
                &default_memory_request,
                "--default-memory-limit",
                &default_memory_limit,
            ),
        ] {
            let nanos = |quantity: &Quantity| formats::quantity_nanos(&quantity.0);
            if let (Some(asked), Some(most)) = (nanos(request), nanos(limit))
                && asked > most
            {
                return Err(settings::SettingsError::Invalid {
                    setting,
                    value: request.0.clone(),
                    reason: format!(
                        "above {limit_flag} {}: Kubernetes refuses the Job of every task \
                         without its own resources",
                        limit.0
                    ),
                });
            }
        }
        let allowed: Vec<String> = allowed_images
            .into_iter()
            .map(|p| p.trim().to_string())
            .filter(|p| !p.is_empty())
            .collect();
        Ok(Settings {
            job_namespace,
            resources: DefaultResources {
                cpu_request: default_cpu_request,
                memory_request: default_memory_request,
                cpu_limit: default_cpu_limit,
                memory_limit: default_memory_limit,
            },
            security: SecurityDefaults {
                run_as_non_root,
                run_as_user: run_as_user.0,
                run_as_group: run_as_group.0,
                fs_group: fs_group.0,
                read_only_root_filesystem,
            },
            allow_privileged,
            allowed_images: ImageAllowList::new(&allowed)?,
            init_image,
            init_image_pull_secrets,
            default_service_account,
            refused_service_accounts,
            refused_secrets,
            empty_dir_size_limit,
            default_max_poll_duration,
            default_ttl_seconds_after_finished,
            job_labels: job_labels.into_iter().collect(),
            event_source,
            notify,
        })
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn pod_ids_are_numbers_in_range_or_the_image_s_own() {
        assert_eq!(pod_id("1000"), Ok(PodId(Some(1000))));
        assert_eq!(pod_id("0"), Ok(PodId(Some(0))));
        assert_eq!(pod_id("2147483647"), Ok(PodId(Some(2147483647))));
        assert_eq!(pod_id("image"), Ok(PodId(None)));
        for refused in ["-1", "2147483648", "", "root"] {
            assert_eq!(
                pod_id(refused),
                Err(format!(
                    "expected a user or group ID from 0 to 2147483647 or `image` (the image's \
                     own), found {refused:?}"
                ))
            );
        }
    }

    /// A Lease name the API server would refuse at every look stops the start.
    #[test]
    fn the_lease_name_is_a_dns_subdomain() {
        let error = Cli::try_parse_from(["job-executor", "run", "--lease-name", "Bad_Name"])
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            error.contains("invalid value 'Bad_Name' for '--lease-name"),
            "{error}"
        );
    }

    /// `render` with the given installation flags, parsed by the real parser.
    fn parse_render(flags: &[&str]) -> Result<Settings, String> {
        let mut argv = vec!["job-executor", "render", "--event", "e", "--config", "c"];
        argv.extend_from_slice(flags);
        let cli = Cli::try_parse_from(argv).map_err(|e| e.to_string())?;
        let Command::Render(args) = cli.command else {
            panic!("parsed another command")
        };
        args.install.settings().map_err(|e| e.to_string())
    }

    #[test]
    fn root_is_refused_as_the_pods_user_while_they_must_not_run_as_root() {
        assert_eq!(
            parse_render(&["--run-as-user", "0"]).unwrap_err(),
            "invalid --run-as-user \"0\": root, which --run-as-non-root (true) forbids: set \
             --run-as-non-root false too, or another user"
        );
        let root = parse_render(&["--run-as-user", "0", "--run-as-non-root", "false"]).unwrap();
        assert_eq!(root.security.run_as_user, Some(0));
        let image = parse_render(&["--run-as-user", "image"]).unwrap();
        assert_eq!(image.security.run_as_user, None);
    }

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn flag_defaults_match_the_settings_defaults() {
        let from_flags = parse_render(&[]).unwrap();
        let defaults = Settings::defaults();
        assert_eq!(from_flags.job_namespace, defaults.job_namespace);
        assert_eq!(from_flags.resources, defaults.resources);
        assert_eq!(from_flags.security, defaults.security);
        assert_eq!(
            from_flags.allowed_images.patterns(),
            defaults.allowed_images.patterns()
        );
        assert_eq!(from_flags.init_image, defaults.init_image);
        assert_eq!(
            from_flags.empty_dir_size_limit,
            defaults.empty_dir_size_limit
        );
        assert_eq!(
            from_flags.default_max_poll_duration,
            defaults.default_max_poll_duration
        );
        assert_eq!(
            from_flags.default_ttl_seconds_after_finished,
            defaults.default_ttl_seconds_after_finished
        );
        assert_eq!(from_flags.job_labels, defaults.job_labels);
        assert_eq!(from_flags.event_source, defaults.event_source);
    }

    #[test]
    fn flags_are_validated() {
        let error = parse_render(&["--default-cpu-limit", "1x"]).unwrap_err();
        assert!(error.contains("invalid quantity \"1x\""), "{error}");
        let error = parse_render(&["--job-namespace", "Bad"]).unwrap_err();
        assert!(error.contains("invalid name \"Bad\""), "{error}");
        let error = parse_render(&["--event-source", ""]).unwrap_err();
        assert!(error.contains("must not be empty"), "{error}");
        let error = parse_render(&["--event-source", "job executor"]).unwrap_err();
        assert!(error.contains("holds no ' '"), "{error}");
        let settings = parse_render(&["--event-source", "https://ops.example/job-executor"]);
        assert_eq!(
            settings.unwrap().event_source,
            "https://ops.example/job-executor"
        );
    }

    #[test]
    fn job_labels_are_validated_key_value_pairs() {
        let settings = parse_render(&["--job-labels", "team=platform, cost-center=42"]).unwrap();
        assert_eq!(settings.job_labels["team"], "platform");
        assert_eq!(settings.job_labels["cost-center"], "42");
        for bad in ["team", "job-executor.dev/run=x", "ok=not ok", "job-name=x"] {
            let error = parse_render(&["--job-labels", bad]).unwrap_err();
            assert!(error.contains("invalid value"), "{bad}: {error}");
        }
    }

    #[test]
    fn allow_list_flag_takes_comma_separated_globs() {
        let settings = parse_render(&["--allowed-images", "alpine:*, ghcr.io/acme/*"]).unwrap();
        assert!(settings.allowed_images.allows("ghcr.io/acme/x:1"));
        assert!(!settings.allowed_images.allows("busybox"));
    }
}
