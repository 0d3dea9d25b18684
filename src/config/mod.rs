//! The job config (`job/config.yaml`): model, strict loading with located errors, semantic
//! checks and the JSON Schema.
//!
//! Loading is a pipeline: YAML text → located tree (`yaml`) → structural check against the
//! schema generated from the types (`check`) → typed model (serde) → semantic checks
//! (this module). Every stage reports all it finds, each problem with line, column and key path,
//! and a problem found by one stage does not hide the others: after a duplicate key the tree is
//! still checked, and after a structural problem the semantic checks still run on every action,
//! task and env var that has none.

mod check;
pub mod formats;
pub mod graph;
mod model;
mod published;
pub mod yaml;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::OnceLock;

use serde_path_to_error::Segment;

pub use check::{Problem, key_path, suggest};
pub use model::*;
pub use published::published_schema;
pub use yaml::Location;

use check::index_path;

/// The lowest `ttlSecondsAfterFinished` a task gets: logs must still be readable when the
/// operator collects them.
pub const MIN_TTL_SECONDS: i32 = 60;

/// A config that cannot be used: every problem found in it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("{}", render_problems(.file, .problems))]
    Invalid {
        file: String,
        problems: Vec<Problem>,
        /// The event names its actions give, as far as the file can be read: which events
        /// the failure concerns.
        named_types: EventNames,
    },
    #[error("cannot read {file}: {reason}")]
    Unreadable { file: String, reason: String },
    #[error(
        "{file}: the file is too large: {size} bytes, over the limit of {limit} bytes for a job config"
    )]
    TooLarge { file: String, size: u64, limit: u64 },
}

/// The largest config file read (1 MiB; a config with a thousand actions is about 300 KiB).
/// Checked before the file is read, so a huge file committed by mistake costs nothing; the
/// YAML node limit (`yaml::MAX_NODES`) bounds what a small file can expand to.
pub const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// The most actions one config may have: every matching action is a run, so this bounds what
/// one event can start (Keptn's configs have a handful).
pub const MAX_ACTIONS: usize = 1000;

/// The most tasks one action may have: each is a Job, run one after the other, and recorded
/// in its run.
pub const MAX_TASKS: usize = 100;
/// The most notification targets of one action.
pub const MAX_NOTIFY: usize = 10;
/// The most of a container's termination message the kubelet keeps: a task's outputs are
/// written there, a `name=value` line each.
pub const TERMINATION_MESSAGE_BYTES: usize = 4096;

/// The bytes of an object's annotations, keys and values, the API server takes (256 KiB).
const MAX_ANNOTATION_BYTES: usize = 256 * 1024;

/// The size error for a config of `size` bytes, when that is over the limit.
pub fn check_size(file: &str, size: u64) -> Result<(), ConfigError> {
    if size > MAX_CONFIG_BYTES {
        return Err(ConfigError::TooLarge {
            file: file.to_string(),
            size,
            limit: MAX_CONFIG_BYTES,
        });
    }
    Ok(())
}

