//! The transformer's shape ([`ModelConfig`]), shared by every family.
//!
//! One configurable transformer covers three families; each is a choice of a few keys:
//!
//! | family | positions | norm | mlp | other |
//! |---|---|---|---|---|
//! | GPT-2-like decoder | `learned` | `layernorm` | `gelu` (tanh) | `bias = true` |
//! | Llama-like decoder | `rotary` (`rope_theta`) | `rmsnorm` | `swiglu` | `kv_heads` < `heads` (grouped-query), tied or untied |
//! | BERT-like encoder | `learned` | `layernorm` | `gelu_erf` | `post_norm = true`, `type_vocab_size = 2`, `bias = true` |
//!
//! [`ModelConfig::gpt2`], [`ModelConfig::llama`] and [`ModelConfig::bert`] build each. The
//! config is the `[model]` table of `run.toml`, and `model.json` beside a quern model's weights.

use quern_core::{Error, Result};
use serde::{Deserialize, Serialize};

use crate::head::HeadConfig;

/// Where positions come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Positions {
    /// A learned table of `seq_len` position embeddings (GPT-2, BERT).
    Learned,
    /// Rotary embeddings on queries and keys (GPT-NeoX / Llama, half rotation).
    Rotary,
}

/// The normalization layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Norm {
    LayerNorm,
    RmsNorm,
}

/// The feed-forward block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mlp {
    /// `out(gelu_tanh(fc(x)))` (GPT-2's `gelu_new`).
    Gelu,
    /// `out(gelu(fc(x)))` with the exact erf GELU (BERT).
    GeluErf,
    /// `out(silu(gate(x)) * up(x))` (Llama). Written `swi_glu`; `swiglu`, as the docs
    /// spell it, is accepted too.
    #[serde(alias = "swiglu")]
    SwiGlu,
}

/// The transformer's shape. Shared by decoders (`clm`, generation) and encoders (`mlm`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// Transformer blocks. Default 2.
    #[serde(default = "default_layers")]
    pub layers: usize,
    /// Attention (query) heads; must divide `dim`. Default 4.
    #[serde(default = "default_heads")]
    pub heads: usize,
    /// Key/value heads (grouped-query attention); must divide `heads`. Default: `heads`.
    #[serde(default)]
    pub kv_heads: Option<usize>,
    /// Model width. Default 128.
    #[serde(default = "default_dim")]
    pub dim: usize,
    /// Hidden width of the MLP. Default: 4 × dim for GELU, 8/3 × dim rounded up to 64 for SwiGLU.
    #[serde(default)]
    pub mlp_hidden: Option<usize>,
    /// Context length (the learned position table's size, the rotary table's length).
    /// Default: the data's `seq_len` (from `meta.json`); must not be below it.
    #[serde(default)]
    pub seq_len: Option<usize>,
    /// Vocabulary size. Default: the data's `vocab_size` rounded up to a multiple of 64.
    #[serde(default)]
    pub vocab_size: Option<usize>,
    /// Dropout on embeddings, attention and residual branches. Default 0.0.
    #[serde(default)]
    pub dropout: f64,
    /// `learned` or `rotary`. Default `learned`.
    #[serde(default = "default_positions")]
    pub positions: Positions,
    /// Rotary base. Default 10000.
    #[serde(default = "default_rope_theta")]
    pub rope_theta: f64,
    /// `layernorm` or `rmsnorm`. Default `layernorm`.
    #[serde(default = "default_norm")]
    pub norm: Norm,
    /// The norms' epsilon. Default 1e-5 for LayerNorm, 1e-6 for RMSNorm.
    #[serde(default)]
    pub norm_eps: Option<f64>,
    /// `gelu` (tanh approximation), `gelu_erf` or `swiglu`. Default `gelu`.
    #[serde(default = "default_mlp")]
    pub mlp: Mlp,
    /// Biases in linear layers and LayerNorms. Default false.
    #[serde(default)]
    pub bias: bool,
    /// The output projection shares the token embedding. Default true.
    #[serde(default = "yes")]
    pub tie_embeddings: bool,
    /// Standard deviation of the normal initialisation. Default 0.02.
    #[serde(default = "default_init_std")]
    pub init_std: f64,
    /// BERT's post-norm: a norm after the embeddings and after each residual add, no final
    /// norm. Default false (pre-norm, as GPT-2 and Llama).
    #[serde(default)]
    pub post_norm: bool,
    /// Token type (segment) embeddings, as BERT has 2; 0 = none. Default 0.
    #[serde(default)]
    pub type_vocab_size: usize,
    /// A classification head ([`crate::head`]): set by `train.objective = "cls"` from the
    /// `[cls]` section and the data's labels, never written in `[model]`. Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head: Option<HeadConfig>,
    /// BERT's masked-LM prediction head ([`crate::mlm_head`]: dense, activation, LayerNorm,
    /// then the output projection plus a bias) between the last hidden states and the
    /// logits. `None` and `false` mean none: the hidden states go straight to the output
    /// projection (GPT-2, Llama). The trainer resolves it for `mlm` and `nsp` runs (on for
    /// BERT-like encoders unless `false`); a Hugging Face import with `cls.predictions.*`
    /// sets it. Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mlm_head: Option<bool>,
    /// Weights pruned by `quern compress` ([`crate::compress`]): their zeros are masks that
    /// training keeps (re-applied after every optimizer step). Default: none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pruned: Vec<String>,
}

