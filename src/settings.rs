//! Installation settings: what the platform team decides once for every Job (namespace,
//! defaults, allow-list, security). Plain values; the CLI builds them from flags and env.

use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

use crate::config::Quantity;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettingsError {
    #[error("invalid image pattern {pattern:?} in the allow-list: {reason}")]
    ImagePattern { pattern: String, reason: String },
    #[error("invalid {setting} {value:?}: {reason}")]
    Invalid {
        setting: &'static str,
        value: String,
        reason: String,
    },
}

// The defaults of the installation flags, in one place for the CLI and for tests.
pub const DEFAULT_JOB_NAMESPACE: &str = "default";
pub const DEFAULT_CPU_REQUEST: &str = "50m";
pub const DEFAULT_MEMORY_REQUEST: &str = "128Mi";
pub const DEFAULT_CPU_LIMIT: &str = "1";
pub const DEFAULT_MEMORY_LIMIT: &str = "512Mi";
pub const DEFAULT_EMPTY_DIR_SIZE_LIMIT: &str = "20Mi";
pub const DEFAULT_MAX_POLL_DURATION: i64 = 300;
pub const DEFAULT_TTL_SECONDS_AFTER_FINISHED: i32 = 21600;
pub const DEFAULT_EVENT_SOURCE: &str = "job-executor";
/// The user task pods run as, as Keptn's job-executor-service ran them: images whose user is
/// root (`alpine`) or a name could not start under `runAsNonRoot` otherwise.
pub const DEFAULT_RUN_AS_USER: i64 = 1000;
/// The group task pods run as and that owns their volumes, as Keptn's service had it.
pub const DEFAULT_RUN_AS_GROUP: i64 = 2000;
pub const DEFAULT_INIT_IMAGE: &str = concat!(
    "ghcr.io/job-executor/job-executor:",
    env!("CARGO_PKG_VERSION")
);

