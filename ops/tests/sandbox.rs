//! The conversion sandbox with the real converter (`cauce convert`): each limit, hit on
//! purpose, ends one conversion with its own reason, and a file within the limits comes
//! back whole.

use std::time::Duration;

use cauce_ingest::sandbox::Limits;
use cauce_ingest::{Format, Refusal, Sandbox};

fn sandbox(limits: Limits) -> Sandbox {
    Sandbox {
        program: env!("CARGO_BIN_EXE_cauce").into(),
        args: vec!["convert".into()],
        limits,
    }
}

fn reason(sandbox: &Sandbox, format: Format, raw: &[u8]) -> String {
    match sandbox.read(format, raw) {
        Err(Refusal::Failed(reason)) => reason,
        other => panic!("expected a failed conversion, got {other:?}"),
    }
}

#[test]
fn each_limit_ends_one_conversion_with_its_reason() {
    let page = b"# Tides\n\nThe harbour floods at the spring tide.\n";
    let roomy = sandbox(Limits::default());
    let extracted = roomy.read(Format::Markdown, page).unwrap();
    assert_eq!(extracted.title.as_deref(), Some("Tides"));
    let refused = roomy.read(Format::Pdf, b"%PDF-1.7 nothing").unwrap_err();
    assert!(matches!(refused, Refusal::Corrupt(_)), "{refused:?}");

    let deep_html = cauce_ingest::testkit::html_nested_spans(400_000);
    let small_memory = sandbox(Limits {
        memory_bytes: 96 << 20,
        ..Limits::default()
    });
    let why = reason(&small_memory, Format::Html, &deep_html);
    assert!(
        why.contains("more than 96 MiB of memory") || why.contains("crashed"),
        "{why}"
    );

    let no_time = sandbox(Limits {
        time_base: Duration::from_millis(1),
        time_per_mib: Duration::ZERO,
        ..Limits::default()
    });
    let why = reason(&no_time, Format::Html, &deep_html);
    assert!(why.contains("took longer than"), "{why}");

    let small_output = sandbox(Limits {
        output_bytes: 1 << 20,
        ..Limits::default()
    });
    let long = "A line of text about tides.\n\n".repeat(100_000);
    let why = reason(&small_output, Format::Text, long.as_bytes());
    assert!(why.contains("expand past 1 MiB"), "{why}");
}
