//! The files a run stages: each task's `files` entries expanded (a directory brings everything
//! below it) from a [`FileTree`] — the service's directory, or a directory of a commit — each
//! file read once and given a ConfigMap key, within what one ConfigMap can hold.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use crate::config::Task;

/// The most bytes (file contents plus their keys) the run's ConfigMap may hold. The API server
/// refuses ConfigMaps over 1 MiB (1,048,576 bytes of keys and raw values); this leaves room for
/// the object's metadata. In the JSON request `binaryData` is base64, about 4/3 of this
/// (≈1.34 MB), well below the API server's 3 MiB request limit.
pub const CONFIG_MAP_LIMIT_BYTES: u64 = 1_000_000;

/// The most bytes a run's lists of files may take: each task's list is written in the run's
/// JobRun (`{"key":…,"path":…,"executable":false}`) and again in the task's Job and pod, as items
/// of the files volume. The API server stores an object of at most 1.5 MiB (etcd's request
/// limit); a third of it leaves room for the rest of the JobRun (its event, its status). Many
/// small files reach it before the ConfigMap's limit: 10,000 files with paths of 20 characters
/// list in about 880 KB.
pub const LISTS_LIMIT_BYTES: u64 = 512 * 1024;

/// What a file's entry in a list takes beside its key and path, in the JSON of a JobRun (more
/// than an item of a Job's volume, `{"key":…,"path":…,"mode":420}`).
const LISTED_OVERHEAD_BYTES: u64 = 40;

/// How many of the largest files a size error names.
const LARGEST_LISTED: usize = 5;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilesError {
    #[error("task '{task}': file or directory \"{path}\" not found in {place}")]
    Missing {
        task: String,
        path: String,
        place: String,
    },
    #[error(
        "task '{task}': \"{path}\" in {place} brings no file to stage (an empty directory, links \
         to nothing, submodules or .git only)"
    )]
    Empty {
        task: String,
        path: String,
        place: String,
    },
    #[error("task '{task}': \"{path}\" is a link that leads outside {root}")]
    Escapes {
        task: String,
        path: String,
        root: String,
    },
    #[error(
        "task '{task}': \"{path}\" is not a path inside the service directory (it climbs out with `..`, or names nothing)"
    )]
    NotRelative { task: String, path: String },
    #[error(
        "the files of this run total {total} bytes{more}, more than the {limit} bytes one ConfigMap can hold; the largest: {largest}",
        more = if *.counted_all { "" } else { " or more (counted until past the limit)" }
    )]
    TooLarge {
        total: u64,
        limit: u64,
        largest: String,
        /// Whether every entry was expanded (not stopped once past the limit).
        counted_all: bool,
    },
    #[error(
        "the tasks of this run list {files} files, which take {bytes} bytes in its JobRun and Jobs, more than the {limit} bytes allowed (the API server stores objects of at most 1.5 MiB); stage fewer files, e.g. an archive of them"
    )]
    TooManyToList {
        files: usize,
        bytes: u64,
        limit: u64,
    },
    #[error("cannot read {path}: {reason}")]
    Unreadable { path: String, reason: String },
    /// The store that holds the files failed to read them (the clone's packs), not what they
    /// are: tried again.
    #[error("cannot read {path} from the clone cache now: {reason}")]
    Store { path: String, reason: String },
}

impl FilesError {
    /// A failure that may pass by itself (the store failed, not the files).
    pub fn is_transient(&self) -> bool {
        matches!(self, FilesError::Store { .. })
    }
}

/// A file of the run's ConfigMap: its key there, and its path under `/keptn`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StagedFile {
    pub key: String,
    pub path: String,
    pub executable: bool,
}

/// One file of a run, with its content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunFile {
    pub staged: StagedFile,
    pub content: Vec<u8>,
}

/// The files of every task of a run: each distinct file once, and per task which ones it
/// mounts.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RunFiles {
    pub files: Vec<RunFile>,
    pub per_task: Vec<Vec<StagedFile>>,
}

/// A file an entry names, found but not read yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundFile<H> {
    /// Relative to the tree's directory: where it lands under `/keptn`.
    pub path: String,
    pub executable: bool,
    pub size: u64,
    pub handle: H,
}

/// Why an entry cannot be expanded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExpandError {
    Missing,
    /// A link (at this relative path) leads outside the tree's root.
    Escapes(String),
    Unreadable {
        path: String,
        reason: String,
    },
    /// The store failed to read (not the tree's content): tried again.
    Store {
        path: String,
        reason: String,
    },
}

/// The most entries (files, directories, links) expanding the `files` entries of a run's tasks
/// walks, all entries together: more than the files one ConfigMap can hold (each takes at least
/// 7 bytes of it past the ten-thousandth, key and all), so only a tree that fans out (links side
/// by side to the same directory, level under level) reaches it. Counted per run, not per entry:
/// a config listing many links to one large directory had each walked to the bound.
pub const MOST_ENTRIES_WALKED: u64 = 200_000;

