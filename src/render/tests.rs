use serde_json::json;

use super::*;
use crate::config::{self, JobConfig};
use crate::settings::ImageAllowList;

fn event() -> CloudEvent {
    CloudEvent::from_value(event_json()).unwrap()
}

fn event_json() -> serde_json::Value {
    json!({
        "specversion": "1.0",
        "id": "9b2a6f4e-1c57-4d3e-8f0a-2b6c1d7e9f10",
        "source": "shipyard-controller",
        "type": "sh.keptn.event.test.triggered",
        "shkeptncontext": "3c9d2f1a-5b7e-4a8c-9d0f-1e2b3c4d5e6f",
        "data": {
            "project": "sockshop", "stage": "dev", "service": "carts",
            "labels": {"build-id": "42", "Team Name": "a"},
            "deployment": {"deploymentURIsLocal": ["http://carts.dev:80"], "replicas": 3},
            "test": {"teststrategy": "locust", "enabled": true, "none": null}
        }
    })
}

fn config(yaml: &str) -> JobConfig {
    config::load(yaml, "c.yaml").unwrap().config
}

fn one_task(task_yaml: &str) -> JobConfig {
    let indented: String = task_yaml
        .lines()
        .map(|line| format!("        {line}\n"))
        .collect();
    config(&format!(
        "apiVersion: v2\nactions:\n  - name: Run tests\n    events: [{{name: x}}]\n    tasks:\n      - name: Smoke test\n{indented}"
    ))
}

fn render(config: &JobConfig, settings: &Settings) -> Result<Job, RenderError> {
    render_with(config, &[], None, settings)
}

/// The first task's Job of `config`'s first action, staging `files`, owned by `owner`.
fn render_with(
    config: &JobConfig,
    files: &[StagedFile],
    owner: Option<&OwnerReference>,
    settings: &Settings,
) -> Result<Job, RenderError> {
    render_for(&event(), config, files, owner, settings)
}

/// [`render_with`] for `event`.
fn render_for(
    event: &CloudEvent,
    config: &JobConfig,
    files: &[StagedFile],
    owner: Option<&OwnerReference>,
    settings: &Settings,
) -> Result<Job, RenderError> {
    render_job(
        &JobRequest {
            event,
            run_name: "test-0123456789abcdef0123",
            action_index: 0,
            action_name: &config.actions[0].display_name(0),
            tasks: &config.actions[0].tasks,
            task_index: 0,
            files,
            owner,
            outputs: Some(&[]),
            trace: None,
        },
        settings,
    )
}

/// `run.sh`, staged executable.
fn run_sh() -> [StagedFile; 1] {
    [StagedFile {
        key: "0-run.sh".into(),
        path: "run.sh".into(),
        executable: true,
    }]
}

fn container(job: &Job) -> &Container {
    &job.spec
        .as_ref()
        .unwrap()
        .template
        .spec
        .as_ref()
        .unwrap()
        .containers[0]
}

fn env_of(job: &Job) -> Vec<(String, Option<String>)> {
    container(job)
        .env
        .clone()
        .unwrap()
        .into_iter()
        .map(|e| (e.name, e.value))
        .collect()
}

fn env_value(job: &Job, name: &str) -> Option<String> {
    env_of(job)
        .into_iter()
        .find(|(n, _)| n == name)
        .and_then(|(_, v)| v)
}

