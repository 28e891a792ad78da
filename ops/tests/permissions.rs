//! Least privilege on NATS: a real nats-server runs the users `cauce nats permissions`
//! generates, every component runs as its own user in its own process, and the whole
//! pipeline works without one refusal (questions, sources, answers, search, a task, a
//! dead letter, an upload converted by an ingest worker, indexed and deleted, the
//! workers' metrics, the operator's `status`, `cache` and `replay`),
//! while each forbidden action is refused by the server:
//! the gateway pulling or reading prompt jobs, an inference worker publishing to
//! `DOCS`, anyone but the operator changing a stream, a role reading another's replies.

mod procs;

use std::time::Duration;

use async_nats::jetstream;
use cauce_nats::ids::ModelName;
use cauce_nats::names;
use cauce_nats::permissions::{self, Role};
use cauce_nats::testkit::NatsServer;
use procs::{Proc, chat_body, create_task, free_port, wait_healthy, wait_task};
use serde_json::{Value, json};
use tokio::sync::mpsc;

fn password(role: Role) -> String {
    format!("test-secret-of-{}", role.as_str())
}

/// The flags that log a `cauce` command in as `role`.
fn login(role: Role) -> Vec<String> {
    vec![
        "--nats-user".into(),
        role.user(),
        "--nats-password".into(),
        password(role),
    ]
}

fn start_server() -> NatsServer {
    let mut config: String = Role::ALL
        .iter()
        .map(|role| format!("{}: \"{}\"\n", role.password_variable(), password(*role)))
        .collect();
    config.push_str(&permissions::server_config());
    NatsServer::start_with_config(&config).unwrap_or_else(|err| panic!("{err}"))
}

/// A client logged in as `role`, and the errors the server sends it.
async fn client_as(
    server: &NatsServer,
    role: Role,
) -> (async_nats::Client, mpsc::UnboundedReceiver<String>) {
    let (errors, refused) = mpsc::unbounded_channel();
    let client = async_nats::ConnectOptions::new()
        .user_and_password(role.user(), password(role))
        .custom_inbox_prefix(role.inbox_prefix())
        .event_callback(move |event| {
            let errors = errors.clone();
            async move {
                if let async_nats::Event::ServerError(err) = event {
                    let _ = errors.send(err.to_string());
                }
            }
        })
        .connect(server.url())
        .await
        .unwrap_or_else(|err| panic!("{role:?} logs in: {err}"));
    (client, refused)
}

