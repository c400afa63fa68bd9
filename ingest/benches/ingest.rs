//! Criterion bench of the readers: JSONL (plain and gzip), a JSON array and CSV, built from
//! the real fixture corpus (`tests/data/corpus/mixed.jsonl`, repeated to about 8 MB), read
//! through `read_file` with the output batches dropped. Throughput is in input bytes.
//!
//! And of HTML main-text extraction (`html::extract`: charset, parse, boilerplate removal)
//! on newspaper4k's 30 real news pages, when `scripts/fetch_web_data.sh` has fetched them
//! (`$QUERN_CACHE`, default `~/.cache/quern`); throughput is in pages.

use std::hint::black_box;
use std::io::Write;
use std::path::Path;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use quern_ingest::{html, read_file, IngestOptions};

fn corpus_lines() -> Vec<String> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/corpus/mixed.jsonl");
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    let lines: Vec<String> = text.lines().map(str::to_string).collect();
    let mut out = Vec::new();
    let mut size = 0;
    while size < 8 << 20 {
        for l in &lines {
            size += l.len() + 1;
            out.push(l.clone());
        }
    }
    out
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let lines = corpus_lines();
    let jsonl = lines.join("\n") + "\n";
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(jsonl.as_bytes()).unwrap();
    let json = format!("[{}]", lines.join(",\n"));
    let mut csv_w = csv::Writer::from_writer(Vec::new());
    csv_w.write_record(["id", "text", "source"]).unwrap();
    for l in &lines {
        let v: serde_json::Value = serde_json::from_str(l).unwrap();
        csv_w
            .write_record([
                v["id"].as_str().unwrap(),
                v["text"].as_str().unwrap(),
                v["source"].as_str().unwrap(),
            ])
            .unwrap();
    }
    let files = [
        ("jsonl", "c.jsonl", jsonl.into_bytes()),
        ("jsonl_gz", "c.jsonl.gz", gz.finish().unwrap()),
        ("json_array", "c.json", json.into_bytes()),
        ("csv", "c.csv", csv_w.into_inner().unwrap()),
    ];
    let opts = IngestOptions::default();
    let mut g = c.benchmark_group("read_file");
    g.sample_size(10);
    for (name, file, bytes) in files {
        let p = dir.path().join(file);
        std::fs::write(&p, &bytes).unwrap();
        g.throughput(Throughput::Bytes(bytes.len() as u64));
        g.bench_function(name, |b| {
            b.iter(|| {
                let counts = read_file(&p, &opts, &mut |chunk| {
                    black_box(chunk);
                    Ok(())
                })
                .unwrap();
                assert_eq!(counts.quarantined, 0);
                counts
            })
        });
    }
    g.finish();
}

/// newspaper4k's pages, when fetched: (name, bytes), sorted by name.
fn web_pages() -> Option<Vec<(String, Vec<u8>)>> {
    let cache = std::env::var_os("QUERN_CACHE")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache/quern")))?;
    let dir = cache.join("newspaper4k-0.9.6/tests/data/html");
    let mut pages: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .ok()?
        .filter_map(|e| {
            let p = e.ok()?.path();
            let name = p.file_name()?.to_str()?.strip_suffix(".html")?.to_string();
            Some((name, std::fs::read(&p).ok()?))
        })
        .collect();
    pages.sort();
    (!pages.is_empty()).then_some(pages)
}

fn bench_html(c: &mut Criterion) {
    let Some(pages) = web_pages() else {
        eprintln!("html_extract: no pages (run scripts/fetch_web_data.sh); skipped");
        return;
    };
    let urls: Vec<String> = pages
        .iter()
        .map(|(n, _)| format!("http://example.com/{n}.html"))
        .collect();
    let mut g = c.benchmark_group("html_extract");
    g.sample_size(20);
    g.throughput(Throughput::Elements(pages.len() as u64));
    g.bench_function("newspaper4k_pages", |b| {
        b.iter(|| {
            let mut chars = 0;
            for ((_, bytes), url) in pages.iter().zip(&urls) {
                chars += black_box(html::extract(bytes, Some("text/html"), Some(url)))
                    .text
                    .len();
            }
            chars
        })
    });
    g.finish();
}

criterion_group!(benches, bench, bench_html);
criterion_main!(benches);
