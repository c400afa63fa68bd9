//! `quern merge --adapter RUN --out DIR`: fold a LoRA run's adapters into full weights.
//!
//! The adapters (a LoRA run's newest checkpoint, or the checkpoint named) are merged into
//! their base model in fp32, `W' = W + (alpha/rank)·B·A`, and written as a quern model
//! directory (`model.json`, `model.safetensors`, `tokenizer.json`: what `quern import`
//! writes, which `quern generate`, `quern eval` and `[init] from` read), atomically: an
//! interrupted merge leaves nothing at `--out`. The base is the one the checkpoint records
//! (`init.from` of the run), or `--base` when it has moved; either way its weights must hash
//! to what the checkpoint recorded, so adapters are never merged into another model.

use std::path::PathBuf;

/// Arguments of `quern merge`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// A LoRA training run (its newest checkpoint is merged) or one of its checkpoints
    /// (`RUN/checkpoints/step-N`).
    #[arg(long)]
    pub adapter: PathBuf,
    /// The base model the adapters were trained on. Default: the one the checkpoint
    /// records; its weights must match the recorded hash either way.
    #[arg(long)]
    pub base: Option<PathBuf>,
    /// The quern model directory to write.
    #[arg(long, short)]
    pub out: PathBuf,
    /// Replace the --out directory if it exists.
    #[arg(long)]
    pub force: bool,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
}
