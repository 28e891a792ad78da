//! The `cauce-results` record of each request, and the one rule for changing it.
//!
//! Every writer (the gateway that queues a task or cancels it, the worker that runs or
//! answers it, the process that turns a dead letter into a failure) goes through
//! [`Results`]. A record only moves forward — queued → running → done / failed /
//! cancelled — and each write is a compare-and-set on the record's revision, so a late
//! writer (a slow worker whose job was redelivered, a dead letter for a request that
//! was answered meanwhile) can never move a finished request back: its write is
//! refused and it learns what the record holds.

use std::time::Duration;

use async_nats::jetstream::{self, kv};

use crate::error::NotAcked;
use crate::ids::RequestId;
use crate::names;
use crate::retry::{Transient, until_acked};
use crate::wire::{self, ResultStatus, StoredResult};

/// Compare-and-set rounds lost to other writers before a write gives up.
const MAX_RACES: usize = 16;

/// What became of a write.
#[derive(Clone, Debug, PartialEq)]
pub enum Written {
    Stored,
    /// The record may not move to what was written; this is what it holds.
    Refused(Box<StoredResult>),
}

/// Whether a record holding `current` may be replaced by `next`.
pub fn may_move(current: &StoredResult, next: &StoredResult) -> bool {
    if current.status.is_final() {
        return false;
    }
    match next.status {
        // a record is queued only when it is made
        ResultStatus::Queued => false,
        // an attempt never takes the record back from a later one
        ResultStatus::Running => {
            current.status == ResultStatus::Queued || next.attempt >= current.attempt
        }
        ResultStatus::Done | ResultStatus::Failed | ResultStatus::Cancelled => true,
    }
}

/// One try at a write failed.
#[derive(Debug, thiserror::Error)]
enum TryError {
    #[error("results bucket: {0}")]
    Unavailable(String),
    #[error("results bucket: lost {MAX_RACES} compare-and-set rounds to other writers")]
    Contended,
}

impl Transient for TryError {
    fn is_transient(&self) -> bool {
        // both pass: another round (after a pause) reads the record again
        matches!(self, TryError::Unavailable(_) | TryError::Contended)
    }
}

/// The results bucket.
#[derive(Clone)]
pub struct Results {
    kv: kv::Store,
}

impl Results {
    pub fn new(kv: kv::Store) -> Self {
        Self { kv }
    }

    /// Opens the bucket, which the owner step made.
    pub async fn open(js: &jetstream::Context) -> crate::Result<Self> {
        let kv = js
            .get_key_value(names::RESULTS_BUCKET)
            .await
            .map_err(|e| crate::Error::jetstream("open", names::RESULTS_BUCKET, e))?;
        Ok(Self { kv })
    }

    /// The record of one request, if there is one (and it can be read).
    pub async fn get(&self, id: &RequestId) -> crate::Result<Option<StoredResult>> {
        Ok(self.entry(id).await?.map(|(_, result)| result))
    }

    /// The record and its revision.
    pub async fn entry(&self, id: &RequestId) -> crate::Result<Option<(u64, StoredResult)>> {
        let key = names::request_key(id);
        let entry = self
            .kv
            .entry(key)
            .await
            .map_err(|e| crate::Error::jetstream("read", format!("result {key}"), e))?;
        let Some(entry) = entry.filter(|e| e.operation == kv::Operation::Put) else {
            return Ok(None);
        };
        let result = wire::decode_compressed(&entry.value)?;
        Ok(Some((entry.revision, result)))
    }

    /// Makes the record of a new request as `queued`. Retried through leader elections
    /// for up to `limit`; a record that exists already (a retried create whose ack was
    /// lost) counts as made.
    pub async fn create(&self, queued: &StoredResult, limit: Duration) -> Result<(), NotAcked> {
        let payload = encode(queued)?;
        let key = names::request_key(&queued.request_id);
        until_acked(limit, "storing the task", || async {
            match self.kv.create(key, payload.clone()).await {
                Ok(_) => Ok(()),
                Err(err) if err.kind() == kv::CreateErrorKind::AlreadyExists => Ok(()),
                Err(err) => Err(TryError::Unavailable(err.to_string())),
            }
        })
        .await
    }

