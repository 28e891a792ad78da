//! The llama.cpp engine with the real SmolLM2 model: batching, sampling, stops, UTF-8.

mod common;

use std::sync::atomic::Ordering;

use cauce_inference::{Engine, EngineConfig, EngineEvent};
use cauce_nats::wire::{FinishReason, Sampling};
use common::{collect, greedy, job, model_path};

/// An engine without a host cache: idle prompts stay in their slots, so the tests of
/// prefix sharing between slots see that sharing (the host cache has its own test).
fn engine(slots: u32) -> Engine {
    let mut config = EngineConfig::new(model_path());
    config.slots = slots;
    config.ctx_per_slot = 1024;
    config.cache_ram = 0;
    Engine::start(config).unwrap_or_else(|err| panic!("{err}"))
}

const WORDS: [&str; 8] = [
    "apple", "river", "guitar", "tiger", "rocket", "violet", "castle", "pepper",
];

fn word_prompt(word: &str) -> String {
    format!("Say the word {word} and nothing else.")
}

#[tokio::test(flavor = "multi_thread")]
async fn one_job_streams_deltas_then_done_with_usage() {
    let engine = engine(2);
    let out = collect(
        engine
            .submit(job("What is the capital of France?", greedy(32)))
            .unwrap(),
    )
    .await;
    assert!(
        out.deltas.len() > 1,
        "the answer arrives in pieces: {:?}",
        out.deltas
    );
    assert!(out.text.contains("Paris"), "{:?}", out.text);
    assert_eq!(out.finish_reason, FinishReason::Stop);
    assert!(out.usage.prompt_tokens > 5);
    assert!(out.usage.completion_tokens >= out.deltas.len() as u32);
}

