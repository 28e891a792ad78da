//! The response cache protocol against a real nats-server: a claim is waited on only
//! until the bound the caller gives (then taken over), and a full bucket answers
//! without the cache at once instead of retrying its claim in a loop.

use std::time::{Duration, Instant};

use async_nats::jetstream;
use cauce_nats::cache::{Lookup, ResponseCache};
use cauce_nats::testkit::NatsServer;
use cauce_nats::wire::{
    self, ChatMessage, ChatRequest, ModelCard, RetrievalOptions, Role, Sampling, now_ms,
};
use cauce_nats::{GatewayId, Limits, ModelName, RequestId, names};
use std::sync::atomic::Ordering;

fn request(question: &str) -> ChatRequest {
    ChatRequest {
        id: RequestId::generate(),
        gateway: GatewayId::parse("gw-cache").unwrap(),
        model: ModelName::default_model(),
        messages: vec![ChatMessage {
            role: Role::User,
            content: question.into(),
        }],
        sampling: Sampling {
            temperature: Some(0.0),
            ..Sampling::default()
        },
        retrieval: RetrievalOptions::default(),
        created_at_ms: now_ms(),
        deadline_ms: now_ms() + 60_000,
        replay_of: None,
    }
}

async fn setup(limits: &Limits) -> (NatsServer, jetstream::Context, ResponseCache) {
    let nats = NatsServer::start().unwrap_or_else(|err| panic!("{err}"));
    let js = jetstream::new(nats.client().await);
    cauce_nats::apply(&js, limits).await.unwrap();
    let kv = js.get_key_value(names::CACHE_BUCKET).await.unwrap();
    let card = ModelCard {
        fingerprint: "fingerprint".into(),
        context_tokens: 2048,
        file: "model.gguf".into(),
    };
    kv.put(
        names::model_card_key(&ModelName::default_model()),
        wire::encode(&card).unwrap(),
    )
    .await
    .unwrap();
    let cache = ResponseCache::open(&js).await.unwrap();
    (nats, js, cache)
}

#[tokio::test]
async fn a_claim_is_waited_on_until_the_bound_then_taken_over() {
    let (_nats, _js, cache) = setup(&Limits::default()).await;
    let first = cache
        .lookup(&request("what is a stream?"), &[], Instant::now())
        .await;
    let Lookup::Miss { key, .. } = first else {
        panic!("the first request claims the key: {first:?}")
    };
    // an identical request waits for that claim, but only as long as it is allowed
    let wait_until = Instant::now() + Duration::from_millis(300);
    let second = cache
        .lookup(&request("what is a stream?"), &[], wait_until)
        .await;
    assert!(Instant::now() >= wait_until, "it waited for the claim");
    match second {
        Lookup::Miss { key: taken, .. } => assert_eq!(taken, key),
        other => panic!("the claim is taken over once the wait is over: {other:?}"),
    }
    assert_eq!(cache.stats.waits.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn a_full_bucket_is_answered_without_the_cache_at_once() {
    let mut limits = Limits::default();
    limits.cache.max_bytes = 4096;
    let (_nats, js, cache) = setup(&limits).await;
    let kv = js.get_key_value(names::CACHE_BUCKET).await.unwrap();
    // fill the bucket with answers until it refuses more, large ones then small ones
    let mut refused = false;
    for (i, size) in (0..128).map(|i| (i, if i < 64 { 512 } else { 8 })) {
        let put = kv
            .put(
                names::cache_entry_key(&format!("filler{i}")),
                vec![b'x'; size].into(),
            )
            .await;
        refused |= put.is_err();
        if put.is_err() && size == 8 {
            break;
        }
    }
    assert!(refused, "the bucket filled up");
    let lookup = cache
        .lookup(&request("a new question"), &[], Instant::now())
        .await;
    assert!(matches!(lookup, Lookup::Bypass), "{lookup:?}");
    assert_eq!(cache.stats.refused.load(Ordering::Relaxed), 1);
}
