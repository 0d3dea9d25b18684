//! The git config source: job configs and task files read from a repository with gitoxide,
//! every run pinned to one commit.
//!
//! A config is looked up through the layout's lookups in order ([`layout`]); a lookup on a
//! named branch reads the event's `gitcommitid` when there is one, else the branch's head as of
//! a fetch at most the fetch interval old; `@default` lookups always read the default branch's
//! head (Keptn's service read the project level without the commit, too). The commit a config
//! was found at is recorded in the run, and its files are read at that commit — by ingest to
//! check them, and again by the controller to make the ConfigMap.
//!
//! When the repository cannot be fetched, branch lookups read the heads of the last successful
//! fetch and say so ([`Stale`]); a pinned commit the clone does not have, or a clone nothing was
//! ever fetched into, is an error that passes ([`GitError::is_transient`]), so ingest asks the
//! sender to retry.

mod fetch;
mod heads;
pub mod layout;
mod owner;
mod tree;

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gix::ObjectId;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

use fetch::CloneCache;
pub use fetch::RepoUrl;
pub use fetch::{
    CredentialSettings, FetchLabels, FetchLimits, mask_credentials, redact, split_credentials,
};
pub use heads::Stale;
use heads::{Heads, RemoteHeads};
use layout::{Branch, Lookup};
use tree::{CommitTree, WalkError};

use super::{
    CompiledConfig, FilesPlace, Found, LoadedConfig, Reads, ServiceName, ServiceRef, SourceError,
    compile,
};
use crate::config::{self, ConfigError, Task};
use crate::files::{self, RunFiles};

/// Compiled configs kept per (commit, path) beside those at the heads lookups read: a commit
/// never changes, so the others (older commits, pinned ones) are only dropped when there are
/// more than this ([`Kept`]). Those at the heads are all kept, however many: only the
/// repository's files put them there, one per config file a lookup reads, and reading them
/// again is what an event would wait for.
const CONFIG_CACHE_ENTRIES: usize = 256;

/// The (commit, path)s known to hold no config (the layout's service level, for most services),
/// at most this many, at the heads too: any service name an event makes up adds one. Each
/// costs a few dozen bytes.
const ABSENT_CACHE_ENTRIES: usize = 4096;

/// The (commit, path)s whose config cannot be used (invalid YAML or schema, too large, not
/// text), with the error: it is the same at the same commit, so an event for such a service
/// is answered from memory instead of reading and compiling the file again. Kept as the
/// configs are.
const INVALID_CACHE_ENTRIES: usize = 256;

/// The lookups each thread remembers ([`GitSource::inspect_in_memory`]): the services that
/// send events, each with what its lookup found (the compiled config is shared, not copied).
const REMEMBERED_LOOKUPS: usize = 256;

/// Tells sources apart in the threads' memos of lookups (an address could be reused).
static SOURCE_IDS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// What this thread's lookups from memory found, by source, service and pin. Kept per
    /// thread so that reading it writes to no memory other threads read: a lock, or a
    /// reference count of the compiled config, that every worker thread shares costs more on a
    /// busy receiver than the rest of the lookup (their cache line moves between the cores).
    static REMEMBERED: RefCell<Memo> = RefCell::new(Memo::default());
}

/// A thread's memo of lookups, found by a key borrowed from the event ([`LookupOf`]).
type Memo = hashbrown::HashMap<LookupKey, Remembered>;

#[derive(Debug, PartialEq, Eq, Hash)]
struct LookupKey {
    source: u64,
    service: ServiceRef,
    pinned: Option<String>,
}

/// A [`LookupKey`] borrowed from the event: its fields hash as the key's do (a `String` hashes
/// as its `str`), so the memo is searched without copying the event's names.
#[derive(Debug, Clone, Copy, Hash)]
struct LookupOf<'a> {
    source: u64,
    service: ServiceName<'a>,
    pinned: Option<&'a str>,
}

impl hashbrown::Equivalent<LookupKey> for LookupOf<'_> {
    fn equivalent(&self, key: &LookupKey) -> bool {
        self.source == key.source
            && self.service == key.service.name()
            && self.pinned == key.pinned.as_deref()
    }
}

impl LookupOf<'_> {
    fn to_owned(self) -> LookupKey {
        LookupKey {
            source: self.source,
            service: self.service.to_owned(),
            pinned: self.pinned.map(str::to_string),
        }
    }
}

/// A lookup's result, valid while the heads are at `generation` and, if they were read, until
/// they are due to be fetched again.
#[derive(Debug)]
struct Remembered {
    generation: u64,
    fresh_until: Keep,
    found: Found,
}

/// A problem with what stale heads led to (no default branch, an invalid config) passes: the
/// repository may have been fixed since.
fn stale_problem(stale: &Option<Stale>, problem: SourceError) -> SourceError {
    match stale {
        Some(stale) if !problem.is_transient() && problem != SourceError::NotInMemory => {
            SourceError::Git(GitError::StaleProblem {
                problem: problem.to_string(),
                cause: Box::new(stale.error.clone()),
            })
        }
        _ => problem,
    }
}

