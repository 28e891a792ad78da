//! Idempotent setup of every stream, consumer and bucket cauce uses.
//!
//! Every component calls [`ensure`] at start. A missing object is created; an object
//! whose limits differ from the configured ones is updated in place; an object set up
//! in a way cauce cannot use (another storage type, other subjects, another ack
//! policy) is left alone and reported as [`Error::Conflict`] naming the object and
//! the field.

use std::time::Duration;

use async_nats::jetstream::ErrorCode;
use async_nats::jetstream::consumer::{self, AckPolicy, DeliverPolicy};
use async_nats::jetstream::context::{ConsumerInfoErrorKind, GetStreamErrorKind};
use async_nats::jetstream::stream::{self, DiscardPolicy, RetentionPolicy, StorageType};
use async_nats::jetstream::{self, kv};

use crate::error::{Error, Result};
use crate::ids::ModelName;
use crate::names;

const DAY: Duration = Duration::from_secs(24 * 3600);
const GIB: i64 = 1 << 30;
const MIB: i64 = 1 << 20;

/// Age and size bounds of one stream or bucket. `max_age` zero keeps messages forever;
/// `max_bytes` -1 sets no size bound.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retention {
    pub max_age: Duration,
    pub max_bytes: i64,
}

/// The configurable limits of cauce's NATS objects.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Replicas of every stream and bucket (1 on a single server, 3 on a 3-node cluster).
    pub replicas: usize,
    /// Window in which a repeated `Nats-Msg-Id` is dropped as a duplicate.
    pub duplicate_window: Duration,
    pub questions: Retention,
    pub prompts: Retention,
    pub docs: Retention,
    pub results: Retention,
    pub cache: Retention,
    pub cancels: Retention,
    /// How long a retrieval worker may hold a question before it is redelivered.
    pub retrieval_ack_wait: Duration,
    /// How long an inference worker may go without an (in-progress) ack before its job is
    /// redelivered to another worker.
    pub inference_ack_wait: Duration,
    /// Deliveries of one question or prompt job before it is given up as a dead letter.
    pub max_deliveries: i64,
    /// Bound on jobs handed out and not yet acked, over all workers of one consumer.
    pub max_ack_pending: i64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            replicas: 1,
            duplicate_window: Duration::from_secs(120),
            questions: Retention {
                max_age: 7 * DAY,
                max_bytes: GIB,
            },
            prompts: Retention {
                max_age: DAY,
                max_bytes: GIB,
            },
            docs: Retention {
                max_age: Duration::ZERO,
                max_bytes: 4 * GIB,
            },
            results: Retention {
                max_age: 7 * DAY,
                max_bytes: GIB,
            },
            cache: Retention {
                max_age: DAY,
                max_bytes: 256 * MIB,
            },
            cancels: Retention {
                max_age: Duration::from_secs(3600),
                max_bytes: 64 * MIB,
            },
            retrieval_ack_wait: Duration::from_secs(30),
            inference_ack_wait: Duration::from_secs(30),
            max_deliveries: 5,
            max_ack_pending: 10_000,
        }
    }
}

/// What [`ensure`] did to one object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Created,
    Updated,
    Unchanged,
}

/// One line of an [`ensure`] report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ensured {
    /// `stream QUESTIONS`, `consumer QUESTIONS/retrieval`, `bucket cauce-results`.
    pub object: String,
    pub action: Action,
}

/// Creates or updates every stream, consumer and bucket. Idempotent.
pub async fn ensure(js: &jetstream::Context, limits: &Limits) -> Result<Vec<Ensured>> {
    let mut report = Vec::new();
    report.push(ensure_stream(js, questions_stream(limits)).await?);
    report.push(ensure_stream(js, prompts_stream(limits)).await?);
    report.push(ensure_stream(js, docs_stream(limits)).await?);
    report.push(ensure_consumer(js, names::QUESTIONS, retrieval_consumer(limits)).await?);
    for (bucket, retention) in [
        (names::RESULTS_BUCKET, limits.results),
        (names::CACHE_BUCKET, limits.cache),
        (names::CANCELS_BUCKET, limits.cancels),
    ] {
        report.push(ensure_bucket(js, bucket, retention, limits.replicas).await?);
    }
    report.push(ensure_stream(js, dead_stream(limits)).await?);
    Ok(report)
}

