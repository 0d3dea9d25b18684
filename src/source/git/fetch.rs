//! The clone cache: one bare repository per URL, fetched on demand with gitoxide (no `git`
//! binary; `ssh://` runs an `ssh` client, `file://` runs `git upload-pack`, as gitoxide does).
//!
//! Every fetch takes all branches (`+refs/heads/*:refs/remotes/origin/*`) and the remote's
//! `HEAD`, never tags. It is not shallow: an event's `gitcommitid` may name any older commit
//! of a branch, and a shallow cache would have to fetch it by id, which servers allow only when
//! configured to (`uploadpack.allowReachableSHA1InWant`); after the first fetch every fetch is
//! incremental anyway.
//!
//! One fetch runs at a time (but for one left to itself, below), on a thread of its own: a
//! burst of events for the same branch whose heads are due shares one fetch, and a failed fetch
//! is reported to every request that waited for it instead of being repeated by each. Lookups
//! whose heads are not due read them while a fetch runs; the fetch holds the heads' lock only
//! to record what it found. A lookup waits for a fetch at most [`FetchLimits::wait`] (counted
//! from the fetch's start when it started earlier), then reads the heads of the last successful
//! fetch, marked stale. A fetch that has run for [`FetchLimits::timeout`] is interrupted where
//! it can be and left to itself: the next lookup that needs a fetch starts one beside it (one
//! left at a time: while one is, a fetch past the timeout is waited for as any other, at most
//! [`FetchLimits::wait`] from its start), and what the fetch left to itself finds is not used
//! if a newer one ended first.
//!
//! Under a steady stream of events, no event waits for a fetch: once what is left of the fetch
//! interval is twice as long as the last fetch took (at least a quarter of the interval, at most
//! half), a lookup starts a fetch ahead on a thread of its own and reads the heads it has
//! meanwhile ([`CloneCache::fetch_ahead`]). A fetch ahead is tried once per successful fetch, so
//! a failing repository is not asked again before the interval passed.
//!
//! When a fetch fails, lookups read the branch heads of the last successful fetch ([`Heads`]
//! with [`Stale`](super::heads::Stale)), and a failed fetch is tried again only once the fetch
//! interval has passed; only with no heads at all (nothing was ever fetched into the clone) is
//! the failure the answer.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::{Duration, Instant};

use gix::bstr::ByteSlice as _;
use gix::odb::store::init::Slots;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use sha2::Digest as _;

use super::GitError;
use super::heads::{Heads, RemoteHeads, Stale};
use super::owner::{self, CacheOwner};

/// Labels of the fetch counter: `outcome` is `ok` or `failed`.
pub type FetchLabels = Vec<(&'static str, &'static str)>;

/// Seconds a connection to the repository may take to open.
const CONNECT_TIMEOUT_MS: u64 = 10_000;
/// A transfer slower than this many bytes per second for `LOW_SPEED_SECONDS` is given up, by
/// a transport that reads `http.lowSpeed*` (the reqwest one in use does not: there a read
/// that waits 30 s fails).
const LOW_SPEED_BYTES: u64 = 1_000;
const LOW_SPEED_SECONDS: u64 = 30;
/// Seconds between an ssh connection's keep-alives when the server sends nothing.
const SSH_ALIVE_INTERVAL_SECONDS: u64 = 15;

/// What a fetch may take: room on disk and time, and how long a lookup waits for it.
#[derive(Debug, Clone, Copy)]
pub struct FetchLimits {
    /// The most the clone's objects may take on disk (`--git-max-repository-bytes`).
    pub max_bytes: u64,
    /// How long a fetch may take (`--git-fetch-timeout-seconds`): then its transfer is
    /// interrupted where it can be, and the next fetch does not wait for it.
    pub timeout: Duration,
    /// How long a lookup waits for a fetch under way (`--git-fetch-wait-seconds`) before it
    /// reads the heads of the last successful fetch, marked stale, or fails without any.
    pub wait: Duration,
}

impl Default for FetchLimits {
    fn default() -> Self {
        FetchLimits {
            max_bytes: 1 << 30,
            timeout: Duration::from_secs(600),
            wait: Duration::from_secs(10),
        }
    }
}

/// Where the credentials come from; read at every fetch, so a rotated Secret is picked up.
#[derive(Debug, Clone, Default)]
pub struct CredentialSettings {
    /// A mounted Secret: files `username`, `password` or `token`, `ssh-privatekey`,
    /// `known_hosts`.
    pub dir: Option<PathBuf>,
    pub username: Option<String>,
    pub password: Option<String>,
}

/// HTTP basic credentials for one fetch.
#[derive(Clone)]
struct Account {
    username: String,
    password: String,
}

/// The username sent with a token when none is configured (GitHub's convention; GitLab and
/// Gitea accept any username with a token).
const TOKEN_USERNAME: &str = "x-access-token";

impl CredentialSettings {
    fn read(&self, name: &str) -> Result<Option<String>, GitError> {
        let Some(dir) = &self.dir else {
            return Ok(None);
        };
        let path = dir.join(name);
        match std::fs::read_to_string(&path) {
            Ok(text) => Ok(Some(text.trim_end_matches(['\n', '\r']).to_string())),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(GitError::Credentials {
                path: path.display().to_string(),
                reason: error.to_string(),
            }),
        }
    }

    fn account(&self) -> Result<Option<Account>, GitError> {
        let username = match &self.username {
            Some(username) => Some(username.clone()),
            None => self.read("username")?,
        };
        let password = match &self.password {
            Some(password) => Some(password.clone()),
            None => match self.read("password")? {
                Some(password) => Some(password),
                None => self.read("token")?,
            },
        };
        Ok(password.map(|password| Account {
            username: username.unwrap_or_else(|| TOKEN_USERNAME.to_string()),
            password,
        }))
    }
}

/// The repository URL split into what may be shown and what is secret.
#[derive(Debug, Clone)]
pub struct RepoUrl {
    /// What gitoxide connects to: no password, and for HTTP no username either.
    pub url: gix::Url,
    /// For messages and logs.
    pub shown: String,
    /// Credentials that were written into the URL.
    username: Option<String>,
    password: Option<String>,
}

