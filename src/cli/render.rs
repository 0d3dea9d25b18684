//! `job-executor render`: what an event would cause, computed by the same builders the operator
//! uses, with files read from the config's service directory.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use serde_json::{Value, json};

use super::{OutputFormat, RenderArgs};
use crate::config::{self, JobConfig};
use crate::controller::report;
use crate::crd::{JobRunStatus, TaskPhase, TaskStatus};
use crate::event::{self, CloudEvent, OutgoingContext};
use crate::files;
use crate::ingest::plan::{NotMatched, no_service, not_a_task_event};
use crate::matching::Matcher;
use crate::names;
use crate::render::{self, JobRequest, check_action, render_job};
use crate::settings::Settings;

/// The service directory of a config at `<service>/job/config.yaml`, and the top directory
/// links may point into (the directory holding the service directories).
fn service_dirs(config: &Path) -> (PathBuf, PathBuf) {
    let parent = config.parent().unwrap_or(Path::new(".")).to_path_buf();
    let service = if parent.file_name().is_some_and(|n| n == "job") {
        parent.parent().unwrap_or(Path::new(".")).to_path_buf()
    } else {
        parent
    };
    let service = if service.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        service
    };
    let root = service.join("..");
    (service, root)
}

pub fn run_render(args: &RenderArgs) -> anyhow::Result<ExitCode> {
    let settings = args.install.settings()?;
    let bytes = std::fs::read(&args.event)
        .with_context(|| format!("cannot read {}", args.event.display()))?;
    let event = CloudEvent::from_json(&bytes)
        .with_context(|| format!("{} is not a valid CloudEvent", args.event.display()))?;
    let valid = match config::load_file(&args.config) {
        Ok(valid) => valid,
        Err(error) => {
            eprintln!("{error}");
            return Ok(ExitCode::FAILURE);
        }
    };
    let (service_dir, root) = service_dirs(&args.config);
    let plan = match plan(&event, &valid.config, &settings, &service_dir, &root) {
        Ok(plan) => plan,
        Err(message) => {
            eprintln!("error: {message}");
            return Ok(ExitCode::FAILURE);
        }
    };
    let text = match args.format {
        OutputFormat::Json => format!("{}\n", serde_json::to_string_pretty(&plan)?),
        OutputFormat::Yaml => plan_as_yaml(&plan)?,
    };
    crate::out!("{text}");
    Ok(ExitCode::SUCCESS)
}

