//! `cauce status`: one screen an operator reads.
//!
//! Everything comes from what any client may ask, no `$SYS` account needed: the
//! connection's server info (and the cluster peers it lists), the JetStream account
//! info, stream and consumer info, and the NATS service API where every worker and
//! gateway announces itself with live counters. Tokens per second are the difference
//! of two samples of an inference worker's `tokens_generated` counter, a short
//! interval apart (`--sample`), or between two refreshes with `--watch`.
//!
//! `--json` prints one [`Snapshot`] per refresh as a JSON line, for scripts.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use anyhow::Context;
use cauce_nats::async_nats::jetstream;
use cauce_nats::discovery::{self, Instance, META_GATEWAY, META_MODEL, META_SLOTS};
use cauce_nats::metrics::Metrics;
use cauce_nats::names::WorkerKind;
use cauce_nats::{async_nats, connect};
use clap::Args;
use futures::TryStreamExt;
use serde::Serialize;

use crate::cli::NatsArgs;

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    nats: NatsArgs,
    /// Refresh the screen until Ctrl-C
    #[arg(long, env = "CAUCE_STATUS_WATCH")]
    watch: bool,
    /// Time between refreshes with --watch
    #[arg(long, env = "CAUCE_STATUS_INTERVAL", default_value = "2s", value_parser = humantime::parse_duration)]
    interval: Duration,
    /// Print JSON (one object per refresh) instead of the screen
    #[arg(long, env = "CAUCE_STATUS_JSON")]
    json: bool,
    /// Interval between the two samples tokens/s is measured over (without --watch)
    #[arg(long, env = "CAUCE_STATUS_SAMPLE", default_value = "1s", value_parser = humantime::parse_duration)]
    sample: Duration,
    /// How long to wait for workers and gateways to answer discovery
    #[arg(long, env = "CAUCE_STATUS_DISCOVERY_WAIT", default_value = "500ms", value_parser = humantime::parse_duration)]
    discovery_wait: Duration,
}

/// Everything `cauce status` shows, at one moment.
#[derive(Debug, Serialize)]
pub struct Snapshot {
    pub taken_at_ms: u64,
    pub servers: Vec<ServerView>,
    pub account: Option<AccountView>,
    pub streams: Vec<StreamView>,
    pub workers: Vec<WorkerView>,
    pub gateways: Vec<GatewayView>,
    /// Each `cauce up` and the children it supervises.
    pub launchers: Vec<LauncherView>,
}

#[derive(Debug, Serialize)]
pub struct LauncherView {
    pub id: String,
    pub children: Vec<ChildView>,
}

/// One child of a `cauce up`, as it announces it.
#[derive(Debug, Serialize, serde::Deserialize)]
pub struct ChildView {
    pub name: String,
    /// Absent while it is being restarted.
    pub pid: Option<u32>,
    pub restarts: u32,
    pub last_exit: Option<String>,
    pub started_at_ms: Option<u64>,
}

#[derive(Debug, Serialize)]
pub struct ServerView {
    pub name: String,
    pub address: String,
    pub version: String,
    /// `true` for the server this client is connected to; the others are the cluster
    /// peers it advertises.
    pub connected: bool,
    pub jetstream: bool,
}

#[derive(Debug, Serialize)]
pub struct AccountView {
    pub memory_bytes: u64,
    pub storage_bytes: u64,
    pub streams: usize,
    pub consumers: usize,
}

#[derive(Debug, Serialize)]
pub struct StreamView {
    pub name: String,
    pub messages: u64,
    pub bytes: u64,
    pub first_seq: u64,
    pub last_seq: u64,
    /// Milliseconds since the epoch; absent for an empty stream.
    pub first_ms: Option<u64>,
    pub last_ms: Option<u64>,
    pub replicas: usize,
    pub leader: Option<String>,
    /// Replicas that are offline or not current.
    pub lagging_replicas: Vec<String>,
    pub consumers: Vec<ConsumerView>,
}

