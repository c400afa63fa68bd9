//! Raw command-line flags (clap). Resolved configuration lives with each command.

use clap::{Parser, Subcommand};

/// quern: turn raw text corpora into training data and train models on it.
#[derive(Debug, Parser)]
#[command(name = "quern", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print versions (quern, libtorch, arrow, datafusion, tokenizers), CUDA devices and
    /// CPU threads, and prove the libtorch link works with a small tensor op.
    Doctor(crate::cmd::doctor::Args),
    /// Read raw corpora (jsonl/.gz/.zst, json, parquet, csv, tsv, text folders) into Parquet
    /// shards in DIR/docs and DIR/quarantine, with a manifest and per-file accounting.
    Ingest(crate::cmd::ingest::Args),
}
