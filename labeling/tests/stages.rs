//! The labeling stages end to end through `quern_core::stage::apply_sequence`, on real text:
//! the SpamAssassin fixture in `tests/data/labeling/spam_ham.jsonl` (see its README).

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, RecordBatch, StringArray, UInt32Array};
use arrow::datatypes::{DataType, Field, Schema};
use quern_core::stage::{apply_sequence, BatchCtx, Stage, StageKind, StageSpec};
use quern_labeling::classifier::{
    predict_all, train, ClassifierConfig, ClassifierStage, Metrics, TrainOptions,
};
use quern_labeling::data::read_labelled;
use quern_labeling::decontam::{DecontStage, REASON as CONTAMINATED};
use quern_labeling::split::{assign, Ratios, SplitStage, SPLITS};

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/data/labeling/spam_ham.jsonl")
}

fn spec(type_name: &str, params: serde_json::Value) -> StageSpec {
    StageSpec {
        type_name: type_name.into(),
        name: type_name.into(),
        key: "stages[0]".into(),
        params,
        ..Default::default()
    }
}

/// A docs batch with optional extra Utf8 columns.
fn batch(ids: &[String], texts: &[String], extra: &[(&str, Vec<Option<String>>)]) -> RecordBatch {
    let mut fields = vec![
        Field::new("id", DataType::Utf8, false),
        Field::new("text", DataType::Utf8, false),
    ];
    let mut cols: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from(ids.to_vec())),
        Arc::new(StringArray::from(texts.to_vec())),
    ];
    for (name, vals) in extra {
        fields.push(Field::new(*name, DataType::Utf8, true));
        cols.push(Arc::new(
            vals.iter().map(|v| v.as_deref()).collect::<StringArray>(),
        ));
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), cols).unwrap()
}

fn strings(b: &RecordBatch, col: &str) -> Vec<Option<String>> {
    let a = b
        .column_by_name(col)
        .unwrap_or_else(|| panic!("no column {col}"));
    let a = a.as_any().downcast_ref::<StringArray>().unwrap();
    (0..a.len())
        .map(|i| (!a.is_null(i)).then(|| a.value(i).to_string()))
        .collect()
}

/// Runs a stage over `batches` the way the runner does: gather everything first for
/// global stages, then apply batch by batch.
fn run_stage(stage: &dyn Stage, batches: &[RecordBatch]) -> Vec<RecordBatch> {
    if stage.kind() == StageKind::Global {
        for (i, b) in batches.iter().enumerate() {
            stage
                .gather(
                    &BatchCtx {
                        unit: i as u64,
                        first_row: 0,
                    },
                    b,
                )
                .unwrap();
        }
        stage.end_gather().unwrap();
    }
    batches
        .iter()
        .map(|b| {
            apply_sequence(&[stage], &BatchCtx::default(), b.clone())
                .unwrap()
                .kept
        })
        .collect()
}

/// 3,000 documents: real texts (cycled), 1 in 3 of them in a near-duplicate cluster of 4,
/// with a label column drawn from the fixture's labels.
/// ids, texts, dup_cluster, topic.
type Columns = (
    Vec<String>,
    Vec<String>,
    Vec<Option<String>>,
    Vec<Option<String>>,
);

fn split_corpus() -> Columns {
    let data = read_labelled(&fixture(), "text", "label").unwrap();
    let (mut ids, mut texts, mut clusters, mut labels) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for i in 0..3000 {
        let k = i % data.texts.len();
        ids.push(format!("doc-{i:05}"));
        texts.push(data.texts[k].clone());
        clusters.push((i % 3 == 0).then(|| format!("doc-{:05}", (i / 12) * 12)));
        labels.push(Some(if i % 10 < 3 {
            "rare".to_string()
        } else {
            data.labels[k].clone()
        }));
    }
    (ids, texts, clusters, labels)
}

fn chunks(
    ids: &[String],
    texts: &[String],
    clusters: &[Option<String>],
    labels: &[Option<String>],
    size: usize,
) -> Vec<RecordBatch> {
    (0..ids.len())
        .step_by(size)
        .map(|s| {
            let e = (s + size).min(ids.len());
            batch(
                &ids[s..e],
                &texts[s..e],
                &[
                    ("dup_cluster", clusters[s..e].to_vec()),
                    ("topic", labels[s..e].to_vec()),
                ],
            )
        })
        .collect()
}

