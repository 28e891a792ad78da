//! Worker metrics, both sides: each worker keeps counters, gauges and [`Histogram`]s
//! and puts a [`Metrics`] snapshot of them into its `$SRV.STATS` answer (under
//! [`STATS_KEY`]); the gateway, which already asks every worker for its stats to keep
//! its view of the service, renders each live worker's snapshot on `GET /metrics` in
//! the Prometheus text format ([`render`]), labelled with the worker's kind and id
//! (and model). So one scrape of any gateway sees the whole service, and workers need
//! no HTTP port.
//!
//! Names follow `cauce_<area>_<what>_<unit>`: `cauce_inference_…`, `cauce_retrieval_…`.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

/// Key of the metrics snapshot in a worker's stats data.
pub const STATS_KEY: &str = "metrics";

/// Gauge of a retrieval worker: the last `DOCS` sequence its index applied and can
/// search. The gateway reads it to tell an uploaded document `indexed`.
pub const RETRIEVAL_DOCS_SEQUENCE: &str = "cauce_retrieval_index_docs_sequence";

/// Bucket bounds, in seconds, of latency histograms.
pub const SECONDS: &[f64] = &[
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];
/// Bucket bounds, in tokens, of size histograms.
pub const TOKENS: &[f64] = &[1.0, 8.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0];

/// A histogram with fixed buckets that any thread records into.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    /// One per bound, then one for larger values.
    counts: Vec<AtomicU64>,
    /// The sum of the values, in millionths.
    sum_micros: AtomicU64,
}

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_micros: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, value: f64) {
        let value = if value.is_finite() {
            value.max(0.0)
        } else {
            0.0
        };
        let bucket = self.bounds.partition_point(|&bound| bound < value);
        self.counts[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add((value * 1e6) as u64, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> HistogramSnapshot {
        HistogramSnapshot {
            bounds: self.bounds.to_vec(),
            counts: self
                .counts
                .iter()
                .map(|c| c.load(Ordering::Relaxed))
                .collect(),
            sum: self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6,
        }
    }
}

/// A histogram as a worker reports it: counts per bucket (not cumulative), the last
/// for values above every bound.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct HistogramSnapshot {
    pub bounds: Vec<f64>,
    pub counts: Vec<u64>,
    pub sum: f64,
}

impl HistogramSnapshot {
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// The bucket bound at or below which `share` of the values fall (an upper
    /// estimate), `None` without values or when they lie past every bound.
    pub fn quantile(&self, share: f64) -> Option<f64> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let wanted = (share * total as f64).ceil() as u64;
        let mut seen = 0;
        for (count, bound) in self.counts.iter().zip(&self.bounds) {
            seen += count;
            if seen >= wanted {
                return Some(*bound);
            }
        }
        None
    }
}

/// One worker's metrics at one moment.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    #[serde(default)]
    pub counters: BTreeMap<String, f64>,
    #[serde(default)]
    pub gauges: BTreeMap<String, f64>,
    #[serde(default)]
    pub histograms: BTreeMap<String, HistogramSnapshot>,
}

impl Metrics {
    pub fn counter(&mut self, name: &str, value: impl Into<f64>) -> &mut Self {
        self.counters.insert(name.to_string(), value.into());
        self
    }

    pub fn gauge(&mut self, name: &str, value: impl Into<f64>) -> &mut Self {
        self.gauges.insert(name.to_string(), value.into());
        self
    }

    pub fn histogram(&mut self, name: &str, histogram: &Histogram) -> &mut Self {
        self.histograms
            .insert(name.to_string(), histogram.snapshot());
        self
    }

    /// The snapshot a worker's stats data carries, if any.
    pub fn from_stats(data: &serde_json::Value) -> Option<Self> {
        serde_json::from_value(data.get(STATS_KEY)?.clone()).ok()
    }
}