#[test]
fn env_from_the_event_in_every_format() {
    let c = one_task(
        r#"image: alpine
env:
  - {name: HOST, value: "$.data.deployment.deploymentURIsLocal[0]", valueFrom: event}
  - {name: REPLICAS, value: "$.data.deployment.replicas", valueFrom: event}
  - {name: ENABLED, value: "$.data.test.enabled", valueFrom: event}
  - {name: NONE, value: "$.data.test.none", valueFrom: event}
  - {name: TEST, value: "$.data.test", valueFrom: event}
  - {name: URIS, value: "$.data.deployment.deploymentURIsLocal", valueFrom: event}
  - {name: STRATEGY_JSON, value: "$.data.test.teststrategy", valueFrom: event, as: json}
  - {name: TEST_JSON, value: "$.data.test", valueFrom: event, as: json}
  - {name: TEST_YAML, value: "$.data.test", valueFrom: event, as: yaml}
  - {name: PLAIN, value: "$.data.project", valueFrom: event, as: string}
  - {name: LITERAL, value: "/tmp/data"}
"#,
    );
    let job = render(&c, &Settings::defaults()).unwrap();
    let get = |name| env_value(&job, name).unwrap();
    assert_eq!(get("HOST"), "http://carts.dev:80");
    assert_eq!(get("REPLICAS"), "3");
    assert_eq!(get("ENABLED"), "true");
    assert_eq!(get("NONE"), "");
    assert_eq!(
        get("TEST"),
        r#"{"enabled":true,"none":null,"teststrategy":"locust"}"#
    );
    assert_eq!(get("URIS"), r#"["http://carts.dev:80"]"#);
    assert_eq!(get("STRATEGY_JSON"), r#""locust""#);
    assert_eq!(
        get("TEST_JSON"),
        r#"{"enabled":true,"none":null,"teststrategy":"locust"}"#
    );
    let yaml = get("TEST_YAML");
    assert!(yaml.contains("teststrategy: locust"), "{yaml}");
    assert!(yaml.contains("enabled: true"), "{yaml}");
    assert_eq!(get("PLAIN"), "sockshop");
    assert_eq!(get("LITERAL"), "/tmp/data");
}

#[test]
fn keptn_fields_and_sorted_labels_follow_the_task_env() {
    let c = one_task("image: alpine\nenv:\n  - {name: FIRST, value: x}\n");
    let job = render(&c, &Settings::defaults()).unwrap();
    let names: Vec<String> = env_of(&job).into_iter().map(|(n, _)| n).collect();
    assert_eq!(
        names,
        [
            "FIRST",
            "KEPTN_PROJECT",
            "KEPTN_STAGE",
            "KEPTN_SERVICE",
            "LABELS_BUILD_ID",
            "LABELS_TEAM_NAME"
        ]
    );
    assert_eq!(env_value(&job, "KEPTN_SERVICE").as_deref(), Some("carts"));
    assert_eq!(env_value(&job, "LABELS_BUILD_ID").as_deref(), Some("42"));
    // Labels that make the same name make one variable: of the key that sorts last.
    let mut colliding = event_json();
    colliding["data"]["labels"]["team_name"] = json!("b");
    let colliding = CloudEvent::from_value(colliding).unwrap();
    let job = render_for(&colliding, &c, &[], None, &Settings::defaults()).unwrap();
    let team: Vec<(String, Option<String>)> = env_of(&job)
        .into_iter()
        .filter(|(name, _)| name == "LABELS_TEAM_NAME")
        .collect();
    assert_eq!(team.len(), 1, "{team:?}");
    assert_eq!(env_value(&job, "LABELS_TEAM_NAME").as_deref(), Some("b"));
}

/// What the event (or another task) gives is what the container sees: the kubelet expands
/// `$(NAME)` in an env value to another variable, a Secret's among them, and `$$` to `$`, so
/// each `$` of such a value is written `$$`; the config's own values keep `$(NAME)` working.
#[test]
fn values_from_the_event_are_kept_from_the_kubelets_expansion() {
    let event = CloudEvent::from_value(json!({
        "specversion": "1.0", "id": "1", "source": "s", "type": "t",
        "data": {
            "project": "p", "stage": "pa$$word", "service": "s",
            "note": "$(API_TOKEN)",
            "labels": {"team": "$(API_TOKEN)"}
        }
    }))
    .unwrap();
    let c = one_task(
        "image: alpine\nenv:\n  - {name: API_TOKEN, valueFrom: secret, secretName: s, key: t}\n  \
         - {name: NOTE, valueFrom: event, value: $.data.note}\n  \
         - {name: NOTE_JSON, valueFrom: event, value: $.data.labels, as: json}\n  \
         - {name: BEARER, value: \"Bearer $(API_TOKEN)\"}\n",
    );
    let job = render_for(&event, &c, &[], None, &Settings::defaults()).unwrap();
    let get = |name| env_value(&job, name).unwrap();
    assert_eq!(get("NOTE"), "$$(API_TOKEN)");
    assert_eq!(get("NOTE_JSON"), r#"{"team":"$$(API_TOKEN)"}"#);
    assert_eq!(get("KEPTN_STAGE"), "pa$$$$word");
    assert_eq!(get("LABELS_TEAM"), "$$(API_TOKEN)");
    assert_eq!(get("BEARER"), "Bearer $(API_TOKEN)");
}

/// `$.gitcommitid` and `$.shkeptncontext` read `""` from an event without them, as Keptn's
/// service showed every event; any other missing path is still an error.
#[test]
fn keptn_s_always_present_extensions_read_empty_when_absent() {
    let event = CloudEvent::from_value(serde_json::json!({
        "specversion": "1.0", "id": "1", "source": "s", "type": "t", "data": {"a": 1},
    }))
    .unwrap();
    for path in ["$.gitcommitid", "$['shkeptncontext']"] {
        assert_eq!(
            env_from_event(&event, path, None),
            Ok(String::new()),
            "{path}"
        );
    }
    // Not for a concurrency group: every event without a context would share one.
    assert_eq!(
        group_name("ctx-{$.shkeptncontext}", &event),
        Err(
            "the concurrency group \"ctx-{$.shkeptncontext}\" cannot be filled in: \
             $.shkeptncontext finds nothing in the event"
                .to_string()
        )
    );
    assert_eq!(
        env_from_event(&event, "$.data.a", None),
        Ok("1".to_string())
    );
    assert_eq!(
        env_from_event(&event, "$.triggeredid", None),
        Err(EnvError::Unresolved)
    );
    let pinned = CloudEvent::from_value(serde_json::json!({
        "specversion": "1.0", "id": "1", "source": "s", "type": "t", "gitcommitid": "abc",
    }))
    .unwrap();
    assert_eq!(
        env_from_event(&pinned, "$.gitcommitid", None),
        Ok("abc".to_string())
    );
}

/// A path that may select several values (a wildcard, a filter, a slice, `..`) reads as their
/// list whatever their number, as the old service read it; a path of names and indexes reads
/// as the value itself.
#[test]
fn a_path_that_may_select_several_values_reads_as_a_list() {
    let event = CloudEvent::from_value(serde_json::json!({
        "specversion": "1.0", "id": "1", "source": "s", "type": "t",
        "data": {"one": ["https://keptn.sh"], "none": [], "two": [{"u": "a"}, {"u": "b"}]},
    }))
    .unwrap();
    let json = Some(EnvFormat::Json);
    for (path, read) in [
        ("$.data.one[*]", r#"["https://keptn.sh"]"#),
        ("$.data.none[*]", "[]"),
        ("$.data.two[*].u", r#"["a","b"]"#),
        ("$.data.two[?@.u == 'b'].u", r#"["b"]"#),
        ("$.data.two[0:1].u", r#"["a"]"#),
        ("$.data.two[0,1].u", r#"["a","b"]"#),
        ("$..one[0]", r#"["https://keptn.sh"]"#),
        ("$.data.one[0]", r#""https://keptn.sh""#),
        ("$.data.two[-1].u", r#""b""#),
        ("$['data']['a*b?,:']", "ERR"),
    ] {
        let got = env_from_event(&event, path, json);
        if read == "ERR" {
            assert_eq!(got, Err(EnvError::Unresolved), "{path}");
        } else {
            assert_eq!(got, Ok(read.to_string()), "{path}");
        }
    }
    // A concurrency group's name reads one value as itself, and none fails.
    assert_eq!(
        group_name("deploy/{$..one[0]}", &event),
        Ok("deploy/https://keptn.sh".to_string())
    );
    assert!(group_name("deploy/{$.data.none[*]}", &event).is_err());
    // Nor do `null` and `""`: every event without the value would share the group.
    let empty = CloudEvent::from_value(serde_json::json!({
        "specversion": "1.0", "id": "1", "source": "s", "type": "t",
        "data": {"project": "", "stage": null, "service": "carts"},
    }))
    .unwrap();
    for path in ["$.data.project", "$.data.stage"] {
        assert_eq!(
            group_name(&format!("deploy/{{{path}}}"), &empty),
            Err(format!(
                "the concurrency group \"deploy/{{{path}}}\" cannot be filled in: {path} is empty \
                 (or null) in the event"
            ))
        );
    }
    assert_eq!(
        group_name("deploy/{service}", &empty),
        Ok("deploy/carts".into())
    );
}

#[test]
fn an_unresolvable_env_path_names_the_variable_and_path() {
    let c = one_task(
        "image: alpine\nenv:\n  - {name: MISSING, value: \"$.data.nope\", valueFrom: event}\n",
    );
    assert_eq!(
        render(&c, &Settings::defaults()).unwrap_err().to_string(),
        "task 'Smoke test': env MISSING: JSONPath $.data.nope resolves to nothing in the event"
    );
}

/// A value no process can be given (a NUL in it, or more than the kernel takes for one
/// variable) fails the run when the event comes, naming the variable, not the container's start.
#[test]
fn a_value_no_process_can_be_given_is_refused_naming_its_variable() {
    let c = one_task(
        "image: alpine\nenv:\n  - {name: DEPLOYMENT, value: \"$.data.deployment\", valueFrom: event, as: json}\n",
    );
    let with = |data: serde_json::Value| {
        let mut event = event_json();
        event["data"]
            .as_object_mut()
            .unwrap()
            .extend(data.as_object().unwrap().clone());
        CloudEvent::from_value(event).unwrap()
    };
    let nul = with(json!({"labels": {"build-id": "4\u{0}2"}}));
    let expected = "task 'Smoke test': env LABELS_BUILD_ID: its value holds a NUL character, \
                    which no process's environment can carry";
    assert_eq!(
        check_event_values(&c.actions[0], &nul)
            .unwrap_err()
            .to_string(),
        expected
    );
    assert_eq!(
        render_for(&nul, &c, &[], None, &Settings::defaults())
            .unwrap_err()
            .to_string(),
        expected
    );
    // `DEPLOYMENT=` and `{"x":"…"}`: 11 + 6 + 131,060 + 2 bytes.
    let large = with(json!({"deployment": {"x": "a".repeat(131_060)}}));
    assert_eq!(
        check_event_values(&c.actions[0], &large)
            .unwrap_err()
            .to_string(),
        "task 'Smoke test': env DEPLOYMENT: it takes 131079 bytes as NAME=value, more than the \
         131071 one variable may take in a process's environment"
    );
    let fits = with(json!({"deployment": {"x": "a".repeat(131_040)}}));
    assert!(check_event_values(&c.actions[0], &fits).is_ok());
    // Counted as the process sees it, not as the Job writes each `$` (`$$`).
    let dollars = with(json!({"labels": {"d": "$".repeat(70_000)}}));
    assert!(check_event_values(&c.actions[0], &dollars).is_ok());
    assert!(render_for(&dollars, &c, &[], None, &Settings::defaults()).is_ok());
    assert!(check_event_values(&c.actions[0], &event()).is_ok());
}

#[test]
fn secrets_map_to_secret_refs() {
    let c = one_task(
        "image: alpine\nenv:\n  - {name: all-keys, valueFrom: secret}\n  - {name: TOKEN, valueFrom: secret, secretName: api, key: token}\n",
    );
    let job = render(&c, &Settings::defaults()).unwrap();
    let c = container(&job);
    let from = c.env_from.as_ref().unwrap();
    assert_eq!(from[0].secret_ref.as_ref().unwrap().name, "all-keys");
    let token = c
        .env
        .as_ref()
        .unwrap()
        .iter()
        .find(|e| e.name == "TOKEN")
        .unwrap();
    let selector = token
        .value_from
        .as_ref()
        .unwrap()
        .secret_key_ref
        .as_ref()
        .unwrap();
    assert_eq!(
        (selector.name.as_str(), selector.key.as_str()),
        ("api", "token")
    );
}

fn resource(job: &Job, section: &str, name: &str) -> String {
    let r = container(job).resources.as_ref().unwrap();
    let list = if section == "requests" {
        &r.requests
    } else {
        &r.limits
    };
    list.as_ref().unwrap()[name].0.clone()
}

/// The resource list of `section` as `name=value` pairs; empty when the section is not set.
fn resource_list(job: &Job, section: &str) -> Vec<String> {
    let r = container(job).resources.as_ref().unwrap();
    let list = if section == "requests" {
        &r.requests
    } else {
        &r.limits
    };
    list.iter()
        .flatten()
        .map(|(name, value)| format!("{name}={}", value.0))
        .collect()
}

#[test]
fn resources_are_the_defaults_or_the_tasks_alone() {
    let defaults = Settings::defaults();
    let job = render(&one_task("image: alpine"), &defaults).unwrap();
    assert_eq!(resource_list(&job, "requests"), ["cpu=50m", "memory=128Mi"]);
    assert_eq!(resource_list(&job, "limits"), ["cpu=1", "memory=512Mi"]);

    // A task's block replaces the defaults, as in Keptn's service: no memory limit here.
    let job = render(
        &one_task("image: alpine\nresources:\n  limits: {cpu: 2}\n  requests: {memory: 1Gi}"),
        &defaults,
    )
    .unwrap();
    assert_eq!(resource_list(&job, "limits"), ["cpu=2"]);
    // A limit without its request is the request too, as Kubernetes has it.
    assert_eq!(resource_list(&job, "requests"), ["cpu=2", "memory=1Gi"]);
    // Present, even if empty.
    let job = render(&one_task("image: alpine\nresources: {}"), &defaults).unwrap();
    assert!(resource_list(&job, "requests").is_empty());
    assert!(resource_list(&job, "limits").is_empty());
    // Empty values are unset ones.
    let job = render(
        &one_task("image: alpine\nresources:\n  requests: {cpu: \"\", memory: 64Mi}"),
        &defaults,
    )
    .unwrap();
    assert_eq!(resource_list(&job, "requests"), ["memory=64Mi"]);
    assert!(resource_list(&job, "limits").is_empty());
}

/// A task limit without its request is the request, below the default request or above it:
/// Kubernetes takes a container's limit as its request when it has none, before any default of a
/// LimitRange, and the old service's Jobs had it so (a limit of 4 CPUs with the default request
/// of 50m would be scheduled where 4 CPUs are not free).
#[test]
fn a_limit_without_its_request_is_the_request() {
    let job = render(
        &one_task("image: alpine\nresources:\n  limits: {cpu: 25m, memory: 64Mi}"),
        &Settings::defaults(),
    )
    .unwrap();
    assert_eq!(resource(&job, "requests", "cpu"), "25m");
    assert_eq!(resource(&job, "requests", "memory"), "64Mi");
    assert_eq!(resource(&job, "limits", "cpu"), "25m");
    assert_eq!(resource(&job, "limits", "memory"), "64Mi");
    let job = render(
        &one_task("image: alpine\nresources:\n  limits: {cpu: 4, memory: 8Gi}"),
        &Settings::defaults(),
    )
    .unwrap();
    assert_eq!(resource(&job, "requests", "cpu"), "4");
    assert_eq!(resource(&job, "requests", "memory"), "8Gi");
}

#[test]
fn security_defaults_merge_with_the_task() {
    let defaults = Settings::defaults();
    let job = render(&one_task("image: alpine"), &defaults).unwrap();
    let sc = container(&job).security_context.clone().unwrap();
    assert_eq!(sc.run_as_non_root, Some(true));
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(sc.capabilities.unwrap().drop, Some(vec!["ALL".to_string()]));
    assert_eq!(sc.seccomp_profile.unwrap().type_, "RuntimeDefault");
    let pod = job.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
    assert_eq!(pod.automount_service_account_token, Some(false));
    assert_eq!(
        pod.security_context.as_ref().unwrap().run_as_non_root,
        Some(true)
    );

    let job = render(
        &one_task(
            "image: alpine\nserviceAccount: deployer\nsecurityContext:\n  runAsUser: 1000\n  readOnlyRootFilesystem: false\n  capabilities: {add: [NET_BIND_SERVICE]}\n  seccompProfile: {type: Localhost, localhostProfile: p.json}",
        ),
        &defaults,
    )
    .unwrap();
    let sc = container(&job).security_context.clone().unwrap();
    assert_eq!(sc.run_as_user, Some(1000));
    assert_eq!(sc.read_only_root_filesystem, Some(false));
    assert_eq!(sc.run_as_non_root, Some(true));
    let caps = sc.capabilities.unwrap();
    assert_eq!(caps.add, Some(vec!["NET_BIND_SERVICE".to_string()]));
    assert_eq!(caps.drop, Some(vec!["ALL".to_string()]));
    assert_eq!(sc.seccomp_profile.unwrap().type_, "Localhost");
    // The runtime's default capabilities, as the old service's `add` alone kept them.
    let kept = render(
        &one_task("image: alpine\nsecurityContext:\n  capabilities: {add: [NET_ADMIN], drop: []}"),
        &defaults,
    )
    .unwrap();
    let caps = container(&kept)
        .security_context
        .clone()
        .unwrap()
        .capabilities
        .unwrap();
    assert_eq!(caps.add, Some(vec!["NET_ADMIN".to_string()]));
    assert_eq!(caps.drop, Some(Vec::new()));
    let pod = job.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
    assert_eq!(pod.service_account_name.as_deref(), Some("deployer"));
    assert_eq!(pod.automount_service_account_token, Some(true));
}

#[test]
fn privileged_containers_need_the_installation_to_allow_them() {
    let c = one_task("image: alpine\nsecurityContext: {privileged: true}");
    assert_eq!(
        render(&c, &Settings::defaults()).unwrap_err(),
        RenderError::PrivilegedNotAllowed {
            task: "Smoke test".into()
        }
    );
    let mut allowing = Settings::defaults();
    allowing.allow_privileged = true;
    let job = render(&c, &allowing).unwrap();
    let sc = container(&job).security_context.clone().unwrap();
    assert_eq!(sc.privileged, Some(true));
    assert_eq!(sc.allow_privilege_escalation, Some(true));
}

/// A task that runs as root where non-root is asked for (the installation's default, or its
/// own) is refused before any Job: the kubelet would never start its container.
#[test]
fn root_with_run_as_non_root_is_refused_before_any_job() {
    let refused = |context: &str| render(&one_task(context), &Settings::defaults());
    assert_eq!(
        refused("image: alpine\nsecurityContext: {runAsUser: 0}").unwrap_err(),
        RenderError::RootAsNonRoot {
            task: "Smoke test".into(),
            installed: true
        }
    );
    assert_eq!(
        refused("image: alpine\nsecurityContext: {runAsUser: 0}")
            .unwrap_err()
            .to_string(),
        "task 'Smoke test' runs as user 0 (root) with runAsNonRoot: true (this installation's \
         default): the kubelet would refuse its container, which would never start; set \
         `runAsNonRoot: false` in its securityContext, or a user other than 0"
    );
    assert!(matches!(
        refused("image: alpine\nsecurityContext: {runAsUser: 0, runAsNonRoot: true}"),
        Err(RenderError::RootAsNonRoot {
            installed: false,
            ..
        })
    ));
    let root = refused("image: alpine\nsecurityContext: {runAsUser: 0, runAsNonRoot: false}");
    assert_eq!(
        container(&root.unwrap())
            .security_context
            .clone()
            .unwrap()
            .run_as_user,
        Some(0)
    );
    assert!(refused("image: alpine\nsecurityContext: {runAsUser: 1001}").is_ok());
}

/// A container that adds CAP_SYS_ADMIN may escalate unless told otherwise: the API server
/// refuses it with the default `allowPrivilegeEscalation: false` (checked on the real one).
#[test]
fn a_container_with_cap_sys_admin_may_escalate() {
    for (add, escalates) in [("CAP_SYS_ADMIN", true), ("NET_ADMIN", false)] {
        let c = one_task(&format!(
            "image: alpine\nsecurityContext: {{capabilities: {{add: [{add}]}}}}"
        ));
        let job = render(&c, &Settings::defaults()).unwrap();
        let sc = container(&job).security_context.clone().unwrap();
        assert_eq!(sc.allow_privilege_escalation, Some(escalates), "{add}");
    }
}

#[test]
fn a_refused_secret_fails_the_task_saying_so() {
    let mut refusing = Settings::defaults();
    refusing.refused_secrets = vec!["job-executor".into(), "sh.helm.release.v1.*".into()];
    for (env, secret) in [
        (
            "{name: TOKEN, valueFrom: secret, secretName: job-executor, key: ingest-token}",
            "job-executor",
        ),
        ("{name: job-executor, valueFrom: secret}", "job-executor"),
        // Helm's record of a release holds every value it rendered.
        (
            "{name: R, valueFrom: secret, secretName: sh.helm.release.v1.job-executor.v2, key: release}",
            "sh.helm.release.v1.job-executor.v2",
        ),
    ] {
        let c = one_task(&format!("image: alpine\nenv: [{env}]"));
        let error = render(&c, &refusing).unwrap_err();
        assert_eq!(
            error.to_string(),
            format!(
                "task 'Smoke test' reads the Secret \"{secret}\", which this installation keeps \
                 from tasks (--refused-secrets: the operator's own tokens and credentials, image \
                 pull secrets, Helm's release records)"
            ),
            "{env}"
        );
        assert!(render(&c, &Settings::defaults()).is_ok(), "{env}");
    }
    let other = one_task(
        "image: alpine\nenv: [{name: T, valueFrom: secret, secretName: team-token, key: t}]",
    );
    assert!(render(&other, &refusing).is_ok());
}

#[test]
fn a_refused_service_account_fails_the_task_saying_so() {
    let c = one_task("image: alpine\nserviceAccount: job-executor");
    let mut refusing = Settings::defaults();
    refusing.refused_service_accounts = vec!["job-executor".into()];
    let error = render(&c, &refusing).unwrap_err();
    assert_eq!(
        error.to_string(),
        "task 'Smoke test' asks for the ServiceAccount \"job-executor\", which this installation \
         keeps from tasks (the operator's own: it may create Jobs and read every task's logs)"
    );
    assert!(render(&c, &Settings::defaults()).is_ok());
    let other = one_task("image: alpine\nserviceAccount: deployer");
    assert!(render(&other, &refusing).is_ok());
}

#[test]
fn the_allow_list_is_checked_for_every_task_before_anything_runs() {
    let c = config(
        "apiVersion: v2\nactions:\n  - events: [{name: x}]\n    tasks:\n      - {name: ok, image: 'alpine:3.20'}\n      - {name: bad, image: 'evil/miner:latest'}\n",
    );
    let mut settings = Settings::defaults();
    settings.allowed_images =
        ImageAllowList::new(&["alpine:*".to_string(), "ghcr.io/acme/*".to_string()]).unwrap();
    let error = check_action(&c.actions[0], &settings).unwrap_err();
    assert_eq!(
        error.to_string(),
        "task 'bad' uses image \"evil/miner:latest\", which is not in this installation's allowed images (alpine:*, ghcr.io/acme/*)"
    );
}

#[test]
fn jobs_stay_in_the_installation_namespace() {
    let mut settings = Settings::defaults();
    settings.job_namespace = "keptn-jobs".into();
    let job = render(&one_task("image: alpine\nnamespace: keptn-jobs"), &settings).unwrap();
    assert_eq!(job.metadata.namespace.as_deref(), Some("keptn-jobs"));
    let error = render(
        &one_task("image: alpine\nnamespace: kube-system"),
        &settings,
    )
    .unwrap_err();
    assert!(
        matches!(error, RenderError::NamespaceNotAllowed { .. }),
        "{error}"
    );
}

#[test]
fn job_spec_limits_and_defaults() {
    let settings = Settings::defaults();
    let job = render(&one_task("image: alpine"), &settings).unwrap();
    let spec = job.spec.as_ref().unwrap();
    assert_eq!(spec.backoff_limit, Some(0));
    assert_eq!(spec.active_deadline_seconds, Some(300));
    assert_eq!(spec.ttl_seconds_after_finished, Some(21600));
    let pod = spec.template.spec.as_ref().unwrap();
    assert_eq!(pod.restart_policy.as_deref(), Some("Never"));
    assert!(pod.init_containers.is_none());

    let job = render(
        &one_task(
            "image: alpine\nmaxPollDuration: 30\nttlSecondsAfterFinished: 10\nbackoffLimit: 3",
        ),
        &settings,
    )
    .unwrap();
    let spec = job.spec.as_ref().unwrap();
    assert_eq!(spec.active_deadline_seconds, Some(30));
    assert_eq!(spec.ttl_seconds_after_finished, Some(60));
    assert_eq!(spec.backoff_limit, Some(3));
}

#[test]
fn labels_identify_the_run_and_are_valid() {
    let job = render(
        &one_task("image: alpine\nlabels: {team: a}\nannotations: {example.com/owner: me}"),
        &Settings::defaults(),
    )
    .unwrap();
    let labels = job.metadata.labels.clone().unwrap();
    assert_eq!(labels["app.kubernetes.io/managed-by"], "job-executor");
    assert_eq!(labels[labels::RUN], "test-0123456789abcdef0123");
    assert_eq!(labels[labels::ACTION], "Run-tests");
    assert_eq!(labels[labels::TASK], "Smoke-test");
    assert_eq!(labels[labels::TASK_INDEX], "0");
    assert_eq!(labels["keptn.sh/project"], "sockshop");
    assert_eq!(labels["team"], "a");
    for value in labels.values() {
        assert!(crate::config::formats::is_label_value(value), "{value}");
    }
    assert_eq!(job.metadata.annotations.unwrap()["example.com/owner"], "me");
    assert_eq!(
        job.metadata.name.as_deref(),
        Some("test-0123456789abcdef0123-0")
    );
}

#[test]
fn installation_labels_go_on_jobs_and_pods() {
    let mut settings = Settings::defaults();
    settings.job_labels.insert("team".into(), "platform".into());
    settings
        .job_labels
        .insert("cost-center".into(), "42".into());
    let job = render(
        &one_task("image: alpine\nlabels: {team: platform, app: carts}"),
        &settings,
    )
    .unwrap();
    let labels = job.metadata.labels.clone().unwrap();
    assert_eq!(labels["team"], "platform", "a task may repeat one");
    assert_eq!(labels["app"], "carts");
    assert_eq!(labels["cost-center"], "42");
    let pod = job.spec.unwrap().template.metadata.unwrap().labels.unwrap();
    assert_eq!(pod["cost-center"], "42");
    assert_eq!(pod["team"], "platform");
    assert!(
        !pod.contains_key("app"),
        "the task's own labels are the Job's"
    );
    // Changing one would move the pods out of what selects them (a NetworkPolicy, say).
    let config = one_task("image: alpine\nlabels: {team: carts}");
    assert_eq!(
        check_action(&config.actions[0], &settings)
            .unwrap_err()
            .to_string(),
        "task 'Smoke test' sets the label team=carts, which this installation sets to team=platform on \
         every Job and its pods (--job-labels): a task cannot change it"
    );
}

#[test]
fn files_add_an_init_container_and_the_run_config_map() {
    let c = one_task("image: alpine\nfiles: [run.sh]");
    let job = render_with(&c, &run_sh(), None, &Settings::defaults()).unwrap();
    let pod = job.spec.as_ref().unwrap().template.spec.clone().unwrap();
    let init = &pod.init_containers.unwrap()[0];
    assert_eq!(
        init.args.as_deref().unwrap(),
        ["stage-files", "--from", "/job-files", "--to", "/keptn"]
    );
    let volumes = pod.volumes.unwrap();
    let config_map = volumes[1].config_map.as_ref().unwrap();
    assert_eq!(config_map.name, "test-0123456789abcdef0123-files");
    let item = &config_map.items.as_ref().unwrap()[0];
    assert_eq!(
        (item.key.as_str(), item.path.as_str(), item.mode),
        ("0-run.sh", "run.sh", Some(0o755))
    );
    assert_eq!(
        volumes[0].empty_dir.as_ref().unwrap().size_limit,
        Some(K8sQuantity("20Mi".into()))
    );
}

/// The init container runs as the task's user and group (so the task owns the files it was
/// given and may change them); as its own image's user when the task's is root or unknown.
#[test]
fn the_init_container_runs_as_the_task_s_user_when_it_is_known_and_not_root() {
    let init_user = |task: &str, settings: &Settings| {
        let job = render_with(&one_task(task), &run_sh(), None, settings).unwrap();
        let pod = job.spec.unwrap().template.spec.unwrap();
        let init = pod.init_containers.unwrap()[0].security_context.clone();
        let init = init.unwrap();
        (init.run_as_user, init.run_as_group, init.run_as_non_root)
    };
    let defaults = Settings::defaults();
    assert_eq!(
        init_user("image: alpine\nfiles: [run.sh]", &defaults),
        (Some(1000), Some(2000), Some(true)),
        "Keptn's defaults"
    );
    assert_eq!(
        init_user(
            "image: alpine\nfiles: [run.sh]\nsecurityContext: {runAsUser: 1001}",
            &defaults
        ),
        (Some(1001), Some(2000), Some(true))
    );
    assert_eq!(
        init_user(
            "image: alpine\nfiles: [run.sh]\nsecurityContext: {runAsUser: 0, runAsNonRoot: false}",
            &defaults
        ),
        (Some(65532), Some(65532), Some(true))
    );
    let mut image_user = Settings::defaults();
    image_user.security.run_as_user = None;
    image_user.security.run_as_group = None;
    assert_eq!(
        init_user("image: alpine\nfiles: [run.sh]", &image_user),
        (Some(65532), Some(65532), Some(true))
    );
    assert_eq!(
        init_user(
            "image: alpine\nfiles: [run.sh]\nsecurityContext: {runAsUser: 1001}",
            &image_user
        ),
        (Some(1001), Some(65532), Some(true))
    );
}

#[test]
fn label_env_names() {
    assert_eq!(label_env_name("build-id"), "LABELS_BUILD_ID");
    assert_eq!(label_env_name("Team Name"), "LABELS_TEAM_NAME");
    // What the API server refuses in a name (`=`, not printable ASCII) becomes `_` too.
    assert_eq!(label_env_name("größe"), "LABELS_GR__E");
    assert_eq!(label_env_name("a=b\tc"), "LABELS_A_B_C");
    assert_eq!(label_env_name("x.y/z"), "LABELS_X.Y_Z");
    assert_eq!(label_env_name("a:b+c"), "LABELS_A_B_C");
}

#[test]
fn the_files_config_map_holds_each_file_once_owned_by_the_run() {
    let owner = OwnerReference {
        api_version: "job-executor.dev/v1alpha1".into(),
        kind: "JobRun".into(),
        name: "run-1".into(),
        uid: "uid-1".into(),
        controller: Some(true),
        ..Default::default()
    };
    let file = |key: &str, content: &[u8]| RunFile {
        staged: StagedFile {
            key: key.into(),
            path: format!("/keptn/{key}"),
            executable: false,
        },
        content: content.to_vec(),
    };
    let map = files_config_map(
        "run-1",
        "jobs",
        Some(&owner),
        vec![file("0-a.txt", b"a"), file("1-b.sh", b"#!/bin/sh\n")],
    );
    assert_eq!(map.metadata.name.as_deref(), Some("run-1-files"));
    assert_eq!(map.metadata.namespace.as_deref(), Some("jobs"));
    let labels = map.metadata.labels.unwrap();
    assert_eq!(labels[labels::RUN], "run-1");
    assert_eq!(labels[MANAGED_BY_LABEL], MANAGED_BY);
    assert_eq!(map.metadata.owner_references, Some(vec![owner]));
    let data = map.binary_data.unwrap();
    assert_eq!(data.len(), 2);
    assert_eq!(data["0-a.txt"].0, b"a");
    assert_eq!(data["1-b.sh"].0, b"#!/bin/sh\n");
}

/// The whole Job of a task that sets every key, with files and an owner: every field the
/// renderer writes is in the snapshot, so none can go missing unnoticed.
#[test]
fn the_whole_job_of_a_task_with_every_key() {
    let c = one_task(
        r#"image: registry.example/tests:1.2
imagePullPolicy: Always
cmd: [/bin/sh, -c]
args: [./run.sh]
workingDir: /keptn
files: [run.sh]
env:
  - {name: HOST, value: "$.data.deployment.deploymentURIsLocal[0]", valueFrom: event}
  - {name: TOKEN, valueFrom: secret, secretName: api, key: token}
  - {name: all-keys, valueFrom: secret}
  - {name: LITERAL, value: "/tmp/data"}
resources:
  requests: {cpu: 100m, memory: 64Mi}
  limits: {cpu: "1", memory: 256Mi}
maxPollDuration: 600
ttlSecondsAfterFinished: 3600
securityContext:
  runAsUser: 1000
  runAsGroup: 1000
  runAsNonRoot: true
  readOnlyRootFilesystem: false
  allowPrivilegeEscalation: false
  capabilities: {drop: [ALL], add: [NET_BIND_SERVICE]}
  seccompProfile: {type: RuntimeDefault}
serviceAccount: tester
annotations: {example.com/team: carts}
imagePullSecrets: [registry-credentials]
emptyDirSizeLimit: 50Mi
backoffLimit: 2
labels: {team: carts}
"#,
    );
    let owner = OwnerReference {
        api_version: "job-executor.dev/v1alpha1".into(),
        kind: "JobRun".into(),
        name: "test-0123456789abcdef0123".into(),
        uid: "0f1e2d3c-4b5a-6978-8695-a4b3c2d1e0f9".into(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    };
    let job = render_with(&c, &run_sh(), Some(&owner), &Settings::defaults()).unwrap();
    insta::assert_snapshot!(serde_json::to_string_pretty(&job).unwrap());
}

#[test]
fn an_output_of_an_earlier_task_is_an_env_var_and_a_placeholder_in_a_preview() {
    let config = config(
        "apiVersion: v2\nactions:\n  - name: ship\n    tasks:\n      - {name: build, image: alpine, outputs: [version]}\n      - name: deploy\n        image: alpine\n        env: [{name: VERSION, valueFrom: output, value: build.version}]\n",
    );
    let event = event();
    let published = [BTreeMap::from([(
        "version".to_string(),
        "1.2.3".to_string(),
    )])];
    let deploy = |outputs: Option<&[BTreeMap<String, String>]>| {
        let job = render_job(
            &JobRequest {
                event: &event,
                run_name: "ship-0123456789abcdef0123",
                action_index: 0,
                action_name: "ship",
                tasks: &config.actions[0].tasks,
                task_index: 1,
                files: &[],
                owner: None,
                outputs,
                trace: None,
            },
            &Settings::defaults(),
        )?;
        let env = job.spec.unwrap().template.spec.unwrap().containers[0]
            .env
            .clone()
            .unwrap_or_default();
        Ok::<_, RenderError>(
            env.into_iter()
                .find(|e| e.name == "VERSION")
                .and_then(|e| e.value),
        )
    };
    assert_eq!(deploy(Some(&published)).unwrap().as_deref(), Some("1.2.3"));
    assert_eq!(
        deploy(None).unwrap().as_deref(),
        Some("(the output build.version)")
    );
    assert_eq!(
        deploy(Some(&[])).unwrap_err().to_string(),
        "task 'deploy': env VERSION: the output build.version was not published"
    );
}

/// The installation's user, group and filesystem group go on the pod, and on the container
/// where the task leaves them; the task's `procMount` is written as asked.
#[test]
fn the_installation_security_defaults_reach_the_pod_and_the_container() {
    let mut settings = Settings::defaults();
    settings.security.run_as_user = Some(1001);
    settings.security.run_as_group = Some(3000);
    settings.security.fs_group = Some(2000);
    let job = render(
        &one_task("image: alpine\nsecurityContext: {runAsUser: 1000, procMount: Unmasked}"),
        &settings,
    )
    .unwrap();
    let pod = job.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
    assert_eq!(
        pod.security_context,
        Some(PodSecurityContext {
            run_as_non_root: Some(true),
            run_as_user: Some(1001),
            run_as_group: Some(3000),
            fs_group: Some(2000),
            seccomp_profile: Some(runtime_default_seccomp()),
            ..Default::default()
        })
    );
    assert_eq!(
        pod.host_users,
        Some(false),
        "Unmasked needs a user namespace"
    );
    assert_eq!(
        container(&job).security_context,
        Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            capabilities: Some(Capabilities {
                add: None,
                drop: Some(vec!["ALL".into()]),
            }),
            privileged: None,
            proc_mount: Some("Unmasked".into()),
            read_only_root_filesystem: Some(true),
            run_as_group: Some(3000),
            run_as_non_root: Some(true),
            run_as_user: Some(1000),
            seccomp_profile: Some(runtime_default_seccomp()),
            ..Default::default()
        })
    );
}

#[test]
fn the_pod_continues_the_trace_unless_the_task_names_the_variable() {
    let config = one_task("image: alpine\nenv:\n  - {name: TRACESTATE, value: mine}\n");
    let event = event();
    let trace = crate::trace::TraceContext::new(
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        Some("vendor=1"),
    );
    let job = render_job(
        &JobRequest {
            event: &event,
            run_name: "test-0123456789abcdef0123",
            action_index: 0,
            action_name: "Run tests",
            tasks: &config.actions[0].tasks,
            task_index: 0,
            files: &[],
            owner: None,
            outputs: Some(&[]),
            trace,
        },
        &Settings::defaults(),
    )
    .unwrap();
    assert_eq!(
        env_value(&job, "TRACEPARENT").as_deref(),
        Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
    );
    assert_eq!(env_value(&job, "TRACESTATE").as_deref(), Some("mine"));
    let plain = render(&config, &Settings::defaults()).unwrap();
    assert_eq!(
        env_value(&plain, "TRACEPARENT"),
        None,
        "no context, no variable"
    );
}

/// A string variable without `value` is the empty string, as the old service made it.
#[test]
fn a_string_variable_without_a_value_is_empty() {
    let job = render(
        &one_task("image: alpine\nenv:\n  - {name: EMPTY, valueFrom: string}\n  - {name: ALSO}"),
        &Settings::defaults(),
    )
    .unwrap();
    assert_eq!(env_value(&job, "EMPTY"), Some(String::new()));
    assert_eq!(env_value(&job, "ALSO"), Some(String::new()));
}

/// The init image's pull Secrets go on the pods that stage files (the init container runs the
/// operator's image, maybe from a private registry), beside the task's own, each once.
#[test]
fn the_init_image_s_pull_secrets_go_where_files_are_staged() {
    let mut settings = Settings::defaults();
    settings.init_image_pull_secrets = vec!["registry-credentials".into()];
    let config = one_task("image: alpine\nimagePullSecrets: [regcred, registry-credentials]");
    let names = |job: &Job| -> Vec<String> {
        let pod = job.spec.as_ref().unwrap().template.spec.as_ref().unwrap();
        pod.image_pull_secrets
            .iter()
            .flatten()
            .map(|secret| secret.name.clone())
            .collect()
    };
    let staging = render_with(&config, &run_sh(), None, &settings).unwrap();
    assert_eq!(names(&staging), ["regcred", "registry-credentials"]);
    let plain = render_with(&one_task("image: alpine"), &run_sh(), None, &settings).unwrap();
    assert_eq!(names(&plain), ["registry-credentials"]);
    let no_files = render(&one_task("image: alpine"), &settings).unwrap();
    assert!(
        names(&no_files).is_empty(),
        "no init container, no init image"
    );
}
