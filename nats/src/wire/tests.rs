use super::*;
use crate::error::WireError;
use crate::ids::{Collection, DocId, GatewayId, ModelName, RequestId};

fn request() -> ChatRequest {
    ChatRequest {
        id: RequestId::parse("req1").unwrap(),
        gateway: GatewayId::parse("gw-a").unwrap(),
        model: ModelName::parse("smollm2").unwrap(),
        messages: vec![
            ChatMessage {
                role: Role::System,
                content: "be brief".into(),
            },
            ChatMessage {
                role: Role::User,
                content: "¿qué es cauce? 🚰".into(),
            },
        ],
        sampling: Sampling {
            max_tokens: Some(64),
            temperature: Some(0.0),
            top_p: Some(0.9),
            top_k: Some(40),
            seed: Some(7),
            stop: vec!["\n\n".into()],
        },
        retrieval: RetrievalOptions {
            enabled: false,
            top_k: 2,
            collections: vec![Collection::parse("physics-101").unwrap()],
        },
        created_at_ms: 1,
        deadline_ms: 2,
        replay_of: Some(RequestId::parse("old1").unwrap()),
    }
}

fn passage() -> Passage {
    Passage {
        doc_id: DocId::parse("guide").unwrap(),
        version: "abc".into(),
        title: "Guide".into(),
        heading_path: vec!["Intro".into()],
        location: "docs/guide.md#intro".into(),
        score: 1.5,
        text: "cauce is a pipeline".into(),
    }
}

fn round_trip<T: Wire + PartialEq + std::fmt::Debug>(value: T) {
    let bytes = encode(&value).unwrap();
    let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(json["v"], 1, "{json}");
    assert_eq!(decode::<T>(&bytes).unwrap(), value);
    let packed = encode_compressed(&value).unwrap();
    assert_eq!(decode_compressed::<T>(&packed).unwrap(), value);
}

#[test]
fn every_wire_type_round_trips() {
    round_trip(request());
    round_trip(PromptJob {
        request: request(),
        passages: vec![passage()],
        retrieved_at_ms: 3,
    });
    let id = RequestId::parse("req1").unwrap();
    let bodies = [
        EventBody::Sources {
            sources: vec![passage().source(1)],
        },
        EventBody::Delta {
            text: "ñandú 🎉".into(),
            at: 7,
        },
        EventBody::Done {
            finish_reason: FinishReason::Length,
            usage: Usage {
                prompt_tokens: 10,
                completion_tokens: 3,
                cached_tokens: 4,
            },
            timings: Timings {
                queue_ms: 1.0,
                prefill_ms: 2.0,
                decode_ms: 3.0,
                ..Timings::default()
            },
            cached: true,
            text_bytes: 12,
        },
        EventBody::Error {
            kind: ErrorKind::ContextOverflow,
            message: "too long".into(),
        },
    ];
    for (seq, body) in bodies.into_iter().enumerate() {
        round_trip(Event {
            request_id: id.clone(),
            attempt: 2,
            seq: seq as u64,
            body,
        });
    }
    round_trip(StoredResult {
        request_id: id.clone(),
        model: ModelName::parse("smollm2").unwrap(),
        status: ResultStatus::Failed,
        text: "partial".into(),
        finish_reason: None,
        usage: Usage::default(),
        timings: Timings::default(),
        sources: vec![passage().source(1)],
        error: Some(StoredError {
            kind: ErrorKind::Internal,
            message: "boom".into(),
        }),
        attempt: 3,
        owner: "host:12#4".into(),
        created_at_ms: 1,
        finished_at_ms: 2,
        replay_of: None,
    });
    round_trip(DocRecord::Document(Document {
        id: DocId::parse("guide").unwrap(),
        collection: Collection::parse("physics-101").unwrap(),
        version: "abc".into(),
        title: "Guide".into(),
        location: "docs/guide.md".into(),
        passages: vec![DocPassage {
            heading_path: vec!["A".into(), "B".into()],
            anchor: Some("b".into()),
            text: "text".into(),
        }],
        published_at_ms: 5,
    }));
    round_trip(DocRecord::Tombstone(Tombstone {
        id: DocId::parse("guide").unwrap(),
        deleted_at_ms: 6,
    }));
}

#[test]
fn event_json_is_flat_and_tagged() {
    let event = Event {
        request_id: RequestId::parse("r").unwrap(),
        attempt: 1,
        seq: 4,
        body: EventBody::Delta {
            text: "hi".into(),
            at: 3,
        },
    };
    let json: serde_json::Value = serde_json::from_slice(&encode(&event).unwrap()).unwrap();
    assert_eq!(
        json,
        serde_json::json!({"v": 1, "request_id": "r", "attempt": 1, "seq": 4, "type": "delta", "text": "hi", "at": 3})
    );
}