impl RepoUrl {
    pub fn parse(text: &str) -> Result<Self, GitError> {
        // gitoxide's reason may quote the URL as given: credentials and all.
        let invalid = |reason: &str| {
            let mut reason = reason.replace(text, &redact(text));
            if let Some((_, credentials, _)) = split_credentials(text)
                && !credentials.is_empty()
            {
                reason = reason.replace(credentials, "****");
            }
            GitError::InvalidUrl {
                url: redact(text),
                reason,
            }
        };
        let mut url =
            gix::url::parse(text.as_bytes().as_bstr()).map_err(|e| invalid(&e.to_string()))?;
        let password = url.set_password(None);
        let username = match url.scheme {
            gix::url::Scheme::Http | gix::url::Scheme::Https => url.set_user(None),
            gix::url::Scheme::Ssh | gix::url::Scheme::File => None,
            _ => return Err(invalid("use https://, http://, ssh:// or file://")),
        };
        let shown = url.to_bstring().to_string();
        Ok(RepoUrl {
            url,
            shown,
            username,
            password,
        })
    }

    pub fn is_ssh(&self) -> bool {
        self.url.scheme == gix::url::Scheme::Ssh
    }
}

/// A URL as it may appear in a message: any `user:password@` removed.
pub fn redact(url: &str) -> String {
    match split_credentials(url) {
        Some((scheme, _, rest)) => format!("{scheme}://{rest}"),
        None => url.to_string(),
    }
}

/// A URL as a listing of settings shows it: any `user:password@` replaced by `****@`, so the
/// reader sees that credentials are there but not what they are.
pub fn mask_credentials(url: &str) -> String {
    if let Some((scheme, _, rest)) = split_credentials(url) {
        return format!("{scheme}://****@{rest}");
    }
    // The scp-like form, `user@host:path`.
    let path_start = url.find('/').unwrap_or(url.len());
    match url[..path_start].find('@') {
        Some(at) if !url.contains("://") => format!("****@{}", &url[at + 1..]),
        _ => url.to_string(),
    }
}

/// `scheme://credentials@rest` → `(scheme, credentials, rest)`; `None` without credentials.
/// A password with a `/`, `?` or `#` left unescaped (generated passwords have them) ends the
/// authority early, as `user:pa` with no `@` and no port after the `:`: then everything up to
/// the last `@` counts as credentials, so a message shows less of the URL, not the password.
pub fn split_credentials(url: &str) -> Option<(&str, &str, &str)> {
    let (scheme, rest) = url.split_once("://")?;
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let cut_password = authority
        .split_once(':')
        .is_some_and(|(_, after)| !after.bytes().all(|b| b.is_ascii_digit()));
    let at = match authority.rfind('@') {
        Some(at) => at,
        None if cut_password => rest.rfind('@')?,
        None => return None,
    };
    Some((scheme, &rest[..at], &rest[at + 1..]))
}

/// Whether a fetch is under way, and how many have ended: lookups wait on it for the one under
/// way. Apart from the cache, so that a fetch's thread lets go of the cache (and the clone's
/// owner lock) before it wakes them.
#[derive(Debug, Default)]
struct FetchProgress {
    progress: Mutex<Progress>,
    ended: Condvar,
}

#[derive(Debug, Default)]
struct Progress {
    /// The claim of the fetch under way (its number) and when it was made.
    under_way: Option<(u64, Instant)>,
    /// Claims made: the next one's number.
    claims: u64,
    /// Fetches ended (their outcome recorded in the state), or given up before they started.
    ended: u64,
    /// Fetches left to themselves (see [`Progress::under_way`]) that have not ended yet.
    left_behind: u32,
}

/// The most fetches left to themselves at once: with one, a fetch under way past the timeout
/// is waited for as any fetch (at most `--git-fetch-wait-seconds` from its start) instead of
/// being joined by another.
const MOST_LEFT_BEHIND: u32 = 1;

impl Progress {
    /// When the fetch under way started, unless it has run past `timeout`: a fetch still under
    /// way then (a host trickling a large packet holds a read until it is whole, where the
    /// transfer cannot be interrupted) is left to itself, and the next one may start beside it
    /// — unless [`MOST_LEFT_BEHIND`] are left already.
    fn under_way(&self, timeout: Duration) -> Option<Instant> {
        let (_, since) = self.under_way?;
        (since.elapsed() <= timeout || self.left_behind >= MOST_LEFT_BEHIND).then_some(since)
    }
}

