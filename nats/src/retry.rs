//! Retrying JetStream writes through a leader election or a reconnect.
//!
//! While a clustered stream elects a new leader, or the client reconnects to another
//! server, writes fail (no responders, no stream for the subject, no ack) for a few
//! seconds and then work again. [`until_acked`] repeats a write, pausing a little longer
//! after each failure, until it is acked or a time limit has passed. Only writes that
//! are safe to repeat go through it: a publish with `Nats-Msg-Id` (stored once), a put of
//! the same value under the same key.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

/// One attempt waits this long for its ack at most.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);
const PAUSE_MIN: Duration = Duration::from_millis(50);
const PAUSE_MAX: Duration = Duration::from_millis(800);

/// A write that was not acked within its time limit.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{what}: jetstream did not ack within {} ms (last attempt: {last})", .limit.as_millis())]
pub struct NotAcked {
    pub what: &'static str,
    pub limit: Duration,
    pub last: String,
}

/// Runs `attempt` until it succeeds or `limit` has passed.
pub async fn until_acked<T, E, F, Fut>(
    limit: Duration,
    what: &'static str,
    mut attempt: F,
) -> Result<T, NotAcked>
where
    E: std::fmt::Display,
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
            Ok(Err(err)) => err.to_string(),
            Err(_) => format!("no ack within {} ms", wait.as_millis()),
        };
        if Instant::now() + pause >= deadline {
            return Err(NotAcked { what, limit, last });
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

    #[tokio::test]
    async fn a_write_that_fails_for_a_while_is_retried_until_it_works() {
        let tries = AtomicU32::new(0);
        let value = until_acked(Duration::from_secs(5), "a put", || async {
            match tries.fetch_add(1, Ordering::Relaxed) {
                0..3 => Err("no stream found for given subject"),
                _ => Ok(7),
            }
        })
        .await
        .unwrap();
        assert_eq!((value, tries.load(Ordering::Relaxed)), (7, 4));
    }

    #[tokio::test]
    async fn a_write_that_never_works_names_the_last_error() {
        let err = until_acked(
            Duration::from_millis(300),
            "queueing the question",
            || async { Err::<(), _>("no responders") },
        )
        .await
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "queueing the question: jetstream did not ack within 300 ms (last attempt: no responders)"
        );
    }
}
