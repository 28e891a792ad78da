//! The response cache lookup, done after retrieval so that the key covers the versions
//! of the passages found (see `cauce_nats::wire::cache_key`).
//!
//! Only deterministic requests are cached (temperature 0 or an explicit seed), unless
//! the question opted out (`Cauce-Cache: off`) or the cache is turned off for the
//! worker. A miss claims the key with a `pending` marker before the prompt job is
//! published; identical requests arriving meanwhile wait for that answer instead of
//! generating it again (single flight), for at most `max_wait`. A value that does not
//! decode is treated as a miss and replaced.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_nats::jetstream::kv::{self, Operation};
use cauce_nats::wire::{self, CacheEntry, CacheValue, ChatRequest, Passage, cache_key, now_ms};
use cauce_nats::{ModelName, names};
use tracing::{debug, warn};

/// How often a waiting request looks at a pending key.
const POLL: Duration = Duration::from_millis(25);
/// How long a model's fingerprint is trusted before it is read again.
const FINGERPRINT_TTL: Duration = Duration::from_secs(10);

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

/// Counters the worker announces.
#[derive(Debug, Default)]
pub struct CacheStats {
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    pub waits: AtomicU64,
    pub corrupt: AtomicU64,
}

pub struct ResponseCache {
    kv: kv::Store,
    enabled: bool,
    max_wait: Duration,
    fingerprints: Mutex<HashMap<ModelName, (Option<String>, Instant)>>,
    pub stats: CacheStats,
}

impl ResponseCache {
    pub fn new(kv: kv::Store, enabled: bool, max_wait: Duration) -> Self {
        Self {
            kv,
            enabled,
            max_wait,
            fingerprints: Mutex::default(),
            stats: CacheStats::default(),
        }
    }

    pub async fn lookup(
        &self,
        request: &ChatRequest,
        passages: &[Passage],
        opted_out: bool,
    ) -> Lookup {
        if !self.enabled || opted_out || !request.is_deterministic() {
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
        let deadline = Instant::now() + self.max_wait;
        let mut waited = false;
        loop {
            if Instant::now() > deadline + self.max_wait {
                warn!(key = %key, "cannot claim a cache key; generating without the cache");
                return Lookup::Bypass;
            }
            let entry = match self.kv.entry(key.as_str()).await {
                Ok(entry) => entry.filter(|e| e.operation == Operation::Put),
                Err(err) => {
                    warn!(error = %err, "cache lookup failed; generating without it");
                    return Lookup::Bypass;
                }
            };
            match entry {
                None => match self.kv.create(key.as_str(), claim.clone()).await {
                    Ok(_) => return self.miss(key, model_fingerprint),
                    // another request claimed it first: look again
                    Err(_) => continue,
                },
                Some(entry) => match wire::decode_compressed::<CacheValue>(&entry.value) {
                    Ok(CacheValue::Entry(answer)) => {
                        self.stats.hits.fetch_add(1, Ordering::Relaxed);
                        return Lookup::Hit(answer);
                    }
                    Ok(CacheValue::Pending { since_ms, .. }) => {
                        let stale =
                            now_ms().saturating_sub(since_ms) > self.max_wait.as_millis() as u64;
                        if stale || Instant::now() >= deadline {
                            // the claimant died or is too slow: take the key over
                            if self
                                .kv
                                .update(key.as_str(), claim.clone(), entry.revision)
                                .await
                                .is_ok()
                            {
                                return self.miss(key, model_fingerprint);
                            }
                            continue;
                        }
                        if !waited {
                            waited = true;
                            self.stats.waits.fetch_add(1, Ordering::Relaxed);
                        }
                        tokio::time::sleep(POLL).await;
                    }
                    Err(err) => {
                        self.stats.corrupt.fetch_add(1, Ordering::Relaxed);
                        warn!(key = %key, error = %err, "corrupt cache value; replacing it");
                        if self
                            .kv
                            .update(key.as_str(), claim.clone(), entry.revision)
                            .await
                            .is_ok()
                        {
                            return self.miss(key, model_fingerprint);
                        }
                    }
                },
            }
        }
    }

    fn miss(&self, key: String, model_fingerprint: String) -> Lookup {
        self.stats.misses.fetch_add(1, Ordering::Relaxed);
        Lookup::Miss {
            key,
            model_fingerprint,
        }
    }

    /// The fingerprint inference workers published for `model`, if any.
    async fn fingerprint(&self, model: &ModelName) -> Option<String> {
        if let Some((fingerprint, read_at)) =
            self.fingerprints.lock().expect("not poisoned").get(model)
            && read_at.elapsed() < FINGERPRINT_TTL
        {
            return fingerprint.clone();
        }
        let read = self
            .kv
            .get(names::model_fingerprint_key(model))
            .await
            .ok()
            .flatten();
        let fingerprint = read
            .and_then(|v| String::from_utf8(v.to_vec()).ok())
            .filter(|f| !f.is_empty());
        self.fingerprints
            .lock()
            .expect("not poisoned")
            .insert(model.clone(), (fingerprint.clone(), Instant::now()));
        fingerprint
    }
}
