//! Following `DOCS`: an ordered consumer from the index's last applied sequence,
//! records gathered into batches (up to a size, or whatever arrived within a short
//! linger), each batch applied and committed on a blocking thread. This task is the
//! only owner of the index writer; it reports its progress on a `watch` channel.
//!
//! A batch that cannot be applied (a full disk, a tantivy error) leaves the index as it
//! was: the follower reports the error (the worker's stats carry it, so `/readyz` and
//! `cauce status` show it), waits longer after each failure, and tries the batch again;
//! after [`REBUILD_AFTER`] failures in a row it clears the index and rebuilds it from
//! the first `DOCS` sequence. It never ends on its own while the worker runs.

use std::time::Duration;

use async_nats::jetstream::{self, consumer};
use cauce_nats::names;
use futures::StreamExt;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::error::{Error, Result};
use crate::index::{DocsMessage, LocalIndex};

/// Failures in a row after which the index is rebuilt from `DOCS`.
pub const REBUILD_AFTER: u32 = 5;
/// The longest pause between two tries of a failed batch.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// How records are batched into commits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FollowOptions {
    /// Most records in one commit.
    pub max_batch: usize,
    /// How long to wait for more records before committing what arrived.
    pub linger: Duration,
}

impl Default for FollowOptions {
    fn default() -> Self {
        Self {
            max_batch: 512,
            linger: Duration::from_millis(100),
        }
    }
}

/// Where the follower is.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FollowStatus {
    /// Last `DOCS` sequence committed to the index.
    pub docs_seq: u64,
    /// Records (documents and tombstones) applied since this process started.
    pub applied: u64,
    /// Everything that was in `DOCS` when the follower started is in the index.
    pub caught_up: bool,
    /// Why the last batch could not be applied; `None` once one is applied again.
    pub error: Option<String>,
    /// Batches failed in a row.
    pub failures: u32,
    /// `DOCS` records published after the last one applied, as the server last said.
    pub lag: u64,
}

/// A running follower.
pub struct Follower {
    pub status: watch::Receiver<FollowStatus>,
    pub task: JoinHandle<Result<()>>,
}

impl Follower {
    /// Starts following from `index`'s sequence; `catch_up_to` is the stream's last
    /// sequence at start, after which the index counts as caught up.
    pub fn spawn(
        js: jetstream::Context,
        index: LocalIndex,
        catch_up_to: u64,
        options: FollowOptions,
        cancel: CancellationToken,
    ) -> Self {
        let docs_seq = index.docs_seq();
        let initial = FollowStatus {
            docs_seq,
            applied: 0,
            caught_up: docs_seq >= catch_up_to,
            error: None,
            failures: 0,
            lag: catch_up_to.saturating_sub(docs_seq),
        };
        if initial.caught_up {
            info!(docs_seq, "index is up to date with DOCS");
        } else {
            info!(
                from = docs_seq,
                to = catch_up_to,
                "index catching up with DOCS"
            );
        }
        let (status_tx, status) = watch::channel(initial);
        let task = tokio::spawn(follow(js, index, catch_up_to, options, status_tx, cancel));
        Self { status, task }
    }

    /// Resolves once the index is caught up (or the follower stopped).
    pub async fn caught_up(&mut self) -> FollowStatus {
        let waited = self
            .status
            .wait_for(|s| s.caught_up)
            .await
            .map(|status| status.clone());
        waited.unwrap_or_else(|_| self.status.borrow().clone())
    }
}

