//! The wire: every message cauce sends over NATS, as versioned serde JSON.
//!
//! Each top-level message is encoded as a JSON object whose field `"v"` carries
//! [`WIRE_VERSION`]. [`decode`] checks the version before it reads anything else, so an
//! old or foreign payload gives a typed [`WireError`], never a panic. Unknown fields are
//! ignored, so a newer writer can add optional fields without breaking older readers.
//! Payloads stored for long (documents, results, cached answers) are zstd-compressed
//! JSON through [`encode_compressed`] and [`decode_compressed`].

mod cache;
mod chat;
mod doc;
mod event;
mod model;
mod prompt;
mod result;
mod search;
mod upload;

pub use cache::{CacheEntry, CacheValue, cache_key};
pub use chat::{
    ChatMessage, ChatRequest, MAX_COLLECTIONS, MAX_TOP_K, RetrievalOptions, Role, Sampling,
};
pub use doc::{DocPassage, DocRecord, Document, Tombstone};
pub use event::{ErrorKind, Event, EventBody, FinishReason, Timings, Usage};
pub use model::ModelCard;
pub use prompt::{PASSAGE_RESERVE_BYTES, Passage, PromptJob, Source};
pub use result::{ResultStatus, StoredError, StoredResult};
pub use search::{SearchHit, SearchRequest, SearchResponse};
pub use upload::{UploadJob, UploadRecord, UploadState};

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::WireError;

/// The wire version this build writes and reads.
pub const WIRE_VERSION: u32 = 1;

/// zstd level for stored payloads: fast, and text compresses well at low levels.
const ZSTD_LEVEL: i32 = 3;

/// Refuse to inflate a compressed payload past this size (a guard against bombs).
const MAX_DECOMPRESSED_BYTES: usize = 64 * 1024 * 1024;

/// The largest zstd window a payload may use (8 MiB; level 3 writes 2 MiB ones).
const MAX_WINDOW_LOG: u32 = 23;

/// A top-level wire message.
pub trait Wire: Serialize + DeserializeOwned {
    /// What the message is, for error messages.
    const WHAT: &'static str;
}

#[derive(Serialize)]
struct Versioned<'a, T> {
    v: u32,
    #[serde(flatten)]
    body: &'a T,
}

/// The `"v"` field of a JSON object, read without looking at the other fields.
struct VersionProbe {
    v: Option<serde_json::Value>,
}

impl<'de> Deserialize<'de> for VersionProbe {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = VersionProbe;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<VersionProbe, A::Error> {
                let mut v = None;
                while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                    if key == "v" {
                        v = Some(map.next_value()?);
                    } else {
                        map.next_value::<serde::de::IgnoredAny>()?;
                    }
                }
                Ok(VersionProbe { v })
            }
        }
        // only an object can carry a version: anything else is a schema error
        deserializer.deserialize_map(Visitor)
    }
}

/// Encodes a message as versioned JSON.
pub fn encode<T: Wire>(message: &T) -> Result<Bytes, WireError> {
    serde_json::to_vec(&Versioned {
        v: WIRE_VERSION,
        body: message,
    })
    .map(Bytes::from)
    .map_err(|source| WireError::Encode {
        what: T::WHAT,
        source,
    })
}

/// Decodes a versioned JSON message, checking its version first.
pub fn decode<T: Wire>(payload: &[u8]) -> Result<T, WireError> {
    let what = T::WHAT;
    let probe: VersionProbe = serde_json::from_slice(payload).map_err(|source| {
        if source.is_syntax() || source.is_eof() || source.is_io() {
            WireError::NotJson { what, source }
        } else {
            WireError::Schema { what, source }
        }
    })?;
    match probe.v {
        None => return Err(WireError::MissingVersion { what }),
        Some(serde_json::Value::Number(n)) if n.as_u64() == Some(u64::from(WIRE_VERSION)) => {}
        Some(other) => {
            let found = other.as_u64().unwrap_or(u64::MAX);
            return Err(WireError::WrongVersion {
                what,
                found,
                expected: WIRE_VERSION,
            });
        }
    }
    serde_json::from_slice(payload).map_err(|source| WireError::Schema { what, source })
}

/// Encodes a message as zstd-compressed versioned JSON, for payloads that are stored.
pub fn encode_compressed<T: Wire>(message: &T) -> Result<Bytes, WireError> {
    let json = encode(message)?;
    zstd::bulk::compress(&json, ZSTD_LEVEL)
        .map(Bytes::from)
        .map_err(|err| WireError::Compression {
            what: T::WHAT,
            reason: err.to_string(),
        })
}

/// Decodes a payload written by [`encode_compressed`].
pub fn decode_compressed<T: Wire>(payload: &[u8]) -> Result<T, WireError> {
    use std::io::Read;
    let compression = |reason: String| WireError::Compression {
        what: T::WHAT,
        reason,
    };
    let mut decoder =
        zstd::stream::read::Decoder::new(payload).map_err(|e| compression(e.to_string()))?;
    // a frame may ask for a window of up to 2 GiB: cauce writes 2 MiB ones
    decoder
        .window_log_max(MAX_WINDOW_LOG)
        .map_err(|e| compression(e.to_string()))?;
    // read in pieces, refusing the piece that would pass the bound before the buffer
    // grows for it: the buffer never holds more than the bound
    let mut json = Vec::new();
    let mut piece = vec![0u8; 64 * 1024];
    loop {
        let read = match decoder.read(&mut piece) {
            Ok(0) => break,
            Ok(read) => read,
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(err) => return Err(compression(err.to_string())),
        };
        if json.len() + read > MAX_DECOMPRESSED_BYTES {
            return Err(compression(format!(
                "inflates past {MAX_DECOMPRESSED_BYTES} bytes"
            )));
        }
        json.extend_from_slice(&piece[..read]);
    }
    decode(&json)
}

/// Milliseconds since the Unix epoch, the time unit of every wire timestamp.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests;
