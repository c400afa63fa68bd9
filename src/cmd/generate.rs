//! `quern generate`: text from a model, with a KV cache, batched.
//!
//! The model is anything `quern_models::store::load` reads: a quern model directory (from
//! `quern import`), a training run or checkpoint, a GGUF file or a Hugging Face directory.
//! Prompts come from the arguments or from a JSONL file (`{"prompt": "..."}` or
//! `{"messages": [{"role", "content"}...]}` per line); chat prompts go through the model's
//! chat template (or a plain ChatML one when it has none). Results print as text, or as JSONL
//! with `--json`. `--bench` times prefill and decoding instead.

use std::path::PathBuf;

/// Arguments of `quern generate`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The model: a quern model directory, a run or checkpoint directory, a GGUF file, or a
    /// Hugging Face directory.
    #[arg(long, short)]
    pub model: PathBuf,
    /// Prompts (each one a separate row of the batch).
    pub prompts: Vec<String>,
    /// Read prompts from a JSONL file: `{"prompt": "..."}` or `{"messages": [...]}` per line.
    #[arg(long)]
    pub prompts_file: Option<PathBuf>,
    /// Treat plain prompts as one user turn of a chat (default when the model has a chat
    /// template); `--chat=false` sends them as raw text.
    #[arg(long, num_args = 0..=1, default_missing_value = "true")]
    pub chat: Option<bool>,
    /// A system message before each chat prompt.
    #[arg(long)]
    pub system: Option<String>,
    /// New tokens at most per prompt.
    #[arg(long, default_value_t = 64)]
    pub max_tokens: usize,
    /// 0 = greedy; otherwise sampling temperature.
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f64,
    /// Sample among the k most likely tokens (0 = all).
    #[arg(long, default_value_t = 0)]
    pub top_k: usize,
    /// Nucleus sampling: the smallest set of tokens reaching this probability (1 = off).
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f64,
    /// Penalise tokens already seen (1 = off; 1.1-1.3 is usual).
    #[arg(long, default_value_t = 1.0)]
    pub repetition_penalty: f64,
    /// Stop at this string (repeatable); the text is cut before it.
    #[arg(long = "stop")]
    pub stop: Vec<String>,
    /// Stop at this token id (repeatable), beside the model's end-of-sequence ids.
    #[arg(long = "stop-id")]
    pub stop_id: Vec<u32>,
    /// Seed of sampling.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Prompts per batch.
    #[arg(long, default_value_t = 8)]
    pub batch_size: usize,
    /// `auto`, `cpu` or `cuda`.
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// Weights and activations: `fp32`, `bf16` or `fp16`.
    #[arg(long, default_value = "fp32")]
    pub dtype: String,
    /// CPU threads for libtorch's operators (default: libtorch's, one per core). Small
    /// models decode faster on one thread; a busy machine makes spinning threads wait.
    #[arg(long)]
    pub threads: Option<usize>,
    /// Print one JSON object per prompt.
    #[arg(long)]
    pub json: bool,
    /// Time prefill and decoding (tokens/s) over the prompts, ignoring end-of-sequence ids.
    #[arg(long)]
    pub bench: bool,
    /// With --bench: `--batch-size` synthetic prompts of this many ids each (`5 + i mod
    /// (vocab - 10)`, as `benches/generate/hf_generate.py` uses), instead of given prompts.
    #[arg(long)]
    pub prompt_tokens: Option<usize>,
    /// Run a quantized model (`quern compress --quant`) dequantized in f32 instead of on
    /// the low-bit matrix products (int8: quern's decoding kernel, libtorch's for prompts;
    /// int4: libtorch's).
    #[arg(long)]
    pub dequantize: bool,
    /// With --bench: timed repetitions after one warm-up.
    #[arg(long, default_value_t = 3)]
    pub repeat: usize,
}