#[test]
fn unknown_fields_are_ignored() {
    let payload = br#"{"v":1,"request_id":"r","attempt":1,"seq":0,"type":"delta","text":"x","future":{"a":1}}"#;
    let event: Event = decode(payload).unwrap();
    let text = "x".into();
    assert_eq!(event.body, EventBody::Delta { text, at: 0 });
    let kind: Event = decode(
        br#"{"v":1,"request_id":"r","attempt":1,"seq":0,"type":"error","kind":"gpu_on_fire","message":"m"}"#,
    )
    .unwrap();
    assert_eq!(
        kind.body,
        EventBody::Error {
            kind: ErrorKind::Other,
            message: "m".into()
        }
    );
}

#[test]
fn bad_payloads_give_typed_errors() {
    assert!(matches!(
        decode::<Event>(b"not json"),
        Err(WireError::NotJson { .. })
    ));
    assert!(matches!(
        decode::<Event>(b""),
        Err(WireError::NotJson { .. })
    ));
    assert!(matches!(
        decode::<Event>(b"{\"v\":1"),
        Err(WireError::NotJson { .. })
    ));
    let array = decode::<Event>(b"[1,2]");
    assert!(matches!(array, Err(WireError::Schema { .. })), "{array:?}");
    assert!(matches!(
        decode::<Event>(b"{}"),
        Err(WireError::MissingVersion { .. })
    ));
    let wrong = decode::<Event>(br#"{"v":2,"type":"delta"}"#).unwrap_err();
    assert!(
        matches!(
            wrong,
            WireError::WrongVersion {
                found: 2,
                expected: 1,
                ..
            }
        ),
        "{wrong}"
    );
    assert!(wrong.to_string().contains("version 2"));
    assert!(matches!(
        decode::<Event>(br#"{"v":"1"}"#),
        Err(WireError::WrongVersion { .. })
    ));
    assert!(matches!(
        decode::<Event>(
            br#"{"v":1,"request_id":"a.b","attempt":1,"seq":0,"type":"delta","text":""}"#
        ),
        Err(WireError::Schema { .. })
    ));
    assert!(matches!(
        decode::<Event>(br#"{"v":1,"request_id":"r","attempt":1,"seq":0,"type":"nope"}"#),
        Err(WireError::Schema { .. })
    ));
    assert!(matches!(
        decode_compressed::<StoredResult>(b"not zstd"),
        Err(WireError::Compression { .. })
    ));
}

#[test]
fn decoding_arbitrary_bytes_never_panics() {
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    for len in 0..400 {
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                b"{}[]\":,v1 atyped"[(seed % 16) as usize]
            })
            .collect();
        let _ = decode::<Event>(&bytes);
        let _ = decode::<ChatRequest>(&bytes);
        let _ = decode_compressed::<DocRecord>(&bytes);
    }
}

#[test]
fn a_prompt_job_is_fitted_by_dropping_its_lowest_ranked_passages() {
    let mut job = PromptJob {
        request: request(),
        passages: vec![passage(), passage(), passage()],
        retrieved_at_ms: 3,
    };
    let whole = encode(&job).unwrap().len();
    assert_eq!(job.clone().fit(whole), 0, "a job that fits is left alone");
    let one_less = {
        let mut shorter = job.clone();
        shorter.passages.pop();
        encode(&shorter).unwrap().len()
    };
    assert_eq!(job.fit(one_less), 1);
    assert_eq!(job.passages.len(), 2);
    assert!(encode(&job).unwrap().len() <= one_less);
    // nothing left to drop: the question alone is the gateway's to refuse
    assert_eq!(job.fit(1), 2);
    assert!(job.passages.is_empty());
}

#[test]
fn records_from_before_collections_are_in_the_default_one() {
    let old = r#"{"type":"document","id":"guide","version":"v","title":"T","location":"l",
        "passages":[{"text":"x"}],"published_at_ms":1}"#;
    let DocRecord::Document(doc) = serde_json::from_str::<DocRecord>(old).unwrap() else {
        panic!("a document");
    };
    assert_eq!(doc.collection.as_str(), Collection::DEFAULT);
    // a request that names none writes exactly what it wrote before
    let options = serde_json::to_string(&RetrievalOptions::default()).unwrap();
    assert_eq!(options, r#"{"enabled":true,"top_k":4}"#);
    let named: RetrievalOptions =
        serde_json::from_str(r#"{"collections":["physics-101"]}"#).unwrap();
    assert_eq!(
        named.collections,
        [Collection::parse("physics-101").unwrap()]
    );
    assert!(serde_json::from_str::<RetrievalOptions>(r#"{"collections":["a.b"]}"#).is_err());
}
