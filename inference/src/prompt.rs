//! The conversation a model sees: the request's messages, with the retrieved passages
//! put into the system message as numbered sources.
//!
//! The system message is the request's own system text (if any), a blank line, then:
//!
//! ```text
//! Answer using the numbered sources below when they are relevant, and cite them by
//! number in brackets, like [1]. If they do not contain the answer, say so.
//!
//! [1] Title › Heading › Subheading (docs/guide.md#anchor)
//! passage text
//!
//! [2] …
//! ```
//!
//! The passages are listed in the job's [prompt order](PromptJob::prompt_order), by
//! document rather than by rank, so that two questions retrieving the same passages
//! share the whole prefix up to the conversation, and the inference worker's caches
//! (its slots, its host cache) compute it once. The numbers match the `number` of the
//! sources the client receives; the sources themselves arrive best first.

use cauce_nats::wire::{Passage, PromptJob, Role};
use llama_cpp_2::model::{LlamaChatMessage, LlamaChatTemplate, LlamaModel};
use llama_cpp_2::token::LlamaToken;

use crate::error::{Error, Result};

/// The instruction that introduces the sources.
pub const SOURCES_INSTRUCTION: &str = "Answer using the numbered sources below when they are \
relevant, and cite them by number in brackets, like [1]. If they do not contain the answer, say so.";

/// One message ready for the chat template.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TemplateMessage {
    pub role: &'static str,
    pub content: String,
}

/// The messages of a job, with the sources folded into the system message.
pub fn messages(job: &PromptJob) -> Vec<TemplateMessage> {
    let request = &job.request;
    let mut system_parts: Vec<String> = request
        .messages
        .iter()
        .filter(|m| m.role == Role::System)
        .map(|m| m.content.clone())
        .collect();
    if !job.passages.is_empty() {
        system_parts.push(sources_block(&job.prompt_order()));
    }
    let mut out = Vec::with_capacity(request.messages.len() + 1);
    if !system_parts.is_empty() {
        out.push(TemplateMessage {
            role: "system",
            content: system_parts.join("\n\n"),
        });
    }
    for message in &request.messages {
        let role = match message.role {
            Role::System => continue,
            Role::User => "user",
            Role::Assistant => "assistant",
        };
        out.push(TemplateMessage {
            role,
            content: message.content.clone(),
        });
    }
    out
}

/// The model's own chat template, else ChatML.
pub fn template(model: &LlamaModel) -> Result<LlamaChatTemplate> {
    model
        .chat_template(None)
        .or_else(|_| LlamaChatTemplate::new("chatml"))
        .map_err(|e| Error::Template(e.to_string()))
}

/// A job's whole prompt in the model's tokens: its [`text`], ready for the answer.
/// The engine prefills exactly these, and retrieval counts them (through
/// [`crate::vocab`]) before it sends the sources.
pub fn tokens(
    model: &LlamaModel,
    template: &LlamaChatTemplate,
    job: &PromptJob,
) -> Result<Vec<LlamaToken>> {
    let text = text(model, template, job)?;
    Ok(model.vocab().tokenize(text.as_bytes(), true, true))
}

/// A job's whole prompt as text: its [`messages`] through the chat template.
pub fn text(model: &LlamaModel, template: &LlamaChatTemplate, job: &PromptJob) -> Result<String> {
    let messages = messages(job)
        .into_iter()
        .map(|m| LlamaChatMessage::new(m.role.to_string(), m.content))
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::Template(e.to_string()))?;
    model
        .apply_chat_template(template, &messages, true)
        .map_err(|e| Error::Template(e.to_string()))
}

fn sources_block(passages: &[&Passage]) -> String {
    let mut block = String::from(SOURCES_INSTRUCTION);
    for (number, passage) in (1..).zip(passages) {
        block.push_str(&format!("\n\n[{number}] {}", passage.title));
        for heading in &passage.heading_path {
            if heading != &passage.title {
                block.push_str(" › ");
                block.push_str(heading);
            }
        }
        block.push_str(&format!(" ({})\n{}", passage.location, passage.text.trim()));
    }
    block
}

#[cfg(test)]
mod tests {
    use super::*;
    use cauce_nats::wire::{ChatMessage, ChatRequest, RetrievalOptions, Sampling};
    use cauce_nats::{DocId, GatewayId, ModelName, RequestId};

    fn job(messages: Vec<ChatMessage>, passages: Vec<Passage>) -> PromptJob {
        PromptJob {
            request: ChatRequest {
                id: RequestId::generate(),
                gateway: GatewayId::parse("gw").unwrap(),
                model: ModelName::default_model(),
                messages,
                sampling: Sampling::default(),
                retrieval: RetrievalOptions::default(),
                created_at_ms: 0,
                deadline_ms: 0,
                replay_of: None,
            },
            passages,
            retrieved_at_ms: 0,
        }
    }

    fn passage(title: &str, text: &str) -> Passage {
        Passage {
            doc_id: DocId::parse(title.to_lowercase()).unwrap(),
            version: "v".into(),
            title: title.into(),
            heading_path: vec![title.into(), "Ports".into()],
            location: "docs/config.md#ports".into(),
            score: 1.0,
            text: text.into(),
        }
    }

    #[test]
    fn sources_are_numbered_in_the_system_message() {
        let user = ChatMessage {
            role: Role::User,
            content: "which port?".into(),
        };
        let system = ChatMessage {
            role: Role::System,
            content: "Be brief.".into(),
        };
        let out = messages(&job(
            vec![system, user],
            vec![
                passage("Scaling", "More workers."),
                passage("Configuration", "The gateway listens on 8080."),
            ],
        ));
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].role, "system");
        assert!(out[0].content.starts_with("Be brief.\n\nAnswer using"));
        assert!(out[0].content.contains(
            "[1] Configuration › Ports (docs/config.md#ports)\nThe gateway listens on 8080."
        ));
        assert!(out[0].content.contains("\n\n[2] Scaling › Ports"));
        // best first for the client, numbered as the prompt cites them
        let job = job(
            vec![],
            vec![passage("Scaling", "x"), passage("Configuration", "y")],
        );
        let numbers: Vec<_> = job
            .sources()
            .iter()
            .map(|s| (s.doc_id.to_string(), s.number))
            .collect();
        assert_eq!(
            numbers,
            [("scaling".into(), 2), ("configuration".into(), 1)]
        );
        assert_eq!(
            out[1],
            TemplateMessage {
                role: "user",
                content: "which port?".into()
            }
        );
    }

    #[test]
    fn without_sources_or_system_text_there_is_no_system_message() {
        let turns = vec![
            ChatMessage {
                role: Role::User,
                content: "hi".into(),
            },
            ChatMessage {
                role: Role::Assistant,
                content: "hello".into(),
            },
            ChatMessage {
                role: Role::User,
                content: "bye".into(),
            },
        ];
        let out = messages(&job(turns, vec![]));
        let roles: Vec<_> = out.iter().map(|m| m.role).collect();
        assert_eq!(roles, ["user", "assistant", "user"]);
    }
}
