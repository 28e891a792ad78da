//! The long fuzzing run of the chat request validation: `cargo run --release -p
//! cauce-gateway --example fuzz_validate -- [inputs] [seed]` (default 1,000,000).

use std::time::Instant;

use cauce_gateway::config::GatewayConfig;
use cauce_nats::fuzz::{self, Mutator};

cauce_nats::measured_allocator!();

fn main() {
    let mut args = std::env::args().skip(1);
    let inputs = args
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let seed = args.next().and_then(|a| a.parse().ok()).unwrap_or(1);
    let config = GatewayConfig::new();
    let mutator = Mutator::new(seed, cauce_gateway::fuzz::seeds());
    let started = Instant::now();
    let checked = fuzz::fuzz(inputs, mutator, MEMORY, 16 << 20, |body| {
        cauce_gateway::fuzz::counted(body, &config)
    });
    match checked {
        Ok(report) => {
            let seconds = started.elapsed().as_secs_f64();
            println!(
                "fuzz_validate: {} bodies, {} valid, the rest a 4xx saying why; \
                 the most one body held: {} KiB; {seconds:.1} s ({:.0} bodies/s)",
                report.inputs,
                report.accepted,
                report.max_live_bytes / 1024,
                report.inputs as f64 / seconds
            );
        }
        Err(failure) => {
            eprintln!("fuzz_validate: {failure}");
            std::process::exit(1);
        }
    }
}
