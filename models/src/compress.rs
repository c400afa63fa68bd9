//! Compression of a model's linear layers: pruning and quantization (`quern compress`).
//!
//! **What is compressed.** The matrices of the transformer blocks ([`compressible`]):
//! attention `qkv` and `proj`, and the MLP's `fc` (or `gate` and `up`) and `out`. Embeddings,
//! the output projection, norms and heads stay as they are, as GPTQ's, Wanda's and
//! llama.cpp's defaults leave them.
//!
//! **Pruning** ([`prune`]) zeroes weights by a score:
//! - `magnitude`: `|W|`;
//! - `wanda`: `|W_ij| · ‖X_j‖₂` (Sun et al., 2023), `X_j` the layer's `j`-th input feature over
//!   a calibration split, so a small weight on a loud input survives.
//!
//! The zeroed set is chosen per row (each output's inputs compared, Wanda's choice), per
//! matrix, or across all compressible matrices at once (`global`); or by the 2:4
//! semi-structured pattern, in which every group of 4 consecutive inputs of a row keeps its 2
//! best weights (what sparse tensor cores run). A pruned model records its pruned matrices in
//! [`ModelConfig::pruned`]: training keeps their zeros ([`crate::Transformer::apply_masks`]).
//!
//! Structured pruning ([`prune_neurons`]) removes whole MLP neurons: the same number from every
//! block, those with the smallest `‖W_out[:, j]‖₂ · ‖X_j‖₂` (magnitude: `‖W_out[:, j]‖₂ ·
//! ‖W_in[j, :]‖₂`), so the model really shrinks (`mlp_hidden` falls).
//!
//! **Quantization** ([`quantize`]):
//! - `int8`: symmetric, one scale per output row: `s = max|w| / 127` (a row of zeros gets
//!   `s = ε` so nothing divides by zero), `q = round(w / s)` in `[-127, 127]`, so every
//!   weight is within `s / 2` of `q · s`.
//! - `int4`: asymmetric, one scale and minimum per group of `g` consecutive inputs of a row
//!   (32, 64 or 128; a last shorter group when `g` does not divide the row):
//!   `s = (max − min) / 15`, `q = round((w − min) / s)` in `[0, 15]`, error within `s / 2`.
//! - `rtn` rounds each weight to its nearest level; `gptq` (Frantar et al., 2022) rounds one
//!   input column at a time and moves each column's rounding error onto the columns not yet
//!   rounded, weighted by the inverse Hessian `H = 2 X Xᵀ` of the layer's calibration inputs,
//!   so the layer's output on those inputs changes least.
//!
//! A quantized model directory stores each quantized matrix as its codes and scales
//! ([`QuantTensor`], `NAME.q`, `NAME.scale`, and for int4 `NAME.min`; int4 codes two to a
//! byte) and records the scheme in `model.json`. Loading dequantizes them, so a quantized
//! model trains, evaluates and exports like any other; [`crate::Transformer::use_quantized`]
//! runs generation on low-bit matrix products instead: int8 on quern's decoding kernel for
//! one to eight rows ([`crate::kernels`]) and libtorch's `_weight_int8pack_mm` for longer
//! inputs, int4 on quern's int4 decoding kernel for one to eight rows (groups of whole
//! 32-input blocks) and libtorch's `_weight_int4pack_mm_for_cpu` otherwise.
//!
//! **Calibration** statistics (Wanda's input norms, GPTQ's Hessians) are gathered by taps on
//! the block matrices ([`crate::Transformer::set_taps`]), either in one pass of the source
//! model or one block at a time ([`crate::Transformer::embed`],
//! [`crate::Transformer::block_forward`]), each block calibrating on the outputs of the
//! blocks already compressed, as GPTQ's and Wanda's own code do (`quern compress
//! --calib-stats`).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use quern_core::{Error, Result};
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::config::{Mlp, ModelConfig};

/// A zero row's int8 scale (and an int4 group's with max = min): small and positive.
pub const EPS: f64 = 1e-8;

/// Whether `name` is a matrix that compression touches (see the module docs).
pub fn compressible(name: &str) -> bool {
    let Some(rest) = name.strip_prefix("blocks.") else {
        return false;
    };
    let Some((layer, rest)) = rest.split_once('.') else {
        return false;
    };
    layer.parse::<usize>().is_ok()
        && matches!(
            rest,
            "attn.qkv.weight"
                | "attn.proj.weight"
                | "mlp.fc.weight"
                | "mlp.gate.weight"
                | "mlp.up.weight"
                | "mlp.out.weight"
        )
}

/// The output projection, which `quern compress --quant-head` quantizes (round to nearest,
/// never pruned) after untying it from the token embeddings.
pub const HEAD: &str = "lm_head.weight";

