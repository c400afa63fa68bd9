//! The transformer: one set of blocks, run causally (decoder, for `clm`) or bidirectionally
//! (encoder, for `mlm`).
//!
//! Parameters are plain tch tensors that we own, kept in a [`ParamStore`] in a fixed order
//! with stable names. Owning them (rather than using `nn::VarStore`) lets the optimizer keep
//! its state in tensors we can checkpoint, lets us group parameters for weight decay by role,
//! and gives the safetensors files the same names a PyTorch module of the same shape uses
//! (see `tests/reference_gpt.py`), which is how the trainer is checked against PyTorch.
//!
//! Names: `tok_emb.weight`, `pos_emb.weight` (learned positions), `blocks.{i}.ln1.weight`,
//! `blocks.{i}.attn.qkv.weight`, `blocks.{i}.attn.proj.weight`, `blocks.{i}.ln2.weight`,
//! `blocks.{i}.mlp.{fc,out}.weight` (GELU) or `blocks.{i}.mlp.{gate,up,out}.weight` (SwiGLU),
//! `ln_f.weight`, `lm_head.weight` (untied only); `.bias` beside each when biases are on.
//!
//! Attention goes through `scaled_dot_product_attention` (flash/memory-efficient kernels on
//! GPU), with `is_causal` for the decoder.

use tch::{Device, Kind, Tensor};

use crate::config::{Mlp, ModelConfig, Norm, Positions};

/// What a parameter is, for weight-decay grouping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A linear layer's weight matrix: decayed.
    Matrix,
    /// Token or position embeddings: not decayed by default.
    Embedding,
    /// Norm scales and biases: never decayed.
    NormOrBias,
}

/// One named parameter.
#[derive(Debug)]
pub struct Param {
    pub name: String,
    pub tensor: Tensor,
    pub role: Role,
}

/// The model's parameters in a fixed order.
#[derive(Debug, Default)]
pub struct ParamStore {
    pub params: Vec<Param>,
}

impl ParamStore {
    fn add(&mut self, name: String, t: Tensor, role: Role) -> Tensor {
        let t = t.set_requires_grad(true);
        self.params.push(Param {
            name,
            tensor: t.shallow_clone(),
            role,
        });
        t
    }

    /// Total number of scalars.
    pub fn numel(&self) -> i64 {
        self.params.iter().map(|p| p.tensor.numel() as i64).sum()
    }

    /// Looks a parameter up by name.
    pub fn get(&self, name: &str) -> Option<&Tensor> {
        self.params
            .iter()
            .find(|p| p.name == name)
            .map(|p| &p.tensor)
    }

    /// Clears every gradient.
    pub fn zero_grad(&mut self) {
        for p in &mut self.params {
            p.tensor.zero_grad();
        }
    }
}

struct Linear {
    w: Tensor,
    b: Option<Tensor>,
}

impl Linear {
    fn forward(&self, x: &Tensor) -> Tensor {
        x.linear(&self.w, self.b.as_ref())
    }
}

struct NormLayer {
    kind: Norm,
    w: Tensor,
    b: Option<Tensor>,
    dim: i64,
}

impl NormLayer {
    fn forward(&self, x: &Tensor) -> Tensor {
        match self.kind {
            Norm::LayerNorm => x.layer_norm([self.dim], Some(&self.w), self.b.as_ref(), 1e-5, true),
            Norm::RmsNorm => x.rms_norm([self.dim], Some(&self.w), 1e-6),
        }
    }
}

struct Block {
    ln1: NormLayer,
    qkv: Linear,
    proj: Linear,
    ln2: NormLayer,
    /// `fc` for GELU, `gate` for SwiGLU.
    fc: Linear,
    /// `up` for SwiGLU.
    up: Option<Linear>,
    out: Linear,
}

