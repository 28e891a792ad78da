//! The long fuzzing run of every wire decoder: `cargo run --release -p cauce-nats
//! --example fuzz_wire -- [inputs] [seed]` (default 10,000,000 inputs, seed 1). Prints
//! the inputs, decoder calls and the most memory one input held; exits non-zero, with
//! the input saved, at a panic or an input that held too much.

use std::time::Instant;

use cauce_nats::fuzz;

cauce_nats::measured_allocator!();

fn main() {
    let mut args = std::env::args().skip(1);
    let inputs = args
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or(10_000_000);
    let seed = args.next().and_then(|a| a.parse().ok()).unwrap_or(1);
    let started = Instant::now();
    match fuzz::fuzz_wire(inputs, seed, MEMORY, 128 << 20) {
        Ok(report) => {
            let seconds = started.elapsed().as_secs_f64();
            println!(
                "fuzz_wire: {} inputs, {} decoder calls ({} gave a value), no panic; \
                 the most one input held: {} KiB; {seconds:.1} s ({:.0} inputs/s)",
                report.inputs,
                report.decodes,
                report.accepted,
                report.max_live_bytes / 1024,
                report.inputs as f64 / seconds
            );
        }
        Err(failure) => {
            eprintln!("fuzz_wire: {failure}");
            std::process::exit(1);
        }
    }
}
