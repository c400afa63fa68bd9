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
    /// SQL over a quern output directory: tables docs, rejected, quarantine, tokens; a shell
    /// without a query.
    Sql(crate::cmd::sql::Args),
    /// Train a text classifier (fastText-style) from labelled data, for the `classifier` stage.
    Label(crate::cmd::label::Args),
    /// Tokenize a build's documents into sharded token Parquet (clm, mlm, sft, cls, nsp, rm, dpo),
    /// or export token shards for nanoGPT / Megatron.
    Tokenize(crate::cmd::tokenize::Args),
    /// Train a tokenizer (byte-level BPE, WordPiece, Unigram) or encode text with one.
    Tokenizer(crate::cmd::tokenizer::Args),
    /// Run a batch build from a pipeline file: inputs, stages, output; resumable.
    Build(crate::cmd::build::Args),
    /// Run a node of a DataFusion Ballista cluster (scheduler or executor) with quern's SQL
    /// functions and build kernels, for `quern sql --cluster` and `quern build --cluster`.
    Cluster(crate::cmd::cluster::Args),
    /// Run the whole journey on a real corpus embedded in the binary, in a temporary directory.
    Demo(crate::cmd::demo::Args),
    /// List the stage types a pipeline can use.
    Stages(crate::cmd::stages::Args),
    /// Write the HTML report (inline SVG charts, opens offline) of a build output directory, a
    /// training run directory or a tokenized output to DIR/report.html.
    Report(crate::cmd::report::Args),
    /// Train a model (causal LM, masked LM, sft, a classifier or BERT pretraining) on tokenized shards from a run.toml, from scratch
    /// or from `[init] from` a model: mixed precision, gradient accumulation, LR schedule, evaluation, resumable checkpoints.
    Train(crate::cmd::train::Args),
    /// Reinforcement learning from rewards (GRPO, Dr. GRPO, RLOO, PPO) from an rl.toml: samples
    /// from the policy, scores them (checkers, a command, a reward model), resumable.
    Rl(crate::cmd::rl::Args),
    /// Run a grid or seeded random search over run.toml keys (learning rate, batch, steps,
    /// LoRA rank...), one training run per trial, resumable, ranked by best validation loss.
    Sweep(crate::cmd::sweep::Args),
    /// Turn an outside model (a GGUF file, a Hugging Face directory) or a quern checkpoint
    /// into a quern model directory: model.json, model.safetensors, tokenizer.json.
    Import(crate::cmd::import::Args),
    /// Write a model for the tools users deploy with: a Hugging Face directory that
    /// transformers loads (Llama, GPT-2, BERT), or a GGUF file for llama.cpp (f32 to q4_0).
    Export(crate::cmd::export::Args),
    /// Prune (magnitude, Wanda; unstructured, 2:4, MLP neurons) and quantize (int8, int4;
    /// round-to-nearest or GPTQ) a model's block matrices into a model directory, with a
    /// report of size and perplexity against the source.
    Compress(crate::cmd::compress::Args),
    /// Fold a LoRA run's adapters into its base model's weights (fp32) and write a quern
    /// model directory, atomically; the base is the one the run recorded (or --base),
    /// checked by weights hash.
    Merge(crate::cmd::merge::Args),
    /// Generate text from a model with a KV cache: batched prompts, greedy or sampled, chat
    /// templates, stop strings; --bench times prefill and decoding.
    Generate(crate::cmd::generate::Args),
    /// Evaluate a model: perplexity on a tokenized split (overall and per source), or a
    /// multiple-choice task (MMLU, or any JSONL) by log-likelihood, zero- or few-shot.
    Eval(crate::cmd::eval::Args),
}
