//! The load: N simulated users, each sending its next request as soon as the previous
//! one ended (a closed loop), until a level's request count or duration is spent.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::task::JoinSet;

use super::run::Sample;

/// When a level ends: after `requests` requests were sent, or after `duration`.
#[derive(Clone, Copy, Debug)]
pub enum Stop {
    Requests(u64),
    Duration(Duration),
}

/// Runs `users` users against `send` until `stop`; returns every request's sample.
/// `send` gets the request's number (from 0, unique in the level) and the instant the
/// level started, which samples measure their times from.
pub async fn run_level<F, Fut>(users: u32, stop: Stop, send: F) -> Vec<Sample>
where
    F: Fn(u64, Instant) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Sample> + Send + 'static,
{
    let started = Instant::now();
    let next_request = Arc::new(AtomicU64::new(0));
    let mut user_tasks = JoinSet::new();
    for _ in 0..users {
        let next_request = next_request.clone();
        let send = send.clone();
        user_tasks.spawn(async move {
            let mut samples = Vec::new();
            loop {
                let number = next_request.fetch_add(1, Ordering::Relaxed);
                let more = match stop {
                    Stop::Requests(total) => number < total,
                    Stop::Duration(duration) => started.elapsed() < duration,
                };
                if !more {
                    return samples;
                }
                samples.push(send(number, started).await);
            }
        });
    }
    let mut samples = Vec::new();
    while let Some(user) = user_tasks.join_next().await {
        match user {
            Ok(user_samples) => samples.extend(user_samples),
            Err(err) => samples.push(Sample {
                error: Some(format!("panic: {err}")),
                ..Sample::default()
            }),
        }
    }
    samples.sort_by(|a, b| a.start_s.total_cmp(&b.start_s));
    samples
}

/// Parses `1,8,32` into user counts.
pub fn parse_users(list: &str) -> Result<Vec<u32>, String> {
    list.split(',')
        .map(|part| match part.trim().parse::<u32>() {
            Ok(0) | Err(_) => Err(format!("`{part}` is not a positive number of users")),
            Ok(n) => Ok(n),
        })
        .collect()
}

/// The clap parser of `--users`.
pub fn parse_users_arg(list: &str) -> Result<super::UserLevels, String> {
    parse_users(list).map(super::UserLevels)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_levels_parse_from_a_list() {
        assert_eq!(parse_users("1,8, 32").unwrap(), [1, 8, 32]);
        assert!(parse_users("1,0").is_err());
        assert!(parse_users("x").is_err());
    }

    #[tokio::test]
    async fn a_level_sends_exactly_the_requests_asked_for() {
        let samples = run_level(3, Stop::Requests(10), |n, _| async move {
            Sample {
                completion_tokens: n,
                ..Sample::default()
            }
        })
        .await;
        let mut numbers: Vec<u64> = samples.iter().map(|s| s.completion_tokens).collect();
        numbers.sort();
        assert_eq!(numbers, (0..10).collect::<Vec<_>>());
    }
}
