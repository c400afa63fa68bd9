//! The training loop: data → objective → model → loss → AdamW, with evaluation, metrics,
//! checkpoints and exact resume.
//!
//! One optimizer step prepares all `train.grad_accum` micro-batches first, counts their
//! target tokens, and backpropagates each micro-batch's summed loss divided by that total, so
//! accumulation gives the gradient of the whole batch. Gradients are unscaled (fp16),
//! clipped by global norm, and checked: a step whose loss or gradient norm is not finite is
//! skipped (no update), reported in the metrics, and after `train.max_consecutive_skips` in a
//! row the run stops with an error that says what to try.
//!
//! Determinism: libtorch's generator is seeded from `(seed, step)` before every step, so
//! masking and dropout depend only on the step; with the data cursor and optimizer state in
//! the checkpoint, a resumed run on CPU repeats the uninterrupted run's losses exactly.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use quern_core::error::IoContext;
use quern_core::{Error, Result};
use serde::{Deserialize, Serialize};
use tch::{Device, Tensor};

use crate::amp::{self, AutocastGuard, LossScaler};
use crate::checkpoint::{self, Best, CheckpointState, Loaded};
use crate::config::{DeviceChoice, ModelConfig, Precision, TrainConfig};
use crate::data::{
    BatchSource, ClsRows, DataCursor, NspRows, PrefRows, Rows, SftRows, ShardRows, SplitMeta,
};
use crate::dist::{DistEnv, ProcessGroup};
use crate::memory;
use crate::model::Transformer;
use crate::objective::{Clm, Cls, Dpo, Mlm, Nsp, Objective, Pairs, Rm, Sft};
use crate::optim::{self, AdamW};
use quern_models::lora::AdapterRecord;

/// How [`train_with`] runs, beyond the configuration.
#[derive(Debug, Clone, Default)]
pub struct TrainOptions {
    /// Show an indicatif progress bar on stderr.
    pub progress: bool,
    /// Continue from the newest checkpoint in `out_dir` (start fresh when there is none).
    pub resume: bool,
    /// Replace the run already in `out_dir` (its metrics, checkpoints and report) instead of
    /// refusing to start. Ignored with `resume`.
    pub force: bool,
    /// Stop after this step without a final checkpoint, as if the process were killed (for
    /// tests of resume).
    pub stop_after: Option<u64>,
}

/// One logged training step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepLog {
    pub step: u64,
    pub loss: f64,
    pub lr: f64,
    pub grad_norm: f64,
    pub tokens: u64,
    pub tokens_per_s: f64,
    pub mfu: Option<f64>,
    pub skipped: bool,
    pub loss_scale: f64,
    /// `nsp`: the step's masked-LM loss (mean over its masked positions); `loss` is this
    /// plus `nsp_loss`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mlm_loss: Option<f64>,
    /// `nsp`: the step's next-sentence loss (mean over its rows).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nsp_loss: Option<f64>,
    /// `nsp`: the share of the step's rows whose next-sentence prediction was right.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nsp_accuracy: Option<f64>,
    /// `rm`, `dpo`: the step's pairs' scores.
    #[serde(flatten)]
    pub pairs: Option<PairMetrics>,
    /// A mixture (`[[data.mix]]`): the rows each split gave so far (`data.train` first,
    /// then `data.mix` in order).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mix_rows: Option<Vec<u64>>,
}

/// One split of a mixture at the end of a run: its weight and the rows it gave.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MixShare {
    pub split: PathBuf,
    /// Its weight, normalised over the mixture.
    pub weight: f64,
    /// Rows it gave over the run (resumed runs: since the start).
    pub rows: u64,
    /// `rows` over all the mixture's rows.
    pub share: f64,
}

/// What the pairs of a step or an evaluation show (`rm`, `dpo`), from each pair's chosen and
/// rejected scores: the reward (`rm`) or the implicit reward `β · (log π − log π_ref)`
/// (`dpo`, TRL's `rewards/*`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PairMetrics {
    /// The share of pairs whose chosen score is above the rejected one (ties count as wrong).
    pub pair_accuracy: f64,
    /// The mean of chosen minus rejected.
    pub margin: f64,
    /// The mean chosen score.
    pub reward_chosen: f64,
    /// The mean rejected score.
    pub reward_rejected: f64,
    /// The mean of all the scores, chosen and rejected.
    pub reward_mean: f64,
    /// Their standard deviation (population: divided by their number).
    pub reward_std: f64,
}

impl PairMetrics {
    /// The metrics of chosen and rejected scores, pair by pair (`None` without pairs).
    pub fn of(chosen: &[f64], rejected: &[f64]) -> Option<Self> {
        let n = chosen.len().min(rejected.len());
        if n == 0 {
            return None;
        }
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
        let (c, r) = (&chosen[..n], &rejected[..n]);
        let all: Vec<f64> = c.iter().chain(r).copied().collect();
        let m = mean(&all);
        Some(PairMetrics {
            pair_accuracy: c.iter().zip(r).filter(|(a, b)| a > b).count() as f64 / n as f64,
            margin: mean(c) - mean(r),
            reward_chosen: mean(c),
            reward_rejected: mean(r),
            reward_mean: m,
            reward_std: (all.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / all.len() as f64)
                .sqrt(),
        })
    }
}

/// One evaluation on the validation split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalLog {
    pub step: u64,
    pub val_loss: f64,
    pub val_ppl: f64,
    /// `cls`: the share of validation rows whose highest logit is their label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accuracy: Option<f64>,
    /// `cls`: the mean over classes of each class's F1 (every class weighs the same,
    /// scikit-learn's `macro` average; a class never predicted nor present counts 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub macro_f1: Option<f64>,
    /// `nsp`: the masked-LM part of `val_loss` (mean over masked positions); `val_ppl` is
    /// its exponential.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub val_mlm_loss: Option<f64>,
    /// `nsp`: the next-sentence part of `val_loss` (mean over rows).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub val_nsp_loss: Option<f64>,
    /// `nsp`: the share of validation rows whose next-sentence prediction is right.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub val_nsp_accuracy: Option<f64>,
    /// `rm`, `dpo`: the scores of the validation pairs.
    #[serde(flatten)]
    pub pairs: Option<PairMetrics>,
}

/// What a run did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrainReport {
    pub device: String,
    pub objective: String,
    pub parameters: i64,
    /// Parameters the optimizer updated: the LoRA adapters' in a `[lora]` run, else all.
    #[serde(default)]
    pub trainable_parameters: i64,
    pub model: ModelConfig,
    /// Step the run started at (non-zero after `--resume`).
    pub start_step: u64,
    pub steps: u64,
    pub tokens_seen: u64,
    /// Every step's loss, in order.
    pub losses: Vec<StepLog>,
    pub evals: Vec<EvalLog>,
    pub skipped_steps: u64,
    pub elapsed_s: f64,
    /// Median tokens/s over the run's steps.
    pub tokens_per_s: f64,
    pub mfu: Option<f64>,
    pub checkpoint: Option<PathBuf>,
    /// The evaluation with the lowest validation loss, and where its weights are (`best/`,
    /// when `checkpoint.keep_best`).
    #[serde(default)]
    pub best: Option<Best>,
    #[serde(default)]
    pub best_dir: Option<PathBuf>,
    /// Whether early stopping ended the run before `train.max_steps`.
    #[serde(default)]
    pub stopped_early: bool,
    /// What the run decided that the configuration did not say (e.g. a head initialised
    /// fresh because `init.from` has none), as printed when it started.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// A mixture's splits, weights and realised shares.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mix: Vec<MixShare>,
}

impl TrainReport {
    /// Mean loss of the first and last `n` logged steps.
    pub fn loss_drop(&self, n: usize) -> Option<(f64, f64)> {
        let l: Vec<f64> = self
            .losses
            .iter()
            .filter(|s| !s.skipped)
            .map(|s| s.loss)
            .collect();
        if l.len() < 2 * n || n == 0 {
            return None;
        }
        let mean = |s: &[f64]| s.iter().sum::<f64>() / s.len() as f64;
        Some((mean(&l[..n]), mean(&l[l.len() - n..])))
    }
}

/// Trains as `cfg` says: the library entry point behind `quern train` and the demo.
pub fn train(cfg: &TrainConfig, progress: bool) -> Result<TrainReport> {
    train_with(
        cfg,
        &TrainOptions {
            progress,
            ..TrainOptions::default()
        },
    )
}

/// Resolves the device choice against what libtorch can see.
pub fn resolve_device(choice: DeviceChoice) -> Result<Device> {
    match choice {
        DeviceChoice::Cpu => Ok(Device::Cpu),
        DeviceChoice::Auto => Ok(if tch::Cuda::is_available() { Device::Cuda(0) } else { Device::Cpu }),
        DeviceChoice::Cuda if tch::Cuda::is_available() => Ok(Device::Cuda(0)),
        DeviceChoice::Cuda => Err(Error::bad_config(
            "train.device",
            "`cuda` asked for, but libtorch sees no CUDA device (run `quern doctor`); use `auto` or `cpu`",
        )),
    }
}

