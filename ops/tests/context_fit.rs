//! Passages fitted into the model's context in its own tokens: a short question asking
//! for 32 passages of a corpus where 40 documents match gets as many whole passages as
//! a 1,024-token context holds beside the answer, never `context_overflow`, and the
//! prompt the model read fills that room closely (an estimate by bytes would leave
//! most of it empty).

mod procs;

use std::time::Duration;

use async_nats::jetstream;
use cauce_nats::testkit::NatsServer;
use cauce_nats::wire::{self, ModelCard};
use cauce_nats::{Limits, ModelName, names};
use procs::{free_port, wait_healthy};
use serde_json::{Value, json};

const CONTEXT: u32 = 1024;
const MAX_TOKENS: u32 = 8;
/// Tokens one passage of the corpus takes at most, with its citation line.
const LARGEST_PASSAGE_TOKENS: usize = 450;

/// 40 notes that all match the question, about 300 words each.
fn write_corpus(dir: &std::path::Path) {
    let filler = [
        "river", "basin", "sediment", "channel", "delta", "current", "estuary", "flood", "terrace",
        "meander", "gravel", "levee",
    ];
    for n in 0..40 {
        let mut text = format!("# Zebrafish lantern note {n}\n\n");
        for i in 0..300 {
            if i % 25 == 0 {
                text.push_str("zebrafish lantern ");
            }
            text.push_str(filler[(i * 7 + n) % filler.len()]);
            text.push_str(if i % 12 == 11 { ". " } else { " " });
        }
        std::fs::write(dir.join(format!("note-{n:02}.md")), text).unwrap();
    }
}

async fn post(http: &reqwest::Client, port: u16, path: &str, body: &Value) -> (u16, Value) {
    let response = http
        .post(format!("http://127.0.0.1:{port}{path}"))
        .json(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

async fn wait_for_card(js: &jetstream::Context) -> ModelCard {
    let kv = js.get_key_value(names::CACHE_BUCKET).await.unwrap();
    for _ in 0..600 {
        if let Ok(Some(value)) = kv
            .get(names::model_card_key(&ModelName::default_model()))
            .await
        {
            return wire::decode(&value).unwrap();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the inference worker never published its model card");
}

#[tokio::test(flavor = "multi_thread")]
async fn thirty_two_passages_are_fitted_whole_into_a_small_context() {
    let server = NatsServer::start().unwrap_or_else(|err| panic!("{err}"));
    let url = server.url();
    let js = jetstream::new(server.client().await);
    cauce_nats::apply(&js, &Limits::default()).await.unwrap();
    let corpus = tempfile::tempdir().unwrap();
    write_corpus(corpus.path());
    let ingested = procs::cauce(&url, &["ingest", "--id-prefix", "zf"])
        .arg(corpus.path())
        .status()
        .unwrap();
    assert!(ingested.success());

    let http = reqwest::Client::new();
    let port = free_port();
    let _gateway = procs::gateway(&url, "gw-fit", port, &["--rate-limit", "0"]);
    let home = tempfile::tempdir().unwrap();
    let _retrieval = procs::retrieval(&url, home.path(), &[]);
    let _inference = procs::inference_with_context(&url, 1, CONTEXT, &[]);
    wait_healthy(&http, port).await;
    let card = wait_for_card(&js).await;
    assert_eq!(card.context_tokens, CONTEXT);
    assert!(card.file.ends_with(".gguf"), "{card:?}");

    // every note is indexed before the question
    let query = json!({"query": "zebrafish lantern", "top_k": 32});
    let mut indexed = 0;
    for _ in 0..300 {
        let (status, body) = post(&http, port, "/v1/search", &query).await;
        indexed = body["results"].as_array().map_or(0, Vec::len);
        if status == 200 && indexed == 32 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(indexed, 32, "the search sees 32 matching notes");

    let mut body = procs::chat_body("What is a zebrafish lantern?", MAX_TOKENS);
    body["cauce"] = json!({"top_k": 32});
    let (status, answer) = post(&http, port, "/v1/chat/completions", &body).await;
    assert_eq!(status, 200, "{answer}");
    let sources = answer["cauce"]["sources"].as_array().unwrap().len();
    let prompt_tokens = answer["usage"]["prompt_tokens"].as_u64().unwrap() as usize;
    let limit = (CONTEXT - MAX_TOKENS - 1) as usize;
    assert!(
        (1..32).contains(&sources),
        "some passages, not all 32: {sources}"
    );
    assert!(prompt_tokens <= limit, "{prompt_tokens} > {limit}");
    assert!(
        prompt_tokens > limit - LARGEST_PASSAGE_TOKENS,
        "the prompt ({prompt_tokens} tokens, {sources} sources) leaves room for another passage: not counted in the model's tokens?"
    );

    // a longer answer: at most a quarter of the context is kept for it
    body["max_tokens"] = json!(300);
    let (status, answer) = post(&http, port, "/v1/chat/completions", &body).await;
    assert_eq!(status, 200, "{answer}");
    let prompt_tokens = answer["usage"]["prompt_tokens"].as_u64().unwrap() as usize;
    let fewer = answer["cauce"]["sources"].as_array().unwrap().len();
    assert!(
        prompt_tokens <= (CONTEXT - CONTEXT / 4 - 1) as usize,
        "{prompt_tokens}"
    );
    assert!(
        fewer < sources,
        "{fewer} sources with room for 256 answer tokens, {sources} with 8"
    );
}
