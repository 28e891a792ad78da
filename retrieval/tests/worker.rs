//! The retrieval worker against a real nats-server and a real tantivy index.

mod common;

use std::time::Duration;

use async_nats::jetstream::consumer::PullConsumer;
use cauce_nats::wire::{self, ErrorKind, EventBody, PromptJob, ResultStatus, Role};
use cauce_nats::{Limits, names};
use common::*;
use futures::StreamExt;

#[tokio::test]
async fn a_fact_in_one_document_is_found_first_and_follows_changes_and_deletes() -> Result {
    let nats = server();
    let limits = Limits::default();
    let js = jetstream(&nats, &limits).await?;
    let dir = tempfile::tempdir()?;
    let corpus = corpus(dir.path())?;
    let summary = ingest(&js, &corpus, false).await?;
    assert_eq!(summary.published, 5, "{summary}");
    let worker = Worker::start(&nats, &dir.path().join("index"), &limits).await;

    let question = "How long does the pelican retention rule keep answers?";
    let request = request(&[(Role::User, question)]);
    let sources = sources(ask_request(&js, &request).await?)?;
    assert_eq!(first_doc(&sources), Some("corpus-storage"), "{sources:?}");
    // best first; numbered as the prompt lists them (by document)
    let mut numbers: Vec<u32> = sources.iter().map(|s| s.number).collect();
    numbers.sort_unstable();
    assert_eq!(numbers, (1..=sources.len() as u32).collect::<Vec<_>>());
    assert!(
        sources[0].location.ends_with("storage.md#results-bucket"),
        "{sources:?}"
    );
    assert_eq!(sources[0].heading_path, ["Storage", "Results bucket"]);

    let job = last_prompt_job(&js, &request.model, &request.id).await?;
    assert!(
        job.passages[0].text.contains("nineteen days"),
        "{:?}",
        job.passages[0]
    );

    // the fact moves to another document
    std::fs::write(
        corpus.join("storage.md"),
        "# Storage\n\nQuestions are kept in a file-backed stream.\n",
    )?;
    std::fs::write(
        corpus.join("workers.md"),
        "# Workers\n\n## Retention\n\nThe pelican retention rule keeps answers for nineteen days.\n",
    )?;
    let summary = ingest(&js, &corpus, false).await?;
    assert_eq!((summary.published, summary.unchanged), (2, 3), "{summary}");
    let sources = ask_until(&js, question, |s| first_doc(s) == Some("corpus-workers")).await?;
    assert_eq!(first_doc(&sources), Some("corpus-workers"), "{sources:?}");

    // and its document is deleted
    std::fs::remove_file(corpus.join("workers.md"))?;
    let summary = ingest(&js, &corpus, true).await?;
    assert_eq!(summary.deleted, 1, "{summary}");
    let sources = ask_until(&js, question, |s| {
        !s.iter().any(|s| s.doc_id.as_str() == "corpus-workers")
    })
    .await?;
    assert!(
        !sources
            .iter()
            .any(|s| s.doc_id.as_str() == "corpus-workers"),
        "{sources:?}"
    );

    worker.stop().await
}

#[tokio::test]
async fn a_new_worker_catches_up_and_a_restarted_one_reapplies_nothing() -> Result {
    let nats = server();
    let limits = Limits::default();
    let js = jetstream(&nats, &limits).await?;
    let dir = tempfile::tempdir()?;
    ingest(&js, &corpus(dir.path())?, false).await?;
    let question = "Which port does the gateway listen on?";

    let first = Worker::start(&nats, &dir.path().join("index-a"), &limits).await;
    let first_sources = ask(&js, question).await?;
    assert_eq!(
        first_doc(&first_sources),
        Some("corpus-gateway"),
        "{first_sources:?}"
    );
    let stats = worker_stats(&nats).await?;
    assert_eq!(stats.applied, 5, "{stats:?}");
    first.stop().await?;

    let second = Worker::start(&nats, &dir.path().join("index-b"), &limits).await;
    let second_sources = ask(&js, question).await?;
    assert_eq!(second_sources, first_sources);
    second.stop().await?;

    let restarted = Worker::start(&nats, &dir.path().join("index-a"), &limits).await;
    assert_eq!(ask(&js, question).await?, first_sources);
    let stats = worker_stats(&nats).await?;
    assert_eq!(
        stats.applied, 0,
        "a restarted worker reapplied documents: {stats:?}"
    );
    assert!(
        stats.caught_up && stats.docs_seq >= 5 && stats.passages > 0,
        "{stats:?}"
    );
    assert!(stats.searches >= 1, "{stats:?}");
    restarted.stop().await
}

