//! The reading side of a request's events: which of them reach the client, so that the
//! client sees one answer, never a piece of it twice, never a hole.
//!
//! The writing side keeps two promises (see [`crate::Results`]): a delta says where in
//! the whole answer its text goes (`at`, in bytes), and the request's record held the
//! answer at least up to the end of a delta before the delta was sent. Every attempt
//! continues the answer the record holds, so the pieces of all attempts line up. The
//! rules:
//! - the sources are forwarded once, whatever their numbering (they come from retrieval
//!   and are numbered apart from the inference events);
//! - a delta's text already shown is dropped; the rest of it is forwarded;
//! - a delta that starts beyond what was shown means events were lost (core NATS, a
//!   worker killed between storing and sending): [`Output::Behind`] asks the caller to
//!   read the record and pass its text to [`Relay::recover`], then to offer the event
//!   again;
//! - `done` or `error` of an attempt older than the latest seen is dropped (a worker
//!   that lost its job never sends one, this is a second guard);
//! - `done` says how long the whole answer is: when the client was shown less, the rest
//!   is read from the record ([`Output::Recover`]).
//!
//! [`Relay`] is plain state without I/O; the gateway (and `cauce replay`) drive it.

use crate::wire::{ErrorKind, Event, EventBody, FinishReason, Source, Timings, Usage};

/// What the client should be sent for one event.
#[derive(Clone, Debug, PartialEq)]
pub enum Output {
    Sources(Vec<Source>),
    Text(String),
    /// Events before this one were lost: read the record, pass its text to
    /// [`Relay::recover`], and offer this event again.
    Behind(Box<Event>),
    /// The answer is complete and every piece of it was forwarded.
    Done(Finish),
    /// The answer is complete but the client was not shown all of it: read the record
    /// and pass its text to [`Relay::recover`] before finishing.
    Recover(Finish),
    Failed {
        kind: ErrorKind,
        message: String,
    },
}

/// How the answer ended.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Finish {
    pub finish_reason: FinishReason,
    pub usage: Usage,
    pub timings: Timings,
    /// The answer came from the response cache.
    pub cached: bool,
}

/// Counts of what the relay dropped or had to read from the record.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Dropped {
    pub duplicates: u64,
    pub stale_attempts: u64,
    pub gaps: u64,
}

/// The relay state of one request.
#[derive(Debug, Default)]
pub struct Relay {
    /// The latest attempt seen; 0 before the first event.
    attempt: u32,
    /// Everything the client was shown: the answer up to `shown.len()`.
    shown: String,
    /// A [`Output::Behind`] was answered and the record did not reach the delta: hold
    /// such deltas back until something moves the answer on.
    behind_unfilled: bool,
    sources_sent: bool,
    dropped: Dropped,
}

impl Relay {
    pub fn new() -> Self {
        Self::default()
    }

    /// The text the client was shown so far.
    pub fn text(&self) -> &str {
        &self.shown
    }

    pub fn take_text(&mut self) -> String {
        std::mem::take(&mut self.shown)
    }

    pub fn dropped(&self) -> Dropped {
        self.dropped
    }

    /// The latest attempt whose events were seen.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// Applies the relay rules to one event.
    pub fn accept(&mut self, event: Event) -> Option<Output> {
        if let EventBody::Sources { sources } = event.body {
            if self.sources_sent {
                self.dropped.duplicates += 1;
                return None;
            }
            self.sources_sent = true;
            return Some(Output::Sources(sources));
        }
        if let EventBody::Delta { text, at } = &event.body {
            self.attempt = self.attempt.max(event.attempt);
            let at = *at as usize;
            if at > self.shown.len() {
                return self.behind(event);
            }
            return self.delta(at, text);
        }
        if event.attempt < self.attempt {
            self.dropped.stale_attempts += 1;
            return None;
        }
        self.attempt = event.attempt;
        match event.body {
            EventBody::Done {
                finish_reason,
                usage,
                timings,
                cached,
                text_bytes,
            } => {
                let finish = Finish {
                    finish_reason,
                    usage,
                    timings,
                    cached,
                };
                Some(if (self.shown.len() as u64) < text_bytes {
                    Output::Recover(finish)
                } else {
                    Output::Done(finish)
                })
            }
            EventBody::Error { kind, message } => Some(Output::Failed { kind, message }),
            EventBody::Sources { .. } | EventBody::Delta { .. } => None,
        }
    }

    fn behind(&mut self, event: Event) -> Option<Output> {
        if self.behind_unfilled {
            self.dropped.gaps += 1;
            return None;
        }
        self.behind_unfilled = true;
        Some(Output::Behind(Box::new(event)))
    }

    fn delta(&mut self, at: usize, text: &str) -> Option<Output> {
        let end = at + text.len();
        if end <= self.shown.len() {
            self.dropped.duplicates += 1;
            return None;
        }
        let skip = self.shown.len() - at;
        // attempts agree on the answer, so the cut falls between characters; one that
        // does not is not this answer's text
        let new = text.get(skip..)?;
        self.shown.push_str(new);
        self.behind_unfilled = false;
        Some(Output::Text(new.to_string()))
    }

