//! The stage model: how every cleaning, labeling and dedup step is built.
//!
//! A [`Stage`] reads some columns of a [`RecordBatch`] and returns a [`Verdict`]: the batch
//! with new (or rewritten) columns, and optionally a keep-mask with a reason for every
//! dropped row. Stages are built the same way every time:
//!
//! - the [`Stage`] trait, for stages with their own type;
//! - [`StageFn`], a closure adapter for small stages and tests;
//! - [`apply_sequence`], the sequence composite the pipeline runner and SQL use;
//! - [`StageRegistry`], through which built-ins register exactly as users would, keyed by
//!   the `type` name in the pipeline TOML, with serde configs ([`parse_params`]).
//!
//! Most stages are [`StageKind::Map`]: they see one batch at a time. Global stages (dedup,
//! split statistics, tokenizer training) are [`StageKind::Global`]: the runner first calls
//! [`Stage::gather`] on every batch of the whole corpus (in parallel, with a [`BatchCtx`]
//! that says where the batch sits, so a stage can order what it gathered
//! deterministically), then [`Stage::end_gather`] once, then [`Stage::apply`] on every
//! batch again.
//!
//! A stage that drops documents by a numeric cut on one of its own signal columns describes
//! that cut through [`Stage::thresholds`] ([`Threshold`]: column, value, which side
//! [`Keeps`], parameter and reason), so that a report can mark it on the column's histogram
//! without knowing the stage type.
//!
//! ```
//! use std::sync::Arc;
//! use arrow::array::{Array, BooleanArray, RecordBatch, StringArray};
//! use arrow::datatypes::{DataType, Field, Schema};
//! use quern_core::stage::{apply_sequence, BatchCtx, StageFn, Verdict};
//!
//! // Drop documents shorter than 5 bytes.
//! let short = StageFn::new("min_len", &["text"], |_ctx, batch| {
//!     let text = batch.column_by_name("text").unwrap().as_any().downcast_ref::<StringArray>().unwrap();
//!     let keep: BooleanArray = text.iter().map(|t| Some(t.unwrap_or("").len() >= 5)).collect();
//!     Ok(Verdict::filter(batch, keep, "too_short"))
//! });
//! let schema = Arc::new(Schema::new(vec![Field::new("text", DataType::Utf8, false)]));
//! let batch = RecordBatch::try_new(schema, vec![Arc::new(StringArray::from(vec!["hi", "hello world"]))]).unwrap();
//! let out = apply_sequence(&[&short], &BatchCtx::default(), batch).unwrap();
//! assert_eq!(out.kept.num_rows(), 1);
//! assert_eq!(out.rejected[0].reasons, vec!["too_short".to_string()]);
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, BooleanArray, RecordBatch, StringArray};
use arrow::compute::{filter_record_batch, not};
use arrow::datatypes::{Field, Schema};
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};

/// Where a batch sits in the corpus: the work unit (input shard) it belongs to and the row
/// number of its first row within that unit. Gives global stages a deterministic order.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BatchCtx {
    pub unit: u64,
    pub first_row: u64,
}

/// Whether a stage sees one batch at a time or the whole corpus first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StageKind {
    /// Stateless: [`Stage::apply`] per batch.
    Map,
    /// Two passes: [`Stage::gather`] over every batch, [`Stage::end_gather`], then
    /// [`Stage::apply`] over every batch.
    Global,
}

/// What a stage returns for a batch.
#[derive(Debug, Clone)]
pub struct Verdict {
    /// The batch with the stage's columns added or rewritten. Same number of rows as the input.
    pub batch: RecordBatch,
    /// `Some(mask)`: rows where the mask is false are dropped. Null counts as drop.
    pub keep: Option<BooleanArray>,
    /// A reason per row (read only where the row is dropped).
    pub reasons: Option<StringArray>,
}

impl Verdict {
    /// Keep every row; the batch carries new columns.
    pub fn columns(batch: RecordBatch) -> Self {
        Verdict {
            batch,
            keep: None,
            reasons: None,
        }
    }

    /// Drop rows where `keep` is false, all for the same reason.
    pub fn filter(batch: RecordBatch, keep: BooleanArray, reason: &str) -> Self {
        let reasons = StringArray::from(vec![reason; keep.len()]);
        Verdict {
            batch,
            keep: Some(keep),
            reasons: Some(reasons),
        }
    }

