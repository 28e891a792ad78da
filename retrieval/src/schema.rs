//! The index schema and the language-aware analyzer of its text fields.
//!
//! One tantivy document per passage: doc id (raw, for deletes), collection (raw, for
//! a request's filter), version, title,
//! headings (one value per heading), location (with the anchor), text, and the
//! passage's ordinal in its document (for merging neighbours). Title, headings and
//! text are analyzed with the same analyzer: simple tokenizer (words of letters and
//! digits, so punctuation, quotes and emoji never become terms), long tokens dropped,
//! lowercased, stop words removed, stemmed, then folded to ASCII so that "indice" finds
//! "índice".

use std::fmt;
use std::str::FromStr;

use tantivy::Index;
use tantivy::schema::{
    Field, INDEXED, IndexRecordOption, STORED, STRING, Schema, TextFieldIndexing, TextOptions,
};
use tantivy::tokenizer::{
    AsciiFoldingFilter, Language as StemLanguage, LowerCaser, RemoveLongFilter, SimpleTokenizer,
    Stemmer, StopWordFilter, TextAnalyzer,
};

/// Bumped when the schema or the analyzer changes: an index of another version is rebuilt.
pub const SCHEMA_VERSION: u32 = 2;

/// Tokens longer than this many bytes are dropped (base64 blobs, hashes).
const MAX_TOKEN_BYTES: usize = 40;

/// The language of the corpus, which picks stop words and the stemmer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Language {
    #[default]
    English,
    Spanish,
}

impl Language {
    pub fn as_str(self) -> &'static str {
        match self {
            Language::English => "english",
            Language::Spanish => "spanish",
        }
    }

    fn stem_language(self) -> StemLanguage {
        match self {
            Language::English => StemLanguage::English,
            Language::Spanish => StemLanguage::Spanish,
        }
    }

    fn tokenizer_name(self) -> &'static str {
        match self {
            Language::English => "cauce_english",
            Language::Spanish => "cauce_spanish",
        }
    }

    /// The analyzer of title, headings and text.
    pub fn analyzer(self) -> TextAnalyzer {
        let builder = TextAnalyzer::builder(SimpleTokenizer::default())
            .filter(RemoveLongFilter::limit(MAX_TOKEN_BYTES))
            .filter(LowerCaser);
        match StopWordFilter::new(self.stem_language()) {
            Some(stop_words) => builder
                .filter(stop_words)
                .filter(Stemmer::new(self.stem_language()))
                .filter(AsciiFoldingFilter)
                .build(),
            None => builder
                .filter(Stemmer::new(self.stem_language()))
                .filter(AsciiFoldingFilter)
                .build(),
        }
    }
}

impl fmt::Display for Language {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Language {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "english" | "en" => Ok(Language::English),
            "spanish" | "es" | "español" | "espanol" => Ok(Language::Spanish),
            other => Err(format!(
                "unknown language {other:?}: use english or spanish"
            )),
        }
    }
}

/// The fields of the index.
#[derive(Clone, Copy, Debug)]
pub struct Fields {
    pub doc_id: Field,
    /// The document's collection, raw: a request's collections filter on it.
    pub collection: Field,
    pub version: Field,
    pub title: Field,
    pub headings: Field,
    pub location: Field,
    pub text: Field,
    pub ord: Field,
}

impl Fields {
    /// The fields BM25 scores, with their boosts. A title or heading is shared by every
    /// passage of its page or section, so a word there counts half as much as in the
    /// passage's own text (tuned on half of `ops/eval-retrieval`'s questions: 2.0 and 1.5
    /// before, hit@1 0.435 → 0.516 on the other half).
    pub fn searched(&self) -> [(Field, f32); 3] {
        [(self.title, 0.5), (self.headings, 0.5), (self.text, 1.0)]
    }

    /// Looks the fields up in an existing index's schema.
    pub fn of(schema: &Schema) -> Option<Self> {
        Some(Self {
            doc_id: schema.get_field("doc_id").ok()?,
            collection: schema.get_field("collection").ok()?,
            version: schema.get_field("version").ok()?,
            title: schema.get_field("title").ok()?,
            headings: schema.get_field("headings").ok()?,
            location: schema.get_field("location").ok()?,
            text: schema.get_field("text").ok()?,
            ord: schema.get_field("ord").ok()?,
        })
    }
}

/// The schema for `language`.
pub fn schema(language: Language) -> Schema {
    let analyzed = TextOptions::default().set_stored().set_indexing_options(
        TextFieldIndexing::default()
            .set_tokenizer(language.tokenizer_name())
            .set_index_option(IndexRecordOption::WithFreqsAndPositions),
    );
    let mut builder = Schema::builder();
    builder.add_text_field("doc_id", STRING | STORED);
    builder.add_text_field("collection", STRING | STORED);
    builder.add_text_field("version", STORED);
    builder.add_text_field("title", analyzed.clone());
    builder.add_text_field("headings", analyzed.clone());
    builder.add_text_field("location", STORED);
    builder.add_text_field("text", analyzed);
    builder.add_u64_field("ord", INDEXED | STORED);
    builder.build()
}

/// Registers the analyzer an index of `language` needs; call after every open.
pub fn register_analyzer(index: &Index, language: Language) {
    index
        .tokenizers()
        .register(language.tokenizer_name(), language.analyzer());
}

/// The analyzed terms of `text`, in order, with repeats.
pub fn analyze(analyzer: &mut TextAnalyzer, text: &str) -> Vec<String> {
    let mut terms = Vec::new();
    let mut stream = analyzer.token_stream(text);
    while stream.advance() {
        terms.push(stream.token().text.clone());
    }
    terms
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn english_stems_and_drops_stop_words() {
        let terms = analyze(
            &mut Language::English.analyzer(),
            "The workers are Scaling out!",
        );
        assert_eq!(terms, ["worker", "scale", "out"]);
    }

    #[test]
    fn spanish_stems_and_folds_accents() {
        let mut analyzer = Language::Spanish.analyzer();
        assert_eq!(
            analyze(&mut analyzer, "los índices"),
            analyze(&mut analyzer, "indice")
        );
        assert!(!analyze(&mut analyzer, "configuración del servidor").contains(&"del".to_string()));
    }

    #[test]
    fn query_syntax_and_emoji_are_not_terms() {
        let terms = analyze(
            &mut Language::English.analyzer(),
            "\"title:* AND (OR 🦀 ✨\" -- ::",
        );
        assert_eq!(terms, ["titl"]);
        assert_eq!("es".parse::<Language>(), Ok(Language::Spanish));
        assert!("klingon".parse::<Language>().is_err());
    }
}
