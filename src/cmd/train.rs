//! `quern train run.toml`: train a model on tokenized shards.
//!
//! The TOML is read and validated (unknown keys and bad values are refused, naming the key)
//! before any data is read; then `quern_train::train_with` runs the loop with a progress bar,
//! writes `metrics.jsonl`, checkpoints and `report.json` under `out_dir`, and this command
//! prints a summary (or the report as JSON with `--json`). An `out_dir` that already holds a
//! run is refused unless `--resume` continues it or `--force` replaces it.

use std::path::PathBuf;

/// Arguments of `quern train`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The run configuration (TOML: [data], [model], [optim], [train], [checkpoint]).
    pub config: PathBuf,
    /// Continue from the newest checkpoint in the run's out_dir.
    #[arg(long, conflicts_with = "force")]
    pub resume: bool,
    /// Replace the run already in out_dir (its metrics.jsonl, checkpoints/ and report.json)
    /// instead of refusing to start.
    #[arg(long)]
    pub force: bool,
    /// Override `train.max_steps`.
    #[arg(long)]
    pub max_steps: Option<u64>,
    /// No progress bar.
    #[arg(long, short)]
    pub quiet: bool,
    /// Print the final report as JSON.
    #[arg(long)]
    pub json: bool,
}