fn splits_by_id(out: &[RecordBatch]) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    for b in out {
        for (id, s) in strings(b, "id").into_iter().zip(strings(b, "split")) {
            m.insert(id.unwrap(), s.unwrap());
        }
    }
    m
}

#[test]
fn split_ratios_determinism_and_clusters() {
    let (ids, texts, clusters, labels) = split_corpus();
    let stage = SplitStage::from_spec(&spec(
        "split",
        serde_json::json!({"train": 0.7, "val": 0.2, "test": 0.1, "seed": 5}),
    ))
    .unwrap();
    assert_eq!(stage.kind(), StageKind::Map);
    let a = splits_by_id(&run_stage(
        &stage,
        &chunks(&ids, &texts, &clusters, &labels, 256),
    ));
    // Same answer whatever the batching, and from a fresh stage.
    let again = SplitStage::from_spec(&spec(
        "split",
        serde_json::json!({"train": 0.7, "val": 0.2, "test": 0.1, "seed": 5}),
    ))
    .unwrap();
    let b = splits_by_id(&run_stage(
        &again,
        &chunks(&ids, &texts, &clusters, &labels, 1000),
    ));
    assert_eq!(a, b);
    assert_eq!(a.len(), 3000);
    // Order-free: the documents in reverse order get the same splits.
    let rev = |v: &[String]| v.iter().rev().cloned().collect::<Vec<_>>();
    let revo = |v: &[Option<String>]| v.iter().rev().cloned().collect::<Vec<_>>();
    let r = splits_by_id(&run_stage(
        &again,
        &chunks(
            &rev(&ids),
            &rev(&texts),
            &revo(&clusters),
            &revo(&labels),
            333,
        ),
    ));
    assert_eq!(a, r);
    // The stage and the `quern_split` SQL function (`assign`) agree, keyed by
    // `coalesce(dup_cluster, id)`.
    let ratios = Ratios::new(0.7, 0.2, 0.1, "split").unwrap();
    for (i, id) in ids.iter().enumerate() {
        let key = clusters[i].as_deref().unwrap_or(id);
        assert_eq!(a[id], SPLITS[assign(key, 5, ratios)], "{id}");
    }
    // Ratios: 2,250 groups (1,000 clustered docs in 250 clusters + 2,000 singletons), so the
    // document shares are within a few points of the ratios.
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for s in a.values() {
        *counts.entry(s.as_str()).or_default() += 1;
    }
    let share = |s: &str| counts.get(s).copied().unwrap_or(0) as f64 / 3000.0;
    assert!((share("train") - 0.7).abs() < 0.05, "{counts:?}");
    assert!((share("val") - 0.2).abs() < 0.05, "{counts:?}");
    assert!((share("test") - 0.1).abs() < 0.04, "{counts:?}");
    // No cluster spans two splits, and the representative goes with its cluster.
    let mut cluster_split: HashMap<&str, &str> = HashMap::new();
    for (i, c) in clusters.iter().enumerate() {
        if let Some(c) = c {
            let s = a[&ids[i]].as_str();
            let prev = cluster_split.insert(c, s);
            assert!(
                prev.is_none_or(|p| p == s),
                "cluster {c} spans {prev:?} and {s}"
            );
            assert_eq!(
                a[c.as_str()],
                s,
                "representative {c} is not with its cluster"
            );
        }
    }
    assert_eq!(cluster_split.len(), 250);
    // Another seed moves documents.
    let other = SplitStage::from_spec(&spec(
        "split",
        serde_json::json!({"train": 0.7, "val": 0.2, "test": 0.1, "seed": 6}),
    ))
    .unwrap();
    let c = splits_by_id(&run_stage(
        &other,
        &chunks(&ids, &texts, &clusters, &labels, 256),
    ));
    assert!(a.iter().filter(|(k, v)| c[*k] != **v).count() > 300);
}