/// Fills the model's `seq_len` and `vocab_size` from the data and checks they fit it.
pub fn resolve_model(cfg: &ModelConfig, meta: &SplitMeta) -> Result<ModelConfig> {
    let mut m = cfg.clone();
    let seq = m.seq_len.unwrap_or(meta.seq_len);
    if seq == 0 || seq > meta.seq_len {
        return Err(Error::bad_config(
            "model.seq_len",
            format!(
                "{seq} does not fit the data's rows (seq_len {} in meta.json)",
                meta.seq_len
            ),
        ));
    }
    let vocab = m.vocab_size.unwrap_or(meta.vocab_size.div_ceil(64) * 64);
    if vocab < meta.vocab_size {
        return Err(Error::bad_config(
            "model.vocab_size",
            format!(
                "{vocab} is smaller than the tokenizer's vocabulary ({})",
                meta.vocab_size
            ),
        ));
    }
    m.seq_len = Some(seq);
    m.vocab_size = Some(vocab);
    Ok(m)
}

/// The model of a run started from `init.from`: the source's shape (with the run's
/// dropout), checked against the data: the same tokenizer, a vocabulary that holds it.
pub fn resolve_init(
    cfg: &ModelConfig,
    w: &quern_models::store::Weights,
    meta: &SplitMeta,
    train_dir: &Path,
) -> Result<ModelConfig> {
    let mut m = w.meta.config.clone();
    m.dropout = cfg.dropout;
    let vocab = m.vocab_size.unwrap_or(0);
    if vocab < meta.vocab_size {
        return Err(Error::bad_config(
            "init.from",
            format!(
                "the model's vocabulary ({vocab}) is smaller than the data's tokenizer ({}): tokenize with the model's tokenizer.json",
                meta.vocab_size
            ),
        ));
    }
    let split_tok = train_dir.join("tokenizer.json");
    if let (Some(model_tok), true) = (&w.tokenizer_json, split_tok.exists()) {
        let a = tokenizers::Tokenizer::from_bytes(model_tok.as_bytes()).map_err(|e| {
            Error::bad_config("init.from", format!("the model's tokenizer.json: {e}"))
        })?;
        let b = quern_tokenize::tokenizer::load_tokenizer(&split_tok)?;
        if a.get_vocab(true) != b.get_vocab(true) {
            return Err(Error::bad_config(
                "init.from",
                format!(
                    "{} was tokenized with another tokenizer than the model's; tokenize with the model's tokenizer.json ({})",
                    train_dir.display(),
                    w.path.display()
                ),
            ));
        }
    }
    Ok(m)
}

/// The classification head of a `cls` run: the split's labels, `[cls]`'s pooling (`auto`
/// picks the family's) and pooler. `first` on a decoder is refused: under causal attention
/// the first token has seen nothing else.
pub fn resolve_head(
    cfg: &TrainConfig,
    model: &ModelConfig,
    meta: &SplitMeta,
) -> Result<quern_models::head::HeadConfig> {
    use crate::config::ClsPooling;
    use quern_models::head::{self, Pooling};
    let pooling = match cfg.cls.pooling {
        ClsPooling::Auto => head::default_pooling(model),
        ClsPooling::Last => Pooling::Last,
        ClsPooling::First => Pooling::First,
        ClsPooling::Mean => Pooling::Mean,
    };
    if pooling == Pooling::First && head::causal(model) {
        return Err(Error::bad_config(
            "cls.pooling",
            format!(
                "`first` reads the first token, which in a decoder ({}) has attended to nothing else: use `last` or `mean`",
                model.family()
            ),
        ));
    }
    let h = head::HeadConfig {
        num_labels: meta.labels.len(),
        labels: meta.labels.clone(),
        pooling,
        pooler: cfg.cls.pooler,
    };
    h.validate().map_err(|e| {
        Error::bad_config(
            "data.train",
            format!("{}: {e}", cfg.data.train.join("meta.json").display()),
        )
    })?;
    Ok(h)
}

/// Builds the objective named in the configuration.
pub fn make_objective(cfg: &TrainConfig, meta: &SplitMeta) -> Result<Box<dyn Objective>> {
    match cfg.train.objective.as_str() {
        "clm" => Ok(Box::new(Clm)),
        "sft" => Ok(Box::new(Sft)),
        "cls" => {
            if let Some(w) = &cfg.cls.class_weights {
                if w.len() != meta.labels.len() {
                    return Err(Error::bad_config(
                        "cls.class_weights",
                        format!(
                            "{} weight(s), but {} names {} labels ({}): give one weight per label, in that order",
                            w.len(),
                            cfg.data.train.join("meta.json").display(),
                            meta.labels.len(),
                            meta.labels.join(", ")
                        ),
                    ));
                }
            }
            Ok(Box::new(Cls {
                class_weights: cfg.cls.class_weights.clone(),
            }))
        }
        name @ ("mlm" | "nsp") => {
            let mask_id = meta.mask_id.ok_or_else(|| {
                Error::bad_config(
                    "train.objective",
                    format!("`{name}` needs a mask token, but the split's meta.json has no mask_id: tokenize with a tokenizer that has one"),
                )
            })?;
            let mlm = Mlm {
                mask_prob: cfg.train.mask_prob,
                mask_id,
                vocab_size: meta.vocab_size as i64,
                pad_id: meta.pad_id,
            };
            if name == "mlm" {
                return Ok(Box::new(mlm));
            }
            let (Some(cls_id), Some(sep_id)) = (meta.bos_id, meta.eos_id) else {
                return Err(Error::bad_config(
                    "train.objective",
                    "`nsp` needs the [CLS] and [SEP] ids (bos_id and eos_id), but the split's meta.json lacks one",
                ));
            };
            Ok(Box::new(Nsp {
                mlm,
                cls_id,
                sep_id,
            }))
        }
        "rm" => Ok(Box::new(Rm {
            center: cfg.rm.center_rewards_coefficient.unwrap_or(0.0),
        })),
        // The reference is set by `train_with` once the policy's starting weights exist.
        "dpo" => Ok(Box::new(Dpo {
            beta: cfg.dpo.beta,
            loss: cfg.dpo.loss,
            reference: None,
        })),
        other => Err(Error::bad_config(
            "train.objective",
            format!("unknown objective `{other}`; available: clm, mlm, sft, cls, nsp, rm, dpo"),
        )),
    }
}

/// What a rank mixes into the seed of its per-step generator, so that ranks draw different
/// masks and dropout; 0 for rank 0 (a single process draws as before).
fn rank_salt(rank: usize) -> u64 {
    (rank as u64).wrapping_mul(0xA24B_AED4_963E_E407)
}

fn step_seed(seed: u64, step: u64) -> i64 {
    let mut r = crate::data::SplitMix64(seed ^ step.wrapping_mul(0xD1B5_4A32_D192_ED03));
    (r.next_u64() >> 1) as i64
}

/// The trainer's state: model, optimizer, data and counters.
pub struct Trainer {
    pub cfg: TrainConfig,
    pub model: Transformer,
    pub optimizer: AdamW,
    pub objective: Box<dyn Objective>,
    pub train_data: Box<dyn BatchSource>,
    pub val_data: Option<Box<dyn BatchSource>>,
    pub device: Device,
    pub scaler: LossScaler,
    pub step: u64,
    pub tokens_seen: u64,
    pub consecutive_skips: u64,
    pub skipped_steps: u64,
    /// Ids per model row (`seq_len + 1`); source rows are cut to it.
    width: i64,
    /// A LoRA run's record of its adapters and base model, written with every checkpoint
    /// (set by [`train_with`] from `init.from`).
    pub adapter: Option<AdapterRecord>,
    /// The evaluation with the lowest validation loss so far.
    pub best: Option<Best>,
    /// Evaluations since `best` that did not improve on it by `train.early_stop_min_delta`.
    pub evals_since_best: u64,
    /// `nsp`: the last step's MLM and NSP losses and NSP accuracy, for its metrics line.
    last_terms: Option<(f64, f64, f64)>,
    /// `rm`, `dpo`: the last step's pair metrics.
    last_pairs: Option<PairMetrics>,
    /// The process group of a data-parallel run (set by [`train_with`] under torchrun):
    /// target counts, losses and gradients are summed over it. `None`: one process.
    pub dist: Option<ProcessGroup>,
}

impl std::fmt::Debug for Trainer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trainer")
            .field("step", &self.step)
            .field("model", &self.model)
            .finish()
    }
}

