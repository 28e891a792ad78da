//! Least privilege on NATS: what each kind of cauce process may publish and subscribe
//! to, built from [`names`] so that it never drifts from the code.
//!
//! [`server_config`] renders every role as a nats-server `authorization` block (one user
//! per role, each password taken from an environment variable of the server), which
//! `cauce nats permissions` prints and `ops/nats/permissions.conf` holds. A process
//! connects as its role's user (`--nats-user cauce-gateway`); its replies come to an
//! inbox of its own ([`Role::inbox_prefix`]), so no role reads another's replies.
//!
//! What a role may do follows what its code does:
//! - the **gateway** publishes questions, cancels and search requests, reads the
//!   backlog of `QUESTIONS` and `PROMPTS` (stream and consumer info, never a message),
//!   reads and writes results and cancels, reads cached answers, follows any request's
//!   events, and asks the workers' service API for their state;
//! - a **retrieval** worker consumes `QUESTIONS`, follows `DOCS`, publishes prompt jobs
//!   (creating the model's consumer when it is missing) and events, answers search requests, reads and writes results and the cache, and
//!   turns dead letters into failures (it reads the question or prompt job a dead letter
//!   names: it wrote the one and consumed the other);
//! - an **inference** worker consumes its model's prompt jobs (creating its model's
//!   consumer on first start), publishes events, listens for cancels, reads and writes
//!   results and the cache (answers and its model's card), and reads cancels;
//! - an **ingest** run reads and writes `DOCS`; an ingest worker (`--follow`) also
//!   consumes upload jobs, reads uploaded files, and writes their records; the gateway
//!   stores, replaces and deletes those files, writes their records and queues their
//!   jobs (an ingest worker cannot remove a file: that would be any file);
//! - the **operator** (`cauce up`, `nats apply`, `replay`, `status`, `cache`, `bench`)
//!   does what every other role does, plus the JetStream API as a whole: only it can
//!   create, change or delete a stream or consumer, and read `DEAD`; it also receives
//!   replies on NATS' default inbox, so the `nats` tool works as the operator.
//!
//! Every role may read the configuration and counts of cauce's streams (every process
//! checks the objects it needs at start) and the JetStream account info.

use crate::names::{self, WorkerKind};

/// The kinds of process, each with its own NATS user.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    Gateway,
    Retrieval,
    Inference,
    Ingest,
    Operator,
}

impl Role {
    pub const ALL: [Role; 5] = [
        Role::Gateway,
        Role::Retrieval,
        Role::Inference,
        Role::Ingest,
        Role::Operator,
    ];

    /// `gateway`, `retrieval`, …
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Gateway => "gateway",
            Role::Retrieval => "retrieval",
            Role::Inference => "inference",
            Role::Ingest => "ingest",
            Role::Operator => "operator",
        }
    }

    /// The NATS user of this role: `cauce-gateway`, …
    pub fn user(self) -> String {
        format!("cauce-{}", self.as_str())
    }

    /// The server environment variable holding this role's password.
    pub fn password_variable(self) -> String {
        format!("CAUCE_NATS_{}_PASSWORD", self.as_str().to_ascii_uppercase())
    }

    /// Prefix of this role's reply inboxes (`_INBOX_gateway`): a role subscribes only to
    /// its own.
    pub fn inbox_prefix(self) -> String {
        format!("_INBOX_{}", self.as_str())
    }
}

/// What one role may publish and subscribe to.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Permissions {
    pub publish: Vec<String>,
    pub subscribe: Vec<String>,
    /// Whether it answers requests (service API, search): it may then publish one reply
    /// to each request it receives, whatever the reply subject.
    pub responds: bool,
}

impl Permissions {
    fn publish(mut self, subjects: impl IntoIterator<Item = String>) -> Self {
        self.publish.extend(subjects);
        self
    }

    fn subscribe(mut self, subjects: impl IntoIterator<Item = String>) -> Self {
        self.subscribe.extend(subjects);
        self
    }

    fn responding(mut self) -> Self {
        self.responds = true;
        self
    }

    fn and(self, other: Permissions) -> Self {
        let responds = self.responds || other.responds;
        let mut merged = self.publish(other.publish).subscribe(other.subscribe);
        merged.responds = responds;
        merged
    }

