//! Fitting passages into the model's context, counted in the model's own tokens.
//!
//! Before the sources are sent, the worker drops the lowest-ranked passages until the
//! whole prompt ([`PromptCounter`]: template, system message with its sources,
//! conversation) leaves room for the answer in the context the model's card
//! declares. The room kept is the request's `max_tokens`, or [`DEFAULT_ANSWER_ROOM`]
//! without one, and never more than a quarter of the context. So a short question
//! never fails with `context_overflow` because of what retrieval added, at any
//! `top_k`; a conversation that is too long by itself still does.
//!
//! Without a card (no inference worker of the model has announced itself yet) or a
//! counter, passages are kept while their text totals at most
//! [`FALLBACK_PASSAGE_BYTES`] (the best one always), which fits the default context
//! but promises nothing.

use cauce_nats::PromptCounter;
use cauce_nats::wire::{ModelCard, PromptJob};

/// Tokens kept for the answer of a request without `max_tokens`.
pub const DEFAULT_ANSWER_ROOM: u32 = 512;
/// Bytes of passage text a prompt carries when its model's context is unknown.
pub const FALLBACK_PASSAGE_BYTES: usize = 6000;

/// What fitting did to a job.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Fitted {
    /// Passages dropped.
    pub dropped: usize,
    /// Tokens of the prompt as fitted, when it was counted.
    pub prompt_tokens: Option<usize>,
}

/// The most tokens a prompt may have in a context of `context_tokens`, leaving room
/// for an answer of `max_tokens`.
pub fn prompt_limit(context_tokens: u32, max_tokens: Option<u32>) -> usize {
    let room = max_tokens
        .unwrap_or(DEFAULT_ANSWER_ROOM)
        .clamp(1, (context_tokens / 4).max(1));
    // the engine needs one position past the prompt to generate
    context_tokens.saturating_sub(room + 1) as usize
}

/// Keeps the longest run of best passages whose prompt fits (see the module doc).
pub fn fit(
    job: &mut PromptJob,
    card: Option<&ModelCard>,
    counter: Option<&dyn PromptCounter>,
) -> Fitted {
    let (Some(card), Some(counter)) = (card, counter) else {
        return fit_bytes(job);
    };
    let limit = prompt_limit(card.context_tokens, job.request.sampling.max_tokens);
    let passages = std::mem::take(&mut job.passages);
    let mut count = |n: usize| {
        job.passages = passages[..n].to_vec();
        counter.prompt_tokens(card, job)
    };
    let all = passages.len();
    let tokens = count(all);
    if tokens <= limit || all == 0 {
        return Fitted {
            dropped: 0,
            prompt_tokens: Some(tokens),
        };
    }
    // a prompt grows with each passage: search for the most that fit
    let (mut fits, mut overflows) = (0, all);
    while overflows - fits > 1 {
        let middle = (fits + overflows) / 2;
        if count(middle) <= limit {
            fits = middle;
        } else {
            overflows = middle;
        }
    }
    let tokens = count(fits);
    Fitted {
        dropped: all - fits,
        prompt_tokens: Some(tokens),
    }
}

fn fit_bytes(job: &mut PromptJob) -> Fitted {
    let mut total = 0;
    let keep = job
        .passages
        .iter()
        .take_while(|p| {
            total += p.text.len();
            total <= FALLBACK_PASSAGE_BYTES
        })
        .count()
        // the best passage, whole, whatever its size
        .max(job.passages.len().min(1));
    let dropped = job.passages.len() - keep;
    job.passages.truncate(keep);
    Fitted {
        dropped,
        prompt_tokens: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cauce_nats::wire::{ChatMessage, ChatRequest, Passage, RetrievalOptions, Role, Sampling};
    use cauce_nats::{DocId, GatewayId, ModelName, RequestId};

    /// A prompt of one token per byte of passage text plus 100.
    #[derive(Debug)]
    struct Bytes;

    impl PromptCounter for Bytes {
        fn prompt_tokens(&self, _: &ModelCard, job: &PromptJob) -> usize {
            100 + job.passages.iter().map(|p| p.text.len()).sum::<usize>()
        }
    }

    fn job(passages: usize, max_tokens: Option<u32>) -> PromptJob {
        let passage = |i: usize| Passage {
            doc_id: DocId::parse(format!("d{i}")).unwrap(),
            version: "v".into(),
            title: "t".into(),
            heading_path: vec![],
            location: "l".into(),
            score: 1.0,
            text: "x".repeat(100),
        };
        PromptJob {
            request: ChatRequest {
                id: RequestId::generate(),
                gateway: GatewayId::parse("gw").unwrap(),
                model: ModelName::default_model(),
                messages: vec![ChatMessage {
                    role: Role::User,
                    content: "q".into(),
                }],
                sampling: Sampling {
                    max_tokens,
                    ..Sampling::default()
                },
                retrieval: RetrievalOptions::default(),
                created_at_ms: 0,
                deadline_ms: 0,
                replay_of: None,
            },
            passages: (0..passages).map(passage).collect(),
            retrieved_at_ms: 0,
        }
    }

    fn card(context_tokens: u32) -> ModelCard {
        ModelCard {
            fingerprint: "f".into(),
            context_tokens,
            file: "m.gguf".into(),
        }
    }

    #[test]
    fn the_best_passages_that_leave_room_for_the_answer_are_kept_whole() {
        // 1000 tokens of context, 100 for the answer and 1 to generate: 899 for the prompt
        let mut fitted = job(32, Some(100));
        let out = fit(&mut fitted, Some(&card(1000)), Some(&Bytes));
        assert_eq!(fitted.passages.len(), 7, "{out:?}");
        assert_eq!(out.dropped, 25);
        assert_eq!(out.prompt_tokens, Some(800));
        assert_eq!(fitted.passages[6].doc_id.as_str(), "d6");
        assert!(fitted.passages.iter().all(|p| p.text.len() == 100));
    }

    #[test]
    fn a_prompt_that_fits_is_counted_once_and_left_alone() {
        let mut fitted = job(4, None);
        let out = fit(&mut fitted, Some(&card(2048)), Some(&Bytes));
        assert_eq!(out.dropped, 0);
        assert_eq!(out.prompt_tokens, Some(500));
        assert_eq!(fitted.passages.len(), 4);
    }

    #[test]
    fn the_answer_room_is_at_most_a_quarter_of_the_context() {
        assert_eq!(prompt_limit(2048, None), 2048 - 512 - 1);
        assert_eq!(prompt_limit(2048, Some(1)), 2046);
        assert_eq!(prompt_limit(2048, Some(100_000)), 2048 - 512 - 1);
        assert_eq!(prompt_limit(1024, None), 1024 - 256 - 1);
    }

    #[test]
    fn without_a_card_passages_fit_a_byte_budget() {
        let mut fitted = job(100, None);
        let out = fit(&mut fitted, None, Some(&Bytes));
        assert_eq!(fitted.passages.len(), FALLBACK_PASSAGE_BYTES / 100);
        assert_eq!(out.prompt_tokens, None);
    }
}
