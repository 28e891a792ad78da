//! The final prompts cauce builds, for another server: each question's passages from a
//! cauce gateway's `POST /v1/search`, laid out by cauce's own prompt code into the
//! system message an inference worker would see. Sent to llama-server, they make it
//! decode the very prompts cauce decodes (its chat template is the same GGUF's).

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};

use cauce_nats::wire::{Passage, PromptJob, Sampling};
use cauce_nats::{DocId, GatewayId, ModelName};
use serde_json::{Value, json};

use super::worker::one_question;

/// Passages per question, as a chat request's default.
const TOP_K: u32 = 4;

/// The job cauce's gateway would send for each question: its passages from
/// `/v1/search`, before prompt layout.
pub async fn final_jobs(
    client: &reqwest::Client,
    cauce_url: &str,
    questions: &[String],
) -> anyhow::Result<HashMap<String, PromptJob>> {
    let mut jobs = HashMap::new();
    for question in questions {
        if jobs.contains_key(question) {
            continue;
        }
        let passages = search(client, cauce_url, question).await?;
        jobs.insert(question.clone(), job(question, passages));
    }
    Ok(jobs)
}

/// The system message (instruction and passages) cauce puts before each question.
pub fn system_messages(jobs: &HashMap<String, PromptJob>) -> HashMap<String, String> {
    let system = |job: &PromptJob| {
        cauce_inference::prompt::messages(job)
            .into_iter()
            .find(|m| m.role == "system")
            .map(|m| m.content)
            .unwrap_or_default()
    };
    (jobs.iter())
        .map(|(q, job)| (q.clone(), system(job)))
        .collect()
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

/// [`shared_prefix_share`] of `questions` as asked, each in its whole prompt: in the
/// tokens of the GGUF file `tokenizer` when given (what servers report cached), else
/// in characters of the system message and question.
pub fn prefix_ceiling(
    questions: &[String],
    jobs: &HashMap<String, PromptJob>,
    tokenizer: Option<&Path>,
) -> anyhow::Result<f64> {
    let asked: Vec<&String> = (questions.iter())
        .filter(|q| jobs.contains_key(*q))
        .collect();
    let (share, unit) = match tokenizer {
        Some(path) => {
            let asked: Vec<PromptJob> = asked.iter().map(|q| jobs[*q].clone()).collect();
            let tokens = cauce_inference::vocab::prompt_token_ids(path, &asked)
                .with_context(|| format!("counting the prompts in {}'s tokens", path.display()))?;
            (shared_prefix_share(&tokens), "tokens")
        }
        None => {
            let systems = system_messages(jobs);
            let text = |q: &&String| format!("{}\n{q}", systems[*q]).chars().collect();
            let texts: Vec<Vec<char>> = asked.iter().map(text).collect();
            (shared_prefix_share(&texts), "characters")
        }
    };
    eprintln!(
        "bench: an exact prefix cache can serve at most {:.1}% of these prompts' {unit}",
        100.0 * share
    );
    Ok(share)
}

/// The share of `prompts` (in the order they are asked) that an exact prefix cache
/// could at best serve: for each prompt, the longest start it has in common with any
/// earlier one, over all their length. No server can report more of a prompt cached
/// than this without reusing KV outside a shared prefix.
pub fn shared_prefix_share<T: PartialEq>(prompts: &[Vec<T>]) -> f64 {
    let mut shared = 0usize;
    let mut total = 0usize;
    for (at, prompt) in prompts.iter().enumerate() {
        let longest = prompts[..at]
            .iter()
            .map(|earlier| common_start(prompt, earlier))
            .max()
            .unwrap_or_default();
        shared += longest;
        total += prompt.len();
    }
    shared as f64 / total.max(1) as f64
}

fn common_start<T: PartialEq>(a: &[T], b: &[T]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_share_counts_each_prompts_longest_start_in_common_with_an_earlier_one() {
        let prompts = ["abcd", "abxy", "abcz", "qrst"].map(|p| p.chars().collect::<Vec<_>>());
        // 0 + 2 ("ab") + 3 ("abc" with the first) + 0, over 16 characters
        assert_eq!(shared_prefix_share(&prompts), 5.0 / 16.0);
        assert_eq!(shared_prefix_share::<char>(&[]), 0.0);
    }
}
