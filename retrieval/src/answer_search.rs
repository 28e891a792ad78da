//! Answering search requests (`POST /v1/search` at a gateway, see
//! [`cauce_nats::search`]): the same search as a chat request's retrieval, no model run.

use cauce_nats::async_nats::Client;
use cauce_nats::search;
use cauce_nats::wire::{SearchHit, SearchRequest, SearchResponse};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::search::Searcher;

/// Characters of a passage's text a hit carries.
const SNIPPET_CHARS: usize = 300;

/// What answering needs from the worker.
#[derive(Clone)]
pub struct Answerer {
    pub client: Client,
    pub searcher: Searcher,
}

/// Answers search requests until `cancel` fires.
pub async fn serve(answerer: Answerer, cancel: CancellationToken) {
    let mut requests = match search::subscribe(&answerer.client).await {
        Ok(requests) => requests,
        Err(err) => {
            warn!(error = %err, "cannot answer searches");
            return;
        }
    };
    info!("answering searches");
    loop {
        let message = tokio::select! {
            () = cancel.cancelled() => break,
            message = requests.next() => match message {
                Some(message) => message,
                None => break,
            },
        };
        let answerer = answerer.clone();
        tokio::spawn(async move {
            let Some(request) = search::read(&answerer.client, &message).await else {
                return;
            };
            let response = answerer.search(request).await;
            search::answer(&answerer.client, &message, &response).await;
        });
    }
    let _ = requests.unsubscribe().await;
}

impl Answerer {
    async fn search(&self, request: SearchRequest) -> SearchResponse {
        let searcher = self.searcher.clone();
        let top_k = request.top_k as usize;
        let found = tokio::task::spawn_blocking(move || {
            searcher.search(&request.messages, top_k, &request.collections)
        })
        .await;
        let indexed_passages = self.searcher.passages();
        match found {
            Ok(Ok(passages)) => SearchResponse {
                hits: passages
                    .iter()
                    .enumerate()
                    .map(|(i, passage)| SearchHit {
                        source: passage.source(i as u32 + 1),
                        snippet: passage.text.chars().take(SNIPPET_CHARS).collect(),
                        text: passage.text.clone(),
                    })
                    .collect(),
                indexed_passages,
                error: None,
            },
            Ok(Err(err)) => failed(err.to_string(), indexed_passages),
            Err(err) => failed(err.to_string(), indexed_passages),
        }
    }
}

fn failed(error: String, indexed_passages: u64) -> SearchResponse {
    warn!(error = %error, "a search failed");
    SearchResponse {
        hits: Vec::new(),
        indexed_passages,
        error: Some(error),
    }
}