impl Trainer {
    /// A fresh trainer: the model is initialised from `cfg.train.seed`. `model_cfg` must be
    /// resolved (see [`resolve_model`]).
    pub fn new(
        cfg: &TrainConfig,
        model_cfg: &ModelConfig,
        objective: Box<dyn Objective>,
        train_data: Box<dyn BatchSource>,
        val_data: Option<Box<dyn BatchSource>>,
        device: Device,
    ) -> Result<Self> {
        cfg.validate()?;
        let ctx = model_cfg
            .seq_len
            .ok_or_else(|| Error::bug("model.seq_len not resolved"))?;
        // Training windows: the model's context, or the data's rows when they are shorter
        // (a model started from `init.from` keeps its own, longer context).
        let seq = if cfg.init.from.is_some() {
            ctx.min(train_data.row_width().saturating_sub(1))
        } else {
            ctx
        };
        if seq == 0 || (train_data.fixed_width() && train_data.row_width() < seq + 1) {
            return Err(Error::bad_config(
                "model.seq_len",
                format!("{seq} is longer than the data's rows allow"),
            ));
        }
        // Variable-length rows (sft conversations, cls examples) are never cut: the model's
        // context must hold the longest row the split may have (its meta.json seq_len), less
        // its last id when that is only a target.
        let shift = usize::from(objective.shifts());
        if !train_data.fixed_width() && train_data.row_width() > ctx + shift {
            return Err(Error::bad_config(
                if cfg.init.from.is_some() { "init.from" } else { "model.seq_len" },
                format!(
                    "the model's context is {ctx} positions, but {} holds rows of up to {} ids (meta.json seq_len), \
                     which need {}: tokenize with --seq-len {} or less{}",
                    cfg.data.train.display(),
                    train_data.row_width(),
                    train_data.row_width() - shift,
                    ctx + shift,
                    if cfg.init.from.is_some() { "" } else { ", or raise model.seq_len" }
                ),
            ));
        }
        let seq = if train_data.fixed_width() {
            seq
        } else {
            train_data.row_width().saturating_sub(1).clamp(1, ctx)
        };
        if device.is_cuda() {
            amp::set_tf32(cfg.train.tf32)?;
        } else {
            quern_models::device::keep_freed_memory();
        }
        let t = &cfg.train;
        let batch = t.micro_batch * t.grad_accum;
        if batch > train_data.rows() {
            return Err(Error::bad_config(
                if t.grad_accum > 1 { "train.grad_accum" } else { "train.micro_batch" },
                format!(
                    "a step takes train.micro_batch x train.grad_accum = {} x {} = {batch} rows, but {} holds only {}: \
                     every step would repeat rows; lower them",
                    t.micro_batch,
                    t.grad_accum,
                    cfg.data.train.display(),
                    train_data.rows()
                ),
            ));
        }
        // Refuse a step that cannot fit in memory before allocating the model, its optimizer
        // state or the first batch (libtorch would abort or the kernel kill the process, silently).
        // A micro-batch of preference pairs is twice as many sequences.
        let sequences = t.micro_batch * if objective.pairwise() { 2 } else { 1 };
        if !device.is_cuda() {
            if let Some(available) = memory::available_bytes() {
                // From the shape, before the weights exist. LoRA's adapters are small next to
                // the frozen weights; count no gradient or optimizer state for the base.
                let params = memory::param_count(model_cfg);
                let trainable = if cfg.lora.is_some() { 0 } else { params };
                let est =
                    memory::estimate(model_cfg, params, trainable, sequences, seq, t.precision);
                memory::check(est, available, sequences, seq)?;
            }
        }
        tch::manual_seed(cfg.train.seed as i64);
        let mut model = Transformer::new(model_cfg, device);
        if let Some(lora) = &cfg.lora {
            model.add_lora(lora)?;
        }
        // With LoRA the optimizer sees only the adapters; the base weights are frozen.
        let optimizer = AdamW::new(&cfg.optim, model.trainable(), device);
        let scaler = LossScaler::new(
            cfg.train.precision,
            cfg.train.loss_scale,
            cfg.train.loss_scale_growth_interval,
        );
        Ok(Trainer {
            cfg: cfg.clone(),
            model,
            optimizer,
            objective,
            train_data,
            val_data,
            device,
            scaler,
            step: 0,
            tokens_seen: 0,
            consecutive_skips: 0,
            skipped_steps: 0,
            width: seq as i64 + 1,
            adapter: None,
            best: None,
            evals_since_best: 0,
            last_terms: None,
            last_pairs: None,
            dist: None,
        })
    }

    /// This process's rank in a data-parallel run (0 alone).
    pub fn rank(&self) -> usize {
        self.dist.as_ref().map_or(0, |d| d.rank)
    }

    /// The processes training together (1 alone).
    pub fn world_size(&self) -> usize {
        self.dist.as_ref().map_or(1, |d| d.world_size)
    }

    /// `values` summed over the ranks (themselves in one process).
    fn global(&self, values: &[f64]) -> Result<Vec<f64>> {
        match &self.dist {
            Some(d) => d.sum(values),
            None => Ok(values.to_vec()),
        }
    }

    /// A count summed over the ranks.
    fn global_count(&self, n: i64) -> Result<i64> {
        Ok(self.global(&[n as f64])?[0].round() as i64)
    }

    /// Moves a micro-batch to the device; packed rows are cut to the training window
    /// (variable-length rows never are: [`Trainer::new`] checked they fit the context).
    fn rows_to_device(&self, rows: &Rows) -> Rows {
        let packed = rows.loss_mask.is_none() && rows.lengths.is_empty();
        let ids = if packed && rows.ids.size()[1] > self.width {
            rows.ids.narrow(1, 0, self.width)
        } else {
            rows.ids.shallow_clone()
        };
        Rows {
            ids: ids.to_device(self.device),
            loss_mask: rows.loss_mask.as_ref().map(|m| m.to_device(self.device)),
            lengths: rows.lengths.clone(),
            labels: rows.labels.as_ref().map(|l| l.to_device(self.device)),
            segments: rows.segments.as_ref().map(|g| g.to_device(self.device)),
            token_types: rows.token_types.as_ref().map(|t| t.to_device(self.device)),
        }
    }

    /// Zeroes the gradients, then backpropagates the micro-batches `rows` (each `[b,
    /// seq_len + 1]`) normalised by their total target count, times `scale`. Returns the
    /// mean loss per target and the target count.
    pub fn accumulate(&mut self, rows: &[Tensor], scale: f64) -> Result<(f64, i64)> {
        let rows: Vec<Rows> = rows
            .iter()
            .map(|r| Rows::packed(r.shallow_clone()))
            .collect();
        self.accumulate_rows(&rows, scale)
    }

    /// [`accumulate`](Self::accumulate) for micro-batches as a [`BatchSource`] gives them
    /// (with the loss mask of `sft` rows): every micro-batch's summed loss is divided by the
    /// target count of all of them.
    pub fn accumulate_rows(&mut self, rows: &[Rows], scale: f64) -> Result<(f64, i64)> {
        self.model.trainable_mut().zero_grad();
        let prepared: Vec<_> = rows
            .iter()
            .map(|r| self.objective.prepare_rows(&self.rows_to_device(r)))
            .collect::<Result<_>>()?;
        // Normalised by the targets of the whole step over every rank, so that the summed
        // gradients are those of one batch of micro_batch x grad_accum x world_size rows.
        let total = self.global_count(prepared.iter().map(|p| p.count).sum())?;
        let denom = total.max(1) as f64;
        if prepared.iter().any(|p| p.nsp.is_some()) {
            return self.accumulate_terms(&prepared, total, scale);
        }
        if self.objective.pairwise() {
            return self.accumulate_pairs(&prepared, total, scale);
        }
        let mut loss_sum = Tensor::from(0f32).to_device(self.device);
        for p in &prepared {
            let sum = {
                let _ac = AutocastGuard::new(self.device, self.cfg.train.precision)?;
                self.objective.loss_sum(&self.model, p, true)
            };
            loss_sum += sum.detach();
            (sum * (scale / denom)).backward();
        }
        Ok((
            self.global(&[loss_sum.double_value(&[])])?[0] / denom,
            total,
        ))
    }

    /// [`accumulate_rows`](Self::accumulate_rows) for objectives of two terms (`nsp`): each
    /// term summed over the micro-batches is divided by its own count over the step (masked
    /// positions, rows), and the loss is their sum, as `BertForPreTraining`'s. Records the
    /// terms for the step's metrics.
    fn accumulate_terms(
        &mut self,
        prepared: &[crate::objective::Prepared],
        total: i64,
        scale: f64,
    ) -> Result<(f64, i64)> {
        let rows = self.global_count(
            prepared
                .iter()
                .filter_map(|p| p.nsp.as_ref().map(|n| n.rows()))
                .sum(),
        )?;
        let (dm, dn) = (total.max(1) as f64, rows.max(1) as f64);
        let zero = || Tensor::from(0f32).to_device(self.device);
        let (mut mlm, mut nsp, mut correct) = (zero(), zero(), 0i64);
        for p in prepared {
            let t = {
                let _ac = AutocastGuard::new(self.device, self.cfg.train.precision)?;
                self.objective
                    .terms(&self.model, p, true)
                    .ok_or_else(|| Error::bug("a micro-batch of a two-term step has one term"))?
            };
            mlm += t.mlm_sum.detach();
            nsp += t.nsp_sum.detach();
            correct += t.nsp_correct.int64_value(&[]);
            (t.mlm_sum * (scale / dm) + t.nsp_sum * (scale / dn)).backward();
        }
        let sums = self.global(&[mlm.double_value(&[]), nsp.double_value(&[]), correct as f64])?;
        let (m, n) = (sums[0] / dm, sums[1] / dn);
        self.last_terms = Some((m, n, sums[2] / dn));
        Ok((m + n, total))
    }

