//! One accepted request, from the subscription on its reply subject to its last event.
//!
//! [`accept`] runs admission control, subscribes to the reply subject *before* it
//! publishes the question, and returns a [`Pending`] that yields [`Step`]s as the
//! relay rules let events through. Dropping a `Pending` before it finished cancels the
//! request (a client that went away); its stream slot is freed with it.

use std::collections::VecDeque;
use std::time::Duration;

use async_nats::Subscriber;
use cauce_nats::relay::{Dropped, Finish, Output, Relay};
use cauce_nats::wire::{self, Event, FinishReason, Source};
use cauce_nats::{ModelName, RequestId, names};
use futures::StreamExt;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::admission::StreamSlot;
use crate::error::{Error, Result};
use crate::state::Shared;
use crate::submit::{CancelOnDrop, publish_question};
use crate::telemetry::{
    CACHE_BYTES_SAVED, CACHE_HITS, CACHE_MISSES, OUTCOMES, QUEUE_WAIT, RELAY_DROPPED, TOKENS,
    TokenClock,
};
use crate::validate::ValidChatRequest;

/// What the client is sent next.
#[derive(Debug)]
pub enum Step {
    Sources(Vec<Source>),
    Text(String),
    Done(Finish),
    /// The request failed; nothing follows.
    Failed(Error),
}

/// How long a request may go without an event before its record is read, in case
/// its end was published while this gateway was reconnecting to NATS.
const IDLE_CHECK: Duration = Duration::from_secs(5);

/// A request in flight, followed on its reply subject.
pub struct Pending {
    pub id: RequestId,
    pub model: ModelName,
    /// When it was accepted, in Unix milliseconds.
    pub created_ms: u64,
    events: Subscriber,
    relay: Relay,
    guard: Option<CancelOnDrop>,
    deadline: Instant,
    timeout: Duration,
    results: cauce_nats::Results,
    stop: CancellationToken,
    queued: VecDeque<Step>,
    finished: bool,
    clock: TokenClock,
    sources: Vec<Source>,
    /// A deterministic request that may be answered from the response cache.
    cacheable: bool,
    _slot: StreamSlot,
}

/// Admits, subscribes, publishes: the request is accepted when this returns `Ok`.
pub async fn accept(state: &Shared, valid: &ValidChatRequest) -> Result<Pending> {
    if state.shutting_down.is_cancelled() {
        return Err(Error::ShuttingDown);
    }
    let slot = state.admission.stream_slot()?;
    state
        .admission
        .check_backlog(&state.js, &valid.model, &state.config.default_model)
        .await?;
    let id = RequestId::generate();
    let subject = names::events_subject(&state.config.id, &id);
    let events = state
        .client
        .subscribe(subject)
        .await
        .map_err(|err| Error::nats("subscribe", err))?;
    let now_ms = wire::now_ms();
    let timeout = state.config.request_timeout;
    let request = valid.to_wire(
        id.clone(),
        state.config.id.clone(),
        now_ms,
        timeout.as_millis() as u64,
    );
    publish_question(state, &request, valid.cache).await?;
    tracing::info!(request_id = %id, model = %valid.model, stream = valid.stream, "request accepted");
    Ok(Pending {
        guard: Some(CancelOnDrop::new(state, id.clone())),
        relay: Relay::new(),
        cacheable: valid.cache && request.is_deterministic(),
        ..Pending::base(state, id, valid.model.clone(), now_ms, events, slot)
    })
}

/// Follows a request some gateway accepted earlier (the tasks API's event stream),
/// from wherever it is now. Leaving does not cancel it.
pub async fn follow(
    state: &Shared,
    id: RequestId,
    model: ModelName,
    created_ms: u64,
) -> Result<Pending> {
    let slot = state.admission.stream_slot()?;
    let subject = names::events_subject_any_gateway(&id);
    let events = state
        .client
        .subscribe(subject)
        .await
        .map_err(|err| Error::nats("subscribe", err))?;
    // its first delta lies beyond what this follower showed: the answer so far is
    // read from the record, then it goes on live
    Ok(Pending::base(state, id, model, created_ms, events, slot))
}

