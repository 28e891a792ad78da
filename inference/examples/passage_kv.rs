//! An experiment, not a feature: what answers lose when each retrieved passage's KV is
//! computed on its own (after the system message alone) and the passages are then
//! placed side by side by shifting their positions, as a cache reusing passages at any
//! position would have to. cauce reuses exact prefixes only; this measures the other
//! way for the decision.
//!
//! ```sh
//! cargo run -p cauce-inference --example passage_kv -- JOBS.jsonl [MODEL.gguf]
//! ```
//!
//! Each line of JOBS.jsonl is `{"question": "...", "passages": [Passage, …]}` (as
//! `ops/eval-passage-kv` writes it). For each, the prompt is rendered as the engine
//! renders it and cut into its start, one piece per passage and its end; every way sees
//! the same tokens (it counts the prompts whose pieces are, joined, the engine's tokens).
//! It prints, per question and in all: whether the greedy answers (32 tokens) are the
//! same, how many first tokens agree, and the mean negative log-likelihood of the
//! whole-prompt answer under each way. The whole prompt is also decoded in the
//! engine's 512-token steps instead of piece by piece: how far the figures move with
//! how batches are cut alone (the noise floor).

use std::num::NonZeroU32;
use std::path::PathBuf;

use anyhow::{Context, bail};
use cauce_inference::prompt;
use cauce_nats::wire::{
    ChatMessage, ChatRequest, Passage, PromptJob, RetrievalOptions, Role, Sampling,
};
use cauce_nats::{GatewayId, ModelName, RequestId};
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::token::LlamaToken;

const ANSWER_TOKENS: usize = 32;
const BATCH: usize = 512;
/// The sequence a prompt is built in, and the one a passage is computed in.
const TARGET: i32 = 0;
const SCRATCH: i32 = 1;

struct Line {
    question: String,
    passages: Vec<Passage>,
}

impl Line {
    fn parse(line: &str) -> anyhow::Result<Self> {
        let value: serde_json::Value = serde_json::from_str(line)?;
        Ok(Self {
            question: value["question"].as_str().unwrap_or_default().to_string(),
            passages: serde_json::from_value(value["passages"].clone())?,
        })
    }
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let jobs = args
        .next()
        .context("usage: passage_kv JOBS.jsonl [MODEL.gguf]")?;
    let model_path = args
        .next()
        .map(PathBuf::from)
        .unwrap_or_else(cauce_inference::config::installed_model_path);
    llama_cpp_2::send_logs_to_tracing(llama_cpp_2::LogOptions::default().with_logs_enabled(false));
    let backend = LlamaBackend::init()?;
    let model = LlamaModel::load_from_file(&backend, &model_path, &LlamaModelParams::default())?;
    let params = LlamaContextParams::default()
        .with_n_ctx(NonZeroU32::new(8192))
        .with_n_batch(BATCH as u32)
        .with_n_ubatch(BATCH as u32)
        .with_n_seq_max(2)
        .with_kv_unified(true);
    let mut ctx = model.new_context(&backend, params)?;
    let mut totals = Totals::default();
    for line in std::fs::read_to_string(&jobs)?.lines() {
        let line = Line::parse(line)?;
        let (pieces, engine_tokens) = pieces(&model, &job(&line))?;
        let whole = answer(&mut ctx, &pieces, Way::Whole, None)?;
        let apart = answer(&mut ctx, &pieces, Way::Apart, None)?;
        let apart_nll = answer(&mut ctx, &pieces, Way::Apart, Some(&whole.tokens))?.nll;
        let one_go = answer(&mut ctx, &pieces, Way::InSteps, None)?;
        let one_go_nll = answer(&mut ctx, &pieces, Way::InSteps, Some(&whole.tokens))?.nll;
        let agree = agreeing(&whole.tokens, &apart.tokens);
        let floor = agreeing(&whole.tokens, &one_go.tokens);
        println!(
            "{agree:>2}/{ANSWER_TOKENS} same apart ({floor:>2} in steps)  nll whole {:.3} \
             in steps {one_go_nll:.3} apart {apart_nll:.3}  {}",
            whole.nll, line.question
        );
        totals.add(
            agree,
            floor,
            [whole.nll, one_go_nll, apart_nll],
            engine_tokens,
        );
    }
    totals.print();
    Ok(())
}

