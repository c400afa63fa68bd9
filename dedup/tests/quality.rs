//! MinHash-LSH checked against the truth: a corpus of real paragraphs (Python's reference
//! documentation, tests/data/dedup/pydoc_paragraphs.jsonl) with planted near-duplicates at
//! known word-5-gram Jaccard levels, clustered by the stage, compared pair by pair with the
//! exact Jaccard of every pair computed by brute force. Also: determinism across batch
//! orders, thread counts and spilling, and exact dedup.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use arrow::array::{Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use quern_core::stage::apply_sequence;
use quern_core::{BatchCtx, Stage};
use quern_dedup::normalize::normalize;
use quern_dedup::shingle::{jaccard_sorted, shingle_set, ShingleKind};
use quern_dedup::{
    ExactDedup, ExactDedupConfig, KeepRule, MinhashDedup, MinhashDedupConfig, NormalizeConfig,
};

fn base_docs() -> Vec<String> {
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

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let x = self.0;
        (x ^ (x >> 29)).wrapping_mul(0xBF58476D1CE4E5B9) >> 16
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn set_of(text: &str) -> Vec<u64> {
    let norm = normalize(text, &NormalizeConfig::default());
    shingle_set(&norm, ShingleKind::Word, 5, 1, true)
}

/// A copy of `text` whose word-5-gram Jaccard with it is as close to `target` as word
/// replacements get (from above), with the exact value.
fn plant(text: &str, target: f64, vocab: &[&str], rng: &mut Rng) -> (String, f64) {
    let words: Vec<&str> = text.split_whitespace().collect();
    let mut order: Vec<usize> = (0..words.len()).collect();
    for i in (1..order.len()).rev() {
        order.swap(i, rng.below(i + 1));
    }
    let repl: Vec<&str> = (0..words.len())
        .map(|_| vocab[rng.below(vocab.len())])
        .collect();
    let make = |k: usize| {
        let mut w = words.clone();
        for &p in &order[..k] {
            w[p] = repl[p];
        }
        w.join(" ")
    };
    let a = set_of(text);
    let j = |k: usize| jaccard_sorted(&a, &set_of(&make(k)));
    // Largest k with J(k) >= target (J falls as k grows, nearly monotonically).
    let (mut lo, mut hi) = (0usize, words.len());
    while lo < hi {
        let mid = (lo + hi).div_ceil(2);
        if j(mid) >= target {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    let out = make(lo);
    let jv = jaccard_sorted(&a, &set_of(&out));
    (out, jv)
}

struct Corpus {
    ids: Vec<String>,
    texts: Vec<String>,
}

fn corpus() -> Corpus {
    let base = base_docs();
    let vocab_owned: Vec<String> = base
        .iter()
        .flat_map(|d| d.split_whitespace().map(str::to_string))
        .collect();
    let vocab: Vec<&str> = vocab_owned.iter().map(String::as_str).collect();
    let mut rng = Rng(2024);
    let levels = [0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 1.0];
    let mut docs: Vec<(String, String)> = Vec::new();
    for (i, d) in base.iter().enumerate() {
        docs.push((format!("base-{i:04}"), d.clone()));
        let target = levels[i % levels.len()];
        let (v, _) = plant(d, target, &vocab, &mut rng);
        docs.push((format!("var-{i:04}"), v));
    }
    // Interleave deterministically so that originals and copies are not adjacent.
    for i in (1..docs.len()).rev() {
        docs.swap(i, rng.below(i + 1));
    }
    Corpus {
        ids: docs.iter().map(|d| d.0.clone()).collect(),
        texts: docs.into_iter().map(|d| d.1).collect(),
    }
}

fn batches(c: &Corpus, rows: usize) -> Vec<(BatchCtx, RecordBatch)> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Utf8, false),
        Field::new("text", DataType::Utf8, false),
    ]));
    (0..c.ids.len())
        .step_by(rows)
        .map(|start| {
            let end = (start + rows).min(c.ids.len());
            let b = RecordBatch::try_new(
                schema.clone(),
                vec![
                    Arc::new(StringArray::from(c.ids[start..end].to_vec())),
                    Arc::new(StringArray::from(c.texts[start..end].to_vec())),
                ],
            )
            .unwrap();
            // Two units, to exercise positions across units.
            let unit = (start >= c.ids.len() / 2) as u64;
            let first_row = if unit == 0 {
                start
            } else {
                start - c.ids.len() / 2
            } as u64;
            (BatchCtx { unit, first_row }, b)
        })
        .collect()
}

