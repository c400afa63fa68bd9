//! The run configuration (`run.toml`), validated before anything starts.
//!
//! A training run is declared in one TOML file with five sections: `[data]`, `[model]`,
//! `[optim]`, `[train]` and `[checkpoint]`. Every struct refuses unknown keys and every field
//! has a documented default, so a typo is an error naming the key rather than a silently
//! ignored setting. [`TrainConfig::from_toml`] parses and validates; paths are resolved
//! against the TOML file's directory by [`TrainConfig::load`].
//!
//! Example:
//!
//! ```toml
//! out_dir = "runs/tiny"
//! [data]
//! train = "out/tokens/train"
//! val = "out/tokens/val"
//! [model]
//! layers = 2
//! heads = 4
//! dim = 128
//! [train]
//! objective = "clm"
//! micro_batch = 8
//! max_steps = 200
//! ```
//!
//! Fine-tuning starts from a model with `[init] from = "smollm2/"` (anything
//! `quern_models::store::load_weights` reads); the `[model]` section then holds at most
//! `dropout`.

use std::path::{Path, PathBuf};

use quern_core::{Error, Result};
use serde::{Deserialize, Serialize};

pub use quern_models::config::{Mlp, ModelConfig, Norm, Positions};

/// A whole training run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// Directory for checkpoints (`checkpoints/`), the metrics log (`metrics.jsonl`) and the
    /// final report. Default `runs/quern`.
    #[serde(default = "default_out_dir")]
    pub out_dir: PathBuf,
    /// Where the tokenized shards are. Required: `data.train`.
    pub data: DataConfig,
    /// Start from a trained model's weights instead of a random initialisation. Default: none.
    #[serde(default)]
    pub init: InitConfig,
    /// The transformer's shape. Default: a tiny 2-layer model sized from the data. With
    /// `init.from`, the shape is the source model's and only `model.dropout` may be set.
    #[serde(default)]
    pub model: ModelConfig,
    /// AdamW and the learning-rate schedule. Default: see [`OptimConfig`].
    #[serde(default)]
    pub optim: OptimConfig,
    /// The loop: objective, batch sizes, steps, precision, device. Default: see [`LoopConfig`].
    #[serde(default)]
    pub train: LoopConfig,
    /// How often checkpoints are written and how many are kept. Default: see [`CheckpointConfig`].
    #[serde(default)]
    pub checkpoint: CheckpointConfig,
}

fn default_out_dir() -> PathBuf {
    PathBuf::from("runs/quern")
}

/// Where the weights start from.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InitConfig {
    /// A model to start from (weights only: the optimizer starts fresh, at step 0): a quern
    /// model directory (`quern import`), a training run or checkpoint directory, a GGUF file
    /// (Llama architecture) or a Hugging Face directory. Its tokenizer must be the one the
    /// data was tokenized with. Default: none.
    #[serde(default)]
    pub from: Option<PathBuf>,
}

/// Tokenized shard directories (one per split, as `quern tokenize` writes them). Training
/// rows are visited in a fresh order each epoch, drawn from `train.seed`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// Directory of the training split (holds `meta.json` and Parquet shards). Required.
    pub train: PathBuf,
    /// Directory of the validation split. Default: none (no evaluation).
    #[serde(default)]
    pub val: Option<PathBuf>,
}

/// The learning-rate decay after warmup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decay {
    Cosine,
    Linear,
    Constant,
}

/// Whether to use libtorch's fused AdamW kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Fused {
    /// Fused on CUDA, quern's own per-tensor update on CPU.
    Auto,
    On,
    Off,
}

/// AdamW with decoupled weight decay, warmup then decay.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptimConfig {
    /// Peak learning rate. Default 3e-4.
    #[serde(default = "default_lr")]
    pub lr: f64,
    /// Learning rate at the end of the decay. Default: lr / 10.
    #[serde(default)]
    pub min_lr: Option<f64>,
    /// Linear warmup steps from 0 to `lr`. Default 0.
    #[serde(default)]
    pub warmup_steps: u64,
    /// `cosine`, `linear` or `constant` (to `min_lr` at `train.max_steps`). Default `cosine`.
    #[serde(default = "default_decay")]
    pub decay: Decay,
    /// Decoupled weight decay on matrices. Default 0.1.
    #[serde(default = "default_wd")]
    pub weight_decay: f64,
    /// Also decay the embeddings (norms and biases never decay). Default false.
    #[serde(default)]
    pub decay_embeddings: bool,
    /// Adam β1. Default 0.9.
    #[serde(default = "default_beta1")]
    pub beta1: f64,
    /// Adam β2. Default 0.95.
    #[serde(default = "default_beta2")]
    pub beta2: f64,
    /// Adam ε. Default 1e-8.
    #[serde(default = "default_eps")]
    pub eps: f64,
    /// Clip gradients to this global L2 norm; 0 turns clipping off. Default 1.0.
    #[serde(default = "default_clip")]
    pub grad_clip: f64,
    /// `auto`, `on` or `off`: libtorch's fused AdamW kernel. Default `auto`.
    #[serde(default = "default_fused")]
    pub fused: Fused,
}

