//! What cauce's streams, consumers and buckets look like: one function per object,
//! from the [`Limits`] they are made with, and what `PROMPTS` records of them.

use std::collections::HashMap;
use std::time::Duration;

use async_nats::jetstream::consumer::{self, AckPolicy, DeliverPolicy};
use async_nats::jetstream::kv;
use async_nats::jetstream::stream::{self, DiscardPolicy, RetentionPolicy, StorageType};

use super::{DAY, Limits, MIB, Retention};
use crate::ids::ModelName;
use crate::names;

/// Keys of the `PROMPTS` stream's metadata that record how a model's consumer is made.
const META_INFERENCE_ACK_WAIT_MS: &str = "cauce.inference_ack_wait_ms";
const META_MAX_DELIVERIES: &str = "cauce.max_deliveries";
const META_MAX_ACK_PENDING: &str = "cauce.max_ack_pending";

/// What `PROMPTS` records of how a model's consumer is made.
pub(super) fn recorded(limits: &Limits) -> HashMap<String, String> {
    HashMap::from([
        (
            META_INFERENCE_ACK_WAIT_MS.to_string(),
            limits.inference_ack_wait.as_millis().to_string(),
        ),
        (
            META_MAX_DELIVERIES.to_string(),
            limits.max_deliveries.to_string(),
        ),
        (
            META_MAX_ACK_PENDING.to_string(),
            limits.max_ack_pending.to_string(),
        ),
    ])
}

pub(super) fn read_recorded(metadata: &HashMap<String, String>, limits: &mut Limits) {
    let number = |key: &str| metadata.get(key).and_then(|v| v.parse::<i64>().ok());
    if let Some(ms) = number(META_INFERENCE_ACK_WAIT_MS) {
        limits.inference_ack_wait = Duration::from_millis(ms.max(0) as u64);
    }
    if let Some(n) = number(META_MAX_DELIVERIES) {
        limits.max_deliveries = n;
    }
    if let Some(n) = number(META_MAX_ACK_PENDING) {
        limits.max_ack_pending = n;
    }
}

pub(super) fn questions_stream(limits: &Limits) -> stream::Config {
    stream::Config {
        name: names::QUESTIONS.into(),
        description: Some("every accepted question, kept for replay".into()),
        subjects: vec![names::QUESTIONS_SUBJECT.into()],
        max_age: limits.questions.max_age,
        max_bytes: limits.questions.max_bytes,
        discard: DiscardPolicy::Old,
        ..log_stream(limits)
    }
}

pub(super) fn prompts_stream(limits: &Limits) -> stream::Config {
    stream::Config {
        name: names::PROMPTS.into(),
        description: Some("questions with their context, one subject per model".into()),
        subjects: vec![names::PROMPTS_SUBJECTS.into()],
        max_age: limits.prompts.max_age,
        max_bytes: limits.prompts.max_bytes,
        // a full queue refuses new work rather than dropping accepted work
        discard: DiscardPolicy::New,
        metadata: recorded(limits),
        ..log_stream(limits)
    }
}

pub(super) fn docs_stream(limits: &Limits) -> stream::Config {
    stream::Config {
        name: names::DOCS.into(),
        description: Some("the corpus: latest version or tombstone of each document".into()),
        subjects: vec![names::DOCS_SUBJECTS.into()],
        max_age: limits.docs.max_age,
        max_bytes: limits.docs.max_bytes,
        max_messages_per_subject: 1,
        discard: DiscardPolicy::New,
        ..log_stream(limits)
    }
}

/// Upload jobs are small and done within minutes; a week covers a stopped ingest.
pub(super) fn uploads_stream(limits: &Limits) -> stream::Config {
    stream::Config {
        name: names::UPLOADS.into(),
        description: Some("upload jobs: convert an uploaded file, or delete it".into()),
        subjects: vec![names::UPLOADS_SUBJECTS.into()],
        max_age: 7 * DAY,
        max_bytes: 64 * MIB,
        discard: DiscardPolicy::New,
        ..log_stream(limits)
    }
}

/// The stream an object store is made of, as `create_object_store` makes it.
pub(super) fn upload_files_stream(limits: &Limits) -> stream::Config {
    let bucket = names::UPLOADS_BUCKET;
    stream::Config {
        name: names::object_stream(bucket),
        description: Some("uploaded files, one object per document".into()),
        subjects: vec![format!("$O.{bucket}.C.>"), format!("$O.{bucket}.M.>")],
        max_age: limits.uploads.max_age,
        max_bytes: limits.uploads.max_bytes,
        discard: DiscardPolicy::New,
        allow_rollup: true,
        allow_direct: true,
        ..log_stream(limits)
    }
}

/// The records of uploaded documents: small, kept as long as their documents.
pub(super) const DOCUMENTS_RETENTION: Retention = Retention {
    max_age: Duration::ZERO,
    max_bytes: 64 * MIB,
};

