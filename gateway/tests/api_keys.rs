//! API keys from a file are reloaded without a restart (on change and on SIGHUP), and
//! `/metrics` can be kept behind the keys.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

/// The status of a chat request with `key` (400: the key passed, the body did not).
async fn status_with(h: &Harness, key: &str) -> u16 {
    h.http
        .post(h.url("/v1/chat/completions"))
        .bearer_auth(key)
        .json(&json!({"messages": []}))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn a_changed_keys_file_is_read_again_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("keys");
    std::fs::write(&file, "# the class of 2026\nsk-first\n").unwrap();
    let mut config = config("gw-keys1");
    config.api_keys_file = Some(file.clone());
    let h = start(config).await;
    assert_eq!(status_with(&h, "sk-first").await, 400);
    assert_eq!(status_with(&h, "sk-second").await, 401);

    // keep the file's time distinct from the first write's
    tokio::time::sleep(Duration::from_millis(1100)).await;
    std::fs::write(&file, "sk-second\n").unwrap();
    let mut statuses = (0, 0);
    for _ in 0..100 {
        statuses = (
            status_with(&h, "sk-first").await,
            status_with(&h, "sk-second").await,
        );
        if statuses == (401, 400) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(statuses, (401, 400), "the new file replaced the old keys");
}

#[tokio::test]
async fn metrics_can_need_a_key() {
    let mut config = config("gw-keys2");
    config.api_keys = vec!["sk-ops".into()];
    config.metrics_need_key = true;
    let h = start(config).await;
    let without = h.http.get(h.url("/metrics")).send().await.unwrap();
    assert_eq!(without.status(), 401);
    let with = h
        .http
        .get(h.url("/metrics"))
        .bearer_auth("sk-ops")
        .send()
        .await
        .unwrap();
    assert_eq!(with.status(), 200);

    let open = start(self::config("gw-keys3")).await;
    let response = open.http.get(open.url("/metrics")).send().await.unwrap();
    assert_eq!(response.status(), 200, "without keys metrics stay open");
}
