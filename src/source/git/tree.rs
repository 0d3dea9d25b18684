//! Reading files from a commit's tree: a path is walked one name at a time, following links
//! only while they stay inside the repository; a directory brings every file below it.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, OnceLock};

use gix::ObjectId;
use gix::bstr::ByteSlice as _;
use gix::object::tree::EntryMode;

use crate::files::{ExpandBudget, ExpandError, FileTree, FoundFile};

/// Links followed while resolving one path, and directories entered while expanding one
/// entry: beyond that it is a link loop.
const MAX_LINKS: usize = 40;
const MAX_DEPTH: usize = 64;
/// The most bytes of a link's target read: git's own limit (`PATH_MAX` on Linux). A target of
/// megabytes (a push of a few KB: it compresses) would otherwise be read, split and queued whole
/// for every lookup through it.
const MAX_LINK_BYTES: u64 = 4096;
/// The most bytes of a directory (a tree object, about 400,000 entries) or a commit read: their
/// size on disk is compressed, and one that inflates past the operator's memory would end it.
const MAX_OBJECT_BYTES: u64 = 16 << 20;

/// The most entries of directories kept decoded by one [`CommitTree`]: more than a directory
/// within `MAX_OBJECT_BYTES` holds, so the one being walked is always kept (past it, those
/// kept before are dropped).
const MOST_ENTRIES_KEPT: usize = 600_000;

/// A directory of a commit.
pub struct CommitTree {
    repo: gix::Repository,
    commit: ObjectId,
    root_tree: ObjectId,
    /// Relative to the repository's top, `` for the top itself.
    dir: String,
    /// Directories decoded so far, by id: each link is resolved from the top, and a directory
    /// of many links decoded its own tree again for each, the square of its size (a push of
    /// 200,000 links took hours of a worker).
    trees: Mutex<DecodedTrees>,
}

#[derive(Default)]
struct DecodedTrees {
    by_id: HashMap<ObjectId, Arc<Directory>>,
    entries: usize,
    /// Trees decoded, counted for the tests.
    decoded: usize,
}

/// A tree's entries, in its order, and found by name.
struct Directory {
    entries: Vec<(String, EntryMode, ObjectId)>,
    by_name: OnceLock<HashMap<String, usize>>,
}

impl Directory {
    fn find(&self, name: &str) -> Option<(EntryMode, ObjectId)> {
        let by_name = self.by_name.get_or_init(|| {
            // The first of two names alike once read as UTF-8, as a scan finds it.
            let mut by_name = HashMap::with_capacity(self.entries.len());
            for (at, (name, _, _)) in self.entries.iter().enumerate() {
                by_name.entry(name.clone()).or_insert(at);
            }
            by_name
        });
        let (_, mode, id) = self.entries.get(*by_name.get(name)?)?;
        Some((*mode, *id))
    }
}

/// Where a path leads.
#[derive(Debug, Clone, Copy)]
struct Resolved {
    mode: EntryMode,
    id: ObjectId,
}

/// Why a path cannot be walked.
#[derive(Debug)]
pub enum WalkError {
    /// A link leads outside the repository (or is absolute).
    Escapes,
    TooManyLinks,
    Read(String),
    /// The clone's store failed to read an object (a pack that cannot be opened or mapped, no
    /// file handles left): not the content's fault, tried again.
    Store(String),
    /// A file over the size asked for, with its size.
    TooLarge(u64),
    /// A link's target or a directory larger than is ever read.
    Oversized {
        what: &'static str,
        size: u64,
        limit: u64,
    },
}

impl WalkError {
    /// Why, for a user: what the path met.
    pub fn reason(self) -> String {
        match self {
            WalkError::Escapes => "it is a link that leads outside the repository".into(),
            WalkError::TooManyLinks => {
                format!("more than {MAX_LINKS} links to follow (a link loop?)")
            }
            WalkError::Read(reason) | WalkError::Store(reason) => reason,
            WalkError::TooLarge(size) => format!("it is too large ({size} bytes)"),
            WalkError::Oversized { what, size, limit } => {
                format!("{what} of {size} bytes, more than the {limit} read")
            }
        }
    }
}

