//! Criterion bench of each filter family and of the word splitter over real text (the mixed corpus fixture, tests/data/corpus/mixed.jsonl).

use std::sync::Arc;

use arrow::array::{RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use quern_core::stage::{BatchCtx, StageSpec};
use quern_core::StageRegistry;

fn batch() -> RecordBatch {
    let raw = include_str!("../../tests/data/corpus/mixed.jsonl");
    let texts: Vec<String> = raw
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| v["text"].as_str().map(str::to_string))
        .collect();
    let schema = Arc::new(Schema::new(vec![Field::new("text", DataType::Utf8, false)]));
    RecordBatch::try_new(schema, vec![Arc::new(StringArray::from(texts))]).unwrap()
}

fn bench(c: &mut Criterion) {
    let b = batch();
    let bytes: usize = b
        .column(0)
        .as_any()
        .downcast_ref::<StringArray>()
        .unwrap()
        .value_data()
        .len();
    let mut reg = StageRegistry::new();
    quern_filters::register_stages(&mut reg);
    let mut g = c.benchmark_group("filters");
    g.throughput(Throughput::Bytes(bytes as u64));
    for t in [
        "normalize",
        "gopher_quality",
        "gopher_repetition",
        "c4",
        "fineweb_quality",
        "language",
        "pii",
    ] {
        let spec = StageSpec {
            type_name: t.into(),
            name: t.into(),
            key: "bench".into(),
            params: serde_json::json!({}),
            ..Default::default()
        };
        let stage = reg.build(&spec).unwrap();
        g.bench_function(t, |bn| {
            bn.iter(|| stage.apply(&BatchCtx::default(), b.clone()).unwrap())
        });
    }
    // The word splitter alone (spaCy's English rules), which the Gopher, C4 and FineWeb
    // families share.
    let texts = b
        .column(0)
        .as_any()
        .downcast_ref::<StringArray>()
        .unwrap()
        .clone();
    let tok = quern_filters::words::WordTokenizer::get();
    g.bench_function("words", |bn| {
        let mut words = Vec::new();
        bn.iter(|| {
            let mut n = 0;
            for t in texts.iter().flatten() {
                words.clear();
                tok.words(t, &mut words);
                n += words.len();
            }
            n
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
