//! The transformer: one set of blocks for every family, run causally (decoder: `clm`,
//! generation) or bidirectionally (encoder: `mlm`, BERT), with an optional KV cache.
//!
//! Parameters are plain tch tensors that we own, kept in a [`ParamStore`] in a fixed order
//! with stable names. Owning them (rather than using `nn::VarStore`) lets the optimizer keep
//! its state in tensors we can checkpoint, lets us group parameters for weight decay by role,
//! and gives the safetensors files the same names a PyTorch module of the same shape uses
//! (see `train/tests/reference_gpt.py`), which is how the trainer is checked against PyTorch.
//!
//! # Weight names
//!
//! | name | shape | families |
//! |---|---|---|
//! | `tok_emb.weight` | `[vocab, dim]` | all |
//! | `pos_emb.weight` | `[seq_len, dim]` | learned positions (GPT-2, BERT) |
//! | `type_emb.weight` | `[type_vocab_size, dim]` | BERT |
//! | `emb_norm.{weight,bias}` | `[dim]` | post-norm (BERT) |
//! | `blocks.{i}.ln1.{weight,bias}` | `[dim]` | all: before attention (pre-norm) or after its residual add (post-norm) |
//! | `blocks.{i}.attn.qkv.{weight,bias}` | `[(heads + 2 kv_heads) head_dim, dim]` | all: rows q, then k, then v; rotary q/k in the half-rotation layout of Hugging Face |
//! | `blocks.{i}.attn.proj.{weight,bias}` | `[dim, dim]` | all |
//! | `blocks.{i}.ln2.{weight,bias}` | `[dim]` | all: before the MLP (pre-norm) or after its residual add (post-norm) |
//! | `blocks.{i}.mlp.fc.{weight,bias}` | `[hidden, dim]` | GELU |
//! | `blocks.{i}.mlp.{gate,up}.{weight,bias}` | `[hidden, dim]` | SwiGLU (Llama) |
//! | `blocks.{i}.mlp.out.{weight,bias}` | `[dim, hidden]` | all |
//! | `ln_f.{weight,bias}` | `[dim]` | pre-norm (GPT-2, Llama) |
//! | `lm_head.weight` | `[vocab, dim]` | untied embeddings only |
//!
//! `.bias` tensors exist when `bias = true` (RMSNorm has none). A model with a
//! classification head (`config.head`) also has `head.*` weights ([`crate::head`]), and one
//! with BERT's masked-LM head (`config.mlm_head`) `mlm_head.*` weights ([`crate::mlm_head`]).
//!
//! Attention goes through `scaled_dot_product_attention` (flash/memory-efficient kernels on
//! GPU), with `is_causal` when nothing is masked and an explicit mask for padding and cached
//! decoding. Grouped-query attention passes `enable_gqa`, so keys and values are never
//! repeated in memory.

use std::collections::HashMap;
use std::os::raw::c_int;
use std::path::Path;
use std::sync::{Arc, Mutex};

use crate::compress::{QuantTensor, Scheme, Tap, Taps};
use crate::config::{Mlp, ModelConfig, Norm, Positions};
use crate::head::ClsHead;
use crate::kernels;
use crate::lora::{Adapter, LoraConfig, Target};
use crate::mlm_head::MlmHead;
use quern_core::error::Place;
use quern_core::{Error, Result};
use tch::{Device, Kind, Tensor};
use torch_sys::C_tensor;

unsafe extern "C" {
    /// `csrc/grads.cpp`: resets the gradients of `n` tensors to undefined; 0 on success.
    fn quern_clear_grads(ts: *const *const C_tensor, n: c_int) -> c_int;
}

/// What a parameter is, for weight-decay grouping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A linear layer's weight matrix: decayed.
    Matrix,
    /// Token, position or type embeddings: not decayed by default.
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

    /// Clears every gradient to undefined, as PyTorch's `zero_grad(set_to_none=True)` does
    /// (the default of `torch.optim` and of transformers' `Trainer`): the next backward
    /// hands its gradient to the parameter instead of adding it into zeros, so no
    /// parameter-sized fill and add per step. A parameter that the next backward does not
    /// reach keeps no gradient, and the optimizer leaves it alone (as torch's AdamW does).
    pub fn zero_grad(&mut self) {
        let ptrs: Vec<_> = self.params.iter().map(|p| p.tensor.as_ptr()).collect();
        let n = c_int::try_from(ptrs.len()).unwrap_or(c_int::MAX);
        // SAFETY: every pointer is a live `at::Tensor` owned by `self.params` for the call;
        // the helper only resets each one's gradient.
        if unsafe { quern_clear_grads(ptrs.as_ptr(), n) } != 0 {
            // libtorch refused to reset one: zero what is left instead (the same update).
            for p in &mut self.params {
                p.tensor.zero_grad();
            }
        }
    }

    /// `(name, tensor)` pairs (shallow clones), in the store's order: what a safetensors
    /// file of the model holds.
    pub fn named(&self) -> Vec<(String, Tensor)> {
        self.params
            .iter()
            .map(|p| (p.name.clone(), p.tensor.shallow_clone()))
            .collect()
    }
}

/// Where a new model's parameters come from.
enum Source<'a> {
    /// Drawn from libtorch's global generator (normal with the config's `init_std`).
    Init,
    /// Copied from named tensors (a checkpoint or an import); `file` names them in errors.
    Weights {
        map: &'a HashMap<String, Tensor>,
        file: &'a Path,
    },
}

/// How a parameter is initialised when drawn.
#[derive(Clone, Copy)]
enum Init {
    Normal(f64),
    Zeros,
    Ones,
}

struct Builder<'a> {
    source: Source<'a>,
    store: ParamStore,
    device: Device,
    used: usize,
}

impl Builder<'_> {
    fn add(&mut self, name: String, shape: &[i64], init: Init, role: Role) -> Result<Tensor> {
        let opts = (Kind::Float, self.device);
        let t = match &self.source {
            Source::Init => match init {
                Init::Normal(s) => Tensor::empty(shape, opts).normal_(0.0, s),
                Init::Zeros => Tensor::zeros(shape, opts),
                Init::Ones => Tensor::ones(shape, opts),
            },
            Source::Weights { map, file } => {
                let t = map.get(&name).ok_or_else(|| {
                    Error::bad_input(
                        Place::file(*file),
                        format!("tensor `{name}` missing: weights of a different model?"),
                    )
                })?;
                if t.size() != shape {
                    return Err(Error::bad_input(
                        Place::file(*file),
                        format!(
                            "tensor `{name}` has shape {:?}, the model's config expects {shape:?}",
                            t.size()
                        ),
                    ));
                }
                self.used += 1;
                t.to_device(self.device).to_kind(Kind::Float).contiguous()
            }
        };
        let t = t.set_requires_grad(true);
        self.store.params.push(Param {
            name,
            tensor: t.shallow_clone(),
            role,
        });
        Ok(t)
    }
}

struct Linear {
    /// The weight's name (`blocks.0.attn.qkv.weight`).
    name: String,
    w: Tensor,
    b: Option<Tensor>,
    /// LoRA adapters on some of its output rows, sorted by row ([`crate::lora`]).
    lora: Vec<Adapter>,
    /// Calibration statistics of its inputs, while [`Transformer::set_taps`] collects them.
    tap: Option<Arc<Mutex<Tap>>>,
    /// Low-bit weights that replace `w` in the matrix product
    /// ([`Transformer::use_quantized`]).
    low: Option<LowBit>,
}

/// A quantized weight in the layout of libtorch's low-bit matrix products (CPU).
enum LowBit {
    /// `_weight_int8pack_mm`: int8 codes `[N, K]`; the kernel scales by ones in bf16 and
    /// the f32 row scales are applied to its output.
    Int8 {
        codes: Tensor,
        ones: Tensor,
        scale: Tensor,
    },
    /// `_weight_int4pack_mm_for_cpu`: packed codes, `[groups, N, 2]` bf16 scales and
    /// zero points (`w = (q - 8) · s + z`), inputs zero-padded from `k` to `k_pad`; and,
    /// where the groups are whole 32-input blocks, the same codes in the decoding kernels'
    /// layout with f32 scales and minimums (`kernel`), which products of up to
    /// [`kernels::MAX_ROWS`] rows take.
    Int4 {
        packed: Tensor,
        group: i64,
        sz: Tensor,
        k: i64,
        k_pad: i64,
        kernel: Option<Int4Kernel>,
    },
}

/// int4 codes as [`kernels::Weight::Int4`] reads them.
struct Int4Kernel {
    packed: Tensor,
    scale: Tensor,
    min: Tensor,
}

impl LowBit {
    fn from_quant(q: &QuantTensor) -> Option<LowBit> {
        let (n, k) = q.codes.size2().ok()?;
        match q.scheme {
            Scheme::Int8 => Some(LowBit::Int8 {
                codes: q.codes.contiguous(),
                ones: Tensor::ones([n], (Kind::BFloat16, q.codes.device())),
                scale: q.scale.to_kind(Kind::Float).contiguous(),
            }),
            Scheme::Int4 { group } => {
                // The kernel wants N in multiples of 16 and whole groups.
                if n % 16 != 0 {
                    return None;
                }
                let g = (k + group - 1) / group;
                let k_pad = g * group;
                let mut codes = q.codes.to_kind(Kind::Int);
                if k_pad > k {
                    codes = codes.constant_pad_nd([0, k_pad - k]);
                }
                let packed = codes
                    .f_internal_convert_weight_to_int4pack_for_cpu(1)
                    .ok()?;
                let s = &q.scale;
                let mn = q.min.as_ref()?;
                let z = mn + s * 8.0;
                let sz = Tensor::stack(&[s.tr(), z.tr()], 2)
                    .to_kind(Kind::BFloat16)
                    .contiguous();
                let kernel = if kernels::int4_fits(k, group) {
                    kernels::pack_int4(&q.codes).map(|p| Int4Kernel {
                        packed: p,
                        scale: s.to_kind(Kind::Float).contiguous(),
                        min: mn.to_kind(Kind::Float).contiguous(),
                    })
                } else {
                    None
                };
                Some(LowBit::Int4 {
                    packed,
                    group,
                    sz,
                    k,
                    k_pad,
                    kernel,
                })
            }
        }
    }

