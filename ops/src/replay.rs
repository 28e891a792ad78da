//! `cauce replay`: accepted questions are a log, and an operator can re-run them.
//!
//! A selection (`--since 1h`, `--from-seq N [--to-seq M]`, `--id ID`) is read from the
//! `QUESTIONS` stream with an ordered consumer that acks nothing, so the durable
//! `retrieval` consumer is untouched. Each question is published again as a new request:
//! a new id, `replay_of` set to the original id, the same messages and sampling, and
//! `--model` to try another model. The replayer is its own "gateway": it subscribes to
//! each new request's reply subject before publishing, collects the answer from the
//! events (the last attempt wins), and prints a table that compares it with the original
//! answer in `cauce-results`: lengths, finish reasons, and whether the text is identical.
//! With `temperature: 0` or a `seed`, the same model and the same corpus give the same
//! answer. Replays opt out of the response cache (`Cauce-Cache: off`), so the model
//! really runs again.
//!
//! `--dead` lists the dead letters (see `cauce_nats::dead`) with their reason: the
//! original question or prompt job is read back from its stream by sequence, and a
//! terminated job's reason is completed with the error the worker stored for it.
//! `--dead --run` replays them once the cause is fixed; a dead letter whose replay
//! completes is removed from `DEAD`, so the list shows what is still to be dealt with.

use std::time::Duration;

use anyhow::{Context, bail};
use cauce_nats::async_nats;
use cauce_nats::async_nats::jetstream::consumer::{DeliverPolicy, pull};
use cauce_nats::async_nats::jetstream::{self, kv};
use cauce_nats::dead::{DeadLetter, DeadReason};
use cauce_nats::relay::{Output, Relay};
use cauce_nats::wire::{self, ChatRequest, PromptJob, ResultStatus, StoredResult};
use cauce_nats::{GatewayId, ModelName, RequestId, connect, names};
use clap::{ArgGroup, Args};
use futures::StreamExt;
use serde::Serialize;

use crate::cli::NatsArgs;

/// How long an ordered read waits for the next message before taking the range as read.
const READ_IDLE: Duration = Duration::from_secs(2);

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("selection").required(true).args(["since", "from_seq", "id", "dead"])))]
pub struct ReplayArgs {
    #[command(flatten)]
    nats: NatsArgs,
    /// Replay the questions accepted in this past window (`1h`, `30m`)
    #[arg(long, value_parser = humantime::parse_duration)]
    since: Option<Duration>,
    /// Replay from this QUESTIONS sequence on
    #[arg(long)]
    from_seq: Option<u64>,
    /// Last QUESTIONS sequence to replay (with --from-seq) [default: the last one]
    #[arg(long, requires = "from_seq")]
    to_seq: Option<u64>,
    /// Replay the question with this request id
    #[arg(long)]
    id: Option<RequestId>,
    /// List dead letters: questions and prompt jobs given up on, with the reason
    #[arg(long)]
    dead: bool,
    /// With --dead: replay the dead letters listed
    #[arg(long, requires = "dead")]
    run: bool,
    /// Replay against this model instead of each question's own
    #[arg(long, env = "CAUCE_REPLAY_MODEL")]
    model: Option<ModelName>,
    /// List what would be replayed; publish nothing
    #[arg(long)]
    dry_run: bool,
    /// How long to wait for all replayed answers
    #[arg(long, env = "CAUCE_REPLAY_TIMEOUT", default_value = "5m", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// Print JSON lines instead of tables
    #[arg(long)]
    json: bool,
}

/// One question read back from a stream.
#[derive(Clone, Debug)]
pub struct Recorded {
    /// Its sequence in `QUESTIONS` (or in `PROMPTS` for a dead prompt job).
    pub seq: u64,
    pub request: ChatRequest,
}

/// One side of the comparison.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Answer {
    pub status: String,
    pub finish_reason: Option<String>,
    pub chars: usize,
    pub text: String,
    pub error: Option<String>,
}

