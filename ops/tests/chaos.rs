//! Short chaos runs with the real processes: workers SIGKILLed under load, and
//! nats-server crashed and restarted under load. Every accepted request ends (done or
//! failed with a reason) and every stream ends with `[DONE]` or an error event. The
//! full-length runs are `cauce chaos` itself (see the README for their figures).

use std::process::Command;

use serde_json::Value;

fn chaos(scenario: &str, extra: &[&str]) -> Value {
    // fails with a message naming ops/setup when the model is missing
    cauce_inference::installed_model().unwrap_or_else(|err| panic!("{err}"));
    let report = tempfile::NamedTempFile::new().unwrap();
    let status = Command::new(env!("CARGO_BIN_EXE_cauce"))
        .args(["chaos", "--scenario", scenario, "--settle", "240s"])
        .args(extra)
        .arg("--json")
        .arg(report.path())
        .status()
        .unwrap();
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(report.path()).unwrap()).unwrap();
    assert!(status.success(), "cauce chaos {scenario}: {report:#}");
    report
}

fn assert_every_request_ended(report: &Value) {
    assert_eq!(report["lost"], 0, "{report:#}");
    assert_eq!(report["streams_cut"], 0, "{report:#}");
    assert!(report["accepted"].as_u64().unwrap() > 0, "{report:#}");
    assert_eq!(
        report["accepted"].as_u64().unwrap(),
        report["done"].as_u64().unwrap() + report["failed"].as_u64().unwrap(),
        "{report:#}"
    );
    assert!(report["poisoned"].as_u64().unwrap() >= 1, "{report:#}");
    assert_eq!(
        report["poisoned"], report["poisoned_failed_with_reason"],
        "{report:#}"
    );
}

/// One test, so that the two runs do not share the machine's cores with each other.
#[test]
fn killed_workers_and_a_crashed_nats_server_lose_no_accepted_request() {
    let report = chaos(
        "workers",
        &[
            "--duration",
            "25s",
            "--requests",
            "20",
            "--inference-kill-every",
            "5s",
            "--retrieval-kill-every",
            "12s",
        ],
    );
    assert_every_request_ended(&report);
    assert!(
        report["inference_kills"].as_u64().unwrap() >= 4,
        "{report:#}"
    );
    assert!(
        report["retrieval_kills"].as_u64().unwrap() >= 2,
        "{report:#}"
    );

    let report = chaos("nats", &["--duration", "20s", "--requests", "16"]);
    assert_every_request_ended(&report);
    assert_eq!(report["nats_restarts"], 2, "{report:#}");
}
