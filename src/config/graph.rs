//! The order of an action's tasks: one after the other, or the graph their `needs` make.

use std::collections::BTreeSet;

use super::Task;

/// Whether any task of the action names the tasks it needs (then the tasks form a graph).
pub fn uses_needs(tasks: &[Task]) -> bool {
    tasks.iter().any(|task| !task.needs.is_empty())
}

/// Per task, the tasks (by index) it starts after: the one before it when no task says
/// `needs`, else the tasks its `needs` name (names that match no single other task are left
/// out: [`problems`] reports them).
pub fn dependencies(tasks: &[Task]) -> Vec<Vec<usize>> {
    if !uses_needs(tasks) {
        return (0..tasks.len())
            .map(|index| index.checked_sub(1).into_iter().collect())
            .collect();
    }
    tasks
        .iter()
        .enumerate()
        .map(|(index, task)| {
            let mut needed: Vec<usize> = task
                .needs
                .iter()
                .filter_map(|name| only_task_named(tasks, name))
                .filter(|&needed| needed != index)
                .collect();
            needed.sort_unstable();
            needed.dedup();
            needed
        })
        .collect()
}

/// Per task, every task (by index) it comes after: those it starts after, and theirs.
pub fn comes_after(tasks: &[Task]) -> Vec<BTreeSet<usize>> {
    let needs = dependencies(tasks);
    (0..tasks.len())
        .map(|index| {
            let mut found = BTreeSet::new();
            let mut next: Vec<usize> = needs[index].clone();
            while let Some(task) = next.pop() {
                // A task on a cycle comes after itself; the cycle is reported on its own.
                if found.insert(task) {
                    next.extend(needs[task].iter().copied());
                }
            }
            found
        })
        .collect()
}

/// The task and output an output reference names (`build.version`: the task's name is
/// everything before the last `.`).
pub fn output_source<'r>(tasks: &[Task], reference: &'r str) -> Option<(usize, &'r str)> {
    let (task, output) = reference.rsplit_once('.')?;
    let index = only_task_named(tasks, task)?;
    tasks[index]
        .outputs
        .iter()
        .any(|o| o == output)
        .then_some((index, output))
}

/// Where an output problem is, in task `task`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputAt {
    /// The task's `outputs[i]`.
    Declared(usize),
    /// The `value` of the task's `env[i]`.
    Env(usize),
}

/// Something wrong with an output: declared twice, or a `valueFrom: output` that names no task
/// this task comes after, or no output of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputProblem {
    pub task: usize,
    pub at: OutputAt,
    pub message: String,
}

/// Every output declared twice by a task, and every `valueFrom: output` reference that does not
/// name an output of a task its task comes after.
pub fn output_problems(tasks: &[Task]) -> Vec<OutputProblem> {
    let after = comes_after(tasks);
    let mut found = Vec::new();
    // `.finished` lists outputs by the task's name: two tasks of one name would report one's.
    let mut publishing: std::collections::HashMap<String, usize> = Default::default();
    for (index, task) in tasks.iter().enumerate() {
        if !task.outputs.is_empty() {
            let name = task.display_name(index);
            if let Some(first) = publishing.insert(name.clone(), index) {
                found.push(OutputProblem {
                    task: index,
                    at: OutputAt::Declared(0),
                    message: format!(
                        "tasks[{first}] is named \"{name}\" too and has outputs: the .finished \
                         event lists outputs by task name; give the tasks names of their own"
                    ),
                });
            }
        }
        let mut declared = std::collections::HashSet::new();
        for (entry, output) in task.outputs.iter().enumerate() {
            if !declared.insert(output) {
                found.push(OutputProblem {
                    task: index,
                    at: OutputAt::Declared(entry),
                    message: format!("\"{output}\" is declared twice"),
                });
            }
        }
        for (entry, env) in task.env.iter().enumerate() {
            if env.value_from != Some(super::ValueFrom::Output) {
                continue;
            }
            let Some(reference) = env.value.as_deref() else {
                continue;
            };
            if let Some(message) = reference_problem(tasks, index, &after[index], reference) {
                found.push(OutputProblem {
                    task: index,
                    at: OutputAt::Env(entry),
                    message,
                });
            }
        }
    }
    found
}

