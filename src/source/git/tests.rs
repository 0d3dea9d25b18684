//! The git source against repositories made with the `git` CLI, reached through `file://`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;

use super::*;
use crate::config::{self, ConfigError};
use crate::files::FilesError;

/// A repository with a work tree, made and changed with the `git` CLI.
struct TestRepo {
    dir: PathBuf,
}

impl TestRepo {
    fn new(name: &str) -> TestRepo {
        let dir = std::env::temp_dir().join(format!("je-git-unit-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let repo = TestRepo { dir };
        repo.git(&["init", "-q", "-b", "main"]);
        repo
    }

    fn git(&self, args: &[&str]) -> String {
        let output = Command::new("git")
            .args(args)
            .current_dir(&self.dir)
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_AUTHOR_NAME", "t")
            .env("GIT_AUTHOR_EMAIL", "t@example.com")
            .env("GIT_COMMITTER_NAME", "t")
            .env("GIT_COMMITTER_EMAIL", "t@example.com")
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).trim().to_string()
    }

    fn write(&self, path: &str, content: &str) -> &Self {
        let file = self.dir.join(path);
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(&file, content).unwrap();
        self
    }

    fn executable(&self, path: &str, content: &str) -> &Self {
        use std::os::unix::fs::PermissionsExt;
        self.write(path, content);
        std::fs::set_permissions(self.dir.join(path), std::fs::Permissions::from_mode(0o755))
            .unwrap();
        self
    }

    fn link(&self, path: &str, target: &str) -> &Self {
        let file = self.dir.join(path);
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(target, file).unwrap();
        self
    }

    /// Puts an entry of `mode` naming the object `id` at `path` in the index alone (a link
    /// whose target no file system holds, a submodule).
    fn index_entry(&self, mode: &str, id: &str, path: &str) -> &Self {
        self.git(&[
            "update-index",
            "--add",
            "--cacheinfo",
            &format!("{mode},{id},{path}"),
        ]);
        self
    }

    /// Commits the index as it is.
    fn commit_index(&self, message: &str) -> String {
        self.git(&["commit", "-q", "-m", message]);
        self.git(&["rev-parse", "HEAD"])
    }

    fn commit(&self, message: &str) -> String {
        self.git(&["add", "-A"]);
        self.git(&["commit", "-q", "--allow-empty", "-m", message]);
        self.git(&["rev-parse", "HEAD"])
    }

    fn url(&self) -> String {
        format!("file://{}", self.dir.display())
    }
}

fn source_for(repo: &TestRepo, lookups: &[&str]) -> (GitSource, Family<FetchLabels, Counter>) {
    let cache_dir = repo.dir.with_extension("cache");
    let _ = std::fs::remove_dir_all(&cache_dir);
    let source = open_source(&repo.url(), &cache_dir, lookups, Duration::from_secs(3600)).unwrap();
    let fetches = source.fetches.clone();
    (source.source, fetches)
}

/// The source with its metrics, on a cache that may hold a clone already (as after a restart).
#[derive(Debug)]
struct Opened {
    source: GitSource,
    fetches: Family<FetchLabels, Counter>,
    stale_lookups: Counter,
    config_reads: Counter,
    config_compiles: Counter,
}

impl std::ops::Deref for Opened {
    type Target = GitSource;
    fn deref(&self) -> &GitSource {
        &self.source
    }
}

fn open_source(
    url: &str,
    cache_dir: &std::path::Path,
    lookups: &[&str],
    fetch_interval: Duration,
) -> Result<Opened, SourceError> {
    open_bounded(url, cache_dir, lookups, fetch_interval, 1 << 30)
}

fn open_bounded(
    url: &str,
    cache_dir: &std::path::Path,
    lookups: &[&str],
    fetch_interval: Duration,
    max_repository_bytes: u64,
) -> Result<Opened, SourceError> {
    let limits = FetchLimits {
        max_bytes: max_repository_bytes,
        ..FetchLimits::default()
    };
    open_limited(url, cache_dir, lookups, fetch_interval, limits)
}

fn open_limited(
    url: &str,
    cache_dir: &std::path::Path,
    lookups: &[&str],
    fetch_interval: Duration,
    limits: FetchLimits,
) -> Result<Opened, SourceError> {
    let metrics = GitMetrics::default();
    let source = GitSource::open(GitSettings {
        url: url.to_string(),
        lookups: lookups.iter().map(|l| l.to_string()).collect(),
        files_from: None,
        pin_commits: true,
        credentials: CredentialSettings::default(),
        fetch_interval,
        cache_dir: cache_dir.to_path_buf(),
        limits,
        metrics: metrics.clone(),
    })?;
    let GitMetrics {
        fetches,
        stale_lookups,
        config_reads,
        config_compiles,
    } = metrics;
    Ok(Opened {
        source,
        fetches,
        stale_lookups,
        config_reads,
        config_compiles,
    })
}

fn fetch_count(fetches: &Family<FetchLabels, Counter>) -> u64 {
    fetches.get_or_create(&vec![("outcome", "ok")]).get()
}

fn failed_fetches(fetches: &Family<FetchLabels, Counter>) -> u64 {
    fetches.get_or_create(&vec![("outcome", "failed")]).get()
}

/// The config a lookup finds (asserting one is found).
fn found(source: &GitSource, stage: &str, name: &str, pin: Option<&str>) -> Arc<LoadedConfig> {
    source
        .load(&service(stage, name), pin, Reads::Any)
        .unwrap()
        .config
        .unwrap_or_else(|| panic!("no config for {stage}/{name}"))
}

fn service(stage: &str, name: &str) -> ServiceRef {
    ServiceRef {
        project: "sockshop".into(),
        stage: stage.into(),
        service: name.into(),
    }
}

fn config_with_image(image: &str, files: &str) -> String {
    format!(
        "apiVersion: v2\nactions:\n  - name: a\n    events: [{{name: x}}]\n    tasks:\n      - {{name: t, image: {image}, files: {files}}}\n"
    )
}

fn image_of(loaded: &LoadedConfig) -> &str {
    &loaded.compiled.config.actions[0].tasks[0].image
}

#[test]
fn lookups_fall_back_from_service_to_stage_to_project() {
    let repo = TestRepo::new("layout");
    repo.write("job/config.yaml", &config_with_image("project", "[]"));
    repo.commit("project level");
    repo.git(&["checkout", "-q", "-b", "dev"]);
    repo.write("job/config.yaml", &config_with_image("stage", "[]"))
        .write("carts/job/config.yaml", &config_with_image("service", "[]"));
    let dev = repo.commit("dev");
    repo.git(&["checkout", "-q", "main"]);
    let main = repo.git(&["rev-parse", "HEAD"]);

    let (source, fetches) = source_for(&repo, &[]);
    let carts = found(&source, "dev", "carts", None);
    assert_eq!(image_of(&carts), "service");
    assert_eq!(carts.dir, "carts");
    assert_eq!(carts.revision.as_deref(), Some(dev.as_str()));
    let orders = found(&source, "dev", "orders", None);
    assert_eq!((image_of(&orders), orders.dir.as_str()), ("stage", ""));
    let prod = found(&source, "production", "carts", None);
    assert_eq!(image_of(&prod), "project");
    assert_eq!(prod.revision.as_deref(), Some(main.as_str()));
    assert_eq!(
        fetch_count(&fetches),
        1,
        "one fetch serves every lookup within the interval"
    );

    let (single, _) = source_for(&repo, &["main:{stage}/{service}/job/config.yaml"]);
    assert!(
        single
            .load(&service("dev", "carts"), None, Reads::Any)
            .unwrap()
            .config
            .is_none()
    );
}

#[test]
fn memory_reads_answer_from_fresh_heads_and_compiled_configs_and_nothing_else() {
    let repo = TestRepo::new("memory");
    repo.write("job/config.yaml", &config_with_image("project", "[]"));
    repo.commit("project level");
    repo.git(&["checkout", "-q", "-b", "dev"]);
    repo.write("job/config.yaml", &config_with_image("stage", "[]"))
        .write(
            "carts/job/config.yaml",
            &config_with_image("service", "[run.sh]"),
        )
        .write("carts/run.sh", "echo hi\n")
        .write("broken/job/config.yaml", "apiVersion: v2\nactions: 7\n");
    let dev = repo.commit("dev");
    let memory = |source: &GitSource, name: &str, pin: Option<&str>| {
        source.load(&service("dev", name), pin, Reads::Memory)
    };

    let (source, fetches) = source_for(&repo, &[]);
    // Nothing fetched yet: that needs a fetch, which memory reads do not make.
    assert_eq!(
        memory(&source, "carts", None).unwrap_err(),
        SourceError::NotInMemory
    );
    assert_eq!(fetch_count(&fetches), 0);

    let carts = found(&source, "dev", "carts", None);
    let orders = found(&source, "dev", "orders", None);
    let in_memory = |name: &str, pin: Option<&str>| {
        memory(&source, name, pin)
            .unwrap_or_else(|error| panic!("{name} at {pin:?}: {error}"))
            .config
            .unwrap()
    };
    assert!(Arc::ptr_eq(&in_memory("carts", None), &carts));
    // The service level that holds no config for orders is remembered as such.
    assert!(Arc::ptr_eq(&in_memory("orders", None), &orders));
    // The commit a config was read at needs no look in the clone.
    assert!(Arc::ptr_eq(&in_memory("carts", Some(&dev)), &carts));
    // A config that cannot be used cannot at that commit ever: its error is kept too.
    let broken = source
        .load(&service("dev", "broken"), None, Reads::Any)
        .unwrap_err();
    assert!(
        broken.to_string().contains("broken/job/config.yaml"),
        "{broken}"
    );
    assert_eq!(memory(&source, "broken", None).unwrap_err(), broken);
    assert_eq!(fetch_count(&fetches), 1);
    // A service never looked up, an abbreviated pin, a commit never read: the clone is needed.
    for (name, pin) in [
        ("payments", None),
        ("carts", Some(&dev[..12])),
        ("carts", Some("0123456789abcdef0123456789abcdef01234567")),
    ] {
        assert_eq!(
            memory(&source, name, pin).unwrap_err(),
            SourceError::NotInMemory
        );
    }
    // Files are read from the clone; a run without files needs none.
    let tasks = &carts.compiled.config.actions[0].tasks;
    assert_eq!(
        source
            .collect_run_files(Some(&dev), "carts", tasks, Reads::Memory)
            .unwrap_err(),
        SourceError::NotInMemory
    );
    assert!(
        source
            .collect_run_files(
                Some(&dev),
                "",
                &orders.compiled.config.actions[0].tasks,
                Reads::Memory
            )
            .unwrap()
            .files
            .is_empty()
    );

    // Lookups read the heads side by side, and beside a fetch under way; only a fetch
    // recording what it found sends one to the pool (waiting for it would stall an async
    // worker).
    let beside_a_lookup = source
        .cache
        .while_heads_held(false, || memory(&source, "carts", None));
    assert!(Arc::ptr_eq(
        &beside_a_lookup.unwrap().config.unwrap(),
        &carts
    ));
    let beside_a_fetch = source
        .cache
        .while_fetching(|| memory(&source, "carts", None));
    assert!(Arc::ptr_eq(
        &beside_a_fetch.unwrap().config.unwrap(),
        &carts
    ));
    assert_eq!(
        source
            .cache
            .while_heads_held(true, || memory(&source, "carts", None))
            .unwrap_err(),
        SourceError::NotInMemory
    );

    // Heads older than the fetch interval are fetched again: not from memory.
    let cache_dir = repo.dir.with_extension("cache-zero");
    let _ = std::fs::remove_dir_all(&cache_dir);
    let every_time = open_source(&repo.url(), &cache_dir, &[], Duration::ZERO).unwrap();
    found(&every_time, "dev", "carts", None);
    assert_eq!(
        memory(&every_time, "carts", None).unwrap_err(),
        SourceError::NotInMemory
    );
}

#[test]
fn a_config_over_the_size_limit_is_refused_from_its_header_without_being_read() {
    let repo = TestRepo::new("huge-config");
    let padding = "x".repeat(config::MAX_CONFIG_BYTES as usize);
    repo.write(
        "job/config.yaml",
        &format!("apiVersion: v2\n# {padding}\nactions: []\n"),
    );
    let commit = repo.commit("a config of over a MiB");
    let (source, _) = source_for(&repo, &[]);
    let error = source
        .load(&service("main", "carts"), None, Reads::Any)
        .unwrap_err();
    let size = config::MAX_CONFIG_BYTES + 30;
    match &error {
        SourceError::Config(ConfigError::TooLarge { size: found, .. }) => assert_eq!(*found, size),
        other => panic!("{other:?}"),
    }
    assert!(!error.is_transient());
    assert_eq!(
        error.to_string(),
        format!(
            "{}:job/config.yaml: the file is too large: {size} bytes, over the limit of 1048576 bytes for a job config",
            &commit[..12]
        )
    );
    // Refused again from memory, without a look at the clone.
    assert_eq!(
        source
            .load(&service("main", "carts"), None, Reads::Memory)
            .unwrap_err(),
        error
    );
}

/// A link whose target is longer than git allows (a few KB pushed: it compresses) is refused
/// from its header, for a config looked up through it and for a task's files alike.
#[test]
fn a_link_whose_target_is_longer_than_git_allows_is_refused_without_reading_it() {
    let repo = TestRepo::new("long-link");
    repo.write("job/config.yaml", &config_with_image("alpine:3", "[]"));
    repo.commit("config");
    let target = std::env::temp_dir().join(format!("je-long-link-{}", std::process::id()));
    std::fs::write(&target, "a/".repeat(5000)).unwrap();
    let blob = repo.git(&["hash-object", "-w", target.to_str().unwrap()]);
    std::fs::remove_file(&target).unwrap();
    repo.git(&["rm", "-q", "-r", "--cached", "job"]);
    let commit = repo
        .index_entry("120000", &blob, "job")
        .index_entry("120000", &blob, "carts/files")
        .commit_index("a long link");
    let (source, _) = source_for(&repo, &[]);
    let config = source.load(&service("main", "carts"), None, Reads::Any);
    let files =
        source.collect_run_files(Some(&commit), "carts", &action("[files]").tasks, Reads::Any);
    for error in [config.unwrap_err(), files.unwrap_err()] {
        assert!(
            error
                .to_string()
                .contains("a link's target of 10000 bytes, more than the 4096 read"),
            "{error}"
        );
    }
}

/// A file whose object the store cannot read (a corrupt loose object here; a pack that cannot
/// be opened or mapped in the operator's clone) is the store's failure, tried again; one the
/// store does not hold is the content's, and fails the run.
#[test]
fn a_file_the_store_cannot_read_is_tried_again_and_a_missing_one_is_not() {
    let repo = TestRepo::new("store-failure");
    repo.write("carts/a.txt", "a").write("carts/b.txt", "b");
    let commit = gix::ObjectId::from_hex(repo.commit("files").as_bytes()).unwrap();
    let loose = |path: &str| {
        let id = repo.git(&["rev-parse", &format!("HEAD:{path}")]);
        repo.dir.join(".git/objects").join(&id[..2]).join(&id[2..])
    };
    let corrupt = loose("carts/a.txt");
    std::fs::set_permissions(
        &corrupt,
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .unwrap();
    std::fs::write(&corrupt, b"not zlib at all").unwrap();
    std::fs::remove_file(loose("carts/b.txt")).unwrap();
    let tree =
        super::tree::CommitTree::new(gix::open(&repo.dir).unwrap(), commit, "carts").unwrap();
    let collect = |files: &str| crate::files::collect(&tree, &action(files).tasks);
    let failed = collect("[a.txt]").unwrap_err();
    assert!(
        matches!(&failed, FilesError::Store { .. }) && failed.is_transient(),
        "{failed:?}"
    );
    let missing = collect("[b.txt]").unwrap_err();
    assert!(
        matches!(&missing, FilesError::Unreadable { .. }) && !missing.is_transient(),
        "{missing:?}"
    );
    assert!(
        missing.to_string().contains("is not in the clone"),
        "{missing}"
    );
}

/// Bytes no compression shrinks (xorshift), so a file's size is what the pack carries.
fn noise(len: usize, mut state: u64) -> String {
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            char::from(b'!' + (state % 90) as u8)
        })
        .collect()
}