fn default_lr() -> f64 {
    3e-4
}
fn default_decay() -> Decay {
    Decay::Cosine
}
fn default_wd() -> f64 {
    0.1
}
fn default_beta1() -> f64 {
    0.9
}
fn default_beta2() -> f64 {
    0.95
}
fn default_eps() -> f64 {
    1e-8
}
fn default_clip() -> f64 {
    1.0
}
fn default_fused() -> Fused {
    Fused::Auto
}

impl Default for OptimConfig {
    fn default() -> Self {
        OptimConfig {
            lr: default_lr(),
            min_lr: None,
            warmup_steps: 0,
            decay: default_decay(),
            weight_decay: default_wd(),
            decay_embeddings: false,
            beta1: default_beta1(),
            beta2: default_beta2(),
            eps: default_eps(),
            grad_clip: default_clip(),
            fused: default_fused(),
        }
    }
}

/// Numeric precision of the forward and backward passes. Weights stay fp32 (master weights).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    Fp32,
    /// bf16 autocast (through the C++ sidecar).
    Bf16,
    /// fp16 autocast with dynamic loss scaling.
    Fp16,
}

/// Where to train.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceChoice {
    /// CUDA when available, else CPU.
    Auto,
    Cpu,
    Cuda,
}

/// The training loop.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoopConfig {
    /// `clm` (causal LM, decoder) or `mlm` (masked LM, encoder). Default `clm`.
    #[serde(default = "default_objective")]
    pub objective: String,
    /// Rows per micro-batch. Default 8.
    #[serde(default = "default_micro_batch")]
    pub micro_batch: usize,
    /// Micro-batches per optimizer step. Default 1.
    #[serde(default = "one")]
    pub grad_accum: usize,
    /// Optimizer steps. Default 100.
    #[serde(default = "default_max_steps")]
    pub max_steps: u64,
    /// `fp32`, `bf16` or `fp16`. Default `fp32`.
    #[serde(default = "default_precision")]
    pub precision: Precision,
    /// `auto`, `cpu` or `cuda`. Default `auto`.
    #[serde(default = "default_device")]
    pub device: DeviceChoice,
    /// Seed of initialisation, data order, masking and dropout. Default 1234.
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// Evaluate on `data.val` every this many steps (and at the end); 0 = only at the end. Default 100.
    #[serde(default = "default_eval_every")]
    pub eval_every: u64,
    /// Validation micro-batches per evaluation. Default 8.
    #[serde(default = "default_eval_batches")]
    pub eval_batches: usize,
    /// Write a metrics line every this many steps. Default 1.
    #[serde(default = "one_u64")]
    pub log_every: u64,
    /// Stop after this many non-finite steps in a row. Default 10.
    #[serde(default = "default_max_skips")]
    pub max_consecutive_skips: u64,
    /// Masking probability for `mlm`. Default 0.15.
    #[serde(default = "default_mask_prob")]
    pub mask_prob: f64,
    /// Allow TF32 matmuls on CUDA. Default true.
    #[serde(default = "yes")]
    pub tf32: bool,
    /// Peak dense TFLOP/s of the device, the denominator of MFU. Default 989 on CUDA
    /// (H100/H200 bf16), none on CPU (MFU not shown).
    #[serde(default)]
    pub peak_tflops: Option<f64>,
    /// Initial fp16 loss scale. Default 65536.
    #[serde(default = "default_loss_scale")]
    pub loss_scale: f64,
    /// Successful fp16 steps before the loss scale doubles. Default 2000.
    #[serde(default = "default_growth_interval")]
    pub loss_scale_growth_interval: u64,
}

fn yes() -> bool {
    true
}