/// Reads a config file from disk, refusing one over `MAX_CONFIG_BYTES` before reading it (and
/// reading no more than that, should it grow meanwhile).
pub fn read_file(path: &Path) -> Result<String, ConfigError> {
    use std::io::Read;
    let file = path.display().to_string();
    let unreadable = |error: std::io::Error| ConfigError::Unreadable {
        file: file.clone(),
        reason: error.to_string(),
    };
    let opened = std::fs::File::open(path).map_err(unreadable)?;
    check_size(&file, opened.metadata().map_err(unreadable)?.len())?;
    let mut bytes = Vec::new();
    opened
        .take(MAX_CONFIG_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(unreadable)?;
    check_size(&file, bytes.len() as u64)?;
    text_of(bytes, &file)
}

/// A config file's bytes as text. Bytes that are not UTF-8 (a comment saved as Latin-1) make
/// the file invalid, said at the first of them, and the failure concerns the event names its
/// actions give, read from the rest: as unreadable, it failed every event of the service, the
/// tasks of Keptn's other services among them.
pub fn text_of(bytes: Vec<u8>, file: &str) -> Result<String, ConfigError> {
    let error = match String::from_utf8(bytes) {
        Ok(text) => return Ok(text),
        Err(error) => error,
    };
    let valid_up_to = error.utf8_error().valid_up_to();
    let bytes = error.as_bytes();
    let before = String::from_utf8_lossy(&bytes[..valid_up_to]);
    let line_start = before.rfind('\n').map_or(0, |at| at + 1);
    let location = yaml::Location {
        line: before.matches('\n').count() + 1,
        column: before[line_start..].chars().count() + 1,
    };
    let text = String::from_utf8_lossy(bytes);
    let names = match yaml::parse_document(&text) {
        Ok(document) => tree_names(&document.root),
        // Nothing read of a file that is not YAML either (UTF-16, a binary file): every type,
        // as of a file that cannot be read, so that the service's events are told the config
        // cannot be used.
        Err(_) => match scanned_names(&text) {
            names if names.is_empty() => vec!["*".into()],
            names => names,
        },
    };
    Err(ConfigError::Invalid {
        file: file.to_string(),
        problems: vec![Problem {
            location,
            path: String::new(),
            message: format!(
                "the byte 0x{:02X} here is not UTF-8: save the file as UTF-8",
                bytes.get(valid_up_to).copied().unwrap_or_default()
            ),
        }],
        named_types: EventNames::new(names),
    })
}

impl ConfigError {
    /// Whether an event of this type may be one the config was written for, so that its
    /// sender (a Keptn sequence waiting on the task) is told the config cannot be used: an
    /// invalid config concerns the types its actions name (each a glob, as when it loads), a
    /// config that could not be read at all every type.
    pub fn concerns(&self, event_type: &str) -> bool {
        match self {
            ConfigError::Invalid { named_types, .. } => named_types.names(event_type),
            _ => true,
        }
    }
}

/// The event names an unusable config's actions give (`actions[].events[].name`), read from
/// its YAML tree whatever else is wrong with it, or, of a file that is not YAML, from its text
/// ([`scanned_names`]); compiled once, as the error is made, since every event of the service
/// asks. A filter without a name names every type (the old service matched every event with
/// it).
#[derive(Clone)]
pub struct EventNames {
    names: Vec<String>,
    /// `None` when the names cannot be compiled together (too many for the matcher's size
    /// limit): every type is then concerned, as of a file that cannot be read.
    globs: Option<globset::GlobSet>,
}

impl EventNames {
    fn new(mut names: Vec<String>) -> EventNames {
        names.sort();
        names.dedup();
        let mut globs = globset::GlobSetBuilder::new();
        for name in &names {
            // A name that is no glob is taken as it is written.
            let glob =
                formats::event_glob(name).or_else(|_| formats::event_glob(&globset::escape(name)));
            if let Ok(glob) = glob {
                globs.add(glob);
            }
        }
        let globs = globs.build().ok();
        EventNames { names, globs }
    }

    fn names(&self, event_type: &str) -> bool {
        self.globs
            .as_ref()
            .is_none_or(|globs| globs.is_match(event_type))
    }
}

impl std::fmt::Debug for EventNames {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(&self.names).finish()
    }
}

impl PartialEq for EventNames {
    fn eq(&self, other: &EventNames) -> bool {
        self.names == other.names
    }
}

impl Eq for EventNames {}

/// The event names of a config's YAML tree: under every `events` key (wherever a merge key
/// put it), each filter's `name`, `*` for a filter without one, a plain item itself.
fn tree_names(root: &yaml::Node) -> Vec<String> {
    fn filters(node: &yaml::Node, names: &mut Vec<String>) {
        match &node.value {
            yaml::NodeValue::Scalar { text, .. } => names.push(text.clone()),
            yaml::NodeValue::Sequence(items) => items.iter().for_each(|item| filters(item, names)),
            yaml::NodeValue::Mapping(entries) => {
                let name =
                    entries
                        .iter()
                        .find_map(|(key, value)| match (&key.value, &value.value) {
                            (
                                yaml::NodeValue::Scalar { text: key, .. },
                                yaml::NodeValue::Scalar { text: name, .. },
                            ) if key == "name" && !value.is_null() => Some(name.clone()),
                            _ => None,
                        });
                names.push(name.unwrap_or_else(|| "*".to_string()));
            }
        }
    }
    fn anywhere(node: &yaml::Node, names: &mut Vec<String>) {
        match &node.value {
            yaml::NodeValue::Scalar { .. } => {}
            yaml::NodeValue::Sequence(items) => items.iter().for_each(|item| anywhere(item, names)),
            yaml::NodeValue::Mapping(entries) => {
                for (key, value) in entries {
                    match &key.value {
                        yaml::NodeValue::Scalar { text, .. } if text == "events" => {
                            if !value.is_null() {
                                filters(value, names);
                            }
                        }
                        _ => anywhere(value, names),
                    }
                }
            }
        }
    }
    let mut names = Vec::new();
    anywhere(root, &mut names);
    names
}

