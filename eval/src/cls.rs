//! Classification: a model's classification head on a `cls` split (`quern eval cls`), and
//! the metrics: accuracy, macro-F1, per-class precision/recall/F1 and the confusion matrix,
//! with scikit-learn's conventions (a ratio with a zero denominator is 0; macro averages
//! weigh every class once, classes without support included).
//!
//! [`evaluate`] reads the split's rows in shard order, sorts them by length, runs them in
//! right-padded batches through [`Transformer::classify`] (the padding masked, so each row's
//! logits do not depend on the batch it lands in) and predicts each row's highest logit
//! (ties to the lower class id). It also reports the mean cross-entropy of the gold labels
//! (`nll`), the loss `train.objective = "cls"` minimises (without class weights).

use std::fs::File;
use std::path::Path;
use std::time::Instant;

use arrow::array::{Array, AsArray, Int64Array};
use arrow::datatypes::Int32Type;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use quern_core::error::{IoContext, Place};
use quern_core::{Error, Result};
use quern_models::Transformer;
use quern_tokenize::meta::{Objective, TokenMeta};
use quern_tokenize::schema;
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

/// One class's figures.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassStats {
    pub label: String,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
    /// Examples whose gold label is this class.
    pub support: u64,
}

/// Classification results.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassReport {
    pub examples: u64,
    pub accuracy: f64,
    pub macro_f1: f64,
    pub classes: Vec<ClassStats>,
    /// `confusion[gold][predicted]`.
    pub confusion: Vec<Vec<u64>>,
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

/// The report for gold and predicted class ids (indices into `labels`).
pub fn class_report(labels: &[String], gold: &[usize], pred: &[usize]) -> Result<ClassReport> {
    if gold.len() != pred.len() {
        return Err(Error::bug(format!(
            "{} gold labels but {} predictions",
            gold.len(),
            pred.len()
        )));
    }
    let k = labels.len();
    let mut confusion = vec![vec![0u64; k]; k];
    for (&g, &p) in gold.iter().zip(pred) {
        if g >= k || p >= k {
            return Err(Error::bug(format!(
                "class id {} outside the {k} labels",
                g.max(p)
            )));
        }
        confusion[g][p] += 1;
    }
    let classes: Vec<ClassStats> = (0..k)
        .map(|c| {
            let tp = confusion[c][c];
            let support: u64 = confusion[c].iter().sum();
            let predicted: u64 = confusion.iter().map(|row| row[c]).sum();
            let precision = ratio(tp, predicted);
            let recall = ratio(tp, support);
            let f1 = if precision + recall > 0.0 {
                2.0 * precision * recall / (precision + recall)
            } else {
                0.0
            };
            ClassStats {
                label: labels[c].clone(),
                precision,
                recall,
                f1,
                support,
            }
        })
        .collect();
    let correct: u64 = (0..k).map(|c| confusion[c][c]).sum();
    Ok(ClassReport {
        examples: gold.len() as u64,
        accuracy: ratio(correct, gold.len() as u64),
        macro_f1: if k == 0 {
            0.0
        } else {
            classes.iter().map(|c| c.f1).sum::<f64>() / k as f64
        },
        classes,
        confusion,
    })
}

/// How [`evaluate`] runs.
#[derive(Debug, Clone)]
pub struct ClsOptions {
    /// Rows per forward pass (>= 1). Results do not depend on it.
    pub batch_size: usize,
    /// Only the first N rows (in shard order).
    pub max_rows: Option<u64>,
}

/// The result of [`evaluate`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClsEval {
    /// Rows scored.
    pub rows: u64,
    /// The class names (the split's `meta.json` `labels`).
    pub labels: Vec<String>,
    /// The head's pooling (`last`, `first` or `mean`).
    pub pooling: String,
    /// Mean cross-entropy of the gold labels (nats).
    pub nll: f64,
    /// Accuracy, macro-F1, per-class figures and the confusion matrix.
    pub report: ClassReport,
    pub seconds: f64,
}