    /// The codes as the decoding kernels take them (int4 only in whole 32-input blocks).
    fn kernel_weight(&self) -> Option<kernels::Weight<'_>> {
        match self {
            LowBit::Int8 { codes, scale, .. } => Some(kernels::Weight::Int8 { codes, scale }),
            LowBit::Int4 { kernel, group, .. } => kernel.as_ref().map(|c| kernels::Weight::Int4 {
                packed: &c.packed,
                scale: &c.scale,
                min: &c.min,
                group: *group,
            }),
        }
    }

    /// `x @ Wᵀ` through the decoding kernel where it applies, libtorch's product otherwise.
    fn product(&self, x: &Tensor) -> Tensor {
        self.kernel_weight()
            .and_then(|w| kernels::linear(x, w, None))
            .unwrap_or_else(|| self.matmul(x))
    }

    /// Bytes a decoding product reads: codes, scales (and zero points or minimums).
    fn bytes(&self) -> f64 {
        let b = |t: &Tensor| t.numel() as f64 * t.kind().elt_size_in_bytes() as f64;
        match self {
            LowBit::Int8 { codes, ones, scale } => b(codes) + b(ones) + b(scale),
            LowBit::Int4 {
                kernel: Some(c), ..
            } => b(&c.packed) + b(&c.scale) + b(&c.min),
            LowBit::Int4 { packed, sz, .. } => b(packed) + b(sz),
        }
    }

    fn matmul(&self, x: &Tensor) -> Tensor {
        let shape = x.size();
        let k = *shape.last().unwrap_or(&0);
        let x2 = x.reshape([-1, k]).to_kind(Kind::BFloat16);
        let y = match self {
            LowBit::Int8 { codes, ones, scale } => {
                x2.internal_weight_int8pack_mm(codes, ones)
                    .to_kind(Kind::Float)
                    * scale
            }
            LowBit::Int4 {
                packed,
                group,
                sz,
                k,
                k_pad,
                ..
            } => {
                let x2 = if k_pad > k {
                    x2.constant_pad_nd([0, k_pad - k])
                } else {
                    x2
                };
                x2.internal_weight_int4pack_mm_for_cpu(packed, *group, sz)
                    .to_kind(Kind::Float)
            }
        };
        let mut out = shape.clone();
        if let Some(last) = out.last_mut() {
            *last = y.size()[1];
        }
        y.view(out.as_slice()).to_kind(x.kind())
    }
}

impl Linear {
    /// The matrix its product reads, as the decoding kernels take it.
    fn kernel_weight(&self) -> Option<kernels::Weight<'_>> {
        match &self.low {
            None => Some(kernels::Weight::F32(&self.w)),
            Some(low) => low.kernel_weight(),
        }
    }

    /// `train` turns the adapters' dropout on.
    fn forward(&self, x: &Tensor, train: bool) -> Tensor {
        if let Some(tap) = &self.tap {
            if let Ok(mut t) = tap.lock() {
                t.add(x);
            }
        }
        let fast = self
            .kernel_weight()
            .and_then(|w| kernels::linear(x, w, self.b.as_ref()));
        let y = match (fast, &self.low) {
            (Some(y), _) => y,
            (None, Some(low)) => {
                let y = low.matmul(x);
                match &self.b {
                    Some(b) => y + b,
                    None => y,
                }
            }
            (None, None) => x.linear(&self.w, self.b.as_ref()),
        };
        if self.lora.is_empty() {
            y
        } else {
            crate::lora::add_deltas(y, x, &self.lora, train)
        }
    }
}

struct NormLayer {
    kind: Norm,
    w: Tensor,
    b: Option<Tensor>,
    dim: i64,
    eps: f64,
}

impl NormLayer {
    fn forward(&self, x: &Tensor) -> Tensor {
        if self.w.kind() != Kind::Float {
            return self.forward_half(x);
        }
        match self.kind {
            Norm::LayerNorm => {
                x.layer_norm([self.dim], Some(&self.w), self.b.as_ref(), self.eps, true)
            }
            Norm::RmsNorm => x.rms_norm([self.dim], Some(&self.w), self.eps),
        }
    }

    /// A model cast to bf16/fp16 ([`Transformer::cast`]): normalise in fp32, then scale in
    /// the weights' kind, as `transformers` does (half-precision statistics over a
    /// 576-wide row lose enough to derail a 30-layer model's greedy decoding).
    fn forward_half(&self, x: &Tensor) -> Tensor {
        let kind = self.w.kind();
        let xf = x.to_kind(Kind::Float);
        let n = match self.kind {
            Norm::LayerNorm => {
                xf.layer_norm([self.dim], None::<Tensor>, None::<Tensor>, self.eps, true)
            }
            Norm::RmsNorm => xf.rms_norm([self.dim], None::<Tensor>, self.eps),
        };
        let y = n.to_kind(kind) * &self.w;
        match &self.b {
            Some(b) => y + b,
            None => y,
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
    /// The GELU approximation for `fc`: `"tanh"` (GPT-2) or `"none"` (exact erf, BERT).
    gelu: &'static str,
}

/// Keys and values of every layer for the tokens seen so far, preallocated for `capacity`
/// positions. Rows of a batch share one length; padding is described by the key mask
/// passed with each step.
pub struct KvCache {
    k: Vec<Tensor>,
    v: Vec<Tensor>,
    len: i64,
    capacity: i64,
}

impl std::fmt::Debug for KvCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvCache")
            .field("layers", &self.k.len())
            .field("len", &self.len)
            .field("capacity", &self.capacity)
            .finish()
    }
}

impl KvCache {
    /// Positions cached so far.
    pub fn len(&self) -> i64 {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// Positions the cache can hold.
    pub fn capacity(&self) -> i64 {
        self.capacity
    }
    /// Keeps only the batch rows in `rows` (int64 indices), e.g. to drop finished sequences.
    pub fn select_rows(&mut self, rows: &Tensor) {
        for t in self.k.iter_mut().chain(self.v.iter_mut()) {
            *t = t.index_select(0, rows);
        }
    }
}

/// One forward pass's inputs beyond the token ids.
#[derive(Default)]
pub struct Extras<'a> {
    /// Positions `[B, T]` (int64). Default: `past .. past + T` for every row.
    pub positions: Option<&'a Tensor>,
    /// Token types `[B, T]` (int64), for models with `type_vocab_size > 0`. Default: zeros.
    pub token_types: Option<&'a Tensor>,
    /// Which keys are real tokens, `[B, past + T]` (bool or 0/1 ints), covering the cached
    /// positions too. Default: all.
    pub key_mask: Option<&'a Tensor>,
    /// Segment ids `[B, T]` (int64) of rows that pack several sequences (packed `sft`
    /// conversations): a query attends only to keys of its own segment, so with `causal`
    /// the attention is block-diagonal causal. Give each sequence its own positions too
    /// ([`positions_from_segments`]). Not with a KV cache. Default: one segment per row.
    pub segments: Option<&'a Tensor>,
}

/// What every block of one forward pass shares: rotary tables for its positions, the
/// attention mask, the decoding kernel's step, `(b, t, past, total)`, dropout.
struct BlockCtx {
    rope: Option<(Tensor, Tensor)>,
    mask: Option<Tensor>,
    step: Option<kernels::DecodeStep>,
    dims: (i64, i64, i64, i64),
    p: f64,
    train: bool,
    is_causal: bool,
}

/// A transformer of any family (see the module docs).
pub struct Transformer {
    cfg: ModelConfig,
    seq_len: i64,
    vocab: i64,
    tok_emb: Tensor,
    pos_emb: Option<Tensor>,
    type_emb: Option<Tensor>,
    emb_norm: Option<NormLayer>,
    blocks: Vec<Block>,
    ln_f: Option<NormLayer>,
    lm_head: Option<Tensor>,
    /// The untied output projection on a low-bit product ([`Transformer::use_quantized`]).
    head_low: Option<LowBit>,
    /// The classification head, when `cfg.head` is set.
    head: Option<ClsHead>,
    /// BERT's masked-LM head, when `cfg.mlm_head` is set.
    mlm_head: Option<MlmHead>,
    /// `(cos, sin)` of shape `[seq_len, head_dim]`, for rotary positions.
    rope: Option<(Tensor, Tensor)>,
    store: ParamStore,
    /// LoRA: the config and the adapters' parameters, when [`Transformer::add_lora`] added
    /// them.
    lora: Option<(LoraConfig, ParamStore)>,
    device: Device,
    /// Kind of the activations and weights (fp32 unless [`Transformer::cast`] changed it).
    kind: Kind,
    /// Pruned weights and their keep-masks (`cfg.pruned`), re-applied after every
    /// optimizer step ([`Transformer::apply_masks`]).
    masks: Vec<(Tensor, Tensor)>,
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
    ///
    /// # Panics
    /// When `seq_len` or `vocab_size` is unset or the config is invalid: callers validate
    /// the config first ([`ModelConfig::validate`]); use [`Transformer::try_new`] otherwise.
    pub fn new(cfg: &ModelConfig, device: Device) -> Self {
        Self::try_new(cfg, device).expect("a validated model config")
    }

