//! Every NATS subject, stream, consumer and bucket name cauce uses. No other crate
//! formats a subject string: they call these functions with typed ids.

use crate::ids::{DocId, GatewayId, ModelName, RequestId};

/// Stream of every accepted question.
pub const QUESTIONS: &str = "QUESTIONS";
/// Subject the gateway publishes questions to.
pub const QUESTIONS_SUBJECT: &str = "cauce.questions";
/// Durable pull consumer of [`QUESTIONS`] shared by all retrieval workers.
pub const RETRIEVAL_CONSUMER: &str = "retrieval";

/// Subject of search requests (`POST /v1/search`), answered by one retrieval worker.
pub const SEARCH_SUBJECT: &str = "cauce.search";
/// Queue group the retrieval workers answer [`SEARCH_SUBJECT`] in.
pub const SEARCH_QUEUE: &str = "retrieval";

/// Stream of prompt jobs (question plus retrieved context), one subject per model.
pub const PROMPTS: &str = "PROMPTS";
/// Wildcard covering every model's prompt subject.
pub const PROMPTS_SUBJECTS: &str = "cauce.prompts.>";

/// Stream of the corpus: the latest version of each document, or its tombstone.
pub const DOCS: &str = "DOCS";
/// Wildcard covering every document subject.
pub const DOCS_SUBJECTS: &str = "cauce.docs.>";
/// Prefix of document subjects, for recovering a [`DocId`] from a subject.
pub const DOCS_SUBJECT_PREFIX: &str = "cauce.docs.";

/// Stream of upload jobs for the ingest workers: convert an uploaded file, or delete
/// an uploaded document.
pub const UPLOADS: &str = "UPLOADS";
/// Wildcard covering every upload job's subject.
pub const UPLOADS_SUBJECTS: &str = "cauce.uploads.>";
/// Durable pull consumer of [`UPLOADS`] shared by all ingest workers.
pub const INGEST_CONSUMER: &str = "ingest";
/// Object store bucket of uploaded files, one object per document id.
pub const UPLOADS_BUCKET: &str = "cauce-uploads";
/// Key-value bucket of uploaded documents' records, one key per document id.
pub const DOCUMENTS_BUCKET: &str = "cauce-documents";

/// Subject of one document's upload jobs.
pub fn upload_subject(doc: &DocId) -> String {
    format!("cauce.uploads.{doc}")
}

/// The JetStream stream behind an object store bucket.
pub fn object_stream(bucket: &str) -> String {
    format!("OBJ_{bucket}")
}

/// Stream of dead letters: JetStream's advisories for questions and prompt jobs that
/// exhausted their deliveries or that a worker terminated. The advisory names the
/// stream sequence of the original message, which stays in its stream for replay.
pub const DEAD: &str = "DEAD";
/// Prefix of the advisory JetStream sends when a message exhausts its deliveries.
pub const MAX_DELIVERIES_ADVISORY_PREFIX: &str = "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.";
/// Prefix of the advisory JetStream sends when a consumer terminates a message.
pub const MSG_TERMINATED_ADVISORY_PREFIX: &str = "$JS.EVENT.ADVISORY.CONSUMER.MSG_TERMINATED.";

/// Durable consumer of [`DEAD`] that the retrieval workers share: each dead letter is
/// turned once into an `error` event and a `failed` record.
pub const DEAD_NOTIFY_CONSUMER: &str = "notify";

/// Dead letters of upload jobs: the advisories of the ingest consumer of [`UPLOADS`],
/// apart from [`DEAD`] (whose subjects were fixed before uploads existed, and whose
/// reader, a retrieval worker, may not write upload records).
pub const DEAD_UPLOADS: &str = "DEAD_UPLOADS";
/// Durable consumer of [`DEAD_UPLOADS`] that the ingest workers share: each upload job
/// given up on ends its upload `failed` once.
pub const DEAD_UPLOADS_CONSUMER: &str = "ingest";

