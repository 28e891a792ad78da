//! The official `openai` Python package, streaming and not, against `cauce up`: the
//! script `ops/tests/python/openai_client.py` checks what the SDK parses, this test
//! checks that the texts it got are the stored answers.
//!
//! The package is installed by `./ops/setup` under `$CAUCE_HOME/python` (no venv, no
//! root), which this test puts on `PYTHONPATH`.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::Cauce;
use serde_json::Value;

/// Where `./ops/setup` installs Python packages.
fn python_packages() -> PathBuf {
    let home = std::env::var_os("CAUCE_HOME")
        .filter(|home| !home.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".local/share/cauce")
        });
    home.join("python")
}

fn python(packages: &PathBuf) -> Command {
    let mut command = Command::new("python3");
    command.env("PYTHONPATH", packages);
    command
}

#[tokio::test(flavor = "multi_thread")]
async fn the_openai_python_package_streams_and_answers_what_was_stored() {
    let packages = python_packages();
    let found = python(&packages)
        .args(["-c", "import openai"])
        .output()
        .expect("python3 runs; run ./ops/setup");
    assert!(
        found.status.success(),
        "the openai Python package is missing from {}; run ./ops/setup ({})",
        packages.display(),
        String::from_utf8_lossy(&found.stderr).trim()
    );

    let cauce = Cauce::start(2).await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/openai_client.py");
    let output = tokio::task::spawn_blocking({
        let mut command = python(&packages);
        command.arg(script).env("CAUCE_URL", &cauce.base_url);
        move || command.output().unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{script} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    eprintln!("openai {}", report["openai_version"]);

    for (id, text) in [("whole_id", "whole_text"), ("stream_id", "stream_text")] {
        let request_id = report[id]
            .as_str()
            .unwrap()
            .strip_prefix("chatcmpl-")
            .unwrap();
        let task = cauce.final_task(request_id).await;
        assert_eq!(task["status"], "done");
        assert_eq!(
            task["result"]["choices"][0]["message"]["content"], report[text],
            "the SDK got the stored answer"
        );
    }
}
