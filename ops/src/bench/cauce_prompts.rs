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

/// [`shared_prefix_share`] of `questions` as asked, each after its system message.
pub fn prefix_ceiling(questions: &[String], systems: &HashMap<String, String>) -> f64 {
    let asked: Vec<String> = (questions.iter())
        .map(|q| format!("{}\n{q}", systems.get(q).map_or("", String::as_str)))
        .collect();
    let share = shared_prefix_share(&asked);
    eprintln!(
        "bench: an exact prefix cache can serve at most {:.1}% of these prompts",
        100.0 * share
    );
    share
}

/// The share of `prompts` (system message, then question, in the order they are asked)
/// that an exact prefix cache could at best serve: for each prompt, the longest start
/// it has in common with any earlier one, over all their characters. No server can
/// report more cached prompt than this without reusing KV outside a shared prefix.
pub fn shared_prefix_share(prompts: &[String]) -> f64 {
    let mut shared = 0usize;
    let mut total = 0usize;
    for (at, prompt) in prompts.iter().enumerate() {
        let longest = prompts[..at]
            .iter()
            .map(|earlier| common_start(prompt, earlier))
            .max()
            .unwrap_or_default();
        shared += longest;
        total += prompt.chars().count();
    }
    shared as f64 / total.max(1) as f64
}

fn common_start(a: &str, b: &str) -> usize {
    a.chars().zip(b.chars()).take_while(|(x, y)| x == y).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_share_counts_each_prompts_longest_start_in_common_with_an_earlier_one() {
        let prompts = ["abcd", "abxy", "abcz", "qrst"].map(String::from);
        // 0 + 2 ("ab") + 3 ("abc" with the first) + 0, over 16 characters
        assert_eq!(shared_prefix_share(&prompts), 5.0 / 16.0);
        assert_eq!(shared_prefix_share(&[]), 0.0);
    }
}
