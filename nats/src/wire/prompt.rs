//! The prompt job: a chat request with its retrieved passages, ready for a model.

use serde::{Deserialize, Serialize};

use super::{ChatRequest, Wire, encode};
use crate::ids::DocId;

/// Bytes of a NATS message a question leaves for its retrieved passages: the gateway
/// refuses a question larger than the server's `max_payload` minus this, and retrieval
/// drops passages until the prompt job fits `max_payload`, so a job always fits.
pub const PASSAGE_RESERVE_BYTES: usize = 64 * 1024;

/// One retrieved passage that goes into the prompt.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Passage {
    pub doc_id: DocId,
    /// Content hash of the document version the passage was read from.
    pub version: String,
    pub title: String,
    /// Headings above the passage, outermost first.
    #[serde(default)]
    pub heading_path: Vec<String>,
    /// File path or URL, with an anchor where the source has one.
    pub location: String,
    /// Ranking score: BM25's, or with hybrid ranking the fused score (0 to about 1).
    pub score: f32,
    pub text: String,
}

/// What a client is shown of a passage: enough to cite and link it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Source {
    /// The number the prompt cites the passage by, from 1.
    pub number: u32,
    pub doc_id: DocId,
    pub title: String,
    #[serde(default)]
    pub heading_path: Vec<String>,
    pub location: String,
    pub score: f32,
}

impl Passage {
    /// The source a client sees for this passage, numbered as in the prompt.
    pub fn source(&self, number: u32) -> Source {
        Source {
            number,
            doc_id: self.doc_id.clone(),
            title: self.title.clone(),
            heading_path: self.heading_path.clone(),
            location: self.location.clone(),
            score: self.score,
        }
    }
}

/// Published by a retrieval worker to `cauce.prompts.<model>`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PromptJob {
    pub request: ChatRequest,
    /// Best first. The prompt lists them in [`PromptJob::prompt_order`] and numbers
    /// them from 1 in that order.
    #[serde(default)]
    pub passages: Vec<Passage>,
    /// When retrieval finished, in Unix milliseconds.
    pub retrieved_at_ms: u64,
}

impl PromptJob {
    /// The passages in the order the prompt lists them: by document id, then
    /// location, not by rank, so that questions retrieving the same passages share
    /// the prompt's prefix (and its KV in the inference worker's caches) whatever
    /// their ranks. Citation `[n]` is the n-th passage of this order.
    pub fn prompt_order(&self) -> Vec<&Passage> {
        let mut ordered: Vec<&Passage> = self.passages.iter().collect();
        ordered.sort_by(|a, b| {
            (a.doc_id.as_str(), &a.location, &a.text).cmp(&(
                b.doc_id.as_str(),
                &b.location,
                &b.text,
            ))
        });
        ordered
    }

    /// The sources of this job, best first, each numbered as the prompt cites it.
    pub fn sources(&self) -> Vec<Source> {
        let ordered = self.prompt_order();
        self.passages
            .iter()
            .map(|passage| {
                let at = ordered
                    .iter()
                    .position(|p| std::ptr::eq(*p, passage))
                    .unwrap_or_default();
                passage.source(at as u32 + 1)
            })
            .collect()
    }
}

impl PromptJob {
    /// Drops the lowest-ranked passages until the encoded job is at most `max_payload`
    /// bytes; returns how many were dropped. A job without passages that still does not
    /// fit is left as it is (the gateway refuses such questions).
    pub fn fit(&mut self, max_payload: usize) -> usize {
        let mut dropped = 0;
        while !self.passages.is_empty()
            && encode(self).map_or(0, |payload| payload.len()) > max_payload
        {
            self.passages.pop();
            dropped += 1;
        }
        dropped
    }
}

impl Wire for PromptJob {
    const WHAT: &'static str = "prompt job";
}
