//! `quern export MODEL --format hf|gguf --out PATH`: write a model for the tools users
//! deploy with.
//!
//! MODEL is anything quern reads as a model (a quern model directory, a checkpoint or run,
//! a LoRA run, merged on the way, a GGUF file, a Hugging Face directory). `--format hf`
//! writes a Hugging Face directory (`config.json`, `model.safetensors`, `tokenizer.json`,
//! `tokenizer_config.json` with the chat template, `generation_config.json`) that
//! `transformers` loads with `AutoModelForCausalLM` (Llama, GPT-2),
//! `AutoModelForSequenceClassification` (a model with a classification head), `AutoModel` or
//! `AutoModelForMaskedLM` / `BertForPreTraining` (BERT). `--format gguf` writes one GGUF file
//! (Llama-like and GPT-2-like models) for llama.cpp, with f32, f16, bf16, q8_0, q4_0 or q4_1 matrices. The
//! output is written atomically.
//! See `docs/export.md`.

use std::path::PathBuf;

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// A Hugging Face directory for `transformers` (Llama, GPT-2 or BERT classes).
    Hf,
    /// One GGUF file for llama.cpp (Llama-like and GPT-2-like models), with the tokenizer
    /// and chat template.
    Gguf,
}

/// Weight types of the export.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Dtype {
    F32,
    F16,
    Bf16,
    /// GGUF only: 8-bit blocks of 32 (one f16 scale each).
    #[value(name = "q8_0")]
    Q8_0,
    /// GGUF only: 4-bit blocks of 32 (one f16 scale each).
    #[value(name = "q4_0")]
    Q4_0,
    /// GGUF only: 4-bit blocks of 32 (f16 scale and minimum each).
    #[value(name = "q4_1")]
    Q4_1,
}

/// Arguments of `quern export`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// A quern model directory, checkpoint or run (LoRA runs are merged), a GGUF file or a
    /// Hugging Face directory.
    pub model: PathBuf,
    /// The output format.
    #[arg(long, value_enum)]
    pub format: Format,
    /// The directory (hf) or file (gguf) to write.
    #[arg(long, short)]
    pub out: PathBuf,
    /// The type of the exported weights (GGUF keeps norms in f32 and quantizes the matrices
    /// with q8_0, q4_0 and q4_1).
    #[arg(long, value_enum, default_value = "f32")]
    pub dtype: Dtype,
    /// Replace the output if it exists.
    #[arg(long)]
    pub force: bool,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
}
