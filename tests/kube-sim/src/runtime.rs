//! The container script tests control: which behaviour a container has (keyed on image glob,
//! optionally command substring and container name), what it saw, and held containers.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;

use crate::util::glob_match;

/// Selects containers by image (shell glob), and optionally by a substring of the command
/// line (command + args joined by spaces) and the container name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRule {
    image: String,
    command_contains: Option<String>,
    container: Option<String>,
}

impl ImageRule {
    /// Containers whose image matches `glob` (`busybox:1.36`, `busybox:*`, `*`).
    pub fn image(glob: &str) -> Self {
        ImageRule {
            image: glob.into(),
            command_contains: None,
            container: None,
        }
    }

    /// Every container.
    pub fn any() -> Self {
        Self::image("*")
    }

    /// Only containers whose command line contains `s`.
    pub fn command_contains(mut self, s: &str) -> Self {
        self.command_contains = Some(s.into());
        self
    }

    /// Only containers with this name.
    pub fn container(mut self, name: &str) -> Self {
        self.container = Some(name.into());
        self
    }

    fn matches(&self, run: &ContainerRun) -> bool {
        glob_match(&self.image, &run.image)
            && self
                .command_contains
                .as_ref()
                .is_none_or(|c| run.command_line().contains(c.as_str()))
            && self.container.as_ref().is_none_or(|c| *c == run.container)
    }
}

/// What a callback-run container ends with.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Outcome {
    pub exit_code: i32,
    pub output: Vec<String>,
}

impl Outcome {
    pub fn success() -> Self {
        Outcome::default()
    }
    pub fn exit(code: i32) -> Self {
        Outcome {
            exit_code: code,
            output: vec![],
        }
    }
    pub fn output<I, S>(mut self, lines: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.output = lines.into_iter().map(Into::into).collect();
        self
    }
}

type Callback = Arc<dyn Fn(&ContainerRun) -> Outcome + Send + Sync>;

#[derive(Clone)]
pub(crate) enum Kind {
    Exit,
    NeverStarts { reason: String, message: String },
    Hold,
    Run(Callback),
}

/// What a container does.
#[derive(Clone)]
pub struct Behavior {
    pub(crate) kind: Kind,
    pub(crate) exit_code: i32,
    pub(crate) run_time: Duration,
    pub(crate) output: Vec<String>,
    pub(crate) termination_message: Option<String>,
}

impl std::fmt::Debug for Behavior {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &self.kind {
            Kind::Exit => "exit".to_string(),
            Kind::NeverStarts { reason, .. } => format!("never_starts({reason})"),
            Kind::Hold => "hold".into(),
            Kind::Run(_) => "run(callback)".into(),
        };
        f.debug_struct("Behavior")
            .field("kind", &kind)
            .field("exit_code", &self.exit_code)
            .field("run_time", &self.run_time)
            .field("output", &self.output)
            .field("termination_message", &self.termination_message)
            .finish()
    }
}

/// Default run time of a container with no matching rule, in simulated time.
pub const DEFAULT_RUN_TIME: Duration = Duration::from_millis(100);

impl Behavior {
    /// Runs for [`DEFAULT_RUN_TIME`] (change with [`Behavior::after`]) and exits with `code`.
    pub fn exit(code: i32) -> Self {
        Behavior {
            kind: Kind::Exit,
            exit_code: code,
            run_time: DEFAULT_RUN_TIME,
            output: vec![],
            termination_message: None,
        }
    }

    /// `exit(0)`.
    pub fn succeed() -> Self {
        Self::exit(0)
    }

    /// The container never starts: it stays waiting with `reason` (e.g. `ImagePullBackOff`,
    /// `ErrImagePull`, `CreateContainerConfigError`) and the pod stays Pending.
    pub fn never_starts(reason: &str) -> Self {
        let message = match reason {
            "ImagePullBackOff" => "Back-off pulling image".to_string(),
            "ErrImagePull" => "failed to pull and unpack image".to_string(),
            other => other.to_string(),
        };
        Behavior {
            kind: Kind::NeverStarts {
                reason: reason.into(),
                message,
            },
            exit_code: 0,
            run_time: Duration::ZERO,
            output: vec![],
            termination_message: None,
        }
    }