fn default_layers() -> usize {
    2
}
fn default_heads() -> usize {
    4
}
fn default_dim() -> usize {
    128
}
fn default_positions() -> Positions {
    Positions::Learned
}
fn default_rope_theta() -> f64 {
    10000.0
}
fn default_norm() -> Norm {
    Norm::LayerNorm
}
fn default_mlp() -> Mlp {
    Mlp::Gelu
}
fn default_init_std() -> f64 {
    0.02
}
fn yes() -> bool {
    true
}

impl Default for ModelConfig {
    fn default() -> Self {
        ModelConfig {
            layers: default_layers(),
            heads: default_heads(),
            kv_heads: None,
            dim: default_dim(),
            mlp_hidden: None,
            seq_len: None,
            vocab_size: None,
            dropout: 0.0,
            positions: default_positions(),
            rope_theta: default_rope_theta(),
            norm: default_norm(),
            norm_eps: None,
            mlp: default_mlp(),
            bias: false,
            tie_embeddings: true,
            init_std: default_init_std(),
            post_norm: false,
            type_vocab_size: 0,
            head: None,
            mlm_head: None,
            pruned: Vec::new(),
        }
    }
}

impl ModelConfig {
    /// A GPT-2-like decoder: learned positions, LayerNorm, tanh GELU, biases, tied embeddings.
    pub fn gpt2() -> Self {
        ModelConfig {
            bias: true,
            ..ModelConfig::default()
        }
    }

    /// A Llama-like decoder: rotary positions, RMSNorm, SwiGLU, no biases.
    pub fn llama() -> Self {
        ModelConfig {
            positions: Positions::Rotary,
            norm: Norm::RmsNorm,
            mlp: Mlp::SwiGlu,
            ..ModelConfig::default()
        }
    }

    /// A BERT-like encoder: learned positions, token types, post-norm, erf GELU, biases,
    /// LayerNorm epsilon 1e-12.
    pub fn bert() -> Self {
        ModelConfig {
            mlp: Mlp::GeluErf,
            bias: true,
            post_norm: true,
            type_vocab_size: 2,
            norm_eps: Some(1e-12),
            ..ModelConfig::default()
        }
    }

    /// Whether the model has BERT's MLM prediction head (`mlm_head = true`).
    pub fn has_mlm_head(&self) -> bool {
        self.mlm_head == Some(true)
    }