#[test]
fn a_repository_over_the_size_limit_stops_the_fetch_and_lookups_keep_the_last_heads() {
    let limit: u64 = 2 << 20;
    let repo = TestRepo::new("huge-repo");
    repo.write("job/config.yaml", &config_with_image("small", "[]"));
    let small = repo.commit("small");
    let cache_dir = repo.dir.with_extension("cache");
    let _ = std::fs::remove_dir_all(&cache_dir);
    let source = open_bounded(&repo.url(), &cache_dir, &[], Duration::ZERO, limit).unwrap();
    let loaded = found(&source, "main", "carts", None);
    assert_eq!(loaded.revision.as_deref(), Some(small.as_str()));

    // History that passes the limit: the fetch is stopped, the lookup reads the last heads.
    for round in 0..3 {
        repo.write(&format!("data/{round}.bin"), &noise(1 << 20, round + 1));
        repo.commit(&format!("a MiB more ({round})"));
    }
    let found_now = source
        .load(&service("main", "carts"), None, Reads::Any)
        .unwrap();
    let stale = found_now.stale.expect("read at the last fetch's heads");
    let reason = stale.error.to_string();
    assert!(
        reason.contains("the repository is too large: its clone reached")
            && reason.contains(&format!(
                "over the limit of {limit} bytes (--git-max-repository-bytes)"
            )),
        "{reason}"
    );
    let loaded = found_now.config.unwrap();
    assert_eq!(loaded.revision.as_deref(), Some(small.as_str()));

    // A first fetch of the large repository fails with the same reason, and nothing is read.
    let fresh = repo.dir.with_extension("fresh-cache");
    let _ = std::fs::remove_dir_all(&fresh);
    let source = open_bounded(&repo.url(), &fresh, &[], Duration::ZERO, limit).unwrap();
    let error = source
        .load(&service("main", "carts"), None, Reads::Any)
        .unwrap_err();
    assert!(error.is_transient());
    assert!(
        error.to_string().contains("the repository is too large"),
        "{error}"
    );
    // With room for it, the same repository is read.
    let roomy = repo.dir.with_extension("roomy-cache");
    let _ = std::fs::remove_dir_all(&roomy);
    let source = open_bounded(&repo.url(), &roomy, &[], Duration::ZERO, 8 * limit).unwrap();
    assert!(
        source
            .load(&service("main", "carts"), None, Reads::Any)
            .unwrap()
            .stale
            .is_none()
    );
}

