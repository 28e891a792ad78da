//! `cauce up` with no NATS running: it starts nats-server, sets up every stream and
//! bucket, and on Ctrl-C (SIGINT) stops everything, the server it started included.

use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

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
    let url = format!("nats://127.0.0.1:{port}");
    let model = cauce_inference::installed_model_path();
    assert!(
        model.is_file(),
        "the model is missing at {}; run ./ops/setup",
        model.display()
    );
    let mut up = Command::new(env!("CARGO_BIN_EXE_cauce"))
        .args([
            "up",
            "--nats-url",
            &url,
            "--port",
            &free_port().to_string(),
            "--slots",
            "1",
        ])
        .arg("--home")
        .arg(home.path())
        .arg("--model")
        .arg(&model)
        .stdin(Stdio::null())
        .spawn()
        .unwrap();

    let deadline = Instant::now() + Duration::from_secs(60);
    let streams = loop {
        assert!(
            Instant::now() < deadline,
            "cauce up did not set up the streams"
        );
        assert!(up.try_wait().unwrap().is_none(), "cauce up exited early");
        if let Ok(client) = async_nats::connect(&url).await {
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

    kill(Pid::from_raw(up.id() as i32), Signal::SIGINT).unwrap();
    let status = up.wait().unwrap();
    assert!(status.success(), "cauce up exited with {status}");
    assert!(
        !cauce_nats::server::answers("127.0.0.1", port),
        "the nats-server that cauce up started is still running"
    );
}
