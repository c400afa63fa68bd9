//! Prints quern's word split of each document, to diff against spaCy's (how the
//! disagreement classes in BENCHMARKS.md `## filters` were found), or times the split.
//!
//! Usage: `words < DOCS.jsonl > WORDS.jsonl` — one JSON array of words per input line
//! (the `text` field), in input order. `words --speed < DOCS.jsonl` reads every text first,
//! then prints how fast one thread splits them (MB/s, words/s), without writing words.

use std::io::{BufRead, Write};
use std::time::Instant;

use quern_filters::words::WordTokenizer;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let speed = std::env::args().nth(1).as_deref() == Some("--speed");
    let tok = WordTokenizer::get();
    if speed {
        let mut texts = Vec::new();
        for line in std::io::stdin().lock().lines() {
            let v: serde_json::Value = serde_json::from_str(&line?)?;
            texts.push(v["text"].as_str().unwrap_or_default().to_string());
        }
        let bytes: usize = texts.iter().map(String::len).sum();
        let mut words = Vec::new();
        let mut n = 0usize;
        let t0 = Instant::now();
        for t in &texts {
            words.clear();
            tok.words(t, &mut words);
            n += words.len();
        }
        let secs = t0.elapsed().as_secs_f64();
        println!(
            "{} docs, {:.1} MB, {n} words in {secs:.2}s: {:.1} MB/s, {:.1} M words/s on one thread",
            texts.len(),
            bytes as f64 / 1e6,
            bytes as f64 / 1e6 / secs,
            n as f64 / 1e6 / secs
        );
        return Ok(());
    }
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    for line in std::io::stdin().lock().lines() {
        let v: serde_json::Value = serde_json::from_str(&line?)?;
        let mut words = Vec::new();
        tok.words(v["text"].as_str().unwrap_or_default(), &mut words);
        serde_json::to_writer(&mut out, &words)?;
        out.write_all(b"\n")?;
    }
    Ok(())
}
