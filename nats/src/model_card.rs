//! The model card protocol: each inference worker [keeps](ModelCards::keep) the
//! [`ModelCard`] of the model it serves in the `cauce-cache` bucket (rewritten well
//! within the bucket's time to live), and retrieval workers [read](ModelCards::get) it,
//! trusting a read for a few seconds.
//!
//! Retrieval uses the card twice: its fingerprint goes into response cache keys, and
//! its context size and file name let a [`PromptCounter`] count a prompt in the model's
//! own tokens, so that the passages put into a prompt always leave it room to fit.
//! Workers serving one model name should share a context size: the card is the last
//! one written.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_nats::jetstream::kv;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::ids::ModelName;
use crate::names;
use crate::wire::{self, ModelCard, PromptJob};

/// How long a read card is trusted before it is read again.
const CARD_TTL: Duration = Duration::from_secs(10);
/// How long a missing card is believed missing: a worker starting is seen at once.
const MISSING_TTL: Duration = Duration::from_secs(1);

/// Counts the tokens of the prompt a job becomes, as the model of a card renders and
/// tokenizes it. The inference crate implements it with the model's vocabulary;
/// retrieval is handed one, so neither knows the other.
pub trait PromptCounter: Send + Sync + std::fmt::Debug {
    /// Tokens of `job`'s whole prompt (template, system message with its sources,
    /// conversation), never fewer than the model will see.
    fn prompt_tokens(&self, card: &ModelCard, job: &PromptJob) -> usize;
}

/// Reads and writes model cards in the `cauce-cache` bucket.
pub struct ModelCards {
    kv: kv::Store,
    read: Mutex<HashMap<ModelName, (Option<ModelCard>, Instant)>>,
}

impl ModelCards {
    pub fn new(kv: kv::Store) -> Self {
        Self {
            kv,
            read: Mutex::default(),
        }
    }

    /// The card inference workers published for `model`, if any.
    pub async fn get(&self, model: &ModelName) -> Option<ModelCard> {
        if let Some((card, read_at)) = self
            .read
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(model)
            && read_at.elapsed()
                < if card.is_some() {
                    CARD_TTL
                } else {
                    MISSING_TTL
                }
        {
            return card.clone();
        }
        let value = self
            .kv
            .get(names::model_card_key(model))
            .await
            .ok()
            .flatten();
        let card = value.and_then(|bytes| wire::decode::<ModelCard>(&bytes).ok());
        self.read
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(model.clone(), (card.clone(), Instant::now()));
        card
    }

    /// Keeps `model`'s card in the bucket, rewritten well within its time to live
    /// (`ttl`, zero for none), until `cancel` fires.
    pub async fn keep(
        &self,
        model: &ModelName,
        card: &ModelCard,
        ttl: Duration,
        cancel: CancellationToken,
    ) {
        let every = if ttl.is_zero() {
            Duration::from_secs(600)
        } else {
            (ttl / 4).min(Duration::from_secs(600))
        };
        let key = names::model_card_key(model);
        let Ok(payload) = wire::encode(card) else {
            warn!(model = %model, "the model card does not encode; not published");
            return;
        };
        loop {
            if let Err(err) = self.kv.put(&key, payload.clone()).await {
                warn!(error = %err, "publishing the model card failed");
            }
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep(every.max(Duration::from_secs(1))) => {}
            }
        }
    }
}