#[derive(Debug, Serialize)]
pub struct ConsumerView {
    pub name: String,
    /// Messages not delivered yet.
    pub pending: u64,
    /// Delivered, not acked yet: in flight.
    pub ack_pending: usize,
    pub redelivered: usize,
    /// Pull requests waiting: idle workers.
    pub waiting: usize,
}

#[derive(Debug, Serialize)]
pub struct WorkerView {
    pub kind: &'static str,
    pub id: String,
    pub model: Option<String>,
    pub slots: Option<u64>,
    pub busy_slots: Option<u64>,
    pub tokens_generated: Option<u64>,
    pub tokens_per_s: Option<f64>,
    pub jobs_finished: Option<u64>,
    /// Retrieval workers: searches served.
    pub searches: Option<u64>,
    /// Retrieval workers: why the index cannot follow `DOCS`, when it cannot.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub index_error: Option<String>,
    /// What the worker's Prometheus metrics say (see `cauce_nats::metrics`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics: Option<Metrics>,
}

#[derive(Debug, Serialize)]
pub struct GatewayView {
    pub id: String,
    pub gateway: Option<String>,
    pub streams_in_flight: Option<u64>,
}

pub async fn run(args: StatusArgs) -> anyhow::Result<()> {
    let client = connect(
        &args
            .nats
            .connect_options(cauce_nats::permissions::Role::Operator, "cauce-status")?,
    )
    .await?;
    let js = jetstream::new(client.clone());
    let mut previous = None;
    if !args.watch {
        // a first sample for the rates, then the one shown
        previous = Some(sample_tokens(&client, args.discovery_wait).await?);
        tokio::time::sleep(args.sample).await;
    }
    loop {
        let snapshot = take(&client, &js, args.discovery_wait, previous.as_ref()).await?;
        previous = Some(TokenSample::from_snapshot(&snapshot));
        if args.json {
            println!("{}", serde_json::to_string(&snapshot)?);
        } else {
            let screen = render(&snapshot);
            if args.watch {
                // clear the screen and go home
                print!("\x1b[2J\x1b[H");
            }
            print!("{screen}");
        }
        if !args.watch {
            break;
        }
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = tokio::time::sleep(args.interval) => {}
        }
    }
    client.drain().await.ok();
    Ok(())
}

/// Tokens generated per inference worker at one instant.
pub struct TokenSample {
    at: Instant,
    tokens: HashMap<String, u64>,
}

impl TokenSample {
    fn from_snapshot(snapshot: &Snapshot) -> Self {
        Self {
            at: Instant::now(),
            tokens: snapshot
                .workers
                .iter()
                .filter_map(|w| Some((w.id.clone(), w.tokens_generated?)))
                .collect(),
        }
    }
}

async fn sample_tokens(client: &async_nats::Client, wait: Duration) -> anyhow::Result<TokenSample> {
    let at = Instant::now();
    let workers = discovery::discover(client, WorkerKind::Inference, wait).await?;
    Ok(TokenSample {
        at,
        tokens: workers
            .iter()
            .filter_map(|w| Some((w.info.id.clone(), stat(w, "tokens_generated")?)))
            .collect(),
    })
}

