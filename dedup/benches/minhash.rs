//! Criterion bench of the MinHash hot path: signatures and band keys of real text.
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use quern_dedup::minhash::{MinHashParams, MinHasher, Scratch};

fn corpus() -> Vec<String> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/data/dedup/pydoc_paragraphs.jsonl"
    );
    std::fs::read_to_string(path)
        .expect("tests/data/dedup/pydoc_paragraphs.jsonl")
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["text"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let docs = corpus();
    let bytes: usize = docs.iter().map(|d| d.len()).sum();
    let mh = MinHasher::new(MinHashParams::default());
    let mut g = c.benchmark_group("minhash");
    g.throughput(Throughput::Bytes(bytes as u64));
    g.bench_function("signature+bands/112", |b| {
        let mut s = Scratch::default();
        let mut sig = vec![0u32; 112];
        let mut keys = Vec::new();
        b.iter(|| {
            keys.clear();
            for d in &docs {
                if mh.signature_into(d, &mut s, &mut sig) {
                    mh.band_keys(&sig, &mut s, &mut keys);
                }
            }
            keys.len()
        })
    });
    g.bench_function("shingles_only", |b| {
        let mut s = Scratch::default();
        b.iter(|| {
            docs.iter()
                .map(|d| mh.shingles(d, &mut s).len())
                .sum::<usize>()
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
