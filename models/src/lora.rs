//! LoRA: low-rank adapters on a frozen model, and folding them back into full weights.
//!
//! A LoRA adapter (Hu et al., 2021, as Hugging Face `peft` implements it) replaces a linear
//! layer's `y = x·Wᵀ` by `y = x·Wᵀ + s·(drop(x)·Aᵀ)·Bᵀ`, with `A` of shape `[rank, in]`,
//! `B` of shape `[out, rank]` and `s = alpha / rank`. `A` starts uniform in `±1/√in` (PyTorch's
//! Kaiming-uniform default for a linear layer, as `peft`), `B` at zero, so a fresh adapter
//! leaves the model's outputs exactly as they were. The base weights are frozen
//! (`requires_grad` false) and only the adapters are trained: [`Transformer::trainable`]
//! returns them, and a LoRA run's checkpoints hold only them.
//!
//! # Targets
//!
//! Adapters go on the linear layers named in [`LoraConfig::targets`], in every block:
//!
//! | target | layer (see `transformer`'s weight names) | also accepted |
//! |---|---|---|
//! | `q`, `k`, `v` | the query, key or value rows of `attn.qkv` (each its own adapter, as `peft` puts one on each of `q_proj`, `k_proj`, `v_proj`) | `q_proj`, `k_proj`, `v_proj` |
//! | `proj` | `attn.proj`, attention's output projection | `o`, `o_proj` |
//! | `fc` | `mlp.fc`, the GELU MLP's first layer | `fc1` |
//! | `gate`, `up` | `mlp.gate`, `mlp.up` (SwiGLU) | `gate_proj`, `up_proj` |
//! | `out` | `mlp.out`, the MLP's output layer | `down`, `down_proj`, `fc2` |
//!
//! `all-linear` names every one the model has. The adapters are parameters named
//! `blocks.{i}.attn.q.lora_a` / `.lora_b`, `blocks.{i}.mlp.gate.lora_a`, and so on.
//!
//! # Merging
//!
//! [`merge_into`] folds adapters into full weights in fp32: `W' = W + s·B·A` (on the rows of
//! `attn.qkv` a `q`, `k` or `v` adapter covers). [`merged`] does it for a LoRA checkpoint:
//! it loads the base model its [`AdapterRecord`] names (or another path given), checks the
//! base's weights against the recorded [`weights_hash`], and returns full weights that every
//! model command reads. `quern merge` writes them as a quern model directory, and
//! [`crate::store::load_weights`] merges a LoRA checkpoint or run on the fly, so `quern
//! generate`, `quern eval` and `[init] from` take a LoRA run as they take any model.
//!
//! [`Transformer::trainable`]: crate::Transformer::trainable

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use quern_core::error::{IoContext, Place};
use quern_core::{Error, Result};
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::config::{Mlp, ModelConfig};
use crate::store::{self, Weights};

/// The `[lora]` section of `run.toml`. Every key has a default (the [`Default`] impl).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoraConfig {
    /// Rank of the adapters, >= 1. Default 8 (`peft`'s).
    pub rank: usize,
    /// Scale numerator: adapters are scaled by `alpha / rank`; > 0. Default 8 (`peft`'s
    /// `lora_alpha`).
    pub alpha: f64,
    /// Dropout on the adapters' input while training, in [0, 1). Default 0.0.
    pub dropout: f64,
    /// Layers to adapt (see the module docs): `q`, `k`, `v`, `proj`, `fc`, `gate`, `up`,
    /// `out`, or `all-linear`. Default `["q", "v"]` (`peft`'s for Llama).
    pub targets: Vec<String>,
}

impl Default for LoraConfig {
    fn default() -> Self {
        LoraConfig {
            rank: 8,
            alpha: 8.0,
            dropout: 0.0,
            targets: vec!["q".into(), "v".into()],
        }
    }
}

/// A layer an adapter can go on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Target {
    Q,
    K,
    V,
    Proj,
    Fc,
    Gate,
    Up,
    Out,
}

/// Every target, in the order adapters are created.
const ALL: [Target; 8] = [
    Target::Q,
    Target::K,
    Target::V,
    Target::Proj,
    Target::Fc,
    Target::Gate,
    Target::Up,
    Target::Out,
];

/// Other spellings (Hugging Face module names) of each target.
const ALIASES: [(&str, Target); 11] = [
    ("q_proj", Target::Q),
    ("k_proj", Target::K),
    ("v_proj", Target::V),
    ("o", Target::Proj),
    ("o_proj", Target::Proj),
    ("fc1", Target::Fc),
    ("gate_proj", Target::Gate),
    ("up_proj", Target::Up),
    ("down", Target::Out),
    ("down_proj", Target::Out),
    ("fc2", Target::Out),
];