/// Reads the whole picture once; `previous` gives the tokens/s baseline.
pub async fn take(
    client: &async_nats::Client,
    js: &jetstream::Context,
    discovery_wait: Duration,
    previous: Option<&TokenSample>,
) -> anyhow::Result<Snapshot> {
    let servers = servers(client, js).await;
    let account = js.query_account().await.ok().map(|a| AccountView {
        memory_bytes: a.memory,
        storage_bytes: a.storage,
        streams: a.streams,
        consumers: a.consumers,
    });
    let streams = streams(js).await?;
    let (retrieval, inference, gateways, launchers) = tokio::try_join!(
        discovery::discover(client, WorkerKind::Retrieval, discovery_wait),
        discovery::discover(client, WorkerKind::Inference, discovery_wait),
        discovery::discover(client, WorkerKind::Gateway, discovery_wait),
        discovery::discover(client, WorkerKind::Launcher, discovery_wait),
    )?;
    let now = Instant::now();
    let mut workers: Vec<WorkerView> = retrieval
        .iter()
        .map(|w| worker_view("retrieval", w))
        .collect();
    for instance in &inference {
        let mut view = worker_view("inference", instance);
        if let (Some(previous), Some(tokens)) = (previous, view.tokens_generated)
            && let Some(before) = previous.tokens.get(&view.id)
        {
            let elapsed = now.duration_since(previous.at).as_secs_f64();
            if elapsed > 0.0 {
                view.tokens_per_s = Some(tokens.saturating_sub(*before) as f64 / elapsed);
            }
        }
        workers.push(view);
    }
    workers.sort_by(|a, b| (a.kind, &a.model, &a.id).cmp(&(b.kind, &b.model, &b.id)));
    let mut gateways: Vec<GatewayView> = gateways
        .iter()
        .map(|g| GatewayView {
            id: g.info.id.clone(),
            gateway: g.metadata(META_GATEWAY).map(String::from),
            streams_in_flight: stat(g, "streams_in_flight"),
        })
        .collect();
    gateways.sort_by(|a, b| a.gateway.cmp(&b.gateway));
    let launchers = launchers.iter().map(launcher_view).collect();
    Ok(Snapshot {
        taken_at_ms: cauce_nats::wire::now_ms(),
        servers,
        account,
        streams,
        workers,
        gateways,
        launchers,
    })
}

fn launcher_view(instance: &Instance) -> LauncherView {
    let children = instance
        .stats_data()
        .and_then(|data| data.get("children"))
        .and_then(|children| serde_json::from_value(children.clone()).ok())
        .unwrap_or_default();
    LauncherView {
        id: instance.info.id.clone(),
        children,
    }
}

/// The figures of a worker's metrics worth a glance, on one line.
fn metrics_line(m: &Metrics) -> Option<String> {
    let counter = |name: &str| m.counters.get(name).copied().unwrap_or(0.0);
    let gauge = |name: &str| m.gauges.get(name).copied().unwrap_or(0.0);
    let bound = |name: &str, share: f64, scale: f64| {
        m.histograms
            .get(name)
            .and_then(|h| h.quantile(share))
            .map_or("-".into(), |b| format!("≤{}", b * scale))
    };
    let share = |part: f64, whole: f64| {
        if whole > 0.0 {
            100.0 * part / whole
        } else {
            0.0
        }
    };
    if m.gauges.contains_key("cauce_inference_running_sequences") {
        let prompt = counter("cauce_inference_prompt_tokens_total");
        return Some(format!(
            "prompt tokens {prompt} ({:.0}% cached), ttft p50 {} s, waiting {}, kv {:.0}%, host cache {:.1} MiB ({:.0}% hits)",
            share(counter("cauce_inference_cached_tokens_total"), prompt),
            bound("cauce_inference_time_to_first_token_seconds", 0.5, 1.0),
            gauge("cauce_inference_waiting_sequences"),
            100.0 * gauge("cauce_inference_kv_cache_usage_ratio"),
            gauge("cauce_inference_host_cache_bytes") / f64::from(1 << 20),
            share(
                counter("cauce_inference_host_cache_hits_total"),
                counter("cauce_inference_host_cache_lookups_total")
            ),
        ));
    }
    m.gauges
        .contains_key("cauce_retrieval_index_passages")
        .then(|| {
            format!(
                "documents {}, passages {}, {} records behind DOCS, search p99 {} ms",
                gauge("cauce_retrieval_index_documents"),
                gauge("cauce_retrieval_index_passages"),
                gauge("cauce_retrieval_follower_lag_records"),
                bound("cauce_retrieval_search_time_seconds", 0.99, 1000.0),
            )
        })
}

