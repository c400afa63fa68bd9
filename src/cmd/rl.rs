//! `quern rl rl.toml`: reinforcement learning from rewards (GRPO, Dr. GRPO, RLOO, PPO) on a
//! policy, with the KV-cache generator sampling and `[[reward]]` terms scoring
//! (`docs/rl.md`). The code is in the `quern-torch` binary.

use std::path::PathBuf;

/// Arguments of `quern rl`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The run configuration (TOML: [init], [prompts], [generation], [algorithm],
    /// [[reward]], [optim], [train], [checkpoint]).
    pub config: PathBuf,
    /// Continue from the newest checkpoint in the run's out_dir.
    #[arg(long, conflicts_with = "force")]
    pub resume: bool,
    /// Replace the run already in out_dir (its metrics.jsonl, checkpoints/ and report.json)
    /// instead of refusing to start.
    #[arg(long)]
    pub force: bool,
    /// Override `train.steps`.
    #[arg(long)]
    pub steps: Option<u64>,
    /// No progress bar.
    #[arg(long, short)]
    pub quiet: bool,
    /// Print the final report as JSON.
    #[arg(long)]
    pub json: bool,
}