    /// The MLP hidden width after defaults.
    pub fn hidden(&self) -> usize {
        self.mlp_hidden.unwrap_or(match self.mlp {
            Mlp::Gelu | Mlp::GeluErf => 4 * self.dim,
            Mlp::SwiGlu => (8 * self.dim / 3).div_ceil(64) * 64,
        })
    }
    /// Key/value heads after defaults.
    pub fn kv_heads(&self) -> usize {
        self.kv_heads.unwrap_or(self.heads)
    }
    /// Width of one attention head.
    pub fn head_dim(&self) -> usize {
        self.dim / self.heads.max(1)
    }
    /// The norms' epsilon after defaults.
    pub fn norm_eps(&self) -> f64 {
        self.norm_eps.unwrap_or(match self.norm {
            Norm::LayerNorm => 1e-5,
            Norm::RmsNorm => 1e-6,
        })
    }
    /// A short name of the family the keys describe, for reports.
    pub fn family(&self) -> &'static str {
        if self.post_norm {
            "bert"
        } else if self.positions == Positions::Rotary {
            "llama"
        } else {
            "gpt2"
        }
    }
    pub fn with_layers(mut self, n: usize) -> Self {
        self.layers = n;
        self
    }
    pub fn with_heads(mut self, n: usize) -> Self {
        self.heads = n;
        self
    }
    pub fn with_kv_heads(mut self, n: usize) -> Self {
        self.kv_heads = Some(n);
        self
    }
    pub fn with_dim(mut self, n: usize) -> Self {
        self.dim = n;
        self
    }
    pub fn with_seq_len(mut self, n: usize) -> Self {
        self.seq_len = Some(n);
        self
    }
    pub fn with_vocab_size(mut self, n: usize) -> Self {
        self.vocab_size = Some(n);
        self
    }

    /// Checks value ranges that serde cannot; errors name the key (`model.*`).
    pub fn validate(&self) -> Result<()> {
        let bad = |k: &str, msg: String| Err(Error::bad_config(format!("model.{k}"), msg));
        if self.layers == 0 {
            return bad("layers", "must be at least 1".into());
        }
        if self.heads == 0 || self.dim == 0 || !self.dim.is_multiple_of(self.heads) {
            return bad(
                "heads",
                format!("must be at least 1 and divide model.dim ({})", self.dim),
            );
        }
        let kv = self.kv_heads();
        if kv == 0 || !self.heads.is_multiple_of(kv) {
            return bad(
                "kv_heads",
                format!(
                    "must be at least 1 and divide model.heads ({}), got {kv}",
                    self.heads
                ),
            );
        }
        if self.positions == Positions::Rotary && !self.head_dim().is_multiple_of(2) {
            return bad(
                "positions",
                format!("rotary needs an even head width, got {}", self.head_dim()),
            );
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return bad(
                "dropout",
                format!("must be in [0, 1), got {}", self.dropout),
            );
        }
        if self.init_std <= 0.0 || !self.init_std.is_finite() {
            return bad("init_std", "must be a positive number".into());
        }
        if self.rope_theta <= 0.0 || !self.rope_theta.is_finite() {
            return bad("rope_theta", "must be a positive number".into());
        }
        if let Some(e) = self.norm_eps {
            if e <= 0.0 || !e.is_finite() {
                return bad("norm_eps", format!("must be a positive number, got {e}"));
            }
        }
        if self.post_norm && self.norm != Norm::LayerNorm {
            return bad(
                "post_norm",
                "post-norm (BERT) goes with norm = \"layernorm\"".into(),
            );
        }
        if self.seq_len == Some(0) {
            return bad("seq_len", "must be at least 1".into());
        }
        if self.vocab_size == Some(0) {
            return bad("vocab_size", "must be at least 1".into());
        }
        if let Some(h) = &self.head {
            h.validate()?;
        }
        Ok(())
    }

    /// The config with `seq_len` and `vocab_size` set, or an error naming the missing key.
    pub fn resolved_sizes(&self) -> Result<(i64, i64)> {
        let s = self
            .seq_len
            .ok_or_else(|| Error::bad_config("model.seq_len", "not set"))?;
        let v = self
            .vocab_size
            .ok_or_else(|| Error::bad_config("model.vocab_size", "not set"))?;
        Ok((s as i64, v as i64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn swiglu_hidden_rounds_to_64() {
        let m = ModelConfig {
            mlp: Mlp::SwiGlu,
            dim: 100,
            ..ModelConfig::default()
        };
        assert_eq!(m.hidden(), 320);
    }

    #[test]
    fn validation_names_the_key() {
        let cases = [
            (ModelConfig::default().with_kv_heads(3), "model.kv_heads"),
            (ModelConfig::default().with_heads(3), "model.heads"),
            (
                ModelConfig {
                    post_norm: true,
                    norm: Norm::RmsNorm,
                    ..ModelConfig::default()
                },
                "model.post_norm",
            ),
            (
                ModelConfig {
                    norm_eps: Some(-1.0),
                    ..ModelConfig::default()
                },
                "model.norm_eps",
            ),
        ];
        for (cfg, key) in cases {
            let msg = cfg.validate().unwrap_err().to_string();
            assert!(msg.contains(key), "{cfg:?}: {msg}");
        }
        assert!(ModelConfig::llama().with_kv_heads(2).validate().is_ok());
        assert!(ModelConfig::bert().validate().is_ok());
    }

    #[test]
    fn families_are_named() {
        assert_eq!(ModelConfig::gpt2().family(), "gpt2");
        assert_eq!(ModelConfig::llama().family(), "llama");
        assert_eq!(ModelConfig::bert().family(), "bert");
    }
}