/// What the lookups for one event share: the commit it pins (resolved once), how long what
/// they find may be kept, and whether the branch heads read are those of the last successful
/// fetch.
struct LookupState<'a> {
    pinned: Option<&'a str>,
    pinned_commit: Option<ObjectId>,
    /// The heads the first lookup read, read by every later one of the same event: a fetch
    /// between two lookups would otherwise mix two states of the repository (a service's config
    /// pushed meanwhile missed at the old heads, the stage's found at the new).
    heads: Option<Heads>,
    keep: Keep,
    stale: Option<Stale>,
}

/// How long what a lookup found holds, from the heads it read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Keep {
    /// No heads were read (a pinned commit): what it holds does not change.
    Always,
    /// Until the heads read are due to be fetched again.
    Until(Instant),
    /// The heads read came from a fetch for this lookup.
    Not,
}

impl Keep {
    fn and(self, heads: &Heads) -> Keep {
        match (self, heads.fresh_until) {
            (Keep::Not, _) | (_, None) => Keep::Not,
            (Keep::Always, Some(until)) => Keep::Until(until),
            (Keep::Until(kept), Some(until)) => Keep::Until(kept.min(until)),
        }
    }

    fn holds_at(self, now: Instant) -> bool {
        match self {
            Keep::Always => true,
            Keep::Until(until) => now <= until,
            Keep::Not => false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GitError {
    #[error("invalid git repository URL {url}: {reason}")]
    InvalidUrl { url: String, reason: String },
    #[error("invalid {flag} {lookup:?}: {reason}")]
    Layout {
        /// `--git-lookup` or `--git-files-from`.
        flag: &'static str,
        lookup: String,
        reason: String,
    },
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
    #[error(
        "commit {commit} is not in {url} (fetched just now); if the events' gitcommitid names \
         commits of another repository (Keptn's upstream), run with --git-pin-commits false"
    )]
    CommitNotFound { commit: String, url: String },
    #[error(
        "the run's commit {commit} is not in {url} (fetched just now): a force-push dropped it \
         after the run was accepted, and this replica's clone never had it; the run's files \
         cannot be read"
    )]
    RunCommitGone { commit: String, url: String },
    #[error(
        "gitcommitid {commit:?} is ambiguous: {count} commits of {url} start with it; give more digits"
    )]
    AmbiguousCommit {
        commit: String,
        count: usize,
        url: String,
    },
    #[error("commit {commit} is not in the clone cache yet, and {cause}")]
    CommitNotFetched {
        commit: String,
        cause: Box<GitError>,
    },
    #[error(
        "{problem}\n(read at the branch heads of the last successful fetch, as the repository cannot be fetched now: {cause})"
    )]
    StaleProblem {
        problem: String,
        cause: Box<GitError>,
    },
    #[error("the run records no commit to read its files at from {url}")]
    NoRevision { url: String },
    #[error(
        "{url} has no default branch (its HEAD names no branch it has), needed by lookup \
         {lookup}: point the repository's HEAD at a branch it has (on the git host, its default \
         branch), or drop the @default lookup from --git-lookup"
    )]
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
    /// The repository could not be reached or read now (unreachable, credentials refused or
    /// unreadable, the clone cache unusable); trying again later may work. Everything else is
    /// about the config, the event or the repository's content.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            GitError::Fetch { .. }
                | GitError::Cache { .. }
                | GitError::CacheInUse { .. }
                | GitError::Credentials { .. }
                | GitError::CommitNotFetched { .. }
                | GitError::StaleProblem { .. }
        )
    }
}

/// How to reach the repository and where configs are in it.
#[derive(Debug, Clone)]
pub struct GitSettings {
    /// `https://`, `http://`, `ssh://` or `file://`; credentials written into it are taken out
    /// and used as credentials, never shown.
    pub url: String,
    pub lookups: Vec<String>,
    /// `BRANCH:DIR` task files are read from, wherever the config was found (Keptn's
    /// service read them from the service's own resources): `{stage}:{service}`.
    pub files_from: Option<String>,
    pub credentials: CredentialSettings,
    /// A branch head older than this is fetched again before it is used.
    pub fetch_interval: Duration,
    pub cache_dir: PathBuf,
    /// The most the clone may hold and a fetch may take, and how long a lookup waits for one.
    pub limits: FetchLimits,
    /// Whether an event's `gitcommitid` pins the commit read: it names a commit of Keptn's
    /// upstream repository, which a repository of configs apart from it does not have.
    pub pin_commits: bool,
    pub metrics: GitMetrics,
}

/// What the git source counts.
#[derive(Debug, Clone, Default)]
pub struct GitMetrics {
    /// Fetches by outcome (the `job_executor_git_fetches_total` metric).
    pub fetches: Family<FetchLabels, Counter>,
    /// Config lookups (one per event) that read the branch heads of the last successful fetch
    /// because a fetch failed (the `job_executor_git_stale_lookups_total` metric).
    pub stale_lookups: Counter,
    /// Reads of a path at a commit: a config compiled, or found to be absent or unusable (the
    /// `job_executor_git_config_reads_total` metric).
    pub config_reads: Counter,
    /// Configs compiled: reads of a file whose content was not compiled already (the
    /// `job_executor_git_config_compiles_total` metric).
    pub config_compiles: Counter,
}

