//! A clone belongs to one operator process, and what a killed process left in it is removed.
//!
//! gitoxide, like git, takes a lock on a file by creating `<file>.lock` beside it and removes it
//! when it is done — also when a fetch fails, but not when the process is killed (SIGKILL, an
//! OOM kill, a node crash). A lock file left so blocks every later fetch ("The lock for resource
//! … could not be obtained"), and the chart keeps the cache on an `emptyDir` that survives
//! container restarts. So the process holds an advisory lock (`flock`) on `<clone>.owner`
//! beside the clone for as long as it runs; the kernel releases it however the process ends.
//! Holding it, no other live process can be in the middle of a fetch into the clone, so every
//! `*.lock` file in it is stale and is removed when the cache is opened, before the first fetch;
//! so are gitoxide's temporary pack files (`objects/pack/.tmp*`, a transfer cut short). Within
//! the process gitoxide removes its locks and temporary files when a fetch fails or is
//! interrupted, so nothing needs removing later.

use std::fs::{File, TryLockError};
use std::io::{Read as _, Seek as _, Write as _};
use std::path::{Path, PathBuf};

use super::GitError;

/// The advisory lock that makes a clone this process's; released when the process ends.
#[derive(Debug)]
pub struct CacheOwner {
    _file: File,
}

impl CacheOwner {
    /// Takes the clone at `clone` for this process, or says which process has it.
    pub fn take(clone: &Path) -> Result<Self, GitError> {
        let path = clone.with_extension("owner");
        let failed = |error: std::io::Error| GitError::Cache {
            path: path.display().to_string(),
            cause: error.to_string(),
        };
        let mut file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(failed)?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                return Err(GitError::CacheInUse {
                    path: clone.display().to_string(),
                    holder: match holder.trim() {
                        "" => "another process".to_string(),
                        pid => format!("process {pid}"),
                    },
                });
            }
            Err(TryLockError::Error(error)) => return Err(failed(error)),
        }
        // For the message another process shows; the lock is what counts.
        let _ = file
            .set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| write!(file, "{}", std::process::id()));
        Ok(CacheOwner { _file: file })
    }
}

/// Removes the lock files and temporary pack files a killed process left in `clone`; call it
/// only as the clone's [`CacheOwner`], before any fetch. Returns what was removed.
pub fn remove_leftovers(clone: &Path) -> Result<Vec<PathBuf>, GitError> {
    let mut removed = Vec::new();
    remove_in(clone, &clone.join("objects").join("pack"), &mut removed)?;
    Ok(removed)
}

fn remove_in(dir: &Path, pack_dir: &Path, removed: &mut Vec<PathBuf>) -> Result<(), GitError> {
    let failed = |path: &Path, error: std::io::Error| GitError::Cache {
        path: path.display().to_string(),
        cause: error.to_string(),
    };
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(error) => return Err(failed(dir, error)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| failed(dir, e))?;
        let path = entry.path();
        // Not followed: a link is never a directory here.
        let kind = entry.file_type().map_err(|e| failed(&path, e))?;
        if kind.is_dir() {
            remove_in(&path, pack_dir, removed)?;
            continue;
        }
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let leftover = name.ends_with(".lock") || (dir == pack_dir && name.starts_with(".tmp"));
        if leftover {
            match std::fs::remove_file(&path) {
                Ok(()) => removed.push(path),
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                Err(error) => return Err(failed(&path, error)),
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_process_owns_a_clone_until_it_lets_go() {
        let dir = std::env::temp_dir().join(format!("je-git-owner-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let clone = dir.join("abc.git");
        let owner = CacheOwner::take(&clone).unwrap();
        // A second open file description of the same file conflicts, as another process's
        // would.
        let error = CacheOwner::take(&clone).unwrap_err();
        assert_eq!(
            error.to_string(),
            format!(
                "the git clone cache {} is in use by process {}; give each operator its own --git-cache-dir",
                clone.display(),
                std::process::id()
            )
        );
        drop(owner);
        CacheOwner::take(&clone).unwrap();
    }

    #[test]
    fn only_lock_files_and_temporary_packs_are_leftovers() {
        let clone = std::env::temp_dir().join(format!("je-git-leftovers-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&clone);
        let files = [
            ("packed-refs.lock", true),
            ("packed-refs", false),
            ("refs/remotes/origin/dev.lock", true),
            ("refs/remotes/origin/feature/x.lock", true),
            ("refs/remotes/origin/dev", false),
            ("objects/pack/.tmpAb12Cd", true),
            ("objects/pack/pack-1.pack", false),
            ("objects/pack/pack-1.keep", false),
            ("objects/ab/.tmpnotapack", false),
            ("job-executor-heads.lock", true),
        ];
        for (file, _) in files {
            let path = clone.join(file);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, "x").unwrap();
        }
        let mut removed = remove_leftovers(&clone).unwrap();
        removed.sort();
        let mut expected: Vec<PathBuf> = files
            .iter()
            .filter(|(_, leftover)| *leftover)
            .map(|(file, _)| clone.join(file))
            .collect();
        expected.sort();
        assert_eq!(removed, expected);
        for (file, leftover) in files {
            assert_eq!(clone.join(file).exists(), !leftover, "{file}");
        }
        assert!(remove_leftovers(&clone.join("missing")).unwrap().is_empty());
    }
}
