//! Criterion benches of the labeling kernels on the real SpamAssassin fixture: classifier
//! training and prediction, decontamination lookups, split assignment and rule scoring.

use std::path::PathBuf;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use quern_labeling::classifier::{predict_all, train, TrainOptions};
use quern_labeling::data::read_labelled;
use quern_labeling::decontam::NgramIndex;
use quern_labeling::rules::{RuleSet, RulesConfig};
use quern_labeling::split::{assign, Ratios};

fn fixture() -> (Vec<String>, Vec<u32>, Vec<String>) {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/data/labeling/spam_ham.jsonl");
    let d = read_labelled(&p, "text", "label").unwrap();
    let (names, idx) = d.encode();
    (d.texts, idx, names)
}

fn benches(c: &mut Criterion) {
    let (texts, labels, names) = fixture();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let bytes: u64 = texts.iter().map(|t| t.len() as u64).sum();
    let mut g = c.benchmark_group("labeling");
    g.throughput(Throughput::Bytes(bytes));
    g.sample_size(10);

    let opts = TrainOptions::default().with_threads(1).with_epochs(5);
    g.bench_function("classifier_train_5_epochs_1_thread", |b| {
        b.iter(|| train(&refs, &labels, &names, &opts).unwrap())
    });
    let (model, _) = train(&refs, &labels, &names, &opts).unwrap();
    g.bench_function("classifier_predict", |b| {
        b.iter(|| predict_all(&model, &refs))
    });

    let mut idx = NgramIndex::new(13).unwrap();
    idx.add_set("half", &texts[..texts.len() / 2]);
    g.bench_function("decontaminate_check_13grams", |b| {
        b.iter(|| {
            let (mut buf, mut ring) = (String::new(), Vec::new());
            refs.iter()
                .filter(|t| idx.check(t, 1, &mut buf, &mut ring).is_some())
                .count()
        })
    });

    let cfg: RulesConfig = serde_json::from_value(serde_json::json!({"labels": [
        {"name": "money", "keywords": ["free", "money", "cash", "credit", "offer"], "patterns": [{"regex": "\\$\\d+"}]},
        {"name": "tech", "keywords": ["linux", "kernel", "rpm", "python", "perl"]}
    ]}))
    .unwrap();
    let rules = RuleSet::new(&cfg, "bench").unwrap();
    g.bench_function("rules_score", |b| {
        b.iter(|| refs.iter().map(|t| rules.scores(t)[0]).sum::<f64>())
    });
    g.finish();

    let ratios = Ratios::new(0.8, 0.1, 0.1, "bench").unwrap();
    let ids: Vec<String> = (0..100_000).map(|i| format!("doc-{i}")).collect();
    let mut g = c.benchmark_group("split");
    g.throughput(Throughput::Elements(ids.len() as u64));
    g.bench_function("assign_100k", |b| {
        b.iter(|| ids.iter().map(|k| assign(k, 1, ratios)).sum::<usize>())
    });
    g.finish();
}

criterion_group!(labeling, benches);
criterion_main!(labeling);