impl FetchProgress {
    fn lock(&self) -> std::sync::MutexGuard<'_, Progress> {
        self.progress.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Claims the fetch about to start, through the lock the caller holds (and lets go of
    /// before the claim is dropped).
    fn claim(self: &Arc<Self>, progress: &mut Progress, now: Instant) -> Claim {
        if progress.under_way.is_some() {
            progress.left_behind += 1;
        }
        progress.claims += 1;
        progress.under_way = Some((progress.claims, now));
        Claim {
            progress: self.clone(),
            number: progress.claims,
        }
    }
}

/// The claim of the fetch under way: let go, and the lookups waiting for it woken, when
/// dropped (after the fetch recorded its outcome, or if it panicked). A claim left behind (see
/// [`Progress::under_way`]) is counted off, and wakes them too.
struct Claim {
    progress: Arc<FetchProgress>,
    number: u64,
}

impl Drop for Claim {
    fn drop(&mut self) {
        let mut progress = self.progress.lock();
        if progress
            .under_way
            .is_some_and(|(number, _)| number == self.number)
        {
            progress.under_way = None;
        } else {
            progress.left_behind = progress.left_behind.saturating_sub(1);
        }
        progress.ended += 1;
        self.progress.ended.notify_all();
    }
}

#[derive(Debug, Default)]
struct FetchState {
    /// When the last successful fetch of this process started.
    last_ok: Option<Instant>,
    /// When the last failed fetch started, and why it failed.
    last_failure: Option<(Instant, GitError)>,
    /// What the last successful fetch saw: of this process, or of an earlier one (read from the
    /// clone when it is opened); `None` when nothing was ever fetched into the clone.
    heads: Option<Arc<RemoteHeads>>,
}

/// The clone's object store and the pack index slots it was opened with.
struct OpenStore {
    repo: gix::ThreadSafeRepository,
    slots: u16,
}

/// Where the fetch keeps the remote's branches.
const REMOTE_REFS: &str = "refs/remotes/origin/";

/// Deletes the clone's refs of branches the remote no longer has (as `git fetch --prune`):
/// a branch `release` deleted and `release/2.0` pushed would otherwise leave the file
/// `refs/remotes/origin/release` where the fetch must make a directory, and every fetch would
/// fail. The objects stay; the operator reads the heads from its own file, not these refs.
fn prune_remote_refs(repo: &gix::Repository, heads: &RemoteHeads) {
    let Ok(platform) = repo.references() else {
        return;
    };
    let Ok(refs) = platform.prefixed(REMOTE_REFS) else {
        return;
    };
    for reference in refs.filter_map(Result::ok) {
        let name = reference.name().as_bstr().to_string();
        let Some(branch) = name.strip_prefix(REMOTE_REFS) else {
            continue;
        };
        if heads.branches.contains_key(branch) {
            continue;
        }
        if let Err(error) = reference.delete() {
            tracing::warn!(reference = %name, %error, "cannot delete the ref of a branch the remote no longer has");
        }
    }
}

/// The fewest pack index slots a store is opened with.
const LEAST_SLOTS: usize = 64;

/// The most slots gix opens a store with (2^15 - 1): past as many packs (fetches that brought
/// commits, in the clone's life) a fetch fails for want of a slot, and a restart, which cannot
/// open the clone then, clones anew.
const MOST_SLOTS: u16 = 32_767;

/// The slots to open the store at `path` with: twice the packs on disk, at least
/// [`LEAST_SLOTS`], at most [`MOST_SLOTS`].
fn store_slots(path: &Path) -> u16 {
    let wanted = packs_on_disk(path).saturating_mul(2).max(LEAST_SLOTS);
    u16::try_from(wanted).map_or(MOST_SLOTS, |slots| slots.min(MOST_SLOTS))
}

/// The pack indexes in the clone at `path` (none when it cannot be read: a new clone).
fn packs_on_disk(path: &Path) -> usize {
    std::fs::read_dir(path.join("objects/pack")).map_or(0, |entries| {
        entries
            .filter_map(Result::ok)
            .filter(|entry| entry.path().extension().is_some_and(|x| x == "idx"))
            .count()
    })
}

pub struct CloneCache {
    url: RepoUrl,
    path: PathBuf,
    /// The clone's object store, opened anew when the packs on disk near its slots (see
    /// [`CloneCache::make_room_for_a_pack`]).
    repo: RwLock<OpenStore>,
    /// How the clone is opened (its configuration overrides).
    options: gix::open::Options,
    credentials: CredentialSettings,
    limits: FetchLimits,
    state: RwLock<FetchState>,
    /// The fetch under way, if any.
    progress: Arc<FetchProgress>,
    /// Counts the changes of `state`, and is odd while a fetch records what it found: what a
    /// lookup read from memory stays valid while this has not moved (see
    /// [`CloneCache::generation`]).
    generation: AtomicU64,
    /// Counts the successful fetches of this process.
    fetched: AtomicU64,
    /// Nanoseconds the last successful fetch took.
    last_took: AtomicU64,
    /// The count of successful fetches when the last fetch ahead was started: one is started
    /// per successful fetch.
    ahead_after: AtomicU64,
    fetches: Family<FetchLabels, Counter>,
    /// When the fetch whose heads the clone's heads file holds started (of this process).
    saved: Mutex<Option<Instant>>,
    _owner: CacheOwner,
}

impl std::fmt::Debug for CloneCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CloneCache")
            .field("url", &self.url.shown)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// The HTTP transport's options with the connection timeout set on its client: the reqwest
/// transport does not read `gitoxide.http.connectTimeout` (its own is 20 s), nor
/// `http.lowSpeed*`; a server silent for 30 s fails a read. None for other transports, which
/// read the overrides.
fn http_transport_options(
    repo: &gix::Repository,
    url: &gix::Url,
) -> Option<Box<dyn std::any::Any>> {
    use gix::protocol::transport::client::blocking_io::http;
    let url = url.to_bstring();
    let mut options = repo.transport_options(url.as_slice(), None).ok()??;
    let http_options = options.downcast_mut::<http::Options>()?;
    let backend = http::reqwest::Options {
        configure_client: Some(Box::new(|client| {
            Ok(client.connect_timeout(Duration::from_millis(CONNECT_TIMEOUT_MS)))
        })),
        configure_request: None,
    };
    http_options.backend = Some(Arc::new(Mutex::new(backend)));
    Some(options)
}

/// The bytes the files under `dir` take (0 when it cannot be read).
fn disk_usage(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|entry| match entry.file_type() {
            Ok(kind) if kind.is_dir() => disk_usage(&entry.path()),
            Ok(_) => entry.metadata().map(|m| m.len()).unwrap_or_default(),
            Err(_) => 0,
        })
        .sum()
}

/// Whether the credentials of `configured` may go to the URL a fetch asks them for: the same
/// host and port, and the same scheme or `http` made `https` (as gix reuses an identity across a
/// redirect).
fn same_host(configured: &gix::Url, asked: Option<&gix::bstr::BString>) -> bool {
    let Some(asked) = asked.and_then(|asked| gix::url::parse(asked).ok()) else {
        return false;
    };
    let host = |url: &gix::Url| url.host().map(str::to_ascii_lowercase);
    let upgraded = configured.scheme == gix::url::Scheme::Http
        && asked.scheme == gix::url::Scheme::Https
        && asked.port.is_none()
        && configured.port.is_none();
    host(configured).is_some()
        && host(configured) == host(&asked)
        && (upgraded
            || (configured.scheme == asked.scheme
                && configured.port_or_default() == asked.port_or_default()))
}

/// A URL as shown in a message: without its user and password.
fn redacted(url: &gix::Url) -> String {
    let mut shown = url.clone();
    shown.set_user(None);
    shown.set_password(None);
    shown.to_bstring().to_string()
}

/// Single-quotes a path for the shell command line gitoxide runs `ssh` with.
fn shell_quote(path: &Path) -> String {
    format!("'{}'", path.display().to_string().replace('\'', r"'\''"))
}

/// A fetch recording what it found, as [`CloneCache::generation`] shows it: odd from the start,
/// even again (and moved on) when this is dropped.
struct Changing<'g>(&'g AtomicU64);

impl<'g> Changing<'g> {
    fn start(generation: &'g AtomicU64) -> Self {
        generation.fetch_add(1, Ordering::AcqRel);
        Changing(generation)
    }
}

impl Drop for Changing<'_> {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::AcqRel);
    }
}

/// How long before the heads are due a fetch ahead starts, when the last fetch took `took`.
fn ahead_lead(took: Duration, interval: Duration) -> Duration {
    took.saturating_mul(2).clamp(interval / 4, interval / 2)
}

/// The heads a lookup requested at `requested` gets without a fetch: those of a fetch that
/// started after it or at most `max_age` ago; or, after a failed fetch that is not to be repeated
/// yet, the last heads marked stale (the error when there are none). `None`: fetch.
fn known_heads(
    state: &FetchState,
    requested: Instant,
    max_age: Duration,
) -> Option<Result<Heads, GitError>> {
    if let Some(started) = state.last_ok
        && (started >= requested || started.elapsed() <= max_age)
        && let Some(heads) = &state.heads
    {
        return Some(Ok(Heads {
            heads: heads.clone(),
            stale: None,
            fresh_until: started.checked_add(max_age),
        }));
    }
    match &state.last_failure {
        Some((started, error))
            if *started >= requested || (state.heads.is_some() && started.elapsed() <= max_age) =>
        {
            Some(stale_heads(
                state,
                error.clone(),
                started.checked_add(max_age),
            ))
        }
        _ => None,
    }
}

