//! The one way every per-document filter runs over a batch.
//!
//! A family implements [`DocKernel`]: given one document's text it fills its signal slots and
//! returns a rejection reason (and, for stages that rewrite text, the new text). [`KernelStage`]
//! turns that into a [`Stage`]: it reads the `text` column straight from the Arrow buffer,
//! runs documents in parallel with rayon (one scratch state per worker, so the hot loop does
//! not allocate per document), writes one nullable `Float64` column per signal and returns a
//! keep-mask with datatrove's reason names. A kernel lists its numeric cuts on its own
//! signals ([`DocKernel::thresholds`]), which the stage reports when it drops (for the
//! report's histograms). The same kernels back the SQL functions.

use std::borrow::Cow;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, Float64Array, RecordBatch, StringArray, UInt32Array};
use arrow::datatypes::{DataType, Field};
use quern_core::stage::{string_column, with_column, BatchCtx, Stage, Threshold, Verdict};
use quern_core::Result;
use rayon::prelude::*;

/// What a kernel decided for one document.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Outcome {
    /// `Some(reason)`: drop the document.
    pub reason: Option<Cow<'static, str>>,
    /// `Some(text)`: the document's new text (only for kernels that rewrite).
    pub text: Option<String>,
    /// An extra integer column value (only for kernels with [`DocKernel::count_column`]).
    pub count: u32,
}

impl Outcome {
    pub fn keep() -> Self {
        Outcome::default()
    }
    pub fn reject(reason: impl Into<Cow<'static, str>>) -> Self {
        Outcome {
            reason: Some(reason.into()),
            ..Default::default()
        }
    }
}

/// A per-document filter or transform.
pub trait DocKernel: Send + Sync {
    /// Per-worker reusable buffers.
    type Scratch: Default + Send;
    /// Full names of the `Float64` signal columns this kernel writes, in slot order.
    fn signals(&self) -> &[&'static str];
    /// Evaluates one document. `signals` has one slot per [`Self::signals`] entry, preset
    /// to NaN (written as null: "not defined for this document").
    fn eval(&self, text: &str, scratch: &mut Self::Scratch, signals: &mut [f64]) -> Outcome;
    /// Whether [`Outcome::text`] may be set.
    fn rewrites_text(&self) -> bool {
        false
    }
    /// Name of a `UInt32` column filled from [`Outcome::count`], if any.
    fn count_column(&self) -> Option<&'static str> {
        None
    }
    /// The numeric cuts [`Self::eval`] makes on the signal columns, as configured (disabled
    /// rules left out); see [`Stage::thresholds`]. Default none.
    fn thresholds(&self) -> Vec<Threshold> {
        Vec::new()
    }
}

/// Runs a kernel over many texts in parallel: one outcome per text, signals row-major.
pub fn run_kernel<K: DocKernel>(kernel: &K, texts: &StringArray) -> (Vec<Outcome>, Vec<f64>) {
    let n = texts.len();
    let ns = kernel.signals().len();
    let stride = ns.max(1);
    let mut sig = vec![f64::NAN; n * stride];
    let mut outcomes = vec![Outcome::default(); n];
    sig.par_chunks_mut(stride)
        .zip(outcomes.par_iter_mut())
        .enumerate()
        .for_each_init(K::Scratch::default, |scratch, (i, (slots, out))| {
            let text = if texts.is_null(i) { "" } else { texts.value(i) };
            *out = kernel.eval(text, scratch, &mut slots[..ns]);
        });
    (outcomes, sig)
}

/// A [`Stage`] running a [`DocKernel`] over one text column.
pub struct KernelStage<K> {
    pub name: String,
    pub column: String,
    /// `false`: only add the signal columns (and rewritten text), keep every document.
    pub drop: bool,
    pub kernel: K,
}

impl<K: DocKernel> KernelStage<K> {
    pub fn new(name: &str, column: &str, drop: bool, kernel: K) -> Self {
        KernelStage {
            name: name.to_string(),
            column: column.to_string(),
            drop,
            kernel,
        }
    }
}

impl<K: DocKernel + 'static> Stage for KernelStage<K> {
    fn name(&self) -> &str {
        &self.name
    }
    fn reads(&self) -> Vec<String> {
        vec![self.column.clone()]
    }
    fn adds(&self) -> Vec<Field> {
        let mut f: Vec<Field> = self
            .kernel
            .signals()
            .iter()
            .map(|s| Field::new(*s, DataType::Float64, true))
            .collect();
        if let Some(c) = self.kernel.count_column() {
            f.push(Field::new(c, DataType::UInt32, false));
        }
        if self.kernel.rewrites_text() {
            f.push(Field::new(&self.column, DataType::Utf8, false));
        }
        f
    }
    fn thresholds(&self) -> Vec<Threshold> {
        // A stage that only writes signals rejects nothing.
        if self.drop {
            self.kernel.thresholds()
        } else {
            Vec::new()
        }
    }
    fn apply(&self, _ctx: &BatchCtx, batch: RecordBatch) -> Result<Verdict> {
        let texts = string_column(&batch, &self.column, &self.name)?;
        let (outcomes, sig) = run_kernel(&self.kernel, texts);
        let n = outcomes.len();
        let names = self.kernel.signals();
        let stride = names.len().max(1);
        let mut out = batch.clone();
        for (j, name) in names.iter().enumerate() {
            let col: Float64Array = (0..n)
                .map(|i| Some(sig[i * stride + j]).filter(|v| !v.is_nan()))
                .collect();
            out = with_column(
                &out,
                Field::new(*name, DataType::Float64, true),
                Arc::new(col) as ArrayRef,
            )?;
        }
        if let Some(c) = self.kernel.count_column() {
            let col = UInt32Array::from_iter_values(outcomes.iter().map(|o| o.count));
            out = with_column(&out, Field::new(c, DataType::UInt32, false), Arc::new(col))?;
        }
        if self.kernel.rewrites_text() && outcomes.iter().any(|o| o.text.is_some()) {
            let col: StringArray = outcomes
                .iter()
                .enumerate()
                .map(|(i, o)| match &o.text {
                    // Rejected documents keep their original text (as datatrove's exclusion writer does).
                    Some(t) if o.reason.is_none() => Some(t.as_str()),
                    _ if texts.is_null(i) => None,
                    _ => Some(texts.value(i)),
                })
                .collect();
            let nullable = texts.null_count() > 0;
            out = with_column(
                &out,
                Field::new(&self.column, DataType::Utf8, nullable),
                Arc::new(col),
            )?;
        }
        if !self.drop {
            return Ok(Verdict::columns(out));
        }
        let reasons = outcomes
            .into_iter()
            .map(|o| o.reason.map(Cow::into_owned))
            .collect();
        Ok(Verdict::with_reasons(out, reasons))
    }
}