fn agreeing(a: &[LlamaToken], b: &[LlamaToken]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

#[derive(Default)]
struct Totals {
    questions: usize,
    same_answers: usize,
    first_token_same: usize,
    agreeing_tokens: usize,
    same_in_steps: usize,
    agreeing_in_steps: usize,
    engine_tokens: usize,
    /// Summed mean NLLs of the whole-prompt answer: whole, in steps, apart.
    nll: [f64; 3],
}

impl Totals {
    fn add(&mut self, agree: usize, floor: usize, nll: [f64; 3], engine_tokens: bool) {
        self.questions += 1;
        self.same_answers += usize::from(agree == ANSWER_TOKENS);
        self.same_in_steps += usize::from(floor == ANSWER_TOKENS);
        self.agreeing_in_steps += floor;
        self.first_token_same += usize::from(agree > 0);
        self.agreeing_tokens += agree;
        self.engine_tokens += usize::from(engine_tokens);
        for (sum, value) in self.nll.iter_mut().zip(nll) {
            *sum += value;
        }
    }

    fn print(&self) {
        let n = self.questions.max(1) as f64;
        println!(
            "questions {} ({} cut into pieces that join into the engine's tokens): \
             passages apart give the same greedy answer for {} (the whole prompt in the \
             engine's steps: {}), the same first token for {}, tokens agreeing before the \
             first difference {:.1} of {ANSWER_TOKENS} on average (in steps: {:.1}); mean \
             NLL of the whole-prompt answer: whole {:.3}, in steps {:.3}, passages apart {:.3}",
            self.questions,
            self.engine_tokens,
            self.same_answers,
            self.same_in_steps,
            self.first_token_same,
            self.agreeing_tokens as f64 / n,
            self.agreeing_in_steps as f64 / n,
            self.nll[0] / n,
            self.nll[1] / n,
            self.nll[2] / n,
        );
    }
}

fn job(line: &Line) -> PromptJob {
    PromptJob {
        request: ChatRequest {
            id: RequestId::generate(),
            gateway: GatewayId::parse("experiment").expect("a valid id"),
            model: ModelName::default_model(),
            messages: vec![ChatMessage {
                role: Role::User,
                content: line.question.clone(),
            }],
            sampling: Sampling::default(),
            retrieval: RetrievalOptions::default(),
            created_at_ms: 0,
            deadline_ms: 0,
            replay_of: None,
        },
        passages: line.passages.clone(),
        retrieved_at_ms: 0,
    }
}

/// The prompt in tokens, cut into its start (template header and instruction), one
/// piece per passage, and its end (the question and the answer's header).
struct Pieces {
    start: Vec<LlamaToken>,
    passages: Vec<Vec<LlamaToken>>,
    end: Vec<LlamaToken>,
}

/// The prompt's pieces, and whether they join into the tokens the engine prefills.
fn pieces(model: &LlamaModel, job: &PromptJob) -> anyhow::Result<(Pieces, bool)> {
    let template = prompt::template(model)?;
    let text = prompt::text(model, &template, job)?;
    let mut cuts = Vec::new();
    for number in 1..=job.passages.len() {
        let marker = format!("\n\n[{number}] ");
        let at = text[cuts.last().copied().unwrap_or(0)..]
            .find(&marker)
            .map(|at| at + cuts.last().copied().unwrap_or(0))
            .with_context(|| format!("source [{number}] not found in the prompt"))?;
        cuts.push(at);
    }
    let Some(&last) = cuts.last() else {
        bail!("a job without passages");
    };
    let end = text[last..]
        .find("<|im_end|>")
        .context("no end of the system message")?
        + last;
    cuts.push(end);
    let vocab = model.vocab();
    let tokens = |s: &str, first: bool| vocab.tokenize(s.as_bytes(), first, true);
    let pieces = Pieces {
        start: tokens(&text[..cuts[0]], true),
        passages: (cuts.windows(2))
            .map(|w| tokens(&text[w[0]..w[1]], false))
            .collect(),
        end: tokens(&text[end..], false),
    };
    let same = pieces.joined() == prompt::tokens(model, &template, job)?;
    Ok((pieces, same))
}

impl Pieces {
    fn joined(&self) -> Vec<LlamaToken> {
        [&self.start]
            .into_iter()
            .chain(&self.passages)
            .chain([&self.end])
            .flatten()
            .copied()
            .collect()
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Way {
    /// Every token after all before it, one piece at a time.
    Whole,
    /// The same, the whole prompt decoded in 512-token steps as the engine does, not
    /// piece by piece: how much the answers move with how batches are cut alone.
    InSteps,
    /// Each passage after the start alone, then moved to its place.
    Apart,
}

struct Answer {
    tokens: Vec<LlamaToken>,
    /// Mean negative log-likelihood of the answer's tokens.
    nll: f64,
}

/// The greedy answer after the prompt built `way`, or with `forced` the likelihood of
/// that answer instead.
fn answer(
    ctx: &mut LlamaContext<'_>,
    pieces: &Pieces,
    way: Way,
    forced: Option<&[LlamaToken]>,
) -> anyhow::Result<Answer> {
    ctx.clear_kv_cache();
    let mut at;
    let last = if way == Way::InSteps {
        let all = pieces.joined();
        at = decode(ctx, TARGET, &all, 0, true)?;
        all.len()
    } else {
        at = decode(ctx, TARGET, &pieces.start, 0, false)?;
        if way == Way::Whole {
            for passage in &pieces.passages {
                at = decode(ctx, TARGET, passage, at, false)?;
            }
        } else {
            at = place_apart(ctx, pieces, at)?;
        }
        at = decode(ctx, TARGET, &pieces.end, at, true)?;
        pieces.end.len()
    };
    let mut answer = Answer {
        tokens: Vec::new(),
        nll: 0.0,
    };
    // the logits of the last token decoded: the prompt's end, then each answer token
    let mut logits_at = (last - 1) % BATCH;
    for step in 0..ANSWER_TOKENS {
        let logits = ctx.get_logits_ith(logits_at as i32);
        let next = match forced {
            Some(tokens) if step < tokens.len() => tokens[step],
            Some(_) => break,
            None => greedy(logits),
        };
        answer.nll += nll(logits, next);
        answer.tokens.push(next);
        at = decode(ctx, TARGET, &[next], at, true)?;
        logits_at = 0;
    }
    answer.nll /= answer.tokens.len().max(1) as f64;
    Ok(answer)
}

/// Each passage computed in the scratch sequence after the start, shifted to follow
/// the passages before it, and handed to the target sequence; returns the next position.
fn place_apart(ctx: &mut LlamaContext<'_>, pieces: &Pieces, start: i32) -> anyhow::Result<i32> {
    let mut at = start;
    for passage in &pieces.passages {
        ctx.clear_kv_cache_seq(Some(SCRATCH as u32), None, None)?;
        ctx.copy_kv_cache_seq(TARGET, SCRATCH, Some(0), Some(start as u32))?;
        let end = decode(ctx, SCRATCH, passage, start, false)?;
        ctx.clear_kv_cache_seq(Some(SCRATCH as u32), Some(0), Some(start as u32))?;
        ctx.kv_cache_seq_add(SCRATCH, Some(start as u32), Some(end as u32), at - start)?;
        ctx.copy_kv_cache_seq(SCRATCH, TARGET, None, None)?;
        ctx.clear_kv_cache_seq(Some(SCRATCH as u32), None, None)?;
        at += end - start;
    }
    Ok(at)
}

/// Decodes `tokens` into `seq` from position `from` in chunks, logits for the last
/// one when `logits`; returns the next position.
fn decode(
    ctx: &mut LlamaContext<'_>,
    seq: i32,
    tokens: &[LlamaToken],
    from: i32,
    logits: bool,
) -> anyhow::Result<i32> {
    let mut batch = LlamaBatch::new(BATCH, 1);
    let mut at = from;
    for (index, chunk) in tokens.chunks(BATCH).enumerate() {
        batch.clear();
        let last_chunk = (index + 1) * BATCH >= tokens.len();
        for (i, token) in chunk.iter().enumerate() {
            let last = logits && last_chunk && i + 1 == chunk.len();
            batch.add(*token, at, &[seq], last)?;
            at += 1;
        }
        ctx.decode(&mut batch)?;
    }
    Ok(at)
}

fn greedy(logits: &[f32]) -> LlamaToken {
    let best = (logits.iter().enumerate())
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map_or(0, |(i, _)| i);
    LlamaToken(best as i32)
}

fn nll(logits: &[f32], token: LlamaToken) -> f64 {
    let max = logits.iter().copied().fold(f32::MIN, f32::max) as f64;
    let sum: f64 = logits.iter().map(|&l| (l as f64 - max).exp()).sum();
    let log_z = max + sum.ln();
    log_z - logits[token.0 as usize] as f64
}
