//! Helpers for the operator tests (replay, scale-out, cluster): `cauce` components as
//! child processes that are killed (by pid) when dropped, free ports, and the tasks API.

#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Value, json};

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn model_path() -> PathBuf {
    cauce_inference::installed_model().unwrap_or_else(|err| panic!("{err}"))
}

/// A child process, interrupted and then killed when dropped.
pub struct Proc {
    pub name: String,
    child: Option<Child>,
}

impl Proc {
    pub fn spawn(name: &str, command: &mut Command) -> Self {
        let child = command
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|err| panic!("starting {name}: {err}"));
        Self {
            name: name.into(),
            child: Some(child),
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Kills it at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGINT, then SIGKILL if it has not exited after a while.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGINT);
        for _ in 0..100 {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    pub fn assert_running(&mut self) {
        if let Some(child) = self.child.as_mut() {
            assert!(
                child.try_wait().unwrap().is_none(),
                "{} exited early",
                self.name
            );
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `cauce <args>` against the NATS at `url`.
pub fn cauce(url: &str, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_cauce"));
    command.args(args).args(["--nats-url", url]);
    command
}

pub fn gateway(url: &str, id: &str, port: u16, extra: &[&str]) -> Proc {
    Proc::spawn(
        &format!("gateway {id}"),
        cauce(
            url,
            &["gateway", "--gateway-id", id, "--port", &port.to_string()],
        )
        .args(extra),
    )
}

pub fn retrieval(url: &str, home: &Path, extra: &[&str]) -> Proc {
    Proc::spawn(
        "retrieval",
        cauce(url, &["retrieval"])
            .arg("--home")
            .arg(home)
            .args(extra),
    )
}

pub fn inference(url: &str, slots: u32, extra: &[&str]) -> Proc {
    inference_with_context(url, slots, 1024, extra)
}

/// An inference worker whose slots hold `ctx_size` tokens each.
pub fn inference_with_context(url: &str, slots: u32, ctx_size: u32, extra: &[&str]) -> Proc {
    Proc::spawn(
        "inference",
        cauce(
            url,
            &[
                "inference",
                "--slots",
                &slots.to_string(),
                "--ctx-size",
                &ctx_size.to_string(),
            ],
        )
        .arg("--model")
        .arg(model_path())
        .args(extra),
    )
}

/// Waits until the gateway on `port` answers `/healthz`.
pub async fn wait_healthy(http: &reqwest::Client, port: u16) {
    for _ in 0..600 {
        if let Ok(response) = http
            .get(format!("http://127.0.0.1:{port}/healthz"))
            .send()
            .await
            && response.status().is_success()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the gateway on port {port} never answered /healthz");
}

/// A chat body with deterministic sampling.
pub fn chat_body(question: &str, max_tokens: u32) -> Value {
    json!({
        "messages": [{"role": "user", "content": question}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "seed": 7,
    })
}

/// `POST /v1/tasks`; returns the task id.
pub async fn create_task(http: &reqwest::Client, port: u16, body: &Value) -> String {
    let response = http
        .post(format!("http://127.0.0.1:{port}/v1/tasks"))
        .json(body)
        .send()
        .await
        .unwrap();
    let status = response.status();
    let task: Value = response.json().await.unwrap();
    assert_eq!(status.as_u16(), 202, "{task}");
    task["id"].as_str().unwrap().to_string()
}

/// `GET /v1/tasks/{id}` until its status is final; returns the task.
pub async fn wait_task(http: &reqwest::Client, port: u16, id: &str) -> Value {
    let mut last = Value::Null;
    for _ in 0..3000 {
        let response = http
            .get(format!("http://127.0.0.1:{port}/v1/tasks/{id}"))
            .send()
            .await
            .unwrap();
        last = response.json().await.unwrap();
        if matches!(
            last["status"].as_str(),
            Some("done" | "failed" | "cancelled")
        ) {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("task {id} never ended: {last}");
}

/// `POST /v1/documents` with one file (no key); returns the document's id.
pub async fn upload(http: &reqwest::Client, port: u16, name: &str, bytes: &[u8]) -> String {
    let file = reqwest::multipart::Part::bytes(bytes.to_vec()).file_name(name.to_string());
    let response = http
        .post(format!("http://127.0.0.1:{port}/v1/documents"))
        .multipart(reqwest::multipart::Form::new().part("file", file))
        .send()
        .await
        .unwrap();
    let status = response.status();
    let accepted: Value = response.json().await.unwrap();
    assert_eq!(status.as_u16(), 202, "{accepted}");
    accepted["data"][0]["id"].as_str().unwrap().to_string()
}

/// The status of `GET /v1/documents/{id}` and the document's state.
pub async fn document_state(http: &reqwest::Client, port: u16, id: &str) -> (u16, String) {
    let response = http
        .get(format!("http://127.0.0.1:{port}/v1/documents/{id}"))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let doc: Value = response.json().await.unwrap_or(Value::Null);
    (
        status,
        doc["state"].as_str().unwrap_or_default().to_string(),
    )
}

/// Waits until the document's state is `want` (`gone`: answered 404).
pub async fn wait_document(http: &reqwest::Client, port: u16, id: &str, want: &str) {
    let mut last = (0, String::new());
    for _ in 0..600 {
        last = document_state(http, port, id).await;
        if last.1 == want || (want == "gone" && last.0 == 404) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("document {id} never became {want}: {last:?}");
}