impl Target {
    /// quern's name of the target.
    pub fn name(self) -> &'static str {
        match self {
            Target::Q => "q",
            Target::K => "k",
            Target::V => "v",
            Target::Proj => "proj",
            Target::Fc => "fc",
            Target::Gate => "gate",
            Target::Up => "up",
            Target::Out => "out",
        }
    }

    /// A target by quern's name or an alias.
    pub fn parse(s: &str) -> Option<Target> {
        ALL.into_iter()
            .find(|t| t.name() == s)
            .or_else(|| ALIASES.iter().find(|(a, _)| *a == s).map(|(_, t)| *t))
    }

    /// Whether a model of `cfg` has this layer.
    pub fn exists_in(self, cfg: &ModelConfig) -> bool {
        match self {
            Target::Fc => cfg.mlp != Mlp::SwiGlu,
            Target::Gate | Target::Up => cfg.mlp == Mlp::SwiGlu,
            _ => true,
        }
    }

    /// The adapter's name prefix in block `i` (`blocks.{i}.attn.q`).
    pub fn prefix(self, i: usize) -> String {
        let part = match self {
            Target::Q | Target::K | Target::V | Target::Proj => "attn",
            _ => "mlp",
        };
        format!("blocks.{i}.{part}.{}", self.name())
    }

    /// The base weight the adapter adds to in block `i`.
    pub fn base_weight(self, i: usize) -> String {
        match self {
            Target::Q | Target::K | Target::V => format!("blocks.{i}.attn.qkv.weight"),
            t => format!("{}.weight", t.prefix(i)),
        }
    }

    /// `(first row, rows)` of the base weight the adapter covers.
    pub fn rows(self, cfg: &ModelConfig) -> (i64, i64) {
        let hd = cfg.head_dim() as i64;
        let (h, kv) = (cfg.heads as i64, cfg.kv_heads() as i64);
        match self {
            Target::Q => (0, h * hd),
            Target::K => (h * hd, kv * hd),
            Target::V => ((h + kv) * hd, kv * hd),
            Target::Proj | Target::Out => (0, cfg.dim as i64),
            Target::Fc | Target::Gate | Target::Up => (0, cfg.hidden() as i64),
        }
    }

    /// Input width of the layer.
    pub fn in_features(self, cfg: &ModelConfig) -> i64 {
        match self {
            Target::Out => cfg.hidden() as i64,
            _ => cfg.dim as i64,
        }
    }
}

fn valid_names(cfg: Option<&ModelConfig>) -> String {
    ALL.into_iter()
        .filter(|t| cfg.is_none_or(|c| t.exists_in(c)))
        .map(Target::name)
        .collect::<Vec<_>>()
        .join(", ")
}

impl LoraConfig {
    /// The adapters' scale, `alpha / rank`.
    pub fn scale(&self) -> f64 {
        self.alpha / self.rank as f64
    }

    /// Checks ranges and target names; errors name the key (`lora.rank`, ...).
    pub fn validate(&self) -> Result<()> {
        if self.rank == 0 {
            return Err(Error::bad_config("lora.rank", "must be at least 1, got 0"));
        }
        if !(self.alpha > 0.0 && self.alpha.is_finite()) {
            return Err(Error::bad_config(
                "lora.alpha",
                format!("must be a positive number, got {}", self.alpha),
            ));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(Error::bad_config(
                "lora.dropout",
                format!("must be in [0, 1), got {}", self.dropout),
            ));
        }
        self.parse_targets().map(|_| ())
    }

    /// The targets by name, `all-linear` expanded to every target (of any family).
    fn parse_targets(&self) -> Result<Vec<Target>> {
        if self.targets.is_empty() {
            return Err(Error::bad_config(
                "lora.targets",
                format!(
                    "must name at least one layer: {} or all-linear",
                    valid_names(None)
                ),
            ));
        }
        let mut out = Vec::new();
        for name in &self.targets {
            if name == "all-linear" {
                out.extend(ALL);
                continue;
            }
            let t = Target::parse(name).ok_or_else(|| {
                Error::bad_config(
                    "lora.targets",
                    format!(
                        "unknown target `{name}`; valid: {}, or all-linear (Hugging Face names such as q_proj, o_proj, down_proj are accepted too)",
                        valid_names(None)
                    ),
                )
            })?;
            if out.contains(&t) && !self.targets.iter().any(|n| n == "all-linear") {
                return Err(Error::bad_config(
                    "lora.targets",
                    format!("`{name}` names the {} layer twice", t.name()),
                ));
            }
            out.push(t);
        }
        Ok(out)
    }