    fn sorted(mut self) -> Self {
        for list in [&mut self.publish, &mut self.subscribe] {
            list.sort();
            list.dedup();
        }
        self
    }
}

/// The permissions of `role`.
pub fn of(role: Role) -> Permissions {
    let own = match role {
        Role::Gateway => gateway(),
        Role::Retrieval => retrieval(),
        Role::Inference => inference(),
        Role::Ingest => ingest(),
        Role::Operator => operator(),
    };
    common(role).and(own).sorted()
}

fn common(role: Role) -> Permissions {
    let streams = [
        names::QUESTIONS.to_string(),
        names::PROMPTS.to_string(),
        names::DOCS.to_string(),
        names::DEAD.to_string(),
        names::bucket_stream(names::RESULTS_BUCKET),
        names::bucket_stream(names::CACHE_BUCKET),
        names::bucket_stream(names::CANCELS_BUCKET),
        names::UPLOADS.to_string(),
        names::object_stream(names::UPLOADS_BUCKET),
        names::bucket_stream(names::DOCUMENTS_BUCKET),
        names::DEAD_UPLOADS.to_string(),
    ];
    Permissions::default()
        .publish([api("INFO")])
        .publish(streams.iter().map(|s| api(&format!("STREAM.INFO.{s}"))))
        .publish([consumer_info(names::QUESTIONS, names::RETRIEVAL_CONSUMER)])
        .subscribe([format!("{}.>", role.inbox_prefix())])
}

fn gateway() -> Permissions {
    Permissions::default()
        .publish([
            names::QUESTIONS_SUBJECT.to_string(),
            names::cancel_subject_any(),
            names::SEARCH_SUBJECT.to_string(),
            consumer_info(names::PROMPTS, "*"),
        ])
        .publish(discovery([WorkerKind::Retrieval, WorkerKind::Inference]))
        .subscribe([names::EVENTS_SUBJECTS.to_string()])
        .and(bucket_read(names::RESULTS_BUCKET))
        .and(bucket_write(names::RESULTS_BUCKET))
        .and(bucket_read(names::CANCELS_BUCKET))
        .and(bucket_write(names::CANCELS_BUCKET))
        .and(bucket_read(names::CACHE_BUCKET))
        .and(service(WorkerKind::Gateway))
        .publish([names::UPLOADS_SUBJECTS.to_string()])
        .and(upload_files())
        .and(bucket_read(names::DOCUMENTS_BUCKET))
        .and(bucket_write(names::DOCUMENTS_BUCKET))
}

fn retrieval() -> Permissions {
    Permissions::default()
        .publish([
            names::PROMPTS_SUBJECTS.to_string(),
            names::EVENTS_SUBJECTS.to_string(),
        ])
        .subscribe([names::SEARCH_SUBJECT.to_string()])
        .and(consume(names::QUESTIONS, names::RETRIEVAL_CONSUMER))
        .and(inference_consumer_setup())
        .and(consume(names::DEAD, names::DEAD_NOTIFY_CONSUMER))
        .publish([message_get(names::QUESTIONS), message_get(names::PROMPTS)])
        .and(stream_read(names::DOCS))
        .and(bucket_read(names::RESULTS_BUCKET))
        .and(bucket_write(names::RESULTS_BUCKET))
        .and(bucket_read(names::CACHE_BUCKET))
        .and(bucket_write(names::CACHE_BUCKET))
        .and(bucket_read(names::CANCELS_BUCKET))
        .and(service(WorkerKind::Retrieval))
}

fn inference() -> Permissions {
    Permissions::default()
        .publish([names::EVENTS_SUBJECTS.to_string()])
        .and(inference_consumer_setup())
        .subscribe([names::cancel_subject_any()])
        .and(consume(names::PROMPTS, "*"))
        .and(bucket_read(names::RESULTS_BUCKET))
        .and(bucket_write(names::RESULTS_BUCKET))
        .and(bucket_read(names::CACHE_BUCKET))
        .and(bucket_write(names::CACHE_BUCKET))
        .and(bucket_read(names::CANCELS_BUCKET))
        .and(service(WorkerKind::Inference))
}

