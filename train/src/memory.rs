//! What a training step will need in memory, estimated before the first step, so that a
//! `train.micro_batch` far beyond the machine is refused with the figures and the fix rather
//! than ending in the kernel's out-of-memory kill with nothing printed.
//!
//! The estimate adds the weights (fp32), the gradients and AdamW's two moments of the
//! trainable parameters, and one micro-batch's activations: per layer, per token, about
//! `34·dim` bytes kept for the backward pass in 16-bit training (Korthikanti et al. 2022,
//! "Reducing Activation Recomputation in Large Transformer Models", without recomputation;
//! their `5·heads·seq` attention-score term is left out because attention goes through
//! `scaled_dot_product_attention`, which does not keep the scores), doubled for fp32, with the
//! MLP's share scaled by its width against the usual `4·dim`; plus the logits over the
//! vocabulary in fp32 three times (logits, log-softmax, their gradient). It is a rough figure,
//! within a small factor of what libtorch allocates; the check only refuses a step that could
//! not fit even if the estimate were several times too high.

use quern_core::{Error, Result};

use crate::config::{ModelConfig, Precision};

/// The estimate, in bytes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepMemory {
    /// Weights, gradients and optimizer state.
    pub state: f64,
    /// One micro-batch's activations and logits.
    pub activations: f64,
}

impl StepMemory {
    pub fn total(&self) -> f64 {
        self.state + self.activations
    }
}

/// The number of parameters `model` has (weights only, biases and norms included), from its
/// shape: known before anything is allocated.
pub fn param_count(model: &ModelConfig) -> i64 {
    let d = model.dim as i64;
    let v = model.vocab_size.unwrap_or(0) as i64;
    let kv = (model.kv_heads() * model.head_dim()) as i64;
    let h = model.hidden() as i64;
    let b = i64::from(model.bias);
    let attn = d * (d + 2 * kv) + (d + 2 * kv) * b + d * d + d * b;
    let mlp = match model.mlp {
        crate::config::Mlp::SwiGlu => 3 * d * h + (2 * h + d) * b,
        _ => 2 * d * h + (h + d) * b,
    };
    let norms = 2 * (d + d * b);
    let mut n = model.layers as i64 * (attn + mlp + norms) + v * d + d + d * b;
    if !model.tie_embeddings {
        n += v * d;
    }
    if model.positions == crate::config::Positions::Learned {
        n += model.seq_len.unwrap_or(0) as i64 * d;
    }
    if model.has_mlm_head() {
        // BERT's MLM head: the transform's dense layer and LayerNorm, and the output bias.
        n += d * d + 3 * d + v;
    }
    n + model.type_vocab_size as i64 * d
}

/// Estimates a step of `micro_batch` rows of `seq` positions of `model` with `params`
/// parameters of which `trainable` are trained.
pub fn estimate(
    model: &ModelConfig,
    params: i64,
    trainable: i64,
    micro_batch: usize,
    seq: usize,
    precision: Precision,
) -> StepMemory {
    let (b, s) = (micro_batch as f64, seq as f64);
    let d = model.dim as f64;
    let layers = model.layers as f64;
    let vocab = model.vocab_size.unwrap_or(0) as f64;
    let mlp = model.hidden() as f64 / (4.0 * d).max(1.0);
    // 34·d bytes: the attention block (~ 11·d) and a 4·d MLP (~ 23·d), 16-bit.
    let per_token_16 = 11.0 * d + 23.0 * d * mlp;
    let width = match precision {
        Precision::Fp32 => 2.0,
        Precision::Bf16 | Precision::Fp16 => 1.0,
    };
    let activations = layers * b * s * per_token_16 * width + 3.0 * b * s * vocab * 4.0;
    let state = params as f64 * 4.0 + trainable as f64 * (4.0 + 8.0);
    StepMemory { state, activations }
}

/// The memory this machine has available now (`MemAvailable` in `/proc/meminfo`), if known.
pub fn available_bytes() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024.0)
}

/// How many times the estimate may exceed what is available before a run is refused: the
/// estimate is rough, so only a step that is clearly too large is stopped.
pub const REFUSE_FACTOR: f64 = 4.0;

fn gb(x: f64) -> String {
    if x >= 1e12 {
        format!("{:.1} TB", x / 1e12)
    } else {
        format!("{:.1} GB", x / 1e9)
    }
}

