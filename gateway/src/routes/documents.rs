//! `/v1/documents`: upload files into a collection, list them with their state, delete
//! them, and download the original file. The gateway converts nothing: it stores each
//! file in JetStream and queues a job for the ingest workers ([`cauce_nats::uploads`]).
//! A document is `indexed` once every live retrieval worker has applied it.

use axum::Json;
use axum::body::Body;
use axum::extract::multipart::{Multipart, MultipartError, MultipartRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use cauce_nats::metrics::RETRIEVAL_DOCS_SEQUENCE;
use cauce_nats::uploads::{self, NewUpload};
use cauce_nats::wire::{UploadRecord, UploadState};
use cauce_nats::{Collection, DocId};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio_util::io::ReaderStream;

use crate::auth;
use crate::error::{Error, Result};
use crate::state::AppState;

/// The longest file name kept.
const MAX_FILE_NAME: usize = 255;

#[derive(Debug, Default, Deserialize)]
pub struct Filter {
    collection: Option<String>,
}

/// `POST /v1/documents`: multipart, one or more `file` parts and an optional
/// `collection` part (or `?collection=`). Every file is checked before any is stored.
pub async fn upload(
    State(state): State<AppState>,
    Query(filter): Query<Filter>,
    headers: HeaderMap,
    multipart: std::result::Result<Multipart, MultipartRejection>,
) -> Result<Response> {
    auth::may_write_documents(&state, &headers)?;
    let mut multipart = multipart.map_err(|err| {
        Error::invalid(
            "body",
            format!("{err}: send the files as multipart/form-data, each in a part named `file`"),
        )
    })?;
    let mut collection = filter.collection;
    let mut files = Vec::new();
    while let Some(field) = multipart
        .next_field()
        .await
        .map_err(|e| read_error(&state, e))?
    {
        match (field.name(), field.file_name()) {
            (_, Some(name)) => {
                let name = file_name(name)?;
                let bytes = field.bytes().await.map_err(|e| read_error(&state, e))?;
                files.push(checked(name, bytes)?);
                if files.len() > state.config.max_upload_files {
                    return Err(Error::invalid(
                        "file",
                        format!(
                            "more than {} files in one upload: send them in several",
                            state.config.max_upload_files
                        ),
                    ));
                }
            }
            (Some("collection"), None) => {
                collection = Some(field.text().await.map_err(|e| read_error(&state, e))?);
            }
            _ => {}
        }
    }
    if files.is_empty() {
        return Err(Error::invalid(
            "file",
            "no file in the upload: send each file as a multipart part with a file name \
             (curl -F file=@notes.pdf)",
        ));
    }
    let collection = collection_of(collection.as_deref())?;
    let mut stored = Vec::with_capacity(files.len());
    for (file_name, content_type, bytes) in files {
        let upload = NewUpload {
            collection: collection.clone(),
            file_name,
            content_type: content_type.to_string(),
            bytes,
        };
        let record = state
            .uploads
            .upload(upload)
            .await
            .map_err(|err| Error::nats("store an upload", err))?;
        stored.push(view(&record, &applied_sequences(&state)));
    }
    let body = json!({ "object": "list", "data": stored });
    Ok((StatusCode::ACCEPTED, Json(body)).into_response())
}

/// `GET /v1/documents`: every uploaded document, optionally of one collection.
pub async fn list(
    State(state): State<AppState>,
    Query(filter): Query<Filter>,
) -> Result<Json<Value>> {
    let wanted = match filter.collection.as_deref() {
        Some(name) => Some(collection_of(Some(name))?),
        None => None,
    };
    let records = state
        .uploads
        .list()
        .await
        .map_err(|err| Error::nats("list the uploads", err))?;
    let applied = applied_sequences(&state);
    let data: Vec<Value> = records
        .iter()
        .filter(|r| wanted.as_ref().is_none_or(|c| &r.collection == c))
        .map(|r| view(r, &applied))
        .collect();
    Ok(Json(json!({ "object": "list", "data": data })))
}

/// `GET /v1/documents/{id}`.
pub async fn get(State(state): State<AppState>, Path(id): Path<String>) -> Result<Json<Value>> {
    let record = record(&state, &id).await?;
    Ok(Json(view(&record, &applied_sequences(&state))))
}

/// `DELETE /v1/documents/{id}`: queues the delete; the document leaves the sources once
/// the retrieval workers apply its tombstone, and the listing once it is done.
pub async fn delete(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response> {
    auth::may_write_documents(&state, &headers)?;
    let id = doc_id(&id)?;
    let record = state
        .uploads
        .delete(&id)
        .await
        .map_err(|err| Error::nats("delete an upload", err))?
        .ok_or_else(|| not_found(&id))?;
    let body = view(&record, &applied_sequences(&state));
    Ok((StatusCode::ACCEPTED, Json(body)).into_response())
}

/// `GET /v1/documents/{id}/content`: the original file, as uploaded. Text types are
/// served sandboxed (no script runs from an uploaded HTML page).
pub async fn content(State(state): State<AppState>, Path(id): Path<String>) -> Result<Response> {
    let record = record(&state, &id).await?;
    let object = state
        .uploads
        .file(&record)
        .await
        .map_err(|err| Error::nats("read an upload", err))?
        .ok_or_else(|| not_found(&record.id))?;
    let size = object.info.size;
    let mut response = Body::from_stream(ReaderStream::new(object)).into_response();
    let headers = response.headers_mut();
    let content_type = HeaderValue::from_str(&record.content_type)
        .unwrap_or(HeaderValue::from_static("application/octet-stream"));
    headers.insert(header::CONTENT_TYPE, content_type);
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(size));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    let inline = record.content_type.starts_with("application/pdf")
        || record.content_type.starts_with("text/");
    if record.content_type.starts_with("text/") {
        headers.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static("sandbox"),
        );
    }
    let kind = if inline { "inline" } else { "attachment" };
    if let Ok(value) = HeaderValue::from_str(&disposition(kind, &record.file_name)) {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    Ok(response)
}

/// `inline; filename="…"; filename*=UTF-8''…` (RFC 6266): an ASCII name for every client,
/// the exact one, percent-encoded, for those that read it.
fn disposition(kind: &str, file_name: &str) -> String {
    let ascii: String = file_name
        .chars()
        .map(|c| match c {
            ' '..='~' if c != '"' && c != '\\' => c,
            _ => '_',
        })
        .collect();
    let encoded: String = file_name
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'.' | b'-' | b'_' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    format!("{kind}; filename=\"{ascii}\"; filename*=UTF-8''{encoded}")
}

async fn record(state: &AppState, id: &str) -> Result<UploadRecord> {
    let id = doc_id(id)?;
    let stored = state
        .uploads
        .get(&id)
        .await
        .map_err(|err| Error::nats("read an upload", err))?;
    stored.map(|s| s.record).ok_or_else(|| not_found(&id))
}

fn doc_id(id: &str) -> Result<DocId> {
    DocId::parse(id)
        .map_err(|err| Error::invalid("id", format!("{err}: GET /v1/documents lists the ids")))
}

fn not_found(id: &DocId) -> Error {
    Error::NotFound {
        what: format!(
            "uploaded document {id} (GET /v1/documents lists them; documents ingested from a \
             folder are removed with `cauce ingest --delete-missing`)"
        ),
    }
}

fn collection_of(name: Option<&str>) -> Result<Collection> {
    match name.map(str::trim) {
        None | Some("") => Ok(Collection::default()),
        Some(name) => Collection::parse(name).map_err(|err| {
            Error::invalid(
                "collection",
                format!("{err}: name a collection like physics-101"),
            )
        }),
    }
}

/// The file name without any folder a browser or client put in front of it.
fn file_name(raw: &str) -> Result<String> {
    let name = raw.rsplit(['/', '\\']).next().unwrap_or_default().trim();
    if name.is_empty() || name.len() > MAX_FILE_NAME || name.chars().any(char::is_control) {
        return Err(Error::invalid(
            "file",
            format!(
                "the file name {raw:?} is empty, too long (over {MAX_FILE_NAME} bytes) or has control characters"
            ),
        ));
    }
    Ok(name.to_string())
}

/// The file, its content type and bytes, once its type and bytes agree.
fn checked(name: String, bytes: Bytes) -> Result<(String, &'static str, Bytes)> {
    let accepted: Vec<&str> = uploads::TYPES.iter().map(|(ext, _)| *ext).collect();
    let Some(content_type) = uploads::content_type(&name) else {
        return Err(Error::UnsupportedType {
            message: format!(
                "{name}: cauce reads only these file types: .{}",
                accepted.join(", .")
            ),
        });
    };
    if bytes.is_empty() {
        return Err(Error::invalid("file", format!("{name} is empty")));
    }
    if let Some(message) = uploads::mismatch(&name, &bytes) {
        return Err(Error::UnsupportedType { message });
    }
    Ok((name, content_type, bytes))
}

fn read_error(state: &AppState, err: MultipartError) -> Error {
    if err.status() == StatusCode::PAYLOAD_TOO_LARGE {
        return Error::BodyTooLarge {
            limit: state.config.max_upload_bytes,
        };
    }
    Error::BodyRead(err.body_text())
}

/// The `DOCS` sequence each live retrieval worker has applied.
fn applied_sequences(state: &AppState) -> Vec<u64> {
    state
        .view
        .snapshot()
        .worker_metrics
        .iter()
        .filter(|(labels, _)| labels.iter().any(|(k, v)| *k == "kind" && v == "retrieval"))
        .filter_map(|(_, metrics)| metrics.gauges.get(RETRIEVAL_DOCS_SEQUENCE))
        .map(|&seq| seq as u64)
        .collect()
}

/// What a client sees of one uploaded document.
fn view(record: &UploadRecord, applied: &[u64]) -> Value {
    let state = match record.state {
        UploadState::Queued => "queued",
        UploadState::Converted if uploads::is_indexed(record, applied) => "indexed",
        UploadState::Converted => "indexing",
        UploadState::Failed => "failed",
        UploadState::Deleting => "deleting",
    };
    json!({
        "id": record.id,
        "object": "document",
        "title": record.title.as_deref().unwrap_or(&record.file_name),
        "file_name": record.file_name,
        "collection": record.collection,
        "content_type": record.content_type,
        "size": record.size,
        "passages": record.passages,
        "state": state,
        "attempts": record.attempts,
        "reason": record.reason,
        "location": uploads::content_location(&record.id),
        "uploaded_at": record.uploaded_at_ms / 1000,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_name_is_given_in_ascii_and_exactly() {
        assert_eq!(
            disposition("inline", "Física 1 \"a\".pdf"),
            "inline; filename=\"F_sica 1 _a_.pdf\"; filename*=UTF-8''F%C3%ADsica%201%20%22a%22.pdf"
        );
    }
}
