//! A whole training run as `quern label train` does it: read labelled data, hold out a
//! split, train, score, write the model with its scores. Kept in the library so the CLI and
//! the side-by-side benchmark driver (`examples/label_train.rs`) run the same code.

use std::path::{Path, PathBuf};
use std::time::Instant;

use quern_core::{Error, Result};
use serde::Serialize;

use super::metrics::Metrics;
use super::model::Model;
use super::train::{predict_all, train, TrainOptions};
use crate::data::{read_labelled, Labelled};

/// What to train on and where to write the model.
#[derive(Debug, Clone)]
pub struct TrainJob {
    pub data: PathBuf,
    pub label_field: String,
    pub text_field: String,
    pub out: PathBuf,
    pub options: TrainOptions,
    /// Fraction of `data` held out for scoring, by hash of the text (so duplicates never
    /// straddle the split); ignored when `test` is set; 0 = no scoring.
    pub valid_frac: f64,
    /// Score on this labelled file instead.
    pub test: Option<PathBuf>,
}

/// What a training run did and how well the model scored.
#[derive(Debug, Clone, Serialize)]
pub struct TrainReport {
    pub model: String,
    pub labels: Vec<String>,
    pub train_examples: usize,
    pub held_out_examples: usize,
    pub rows: usize,
    pub tokens: u64,
    pub threads: usize,
    /// Reading and splitting the data.
    pub read_seconds: f64,
    /// Featurising and SGD.
    pub train_seconds: f64,
    /// Everything, scoring and writing the model included.
    pub total_seconds: f64,
    pub last_epoch_loss: f64,
    pub held_out: Option<Metrics>,
}

impl std::fmt::Display for TrainReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "trained on {} examples ({} labels, {} features, {} tokens) with {} threads in {:.2}s; wrote {}",
            self.train_examples,
            self.labels.len(),
            self.rows,
            self.tokens,
            self.threads,
            self.train_seconds,
            self.model
        )?;
        match &self.held_out {
            Some(m) => write!(f, "\nheld-out scores:\n{m}"),
            None => writeln!(
                f,
                "no held-out rows: nothing scored (use --valid-frac or --test)"
            ),
        }
    }
}

/// Scores `model` on labelled data; gold labels the model does not know count as errors.
pub fn score(model: &Model, data: &Labelled) -> Metrics {
    let mut labels = model.labels().to_vec();
    for l in &data.labels {
        if !labels.contains(l) {
            labels.push(l.clone());
        }
    }
    let gold: Vec<u32> = data
        .labels
        .iter()
        .map(|l| labels.iter().position(|x| x == l).unwrap_or(0) as u32)
        .collect();
    let texts: Vec<&str> = data.texts.iter().map(String::as_str).collect();
    let pred: Vec<u32> = predict_all(model, &texts)
        .into_iter()
        .map(|(l, _)| l as u32)
        .collect();
    Metrics::compute(&labels, &gold, &pred)
}

/// Runs a training job (see the module docs).
pub fn run_train_job(job: &TrainJob) -> Result<TrainReport> {
    let t0 = Instant::now();
    job.options.validate()?;
    if !(0.0..1.0).contains(&job.valid_frac) {
        return Err(Error::bad_config(
            "valid_frac",
            format!("must be in [0, 1), got {}", job.valid_frac),
        ));
    }
    let data = read_labelled(&job.data, &job.text_field, &job.label_field)?;
    let (train_set, held_out) = match &job.test {
        Some(p) => (
            data,
            Some(read_labelled(p, &job.text_field, &job.label_field)?),
        ),
        None if job.valid_frac > 0.0 => {
            let (mut tr, mut va) = (Labelled::default(), Labelled::default());
            for (t, l) in data.texts.into_iter().zip(data.labels) {
                let h = xxhash_rust::xxh3::xxh3_64_with_seed(t.as_bytes(), job.options.seed);
                let side = if ((h >> 11) as f64 / (1u64 << 53) as f64) < job.valid_frac {
                    &mut va
                } else {
                    &mut tr
                };
                side.texts.push(t);
                side.labels.push(l);
            }
            (tr, (!va.texts.is_empty()).then_some(va))
        }
        None => (data, None),
    };
    let read_seconds = t0.elapsed().as_secs_f64();
    let (names, idx) = train_set.encode();
    let texts: Vec<&str> = train_set.texts.iter().map(String::as_str).collect();
    let t1 = Instant::now();
    let (mut model, stats) = train(&texts, &idx, &names, &job.options)?;
    let train_seconds = t1.elapsed().as_secs_f64();
    let metrics = held_out.as_ref().map(|h| score(&model, h));
    // Only what the data, the options and the seed determine goes into the model file:
    // the wall-clock timings in `stats` (featurize_seconds, sgd_seconds) differ on every
    // run and made two identical single-threaded trainings write different bytes. They are
    // in the report (`--json`), not in the model.
    model.header.training = serde_json::json!({
        "options": job.options,
        "data": job.data.display().to_string(),
        "train_examples": train_set.texts.len(),
        "stats": {
            "examples": stats.examples,
            "empty_examples": stats.empty_examples,
            "tokens": stats.tokens,
            "rows": stats.rows,
            "threads": stats.threads,
            "last_epoch_loss": stats.last_epoch_loss,
        },
        "held_out": metrics,
    });
    if let Some(parent) = job.out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    }
    model.save(&job.out)?;
    Ok(TrainReport {
        model: job.out.display().to_string(),
        labels: names,
        train_examples: train_set.texts.len(),
        held_out_examples: held_out.as_ref().map_or(0, |h| h.texts.len()),
        rows: stats.rows,
        tokens: stats.tokens,
        threads: stats.threads,
        read_seconds,
        train_seconds,
        total_seconds: t0.elapsed().as_secs_f64(),
        last_epoch_loss: stats.last_epoch_loss,
        held_out: metrics,
    })
}

/// Loads a model and scores it on a labelled file.
pub fn run_eval(model: &Path, data: &Path, text_field: &str, label_field: &str) -> Result<Metrics> {
    let model = Model::load(model)?;
    let data = read_labelled(data, text_field, label_field)?;
    Ok(score(&model, &data))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The whole `quern label train` path, twice with one thread: the model files are
    /// byte-identical (the header once carried wall-clock timings, which broke this).
    #[test]
    fn one_thread_job_writes_identical_model_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let job = |out: &str| TrainJob {
            data: PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../tests/data/labeling/spam_ham.jsonl"),
            label_field: "label".into(),
            text_field: "text".into(),
            out: dir.path().join(out),
            options: TrainOptions::default()
                .with_threads(1)
                .with_epochs(3)
                .with_dim(8)
                .with_seed(3),
            valid_frac: 0.25,
            test: None,
        };
        let a = run_train_job(&job("a.qcls")).unwrap();
        let b = run_train_job(&job("b.qcls")).unwrap();
        assert!(a.held_out.is_some() && a.train_examples > 100, "{a:?}");
        let bytes = |r: &TrainReport| std::fs::read(&r.model).unwrap();
        assert_eq!(bytes(&a), bytes(&b));
        let header = Model::load(Path::new(&a.model)).unwrap().header.training;
        assert!(!header.to_string().contains("seconds"), "{header}");
        // A different seed gives a different model, so the comparison can fail.
        let mut other = job("c.qcls");
        other.options.seed = 4;
        let c = run_train_job(&other).unwrap();
        assert_ne!(bytes(&a), bytes(&c));
    }
}