/// The shape `[out, in]` of block matrix `name`, or of an untied [`HEAD`], in a model of
/// `cfg`.
pub fn weight_shape(cfg: &ModelConfig, name: &str) -> Option<(i64, i64)> {
    if name == HEAD {
        let (_, vocab) = cfg.resolved_sizes().ok()?;
        return (!cfg.tie_embeddings).then_some((vocab, cfg.dim as i64));
    }
    if !compressible(name) {
        return None;
    }
    let layer: usize = name.split('.').nth(1)?.parse().ok()?;
    if layer >= cfg.layers {
        return None;
    }
    let d = cfg.dim as i64;
    let h = cfg.hidden() as i64;
    let qkv = (cfg.heads + 2 * cfg.kv_heads()) as i64 * cfg.head_dim() as i64;
    let swiglu = cfg.mlp == Mlp::SwiGlu;
    match name.rsplit_once(".weight")?.0.rsplit_once('.')?.1 {
        "qkv" => Some((qkv, d)),
        "proj" => Some((d, d)),
        "fc" if !swiglu => Some((h, d)),
        "gate" | "up" if swiglu => Some((h, d)),
        "out" => Some((d, h)),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------
// Calibration taps
// ---------------------------------------------------------------------------------------

/// Statistics of one linear layer's inputs over the calibration rows.
#[derive(Debug)]
pub struct Tap {
    /// Input rows seen (tokens).
    pub rows: i64,
    /// `Σ x_j²` per input feature `[K]` (f64).
    pub sq_sum: Tensor,
    /// `Σ x xᵀ` `[K, K]` (f64; each batch's product in f32), when asked for (GPTQ).
    pub gram: Option<Tensor>,
}

impl Tap {
    pub fn new(k: i64, gram: bool) -> Self {
        let opts = (Kind::Double, tch::Device::Cpu);
        Tap {
            rows: 0,
            sq_sum: Tensor::zeros([k], opts),
            gram: gram.then(|| Tensor::zeros([k, k], opts)),
        }
    }

    /// Adds a batch of inputs `[..., K]`.
    pub fn add(&mut self, x: &Tensor) {
        let _g = tch::no_grad_guard();
        let k = *x.size().last().unwrap_or(&0);
        let x2 = x
            .reshape([-1, k])
            .to_device(tch::Device::Cpu)
            .to_kind(Kind::Float);
        self.rows += x2.size()[0];
        self.sq_sum += x2
            .to_kind(Kind::Double)
            .square()
            .sum_dim_intlist(0, false, Kind::Double);
        if let Some(g) = &mut self.gram {
            // Each batch's product in f32 (sgemm), summed over batches in f64.
            *g += x2.tr().mm(&x2).to_kind(Kind::Double);
        }
    }

    /// `‖X_j‖₂` per input feature `[K]` (f32).
    pub fn norms(&self) -> Tensor {
        self.sq_sum.sqrt().to_kind(Kind::Float)
    }

    /// GPTQ's Hessian `2 X Xᵀ / n` (f32), when the tap kept the Gram matrix.
    pub fn hessian(&self) -> Option<Tensor> {
        self.gram
            .as_ref()
            .map(|g| (g * (2.0 / self.rows.max(1) as f64)).to_kind(Kind::Float))
    }
}

/// Taps by weight name, shared with the model's layers while they run.
pub type Taps = BTreeMap<String, Arc<Mutex<Tap>>>;

// ---------------------------------------------------------------------------------------
// Pruning
// ---------------------------------------------------------------------------------------

/// How weights are scored for pruning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PruneMethod {
    Magnitude,
    Wanda,
}

/// Which weights compete for survival.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Each output row's inputs (Wanda's default).
    Row,
    /// Each matrix.
    Layer,
    /// All compressible matrices together.
    Global,
}

/// The shape of the zeros.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pattern {
    /// Any weights, `sparsity` of them.
    Unstructured,
    /// 2 zeros in every 4 consecutive inputs of a row (50%).
    #[serde(rename = "2:4")]
    TwoFour,
}

/// The score of every weight of `w` `[N, K]` (higher survives). `norms` `[K]`: the
/// layer's input norms, for Wanda.
pub fn scores(w: &Tensor, method: PruneMethod, norms: Option<&Tensor>) -> Result<Tensor> {
    let a = w.abs().to_kind(Kind::Float);
    match method {
        PruneMethod::Magnitude => Ok(a),
        PruneMethod::Wanda => {
            let n = norms.ok_or_else(|| Error::bug("wanda scores without input norms"))?;
            Ok(a * n.to_device(w.device()).view([1, -1]))
        }
    }
}

/// The keep-mask (true = kept) zeroing the `count` lowest of `s` (any shape), ties broken
/// by position so exactly `count` go.
fn lowest_mask(s: &Tensor, count: i64) -> Tensor {
    let flat = s.reshape([-1]);
    let n = flat.size()[0];
    let mut keep = Tensor::ones([n], (Kind::Bool, s.device()));
    if count > 0 {
        let (_, idx) = flat.sort(0, false);
        let _ = keep.index_fill_(0, &idx.narrow(0, 0, count.min(n)), 0);
    }
    keep.view(s.size().as_slice())
}

