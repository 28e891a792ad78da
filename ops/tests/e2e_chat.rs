//! The chat API end to end through plain HTTP against `cauce up`: real nats-server,
//! retrieval worker over the bundled docs, inference worker with the real model.
//!
//! The model is tiny, so nothing here checks its wording: the tests check the shapes
//! OpenAI clients rely on, that the sources come from the right document, that what a
//! client saw is what was stored, and that cancelling frees the model.

mod common;

use cauce_nats::wire::{StoredResult, decode_compressed};
use cauce_nats::{RequestId, names};
use common::{Cauce, SseReader, chat_body};
use serde_json::{Value, json};

/// Only `docs/operations.md`, section "The local index", says where the index lives
/// and what `meta.json` holds.
const INDEX_QUESTION: &str =
    "Where does a retrieval worker keep its local index, and what is stored in meta.json?";
const INDEX_DOC: &str = "guide-operations";
/// The end of the source's location (its start is where the corpus was read from).
const INDEX_LOCATION: &str = "operations.md#the-local-index";

/// A question the tiny model answers at length; retrieval off keeps the prompt short.
fn long_answer(max_tokens: u32, stream: bool) -> Value {
    let mut body = chat_body(
        "Write a very long story about a dragon who learns to cook. Make it as long as you can.",
        max_tokens,
        stream,
    );
    body["cauce"] = json!({"retrieval": false});
    body
}

fn request_id(response: &reqwest::Response) -> String {
    response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_string()
}

fn assert_index_doc_first(sources: &Value) {
    let sources = sources.as_array().expect("sources is an array");
    assert!(!sources.is_empty(), "no sources");
    let first = &sources[0];
    // best first, numbered as the prompt lists the passages (by document)
    let number = first["number"].as_u64().unwrap();
    assert!((1..=sources.len() as u64).contains(&number), "{sources:#?}");
    assert_eq!(first["doc_id"], INDEX_DOC, "sources: {sources:#?}");
    let location = first["location"].as_str().unwrap();
    assert!(location.ends_with(INDEX_LOCATION), "sources: {sources:#?}");
}