    /// The targets of a model of `cfg`, in a fixed order: an error names a target the
    /// model does not have (`gate` in a GELU MLP) and lists those it has.
    pub fn resolve(&self, cfg: &ModelConfig) -> Result<Vec<Target>> {
        self.validate()?;
        let all = self.targets.iter().any(|n| n == "all-linear");
        let mut out = Vec::new();
        for t in self.parse_targets()? {
            if !t.exists_in(cfg) {
                if all {
                    continue;
                }
                return Err(Error::bad_config(
                    "lora.targets",
                    format!(
                        "this {}-like model has no `{}` layer ({} MLP); valid for it: {}",
                        cfg.family(),
                        t.name(),
                        if cfg.mlp == Mlp::SwiGlu {
                            "a SwiGLU"
                        } else {
                            "a GELU"
                        },
                        valid_names(Some(cfg))
                    ),
                ));
            }
            if !out.contains(&t) {
                out.push(t);
            }
        }
        out.sort();
        Ok(out)
    }
}

/// One adapter on some output rows of a linear layer (held by the transformer's `Linear`).
pub(crate) struct Adapter {
    pub(crate) target: Target,
    pub(crate) offset: i64,
    pub(crate) rows: i64,
    pub(crate) a: Tensor,
    pub(crate) b: Tensor,
    pub(crate) scale: f64,
    pub(crate) dropout: f64,
}

impl Adapter {
    /// `s·(drop(x)·Aᵀ)·Bᵀ`.
    fn delta(&self, x: &Tensor, train: bool) -> Tensor {
        let x = if train && self.dropout > 0.0 {
            x.dropout(self.dropout, true)
        } else {
            x.shallow_clone()
        };
        x.linear(&self.a, None::<Tensor>)
            .linear(&self.b, None::<Tensor>)
            * self.scale
    }
}

/// A linear layer's output `y` plus its adapters' contributions on the rows each covers
/// (`adapters` sorted by `offset`, not overlapping).
pub(crate) fn add_deltas(y: Tensor, x: &Tensor, adapters: &[Adapter], train: bool) -> Tensor {
    let out = y.size().last().copied().unwrap_or(0);
    if let [ad] = adapters {
        if ad.offset == 0 && ad.rows == out {
            return y + ad.delta(x, train);
        }
    }
    let mut parts = Vec::with_capacity(2 * adapters.len() + 1);
    let mut pos = 0;
    for ad in adapters {
        if ad.offset > pos {
            parts.push(y.narrow(-1, pos, ad.offset - pos));
        }
        parts.push(y.narrow(-1, ad.offset, ad.rows) + ad.delta(x, train));
        pos = ad.offset + ad.rows;
    }
    if pos < out {
        parts.push(y.narrow(-1, pos, out - pos));
    }
    Tensor::cat(&parts, -1)
}

/// What a LoRA checkpoint records about its adapters (`state.json`'s `lora`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdapterRecord {
    /// The `[lora]` section the adapters were trained with.
    pub lora: LoraConfig,
    /// The base model (`init.from`, as resolved: a run resolves to its checkpoint), absolute.
    pub base: PathBuf,
    /// [`weights_hash`] of the base model's weights: another base is refused.
    pub base_hash: String,
    /// The classification head trained with the adapters (`train.objective = "cls"`): its
    /// weights (`head.*`) are saved in full beside the adapters and replace the base's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head: Option<crate::head::HeadConfig>,
    /// BERT's MLM head trained with the adapters (`mlm`, `nsp`): its weights (`mlm_head.*`)
    /// are saved in full beside the adapters and replace the base's. Default false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub mlm_head: bool,
}

impl AdapterRecord {
    /// The record of adapters `lora` trained on `base` (read from `base.path`), with the
    /// model's classification head and MLM head config when they train beside them.
    pub fn for_base(
        lora: &LoraConfig,
        base: &Weights,
        head: Option<crate::head::HeadConfig>,
        mlm_head: bool,
    ) -> Result<Self> {
        Ok(AdapterRecord {
            lora: lora.clone(),
            base: fs::canonicalize(&base.path).at(&base.path)?,
            base_hash: weights_hash(&base.tensors),
            head,
            mlm_head,
        })
    }
}

/// xxh3-64 (hex) of named weights as a model holds them: names in sorted order, each with
/// its shape and its values as contiguous fp32. The same weights give the same hash from
/// any source (a GGUF file and its `quern import` agree).
pub fn weights_hash(tensors: &HashMap<String, Tensor>) -> String {
    let mut names: Vec<&String> = tensors.keys().collect();
    names.sort();
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    let mut buf = Vec::new();
    for name in names {
        let t = tensors[name]
            .to_device(tch::Device::Cpu)
            .to_kind(Kind::Float)
            .contiguous();
        h.update(name.as_bytes());
        h.update(&[0]);
        for d in t.size() {
            h.update(&d.to_le_bytes());
        }
        let n = t.numel();
        buf.resize(4 * n, 0);
        t.copy_data_u8(&mut buf, n);
        h.update(&buf);
    }
    format!("{:016x}", h.digest())
}