#[test]
fn a_pinned_commit_is_read_after_the_branch_moved() {
    let repo = TestRepo::new("pin");
    repo.write("job/config.yaml", &config_with_image("project", "[]"));
    repo.commit("main");
    repo.git(&["checkout", "-q", "-b", "dev"]);
    repo.write("carts/job/config.yaml", &config_with_image("old", "[data]"))
        .write("carts/data/a.txt", "old a");
    let old = repo.commit("old");
    let (source, _) = source_for(&repo, &[]);
    assert_eq!(image_of(&found(&source, "dev", "carts", None)), "old");
    repo.write("carts/job/config.yaml", &config_with_image("new", "[data]"))
        .write("carts/data/a.txt", "new a");
    let new = repo.commit("new");

    // Not in the cache yet: fetched because the pin asks for it.
    let pinned_new = found(&source, "dev", "carts", Some(&new[..10]));
    assert_eq!(image_of(&pinned_new), "new");
    let pinned_old = found(&source, "dev", "carts", Some(&old));
    assert_eq!(image_of(&pinned_old), "old");
    let files = source
        .collect_run_files(
            Some(&old),
            "carts",
            &pinned_old.compiled.config.actions[0].tasks,
            Reads::Any,
        )
        .unwrap();
    assert_eq!(files.files[0].content, b"old a");

    let error = source
        .load(
            &service("dev", "carts"),
            Some("0123456789abcdef"),
            Reads::Any,
        )
        .unwrap_err();
    assert!(
        error
            .to_string()
            .starts_with("commit 0123456789abcdef is not in file://"),
        "{error}"
    );
    // A run's recorded commit that is gone is told as such (no advice about pinning).
    let error = source
        .collect_run_files(
            Some("0123456789abcdef"),
            "carts",
            &pinned_old.compiled.config.actions[0].tasks,
            Reads::Any,
        )
        .unwrap_err();
    assert!(
        error
            .to_string()
            .starts_with("the run's commit 0123456789abcdef is not in file://")
            && !error.to_string().contains("--git-pin-commits"),
        "{error}"
    );
    let error = source
        .load(&service("dev", "carts"), Some("main~1"), Reads::Any)
        .unwrap_err();
    assert!(error.to_string().contains("is not a commit id"), "{error}");
}

/// Of 2,000 commits (made with fixed dates, so their ids are the same every time), an
/// abbreviation two commits start is refused as ambiguous, without a fetch; one that starts
/// one commit and other objects names that commit, as git takes it.
#[test]
fn an_abbreviated_commit_names_the_one_commit_it_starts() {
    let repo = TestRepo::new("abbrev");
    repo.write("job/config.yaml", &config_with_image("project", "[]"));
    repo.commit("main");
    let mut stream = String::new();
    for i in 0..2000 {
        let image = format!("v{i}");
        let config = config_with_image(&image, "[]");
        stream.push_str(&format!(
            "blob\nmark :{mark}\ndata {len}\n{config}\ncommit refs/heads/dev\n\
             committer t <t@example.com> {time} +0000\ndata {image_len}\n{image}\n\
             M 100644 :{mark} carts/job/config.yaml\n\n",
            mark = i + 1,
            len = config.len(),
            time = 1_700_000_000 + i,
            image_len = image.len(),
        ));
    }
    let stream_file = repo.dir.with_extension("fast-import");
    std::fs::write(&stream_file, stream).unwrap();
    let imported = Command::new("git")
        .args(["fast-import", "--quiet"])
        .current_dir(&repo.dir)
        .stdin(std::fs::File::open(&stream_file).unwrap())
        .status()
        .unwrap();
    assert!(imported.success());
    let objects = repo.git(&[
        "cat-file",
        "--batch-all-objects",
        "--batch-check=%(objectname) %(objecttype)",
    ]);
    let mut by_prefix: HashMap<&str, (Vec<&str>, usize)> = HashMap::new();
    for line in objects.lines() {
        let (id, kind) = line.split_once(' ').unwrap();
        let entry = by_prefix.entry(&id[..4]).or_default();
        match kind {
            "commit" => entry.0.push(id),
            _ => entry.1 += 1,
        }
    }
    let two_commits = by_prefix
        .iter()
        .find(|(_, (commits, _))| commits.len() >= 2)
        .map(|(prefix, _)| *prefix)
        .unwrap();
    let (one_commit, commit) = by_prefix
        .iter()
        .find(|(_, (commits, others))| commits.len() == 1 && *others > 0)
        .map(|(prefix, (commits, _))| (*prefix, commits[0]))
        .unwrap();
    let (source, fetches) = source_for(&repo, &[]);
    found(&source, "dev", "carts", None);
    let fetched = fetch_count(&fetches);

    let error = source
        .load(&service("dev", "carts"), Some(two_commits), Reads::Any)
        .unwrap_err()
        .to_string();
    assert!(
        error.starts_with(&format!("gitcommitid {two_commits:?} is ambiguous: ")),
        "{error}"
    );
    let pinned = found(&source, "dev", "carts", Some(one_commit));
    let message = repo.git(&["log", "-1", "--format=%s", commit]);
    assert_eq!(image_of(&pinned), message.as_str(), "the commit {commit}");
    assert_eq!(
        fetch_count(&fetches),
        fetched,
        "no fetch: both are in the clone"
    );
}

fn action(files: &str) -> crate::config::Action {
    config::load(&config_with_image("a", files), "c.yaml")
        .unwrap()
        .config
        .actions[0]
        .clone()
}

/// A directory of many links, each resolved from the top, decodes each tree once: it decoded
/// its own tree again for every link, the square of its size.
#[test]
fn a_directory_of_many_links_is_read_once() {
    let repo = TestRepo::new("many-links");
    repo.write("carts/f", "x");
    for at in 0..2000 {
        repo.link(&format!("carts/links/l{at}"), "../f");
    }
    let commit = gix::ObjectId::from_hex(repo.commit("links").as_bytes()).unwrap();
    let tree =
        super::tree::CommitTree::new(gix::open(&repo.dir).unwrap(), commit, "carts").unwrap();
    let found = tree
        .expand_within("links", &mut crate::files::ExpandBudget::default())
        .unwrap();
    assert_eq!(found.len(), 2000);
    assert!(found.iter().all(|file| file.size == 1));
    // The top, `carts` and `carts/links`.
    assert_eq!(tree.trees_decoded(), 3);
}

#[test]
fn files_expand_from_the_commit_with_modes_links_and_limits() {
    let repo = TestRepo::new("tree");
    repo.write("carts/helm/Chart.yaml", "chart")
        .write("carts/helm/templates/job.yaml", "job")
        .write("carts/helm-abc/other.yaml", "other")
        .executable("carts/run.sh", "#!/bin/sh")
        .write("shared/common.txt", "common")
        .link("carts/common.txt", "../shared/common.txt")
        .link("carts/shared", "../shared")
        .link("carts/escape.txt", "../../outside.txt")
        .link("carts/absolute.txt", "/etc/passwd")
        .link("carts/loop", "loop");
    let commit = repo.commit("files");
    let (source, _) = source_for(&repo, &["main:{service}/job/config.yaml"]);
    source.cache.heads(Instant::now(), Duration::ZERO).unwrap();
    let collect = |files: &str| {
        source.collect_run_files(Some(&commit), "carts", &action(files).tasks, Reads::Any)
    };

    let run = collect("[helm, run.sh, common.txt, shared]").unwrap();
    let staged: Vec<(&str, bool, &[u8])> = run
        .files
        .iter()
        .map(|f| {
            (
                f.staged.path.as_str(),
                f.staged.executable,
                f.content.as_slice(),
            )
        })
        .collect();
    assert_eq!(
        staged,
        [
            ("helm/Chart.yaml", false, b"chart".as_slice()),
            ("helm/templates/job.yaml", false, b"job".as_slice()),
            ("run.sh", true, b"#!/bin/sh".as_slice()),
            ("common.txt", false, b"common".as_slice()),
            ("shared/common.txt", false, b"common".as_slice()),
        ]
    );

    let missing = collect("[locust/basic.py]").unwrap_err();
    assert_eq!(
        missing.to_string(),
        format!(
            "task 't': file or directory \"locust/basic.py\" not found in carts at commit {commit}"
        )
    );
    for link in ["escape.txt", "absolute.txt"] {
        let error = collect(&format!("[{link}]")).unwrap_err();
        assert!(
            matches!(&error, SourceError::Files(FilesError::Escapes { .. })),
            "{link}: {error}"
        );
        assert!(
            error.to_string().contains("leads outside the repository"),
            "{error}"
        );
    }
    let error = collect("[loop]").unwrap_err();
    assert!(error.to_string().contains("link loop"), "{error}");

    // A submodule (a gitlink entry) named by a task is told, not staged as nothing; inside a
    // listed directory it is left out.
    let with_module = repo
        .index_entry("160000", &commit, "carts/vendor/lib")
        .commit_index("submodule");
    source.cache.heads(Instant::now(), Duration::ZERO).unwrap();
    let collect_at = |files: &str| {
        source.collect_run_files(
            Some(&with_module),
            "carts",
            &action(files).tasks,
            Reads::Any,
        )
    };
    let error = collect_at("[vendor/lib]").unwrap_err();
    assert!(
        error
            .to_string()
            .contains("a submodule: its files are in another repository"),
        "{error}"
    );
    // A directory that holds only the submodule has nothing to stage: the task fails, as one
    // that names a missing path.
    let error = collect_at("[vendor, run.sh]").unwrap_err();
    assert!(
        error.to_string().contains("\"vendor\"")
            && error.to_string().contains("brings no file to stage"),
        "{error}"
    );

    // Links that fan out (four side by side to the next level, six levels deep: 4,096 files)
    // are refused once the walk passes its bound (1,000 here), not listed whole first.
    let fan = TestRepo::new("fan");
    for level in 0..6 {
        for link in ["a", "b", "c", "d"] {
            fan.link(
                &format!("carts/l{level}/{link}"),
                &format!("../l{}", level + 1),
            );
        }
    }
    fan.write("carts/l6/f", "x");
    let fanned = gix::ObjectId::from_hex(fan.commit("fan").as_bytes()).unwrap();
    let (fan_source, _) = source_for(&fan, &["main:{service}/job/config.yaml"]);
    fan_source
        .cache
        .heads(Instant::now(), Duration::ZERO)
        .unwrap();
    let tree = super::tree::CommitTree::new(fan_source.cache.repo(), fanned, "carts").unwrap();
    let walk = |entry: &str| tree.expand_within(entry, &mut crate::files::ExpandBudget::most(1000));
    assert_eq!(
        walk("l0").unwrap_err(),
        crate::files::ExpandError::Unreadable {
            path: "carts/l0/a/b/c/c/d".into(),
            reason: "more than 1000 files, directories and links walked for the files of this \
                     run (links that fan out?)"
                .into()
        }
    );
    assert_eq!(walk("l2").unwrap().len(), 256);

    // Two names that differ only in bytes that are not UTF-8 read as one (`x\u{FFFD}`): the
    // walk refuses them rather than stage one file in place of both.
    let latin = TestRepo::new("latin-names");
    latin.write("carts/data/ok", "ok");
    for byte in [0xfe_u8, 0xff] {
        use std::os::unix::ffi::OsStrExt;
        let name = [b'x', byte];
        let name = std::ffi::OsStr::from_bytes(&name);
        std::fs::write(latin.dir.join("carts/data").join(name), [byte]).unwrap();
    }
    let latin_commit = gix::ObjectId::from_hex(latin.commit("latin").as_bytes()).unwrap();
    let (latin_source, _) = source_for(&latin, &["main:{service}/job/config.yaml"]);
    latin_source
        .cache
        .heads(Instant::now(), Duration::ZERO)
        .unwrap();
    let tree =
        super::tree::CommitTree::new(latin_source.cache.repo(), latin_commit, "carts").unwrap();
    let error = tree
        .expand_within("data", &mut crate::files::ExpandBudget::default())
        .unwrap_err();
    assert!(
        matches!(&error, crate::files::ExpandError::Unreadable { path, reason }
            if path.starts_with("carts/data/x") && reason.starts_with("its name is not UTF-8")),
        "{error:?}"
    );
    let error = source
        .collect_run_files(None, "carts", &action("[run.sh]").tasks, Reads::Any)
        .unwrap_err();
    assert!(error.to_string().contains("records no commit"), "{error}");
}

