//! Percentiles and the summary of one level from its samples.

use std::collections::BTreeMap;

use super::run::{LevelSummary, Percentiles, Sample};

/// Nearest-rank percentiles of `values` (any order); zeros when there are none.
pub fn percentiles(values: &[f64]) -> Percentiles {
    if values.is_empty() {
        return Percentiles::default();
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = |p: f64| {
        let index = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
        sorted[index.clamp(1, sorted.len()) - 1]
    };
    Percentiles {
        p50: rank(50.0),
        p95: rank(95.0),
        p99: rank(99.0),
        mean: sorted.iter().sum::<f64>() / sorted.len() as f64,
    }
}

/// Sums the samples of one level run by `users` concurrent users.
pub fn summarize(users: u32, samples: &[Sample]) -> LevelSummary {
    let ok: Vec<&Sample> = samples.iter().filter(|s| s.error.is_none()).collect();
    let mut errors = BTreeMap::new();
    for sample in samples {
        if let Some(kind) = &sample.error {
            *errors.entry(kind.clone()).or_insert(0) += 1;
        }
    }
    let wall_s = samples
        .iter()
        .map(|s| s.start_s + s.e2e_ms / 1000.0)
        .fold(0.0, f64::max)
        - samples
            .iter()
            .map(|s| s.start_s)
            .fold(f64::INFINITY, f64::min);
    let wall_s = if wall_s.is_finite() { wall_s } else { 0.0 };
    let completion_tokens: u64 = ok.iter().map(|s| s.completion_tokens).sum();
    let prompt_tokens: u64 = ok.iter().filter_map(|s| s.prompt_tokens).sum();
    let cached_tokens: u64 = ok.iter().filter_map(|s| s.cached_tokens).sum();
    let ttft: Vec<f64> = ok.iter().filter_map(|s| s.ttft_ms).collect();
    let gaps: Vec<f64> = ok.iter().flat_map(|s| s.gaps_ms.iter().copied()).collect();
    let e2e: Vec<f64> = ok.iter().map(|s| s.e2e_ms).collect();
    let per_s = |n: f64| if wall_s > 0.0 { n / wall_s } else { 0.0 };
    LevelSummary {
        users,
        requests_ok: ok.len() as u64,
        errors,
        wall_s,
        requests_per_min: per_s(ok.len() as f64) * 60.0,
        completion_tokens,
        prompt_tokens,
        cached_tokens,
        tokens_per_s: per_s(completion_tokens as f64),
        ttft_ms: percentiles(&ttft),
        itl_ms: percentiles(&gaps),
        e2e_ms: percentiles(&e2e),
        prefill_tokens_per_s: None,
        decode_tokens_per_s: None,
    }
}

/// Content chunks that arrived in each whole second of a level.
pub fn throughput_per_second(samples: &[Sample]) -> Vec<u64> {
    let mut buckets: Vec<u64> = Vec::new();
    for at in samples.iter().flat_map(|s| s.chunk_at_s.iter()) {
        let second = at.max(0.0) as usize;
        if buckets.len() <= second {
            buckets.resize(second + 1, 0);
        }
        buckets[second] += 1;
    }
    buckets
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let values: Vec<f64> = (1..=100).map(f64::from).collect();
        let p = percentiles(&values);
        assert_eq!((p.p50, p.p95, p.p99), (50.0, 95.0, 99.0));
        assert_eq!(p.mean, 50.5);
        assert_eq!(percentiles(&[7.0]).p99, 7.0);
        assert_eq!(percentiles(&[]).p50, 0.0);
    }

    #[test]
    fn a_summary_counts_errors_by_kind_and_tokens_of_successes() {
        let ok = Sample {
            start_s: 0.0,
            ttft_ms: Some(100.0),
            e2e_ms: 2000.0,
            completion_tokens: 40,
            ..Sample::default()
        };
        let failed = Sample {
            start_s: 1.0,
            e2e_ms: 10.0,
            completion_tokens: 3,
            error: Some("http_503".into()),
            ..Sample::default()
        };
        let summary = summarize(2, &[ok, failed]);
        assert_eq!(summary.requests_ok, 1);
        assert_eq!(summary.errors.get("http_503"), Some(&1));
        assert_eq!(summary.wall_s, 2.0);
        assert_eq!(summary.tokens_per_s, 20.0);
        assert_eq!(summary.requests_per_min, 30.0);
    }

    #[test]
    fn chunks_are_counted_per_second() {
        let sample = Sample {
            chunk_at_s: vec![0.1, 0.5, 1.2, 3.9],
            ..Sample::default()
        };
        assert_eq!(throughput_per_second(&[sample]), [2, 1, 0, 1]);
    }
}