    /// The container runs until released with `Sim::release`, then exits with the exit code
    /// (0 unless changed with [`Behavior::exit_code`]).
    pub fn hold() -> Self {
        Behavior {
            kind: Kind::Hold,
            exit_code: 0,
            run_time: Duration::ZERO,
            output: vec![],
            termination_message: None,
        }
    }

    /// Calls `f` when the container starts (on a blocking thread; it may use the host paths of
    /// the mounts), then runs for the run time and ends with the returned outcome.
    pub fn run<F>(f: F) -> Self
    where
        F: Fn(&ContainerRun) -> Outcome + Send + Sync + 'static,
    {
        Behavior {
            kind: Kind::Run(Arc::new(f)),
            exit_code: 0,
            run_time: DEFAULT_RUN_TIME,
            output: vec![],
            termination_message: None,
        }
    }

    /// Run time (simulated; divided by the time scale).
    pub fn after(mut self, d: Duration) -> Self {
        self.run_time = d;
        self
    }

    /// What the container writes to its termination message file (`/dev/termination-log`): the
    /// kubelet reports it in the terminated state, cut to its last 4096 bytes.
    pub fn termination_message(mut self, message: &str) -> Self {
        self.termination_message = Some(message.to_string());
        self
    }

    /// Lines the container prints when it starts.
    pub fn output<I, S>(mut self, lines: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.output = lines.into_iter().map(Into::into).collect();
        self
    }

    /// Exit code (for `hold` after release, or to change `exit`).
    pub fn exit_code(mut self, code: i32) -> Self {
        self.exit_code = code;
        self
    }

    /// Waiting message for `never_starts`.
    pub fn message(mut self, msg: &str) -> Self {
        if let Kind::NeverStarts { message, .. } = &mut self.kind {
            *message = msg.into();
        }
        self
    }
}

/// A volume mount resolved to a host directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub volume: String,
    pub mount_path: String,
    pub host_path: PathBuf,
    pub read_only: bool,
}

/// What a container sees when it starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerRun {
    pub namespace: String,
    pub pod: String,
    pub pod_uid: String,
    /// The `job-name` label of the pod, if any.
    pub job: Option<String>,
    pub container: String,
    pub init: bool,
    pub image: String,
    /// `command` after `$(VAR)` expansion.
    pub command: Vec<String>,
    /// `args` after `$(VAR)` expansion.
    pub args: Vec<String>,
    pub working_dir: Option<String>,
    /// Resolved environment, in declaration order (`envFrom` first, then `env`).
    pub env: Vec<(String, String)>,
    pub mounts: Vec<Mount>,
    /// 0 for the first run, then the restart count.
    pub attempt: u32,
}

impl ContainerRun {
    /// The value of an environment variable (the last definition wins, as in a process).
    pub fn env_var(&self, name: &str) -> Option<&str> {
        self.env
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// `command` and `args` joined by spaces.
    pub fn command_line(&self) -> String {
        self.command
            .iter()
            .chain(self.args.iter())
            .cloned()
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// The host path behind a path inside the container, through the longest matching mount.
    pub fn host_path(&self, container_path: &str) -> Option<PathBuf> {
        let m = self
            .mounts
            .iter()
            .filter(|m| {
                let mp = m.mount_path.trim_end_matches('/');
                container_path == mp
                    || container_path.starts_with(&format!("{mp}/"))
                    || mp.is_empty()
            })
            .max_by_key(|m| m.mount_path.len())?;
        let rest =
            container_path[m.mount_path.trim_end_matches('/').len()..].trim_start_matches('/');
        Some(if rest.is_empty() {
            m.host_path.clone()
        } else {
            m.host_path.join(rest)
        })
    }
}

/// A file in a mount, as it was after the container ran.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSnapshot {
    pub content: Vec<u8>,
    /// Permission bits (e.g. `0o644`).
    pub mode: u32,
}

impl FileSnapshot {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.content).into_owned()
    }
}

/// One finished (or stopped) container run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerRecord {
    pub run: ContainerRun,
    /// Files under the container's mounts after it ran, keyed by path inside the container.
    pub files: BTreeMap<String, FileSnapshot>,
    /// `None` if the container was killed (pod deleted) before finishing.
    pub exit_code: Option<i32>,
    pub output: Vec<String>,
}