/// The heads of the last successful fetch, marked stale by `error`; the error when nothing was
/// ever fetched.
fn stale_heads(
    state: &FetchState,
    error: GitError,
    fresh_until: Option<Instant>,
) -> Result<Heads, GitError> {
    match &state.heads {
        Some(heads) => Ok(Heads {
            heads: heads.clone(),
            stale: Some(Stale {
                error,
                fetched_at: heads.fetched_at,
            }),
            fresh_until,
        }),
        None => Err(error),
    }
}

impl CloneCache {
    /// Opens (or creates) the cache of `url` under `cache_dir`. The repository is opened
    /// isolated: the host's git configuration, credential helpers and environment are not used.
    pub fn open(
        url: RepoUrl,
        cache_dir: &Path,
        credentials: CredentialSettings,
        limits: FetchLimits,
        fetches: Family<FetchLabels, Counter>,
    ) -> Result<Self, GitError> {
        // HTTPS goes through reqwest's rustls, built without a crypto provider of its own so
        // that the process has one (ring, as kube uses): install it unless already there.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let digest = sha2::Sha256::digest(url.shown.as_bytes());
        let name: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
        let path = cache_dir.join(format!("{name}.git"));
        let cache_error = |path: &Path, cause: String| GitError::Cache {
            path: path.display().to_string(),
            cause,
        };
        std::fs::create_dir_all(cache_dir).map_err(|e| cache_error(cache_dir, e.to_string()))?;
        let owner = CacheOwner::take(&path)?;
        let mut overrides = vec![
            format!("gitoxide.http.connectTimeout={CONNECT_TIMEOUT_MS}"),
            format!("http.lowSpeedLimit={LOW_SPEED_BYTES}"),
            format!("http.lowSpeedTime={LOW_SPEED_SECONDS}"),
        ];
        if url.is_ssh() {
            overrides.push(format!(
                "core.sshCommand={}",
                ssh_command(&path, credentials.dir.is_some())
            ));
        }
        let options = gix::open::Options::isolated().config_overrides(overrides.clone());
        let options = || {
            options
                .clone()
                .object_store_slots(Slots::Given(store_slots(&path)))
        };
        // A clone with as many packs as gitoxide has slots for can take no more: cloned anew.
        if packs_on_disk(&path) + 2 >= usize::from(MOST_SLOTS) {
            tracing::warn!(clone = %path.display(), "the clone holds more packs than gitoxide can open: cloned anew");
            std::fs::remove_dir_all(&path).map_err(|e| cache_error(&path, e.to_string()))?;
        }
        let repo = match options().open(&path) {
            Ok(repo) => repo,
            Err(_) => {
                // Missing, or not a usable repository (an interrupted first fetch): start over.
                if path.exists() {
                    std::fs::remove_dir_all(&path)
                        .map_err(|e| cache_error(&path, e.to_string()))?;
                }
                gix::ThreadSafeRepository::init_opts(
                    &path,
                    gix::create::Kind::Bare,
                    gix::create::Options::default(),
                    options(),
                )
                .map_err(|e| cache_error(&path, cause_text(&e, &[])))?
            }
        };
        let removed = owner::remove_leftovers(&path)?;
        if !removed.is_empty() {
            let shown: Vec<String> = removed
                .iter()
                .take(5)
                .map(|p| p.strip_prefix(&path).unwrap_or(p).display().to_string())
                .collect();
            tracing::warn!(clone = %path.display(), count = removed.len(), files = %shown.join(", "), "removed the lock and temporary files of a fetch that was cut short (the operator was killed during it)");
        }
        let heads = RemoteHeads::load(&path).map(Arc::new);
        let slots = store_slots(&path);
        Ok(CloneCache {
            url,
            repo: RwLock::new(OpenStore { repo, slots }),
            options: gix::open::Options::isolated().config_overrides(overrides),
            path,
            credentials,
            limits,
            state: RwLock::new(FetchState {
                heads,
                ..FetchState::default()
            }),
            progress: Arc::default(),
            generation: AtomicU64::new(0),
            fetched: AtomicU64::new(0),
            last_took: AtomicU64::new(0),
            ahead_after: AtomicU64::new(0),
            fetches,
            saved: Mutex::default(),
            _owner: owner,
        })
    }

    pub fn shown_url(&self) -> &str {
        &self.url.shown
    }

    pub fn repo(&self) -> gix::Repository {
        let store = self.repo.read().unwrap_or_else(|e| e.into_inner());
        store.repo.to_thread_local()
    }

    /// Opens the object store anew, with room for twice the packs on disk, when the next fetch
    /// might find no slot for its pack. Each fetch that brings objects writes a pack, and gix
    /// (which has no repack) gives a store a fixed number of slots for pack indexes when it
    /// opens it: past them, fetches failed ("too few index slots") until a restart. Lookups
    /// under way keep the store they started with.
    fn make_room_for_a_pack(&self) -> Result<(), GitError> {
        let packs = packs_on_disk(&self.path);
        let slots = self.repo.read().unwrap_or_else(|e| e.into_inner()).slots;
        // A fetch writes one pack; two spare slots leave room for one left to itself.
        if packs + 2 < usize::from(slots) || slots == MOST_SLOTS {
            return Ok(());
        }
        let slots = store_slots(&self.path);
        let repo = self
            .options
            .clone()
            .object_store_slots(Slots::Given(slots))
            .open(&self.path)
            .map_err(|e| GitError::Cache {
                path: self.path.display().to_string(),
                cause: cause_text(&e, &[]),
            })?;
        tracing::info!(clone = %self.path.display(), packs, slots, "the clone's object store opened anew with room for more packs");
        *self.repo.write().unwrap_or_else(|e| e.into_inner()) = OpenStore { repo, slots };
        Ok(())
    }