/// Scores the classification head of `model` on the `cls` split `split` (see the module
/// docs). Refused, naming the file: a split of another objective or without labels, a model
/// without a head or whose head has other labels, a label outside the class ids, a row the
/// model's context or vocabulary cannot hold. `progress(done, total)` is called per batch.
pub fn evaluate(
    model: &Transformer,
    split: &Path,
    opts: &ClsOptions,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<ClsEval> {
    let t0 = Instant::now();
    if opts.batch_size == 0 {
        return Err(Error::usage("--batch-size must be at least 1"));
    }
    let meta = TokenMeta::load(split)?;
    let meta_path = split.join(quern_tokenize::meta::META_JSON);
    if meta.objective != Objective::Cls {
        return Err(Error::bad_input(
            Place::file(&meta_path),
            format!(
                "`objective` is `{}`: quern eval cls needs a split tokenized with --objective cls",
                meta.objective
            ),
        ));
    }
    let head = model.head().ok_or_else(|| {
        Error::usage(
            "the model has no classification head: evaluate a model trained with train.objective = \"cls\"",
        )
    })?;
    let k = meta.labels.len();
    if k != head.num_labels || (!head.labels.is_empty() && head.labels != meta.labels) {
        return Err(Error::bad_input(
            Place::file(&meta_path),
            format!(
                "the split's labels [{}] are not the model's [{}]",
                meta.labels.join(", "),
                head.label_names().join(", ")
            ),
        ));
    }
    let (vocab, ctx) = (model.vocab_size(), model.seq_len());
    let mut rows: Vec<(Vec<i64>, usize)> = Vec::new();
    let mut left = opts.max_rows.unwrap_or(u64::MAX);
    'shards: for shard in &meta.shards {
        let path = split.join(&shard.file);
        let file = File::open(&path).at(&path)?;
        let bad = |msg: String| Error::bad_input(Place::file(&path), msg);
        let reader = ParquetRecordBatchReaderBuilder::try_new(file)
            .map_err(|e| bad(format!("not a readable Parquet shard: {e}")))?
            .with_batch_size(1024)
            .build()
            .map_err(|e| bad(format!("not a readable Parquet shard: {e}")))?;
        let mut row = 0u64;
        for batch in reader {
            let batch = batch.map_err(|e| bad(format!("reading: {e}")))?;
            let ids = batch
                .column_by_name(schema::INPUT_IDS)
                .ok_or_else(|| bad("no `input_ids` column (not a cls shard)".into()))?
                .as_list::<i32>();
            let labels = batch
                .column_by_name(schema::LABEL)
                .and_then(|c| c.as_any().downcast_ref::<Int64Array>())
                .ok_or_else(|| bad("no Int64 `label` column (not a cls shard)".into()))?;
            for r in 0..batch.num_rows() {
                if left == 0 {
                    break 'shards;
                }
                left -= 1;
                let label = (!labels.is_null(r)).then(|| labels.value(r));
                let Some(label) = label.filter(|&l| l >= 0 && (l as usize) < k) else {
                    return Err(bad(format!(
                        "row {row} has label {}, not a class id: meta.json names {k} labels, ids 0..{}",
                        label.map_or("null".to_string(), |l| l.to_string()),
                        k - 1
                    )));
                };
                let a = ids.value(r);
                let ids: Vec<i64> = a
                    .as_primitive::<Int32Type>()
                    .values()
                    .iter()
                    .map(|&t| i64::from(t))
                    .collect();
                if ids.is_empty() || ids.len() as i64 > ctx {
                    return Err(bad(format!(
                        "row {row} holds {} ids; the model takes 1 to {ctx} (its context)",
                        ids.len()
                    )));
                }
                if let Some(t) = ids.iter().find(|&&t| t < 0 || t >= vocab) {
                    return Err(bad(format!(
                        "row {row} holds id {t}, outside the model's vocabulary ({vocab}): tokenized with another tokenizer?"
                    )));
                }
                rows.push((ids, label as usize));
                row += 1;
            }
        }
    }
    // Longest first, so each batch pads little; ties keep the split's order.
    let mut order: Vec<usize> = (0..rows.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(rows[i].0.len()));
    let mut pred = vec![0usize; rows.len()];
    let mut nll = vec![0f64; rows.len()];
    let dev = model.device();
    let total = rows.len() as u64;
    let _g = tch::no_grad_guard();
    for (bi, chunk) in order.chunks(opts.batch_size).enumerate() {
        let width = chunk.iter().map(|&i| rows[i].0.len()).max().unwrap_or(1);
        let mut ids = Vec::with_capacity(chunk.len() * width);
        let mut mask = Vec::with_capacity(chunk.len() * width);
        let mut gold = Vec::with_capacity(chunk.len());
        for &i in chunk {
            let r = &rows[i].0;
            ids.extend_from_slice(r);
            ids.extend(std::iter::repeat_n(0i64, width - r.len()));
            mask.extend(std::iter::repeat_n(1i64, r.len()));
            mask.extend(std::iter::repeat_n(0i64, width - r.len()));
            gold.push(rows[i].1 as i64);
        }
        let shape = [chunk.len() as i64, width as i64];
        let ids = Tensor::from_slice(&ids).view(shape).to_device(dev);
        let mask = Tensor::from_slice(&mask).view(shape).to_device(dev);
        let logits = model.classify(&ids, &mask, false)?.to_device(Device::Cpu);
        let logp = logits.log_softmax(-1, Kind::Double);
        let g = Tensor::from_slice(&gold).view([-1, 1]);
        let row_nll: Vec<f64> = Vec::try_from(logp.gather(1, &g, false).neg().view([-1]))
            .map_err(|e| Error::bug(format!("reading log-probabilities: {e}")))?;
        let row_pred: Vec<i64> = Vec::try_from(logits.argmax(-1, false))
            .map_err(|e| Error::bug(format!("reading predictions: {e}")))?;
        for (j, &i) in chunk.iter().enumerate() {
            nll[i] = row_nll[j];
            pred[i] = row_pred[j] as usize;
        }
        progress(((bi + 1) * opts.batch_size).min(rows.len()) as u64, total);
    }
    let gold: Vec<usize> = rows.iter().map(|r| r.1).collect();
    let report = class_report(&meta.labels, &gold, &pred)?;
    Ok(ClsEval {
        rows: total,
        labels: meta.labels.clone(),
        pooling: head.pooling.name().to_string(),
        nll: if rows.is_empty() {
            0.0
        } else {
            nll.iter().sum::<f64>() / rows.len() as f64
        },
        report,
        seconds: t0.elapsed().as_secs_f64(),
    })
}