    /// Drop rows whose reason is `Some`; each carries its own reason.
    pub fn with_reasons(batch: RecordBatch, reasons: Vec<Option<String>>) -> Self {
        let keep: BooleanArray = reasons.iter().map(|r| Some(r.is_none())).collect();
        let reasons: StringArray = reasons.into_iter().collect();
        Verdict {
            batch,
            keep: Some(keep),
            reasons: Some(reasons),
        }
    }
}

/// Which documents a [`Threshold`] keeps, by the value of its column. A document whose value
/// is null (the signal is undefined for it) is never rejected by a threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Keeps {
    /// Keeps `value >= threshold` (a minimum: `value < threshold` is rejected).
    AtLeast,
    /// Keeps `value > threshold` (`value <= threshold` is rejected).
    Above,
    /// Keeps `value <= threshold` (a maximum: `value > threshold` is rejected).
    AtMost,
    /// Keeps `value < threshold` (`value >= threshold` is rejected).
    Below,
}

impl Keeps {
    /// Whether a document with `value` passes the cut at `threshold`.
    pub fn keeps(self, value: f64, threshold: f64) -> bool {
        match self {
            Keeps::AtLeast => value >= threshold,
            Keeps::Above => value > threshold,
            Keeps::AtMost => value <= threshold,
            Keeps::Below => value < threshold,
        }
    }

    /// Whether the rejected values lie below the threshold (a minimum) rather than above it.
    pub fn rejects_below(self) -> bool {
        matches!(self, Keeps::AtLeast | Keeps::Above)
    }

    /// The comparison a kept value satisfies, as text: `>=`, `>`, `<=`, `<`.
    pub fn symbol(self) -> &'static str {
        match self {
            Keeps::AtLeast => ">=",
            Keeps::Above => ">",
            Keeps::AtMost => "<=",
            Keeps::Below => "<",
        }
    }
}

/// A numeric cut a stage makes on one of the `Float64` columns it adds: documents whose
/// `column` value fails [`Keeps`] against `value` are rejected with `reason`. Stages declare
/// them through [`Stage::thresholds`] so that a report can mark them on the column's
/// histogram; the stage's own code still decides, this is a description of it.
#[derive(Debug, Clone, PartialEq)]
pub struct Threshold {
    /// The signal column (one of the stage's [`Stage::adds`]).
    pub column: String,
    /// The cut.
    pub value: f64,
    /// Which side is kept.
    pub keeps: Keeps,
    /// The parameter that sets it, as written in the pipeline file (e.g. `min_doc_words`,
    /// `top_n_grams[0]`).
    pub param: String,
    /// The reason rejected documents get.
    pub reason: String,
}

impl Threshold {
    pub fn new(
        column: impl Into<String>,
        keeps: Keeps,
        value: f64,
        param: impl Into<String>,
        reason: impl Into<String>,
    ) -> Self {
        Threshold {
            column: column.into(),
            value,
            keeps,
            param: param.into(),
            reason: reason.into(),
        }
    }
}

/// A step of a pipeline. See the [module docs](self).
pub trait Stage: Send + Sync {
    /// The instance name, recorded as `rejected_by` and in the accounting.
    fn name(&self) -> &str;
    /// Columns the stage reads; checked against what earlier stages provide before any data
    /// is read.
    fn reads(&self) -> Vec<String>;
    /// Columns the stage adds (or rewrites), for that same check and for docs.
    fn adds(&self) -> Vec<Field> {
        Vec::new()
    }
    fn kind(&self) -> StageKind {
        StageKind::Map
    }
    /// The numeric cuts the stage makes on its own signal columns, as configured (none when
    /// it does not drop documents). For reports; the default is none.
    fn thresholds(&self) -> Vec<Threshold> {
        Vec::new()
    }
    /// Global stages: see one batch of the whole corpus. Called from several threads.
    fn gather(&self, _ctx: &BatchCtx, _batch: &RecordBatch) -> Result<()> {
        Ok(())
    }
    /// Global stages: every batch has been gathered.
    fn end_gather(&self) -> Result<()> {
        Ok(())
    }
    /// Process a batch.
    fn apply(&self, ctx: &BatchCtx, batch: RecordBatch) -> Result<Verdict>;
}

type ApplyFn = dyn Fn(&BatchCtx, RecordBatch) -> Result<Verdict> + Send + Sync;

/// A [`Stage`] from a closure.
pub struct StageFn {
    name: String,
    reads: Vec<String>,
    f: Box<ApplyFn>,
}

impl StageFn {
    pub fn new(
        name: &str,
        reads: &[&str],
        f: impl Fn(&BatchCtx, RecordBatch) -> Result<Verdict> + Send + Sync + 'static,
    ) -> Self {
        StageFn {
            name: name.to_string(),
            reads: reads.iter().map(|s| s.to_string()).collect(),
            f: Box::new(f),
        }
    }
}

