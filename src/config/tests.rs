use std::collections::BTreeSet;

use super::*;

const FULL: &str = r#"apiVersion: v2
actions:
  - name: "Run locust"
    silent: false
    timeout: 1h30m
    concurrency:
      group: "load/{project}/{stage}/{$.data.service}"
      limit: 2
      policy: cancel-in-progress
    events:
      - name: "sh.keptn.event.test.triggered"
        jsonpath:
          property: "$.data.test.teststrategy"
          match: "locust"
      - name: "sh.keptn.event.*.triggered"
    tasks:
      - name: "Run locust smoke tests"
        image: "locustio/locust:2.20"
        imagePullPolicy: IfNotPresent
        cmd: ["locust"]
        args: ["--config", "/keptn/locust/locust.conf"]
        workingDir: /keptn
        files:
          - locust/basic.py
          - locust
        env:
          - name: HOST
            value: "$.data.deployment.deploymentURIsLocal[0]"
            valueFrom: event
          - name: EVENT
            value: "$.data"
            valueFrom: event
            as: json
          - name: locust-secret
            valueFrom: secret
          - name: API_TOKEN
            valueFrom: secret
            secretName: api
            key: token
          - name: DATA_DIR
            value: /tmp/data
            valueFrom: string
          - name: PORT
            value: 8080
        resources:
          limits:
            cpu: 1
            memory: 512Mi
          requests:
            cpu: 50m
            memory: "128Mi"
        maxPollDuration: 600
        namespace: keptn
        ttlSecondsAfterFinished: 120
        securityContext:
          capabilities:
            add: [NET_BIND_SERVICE]
            drop: [ALL]
          privileged: false
          runAsUser: 1000
          runAsGroup: 1000
          runAsNonRoot: true
          readOnlyRootFilesystem: true
          allowPrivilegeEscalation: false
          procMount: Default
          seccompProfile:
            type: RuntimeDefault
        serviceAccount: locust-runner
        annotations:
          example.com/owner: team-a
        imagePullSecrets: [regcred]
        emptyDirSizeLimit: 50Mi
        backoffLimit: 2
        labels:
          team: a
"#;

fn problems(text: &str) -> Vec<String> {
    match load(text, "job/config.yaml") {
        Ok(valid) => panic!("expected errors, loaded {:?}", valid.config),
        Err(ConfigError::Invalid { file, problems, .. }) => {
            problems.iter().map(|p| format_problem(&file, p)).collect()
        }
        Err(other) => panic!("{other}"),
    }
}

#[test]
fn every_key_of_the_format_loads() {
    let valid = load(FULL, "job/config.yaml").unwrap();
    assert!(valid.warnings.is_empty(), "{:?}", valid.warnings);
    let action = &valid.config.actions[0];
    assert_eq!(action.name.as_deref(), Some("Run locust"));
    assert_eq!(action.timeout.as_deref(), Some("1h30m"));
    let concurrency = action.concurrency.as_ref().unwrap();
    assert_eq!(concurrency.group, "load/{project}/{stage}/{$.data.service}");
    assert_eq!(concurrency.limit(), 2);
    assert_eq!(concurrency.policy, ConcurrencyPolicy::CancelInProgress);
    assert_eq!(action.events.len(), 2);
    let filter = action.events[0].jsonpath.as_ref().unwrap();
    assert_eq!(filter.property, "$.data.test.teststrategy");
    assert_eq!(filter.match_value, "locust");
    assert!(action.events[1].jsonpath.is_none());
    let task = &action.tasks[0];
    assert_eq!(task.image, "locustio/locust:2.20");
    assert_eq!(task.image_pull_policy, Some(ImagePullPolicy::IfNotPresent));
    assert_eq!(task.cmd, ["locust"]);
    assert_eq!(task.args.len(), 2);
    assert_eq!(task.working_dir.as_deref(), Some("/keptn"));
    assert_eq!(task.files, ["locust/basic.py", "locust"]);
    assert_eq!(task.env.len(), 6);
    assert_eq!(task.env[1].format, Some(EnvFormat::Json));
    assert_eq!(task.env[2].value_from, Some(ValueFrom::Secret));
    assert_eq!(task.env[3].secret_name.as_deref(), Some("api"));
    assert_eq!(task.env[3].key.as_deref(), Some("token"));
    // A plain number where a string is expected reads as its text, as in the old service.
    assert_eq!(task.env[5].value.as_deref(), Some("8080"));
    let resources = task.resources.as_ref().unwrap();
    let limits = resources.limits.as_ref().unwrap();
    assert_eq!(limits.cpu, Some(Quantity("1".into())));
    assert_eq!(limits.memory, Some(Quantity("512Mi".into())));
    assert_eq!(task.max_poll_duration, Some(600));
    assert_eq!(task.namespace.as_deref(), Some("keptn"));
    assert_eq!(task.ttl_seconds_after_finished, Some(120));
    let security = task.security_context.as_ref().unwrap();
    assert_eq!(security.run_as_user, Some(1000));
    assert_eq!(security.proc_mount, Some(ProcMount::Default));
    assert_eq!(
        security.seccomp_profile.as_ref().unwrap().profile_type,
        SeccompProfileType::RuntimeDefault
    );
    assert_eq!(
        security.capabilities.as_ref().unwrap().add.as_deref(),
        Some(&["NET_BIND_SERVICE".to_string()][..])
    );
    assert_eq!(task.service_account.as_deref(), Some("locust-runner"));
    assert_eq!(task.annotations["example.com/owner"], "team-a");
    assert_eq!(task.image_pull_secrets, ["regcred"]);
    assert_eq!(task.empty_dir_size_limit, Some(Quantity("50Mi".into())));
    assert_eq!(task.backoff_limit, Some(2));
    assert_eq!(task.labels["team"], "a");
}

#[test]
fn loaded_config_round_trips_through_json() {
    let valid = load(FULL, "c.yaml").unwrap();
    let json = serde_json::to_value(&valid.config).unwrap();
    let back: JobConfig = serde_json::from_value(json).unwrap();
    assert_eq!(back, valid.config);
}

#[test]
fn api_version_is_required_and_must_be_v2() {
    assert_eq!(
        problems("actions: []\n"),
        ["job/config.yaml:1:1: missing required key \"apiVersion\""]
    );
    assert_eq!(
        problems("apiVersion: v1\nactions: []\n"),
        ["job/config.yaml:1:13: apiVersion: invalid value \"v1\": expected one of \"v2\""]
    );
}

#[test]
fn unknown_keys_are_errors_with_suggestions() {
    let text = "apiVersion: v2\nactions:\n  - name: a\n    tasks:\n      - name: t\n        imag: alpine\n";
    assert_eq!(
        problems(text),
        [
            "job/config.yaml:5:9: actions[0].tasks[0]: missing required key \"image\"",
            "job/config.yaml:6:9: actions[0].tasks[0].imag: unknown key \"imag\", did you mean \"image\"?",
        ]
    );
}

#[test]
fn every_error_in_a_file_is_reported_with_its_location() {
    let text = r#"apiVersion: v2
actions:
  - name: first
    events:
      - name: "sh.keptn.event.test.triggered"
        jsonpath:
          property: "data..["
          match: x
    tasks:
      - image: alpine
        imagePullPolicy: Alway
        resources:
          limits:
            cpu: 1x
        maxPollDuration: soon
        silent: true
  - name: second
    silent: maybe
    tasks:
      - image: alpine
        namespace: Not_A_Namespace
        files: ["/../etc/passwd"]
        ttlSecondsAfterFinished: 2147483648
"#;
    assert_eq!(
        problems(text),
        [
            "job/config.yaml:7:21: actions[0].events[0].jsonpath.property: invalid JSONPath \"data..[\": a JSONPath starts with `$`, e.g. `$.data.project`",
            "job/config.yaml:11:26: actions[0].tasks[0].imagePullPolicy: invalid value \"Alway\": expected one of \"Always\", \"IfNotPresent\", \"Never\", did you mean \"Always\"?",
            "job/config.yaml:14:18: actions[0].tasks[0].resources.limits.cpu: invalid quantity \"1x\" (expected e.g. 500m, 1, 128Mi)",
            "job/config.yaml:15:26: actions[0].tasks[0].maxPollDuration: expected an integer, found \"soon\"",
            "job/config.yaml:16:9: actions[0].tasks[0].silent: unknown key \"silent\"",
            "job/config.yaml:18:13: actions[1].silent: expected true or false, found \"maybe\"",
            "job/config.yaml:21:20: actions[1].tasks[0].namespace: invalid name \"Not_A_Namespace\": must be lower-case letters, digits and '-', start and end with a letter or digit, at most 63 characters",
            "job/config.yaml:22:17: actions[1].tasks[0].files[0]: file path \"/../etc/passwd\" must not leave the service directory (\"..\")",
            "job/config.yaml:23:34: actions[1].tasks[0].ttlSecondsAfterFinished: 2147483648 is out of range: must be at most 2147483647",
        ]
    );
}

#[test]
fn duplicate_keys_and_yaml_syntax_errors_are_located() {
    assert_eq!(
        problems("apiVersion: v2\nactions: []\napiVersion: v2\n"),
        ["job/config.yaml:3:1: duplicate key \"apiVersion\" (first defined at line 1)"]
    );
    let syntax = problems("apiVersion: v2\nactions:\n  - name: [unclosed\n");
    assert_eq!(syntax.len(), 1);
    assert!(
        syntax[0].starts_with("job/config.yaml:") && syntax[0].contains("invalid YAML"),
        "{syntax:?}"
    );
}