    /// [`Transformer::new`], returning config errors instead of panicking.
    pub fn try_new(cfg: &ModelConfig, device: Device) -> Result<Self> {
        let _guard = tch::no_grad_guard();
        Self::build(cfg, device, Source::Init)
    }

    /// Builds a model from named weights (a checkpoint, an import), checking that every
    /// tensor is there with the shape the config implies, and that none is left over.
    /// `file` names the weights in errors.
    pub fn from_weights(
        cfg: &ModelConfig,
        device: Device,
        weights: &HashMap<String, Tensor>,
        file: &Path,
    ) -> Result<Self> {
        let _guard = tch::no_grad_guard();
        let m = Self::build(cfg, device, Source::Weights { map: weights, file })?;
        if weights.len() != m.store.params.len() {
            let mut extra: Vec<&String> = weights
                .keys()
                .filter(|k| m.store.get(k).is_none())
                .collect();
            extra.sort();
            return Err(Error::bad_input(
                Place::file(file),
                format!(
                    "{} tensor(s) the model's config has no place for, e.g. `{}`: weights of a different model?",
                    extra.len(),
                    extra.first().map(|s| s.as_str()).unwrap_or("?")
                ),
            ));
        }
        Ok(m)
    }

    fn build(cfg: &ModelConfig, device: Device, source: Source<'_>) -> Result<Self> {
        cfg.validate()?;
        let (seq_len, vocab) = cfg.resolved_sizes()?;
        let d = cfg.dim as i64;
        let h = cfg.hidden() as i64;
        let hd = cfg.head_dim() as i64;
        let qkv_rows = (cfg.heads + 2 * cfg.kv_heads()) as i64 * hd;
        let std = cfg.init_std;
        // GPT-2: residual projections scaled by 1/sqrt(2 * layers).
        let proj_std = std / (2.0 * cfg.layers as f64).sqrt();
        let eps = cfg.norm_eps();
        let mut bld = Builder {
            source,
            store: ParamStore::default(),
            device,
            used: 0,
        };
        let linear = |b: &mut Builder, name: &str, out: i64, inp: i64, s: f64| -> Result<Linear> {
            Ok(Linear {
                name: format!("{name}.weight"),
                tap: None,
                low: None,
                w: b.add(
                    format!("{name}.weight"),
                    &[out, inp],
                    Init::Normal(s),
                    Role::Matrix,
                )?,
                b: if cfg.bias {
                    Some(b.add(
                        format!("{name}.bias"),
                        &[out],
                        Init::Zeros,
                        Role::NormOrBias,
                    )?)
                } else {
                    None
                },
                lora: Vec::new(),
            })
        };
        let norm = |b: &mut Builder, name: &str| -> Result<NormLayer> {
            Ok(NormLayer {
                kind: cfg.norm,
                w: b.add(format!("{name}.weight"), &[d], Init::Ones, Role::NormOrBias)?,
                b: if cfg.bias && cfg.norm == Norm::LayerNorm {
                    Some(b.add(format!("{name}.bias"), &[d], Init::Zeros, Role::NormOrBias)?)
                } else {
                    None
                },
                dim: d,
                eps,
            })
        };
        let tok_emb = bld.add(
            "tok_emb.weight".into(),
            &[vocab, d],
            Init::Normal(std),
            Role::Embedding,
        )?;
        let pos_emb = if cfg.positions == Positions::Learned {
            Some(bld.add(
                "pos_emb.weight".into(),
                &[seq_len, d],
                Init::Normal(std),
                Role::Embedding,
            )?)
        } else {
            None
        };
        let type_emb = if cfg.type_vocab_size > 0 {
            Some(bld.add(
                "type_emb.weight".into(),
                &[cfg.type_vocab_size as i64, d],
                Init::Normal(std),
                Role::Embedding,
            )?)
        } else {
            None
        };
        let emb_norm = if cfg.post_norm {
            Some(norm(&mut bld, "emb_norm")?)
        } else {
            None
        };
        let mut blocks = Vec::with_capacity(cfg.layers);
        for i in 0..cfg.layers {
            let p = format!("blocks.{i}");
            let ln1 = norm(&mut bld, &format!("{p}.ln1"))?;
            let qkv = linear(&mut bld, &format!("{p}.attn.qkv"), qkv_rows, d, std)?;
            let proj = linear(&mut bld, &format!("{p}.attn.proj"), d, d, proj_std)?;
            let ln2 = norm(&mut bld, &format!("{p}.ln2"))?;
            let (fc, up) = match cfg.mlp {
                Mlp::Gelu | Mlp::GeluErf => {
                    (linear(&mut bld, &format!("{p}.mlp.fc"), h, d, std)?, None)
                }
                Mlp::SwiGlu => (
                    linear(&mut bld, &format!("{p}.mlp.gate"), h, d, std)?,
                    Some(linear(&mut bld, &format!("{p}.mlp.up"), h, d, std)?),
                ),
            };
            let out = linear(&mut bld, &format!("{p}.mlp.out"), d, h, proj_std)?;
            blocks.push(Block {
                ln1,
                qkv,
                proj,
                ln2,
                fc,
                up,
                out,
                gelu: if cfg.mlp == Mlp::GeluErf {
                    "none"
                } else {
                    "tanh"
                },
            });
        }
        let ln_f = if cfg.post_norm {
            None
        } else {
            Some(norm(&mut bld, "ln_f")?)
        };
        let lm_head = if cfg.tie_embeddings {
            None
        } else {
            Some(bld.add(
                "lm_head.weight".into(),
                &[vocab, d],
                Init::Normal(std),
                Role::Matrix,
            )?)
        };
        let mlm_head = if cfg.has_mlm_head() {
            let zeros_d = |b: &mut Builder, name: &str| {
                b.add(name.into(), &[d], Init::Zeros, Role::NormOrBias)
            };
            Some(MlmHead {
                dense_w: bld.add(
                    "mlm_head.dense.weight".into(),
                    &[d, d],
                    Init::Normal(std),
                    Role::Matrix,
                )?,
                dense_b: zeros_d(&mut bld, "mlm_head.dense.bias")?,
                norm_w: bld.add(
                    "mlm_head.norm.weight".into(),
                    &[d],
                    Init::Ones,
                    Role::NormOrBias,
                )?,
                norm_b: zeros_d(&mut bld, "mlm_head.norm.bias")?,
                bias: bld.add(
                    "mlm_head.bias".into(),
                    &[vocab],
                    Init::Zeros,
                    Role::NormOrBias,
                )?,
                gelu: if cfg.mlp == Mlp::Gelu { "tanh" } else { "none" },
                eps,
            })
        } else {
            None
        };
        let head = match &cfg.head {
            Some(hc) => {
                let pooler = if hc.pooler {
                    Some((
                        bld.add(
                            "head.pooler.weight".into(),
                            &[d, d],
                            Init::Normal(std),
                            Role::Matrix,
                        )?,
                        bld.add(
                            "head.pooler.bias".into(),
                            &[d],
                            Init::Zeros,
                            Role::NormOrBias,
                        )?,
                    ))
                } else {
                    None
                };
                let n = hc.num_labels as i64;
                let w = bld.add(
                    "head.out.weight".into(),
                    &[n, d],
                    Init::Normal(std),
                    Role::Matrix,
                )?;
                let b = if cfg.bias {
                    Some(bld.add("head.out.bias".into(), &[n], Init::Zeros, Role::NormOrBias)?)
                } else {
                    None
                };
                Some(ClsHead {
                    cfg: hc.clone(),
                    pooler,
                    w,
                    b,
                })
            }
            None => None,
        };
        let rope = (cfg.positions == Positions::Rotary).then(|| rope_tables(cfg, seq_len, device));
        let mut masks = Vec::with_capacity(cfg.pruned.len());
        for name in &cfg.pruned {
            let w = bld.store.get(name).ok_or_else(|| {
                Error::bad_config(
                    "model.pruned",
                    format!("`{name}` is not a weight of this model"),
                )
            })?;
            masks.push((w.shallow_clone(), w.ne(0.0)));
        }
        Ok(Transformer {
            masks,
            cfg: cfg.clone(),
            seq_len,
            vocab,
            tok_emb,
            pos_emb,
            type_emb,
            emb_norm,
            blocks,
            ln_f,
            lm_head,
            head_low: None,
            head,
            mlm_head,
            rope,
            store: bld.store,
            lora: None,
            device,
            kind: Kind::Float,
        })
    }

    pub fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    fn linears_mut(&mut self) -> impl Iterator<Item = &mut Linear> {
        self.blocks.iter_mut().flat_map(|b| {
            [
                Some(&mut b.qkv),
                Some(&mut b.proj),
                Some(&mut b.fc),
                b.up.as_mut(),
                Some(&mut b.out),
            ]
            .into_iter()
            .flatten()
        })
    }

    /// Starts collecting calibration statistics of the inputs of every block matrix
    /// ([`crate::compress`]): from now on each forward pass adds its inputs to the returned
    /// taps (with the Gram matrix when `gram`) until [`Transformer::clear_taps`].
    pub fn set_taps(&mut self, gram: bool) -> Taps {
        self.set_taps_on(gram, |_| true)
    }

    /// [`Transformer::set_taps`] on the block matrices whose weight name passes `which`.
    pub fn set_taps_on(&mut self, gram: bool, which: impl Fn(&str) -> bool) -> Taps {
        let mut taps = Taps::new();
        for l in self.linears_mut().filter(|l| which(&l.name)) {
            let k = l.w.size()[1];
            let tap = Arc::new(Mutex::new(Tap::new(k, gram)));
            taps.insert(l.name.clone(), tap.clone());
            l.tap = Some(tap);
        }
        taps
    }