fn default_objective() -> String {
    "clm".into()
}
fn default_micro_batch() -> usize {
    8
}
fn one() -> usize {
    1
}
fn one_u64() -> u64 {
    1
}
fn default_max_steps() -> u64 {
    100
}
fn default_precision() -> Precision {
    Precision::Fp32
}
fn default_device() -> DeviceChoice {
    DeviceChoice::Auto
}
fn default_seed() -> u64 {
    1234
}
fn default_eval_every() -> u64 {
    100
}
fn default_eval_batches() -> usize {
    8
}
fn default_max_skips() -> u64 {
    10
}
fn default_mask_prob() -> f64 {
    0.15
}
fn default_loss_scale() -> f64 {
    65536.0
}
fn default_growth_interval() -> u64 {
    2000
}

impl Default for LoopConfig {
    fn default() -> Self {
        LoopConfig {
            objective: default_objective(),
            micro_batch: default_micro_batch(),
            grad_accum: 1,
            max_steps: default_max_steps(),
            precision: default_precision(),
            device: default_device(),
            seed: default_seed(),
            eval_every: default_eval_every(),
            eval_batches: default_eval_batches(),
            log_every: 1,
            max_consecutive_skips: default_max_skips(),
            mask_prob: default_mask_prob(),
            tf32: true,
            peak_tflops: None,
            loss_scale: default_loss_scale(),
            loss_scale_growth_interval: default_growth_interval(),
        }
    }
}

/// Checkpointing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointConfig {
    /// Write a checkpoint every this many steps (and at the end); 0 = only at the end. Default 100.
    #[serde(default = "default_ckpt_every")]
    pub every: u64,
    /// Keep the last this many checkpoints. Default 3.
    #[serde(default = "default_keep")]
    pub keep: usize,
}

fn default_ckpt_every() -> u64 {
    100
}
fn default_keep() -> usize {
    3
}

impl Default for CheckpointConfig {
    fn default() -> Self {
        CheckpointConfig {
            every: default_ckpt_every(),
            keep: default_keep(),
        }
    }
}

impl TrainConfig {
    /// A configuration with defaults everywhere, training on `train` (for code and the demo).
    pub fn new(train: impl Into<PathBuf>, out_dir: impl Into<PathBuf>) -> Self {
        TrainConfig {
            out_dir: out_dir.into(),
            data: DataConfig {
                train: train.into(),
                val: None,
            },
            init: InitConfig::default(),
            model: ModelConfig::default(),
            optim: OptimConfig::default(),
            train: LoopConfig::default(),
            checkpoint: CheckpointConfig::default(),
        }
    }

    /// A tiny run for `quern demo`: 2 layers, width 128, 128-token windows, 150 steps of 8
    /// rows, evaluated every 50 steps: a couple of minutes on a laptop CPU, enough to show
    /// the loss falling. Reads the split's `meta.json` to keep windows within its rows.
    pub fn demo(
        train: impl Into<PathBuf>,
        val: Option<PathBuf>,
        out_dir: impl Into<PathBuf>,
    ) -> Result<Self> {
        let mut cfg = Self::new(train, out_dir);
        let meta = crate::data::SplitMeta::load(&cfg.data.train)?;
        cfg.data.val = val;
        cfg.model.seq_len = Some(meta.seq_len.min(128));
        cfg.optim = OptimConfig {
            lr: 2e-3,
            warmup_steps: 10,
            ..OptimConfig::default()
        };
        cfg.train = LoopConfig {
            micro_batch: 8,
            max_steps: 150,
            eval_every: 50,
            eval_batches: 4,
            ..LoopConfig::default()
        };
        cfg.checkpoint = CheckpointConfig { every: 0, keep: 1 };
        Ok(cfg)
    }