    /// [`accumulate_rows`](Self::accumulate_rows) for preference objectives (`rm`, `dpo`):
    /// each micro-batch's loss summed over its pairs is divided by the pairs of the whole
    /// step. Records the step's pair metrics.
    fn accumulate_pairs(
        &mut self,
        prepared: &[crate::objective::Prepared],
        total: i64,
        scale: f64,
    ) -> Result<(f64, i64)> {
        let denom = total.max(1) as f64;
        let mut loss_sum = Tensor::from(0f32).to_device(self.device);
        let (mut chosen, mut rejected) = (Vec::new(), Vec::new());
        for p in prepared {
            let pairs = {
                let _ac = AutocastGuard::new(self.device, self.cfg.train.precision)?;
                self.objective
                    .pairs(&self.model, p, true)
                    .ok_or_else(|| Error::bug("a preference objective without pairs"))?
            };
            loss_sum += pairs.loss_sum.detach();
            collect_scores(&pairs, &mut chosen, &mut rejected)?;
            (pairs.loss_sum * (scale / denom)).backward();
        }
        // In a data-parallel run, the pair metrics are those of this rank's pairs.
        self.last_pairs = PairMetrics::of(&chosen, &rejected);
        Ok((
            self.global(&[loss_sum.double_value(&[])])?[0] / denom,
            total,
        ))
    }

    /// One optimizer step on the next batch of training data.
    pub fn train_step(&mut self) -> Result<StepLog> {
        let t0 = Instant::now();
        let salt = rank_salt(self.rank());
        let t = &self.cfg.train;
        tch::manual_seed(step_seed(t.seed ^ salt, self.step));
        let mut rows = Vec::with_capacity(t.grad_accum);
        for _ in 0..t.grad_accum {
            rows.push(self.train_data.next_batch(t.micro_batch)?);
        }
        let tokens: u64 = rows
            .iter()
            .map(|r| r.input_tokens(self.width as usize))
            .sum();
        let tokens = self.global(&[tokens as f64])?[0].round() as u64;
        let scale = self.scaler.scale;
        self.last_terms = None;
        self.last_pairs = None;
        let (loss, _) = self.accumulate_rows(&rows, scale)?;
        if let Some(d) = &self.dist {
            let bucket = (self.cfg.dist.bucket_mb * 1024.0 * 1024.0).max(1.0) as u64;
            d.all_reduce_grads(self.model.trainable(), bucket)?;
        }
        let terms = self.last_terms.take();
        let pairs = self.last_pairs.take();
        let grad_norm = optim::unscale_and_clip(
            self.model.trainable_mut(),
            1.0 / scale,
            self.cfg.optim.grad_clip,
        );
        let finite = loss.is_finite() && grad_norm.is_finite();
        self.scaler.update(finite);
        let lr = optim::lr_at(&self.cfg.optim, self.step, self.cfg.train.max_steps);
        if finite {
            self.optimizer.step(self.model.trainable_mut(), lr)?;
            // A pruned model's zeros stay zero (`model.pruned`, from `quern compress`).
            self.model.apply_masks();
            self.consecutive_skips = 0;
        } else {
            self.skipped_steps += 1;
            self.consecutive_skips += 1;
        }
        self.model.trainable_mut().zero_grad();
        self.tokens_seen += tokens;
        self.step += 1;
        if self.consecutive_skips >= self.cfg.train.max_consecutive_skips {
            return Err(Error::usage(format!(
                "stopping at step {}: {} steps in a row had a non-finite loss or gradient (last loss {loss}, grad norm {grad_norm}). \
                 Lower optim.lr, raise optim.warmup_steps, keep optim.grad_clip on, or use train.precision = \"bf16\" instead of fp16",
                self.step, self.consecutive_skips
            )));
        }
        let secs = t0.elapsed().as_secs_f64().max(1e-9);
        let tokens_per_s = tokens as f64 / secs;
        let peak = self.cfg.train.peak_tflops.or(if self.device.is_cuda() {
            Some(989.0)
        } else {
            None
        });
        // tokens_per_s is the whole group's (tokens summed over the ranks); MFU is per device.
        let mfu = peak.map(|p| {
            tokens_per_s * self.model.flops_per_token(self.width - 1)
                / (p * 1e12 * self.world_size() as f64)
        });
        Ok(StepLog {
            step: self.step,
            loss,
            lr,
            grad_norm,
            tokens: self.tokens_seen,
            tokens_per_s,
            mfu,
            skipped: !finite,
            loss_scale: scale,
            mlm_loss: terms.map(|t| t.0),
            nsp_loss: terms.map(|t| t.1),
            nsp_accuracy: terms.map(|t| t.2),
            pairs,
            mix_rows: self.train_data.mix_rows(),
        })
    }

    /// Mean loss per target token and perplexity over the first `train.eval_batches`
    /// micro-batches of the validation split (always the same rows and, for mlm, masks; each
    /// row at most once).
    pub fn evaluate(&mut self) -> Result<Option<EvalLog>> {
        let Some(val) = self.val_data.as_mut() else {
            return Ok(None);
        };
        val.seek(DataCursor::default())?;
        let mb = self.cfg.train.micro_batch;
        let batches = self
            .cfg
            .train
            .eval_batches
            .min(val.rows().div_ceil(mb))
            .max(1);
        // The last batch stops at the split's end, so no validation row counts twice.
        let mut all = Vec::with_capacity(batches);
        let mut left = val.rows().max(1);
        for _ in 0..batches {
            let n = mb.min(left);
            all.push(val.next_batch(n)?);
            left -= n;
            if left == 0 {
                break;
            }
        }
        let _g = tch::no_grad_guard();
        tch::manual_seed(step_seed(self.cfg.train.seed ^ 0xE7A1, 0));
        let (mut sum, mut count) = (0.0, 0i64);
        let (mut gold, mut pred) = (Vec::new(), Vec::new());
        // nsp: the NSP loss summed, the rows and the right predictions.
        let (mut nsp_sum, mut nsp_rows, mut nsp_correct) = (0.0, 0i64, 0i64);
        // rm, dpo: each pair's scores.
        let (mut chosen, mut rejected) = (Vec::new(), Vec::new());
        for rows in all {
            let p = self.objective.prepare_rows(&self.rows_to_device(&rows))?;
            let _ac = AutocastGuard::new(self.device, self.cfg.train.precision)?;
            if self.objective.pairwise() {
                let pairs = self
                    .objective
                    .pairs(&self.model, &p, false)
                    .ok_or_else(|| Error::bug("a preference objective without pairs"))?;
                sum += pairs.loss_sum.double_value(&[]);
                count += p.count;
                collect_scores(&pairs, &mut chosen, &mut rejected)?;
                continue;
            }
            if let Some(rows) = p.nsp.as_ref().map(|n| n.rows()) {
                let t = self
                    .objective
                    .terms(&self.model, &p, false)
                    .ok_or_else(|| Error::bug("an nsp micro-batch without its terms"))?;
                sum += t.mlm_sum.double_value(&[]);
                count += p.count;
                nsp_sum += t.nsp_sum.double_value(&[]);
                nsp_rows += rows;
                nsp_correct += t.nsp_correct.int64_value(&[]);
                continue;
            }
            let (loss, predicted) = self.objective.loss_and_predictions(&self.model, &p, false);
            sum += loss.double_value(&[]);
            count += p.count;
            if let Some(pr) = predicted {
                pred.extend(
                    Vec::<i64>::try_from(pr.to_device(Device::Cpu))
                        .map_err(|e| Error::bug(format!("reading predictions: {e}")))?,
                );
                gold.extend(
                    Vec::<i64>::try_from(p.targets.to_device(Device::Cpu))
                        .map_err(|e| Error::bug(format!("reading labels: {e}")))?,
                );
            }
        }
        let val_loss = sum / count.max(1) as f64;
        if nsp_rows > 0 {
            let nsp_loss = nsp_sum / nsp_rows as f64;
            return Ok(Some(EvalLog {
                step: self.step,
                val_loss: val_loss + nsp_loss,
                val_ppl: val_loss.exp(),
                accuracy: None,
                macro_f1: None,
                val_mlm_loss: Some(val_loss),
                val_nsp_loss: Some(nsp_loss),
                val_nsp_accuracy: Some(nsp_correct as f64 / nsp_rows as f64),
                pairs: None,
            }));
        }
        let (accuracy, macro_f1) = match self.model.head() {
            Some(h) if !gold.is_empty() => {
                let (a, f) = accuracy_macro_f1(&gold, &pred, h.num_labels);
                (Some(a), Some(f))
            }
            _ => (None, None),
        };
        Ok(Some(EvalLog {
            step: self.step,
            val_loss,
            val_ppl: val_loss.exp(),
            accuracy,
            macro_f1,
            val_mlm_loss: None,
            val_nsp_loss: None,
            val_nsp_accuracy: None,
            pairs: PairMetrics::of(&chosen, &rejected),
        }))
    }