#[test]
fn an_unreachable_repository_names_the_url_without_secrets() {
    let cache_dir = std::env::temp_dir().join(format!("je-git-unit-{}-down", std::process::id()));
    let source = open_source(
        "http://alice:s3cret@127.0.0.1:9/repo.git",
        &cache_dir,
        &[],
        Duration::from_secs(10),
    )
    .unwrap();
    let error = source
        .load(&service("dev", "carts"), None, Reads::Any)
        .unwrap_err();
    let text = error.to_string();
    assert!(
        text.starts_with("cannot fetch http://127.0.0.1:9/repo.git: "),
        "{text}"
    );
    assert!(
        !text.contains("s3cret") && !text.contains("alice"),
        "{text}"
    );
    assert!(
        error.is_transient(),
        "nothing was ever fetched: retry later"
    );
    assert_eq!(failed_fetches(&source.fetches), 1);
}

/// The clone in a cache directory.
fn clone_in(cache_dir: &std::path::Path) -> PathBuf {
    std::fs::read_dir(cache_dir)
        .unwrap()
        .flatten()
        .map(|entry| entry.path())
        .find(|path| path.extension().is_some_and(|e| e == "git"))
        .expect("a clone in the cache")
}

#[test]
fn the_locks_a_killed_fetch_leaves_are_removed_when_the_cache_is_opened_again() {
    let repo = TestRepo::new("killed");
    repo.git(&["checkout", "-q", "-b", "dev"]);
    repo.write("job/config.yaml", &config_with_image("v1", "[]"));
    repo.commit("v1");
    let cache_dir = repo.dir.with_extension("cache");
    let _ = std::fs::remove_dir_all(&cache_dir);
    let lookups = ["dev:job/config.yaml"];
    let first = open_source(&repo.url(), &cache_dir, &lookups, Duration::ZERO).unwrap();
    assert_eq!(image_of(&found(&first, "dev", "carts", None)), "v1");

    // What a process killed in the middle of a fetch leaves: the ref locks of the report, and
    // a pack whose transfer was cut short.
    let clone = clone_in(&cache_dir);
    let leftovers = [
        "packed-refs.lock",
        "refs/remotes/origin/dev.lock",
        "objects/pack/.tmpK1lled",
    ];
    for file in leftovers {
        std::fs::write(clone.join(file), "").unwrap();
    }
    repo.write("job/config.yaml", &config_with_image("v2", "[]"));
    let v2 = repo.commit("v2");
    // They block every fetch: the branch head stays where it was.
    let blocked = first
        .load(&service("dev", "carts"), None, Reads::Any)
        .unwrap();
    let stale = blocked.stale.expect("the fetch failed");
    assert!(stale.error.to_string().contains("lock"), "{}", stale.error);
    assert_eq!(image_of(&blocked.config.unwrap()), "v1");
    // While the process runs, the clone is its own.
    let error = open_source(&repo.url(), &cache_dir, &lookups, Duration::ZERO).unwrap_err();
    assert!(
        error.to_string().contains("is in use by process"),
        "{error}"
    );

    // The process ends; the next one removes what was left and fetches.
    drop(first);
    let restarted = open_source(&repo.url(), &cache_dir, &lookups, Duration::ZERO).unwrap();
    for file in leftovers {
        assert!(!clone.join(file).exists(), "{file} is left");
    }
    let fresh = restarted
        .load(&service("dev", "carts"), None, Reads::Any)
        .unwrap();
    assert!(fresh.stale.is_none(), "{:?}", fresh.stale);
    let config = fresh.config.unwrap();
    assert_eq!(image_of(&config), "v2");
    assert_eq!(config.revision.as_deref(), Some(v2.as_str()));
}

#[test]
fn an_unreachable_repository_serves_the_branch_heads_of_the_last_fetch() {
    let repo = TestRepo::new("outage");
    repo.write("job/config.yaml", &config_with_image("project", "[]"));
    repo.commit("main");
    repo.git(&["checkout", "-q", "-b", "dev"]);
    repo.write("carts/job/config.yaml", &config_with_image("old", "[data]"))
        .write("carts/data/a.txt", "old a")
        .write("broken/job/config.yaml", "apiVersion: v2\nactions: 7\n");
    let old = repo.commit("old");
    let cache_dir = repo.dir.with_extension("cache");
    let _ = std::fs::remove_dir_all(&cache_dir);
    // Every branch lookup wants a fetch.
    let source = open_source(&repo.url(), &cache_dir, &[], Duration::ZERO).unwrap();
    assert_eq!(image_of(&found(&source, "dev", "carts", None)), "old");
    let error = source
        .load(&service("dev", "broken"), None, Reads::Any)
        .unwrap_err();
    assert!(!error.is_transient(), "an invalid config fails: {error}");
    repo.write("carts/job/config.yaml", &config_with_image("new", "[data]"));
    let new = repo.commit("new");

    // The repository goes away.
    let away = repo.dir.with_extension("away");
    let _ = std::fs::remove_dir_all(&away);
    std::fs::rename(&repo.dir, &away).unwrap();
    let during = source
        .load(&service("dev", "carts"), None, Reads::Any)
        .unwrap();
    let config = during.config.unwrap();
    assert_eq!(image_of(&config), "old");
    assert_eq!(config.revision.as_deref(), Some(old.as_str()));
    let stale = during.stale.expect("marked stale");
    assert!(
        stale.error.to_string().starts_with("cannot fetch file://"),
        "{}",
        stale.error
    );
    assert!(stale.fetched_at.is_some());
    assert_eq!(source.stale_lookups.get(), 1);
    let files = source
        .collect_run_files(
            Some(&old),
            "carts",
            &config.compiled.config.actions[0].tasks,
            Reads::Any,
        )
        .unwrap();
    assert_eq!(files.files[0].content, b"old a");
    // A pinned commit the clone has needs no fetch and is not stale.
    let pinned = source
        .load(&service("dev", "carts"), Some(&old), Reads::Any)
        .unwrap();
    assert!(pinned.stale.is_none());
    // One it does not have may exist: retry later.
    let error = source
        .load(&service("dev", "carts"), Some(&new), Reads::Any)
        .unwrap_err();
    assert!(error.is_transient(), "{error}");
    assert!(
        error.to_string().starts_with(&format!(
            "commit {new} is not in the clone cache yet, and cannot fetch file://"
        )),
        "{error}"
    );
    // An invalid config at the stale heads may have been fixed since: retry later.
    let error = source
        .load(&service("dev", "broken"), None, Reads::Any)
        .unwrap_err();
    assert!(error.is_transient(), "{error}");
    assert!(
        error
            .to_string()
            .contains("(read at the branch heads of the last successful fetch, as the repository cannot be fetched now: cannot fetch file://"),
        "{error}"
    );

    // Restarted during the outage, the operator reads the heads the clone keeps.
    drop(source);
    let restarted = open_source(&repo.url(), &cache_dir, &[], Duration::ZERO).unwrap();
    let after_restart = restarted
        .load(&service("dev", "carts"), None, Reads::Any)
        .unwrap();
    assert_eq!(image_of(&after_restart.config.unwrap()), "old");
    assert_eq!(after_restart.stale.unwrap().fetched_at, stale.fetched_at);
    // A clone nothing was ever fetched into has nothing to offer: retry later.
    let empty_cache = repo.dir.with_extension("empty-cache");
    let _ = std::fs::remove_dir_all(&empty_cache);
    let empty = open_source(&repo.url(), &empty_cache, &[], Duration::ZERO).unwrap();
    let error = empty
        .load(&service("dev", "carts"), None, Reads::Any)
        .unwrap_err();
    assert!(error.is_transient(), "{error}");

    // The repository is back.
    std::fs::rename(&away, &repo.dir).unwrap();
    let back = restarted
        .load(&service("dev", "carts"), None, Reads::Any)
        .unwrap();
    assert!(back.stale.is_none());
    assert_eq!(image_of(&back.config.unwrap()), "new");
}

