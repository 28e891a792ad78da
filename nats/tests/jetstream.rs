//! `apply` and `check`, deduplication, redelivery and restarts against a real nats-server.

use std::time::Duration;

use async_nats::jetstream::{self, stream::StorageType};
use cauce_nats::testkit::NatsServer;
use cauce_nats::{
    Action, Error, Limits, ModelName, Need, apply, check, ensure_inference_consumer, names, read,
};
use futures::StreamExt;

type Result<T = ()> = std::result::Result<T, async_nats::Error>;

fn server() -> NatsServer {
    NatsServer::start().unwrap_or_else(|err| panic!("{err}"))
}

#[tokio::test]
async fn apply_twice_changes_nothing() -> Result {
    let nats = server();
    let js = jetstream::new(nats.client().await);
    let limits = Limits::default();

    let first = apply(&js, &limits).await?;
    assert!(
        first.iter().all(|e| e.action == Action::Created),
        "{first:?}"
    );
    let objects: Vec<_> = first.iter().map(|e| e.object.as_str()).collect();
    assert_eq!(
        objects,
        [
            "stream QUESTIONS",
            "stream PROMPTS",
            "stream DOCS",
            "stream UPLOADS",
            "consumer UPLOADS/ingest",
            "stream OBJ_cauce-uploads",
            "consumer QUESTIONS/retrieval",
            "bucket cauce-results",
            "bucket cauce-cache",
            "bucket cauce-cancels",
            "bucket cauce-documents",
            "stream DEAD",
            "consumer DEAD/notify",
            "stream DEAD_UPLOADS",
            "consumer DEAD_UPLOADS/ingest",
        ]
    );

    let second = apply(&js, &limits).await?;
    assert!(
        second.iter().all(|e| e.action == Action::Unchanged),
        "{second:?}"
    );

    let model = ModelName::parse("smollm2")?;
    assert_eq!(
        ensure_inference_consumer(&js, &model).await?.0.action,
        Action::Created
    );
    assert_eq!(
        ensure_inference_consumer(&js, &model).await?.0.action,
        Action::Unchanged
    );
    Ok(())
}

#[tokio::test]
async fn check_changes_nothing_and_reads_what_apply_set() -> Result {
    let nats = server();
    let js = jetstream::new(nats.client().await);
    let err = check(&js, Need::INGEST).await.unwrap_err();
    assert_eq!(err.kind(), "nats_missing");
    assert!(
        err.to_string().contains("stream DOCS") && err.to_string().contains("cauce nats apply"),
        "{err}"
    );

    let mut custom = Limits {
        retrieval_ack_wait: Duration::from_secs(10),
        inference_ack_wait: Duration::from_secs(4),
        max_deliveries: 9,
        ..Limits::default()
    };
    custom.questions.max_age = Duration::from_secs(24 * 3600);
    apply(&js, &custom).await?;

    for needs in [
        Need::GATEWAY,
        Need::RETRIEVAL,
        Need::INFERENCE,
        Need::INGEST,
        Need::INGEST_FOLLOW,
        Need::CACHE,
    ] {
        assert_eq!(check(&js, needs).await?, custom);
    }
    assert_eq!(read(&js).await?, custom);

    // a model's consumer made later takes the recorded settings, not the defaults
    let model = ModelName::parse("smollm2")?;
    let (_, config) = ensure_inference_consumer(&js, &model).await?;
    assert_eq!(config.ack_wait, Duration::from_secs(4));
    assert_eq!(config.max_deliver, 9);

    // apply updates the consumers of every model
    let mut changed = custom.clone();
    changed.inference_ack_wait = Duration::from_secs(6);
    let report = apply(&js, &changed).await?;
    let action = |object: &str| report.iter().find(|e| e.object == object).unwrap().action;
    assert_eq!(
        action("consumer PROMPTS/inference-smollm2"),
        Action::Updated
    );
    let (_, config) = ensure_inference_consumer(&js, &model).await?;
    assert_eq!(config.ack_wait, Duration::from_secs(6));
    assert_eq!(read(&js).await?, changed);
    Ok(())
}