    /// Overwrites the block matrix `name` (`blocks.0.attn.qkv.weight`) with `w` of the same
    /// shape, in place: the model computes with it from the next pass on.
    pub fn set_weight(&mut self, name: &str, w: &Tensor) -> Result<()> {
        let l = self
            .linears_mut()
            .find(|l| l.name == name)
            .ok_or_else(|| Error::usage(format!("no block matrix `{name}` in the model")))?;
        if l.w.size() != w.size() {
            return Err(Error::usage(format!(
                "`{name}` has shape {:?}, the replacement {:?}",
                l.w.size(),
                w.size()
            )));
        }
        let _g = tch::no_grad_guard();
        l.w.copy_(w);
        Ok(())
    }

    /// Stops collecting calibration statistics.
    pub fn clear_taps(&mut self) {
        for l in self.linears_mut() {
            l.tap = None;
        }
    }

    /// Takes the pruned weights' masks (`cfg.pruned`) from their zeros now: after weights
    /// were copied into the model (a run's `init.from`, a resumed checkpoint).
    pub fn refresh_masks(&mut self) {
        let _g = tch::no_grad_guard();
        for (w, keep) in &mut self.masks {
            *keep = Tensor::ne(w, 0.0);
        }
    }

    /// Zeroes the pruned weights again (`cfg.pruned`): the trainer calls it after every
    /// optimizer step, so pruned weights stay zero through further training.
    pub fn apply_masks(&mut self) {
        let _g = tch::no_grad_guard();
        for (w, keep) in &mut self.masks {
            let _ = w.f_mul_(&keep.to_kind(w.kind()));
        }
    }

    /// How many block matrices run on low-bit kernels ([`Transformer::use_quantized`]).
    pub fn low_bit_matrices(&self) -> usize {
        self.blocks
            .iter()
            .flat_map(|b| {
                [
                    Some(&b.qkv),
                    Some(&b.proj),
                    Some(&b.fc),
                    b.up.as_ref(),
                    Some(&b.out),
                ]
            })
            .flatten()
            .filter(|l| l.low.is_some())
            .count()
            + usize::from(self.head_low.is_some())
    }

    /// Runs the block matrices that `quant` holds, and an untied output projection it holds
    /// ([`crate::compress::HEAD`]), on low-bit matrix products (int8: the decoding kernel for
    /// one to eight rows, libtorch's beyond; int4: libtorch's) instead of their f32 weights
    /// (CPU; inference only: no gradient reaches the codes).
    /// Returns how many matrices run low-bit; those the kernels cannot take (int4 with
    /// outputs not a multiple of 16) keep their dequantized weights.
    pub fn use_quantized(&mut self, quant: &HashMap<String, QuantTensor>) -> Result<usize> {
        if self.device != Device::Cpu {
            return Err(Error::usage(
                "low-bit matrix products run on the CPU; on a GPU the quantized model runs dequantized",
            ));
        }
        if self.lora.is_some() {
            return Err(Error::usage(
                "low-bit matrix products do not take LoRA adapters: merge them first",
            ));
        }
        let _g = tch::no_grad_guard();
        let mut n = 0;
        for l in self.linears_mut() {
            if let Some(q) = quant.get(&l.name) {
                l.low = LowBit::from_quant(q);
                n += usize::from(l.low.is_some());
            }
        }
        if let (Some(_), Some(q), None) = (
            &self.lm_head,
            quant.get(crate::compress::HEAD),
            &self.mlm_head,
        ) {
            self.head_low = LowBit::from_quant(q);
            n += usize::from(self.head_low.is_some());
        }
        Ok(n)
    }
    pub fn device(&self) -> Device {
        self.device
    }
    /// The context length: the longest sequence (prompt and generated tokens) it takes.
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

    /// The parameters training updates: the LoRA adapters when the model has them (the
    /// base weights are then frozen), else every parameter.
    pub fn trainable(&self) -> &ParamStore {
        self.lora.as_ref().map_or(&self.store, |(_, s)| s)
    }
    pub fn trainable_mut(&mut self) -> &mut ParamStore {
        match &mut self.lora {
            Some((_, s)) => s,
            None => &mut self.store,
        }
    }

    /// The LoRA config, when the model has adapters.
    pub fn lora(&self) -> Option<&LoraConfig> {
        self.lora.as_ref().map(|(c, _)| c)
    }

    /// Runs `f` on the model with its LoRA adapters set aside (the base model, as peft's
    /// `disable_adapter`), then puts them back: a reference model for free.
    pub fn without_adapters<T>(&mut self, f: impl FnOnce(&Transformer) -> T) -> T {
        let saved: Vec<Vec<Adapter>> = self
            .linears_mut()
            .map(|l| std::mem::take(&mut l.lora))
            .collect();
        let out = f(self);
        for (l, a) in self.linears_mut().zip(saved) {
            l.lora = a;
        }
        out
    }

    /// Adds fresh LoRA adapters (`A` uniform in `±1/√in` from libtorch's global generator,
    /// `B` zero, so the outputs do not change) on the layers `lora.targets` names, in every
    /// block, and freezes every other parameter. Errors name the `lora.*` key at fault (a
    /// target the model does not have lists those it has).
    pub fn add_lora(&mut self, lora: &LoraConfig) -> Result<()> {
        if self.lora.is_some() {
            return Err(Error::usage("the model already has LoRA adapters"));
        }
        let targets = lora.resolve(&self.cfg)?;
        let _g = tch::no_grad_guard();
        let mut store = ParamStore::default();
        for p in &self.store.params {
            // The classification and MLM heads are new to the task (or fresh): they train
            // with the adapters.
            if p.name.starts_with(crate::head::PREFIX)
                || p.name.starts_with(crate::mlm_head::PREFIX)
            {
                store.params.push(Param {
                    name: p.name.clone(),
                    tensor: p.tensor.shallow_clone(),
                    role: p.role,
                });
            } else {
                let _ = p.tensor.set_requires_grad(false);
            }
        }
        let r = lora.rank as i64;
        let opts = (self.kind, self.device);
        for (i, blk) in self.blocks.iter_mut().enumerate() {
            for &t in &targets {
                let (offset, rows) = t.rows(&self.cfg);
                let inp = t.in_features(&self.cfg);
                let bound = 1.0 / (inp as f64).sqrt();
                let a = Tensor::empty([r, inp], opts)
                    .uniform_(-bound, bound)
                    .set_requires_grad(true);
                let b = Tensor::zeros([rows, r], opts).set_requires_grad(true);
                let prefix = t.prefix(i);
                for (suffix, tensor) in [("lora_a", &a), ("lora_b", &b)] {
                    store.params.push(Param {
                        name: format!("{prefix}.{suffix}"),
                        tensor: tensor.shallow_clone(),
                        role: Role::Matrix,
                    });
                }
                let layer = match t {
                    Target::Q | Target::K | Target::V => &mut blk.qkv,
                    Target::Proj => &mut blk.proj,
                    Target::Fc | Target::Gate => &mut blk.fc,
                    Target::Up => blk.up.as_mut().ok_or_else(|| {
                        Error::bug("an `up` target resolved for a model without mlp.up")
                    })?,
                    Target::Out => &mut blk.out,
                };
                layer.lora.push(Adapter {
                    target: t,
                    offset,
                    rows,
                    a,
                    b,
                    scale: lora.scale(),
                    dropout: lora.dropout,
                });
                layer.lora.sort_by_key(|ad| ad.offset);
            }
        }
        self.lora = Some((lora.clone(), store));
        Ok(())
    }
    /// The kind the weights and activations are in.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// Converts every weight to `kind` (e.g. bf16 for inference on GPU), in place, without
    /// gradients. Norms compute their statistics in fp32 (see `NormLayer::forward_half`).
    pub fn cast(&mut self, kind: Kind) {
        if kind == self.kind {
            return;
        }
        let _g = tch::no_grad_guard();
        let mut converted: HashMap<String, Tensor> = HashMap::new();
        let adapters = self.lora.as_mut().map(|(_, s)| &mut s.params);
        for p in self
            .store
            .params
            .iter_mut()
            .chain(adapters.into_iter().flatten())
        {
            // A head parameter is in both stores: convert it once, so both hold one tensor.
            p.tensor = match converted.get(&p.name) {
                Some(c) => c.shallow_clone(),
                None => p.tensor.to_kind(kind),
            };
            converted.insert(p.name.clone(), p.tensor.shallow_clone());
        }
        self.visit_mut(&mut |name, t| {
            if let Some(c) = converted.get(&name) {
                *t = c.shallow_clone();
            }
        });
        if let Some((c, s)) = self.rope.as_mut() {
            *c = c.to_kind(kind);
            *s = s.to_kind(kind);
        }
        for (name, (w, _)) in self.cfg.pruned.iter().zip(self.masks.iter_mut()) {
            if let Some(c) = converted.get(name) {
                *w = c.shallow_clone();
            }
        }
        self.kind = kind;
    }