/// Waits for the server's refusal naming `subject`.
async fn assert_refused(
    role: Role,
    refused: &mut mpsc::UnboundedReceiver<String>,
    what: &str,
    subject: &str,
) {
    let wanted = format!("\"{subject}\"");
    let error = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let error = refused.recv().await.expect("the client is alive");
            if error.contains("Permissions Violation") && error.contains(&wanted) {
                return error;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{role:?} was allowed to {what} ({subject})"));
    assert!(error.contains(what), "{role:?}: {error}");
}

fn run_as(role: Role, url: &str, args: &[&str]) -> std::process::Output {
    procs::cauce(url, args)
        .args(login(role))
        .output()
        .expect("cauce runs")
}

fn log_in(extra: &[&str], role: Role) -> Vec<String> {
    extra
        .iter()
        .map(|s| s.to_string())
        .chain(login(role))
        .collect()
}

fn as_strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn each_component_works_as_its_own_user_and_nothing_more() {
    let server = start_server();
    let url = server.url();

    // the operator sets up the objects; ingest publishes the corpus
    let applied = run_as(Role::Operator, &url, &["nats", "apply"]);
    assert!(applied.status.success(), "{applied:?}");
    let docs = tempfile::tempdir().unwrap();
    std::fs::write(
        docs.path().join("rivers.md"),
        "# Rivers\n\nThe Ebro is the longest river that runs entirely in Spain.\n",
    )
    .unwrap();
    let ingested = run_as(
        Role::Ingest,
        &url,
        &[
            "ingest",
            docs.path().to_str().unwrap(),
            "--id-prefix",
            "perm",
            "--delete-missing",
        ],
    );
    assert!(ingested.status.success(), "{ingested:?}");

    let home = tempfile::tempdir().unwrap();
    let port = free_port();
    let gateway_args = log_in(
        &["--rate-limit", "0", "--request-timeout", "60s"],
        Role::Gateway,
    );
    let retrieval_args = log_in(&[], Role::Retrieval);
    let inference_args = log_in(&["--threads", "1"], Role::Inference);
    let ingest_args = log_in(&["ingest", "--follow"], Role::Ingest);
    let _processes: Vec<Proc> = vec![
        Proc::spawn("ingest", &mut procs::cauce(&url, &as_strs(&ingest_args))),
        procs::gateway(&url, "gw-perm", port, &as_strs(&gateway_args)),
        procs::retrieval(&url, home.path(), &as_strs(&retrieval_args)),
        procs::inference_with_context(&url, 2, 512, &as_strs(&inference_args)),
    ];
    let http = reqwest::Client::new();
    wait_healthy(&http, port).await;
    pipeline_works(&http, port).await;
    uploads_work(&http, port).await;
    dead_letters_handled(&server).await;
    let status = run_as(
        Role::Operator,
        &url,
        &["status", "--json", "--sample", "100ms"],
    );
    assert!(status.status.success(), "{status:?}");
    let status: Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(
        status["workers"].as_array().map(Vec::len),
        Some(2),
        "{status}"
    );

    for command in [&["cache", "stats"][..], &["replay", "--dead", "--json"]] {
        let output = run_as(Role::Operator, &url, command);
        assert!(output.status.success(), "{command:?}: {output:?}");
    }
    let metrics = http
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("cauce_inference_"),
        "the gateway gathers the workers' metrics: {metrics}"
    );

    let refusals = refusals_logged(&server);
    assert!(refusals.is_empty(), "refused while working: {refusals:#?}");

    forbidden_actions_are_refused(&server).await;
    let refusals = refusals_logged(&server);
    assert!(
        refusals
            .iter()
            .any(|l| l.contains("cauce.docs.perm-forged")),
        "the server logs what it refused: {refusals:#?}"
    );
}

/// A file uploaded through the gateway, converted by the ingest worker, indexed,
/// downloaded and deleted.
async fn uploads_work(http: &reqwest::Client, port: u16) {
    let text = "# Lakes\n\nSanabria is a glacial lake.\n";
    let id = procs::upload(http, port, "lakes.md", text.as_bytes()).await;
    procs::wait_document(http, port, &id, "indexed").await;
    let document = format!("http://127.0.0.1:{port}/v1/documents/{id}");
    let content = http
        .get(format!("{document}/content"))
        .send()
        .await
        .unwrap();
    assert_eq!(content.text().await.unwrap(), text);
    let deleted = http.delete(&document).send().await.unwrap();
    assert_eq!(deleted.status(), 202);
    procs::wait_document(http, port, &id, "gone").await;
}

/// The server log's lines about refused publishes and subscriptions.
fn refusals_logged(server: &NatsServer) -> Vec<String> {
    let log = std::fs::read_to_string(cauce_nats::server::log_file_for(server.dir())).unwrap();
    log.lines()
        .filter(|l| l.contains("Violation"))
        .map(String::from)
        .collect()
}