#[test]
fn wrong_types_are_errors() {
    let text = "apiVersion: v2\nactions:\n  - name: a\n    events: sh.keptn.event.test.triggered\n    tasks:\n      - image: [alpine]\n        cmd: run\n";
    assert_eq!(
        problems(text),
        [
            "job/config.yaml:4:13: actions[0].events: expected a list, found a scalar",
            "job/config.yaml:6:16: actions[0].tasks[0].image: expected a string, found a list",
            "job/config.yaml:7:14: actions[0].tasks[0].cmd: expected a list, found a scalar",
        ]
    );
}

#[test]
fn empty_optional_keys_mean_not_set() {
    let bare = "apiVersion: v2\nactions:\n  - name: a\n    events:\n      - name: x\n    tasks:\n      - image: alpine\n";
    let expected = serde_json::to_value(&load(bare, "c.yaml").unwrap().config).unwrap();
    // Every optional key of a task, of an action and of the file, written with no value: the
    // same config as without the key.
    for (indent, key) in [
        ("        ", "name"),
        ("        ", "imagePullPolicy"),
        ("        ", "cmd"),
        ("        ", "args"),
        ("        ", "workingDir"),
        ("        ", "files"),
        ("        ", "env"),
        ("        ", "resources"),
        ("        ", "maxPollDuration"),
        ("        ", "namespace"),
        ("        ", "ttlSecondsAfterFinished"),
        ("        ", "securityContext"),
        ("        ", "serviceAccount"),
        ("        ", "annotations"),
        ("        ", "imagePullSecrets"),
        ("        ", "emptyDirSizeLimit"),
        ("        ", "backoffLimit"),
        ("        ", "labels"),
    ] {
        let text = format!("{bare}{indent}{key}:\n");
        let loaded = load(&text, "c.yaml").unwrap_or_else(|e| panic!("{key}: {e:?}"));
        assert_eq!(
            serde_json::to_value(&loaded.config).unwrap(),
            expected,
            "{key}: empty"
        );
    }
    let silent = bare.replace("  - name: a\n", "  - name: a\n    silent:\n");
    assert_eq!(
        serde_json::to_value(&load(&silent, "c.yaml").unwrap().config).unwrap(),
        expected,
        "silent: empty"
    );
}

#[test]
fn silent_is_written_only_when_set() {
    let text = |silent: &str| {
        format!(
            "apiVersion: v2\nactions:\n  - name: a\n    silent: {silent}\n    events: [{{name: x}}]\n"
        )
    };
    let written = |silent: &str| {
        let config = load(&text(silent), "c.yaml").unwrap().config;
        serde_json::to_value(&config).unwrap()["actions"][0].clone()
    };
    assert_eq!(written("true")["silent"], serde_json::json!(true));
    assert!(
        written("false").get("silent").is_none(),
        "{}",
        written("false")
    );
}

#[test]
fn env_combinations_are_checked() {
    let text = r#"apiVersion: v2
actions:
  - events: [{name: x}]
    tasks:
      - image: alpine
        env:
          - name: A
            valueFrom: event
          - name: B
            valueFrom: secret
            secretName: s
          - name: C
            value: literal
            as: json
          - name: D
            value: "$.x"
            valueFrom: secret
          - name: Not A Secret Name
            valueFrom: secret
          - name: E
            valueFrom: string
          - name: "F=G"
            value: x
          - name: H
            value: y
            key: k
"#;
    assert_eq!(
        problems(text),
        [
            "job/config.yaml:7:13: actions[0].tasks[0].env[0].value: valueFrom: event needs `value`, a JSONPath into the event",
            "job/config.yaml:9:13: actions[0].tasks[0].env[1].key: `secretName` needs `key`",
            "job/config.yaml:15:19: actions[0].tasks[0].env[3].name: with valueFrom: secret, `name` is a Secret: invalid name \"D\": must be lower-case letters, digits, '-' and '.', at most 253 characters",
            "job/config.yaml:18:19: actions[0].tasks[0].env[4].name: with valueFrom: secret, `name` is a Secret: invalid name \"Not A Secret Name\": must be lower-case letters, digits, '-' and '.', at most 253 characters",
            "job/config.yaml:22:19: actions[0].tasks[0].env[6].name: invalid environment variable name \"F=G\": printable ASCII without '='",
            "job/config.yaml:26:18: actions[0].tasks[0].env[7].key: `secretName` and `key` go with valueFrom: secret",
        ]
    );
    // What Keptn's service ignored loads, told: `as` beside a plain value, a `value` beside
    // a Secret; a negative TTL it raised.
    let ignored = "apiVersion: v2\nactions:\n  - events: [{name: x}]\n    tasks:\n      - image: alpine\n        env:\n          - {name: C, value: literal, as: json}\n          - {name: d, value: x, valueFrom: secret}\n        ttlSecondsAfterFinished: -1\n";
    let valid = load(ignored, "job/config.yaml").unwrap();
    let warnings: Vec<String> = valid
        .warnings
        .iter()
        .map(|w| format_problem("job/config.yaml", w))
        .collect();
    assert_eq!(
        warnings,
        [
            "job/config.yaml:7:43: actions[0].tasks[0].env[0].as: `as` applies only to valueFrom: event, and is ignored here",
            "job/config.yaml:8:30: actions[0].tasks[0].env[1].value: valueFrom: secret takes no `value`, and it is ignored: `name` is the Secret (all its keys), or `secretName` and `key` name one key",
            "job/config.yaml:9:34: actions[0].tasks[0].ttlSecondsAfterFinished: -1 is raised to 60: the Job must outlive the collection of its logs",
        ]
    );
}

#[test]
fn labels_and_annotations_are_checked() {
    let text = r#"apiVersion: v2
actions:
  - events: [{name: x}]
    tasks:
      - image: alpine
        labels:
          job-executor.dev/run: mine
          ok: "not ok!"
          keptn.sh/jes-task: smoke-test
          keptn.sh/team: carts
        annotations:
          "bad key": x
          Example.COM/Owner: taken, as the API server takes it
          Example.COM/-x: not
"#;
    assert_eq!(
        problems(text),
        [
            "job/config.yaml:7:33: actions[0].tasks[0].labels[\"job-executor.dev/run\"]: label \"job-executor.dev/run\" is set by job-executor and cannot be overridden",
            "job/config.yaml:8:15: actions[0].tasks[0].labels.ok: invalid label value \"not ok!\": at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit",
            "job/config.yaml:9:30: actions[0].tasks[0].labels[\"keptn.sh/jes-task\"]: label \"keptn.sh/jes-task\" is set by job-executor and cannot be overridden",
            "job/config.yaml:12:22: actions[0].tasks[0].annotations[\"bad key\"]: invalid key \"bad key\": expected an optional DNS prefix and '/', then at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit",
            "job/config.yaml:14:27: actions[0].tasks[0].annotations[\"Example.COM/-x\"]: invalid key \"Example.COM/-x\": expected an optional DNS prefix and '/', then at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit",
        ]
    );
}

/// The warnings of a config that loads, as `location: path: message`.
fn warnings(text: &str) -> Vec<String> {
    let valid = load(text, "c.yaml").unwrap();
    valid
        .warnings
        .iter()
        .map(|w| format!("{}: {}: {}", w.location, w.path, w.message))
        .collect()
}

#[test]
fn warnings_do_not_fail_loading() {
    let text = r#"apiVersion: v2
actions:
  - name: regex
    events:
      - name: "^sh\\.keptn\\.event\\.test\\.triggered$"
    tasks:
      - image: alpine
        ttlSecondsAfterFinished: 5
        securityContext:
          privileged: true
        env:
          - {name: HOST, value: "$.data.deployment.deploymentURIsLocal[0]"}
          - {name: PRICE, value: "$5"}
          - {name: ALL, value: "$", valueFrom: string}
  - name: empty
"#;
    let messages = warnings(text);
    assert_eq!(messages.len(), 6, "{messages:#?}");
    assert!(messages[0].starts_with("5:15: actions[0].events[0].name: \"^sh"));
    assert!(messages[0].contains("anchored globs"));
    assert_eq!(
        messages[1],
        "8:34: actions[0].tasks[0].ttlSecondsAfterFinished: 5 is raised to 60: the Job must outlive the collection of its logs"
    );
    assert!(messages[2].starts_with("10:23: actions[0].tasks[0].securityContext.privileged:"));
    assert_eq!(
        messages[3],
        "12:33: actions[0].tasks[0].env[0].value: \"$.data.deployment.deploymentURIsLocal[0]\" \
         looks like a JSONPath, but without `valueFrom` the value is the text itself: write \
         `valueFrom: event` to read it from the event"
    );
    assert!(messages[4].starts_with("15:5: actions[1].events: no events"));
    assert!(messages[5].starts_with("15:5: actions[1].tasks: no tasks"));
}

