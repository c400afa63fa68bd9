//! `quern compress MODEL --out DIR`: prune and/or quantize a model's block matrices and
//! write a quern model directory that trains, evaluates, generates and exports like any
//! other, with a report (`compress.json`) of its size and, with `--eval`, its perplexity
//! against the source's.
//!
//! Pruning: `--prune magnitude|wanda --sparsity S [--pattern unstructured|2:4]
//! [--scope row|layer|global]`, and structured `--prune-neurons SHARE` (whole MLP neurons).
//! Quantization: `--quant int8|int4 [--group G] [--rounding rtn|gptq]`. Wanda, GPTQ and the
//! activation-aware neuron score read calibration rows from `--calib SPLIT` (a tokenized
//! `clm` split), block by block after the blocks before them are compressed
//! (`--calib-stats sequential`) or from the source model (`source`). See `docs/compress.md`.

use std::path::PathBuf;

/// Pruning scores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Prune {
    /// `|W|`.
    Magnitude,
    /// `|W| · ‖X‖` over the calibration split (Wanda).
    Wanda,
}

/// Which weights compete.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Scope {
    /// Each output row's inputs (the default for wanda).
    Row,
    /// Each matrix (the default for magnitude).
    Layer,
    /// All block matrices together (unstructured only).
    Global,
}

/// The pattern of the zeros.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Pattern {
    Unstructured,
    /// 2 zeros in every 4 consecutive inputs (50%, ignores --sparsity).
    #[value(name = "2:4")]
    TwoFour,
}

/// Quantization types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Quant {
    /// Symmetric int8, one scale per output row.
    Int8,
    /// Asymmetric int4, a scale and minimum per group of --group inputs.
    Int4,
}

/// How weights are rounded to their levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Rounding {
    /// Round to nearest.
    Rtn,
    /// GPTQ: error feedback through the calibration inputs' inverse Hessian.
    Gptq,
}

/// How an int4 group's scale and minimum are chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Range {
    /// The group's minimum and maximum.
    Minmax,
    /// The range [p·min, p·max] (p from 1 down to 0.22) with the least Σ|w − q(w)|^2.4
    /// (the GPTQ code's `mse` search): clips a few weights for a finer grid.
    Search,
}

/// Where the calibration statistics of Wanda and GPTQ come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CalibStats {
    /// One block at a time: block i's inputs have passed through blocks 0..i as already
    /// pruned or quantized (the papers' order; the default).
    Sequential,
    /// One pass of the source model: every block's inputs as the uncompressed model makes
    /// them (needed for --scope global).
    Source,
}

/// Arguments of `quern compress`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// A quern model directory, checkpoint or run, a GGUF file or a Hugging Face directory.
    pub model: PathBuf,
    /// The model directory to write.
    #[arg(long, short)]
    pub out: PathBuf,
    /// Prune block matrices by this score.
    #[arg(long, value_enum)]
    pub prune: Option<Prune>,
    /// The share of weights to zero (unstructured).
    #[arg(long, default_value_t = 0.5)]
    pub sparsity: f64,
    /// The pattern of the zeros.
    #[arg(long, value_enum, default_value = "unstructured")]
    pub pattern: Pattern,
    /// Which weights compete (default: row for wanda, layer for magnitude).
    #[arg(long, value_enum)]
    pub scope: Option<Scope>,
    /// Remove this share of every block's MLP neurons (structured: the model shrinks).
    #[arg(long, value_name = "SHARE")]
    pub prune_neurons: Option<f64>,
    /// Quantize block matrices.
    #[arg(long, value_enum)]
    pub quant: Option<Quant>,
    /// Also quantize the output projection (same scheme, rounded to nearest); a model with
    /// tied embeddings gets its own `lm_head` (the token embeddings stay f32).
    #[arg(long)]
    pub quant_head: bool,
    /// int4 group size (inputs per scale).
    #[arg(long, default_value_t = 128)]
    pub group: i64,
    /// How weights are rounded.
    #[arg(long, value_enum, default_value = "rtn")]
    pub rounding: Rounding,
    /// GPTQ dampening: a share of the Hessian's mean diagonal added to it.
    #[arg(long, default_value_t = 0.01)]
    pub damp: f64,
    /// GPTQ's column block.
    #[arg(long, default_value_t = 128)]
    pub block: i64,
    /// GPTQ: columns in order of decreasing Hessian diagonal, int4 groups' parameters fixed
    /// before the error feedback (static groups).
    #[arg(long)]
    pub act_order: bool,
    /// How int4 groups' ranges are chosen.
    #[arg(long, value_enum, default_value = "minmax")]
    pub range: Range,
    /// A tokenized clm split to calibrate on (wanda, gptq, activation-aware neurons).
    #[arg(long)]
    pub calib: Option<PathBuf>,
    /// Calibration rows to read from --calib.
    #[arg(long, default_value_t = 64)]
    pub calib_rows: usize,
    /// Where Wanda's and GPTQ's input statistics come from (default: sequential, or source
    /// for --scope global).
    #[arg(long, value_enum)]
    pub calib_stats: Option<CalibStats>,
    /// A tokenized split to measure perplexity on, before and after, for the report.
    #[arg(long)]
    pub eval: Option<PathBuf>,
    /// Only the first N rows of --eval.
    #[arg(long)]
    pub eval_rows: Option<u64>,
    /// Replace the output if it exists.
    #[arg(long)]
    pub force: bool,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}
