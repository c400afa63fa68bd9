//! Language-ID accuracy per language on paragraphs of known language
//! (`bench-data/lang/<code>.jsonl`, made by `benches/corpus/make_corpus.sh`), and speed.
//!
//! Usage: `lang_accuracy DIR` — prints a Markdown table (language, paragraphs, accuracy,
//! most common wrong answer) and the overall accuracy and throughput on one core.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::args().nth(1).ok_or("usage: lang_accuracy DIR")?;
    let mut files: Vec<_> = std::fs::read_dir(&dir)?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .collect();
    files.sort();
    println!("| language | paragraphs | accuracy | most common miss |");
    println!("|---|---:|---:|---|");
    let (mut all, mut all_ok, mut bytes) = (0usize, 0usize, 0usize);
    let mut secs = 0.0;
    for f in files
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
    {
        let want = f
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default()
            .to_string();
        let texts: Vec<String> = std::io::BufReader::new(std::fs::File::open(f)?)
            .lines()
            .map(|l| -> Result<String, Box<dyn std::error::Error>> {
                let v: serde_json::Value = serde_json::from_str(&l?)?;
                Ok(v["text"].as_str().unwrap_or_default().to_string())
            })
            .collect::<Result<_, _>>()?;
        let t0 = Instant::now();
        let got: Vec<Option<&str>> = texts
            .iter()
            .map(|t| quern_filters::lang::detect(t, 2000).map(|x| x.0))
            .collect();
        secs += t0.elapsed().as_secs_f64();
        bytes += texts.iter().map(String::len).sum::<usize>();
        let ok = got.iter().filter(|g| **g == Some(want.as_str())).count();
        let mut misses: BTreeMap<&str, usize> = BTreeMap::new();
        for g in got.iter().filter(|g| **g != Some(want.as_str())) {
            *misses.entry(g.unwrap_or("none")).or_default() += 1;
        }
        let miss = misses
            .iter()
            .max_by_key(|(_, n)| **n)
            .map(|(l, n)| format!("{l} ({n})"))
            .unwrap_or_default();
        println!(
            "| {want} | {} | {:.1}% | {miss} |",
            texts.len(),
            100.0 * ok as f64 / texts.len().max(1) as f64
        );
        all += texts.len();
        all_ok += ok;
    }
    println!(
        "\noverall: {all_ok}/{all} = {:.1}%; {:.1} MB/s, {:.0} paragraphs/s on one core",
        100.0 * all_ok as f64 / all.max(1) as f64,
        bytes as f64 / 1e6 / secs,
        all as f64 / secs
    );
    Ok(())
}