impl GitSettings {
    /// The lookups and the URL, parsed: everything [`GitSource::open`] checks before it touches
    /// the clone cache. `check-run` checks a Deployment's settings with it.
    pub fn parse(&self) -> Result<ParsedGitSettings, GitError> {
        let lookups = if self.lookups.is_empty() {
            Lookup::keptn()?
        } else {
            self.lookups
                .iter()
                .map(|text| Lookup::parse(text))
                .collect::<Result<_, _>>()?
        };
        let files_from = self
            .files_from
            .as_deref()
            .filter(|text| !text.trim().is_empty())
            .map(Lookup::parse_files_from)
            .transpose()?;
        Ok(ParsedGitSettings {
            lookups,
            files_from,
            url: RepoUrl::parse(&self.url)?,
        })
    }
}

/// [`GitSettings`] as [`GitSettings::parse`] checked them.
pub struct ParsedGitSettings {
    pub lookups: Vec<Lookup>,
    pub files_from: Option<Lookup>,
    pub url: RepoUrl,
}

#[derive(Debug)]
pub struct GitSource {
    /// This source among others, in the threads' memos of lookups.
    id: u64,
    cache: Arc<CloneCache>,
    stale_lookups: Counter,
    lookups: Vec<Lookup>,
    /// Where task files are read from (`--git-files-from`), wherever the config was found.
    files_from: Option<Lookup>,
    /// Whether an event's `gitcommitid` pins the commit read (`--git-pin-commits`).
    pin_commits: bool,
    fetch_interval: Duration,
    configs: Arc<Configs>,
    /// The last fetch for a pinned commit that failed, with when the lookup that found so was
    /// asked for: for a fetch interval after, a pinned commit the clone lacks is answered with
    /// it without a fetch (during an outage each event pinned to a commit the clone lacks
    /// would wait for a fetch of its own), as the heads' fetch is tried again once per
    /// interval. With the clone's generation then: a fetch recorded since (the heads', fetched
    /// ahead, once the host is back) ends it.
    pin_fetch_failed: Mutex<Option<(Instant, u64, GitError)>>,
}

/// Whether `at` is less than `interval` after `since`.
fn within(at: Instant, since: Instant, interval: Duration) -> bool {
    since.checked_add(interval).is_none_or(|until| at < until)
}

/// The configs read from the clone. Shared with the fetch ahead, which reads the paths lookups
/// read at the old heads again at the heads it found, before it records them
/// ([`Configs::read_ahead`]).
#[derive(Debug)]
struct Configs {
    cache: Arc<CloneCache>,
    known: Mutex<ConfigCache>,
    /// Counts [`Configs::read_config`]'s reads.
    reads: Counter,
    /// Counts the reads that compiled the file (its content was not compiled already).
    compiles: Counter,
}

/// A config's commit and path.
type ConfigKey = (ObjectId, String);

/// What reading the clone found at a commit and path.
#[derive(Debug)]
struct ConfigCache {
    found: Kept<ConfigKey, Arc<LoadedConfig>>,
    absent: Kept<ConfigKey, ()>,
    invalid: Kept<ConfigKey, SourceError>,
    /// The (commit, path)s being read, each with the turn the lookups that need it take: the
    /// first reads, the others wait and find what it read.
    reading: HashMap<ConfigKey, Arc<Mutex<()>>>,
    /// The compiled configs by the blob they were compiled from: a push compiles the configs
    /// it changed, and the others at the new commit share what was compiled at the old one,
    /// even once a sweep has dropped the old commit's (commit, path)s. Those in use are kept;
    /// at a sweep, those nothing else uses any more go.
    compiled: Kept<ObjectId, Arc<CompiledConfig>>,
    /// The new heads a read ahead reads at: what it reads is kept as the configs at the
    /// recorded heads are ([`Self::keep`]).
    ahead: Vec<ObjectId>,
}

impl Default for ConfigCache {
    fn default() -> Self {
        ConfigCache {
            found: Kept::new(CONFIG_CACHE_ENTRIES, Past::Keep),
            // Events make these up (any service name), so they keep a hard bound.
            absent: Kept::new(ABSENT_CACHE_ENTRIES, Past::Clear),
            invalid: Kept::new(INVALID_CACHE_ENTRIES, Past::Keep),
            reading: HashMap::new(),
            compiled: Kept::new(CONFIG_CACHE_ENTRIES, Past::Keep),
            ahead: Vec::new(),
        }
    }
}

/// Reads of one kind, swept of what is no longer needed when they reach a size: the bound at
/// first, and after a sweep twice what it kept. So what is needed can outgrow the bound
/// without a sweep on every insert, and what is not is dropped once it grows past the bound or
/// past as much as is needed.
#[derive(Debug)]
struct Kept<K, V> {
    map: HashMap<K, V>,
    bound: usize,
    past: Past,
    sweep_at: usize,
}

