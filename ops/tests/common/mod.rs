//! What the end-to-end tests of `ops/tests` share: `cauce up` as a child process with
//! the real model, on its own nats-server and a temporary home, plus small HTTP and SSE
//! helpers.
//!
//! The nats-server is started by the test (the testkit one, killed on drop) and handed
//! to `cauce up` through `--nats-url`, so that it finds it rather than starting its own:
//! whatever happens to the `cauce up` child, no nats-server outlives the test.
//! (`ops/tests/up.rs` covers `cauce up` starting nats-server itself.)

#![allow(dead_code)] // each test file uses its own part of the harness

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use cauce_nats::testkit::NatsServer;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;

/// Generous: a guard against a hang, not a speed check (the machines are shared).
const START_TIMEOUT: Duration = Duration::from_secs(300);
/// How long `cauce up` may drain after Ctrl-C before a second Ctrl-C, then SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(60);

const URL_LINE: &str = "cauce is up: the chat page is at ";

/// The whole service (`cauce up`) on free ports, stopped with Ctrl-C when dropped.
pub struct Cauce {
    child: Option<Child>,
    /// `http://127.0.0.1:<port>`, without a trailing slash.
    pub base_url: String,
    pub nats_url: String,
    pub http: reqwest::Client,
    log: PathBuf,
    // dropped after the child stops
    nats: NatsServer,
    home: tempfile::TempDir,
}

/// The model `./ops/setup` installs; every end-to-end test runs it.
pub fn model_path() -> PathBuf {
    cauce_inference::installed_model().unwrap_or_else(|err| panic!("{err}"))
}

impl Cauce {
    /// Starts `cauce up` with `slots` inference slots and waits until `/readyz` says
    /// 200 (NATS, streams and both workers there).
    pub async fn start(slots: u32) -> Self {
        Self::start_with(slots, &[]).await
    }

