//! The setup of every stream, consumer and bucket cauce uses, with one owner.
//!
//! [`apply`] is the one step that creates or changes them: `cauce up` and `cauce nats
//! apply` call it. A missing object is created; an object whose limits differ from the
//! given ones is updated in place; an object set up in a way cauce cannot use (another
//! storage type, other subjects, another ack policy) is left alone and reported as
//! [`Error::Conflict`] naming the object and the field.
//!
//! Every other process calls [`check`] with the objects it [`Need`]s: each must exist
//! with the fixed fields cauce relies on, nothing is created or changed, and the limits
//! found on the server come back ([`read`]), so a worker paces its acks by the ack wait
//! the server enforces rather than by a flag of its own. The one exception is
//! [`ensure_inference_consumer`]: a model's consumer is created when a worker or a
//! question for that model first appears, with the settings [`apply`] recorded in the
//! `PROMPTS` stream's metadata.

use std::collections::HashMap;
use std::time::Duration;

use async_nats::jetstream::ErrorCode;
use async_nats::jetstream::consumer::{self, AckPolicy, DeliverPolicy, FromConsumer};
use async_nats::jetstream::context::{ConsumerInfoErrorKind, GetStreamErrorKind};
use async_nats::jetstream::stream::{self, DiscardPolicy, RetentionPolicy, StorageType};
use async_nats::jetstream::{self, kv};
use futures::TryStreamExt;

use crate::error::{Error, Result};
use crate::ids::ModelName;
use crate::names;

const DAY: Duration = Duration::from_secs(24 * 3600);
const GIB: i64 = 1 << 30;
const MIB: i64 = 1 << 20;

/// Keys of the `PROMPTS` stream's metadata that record how a model's consumer is made.
/// The work consumers' ack wait when none is asked for.
pub const DEFAULT_ACK_WAIT: Duration = Duration::from_secs(1);

const META_INFERENCE_ACK_WAIT_MS: &str = "cauce.inference_ack_wait_ms";
const META_MAX_DELIVERIES: &str = "cauce.max_deliveries";
const META_MAX_ACK_PENDING: &str = "cauce.max_ack_pending";

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
    /// The uploaded files' object store.
    pub uploads: Retention,
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
            uploads: Retention {
                max_age: Duration::ZERO,
                max_bytes: 2 * GIB,
            },
            // short, so that a job whose worker died goes on elsewhere within about a
            // second: a live worker acks its progress four times as often, and one
            // that is too slow loses its job safely (see `crate::results`)
            retrieval_ack_wait: DEFAULT_ACK_WAIT,
            inference_ack_wait: DEFAULT_ACK_WAIT,
            // each worker that dies holding a job spends one of them
            max_deliveries: 10,
            max_ack_pending: 10_000,
        }
    }
}

/// What [`apply`] did to one object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Created,
    Updated,
    Unchanged,
}

/// One line of an [`apply`] report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ensured {
    /// `stream QUESTIONS`, `consumer QUESTIONS/retrieval`, `bucket cauce-results`.
    pub object: String,
    pub action: Action,
}

/// An object a process uses and [`check`]s at start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need {
    Questions,
    Prompts,
    Docs,
    Dead,
    DeadNotifyConsumer,
    RetrievalConsumer,
    Results,
    Cache,
    Cancels,
    Uploads,
    IngestConsumer,
    UploadFiles,
    Documents,
}

impl Need {
    /// The gateway publishes questions, reads results and the `PROMPTS` backlog, cancels.
    /// It also stores uploaded files, their records, and queues their jobs.
    pub const GATEWAY: &'static [Need] = &[
        Need::Questions,
        Need::Prompts,
        Need::Results,
        Need::Cache,
        Need::Cancels,
        Need::Uploads,
        Need::UploadFiles,
        Need::Documents,
    ];
    /// A retrieval worker consumes questions, follows `DOCS`, publishes prompt jobs, and
    /// turns dead letters into failures.
    pub const RETRIEVAL: &'static [Need] = &[
        Need::Questions,
        Need::RetrievalConsumer,
        Need::Prompts,
        Need::Docs,
        Need::Dead,
        Need::DeadNotifyConsumer,
        Need::Results,
        Need::Cache,
        Need::Cancels,
    ];
    /// An inference worker consumes prompt jobs and stores results and cached answers.
    pub const INFERENCE: &'static [Need] =
        &[Need::Prompts, Need::Results, Need::Cache, Need::Cancels];
    /// An ingest run publishes documents, nothing else.
    pub const INGEST: &'static [Need] = &[Need::Docs];
    /// An ingest worker (`--follow`) also pulls upload jobs, reads the uploaded files
    /// and writes their records.
    pub const INGEST_FOLLOW: &'static [Need] = &[
        Need::Docs,
        Need::Uploads,
        Need::IngestConsumer,
        Need::UploadFiles,
        Need::Documents,
    ];
    /// `cauce cache` reads and clears the response cache.
    pub const CACHE: &'static [Need] = &[Need::Cache];
}