    /// The state a checkpoint records.
    pub fn state(&self) -> CheckpointState {
        CheckpointState {
            step: self.step,
            optimizer_steps: self.optimizer.step,
            tokens_seen: self.tokens_seen,
            cursor: self.train_data.cursor(),
            world_size: self.world_size(),
            cursors: Vec::new(),
            seed: self.cfg.train.seed,
            scaler: self.scaler.clone(),
            consecutive_skips: self.consecutive_skips,
            skipped_steps: self.skipped_steps,
            model: self.model.config().clone(),
            config: self.cfg.clone(),
            lora: self.adapter.clone(),
            quern_version: env!("CARGO_PKG_VERSION").to_string(),
            best: self.best,
            evals_since_best: self.evals_since_best,
        }
    }

    /// Writes a checkpoint of the current step. In a data-parallel run every rank calls it:
    /// the ranks' data cursors are gathered and rank 0 alone writes.
    pub fn save_checkpoint(&self) -> Result<PathBuf> {
        let mut state = self.state();
        if let Some(d) = &self.dist {
            let c = self.train_data.cursor();
            state.cursors = d
                .gather_u64(&[c.epoch, c.position])?
                .into_iter()
                .map(|v| DataCursor {
                    epoch: v[0],
                    position: v[1],
                })
                .collect();
            if d.rank != 0 {
                return Ok(checkpoint::step_dir(
                    &checkpoint::checkpoints_dir(&self.cfg.out_dir),
                    self.step,
                ));
            }
        }
        let opt = self.optimizer.state(self.model.trainable());
        checkpoint::save(
            &self.cfg.out_dir,
            &state,
            self.model.trainable(),
            &opt,
            self.cfg.checkpoint.keep,
        )
    }

    /// Restores weights, optimizer state, data position and counters from a checkpoint.
    pub fn restore(&mut self, ck: &Loaded) -> Result<()> {
        let s = &ck.state;
        if s.world_size != self.world_size() {
            return Err(Error::usage(format!(
                "the checkpoint in {} was written by a run of WORLD_SIZE {}, but this run has WORLD_SIZE {}: \
                 resume with the same number of ranks (each rank continues its own share of the data)",
                ck.dir.display(),
                s.world_size,
                self.world_size()
            )));
        }
        let cursor = match s.cursors.get(self.rank()) {
            Some(c) => *c,
            None if self.rank() == 0 => s.cursor,
            None => {
                return Err(Error::usage(format!(
                    "the checkpoint in {} holds no data cursor for rank {}",
                    ck.dir.display(),
                    self.rank()
                )))
            }
        };
        if &s.model != self.model.config() {
            return Err(Error::bad_config(
                "model",
                format!(
                    "the checkpoint in {} was trained with a different model shape; start a new out_dir or restore the [model] section",
                    ck.dir.display()
                ),
            ));
        }
        if s.seed != self.cfg.train.seed {
            return Err(Error::bad_config(
                "train.seed",
                format!(
                    "the checkpoint used seed {}; resuming with {} would not continue the same run",
                    s.seed, self.cfg.train.seed
                ),
            ));
        }
        if s.lora != self.adapter {
            let what = |r: &Option<AdapterRecord>| match r {
                Some(r) => format!(
                    "LoRA adapters (rank {}, on {}, weights hash {})",
                    r.lora.rank,
                    r.base.display(),
                    r.base_hash
                ),
                None => "every weight".to_string(),
            };
            return Err(Error::bad_config(
                "lora",
                format!(
                    "the checkpoint in {} trained {}, but this run trains {}: start a new out_dir or restore [lora] and init.from",
                    ck.dir.display(),
                    what(&s.lora),
                    what(&self.adapter)
                ),
            ));
        }
        checkpoint::restore_weights(
            self.model.trainable_mut(),
            &ck.weights,
            &ck.dir.join("model.safetensors"),
        )?;
        let opt_file = ck.dir.join("optimizer.safetensors");
        let get = |name: &str| Loaded::tensor(&ck.optimizer, &opt_file, name);
        self.optimizer
            .load_state(self.model.trainable(), s.optimizer_steps, &get)?;
        self.train_data.seek(cursor)?;
        self.step = s.step;
        self.tokens_seen = s.tokens_seen;
        self.scaler = s.scaler.clone();
        self.consecutive_skips = s.consecutive_skips;
        self.skipped_steps = s.skipped_steps;
        self.best = s.best;
        self.evals_since_best = s.evals_since_best;
        Ok(())
    }

    /// Records an evaluation for model selection: a validation loss below the best by more
    /// than `train.early_stop_min_delta` becomes the best (its weights go to `best/` when
    /// `checkpoint.keep_best`); otherwise one more evaluation without improvement. Returns
    /// whether early stopping's patience has run out.
    pub fn observe_eval(&mut self, e: &EvalLog) -> Result<bool> {
        let delta = self.cfg.train.early_stop_min_delta;
        let improved = self
            .best
            .is_none_or(|b| e.val_loss.is_finite() && e.val_loss < b.val_loss - delta);
        if improved {
            self.best = Some(Best {
                step: e.step,
                val_loss: e.val_loss,
            });
            self.evals_since_best = 0;
            if self.cfg.checkpoint.keep_best && self.rank() == 0 {
                checkpoint::save_best(&self.cfg.out_dir, &self.state(), self.model.trainable())?;
            }
        } else {
            self.evals_since_best += 1;
        }
        let patience = self.cfg.train.early_stop_patience;
        Ok(patience > 0 && self.evals_since_best >= patience)
    }
}

/// The printed line of an `rm` or `dpo` evaluation.
fn pairs_line(e: &EvalLog) -> String {
    match e.pairs {
        Some(p) => format!(
            "step {}: val loss {:.4} pair accuracy {:.4} margin {:.4} rewards {:.4} ± {:.4}",
            e.step, e.val_loss, p.pair_accuracy, p.margin, p.reward_mean, p.reward_std
        ),
        None => format!("step {}: val loss {:.4}", e.step, e.val_loss),
    }
}

/// Appends a micro-batch's chosen and rejected scores.
fn collect_scores(pairs: &Pairs, chosen: &mut Vec<f64>, rejected: &mut Vec<f64>) -> Result<()> {
    let read = |t: &Tensor| {
        Vec::<f64>::try_from(t.to_kind(tch::Kind::Double).to_device(Device::Cpu))
            .map_err(|e| Error::bug(format!("reading pair scores: {e}")))
    };
    chosen.extend(read(&pairs.chosen)?);
    rejected.extend(read(&pairs.rejected)?);
    Ok(())
}

/// Accuracy and macro-F1 (scikit-learn's conventions: a ratio with a zero denominator is 0,
/// every class weighs the same) of predicted against gold class ids in `0..classes`.
pub fn accuracy_macro_f1(gold: &[i64], pred: &[i64], classes: usize) -> (f64, f64) {
    let (mut tp, mut gold_n, mut pred_n) = (
        vec![0u64; classes],
        vec![0u64; classes],
        vec![0u64; classes],
    );
    let mut correct = 0u64;
    for (&g, &p) in gold.iter().zip(pred) {
        let (g, p) = (g as usize, p as usize);
        if g < classes {
            gold_n[g] += 1;
        }
        if p < classes {
            pred_n[p] += 1;
        }
        if g == p && g < classes {
            tp[g] += 1;
            correct += 1;
        }
    }
    let ratio = |a: u64, b: u64| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    let f1: f64 = (0..classes)
        .map(|c| {
            let (p, r) = (ratio(tp[c], pred_n[c]), ratio(tp[c], gold_n[c]));
            if p + r > 0.0 {
                2.0 * p * r / (p + r)
            } else {
                0.0
            }
        })
        .sum();
    (
        ratio(correct, gold.len() as u64),
        if classes == 0 {
            0.0
        } else {
            f1 / classes as f64
        },
    )
}

/// Evaluates on the validation split (when there is one), prints and logs the result.
/// Returns whether early stopping says to stop.
fn evaluate_and_log(
    trainer: &mut Trainer,
    bar: &ProgressBar,
    metrics: &mut Option<Metrics>,
    evals: &mut Vec<EvalLog>,
) -> Result<bool> {
    let Some(e) = trainer.evaluate()? else {
        return Ok(false);
    };
    bar.println(match (e.accuracy, e.macro_f1, e.val_nsp_accuracy) {
        _ if e.pairs.is_some() => pairs_line(&e),
        (Some(a), Some(f), _) => format!(
            "step {}: val loss {:.4} accuracy {:.4} macro-F1 {:.4}",
            e.step, e.val_loss, a, f
        ),
        (_, _, Some(a)) => format!(
            "step {}: val loss {:.4} (MLM {:.4}, NSP {:.4}) NSP accuracy {:.4}",
            e.step,
            e.val_loss,
            e.val_mlm_loss.unwrap_or(f64::NAN),
            e.val_nsp_loss.unwrap_or(f64::NAN),
            a
        ),
        _ => format!(
            "step {}: val loss {:.4} ppl {:.2}",
            e.step, e.val_loss, e.val_ppl
        ),
    });
    if let Some(m) = metrics.as_mut() {
        m.write("eval", &e)?;
    }
    let stop = trainer.observe_eval(&e)?;
    evals.push(e);
    Ok(stop)
}