    /// [`Cauce::start`] with extra `cauce up` flags.
    pub async fn start_with(slots: u32, extra: &[&str]) -> Self {
        cauce_nats::server::find_binary()
            .unwrap_or_else(|err| panic!("{err} (./ops/setup installs nats-server)"));
        let model = model_path();
        let nats = NatsServer::start().unwrap_or_else(|err| panic!("{err}"));
        let home = tempfile::Builder::new()
            .prefix("cauce-e2e-")
            .tempdir()
            .unwrap();
        let log = home.path().join("cauce-up.log");
        let stderr = File::create(&log).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_cauce"))
            .args(["up", "--nats-url", &nats.url(), "--port", "0"])
            .args(["--slots", &slots.to_string(), "--ctx-size", "2048"])
            // tests send many requests from one address
            .args(["--rate-limit", "0"])
            .args(extra)
            .arg("--home")
            .arg(home.path())
            .arg("--model")
            .arg(&model)
            .env("NO_COLOR", "1")
            .env("RUST_BACKTRACE", "0")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap();
        let base_url = forward_stdout(&mut child, log.clone());
        let mut cauce = Self {
            child: Some(child),
            base_url: String::new(),
            nats_url: nats.url(),
            http: reqwest::Client::new(),
            log,
            nats,
            home,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        let base_url = loop {
            cauce.assert_running();
            match base_url.try_recv() {
                Ok(url) => break url,
                Err(mpsc::TryRecvError::Empty) => {}
                Err(mpsc::TryRecvError::Disconnected) => {
                    cauce.fail("cauce up closed its output before saying where it listens")
                }
            }
            if Instant::now() > deadline {
                cauce.fail("cauce up did not say where it listens");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        cauce.base_url = base_url;
        loop {
            cauce.assert_running();
            if let Ok(response) = cauce.http.get(cauce.url("/readyz")).send().await
                && response.status() == 200
            {
                break;
            }
            if Instant::now() > deadline {
                cauce.fail("/readyz never answered 200");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        cauce
    }

    /// `base_url` joined with `path` (which starts with `/`).
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    /// A client of the service's nats-server.
    pub async fn nats_client(&self) -> async_nats::Client {
        self.nats.client().await
    }

    /// POSTs a JSON body.
    pub async fn post(&self, path: &str, body: &Value) -> reqwest::Response {
        self.http
            .post(self.url(path))
            .json(body)
            .send()
            .await
            .unwrap()
    }

    /// GETs a path and parses the JSON answer, asserting its status.
    pub async fn get_json(&self, path: &str, status: u16) -> Value {
        let response = self.http.get(self.url(path)).send().await.unwrap();
        assert_eq!(response.status(), status, "GET {path}");
        response.json().await.unwrap()
    }

    /// GETs a path and returns its body as text, whatever its status.
    pub async fn get_text(&self, path: &str) -> String {
        let response = self.http.get(self.url(path)).send().await.unwrap();
        response.text().await.unwrap()
    }

    /// The task `GET /v1/tasks/{id}` shows once its status is final.
    pub async fn final_task(&self, id: &str) -> Value {
        loop {
            let task = self.get_json(&format!("/v1/tasks/{id}"), 200).await;
            if ["done", "failed", "cancelled"].contains(&task["status"].as_str().unwrap()) {
                return task;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The tail of `cauce up`'s log, for failure messages.
    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    fn assert_running(&mut self) {
        let child = self.child.as_mut().unwrap();
        if let Some(status) = child.try_wait().unwrap() {
            self.fail(&format!("cauce up exited early with {status}"));
        }
    }

    fn fail(&self, what: &str) -> ! {
        panic!("{what}; its log ends:\n{}", self.log_tail())
    }

    /// Ctrl-C, then waits for `cauce up` to drain and exit; a second Ctrl-C (which
    /// exits at once) and SIGKILL if it takes too long. Returns whether it exited
    /// cleanly after the first Ctrl-C.
    pub fn stop(&mut self) -> bool {
        let Some(mut child) = self.child.take() else {
            return true;
        };
        let pid = Pid::from_raw(child.id() as i32);
        let _ = kill(pid, Signal::SIGINT);
        if let Some(status) = wait_timeout(&mut child, STOP_GRACE) {
            return status.success();
        }
        eprintln!("cauce up did not stop within {STOP_GRACE:?} of Ctrl-C; pressing it again");
        let _ = kill(pid, Signal::SIGINT);
        if wait_timeout(&mut child, Duration::from_secs(5)).is_none() {
            let _ = child.kill();
            let _ = child.wait();
        }
        false
    }
}

impl Drop for Cauce {
    fn drop(&mut self) {
        let clean = self.stop();
        if std::thread::panicking() || !clean {
            eprintln!(
                "cauce up (home {}) log ends:\n{}",
                self.home.path().display(),
                self.log_tail()
            );
        }
    }
}

fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Copies the child's stdout (logs and the "cauce is up" line) into the log file on a
/// thread, so that the child never blocks on a full pipe, and sends the base URL.
fn forward_stdout(child: &mut Child, log: PathBuf) -> mpsc::Receiver<String> {
    let stdout = child.stdout.take().unwrap();
    let (url_tx, url_rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut out = File::options().append(true).open(log).unwrap();
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(url) = line.strip_prefix(URL_LINE) {
                let _ = url_tx.send(url.trim_end_matches('/').to_string());
            }
            let _ = writeln!(out, "{line}");
        }
    });
    url_rx
}

/// The `data:` payloads of an SSE response, one at a time; comments (keep-alives) and
/// other fields are skipped.
pub struct SseReader {
    response: reqwest::Response,
    // bytes, not text: a chunk may end inside a UTF-8 character
    buffer: Vec<u8>,
}

impl SseReader {
    pub fn new(response: reqwest::Response) -> Self {
        assert_eq!(response.status(), 200);
        let content_type = response.headers()["content-type"].to_str().unwrap();
        assert!(
            content_type.starts_with("text/event-stream"),
            "content-type {content_type}"
        );
        Self {
            response,
            buffer: Vec::new(),
        }
    }

    /// The next event's `event:` name (if any) and data, or `None` at the end.
    pub async fn next_event(&mut self) -> Option<(Option<String>, String)> {
        loop {
            if let Some(end) = self.buffer.windows(2).position(|pair| pair == b"\n\n") {
                let block: Vec<u8> = self.buffer.drain(..end + 2).collect();
                let block = String::from_utf8(block).expect("SSE is UTF-8");
                let mut name = None;
                let mut data = Vec::new();
                for line in block.lines() {
                    if let Some(value) = line.strip_prefix("data:") {
                        data.push(value.strip_prefix(' ').unwrap_or(value).to_string());
                    } else if let Some(value) = line.strip_prefix("event:") {
                        name = Some(value.trim().to_string());
                    }
                }
                if data.is_empty() {
                    continue; // a comment: keep-alive
                }
                return Some((name, data.join("\n")));
            }
            let bytes = self.response.chunk().await.unwrap()?;
            self.buffer.extend_from_slice(&bytes);
        }
    }

    /// The next `data:` payload.
    pub async fn next_data(&mut self) -> Option<String> {
        self.next_event().await.map(|(_, data)| data)
    }

    /// The next `data:` payload, parsed as JSON; panics on `[DONE]` or the end.
    pub async fn next_json(&mut self) -> Value {
        let data = self.next_data().await.expect("another event");
        serde_json::from_str(&data).unwrap_or_else(|err| panic!("{err}: {data}"))
    }
}

/// A chat body with one user message.
pub fn chat_body(question: &str, max_tokens: u32, stream: bool) -> Value {
    serde_json::json!({
        "model": "smollm2-135m-instruct",
        "messages": [{"role": "user", "content": question}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": stream,
    })
}

/// Where test artifacts (screenshots, logs) go: `target/test-artifacts/`.
pub fn artifacts_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../target/test-artifacts")
        .canonicalize()
        .unwrap_or_else(|_| {
            let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/test-artifacts");
            std::fs::create_dir_all(&dir).unwrap();
            dir.canonicalize().unwrap()
        });
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