pub(crate) struct Held {
    pub pod: String,
    pub namespace: String,
    pub job: Option<String>,
    pub container: String,
    pub release: oneshot::Sender<()>,
}

/// The test images (the same on the real control plane, where KWOK Stages play them; see
/// `docs/cluster.md`): what a container does when no rule matches it.
///
/// - `job-executor.test/fail…` prints one line and exits 1;
/// - `job-executor.test/never-starts…` stays waiting with `ImagePullBackOff`;
/// - `job-executor.test/sleep…` runs for the seconds in its first argument, then succeeds;
/// - `job-executor.test/outputs…` writes its first argument to its termination message, then
///   succeeds;
/// - any other image succeeds after [`DEFAULT_RUN_TIME`], printing its command line.
pub fn test_image_behavior(run: &ContainerRun) -> Behavior {
    if run.image.starts_with("job-executor.test/fail") {
        return Behavior::exit(1)
            .output(["job-executor.test/fail: failing on purpose with exit code 1"]);
    }
    if run.image.starts_with("job-executor.test/never-starts") {
        return Behavior::never_starts("ImagePullBackOff")
            .message(&format!("Back-off pulling image {:?}", run.image));
    }
    let line = run.command_line();
    let line = if line.is_empty() {
        run.image.clone()
    } else {
        line
    };
    let behavior = Behavior::succeed().output([line]);
    if run.image.starts_with("job-executor.test/outputs") {
        let message = run.args.first().cloned().unwrap_or_default();
        return behavior.termination_message(&message);
    }
    if run.image.starts_with("job-executor.test/sleep") {
        let seconds = run
            .args
            .first()
            .and_then(|a| a.parse::<f64>().ok())
            .filter(|s| s.is_finite() && *s >= 0.0)
            .unwrap_or(1.0);
        return behavior.after(Duration::from_secs_f64(seconds));
    }
    behavior
}

/// The simulated container runtime's script and records.
pub struct Runtime {
    rules: Mutex<Vec<(ImageRule, Behavior)>>,
    records: Mutex<Vec<ContainerRecord>>,
    pub(crate) held: Mutex<Vec<Held>>,
    workdir: PathBuf,
}

impl Runtime {
    pub(crate) fn new(workdir: PathBuf) -> Self {
        Runtime {
            rules: Mutex::new(Vec::new()),
            records: Mutex::new(Vec::new()),
            held: Mutex::new(Vec::new()),
            workdir,
        }
    }

    /// Adds a rule. The most recently added matching rule wins.
    pub fn set(&self, rule: ImageRule, behavior: Behavior) {
        self.rules
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((rule, behavior));
    }

    /// Removes all rules (back to the default behaviour).
    pub fn clear(&self) {
        self.rules.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    pub(crate) fn behavior_for(&self, run: &ContainerRun) -> Behavior {
        self.rules
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .rev()
            .find(|(r, _)| r.matches(run))
            .map(|(_, b)| b.clone())
            .unwrap_or_else(|| test_image_behavior(run))
    }

    /// Releases held containers of pods named `target` or of the Job named `target`, with
    /// their configured exit code. Returns how many were released.
    pub fn release(&self, target: &str) -> usize {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        let (go, keep): (Vec<Held>, Vec<Held>) = held
            .drain(..)
            .partition(|h| h.pod == target || h.job.as_deref() == Some(target));
        *held = keep;
        let n = go.len();
        for h in go {
            let _ = h.release.send(());
        }
        n
    }

    /// Currently held containers as (namespace, pod, container).
    pub fn held(&self) -> Vec<(String, String, String)> {
        self.held
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|h| !h.release.is_closed())
            .map(|h| (h.namespace.clone(), h.pod.clone(), h.container.clone()))
            .collect()
    }

    pub(crate) fn record(&self, r: ContainerRecord) {
        self.records
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(r);
    }

    /// Every container run so far, in the order they finished.
    pub fn records(&self) -> Vec<ContainerRecord> {
        self.records
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Runs of the pods of one Job (by the pods' `job-name` label).
    pub fn job_runs(&self, job: &str) -> Vec<ContainerRecord> {
        self.records()
            .into_iter()
            .filter(|r| r.run.job.as_deref() == Some(job))
            .collect()
    }

    /// Where pod volumes are materialised.
    pub fn workdir(&self) -> &Path {
        &self.workdir
    }
}
