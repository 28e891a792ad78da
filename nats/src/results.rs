//! The `cauce-results` record of each request, and the one rule for changing it.
//!
//! Every writer (the gateway that queues a task or cancels it, the worker that runs or
//! answers it, the process that turns a dead letter into a failure) goes through
//! [`Results`]. A record only moves forward — queued → running → done / failed /
//! cancelled — and each write is a compare-and-set on the record's revision, so a late
//! writer (a slow worker whose job was redelivered, a dead letter for a request that
//! was answered meanwhile) can never move a finished request back: its write is
//! refused and it learns what the record holds.
//!
//! A worker that runs a job holds the record while it runs (the job is *fenced*):
//! [`Results::claim`] records its attempt and owner, and every later write of that run
//! ([`Results::hold`]: the answer so far before each batch of deltas is sent, then the
//! end) is a compare-and-set on the revision the run last wrote. When a job is
//! redelivered (its worker died, or was too slow to say it is alive), the new attempt
//! claims the record and continues the answer it holds; the old run's next write is
//! refused, so it stops and never publishes over the new owner.

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
        // only the attempt that holds a running record ends it
        ResultStatus::Done | ResultStatus::Failed | ResultStatus::Cancelled => {
            current.status != ResultStatus::Running || next.attempt >= current.attempt
        }
    }
}

/// The hold of one job run on its request's record.
#[derive(Clone, Debug)]
pub struct Hold {
    revision: u64,
    attempt: u32,
    owner: String,
}

impl Hold {
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// Whether `record` was written by this run.
    fn wrote(&self, record: &StoredResult) -> bool {
        record.status == ResultStatus::Running
            && record.attempt == self.attempt
            && record.owner == self.owner
    }
}

/// What a claim found.
#[derive(Clone, Debug, PartialEq)]
pub enum Claimed {
    /// The record is this run's. It holds the answer so far (empty on a first attempt,
    /// what an earlier attempt had sent otherwise), which the run continues.
    Held(Box<StoredResult>),
    /// The request has ended, or a later attempt holds it: this is what it holds.
    Lost(Box<StoredResult>),
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

    /// Takes the record for the run `running` describes (status `running`, its attempt
    /// and owner), keeping the answer so far an earlier attempt left in it.
    pub async fn claim(
        &self,
        running: &StoredResult,
        limit: Duration,
    ) -> Result<(Hold, Claimed), NotAcked> {
        let mut hold = Hold {
            revision: 0,
            attempt: running.attempt,
            owner: running.owner.clone(),
        };
        let (claimed, revision) = until_acked(limit, "claiming the request", || {
            self.try_claim(running, &hold)
        })
        .await?;
        hold.revision = revision;
        Ok((hold, claimed))
    }

    /// The claim and the revision it holds the record at.
    async fn try_claim(
        &self,
        running: &StoredResult,
        hold: &Hold,
    ) -> Result<(Claimed, u64), TryError> {
        let key = names::request_key(&running.request_id);
        for _ in 0..MAX_RACES {
            let current = self.read(&running.request_id).await?;
            let next = match &current {
                Some((revision, current)) if hold.wrote(current) => {
                    // our own claim, stored by a try whose ack was lost
                    return Ok((Claimed::Held(Box::new(current.clone())), *revision));
                }
                Some((revision, current)) if !may_move(current, running) => {
                    return Ok((Claimed::Lost(Box::new(current.clone())), *revision));
                }
                Some((_, current)) if current.status == ResultStatus::Running => StoredResult {
                    text: current.text.clone(),
                    usage: current.usage,
                    ..running.clone()
                },
                _ => running.clone(),
            };
            let payload = encode(&next).map_err(|e| TryError::Unavailable(e.to_string()))?;
            let written = match current {
                None => self.kv.create(key, payload).await.map_err(|e| {
                    (e.kind() == kv::CreateErrorKind::AlreadyExists)
                        .then_some(())
                        .ok_or_else(|| TryError::Unavailable(e.to_string()))
                }),
                Some((revision, _)) => self.kv.update(key, payload, revision).await.map_err(|e| {
                    (e.kind() == kv::UpdateErrorKind::WrongLastRevision)
                        .then_some(())
                        .ok_or_else(|| TryError::Unavailable(e.to_string()))
                }),
            };
            match written {
                Ok(revision) => return Ok((Claimed::Held(Box::new(next)), revision)),
                Err(Ok(())) => continue,
                Err(Err(err)) => return Err(err),
            }
        }
        Err(TryError::Contended)
    }

    /// Writes `next` (the answer so far, or the end) as the run `hold` stands for.
    /// `Ok(None)`: stored. `Ok(Some(record))`: the run lost the job (a later attempt
    /// claimed it, or the request ended) and must stop without sending anything more.
    pub async fn hold(
        &self,
        hold: &mut Hold,
        next: &StoredResult,
        limit: Duration,
    ) -> Result<Option<Box<StoredResult>>, NotAcked> {
        let payload = encode(next)?;
        let (lost, revision) = until_acked(limit, "storing the answer", || {
            self.try_hold(hold, next, &payload)
        })
        .await?;
        hold.revision = revision;
        Ok(lost)
    }

    /// What [`hold`](Self::hold) found, and the revision the run holds the record at.
    async fn try_hold(
        &self,
        hold: &Hold,
        next: &StoredResult,
        payload: &bytes::Bytes,
    ) -> Result<(Option<Box<StoredResult>>, u64), TryError> {
        let key = names::request_key(&next.request_id);
        let mut expected = hold.revision;
        for _ in 0..MAX_RACES {
            match self.kv.update(key, payload.clone(), expected).await {
                Ok(revision) => return Ok((None, revision)),
                Err(err) if err.kind() == kv::UpdateErrorKind::WrongLastRevision => {}
                Err(err) => return Err(TryError::Unavailable(err.to_string())),
            }
            // the revision moved: an earlier write of ours whose ack was lost, or
            // another writer
            match self.read(&next.request_id).await? {
                Some((revision, current)) if current == *next => return Ok((None, revision)),
                Some((revision, current)) if hold.wrote(&current) => expected = revision,
                Some((revision, current)) => return Ok((Some(Box::new(current)), revision)),
                // removed by an operator: nobody waits for this run any more
                None => return Ok((Some(Box::new(next.clone())), expected)),
            }
        }
        Err(TryError::Contended)
    }

    async fn read(&self, id: &RequestId) -> Result<Option<(u64, StoredResult)>, TryError> {
        self.entry(id)
            .await
            .map_err(|e| TryError::Unavailable(e.to_string()))
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
        // only the attempt that holds a running record ends it
        assert!(!may_move(&record(Running, 3), &record(Done, 2)));
        assert!(may_move(&record(Running, 3), &record(Done, 3)));
        assert!(may_move(&record(Queued, 0), &record(Cancelled, 0)));
    }
}