#[test]
fn jsonpaths_with_blanks_around_them_read_as_the_old_service_read_them() {
    let text = r#"apiVersion: v2
actions:
  - name: a
    events:
      - name: sh.keptn.event.test.triggered
        jsonpath: {property: " $.data.project ", match: p}
    tasks:
      - image: alpine
        env:
          - {name: STAGE, value: " data.stage", valueFrom: event}
"#;
    assert_eq!(
        warnings(text),
        [
            "6:30: actions[0].events[0].jsonpath.property: \" $.data.project \" has blanks \
             around it: it reads as \"$.data.project\", as the old service read it; write \
             \"$.data.project\"",
            "10:34: actions[0].tasks[0].env[0].value: \" data.stage\" has no `$`: it reads from \
             the event's top, \"$.data.stage\", as the old service read it; write \
             \"$.data.stage\"",
        ]
    );
    let valid = load(text, "c.yaml").unwrap();
    let action = &valid.config.actions[0];
    let property = action.events[0]
        .jsonpath
        .as_ref()
        .map(|j| j.property.as_str());
    assert_eq!(property, Some("$.data.project"));
    assert_eq!(
        action.tasks[0].env[0].value.as_deref(),
        Some("$.data.stage")
    );
}

#[test]
fn jsonpaths_without_a_root_read_from_the_events_top_as_the_old_service_read_them() {
    let text = r#"apiVersion: v2
actions:
  - name: a
    events:
      - name: sh.keptn.event.test.triggered
        jsonpath: {property: data.test.teststrategy, match: performance}
      - name: sh.keptn.event.deployment.finished
        jsonpath: {property: "$.data.project", match: p}
    tasks:
      - image: alpine
        env:
          - {name: SERVICE, value: "data['service']", valueFrom: event}
          - {name: URLS, value: "_links[*]", valueFrom: event}
          - {name: TEXT, value: "data.project"}
"#;
    let messages = warnings(text);
    assert_eq!(
        messages,
        [
            "6:30: actions[0].events[0].jsonpath.property: \"data.test.teststrategy\" has no `$`: \
             it reads from the event's top, \"$.data.test.teststrategy\", as the old service read \
             it; write \"$.data.test.teststrategy\"",
            "12:36: actions[0].tasks[0].env[0].value: \"data['service']\" has no `$`: it reads \
             from the event's top, \"$.data['service']\", as the old service read it; write \
             \"$.data['service']\"",
            "13:33: actions[0].tasks[0].env[1].value: \"_links[*]\" has no `$`: it reads from \
             the event's top, \"$._links[*]\", as the old service read it; write \"$._links[*]\"",
        ]
    );
    // What matches, renders and is stored in a run is the path as it reads.
    let valid = load(text, "c.yaml").unwrap();
    let action = &valid.config.actions[0];
    let properties: Vec<&str> = action
        .events
        .iter()
        .filter_map(|event| event.jsonpath.as_ref())
        .map(|jsonpath| jsonpath.property.as_str())
        .collect();
    assert_eq!(properties, ["$.data.test.teststrategy", "$.data.project"]);
    let values: Vec<Option<&str>> = action.tasks[0]
        .env
        .iter()
        .map(|env| env.value.as_deref())
        .collect();
    assert_eq!(
        values,
        [
            Some("$.data['service']"),
            Some("$._links[*]"),
            // A string is its text, whatever it looks like.
            Some("data.project")
        ]
    );
    // A path that reads as nothing either way is told as written.
    let broken = text.replace("_links[*]", "links[*");
    assert_eq!(
        problems(&broken),
        [
            "job/config.yaml:13:33: actions[0].tasks[0].env[1].value: invalid JSONPath \"links[*\": \
          a JSONPath starts with `$`, e.g. `$.data.project`"
        ]
    );
}

#[test]
fn schema_is_generated_from_the_types() {
    let schema = json_schema();
    assert_eq!(schema["required"], serde_json::json!(["apiVersion"]));
    assert_eq!(
        schema["properties"]["apiVersion"]["enum"],
        serde_json::json!(["v2"])
    );
    let task = &schema["$defs"]["Task"];
    assert_eq!(task["additionalProperties"], false);
    assert!(task["properties"]["imagePullSecrets"].is_object());
}

#[test]
fn a_document_that_is_not_a_mapping_is_an_error() {
    assert_eq!(
        problems("- a\n- b\n"),
        ["job/config.yaml:1:1: expected a mapping, found a list"]
    );
    assert_eq!(
        problems(""),
        ["job/config.yaml:1:1: expected a mapping, found nothing (null)"]
    );
}

/// The start of a config whose one task gets the lines of each case; they begin on line 6.
const ONE_TASK: &str =
    "apiVersion: v2\nactions:\n  - events: [{name: x}]\n    tasks:\n      - image: alpine\n";

/// One case per choice among fixed values in the format: a wrong value, and the exact line
/// `validate` prints for it.
const CHOICE_CASES: &[(&str, &str)] = &[
    (
        "apiVersion: 2\nactions: []\n",
        "job/config.yaml:1:13: apiVersion: invalid value \"2\": expected one of \"v2\"",
    ),
    (
        "        imagePullPolicy: always\n",
        "job/config.yaml:6:26: actions[0].tasks[0].imagePullPolicy: invalid value \"always\": expected one of \"Always\", \"IfNotPresent\", \"Never\", did you mean \"Always\"?",
    ),
    (
        "        env:\n          - name: A\n            valueFrom: secrt\n",
        "job/config.yaml:8:24: actions[0].tasks[0].env[0].valueFrom: invalid value \"secrt\": expected one of \"event\", \"secret\", \"string\", \"output\", did you mean \"secret\"?",
    ),
    (
        "        env:\n          - name: A\n            value: $.data\n            valueFrom: event\n            as: jsno\n",
        "job/config.yaml:10:17: actions[0].tasks[0].env[0].as: invalid value \"jsno\": expected one of \"json\", \"yaml\", \"string\", did you mean \"json\"?",
    ),
    (
        "        securityContext:\n          procMount: unmask\n",
        "job/config.yaml:7:22: actions[0].tasks[0].securityContext.procMount: invalid value \"unmask\": expected one of \"Default\", \"Unmasked\", did you mean \"Unmasked\"?",
    ),
    (
        "        securityContext:\n          seccompProfile:\n            type: Localhst\n",
        "job/config.yaml:8:19: actions[0].tasks[0].securityContext.seccompProfile.type: invalid value \"Localhst\": expected one of \"RuntimeDefault\", \"Localhost\", \"Unconfined\", did you mean \"Localhost\"?",
    ),
    (
        "    concurrency:\n      group: deploy\n      policy: cancel\n",
        "job/config.yaml:8:15: actions[0].concurrency.policy: invalid value \"cancel\": expected one of \"queue\", \"cancel-in-progress\", \"skip\"",
    ),
    (
        "    notify:\n      - slack: team\n        when: [started, faild]\n",
        "job/config.yaml:8:25: actions[0].notify[0].when[1]: invalid value \"faild\": expected one of \"started\", \"succeeded\", \"failed\", did you mean \"failed\"?",
    ),
];

fn choice_case_text(lines: &str) -> String {
    if lines.starts_with("apiVersion") {
        lines.to_string()
    } else {
        format!("{ONE_TASK}{lines}")
    }
}

#[test]
fn every_choice_is_checked_where_its_value_is_written() {
    for (lines, expected) in CHOICE_CASES {
        assert_eq!(problems(&choice_case_text(lines)), [*expected], "{lines}");
    }
}

fn resolve(mut schema: &serde_json::Value) -> &serde_json::Value {
    while let Some(name) = schema["$ref"]
        .as_str()
        .and_then(|r| r.strip_prefix("#/$defs/"))
    {
        schema = &json_schema()["$defs"][name];
    }
    schema
}

/// The key paths (list items as `[]`) of every value the schema restricts to fixed strings:
/// an `enum`, a `const`, or alternatives among which one is.
fn choice_paths(schema: &serde_json::Value, path: &str, found: &mut BTreeSet<String>) {
    let schema = resolve(schema);
    let alternatives = ["anyOf", "oneOf"]
        .iter()
        .flat_map(|key| schema[key].as_array().into_iter().flatten())
        .map(resolve);
    let is_choice =
        |schema: &serde_json::Value| schema.get("enum").is_some() || schema.get("const").is_some();
    if is_choice(schema) || alternatives.clone().any(is_choice) {
        found.insert(path.to_string());
        return;
    }
    for branch in alternatives {
        choice_paths(branch, path, found);
    }
    for (key, property) in schema["properties"].as_object().into_iter().flatten() {
        choice_paths(property, &key_path(path, key), found);
    }
    if schema["items"].is_object() {
        choice_paths(&schema["items"], &format!("{path}[]"), found);
    }
    if schema["additionalProperties"].is_object() {
        choice_paths(
            &schema["additionalProperties"],
            &format!("{path}[*]"),
            found,
        );
    }
}

/// `actions[0].tasks[12].as` → `actions[].tasks[].as`.
fn without_indices(path: &str) -> String {
    let mut out = String::new();
    let mut in_index = false;
    for c in path.chars() {
        match c {
            '[' => {
                in_index = true;
                out.push(c);
            }
            ']' => {
                in_index = false;
                out.push(c);
            }
            c if in_index && c.is_ascii_digit() => {}
            c => {
                in_index = false;
                out.push(c);
            }
        }
    }
    out
}

#[test]
fn every_choice_in_the_schema_has_a_case() {
    let mut in_schema = BTreeSet::new();
    choice_paths(json_schema(), "", &mut in_schema);
    let covered: BTreeSet<String> = CHOICE_CASES
        .iter()
        .map(|(_, expected)| {
            let path = expected.split(": ").nth(1).unwrap_or_default();
            without_indices(path)
        })
        .collect();
    assert_eq!(
        in_schema, covered,
        "every value restricted to fixed strings needs a case in CHOICE_CASES"
    );
    assert_eq!(in_schema.len(), 8, "{in_schema:?}");
}