#[tokio::test]
async fn changed_limits_update_in_place() -> Result {
    let nats = server();
    let js = jetstream::new(nats.client().await);
    apply(&js, &Limits::default()).await?;

    let mut limits = Limits::default();
    limits.questions.max_age = Duration::from_secs(3600);
    limits.retrieval_ack_wait = Duration::from_secs(5);
    limits.results.max_age = Duration::from_secs(600);
    let report = apply(&js, &limits).await?;
    let action = |object: &str| report.iter().find(|e| e.object == object).unwrap().action;
    assert_eq!(action("stream QUESTIONS"), Action::Updated);
    assert_eq!(action("consumer QUESTIONS/retrieval"), Action::Updated);
    assert_eq!(action("bucket cauce-results"), Action::Updated);
    assert_eq!(action("stream PROMPTS"), Action::Unchanged);

    let info = js
        .get_stream(names::QUESTIONS)
        .await?
        .info()
        .await?
        .config
        .clone();
    assert_eq!(info.max_age, Duration::from_secs(3600));
    Ok(())
}

#[tokio::test]
async fn conflicting_stream_is_reported_by_object_and_field() -> Result {
    let nats = server();
    let js = jetstream::new(nats.client().await);
    js.create_stream(jetstream::stream::Config {
        name: names::QUESTIONS.into(),
        subjects: vec![names::QUESTIONS_SUBJECT.into()],
        storage: StorageType::Memory,
        ..Default::default()
    })
    .await?;

    let err = apply(&js, &Limits::default()).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::Conflict {
                field: "storage",
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(err.kind(), "nats_conflict");
    let message = err.to_string();
    assert!(
        message.contains("stream QUESTIONS") && message.contains("storage"),
        "{message}"
    );
    Ok(())
}

/// A server whose file store cannot hold every object's size bound: `apply` names the
/// object and says what to do, for a stream and for a bucket alike.
#[tokio::test]
async fn a_store_too_small_for_the_bounds_is_reported_with_the_remedy() -> Result {
    const GIB: u64 = 1 << 30;
    // QUESTIONS and PROMPTS reserve 1 GiB each, DOCS 4 GiB, UPLOADS 64 MiB, the uploaded
    // files 2 GiB, then the results bucket 1 GiB
    for (limit, object) in [
        (3 * GIB, "stream DOCS"),
        (17 * GIB / 2, "bucket cauce-results"),
    ] {
        let nats = NatsServer::start_with_store_limit(limit).unwrap_or_else(|err| panic!("{err}"));
        let js = jetstream::new(nats.client().await);
        let err = apply(&js, &Limits::default()).await.unwrap_err();
        assert_eq!(err.kind(), "nats_no_storage", "{err:?}");
        let message = err.to_string();
        assert!(
            message.contains(object) && message.contains("max_file_store"),
            "{message}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn same_msg_id_inside_the_duplicate_window_is_stored_once() -> Result {
    let nats = server();
    let js = jetstream::new(nats.client().await);
    apply(&js, &Limits::default()).await?;

    for payload in ["first", "second"] {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", "req-1");
        let ack = js
            .publish_with_headers(names::QUESTIONS_SUBJECT, headers, payload.into())
            .await?
            .await?;
        assert_eq!(ack.duplicate, payload == "second");
    }
    let state = js
        .get_stream(names::QUESTIONS)
        .await?
        .info()
        .await?
        .state
        .clone();
    assert_eq!(state.messages, 1);
    Ok(())
}

#[tokio::test]
async fn unacked_message_is_redelivered_with_its_delivery_count() -> Result {
    let nats = server();
    let js = jetstream::new(nats.client().await);
    let limits = Limits {
        retrieval_ack_wait: Duration::from_secs(1),
        ..Limits::default()
    };
    apply(&js, &limits).await?;
    js.publish(names::QUESTIONS_SUBJECT, "q".into())
        .await?
        .await?;

    let consumer: jetstream::consumer::PullConsumer = js
        .get_stream(names::QUESTIONS)
        .await?
        .get_consumer(names::RETRIEVAL_CONSUMER)
        .await?;
    let next = || async {
        let mut batch = consumer
            .fetch()
            .max_messages(1)
            .expires(Duration::from_secs(5))
            .messages()
            .await?;
        let message = batch.next().await.expect("a message")?;
        Result::Ok(message)
    };
    let first = next().await?;
    assert_eq!(first.info()?.delivered, 1);
    // not acked: after the ack wait it comes back
    let second = next().await?;
    assert_eq!(second.info()?.delivered, 2);
    assert_eq!(second.payload, first.payload);
    second.ack().await?;

    let info = js
        .get_stream(names::QUESTIONS)
        .await?
        .consumer_info(names::RETRIEVAL_CONSUMER)
        .await?;
    assert_eq!(
        info.num_redelivered, 0,
        "acked, so nothing is waiting for redelivery"
    );
    assert_eq!(info.delivered.stream_sequence, 1);
    Ok(())
}

#[tokio::test]
async fn restart_keeps_jetstream_data_and_clients_reconnect() -> Result {
    let mut nats = server();
    let client = nats.client().await;
    let js = jetstream::new(client.clone());
    apply(&js, &Limits::default()).await?;
    js.publish(names::QUESTIONS_SUBJECT, "before".into())
        .await?
        .await?;

    nats.restart()?;

    // the same client reconnects by itself; the publish retries until it is back
    let mut stored = None;
    for _ in 0..100 {
        match js.publish(names::QUESTIONS_SUBJECT, "after".into()).await {
            Ok(ack) => match ack.await {
                Ok(ack) => {
                    stored = Some(ack.sequence);
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            },
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    assert_eq!(
        stored,
        Some(2),
        "the message published before the restart is still there"
    );
    assert_eq!(
        client.connection_state(),
        async_nats::connection::State::Connected
    );
    let state = js
        .get_stream(names::QUESTIONS)
        .await?
        .info()
        .await?
        .state
        .clone();
    assert_eq!(state.messages, 2);
    Ok(())
}

#[tokio::test]
async fn a_finished_request_is_never_moved_back_by_a_late_writer() -> Result {
    use cauce_nats::wire::{ResultStatus, StoredResult};
    use cauce_nats::{RequestId, Results, Written};
    let nats = server();
    let js = jetstream::new(nats.client().await);
    apply(&js, &Limits::default()).await?;
    let results = Results::open(&js).await?;
    let limit = Duration::from_secs(5);
    let queued = StoredResult::queued(RequestId::generate(), ModelName::default_model(), 1);
    results.create(&queued, limit).await?;
    let running = |attempt| StoredResult {
        status: ResultStatus::Running,
        attempt,
        ..queued.clone()
    };
    assert_eq!(results.advance(&running(2), limit).await?, Written::Stored);
    // the slow first attempt cannot take the record back from the second
    assert!(matches!(
        results.advance(&running(1), limit).await?,
        Written::Refused(_)
    ));
    let done = StoredResult {
        status: ResultStatus::Done,
        text: "the answer".into(),
        ..running(2)
    };
    assert_eq!(results.advance(&done, limit).await?, Written::Stored);
    for late in [
        running(3),
        StoredResult {
            status: ResultStatus::Failed,
            ..running(1)
        },
    ] {
        match results.advance(&late, limit).await? {
            Written::Refused(current) => assert_eq!(*current, done),
            Written::Stored => panic!("{late:?} moved a finished request"),
        }
    }
    assert_eq!(results.get(&queued.request_id).await?, Some(done));
    Ok(())
}