/// After a failed fetch, an event pinned to a commit the clone lacks is answered from it for a
/// fetch interval; a fetch that works meanwhile (the heads', once the host is back) ends that.
#[test]
fn a_fetch_that_works_ends_the_pins_answer_from_a_failed_one() {
    let repo = TestRepo::new("pin-memo");
    repo.git(&["checkout", "-q", "-b", "dev"]);
    repo.write("carts/job/config.yaml", &config_with_image("old", "[]"));
    repo.commit("old");
    let cache_dir = repo.dir.with_extension("cache");
    let _ = std::fs::remove_dir_all(&cache_dir);
    let source = open_source(&repo.url(), &cache_dir, &[], Duration::from_secs(600)).unwrap();
    assert_eq!(image_of(&found(&source, "dev", "carts", None)), "old");
    // A commit no branch shows yet (pushed a moment later).
    repo.write("carts/job/config.yaml", &config_with_image("new", "[]"));
    let new = repo.commit("new");
    repo.git(&["reset", "-q", "--hard", "HEAD~1"]);
    let away = repo.dir.with_extension("away");
    let _ = std::fs::remove_dir_all(&away);
    std::fs::rename(&repo.dir, &away).unwrap();
    let pinned = || source.load(&service("dev", "carts"), Some(&new), Reads::Any);
    assert!(pinned().unwrap_err().is_transient());
    std::fs::rename(&away, &repo.dir).unwrap();
    // Within the interval, without a fetch: the failed one's answer.
    assert!(pinned().unwrap_err().is_transient());
    // The heads' fetch works again; then the commit is pushed.
    source.cache.heads(Instant::now(), Duration::ZERO).unwrap();
    repo.git(&["update-ref", "refs/heads/dev", &new]);
    let config = pinned().unwrap().config.unwrap();
    assert_eq!(image_of(&config), "new");
}

/// A repository whose `dev` branch holds a config at `job/config.yaml` (image `v1`), and an
/// empty place for its clone cache.
fn dev_repo(name: &str) -> (TestRepo, PathBuf) {
    let repo = TestRepo::new(name);
    repo.git(&["checkout", "-q", "-b", "dev"]);
    repo.write("job/config.yaml", &config_with_image("v1", "[]"));
    repo.commit("v1");
    let cache_dir = repo.dir.with_extension("cache");
    let _ = std::fs::remove_dir_all(&cache_dir);
    (repo, cache_dir)
}

/// A fetch under way that does not end (a host trickling its pack) holds a lookup whose heads
/// are due only as long as `--git-fetch-wait-seconds`, counted from the fetch's start: then it
/// reads the last heads, marked stale; with none, it fails. Past `--git-fetch-timeout-seconds`
/// a lookup fetches beside it.
#[test]
fn a_lookup_waits_for_a_fetch_under_way_only_so_long() {
    let (repo, cache_dir) = dev_repo("wait");
    let wait = Duration::from_millis(1500);
    let limits = FetchLimits {
        wait,
        timeout: Duration::from_secs(3),
        ..FetchLimits::default()
    };
    let open = || open_limited(&repo.url(), &cache_dir, &[], Duration::ZERO, limits).unwrap();

    // Nothing fetched yet: a lookup fails once it waited, saying why.
    let empty = open();
    let started = Instant::now();
    let error = empty.cache.while_fetching(|| {
        empty
            .load(&service("dev", "carts"), None, Reads::Any)
            .unwrap_err()
    });
    assert!(started.elapsed() >= wait, "waited {:?}", started.elapsed());
    assert!(
        error.to_string().contains("s ago and has not ended")
            && error.to_string().contains("s (--git-fetch-wait-seconds)"),
        "{error}"
    );
    assert!(error.is_transient(), "{error}");
    drop(empty);

    let source = open();
    found(&source, "dev", "carts", None);
    assert_eq!(fetch_count(&source.fetches), 1);
    let stale = |source: &Opened| {
        source
            .load(&service("dev", "carts"), None, Reads::Any)
            .unwrap()
            .stale
            .expect("stale heads")
    };
    let (waited, late, at_once, beside) = source.cache.while_fetching(|| {
        let claimed = Instant::now();
        // A lookup due to fetch waits for the fetch under way, then reads the heads it has.
        let started = Instant::now();
        let first = stale(&source);
        let waited = started.elapsed();
        assert!(
            first.error.to_string().contains("has not ended"),
            "{}",
            first.error
        );
        // Once the fetch has run that long, a lookup does not wait for it at all.
        let started = Instant::now();
        let second = stale(&source);
        let at_once = started.elapsed();
        // Past the timeout it is left to itself: a lookup fetches beside it.
        std::thread::sleep(
            (claimed + limits.timeout + Duration::from_millis(100))
                .saturating_duration_since(Instant::now()),
        );
        let beside = source
            .load(&service("dev", "carts"), None, Reads::Any)
            .unwrap();
        (waited, second, at_once, beside)
    });
    assert!(waited >= wait, "waited {waited:?}");
    assert!(at_once < wait / 2, "waited again: {at_once:?}");
    assert!(
        late.error.to_string().contains("has not ended"),
        "{}",
        late.error
    );
    assert!(beside.stale.is_none());
    assert_eq!(source.stale_lookups.get(), 2);
    assert_eq!(fetch_count(&source.fetches), 2);
    // Nothing under way: the next lookup fetches again, fresh.
    let after = source
        .load(&service("dev", "carts"), None, Reads::Any)
        .unwrap();
    assert!(after.stale.is_none());
    assert_eq!(fetch_count(&source.fetches), 3);
}

/// Past `--git-fetch-timeout-seconds` a fetch under way is left to itself and a lookup fetches
/// beside it; with one left so, a second one past the timeout is not joined (lookups read the
/// last heads) until the first ends.
#[test]
fn a_fetch_past_the_timeout_is_left_to_itself_one_at_a_time() {
    let (repo, cache_dir) = dev_repo("left");
    let limits = FetchLimits {
        wait: Duration::from_millis(1500),
        timeout: Duration::from_millis(2500),
        ..FetchLimits::default()
    };
    let source = open_limited(&repo.url(), &cache_dir, &[], Duration::ZERO, limits).unwrap();
    found(&source, "dev", "carts", None);
    let lookup = || {
        source
            .load(&service("dev", "carts"), None, Reads::Any)
            .unwrap()
    };
    let past_the_timeout = || std::thread::sleep(limits.timeout + Duration::from_millis(100));

    let first = source.cache.hold_claim();
    past_the_timeout();
    assert!(lookup().stale.is_none(), "fetched beside the first");
    assert_eq!(fetch_count(&source.fetches), 2);

    let second = source.cache.hold_claim();
    past_the_timeout();
    let asked = Instant::now();
    let stale = lookup().stale.expect("the last heads");
    assert!(
        asked.elapsed() < limits.wait / 2,
        "waited {:?}",
        asked.elapsed()
    );
    assert!(
        stale.error.to_string().contains("has not ended"),
        "{}",
        stale.error
    );
    assert_eq!(fetch_count(&source.fetches), 2);

    drop(first);
    assert!(lookup().stale.is_none(), "fetched beside the second");
    assert_eq!(fetch_count(&source.fetches), 3);
    drop(second);
}

#[test]
fn a_failed_fetch_is_tried_again_once_the_fetch_interval_passed() {
    let (repo, cache_dir) = dev_repo("backoff");
    let interval = Duration::from_secs(2);
    let source = open_source(&repo.url(), &cache_dir, &[], interval).unwrap();
    let fetched = Instant::now();
    found(&source, "dev", "carts", None);
    let away = repo.dir.with_extension("away");
    let _ = std::fs::remove_dir_all(&away);
    std::fs::rename(&repo.dir, &away).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while fetched.elapsed() <= interval + Duration::from_millis(100) {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(20));
    }

    // Past the interval the head is fetched again, and the failure serves the old heads; the
    // next lookups do not try again within the interval.
    for _ in 0..3 {
        let lookup = source
            .load(&service("dev", "carts"), None, Reads::Any)
            .unwrap();
        assert!(lookup.stale.is_some());
    }
    assert_eq!(failed_fetches(&source.fetches), 1);
    assert_eq!(source.stale_lookups.get(), 3);
    // Until the interval passes again the failure stands, so memory reads answer it too.
    let lookup = source
        .load(&service("dev", "carts"), None, Reads::Memory)
        .unwrap();
    assert!(lookup.stale.is_some());
    assert_eq!(failed_fetches(&source.fetches), 1);
    assert_eq!(source.stale_lookups.get(), 4);
    // A pinned commit the clone does not have is fetched at once.
    let error = source
        .load(
            &service("dev", "carts"),
            Some("0123456789abcdef"),
            Reads::Any,
        )
        .unwrap_err();
    assert!(error.is_transient(), "{error}");
    assert_eq!(failed_fetches(&source.fetches), 2);
    // Once per interval, as the heads: the same pin or another is answered from that failure
    // without a fetch of its own.
    for pin in ["0123456789ABCDEF", "fedcba9876543210"] {
        let again = source
            .load(&service("dev", "carts"), Some(pin), Reads::Any)
            .unwrap_err();
        assert!(again.is_transient(), "{again}");
    }
    assert_eq!(failed_fetches(&source.fetches), 2);
    std::fs::rename(&away, &repo.dir).unwrap();
}

/// A config of `actions` actions, each a condition and a task, so that compiling it takes a
/// while.
fn config_of(actions: usize, image: &str) -> String {
    let mut config = String::from("apiVersion: v2\nactions:\n");
    for n in 0..actions {
        config.push_str(&format!(
            "  - name: a{n}\n    events:\n      - name: sh.keptn.event.e{n}.triggered\n        jsonpath: {{property: $.data.n, match: \"{n}\"}}\n    tasks:\n      - {{name: t, image: {image}}}\n"
        ));
    }
    config
}

