//! quern's models: the transformer families, their weights in and out, and generation.
//!
//! This crate exists so that evaluating or generating never depends on the training loop:
//! `train` and (later) `eval` both use it. With `train`, it is the only kind of crate that
//! links libtorch (through `tch`); the data side never depends on it.
//!
//! - [`config`]: [`ModelConfig`], the shape of every family (GPT-2-like, Llama-like,
//!   BERT-like).
//! - [`transformer`]: the one configurable transformer, with a KV cache for decoding.
//! - [`store`]: quern model directories (`model.safetensors`, `model.json`,
//!   `tokenizer.json`), and loading a model from any source quern reads.
//! - [`gguf`]: GGUF files (llama.cpp's format): metadata, Q4_0/Q4_1/Q8_0/F16/F32 tensors,
//!   the tokenizer and chat template they carry.
//! - [`gguf_export`]: GGUF files out (`quern export --format gguf`), Llama architecture,
//!   F32/F16/BF16/Q8_0/Q4_0/Q4_1, with the tokenizer and chat template.
//! - [`hf`]: Hugging Face directories (BERT layout: `config.json`, `model.safetensors`).
//! - [`hf_export`]: Hugging Face directories out (`quern export --format hf`): Llama,
//!   GPT-2 and BERT classes that `transformers` loads.
//! - [`generate`]: batched KV-cache generation with sampling, the library API that
//!   `quern generate`, evaluation and reinforcement learning call.
//! - [`chat`]: chat templates (Jinja, rendered with minijinja), from `quern-tokenize`.
//! - [`head`]: the classification head (pooling, linear layer to the classes), also the
//!   NSP head of BERT pretraining.
//! - [`mlm_head`]: BERT's masked-LM prediction head (transform, tied decoder, bias).
//! - [`compress`]: pruning (magnitude, Wanda, 2:4, MLP neurons) and quantization (int8,
//!   int4 groups; round-to-nearest or GPTQ) of the block matrices.
//! - [`kernels`]: decoding's matrix products for one to eight rows on the CPU (AVX2/FMA,
//!   f32 and int8 weights, SwiGLU in one pass), on libtorch's thread pool.
//! - [`lora`]: LoRA adapters on a frozen model, and merging them into full weights.

pub mod chat;
pub mod compress;
pub mod config;
pub mod device;
pub mod generate;
pub mod gguf;
pub mod gguf_export;
pub mod head;
pub mod hf;
pub mod hf_export;
pub mod kernels;
pub mod lora;
pub mod mlm_head;
pub mod store;
pub mod transformer;

pub use config::ModelConfig;
pub use transformer::Transformer;

/// Unit tests that seed or draw from libtorch's global RNG hold this, so that tests running
/// in parallel cannot interleave their draws.
#[cfg(test)]
pub(crate) fn torch_rng_lock() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}
