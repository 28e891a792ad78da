//! One owner of the NATS objects: after `cauce nats apply` with custom limits, commands
//! run with default flags (`cauce ingest`, `cauce cache stats`) succeed and change
//! nothing; a worker started with a flag that disagrees with the server refuses to
//! start and says which object, field, values and command; and a process that needs an
//! object nobody set up names `cauce nats apply`.

use std::process::Output;

use async_nats::jetstream;
use cauce_nats::testkit::NatsServer;
use serde_json::Value;

/// Runs one `cauce` command to its end; one that should have refused to start but did
/// not is stopped after two minutes rather than hanging the test.
fn run(url: &str, args: &[&str]) -> Output {
    let output = std::process::Command::new("timeout")
        .arg("120")
        .arg(env!("CARGO_BIN_EXE_cauce"))
        .args(args)
        .args(["--nats-url", url])
        .output()
        .unwrap();
    eprintln!(
        "cauce {args:?}: {}\n{}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// Every stream's and consumer's configuration, as JSON to compare.
async fn configs(js: &jetstream::Context) -> Vec<Value> {
    let mut all = Vec::new();
    for stream_name in [
        "QUESTIONS",
        "PROMPTS",
        "DOCS",
        "DEAD",
        "KV_cauce-results",
        "KV_cauce-cache",
        "KV_cauce-cancels",
    ] {
        let mut stream = js.get_stream(stream_name).await.unwrap();
        let info = stream.info().await.unwrap();
        let mut config = serde_json::to_value(&info.config).unwrap();
        // the server's own bookkeeping changes with every request
        if let Some(metadata) = config["metadata"].as_object_mut() {
            metadata.retain(|key, _| !key.starts_with("_nats"));
        }
        all.push(config);
    }
    for (stream_name, consumer) in [("QUESTIONS", "retrieval"), ("DEAD", "notify")] {
        let stream = js.get_stream_no_info(stream_name).await.unwrap();
        let info = stream.consumer_info(consumer).await.unwrap();
        all.push(serde_json::to_value(&info.config).unwrap());
    }
    all
}

#[tokio::test(flavor = "multi_thread")]
async fn only_the_owner_step_changes_nats_objects() {
    let server = NatsServer::start().unwrap_or_else(|err| panic!("{err}"));
    let url = server.url();
    let js = jetstream::new(server.client().await);

    // before any setup, a command that needs DOCS names the command that makes it
    let docs = tempfile::tempdir().unwrap();
    std::fs::write(
        docs.path().join("a.md"),
        "# A\n\nA page about lighthouses.\n",
    )
    .unwrap();
    let docs_arg = docs.path().to_str().unwrap();
    let missing = run(&url, &["ingest", docs_arg]);
    assert!(!missing.status.success());
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(
        stderr.contains("stream DOCS") && stderr.contains("cauce nats apply"),
        "{stderr}"
    );

    let apply = run(
        &url,
        &[
            "nats",
            "apply",
            "--retrieval-ack-wait",
            "10s",
            "--max-deliveries",
            "9",
            "--questions-max-age",
            "1d",
        ],
    );
    assert!(apply.status.success());
    let before = configs(&js).await;

    assert!(run(&url, &["ingest", docs_arg]).status.success());
    assert!(run(&url, &["cache", "stats"]).status.success());
    // the owner step again without flags keeps what the operator set
    assert!(run(&url, &["nats", "apply"]).status.success());
    let after = configs(&js).await;
    assert_eq!(
        before, after,
        "a command with default flags changed a NATS object"
    );

    let retrieval = js.get_stream_no_info("QUESTIONS").await.unwrap();
    let consumer = retrieval.consumer_info("retrieval").await.unwrap();
    assert_eq!(consumer.config.ack_wait.as_secs(), 10);
    assert_eq!(consumer.config.max_deliver, 9);

    // a worker whose flag disagrees refuses to start, and says how to change it
    let home = tempfile::tempdir().unwrap();
    let home_arg = home.path().to_str().unwrap();
    let refused = run(
        &url,
        &[
            "retrieval",
            "--home",
            home_arg,
            "--retrieval-ack-wait",
            "30s",
        ],
    );
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    for part in [
        "ack_wait of consumer QUESTIONS/retrieval is 10s but --retrieval-ack-wait asks for 30s",
        "cauce nats apply --retrieval-ack-wait 30s",
    ] {
        assert!(stderr.contains(part), "{stderr}");
    }
    assert_eq!(configs(&js).await, before);

    let shown = run(&url, &["nats", "show"]);
    let stdout = String::from_utf8_lossy(&shown.stdout);
    assert!(
        stdout.contains("--retrieval-ack-wait") && stdout.contains("10s"),
        "{stdout}"
    );
}