    /// Calls `f` with every parameter's name and the field holding it.
    fn visit_mut(&mut self, f: &mut dyn FnMut(String, &mut Tensor)) {
        f("tok_emb.weight".into(), &mut self.tok_emb);
        if let Some(t) = &mut self.pos_emb {
            f("pos_emb.weight".into(), t);
        }
        if let Some(t) = &mut self.type_emb {
            f("type_emb.weight".into(), t);
        }
        if let Some(t) = &mut self.lm_head {
            f("lm_head.weight".into(), t);
        }
        if let Some(m) = &mut self.mlm_head {
            f("mlm_head.dense.weight".into(), &mut m.dense_w);
            f("mlm_head.dense.bias".into(), &mut m.dense_b);
            f("mlm_head.norm.weight".into(), &mut m.norm_w);
            f("mlm_head.norm.bias".into(), &mut m.norm_b);
            f("mlm_head.bias".into(), &mut m.bias);
        }
        if let Some(h) = &mut self.head {
            if let Some((w, b)) = &mut h.pooler {
                f("head.pooler.weight".into(), w);
                f("head.pooler.bias".into(), b);
            }
            f("head.out.weight".into(), &mut h.w);
            if let Some(b) = &mut h.b {
                f("head.out.bias".into(), b);
            }
        }
        fn norm(f: &mut dyn FnMut(String, &mut Tensor), name: &str, n: &mut NormLayer) {
            f(format!("{name}.weight"), &mut n.w);
            if let Some(b) = &mut n.b {
                f(format!("{name}.bias"), b);
            }
        }
        /// A linear layer of block `block`, with its adapters.
        fn lin(f: &mut dyn FnMut(String, &mut Tensor), block: usize, name: &str, l: &mut Linear) {
            f(format!("{name}.weight"), &mut l.w);
            if let Some(b) = &mut l.b {
                f(format!("{name}.bias"), b);
            }
            for ad in &mut l.lora {
                let p = ad.target.prefix(block);
                f(format!("{p}.lora_a"), &mut ad.a);
                f(format!("{p}.lora_b"), &mut ad.b);
            }
        }
        if let Some(n) = &mut self.emb_norm {
            norm(f, "emb_norm", n);
        }
        if let Some(n) = &mut self.ln_f {
            norm(f, "ln_f", n);
        }
        for (i, b) in self.blocks.iter_mut().enumerate() {
            norm(f, &format!("blocks.{i}.ln1"), &mut b.ln1);
            norm(f, &format!("blocks.{i}.ln2"), &mut b.ln2);
            lin(f, i, &format!("blocks.{i}.attn.qkv"), &mut b.qkv);
            lin(f, i, &format!("blocks.{i}.attn.proj"), &mut b.proj);
            let fc = if b.up.is_some() { "mlp.gate" } else { "mlp.fc" };
            lin(f, i, &format!("blocks.{i}.{fc}"), &mut b.fc);
            if let Some(u) = &mut b.up {
                lin(f, i, &format!("blocks.{i}.mlp.up"), u);
            }
            lin(f, i, &format!("blocks.{i}.mlp.out"), &mut b.out);
        }
    }

    /// Model FLOPs per trained token (forward + backward), the usual `6 N + 12 L D T`
    /// estimate with `N` the parameters other than position embeddings.
    pub fn flops_per_token(&self, seq: i64) -> f64 {
        let pos = self.pos_emb.as_ref().map_or(0, |p| p.numel() as i64);
        let n = (self.store.numel() - pos) as f64;
        6.0 * n + 12.0 * self.cfg.layers as f64 * self.cfg.dim as f64 * seq as f64
    }

    /// Bytes of weights a decoding step reads (every parameter once; the tied embedding
    /// once as the output projection, the input embedding only a row per token).
    pub fn weight_bytes_per_token(&self) -> f64 {
        let elt = self.kind.elt_size_in_bytes() as f64;
        let pos = self.pos_emb.as_ref().map_or(0, |p| p.numel() as i64);
        let emb_in = if self.lm_head.is_some() {
            self.tok_emb.numel() as i64
        } else {
            0
        };
        // Matrices on low-bit kernels read their codes and scales instead.
        let mut low_saved = 0.0;
        for b in &self.blocks {
            for l in [
                Some(&b.qkv),
                Some(&b.proj),
                Some(&b.fc),
                b.up.as_ref(),
                Some(&b.out),
            ]
            .into_iter()
            .flatten()
            {
                if let Some(low) = &l.low {
                    low_saved += l.w.numel() as f64 * elt - low.bytes();
                }
            }
        }
        if let (Some(h), Some(low)) = (&self.lm_head, &self.head_low) {
            low_saved += h.numel() as f64 * elt - low.bytes();
        }
        (self.store.numel() - pos - emb_in) as f64 * elt - low_saved
    }

    /// A KV cache for `batch` rows and up to `capacity` positions (at most `seq_len`).
    pub fn new_cache(&self, batch: i64, capacity: i64) -> KvCache {
        let kv = self.cfg.kv_heads() as i64;
        let hd = self.cfg.head_dim() as i64;
        let capacity = capacity.min(self.seq_len).max(1);
        let make = || {
            (0..self.blocks.len())
                .map(|_| Tensor::zeros([batch, kv, capacity, hd], (self.kind, self.device)))
                .collect::<Vec<_>>()
        };
        KvCache {
            k: make(),
            v: make(),
            len: 0,
            capacity,
        }
    }

    /// Logits `[B, T, vocab]` for token ids `[B, T]` (int64). `causal` picks decoder or
    /// encoder attention; `train` turns dropout on.
    ///
    /// # Panics
    /// When the ids are not `[B, T]` or longer than `seq_len`: the trainer's rows are checked
    /// against the config before training. [`Transformer::try_forward`] returns errors.
    pub fn forward(&self, idx: &Tensor, causal: bool, train: bool) -> Tensor {
        let h = self
            .hidden(idx, &Extras::default(), causal, train, None)
            .unwrap_or_else(|e| panic!("{e}"));
        self.logits(&h)
    }

    /// [`Transformer::forward`] with positions, token types, a key mask and a cache; errors
    /// instead of panics for inputs that do not fit.
    pub fn try_forward(
        &self,
        idx: &Tensor,
        extras: &Extras<'_>,
        causal: bool,
        cache: Option<&mut KvCache>,
    ) -> Result<Tensor> {
        let h = self.hidden(idx, extras, causal, false, cache)?;
        Ok(self.logits(&h))
    }

    /// Class logits `[B, num_labels]` (fp32) of rows `idx` `[B, T]` from the classification
    /// head ([`crate::head`]). `mask` `[B, T]` (nonzero = a real token) marks the padding,
    /// on either side: positions are counted over real tokens and padding is never
    /// attended to, so a row's logits do not depend on its padding. Decoders run causally,
    /// encoders (post-norm) bidirectionally. `train` turns dropout on. An error when the
    /// model has no head or the rows do not fit.
    pub fn classify(&self, idx: &Tensor, mask: &Tensor, train: bool) -> Result<Tensor> {
        let head = self.head.as_ref().ok_or_else(|| {
            Error::usage(
                "the model has no classification head: train one with train.objective = \"cls\"",
            )
        })?;
        if mask.size() != idx.size() {
            return Err(Error::usage(format!(
                "mask has shape {:?}, the ids {:?}",
                mask.size(),
                idx.size()
            )));
        }
        let mask = mask.to_device(self.device);
        let full = mask.ne(0).all().int64_value(&[]) != 0;
        let positions = crate::head::positions_from_mask(&mask);
        let extras = if full {
            Extras::default()
        } else {
            Extras {
                positions: Some(&positions),
                key_mask: Some(&mask),
                ..Extras::default()
            }
        };
        let h = self.hidden(idx, &extras, crate::head::causal(&self.cfg), train, None)?;
        Ok(head.forward(&h, &mask).to_kind(Kind::Float))
    }

    /// The classification head's config, when the model has one.
    pub fn head(&self) -> Option<&crate::head::HeadConfig> {
        self.head.as_ref().map(|h| &h.cfg)
    }

    /// Output projection of hidden states `[.., dim]` to logits `[.., vocab]`: through
    /// BERT's MLM head first when the model has one ([`crate::mlm_head`]).
    pub fn logits(&self, hidden: &Tensor) -> Tensor {
        let out = self.lm_head.as_ref().unwrap_or(&self.tok_emb);
        match (&self.mlm_head, &self.head_low) {
            (Some(m), _) => m.logits(hidden, out),
            (None, Some(low)) => low.product(hidden),
            (None, None) => kernels::linear(hidden, kernels::Weight::F32(out), None)
                .unwrap_or_else(|| hidden.linear(out, None::<Tensor>)),
        }
    }

    /// Class logits `[B, num_labels]` (fp32) of the classification head on hidden states
    /// `[B, T, dim]` the caller computed, with the key mask `[B, T]` (nonzero = a real
    /// token) for pooling: one encoder pass can then feed both the MLM and the NSP heads
    /// (`train.objective = "nsp"`). An error when the model has no head.
    pub fn classify_hidden(&self, hidden: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let head = self.head.as_ref().ok_or_else(|| {
            Error::usage("the model has no classification head (for nsp: the NSP head)")
        })?;
        Ok(head.forward(hidden, mask).to_kind(Kind::Float))
    }