#[test]
fn lookups_that_need_the_same_config_at_once_read_it_once() {
    let repo = TestRepo::new("read-once");
    repo.write("job/config.yaml", &config_of(80, "one"));
    repo.commit("project level");
    let interval = Duration::from_millis(300);
    let url = format!("file://{}", repo.dir.display());
    let cache = repo.dir.with_extension("cache");
    let _ = std::fs::remove_dir_all(&cache);
    let source = open_source(&url, &cache, &[], interval).unwrap();
    // Eight lookups at once, as a burst of events on the worker threads: they wait for one
    // fetch, then all need the config at the commit it found.
    let burst = |expected: &str| {
        let start = std::sync::Barrier::new(8);
        std::thread::scope(|threads| {
            for _ in 0..8 {
                threads.spawn(|| {
                    start.wait();
                    let config = found(&source, "production", "carts", None);
                    assert_eq!(image_of(&config), expected);
                });
            }
        });
    };
    burst("one");
    assert_eq!(source.config_reads.get(), 1, "the first lookups");
    assert_eq!(fetch_count(&source.fetches), 1);

    // A push: the next lookups read the config at the new commit, once.
    repo.write("job/config.yaml", &config_of(80, "two"));
    repo.commit("pushed");
    std::thread::sleep(interval + Duration::from_millis(50));
    burst("two");
    assert_eq!(source.config_reads.get(), 2, "the lookups after a push");
    assert_eq!(fetch_count(&source.fetches), 2);
    assert!(source.configs.known.lock().unwrap().reading.is_empty());
}

/// A config read at no commit in particular, for [`ConfigCache`]'s tests.
fn loaded_config(image: &str) -> Arc<LoadedConfig> {
    let compiled = compile(&config_with_image(image, "[]"), "test").unwrap();
    Arc::new(LoadedConfig {
        compiled: Arc::new(compiled),
        revision: None,
        dir: String::new(),
        origin: "test".into(),
    })
}

#[test]
fn a_push_compiles_the_configs_it_changed_and_no_other() {
    let repo = TestRepo::new("compiled-once");
    repo.write("carts/job/config.yaml", &config_of(40, "carts-1"));
    repo.write("orders/job/config.yaml", &config_of(40, "orders"));
    repo.commit("first");
    let interval = Duration::from_millis(300);
    let cache = repo.dir.with_extension("cache");
    let _ = std::fs::remove_dir_all(&cache);
    let source = open_source(&repo.url(), &cache, &[], interval).unwrap();
    let lookup = |name: &str| found(&source, "main", name, None);
    let wait_for_the_push = || std::thread::sleep(interval + Duration::from_millis(50));
    let (carts, orders) = (lookup("carts"), lookup("orders"));
    assert_eq!(source.config_compiles.get(), 2);

    // A push that changes one service's config: the other's, read at the new commit, is the
    // config compiled at the old one.
    repo.write("carts/job/config.yaml", &config_of(40, "carts-2"));
    let pushed = repo.commit("carts changed");
    wait_for_the_push();
    let (carts_2, orders_2) = (lookup("carts"), lookup("orders"));
    assert_eq!(image_of(&carts_2), "carts-2");
    assert_eq!(orders_2.revision.as_deref(), Some(&*pushed));
    assert!(
        orders_2.origin.starts_with(&pushed[..12]),
        "{}",
        orders_2.origin
    );
    assert!(Arc::ptr_eq(&orders_2.compiled, &orders.compiled));
    assert_eq!(source.config_compiles.get(), 3, "carts' new config only");
    let reads = source.config_reads.get();
    assert!(reads >= 4, "each config is read at each commit: {reads}");

    // Back to carts' first config, still in use: read at the new commit, not compiled.
    repo.write("carts/job/config.yaml", &config_of(40, "carts-1"));
    repo.commit("carts reverted");
    wait_for_the_push();
    let carts_3 = lookup("carts");
    assert!(Arc::ptr_eq(&carts_3.compiled, &carts.compiled));
    assert_eq!(source.config_compiles.get(), 3);
    assert!(source.config_reads.get() > reads);
}

#[test]
fn paths_without_a_config_and_broken_configs_are_bounded_apart_from_the_compiled_configs() {
    let loaded = loaded_config("one");
    let key = |n: usize| {
        (
            ObjectId::null(gix::hash::Kind::Sha1),
            format!("s{n}/job/config.yaml"),
        )
    };
    let mut cache = ConfigCache::default();
    cache.keep(key(0), &Ok(Some(loaded.clone())), None);
    for n in 1..=ABSENT_CACHE_ENTRIES {
        cache.keep(key(n), &Ok(None), None);
    }
    assert!(matches!(cache.get(&key(1)), Some(Ok(None))));
    // One more absent path drops the absent ones, not the compiled config.
    cache.keep(key(ABSENT_CACHE_ENTRIES + 1), &Ok(None), None);
    assert!(cache.get(&key(1)).is_none());
    assert!(matches!(
        cache.get(&key(ABSENT_CACHE_ENTRIES + 1)),
        Some(Ok(None))
    ));
    // Broken configs have their own bound too.
    let broken = |n: usize| (ObjectId::null(gix::hash::Kind::Sha1), format!("b{n}"));
    let error = SourceError::MissingField("stage");
    for n in 0..=INVALID_CACHE_ENTRIES {
        cache.keep(broken(n), &Err(error.clone()), None);
    }
    assert!(cache.get(&broken(0)).is_none());
    assert_eq!(
        cache
            .get(&broken(INVALID_CACHE_ENTRIES))
            .unwrap()
            .unwrap_err(),
        error
    );
    assert!(matches!(
        cache.get(&key(ABSENT_CACHE_ENTRIES + 1)),
        Some(Ok(None))
    ));
    assert!(Arc::ptr_eq(
        &cache.get(&key(0)).unwrap().unwrap().unwrap(),
        &loaded
    ));
}

#[test]
fn past_the_bound_the_compiled_configs_nothing_uses_go_first() {
    let blob = |n: usize| {
        let bytes = [[n as u8; 10], [(n >> 8) as u8; 10]].concat();
        ObjectId::from_bytes_or_panic(&bytes)
    };
    let fill = |cache: &mut ConfigCache, from: usize| -> Vec<Arc<CompiledConfig>> {
        (from..from + CONFIG_CACHE_ENTRIES)
            .map(|n| {
                let compiled = loaded_config("one").compiled.clone();
                cache.keep_compiled(blob(n), &compiled);
                compiled
            })
            .collect()
    };
    let mut cache = ConfigCache::default();
    // Half of them still in use.
    let used: Vec<_> = fill(&mut cache, 0).into_iter().step_by(2).collect();
    let next = loaded_config("next").compiled.clone();
    cache.keep_compiled(blob(CONFIG_CACHE_ENTRIES), &next);
    assert_eq!(cache.compiled.map.len(), used.len() + 1);
    assert!(
        (0..CONFIG_CACHE_ENTRIES)
            .step_by(2)
            .all(|n| cache.compiled(&blob(n)).is_some())
    );
    assert!(cache.compiled(&blob(1)).is_none());

    // All in use: all kept, since they are alive anyway; swept again at twice as many, when
    // those nothing uses any more go.
    let mut cache = ConfigCache::default();
    let mut used = fill(&mut cache, 0);
    cache.keep_compiled(blob(CONFIG_CACHE_ENTRIES), &next);
    assert_eq!(cache.compiled.map.len(), CONFIG_CACHE_ENTRIES + 1);
    used.truncate(10);
    let more = fill(&mut cache, CONFIG_CACHE_ENTRIES + 1);
    assert!((0..10).all(|n| cache.compiled(&blob(n)).is_some()));
    assert!(cache.compiled(&blob(10)).is_none());
    assert!(cache.compiled.map.len() <= 10 + 2 + more.len());
    drop((used, more));
}

#[test]
fn past_the_bound_the_configs_at_the_heads_and_those_read_ahead_stay() {
    let commit = |n: u8| ObjectId::from_bytes_or_panic(&[n; 20]);
    let (head, pinned, old, new) = (commit(1), commit(2), commit(3), commit(4));
    let heads = RemoteHeads {
        branches: HashMap::from([("main".to_string(), head)]),
        ..RemoteHeads::default()
    };
    let key = |commit: ObjectId, n: usize| (commit, format!("s{n}/job/config.yaml"));
    let loaded = loaded_config("one");
    let mut cache = ConfigCache::default();
    let in_use = CONFIG_CACHE_ENTRIES * 3 / 4;
    for n in 0..in_use {
        cache.keep(key(head, n), &Ok(Some(loaded.clone())), Some(&heads));
    }
    for n in in_use..CONFIG_CACHE_ENTRIES + 10 {
        cache.keep(key(pinned, n), &Ok(Some(loaded.clone())), Some(&heads));
        cache.keep(key(pinned, n), &Ok(None), Some(&heads));
    }
    // Passing the bound dropped the pinned commit's configs, not those at the head.
    assert!((0..in_use).all(|n| cache.found.map.contains_key(&key(head, n))));
    assert!(cache.found.map.len() < CONFIG_CACHE_ENTRIES);
    assert!(
        cache
            .found
            .map
            .contains_key(&key(pinned, CONFIG_CACHE_ENTRIES + 9))
    );

    // A read ahead at the new head of a branch that moved, not recorded yet: what it reads
    // stays, and so does what was read at the head it replaces (lookups read that one until
    // the new head is recorded); once it is, what is at the old head goes at the next sweep.
    let heads = RemoteHeads {
        branches: HashMap::from([("main".to_string(), old), ("prod".to_string(), head)]),
        ..RemoteHeads::default()
    };
    let mut cache = ConfigCache::default();
    for n in 0..in_use {
        cache.keep(key(old, n), &Ok(Some(loaded.clone())), Some(&heads));
    }
    cache.keep(key(head, 0), &Ok(Some(loaded.clone())), Some(&heads));
    cache.ahead = vec![new];
    for n in 0..in_use {
        cache.keep(key(new, n), &Ok(Some(loaded.clone())), Some(&heads));
    }
    assert!((0..in_use).all(|n| cache.found.map.contains_key(&key(new, n))));
    assert!((0..in_use).all(|n| cache.found.map.contains_key(&key(old, n))));
    assert!(
        cache.found.map.contains_key(&key(head, 0)),
        "prod did not move"
    );
    cache.ahead.clear();
    let heads = RemoteHeads {
        branches: HashMap::from([("main".to_string(), new), ("prod".to_string(), head)]),
        ..RemoteHeads::default()
    };
    let mut pinned_reads = 0;
    while cache.found.map.contains_key(&key(old, 0)) {
        assert!(pinned_reads < 3 * in_use, "the old head's configs stay");
        cache.keep(
            key(pinned, pinned_reads),
            &Ok(Some(loaded.clone())),
            Some(&heads),
        );
        pinned_reads += 1;
    }
    assert!((0..in_use).all(|n| !cache.found.map.contains_key(&key(old, n))));
    assert!((0..in_use).all(|n| cache.found.map.contains_key(&key(new, n))));
    assert!(
        cache.found.map.contains_key(&key(head, 0)),
        "prod did not move"
    );

    // More in use at the heads than the bound: all kept, however many; the others go when
    // as many again are kept.
    let mut cache = ConfigCache::default();
    let in_use = CONFIG_CACHE_ENTRIES + 50;
    for n in 0..in_use {
        cache.keep(key(head, n), &Ok(Some(loaded.clone())), Some(&heads));
    }
    assert_eq!(cache.found.map.len(), in_use);
    for n in 0..2 * in_use {
        cache.keep(key(pinned, n), &Ok(Some(loaded.clone())), Some(&heads));
        assert!((0..in_use).all(|n| cache.found.get(&key(head, n)).is_some()));
        assert!(cache.found.map.len() <= 3 * in_use, "{n}");
    }
    assert!(cache.found.get(&key(pinned, 0)).is_none());
    assert!(cache.found.get(&key(pinned, 2 * in_use - 1)).is_some());

    // Paths with no config are bounded at the heads too (any service name an event makes up
    // adds one): past the bound they are forgotten, not the configs.
    for n in 0..=ABSENT_CACHE_ENTRIES {
        cache.keep(key(head, in_use + n), &Ok(None), Some(&heads));
    }
    assert_eq!(cache.absent.map.len(), 1);
    assert!((0..in_use).all(|n| cache.found.get(&key(head, n)).is_some()));
}