/// Folds adapters (`adapters`, under their parameter names) into `weights` (the base model's,
/// under quern's names) in fp32: `W' = W + (alpha/rank)·B·A`. Every adapter the config
/// implies must be there with its shape, and nothing else; `file` names them in errors.
pub fn merge_into(
    weights: &mut HashMap<String, Tensor>,
    model: &ModelConfig,
    lora: &LoraConfig,
    adapters: &HashMap<String, Tensor>,
    file: &Path,
) -> Result<()> {
    let _g = tch::no_grad_guard();
    let targets = lora.resolve(model).map_err(|e| match e {
        Error::BadConfig { key, message } => {
            Error::bad_input(Place::file(file), format!("{key}: {message}"))
        }
        e => e,
    })?;
    let r = lora.rank as i64;
    let get = |name: &str, shape: [i64; 2]| -> Result<Tensor> {
        let t = adapters.get(name).ok_or_else(|| {
            Error::bad_input(
                Place::file(file),
                format!("adapter tensor `{name}` missing: adapters of another [lora] config?"),
            )
        })?;
        if t.size() != shape {
            return Err(Error::bad_input(
                Place::file(file),
                format!(
                    "adapter tensor `{name}` has shape {:?}, the [lora] config implies {shape:?}",
                    t.size()
                ),
            ));
        }
        Ok(t.to_kind(Kind::Float))
    };
    let mut used = 0;
    for i in 0..model.layers {
        for &t in &targets {
            let (offset, rows) = t.rows(model);
            let p = t.prefix(i);
            let a = get(&format!("{p}.lora_a"), [r, t.in_features(model)])?;
            let b = get(&format!("{p}.lora_b"), [rows, r])?;
            used += 2;
            let wname = t.base_weight(i);
            let w = weights
                .get(&wname)
                .ok_or_else(|| {
                    Error::bad_input(
                        Place::file(file),
                        format!("the base model has no `{wname}` to merge into"),
                    )
                })?
                .to_kind(Kind::Float);
            let delta = b.matmul(&a) * lora.scale();
            let total = w.size().first().copied().unwrap_or(0);
            if offset + rows > total || w.size().get(1) != Some(&t.in_features(model)) {
                return Err(Error::bad_input(
                    Place::file(file),
                    format!(
                        "the base weight `{wname}` has shape {:?}, which the adapters do not fit",
                        w.size()
                    ),
                ));
            }
            let merged = if offset == 0 && rows == total {
                w + delta
            } else {
                let mut parts = Vec::with_capacity(3);
                if offset > 0 {
                    parts.push(w.narrow(0, 0, offset));
                }
                parts.push(w.narrow(0, offset, rows) + delta);
                if offset + rows < total {
                    parts.push(w.narrow(0, offset + rows, total - offset - rows));
                }
                Tensor::cat(&parts, 0)
            };
            weights.insert(wname, merged.contiguous());
        }
    }
    if used != adapters.len() {
        let mut extra: Vec<&String> = adapters
            .keys()
            .filter(|k| {
                !(0..model.layers).any(|i| {
                    targets.iter().any(|t| {
                        let p = t.prefix(i);
                        **k == format!("{p}.lora_a") || **k == format!("{p}.lora_b")
                    })
                })
            })
            .collect();
        extra.sort();
        return Err(Error::bad_input(
            Place::file(file),
            format!(
                "{} tensor(s) that are not adapters of this [lora] config, e.g. `{}`",
                extra.len(),
                extra.first().map(|s| s.as_str()).unwrap_or("?")
            ),
        ));
    }
    Ok(())
}

/// The LoRA record in a checkpoint directory's `state.json`, or `None` for a checkpoint of
/// full weights.
pub fn read_record(checkpoint: &Path) -> Result<Option<AdapterRecord>> {
    let path = checkpoint.join("state.json");
    let text = fs::read_to_string(&path).at(&path)?;
    let value: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
        Error::bad_input(
            Place::file(&path).with_line(e.line() as u64),
            format!("not a quern checkpoint state: {e}"),
        )
    })?;
    record_of(&value, &path)
}

/// The `lora` field of a parsed `state.json` (`path` names it in errors).
pub(crate) fn record_of(state: &serde_json::Value, path: &Path) -> Result<Option<AdapterRecord>> {
    match state.get("lora") {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(v) => serde_json::from_value(v.clone())
            .map(Some)
            .map_err(|e| Error::bad_input(Place::file(path), format!("`lora`: {e}"))),
    }
}