/// The values written after a `name` key in a text that is not YAML: more than the events'
/// names (an action's or a variable's name matches no event type it does not spell). A quoted
/// value ends at its quote; a plain one at a space, a comment, or a `,`, `]` or `}` that closes
/// nothing it opened (`sh.keptn.event.{test,load}.triggered` is one name); an anchor (`&a`)
/// before it is passed over.
fn scanned_names(text: &str) -> Vec<String> {
    // A name is read from at most this many bytes, and past this many names every type counts
    // as named: a line of many `name:` without an end (a file that is not YAML) would be read
    // once per name otherwise.
    const MOST_NAME_BYTES: usize = 512;
    const MOST_NAMES: usize = 10_000;
    let mut names = Vec::new();
    for line in text.lines() {
        let mut rest = line;
        while let Some(at) = rest.find("name") {
            let before = rest[..at].chars().next_back();
            let after = rest[at + "name".len()..].trim_start_matches(['"', '\'']);
            let after = after.trim_start();
            rest = &rest[at + "name".len()..];
            let Some(value) = after.strip_prefix(':') else {
                continue;
            };
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '-') {
                continue;
            }
            if names.len() == MOST_NAMES {
                names.push("*".to_string());
                return names;
            }
            let value = value.trim_start();
            let mut end = value.len().min(MOST_NAME_BYTES);
            while !value.is_char_boundary(end) {
                end -= 1;
            }
            let mut value = &value[..end];
            if let Some(anchored) = value.strip_prefix('&') {
                value = anchored
                    .split_once(char::is_whitespace)
                    .map_or("", |(_, value)| value.trim_start());
            }
            let name = match value.chars().next() {
                Some(quote @ ('"' | '\'')) => value[1..].split(quote).next().unwrap_or_default(),
                _ => {
                    let mut depth = 0usize;
                    let mut end = value.len();
                    for (index, c) in value.char_indices() {
                        match c {
                            '{' | '[' => depth += 1,
                            '}' | ']' | ',' if depth == 0 => {
                                end = index;
                                break;
                            }
                            '}' | ']' => depth -= 1,
                            c if c.is_whitespace() => {
                                end = index;
                                break;
                            }
                            _ => {}
                        }
                    }
                    &value[..end]
                }
            };
            if !name.is_empty() {
                names.push(name.to_string());
            }
        }
    }
    names
}

/// A config that loaded, with what `validate` warns about.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidConfig {
    pub config: JobConfig,
    pub warnings: Vec<Problem>,
}

/// `file:line:col: path: message`, one line per problem, as compilers print them.
pub fn render_problems(file: &str, problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| format_problem(file, p))
        .collect::<Vec<_>>()
        .join("\n")
}

pub fn format_problem(file: &str, problem: &Problem) -> String {
    let Problem {
        location,
        path,
        message,
    } = problem;
    if path.is_empty() {
        format!("{file}:{location}: {message}")
    } else {
        format!("{file}:{location}: {path}: {message}")
    }
}

/// The JSON Schema of the config format, generated from the types.
pub fn json_schema() -> &'static serde_json::Value {
    static SCHEMA: OnceLock<serde_json::Value> = OnceLock::new();
    SCHEMA.get_or_init(|| schemars::schema_for!(JobConfig).to_value())
}

/// Reads and loads a config file.
pub fn load_file(path: &Path) -> Result<ValidConfig, ConfigError> {
    let text = read_file(path)?;
    load(&text, &path.display().to_string())
}

/// Loads a config from its text; `file` names it in messages.
pub fn load(text: &str, file: &str) -> Result<ValidConfig, ConfigError> {
    load_with_schema(text, file, json_schema())
}

/// Loads a config, checking its structure against `schema` (the generated one, except in the
/// tests that prove what happens when the schema and the types disagree).
fn load_with_schema(
    text: &str,
    file: &str,
    schema: &serde_json::Value,
) -> Result<ValidConfig, ConfigError> {
    check_size(file, text.len() as u64)?;
    let invalid = |problems: Vec<Problem>, document: Option<&yaml::Node>| ConfigError::Invalid {
        file: file.to_string(),
        problems: sorted(problems),
        named_types: EventNames::new(match document {
            Some(root) => tree_names(root),
            None => scanned_names(text),
        }),
    };
    let document = yaml::parse_document(text).map_err(|error| invalid(vec![error.into()], None))?;
    let checked = check::check(&document.root, schema);
    let mut errors: Vec<Problem> = document.errors.into_iter().map(Problem::from).collect();
    let mut semantic = Semantic {
        locations: &checked.locations,
        errors: Vec::new(),
        warnings: Vec::new(),
    };
    let config = if checked.problems.is_empty() {
        let config = semantic.typed::<JobConfig>("", &checked.value);
        if let Some(config) = &config {
            semantic.config(config);
        }
        config
    } else {
        // The file cannot be used, but every part the structural check found nothing wrong
        // with still gets the checks across fields, so that one run reports all.
        semantic.salvage(&checked.value, &checked.problems);
        errors.extend(checked.problems);
        None
    };
    errors.append(&mut semantic.errors);
    match config {
        Some(mut config) if errors.is_empty() => {
            root_jsonpaths(&mut config);
            Ok(ValidConfig {
                config,
                warnings: sorted(semantic.warnings),
            })
        }
        _ => Err(invalid(errors, Some(&document.root))),
    }
}

