//! A 3-node NATS cluster from the example configs in `ops/nats/` (ports moved to free
//! ones, stores in a temporary directory): `apply` with replicas 3, a gateway and one
//! worker of each kind given the URL list alone, and one node killed in the middle of
//! a run of 20 requests. Every request completes.

mod procs;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use async_nats::jetstream;
use cauce_nats::{Limits, names};
use procs::{Proc, chat_body, create_task, free_port, wait_healthy, wait_task};

const NODES: [&str; 3] = ["a", "b", "c"];
const REQUESTS: usize = 20;

struct Node {
    name: String,
    client_port: u16,
    process: Proc,
}

/// Starts the three nodes from `ops/nats/cluster-*.conf`, each port replaced by a
/// free one and each store in `dir`.
fn start_cluster(dir: &Path) -> Vec<Node> {
    let binary = cauce_nats::server::find_binary().unwrap_or_else(|err| panic!("{err}"));
    let configs = Path::new(env!("CARGO_MANIFEST_DIR")).join("nats");
    // the example ports, in the order client, cluster, monitoring, for a, b and c
    let mut ports = Vec::new();
    for (i, _) in NODES.iter().enumerate() {
        for base in [4222, 6222, 8222] {
            ports.push((base + i as u16, free_port()));
        }
    }
    let mut nodes = Vec::new();
    for (i, node) in NODES.iter().enumerate() {
        // the shipped configs require the generated logins; this test is about the
        // cluster (tests/permissions.rs runs the logins), so its clients log in with none
        let mut config = std::fs::read_to_string(configs.join(format!("cluster-{node}.conf")))
            .unwrap()
            .replace("include permissions.conf", "");
        for (example, free) in &ports {
            config = config.replace(
                &format!("127.0.0.1:{example}"),
                &format!("127.0.0.1:{free}"),
            );
        }
        let path = dir.join(format!("cluster-{node}.conf"));
        std::fs::write(&path, config).unwrap();
        let store = dir.join(format!("store-{node}"));
        let log = std::fs::File::create(dir.join(format!("{node}.log"))).unwrap();
        let process = Proc::spawn(
            &format!("nats-server {node}"),
            Command::new(&binary)
                .arg("-c")
                .arg(&path)
                .arg("-sd")
                .arg(&store)
                .stdout(log.try_clone().unwrap())
                .stderr(log),
        );
        nodes.push(Node {
            name: format!("cauce-{node}"),
            client_port: ports[i * 3].1,
            process,
        });
    }
    nodes
}

/// The server that leads the QUESTIONS stream now.
async fn questions_leader(js: &jetstream::Context) -> Option<String> {
    let mut stream = js.get_stream(names::QUESTIONS).await.unwrap();
    stream.info().await.unwrap().cluster.clone()?.leader
}

#[tokio::test(flavor = "multi_thread")]
async fn a_three_node_cluster_loses_a_node_mid_run_and_every_request_completes() {
    let dir = tempfile::tempdir().unwrap();
    let mut nodes = start_cluster(dir.path());
    for node in &mut nodes {
        for _ in 0..200 {
            if cauce_nats::server::answers("127.0.0.1", node.client_port) {
                break;
            }
            node.process.assert_running();
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let urls = nodes
        .iter()
        .map(|n| format!("nats://127.0.0.1:{}", n.client_port))
        .collect::<Vec<_>>()
        .join(",");
    let client = async_nats::ConnectOptions::new()
        .max_reconnects(None)
        .connect(
            cauce_nats::connect::server_addrs(&cauce_nats::connect::split_urls(&urls)).unwrap(),
        )
        .await
        .unwrap();
    let js = jetstream::new(client.clone());
    let limits = Limits {
        replicas: 3,
        retrieval_ack_wait: Duration::from_secs(5),
        inference_ack_wait: Duration::from_secs(5),
        ..Limits::default()
    };
    // the cluster elects its JetStream meta leader first
    let mut ensured = Err(None);
    for _ in 0..120 {
        match cauce_nats::apply(&js, &limits).await {
            Ok(report) => {
                ensured = Ok(report);
                break;
            }
            Err(err) => ensured = Err(Some(err)),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    ensured.unwrap_or_else(|err| panic!("ensure with replicas 3: {err:?}"));
    let questions = js.get_stream(names::QUESTIONS).await.unwrap();
    assert_eq!(questions.cached_info().config.num_replicas, 3);

    let flags = [
        "--replicas",
        "3",
        "--retrieval-ack-wait",
        "5s",
        "--inference-ack-wait",
        "5s",
    ];
    let home = tempfile::tempdir().unwrap();
    let port = free_port();
    let http = reqwest::Client::new();
    let gateway_flags = [&flags[..], &["--publish-timeout", "30s"]].concat();
    let mut gateway = procs::gateway(&urls, "gw-cluster", port, &gateway_flags);
    let mut retrieval = procs::retrieval(&urls, home.path(), &flags);
    let mut inference = procs::inference(&urls, 4, &flags);
    wait_healthy(&http, port).await;

    let mut ids = Vec::new();
    for i in 0..REQUESTS / 2 {
        let body = chat_body(&format!("Request {i}: what is a stream?"), 8);
        ids.push(create_task(&http, port, &body).await);
    }
    let first = wait_task(&http, port, &ids[0]).await;
    assert_eq!(first["status"], "done", "{first}");

    // kill the node that leads QUESTIONS, as a crash would, with work in flight; the
    // gateway retries its writes while the stream elects a new leader, so every
    // request below is accepted (202) without the client retrying anything
    let leader = questions_leader(&js).await.expect("QUESTIONS has a leader");
    let victim = nodes
        .iter_mut()
        .find(|n| n.name == leader)
        .unwrap_or_else(|| panic!("no node named {leader}"));
    eprintln!("killing {leader}");
    victim.process.kill();

    for i in REQUESTS / 2..REQUESTS {
        let body = chat_body(&format!("Request {i}: what is a stream?"), 8);
        ids.push(create_task(&http, port, &body).await);
    }
    for id in &ids {
        let task = wait_task(&http, port, id).await;
        assert_eq!(task["status"], "done", "{task}");
    }
    assert_ne!(questions_leader(&js).await, Some(leader));

    gateway.assert_running();
    inference.stop();
    retrieval.stop();
    gateway.stop();
    for node in nodes.iter_mut() {
        node.process.stop();
    }
}