/// Every worker's metrics in the Prometheus text format, each sample labelled with
/// its worker's `labels` (`kind`, `worker`, `model`…).
pub fn render(workers: &[(Vec<(&str, String)>, Metrics)]) -> String {
    let mut out = String::new();
    let names = |pick: fn(&Metrics) -> Vec<&String>| {
        let mut all: Vec<String> = workers.iter().flat_map(|(_, m)| pick(m)).cloned().collect();
        all.sort();
        all.dedup();
        all
    };
    for name in names(|m| m.counters.keys().collect()) {
        let _ = writeln!(out, "# TYPE {name} counter");
        for (labels, metrics) in workers {
            if let Some(value) = metrics.counters.get(&name) {
                let _ = writeln!(out, "{name}{} {}", label_set(labels, None), number(*value));
            }
        }
    }
    for name in names(|m| m.gauges.keys().collect()) {
        let _ = writeln!(out, "# TYPE {name} gauge");
        for (labels, metrics) in workers {
            if let Some(value) = metrics.gauges.get(&name) {
                let _ = writeln!(out, "{name}{} {}", label_set(labels, None), number(*value));
            }
        }
    }
    for name in names(|m| m.histograms.keys().collect()) {
        let _ = writeln!(out, "# TYPE {name} histogram");
        for (labels, metrics) in workers {
            if let Some(histogram) = metrics.histograms.get(&name) {
                render_histogram(&mut out, &name, labels, histogram);
            }
        }
    }
    out
}

fn render_histogram(
    out: &mut String,
    name: &str,
    labels: &[(&str, String)],
    histogram: &HistogramSnapshot,
) {
    let mut cumulative = 0;
    for (count, bound) in histogram.counts.iter().zip(&histogram.bounds) {
        cumulative += count;
        let le = bound.to_string();
        let _ = writeln!(
            out,
            "{name}_bucket{} {cumulative}",
            label_set(labels, Some(&le))
        );
    }
    let total = histogram.count();
    let _ = writeln!(
        out,
        "{name}_bucket{} {total}",
        label_set(labels, Some("+Inf"))
    );
    let _ = writeln!(
        out,
        "{name}_sum{} {}",
        label_set(labels, None),
        histogram.sum
    );
    let _ = writeln!(out, "{name}_count{} {total}", label_set(labels, None));
}

/// A sample value as Prometheus reads it (`+Inf`, not Rust's `inf`).
fn number(value: f64) -> String {
    match value {
        v if v.is_nan() => "NaN".into(),
        v if v == f64::INFINITY => "+Inf".into(),
        v if v == f64::NEG_INFINITY => "-Inf".into(),
        v => v.to_string(),
    }
}

fn label_set(labels: &[(&str, String)], le: Option<&str>) -> String {
    let mut parts: Vec<String> = labels
        .iter()
        .map(|(key, value)| format!("{key}=\"{}\"", escape(value)))
        .collect();
    if let Some(le) = le {
        parts.push(format!("le=\"{le}\""));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("{{{}}}", parts.join(","))
    }
}

fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_histogram_counts_into_its_bucket_and_renders_cumulatively() {
        let histogram = Histogram::new(&[0.1, 1.0]);
        for value in [0.05, 0.1, 0.5, 3.0] {
            histogram.observe(value);
        }
        let snapshot = histogram.snapshot();
        assert_eq!(snapshot.counts, [2, 1, 1]);
        assert!((snapshot.sum - 3.65).abs() < 1e-6);
        assert_eq!(snapshot.quantile(0.5), Some(0.1));
        assert_eq!(snapshot.quantile(0.75), Some(1.0));
        assert_eq!(snapshot.quantile(1.0), None);

        let mut metrics = Metrics::default();
        metrics
            .histogram("cauce_x_time_seconds", &histogram)
            .counter("cauce_x_tokens_total", 7u32)
            .gauge("cauce_x_running_sequences", 2u32);
        let text = render(&[(vec![("worker", "w\"1".into())], metrics)]);
        assert!(
            text.contains(
                "# TYPE cauce_x_tokens_total counter\ncauce_x_tokens_total{worker=\"w\\\"1\"} 7\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("cauce_x_time_seconds_bucket{worker=\"w\\\"1\",le=\"0.1\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("cauce_x_time_seconds_bucket{worker=\"w\\\"1\",le=\"1\"} 3\n"),
            "{text}"
        );
        assert!(
            text.contains("cauce_x_time_seconds_bucket{worker=\"w\\\"1\",le=\"+Inf\"} 4\n"),
            "{text}"
        );
        assert!(
            text.contains("cauce_x_time_seconds_count{worker=\"w\\\"1\"} 4\n"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE cauce_x_running_sequences gauge"),
            "{text}"
        );
    }

    #[test]
    fn a_snapshot_travels_in_the_stats_data() {
        let mut metrics = Metrics::default();
        metrics.counter("cauce_x_total", 1u32);
        let data = serde_json::json!({ "busy": 1, STATS_KEY: metrics });
        assert_eq!(Metrics::from_stats(&data), Some(metrics));
        assert_eq!(Metrics::from_stats(&serde_json::json!({})), None);
    }
}
