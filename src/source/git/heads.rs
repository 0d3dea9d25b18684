//! The branch heads lookups read: what the last successful fetch saw on the remote, kept in
//! memory and in a small file in the clone (`job-executor-heads`), so that a restarted operator
//! still knows them when the repository cannot be reached.
//!
//! The file is written after a fetch succeeded (its commits are in the clone by then), then
//! renamed into place, so it is whole or absent. A line per branch, `<commit> <branch>` (a ref name has no
//! spaces), after `fetched <unix seconds>` and `default <branch>`.

use std::collections::HashMap;
use std::io::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use gix::ObjectId;
use gix::bstr::ByteSlice as _;

use super::GitError;

/// The file in the clone.
const FILE: &str = "job-executor-heads";

/// What a successful fetch saw on the remote.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RemoteHeads {
    /// Branch name → commit.
    pub branches: HashMap<String, ObjectId>,
    /// The branch the remote's `HEAD` points to.
    pub default_branch: Option<String>,
    /// When the fetch that saw them started.
    pub fetched_at: Option<jiff::Timestamp>,
}

/// The repository could not be fetched, so a lookup read the heads of the last successful
/// fetch, which may be behind the remote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stale {
    /// Why the fetch failed.
    pub error: GitError,
    /// When the heads that were read were fetched (unknown for a clone made by an older
    /// version of the operator).
    pub fetched_at: Option<jiff::Timestamp>,
}

/// The heads a lookup reads, and whether they are stale.
#[derive(Debug, Clone)]
pub struct Heads {
    pub heads: Arc<RemoteHeads>,
    pub stale: Option<Stale>,
    /// Until when a lookup may read these heads without asking again (the fetch that got them,
    /// or the failed one that marked them stale, is within the fetch interval); `None` when a
    /// fetch for this lookup got them.
    pub fresh_until: Option<Instant>,
}

impl Heads {
    /// The head of `branch`, `None` if the remote has no such branch.
    pub fn branch(&self, branch: &str) -> Option<ObjectId> {
        self.heads.branches.get(branch).copied()
    }

    /// The remote's default branch and its head.
    pub fn default_branch(&self) -> Option<(String, ObjectId)> {
        let branch = self.heads.default_branch.clone()?;
        let head = self.branch(&branch)?;
        Some((branch, head))
    }
}

impl RemoteHeads {
    /// Branch heads and the default branch from the refs the remote advertised.
    pub fn advertised(refs: &[gix::protocol::handshake::Ref], fetched_at: jiff::Timestamp) -> Self {
        use gix::protocol::handshake::Ref;
        let mut heads = RemoteHeads {
            // Whole seconds, as the file keeps them.
            fetched_at: jiff::Timestamp::from_second(fetched_at.as_second()).ok(),
            ..RemoteHeads::default()
        };
        for reference in refs {
            match reference {
                Ref::Direct {
                    full_ref_name,
                    object,
                }
                | Ref::Peeled {
                    full_ref_name,
                    object,
                    ..
                }
                | Ref::Symbolic {
                    full_ref_name,
                    object,
                    ..
                } => {
                    if let Some(branch) = full_ref_name
                        .to_str()
                        .ok()
                        .and_then(|n| n.strip_prefix("refs/heads/"))
                    {
                        heads.branches.insert(branch.to_string(), *object);
                    }
                }
                Ref::Unborn { .. } => {}
            }
            if let Ref::Symbolic {
                full_ref_name,
                target,
                ..
            } = reference
                && full_ref_name == "HEAD"
            {
                heads.default_branch = target
                    .to_str()
                    .ok()
                    .and_then(|t| t.strip_prefix("refs/heads/"))
                    .map(str::to_string);
            }
        }
        heads
    }

    /// The heads saved in `clone`, if a fetch ever saved them there; a file that cannot be read
    /// or parsed counts as none.
    pub fn load(clone: &Path) -> Option<Self> {
        let text = std::fs::read_to_string(clone.join(FILE)).ok()?;
        Self::parse(&text)
    }

    fn parse(text: &str) -> Option<Self> {
        let mut heads = RemoteHeads::default();
        for line in text.lines().filter(|line| !line.is_empty()) {
            let (first, rest) = line.split_once(' ')?;
            match first {
                "fetched" => {
                    heads.fetched_at = Some(jiff::Timestamp::from_second(rest.parse().ok()?).ok()?)
                }
                "default" => heads.default_branch = Some(rest.to_string()),
                commit => {
                    let commit = ObjectId::from_hex(commit.as_bytes()).ok()?;
                    heads.branches.insert(rest.to_string(), commit);
                }
            }
        }
        Some(heads)
    }

    fn render(&self) -> String {
        let mut text = String::new();
        if let Some(at) = self.fetched_at {
            text.push_str(&format!("fetched {}\n", at.as_second()));
        }
        if let Some(branch) = &self.default_branch {
            text.push_str(&format!("default {branch}\n"));
        }
        let mut branches: Vec<_> = self.branches.iter().collect();
        branches.sort();
        for (branch, commit) in branches {
            text.push_str(&format!("{commit} {branch}\n"));
        }
        text
    }

    /// Saves the heads in `clone`: written beside, then renamed over the old file.
    pub fn save(&self, clone: &Path) -> Result<(), GitError> {
        let target = clone.join(FILE);
        // A kill before the rename leaves a `.lock` file, removed as any other (see `owner`).
        let partial = clone.join(format!("{FILE}.lock"));
        let failed = |error: std::io::Error| GitError::Cache {
            path: target.display().to_string(),
            cause: error.to_string(),
        };
        let mut file = std::fs::File::create(&partial).map_err(failed)?;
        file.write_all(self.render().as_bytes()).map_err(failed)?;
        file.sync_all().map_err(failed)?;
        std::fs::rename(&partial, &target).map_err(failed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_survive_a_round_trip_through_the_file() {
        let commit = ObjectId::from_hex(b"0123456789abcdef0123456789abcdef01234567").unwrap();
        let heads = RemoteHeads {
            branches: HashMap::from([
                ("main".to_string(), commit),
                ("feature/x".to_string(), commit),
            ]),
            default_branch: Some("main".into()),
            fetched_at: Some(jiff::Timestamp::from_second(1_700_000_000).unwrap()),
        };
        let text = heads.render();
        assert_eq!(
            text,
            "fetched 1700000000\ndefault main\n\
             0123456789abcdef0123456789abcdef01234567 feature/x\n\
             0123456789abcdef0123456789abcdef01234567 main\n"
        );
        assert_eq!(RemoteHeads::parse(&text), Some(heads));
        assert_eq!(RemoteHeads::parse("nonsense\n"), None);
        assert_eq!(RemoteHeads::parse("fetched soon\n"), None);
    }
}
