//! The final prompts cauce builds, for another server: each question's passages from a
//! cauce gateway's `POST /v1/search`, laid out by cauce's own prompt code into the
//! system message an inference worker would see. Sent to llama-server, they make it
//! decode the very prompts cauce decodes (its chat template is the same GGUF's).

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{Context, bail};

use cauce_nats::wire::{Passage, PromptJob, Sampling};
use cauce_nats::{DocId, GatewayId, ModelName};
use serde_json::{Value, json};

use super::worker::one_question;

/// Passages per question, as a chat request's default.
const TOP_K: u32 = 4;

/// The system message (instruction and passages) cauce puts before each question.
pub async fn system_messages(
    client: &reqwest::Client,
    cauce_url: &str,
    questions: &[String],
) -> anyhow::Result<HashMap<String, String>> {
    let mut systems = HashMap::new();
    for question in questions {
        if systems.contains_key(question) {
            continue;
        }
        let passages = search(client, cauce_url, question).await?;
        let job = job(question, passages);
        let system = cauce_inference::prompt::messages(&job)
            .into_iter()
            .find(|m| m.role == "system")
            .map(|m| m.content)
            .unwrap_or_default();
        systems.insert(question.clone(), system);
    }
    Ok(systems)
}

async fn search(
    client: &reqwest::Client,
    cauce_url: &str,
    question: &str,
) -> anyhow::Result<Vec<Passage>> {
    let url = format!("{cauce_url}/v1/search");
    let response = client
        .post(&url)
        .json(&json!({"query": question, "top_k": TOP_K}))
        .send()
        .await
        .with_context(|| format!("POST {url}"))?;
    if !response.status().is_success() {
        bail!("POST {url}: {}", response.status());
    }
    let body: Value = response.json().await?;
    let results = body["results"].as_array().cloned().unwrap_or_default();
    results.iter().map(passage).collect()
}

fn passage(hit: &Value) -> anyhow::Result<Passage> {
    let text = |key: &str| hit[key].as_str().unwrap_or_default().to_string();
    Ok(Passage {
        doc_id: DocId::parse(text("doc_id"))?,
        version: String::new(),
        title: text("title"),
        heading_path: serde_json::from_value(hit["heading_path"].clone()).unwrap_or_default(),
        location: text("location"),
        score: hit["score"].as_f64().unwrap_or_default() as f32,
        text: text("text"),
    })
}

fn job(question: &str, passages: Vec<Passage>) -> PromptJob {
    let gateway = GatewayId::parse("bench").expect("a valid id");
    let model = ModelName::default_model();
    let mut job = one_question(
        &gateway,
        &model,
        question.to_string(),
        Sampling::default(),
        Duration::ZERO,
    );
    job.passages = passages;
    job
}
