//! Fuzzing the decoders: arbitrary bytes and mutations of valid payloads from a seeded
//! generator (a run is repeatable, and the input that broke it is saved), fed to every
//! decoder of what another process wrote. Built only with the `testkit` feature; a
//! short run is a test (`nats/tests/fuzz.rs`), the long one an example
//! (`cargo run --release -p cauce-nats --example fuzz_wire -- 10000000`).
//!
//! Each input must give a value or a typed error: a panic fails the run, and so does an
//! input during which the process held more memory than `max_live_bytes` (a zstd bomb, a
//! length that asks for a huge buffer), measured by the fuzzing binary's allocator.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;

use crate::dead::DeadLetter;
use crate::ids::{DocId, GatewayId, ModelName, RequestId};
use crate::names;
use crate::wire::{
    self, CacheEntry, CacheValue, ChatMessage, ChatRequest, DocPassage, DocRecord, Document,
    ErrorKind, Event, EventBody, FinishReason, ModelCard, Passage, PromptJob, ResultStatus,
    RetrievalOptions, Role, Sampling, StoredResult, Timings, Tombstone, Usage, Wire,
};

/// Seeded inputs: arbitrary bytes, random JSON, and mutations of valid payloads.
pub struct Mutator {
    state: u64,
    seeds: Vec<Vec<u8>>,
}

/// Pieces that are often where decoders break.
const DICTIONARY: &[&[u8]] = &[
    b"\"v\":1,",
    b"\"v\":2",
    b"null",
    b"true",
    b"-1",
    b"1e999",
    b"18446744073709551616",
    b"-9223372036854775809",
    b"0.0000001",
    b"\"\\u0000\"",
    b"\"\\ud800\"",
    b"\"\xff\xfe\"",
    b"[[[[[[[[",
    b"{\"a\":{\"b\":{\"c\":",
    b"\"type\":\"delta\"",
    b"\"type\":\"done\"",
    b"\"status\":\"running\"",
    b"\"kind\":\"gpu_on_fire\"",
    b"\"role\":\"tool\"",
    b"\"text\":\"",
    b"\"at\":18446744073709551615",
    b"\"attempt\":4294967296",
    b"\"messages\":[]",
    b"\x28\xb5\x2f\xfd",
];

impl Mutator {
    pub fn new(seed: u64, seeds: Vec<Vec<u8>>) -> Self {
        Self {
            state: seed ^ 0x9e37_79b9_7f4a_7c15,
            seeds,
        }
    }

    /// splitmix64
    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }

    /// The next input.
    pub fn next_input(&mut self) -> Vec<u8> {
        match self.below(10) {
            0 => {
                let len = self.below(96);
                (0..len).map(|_| self.next_u64() as u8).collect()
            }
            1 => {
                let mut out = b"{\"v\":1,".to_vec();
                self.json_fields(&mut out, 3);
                out.push(b'}');
                out
            }
            _ if self.seeds.is_empty() => Vec::new(),
            _ => {
                let pick = self.below(self.seeds.len());
                let mut input = self.seeds[pick].clone();
                for _ in 0..=self.below(4) {
                    self.mutate(&mut input);
                }
                input
            }
        }
    }

    fn mutate(&mut self, input: &mut Vec<u8>) {
        let at = self.below(input.len() + 1);
        match self.below(7) {
            0 if !input.is_empty() => {
                let i = at.min(input.len() - 1);
                input[i] ^= 1 << self.below(8);
            }
            1 if !input.is_empty() => {
                let i = at.min(input.len() - 1);
                const BYTES: &[u8] = b"\"{}[],:0\\ \x00\xff";
                input[i] = BYTES[self.below(BYTES.len())];
            }
            2 => {
                let piece = DICTIONARY[self.below(DICTIONARY.len())];
                input.splice(at..at, piece.iter().copied());
            }
            3 => {
                let end = (at + self.below(16)).min(input.len());
                input.drain(at..end);
            }
            4 => {
                let end = (at + self.below(32)).min(input.len());
                let copy = input[at..end].to_vec();
                input.splice(at..at, copy);
            }
            5 => input.truncate(at),
            _ if !self.seeds.is_empty() => {
                let pick = self.below(self.seeds.len());
                let from = self.below(self.seeds[pick].len() + 1);
                let tail = self.seeds[pick][from..].to_vec();
                input.truncate(at);
                input.extend(tail);
            }
            _ => {}
        }
    }

    /// Random `"key":value` pairs, with keys the wire types use.
    fn json_fields(&mut self, out: &mut Vec<u8>, depth: u32) {
        const KEYS: &[&str] = &[
            "request_id",
            "attempt",
            "seq",
            "type",
            "text",
            "at",
            "status",
            "id",
            "model",
            "messages",
            "sampling",
            "passages",
            "sources",
            "usage",
            "version",
            "record",
        ];
        for i in 0..self.below(6) {
            if i > 0 {
                out.push(b',');
            }
            let key = KEYS[self.below(KEYS.len())];
            out.extend(format!("\"{key}\":").into_bytes());
            self.json_value(out, depth);
        }
    }

    fn json_value(&mut self, out: &mut Vec<u8>, depth: u32) {
        match self.below(if depth == 0 { 4 } else { 6 }) {
            0 => out.extend(format!("{}", self.next_u64() as i64 >> self.below(64)).into_bytes()),
            1 => {
                let len = self.below(12);
                out.push(b'"');
                const BYTES: &[u8] = b"ab\\\"\xc3\xb1 z";
                out.extend((0..len).map(|_| BYTES[self.below(BYTES.len())]));
                out.push(b'"');
            }
            2 => out.extend_from_slice(DICTIONARY[self.below(DICTIONARY.len())]),
            3 => out.extend_from_slice(b"null"),
            4 => {
                out.push(b'[');
                for i in 0..self.below(4) {
                    if i > 0 {
                        out.push(b',');
                    }
                    self.json_value(out, depth - 1);
                }
                out.push(b']');
            }
            _ => {
                out.push(b'{');
                self.json_fields(out, depth - 1);
                out.push(b'}');
            }
        }
    }
}