/// Appends JSON lines to `metrics.jsonl` (the trainer's and `quern rl`'s).
pub(crate) struct Metrics {
    path: PathBuf,
    file: fs::File,
}

impl Metrics {
    /// Opens the log; on resume, first drops lines of steps after `keep_until` (the
    /// interrupted run's steps that will be repeated).
    pub(crate) fn open(out_dir: &Path, keep_until: Option<u64>) -> Result<Self> {
        let path = out_dir.join("metrics.jsonl");
        match keep_until {
            Some(step) if path.exists() => {
                let text = fs::read_to_string(&path).at(&path)?;
                let kept: String = text
                    .lines()
                    .filter(|l| {
                        serde_json::from_str::<serde_json::Value>(l)
                            .ok()
                            .and_then(|v| v.get("step").and_then(|s| s.as_u64()))
                            .is_some_and(|s| s <= step)
                    })
                    .map(|l| format!("{l}\n"))
                    .collect();
                quern_core::shard::write_atomic(&path, kept.as_bytes())?;
            }
            Some(_) => {}
            None => {
                if path.exists() {
                    fs::remove_file(&path).at(&path)?;
                }
            }
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .at(&path)?;
        Ok(Metrics { path, file })
    }

    /// Appends `row` with `"kind": kind`.
    pub(crate) fn write<T: Serialize>(&mut self, kind: &str, row: &T) -> Result<()> {
        let mut v = serde_json::to_value(row)?;
        if let Some(o) = v.as_object_mut() {
            o.insert("kind".into(), kind.into());
        }
        writeln!(self.file, "{v}").at(&self.path)
    }
}

/// Opens a split for the objective: `sft` rows for `sft`, packed rows otherwise; each refuses
/// a split of the other kind, naming its meta.json.
/// The rows are those of rank `rank` of `world` (every rank gets its own share).
fn open_split(
    dir: &Path,
    seed: u64,
    objective: &str,
    rank: usize,
    world: usize,
) -> Result<(Box<dyn BatchSource>, SplitMeta)> {
    if objective == "cls" {
        let (rows, meta) = ClsRows::open(dir, seed, rank, world)?;
        return Ok((Box::new(rows), meta));
    }
    if objective == "sft" {
        let (rows, meta) = SftRows::open(dir, seed, rank, world)?;
        return Ok((Box::new(rows), meta));
    }
    if objective == "nsp" {
        let (rows, meta) = NspRows::open(dir, seed, rank, world)?;
        return Ok((Box::new(rows), meta));
    }
    if matches!(objective, "rm" | "dpo") {
        let (rows, meta) = PrefRows::open(dir, objective, seed, rank, world)?;
        return Ok((Box::new(rows), meta));
    }
    let (rows, meta) = ShardRows::open(dir, seed, rank, world)?;
    Ok((Box::new(rows), meta))
}

/// What a run writes in its `out_dir`: the marks of a run already there.
const RUN_FILES: [&str; 5] = [
    "metrics.jsonl",
    "checkpoints",
    "best",
    "report.json",
    "report.html",
];

/// Refuses an `out_dir` that holds another run (starting over would delete its metrics and
/// mix its checkpoints with this run's), unless the run is resumed or `force`d; forced,
/// removes that run's files and nothing else in the directory. In a data-parallel run only
/// rank 0 removes; the other ranks check (so that a refusal stops every rank) unless forced.
fn claim_out_dir(dir: &Path, opts: &TrainOptions, rank: usize) -> Result<()> {
    if opts.resume || (opts.force && rank != 0) {
        return Ok(());
    }
    let found: Vec<&str> = RUN_FILES
        .into_iter()
        .filter(|f| dir.join(f).exists())
        .collect();
    if found.is_empty() {
        return Ok(());
    }
    if !opts.force {
        return Err(Error::usage(format!(
            "{} already holds a training run ({}); pass --resume to continue it, or --force \
             to replace it, or choose another out_dir",
            dir.display(),
            found.join(", ")
        )));
    }
    for f in found {
        let path = dir.join(f);
        if path.is_dir() {
            fs::remove_dir_all(&path).at(&path)?;
        } else {
            fs::remove_file(&path).at(&path)?;
        }
    }
    Ok(())
}

/// Trains as `cfg` says, with the given options.
pub fn train_with(cfg: &TrainConfig, opts: &TrainOptions) -> Result<TrainReport> {
    cfg.validate()?;
    let mut device = resolve_device(cfg.train.device)?;
    // Under torchrun: join the process group (each rank on CUDA device LOCAL_RANK).
    let env = DistEnv::from_env()?;
    if let (Some(e), Device::Cuda(_)) = (&env, device) {
        let n = tch::Cuda::device_count().max(0) as usize;
        if e.local_rank >= n {
            return Err(Error::usage(format!(
                "LOCAL_RANK={} but libtorch sees {n} CUDA device(s): start at most {n} ranks per node",
                e.local_rank
            )));
        }
        device = Device::Cuda(e.local_rank);
    }
    let dist = match &env {
        Some(e) => Some(ProcessGroup::join(
            e,
            std::time::Duration::from_secs_f64(cfg.dist.timeout_s),
            device,
        )?),
        None => None,
    };
    let (rank, world) = dist.as_ref().map_or((0, 1), |d| (d.rank, d.world_size));
    let (mut train_data, meta) = open_split(
        &cfg.data.train,
        cfg.train.seed,
        &cfg.train.objective,
        rank,
        world,
    )?;
    if !cfg.data.mix.is_empty() {
        let mut sources = vec![train_data];
        let mut weights = vec![cfg.data.train_weight];
        for (i, m) in cfg.data.mix.iter().enumerate() {
            let key = format!("data.mix[{i}].split");
            let (src, mmeta) =
                open_split(&m.split, cfg.train.seed, &cfg.train.objective, rank, world)
                    .map_err(|e| Error::bad_config(&key, format!("{}: {e}", m.split.display())))?;
            if mmeta.tokenizer_hash != meta.tokenizer_hash || mmeta.seq_len != meta.seq_len {
                return Err(Error::bad_config(
                    &key,
                    format!(
                        "{} was tokenized differently from data.train (tokenizer hash or seq_len differ)",
                        m.split.display()
                    ),
                ));
            }
            sources.push(src);
            weights.push(m.weight);
        }
        train_data = Box::new(crate::mix::MixRows::new(sources, &weights)?);
    }
    let val_data = match &cfg.data.val {
        Some(dir) => {
            // Every rank evaluates on the whole validation split (the same rows, the same
            // result), so every rank takes the same early-stopping decision.
            let (v, vmeta) = open_split(dir, cfg.train.seed, &cfg.train.objective, 0, 1)?;
            if vmeta.tokenizer_hash != meta.tokenizer_hash || vmeta.seq_len != meta.seq_len {
                return Err(Error::bad_config(
                    "data.val",
                    format!("{} was tokenized differently from data.train (tokenizer hash or seq_len differ)", dir.display()),
                ));
            }
            if vmeta.labels != meta.labels {
                return Err(Error::bad_config(
                    "data.val",
                    format!(
                        "{} has the labels [{}], data.train [{}]: both splits need the same label names in the same order",
                        dir.join("meta.json").display(),
                        vmeta.labels.join(", "),
                        meta.labels.join(", ")
                    ),
                ));
            }
            Some(v)
        }
        None => None,
    };
    let init = match &cfg.init.from {
        Some(path) => Some(
            quern_models::store::load_weights(path)
                .map_err(|e| Error::bad_config("init.from", format!("{}: {e}", path.display())))?,
        ),
        None => None,
    };
    let mut model_cfg = match &init {
        Some(w) => resolve_init(&cfg.model, w, &meta, &cfg.data.train)?,
        None => resolve_model(&cfg.model, &meta)?,
    };
    model_cfg.head = match cfg.train.objective.as_str() {
        "cls" => Some(resolve_head(cfg, &model_cfg, &meta)?),
        "nsp" => Some(quern_models::head::nsp_head()),
        "rm" => Some(quern_models::head::reward_head(&model_cfg)),
        _ => None,
    };
    if cfg.train.objective == "nsp" && !(model_cfg.post_norm && model_cfg.type_vocab_size >= 2) {
        return Err(Error::bad_config(
            if cfg.init.from.is_some() {
                "init.from"
            } else {
                "model.type_vocab_size"
            },
            format!(
                "`nsp` pretrains a BERT-like encoder (post_norm = true, type_vocab_size >= 2, \
                 for the pairs' token types), but the model is {} with type_vocab_size {}{}",
                model_cfg.family(),
                model_cfg.type_vocab_size,
                if cfg.init.from.is_some() {
                    ""
                } else {
                    ": set model.post_norm = true, model.type_vocab_size = 2 (and mlp = \"gelu_erf\", bias = true for BERT)"
                }
            ),
        ));
    }
    let mut notes = Vec::new();
    let src_mlm_head = init.as_ref().is_some_and(|w| w.meta.config.has_mlm_head());
    model_cfg.mlm_head = if matches!(cfg.train.objective.as_str(), "mlm" | "nsp") {
        let on = cfg
            .model
            .mlm_head
            .unwrap_or(src_mlm_head || model_cfg.post_norm);
        if on && init.is_some() && !src_mlm_head {
            notes.push(
                "init.from has no MLM head (cls.predictions.*): BERT's MLM head (mlm_head.*) is initialised fresh"
                    .to_string(),
            );
        }
        on.then_some(true)
    } else {
        None
    };
    // The source's trained head is kept when it has the run's shape and labels; any other
    // is replaced by a fresh one.
    let keep_source_head = match (&init, &model_cfg.head) {
        (Some(w), Some(h)) => w.meta.config.head.as_ref().is_some_and(|src| {
            src.num_labels == h.num_labels && src.labels == h.labels && src.pooler == h.pooler
        }),
        _ => false,
    };
    if cfg.train.objective == "nsp" && init.is_some() && !keep_source_head {
        notes.push(
            "init.from has no NSP head (pooler and cls.seq_relationship): the NSP head (head.*) is initialised fresh"
                .to_string(),
        );
    }
    if rank == 0 {
        for n in &notes {
            eprintln!("note: {n}");
        }
    }
    let objective = make_objective(cfg, &meta)?;
    let objective_name = objective.name().to_string();
    if let Some(lora) = &cfg.lora {
        // Targets the model does not have are refused before anything is written.
        lora.resolve(&model_cfg)?;
    }
    claim_out_dir(&cfg.out_dir, opts, rank)?;
    fs::create_dir_all(&cfg.out_dir).at(&cfg.out_dir)?;
    let mut trainer = Trainer::new(cfg, &model_cfg, objective, train_data, val_data, device)?;
    trainer.dist = dist;
    if let Some(w) = &init {
        let mut params = quern_models::transformer::ParamStore::default();
        for p in &trainer.model.params().params {
            let fresh = (!keep_source_head && p.name.starts_with(quern_models::head::PREFIX))
                || (!src_mlm_head && p.name.starts_with(quern_models::mlm_head::PREFIX));
            if !fresh {
                params.params.push(quern_models::transformer::Param {
                    name: p.name.clone(),
                    tensor: p.tensor.shallow_clone(),
                    role: p.role,
                });
            }
        }
        checkpoint::restore_weights(&mut params, &w.tensors, &w.path)?;
        // A pruned source's zeros are the masks the run keeps.
        trainer.model.refresh_masks();
        if let Some(lora) = &cfg.lora {
            trainer.adapter = Some(AdapterRecord::for_base(
                lora,
                w,
                model_cfg.head.clone(),
                model_cfg.has_mlm_head(),
            )?);
        }
    }
    // Every rank starts from rank 0's weights (the same seed and files give the same ones;
    // the broadcast makes sure).
    if let Some(d) = &trainer.dist {
        d.broadcast_params(trainer.model.params())?;
        if cfg.lora.is_some() {
            d.broadcast_params(trainer.model.trainable())?;
        }
    }
    if cfg.train.objective == "dpo" {
        let reference = dpo_reference(cfg, &trainer, &meta)?;
        trainer.objective = Box::new(Dpo {
            beta: cfg.dpo.beta,
            loss: cfg.dpo.loss,
            reference: Some(reference),
        });
    }
    let mut resumed = None;
    if opts.resume {
        if let Some(dir) = checkpoint::latest(&cfg.out_dir)? {
            let ck = checkpoint::load(&dir)?;
            trainer.restore(&ck)?;
            trainer.model.refresh_masks();
            resumed = Some(trainer.step);
        }
    }
    let start_step = trainer.step;
    // Rank 0 alone writes the metrics and shows progress.
    let mut metrics = if rank == 0 {
        Some(Metrics::open(&cfg.out_dir, resumed)?)
    } else {
        None
    };
    let bar = if opts.progress && rank == 0 {
        ProgressBar::new(cfg.train.max_steps)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} train [{bar:30}] {pos}/{len} {msg} ({elapsed}<{eta})",
        )
        .map_err(|e| Error::bug(format!("progress template: {e}")))?
        .progress_chars("=> "),
    );
    bar.set_position(trainer.step);
    let t0 = Instant::now();
    let mut losses = Vec::new();
    let mut evals = Vec::new();
    let mut last_ckpt = None;
    let mut stopped_early = false;
    while trainer.step < cfg.train.max_steps {
        let log = trainer.train_step()?;
        bar.set_position(log.step);
        bar.set_message(format!(
            "loss {:.4} lr {:.2e} {:.0} tok/s{}{}",
            log.loss,
            log.lr,
            log.tokens_per_s,
            log.mfu
                .map(|m| format!(" mfu {:.1}%", 100.0 * m))
                .unwrap_or_default(),
            if log.skipped {
                " (skipped: non-finite)"
            } else {
                ""
            }
        ));
        if log.step % cfg.train.log_every == 0 || log.skipped || log.step == cfg.train.max_steps {
            if let Some(m) = metrics.as_mut() {
                m.write("train", &log)?;
            }
        }
        if log.skipped {
            bar.println(format!(
                "step {}: non-finite loss or gradient, update skipped",
                log.step
            ));
        }
        losses.push(log);
        let step = trainer.step;
        let mut stop = false;
        if cfg.train.eval_every > 0
            && step % cfg.train.eval_every == 0
            && step < cfg.train.max_steps
        {
            stop = evaluate_and_log(&mut trainer, &bar, &mut metrics, &mut evals)?;
        }
        if stop {
            bar.println(format!(
                "step {step}: stopping early, {} evaluations without a better validation loss \
                 (train.early_stop_patience)",
                trainer.evals_since_best
            ));
            stopped_early = true;
            break;
        }
        if cfg.checkpoint.every > 0
            && step % cfg.checkpoint.every == 0
            && step < cfg.train.max_steps
        {
            last_ckpt = Some(trainer.save_checkpoint()?);
        }
        // Test hook (debug builds only): die after this step, as a killed run would.
        #[cfg(debug_assertions)]
        if std::env::var("QUERN_TEST_FAULT")
            .ok()
            .and_then(|v| v.strip_prefix("train_abort_after:")?.parse::<u64>().ok())
            == Some(step)
        {
            std::process::abort();
        }
        if opts.stop_after == Some(step) {
            bar.abandon();
            return Ok(report_with_notes(
                notes,
                &trainer,
                &objective_name,
                start_step,
                losses,
                evals,
                t0,
                last_ckpt,
            ));
        }
    }
    if !stopped_early {
        evaluate_and_log(&mut trainer, &bar, &mut metrics, &mut evals)?;
    }
    if trainer.step > start_step || last_ckpt.is_none() {
        last_ckpt = Some(trainer.save_checkpoint()?);
    }
    bar.finish();
    let mut r = report_with_notes(
        notes,
        &trainer,
        &objective_name,
        start_step,
        losses,
        evals,
        t0,
        last_ckpt,
    );
    r.stopped_early = stopped_early;
    if rank == 0 {
        let path = cfg.out_dir.join("report.json");
        quern_core::shard::write_atomic(&path, &serde_json::to_vec_pretty(&r)?)?;
    }
    Ok(r)
}