impl Stage for StageFn {
    fn name(&self) -> &str {
        &self.name
    }
    fn reads(&self) -> Vec<String> {
        self.reads.clone()
    }
    fn apply(&self, ctx: &BatchCtx, batch: RecordBatch) -> Result<Verdict> {
        (self.f)(ctx, batch)
    }
}

/// Rows one stage dropped from a batch.
#[derive(Debug, Clone)]
pub struct Dropped {
    pub stage: String,
    /// The dropped rows, with every column they had at that point.
    pub batch: RecordBatch,
    /// One reason per dropped row.
    pub reasons: Vec<String>,
}

/// Per-stage counts for one batch run through a sequence.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SeqCounts {
    pub stage: String,
    pub input: u64,
    pub kept: u64,
    pub input_bytes: u64,
    pub kept_bytes: u64,
    pub reasons: BTreeMap<String, u64>,
    /// Time the stage spent on this batch, in nanoseconds (not deterministic: kept out of
    /// the manifest, reported in `report.json`'s `timing`).
    pub nanos: u64,
}

/// Result of running a batch through a sequence of stages.
#[derive(Debug, Clone)]
pub struct SequenceOutput {
    pub kept: RecordBatch,
    pub rejected: Vec<Dropped>,
    pub counts: Vec<SeqCounts>,
}

fn text_bytes(batch: &RecordBatch) -> u64 {
    batch
        .column_by_name(crate::schema::TEXT)
        .and_then(|c| {
            c.as_any().downcast_ref::<StringArray>().map(|s| {
                let offs = s.value_offsets();
                (offs[offs.len() - 1] - offs[0]) as u64
            })
        })
        .unwrap_or(0)
}

/// The sequence composite: runs `stages` in order over `batch`. Rows a stage drops do not
/// reach the next stage. Every input row ends in `kept` or in exactly one `rejected` entry.
pub fn apply_sequence(
    stages: &[&dyn Stage],
    ctx: &BatchCtx,
    batch: RecordBatch,
) -> Result<SequenceOutput> {
    let mut current = batch;
    let mut rejected = Vec::new();
    let mut counts = Vec::with_capacity(stages.len());
    for stage in stages {
        let n = current.num_rows();
        let mut c = SeqCounts {
            stage: stage.name().to_string(),
            input: n as u64,
            input_bytes: text_bytes(&current),
            ..Default::default()
        };
        let started = std::time::Instant::now();
        let v = stage.apply(ctx, current)?;
        if v.batch.num_rows() != n {
            return Err(Error::bug(format!(
                "stage `{}` returned {} rows for {} (stages must keep the row count and use a keep-mask)",
                stage.name(),
                v.batch.num_rows(),
                n
            )));
        }
        current = match v.keep {
            None => v.batch,
            Some(keep) => {
                if keep.len() != n {
                    return Err(Error::bug(format!(
                        "stage `{}` keep-mask length {} != {n}",
                        stage.name(),
                        keep.len()
                    )));
                }
                // Nulls count as drop.
                let keep: BooleanArray = keep.iter().map(|k| Some(k.unwrap_or(false))).collect();
                let drop = not(&keep)?;
                if drop.true_count() > 0 {
                    let reasons_arr = v.reasons.ok_or_else(|| {
                        Error::bug(format!(
                            "stage `{}` dropped rows without reasons",
                            stage.name()
                        ))
                    })?;
                    let mut reasons = Vec::with_capacity(drop.true_count());
                    for i in 0..n {
                        if drop.value(i) {
                            let r = if reasons_arr.is_null(i) {
                                "unspecified"
                            } else {
                                reasons_arr.value(i)
                            };
                            *c.reasons.entry(r.to_string()).or_default() += 1;
                            reasons.push(r.to_string());
                        }
                    }
                    rejected.push(Dropped {
                        stage: stage.name().to_string(),
                        batch: filter_record_batch(&v.batch, &drop)?,
                        reasons,
                    });
                    filter_record_batch(&v.batch, &keep)?
                } else {
                    v.batch
                }
            }
        };
        c.kept = current.num_rows() as u64;
        c.kept_bytes = text_bytes(&current);
        c.nanos = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
        counts.push(c);
    }
    Ok(SequenceOutput {
        kept: current,
        rejected,
        counts,
    })
}

