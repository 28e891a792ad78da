//! Typed identifiers that are safe to put in a NATS subject, stream or consumer name.
//!
//! Each id is checked against an allow-list of characters when it is parsed or
//! deserialized, so a value that would change a subject (`.`, `*`, `>`, whitespace)
//! cannot exist as an id at all.

use std::fmt;
use std::str::FromStr;

use rand::Rng;
use rand::distr::Alphanumeric;
use serde::{Deserialize, Deserializer, Serialize};
use sha2::{Digest, Sha256};

use crate::error::IdError;

/// Length of a generated [`RequestId`]: 22 alphanumeric characters carry about 131 bits.
const GENERATED_REQUEST_ID_LEN: usize = 22;

/// Which characters an id kind accepts besides ASCII letters and digits.
#[derive(Clone, Copy)]
enum Charset {
    /// `[A-Za-z0-9]` only.
    Alphanumeric,
    /// `[A-Za-z0-9_-]`.
    Name,
}

impl Charset {
    fn accepts(self, c: char) -> bool {
        match self {
            Charset::Alphanumeric => c.is_ascii_alphanumeric(),
            Charset::Name => c.is_ascii_alphanumeric() || c == '_' || c == '-',
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Charset::Alphanumeric => "ASCII letters and digits",
            Charset::Name => "ASCII letters, digits, '_' and '-'",
        }
    }
}

fn validate(
    kind: &'static str,
    value: &str,
    charset: Charset,
    max_len: usize,
) -> Result<(), IdError> {
    if value.is_empty() {
        return Err(IdError::Empty { kind });
    }
    if value.len() > max_len {
        return Err(IdError::TooLong {
            kind,
            len: value.len(),
            max: max_len,
        });
    }
    if let Some(bad) = value.chars().find(|&c| !charset.accepts(c)) {
        return Err(IdError::BadChar {
            kind,
            bad,
            allowed: charset.describe(),
        });
    }
    Ok(())
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $kind:literal, $charset:expr, $max:expr) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// The longest value accepted.
            pub const MAX_LEN: usize = $max;

            /// Checks `value` and wraps it.
            pub fn parse(value: impl Into<String>) -> Result<Self, IdError> {
                let value = value.into();
                validate($kind, &value, $charset, Self::MAX_LEN)?;
                Ok(Self(value))
            }

            /// The id as a string slice, ready to be a subject token.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::parse(s)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let value = String::deserialize(deserializer)?;
                Self::parse(value).map_err(serde::de::Error::custom)
            }
        }
    };
}

id_type!(
    /// The id of one request, from the gateway that accepted it to the stored result.
    RequestId, "request id", Charset::Alphanumeric, 64
);
id_type!(
    /// The id of a gateway process; it is a token of that gateway's reply subjects.
    GatewayId, "gateway id", Charset::Name, 64
);
id_type!(
    /// The name a model is served under; it is a token of `cauce.prompts.<model>` and of
    /// the consumer name `inference-<model>`.
    ModelName, "model name", Charset::Name, 64
);
id_type!(
    /// The stable id of one document of the corpus.
    DocId, "document id", Charset::Name, 200
);

id_type!(
    /// A named set of documents (a course, a team's handbook): a chat or search request
    /// may name collections, and retrieval then uses only their documents.
    Collection, "collection", Charset::Name, 64
);

impl Collection {
    /// The collection of a document ingested without one.
    pub const DEFAULT: &'static str = "default";

    /// Whether this is the collection of documents ingested without one.
    pub fn is_default(&self) -> bool {
        self.0 == Self::DEFAULT
    }
}

impl Default for Collection {
    fn default() -> Self {
        Self(Self::DEFAULT.to_string())
    }
}

impl RequestId {
    /// A fresh random id.
    pub fn generate() -> Self {
        Self(random_alphanumeric(GENERATED_REQUEST_ID_LEN))
    }
}

impl ModelName {
    /// The name the default model (SmolLM2-135M-Instruct, Q4_1) is served under.
    pub const DEFAULT: &'static str = "smollm2-135m-instruct";

    /// The default model's name.
    pub fn default_model() -> Self {
        Self(Self::DEFAULT.to_string())
    }
}

