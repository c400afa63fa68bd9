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
//! `dropout`. A `[lora]` section (`rank`, `alpha`, `dropout`, `targets`) trains LoRA adapters
//! on that model, frozen, instead of every weight:
//!
//! ```toml
//! [init]
//! from = "smollm2/"
//! [lora]
//! rank = 8
//! alpha = 16.0
//! targets = ["q", "k", "v", "proj"]
//! ```
//!
//! Sequence classification (`train.objective = "cls"`, on a `cls` split) adds a
//! classification head to the model, fresh unless `init.from` already has one for the same
//! labels; the `[cls]` section shapes it and weighs the classes:
//!
//! ```toml
//! [train]
//! objective = "cls"
//! [cls]
//! pooling = "auto"            # last (decoders), first ([CLS], encoders) or mean
//! pooler = false              # BERT's tanh(dense(x)) before the output layer
//! class_weights = [1.0, 3.0]  # one per label of meta.json, each > 0
//! ```
//!
//! Preference pairs (`rm`/`dpo` splits) train a reward model (`objective = "rm"`, with
//! `[rm] center_rewards_coefficient`) or a policy by DPO (`objective = "dpo"`):
//!
//! ```toml
//! [train]
//! objective = "dpo"
//! [dpo]
//! beta = 0.1                  # > 0
//! loss = "sigmoid"            # sigmoid (DPO), ipo or hinge
//! reference = "models/base"   # default: the policy's starting weights
//! ```

use std::path::{Path, PathBuf};

use quern_core::{Error, Result};
use serde::{Deserialize, Serialize};

pub use quern_models::config::{Mlp, ModelConfig, Norm, Positions};
pub use quern_models::lora::LoraConfig;

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
    /// LoRA: train low-rank adapters on the frozen `init.from` model instead of every
    /// weight (`rank`, `alpha`, `dropout`, `targets`; see [`LoraConfig`]); needs `init.from`.
    /// Checkpoints then hold only the adapters. Default: none (every weight trains).
    #[serde(default)]
    pub lora: Option<LoraConfig>,
    /// The classification head and loss for `train.objective = "cls"`. Default: see
    /// [`ClsConfig`].
    #[serde(default)]
    pub cls: ClsConfig,
    /// The reward model's loss for `train.objective = "rm"`. Default: see [`RmConfig`].
    #[serde(default)]
    pub rm: RmConfig,
    /// Direct preference optimisation for `train.objective = "dpo"`. Default: see
    /// [`DpoConfig`].
    #[serde(default)]
    pub dpo: DpoConfig,
    /// Data-parallel training under torchrun (read only when `RANK`/`WORLD_SIZE` are set;
    /// docs/distributed.md). Default: see [`DistConfig`].
    #[serde(default)]
    pub dist: DistConfig,
}

/// `[dist]`: data-parallel training across processes, when `quern train` runs under
/// torchrun (`RANK`, `WORLD_SIZE`, `MASTER_ADDR`, `MASTER_PORT` set). Every key has a
/// default (the [`Default`] impl is the one source of them).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DistConfig {
    /// Seconds to wait for the store, for every rank to join, and for each collective
    /// operation, > 0. A rank missing after this is named in the error. Default 300.
    pub timeout_s: f64,
    /// Most megabytes of gradients in one all-reduce bucket, > 0 (a larger gradient is a
    /// bucket alone). Default 25 (PyTorch DDP's).
    pub bucket_mb: f64,
}

impl Default for DistConfig {
    fn default() -> Self {
        DistConfig {
            timeout_s: 300.0,
            bucket_mb: 25.0,
        }
    }
}

/// `[rm]`: the reward model's loss (`train.objective = "rm"` only).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RmConfig {
    /// Reward centering (TRL's `center_rewards_coefficient`): adds `c · (r_chosen +
    /// r_rejected)²` per pair to the Bradley–Terry loss, pulling rewards towards mean 0.
    /// >= 0. Default: none (0).
    pub center_rewards_coefficient: Option<f64>,
}

