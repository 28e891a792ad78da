//! API keys from a file are reloaded without a restart (on change and on SIGHUP); keys
//! fail closed (a keys file emptied or removed keeps the keys read before, one empty
//! from the start lets no one in); `/metrics` is behind the keys unless made public.

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
async fn metrics_need_a_key_once_keys_are_configured() {
    let mut config = config("gw-keys2");
    config.api_keys = vec!["sk-ops".into()];
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

    let mut public = self::config("gw-keys4");
    public.api_keys = vec!["sk-ops".into()];
    public.metrics_public = true;
    let public = start(public).await;
    let response = public
        .http
        .get(public.url("/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "--metrics-public opens them");
}

/// The status of `GET /v1/models` with no key.
async fn models_without_key(h: &Harness) -> u16 {
    let response = h.http.get(h.url("/v1/models")).send().await.unwrap();
    response.status().as_u16()
}

#[tokio::test]
async fn keys_fail_closed_when_the_file_is_emptied_or_removed() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("keys");
    std::fs::write(&file, "sk-first\n").unwrap();
    let mut config = config("gw-keys5");
    config.api_keys_file = Some(file.clone());
    let h = start(config).await;
    assert_eq!(models_without_key(&h).await, 401);

    tokio::time::sleep(Duration::from_millis(1100)).await;
    std::fs::write(&file, "# nobody\n").unwrap();
    // give the reload a few rounds to happen; it must change nothing
    tokio::time::sleep(Duration::from_millis(4500)).await;
    assert_eq!(
        models_without_key(&h).await,
        401,
        "an emptied file opens nothing"
    );
    assert_eq!(
        status_with(&h, "sk-first").await,
        400,
        "the keys read before stay"
    );
    std::fs::remove_file(&file).unwrap();
    tokio::time::sleep(Duration::from_millis(4500)).await;
    assert_eq!(
        models_without_key(&h).await,
        401,
        "a removed file opens nothing"
    );
    assert_eq!(status_with(&h, "sk-first").await, 400);

    let empty = dir.path().join("empty");
    std::fs::write(&empty, "").unwrap();
    let mut config = self::config("gw-keys6");
    config.api_keys_file = Some(empty);
    let h = start(config).await;
    assert_eq!(
        models_without_key(&h).await,
        401,
        "an empty file from the start opens nothing"
    );
}