/// The keep-mask of one matrix under `pattern` and a per-row or per-matrix scope.
pub fn mask_of(s: &Tensor, sparsity: f64, pattern: Pattern, scope: Scope) -> Result<Tensor> {
    let (n, k) = s.size2().map_err(|_| Error::bug("a score matrix is 2-d"))?;
    match pattern {
        Pattern::TwoFour => {
            if k % 4 != 0 {
                return Err(Error::usage(format!(
                    "2:4 sparsity needs rows whose length is a multiple of 4; a matrix has {k} inputs"
                )));
            }
            // Rank within each group of 4: the 2 lowest go.
            let g = s.view([n, k / 4, 4]);
            let (_, idx) = g.sort(-1, false);
            let keep = Tensor::ones([n, k / 4, 4], (Kind::Bool, s.device()));
            let keep = keep.scatter(
                -1,
                &idx.narrow(-1, 0, 2),
                &Tensor::zeros_like(&idx.narrow(-1, 0, 2)).to_kind(Kind::Bool),
            );
            Ok(keep.view([n, k]))
        }
        Pattern::Unstructured => match scope {
            Scope::Row => {
                let count = (sparsity * k as f64).floor() as i64;
                let (_, idx) = s.sort(1, false);
                let keep = Tensor::ones([n, k], (Kind::Bool, s.device()));
                if count == 0 {
                    return Ok(keep);
                }
                let low = idx.narrow(1, 0, count);
                Ok(keep.scatter(1, &low, &Tensor::zeros_like(&low).to_kind(Kind::Bool)))
            }
            Scope::Layer => Ok(lowest_mask(s, (sparsity * (n * k) as f64).floor() as i64)),
            Scope::Global => Err(Error::bug("global masks are chosen across matrices")),
        },
    }
}

/// Keep-masks of several matrices chosen together: the `sparsity` share of all their
/// weights with the lowest scores goes.
pub fn global_masks(scores: &[(String, Tensor)], sparsity: f64) -> Vec<(String, Tensor)> {
    let flat: Vec<Tensor> = scores.iter().map(|(_, s)| s.reshape([-1])).collect();
    let all = Tensor::cat(&flat, 0);
    let total = all.size()[0];
    let mask = lowest_mask(&all, (sparsity * total as f64).floor() as i64);
    let mut out = Vec::with_capacity(scores.len());
    let mut at = 0;
    for (name, s) in scores {
        let n = s.numel() as i64;
        out.push((
            name.clone(),
            mask.narrow(0, at, n).view(s.size().as_slice()),
        ));
        at += n;
    }
    out
}

/// Options of [`prune`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PruneOptions {
    pub method: PruneMethod,
    pub sparsity: f64,
    pub pattern: Pattern,
    pub scope: Scope,
}

/// Prunes the compressible matrices of `weights` in place (see the module docs); `taps`
/// give Wanda's input norms. Returns the pruned names.
pub fn prune(
    weights: &mut HashMap<String, Tensor>,
    opts: &PruneOptions,
    taps: &Taps,
) -> Result<Vec<String>> {
    if !(0.0..1.0).contains(&opts.sparsity) {
        return Err(Error::usage(format!(
            "sparsity must be in [0, 1), got {}",
            opts.sparsity
        )));
    }
    let _g = tch::no_grad_guard();
    let mut names: Vec<String> = weights
        .keys()
        .filter(|n| compressible(n))
        .cloned()
        .collect();
    names.sort();
    let mut scored = Vec::with_capacity(names.len());
    for name in &names {
        let norms = match opts.method {
            PruneMethod::Magnitude => None,
            PruneMethod::Wanda => Some(
                taps.get(name)
                    .ok_or_else(|| Error::bug(format!("no calibration tap for {name}")))?
                    .lock()
                    .map_err(|_| Error::bug("a poisoned tap"))?
                    .norms(),
            ),
        };
        scored.push((
            name.clone(),
            scores(&weights[name], opts.method, norms.as_ref())?,
        ));
    }
    let masks = if opts.pattern == Pattern::Unstructured && opts.scope == Scope::Global {
        global_masks(&scored, opts.sparsity)
    } else {
        let mut v = Vec::with_capacity(scored.len());
        for (name, s) in &scored {
            v.push((
                name.clone(),
                mask_of(s, opts.sparsity, opts.pattern, opts.scope)?,
            ));
        }
        v
    };
    for (name, keep) in masks {
        let w = weights
            .get_mut(&name)
            .ok_or_else(|| Error::bug("a scored weight vanished"))?;
        *w = &*w * keep.to_kind(w.kind());
    }
    Ok(names)
}

/// Removes the same share of MLP neurons from every block (see the module docs), changing
/// `cfg.mlp_hidden`. `taps` (of the `out` layers) give the activation-aware score; without
/// them the score is weight-only.
pub fn prune_neurons(
    cfg: &mut ModelConfig,
    weights: &mut HashMap<String, Tensor>,
    share: f64,
    taps: Option<&Taps>,
) -> Result<i64> {
    if !(0.0..1.0).contains(&share) {
        return Err(Error::usage(format!(
            "the share of neurons to remove must be in [0, 1), got {share}"
        )));
    }
    let _g = tch::no_grad_guard();
    let hidden = cfg.hidden() as i64;
    let keep_n = hidden - (share * hidden as f64).floor() as i64;
    if keep_n < 1 {
        return Err(Error::usage("that would remove every neuron"));
    }
    let ins: &[&str] = if cfg.mlp == Mlp::SwiGlu {
        &["gate", "up"]
    } else {
        &["fc"]
    };
    let get = |w: &HashMap<String, Tensor>, n: &str| -> Result<Tensor> {
        w.get(n)
            .map(|t| t.shallow_clone())
            .ok_or_else(|| Error::bug(format!("tensor {n} missing")))
    };
    for i in 0..cfg.layers {
        let p = format!("blocks.{i}.mlp");
        let out_w = get(weights, &format!("{p}.out.weight"))?; // [d, h]
        let col = out_w.square().sum_dim_intlist(0, false, Kind::Float).sqrt(); // [h]
        let other = match taps.and_then(|t| t.get(&format!("{p}.out.weight"))) {
            Some(tap) => tap
                .lock()
                .map_err(|_| Error::bug("a poisoned tap"))?
                .norms(),
            None => {
                let w_in = get(weights, &format!("{p}.{}.weight", ins[0]))?;
                w_in.square().sum_dim_intlist(1, false, Kind::Float).sqrt()
            }
        };
        let score = col * other.to_device(out_w.device());
        let (_, idx) = score.sort(0, true);
        let (keep, _) = idx.narrow(0, 0, keep_n).sort(0, false);
        for name in ins {
            for suffix in ["weight", "bias"] {
                let key = format!("{p}.{name}.{suffix}");
                if let Some(t) = weights.get(&key) {
                    let t2 = t.index_select(0, &keep.to_device(t.device()));
                    weights.insert(key, t2);
                }
            }
        }
        let key = format!("{p}.out.weight");
        weights.insert(key, out_w.index_select(1, &keep.to_device(out_w.device())));
    }
    cfg.mlp_hidden = Some(keep_n as usize);
    Ok(hidden - keep_n)
}

