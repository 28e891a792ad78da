//! Uploads through the queue, end to end through `cauce up` with API keys: a PDF sent
//! over HTTP is stored in JetStream, converted by the ingest worker, reported `indexed`
//! once the retrieval worker can search it, answers a question only its page 2 answers
//! with a source that opens `…/content#page=2`, and is gone from the sources once
//! deleted. Chat keys cannot write; bad files get a clear 4xx and store nothing; a PDF
//! with no text ends `failed` with its reason.

mod common;

use std::time::{Duration, Instant};

use cauce_ingest::testkit::pdf_bytes;
use common::{Cauce, chat_body};
use reqwest::multipart::{Form, Part};
use serde_json::{Value, json};

const CHAT_KEY: &str = "sk-student";
const ADMIN_KEY: &str = "sk-teacher";
const MAX_UPLOAD: usize = 200_000;
/// A guard against a hang, not a speed check.
const STATE_TIMEOUT: Duration = Duration::from_secs(120);

const PAGE_ONE: &str = "Course outline\nThe first week covers the syllabus, the grading\nrules and the reading list for the term.";
const PAGE_TWO: &str = "Laboratory two\nIn the quokka laboratory students measure the\nzorbulent flux of a copper coil with a gaussmeter.";

async fn upload(cauce: &Cauce, key: &str, files: &[(&str, Vec<u8>)]) -> reqwest::Response {
    let mut form = Form::new().text("collection", "physics-101");
    for (name, bytes) in files {
        form = form.part(
            "file",
            Part::bytes(bytes.clone()).file_name(name.to_string()),
        );
    }
    cauce
        .http
        .post(cauce.url("/v1/documents"))
        .bearer_auth(key)
        .multipart(form)
        .send()
        .await
        .unwrap()
}

/// Sends a request with the chat key: its status and JSON body.
async fn send(request: reqwest::RequestBuilder) -> (u16, Value) {
    let response = request.bearer_auth(CHAT_KEY).send().await.unwrap();
    let status = response.status().as_u16();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, body)
}

