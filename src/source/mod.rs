//! Where job configs and task files come from. For now a directory laid out as
//! `<service>/job/config.yaml` with the staged files beside it (development and tests); the git
//! source comes behind the same interface.
//!
//! A loaded config is compiled once and kept until its file changes, so matching an event never
//! re-parses YAML, globs or JSONPaths.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use crate::config::{self, Action, ConfigError, JobConfig, Problem};
use crate::files::{self, FilesError, RunFiles};
use crate::matching::Matcher;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SourceError {
    #[error("{0}")]
    Config(#[from] ConfigError),
    #[error("{0}")]
    Files(#[from] FilesError),
    #[error("the event names no {0}, so no job config can be looked up")]
    MissingField(&'static str),
    #[error("invalid {field} {value:?}: it cannot name a directory")]
    InvalidName { field: &'static str, value: String },
}

/// The service an event is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ServiceRef {
    pub project: String,
    pub stage: String,
    pub service: String,
}

/// A config ready for matching: parsed, validated and compiled.
#[derive(Debug)]
pub struct LoadedConfig {
    pub config: JobConfig,
    pub matcher: Matcher,
    pub warnings: Vec<Problem>,
    /// The revision the config was read at (a commit for git; none for a directory).
    pub revision: Option<String>,
    /// Where it was read from, for messages.
    pub origin: String,
    service_dir: PathBuf,
}

#[derive(Debug)]
pub enum Source {
    Directory(DirectorySource),
}

impl Source {
    pub fn directory(root: impl Into<PathBuf>) -> Self {
        Source::Directory(DirectorySource {
            root: root.into(),
            cache: Mutex::new(HashMap::new()),
        })
    }

    /// The config for a service, or `None` when it has none.
    pub fn load(&self, service: &ServiceRef) -> Result<Option<Arc<LoadedConfig>>, SourceError> {
        match self {
            Source::Directory(directory) => directory.load(service),
        }
    }

    /// The files of an action's tasks, at the config's revision.
    pub fn collect_files(
        &self,
        loaded: &LoadedConfig,
        action: &Action,
    ) -> Result<RunFiles, SourceError> {
        match self {
            Source::Directory(directory) => Ok(files::collect_from_dir(
                &directory.root,
                &loaded.service_dir,
                action,
            )?),
        }
    }

    /// The files of a run, re-read from the source (the controller makes the ConfigMap).
    pub fn collect_run_files(
        &self,
        service: &ServiceRef,
        action: &Action,
    ) -> Result<RunFiles, SourceError> {
        match self {
            Source::Directory(directory) => {
                let service_dir = directory.service_dir(service)?;
                Ok(files::collect_from_dir(
                    &directory.root,
                    &service_dir,
                    action,
                )?)
            }
        }
    }
}

#[derive(Debug)]
pub struct DirectorySource {
    root: PathBuf,
    cache: Mutex<HashMap<PathBuf, CachedConfig>>,
}

#[derive(Debug, Clone)]
struct CachedConfig {
    modified: Option<SystemTime>,
    len: u64,
    loaded: Arc<LoadedConfig>,
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
    fn service_dir(&self, service: &ServiceRef) -> Result<PathBuf, SourceError> {
        Ok(self.root.join(segment("service", &service.service)?))
    }

    fn load(&self, service: &ServiceRef) -> Result<Option<Arc<LoadedConfig>>, SourceError> {
        let service_dir = self.service_dir(service)?;
        let path = service_dir.join("job").join("config.yaml");
        let Ok(metadata) = std::fs::metadata(&path) else {
            return Ok(None);
        };
        let modified = metadata.modified().ok();
        let len = metadata.len();
        if let Some(cached) = self.cached(&path)
            && cached.modified == modified
            && cached.len == len
        {
            return Ok(Some(cached.loaded));
        }
        let loaded = Arc::new(load_compiled(&path, service_dir, None)?);
        if let Ok(mut cache) = self.cache.lock() {
            cache.insert(
                path,
                CachedConfig {
                    modified,
                    len,
                    loaded: loaded.clone(),
                },
            );
        }
        Ok(Some(loaded))
    }

    fn cached(&self, path: &Path) -> Option<CachedConfig> {
        self.cache.lock().ok()?.get(path).cloned()
    }
}

fn load_compiled(
    path: &Path,
    service_dir: PathBuf,
    revision: Option<String>,
) -> Result<LoadedConfig, SourceError> {
    let valid = config::load_file(path)?;
    let origin = path.display().to_string();
    let matcher = Matcher::compile(&valid.config).map_err(|e| {
        SourceError::Config(ConfigError::Unreadable {
            file: origin.clone(),
            reason: e.to_string(),
        })
    })?;
    Ok(LoadedConfig {
        config: valid.config,
        matcher,
        warnings: valid.warnings,
        revision,
        origin,
        service_dir,
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
        let first = source.load(&service("carts")).unwrap().unwrap();
        let again = source.load(&service("carts")).unwrap().unwrap();
        assert!(
            Arc::ptr_eq(&first, &again),
            "an unchanged file is not re-parsed"
        );
        std::fs::write(
            &file,
            "apiVersion: v2\nactions:\n  - events: [{name: x}]\n    tasks: [{image: a}]\n",
        )
        .unwrap();
        let changed = source.load(&service("carts")).unwrap().unwrap();
        assert_eq!(changed.config.actions.len(), 1);
        assert!(source.load(&service("orders")).unwrap().is_none());
    }

    #[test]
    fn event_fields_cannot_leave_the_directory() {
        let source = Source::directory("/nonexistent");
        assert!(matches!(
            source.load(&service("../etc")),
            Err(SourceError::InvalidName { .. })
        ));
        assert!(matches!(
            source.load(&service("")),
            Err(SourceError::MissingField("service"))
        ));
    }
}