/// `{"matched": [{action, index, silent, jobs, events, graph, timeout, concurrency}],
/// "not_matched": [{action, reason}]}`; `graph` (each task and the tasks it starts after) only
/// for actions whose tasks say what they need, `timeout` and `concurrency` (the group filled in
/// from the event) only for actions that have one.
fn plan(
    event: &CloudEvent,
    config: &JobConfig,
    settings: &Settings,
    service_dir: &Path,
    root: &Path,
) -> Result<Value, String> {
    let matcher = Matcher::compile(config).map_err(|e| e.to_string())?;
    // What the operator answers such an event, whatever the config's globs.
    if let Some(reasons) = not_a_task_event(event.event_type()) {
        return Ok(json!({"matched": [], "not_matched": reasons}));
    }
    // Nor does an event that names no service (it has no config to look up).
    if let Err(field) = crate::source::ServiceRef::of_event(event) {
        return Ok(json!({"matched": [], "not_matched": no_service(field)}));
    }
    let time = event
        .as_value()
        .get("time")
        .and_then(Value::as_str)
        .and_then(|t| t.parse::<jiff::Timestamp>().ok())
        .unwrap_or_else(jiff::Timestamp::now);
    let mut matched = Vec::new();
    let mut not_matched = Vec::new();
    for verdict in matcher.explain(event) {
        if let Err(reason) = verdict.outcome {
            not_matched.push(NotMatched {
                action: verdict.name,
                reason,
            });
            continue;
        }
        let action = &config.actions[verdict.index];
        check_action(action, settings).map_err(|e| e.to_string())?;
        let run_name = names::run_name(event, verdict.index);
        let run_files =
            files::collect_from_dir(root, service_dir, &action.tasks).map_err(|e| e.to_string())?;
        files::check_lists(&run_files).map_err(|e| e.to_string())?;
        let action_name = action.display_name(verdict.index);
        let mut jobs = Vec::new();
        for (task_index, task_files) in run_files.per_task.iter().enumerate() {
            let job = render_job(
                &JobRequest {
                    event,
                    run_name: &run_name,
                    action_index: verdict.index,
                    action_name: &action_name,
                    tasks: &action.tasks,
                    task_index,
                    files: task_files,
                    owner: None,
                    outputs: None,
                    trace: None,
                },
                settings,
            )
            .map_err(|e| e.to_string())?;
            jobs.push(serde_json::to_value(job).map_err(|e| e.to_string())?);
        }
        let context = OutgoingContext {
            triggered: event,
            run_name: &run_name,
            run_uid: "",
            source: &settings.event_source,
            time,
        };
        // The `.finished` the operator would send if every task succeeded at `time`, built by
        // the operator's own code: one section per task, its log excerpt in place of the log.
        let succeeded = JobRunStatus {
            tasks: action
                .tasks
                .iter()
                .enumerate()
                .map(|(index, task)| TaskStatus {
                    name: task.display_name(index),
                    phase: TaskPhase::Succeeded,
                    logs: Some(format!(
                        "(the last lines of task '{}')",
                        task.display_name(index)
                    )),
                    start_time: Some(time.to_string()),
                    completion_time: Some(time.to_string()),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        };
        let outcome = report::outcome_of_tasks(&succeeded);
        let events = (!action.silent).then(|| {
            json!({
                "started": event::build_started(&context),
                "finished": report::finished_for(&context, &succeeded, &outcome),
            })
        });
        let mut entry = json!({
            "action": verdict.name,
            "index": verdict.index,
            "run": run_name,
            "silent": action.silent,
            "jobs": jobs,
            "events": events,
        });
        if let Some(timeout) = &action.timeout {
            entry["timeout"] = json!(timeout);
        }
        if let Some(concurrency) = &action.concurrency {
            let group = render::group_name(&concurrency.group, event)?;
            entry["concurrency"] = json!({
                "group": group,
                "limit": concurrency.limit(),
                "policy": concurrency.policy.as_str(),
            });
        }
        // An action whose tasks say what they need runs them as a graph: show it.
        if config::graph::uses_needs(&action.tasks) {
            let needs = config::graph::dependencies(&action.tasks);
            let name = |index: usize| action.tasks[index].display_name(index);
            entry["graph"] = needs
                .iter()
                .enumerate()
                .map(|(index, needed)| {
                    json!({"task": name(index), "after": needed.iter().map(|&n| name(n)).collect::<Vec<_>>()})
                })
                .collect();
        }
        matched.push(entry);
    }
    Ok(json!({"matched": matched, "not_matched": not_matched}))
}

/// One YAML document per Job (so the output can be fed to `kubectl`), with the actions, the
/// event skeletons and the reasons for what did not match as comments.
fn plan_as_yaml(plan: &Value) -> anyhow::Result<String> {
    let mut out = String::new();
    let empty = Vec::new();
    for action in plan["matched"].as_array().unwrap_or(&empty) {
        out.push_str(&format!(
            "# action {} (index {}), run {}{}{}\n",
            action["action"],
            action["index"],
            action["run"].as_str().unwrap_or_default(),
            if action["silent"] == true {
                ", silent"
            } else {
                ""
            },
            match action["timeout"].as_str() {
                Some(timeout) => format!(", stopped after {timeout}"),
                None => String::new(),
            }
        ));
        let concurrency = &action["concurrency"];
        if let Some(group) = concurrency["group"].as_str() {
            out.push_str(&format!(
                "# concurrency group {group:?}: at most {} at a time, policy {}\n",
                concurrency["limit"],
                concurrency["policy"].as_str().unwrap_or_default()
            ));
        }
        if let Some(graph) = action["graph"].as_array() {
            out.push_str("# tasks (each starts once the tasks it comes after have succeeded):\n");
            for task in graph {
                let after: Vec<&str> = task["after"]
                    .as_array()
                    .unwrap_or(&empty)
                    .iter()
                    .filter_map(Value::as_str)
                    .collect();
                // Quoted: a task's name may hold a line break, which would end the comment.
                let task = task["task"].as_str().unwrap_or_default();
                let after: Vec<String> = after.iter().map(|name| format!("{name:?}")).collect();
                match after.is_empty() {
                    true => out.push_str(&format!("#   {task:?} (at once)\n")),
                    false => out.push_str(&format!("#   {task:?} after {}\n", after.join(", "))),
                }
            }
        }
        for job in action["jobs"].as_array().unwrap_or(&empty) {
            out.push_str("---\n");
            out.push_str(&serde_saphyr::to_string(job)?);
        }
        for kind in ["started", "finished"] {
            let Some(event) = action["events"].get(kind).filter(|e| !e.is_null()) else {
                continue;
            };
            out.push_str(&format!("# .{kind} event:\n"));
            for line in serde_saphyr::to_string(event)?.lines() {
                out.push_str(&format!("#   {line}\n"));
            }
        }
    }
    for action in plan["not_matched"].as_array().unwrap_or(&empty) {
        // Every line of the reason commented (a config error's holds one per problem).
        let reason = action["reason"].as_str().unwrap_or_default();
        out.push_str(&format!(
            "# not matched: action {}: {}\n",
            action["action"],
            reason.replace('\n', "\n#   ")
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_directory_is_above_job() {
        let (service, root) = service_dirs(Path::new("examples/carts/job/config.yaml"));
        assert_eq!(service, Path::new("examples/carts"));
        assert_eq!(root, Path::new("examples/carts/.."));
        let (service, _) = service_dirs(Path::new("config.yaml"));
        assert_eq!(service, Path::new("."));
    }
}