/// The report as a text table: accuracy and macro-F1, per-class precision, recall, F1 and
/// support, and the confusion matrix (rows gold, columns predicted).
pub fn table(r: &ClsEval) -> String {
    let c = &r.report;
    let w = r
        .labels
        .iter()
        .map(|l| l.len())
        .max()
        .unwrap_or(0)
        .clamp(8, 24);
    let mut t = format!(
        "{} rows: accuracy {:.4}, macro-F1 {:.4}, nll {:.4} (pooling {})\n{:<w$} {:>9} {:>9} {:>9} {:>9}\n",
        c.examples, c.accuracy, c.macro_f1, r.nll, r.pooling, "class", "precision", "recall", "f1", "support"
    );
    for s in &c.classes {
        t.push_str(&format!(
            "{:<w$} {:>9.4} {:>9.4} {:>9.4} {:>9}\n",
            s.label, s.precision, s.recall, s.f1, s.support
        ));
    }
    t.push_str(&format!(
        "confusion (rows gold, columns predicted):\n{:<w$}",
        ""
    ));
    for l in &r.labels {
        t.push_str(&format!(" {:>9}", truncate(l, 9)));
    }
    t.push('\n');
    for (l, row) in r.labels.iter().zip(&c.confusion) {
        t.push_str(&format!("{:<w$}", truncate(l, w)));
        for n in row {
            t.push_str(&format!(" {n:>9}"));
        }
        t.push('\n');
    }
    t
}

fn truncate(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_match_a_hand_computation() {
        let labels: Vec<String> = ["neg", "pos", "neutral"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        // gold: neg neg neg pos pos ; pred: neg pos neg pos neg ; neutral never occurs.
        let r = class_report(&labels, &[0, 0, 0, 1, 1], &[0, 1, 0, 1, 0]).unwrap();
        assert_eq!(
            r.confusion,
            vec![vec![2, 1, 0], vec![1, 1, 0], vec![0, 0, 0]]
        );
        assert!((r.accuracy - 0.6).abs() < 1e-12);
        // neg: p = 2/3, r = 2/3; pos: p = 1/2, r = 1/2; neutral: 0.
        assert!((r.classes[0].f1 - 2.0 / 3.0).abs() < 1e-12);
        assert!((r.classes[1].precision - 0.5).abs() < 1e-12);
        assert_eq!(r.classes[2].f1, 0.0);
        assert!((r.macro_f1 - (2.0 / 3.0 + 0.5) / 3.0).abs() < 1e-12);
        assert_eq!(r.classes[0].support, 3);
        assert!(class_report(&labels, &[0], &[3]).is_err());
        assert!(class_report(&labels, &[0], &[]).is_err());
    }
}
