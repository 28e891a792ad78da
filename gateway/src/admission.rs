//! Admission control, checked before anything is queued: a bound on the streams this
//! gateway holds and on the `PROMPTS` backlog of the requested model.
//!
//! Streams in flight are semaphore permits held by the stream; the backlog is the
//! `num_pending` of the model's inference consumer, read at most every
//! `backlog_refresh` so that a burst of requests costs one JetStream call.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use cauce_nats::{ModelName, names};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::{Error, Result};
use crate::telemetry::STREAMS_IN_FLIGHT;

/// The admission state of one gateway.
#[derive(Debug)]
pub struct Admission {
    slots: Arc<Semaphore>,
    in_flight: Arc<AtomicUsize>,
    max_in_flight: usize,
    max_backlog: u64,
    refresh: Duration,
    backlog: Mutex<HashMap<ModelName, (Instant, Option<u64>)>>,
}

/// One stream's place in the gateway; freed when dropped.
#[derive(Debug)]
pub struct StreamSlot {
    _permit: OwnedSemaphorePermit,
    in_flight: Arc<AtomicUsize>,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let now = self.in_flight.fetch_sub(1, Ordering::Relaxed) - 1;
        metrics::gauge!(STREAMS_IN_FLIGHT).set(now as f64);
    }
}

impl Admission {
    pub fn new(max_in_flight: usize, max_backlog: u64, refresh: Duration) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(max_in_flight)),
            in_flight: Arc::new(AtomicUsize::new(0)),
            max_in_flight,
            max_backlog,
            refresh,
            backlog: Mutex::new(HashMap::new()),
        }
    }

    /// Streams held now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// A counter of streams held, for the service stats handler.
    pub fn in_flight_counter(&self) -> Arc<AtomicUsize> {
        self.in_flight.clone()
    }

    /// A stream slot, or `GatewayFull`.
    pub fn stream_slot(&self) -> Result<StreamSlot> {
        let permit = self
            .slots
            .clone()
            .try_acquire_owned()
            .map_err(|_| Error::GatewayFull {
                limit: self.max_in_flight,
            })?;
        let now = self.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
        metrics::gauge!(STREAMS_IN_FLIGHT).set(now as f64);
        Ok(StreamSlot {
            _permit: permit,
            in_flight: self.in_flight.clone(),
        })
    }

    /// Refuses new work for `model` while its queue is over the bound, and for a model
    /// no inference worker ever served (no consumer), unless it is the default model,
    /// whose requests queue until a worker comes.
    pub async fn check_backlog(
        &self,
        js: &jetstream::Context,
        model: &ModelName,
        default_model: &ModelName,
    ) -> Result<()> {
        let Some(pending) = self.backlog(js, model).await else {
            if model == default_model {
                return Ok(());
            }
            return Err(Error::ModelNotFound {
                model: model.to_string(),
            });
        };
        if pending > self.max_backlog {
            return Err(Error::BacklogFull {
                model: model.to_string(),
                pending,
                limit: self.max_backlog,
            });
        }
        Ok(())
    }

    async fn backlog(&self, js: &jetstream::Context, model: &ModelName) -> Option<u64> {
        {
            let cache = self.backlog.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((read_at, pending)) = cache.get(model)
                && read_at.elapsed() < self.refresh
            {
                return *pending;
            }
        }
        let pending = read_backlog(js, model).await;
        let mut cache = self.backlog.lock().unwrap_or_else(|p| p.into_inner());
        cache.insert(model.clone(), (Instant::now(), pending));
        pending
    }
}

/// Jobs waiting for `model`; `None` when its consumer does not exist (no worker ever
/// started for it). A failed read counts as empty: the publish that follows is what
/// tells whether JetStream is there.
async fn read_backlog(js: &jetstream::Context, model: &ModelName) -> Option<u64> {
    let consumer = names::inference_consumer(model);
    let stream = match js.get_stream_no_info(names::PROMPTS).await {
        Ok(stream) => stream,
        Err(err) => {
            tracing::debug!(error = %err, "prompts stream lookup failed");
            return Some(0);
        }
    };
    match stream.consumer_info(&consumer).await {
        Ok(info) => Some(info.num_pending),
        Err(err) if consumer_missing(&err) => None,
        Err(err) => {
            tracing::debug!(consumer, error = %err, "inference consumer info unavailable");
            Some(0)
        }
    }
}

fn consumer_missing(err: &jetstream::context::ConsumerInfoError) -> bool {
    use jetstream::context::ConsumerInfoErrorKind;
    match err.kind() {
        ConsumerInfoErrorKind::NotFound => true,
        ConsumerInfoErrorKind::JetStream(e) => {
            e.error_code() == jetstream::ErrorCode::CONSUMER_NOT_FOUND
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_bounded_and_freed_on_drop() {
        let admission = Admission::new(1, 10, Duration::from_millis(1));
        let slot = admission.stream_slot().unwrap();
        assert_eq!(admission.in_flight(), 1);
        assert!(matches!(
            admission.stream_slot(),
            Err(Error::GatewayFull { limit: 1 })
        ));
        drop(slot);
        assert_eq!(admission.in_flight(), 0);
        assert!(admission.stream_slot().is_ok());
    }
}