#[test]
fn lookups_from_memory_are_remembered_by_each_thread_until_the_heads_move() {
    let repo = TestRepo::new("remembered");
    repo.write("carts/job/config.yaml", &config_with_image("first", "[]"));
    repo.commit("first");
    let cache_dir = repo.dir.with_extension("cache");
    let _ = std::fs::remove_dir_all(&cache_dir);
    let interval = Duration::from_millis(700);
    let source = open_source(&repo.url(), &cache_dir, &[], interval).unwrap();
    let inspect = |source: &GitSource, pin: Option<&str>| {
        source.inspect_in_memory(service("main", "carts").name(), pin, |service, found| {
            assert_eq!(service.to_owned(), self::service("main", "carts"));
            found.map(|found| found.config.clone().expect("carts has a config"))
        })
    };
    let forget_compiled =
        |source: &GitSource| source.configs.known.lock().unwrap().found.map.clear();
    let first = found(&source, "main", "carts", None);
    let fetched_at = Instant::now();
    assert!(Arc::ptr_eq(&inspect(&source, None).unwrap(), &first));

    // Remembered by this thread: answered without the compiled configs, which a lookup reads.
    forget_compiled(&source);
    assert!(Arc::ptr_eq(&inspect(&source, None).unwrap(), &first));
    assert_eq!(
        source
            .load(&service("main", "carts"), None, Reads::Memory)
            .unwrap_err(),
        SourceError::NotInMemory
    );
    // Not by another thread, nor for another source of the same repository.
    let elsewhere = std::thread::scope(|s| s.spawn(|| inspect(&source, None)).join().unwrap());
    assert_eq!(elsewhere.unwrap_err(), SourceError::NotInMemory);
    let other_dir = repo.dir.with_extension("cache-other");
    let _ = std::fs::remove_dir_all(&other_dir);
    let other = open_source(&repo.url(), &other_dir, &[], interval).unwrap();
    assert_eq!(inspect(&other, None).unwrap_err(), SourceError::NotInMemory);
    // A fetch recording what it found: not from memory, as when nothing is remembered.
    assert_eq!(
        source
            .cache
            .while_heads_held(true, || inspect(&source, None))
            .unwrap_err(),
        SourceError::NotInMemory
    );
    // The fetch moved the heads on: what was remembered at the old ones is not used.
    assert_eq!(
        inspect(&source, None).unwrap_err(),
        SourceError::NotInMemory
    );

    // Due for a fetch: not from memory, however recently remembered.
    let again = found(&source, "main", "carts", None);
    assert!(Arc::ptr_eq(&inspect(&source, None).unwrap(), &again));
    std::thread::sleep(interval.saturating_sub(fetched_at.elapsed()) + interval);
    assert_eq!(
        inspect(&source, None).unwrap_err(),
        SourceError::NotInMemory
    );
    // Fetched again after a commit: the new config, not the remembered one.
    repo.write("carts/job/config.yaml", &config_with_image("second", "[]"));
    let second_commit = repo.commit("second");
    let second = found(&source, "main", "carts", None);
    assert_eq!(image_of(&second), "second");
    assert!(Arc::ptr_eq(&inspect(&source, None).unwrap(), &second));

    // A pinned commit holds what it holds: remembered past the heads' interval.
    let pinned = found(&source, "main", "carts", Some(&second_commit));
    assert!(Arc::ptr_eq(
        &inspect(&source, Some(&second_commit)).unwrap(),
        &pinned
    ));
    forget_compiled(&source);
    std::thread::sleep(interval + Duration::from_millis(100));
    assert!(Arc::ptr_eq(
        &inspect(&source, Some(&second_commit)).unwrap(),
        &pinned
    ));
    assert_eq!(
        inspect(&source, None).unwrap_err(),
        SourceError::NotInMemory
    );
}

/// More configs in use than the bound, and a push to one: all are kept, and answer from
/// memory; the read ahead reads them all at the new head and keeps them, though with those at
/// the old head they are twice the bound, and compiles only the one that changed, though the
/// configs at the old head that had compiled the others go.
#[test]
fn more_configs_in_use_than_the_bound_stay_and_a_read_ahead_compiles_only_what_changed() {
    let repo = TestRepo::new("ahead-many");
    let services: Vec<String> = (0..CONFIG_CACHE_ENTRIES + 44)
        .map(|n| format!("s{n}"))
        .collect();
    for name in &services {
        let config = config_with_image(&format!("{name}-1"), "[]");
        repo.write(&format!("{name}/job/config.yaml"), &config);
    }
    repo.commit("first");
    let cache_dir = repo.dir.with_extension("cache");
    let _ = std::fs::remove_dir_all(&cache_dir);
    // Room for 300 reads and 300 lookups before the fetch ahead is due (about 0.6 s, 1.2 s on
    // a loaded machine), and they must not start it before the push.
    let interval = Duration::from_secs(8);
    let opened = open_source(&repo.url(), &cache_dir, &[], interval).unwrap();
    let source = &opened.source;
    let image = |name: &str, reads: Reads| {
        let found = source.load(&service("main", name), None, reads)?;
        Ok::<_, SourceError>(image_of(&found.config.expect("a config")).to_string())
    };
    let asked = Instant::now();
    for name in &services {
        assert_eq!(image(name, Reads::Any).unwrap(), format!("{name}-1"));
    }
    let in_use = services.len() as u64;
    assert_eq!(opened.config_compiles.get(), in_use);
    for name in &services {
        assert_eq!(
            image(name, Reads::Memory),
            Ok(format!("{name}-1")),
            "{name}"
        );
    }
    assert_eq!(opened.config_reads.get(), in_use);
    repo.write("s0/job/config.yaml", &config_with_image("s0-2", "[]"));
    repo.commit("s0 changed");

    fetch_ahead_after(&opened, asked + interval * 3 / 4, || {
        let _ = image("s1", Reads::Memory);
    });
    for name in &services {
        let expected = if name == "s0" {
            "s0-2"
        } else {
            &*format!("{name}-1")
        };
        assert_eq!(
            image(name, Reads::Memory),
            Ok(expected.to_string()),
            "{name}"
        );
    }
    assert_eq!(opened.config_reads.get(), 2 * in_use);
    assert_eq!(opened.config_compiles.get(), in_use + 1);
}