/// The frozen reference of a `dpo` run: `dpo.reference` (checked to read the data's
/// tokenizer, as `init.from` is), or else a copy of the policy's starting weights (those of
/// `init.from`, or the seeded initialisation), without LoRA adapters. Built before a resume
/// restores the policy's trained weights.
fn dpo_reference(cfg: &TrainConfig, trainer: &Trainer, meta: &SplitMeta) -> Result<Transformer> {
    let _g = tch::no_grad_guard();
    if let Some(path) = &cfg.dpo.reference {
        let w = quern_models::store::load_weights(path)
            .map_err(|e| Error::bad_config("dpo.reference", format!("{}: {e}", path.display())))?;
        let rcfg = resolve_init(&ModelConfig::default(), &w, meta, &cfg.data.train).map_err(
            |e| match e {
                Error::BadConfig { message, .. } => {
                    Error::bad_config("dpo.reference", format!("{}: {message}", path.display()))
                }
                e => e,
            },
        )?;
        let policy = trainer.model.config();
        if rcfg.vocab_size != policy.vocab_size {
            return Err(Error::bad_config(
                "dpo.reference",
                format!(
                    "{} has a vocabulary of {} ids, the policy {}: the reference must share the policy's tokenizer and vocabulary",
                    path.display(),
                    rcfg.vocab_size.unwrap_or(0),
                    policy.vocab_size.unwrap_or(0)
                ),
            ));
        }
        // The reference reads the policy's inputs: rows of up to the split's seq_len ids,
        // less the last, which is only a target.
        let ctx = rcfg.seq_len.unwrap_or(0);
        if ctx + 1 < meta.seq_len {
            return Err(Error::bad_config(
                "dpo.reference",
                format!(
                    "{} has a context of {ctx} positions, but {} holds rows of up to {} ids (meta.json seq_len), which need {}",
                    path.display(),
                    cfg.data.train.display(),
                    meta.seq_len,
                    meta.seq_len - 1
                ),
            ));
        }
        let mut rcfg = rcfg;
        rcfg.dropout = 0.0;
        return Transformer::from_weights(&rcfg, trainer.device, &w.tensors, &w.path)
            .map_err(|e| Error::bad_config("dpo.reference", format!("{}: {e}", path.display())));
    }
    let mut reference = Transformer::try_new(trainer.model.config(), trainer.device)?;
    let policy = trainer.model.params();
    for p in &mut reference.params_mut().params {
        let src = policy
            .get(&p.name)
            .ok_or_else(|| Error::bug(format!("the policy has no weight {}", p.name)))?;
        p.tensor.copy_(src);
    }
    Ok(reference)
}

