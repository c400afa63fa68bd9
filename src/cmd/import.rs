//! `quern import SRC --out DIR`: turn an outside model into a quern model directory.
//!
//! SRC is a GGUF file (Llama or GPT-2 architecture; Q4_0, Q4_1, Q8_0, F16, BF16 and F32
//! tensors are dequantized to fp32), a Hugging Face directory (BERT, GPT-2 or Llama layout),
//! or a quern checkpoint or run (weights only: a fresh optimizer and step 0 when trained
//! from). The directory holds `model.json`, `model.safetensors` and `tokenizer.json`, and is
//! written atomically: an interrupted import leaves nothing behind.

use std::path::PathBuf;

/// Arguments of `quern import`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// A GGUF file, a Hugging Face directory, or a quern checkpoint or run directory.
    pub source: PathBuf,
    /// The quern model directory to write.
    #[arg(long, short)]
    pub out: PathBuf,
    /// Replace DIR if it exists.
    #[arg(long)]
    pub force: bool,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
}
