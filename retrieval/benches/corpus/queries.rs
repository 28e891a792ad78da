//! The benchmark's questions: drawn from the indexed passages themselves with a fixed
//! seed, so every run asks the same questions of the same corpus, in the shapes users
//! ask them (a few words, a heading, a follow-up, a pasted paragraph, junk).

use cauce_nats::wire::{ChatMessage, Role};
use cauce_retrieval::schema::Fields;
use tantivy::schema::Value;
use tantivy::{DocAddress, IndexReader, TantivyDocument};

/// The shape of a question.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// A few words of a passage in a question template.
    Words,
    /// A heading of the passage: "what is …?".
    Heading,
    /// A question about a passage, an answer, then "and …?".
    FollowUp,
    /// A pasted paragraph of 80 to 250 words.
    Pasted,
    /// Query syntax, emoji, punctuation, ten thousand characters.
    Hostile,
}

impl Kind {
    pub const ALL: [Kind; 5] = [
        Kind::Words,
        Kind::Heading,
        Kind::FollowUp,
        Kind::Pasted,
        Kind::Hostile,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Words => "words",
            Kind::Heading => "heading",
            Kind::FollowUp => "follow-up",
            Kind::Pasted => "pasted",
            Kind::Hostile => "hostile",
        }
    }
}

/// One question, and the document it was drawn from.
pub struct Question {
    pub kind: Kind,
    pub messages: Vec<ChatMessage>,
    pub drawn_from: Option<String>,
}

const TEMPLATES: [&str; 6] = [
    "how do I {}?",
    "what does {} do?",
    "{}",
    "explain {}",
    "why {}?",
    "is there a way to {}",
];

const FOLLOW_UPS: [&str; 5] = [
    "and what about its second part?",
    "can you give an example?",
    "what does it return?",
    "and on Windows?",
    "why?",
];

const HOSTILE: [&str; 7] = [
    "\"",
    "AND OR (",
    "title:*",
    "🐍🦀✨",
    "?!?! ... ::: ((( )))",
    "text:\"open file\" AND NOT (mode:r*) OR ~2 ^3",
    "",
];

/// SplitMix64: a fixed seed gives the same questions on every machine.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// A stored passage.
struct Stored {
    doc_id: String,
    title: String,
    headings: Vec<String>,
    words: Vec<String>,
}

/// Draws `count` questions from the passages `reader` sees.
pub fn draw(reader: &IndexReader, count: usize, rng: &mut Rng) -> anyhow::Result<Vec<Question>> {
    let searcher = reader.searcher();
    let fields =
        Fields::of(searcher.schema()).ok_or_else(|| anyhow::anyhow!("not a cauce index"))?;
    let addresses: Vec<DocAddress> = searcher
        .segment_readers()
        .iter()
        .enumerate()
        .flat_map(|(segment, reader)| {
            reader
                .doc_ids_alive()
                .map(move |doc| DocAddress::new(segment as u32, doc))
        })
        .collect();
    anyhow::ensure!(!addresses.is_empty(), "the index is empty");
    let mut questions = Vec::with_capacity(count);
    while questions.len() < count {
        let doc: TantivyDocument = searcher.doc(addresses[rng.below(addresses.len())])?;
        let text = |field| {
            doc.get_first(field)
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .to_string()
        };
        let stored = Stored {
            doc_id: text(fields.doc_id),
            title: text(fields.title),
            headings: doc
                .get_all(fields.headings)
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect(),
            words: text(fields.text)
                .split_whitespace()
                .map(str::to_string)
                .collect(),
        };
        if stored.words.len() < 12 {
            continue;
        }
        questions.push(question(&stored, rng));
    }
    Ok(questions)
}

fn question(stored: &Stored, rng: &mut Rng) -> Question {
    let roll = rng.below(100);
    let kind = match roll {
        0..50 => Kind::Words,
        50..70 => Kind::Heading,
        70..85 => Kind::FollowUp,
        85..95 => Kind::Pasted,
        _ => Kind::Hostile,
    };
    let user = |content: String| ChatMessage {
        role: Role::User,
        content,
    };
    let messages = match kind {
        Kind::Words => vec![user(words_question(stored, rng))],
        Kind::Heading => {
            let heading = stored.headings.last().unwrap_or(&stored.title);
            vec![user(format!("what is {heading}?"))]
        }
        Kind::FollowUp => vec![
            user(words_question(stored, rng)),
            ChatMessage {
                role: Role::Assistant,
                content: "It is described in the documentation [1].".into(),
            },
            user(FOLLOW_UPS[rng.below(FOLLOW_UPS.len())].into()),
        ],
        Kind::Pasted => {
            let len = 80 + rng.below(171);
            let text = window(&stored.words, len, rng);
            vec![user(format!("I read this and do not get it: {text}"))]
        }
        Kind::Hostile => {
            let pick = rng.below(HOSTILE.len() + 1);
            let content = match HOSTILE.get(pick) {
                Some(text) => (*text).to_string(),
                // ten thousand characters of the passage, repeated
                None => stored
                    .words
                    .join(" ")
                    .repeat(10_000 / stored.words.len().max(1) + 1)
                    .chars()
                    .take(10_000)
                    .collect(),
            };
            vec![user(content)]
        }
    };
    Question {
        kind,
        messages,
        drawn_from: (kind != Kind::Hostile).then(|| stored.doc_id.clone()),
    }
}

fn words_question(stored: &Stored, rng: &mut Rng) -> String {
    let len = 4 + rng.below(6);
    let words = window(&stored.words, len, rng);
    TEMPLATES[rng.below(TEMPLATES.len())].replace("{}", &words)
}

/// `len` consecutive words from a random place (all of them when there are fewer).
fn window(words: &[String], len: usize, rng: &mut Rng) -> String {
    let len = len.min(words.len());
    let start = rng.below(words.len() - len + 1);
    words[start..start + len].join(" ")
}
