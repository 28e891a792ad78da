//! Retrying JetStream writes through a leader election or a reconnect.
//!
//! While a clustered stream elects a new leader, or the client reconnects to another
//! server, writes fail (no responders, no stream for the subject, cluster not ready,
//! no ack) for a few seconds and then work again. [`until_acked`] repeats such a write,
//! pausing a little longer after each failure, until it is acked or a time limit has
//! passed; an error that another try cannot fix ([`Transient`]) ends it at once. Only
//! writes that are safe to repeat go through it: a publish with `Nats-Msg-Id` (stored
//! once), a put of the same value under the same key.

use std::future::Future;
use std::time::Duration;

use async_nats::jetstream::context::{PublishError, PublishErrorKind};
use async_nats::jetstream::kv::{PutError, PutErrorKind};
use tokio::time::Instant;

use crate::error::NotAcked;

/// One attempt waits this long for its ack at most.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);
const PAUSE_MIN: Duration = Duration::from_millis(50);
const PAUSE_MAX: Duration = Duration::from_millis(800);

/// Whether a failed write may work when tried again.
pub trait Transient: std::fmt::Display {
    fn is_transient(&self) -> bool;
}

impl Transient for PublishError {
    fn is_transient(&self) -> bool {
        // `Other` covers the server's own refusals while a cluster is not ready
        !matches!(
            self.kind(),
            PublishErrorKind::WrongLastMessageId
                | PublishErrorKind::WrongLastSequence
                | PublishErrorKind::MaxPayloadExceeded
        )
    }
}

impl Transient for PutError {
    fn is_transient(&self) -> bool {
        self.kind() != PutErrorKind::InvalidKey
    }
}

/// Runs `attempt` until it succeeds, fails for good, or `limit` has passed.
pub async fn until_acked<T, E, F, Fut>(
    limit: Duration,
    what: &'static str,
    mut attempt: F,
) -> Result<T, NotAcked>
where
    E: Transient,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let deadline = Instant::now() + limit;
    let mut pause = PAUSE_MIN;
    loop {
        let wait = deadline
            .saturating_duration_since(Instant::now())
            .min(ATTEMPT_TIMEOUT);
        let last = match tokio::time::timeout(wait, attempt()).await {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(err)) if !err.is_transient() => {
                return Err(NotAcked::Refused {
                    what,
                    reason: err.to_string(),
                });
            }
            Ok(Err(err)) => err.to_string(),
            Err(_) => format!("no ack within {} ms", wait.as_millis()),
        };
        if Instant::now() + pause >= deadline {
            return Err(NotAcked::TimedOut { what, limit, last });
        }
        tracing::debug!(what, last, "jetstream write not acked; retrying");
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(PAUSE_MAX);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn error(kind: PublishErrorKind) -> PublishError {
        PublishError::new(kind)
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_that_fails_for_a_while_is_retried_until_it_works() {
        let tries = AtomicU32::new(0);
        let value = until_acked(Duration::from_secs(5), "a put", || async {
            match tries.fetch_add(1, Ordering::Relaxed) {
                0..3 => Err(error(PublishErrorKind::StreamNotFound)),
                _ => Ok(7),
            }
        })
        .await
        .unwrap();
        assert_eq!((value, tries.load(Ordering::Relaxed)), (7, 4));
    }

    #[tokio::test(start_paused = true)]
    async fn a_write_that_never_works_names_the_last_error() {
        let err = until_acked(Duration::from_secs(1), "queueing the question", || async {
            Err::<(), _>(error(PublishErrorKind::TimedOut))
        })
        .await
        .unwrap_err();
        assert_eq!(err.kind(), "not_acked");
        assert!(
            err.to_string().starts_with(
                "queueing the question: jetstream did not ack within 1000 ms (last attempt: timed out"
            ),
            "{err}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_refusal_is_not_retried() {
        let tries = AtomicU32::new(0);
        let err = until_acked(Duration::from_secs(5), "queueing the question", || async {
            tries.fetch_add(1, Ordering::Relaxed);
            Err::<(), _>(error(PublishErrorKind::MaxPayloadExceeded))
        })
        .await
        .unwrap_err();
        assert_eq!(err.kind(), "refused");
        assert_eq!(tries.load(Ordering::Relaxed), 1);
    }
}