async fn follow(
    js: jetstream::Context,
    index: LocalIndex,
    catch_up_to: u64,
    options: FollowOptions,
    status_tx: watch::Sender<FollowStatus>,
    cancel: CancellationToken,
) -> Result<()> {
    let mut index = Some(index);
    let mut status = status_tx.borrow().clone();
    'consumer: while !cancel.is_cancelled() {
        let mut messages = match open(&js, status.docs_seq).await {
            Ok(messages) => messages,
            Err(err) => {
                warn!(error = %err, kind = err.kind(), "cannot follow DOCS, retrying");
                tokio::select! {
                    () = cancel.cancelled() => break,
                    () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                }
            }
        };
        loop {
            let next = tokio::select! {
                () = cancel.cancelled() => break 'consumer,
                next = messages.next() => next,
            };
            let first = match next {
                Some(Ok(message)) => message,
                Some(Err(err)) => {
                    warn!(error = %err, "DOCS consumer error, reopening");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue 'consumer;
                }
                None => continue 'consumer,
            };
            let mut batch = Vec::new();
            let mut pending = push(&mut batch, first);
            while batch.len() < options.max_batch && pending != Some(0) {
                match tokio::time::timeout(options.linger, messages.next()).await {
                    Ok(Some(Ok(message))) => pending = push(&mut batch, message),
                    _ => break,
                }
            }
            let mut owned = index
                .take()
                .expect("the index is put back after every batch");
            let (owned, applied) = tokio::task::spawn_blocking(move || {
                let applied = owned.apply(&batch);
                (owned, applied)
            })
            .await
            .map_err(|source| Error::Task {
                what: "index batch",
                source,
            })?;
            let applied = match applied {
                Ok(applied) => applied,
                Err(err) => {
                    index = Some(owned);
                    let pause = failed(&mut index, &mut status, &err).await;
                    status_tx.send_replace(status.clone());
                    tokio::select! {
                        () = cancel.cancelled() => break 'consumer,
                        () = tokio::time::sleep(pause) => continue 'consumer,
                    }
                }
            };
            status.docs_seq = owned.docs_seq();
            status.lag = pending.unwrap_or(status.lag);
            index = Some(owned);
            status.applied += applied;
            if status.error.take().is_some() {
                info!(docs_seq = status.docs_seq, "index batches apply again");
            }
            status.failures = 0;
            if !status.caught_up && (status.docs_seq >= catch_up_to || pending == Some(0)) {
                status.caught_up = true;
                info!(
                    docs_seq = status.docs_seq,
                    applied = status.applied,
                    "index caught up with DOCS"
                );
            }
            debug!(
                docs_seq = status.docs_seq,
                applied = status.applied,
                "index batch committed"
            );
            status_tx.send_replace(status.clone());
        }
    }
    Ok(())
}

/// Records a failed batch; after [`REBUILD_AFTER`] in a row, clears the index so that
/// the follower rebuilds it from `DOCS`. Returns how long to wait before trying again.
async fn failed(
    index: &mut Option<LocalIndex>,
    status: &mut FollowStatus,
    err: &Error,
) -> Duration {
    status.failures += 1;
    status.error = Some(err.to_string());
    warn!(error = %err, kind = err.kind(), failures = status.failures, docs_seq = status.docs_seq, "applying a DOCS batch failed; the index is not updated");
    if status.failures.is_multiple_of(REBUILD_AFTER)
        && let Some(mut owned) = index.take()
    {
        let cleared = tokio::task::spawn_blocking(move || {
            let cleared = owned.clear();
            (owned, cleared)
        })
        .await;
        match cleared {
            Ok((owned, Ok(()))) => {
                warn!("index cleared after repeated failures; rebuilding it from DOCS");
                status.docs_seq = owned.docs_seq();
                status.caught_up = false;
                *index = Some(owned);
            }
            Ok((owned, Err(err))) => {
                warn!(error = %err, "clearing the index failed");
                status.docs_seq = owned.docs_seq();
                *index = Some(owned);
            }
            // the index went with the thread: the follower ends and says so
            Err(err) => warn!(error = %err, "clearing the index panicked"),
        }
    }
    let exponent = status.failures.saturating_sub(1).min(5);
    (Duration::from_secs(1) * 2u32.pow(exponent)).min(MAX_BACKOFF)
}

/// Adds a message to the batch; returns what the server says is still pending.
fn push(batch: &mut Vec<DocsMessage>, message: jetstream::Message) -> Option<u64> {
    let (seq, pending) = match message.info() {
        Ok(info) => (info.stream_sequence, Some(info.pending)),
        Err(_) => return None,
    };
    batch.push(DocsMessage {
        seq,
        subject: message.subject.to_string(),
        payload: message.payload.clone(),
    });
    pending
}

async fn open(js: &jetstream::Context, after_seq: u64) -> Result<consumer::pull::Ordered> {
    let stream = js
        .get_stream(names::DOCS)
        .await
        .map_err(|e| Error::jetstream("look up DOCS")(e.into()))?;
    let deliver_policy = match after_seq {
        0 => consumer::DeliverPolicy::All,
        seq => consumer::DeliverPolicy::ByStartSequence {
            start_sequence: seq + 1,
        },
    };
    let consumer = stream
        .create_consumer(consumer::pull::OrderedConfig {
            filter_subject: names::DOCS_SUBJECTS.into(),
            deliver_policy,
            ..Default::default()
        })
        .await
        .map_err(|e| Error::jetstream("create DOCS consumer")(e.into()))?;
    consumer
        .messages()
        .await
        .map_err(|e| Error::jetstream("follow DOCS")(e.into()))
}