/// Waits for the last quarter of the fetch interval (`due_soon`), then makes lookups
/// (`lookup`) until one of them has started a fetch ahead and it succeeded.
fn fetch_ahead_after(opened: &Opened, due_soon: Instant, lookup: impl Fn()) {
    let fetched = fetch_count(&opened.fetches);
    std::thread::sleep(due_soon.saturating_duration_since(Instant::now()));
    let deadline = Instant::now() + Duration::from_secs(20);
    while fetch_count(&opened.fetches) == fetched {
        lookup();
        assert!(Instant::now() < deadline, "no fetch ahead");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A Keptn project of three stages, each stage's branch with the same configs for 100
/// services: every stage's configs are kept (300, past the bound), compiled once for all
/// stages (a file's content is compiled once), and a push to one stage reads that stage's
/// again, not the others'.
#[test]
fn every_stage_s_configs_stay_and_a_push_to_one_stage_reads_only_its_own() {
    let repo = TestRepo::new("stages");
    let (stages, services) = (["dev", "staging", "production"], 100);
    let name = |n: usize| format!("s{n}");
    for n in 0..services {
        let config = config_with_image(&name(n), "[]");
        repo.write(&format!("{}/job/config.yaml", name(n)), &config);
    }
    repo.commit("services");
    // Each stage's branch a commit of its own, as Keptn's are.
    for stage in stages {
        repo.git(&["checkout", "-q", "-b", stage, "main"]);
        repo.commit(stage);
    }
    let cache_dir = repo.dir.with_extension("cache");
    let _ = std::fs::remove_dir_all(&cache_dir);
    let interval = Duration::from_secs(8);
    let opened = open_source(&repo.url(), &cache_dir, &[], interval).unwrap();
    let image = |stage: &str, n: usize, reads: Reads| {
        let found = opened.source.load(&service(stage, &name(n)), None, reads)?;
        Ok::<_, SourceError>(image_of(&found.config.expect("a config")).to_string())
    };
    let asked = Instant::now();
    for stage in stages {
        for n in 0..services {
            assert_eq!(image(stage, n, Reads::Any), Ok(name(n)));
        }
    }
    let in_use = (stages.len() * services) as u64;
    assert_eq!(opened.config_reads.get(), in_use);
    assert_eq!(opened.config_compiles.get(), services as u64);
    for stage in stages {
        for n in 0..services {
            assert_eq!(image(stage, n, Reads::Memory), Ok(name(n)), "{stage} {n}");
        }
    }

    repo.git(&["checkout", "-q", "staging"]);
    repo.write("s0/job/config.yaml", &config_with_image("s0-staged", "[]"));
    repo.commit("s0 changed in staging");
    fetch_ahead_after(&opened, asked + interval * 3 / 4, || {
        let _ = image("dev", 1, Reads::Memory);
    });
    for stage in stages {
        for n in 0..services {
            let expected = match (stage, n) {
                ("staging", 0) => "s0-staged".to_string(),
                _ => name(n),
            };
            assert_eq!(image(stage, n, Reads::Memory), Ok(expected), "{stage} {n}");
        }
    }
    assert_eq!(opened.config_reads.get(), in_use + services as u64);
    assert_eq!(opened.config_compiles.get(), services as u64 + 1);
}

/// Under a steady stream of lookups no lookup waits for a fetch: once a quarter of the interval
/// is left, a lookup starts a fetch ahead and reads the heads it has, and the lookups after the
/// fetch read its heads. A fetch ahead that fails is tried once, and the heads it could not
/// renew still serve until they are due.
#[test]
fn heads_due_soon_are_fetched_ahead_while_lookups_read_the_ones_they_have() {
    let repo = TestRepo::new("ahead");
    repo.write("carts/job/config.yaml", &config_with_image("first", "[]"));
    repo.commit("first");
    let cache_dir = repo.dir.with_extension("cache");
    let _ = std::fs::remove_dir_all(&cache_dir);
    let interval = Duration::from_secs(4);
    let opened = open_source(&repo.url(), &cache_dir, &[], interval).unwrap();
    let source = &opened.source;
    let image = |reads: Reads| {
        source
            .load(&service("main", "carts"), None, reads)
            .map(|found| (image_of(&found.config.unwrap()).to_string(), found.stale))
    };
    let fresh = |name: &str| Ok((name.to_string(), None));
    // A service with no config: its lookup reads two paths, and finds nothing at either.
    let orders = |reads: Reads| {
        source
            .load(&service("main", "orders"), None, reads)
            .map(|found| found.config.is_none())
    };
    let asked = Instant::now();
    assert_eq!(image(Reads::Any), fresh("first"));
    assert_eq!(orders(Reads::Any), Ok(true));
    assert_eq!(opened.config_reads.get(), 3);
    repo.write("carts/job/config.yaml", &config_with_image("second", "[]"));
    repo.commit("second");
    // Early in the interval: the heads as fetched, no fetch ahead.
    for _ in 0..3 {
        assert_eq!(image(Reads::Memory), fresh("first"));
    }
    assert_eq!(fetch_count(&opened.fetches), 1);

    // The last quarter: a lookup reads the heads it has, and the fetch runs beside it. Until
    // that fetch recorded its heads, every lookup reads the first ones from memory.
    std::thread::sleep((asked + interval * 3 / 4).saturating_duration_since(Instant::now()));
    // The fetch ahead starts after this: its heads are fresh for the interval from then.
    let ahead = Instant::now();
    let deadline = ahead + Duration::from_secs(20);
    loop {
        let fetched_before = fetch_count(&opened.fetches);
        let read = image(Reads::Memory);
        if fetched_before == 2 {
            break;
        }
        if fetch_count(&opened.fetches) == 1 {
            assert_eq!(read, fresh("first"));
        } else {
            // Just fetched: the first heads, the second (with the config read ahead), or none
            // from memory while the fetch was recording them.
            assert!(
                read == fresh("first")
                    || read == fresh("second")
                    || read == Err(SourceError::NotInMemory),
                "{read:?}"
            );
        }
        assert!(Instant::now() < deadline, "no fetch ahead");
        std::thread::sleep(Duration::from_millis(10));
    }
    // Its heads, and what the lookups before it read, read ahead at them before it recorded
    // them: from memory, the new config and the absent ones, with nothing read since.
    assert_eq!(image(Reads::Memory), fresh("second"));
    assert_eq!(orders(Reads::Memory), Ok(true));
    assert_eq!(opened.config_reads.get(), 6);
    assert_eq!(image(Reads::Any), fresh("second"));
    assert_eq!(fetch_count(&opened.fetches), 2);

    // A fetch ahead that fails: tried once, and the heads serve, not stale, until they are due.
    let away = repo.dir.with_extension("away");
    let _ = std::fs::remove_dir_all(&away);
    std::fs::rename(&repo.dir, &away).unwrap();
    std::thread::sleep((ahead + interval * 3 / 4).saturating_duration_since(Instant::now()));
    let deadline = Instant::now() + Duration::from_secs(20);
    while failed_fetches(&opened.fetches) < 1 {
        assert_eq!(image(Reads::Memory), fresh("second"));
        assert!(Instant::now() < deadline, "no fetch ahead");
        std::thread::sleep(Duration::from_millis(10));
    }
    for _ in 0..10 {
        assert_eq!(image(Reads::Memory), fresh("second"));
    }
    // Due: the failure stands for the interval from when it happened, so nothing is fetched
    // and the heads read are stale.
    let deadline = Instant::now() + Duration::from_secs(20);
    while image(Reads::Any).unwrap().1.is_none() {
        assert!(Instant::now() < deadline, "the heads never came due");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(
        (
            failed_fetches(&opened.fetches),
            fetch_count(&opened.fetches)
        ),
        (1, 2)
    );
    std::fs::rename(&away, &repo.dir).unwrap();
}

/// Many fetches that each bring a commit: every one writes a pack, and every commit is read.
#[test]
fn many_fetches_each_bringing_a_commit_are_all_read() {
    let repo = TestRepo::new("many-fetches");
    repo.write("carts/job/config.yaml", &config_with_image("v0", "[]"));
    repo.commit("v0");
    let (source, _) = source_for(&repo, &[]);
    for round in 1..=80 {
        repo.write(
            "carts/job/config.yaml",
            &config_with_image(&format!("v{round}"), "[]"),
        );
        let commit = repo.commit(&format!("v{round}"));
        let loaded = found(&source, "main", "carts", Some(&commit));
        assert_eq!(image_of(&loaded), format!("v{round}"), "round {round}");
    }
}

/// With `--git-pin-commits false`, an event's `gitcommitid` (a commit of Keptn's upstream,
/// which a repository of configs apart from it has not) is not read: the branch heads are.
#[test]
fn commits_not_pinned_read_the_branch_heads_whatever_the_event_pins() {
    let repo = TestRepo::new("unpinned");
    repo.write("carts/job/config.yaml", &config_with_image("head", "[]"));
    repo.commit("head");
    let cache_dir = repo.dir.with_extension("cache");
    let _ = std::fs::remove_dir_all(&cache_dir);
    let open = |pin_commits: bool| {
        GitSource::open(GitSettings {
            url: repo.url(),
            lookups: vec!["main:{service}/job/config.yaml".into()],
            files_from: None,
            pin_commits,
            credentials: CredentialSettings::default(),
            fetch_interval: Duration::from_secs(3600),
            cache_dir: cache_dir.join(if pin_commits { "pinned" } else { "unpinned" }),
            limits: FetchLimits::default(),
            metrics: GitMetrics::default(),
        })
        .unwrap()
    };
    let elsewhere = Some("0123456789abcdef0123456789abcdef01234567");
    let error = open(true)
        .load(&service("dev", "carts"), elsewhere, Reads::Any)
        .unwrap_err();
    assert!(
        error.to_string().starts_with("commit 0123456789abcdef"),
        "{error}"
    );
    let found = open(false)
        .load(&service("dev", "carts"), elsewhere, Reads::Any)
        .unwrap();
    assert_eq!(image_of(found.config.as_ref().unwrap()), "head");
}

/// A branch deleted and another pushed under its name as a directory (`release`, then
/// `release/2.0`): the clone's ref of the deleted branch is pruned, and fetches go on.
#[test]
fn a_branch_renamed_into_a_directory_of_its_name_is_fetched() {
    let repo = TestRepo::new("renamed");
    repo.write("carts/job/config.yaml", &config_with_image("v1", "[]"));
    repo.commit("v1");
    repo.git(&["branch", "release"]);
    let (source, fetches) = source_for(&repo, &[]);
    let heads = source.cache.heads(Instant::now(), Duration::ZERO).unwrap();
    assert!(heads.branch("release").is_some());
    repo.git(&["branch", "-D", "release"]);
    repo.git(&["branch", "release/2.0"]);
    let heads = source.cache.heads(Instant::now(), Duration::ZERO).unwrap();
    assert!(heads.branch("release/2.0").is_some(), "{heads:?}");
    assert!(heads.branch("release").is_none());
    // And back: the directory left empty is no obstacle either.
    repo.git(&["branch", "-D", "release/2.0"]);
    repo.git(&["branch", "release"]);
    let heads = source.cache.heads(Instant::now(), Duration::ZERO).unwrap();
    assert!(heads.branch("release").is_some(), "{heads:?}");
    assert_eq!(failed_fetches(&fetches), 0);
}
