//! Finding live workers and gateways through the NATS service API (`$SRV.*`): each
//! process announces itself with `async_nats::service` under [`service_name`], with
//! metadata under the keys below, and answers `$SRV.INFO` and `$SRV.STATS` requests.
//! [`discover`] asks every instance at once and gathers the answers for a short while.

use std::collections::HashMap;
use std::time::Duration;

use async_nats::Client;
use async_nats::service::Info;
use async_nats::service::endpoint::Stats as EndpointStats;
use futures::StreamExt;
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};
use crate::names::{WorkerKind, service_name};

/// Metadata key: the model an inference worker serves.
pub const META_MODEL: &str = "model";
/// Metadata key: the number of sequence slots of an inference worker.
pub const META_SLOTS: &str = "slots";
/// Metadata key: the id of a gateway.
pub const META_GATEWAY: &str = "gateway";

/// The `$SRV.STATS` answer of one instance (async-nats' own type is not `Clone`).
#[derive(Clone, Debug, serde::Deserialize)]
pub struct Stats {
    pub id: String,
    #[serde(default)]
    pub endpoints: Vec<EndpointStats>,
}

/// One live instance of a service, with its stats when it answered for them.
#[derive(Clone, Debug)]
pub struct Instance {
    pub info: Info,
    pub stats: Option<Stats>,
}

impl Instance {
    pub fn metadata(&self, key: &str) -> Option<&str> {
        self.info.metadata.get(key).map(String::as_str)
    }

    /// The custom data the instance's stats handler returned for its first endpoint.
    pub fn stats_data(&self) -> Option<&serde_json::Value> {
        self.stats.as_ref()?.endpoints.first()?.data.as_ref()
    }
}

/// Every live instance of one kind, gathering answers for `wait`.
pub async fn discover(client: &Client, kind: WorkerKind, wait: Duration) -> Result<Vec<Instance>> {
    let name = service_name(kind);
    let infos: Vec<Info> = gather(client, format!("$SRV.INFO.{name}"), wait).await?;
    let stats: Vec<Stats> = gather(client, format!("$SRV.STATS.{name}"), wait).await?;
    let mut stats_by_id: HashMap<String, Stats> =
        stats.into_iter().map(|s| (s.id.clone(), s)).collect();
    Ok(infos
        .into_iter()
        .map(|info| {
            let stats = stats_by_id.remove(&info.id);
            Instance { info, stats }
        })
        .collect())
}

async fn gather<T: DeserializeOwned>(
    client: &Client,
    subject: String,
    wait: Duration,
) -> Result<Vec<T>> {
    let inbox = client.new_inbox();
    let mut replies = client
        .subscribe(inbox.clone())
        .await
        .map_err(|e| Error::nats("subscribe", &subject, e))?;
    client
        .publish_with_reply(subject.clone(), inbox, bytes::Bytes::new())
        .await
        .map_err(|e| Error::nats("publish", &subject, e))?;
    let mut answers = Vec::new();
    let deadline = tokio::time::Instant::now() + wait;
    while let Ok(Some(reply)) = tokio::time::timeout_at(deadline, replies.next()).await {
        if let Ok(answer) = serde_json::from_slice(&reply.payload) {
            answers.push(answer);
        }
    }
    Ok(answers)
}