/// The size of the object `id` (from its header, without reading it), if at most `limit`.
fn size_within(
    repo: &gix::Repository,
    id: ObjectId,
    what: &'static str,
    limit: u64,
) -> Result<u64, WalkError> {
    let size = repo
        .try_find_header(id)
        .map_err(|e| WalkError::Store(e.to_string()))?
        .ok_or_else(|| missing(id))?
        .size();
    if size > limit {
        return Err(WalkError::Oversized { what, size, limit });
    }
    Ok(size)
}

/// An object the commit's tree names that the clone does not hold.
fn missing(id: ObjectId) -> WalkError {
    WalkError::Read(format!("object {id} is not in the clone"))
}

/// The object `id`, of the kind the tree says it is. Only an object the store does not hold is
/// the content's error; a read that fails is the store's.
fn object(
    repo: &gix::Repository,
    id: ObjectId,
    kind: gix::object::Kind,
) -> Result<gix::Object<'_>, WalkError> {
    let object = repo
        .try_find_object(id)
        .map_err(|e| WalkError::Store(e.to_string()))?
        .ok_or_else(|| missing(id))?;
    if object.kind != kind {
        return Err(WalkError::Read(format!(
            "object {id} is a {}, not a {kind}",
            object.kind
        )));
    }
    Ok(object)
}

fn split(path: &str) -> impl Iterator<Item = &str> {
    path.split('/')
        .filter(|part| !part.is_empty() && *part != ".")
}

impl CommitTree {
    pub fn new(repo: gix::Repository, commit: ObjectId, dir: &str) -> Result<Self, WalkError> {
        size_within(&repo, commit, "a commit", MAX_OBJECT_BYTES)?;
        let read = |e: &dyn std::fmt::Display| WalkError::Read(e.to_string());
        let root_tree = object(&repo, commit, gix::object::Kind::Commit)?
            .into_commit()
            .tree_id()
            .map_err(|e| read(&e))?
            .detach();
        Ok(CommitTree {
            repo,
            commit,
            root_tree,
            dir: dir.to_string(),
            trees: Mutex::default(),
        })
    }

    fn entries(&self, id: ObjectId) -> Result<Arc<Directory>, WalkError> {
        if let Ok(trees) = self.trees.lock()
            && let Some(directory) = trees.by_id.get(&id)
        {
            return Ok(directory.clone());
        }
        size_within(&self.repo, id, "a directory", MAX_OBJECT_BYTES)?;
        let tree = object(&self.repo, id, gix::object::Kind::Tree)?.into_tree();
        let decoded = tree.decode().map_err(|e| WalkError::Read(e.to_string()))?;
        let directory = Arc::new(Directory {
            entries: decoded
                .entries
                .iter()
                .map(|entry| {
                    (
                        entry.filename.to_str_lossy().into_owned(),
                        entry.mode,
                        entry.oid.to_owned(),
                    )
                })
                .collect(),
            by_name: OnceLock::new(),
        });
        if let Ok(mut trees) = self.trees.lock() {
            trees.decoded += 1;
            if trees.entries + directory.entries.len() > MOST_ENTRIES_KEPT {
                trees.by_id.clear();
                trees.entries = 0;
            }
            if directory.entries.len() <= MOST_ENTRIES_KEPT
                && trees.by_id.insert(id, directory.clone()).is_none()
            {
                trees.entries += directory.entries.len();
            }
        }
        Ok(directory)
    }

    /// How many trees this walk decoded.
    #[cfg(test)]
    pub fn trees_decoded(&self) -> usize {
        self.trees
            .lock()
            .map(|trees| trees.decoded)
            .unwrap_or_default()
    }

