//! A secret kept in a file (a mounted Secret's key) and read again when the file changes, so
//! a rotated secret takes effect without a restart: the ingest token, the HMAC secret, the
//! sink's headers.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

/// How often a secret file is checked for a change.
pub const RECHECK: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the {what} cannot be read from {path}: {reason}")]
pub struct SecretFileError {
    pub what: &'static str,
    pub path: String,
    pub reason: String,
}

/// A secret file: its content without the trailing newline.
pub struct SecretFile {
    what: &'static str,
    path: PathBuf,
    cached: Mutex<Cached>,
}

struct Cached {
    value: Option<String>,
    read: Option<Stamp>,
    checked: Option<Instant>,
}

/// What tells that a file changed: its modification time, length and inode (a file rewritten
/// in place within one tick of a coarse clock keeps its time; a swapped one is another inode).
#[derive(Clone, Copy, PartialEq, Eq)]
struct Stamp {
    modified: SystemTime,
    len: u64,
    inode: u64,
}

impl std::fmt::Debug for SecretFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the content.
        f.debug_struct("SecretFile")
            .field("what", &self.what)
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl SecretFile {
    /// Reads the file now, so a missing or unreadable file fails at start. `what` names the
    /// secret in messages.
    pub fn open(what: &'static str, path: PathBuf) -> Result<SecretFile, SecretFileError> {
        let file = SecretFile {
            what,
            path,
            cached: Mutex::new(Cached {
                value: None,
                read: None,
                checked: None,
            }),
        };
        file.current()?;
        Ok(file)
    }

    /// The file's path, for messages.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// The content as of now: looked at again at most once per [`RECHECK`].
    pub fn current(&self) -> Result<String, SecretFileError> {
        let mut cached = self.cached.lock().unwrap_or_else(|e| e.into_inner());
        let fresh = cached.checked.is_some_and(|at| at.elapsed() < RECHECK);
        if let (true, Some(value)) = (fresh, &cached.value) {
            return Ok(value.clone());
        }
        let unreadable = |reason: String| SecretFileError {
            what: self.what,
            path: self.path.display().to_string(),
            reason,
        };
        // Kubernetes swaps a Secret volume's files atomically; what the path (followed through
        // its links) stamps tells that the content changed.
        let stamp = std::fs::metadata(&self.path)
            .and_then(|m| {
                use std::os::unix::fs::MetadataExt as _;
                Ok(Stamp {
                    modified: m.modified()?,
                    len: m.len(),
                    inode: m.ino(),
                })
            })
            .map_err(|e| unreadable(e.to_string()))?;
        if cached.value.is_none() || cached.read != Some(stamp) {
            let text =
                std::fs::read_to_string(&self.path).map_err(|e| unreadable(e.to_string()))?;
            let value = text.trim_end_matches(['\n', '\r']).to_string();
            if value.is_empty() {
                return Err(unreadable("the file is empty".to_string()));
            }
            cached.value = Some(value);
            cached.read = Some(stamp);
        }
        cached.checked = Some(Instant::now());
        Ok(cached.value.clone().unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_file_is_read_again_when_it_changes() {
        let dir = std::env::temp_dir().join(format!("je-token-file-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("token");
        std::fs::write(&path, "first\n").unwrap();
        let file = SecretFile::open("ingest token", path.clone()).unwrap();
        assert_eq!(file.current().unwrap(), "first");
        let later = SystemTime::now() + Duration::from_secs(5);
        let write_at = |text: &str| {
            std::fs::write(&path, text).unwrap();
            std::fs::File::options()
                .write(true)
                .open(&path)
                .unwrap()
                .set_modified(later)
                .unwrap();
        };
        // A newer modification time, as a Secret volume's update gives.
        write_at("second\n");
        std::thread::sleep(RECHECK + Duration::from_millis(100));
        assert_eq!(file.current().unwrap(), "second");
        // Rewritten in place within the same tick of the clock: its length tells.
        write_at("a third\n");
        std::thread::sleep(RECHECK + Duration::from_millis(100));
        assert_eq!(file.current().unwrap(), "a third");
        std::fs::remove_file(&path).unwrap();
        std::thread::sleep(RECHECK + Duration::from_millis(100));
        assert!(matches!(
            file.current(),
            Err(SecretFileError {
                what: "ingest token",
                ..
            })
        ));
        assert!(SecretFile::open("ingest token", dir.join("missing")).is_err());
    }
}
