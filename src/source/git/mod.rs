//! The git config source: job configs and task files read from a repository with gitoxide,
//! every run pinned to one commit.
//!
//! A config is looked up through the layout's lookups in order ([`layout`]); a lookup on a
//! named branch reads the event's `gitcommitid` when there is one, else the branch's head as of
//! a fetch at most the fetch interval old; `@default` lookups always read the default branch's
//! head (Keptn's service read the project level without the commit, too). The commit a config
//! was found at is recorded in the run, and its files are read at that commit — by ingest to
//! check them, and again by the controller to make the ConfigMap.

mod fetch;
pub mod layout;
mod owner;
mod tree;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gix::ObjectId;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

use fetch::{CloneCache, RepoUrl};
pub use fetch::{CredentialSettings, FetchLabels, mask_credentials, redact};
use layout::{Branch, Lookup};
use tree::{CommitTree, WalkError};

use super::{LoadedConfig, ServiceRef, SourceError, compile};
use crate::config::Action;
use crate::files::{self, RunFiles};

/// Compiled configs kept per (commit, path); a commit never changes, so they are only dropped
/// when there are more than this.
const CONFIG_CACHE_ENTRIES: usize = 256;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GitError {
    #[error("invalid git repository URL {url}: {reason}")]
    InvalidUrl { url: String, reason: String },
    #[error("invalid --git-lookup {lookup:?}: {reason}")]
    Layout { lookup: String, reason: String },
    #[error("cannot fetch {url}: {cause}")]
    Fetch { url: String, cause: String },
    #[error("the git clone cache {path} cannot be used: {cause}")]
    Cache { path: String, cause: String },
    #[error(
        "the git clone cache {path} is in use by {holder}; give each operator its own --git-cache-dir"
    )]
    CacheInUse { path: String, holder: String },
    #[error("cannot read the git credentials {path}: {reason}")]
    Credentials { path: String, reason: String },
    #[error("gitcommitid {value:?} is not a commit id (4 to 40 hexadecimal digits)")]
    InvalidCommit { value: String },
    #[error("commit {commit} is not in {url} (fetched just now)")]
    CommitNotFound { commit: String, url: String },
    #[error("the run records no commit to read its files at from {url}")]
    NoRevision { url: String },
    #[error("{url} has no default branch (its HEAD names no branch), needed by lookup {lookup}")]
    NoDefaultBranch { url: String, lookup: String },
    #[error("cannot read {path} at commit {commit} of {url}: {reason}")]
    Read {
        path: String,
        commit: String,
        url: String,
        reason: String,
    },
}

impl GitError {
    /// The repository could not be reached or read now; trying again later may work.
    pub fn is_transient(&self) -> bool {
        matches!(self, GitError::Fetch { .. } | GitError::Cache { .. })
    }
}

/// How to reach the repository and where configs are in it.
#[derive(Debug, Clone)]
pub struct GitSettings {
    /// `https://`, `http://`, `ssh://` or `file://`; credentials written into it are taken out
    /// and used as credentials, never shown.
    pub url: String,
    pub lookups: Vec<String>,
    pub credentials: CredentialSettings,
    /// A branch head older than this is fetched again before it is used.
    pub fetch_interval: Duration,
    pub cache_dir: PathBuf,
    /// Counts fetches by outcome (the `job_executor_git_fetches_total` metric).
    pub fetches: Family<FetchLabels, Counter>,
}

#[derive(Debug)]
pub struct GitSource {
    cache: CloneCache,
    lookups: Vec<Lookup>,
    fetch_interval: Duration,
    configs: Mutex<HashMap<(ObjectId, String), Arc<LoadedConfig>>>,
}

/// A `gitcommitid`: a full or abbreviated commit id.
fn parse_pin(value: &str) -> Result<&str, GitError> {
    let value = value.trim();
    if (4..=40).contains(&value.len()) && value.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(value)
    } else {
        Err(GitError::InvalidCommit {
            value: value.to_string(),
        })
    }
}

impl GitSource {
    pub fn open(settings: GitSettings) -> Result<Self, SourceError> {
        let GitSettings {
            url,
            lookups,
            credentials,
            fetch_interval,
            cache_dir,
            fetches,
        } = settings;
        let lookups = if lookups.is_empty() {
            Lookup::keptn()?
        } else {
            lookups
                .iter()
                .map(|text| Lookup::parse(text))
                .collect::<Result<_, _>>()?
        };
        let url = RepoUrl::parse(&url)?;
        let cache = CloneCache::open(url, &cache_dir, credentials, fetches)?;
        Ok(GitSource {
            cache,
            lookups,
            fetch_interval,
            configs: Mutex::new(HashMap::new()),
        })
    }

    fn url(&self) -> String {
        self.cache.shown_url().to_string()
    }

    /// The commit a pinned id names, fetching once if the cache does not have it yet.
    fn pinned_commit(&self, pin: &str, requested: Instant) -> Result<ObjectId, GitError> {
        if let Some(id) = self.find_commit(pin) {
            return Ok(id);
        }
        self.cache.refresh(requested, Duration::ZERO)?;
        self.find_commit(pin)
            .ok_or_else(|| GitError::CommitNotFound {
                commit: pin.to_string(),
                url: self.url(),
            })
    }