/// Writes every JSONPath of a valid config as it reads (`data.project` as `$.data.project`,
/// warned about): what matches events, renders env and is stored in a run is the path itself.
fn root_jsonpaths(config: &mut JobConfig) {
    let root = |path: &mut String| {
        let reads_as = match formats::config_jsonpath(path) {
            Ok(reads_as) if reads_as != path.as_str() => reads_as.into_owned(),
            _ => return,
        };
        *path = reads_as;
    };
    for action in &mut config.actions {
        for event in &mut action.events {
            if let Some(jsonpath) = &mut event.jsonpath {
                root(&mut jsonpath.property);
            }
        }
        for task in &mut action.tasks {
            for env in &mut task.env {
                if env.value_from == Some(ValueFrom::Event)
                    && let Some(value) = &mut env.value
                {
                    root(value);
                }
            }
        }
    }
}

impl From<yaml::YamlError> for Problem {
    fn from(error: yaml::YamlError) -> Self {
        Problem {
            location: error.location,
            path: String::new(),
            message: error.message,
        }
    }
}

fn sorted(mut problems: Vec<Problem>) -> Vec<Problem> {
    problems.sort_by_key(|p| p.location);
    problems
}

/// The items of the list at `key` of a mapping read by the structural check; none when the
/// key is missing or was left out for its problems.
fn items<'v>(value: &'v serde_json::Value, key: &str) -> &'v [serde_json::Value] {
    value
        .get(key)
        .and_then(serde_json::Value::as_array)
        .map_or(&[], Vec::as_slice)
}

/// Whether no problem lies at `path` or under it.
fn is_clean(path: &str, problems: &[Problem]) -> bool {
    !problems.iter().any(|problem| {
        problem
            .path
            .strip_prefix(path)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '[']))
    })
}

/// Checks across fields, on the typed model; located through the paths the structural check
/// recorded.
struct Semantic<'a> {
    locations: &'a HashMap<String, Location>,
    errors: Vec<Problem>,
    warnings: Vec<Problem>,
}

