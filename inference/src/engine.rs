//! The llama.cpp engine: one thread owns the model, the context and every running
//! sequence, and decodes them together (continuous batching).
//!
//! Each step builds one batch: the last sampled token of every generating sequence,
//! then prompt tokens of sequences still in prefill, up to `batch_size` tokens in all,
//! so a long prompt is prefilled in chunks while the running streams keep flowing. A
//! job submitted while others run is admitted at the next step. A finished or
//! cancelled sequence gives its slot and its generated tokens' KV cells back at once,
//! and its prompt's KV moves to the host cache ([`crate::host_cache`], `--cache-ram`;
//! without one, or for a short prompt, the slot keeps it), so that a next prompt
//! sharing a prefix (the same passages, a longer conversation) skips that prefill. A
//! new prompt goes to a free slot (its own cached prompt when it continues it, else the
//! least recently used) and starts from the longest prefix it can get without
//! computing it: a busy slot's, shared through the unified KV cache (see
//! [`crate::placement`]), or a host cache entry's, restored.
//!
//! A job may continue an answer an earlier attempt began, when a worker died
//! mid-answer ([`Engine::submit_continuing`]): that text is tokenized after the prompt
//! and prefilled with it, and generation goes on from its end. The answer's limits
//! count it: `max_tokens`, the context, and `completion_tokens` (its tokens as
//! tokenized here, plus the new ones).

use std::collections::VecDeque;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, TryRecvError};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use cauce_nats::wire::{FinishReason, PromptJob, Timings, Usage, now_ms};
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::context::session::SeqState;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::{LlamaChatTemplate, LlamaModel};
use llama_cpp_2::token::LlamaToken;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};
use tracing::{debug, info, warn};

use crate::config::EngineConfig;
use crate::error::{Error, Result};
use crate::host_cache::HostCache;
use crate::placement::{SlotView, place};
use crate::prompt;
use crate::sampling;
use crate::text::{Scan, StopScanner, Utf8Assembler};

mod prefix;
mod stats;

pub use stats::{EngineHistograms, EngineStats};

/// What the engine reports about one job, in order: deltas, then one `Done` or `Failed`.
#[derive(Debug)]
pub enum EngineEvent {
    /// Prefill began; `reused_tokens` of the prompt came from the slot's cache.
    Started {
        prompt_tokens: u32,
        reused_tokens: u32,
    },
    Delta(String),
    Done {
        finish_reason: FinishReason,
        usage: Usage,
        timings: Timings,
    },
    Failed(Error),
}

/// The receiving end of one job.
pub struct JobHandle {
    pub events: UnboundedReceiver<EngineEvent>,
    /// Set to stop the sequence at the next step (finish reason `cancelled`).
    pub cancel: Arc<AtomicBool>,
}

/// Facts about the loaded model.
#[derive(Clone, Debug)]
pub struct ModelInfo {
    pub description: String,
    pub slots: u32,
    pub ctx_per_slot: u32,
}

struct Submission {
    job: PromptJob,
    /// The answer an earlier attempt began, which this one continues.
    answer_so_far: String,
    events: UnboundedSender<EngineEvent>,
    cancel: Arc<AtomicBool>,
}

/// A handle to the engine thread. Dropping it lets the thread finish its running
/// sequences and exit.
pub struct Engine {
    submit_tx: Sender<Submission>,
    stats: Arc<EngineStats>,
    info: ModelInfo,
}

/// The process's one llama.cpp backend, initialised on first use.
pub(crate) fn backend() -> Result<&'static LlamaBackend> {
    static BACKEND: OnceLock<LlamaBackend> = OnceLock::new();
    static INIT: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _init = INIT.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(backend) = BACKEND.get() {
        return Ok(backend);
    }
    llama_cpp_2::send_logs_to_tracing(llama_cpp_2::LogOptions::default().with_logs_enabled(false));
    let backend = LlamaBackend::init().map_err(|e| Error::Context(e.to_string()))?;
    Ok(BACKEND.get_or_init(|| backend))
}

impl Engine {
    /// Loads the model on a new thread and returns once it is ready to take jobs.
    pub fn start(config: EngineConfig) -> Result<Self> {
        if !config.model_path.is_file() {
            return Err(Error::ModelMissing {
                path: config.model_path.clone(),
            });
        }
        if config.slots == 0 || config.ctx_per_slot < 16 || config.batch_size == 0 {
            return Err(Error::Config(
                "slots and batch size must be positive, ctx size at least 16".into(),
            ));
        }
        let backend = backend()?;
        let (submit_tx, submit_rx) = mpsc::channel();
        let (ready_tx, ready_rx) = mpsc::channel();
        let stats = Arc::new(EngineStats::default());
        let thread_stats = stats.clone();
        std::thread::Builder::new()
            .name("llama-engine".into())
            .spawn(move || run_thread(backend, config, submit_rx, ready_tx, thread_stats))
            .map_err(|e| Error::Context(format!("cannot start the engine thread: {e}")))?;
        let info = ready_rx.recv().map_err(|_| Error::EngineStopped)??;
        Ok(Self {
            submit_tx,
            stats,
            info,
        })
    }