/// `[dpo]`: direct preference optimisation (`train.objective = "dpo"` only).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DpoConfig {
    /// β: the strength of the implicit KL penalty to the reference (the rewards are
    /// `β · (log π − log π_ref)`), > 0. Default 0.1.
    pub beta: f64,
    /// `sigmoid` (DPO: `-log σ(β·h)`), `ipo` (`(h − 1/(2β))²`) or `hinge` (`max(0, 1 − β·h)`),
    /// where `h` is the policy's log-ratio of chosen over rejected less the reference's.
    /// Default `sigmoid`.
    pub loss: DpoLoss,
    /// The frozen reference model: a model directory, run, checkpoint, GGUF file or Hugging
    /// Face directory, as `init.from` takes. Default: none, the policy's starting weights
    /// (`init.from`, or the seeded initialisation without it).
    pub reference: Option<PathBuf>,
}

impl Default for DpoConfig {
    fn default() -> Self {
        DpoConfig {
            beta: 0.1,
            loss: DpoLoss::Sigmoid,
            reference: None,
        }
    }
}

/// `dpo.loss`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DpoLoss {
    #[default]
    Sigmoid,
    Ipo,
    Hinge,
}

/// `[cls]`: the classification head and its loss (`train.objective = "cls"` only).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClsConfig {
    /// `auto` (`last` for decoders, `first` for BERT-like encoders), `last` (the last real
    /// token), `first` (the first token, `[CLS]`; encoders only) or `mean` (over real tokens).
    /// Default `auto`.
    pub pooling: ClsPooling,
    /// BERT's pooler, `tanh(dense(x))`, between the pooled vector and the output layer,
    /// initialised fresh. Default false.
    pub pooler: bool,
    /// A weight per class (in the order of `meta.json`'s `labels`, each > 0) on the
    /// cross-entropy: the loss is `Σ w[label] · CE / rows`. Default: none (all 1).
    pub class_weights: Option<Vec<f64>>,
}

/// `cls.pooling`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClsPooling {
    #[default]
    Auto,
    Last,
    First,
    Mean,
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
    /// `train`'s weight in a mixture with `mix` (relative to theirs). Default 1.
    #[serde(default = "one")]
    pub train_weight: f64,
    /// More packed splits (`[[data.mix]]`: `split`, `weight`) read with `train` as one,
    /// each giving its weight's share of the rows ([`crate::mix`]); a replay split of the
    /// data a model was trained on before is one of them. Default: none.
    #[serde(default)]
    pub mix: Vec<MixSplit>,
}

fn one() -> f64 {
    1.0
}

/// One split of a data mixture.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MixSplit {
    /// Directory of the split (tokenized like `train`: same tokenizer and seq_len).
    pub split: PathBuf,
    /// Its weight, relative to `train_weight` and the others'; >= 0.
    pub weight: f64,
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

/// AdamW with decoupled weight decay, warmup then decay. Every key has a default (the
/// [`Default`] impl is the one source of them).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OptimConfig {
    /// Peak learning rate, > 0. Default 3e-4.
    pub lr: f64,
    /// Learning rate at the end of the decay, in [0, lr]. Default: lr / 10.
    pub min_lr: Option<f64>,
    /// Linear warmup steps from 0 to `lr`. Default 0.
    pub warmup_steps: u64,
    /// `cosine`, `linear` or `constant` (to `min_lr` at `train.max_steps`). Default `cosine`.
    pub decay: Decay,
    /// Decoupled weight decay on matrices, >= 0. Default 0.1.
    pub weight_decay: f64,
    /// Also decay the embeddings (norms and biases never decay). Default false.
    pub decay_embeddings: bool,
    /// Adam β1, in [0, 1). Default 0.9.
    pub beta1: f64,
    /// Adam β2, in [0, 1). Default 0.95.
    pub beta2: f64,
    /// Adam ε, > 0. Default 1e-8.
    pub eps: f64,
    /// Clip gradients to this global L2 norm (>= 0); 0 turns clipping off. Default 1.0.
    pub grad_clip: f64,
    /// `auto`, `on` or `off`: libtorch's fused AdamW kernel. Default `auto`.
    pub fused: Fused,
}

