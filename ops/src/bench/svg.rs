//! Inline SVG charts drawn in Rust: line charts (distributions, throughput over time)
//! and grouped bar charts (one group per user level). No script, no external file.

use std::fmt::Write;

const WIDTH: f64 = 640.0;
const HEIGHT: f64 = 300.0;
const LEFT: f64 = 60.0;
const RIGHT: f64 = 16.0;
const TOP: f64 = 34.0;
const BOTTOM: f64 = 46.0;

/// Colours of the series, in order: a baseline comparison draws the second in grey.
pub const PALETTE: [&str; 6] = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b",
];

/// One named series of a chart.
pub struct Series<T> {
    pub label: String,
    pub color: &'static str,
    pub values: T,
}

pub fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A tick step of 1, 2 or 5 times a power of ten giving about five ticks up to `max`.
fn tick_step(max: f64) -> f64 {
    if max <= 0.0 || !max.is_finite() {
        return 1.0;
    }
    let rough = max / 5.0;
    let power = 10f64.powf(rough.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * power)
        .find(|step| *step >= rough)
        .unwrap_or(10.0 * power)
}

fn number(value: f64) -> String {
    if value.abs() >= 100.0 || value.fract() == 0.0 {
        format!("{value:.0}")
    } else {
        format!("{value:.2}")
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_string()
    }
}

struct Frame {
    x_max: f64,
    y_max: f64,
}

impl Frame {
    fn x(&self, value: f64) -> f64 {
        LEFT + value / self.x_max * (WIDTH - LEFT - RIGHT)
    }
    fn y(&self, value: f64) -> f64 {
        HEIGHT - BOTTOM - value / self.y_max * (HEIGHT - TOP - BOTTOM)
    }
}

fn open(svg: &mut String, title: &str, x_label: &str, y_label: &str) {
    let _ = write!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" font-family="sans-serif" font-size="11"><rect width="100%" height="100%" fill="white"/><text x="{LEFT}" y="18" font-size="13" font-weight="bold">{}</text><text x="{}" y="{}" text-anchor="middle">{}</text><text transform="translate(14 {}) rotate(-90)" text-anchor="middle">{}</text>"#,
        escape(title),
        (LEFT + WIDTH - RIGHT) / 2.0,
        HEIGHT - 8.0,
        escape(x_label),
        (TOP + HEIGHT - BOTTOM) / 2.0,
        escape(y_label),
    );
}

fn y_axis(svg: &mut String, frame: &Frame) {
    let step = tick_step(frame.y_max);
    let mut tick = 0.0;
    while tick <= frame.y_max + step * 1e-9 {
        let y = frame.y(tick);
        let _ = write!(
            svg,
            r##"<line x1="{LEFT}" x2="{}" y1="{y:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
            WIDTH - RIGHT,
            LEFT - 4.0,
            y + 4.0,
            number(tick)
        );
        tick += step;
    }
}

fn legend<T>(svg: &mut String, series: &[Series<T>]) {
    let mut x = WIDTH - RIGHT;
    for s in series.iter().rev() {
        x -= 14.0 + 6.5 * s.label.chars().count() as f64;
        let _ = write!(
            svg,
            r#"<rect x="{x:.1}" y="8" width="10" height="10" fill="{}"/><text x="{:.1}" y="17">{}</text>"#,
            s.color,
            x + 13.0,
            escape(&s.label)
        );
    }
}