#[derive(Debug, Clone)]
pub struct Settings {
    /// The only namespace Jobs (and their ConfigMaps) are created in.
    pub job_namespace: String,
    pub resources: DefaultResources,
    pub security: SecurityDefaults,
    /// Whether a task may ask for a privileged container.
    pub allow_privileged: bool,
    pub allowed_images: ImageAllowList,
    /// The image of the init container that stages files (the operator's own image).
    pub init_image: String,
    /// The Secrets for pulling the init image, on every pod that stages files.
    pub init_image_pull_secrets: Vec<String>,
    /// The ServiceAccount of task pods that do not name one.
    pub default_service_account: Option<String>,
    /// ServiceAccounts no task may run as (the operator's own).
    pub refused_service_accounts: Vec<String>,
    /// Secrets of the job namespace no task may read (the operator's own, when Jobs run
    /// beside it): names, or the start of names before a final `*` (`sh.helm.release.v1.*`).
    pub refused_secrets: Vec<String>,
    pub empty_dir_size_limit: Quantity,
    pub default_max_poll_duration: i64,
    pub default_ttl_seconds_after_finished: i32,
    /// Labels every Job and its pods get.
    pub job_labels: std::collections::BTreeMap<String, String>,
    /// The `source` attribute of outgoing events.
    pub event_source: String,
    /// The installation's notification targets (`--notify`), heard by every run after its
    /// action's own.
    pub notify: Vec<crate::config::NotifyRule>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DefaultResources {
    pub cpu_request: Quantity,
    pub memory_request: Quantity,
    pub cpu_limit: Quantity,
    pub memory_limit: Quantity,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecurityDefaults {
    pub run_as_non_root: bool,
    pub run_as_user: Option<i64>,
    pub run_as_group: Option<i64>,
    pub fs_group: Option<i64>,
    pub read_only_root_filesystem: bool,
}

/// Image reference globs (`*` matches any run of characters, `/` included).
#[derive(Debug, Clone)]
pub struct ImageAllowList {
    patterns: Vec<String>,
    /// `None` when a pattern is a bare `*`: everything is allowed.
    set: Option<GlobSet>,
}

impl ImageAllowList {
    /// Allows every image.
    pub fn any() -> Self {
        ImageAllowList {
            patterns: vec!["*".to_string()],
            set: None,
        }
    }

    pub fn new(patterns: &[String]) -> Result<Self, SettingsError> {
        if patterns.iter().any(|p| p == "*") {
            return Ok(Self::any());
        }
        let mut builder = GlobSetBuilder::new();
        for pattern in patterns {
            let glob = GlobBuilder::new(&pinned_pattern(pattern)?)
                .literal_separator(false)
                .build()
                .map_err(|e| SettingsError::ImagePattern {
                    pattern: pattern.clone(),
                    reason: e.kind().to_string(),
                })?;
            builder.add(glob);
        }
        let set = builder.build().map_err(|e| SettingsError::ImagePattern {
            pattern: patterns.join(","),
            reason: e.to_string(),
        })?;
        Ok(ImageAllowList {
            patterns: patterns.to_vec(),
            set: Some(set),
        })
    }

    /// Whether a task may use `image`. One pinned by a digest is matched as the container
    /// runtime pulls it, by the digest alone (`name@sha256:…`, its tag left out): a pattern of
    /// tags (`deploy:v1.*`) does not let in every image of the repository under such a tag.
    pub fn allows(&self, image: &str) -> bool {
        self.set
            .as_ref()
            .is_none_or(|set| set.is_match(&*as_pulled(image)))
    }

    pub fn patterns(&self) -> &[String] {
        &self.patterns
    }
}

impl Settings {
    /// The flags' defaults, with Jobs in namespace `default`.
    pub fn defaults() -> Self {
        Settings {
            job_namespace: DEFAULT_JOB_NAMESPACE.into(),
            resources: DefaultResources {
                cpu_request: Quantity(DEFAULT_CPU_REQUEST.into()),
                memory_request: Quantity(DEFAULT_MEMORY_REQUEST.into()),
                cpu_limit: Quantity(DEFAULT_CPU_LIMIT.into()),
                memory_limit: Quantity(DEFAULT_MEMORY_LIMIT.into()),
            },
            security: SecurityDefaults {
                run_as_non_root: true,
                run_as_user: Some(DEFAULT_RUN_AS_USER),
                run_as_group: Some(DEFAULT_RUN_AS_GROUP),
                fs_group: Some(DEFAULT_RUN_AS_GROUP),
                read_only_root_filesystem: true,
            },
            allow_privileged: false,
            allowed_images: ImageAllowList::any(),
            init_image: DEFAULT_INIT_IMAGE.into(),
            init_image_pull_secrets: Vec::new(),
            default_service_account: None,
            refused_service_accounts: Vec::new(),
            refused_secrets: Vec::new(),
            empty_dir_size_limit: Quantity(DEFAULT_EMPTY_DIR_SIZE_LIMIT.into()),
            default_max_poll_duration: DEFAULT_MAX_POLL_DURATION,
            default_ttl_seconds_after_finished: DEFAULT_TTL_SECONDS_AFTER_FINISHED,
            job_labels: Default::default(),
            event_source: DEFAULT_EVENT_SOURCE.into(),
            notify: Vec::new(),
        }
    }
}

impl Settings {
    /// Whether no task may read the Secret `name`: an entry of `refused_secrets` names it, or
    /// ends in `*` after the start of its name.
    pub fn refuses_secret(&self, name: &str) -> bool {
        self.refused_secrets
            .iter()
            .any(|entry| match entry.strip_suffix('*') {
                Some(prefix) => name.starts_with(prefix),
                None => entry == name,
            })
    }
}

/// A pattern as images are matched, as pulled: one naming a tag and an exact digest
/// (`alpine:3.20@sha256:…`, as Renovate pins) names the digest. A tag beside a digest that is
/// a glob is refused: it would be read as allowing every pinned image of the repository, as
/// the tag does not say what runs; so is a digest inside alternatives or a class (one
/// pattern per pinned image).
fn pinned_pattern(pattern: &str) -> Result<std::borrow::Cow<'_, str>, SettingsError> {
    let Some((named, digest)) = pattern.split_once('@') else {
        return Ok(pattern.into());
    };
    let refused = |reason: &str| SettingsError::ImagePattern {
        pattern: pattern.to_string(),
        reason: reason.to_string(),
    };
    let open = |opening: char, closing: char| {
        named.matches(opening).count() > named.matches(closing).count()
    };
    if open('{', '}') || open('[', ']') {
        return Err(refused(
            "a digest inside alternatives or a class: write one pattern per pinned image",
        ));
    }
    let pulled = as_pulled(pattern);
    let has_tag = pulled.len() != pattern.len();
    if has_tag && digest.contains(['*', '?', '[', '{']) {
        return Err(refused(
            "a tag beside a digest pattern: a pinned image is pulled by its digest alone, so \
             the tag would allow nothing less; write NAME@sha256:* for any pinned image of \
             NAME, or name the digest",
        ));
    }
    Ok(pulled)
}

/// `image` as the container runtime pulls it: with a digest, without its tag.
fn as_pulled(image: &str) -> std::borrow::Cow<'_, str> {
    let Some((named, digest)) = image.split_once('@') else {
        return image.into();
    };
    // The tag follows the last `:` of the last part (a registry's port is in the first).
    let last_part = named.rfind('/').map_or(0, |slash| slash + 1);
    match named[last_part..].rfind(':') {
        Some(colon) => format!("{}@{digest}", &named[..last_part + colon]).into(),
        None => image.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_image_pinned_by_a_digest_is_matched_without_its_tag() {
        let list = ImageAllowList::new(&[
            "ghcr.io/acme/deploy:v1.*".to_string(),
            "registry:5000/tools/lint@sha256:*".to_string(),
        ])
        .unwrap();
        assert!(list.allows("ghcr.io/acme/deploy:v1.2"));
        // The runtime pulls the digest, whatever the tag says.
        assert!(!list.allows("ghcr.io/acme/deploy:v1.2@sha256:0123"));
        assert!(list.allows("registry:5000/tools/lint@sha256:0123"));
        assert!(list.allows("registry:5000/tools/lint:9@sha256:0123"));
        assert!(!list.allows("registry:5000/tools/lint:9"));
        assert!(ImageAllowList::any().allows("alpine:3@sha256:0123"));
        assert_eq!(
            as_pulled("registry:5000/a/b:1@sha256:9"),
            "registry:5000/a/b@sha256:9"
        );
        assert_eq!(
            as_pulled("registry:5000/a/b@sha256:9"),
            "registry:5000/a/b@sha256:9"
        );
        assert_eq!(as_pulled("alpine:3.20"), "alpine:3.20");
        // A pattern naming a tag and an exact digest names the digest.
        let pinned = ImageAllowList::new(&["alpine:3.20@sha256:ab12".to_string()]).unwrap();
        assert!(pinned.allows("alpine:3.20@sha256:ab12"));
        assert!(pinned.allows("alpine@sha256:ab12"));
        assert!(!pinned.allows("alpine@sha256:cd12"));
        assert!(!pinned.allows("alpine:3.20"));
        // A tag beside a digest pattern would allow every pinned image of the repository; a
        // digest in alternatives cannot be read apart from them: both refused at the start.
        for (pattern, reason) in [
            (
                "ghcr.io/acme/deploy:v1.*@sha256:*",
                "a tag beside a digest pattern",
            ),
            ("*:stable@*", "a tag beside a digest pattern"),
            ("{alpine:3@sha256:aa,busybox}", "inside alternatives"),
            ("deploy:[!@]*", "inside alternatives or a class"),
        ] {
            let error = ImageAllowList::new(&[pattern.to_string()])
                .unwrap_err()
                .to_string();
            assert!(error.contains(reason) && error.contains(pattern), "{error}");
        }
        let any_pinned =
            ImageAllowList::new(&["ghcr.io/acme/deploy@sha256:*".to_string()]).unwrap();
        assert!(any_pinned.allows("ghcr.io/acme/deploy:v9@sha256:ff"));
        assert!(!any_pinned.allows("ghcr.io/acme/deploy:v9"));
    }

    #[test]
    fn refused_secrets_are_names_or_the_start_of_names() {
        let settings = Settings {
            refused_secrets: vec!["job-executor".into(), "sh.helm.release.v1.*".into()],
            ..Settings::defaults()
        };
        assert!(settings.refuses_secret("job-executor"));
        assert!(!settings.refuses_secret("job-executor-local"));
        assert!(settings.refuses_secret("sh.helm.release.v1.job-executor.v3"));
        assert!(!settings.refuses_secret("sh.helm.release.v2.x"));
        assert!(!settings.refuses_secret("team-token"));
    }

    #[test]
    fn allow_list_matches_whole_references() {
        let list =
            ImageAllowList::new(&["alpine:*".to_string(), "ghcr.io/acme/*".to_string()]).unwrap();
        assert!(list.allows("alpine:3.20"));
        assert!(list.allows("ghcr.io/acme/tools/helm:3"));
        assert!(!list.allows("docker.io/alpine:3.20"));
        assert!(!list.allows("ghcr.io/evil/acme/x"));
        assert!(!list.allows("alpine"));
    }

    #[test]
    fn empty_allow_list_allows_nothing() {
        let list = ImageAllowList::new(&[]).unwrap();
        assert!(!list.allows("alpine"));
    }

    #[test]
    fn invalid_pattern_is_named() {
        let error = ImageAllowList::new(&["alpine:[".to_string()]).unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("invalid image pattern \"alpine:[\""),
            "{error}"
        );
    }
}
