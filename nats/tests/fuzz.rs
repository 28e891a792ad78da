//! A short fuzzing run of every wire decoder (arbitrary bytes and mutated valid
//! payloads), and a zstd bomb: a value or a typed error every time, no panic, and
//! memory bounded. The long run: `cargo run --release -p cauce-nats --example fuzz_wire`.

use cauce_nats::fuzz;
use cauce_nats::wire::{self, StoredResult};

cauce_nats::measured_allocator!();

/// A payload may inflate to 64 MiB before it is refused; the buffer's last growth on
/// the way there holds half as much again, and the decoder's window 8 MiB.
const BOUND: usize = 128 << 20;

/// The allocator's counts are the process's: one test measures at a time.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn every_wire_decoder_survives_arbitrary_and_mutated_input() {
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let report = fuzz::fuzz_wire(20_000, 1, MEMORY, BOUND).unwrap_or_else(|f| panic!("{f}"));
    assert_eq!(report.inputs, 20_000);
    assert!(
        report.accepted > 0,
        "some mutations stay valid, so the decoders are reached: {report:?}"
    );
}

#[test]
fn a_zstd_bomb_is_refused_with_a_typed_error_and_bounded_memory() {
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let zeros = vec![0u8; 200 << 20];
    let bomb = zstd::bulk::compress(&zeros, 3).unwrap();
    drop(zeros);
    assert!(bomb.len() < 1 << 20, "a bomb is small: {}", bomb.len());
    let base = ALLOCATOR.current_usage();
    ALLOCATOR.reset_peak_usage();
    let err = wire::decode_compressed::<StoredResult>(&bomb).unwrap_err();
    let held = ALLOCATOR.peak_usage().saturating_sub(base);
    assert_eq!(err.kind(), "wire_compression", "{err}");
    assert!(err.to_string().contains("inflates past"), "{err}");
    assert!(held < BOUND, "the bomb held {held} bytes");
}
