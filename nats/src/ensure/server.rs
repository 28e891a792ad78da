//! Comparing an object with what the server holds, and creating or updating it: a
//! fixed field that differs is a [`Error::Conflict`], a limit that differs is updated.

use async_nats::jetstream::ErrorCode;
use async_nats::jetstream::consumer::{self, FromConsumer};
use async_nats::jetstream::context::{ConsumerInfoErrorKind, GetStreamErrorKind};
use async_nats::jetstream::stream::{self};
use async_nats::jetstream::{self, kv};
use std::time::Duration;

use super::shapes::bucket_config;
use super::{Action, Ensured, Retention};
use crate::error::{Error, Result};
use crate::names;

/// A difference in a field that cannot change is a conflict.
pub(super) fn fixed<T: PartialEq + std::fmt::Debug>(
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
pub(super) async fn stream_config(
    js: &jetstream::Context,
    name: &str,
) -> Result<Option<stream::Config>> {
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

pub(super) fn stream_fixed(
    object: &str,
    existing: &stream::Config,
    wanted: &stream::Config,
) -> Result<()> {
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

pub(super) async fn check_stream(js: &jetstream::Context, wanted: stream::Config) -> Result<()> {
    let object = format!("stream {}", wanted.name);
    let existing = stream_config(js, &wanted.name)
        .await?
        .ok_or_else(|| Error::Missing {
            object: object.clone(),
        })?;
    stream_fixed(&object, &existing, &wanted)
}

pub(super) async fn ensure_stream(
    js: &jetstream::Context,
    wanted: stream::Config,
) -> Result<Ensured> {
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

pub(super) fn consumer_object(stream_name: &str, wanted: &consumer::pull::Config) -> String {
    let name = wanted.durable_name.as_deref().unwrap_or_default();
    format!("consumer {stream_name}/{name}")
}

/// The config of a durable consumer, or `None` when it does not exist.
pub(super) async fn consumer_config(
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

pub(super) fn consumer_fixed(
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

pub(super) async fn check_consumer(
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

pub(super) async fn ensure_consumer(
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

pub(super) fn bucket_fixed(
    object: &str,
    existing: &stream::Config,
    wanted: &kv::Config,
) -> Result<()> {
    fixed(object, "storage", &existing.storage, &wanted.storage)?;
    fixed(
        object,
        "history",
        &existing.max_messages_per_subject,
        &wanted.history,
    )
}

pub(super) async fn check_bucket(js: &jetstream::Context, bucket: &str) -> Result<()> {
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

pub(super) async fn ensure_bucket(
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

pub(super) fn stream_missing(err: &jetstream::context::GetStreamError) -> bool {
    matches!(err.kind(), GetStreamErrorKind::JetStream(e) if e.error_code() == ErrorCode::STREAM_NOT_FOUND)
}

pub(super) fn consumer_missing(err: &jetstream::context::ConsumerInfoError) -> bool {
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
