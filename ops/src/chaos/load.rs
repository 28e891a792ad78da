//! The load of a chaos run and how each request ended, as its client saw it.

use std::time::Duration;

use futures::StreamExt;
use serde::Serialize;
use serde_json::{Value, json};
use tokio::time::Instant;

/// How one streamed request ended.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "end", rename_all = "snake_case")]
pub enum StreamEnd {
    /// `data: [DONE]` after the answer.
    Done,
    /// An error event: the request ended, and the client was told why.
    Error { code: String },
    /// The stream stopped with neither: the client was left not knowing.
    Cut { reason: String },
    /// Not accepted (a 4xx or 5xx before the stream began).
    Refused { status: u16 },
}

/// How one task ended, as `GET /v1/tasks/{id}` says.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "end", rename_all = "snake_case")]
pub enum TaskEnd {
    Done,
    Failed {
        code: String,
    },
    Cancelled,
    /// Accepted and never reached an end within the settle time.
    Lost {
        last_status: String,
    },
    Refused {
        status: u16,
    },
}

/// A chat body: a short answer, a fresh seed so the response cache never answers, one
/// retrieved passage (retrieval runs, prompts stay short on a CPU).
pub fn body(index: usize, max_tokens: u32, stream: bool) -> Value {
    let topics = [
        "What is a retrieval worker?",
        "How does cauce survive a worker crash?",
        "What does the gateway do?",
        "How do I scale out cauce?",
    ];
    json!({
        "stream": stream,
        "max_tokens": max_tokens,
        "temperature": 0.7,
        "seed": 1_000_000 + index,
        "messages": [{"role": "user", "content": format!("{} ({index})", topics[index % topics.len()])}],
        "cauce": {"top_k": 1},
    })
}

/// A poison request: valid for the gateway, impossible for every worker (its prompt
/// is longer than any sequence's context), so it must end `failed` with that reason.
pub fn poison(index: usize, stream: bool) -> Value {
    let long = "lighthouse keeper ".repeat(1500);
    json!({
        "stream": stream,
        "max_tokens": 8,
        "seed": 2_000_000 + index,
        "messages": [{"role": "user", "content": long}],
        "cauce": {"retrieval": false},
    })
}

/// The error code a poison request must end with.
pub const POISON_CODE: &str = "context_overflow";

/// Sends one streamed request and reads it to its end.
pub async fn stream_one(client: &reqwest::Client, base: &str, body: Value) -> StreamEnd {
    let response = match client
        .post(format!("{base}/v1/chat/completions"))
        .json(&body)
        .send()
        .await
    {
        Ok(response) => response,
        Err(err) => {
            return StreamEnd::Cut {
                reason: err.to_string(),
            };
        }
    };
    if !response.status().is_success() {
        return StreamEnd::Refused {
            status: response.status().as_u16(),
        };
    }
    let mut bytes = response.bytes_stream();
    let mut text = String::new();
    while let Some(chunk) = bytes.next().await {
        match chunk {
            Ok(chunk) => text.push_str(&String::from_utf8_lossy(&chunk)),
            Err(err) => {
                return StreamEnd::Cut {
                    reason: err.to_string(),
                };
            }
        }
        if let Some(end) = ending(&text) {
            return end;
        }
    }
    ending(&text).unwrap_or(StreamEnd::Cut {
        reason: "the stream closed without [DONE] or an error event".into(),
    })
}

/// The end of an SSE body read so far, if it has one.
fn ending(text: &str) -> Option<StreamEnd> {
    for line in text.lines() {
        let Some(data) = line.strip_prefix("data:").map(str::trim) else {
            continue;
        };
        if data == "[DONE]" {
            return Some(StreamEnd::Done);
        }
        if let Ok(value) = serde_json::from_str::<Value>(data)
            && let Some(error) = value.get("error")
        {
            let code = error["code"].as_str().unwrap_or("unknown").to_string();
            return Some(StreamEnd::Error { code });
        }
    }
    None
}

/// Creates a task; its id once accepted.
pub async fn submit_task(
    client: &reqwest::Client,
    base: &str,
    body: Value,
) -> Result<String, TaskEnd> {
    let response = client
        .post(format!("{base}/v1/tasks"))
        .json(&body)
        .send()
        .await
        .map_err(|_| TaskEnd::Refused { status: 0 })?;
    let status = response.status().as_u16();
    if status != 202 {
        return Err(TaskEnd::Refused { status });
    }
    let task: Value = response
        .json()
        .await
        .map_err(|_| TaskEnd::Refused { status })?;
    task["id"]
        .as_str()
        .map(String::from)
        .ok_or(TaskEnd::Refused { status })
}

/// Polls a task until it ends or `deadline` passes.
pub async fn settle_task(
    client: &reqwest::Client,
    base: &str,
    id: &str,
    deadline: Instant,
) -> TaskEnd {
    let mut last_status = "unknown".to_string();
    loop {
        let read = client
            .get(format!("{base}/v1/tasks/{id}"))
            .timeout(Duration::from_secs(10))
            .send()
            .await;
        if let Ok(response) = read
            && let Ok(task) = response.json::<Value>().await
            && let Some(status) = task["status"].as_str()
        {
            last_status = status.to_string();
            match status {
                "done" => return TaskEnd::Done,
                "cancelled" => return TaskEnd::Cancelled,
                "failed" => {
                    let code = task["error"]["code"].as_str().unwrap_or("unknown");
                    return TaskEnd::Failed { code: code.into() };
                }
                _ => {}
            }
        }
        if Instant::now() >= deadline {
            return TaskEnd::Lost { last_status };
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_ends_with_done_an_error_or_is_cut() {
        let done = "data: {\"choices\":[]}\n\ndata: [DONE]\n\n";
        assert_eq!(ending(done), Some(StreamEnd::Done));
        let error = "data: {\"error\":{\"code\":\"deliveries_exhausted\"}}\n\n";
        assert_eq!(
            ending(error),
            Some(StreamEnd::Error {
                code: "deliveries_exhausted".into()
            })
        );
        assert_eq!(ending("data: {\"choices\":[]}\n\n"), None);
    }
}