#[test]
fn stratified_split_is_exact_per_label_and_keeps_clusters() {
    let (ids, texts, clusters, labels) = split_corpus();
    let params = serde_json::json!({"train": 0.8, "val": 0.1, "test": 0.1, "stratify_by": "topic"});
    let stage = SplitStage::from_spec(&spec("split", params.clone())).unwrap();
    assert_eq!(stage.kind(), StageKind::Global);
    let a = splits_by_id(&run_stage(
        &stage,
        &chunks(&ids, &texts, &clusters, &labels, 300),
    ));
    let again = SplitStage::from_spec(&spec("split", params.clone())).unwrap();
    assert_eq!(
        a,
        splits_by_id(&run_stage(
            &again,
            &chunks(&ids, &texts, &clusters, &labels, 700)
        ))
    );
    // Order-free too: the groups are dealt in seeded hash order, not in arrival order.
    let rev = |v: &[String]| v.iter().rev().cloned().collect::<Vec<_>>();
    let revo = |v: &[Option<String>]| v.iter().rev().cloned().collect::<Vec<_>>();
    let third = SplitStage::from_spec(&spec("split", params)).unwrap();
    assert_eq!(
        a,
        splits_by_id(&run_stage(
            &third,
            &chunks(
                &rev(&ids),
                &rev(&texts),
                &revo(&clusters),
                &revo(&labels),
                450
            )
        ))
    );
    // Per label, count groups (clusters count once, in the stratum of their smallest label).
    let mut group_label: HashMap<String, String> = HashMap::new();
    for i in 0..ids.len() {
        let g = clusters[i].clone().unwrap_or_else(|| ids[i].clone());
        let l = labels[i].clone().unwrap();
        group_label
            .entry(g)
            .and_modify(|old| {
                if l < *old {
                    *old = l.clone()
                }
            })
            .or_insert(l);
    }
    let mut per: BTreeMap<String, [usize; 3]> = BTreeMap::new();
    for (g, l) in &group_label {
        let s = ["train", "val", "test"]
            .iter()
            .position(|s| *s == a[g])
            .unwrap();
        per.entry(l.clone()).or_default()[s] += 1;
    }
    assert_eq!(per.len(), 3, "{per:?}");
    for (label, c) in &per {
        let n: usize = c.iter().sum();
        // Largest-remainder allocation: each split within one group of its exact share.
        for (s, r) in [0.8, 0.1, 0.1].iter().enumerate() {
            assert!(
                (c[s] as f64 - r * n as f64).abs() < 1.0,
                "{label}: {c:?} of {n}"
            );
        }
    }
    for (i, c) in clusters.iter().enumerate() {
        if let Some(c) = c {
            assert_eq!(a[&ids[i]], a[c.as_str()], "cluster {c} split apart");
        }
    }
}