#[test]
fn a_choice_that_is_not_a_string_or_is_missing_is_located() {
    let text = format!(
        "{ONE_TASK}        env:\n          - name: A\n            valueFrom: [event]\n        securityContext:\n          seccompProfile:\n            type:\n"
    );
    assert_eq!(
        problems(&text),
        [
            "job/config.yaml:8:24: actions[0].tasks[0].env[0].valueFrom: expected one of \"event\", \"secret\", \"string\", \"output\", found a list",
            "job/config.yaml:11:17: actions[0].tasks[0].securityContext.seccompProfile.type: expected one of \"RuntimeDefault\", \"Localhost\", \"Unconfined\", found nothing (null)",
        ]
    );
    // An empty optional choice means "not set", like any empty optional key.
    let valid = load(
        &format!("{ONE_TASK}        imagePullPolicy:\n        env:\n          - name: A\n            value: x\n            valueFrom:\n"),
        "c.yaml",
    )
    .unwrap();
    let task = &valid.config.actions[0].tasks[0];
    assert_eq!(task.image_pull_policy, None);
    assert_eq!(task.env[0].value_from, None);
}

#[test]
fn two_different_problems_in_one_file_are_both_reported() {
    // The issue's file: a misspelled key, and a value serde alone would have refused.
    let text = format!(
        "{ONE_TASK}        workingdir: /keptn\n        env:\n          - name: A\n            valueFrom: secrt\n"
    );
    assert_eq!(
        problems(&text),
        [
            "job/config.yaml:6:9: actions[0].tasks[0].workingdir: unknown key \"workingdir\", did you mean \"workingDir\"?",
            "job/config.yaml:9:24: actions[0].tasks[0].env[0].valueFrom: invalid value \"secrt\": expected one of \"event\", \"secret\", \"string\", \"output\", did you mean \"secret\"?",
        ]
    );
}

#[test]
fn structural_problems_do_not_hide_the_checks_across_fields() {
    // Task 0 has a structural problem (an unknown key) and, in parts free of structural
    // problems, errors only the checks across fields find; task 1 and action 1 are clean.
    // The env var with a bad `valueFrom` gets no further message.
    let text = r#"apiVersion: v2
actions:
  - events: [{name: x}]
    tasks:
      - image: alpine
        imag: alpine
        env:
          - name: A
            valueFrom: event
          - name: B
            valueFrom: secrt
        labels:
          job-executor.dev/run: mine
        annotations:
          "bad key": x
      - image: alpine
        env:
          - name: C
            valueFrom: secret
            secretName: s
  - events: [{name: y}]
    tasks:
      - image: alpine
        env:
          - name: "D=E"
            value: x
"#;
    assert_eq!(
        problems(text),
        [
            "job/config.yaml:6:9: actions[0].tasks[0].imag: unknown key \"imag\", did you mean \"image\"?",
            "job/config.yaml:8:13: actions[0].tasks[0].env[0].value: valueFrom: event needs `value`, a JSONPath into the event",
            "job/config.yaml:11:24: actions[0].tasks[0].env[1].valueFrom: invalid value \"secrt\": expected one of \"event\", \"secret\", \"string\", \"output\", did you mean \"secret\"?",
            "job/config.yaml:13:33: actions[0].tasks[0].labels[\"job-executor.dev/run\"]: label \"job-executor.dev/run\" is set by job-executor and cannot be overridden",
            "job/config.yaml:15:22: actions[0].tasks[0].annotations[\"bad key\"]: invalid key \"bad key\": expected an optional DNS prefix and '/', then at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit",
            "job/config.yaml:18:13: actions[0].tasks[1].env[0].key: `secretName` needs `key`",
            "job/config.yaml:25:19: actions[1].tasks[0].env[0].name: invalid environment variable name \"D=E\": printable ASCII without '='",
        ]
    );
}

#[test]
fn a_structural_problem_in_one_task_does_not_hide_the_checks_across_tasks() {
    // Action 0: task 0 has an unknown key; the `needs` of task 2, the output task 1 reads and
    // the notify entry are still checked, and so is the env entry task 0 has after the bad one
    // (the bad entry keeps the indices of the others).
    // Action 1: the name of task 0 has a problem, so nothing is said about the `needs` naming
    // it; its outputs have one, so nothing about the outputs read from it.
    let text = r#"apiVersion: v2
actions:
  - events: [{name: x}]
    tasks:
      - name: build
        image: alpine
        imag: alpine
        outputs: [version]
        env:
          - {name: A, valueFrom: secrt}
          - {name: B, valueFrom: output, value: test.version}
      - name: test
        image: alpine
        needs: [build]
        env: [{name: V, valueFrom: output, value: build.digest}]
      - name: deploy
        image: alpine
        needs: [tset]
    notify:
      - {slack: team, webhook: audit}
  - events: [{name: y}]
    tasks:
      - name: [build]
        image: alpine
        outputs: [version, "2"]
      - name: test
        image: alpine
        needs: [build]
        env: [{name: V, valueFrom: output, value: build.version}]
"#;
    assert_eq!(
        problems(text),
        [
            "job/config.yaml:7:9: actions[0].tasks[0].imag: unknown key \"imag\", did you mean \"image\"?",
            "job/config.yaml:10:34: actions[0].tasks[0].env[0].valueFrom: invalid value \"secrt\": expected one of \"event\", \"secret\", \"string\", \"output\", did you mean \"secret\"?",
            "job/config.yaml:11:49: actions[0].tasks[0].env[1].value: task \"build\" does not come after \"test\": name it in `needs` (or a task that needs it)",
            "job/config.yaml:15:51: actions[0].tasks[1].env[0].value: task \"build\" has no output \"digest\" (its outputs: version)",
            "job/config.yaml:18:17: actions[0].tasks[2].needs[0]: no task of this action is named \"tset\"; did you mean \"test\"?",
            "job/config.yaml:20:32: actions[0].notify[0].webhook: one target per entry: `slack` and `webhook` are both set; write two entries",
            "job/config.yaml:23:15: actions[1].tasks[0].name: expected a string, found a list",
            "job/config.yaml:25:28: actions[1].tasks[0].outputs[1]: invalid output name \"2\": a letter, then letters, digits, '_' or '-', at most 63 characters",
        ]
    );
}

#[test]
fn duplicate_keys_do_not_hide_other_problems() {
    let text = format!(
        "{ONE_TASK}        imagePullPolicy: Always\n        imagePullPolicy: Nevr\n        env:\n          - name: A\n            valueFrom: event\n"
    );
    assert_eq!(
        problems(&text),
        [
            "job/config.yaml:7:9: duplicate key \"imagePullPolicy\" (first defined at line 6)",
            "job/config.yaml:7:26: actions[0].tasks[0].imagePullPolicy: invalid value \"Nevr\": expected one of \"Always\", \"IfNotPresent\", \"Never\", did you mean \"Never\"?",
            "job/config.yaml:9:13: actions[0].tasks[0].env[0].value: valueFrom: event needs `value`, a JSONPath into the event",
        ]
    );
    // Only duplicates: the config is still refused.
    assert_eq!(
        problems("apiVersion: v2\nactions: []\nactions: []\n"),
        ["job/config.yaml:3:1: duplicate key \"actions\" (first defined at line 2)"]
    );
}

/// If the schema ever let through a value the types refuse, the message still names the key
/// and points at the value, never at 1:1.
#[test]
fn a_value_the_schema_misses_is_still_located() {
    let mut schema = json_schema().clone();
    schema["$defs"]["ValueFrom"] = serde_json::json!({"type": "string"});
    let located = |text: &str| match load_with_schema(text, "job/config.yaml", &schema) {
        Err(ConfigError::Invalid { file, problems, .. }) => problems
            .iter()
            .map(|p| format_problem(&file, p))
            .collect::<Vec<_>>(),
        other => panic!("{other:?}"),
    };
    let refused = "job/config.yaml:8:24: actions[0].tasks[0].env[0].valueFrom: unknown variant `secrt`, expected one of `event`, `secret`, `string`, `output`";
    let text =
        format!("{ONE_TASK}        env:\n          - name: A\n            valueFrom: secrt\n");
    assert_eq!(located(&text), [refused]);
    // The same when another part of the file has a structural problem.
    let text = format!("{text}        imag: x\n");
    assert_eq!(
        located(&text),
        [
            refused,
            "job/config.yaml:9:9: actions[0].tasks[0].imag: unknown key \"imag\", did you mean \"image\"?",
        ]
    );
}