    /// A commit of the cache by its full or abbreviated (unambiguous) id.
    fn find_commit(&self, pin: &str) -> Option<ObjectId> {
        let repo = self.cache.repo();
        let id = match ObjectId::from_hex(pin.as_bytes()) {
            Ok(id) => id,
            Err(_) => {
                let prefix = gix::hash::Prefix::from_hex(pin).ok()?;
                repo.objects.lookup_prefix(prefix, None).ok()??.ok()?
            }
        };
        repo.find_commit(id).ok().map(|commit| commit.id)
    }

    pub fn load(
        &self,
        service: &ServiceRef,
        pinned: Option<&str>,
    ) -> Result<Option<Arc<LoadedConfig>>, SourceError> {
        service.check()?;
        let requested = Instant::now();
        let pinned = pinned
            .filter(|p| !p.trim().is_empty())
            .map(parse_pin)
            .transpose()?;
        let mut pinned_commit = None;
        for lookup in &self.lookups {
            let path = lookup.path.render(service);
            let commit = match (&lookup.branch, pinned) {
                (Branch::Default, _) => {
                    self.cache.refresh(requested, self.fetch_interval)?;
                    match self.cache.default_head() {
                        Some((_, head)) => head,
                        None => {
                            return Err(GitError::NoDefaultBranch {
                                url: self.url(),
                                lookup: lookup.to_string(),
                            }
                            .into());
                        }
                    }
                }
                (Branch::Named(_), Some(pin)) => match pinned_commit {
                    Some(commit) => commit,
                    None => {
                        let commit = self.pinned_commit(pin, requested)?;
                        pinned_commit = Some(commit);
                        commit
                    }
                },
                (Branch::Named(branch), None) => {
                    self.cache.refresh(requested, self.fetch_interval)?;
                    match self.cache.branch_head(&branch.render(service)) {
                        Some(head) => head,
                        None => continue,
                    }
                }
            };
            if let Some(loaded) = self.load_at(commit, &path)? {
                return Ok(Some(loaded));
            }
        }
        Ok(None)
    }

    /// The config at `path` of `commit`, compiled (once per commit and path).
    fn load_at(
        &self,
        commit: ObjectId,
        path: &str,
    ) -> Result<Option<Arc<LoadedConfig>>, SourceError> {
        let key = (commit, path.to_string());
        if let Some(loaded) = self
            .configs
            .lock()
            .ok()
            .and_then(|configs| configs.get(&key).cloned())
        {
            return Ok(Some(loaded));
        }
        let tree = self.commit_tree(commit, "")?;
        let text = match tree.read_file(path) {
            Ok(Some(bytes)) => bytes,
            Ok(None) => return Ok(None),
            Err(error) => return Err(self.read_error(path, commit, error).into()),
        };
        let text = String::from_utf8(text).map_err(|_| GitError::Read {
            path: path.to_string(),
            commit: commit.to_string(),
            url: self.url(),
            reason: "not UTF-8 text".into(),
        })?;
        let origin = format!("{}:{path}", commit.to_hex_with_len(12));
        let loaded = Arc::new(compile(
            &text,
            origin,
            layout::files_dir(path),
            Some(commit.to_string()),
        )?);
        if let Ok(mut configs) = self.configs.lock() {
            if configs.len() >= CONFIG_CACHE_ENTRIES {
                configs.clear();
            }
            configs.insert(key, loaded.clone());
        }
        Ok(Some(loaded))
    }

    fn commit_tree(&self, commit: ObjectId, dir: &str) -> Result<CommitTree, GitError> {
        CommitTree::new(self.cache.repo(), commit, dir).map_err(|reason| GitError::Read {
            path: if dir.is_empty() {
                "/".into()
            } else {
                dir.into()
            },
            commit: commit.to_string(),
            url: self.url(),
            reason,
        })
    }

    fn read_error(&self, path: &str, commit: ObjectId, error: WalkError) -> GitError {
        GitError::Read {
            path: path.to_string(),
            commit: commit.to_string(),
            url: self.url(),
            reason: match error {
                WalkError::Escapes => "it is a link that leads outside the repository".into(),
                WalkError::TooManyLinks => "too many links to follow (a link loop?)".into(),
                WalkError::Read(reason) => reason,
            },
        }
    }

    pub fn collect_run_files(
        &self,
        revision: Option<&str>,
        dir: &str,
        action: &Action,
    ) -> Result<RunFiles, SourceError> {
        if action.tasks.iter().all(|task| task.files.is_empty()) {
            return Ok(RunFiles {
                files: Vec::new(),
                per_task: vec![Vec::new(); action.tasks.len()],
            });
        }
        let Some(revision) = revision else {
            return Err(GitError::NoRevision { url: self.url() }.into());
        };
        let commit = self.pinned_commit(parse_pin(revision)?, Instant::now())?;
        if !dir.is_empty() && files::normalize_entry(dir).as_deref() != Some(dir) {
            return Err(SourceError::InvalidName {
                field: "config directory",
                value: dir.to_string(),
            });
        }
        let tree = self.commit_tree(commit, dir)?;
        Ok(files::collect(&tree, action)?)
    }
}

#[cfg(test)]
mod tests;
