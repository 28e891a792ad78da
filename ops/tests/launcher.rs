//! `cauce up` as a launcher, measured from outside: its NATS refuses a client without a
//! login; each child (inference mid-answer, retrieval, ingest, the gateway) is SIGKILLed
//! in turn and comes back, and what a user was doing then still ends; `cauce status`
//! shows the restarts; and a SIGKILL of `cauce up` itself leaves no process and no port
//! behind.
//!
//! The times from each death to the child serving again are printed (`restart:` lines),
//! for the README's figures; nothing here asserts a duration.

mod common;
mod procs;

use std::collections::HashMap;
use std::fs::File;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use cauce_nats::discovery;
use cauce_nats::names::{self, WorkerKind};
use cauce_nats::permissions::Role;
use cauce_nats::wire::{ResultStatus, StoredResult};
use common::SseReader;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use procs::free_port;
use serde_json::{Value, json};

/// Generous bounds that only keep a broken run from hanging.
const PATIENCE: Duration = Duration::from_secs(300);

fn story(stream: bool) -> Value {
    json!({
        "messages": [{"role": "user", "content": "Tell me a long story about a lighthouse keeper and a storm."}],
        "max_tokens": 160,
        "temperature": 1.0,
        "stream": stream,
        "cauce": {"cache": false},
    })
}

/// `cauce up` on free ports with a fresh home and no NATS: it starts its own.
struct Up {
    child: Option<Child>,
    home: tempfile::TempDir,
    nats_port: u16,
    http_port: u16,
    http: reqwest::Client,
}

impl Up {
    fn start() -> Self {
        cauce_nats::server::find_binary()
            .unwrap_or_else(|err| panic!("{err} (./ops/setup installs nats-server)"));
        let home = tempfile::Builder::new()
            .prefix("cauce-up-")
            .tempdir()
            .unwrap();
        let (nats_port, http_port) = (free_port(), free_port());
        let log = File::create(home.path().join("cauce-up.log")).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_cauce"))
            .args(["up", "--nats-url", &format!("nats://127.0.0.1:{nats_port}")])
            .args(["--port", &http_port.to_string(), "--slots", "2"])
            .args(["--rate-limit", "0"])
            .arg("--home")
            .arg(home.path())
            .arg("--model")
            .arg(procs::model_path())
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        Self {
            child: Some(child),
            home,
            nats_port,
            http_port,
            http: reqwest::Client::new(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.http_port)
    }

    fn nats_url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.nats_port)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.home.path().join("cauce-up.log")).unwrap_or_default()
    }

    fn assert_running(&mut self) {
        if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
            panic!("cauce up exited with {status}; its log:\n{}", self.log());
        }
    }

    async fn ready(&mut self) -> bool {
        self.assert_running();
        self.http
            .get(self.url("/readyz"))
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
    }

    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + PATIENCE;
        while !self.ready().await {
            assert!(
                Instant::now() < deadline,
                "never ready; log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The operator, logged in with the password `cauce up` generated in its home.
    async fn operator(&self) -> async_nats::Client {
        let password = std::fs::read_to_string(self.home.path().join("nats-auth/operator"))
            .expect("cauce up keeps the operator's password in its home");
        async_nats::ConnectOptions::new()
            .user_and_password(Role::Operator.user(), password.trim().to_string())
            .connect(self.nats_url())
            .await
            .expect("the operator logs in")
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            if std::thread::panicking() {
                eprintln!("cauce up log:\n{}", self.log());
            }
        }
    }
}

/// Each child's pid (absent while restarting) and restarts, as `cauce up` announces them.
async fn children(client: &async_nats::Client) -> HashMap<String, (Option<u32>, u64)> {
    let found = discovery::discover(client, WorkerKind::Launcher, Duration::from_millis(300))
        .await
        .unwrap();
    let Some(launcher) = found.first() else {
        return HashMap::new();
    };
    let list = launcher
        .stats_data()
        .and_then(|d| d["children"].as_array().cloned());
    list.unwrap_or_default()
        .iter()
        .map(|c| {
            let pid = c["pid"].as_u64().map(|p| p as u32);
            let restarts = c["restarts"].as_u64().unwrap_or(0);
            (c["name"].as_str().unwrap().to_string(), (pid, restarts))
        })
        .collect()
}

