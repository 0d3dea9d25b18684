//! Where job configs and task files come from, behind one interface: a git repository
//! (production; [`git`]), or a directory laid out as `<service>/job/config.yaml` with the staged
//! files beside it (development and tests).
//!
//! A loaded config is compiled once and kept (a directory's until its file changes, a commit's
//! for good), so matching an event never re-parses YAML, globs or JSONPaths. A git lookup may
//! block (a fetch, reads of the clone); asked with [`Reads::Memory`] it answers only from what
//! it holds in memory, so ingest can try it in place and go to the blocking pool only when
//! that is not enough.

pub mod git;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use crate::config::{self, ConfigError, JobConfig, Problem, Task};
use crate::files::{self, FilesError, RunFiles};
use crate::matching::Matcher;
pub use git::{
    CredentialSettings, FetchLabels, FetchLimits, GitError, GitMetrics, GitSettings, GitSource,
    Stale,
};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SourceError {
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("{0}")]
    Files(#[from] FilesError),
    #[error("{0}")]
    Git(#[from] GitError),
    #[error("the event names no {0}, so no job config can be looked up")]
    MissingField(&'static str),
    #[error("invalid {field} {value:?}: it cannot name a directory")]
    InvalidName { field: &'static str, value: String },
    /// Asked with [`Reads::Memory`], the answer needs a fetch or a read of the git clone.
    #[error("the answer needs a fetch or a read of the git clone")]
    NotInMemory,
}

/// The reads a git lookup may make. A directory is always read in place (a `stat`, and a parse
/// only when the file changed), whatever is asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reads {
    /// Only what is in memory: branch heads fetched within the fetch interval (or a failed
    /// fetch's stale heads, while it is not tried again), configs compiled before, paths known
    /// to hold none. Fit for an async worker; anything else is [`SourceError::NotInMemory`].
    Memory,
    /// Anything: a fetch, reads of the clone. For the blocking pool.
    Any,
}

impl SourceError {
    /// Whether the failure may concern an event of this type: a config that cannot be used
    /// concerns the types it names ([`ConfigError::concerns`]); any other failure every type.
    pub fn concerns(&self, event_type: &str) -> bool {
        match self {
            SourceError::Config(error) => error.concerns(event_type),
            _ => true,
        }
    }

    /// The event's `gitcommitid` names no commit the repository has (or is no commit id):
    /// the config it pins cannot be read, the one at the branch heads can.
    pub fn is_pin_failure(&self) -> bool {
        matches!(
            self,
            SourceError::Git(
                GitError::CommitNotFound { .. }
                    | GitError::InvalidCommit { .. }
                    | GitError::AmbiguousCommit { .. }
            )
        )
    }

    /// A failure that may pass by itself (the repository cannot be reached now), as opposed to
    /// one that needs a change to the config, the files or the settings.
    pub fn is_transient(&self) -> bool {
        match self {
            SourceError::Git(error) => error.is_transient(),
            SourceError::Files(error) => error.is_transient(),
            _ => false,
        }
    }
}

/// The service an event is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ServiceRef {
    pub project: String,
    pub stage: String,
    pub service: String,
}

impl ServiceRef {
    /// The service a Keptn event is about (`data.project`, `.stage`, `.service`), or the
    /// first of those fields it lacks.
    pub fn of_event(event: &crate::event::CloudEvent) -> Result<ServiceRef, &'static str> {
        Self::of_fields(|name| event.data_str(name))
    }

    /// The service named by Keptn's fields of `data`, read by `data_str` (a string field of
    /// `data`), or the first of those fields it lacks.
    pub fn of_fields<'e>(
        data_str: impl Fn(&str) -> Option<&'e str>,
    ) -> Result<ServiceRef, &'static str> {
        ServiceName::of_fields(data_str).map(ServiceName::to_owned)
    }

    /// Its names, borrowed.
    pub fn name(&self) -> ServiceName<'_> {
        ServiceName {
            project: &self.project,
            stage: &self.stage,
            service: &self.service,
        }
    }

    /// Checks that every field can name a directory or a branch: not empty, no separators, no
    /// `..`, so a lookup stays inside the source.
    pub fn check(&self) -> Result<(), SourceError> {
        segment("project", &self.project)?;
        segment("stage", &self.stage)?;
        segment("service", &self.service)?;
        Ok(())
    }
}