/// Creates or updates every stream, consumer and bucket to `limits`, and every model's
/// inference consumer that exists. Idempotent. Only the owner step calls it.
pub async fn apply(js: &jetstream::Context, limits: &Limits) -> Result<Vec<Ensured>> {
    let mut report = Vec::new();
    report.push(ensure_stream(js, questions_stream(limits)).await?);
    report.push(ensure_stream(js, prompts_stream(limits)).await?);
    report.push(ensure_stream(js, docs_stream(limits)).await?);
    report.push(ensure_stream(js, uploads_stream(limits)).await?);
    report.push(ensure_consumer(js, names::UPLOADS, ingest_consumer()).await?);
    report.push(ensure_stream(js, upload_files_stream(limits)).await?);
    report.push(ensure_consumer(js, names::QUESTIONS, retrieval_consumer(limits)).await?);
    for (bucket, retention) in [
        (names::RESULTS_BUCKET, limits.results),
        (names::CACHE_BUCKET, limits.cache),
        (names::CANCELS_BUCKET, limits.cancels),
        (names::DOCUMENTS_BUCKET, DOCUMENTS_RETENTION),
    ] {
        report.push(ensure_bucket(js, bucket, retention, limits.replicas).await?);
    }
    report.push(ensure_stream(js, dead_stream(limits)).await?);
    report.push(ensure_consumer(js, names::DEAD, dead_notify_consumer()).await?);
    for model in inference_models(js).await? {
        report.push(ensure_consumer(js, names::PROMPTS, inference_consumer(&model, limits)).await?);
    }
    Ok(report)
}

/// Checks that every object in `needs` exists with the fixed fields cauce relies on,
/// changing nothing, and returns the limits the server holds.
pub async fn check(js: &jetstream::Context, needs: &[Need]) -> Result<Limits> {
    let shape = Limits::default();
    for need in needs {
        match need {
            Need::Questions => check_stream(js, questions_stream(&shape)).await?,
            Need::Prompts => check_stream(js, prompts_stream(&shape)).await?,
            Need::Docs => check_stream(js, docs_stream(&shape)).await?,
            Need::Dead => check_stream(js, dead_stream(&shape)).await?,
            Need::DeadNotifyConsumer => {
                check_consumer(js, names::DEAD, dead_notify_consumer()).await?
            }
            Need::RetrievalConsumer => {
                check_consumer(js, names::QUESTIONS, retrieval_consumer(&shape)).await?
            }
            Need::Results => check_bucket(js, names::RESULTS_BUCKET).await?,
            Need::Cache => check_bucket(js, names::CACHE_BUCKET).await?,
            Need::Cancels => check_bucket(js, names::CANCELS_BUCKET).await?,
            Need::Uploads => check_stream(js, uploads_stream(&shape)).await?,
            Need::IngestConsumer => check_consumer(js, names::UPLOADS, ingest_consumer()).await?,
            Need::UploadFiles => check_stream(js, upload_files_stream(&shape)).await?,
            Need::Documents => check_bucket(js, names::DOCUMENTS_BUCKET).await?,
        }
    }
    read(js).await
}