    /// Parses TOML text and validates it. Errors name the offending key.
    pub fn from_toml(text: &str) -> Result<Self> {
        let table: toml::Table = toml::from_str(text)
            .map_err(|e| Error::bad_config("run.toml", format!("not valid TOML: {e}")))?;
        let has_init = table.get("init").and_then(|i| i.get("from")).is_some();
        if let (true, Some(toml::Value::Table(model))) = (has_init, table.get("model")) {
            if let Some(k) = model.keys().find(|k| k.as_str() != "dropout") {
                return Err(Error::bad_config(
                    format!("model.{k}"),
                    "the model's shape comes from init.from; only model.dropout may be set",
                ));
            }
        }
        let value =
            serde_json::to_value(table).map_err(|e| Error::bug(format!("TOML to JSON: {e}")))?;
        let cfg: TrainConfig = serde_path_to_error::deserialize(value).map_err(|e| {
            let path = e.path().to_string();
            let key = if path == "." || path.is_empty() {
                "run.toml".to_string()
            } else {
                path
            };
            Error::bad_config(key, e.inner().to_string())
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Reads a TOML file, validates it, and resolves relative paths against its directory.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let mut cfg = Self::from_toml(&text).map_err(|e| match e {
            Error::BadConfig { key, message } => {
                Error::bad_config(key, format!("{message} (in {})", path.display()))
            }
            e => e,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        fix(&mut cfg.out_dir);
        fix(&mut cfg.data.train);
        if let Some(f) = cfg.init.from.as_mut() {
            fix(f);
        }
        if let Some(v) = cfg.data.val.as_mut() {
            fix(v);
        }
        Ok(cfg)
    }

    /// Checks value ranges that serde cannot. Called by the parsers; call it after building a
    /// configuration in code.
    pub fn validate(&self) -> Result<()> {
        let bad = |k: &str, msg: String| Err(Error::bad_config(k, msg));
        self.model.validate()?;
        let o = &self.optim;
        if o.lr <= 0.0 || !o.lr.is_finite() {
            return bad(
                "optim.lr",
                format!("must be a positive number, got {}", o.lr),
            );
        }
        if !(0.0..1.0).contains(&o.beta1) || !(0.0..1.0).contains(&o.beta2) {
            return bad("optim.beta1", "betas must be in [0, 1)".into());
        }
        if o.weight_decay < 0.0 || o.grad_clip < 0.0 || o.eps <= 0.0 {
            return bad(
                "optim.weight_decay",
                "weight_decay and grad_clip must be >= 0, eps > 0".into(),
            );
        }
        let t = &self.train;
        if !matches!(t.objective.as_str(), "clm" | "mlm") {
            return bad(
                "train.objective",
                format!("unknown objective `{}`; available: clm, mlm (sft, cls, rm, dpo, rl come later)", t.objective),
            );
        }
        if t.micro_batch == 0 || t.grad_accum == 0 || t.max_steps == 0 {
            return bad(
                "train.micro_batch",
                "micro_batch, grad_accum and max_steps must be at least 1".into(),
            );
        }
        if !(0.0..1.0).contains(&t.mask_prob) || t.mask_prob == 0.0 {
            return bad(
                "train.mask_prob",
                format!("must be in (0, 1), got {}", t.mask_prob),
            );
        }
        if t.max_consecutive_skips == 0 {
            return bad("train.max_consecutive_skips", "must be at least 1".into());
        }
        if t.loss_scale <= 0.0 {
            return bad("train.loss_scale", "must be positive".into());
        }
        if self.checkpoint.keep == 0 {
            return bad("checkpoint.keep", "must be at least 1".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_fill_a_minimal_file() {
        let cfg = TrainConfig::from_toml("[data]\ntrain = \"t\"\n").unwrap();
        assert_eq!(cfg.model.layers, 2);
        assert_eq!(cfg.train.objective, "clm");
        assert_eq!(cfg.optim.decay, Decay::Cosine);
        assert_eq!(cfg.model.hidden(), 512);
    }

    #[test]
    fn errors_name_the_key() {
        let cases = [
            (
                "[data]\ntrain = \"t\"\n[optim]\nlr2 = 1.0\n",
                "optim",
                "lr2",
            ),
            (
                "[data]\ntrain = \"t\"\n[model]\nheads = 3\n",
                "model.heads",
                "divide",
            ),
            (
                "[data]\ntrain = \"t\"\n[train]\nobjective = \"ppo\"\n",
                "train.objective",
                "ppo",
            ),
            (
                "[data]\ntrain = \"t\"\n[train]\nprecision = \"fp8\"\n",
                "train.precision",
                "fp8",
            ),
            ("[model]\nlayers = 1\n", "run.toml", "data"),
            (
                "[data]\ntrain = \"t\"\n[init]\nfrom = \"m\"\n[model]\nlayers = 3\n",
                "model.layers",
                "init.from",
            ),
            (
                "[data]\ntrain = \"t\"\n[init]\nform = \"m\"\n",
                "init",
                "form",
            ),
        ];
        for (text, key, needle) in cases {
            let err = TrainConfig::from_toml(text).unwrap_err();
            let msg = err.to_string();
            assert!(
                msg.contains(key) && msg.contains(needle),
                "{text:?} gave {msg}"
            );
        }
    }
}