/// A streamed answer with its sources, a search, a task, and a poison job that ends as a
/// dead letter.
async fn pipeline_works(http: &reqwest::Client, port: u16) {
    let base = format!("http://127.0.0.1:{port}");
    let mut body = chat_body("Which is the longest river in Spain?", 4);
    let response = http
        .post(format!("{base}/v1/chat/completions"))
        .json(&body)
        .send()
        .await
        .unwrap();
    let completion: Value = response.json().await.unwrap();
    let content = completion["choices"][0]["message"]["content"].as_str();
    assert!(content.is_some_and(|c| !c.is_empty()), "{completion}");
    assert!(
        completion.to_string().contains("perm"),
        "the answer cites the ingested document: {completion}"
    );
    body["stream"] = json!(true);
    let streamed = http
        .post(format!("{base}/v1/chat/completions"))
        .json(&body)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(streamed.contains("data: [DONE]"), "{streamed}");

    let search: Value = http
        .post(format!("{base}/v1/search"))
        .json(&json!({"query": "longest river", "top_k": 2}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(search.to_string().contains("Ebro"), "{search}");

    let task = create_task(http, port, &chat_body("Name a river.", 4)).await;
    assert_eq!(wait_task(http, port, &task).await["status"], "done");
    let task = create_task(http, port, &chat_body("Tell a long story of rivers.", 400)).await;
    let cancelled = http
        .delete(format!("{base}/v1/tasks/{task}"))
        .send()
        .await
        .unwrap();
    assert!(cancelled.status().is_success(), "{cancelled:?}");
    assert_eq!(wait_task(http, port, &task).await["status"], "cancelled");
    // longer than the context: the worker terminates it, and the dead letter is read
    let poison = "Tell me about rivers and streams and canals. ".repeat(80);
    let task = create_task(http, port, &chat_body(&poison, 4)).await;
    assert_eq!(wait_task(http, port, &task).await["status"], "failed");
}

/// Waits until the retrieval worker has handled the poison job's dead letter.
async fn dead_letters_handled(server: &NatsServer) {
    let (operator, _) = client_as(server, Role::Operator).await;
    let js = jetstream::new(operator);
    for _ in 0..100 {
        let mut notify: jetstream::consumer::PullConsumer = js
            .get_consumer_from_stream(names::DEAD_NOTIFY_CONSUMER, names::DEAD)
            .await
            .unwrap();
        let info = notify.info().await.unwrap();
        if info.delivered.stream_sequence > 0 && info.num_pending == 0 && info.num_ack_pending == 0
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the dead letter was never handled");
}

async fn forbidden_actions_are_refused(server: &NatsServer) {
    let consumer = names::inference_consumer(&ModelName::default_model());
    let (gateway, mut refused) = client_as(server, Role::Gateway).await;
    let pull = format!("$JS.API.CONSUMER.MSG.NEXT.{}.{consumer}", names::PROMPTS);
    gateway.publish(pull.clone(), "1".into()).await.unwrap();
    assert_refused(Role::Gateway, &mut refused, "Publish", &pull).await;
    let read = format!("$JS.API.STREAM.MSG.GET.{}", names::PROMPTS);
    gateway.publish(read.clone(), "{}".into()).await.unwrap();
    assert_refused(Role::Gateway, &mut refused, "Publish", &read).await;
    let _prompts = gateway.subscribe(names::PROMPTS_SUBJECTS).await.unwrap();
    assert_refused(
        Role::Gateway,
        &mut refused,
        "Subscription",
        names::PROMPTS_SUBJECTS,
    )
    .await;

    let (inference, mut refused) = client_as(server, Role::Inference).await;
    let doc = "cauce.docs.perm-forged";
    inference.publish(doc, "{}".into()).await.unwrap();
    assert_refused(Role::Inference, &mut refused, "Publish", doc).await;

    let (retrieval, mut refused) = client_as(server, Role::Retrieval).await;
    let others = format!("{}.>", Role::Gateway.inbox_prefix());
    let _inbox = retrieval.subscribe(others.clone()).await.unwrap();
    assert_refused(Role::Retrieval, &mut refused, "Subscription", &others).await;

    let (ingest, mut refused) = client_as(server, Role::Ingest).await;
    let result = format!("$KV.{}.forged", names::RESULTS_BUCKET);
    ingest.publish(result.clone(), "{}".into()).await.unwrap();
    assert_refused(Role::Ingest, &mut refused, "Publish", &result).await;

    for role in [
        Role::Gateway,
        Role::Retrieval,
        Role::Inference,
        Role::Ingest,
    ] {
        let (client, mut refused) = client_as(server, role).await;
        for change in [
            format!("$JS.API.STREAM.UPDATE.{}", names::QUESTIONS),
            format!("$JS.API.STREAM.DELETE.{}", names::DOCS),
            format!("$JS.API.STREAM.PURGE.{}", names::PROMPTS),
        ] {
            client.publish(change.clone(), "{}".into()).await.unwrap();
            assert_refused(role, &mut refused, "Publish", &change).await;
        }
    }
    // and nothing changed: the operator still finds every stream
    let (operator, _) = client_as(server, Role::Operator).await;
    let js = jetstream::new(operator);
    for stream in [names::QUESTIONS, names::PROMPTS, names::DOCS] {
        js.get_stream(stream)
            .await
            .unwrap_or_else(|err| panic!("{stream}: {err}"));
    }
}