    /// Writes `next` if the record may move to it ([`may_move`]), retried through leader
    /// elections for up to `limit`.
    pub async fn advance(&self, next: &StoredResult, limit: Duration) -> Result<Written, NotAcked> {
        self.advance_from(next, limit, |_| true).await
    }

    /// [`advance`](Self::advance), and only from a record that `from` accepts (a cancel
    /// through the tasks API moves only a request no worker has started).
    pub async fn advance_from(
        &self,
        next: &StoredResult,
        limit: Duration,
        from: fn(&StoredResult) -> bool,
    ) -> Result<Written, NotAcked> {
        let payload = encode(next)?;
        let attempt = || self.try_advance(next, &payload, from);
        until_acked(limit, "storing the result", attempt).await
    }

    async fn try_advance(
        &self,
        next: &StoredResult,
        payload: &bytes::Bytes,
        from: fn(&StoredResult) -> bool,
    ) -> Result<Written, TryError> {
        let key = names::request_key(&next.request_id);
        for _ in 0..MAX_RACES {
            let current = self
                .entry(&next.request_id)
                .await
                .map_err(|e| TryError::Unavailable(e.to_string()))?;
            let written = match current {
                None => self.kv.create(key, payload.clone()).await.map_err(|err| {
                    (err.kind() == kv::CreateErrorKind::AlreadyExists)
                        .then_some(())
                        .ok_or_else(|| TryError::Unavailable(err.to_string()))
                }),
                // our own write, stored by a try whose ack was lost
                Some((_, current)) if current == *next => return Ok(Written::Stored),
                Some((_, current)) if !may_move(&current, next) || !from(&current) => {
                    return Ok(Written::Refused(Box::new(current)));
                }
                Some((revision, _)) => self
                    .kv
                    .update(key, payload.clone(), revision)
                    .await
                    .map_err(|err| {
                        (err.kind() == kv::UpdateErrorKind::WrongLastRevision)
                            .then_some(())
                            .ok_or_else(|| TryError::Unavailable(err.to_string()))
                    }),
            };
            match written {
                Ok(_) => return Ok(Written::Stored),
                // another writer got there first: read again and decide again
                Err(Ok(())) => continue,
                Err(Err(err)) => return Err(err),
            }
        }
        Err(TryError::Contended)
    }

    /// Removes a record (a task whose question could not be queued).
    pub async fn purge(&self, id: &RequestId) {
        if let Err(err) = self.kv.purge(names::request_key(id)).await {
            tracing::debug!(request_id = %id, error = %err, "purging a result failed");
        }
    }
}

fn encode(result: &StoredResult) -> Result<bytes::Bytes, NotAcked> {
    wire::encode_compressed(result).map_err(|err| NotAcked::Refused {
        what: "storing the result",
        reason: err.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::ModelName;

    fn record(status: ResultStatus, attempt: u32) -> StoredResult {
        StoredResult {
            status,
            attempt,
            ..StoredResult::queued(RequestId::generate(), ModelName::default_model(), 1)
        }
    }

    #[test]
    fn a_record_only_moves_forward() {
        use ResultStatus::*;
        let all = [Queued, Running, Done, Failed, Cancelled];
        for from in all {
            for to in all {
                let allowed = may_move(&record(from, 1), &record(to, 1));
                let expected = !from.is_final() && to != Queued;
                assert_eq!(allowed, expected, "{from:?} -> {to:?}");
            }
        }
    }

    #[test]
    fn an_earlier_attempt_never_takes_the_record_back() {
        use ResultStatus::*;
        assert!(!may_move(&record(Running, 3), &record(Running, 2)));
        assert!(may_move(&record(Running, 2), &record(Running, 3)));
        assert!(may_move(&record(Queued, 0), &record(Running, 1)));
        // the first attempt to finish wins, whichever it is
        assert!(may_move(&record(Running, 3), &record(Done, 2)));
    }
}
