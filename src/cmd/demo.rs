//! `quern demo`: the whole journey on a real corpus embedded in the binary.
//!
//! It writes the corpus and a pipeline into a directory (a new temporary one unless `--dir`
//! is given, kept afterwards so you can look at it), runs the build (exact and near dedup,
//! rule labels, decontamination against a small held-out passage set, a stratified split),
//! shows the funnel, trains a small BPE tokenizer and packs token shards per split, runs a
//! few `quern sql` queries, prints where everything is, generates a few lines from the model
//! it trained, evaluates it, and fine-tunes it into a classifier of the build's topic labels
//! with a table of its figures on the test split.

use std::path::PathBuf;

/// Arguments of `quern demo`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Work in this directory (created if missing; must be empty or hold an earlier demo)
    /// instead of a new temporary one.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Optimizer steps of the small GPT trained on the tokenized train split (0 skips
    /// training).
    #[arg(long, default_value_t = 60)]
    pub train_steps: u64,
    /// Optimizer steps of the fine-tune that follows: a classifier of the build's `topic`
    /// label, from the model just trained (0 skips it).
    #[arg(long, default_value_t = 40)]
    pub finetune_steps: u64,
}
