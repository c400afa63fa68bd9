//! Prints quern's word split of each document, to diff against spaCy's (how the
//! disagreement classes in BENCHMARKS.md `## filters` were found).
//!
//! Usage: `words < DOCS.jsonl > WORDS.jsonl` — one JSON array of words per input line
//! (the `text` field), in input order.

use std::io::{BufRead, Write};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    for line in std::io::stdin().lock().lines() {
        let v: serde_json::Value = serde_json::from_str(&line?)?;
        let mut words = Vec::new();
        quern_filters::words::WordTokenizer::get()
            .words(v["text"].as_str().unwrap_or_default(), &mut words);
        serde_json::to_writer(&mut out, &words)?;
        out.write_all(b"\n")?;
    }
    Ok(())
}