/// What is wrong with task `index`'s reference to an output, if anything.
fn reference_problem(
    tasks: &[Task],
    index: usize,
    after: &BTreeSet<usize>,
    reference: &str,
) -> Option<String> {
    let Some((task_name, output)) = reference.rsplit_once('.') else {
        return Some(format!(
            "\"{reference}\" names no output: write the task's name, a dot and the output's, \
             like build.version"
        ));
    };
    let names: Vec<&str> = tasks.iter().filter_map(|t| t.name.as_deref()).collect();
    let Some(source) = only_task_named(tasks, task_name) else {
        let same_name = names.iter().filter(|n| **n == task_name).count();
        if same_name > 1 {
            return Some(format!(
                "{same_name} tasks are named \"{task_name}\": give them names of their own"
            ));
        }
        let hint = super::check::suggest(task_name, names.iter().copied())
            .map(|close| format!("; did you mean \"{close}\"?"))
            .unwrap_or_default();
        return Some(format!(
            "no task of this action is named \"{task_name}\"{hint}"
        ));
    };
    if !after.contains(&source) {
        let how = if uses_needs(tasks) {
            "name it in `needs` (or a task that needs it)"
        } else {
            "a task reads the outputs of the tasks before it"
        };
        return Some(format!(
            "task \"{}\" does not come after \"{task_name}\": {how}",
            tasks[index].display_name(index)
        ));
    }
    let declared = &tasks[source].outputs;
    if declared.iter().any(|o| o == output) {
        return None;
    }
    Some(if declared.is_empty() {
        format!("task \"{task_name}\" declares no outputs")
    } else {
        format!(
            "task \"{task_name}\" has no output \"{output}\" (its outputs: {})",
            declared.join(", ")
        )
    })
}

fn only_task_named(tasks: &[Task], name: &str) -> Option<usize> {
    let mut named = tasks
        .iter()
        .enumerate()
        .filter(|(_, task)| task.name.as_deref() == Some(name))
        .map(|(index, _)| index);
    match (named.next(), named.next()) {
        (Some(index), None) => Some(index),
        _ => None,
    }
}

/// Something wrong with a `needs` entry: task `task`'s entry `entry`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NeedsProblem {
    pub task: usize,
    pub entry: usize,
    pub message: String,
}

/// Every `needs` entry that names no task, a task that is not the only one of its name, the
/// task itself or a task named before in the same list, and every cycle (reported once, at the
/// entry of its first task that leads around it).
pub fn problems(tasks: &[Task]) -> Vec<NeedsProblem> {
    let mut found = Vec::new();
    let names: Vec<&str> = tasks.iter().filter_map(|t| t.name.as_deref()).collect();
    for (index, task) in tasks.iter().enumerate() {
        // A task needs at most every other task: a longer list is wrong whatever it names, and
        // is not looked at further (each entry would be checked and spelled against each name).
        if task.needs.len() > super::MAX_TASKS {
            found.push(NeedsProblem {
                task: index,
                entry: super::MAX_TASKS,
                message: format!(
                    "{} entries, over the limit of {} (an action has at most {} tasks)",
                    task.needs.len(),
                    super::MAX_TASKS,
                    super::MAX_TASKS
                ),
            });
            continue;
        }
        let mut named = std::collections::HashSet::new();
        for (entry, name) in task.needs.iter().enumerate() {
            let same_name = names.iter().filter(|n| **n == name).count();
            let message = if !named.insert(name) {
                format!("\"{name}\" is named twice")
            } else if task.name.as_deref() == Some(name.as_str()) {
                "a task cannot need itself".to_string()
            } else if same_name == 0 {
                let hint = super::check::suggest(name, names.iter().copied())
                    .map(|close| format!("; did you mean \"{close}\"?"))
                    .unwrap_or_default();
                format!("no task of this action is named \"{name}\"{hint}")
            } else if same_name > 1 {
                format!("{same_name} tasks are named \"{name}\": give them names of their own")
            } else {
                continue;
            };
            found.push(NeedsProblem {
                task: index,
                entry,
                message,
            });
        }
    }
    found.extend(cycles(tasks));
    found
}