fn words(s: &str, from: usize, n: usize) -> String {
    s.split_whitespace()
        .skip(from)
        .take(n)
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn decontamination_finds_planted_passages_and_ignores_short_phrases() {
    let data = read_labelled(&fixture(), "text", "label").unwrap();
    let ham: Vec<&String> = data
        .texts
        .iter()
        .zip(&data.labels)
        .filter(|(t, l)| *l == "ham" && t.split_whitespace().count() >= 60)
        .map(|(t, _)| t)
        .collect();
    let spam: Vec<&String> = data
        .texts
        .iter()
        .zip(&data.labels)
        .filter(|(_, l)| *l == "spam")
        .map(|(t, _)| t)
        .collect();
    // Six "benchmark" passages of 40 words from real messages, in two evaluation sets.
    let dir = tempfile::tempdir().unwrap();
    let passages: Vec<String> = ham[..6].iter().map(|t| words(t, 10, 40)).collect();
    let write = |name: &str, items: &[String]| {
        let p = dir.path().join(name);
        let lines: Vec<String> = items
            .iter()
            .map(|q| serde_json::json!({"question": q, "answer": "n/a"}).to_string())
            .collect();
        std::fs::write(&p, lines.join("\n")).unwrap();
        p
    };
    let set_a = write("bench_a.jsonl", &passages[..3]);
    let set_b = write("bench_b.jsonl", &passages[3..]);
    let stage = DecontStage::from_spec(&spec(
        "decontaminate",
        serde_json::json!({
            "action": "drop",
            "eval_sets": [
                {"path": set_a, "fields": ["question", "answer"]},
                {"path": set_b, "name": "bench_b", "fields": ["question"]},
            ],
        }),
    ))
    .unwrap();
    // 60 training documents (real spam): 6 with a planted passage (the middle 20 words,
    // upper-cased and with different punctuation), 6 sharing only an 8-word and a 12-word
    // phrase with one, the rest untouched.
    let (mut ids, mut texts, mut planted) = (Vec::new(), Vec::new(), Vec::new());
    for (i, t) in spam[..60].iter().enumerate() {
        let mut t = t.to_string();
        if i % 10 == 0 {
            let p = &passages[i / 10];
            // 20 normalised words of the passage, upper-cased, with commas between them.
            let mid = quern_labeling::text::norm_words(p)[10..30]
                .join(" , ")
                .to_uppercase();
            t = format!("{} {mid} {}", words(&t, 0, 30), words(&t, 30, 1000));
            planted.push(format!("doc-{i}"));
        } else if i % 10 == 5 {
            let p = &passages[i / 10];
            // 8 and 12 words after normalisation (a URL is several words once punctuation
            // goes): 12 is one word short of the 13-gram, the boundary of a match.
            let norm = quern_labeling::text::norm_words(p);
            let (a, b) = (norm[..8].join(" "), norm[20..32].join(" "));
            t = format!(
                "{} {a} and then {b} {}",
                words(&t, 0, 20),
                words(&t, 20, 1000)
            );
        }
        ids.push(format!("doc-{i}"));
        texts.push(t);
    }
    let out = apply_sequence(&[&stage], &BatchCtx::default(), batch(&ids, &texts, &[])).unwrap();
    assert_eq!(out.rejected.len(), 1);
    let rej = &out.rejected[0];
    assert!(rej.reasons.iter().all(|r| r == CONTAMINATED));
    let mut got: Vec<String> = strings(&rej.batch, "id")
        .into_iter()
        .map(Option::unwrap)
        .collect();
    got.sort();
    planted.sort();
    assert_eq!(
        got, planted,
        "exactly the planted documents are contaminated"
    );
    // The matched set is named in the columns the rejected row carries.
    let by_id: HashMap<String, String> = strings(&rej.batch, "id")
        .into_iter()
        .zip(strings(&rej.batch, "contaminated_set"))
        .map(|(a, b)| (a.unwrap(), b.unwrap()))
        .collect();
    assert_eq!(by_id["doc-0"], "bench_a");
    assert_eq!(by_id["doc-50"], "bench_b");
    let matches = rej
        .batch
        .column_by_name("contaminated_matches")
        .unwrap()
        .as_any()
        .downcast_ref::<UInt32Array>()
        .unwrap();
    // 20 planted words hold (at least) 20 - 13 + 1 = 8 of the passage's 13-grams.
    assert!(matches.iter().all(|m| m.unwrap() >= 8), "{matches:?}");
    assert_eq!(out.kept.num_rows(), 54);
    assert!(strings(&out.kept, "contaminated_set")
        .iter()
        .all(Option::is_none));
}

#[test]
fn classifier_learns_spam_from_real_mail() {
    let data = read_labelled(&fixture(), "text", "label").unwrap();
    assert!(data.texts.len() >= 200);
    let (names, idx) = data.encode();
    assert_eq!(names, ["ham", "spam"]);
    // Every fourth message held out.
    let (mut tr_t, mut tr_l, mut te_t, mut te_l) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (i, (t, l)) in data.texts.iter().zip(&idx).enumerate() {
        if i % 4 == 0 {
            te_t.push(t.as_str());
            te_l.push(*l);
        } else {
            tr_t.push(t.as_str());
            tr_l.push(*l);
        }
    }
    let opts = TrainOptions::default()
        .with_threads(1)
        .with_epochs(15)
        .with_dim(32);
    let (model, stats) = train(&tr_t, &tr_l, &names, &opts).unwrap();
    assert!(stats.rows > 1000, "{stats:?}");
    let pred: Vec<u32> = predict_all(&model, &te_t)
        .into_iter()
        .map(|(l, _)| l as u32)
        .collect();
    let m = Metrics::compute(&names, &te_l, &pred);
    let majority = te_l
        .iter()
        .filter(|&&l| l == 0)
        .count()
        .max(te_l.iter().filter(|&&l| l == 1).count()) as f64
        / te_l.len() as f64;
    assert!(
        m.accuracy >= 0.85 && m.accuracy > majority + 0.2,
        "accuracy {} vs majority {majority}\n{m}",
        m.accuracy
    );
    assert!(m.macro_f1 >= 0.85, "{m}");

    // The stage: label everything, or keep only what looks like ham.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spam.qcls");
    model.save(&path).unwrap();
    let ids: Vec<String> = (0..te_t.len()).map(|i| format!("t{i}")).collect();
    let texts: Vec<String> = te_t.iter().map(|t| t.to_string()).collect();
    let stage = ClassifierStage::from_spec(&StageSpec {
        type_name: "classifier".into(),
        name: "spam".into(),
        key: "stages[2]".into(),
        params: serde_json::json!({"model": path, "keep": ["ham"], "threshold": 0.5}),
        ..Default::default()
    })
    .unwrap();
    let out = apply_sequence(&[&stage], &BatchCtx::default(), batch(&ids, &texts, &[])).unwrap();
    let kept_labels = strings(&out.kept, "spam_label");
    assert!(kept_labels.iter().all(|l| l.as_deref() == Some("ham")));
    let dropped = out.rejected.first().map_or(0, |r| r.batch.num_rows());
    assert_eq!(dropped, pred.iter().filter(|&&p| p == 1).count());
    assert_eq!(out.kept.num_rows() + dropped, te_t.len());
    // A keep label the model does not know is a config error naming the key.
    let bad = ClassifierConfig {
        model: path.clone(),
        column: "text".into(),
        keep: vec!["eggs".into()],
        threshold: 0.5,
    };
    let e = ClassifierStage::new("spam", Arc::new(model), &bad, "stages[2]")
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("stages[2].keep") && e.contains("eggs"), "{e}");
}

