//! BERT's masked-LM prediction head (`cls.predictions` in Hugging Face's `BertForMaskedLM`
//! and `BertForPreTraining`): the last hidden states go through a transform, `LayerNorm(act(
//! dense(x)))`, then through the output projection (the token embedding, tied as BERT ties
//! it, or `lm_head` when untied) plus a bias of one value per vocabulary id.
//!
//! It exists because an encoder's hidden states are not trained to be read by the embedding
//! matrix directly: BERT learns this transform with its masked-LM objective, and a model
//! fine-tuned with `mlm` or pretrained with `nsp` should have the head BERT has, so that its
//! logits and losses are those of `transformers` on the same weights. Decoders (GPT-2,
//! Llama) have no such head and keep projecting their hidden states straight to logits.
//!
//! The activation is the model's MLP activation (`gelu_erf` for BERT, the tanh GELU for
//! `gelu`), as BERT's `transform_act_fn` is `config.hidden_act`; the LayerNorm's epsilon is
//! the model's `norm_eps`. The head always has its biases, as BERT's does.
//!
//! # Weight names
//!
//! | name | shape | Hugging Face |
//! |---|---|---|
//! | `mlm_head.dense.weight`, `mlm_head.dense.bias` | `[dim, dim]`, `[dim]` | `cls.predictions.transform.dense` |
//! | `mlm_head.norm.weight`, `mlm_head.norm.bias` | `[dim]` | `cls.predictions.transform.LayerNorm` |
//! | `mlm_head.bias` | `[vocab]` | `cls.predictions.bias` (= `cls.predictions.decoder.bias`) |
//!
//! A fresh head is drawn as BERT initialises it: the dense weight normal with `init_std`,
//! the LayerNorm 1 and 0, the biases 0. Its weights live in the model's parameter store, so
//! checkpoints carry them; with LoRA they train in full beside the adapters.

use tch::{Kind, Tensor};

/// Prefix of every MLM head weight's name.
pub const PREFIX: &str = "mlm_head.";

/// The head's tensors (shallow clones of the parameters in the model's store).
pub(crate) struct MlmHead {
    pub(crate) dense_w: Tensor,
    pub(crate) dense_b: Tensor,
    pub(crate) norm_w: Tensor,
    pub(crate) norm_b: Tensor,
    pub(crate) bias: Tensor,
    /// The GELU approximation: `"none"` (erf, BERT) or `"tanh"`.
    pub(crate) gelu: &'static str,
    pub(crate) eps: f64,
}

impl MlmHead {
    /// Logits `[.., vocab]` of hidden states `[.., dim]` through the transform and the output
    /// projection `out` (`[vocab, dim]`).
    pub(crate) fn logits(&self, hidden: &Tensor, out: &Tensor) -> Tensor {
        let x = hidden
            .linear(&self.dense_w, Some(&self.dense_b))
            .gelu(self.gelu);
        let d = self.norm_w.size()[0];
        let x = if self.norm_w.kind() == Kind::Float {
            x.layer_norm([d], Some(&self.norm_w), Some(&self.norm_b), self.eps, true)
        } else {
            // A half-precision model normalises in fp32 (see the transformer's norms).
            let n = x.to_kind(Kind::Float).layer_norm(
                [d],
                None::<Tensor>,
                None::<Tensor>,
                self.eps,
                true,
            );
            n.to_kind(self.norm_w.kind()) * &self.norm_w + &self.norm_b
        };
        x.linear(out, Some(&self.bias))
    }
}
