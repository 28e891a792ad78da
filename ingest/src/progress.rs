//! Progress of a run: an `indicatif` bar (files, passages, bytes, rate) when standard
//! error is a terminal, a log line every few seconds otherwise.

use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use tracing::info;

/// How progress is shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgressMode {
    /// A bar on standard error.
    Bar,
    /// `info` log lines.
    Log,
    /// Nothing but the final summary.
    Quiet,
}

impl ProgressMode {
    /// A bar when standard error is a terminal, log lines otherwise.
    pub fn detect() -> Self {
        use std::io::IsTerminal;
        if std::io::stderr().is_terminal() {
            ProgressMode::Bar
        } else {
            ProgressMode::Log
        }
    }
}

const LOG_EVERY: Duration = Duration::from_secs(5);

pub(crate) struct Progress {
    mode: ProgressMode,
    bar: Option<ProgressBar>,
    total_files: u64,
    files: u64,
    passages: u64,
    bytes: u64,
    started: Instant,
    last_log: Instant,
}

impl Progress {
    pub(crate) fn new(mode: ProgressMode, total_files: u64) -> Self {
        let bar = (mode == ProgressMode::Bar).then(|| {
            let bar =
                ProgressBar::with_draw_target(Some(total_files), ProgressDrawTarget::stderr());
            let style = ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} files, {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar());
            bar.set_style(style);
            bar
        });
        let now = Instant::now();
        Self {
            mode,
            bar,
            total_files,
            files: 0,
            passages: 0,
            bytes: 0,
            started: now,
            last_log: now,
        }
    }

    /// One more file read, with its passages and size.
    pub(crate) fn file_done(&mut self, passages: usize, bytes: usize) {
        self.files += 1;
        self.passages += passages as u64;
        self.bytes += bytes as u64;
        let elapsed = self.started.elapsed().as_secs_f64().max(1e-3);
        let rate = self.files as f64 / elapsed;
        let mib = self.bytes as f64 / (1024.0 * 1024.0);
        match self.mode {
            ProgressMode::Bar => {
                if let Some(bar) = &self.bar {
                    bar.set_position(self.files);
                    bar.set_message(format!(
                        "{} passages, {mib:.1} MiB, {rate:.0} files/s",
                        self.passages
                    ));
                }
            }
            ProgressMode::Log if self.last_log.elapsed() >= LOG_EVERY => {
                self.last_log = Instant::now();
                info!(
                    files = self.files,
                    total_files = self.total_files,
                    passages = self.passages,
                    mib = format!("{mib:.1}"),
                    files_per_s = format!("{rate:.0}"),
                    "ingest progress"
                );
            }
            ProgressMode::Log | ProgressMode::Quiet => {}
        }
    }

    pub(crate) fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
