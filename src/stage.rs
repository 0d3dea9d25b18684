//! `job-executor stage-files`: the init container of every task with files. Copies the tree the
//! run's ConfigMap is mounted as into the task's `/keptn` emptyDir.
//!
//! A ConfigMap volume is not a plain tree: the kubelet writes the files into a hidden
//! timestamped directory and links `..data` and each top-level entry to it. So top-level names
//! starting with `..` are skipped, symlinks are followed, and every followed link must stay inside
//! the mounted tree; nothing is ever written outside the destination.

use std::collections::HashSet;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum StageError {
    // The cause is the error's source, which the binary prints after the message.
    #[error("{path}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("refusing {path}: it leads outside {root}")]
    Escapes { path: PathBuf, root: PathBuf },
    #[error("refusing {0}: a directory goes there, and something else is in the way")]
    InTheWay(PathBuf),
    #[error("{0} is not a directory")]
    NotADirectory(PathBuf),
}

/// What was staged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StageReport {
    pub files: usize,
    pub directories: usize,
    pub bytes: u64,
}

/// Directories are world-writable: the task may run as any user and often writes next to its
/// files (a Terraform or Helm working directory). Only this pod's containers see the emptyDir.
const DIRECTORY_MODE: u32 = 0o777;

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> StageError + '_ {
    move |source| StageError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Copies every file below `from` to the same relative path below `to`, keeping permission
/// bits (the executable bit above all).
pub fn stage_files(from: &Path, to: &Path) -> Result<StageReport, StageError> {
    let root = fs::canonicalize(from).map_err(io_error(from))?;
    if !root.is_dir() {
        return Err(StageError::NotADirectory(from.to_path_buf()));
    }
    fs::create_dir_all(to).map_err(io_error(to))?;
    let mut stager = Stager {
        root,
        report: StageReport::default(),
        visited: HashSet::new(),
    };
    let root = stager.root.clone();
    stager.copy_dir(&root, Path::new(""), to)?;
    Ok(stager.report)
}

struct Stager {
    root: PathBuf,
    report: StageReport,
    /// Directories already copied, so a link back up the tree cannot loop.
    visited: HashSet<PathBuf>,
}

impl Stager {
    fn copy_dir(&mut self, dir: &Path, relative: &Path, to: &Path) -> Result<(), StageError> {
        if !self.visited.insert(dir.to_path_buf()) {
            return Ok(());
        }
        let mut entries: Vec<_> = fs::read_dir(dir)
            .map_err(io_error(dir))?
            .collect::<Result<_, _>>()
            .map_err(io_error(dir))?;
        entries.sort_by_key(|entry| entry.file_name());
        for entry in entries {
            let name = entry.file_name();
            if relative.as_os_str().is_empty() && name.to_string_lossy().starts_with("..") {
                continue;
            }
            let source = entry.path();
            let real = fs::canonicalize(&source).map_err(io_error(&source))?;
            if !real.starts_with(&self.root) {
                return Err(StageError::Escapes {
                    path: source,
                    root: self.root.clone(),
                });
            }
            let child = relative.join(&name);
            let destination = to.join(&child);
            let metadata = fs::metadata(&real).map_err(io_error(&real))?;
            if metadata.is_dir() {
                make_dir(&destination)?;
                self.report.directories += 1;
                self.copy_dir(&real, &child, to)?;
            } else if metadata.is_file() {
                copy_file(&real, &destination, metadata.permissions().mode() & 0o777)?;
                self.report.files += 1;
                self.report.bytes += metadata.len();
            }
        }
        Ok(())
    }
}

fn make_dir(path: &Path) -> Result<(), StageError> {
    match fs::symlink_metadata(path) {
        Ok(existing) if existing.is_dir() => {}
        Ok(_) => return Err(StageError::InTheWay(path.to_path_buf())),
        Err(_) => fs::create_dir(path).map_err(io_error(path))?,
    }
    fs::set_permissions(path, fs::Permissions::from_mode(DIRECTORY_MODE)).map_err(io_error(path))
}