/// What a run saw.
#[derive(Debug, Default)]
pub struct Report {
    pub inputs: u64,
    /// Decoder calls, and how many of them gave a value (the rest gave an error).
    pub decodes: u64,
    pub accepted: u64,
    /// The most memory held at once during one input, in bytes.
    pub max_live_bytes: usize,
}

pub use peak_alloc::PeakAlloc;

/// Declares, in a fuzzing binary, the allocator that counts its memory (`ALLOCATOR`)
/// and the [`Memory`] that reads it (`MEMORY`).
#[macro_export]
macro_rules! measured_allocator {
    () => {
        #[global_allocator]
        static ALLOCATOR: $crate::fuzz::PeakAlloc = $crate::fuzz::PeakAlloc;
        const MEMORY: $crate::fuzz::Memory = $crate::fuzz::Memory {
            current: || ALLOCATOR.current_usage(),
            peak: || ALLOCATOR.peak_usage(),
            reset_peak: || ALLOCATOR.reset_peak_usage(),
        };
    };
}

/// How the fuzzing binary measures memory, through its allocator: the bytes it holds
/// now, the most it held since the last reset, and the reset.
#[derive(Clone, Copy)]
pub struct Memory {
    pub current: fn() -> usize,
    pub peak: fn() -> usize,
    pub reset_peak: fn(),
}

/// Why a run failed: the input is saved at `saved`.
#[derive(Debug)]
pub struct Failure {
    pub what: String,
    pub saved: PathBuf,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (input saved at {})", self.what, self.saved.display())
    }
}

fn request() -> ChatRequest {
    let id = |s: &str| RequestId::parse(s).expect("a valid id");
    ChatRequest {
        id: id("req1"),
        gateway: GatewayId::parse("gw-a").expect("a valid id"),
        model: ModelName::default_model(),
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
            temperature: Some(0.7),
            top_p: Some(0.9),
            top_k: Some(40),
            seed: Some(7),
            stop: vec!["\n\n".into()],
        },
        retrieval: RetrievalOptions {
            enabled: true,
            top_k: 2,
            collections: vec![crate::Collection::parse("physics-101").expect("a valid collection")],
        },
        created_at_ms: 1,
        deadline_ms: 2,
        replay_of: Some(id("old1")),
    }
}

fn passage() -> Passage {
    Passage {
        doc_id: DocId::parse("guide").expect("a valid id"),
        version: "abc".into(),
        title: "Guide".into(),
        heading_path: vec!["Intro".into()],
        location: "docs/guide.md#intro".into(),
        score: 1.5,
        text: "cauce is a pipeline".into(),
    }
}