/// A decoder-only transformer that can also run as an encoder.
pub struct Transformer {
    cfg: ModelConfig,
    seq_len: i64,
    vocab: i64,
    tok_emb: Tensor,
    pos_emb: Option<Tensor>,
    blocks: Vec<Block>,
    ln_f: NormLayer,
    lm_head: Option<Tensor>,
    /// `(cos, sin)` of shape `[seq_len, head_dim]`, for rotary positions.
    rope: Option<(Tensor, Tensor)>,
    store: ParamStore,
    device: Device,
}

impl std::fmt::Debug for Transformer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transformer")
            .field("cfg", &self.cfg)
            .field("params", &self.store.numel())
            .finish()
    }
}

impl Transformer {
    /// Builds and initialises a model. `cfg.seq_len` and `cfg.vocab_size` must be set. The
    /// initialisation draws from libtorch's global generator: seed it first for a
    /// reproducible model.
    pub fn new(cfg: &ModelConfig, device: Device) -> Self {
        let seq_len = cfg.seq_len.expect("model.seq_len resolved before building") as i64;
        let vocab = cfg
            .vocab_size
            .expect("model.vocab_size resolved before building") as i64;
        let d = cfg.dim as i64;
        let h = cfg.hidden() as i64;
        let std = cfg.init_std;
        // GPT-2: residual projections scaled by 1/sqrt(2 * layers).
        let proj_std = std / (2.0 * cfg.layers as f64).sqrt();
        let opts = (Kind::Float, device);
        let mut store = ParamStore::default();
        let _guard = tch::no_grad_guard();
        let normal = |shape: &[i64], s: f64| Tensor::empty(shape, opts).normal_(0.0, s);
        let linear = |store: &mut ParamStore, name: &str, out: i64, inp: i64, s: f64| Linear {
            w: store.add(
                format!("{name}.weight"),
                normal(&[out, inp], s),
                Role::Matrix,
            ),
            b: cfg.bias.then(|| {
                store.add(
                    format!("{name}.bias"),
                    Tensor::zeros([out], opts),
                    Role::NormOrBias,
                )
            }),
        };
        let norm = |store: &mut ParamStore, name: &str| NormLayer {
            kind: cfg.norm,
            w: store.add(
                format!("{name}.weight"),
                Tensor::ones([d], opts),
                Role::NormOrBias,
            ),
            b: (cfg.bias && cfg.norm == Norm::LayerNorm).then(|| {
                store.add(
                    format!("{name}.bias"),
                    Tensor::zeros([d], opts),
                    Role::NormOrBias,
                )
            }),
            dim: d,
        };
        let tok_emb = store.add(
            "tok_emb.weight".into(),
            normal(&[vocab, d], std),
            Role::Embedding,
        );
        let pos_emb = (cfg.positions == Positions::Learned).then(|| {
            store.add(
                "pos_emb.weight".into(),
                normal(&[seq_len, d], std),
                Role::Embedding,
            )
        });
        let mut blocks = Vec::with_capacity(cfg.layers);
        for i in 0..cfg.layers {
            let p = format!("blocks.{i}");
            let ln1 = norm(&mut store, &format!("{p}.ln1"));
            let qkv = linear(&mut store, &format!("{p}.attn.qkv"), 3 * d, d, std);
            let proj = linear(&mut store, &format!("{p}.attn.proj"), d, d, proj_std);
            let ln2 = norm(&mut store, &format!("{p}.ln2"));
            let (fc, up) = match cfg.mlp {
                Mlp::Gelu => (linear(&mut store, &format!("{p}.mlp.fc"), h, d, std), None),
                Mlp::SwiGlu => (
                    linear(&mut store, &format!("{p}.mlp.gate"), h, d, std),
                    Some(linear(&mut store, &format!("{p}.mlp.up"), h, d, std)),
                ),
            };
            let out = linear(&mut store, &format!("{p}.mlp.out"), d, h, proj_std);
            blocks.push(Block {
                ln1,
                qkv,
                proj,
                ln2,
                fc,
                up,
                out,
            });
        }
        let ln_f = norm(&mut store, "ln_f");
        let lm_head = (!cfg.tie_embeddings).then(|| {
            store.add(
                "lm_head.weight".into(),
                normal(&[vocab, d], std),
                Role::Matrix,
            )
        });
        let rope = (cfg.positions == Positions::Rotary).then(|| {
            let hd = d / cfg.heads as i64;
            let inv = Tensor::arange_start_step(0, hd, 2, (Kind::Float, device))
                .divide_scalar(hd as f64)
                .multiply_scalar(-cfg.rope_theta.ln())
                .exp();
            let t = Tensor::arange(seq_len, (Kind::Float, device));
            let freqs = t.outer(&inv);
            let emb = Tensor::cat(&[&freqs, &freqs], -1);
            (emb.cos(), emb.sin())
        });
        Transformer {
            cfg: cfg.clone(),
            seq_len,
            vocab,
            tok_emb,
            pos_emb,
            blocks,
            ln_f,
            lm_head,
            rope,
            store,
            device,
        }
    }

