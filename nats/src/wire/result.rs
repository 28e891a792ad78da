//! The stored result of a request, kept in the `cauce-results` bucket.

use serde::{Deserialize, Serialize};

use super::{ErrorKind, FinishReason, Source, Timings, Usage, Wire};
use crate::ids::{ModelName, RequestId};

/// Where a request stands. `Queued` is written by the gateway that accepted a task,
/// `Running` by the inference worker that starts it, the others when it ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResultStatus {
    Queued,
    Running,
    Done,
    Failed,
    Cancelled,
}

/// The error a failed request ended with.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StoredError {
    pub kind: ErrorKind,
    pub message: String,
}

/// The final state of one request.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StoredResult {
    pub request_id: RequestId,
    pub model: ModelName,
    pub status: ResultStatus,
    /// The whole answer text.
    #[serde(default)]
    pub text: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finish_reason: Option<FinishReason>,
    #[serde(default)]
    pub usage: Usage,
    #[serde(default)]
    pub timings: Timings,
    #[serde(default)]
    pub sources: Vec<Source>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<StoredError>,
    /// The delivery attempt that produced this result.
    #[serde(default)]
    pub attempt: u32,
    /// The job run holding a `running` record (worker and run), so that a slow worker
    /// whose job went to another one learns it lost the job; see [`crate::Results`].
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub owner: String,
    pub created_at_ms: u64,
    pub finished_at_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replay_of: Option<RequestId>,
}

impl ResultStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ResultStatus::Queued => "queued",
            ResultStatus::Running => "running",
            ResultStatus::Done => "done",
            ResultStatus::Failed => "failed",
            ResultStatus::Cancelled => "cancelled",
        }
    }

    /// Whether the request has ended.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            ResultStatus::Done | ResultStatus::Failed | ResultStatus::Cancelled
        )
    }
}

impl StoredError {
    /// A job picked up after its request's deadline: answered with this, not run.
    pub fn deadline_passed() -> Self {
        Self {
            kind: ErrorKind::DeadlineExceeded,
            message: "the request's deadline passed while it was queued; send it again".into(),
        }
    }
}

impl StoredResult {
    /// The record of a request that nothing has happened to yet: `queued`, empty.
    pub fn queued(request_id: RequestId, model: ModelName, created_at_ms: u64) -> Self {
        Self {
            request_id,
            model,
            status: ResultStatus::Queued,
            text: String::new(),
            finish_reason: None,
            usage: Usage::default(),
            timings: Timings::default(),
            sources: Vec::new(),
            error: None,
            attempt: 0,
            owner: String::new(),
            created_at_ms,
            finished_at_ms: 0,
            replay_of: None,
        }
    }

    /// This record, ended as `failed` with `error`, now.
    pub fn into_failed(self, error: StoredError) -> Self {
        Self {
            status: ResultStatus::Failed,
            error: Some(error),
            finished_at_ms: super::now_ms(),
            ..self
        }
    }
}

impl Wire for StoredResult {
    const WHAT: &'static str = "stored result";
}
