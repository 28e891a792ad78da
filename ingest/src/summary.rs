//! The outcome of one ingest run, printed at the end of `cauce ingest`.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use crate::extract::Refusal;
use crate::source::{SkipReason, Skipped};

/// Files with something to say about them listed by name at the end of a run, at most.
const LISTED: usize = 20;

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
        self.skipped.push(Skipped {
            path,
            reason,
            detail: None,
        });
    }

    /// A PDF or DOCX its reader refused, with the reason.
    pub(crate) fn refuse(&mut self, path: PathBuf, refusal: &Refusal) {
        let reason = match refusal {
            Refusal::Encrypted => SkipReason::Encrypted,
            Refusal::NoTextLayer { .. } => SkipReason::NoTextLayer,
            Refusal::Corrupt(_) => SkipReason::Corrupt,
            Refusal::Failed(_) => SkipReason::ConversionFailed,
        };
        self.skipped.push(Skipped {
            path,
            reason,
            detail: Some(refusal.to_string()),
        });
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
        let told: Vec<_> = self.skipped.iter().filter(|s| s.detail.is_some()).collect();
        for skipped in told.iter().take(LISTED) {
            let detail = skipped.detail.as_deref().unwrap_or_default();
            write!(f, "\n  {}: {detail}", skipped.path.display())?;
        }
        if told.len() > LISTED {
            write!(f, "\n  ... and {} more (see the log)", told.len() - LISTED)?;
        }
        Ok(())
    }
}
