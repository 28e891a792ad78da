//! The response cache protocol, both sides of it: the `cauce-cache` bucket holds, under
//! keys made by [`wire::cache_key`], either a cached answer or a claim by the request
//! generating it, and each model's fingerprint.
//!
//! - A retrieval worker [looks up](ResponseCache::lookup) a deterministic request after
//!   retrieval (the key covers the passages' versions). A miss claims the key with a
//!   `pending` marker before the prompt job is published; identical requests arriving
//!   meanwhile wait for that answer instead of generating it again (single flight),
//!   for at most the wait given (the caller bounds it by the request's deadline and
//!   keeps its question alive meanwhile). A value that does not decode is a miss and
//!   is replaced. When the bucket refuses a claim (full), the request is answered
//!   without the cache: claims are never retried in a loop.
//! - The inference worker that generated a claimed answer [fills](ResponseCache::fill)
//!   the key, or [releases](ResponseCache::release) it when it did not produce a
//!   cacheable answer, and keeps its model's card in the bucket
//!   ([`crate::model_card`]): a key is made only with the fingerprint of the file that
//!   answers.
//! - An operator lists and clears the answers ([`ResponseCache::answers`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, kv};
use futures::StreamExt;
use tracing::{debug, warn};

use crate::ids::ModelName;
use crate::model_card::ModelCards;
use crate::names;
use crate::wire::{self, CacheEntry, CacheValue, ChatRequest, Passage, cache_key, now_ms};

/// How often a waiting request looks at a pending key.
const POLL: Duration = Duration::from_millis(25);
/// Claims lost to other requests before a lookup gives up on the cache.
const MAX_RACES: usize = 32;

/// What the cache says about one request.
#[derive(Debug)]
pub enum Lookup {
    /// The answer is cached.
    Hit(CacheEntry),
    /// Generate, and store the answer under `key` (claimed by this request).
    Miss {
        key: String,
        model_fingerprint: String,
    },
    /// Generate without the cache.
    Bypass,
}

/// Counters a worker announces.
#[derive(Debug, Default)]
pub struct CacheStats {
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    pub waits: AtomicU64,
    pub corrupt: AtomicU64,
    /// Claims the bucket refused (full): answered without the cache.
    pub refused: AtomicU64,
}

/// One answer key as an operator sees it.
#[derive(Debug)]
pub struct CachedKey {
    pub key: String,
    /// Bytes stored (zstd).
    pub stored_bytes: usize,
    pub value: Result<CacheValue, crate::WireError>,
}

/// The `cauce-cache` bucket.
pub struct ResponseCache {
    kv: kv::Store,
    /// The models' cards, kept in the same bucket.
    pub cards: ModelCards,
    pub stats: CacheStats,
}

impl ResponseCache {
    pub fn new(kv: kv::Store) -> Self {
        Self {
            cards: ModelCards::new(kv.clone()),
            kv,
            stats: CacheStats::default(),
        }
    }

    /// Opens the bucket, which the owner step made.
    pub async fn open(js: &jetstream::Context) -> crate::Result<Self> {
        let kv = js
            .get_key_value(names::CACHE_BUCKET)
            .await
            .map_err(|e| crate::Error::jetstream("open", names::CACHE_BUCKET, e))?;
        Ok(Self::new(kv))
    }