#[tokio::test]
async fn hostile_questions_are_answered_normally() -> Result {
    let nats = server();
    let limits = Limits::default();
    let js = jetstream(&nats, &limits).await?;
    let dir = tempfile::tempdir()?;
    ingest(&js, &corpus(dir.path())?, false).await?;
    let worker = Worker::start(&nats, &dir.path().join("index"), &limits).await;

    // a payload that is no question at all is terminated, not retried for ever
    js.publish(names::QUESTIONS_SUBJECT, "{not json".into())
        .await?
        .await?;

    let long = "gateway port ".repeat(800);
    let hostile = [
        "\"",
        "AND OR (",
        "title:*",
        long.as_str(),
        "🦀🔥 ✨",
        "?!.,;:()[]{}<>*~^-+",
        "port\u{0}8080\\",
    ];
    for question in hostile {
        ask(&js, question)
            .await
            .map_err(|err| anyhow::anyhow!("{question:.40?}: {err}"))?;
    }
    let sources = ask(&js, "gateway port AND (title:*").await?;
    assert_eq!(first_doc(&sources), Some("corpus-gateway"), "{sources:?}");

    let consumer: PullConsumer = js
        .get_consumer_from_stream(names::RETRIEVAL_CONSUMER, names::QUESTIONS)
        .await?;
    let mut info = consumer.clone().info().await?.clone();
    for _ in 0..100 {
        if info.num_ack_pending == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        info = consumer.clone().info().await?.clone();
    }
    assert_eq!(info.num_ack_pending, 0, "{info:?}");
    assert_eq!(info.num_pending, 0, "{info:?}");
    worker.stop().await
}

#[tokio::test]
async fn retrieval_off_or_an_empty_index_passes_straight_through() -> Result {
    let nats = server();
    let limits = Limits::default();
    let js = jetstream(&nats, &limits).await?;
    let dir = tempfile::tempdir()?;
    let worker = Worker::start(&nats, &dir.path().join("index"), &limits).await;
    assert!(
        ask(&js, "Which port does the gateway listen on?")
            .await?
            .is_empty()
    );

    ingest(&js, &corpus(dir.path())?, false).await?;
    ask_until(&js, "gateway port", |s| !s.is_empty()).await?;
    let mut off = request(&[(Role::User, "Which port does the gateway listen on?")]);
    off.retrieval.enabled = false;
    assert!(sources(ask_request(&js, &off).await?)?.is_empty());
    let job = last_prompt_job(&js, &off.model, &off.id).await?;
    assert!(job.passages.is_empty());
    worker.stop().await
}

#[tokio::test]
async fn a_question_redelivered_after_a_crash_makes_one_prompt_job() -> Result {
    let nats = server();
    let limits = Limits {
        retrieval_ack_wait: Duration::from_secs(1),
        ..Limits::default()
    };
    let js = jetstream(&nats, &limits).await?;
    let dir = tempfile::tempdir()?;
    ingest(&js, &corpus(dir.path())?, false).await?;

    // a worker pulls the question, publishes its prompt job, and dies before the ack
    let request = request(&[(Role::User, "Which port does the gateway listen on?")]);
    let mut events = js
        .client()
        .subscribe(names::events_subject(&request.gateway, &request.id))
        .await?;
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Msg-Id", request.id.as_str());
    js.publish_with_headers(names::QUESTIONS_SUBJECT, headers, wire::encode(&request)?)
        .await?
        .await?;
    let consumer: PullConsumer = js
        .get_consumer_from_stream(names::RETRIEVAL_CONSUMER, names::QUESTIONS)
        .await?;
    let mut batch = consumer.fetch().max_messages(1).messages().await?;
    let crashed = batch
        .next()
        .await
        .expect("the question is delivered")
        .map_err(anyhow::Error::from_boxed)?;
    assert_eq!(
        crashed.info().map_err(anyhow::Error::from_boxed)?.delivered,
        1
    );
    let job = PromptJob {
        request: request.clone(),
        passages: Vec::new(),
        retrieved_at_ms: wire::now_ms(),
    };
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Msg-Id", request.id.as_str());
    js.publish_with_headers(
        names::prompt_subject(&request.model),
        headers,
        wire::encode(&job)?,
    )
    .await?
    .await?;
    drop(crashed);

    let worker = Worker::start(&nats, &dir.path().join("index"), &limits).await;
    let event: cauce_nats::wire::Event = wire::decode(
        &tokio::time::timeout(PATIENCE, events.next())
            .await?
            .expect("subscription open")
            .payload,
    )?;
    assert_eq!(event.attempt, 2, "{event:?}");
    assert_eq!(event.seq, 0);

    let mut info = consumer.clone().info().await?.clone();
    for _ in 0..100 {
        if info.num_ack_pending == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        info = consumer.clone().info().await?.clone();
    }
    assert_eq!(
        info.num_ack_pending, 0,
        "the redelivered question is acked: {info:?}"
    );
    let prompts = js
        .get_stream(names::PROMPTS)
        .await?
        .info()
        .await?
        .state
        .messages;
    assert_eq!(prompts, 1, "one prompt job, not two");
    worker.stop().await
}