impl Pending {
    fn base(
        state: &Shared,
        id: RequestId,
        model: ModelName,
        created_ms: u64,
        events: Subscriber,
        slot: StreamSlot,
    ) -> Self {
        let timeout = state.config.request_timeout;
        Self {
            id,
            model,
            created_ms,
            events,
            relay: Relay::new(),
            guard: None,
            deadline: Instant::now() + timeout,
            timeout,
            results: state.results.clone(),
            stop: state.stop_streams.clone(),
            queued: VecDeque::new(),
            finished: false,
            clock: TokenClock::start(),
            sources: Vec::new(),
            cacheable: false,
            _slot: slot,
        }
    }

    /// The sources forwarded so far.
    pub fn sources(&self) -> &[Source] {
        &self.sources
    }

    /// The text forwarded so far (all of it once [`Step::Done`] came).
    pub fn text(&self) -> &str {
        self.relay.text()
    }

    /// The next step, or `None` after the last one.
    pub async fn next(&mut self) -> Option<Step> {
        if let Some(step) = self.queued.pop_front() {
            return Some(step);
        }
        if self.finished {
            return None;
        }
        // silence is counted from the last step forwarded, not from the last event (a
        // run of dropped events is silence too)
        let mut look_at = Instant::now() + IDLE_CHECK;
        loop {
            let message = tokio::select! {
                message = self.events.next() => message,
                // events are core NATS: a reconnect can lose the last ones, never the record
                _ = tokio::time::sleep_until(look_at) => match self.ended_in_store().await {
                    Some(step) => return Some(step),
                    None => {
                        look_at = Instant::now() + IDLE_CHECK;
                        continue;
                    }
                },
                _ = tokio::time::sleep_until(self.deadline) => {
                    return Some(self.fail(Error::DeadlineExceeded(self.timeout), "deadline"));
                }
                _ = self.stop.cancelled() => return Some(self.fail(Error::ShuttingDown, "shutdown")),
            };
            let Some(message) = message else {
                let closed = Error::nats("subscription", "the reply subscription closed");
                return Some(self.fail(closed, "subscription_closed"));
            };
            let event: Event = match wire::decode(&message.payload) {
                Ok(event) => event,
                Err(err) => {
                    tracing::warn!(request_id = %self.id, kind = err.kind(), error = %err, "undecodable event dropped");
                    continue;
                }
            };
            if event.request_id != self.id {
                continue;
            }
            if let Some(step) = self.relay_event(event).await {
                self.queued.push_back(step);
            }
            if let Some(step) = self.queued.pop_front() {
                return Some(step);
            }
        }
    }

    /// The step one event makes, after the text recovered from the record if events
    /// before it were lost (queued first).
    async fn relay_event(&mut self, event: Event) -> Option<Step> {
        let before = self.relay.dropped();
        let mut output = self.relay.accept(event);
        if let Some(Output::Behind(event)) = output {
            self.recover().await;
            output = self.relay.accept(*event);
        }
        count_dropped(&self.id, before, self.relay.dropped());
        match output? {
            Output::Behind(_) => None,
            Output::Sources(sources) => {
                self.sources.clone_from(&sources);
                Some(Step::Sources(sources))
            }
            Output::Text(text) => {
                self.clock.token();
                Some(Step::Text(text))
            }
            Output::Done(finish) => Some(self.finish(finish)),
            Output::Recover(finish) => {
                self.recover().await;
                Some(self.finish(finish))
            }
            Output::Failed { kind, message } => {
                self.end("failed");
                Some(Step::Failed(Error::Worker { kind, message }))
            }
        }
    }

