//! A classification head on the transformer: pool the last hidden states of each sequence
//! into one vector, then a linear layer to one logit per class (`train.objective = "cls"`,
//! `quern eval cls`).
//!
//! # Pooling
//!
//! [`Pooling`] picks the vector, always from the real tokens of a row (the key mask), so a
//! row gives the same logits whether it is padded on the left, on the right or not at all:
//!
//! | pooling | vector | for |
//! |---|---|---|
//! | `last` | the hidden state of the last real token | decoders (GPT-2, Llama): the only position that has seen the whole text, as `transformers`' `*ForSequenceClassification` reads it |
//! | `first` | the hidden state of the first real token (`[CLS]`) | encoders (BERT) |
//! | `mean` | the mean of the real tokens' hidden states | encoders (sentence-transformers style) |
//!
//! With `pooler = true` the vector then goes through BERT's pooler, `tanh(dense(x))`, a
//! `[dim, dim]` layer initialised fresh (an imported BERT's pretrained pooler is not kept).
//! No dropout is applied in the head.
//!
//! A reward model's head ([`reward_head`], `train.objective = "rm"`) is such a head with one
//! output, the scalar reward.
//!
//! BERT's next-sentence-prediction head is such a head ([`nsp_head`]): `first` pooling,
//! the pooler, two classes (`is_next`, `random`); a Hugging Face `BertForPreTraining`
//! import brings its pretrained `bert.pooler.dense` and `cls.seq_relationship` into
//! `head.pooler` and `head.out`.
//!
//! # Weight names
//!
//! | name | shape | when |
//! |---|---|---|
//! | `head.pooler.weight`, `head.pooler.bias` | `[dim, dim]`, `[dim]` | `pooler = true` |
//! | `head.out.weight` | `[num_labels, dim]` | always |
//! | `head.out.bias` | `[num_labels]` | models with `bias = true` (BERT, GPT-2); Llama's head has none, as `LlamaForSequenceClassification`'s `score` |
//!
//! A fresh head is drawn like the model's other linear layers (normal with `init_std`,
//! biases zero). The head's weights live in the model's parameter store (so checkpoints and
//! `quern merge` carry them); with LoRA they stay trainable and are saved with the adapters.

use quern_core::{Error, Result};
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::config::ModelConfig;

/// Prefix of every head weight's name.
pub const PREFIX: &str = "head.";

/// How a row's hidden states become one vector (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pooling {
    /// The last real token (decoders).
    Last,
    /// The first real token, `[CLS]` (encoders).
    First,
    /// The mean over real tokens.
    Mean,
}

impl Pooling {
    pub fn name(self) -> &'static str {
        match self {
            Pooling::Last => "last",
            Pooling::First => "first",
            Pooling::Mean => "mean",
        }
    }
}

/// The head's shape: `model.json`'s and `state.json`'s `head` inside the model config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeadConfig {
    /// Number of classes (logits per row). At least 2.
    pub num_labels: usize,
    /// Class names in id order (from the training split's `meta.json`), for reports; empty
    /// when unknown.
    #[serde(default)]
    pub labels: Vec<String>,
    /// `last`, `first` or `mean`.
    pub pooling: Pooling,
    /// BERT's pooler (`tanh(dense(x))`) before the output layer. Default false.
    #[serde(default)]
    pub pooler: bool,
}

impl HeadConfig {
    /// Checks the head against its model; errors name the key (`model.head.*`).
    pub fn validate(&self) -> Result<()> {
        // One output is a reward head ([`reward_head`]), named so; a classifier has two or more.
        let reward = self.num_labels == 1 && self.labels == [REWARD_LABEL];
        if self.num_labels < 2 && !reward {
            return Err(Error::bad_config(
                "model.head.num_labels",
                format!(
                    "a classifier needs at least 2 classes, got {} (a one-output reward head has labels = [\"{REWARD_LABEL}\"])",
                    self.num_labels
                ),
            ));
        }
        if !self.labels.is_empty() && self.labels.len() != self.num_labels {
            return Err(Error::bad_config(
                "model.head.labels",
                format!(
                    "{} names for {} classes (model.head.num_labels)",
                    self.labels.len(),
                    self.num_labels
                ),
            ));
        }
        Ok(())
    }

    /// The class names: `labels`, or `0`, `1`, ... when none were recorded.
    pub fn label_names(&self) -> Vec<String> {
        if self.labels.len() == self.num_labels {
            self.labels.clone()
        } else {
            (0..self.num_labels).map(|i| i.to_string()).collect()
        }
    }
}

/// The class names of the next-sentence-prediction head, in id order: label 0 is "B is the
/// segment that follows A", label 1 "B is a random segment of another document", as BERT
/// (and `transformers`' `next_sentence_label`) has them.
pub const NSP_LABELS: [&str; 2] = ["is_next", "random"];