// ---------------------------------------------------------------------------------------
// Quantization
// ---------------------------------------------------------------------------------------

/// A quantization scheme.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Scheme {
    /// Symmetric int8, a scale per output row.
    Int8,
    /// Asymmetric int4, a scale and minimum per group of `group` inputs.
    Int4 { group: i64 },
}

impl Scheme {
    pub fn name(&self) -> String {
        match self {
            Scheme::Int8 => "int8".into(),
            Scheme::Int4 { group } => format!("int4 g{group}"),
        }
    }
    /// Bits per weight including scales (f32) and minimums, for the size report.
    pub fn bits_per_weight(&self) -> f64 {
        match self {
            Scheme::Int8 => 8.0,
            Scheme::Int4 { group } => 4.0 + 64.0 / *group as f64,
        }
    }
}

/// How weights are rounded.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Rounding {
    /// Round to nearest.
    Rtn,
    /// GPTQ with dampening `damp` (a share of the Hessian's mean diagonal) and columns
    /// processed `block` at a time; with `act_order`, columns in order of decreasing
    /// Hessian diagonal (the loudest inputs first) and int4 groups' parameters fixed from
    /// the weights before any error feedback ("static groups", so groups stay runs of
    /// consecutive inputs).
    Gptq {
        damp: f64,
        block: i64,
        #[serde(default)]
        act_order: bool,
    },
}

/// How an int4 group's scale and minimum are chosen.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Range {
    /// The group's minimum and maximum: no weight is clipped.
    #[default]
    MinMax,
    /// The GPTQ code's `mse` search: the range `[p·min, p·max]` for `p` from 1 down to
    /// 0.22 in steps of 0.02 that minimises `Σ |w − q(w)|^2.4` over the group (clipping a
    /// few large weights for a finer grid for the rest), per output row.
    Search,
}

/// The shrink steps, step size and error norm of [`Range::Search`].
const SEARCH_STEPS: i64 = 40;
const SEARCH_STEP: f64 = 0.02;
const SEARCH_NORM: f64 = 2.4;

/// One quantized matrix.
#[derive(Debug)]
pub struct QuantTensor {
    pub scheme: Scheme,
    /// `[N, K]`: int8 codes (Int8) or 0..=15 as uint8 (Int4), unpacked.
    pub codes: Tensor,
    /// `[N]` (Int8) or `[N, groups]` (Int4), f32.
    pub scale: Tensor,
    /// `[N, groups]` f32 (Int4), the group's minimum (the value of code 0).
    pub min: Option<Tensor>,
}

impl QuantTensor {
    /// The f32 matrix the codes stand for.
    pub fn dequantize(&self) -> Tensor {
        let (n, k) = self.codes.size2().unwrap_or((0, 0));
        match self.scheme {
            Scheme::Int8 => self.codes.to_kind(Kind::Float) * self.scale.view([n, 1]),
            Scheme::Int4 { group } => {
                let s = expand_groups(&self.scale, group, k);
                let m = expand_groups(self.min.as_ref().unwrap_or(&self.scale), group, k);
                self.codes.to_kind(Kind::Float) * s + m
            }
        }
    }

    /// The tensors a model directory stores for weight `name` (int4 codes two to a byte,
    /// the even input in the low nibble).
    pub fn stored(&self, name: &str) -> Vec<(String, Tensor)> {
        let codes = match self.scheme {
            Scheme::Int8 => self.codes.shallow_clone(),
            Scheme::Int4 { .. } => pack_nibbles(&self.codes),
        };
        let mut v = vec![
            (format!("{name}.q"), codes),
            (format!("{name}.scale"), self.scale.shallow_clone()),
        ];
        if let Some(m) = &self.min {
            v.push((format!("{name}.min"), m.shallow_clone()));
        }
        v
    }

