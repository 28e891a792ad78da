//! Helpers shared by the retrieval tests: a real nats-server, the fixture corpus
//! ingested with `cauce-ingest`, workers run in-process, questions asked the way the
//! gateway asks them.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use async_nats::jetstream;
use cauce_ingest::{IngestOptions, Summary};
use cauce_nats::names::{self, WorkerKind};
use cauce_nats::testkit::NatsServer;
use cauce_nats::wire::PromptJob;
use cauce_nats::wire::{
    self, ChatMessage, ChatRequest, Event, EventBody, RetrievalOptions, Role, Source,
};
use cauce_nats::{GatewayId, Limits, ModelName, RequestId, discovery};
use cauce_retrieval::{WorkerConfig, WorkerStats};
use futures::StreamExt;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub type Result<T = ()> = anyhow::Result<T>;

/// Guards a wait that would otherwise hang a broken test; never a speed assertion.
pub const PATIENCE: Duration = Duration::from_secs(60);

pub fn server() -> NatsServer {
    NatsServer::start().unwrap_or_else(|err| panic!("{err}"))
}

pub async fn jetstream(nats: &NatsServer, limits: &Limits) -> Result<jetstream::Context> {
    let js = jetstream::new(nats.client().await);
    cauce_nats::apply(&js, limits).await?;
    Ok(js)
}

/// Copies the fixture corpus into `dir/corpus`, so tests can change it.
pub fn corpus(dir: &Path) -> Result<PathBuf> {
    copy_fixtures("fixtures", &dir.join("corpus"))
}

/// Copies `tests/<fixtures>` into `target`.
pub fn copy_fixtures(fixtures: &str, target: &Path) -> Result<PathBuf> {
    let target = target.to_path_buf();
    std::fs::create_dir_all(&target)?;
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join(fixtures);
    for entry in std::fs::read_dir(fixtures)? {
        let entry = entry?;
        std::fs::copy(entry.path(), target.join(entry.file_name()))?;
    }
    Ok(target)
}

pub async fn ingest(js: &jetstream::Context, path: &Path, delete_missing: bool) -> Result<Summary> {
    let options = IngestOptions {
        paths: vec![path.to_path_buf()],
        delete_missing,
        ..IngestOptions::default()
    };
    Ok(cauce_ingest::run(options, js, &CancellationToken::new()).await?)
}

/// A worker running in this process.
pub struct Worker {
    pub cancel: CancellationToken,
    pub task: JoinHandle<cauce_retrieval::Result<()>>,
}

impl Worker {
    /// Applies `limits` as the owner step would (the same limits change nothing), then
    /// starts a worker, which reads them from the server.
    pub async fn start(nats: &NatsServer, index_dir: &Path, limits: &Limits) -> Self {
        let js = jetstream::new(nats.client().await);
        cauce_nats::apply(&js, limits).await.unwrap();
        Self::start_with(nats, WorkerConfig::new(index_dir.to_path_buf())).await
    }

    pub async fn start_with(nats: &NatsServer, config: WorkerConfig) -> Self {
        let cancel = CancellationToken::new();
        let task = tokio::spawn(cauce_retrieval::run(
            config,
            nats.client().await,
            cancel.clone(),
        ));
        Self { cancel, task }
    }

    pub async fn stop(self) -> Result {
        self.cancel.cancel();
        self.task.await??;
        Ok(())
    }
}

pub fn request(messages: &[(Role, &str)]) -> ChatRequest {
    let now = wire::now_ms();
    ChatRequest {
        id: RequestId::generate(),
        gateway: GatewayId::parse("gw-test").unwrap(),
        model: ModelName::parse("test-model").unwrap(),
        messages: messages
            .iter()
            .map(|(role, content)| ChatMessage {
                role: *role,
                content: content.to_string(),
            })
            .collect(),
        sampling: Default::default(),
        retrieval: RetrievalOptions::default(),
        created_at_ms: now,
        deadline_ms: now + 600_000,
        replay_of: None,
    }
}

/// Publishes a question as the gateway does and waits for its `sources` event.
pub async fn ask_request(js: &jetstream::Context, request: &ChatRequest) -> Result<Event> {
    let client = js.client();
    let mut events = client
        .subscribe(names::events_subject(&request.gateway, &request.id))
        .await?;
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Msg-Id", request.id.as_str());
    js.publish_with_headers(names::QUESTIONS_SUBJECT, headers, wire::encode(request)?)
        .await?
        .await?;
    let message = tokio::time::timeout(PATIENCE, events.next())
        .await?
        .expect("event subscription open");
    Ok(wire::decode(&message.payload)?)
}

pub async fn ask(js: &jetstream::Context, question: &str) -> Result<Vec<Source>> {
    sources(ask_request(js, &request(&[(Role::User, question)])).await?)
}

pub fn sources(event: Event) -> Result<Vec<Source>> {
    match event.body {
        EventBody::Sources { sources } => Ok(sources),
        other => anyhow::bail!("expected sources, got {other:?}"),
    }
}

/// Asks until the first source satisfies `done` (the index follows `DOCS` a moment
/// after a publish), returning the last answer either way.
pub async fn ask_until(
    js: &jetstream::Context,
    question: &str,
    done: impl Fn(&[Source]) -> bool,
) -> Result<Vec<Source>> {
    let mut last = Vec::new();
    for _ in 0..100 {
        last = ask(js, question).await?;
        if done(&last) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(last)
}

/// The stats of the one retrieval worker that is running, once it announces itself.
pub async fn worker_stats(nats: &NatsServer) -> Result<WorkerStats> {
    let client = nats.client().await;
    for _ in 0..100 {
        let found =
            discovery::discover(&client, WorkerKind::Retrieval, Duration::from_millis(300)).await?;
        if let [instance] = found.as_slice()
            && let Some(data) = instance.stats_data()
        {
            return Ok(serde_json::from_value(data.clone())?);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!("no retrieval worker announced itself")
}

pub fn first_doc(sources: &[Source]) -> Option<&str> {
    sources.first().map(|s| s.doc_id.as_str())
}

/// The last prompt job published for `model`, waiting for it: the worker sends the
/// `sources` event before it publishes the job.
pub async fn last_prompt_job(
    js: &jetstream::Context,
    model: &ModelName,
    request: &RequestId,
) -> Result<PromptJob> {
    let stream = js.get_stream(names::PROMPTS).await?;
    let subject = names::prompt_subject(model);
    for _ in 0..100 {
        if let Ok(message) = stream.get_last_raw_message_by_subject(&subject).await {
            let job: PromptJob = wire::decode(&message.payload)?;
            if job.request.id == *request {
                return Ok(job);
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!("no prompt job for request {request}")
}