/// Lines through `(x, y)` points, one per series.
pub fn line_chart(
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series<Vec<(f64, f64)>>],
) -> String {
    let points = series.iter().flat_map(|s| s.values.iter());
    let (x_max, y_max) = points.fold((0.0f64, 0.0f64), |(x, y), p| (x.max(p.0), y.max(p.1)));
    let frame = Frame {
        x_max: nice_max(x_max),
        y_max: nice_max(y_max),
    };
    let mut svg = String::new();
    open(&mut svg, title, x_label, y_label);
    y_axis(&mut svg, &frame);
    let step = tick_step(frame.x_max);
    let mut tick = 0.0;
    while tick <= frame.x_max + step * 1e-9 {
        let _ = write!(
            svg,
            r#"<text x="{:.1}" y="{}" text-anchor="middle">{}</text>"#,
            frame.x(tick),
            HEIGHT - BOTTOM + 14.0,
            number(tick)
        );
        tick += step;
    }
    for s in series {
        let path: Vec<String> = s
            .values
            .iter()
            .map(|(x, y)| format!("{:.1},{:.1}", frame.x(*x), frame.y(*y)))
            .collect();
        let _ = write!(
            svg,
            r#"<polyline fill="none" stroke="{}" stroke-width="1.8" points="{}"/>"#,
            s.color,
            path.join(" ")
        );
    }
    legend(&mut svg, series);
    svg.push_str("</svg>");
    svg
}

/// Bars side by side: one group per `groups` entry, one bar per series in each.
pub fn bar_chart(
    title: &str,
    y_label: &str,
    groups: &[String],
    series: &[Series<Vec<f64>>],
) -> String {
    let y_max = series
        .iter()
        .flat_map(|s| s.values.iter().copied())
        .fold(0.0, f64::max);
    let frame = Frame {
        x_max: 1.0,
        y_max: nice_max(y_max),
    };
    let mut svg = String::new();
    open(&mut svg, title, "concurrent users", y_label);
    y_axis(&mut svg, &frame);
    let group_width = (WIDTH - LEFT - RIGHT) / groups.len().max(1) as f64;
    let bar_width = group_width * 0.8 / series.len().max(1) as f64;
    for (g, group) in groups.iter().enumerate() {
        let group_x = LEFT + g as f64 * group_width;
        let _ = write!(
            svg,
            r#"<text x="{:.1}" y="{}" text-anchor="middle">{}</text>"#,
            group_x + group_width / 2.0,
            HEIGHT - BOTTOM + 14.0,
            escape(group)
        );
        for (i, s) in series.iter().enumerate() {
            let Some(value) = s.values.get(g).copied() else {
                continue;
            };
            let x = group_x + group_width * 0.1 + i as f64 * bar_width;
            let y = frame.y(value);
            let _ = write!(
                svg,
                r#"<rect x="{x:.1}" y="{y:.1}" width="{:.1}" height="{:.1}" fill="{}"/><text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="10">{}</text>"#,
                bar_width * 0.92,
                (HEIGHT - BOTTOM - y).max(0.0),
                s.color,
                x + bar_width * 0.46,
                y - 3.0,
                number(value)
            );
        }
    }
    legend(&mut svg, series);
    svg.push_str("</svg>");
    svg
}

/// The empirical distribution of `values` as (value, fraction at or below) points.
pub fn cdf_points(values: &[f64]) -> Vec<(f64, f64)> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len() as f64;
    sorted
        .into_iter()
        .enumerate()
        .map(|(i, v)| (v, (i + 1) as f64 / n))
        .collect()
}

fn nice_max(max: f64) -> f64 {
    if max <= 0.0 || !max.is_finite() {
        return 1.0;
    }
    let step = tick_step(max);
    (max / step).ceil() * step
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round_numbers() {
        assert_eq!(tick_step(100.0), 20.0);
        assert_eq!(tick_step(7.0), 2.0);
        assert_eq!(nice_max(93.0), 100.0);
    }

    #[test]
    fn charts_are_self_contained_svg_with_escaped_labels() {
        let series = [Series {
            label: "a<b".to_string(),
            color: PALETTE[0],
            values: vec![1.0, 2.0],
        }];
        let svg = bar_chart("t", "y", &["1".into(), "8".into()], &series);
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        assert!(svg.contains("a&lt;b") && !svg.contains("<script"));
        let cdf = cdf_points(&[3.0, 1.0]);
        assert_eq!(cdf, [(1.0, 0.5), (3.0, 1.0)]);
    }
}