fn ingest() -> Permissions {
    Permissions::default()
        .publish([names::DOCS_SUBJECTS.to_string()])
        .and(stream_read(names::DOCS))
        .and(consume(names::UPLOADS, names::INGEST_CONSUMER))
        // a dead letter names its job by sequence
        .and(consume(names::DEAD_UPLOADS, names::DEAD_UPLOADS_CONSUMER))
        .publish([message_get(names::UPLOADS)])
        .and(stream_read(&names::object_stream(names::UPLOADS_BUCKET)))
        .and(bucket_read(names::DOCUMENTS_BUCKET))
        .and(bucket_write(names::DOCUMENTS_BUCKET))
}

/// Reading, writing and deleting uploaded files: an object's chunks and metadata, and
/// purging the chunks of the object it replaces or deletes (this one stream only). Only
/// the gateway may: a purge names its subject in the request's body, which permissions
/// cannot narrow, so an ingest worker, which converts files others upload, only reads.
fn upload_files() -> Permissions {
    let bucket = names::UPLOADS_BUCKET;
    let stream = names::object_stream(bucket);
    Permissions::default()
        .publish([
            format!("$O.{bucket}.>"),
            api(&format!("STREAM.PURGE.{stream}")),
        ])
        .and(stream_read(&stream))
}

/// Every other role's rights, the whole JetStream API, the service API of every kind,
/// and republishing questions and prompt jobs (replay).
fn operator() -> Permissions {
    [
        Role::Gateway,
        Role::Retrieval,
        Role::Inference,
        Role::Ingest,
    ]
    .into_iter()
    .map(of)
    .fold(Permissions::default(), Permissions::and)
    .publish([api(">"), "$JS.ACK.>".to_string(), "$JS.FC.>".to_string()])
    .publish(discovery([WorkerKind::Gateway, WorkerKind::Launcher]))
    // `cauce up` announces its children
    .and(service(WorkerKind::Launcher))
    // NATS' default inbox, for the `nats` command-line tool; no cauce role uses it
    .subscribe(["_INBOX.>".to_string()])
}

/// Creating a model's inference consumer when it is missing, as a worker of a new model
/// does (retrieval for the model a question names, inference for its own).
fn inference_consumer_setup() -> Permissions {
    Permissions::default().publish([
        consumer_info(names::PROMPTS, "*"),
        api(&format!(
            "CONSUMER.CREATE.{}.*.{}",
            names::PROMPTS,
            names::PROMPTS_SUBJECTS
        )),
    ])
}

fn api(what: &str) -> String {
    format!("$JS.API.{what}")
}

fn consumer_info(stream: &str, consumer: &str) -> String {
    api(&format!("CONSUMER.INFO.{stream}.{consumer}"))
}

fn message_get(stream: &str) -> String {
    api(&format!("STREAM.MSG.GET.{stream}"))
}

/// Pulling from a durable consumer and acking what it delivers.
fn consume(stream: &str, consumer: &str) -> Permissions {
    Permissions::default().publish([
        consumer_info(stream, consumer),
        api(&format!("CONSUMER.MSG.NEXT.{stream}.{consumer}")),
        format!("$JS.ACK.{stream}.{consumer}.>"),
    ])
}

/// Reading a stream's messages: by sequence or subject, and through consumers of its own
/// (created, pulled or followed with flow control, deleted).
fn stream_read(stream: &str) -> Permissions {
    Permissions::default().publish([
        message_get(stream),
        api(&format!("DIRECT.GET.{stream}")),
        api(&format!("DIRECT.GET.{stream}.>")),
        api(&format!("CONSUMER.CREATE.{stream}")),
        api(&format!("CONSUMER.CREATE.{stream}.>")),
        api(&format!("CONSUMER.DELETE.{stream}.*")),
        api(&format!("CONSUMER.MSG.NEXT.{stream}.*")),
        consumer_info(stream, "*"),
        format!("$JS.FC.{stream}.>"),
        format!("$JS.ACK.{stream}.>"),
    ])
}

fn bucket_read(bucket: &str) -> Permissions {
    stream_read(&names::bucket_stream(bucket))
}

fn bucket_write(bucket: &str) -> Permissions {
    Permissions::default().publish([format!("$KV.{bucket}.>")])
}

/// Announcing a service: answering `$SRV.PING|INFO|STATS` for all, for its name and for
/// its instance, and its own endpoints.
fn service(kind: WorkerKind) -> Permissions {
    let name = names::service_name(kind);
    Permissions::default()
        .subscribe([
            "$SRV.*".to_string(),
            format!("$SRV.*.{name}"),
            format!("$SRV.*.{name}.*"),
            format!("{name}.>"),
        ])
        .responding()
}

