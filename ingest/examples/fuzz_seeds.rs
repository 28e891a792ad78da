//! Writes the readers' fuzzing seeds (`testkit::fuzz_seeds`) and the bundled corpus's
//! Markdown files under DIR/<target>/: `cargo run -p cauce-ingest --features testkit
//! --example fuzz_seeds -- DIR` (ops/fuzz-readers runs it).

fn main() -> std::io::Result<()> {
    let dir = std::path::PathBuf::from(std::env::args().nth(1).expect("usage: fuzz_seeds DIR"));
    let mut written = 0;
    for (target, name, bytes) in cauce_ingest::testkit::fuzz_seeds() {
        std::fs::create_dir_all(dir.join(target))?;
        std::fs::write(dir.join(target).join(name), bytes)?;
        written += 1;
    }
    let bundled = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs");
    for entry in std::fs::read_dir(bundled)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "md") {
            std::fs::create_dir_all(dir.join("markdown"))?;
            std::fs::copy(&path, dir.join("markdown").join(path.file_name().unwrap()))?;
            written += 1;
        }
    }
    println!("{written} seeds in {}", dir.display());
    Ok(())
}
