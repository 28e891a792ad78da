//! Turning a conversation into a tantivy query without ever parsing user text as
//! query syntax.
//!
//! The text is run through the index's own analyzer, so quotes, `AND`, parentheses,
//! `*`, `:` and emoji are at most plain words, and the query is built from term
//! queries by hand: a `Should` clause per (term, field), boosted per field. The last
//! user turn carries full weight; the previous user turn is added at a lower weight,
//! which is what resolves a follow-up such as "and what about its second part?" (its
//! own words are mostly stop words) without letting an old topic outrank the new one.
//! Terms are deduplicated and capped, so ten thousand characters of input make a
//! query of bounded size.

use std::collections::HashSet;

use cauce_nats::wire::{ChatMessage, Role};
use tantivy::Term;
use tantivy::query::{BooleanQuery, BoostQuery, Occur, Query, TermQuery};
use tantivy::schema::IndexRecordOption;
use tantivy::tokenizer::TextAnalyzer;

use crate::schema::{Fields, analyze};

/// Most distinct terms taken from the last user turn.
const MAX_TERMS_LAST_TURN: usize = 48;
/// Most distinct terms taken from the previous user turn.
const MAX_TERMS_PREVIOUS_TURN: usize = 16;
/// Weight of the previous turn's terms against the last turn's.
const PREVIOUS_TURN_WEIGHT: f32 = 0.35;

/// The weighted terms to search for.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SearchTerms {
    pub terms: Vec<(String, f32)>,
}

impl SearchTerms {
    /// Terms of the last user turn, then the previous user turn's at a lower weight.
    pub fn from_conversation(analyzer: &mut TextAnalyzer, messages: &[ChatMessage]) -> Self {
        let mut user_turns = messages.iter().rev().filter(|m| m.role == Role::User);
        let last = user_turns.next();
        let previous = user_turns.next();
        let mut seen = HashSet::new();
        let mut terms = Vec::new();
        if let Some(last) = last {
            push_terms(
                analyzer,
                &last.content,
                1.0,
                MAX_TERMS_LAST_TURN,
                &mut seen,
                &mut terms,
            );
        }
        if let Some(previous) = previous {
            push_terms(
                analyzer,
                &previous.content,
                PREVIOUS_TURN_WEIGHT,
                MAX_TERMS_PREVIOUS_TURN,
                &mut seen,
                &mut terms,
            );
        }
        Self { terms }
    }

    /// Terms of one piece of text, all at full weight.
    pub fn from_text(analyzer: &mut TextAnalyzer, text: &str) -> Self {
        let mut terms = Vec::new();
        push_terms(
            analyzer,
            text,
            1.0,
            MAX_TERMS_LAST_TURN,
            &mut HashSet::new(),
            &mut terms,
        );
        Self { terms }
    }

    pub fn is_empty(&self) -> bool {
        self.terms.is_empty()
    }

    /// A disjunction of boosted term queries over the searched fields.
    pub fn to_query(&self, fields: &Fields) -> Box<dyn Query> {
        let mut clauses: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        for (term, weight) in &self.terms {
            for (field, boost) in fields.searched() {
                let query = TermQuery::new(
                    Term::from_field_text(field, term),
                    IndexRecordOption::WithFreqs,
                );
                clauses.push((
                    Occur::Should,
                    Box::new(BoostQuery::new(Box::new(query), boost * weight)),
                ));
            }
        }
        Box::new(BooleanQuery::new(clauses))
    }
}

fn push_terms(
    analyzer: &mut TextAnalyzer,
    text: &str,
    weight: f32,
    max: usize,
    seen: &mut HashSet<String>,
    out: &mut Vec<(String, f32)>,
) {
    let mut taken = 0;
    for term in analyze(analyzer, text) {
        if taken >= max {
            break;
        }
        if seen.insert(term.clone()) {
            out.push((term, weight));
            taken += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::Language;

    fn message(role: Role, content: &str) -> ChatMessage {
        ChatMessage {
            role,
            content: content.into(),
        }
    }

    #[test]
    fn follow_up_borrows_the_previous_turn_at_lower_weight() {
        let mut analyzer = Language::English.analyzer();
        let messages = [
            message(Role::User, "How do I scale out retrieval workers?"),
            message(Role::Assistant, "Start more of them with the same URL."),
            message(Role::User, "and what about its second part?"),
        ];
        let terms = SearchTerms::from_conversation(&mut analyzer, &messages).terms;
        assert!(terms.contains(&("second".into(), 1.0)), "{terms:?}");
        assert!(
            terms.contains(&("retriev".into(), PREVIOUS_TURN_WEIGHT)),
            "{terms:?}"
        );
        assert!(
            !terms.iter().any(|(t, _)| t == "url"),
            "assistant turns are not searched: {terms:?}"
        );
    }

    #[test]
    fn huge_input_gives_a_bounded_query() {
        let mut analyzer = Language::English.analyzer();
        let text: String = (0..5000).map(|i| format!("word{i} ")).collect();
        assert_eq!(
            SearchTerms::from_text(&mut analyzer, &text).terms.len(),
            MAX_TERMS_LAST_TURN
        );
        assert!(SearchTerms::from_text(&mut analyzer, "?!… \"\" (( ::").is_empty());
    }
}