impl Semantic<'_> {
    fn problem(&self, path: &str, message: String) -> Problem {
        // A path without a recorded location (a default) points at its closest parent.
        let mut lookup = path;
        let location = loop {
            if let Some(location) = self.locations.get(lookup) {
                break *location;
            }
            match lookup.rfind(['.', '[']) {
                Some(cut) => lookup = &lookup[..cut],
                None => break self.locations.get("").copied().unwrap_or_default(),
            }
        };
        Problem {
            location,
            path: path.to_string(),
            message,
        }
    }

    fn error(&mut self, path: &str, message: String) {
        let problem = self.problem(path, message);
        self.errors.push(problem);
    }

    fn warn(&mut self, path: &str, message: String) {
        let problem = self.problem(path, message);
        self.warnings.push(problem);
    }

    /// Reads the part of the config at `path` into its type. The structural check accepts
    /// only what the types accept, so this fails only if the schema and the types disagree;
    /// the message then still names the key and points at its value.
    fn typed<T: serde::de::DeserializeOwned>(
        &mut self,
        path: &str,
        value: &serde_json::Value,
    ) -> Option<T> {
        match serde_path_to_error::deserialize(value) {
            Ok(typed) => Some(typed),
            Err(error) => {
                let mut at = path.to_string();
                for segment in error.path().iter() {
                    at = match segment {
                        Segment::Seq { index } => index_path(&at, *index),
                        Segment::Map { key } | Segment::Enum { variant: key } => key_path(&at, key),
                        Segment::Unknown => break,
                    };
                }
                let message = error.into_inner().to_string();
                self.error(&at, message);
                None
            }
        }
    }

    /// The checks across fields for a config the structural check found problems in: every
    /// action, task, env var, `labels` and `annotations` free of problems is checked as usual,
    /// and so are an action's limits, `notify` and the checks across its tasks (`needs`,
    /// outputs) as far as the parts they read are free of problems.
    /// Only errors matter here (the file is invalid, so warnings are not shown).
    fn salvage(&mut self, value: &serde_json::Value, problems: &[Problem]) {
        for (index, action) in items(value, "actions").iter().enumerate() {
            let action_path = index_path("actions", index);
            if is_clean(&action_path, problems) {
                if let Some(action) = self.typed::<Action>(&action_path, action) {
                    self.action(&action_path, &action);
                }
                continue;
            }
            self.salvage_action(&action_path, action, problems);
        }
    }

    /// [`Self::salvage`] for an action with problems.
    fn salvage_action(&mut self, path: &str, action: &serde_json::Value, problems: &[Problem]) {
        // What the checks across tasks read of each task; a task's parts with problems are
        // left at their defaults, and the checks that would read them are skipped (a name
        // left out would make every `needs` of it look wrong).
        let mut tasks = Vec::new();
        let mut names_known = true;
        let mut outputs_known = true;
        for (index, task) in items(action, "tasks").iter().enumerate() {
            let task_path = index_path(&key_path(path, "tasks"), index);
            if is_clean(&task_path, problems) {
                let typed = self.typed::<Task>(&task_path, task);
                if let Some(task) = &typed {
                    self.task(&task_path, task);
                }
                names_known &= typed.is_some();
                outputs_known &= typed.is_some();
                tasks.push(typed.unwrap_or_default());
                continue;
            }
            let mut known = Task::default();
            names_known &= task.is_object();
            match self.clean_part(&task_path, task, "name", problems) {
                Some(name) => known.name = name,
                None => names_known = false,
            }
            match self.clean_part(&task_path, task, "needs", problems) {
                Some(needs) => known.needs = needs,
                None => names_known = false,
            }
            match self.clean_part(&task_path, task, "outputs", problems) {
                Some(outputs) => known.outputs = outputs,
                None => outputs_known = false,
            }
            for (index, env) in items(task, "env").iter().enumerate() {
                let env_path = index_path(&key_path(&task_path, "env"), index);
                let env = if is_clean(&env_path, problems) {
                    self.typed::<EnvVar>(&env_path, env)
                } else {
                    None
                };
                if let Some(env) = &env {
                    self.env(&env_path, env);
                }
                // An entry with problems stands in as a literal, which no check across
                // tasks reads; the others keep their index.
                known.env.push(env.unwrap_or_else(|| EnvVar {
                    name: String::new(),
                    value: None,
                    value_from: None,
                    secret_name: None,
                    key: None,
                    format: None,
                }));
            }
            if let Some(Some(labels)) = self.clean_part(&task_path, task, "labels", problems) {
                self.labels(&task_path, &labels);
            }
            if let Some(Some(resources)) =
                self.clean_part::<Option<Resources>>(&task_path, task, "resources", problems)
            {
                self.resources(&key_path(&task_path, "resources"), &resources);
            }
            if let Some(Some(security)) = self.clean_part::<Option<SecurityContext>>(
                &task_path,
                task,
                "securityContext",
                problems,
            ) {
                self.security_context(&key_path(&task_path, "securityContext"), &security);
            }
            if let Some(Some(annotations)) =
                self.clean_part(&task_path, task, "annotations", problems)
            {
                self.annotations(&task_path, &annotations);
            }
            tasks.push(known);
        }
        self.task_count(path, tasks.len());
        if let Some(notify) = self.clean_part::<Vec<Notify>>(path, action, "notify", problems) {
            self.notify(path, &notify);
        }
        if names_known {
            self.across_tasks(path, &tasks, outputs_known);
        }
    }

    /// The part at `key` of the mapping at `path` read into its type, if no problem lies at or
    /// under it; a missing key reads as the type's default.
    fn clean_part<T: serde::de::DeserializeOwned + Default>(
        &mut self,
        path: &str,
        value: &serde_json::Value,
        key: &str,
        problems: &[Problem],
    ) -> Option<T> {
        let part_path = key_path(path, key);
        if !is_clean(&part_path, problems) {
            return None;
        }
        match value.get(key) {
            None => Some(T::default()),
            Some(part) => self.typed(&part_path, part),
        }
    }

    fn config(&mut self, config: &JobConfig) {
        if config.actions.len() > MAX_ACTIONS {
            self.error(
                "actions",
                format!(
                    "{} actions, over the limit of {MAX_ACTIONS} per config (each matching \
                     action is a run)",
                    config.actions.len()
                ),
            );
        }
        if config.actions.is_empty() {
            self.warn(
                "actions",
                "no actions: this config never runs anything".into(),
            );
        }
        for (index, action) in config.actions.iter().enumerate() {
            self.action(&index_path("actions", index), action);
        }
    }

    fn action(&mut self, path: &str, action: &Action) {
        if action.events.is_empty() {
            self.warn(
                &key_path(path, "events"),
                "no events: this action never runs".into(),
            );
        }
        self.task_count(path, action.tasks.len());
        if action.tasks.is_empty() {
            self.warn(
                &key_path(path, "tasks"),
                "no tasks: this action does nothing".into(),
            );
        }
        for (index, event) in action.events.iter().enumerate() {
            let event_at = index_path(&key_path(path, "events"), index);
            let name_path = key_path(&event_at, "name");
            if event.name.is_empty() {
                self.error(
                    &name_path,
                    "an empty name matches no event here (Keptn's service, reading it as a \
                     regular expression, matched every event): name the event types, or `*` \
                     for every one"
                        .into(),
                );
            }
            if let Some(jsonpath) = &event.jsonpath
                && let Ok(reads_as) = formats::config_jsonpath(&jsonpath.property)
            {
                let property_path = key_path(&key_path(&event_at, "jsonpath"), "property");
                self.rooted_path(&property_path, &jsonpath.property, &reads_as);
            }
            if let Some(message) = formats::partial_keptn_name(&event.name) {
                self.warn(&name_path, message);
            }
            if formats::looks_like_regex(&event.name) {
                self.warn(
                    &name_path,
                    format!(
                        "\"{}\" looks like a regular expression, but event names are matched \
                         as anchored globs (`*` matches any run of characters, `.` is a dot), \
                         e.g. \"sh.keptn.event.*.triggered\"",
                        event.name
                    ),
                );
            }
        }
        for (index, task) in action.tasks.iter().enumerate() {
            self.task(&index_path(&key_path(path, "tasks"), index), task);
        }
        self.notify(path, &action.notify);
        // What holds across tasks (`needs`, outputs) takes time in the square of their count:
        // past the limit, which is an error already, it is not looked at.
        if action.tasks.len() <= MAX_TASKS {
            self.across_tasks(path, &action.tasks, true);
        }
    }

    /// Warns of a JSONPath written without `$`, which reads from the event's top.
    fn rooted_path(&mut self, path: &str, written: &str, reads_as: &str) {
        if written == reads_as {
            return;
        }
        let message = if written.trim().starts_with('$') {
            format!(
                "{written:?} has blanks around it: it reads as {reads_as:?}, as the old service \
                 read it; write {reads_as:?}"
            )
        } else {
            format!(
                "{written:?} has no `$`: it reads from the event's top, {reads_as:?}, as the old \
                 service read it; write {reads_as:?}"
            )
        };
        self.warn(path, message);
    }

    fn task_count(&mut self, path: &str, count: usize) {
        if count > MAX_TASKS {
            self.error(
                &key_path(path, "tasks"),
                format!("{count} tasks, over the limit of {MAX_TASKS} per action"),
            );
        }
    }

    /// The action's `notify`; `path` is the action's.
    fn notify(&mut self, path: &str, notify: &[Notify]) {
        if notify.len() > MAX_NOTIFY {
            self.error(
                &key_path(path, "notify"),
                format!(
                    "{} notification targets, over the limit of {MAX_NOTIFY} per action",
                    notify.len()
                ),
            );
        }
        for (index, entry) in notify.iter().enumerate() {
            let notify_path = index_path(&key_path(path, "notify"), index);
            match (&entry.slack, &entry.webhook) {
                (Some(_), Some(_)) => self.error(
                    &key_path(&notify_path, "webhook"),
                    "one target per entry: `slack` and `webhook` are both set; write two \
                     entries"
                        .into(),
                ),
                (None, None) => self.error(
                    &notify_path,
                    "says neither `slack` nor `webhook`: name the target, e.g. \
                     `slack: team-carts`"
                        .into(),
                ),
                _ => {}
            }
        }
    }

    /// The checks across an action's tasks (`path` is the action's): their `needs`, and, if
    /// `outputs`, the outputs they declare and read.
    fn across_tasks(&mut self, path: &str, tasks: &[Task], outputs: bool) {
        for problem in graph::problems(tasks) {
            let task_path = index_path(&key_path(path, "tasks"), problem.task);
            let entry_path = index_path(&key_path(&task_path, "needs"), problem.entry);
            self.error(&entry_path, problem.message);
        }
        if !outputs {
            return;
        }
        for problem in graph::output_problems(tasks) {
            let task_path = index_path(&key_path(path, "tasks"), problem.task);
            let at = match problem.at {
                graph::OutputAt::Declared(entry) => {
                    index_path(&key_path(&task_path, "outputs"), entry)
                }
                graph::OutputAt::Env(entry) => {
                    key_path(&index_path(&key_path(&task_path, "env"), entry), "value")
                }
            };
            self.error(&at, problem.message);
        }
    }

    fn task(&mut self, path: &str, task: &Task) {
        // Kubernetes checks this of a pod only: the Job would be taken and make no pod.
        if task.image.trim() != task.image {
            self.error(
                &key_path(path, "image"),
                format!(
                    "{:?} has spaces around it: Kubernetes refuses such an image",
                    task.image
                ),
            );
        }
        for (index, env) in task.env.iter().enumerate() {
            self.env(&index_path(&key_path(path, "env"), index), env);
        }
        // Each output a `name=` line at least: past what the message keeps, every run of the
        // task would fail on its outputs.
        let fewest_bytes = task
            .outputs
            .iter()
            .map(|name| name.len() + 2)
            .sum::<usize>();
        if fewest_bytes > TERMINATION_MESSAGE_BYTES {
            self.error(
                &key_path(path, "outputs"),
                format!(
                    "{} outputs take at least {} bytes of the termination message (a `name=` \
                     line each), where they must fit in fewer than the \
                     {TERMINATION_MESSAGE_BYTES} bytes Kubernetes keeps: declare fewer, or \
                     shorter names",
                    task.outputs.len(),
                    fewest_bytes - 1
                ),
            );
        }
        if let Some(ttl) = task.ttl_seconds_after_finished
            && ttl < MIN_TTL_SECONDS
        {
            self.warn(
                &key_path(path, "ttlSecondsAfterFinished"),
                format!(
                    "{ttl} is raised to {MIN_TTL_SECONDS}: the Job must outlive the collection \
                     of its logs"
                ),
            );
        }
        if task
            .security_context
            .as_ref()
            .is_some_and(|s| s.privileged == Some(true))
        {
            self.warn(
                &key_path(&key_path(path, "securityContext"), "privileged"),
                "a privileged container runs only where the installation allows it".into(),
            );
        }
        if let Some(resources) = &task.resources {
            self.resources(&key_path(path, "resources"), resources);
        }
        if let Some(security) = &task.security_context {
            self.security_context(&key_path(path, "securityContext"), security);
        }
        self.labels(path, &task.labels);
        self.annotations(path, &task.annotations);
    }

    /// A request above its limit: Kubernetes refuses the Job.
    fn resources(&mut self, path: &str, resources: &Resources) {
        let (Some(requests), Some(limits)) = (&resources.requests, &resources.limits) else {
            return;
        };
        for (name, request, limit) in [
            ("cpu", &requests.cpu, &limits.cpu),
            ("memory", &requests.memory, &limits.memory),
        ] {
            let (Some(request), Some(limit)) = (request, limit) else {
                continue;
            };
            let value = |quantity: &Quantity| formats::quantity_nanos(&quantity.0);
            if let (Some(asked), Some(most)) = (value(request), value(limit))
                && asked > most
            {
                self.error(
                    &key_path(&key_path(path, "requests"), name),
                    format!(
                        "request {} is above the limit {} (limits.{name}): Kubernetes refuses \
                         such a Job",
                        request.0, limit.0
                    ),
                );
            }
        }
    }

    /// Combinations the API server refuses in every Job.
    fn security_context(&mut self, path: &str, security: &SecurityContext) {
        let field = |name: &str| key_path(path, name);
        if security.privileged == Some(true) && security.allow_privilege_escalation == Some(false) {
            self.error(
                &field("allowPrivilegeEscalation"),
                "a privileged container always escalates: Kubernetes refuses \
                 allowPrivilegeEscalation: false with privileged: true"
                    .into(),
            );
        }
        if security.allow_privilege_escalation == Some(false)
            && security
                .capabilities
                .as_ref()
                .is_some_and(Capabilities::adds_sys_admin)
        {
            self.error(
                &field("allowPrivilegeEscalation"),
                "a container with CAP_SYS_ADMIN always escalates: Kubernetes refuses \
                 allowPrivilegeEscalation: false with capabilities.add CAP_SYS_ADMIN"
                    .into(),
            );
        }
        if let Some(seccomp) = &security.seccomp_profile {
            let at = key_path(&field("seccompProfile"), "localhostProfile");
            // An empty profile passes the API server but is none to the kubelet: the
            // container would never start.
            let profile = match (seccomp.profile_type, &seccomp.localhost_profile) {
                (SeccompProfileType::Localhost, Some(profile)) if profile.is_empty() => None,
                (_, profile) => profile.as_ref(),
            };
            match (seccomp.profile_type, profile) {
                (SeccompProfileType::Localhost, None) => self.error(
                    &key_path(&field("seccompProfile"), "type"),
                    "type: Localhost needs `localhostProfile`, the profile's path relative to \
                     the kubelet's seccomp directory"
                        .into(),
                ),
                (SeccompProfileType::Localhost, Some(profile)) if profile.starts_with('/') => self
                    .error(
                        &at,
                        format!(
                            "\"{profile}\" must be relative to the kubelet's seccomp directory"
                        ),
                    ),
                (SeccompProfileType::Localhost, Some(profile))
                    if profile.split('/').any(|part| part == "..") =>
                {
                    self.error(
                        &at,
                        format!(
                            "\"{profile}\" must stay inside the kubelet's seccomp directory: \
                             Kubernetes refuses '..' in it"
                        ),
                    )
                }
                (SeccompProfileType::Localhost, Some(_)) | (_, None) => {}
                (_, Some(_)) => self.error(
                    &at,
                    "`localhostProfile` goes only with type: Localhost".into(),
                ),
            }
        }
    }

    /// The task's `labels`; `path` is the task's.
    fn labels(&mut self, path: &str, labels: &BTreeMap<String, String>) {
        let labels_path = key_path(path, "labels");
        for (key, value) in labels {
            let label_path = key_path(&labels_path, key);
            if let Err(message) = formats::check_qualified_name(key) {
                self.error(&label_path, message);
            } else if crate::labels::is_reserved(key) {
                self.error(
                    &label_path,
                    format!("label \"{key}\" is set by job-executor and cannot be overridden"),
                );
            }
            if !formats::is_label_value(value) {
                self.error(
                    &label_path,
                    format!(
                        "invalid label value \"{value}\": at most 63 letters, digits, '-', '_' \
                         or '.', starting and ending with a letter or digit"
                    ),
                );
            }
        }
    }

    /// The task's `annotations`; `path` is the task's.
    fn annotations(&mut self, path: &str, annotations: &BTreeMap<String, String>) {
        let annotations_path = key_path(path, "annotations");
        for key in annotations.keys() {
            // As the API server checks an annotation's key: ignoring case (`Example.COM/Owner`
            // is taken there, and by the old service, which passed annotations on as written).
            if formats::check_qualified_name(&key.to_ascii_lowercase()).is_err()
                && let Err(message) = formats::check_qualified_name(key)
            {
                self.error(&key_path(&annotations_path, key), message);
            }
        }
        let size: usize = annotations.iter().map(|(k, v)| k.len() + v.len()).sum();
        if size > MAX_ANNOTATION_BYTES {
            self.error(
                &annotations_path,
                format!(
                    "{size} bytes of keys and values, over the {MAX_ANNOTATION_BYTES} Kubernetes \
                     takes on one object"
                ),
            );
        }
    }

    fn env(&mut self, path: &str, env: &EnvVar) {
        let value_from = env.value_from.unwrap_or(ValueFrom::String);
        let field = |name: &str| key_path(path, name);
        match value_from {
            ValueFrom::Event => match &env.value {
                None => self.error(
                    &field("value"),
                    "valueFrom: event needs `value`, a JSONPath into the event".into(),
                ),
                Some(value) => match formats::config_jsonpath(value) {
                    Ok(reads_as) => self.rooted_path(&field("value"), value, &reads_as),
                    Err(message) => self.error(&field("value"), message),
                },
            },
            // No `value`: the empty string, as the old service made it.
            ValueFrom::String => {
                // The old service refused an entry without `valueFrom`; here it is a string,
                // and a path meant for the event would reach the task as its text.
                if env.value_from.is_none()
                    && env.value.as_deref().is_some_and(|value| {
                        value == "$" || value.starts_with("$.") || value.starts_with("$[")
                    })
                {
                    self.warn(
                        &field("value"),
                        format!(
                            "{:?} looks like a JSONPath, but without `valueFrom` the value is \
                             the text itself: write `valueFrom: event` to read it from the event",
                            env.value.as_deref().unwrap_or_default()
                        ),
                    );
                }
            }
            // The reference itself is checked with the action's tasks.
            ValueFrom::Output => {
                if env.value.is_none() {
                    self.error(
                        &field("value"),
                        "valueFrom: output needs `value`: a task this task comes after and one \
                         of its outputs, like build.version"
                            .into(),
                    );
                }
            }
            ValueFrom::Secret => {
                // Keptn's service ignored it: a file written for it loads, told.
                if env.value.is_some() {
                    self.warn(
                        &field("value"),
                        "valueFrom: secret takes no `value`, and it is ignored: `name` is the \
                         Secret (all its keys), or `secretName` and `key` name one key"
                            .into(),
                    );
                }
                match (&env.secret_name, &env.key) {
                    (Some(_), None) => {
                        self.error(&field("key"), "`secretName` needs `key`".into());
                    }
                    (None, Some(_)) => {
                        self.error(&field("secretName"), "`key` needs `secretName`".into());
                    }
                    (None, None) => {
                        if let Err(message) = formats::check_dns_subdomain(&env.name) {
                            self.error(
                                &field("name"),
                                format!("with valueFrom: secret, `name` is a Secret: {message}"),
                            );
                        }
                    }
                    (Some(_), Some(key)) => {
                        if !crate::files::is_config_map_key(key) {
                            self.error(
                                &field("key"),
                                format!(
                                    "invalid Secret key \"{key}\": letters, digits, '-', '_' \
                                     and '.', at most 253 characters, not starting with '..'"
                                ),
                            );
                        }
                    }
                }
            }
        }
        if value_from != ValueFrom::Secret && (env.secret_name.is_some() || env.key.is_some()) {
            self.error(
                &field(if env.secret_name.is_some() {
                    "secretName"
                } else {
                    "key"
                }),
                "`secretName` and `key` go with valueFrom: secret".into(),
            );
        }
        // Keptn's service ignored it: a file written for it loads, told.
        if env.format.is_some() && value_from != ValueFrom::Event {
            self.warn(
                &field("as"),
                "`as` applies only to valueFrom: event, and is ignored here".into(),
            );
        }
        if value_from != ValueFrom::Secret || env.secret_name.is_some() {
            check_env_name(self, &field("name"), &env.name);
        }
    }
}

fn check_env_name(semantic: &mut Semantic<'_>, path: &str, name: &str) {
    // Kubernetes accepts any printable ASCII except '='; shells want less, which is the user's
    // business.
    if name.is_empty() || name.contains('=') || !name.bytes().all(|b| (b' '..=b'~').contains(&b)) {
        semantic.error(
            path,
            format!("invalid environment variable name \"{name}\": printable ASCII without '='"),
        );
    }
}

#[cfg(test)]
mod tests;
