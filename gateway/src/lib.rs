//! `cauce-gateway` will own HTTP: the OpenAI-compatible chat API with Server-Sent
//! Events, the tasks API, the chat page, admission control, health and metrics. It is
//! the only crate that maps errors to HTTP status codes.
//!
//! It does not search nor run models: everything behind it talks NATS. Not built yet;
//! the foundation only reserves the crate.