async fn pid_of(client: &async_nats::Client, name: &str) -> u32 {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some((Some(pid), _)) = children(client).await.get(name) {
            return *pid;
        }
        assert!(Instant::now() < deadline, "cauce up never announced {name}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until `name` runs again under another pid, with one more restart.
async fn wait_restarted(client: &async_nats::Client, name: &str, old_pid: u32) -> u64 {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some((Some(pid), restarts)) = children(client).await.get(name)
            && *pid != old_pid
        {
            return *restarts;
        }
        assert!(Instant::now() < deadline, "{name} was never restarted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until a worker of `kind` answers on the service API again; prints the time
/// since `killed`.
async fn wait_serving(client: &async_nats::Client, kind: WorkerKind, killed: Instant) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let found = discovery::discover(client, kind, Duration::from_millis(100))
            .await
            .unwrap();
        if !found.is_empty() {
            eprintln!(
                "restart: {kind:?}, death to announcing itself again: {:?}",
                killed.elapsed()
            );
            return;
        }
        assert!(Instant::now() < deadline, "no {kind:?} worker came back");
    }
}

async fn record(results: &jetstream::kv::Store, id: &str) -> Option<StoredResult> {
    let bytes = results.get(id).await.unwrap()?;
    Some(cauce_nats::wire::decode_compressed(&bytes).unwrap())
}

fn sigkill(pid: u32) {
    kill(Pid::from_raw(pid as i32), Signal::SIGKILL).unwrap();
}

/// Whether a process is gone (or a zombie nobody reaped yet: it holds nothing).
fn gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit(')')
            .next()
            .is_some_and(|s| s.trim_start().starts_with('Z')),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn each_child_comes_back_and_nothing_outlives_cauce_up() {
    let mut up = Up::start();
    up.wait_ready().await;

    // closed by default: no login, or a wrong one, is refused
    let refused = async_nats::connect(up.nats_url()).await;
    assert!(refused.is_err(), "a client without a login was let in");
    let wrong = async_nats::ConnectOptions::new()
        .user_and_password(Role::Operator.user(), "guess".into())
        .connect(up.nats_url())
        .await;
    assert!(wrong.is_err(), "a wrong password was let in");
    let client = up.operator().await;
    let js = jetstream::new(client.clone());
    let results = js.get_key_value(names::RESULTS_BUCKET).await.unwrap();

    inference_killed_mid_answer(&mut up, &client, &results).await;
    retrieval_killed(&mut up, &client).await;
    ingest_killed(&mut up, &client).await;
    gateway_killed(&mut up, &client).await;
    status_shows_the_restarts(&up).await;
    launcher_killed(up);
}

async fn inference_killed_mid_answer(
    up: &mut Up,
    client: &async_nats::Client,
    results: &jetstream::kv::Store,
) {
    let pid = pid_of(client, "inference").await;
    let response = up
        .http
        .post(up.url("/v1/chat/completions"))
        .json(&story(true))
        .send()
        .await
        .unwrap();
    let mut stream = SseReader::new(response);
    let (mut pieces, mut id) = (Vec::new(), None);
    while pieces.len() < 20 {
        let chunk = stream.next_json().await;
        id.get_or_insert_with(|| chunk["id"].as_str().unwrap().to_string());
        if let Some(text) = chunk["choices"][0]["delta"]["content"].as_str()
            && !text.is_empty()
        {
            pieces.push(text.to_string());
        }
        assert!(
            chunk["choices"][0]["finish_reason"].is_null(),
            "ended early: {chunk}"
        );
    }
    let before = pieces.concat();
    let killed = Instant::now();
    sigkill(pid);
    wait_serving(client, WorkerKind::Inference, killed).await;
    let restarts = wait_restarted(client, "inference", pid).await;
    assert_eq!(restarts, 1);
    loop {
        let data = stream.next_data().await.expect("the stream goes on");
        if data == "[DONE]" {
            break;
        }
        let chunk: Value = serde_json::from_str(&data).unwrap();
        assert!(chunk.get("error").is_none(), "{chunk}");
        if let Some(text) = chunk["choices"][0]["delta"]["content"].as_str() {
            pieces.push(text.to_string());
        }
    }
    eprintln!(
        "restart: inference, death to the answer ending: {:?}",
        killed.elapsed()
    );
    let shown = pieces.concat();
    let id = id.unwrap();
    let stored = record(results, id.trim_start_matches("chatcmpl-"))
        .await
        .unwrap();
    assert_eq!(stored.status, ResultStatus::Done);
    assert!(stored.attempt >= 2, "the job was redelivered: {stored:?}");
    assert!(shown.starts_with(&before));
    assert_eq!(shown, stored.text, "the client saw the stored answer, once");
    assert!(up.ready().await, "the gateway stayed up");
}

async fn retrieval_killed(up: &mut Up, client: &async_nats::Client) {
    let pid = pid_of(client, "retrieval").await;
    let killed = Instant::now();
    sigkill(pid);
    // asked while the worker is down: it waits in QUESTIONS and is answered once it is back
    let asked = up
        .http
        .post(up.url("/v1/chat/completions"))
        .json(&procs::chat_body("What does cauce up start?", 8))
        .timeout(PATIENCE)
        .send();
    let (response, ()) = tokio::join!(asked, wait_serving(client, WorkerKind::Retrieval, killed));
    let response = response.unwrap();
    assert_eq!(response.status(), 200, "{:?}", response.text().await);
    eprintln!(
        "restart: retrieval, death to a question asked meanwhile answered: {:?}",
        killed.elapsed()
    );
    assert_eq!(wait_restarted(client, "retrieval", pid).await, 1);
}

async fn ingest_killed(up: &mut Up, client: &async_nats::Client) {
    let pid = pid_of(client, "ingest").await;
    let killed = Instant::now();
    sigkill(pid);
    let text = b"# Tide tables\n\nThe harbour of Puerto Quieto floods at the spring tide.\n";
    let id = procs::upload(&up.http, up.http_port, "tides.md", text).await;
    procs::wait_document(&up.http, up.http_port, &id, "indexed").await;
    eprintln!(
        "restart: ingest, death to an upload sent meanwhile indexed: {:?}",
        killed.elapsed()
    );
    assert_eq!(wait_restarted(client, "ingest", pid).await, 1);
}

/// The gateway dies with a stream open: that stream ends without `[DONE]`, and the
/// client picks the whole answer up from the tasks API once the gateway is back (what
/// the chat page does).
async fn gateway_killed(up: &mut Up, client: &async_nats::Client) {
    let pid = pid_of(client, "gateway").await;
    let mut response = up
        .http
        .post(up.url("/v1/chat/completions"))
        .json(&story(true))
        .send()
        .await
        .unwrap();
    let mut seen = Vec::new();
    while !String::from_utf8_lossy(&seen).contains("\"content\":") {
        seen.extend_from_slice(&response.chunk().await.unwrap().expect("more events"));
    }
    let first = String::from_utf8_lossy(&seen).to_string();
    let id = first
        .split("\"id\":\"chatcmpl-")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("the first chunk names the request")
        .to_string();
    let killed = Instant::now();
    sigkill(pid);
    let rest = loop {
        match response.chunk().await {
            Ok(Some(bytes)) => seen.extend_from_slice(&bytes),
            Ok(None) | Err(_) => break String::from_utf8_lossy(&seen).to_string(),
        }
    };
    assert!(!rest.contains("[DONE]"), "the stream was cut, not finished");
    up.wait_ready().await;
    eprintln!(
        "restart: gateway, death to /readyz answering again: {:?}",
        killed.elapsed()
    );
    assert_eq!(wait_restarted(client, "gateway", pid).await, 1);
    let task = procs::wait_task(&up.http, up.http_port, &id).await;
    assert_eq!(task["status"], "done", "{task}");
    let text = task["result"]["choices"][0]["message"]["content"]
        .as_str()
        .unwrap();
    assert!(!text.is_empty(), "the whole answer is there: {task}");
}

async fn status_shows_the_restarts(up: &Up) {
    let output = Command::new(env!("CARGO_BIN_EXE_cauce"))
        .args(["status", "--json", "--nats-url", &up.nats_url()])
        .env("CAUCE_HOME", up.home.path())
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let snapshot: Value = serde_json::from_slice(&output.stdout).unwrap();
    let children = snapshot["launchers"][0]["children"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for name in ["gateway", "retrieval", "inference", "ingest"] {
        let child = children.iter().find(|c| c["name"] == name);
        let child = child.unwrap_or_else(|| panic!("status shows no {name}: {snapshot}"));
        assert_eq!(child["restarts"], 1, "{child}");
        assert!(
            child["last_exit"].as_str().unwrap().contains("SIGKILL"),
            "{child}"
        );
    }
}

fn launcher_killed(mut up: Up) {
    let launcher = up.child.take().unwrap();
    let listed = Command::new("pgrep")
        .args(["-P", &launcher.id().to_string()])
        .output()
        .unwrap();
    let pids: Vec<u32> = String::from_utf8_lossy(&listed.stdout)
        .lines()
        .filter_map(|line| line.trim().parse().ok())
        .collect();
    assert_eq!(pids.len(), 5, "nats-server and four children: {pids:?}");
    let mut launcher = launcher;
    launcher.kill().unwrap();
    launcher.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !pids.iter().all(|pid| gone(*pid)) {
        assert!(Instant::now() < deadline, "left behind: {pids:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    for port in [up.http_port, up.nats_port] {
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpListener::bind(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "port {port} is still taken");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