    /// Looks a deterministic request up, claiming its key on a miss; waits for another
    /// request's claim until `wait_until`, then takes the key over.
    pub async fn lookup(
        &self,
        request: &ChatRequest,
        passages: &[Passage],
        wait_until: Instant,
    ) -> Lookup {
        if !request.is_deterministic() {
            return Lookup::Bypass;
        }
        let Some(model_fingerprint) = self.fingerprint(&request.model).await else {
            debug!(model = %request.model, "no fingerprint for the model yet; not caching");
            return Lookup::Bypass;
        };
        let hash = cache_key(
            &request.model,
            &model_fingerprint,
            &request.sampling,
            &request.messages,
            passages,
        );
        let key = names::cache_entry_key(&hash);
        let claim = CacheValue::Pending {
            request_id: request.id.clone(),
            since_ms: now_ms(),
        };
        let Ok(claim) = wire::encode_compressed(&claim) else {
            return Lookup::Bypass;
        };
        let mut waited = false;
        let mut races = 0;
        while races < MAX_RACES {
            let entry = match self.kv.entry(key.as_str()).await {
                Ok(entry) => entry.filter(|e| e.operation == kv::Operation::Put),
                Err(err) => {
                    warn!(error = %err, "cache lookup failed; generating without it");
                    return Lookup::Bypass;
                }
            };
            let Some(entry) = entry else {
                match self.kv.create(key.as_str(), claim.clone()).await {
                    Ok(_) => return self.miss(key, model_fingerprint),
                    Err(err) if err.kind() == kv::CreateErrorKind::AlreadyExists => {
                        races += 1;
                        continue;
                    }
                    Err(err) => return self.refused(&key, &err),
                }
            };
            let take_over = match wire::decode_compressed::<CacheValue>(&entry.value) {
                Ok(CacheValue::Entry(answer)) => {
                    self.stats.hits.fetch_add(1, Ordering::Relaxed);
                    return Lookup::Hit(answer);
                }
                // our own claim, from a delivery of this request that died
                Ok(CacheValue::Pending { request_id, .. }) if request_id == request.id => true,
                Ok(CacheValue::Pending { .. }) if Instant::now() < wait_until => {
                    if !waited {
                        waited = true;
                        self.stats.waits.fetch_add(1, Ordering::Relaxed);
                    }
                    tokio::time::sleep(POLL).await;
                    false
                }
                // the claimant died or is too slow: take the key over
                Ok(CacheValue::Pending { .. }) => true,
                Err(err) => {
                    self.stats.corrupt.fetch_add(1, Ordering::Relaxed);
                    warn!(key = %key, error = %err, "corrupt cache value; replacing it");
                    true
                }
            };
            if take_over {
                match self
                    .kv
                    .update(key.as_str(), claim.clone(), entry.revision)
                    .await
                {
                    Ok(_) => return self.miss(key, model_fingerprint),
                    Err(err) if err.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                        races += 1;
                    }
                    Err(err) => return self.refused(&key, &err),
                }
            }
        }
        warn!(key = %key, "cannot claim a cache key; generating without the cache");
        Lookup::Bypass
    }

    fn miss(&self, key: String, model_fingerprint: String) -> Lookup {
        self.stats.misses.fetch_add(1, Ordering::Relaxed);
        Lookup::Miss {
            key,
            model_fingerprint,
        }
    }

    fn refused(&self, key: &str, err: &dyn std::fmt::Display) -> Lookup {
        self.stats.refused.fetch_add(1, Ordering::Relaxed);
        warn!(key, error = %err, "the cache bucket refused a claim (full?); generating without the cache");
        Lookup::Bypass
    }

    /// The fingerprint inference workers published for `model`, if any.
    async fn fingerprint(&self, model: &ModelName) -> Option<String> {
        let card = self.cards.get(model).await?;
        Some(card.fingerprint).filter(|f| !f.is_empty())
    }

    /// The key a prompt job's answer may be stored under: its claimed key, when the
    /// job's fingerprint is this worker's. A claim made for another model file is
    /// released, and nothing is stored.
    pub async fn claimed_key(
        &self,
        key: Option<String>,
        job_fingerprint: Option<String>,
        own_fingerprint: &str,
    ) -> Option<String> {
        match (key, job_fingerprint) {
            (Some(key), Some(fingerprint)) if fingerprint == own_fingerprint => Some(key),
            (Some(key), Some(_)) => {
                self.release(Some(&key)).await;
                None
            }
            _ => None,
        }
    }

    /// Stores a generated answer under its claimed key, replacing the claim. Returns
    /// its size as JSON and as stored (zstd) when it was stored.
    pub async fn fill(&self, key: &str, entry: CacheEntry) -> Option<(usize, usize)> {
        let value = CacheValue::Entry(entry);
        let (Ok(json), Ok(packed)) = (wire::encode(&value), wire::encode_compressed(&value)) else {
            self.release(Some(key)).await;
            return None;
        };
        match self.kv.put(key, packed.clone()).await {
            Ok(_) => {
                debug!(
                    key,
                    json_bytes = json.len(),
                    stored_bytes = packed.len(),
                    "answer cached"
                );
                Some((json.len(), packed.len()))
            }
            Err(err) => {
                warn!(key, error = %err, "caching the answer failed");
                self.release(Some(key)).await;
                None
            }
        }
    }

    /// Gives up a claim, so identical requests stop waiting for it.
    pub async fn release(&self, key: Option<&str>) {
        if let Some(key) = key
            && let Err(err) = self.kv.delete(key).await
        {
            debug!(key, error = %err, "releasing a cache claim failed");
        }
    }

    /// Every answer key with its value (cached answer, pending claim or unreadable).
    pub async fn answers(&self) -> crate::Result<Vec<CachedKey>> {
        let object = names::CACHE_BUCKET;
        let mut keys = self
            .kv
            .keys()
            .await
            .map_err(|e| crate::Error::jetstream("list keys", object, e))?;
        let mut answers = Vec::new();
        while let Some(key) = keys.next().await {
            let key = key.map_err(|e| crate::Error::jetstream("list keys", object, e))?;
            if !names::is_cache_entry_key(&key) {
                continue;
            }
            let Some(value) = self
                .kv
                .get(&key)
                .await
                .map_err(|e| crate::Error::jetstream("read", object, e))?
            else {
                continue;
            };
            answers.push(CachedKey {
                stored_bytes: value.len(),
                value: wire::decode_compressed::<CacheValue>(&value),
                key,
            });
        }
        Ok(answers)
    }

    /// Removes every cached answer and claim; the models' cards stay. Returns
    /// how many keys went.
    pub async fn clear(&self) -> crate::Result<usize> {
        let answers = self.answers().await?;
        for answer in &answers {
            self.kv
                .purge(&answer.key)
                .await
                .map_err(|e| crate::Error::jetstream("purge", names::CACHE_BUCKET, e))?;
        }
        Ok(answers.len())
    }
}