/// Creates or updates the durable consumer the inference workers of one model share.
pub async fn ensure_inference_consumer(
    js: &jetstream::Context,
    model: &ModelName,
    limits: &Limits,
) -> Result<Ensured> {
    let config = consumer::pull::Config {
        durable_name: Some(names::inference_consumer(model)),
        description: Some(format!("inference workers of model {model}")),
        filter_subject: names::prompt_subject(model),
        ack_wait: limits.inference_ack_wait,
        ..work_queue_consumer(limits)
    };
    ensure_consumer(js, names::PROMPTS, config).await
}

fn questions_stream(limits: &Limits) -> stream::Config {
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

fn prompts_stream(limits: &Limits) -> stream::Config {
    stream::Config {
        name: names::PROMPTS.into(),
        description: Some("questions with their context, one subject per model".into()),
        subjects: vec![names::PROMPTS_SUBJECTS.into()],
        max_age: limits.prompts.max_age,
        max_bytes: limits.prompts.max_bytes,
        // a full queue refuses new work rather than dropping accepted work
        discard: DiscardPolicy::New,
        ..log_stream(limits)
    }
}

fn docs_stream(limits: &Limits) -> stream::Config {
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

/// Dead-letter advisories live as long as the questions they point at: past that,
/// there is nothing left to replay.
fn dead_stream(limits: &Limits) -> stream::Config {
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

fn log_stream(limits: &Limits) -> stream::Config {
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

fn retrieval_consumer(limits: &Limits) -> consumer::pull::Config {
    consumer::pull::Config {
        durable_name: Some(names::RETRIEVAL_CONSUMER.into()),
        description: Some("retrieval workers".into()),
        ack_wait: limits.retrieval_ack_wait,
        ..work_queue_consumer(limits)
    }
}

fn work_queue_consumer(limits: &Limits) -> consumer::pull::Config {
    consumer::pull::Config {
        deliver_policy: DeliverPolicy::All,
        ack_policy: AckPolicy::Explicit,
        max_deliver: limits.max_deliveries,
        max_ack_pending: limits.max_ack_pending,
        ..Default::default()
    }
}

/// Compares one field; a difference in a field that cannot change is a conflict, in
/// one that can it marks the object for update.
struct Diff<'a> {
    object: &'a str,
    changed: bool,
}

impl Diff<'_> {
    fn fixed<T: PartialEq + std::fmt::Debug>(
        &self,
        field: &'static str,
        found: &T,
        wanted: &T,
    ) -> Result<()> {
        if found == wanted {
            return Ok(());
        }
        Err(Error::Conflict {
            object: self.object.to_string(),
            field,
            found: format!("{found:?}"),
            wanted: format!("{wanted:?}"),
        })
    }

    fn limit<T: PartialEq>(&mut self, found: &T, wanted: &T) {
        self.changed |= found != wanted;
    }
}

async fn ensure_stream(js: &jetstream::Context, wanted: stream::Config) -> Result<Ensured> {
    let object = format!("stream {}", wanted.name);
    let existing = match js.get_stream(&wanted.name).await {
        Ok(mut stream) => stream
            .info()
            .await
            .map_err(|e| Error::jetstream("info", &object, e))?
            .config
            .clone(),
        Err(err) if stream_missing(&err) => {
            js.create_stream(wanted)
                .await
                .map_err(|e| Error::jetstream("create", &object, e))?;
            return Ok(Ensured {
                object,
                action: Action::Created,
            });
        }
        Err(err) => return Err(Error::jetstream("lookup", &object, err)),
    };

    let mut diff = Diff {
        object: &object,
        changed: false,
    };
    diff.fixed("storage", &existing.storage, &wanted.storage)?;
    diff.fixed("retention", &existing.retention, &wanted.retention)?;
    diff.fixed("subjects", &existing.subjects, &wanted.subjects)?;
    diff.fixed(
        "max_messages_per_subject",
        &existing.max_messages_per_subject,
        &wanted.max_messages_per_subject,
    )?;
    diff.limit(&existing.max_age, &wanted.max_age);
    diff.limit(&existing.max_bytes, &wanted.max_bytes);
    diff.limit(&existing.num_replicas, &wanted.num_replicas);
    diff.limit(&existing.duplicate_window, &wanted.duplicate_window);
    diff.limit(&existing.discard, &wanted.discard);
    if !diff.changed {
        return Ok(Ensured {
            object,
            action: Action::Unchanged,
        });
    }
    let updated = stream::Config {
        max_age: wanted.max_age,
        max_bytes: wanted.max_bytes,
        num_replicas: wanted.num_replicas,
        duplicate_window: wanted.duplicate_window,
        discard: wanted.discard,
        ..existing
    };
    js.update_stream(updated)
        .await
        .map_err(|e| Error::jetstream("update", &object, e))?;
    Ok(Ensured {
        object,
        action: Action::Updated,
    })
}

async fn ensure_consumer(
    js: &jetstream::Context,
    stream_name: &str,
    wanted: consumer::pull::Config,
) -> Result<Ensured> {
    let name = wanted.durable_name.clone().unwrap_or_default();
    let object = format!("consumer {stream_name}/{name}");
    let stream = js
        .get_stream_no_info(stream_name)
        .await
        .map_err(|e| Error::jetstream("lookup", &object, e))?;
    let existing = match stream.consumer_info(&name).await {
        Ok(info) => info.config,
        Err(err) if consumer_missing(&err) => {
            stream
                .create_consumer(wanted)
                .await
                .map_err(|e| Error::jetstream("create", &object, e))?;
            return Ok(Ensured {
                object,
                action: Action::Created,
            });
        }
        Err(err) => return Err(Error::jetstream("lookup", &object, err)),
    };

    let mut diff = Diff {
        object: &object,
        changed: false,
    };
    diff.fixed(
        "deliver_subject (push consumer)",
        &existing.deliver_subject,
        &None,
    )?;
    diff.fixed("ack_policy", &existing.ack_policy, &wanted.ack_policy)?;
    diff.fixed(
        "deliver_policy",
        &existing.deliver_policy,
        &wanted.deliver_policy,
    )?;
    diff.fixed(
        "filter_subject",
        &existing.filter_subject,
        &wanted.filter_subject,
    )?;
    diff.limit(&existing.ack_wait, &wanted.ack_wait);
    diff.limit(&existing.max_deliver, &wanted.max_deliver);
    diff.limit(&existing.max_ack_pending, &wanted.max_ack_pending);
    if !diff.changed {
        return Ok(Ensured {
            object,
            action: Action::Unchanged,
        });
    }
    let updated = consumer::pull::Config {
        ack_wait: wanted.ack_wait,
        max_deliver: wanted.max_deliver,
        max_ack_pending: wanted.max_ack_pending,
        ..wanted
    };
    stream
        .update_consumer(updated)
        .await
        .map_err(|e| Error::jetstream("update", &object, e))?;
    Ok(Ensured {
        object,
        action: Action::Updated,
    })
}

async fn ensure_bucket(
    js: &jetstream::Context,
    bucket: &str,
    retention: Retention,
    replicas: usize,
) -> Result<Ensured> {
    let object = format!("bucket {bucket}");
    let wanted = kv::Config {
        bucket: bucket.into(),
        history: 1,
        max_age: retention.max_age,
        max_bytes: retention.max_bytes,
        storage: StorageType::File,
        num_replicas: replicas,
        ..Default::default()
    };
    let existing = match js.get_stream(names::bucket_stream(bucket)).await {
        Ok(mut stream) => stream
            .info()
            .await
            .map_err(|e| Error::jetstream("info", &object, e))?
            .config
            .clone(),
        Err(err) if stream_missing(&err) => {
            js.create_key_value(wanted)
                .await
                .map_err(|e| Error::jetstream("create", &object, e))?;
            return Ok(Ensured {
                object,
                action: Action::Created,
            });
        }
        Err(err) => return Err(Error::jetstream("lookup", &object, err)),
    };

    let mut diff = Diff {
        object: &object,
        changed: false,
    };
    diff.fixed("storage", &existing.storage, &wanted.storage)?;
    diff.fixed(
        "history",
        &existing.max_messages_per_subject,
        &wanted.history,
    )?;
    diff.limit(&existing.max_age, &wanted.max_age);
    diff.limit(&existing.max_bytes, &wanted.max_bytes);
    diff.limit(&existing.num_replicas, &wanted.num_replicas);
    if !diff.changed {
        return Ok(Ensured {
            object,
            action: Action::Unchanged,
        });
    }
    js.update_key_value(wanted)
        .await
        .map_err(|e| Error::jetstream("update", &object, e))?;
    Ok(Ensured {
        object,
        action: Action::Updated,
    })
}

fn stream_missing(err: &jetstream::context::GetStreamError) -> bool {
    matches!(err.kind(), GetStreamErrorKind::JetStream(e) if e.error_code() == ErrorCode::STREAM_NOT_FOUND)
}

fn consumer_missing(err: &jetstream::context::ConsumerInfoError) -> bool {
    match err.kind() {
        ConsumerInfoErrorKind::NotFound => true,
        ConsumerInfoErrorKind::JetStream(e) => e.error_code() == ErrorCode::CONSUMER_NOT_FOUND,
        _ => false,
    }
}
