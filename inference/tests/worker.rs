//! The inference worker against a real nats-server and the real model: jobs published
//! in the wire format, events read from the reply subject.

mod common;

use std::time::Duration;

use async_nats::jetstream;
use cauce_nats::discovery::{self, META_MODEL};
use cauce_nats::names::{self, WorkerKind};
use cauce_nats::wire::{ErrorKind, EventBody, FinishReason, ResultStatus, Sampling, now_ms};
use common::*;

#[tokio::test(flavor = "multi_thread")]
async fn one_job_streams_ordered_deltas_and_the_text_equals_the_stored_result() {
    let server = nats();
    let client = server.client().await;
    let _worker = spawn_worker(client.clone(), worker_config(2)).await;
    let job = job("What is the capital of France?", greedy(32));
    let mut events = publish(&client, &job).await;
    let events = events_until_end(&mut events).await;

    let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
    assert_eq!(
        seqs,
        (0..events.len() as u64).collect::<Vec<_>>(),
        "events numbered in order"
    );
    assert!(events.iter().all(|e| e.attempt == 1));
    let EventBody::Done {
        finish_reason,
        usage,
        timings,
        ..
    } = &events.last().unwrap().body
    else {
        panic!("no done event: {events:?}")
    };
    assert_eq!(*finish_reason, FinishReason::Stop);
    assert!(usage.prompt_tokens > 0 && usage.completion_tokens > 0);
    assert!(timings.decode_tokens_per_s > 0.0);
    let text = delta_text(&events);
    assert!(text.contains("Paris"), "{text:?}");

    let stored = stored_result(&client, &job.request.id).await;
    assert_eq!(stored.status, ResultStatus::Done);
    assert_eq!(stored.text, text);
    assert_eq!(stored.usage, *usage);

    let workers = discovery::discover(&client, WorkerKind::Inference, Duration::from_millis(300))
        .await
        .unwrap();
    assert_eq!(workers.len(), 1);
    assert_eq!(
        workers[0].metadata(META_MODEL),
        Some("smollm2-135m-instruct")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cancel_mid_answer_frees_the_slot_for_the_next_job() {
    let server = nats();
    let client = server.client().await;
    let _worker = spawn_worker(client.clone(), worker_config(1)).await;
    let long = Sampling {
        max_tokens: Some(600),
        temperature: Some(0.0),
        ..Sampling::default()
    };
    let first = job("Write a very long essay about the history of Rome.", long);
    let mut first_events = publish(&client, &first).await;
    let queued = job("What is the capital of France?", greedy(24));
    let mut queued_events = publish(&client, &queued).await;

    // the first delta shows the long answer is running; then cancel it
    use futures::StreamExt;
    let message = first_events.next().await.unwrap();
    let event: cauce_nats::wire::Event = cauce_nats::wire::decode(&message.payload).unwrap();
    assert!(matches!(event.body, EventBody::Delta { .. }));
    client
        .publish(names::cancel_subject(&first.request.id), "".into())
        .await
        .unwrap();

    let rest = events_until_end(&mut first_events).await;
    let EventBody::Done {
        finish_reason,
        usage,
        ..
    } = &rest.last().unwrap().body
    else {
        panic!("{rest:?}")
    };
    assert_eq!(*finish_reason, FinishReason::Cancelled);
    assert!(usage.completion_tokens < 600);
    let next = events_until_end(&mut queued_events).await;
    assert!(matches!(
        next.last().unwrap().body,
        EventBody::Done {
            finish_reason: FinishReason::Stop,
            ..
        }
    ));
    assert_eq!(
        stored_result(&client, &first.request.id).await.status,
        ResultStatus::Cancelled
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cancel_sent_while_the_worker_takes_the_job_is_not_lost() {
    let server = nats();
    let client = server.client().await;
    let mut config = worker_config(1);
    // the worker holds the job between listening for cancels and reading the bucket
    config.pause_before_cancel_check = Duration::from_secs(2);
    let _worker = spawn_worker(client.clone(), config).await;
    let long = Sampling {
        max_tokens: Some(600),
        temperature: Some(0.0),
        ..Sampling::default()
    };
    let job = job("Write a very long essay about the history of Rome.", long);
    let mut events = publish(&client, &job).await;
    // wait until a worker took it
    let prompts = jetstream::new(client.clone())
        .get_stream(names::PROMPTS)
        .await
        .unwrap();
    for _ in 0..200 {
        // the worker makes its consumer as it starts
        let taken = prompts
            .consumer_info(names::inference_consumer(&job.request.model))
            .await
            .is_ok_and(|consumer| consumer.num_ack_pending == 1);
        if taken {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // well inside the pause: the worker has the job and is not generating yet. Only the
    // core message is sent: a worker that read the bucket before it listened would miss it
    tokio::time::sleep(Duration::from_millis(500)).await;
    client
        .publish(names::cancel_subject(&job.request.id), "".into())
        .await
        .unwrap();
    let rest = events_until_end(&mut events).await;
    let EventBody::Done { finish_reason, .. } = &rest.last().unwrap().body else {
        panic!("{rest:?}")
    };
    assert_eq!(*finish_reason, FinishReason::Cancelled, "{rest:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn queued_cancels_and_expired_deadlines_are_answered_without_generating() {
    let server = nats();
    let client = server.client().await;
    let js = jetstream::new(client.clone());
    cauce_nats::apply(&js, &limits()).await.unwrap();
    let cancels = js.get_key_value(names::CANCELS_BUCKET).await.unwrap();

    let cancelled = job("What is the capital of France?", greedy(16));
    cancels
        .put(names::request_key(&cancelled.request.id), "".into())
        .await
        .unwrap();
    let mut expired = job("What is the capital of Spain?", greedy(16));
    expired.request.deadline_ms = now_ms() - 1;
    let mut cancelled_events = publish(&client, &cancelled).await;
    let mut expired_events = publish(&client, &expired).await;
    let _worker = spawn_worker(client.clone(), worker_config(2)).await;

    let events = events_until_end(&mut cancelled_events).await;
    assert_eq!(events.len(), 1, "no delta for a cancelled job: {events:?}");
    assert!(matches!(
        events[0].body,
        EventBody::Done {
            finish_reason: FinishReason::Cancelled,
            ..
        }
    ));
    let events = events_until_end(&mut expired_events).await;
    assert_eq!(events.len(), 1);
    let EventBody::Error { kind, message } = &events[0].body else {
        panic!("{events:?}")
    };
    assert_eq!(*kind, ErrorKind::DeadlineExceeded);
    assert!(message.contains("deadline"));
    assert_eq!(
        stored_result(&client, &expired.request.id).await.status,
        ResultStatus::Failed
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_prompt_too_long_for_the_context_ends_with_an_error_not_redelivery() {
    let server = nats();
    let client = server.client().await;
    let mut config = worker_config(1);
    config.engine.ctx_per_slot = 64;
    let _worker = spawn_worker(client.clone(), config).await;
    let long = job(&"word ".repeat(300), greedy(8));
    let mut events = publish(&client, &long).await;
    let events = events_until_end(&mut events).await;
    let EventBody::Error { kind, message } = &events.last().unwrap().body else {
        panic!("{events:?}")
    };
    assert_eq!(*kind, ErrorKind::ContextOverflow);
    assert!(message.contains("tokens"), "{message}");
    assert_eq!(events.last().unwrap().attempt, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn two_workers_on_one_consumer_both_get_jobs() {
    let server = nats();
    let client = server.client().await;
    let _a = spawn_worker(server.client().await, worker_config(1)).await;
    let _b = spawn_worker(server.client().await, worker_config(1)).await;
    // wait until both announce themselves
    for _ in 0..200 {
        let live = discovery::discover(&client, WorkerKind::Inference, Duration::from_millis(200))
            .await
            .unwrap();
        if live.len() == 2 {
            break;
        }
    }
    let jobs: Vec<_> = (0..6)
        .map(|i| job(&format!("Count from {i} to {}.", i + 5), greedy(24)))
        .collect();
    let mut subs = Vec::new();
    for job in &jobs {
        subs.push(publish(&client, job).await);
    }
    for sub in &mut subs {
        events_until_end(sub).await;
    }
    let live = discovery::discover(&client, WorkerKind::Inference, Duration::from_millis(500))
        .await
        .unwrap();
    assert_eq!(live.len(), 2);
    for worker in &live {
        let finished = worker
            .stats_data()
            .and_then(|d| d["jobs_finished"].as_u64())
            .unwrap_or(0);
        assert!(
            finished > 0,
            "a worker got no job: {:?}",
            worker.stats_data()
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn stop_strings_max_tokens_and_spanish_accents_arrive_intact_over_nats() {
    let server = nats();
    let client = server.client().await;
    let _worker = spawn_worker(client.clone(), worker_config(3)).await;
    let question = "What is the capital of France?";
    let stopped = job(
        question,
        Sampling {
            stop: vec!["of France".into()],
            ..greedy(32)
        },
    );
    let limited = job("Tell me a long story about dragons.", greedy(5));
    let spanish = job(
        "Responde en español: ¿cuál es la capital de España y qué se come allí?",
        greedy(48),
    );
    let mut subs = Vec::new();
    for job in [&stopped, &limited, &spanish] {
        subs.push(publish(&client, job).await);
    }

    let events = events_until_end(&mut subs[0]).await;
    let text = delta_text(&events);
    assert!(!text.contains("of France") && !text.is_empty(), "{text:?}");
    assert!(matches!(
        events.last().unwrap().body,
        EventBody::Done {
            finish_reason: FinishReason::Stop,
            ..
        }
    ));

    let events = events_until_end(&mut subs[1]).await;
    let EventBody::Done {
        finish_reason,
        usage,
        ..
    } = &events.last().unwrap().body
    else {
        panic!("{events:?}")
    };
    assert_eq!(
        (*finish_reason, usage.completion_tokens),
        (FinishReason::Length, 5)
    );

    let events = events_until_end(&mut subs[2]).await;
    let text = delta_text(&events);
    assert!(text.chars().any(|c| "áéíóúñ¿¡".contains(c)), "{text:?}");
    assert!(!text.contains('\u{fffd}'));
    assert_eq!(stored_result(&client, &spanish.request.id).await.text, text);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_run_whose_job_another_attempt_claimed_stops_and_never_sends_past_it() {
    use futures::StreamExt;
    let server = nats();
    let client = server.client().await;
    let _worker = spawn_worker(client.clone(), worker_config(1)).await;
    let long = job(
        "Write a very long essay about the history of Rome.",
        greedy(400),
    );
    let mut events = publish(&client, &long).await;
    let first = events.next().await.unwrap();
    let first: cauce_nats::wire::Event = cauce_nats::wire::decode(&first.payload).unwrap();
    assert!(matches!(first.body, EventBody::Delta { .. }));

    // a later attempt takes the record over, as a redelivery to another worker would
    let results = cauce_nats::Results::open(&jetstream::new(client.clone()))
        .await
        .unwrap();
    let running = cauce_nats::wire::StoredResult {
        status: ResultStatus::Running,
        attempt: 99,
        owner: "elsewhere:1#0".into(),
        ..cauce_nats::wire::StoredResult::queued(
            long.request.id.clone(),
            long.request.model.clone(),
            long.request.created_at_ms,
        )
    };
    let (_, claimed) = results
        .claim(&running, Duration::from_secs(5))
        .await
        .unwrap();
    let cauce_nats::Claimed::Held(claimed) = claimed else {
        panic!("the claim is refused: {claimed:?}");
    };

    // the worker stops: its slot takes the next job, which is answered
    let next = job("What is the capital of France?", greedy(24));
    let mut next_events = publish(&client, &next).await;
    let answered = events_until_end(&mut next_events).await;
    assert!(delta_text(&answered).contains("Paris"));

    // nothing the first run sent lies beyond what the record held when it lost it
    while let Ok(Some(message)) =
        tokio::time::timeout(Duration::from_millis(500), events.next()).await
    {
        let event: cauce_nats::wire::Event = cauce_nats::wire::decode(&message.payload).unwrap();
        match event.body {
            EventBody::Delta { text, at } => assert!(
                at as usize + text.len() <= claimed.text.len(),
                "a delta sent after the job was lost: {at} {text:?}"
            ),
            other => panic!("the run that lost its job ended it: {other:?}"),
        }
    }
    let record = stored_result(&client, &long.request.id).await;
    assert_eq!(
        (record.attempt, record.owner.as_str()),
        (99, "elsewhere:1#0")
    );
    assert_eq!(record.status, ResultStatus::Running);
}