fn copy_file(source: &Path, destination: &Path, mode: u32) -> Result<(), StageError> {
    // A leftover from an earlier attempt (or a planted link) is replaced, never followed.
    if fs::symlink_metadata(destination).is_ok() {
        fs::remove_file(destination).map_err(io_error(destination))?;
    }
    fs::copy(source, destination).map_err(io_error(source))?;
    fs::set_permissions(destination, fs::Permissions::from_mode(mode))
        .map_err(io_error(destination))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    fn temp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "stage-{name}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn write(path: &Path, content: &str, mode: u32) {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, content).unwrap();
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    }

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn copies_a_config_map_volume_layout() {
        let base = temp("layout");
        let from = base.join("from");
        // What the kubelet makes of items `locust/basic.py` and `run.sh`.
        let data = from.join("..2026_11_21_10_00_00.123");
        write(&data.join("locust/basic.py"), "print('hi')", 0o644);
        write(&data.join("run.sh"), "#!/bin/sh\necho hi\n", 0o755);
        symlink("..2026_11_21_10_00_00.123", from.join("..data")).unwrap();
        symlink("..data/locust", from.join("locust")).unwrap();
        symlink("..data/run.sh", from.join("run.sh")).unwrap();
        let to = base.join("keptn");

        let report = stage_files(&from, &to).unwrap();
        assert_eq!(
            report,
            StageReport {
                files: 2,
                directories: 1,
                bytes: 29
            }
        );
        assert_eq!(
            fs::read_to_string(to.join("locust/basic.py")).unwrap(),
            "print('hi')"
        );
        assert_eq!(mode(&to.join("run.sh")), 0o755);
        assert_eq!(mode(&to.join("locust/basic.py")), 0o644);
        assert_eq!(mode(&to.join("locust")), 0o777);
        assert!(!to.join("..data").exists());
        assert!(
            !fs::symlink_metadata(to.join("run.sh"))
                .unwrap()
                .file_type()
                .is_symlink()
        );
    }

    /// A file (or a planted link) where a directory goes is refused, saying so, and nothing is
    /// written through it.
    #[test]
    fn refuses_what_is_in_the_way_of_a_directory() {
        let base = temp("in-the-way");
        let from = base.join("from");
        write(&from.join("locust/basic.py"), "x", 0o644);
        write(&base.join("keptn/locust"), "not a directory", 0o644);
        let error = stage_files(&from, &base.join("keptn")).unwrap_err();
        assert!(matches!(error, StageError::InTheWay(_)), "{error}");
        assert!(
            error
                .to_string()
                .ends_with("a directory goes there, and something else is in the way"),
            "{error}"
        );
        let elsewhere = base.join("elsewhere");
        fs::create_dir_all(&elsewhere).unwrap();
        fs::remove_file(base.join("keptn/locust")).unwrap();
        symlink(&elsewhere, base.join("keptn/locust")).unwrap();
        let error = stage_files(&from, &base.join("keptn")).unwrap_err();
        assert!(matches!(error, StageError::InTheWay(_)), "{error}");
        assert!(!elsewhere.join("basic.py").exists());
    }

    #[test]
    fn refuses_links_out_of_the_tree() {
        let base = temp("escape");
        let from = base.join("from");
        write(&base.join("secret.txt"), "secret", 0o600);
        fs::create_dir_all(&from).unwrap();
        symlink("../secret.txt", from.join("innocent.txt")).unwrap();
        let error = stage_files(&from, &base.join("keptn")).unwrap_err();
        assert!(matches!(error, StageError::Escapes { .. }), "{error}");
        assert!(!base.join("keptn/innocent.txt").exists());
    }

    #[test]
    fn a_link_loop_inside_the_tree_terminates() {
        let base = temp("loop");
        let from = base.join("from");
        write(&from.join("a/file"), "x", 0o644);
        symlink("..", from.join("a/up")).unwrap();
        let report = stage_files(&from, &base.join("keptn")).unwrap();
        assert!(report.files >= 1);
    }

    #[test]
    fn replaces_leftovers_instead_of_following_them() {
        let base = temp("leftover");
        let from = base.join("from");
        write(&from.join("f"), "new", 0o644);
        let to = base.join("keptn");
        fs::create_dir_all(&to).unwrap();
        write(&base.join("outside"), "keep", 0o644);
        symlink(base.join("outside"), to.join("f")).unwrap();
        stage_files(&from, &to).unwrap();
        assert_eq!(fs::read_to_string(to.join("f")).unwrap(), "new");
        assert_eq!(fs::read_to_string(base.join("outside")).unwrap(), "keep");
    }

    #[test]
    fn a_missing_source_is_an_error() {
        let base = temp("missing");
        assert!(stage_files(&base.join("nope"), &base.join("keptn")).is_err());
    }
}