#[tokio::test]
async fn an_index_that_cannot_be_updated_is_reported_not_served_as_fresh() -> Result {
    let nats = server();
    let limits = Limits::default();
    let js = jetstream(&nats, &limits).await?;
    let dir = tempfile::tempdir()?;
    let corpus_dir = corpus(dir.path())?;
    ingest(&js, &corpus_dir, false).await?;
    let index_dir = dir.path().join("index");
    let worker = Worker::start(&nats, &index_dir, &limits).await;
    ask(&js, "gateway port").await?;
    assert_eq!(worker_stats(&nats).await?.follower_error, None);

    // the index's files vanish under the worker (a disk gone bad): the next commit fails
    std::fs::remove_dir_all(&index_dir)?;
    std::fs::write(
        corpus_dir.join("new.md"),
        "# New\n\nA page about lighthouses.\n",
    )?;
    ingest(&js, &corpus_dir, false).await?;
    let mut stats = worker_stats(&nats).await?;
    for _ in 0..100 {
        if stats.follower_error.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        stats = worker_stats(&nats).await?;
    }
    let error = stats.follower_error.expect("the failure is reported");
    assert!(error.contains("index"), "{error}");
    // the worker is still there, answering from what it has
    ask(&js, "gateway port").await?;
    worker.stop().await
}

#[tokio::test]
async fn a_question_past_its_deadline_ends_failed_without_a_prompt_job() -> Result {
    let nats = server();
    let limits = Limits::default();
    let js = jetstream(&nats, &limits).await?;
    let dir = tempfile::tempdir()?;
    ingest(&js, &corpus(dir.path())?, false).await?;
    let worker = Worker::start(&nats, &dir.path().join("index"), &limits).await;

    let mut late = request(&[(Role::User, "gateway port")]);
    late.deadline_ms = late.created_at_ms - 1;
    let event = ask_request(&js, &late).await?;
    match event.body {
        EventBody::Error { kind, .. } => assert_eq!(kind, ErrorKind::DeadlineExceeded),
        other => panic!("an error event, not {other:?}"),
    }
    let results = cauce_nats::Results::open(&js).await?;
    let stored = results.get(&late.id).await?.expect("a record");
    assert_eq!(stored.status, ResultStatus::Failed);
    let prompts = js
        .get_stream(names::PROMPTS)
        .await?
        .info()
        .await?
        .state
        .messages;
    assert_eq!(prompts, 0, "no prompt job was published");
    worker.stop().await
}

#[tokio::test]
async fn a_question_that_fails_on_every_delivery_ends_failed_with_an_error_event() -> Result {
    let nats = server();
    let limits = Limits {
        max_deliveries: 2,
        ..Limits::default()
    };
    let js = jetstream(&nats, &limits).await?;
    let dir = tempfile::tempdir()?;
    ingest(&js, &corpus(dir.path())?, false).await?;
    let worker = Worker::start(&nats, &dir.path().join("index"), &limits).await;
    ask(&js, "gateway port").await?;
    // no stream takes prompt jobs any more: every delivery fails to publish one
    js.delete_stream(names::PROMPTS).await?;

    let question = request(&[(Role::User, "gateway port")]);
    let mut events = js
        .client()
        .subscribe(names::events_subject(&question.gateway, &question.id))
        .await?;
    js.publish(names::QUESTIONS_SUBJECT, wire::encode(&question)?)
        .await?
        .await?;
    let error = loop {
        let message = tokio::time::timeout(Duration::from_secs(60), events.next())
            .await?
            .expect("events");
        let event: wire::Event = wire::decode(&message.payload)?;
        if let EventBody::Error { kind, .. } = event.body {
            break kind;
        }
    };
    assert_eq!(error, ErrorKind::DeliveriesExhausted);
    let results = cauce_nats::Results::open(&js).await?;
    let stored = results.get(&question.id).await?.expect("a record");
    assert_eq!(stored.status, ResultStatus::Failed);
    assert_eq!(stored.attempt, 2);
    worker.stop().await
}