impl GatewayId {
    /// A fresh random gateway id, for a gateway started without one.
    pub fn generate() -> Self {
        Self(format!(
            "gw-{}",
            random_alphanumeric(8).to_ascii_lowercase()
        ))
    }
}

/// Lowercase `[a-z0-9_-]`; path separators, dots and spaces become `-`.
pub fn slug(text: &str) -> String {
    const KEEP: usize = 180;
    let mut out = String::with_capacity(text.len());
    let mut lossy = false;
    for c in text.chars() {
        let mapped = match c {
            'a'..='z' | '0'..='9' | '_' => c,
            'A'..='Z' => c.to_ascii_lowercase(),
            '/' | '\\' | '.' | ' ' | '-' => '-',
            _ => {
                lossy = true;
                '-'
            }
        };
        if mapped == '-' && (out.is_empty() || out.ends_with('-')) {
            continue;
        }
        out.push(mapped);
    }
    while out.ends_with('-') {
        out.pop();
    }
    if out.len() > KEEP {
        out.truncate(KEEP);
        lossy = true;
    }
    if lossy || out.is_empty() {
        let hash = Sha256::digest(text.as_bytes());
        let short: String = hash.iter().take(4).map(|b| format!("{b:02x}")).collect();
        if !out.is_empty() {
            out.push('-');
        }
        out.push_str(&short);
    }
    out
}

/// `len` random ASCII letters and digits.
pub(crate) fn random_alphanumeric(len: usize) -> String {
    rand::rng()
        .sample_iter(Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_are_subject_safe_and_stable() {
        assert_eq!(slug("docs/Scaling Out.md"), "docs-scaling-out-md");
        assert_eq!(slug("guide/./api"), "guide-api");
        let accented = slug("docs/configuración");
        assert!(accented.starts_with("docs-configuraci-n-"), "{accented}");
        assert_ne!(slug("docs/añb"), slug("docs/aéb"));
        assert!(DocId::parse(slug(&"x/".repeat(400))).is_ok());
        assert!(DocId::parse(slug("***")).is_ok());
    }

    const SUBJECT_BREAKERS: [&str; 9] = ["a.b", "a*", ">", "a b", "a\tb", "a\nb", "", "a/b", "é"];

    #[test]
    fn every_id_kind_rejects_what_would_change_a_subject() {
        for bad in SUBJECT_BREAKERS {
            assert!(RequestId::parse(bad).is_err(), "request id {bad:?}");
            assert!(GatewayId::parse(bad).is_err(), "gateway id {bad:?}");
            assert!(ModelName::parse(bad).is_err(), "model name {bad:?}");
            assert!(DocId::parse(bad).is_err(), "doc id {bad:?}");
        }
        assert!(
            RequestId::parse("a-b").is_err(),
            "request ids are alphanumeric only"
        );
    }

    #[test]
    fn over_long_values_are_rejected_with_the_limit() {
        let long = "a".repeat(RequestId::MAX_LEN + 1);
        let err = RequestId::parse(long).unwrap_err();
        assert_eq!(
            err,
            IdError::TooLong {
                kind: "request id",
                len: 65,
                max: 64
            }
        );
        assert!(err.to_string().contains("64"));
    }

    #[test]
    fn error_names_the_offending_character() {
        let err = ModelName::parse("smollm2.q4").unwrap_err();
        assert!(err.to_string().contains("'.'"), "{err}");
    }

    #[test]
    fn generated_ids_are_valid_and_distinct() {
        let a = RequestId::generate();
        let b = RequestId::generate();
        assert_ne!(a, b);
        assert_eq!(RequestId::parse(a.as_str()).unwrap(), a);
        GatewayId::parse(GatewayId::generate().as_str()).unwrap();
    }

    #[test]
    fn deserialization_validates() {
        let ok: ModelName = serde_json::from_str("\"smollm2-135m\"").unwrap();
        assert_eq!(ok.as_str(), "smollm2-135m");
        assert!(serde_json::from_str::<ModelName>("\"cauce.>\"").is_err());
        assert!(serde_json::from_str::<DocId>("\"\"").is_err());
    }
}