    fn blob(&self, id: ObjectId) -> Result<Vec<u8>, WalkError> {
        Ok(object(&self.repo, id, gix::object::Kind::Blob)?
            .into_blob()
            .take_data())
    }

    /// Walks `path` (relative to the top) from the root tree; `None` when nothing is there.
    fn resolve(&self, path: &str) -> Result<Option<Resolved>, WalkError> {
        let mut pending: VecDeque<String> = split(path).map(str::to_string).collect();
        // The link-free path walked so far, and the tree each of its directories is.
        let mut walked: Vec<ObjectId> = Vec::new();
        let mut links = 0;
        let mut current = Resolved {
            mode: gix::object::tree::EntryKind::Tree.into(),
            id: self.root_tree,
        };
        while let Some(name) = pending.pop_front() {
            if name == ".." {
                walked.pop().ok_or(WalkError::Escapes)?;
                current.id = walked.last().copied().unwrap_or(self.root_tree);
                current.mode = gix::object::tree::EntryKind::Tree.into();
                continue;
            }
            if !current.mode.is_tree() {
                return Ok(None);
            }
            let Some((mode, id)) = self.entries(current.id)?.find(&name) else {
                return Ok(None);
            };
            if mode.is_link() {
                links += 1;
                if links > MAX_LINKS {
                    return Err(WalkError::TooManyLinks);
                }
                size_within(&self.repo, id, "a link's target", MAX_LINK_BYTES)?;
                let target = String::from_utf8_lossy(&self.blob(id)?).into_owned();
                if target.starts_with('/') {
                    return Err(WalkError::Escapes);
                }
                for part in split(&target).collect::<Vec<_>>().into_iter().rev() {
                    pending.push_front(part.to_string());
                }
                continue;
            }
            current = Resolved { mode, id };
            if mode.is_tree() {
                walked.push(id);
            } else if !pending.is_empty() {
                // A file with more of the path after it.
                return Ok(None);
            }
        }
        Ok(Some(current))
    }

    fn full_path(&self, relative: &str) -> String {
        if self.dir.is_empty() {
            relative.to_string()
        } else {
            format!("{}/{relative}", self.dir)
        }
    }

    /// The blob of a file (relative to the top), `None` when there is none: what the file holds
    /// at this commit, the same id wherever its content is the same.
    pub fn file(&self, path: &str) -> Result<Option<ObjectId>, WalkError> {
        Ok(self
            .resolve(path)?
            .filter(|resolved| resolved.mode.is_blob())
            .map(|resolved| resolved.id))
    }

    /// The content of a [`Self::file`]'s blob; one over `limit` bytes is not read (its size is
    /// known from the object's header).
    pub fn read_blob(&self, id: ObjectId, limit: u64) -> Result<Vec<u8>, WalkError> {
        let size = size_within(&self.repo, id, "a file", u64::MAX)?;
        if size > limit {
            return Err(WalkError::TooLarge(size));
        }
        self.blob(id)
    }

    fn describe_dir(&self) -> String {
        if self.dir.is_empty() {
            "the repository's top directory".to_string()
        } else {
            self.dir.clone()
        }
    }

    /// Adds every file below the directory `tree` (staged as `relative/...`).
    fn expand_dir(
        &self,
        relative: &str,
        real: &str,
        tree: ObjectId,
        depth: usize,
        found: &mut Vec<FoundFile<ObjectId>>,
        budget: &mut ExpandBudget,
    ) -> Result<(), ExpandError> {
        if depth > MAX_DEPTH {
            return Err(ExpandError::Unreadable {
                path: self.full_path(relative),
                reason: format!("more than {MAX_DEPTH} directories deep (a link loop?)"),
            });
        }
        let directory = self
            .entries(tree)
            .map_err(|e| self.walk_error(relative, e))?;
        for (name, mode, id) in &directory.entries {
            let (mode, id) = (*mode, *id);
            let child = format!("{relative}/{name}");
            budget.walk(&self.full_path(&child))?;
            if let Some(reason) = crate::files::unstageable_name(name) {
                return Err(ExpandError::Unreadable {
                    path: self.full_path(&child),
                    reason: reason.into(),
                });
            }
            let child_real = format!("{real}/{name}");
            let resolved = if mode.is_link() {
                match self
                    .resolve(&child_real)
                    .map_err(|e| self.walk_error(&child, e))?
                {
                    Some(resolved) => resolved,
                    // A dangling link stages nothing, as `stage-files` would skip it.
                    None => continue,
                }
            } else {
                Resolved { mode, id }
            };
            self.add(&child, &child_real, resolved, depth + 1, found, budget)?;
        }
        Ok(())
    }