/// Valid payloads of every wire type, plain and zstd-compressed: the mutator's seeds.
pub fn wire_seeds() -> Vec<Vec<u8>> {
    let request = request();
    let job = PromptJob {
        request: request.clone(),
        passages: vec![passage()],
        retrieved_at_ms: 3,
    };
    let usage = Usage {
        prompt_tokens: 10,
        completion_tokens: 3,
        cached_tokens: 4,
    };
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
            usage,
            timings: Timings::default(),
            cached: true,
            text_bytes: 12,
        },
        EventBody::Error {
            kind: ErrorKind::ContextOverflow,
            message: "too long".into(),
        },
    ];
    let result = StoredResult {
        status: ResultStatus::Done,
        text: "partial".into(),
        sources: vec![passage().source(1)],
        attempt: 2,
        owner: "host:1#2".into(),
        ..StoredResult::queued(request.id.clone(), request.model.clone(), 1)
    };
    let entry = CacheValue::Entry(CacheEntry {
        model: request.model.clone(),
        text: "cached".into(),
        finish_reason: FinishReason::Stop,
        usage,
        sources: vec![],
        created_at_ms: 4,
    });
    let document = DocRecord::Document(Document {
        id: DocId::parse("guide").expect("a valid id"),
        collection: crate::Collection::parse("physics-101").expect("a valid collection"),
        version: "abc".into(),
        title: "Guide".into(),
        location: "docs/guide.md".into(),
        passages: vec![DocPassage {
            heading_path: vec!["A".into()],
            anchor: Some("a".into()),
            text: "text".into(),
        }],
        published_at_ms: 5,
    });
    let tombstone = DocRecord::Tombstone(Tombstone {
        id: DocId::parse("guide").expect("a valid id"),
        deleted_at_ms: 6,
    });
    let mut seeds = vec![
        plain_bytes(&request),
        plain_bytes(&job),
        plain_bytes(&result),
        plain_bytes(&entry),
        plain_bytes(&document),
        plain_bytes(&tombstone),
        plain_bytes(&ModelCard {
            fingerprint: "ab12".into(),
            context_tokens: 2048,
            file: "model.gguf".into(),
        }),
        packed_bytes(&result),
        packed_bytes(&entry),
        packed_bytes(&document),
        br#"{"type":"io.nats.jetstream.advisory.v1.max_deliver","stream":"PROMPTS","consumer":"inference-x","stream_seq":7,"deliveries":10,"timestamp":"2026-01-01T00:00:00Z"}"#.to_vec(),
        b"req_01J8ZQ".to_vec(),
    ];
    for body in bodies {
        let event = Event {
            request_id: request.id.clone(),
            attempt: 2,
            seq: 1,
            body,
        };
        seeds.push(plain_bytes(&event));
    }
    seeds
}

fn plain_bytes<T: Wire>(value: &T) -> Vec<u8> {
    wire::encode(value).expect("a sample encodes").to_vec()
}

fn packed_bytes<T: Wire>(value: &T) -> Vec<u8> {
    wire::encode_compressed(value)
        .expect("a sample encodes")
        .to_vec()
}

/// Feeds `inputs` inputs to every wire decoder.
pub fn fuzz_wire(
    inputs: u64,
    seed: u64,
    memory: Memory,
    max_live_bytes: usize,
) -> Result<Report, Failure> {
    fuzz(
        inputs,
        Mutator::new(seed, wire_seeds()),
        memory,
        max_live_bytes,
        decode_all,
    )
}

/// Feeds `inputs` inputs from `mutator` to `decoders`, which returns how many decoder
/// calls it made and how many of them gave a value.
pub fn fuzz(
    inputs: u64,
    mut mutator: Mutator,
    memory: Memory,
    max_live_bytes: usize,
    decoders: impl Fn(&[u8]) -> (u64, u64),
) -> Result<Report, Failure> {
    let mut report = Report::default();
    for _ in 0..inputs {
        let input = mutator.next_input();
        let base = (memory.current)();
        (memory.reset_peak)();
        let outcome = catch_unwind(AssertUnwindSafe(|| decoders(&input)));
        let peak = match outcome {
            Ok((decodes, accepted)) => {
                report.decodes += decodes;
                report.accepted += accepted;
                (memory.peak)().saturating_sub(base)
            }
            Err(_) => return Err(failure("a decoder panicked", &input)),
        };
        report.max_live_bytes = report.max_live_bytes.max(peak);
        if peak > max_live_bytes {
            return Err(failure(
                &format!("one input held {peak} bytes (bound {max_live_bytes})"),
                &input,
            ));
        }
        report.inputs += 1;
    }
    Ok(report)
}

/// Every wire decoder on one input: (calls, values).
fn decode_all(input: &[u8]) -> (u64, u64) {
    let mut calls = 0;
    let mut values = 0;
    let mut count = |ok: bool| {
        calls += 1;
        values += u64::from(ok);
    };
    count(plain::<ChatRequest>(input));
    count(plain::<PromptJob>(input));
    count(plain::<Event>(input));
    count(plain::<StoredResult>(input));
    count(plain::<CacheValue>(input));
    count(plain::<DocRecord>(input));
    count(plain::<ModelCard>(input));
    count(compressed::<StoredResult>(input));
    count(compressed::<CacheValue>(input));
    count(compressed::<DocRecord>(input));
    count(DeadLetter::parse(names::MAX_DELIVERIES_ADVISORY_PREFIX, input).is_ok());
    let text = String::from_utf8_lossy(input);
    count(RequestId::parse(text.as_ref()).is_ok());
    count(DocId::parse(text.as_ref()).is_ok());
    count(ModelName::parse(text.as_ref()).is_ok());
    count(GatewayId::parse(text.as_ref()).is_ok());
    (calls, values)
}

fn plain<T: Wire>(input: &[u8]) -> bool {
    wire::decode::<T>(input).is_ok()
}

fn compressed<T: Wire>(input: &[u8]) -> bool {
    wire::decode_compressed::<T>(input).is_ok()
}

/// Saves the input that broke a run, for replay.
pub fn failure(what: &str, input: &[u8]) -> Failure {
    let saved = std::env::temp_dir().join(format!(
        "cauce-fuzz-{}-{}.bin",
        std::process::id(),
        input.len()
    ));
    let _ = std::fs::write(&saved, input);
    Failure {
        what: what.to_string(),
        saved,
    }
}
