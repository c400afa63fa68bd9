//! A fastText-style text classifier: training ([`train`]), the model and its file format
//! ([`model`]), held-out metrics ([`metrics`]) and the `classifier` stage.
//!
//! Typical uses: quality classification in the manner of FineWeb-Edu (train on documents
//! labelled by a larger model, keep those it scores high), topic labels, spam.
//!
//! # The `classifier` stage
//!
//! Writes `<name>_label` (Utf8, the most probable label) and `<name>_prob` (Float64, its
//! probability). With `keep`, drops documents whose summed probability of the `keep`
//! labels is below `threshold`, with reason `classifier_rejected`.
//!
//! ```toml
//! [[stages]]
//! type = "classifier"
//! name = "quality"
//! model = "models/edu.qcls"   # required: a file written by `quern label train`, relative to the pipeline file
//! column = "text"             # default "text"
//! keep = ["high"]             # default []: label only, drop nothing
//! threshold = 0.5             # default 0.5
//! ```

pub mod job;
pub mod metrics;
pub mod model;
pub mod train;

use std::path::PathBuf;
use std::sync::Arc;

use arrow::array::{ArrayRef, Float64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field};
use quern_core::stage::{
    parse_params, string_column, with_column, BatchCtx, Stage, StageSpec, Verdict,
};
use quern_core::{Error, Result};
use rayon::prelude::*;
use serde::Deserialize;

pub use job::{run_eval, run_train_job, score, TrainJob, TrainReport};
pub use metrics::Metrics;
pub use model::{FeatureConfig, Model, Scratch};
pub use train::{predict_all, train, TrainOptions, TrainStats};

/// Reason given to documents the stage drops.
pub const REASON: &str = "classifier_rejected";

/// Config of the `classifier` stage.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassifierConfig {
    /// The model file (`.qcls`). Required. Relative to the pipeline file.
    pub model: PathBuf,
    /// Column holding the text. Default `text`.
    #[serde(default = "default_text")]
    pub column: String,
    /// Labels to keep; empty keeps everything. Default `[]`.
    #[serde(default)]
    pub keep: Vec<String>,
    /// Minimum summed probability of the `keep` labels. Default 0.5.
    #[serde(default = "default_threshold")]
    pub threshold: f64,
}

pub(crate) fn default_text() -> String {
    "text".to_string()
}
fn default_threshold() -> f64 {
    0.5
}

/// The `classifier` stage (see the module docs).
pub struct ClassifierStage {
    name: String,
    column: String,
    model: Arc<Model>,
    keep: Vec<usize>,
    threshold: f64,
}

impl ClassifierStage {
    /// Builds the stage from a loaded model.
    pub fn new(name: &str, model: Arc<Model>, cfg: &ClassifierConfig, key: &str) -> Result<Self> {
        let mut keep = Vec::new();
        for k in &cfg.keep {
            let i = model.labels().iter().position(|l| l == k).ok_or_else(|| {
                Error::bad_config(
                    format!("{key}.keep"),
                    format!(
                        "label `{k}` is not one of the model's labels {:?}",
                        model.labels()
                    ),
                )
            })?;
            keep.push(i);
        }
        if !(0.0..=1.0).contains(&cfg.threshold) {
            return Err(Error::bad_config(
                format!("{key}.threshold"),
                "must be between 0 and 1",
            ));
        }
        Ok(ClassifierStage {
            name: name.to_string(),
            column: cfg.column.clone(),
            model,
            keep,
            threshold: cfg.threshold,
        })
    }

    /// Builds the stage from a pipeline spec, loading the model file.
    pub fn from_spec(spec: &StageSpec) -> Result<Self> {
        let cfg: ClassifierConfig = parse_params(spec)?;
        let model = Model::load(&spec.resolve(&cfg.model))
            .map_err(|e| Error::bad_config(format!("{}.model", spec.key), e.to_string()))?;
        Self::new(&spec.name, Arc::new(model), &cfg, &spec.key)
    }

    fn label_col(&self) -> String {
        format!("{}_label", self.name)
    }
    fn prob_col(&self) -> String {
        format!("{}_prob", self.name)
    }
}

impl Stage for ClassifierStage {
    fn name(&self) -> &str {
        &self.name
    }
    fn reads(&self) -> Vec<String> {
        vec![self.column.clone()]
    }
    fn adds(&self) -> Vec<Field> {
        vec![
            Field::new(self.label_col(), DataType::Utf8, true),
            Field::new(self.prob_col(), DataType::Float64, true),
        ]
    }
    fn apply(&self, _ctx: &BatchCtx, batch: RecordBatch) -> Result<Verdict> {
        let text = string_column(&batch, &self.column, &self.name)?;
        let n = batch.num_rows();
        let m = &self.model;
        // (label, prob of label, summed prob of the keep labels) per row; None for null text.
        let out: Vec<Option<(usize, f32, f32)>> = (0..n)
            .into_par_iter()
            .map_init(
                || (Scratch::default(), Vec::new()),
                |(s, probs), i| {
                    use arrow::array::Array;
                    if text.is_null(i) {
                        return None;
                    }
                    m.predict_into(text.value(i), s, probs);
                    let (best, p) = model::argmax(probs);
                    let kept: f32 = self.keep.iter().map(|&k| probs[k]).sum();
                    Some((best, p, kept))
                },
            )
            .collect();
        let labels: StringArray = out
            .iter()
            .map(|o| o.map(|(l, _, _)| m.labels()[l].as_str()))
            .collect();
        let probs: Float64Array = out.iter().map(|o| o.map(|(_, p, _)| p as f64)).collect();
        let batch = with_column(
            &batch,
            Field::new(self.label_col(), DataType::Utf8, true),
            Arc::new(labels) as ArrayRef,
        )?;
        let batch = with_column(
            &batch,
            Field::new(self.prob_col(), DataType::Float64, true),
            Arc::new(probs) as ArrayRef,
        )?;
        if self.keep.is_empty() {
            return Ok(Verdict::columns(batch));
        }
        let reasons = out
            .iter()
            .map(|o| match o {
                Some((_, _, kept)) if (*kept as f64) < self.threshold => Some(REASON.to_string()),
                _ => None,
            })
            .collect();
        Ok(Verdict::with_reasons(batch, reasons))
    }
}