/// One row of the replay table.
#[derive(Debug, Serialize)]
pub struct Compared {
    pub seq: u64,
    pub original_id: String,
    pub replay_id: String,
    pub model: String,
    pub old: Option<Answer>,
    pub new: Answer,
    pub identical: bool,
}

/// One row of the dead-letter list.
#[derive(Debug, Serialize)]
pub struct DeadRow {
    pub dead_seq: u64,
    pub timestamp: String,
    pub stream: String,
    pub consumer: String,
    pub stream_seq: u64,
    pub reason_kind: &'static str,
    pub reason: String,
    pub request_id: Option<String>,
    pub model: Option<String>,
    pub question: Option<String>,
}

pub async fn run(args: ReplayArgs) -> anyhow::Result<()> {
    let client = connect(
        &args
            .nats
            .connect_options(cauce_nats::permissions::Role::Operator, "cauce-replay")?,
    )
    .await?;
    let js = jetstream::new(client.clone());
    let results = js
        .get_key_value(names::RESULTS_BUCKET)
        .await
        .context("opening the results bucket; has cauce run on this NATS?")?;

    // DEAD sequences of the dead letters being replayed, in the order of `selected`
    let mut dead_seqs = Vec::new();
    let selected = if args.dead {
        let dead = dead_letters(&js, &results).await?;
        print_dead(
            &dead.iter().map(|(row, _)| row).collect::<Vec<_>>(),
            args.json,
        )?;
        if !args.run {
            client.drain().await.ok();
            return Ok(());
        }
        dead.into_iter()
            .filter_map(|(row, recorded)| {
                let recorded = recorded?;
                dead_seqs.push(row.dead_seq);
                Some(recorded)
            })
            .collect()
    } else if let Some(since) = args.since {
        let start = std::time::SystemTime::now()
            .checked_sub(since)
            .context("--since reaches before the epoch")?;
        read_questions(
            &js,
            DeliverPolicy::ByStartTime {
                start_time: start.into(),
            },
            None,
        )
        .await?
    } else if let Some(from) = args.from_seq {
        if args.to_seq.is_some_and(|to| to < from) {
            bail!("--to-seq is before --from-seq");
        }
        read_questions(
            &js,
            DeliverPolicy::ByStartSequence {
                start_sequence: from.max(1),
            },
            args.to_seq,
        )
        .await?
    } else if let Some(id) = &args.id {
        let found = find_question(&js, id).await?;
        vec![found.with_context(|| format!("no question with id {id} in {}", names::QUESTIONS))?]
    } else {
        unreachable!("clap requires a selection")
    };

    if selected.is_empty() {
        eprintln!("nothing to replay");
        client.drain().await.ok();
        return Ok(());
    }
    if args.dry_run {
        print_selection(&selected, args.model.as_ref(), args.json)?;
        client.drain().await.ok();
        return Ok(());
    }
    let rows = replay_all(
        &client,
        &js,
        &results,
        &selected,
        args.model.as_ref(),
        args.timeout,
    )
    .await?;
    print_compared(&rows, args.json)?;
    if !dead_seqs.is_empty() {
        remove_replayed(&js, &rows, &dead_seqs).await?;
    }
    client.drain().await.ok();
    if rows.iter().any(|row| row.new.status != "done") {
        bail!("some replayed requests did not complete");
    }
    Ok(())
}

/// Reads `QUESTIONS` with an ordered consumer from `deliver`, up to `to_seq` or the
/// end of the stream as it was when the read started.
pub async fn read_questions(
    js: &jetstream::Context,
    deliver: DeliverPolicy,
    to_seq: Option<u64>,
) -> anyhow::Result<Vec<Recorded>> {
    let mut found = Vec::new();
    scan_questions(js, deliver, to_seq, |recorded| {
        found.push(recorded);
        true
    })
    .await?;
    Ok(found)
}

