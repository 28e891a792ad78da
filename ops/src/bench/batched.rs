//! llama-batched-bench's JSON lines (`--output-format jsonl`), and the worker mode's
//! figures set against them at the same number of parallel sequences.

use std::fmt::Write;
use std::path::Path;

use anyhow::Context;
use serde::Deserialize;

use super::run::Run;
use super::table::{THROUGHPUT_TARGET, ratio};

/// One line of llama-batched-bench: `pl` sequences of `pp` prompt and `tg` generated
/// tokens; speeds in tokens/s.
#[derive(Clone, Debug, Deserialize)]
pub struct BatchedRow {
    pub pp: u64,
    pub tg: u64,
    pub pl: u32,
    pub speed_pp: f64,
    pub speed_tg: f64,
    pub speed: f64,
}

pub fn read(path: &Path) -> anyhow::Result<Vec<BatchedRow>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading llama-batched-bench output {}", path.display()))?;
    text.lines()
        .filter(|line| line.trim_start().starts_with('{'))
        .map(|line| {
            serde_json::from_str(line).with_context(|| format!("a line of {}", path.display()))
        })
        .collect()
}

/// The worker run's prefill, decode and total tokens/s beside llama-batched-bench's.
pub fn render(run: &Run, rows: &[BatchedRow]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\ncauce worker (NATS) / llama-batched-bench, same model, same parallel sequences"
    );
    let _ = writeln!(
        out,
        "{:>5} {:>19} {:>19} {:>19} {:>10} {:>7}",
        "N", "prefill t/s c/l", "decode t/s c/l", "total t/s c/l", "ttft p50", "target"
    );
    for level in &run.levels {
        let s = &level.summary;
        let Some(row) = rows.iter().find(|r| r.pl == s.users) else {
            continue;
        };
        let prefill = s.prefill_tokens_per_s.unwrap_or(0.0);
        let decode = s.decode_tokens_per_s.unwrap_or(0.0);
        let total = if s.wall_s > 0.0 {
            (s.prompt_tokens + s.completion_tokens) as f64 / s.wall_s
        } else {
            0.0
        };
        let pair = |c: f64, l: f64| format!("{c:.0}/{l:.0} {:.2}x", ratio(c, l));
        let target = if s.users < 8 {
            "-"
        } else if ratio(decode, row.speed_tg) >= THROUGHPUT_TARGET {
            "met"
        } else {
            "missed"
        };
        let _ = writeln!(
            out,
            "{:>5} {:>19} {:>19} {:>19} {:>10.0} {:>7}",
            s.users,
            pair(prefill, row.speed_pp),
            pair(decode, row.speed_tg),
            pair(total, row.speed),
            s.ttft_ms.p50,
            target
        );
    }
    if let Some(row) = rows.first() {
        let _ = writeln!(
            out,
            "llama-batched-bench: -npp {} -ntg {}; cauce: prompt and completion tokens as \
             reported by the worker; target: decode ratio >= {THROUGHPUT_TARGET} at 8 and more",
            row.pp, row.tg
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batched_bench_lines_parse() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.jsonl");
        std::fs::write(
            &path,
            r#"{"n_kv_max": 4096, "n_batch": 512, "n_ubatch": 512, "flash_attn": -1, "is_pp_shared": 0, "n_gpu_layers": -1, "n_threads": 2, "n_threads_batch": 2, "pp": 128, "tg": 128, "pl": 8, "n_kv": 2048, "t_pp": 3.1, "speed_pp": 330.2, "t_tg": 9.0, "speed_tg": 113.7, "t": 12.1, "speed": 169.0}
"#,
        )
        .unwrap();
        let rows = read(&path).unwrap();
        assert_eq!(rows[0].pl, 8);
        assert_eq!(rows[0].speed_tg, 113.7);
    }
}
