//! The questions a benchmark asks: a built-in set about the bundled corpus (`docs/`),
//! or one prompt per line of a file.

use std::path::Path;

use anyhow::{Context, bail};

/// Questions whose answers are in the bundled docs, so that retrieval has work to do.
const BUILT_IN: &[&str] = &[
    "What is cauce and what does it do?",
    "How does one question flow through the gateway, retrieval and inference?",
    "Why does cauce put a queue between the gateway and the workers?",
    "How do I add another inference worker on a second machine?",
    "How do I run more than one gateway?",
    "How does cauce use a 3-node NATS cluster?",
    "Which streams and buckets does cauce create in JetStream?",
    "How long are accepted questions kept for replay?",
    "How do I configure the home directory and the NATS URL?",
    "How are documents ingested into the DOCS stream?",
    "What happens when an inference worker dies in the middle of an answer?",
    "How do I stop cauce cleanly?",
    "How do I follow a request through the logs?",
    "What does the tasks API return for a finished request?",
    "Which errors can the HTTP API return, and what do their bodies look like?",
    "How are sources cited in an answer?",
    "How does the retrieval worker keep its local index up to date?",
    "What metrics does cauce export, and where?",
    "How do I stream a chat completion with curl?",
    "How do I watch the workers that are running?",
    "How does cauce decide that a job is a dead letter?",
    "What is the corpus and how can I change it?",
    "How do I turn retrieval off for one request?",
    "How does cauce avoid answering the same redelivered job twice?",
];

/// A paragraph every worker-mode prompt carries, so that prompts are about as long as
/// llama-batched-bench's (`-npp 128`) once the chat template is applied.
const WORKER_CONTEXT: &str = "cauce is a retrieval-augmented chat service built as a message-queue \
pipeline on NATS JetStream. Browsers and OpenAI-style clients talk HTTP to a gateway; everything \
behind the gateway talks NATS. A retrieval worker searches a local tantivy index for the question, \
fits the best passages into a context budget and publishes a prompt job. An inference worker pulls \
prompt jobs only while it has a free sequence slot, decodes all running sequences together and \
publishes token deltas to the reply subject of each request.";

/// The built-in question set.
pub fn built_in() -> Vec<String> {
    BUILT_IN.iter().map(|q| (*q).to_string()).collect()
}

/// One prompt per non-empty line of `path`.
pub fn from_file(path: &Path) -> anyhow::Result<Vec<String>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading prompts from {}", path.display()))?;
    let prompts: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .map(str::to_string)
        .collect();
    if prompts.is_empty() {
        bail!("{} holds no prompt", path.display());
    }
    Ok(prompts)
}

/// `prompts` in an order shuffled with `seed`: the same seed gives the same order, so
/// that runs against different servers see the students arrive alike.
pub fn shuffled(mut prompts: Vec<String>, seed: u64) -> Vec<String> {
    // xorshift64*, enough to deal a question set
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = || {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        state.wrapping_mul(0x2545_F491_4F6C_DD1D)
    };
    for i in (1..prompts.len()).rev() {
        let j = (next() % (i as u64 + 1)) as usize;
        prompts.swap(i, j);
    }
    prompts
}

/// A long-answer prompt for the worker mode. The number at the start makes every
/// prompt distinct from its first token, so no slot reuses a cached prefix.
pub fn worker_prompt(number: u64, question: &str) -> String {
    format!(
        "Request {number}. Read this text.\n\n{WORKER_CONTEXT}\n\nWrite a long and detailed \
         answer, with examples: {question}"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_prompts_differ_from_the_first_words() {
        let a = worker_prompt(1, "q");
        let b = worker_prompt(2, "q");
        assert_ne!(a.split_whitespace().nth(1), b.split_whitespace().nth(1));
    }

    #[test]
    fn a_shuffle_is_a_fixed_permutation_of_its_seed() {
        let questions: Vec<String> = (0..20).map(|n| n.to_string()).collect();
        let once = shuffled(questions.clone(), 7);
        assert_eq!(once, shuffled(questions.clone(), 7));
        assert_ne!(once, questions);
        assert_ne!(once, shuffled(questions.clone(), 8));
        let mut sorted = once.clone();
        sorted.sort_by_key(|n| n.parse::<u32>().unwrap());
        assert_eq!(sorted, questions);
    }

    #[test]
    fn a_prompts_file_skips_blank_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.txt");
        std::fs::write(&path, "one\n\n  two  \n").unwrap();
        assert_eq!(from_file(&path).unwrap(), ["one", "two"]);
    }
}
