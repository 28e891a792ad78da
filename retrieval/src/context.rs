//! Context assembly: from scored passage hits to the passages of a prompt.
//!
//! Hits arrive best first. A hit next to one already chosen from the same document
//! and section (ordinals one apart: ingest repeats the end of a passage at the start of
//! the next) is merged into it, its repeated overlap removed, keeping the better score.
//! Another hit of a document already chosen is skipped: the sources are distinct
//! documents, so that one long page does not take every place (on the Python
//! documentation set of `ops/eval-retrieval` this took hit@4 from 0.524 to 0.560).
//! Documents are taken in the order of their best hit plus a share of their second.
//! Up to `top_k` passages are kept, whole: a passage is never cut to fit a prompt, so
//! one passage is the same text in every prompt it enters (fitting the model's
//! context drops whole passages, see `fit.rs`).

use std::collections::HashMap;

use cauce_nats::DocId;
use cauce_nats::wire::Passage;

/// Share of a document's second best hit added to its score (tuned on the even
/// questions of `ops/eval-retrieval`: 0.15 to 0.45 gave hit@4 0.750–0.758, 0 gave 0.718).
const SECOND_HIT_WEIGHT: f32 = 0.3;

/// One hit of the search, with what context assembly needs of it.
#[derive(Clone, Debug, PartialEq)]
pub struct Hit {
    pub passage: Passage,
    /// Position of the passage in its document.
    pub ord: u64,
}

/// Chooses and merges hits into the passages of a prompt, best first.
pub fn assemble(hits: Vec<Hit>, top_k: usize) -> Vec<Passage> {
    let hits = by_document(hits);
    // (passage, first ord, last ord)
    let mut chosen: Vec<(Passage, u64, u64)> = Vec::new();
    for hit in hits {
        // one source per document: a second section of a page it already has would
        // crowd out another page
        let room = chosen.len() < top_k
            && !chosen
                .iter()
                .any(|(p, _, _)| p.doc_id == hit.passage.doc_id);
        let neighbour = chosen.iter_mut().find(|(p, first, last)| {
            p.doc_id == hit.passage.doc_id
                && p.version == hit.passage.version
                && p.heading_path == hit.passage.heading_path
                && (hit.ord + 1 == *first || *last + 1 == hit.ord)
        });
        match neighbour {
            Some((passage, first, last)) => {
                if hit.ord < *first {
                    passage.text = merge_overlapping(&hit.passage.text, &passage.text);
                    *first = hit.ord;
                } else {
                    passage.text = merge_overlapping(&passage.text, &hit.passage.text);
                    *last = hit.ord;
                }
                passage.score = passage.score.max(hit.passage.score);
            }
            None if room => chosen.push((hit.passage, hit.ord, hit.ord)),
            None => {}
        }
    }

    chosen.into_iter().map(|(passage, _, _)| passage).collect()
}

/// Hits in the order of their documents' scores, best hit first within a document. A
/// document scores its best hit plus [`SECOND_HIT_WEIGHT`] of its next one: a page
/// that answers in two places outranks one that matched once as well.
fn by_document(hits: Vec<Hit>) -> Vec<Hit> {
    let mut scores: HashMap<DocId, (f32, usize)> = HashMap::new();
    for hit in &hits {
        let (score, seen) = scores.entry(hit.passage.doc_id.clone()).or_insert((0.0, 0));
        match *seen {
            0 => *score = hit.passage.score,
            1 => *score += SECOND_HIT_WEIGHT * hit.passage.score,
            _ => {}
        }
        *seen += 1;
    }
    let mut ranked: Vec<(f32, Hit)> = hits
        .into_iter()
        .map(|hit| (scores[&hit.passage.doc_id].0, hit))
        .collect();
    ranked.sort_by(|(a_doc, a), (b_doc, b)| {
        b_doc
            .total_cmp(a_doc)
            .then(b.passage.score.total_cmp(&a.passage.score))
    });
    ranked.into_iter().map(|(_, hit)| hit).collect()
}

/// `first` followed by `second`, without the text that ends `first` and starts `second`.
pub fn merge_overlapping(first: &str, second: &str) -> String {
    let longest = first.len().min(second.len());
    let overlap = (1..=longest)
        .rev()
        .filter(|&n| first.is_char_boundary(first.len() - n) && second.is_char_boundary(n))
        .find(|&n| first.ends_with(&second[..n]))
        .unwrap_or(0);
    if overlap == 0 {
        return format!("{first}\n\n{second}");
    }
    format!("{first}{}", &second[overlap..])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hit(doc: &str, ord: u64, score: f32, text: &str) -> Hit {
        Hit {
            passage: Passage {
                doc_id: DocId::parse(doc).unwrap(),
                version: "v1".into(),
                title: doc.into(),
                heading_path: vec!["H".into()],
                location: format!("{doc}.md"),
                score,
                text: text.into(),
            },
            ord,
        }
    }

    #[test]
    fn neighbours_of_one_document_merge_without_repeating_the_overlap() {
        let hits = vec![
            hit("a", 1, 3.0, "second part. and the third"),
            hit("b", 0, 2.0, "other doc"),
            hit("a", 0, 1.0, "first part. second part."),
            hit("a", 5, 0.5, "far away"),
        ];
        let out = assemble(hits, 2);
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].text, "first part. second part. and the third");
        assert_eq!(out[0].score, 3.0);
        assert_eq!(out[1].doc_id.as_str(), "b");
    }

    #[test]
    fn a_document_matching_twice_outranks_one_matching_once_a_little_better() {
        let hits = vec![
            hit("once", 0, 3.0, "a"),
            hit("twice", 0, 2.8, "b"),
            hit("twice", 7, 2.0, "c"),
        ];
        let out = assemble(hits, 2);
        let docs: Vec<&str> = out.iter().map(|p| p.doc_id.as_str()).collect();
        assert_eq!(docs, ["twice", "once"]);
        assert_eq!(out[0].text, "b", "the document's best hit stands for it");
    }

    #[test]
    fn merge_without_overlap_keeps_both() {
        assert_eq!(merge_overlapping("abc", "def"), "abc\n\ndef");
        assert_eq!(merge_overlapping("añb c", "b cd"), "añb cd");
    }
}
