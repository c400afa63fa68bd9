//! Criterion bench of the readers: JSONL (plain and gzip), a JSON array and CSV, built from
//! the real fixture corpus (`tests/data/corpus/mixed.jsonl`, repeated to about 8 MB), read
//! through `read_file` with the output batches dropped. Throughput is in input bytes.

use std::hint::black_box;
use std::io::Write;
use std::path::Path;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use quern_ingest::{read_file, IngestOptions};

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

criterion_group!(benches, bench);
criterion_main!(benches);