/// The advisory subjects [`DEAD_UPLOADS`] captures: both kinds, for [`UPLOADS`].
pub fn dead_upload_subjects() -> Vec<String> {
    [
        MAX_DELIVERIES_ADVISORY_PREFIX,
        MSG_TERMINATED_ADVISORY_PREFIX,
    ]
    .into_iter()
    .map(|prefix| format!("{prefix}{UPLOADS}.*"))
    .collect()
}

/// The advisory subjects [`DEAD`] captures: both kinds, for the consumers of
/// [`QUESTIONS`] and [`PROMPTS`] only.
pub fn dead_letter_subjects() -> Vec<String> {
    [
        MAX_DELIVERIES_ADVISORY_PREFIX,
        MSG_TERMINATED_ADVISORY_PREFIX,
    ]
    .into_iter()
    .flat_map(|prefix| [QUESTIONS, PROMPTS].map(|stream| format!("{prefix}{stream}.*")))
    .collect()
}

/// Key-value bucket of final answers, one key per request id.
pub const RESULTS_BUCKET: &str = "cauce-results";
/// Key-value bucket of cached answers to repeated deterministic questions.
pub const CACHE_BUCKET: &str = "cauce-cache";
/// Key-value bucket of cancels, for requests cancelled while their job was still queued.
pub const CANCELS_BUCKET: &str = "cauce-cancels";

/// Header carrying the request id through every hop, so one grep follows a request.
pub const REQUEST_ID_HEADER: &str = "Cauce-Request-Id";
/// Header naming the gateway that owns a request: with the request id it is all a dead
/// letter needs to reach the client (an advisory names only the stream sequence).
pub const GATEWAY_HEADER: &str = "Cauce-Gateway";

/// Header of a question: `off` keeps its answer out of the response cache.
pub const CACHE_HEADER: &str = "Cauce-Cache";
/// Header of a prompt job: the response cache key its answer is stored under.
pub const CACHE_KEY_HEADER: &str = "Cauce-Cache-Key";
/// Header of a prompt job: the model fingerprint its cache key was computed with; a
/// worker whose model file has another fingerprint does not store the answer.
pub const MODEL_FINGERPRINT_HEADER: &str = "Cauce-Model-Fingerprint";

/// Subject of prompt jobs for one model.
pub fn prompt_subject(model: &ModelName) -> String {
    format!("cauce.prompts.{model}")
}

/// Name of the durable pull consumer that the inference workers of `model` share.
pub fn inference_consumer(model: &ModelName) -> String {
    format!("inference-{model}")
}

/// The model whose inference consumer is called `name`, if it is one.
pub fn model_of_inference_consumer(name: &str) -> Option<ModelName> {
    ModelName::parse(name.strip_prefix("inference-")?).ok()
}

/// Subject one document's versions and tombstone are published to.
pub fn doc_subject(doc: &DocId) -> String {
    format!("{DOCS_SUBJECT_PREFIX}{doc}")
}

/// The document a `cauce.docs.<id>` subject belongs to, if it is one.
pub fn doc_id_from_subject(subject: &str) -> Option<DocId> {
    subject
        .strip_prefix(DOCS_SUBJECT_PREFIX)
        .and_then(|id| DocId::parse(id).ok())
}

/// Reply subject of one request: sources, deltas, done and error events go there.
pub fn events_subject(gateway: &GatewayId, request: &RequestId) -> String {
    format!("cauce.events.{gateway}.{request}")
}

/// Wildcard covering every request's reply subject.
pub const EVENTS_SUBJECTS: &str = "cauce.events.>";

/// Wildcard matching one request's reply subject whatever gateway owns it, so that any
/// gateway can follow the events of a task another gateway accepted.
pub fn events_subject_any_gateway(request: &RequestId) -> String {
    format!("cauce.events.*.{request}")
}