/// One line per model served by more than one inference worker: the prompt tokens and
/// host-cache figures of all of them together.
fn inference_totals(workers: &[WorkerView]) -> Vec<String> {
    let mut by_model: BTreeMap<&str, Vec<&Metrics>> = BTreeMap::new();
    for worker in workers.iter().filter(|w| w.kind == "inference") {
        if let Some(metrics) = &worker.metrics {
            let model = worker.model.as_deref().unwrap_or("-");
            by_model.entry(model).or_default().push(metrics);
        }
    }
    by_model
        .into_iter()
        .filter(|(_, all)| all.len() > 1)
        .map(|(model, all)| {
            let sum = |name: &str, gauge: bool| -> f64 {
                let of = |m: &Metrics| {
                    let values = if gauge { &m.gauges } else { &m.counters };
                    values.get(name).copied().unwrap_or(0.0)
                };
                all.iter().map(|m| of(m)).sum()
            };
            let share = |part: f64, whole: f64| if whole > 0.0 { 100.0 * part / whole } else { 0.0 };
            let prompt = sum("cauce_inference_prompt_tokens_total", false);
            format!(
                "{model}, {} workers together: prompt tokens {prompt} ({:.0}% cached), host cache {:.1} MiB ({:.0}% hits of {} lookups)",
                all.len(),
                share(sum("cauce_inference_cached_tokens_total", false), prompt),
                sum("cauce_inference_host_cache_bytes", true) / f64::from(1 << 20),
                share(
                    sum("cauce_inference_host_cache_hits_total", false),
                    sum("cauce_inference_host_cache_lookups_total", false)
                ),
                sum("cauce_inference_host_cache_lookups_total", false),
            )
        })
        .collect()
}

fn stat(instance: &Instance, key: &str) -> Option<u64> {
    instance.stats_data()?.get(key)?.as_u64()
}

fn worker_view(kind: &'static str, instance: &Instance) -> WorkerView {
    WorkerView {
        kind,
        id: instance.info.id.clone(),
        model: instance.metadata(META_MODEL).map(String::from),
        slots: instance
            .metadata(META_SLOTS)
            .and_then(|s| s.parse().ok())
            .or_else(|| stat(instance, "slots")),
        busy_slots: stat(instance, "busy_slots"),
        tokens_generated: stat(instance, "tokens_generated"),
        tokens_per_s: None,
        jobs_finished: stat(instance, "jobs_finished"),
        searches: stat(instance, "searches"),
        index_error: instance
            .stats_data()
            .and_then(|data| data.get("follower_error"))
            .and_then(|error| error.as_str())
            .map(String::from),
        metrics: instance.stats_data().and_then(Metrics::from_stats),
    }
}

/// The server this client talks to, and the cluster peers it advertises; a stream's
/// replica list names the peers of a JetStream cluster.
async fn servers(client: &async_nats::Client, js: &jetstream::Context) -> Vec<ServerView> {
    let info = client.server_info();
    let mut servers = vec![ServerView {
        name: info.server_name.clone(),
        address: format!("{}:{}", info.host, info.port),
        version: info.version.clone(),
        connected: true,
        jetstream: js.query_account().await.is_ok(),
    }];
    for url in &info.connect_urls {
        if url != &servers[0].address {
            servers.push(ServerView {
                name: String::new(),
                address: url.clone(),
                version: String::new(),
                connected: false,
                jetstream: false,
            });
        }
    }
    servers
}

async fn streams(js: &jetstream::Context) -> anyhow::Result<Vec<StreamView>> {
    let infos: Vec<jetstream::stream::Info> = js
        .streams()
        .try_collect()
        .await
        .context("listing streams")?;
    let mut views = Vec::with_capacity(infos.len());
    for info in infos {
        let stream = js.get_stream_no_info(&info.config.name).await?;
        let mut consumers: Vec<ConsumerView> = stream
            .consumers()
            .map_ok(|c| ConsumerView {
                name: c.name,
                pending: c.num_pending,
                ack_pending: c.num_ack_pending,
                redelivered: c.num_redelivered,
                waiting: c.num_waiting,
            })
            .try_collect()
            .await
            .with_context(|| format!("listing consumers of {}", info.config.name))?;
        consumers.sort_by(|a, b| a.name.cmp(&b.name));
        let state = &info.state;
        let (first_ms, last_ms) = if state.messages > 0 {
            (
                Some(epoch_ms(state.first_timestamp)),
                Some(epoch_ms(state.last_timestamp)),
            )
        } else {
            (None, None)
        };
        let cluster = info.cluster.clone().unwrap_or_default();
        views.push(StreamView {
            name: info.config.name.clone(),
            messages: state.messages,
            bytes: state.bytes,
            first_seq: state.first_sequence,
            last_seq: state.last_sequence,
            first_ms,
            last_ms,
            replicas: info.config.num_replicas,
            leader: cluster.leader.clone(),
            lagging_replicas: cluster
                .replicas
                .iter()
                .filter(|p| p.offline || !p.current)
                .map(|p| p.name.clone())
                .collect(),
            consumers,
        });
    }
    views.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(views)
}