    /// Queues a job; it starts at the next decode step if a slot is free.
    pub fn submit(&self, job: PromptJob) -> Result<JobHandle> {
        self.submit_continuing(job, String::new())
    }

    /// Queues a job that continues `answer_so_far` (empty: from the start). Its deltas
    /// are the text after `answer_so_far`.
    pub fn submit_continuing(&self, job: PromptJob, answer_so_far: String) -> Result<JobHandle> {
        let (events_tx, events) = unbounded_channel();
        let cancel = Arc::new(AtomicBool::new(false));
        self.submit_tx
            .send(Submission {
                job,
                answer_so_far,
                events: events_tx,
                cancel: cancel.clone(),
            })
            .map_err(|_| Error::EngineStopped)?;
        Ok(JobHandle { events, cancel })
    }

    pub fn stats(&self) -> &Arc<EngineStats> {
        &self.stats
    }

    pub fn info(&self) -> &ModelInfo {
        &self.info
    }
}

fn run_thread(
    backend: &'static LlamaBackend,
    config: EngineConfig,
    submit_rx: Receiver<Submission>,
    ready_tx: Sender<Result<ModelInfo>>,
    stats: Arc<EngineStats>,
) {
    let model_params = LlamaModelParams::default().with_n_gpu_layers(config.n_gpu_layers);
    let model = match LlamaModel::load_from_file(backend, &config.model_path, &model_params) {
        Ok(model) => model,
        Err(err) => {
            let _ = ready_tx.send(Err(Error::ModelLoad {
                path: config.model_path.clone(),
                reason: err.to_string(),
            }));
            return;
        }
    };
    let threads = config.effective_threads();
    let ctx_params = LlamaContextParams::default()
        .with_n_ctx(NonZeroU32::new(config.ctx_per_slot * config.slots))
        .with_n_batch(config.batch_size)
        .with_n_ubatch(config.batch_size)
        .with_n_seq_max(config.slots)
        .with_n_threads(threads)
        .with_n_threads_batch(threads)
        .with_kv_unified(true);
    let ctx = match model.new_context(backend, ctx_params) {
        Ok(ctx) => ctx,
        Err(err) => {
            let _ = ready_tx.send(Err(Error::Context(err.to_string())));
            return;
        }
    };
    let template = match prompt::template(&model) {
        Ok(template) => template,
        Err(err) => {
            let _ = ready_tx.send(Err(err));
            return;
        }
    };
    let info = ModelInfo {
        description: model
            .meta_val_str("general.name")
            .unwrap_or_else(|_| "model".into()),
        slots: config.slots,
        ctx_per_slot: config.ctx_per_slot,
    };
    info!(
        model = %config.model_path.display(),
        name = %info.description,
        slots = config.slots,
        ctx_per_slot = config.ctx_per_slot,
        batch = config.batch_size,
        threads,
        gpu_layers = config.n_gpu_layers,
        "model loaded"
    );
    let _ = ready_tx.send(Ok(info));
    let mut engine = Batcher {
        model: &model,
        ctx,
        template,
        batch: LlamaBatch::new(config.batch_size as usize, config.slots as i32),
        slots: (0..config.slots as i32)
            .map(|seq_id| Slot {
                seq_id,
                cached: Vec::new(),
                active: None,
                last_used: 0,
            })
            .collect(),
        admissions: 0,
        host: HostCache::new(config.cache_ram),
        waiting: VecDeque::new(),
        config,
        stats,
    };
    engine.run(&submit_rx);
    debug!("engine thread stopped");
}

/// One sequence slot: its id in the KV cache, the tokens whose KV it holds, and the
/// job it is running, if any.
struct Slot {
    seq_id: i32,
    cached: Vec<LlamaToken>,
    active: Option<Active>,
    /// When the slot last took a job, as a count of admissions (0: never).
    last_used: u64,
}