/// Subject a cancel for one request is published on.
pub fn cancel_subject(request: &RequestId) -> String {
    format!("cauce.cancel.{request}")
}

/// Wildcard covering every request's cancel subject.
pub fn cancel_subject_any() -> String {
    "cauce.cancel.*".to_string()
}

/// Key in [`CACHE_BUCKET`] of the [card](crate::wire::ModelCard) of the model served as
/// `model` (its file's fingerprint, context size and file name), which inference
/// workers write and retrieval workers read.
pub fn model_card_key(model: &ModelName) -> String {
    format!("card.{model}")
}

/// Key in [`CACHE_BUCKET`] of a cached answer.
pub fn cache_entry_key(hash: &str) -> String {
    format!("{CACHE_ENTRY_PREFIX}{hash}")
}

const CACHE_ENTRY_PREFIX: &str = "answer.";

/// Whether a key of [`CACHE_BUCKET`] holds an answer (or a claim on one).
pub fn is_cache_entry_key(key: &str) -> bool {
    key.starts_with(CACHE_ENTRY_PREFIX)
}

/// The JetStream stream behind a key-value bucket.
pub fn bucket_stream(bucket: &str) -> String {
    format!("KV_{bucket}")
}

/// Headers of a publish that belongs to one request: `Nats-Msg-Id` (so JetStream drops a
/// repeated publish of it inside the duplicate window), the request id and its gateway.
pub fn request_headers(gateway: &GatewayId, request: &RequestId) -> async_nats::HeaderMap {
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(async_nats::header::NATS_MESSAGE_ID, request.as_str());
    headers.insert(REQUEST_ID_HEADER, request.as_str());
    headers.insert(GATEWAY_HEADER, gateway.as_str());
    headers
}

/// Key of a request in [`RESULTS_BUCKET`] and [`CANCELS_BUCKET`].
pub fn request_key(request: &RequestId) -> &str {
    request.as_str()
}

/// Name of the NATS service (micro) API endpoint group a kind of worker announces under.
pub fn service_name(kind: WorkerKind) -> &'static str {
    match kind {
        WorkerKind::Retrieval => "cauce-retrieval",
        WorkerKind::Inference => "cauce-inference",
        WorkerKind::Gateway => "cauce-gateway",
        WorkerKind::Launcher => "cauce-up",
    }
}

/// The kinds of process that announce themselves with the NATS service API.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WorkerKind {
    Retrieval,
    Inference,
    Gateway,
    /// `cauce up`, which supervises one process of each component.
    Launcher,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_are_built_from_typed_ids() {
        let gw = GatewayId::parse("gw-1").unwrap();
        let req = RequestId::parse("abc123").unwrap();
        let model = ModelName::parse("smollm2").unwrap();
        let doc = DocId::parse("guide-api").unwrap();
        assert_eq!(events_subject(&gw, &req), "cauce.events.gw-1.abc123");
        assert_eq!(cancel_subject(&req), "cauce.cancel.abc123");
        assert_eq!(prompt_subject(&model), "cauce.prompts.smollm2");
        assert_eq!(inference_consumer(&model), "inference-smollm2");
        assert_eq!(doc_subject(&doc), "cauce.docs.guide-api");
        assert_eq!(doc_id_from_subject("cauce.docs.guide-api"), Some(doc));
        assert_eq!(doc_id_from_subject("cauce.prompts.x"), None);
    }

    #[test]
    fn dead_letters_are_captured_for_cauce_streams_only() {
        assert_eq!(
            dead_letter_subjects(),
            [
                "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.QUESTIONS.*",
                "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.PROMPTS.*",
                "$JS.EVENT.ADVISORY.CONSUMER.MSG_TERMINATED.QUESTIONS.*",
                "$JS.EVENT.ADVISORY.CONSUMER.MSG_TERMINATED.PROMPTS.*",
            ]
        );
    }
}