    /// The last hidden states `[B, T, dim]` (after the final norm in pre-norm models; the
    /// last block's output in post-norm ones, as BERT's `last_hidden_state`). With a cache,
    /// `idx` holds only the new tokens; their keys and values are appended to it.
    // `x = x + ...`, not `x += ...`: tch's `+=` adds in place, which would overwrite
    // activations autograd saved for the backward pass.
    #[allow(clippy::assign_op_pattern)]
    pub fn hidden(
        &self,
        idx: &Tensor,
        extras: &Extras<'_>,
        causal: bool,
        train: bool,
        mut cache: Option<&mut KvCache>,
    ) -> Result<Tensor> {
        let past = cache.as_ref().map_or(0, |c| c.len);
        let (b, t) = self.check_ids(idx, past)?;
        let total = past + t;
        if let Some(c) = cache.as_ref() {
            if total > c.capacity {
                return Err(Error::usage(format!(
                    "{total} tokens do not fit the KV cache of {} positions",
                    c.capacity
                )));
            }
        }
        let hd = self.cfg.head_dim() as i64;
        let p = if train { self.cfg.dropout } else { 0.0 };

        let positions: Option<Tensor> = extras.positions.map(|p| p.to_device(self.device));
        let mut x = self.embeddings(idx, positions.as_ref(), extras.token_types, past);
        x = drop(x, p, train);
        let rope = self.rope.as_ref().map(|(c, s)| match &positions {
            Some(ids) => {
                let shape = [b, 1, t, hd];
                (
                    c.index_select(0, &ids.reshape([-1])).view(shape),
                    s.index_select(0, &ids.reshape([-1])).view(shape),
                )
            }
            None => (c.narrow(0, past, t), s.narrow(0, past, t)),
        });
        // The attention mask, built once: `None` lets SDPA use its causal (or full) path.
        if extras.segments.is_some() && (past > 0 || cache.is_some()) {
            return Err(Error::usage(
                "segment ids (packed sequences) cannot be used with a KV cache",
            ));
        }
        let mask = self.attention_mask(extras.key_mask, extras.segments, b, t, past, causal)?;
        let is_causal = causal && mask.is_none() && past == 0 && t > 1;
        // One new token per row after a cache, at inference: the decoding kernel's
        // attention, which rotates, caches and attends in one call per layer.
        let step = match &cache {
            Some(_) if t == 1 && causal && p == 0.0 && self.kind == Kind::Float => {
                kernels::DecodeStep::new(
                    b,
                    past,
                    self.rope.as_ref().map(|(c, s)| (c, s)),
                    positions.as_ref(),
                    mask.as_ref(),
                )
            }
            _ => None,
        };
        let ctx = BlockCtx {
            rope,
            mask,
            step,
            dims: (b, t, past, total),
            p,
            train,
            is_causal,
        };
        for i in 0..self.blocks.len() {
            x = self.block_step(i, x, &ctx, cache.as_deref_mut());
        }
        if let Some(c) = cache {
            c.len = total;
        }
        Ok(match &self.ln_f {
            Some(n) => n.forward(&x),
            None => x,
        })
    }

    /// The input embeddings of `idx [b, t]` (tokens, positions, token types, embedding
    /// norm; no dropout), at `positions` or from `past` on.
    fn embeddings(
        &self,
        idx: &Tensor,
        positions: Option<&Tensor>,
        token_types: Option<&Tensor>,
        past: i64,
    ) -> Tensor {
        let t = idx.size().last().copied().unwrap_or(0);
        let mut x = Tensor::embedding(&self.tok_emb, idx, -1, false, false);
        if let Some(pos) = &self.pos_emb {
            x = match positions {
                Some(ids) => x + Tensor::embedding(pos, ids, -1, false, false),
                None => x + pos.narrow(0, past, t),
            };
        }
        if let Some(te) = &self.type_emb {
            x = match token_types {
                Some(ids) => x + Tensor::embedding(te, ids, -1, false, false),
                None => x + te.get(0),
            };
        }
        if let Some(n) = &self.emb_norm {
            x = n.forward(&x);
        }
        x
    }

    /// Block `i` on the residual stream `x`.
    fn block_step(
        &self,
        i: usize,
        x: Tensor,
        ctx: &BlockCtx,
        cache: Option<&mut KvCache>,
    ) -> Tensor {
        let blk = &self.blocks[i];
        let (heads, kvh, hd) = (
            self.cfg.heads as i64,
            self.cfg.kv_heads() as i64,
            self.cfg.head_dim() as i64,
        );
        let (p, train) = (ctx.p, ctx.train);
        let hin = if self.cfg.post_norm {
            x.shallow_clone()
        } else {
            blk.ln1.forward(&x)
        };
        let qkv = blk.qkv.forward(&hin, train);
        let fast = match (&ctx.step, cache.as_deref()) {
            (Some(st), Some(c)) => {
                kernels::decode_attention(&qkv, heads, kvh, hd, st, &c.k[i], &c.v[i])
            }
            _ => None,
        };
        let attn = match fast {
            Some(y) => y,
            None => self.attention(
                &qkv,
                ctx.rope.as_ref(),
                cache,
                i,
                ctx.dims,
                ctx.mask.as_ref(),
                (p, ctx.is_causal),
            ),
        };
        let y = blk.proj.forward(&attn, train);
        if self.cfg.post_norm {
            let x = blk.ln1.forward(&(x + drop(y, p, train)));
            let m = mlp(blk, &x, train);
            blk.ln2.forward(&(x + drop(m, p, train)))
        } else {
            let x = x + drop(y, p, train);
            let m = mlp(blk, &blk.ln2.forward(&x), train);
            x + drop(m, p, train)
        }
    }

    /// Layer-by-layer inference for calibration ([`crate::compress`]): the input embeddings
    /// of `idx [b, t]` (positions from 0, token type 0), the residual stream that
    /// [`Transformer::block_forward`] carries through the blocks one at a time.
    pub fn embed(&self, idx: &Tensor) -> Result<Tensor> {
        self.check_ids(idx, 0)?;
        Ok(self.embeddings(idx, None, None, 0))
    }

    /// `(batch, seq)` of token ids `[batch, seq]` that fit the context after `past` cached
    /// positions.
    fn check_ids(&self, idx: &Tensor, past: i64) -> Result<(i64, i64)> {
        let (b, t) = idx.size2().map_err(|_| {
            Error::usage(format!(
                "token ids must be [batch, seq], got {:?}",
                idx.size()
            ))
        })?;
        let total = past + t;
        if total > self.seq_len {
            return Err(Error::usage(format!(
                "{total} tokens do not fit the model's context of {} (model.seq_len)",
                self.seq_len
            )));
        }
        Ok((b, t))
    }

    /// Block `i` (0-based) at inference on the residual stream `x [b, t, dim]` from
    /// [`Transformer::embed`] or the block before, without padding or a cache; `causal` as in
    /// [`Transformer::forward`]. Taps set on the block's matrices see their inputs.
    pub fn block_forward(&self, i: usize, x: &Tensor, causal: bool) -> Result<Tensor> {
        if i >= self.blocks.len() {
            return Err(Error::usage(format!(
                "block {i} of a model with {} blocks",
                self.blocks.len()
            )));
        }
        let (b, t) = match x.size().as_slice() {
            [b, t, d] if *d == self.cfg.dim as i64 && *t <= self.seq_len => (*b, *t),
            s => {
                return Err(Error::usage(format!(
                    "a residual stream of shape {s:?}, expected [batch, <= {}, {}]",
                    self.seq_len, self.cfg.dim
                )))
            }
        };
        let ctx = BlockCtx {
            rope: self
                .rope
                .as_ref()
                .map(|(c, s)| (c.narrow(0, 0, t), s.narrow(0, 0, t))),
            mask: None,
            step: None,
            dims: (b, t, 0, t),
            p: 0.0,
            train: false,
            is_causal: causal && t > 1,
        };
        Ok(self.block_step(i, x.shallow_clone(), &ctx, None))
    }

    /// Attention of one layer through libtorch: split `qkv [b, t, (heads + 2 kvh) hd]`,
    /// rotate, append to the cache, scaled-dot-product attention. Returns `[b, t, dim]`.
    #[allow(clippy::too_many_arguments)]
    fn attention(
        &self,
        qkv: &Tensor,
        rope: Option<&(Tensor, Tensor)>,
        cache: Option<&mut KvCache>,
        layer: usize,
        (b, t, past, total): (i64, i64, i64, i64),
        mask: Option<&Tensor>,
        (p, is_causal): (f64, bool),
    ) -> Tensor {
        let d = self.cfg.dim as i64;
        let heads = self.cfg.heads as i64;
        let kvh = self.cfg.kv_heads() as i64;
        let hd = self.cfg.head_dim() as i64;
        let mut q = qkv
            .narrow(2, 0, heads * hd)
            .view([b, t, heads, hd])
            .transpose(1, 2);
        let mut k = qkv
            .narrow(2, heads * hd, kvh * hd)
            .view([b, t, kvh, hd])
            .transpose(1, 2);
        let mut v = qkv
            .narrow(2, (heads + kvh) * hd, kvh * hd)
            .view([b, t, kvh, hd])
            .transpose(1, 2);
        if let Some((cos, sin)) = rope {
            q = apply_rotary(&q, cos, sin);
            k = apply_rotary(&k, cos, sin);
        }
        if let Some(c) = cache {
            c.k[layer].narrow(2, past, t).copy_(&k);
            c.v[layer].narrow(2, past, t).copy_(&v);
            k = c.k[layer].narrow(2, 0, total);
            v = c.v[layer].narrow(2, 0, total);
        }
        let y = Tensor::scaled_dot_product_attention(
            &q,
            &k,
            &v,
            mask,
            p,
            is_causal,
            None::<f64>,
            kvh != heads,
        );
        y.transpose(1, 2).reshape([b, t, d])
    }

