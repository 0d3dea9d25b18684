//! Keptn's NATS bus end to end: a real nats-server with JetStream (Debian's package), the
//! operator taking events from a durable consumer and publishing `.started` / `.finished` back
//! on the subjects of their types. An event is acknowledged only once its runs are stored: an
//! operator killed in between gets it again, as a duplicate; a NATS server killed and restarted
//! under load loses nothing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer};
use futures::StreamExt;
use serde_json::{Value, json};
use support::cluster::ClusterHarness;
use support::nats::{Credentials, NatsServer};
use support::{Harness, Operator, Replicas, sample_with_id};

/// Waits until the operator made stream `keptn` (it creates it when there is none).
async fn stream_ready(context: &jetstream::Context) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while context.get_stream("keptn").await.is_err() {
        assert!(Instant::now() < deadline, "the operator made no stream");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The runs of each event id.
fn runs_by_event(server: &impl Replicas) -> BTreeMap<String, usize> {
    let mut runs = BTreeMap::new();
    for run in server.jobruns() {
        *runs
            .entry(run["spec"]["event"]["id"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    runs
}

/// Publishes `event` as JSON on `subject`, without headers (as Keptn publishes).
async fn publish_json(client: &async_nats::Client, subject: &'static str, event: &Value) {
    client
        .publish(subject, serde_json::to_vec(event).unwrap().into())
        .await
        .unwrap();
}

async fn keptn_events_on_nats_become_runs_and_go_back(server: impl Replicas, long: Duration) {
    let nats = NatsServer::start(server.name()).await;
    let mut op = server.replica("nats", server.kubeconfig.clone()).await;
    op.set_flag("--nats-url", &nats.url);
    op.set_flag("--sink-url", &nats.url);
    op.set_flag("--max-body-bytes", "800000");
    op.start_operator().await;
    let client = nats.client().await;
    let context = jetstream::new(client.clone());
    stream_ready(&context).await;
    let mut back = client.subscribe("sh.keptn.event.test.>").await.unwrap();

    // As Keptn publishes: structured JSON, no headers, the type as the subject.
    let keptn = sample_with_id("test.triggered.json", "nats-structured");
    publish_json(&client, "sh.keptn.event.test.triggered", &keptn).await;
    // Binary mode of the CloudEvents NATS binding: attributes in `ce-` headers.
    let mut binary = sample_with_id("test.triggered.json", "nats-binary");
    let mut headers = async_nats::HeaderMap::new();
    for (name, value) in binary.as_object().unwrap() {
        if let Some(text) = value.as_str().filter(|_| name != "data") {
            headers.insert(format!("ce-{name}").as_str(), text);
        }
    }
    headers.insert("ce-datacontenttype", "application/json");
    client
        .publish_with_headers(
            "sh.keptn.event.test.triggered",
            headers,
            serde_json::to_vec(&binary["data"].take()).unwrap().into(),
        )
        .await
        .unwrap();
    // Not an event: dropped, counted, never delivered again.
    client
        .publish("sh.keptn.event.test.triggered", "hello".into())
        .await
        .unwrap();
    // An event of 700 KB whose data holds 100,000 tiny objects, which would take about 90 MB
    // once read, more than the budget of bodies in flight (64 MiB): dropped unread, counted.
    let mut tiny = sample_with_id("test.triggered.json", "nats-tiny");
    tiny["data"]["items"] =
        serde_json::from_str(&format!("[{}]", vec![r#"{"":0}"#; 100_000].join(","))).unwrap();
    publish_json(&client, "sh.keptn.event.test.triggered", &tiny).await;
    // Larger than --max-body-bytes: dropped at once, counted as too large.
    let mut large = sample_with_id("test.triggered.json", "nats-large");
    large["data"]["padding"] = "x".repeat(850_000).into();
    publish_json(&client, "sh.keptn.event.test.triggered", &large).await;
    // Published on a subject other than its type's: whoever may publish there may not choose
    // the type. Dropped, counted as invalid.
    let elsewhere = sample_with_id("test.triggered.json", "nats-elsewhere");
    publish_json(&client, "sh.keptn.event.other.triggered", &elsewhere).await;
    client.flush().await.unwrap();

    // Each event's `.started` and `.finished` come back on the subjects of their types.
    let mut seen: BTreeSet<(String, String)> = BTreeSet::new();
    let deadline = Instant::now() + long;
    while seen
        .iter()
        .filter(|(subject, _)| subject == "sh.keptn.event.test.finished")
        .count()
        < 2
    {
        let left = deadline.saturating_duration_since(Instant::now());
        let message = tokio::time::timeout(left, back.next())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "no .finished on NATS within {long:?}: {seen:?}\n{}",
                    op.operator_log()
                )
            })
            .unwrap();
        if message.subject.ends_with(".triggered") {
            continue; // what the test sent
        }
        let event: Value = serde_json::from_slice(&message.payload).unwrap();
        assert_eq!(
            event["type"],
            message.subject.as_str(),
            "the type is the subject"
        );
        if let Some(triggered) = event["triggeredid"].as_str() {
            seen.insert((message.subject.to_string(), triggered.to_string()));
        }
    }
    for id in ["nats-structured", "nats-binary"] {
        for kind in ["started", "finished"] {
            assert!(
                seen.contains(&(format!("sh.keptn.event.test.{kind}"), id.to_string())),
                "{id} {kind}: {seen:?}"
            );
        }
    }
    let runs = runs_by_event(&server);
    assert_eq!(
        runs.get("nats-structured"),
        runs.get("nats-binary"),
        "{runs:?}"
    );
    assert!(runs.contains_key("nats-structured"), "{runs:?}");
    for dropped in ["nats-tiny", "nats-large", "nats-elsewhere"] {
        assert!(!runs.contains_key(dropped), "{dropped}: {runs:?}");
    }

    // Everything was acknowledged (its own `.started` and `.finished` too: nothing listens).
    let stream = context.get_stream("keptn").await.unwrap();
    let mut consumer: jetstream::consumer::PullConsumer =
        stream.get_consumer("job-executor").await.unwrap();
    let deadline = Instant::now() + long;
    loop {
        let info = consumer.info().await.unwrap();
        if info.num_ack_pending == 0 && info.num_pending == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "not all acknowledged: {info:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, metrics) = op.get_admin("/metrics").await;
    assert_eq!(
        support::metric_value(
            &metrics,
            "job_executor_events_received_total{outcome=\"invalid\"} "
        ),
        2,
        "{metrics}"
    );
    assert_eq!(
        support::metric_value(
            &metrics,
            "job_executor_events_received_total{outcome=\"too_large\"} "
        ),
        2,
        "{metrics}"
    );
    // The runs' own `.started` events, which no action of the example listens for (one listens
    // for `*.finished`): taken and counted.
    assert_eq!(
        support::metric_value(
            &metrics,
            "job_executor_events_received_total{outcome=\"not_matched\"} "
        ),
        2,
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keptn_events_on_nats_become_runs_and_go_back_on_kube_sim() {
    let server = Harness::for_replicas(&support::root().join("examples"), &[]).await;
    keptn_events_on_nats_become_runs_and_go_back(server, Duration::from_secs(60)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keptn_events_on_nats_become_runs_and_go_back_on_the_real_control_plane() {
    let server = ClusterHarness::install("nats", &support::root().join("examples"), &[]).await;
    keptn_events_on_nats_become_runs_and_go_back(server, Duration::from_secs(120)).await;
}

/// A server that requires credentials gets those of the URLs, user and password or a token,
/// percent-decoded (the NATS client reads none from a URL by itself): events are taken and
/// `.finished` published, and the operator's log shows no credential.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_requires_credentials_gets_those_of_the_url() {
    for (name, credentials, in_url, secrets) in [
        (
            "user",
            Credentials::UserAndPassword("job-executor".into(), "p@ss:w/rd".into()),
            "job-executor:p%40ss%3Aw%2Frd",
            ["p%40ss", "p@ss:w/rd"],
        ),
        (
            "token",
            Credentials::Token("s3cr3t/token".into()),
            "s3cr3t%2Ftoken",
            ["s3cr3t%2F", "s3cr3t/token"],
        ),
    ] {
        let server = Harness::for_replicas(&support::root().join("examples"), &[]).await;
        let nats = NatsServer::start_requiring(&format!("auth-{name}"), credentials).await;
        let url = nats.url.replace("nats://", &format!("nats://{in_url}@"));
        let mut op = server
            .replica(&format!("nats-{name}"), server.kubeconfig.clone())
            .await;
        op.set_flag("--nats-url", &url);
        op.set_flag("--sink-url", &url);
        op.start_operator().await;
        let client = nats.client().await;
        let context = jetstream::new(client.clone());
        stream_ready(&context).await;
        let mut back = client
            .subscribe("sh.keptn.event.test.finished")
            .await
            .unwrap();
        let id = format!("nats-auth-{name}");
        publish_until_stored(&context, &sample_with_id("test.triggered.json", &id)).await;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let message = tokio::time::timeout(left, back.next())
                .await
                .unwrap_or_else(|_| panic!("no .finished of {id}:\n{}", op.operator_log()))
                .unwrap();
            let event: Value = serde_json::from_slice(&message.payload).unwrap();
            if event["triggeredid"] == id.as_str() {
                assert_eq!(event["data"]["project"], "sockshop", "{event}");
                break;
            }
        }
        let log = op.operator_log();
        for secret in secrets {
            assert!(
                !log.contains(secret),
                "{name}: a credential in the log:\n{log}"
            );
        }
        op.terminate_operator(Duration::from_secs(10)).await;
    }
}

/// One action on `sh.keptn.event.load.triggered`, one quick task.
fn load_config(name: &str) -> PathBuf {
    let dir = support::fresh_dir(&format!("nats-config-{name}"));
    std::fs::create_dir_all(dir.join("carts/job")).unwrap();
    std::fs::write(
        dir.join("carts/job/config.yaml"),
        "apiVersion: v2\nactions:\n  - name: load\n    events: [{name: sh.keptn.event.load.triggered}]\n    tasks: [{name: quick, image: alpine}]\n",
    )
    .unwrap();
    dir
}

fn load_event(id: &str) -> Value {
    json!({
        "specversion": "1.0", "id": id, "source": "test", "type": "sh.keptn.event.load.triggered",
        "shkeptncontext": "f0e4c2a8-1b3d-4e5f-8a9b-0c1d2e3f4a5b",
        "data": {"project": "sockshop", "stage": "dev", "service": "carts"}
    })
}

/// A fresh kube-sim with the one-action config, a NATS server, and the operator taking events
/// from it with `flags` besides its URL, once it made the stream.
async fn load_setup(
    name: &str,
    flags: &[(&str, &str)],
) -> (Harness, NatsServer, Operator, jetstream::Context) {
    let server = Harness::for_replicas(&load_config(name), &[]).await;
    let nats = NatsServer::start(name).await;
    let mut op = server
        .replica(&format!("nats-{name}"), server.kubeconfig.clone())
        .await;
    op.set_flag("--nats-url", &nats.url);
    for (flag, value) in flags {
        op.set_flag(flag, value);
    }
    op.start_operator().await;
    let context = jetstream::new(nats.client().await);
    stream_ready(&context).await;
    (server, nats, op, context)
}

/// Waits until the operator made its consumer on Keptn's stream.
async fn consumer_made(context: &jetstream::Context) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let stream = context.get_stream("keptn").await.unwrap();
    while stream
        .get_consumer::<jetstream::consumer::pull::Config>("job-executor")
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "the operator made no consumer");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The consumer's state once every message published was delivered and acknowledged.
async fn all_acknowledged(context: &jetstream::Context, published: u64) -> consumer::Info {
    // The stream is there before the consumer: published to at once, a busy operator had not
    // made its consumer yet.
    consumer_made(context).await;
    let stream = context.get_stream("keptn").await.unwrap();
    let mut consumer: jetstream::consumer::PullConsumer =
        stream.get_consumer("job-executor").await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let info = consumer.info().await.unwrap().clone();
        if info.num_ack_pending == 0
            && info.num_pending == 0
            && info.delivered.stream_sequence >= published
        {
            return info;
        }
        assert!(Instant::now() < deadline, "not all acknowledged: {info:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Publishes `event` to JetStream until the stream confirms it (retried through an outage; the
/// id as `Nats-Msg-Id` keeps a retry from storing it twice).
async fn publish_until_stored(context: &jetstream::Context, event: &Value) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", event["id"].as_str().unwrap());
        let sent = context
            .publish_with_headers(
                event["type"].as_str().unwrap().to_string(),
                headers,
                serde_json::to_vec(event).unwrap().into(),
            )
            .await;
        if let Ok(ack) = sent
            && tokio::time::timeout(Duration::from_secs(2), ack)
                .await
                .is_ok_and(|ack| ack.is_ok())
        {
            return;
        }
        assert!(Instant::now() < deadline, "{event} was never stored");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The API server stores the run but its answer is held; the operator is SIGKILLed before it
/// acknowledged the message. Restarted, it gets the message again once the acknowledgement
/// wait passed, finds the run: a duplicate, acknowledged, and still one run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_between_storing_and_acknowledging_the_event_comes_back_as_a_duplicate() {
    let (server, _nats, mut op, context) =
        load_setup("kill", &[("--nats-ack-wait-seconds", "2")]).await;

    server
        .sim
        .faults()
        .delay_answers("create", "jobruns", Duration::from_secs(60));
    publish_until_stored(&context, &load_event("kill-1")).await;
    support::wait_patiently("the run is stored", Duration::from_secs(20), || {
        !server.jobruns().is_empty()
    })
    .await;
    op.kill_operator();
    server
        .sim
        .faults()
        .delay_answers("create", "jobruns", Duration::ZERO);
    op.start_operator().await;
    let finished = op.wait_finished("kill-1", Duration::from_secs(30)).await;
    assert_eq!(finished.data["status"], "succeeded", "{}", finished.data);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, metrics) = op.get_admin("/metrics").await;
        if support::metric_value(
            &metrics,
            "job_executor_events_received_total{outcome=\"duplicate\"} ",
        ) == 1
        {
            break;
        }
        assert!(Instant::now() < deadline, "no duplicate: {metrics}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(runs_by_event(&server).get("kill-1"), Some(&1));
}

/// The API server answers each store late, past the acknowledgement wait: the messages are
/// taken side by side, each told to the server as in hand while it is, so none is delivered
/// again (taken one after the other, with nothing said meanwhile, each was delivered again
/// every time the wait passed: some 30 deliveries of the 4 messages with a 1 s wait and 3 s
/// stores).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_slow_to_store_are_taken_side_by_side_and_not_delivered_again() {
    let (server, _nats, op, context) = load_setup(
        "slow",
        &[
            ("--nats-ack-wait-seconds", "4"),
            ("--store-timeout-seconds", "20"),
        ],
    )
    .await;
    // Each store takes two and a half acknowledgement waits; the operator says a message is in
    // hand every half wait, so a stall of up to 2 s delivers nothing again.
    server
        .sim
        .faults()
        .delay_answers("create", "jobruns", Duration::from_secs(10));
    let ids = ["slow-1", "slow-2", "slow-3", "slow-4"];
    for id in ids {
        publish_until_stored(&context, &load_event(id)).await;
    }
    let info = all_acknowledged(&context, ids.len() as u64).await;
    // Each message delivered once: no delivery after the first.
    assert_eq!(
        info.delivered.consumer_sequence,
        ids.len() as u64,
        "{info:?}\n{}",
        op.operator_log()
    );
    let runs = runs_by_event(&server);
    for id in ids {
        assert_eq!(runs.get(id), Some(&1), "{runs:?}");
    }
}

/// The operator made the stream, but not its consumer (its subject matches none of the
/// stream's): an event published meanwhile is taken once the consumer is made, as the stream
/// is read from its start whenever the operator made it, not only at the attempt that did.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_made_here_is_read_from_its_start_when_its_consumer_comes_later() {
    let (server, _nats, mut op, context) =
        load_setup("later", &[("--nats-subject", "not.keptn.event")]).await;
    publish_until_stored(&context, &load_event("later-1")).await;
    support::wait_patiently("the consumer refused", Duration::from_secs(20), || {
        op.operator_log().contains("NATS events are not taken")
    })
    .await;
    assert!(runs_by_event(&server).is_empty());
    op.terminate_operator(Duration::from_secs(10)).await;
    op.set_flag("--nats-subject", "sh.keptn.event.load.triggered");
    op.start_operator().await;
    support::wait_patiently("the event's run", Duration::from_secs(30), || {
        runs_by_event(&server).contains_key("later-1")
    })
    .await;

    // Once: a consumer made anew (deleted to change its subjects) starts at the stream's end,
    // as on any stream, so the event is not taken again.
    op.terminate_operator(Duration::from_secs(10)).await;
    let stream = context.get_stream("keptn").await.unwrap();
    assert_eq!(stream.cached_info().config.description, None);
    stream.delete_consumer("job-executor").await.unwrap();
    op.start_operator().await;
    // Ready does not wait for NATS (the HTTP ingest works without it): an event published
    // before the new consumer is made is, by design, not its.
    consumer_made(&context).await;
    publish_until_stored(&context, &load_event("later-2")).await;
    support::wait_patiently("the new event's run", Duration::from_secs(30), || {
        runs_by_event(&server).contains_key("later-2")
    })
    .await;
    // Everything the consumer was given taken (later-1 too, were it given again).
    all_acknowledged(&context, 2).await;
    let (_, metrics) = op.get_admin("/metrics").await;
    assert_eq!(
        support::metric_value(
            &metrics,
            "job_executor_events_received_total{outcome=\"duplicate\"} "
        ),
        0,
        "later-1 taken again: {metrics}"
    );
}

/// A consumer that exists is used as it is: started again with other subjects and another
/// acknowledgement wait, the operator says how the consumer differs and how to make it anew.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_unlike_the_flags_is_told() {
    let (_server, _nats, mut op, _context) = load_setup("unlike", &[]).await;
    support::wait_patiently("the consumer", Duration::from_secs(20), || {
        op.operator_log().contains("taking events from NATS")
    })
    .await;
    assert!(!op.operator_log().contains("not as the flags say"));
    op.terminate_operator(Duration::from_secs(10)).await;
    op.set_flag("--nats-ack-wait-seconds", "5");
    op.set_flag("--nats-subject", "sh.keptn.event.load.triggered");
    op.start_operator().await;
    support::wait_patiently("the warning", Duration::from_secs(20), || {
        op.operator_log().contains(
            "the consumer is not as the flags say: it takes subjects all of the stream's, not \
             sh.keptn.event.load.triggered (--nats-subject); its acknowledgement wait is 30s, \
             not 5s (--nats-ack-wait-seconds); a consumer that exists is used as it is (delete \
             it to make it anew: nats consumer rm keptn job-executor)",
        )
    })
    .await;
}

/// Told to stop while a message is in hand (the API server slow to answer its store), the
/// operator takes it to the end and acknowledges it before it exits; a message published
/// meanwhile is not delivered to it (it would wait there for the acknowledgement wait).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_in_hand_is_taken_to_the_end_when_the_operator_stops() {
    let (server, _nats, op, context) = load_setup("drain", &[]).await;
    server
        .sim
        .faults()
        .delay_answers("create", "jobruns", Duration::from_secs(3));
    publish_until_stored(&context, &load_event("drain-1")).await;
    support::wait_patiently("the run is stored", Duration::from_secs(20), || {
        !server.jobruns().is_empty()
    })
    .await;
    const ASKS_NO_MORE: &str = "no more NATS messages asked for";
    let asked_no_more = || op.operator_log().matches(ASKS_NO_MORE).count();
    let before = asked_no_more();
    op.signal_terminate();
    // Published while it stops, once it asks for no more messages: left at the server for the
    // next consumer, not delivered here.
    support::wait_for(
        "no more messages asked for",
        Duration::from_secs(20),
        || asked_no_more() > before,
    )
    .await;
    let stream = context.get_stream("keptn").await.unwrap();
    let mut consumer: jetstream::consumer::PullConsumer =
        stream.get_consumer("job-executor").await.unwrap();
    // Its pull request gone from the server (the subscription's end travels on its connection).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let info = consumer.info().await.unwrap();
        if info.num_waiting == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "a pull request waits: {info:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    publish_until_stored(&context, &load_event("drain-2")).await;
    support::wait_patiently("the operator to stop", Duration::from_secs(20), || {
        !op.operator_running()
    })
    .await;
    let info = consumer.info().await.unwrap();
    assert_eq!(info.num_ack_pending, 0, "{info:?}\n{}", op.operator_log());
    assert_eq!(info.ack_floor.stream_sequence, 1, "{info:?}");
    assert_eq!(info.num_pending, 1, "drain-2 waits at the server: {info:?}");
}

/// Keptn's stream already holds events when the operator first starts: its new consumer starts
/// at the stream's end, so those old events start nothing. Once made, the durable consumer
/// resumes where it was: an event published while the operator is down runs after its restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_consumer_starts_at_the_end_and_a_durable_one_resumes() {
    let server = Harness::for_replicas(&load_config("resume"), &[]).await;
    let nats = NatsServer::start("resume").await;
    let context = jetstream::new(nats.client().await);
    // As Keptn's shipyard-controller makes it, before the operator is installed.
    context
        .create_stream(jetstream::stream::Config {
            name: "keptn".into(),
            subjects: vec!["sh.keptn.>".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    publish_until_stored(&context, &load_event("before-install")).await;
    let mut op = server
        .replica("nats-resume", server.kubeconfig.clone())
        .await;
    op.set_flag("--nats-url", &nats.url);
    // A message the server hands to the killed process's pull request still under way is
    // delivered again after the acknowledgement wait.
    op.set_flag("--nats-ack-wait-seconds", "2");
    op.start_operator().await;
    // The operator makes its consumer as it starts; events from then on are its.
    consumer_made(&context).await;
    publish_until_stored(&context, &load_event("after-install")).await;
    op.wait_finished("after-install", Duration::from_secs(30))
        .await;
    // The stream delivers in order: the older event would have come first.
    assert_eq!(runs_by_event(&server).get("before-install"), None);

    op.kill_operator();
    publish_until_stored(&context, &load_event("while-down")).await;
    op.start_operator().await;
    let finished = op
        .wait_finished("while-down", Duration::from_secs(30))
        .await;
    assert_eq!(finished.data["status"], "succeeded", "{}", finished.data);
    let runs = runs_by_event(&server);
    assert_eq!(
        runs.keys().map(String::as_str).collect::<Vec<_>>(),
        ["after-install", "while-down"],
        "{runs:?}"
    );
}

/// 100 events published while the NATS server is SIGKILLed and restarted (same port, same
/// store) after the 30th: the operator reconnects, and every event has its one run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nats_server_restarted_under_load_loses_nothing() {
    let server = Harness::for_replicas(&load_config("restart"), &[]).await;
    let mut nats = NatsServer::start("restart").await;
    let mut op = server
        .replica("nats-restart", server.kubeconfig.clone())
        .await;
    op.set_flag("--nats-url", &nats.url);
    op.start_operator().await;
    let context = jetstream::new(nats.client().await);
    stream_ready(&context).await;
    for i in 0..100 {
        publish_until_stored(&context, &load_event(&format!("restart-{i}"))).await;
        if i == 30 {
            nats.kill();
            tokio::time::sleep(Duration::from_secs(1)).await;
            nats.restart().await;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    support::wait_patiently("every event has its run", Duration::from_secs(90), || {
        runs_by_event(&server).len() == 100
    })
    .await;
    let runs = runs_by_event(&server);
    assert!(runs.values().all(|count| *count == 1), "{runs:?}");
    drop(op);
}