/// The checkpoint a path names: a checkpoint directory itself, or a run's newest.
pub fn checkpoint_dir(path: &Path) -> Result<PathBuf> {
    match store::detect(path)? {
        store::SourceKind::Checkpoint => Ok(path.to_path_buf()),
        store::SourceKind::Run => store::newest_checkpoint(path),
        other => Err(Error::bad_input(
            Place::file(path),
            format!(
                "a {}, not a LoRA training run or checkpoint (a run directory with checkpoints/, or checkpoints/step-N/)",
                other.name()
            ),
        )),
    }
}

/// Full weights of a LoRA checkpoint (`dir`, whose `state.json` holds `record`): the base
/// model (`base`, or the one recorded) with the adapters merged in fp32. The base must be
/// the one the adapters were trained on: same weights hash, same shape. The result carries
/// the base's metadata (special ids, chat template) and tokenizer (the checkpoint's when
/// the base has none).
pub fn merged(dir: &Path, record: &AdapterRecord, base: Option<&Path>) -> Result<Weights> {
    // A base may itself be a LoRA run (adapters trained on a merged model); a chain deeper
    // than this is a cycle in hand-edited records, refused instead of recursing forever.
    const MAX_CHAIN: usize = 8;
    thread_local! {
        static DEPTH: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    }
    let depth = DEPTH.with(|d| d.get());
    if depth >= MAX_CHAIN {
        return Err(Error::bad_input(
            Place::file(dir.join("state.json")),
            format!(
                "LoRA adapters on adapters more than {MAX_CHAIN} deep: do the recorded base models form a cycle?"
            ),
        ));
    }
    DEPTH.with(|d| d.set(depth + 1));
    let result = merged_once(dir, record, base);
    DEPTH.with(|d| d.set(depth));
    result
}

