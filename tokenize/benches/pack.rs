//! Criterion benches of the tokenize hot path on the real-text fixture
//! (`tests/data/corpus/mixed.jsonl`): encoding a batch with a trained byte-level BPE,
//! packing the ids into `seq_len + 1` rows, and building the Arrow batch.

use std::path::Path;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use quern_tokenize::pack::Packer;
use quern_tokenize::schema::RowBuilder;
use quern_tokenize::tokenizer::{train_tokenizer, TrainTokenizerConfig};
use quern_tokenize::Objective;

fn texts() -> Vec<String> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/corpus/mixed.jsonl");
    std::fs::read_to_string(p)
        .expect("fixture")
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).expect("json")["text"]
                .as_str()
                .expect("text")
                .to_string()
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let texts = texts();
    let bytes: usize = texts.iter().map(String::len).sum();
    let tok = train_tokenizer(
        &TrainTokenizerConfig::default().with_vocab_size(4000),
        texts.iter().cloned(),
    )
    .expect("train");
    let encoded: Vec<Vec<i32>> = tok
        .encode_batch_fast(texts.iter().map(String::as_str).collect(), false)
        .expect("encode")
        .iter()
        .map(|e| e.get_ids().iter().map(|&i| i as i32).collect())
        .collect();
    let ids: usize = encoded.iter().map(Vec::len).sum();

    let mut g = c.benchmark_group("tokenize");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(bytes as u64));
    g.bench_function("encode_batch_fast", |b| {
        b.iter(|| {
            tok.encode_batch_fast(texts.iter().map(String::as_str).collect(), false)
                .expect("encode")
                .len()
        })
    });
    g.throughput(Throughput::Elements(ids as u64));
    g.bench_function("pack_1024_and_build_batch", |b| {
        b.iter(|| {
            let mut p = Packer::new(1025);
            let mut rows = RowBuilder::new(Objective::Clm);
            let mut doc = Vec::new();
            for (i, e) in encoded.iter().enumerate() {
                doc.clear();
                doc.extend_from_slice(e);
                doc.push(0);
                p.push(&format!("d{i}"), &doc, &mut rows);
            }
            p.finish(Default::default(), 0, &mut rows);
            rows.finish().expect("batch").num_rows()
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