    /// After [`Output::Behind`] or [`Output::Recover`]: the part of the record's answer
    /// the client has not been shown yet, if any.
    pub fn recover(&mut self, stored_text: &str) -> Option<String> {
        if !stored_text.starts_with(self.shown.as_str()) || stored_text.len() == self.shown.len() {
            return None;
        }
        let rest = stored_text[self.shown.len()..].to_string();
        self.shown.push_str(&rest);
        self.behind_unfilled = false;
        self.dropped.gaps += 1;
        Some(rest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RequestId;

    fn event(attempt: u32, body: EventBody) -> Event {
        Event {
            request_id: RequestId::parse("r").unwrap(),
            attempt,
            seq: 0,
            body,
        }
    }

    fn delta(attempt: u32, at: u64, text: &str) -> Event {
        let text = text.into();
        event(attempt, EventBody::Delta { text, at })
    }

    fn done(attempt: u32, text_bytes: u64) -> Event {
        let body = EventBody::Done {
            finish_reason: FinishReason::Stop,
            usage: Usage::default(),
            timings: Timings::default(),
            cached: false,
            text_bytes,
        };
        event(attempt, body)
    }

    fn texts(relay: &mut Relay, events: Vec<Event>) -> Vec<String> {
        events
            .into_iter()
            .filter_map(|e| match relay.accept(e) {
                Some(Output::Text(t)) => Some(t),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn duplicates_are_dropped_and_overlaps_trimmed() {
        let mut relay = Relay::new();
        let shown = texts(
            &mut relay,
            vec![
                delta(1, 0, "Hel"),
                delta(1, 0, "Hel"),
                delta(1, 3, "lo, w"),
                // a continuing attempt starts where its record ended, which may be
                // before what the client saw
                delta(2, 5, ", wor"),
                delta(2, 10, "ld"),
                delta(1, 8, "or"),
            ],
        );
        assert_eq!(shown, ["Hel", "lo, w", "or", "ld"]);
        assert_eq!(relay.text(), "Hello, world");
        assert_eq!(relay.dropped().duplicates, 2);
        assert!(matches!(relay.accept(done(2, 12)), Some(Output::Done(_))));
    }

    #[test]
    fn an_older_attempt_does_not_end_the_answer() {
        let mut relay = Relay::new();
        texts(&mut relay, vec![delta(1, 0, "a"), delta(2, 1, "b")]);
        assert_eq!(relay.accept(done(1, 2)), None);
        assert_eq!(relay.dropped().stale_attempts, 1);
        assert!(matches!(relay.accept(done(2, 2)), Some(Output::Done(_))));
    }

    #[test]
    fn multibyte_text_is_cut_on_characters() {
        let mut relay = Relay::new();
        let shown = texts(&mut relay, vec![delta(1, 0, "ñan"), delta(2, 2, "andú")]);
        assert_eq!(shown, ["ñan", "dú"]);
        // a cut inside a character is not this answer
        assert_eq!(relay.accept(delta(3, 6, "\u{fa}x")), None);
    }

    #[test]
    fn a_hole_is_filled_from_the_record_then_the_delta_goes_on() {
        let mut relay = Relay::new();
        assert_eq!(texts(&mut relay, vec![delta(1, 0, "one ")]), ["one "]);
        let Some(Output::Behind(event)) = relay.accept(delta(2, 8, "three")) else {
            panic!("a delta beyond what was shown asks for the record");
        };
        assert_eq!(relay.recover("one two three").as_deref(), Some("two three"));
        assert_eq!(relay.accept(*event), None);
        assert_eq!(relay.text(), "one two three");
        assert!(matches!(relay.accept(done(2, 13)), Some(Output::Done(_))));
    }

    #[test]
    fn a_record_that_does_not_reach_holds_deltas_until_the_end() {
        let mut relay = Relay::new();
        let Some(Output::Behind(event)) = relay.accept(delta(1, 4, "two")) else {
            panic!("behind");
        };
        assert_eq!(relay.recover(""), None);
        assert_eq!(relay.accept(*event), None);
        assert_eq!(relay.accept(delta(1, 7, " three")), None);
        assert!(matches!(
            relay.accept(done(1, 13)),
            Some(Output::Recover(_))
        ));
        assert_eq!(
            relay.recover("one two three").as_deref(),
            Some("one two three")
        );
    }

    #[test]
    fn a_lost_last_delta_is_read_from_the_record() {
        let mut relay = Relay::new();
        texts(&mut relay, vec![delta(1, 0, "one ")]);
        assert!(matches!(relay.accept(done(1, 7)), Some(Output::Recover(_))));
        assert_eq!(relay.recover("one two").as_deref(), Some("two"));
    }

    #[test]
    fn a_follower_joining_mid_answer_starts_from_the_record() {
        let mut relay = Relay::new();
        assert!(matches!(
            relay.accept(delta(1, 40, "x")),
            Some(Output::Behind(_))
        ));
    }

    #[test]
    fn sources_pass_once() {
        let mut relay = Relay::new();
        let sources = event(1, EventBody::Sources { sources: vec![] });
        assert!(matches!(
            relay.accept(sources.clone()),
            Some(Output::Sources(_))
        ));
        assert_eq!(relay.accept(sources), None);
        assert_eq!(texts(&mut relay, vec![delta(1, 0, "a")]), ["a"]);
    }
}