    pub fn config(&self) -> &ModelConfig {
        &self.cfg
    }
    pub fn device(&self) -> Device {
        self.device
    }
    pub fn seq_len(&self) -> i64 {
        self.seq_len
    }
    pub fn vocab_size(&self) -> i64 {
        self.vocab
    }
    pub fn params(&self) -> &ParamStore {
        &self.store
    }
    pub fn params_mut(&mut self) -> &mut ParamStore {
        &mut self.store
    }

    /// Model FLOPs per trained token (forward + backward), the usual `6 N + 12 L D T`
    /// estimate with `N` the parameters other than position embeddings.
    pub fn flops_per_token(&self, seq: i64) -> f64 {
        let pos = self.pos_emb.as_ref().map_or(0, |p| p.numel() as i64);
        let n = (self.store.numel() - pos) as f64;
        6.0 * n + 12.0 * self.cfg.layers as f64 * self.cfg.dim as f64 * seq as f64
    }

    /// Logits `[B, T, vocab]` for token ids `[B, T]` (int64). `causal` picks decoder or
    /// encoder attention; `train` turns dropout on.
    // `x = x + ...`, not `x += ...`: tch's `+=` adds in place, which would overwrite
    // activations autograd saved for the backward pass.
    #[allow(clippy::assign_op_pattern)]
    pub fn forward(&self, idx: &Tensor, causal: bool, train: bool) -> Tensor {
        let (b, t) = idx.size2().expect("token ids are [batch, seq]");
        assert!(
            t <= self.seq_len,
            "sequence of {t} tokens is longer than the model's seq_len {}",
            self.seq_len
        );
        let d = self.cfg.dim as i64;
        let heads = self.cfg.heads as i64;
        let hd = d / heads;
        let p = if train { self.cfg.dropout } else { 0.0 };
        let mut x = Tensor::embedding(&self.tok_emb, idx, -1, false, false);
        if let Some(pos) = &self.pos_emb {
            x = x + pos.narrow(0, 0, t);
        }
        x = drop(x, p, train);
        let rope = self
            .rope
            .as_ref()
            .map(|(c, s)| (c.narrow(0, 0, t), s.narrow(0, 0, t)));
        for blk in &self.blocks {
            let qkv = blk.qkv.forward(&blk.ln1.forward(&x));
            let parts = qkv.split(d, 2);
            let shape = |z: &Tensor| z.view([b, t, heads, hd]).transpose(1, 2);
            let (mut q, mut k, v) = (shape(&parts[0]), shape(&parts[1]), shape(&parts[2]));
            if let Some((cos, sin)) = &rope {
                q = apply_rotary(&q, cos, sin);
                k = apply_rotary(&k, cos, sin);
            }
            let y = Tensor::scaled_dot_product_attention(
                &q,
                &k,
                &v,
                None::<Tensor>,
                p,
                causal,
                None::<f64>,
                false,
            );
            let y = y.transpose(1, 2).reshape([b, t, d]);
            x = x + drop(blk.proj.forward(&y), p, train);
            let h = blk.ln2.forward(&x);
            let m = match &blk.up {
                None => blk.fc.forward(&h).gelu("tanh"),
                Some(up) => blk.fc.forward(&h).silu() * up.forward(&h),
            };
            x = x + drop(blk.out.forward(&m), p, train);
        }
        let x = self.ln_f.forward(&x);
        x.linear(
            self.lm_head.as_ref().unwrap_or(&self.tok_emb),
            None::<Tensor>,
        )
    }
}