/// Runs a global stage the way the pipeline runner does: gather all (in the given order),
/// end_gather, apply all. Returns the cluster of each document by id (kept id or itself).
fn run_stage(
    stage: &dyn Stage,
    parts: &[(BatchCtx, RecordBatch)],
    order: &[usize],
) -> (HashMap<String, String>, usize, usize) {
    for &i in order {
        stage.gather(&parts[i].0, &parts[i].1).unwrap();
    }
    stage.end_gather().unwrap();
    let mut rep = HashMap::new();
    let (mut kept, mut rejected) = (0, 0);
    for (ctx, b) in parts {
        let out = apply_sequence(&[stage], ctx, b.clone()).unwrap();
        kept += out.kept.num_rows();
        for (batch, reasons) in std::iter::once((&out.kept, None))
            .chain(out.rejected.iter().map(|d| (&d.batch, Some(&d.reasons))))
        {
            let ids = batch
                .column_by_name("id")
                .unwrap()
                .as_any()
                .downcast_ref::<StringArray>()
                .unwrap();
            let cl = batch
                .column_by_name("dup_cluster")
                .unwrap()
                .as_any()
                .downcast_ref::<StringArray>()
                .unwrap();
            let of = batch
                .column_by_name("dup_of")
                .unwrap()
                .as_any()
                .downcast_ref::<StringArray>()
                .unwrap();
            for i in 0..batch.num_rows() {
                let id = ids.value(i).to_string();
                let c = if cl.is_null(i) {
                    id.clone()
                } else {
                    cl.value(i).to_string()
                };
                if reasons.is_some() {
                    rejected += 1;
                    assert_eq!(of.value(i), c, "dup_of names the kept document");
                } else {
                    assert!(of.is_null(i), "kept rows have no dup_of");
                }
                rep.insert(id, c);
            }
        }
    }
    (rep, kept, rejected)
}

#[test]
fn minhash_precision_recall_against_brute_force_jaccard() {
    let c = corpus();
    let n = c.ids.len();
    assert!(n >= 800, "{n}");
    let sets: Vec<Vec<u64>> = c.texts.iter().map(|t| set_of(t)).collect();
    let parts = batches(&c, 97);
    let stage = MinhashDedup::new("near", "stages[0]", MinhashDedupConfig::default()).unwrap();
    let order: Vec<usize> = (0..parts.len()).collect();
    let (rep, kept, rejected) = run_stage(&stage, &parts, &order);
    assert_eq!(kept + rejected, n, "every document is kept or rejected");

    // Brute force: the exact Jaccard of every pair.
    let mut tp = 0u64;
    let (mut pred, mut truth) = (0u64, 0u64);
    let mut curve: BTreeMap<u32, (u64, u64)> = BTreeMap::new();
    for i in 0..n {
        for j in i + 1..n {
            let jac = jaccard_sorted(&sets[i], &sets[j]);
            let same = rep[&c.ids[i]] == rep[&c.ids[j]];
            if jac >= 0.45 {
                let bin = ((jac * 20.0).floor() as u32).min(20);
                let e = curve.entry(bin).or_default();
                e.0 += 1;
                e.1 += same as u64;
            }
            let t = jac >= 0.8;
            truth += t as u64;
            pred += same as u64;
            tp += (t && same) as u64;
        }
    }
    println!("S-curve (true word-5-gram Jaccard bin: pairs, detected, rate), 14x8 bands:");
    for (bin, (pairs, det)) in &curve {
        println!(
            "  [{:.2}, {:.2}): {pairs:4} {det:4} {:.3}",
            *bin as f64 / 20.0,
            (*bin + 1) as f64 / 20.0,
            *det as f64 / *pairs as f64
        );
    }
    // Precision among pairs at Jaccard >= 0.8: detected pairs whose true Jaccard is >= 0.8
    // out of detected pairs that are >= 0.8 or unplanted (no real near-duplicate relation,
    // J < 0.5). Pairs between 0.5 and 0.8 are the S-curve's transition zone, reported above.
    let mut fp_far = 0u64;
    for i in 0..n {
        for j in i + 1..n {
            if rep[&c.ids[i]] == rep[&c.ids[j]] && jaccard_sorted(&sets[i], &sets[j]) < 0.5 {
                fp_far += 1;
            }
        }
    }
    let recall = tp as f64 / truth as f64;
    let precision = tp as f64 / (tp + fp_far) as f64;
    println!("pairs >= 0.8: {truth}, detected {tp}; all detected pairs {pred}; detected below 0.5: {fp_far}");
    println!("recall@0.8 = {recall:.4}, precision@0.8 = {precision:.4}");
    assert!(truth >= 150, "{truth}");
    assert!(recall >= 0.95, "recall {recall}");
    assert!(precision >= 0.95, "precision {precision}");
}