/// The names of the service an event is about, borrowed from the event: what a lookup from
/// memory reads ([`Source::inspect_in_memory`]), so an event answered from memory copies none
/// of them. Hashed as its [`ServiceRef`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ServiceName<'a> {
    pub project: &'a str,
    pub stage: &'a str,
    pub service: &'a str,
}

impl<'a> ServiceName<'a> {
    /// [`ServiceRef::of_fields`], borrowed.
    pub fn of_fields(
        data_str: impl Fn(&str) -> Option<&'a str>,
    ) -> Result<ServiceName<'a>, &'static str> {
        let field = |name: &'static str| data_str(name).ok_or(name);
        Ok(ServiceName {
            project: field("project")?,
            stage: field("stage")?,
            service: field("service")?,
        })
    }

    pub fn to_owned(self) -> ServiceRef {
        ServiceRef {
            project: self.project.to_string(),
            stage: self.stage.to_string(),
            service: self.service.to_string(),
        }
    }
}

/// Lends what a lookup of `service` found (or why it failed) to `use_found`, as
/// [`Source::inspect_in_memory`] hands it over.
pub(crate) fn lend<R>(
    service: ServiceName<'_>,
    found: Result<Found, SourceError>,
    use_found: impl FnOnce(ServiceName<'_>, Result<&Found, SourceError>) -> R,
) -> R {
    match found {
        Ok(found) => use_found(service, Ok(&found)),
        Err(error) => use_found(service, Err(error)),
    }
}

/// What looking up a service's config found.
#[derive(Debug, Clone, Default)]
pub struct Found {
    /// The config, or `None` when the service has none.
    pub config: Option<Arc<LoadedConfig>>,
    /// Where its tasks' files are read from, when not beside the config (`--git-files-from`).
    pub files: Option<FilesPlace>,
    /// Set when the git repository could not be fetched, so the lookup read the branch heads
    /// of the last successful fetch: what was found (or not) is what that fetch saw.
    pub stale: Option<Stale>,
}

/// Where a config's task files are read from when that is not beside it: a directory of a
/// branch, at the commit the event pins or the branch's head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilesPlace {
    /// The commit; `None` when the branch does not exist.
    pub revision: Option<String>,
    /// Relative to the repository's top (`carts`).
    pub dir: String,
    /// The branch, for messages (`branch dev`).
    pub branch: String,
}

/// A config ready for matching, as read from one place at one revision.
#[derive(Debug)]
pub struct LoadedConfig {
    /// What its text says, shared by every revision where the text is the same.
    pub compiled: Arc<CompiledConfig>,
    /// The revision the config was read at (a commit for git; none for a directory).
    pub revision: Option<String>,
    /// The directory the tasks' files are relative to, relative to the source's top (`carts`,
    /// or `` for the top itself).
    pub dir: String,
    /// Where it was read from, for messages.
    pub origin: String,
}

#[derive(Debug)]
pub enum Source {
    Directory(DirectorySource),
    Git(Box<GitSource>),
}

impl Source {
    pub fn directory(root: impl Into<PathBuf>) -> Self {
        Source::Directory(DirectorySource {
            root: root.into(),
            cache: Mutex::new(HashMap::new()),
            reading: Mutex::new(HashMap::new()),
        })
    }

    pub fn git(settings: GitSettings) -> Result<Self, SourceError> {
        Ok(Source::Git(Box::new(GitSource::open(settings)?)))
    }