/// The entries expanding a run's `files` entries has walked, stopped as soon as they are too
/// many: a tree of links fanning out would otherwise be walked, and its files listed, by the
/// billion before the run's size is checked.
#[derive(Debug)]
pub struct ExpandBudget {
    entries: u64,
    most: u64,
}

impl Default for ExpandBudget {
    fn default() -> Self {
        ExpandBudget::most(MOST_ENTRIES_WALKED)
    }
}

impl ExpandBudget {
    /// A budget of `most` entries (tests walk fewer than the bound).
    pub fn most(most: u64) -> Self {
        ExpandBudget { entries: 0, most }
    }

    /// Counts an entry walked at `path`.
    pub fn walk(&mut self, path: &str) -> Result<(), ExpandError> {
        self.entries += 1;
        if self.entries > self.most {
            return Err(ExpandError::Unreadable {
                path: path.to_string(),
                reason: format!(
                    "more than {} files, directories and links walked for the files of this \
                     run (links that fan out?)",
                    self.most
                ),
            });
        }
        Ok(())
    }
}

/// Where task files are read from: a directory on disk, or a directory of a git commit.
pub trait FileTree {
    /// What [`FileTree::read`] needs to read a found file.
    type Handle;
    /// Where entries are looked up, for messages (`/srv/configs/carts`, `carts at commit 1a2b…`).
    fn place(&self) -> String;
    /// What links may not leave, for messages.
    fn root(&self) -> String;
    /// The files a (relative, normalized) entry names: itself, or everything below it, walking
    /// at most what is left of `budget`.
    fn expand(
        &self,
        entry: &str,
        budget: &mut ExpandBudget,
    ) -> Result<Vec<FoundFile<Self::Handle>>, ExpandError>;
    fn read(&self, file: &FoundFile<Self::Handle>) -> Result<Vec<u8>, FilesError>;
}

/// The ConfigMap key of the `index`-th file: valid key characters, unique by the index prefix.
pub fn config_map_key(index: usize, path: &str) -> String {
    let sanitized: String = path
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let mut key = format!("{index}-{sanitized}");
    key.truncate(253);
    key
}

const NOT_UTF8_NAME: &str = "its name is not UTF-8 (or holds U+FFFD, as such a name reads), and \
                             a staged file's path is text (two such names could read as one)";

/// Why a name read from a directory (a git tree's, decoded as UTF-8 with U+FFFD for what is
/// not) cannot be staged, if it cannot: a file's path in the files volume is text, and
/// Kubernetes refuses `..` in it.
pub fn unstageable_name(name: &str) -> Option<&'static str> {
    if name.contains('\u{FFFD}') {
        Some(NOT_UTF8_NAME)
    } else if matches!(name, "" | "." | "..") || name.contains('/') {
        Some("a name no directory entry has (`..`, `.`, a `/` in it): the tree was made by hand")
    } else {
        None
    }
}