/// The document once its state is `want`; panics on `failed` unless that is wanted.
async fn wait_for(cauce: &Cauce, id: &str, want: &str) -> Value {
    let deadline = Instant::now() + STATE_TIMEOUT;
    loop {
        let (status, doc) = send(cauce.http.get(cauce.url(&format!("/v1/documents/{id}")))).await;
        assert_eq!(status, 200, "{doc}");
        let state = doc["state"].as_str().unwrap().to_string();
        if state == want {
            return doc;
        }
        assert!(state != "failed", "{id} failed: {doc}");
        assert!(
            Instant::now() < deadline,
            "{id} never became {want}: {doc}\n{}",
            cauce.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn search(cauce: &Cauce, query: &str) -> Vec<Value> {
    let body = json!({"query": query, "collections": ["physics-101"]});
    let (status, answer) = send(cauce.http.post(cauce.url("/v1/search")).json(&body)).await;
    assert_eq!(status, 200, "{answer}");
    answer["results"].as_array().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread")]
async fn an_uploaded_pdf_is_indexed_cited_by_its_page_and_deleted() {
    let max_upload = MAX_UPLOAD.to_string();
    let flags = [
        "--api-keys",
        CHAT_KEY,
        "--admin-api-keys",
        ADMIN_KEY,
        "--max-upload",
        &max_upload,
    ];
    let cauce = Cauce::start_with(2, &flags).await;
    let pdf = pdf_bytes("Physics lab notes", &[PAGE_ONE, PAGE_TWO]);

    let refused = upload(&cauce, CHAT_KEY, &[("lab-notes.pdf", pdf.clone())]).await;
    assert_eq!(refused.status(), 403);
    let refused: Value = refused.json().await.unwrap();
    assert_eq!(refused["error"]["code"], "admin_key_required", "{refused}");

    let response = upload(&cauce, ADMIN_KEY, &[("lab-notes.pdf", pdf.clone())]).await;
    assert_eq!(response.status(), 202);
    let accepted: Value = response.json().await.unwrap();
    let doc = &accepted["data"][0];
    assert_eq!(doc["collection"], "physics-101", "{accepted}");
    let id = doc["id"].as_str().unwrap().to_string();
    let indexed = wait_for(&cauce, &id, "indexed").await;
    assert_eq!(indexed["title"], "Physics lab notes", "{indexed}");
    assert!(indexed["passages"].as_u64().unwrap() >= 2, "{indexed}");

    let (status, list) = send(
        cauce
            .http
            .get(cauce.url("/v1/documents?collection=physics-101")),
    )
    .await;
    assert_eq!(status, 200);
    assert!(
        list["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["id"] == id.as_str()),
        "{list}"
    );
    let content = cauce
        .http
        .get(cauce.url(&format!("/v1/documents/{id}/content")))
        .bearer_auth(CHAT_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(content.headers()["content-type"], "application/pdf");
    assert_eq!(
        content.bytes().await.unwrap().as_ref(),
        pdf.as_slice(),
        "the original file"
    );

    let mut body = chat_body(
        "What does the zorbulent flux lab measure with a gaussmeter?",
        4,
        false,
    );
    body["cauce"] = json!({"collections": ["physics-101"]});
    let (status, answer) = send(
        cauce
            .http
            .post(cauce.url("/v1/chat/completions"))
            .json(&body),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let first = &answer["cauce"]["sources"][0];
    assert_eq!(
        first["location"].as_str().unwrap(),
        format!("/v1/documents/{id}/content#page=2"),
        "{answer}"
    );

    let deleted = cauce
        .http
        .delete(cauce.url(&format!("/v1/documents/{id}")))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 202);
    let deadline = Instant::now() + STATE_TIMEOUT;
    loop {
        let (status, _) = send(cauce.http.get(cauce.url(&format!("/v1/documents/{id}")))).await;
        let hits = search(&cauce, "zorbulent flux gaussmeter").await;
        if status == 404 && !hits.iter().any(|h| h["doc_id"] == id.as_str()) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{id} still there after its delete"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    bad_uploads_are_refused_and_store_nothing(&cauce).await;
    let scan = pdf_bytes("Scanned", &["", ""]);
    let response = upload(&cauce, ADMIN_KEY, &[("scan.pdf", scan)]).await;
    assert_eq!(response.status(), 202);
    let accepted: Value = response.json().await.unwrap();
    let failed = wait_for(
        &cauce,
        accepted["data"][0]["id"].as_str().unwrap(),
        "failed",
    )
    .await;
    assert!(
        failed["reason"].as_str().unwrap().contains("scan.pdf"),
        "{failed}"
    );
}

async fn bad_uploads_are_refused_and_store_nothing(cauce: &Cauce) {
    let cases: [(&str, Vec<u8>, u16, &str); 4] = [
        ("setup.exe", b"MZ".to_vec(), 415, "unsupported_type"),
        ("fake.pdf", b"hello".to_vec(), 415, "unsupported_type"),
        ("empty.md", Vec::new(), 400, "invalid_request"),
        (
            "huge.txt",
            vec![b'a'; MAX_UPLOAD + 1],
            413,
            "body_too_large",
        ),
    ];
    for (name, bytes, status, code) in cases {
        let good = ("good.md", b"# fine\nthis one is fine".to_vec());
        let response = upload(cauce, ADMIN_KEY, &[good, (name, bytes)]).await;
        assert_eq!(response.status(), status, "{name}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], code, "{name}: {body}");
        assert!(!body["error"]["message"].as_str().unwrap().is_empty());
    }
    let (_, list) = send(cauce.http.get(cauce.url("/v1/documents"))).await;
    assert_eq!(
        list["data"],
        json!([]),
        "a refused upload stores none of its files"
    );
}