impl Default for OptimConfig {
    fn default() -> Self {
        OptimConfig {
            lr: 3e-4,
            min_lr: None,
            warmup_steps: 0,
            decay: Decay::Cosine,
            weight_decay: 0.1,
            decay_embeddings: false,
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            grad_clip: 1.0,
            fused: Fused::Auto,
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

/// The training loop. Every key has a default (the [`Default`] impl is the one source of
/// them).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoopConfig {
    /// `clm` (causal LM, decoder), `mlm` (masked LM, encoder), `sft` (supervised
    /// fine-tuning of a decoder on `sft` splits: the loss counts only on response tokens,
    /// `loss_mask` 1, normalized by their number over all micro-batches of a step; one
    /// conversation per row, right-padded per micro-batch, never cut: the model's context
    /// must hold the split's `seq_len`), `cls` (a classification head) or `nsp` (BERT
    /// pretraining of an encoder on `nsp` sentence pairs: masked LM plus next-sentence
    /// prediction, each loss a mean over its own targets, added), `rm` (a reward model: a
    /// scalar head, Bradley–Terry on preference pairs; `[rm]`) or `dpo` (direct preference
    /// optimisation against a frozen reference; `[dpo]`), both on `rm`/`dpo` splits. The
    /// split's `meta.json` objective must match. Default `clm`.
    pub objective: String,
    /// Rows per micro-batch, >= 1. Default 8.
    pub micro_batch: usize,
    /// Micro-batches per optimizer step, >= 1. Default 1.
    pub grad_accum: usize,
    /// Optimizer steps, >= 1. Default 100.
    pub max_steps: u64,
    /// `fp32`, `bf16` or `fp16`. Default `fp32`.
    pub precision: Precision,
    /// `auto`, `cpu` or `cuda`. Default `auto`.
    pub device: DeviceChoice,
    /// Seed of initialisation, data order, masking and dropout. Default 1234.
    pub seed: u64,
    /// Evaluate on `data.val` every this many steps (and at the end); 0 = only at the end. Default 100.
    pub eval_every: u64,
    /// Validation micro-batches per evaluation, >= 1. Default 8.
    pub eval_batches: usize,
    /// Write a metrics line every this many steps, >= 1. Default 1.
    pub log_every: u64,
    /// Stop after this many non-finite steps in a row, >= 1. Default 10.
    pub max_consecutive_skips: u64,
    /// Masking probability for `mlm`, in (0, 1). Default 0.15.
    pub mask_prob: f64,
    /// Allow TF32 matmuls on CUDA. Default true.
    pub tf32: bool,
    /// Peak dense TFLOP/s of the device (> 0), the denominator of MFU. Default 989 on CUDA
    /// (H100/H200 bf16), none on CPU (MFU not shown).
    pub peak_tflops: Option<f64>,
    /// Stop when this many evaluations in a row did not lower the best validation loss by
    /// more than `early_stop_min_delta`; 0 = never. Needs `data.val`. Default 0.
    pub early_stop_patience: u64,
    /// The least drop of the validation loss that counts as an improvement, >= 0. Default 0.
    pub early_stop_min_delta: f64,
    /// Initial fp16 loss scale, > 0. Default 65536.
    pub loss_scale: f64,
    /// Successful fp16 steps before the loss scale doubles, >= 1. Default 2000.
    pub loss_scale_growth_interval: u64,
}

impl Default for LoopConfig {
    fn default() -> Self {
        LoopConfig {
            objective: "clm".into(),
            micro_batch: 8,
            grad_accum: 1,
            max_steps: 100,
            precision: Precision::Fp32,
            device: DeviceChoice::Auto,
            seed: 1234,
            eval_every: 100,
            eval_batches: 8,
            log_every: 1,
            max_consecutive_skips: 10,
            mask_prob: 0.15,
            tf32: true,
            peak_tflops: None,
            early_stop_patience: 0,
            early_stop_min_delta: 0.0,
            loss_scale: 65536.0,
            loss_scale_growth_interval: 2000,
        }
    }
}

/// Checkpointing. Every key has a default (the [`Default`] impl is the one source of them).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CheckpointConfig {
    /// Write a checkpoint every this many steps (and at the end); 0 = only at the end. Default 100.
    pub every: u64,
    /// Keep the last this many checkpoints, >= 1. Default 3.
    pub keep: usize,
    /// Keep the weights of the evaluation with the lowest validation loss in `best/` next to
    /// `checkpoints/` (weights and state.json, no optimizer state; never pruned, never
    /// resumed from). Needs `data.val`. Default true.
    pub keep_best: bool,
}

impl Default for CheckpointConfig {
    fn default() -> Self {
        CheckpointConfig {
            every: 100,
            keep: 3,
            keep_best: true,
        }
    }
}

/// Deserializes a config document (TOML turned into JSON), an error naming the key's full
/// path (`optim.lr`), or `file` when the document itself is wrong.
pub(crate) fn deserialize_named<T: serde::de::DeserializeOwned>(
    value: serde_json::Value,
    file: &str,
) -> Result<T> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let key = if path == "." || path.is_empty() {
            file.to_string()
        } else {
            path
        };
        Error::bad_config(key, e.inner().to_string())
    })
}

