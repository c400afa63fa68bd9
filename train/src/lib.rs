//! quern's trainer, the only crate that links libtorch (through `tch`).
//!
//! It exists as its own crate so that the data side (ingest, filters, dedup, labeling,
//! tokenize) builds and tests without libtorch.
//!
//! - [`config`]: `run.toml`, validated before anything starts.
//! - [`data`]: rows of token ids from tokenized shards, in a seeded, resumable order.
//! - [`mix`]: several splits read as one by weight (`[[data.mix]]`), resumable.
//! - [`model`]: the transformer, from `quern-models` (re-exported).
//! - [`objective`]: `clm`, `mlm`, `sft`, `cls`, `nsp`, `rm` and `dpo`, behind one trait.
//! - [`optim`]: AdamW with our own (checkpointed) state, clipping, the LR schedule.
//! - [`amp`]: bf16/fp16 autocast, TF32 and fused AdamW through the C++ sidecar, loss scaling.
//! - [`checkpoint`]: atomic safetensors + JSON checkpoints.
//! - [`dist`]: data-parallel training under torchrun (c10d process groups through the sidecar).
//! - [`trainer`]: the loop, evaluation, metrics and [`train`], the entry point.
//! - [`rl`]: `quern rl`, reinforcement learning from rewards (GRPO, Dr. GRPO, RLOO).
//!
//! ```no_run
//! let cfg = quern_train::TrainConfig::load(std::path::Path::new("run.toml"))?;
//! let report = quern_train::train(&cfg, true)?;
//! println!("loss {:?}", report.loss_drop(5));
//! # Ok::<(), quern_core::Error>(())
//! ```

pub mod amp;
pub mod checkpoint;
pub mod config;
pub mod data;
pub mod dist;
pub mod memory;
pub mod mix;
/// The transformer, which lives in `quern-models`; re-exported under its old path.
pub mod model {
    pub use quern_models::transformer::*;
}
pub mod objective;
pub mod optim;
pub mod rl;
pub mod runtime;
pub mod trainer;

pub use config::TrainConfig;
pub use trainer::{train, train_with, TrainOptions, TrainReport};

/// Unit tests that seed or draw from libtorch's global RNG hold this, so that tests running
/// in parallel cannot interleave their draws (two models built "from the same seed" would
/// otherwise differ now and then).
#[cfg(test)]
pub(crate) fn torch_rng_lock() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}