#[test]
fn a_config_over_the_size_limit_is_refused_before_it_is_parsed() {
    let limit = MAX_CONFIG_BYTES as usize;
    // Exactly at the limit: read and loaded.
    let head = "apiVersion: v2\nactions: []\n# ";
    let at_limit = format!("{head}{}\n", "x".repeat(limit - head.len() - 1));
    assert_eq!(at_limit.len(), limit);
    assert!(load(&at_limit, "c.yaml").is_ok());
    // One byte over: refused by its length, as text and as a file.
    let over = format!("{at_limit}\n");
    assert_eq!(
        load(&over, "c.yaml").unwrap_err().to_string(),
        format!(
            "c.yaml: the file is too large: {} bytes, over the limit of 1048576 bytes for a job config",
            limit + 1
        )
    );
    let dir = std::env::temp_dir().join(format!("je-config-size-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("config.yaml");
    std::fs::write(&file, "x".repeat(3 * limit)).unwrap();
    match read_file(&file).unwrap_err() {
        ConfigError::TooLarge { size, limit, .. } => {
            assert_eq!((size, limit), (3 * MAX_CONFIG_BYTES, MAX_CONFIG_BYTES))
        }
        other => panic!("{other:?}"),
    }
    std::fs::write(&file, &at_limit).unwrap();
    assert_eq!(read_file(&file).unwrap(), at_limit);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_config_that_grows_past_the_limit_as_it_is_read_is_refused() {
    // A pipe has no size to check before reading: the read itself stops one byte past the limit.
    let dir = std::env::temp_dir().join(format!("je-config-pipe-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pipe = dir.join("config.yaml");
    let made = std::process::Command::new("mkfifo")
        .arg(&pipe)
        .status()
        .expect("mkfifo (coreutils)");
    assert!(made.success());
    let writer = {
        let pipe = pipe.clone();
        std::thread::spawn(move || {
            use std::io::Write;
            let mut file = std::fs::OpenOptions::new().write(true).open(&pipe).unwrap();
            // The reader stops early and closes the pipe: a broken pipe is expected.
            let _ = file.write_all("#".repeat(2 * MAX_CONFIG_BYTES as usize).as_bytes());
        })
    };
    match read_file(&pipe).unwrap_err() {
        ConfigError::TooLarge { size, limit, .. } => {
            assert_eq!((size, limit), (MAX_CONFIG_BYTES + 1, MAX_CONFIG_BYTES))
        }
        other => panic!("{other:?}"),
    }
    writer.join().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_invalid_config_says_every_problem_on_its_own_line() {
    let text = "apiVersion: v2\nactions:\n  - name: a\n    silent: maybe\n    colour: red\n";
    let lines = problems(text);
    assert_eq!(lines.len(), 2, "{lines:?}");
    let error = load(text, "job/config.yaml").unwrap_err();
    assert_eq!(error.to_string(), lines.join("\n"));
}

fn actions_config(actions: usize, tasks: usize) -> String {
    let tasks = vec!["{image: alpine}"; tasks].join(", ");
    let mut text = String::from("apiVersion: v2\nactions:\n");
    for index in 0..actions {
        text.push_str(&format!(
            "  - name: a{index}\n    events: [{{name: sh.keptn.event.test.triggered}}]\n    tasks: [{tasks}]\n"
        ));
    }
    text
}

#[test]
fn actions_per_config_and_tasks_per_action_are_bounded() {
    // A thousand actions load (each would be a run of a matching event) ...
    let loaded = load(&actions_config(MAX_ACTIONS, 1), "c.yaml").unwrap();
    assert_eq!(loaded.config.actions.len(), MAX_ACTIONS);
    // ... one more is refused at the list.
    assert_eq!(
        problems(&actions_config(MAX_ACTIONS + 1, 1)),
        [
            "job/config.yaml:3:3: actions: 1001 actions, over the limit of 1000 per config (each matching action is a run)"
        ]
    );
    assert!(load(&actions_config(1, MAX_TASKS), "c.yaml").is_ok());
    assert_eq!(
        problems(&actions_config(1, MAX_TASKS + 1)),
        ["job/config.yaml:5:12: actions[0].tasks: 101 tasks, over the limit of 100 per action"]
    );
    // Many tasks made by aliases (a few hundred KB): refused at the list, without the checks
    // across tasks, which take the square of their count (billions of steps here).
    let aliased = format!(
        "apiVersion: v2\nactions:\n  - events: [{{name: x}}]\n    tasks: [&t {{image: a}}, {}]\n",
        vec!["*t"; 80_000].join(", ")
    );
    assert_eq!(
        problems(&aliased),
        ["job/config.yaml:4:12: actions[0].tasks: 80001 tasks, over the limit of 100 per action"]
    );
}

#[test]
fn needs_errors_are_located_at_their_entry() {
    let text = r#"apiVersion: v2
actions:
  - name: pipeline
    events: [{name: x}]
    tasks:
      - {name: a, image: alpine, needs: [c]}
      - {name: b, image: alpine, needs: [a, deploy]}
      - name: c
        image: alpine
        needs:
          - b
"#;
    assert_eq!(
        problems(text),
        [
            "job/config.yaml:6:42: actions[0].tasks[0].needs[0]: the tasks' needs make a cycle: \
             \"a\" needs \"c\" needs \"b\" needs \"a\"; no task of it could ever start",
            "job/config.yaml:7:45: actions[0].tasks[1].needs[1]: no task of this action is \
             named \"deploy\"",
        ]
    );
    let diamond = text
        .replace("needs: [c]", "needs: []")
        .replace("needs: [a, deploy]", "needs: [a]")
        .replace(
            "          - b\n",
            "          - a\n      - {name: d, image: alpine, needs: [b, c]}\n",
        );
    let loaded = load(&diamond, "c.yaml").unwrap();
    assert_eq!(loaded.config.actions[0].tasks[3].needs, ["b", "c"]);
}

#[test]
fn an_action_timeout_that_is_not_a_duration_is_located() {
    let text = r#"apiVersion: v2
actions:
  - name: slow
    timeout: 30
    tasks: [{image: alpine}]
  - name: long
    timeout: 200h
    tasks: [{image: alpine}]
  - name: fine
    timeout: "1h 5m"
    tasks: [{image: alpine}]
"#;
    assert_eq!(
        problems(text),
        [
            "job/config.yaml:4:14: actions[0].timeout: \"30\" is not a duration: write it like 90s, 30m or 1h30m",
            "job/config.yaml:7:14: actions[1].timeout: \"200h\" is longer than a week (the longest timeout, 168h)",
        ]
    );
}

#[test]
fn a_concurrency_group_is_checked_where_it_is_written() {
    let text = r#"apiVersion: v2
actions:
  - name: deploy
    concurrency: {group: "deploy/{project}/{$.data.stage}/{service}", limit: 2, policy: skip}
    tasks: [{image: alpine}]
  - name: unknown placeholder
    concurrency: {group: "deploy/{team}"}
    tasks: [{image: alpine}]
  - name: open
    concurrency: {group: "deploy/{project"}
    tasks: [{image: alpine}]
  - name: too many
    concurrency: {group: x, limit: 0}
    tasks: [{image: alpine}]
  - name: empty
    concurrency: {group: ""}
    tasks: [{image: alpine}]
  - name: no group
    concurrency: {limit: 1}
    tasks: [{image: alpine}]
"#;
    assert_eq!(
        problems(text),
        [
            "job/config.yaml:7:26: actions[1].concurrency.group: in \"deploy/{team}\", unknown placeholder {team}: use a JSONPath into the event such as {$.data.project}, or {project}, {stage}, {service}",
            "job/config.yaml:10:26: actions[2].concurrency.group: in \"deploy/{project\", a `{` is not closed",
            "job/config.yaml:13:36: actions[3].concurrency.limit: 0 is out of range: must be between 1 and 100",
            "job/config.yaml:16:26: actions[4].concurrency.group: must not be empty",
            "job/config.yaml:19:18: actions[5].concurrency: missing required key \"group\"",
        ]
    );
    let config = load(
        text.split("  - name: unknown").next().unwrap(),
        "job/config.yaml",
    )
    .unwrap()
    .config;
    let concurrency = config.actions[0].concurrency.as_ref().unwrap();
    assert_eq!(concurrency.limit(), 2);
    assert_eq!(concurrency.policy, ConcurrencyPolicy::Skip);
}

#[test]
fn outputs_and_their_readers_are_checked_where_they_are_written() {
    let text = r#"apiVersion: v2
actions:
  - name: list
    tasks:
      - name: build
        image: alpine
        outputs: [version, version]
      - name: deploy
        image: alpine
        env:
          - {name: V, valueFrom: output, value: build.version}
          - {name: W, valueFrom: output, value: build.digest}
          - {name: X, valueFrom: output, value: biuld.version}
          - {name: Y, valueFrom: output, value: deploy.version}
          - {name: Z, valueFrom: output, value: version}
          - {name: E, valueFrom: output}
  - name: graph
    tasks:
      - {name: a, image: alpine, outputs: [url]}
      - {name: b, image: alpine, needs: [a]}
      - name: c
        image: alpine
        needs: [b]
        env: [{name: U, valueFrom: output, value: a.url}]
      - name: d
        image: alpine
        needs: [c]
        env: [{name: U, valueFrom: output, value: b.url}]
  - name: names
    tasks:
      - {image: alpine, outputs: [2nd]}
  - name: same
    tasks:
      - {name: task-1, image: alpine, outputs: [v]}
      - {image: alpine, outputs: [v]}
      - {name: task-1, image: alpine}
"#;
    assert_eq!(
        problems(text),
        [
            "job/config.yaml:7:28: actions[0].tasks[0].outputs[1]: \"version\" is declared twice",
            "job/config.yaml:12:49: actions[0].tasks[1].env[1].value: task \"build\" has no output \"digest\" (its outputs: version, version)",
            "job/config.yaml:13:49: actions[0].tasks[1].env[2].value: no task of this action is named \"biuld\"; did you mean \"build\"?",
            "job/config.yaml:14:49: actions[0].tasks[1].env[3].value: task \"deploy\" does not come after \"deploy\": a task reads the outputs of the tasks before it",
            "job/config.yaml:15:49: actions[0].tasks[1].env[4].value: \"version\" names no output: write the task's name, a dot and the output's, like build.version",
            "job/config.yaml:16:13: actions[0].tasks[1].env[5].value: valueFrom: output needs `value`: a task this task comes after and one of its outputs, like build.version",
            "job/config.yaml:28:51: actions[1].tasks[3].env[0].value: task \"b\" declares no outputs",
            "job/config.yaml:31:35: actions[2].tasks[0].outputs[0]: invalid output name \"2nd\": a letter, then letters, digits, '_' or '-', at most 63 characters",
            "job/config.yaml:35:35: actions[3].tasks[1].outputs[0]: tasks[0] is named \"task-1\" too and has outputs: the .finished event lists outputs by task name; give the tasks names of their own",
        ]
    );
}

/// A task's outputs must fit in its termination message with a `name=` line each, or every
/// run of it fails on them; a list of `needs` longer than an action's tasks is refused whole
/// (checking each entry was quadratic: 100,000 of them took 11 s).
#[test]
fn outputs_that_cannot_fit_and_needs_past_the_tasks_are_refused() {
    let config = |outputs: &[String], needs: usize| {
        format!(
            "apiVersion: v2\nactions:\n  - events: [{{name: x}}]\n    tasks:\n      - name: a\n        image: alpine\n        outputs: [{}]\n      - name: b\n        image: alpine\n        needs: [{}]\n",
            outputs.join(", "),
            vec!["a"; needs].join(", ")
        )
    };
    // 64 names of 62 characters and one of 32: 64 × 64 + 34 - 1 bytes at least: 4129.
    let mut outputs: Vec<String> = (0..64).map(|i| format!("o{i:0>61}")).collect();
    outputs.push(format!("p{}", "x".repeat(31)));
    assert_eq!(
        problems(&config(&outputs, 1)),
        [
            "job/config.yaml:7:18: actions[0].tasks[0].outputs: 65 outputs take at least 4129 bytes \
          of the termination message (a `name=` line each), where they must fit in fewer than \
          the 4096 bytes Kubernetes keeps: declare fewer, or shorter names"
        ]
    );
    // The 64 of 62 characters: `name=` lines of 64 × 64 - 1 = 4095 bytes, the most that fit.
    outputs.truncate(64);
    let fewest: usize = outputs.iter().map(|o| o.len() + 2).sum::<usize>() - 1;
    assert_eq!(fewest, 4095);
    assert!(load(&config(&outputs, 1), "job/config.yaml").is_ok());
    let names = vec!["a".to_string()];
    assert_eq!(
        problems(&config(&names, 101)),
        [
            "job/config.yaml:10:317: actions[0].tasks[1].needs[100]: 101 entries, over the limit \
          of 100 (an action has at most 100 tasks)"
        ]
    );
    assert_eq!(
        problems(&config(&names, 2)),
        ["job/config.yaml:10:20: actions[0].tasks[1].needs[1]: \"a\" is named twice"]
    );
}

#[test]
fn bad_secret_and_account_names_and_event_patterns_are_refused_where_written() {
    let text = r#"apiVersion: v2
actions:
  - events: [{name: "sh.keptn.event.[test"}]
    tasks:
      - image: alpine
        serviceAccount: Locust_Runner
        imagePullSecrets: [regcred, "Reg Cred"]
        env:
          - name: TOKEN
            valueFrom: secret
            secretName: api..token
            key: token
"#;
    assert_eq!(
        problems(text),
        [
            "job/config.yaml:3:21: actions[0].events[0].name: invalid event name pattern \"sh.keptn.event.[test\": error parsing glob 'sh.keptn.event.[test': unclosed character class; missing ']'",
            "job/config.yaml:6:25: actions[0].tasks[0].serviceAccount: invalid name \"Locust_Runner\": must be lower-case letters, digits, '-' and '.', at most 253 characters",
            "job/config.yaml:7:37: actions[0].tasks[0].imagePullSecrets[1]: invalid name \"Reg Cred\": must be lower-case letters, digits, '-' and '.', at most 253 characters",
            "job/config.yaml:11:25: actions[0].tasks[0].env[0].secretName: invalid name \"api..token\": must be lower-case letters, digits, '-' and '.', at most 253 characters",
        ]
    );
}

#[test]
fn a_ttl_of_exactly_the_minimum_is_kept_without_a_warning() {
    let text = |ttl: i32| format!("{ONE_TASK}        ttlSecondsAfterFinished: {ttl}\n");
    let warnings = |ttl: i32| -> Vec<String> {
        load(&text(ttl), "c.yaml")
            .unwrap()
            .warnings
            .iter()
            .map(|w| format!("{}: {}: {}", w.location, w.path, w.message))
            .collect()
    };
    assert_eq!(warnings(MIN_TTL_SECONDS), Vec::<String>::new());
    assert_eq!(
        warnings(MIN_TTL_SECONDS - 1),
        [
            "6:34: actions[0].tasks[0].ttlSecondsAfterFinished: 59 is raised to 60: the Job must outlive the collection of its logs"
        ]
    );
}

#[test]
fn integers_are_read_up_to_their_bounds_and_refused_past_them() {
    let task = |lines: &str| format!("{ONE_TASK}{lines}");
    let at_bounds = task(
        "        backoffLimit: 100\n        maxPollDuration: 1\n        ttlSecondsAfterFinished: 2147483647\n        securityContext: {runAsUser: 0}\n",
    );
    let loaded = load(&at_bounds, "c.yaml").unwrap();
    let read = &loaded.config.actions[0].tasks[0];
    assert_eq!(
        (
            read.backoff_limit,
            read.max_poll_duration,
            read.ttl_seconds_after_finished,
            read.security_context.as_ref().unwrap().run_as_user,
        ),
        (Some(100), Some(1), Some(i32::MAX), Some(0))
    );
    let past_bounds = task(
        "        backoffLimit: 101\n        maxPollDuration: 0\n        ttlSecondsAfterFinished: 2147483648\n        securityContext: {runAsUser: -1}\n",
    );
    assert_eq!(
        problems(&past_bounds),
        [
            "job/config.yaml:6:23: actions[0].tasks[0].backoffLimit: 101 is out of range: must be between 0 and 100",
            "job/config.yaml:7:26: actions[0].tasks[0].maxPollDuration: 0 is out of range: must be at least 1",
            "job/config.yaml:8:34: actions[0].tasks[0].ttlSecondsAfterFinished: 2147483648 is out of range: must be at most 2147483647",
            "job/config.yaml:9:38: actions[0].tasks[0].securityContext.runAsUser: -1 is out of range: must be at least 0",
        ]
    );
}

#[test]
fn label_and_annotation_values_must_be_strings() {
    let text = format!(
        "{ONE_TASK}        labels: {{team: [a, b]}}\n        annotations: {{example.com/owner: {{name: me}}}}\n"
    );
    assert_eq!(
        problems(&text),
        [
            "job/config.yaml:6:24: actions[0].tasks[0].labels.team: expected a string, found a list",
            "job/config.yaml:7:42: actions[0].tasks[0].annotations[\"example.com/owner\"]: expected a string, found a mapping",
        ]
    );
}

/// YAML 1.1's booleans, which Keptn's service (Go's yaml.v2) read, load as booleans where a
/// boolean belongs; quoted, they are text and refused there.
#[test]
fn yaml_1_1_booleans_load_as_the_old_service_read_them() {
    let text = "apiVersion: v2\nactions:\n  - events: [{name: x}]\n    silent: yes\n    tasks:\n      - image: alpine\n        securityContext: {runAsNonRoot: ON, allowPrivilegeEscalation: n}\n";
    let config = load(text, "job/config.yaml").unwrap().config;
    assert!(config.actions[0].silent);
    let security = config.actions[0].tasks[0]
        .security_context
        .as_ref()
        .unwrap();
    assert_eq!(security.run_as_non_root, Some(true));
    assert_eq!(security.allow_privilege_escalation, Some(false));
    let quoted = "apiVersion: v2\nactions:\n  - events: [{name: x}]\n    silent: \"yes\"\n    tasks: [{image: alpine}]\n";
    assert_eq!(
        problems(quoted),
        ["job/config.yaml:4:13: actions[0].silent: expected true or false, found \"yes\""]
    );
}

#[test]
fn a_list_where_a_scalar_belongs_names_the_type_expected() {
    let text = "apiVersion: v2\nactions:\n  - events: [{name: x}]\n    silent: [true]\n    tasks:\n      - image: alpine\n        maxPollDuration: [600]\n        resources:\n          limits: {cpu: [1]}\n";
    assert_eq!(
        problems(text),
        [
            "job/config.yaml:4:13: actions[0].silent: expected true or false, found a list",
            "job/config.yaml:7:26: actions[0].tasks[0].maxPollDuration: expected an integer, found a list",
            "job/config.yaml:9:25: actions[0].tasks[0].resources.limits.cpu: expected a string or a number, found a list",
        ]
    );
}

#[test]
fn a_notify_entry_names_one_target_by_its_key_never_a_url() {
    let both = "    notify:\n      - slack: team\n        webhook: audit\n";
    assert_eq!(
        problems(&format!("{ONE_TASK}{both}")),
        [
            "job/config.yaml:8:18: actions[0].notify[0].webhook: one target per entry: `slack` and `webhook` are both set; write two entries"
        ]
    );
    let neither = "    notify:\n      - when: [failed]\n";
    assert_eq!(
        problems(&format!("{ONE_TASK}{neither}")),
        [
            "job/config.yaml:7:9: actions[0].notify[0]: says neither `slack` nor `webhook`: name the target, e.g. `slack: team-carts`"
        ]
    );
    let url = "    notify:\n      - slack: https://hooks.slack.com/services/T0/B0/x\n";
    let found = problems(&format!("{ONE_TASK}{url}"));
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        found[0].starts_with("job/config.yaml:7:16: actions[0].notify[0].slack: \"https://hooks.slack.com/services/T0/B0/x\" is not a notification target: the name of a key in the notifications Secret"),
        "{found:?}"
    );
    let many: String = (0..11)
        .map(|i| format!("      - webhook: t{i}\n"))
        .collect();
    assert_eq!(
        problems(&format!("{ONE_TASK}    notify:\n{many}")),
        [
            "job/config.yaml:7:7: actions[0].notify: 11 notification targets, over the limit of 10 per action"
        ]
    );
    let fine = "    notify:\n      - slack: team-carts\n      - webhook: audit.log_1\n        when: [started, succeeded, failed]\n";
    let valid = load(&format!("{ONE_TASK}{fine}"), "job/config.yaml").unwrap();
    let rules: Vec<NotifyRule> = valid.config.actions[0]
        .notify
        .iter()
        .filter_map(Notify::rule)
        .collect();
    assert_eq!(
        rules,
        [
            NotifyRule::parse("slack:team-carts:failed").unwrap(),
            NotifyRule::parse("webhook:audit.log_1:started,succeeded,failed").unwrap()
        ]
    );
}

#[test]
fn installation_notify_rules_read_like_the_config() {
    let rule = NotifyRule::parse("webhook:audit:succeeded, started").unwrap();
    assert_eq!(rule.kind, NotifyKind::Webhook);
    assert_eq!(rule.target, "audit");
    assert_eq!(rule.when, [NotifyWhen::Started, NotifyWhen::Succeeded]);
    assert_eq!(
        NotifyRule::parse("slack:ops").unwrap().when,
        [NotifyWhen::Failed]
    );
    for (text, says) in [
        ("email:ops", "unknown kind \"email\""),
        ("slack:", "is not a notification target"),
        ("slack:../etc", "is not a notification target"),
        ("slack:ops:finished", "unknown moment \"finished\""),
    ] {
        let error = NotifyRule::parse(text).unwrap_err();
        assert!(error.contains(says), "{text}: {error}");
    }
}

/// What the API server refuses in every Job is refused when the file loads, where it is written.
#[test]
fn combinations_the_api_server_refuses_are_errors_at_their_key() {
    let text = r#"apiVersion: v2
actions:
  - name: a
    events: [{name: x}]
    tasks:
      - name: t
        image: alpine
        resources:
          requests: {cpu: 2, memory: 64Mi}
          limits: {cpu: 1000m, memory: 1Gi}
        securityContext:
          privileged: true
          allowPrivilegeEscalation: false
          seccompProfile: {type: Localhost}
        env:
          - {name: S, valueFrom: secret, secretName: s, key: "api token"}
          - {name: T, valueFrom: secret, secretName: s, key: "..token"}
      - name: u
        image: alpine
        securityContext:
          seccompProfile: {type: RuntimeDefault, localhostProfile: p.json}
      - name: v
        image: alpine
        securityContext:
          runAsUser: 2147483648
          seccompProfile: {type: Localhost, localhostProfile: /abs/p.json}
      - name: w
        image: alpine
        securityContext:
          capabilities: {add: [CAP_SYS_ADMIN]}
          allowPrivilegeEscalation: false
      - name: x
        image: alpine
        securityContext:
          seccompProfile: {type: Localhost, localhostProfile: profiles/../../p.json}
      - name: y
        image: " alpine:3"
      - name: z
        image: alpine
        securityContext:
          seccompProfile: {type: Localhost, localhostProfile: ""}
"#;
    assert_eq!(
        problems(text),
        [
            "job/config.yaml:9:27: actions[0].tasks[0].resources.requests.cpu: request 2 is above the limit 1000m (limits.cpu): Kubernetes refuses such a Job",
            "job/config.yaml:13:37: actions[0].tasks[0].securityContext.allowPrivilegeEscalation: a privileged container always escalates: Kubernetes refuses allowPrivilegeEscalation: false with privileged: true",
            "job/config.yaml:14:34: actions[0].tasks[0].securityContext.seccompProfile.type: type: Localhost needs `localhostProfile`, the profile's path relative to the kubelet's seccomp directory",
            "job/config.yaml:16:62: actions[0].tasks[0].env[0].key: invalid Secret key \"api token\": letters, digits, '-', '_' and '.', at most 253 characters, not starting with '..'",
            "job/config.yaml:17:62: actions[0].tasks[0].env[1].key: invalid Secret key \"..token\": letters, digits, '-', '_' and '.', at most 253 characters, not starting with '..'",
            "job/config.yaml:21:68: actions[0].tasks[1].securityContext.seccompProfile.localhostProfile: `localhostProfile` goes only with type: Localhost",
            "job/config.yaml:25:22: actions[0].tasks[2].securityContext.runAsUser: 2147483648 is out of range: must be at most 2147483647",
            "job/config.yaml:31:37: actions[0].tasks[3].securityContext.allowPrivilegeEscalation: a container with CAP_SYS_ADMIN always escalates: Kubernetes refuses allowPrivilegeEscalation: false with capabilities.add CAP_SYS_ADMIN",
            "job/config.yaml:35:63: actions[0].tasks[4].securityContext.seccompProfile.localhostProfile: \"profiles/../../p.json\" must stay inside the kubelet's seccomp directory: Kubernetes refuses '..' in it",
            "job/config.yaml:37:16: actions[0].tasks[5].image: \" alpine:3\" has spaces around it: Kubernetes refuses such an image",
            "job/config.yaml:41:34: actions[0].tasks[6].securityContext.seccompProfile.type: type: Localhost needs `localhostProfile`, the profile's path relative to the kubelet's seccomp directory",
        ]
    );
    // Annotations past what the API server takes on one object.
    let big = format!(
        "apiVersion: v2\nactions:\n  - events: [{{name: x}}]\n    tasks:\n      - image: alpine\n        annotations:\n          a: {}\n          b: {}\n",
        "x".repeat(131_072),
        "y".repeat(131_071)
    );
    assert_eq!(
        problems(&big),
        [
            "job/config.yaml:7:11: actions[0].tasks[0].annotations: 262145 bytes of keys and values, over the 262144 Kubernetes takes on one object"
        ]
    );
    // The same amounts written differently are not above each other.
    let fine = "apiVersion: v2\nactions:\n  - events: [{name: x}]\n    tasks:\n      - image: alpine\n        resources:\n          requests: {cpu: 1000m, memory: 1Gi}\n          limits: {cpu: 1, memory: 1024Mi}\n      - image: alpine\n        resources:\n          requests: {cpu: 700m, memory: 0.5Gi}\n          limits: {cpu: \"0.7\", memory: 512Mi}\n";
    assert!(load(fine, "job/config.yaml").is_ok());
}

/// `as` is read whatever its case, as Keptn's service compared it; other choices are exact.
#[test]
fn the_format_of_an_event_value_is_read_in_any_case() {
    let config = |format: &str| {
        format!(
            "apiVersion: v2\nactions:\n  - name: a\n    events: [{{name: x}}]\n    tasks:\n      - \
             image: alpine\n        imagePullPolicy: Always\n        env:\n          - {{name: E, \
             value: $.data, valueFrom: event, as: {format}}}\n"
        )
    };
    for (written, read) in [
        ("JSON", EnvFormat::Json),
        ("Yaml", EnvFormat::Yaml),
        ("String", EnvFormat::String),
        ("json", EnvFormat::Json),
    ] {
        let valid = load(&config(written), "job/config.yaml").unwrap();
        assert_eq!(
            valid.config.actions[0].tasks[0].env[0].format,
            Some(read),
            "{written}"
        );
    }
    assert_eq!(
        problems(&config("toml")),
        [
            "job/config.yaml:9:60: actions[0].tasks[0].env[0].as: invalid value \"toml\": expected one of \"json\", \"yaml\", \"string\", did you mean \"yaml\"?"
        ]
    );
    assert_eq!(
        problems(&config("json").replace("Always", "always")),
        [
            "job/config.yaml:7:26: actions[0].tasks[0].imagePullPolicy: invalid value \"always\": expected one of \"Always\", \"IfNotPresent\", \"Never\", did you mean \"Always\"?"
        ]
    );
}

/// An empty string is "not set" for the keys where Go's zero value was so to Keptn's service
/// (a pull policy, a namespace, a quantity); elsewhere it is the empty string, or refused where
/// the old service refused it.
#[test]
fn an_empty_string_is_not_set_where_keptn_s_service_took_it_so() {
    let valid = load(
        r#"apiVersion: v2
actions:
  - name: a
    events: [{name: x}]
    tasks:
      - image: alpine
        imagePullPolicy: ""
        namespace: ''
        serviceAccount: ""
        workingDir: ""
        emptyDirSizeLimit: ""
        resources: {requests: {cpu: "", memory: ""}, limits: {cpu: ""}}
        env:
          - {name: E, value: "", valueFrom: string}
          - {name: F, value: $.data, valueFrom: event, as: ""}
"#,
        "job/config.yaml",
    )
    .unwrap();
    let task = &valid.config.actions[0].tasks[0];
    assert_eq!(task.image_pull_policy, None);
    assert_eq!(task.namespace, None);
    assert_eq!(task.service_account, None);
    assert_eq!(task.working_dir.as_deref(), Some(""));
    assert_eq!(task.empty_dir_size_limit, None);
    assert_eq!(
        task.resources.as_ref().map(|r| (
            r.requests.clone().unwrap_or_default(),
            r.limits.clone().unwrap_or_default()
        )),
        Some((ResourceList::default(), ResourceList::default()))
    );
    assert_eq!(task.env[1].format, None);
    assert_eq!(
        task.env[0].value.as_ref().map(|v| v.to_string()).as_deref(),
        Some("")
    );
    // Where the old service refused it, so does this.
    assert_eq!(
        problems(
            "apiVersion: v2\nactions:\n  - name: a\n    events: [{name: x}]\n    tasks:\n      - image: alpine\n        env: [{name: E, value: x, valueFrom: \"\"}]\n"
        ),
        [
            "job/config.yaml:7:46: actions[0].tasks[0].env[0].valueFrom: invalid value \"\": expected one of \"event\", \"secret\", \"string\", \"output\""
        ]
    );
    // Required, it is still missing.
    assert_eq!(
        problems(
            "apiVersion: v2\nactions:\n  - name: a\n    events: [{name: x}]\n    tasks:\n      - image: \"\"\n"
        ),
        ["job/config.yaml:6:16: actions[0].tasks[0].image: must not be empty"]
    );
}

/// Merge keys, as Keptn's service (Go's yaml.v2) read them: shared task settings from an
/// anchor, the task's own keys winning; an earlier merged mapping wins over a later one.
#[test]
fn merge_keys_bring_an_anchor_s_entries_under_the_mapping_s_own() {
    let valid = load(
        r#"apiVersion: v2
actions:
  - name: a
    events: [{name: x}]
    tasks:
      - &defaults
        name: first
        image: alpine
        imagePullPolicy: IfNotPresent
        maxPollDuration: 60
      - <<: *defaults
        name: second
        maxPollDuration: 30
      - <<: [{workingDir: /keptn, maxPollDuration: 90}, *defaults]
        name: third
      - <<: {workingDir: /w}
        <<: *defaults
        name: fourth
"#,
        "job/config.yaml",
    )
    .unwrap();
    let tasks = &valid.config.actions[0].tasks;
    let summary: Vec<_> = tasks
        .iter()
        .map(|t| {
            (
                t.name.clone().unwrap_or_default(),
                t.image.clone(),
                t.max_poll_duration,
                t.working_dir.clone(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("first".to_string(), "alpine".to_string(), Some(60), None),
            ("second".to_string(), "alpine".to_string(), Some(30), None),
            (
                "third".to_string(),
                "alpine".to_string(),
                Some(90),
                Some("/keptn".to_string())
            ),
            (
                "fourth".to_string(),
                "alpine".to_string(),
                Some(60),
                Some("/w".to_string())
            ),
        ]
    );
    assert_eq!(
        problems(
            "apiVersion: v2\nactions:\n  - name: a\n    events: [{name: x}]\n    tasks:\n      - <<: alpine\n        image: alpine\n"
        ),
        [
            "job/config.yaml:6:13: a merge key `<<` takes a mapping or a list of mappings, found a scalar"
        ]
    );
}

/// An invalid config concerns the event types its actions name, read from whatever the file
/// holds: so its `.finished` answers the tasks it was written for, not every task of Keptn's
/// sequences.
#[test]
fn an_invalid_config_concerns_the_event_types_it_names() {
    let concerns = |text: &str, event_type: &str| match load(text, "job/config.yaml") {
        Err(error) => error.concerns(event_type),
        Ok(_) => panic!("loaded: {text}"),
    };
    // A task's unknown key; an event filter with one (left out of what the checks read).
    let broken_task = "apiVersion: v2\nactions:\n  - name: tests\n    events:\n      - name: sh.keptn.event.test.triggered\n      - name: sh.keptn.event.*-load.triggered\n        jsonpth: {property: $.data.x, match: y}\n    tasks:\n      - imag: alpine\n";
    assert!(concerns(broken_task, "sh.keptn.event.test.triggered"));
    assert!(concerns(broken_task, "sh.keptn.event.web-load.triggered"));
    assert!(!concerns(
        broken_task,
        "sh.keptn.event.evaluation.triggered"
    ));
    assert!(
        !concerns(broken_task, "tests"),
        "an action's name is no event's"
    );
    // Names brought by a merge key, in flow style.
    let merged = "apiVersion: v2\nshared: &shared {events: [{name: sh.keptn.event.deployment.triggered}]}\nactions:\n  - <<: *shared\n    name: deploy\n    tasks: 5\n";
    assert!(concerns(merged, "sh.keptn.event.deployment.triggered"));
    assert!(!concerns(merged, "sh.keptn.event.test.triggered"));
    // Not YAML at all: what follows any `name:`.
    let unreadable = "apiVersion: v2\nactions:\n  - name: \"tests\"\n    events: [{name: 'sh.keptn.event.test.triggered'}\n    tasks:\n      - name: run\n        image: alpine\n    - bad indent\n";
    assert!(
        yaml::parse_document(unreadable).is_err(),
        "the example must not be YAML"
    );
    assert!(concerns(unreadable, "sh.keptn.event.test.triggered"));
    assert!(!concerns(unreadable, "sh.keptn.event.evaluation.triggered"));
    // Braces and classes are one glob; an anchor is passed over; a quoted key.
    let globs = "apiVersion: v2\nactions:\n  - events:\n      - name: sh.keptn.event.{test,load}.triggered\n      - name: &n sh.keptn.event.[d]eployment.triggered\n      - \"name\": 'sh.keptn.event.release.triggered' # quoted\n    tasks: [\n";
    assert!(
        yaml::parse_document(globs).is_err(),
        "the example must not be YAML"
    );
    for event_type in ["test", "load", "deployment", "release"] {
        assert!(
            concerns(globs, &format!("sh.keptn.event.{event_type}.triggered")),
            "{event_type}"
        );
    }
    assert!(!concerns(globs, "sh.keptn.event.evaluation.triggered"));
    // A filter without a name (every event, in the old service), or names as plain items.
    let nameless = "apiVersion: v2\nactions:\n  - name: a\n    events:\n      - jsonpath: {property: $.data.x, match: y}\n    tasks: [{image: alpine}]\n";
    assert!(concerns(nameless, "sh.keptn.event.evaluation.triggered"));
    let plain = "apiVersion: v2\nactions:\n  - name: a\n    events: [sh.keptn.event.test.triggered]\n    tasks: [{image: alpine}]\n";
    assert!(concerns(plain, "sh.keptn.event.test.triggered"));
    assert!(!concerns(plain, "sh.keptn.event.evaluation.triggered"));
    // Nothing named: nothing concerned.
    assert!(!concerns(
        "apiVersion: v3\n",
        "sh.keptn.event.test.triggered"
    ));
    // An empty name would match nothing: refused where it is.
    assert_eq!(
        problems("apiVersion: v2\nactions:\n  - events: [{name: \"\"}]\n    tasks: [{image: a}]\n"),
        [
            "job/config.yaml:3:21: actions[0].events[0].name: an empty name matches no event here (Keptn's service, reading it as a regular expression, matched every event): name the event types, or `*` for every one"
        ]
    );
    // A line of many names without an end is read once per name, each from at most 512 bytes;
    // past 10,000 names every type counts as named. (It was read to the line's end for each:
    // a megabyte's line took tens of GB.)
    let endless = format!("@\n{}", "name:.".repeat(170_000));
    assert!(concerns(&endless, "sh.keptn.event.evaluation.triggered"));
    let few = format!("@\n{}", "name:sh.keptn.event.a.triggered ".repeat(100));
    assert!(concerns(&few, "sh.keptn.event.a.triggered"));
    assert!(!concerns(&few, "sh.keptn.event.evaluation.triggered"));
    // Not UTF-8 (a comment saved as Latin-1): invalid where the byte is, concerning what the
    // rest names (it was unreadable, which concerns every type).
    let latin = b"apiVersion: v2\n# owner: caf\xe9 team\nactions:\n  - events: [{name: sh.keptn.event.test.triggered}]\n    tasks: [{image: alpine}]\n".to_vec();
    let error = text_of(latin, "job/config.yaml").unwrap_err();
    assert_eq!(
        error.to_string(),
        "job/config.yaml:2:13: the byte 0xE9 here is not UTF-8: save the file as UTF-8"
    );
    assert!(error.concerns("sh.keptn.event.test.triggered"));
    assert!(!error.concerns("sh.keptn.event.deployment.triggered"));
    assert_eq!(text_of(b"ok\n".to_vec(), "c.yaml").unwrap(), "ok\n");
    // Nothing to read names from (UTF-16): every type is concerned.
    let utf16 = b"\xff\xfea\x00p\x00i\x00".to_vec();
    let error = text_of(utf16, "job/config.yaml").unwrap_err();
    assert!(error.concerns("sh.keptn.event.deployment.triggered"));
    // A file that cannot be read concerns every type.
    let unreadable_file = ConfigError::Unreadable {
        file: "job/config.yaml".into(),
        reason: "permission denied".into(),
    };
    assert!(unreadable_file.concerns("sh.keptn.event.evaluation.triggered"));
}