/// Replaces the column `name` in `batch` or appends it.
pub fn with_column(batch: &RecordBatch, field: Field, array: ArrayRef) -> Result<RecordBatch> {
    let schema = batch.schema();
    let mut fields: Vec<Arc<Field>> = schema.fields().iter().cloned().collect();
    let mut cols: Vec<ArrayRef> = batch.columns().to_vec();
    match schema.index_of(field.name()) {
        Ok(i) => {
            fields[i] = Arc::new(field);
            cols[i] = array;
        }
        Err(_) => {
            fields.push(Arc::new(field));
            cols.push(array);
        }
    }
    let schema = Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()));
    Ok(RecordBatch::try_new(schema, cols)?)
}

/// The `text` column (or another Utf8 column) of a batch, with an error naming the stage.
pub fn string_column<'a>(
    batch: &'a RecordBatch,
    column: &str,
    stage: &str,
) -> Result<&'a StringArray> {
    batch
        .column_by_name(column)
        .ok_or_else(|| {
            Error::bad_config(
                format!("{stage}.column"),
                format!("no column `{column}` in the batch"),
            )
        })?
        .as_any()
        .downcast_ref::<StringArray>()
        .ok_or_else(|| {
            Error::bad_config(
                format!("{stage}.column"),
                format!("column `{column}` is not a string column"),
            )
        })
}

/// How a stage is declared in a pipeline: its instance name, the config key it came from
/// (e.g. `stages[2]`, used in error messages), its parameters (the TOML table without
/// `type` and `name`), and the directory its relative paths are relative to.
#[derive(Debug, Clone, Default)]
pub struct StageSpec {
    pub type_name: String,
    pub name: String,
    pub key: String,
    pub params: serde_json::Value,
    /// The directory of the file that declared the stage: every relative path among the
    /// parameters (lists, models, evaluation sets, spill directories) resolves against it,
    /// through [`StageSpec::resolve`]. Empty: the working directory.
    pub base_dir: PathBuf,
}

impl StageSpec {
    /// A path from the stage's parameters, resolved against [`StageSpec::base_dir`] when it
    /// is relative. Every stage resolves its path-valued parameters through this.
    pub fn resolve(&self, path: &Path) -> PathBuf {
        if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.base_dir.join(path)
        }
    }
}

/// Parses a stage's parameters into its config struct (which should use
/// `#[serde(deny_unknown_fields)]` and document a default on every field). Errors name the
/// full key, e.g. `stages[2].min_words`.
pub fn parse_params<T: DeserializeOwned>(spec: &StageSpec) -> Result<T> {
    let value = if spec.params.is_null() {
        serde_json::Value::Object(Default::default())
    } else {
        spec.params.clone()
    };
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let key = if path == "." || path.is_empty() {
            spec.key.clone()
        } else {
            format!("{}.{}", spec.key, path)
        };
        Error::bad_config(
            key,
            format!("{} (stage type `{}`)", e.inner(), spec.type_name),
        )
    })
}

type Factory = dyn Fn(&StageSpec) -> Result<Box<dyn Stage>> + Send + Sync;

struct Entry {
    doc: &'static str,
    factory: Box<Factory>,
}

/// Stage types by `type` name. Built-ins register here exactly as a user's would.
#[derive(Default)]
pub struct StageRegistry {
    entries: BTreeMap<String, Entry>,
}

impl StageRegistry {
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a stage type. `doc` is one line shown by `quern stages`.
    pub fn register(
        &mut self,
        type_name: &str,
        doc: &'static str,
        factory: impl Fn(&StageSpec) -> Result<Box<dyn Stage>> + Send + Sync + 'static,
    ) {
        self.entries.insert(
            type_name.to_string(),
            Entry {
                doc,
                factory: Box::new(factory),
            },
        );
    }

