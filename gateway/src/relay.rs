//! The relay rules: which events of a request reach the client, so that the client
//! never sees a piece of text twice nor a hole in the answer.
//!
//! Events carry an `attempt` (the JetStream delivery count of the job that produced
//! them) and a `seq` numbering the events of one attempt from 0. The rules:
//! - the sources are forwarded once, whatever their numbering (they come from retrieval
//!   and are numbered apart from the inference events);
//! - an event of an earlier attempt than the latest seen is dropped;
//! - an event whose `seq` was already seen in its attempt is a duplicate and dropped;
//! - a redelivered job regenerates the answer from the start, so of a new attempt's
//!   text only what lies beyond what the client was already shown is forwarded;
//! - a `seq` jump is a gap: the attempt's later deltas are held back, and when it ends
//!   the full text is read from `cauce-results` ([`Output::Recover`], [`Relay::recover`]).
//!
//! [`Relay`] is plain state without I/O; [`crate::pending`] drives it.

use cauce_nats::wire::{ErrorKind, Event, EventBody, FinishReason, Source, Timings, Usage};

/// What the client should be sent for one event.
#[derive(Clone, Debug, PartialEq)]
pub enum Output {
    Sources(Vec<Source>),
    Text(String),
    /// The answer is complete and every piece of it was forwarded.
    Done(Finish),
    /// The answer is complete but a gap hid part of it: read the stored result and pass
    /// its text to [`Relay::recover`] before finishing.
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

/// Counts of what the relay dropped, for metrics and logs.
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
    /// The next `seq` expected in `attempt`.
    next_seq: u64,
    /// Characters of `attempt`'s text received without a gap.
    attempt_chars: usize,
    /// The current attempt lost an event: its later deltas are held back.
    gap: bool,
    /// Joined a running request (tasks API): the text before the join is unknown, so a
    /// later attempt cannot be lined up with what was shown.
    unaligned: bool,
    /// The next delta may start mid-answer without being a gap.
    joining: bool,
    /// Everything the client was shown.
    shown: String,
    shown_chars: usize,
    sources_sent: bool,
    dropped: Dropped,
}

impl Relay {
    /// A relay for a request followed from its start.
    pub fn new() -> Self {
        Self::default()
    }

    /// A relay for a request already running: the first event it sees may be in the
    /// middle of the answer.
    pub fn joining() -> Self {
        Self {
            joining: true,
            ..Self::default()
        }
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
        if event.attempt < self.attempt {
            self.dropped.stale_attempts += 1;
            return None;
        }
        if event.attempt > self.attempt {
            self.attempt = event.attempt;
            self.next_seq = 0;
            self.attempt_chars = 0;
            self.gap = self.unaligned;
        }
        if event.seq < self.next_seq {
            self.dropped.duplicates += 1;
            return None;
        }
        if event.seq > self.next_seq {
            if self.joining {
                self.unaligned = true;
            } else {
                self.gap = true;
                self.dropped.gaps += 1;
            }
        }
        self.joining = false;
        self.next_seq = event.seq + 1;
        match event.body {
            EventBody::Sources { .. } => None,
            EventBody::Delta { text } => self.delta(text),
            EventBody::Done {
                finish_reason,
                usage,
                timings,
                cached,
            } => {
                let finish = Finish {
                    finish_reason,
                    usage,
                    timings,
                    cached,
                };
                Some(if self.gap {
                    Output::Recover(finish)
                } else {
                    Output::Done(finish)
                })
            }
            EventBody::Error { kind, message } => Some(Output::Failed { kind, message }),
        }
    }

    fn delta(&mut self, text: String) -> Option<Output> {
        if self.gap {
            return None;
        }
        if self.unaligned {
            self.shown.push_str(&text);
            return Some(Output::Text(text));
        }
        let before = self.attempt_chars;
        self.attempt_chars += text.chars().count();
        if self.attempt_chars <= self.shown_chars {
            return None;
        }
        let skip = self.shown_chars.saturating_sub(before);
        let new = if skip == 0 {
            text
        } else {
            text.chars().skip(skip).collect()
        };
        self.shown.push_str(&new);
        self.shown_chars = self.attempt_chars;
        Some(Output::Text(new))
    }