/// Finds one question by its request id: the `Nats-Msg-Id` and request id headers the
/// gateway sets, or the id in the payload.
pub async fn find_question(
    js: &jetstream::Context,
    id: &RequestId,
) -> anyhow::Result<Option<Recorded>> {
    let mut found = None;
    scan_questions(js, DeliverPolicy::All, None, |recorded| {
        if &recorded.request.id == id {
            found = Some(recorded);
            return false;
        }
        true
    })
    .await?;
    Ok(found)
}

/// Feeds each decodable question to `keep_going` until it says stop or the range ends.
async fn scan_questions(
    js: &jetstream::Context,
    deliver: DeliverPolicy,
    to_seq: Option<u64>,
    mut keep_going: impl FnMut(Recorded) -> bool,
) -> anyhow::Result<()> {
    let mut stream = js
        .get_stream(names::QUESTIONS)
        .await
        .context("looking up QUESTIONS")?;
    let last_seq = stream.info().await?.state.last_sequence;
    let end = to_seq.map_or(last_seq, |to| to.min(last_seq));
    if last_seq == 0 {
        return Ok(());
    }
    let consumer = stream
        .create_consumer(pull::OrderedConfig {
            deliver_policy: deliver,
            ..Default::default()
        })
        .await
        .context("creating an ordered consumer on QUESTIONS")?;
    let mut messages = consumer.messages().await?;
    while let Ok(Some(message)) = tokio::time::timeout(READ_IDLE, messages.next()).await {
        let message = message?;
        let info = message.info().map_err(|e| anyhow::anyhow!("{e}"))?;
        let (seq, pending) = (info.stream_sequence, info.pending);
        if seq > end {
            break;
        }
        match wire::decode::<ChatRequest>(&message.payload) {
            Ok(request) => {
                if !keep_going(Recorded { seq, request }) {
                    break;
                }
            }
            Err(err) => eprintln!("skipping QUESTIONS #{seq}: {err}"),
        }
        if seq >= end || pending == 0 {
            break;
        }
    }
    Ok(())
}

/// Every dead letter, with the question it points at when that is still stored.
pub async fn dead_letters(
    js: &jetstream::Context,
    results: &kv::Store,
) -> anyhow::Result<Vec<(DeadRow, Option<Recorded>)>> {
    let mut dead_stream = js
        .get_stream(names::DEAD)
        .await
        .context("looking up DEAD; run a cauce component once so that ensure creates it")?;
    let state = dead_stream.info().await?.state.clone();
    let mut rows = Vec::new();
    for dead_seq in state.first_sequence..=state.last_sequence {
        if state.messages == 0 {
            break;
        }
        let Ok(advisory) = dead_stream.get_raw_message(dead_seq).await else {
            continue; // deleted or aged out
        };
        let letter = match DeadLetter::parse(advisory.subject.as_str(), &advisory.payload) {
            Ok(letter) => letter,
            Err(err) => {
                eprintln!("skipping DEAD #{dead_seq}: {err}");
                continue;
            }
        };
        let recorded = original(js, &letter).await;
        let mut reason = letter.reason.to_string();
        if let (DeadReason::Terminated { reason: None }, Some(recorded)) =
            (&letter.reason, &recorded)
            && let Some(stored) = stored_result(results, &recorded.request.id).await
            && let Some(error) = stored.error
        {
            reason = format!("terminated: {}: {}", error.kind.as_str(), error.message);
        }
        let row = DeadRow {
            dead_seq,
            timestamp: letter.timestamp.clone(),
            stream: letter.stream.clone(),
            consumer: letter.consumer.clone(),
            stream_seq: letter.stream_seq,
            reason_kind: letter.reason.kind(),
            reason,
            request_id: recorded.as_ref().map(|r| r.request.id.to_string()),
            model: recorded.as_ref().map(|r| r.request.model.to_string()),
            question: recorded
                .as_ref()
                .and_then(|r| r.request.last_user_message())
                .map(|m| m.content.clone()),
        };
        rows.push((row, recorded));
    }
    Ok(rows)
}