#[test]
fn clusters_are_identical_across_orders_threads_and_spilling() {
    let c = corpus();
    let parts = batches(&c, 61);
    let forward: Vec<usize> = (0..parts.len()).collect();
    let backward: Vec<usize> = forward.iter().rev().copied().collect();
    let run = |cfg: MinhashDedupConfig, order: &[usize], threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            let s = MinhashDedup::new("near", "stages[0]", cfg).unwrap();
            let (rep, _, _) = run_stage(&s, &parts, order);
            let mut v: Vec<(String, String)> = rep.into_iter().collect();
            v.sort();
            (v, s.stats().unwrap())
        })
    };
    let (a, sa) = run(MinhashDedupConfig::default(), &forward, 1);
    let (b, _) = run(MinhashDedupConfig::default(), &backward, 2);
    // 64KB budget: a quarter holds 1024 records, so the ~12k (document, band) records spill.
    let (d, sd) = run(
        MinhashDedupConfig::default().with_memory_limit("64KB"),
        &backward,
        2,
    );
    assert_eq!(sa.runs, 0);
    assert!(sd.runs >= 1, "{sd:?}");
    assert!(sa.duplicates > 100, "{sa:?}");
    assert_eq!(a, b);
    assert_eq!(a, d);
    assert_eq!(sa.clusters, sd.clusters);
}

#[test]
fn verification_cuts_low_similarity_pairs() {
    let c = corpus();
    let parts = batches(&c, 128);
    let order: Vec<usize> = (0..parts.len()).collect();
    let plain = MinhashDedup::new("a", "s", MinhashDedupConfig::default()).unwrap();
    let (_, _, rej_plain) = run_stage(&plain, &parts, &order);
    let verified =
        MinhashDedup::new("b", "s", MinhashDedupConfig::default().with_verify(0.8)).unwrap();
    let (rep, _, rej_verified) = run_stage(&verified, &parts, &order);
    assert!(verified.stats().unwrap().rejected_candidates > 0);
    assert!(rej_verified < rej_plain, "{rej_verified} {rej_plain}");
    // Identical planted copies (J = 1.0) stay joined.
    let sets: HashMap<&str, Vec<u64>> = c
        .ids
        .iter()
        .map(String::as_str)
        .zip(c.texts.iter().map(|t| set_of(t)))
        .collect();
    for i in 0..c.ids.len() / 2 {
        let (b, v) = (format!("base-{i:04}"), format!("var-{i:04}"));
        if jaccard_sorted(&sets[b.as_str()], &sets[v.as_str()]) == 1.0 {
            assert_eq!(rep[&b], rep[&v], "{b}");
        }
    }
}

#[test]
fn exact_dedup_finds_normalized_copies_and_keeps_by_rule() {
    let base = base_docs();
    let mut ids = Vec::new();
    let mut texts = Vec::new();
    for (i, d) in base.iter().take(50).enumerate() {
        ids.push(format!("d{i}"));
        texts.push(d.clone());
        if i % 5 == 0 {
            // Same text up to case, spacing and punctuation, and longer in bytes.
            ids.push(format!("d{i}-copy"));
            texts.push(format!("  {}!!", d.to_uppercase().replace(' ', "   ")));
        }
    }
    let c = Corpus { ids, texts };
    let parts = batches(&c, 16);
    let order: Vec<usize> = (0..parts.len()).rev().collect();
    let first = ExactDedup::new("exact", "s", ExactDedupConfig::default()).unwrap();
    let (rep, kept, rejected) = run_stage(&first, &parts, &order);
    assert_eq!((kept, rejected), (50, 10));
    assert_eq!(rep["d5-copy"], "d5");
    let longest = ExactDedup::new(
        "exact",
        "s",
        ExactDedupConfig {
            keep: KeepRule::Longest,
            ..Default::default()
        },
    )
    .unwrap();
    let (rep, _, _) = run_stage(&longest, &parts, &order);
    assert_eq!(rep["d5"], "d5-copy");
    let raw = ExactDedup::new(
        "exact",
        "s",
        ExactDedupConfig {
            normalize: NormalizeConfig::none(),
            ..Default::default()
        },
    )
    .unwrap();
    let (_, _, rejected) = run_stage(&raw, &parts, &order);
    assert_eq!(rejected, 0, "raw bytes differ");
}