fn report_with_notes(
    notes: Vec<String>,
    t: &Trainer,
    objective: &str,
    start_step: u64,
    losses: Vec<StepLog>,
    evals: Vec<EvalLog>,
    t0: Instant,
    checkpoint: Option<PathBuf>,
) -> TrainReport {
    let mut speeds: Vec<f64> = losses.iter().map(|l| l.tokens_per_s).collect();
    speeds.sort_by(f64::total_cmp);
    let tokens_per_s = speeds.get(speeds.len() / 2).copied().unwrap_or(0.0);
    let peak = t.cfg.train.peak_tflops.or(if t.device.is_cuda() {
        Some(989.0)
    } else {
        None
    });
    TrainReport {
        device: format!("{:?}", t.device),
        objective: objective.to_string(),
        parameters: t.model.params().numel(),
        trainable_parameters: t.model.trainable().numel(),
        model: t.model.config().clone(),
        start_step,
        steps: t.step,
        tokens_seen: t.tokens_seen,
        losses,
        evals,
        skipped_steps: t.skipped_steps,
        elapsed_s: t0.elapsed().as_secs_f64(),
        tokens_per_s,
        mfu: peak.map(|p| {
            tokens_per_s * t.model.flops_per_token(t.width - 1) / (p * 1e12 * t.world_size() as f64)
        }),
        checkpoint,
        best: t.best,
        best_dir: {
            let d = checkpoint::best_dir(&t.cfg.out_dir);
            (t.best.is_some() && t.cfg.checkpoint.keep_best && d.exists()).then_some(d)
        },
        stopped_early: false,
        notes,
        mix: match t.train_data.mix_rows() {
            Some(rows) => {
                let d = &t.cfg.data;
                let splits: Vec<(&PathBuf, f64)> = std::iter::once((&d.train, d.train_weight))
                    .chain(d.mix.iter().map(|m| (&m.split, m.weight)))
                    .collect();
                let wsum: f64 = splits.iter().map(|s| s.1).sum();
                let total: u64 = rows.iter().sum();
                splits
                    .iter()
                    .zip(&rows)
                    .map(|((split, w), &r)| MixShare {
                        split: (*split).clone(),
                        weight: w / wsum,
                        rows: r,
                        share: r as f64 / total.max(1) as f64,
                    })
                    .collect()
            }
            None => Vec::new(),
        },
    }
}

/// `precision` names for messages.
pub fn precision_name(p: Precision) -> &'static str {
    match p {
        Precision::Fp32 => "fp32",
        Precision::Bf16 => "bf16",
        Precision::Fp16 => "fp16",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// nsp's two terms under accumulation: two micro-batches with different numbers of
    /// masked positions give the loss and gradients of the one batch they make, because
    /// each term is divided by its count over the whole step (masked positions, rows).
    #[test]
    fn nsp_accumulation_equals_one_big_batch() {
        use crate::objective::{NspParts, Prepared, IGNORE};
        use tch::Kind;
        let _rng = crate::torch_rng_lock();
        let (rows, width) = (4i64, 8i64);
        let mut cfg = TrainConfig::new("t", "o");
        cfg.train.objective = "nsp".into();
        cfg.train.micro_batch = 2;
        cfg.train.grad_accum = 2;
        let model = ModelConfig {
            layers: 1,
            heads: 2,
            dim: 16,
            seq_len: Some(width as usize),
            vocab_size: Some(40),
            head: Some(quern_models::head::nsp_head()),
            mlm_head: Some(true),
            ..ModelConfig::bert()
        };
        let data = crate::data::TokenRows::from_ids(vec![0; 9 * 4], 9, false, 0).unwrap();
        let objective = make_objective(
            &cfg,
            &SplitMeta {
                objective: "nsp".into(),
                vocab_size: 40,
                seq_len: width as usize,
                rows: 4,
                pad_id: Some(0),
                bos_id: Some(1),
                eos_id: Some(2),
                mask_id: Some(3),
                tokenizer_hash: "t".into(),
                labels: Vec::new(),
                packed: false,
            },
        )
        .unwrap();
        let mut t =
            Trainer::new(&cfg, &model, objective, Box::new(data), None, Device::Cpu).unwrap();
        let ids: Vec<i64> = (0..rows * width).map(|i| 4 + (i * 7) % 36).collect();
        let i = IGNORE;
        // 3 masked positions in the first two rows, 1 in the last two.
        let targets: Vec<i64> = vec![
            i, 5, i, i, 9, i, i, i, //
            i, i, 7, i, i, i, i, i, //
            i, i, i, i, i, 11, i, i, //
            i, i, i, i, i, i, i, i,
        ];
        let types: Vec<i64> = (0..rows * width)
            .map(|k| i64::from(k % width >= 4))
            .collect();
        let batch = |from: i64, n: i64| {
            let part = |v: &[i64]| {
                Tensor::from_slice(&v[(from * width) as usize..((from + n) * width) as usize])
                    .view([n, width])
            };
            let targets = part(&targets);
            Prepared {
                input: part(&ids),
                count: targets.ne(IGNORE).sum(Kind::Int64).int64_value(&[]),
                targets,
                mask: Some(Tensor::ones([n, width], (Kind::Int64, Device::Cpu))),
                segments: None,
                nsp: Some(NspParts {
                    token_types: part(&types),
                    labels: Tensor::from_slice(
                        &[0i64, 1, 1, 0][from as usize..(from + n) as usize],
                    ),
                }),
            }
        };
        let grads = |t: &mut Trainer, parts: &[Prepared]| {
            t.model.trainable_mut().zero_grad();
            let total = parts.iter().map(|p| p.count).sum();
            let (loss, _) = t.accumulate_terms(parts, total, 1.0).unwrap();
            let g: Vec<Tensor> = t
                .model
                .params()
                .params
                .iter()
                .map(|p| p.tensor.grad().copy())
                .collect();
            (loss, g)
        };
        let (big_loss, big) = grads(&mut t, &[batch(0, 4)]);
        let halves = [batch(0, 2), batch(2, 2)];
        assert_ne!(halves[0].count, halves[1].count);
        let (acc_loss, acc) = grads(&mut t, &halves);
        assert!(
            (big_loss - acc_loss).abs() < 1e-5,
            "{big_loss} vs {acc_loss}"
        );
        for ((a, b), p) in big.iter().zip(&acc).zip(&t.model.params().params) {
            let scale = a.abs().max().double_value(&[]).max(1e-6);
            let d = (a - b).abs().max().double_value(&[]) / scale;
            assert!(d < 1e-4, "{}: relative gradient difference {d}", p.name);
        }
    }

    #[test]
    fn an_out_dir_holding_a_run_is_refused_unless_resumed_or_forced() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("run");
        let opts = |resume, force| TrainOptions {
            resume,
            force,
            ..TrainOptions::default()
        };
        // A new, an empty, or a foreign directory is taken as it is.
        claim_out_dir(&run, &opts(false, false), 0).unwrap();
        fs::create_dir_all(&run).unwrap();
        fs::write(run.join("run.toml"), "mine").unwrap();
        claim_out_dir(&run, &opts(false, false), 0).unwrap();
        // Another run's records are refused, and left as they were.
        fs::write(run.join("metrics.jsonl"), "{\"step\":1}\n").unwrap();
        fs::create_dir_all(run.join("checkpoints/step-00000001")).unwrap();
        let e = claim_out_dir(&run, &opts(false, false), 0)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(&run.display().to_string())
                && e.contains("metrics.jsonl")
                && e.contains("--resume")
                && e.contains("--force"),
            "{e}"
        );
        assert!(run.join("metrics.jsonl").exists() && run.join("checkpoints").exists());
        // Resuming keeps them; forcing removes the run's files and nothing else.
        claim_out_dir(&run, &opts(true, false), 0).unwrap();
        assert!(run.join("metrics.jsonl").exists());
        claim_out_dir(&run, &opts(false, true), 0).unwrap();
        assert!(!run.join("metrics.jsonl").exists() && !run.join("checkpoints").exists());
        assert_eq!(fs::read_to_string(run.join("run.toml")).unwrap(), "mine");
    }
}