fn merged_once(dir: &Path, record: &AdapterRecord, base: Option<&Path>) -> Result<Weights> {
    let state_path = dir.join("state.json");
    let base_path = base.unwrap_or(&record.base);
    if !base_path.exists() {
        return Err(Error::bad_input(
            Place::file(&state_path),
            format!(
                "the adapters' base model {} is not there (moved or deleted?); name it with --base",
                base_path.display()
            ),
        ));
    }
    let mut w = store::load_weights(base_path).map_err(|e| {
        Error::bad_input(
            Place::file(base_path),
            format!(
                "reading the base model of the adapters in {}: {e}",
                dir.display()
            ),
        )
    })?;
    let hash = weights_hash(&w.tensors);
    if hash != record.base_hash {
        return Err(Error::bad_input(
            Place::file(base_path),
            format!(
                "weights hash {hash}, but the adapters in {} were trained on a base with hash {} \
                 ({}): pass the base model they were trained on",
                dir.display(),
                record.base_hash,
                record.base.display()
            ),
        ));
    }
    let adapters_file = dir.join(store::WEIGHTS);
    let mut adapters = store::read_safetensors(&adapters_file)?;
    // A classifier's head trained in full beside the adapters: it joins the weights as is.
    let head: Vec<String> = adapters
        .keys()
        .filter(|k| k.starts_with(crate::head::PREFIX))
        .cloned()
        .collect();
    if let Some(h) = &record.head {
        if head.is_empty() {
            return Err(Error::bad_input(
                Place::file(&adapters_file),
                "state.json records a classification head, but no `head.*` tensor is here",
            ));
        }
        w.tensors.retain(|k, _| !k.starts_with(crate::head::PREFIX));
        for k in head {
            if let Some(t) = adapters.remove(&k) {
                w.tensors.insert(k, t.to_kind(Kind::Float));
            }
        }
        w.meta.config.head = Some(h.clone());
    }
    if record.mlm_head {
        let names: Vec<String> = adapters
            .keys()
            .filter(|k| k.starts_with(crate::mlm_head::PREFIX))
            .cloned()
            .collect();
        if names.is_empty() {
            return Err(Error::bad_input(
                Place::file(&adapters_file),
                "state.json records an MLM head, but no `mlm_head.*` tensor is here",
            ));
        }
        w.tensors
            .retain(|k, _| !k.starts_with(crate::mlm_head::PREFIX));
        for k in names {
            if let Some(t) = adapters.remove(&k) {
                w.tensors.insert(k, t.to_kind(Kind::Float));
            }
        }
        w.meta.config.mlm_head = Some(true);
    }
    // A pruned base keeps its zeros: the dense deltas are masked where the base is zero.
    let keep: Vec<(String, Tensor)> = w
        .meta
        .config
        .pruned
        .iter()
        .filter_map(|n| w.tensors.get(n).map(|t| (n.clone(), t.ne(0.0))))
        .collect();
    merge_into(
        &mut w.tensors,
        &w.meta.config,
        &record.lora,
        &adapters,
        &adapters_file,
    )?;
    for (name, k) in keep {
        if let Some(t) = w.tensors.get_mut(&name) {
            *t = &*t * k.to_kind(t.kind());
        }
    }
    // Quantized bases merge dequantized; the merged model is no longer quantized.
    w.meta.quant = None;
    w.quant.clear();
    if w.tokenizer_json.is_none() {
        let tok = dir.join(store::TOKENIZER);
        if tok.exists() {
            w.tokenizer_json = Some(fs::read_to_string(&tok).at(&tok)?);
        }
    }
    w.meta.source = Some(format!(
        "lora:{} merged into {}",
        dir.display(),
        base_path.display()
    ));
    w.meta.quern_version = env!("CARGO_PKG_VERSION").into();
    w.kind = store::SourceKind::Checkpoint;
    w.path = dir.to_path_buf();
    Ok(w)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transformer::Transformer;
    use tch::Device;

    fn llama() -> ModelConfig {
        ModelConfig {
            layers: 2,
            heads: 4,
            dim: 32,
            seq_len: Some(16),
            vocab_size: Some(40),
            ..ModelConfig::llama().with_kv_heads(2)
        }
    }

    fn families() -> Vec<ModelConfig> {
        let sized = |c: ModelConfig| ModelConfig {
            layers: 2,
            heads: 4,
            dim: 32,
            seq_len: Some(16),
            vocab_size: Some(40),
            ..c
        };
        vec![
            llama(),
            sized(ModelConfig::gpt2()),
            sized(ModelConfig::bert()),
        ]
    }

    fn lora(rank: usize, targets: &[&str]) -> LoraConfig {
        LoraConfig {
            rank,
            alpha: 2.0 * rank as f64,
            dropout: 0.0,
            targets: targets.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
        (a - b).abs().max().double_value(&[])
    }

    /// Gives every `lora_b` random values, so the adapters change the model.
    fn randomise_b(m: &mut Transformer) {
        let _g = tch::no_grad_guard();
        for p in &mut m.trainable_mut().params {
            if p.name.ends_with("lora_b") {
                let _ = p.tensor.normal_(0.0, 1.0);
            }
        }
    }

    #[test]
    fn bad_configs_name_the_key() {
        let cases: Vec<(LoraConfig, &str, &str)> = vec![
            (lora(0, &["q"]), "lora.rank", "at least 1"),
            (
                LoraConfig {
                    alpha: 0.0,
                    ..lora(4, &["q"])
                },
                "lora.alpha",
                "positive",
            ),
            (
                LoraConfig {
                    alpha: f64::NAN,
                    ..lora(4, &["q"])
                },
                "lora.alpha",
                "positive",
            ),
            (
                LoraConfig {
                    dropout: 1.0,
                    ..lora(4, &["q"])
                },
                "lora.dropout",
                "[0, 1)",
            ),
            (lora(4, &[]), "lora.targets", "at least one"),
            (lora(4, &["q", "qq"]), "lora.targets", "`qq`"),
            (lora(4, &["q", "q_proj"]), "lora.targets", "twice"),
        ];
        for (cfg, key, needle) in cases {
            match cfg.validate() {
                Err(Error::BadConfig { key: k, message }) => {
                    assert_eq!(k, key, "{cfg:?}: {message}");
                    assert!(message.contains(needle), "{cfg:?}: {message}");
                }
                other => panic!("{cfg:?} gave {other:?}"),
            }
        }
        // An unknown name lists the valid ones.
        let e = lora(4, &["query"]).validate().unwrap_err().to_string();
        assert!(
            e.contains("q, k, v, proj, fc, gate, up, out") && e.contains("all-linear"),
            "{e}"
        );
        // A layer the family does not have is named with those it has.
        let gpt2 = families().remove(1);
        let e = lora(4, &["gate"]).resolve(&gpt2).unwrap_err().to_string();
        assert!(
            e.contains("lora.targets")
                && e.contains("`gate`")
                && e.contains("q, k, v, proj, fc, out"),
            "{e}"
        );
        let e = lora(4, &["fc1"]).resolve(&llama()).unwrap_err().to_string();
        assert!(e.contains("`fc`") && e.contains("gate, up, out"), "{e}");
        // all-linear takes what the family has; aliases map to quern's names.
        assert_eq!(
            lora(4, &["all-linear"]).resolve(&llama()).unwrap(),
            vec![
                Target::Q,
                Target::K,
                Target::V,
                Target::Proj,
                Target::Gate,
                Target::Up,
                Target::Out
            ]
        );
        assert_eq!(
            lora(4, &["down_proj", "o_proj", "fc1"])
                .resolve(&gpt2)
                .unwrap(),
            vec![Target::Proj, Target::Fc, Target::Out]
        );
        assert_eq!(LoraConfig::default().validate().ok(), Some(()));
    }

    /// With B = 0 every family gives exactly the base model's logits, and only the
    /// adapters require gradients.
    #[test]
    fn a_fresh_adapter_equals_the_base_model() {
        let _rng = crate::torch_rng_lock();
        for cfg in families() {
            tch::manual_seed(11);
            let mut m = Transformer::new(&cfg, Device::Cpu);
            let ids = Tensor::from_slice(&[1i64, 5, 2, 7, 3, 9]).view([2, 3]);
            let causal = !cfg.post_norm;
            let before = m.forward(&ids, causal, false);
            m.add_lora(&lora(4, &["all-linear"])).unwrap();
            let after = m.forward(&ids, causal, false);
            assert_eq!(max_diff(&before, &after), 0.0, "{}", cfg.family());
            assert!(m.params().params.iter().all(|p| !p.tensor.requires_grad()));
            assert!(m
                .trainable()
                .params
                .iter()
                .all(|p| p.tensor.requires_grad()));
            let per_block = if cfg.mlp == Mlp::SwiGlu { 7 } else { 6 };
            assert_eq!(m.trainable().params.len(), 2 * 2 * per_block);
            // Training mode with adapter dropout still adds nothing while B = 0.
            let mut d = lora(4, &["q", "v"]);
            d.dropout = 0.5;
            let mut m2 = Transformer::new(&cfg, Device::Cpu);
            let base = m2.forward(&ids, causal, false);
            m2.add_lora(&d).unwrap();
            assert_eq!(max_diff(&base, &m2.forward(&ids, causal, true)), 0.0);
            assert!(m2.add_lora(&d).is_err(), "adapters added twice");
        }
    }

    /// Gradients reach the adapters and nothing else.
    #[test]
    fn only_adapters_get_gradients() {
        let _rng = crate::torch_rng_lock();
        tch::manual_seed(12);
        let mut m = Transformer::new(&llama(), Device::Cpu);
        m.add_lora(&lora(2, &["q", "k", "v", "proj", "up"]))
            .unwrap();
        randomise_b(&mut m);
        let ids = Tensor::from_slice(&[1i64, 5, 2, 7, 3, 9]).view([1, 6]);
        m.forward(&ids, true, true).sum(Kind::Float).backward();
        for p in &m.params().params {
            assert!(!p.tensor.grad().defined(), "{} got a gradient", p.name);
        }
        for p in &m.trainable().params {
            let g = p.tensor.grad();
            assert!(g.defined(), "{} got no gradient", p.name);
            assert!(
                g.abs().sum(Kind::Float).double_value(&[]) > 0.0,
                "{}",
                p.name
            );
        }
    }

    /// Merged weights give the unmerged adapters' logits (fp32), and those differ from the
    /// base's; the merge checks what it is given.
    #[test]
    fn merged_weights_equal_the_unmerged_adapters() {
        let _rng = crate::torch_rng_lock();
        for cfg in families() {
            for targets in [&["all-linear"][..], &["k"], &["q", "v", "out"]] {
                if cfg.mlp != Mlp::SwiGlu && targets.contains(&"gate") {
                    continue;
                }
                tch::manual_seed(13);
                let mut m = Transformer::new(&cfg, Device::Cpu);
                let base: HashMap<String, Tensor> = m.params().named().into_iter().collect();
                let l = lora(3, targets);
                m.add_lora(&l).unwrap();
                randomise_b(&mut m);
                let ids = Tensor::from_slice(&[1i64, 5, 2, 7, 3, 9, 4, 4]).view([2, 4]);
                let causal = !cfg.post_norm;
                let unmerged = m.forward(&ids, causal, false);
                let adapters: HashMap<String, Tensor> = m.trainable().named().into_iter().collect();
                let mut w: HashMap<String, Tensor> =
                    base.iter().map(|(k, v)| (k.clone(), v.copy())).collect();
                merge_into(&mut w, &cfg, &l, &adapters, Path::new("a")).unwrap();
                let merged = Transformer::from_weights(&cfg, Device::Cpu, &w, Path::new("w"))
                    .unwrap()
                    .forward(&ids, causal, false);
                let plain = Transformer::from_weights(&cfg, Device::Cpu, &base, Path::new("w"))
                    .unwrap()
                    .forward(&ids, causal, false);
                let d = max_diff(&merged, &unmerged);
                // Observed: at most 3e-7 (fp32 rounding of W + s·B·A).
                assert!(
                    d < 1e-6,
                    "{} {targets:?}: merged differs by {d}",
                    cfg.family()
                );
                let moved = max_diff(&plain, &unmerged);
                // Observed: 1.7e-4 (BERT, `k` only) to 0.8.
                assert!(
                    moved > 1e-4,
                    "{} {targets:?}: adapters changed nothing ({moved})",
                    cfg.family()
                );
                // Merging only touched the adapted weights.
                for (k, v) in &base {
                    let adapted = (0..cfg.layers).any(|i| {
                        l.resolve(&cfg)
                            .unwrap()
                            .iter()
                            .any(|t| &t.base_weight(i) == k)
                    });
                    assert_eq!(!adapted, v.equal(&w[k]), "{k}");
                }
            }
        }
        // Missing, misshapen and extra adapter tensors are named.
        let cfg = llama();
        tch::manual_seed(14);
        let mut m = Transformer::new(&cfg, Device::Cpu);
        let base: HashMap<String, Tensor> = m.params().named().into_iter().collect();
        let l = lora(2, &["q"]);
        m.add_lora(&l).unwrap();
        let adapters: HashMap<String, Tensor> = m.trainable().named().into_iter().collect();
        let mut missing = adapters
            .iter()
            .map(|(k, v)| (k.clone(), v.shallow_clone()))
            .collect::<HashMap<_, _>>();
        missing.remove("blocks.1.attn.q.lora_b");
        let e = merge_into(
            &mut base_copy(&base),
            &cfg,
            &l,
            &missing,
            Path::new("ad.st"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("ad.st") && e.contains("blocks.1.attn.q.lora_b"),
            "{e}"
        );
        let e = merge_into(
            &mut base_copy(&base),
            &cfg,
            &lora(3, &["q"]),
            &adapters,
            Path::new("x"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("shape"), "{e}");
        let mut extra = base_copy(&adapters);
        extra.insert(
            "blocks.0.attn.k.lora_a".into(),
            Tensor::zeros([2, 32], (Kind::Float, Device::Cpu)),
        );
        let e = merge_into(&mut base_copy(&base), &cfg, &l, &extra, Path::new("x"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("blocks.0.attn.k.lora_a"), "{e}");
    }

    fn base_copy(m: &HashMap<String, Tensor>) -> HashMap<String, Tensor> {
        m.iter().map(|(k, v)| (k.clone(), v.copy())).collect()
    }

    #[test]
    fn the_weights_hash_sees_every_value_and_name() {
        let _rng = crate::torch_rng_lock();
        tch::manual_seed(15);
        let m = Transformer::new(&llama(), Device::Cpu);
        let w: HashMap<String, Tensor> = m.params().named().into_iter().collect();
        let h = weights_hash(&w);
        assert_eq!(h.len(), 16);
        assert_eq!(h, weights_hash(&base_copy(&w)));
        // One value changed, or one name, changes the hash.
        let changed = base_copy(&w);
        let _ = changed["blocks.1.mlp.up.weight"].get(3).get(4).fill_(0.5);
        assert_ne!(h, weights_hash(&changed));
        let mut renamed = base_copy(&w);
        let t = renamed.remove("ln_f.weight").unwrap();
        renamed.insert("ln_g.weight".into(), t);
        assert_ne!(h, weights_hash(&renamed));
    }

    /// A LoRA checkpoint whose recorded base is itself is refused, not recursed into.
    #[test]
    fn a_cycle_of_base_records_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let ck = dir.path().join("step-00000001");
        fs::create_dir_all(&ck).unwrap();
        let t = vec![(
            "blocks.0.attn.q.lora_a".to_string(),
            Tensor::zeros([2, 32], (Kind::Float, Device::Cpu)),
        )];
        Tensor::write_safetensors(&t, ck.join("model.safetensors")).unwrap();
        let record = AdapterRecord {
            lora: lora(2, &["q"]),
            base: ck.clone(),
            base_hash: "0".into(),
            head: None,
            mlm_head: false,
        };
        let state = serde_json::json!({ "model": llama(), "lora": record });
        fs::write(ck.join("state.json"), state.to_string()).unwrap();
        assert_eq!(read_record(&ck).unwrap(), Some(record));
        let e = store::load_weights(&ck).unwrap_err().to_string();
        assert!(e.contains("cycle") && e.contains("state.json"), "{e}");
    }

    /// A model cast to bf16 casts its adapters with it.
    #[test]
    fn cast_takes_the_adapters_along() {
        let _rng = crate::torch_rng_lock();
        tch::manual_seed(16);
        let mut m = Transformer::new(&llama(), Device::Cpu);
        m.add_lora(&lora(2, &["all-linear"])).unwrap();
        randomise_b(&mut m);
        let ids = Tensor::from_slice(&[1i64, 2, 3]).view([1, 3]);
        let full = m.forward(&ids, true, false);
        m.cast(Kind::BFloat16);
        assert!(m
            .trainable()
            .params
            .iter()
            .all(|p| p.tensor.kind() == Kind::BFloat16));
        let half = m.forward(&ids, true, false);
        assert_eq!(half.kind(), Kind::BFloat16);
        assert!(max_diff(&full, &half.to_kind(Kind::Float)) < 0.1);
    }
}
