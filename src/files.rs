//! The files a run stages: each task's `files` entries expanded (a directory brings everything
//! below it), read from the service's directory, each given a ConfigMap key.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::config::Action;
use crate::render::StagedFile;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilesError {
    #[error("task '{task}': file or directory \"{path}\" not found in {dir}")]
    Missing {
        task: String,
        path: String,
        dir: String,
    },
    #[error("task '{task}': \"{path}\" is a link that leads outside {root}")]
    Escapes {
        task: String,
        path: String,
        root: String,
    },
    #[error("cannot read {path}: {reason}")]
    Unreadable { path: String, reason: String },
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

/// Reads the files of an action's tasks from `service_dir`; links may lead anywhere below
/// `root` (the config source's top directory) but not outside it.
pub fn collect_from_dir(
    root: &Path,
    service_dir: &Path,
    action: &Action,
) -> Result<RunFiles, FilesError> {
    let unreadable = |path: &Path, error: std::io::Error| FilesError::Unreadable {
        path: path.display().to_string(),
        reason: error.to_string(),
    };
    let root = fs::canonicalize(root).map_err(|e| unreadable(root, e))?;
    let mut by_path: BTreeMap<String, usize> = BTreeMap::new();
    let mut run = RunFiles::default();
    for (task_index, task) in action.tasks.iter().enumerate() {
        let task_name = task.display_name(task_index);
        let mut task_files = Vec::new();
        for entry in &task.files {
            let entry = entry.trim_end_matches('/');
            let found = expand(&root, service_dir, entry).map_err(|problem| match problem {
                Expand::Missing => FilesError::Missing {
                    task: task_name.clone(),
                    path: entry.to_string(),
                    dir: service_dir.display().to_string(),
                },
                Expand::Escapes(path) => FilesError::Escapes {
                    task: task_name.clone(),
                    path,
                    root: root.display().to_string(),
                },
                Expand::Io(path, error) => unreadable(&path, error),
            })?;
            for (relative, real) in found {
                let index = match by_path.get(&relative) {
                    Some(index) => *index,
                    None => {
                        let metadata = fs::metadata(&real).map_err(|e| unreadable(&real, e))?;
                        let content = fs::read(&real).map_err(|e| unreadable(&real, e))?;
                        let index = run.files.len();
                        run.files.push(RunFile {
                            staged: StagedFile {
                                key: config_map_key(index, &relative),
                                path: relative.clone(),
                                executable: metadata.permissions().mode() & 0o111 != 0,
                            },
                            content,
                        });
                        by_path.insert(relative.clone(), index);
                        index
                    }
                };
                let staged = &run.files[index].staged;
                if !task_files.contains(staged) {
                    task_files.push(staged.clone());
                }
            }
        }
        run.per_task.push(task_files);
    }
    Ok(run)
}

enum Expand {
    Missing,
    Escapes(String),
    Io(PathBuf, std::io::Error),
}

/// The files an entry names: itself, or everything below it; as (relative path, real path).
fn expand(root: &Path, service_dir: &Path, entry: &str) -> Result<Vec<(String, PathBuf)>, Expand> {
    let start = service_dir.join(entry);
    if fs::symlink_metadata(&start).is_err() {
        return Err(Expand::Missing);
    }
    let mut found = Vec::new();
    let mut pending = vec![(entry.to_string(), start)];
    while let Some((relative, path)) = pending.pop() {
        let real = fs::canonicalize(&path).map_err(|e| Expand::Io(path.clone(), e))?;
        if !real.starts_with(root) {
            return Err(Expand::Escapes(relative));
        }
        if real.is_dir() {
            let children = fs::read_dir(&real).map_err(|e| Expand::Io(real.clone(), e))?;
            for child in children {
                let child = child.map_err(|e| Expand::Io(real.clone(), e))?;
                let name = child.file_name().to_string_lossy().into_owned();
                if name == ".git" {
                    continue;
                }
                pending.push((format!("{relative}/{name}"), child.path()));
            }
        } else if real.is_file() {
            found.push((relative, real));
        }
    }
    found.sort();
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;

    #[test]
    fn keys_are_valid_and_unique() {
        assert_eq!(config_map_key(0, "locust/basic.py"), "0-locust_basic.py");
        assert_eq!(config_map_key(12, "a b/c"), "12-a_b_c");
        assert!(config_map_key(1, &"x/".repeat(300)).len() <= 253);
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
            "apiVersion: v2\nactions:\n  - events: [{name: x}]\n    tasks:\n      - {image: a, files: [helm, run.sh]}\n      - {image: b, files: [run.sh]}\n      - {image: c, files: [missing.txt]}\n",
            "c.yaml",
        )
        .unwrap();
        let mut action = valid.config.actions[0].clone();
        let error = collect_from_dir(&base, &service, &action).unwrap_err();
        assert_eq!(
            error.to_string(),
            format!(
                "task 'task-2': file or directory \"missing.txt\" not found in {}",
                service.display()
            )
        );
        action.tasks.pop();
        let run = collect_from_dir(&base, &service, &action).unwrap();
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
        let error = collect_from_dir(&root, &service, &valid.config.actions[0]).unwrap_err();
        assert!(matches!(error, FilesError::Escapes { .. }), "{error}");
    }
}