pub fn epoch_ms(at: async_nats::datetime::DateTime) -> u64 {
    u64::try_from(at.unix_timestamp_nanos() / 1_000_000).unwrap_or(0)
}

/// The screen: plain text, fixed-width columns.
pub fn render(snapshot: &Snapshot) -> String {
    let now = snapshot.taken_at_ms;
    let mut out = String::new();
    let _ = writeln!(out, "NATS");
    for server in &snapshot.servers {
        let role = if server.connected {
            "connected"
        } else {
            "cluster peer"
        };
        let _ = writeln!(
            out,
            "  {:<24} {:<22} {:<8} {}{}",
            if server.name.is_empty() {
                "-"
            } else {
                &server.name
            },
            server.address,
            if server.version.is_empty() {
                "-"
            } else {
                &server.version
            },
            role,
            if server.jetstream { ", jetstream" } else { "" }
        );
    }
    if let Some(account) = &snapshot.account {
        let _ = writeln!(
            out,
            "  account: {} streams, {} consumers, {} stored, {} in memory",
            account.streams,
            account.consumers,
            bytes(account.storage_bytes),
            bytes(account.memory_bytes)
        );
    }

    let _ = writeln!(out, "\nSTREAMS");
    let _ = writeln!(
        out,
        "  {:<20} {:>9} {:>10} {:>10} {:>10} {:>3}  leader",
        "name", "messages", "bytes", "oldest", "newest", "r"
    );
    for stream in &snapshot.streams {
        let _ = writeln!(
            out,
            "  {:<20} {:>9} {:>10} {:>10} {:>10} {:>3}  {}{}",
            stream.name,
            stream.messages,
            bytes(stream.bytes),
            age(now, stream.first_ms),
            age(now, stream.last_ms),
            stream.replicas,
            stream.leader.as_deref().unwrap_or("-"),
            if stream.lagging_replicas.is_empty() {
                String::new()
            } else {
                format!(" (lagging: {})", stream.lagging_replicas.join(", "))
            }
        );
    }

    let _ = writeln!(out, "\nCONSUMERS");
    let _ = writeln!(
        out,
        "  {:<36} {:>9} {:>9} {:>11} {:>8}",
        "stream/consumer", "pending", "in flight", "redelivered", "waiting"
    );
    for stream in &snapshot.streams {
        for consumer in &stream.consumers {
            let _ = writeln!(
                out,
                "  {:<36} {:>9} {:>9} {:>11} {:>8}",
                format!("{}/{}", stream.name, consumer.name),
                consumer.pending,
                consumer.ack_pending,
                consumer.redelivered,
                consumer.waiting
            );
        }
    }

    let _ = writeln!(out, "\nWORKERS");
    let _ = writeln!(
        out,
        "  {:<10} {:<24} {:<24} {:>10} {:>9} {:>8} {:>10}",
        "kind", "id", "model", "slots used", "tokens/s", "jobs", "searches"
    );
    if snapshot.workers.is_empty() {
        let _ = writeln!(out, "  (none answered)");
    }
    for worker in &snapshot.workers {
        let slots = match (worker.busy_slots, worker.slots) {
            (Some(busy), Some(slots)) => format!("{busy}/{slots}"),
            _ => "-".into(),
        };
        let _ = writeln!(
            out,
            "  {:<10} {:<24} {:<24} {:>10} {:>9} {:>8} {:>10}",
            worker.kind,
            worker.id,
            worker.model.as_deref().unwrap_or("-"),
            slots,
            worker
                .tokens_per_s
                .map_or("-".into(), |rate| format!("{rate:.1}")),
            worker.jobs_finished.map_or("-".into(), |n| n.to_string()),
            worker.searches.map_or("-".into(), |n| n.to_string()),
        );
        if let Some(line) = worker.metrics.as_ref().and_then(metrics_line) {
            let _ = writeln!(out, "    {line}");
        }
        if let Some(error) = &worker.index_error {
            let _ = writeln!(out, "    index not updated: {error}");
        }
    }

    for line in inference_totals(&snapshot.workers) {
        let _ = writeln!(out, "  {line}");
    }

    let _ = writeln!(out, "\nGATEWAYS");
    let _ = writeln!(
        out,
        "  {:<24} {:<24} {:>17}",
        "gateway", "id", "streams in flight"
    );
    if snapshot.gateways.is_empty() {
        let _ = writeln!(out, "  (none answered)");
    }
    for gateway in &snapshot.gateways {
        let _ = writeln!(
            out,
            "  {:<24} {:<24} {:>17}",
            gateway.gateway.as_deref().unwrap_or("-"),
            gateway.id,
            gateway
                .streams_in_flight
                .map_or("-".into(), |n| n.to_string())
        );
    }
    render_launchers(&mut out, snapshot);
    out
}

