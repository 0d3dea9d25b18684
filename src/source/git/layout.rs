//! Where a service's config lives in the repository: an ordered list of lookups, each
//! `BRANCH:PATH` with `{project}`, `{stage}` and `{service}` filled in from the event; the first
//! lookup that finds a file wins. `@default` as the branch is the remote's default branch (its
//! `HEAD`).

use std::fmt;

use super::GitError;
use crate::source::ServiceRef;

/// Keptn's layout: the service's config on the stage branch, then the stage's, then the
/// project's on the default branch — the order of Keptn's job-executor-service.
pub const KEPTN_LAYOUT: [&str; 3] = [
    "{stage}:{service}/job/config.yaml",
    "{stage}:job/config.yaml",
    "@default:job/config.yaml",
];

const DEFAULT_BRANCH: &str = "@default";

/// A text with `{project}`, `{stage}` and `{service}` placeholders, split where they are: an event
/// renders it with one allocation, and a value that itself reads `{stage}` stays as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template(Vec<Piece>);

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Project,
    Stage,
    Service,
}

impl Template {
    fn parse(text: &str, lookup: &str) -> Result<Self, GitError> {
        let mut pieces = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find('{') {
            let after = &rest[open + 1..];
            let Some(close) = after.find('}') else {
                return Err(layout_error(lookup, "a `{` is not closed"));
            };
            let literal = &rest[..open];
            if literal.contains('}') {
                return Err(layout_error(lookup, "a `}` has no `{`"));
            }
            if !literal.is_empty() {
                pieces.push(Piece::Text(literal.to_string()));
            }
            pieces.push(match &after[..close] {
                "project" => Piece::Project,
                "stage" => Piece::Stage,
                "service" => Piece::Service,
                name => {
                    return Err(layout_error(
                        lookup,
                        &format!(
                            "unknown placeholder {{{name}}} (use {{project}}, {{stage}}, {{service}})"
                        ),
                    ));
                }
            });
            rest = &after[close + 1..];
        }
        if rest.contains('}') {
            return Err(layout_error(lookup, "a `}` has no `{`"));
        }
        if !rest.is_empty() {
            pieces.push(Piece::Text(rest.to_string()));
        }
        Ok(Template(pieces))
    }

    /// The text with the service's fields (checked to be single path segments) filled in.
    pub fn render(&self, service: &ServiceRef) -> String {
        let length = |piece: &Piece| -> usize {
            match piece {
                Piece::Text(text) => text.len(),
                Piece::Project => service.project.len(),
                Piece::Stage => service.stage.len(),
                Piece::Service => service.service.len(),
            }
        };
        let mut rendered = String::with_capacity(self.0.iter().map(length).sum());
        for piece in &self.0 {
            rendered.push_str(match piece {
                Piece::Text(text) => text,
                Piece::Project => &service.project,
                Piece::Stage => &service.stage,
                Piece::Service => &service.service,
            });
        }
        rendered
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Branch {
    /// The remote's default branch; never pinned by `gitcommitid`.
    Default,
    Named(Template),
}

/// One `BRANCH:PATH` lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lookup {
    pub branch: Branch,
    pub path: Template,
    text: String,
}

fn layout_error(lookup: &str, reason: &str) -> GitError {
    GitError::Layout {
        flag: "--git-lookup",
        lookup: lookup.to_string(),
        reason: reason.to_string(),
    }
}

impl Lookup {
    pub fn parse(text: &str) -> Result<Self, GitError> {
        let text = text.trim();
        let Some((branch, path)) = text.split_once(':') else {
            return Err(layout_error(
                text,
                "expected BRANCH:PATH, e.g. {stage}:{service}/job/config.yaml",
            ));
        };
        if branch.is_empty() || path.is_empty() {
            return Err(layout_error(
                text,
                "the branch and the path must not be empty",
            ));
        }
        if path.starts_with('/') || path.split('/').any(|part| part == "..") {
            return Err(layout_error(
                text,
                "the path is relative to the repository's top, without `/` at the start or `..`",
            ));
        }
        // The directory holding `job/` is where task files are read from, as written: it
        // names each directory once.
        if path.split('/').any(|part| part.is_empty() || part == ".") {
            return Err(layout_error(
                text,
                "the path names each directory once: no `.` and no empty part (`//`, a `/` at \
                 the end)",
            ));
        }
        let branch = if branch == DEFAULT_BRANCH {
            Branch::Default
        } else {
            Branch::Named(Template::parse(branch, text)?)
        };
        Ok(Lookup {
            branch,
            path: Template::parse(path, text)?,
            text: text.to_string(),
        })
    }

    /// `--git-files-from`: `BRANCH:DIR`, a directory (a trailing `/` is dropped).
    pub fn parse_files_from(text: &str) -> Result<Self, GitError> {
        let trimmed = text.trim().trim_end_matches('/');
        let refused = |lookup: String, reason: String| GitError::Layout {
            flag: "--git-files-from",
            lookup,
            reason,
        };
        if trimmed.ends_with(':') || !trimmed.contains(':') {
            return Err(refused(
                text.trim().to_string(),
                "expected BRANCH:DIR, e.g. {stage}:{service}".into(),
            ));
        }
        // A directory names each directory once, as a lookup's path does.
        Lookup::parse(trimmed).map_err(|error| match error {
            GitError::Layout { lookup, reason, .. } => refused(lookup, reason),
            other => other,
        })
    }