    /// Builds a stage from its spec; an unknown type is a config error listing the known ones.
    pub fn build(&self, spec: &StageSpec) -> Result<Box<dyn Stage>> {
        match self.entries.get(&spec.type_name) {
            Some(e) => (e.factory)(spec),
            None => Err(Error::bad_config(
                format!("{}.type", spec.key),
                format!(
                    "unknown stage type `{}`; known types: {}",
                    spec.type_name,
                    self.entries.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            )),
        }
    }

    /// `(type, doc)` for every registered stage type, sorted by type.
    pub fn list(&self) -> Vec<(&str, &str)> {
        self.entries
            .iter()
            .map(|(k, e)| (k.as_str(), e.doc))
            .collect()
    }

    pub fn contains(&self, type_name: &str) -> bool {
        self.entries.contains_key(type_name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::DataType;
    use serde::Deserialize;

    fn batch(texts: &[&str]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![Field::new("text", DataType::Utf8, false)]));
        RecordBatch::try_new(schema, vec![Arc::new(StringArray::from(texts.to_vec()))]).unwrap()
    }

    #[test]
    fn sequence_accounts_for_every_row() {
        let a = StageFn::new("a", &["text"], |_, b| {
            let t = string_column(&b, "text", "a")?;
            let keep: BooleanArray = t
                .iter()
                .map(|s| Some(!s.unwrap().starts_with('x')))
                .collect();
            Ok(Verdict::filter(b, keep, "starts_with_x"))
        });
        let b = StageFn::new("b", &["text"], |_, b| {
            let t = string_column(&b, "text", "b")?;
            let reasons = t
                .iter()
                .map(|s| (s.unwrap().len() > 3).then(|| "long".to_string()))
                .collect();
            Ok(Verdict::with_reasons(b, reasons))
        });
        let out = apply_sequence(
            &[&a, &b],
            &BatchCtx::default(),
            batch(&["xa", "ok", "xlong", "longer"]),
        )
        .unwrap();
        assert_eq!(out.kept.num_rows(), 1);
        assert_eq!(out.rejected.len(), 2);
        assert_eq!(out.rejected[0].stage, "a");
        assert_eq!(out.rejected[0].batch.num_rows(), 2);
        assert_eq!(out.rejected[1].reasons, vec!["long"]);
        assert_eq!(out.counts[0].input, 4);
        assert_eq!(out.counts[1].input, 2);
        assert_eq!(out.counts[1].kept, 1);
        assert_eq!(out.counts[0].reasons["starts_with_x"], 2);
    }

    #[test]
    fn a_stage_that_drops_rows_itself_is_a_bug() {
        let bad = StageFn::new("bad", &[], |_, b| Ok(Verdict::columns(b.slice(0, 1))));
        let err = apply_sequence(&[&bad], &BatchCtx::default(), batch(&["a", "b"])).unwrap_err();
        assert!(matches!(err, Error::Bug(_)), "{err}");
    }

    #[derive(Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    struct Cfg {
        #[serde(default)]
        min_words: u32,
    }

    #[test]
    fn params_errors_name_the_key() {
        let spec = StageSpec {
            type_name: "t".into(),
            name: "t".into(),
            key: "stages[2]".into(),
            params: serde_json::json!({"min_wrds": 3}),
            ..Default::default()
        };
        let e = parse_params::<Cfg>(&spec).unwrap_err().to_string();
        assert!(e.contains("stages[2]") && e.contains("min_wrds"), "{e}");
        let spec = StageSpec {
            params: serde_json::json!({"min_words": "x"}),
            ..spec
        };
        let e = parse_params::<Cfg>(&spec).unwrap_err().to_string();
        assert!(e.contains("stages[2].min_words"), "{e}");
        let spec = StageSpec {
            params: serde_json::json!({"min_words": 4}),
            ..spec
        };
        assert_eq!(parse_params::<Cfg>(&spec).unwrap().min_words, 4);
    }

    #[test]
    fn unknown_type_lists_known_ones() {
        let mut reg = StageRegistry::new();
        reg.register("pass", "does nothing", |s| {
            Ok(Box::new(StageFn::new(&s.name, &[], |_, b| {
                Ok(Verdict::columns(b))
            })))
        });
        let spec = StageSpec {
            type_name: "nope".into(),
            name: "x".into(),
            key: "stages[0]".into(),
            params: serde_json::Value::Null,
            ..Default::default()
        };
        let e = reg.build(&spec).err().unwrap().to_string();
        assert!(e.contains("stages[0].type") && e.contains("pass"), "{e}");
    }

    #[test]
    fn keeps_says_which_side_passes() {
        for (k, below, at, above, rejects_below) in [
            (Keeps::AtLeast, false, true, true, true),
            (Keeps::Above, false, false, true, true),
            (Keeps::AtMost, true, true, false, false),
            (Keeps::Below, true, false, false, false),
        ] {
            assert_eq!(
                (k.keeps(1.0, 2.0), k.keeps(2.0, 2.0), k.keeps(3.0, 2.0)),
                (below, at, above),
                "{k:?}"
            );
            assert_eq!(k.rejects_below(), rejects_below, "{k:?}");
            // The symbol reads the same comparison.
            let kept_at = k.symbol().contains('=');
            assert_eq!(kept_at, at, "{k:?}");
        }
        assert!(!Keeps::AtLeast.keeps(f64::NAN, 1.0));
    }
}
