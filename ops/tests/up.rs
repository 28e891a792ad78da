//! `cauce up` with no NATS running and a fresh home: it starts nats-server, sets up
//! every stream and bucket, ingests the bundled docs and answers from them, and on
//! Ctrl-C (SIGINT) stops everything, the server it started included.

use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Kills `cauce up` if the test fails before it is stopped, so nothing outlives a run.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = kill(Pid::from_raw(self.0.id() as i32), Signal::SIGINT);
            std::thread::sleep(Duration::from_secs(5));
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn up_starts_nats_sets_up_streams_and_stops_it_on_ctrl_c() {
    cauce_nats::server::find_binary().unwrap_or_else(|err| panic!("{err}"));
    let home = tempfile::tempdir().unwrap();
    let port = free_port();
    let http_port = free_port();
    let url = format!("nats://127.0.0.1:{port}");
    let model = cauce_inference::installed_model().unwrap_or_else(|err| panic!("{err}"));
    let mut up = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_cauce"))
            .args([
                "up",
                "--nats-url",
                &url,
                "--port",
                &http_port.to_string(),
                "--slots",
                "1",
            ])
            .arg("--home")
            .arg(home.path())
            .arg("--model")
            .arg(&model)
            .stdin(Stdio::null())
            .spawn()
            .unwrap(),
    );

    let deadline = Instant::now() + Duration::from_secs(60);
    let streams = loop {
        assert!(
            Instant::now() < deadline,
            "cauce up did not set up the streams"
        );
        assert!(up.0.try_wait().unwrap().is_none(), "cauce up exited early");
        let password = std::fs::read_to_string(home.path().join("nats-auth/operator"));
        let login = async_nats::ConnectOptions::new()
            .user_and_password("cauce-operator".into(), password.unwrap_or_default());
        if let Ok(client) = login.connect(&url).await {
            let js = jetstream::new(client);
            let mut names = Vec::new();
            for name in [
                "QUESTIONS",
                "PROMPTS",
                "DOCS",
                "KV_cauce-results",
                "KV_cauce-cache",
            ] {
                if js.get_stream(name).await.is_ok() {
                    names.push(name);
                }
            }
            if names.len() == 5 {
                break names;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(streams.len(), 5);
    assert!(
        home.path().join("nats").is_dir(),
        "the NATS store is in the cauce home"
    );

    // the chat answers from the bundled docs, citing the page that holds the fact
    let http = reqwest::Client::new();
    let chat_url = format!("http://127.0.0.1:{http_port}/v1/chat/completions");
    let body = serde_json::json!({
        "model": "smollm2-135m-instruct",
        "max_tokens": 16,
        "temperature": 0,
        "messages": [{"role": "user", "content": "What does the --duplicate-window flag set, and what is its default?"}],
    });
    // generous bounds: they only keep a broken run from hanging, they time nothing
    let ready_by = Instant::now() + Duration::from_secs(180);
    let ready_url = format!("http://127.0.0.1:{http_port}/readyz");
    while !http
        .get(&ready_url)
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
    {
        assert!(Instant::now() < ready_by, "cauce up never became ready");
        assert!(up.0.try_wait().unwrap().is_none(), "cauce up exited early");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let response = http
        .post(&chat_url)
        .json(&body)
        .timeout(Duration::from_secs(600))
        .send()
        .await
        .expect("cauce up answers");
    assert!(response.status().is_success(), "{response:?}");
    let answer: serde_json::Value = response.json().await.unwrap();
    let text = answer["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or_default();
    assert!(!text.is_empty(), "{answer}");
    let sources = answer["cauce"]["sources"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        sources.iter().any(|s| s["location"]
            .as_str()
            .is_some_and(|l| l.contains("configuration.md"))),
        "the configuration page is cited: {answer}"
    );

    kill(Pid::from_raw(up.0.id() as i32), Signal::SIGINT).unwrap();
    let status = up.0.wait().unwrap();
    assert!(status.success(), "cauce up exited with {status}");
    assert!(
        !cauce_nats::server::answers("127.0.0.1", port),
        "the nats-server that cauce up started is still running"
    );
    let leftovers = std::process::Command::new("pgrep")
        .args(["-P", &up.0.id().to_string()])
        .output()
        .unwrap();
    assert!(
        leftovers.stdout.is_empty(),
        "child processes left behind: {leftovers:?}"
    );
}