/// The next-sentence-prediction head of BERT pretraining (`train.objective = "nsp"`): the
/// `[CLS]` state (`first` pooling) through BERT's pooler (`tanh(dense(x))`, Hugging Face's
/// `bert.pooler.dense`) and a linear layer to 2 logits (`cls.seq_relationship`).
pub fn nsp_head() -> HeadConfig {
    HeadConfig {
        num_labels: 2,
        labels: NSP_LABELS.iter().map(|s| s.to_string()).collect(),
        pooling: Pooling::First,
        pooler: true,
    }
}

/// The name of a reward head's one output.
pub const REWARD_LABEL: &str = "reward";

/// The scalar reward head of a reward model (`train.objective = "rm"`): one output (the
/// reward) read from the family's pooled vector ([`default_pooling`]: the last real token in
/// decoders, as `transformers`' `*ForSequenceClassification` with `num_labels = 1` reads it,
/// `[CLS]` in encoders), without a pooler.
pub fn reward_head(model: &ModelConfig) -> HeadConfig {
    HeadConfig {
        num_labels: 1,
        labels: vec![REWARD_LABEL.to_string()],
        pooling: default_pooling(model),
        pooler: false,
    }
}

/// Whether a model of this config is run causally when it classifies: decoders (GPT-2- and
/// Llama-like) are, BERT-like encoders (post-norm) attend to the whole row.
pub fn causal(cfg: &ModelConfig) -> bool {
    !cfg.post_norm
}

/// The pooling that suits the family: `last` for decoders, `first` (`[CLS]`) for encoders.
pub fn default_pooling(cfg: &ModelConfig) -> Pooling {
    if causal(cfg) {
        Pooling::Last
    } else {
        Pooling::First
    }
}

/// The head's tensors (shallow clones of the parameters in the model's store).
pub(crate) struct ClsHead {
    pub(crate) cfg: HeadConfig,
    pub(crate) pooler: Option<(Tensor, Tensor)>,
    pub(crate) w: Tensor,
    pub(crate) b: Option<Tensor>,
}

impl ClsHead {
    /// Logits `[B, num_labels]` from hidden states `[B, T, dim]` and the key mask `[B, T]`
    /// (nonzero = a real token).
    pub(crate) fn forward(&self, hidden: &Tensor, mask: &Tensor) -> Tensor {
        let (b, t) = (hidden.size()[0], hidden.size()[1]);
        let dev = hidden.device();
        let real = mask.to_device(dev).ne(0);
        let pooled = match self.cfg.pooling {
            Pooling::Last | Pooling::First => {
                let idx = match self.cfg.pooling {
                    // The largest position whose mask is set (0 for a row with none).
                    Pooling::Last => (Tensor::arange(t, (Kind::Int64, dev)).view([1, t])
                        * real.to_kind(Kind::Int64))
                    .argmax(1, false),
                    // The first position whose mask is set.
                    _ => real.to_kind(Kind::Int64).argmax(1, false),
                };
                let d = hidden.size()[2];
                hidden
                    .gather(1, &idx.view([b, 1, 1]).expand([b, 1, d], false), false)
                    .squeeze_dim(1)
            }
            Pooling::Mean => {
                let m = real.to_kind(hidden.kind()).unsqueeze(-1);
                let n = m.sum_dim_intlist(1, false, hidden.kind()).clamp_min(1.0);
                (hidden * &m).sum_dim_intlist(1, false, hidden.kind()) / n
            }
        };
        let pooled = match &self.pooler {
            Some((w, bias)) => pooled.linear(w, Some(bias)).tanh(),
            None => pooled,
        };
        pooled.linear(&self.w, self.b.as_ref())
    }
}

