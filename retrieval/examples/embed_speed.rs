//! Embedding throughput of all-MiniLM-L6-v2 on this machine's CPU, over passages of
//! about 1,000 characters cut from the Markdown files given:
//! `cargo run --release -p cauce-retrieval --example embed_speed -- docs/*.md`.

use std::time::Instant;

use cauce_retrieval::embed::{Embedder, MODEL_DIR_NAME};

fn main() -> anyhow::Result<()> {
    let home = std::env::var("CAUCE_HOME")
        .unwrap_or_else(|_| format!("{}/.local/share/cauce", std::env::var("HOME").unwrap()));
    let dir = std::path::Path::new(&home)
        .join("models")
        .join(MODEL_DIR_NAME);
    let loading = Instant::now();
    let embedder = Embedder::load(&dir)?;
    println!("loaded in {:?}", loading.elapsed());
    let mut passages = Vec::new();
    for file in std::env::args().skip(1) {
        let text = std::fs::read_to_string(&file)?;
        let chars: Vec<char> = text.chars().collect();
        passages.extend(chars.chunks(1000).map(|c| c.iter().collect::<String>()));
    }
    for batch in [1, 8, 32] {
        let started = Instant::now();
        let mut done = 0;
        for chunk in passages.chunks(batch).take(64 / batch.min(64) + 1) {
            let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
            embedder.embed(&refs)?;
            done += chunk.len();
        }
        let secs = started.elapsed().as_secs_f64();
        println!(
            "batch {batch}: {done} passages in {secs:.2} s, {:.1} passages/s",
            done as f64 / secs
        );
    }
    let questions = [
        "How do I sort a list in Python?",
        "what does the with statement do",
        "read a file line by line",
        "difference between a tuple and a list",
    ];
    let time = |what: &str, embed: &dyn Fn(&str) -> anyhow::Result<()>| -> anyhow::Result<()> {
        let mut times = Vec::new();
        for i in 0..1000 {
            let started = Instant::now();
            embed(questions[i % questions.len()])?;
            times.push(started.elapsed().as_secs_f64() * 1000.0);
        }
        times.sort_by(f64::total_cmp);
        println!("{what}: p50 {:.1} ms, p99 {:.1} ms", times[500], times[990]);
        Ok(())
    };
    time("one question, embedded as a passage is", &|q| {
        Ok(embedder.embed(&[q]).map(drop)?)
    })?;
    time("one question, as a search embeds it", &|q| {
        Ok(embedder.embed_question(&[q]).map(drop)?)
    })?;
    let v = embedder.embed(&[
        "How do I sort a list in Python?",
        "Sorting a list: list.sort() and sorted()",
        "The weather in Madrid is sunny.",
    ])?;
    println!(
        "similar {:.3}, unrelated {:.3}",
        cauce_retrieval::embed::similarity(&v[0], &v[1]),
        cauce_retrieval::embed::similarity(&v[0], &v[2])
    );
    Ok(())
}