    /// A boolean mask `[B, 1, T, past + T]` (true = attend), or `None` when SDPA's own
    /// causal or full attention is exact. With `segments` (no cache), a query sees only keys
    /// of its own segment: the mask is block-diagonal, `B × T × T` booleans (fine at the
    /// lengths trained here; SDPA then cannot take its flash path, which takes no mask).
    fn attention_mask(
        &self,
        key_mask: Option<&Tensor>,
        segments: Option<&Tensor>,
        b: i64,
        t: i64,
        past: i64,
        causal: bool,
    ) -> Result<Option<Tensor>> {
        let s = past + t;
        let keys = match key_mask {
            Some(m) => {
                if m.size() != [b, s] {
                    return Err(Error::usage(format!(
                        "key mask has shape {:?}, expected [{b}, {s}] (cached and new positions)",
                        m.size()
                    )));
                }
                Some(m.to_device(self.device).to_kind(Kind::Bool))
            }
            None => None,
        };
        let segments = match segments {
            Some(g) => {
                if g.size() != [b, t] {
                    return Err(Error::usage(format!(
                        "segment ids have shape {:?}, expected [{b}, {t}]",
                        g.size()
                    )));
                }
                Some(g.to_device(self.device))
            }
            None => None,
        };
        // Without padding or segments: a fresh causal pass, any full pass, and one new token
        // after a cache need no mask.
        if keys.is_none() && segments.is_none() && (!causal || past == 0 || t == 1) {
            return Ok(None);
        }
        let dev = self.device;
        let mut m = match keys {
            Some(k) => k.view([b, 1, 1, s]).expand([b, 1, t, s], false),
            None => Tensor::ones([b, 1, t, s], (Kind::Bool, dev)),
        };
        if let Some(g) = &segments {
            // `past` is 0 here (checked by the caller), so keys and queries are the same ids.
            m = m.logical_and(&g.view([b, 1, t, 1]).eq_tensor(&g.view([b, 1, 1, t])));
        }
        if causal {
            let qpos = Tensor::arange_start(past, s, (Kind::Int64, dev)).view([t, 1]);
            let kpos = Tensor::arange(s, (Kind::Int64, dev)).view([1, s]);
            m = m.logical_and(&kpos.le_tensor(&qpos).view([1, 1, t, s]));
        }
        // Every query sees at least itself, so padded rows stay finite (their outputs are
        // never used, but a NaN there would reach real rows through 0 * NaN).
        let diag = Tensor::arange(s, (Kind::Int64, dev))
            .view([1, s])
            .eq_tensor(&Tensor::arange_start(past, s, (Kind::Int64, dev)).view([t, 1]))
            .view([1, 1, t, s]);
        Ok(Some(m.logical_or(&diag)))
    }
}

/// Positions `[B, T]` (int64) that restart at 0 wherever the segment id changes along a row,
/// for [`Extras::positions`] with [`Extras::segments`]: each packed sequence gets the
/// positions it has alone. Segment ids must be grouped (a segment's ids contiguous).
pub fn positions_from_segments(segments: &Tensor) -> Tensor {
    let (b, t) = segments.size2().expect("segment ids are [batch, seq]");
    let dev = segments.device();
    let idx = Tensor::arange(t, (Kind::Int64, dev))
        .view([1, t])
        .expand([b, t], false);
    if t < 2 {
        return idx.zeros_like();
    }
    // 1 where a segment starts (the first id, and wherever the id differs from the one before).
    let change = segments
        .narrow(1, 1, t - 1)
        .ne_tensor(&segments.narrow(1, 0, t - 1));
    let starts = Tensor::cat(&[Tensor::ones([b, 1], (Kind::Bool, dev)), change], 1);
    // The index of the latest start at or before each position.
    let start_idx = idx.where_self(&starts, &idx.zeros_like()).cummax(1).0;
    idx - start_idx
}

fn mlp(blk: &Block, h: &Tensor, train: bool) -> Tensor {
    let m = match &blk.up {
        Some(up) => fused_swiglu(&blk.fc, up, h)
            .unwrap_or_else(|| blk.fc.forward(h, train).silu() * up.forward(h, train)),
        None => blk.fc.forward(h, train).gelu(blk.gelu),
    };
    blk.out.forward(&m, train)
}

/// `silu(gate(h)) * up(h)` in one pass of the decoding kernels, where both matrices are
/// plain (no bias, adapters or calibration taps) and of one kind (f32, or int8 codes).
fn fused_swiglu(gate: &Linear, up: &Linear, h: &Tensor) -> Option<Tensor> {
    let plain = |l: &Linear| l.b.is_none() && l.lora.is_empty() && l.tap.is_none();
    if !plain(gate) || !plain(up) {
        return None;
    }
    kernels::swiglu(h, gate.kernel_weight()?, up.kernel_weight()?)
}

