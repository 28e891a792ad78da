//! Turning a conversation into a tantivy query without ever parsing user text as
//! query syntax.
//!
//! The text is run through the index's own analyzer, so quotes, `AND`, parentheses,
//! `*`, `:` and emoji are at most plain words, and the query is built from term
//! queries by hand: a `Should` clause per (term, field), boosted per field. The last
//! user turn carries full weight; the previous user turn is added at a lower weight,
//! and the assistant's answer to it lower still, which is what resolves a follow-up
//! such as "and what about its second part?" (its own words are mostly stop words)
//! without letting an old topic outrank the new one.
//! Terms are deduplicated and capped, so ten thousand characters of input make a
//! query of bounded size. A long turn (a pasted paragraph, a stack trace) is cut
//! further, at search time, to the terms that best tell passages apart (highest
//! weight × IDF): scoring cost grows with every common term's posting list, while
//! words like "use" or "function" add almost nothing to the ranking of a long
//! question. On the Python documentation this took the p99 of pasted paragraphs from
//! about 11 ms to under 5 ms (see `benches/corpus`).

use std::collections::HashSet;

use cauce_nats::wire::{ChatMessage, Role};
use tantivy::query::{BooleanQuery, BoostQuery, Occur, Query, TermQuery};
use tantivy::schema::IndexRecordOption;
use tantivy::tokenizer::TextAnalyzer;
use tantivy::{Searcher, Term};

use crate::schema::{Fields, analyze};

/// Most distinct terms taken from the last user turn.
const MAX_TERMS_LAST_TURN: usize = 48;
/// Most distinct terms taken from the previous user turn.
const MAX_TERMS_PREVIOUS_TURN: usize = 16;
/// Weight of the previous turn's terms against the last turn's.
const PREVIOUS_TURN_WEIGHT: f32 = 0.6;
/// Most distinct terms taken from the answer to the previous user turn.
const MAX_TERMS_PREVIOUS_ANSWER: usize = 16;
/// Weight of that answer's terms: the names it gave (`shutil.copy`, `enum.Enum`) are
/// what a follow-up ("and keep the modification time too") is about.
const PREVIOUS_ANSWER_WEIGHT: f32 = 0.3;
/// Most terms one search scores; past this, [`SearchTerms::most_selective`] keeps the
/// rarest.
pub const MAX_QUERY_TERMS: usize = 20;

/// The weighted terms to search for.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SearchTerms {
    pub terms: Vec<(String, f32)>,
}

impl SearchTerms {
    /// Terms of the last user turn, then the previous user turn's and the answer to it
    /// at lower weights.
    pub fn from_conversation(analyzer: &mut TextAnalyzer, messages: &[ChatMessage]) -> Self {
        let mut user_turns = messages.iter().rev().filter(|m| m.role == Role::User);
        let last = user_turns.next();
        let previous = user_turns.next();
        // the assistant's turn between the two user turns
        let answer = messages
            .iter()
            .rev()
            .skip_while(|m| m.role != Role::User)
            .skip(1)
            .take_while(|m| m.role == Role::Assistant)
            .last()
            .filter(|_| previous.is_some());
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
        if let Some(answer) = answer {
            push_terms(
                analyzer,
                &answer.content,
                PREVIOUS_ANSWER_WEIGHT,
                MAX_TERMS_PREVIOUS_ANSWER,
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

    /// At most `max` terms: when there are more, those that best tell passages apart
    /// (weight × IDF in the passage text), in their original order. Terms no searched
    /// field holds are dropped first: they would only take a place.
    pub fn most_selective(
        self,
        searcher: &Searcher,
        fields: &Fields,
        max: usize,
    ) -> tantivy::Result<Self> {
        if self.terms.len() <= max {
            return Ok(self);
        }
        let passages = searcher.num_docs() as f32;
        let mut ranked = Vec::with_capacity(self.terms.len());
        for (position, (term, weight)) in self.terms.iter().enumerate() {
            let Some(doc_freq) = doc_freq(searcher, fields, term)? else {
                continue;
            };
            let doc_freq = doc_freq as f32;
            let idf = (1.0 + (passages - doc_freq + 0.5) / (doc_freq + 0.5)).ln();
            ranked.push((weight * idf, position));
        }
        ranked.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        ranked.truncate(max);
        ranked.sort_by_key(|&(_, position)| position);
        let terms = ranked
            .into_iter()
            .map(|(_, position)| self.terms[position].clone())
            .collect();
        Ok(Self { terms })
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

/// Passages whose text holds `term`; for a term only in titles or headings, the
/// passages holding it there; `None` when no searched field holds it.
fn doc_freq(searcher: &Searcher, fields: &Fields, term: &str) -> tantivy::Result<Option<u64>> {
    let in_text = searcher.doc_freq(&Term::from_field_text(fields.text, term))?;
    if in_text > 0 {
        return Ok(Some(in_text));
    }
    let mut elsewhere = 0;
    for field in [fields.title, fields.headings] {
        elsewhere += searcher.doc_freq(&Term::from_field_text(field, term))?;
    }
    Ok((elsewhere > 0).then_some(elsewhere))
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
            terms.contains(&("url".into(), PREVIOUS_ANSWER_WEIGHT)),
            "the answer to the previous turn, lower still: {terms:?}"
        );
        // without a previous user turn there is no answer to it
        let opening = [
            message(Role::Assistant, "Hello, ask me about cauce."),
            message(Role::User, "what is a gateway?"),
        ];
        let terms = SearchTerms::from_conversation(&mut analyzer, &opening).terms;
        assert!(!terms.iter().any(|(t, _)| t == "hello"), "{terms:?}");
    }

    #[test]
    fn a_long_turn_keeps_its_rarest_terms_in_order() {
        let index = tantivy::Index::create_in_ram(crate::schema::schema(Language::English));
        crate::schema::register_analyzer(&index, Language::English);
        let fields = Fields::of(&index.schema()).unwrap();
        let mut writer: tantivy::IndexWriter = index.writer(15_000_000).unwrap();
        for text in ["common pelican", "common heron", "common", "common"] {
            let mut doc = tantivy::TantivyDocument::default();
            doc.add_text(fields.text, text);
            writer.add_document(doc).unwrap();
        }
        writer.commit().unwrap();
        let searcher = index.reader().unwrap().searcher();
        let mut analyzer = Language::English.analyzer();
        let terms = SearchTerms::from_text(&mut analyzer, "heron common unheard pelican");
        let kept = terms.clone().most_selective(&searcher, &fields, 2).unwrap();
        let kept: Vec<&str> = kept.terms.iter().map(|(t, _)| t.as_str()).collect();
        assert_eq!(kept, ["heron", "pelican"]);
        let short = terms.clone().most_selective(&searcher, &fields, 4).unwrap();
        assert_eq!(short, terms, "a query under the cap is left alone");
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