/// Removes from `DEAD` the dead letters whose replay completed (`rows` and `dead_seqs`
/// are in the same order); the others stay listed.
async fn remove_replayed(
    js: &jetstream::Context,
    rows: &[Compared],
    dead_seqs: &[u64],
) -> anyhow::Result<()> {
    let dead_stream = js.get_stream(names::DEAD).await?;
    let mut removed = 0;
    for (row, &dead_seq) in rows.iter().zip(dead_seqs) {
        if row.new.status != ResultStatus::Done.as_str() {
            continue;
        }
        dead_stream
            .delete_message(dead_seq)
            .await
            .with_context(|| format!("removing the replayed dead letter DEAD #{dead_seq}"))?;
        removed += 1;
    }
    eprintln!(
        "removed {removed} replayed dead letter(s) from {}; {} left",
        names::DEAD,
        dead_seqs.len() - removed
    );
    Ok(())
}

/// The question a dead letter points at, read back by sequence from its stream.
async fn original(js: &jetstream::Context, letter: &DeadLetter) -> Option<Recorded> {
    let stream = js.get_stream_no_info(&letter.stream).await.ok()?;
    let message = stream.get_raw_message(letter.stream_seq).await.ok()?;
    let request = if letter.stream == names::PROMPTS {
        wire::decode::<PromptJob>(&message.payload).ok()?.request
    } else {
        wire::decode::<ChatRequest>(&message.payload).ok()?
    };
    Some(Recorded {
        seq: letter.stream_seq,
        request,
    })
}

async fn stored_result(results: &kv::Store, id: &RequestId) -> Option<StoredResult> {
    let payload = results.get(names::request_key(id)).await.ok()??;
    wire::decode_compressed(&payload).ok()
}

fn answer_of(stored: &StoredResult) -> Answer {
    Answer {
        status: stored.status.as_str().into(),
        finish_reason: stored.finish_reason.map(|f| f.as_str().into()),
        chars: stored.text.chars().count(),
        text: stored.text.clone(),
        error: stored
            .error
            .as_ref()
            .map(|e| format!("{}: {}", e.kind.as_str(), e.message)),
    }
}

/// Publishes every question again and waits for all the answers.
pub async fn replay_all(
    client: &async_nats::Client,
    js: &jetstream::Context,
    results: &kv::Store,
    selected: &[Recorded],
    model: Option<&ModelName>,
    timeout: Duration,
) -> anyhow::Result<Vec<Compared>> {
    let gateway = replay_gateway_id()?;
    let mut waiting = Vec::with_capacity(selected.len());
    for recorded in selected {
        let request = replay_request(&recorded.request, &gateway, model, timeout);
        // subscribed before publishing: no event can come before the subscription
        let events = client
            .subscribe(names::events_subject(&request.gateway, &request.id))
            .await?;
        let mut headers = names::request_headers(&request.gateway, &request.id);
        // a replay re-runs the model: a cached answer would only repeat the original
        headers.insert(names::CACHE_HEADER, "off");
        js.publish_with_headers(names::QUESTIONS_SUBJECT, headers, wire::encode(&request)?)
            .await
            .context("publishing a replayed question")?
            .await
            .context("JetStream did not take a replayed question")?;
        eprintln!(
            "replaying #{} {} as {}",
            recorded.seq, recorded.request.id, request.id
        );
        waiting.push((recorded, request, events));
    }

    let deadline = tokio::time::Instant::now() + timeout;
    let outcomes = futures::future::join_all(waiting.into_iter().map(
        |(recorded, request, events)| async move {
            let new = collect(events, results, &request.id, deadline).await;
            (recorded, request, new)
        },
    ))
    .await;

    let mut rows = Vec::with_capacity(outcomes.len());
    for (recorded, request, new) in outcomes {
        let old = stored_result(results, &recorded.request.id)
            .await
            .map(|s| answer_of(&s));
        let identical = old.as_ref().is_some_and(|old| {
            old.status == ResultStatus::Done.as_str()
                && new.status == ResultStatus::Done.as_str()
                && old.text == new.text
        });
        rows.push(Compared {
            seq: recorded.seq,
            original_id: recorded.request.id.to_string(),
            replay_id: request.id.to_string(),
            model: request.model.to_string(),
            old,
            new,
            identical,
        });
    }
    Ok(rows)
}