impl<K: std::hash::Hash + Eq, V> Kept<K, V> {
    fn new(bound: usize, past: Past) -> Self {
        Kept {
            map: HashMap::new(),
            bound,
            past,
            sweep_at: bound,
        }
    }

    fn get(&self, key: &K) -> Option<&V> {
        self.map.get(key)
    }

    /// Inserts `value`, first keeping only what `needed` says is, if it is time to sweep.
    /// With `Past::Clear`, a sweep empties the map when what is needed is at the bound already.
    fn insert(&mut self, key: K, value: V, mut needed: impl FnMut(&K, &V) -> bool) {
        if self.map.len() >= self.sweep_at && !self.map.contains_key(&key) {
            self.map.retain(|key, value| needed(key, value));
            if self.past == Past::Clear && self.map.len() >= self.bound {
                self.map.clear();
            }
            self.sweep_at = self.bound.max(2 * self.map.len());
        }
        self.map.insert(key, value);
    }
}

/// What happens when more than a kind's bound is needed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Past {
    /// All of it is kept: only the repository's content makes it so.
    Keep,
    /// The map is emptied: events make it so (a service name for which nothing is found).
    Clear,
}

/// A config as read at a commit: compiled, none at the path (`Ok(None)`), or why it cannot be
/// used.
type ReadConfig = Result<Option<Arc<LoadedConfig>>, SourceError>;

impl ConfigCache {
    /// `None`: not known.
    fn get(&self, key: &ConfigKey) -> Option<ReadConfig> {
        if let Some(loaded) = self.found.get(key) {
            return Some(Ok(Some(loaded.clone())));
        }
        if self.absent.get(key).is_some() {
            return Some(Ok(None));
        }
        self.invalid.get(key).map(|error| Err(error.clone()))
    }

    /// The (commit, path)s whose read is kept.
    fn keys(&self) -> impl Iterator<Item = &ConfigKey> {
        (self.found.map.keys())
            .chain(self.absent.map.keys())
            .chain(self.invalid.map.keys())
    }

    /// Keeps what a read found. `heads` are the recorded heads. When a kind is swept, what is
    /// at the heads lookups read stays: the recorded ones, and those a read ahead is reading at
    /// (until they are recorded, lookups read the heads they replace). The rest (older
    /// commits, pinned ones) goes.
    fn keep(&mut self, key: ConfigKey, read: &ReadConfig, heads: Option<&RemoteHeads>) {
        let ahead = &self.ahead;
        let live = |(commit, _): &ConfigKey| {
            ahead.contains(commit)
                || heads.is_some_and(|heads| heads.branches.values().any(|head| head == commit))
        };
        // Each kind has its own bound, so that services without a config of their own (most,
        // in Keptn's layout) or broken ones do not push compiled configs out.
        match read {
            Ok(Some(loaded)) => {
                let value = loaded.clone();
                self.found.insert(key, value, |key, _| live(key));
            }
            Ok(None) => self.absent.insert(key, (), |key, _| live(key)),
            Err(error) => {
                let value = error.clone();
                self.invalid.insert(key, value, |key, _| live(key));
            }
        }
    }

    /// The config compiled from `blob`, if it is kept.
    fn compiled(&self, blob: &ObjectId) -> Option<Arc<CompiledConfig>> {
        self.compiled.get(blob).cloned()
    }