/// Two threads train in deterministic rounds: on real mail, two runs write the same model
/// bytes, and 4-fold cross-validated accuracy is within a point of one thread's.
#[test]
fn two_thread_training_is_deterministic_and_as_accurate_as_one() {
    let data = read_labelled(&fixture(), "text", "label").unwrap();
    let (names, idx) = data.encode();
    let opts = TrainOptions::default().with_epochs(10).with_dim(16);
    let dir = tempfile::tempdir().unwrap();
    let mut correct = [0usize; 2];
    for fold in 0..4 {
        let (mut tr_t, mut tr_l, mut te_t, mut te_l) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for (i, (t, l)) in data.texts.iter().zip(&idx).enumerate() {
            if i % 4 == fold {
                te_t.push(t.as_str());
                te_l.push(*l as usize);
            } else {
                tr_t.push(t.as_str());
                tr_l.push(*l);
            }
        }
        for (k, threads) in [1, 2].into_iter().enumerate() {
            let o = opts.clone().with_threads(threads);
            let (model, stats) = train(&tr_t, &tr_l, &names, &o).unwrap();
            assert_eq!(stats.threads, threads);
            correct[k] += predict_all(&model, &te_t)
                .iter()
                .zip(&te_l)
                .filter(|((p, _), y)| p == *y)
                .count();
            if threads == 2 && fold == 0 {
                let bytes = |m: &quern_labeling::classifier::Model, name: &str| {
                    let p = dir.path().join(name);
                    m.save(&p).unwrap();
                    std::fs::read(p).unwrap()
                };
                let again = train(&tr_t, &tr_l, &names, &o).unwrap().0;
                assert_eq!(bytes(&model, "a.qcls"), bytes(&again, "b.qcls"));
            }
        }
    }
    let n = data.texts.len() as f64;
    let acc = correct.map(|c| c as f64 / n);
    eprintln!("4-fold accuracy, 1 and 2 threads: {acc:?}");
    assert!(acc[0] > 0.85, "{acc:?}");
    assert!(
        acc[1] >= acc[0] - 0.01,
        "two threads {} vs one {}",
        acc[1],
        acc[0]
    );
}