    /// The config for a service, if it has one. `pinned` is the event's `gitcommitid`: the
    /// commit a git source reads the service and stage levels at (a directory has no revisions
    /// and ignores it).
    pub fn load(
        &self,
        service: &ServiceRef,
        pinned: Option<&str>,
        reads: Reads,
    ) -> Result<Found, SourceError> {
        match self {
            Source::Directory(directory) => Ok(Found {
                config: directory.load(service)?,
                files: None,
                stale: None,
            }),
            Source::Git(git) => git.load(service, pinned, reads),
        }
    }

    /// [`Self::load`] from memory ([`Reads::Memory`]), lending what was found to `use_found`:
    /// the receiver's path for events that start nothing, where a git source answers a lookup
    /// made before at the same heads without making it again or sharing a lock with other
    /// threads ([`GitSource::inspect_in_memory`](git::GitSource::inspect_in_memory)).
    pub fn inspect_in_memory<R>(
        &self,
        service: ServiceName<'_>,
        pinned: Option<&str>,
        use_found: impl FnOnce(ServiceName<'_>, Result<&Found, SourceError>) -> R,
    ) -> R {
        match self {
            Source::Directory(_) => lend(
                service,
                self.load(&service.to_owned(), pinned, Reads::Memory),
                use_found,
            ),
            Source::Git(git) => git.inspect_in_memory(service, pinned, use_found),
        }
    }

    /// The files of an action's tasks, read from `dir` at `revision` (as a run records them, so
    /// the controller reads exactly what ingest checked, even after the branch moved).
    pub fn collect_run_files(
        &self,
        revision: Option<&str>,
        dir: &str,
        tasks: &[Task],
        reads: Reads,
    ) -> Result<RunFiles, SourceError> {
        match self {
            Source::Directory(directory) => directory.collect_run_files(dir, tasks),
            Source::Git(git) => git.collect_run_files(revision, dir, tasks, reads),
        }
    }
}

#[derive(Debug)]
pub struct DirectorySource {
    root: PathBuf,
    cache: Mutex<HashMap<PathBuf, CachedConfig>>,
    /// The configs being read, each with the turn the lookups that need it take: after a
    /// change, the first reads it and the others find what it read, instead of each
    /// compiling the file.
    reading: Mutex<HashMap<PathBuf, Arc<Mutex<()>>>>,
}

#[derive(Debug, Clone)]
struct CachedConfig {
    modified: Option<SystemTime>,
    len: u64,
    /// The config compiled, or why it could not be: a file that does not load is not compiled
    /// again for every event while it stays the same.
    loaded: Result<Arc<LoadedConfig>, SourceError>,
    /// The text read, while the file was written too lately for its time to tell a rewrite
    /// apart: one of the same length within the same tick of the clock (or the second of a
    /// coarse file system) keeps both, so the text is compared until the time is older.
    fresh_text: Option<Arc<String>>,
}

/// How old a file's modification time must be for it to tell every later write apart.
const SETTLED: std::time::Duration = std::time::Duration::from_secs(2);

/// Whether a file modified at `modified` was modified `SETTLED` ago or more.
fn settled(modified: Option<SystemTime>) -> bool {
    modified
        .and_then(|modified| SystemTime::now().duration_since(modified).ok())
        .is_some_and(|age| age >= SETTLED)
}

/// A path segment from an event: no separators, no `..`, so it stays inside the source.
fn segment<'a>(field: &'static str, value: &'a str) -> Result<&'a str, SourceError> {
    if value.is_empty() {
        return Err(SourceError::MissingField(field));
    }
    if value.contains(['/', '\\', '\0']) || value == "." || value == ".." {
        return Err(SourceError::InvalidName {
            field,
            value: value.to_string(),
        });
    }
    Ok(value)
}

impl DirectorySource {
    fn load(&self, service: &ServiceRef) -> Result<Option<Arc<LoadedConfig>>, SourceError> {
        let name = segment("service", &service.service)?;
        // Built in one buffer: this runs for every event.
        let mut path = PathBuf::with_capacity(self.root.as_os_str().len() + name.len() + 17);
        path.push(&self.root);
        path.push(name);
        path.push("job/config.yaml");
        let metadata = match std::fs::metadata(&path) {
            Ok(metadata) => metadata,
            // Gone (or never there): what was kept of it goes too.
            Err(error)
                if matches!(
                    error.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
                ) =>
            {
                if let Ok(mut cache) = self.cache.lock() {
                    cache.remove(&path);
                }
                return Ok(None);
            }
            // There, but not to be read (permissions, a loop of links, a failing disk): said,
            // not taken for a service without a config.
            Err(error) => {
                return Err(ConfigError::Unreadable {
                    file: path.display().to_string(),
                    reason: error.to_string(),
                }
                .into());
            }
        };
        let modified = metadata.modified().ok();
        let len = metadata.len();
        let unchanged = |cached: CachedConfig| {
            if cached.modified != modified || cached.len != len {
                return None;
            }
            let Some(text) = &cached.fresh_text else {
                return Some(cached.loaded);
            };
            if config::read_file(&path).ok().as_deref() != Some(text.as_str()) {
                return None;
            }
            if settled(modified)
                && let Ok(mut cache) = self.cache.lock()
                && let Some(entry) = cache.get_mut(&path)
            {
                entry.fresh_text = None;
            }
            Some(cached.loaded)
        };
        if let Some(loaded) = self.cached(&path).and_then(unchanged) {
            return loaded.map(Some);
        }
        let turn = match self.reading.lock() {
            Ok(mut reading) => reading.entry(path.clone()).or_default().clone(),
            Err(_) => Arc::default(),
        };
        let _turn = turn.lock().unwrap_or_else(|e| e.into_inner());
        let read = match self.cached(&path).and_then(unchanged) {
            // Read by the lookup whose turn it was.
            Some(loaded) => loaded,
            None => self.read(&path, modified, len, name),
        };
        if let Ok(mut reading) = self.reading.lock() {
            reading.remove(&path);
        }
        read.map(Some)
    }