/// The limits the server holds: each field read from the object it configures, the
/// default where that object does not exist.
pub async fn read(js: &jetstream::Context) -> Result<Limits> {
    let mut limits = Limits::default();
    let questions = stream_config(js, names::QUESTIONS).await?;
    if let Some(config) = &questions {
        limits.questions = retention_of(config);
        limits.replicas = config.num_replicas;
        limits.duplicate_window = config.duplicate_window;
    }
    if let Some(config) = stream_config(js, names::PROMPTS).await? {
        limits.prompts = retention_of(&config);
        read_recorded(&config.metadata, &mut limits);
    }
    if let Some(config) = stream_config(js, names::DOCS).await? {
        limits.docs = retention_of(&config);
    }
    let files = names::object_stream(names::UPLOADS_BUCKET);
    if let Some(config) = stream_config(js, &files).await? {
        limits.uploads = retention_of(&config);
    }
    for (bucket, retention) in [
        (names::RESULTS_BUCKET, &mut limits.results),
        (names::CACHE_BUCKET, &mut limits.cache),
        (names::CANCELS_BUCKET, &mut limits.cancels),
    ] {
        if let Some(config) = stream_config(js, &names::bucket_stream(bucket)).await? {
            *retention = retention_of(&config);
        }
    }
    let wanted = retrieval_consumer(&limits);
    let object = consumer_object(names::QUESTIONS, &wanted);
    if questions.is_none() {
        return Ok(limits);
    }
    if let Some(config) = consumer_config(js, names::QUESTIONS, &object, &wanted).await? {
        limits.retrieval_ack_wait = config.ack_wait;
        limits.max_deliveries = config.max_deliver;
        limits.max_ack_pending = config.max_ack_pending;
    }
    Ok(limits)
}

/// Creates the durable consumer the inference workers of one model share when it is
/// missing, with the settings [`apply`] recorded on `PROMPTS`; an existing one is only
/// checked. Returns the consumer's settings as the server holds them.
pub async fn ensure_inference_consumer(
    js: &jetstream::Context,
    model: &ModelName,
) -> Result<(Ensured, consumer::pull::Config)> {
    let prompts = stream_config(js, names::PROMPTS)
        .await?
        .ok_or_else(|| Error::Missing {
            object: format!("stream {}", names::PROMPTS),
        })?;
    let mut limits = Limits::default();
    read_recorded(&prompts.metadata, &mut limits);
    let wanted = inference_consumer(model, &limits);
    let object = consumer_object(names::PROMPTS, &wanted);
    let Some(existing) = consumer_config(js, names::PROMPTS, &object, &wanted).await? else {
        let stream = js
            .get_stream_no_info(names::PROMPTS)
            .await
            .map_err(|e| Error::jetstream("lookup", &object, e))?;
        let created = stream
            .create_consumer(wanted.clone())
            .await
            .map_err(|e| Error::jetstream("create", &object, e))?;
        let ensured = Ensured {
            object,
            action: Action::Created,
        };
        let config =
            consumer::pull::Config::try_from_consumer_config(created.cached_info().config.clone())
                .map_err(|e| Error::jetstream("read", &ensured.object, e))?;
        return Ok((ensured, config));
    };
    consumer_fixed(&object, &existing, &wanted)?;
    let ensured = Ensured {
        object,
        action: Action::Unchanged,
    };
    Ok((ensured, existing))
}

/// The models that have an inference consumer on `PROMPTS`.
async fn inference_models(js: &jetstream::Context) -> Result<Vec<ModelName>> {
    let object = format!("stream {}", names::PROMPTS);
    let stream = js
        .get_stream_no_info(names::PROMPTS)
        .await
        .map_err(|e| Error::jetstream("lookup", &object, e))?;
    let consumers: Vec<String> = stream
        .consumer_names()
        .try_collect()
        .await
        .map_err(|e| Error::jetstream("list consumers", &object, e))?;
    Ok(consumers
        .iter()
        .filter_map(|name| names::model_of_inference_consumer(name))
        .collect())
}

fn retention_of(config: &stream::Config) -> Retention {
    Retention {
        max_age: config.max_age,
        max_bytes: config.max_bytes,
    }
}