/// The cycles among the tasks' `needs`, each once.
fn cycles(tasks: &[Task]) -> Vec<NeedsProblem> {
    let needs = dependencies(tasks);
    // Peel off every task whose needs are all peeled off; what stays is on or behind a cycle.
    let mut left: Vec<bool> = vec![true; tasks.len()];
    loop {
        let ready: Vec<usize> = (0..tasks.len())
            .filter(|&i| left[i] && needs[i].iter().all(|&n| !left[n]))
            .collect();
        if ready.is_empty() {
            break;
        }
        for index in ready {
            left[index] = false;
        }
    }
    let mut found = Vec::new();
    let mut reported = vec![false; tasks.len()];
    for start in 0..tasks.len() {
        if !left[start] || reported[start] {
            continue;
        }
        // Follow needs that stay among the tasks left until one repeats: that is a cycle.
        let mut path = vec![start];
        let cycle = loop {
            let Some(&last) = path.last() else { break None };
            let Some(&next) = needs[last].iter().find(|&&n| left[n]) else {
                break None;
            };
            if let Some(at) = path.iter().position(|&p| p == next) {
                break Some(path[at..].to_vec());
            }
            path.push(next);
        };
        let Some(cycle) = cycle else { continue };
        if cycle.iter().any(|&i| reported[i]) {
            continue;
        }
        for &index in &cycle {
            reported[index] = true;
        }
        // Reported at the entry of the cycle's first task that names the next one.
        let first = cycle.iter().copied().min().unwrap_or(start);
        let at = cycle.iter().position(|&i| i == first).unwrap_or(0);
        let next = cycle[(at + 1) % cycle.len()];
        let name = |i: usize| tasks[i].display_name(i);
        let entry = tasks[first]
            .needs
            .iter()
            .position(|n| *n == name(next))
            .unwrap_or(0);
        let mut around: Vec<String> = (0..=cycle.len())
            .map(|k| format!("\"{}\"", name(cycle[(at + k) % cycle.len()])))
            .collect();
        around.dedup();
        found.push(NeedsProblem {
            task: first,
            entry,
            message: format!(
                "the tasks' needs make a cycle: {}; no task of it could ever start",
                around.join(" needs ")
            ),
        });
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(name: &str, needs: &[&str]) -> Task {
        Task {
            name: (!name.is_empty()).then(|| name.to_string()),
            image: "alpine".into(),
            needs: needs.iter().map(|n| n.to_string()).collect(),
            ..Default::default()
        }
    }

    /// Each problem as (task, entry, message).
    fn located(tasks: &[Task]) -> Vec<(usize, usize, String)> {
        problems(tasks)
            .into_iter()
            .map(|p| (p.task, p.entry, p.message))
            .collect()
    }

    #[test]
    fn without_needs_tasks_run_one_after_the_other() {
        let tasks = [task("a", &[]), task("", &[]), task("c", &[])];
        assert!(!uses_needs(&tasks));
        assert_eq!(dependencies(&tasks), [vec![], vec![0], vec![1]]);
        assert!(problems(&tasks).is_empty());
        assert!(dependencies(&[]).is_empty());
    }

    #[test]
    fn needs_make_a_graph() {
        let diamond = [
            task("a", &[]),
            task("b", &["a"]),
            task("c", &["a"]),
            task("d", &["c", "b"]),
        ];
        assert!(uses_needs(&diamond));
        assert_eq!(
            dependencies(&diamond),
            [vec![], vec![0], vec![0], vec![1, 2]]
        );
        assert!(problems(&diamond).is_empty());
        // A task without needs in a graph starts at once.
        let two_roots = [task("a", &[]), task("b", &[]), task("c", &["a"])];
        assert_eq!(dependencies(&two_roots), [vec![], vec![], vec![0]]);
    }

    #[test]
    fn bad_needs_are_named() {
        let tasks = [
            task("build", &[]),
            task("test", &["biuld", "test", "deploy"]),
            task("deploy", &["build", "build"]),
            task("deploy", &[]),
        ];
        let found = located(&tasks);
        assert_eq!(
            found,
            [
                (
                    1,
                    0,
                    "no task of this action is named \"biuld\"; did you mean \"build\"?".into()
                ),
                (1, 1, "a task cannot need itself".into()),
                (
                    1,
                    2,
                    "2 tasks are named \"deploy\": give them names of their own".into()
                ),
                (2, 1, "\"build\" is named twice".into()),
            ]
        );
    }

    #[test]
    fn cycles_are_reported_once_where_they_start() {
        let tasks = [
            task("a", &[]),
            task("b", &["a", "d"]),
            task("c", &["b"]),
            task("d", &["c"]),
            task("e", &["d"]),
            task("f", &["g"]),
            task("g", &["f"]),
        ];
        let found = located(&tasks);
        assert_eq!(
            found,
            [
                (
                    1,
                    1,
                    "the tasks' needs make a cycle: \"b\" needs \"d\" needs \"c\" needs \"b\"; \
                     no task of it could ever start"
                        .into()
                ),
                (
                    5,
                    0,
                    "the tasks' needs make a cycle: \"f\" needs \"g\" needs \"f\"; no task of \
                     it could ever start"
                        .into()
                ),
            ]
        );
    }
}