    fn keep_compiled(&mut self, blob: ObjectId, compiled: &Arc<CompiledConfig>) {
        // Those held by nothing but this map go: no (commit, path), run or thread's memo uses
        // them. The others are alive anyway: keeping them costs an entry, and lets a config
        // read at a new commit share them.
        let used = |_: &ObjectId, config: &Arc<CompiledConfig>| Arc::strong_count(config) > 1;
        self.compiled.insert(blob, compiled.clone(), used);
    }
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
        let ParsedGitSettings {
            lookups,
            files_from,
            url,
        } = settings.parse()?;
        let GitSettings {
            credentials,
            fetch_interval,
            cache_dir,
            limits,
            pin_commits,
            metrics:
                GitMetrics {
                    fetches,
                    stale_lookups,
                    config_reads,
                    config_compiles,
                },
            ..
        } = settings;
        let cache = CloneCache::open(url, &cache_dir, credentials, limits, fetches)?;
        let cache = Arc::new(cache);
        Ok(GitSource {
            id: SOURCE_IDS.fetch_add(1, Ordering::Relaxed),
            cache: cache.clone(),
            stale_lookups,
            lookups,
            files_from,
            pin_commits,
            fetch_interval,
            pin_fetch_failed: Mutex::default(),
            configs: Arc::new(Configs {
                cache,
                known: Mutex::default(),
                reads: config_reads,
                compiles: config_compiles,
            }),
        })
    }

    fn url(&self) -> String {
        self.cache.shown_url().to_string()
    }

    /// The commit a pinned id names, fetching once if the cache does not have it yet. A fetch
    /// that fails then is [`GitError::CommitNotFetched`]: the commit may well exist.
    fn pinned_commit(&self, pin: &str, requested: Instant) -> Result<ObjectId, GitError> {
        if let Some(id) = self.find_commit(pin)? {
            return Ok(id);
        }
        let not_fetched = |cause: GitError| GitError::CommitNotFetched {
            commit: pin.to_string(),
            cause: Box::new(cause),
        };
        if let Some(cause) = self.pin_fetch_failed.lock().ok().and_then(|failed| {
            let (at, generation, cause) = failed.as_ref()?;
            (within(requested, *at, self.fetch_interval) && *generation == self.cache.generation())
                .then(|| cause.clone())
        }) {
            return Err(not_fetched(cause));
        }
        let cause = match self.cache.heads(requested, Duration::ZERO) {
            Err(error) => error,
            Ok(Heads {
                stale: Some(stale), ..
            }) => stale.error,
            Ok(_) => {
                return self
                    .find_commit(pin)?
                    .ok_or_else(|| GitError::CommitNotFound {
                        commit: pin.to_string(),
                        url: self.url(),
                    });
            }
        };
        if let Ok(mut failed) = self.pin_fetch_failed.lock() {
            *failed = Some((requested, self.cache.generation(), cause.clone()));
        }
        Err(not_fetched(cause))
    }

    /// A commit of the cache by its full or abbreviated id. An abbreviation names the one
    /// commit among the objects it starts (as git takes it: a blob or tree of the same prefix
    /// does not make it ambiguous); two commits or more are an error a fetch cannot mend.
    fn find_commit(&self, pin: &str) -> Result<Option<ObjectId>, GitError> {
        let repo = self.cache.repo();
        // Only an object the store does not hold is absent: a read that fails (a pack that
        // cannot be mapped, no file handles left) is the cache's error, tried again, not a
        // commit the repository lacks.
        // Its kind from its header: the object itself is not read (a pin naming a blob that
        // inflates to gigabytes would be, for every event naming it).
        let commit = |id: ObjectId| match repo.try_find_header(id) {
            Ok(found) => Ok(found
                .filter(|header| header.kind() == gix::object::Kind::Commit)
                .map(|_| id)),
            Err(error) => Err(GitError::Cache {
                path: repo.path().display().to_string(),
                cause: format!("reading object {id}: {error}"),
            }),
        };
        if let Ok(id) = ObjectId::from_hex(pin.as_bytes()) {
            return commit(id);
        }
        let Ok(prefix) = gix::hash::Prefix::from_hex(pin) else {
            return Ok(None);
        };
        let mut candidates = std::collections::HashSet::new();
        match repo.objects.lookup_prefix(prefix, Some(&mut candidates)) {
            Ok(Some(_)) => {}
            Ok(None) => return Ok(None),
            Err(error) => {
                return Err(GitError::Cache {
                    path: repo.path().display().to_string(),
                    cause: format!("looking up objects starting with {pin}: {error}"),
                });
            }
        }
        let mut commits = Vec::new();
        for candidate in candidates {
            commits.extend(commit(candidate)?);
        }
        match commits.len() {
            0 | 1 => Ok(commits.pop()),
            count => Err(GitError::AmbiguousCommit {
                commit: pin.to_string(),
                count,
                url: self.url(),
            }),
        }
    }

    pub fn load(
        &self,
        service: &ServiceRef,
        pinned: Option<&str>,
        reads: Reads,
    ) -> Result<Found, SourceError> {
        let pinned = pinned.filter(|_| self.pin_commits);
        let (found, _) = self.lookup(service, pinned, reads, Instant::now())?;
        self.note_stale(service.name(), &found);
        Ok(found)
    }

    fn note_stale(&self, service: ServiceName<'_>, found: &Found) {
        if let Some(stale) = &found.stale {
            self.stale_lookups.inc();
            tracing::warn!(url = %self.url(), error = %stale.error, fetched_at = ?stale.fetched_at, project = %service.project, stage = %service.stage, service = %service.service, "the config repository cannot be fetched: the config is looked up at the branch heads of the last successful fetch");
        }
    }

    /// [`Self::load`] from memory ([`Reads::Memory`]), handing what it found to `use_found`
    /// instead of returning it: a lookup this thread made before at the same heads (no fetch
    /// since, none under way, not yet due for one) is not made again, and what it found is
    /// lent, not copied (see [`REMEMBERED`]).
    pub fn inspect_in_memory<R>(
        &self,
        service: ServiceName<'_>,
        pinned: Option<&str>,
        use_found: impl FnOnce(ServiceName<'_>, Result<&Found, SourceError>) -> R,
    ) -> R {
        let pinned = pinned.filter(|_| self.pin_commits);
        if REMEMBERED.try_with(|_| ()).is_err() {
            // The thread is ending, and its memo is gone: looked up as `load` does.
            let found = self.load(&service.to_owned(), pinned, Reads::Memory);
            return super::lend(service, found, use_found);
        }
        let key = LookupOf {
            source: self.id,
            service,
            pinned,
        };
        // The memo is there: nothing ran since it was checked, and it goes only with the thread.
        REMEMBERED.with(|remembered| self.remembered(remembered, key, use_found))
    }

    /// [`Self::inspect_in_memory`] with this thread's memo.
    fn remembered<R>(
        &self,
        remembered: &RefCell<Memo>,
        key: LookupOf<'_>,
        use_found: impl FnOnce(ServiceName<'_>, Result<&Found, SourceError>) -> R,
    ) -> R {
        let generation = self.cache.generation();
        let now = Instant::now();
        // Odd: a fetch is under way, and a lookup from memory does not wait for it.
        let settled = generation.is_multiple_of(2);
        if settled
            && let Ok(known) = remembered.try_borrow()
            && let Some(known) = known.get(&key)
            && known.generation == generation
            && known.fresh_until.holds_at(now)
        {
            self.fetch_ahead_if_due(known.fresh_until, now);
            self.note_stale(key.service, &known.found);
            return use_found(key.service, Ok(&known.found));
        }
        let key = key.to_owned();
        let found = self.lookup(&key.service, key.pinned.as_deref(), Reads::Memory, now);
        let (found, keep) = match found {
            Ok(found) => found,
            Err(error) => return use_found(key.service.name(), Err(error)),
        };
        self.note_stale(key.service.name(), &found);
        // Borrowed already: `use_found` looks up again (it is lent what was found, not the memo).
        let Ok(mut known) = remembered.try_borrow_mut() else {
            return use_found(key.service.name(), Ok(&found));
        };
        if !settled || !keep.holds_at(now) {
            return use_found(key.service.name(), Ok(&found));
        }
        if known.len() >= REMEMBERED_LOOKUPS && !known.contains_key(&key) {
            known.clear();
        }
        let entry = known.entry(key).insert(Remembered {
            generation,
            fresh_until: keep,
            found,
        });
        use_found(entry.key().service.name(), Ok(&entry.get().found))
    }

    /// The lookups in order; a problem with what stale heads led to (no default branch, an
    /// invalid config) is [`GitError::StaleProblem`], which passes: the repository may have
    /// been fixed since.
    fn lookup(
        &self,
        service: &ServiceRef,
        pinned: Option<&str>,
        reads: Reads,
        requested: Instant,
    ) -> Result<(Found, Keep), SourceError> {
        service.check()?;
        let pinned = pinned
            .filter(|p| !p.trim().is_empty())
            .map(parse_pin)
            .transpose()?;
        let mut at = LookupState {
            pinned,
            pinned_commit: None,
            heads: None,
            keep: Keep::Always,
            stale: None,
        };
        for lookup in &self.lookups {
            let path = lookup.path.render(service);
            let Some((commit, read_stale)) =
                self.commit_for(lookup, service, reads, requested, &mut at)?
            else {
                continue;
            };
            match self.configs.load_at(commit, path, reads) {
                Ok(Some(loaded)) => {
                    let mut found = Found {
                        config: Some(loaded),
                        files: None,
                        stale: read_stale,
                    };
                    if let Some(from) = &self.files_from {
                        // Keptn's service read every task file from the service's own place,
                        // wherever its config was found.
                        let read = self.commit_for(from, service, reads, requested, &mut at)?;
                        let (revision, files_stale) = match read {
                            Some((commit, stale)) => (Some(commit.to_string()), stale),
                            None => (None, at.stale.clone()),
                        };
                        found.stale = found.stale.or(files_stale);
                        found.files = Some(FilesPlace {
                            revision,
                            dir: from.path.render(service).trim_end_matches('/').to_string(),
                            branch: match &from.branch {
                                Branch::Default => "the default branch".to_string(),
                                Branch::Named(branch) => {
                                    format!("branch {}", branch.render(service))
                                }
                            },
                        });
                    }
                    return Ok((found, at.keep));
                }
                Ok(None) => {}
                Err(problem) => return Err(stale_problem(&read_stale, problem)),
            }
        }
        Ok((
            Found {
                config: None,
                files: None,
                stale: at.stale,
            },
            at.keep,
        ))
    }

    /// The commit `lookup` reads for `service`: for a named branch the commit the event pins
    /// (resolved once for all lookups), else the branch's head with the staleness of the heads
    /// read; `None` when there is no such branch. A missing default branch in stale heads is a
    /// [`GitError::StaleProblem`].
    fn commit_for(
        &self,
        lookup: &Lookup,
        service: &ServiceRef,
        reads: Reads,
        requested: Instant,
        at: &mut LookupState<'_>,
    ) -> Result<Option<(ObjectId, Option<Stale>)>, SourceError> {
        Ok(Some(match (&lookup.branch, at.pinned) {
            (Branch::Default, _) => {
                let heads = self.heads_once(requested, reads, at)?;
                at.keep = at.keep.and(&heads);
                at.stale = heads.stale.clone();
                match heads.default_branch() {
                    Some((_, head)) => (head, heads.stale),
                    None => {
                        let problem = GitError::NoDefaultBranch {
                            url: self.url(),
                            lookup: lookup.to_string(),
                        };
                        return Err(stale_problem(&at.stale, problem.into()));
                    }
                }
            }
            (Branch::Named(_), Some(pin)) => match at.pinned_commit {
                Some(commit) => (commit, None),
                None => {
                    let commit = match reads {
                        Reads::Any => self.pinned_commit(pin, requested)?,
                        // Not looked up in the clone: only a config read at this commit
                        // before answers from memory, and that proves the clone has it.
                        Reads::Memory => ObjectId::from_hex(pin.as_bytes())
                            .map_err(|_| SourceError::NotInMemory)?,
                    };
                    at.pinned_commit = Some(commit);
                    (commit, None)
                }
            },
            (Branch::Named(branch), None) => {
                let heads = self.heads_once(requested, reads, at)?;
                at.keep = at.keep.and(&heads);
                at.stale = heads.stale.clone();
                match heads.branch(&branch.render(service)) {
                    Some(head) => (head, heads.stale),
                    None => return Ok(None),
                }
            }
        }))
    }

    /// The branch heads the lookups of one event read: read once ([`Self::heads`]).
    fn heads_once(
        &self,
        requested: Instant,
        reads: Reads,
        at: &mut LookupState<'_>,
    ) -> Result<Heads, SourceError> {
        if let Some(heads) = &at.heads {
            return Ok(heads.clone());
        }
        let heads = self.heads(requested, reads)?;
        at.heads = Some(heads.clone());
        Ok(heads)
    }

    /// The branch heads a lookup reads (see [`CloneCache::heads`]).
    fn heads(&self, requested: Instant, reads: Reads) -> Result<Heads, SourceError> {
        let heads = match reads {
            Reads::Any => self.cache.heads(requested, self.fetch_interval)?,
            Reads::Memory => self
                .cache
                .heads_in_memory(requested, self.fetch_interval)
                .ok_or(SourceError::NotInMemory)??,
        };
        self.fetch_ahead_if_due(Keep::Always.and(&heads), requested);
        Ok(heads)
    }

    /// Starts a fetch ahead ([`CloneCache::fetch_ahead`]) when what a lookup read holds until
    /// `fresh_until` and what is left of it at `now` is within the lead
    /// ([`CloneCache::fetch_ahead_lead`]): under a steady stream of events the heads are fetched
    /// again before they are due, and no event waits for the fetch.
    fn fetch_ahead_if_due(&self, fresh_until: Keep, now: Instant) {
        if let Keep::Until(until) = fresh_until
            && now <= until
            && until.duration_since(now) <= self.cache.fetch_ahead_lead(self.fetch_interval)
        {
            let configs = &self.configs;
            self.cache.fetch_ahead(|| {
                let configs = configs.clone();
                move |heads: &RemoteHeads| configs.read_ahead(heads)
            });
        }
    }

    pub fn collect_run_files(
        &self,
        revision: Option<&str>,
        dir: &str,
        tasks: &[Task],
        reads: Reads,
    ) -> Result<RunFiles, SourceError> {
        if tasks.iter().all(|task| task.files.is_empty()) {
            return Ok(RunFiles {
                files: Vec::new(),
                per_task: vec![Vec::new(); tasks.len()],
            });
        }
        if reads == Reads::Memory {
            return Err(SourceError::NotInMemory);
        }
        let Some(revision) = revision else {
            return Err(GitError::NoRevision { url: self.url() }.into());
        };
        let commit = match self.pinned_commit(parse_pin(revision)?, Instant::now()) {
            // Not an event's `gitcommitid` to turn off: the commit the run read its config at.
            Err(GitError::CommitNotFound { commit, url }) => {
                return Err(GitError::RunCommitGone { commit, url }.into());
            }
            other => other?,
        };
        if !dir.is_empty() && files::normalize_entry(dir).as_deref() != Some(dir) {
            return Err(SourceError::InvalidName {
                field: "config directory",
                value: dir.to_string(),
            });
        }
        let tree = commit_tree(&self.cache, commit, dir)?;
        Ok(files::collect(&tree, tasks)?)
    }
}

impl Configs {
    /// Reads ahead, for a fetch that found `found`, before it records them: the (commit, path)s
    /// known at a branch's recorded head, at its new head, for the branches that moved. So the
    /// lookups after the fetch find in memory the configs the ones before it read (no event
    /// waits for a config to be compiled after a push), and a failed read is left to them.
    fn read_ahead(&self, found: &RemoteHeads) {
        let Some(recorded) = self.cache.recorded_heads() else {
            return;
        };
        let moved: Vec<(&String, ObjectId, ObjectId)> = recorded
            .branches
            .iter()
            .filter_map(|(branch, was)| {
                let now = found.branches.get(branch)?;
                (now != was).then_some((branch, *was, *now))
            })
            .collect();
        if moved.is_empty() {
            return;
        }
        let ahead: HashSet<ConfigKey> = match self.known.lock() {
            Ok(mut known) => {
                known.ahead = moved.iter().map(|(_, _, now)| *now).collect();
                (known.keys())
                    .flat_map(|(commit, path)| {
                        moved
                            .iter()
                            .filter(move |(_, was, _)| was == commit)
                            .map(move |(_, _, now)| (*now, path.clone()))
                    })
                    .collect()
            }
            Err(_) => return,
        };
        for (commit, path) in ahead {
            // An error is the lookups' to report, and to try again.
            let _ = self.load_at(commit, path, Reads::Any);
        }
        // Recorded next: from then on, the recorded heads keep what was read.
        if let Ok(mut known) = self.known.lock() {
            known.ahead.clear();
        }
    }

    /// The config at `path` of `commit`, compiled: once per commit and path, and so is that
    /// there is none, or why it cannot be used. Lookups that need the same one at the same time
    /// (the events that follow a push, all at once) wait for one read instead of each
    /// compiling the config.
    fn load_at(&self, commit: ObjectId, path: String, reads: Reads) -> ReadConfig {
        let key = (commit, path);
        if let Some(known) = self.known_config(&key) {
            return known;
        }
        if reads == Reads::Memory {
            return Err(SourceError::NotInMemory);
        }
        let turn = match self.known.lock() {
            Ok(mut configs) => configs.reading.entry(key.clone()).or_default().clone(),
            Err(_) => Arc::default(),
        };
        let _turn = turn.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(known) = self.known_config(&key) {
            // Read by the lookup whose turn it was.
            return known;
        }
        let read = self.read_config(commit, &key.1);
        let heads = self.cache.recorded_heads();
        if let Ok(mut configs) = self.known.lock() {
            // A read that failed is not kept: the lookups waiting try in turn.
            if let Ok(read) = &read {
                configs.keep(key.clone(), read, heads.as_deref());
            }
            configs.reading.remove(&key);
        }
        read?
    }

    fn known_config(&self, key: &ConfigKey) -> Option<ReadConfig> {
        self.known.lock().ok().and_then(|configs| configs.get(key))
    }

    /// What the file at `path` of `commit` holds, which stays so; or why the clone could not
    /// be read (`Err`), which is not kept: another read may succeed. A file whose content was
    /// compiled already (at another commit, at another path) is not compiled again.
    fn read_config(&self, commit: ObjectId, path: &str) -> Result<ReadConfig, SourceError> {
        self.reads.inc();
        let tree = commit_tree(&self.cache, commit, "")?;
        let blob = match tree.file(path) {
            Ok(Some(blob)) => blob,
            Ok(None) => return Ok(Ok(None)),
            Err(error) => return Err(read_error(&self.cache, path, commit, error).into()),
        };
        let origin = format!("{}:{path}", commit.to_hex_with_len(12));
        let known = self
            .known
            .lock()
            .ok()
            .and_then(|known| known.compiled(&blob));
        let compiled = match known {
            Some(compiled) => compiled,
            None => match self.compile_blob(&tree, blob, &origin, path, commit)? {
                Ok(compiled) => compiled,
                Err(unusable) => return Ok(Err(unusable)),
            },
        };
        Ok(Ok(Some(Arc::new(LoadedConfig {
            compiled,
            revision: Some(commit.to_string()),
            dir: layout::files_dir(path),
            origin,
        }))))
    }

    /// Compiles the config in `blob` (the file at `path` of `commit`) and keeps it for the
    /// reads of the same content; `Ok(Err)` says why it cannot be used.
    fn compile_blob(
        &self,
        tree: &CommitTree,
        blob: ObjectId,
        origin: &str,
        path: &str,
        commit: ObjectId,
    ) -> Result<Result<Arc<CompiledConfig>, SourceError>, SourceError> {
        self.compiles.inc();
        let bytes = match tree.read_blob(blob, config::MAX_CONFIG_BYTES) {
            Ok(bytes) => bytes,
            Err(WalkError::TooLarge(size)) => {
                let (limit, file) = (config::MAX_CONFIG_BYTES, origin.to_string());
                return Ok(Err(ConfigError::TooLarge { file, size, limit }.into()));
            }
            Err(error) => return Err(read_error(&self.cache, path, commit, error).into()),
        };
        let text = match config::text_of(bytes, origin) {
            Ok(text) => text,
            Err(unusable) => return Ok(Err(unusable.into())),
        };
        let compiled = match compile(&text, origin) {
            Ok(compiled) => Arc::new(compiled),
            Err(unusable) => return Ok(Err(unusable)),
        };
        if let Ok(mut known) = self.known.lock() {
            known.keep_compiled(blob, &compiled);
        }
        Ok(Ok(compiled))
    }
}

fn commit_tree(cache: &CloneCache, commit: ObjectId, dir: &str) -> Result<CommitTree, GitError> {
    let path = if dir.is_empty() { "/" } else { dir };
    CommitTree::new(cache.repo(), commit, dir)
        .map_err(|error| read_error(cache, path, commit, error))
}

fn read_error(cache: &CloneCache, path: &str, commit: ObjectId, error: WalkError) -> GitError {
    if let WalkError::Store(cause) = error {
        return GitError::Cache {
            path: cache.repo().path().display().to_string(),
            cause: format!("reading {path} at commit {commit}: {cause}"),
        };
    }
    GitError::Read {
        path: path.to_string(),
        commit: commit.to_string(),
        url: cache.shown_url().to_string(),
        reason: error.reason(),
    }
}

#[cfg(test)]
mod tests;
