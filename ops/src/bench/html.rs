//! The self-contained HTML report: the figures as a table and inline SVG charts
//! (latency distributions, throughput over time, and a side-by-side of two runs when a
//! baseline is given). No script, no stylesheet or font from elsewhere.

use std::fmt::Write;

use super::run::{Level, Run};
use super::svg::{PALETTE, Series, bar_chart, cdf_points, escape, line_chart};
use super::table;

const STYLE: &str = "body{font-family:sans-serif;max-width:1340px;margin:24px auto;color:#222}\
table{border-collapse:collapse;margin:12px 0}td,th{border:1px solid #ccc;padding:4px 8px;\
text-align:right}th{background:#f4f4f4}.charts{display:flex;flex-wrap:wrap;gap:12px}\
pre{background:#f8f8f8;padding:8px;overflow:auto}";

/// Renders `run`, side by side with `baseline` when there is one.
pub fn render(run: &Run, baseline: Option<&Run>) -> String {
    let runs: Vec<&Run> = std::iter::once(run).chain(baseline).collect();
    let mut html = String::new();
    let title = match baseline {
        Some(base) => format!("cauce bench: {} vs {}", run.label, base.label),
        None => format!("cauce bench: {}", run.label),
    };
    let _ = write!(
        html,
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{t}</title><style>{STYLE}</style></head><body><h1>{t}</h1>",
        t = escape(&title)
    );
    for (i, r) in runs.iter().enumerate() {
        let _ = write!(
            html,
            "<p><b style=\"color:{}\">{}</b>: {} mode, {}, model {}, retrieval {}, max_tokens {}, started {}</p>",
            PALETTE[i],
            escape(&r.label),
            escape(&r.mode),
            escape(&r.target),
            escape(&r.model),
            if r.retrieval { "on" } else { "off" },
            r.max_tokens,
            escape(&r.started_at)
        );
    }
    let _ = write!(
        html,
        "<h2>Figures</h2><pre>{}</pre>",
        escape(&table::render(run, baseline))
    );
    let mut section = String::new();
    for (name, svg) in charts(run, baseline) {
        let heading = name.split('-').next().unwrap_or_default().to_string();
        if heading != section {
            if !section.is_empty() {
                html.push_str("</div>");
            }
            let title = if heading == "levels" {
                "By concurrency".to_string()
            } else {
                format!("{} concurrent users", heading.trim_start_matches("users"))
            };
            let _ = write!(html, "<h2>{}</h2><div class=\"charts\">", escape(&title));
            section = heading;
        }
        html.push_str(&svg);
    }
    if !section.is_empty() {
        html.push_str("</div>");
    }
    html.push_str("</body></html>\n");
    html
}

/// Every chart of the report, named for a file (`levels-tokens-per-s`,
/// `users8-ttft`…), in the order the report shows them.
pub fn charts(run: &Run, baseline: Option<&Run>) -> Vec<(String, String)> {
    let runs: Vec<&Run> = std::iter::once(run).chain(baseline).collect();
    let mut charts = Vec::new();
    let users: Vec<u32> = run.levels.iter().map(|l| l.summary.users).collect();
    let groups: Vec<String> = users.iter().map(u32::to_string).collect();
    let per_level = |f: &dyn Fn(&Level) -> f64| -> Vec<Series<Vec<f64>>> {
        runs.iter()
            .enumerate()
            .map(|(i, r)| Series {
                label: r.label.clone(),
                color: PALETTE[i],
                values: users.iter().map(|u| r.level(*u).map_or(0.0, f)).collect(),
            })
            .collect()
    };
    charts.push((
        "levels-tokens-per-s".to_string(),
        bar_chart(
            "aggregate completion tokens/s",
            "tokens/s",
            &groups,
            &per_level(&|l| l.summary.tokens_per_s),
        ),
    ));
    charts.push((
        "levels-ttft-p50".to_string(),
        bar_chart(
            "time to first token, p50",
            "ms",
            &groups,
            &per_level(&|l| l.summary.ttft_ms.p50),
        ),
    ));
    charts.push((
        "levels-e2e-p50".to_string(),
        bar_chart(
            "end-to-end latency, p50",
            "ms",
            &groups,
            &per_level(&|l| l.summary.e2e_ms.p50),
        ),
    ));
    charts.push((
        "levels-requests-per-min".to_string(),
        bar_chart(
            "requests per minute",
            "requests/min",
            &groups,
            &per_level(&|l| l.summary.requests_per_min),
        ),
    ));
    for users in &users {
        let levels: Vec<(usize, &Run, &Level)> = runs
            .iter()
            .enumerate()
            .filter_map(|(i, r)| r.level(*users).map(|l| (i, *r, l)))
            .collect();
        let distribution = |f: &dyn Fn(&Level) -> Vec<f64>| -> Vec<Series<Vec<(f64, f64)>>> {
            levels
                .iter()
                .map(|(i, r, l)| Series {
                    label: r.label.clone(),
                    color: PALETTE[*i],
                    values: cdf_points(&f(l)),
                })
                .collect()
        };
        charts.push((
            format!("users{users}-ttft"),
            line_chart(
                "time to first token (share of requests at or below)",
                "ms",
                "share",
                &distribution(&|l| l.samples.iter().filter_map(|s| s.ttft_ms).collect()),
            ),
        ));
        charts.push((
            format!("users{users}-e2e"),
            line_chart(
                "end-to-end latency (share of requests at or below)",
                "ms",
                "share",
                &distribution(&|l| {
                    l.samples
                        .iter()
                        .filter(|s| s.error.is_none())
                        .map(|s| s.e2e_ms)
                        .collect()
                }),
            ),
        ));
        let throughput: Vec<Series<Vec<(f64, f64)>>> = levels
            .iter()
            .map(|(i, r, l)| Series {
                label: r.label.clone(),
                color: PALETTE[*i],
                values: l
                    .throughput_per_s
                    .iter()
                    .enumerate()
                    .map(|(second, n)| (second as f64 + 0.5, *n as f64))
                    .collect(),
            })
            .collect();
        charts.push((
            format!("users{users}-throughput"),
            line_chart(
                "throughput over time (content chunks per second)",
                "seconds from the start of the level",
                "chunks/s",
                &throughput,
            ),
        ));
    }
    charts
}

#[cfg(test)]
mod tests {
    use super::super::run::{LevelSummary, Sample};
    use super::*;

    #[test]
    fn a_report_is_one_self_contained_page() {
        let level = Level {
            summary: LevelSummary {
                users: 1,
                ..LevelSummary::default()
            },
            samples: vec![Sample {
                ttft_ms: Some(5.0),
                e2e_ms: 50.0,
                ..Sample::default()
            }],
            throughput_per_s: vec![3, 4],
        };
        let run = Run {
            label: "cauce <a>".into(),
            levels: vec![level],
            ..Run::default()
        };
        let html = render(&run, Some(&run.clone()));
        assert!(html.contains("cauce &lt;a&gt;"));
        assert!(!html.contains("<script") && !html.contains("src="));
        assert!(html.matches("<svg").count() >= 7);
    }
}