#[tokio::test(flavor = "multi_thread")]
async fn eight_concurrent_jobs_all_finish_without_cross_talk() {
    let engine = engine(8);
    let handles: Vec<_> = WORDS
        .iter()
        .map(|w| engine.submit(job(&word_prompt(w), greedy(24))).unwrap())
        .collect();
    for (word, handle) in WORDS.iter().zip(handles) {
        let answer = collect(handle).await.text.to_lowercase();
        assert!(
            answer.contains(word),
            "the answer for {word} does not say it: {answer:?}"
        );
        for other in WORDS.iter().filter(|other| *other != word) {
            assert!(
                !answer.contains(other),
                "the answer for {word} mentions {other}: {answer:?}"
            );
        }
    }
    assert_eq!(engine.stats().busy_slots.load(Ordering::Relaxed), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn same_seed_same_answer_and_greedy_at_temperature_zero() {
    let engine = engine(2);
    let seeded = Sampling {
        max_tokens: Some(24),
        temperature: Some(0.9),
        seed: Some(42),
        ..Sampling::default()
    };
    let question = "Tell me a short story about a cat.";
    let a = collect(engine.submit(job(question, seeded.clone())).unwrap())
        .await
        .text;
    let b = collect(engine.submit(job(question, seeded)).unwrap())
        .await
        .text;
    assert_eq!(a, b);
    let g1 = collect(engine.submit(job(question, greedy(24))).unwrap())
        .await
        .text;
    let g2 = collect(engine.submit(job(question, greedy(24))).unwrap())
        .await
        .text;
    assert_eq!(g1, g2);
}

#[tokio::test(flavor = "multi_thread")]
async fn max_tokens_ends_with_length() {
    let engine = engine(1);
    let out = collect(
        engine
            .submit(job("Tell me a long story about dragons.", greedy(5)))
            .unwrap(),
    )
    .await;
    assert_eq!(out.finish_reason, FinishReason::Length);
    assert_eq!(out.usage.completion_tokens, 5);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stop_string_ends_the_answer_before_it_and_is_never_sent() {
    let engine = engine(1);
    let question = "What is the capital of France?";
    let full = collect(engine.submit(job(question, greedy(32))).unwrap())
        .await
        .text;
    let stop = "of France";
    let at = full
        .find(stop)
        .unwrap_or_else(|| panic!("{stop:?} not in {full:?}"));
    let sampling = Sampling {
        stop: vec![stop.into()],
        ..greedy(32)
    };
    let out = collect(engine.submit(job(question, sampling)).unwrap()).await;
    assert_eq!(out.finish_reason, FinishReason::Stop);
    assert_eq!(out.text, full[..at]);
    assert!(
        out.deltas
            .iter()
            .all(|d| !d.contains("of") || !d.contains("France")),
        "{:?}",
        out.deltas
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn spanish_with_accents_streams_intact() {
    let engine = engine(1);
    let question = "Responde en español: ¿cuál es la capital de España y qué se come allí?";
    let out = collect(engine.submit(job(question, greedy(48))).unwrap()).await;
    assert!(
        out.text.chars().any(|c| "áéíóúñ¿¡".contains(c)),
        "{:?}",
        out.text
    );
    assert!(
        out.deltas.iter().all(|d| !d.contains('\u{fffd}')),
        "{:?}",
        out.deltas
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cancel_stops_the_sequence_and_frees_its_slot_for_a_queued_job() {
    let engine = engine(1);
    let long = Sampling {
        max_tokens: Some(400),
        temperature: Some(0.0),
        ..Sampling::default()
    };
    let mut first = engine
        .submit(job(
            "Write a very long essay about the history of Rome.",
            long,
        ))
        .unwrap();
    let queued = engine
        .submit(job("What is the capital of France?", greedy(16)))
        .unwrap();
    // wait for the first answer to be under way, then cancel it
    loop {
        match first.events.recv().await.expect("events") {
            EngineEvent::Delta(_) => break,
            EngineEvent::Started { .. } => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    first.cancel.store(true, Ordering::Relaxed);
    let cancelled = collect(first).await;
    assert_eq!(cancelled.finish_reason, FinishReason::Cancelled);
    assert!(cancelled.usage.completion_tokens < 400);
    let next = collect(queued).await;
    assert_eq!(next.finish_reason, FinishReason::Stop);
    assert!(next.text.contains("Paris"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_prompt_longer_than_the_context_fails_deterministically() {
    let mut config = EngineConfig::new(model_path());
    config.slots = 1;
    config.ctx_per_slot = 64;
    let engine = Engine::start(config).unwrap();
    let mut handle = engine.submit(job(&"word ".repeat(200), greedy(4))).unwrap();
    match handle.events.recv().await.expect("an event") {
        EngineEvent::Failed(err) => {
            assert!(err.is_deterministic());
            assert_eq!(err.kind(), "context_overflow");
        }
        other => panic!("expected a failure, got {other:?}"),
    }
}

/// Runs a job and returns its text and how many prompt tokens came from the cache.
async fn run_counting_reuse(engine: &Engine, job: cauce_nats::wire::PromptJob) -> (String, u32) {
    let mut handle = engine.submit(job).unwrap();
    let mut reused = None;
    let mut text = String::new();
    while let Some(event) = handle.events.recv().await {
        match event {
            EngineEvent::Started { reused_tokens, .. } => reused = Some(reused_tokens),
            EngineEvent::Delta(delta) => text.push_str(&delta),
            EngineEvent::Done { usage, .. } => {
                // what the usage reports as cached is what prefill skipped
                assert_eq!(Some(usage.cached_tokens), reused, "{usage:?}");
                break;
            }
            EngineEvent::Failed(err) => panic!("job failed: {err}"),
        }
    }
    (text, reused.expect("a Started event"))
}

fn with_system(question: &str) -> cauce_nats::wire::PromptJob {
    let mut job = job(question, greedy(12));
    job.request.messages.insert(
        0,
        cauce_nats::wire::ChatMessage {
            role: cauce_nats::wire::Role::System,
            content: "You answer questions about rivers in one short sentence.".into(),
        },
    );
    job
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_question_shares_the_system_message_another_slot_computed() {
    let question = "What is the longest river in Africa?";
    let fresh = engine(3);
    let (alone, reused) = run_counting_reuse(&fresh, with_system(question)).await;
    assert_eq!(reused, 0);
    drop(fresh);

    let engine = engine(3);
    let (_, first) = run_counting_reuse(&engine, with_system("Where does the Danube start?")).await;
    assert_eq!(first, 0);
    // a free, never-used slot runs the next question, starting from the first slot's
    // system message: the same greedy answer as without the shared cells
    let (shared, reused) = run_counting_reuse(&engine, with_system(question)).await;
    assert!(
        reused > 10,
        "the system message was not shared: {reused} tokens"
    );
    assert_eq!(shared, alone);
    // and asked again, the whole prompt but its last token comes from the cache
    let (again, reused) = run_counting_reuse(&engine, with_system(question)).await;
    assert_eq!(again, alone);
    assert!(reused > 20, "{reused}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_continued_answer_goes_on_from_its_text_and_counts_it() {
    let engine = engine(1);
    let question = "Tell me a long story about dragons.";
    let full = collect(engine.submit(job(question, greedy(40))).unwrap()).await;
    assert_eq!(full.finish_reason, FinishReason::Length);
    let cut = full.text.char_indices().nth(30).map_or(0, |(at, _)| at);
    let so_far = full.text[..cut].to_string();

    let rest = collect(
        engine
            .submit_continuing(job(question, greedy(40)), so_far.clone())
            .unwrap(),
    )
    .await;
    // only what follows is sent, and the whole answer counts against max_tokens
    assert!(!rest.text.is_empty());
    assert!(
        !rest.text.starts_with(&so_far),
        "the text so far is not sent again: {:?}",
        rest.text
    );
    assert_eq!(rest.finish_reason, FinishReason::Length);
    assert_eq!(rest.usage.completion_tokens, 40);
    assert_eq!(rest.usage.prompt_tokens, full.usage.prompt_tokens);

    // an answer that had reached its limit ends at once
    let ended = collect(
        engine
            .submit_continuing(job(question, greedy(5)), full.text.clone())
            .unwrap(),
    )
    .await;
    assert_eq!(ended.finish_reason, FinishReason::Length);
    assert!(ended.text.is_empty());
    assert!(ended.usage.completion_tokens >= 5);
}

fn with_long_system(question: &str) -> cauce_nats::wire::PromptJob {
    let mut job = with_system(question);
    job.request.messages[0].content = format!(
        "{} [1] The Nile flows north through eleven countries into the Mediterranean. \
         [2] The Amazon carries more water than any other river. [3] The Danube \
         rises in the Black Forest and reaches the Black Sea.",
        job.request.messages[0].content
    );
    job
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_prompts_move_to_host_memory_and_are_restored_by_shared_prefixes() {
    let (a, b) = ("Which river is the longest?", "Where does the Danube end?");
    let mut config = EngineConfig::new(model_path());
    config.slots = 1;
    config.ctx_per_slot = 1024;
    config.cache_ram = 0;
    let plain = Engine::start(config.clone()).unwrap();
    let (alone_a, _) = run_counting_reuse(&plain, with_long_system(a)).await;
    let (alone_b, _) = run_counting_reuse(&plain, with_long_system(b)).await;
    drop(plain);

    config.cache_ram = 64 << 20;
    let engine = Engine::start(config).unwrap();
    let (first, reused) = run_counting_reuse(&engine, with_long_system(a)).await;
    assert_eq!((first.as_str(), reused), (alone_a.as_str(), 0));
    let stats = engine.stats();
    assert_eq!(stats.host_cache_entries.load(Ordering::Relaxed), 1);
    assert!(stats.host_cache_bytes.load(Ordering::Relaxed) > 0);
    // the one slot was emptied; the next question restores the shared system message
    let (second, reused) = run_counting_reuse(&engine, with_long_system(b)).await;
    assert!(reused > 40, "the shared prefix was not restored: {reused}");
    assert_eq!(second, alone_b);
    // and the first question again: all of its prompt but the last token
    let (again, reused) = run_counting_reuse(&engine, with_long_system(a)).await;
    assert_eq!(again, alone_a);
    assert!(reused > 60, "{reused}");
    assert_eq!(stats.host_cache_restores.load(Ordering::Relaxed), 2);
}

/// What a benchmark counts as a prompt's tokens is what the engine prefills, and two
/// prompts' common start in those tokens is what the second reuses of the first.
#[tokio::test(flavor = "multi_thread")]
async fn prompt_token_ids_are_the_tokens_the_engine_prefills() {
    let jobs = [
        with_system("Where does the Danube start?"),
        with_system("What is the longest river in Africa?"),
    ];
    let ids = cauce_inference::vocab::prompt_token_ids(&model_path(), &jobs).unwrap();
    let common = ids[0]
        .iter()
        .zip(&ids[1])
        .take_while(|(a, b)| a == b)
        .count();
    assert!(
        common > 10 && common < ids[1].len(),
        "{common} of {}",
        ids[1].len()
    );

    let engine = engine(1);
    let mut prompt_tokens = Vec::new();
    let mut reused = Vec::new();
    for job in jobs {
        let mut handle = engine.submit(job).unwrap();
        while let Some(event) = handle.events.recv().await {
            match event {
                EngineEvent::Done { usage, .. } => {
                    prompt_tokens.push(usage.prompt_tokens as usize);
                    reused.push(usage.cached_tokens as usize);
                    break;
                }
                EngineEvent::Failed(err) => panic!("job failed: {err}"),
                _ => {}
            }
        }
    }
    assert_eq!(prompt_tokens, vec![ids[0].len(), ids[1].len()]);
    assert_eq!(reused, vec![0, common]);
}