    /// Reads weight `name` back from stored tensors (removing them from `map`), checking
    /// shapes against `[n, k]`.
    pub fn take_stored(
        map: &mut HashMap<String, Tensor>,
        name: &str,
        scheme: Scheme,
        n: i64,
        k: i64,
    ) -> std::result::Result<Self, String> {
        let mut take = |suffix: &str| {
            map.remove(&format!("{name}.{suffix}"))
                .ok_or_else(|| format!("quantized tensor `{name}.{suffix}` missing"))
        };
        let raw = take("q")?;
        let scale = take("scale")?.to_kind(Kind::Float);
        let (codes, want_scale) = match scheme {
            Scheme::Int8 => {
                if raw.kind() != Kind::Int8 || raw.size() != [n, k] {
                    return Err(format!(
                        "`{name}.q` is {:?} {:?}, expected int8 [{n}, {k}]",
                        raw.kind(),
                        raw.size()
                    ));
                }
                (raw, vec![n])
            }
            Scheme::Int4 { group } => {
                if raw.kind() != Kind::Uint8 || raw.size() != [n, (k + 1) / 2] {
                    return Err(format!(
                        "`{name}.q` is {:?} {:?}, expected uint8 [{n}, {}]",
                        raw.kind(),
                        raw.size(),
                        (k + 1) / 2
                    ));
                }
                (unpack_nibbles(&raw, k), vec![n, groups(k, group)])
            }
        };
        if scale.size() != want_scale {
            return Err(format!(
                "`{name}.scale` has shape {:?}, expected {want_scale:?}",
                scale.size()
            ));
        }
        let min = match scheme {
            Scheme::Int8 => None,
            Scheme::Int4 { .. } => {
                let m = take("min")?.to_kind(Kind::Float);
                if m.size() != want_scale {
                    return Err(format!(
                        "`{name}.min` has shape {:?}, expected {want_scale:?}",
                        m.size()
                    ));
                }
                Some(m)
            }
        };
        Ok(QuantTensor {
            scheme,
            codes,
            scale,
            min,
        })
    }
}

fn groups(k: i64, group: i64) -> i64 {
    (k + group - 1) / group
}

/// `[N, groups]` → `[N, K]`, each group's value repeated over its inputs.
fn expand_groups(t: &Tensor, group: i64, k: i64) -> Tensor {
    t.repeat_interleave_self_int(group, Some(1), None)
        .narrow(1, 0, k)
}

fn pack_nibbles(codes: &Tensor) -> Tensor {
    let (n, k) = codes.size2().unwrap_or((0, 0));
    let c = if k % 2 == 1 {
        Tensor::cat(
            &[codes.shallow_clone(), codes.zeros_like().narrow(1, 0, 1)],
            1,
        )
    } else {
        codes.shallow_clone()
    }
    .to_kind(Kind::Uint8)
    .view([n, -1, 2]);
    let lo = c.select(2, 0);
    let hi = c.select(2, 1);
    (lo + hi * 16).to_kind(Kind::Uint8)
}

fn unpack_nibbles(packed: &Tensor, k: i64) -> Tensor {
    let p = packed.to_kind(Kind::Int16);
    let lo = p.remainder(16);
    let hi = p.divide_scalar_mode(16, "floor");
    let n = packed.size()[0];
    Tensor::stack(&[lo, hi], 2)
        .view([n, -1])
        .narrow(1, 0, k)
        .to_kind(Kind::Uint8)
}

/// Round-to-nearest int8 of `w` `[N, K]`: codes and per-row scales.
pub fn int8_rtn(w: &Tensor) -> QuantTensor {
    let w = w.to_kind(Kind::Float);
    let amax = w.abs().amax([1i64].as_slice(), false);
    let scale = (amax / 127.0).clamp_min(EPS);
    let codes = (&w / scale.view([-1, 1]))
        .round()
        .clamp(-127.0, 127.0)
        .to_kind(Kind::Int8);
    QuantTensor {
        scheme: Scheme::Int8,
        codes,
        scale,
        min: None,
    }
}

/// A group's (scale `[N]`, min `[N]`) from its weights `[N, g]`.
fn int4_params(wg: &Tensor, range: Range) -> (Tensor, Tensor) {
    let mx = wg.amax([-1i64].as_slice(), false);
    let mn = wg.amin([-1i64].as_slice(), false);
    let fit = |mn: &Tensor, mx: &Tensor| (((mx - mn) / 15.0).clamp_min(EPS), mn.shallow_clone());
    let (mut scale, mut min) = fit(&mn, &mx);
    if range == Range::MinMax {
        return (scale, min);
    }
    let err = |s: &Tensor, m: &Tensor| {
        let (s, m) = (s.unsqueeze(-1), m.unsqueeze(-1));
        (int4_codes(wg, &s, &m) * &s + &m - wg)
            .abs()
            .pow_tensor_scalar(SEARCH_NORM)
            .sum_dim_intlist(-1, false, Kind::Float)
    };
    let mut best = err(&scale, &min);
    for i in 1..SEARCH_STEPS {
        let p = 1.0 - SEARCH_STEP * i as f64;
        let (s1, m1) = fit(&(&mn * p), &(&mx * p));
        let e = err(&s1, &m1);
        let better = e.lt_tensor(&best);
        scale = s1.where_self(&better, &scale);
        min = m1.where_self(&better, &min);
        best = e.where_self(&better, &best);
    }
    (scale, min)
}

fn int4_codes(w: &Tensor, scale: &Tensor, mn: &Tensor) -> Tensor {
    ((w - mn) / scale).round().clamp(0.0, 15.0)
}