    /// The request's end as the results bucket holds it, when it has ended there: the
    /// text not shown yet, then the end.
    async fn ended_in_store(&mut self) -> Option<Step> {
        let stored = self.results.get(&self.id).await.ok()??;
        if !stored.status.is_final() {
            // a running record holds the answer so far: show what was missed
            let rest = self.relay.recover(&stored.text)?;
            self.clock.token();
            return Some(Step::Text(rest));
        }
        tracing::info!(request_id = %self.id, status = stored.status.as_str(), "the end came from the results bucket, not an event");
        if let Some(error) = stored.error {
            self.end("failed");
            return Some(Step::Failed(Error::Worker {
                kind: error.kind,
                message: error.message,
            }));
        }
        if let Some(rest) = self.relay.recover(&stored.text) {
            self.clock.token();
            self.queued.push_back(Step::Text(rest));
        }
        let done = self.finish(Finish {
            finish_reason: stored.finish_reason.unwrap_or(FinishReason::Stop),
            usage: stored.usage,
            timings: stored.timings,
            cached: false,
        });
        self.queued.push_back(done);
        self.queued.pop_front()
    }

    /// Queues the text the record holds beyond what was shown (events were lost, or
    /// a follower joined mid-answer).
    async fn recover(&mut self) {
        let stored = match self.results.get(&self.id).await {
            Ok(Some(stored)) => stored,
            Ok(None) => {
                tracing::warn!(request_id = %self.id, "events were lost and there is no record to recover from");
                return;
            }
            Err(err) => {
                tracing::warn!(request_id = %self.id, kind = err.kind(), error = %err, "reading the record failed");
                return;
            }
        };
        if let Some(rest) = self.relay.recover(&stored.text) {
            tracing::debug!(request_id = %self.id, attempt = stored.attempt, bytes = rest.len(), "text recovered from the results bucket");
            self.clock.token();
            self.queued.push_back(Step::Text(rest));
        }
    }

    fn finish(&mut self, finish: Finish) -> Step {
        let outcome = match finish.finish_reason {
            FinishReason::Cancelled => "cancelled",
            FinishReason::Stop | FinishReason::Length => "done",
        };
        self.end(outcome);
        metrics::counter!(TOKENS, "kind" => "prompt")
            .increment(u64::from(finish.usage.prompt_tokens));
        metrics::counter!(TOKENS, "kind" => "completion")
            .increment(u64::from(finish.usage.completion_tokens));
        metrics::histogram!(QUEUE_WAIT).record(finish.timings.queue_ms / 1000.0);
        if finish.cached {
            metrics::counter!(CACHE_HITS).increment(1);
            metrics::counter!(CACHE_BYTES_SAVED).increment(self.relay.text().len() as u64);
        } else if self.cacheable {
            metrics::counter!(CACHE_MISSES).increment(1);
        }
        tracing::info!(
            request_id = %self.id,
            attempt = self.relay.attempt(),
            finish_reason = finish.finish_reason.as_str(),
            completion_tokens = finish.usage.completion_tokens,
            "request done"
        );
        Step::Done(finish)
    }

    fn end(&mut self, outcome: &'static str) {
        self.finished = true;
        if let Some(guard) = &mut self.guard {
            guard.disarm();
        }
        self.clock.finish();
        metrics::counter!(OUTCOMES, "outcome" => outcome).increment(1);
    }

    fn fail(&mut self, error: Error, cancel_reason: &'static str) -> Step {
        if let Some(guard) = &mut self.guard {
            guard.fire(cancel_reason);
        }
        self.end("failed");
        tracing::warn!(request_id = %self.id, kind = error.kind(), "request ended by the gateway");
        Step::Failed(error)
    }
}

fn count_dropped(id: &RequestId, before: Dropped, after: Dropped) {
    for (reason, was, now) in [
        ("duplicate", before.duplicates, after.duplicates),
        ("stale_attempt", before.stale_attempts, after.stale_attempts),
        ("gap", before.gaps, after.gaps),
    ] {
        if now > was {
            metrics::counter!(RELAY_DROPPED, "reason" => reason).increment(now - was);
            tracing::debug!(request_id = %id, reason, "relay dropped an event");
        }
    }
}