/// Adds the config file's path to a config error's message.
pub(crate) fn in_config_file(e: Error, path: &Path) -> Error {
    match e {
        Error::BadConfig { key, message } => {
            Error::bad_config(key, format!("{message} (in {})", path.display()))
        }
        e => e,
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
                train_weight: 1.0,
                mix: Vec::new(),
            },
            init: InitConfig::default(),
            model: ModelConfig::default(),
            optim: OptimConfig::default(),
            train: LoopConfig::default(),
            checkpoint: CheckpointConfig::default(),
            lora: None,
            cls: ClsConfig::default(),
            rm: RmConfig::default(),
            dpo: DpoConfig::default(),
            dist: DistConfig::default(),
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
        cfg.checkpoint = CheckpointConfig {
            every: 0,
            keep: 1,
            keep_best: false,
        };
        Ok(cfg)
    }

    /// Parses TOML text and validates it. Errors name the offending key.
    pub fn from_toml(text: &str) -> Result<Self> {
        let table: toml::Table = toml::from_str(text)
            .map_err(|e| Error::bad_config("run.toml", format!("not valid TOML: {e}")))?;
        let has_init = table.get("init").and_then(|i| i.get("from")).is_some();
        if let (true, Some(toml::Value::Table(model))) = (has_init, table.get("model")) {
            if let Some(k) = model
                .keys()
                .find(|k| !matches!(k.as_str(), "dropout" | "mlm_head"))
            {
                return Err(Error::bad_config(
                    format!("model.{k}"),
                    "the model's shape comes from init.from; only model.dropout and model.mlm_head may be set",
                ));
            }
        }
        let value =
            serde_json::to_value(table).map_err(|e| Error::bug(format!("TOML to JSON: {e}")))?;
        let cfg: TrainConfig = deserialize_named(value, "run.toml")?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Reads a TOML file, validates it, and resolves relative paths against its directory.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let mut cfg = Self::from_toml(&text).map_err(|e| in_config_file(e, path))?;
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
        for m in &mut cfg.data.mix {
            fix(&mut m.split);
        }
        if let Some(r) = cfg.dpo.reference.as_mut() {
            fix(r);
        }
        Ok(cfg)
    }

    /// Checks value ranges that serde cannot: every numeric key, each error naming its key in
    /// full (`optim.beta2`, `train.log_every`, ...). Called by the parsers; call it after
    /// building a configuration in code.
    pub fn validate(&self) -> Result<()> {
        /// Refuses `key` unless `ok`, saying what the key must be and what it was.
        fn need(ok: bool, key: &str, rule: &str, got: impl std::fmt::Display) -> Result<()> {
            if ok {
                Ok(())
            } else {
                Err(Error::bad_config(key, format!("must be {rule}, got {got}")))
            }
        }
        let positive = |x: f64| x > 0.0 && x.is_finite();
        let non_negative = |x: f64| x >= 0.0 && x.is_finite();
        let unit = |x: f64| (0.0..1.0).contains(&x);
        // model.vocab_size is checked here too, since the model's own check reports it as
        // model.seq_len.
        if let Some(v) = self.model.vocab_size {
            need(v >= 1, "model.vocab_size", "at least 1", v)?;
        }
        self.model.validate()?;
        let o = &self.optim;
        need(positive(o.lr), "optim.lr", "a positive number", o.lr)?;
        if let Some(m) = o.min_lr {
            need(
                non_negative(m) && m <= o.lr,
                "optim.min_lr",
                &format!("in [0, optim.lr = {}]", o.lr),
                m,
            )?;
        }
        need(
            non_negative(o.weight_decay),
            "optim.weight_decay",
            ">= 0",
            o.weight_decay,
        )?;
        need(unit(o.beta1), "optim.beta1", "in [0, 1)", o.beta1)?;
        need(unit(o.beta2), "optim.beta2", "in [0, 1)", o.beta2)?;
        need(positive(o.eps), "optim.eps", "a positive number", o.eps)?;
        need(
            non_negative(o.grad_clip),
            "optim.grad_clip",
            ">= 0 (0 turns clipping off)",
            o.grad_clip,
        )?;
        let d = &self.data;
        need(
            non_negative(d.train_weight),
            "data.train_weight",
            ">= 0",
            d.train_weight,
        )?;
        for (i, m) in d.mix.iter().enumerate() {
            need(
                non_negative(m.weight),
                &format!("data.mix[{i}].weight"),
                ">= 0",
                m.weight,
            )?;
        }
        if !d.mix.is_empty() && d.train_weight + d.mix.iter().map(|m| m.weight).sum::<f64>() <= 0.0
        {
            return Err(Error::bad_config(
                "data.mix",
                "every weight of the mixture is 0: give at least one split a positive weight",
            ));
        }
        let t = &self.train;
        if !d.mix.is_empty() && !matches!(t.objective.as_str(), "clm" | "mlm") {
            return Err(Error::bad_config(
                "data.mix",
                format!(
                    "mixtures read packed clm or mlm splits; train.objective is `{}`",
                    t.objective
                ),
            ));
        }
        if !matches!(
            t.objective.as_str(),
            "clm" | "mlm" | "sft" | "cls" | "nsp" | "rm" | "dpo"
        ) {
            return Err(Error::bad_config(
                "train.objective",
                format!("unknown objective `{}`; available: clm, mlm, sft, cls, nsp, rm, dpo (rl comes later)", t.objective),
            ));
        }
        if let Some(c) = self.rm.center_rewards_coefficient {
            need(non_negative(c), "rm.center_rewards_coefficient", ">= 0", c)?;
        }
        if self.rm != RmConfig::default() && t.objective != "rm" {
            return Err(Error::bad_config(
                "rm",
                format!(
                    "[rm] shapes a reward model's loss, but train.objective is `{}`: set it to \"rm\" or remove [rm]",
                    t.objective
                ),
            ));
        }
        need(
            positive(self.dpo.beta),
            "dpo.beta",
            "a positive number",
            self.dpo.beta,
        )?;
        if self.dpo != DpoConfig::default() && t.objective != "dpo" {
            return Err(Error::bad_config(
                "dpo",
                format!(
                    "[dpo] configures direct preference optimisation, but train.objective is `{}`: set it to \"dpo\" or remove [dpo]",
                    t.objective
                ),
            ));
        }
        if self.model.mlm_head.is_some() && !matches!(t.objective.as_str(), "mlm" | "nsp") {
            return Err(Error::bad_config(
                "model.mlm_head",
                format!(
                    "BERT's MLM head is trained by the mlm and nsp objectives, but train.objective is `{}`: remove the key",
                    t.objective
                ),
            ));
        }
        if self.model.head.is_some() {
            return Err(Error::bad_config(
                "model.head",
                "the classification head is set by train.objective = \"cls\" and [cls], not in [model]",
            ));
        }
        if !self.model.pruned.is_empty() {
            return Err(Error::bad_config(
                "model.pruned",
                "pruned weights are recorded by `quern compress` in the model it writes; start from that model with init.from",
            ));
        }
        if let Some(w) = &self.cls.class_weights {
            if let Some((i, x)) = w.iter().enumerate().find(|(_, x)| !positive(**x)) {
                return Err(Error::bad_config(
                    "cls.class_weights",
                    format!("must each be a positive number, got {x} at index {i}"),
                ));
            }
            if w.is_empty() {
                return Err(Error::bad_config(
                    "cls.class_weights",
                    "is empty: give one weight per label, or leave the key out",
                ));
            }
        }
        if self.cls != ClsConfig::default() && t.objective != "cls" {
            return Err(Error::bad_config(
                "cls",
                format!(
                    "[cls] shapes a classification head, but train.objective is `{}`: set it to \"cls\" or remove [cls]",
                    t.objective
                ),
            ));
        }
        need(
            t.micro_batch >= 1,
            "train.micro_batch",
            "at least 1",
            t.micro_batch,
        )?;
        need(
            t.grad_accum >= 1,
            "train.grad_accum",
            "at least 1",
            t.grad_accum,
        )?;
        need(
            t.max_steps >= 1,
            "train.max_steps",
            "at least 1",
            t.max_steps,
        )?;
        need(
            t.eval_batches >= 1,
            "train.eval_batches",
            "at least 1",
            t.eval_batches,
        )?;
        need(
            t.log_every >= 1,
            "train.log_every",
            "at least 1",
            t.log_every,
        )?;
        need(
            t.max_consecutive_skips >= 1,
            "train.max_consecutive_skips",
            "at least 1",
            t.max_consecutive_skips,
        )?;
        need(
            unit(t.mask_prob) && t.mask_prob > 0.0,
            "train.mask_prob",
            "in (0, 1)",
            t.mask_prob,
        )?;
        if let Some(p) = t.peak_tflops {
            need(positive(p), "train.peak_tflops", "a positive number", p)?;
        }
        need(
            positive(t.loss_scale),
            "train.loss_scale",
            "a positive number",
            t.loss_scale,
        )?;
        need(
            positive(self.dist.timeout_s),
            "dist.timeout_s",
            "a positive number of seconds",
            self.dist.timeout_s,
        )?;
        need(
            positive(self.dist.bucket_mb),
            "dist.bucket_mb",
            "a positive number of megabytes",
            self.dist.bucket_mb,
        )?;
        need(
            t.loss_scale_growth_interval >= 1,
            "train.loss_scale_growth_interval",
            "at least 1",
            t.loss_scale_growth_interval,
        )?;
        need(
            t.early_stop_min_delta.is_finite() && t.early_stop_min_delta >= 0.0,
            "train.early_stop_min_delta",
            "a number >= 0",
            t.early_stop_min_delta,
        )?;
        if t.early_stop_patience > 0 && self.data.val.is_none() {
            return Err(Error::bad_config(
                "train.early_stop_patience",
                "early stopping watches the validation loss: set data.val to a tokenized split",
            ));
        }
        need(
            self.checkpoint.keep >= 1,
            "checkpoint.keep",
            "at least 1",
            self.checkpoint.keep,
        )?;
        if let Some(lora) = &self.lora {
            lora.validate()?;
            if self.init.from.is_none() {
                return Err(Error::bad_config(
                    "init.from",
                    "[lora] trains adapters on a pretrained model: set init.from to the model to adapt",
                ));
            }
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
            (
                "[data]\ntrain = \"t\"\n[train]\nobjective = \"cls\"\n[cls]\nclass_weights = [1.0, 0.0]\n",
                "cls.class_weights",
                "index 1",
            ),
            (
                "[data]\ntrain = \"t\"\n[train]\nobjective = \"cls\"\n[cls]\npooling = \"max\"\n",
                "cls.pooling",
                "max",
            ),
            (
                "[data]\ntrain = \"t\"\n[cls]\npooler = true\n",
                "cls",
                "train.objective",
            ),
            (
                "[data]\ntrain = \"t\"\n[model.head]\nnum_labels = 2\npooling = \"last\"\n",
                "model.head",
                "[cls]",
            ),
            (
                "[data]\ntrain = \"t\"\n[train]\nobjective = \"dpo\"\n[dpo]\nloss = \"kto\"\n",
                "dpo.loss",
                "kto",
            ),
            (
                "[data]\ntrain = \"t\"\n[train]\nobjective = \"dpo\"\n[dpo]\nbeta = 0.0\n",
                "dpo.beta",
                "positive",
            ),
            (
                "[data]\ntrain = \"t\"\n[train]\nobjective = \"rm\"\n[rm]\ncenter_rewards_coefficient = -1.0\n",
                "rm.center_rewards_coefficient",
                ">= 0",
            ),
            (
                "[data]\ntrain = \"t\"\n[rm]\ncenter_rewards_coefficient = 0.01\n",
                "rm",
                "train.objective",
            ),
            (
                "[data]\ntrain = \"t\"\n[train]\nobjective = \"rm\"\n[dpo]\nbeta = 0.5\n",
                "dpo",
                "train.objective",
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

    /// Every numeric key out of range is refused, and the error names that key in full
    /// (`train.log_every = 0` used to pass and divide by zero; `optim.beta2` was reported
    /// as `optim.beta1`, `eps`/`grad_clip` as `optim.weight_decay`, `grad_accum`/`max_steps`
    /// as `train.micro_batch`).
    #[test]
    fn every_numeric_key_out_of_range_names_itself() {
        let cases = [
            ("optim", "lr", "0.0"),
            ("optim", "lr", "nan"),
            ("optim", "min_lr", "-1.0"),
            ("optim", "min_lr", "1.0"),
            ("optim", "weight_decay", "-0.1"),
            ("optim", "beta1", "1.0"),
            ("optim", "beta2", "1.0"),
            ("optim", "beta2", "-0.5"),
            ("optim", "eps", "0.0"),
            ("optim", "grad_clip", "-1.0"),
            ("optim", "grad_clip", "inf"),
            ("train", "micro_batch", "0"),
            ("train", "grad_accum", "0"),
            ("train", "max_steps", "0"),
            ("train", "eval_batches", "0"),
            ("train", "log_every", "0"),
            ("train", "max_consecutive_skips", "0"),
            ("train", "mask_prob", "0.0"),
            ("train", "mask_prob", "1.0"),
            ("train", "peak_tflops", "0.0"),
            ("train", "loss_scale", "0.0"),
            ("train", "loss_scale", "inf"),
            ("train", "loss_scale_growth_interval", "0"),
            ("checkpoint", "keep", "0"),
            ("model", "vocab_size", "0"),
        ];
        let mut wrong = Vec::new();
        for (section, key, value) in cases {
            let text = format!("[data]\ntrain = \"t\"\n[{section}]\n{key} = {value}\n");
            let full = format!("{section}.{key}");
            match TrainConfig::from_toml(&text) {
                Ok(_) => wrong.push(format!("{full} = {value} was accepted")),
                Err(Error::BadConfig { key: k, message }) if k != full => {
                    wrong.push(format!("{full} = {value} was reported as {k}: {message}"))
                }
                Err(Error::BadConfig { .. }) => {}
                Err(e) => wrong.push(format!("{full} = {value}: {e}")),
            }
        }
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
        let err = TrainConfig::from_toml("[data]\ntrain = \"t\"\n[optim]\nbeta2 = 1.0\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`optim.beta2`") && err.contains("must be in [0, 1), got 1"),
            "{err}"
        );
    }

    /// Edge values inside the ranges are accepted.
    #[test]
    fn boundary_values_in_range_are_accepted() {
        let text = "[data]\ntrain = \"t\"\n\
                    [optim]\nbeta1 = 0.0\nbeta2 = 0.0\nweight_decay = 0.0\ngrad_clip = 0.0\nmin_lr = 0.0\n\
                    [train]\nlog_every = 1\neval_every = 0\n\
                    [checkpoint]\nevery = 0\nkeep = 1\n";
        TrainConfig::from_toml(text).unwrap();
    }

    /// One source of defaults: a section left out of the file, an empty section, and the
    /// `Default` used by code all agree, and the values are the documented ones.
    #[test]
    fn defaults_have_one_source() {
        let empty = TrainConfig::from_toml("[data]\ntrain = \"t\"\n").unwrap();
        let sections = TrainConfig::from_toml(
            "[data]\ntrain = \"t\"\n[optim]\n[train]\n[checkpoint]\n[init]\n[model]\n",
        )
        .unwrap();
        let code = TrainConfig::new("t", "runs/quern");
        assert_eq!(empty, code);
        assert_eq!(sections, code);
        let o = &code.optim;
        assert_eq!(
            (o.lr, o.min_lr, o.warmup_steps, o.decay, o.weight_decay),
            (3e-4, None, 0, Decay::Cosine, 0.1)
        );
        assert_eq!(
            (
                o.decay_embeddings,
                o.beta1,
                o.beta2,
                o.eps,
                o.grad_clip,
                o.fused
            ),
            (false, 0.9, 0.95, 1e-8, 1.0, Fused::Auto)
        );
        let t = &code.train;
        assert_eq!(
            (
                t.objective.as_str(),
                t.micro_batch,
                t.grad_accum,
                t.max_steps
            ),
            ("clm", 8, 1, 100)
        );
        assert_eq!(
            (t.precision, t.device, t.seed, t.eval_every, t.eval_batches),
            (Precision::Fp32, DeviceChoice::Auto, 1234, 100, 8)
        );
        assert_eq!(
            (t.log_every, t.max_consecutive_skips, t.mask_prob, t.tf32),
            (1, 10, 0.15, true)
        );
        assert_eq!(
            (t.peak_tflops, t.loss_scale, t.loss_scale_growth_interval),
            (None, 65536.0, 2000)
        );
        assert_eq!((code.checkpoint.every, code.checkpoint.keep), (100, 3));
        assert_eq!(code.out_dir, PathBuf::from("runs/quern"));
    }
}