/// Round-to-nearest int4 of `w` `[N, K]` in groups of `group` inputs.
pub fn int4_rtn(w: &Tensor, group: i64, range: Range) -> QuantTensor {
    let w = w.to_kind(Kind::Float);
    let (n, k) = w.size2().unwrap_or((0, 0));
    let g = groups(k, group);
    let mut scales = Vec::with_capacity(g as usize);
    let mut mins = Vec::with_capacity(g as usize);
    let mut codes = Vec::with_capacity(g as usize);
    for j in 0..g {
        let len = group.min(k - j * group);
        let wg = w.narrow(1, j * group, len);
        let (s, m) = int4_params(&wg, range);
        codes.push(int4_codes(&wg, &s.view([n, 1]), &m.view([n, 1])));
        scales.push(s);
        mins.push(m);
    }
    QuantTensor {
        scheme: Scheme::Int4 { group },
        codes: Tensor::cat(&codes, 1).to_kind(Kind::Uint8),
        scale: Tensor::stack(&scales, 1),
        min: Some(Tensor::stack(&mins, 1)),
    }
}

/// Quantizes `w` by `scheme` and `rounding` (int4 groups' ranges by `range`); GPTQ needs
/// the layer's Hessian `h` `[K, K]`.
pub fn quantize(
    w: &Tensor,
    scheme: Scheme,
    rounding: Rounding,
    range: Range,
    h: Option<&Tensor>,
) -> Result<QuantTensor> {
    let _g = tch::no_grad_guard();
    if let Scheme::Int4 { group } = scheme {
        if group < 2 {
            return Err(Error::usage(format!(
                "int4 group must be at least 2, got {group}"
            )));
        }
    }
    match rounding {
        Rounding::Rtn => Ok(match scheme {
            Scheme::Int8 => int8_rtn(w),
            Scheme::Int4 { group } => int4_rtn(w, group, range),
        }),
        Rounding::Gptq { .. } => {
            let h = h.ok_or_else(|| Error::bug("GPTQ without a Hessian"))?;
            gptq(w, h, scheme, rounding, range)
        }
    }
}

