//! A short fuzzing run of the chat request validation: arbitrary and mutated bodies
//! give a valid request or a 4xx that says what was wrong, with bounded memory. The
//! long run: `cargo run --release -p cauce-gateway --example fuzz_validate`.

use cauce_gateway::config::GatewayConfig;
use cauce_nats::fuzz::{self, Mutator};

cauce_nats::measured_allocator!();

#[test]
fn chat_bodies_are_valid_or_a_clear_client_error() {
    let config = GatewayConfig::new();
    let mutator = Mutator::new(1, cauce_gateway::fuzz::seeds());
    let report = fuzz::fuzz(20_000, mutator, MEMORY, 16 << 20, |body| {
        cauce_gateway::fuzz::counted(body, &config)
    })
    .unwrap_or_else(|f| panic!("{f}"));
    assert_eq!(report.inputs, 20_000);
    assert!(report.accepted > 0, "some mutations stay valid: {report:?}");
}