/// Dropout that is skipped, not run with p = 0, when off (no mask, no copy).
fn drop(x: Tensor, p: f64, train: bool) -> Tensor {
    if train && p > 0.0 {
        x.dropout(p, train)
    } else {
        x
    }
}

/// Rotates query/key `[B, H, T, hd]` by position (half rotation, as GPT-NeoX and LLaMA).
fn apply_rotary(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Tensor {
    let half = x.size().last().copied().unwrap_or(0) / 2;
    let x1 = x.narrow(-1, 0, half);
    let x2 = x.narrow(-1, half, half);
    let rotated = Tensor::cat(&[x2.neg(), x1], -1);
    let out = x * cos + rotated * sin;
    out.to_kind(x.kind())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny(positions: Positions, norm: Norm, mlp: Mlp, bias: bool, tie: bool) -> ModelConfig {
        ModelConfig {
            layers: 2,
            heads: 2,
            dim: 16,
            seq_len: Some(8),
            vocab_size: Some(32),
            positions,
            norm,
            mlp,
            bias,
            tie_embeddings: tie,
            ..ModelConfig::default()
        }
    }

    #[test]
    fn every_variant_gives_logits_of_the_right_shape() {
        let _rng = crate::torch_rng_lock();
        let variants = [
            tiny(Positions::Learned, Norm::LayerNorm, Mlp::Gelu, false, true),
            tiny(Positions::Rotary, Norm::RmsNorm, Mlp::SwiGlu, false, false),
            tiny(Positions::Learned, Norm::LayerNorm, Mlp::Gelu, true, false),
            tiny(Positions::Rotary, Norm::LayerNorm, Mlp::SwiGlu, true, true),
        ];
        for cfg in variants {
            tch::manual_seed(0);
            let m = Transformer::new(&cfg, Device::Cpu);
            let idx = Tensor::from_slice(&[1i64, 2, 3, 4, 5, 6]).view([2, 3]);
            let logits = m.forward(&idx, true, false);
            assert_eq!(logits.size(), vec![2, 3, 32], "{cfg:?}");
            assert!(bool::try_from(logits.isfinite().all()).unwrap());
            assert_eq!(
                m.params().get("lm_head.weight").is_some(),
                !cfg.tie_embeddings
            );
            assert_eq!(m.params().get("blocks.0.attn.qkv.bias").is_some(), cfg.bias);
        }
    }

    #[test]
    fn decoder_is_causal_and_encoder_is_not() {
        let _rng = crate::torch_rng_lock();
        let cfg = tiny(Positions::Rotary, Norm::LayerNorm, Mlp::Gelu, false, true);
        tch::manual_seed(1);
        let m = Transformer::new(&cfg, Device::Cpu);
        let a = Tensor::from_slice(&[1i64, 2, 3, 4]).view([1, 4]);
        let b = Tensor::from_slice(&[1i64, 2, 3, 9]).view([1, 4]);
        // Changing the last token leaves earlier decoder positions unchanged...
        let (la, lb) = (m.forward(&a, true, false), m.forward(&b, true, false));
        let diff = (la.narrow(1, 0, 3) - lb.narrow(1, 0, 3))
            .abs()
            .max()
            .double_value(&[]);
        assert!(diff < 1e-6, "decoder leaked the future: {diff}");
        // ...but changes them in the encoder.
        let (ea, eb) = (m.forward(&a, false, false), m.forward(&b, false, false));
        let diff = (ea.narrow(1, 0, 3) - eb.narrow(1, 0, 3))
            .abs()
            .max()
            .double_value(&[]);
        assert!(diff > 1e-6, "encoder did not see the whole sequence");
    }
}