fn render_launchers(out: &mut String, snapshot: &Snapshot) {
    for launcher in &snapshot.launchers {
        let _ = writeln!(out, "\nCAUCE UP {}", launcher.id);
        let _ = writeln!(
            out,
            "  {:<10} {:>8} {:>6} {:>8}  last exit",
            "child", "pid", "up", "restarts"
        );
        for child in &launcher.children {
            let _ = writeln!(
                out,
                "  {:<10} {:>8} {:>6} {:>8}  {}",
                child.name,
                child.pid.map_or("-".into(), |pid| pid.to_string()),
                child.pid.map_or("-".into(), |_| age(
                    snapshot.taken_at_ms,
                    child.started_at_ms
                )),
                child.restarts,
                child.last_exit.as_deref().unwrap_or("-"),
            );
        }
    }
}

fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// How long ago `at_ms` was, rounded to a readable unit.
fn age(now_ms: u64, at_ms: Option<u64>) -> String {
    let Some(at_ms) = at_ms else {
        return "-".into();
    };
    let secs = now_ms.saturating_sub(at_ms) / 1000;
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m", secs / 60),
        3600..86400 => format!("{}h", secs / 3600),
        _ => format!("{}d", secs / 86400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workers_of_one_model_are_added_up() {
        let worker = |id: &str, hits: f64, lookups: f64| {
            let mut metrics = Metrics::default();
            metrics
                .counter("cauce_inference_prompt_tokens_total", 100.0)
                .counter("cauce_inference_cached_tokens_total", 50.0)
                .counter("cauce_inference_host_cache_hits_total", hits)
                .counter("cauce_inference_host_cache_lookups_total", lookups)
                .gauge("cauce_inference_host_cache_bytes", f64::from(1 << 20));
            WorkerView {
                kind: "inference",
                id: id.into(),
                model: Some("m".into()),
                slots: None,
                busy_slots: None,
                tokens_generated: None,
                tokens_per_s: None,
                jobs_finished: None,
                searches: None,
                index_error: None,
                metrics: Some(metrics),
            }
        };
        let lines = inference_totals(&[worker("a", 1.0, 4.0), worker("b", 3.0, 4.0)]);
        assert_eq!(
            lines,
            [
                "m, 2 workers together: prompt tokens 200 (50% cached), host cache 2.0 MiB (50% hits of 8 lookups)"
            ]
        );
        assert!(inference_totals(&[worker("a", 1.0, 4.0)]).is_empty());
    }

    #[test]
    fn sizes_and_ages_read_well() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(3 * 1024 * 1024), "3.0 MiB");
        assert_eq!(age(10_000, Some(4_000)), "6s");
        assert_eq!(age(7_200_000, Some(0)), "2h");
        assert_eq!(age(1, None), "-");
    }
}