/// Whether `key` is a valid ConfigMap (or Secret) key: `[-._a-zA-Z0-9]+`, at most 253
/// characters, not `.` and not starting with `..` (as Kubernetes checks them).
pub fn is_config_map_key(key: &str) -> bool {
    !key.is_empty()
        && key != "."
        && !key.starts_with("..")
        && key.len() <= 253
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// Whether the link at `path`, which leads to nothing, would lead out of `root` (absolute, or
/// climbing out), which git's tree refuses too.
fn dangling_link_escapes(path: &Path, root: &Path) -> bool {
    let (Ok(target), Some(parent)) = (fs::read_link(path), path.parent()) else {
        return false;
    };
    if target.is_absolute() {
        return true;
    }
    let Ok(mut resolved) = fs::canonicalize(parent) else {
        return false;
    };
    for component in target.components() {
        match component {
            Component::ParentDir => {
                resolved.pop();
            }
            Component::Normal(part) => resolved.push(part),
            _ => {}
        }
    }
    !resolved.starts_with(root)
}

/// An entry as a clean relative path (`./a//b/` → `a/b`, `/helm` → `helm`), or `None` when it
/// climbs with `..` or names nothing: Kubernetes refuses such paths in a volume's `items`.
pub fn normalize_entry(entry: &str) -> Option<String> {
    let mut parts = Vec::new();
    for component in Path::new(entry).components() {
        match component {
            Component::Normal(part) => parts.push(part.to_str()?),
            // A leading `/` means the service directory, as in the old service.
            Component::CurDir | Component::RootDir => {}
            Component::ParentDir | Component::Prefix(_) => return None,
        }
    }
    (!parts.is_empty()).then(|| parts.join("/"))
}

/// Expands every task's entries from `tree`, checks the total against what a ConfigMap holds,
/// then reads each distinct file once.
pub fn collect<T: FileTree>(tree: &T, tasks: &[Task]) -> Result<RunFiles, FilesError> {
    collect_within(tree, tasks, ExpandBudget::default())
}

/// [`collect`], walking at most what `budget` allows (tests walk fewer than the bound).
fn collect_within<T: FileTree>(
    tree: &T,
    tasks: &[Task],
    mut budget: ExpandBudget,
) -> Result<RunFiles, FilesError> {
    let mut found: Vec<FoundFile<T::Handle>> = Vec::new();
    // What the files found so far take of the ConfigMap: past its limit the run is refused
    // at once, not after every entry is expanded and listed.
    let mut taken: u64 = 0;
    let mut by_path: BTreeMap<String, usize> = BTreeMap::new();
    let mut per_task_indices: Vec<Vec<usize>> = Vec::new();
    // What each entry brought, by its normal form: an entry listed again (by another task, or
    // thousands of times over in one config) is not walked again.
    let mut expanded: std::collections::HashMap<String, Vec<usize>> =
        std::collections::HashMap::new();
    for (task_index, task) in tasks.iter().enumerate() {
        let task_name = task.display_name(task_index);
        let mut indices = Vec::new();
        // A task lists each file once, in the order its entries bring them.
        let mut listed = std::collections::HashSet::new();
        for (entry_index, raw) in task.files.iter().enumerate() {
            let Some(entry) = normalize_entry(raw) else {
                return Err(FilesError::NotRelative {
                    task: task_name,
                    path: raw.clone(),
                });
            };
            if let Some(brought) = expanded.get(&entry) {
                for &index in brought {
                    if listed.insert(index) {
                        indices.push(index);
                    }
                }
                continue;
            }
            let files = tree
                .expand(&entry, &mut budget)
                .map_err(|problem| match problem {
                    ExpandError::Missing => FilesError::Missing {
                        task: task_name.clone(),
                        path: entry.clone(),
                        place: tree.place(),
                    },
                    ExpandError::Escapes(path) => FilesError::Escapes {
                        task: task_name.clone(),
                        path,
                        root: tree.root(),
                    },
                    ExpandError::Unreadable { path, reason } => {
                        FilesError::Unreadable { path, reason }
                    }
                    ExpandError::Store { path, reason } => FilesError::Store { path, reason },
                })?;
            // As Keptn's service, which failed a task whose entry found no file: the task
            // would start without the files it names.
            if files.is_empty() {
                return Err(FilesError::Empty {
                    task: task_name,
                    path: entry,
                    place: tree.place(),
                });
            }
            let mut brought = Vec::with_capacity(files.len());
            for file in files {
                let index = match by_path.get(&file.path) {
                    Some(index) => *index,
                    None => {
                        let index = found.len();
                        taken += file.size + config_map_key(index, &file.path).len() as u64;
                        by_path.insert(file.path.clone(), index);
                        found.push(file);
                        index
                    }
                };
                brought.push(index);
                if listed.insert(index) {
                    indices.push(index);
                }
            }
            if taken > CONFIG_MAP_LIMIT_BYTES {
                let left = task.files.len() - entry_index - 1
                    + tasks[task_index + 1..]
                        .iter()
                        .map(|task| task.files.len())
                        .sum::<usize>();
                check_size(&found, left == 0)?;
            }
            expanded.insert(entry, brought);
        }
        per_task_indices.push(indices);
    }
    check_size(&found, true)?;
    let mut run = RunFiles::default();
    for (index, file) in found.iter().enumerate() {
        run.files.push(RunFile {
            staged: StagedFile {
                key: config_map_key(index, &file.path),
                path: file.path.clone(),
                executable: file.executable,
            },
            content: tree.read(file)?,
        });
    }
    run.per_task = per_task_indices
        .into_iter()
        .map(|indices| {
            indices
                .into_iter()
                .map(|i| run.files[i].staged.clone())
                .collect()
        })
        .collect();
    Ok(run)
}

/// Whether a new run's lists of files (see [`LISTS_LIMIT_BYTES`]) fit; checked when a run is
/// planned, not when a run in flight makes its ConfigMap (a run an older version accepted goes
/// on as it was planned).
pub fn check_lists(run: &RunFiles) -> Result<(), FilesError> {
    let listed = run.per_task.iter().flatten();
    let bytes: u64 = listed
        .clone()
        .map(|file| (file.key.len() + file.path.len()) as u64 + LISTED_OVERHEAD_BYTES)
        .sum();
    if bytes <= LISTS_LIMIT_BYTES {
        return Ok(());
    }
    Err(FilesError::TooManyToList {
        files: listed.count(),
        bytes,
        limit: LISTS_LIMIT_BYTES,
    })
}

fn check_size<H>(found: &[FoundFile<H>], counted_all: bool) -> Result<(), FilesError> {
    let total: u64 = found
        .iter()
        .enumerate()
        .map(|(index, file)| file.size + config_map_key(index, &file.path).len() as u64)
        .sum();
    if total <= CONFIG_MAP_LIMIT_BYTES {
        return Ok(());
    }
    let mut largest: Vec<&FoundFile<H>> = found.iter().collect();
    largest.sort_by(|a, b| b.size.cmp(&a.size).then_with(|| a.path.cmp(&b.path)));
    let listed: Vec<String> = largest
        .iter()
        .take(LARGEST_LISTED)
        .map(|file| format!("{} ({} bytes)", file.path, file.size))
        .collect();
    Err(FilesError::TooLarge {
        total,
        limit: CONFIG_MAP_LIMIT_BYTES,
        largest: listed.join(", "),
        counted_all,
    })
}

/// A service directory on disk; links may lead anywhere below `root` (the config source's top
/// directory) but not outside it.
pub struct DirTree {
    root: PathBuf,
    dir: PathBuf,
}

impl DirTree {
    pub fn new(root: &Path, dir: &Path) -> Result<Self, FilesError> {
        let root = fs::canonicalize(root).map_err(|e| unreadable(root, &e))?;
        Ok(DirTree {
            root,
            dir: dir.to_path_buf(),
        })
    }
}

fn unreadable(path: &Path, error: &std::io::Error) -> FilesError {
    FilesError::Unreadable {
        path: path.display().to_string(),
        reason: error.to_string(),
    }
}

impl FileTree for DirTree {
    type Handle = PathBuf;

    fn place(&self) -> String {
        self.dir.display().to_string()
    }

    fn root(&self) -> String {
        self.root.display().to_string()
    }

    fn expand(
        &self,
        entry: &str,
        budget: &mut ExpandBudget,
    ) -> Result<Vec<FoundFile<PathBuf>>, ExpandError> {
        let io = |path: &Path, error: std::io::Error| ExpandError::Unreadable {
            path: path.display().to_string(),
            reason: error.to_string(),
        };
        let start = self.dir.join(entry);
        if fs::symlink_metadata(&start).is_err() {
            return Err(ExpandError::Missing);
        }
        let mut found = Vec::new();
        // Each directory with the real paths of the directories it is under: a link back to
        // one of them is a loop (two links to the same directory side by side are not).
        let mut pending = vec![(entry.to_string(), start, Arc::new(Vec::new()))];
        while let Some((relative, path, above)) = pending.pop() {
            budget.walk(&self.dir.join(&relative).display().to_string())?;
            let real = match fs::canonicalize(&path) {
                Ok(real) => real,
                // A link to nothing inside the directory stages nothing, as from git; listed
                // itself, it is not found, as from git.
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                    if dangling_link_escapes(&path, &self.root) {
                        return Err(ExpandError::Escapes(relative));
                    }
                    if relative == entry {
                        return Err(ExpandError::Missing);
                    }
                    continue;
                }
                Err(error) => return Err(io(&path, error)),
            };
            if !real.starts_with(&self.root) {
                return Err(ExpandError::Escapes(relative));
            }
            // A checkout's `.git` is never staged, reached by its name or through a link.
            if real
                .strip_prefix(&self.root)
                .is_ok_and(|inside| inside.components().any(|part| part.as_os_str() == ".git"))
            {
                continue;
            }
            let metadata = fs::metadata(&real).map_err(|e| io(&real, e))?;
            if metadata.is_dir() {
                if above.contains(&real) {
                    return Err(ExpandError::Unreadable {
                        path: self.dir.join(&relative).display().to_string(),
                        reason: format!(
                            "a link loop: it leads back to {}, a directory it is in",
                            real.display()
                        ),
                    });
                }
                let mut below: Vec<PathBuf> = above.as_ref().clone();
                below.push(real.clone());
                let below = Arc::new(below);
                let children = fs::read_dir(&real).map_err(|e| io(&real, e))?;
                for child in children {
                    let child = child.map_err(|e| io(&real, e))?;
                    let name = child.file_name().to_string_lossy().into_owned();
                    if name == ".git" {
                        continue;
                    }
                    if child.file_name().to_str().is_none() {
                        return Err(ExpandError::Unreadable {
                            path: child.path().display().to_string(),
                            reason: NOT_UTF8_NAME.into(),
                        });
                    }
                    pending.push((format!("{relative}/{name}"), child.path(), below.clone()));
                }
            } else if metadata.is_file() {
                found.push(FoundFile {
                    path: relative,
                    executable: metadata.permissions().mode() & 0o111 != 0,
                    size: metadata.len(),
                    handle: real,
                });
            }
        }
        found.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(found)
    }

    /// At most the size the limits were checked with: a file replaced by a larger one since
    /// (a sync of the directory) is not read whole into memory.
    fn read(&self, file: &FoundFile<PathBuf>) -> Result<Vec<u8>, FilesError> {
        use std::io::Read;
        let opened = fs::File::open(&file.handle).map_err(|e| unreadable(&file.handle, &e))?;
        let mut content = Vec::new();
        opened
            .take(file.size.saturating_add(1))
            .read_to_end(&mut content)
            .map_err(|e| unreadable(&file.handle, &e))?;
        if content.len() as u64 > file.size {
            return Err(FilesError::Unreadable {
                path: file.handle.display().to_string(),
                reason: format!(
                    "it grew past the {} bytes it had when the files were listed; send the \
                     event again with a new id",
                    file.size
                ),
            });
        }
        Ok(content)
    }
}

