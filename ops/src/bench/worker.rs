//! The worker mode (`cauce bench --worker`): prompt jobs published straight to
//! `cauce.prompts.<model>` in the wire format, events read from each job's reply
//! subject, so that one inference worker is measured without the gateway or retrieval.
//!
//! A level of N users sends one wave of N jobs at once (unless `--requests` asks for
//! more), like llama-batched-bench's `-npl N`: prefill tokens/s is the prompt tokens of
//! the wave over the time until its last first token, decode tokens/s the completion
//! tokens over the rest of the wall time (llama-batched-bench's `S_PP` and `S_TG`).

use std::time::{Duration, Instant};

use anyhow::Context;
use cauce_nats::async_nats::{self, jetstream};
use cauce_nats::wire::{
    ChatMessage, ChatRequest, EventBody, PromptJob, RetrievalOptions, Role, Sampling, decode,
    encode, now_ms,
};
use cauce_nats::{GatewayId, ModelName, RequestId, names};
use futures::StreamExt;

use super::run::{LevelSummary, Sample};

/// How jobs are made and where they go.
#[derive(Clone)]
pub struct WorkerTarget {
    pub client: async_nats::Client,
    pub jetstream: jetstream::Context,
    pub gateway: GatewayId,
    pub model: ModelName,
    pub max_tokens: u32,
    pub temperature: f32,
    pub seed_base: u64,
    pub timeout: Duration,
}

impl WorkerTarget {
    pub fn new(client: async_nats::Client, model: ModelName) -> anyhow::Result<Self> {
        Ok(Self {
            jetstream: jetstream::new(client.clone()),
            client,
            gateway: GatewayId::parse("bench").context("gateway id")?,
            model,
            max_tokens: 128,
            temperature: 0.7,
            seed_base: 0,
            timeout: Duration::from_secs(300),
        })
    }

    fn job(&self, prompt: String, number: u64) -> PromptJob {
        let sampling = Sampling {
            max_tokens: Some(self.max_tokens),
            temperature: Some(self.temperature),
            seed: Some(self.seed_base.wrapping_add(number)),
            ..Sampling::default()
        };
        one_question(&self.gateway, &self.model, prompt, sampling, self.timeout)
    }

    /// Publishes one job and follows its events to `done` or `error`.
    pub async fn send(&self, prompt: String, number: u64, level_started: Instant) -> Sample {
        let sent = Instant::now();
        let mut sample = Sample {
            start_s: sent.duration_since(level_started).as_secs_f64(),
            ..Sample::default()
        };
        let job = self.job(prompt, number);
        let outcome = tokio::time::timeout(
            self.timeout,
            self.follow(&job, sent, level_started, &mut sample),
        )
        .await
        .unwrap_or(Err("timeout".into()));
        sample.e2e_ms = sent.elapsed().as_secs_f64() * 1000.0;
        if let Err(kind) = outcome {
            sample.error = Some(kind);
        }
        sample
    }

    async fn follow(
        &self,
        job: &PromptJob,
        sent: Instant,
        level_started: Instant,
        sample: &mut Sample,
    ) -> Result<(), String> {
        let subject = names::events_subject(&job.request.gateway, &job.request.id);
        let mut events = self
            .client
            .subscribe(subject)
            .await
            .map_err(|_| "subscribe".to_string())?;
        let payload = encode(job).map_err(|_| "encode".to_string())?;
        self.jetstream
            .publish(names::prompt_subject(&job.request.model), payload)
            .await
            .map_err(|_| "publish".to_string())?
            .await
            .map_err(|_| "publish_ack".to_string())?;
        let mut last_delta: Option<Instant> = None;
        while let Some(message) = events.next().await {
            let event = decode::<cauce_nats::wire::Event>(&message.payload)
                .map_err(|_| "bad_event".to_string())?;
            match event.body {
                EventBody::Sources { .. } => {}
                EventBody::Delta { text, .. } if text.is_empty() => {}
                EventBody::Delta { .. } => {
                    let now = Instant::now();
                    match last_delta {
                        None => {
                            sample.ttft_ms = Some(now.duration_since(sent).as_secs_f64() * 1000.0)
                        }
                        Some(previous) => sample
                            .gaps_ms
                            .push(now.duration_since(previous).as_secs_f64() * 1000.0),
                    }
                    sample
                        .chunk_at_s
                        .push(now.duration_since(level_started).as_secs_f64());
                    last_delta = Some(now);
                }
                EventBody::Done { usage, .. } => {
                    sample.completion_tokens = u64::from(usage.completion_tokens);
                    sample.prompt_tokens = Some(u64::from(usage.prompt_tokens));
                    return Ok(());
                }
                EventBody::Error { kind, .. } => return Err(kind.as_str().to_string()),
            }
        }
        Err("events_closed".into())
    }
}

/// Adds prefill and decode tokens/s to the summary of one wave.
pub fn add_phase_rates(summary: &mut LevelSummary, samples: &[Sample]) {
    let ok: Vec<&Sample> = samples.iter().filter(|s| s.error.is_none()).collect();
    let Some(first_sent) = ok.iter().map(|s| s.start_s).reduce(f64::min) else {
        return;
    };
    // the instant, from the start of the wave, by which every job had its first token
    let prefilled_s = ok
        .iter()
        .map(|s| s.start_s + s.ttft_ms.unwrap_or(s.e2e_ms) / 1000.0)
        .fold(0.0, f64::max)
        - first_sent;
    let decode_s = summary.wall_s - prefilled_s;
    if prefilled_s > 0.0 {
        summary.prefill_tokens_per_s = Some(summary.prompt_tokens as f64 / prefilled_s);
    }
    if decode_s > 0.0 {
        // each job's first token came out of its prefill step
        let decoded = summary.completion_tokens.saturating_sub(ok.len() as u64);
        summary.decode_tokens_per_s = Some(decoded as f64 / decode_s);
    }
}

/// A prompt job of one user question, without passages, due within `timeout`.
pub(super) fn one_question(
    gateway: &GatewayId,
    model: &ModelName,
    question: String,
    sampling: Sampling,
    timeout: Duration,
) -> PromptJob {
    let now = now_ms();
    PromptJob {
        request: ChatRequest {
            id: RequestId::generate(),
            gateway: gateway.clone(),
            model: model.clone(),
            messages: vec![ChatMessage {
                role: Role::User,
                content: question,
            }],
            sampling,
            retrieval: RetrievalOptions {
                enabled: false,
                top_k: 0,
                collections: Vec::new(),
            },
            created_at_ms: now,
            deadline_ms: now + timeout.as_millis() as u64,
            replay_of: None,
        },
        passages: Vec::new(),
        retrieved_at_ms: now,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phase_rates_split_the_wave_at_the_last_first_token() {
        let samples: Vec<Sample> = (0..2)
            .map(|_| Sample {
                start_s: 0.0,
                ttft_ms: Some(1000.0),
                e2e_ms: 3000.0,
                completion_tokens: 11,
                prompt_tokens: Some(100),
                ..Sample::default()
            })
            .collect();
        let mut summary = super::super::stats::summarize(2, &samples);
        add_phase_rates(&mut summary, &samples);
        assert_eq!(summary.prefill_tokens_per_s, Some(200.0));
        assert_eq!(summary.decode_tokens_per_s, Some(10.0));
    }
}