/// What identifies each source (scores may print with another precision).
fn cited(sources: &Value) -> Vec<(Value, Value, Value)> {
    sources
        .as_array()
        .unwrap()
        .iter()
        .map(|source| {
            (
                source["number"].clone(),
                source["doc_id"].clone(),
                source["location"].clone(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_streamed_answer_has_openai_chunks_sources_first_and_is_what_was_stored() {
    let cauce = Cauce::start(2).await;
    let mut body = chat_body(INDEX_QUESTION, 12, true);
    body["stream_options"] = json!({"include_usage": true});
    let response = cauce.post("/v1/chat/completions", &body).await;
    let request_id = request_id(&response);
    let mut stream = SseReader::new(response);

    // the role chunk
    let first = stream.next_json().await;
    assert_eq!(first["object"], "chat.completion.chunk");
    assert_eq!(first["id"], format!("chatcmpl-{request_id}"));
    assert_eq!(first["model"], "smollm2-135m-instruct");
    assert!(first["created"].as_u64().unwrap() > 0);
    assert_eq!(
        first["choices"],
        json!([{"index": 0, "delta": {"role": "assistant", "content": ""},
                "logprobs": null, "finish_reason": null}])
    );
    assert_eq!(first["usage"], Value::Null, "usage is null until the end");
    assert_eq!(first["cauce"]["request_id"], request_id.as_str());

    // then sources, content deltas and the finish reason; sources before any token
    let mut sources = None;
    let mut text = String::new();
    let mut deltas = 0;
    let finish = loop {
        let chunk = stream.next_json().await;
        assert_eq!(chunk["object"], "chat.completion.chunk");
        assert_eq!(chunk["id"], first["id"]);
        assert_eq!(chunk["created"], first["created"]);
        assert_eq!(chunk["model"], first["model"]);
        assert_eq!(chunk["usage"], Value::Null);
        let choices = chunk["choices"].as_array().unwrap();
        assert_eq!(choices.len(), 1, "{chunk}");
        let choice = &choices[0];
        assert_eq!(choice["index"], 0);
        assert!(choice["delta"].get("role").is_none(), "role only once");
        if let Some(found) = chunk["cauce"].get("sources") {
            assert!(sources.is_none(), "sources sent twice");
            assert_eq!(deltas, 0, "sources arrive before the first token");
            assert_eq!(choice["delta"], json!({}));
            sources = Some(found.clone());
            continue;
        }
        if let Some(reason) = choice["finish_reason"].as_str() {
            assert_eq!(choice["delta"], json!({}));
            break reason.to_string();
        }
        assert_eq!(choice["finish_reason"], Value::Null);
        let content = choice["delta"]["content"]
            .as_str()
            .expect("a content delta");
        text.push_str(content);
        deltas += 1;
    };
    assert!(["stop", "length"].contains(&finish.as_str()), "{finish}");
    assert!(deltas > 0, "no content arrived");
    let sources = sources.expect("a sources chunk");
    assert_index_doc_first(&sources);

    // the usage chunk, [DONE], and nothing after it
    let usage_chunk = stream.next_json().await;
    assert_eq!(usage_chunk["id"], first["id"]);
    assert_eq!(usage_chunk["choices"], json!([]));
    let usage = &usage_chunk["usage"];
    let completion_tokens = usage["completion_tokens"].as_u64().unwrap();
    let prompt_tokens = usage["prompt_tokens"].as_u64().unwrap();
    assert!((1..=12).contains(&completion_tokens), "{usage}");
    assert!(prompt_tokens > 0);
    assert_eq!(
        usage["total_tokens"].as_u64().unwrap(),
        prompt_tokens + completion_tokens
    );
    let cached = usage["prompt_tokens_details"]["cached_tokens"].as_u64();
    assert!(cached.is_some_and(|c| c < prompt_tokens), "{usage}");
    if finish == "length" {
        assert_eq!(completion_tokens, 12);
    }
    assert_eq!(stream.next_data().await.as_deref(), Some("[DONE]"));
    assert_eq!(
        stream.next_data().await,
        None,
        "the stream ends after [DONE]"
    );

    // what the client saw is what the tasks API and the results bucket hold
    let task = cauce.final_task(&request_id).await;
    assert_eq!(task["status"], "done");
    let result = &task["result"];
    assert_eq!(result["choices"][0]["message"]["content"], text.as_str());
    assert_eq!(result["choices"][0]["finish_reason"], finish.as_str());
    assert_eq!(result["usage"], *usage);
    assert_eq!(cited(&result["cauce"]["sources"]), cited(&sources));

    let js = async_nats::jetstream::new(cauce.nats_client().await);
    let results = js.get_key_value(names::RESULTS_BUCKET).await.unwrap();
    let id = RequestId::parse(&request_id).unwrap();
    let key = names::request_key(&id);
    let stored = results.get(key).await.unwrap().expect("a stored result");
    let stored: StoredResult = decode_compressed(&stored).unwrap();
    assert_eq!(stored.text, text);
    assert_eq!(u64::from(stored.usage.completion_tokens), completion_tokens);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_whole_answer_is_one_completion_with_usage_and_sources() {
    let cauce = Cauce::start(2).await;
    let response = cauce
        .post(
            "/v1/chat/completions",
            &chat_body(INDEX_QUESTION, 12, false),
        )
        .await;
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    let request_id = request_id(&response);
    let completion: Value = response.json().await.unwrap();
    assert_eq!(completion["object"], "chat.completion");
    assert_eq!(completion["id"], format!("chatcmpl-{request_id}"));
    assert_eq!(completion["model"], "smollm2-135m-instruct");
    let choices = completion["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 1);
    assert_eq!(choices[0]["index"], 0);
    assert_eq!(choices[0]["message"]["role"], "assistant");
    let text = choices[0]["message"]["content"].as_str().unwrap();
    assert!(!text.is_empty());
    assert!(["stop", "length"].contains(&choices[0]["finish_reason"].as_str().unwrap()));
    let usage = &completion["usage"];
    assert!((1..=12).contains(&usage["completion_tokens"].as_u64().unwrap()));
    assert_eq!(
        usage["total_tokens"].as_u64().unwrap(),
        usage["prompt_tokens"].as_u64().unwrap() + usage["completion_tokens"].as_u64().unwrap()
    );
    assert_index_doc_first(&completion["cauce"]["sources"]);

    let task = cauce.final_task(&request_id).await;
    assert_eq!(task["status"], "done");
    assert_eq!(task["result"]["choices"][0]["message"]["content"], text);
    assert_eq!(task["result"]["usage"], *usage);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_disconnects_mid_stream_frees_the_worker_s_only_slot() {
    let cauce = Cauce::start(1).await;
    const LONG: u64 = 1500;

    // the only slot is busy with a long answer
    let response = cauce
        .post("/v1/chat/completions", &long_answer(LONG as u32, true))
        .await;
    let dropped_id = request_id(&response);
    let mut stream = SseReader::new(response);
    loop {
        let chunk = stream.next_json().await;
        if chunk["choices"][0]["delta"]["content"]
            .as_str()
            .is_some_and(|content| !content.is_empty())
        {
            break;
        }
    }

    // a second request waits in the queue for that slot
    let waiting = {
        let http = cauce.http.clone();
        let url = cauce.url("/v1/chat/completions");
        tokio::spawn(async move {
            http.post(url)
                .json(&chat_body("Say hello.", 6, false))
                .send()
                .await
                .unwrap()
        })
    };
    loop {
        let task = cauce
            .get_json(&format!("/v1/tasks/{dropped_id}"), 200)
            .await;
        if task["status"] == "running" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }

    // the client goes away; the gateway cancels, the slot frees, the queued one runs
    drop(stream);
    let response = waiting.await.unwrap();
    assert_eq!(response.status(), 200);
    let completion: Value = response.json().await.unwrap();
    assert_eq!(completion["object"], "chat.completion");
    assert!(
        !completion["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .is_empty()
    );

    let dropped = cauce.final_task(&dropped_id).await;
    assert_eq!(dropped["status"], "cancelled", "{dropped:#}");
    let generated = dropped["result"]["usage"]["completion_tokens"]
        .as_u64()
        .unwrap_or(0);
    assert!(
        generated < LONG,
        "the dropped request ran to its end ({generated} tokens)"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_task_is_accepted_at_once_answered_later_and_cancelled_on_delete() {
    let cauce = Cauce::start(1).await;

    // asked now, collected later
    let response = cauce
        .post("/v1/tasks", &chat_body(INDEX_QUESTION, 8, false))
        .await;
    assert_eq!(response.status(), 202);
    let task: Value = response.json().await.unwrap();
    assert_eq!(task["object"], "task");
    assert!(["queued", "running", "done"].contains(&task["status"].as_str().unwrap()));
    let id = task["id"].as_str().unwrap().to_string();
    let done = cauce.final_task(&id).await;
    assert_eq!(done["status"], "done", "{done:#}");
    assert_eq!(done["error"], Value::Null);
    assert!(done["finished"].as_u64().unwrap() >= done["created"].as_u64().unwrap());
    let result = &done["result"];
    assert_eq!(result["object"], "chat.completion");
    assert_eq!(result["id"], format!("chatcmpl-{id}"));
    assert!(
        !result["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .is_empty()
    );
    assert_index_doc_first(&result["cauce"]["sources"]);

    // the events of a finished task: its final state at once
    let response = cauce
        .http
        .get(cauce.url(&format!("/v1/tasks/{id}/events")))
        .send()
        .await
        .unwrap();
    let mut events = SseReader::new(response);
    let (name, data) = events.next_event().await.unwrap();
    assert_eq!(name.as_deref(), Some("done"));
    let event: Value = serde_json::from_str(&data).unwrap();
    assert_eq!(event, done);
    assert_eq!(events.next_event().await, None);

    // a long task, deleted while it runs
    let response = cauce.post("/v1/tasks", &long_answer(1500, false)).await;
    assert_eq!(response.status(), 202);
    let task: Value = response.json().await.unwrap();
    let id = task["id"].as_str().unwrap().to_string();
    let response = cauce
        .http
        .get(cauce.url(&format!("/v1/tasks/{id}/events")))
        .send()
        .await
        .unwrap();
    let mut events = SseReader::new(response);
    loop {
        let (name, _) = events.next_event().await.expect("events until a delta");
        if name.as_deref() == Some("delta") {
            break;
        }
    }
    let response = cauce
        .http
        .delete(cauce.url(&format!("/v1/tasks/{id}")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let cancelled = cauce.final_task(&id).await;
    assert_eq!(cancelled["status"], "cancelled", "{cancelled:#}");
    assert!(
        cancelled["result"]["usage"]["completion_tokens"]
            .as_u64()
            .unwrap_or(0)
            < 1500
    );
    // the events stream follows the task to its end
    loop {
        match events.next_event().await {
            Some((name, _)) if name.as_deref() == Some("delta") => {}
            Some((name, data)) => {
                assert_eq!(name.as_deref(), Some("done"), "{data}");
                let last: Value = serde_json::from_str(&data).unwrap();
                assert_eq!(last["status"], "cancelled");
                break;
            }
            None => panic!("the events stream ended without its final event"),
        }
    }

    // an unknown task
    let missing = cauce.get_json("/v1/tasks/NoSuchTask0000000000", 404).await;
    assert_eq!(missing["error"]["code"], "not_found", "{missing}");
}
