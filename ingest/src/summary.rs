//! The outcome of one ingest run, printed at the end of `cauce ingest`.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use crate::source::{SkipReason, Skipped};

/// Counts of one run.
#[derive(Clone, Debug, Default)]
pub struct Summary {
    /// Readable files processed.
    pub files: u64,
    /// Documents sent to `DOCS` (new or changed).
    pub published: u64,
    /// Documents whose version in `DOCS` was already this one.
    pub unchanged: u64,
    /// Tombstones sent.
    pub deleted: u64,
    /// Files left out, with the reason.
    pub skipped: Vec<Skipped>,
    pub passages: u64,
    pub bytes_read: u64,
    /// Compressed bytes sent.
    pub bytes_published: u64,
    pub elapsed: Duration,
}

impl Summary {
    pub(crate) fn skip(&mut self, path: PathBuf, reason: SkipReason) {
        self.skipped.push(Skipped { path, reason });
    }

    /// Skipped files counted by reason.
    pub fn skipped_by_reason(&self) -> BTreeMap<SkipReason, usize> {
        let mut counts = BTreeMap::new();
        for skipped in &self.skipped {
            *counts.entry(skipped.reason.clone()).or_insert(0) += 1;
        }
        counts
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = self.elapsed.as_secs_f64().max(1e-3);
        let mib = self.bytes_read as f64 / (1024.0 * 1024.0);
        write!(
            f,
            "{} published, {} unchanged, {} deleted, {} skipped ({} files, {} passages, \
             {mib:.1} MiB read in {secs:.1}s: {:.0} files/s, {:.1} MiB/s)",
            self.published,
            self.unchanged,
            self.deleted,
            self.skipped.len(),
            self.files,
            self.passages,
            self.files as f64 / secs,
            mib / secs,
        )?;
        for (reason, count) in self.skipped_by_reason() {
            write!(f, "\n  skipped {count}: {reason}")?;
        }
        Ok(())
    }
}