struct Active {
    sub: Submission,
    prompt: Vec<LlamaToken>,
    /// Prompt tokens whose KV is in the cache.
    prefilled: usize,
    reused: usize,
    /// The last tokens of `prompt` are the answer so far an earlier attempt began.
    resumed: usize,
    sampler: llama_cpp_2::sampling::LlamaSampler,
    /// The last sampled token, to be decoded at the next step.
    next_token: Option<LlamaToken>,
    /// Index in the current batch whose logits this sequence samples from.
    logits_at: Option<i32>,
    completion_tokens: u32,
    max_tokens: Option<u32>,
    utf8: Utf8Assembler,
    stops: StopScanner,
    admitted_at: Instant,
    queue_ms: f64,
    first_token_at: Option<Instant>,
    last_token_at: Option<Instant>,
}

struct Batcher<'m> {
    model: &'m LlamaModel,
    ctx: LlamaContext<'m>,
    template: LlamaChatTemplate,
    batch: LlamaBatch<'static>,
    slots: Vec<Slot>,
    admissions: u64,
    host: HostCache<SeqState>,
    waiting: VecDeque<Submission>,
    config: EngineConfig,
    stats: Arc<EngineStats>,
}

impl Batcher<'_> {
    fn run(&mut self, submit_rx: &Receiver<Submission>) {
        let mut open = true;
        loop {
            let idle = self.slots.iter().all(|s| s.active.is_none()) && self.waiting.is_empty();
            if idle {
                if !open {
                    return;
                }
                match submit_rx.recv_timeout(Duration::from_millis(500)) {
                    Ok(sub) => self.waiting.push_back(sub),
                    Err(RecvTimeoutError::Timeout) => continue,
                    Err(RecvTimeoutError::Disconnected) => return,
                }
            }
            while open {
                match submit_rx.try_recv() {
                    Ok(sub) => self.waiting.push_back(sub),
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => open = false,
                }
            }
            self.drop_cancelled();
            self.admit();
            self.gauge_use();
            let tokens = self.build_batch();
            if tokens == 0 {
                continue;
            }
            self.stats.histograms.batch_tokens.observe(tokens as f64);
            if let Err(err) = self.ctx.decode(&mut self.batch) {
                self.fail_batch(&err.to_string());
                continue;
            }
            self.sample();
        }
    }

    /// The waiting jobs and used KV cells, for the worker's metrics.
    fn gauge_use(&self) {
        let used: usize = self.slots.iter().map(|s| s.cached.len()).sum();
        let stats = &self.stats;
        stats.kv_cells_used.store(used as u64, Ordering::Relaxed);
        stats
            .waiting
            .store(self.waiting.len() as u64, Ordering::Relaxed);
    }

    fn drop_cancelled(&mut self) {
        self.waiting.retain(|sub| {
            let cancelled = sub.cancel.load(Ordering::Relaxed) || sub.events.is_closed();
            if cancelled {
                let usage = Usage::default();
                let _ = sub.events.send(EngineEvent::Done {
                    finish_reason: FinishReason::Cancelled,
                    usage,
                    timings: Timings::default(),
                });
            }
            !cancelled
        });
        for index in 0..self.slots.len() {
            let cancelled = self.slots[index]
                .active
                .as_ref()
                .is_some_and(|a| a.sub.cancel.load(Ordering::Relaxed) || a.sub.events.is_closed());
            if cancelled {
                self.finish(index, FinishReason::Cancelled);
            }
        }
    }

    /// Moves waiting jobs into free slots (see [`place`]).
    fn admit(&mut self) {
        while self.slots.iter().any(|s| s.active.is_none()) {
            let Some(sub) = self.waiting.pop_front() else {
                return;
            };
            let (prompt, resumed) = match self.render(&sub.job, &sub.answer_so_far) {
                Ok(rendered) => rendered,
                Err(err) => {
                    let _ = sub.events.send(EngineEvent::Failed(err));
                    continue;
                }
            };
            if self.ends_before_start(&sub, prompt.len(), resumed) {
                continue;
            }
            let views = self.slots.iter().map(SlotView::of).collect::<Vec<_>>();
            let placement = place(&views, &prompt).expect("a free slot exists");
            let index = placement.slot;
            self.admissions += 1;
            self.slots[index].last_used = self.admissions;
            self.start_from(index, placement.copy, &prompt);
            let slot = &mut self.slots[index];
            let reused = slot.cached.len();
            let request = &sub.job.request;
            let _ = sub.events.send(EngineEvent::Started {
                prompt_tokens: (prompt.len() - resumed) as u32,
                reused_tokens: reused as u32,
            });
            self.stats.busy_slots.fetch_add(1, Ordering::Relaxed);
            self.stats
                .prompt_tokens
                .fetch_add(prompt.len() as u64, Ordering::Relaxed);
            self.stats
                .reused_prompt_tokens
                .fetch_add(reused as u64, Ordering::Relaxed);
            let queue_ms = now_ms().saturating_sub(request.created_at_ms) as f64;
            self.stats.histograms.queue.observe(queue_ms / 1000.0);
            slot.active = Some(Active {
                sampler: sampling::sampler(&request.sampling, &request.id),
                max_tokens: request.sampling.max_tokens,
                stops: StopScanner::new(&request.sampling.stop),
                queue_ms,
                sub,
                prompt,
                prefilled: reused,
                reused,
                resumed,
                next_token: None,
                logits_at: None,
                completion_tokens: resumed as u32,
                utf8: Utf8Assembler::default(),
                admitted_at: Instant::now(),
                first_token_at: None,
                last_token_at: None,
            });
        }
    }

    /// A continued answer that had already reached its limit (`max_tokens`, the
    /// context) ends here, without a slot: `true` when it did.
    fn ends_before_start(&self, sub: &Submission, tokens: usize, resumed: usize) -> bool {
        if resumed == 0 {
            return false;
        }
        let at_max = sub
            .job
            .request
            .sampling
            .max_tokens
            .is_some_and(|max| resumed as u32 >= max);
        if !at_max && tokens + 1 < self.config.ctx_per_slot as usize {
            return false;
        }
        let _ = sub.events.send(EngineEvent::Done {
            finish_reason: FinishReason::Length,
            usage: Usage {
                prompt_tokens: (tokens - resumed) as u32,
                completion_tokens: resumed as u32,
                cached_tokens: 0,
            },
            timings: Timings::default(),
        });
        true
    }

    /// Renders and tokenizes a job's prompt and the answer so far after it (how many
    /// tokens that is comes second), refusing a prompt that cannot fit.
    fn render(&self, job: &PromptJob, answer_so_far: &str) -> Result<(Vec<LlamaToken>, usize)> {
        let tokens = prompt::tokens(self.model, &self.template, job)?;
        let context_tokens = self.config.ctx_per_slot as usize;
        if tokens.is_empty() {
            return Err(Error::Template("the rendered prompt is empty".into()));
        }
        if tokens.len() + 1 > context_tokens {
            return Err(Error::ContextOverflow {
                prompt_tokens: tokens.len(),
                context_tokens,
            });
        }
        let mut tokens = tokens;
        let answer = self
            .model
            .vocab()
            .tokenize(answer_so_far.as_bytes(), false, false);
        let resumed = answer.len();
        tokens.extend(answer);
        Ok((tokens, resumed))
    }

    /// Fills the batch: one token per generating sequence, then prompt chunks.
    fn build_batch(&mut self) -> usize {
        self.batch.clear();
        let mut budget = self.config.batch_size as usize;
        for slot in &mut self.slots {
            let Some(active) = slot.active.as_mut() else {
                continue;
            };
            let Some(token) = active.next_token.take() else {
                continue;
            };
            let at = self.batch.n_tokens();
            if self
                .batch
                .add(token, slot.cached.len() as i32, &[slot.seq_id], true)
                .is_err()
            {
                active.next_token = Some(token);
                continue;
            }
            slot.cached.push(token);
            active.logits_at = Some(at);
            budget -= 1;
        }
        for slot in &mut self.slots {
            if budget == 0 {
                break;
            }
            let Some(active) = slot.active.as_mut() else {
                continue;
            };
            if active.prefilled >= active.prompt.len() {
                continue;
            }
            let end = (active.prefilled + budget).min(active.prompt.len());
            for position in active.prefilled..end {
                let last = position + 1 == active.prompt.len();
                let at = self.batch.n_tokens();
                let token = active.prompt[position];
                if self
                    .batch
                    .add(token, position as i32, &[slot.seq_id], last)
                    .is_err()
                {
                    break;
                }
                slot.cached.push(token);
                active.prefilled += 1;
                budget -= 1;
                if last {
                    active.logits_at = Some(at);
                }
            }
        }
        self.batch.n_tokens() as usize
    }

    fn sample(&mut self) {
        for index in 0..self.slots.len() {
            let Some(active) = self.slots[index].active.as_mut() else {
                continue;
            };
            let Some(at) = active.logits_at.take() else {
                continue;
            };
            let token = active.sampler.sample(&self.ctx, at);
            active.completion_tokens += 1;
            let now = Instant::now();
            let histograms = &self.stats.histograms;
            match active.last_token_at.replace(now) {
                Some(previous) => histograms
                    .inter_token
                    .observe(now.duration_since(previous).as_secs_f64()),
                None => {
                    active.first_token_at = Some(now);
                    let prefill = now.duration_since(active.admitted_at).as_secs_f64();
                    histograms.prefill.observe(prefill);
                    histograms
                        .time_to_first_token
                        .observe(active.queue_ms / 1000.0 + prefill);
                }
            }
            self.stats.tokens_generated.fetch_add(1, Ordering::Relaxed);
            if self.model.vocab().is_eog(token) {
                self.finish(index, FinishReason::Stop);
                continue;
            }
            let bytes = self.model.vocab().token_to_piece(token, false, None);
            let text = active.utf8.push(&bytes);
            match active.stops.push(&text) {
                Scan::Continue(text) => send_delta(&active.sub, text),
                Scan::Stop(text) => {
                    send_delta(&active.sub, text);
                    active.utf8 = Utf8Assembler::default();
                    self.finish(index, FinishReason::Stop);
                    continue;
                }
            }
            active.next_token = Some(token);
            let cached = self.slots[index].cached.len();
            let active = self.slots[index].active.as_ref().expect("still active");
            let at_max = active
                .max_tokens
                .is_some_and(|max| active.completion_tokens >= max);
            if at_max || cached + 1 >= self.config.ctx_per_slot as usize {
                self.finish(index, FinishReason::Length);
            }
        }
    }

    /// Ends a slot's job: flushes held text, reports usage and timings, and frees the
    /// generated tokens' KV cells (the prompt stays cached for prefix reuse).
    fn finish(&mut self, index: usize, finish_reason: FinishReason) {
        let slot = &mut self.slots[index];
        let Some(mut active) = slot.active.take() else {
            return;
        };
        // after a stop string both are empty; after an end token or a limit, what was
        // held back as a possible stop string was not one
        let rest = active.utf8.finish();
        let mut tail = match active.stops.push(&rest) {
            Scan::Continue(text) | Scan::Stop(text) => text,
        };
        tail.push_str(&active.stops.finish());
        send_delta(&active.sub, tail);
        let keep = active.prompt.len().min(slot.cached.len());
        self.trim(index, keep);
        self.park(index);
        let done_at = Instant::now();
        let first = active.first_token_at.unwrap_or(done_at);
        let prefill = first.duration_since(active.admitted_at).as_secs_f64();
        let decode = done_at.duration_since(first).as_secs_f64();
        if active.first_token_at.is_some() {
            self.stats.histograms.decode.observe(decode);
        }
        let prefilled = (active.prompt.len() - active.reused) as f64;
        let timings = Timings {
            queue_ms: active.queue_ms,
            prefill_ms: prefill * 1000.0,
            decode_ms: decode * 1000.0,
            prefill_tokens_per_s: if prefill > 0.0 {
                prefilled / prefill
            } else {
                0.0
            },
            decode_tokens_per_s: if decode > 0.0 {
                let generated = active.completion_tokens - active.resumed as u32;
                f64::from(generated.saturating_sub(1)) / decode
            } else {
                0.0
            },
        };
        let prompt_tokens = active.prompt.len() - active.resumed;
        let usage = Usage {
            prompt_tokens: prompt_tokens as u32,
            completion_tokens: active.completion_tokens,
            cached_tokens: active.reused.min(prompt_tokens) as u32,
        };
        self.stats.busy_slots.fetch_sub(1, Ordering::Relaxed);
        self.stats.jobs_finished.fetch_add(1, Ordering::Relaxed);
        let _ = active.sub.events.send(EngineEvent::Done {
            finish_reason,
            usage,
            timings,
        });
    }

    /// A decode failure: every job with tokens in this batch fails (the worker hands
    /// it back to the queue) and its slot's cache is dropped.
    fn fail_batch(&mut self, reason: &str) {
        warn!(
            reason,
            "llama.cpp decode failed; failing the jobs in this batch"
        );
        for slot in &mut self.slots {
            let _ = self
                .ctx
                .clear_kv_cache_seq(Some(slot.seq_id as u32), None, None);
            slot.cached.clear();
            if let Some(active) = slot.active.take() {
                self.stats.busy_slots.fetch_sub(1, Ordering::Relaxed);
                let _ = active
                    .sub
                    .events
                    .send(EngineEvent::Failed(Error::Decode(reason.to_string())));
            }
        }
    }
}

fn send_delta(sub: &Submission, text: String) {
    if !text.is_empty() {
        let _ = sub.events.send(EngineEvent::Delta(text));
    }
}

impl<'a> SlotView<'a> {
    fn of(slot: &'a Slot) -> Self {
        Self {
            cached: &slot.cached,
            last_used: slot.last_used,
            free: slot.active.is_none(),
        }
    }
}
