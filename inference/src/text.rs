//! Turning a stream of token bytes into text a client may see: whole UTF-8 characters
//! only, and never a piece of text that might turn out to be the start of a stop string.

/// Assembles token bytes into UTF-8 text, holding back an incomplete trailing character.
#[derive(Debug, Default)]
pub struct Utf8Assembler {
    pending: Vec<u8>,
}

impl Utf8Assembler {
    /// Adds the bytes of one token and returns the text that is complete so far.
    pub fn push(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let mut out = String::new();
        loop {
            match std::str::from_utf8(&self.pending) {
                Ok(text) => {
                    out.push_str(text);
                    self.pending.clear();
                    return out;
                }
                Err(err) => {
                    let valid = err.valid_up_to();
                    // the prefix was just checked to be valid UTF-8
                    out.push_str(std::str::from_utf8(&self.pending[..valid]).unwrap_or_default());
                    match err.error_len() {
                        // an incomplete character at the end: wait for the next token
                        None => {
                            self.pending.drain(..valid);
                            return out;
                        }
                        // bytes that can never be valid: replace them and go on
                        Some(bad) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            self.pending.drain(..valid + bad);
                        }
                    }
                }
            }
        }
    }

    /// Whatever is left at the end of generation, with a broken character replaced.
    pub fn finish(&mut self) -> String {
        let rest = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        rest
    }
}

/// Holds back text that might begin a stop string and finds the first stop string.
#[derive(Debug, Default)]
pub struct StopScanner {
    stops: Vec<String>,
    held: String,
}

/// What the scanner says about newly generated text.
#[derive(Debug, PartialEq, Eq)]
pub enum Scan {
    /// Text safe to send; generation goes on.
    Continue(String),
    /// A stop string was found: send this text (what came before it) and stop.
    Stop(String),
}

impl StopScanner {
    pub fn new(stops: &[String]) -> Self {
        Self {
            stops: stops.iter().filter(|s| !s.is_empty()).cloned().collect(),
            held: String::new(),
        }
    }

    pub fn push(&mut self, text: &str) -> Scan {
        self.held.push_str(text);
        if self.stops.is_empty() {
            return Scan::Continue(std::mem::take(&mut self.held));
        }
        if let Some(at) = self
            .stops
            .iter()
            .filter_map(|stop| self.held.find(stop.as_str()))
            .min()
        {
            let before = self.held[..at].to_string();
            self.held.clear();
            return Scan::Stop(before);
        }
        let keep = self.longest_partial_suffix();
        let send_len = self.held.len() - keep;
        let rest = self.held.split_off(send_len);
        Scan::Continue(std::mem::replace(&mut self.held, rest))
    }

    /// Text still held back when generation ends for another reason: it was no stop string.
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.held)
    }

    /// Length in bytes of the longest suffix of the held text that is a proper prefix of
    /// some stop string (and so might still grow into it).
    fn longest_partial_suffix(&self) -> usize {
        let held = self.held.as_str();
        held.char_indices()
            .map(|(start, _)| start)
            .find(|&start| {
                let suffix = &held[start..];
                self.stops
                    .iter()
                    .any(|stop| stop.len() > suffix.len() && stop.starts_with(suffix))
            })
            .map_or(0, |start| held.len() - start)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_byte_characters_split_across_tokens_are_held_until_complete() {
        let mut utf8 = Utf8Assembler::default();
        let bytes = "año 🎉".as_bytes();
        let mut out = String::new();
        for byte in bytes {
            let piece = utf8.push(&[*byte]);
            assert!(std::str::from_utf8(piece.as_bytes()).is_ok());
            out.push_str(&piece);
        }
        out.push_str(&utf8.finish());
        assert_eq!(out, "año 🎉");
        assert_eq!(utf8.push(&"ñ".as_bytes()[..1]), "");
        assert_eq!(utf8.push(&"ñ".as_bytes()[1..]), "ñ");
    }

    #[test]
    fn invalid_bytes_are_replaced_not_stalled() {
        let mut utf8 = Utf8Assembler::default();
        assert_eq!(utf8.push(b"a\xffb"), "a\u{fffd}b");
        assert_eq!(utf8.push(&[0xe2, 0x82]), "");
        assert_eq!(utf8.finish(), "\u{fffd}");
    }

    #[test]
    fn text_that_may_start_a_stop_string_is_held_back() {
        let mut scan = StopScanner::new(&["END".to_string()]);
        assert_eq!(scan.push("hello E"), Scan::Continue("hello ".into()));
        assert_eq!(scan.push("N"), Scan::Continue(String::new()));
        assert_eq!(scan.push("D and more"), Scan::Stop(String::new()));
    }

    #[test]
    fn a_false_start_is_released() {
        let mut scan = StopScanner::new(&["END".to_string()]);
        assert_eq!(scan.push("EN"), Scan::Continue(String::new()));
        assert_eq!(scan.push("Ow"), Scan::Continue("ENOw".into()));
        assert_eq!(scan.push("xE"), Scan::Continue("x".into()));
        assert_eq!(scan.finish(), "E");
    }

    #[test]
    fn the_earliest_of_several_stop_strings_wins() {
        let mut scan = StopScanner::new(&["\n\n".to_string(), "Q:".to_string()]);
        assert_eq!(scan.push("one Q: two\n\n"), Scan::Stop("one ".into()));
        let mut overlapping = StopScanner::new(&["aab".to_string()]);
        let mut sent = String::new();
        for piece in ["a", "a", "a", "b"] {
            match overlapping.push(piece) {
                Scan::Continue(text) => sent.push_str(&text),
                Scan::Stop(text) => {
                    sent.push_str(&text);
                    break;
                }
            }
        }
        assert_eq!(sent, "a");
    }

    #[test]
    fn held_text_respects_character_boundaries() {
        let mut scan = StopScanner::new(&["ñx".to_string()]);
        assert_eq!(scan.push("añ"), Scan::Continue("a".into()));
        assert_eq!(scan.push("y"), Scan::Continue("ñy".into()));
    }

    #[test]
    fn no_stop_strings_pass_everything() {
        let mut scan = StopScanner::new(&[String::new()]);
        assert_eq!(scan.push("abc"), Scan::Continue("abc".into()));
    }
}