/// Reads the files of an action's tasks from `service_dir`; links may lead anywhere below
/// `root` (the config source's top directory) but not outside it.
pub fn collect_from_dir(
    root: &Path,
    service_dir: &Path,
    tasks: &[Task],
) -> Result<RunFiles, FilesError> {
    collect(&DirTree::new(root, service_dir)?, tasks)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;

    #[test]
    fn keys_are_valid_and_unique() {
        assert_eq!(config_map_key(0, "locust/basic.py"), "0-locust_basic.py");
        assert_eq!(config_map_key(12, "a b/c"), "12-a_b_c");
        // Paths that sanitize alike, odd characters and overlong paths: every key is a valid
        // ConfigMap key (`[-._a-zA-Z0-9]+`, at most 253 characters) and no two are equal.
        let long = "x/".repeat(300);
        let paths = ["a b/c", "a_b/c", "a/b/c", "ü/ß", "..", "", &long, &long];
        let keys: Vec<String> = paths
            .iter()
            .enumerate()
            .map(|(index, path)| config_map_key(index, path))
            .collect();
        for key in &keys {
            assert!(is_config_map_key(key), "{key}");
        }
        assert!(!is_config_map_key("") && !is_config_map_key("a/b"));
        for bad in [".", "..", "..token"] {
            assert!(!is_config_map_key(bad), "{bad}");
        }
        assert!(is_config_map_key(".token") && is_config_map_key("a..b"));
        let distinct: std::collections::HashSet<&String> = keys.iter().collect();
        assert_eq!(distinct.len(), keys.len(), "{keys:?}");
    }

    #[test]
    fn directories_expand_and_tasks_share_files() {
        let base = std::env::temp_dir().join(format!("files-{}", std::process::id()));
        let _ = fs::remove_dir_all(&base);
        let service = base.join("carts");
        for (path, mode) in [
            ("helm/Chart.yaml", 0o644),
            ("helm/templates/job.yaml", 0o644),
            ("helm-abc/other.yaml", 0o644),
            ("run.sh", 0o755),
        ] {
            let file = service.join(path);
            fs::create_dir_all(file.parent().unwrap()).unwrap();
            fs::write(&file, path).unwrap();
            fs::set_permissions(&file, fs::Permissions::from_mode(mode)).unwrap();
        }
        let valid = config::load(
            "apiVersion: v2\nactions:\n  - events: [{name: x}]\n    tasks:\n      - {image: a, files: [/helm, run.sh, helm/, ./run.sh]}\n      - {image: b, files: [run.sh]}\n      - {image: c, files: [missing.txt]}\n",
            "c.yaml",
        )
        .unwrap();
        let mut action = valid.config.actions[0].clone();
        let error = collect_from_dir(&base, &service, &action.tasks).unwrap_err();
        assert_eq!(
            error.to_string(),
            format!(
                "task 'task-2': file or directory \"missing.txt\" not found in {}",
                service.display()
            )
        );
        action.tasks.pop();
        let run = collect_from_dir(&base, &service, &action.tasks).unwrap();
        let paths: Vec<&str> = run.files.iter().map(|f| f.staged.path.as_str()).collect();
        assert_eq!(
            paths,
            ["helm/Chart.yaml", "helm/templates/job.yaml", "run.sh"]
        );
        assert!(run.files[2].staged.executable);
        assert!(!run.files[0].staged.executable);
        assert_eq!(run.per_task[0].len(), 3);
        assert_eq!(run.per_task[1], [run.files[2].staged.clone()]);
        assert_eq!(run.files[2].content, b"run.sh");
    }

    #[test]
    fn links_out_of_the_root_are_refused() {
        let base = std::env::temp_dir().join(format!("files-link-{}", std::process::id()));
        let _ = fs::remove_dir_all(&base);
        let root = base.join("repo");
        let service = root.join("carts");
        fs::create_dir_all(&service).unwrap();
        fs::write(base.join("outside"), "secret").unwrap();
        std::os::unix::fs::symlink(base.join("outside"), service.join("link")).unwrap();
        let valid = config::load(
            "apiVersion: v2\nactions:\n  - events: [{name: x}]\n    tasks:\n      - {image: a, files: [link]}\n",
            "c.yaml",
        )
        .unwrap();
        let error = collect_from_dir(&root, &service, &valid.config.actions[0].tasks).unwrap_err();
        assert!(matches!(error, FilesError::Escapes { .. }), "{error}");
        // The message names the link and the root it may not leave.
        assert_eq!(
            error.to_string(),
            format!(
                "task 'task-0': \"link\" is a link that leads outside {}",
                root.display()
            )
        );
    }

    #[test]
    fn a_link_loop_is_refused_and_two_links_to_one_directory_are_not() {
        let base = std::env::temp_dir().join(format!("files-loop-{}", std::process::id()));
        let _ = fs::remove_dir_all(&base);
        let service = base.join("carts");
        fs::create_dir_all(service.join("helm/templates")).unwrap();
        fs::write(service.join("helm/templates/job.yaml"), "job").unwrap();
        // Two links to one directory side by side: each is a copy.
        std::os::unix::fs::symlink(service.join("helm/templates"), service.join("helm/t2"))
            .unwrap();
        let run = collect_from_dir(&base, &service, &action_with_files("[helm]").tasks).unwrap();
        let paths: Vec<&str> = run.files.iter().map(|f| f.staged.path.as_str()).collect();
        assert_eq!(paths, ["helm/t2/job.yaml", "helm/templates/job.yaml"]);
        // A link back to a directory it is in: refused, not walked for ever.
        std::os::unix::fs::symlink(service.join("helm"), service.join("helm/templates/up"))
            .unwrap();
        let error =
            collect_from_dir(&base, &service, &action_with_files("[helm]").tasks).unwrap_err();
        assert!(error.to_string().contains("a link loop"), "{error}");
        let _ = fs::remove_dir_all(&base);
    }

    /// Links that fan out (four side by side to the next level, nine levels deep: 262,144
    /// files) are refused once the walk passes its bound, not listed whole first.
    #[test]
    fn links_that_fan_out_are_refused_at_the_walks_bound() {
        let base = std::env::temp_dir().join(format!("files-fan-{}", std::process::id()));
        let _ = fs::remove_dir_all(&base);
        let service = base.join("carts");
        for level in 0..9 {
            let dir = service.join(format!("l{level}"));
            fs::create_dir_all(&dir).unwrap();
            for link in ["a", "b", "c", "d"] {
                std::os::unix::fs::symlink(format!("../l{}", level + 1), dir.join(link)).unwrap();
            }
        }
        fs::create_dir_all(service.join("l9")).unwrap();
        fs::write(service.join("l9/f"), "x").unwrap();
        let error =
            collect_from_dir(&base, &service, &action_with_files("[l0]").tasks).unwrap_err();
        assert!(
            error.to_string().contains(&format!(
                "more than {MOST_ENTRIES_WALKED} files, directories and links walked for the \
                 files of this run (links that fan out?)"
            )),
            "{error}"
        );
        // Fewer levels: listed, and sized as usual.
        let run = collect_from_dir(&base, &service, &action_with_files("[l7]").tasks).unwrap();
        assert_eq!(run.files.len(), 16);
        let _ = fs::remove_dir_all(&base);
    }

    /// The walk's bound holds for a run's entries together: many links to one directory, each
    /// under the bound, walked it each before. And files past what a ConfigMap holds are
    /// refused before the rest of the entries are walked.
    #[test]
    fn the_walks_bound_and_the_size_hold_for_all_entries_together() {
        let base = std::env::temp_dir().join(format!("files-many-{}", std::process::id()));
        let _ = fs::remove_dir_all(&base);
        let service = base.join("carts");
        fs::create_dir_all(service.join("data")).unwrap();
        for file in 0..99 {
            fs::write(service.join(format!("data/{file}")), "x").unwrap();
        }
        for link in 0..5 {
            std::os::unix::fs::symlink("data", service.join(format!("x{link}"))).unwrap();
        }
        let tree = DirTree::new(&base, &service).unwrap();
        let tasks = action_with_files("[x0, x1, x2, x3, x4]").tasks;
        // Each entry walks 100 entries: three pass a bound of 250.
        let error = collect_within(&tree, &tasks, ExpandBudget::most(250)).unwrap_err();
        assert!(
            error.to_string().contains(
                "more than 250 files, directories and links walked for the files of this run"
            ),
            "{error}"
        );
        assert_eq!(
            collect_within(&tree, &tasks, ExpandBudget::most(500))
                .unwrap()
                .files
                .len(),
            495
        );
        // A name that is not UTF-8 is refused, not staged under a lossy name; a link to
        // nothing listed itself is not found, as from git.
        {
            use std::os::unix::ffi::OsStrExt;
            let name = [b'x', 0xff];
            fs::write(
                service
                    .join("data")
                    .join(std::ffi::OsStr::from_bytes(&name)),
                "y",
            )
            .unwrap();
        }
        let error = collect_from_dir(&base, &service, &action_with_files("[data]").tasks)
            .unwrap_err()
            .to_string();
        assert!(error.contains("its name is not UTF-8"), "{error}");
        std::os::unix::fs::symlink("nothing", service.join("dangling")).unwrap();
        std::os::unix::fs::symlink("/nothing", service.join("outside")).unwrap();
        let listed = |entry: &str| {
            collect_from_dir(
                &base,
                &service,
                &action_with_files(&format!("[{entry}]")).tasks,
            )
            .unwrap_err()
        };
        assert!(
            matches!(listed("dangling"), FilesError::Missing { .. }),
            "{:?}",
            listed("dangling")
        );
        assert!(
            matches!(listed("outside"), FilesError::Escapes { .. }),
            "{:?}",
            listed("outside")
        );
        let half = vec![b'x'; 600_000];
        fs::write(service.join("big1"), &half).unwrap();
        fs::write(service.join("big2"), &half).unwrap();
        let error = collect_from_dir(
            &base,
            &service,
            &action_with_files("[big1, big2, missing]").tasks,
        )
        .unwrap_err();
        assert!(matches!(error, FilesError::TooLarge { .. }), "{error}");
        let _ = fs::remove_dir_all(&base);
    }

    /// A checkout's `.git` (its config may hold credentials) is not staged through a link to
    /// it or into it either.
    #[test]
    fn a_link_into_git_stages_nothing_of_it() {
        let base = std::env::temp_dir().join(format!("files-dotgit-{}", std::process::id()));
        let _ = fs::remove_dir_all(&base);
        let service = base.join("carts");
        fs::create_dir_all(service.join("helm")).unwrap();
        fs::create_dir_all(base.join(".git")).unwrap();
        fs::write(base.join(".git/config"), "url = https://bot:token@git").unwrap();
        fs::write(service.join("helm/Chart.yaml"), "chart").unwrap();
        std::os::unix::fs::symlink("../../.git", service.join("helm/g")).unwrap();
        std::os::unix::fs::symlink("../.git/config", service.join("config")).unwrap();
        let run = collect_from_dir(&base, &service, &action_with_files("[helm]").tasks).unwrap();
        let paths: Vec<&str> = run.files.iter().map(|f| f.staged.path.as_str()).collect();
        assert_eq!(paths, ["helm/Chart.yaml"]);
        let error =
            collect_from_dir(&base, &service, &action_with_files("[config]").tasks).unwrap_err();
        assert!(matches!(error, FilesError::Empty { .. }), "{error}");
        let _ = fs::remove_dir_all(&base);
    }

    /// As from git: a link to nothing inside the directory stages nothing; one that would
    /// lead out of it is refused.
    #[test]
    fn a_link_to_nothing_stages_nothing_unless_it_leads_out() {
        let base = std::env::temp_dir().join(format!("files-dangling-{}", std::process::id()));
        let _ = fs::remove_dir_all(&base);
        let service = base.join("carts");
        fs::create_dir_all(service.join("helm")).unwrap();
        fs::write(service.join("helm/Chart.yaml"), "chart").unwrap();
        std::os::unix::fs::symlink("missing.yaml", service.join("helm/gone")).unwrap();
        let run = collect_from_dir(&base, &service, &action_with_files("[helm]").tasks).unwrap();
        let paths: Vec<&str> = run.files.iter().map(|f| f.staged.path.as_str()).collect();
        assert_eq!(paths, ["helm/Chart.yaml"]);
        // A directory with nothing to stage fails the task, as a missing one does.
        fs::create_dir_all(service.join("reports")).unwrap();
        std::os::unix::fs::symlink("missing.txt", service.join("reports/gone")).unwrap();
        let error =
            collect_from_dir(&base, &service, &action_with_files("[reports]").tasks).unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("task 'task-0': \"reports\" in ")
                && error.to_string().ends_with(
                    "brings no file to stage (an empty directory, links to nothing, submodules \
                     or .git only)"
                ),
            "{error}"
        );
        for target in ["/nowhere/at/all", "../../../nowhere"] {
            let _ = fs::remove_file(service.join("helm/out"));
            std::os::unix::fs::symlink(target, service.join("helm/out")).unwrap();
            let error =
                collect_from_dir(&base, &service, &action_with_files("[helm]").tasks).unwrap_err();
            assert!(
                matches!(error, FilesError::Escapes { .. }),
                "{target}: {error}"
            );
        }
        let _ = fs::remove_dir_all(&base);
    }

    fn action_with_files(files: &str) -> config::Action {
        let yaml = format!(
            "apiVersion: v2\nactions:\n  - events: [{{name: x}}]\n    tasks:\n      - {{image: a, files: {files}}}\n"
        );
        config::load(&yaml, "c.yaml").unwrap().config.actions[0].clone()
    }

    #[test]
    fn entries_are_normalized_and_may_not_climb() {
        assert_eq!(
            normalize_entry("./helm//templates/"),
            Some("helm/templates".into())
        );
        assert_eq!(normalize_entry("../secret"), None);
        assert_eq!(normalize_entry("a/../../b"), None);
        assert_eq!(normalize_entry("/helm"), Some("helm".into()));
        assert_eq!(normalize_entry("."), None);
        let base = std::env::temp_dir().join(format!("files-climb-{}", std::process::id()));
        fs::create_dir_all(base.join("carts")).unwrap();
        // The config loader refuses such paths already; a run's spec is checked again.
        let mut action = action_with_files("[x]");
        action.tasks[0].files = vec!["../x".into()];
        let error = collect_from_dir(&base, &base.join("carts"), &action.tasks).unwrap_err();
        assert!(matches!(error, FilesError::NotRelative { .. }), "{error}");
    }

    #[test]
    fn files_beyond_a_config_map_fail_with_the_total_and_the_largest() {
        let base = std::env::temp_dir().join(format!("files-size-{}", std::process::id()));
        let _ = fs::remove_dir_all(&base);
        let service = base.join("carts");
        fs::create_dir_all(service.join("big")).unwrap();
        fs::write(service.join("big/a.bin"), vec![0u8; 600_000]).unwrap();
        fs::write(service.join("big/b.bin"), vec![0u8; 450_000]).unwrap();
        fs::write(service.join("small.txt"), "x").unwrap();
        let error = collect_from_dir(
            &base,
            &service,
            &action_with_files("[small.txt, big]").tasks,
        )
        .unwrap_err();
        let FilesError::TooLarge { total, .. } = &error else {
            panic!("{error}");
        };
        assert!(*total > 1_050_000);
        assert_eq!(
            error.to_string(),
            format!(
                "the files of this run total {total} bytes, more than the 1000000 bytes one ConfigMap can hold; the largest: big/a.bin (600000 bytes), big/b.bin (450000 bytes), small.txt (1 bytes)"
            )
        );
        // Entries after the limit was passed are not expanded, nor counted.
        let error = collect_from_dir(
            &base,
            &service,
            &action_with_files("[big, small.txt]").tasks,
        )
        .unwrap_err();
        assert!(
            error.to_string().contains(
                " bytes or more (counted until past the limit), more than the 1000000 bytes one \
                 ConfigMap can hold; the largest: big/a.bin (600000 bytes), big/b.bin (450000 \
                 bytes)"
            ),
            "{error}"
        );
        let fits =
            collect_from_dir(&base, &service, &action_with_files("[big/a.bin]").tasks).unwrap();
        assert_eq!(fits.files[0].content.len(), 600_000);
    }

    /// Many small files fit a ConfigMap long before their lists fit a JobRun and its Jobs:
    /// such a run fails before any Job, saying so; a run with fewer of them runs.
    #[test]
    fn files_too_many_to_list_fail_the_run() {
        let base = std::env::temp_dir().join(format!("files-many-{}", std::process::id()));
        let _ = fs::remove_dir_all(&base);
        let service = base.join("carts");
        let dir = service.join("node_modules/some-package-with-a-long-name/lib");
        fs::create_dir_all(&dir).unwrap();
        for n in 0..5_000 {
            fs::write(dir.join(format!("module-{n:05}.js")), "").unwrap();
        }
        let run =
            collect_from_dir(&base, &service, &action_with_files("[node_modules]").tasks).unwrap();
        let error = check_lists(&run).unwrap_err();
        let FilesError::TooManyToList { files, bytes, .. } = &error else {
            panic!("{error}");
        };
        assert_eq!(*files, 5_000);
        assert_eq!(
            error.to_string(),
            format!(
                "the tasks of this run list 5000 files, which take {bytes} bytes in its JobRun and Jobs, more than the 524288 bytes allowed (the API server stores objects of at most 1.5 MiB); stage fewer files, e.g. an archive of them"
            )
        );
        // Each task's list counts: two tasks with half of them each are as many.
        let mut two = action_with_files("[node_modules/some-package-with-a-long-name/lib]");
        two.tasks.push(two.tasks[0].clone());
        let half: Vec<String> = (0..2_500)
            .map(|n| format!("node_modules/some-package-with-a-long-name/lib/module-{n:05}.js"))
            .collect();
        two.tasks[0].files = half.clone();
        two.tasks[1].files = half;
        let run = collect_from_dir(&base, &service, &two.tasks).unwrap();
        assert!(matches!(
            check_lists(&run),
            Err(FilesError::TooManyToList { files: 5_000, .. })
        ));
        let fewer = collect_from_dir(
            &base,
            &service,
            &action_with_files("[node_modules/some-package-with-a-long-name/lib/module-00001.js]")
                .tasks,
        )
        .unwrap();
        assert_eq!(fewer.per_task[0].len(), 1);
        check_lists(&fewer).unwrap();
        let _ = fs::remove_dir_all(&base);
    }
}