    fn add(
        &self,
        relative: &str,
        real: &str,
        resolved: Resolved,
        depth: usize,
        found: &mut Vec<FoundFile<ObjectId>>,
        budget: &mut ExpandBudget,
    ) -> Result<(), ExpandError> {
        if resolved.mode.is_tree() {
            self.expand_dir(relative, real, resolved.id, depth, found, budget)
        } else if resolved.mode.is_blob() {
            let size = size_within(&self.repo, resolved.id, "a file", u64::MAX)
                .map_err(|e| self.walk_error(relative, e))?;
            found.push(FoundFile {
                path: relative.to_string(),
                executable: resolved.mode.is_executable(),
                size,
                handle: resolved.id,
            });
            Ok(())
        } else if depth == 0 {
            // A submodule named by the task: its content is in another repository, which is
            // not fetched; staged as nothing, the task would find its directory missing.
            Err(ExpandError::Unreadable {
                path: self.full_path(relative),
                reason: "a submodule: its files are in another repository, which is not fetched"
                    .into(),
            })
        } else {
            // A submodule inside a listed directory: left out, as `git archive` leaves it.
            Ok(())
        }
    }

    fn walk_error(&self, relative: &str, error: WalkError) -> ExpandError {
        match error {
            WalkError::Escapes => ExpandError::Escapes(relative.to_string()),
            WalkError::Store(reason) => ExpandError::Store {
                path: self.full_path(relative),
                reason,
            },
            other => ExpandError::Unreadable {
                path: self.full_path(relative),
                reason: other.reason(),
            },
        }
    }
}

impl FileTree for CommitTree {
    type Handle = ObjectId;

    fn place(&self) -> String {
        format!("{} at commit {}", self.describe_dir(), self.commit)
    }

    fn root(&self) -> String {
        "the repository".to_string()
    }

    fn expand(
        &self,
        entry: &str,
        budget: &mut ExpandBudget,
    ) -> Result<Vec<FoundFile<ObjectId>>, ExpandError> {
        self.expand_within(entry, budget)
    }

    fn read(&self, file: &FoundFile<ObjectId>) -> Result<Vec<u8>, crate::files::FilesError> {
        self.read_found(file)
    }
}

impl CommitTree {
    /// [`FileTree::expand`], walking at most what `budget` allows.
    pub fn expand_within(
        &self,
        entry: &str,
        budget: &mut ExpandBudget,
    ) -> Result<Vec<FoundFile<ObjectId>>, ExpandError> {
        let real = self.full_path(entry);
        let resolved = self
            .resolve(&real)
            .map_err(|e| self.walk_error(entry, e))?
            .ok_or(ExpandError::Missing)?;
        let mut found = Vec::new();
        self.add(entry, &real, resolved, 0, &mut found, budget)?;
        found.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(found)
    }

    fn read_found(&self, file: &FoundFile<ObjectId>) -> Result<Vec<u8>, crate::files::FilesError> {
        let path = format!("{} at commit {}", self.full_path(&file.path), self.commit);
        self.blob(file.handle).map_err(|e| match e {
            WalkError::Store(reason) => crate::files::FilesError::Store { path, reason },
            other => crate::files::FilesError::Unreadable {
                path,
                reason: other.reason(),
            },
        })
    }
}