/// Dead-letter advisories live as long as the questions they point at: past that,
/// there is nothing left to replay.
pub(super) fn dead_stream(limits: &Limits) -> stream::Config {
    stream::Config {
        name: names::DEAD.into(),
        description: Some("advisories of questions and prompt jobs given up on".into()),
        subjects: names::dead_letter_subjects(),
        max_age: limits.questions.max_age,
        max_bytes: 64 * MIB,
        discard: DiscardPolicy::Old,
        ..log_stream(limits)
    }
}

/// Dead-letter advisories of upload jobs, kept as long as the jobs.
pub(super) fn dead_uploads_stream(limits: &Limits) -> stream::Config {
    stream::Config {
        name: names::DEAD_UPLOADS.into(),
        description: Some("advisories of upload jobs given up on".into()),
        subjects: names::dead_upload_subjects(),
        max_age: 7 * DAY,
        max_bytes: 16 * MIB,
        discard: DiscardPolicy::Old,
        ..log_stream(limits)
    }
}

pub(super) fn log_stream(limits: &Limits) -> stream::Config {
    stream::Config {
        retention: RetentionPolicy::Limits,
        storage: StorageType::File,
        // the server stores "no limit" as -1; asking for 0 would read as a change
        max_messages: -1,
        max_messages_per_subject: -1,
        num_replicas: limits.replicas,
        duplicate_window: limits.duplicate_window,
        ..Default::default()
    }
}

pub(super) fn retrieval_consumer(limits: &Limits) -> consumer::pull::Config {
    consumer::pull::Config {
        durable_name: Some(names::RETRIEVAL_CONSUMER.into()),
        description: Some("retrieval workers".into()),
        ack_wait: limits.retrieval_ack_wait,
        ..work_queue_consumer(limits)
    }
}

pub(super) fn inference_consumer(model: &ModelName, limits: &Limits) -> consumer::pull::Config {
    consumer::pull::Config {
        durable_name: Some(names::inference_consumer(model)),
        description: Some(format!("inference workers of model {model}")),
        filter_subject: names::prompt_subject(model),
        ack_wait: limits.inference_ack_wait,
        ..work_queue_consumer(limits)
    }
}

/// The ingest workers' shared consumer of upload jobs: a conversion may take a while
/// (a long PDF), so the ack wait is long and a live worker acks its progress.
pub(super) fn ingest_consumer() -> consumer::pull::Config {
    consumer::pull::Config {
        durable_name: Some(names::INGEST_CONSUMER.into()),
        description: Some("ingest workers: uploaded files into DOCS".into()),
        deliver_policy: DeliverPolicy::All,
        ack_policy: AckPolicy::Explicit,
        ack_wait: INGEST_ACK_WAIT,
        max_deliver: INGEST_MAX_DELIVERIES,
        max_ack_pending: 1000,
        ..Default::default()
    }
}

/// How long an ingest worker may go without acking its job's progress.
pub const INGEST_ACK_WAIT: Duration = Duration::from_secs(30);
/// Deliveries of one upload job before the ingest worker that holds the last one
/// records the upload as failed.
pub const INGEST_MAX_DELIVERIES: i64 = 5;

/// The gateways' shared reader of dead letters: new ones only (older ones were either
/// handled or belong to requests long over), a handful of retries.
pub(super) fn dead_notify_consumer() -> consumer::pull::Config {
    consumer::pull::Config {
        durable_name: Some(names::DEAD_NOTIFY_CONSUMER.into()),
        description: Some("gateways: dead letters become failed requests".into()),
        deliver_policy: DeliverPolicy::New,
        ack_policy: AckPolicy::Explicit,
        ack_wait: Duration::from_secs(30),
        max_deliver: 20,
        // the server's own default, spelled out so that a second apply changes nothing
        max_ack_pending: 1000,
        ..Default::default()
    }
}

/// The ingest workers' shared reader of upload dead letters: every one not handled
/// yet, since an upload left unended is wrong however old.
pub(super) fn dead_uploads_consumer() -> consumer::pull::Config {
    consumer::pull::Config {
        durable_name: Some(names::DEAD_UPLOADS_CONSUMER.into()),
        description: Some("ingest workers: upload jobs given up on become failed uploads".into()),
        deliver_policy: DeliverPolicy::All,
        ack_policy: AckPolicy::Explicit,
        ack_wait: Duration::from_secs(30),
        max_deliver: 20,
        max_ack_pending: 1000,
        ..Default::default()
    }
}

pub(super) fn work_queue_consumer(limits: &Limits) -> consumer::pull::Config {
    consumer::pull::Config {
        deliver_policy: DeliverPolicy::All,
        ack_policy: AckPolicy::Explicit,
        max_deliver: limits.max_deliveries,
        max_ack_pending: limits.max_ack_pending,
        ..Default::default()
    }
}

pub(super) fn bucket_config(bucket: &str, retention: Retention, replicas: usize) -> kv::Config {
    kv::Config {
        bucket: bucket.into(),
        history: 1,
        max_age: retention.max_age,
        max_bytes: retention.max_bytes,
        storage: StorageType::File,
        num_replicas: replicas,
        ..Default::default()
    }
}
