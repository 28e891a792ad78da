//! Publishing to `DOCS`: skip what is unchanged, publish the rest with a bounded
//! number of acks in flight, and tombstone what is gone.

use std::collections::HashSet;
use std::path::PathBuf;

use async_nats::jetstream::context::{PublishAckFuture, PublishErrorKind};
use async_nats::jetstream::stream::{LastRawMessageErrorKind, Stream};
use async_nats::jetstream::{self};
use bytes::Bytes;
use cauce_nats::wire::{self, DocRecord, Tombstone};
use cauce_nats::{DocId, names};
use futures::stream::FuturesUnordered;
use futures::{StreamExt, TryStreamExt};
use tracing::{debug, info};

use crate::error::{Error, Result};

/// What the `DOCS` stream holds for one document now.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Current {
    Missing,
    Version(String),
    Tombstone,
    /// A payload this build cannot read: treat it as different.
    Unreadable,
}

/// The latest record on `cauce.docs.<id>`.
pub(crate) async fn current(stream: &Stream, id: &DocId) -> Result<Current> {
    let subject = names::doc_subject(id);
    let message = match stream.get_last_raw_message_by_subject(&subject).await {
        Ok(message) => message,
        Err(err) if err.kind() == LastRawMessageErrorKind::NoMessageFound => {
            return Ok(Current::Missing);
        }
        Err(err) => return Err(Error::jetstream("get last document", err)),
    };
    Ok(
        match wire::decode_compressed::<DocRecord>(&message.payload) {
            Ok(DocRecord::Document(doc)) => Current::Version(doc.version),
            Ok(DocRecord::Tombstone(_)) => Current::Tombstone,
            Err(err) => {
                debug!(doc_id = %id, error = %err, "stored document is unreadable, republishing");
                Current::Unreadable
            }
        },
    )
}

/// Publishes with at most `max_in_flight` acks outstanding.
pub(crate) struct Publisher {
    js: jetstream::Context,
    max_in_flight: usize,
    in_flight: FuturesUnordered<AckWait>,
}

type AckWait = std::pin::Pin<Box<dyn Future<Output = (PathBuf, Result<()>)> + Send>>;

impl Publisher {
    pub(crate) fn new(js: jetstream::Context, max_in_flight: usize) -> Self {
        Self {
            js,
            max_in_flight: max_in_flight.max(1),
            in_flight: FuturesUnordered::new(),
        }
    }

    /// Sends one record; waits first while the in-flight window is full.
    pub(crate) async fn publish(
        &mut self,
        id: &DocId,
        path: PathBuf,
        payload: Bytes,
    ) -> Result<()> {
        while self.in_flight.len() >= self.max_in_flight {
            self.settle_one().await?;
        }
        let ack: PublishAckFuture = self
            .js
            .publish(names::doc_subject(id), payload)
            .await
            .map_err(|e| Error::jetstream("publish document", e))?;
        self.in_flight.push(Box::pin(async move {
            let acked = ack
                .await
                .map(|_| ())
                .map_err(|e| Error::jetstream("document publish ack", e));
            (path, acked)
        }));
        Ok(())
    }

    async fn settle_one(&mut self) -> Result<()> {
        match self.in_flight.next().await {
            Some((path, Err(err))) => {
                info!(path = %path.display(), error = %err, "document publish failed");
                Err(err)
            }
            _ => Ok(()),
        }
    }

    /// Waits for every outstanding ack.
    pub(crate) async fn flush(&mut self) -> Result<()> {
        while !self.in_flight.is_empty() {
            self.settle_one().await?;
        }
        Ok(())
    }
}

/// Document ids in `DOCS` under one of `scopes` that are not in `seen` and are not
/// already tombstones.
pub(crate) async fn missing(
    stream: &Stream,
    scopes: &[String],
    seen: &HashSet<DocId>,
) -> Result<Vec<DocId>> {
    if scopes.is_empty() {
        return Ok(Vec::new());
    }
    let mut info = stream
        .info_with_subjects(names::DOCS_SUBJECTS)
        .await
        .map_err(|e| Error::jetstream("list documents", e))?;
    let mut candidates = Vec::new();
    while let Some((subject, _count)) = info
        .try_next()
        .await
        .map_err(|e| Error::jetstream("list documents", e))?
    {
        let Some(id) = names::doc_id_from_subject(&subject) else {
            continue;
        };
        if !seen.contains(&id)
            && scopes
                .iter()
                .any(|scope| id.as_str().starts_with(scope.as_str()))
        {
            candidates.push(id);
        }
    }
    candidates.sort();
    let mut gone = Vec::new();
    for id in candidates {
        if current(stream, &id).await? != Current::Tombstone {
            gone.push(id);
        }
    }
    Ok(gone)
}

/// The stream sequence of the latest record on `cauce.docs.<id>`; 0 when there is none.
pub(crate) async fn last_sequence(stream: &Stream, id: &DocId) -> Result<u64> {
    match stream
        .get_last_raw_message_by_subject(&names::doc_subject(id))
        .await
    {
        Ok(message) => Ok(message.sequence),
        Err(err) if err.kind() == LastRawMessageErrorKind::NoMessageFound => Ok(0),
        Err(err) => Err(Error::jetstream("get last document", err)),
    }
}

/// Publishes `payload` as the next record of `id` only while the subject's latest
/// record is still the one at `expected` (0: none), so that a job that read an older
/// state never publishes over a newer one. `None` when another record came first.
pub(crate) async fn publish_after(
    js: &jetstream::Context,
    id: &DocId,
    payload: Bytes,
    expected: u64,
) -> Result<Option<u64>> {
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(
        async_nats::header::NATS_EXPECTED_LAST_SUBJECT_SEQUENCE,
        expected.to_string().as_str(),
    );
    let what = "publish an uploaded document";
    let ack = js
        .publish_with_headers(names::doc_subject(id), headers, payload)
        .await
        .map_err(|e| Error::jetstream(what, e))?;
    match ack.await {
        Ok(ack) => Ok(Some(ack.sequence)),
        Err(err) if err.kind() == PublishErrorKind::WrongLastSequence => Ok(None),
        Err(err) => Err(Error::jetstream(what, err)),
    }
}

/// The compressed tombstone of `id`.
pub(crate) fn tombstone(id: &DocId) -> Result<Bytes> {
    let record = DocRecord::Tombstone(Tombstone {
        id: id.clone(),
        deleted_at_ms: wire::now_ms(),
    });
    Ok(wire::encode_compressed(&record)?)
}