    /// The branch heads for a lookup requested at `requested`: of a fetch that started after
    /// `requested` or at most `max_age` before now, fetching if there is none. A fetch that
    /// failed after `requested` is not repeated, nor is one that failed within `max_age` while
    /// heads of an earlier fetch are known: then those heads are returned, marked stale.
    ///
    /// The fetch runs on a thread of its own, one at a time, and lookups wait for it until
    /// `limits.wait` has passed from the earlier of their request and the fetch's start; then
    /// they read the heads of the last successful fetch, marked stale as after a failed fetch,
    /// while it goes on (a git host that trickles a transfer does not hold every event). The
    /// error only when there are no heads to read.
    pub fn heads(
        self: &Arc<Self>,
        requested: Instant,
        max_age: Duration,
    ) -> Result<Heads, GitError> {
        // Read shared first: lookups that need no fetch do not queue behind one another.
        if let Some(known) = known_heads(&self.read_state(), requested, max_age) {
            return known;
        }
        let timeout = self.limits.timeout;
        let mut progress = self.progress.lock();
        loop {
            // A lookup that waited for another's fetch uses its heads.
            if let Some(known) = known_heads(&self.read_state(), requested, max_age) {
                return known;
            }
            // The count of ended fetches is read with the claim, under the same lock: a fetch
            // that ends before this lookup waits has moved it.
            let ended = progress.ended;
            let since = match progress.under_way(timeout) {
                Some(since) => since,
                None => {
                    if let Some((_, stuck)) = progress.under_way {
                        tracing::warn!(url = %self.url.shown, started_s_ago = stuck.elapsed().as_secs(), "a fetch of the config repository is still under way past --git-fetch-timeout-seconds: it is left to itself (what it finds is not used if a newer fetch ends first), and a new one starts");
                    }
                    // Nothing is read ahead: lookups wait for this fetch, and each reads what
                    // it needs.
                    let now = Instant::now();
                    let claim = self.progress.claim(&mut progress, now);
                    drop(progress);
                    if !self.run_claimed(claim, "git-fetch", |_| {}) {
                        // No thread for it: fetch on this one, unless another claimed one.
                        let mut progress = self.progress.lock();
                        if progress.under_way(timeout).is_none() {
                            let claim = self.progress.claim(&mut progress, Instant::now());
                            drop(progress);
                            let _ = self.fetch_now(|_| {});
                            drop(claim);
                        }
                    }
                    progress = self.progress.lock();
                    now
                }
            };
            let waited_enough = since
                .min(requested)
                .checked_add(self.limits.wait)
                .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            let now = Instant::now();
            let left = waited_enough.saturating_duration_since(now);
            if left.is_zero() {
                let error = GitError::Fetch {
                    url: self.url.shown.clone(),
                    cause: format!(
                        "the fetch under way started {} s ago and has not ended; lookups wait \
                         for a fetch at most {} s (--git-fetch-wait-seconds)",
                        since.elapsed().as_secs(),
                        self.limits.wait.as_secs()
                    ),
                };
                return stale_heads(&self.read_state(), error, None);
            }
            // Awake when the fetch may be left to itself too, to start the next one.
            let sleep = match since
                .checked_add(timeout)
                .and_then(|given_up| given_up.checked_duration_since(now))
            {
                Some(until) if progress.left_behind < MOST_LEFT_BEHIND => {
                    left.min(until + Duration::from_millis(1))
                }
                _ => left,
            };
            progress = self
                .progress
                .ended
                .wait_timeout_while(progress, sleep, |p| p.ended == ended)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Runs the fetch `claim` was made for on a thread named `thread`, the claim let go when it
    /// ends; false (and the claim let go) when no thread can be started.
    fn run_claimed(
        self: &Arc<Self>,
        claim: Claim,
        thread: &str,
        read_ahead: impl FnOnce(&RemoteHeads) + Send + 'static,
    ) -> bool {
        let cache = self.clone();
        let started = std::thread::Builder::new()
            .name(thread.to_string())
            .spawn(move || {
                let claim = claim;
                {
                    // Dropped before the claim: a lookup woken by it may reopen the cache.
                    let cache = cache;
                    // The outcome is recorded, and a failure told to the lookups that follow.
                    let _ = cache.fetch_now(read_ahead);
                }
                drop(claim);
            });
        match started {
            Ok(_) => true,
            Err(error) => {
                tracing::warn!(%error, "cannot start a thread to fetch the config repository");
                false
            }
        }
    }

    fn read_state(&self) -> std::sync::RwLockReadGuard<'_, FetchState> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    /// How long before the heads are due a fetch ahead starts: twice what the last fetch took,
    /// at least a quarter of `interval` and at most half of it.
    pub fn fetch_ahead_lead(&self, interval: Duration) -> Duration {
        ahead_lead(
            Duration::from_nanos(self.last_took.load(Ordering::Relaxed)),
            interval,
        )
    }

    /// The heads of the last successful fetch, as lookups read them now.
    pub fn recorded_heads(&self) -> Option<Arc<RemoteHeads>> {
        self.read_state().heads.clone()
    }

    /// Starts a fetch on a thread of its own, unless one was started since the last successful
    /// fetch or one is under way: the lookup that calls this reads the heads it has, which are
    /// not due yet, and the fetch is there before they are (see the module's documentation).
    /// What `read_ahead` makes is given the heads the fetch found before they are recorded, to
    /// read what lookups will need at them.
    pub fn fetch_ahead<R>(self: &Arc<Self>, read_ahead: impl FnOnce() -> R)
    where
        R: FnOnce(&RemoteHeads) + Send + 'static,
    {
        let fetched = self.fetched.load(Ordering::Acquire);
        // Read first: every lookup within the lead asks.
        if self.ahead_after.load(Ordering::Relaxed) == fetched {
            return;
        }
        // Not waited for: this runs on an async worker. Another lookup within the lead asks.
        let mut progress = match self.progress.progress.try_lock() {
            Ok(progress) => progress,
            Err(std::sync::TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return,
        };
        if self.ahead_after.swap(fetched, Ordering::AcqRel) == fetched
            // A lookup's fetch is under way, or one ended since.
            || progress.under_way(self.limits.timeout).is_some()
            || self.fetched.load(Ordering::Acquire) != fetched
        {
            return;
        }
        let claim = self.progress.claim(&mut progress, Instant::now());
        drop(progress);
        // Without a thread, the heads are fetched when they are due.
        self.run_claimed(claim, "git-fetch-ahead", read_ahead());
    }

    /// Where the heads are: even and the same as when a lookup read them from memory, they have
    /// not changed since and no fetch is recording what it found; odd while one is. Read without
    /// taking the heads' lock (a lock, shared or not, is a write to memory every worker thread
    /// shares).
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// What [`CloneCache::heads`] answers when that needs no fetch; `None` when it would fetch,
    /// or a fetch is recording what it found (waiting for its lock would stall an async worker).
    pub fn heads_in_memory(
        &self,
        requested: Instant,
        max_age: Duration,
    ) -> Option<Result<Heads, GitError>> {
        let state = match self.state.try_read() {
            Ok(state) => state,
            Err(std::sync::TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return None,
        };
        known_heads(&state, requested, max_age)
    }

    /// Runs `during` while the heads are held as a lookup reading them holds them (`recording`
    /// false) or as a fetch recording what it found does (true).
    #[cfg(test)]
    pub(super) fn while_heads_held<T>(&self, recording: bool, during: impl FnOnce() -> T) -> T {
        if recording {
            let _fetch = self.state.write().unwrap_or_else(|e| e.into_inner());
            let _changing = Changing::start(&self.generation);
            during()
        } else {
            let _lookup = self.state.read().unwrap_or_else(|e| e.into_inner());
            during()
        }
    }

    /// Claims a fetch as one that hangs would hold it, until what this returns is dropped.
    #[cfg(test)]
    pub(super) fn hold_claim(&self) -> impl Sized {
        let mut progress = self.progress.lock();
        self.progress.claim(&mut progress, Instant::now())
    }

    /// Runs `during` while a fetch is under way (not yet recording what it found).
    #[cfg(test)]
    pub(super) fn while_fetching<T>(&self, during: impl FnOnce() -> T) -> T {
        let mut progress = self.progress.lock();
        while progress.under_way.is_some() {
            progress = self
                .progress
                .ended
                .wait(progress)
                .unwrap_or_else(|e| e.into_inner());
        }
        let claim = self.progress.claim(&mut progress, Instant::now());
        drop(progress);
        let result = during();
        drop(claim);
        result
    }

    /// Fetches, and records the outcome in `state` (and the heads in the clone); the caller
    /// claimed the fetch. The heads' lock is taken only to record the outcome: lookups whose
    /// heads are not due read them meanwhile, and `read_ahead` is given the heads found before
    /// they are recorded (what it takes counts in what the fetch took).
    fn fetch_now(
        &self,
        read_ahead: impl FnOnce(&RemoteHeads),
    ) -> Result<Arc<RemoteHeads>, GitError> {
        let started = Instant::now();
        let fetched = self.fetch();
        // A fetch left to itself (see `Progress::under_way`) that ends after a newer one
        // recorded its outcome changes nothing; but a success is superseded by a newer success
        // only: a newer fetch that failed (on the ref locks this one held, say) leaves its
        // heads the latest found.
        let newer = |state: &FetchState| {
            state.last_ok.is_some_and(|ok| ok > started)
                || (fetched.is_err()
                    && state
                        .last_failure
                        .as_ref()
                        .is_some_and(|(failed, _)| *failed > started))
        };
        if newer(&self.read_state()) {
            tracing::info!(url = %self.url.shown, elapsed_s = started.elapsed().as_secs(), ok = fetched.is_ok(), "a fetch left to itself ended after a newer one: its outcome is not used");
            return fetched.map(Arc::new);
        }
        if let Ok(heads) = &fetched {
            // One save at a time, and none over the heads of a fetch that started later (one
            // left to itself ending after the next one). Not under the heads' lock: lookups
            // read from memory meanwhile.
            let mut saved = self.saved.lock().unwrap_or_else(|e| e.into_inner());
            if saved.is_none_or(|saved| saved < started) {
                match heads.save(&self.path) {
                    Ok(()) => *saved = Some(started),
                    // Only a restart during an outage needs the file; the fetch is good
                    // without it.
                    Err(error) => {
                        tracing::warn!(%error, "cannot save the fetched branch heads in the clone");
                    }
                }
            }
        }
        if let Ok(heads) = &fetched {
            read_ahead(heads);
        }
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
        if newer(&state) {
            return fetched.map(Arc::new);
        }
        let _changing = Changing::start(&self.generation);
        match fetched {
            Ok(heads) => {
                self.fetches.get_or_create(&vec![("outcome", "ok")]).inc();
                tracing::info!(url = %self.url.shown, branches = heads.branches.len(), elapsed_ms = started.elapsed().as_millis() as u64, "fetched the config repository");
                let heads = Arc::new(heads);
                state.heads = Some(heads.clone());
                state.last_ok = Some(started);
                // A newer fetch's failure still stands (see `newer`).
                if state
                    .last_failure
                    .as_ref()
                    .is_none_or(|(failed, _)| *failed < started)
                {
                    state.last_failure = None;
                }
                let took = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
                self.last_took.store(took, Ordering::Relaxed);
                self.fetched.fetch_add(1, Ordering::AcqRel);
                Ok(heads)
            }
            Err(error) => {
                self.fetches
                    .get_or_create(&vec![("outcome", "failed")])
                    .inc();
                tracing::warn!(url = %self.url.shown, %error, "cannot fetch the config repository");
                state.last_failure = Some((started, error.clone()));
                Err(error)
            }
        }
    }

    fn fetch(&self) -> Result<RemoteHeads, GitError> {
        let started = Instant::now();
        let account = match self.url.password.clone() {
            Some(password) => Some(Account {
                username: self
                    .url
                    .username
                    .clone()
                    .unwrap_or_else(|| TOKEN_USERNAME.to_string()),
                password,
            }),
            None => self.credentials.account()?,
        };
        if self.url.is_ssh() {
            self.stage_ssh_files()?;
        }
        let secrets: Vec<String> = account
            .iter()
            .map(|a| a.password.clone())
            .chain(self.url.username.clone())
            .collect();
        let failed = |error: &gix::Error| GitError::Fetch {
            url: self.url.shown.clone(),
            cause: cause_text(error, &secrets),
        };
        self.make_room_for_a_pack()?;
        let repo = self.repo();
        let remote = repo
            .remote_at(self.url.url.clone())
            .and_then(|remote| {
                remote
                    .with_fetch_tags(gix::remote::fetch::Tags::None)
                    .with_refspecs(
                        ["+refs/heads/*:refs/remotes/origin/*"],
                        gix::remote::Direction::Fetch,
                    )
            })
            .map_err(|e| failed(&e))?;
        let connection = remote
            .connect(gix::remote::Direction::Fetch)
            .map_err(|e| failed(&e))?;
        let connection = match http_transport_options(&repo, &self.url.url) {
            Some(options) => connection.with_transport_options(options),
            None => connection,
        };
        let url = self.url.shown.clone();
        let configured = self.url.url.clone();
        let connection = connection.with_credentials(move |action| match action {
            // The host may have redirected the fetch: the account is the configured host's,
            // and is not handed to another.
            gix::credentials::helper::Action::Get(context)
                if !same_host(&configured, context.url.as_ref()) =>
            {
                Err(gix::Error::from_error(gix::error::Message::new(format!(
                    "{url} redirected to {}, which asks for credentials: the credentials of {url} \
                     are not sent to another host",
                    context
                        .url
                        .as_ref()
                        .and_then(|asked| gix::url::parse(asked).ok())
                        .map_or_else(|| "another host".into(), |asked| redacted(&asked))
                ))))
            }
            gix::credentials::helper::Action::Get(context) => match &account {
                Some(account) => Ok(Some(gix::credentials::protocol::Outcome {
                    identity: gix::sec::identity::Account {
                        username: account.username.clone(),
                        password: account.password.clone(),
                        oauth_refresh_token: None,
                    },
                    next: context.into(),
                })),
                None => Err(gix::Error::from_error(gix::error::Message::new(format!(
                    "{url} asks for credentials and none are configured (--git-credentials-dir or --git-username/--git-password)"
                )))),
            },
            gix::credentials::helper::Action::Store(_)
            | gix::credentials::helper::Action::Erase(_) => Ok(None),
        });
        let head_spec = gix::refspec::parse("HEAD".into(), gix::refspec::parse::Operation::Fetch)
            .map_err(|e| GitError::Fetch {
                url: self.url.shown.clone(),
                cause: e.to_string(),
            })?
            .to_owned();
        let prepared = connection
            .prepare_fetch(
                gix::progress::Discard,
                gix::remote::ref_map::Options {
                    extra_refspecs: vec![head_spec],
                    ..Default::default()
                },
            )
            .map_err(|e| failed(&e))?;
        let heads =
            RemoteHeads::advertised(&prepared.ref_map().remote_refs, jiff::Timestamp::now());
        let objects = self.path.join("objects");
        let max_bytes = self.limits.max_bytes;
        let too_large = |size: u64| GitError::Fetch {
            url: self.url.shown.clone(),
            cause: format!(
                "the repository is too large: its clone reached {size} bytes, over the limit of \
                 {max_bytes} bytes (--git-max-repository-bytes); the fetch was stopped"
            ),
        };
        let too_slow = || GitError::Fetch {
            url: self.url.shown.clone(),
            cause: format!(
                "the fetch did not end within {} s (--git-fetch-timeout-seconds) and was \
                 stopped; raise the limit if a clone this large needs longer over this link",
                self.limits.timeout.as_secs()
            ),
        };
        let size = disk_usage(&objects);
        if size > max_bytes {
            return Err(too_large(size));
        }
        // Listing the branches cannot be interrupted: one that took the whole time transfers
        // nothing (a fetch left to itself should not update the clone beside the next one).
        if started.elapsed() > self.limits.timeout {
            return Err(too_slow());
        }
        // Not in such a fetch left to itself: a newer one beside it may have written refs of
        // branches this one's older listing lacks.
        prune_remote_refs(&repo, &heads);
        // The pack arrives into the objects directory: watch it grow, and interrupt the
        // transfer once the clone passes the limit (a huge repository or history must not fill
        // the disk), or once the fetch has taken its time. The transfer stops at its next
        // read, which waits for a whole packet (up to 64 KiB) of a host that trickles it; the
        // next fetch does not wait for that. What arrives between two looks is checked once
        // the transfer ends.
        let interrupt = AtomicBool::new(false);
        let done = AtomicBool::new(false);
        let (received, stopped) = std::thread::scope(|scope| {
            let watcher = scope.spawn(|| {
                while !done.load(Ordering::Relaxed) {
                    let size = disk_usage(&objects);
                    let stopped = if size > max_bytes {
                        too_large(size)
                    } else if started.elapsed() > self.limits.timeout {
                        too_slow()
                    } else {
                        std::thread::sleep(Duration::from_millis(20));
                        continue;
                    };
                    interrupt.store(true, Ordering::Relaxed);
                    return Some(stopped);
                }
                None
            });
            let received = prepared.receive(gix::progress::Discard, &interrupt);
            done.store(true, Ordering::Relaxed);
            (received, watcher.join().ok().flatten())
        });
        // A transfer that ended as it was interrupted stands (its refs are written); a pack past
        // the limit is found below.
        match (received, stopped) {
            (Ok(_), _) => {}
            (Err(_), Some(stopped)) => return Err(stopped),
            (Err(error), None) => return Err(failed(&error)),
        }
        let size = disk_usage(&objects);
        if size > max_bytes {
            return Err(too_large(size));
        }
        Ok(heads)
    }

    /// Copies the SSH key and known hosts where the `ssh` command line expects them, with
    /// the modes `ssh` insists on (a mounted Secret's files are often group-readable).
    fn stage_ssh_files(&self) -> Result<(), GitError> {
        let dir = self.path.join("ssh");
        let write = |name: &str, content: Option<String>, mode: u32| -> Result<(), GitError> {
            let target = dir.join(name);
            let failed = |e: std::io::Error| GitError::Cache {
                path: target.display().to_string(),
                cause: e.to_string(),
            };
            std::fs::create_dir_all(&dir).map_err(failed)?;
            let _ = std::fs::remove_file(&target);
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(mode)
                .open(&target)
                .map_err(failed)?;
            let mut text = content.unwrap_or_default();
            if !text.is_empty() && !text.ends_with('\n') {
                text.push('\n');
            }
            file.write_all(text.as_bytes()).map_err(failed)
        };
        write("known_hosts", self.credentials.read("known_hosts")?, 0o644)?;
        if self.credentials.dir.is_some() {
            write("id", self.credentials.read("ssh-privatekey")?, 0o600)?;
        }
        Ok(())
    }
}

use std::os::unix::fs::OpenOptionsExt as _;

/// The `ssh` command line: the key and known hosts copied into the cache, the host's own
/// known hosts ignored, an unknown host key refused, never a prompt. The connection (and the
/// server's greeting) may take as long as an HTTP one; a connection the server stops answering
/// is given up after two missed keep-alives, so a dead host cannot hold the fetch for good.
fn ssh_command(cache: &Path, with_key: bool) -> String {
    let dir = cache.join("ssh");
    let mut command = String::from("ssh -o BatchMode=yes -o StrictHostKeyChecking=yes");
    command.push_str(&format!(
        " -o ConnectTimeout={} -o ServerAliveInterval={SSH_ALIVE_INTERVAL_SECONDS} \
         -o ServerAliveCountMax=2",
        CONNECT_TIMEOUT_MS / 1000
    ));
    command.push_str(&format!(
        " -o UserKnownHostsFile={} -o GlobalKnownHostsFile=/dev/null",
        shell_quote(&dir.join("known_hosts"))
    ));
    if with_key {
        command.push_str(&format!(
            " -o IdentitiesOnly=yes -i {}",
            shell_quote(&dir.join("id"))
        ));
    }
    command
}

/// An error and its causes on one line, with any secret replaced.
pub fn cause_text(error: &(dyn std::error::Error + 'static), secrets: &[String]) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(error) = current {
        let text = error.to_string();
        if !text.is_empty() && !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        current = error.source();
    }
    let mut text = parts.join(": ");
    for secret in secrets.iter().filter(|s| s.len() >= 3) {
        text = text.replace(secret.as_str(), "***");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_go_to_the_configured_host_only() {
        let configured = |url: &str| gix::url::parse(url.as_bytes()).unwrap();
        let asks = |configured: &gix::Url, url: &str| {
            same_host(configured, Some(&gix::bstr::BString::from(url)))
        };
        let https = configured("https://git.example.com/org/repo.git");
        assert!(asks(&https, "https://git.example.com/org/repo.git"));
        assert!(asks(&https, "https://GIT.example.com:443/other/path"));
        assert!(!asks(&https, "https://evil.example.net/org/repo.git"));
        assert!(
            !asks(&https, "http://git.example.com/org/repo.git"),
            "no downgrade"
        );
        assert!(!asks(&https, "https://git.example.com:8443/org/repo.git"));
        assert!(!same_host(&https, None));
        let http = configured("http://git.example.com/repo");
        assert!(asks(&http, "https://git.example.com/repo"), "an upgrade");
        let port = configured("http://127.0.0.1:8080/repo");
        assert!(asks(&port, "http://127.0.0.1:8080/moved"));
        assert!(!asks(&port, "http://127.0.0.1:9090/repo"));
    }

    #[test]
    fn a_fetch_ahead_starts_twice_as_long_before_due_as_a_fetch_takes_within_bounds() {
        let interval = Duration::from_secs(10);
        let lead = |took_ms: u64| ahead_lead(Duration::from_millis(took_ms), interval);
        assert_eq!(lead(0), Duration::from_millis(2500));
        assert_eq!(lead(300), Duration::from_millis(2500));
        assert_eq!(lead(1500), Duration::from_secs(3));
        assert_eq!(lead(4000), Duration::from_secs(5));
        assert_eq!(ahead_lead(Duration::MAX, interval), Duration::from_secs(5));
        assert_eq!(
            ahead_lead(Duration::from_secs(1), Duration::ZERO),
            Duration::ZERO
        );
    }

    #[test]
    fn urls_are_shown_without_credentials() {
        assert_eq!(
            redact("https://alice:s3cret@git.example.com/team/repo.git"),
            "https://git.example.com/team/repo.git"
        );
        assert_eq!(
            redact("https://ghp_token@git.example.com/a@b"),
            "https://git.example.com/a@b"
        );
        assert_eq!(redact("file:///srv/repo"), "file:///srv/repo");
        // A password with an unescaped `/`, `?` or `#` is not shown either.
        for url in [
            "https://bot:ab/cd@git.example.com/repo.git",
            "https://bot:ab?cd@git.example.com/repo.git",
            "https://bot:ab#cd@git.example.com/repo.git",
        ] {
            assert_eq!(redact(url), "https://git.example.com/repo.git", "{url}");
        }
        assert_eq!(
            redact("https://git.example.com:8443/a@b"),
            "https://git.example.com:8443/a@b"
        );
        // gitoxide's reason for refusing a URL quotes it: not its password.
        for url in [
            "https://bot:s3cret@git.example.com:99999/repo",
            "https://bot:s3/cret@git.example.com:99999/repo",
        ] {
            match RepoUrl::parse(url) {
                Err(error) => assert!(!error.to_string().contains("cret"), "{error}"),
                Ok(parsed) => assert!(!parsed.shown.contains("cret"), "{}", parsed.shown),
            }
        }
        assert_eq!(
            mask_credentials("https://alice:s3cret@git.example.com/team/repo.git"),
            "https://****@git.example.com/team/repo.git"
        );
        assert_eq!(
            mask_credentials("https://ghp_token@git.example.com/a@b"),
            "https://****@git.example.com/a@b"
        );
        assert_eq!(
            mask_credentials("https://git.example.com/a@b"),
            "https://git.example.com/a@b"
        );
        assert_eq!(
            mask_credentials("git@git.example.com:team/repo.git"),
            "****@git.example.com:team/repo.git"
        );
        assert_eq!(mask_credentials("file:///srv/a@b"), "file:///srv/a@b");
        let url = RepoUrl::parse("https://alice:s3cret@git.example.com/team/repo.git").unwrap();
        assert_eq!(url.shown, "https://git.example.com/team/repo.git");
        assert_eq!(url.username.as_deref(), Some("alice"));
        assert_eq!(url.password.as_deref(), Some("s3cret"));
        let ssh = RepoUrl::parse("ssh://git@git.example.com:2222/team/repo.git").unwrap();
        assert_eq!(ssh.shown, "ssh://git@git.example.com:2222/team/repo.git");
        assert!(ssh.is_ssh());
        let error = RepoUrl::parse("ftp://bob:pw@example.com/repo").unwrap_err();
        assert!(!error.to_string().contains("pw@"), "{error}");
    }

    #[test]
    fn secrets_never_reach_a_message() {
        #[derive(Debug, thiserror::Error)]
        #[error("outer: {inner}")]
        struct Outer {
            inner: String,
            #[source]
            source: std::io::Error,
        }
        let error = Outer {
            inner: "sent token s3cret".into(),
            source: std::io::Error::other("refused"),
        };
        assert_eq!(
            cause_text(&error, &["s3cret".into()]),
            "outer: sent token ***: refused"
        );
    }

    #[test]
    fn the_ssh_command_pins_known_hosts_and_the_key() {
        let command = ssh_command(Path::new("/cache/it's.git"), true);
        assert!(command.contains("StrictHostKeyChecking=yes"), "{command}");
        assert!(
            command.contains(
                " -o ConnectTimeout=10 -o ServerAliveInterval=15 -o ServerAliveCountMax=2 "
            ),
            "{command}"
        );
        assert!(
            command.contains(r"-i '/cache/it'\''s.git/ssh/id'"),
            "{command}"
        );
        assert!(!ssh_command(Path::new("/c"), false).contains(" -i "));
    }

    #[test]
    fn credentials_come_from_the_secret_directory() {
        let dir = std::env::temp_dir().join(format!("git-creds-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("token"), "tok\n").unwrap();
        let settings = CredentialSettings {
            dir: Some(dir.clone()),
            ..Default::default()
        };
        let account = settings.account().unwrap().unwrap();
        assert_eq!(
            (account.username.as_str(), account.password.as_str()),
            (TOKEN_USERNAME, "tok")
        );
        std::fs::write(dir.join("username"), "alice").unwrap();
        std::fs::write(dir.join("password"), "pw").unwrap();
        let account = settings.account().unwrap().unwrap();
        assert_eq!(
            (account.username.as_str(), account.password.as_str()),
            ("alice", "pw")
        );
        assert!(CredentialSettings::default().account().unwrap().is_none());
    }
}
