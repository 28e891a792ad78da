//! The html reader on arbitrary bytes: each input must give text or a refusal. A panic
//! the reader catches is a refusal; one that escapes it, a stack overflow, an abort,
//! an allocation past -rss_limit_mb or an input past -timeout is a crash.
#![no_main]

use cauce_ingest::source::Format;

libfuzzer_sys::fuzz_target!(init: cauce_ingest_fuzz::init(), |data: &[u8]| {
    cauce_ingest_fuzz::read(Format::Html, data)
});