/// The new request: a new id on the replayer's reply subjects, linked to the original.
fn replay_request(
    original: &ChatRequest,
    gateway: &GatewayId,
    model: Option<&ModelName>,
    timeout: Duration,
) -> ChatRequest {
    let now = wire::now_ms();
    ChatRequest {
        id: RequestId::generate(),
        gateway: gateway.clone(),
        model: model.cloned().unwrap_or_else(|| original.model.clone()),
        created_at_ms: now,
        deadline_ms: now + u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX / 2),
        replay_of: Some(original.id.clone()),
        ..original.clone()
    }
}

fn replay_gateway_id() -> anyhow::Result<GatewayId> {
    let suffix: String = RequestId::generate().as_str().chars().take(8).collect();
    Ok(GatewayId::parse(format!("replay-{suffix}"))?)
}

/// Follows one replayed request to its end under the relay rules: the answer, or the
/// stored result when the worker wrote one.
async fn collect(
    mut events: async_nats::Subscriber,
    results: &kv::Store,
    id: &RequestId,
    deadline: tokio::time::Instant,
) -> Answer {
    let mut relay = Relay::new();
    let mut answer = loop {
        let message = match tokio::time::timeout_at(deadline, events.next()).await {
            Ok(Some(message)) => message,
            Ok(None) | Err(_) => {
                let text = relay.take_text();
                break Answer {
                    status: "timed_out".into(),
                    chars: text.chars().count(),
                    text,
                    ..Answer::default()
                };
            }
        };
        let Ok(event) = wire::decode::<wire::Event>(&message.payload) else {
            continue;
        };
        let mut output = relay.accept(event);
        if let Some(Output::Behind(event)) = output {
            if let Some(stored) = stored_result(results, id).await {
                relay.recover(&stored.text);
            }
            output = relay.accept(*event);
        }
        match output {
            Some(Output::Done(finish) | Output::Recover(finish)) => {
                let text = relay.take_text();
                break Answer {
                    status: ResultStatus::Done.as_str().into(),
                    finish_reason: Some(finish.finish_reason.as_str().into()),
                    chars: text.chars().count(),
                    text,
                    error: None,
                };
            }
            Some(Output::Failed { kind, message }) => {
                let text = relay.take_text();
                break Answer {
                    status: ResultStatus::Failed.as_str().into(),
                    chars: text.chars().count(),
                    text,
                    error: Some(format!("{}: {message}", kind.as_str())),
                    ..Answer::default()
                };
            }
            _ => {}
        }
    };
    let _ = events.unsubscribe().await;
    if let Some(stored) = stored_result(results, id).await
        && stored.status.is_final()
    {
        answer = answer_of(&stored);
    }
    answer
}

fn print_selection(
    selected: &[Recorded],
    model: Option<&ModelName>,
    json: bool,
) -> anyhow::Result<()> {
    if json {
        for recorded in selected {
            println!(
                "{}",
                serde_json::json!({
                    "seq": recorded.seq,
                    "id": recorded.request.id,
                    "model": model.unwrap_or(&recorded.request.model),
                    "question": recorded.request.last_user_message().map(|m| &m.content),
                })
            );
        }
        return Ok(());
    }
    println!("{:>7}  {:<24} {:<20} question", "seq", "id", "model");
    for recorded in selected {
        println!(
            "{:>7}  {:<24} {:<20} {}",
            recorded.seq,
            recorded.request.id,
            model.unwrap_or(&recorded.request.model),
            clip(
                recorded
                    .request
                    .last_user_message()
                    .map_or("", |m| m.content.as_str()),
                60
            )
        );
    }
    println!("{} question(s) would be replayed", selected.len());
    Ok(())
}