/// Refuses a step whose estimate is over [`REFUSE_FACTOR`] times `available` bytes, naming
/// `train.micro_batch`, the estimate and the fix.
pub fn check(est: StepMemory, available: f64, micro_batch: usize, seq: usize) -> Result<()> {
    if est.total() <= REFUSE_FACTOR * available {
        return Ok(());
    }
    let fit = ((REFUSE_FACTOR * available - est.state) / (est.activations / micro_batch as f64))
        .floor()
        .max(0.0) as usize;
    let fix = if fit >= 1 {
        format!(
            "lower train.micro_batch to {} or less and raise train.grad_accum to keep the batch",
            fit.min(micro_batch.saturating_sub(1)).max(1)
        )
    } else {
        "even one row does not fit: use a smaller model, a shorter sequence, or a machine with more memory"
            .to_string()
    };
    Err(Error::bad_config(
        "train.micro_batch",
        format!(
            "a step of {micro_batch} rows x {seq} positions needs about {} ({} of weights, \
             gradients and optimizer state, {} of activations), far beyond the {} this machine \
             has available: {fix}",
            gb(est.total()),
            gb(est.state),
            gb(est.activations),
            gb(available)
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gpt2_small() -> ModelConfig {
        ModelConfig::gpt2()
            .with_layers(12)
            .with_heads(12)
            .with_dim(768)
            .with_seq_len(1024)
            .with_vocab_size(50304)
    }

    #[test]
    fn gpt2_small_estimate_is_in_the_known_range() {
        // GPT-2 124M, fp32, batch 8 x 1024: 2 GB of state (16 bytes per parameter),
        // 5.1 GB of layer activations (12 x 8192 tokens x 34 x 768 x 2 bytes) and 5 GB of
        // logits (3 x 8192 x 50304 x 4 bytes).
        let e = estimate(
            &gpt2_small(),
            124_000_000,
            124_000_000,
            8,
            1024,
            Precision::Fp32,
        );
        assert!((1.9e9..2.1e9).contains(&e.state), "{e:?}");
        assert!((9e9..1.1e10).contains(&e.activations), "{e:?}");
        // Activations grow linearly with the micro-batch; bf16 halves the per-layer part.
        let e2 = estimate(
            &gpt2_small(),
            124_000_000,
            124_000_000,
            16,
            1024,
            Precision::Fp32,
        );
        assert!((e2.activations / e.activations - 2.0).abs() < 1e-9);
        let h = estimate(
            &gpt2_small(),
            124_000_000,
            124_000_000,
            8,
            1024,
            Precision::Bf16,
        );
        assert!(h.activations < e.activations);
        // LoRA: frozen weights carry no gradient or optimizer state.
        let l = estimate(
            &gpt2_small(),
            124_000_000,
            1_000_000,
            8,
            1024,
            Precision::Fp32,
        );
        assert!(l.state < 0.3 * e.state);
    }

    #[test]
    fn a_step_far_beyond_memory_is_refused_with_the_fix() {
        // The case from issue 19: 200,000 rows of 257 tokens on a 24 GB machine.
        let m = gpt2_small().with_seq_len(256);
        let e = estimate(&m, 124_000_000, 124_000_000, 200_000, 256, Precision::Fp32);
        let err = check(e, 24e9, 200_000, 256).unwrap_err().to_string();
        assert!(err.contains("train.micro_batch"), "{err}");
        assert!(err.contains("TB"), "{err}");
        assert!(err.contains("lower train.micro_batch to"), "{err}");
        // What fits is accepted, and what it suggests fits.
        let ok = estimate(&m, 124_000_000, 124_000_000, 8, 256, Precision::Fp32);
        assert!(check(ok, 24e9, 8, 256).is_ok());
        let n: usize = err
            .split("lower train.micro_batch to ")
            .nth(1)
            .and_then(|t| t.split_whitespace().next())
            .and_then(|t| t.parse().ok())
            .unwrap();
        let at = estimate(&m, 124_000_000, 124_000_000, n, 256, Precision::Fp32);
        assert!(check(at, 24e9, n, 256).is_ok(), "{n}");
        // Nothing fits: the message says so instead of suggesting zero rows.
        let err = check(e, 1e6, 200_000, 256).unwrap_err().to_string();
        assert!(err.contains("even one row does not fit"), "{err}");
    }

    #[test]
    fn parameter_count_from_the_shape() {
        // GPT-2 small with a 50,304 vocabulary and tied embeddings: 124.5M (nanoGPT's count,
        // 123.65M without the 786k position table, plus it).
        let n = param_count(&gpt2_small());
        assert!((124_000_000..125_000_000).contains(&n), "{n}");
        // SmolLM2-135M: 30 layers, width 576, 9 heads / 3 kv heads, SwiGLU 1536, vocab 49152.
        let smol = ModelConfig::llama()
            .with_layers(30)
            .with_heads(9)
            .with_kv_heads(3)
            .with_dim(576)
            .with_seq_len(8192)
            .with_vocab_size(49152);
        let smol = ModelConfig {
            mlp_hidden: Some(1536),
            ..smol
        };
        let n = param_count(&smol);
        assert_eq!(n, 134_515_008, "SmolLM2-135M's published count");
    }

    #[test]
    fn available_memory_is_read() {
        if cfg!(target_os = "linux") {
            assert!(available_bytes().is_some_and(|b| b > 1e6));
        }
    }
}