    /// After [`Output::Recover`]: the part of the stored answer the client has not
    /// been shown yet, if any.
    pub fn recover(&mut self, stored_text: &str) -> Option<String> {
        if self.unaligned {
            return None;
        }
        let rest: String = stored_text.chars().skip(self.shown_chars).collect();
        if rest.is_empty() {
            return None;
        }
        self.shown.push_str(&rest);
        self.shown_chars += rest.chars().count();
        Some(rest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cauce_nats::RequestId;

    fn event(attempt: u32, seq: u64, body: EventBody) -> Event {
        Event {
            request_id: RequestId::parse("r").unwrap(),
            attempt,
            seq,
            body,
        }
    }

    fn delta(attempt: u32, seq: u64, text: &str) -> Event {
        event(attempt, seq, EventBody::Delta { text: text.into() })
    }

    fn done(attempt: u32, seq: u64) -> Event {
        let body = EventBody::Done {
            finish_reason: FinishReason::Stop,
            usage: Usage::default(),
            timings: Timings::default(),
            cached: false,
        };
        event(attempt, seq, body)
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
    fn duplicates_and_stale_attempts_are_dropped() {
        let mut relay = Relay::new();
        let shown = texts(
            &mut relay,
            vec![
                delta(2, 0, "a"),
                delta(2, 0, "a"),
                delta(1, 1, "x"),
                delta(2, 1, "b"),
            ],
        );
        assert_eq!(shown, ["a", "b"]);
        assert_eq!(
            relay.dropped(),
            Dropped {
                duplicates: 1,
                stale_attempts: 1,
                gaps: 0
            }
        );
    }

    #[test]
    fn a_new_attempt_continues_without_repeating() {
        let mut relay = Relay::new();
        let shown = texts(
            &mut relay,
            vec![
                delta(1, 0, "Hel"),
                delta(1, 1, "lo, w"),
                delta(2, 0, "He"),
                delta(2, 1, "llo"),
                delta(2, 2, ", wor"),
                delta(2, 3, "ld"),
                delta(1, 2, "orld"),
            ],
        );
        assert_eq!(shown, ["Hel", "lo, w", "or", "ld"]);
        assert_eq!(relay.text(), "Hello, world");
        assert!(matches!(relay.accept(done(2, 4)), Some(Output::Done(_))));
    }

    #[test]
    fn multibyte_text_is_split_on_characters() {
        let mut relay = Relay::new();
        let shown = texts(
            &mut relay,
            vec![delta(1, 0, "ñan"), delta(2, 0, "ña"), delta(2, 1, "ndú")],
        );
        assert_eq!(shown, ["ñan", "dú"]);
    }

    #[test]
    fn a_gap_holds_back_text_until_recovery() {
        let mut relay = Relay::new();
        let shown = texts(&mut relay, vec![delta(1, 0, "one "), delta(1, 2, "three ")]);
        assert_eq!(shown, ["one "]);
        assert!(matches!(relay.accept(done(1, 3)), Some(Output::Recover(_))));
        assert_eq!(relay.recover("one two three").as_deref(), Some("two three"));
        assert_eq!(relay.text(), "one two three");
        assert_eq!(relay.dropped().gaps, 1);
    }

    #[test]
    fn sources_pass_once() {
        let mut relay = Relay::new();
        let sources = event(1, 0, EventBody::Sources { sources: vec![] });
        assert!(matches!(
            relay.accept(sources.clone()),
            Some(Output::Sources(_))
        ));
        assert_eq!(relay.accept(sources), None);
        assert_eq!(texts(&mut relay, vec![delta(1, 0, "a")]), ["a"]);
    }

    #[test]
    fn joining_mid_answer_is_not_a_gap() {
        let mut relay = Relay::joining();
        assert_eq!(
            texts(&mut relay, vec![delta(1, 5, "x"), delta(1, 6, "y")]),
            ["x", "y"]
        );
        assert!(matches!(relay.accept(done(1, 7)), Some(Output::Done(_))));
    }
}
