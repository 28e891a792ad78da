//! Per-client rate limit: GCRA buckets (the `governor` crate) keyed by client.
//!
//! Who a client is (see [`crate::auth`]): its API key when keys are configured (only
//! valid keys get this far), else its address — the peer address, or with
//! `--client-address-header` the address a trusted proxy put in that header — never
//! a token the client made up. Memory is bounded: idle buckets are dropped by
//! [`RateLimiter::sweep`] from the gateway's upkeep task, and while [`MAX_CLIENTS`]
//! buckets are held every client shares one overflow bucket until a sweep makes room
//! (`governor` does not say whether a client has a bucket already).

use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter as Gcra};

use crate::config::RateLimit;

/// Buckets kept at most; past this, clients share [`OVERFLOW`].
pub const MAX_CLIENTS: usize = 100_000;
/// The bucket shared while the map is full.
const OVERFLOW: &str = "overflow";

/// GCRA buckets by client.
pub struct RateLimiter {
    buckets: Gcra<String, DefaultKeyedStateStore<String>, DefaultClock>,
    max_clients: usize,
}

impl std::fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter")
            .field("clients", &self.buckets.len())
            .finish()
    }
}

impl RateLimiter {
    pub fn new(limit: RateLimit) -> Self {
        Self::with_capacity(limit, MAX_CLIENTS)
    }

    fn with_capacity(limit: RateLimit, max_clients: usize) -> Self {
        let burst = NonZeroU32::new(limit.burst.max(1)).expect("at least 1");
        // a rate of zero lets only the burst through, then one request a minute
        let period = if limit.per_second > 0.0 {
            Duration::from_secs_f64(1.0 / limit.per_second)
        } else {
            Duration::from_secs(60)
        };
        let quota = Quota::with_period(period.max(Duration::from_nanos(1)))
            .expect("a positive period")
            .allow_burst(burst);
        Self {
            buckets: Gcra::keyed(quota),
            max_clients,
        }
    }

    /// Takes one request from `client`'s bucket, or says how long until it may send.
    pub fn check(&self, client: &str) -> Result<(), Duration> {
        let key = if self.buckets.len() >= self.max_clients {
            OVERFLOW
        } else {
            client
        };
        self.buckets
            .check_key(&key.to_string())
            .map_err(|not_until| not_until.wait_time_from(self.buckets.clock().now()))
    }

    /// Drops the buckets of clients that are back to a full burst (nothing to remember).
    pub fn sweep(&self) {
        self.buckets.retain_recent();
        self.buckets.shrink_to_fit();
    }

    /// Buckets held now.
    pub fn clients(&self) -> usize {
        self.buckets.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_passes_then_the_rate_rules() {
        let limiter = RateLimiter::new(RateLimit {
            per_second: 2.0,
            burst: 3,
        });
        for _ in 0..3 {
            assert!(limiter.check("a").is_ok());
        }
        let wait = limiter.check("a").unwrap_err();
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_millis(500),
            "{wait:?}"
        );
        assert!(limiter.check("b").is_ok(), "clients have their own buckets");
    }

    #[test]
    fn memory_is_bounded_whatever_the_number_of_clients() {
        let limiter = RateLimiter::with_capacity(
            RateLimit {
                per_second: 1.0,
                burst: 1,
            },
            100,
        );
        for i in 0..1000 {
            let _ = limiter.check(&format!("client-{i}"));
        }
        assert!(limiter.clients() <= 101, "{}", limiter.clients());
        // the clients past the bound share one bucket: all but the first are limited
        assert!(limiter.check("one-more").is_err());
    }
}
