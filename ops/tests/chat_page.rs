//! The chat page in headless Chromium against `cauce up`: `gateway/e2e/chat_page.mjs`
//! (playwright-core driving Debian's chromium) renders a fixed Markdown answer with the
//! page's own renderer (code block highlighted, citation linked, no script), types a
//! question, sees sources appear as links and tokens stream in, presses stop, reloads
//! and finds the conversation still there, starts a second conversation and comes back
//! to the first, renames and deletes one, and regenerates an answer, on a desktop-sized
//! and a phone-sized page. The screenshots are left in
//! `target/test-artifacts/`.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Cauce, artifacts_dir};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// A guard against a hung browser, not a speed check.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(900);

fn e2e_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../gateway/e2e")
}

#[tokio::test(flavor = "multi_thread")]
async fn the_chat_page_streams_cites_stops_and_keeps_the_conversation() {
    let chromium = std::env::var_os("CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    assert!(
        chromium.is_file(),
        "chromium is missing at {}; run ./ops/setup",
        chromium.display()
    );
    let e2e = e2e_dir();
    assert!(
        e2e.join("node_modules/playwright-core/package.json")
            .is_file(),
        "playwright-core is missing from {}/node_modules; run ./ops/setup",
        e2e.display()
    );

    let cauce = Cauce::start(1).await;
    let artifacts = artifacts_dir();
    let node = Command::new("node")
        .arg(e2e.join("chat_page.mjs"))
        .arg(&artifacts)
        .env("CAUCE_URL", &cauce.base_url)
        .env("CHROMIUM", &chromium)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("node runs; run ./ops/setup");
    let pid = Pid::from_raw(node.id() as i32);
    // SIGTERM lets playwright close chromium; the output is read after the exit
    let watchdog = tokio::spawn(async move {
        tokio::time::sleep(SCRIPT_TIMEOUT).await;
        let _ = kill(pid, Signal::SIGTERM);
    });
    let output = tokio::task::spawn_blocking(move || node.wait_with_output().unwrap())
        .await
        .unwrap();
    watchdog.abort();
    let stdout = String::from_utf8_lossy(&output.stdout);
    eprintln!("{stdout}");
    assert!(
        output.status.success(),
        "the chat page test failed ({}):\n{stdout}\n{}\ncauce up log ends:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr),
        cauce.log_tail()
    );
    for name in ["desktop", "phone"] {
        let screenshot = artifacts.join(format!("chat_page_{name}.png"));
        assert!(
            screenshot.is_file(),
            "no screenshot at {}",
            screenshot.display()
        );
    }
}
