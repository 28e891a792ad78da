//! The response cache from the command line: the flags that turn it on or off for a
//! retrieval worker, and `cauce cache stats|clear`.

use std::time::Duration;

use anyhow::Context;
use cauce_nats::async_nats::jetstream;
use cauce_nats::cache::ResponseCache;
use cauce_nats::wire::{self, CacheValue};
use cauce_nats::{Need, connect, names};
use clap::{Args, Subcommand};

use crate::cli::{LimitsArgs, NatsArgs};

/// Response cache options of a retrieval worker.
#[derive(Debug, Clone, Args)]
pub struct CacheArgs {
    /// Serve and store deterministic answers (temperature 0 or a seed) in the cache
    #[arg(long = "cache", env = "CAUCE_CACHE", default_value_t = true, action = clap::ArgAction::Set)]
    pub enabled: bool,
    /// How long an identical request waits for the answer another is generating
    #[arg(long, env = "CAUCE_CACHE_WAIT", default_value = "60s", value_parser = humantime::parse_duration)]
    pub cache_wait: Duration,
}

impl CacheArgs {
    pub fn apply(&self, config: &mut cauce_retrieval::WorkerConfig) {
        config.cache = self.enabled;
        config.cache_wait = self.cache_wait;
    }
}

#[derive(Debug, Args)]
pub struct CacheCommand {
    #[command(subcommand)]
    action: CacheAction,
    #[command(flatten)]
    nats: NatsArgs,
    #[command(flatten)]
    limits: LimitsArgs,
}

#[derive(Debug, Subcommand)]
enum CacheAction {
    /// Entries, size, compression ratio and time to live of the cache
    Stats,
    /// Remove every cached answer
    Clear,
}

pub async fn run(command: CacheCommand) -> anyhow::Result<()> {
    let client = connect(
        &command
            .nats
            .connect_options(cauce_nats::permissions::Role::Operator, "cauce-cache")?,
    )
    .await?;
    let js = jetstream::new(client.clone());
    command.limits.check(&js, Need::CACHE).await?;
    let cache = ResponseCache::open(&js).await?;
    match command.action {
        CacheAction::Stats => stats(&js, &cache).await?,
        CacheAction::Clear => {
            let removed = cache.clear().await.context("clearing the cache")?;
            println!("removed {removed} cached answers");
        }
    }
    client.drain().await.ok();
    Ok(())
}

async fn stats(js: &jetstream::Context, cache: &ResponseCache) -> anyhow::Result<()> {
    let mut stream = js
        .get_stream(names::bucket_stream(names::CACHE_BUCKET))
        .await?;
    let info = stream.info().await?.clone();
    let (mut answers, mut pending, mut corrupt, mut stored, mut json) =
        (0u64, 0u64, 0u64, 0u64, 0u64);
    for answer in cache.answers().await.context("listing cache keys")? {
        match &answer.value {
            Ok(entry @ CacheValue::Entry(_)) => {
                answers += 1;
                stored += answer.stored_bytes as u64;
                json += wire::encode(entry).map(|b| b.len() as u64).unwrap_or(0);
            }
            Ok(CacheValue::Pending { .. }) => pending += 1,
            Err(_) => corrupt += 1,
        }
    }
    let ratio = if stored > 0 {
        json as f64 / stored as f64
    } else {
        0.0
    };
    println!("bucket        {}", names::CACHE_BUCKET);
    println!("answers       {answers}");
    println!("generating    {pending}");
    println!("unreadable    {corrupt}");
    println!("stored bytes  {stored} (zstd), {json} as JSON, ratio {ratio:.2}");
    println!(
        "bucket bytes  {} of {} allowed",
        info.state.bytes, info.config.max_bytes
    );
    println!(
        "time to live  {}",
        humantime::format_duration(info.config.max_age)
    );
    Ok(())
}
