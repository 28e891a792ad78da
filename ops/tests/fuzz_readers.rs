//! The readers' fuzzing, replayed: every input the fuzzers ever crashed a reader with
//! (ingest/fuzz/crashes/<target>/, kept once fixed) and every seed they start from go
//! through the real converter (`cauce convert`, in its sandbox) with the default
//! limits. Each must end as text or a refusal that names the file's fault; a converter
//! that crashed, ran out of time or of memory fails the test. The coverage-guided runs
//! themselves are `ops/fuzz-readers` (a short one in ./ops/test).

use std::path::Path;

use cauce_ingest::sandbox::Limits;
use cauce_ingest::{Format, Refusal, Sandbox};

fn format_of(target: &str) -> Format {
    match target {
        "pdf" => Format::Pdf,
        "docx" => Format::Docx,
        "epub" => Format::Epub,
        "html" => Format::Html,
        "markdown" => Format::Markdown,
        other => panic!("no reader is fuzzed as {other}"),
    }
}

/// Whether the converter survived `raw`: text, or a refusal of the file itself.
fn survives(sandbox: &Sandbox, format: Format, raw: &[u8]) -> Result<(), String> {
    match sandbox.read(format, raw) {
        Ok(_) => Ok(()),
        Err(Refusal::Failed(reason)) => Err(reason),
        Err(_) => Ok(()),
    }
}

#[test]
fn every_saved_crash_and_seed_ends_without_crashing_the_converter() {
    let sandbox = Sandbox {
        program: env!("CARGO_BIN_EXE_cauce").into(),
        args: vec!["convert".into()],
        limits: Limits::default(),
    };
    let crashes = Path::new(env!("CARGO_MANIFEST_DIR")).join("../ingest/fuzz/crashes");
    let mut inputs = Vec::new();
    for target in std::fs::read_dir(&crashes).expect("ingest/fuzz/crashes exists") {
        let target = target.unwrap().path();
        let name = target.file_name().unwrap().to_string_lossy().into_owned();
        for input in std::fs::read_dir(&target).unwrap() {
            let input = input.unwrap().path();
            let label = format!("crash {}", input.display());
            inputs.push((label, format_of(&name), std::fs::read(&input).unwrap()));
        }
    }
    let saved = inputs.len();
    assert!(saved > 0, "no saved crash under {}", crashes.display());
    for (target, name, bytes) in cauce_ingest::testkit::fuzz_seeds() {
        inputs.push((format!("seed {target}/{name}"), format_of(target), bytes));
    }
    let broke: Vec<String> = inputs
        .iter()
        .filter_map(|(label, format, raw)| {
            survives(&sandbox, *format, raw)
                .err()
                .map(|why| format!("{label}: {why}"))
        })
        .collect();
    eprintln!(
        "fuzz replay: {} inputs ({saved} saved crashes), {} broke the converter",
        inputs.len(),
        broke.len()
    );
    assert!(broke.is_empty(), "{broke:#?}");
}
