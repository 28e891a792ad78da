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

use std::time::Duration;

use async_nats::jetstream::consumer::{self, FromConsumer};
use async_nats::jetstream::stream;
use async_nats::jetstream::{self};
use futures::TryStreamExt;

use crate::error::{Error, Result};
use crate::ids::ModelName;
use crate::names;

mod server;
mod shapes;

use server::*;
use shapes::*;
pub use shapes::{INGEST_ACK_WAIT, INGEST_MAX_DELIVERIES};

const DAY: Duration = Duration::from_secs(24 * 3600);
const GIB: i64 = 1 << 30;
const MIB: i64 = 1 << 20;

/// The work consumers' ack wait when none is asked for.
pub const DEFAULT_ACK_WAIT: Duration = Duration::from_secs(1);

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
    /// [`names::DEAD_UPLOADS`] and its consumer.
    DeadUploads,
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
    /// and writes their records, and ends the uploads whose jobs were given up on.
    pub const INGEST_FOLLOW: &'static [Need] = &[
        Need::Docs,
        Need::Uploads,
        Need::IngestConsumer,
        Need::UploadFiles,
        Need::Documents,
        Need::DeadUploads,
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
    report.push(ensure_stream(js, dead_uploads_stream(limits)).await?);
    report.push(ensure_consumer(js, names::DEAD_UPLOADS, dead_uploads_consumer()).await?);
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
            Need::DeadUploads => {
                check_stream(js, dead_uploads_stream(&shape)).await?;
                check_consumer(js, names::DEAD_UPLOADS, dead_uploads_consumer()).await?
            }
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