    /// Reads and compiles the config at `path`, whose file had `modified` and `len`, and keeps
    /// it for as long as the file has them.
    fn read(
        &self,
        path: &Path,
        modified: Option<SystemTime>,
        len: u64,
        name: &str,
    ) -> Result<Arc<LoadedConfig>, SourceError> {
        let text = config::read_file(path)?;
        let fresh_text = (!settled(modified)).then(|| Arc::new(text.clone()));
        let origin = path.display().to_string();
        let loaded = compile(&text, &origin).map(|compiled| {
            Arc::new(LoadedConfig {
                compiled: Arc::new(compiled),
                revision: None,
                dir: name.to_string(),
                origin,
            })
        });
        if let Ok(mut cache) = self.cache.lock() {
            cache.insert(
                path.to_path_buf(),
                CachedConfig {
                    modified,
                    len,
                    loaded: loaded.clone(),
                    fresh_text,
                },
            );
        }
        loaded
    }

    fn cached(&self, path: &Path) -> Option<CachedConfig> {
        self.cache.lock().ok()?.get(path).cloned()
    }

    fn collect_run_files(&self, dir: &str, tasks: &[Task]) -> Result<RunFiles, SourceError> {
        let service_dir = if dir.is_empty() {
            self.root.clone()
        } else {
            match files::normalize_entry(dir) {
                Some(clean) if clean == dir => self.root.join(dir),
                _ => {
                    return Err(SourceError::InvalidName {
                        field: "config directory",
                        value: dir.to_string(),
                    });
                }
            }
        };
        Ok(files::collect_from_dir(&self.root, &service_dir, tasks)?)
    }
}

/// A config's text parsed, validated and compiled: it depends on the text alone, so a git
/// source shares it between the commits where the file is the same.
#[derive(Debug)]
pub struct CompiledConfig {
    pub config: JobConfig,
    pub matcher: Matcher,
    pub warnings: Vec<Problem>,
}

/// Parses, validates and compiles a config's text; `origin` names it in messages.
fn compile(text: &str, origin: &str) -> Result<CompiledConfig, SourceError> {
    let valid = config::load(text, origin)?;
    // Said once per content: an event name written as a regular expression, say, loads but
    // never matches, and the operator's log is where its author looks.
    for warning in &valid.warnings {
        tracing::warn!("{} (warning)", config::format_problem(origin, warning));
    }
    let matcher = Matcher::compile(&valid.config).map_err(|e| {
        SourceError::Config(ConfigError::Unreadable {
            file: origin.to_string(),
            reason: e.to_string(),
        })
    })?;
    Ok(CompiledConfig {
        config: valid.config,
        matcher,
        warnings: valid.warnings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(name: &str) -> ServiceRef {
        ServiceRef {
            project: "sockshop".into(),
            stage: "dev".into(),
            service: name.into(),
        }
    }

    #[test]
    fn loads_caches_and_reloads_on_change() {
        let root = std::env::temp_dir().join(format!("source-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("carts/job")).unwrap();
        let file = root.join("carts/job/config.yaml");
        std::fs::write(&file, "apiVersion: v2\nactions: []\n").unwrap();
        let source = Source::directory(&root);
        let load = |name: &str| {
            source
                .load(&service(name), None, Reads::Any)
                .unwrap()
                .config
        };
        let first = load("carts").unwrap();
        let again = load("carts").unwrap();
        assert!(
            Arc::ptr_eq(&first, &again),
            "an unchanged file is not re-parsed"
        );
        std::fs::write(
            &file,
            "apiVersion: v2\nactions:\n  - events: [{name: x}]\n    tasks: [{image: a}]\n",
        )
        .unwrap();
        let changed = load("carts").unwrap();
        assert_eq!(changed.compiled.config.actions.len(), 1);
        assert!(load("orders").is_none());
        // A deleted config is no longer used, nor kept.
        let Source::Directory(directory) = &source else {
            unreachable!()
        };
        assert_eq!(directory.cache.lock().unwrap().len(), 1);
        std::fs::remove_file(&file).unwrap();
        assert!(load("carts").is_none());
        assert!(directory.cache.lock().unwrap().is_empty());
        // A service directory that is a file holds no config; a config that cannot be read
        // (here a link to itself) is an error, not a service without a config.
        std::fs::write(root.join("orders"), "").unwrap();
        assert!(load("orders").is_none());
        std::os::unix::fs::symlink("config.yaml", &file).unwrap();
        let error = source
            .load(&service("carts"), None, Reads::Any)
            .err()
            .unwrap()
            .to_string();
        assert!(
            error.starts_with(&format!("cannot read {}", file.display())),
            "{error}"
        );
        let _ = std::fs::remove_dir_all(&root);
    }

    /// A file rewritten at the same length within the same tick of its modification time (a
    /// coarse file system, an editor's quick second save) is read again: while its time is
    /// too recent to tell, the text is compared; once older, the time alone is.
    #[test]
    fn a_rewrite_its_time_cannot_tell_apart_is_read_again() {
        let root = std::env::temp_dir().join(format!("source-tick-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("carts/job")).unwrap();
        let file = root.join("carts/job/config.yaml");
        let config = |image: &str| {
            format!(
                "apiVersion: v2\nactions:\n  - events: [{{name: x}}]\n    tasks: [{{image: {image}}}]\n"
            )
        };
        let write = |image: &str, modified: SystemTime| {
            std::fs::write(&file, config(image)).unwrap();
            std::fs::File::options()
                .write(true)
                .open(&file)
                .unwrap()
                .set_modified(modified)
                .unwrap();
        };
        let source = Source::directory(&root);
        let image = || {
            let loaded = source.load(&service("carts"), None, Reads::Any).unwrap();
            loaded.config.unwrap().compiled.config.actions[0].tasks[0]
                .image
                .clone()
        };
        let now = SystemTime::now();
        write("alpine:3.19", now);
        assert_eq!(image(), "alpine:3.19");
        write("alpine:3.20", now);
        assert_eq!(image(), "alpine:3.20");
        assert_eq!(image(), "alpine:3.20");
        // Settled: kept by its time, the text no longer read.
        let old = now - std::time::Duration::from_secs(10);
        write("alpine:3.21", old);
        assert_eq!(image(), "alpine:3.21");
        let Source::Directory(directory) = &source else {
            unreachable!()
        };
        let cached = directory.cache.lock().unwrap().get(&file).cloned().unwrap();
        assert!(cached.fresh_text.is_none());
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn lookups_that_need_a_changed_config_at_once_compile_it_once() {
        let root = std::env::temp_dir().join(format!("source-once-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("carts/job")).unwrap();
        let file = root.join("carts/job/config.yaml");
        // Large enough that compiling it takes a while: the lookups overlap.
        let config = |image: &str| {
            let mut text = String::from("apiVersion: v2\nactions:\n");
            for n in 0..150 {
                text.push_str(&format!(
                    "  - name: a{n}\n    events:\n      - name: sh.keptn.event.e{n}.triggered\n        jsonpath: {{property: $.data.n, match: \"{n}\"}}\n    tasks:\n      - {{name: t, image: {image}}}\n"
                ));
            }
            text
        };
        let source = Source::directory(&root);
        for image in ["first", "second:longer"] {
            std::fs::write(&file, config(image)).unwrap();
            let start = std::sync::Barrier::new(8);
            let found: Vec<Arc<LoadedConfig>> = std::thread::scope(|threads| {
                let lookups: Vec<_> = (0..8)
                    .map(|_| {
                        threads.spawn(|| {
                            start.wait();
                            let found = source.load(&service("carts"), None, Reads::Any);
                            found.unwrap().config.unwrap()
                        })
                    })
                    .collect();
                lookups.into_iter().map(|l| l.join().unwrap()).collect()
            });
            assert!(found.iter().all(|f| Arc::ptr_eq(f, &found[0])), "{image}");
            let task = &found[0].compiled.config.actions[0].tasks[0];
            assert_eq!(task.image, image);
        }
        let Source::Directory(directory) = &source else {
            unreachable!()
        };
        assert!(directory.reading.lock().unwrap().is_empty());
    }

    /// A config that does not load is kept as its error while the file stays the same: it is
    /// not parsed and checked again for every event (a large invalid file cost a worker
    /// seconds each time); once changed, it is read again.
    #[test]
    fn a_config_that_does_not_load_is_kept_as_its_error_until_it_changes() {
        let root = std::env::temp_dir().join(format!("source-invalid-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("carts/job")).unwrap();
        let file = root.join("carts/job/config.yaml");
        std::fs::write(&file, "apiVersion: v2\nactions: 3\n").unwrap();
        let source = Source::directory(&root);
        let Source::Directory(directory) = &source else {
            unreachable!()
        };
        let load = || source.load(&service("carts"), None, Reads::Any);
        let error = load().err().unwrap();
        assert!(error.to_string().contains("actions"), "{error}");
        let kept = directory.cache.lock().unwrap().get(&file).cloned().unwrap();
        assert_eq!(kept.loaded.as_ref().err(), Some(&error));
        assert_eq!(load().err(), Some(error));
        std::fs::write(&file, "apiVersion: v2\nactions: []\n").unwrap();
        assert!(load().unwrap().config.is_some(), "read again once changed");
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn event_fields_cannot_leave_the_directory() {
        let source = Source::directory("/nonexistent");
        assert!(matches!(
            source.load(&service("../etc"), None, Reads::Any),
            Err(SourceError::InvalidName { .. })
        ));
        assert!(matches!(
            source.load(&service(""), None, Reads::Any),
            Err(SourceError::MissingField("service"))
        ));
    }
}