/// GPTQ (see the module docs) with `rounding`'s dampening, block and column order. Columns
/// whose input was always zero (`H_jj = 0`) are rounded as they are and pass no error on.
pub fn gptq(
    w: &Tensor,
    h: &Tensor,
    scheme: Scheme,
    rounding: Rounding,
    range: Range,
) -> Result<QuantTensor> {
    let Rounding::Gptq {
        damp,
        block,
        act_order,
    } = rounding
    else {
        return Err(Error::bug("gptq() with round-to-nearest"));
    };
    let _g = tch::no_grad_guard();
    let w = w.to_kind(Kind::Float).copy();
    let (n, k) = w.size2().map_err(|_| Error::bug("GPTQ of a non-matrix"))?;
    let h = h.to_kind(Kind::Float).copy();
    let diag = h.diagonal(0, 0, 1);
    let dead = diag.eq(0.0);
    // A dead input: its column of H set to 1 on the diagonal, its weights kept.
    let _ = h.diagonal(0, 0, 1).masked_fill_(&dead, 1.0);
    let mean_diag = h.diagonal(0, 0, 1).mean(Kind::Float).double_value(&[]);
    let _ = h.diagonal(0, 0, 1).g_add_scalar_(damp * mean_diag);
    let group = match scheme {
        Scheme::Int8 => k,
        Scheme::Int4 { group } => group,
    };
    // Static groups (act order): every group's parameters from the weights as they are.
    let fixed = match (scheme, act_order) {
        (Scheme::Int4 { .. }, true) => {
            let q = int4_rtn(&w, group, range);
            Some((
                q.scale,
                q.min
                    .unwrap_or_else(|| Tensor::zeros([n, 1], (Kind::Float, w.device()))),
            ))
        }
        _ => None,
    };
    // Act order: the columns (and H) permuted, loudest input first; codes go back at the end.
    let perm = act_order.then(|| h.diagonal(0, 0, 1).argsort(0, true));
    let (w, h) = match &perm {
        Some(p) => (
            w.index_select(1, p),
            h.index_select(0, p).index_select(1, p),
        ),
        None => (w, h),
    };
    let order: Vec<i64> = match &perm {
        Some(p) => Vec::<i64>::try_from(p).map_err(|e| Error::bug(e.to_string()))?,
        None => (0..k).collect(),
    };
    let l = h.f_linalg_cholesky(false).map_err(|e| {
        Error::usage(format!(
            "GPTQ: the calibration Hessian is not positive definite even with damp = {damp} ({e}); raise --damp or give more calibration rows"
        ))
    })?;
    let hinv = l.cholesky_inverse(false);
    let hinv = hinv.f_linalg_cholesky(true).map_err(|e| {
        Error::usage(format!(
            "GPTQ: the inverse Hessian's Cholesky failed ({e}); raise --damp"
        ))
    })?;
    let int8_scale = match scheme {
        Scheme::Int8 => {
            let amax = w.abs().amax([1i64].as_slice(), false);
            Some((amax / 127.0).clamp_min(EPS))
        }
        Scheme::Int4 { .. } => None,
    };
    // Blocks are whole groups (in order), so a group's parameters are taken from columns
    // that have received every earlier column's error.
    let block = match (scheme, act_order) {
        (Scheme::Int4 { group }, false) => group * ((block.max(1) + group - 1) / group),
        _ => block.max(1),
    };
    let codes = Tensor::zeros([n, k], (Kind::Float, w.device()));
    let g_count = groups(k, group);
    let mut scales: Vec<Tensor> = Vec::with_capacity(g_count as usize);
    let mut mins: Vec<Tensor> = Vec::with_capacity(g_count as usize);
    let mut cur: Option<(Tensor, Tensor)> = None;
    let mut i1 = 0;
    while i1 < k {
        let i2 = (i1 + block).min(k);
        let count = i2 - i1;
        let w1 = w.narrow(1, i1, count).copy();
        let err1 = Tensor::zeros([n, count], (Kind::Float, w.device()));
        let hinv1 = hinv.narrow(0, i1, count).narrow(1, i1, count);
        for i in 0..count {
            let col = i1 + i;
            match (&fixed, scheme) {
                (Some((s, m)), _) => {
                    let g = order[col as usize] / group;
                    cur = Some((s.select(1, g), m.select(1, g)));
                }
                (None, Scheme::Int4 { .. }) if col % group == 0 => {
                    let len = group.min(k - col);
                    let (s, m) = int4_params(&w1.narrow(1, i, len.min(count - i)), range);
                    scales.push(s.shallow_clone());
                    mins.push(m.shallow_clone());
                    cur = Some((s, m));
                }
                _ => {}
            }
            let wc = w1.select(1, i);
            let (q, deq) = match (scheme, &int8_scale, &cur) {
                (Scheme::Int8, Some(s), _) => {
                    let q = (&wc / s).round().clamp(-127.0, 127.0);
                    let deq = &q * s;
                    (q, deq)
                }
                (Scheme::Int4 { .. }, _, Some((s, m))) => {
                    let q = int4_codes(&wc, s, m);
                    let deq = &q * s + m;
                    (q, deq)
                }
                _ => return Err(Error::bug("GPTQ without quantization parameters")),
            };
            codes.select(1, order[col as usize]).copy_(&q);
            let d = hinv1.double_value(&[i, i]);
            let e = (&wc - &deq) / d;
            // Later columns of the block absorb this column's error.
            if i + 1 < count {
                let row = hinv1.select(0, i).narrow(0, i + 1, count - i - 1);
                let upd = e.view([n, 1]).mm(&row.view([1, -1]));
                let mut rest = w1.narrow(1, i + 1, count - i - 1);
                rest -= upd;
            }
            err1.select(1, i).copy_(&e);
        }
        if i2 < k {
            let upd = err1.mm(&hinv.narrow(0, i1, count).narrow(1, i2, k - i2));
            let mut rest = w.narrow(1, i2, k - i2);
            rest -= upd;
        }
        i1 = i2;
    }
    Ok(match scheme {
        Scheme::Int8 => QuantTensor {
            scheme,
            codes: codes.to_kind(Kind::Int8),
            scale: int8_scale.unwrap_or_else(|| Tensor::zeros([n], (Kind::Float, w.device()))),
            min: None,
        },
        Scheme::Int4 { .. } => {
            let (scale, min) = match fixed {
                Some(sm) => sm,
                None => (Tensor::stack(&scales, 1), Tensor::stack(&mins, 1)),
            };
            QuantTensor {
                scheme,
                codes: codes.to_kind(Kind::Uint8),
                scale,
                min: Some(min),
            }
        }
    })
}