fn print_dead(rows: &[&DeadRow], json: bool) -> anyhow::Result<()> {
    if json {
        for row in rows {
            println!("{}", serde_json::to_string(row)?);
        }
        return Ok(());
    }
    if rows.is_empty() {
        println!("no dead letters");
        return Ok(());
    }
    println!(
        "{:>5}  {:<20} {:<28} {:>6}  {:<24} reason",
        "dead", "when", "stream/consumer", "seq", "request"
    );
    for row in rows {
        println!(
            "{:>5}  {:<20} {:<28} {:>6}  {:<24} {}",
            row.dead_seq,
            clip(&row.timestamp, 20),
            format!("{}/{}", row.stream, row.consumer),
            row.stream_seq,
            row.request_id.as_deref().unwrap_or("(gone)"),
            row.reason
        );
    }
    println!(
        "{} dead letter(s); once the cause is fixed, `cauce replay --dead --run` replays them and removes each one that completes",
        rows.len()
    );
    Ok(())
}

fn print_compared(rows: &[Compared], json: bool) -> anyhow::Result<()> {
    if json {
        for row in rows {
            println!("{}", serde_json::to_string(row)?);
        }
        return Ok(());
    }
    println!(
        "{:>6}  {:<24} {:<24} {:<16} {:>7} {:>7}  {:<10} {:<10} same",
        "seq", "original", "replay", "model", "old len", "new len", "old end", "new end"
    );
    let ending = |answer: &Answer| {
        answer
            .finish_reason
            .clone()
            .unwrap_or_else(|| answer.status.clone())
    };
    for row in rows {
        println!(
            "{:>6}  {:<24} {:<24} {:<16} {:>7} {:>7}  {:<10} {:<10} {}",
            row.seq,
            row.original_id,
            row.replay_id,
            clip(&row.model, 16),
            row.old.as_ref().map_or("-".into(), |a| a.chars.to_string()),
            row.new.chars,
            row.old.as_ref().map_or("-".into(), ending),
            ending(&row.new),
            if row.identical { "yes" } else { "no" }
        );
    }
    let identical = rows.iter().filter(|r| r.identical).count();
    println!(
        "{} replayed, {identical} identical, {} different or missing",
        rows.len(),
        rows.len() - identical
    );
    Ok(())
}

fn clip(text: &str, max_chars: usize) -> String {
    let one_line = text.replace('\n', " ");
    if one_line.chars().count() <= max_chars {
        return one_line;
    }
    let mut clipped: String = one_line.chars().take(max_chars.saturating_sub(1)).collect();
    clipped.push('…');
    clipped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replay_is_a_new_request_linked_to_the_original() {
        let original = ChatRequest {
            id: RequestId::parse("orig1").unwrap(),
            gateway: GatewayId::parse("gw-a").unwrap(),
            model: ModelName::parse("m1").unwrap(),
            messages: vec![],
            sampling: wire::Sampling {
                temperature: Some(0.0),
                ..Default::default()
            },
            retrieval: Default::default(),
            created_at_ms: 1,
            deadline_ms: 2,
            replay_of: None,
        };
        let gateway = replay_gateway_id().unwrap();
        let other = ModelName::parse("m2").unwrap();
        let replay = replay_request(&original, &gateway, Some(&other), Duration::from_secs(60));
        assert_ne!(replay.id, original.id);
        assert_eq!(replay.replay_of, Some(original.id.clone()));
        assert_eq!(replay.model, other);
        assert_eq!(replay.sampling, original.sampling);
        assert!(replay.gateway.as_str().starts_with("replay-"));
        assert!(replay.deadline_ms > replay.created_at_ms);
        assert_eq!(clip("a\nbcdef", 4), "a b…");
    }
}
