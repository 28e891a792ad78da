//! The figures of a run as a text table, with ratios against a baseline run when one is
//! given, and the targets cauce holds itself to against llama.cpp's server.

use std::fmt::Write;

use super::run::{LevelSummary, Run};

/// cauce's aggregate tokens/s must be at least this share of the baseline's.
pub const THROUGHPUT_TARGET: f64 = 0.95;
/// cauce's median time to first token may exceed the baseline's by at most this.
pub const TTFT_MARGIN_MS: f64 = 20.0;

fn errors(summary: &LevelSummary) -> String {
    if summary.errors.is_empty() {
        return "0".into();
    }
    summary
        .errors
        .iter()
        .map(|(kind, n)| format!("{kind}:{n}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// One line per level; with a baseline, its figures and the ratios follow.
pub fn render(run: &Run, baseline: Option<&Run>) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} ({}, {}, retrieval {}, max_tokens {})",
        run.label,
        run.mode,
        run.target,
        if run.retrieval { "on" } else { "off" },
        run.max_tokens
    );
    let _ = writeln!(
        out,
        "{:>5} {:>5} {:>10} {:>7} {:>7} {:>22} {:>8} {:>15} {:>8} {:>7}",
        "users",
        "ok",
        "errors",
        "req/min",
        "tok/s",
        "ttft p50/p95/p99 ms",
        "itl p50",
        "e2e p50/p95 ms",
        "prompt",
        "cached"
    );
    for level in &run.levels {
        let s = &level.summary;
        let _ = writeln!(
            out,
            "{:>5} {:>5} {:>10} {:>7.1} {:>7.1} {:>22} {:>8.1} {:>15} {:>8.0} {:>6.1}%",
            s.users,
            s.requests_ok,
            errors(s),
            s.requests_per_min,
            s.tokens_per_s,
            format!(
                "{:.0}/{:.0}/{:.0}",
                s.ttft_ms.p50, s.ttft_ms.p95, s.ttft_ms.p99
            ),
            s.itl_ms.p50,
            format!("{:.0}/{:.0}", s.e2e_ms.p50, s.e2e_ms.p95),
            s.prompt_tokens as f64 / s.requests_ok.max(1) as f64,
            100.0 * ratio(s.cached_tokens as f64, s.prompt_tokens as f64),
        );
    }
    let Some(baseline) = baseline else {
        return out;
    };
    // the targets are cauce's against another server; two cauce runs (retrieval on
    // against off) only show what one costs
    let judged = !baseline.cauce;
    let _ = writeln!(
        out,
        "\nagainst {} (baseline): ratio = {} / baseline",
        baseline.label, run.label
    );
    let _ = writeln!(
        out,
        "{:>5} {:>12} {:>12} {:>8} {:>14} {:>14} {:>8} {:>9} {:>6}",
        "users",
        "tok/s",
        "base tok/s",
        "ratio",
        "ttft p50 ms",
        "base p50 ms",
        "delta",
        "e2e ratio",
        "target"
    );
    for level in &run.levels {
        let s = &level.summary;
        let Some(base) = baseline.level(s.users).map(|l| &l.summary) else {
            continue;
        };
        let throughput_ratio = ratio(s.tokens_per_s, base.tokens_per_s);
        let delta = s.ttft_ms.p50 - base.ttft_ms.p50;
        let verdict = match (
            judged,
            throughput_ratio >= THROUGHPUT_TARGET && delta <= TTFT_MARGIN_MS,
        ) {
            (false, _) => "-",
            (true, true) => "met",
            (true, false) => "missed",
        };
        let _ = writeln!(
            out,
            "{:>5} {:>12.1} {:>12.1} {:>7.2}x {:>14.0} {:>14.0} {:>+8.0} {:>8.2}x {:>6}",
            s.users,
            s.tokens_per_s,
            base.tokens_per_s,
            throughput_ratio,
            s.ttft_ms.p50,
            base.ttft_ms.p50,
            delta,
            ratio(s.e2e_ms.p50, base.e2e_ms.p50),
            verdict
        );
    }
    if judged {
        let _ = writeln!(
            out,
            "targets: tok/s ratio >= {THROUGHPUT_TARGET}, ttft p50 delta <= +{TTFT_MARGIN_MS} ms"
        );
    }
    out
}

pub fn ratio(value: f64, baseline: f64) -> f64 {
    if baseline > 0.0 {
        value / baseline
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::super::run::Level;
    use super::*;

    fn run(label: &str, tokens_per_s: f64, ttft: f64) -> Run {
        let mut summary = LevelSummary {
            users: 8,
            requests_ok: 8,
            tokens_per_s,
            ..LevelSummary::default()
        };
        summary.ttft_ms.p50 = ttft;
        Run {
            label: label.into(),
            levels: vec![Level {
                summary,
                ..Level::default()
            }],
            ..Run::default()
        }
    }

    #[test]
    fn ratios_and_targets_are_against_the_baseline() {
        let text = render(
            &run("cauce", 100.0, 130.0),
            Some(&run("llama", 100.0, 100.0)),
        );
        assert!(text.contains("1.00x"), "{text}");
        assert!(text.contains("missed"), "{text}");
        let text = render(
            &run("cauce", 96.0, 110.0),
            Some(&run("llama", 100.0, 100.0)),
        );
        assert!(text.contains("met"), "{text}");
    }

    #[test]
    fn two_cauce_runs_are_compared_without_targets() {
        let mut baseline = run("cauce, retrieval off", 100.0, 100.0);
        baseline.cauce = true;
        let text = render(&run("cauce, retrieval on", 20.0, 900.0), Some(&baseline));
        assert!(text.contains("0.20x"), "{text}");
        assert!(
            !text.contains("missed") && !text.contains("targets"),
            "{text}"
        );
    }
}
