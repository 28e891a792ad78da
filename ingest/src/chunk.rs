//! Splitting sections into passages: paragraphs are packed together up to a target
//! size, a paragraph longer than the target is cut at sentence or word boundaries, and
//! each passage after the first of a section starts with the last few words of the
//! one before (the overlap), so a fact that straddles a cut is still found whole.
//! Passages never cross a heading: each keeps its section's heading path and anchor.

use cauce_nats::wire::DocPassage;

use crate::extract::Section;

/// How big passages are, in characters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkOptions {
    /// Passages are packed up to about this many characters.
    pub target_chars: usize,
    /// Characters of the previous passage repeated at the start of the next one.
    pub overlap_chars: usize,
}

impl Default for ChunkOptions {
    fn default() -> Self {
        Self {
            target_chars: 1000,
            overlap_chars: 150,
        }
    }
}

impl ChunkOptions {
    /// The options with the overlap capped at half the target, so passages always advance.
    pub fn normalized(self) -> Self {
        let target_chars = self.target_chars.max(64);
        Self {
            target_chars,
            overlap_chars: self.overlap_chars.min(target_chars / 2),
        }
    }
}

/// Splits sections into passages.
pub fn passages(sections: &[Section], options: ChunkOptions) -> Vec<DocPassage> {
    let options = options.normalized();
    let mut out = Vec::new();
    for section in sections {
        let mut current = String::new();
        let mut current_has_new_text = false;
        let pieces = section
            .paragraphs
            .iter()
            .flat_map(|p| split_long(p, options.target_chars));
        for piece in pieces {
            if current_has_new_text
                && char_len(&current) + 2 + char_len(piece) > options.target_chars
            {
                let overlap = tail(&current, options.overlap_chars).to_string();
                out.push(passage(section, std::mem::replace(&mut current, overlap)));
            }
            if !current.is_empty() {
                current.push_str("\n\n");
            }
            current.push_str(piece);
            current_has_new_text = true;
        }
        if current_has_new_text {
            out.push(passage(section, current));
        }
    }
    out
}

fn passage(section: &Section, text: String) -> DocPassage {
    DocPassage {
        heading_path: section.heading_path.clone(),
        anchor: section.anchor.clone(),
        text,
    }
}

fn char_len(text: &str) -> usize {
    text.chars().count()
}

/// Cuts `text` into pieces of at most `max` characters, preferring to cut after a
/// sentence, then at whitespace, and only inside a word when there is no whitespace.
fn split_long(text: &str, max: usize) -> Vec<&str> {
    let mut pieces = Vec::new();
    let mut rest = text.trim();
    while char_len(rest) > max {
        let limit = rest.char_indices().nth(max).map_or(rest.len(), |(i, _)| i);
        let window = &rest[..limit];
        let cut = window
            .rfind(". ")
            .map(|i| i + 1)
            .filter(|&i| i > limit / 2)
            .or_else(|| window.rfind(char::is_whitespace).filter(|&i| i > 0))
            .unwrap_or(limit);
        pieces.push(rest[..cut].trim_end());
        rest = rest[cut..].trim_start();
    }
    if !rest.is_empty() {
        pieces.push(rest);
    }
    pieces
}

/// The last `max` characters of `text` or fewer, starting at a word.
fn tail(text: &str, max: usize) -> &str {
    if max == 0 {
        return "";
    }
    let total = char_len(text);
    if total <= max {
        return text;
    }
    let start = text
        .char_indices()
        .nth(total - max)
        .map_or(text.len(), |(i, _)| i);
    let window = &text[start..];
    match window.find(char::is_whitespace) {
        Some(space) => window[space..].trim_start(),
        None => window,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(paragraphs: &[&str]) -> Section {
        Section {
            heading_path: vec!["Guide".into()],
            anchor: Some("guide".into()),
            paragraphs: paragraphs.iter().map(|p| p.to_string()).collect(),
        }
    }

    #[test]
    fn small_paragraphs_are_packed_into_one_passage() {
        let out = passages(&[section(&["one", "two"])], ChunkOptions::default());
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].text, "one\n\ntwo");
        assert_eq!(out[0].heading_path, ["Guide"]);
        assert_eq!(out[0].anchor.as_deref(), Some("guide"));
    }

    #[test]
    fn long_text_is_cut_with_overlap_and_nothing_is_lost() {
        let sentence = "The gateway listens on port 8080 by default. ";
        let long = sentence.repeat(40);
        let options = ChunkOptions {
            target_chars: 200,
            overlap_chars: 50,
        };
        let out = passages(&[section(&[&long])], options);
        assert!(out.len() > 5, "{}", out.len());
        for pair in out.windows(2) {
            assert!(char_len(&pair[0].text) <= 200 + 2 + 50);
            let overlap = tail(&pair[0].text, 50);
            assert!(
                !overlap.is_empty() && pair[1].text.starts_with(overlap),
                "{pair:?}"
            );
        }
        let words: usize = long.split_whitespace().count();
        let first_words: usize = out[0].text.split_whitespace().count();
        assert!(first_words < words);
    }

    #[test]
    fn a_word_longer_than_the_target_is_cut_inside() {
        let word = "x".repeat(300);
        let options = ChunkOptions {
            target_chars: 100,
            overlap_chars: 0,
        };
        let out = passages(&[section(&[&word])], options);
        assert_eq!(out.iter().map(|p| p.text.len()).sum::<usize>(), 300);
    }

    #[test]
    fn overlap_starts_at_a_word_and_handles_multibyte_text() {
        assert_eq!(tail("añadir más índices ahora", 10), "ahora");
        assert_eq!(tail("short", 10), "short");
        assert_eq!(split_long("ñññ ñññ", 4), ["ñññ", "ñññ"]);
    }
}