/// What `PROMPTS` records of how a model's consumer is made.
fn recorded(limits: &Limits) -> HashMap<String, String> {
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

fn read_recorded(metadata: &HashMap<String, String>, limits: &mut Limits) {
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
        metadata: recorded(limits),
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

/// Upload jobs are small and done within minutes; a week covers a stopped ingest.
fn uploads_stream(limits: &Limits) -> stream::Config {
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
fn upload_files_stream(limits: &Limits) -> stream::Config {
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
const DOCUMENTS_RETENTION: Retention = Retention {
    max_age: Duration::ZERO,
    max_bytes: 64 * MIB,
};

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

fn inference_consumer(model: &ModelName, limits: &Limits) -> consumer::pull::Config {
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
fn ingest_consumer() -> consumer::pull::Config {
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
fn dead_notify_consumer() -> consumer::pull::Config {
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

fn work_queue_consumer(limits: &Limits) -> consumer::pull::Config {
    consumer::pull::Config {
        deliver_policy: DeliverPolicy::All,
        ack_policy: AckPolicy::Explicit,
        max_deliver: limits.max_deliveries,
        max_ack_pending: limits.max_ack_pending,
        ..Default::default()
    }
}

/// A difference in a field that cannot change is a conflict.
fn fixed<T: PartialEq + std::fmt::Debug>(
    object: &str,
    field: &'static str,
    found: &T,
    wanted: &T,
) -> Result<()> {
    if found == wanted {
        return Ok(());
    }
    Err(Error::Conflict {
        object: object.to_string(),
        field,
        found: format!("{found:?}"),
        wanted: format!("{wanted:?}"),
    })
}

/// The config of a stream, or `None` when it does not exist.
async fn stream_config(js: &jetstream::Context, name: &str) -> Result<Option<stream::Config>> {
    match js.get_stream(name).await {
        Ok(mut stream) => {
            let info = stream
                .info()
                .await
                .map_err(|e| Error::jetstream("info", format!("stream {name}"), e))?;
            Ok(Some(info.config.clone()))
        }
        Err(err) if stream_missing(&err) => Ok(None),
        Err(err) => Err(Error::jetstream("lookup", format!("stream {name}"), err)),
    }
}

fn stream_fixed(object: &str, existing: &stream::Config, wanted: &stream::Config) -> Result<()> {
    fixed(object, "storage", &existing.storage, &wanted.storage)?;
    fixed(object, "retention", &existing.retention, &wanted.retention)?;
    fixed(object, "subjects", &existing.subjects, &wanted.subjects)?;
    fixed(
        object,
        "max_messages_per_subject",
        &existing.max_messages_per_subject,
        &wanted.max_messages_per_subject,
    )
}

async fn check_stream(js: &jetstream::Context, wanted: stream::Config) -> Result<()> {
    let object = format!("stream {}", wanted.name);
    let existing = stream_config(js, &wanted.name)
        .await?
        .ok_or_else(|| Error::Missing {
            object: object.clone(),
        })?;
    stream_fixed(&object, &existing, &wanted)
}

async fn ensure_stream(js: &jetstream::Context, wanted: stream::Config) -> Result<Ensured> {
    let object = format!("stream {}", wanted.name);
    let Some(existing) = stream_config(js, &wanted.name).await? else {
        js.create_stream(wanted)
            .await
            .map_err(|e| Error::jetstream("create", &object, e))?;
        return Ok(Ensured {
            object,
            action: Action::Created,
        });
    };
    stream_fixed(&object, &existing, &wanted)?;
    let recorded_differs = wanted
        .metadata
        .iter()
        .any(|(key, value)| existing.metadata.get(key) != Some(value));
    let changed = existing.max_age != wanted.max_age
        || existing.max_bytes != wanted.max_bytes
        || existing.num_replicas != wanted.num_replicas
        || existing.duplicate_window != wanted.duplicate_window
        || existing.discard != wanted.discard
        || recorded_differs;
    if !changed {
        return Ok(Ensured {
            object,
            action: Action::Unchanged,
        });
    }
    let mut metadata = existing.metadata.clone();
    metadata.extend(wanted.metadata);
    let updated = stream::Config {
        max_age: wanted.max_age,
        max_bytes: wanted.max_bytes,
        num_replicas: wanted.num_replicas,
        duplicate_window: wanted.duplicate_window,
        discard: wanted.discard,
        metadata,
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

fn consumer_object(stream_name: &str, wanted: &consumer::pull::Config) -> String {
    let name = wanted.durable_name.as_deref().unwrap_or_default();
    format!("consumer {stream_name}/{name}")
}

/// The config of a durable consumer, or `None` when it does not exist.
async fn consumer_config(
    js: &jetstream::Context,
    stream_name: &str,
    object: &str,
    wanted: &consumer::pull::Config,
) -> Result<Option<consumer::pull::Config>> {
    let name = wanted.durable_name.clone().unwrap_or_default();
    let stream = js
        .get_stream_no_info(stream_name)
        .await
        .map_err(|e| Error::jetstream("lookup", object, e))?;
    match stream.consumer_info(&name).await {
        Ok(info) => {
            fixed(
                object,
                "deliver_subject (push consumer)",
                &info.config.deliver_subject,
                &None,
            )?;
            let config = consumer::pull::Config::try_from_consumer_config(info.config)
                .map_err(|e| Error::jetstream("read", object, e))?;
            Ok(Some(config))
        }
        Err(err) if consumer_missing(&err) => Ok(None),
        Err(err) => Err(Error::jetstream("lookup", object, err)),
    }
}

fn consumer_fixed(
    object: &str,
    existing: &consumer::pull::Config,
    wanted: &consumer::pull::Config,
) -> Result<()> {
    fixed(
        object,
        "ack_policy",
        &existing.ack_policy,
        &wanted.ack_policy,
    )?;
    fixed(
        object,
        "deliver_policy",
        &existing.deliver_policy,
        &wanted.deliver_policy,
    )?;
    fixed(
        object,
        "filter_subject",
        &existing.filter_subject,
        &wanted.filter_subject,
    )
}

async fn check_consumer(
    js: &jetstream::Context,
    stream_name: &str,
    wanted: consumer::pull::Config,
) -> Result<()> {
    let object = consumer_object(stream_name, &wanted);
    let existing = consumer_config(js, stream_name, &object, &wanted)
        .await?
        .ok_or_else(|| Error::Missing {
            object: object.clone(),
        })?;
    consumer_fixed(&object, &existing, &wanted)
}

async fn ensure_consumer(
    js: &jetstream::Context,
    stream_name: &str,
    wanted: consumer::pull::Config,
) -> Result<Ensured> {
    let object = consumer_object(stream_name, &wanted);
    let stream = js
        .get_stream_no_info(stream_name)
        .await
        .map_err(|e| Error::jetstream("lookup", &object, e))?;
    let Some(existing) = consumer_config(js, stream_name, &object, &wanted).await? else {
        stream
            .create_consumer(wanted)
            .await
            .map_err(|e| Error::jetstream("create", &object, e))?;
        return Ok(Ensured {
            object,
            action: Action::Created,
        });
    };
    consumer_fixed(&object, &existing, &wanted)?;
    let changed = existing.ack_wait != wanted.ack_wait
        || existing.max_deliver != wanted.max_deliver
        || existing.max_ack_pending != wanted.max_ack_pending;
    if !changed {
        return Ok(Ensured {
            object,
            action: Action::Unchanged,
        });
    }
    stream
        .update_consumer(wanted)
        .await
        .map_err(|e| Error::jetstream("update", &object, e))?;
    Ok(Ensured {
        object,
        action: Action::Updated,
    })
}

fn bucket_config(bucket: &str, retention: Retention, replicas: usize) -> kv::Config {
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

fn bucket_fixed(object: &str, existing: &stream::Config, wanted: &kv::Config) -> Result<()> {
    fixed(object, "storage", &existing.storage, &wanted.storage)?;
    fixed(
        object,
        "history",
        &existing.max_messages_per_subject,
        &wanted.history,
    )
}

async fn check_bucket(js: &jetstream::Context, bucket: &str) -> Result<()> {
    let object = format!("bucket {bucket}");
    let existing = stream_config(js, &names::bucket_stream(bucket))
        .await?
        .ok_or_else(|| Error::Missing {
            object: object.clone(),
        })?;
    let any_retention = Retention {
        max_age: Duration::ZERO,
        max_bytes: -1,
    };
    let shape = bucket_config(bucket, any_retention, 1);
    bucket_fixed(&object, &existing, &shape)
}

async fn ensure_bucket(
    js: &jetstream::Context,
    bucket: &str,
    retention: Retention,
    replicas: usize,
) -> Result<Ensured> {
    let object = format!("bucket {bucket}");
    let wanted = bucket_config(bucket, retention, replicas);
    let Some(existing) = stream_config(js, &names::bucket_stream(bucket)).await? else {
        js.create_key_value(wanted)
            .await
            .map_err(|e| Error::jetstream("create", &object, e))?;
        return Ok(Ensured {
            object,
            action: Action::Created,
        });
    };
    bucket_fixed(&object, &existing, &wanted)?;
    let changed = existing.max_age != wanted.max_age
        || existing.max_bytes != wanted.max_bytes
        || existing.num_replicas != wanted.num_replicas;
    if !changed {
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
        // no stream, so no consumer on it either
        ConsumerInfoErrorKind::JetStream(e) => {
            e.error_code() == ErrorCode::CONSUMER_NOT_FOUND
                || e.error_code() == ErrorCode::STREAM_NOT_FOUND
        }
        _ => false,
    }
}