/// Asking the service API of `kinds` for their info and stats.
fn discovery(kinds: impl IntoIterator<Item = WorkerKind>) -> Vec<String> {
    kinds
        .into_iter()
        .flat_map(|kind| {
            let name = names::service_name(kind);
            ["PING", "INFO", "STATS"].map(|verb| format!("$SRV.{verb}.{name}"))
        })
        .collect()
}

/// A nats-server `authorization` block with one user per role: include it in the
/// server's configuration and set each [`Role::password_variable`] in its environment.
pub fn server_config() -> String {
    let mut text = String::from(
        "# cauce's NATS users, one per kind of process, each with only what its code uses.\n\
         # Generated by `cauce nats permissions` from the subject names in cauce-nats:\n\
         # do not edit, run it again. Each password comes from the server's environment.\n\
         authorization {\n  users = [\n",
    );
    for role in Role::ALL {
        text.push_str(&user_block(role, &of(role)));
    }
    text.push_str("  ]\n}\n");
    text
}

fn user_block(role: Role, permissions: &Permissions) -> String {
    let list = |subjects: &[String]| {
        subjects
            .iter()
            .map(|s| format!("          {}", quoted(s)))
            .collect::<Vec<_>>()
            .join(",\n")
    };
    let responses = if permissions.responds {
        "\n      allow_responses: true"
    } else {
        ""
    };
    format!(
        "    {{\n      user: {user}\n      password: ${variable}\n      permissions: {{\n        \
         publish: {{ allow: [\n{publish}\n        ] }}\n        \
         subscribe: {{ allow: [\n{subscribe}\n        ] }}{responses}\n      }}\n    }}\n",
        user = quoted(&role.user()),
        variable = role.password_variable(),
        publish = list(&permissions.publish),
        subscribe = list(&permissions.subscribe),
    )
}

fn quoted(text: &str) -> String {
    serde_json::to_string(text).expect("a string serializes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_worker_may_change_a_stream_or_read_another_roles_replies() {
        for role in [
            Role::Gateway,
            Role::Retrieval,
            Role::Inference,
            Role::Ingest,
        ] {
            let permissions = of(role);
            for subject in &permissions.publish {
                // replacing or deleting an uploaded file purges its old chunks
                let purges_files = subject
                    == &api(&format!(
                        "STREAM.PURGE.{}",
                        names::object_stream(names::UPLOADS_BUCKET)
                    ));
                assert!(
                    !subject.contains("STREAM.CREATE")
                        && !subject.contains("STREAM.UPDATE")
                        && !subject.contains("STREAM.DELETE")
                        && (!subject.contains("STREAM.PURGE") || purges_files)
                        && subject != "$JS.API.>"
                        && subject != ">",
                    "{role:?} may publish {subject}"
                );
            }
            for subject in &permissions.subscribe {
                assert!(
                    !subject.starts_with("_INBOX.") && !subject.starts_with(">"),
                    "{role:?} may subscribe {subject}"
                );
            }
        }
    }

    #[test]
    fn only_what_each_role_uses() {
        let gateway = of(Role::Gateway);
        assert!(!gateway.subscribe.iter().any(|s| s.contains("prompts")));
        assert!(
            !gateway
                .publish
                .iter()
                .any(|s| s.contains("MSG.NEXT.PROMPTS"))
        );
        assert!(
            !gateway
                .publish
                .iter()
                .any(|s| s.contains("MSG.GET.PROMPTS"))
        );
        let inference = of(Role::Inference);
        assert!(
            !inference
                .publish
                .iter()
                .any(|s| s.starts_with("cauce.docs"))
        );
        let ingest = of(Role::Ingest);
        assert!(
            ingest
                .publish
                .iter()
                .filter(|s| s.starts_with("$KV."))
                .all(|s| s == "$KV.cauce-documents.>")
        );
        assert!(
            of(Role::Operator)
                .publish
                .contains(&"$JS.API.>".to_string())
        );
    }

    #[test]
    fn the_server_config_names_every_role_and_no_secret() {
        let config = server_config();
        for role in Role::ALL {
            assert!(config.contains(&format!("\"{}\"", role.user())));
            assert!(config.contains(&format!("${}", role.password_variable())));
        }
    }
}