    pub fn keptn() -> Result<Vec<Lookup>, GitError> {
        KEPTN_LAYOUT
            .iter()
            .map(|text| Lookup::parse(text))
            .collect()
    }
}

impl fmt::Display for Lookup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// The directory a config's task files are relative to: the one holding `job/`
/// (`carts/job/config.yaml` → `carts`, `job/config.yaml` → the top, ``), or else the config
/// file's own directory.
pub fn files_dir(config_path: &str) -> String {
    let parent = config_path.rsplit_once('/').map_or("", |(dir, _)| dir);
    let dir = match parent.rsplit_once('/') {
        Some((above, "job")) => above,
        None if parent == "job" => "",
        _ => parent,
    };
    dir.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn carts() -> ServiceRef {
        ServiceRef {
            project: "sockshop".into(),
            stage: "dev".into(),
            service: "carts".into(),
        }
    }

    fn named_branch(lookup: &Lookup) -> &Template {
        match &lookup.branch {
            Branch::Named(branch) => branch,
            Branch::Default => panic!("a named branch: {lookup:?}"),
        }
    }

    #[test]
    fn files_from_is_a_branch_and_a_directory() {
        for text in [
            "{stage}:{service}",
            "{stage}:{service}/",
            " {stage}:{service}/ ",
        ] {
            let from = Lookup::parse_files_from(text).unwrap();
            assert_eq!(named_branch(&from).render(&carts()), "dev", "{text}");
            assert_eq!(from.path.render(&carts()), "carts", "{text}");
        }
        for (text, reason) in [
            (
                "{stage}",
                "invalid --git-files-from \"{stage}\": expected BRANCH:DIR",
            ),
            ("{stage}:", "expected BRANCH:DIR"),
            ("{stage}:../{service}", "invalid --git-files-from"),
            ("{stage}:/", "expected BRANCH:DIR"),
            ("{stage}:../{service}", "without `/` at the start or `..`"),
            ("{stage}:./{service}", "names each directory once"),
            ("{stage}:a//{service}", "names each directory once"),
        ] {
            let error = Lookup::parse_files_from(text).unwrap_err().to_string();
            assert!(error.contains(reason), "{text}: {error}");
        }
    }

    #[test]
    fn the_keptn_layout_looks_up_service_stage_then_project() {
        let lookups = Lookup::keptn().unwrap();
        let rendered: Vec<(Option<String>, String)> = lookups
            .iter()
            .map(|l| {
                let branch = match &l.branch {
                    Branch::Default => None,
                    Branch::Named(t) => Some(t.render(&carts())),
                };
                (branch, l.path.render(&carts()))
            })
            .collect();
        assert_eq!(
            rendered,
            [
                (Some("dev".into()), "carts/job/config.yaml".into()),
                (Some("dev".into()), "job/config.yaml".into()),
                (None, "job/config.yaml".into()),
            ]
        );
    }

    #[test]
    fn single_branch_layouts_and_every_placeholder_render() {
        let lookup = Lookup::parse("main:{project}/{stage}/{service}/job/config.yaml").unwrap();
        let branch = named_branch(&lookup);
        assert_eq!(branch.render(&carts()), "main");
        assert_eq!(
            lookup.path.render(&carts()),
            "sockshop/dev/carts/job/config.yaml"
        );
        assert_eq!(
            lookup.to_string(),
            "main:{project}/{stage}/{service}/job/config.yaml"
        );
    }

    #[test]
    fn placeholders_side_by_side_render_once_each() {
        let lookup = Lookup::parse("{stage}{service}:{project}-{stage}.yaml").unwrap();
        let branch = named_branch(&lookup);
        assert_eq!(branch.render(&carts()), "devcarts");
        // A value is filled in as it is, not read again for placeholders.
        let odd = ServiceRef {
            project: "{stage}".into(),
            ..carts()
        };
        assert_eq!(lookup.path.render(&odd), "{stage}-dev.yaml");
    }

    #[test]
    fn bad_lookups_are_refused_with_the_reason() {
        for (text, reason) in [
            ("job/config.yaml", "expected BRANCH:PATH"),
            (":job/config.yaml", "must not be empty"),
            ("main:{team}/job/config.yaml", "unknown placeholder {team}"),
            ("main:{stage/job/config.yaml", "not closed"),
            ("main:{stage}}/job/config.yaml", "has no `{`"),
            ("main:a}b{stage}/job/config.yaml", "has no `{`"),
            ("main:/etc/job.yaml", "relative to the repository's top"),
            ("main:../x/job.yaml", "relative to the repository's top"),
            (
                "main:./{service}/job/config.yaml",
                "names each directory once",
            ),
            (
                "main:{service}//job/config.yaml",
                "names each directory once",
            ),
            ("main:{service}/job/", "names each directory once"),
        ] {
            let error = Lookup::parse(text).unwrap_err().to_string();
            assert!(error.contains(reason), "{text}: {error}");
            assert!(error.contains(text), "{text}: {error}");
        }
    }

    #[test]
    fn files_are_relative_to_the_directory_holding_job() {
        assert_eq!(files_dir("carts/job/config.yaml"), "carts");
        assert_eq!(files_dir("job/config.yaml"), "");
        assert_eq!(files_dir("dev/carts/job/config.yaml"), "dev/carts");
        assert_eq!(files_dir("configs/carts.yaml"), "configs");
        assert_eq!(files_dir("config.yaml"), "");
    }
}