/// The quantization record of `model.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuantRecord {
    pub scheme: Scheme,
    pub rounding: Rounding,
    /// How int4 groups' ranges were chosen.
    #[serde(default)]
    pub range: Range,
    /// The quantized weights' names.
    pub tensors: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn int8_error_is_within_half_a_scale_and_zero_rows_are_safe() {
        let _rng = crate::torch_rng_lock();
        tch::manual_seed(1);
        let w = Tensor::randn([6, 40], (Kind::Float, tch::Device::Cpu));
        let _ = w.get(2).zero_();
        let q = int8_rtn(&w);
        assert_eq!(q.codes.kind(), Kind::Int8);
        let err = (q.dequantize() - &w).abs();
        let half = q.scale.view([-1, 1]) / 2.0 + 1e-7;
        assert!(bool::try_from(err.le_tensor(&half).all()).unwrap());
        assert!(bool::try_from(q.dequantize().get(2).eq(0.0).all()).unwrap());
        assert!(q.scale.double_value(&[2]) > 0.0);
        // The largest weight of each row lands exactly on ±127.
        let m = q
            .codes
            .to_kind(Kind::Int64)
            .abs()
            .amax([1i64].as_slice(), false);
        assert_eq!(m.int64_value(&[0]), 127);
    }

    #[test]
    fn int4_groups_round_trip_through_storage_with_a_short_last_group() {
        let _rng = crate::torch_rng_lock();
        tch::manual_seed(2);
        let w = Tensor::randn([5, 75], (Kind::Float, tch::Device::Cpu));
        let q = int4_rtn(&w, 32, Range::MinMax);
        assert_eq!(q.scale.size(), [5, 3]);
        let err = (q.dequantize() - &w).abs();
        let half = expand_groups(&q.scale, 32, 75) / 2.0 + 1e-6;
        assert!(bool::try_from(err.le_tensor(&half).all()).unwrap());
        let mut map: HashMap<String, Tensor> = q.stored("x").into_iter().collect();
        assert_eq!(map["x.q"].size(), [5, 38]);
        let back = QuantTensor::take_stored(&mut map, "x", q.scheme, 5, 75).unwrap();
        assert!(map.is_empty());
        assert!(back.codes.equal(&q.codes));
        assert!(back.dequantize().equal(&q.dequantize()));
    }

    #[test]
    fn two_four_keeps_two_of_every_four_and_the_larger_ones() {
        let _rng = crate::torch_rng_lock();
        tch::manual_seed(3);
        let w = Tensor::randn([8, 32], (Kind::Float, tch::Device::Cpu));
        let s = scores(&w, PruneMethod::Magnitude, None).unwrap();
        let keep = mask_of(&s, 0.5, Pattern::TwoFour, Scope::Row).unwrap();
        let per_group =
            keep.to_kind(Kind::Int64)
                .view([8, 8, 4])
                .sum_dim_intlist(2, false, Kind::Int64);
        assert!(bool::try_from(per_group.eq(2).all()).unwrap());
        // Every kept weight is at least as large as every pruned one of its group.
        let a = w.abs().view([8, 8, 4]);
        let k = keep.view([8, 8, 4]);
        let kept_min = a
            .where_self(&k, &Tensor::from(f32::INFINITY))
            .amin([2i64].as_slice(), false);
        let cut_max = a
            .where_self(&k.logical_not(), &Tensor::from(-1.0f32))
            .amax([2i64].as_slice(), false);
        assert!(bool::try_from(kept_min.ge_tensor(&cut_max).all()).unwrap());
        assert!(mask_of(&s.narrow(1, 0, 30), 0.5, Pattern::TwoFour, Scope::Row).is_err());
    }

    #[test]
    fn gptq_beats_rtn_on_its_calibration_inputs() {
        let _rng = crate::torch_rng_lock();
        tch::manual_seed(4);
        let opts = (Kind::Float, tch::Device::Cpu);
        // Correlated inputs: where GPTQ's error feedback pays.
        let base = Tensor::randn([512, 8], opts);
        let x = base.mm(&Tensor::randn([8, 64], opts)) + Tensor::randn([512, 64], opts) * 0.1;
        let w = Tensor::randn([16, 64], opts);
        let h = x.tr().mm(&x) * (2.0 / 512.0);
        let y = x.mm(&w.tr());
        let out_err = |q: &QuantTensor| {
            (x.mm(&q.dequantize().tr()) - &y)
                .square()
                .mean(Kind::Float)
                .double_value(&[])
        };
        for scheme in [Scheme::Int8, Scheme::Int4 { group: 32 }] {
            let r = quantize(&w, scheme, Rounding::Rtn, Range::MinMax, None).unwrap();
            let er = out_err(&r);
            for act_order in [false, true] {
                let rounding = Rounding::Gptq {
                    damp: 0.01,
                    block: 128,
                    act_order,
                };
                let g = quantize(&w, scheme, rounding, Range::MinMax, Some(&h)).unwrap();
                let eg = out_err(&g);
                assert!(eg < er, "{scheme:?} {act_order}: gptq {eg} vs rtn {er}");
                if let (Scheme::Int4 { .. }, true) = (scheme, act_order) {
                    // Static groups: the parameters are round-to-nearest's, only the codes moved.
                    assert!(g.scale.equal(&r.scale));
                    assert!(g.min.as_ref().unwrap().equal(r.min.as_ref().unwrap()));
                }
            }
        }
    }

    /// The range search never does worse than min/max in its own norm (p = 1 is among its
    /// candidates), never widens a range, and on Gaussian rows shrinks some.
    #[test]
    fn range_search_never_loses_to_min_max() {
        let _rng = crate::torch_rng_lock();
        tch::manual_seed(5);
        let w = Tensor::randn([16, 128], (Kind::Float, tch::Device::Cpu));
        let err = |q: &QuantTensor| {
            (q.dequantize() - &w)
                .abs()
                .pow_tensor_scalar(SEARCH_NORM)
                .view([16, 4, 32])
                .sum_dim_intlist(2, false, Kind::Float)
        };
        let plain = int4_rtn(&w, 32, Range::MinMax);
        let search = int4_rtn(&w, 32, Range::Search);
        let (ep, es) = (err(&plain), err(&search));
        assert!(bool::try_from(es.le_tensor(&(&ep * (1.0 + 1e-6))).all()).unwrap());
        assert!(
            bool::try_from(search.scale.le_tensor(&(&plain.scale * (1.0 + 1e-6))).all()).unwrap()
        );
        let shrunk = search
            .scale
            .lt_tensor(&(&plain.scale * 0.999))
            .sum(Kind::Int64)
            .int64_value(&[]);
        assert!(shrunk > 0, "no group's range shrank");
        assert!(es.sum(Kind::Float).double_value(&[]) < ep.sum(Kind::Float).double_value(&[]));
    }

    #[test]
    fn compressible_names_only_block_matrices() {
        assert!(compressible("blocks.3.attn.qkv.weight"));
        assert!(compressible("blocks.0.mlp.out.weight"));
        assert!(!compressible("blocks.0.mlp.out.bias"));
        assert!(!compressible("tok_emb.weight"));
        assert!(!compressible("lm_head.weight"));
        assert!(!compressible("blocks.x.attn.qkv.weight"));
    }
}