/// Positions `[B, T]` counted over real tokens only (0 at a row's first real token), so a
/// left-padded row sees the positions its unpadded self would.
pub fn positions_from_mask(mask: &Tensor) -> Tensor {
    let m = mask.ne(0).to_kind(Kind::Int64);
    (m.cumsum(1, Kind::Int64) - 1).clamp_min(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Norm;
    use crate::transformer::Transformer;
    use tch::Device;

    fn with_head(mut cfg: ModelConfig, pooling: Pooling, pooler: bool) -> ModelConfig {
        cfg.head = Some(HeadConfig {
            num_labels: 3,
            labels: vec!["a".into(), "b".into(), "c".into()],
            pooling,
            pooler,
        });
        cfg
    }

    fn small(cfg: ModelConfig) -> ModelConfig {
        ModelConfig {
            layers: 2,
            heads: 2,
            dim: 16,
            seq_len: Some(12),
            vocab_size: Some(40),
            ..cfg
        }
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
        (a - b).abs().max().double_value(&[])
    }

    /// Every family and pooling: a row padded on the left or on the right (with garbage
    /// ids in the padding) gives the logits of the same row alone.
    #[test]
    fn padding_on_either_side_does_not_change_the_logits() {
        let _rng = crate::torch_rng_lock();
        let families = [
            ModelConfig::gpt2(),
            ModelConfig::llama().with_kv_heads(1),
            ModelConfig::bert(),
        ];
        for fam in families {
            for pooling in [Pooling::Last, Pooling::First, Pooling::Mean] {
                if causal(&fam) && pooling == Pooling::First {
                    continue;
                }
                let cfg = with_head(small(fam.clone()), pooling, !causal(&fam));
                tch::manual_seed(5);
                let m = Transformer::new(&cfg, Device::Cpu);
                let row = [5i64, 9, 3, 17, 2];
                let alone = m
                    .classify(
                        &Tensor::from_slice(&row).view([1, 5]),
                        &Tensor::ones([1, 5], (Kind::Int64, Device::Cpu)),
                        false,
                    )
                    .unwrap();
                assert_eq!(alone.size(), [1, 3]);
                let pad = [33i64, 34, 35];
                let right: Vec<i64> = row.iter().chain(&pad).copied().collect();
                let left: Vec<i64> = pad.iter().chain(&row).copied().collect();
                let ids = Tensor::from_slice(&[right, left].concat()).view([2, 8]);
                let mask = Tensor::from_slice(&[1i64, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1])
                    .view([2, 8]);
                let both = m.classify(&ids, &mask, false).unwrap();
                let d = max_diff(&both, &alone.expand([2, 3], false));
                assert!(d < 1e-5, "{} {pooling:?}: {d}", cfg.family());
                // Without the mask the padding would change the logits: the check can fail.
                let unmasked = m
                    .classify(
                        &ids,
                        &Tensor::ones([2, 8], (Kind::Int64, Device::Cpu)),
                        false,
                    )
                    .unwrap();
                assert!(max_diff(&unmasked, &alone.expand([2, 3], false)) > 1e-4);
            }
        }
    }

    #[test]
    fn last_pooling_reads_the_last_real_token() {
        let _rng = crate::torch_rng_lock();
        tch::manual_seed(3);
        let cfg = with_head(small(ModelConfig::gpt2()), Pooling::Last, false);
        let m = Transformer::new(&cfg, Device::Cpu);
        let ids = Tensor::from_slice(&[4i64, 7, 8, 1, 1]).view([1, 5]);
        let mask = Tensor::from_slice(&[1i64, 1, 1, 0, 0]).view([1, 5]);
        let h = m
            .hidden(&ids, &Default::default(), true, false, None)
            .unwrap();
        let w = m.params().get("head.out.weight").unwrap();
        let b = m.params().get("head.out.bias").unwrap();
        let expect = h.get(0).get(2).linear(w, Some(b)).view([1, 3]);
        let got = m.classify(&ids, &mask, false).unwrap();
        assert!(max_diff(&got, &expect) < 1e-6);
    }

    #[test]
    fn head_weights_are_named_and_bad_configs_are_refused() {
        let _rng = crate::torch_rng_lock();
        let cfg = with_head(small(ModelConfig::bert()), Pooling::First, true);
        let m = Transformer::new(&cfg, Device::Cpu);
        for (name, shape) in [
            ("head.pooler.weight", vec![16i64, 16]),
            ("head.pooler.bias", vec![16]),
            ("head.out.weight", vec![3, 16]),
            ("head.out.bias", vec![3]),
        ] {
            assert_eq!(
                m.params().get(name).map(|t| t.size()),
                Some(shape),
                "{name}"
            );
        }
        let llama = with_head(small(ModelConfig::llama()), Pooling::Last, false);
        let m = Transformer::new(&llama, Device::Cpu);
        assert!(m.params().get("head.out.bias").is_none());
        let mut bad = llama.clone();
        if let Some(h) = bad.head.as_mut() {
            h.num_labels = 1;
            h.labels.clear();
        }
        let e = bad.validate().unwrap_err().to_string();
        assert!(e.contains("model.head.num_labels"), "{e}");
        // One output is a reward head only when it says so.
        let mut reward = llama.clone();
        reward.head = Some(reward_head(&reward));
        reward.validate().unwrap();
        let m = Transformer::new(&reward, Device::Cpu);
        assert_eq!(
            m.params().get("head.out.weight").map(|t| t.size()),
            Some(vec![1, 16])
        );
        if let Some(h) = bad.head.as_mut() {
            h.num_labels = 2;
            h.labels = vec!["x".into()];
        }
        let e = bad.validate().unwrap_err().to_string();
        assert!(e.contains("model.head.labels"), "{e}");
        // A model without a head says so instead of panicking.
        let plain = small(ModelConfig {
            norm: Norm::LayerNorm,
            ..ModelConfig::gpt2()
        });
        let m = Transformer::new(&plain, Device::Cpu);
        let ids = Tensor::from_slice(&[1i64, 2]).view([1, 2]);
        let e = m
            .classify(
                &ids,
                &Tensor::ones([1, 2], (Kind::Int64, Device::Cpu)),
                false,
            )
            .unwrap_err()
            .to_string();
        assert!(e.contains("classification head"), "{e}");
    }
}