/// `(cos, sin)` tables `[seq_len, head_dim]` for rotary positions.
fn rope_tables(cfg: &ModelConfig, seq_len: i64, device: Device) -> (Tensor, Tensor) {
    let hd = cfg.head_dim() as i64;
    // Computed in f64 and rounded once, as `transformers` computes its inverse frequencies.
    let inv = Tensor::arange_start_step(0, hd, 2, (Kind::Double, device))
        .divide_scalar(hd as f64)
        .multiply_scalar(-cfg.rope_theta.ln())
        .exp()
        .to_kind(Kind::Float);
    let t = Tensor::arange(seq_len, (Kind::Float, device));
    let freqs = t.outer(&inv);
    let emb = Tensor::cat(&[&freqs, &freqs], -1);
    (emb.cos(), emb.sin())
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
            seq_len: Some(16),
            vocab_size: Some(32),
            positions,
            norm,
            mlp,
            bias,
            tie_embeddings: tie,
            ..ModelConfig::default()
        }
    }

    fn families() -> Vec<ModelConfig> {
        let sized = |c: ModelConfig| ModelConfig {
            layers: 2,
            heads: 4,
            dim: 32,
            seq_len: Some(24),
            vocab_size: Some(40),
            ..c
        };
        vec![
            sized(ModelConfig::gpt2()),
            sized(ModelConfig::llama().with_kv_heads(2)),
            sized(ModelConfig {
                tie_embeddings: false,
                ..ModelConfig::llama()
            }),
            sized(ModelConfig::bert()),
        ]
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
        (a - b).abs().max().double_value(&[])
    }

    #[test]
    fn every_variant_gives_logits_of_the_right_shape() {
        let _rng = crate::torch_rng_lock();
        let mut variants = vec![
            tiny(Positions::Learned, Norm::LayerNorm, Mlp::Gelu, false, true),
            tiny(Positions::Rotary, Norm::RmsNorm, Mlp::SwiGlu, false, false),
            tiny(Positions::Learned, Norm::LayerNorm, Mlp::Gelu, true, false),
            tiny(Positions::Rotary, Norm::LayerNorm, Mlp::SwiGlu, true, true),
        ];
        variants.extend(families());
        for cfg in variants {
            tch::manual_seed(0);
            let m = Transformer::new(&cfg, Device::Cpu);
            let v = cfg.vocab_size.unwrap() as i64;
            let idx = Tensor::from_slice(&[1i64, 2, 3, 4, 5, 6]).view([2, 3]);
            let logits = m.forward(&idx, true, false);
            assert_eq!(logits.size(), vec![2, 3, v], "{cfg:?}");
            assert!(bool::try_from(logits.isfinite().all()).unwrap());
            assert_eq!(
                m.params().get("lm_head.weight").is_some(),
                !cfg.tie_embeddings
            );
            assert_eq!(m.params().get("blocks.0.attn.qkv.bias").is_some(), cfg.bias);
            assert_eq!(m.params().get("emb_norm.weight").is_some(), cfg.post_norm);
            assert_eq!(m.params().get("ln_f.weight").is_none(), cfg.post_norm);
            let qkv = m.params().get("blocks.0.attn.qkv.weight").unwrap().size();
            let hd = cfg.head_dim() as i64;
            assert_eq!(qkv[0], (cfg.heads + 2 * cfg.kv_heads()) as i64 * hd);
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
        let diff = max_diff(&la.narrow(1, 0, 3), &lb.narrow(1, 0, 3));
        assert!(diff < 1e-6, "decoder leaked the future: {diff}");
        // ...but changes them in the encoder.
        let (ea, eb) = (m.forward(&a, false, false), m.forward(&b, false, false));
        let diff = max_diff(&ea.narrow(1, 0, 3), &eb.narrow(1, 0, 3));
        assert!(diff > 1e-6, "encoder did not see the whole sequence");
    }

    /// Decoding token by token through the cache gives the logits of one full pass.
    #[test]
    fn kv_cache_decoding_equals_a_full_pass() {
        let _rng = crate::torch_rng_lock();
        // With autograd on, libtorch's products and attention; under `no_grad`, the decoding
        // kernels for the one-token steps (the full pass, 30 rows, stays libtorch's).
        for (fast, cfg) in kernel_cases() {
            let _g = fast.then(tch::no_grad_guard);
            let calls = crate::kernels::calls_here();
            tch::manual_seed(2);
            let m = Transformer::new(&cfg, Device::Cpu);
            let ids = Tensor::randint(40, [3, 10], (Kind::Int64, Device::Cpu));
            let full = m.forward(&ids, true, false);
            let mut cache = m.new_cache(3, 16);
            // A 4-token prefill, then one token at a time.
            let mut parts = vec![m
                .try_forward(
                    &ids.narrow(1, 0, 4),
                    &Extras::default(),
                    true,
                    Some(&mut cache),
                )
                .unwrap()];
            for i in 4..10 {
                parts.push(
                    m.try_forward(
                        &ids.narrow(1, i, 1),
                        &Extras::default(),
                        true,
                        Some(&mut cache),
                    )
                    .unwrap(),
                );
            }
            assert_eq!(cache.len(), 10);
            let stepped = Tensor::cat(&parts, 1);
            let diff = max_diff(&full, &stepped);
            assert!(diff < 1e-5, "{}: cache differs by {diff}", cfg.family());
            kernels_used(fast, calls);
        }
    }

    /// Every non-post-norm family, first with the decoding kernels out of the way (autograd
    /// on), then in their way (autograd off) where this CPU runs them.
    fn kernel_cases() -> Vec<(bool, ModelConfig)> {
        let modes = if crate::kernels::available() {
            vec![false, true]
        } else {
            vec![false]
        };
        modes
            .into_iter()
            .flat_map(|f| {
                families()
                    .into_iter()
                    .filter(|c| !c.post_norm)
                    .map(move |c| (f, c))
            })
            .collect()
    }

    /// The kernels ran (or did not) since `calls`.
    fn kernels_used(fast: bool, calls: u64) {
        let ran = crate::kernels::calls_here() > calls;
        assert_eq!(ran, fast, "kernel calls: fast = {fast}");
    }

    /// A left-padded row with positions from its mask gives the logits it has alone, with
    /// and without the cache.
    #[test]
    fn left_padding_with_mask_positions_equals_the_unpadded_row() {
        let _rng = crate::torch_rng_lock();
        for (fast, cfg) in kernel_cases() {
            let _g = fast.then(tch::no_grad_guard);
            let calls = crate::kernels::calls_here();
            tch::manual_seed(3);
            let m = Transformer::new(&cfg, Device::Cpu);
            let short = Tensor::from_slice(&[5i64, 6, 7]).view([1, 3]);
            let long = Tensor::from_slice(&[1i64, 2, 3, 4, 5, 6]).view([1, 6]);
            let alone_short = m.forward(&short, true, false);
            let alone_long = m.forward(&long, true, false);
            let pad = Tensor::from_slice(&[0i64, 0, 0, 5, 6, 7]).view([1, 6]);
            let ids = Tensor::cat(&[&pad, &long], 0);
            let mask = Tensor::from_slice(&[0i64, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1]).view([2, 6]);
            let pos = (mask.cumsum(1, Kind::Int64) - 1).clamp_min(0);
            let extras = Extras {
                positions: Some(&pos),
                key_mask: Some(&mask),
                ..Extras::default()
            };
            let batched = m.try_forward(&ids, &extras, true, None).unwrap();
            let d1 = max_diff(&batched.get(0).narrow(0, 3, 3), &alone_short.get(0));
            let d2 = max_diff(&batched.get(1), &alone_long.get(0));
            assert!(d1 < 1e-5 && d2 < 1e-5, "{}: {d1} {d2}", cfg.family());
            // One more token for each row through the cache.
            let mut cache = m.new_cache(2, 8);
            let _ = m
                .try_forward(&ids, &extras, true, Some(&mut cache))
                .unwrap();
            let next = Tensor::from_slice(&[8i64, 9]).view([2, 1]);
            let mask2 = Tensor::cat(
                &[&mask, &Tensor::ones([2, 1], (Kind::Int64, Device::Cpu))],
                1,
            );
            let pos2 = Tensor::from_slice(&[3i64, 6]).view([2, 1]);
            let step = m
                .try_forward(
                    &next,
                    &Extras {
                        positions: Some(&pos2),
                        key_mask: Some(&mask2),
                        ..Extras::default()
                    },
                    true,
                    Some(&mut cache),
                )
                .unwrap();
            let want0 = m.forward(
                &Tensor::from_slice(&[5i64, 6, 7, 8]).view([1, 4]),
                true,
                false,
            );
            let want1 = m.forward(
                &Tensor::from_slice(&[1i64, 2, 3, 4, 5, 6, 9]).view([1, 7]),
                true,
                false,
            );
            let d3 = max_diff(&step.get(0).get(0), &want0.get(0).get(3));
            let d4 = max_diff(&step.get(1).get(0), &want1.get(0).get(6));
            assert!(d3 < 1e-5 && d4 < 1e-5, "{}: {d3} {d4}", cfg.family());
            kernels_used(fast, calls);
        }
    }

    /// Sequences packed into one row with segment ids and restarted positions give, token
    /// for token, the logits each has alone (learned and rotary positions, GQA); changing a
    /// token of the first leaves the second's logits exactly as they were; padding after
    /// the last segment changes nothing before it.
    #[test]
    fn packed_segments_equal_each_sequence_alone() {
        let _rng = crate::torch_rng_lock();
        for cfg in families().into_iter().filter(|c| !c.post_norm) {
            tch::manual_seed(6);
            let m = Transformer::new(&cfg, Device::Cpu);
            let parts: [&[i64]; 3] = [&[3, 9, 4, 1, 7], &[5, 2, 8], &[11, 12, 13, 14, 6, 2]];
            let row: Vec<i64> = parts.concat();
            let seg: Vec<i64> = parts
                .iter()
                .enumerate()
                .flat_map(|(k, p)| std::iter::repeat_n(k as i64, p.len()))
                .collect();
            let seg = Tensor::from_slice(&seg).view([1, -1]);
            let pos = positions_from_segments(&seg);
            assert_eq!(
                Vec::<i64>::try_from(pos.reshape([-1])).unwrap(),
                vec![0, 1, 2, 3, 4, 0, 1, 2, 0, 1, 2, 3, 4, 5]
            );
            let packed = |row: &[i64]| {
                let ids = Tensor::from_slice(row).view([1, -1]);
                let extras = Extras {
                    positions: Some(&pos),
                    segments: Some(&seg),
                    ..Extras::default()
                };
                m.try_forward(&ids, &extras, true, None).unwrap()
            };
            let got = packed(&row);
            let mut at = 0;
            for p in parts {
                let alone = m.forward(&Tensor::from_slice(p).view([1, -1]), true, false);
                let d = max_diff(&got.narrow(1, at, p.len() as i64), &alone);
                assert!(d < 1e-5, "{}: packed vs alone {d}", cfg.family());
                at += p.len() as i64;
            }
            let mut changed = row.clone();
            changed[2] = 30;
            let other = packed(&changed);
            assert!(max_diff(&other.narrow(1, 0, 5), &got.narrow(1, 0, 5)) > 1e-4);
            assert_eq!(max_diff(&other.narrow(1, 5, 9), &got.narrow(1, 5, 9)), 0.0);
            // A cache with segments is refused, not silently wrong.
            let mut cache = m.new_cache(1, 16);
            let ids = Tensor::from_slice(&row).view([1, -1]);
            let e = m
                .try_forward(
                    &ids,
                    &Extras {
                        segments: Some(&seg),
                        ..Extras::default()
                    },
                    true,
                    Some(&mut cache),
                )
                .unwrap_err();
            assert!(e.to_string().contains("KV cache"), "{e}");
        }
    }

    /// Grouped-query attention equals full multi-head attention with each key/value head
    /// repeated for its group.
    #[test]
    fn grouped_query_attention_equals_repeated_heads() {
        let _rng = crate::torch_rng_lock();
        let gqa = ModelConfig {
            layers: 1,
            heads: 4,
            dim: 32,
            seq_len: Some(8),
            vocab_size: Some(20),
            ..ModelConfig::llama().with_kv_heads(2)
        };
        tch::manual_seed(4);
        let m = Transformer::new(&gqa, Device::Cpu);
        let mha = ModelConfig {
            kv_heads: None,
            ..gqa.clone()
        };
        let mut w: HashMap<String, Tensor> = m.params().named().into_iter().collect();
        let qkv = w["blocks.0.attn.qkv.weight"].shallow_clone();
        let hd = 8;
        let q = qkv.narrow(0, 0, 4 * hd);
        let rep = |t: Tensor| {
            t.view([2, 1, hd, 32])
                .repeat([1, 2, 1, 1])
                .view([4 * hd, 32])
        };
        let k = rep(qkv.narrow(0, 4 * hd, 2 * hd));
        let v = rep(qkv.narrow(0, 6 * hd, 2 * hd));
        w.insert(
            "blocks.0.attn.qkv.weight".into(),
            Tensor::cat(&[q, k, v], 0),
        );
        let full = Transformer::from_weights(&mha, Device::Cpu, &w, Path::new("test")).unwrap();
        let ids = Tensor::from_slice(&[1i64, 5, 2, 7, 3]).view([1, 5]);
        let diff = max_diff(
            &m.forward(&ids, true, false),
            &full.forward(&ids, true, false),
        );
        assert!(diff < 1e-5, "GQA differs from repeated heads by {diff}");
    }

    #[test]
    fn from_weights_round_trips_and_names_what_does_not_fit() {
        let _rng = crate::torch_rng_lock();
        for cfg in families() {
            tch::manual_seed(5);
            let m = Transformer::new(&cfg, Device::Cpu);
            let w: HashMap<String, Tensor> = m.params().named().into_iter().collect();
            let back = Transformer::from_weights(&cfg, Device::Cpu, &w, Path::new("w")).unwrap();
            let ids = Tensor::from_slice(&[1i64, 2, 3]).view([1, 3]);
            assert_eq!(
                max_diff(
                    &m.forward(&ids, false, false),
                    &back.forward(&ids, false, false)
                ),
                0.0
            );
            let wider = ModelConfig {
                dim: 64,
                ..cfg.clone()
            };
            let err =
                Transformer::from_weights(&wider, Device::Cpu, &w, Path::new("w.safetensors"))
                    .unwrap_err()
                    .to_string();
            assert!(
                err.contains("w.safetensors") && err.contains("tok_emb.weight"),
                "{err}"
            );
            let mut extra = w;
            extra.insert(
                "surprise".into(),
                Tensor::zeros([1], (Kind::Float, Device::Cpu)),
            );
            let err = Transformer::from_weights(&cfg, Device::Cpu, &extra, Path::new("w"))
                .unwrap_err()
                .to_string();
            assert!(err.contains("surprise"), "{err}");
        }
    }

    #[test]
    fn too_long_inputs_are_errors_not_panics() {
        let _rng = crate::torch_rng_lock();
        let cfg = families().remove(1);
        let m = Transformer::new(&cfg, Device::Cpu);
        let ids = Tensor::zeros([1, 25], (Kind::Int64, Device::Cpu));
        let err = m
            .try_forward(&ids, &Extras::default(), true, None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("model.seq_len"), "{err}");
    }

    #[test]
    fn cast_keeps_the_store_in_step() {
        let _rng = crate::torch_rng_lock();
        let mut m = Transformer::new(&families().remove(0), Device::Cpu);
        m.cast(Kind::BFloat16);
        assert!(m
            .params()
            .params
            .iter()
            .all(|p| p.tensor.kind() == Kind::BFloat16));
        let ids = Tensor::from_slice(&[1i64, 2, 3]).view([1, 3]);
        assert_eq!(m.forward(&ids, true, false).kind(), Kind::BFloat16);
    }
}
