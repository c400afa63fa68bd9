//! `quern rl`: on-policy reinforcement learning from rewards (GRPO, Dr. GRPO, RLOO, PPO).
//!
//! Each step takes `prompts.per_step` prompts (in a seeded order, epoch after epoch),
//! samples `generation.group_size` completions of each from the policy with the KV-cache
//! generator ([`quern_models::generate`]), scores them with the `[[reward]]` terms
//! ([`reward`]), turns the rewards into advantages per group ([`algo::advantages`]) and
//! takes `algorithm.epochs` optimizer steps of the clipped objective with the optional k3
//! KL to a frozen reference ([`algo::policy_loss`]), gradients accumulated over micro-batches
//! of `train.micro_batch` sequences. PPO instead learns a value head on the policy's last
//! hidden states and takes per-token advantages from GAE ([`algo::gae`],
//! [`algo::ppo_loss`]). Training sequences are prompt + completion + the stop
//! id when the sample stopped on one (so the policy learns to stop); a prompt shared by
//! several sequences of a micro-batch (a group's samples) runs through the model once, its
//! keys and values copied to each of them ([`Batch`]); the log-probabilities are taken at
//! the sampling temperature, without dropout.
//!
//! A step whose reward cannot be computed (a reward command crashed or printed garbage) is
//! logged with its rows' ids and skipped; after `train.max_failed_steps` such steps the next
//! one stops the run with the error.
//!
//! Determinism and resume: the prompt order comes from `(seed, epoch)`, the sampling from
//! `(seed, step)`, and libtorch's generator is seeded from `(seed, step)` each step; a
//! checkpoint (`checkpoints/step-N/`: the policy as a quern model directory, so `quern
//! generate` and `quern eval` read it, plus `optimizer.safetensors` and `state.json` with
//! the step, the prompt cursor and the counters) therefore lets `--resume` repeat an
//! uninterrupted run exactly on CPU.
//!
//! With `[lora]` the policy is `init.from` plus LoRA adapters (B = 0 at the start), the only
//! weights that train beside PPO's value head; a checkpoint then holds the adapters alone
//! and a `lora` record in `state.json` (no `model.json`), which every model reader merges
//! into the recorded base, as for `quern train`'s LoRA checkpoints.

pub mod algo;
pub mod config;
pub mod reward;

use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use quern_core::error::{IoContext, Place};
use quern_core::{Error, Result};
use quern_eval::generation::{prompt_text, GenTask, Problem};
use quern_models::chat::{Message, DEFAULT_TEMPLATE};
use quern_models::config::ModelConfig;
use quern_models::generate::{
    distinct_rows, left_padded, Finish, GenerateConfig, Generator, Sampling,
};
use quern_models::lora::AdapterRecord;
use quern_models::store::{self, ModelMeta};
use quern_models::transformer::{Extras, Param, ParamStore, Role, Transformer};
use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};
use tokenizers::Tokenizer;

use crate::checkpoint;
use crate::data::SplitMix64;
use crate::optim::{self, AdamW};
use config::{Algorithm, PromptFormat, RlConfig};
use reward::{Sample, Scorer};

/// How [`run_with`] runs, beyond the configuration.
#[derive(Debug, Clone, Default)]
pub struct RlOptions {
    /// A progress bar on stderr.
    pub progress: bool,
    /// Continue from the newest checkpoint in `out_dir`.
    pub resume: bool,
    /// Replace the run already in `out_dir`.
    pub force: bool,
    /// Stop after this step without a final checkpoint, as if killed (tests of resume).
    pub stop_after: Option<u64>,
}

/// Where the prompts continue: the epoch and the position in its order.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PromptCursor {
    pub epoch: u64,
    pub index: u64,
}

/// One step's line in `metrics.jsonl` (`"kind": "rl"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RlStepLog {
    pub step: u64,
    /// The reward could not be computed: no update this step.
    pub failed: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The failed step's samples (`<prompt id>#<sample>`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed_rows: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reward_mean: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reward_std: Option<f64>,
    /// Each term's mean (unweighted).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub rewards: BTreeMap<String, f64>,
    /// Groups whose rewards were all equal (zero advantages), as a fraction of the groups.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub zero_std_frac: Option<f64>,
    /// Mean k3 KL to the reference per completion token (`algorithm.beta > 0`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kl: Option<f64>,
    /// Mean entropy of the sampling distribution per completion token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entropy: Option<f64>,
    /// Fraction of completion tokens whose ratio was clipped, over all epochs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clip_frac: Option<f64>,
    /// PPO: the first epoch's value loss `½ (v − R)²` (clipped form) per completion token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_loss: Option<f64>,
    /// PPO: fraction of completion tokens whose clipped value term was taken, over all
    /// epochs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_clip_frac: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grad_norm: Option<f64>,
    pub lr: f64,
    /// Mean completion length in tokens (with the stop id).
    pub response_length: f64,
    /// Fraction of completions cut off by `max_new_tokens` or the context (TRL's
    /// `completions/clipped_ratio`).
    #[serde(default)]
    pub truncated_frac: f64,
    /// Generated tokens this step, and per second of generation.
    pub gen_tokens: u64,
    pub gen_tokens_per_s: f64,
    /// Tokens (prompt + completion, no padding) run through the policy's training passes
    /// per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub train_tokens_per_s: Option<f64>,
    pub gen_s: f64,
    pub train_s: f64,
    /// The whole step: generation, rewards, training.
    pub step_s: f64,
}

/// What `state.json` of an RL checkpoint holds (besides the tensors).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RlState {
    pub step: u64,
    pub optimizer_steps: u64,
    pub cursor: PromptCursor,
    pub seed: u64,
    pub failed_steps: u64,
    /// The policy's shape (also in model.json; `quern_models::store` reads either).
    pub model: ModelConfig,
    /// With `[lora]`: the adapters' record (the base model and its hash), so that every
    /// model reader merges this checkpoint's adapters into that base.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lora: Option<AdapterRecord>,
    pub config: RlConfig,
    pub quern_version: String,
}

/// What a run did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RlReport {
    pub algorithm: String,
    pub device: String,
    pub parameters: i64,
    pub start_step: u64,
    pub steps: u64,
    pub failed_steps: u64,
    pub seconds: f64,
    pub checkpoint: Option<PathBuf>,
    pub log: Vec<RlStepLog>,
}

impl RlReport {
    /// Mean reward of the first and of the last `n` steps that have one.
    pub fn reward_drift(&self, n: usize) -> Option<(f64, f64)> {
        let r: Vec<f64> = self.log.iter().filter_map(|l| l.reward_mean).collect();
        if r.len() < n || n == 0 {
            return None;
        }
        let mean = |s: &[f64]| s.iter().sum::<f64>() / s.len() as f64;
        Some((mean(&r[..n]), mean(&r[r.len() - n..])))
    }
}

/// The order of `n` prompts in `epoch`: a seeded Fisher–Yates shuffle, or file order.
fn order(n: usize, seed: u64, epoch: u64, shuffle: bool) -> Vec<usize> {
    let mut v: Vec<usize> = (0..n).collect();
    if shuffle {
        let mut r = SplitMix64(seed ^ epoch.wrapping_mul(0xA24B_AED4_963E_E407) ^ 0x5EED);
        for i in (1..n).rev() {
            let j = (r.next_u64() % (i as u64 + 1)) as usize;
            v.swap(i, j);
        }
    }
    v
}

fn step_seed(seed: u64, step: u64) -> u64 {
    let mut r = SplitMix64(seed ^ step.wrapping_mul(0xD1B5_4A32_D192_ED03) ^ 0x0051);
    r.next_u64() >> 1
}

/// One sample of a step: its training ids and where its completion lies.
struct Seq {
    ids: Vec<i64>,
    prompt_len: usize,
    completion_len: usize,
    text: String,
    /// Cut off by `max_new_tokens` or the context, not stopped.
    truncated: bool,
}

/// What the KL term (`algorithm.beta > 0`) compares the policy with.
enum Reference {
    /// No KL term.
    None,
    /// A frozen model: `init.reference`, or `init.from` again.
    Model(Box<Transformer>),
    /// The policy with its LoRA adapters set aside: the base, without a second copy.
    Base,
}

/// A run's state.
struct Run {
    cfg: RlConfig,
    device: Device,
    model: Transformer,
    /// PPO's value head (`value_head.weight` `[1, dim]`, `value_head.bias` `[1]`).
    value: Option<ParamStore>,
    reference: Reference,
    optimizer: AdamW,
    /// With `[lora]`: what the checkpoints record about the adapters.
    adapter: Option<AdapterRecord>,
    tokenizer: Tokenizer,
    meta: ModelMeta,
    tokenizer_json: String,
    problems: Vec<Problem>,
    prompt_ids: Vec<Vec<u32>>,
    scorers: Vec<Scorer>,
    term_names: Vec<String>,
    step: u64,
    cursor: PromptCursor,
    failed_steps: u64,
}

/// Runs `quern rl` as `cfg` says.
pub fn run_with(cfg: &RlConfig, opts: &RlOptions) -> Result<RlReport> {
    cfg.validate()?;
    let device = crate::trainer::resolve_device(cfg.train.device)?;
    let task = GenTask::load(&cfg.prompts.file)?;
    let w = store::load_weights(&cfg.init.from)
        .map_err(|e| Error::bad_config("init.from", format!("{}: {e}", cfg.init.from.display())))?;
    let meta = w.meta.clone();
    if meta.config.post_norm {
        return Err(Error::bad_config(
            "init.from",
            format!(
                "{} is a BERT-like encoder: it cannot generate; start from a decoder",
                cfg.init.from.display()
            ),
        ));
    }
    let tokenizer_json = w.tokenizer_json.clone().ok_or_else(|| {
        Error::bad_config(
            "init.from",
            format!(
                "{} has no tokenizer.json: rewards read the completions' text",
                cfg.init.from.display()
            ),
        )
    })?;
    let tokenizer = Tokenizer::from_bytes(tokenizer_json.as_bytes())
        .map_err(|e| Error::bad_config("init.from", format!("its tokenizer.json: {e}")))?;
    // The policy: built, then its weights copied in (as `quern train` does from init.from),
    // so every parameter is a trainable leaf.
    let mut mcfg = meta.config.clone();
    mcfg.head = None;
    mcfg.mlm_head = None;
    tch::manual_seed(cfg.train.seed as i64);
    let mut model = Transformer::try_new(&mcfg, device)?;
    let wfile = match w.kind {
        store::SourceKind::Gguf => w.path.clone(),
        _ => w.path.join(store::WEIGHTS),
    };
    checkpoint::restore_weights(model.params_mut(), &w.tensors, &wfile)?;
    // A pruned policy's zeros (`model.pruned`, from `quern compress`) stay zero.
    model.refresh_masks();
    // LoRA: adapters (B = 0, so the policy starts as init.from) are all that train.
    let adapter = match &cfg.lora {
        Some(lora) => {
            model.add_lora(lora)?;
            Some(AdapterRecord::for_base(lora, &w, None, false)?)
        }
        None => None,
    };
    drop(w);
    let ctx = model.seq_len() as usize;
    let prompt_ids = encode_prompts(cfg, &task, &model, &tokenizer, &meta)?;
    let longest =
        prompt_ids.iter().map(Vec::len).max().unwrap_or(0) + cfg.generation.max_new_tokens + 1;
    let longest = longest.min(ctx);
    let vocab = tokenizer.get_vocab(true);
    // With LoRA the reference defaults to the base: the policy with its adapters set aside.
    let reference = if cfg.algorithm.beta <= 0.0 {
        Reference::None
    } else if adapter.is_some() && cfg.init.reference.is_none() {
        Reference::Base
    } else {
        Reference::Model(Box::new(load_reference(cfg, &model, &vocab, device)?))
    };
    let cmd_dir = command_dir(cfg);
    let scorers = cfg
        .reward
        .iter()
        .enumerate()
        .map(|(i, t)| {
            Scorer::load(
                i,
                t,
                cfg.generation.max_new_tokens,
                cmd_dir.clone(),
                &vocab,
                longest,
                device,
            )
        })
        .collect::<Result<Vec<_>>>()?;
    claim_out_dir(&cfg.out_dir, opts)?;
    fs::create_dir_all(&cfg.out_dir).at(&cfg.out_dir)?;
    if device.is_cuda() {
        crate::amp::set_tf32(true)?;
    } else {
        quern_models::device::keep_freed_memory();
    }
    let value = (cfg.algorithm.kind == Algorithm::Ppo).then(|| value_head(&model, device));
    let optimizer = AdamW::new(&cfg.optim, &trained(&model, value.as_ref()), device);
    let mut run = Run {
        cfg: cfg.clone(),
        device,
        model,
        value,
        reference,
        optimizer,
        adapter,
        tokenizer,
        meta,
        tokenizer_json,
        problems: task.problems,
        prompt_ids,
        scorers,
        term_names: cfg.term_names(),
        step: 0,
        cursor: PromptCursor::default(),
        failed_steps: 0,
    };
    let mut resumed = None;
    if opts.resume {
        if let Some(dir) = checkpoint::latest(&cfg.out_dir)? {
            run.restore(&dir)?;
            resumed = Some(run.step);
        }
    }
    let start_step = run.step;
    let mut metrics = crate::trainer::Metrics::open(&cfg.out_dir, resumed)?;
    let bar = if opts.progress {
        ProgressBar::new(cfg.train.steps)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template("{spinner} rl [{bar:30}] {pos}/{len} {msg} ({elapsed}<{eta})")
            .map_err(|e| Error::bug(format!("progress template: {e}")))?
            .progress_chars("=> "),
    );
    bar.set_position(run.step);
    let t0 = Instant::now();
    let mut log = Vec::new();
    let mut last_ckpt = None;
    while run.step < cfg.train.steps {
        let l = run.step_once()?;
        metrics.write("rl", &l)?;
        bar.set_position(l.step);
        match (l.failed, l.reward_mean) {
            (true, _) => bar.println(format!(
                "step {}: reward failed for {} samples: {}",
                l.step,
                l.failed_rows.len(),
                l.error.as_deref().unwrap_or("")
            )),
            (false, Some(r)) => bar.set_message(format!(
                "reward {r:.3} len {:.0} {:.0} gen tok/s",
                l.response_length, l.gen_tokens_per_s
            )),
            _ => {}
        }
        let failed = l.failed;
        let err = l.error.clone();
        log.push(l);
        if failed && run.failed_steps > cfg.train.max_failed_steps {
            bar.abandon();
            return Err(Error::usage(format!(
                "stopping at step {}: the reward failed in {} steps, more than train.max_failed_steps = {} \
                 (see {}): {}",
                run.step,
                run.failed_steps,
                cfg.train.max_failed_steps,
                cfg.out_dir.join("metrics.jsonl").display(),
                err.unwrap_or_default()
            )));
        }
        let step = run.step;
        if cfg.checkpoint.every > 0
            && step.is_multiple_of(cfg.checkpoint.every)
            && step < cfg.train.steps
        {
            last_ckpt = Some(run.save_checkpoint()?);
        }
        if opts.stop_after == Some(step) {
            bar.abandon();
            return Ok(run.report(start_step, log, t0, last_ckpt));
        }
    }
    if run.step > start_step || last_ckpt.is_none() {
        last_ckpt = Some(run.save_checkpoint()?);
    }
    bar.finish_and_clear();
    let r = run.report(start_step, log, t0, last_ckpt);
    let path = cfg.out_dir.join("report.json");
    quern_core::shard::write_atomic(&path, &serde_json::to_vec_pretty(&r)?)?;
    Ok(r)
}

/// File of PPO's value head in a checkpoint.
const VALUE_HEAD: &str = "value_head.safetensors";

/// PPO's fresh value head: zero weights, so every value starts at 0 (the score's scale is
/// unknown; a zero baseline is the neutral one).
fn value_head(model: &Transformer, device: Device) -> ParamStore {
    let dim = model.config().dim as i64;
    let p = |name: &str, shape: &[i64], role| Param {
        name: name.into(),
        tensor: Tensor::zeros(shape, (Kind::Float, device)).set_requires_grad(true),
        role,
    };
    ParamStore {
        params: vec![
            p("value_head.weight", &[1, dim], Role::Matrix),
            p("value_head.bias", &[1], Role::NormOrBias),
        ],
    }
}

/// What the optimizer updates: the policy's trainable parameters, then PPO's value head
/// (handles sharing the tensors, so updates and gradients reach both).
fn trained(model: &Transformer, value: Option<&ParamStore>) -> ParamStore {
    shallow(
        model
            .trainable()
            .params
            .iter()
            .chain(value.map_or(&[][..], |v| &v.params[..])),
    )
}

/// A store of handles to `params`' tensors (shared storage and gradients).
fn shallow<'a>(params: impl Iterator<Item = &'a Param>) -> ParamStore {
    let params = params
        .map(|p| Param {
            name: p.name.clone(),
            tensor: p.tensor.shallow_clone(),
            role: p.role,
        })
        .collect();
    ParamStore { params }
}

/// Values `[b, len]` (f32) of the value head on hidden states `[b, len, dim]`.
fn values(head: &ParamStore, h: &Tensor) -> Tensor {
    let w = &head.params[0].tensor;
    let b = &head.params[1].tensor;
    h.to_kind(Kind::Float).linear(w, Some(b)).squeeze_dim(-1)
}

/// Where reward commands run: the TOML's directory ([`RlConfig::resolve`]), or the current
/// directory for a configuration built in code.
fn command_dir(cfg: &RlConfig) -> PathBuf {
    cfg.config_dir
        .clone()
        .unwrap_or_else(|| std::env::current_dir().unwrap_or_default())
}

/// Every prompt's ids, checked to leave room for at least one new token in the context.
fn encode_prompts(
    cfg: &RlConfig,
    task: &GenTask,
    model: &Transformer,
    tokenizer: &Tokenizer,
    meta: &ModelMeta,
) -> Result<Vec<Vec<u32>>> {
    let g = Generator::new(model, Some(tokenizer), &meta.special);
    let ctx = model.seq_len() as usize;
    let template = meta.chat_template.as_deref().unwrap_or(DEFAULT_TEMPLATE);
    task.problems
        .iter()
        .map(|p| {
            let ids = match cfg.prompts.format {
                PromptFormat::Plain => g.encode(&prompt_text(&[], p), false)?,
                PromptFormat::Chat => g.encode_chat(
                    template,
                    &[Message {
                        role: "user".into(),
                        content: p.question.clone(),
                    }],
                )?,
            };
            if ids.len() + 1 > ctx {
                return Err(Error::bad_input(
                    Place::file(&task.path).with_line(p.line),
                    format!(
                        "the prompt is {} tokens, which leaves no room for an answer in the model's context of {ctx}",
                        ids.len()
                    ),
                ));
            }
            Ok(ids)
        })
        .collect()
}

/// The frozen reference: `init.reference` or `init.from` again, checked to share the
/// policy's tokenizer.
fn load_reference(
    cfg: &RlConfig,
    policy: &Transformer,
    vocab: &HashMap<String, u32>,
    device: Device,
) -> Result<Transformer> {
    let (key, path) = match &cfg.init.reference {
        Some(p) => ("init.reference", p),
        None => ("init.from", &cfg.init.from),
    };
    let bad = |m: String| Error::bad_config(key, format!("{}: {m}", path.display()));
    let w = store::load_weights(path).map_err(|e| bad(e.to_string()))?;
    let tok_ok = match &w.tokenizer_json {
        Some(j) => Tokenizer::from_bytes(j.as_bytes())
            .map(|t| &t.get_vocab(true) == vocab)
            .unwrap_or(false),
        None => false,
    };
    if !tok_ok || w.meta.config.vocab_size != policy.config().vocab_size {
        return Err(bad(format!(
            "the reference must share the policy's tokenizer and vocabulary ({} ids); it has {} ids{}",
            policy.vocab_size(),
            w.meta.config.vocab_size.unwrap_or(0),
            if w.tokenizer_json.is_none() { " and no tokenizer.json" } else { " and another tokenizer" }
        )));
    }
    let mut rcfg = w.meta.config.clone();
    rcfg.head = None;
    rcfg.mlm_head = None;
    rcfg.dropout = 0.0;
    let file = match w.kind {
        store::SourceKind::Gguf => w.path.clone(),
        _ => w.path.join(store::WEIGHTS),
    };
    let tensors: HashMap<String, Tensor> = w
        .tensors
        .into_iter()
        .filter(|(n, _)| {
            !n.starts_with(quern_models::head::PREFIX)
                && !n.starts_with(quern_models::mlm_head::PREFIX)
        })
        .collect();
    let _g = tch::no_grad_guard();
    Transformer::from_weights(&rcfg, device, &tensors, &file).map_err(|e| bad(e.to_string()))
}

impl Run {
    /// The next `k` prompts, moving the cursor (and into the next epoch's order).
    fn next_prompts(&mut self, k: usize) -> Vec<usize> {
        let n = self.problems.len();
        let mut out = Vec::with_capacity(k);
        let mut ord = order(
            n,
            self.cfg.train.seed,
            self.cursor.epoch,
            self.cfg.prompts.shuffle,
        );
        while out.len() < k {
            if self.cursor.index as usize >= n {
                self.cursor.epoch += 1;
                self.cursor.index = 0;
                ord = order(
                    n,
                    self.cfg.train.seed,
                    self.cursor.epoch,
                    self.cfg.prompts.shuffle,
                );
            }
            out.push(ord[self.cursor.index as usize]);
            self.cursor.index += 1;
        }
        out
    }

    fn row_id(&self, p: usize, k: usize) -> String {
        let pr = &self.problems[p];
        match &pr.id {
            Some(id) => format!("{id}#{k}"),
            None => format!("line {}#{k}", pr.line),
        }
    }

    /// Samples the step's completions.
    fn rollout(&self, picks: &[usize]) -> Result<(Vec<Seq>, f64)> {
        let g = &self.cfg.generation;
        let batch: Vec<Vec<u32>> = picks
            .iter()
            .flat_map(|&p| std::iter::repeat_n(self.prompt_ids[p].clone(), g.group_size))
            .collect();
        let seed = step_seed(self.cfg.train.seed, self.step);
        let chunk = if g.batch_size == 0 {
            batch.len()
        } else {
            g.batch_size
        };
        let generator = Generator::new(&self.model, Some(&self.tokenizer), &self.meta.special);
        let t0 = Instant::now();
        let mut outs = Vec::with_capacity(batch.len());
        for (ci, part) in batch.chunks(chunk).enumerate() {
            let gcfg = GenerateConfig {
                max_new_tokens: g.max_new_tokens,
                sampling: Sampling {
                    temperature: g.temperature,
                    top_k: g.top_k,
                    top_p: g.top_p,
                    repetition_penalty: 1.0,
                },
                stop_ids: Vec::new(),
                stop_strings: g.stop.clone(),
                ignore_eos: false,
                seed: seed ^ (ci as u64).wrapping_mul(0x94D0_49BB_1331_11EB),
            };
            outs.extend(generator.generate(part, &gcfg)?.0);
        }
        let gen_s = t0.elapsed().as_secs_f64();
        let seqs = batch
            .iter()
            .zip(outs)
            .map(|(p, o)| {
                let mut ids: Vec<i64> = p.iter().map(|&t| t as i64).collect();
                ids.extend(o.tokens.iter().map(|&t| t as i64));
                let mut completion_len = o.tokens.len();
                if let (Finish::Stop, Some(s)) = (o.finish, o.stop_id) {
                    ids.push(s as i64);
                    completion_len += 1;
                }
                Seq {
                    prompt_len: p.len(),
                    completion_len,
                    ids,
                    text: o.text,
                    truncated: matches!(o.finish, Finish::Length | Finish::Context),
                }
            })
            .collect();
        Ok((seqs, gen_s))
    }

    /// One RL step (see the module docs).
    fn step_once(&mut self) -> Result<RlStepLog> {
        let t_step = Instant::now();
        let c = self.cfg.clone();
        let g = c.generation.group_size;
        tch::manual_seed((step_seed(c.train.seed, self.step) ^ 0x7) as i64);
        let lr = optim::lr_at(&c.optim, self.step, c.train.steps);
        let picks = self.next_prompts(c.prompts.per_step);
        let (seqs, gen_s) = self.rollout(&picks)?;
        let n = seqs.len();
        let gen_tokens: u64 = seqs
            .iter()
            .map(|s| (s.ids.len() - s.prompt_len) as u64)
            .sum();
        let response_length = seqs.iter().map(|s| s.completion_len as f64).sum::<f64>() / n as f64;
        let truncated_frac = seqs.iter().filter(|s| s.truncated).count() as f64 / n as f64;
        let ids: Vec<String> = picks
            .iter()
            .flat_map(|&p| (0..g).map(move |k| (p, k)))
            .map(|(p, k)| self.row_id(p, k))
            .collect();
        let samples: Vec<Sample> = seqs
            .iter()
            .enumerate()
            .map(|(i, s)| Sample {
                id: ids[i].clone(),
                problem: &self.problems[picks[i / g]],
                completion: &s.text,
                ids: &s.ids,
                completion_tokens: s.completion_len,
                truncated: s.truncated,
            })
            .collect();
        let mut total = vec![0.0; n];
        let mut term_means = BTreeMap::new();
        let mut failure = None;
        for ((scorer, term), name) in self.scorers.iter().zip(&c.reward).zip(&self.term_names) {
            match scorer.score(&samples) {
                Ok(v) => {
                    for (t, x) in total.iter_mut().zip(&v) {
                        *t += term.weight * x;
                    }
                    term_means.insert(name.clone(), v.iter().sum::<f64>() / n as f64);
                }
                Err(e) => {
                    failure = Some(format!("reward `{name}`: {e}"));
                    break;
                }
            }
        }
        drop(samples);
        let mut log = RlStepLog {
            step: self.step + 1,
            failed: false,
            error: None,
            failed_rows: Vec::new(),
            reward_mean: None,
            reward_std: None,
            rewards: BTreeMap::new(),
            zero_std_frac: None,
            kl: None,
            entropy: None,
            clip_frac: None,
            value_loss: None,
            value_clip_frac: None,
            loss: None,
            grad_norm: None,
            lr,
            response_length,
            truncated_frac,
            gen_tokens,
            gen_tokens_per_s: gen_tokens as f64 / gen_s.max(1e-9),
            train_tokens_per_s: None,
            gen_s,
            train_s: 0.0,
            step_s: 0.0,
        };
        if let Some(e) = failure {
            self.failed_steps += 1;
            self.step += 1;
            log.failed = true;
            log.error = Some(e);
            log.failed_rows = ids;
            log.step_s = t_step.elapsed().as_secs_f64();
            return Ok(log);
        }
        let mean = total.iter().sum::<f64>() / n as f64;
        let std = (total.iter().map(|r| (r - mean).powi(2)).sum::<f64>() / n as f64).sqrt();
        log.reward_mean = Some(mean);
        log.reward_std = Some(std);
        log.rewards = term_means;
        let t1 = Instant::now();
        if c.algorithm.kind == Algorithm::Ppo {
            let batches = self.micro_batches(&seqs, &vec![0.0; n])?;
            self.train_ppo(&batches, &total, lr, &mut log)?;
        } else {
            let (adv, zero) = algo::advantages(&total, g, c.algorithm.kind, c.algorithm.std_eps);
            log.zero_std_frac = Some(zero as f64 / picks.len() as f64);
            let batches = self.micro_batches(&seqs, &adv)?;
            self.train_groups(&batches, n, lr, &mut log)?;
        }
        let train_s = t1.elapsed().as_secs_f64();
        let seq_tokens: usize = seqs.iter().map(|s| s.ids.len()).sum();
        log.train_s = train_s;
        log.train_tokens_per_s = Some((seq_tokens * c.algorithm.epochs) as f64 / train_s.max(1e-9));
        log.step_s = t_step.elapsed().as_secs_f64();
        self.step += 1;
        Ok(log)
    }

    /// GRPO, Dr. GRPO and RLOO: `algorithm.epochs` updates of the clipped objective with
    /// the sequences' advantages; fills the log's loss, KL, entropy and clip fraction.
    fn train_groups(
        &mut self,
        batches: &[Batch],
        n: usize,
        lr: f64,
        log: &mut RlStepLog,
    ) -> Result<()> {
        let c = self.cfg.clone();
        let epochs = c.algorithm.epochs;
        let temp = c.generation.temperature;
        // The log-probabilities under the weights that sampled, for the ratio of later
        // epochs (with one epoch the ratio is exactly 1: the current ones, detached).
        let old = if epochs > 1 {
            Some(frozen_logps(&self.model, batches, temp)?)
        } else {
            None
        };
        let reference = self.reference_logps(batches)?;
        let eps_low = c.algorithm.epsilon;
        let eps_high = c.algorithm.epsilon_high.unwrap_or(eps_low);
        let norm = match c.algorithm.kind {
            Algorithm::DrGrpo => Some(c.generation.max_new_tokens as f64),
            _ => None,
        };
        let (mut clipped, mut counted) = (0.0, 0.0);
        let (mut kl, mut entropy, mut loss, mut tokens) = (0.0, 0.0, 0.0, 0.0);
        let mut grad_norm = 0.0;
        for e in 0..epochs {
            self.model.trainable_mut().zero_grad();
            for (i, b) in batches.iter().enumerate() {
                let logits = b.logits(&self.model)?;
                let logp = b.token_logps(&logits, temp);
                let old_i = match &old {
                    Some(o) => o[i].shallow_clone(),
                    None => logp.detach(),
                };
                let parts = algo::policy_loss(
                    &logp,
                    &old_i,
                    reference.as_ref().map(|r| &r[i]),
                    &b.adv,
                    &b.mask,
                    eps_low,
                    eps_high,
                    c.algorithm.beta,
                    norm,
                );
                clipped += parts.clipped;
                counted += parts.tokens;
                if e == 0 {
                    kl += parts.kl_sum;
                    tokens += parts.tokens;
                    loss += parts.loss_sum.double_value(&[]);
                    entropy += b.entropy_sum(&logits, temp);
                }
                (parts.loss_sum / n as f64).backward();
            }
            grad_norm = self.update(lr)?;
        }
        log.loss = Some(loss / n as f64);
        log.grad_norm = Some(grad_norm);
        log.entropy = Some(entropy / tokens.max(1.0));
        log.clip_frac = Some(clipped / counted.max(1.0));
        log.kl = reference.as_ref().map(|_| kl / tokens.max(1.0));
        Ok(())
    }

    /// The reference's log-probabilities of each batch's targets (with `algorithm.beta > 0`).
    fn reference_logps(&mut self, batches: &[Batch]) -> Result<Option<Vec<Tensor>>> {
        let temp = self.cfg.generation.temperature;
        match &self.reference {
            Reference::None => Ok(None),
            Reference::Model(r) => frozen_logps(r, batches, temp).map(Some),
            Reference::Base => self
                .model
                .without_adapters(|m| frozen_logps(m, batches, temp))
                .map(Some),
        }
    }

    /// PPO (see [`algo`]): the log-probabilities and values before any update, per-token
    /// rewards from `scores` and the KL, GAE, whitened advantages, then `algorithm.epochs`
    /// updates of the clipped policy and value losses, token means over the step.
    fn train_ppo(
        &mut self,
        batches: &[Batch],
        scores: &[f64],
        lr: f64,
        log: &mut RlStepLog,
    ) -> Result<()> {
        let c = self.cfg.clone();
        let a = &c.algorithm;
        let temp = c.generation.temperature;
        // Handles, so `self` stays free for the updates.
        let head = shallow(
            self.value
                .as_ref()
                .ok_or_else(|| Error::bug("ppo without a value head"))?
                .params
                .iter(),
        );
        let reference = self.reference_logps(batches)?;
        let to_vec = |t: &Tensor| -> Result<Vec<f64>> {
            Vec::<f64>::try_from(t.to_kind(Kind::Double).to_device(Device::Cpu).reshape([-1]))
                .map_err(|e| Error::bug(format!("reading a tensor: {e}")))
        };
        let (mut olds, mut old_values, mut advs, mut rets, mut masks) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let (mut kl, mut tokens) = (0.0, 0.0);
        {
            let _g = tch::no_grad_guard();
            for (i, b) in batches.iter().enumerate() {
                let (h, logits) = b.outputs(&self.model)?;
                let old = b.token_logps(&logits, temp);
                let v = values(&head, &h);
                let mask = to_vec(&b.mask)?;
                let k1 = match &reference {
                    Some(r) => {
                        let d = to_vec(&(&old - &r[i]))?;
                        kl += d.iter().zip(&mask).map(|(d, m)| d * m).sum::<f64>();
                        Some(d)
                    }
                    None => None,
                };
                tokens += mask.iter().sum::<f64>();
                let width = b.len as usize;
                let rows = b.rows;
                let r = algo::ppo_rewards(
                    k1.as_deref(),
                    &mask,
                    width,
                    &scores[b.first..b.first + rows],
                    a.beta,
                );
                let (adv, ret) = algo::gae(&r, &to_vec(&v)?, &mask, width, a.gamma(), a.lam());
                olds.push(old);
                old_values.push(v);
                advs.push(adv);
                rets.push(ret);
                masks.push(mask);
            }
        }
        algo::whiten(&mut advs, &masks);
        let shaped = |v: &[f64], like: &Tensor| {
            Tensor::from_slice(v)
                .to_kind(Kind::Float)
                .view(like.size().as_slice())
                .to_device(self.device)
        };
        let advs: Vec<Tensor> = advs
            .iter()
            .zip(batches)
            .map(|(x, b)| shaped(x, &b.mask))
            .collect();
        let rets: Vec<Tensor> = rets
            .iter()
            .zip(batches)
            .map(|(x, b)| shaped(x, &b.mask))
            .collect();
        let eps_low = a.epsilon;
        let eps_high = a.epsilon_high.unwrap_or(eps_low);
        let denom = tokens.max(1.0);
        let (mut clipped, mut vf_clipped, mut counted) = (0.0, 0.0, 0.0);
        let (mut entropy, mut loss, mut vf_loss) = (0.0, 0.0, 0.0);
        let mut grad_norm = 0.0;
        for e in 0..a.epochs {
            trained(&self.model, self.value.as_ref()).zero_grad();
            for (i, b) in batches.iter().enumerate() {
                let (h, logits) = b.outputs(&self.model)?;
                let logp = b.token_logps(&logits, temp);
                let v = values(&head, &h);
                let parts = algo::ppo_loss(
                    &logp,
                    &olds[i],
                    &advs[i],
                    &v,
                    &old_values[i],
                    &rets[i],
                    &b.mask,
                    eps_low,
                    eps_high,
                    a.clip_value(),
                    a.vf_coef(),
                );
                clipped += parts.clipped;
                vf_clipped += parts.vf_clipped;
                counted += parts.tokens;
                if e == 0 {
                    loss += parts.pg_sum + a.vf_coef() * parts.vf_sum;
                    vf_loss += parts.vf_sum;
                    entropy += b.entropy_sum(&logits, temp);
                }
                (parts.loss_sum / denom).backward();
            }
            grad_norm = self.update(lr)?;
        }
        log.loss = Some(loss / denom);
        log.value_loss = Some(vf_loss / denom);
        log.grad_norm = Some(grad_norm);
        log.entropy = Some(entropy / denom);
        log.clip_frac = Some(clipped / counted.max(1.0));
        log.value_clip_frac = Some(vf_clipped / counted.max(1.0));
        log.kl = reference.as_ref().map(|_| kl / denom);
        Ok(())
    }

    /// One optimizer step on the accumulated gradients: clipped to `optim.grad_clip`,
    /// refused when not finite; pruned weights stay zero. Returns the norm before clipping.
    fn update(&mut self, lr: f64) -> Result<f64> {
        let mut store = trained(&self.model, self.value.as_ref());
        let grad_norm = optim::unscale_and_clip(&mut store, 1.0, self.cfg.optim.grad_clip);
        if !grad_norm.is_finite() {
            return Err(Error::usage(format!(
                "step {}: the gradient is not finite (norm {grad_norm}); lower optim.lr or generation.temperature",
                self.step + 1
            )));
        }
        self.optimizer.step(&mut store, lr)?;
        self.model.apply_masks();
        store.zero_grad();
        Ok(grad_norm)
    }

    /// The step's sequences as micro-batches on the device: each micro-batch's distinct
    /// prompts once (left-padded) and every row's completion (right-padded).
    fn micro_batches(&self, seqs: &[Seq], adv: &[f64]) -> Result<Vec<Batch>> {
        let mb = self.cfg.train.micro_batch;
        let mut out = Vec::new();
        for (ci, chunk) in seqs.chunks(mb).enumerate() {
            let a: Vec<f32> = adv[ci * mb..ci * mb + chunk.len()]
                .iter()
                .map(|&x| x as f32)
                .collect();
            out.push(Batch::new(chunk, ci * mb, &a, self.device)?);
        }
        Ok(out)
    }

    /// The current state, for a checkpoint.
    fn state(&self) -> RlState {
        RlState {
            step: self.step,
            optimizer_steps: self.optimizer.step,
            cursor: self.cursor,
            seed: self.cfg.train.seed,
            failed_steps: self.failed_steps,
            model: self.model.config().clone(),
            lora: self.adapter.clone(),
            config: self.cfg.clone(),
            quern_version: env!("CARGO_PKG_VERSION").to_string(),
        }
    }

    /// Writes `checkpoints/step-N/` atomically and keeps the newest `checkpoint.keep`.
    fn save_checkpoint(&self) -> Result<PathBuf> {
        let root = checkpoint::checkpoints_dir(&self.cfg.out_dir);
        fs::create_dir_all(&root).at(&root)?;
        let dest = root.join(format!("step-{:08}", self.step));
        let mut meta = self.meta.clone();
        meta.config = self.model.config().clone();
        // The weights are written in fp32, whatever a quantized init.from stored.
        meta.quant = None;
        meta.source = Some(format!("quern rl:{}", self.cfg.out_dir.display()));
        meta.quern_version = env!("CARGO_PKG_VERSION").into();
        // A LoRA run writes its adapters alone and no model.json: the directory is then a
        // checkpoint whose `lora` record every model reader merges into the base.
        let weights = match &self.adapter {
            Some(_) => self.model.trainable().named(),
            None => self.model.params().named(),
        };
        let opt = self
            .optimizer
            .state(&trained(&self.model, self.value.as_ref()));
        let value = self.value.as_ref().map(ParamStore::named);
        let state = self.state();
        store::write_dir_atomically(&dest, true, |tmp| {
            write_tensors(&tmp.join(store::WEIGHTS), &weights)?;
            write_tensors(&tmp.join("optimizer.safetensors"), &opt)?;
            if let Some(v) = &value {
                write_tensors(&tmp.join(VALUE_HEAD), v)?;
            }
            let mut files = vec![
                (store::TOKENIZER, self.tokenizer_json.clone().into_bytes()),
                ("state.json", serde_json::to_vec_pretty(&state)?),
            ];
            if self.adapter.is_none() {
                files.push((store::MODEL_JSON, serde_json::to_vec_pretty(&meta)?));
            }
            for (name, bytes) in files {
                let p = tmp.join(name);
                fs::write(&p, bytes).at(&p)?;
                store::sync_file(&p)?;
            }
            Ok(())
        })?;
        let all = checkpoint::list(&self.cfg.out_dir)?;
        if all.len() > self.cfg.checkpoint.keep {
            for (_, old) in &all[..all.len() - self.cfg.checkpoint.keep] {
                fs::remove_dir_all(old).at(old)?;
            }
        }
        Ok(dest)
    }

    /// Continues from a checkpoint: weights, optimizer state, step, prompt cursor, counters.
    fn restore(&mut self, dir: &Path) -> Result<()> {
        let state_path = dir.join("state.json");
        let text = fs::read_to_string(&state_path).at(&state_path)?;
        let s: RlState = serde_json::from_str(&text).map_err(|e| {
            Error::bad_input(
                Place::file(&state_path).with_line(e.line() as u64),
                format!("not a quern rl checkpoint state: {e}"),
            )
        })?;
        if s.seed != self.cfg.train.seed {
            return Err(Error::bad_config(
                "train.seed",
                format!(
                    "the checkpoint in {} used seed {}; resuming with {} would not continue the same run",
                    dir.display(),
                    s.seed,
                    self.cfg.train.seed
                ),
            ));
        }
        if s.config.algorithm.kind != self.cfg.algorithm.kind {
            return Err(Error::bad_config(
                "algorithm.type",
                format!(
                    "the checkpoint in {} is a `{}` run; resuming it as `{}` would not continue the same run",
                    dir.display(),
                    s.config.algorithm.kind.name(),
                    self.cfg.algorithm.kind.name()
                ),
            ));
        }
        if s.lora.as_ref().map(|r| &r.lora) != self.adapter.as_ref().map(|r| &r.lora) {
            return Err(Error::bad_config(
                "lora",
                format!(
                    "the checkpoint in {} trained {}, but this run trains {}: start a new out_dir or restore [lora]",
                    dir.display(),
                    if s.lora.is_some() { "LoRA adapters" } else { "every weight" },
                    if self.adapter.is_some() { "LoRA adapters" } else { "every weight" },
                ),
            ));
        }
        if &s.model != self.model.config() {
            return Err(Error::bad_config(
                "init.from",
                format!(
                    "the checkpoint in {} holds a policy of another shape than init.from; start a new out_dir",
                    dir.display()
                ),
            ));
        }
        let wfile = dir.join(store::WEIGHTS);
        let weights = store::read_safetensors(&wfile)?;
        checkpoint::restore_weights(self.model.trainable_mut(), &weights, &wfile)?;
        if let Some(v) = &mut self.value {
            let vfile = dir.join(VALUE_HEAD);
            let w = store::read_safetensors(&vfile)?;
            checkpoint::restore_weights(v, &w, &vfile)?;
        }
        let ofile = dir.join("optimizer.safetensors");
        let opt = store::read_safetensors(&ofile)?;
        let get = |name: &str| checkpoint::Loaded::tensor(&opt, &ofile, name);
        self.optimizer.load_state(
            &trained(&self.model, self.value.as_ref()),
            s.optimizer_steps,
            &get,
        )?;
        self.step = s.step;
        self.cursor = s.cursor;
        self.failed_steps = s.failed_steps;
        Ok(())
    }

    fn report(
        &self,
        start_step: u64,
        log: Vec<RlStepLog>,
        t0: Instant,
        checkpoint: Option<PathBuf>,
    ) -> RlReport {
        RlReport {
            algorithm: self.cfg.algorithm.kind.name().into(),
            device: format!("{:?}", self.device),
            parameters: self.model.params().numel(),
            start_step,
            steps: self.step,
            failed_steps: self.failed_steps,
            seconds: t0.elapsed().as_secs_f64(),
            checkpoint,
            log,
        }
    }
}

/// One micro-batch of training sequences, laid out so that a prompt shared by several rows
/// (a GRPO group's samples) runs through the model once: its distinct prompts are a
/// left-padded prefill whose keys and values every row of that prompt attends to (copied
/// rows of a KV cache, through which the gradient flows back, summed over the copies), and
/// the rows' completions run after it. The prompt positions' outputs are never needed
/// beyond the last one, which predicts the first completion token.
struct Batch {
    /// The step's index of the first sequence.
    first: usize,
    /// Rows.
    rows: usize,
    /// `[u, p]` the distinct prompts, left-padded, and `[u, p]` int64 1 on real tokens
    /// (`None` when all have length `p`).
    prompts: Tensor,
    prompt_mask: Option<Tensor>,
    /// `[rows]` int64: each row's prompt.
    which: Tensor,
    /// `[rows, len - 1]` the completion tokens but each row's last, right-padded (the
    /// inputs after the prompt), and their positions.
    cont: Tensor,
    cont_pos: Tensor,
    /// `[rows, len]`: the completion tokens, the targets.
    targets: Tensor,
    /// The longest completion.
    len: i64,
    /// `[rows, len]` f32: 1 on completion targets.
    mask: Tensor,
    /// `[n]` int64: the flat indices (into `rows × len`) of the completion targets, the
    /// only positions whose logits are computed.
    sel: Tensor,
    /// `[rows]` f32.
    adv: Tensor,
}

impl Batch {
    fn new(chunk: &[Seq], first: usize, adv: &[f32], dev: Device) -> Result<Batch> {
        let rows = chunk.len();
        let (prompts, which) = distinct_rows(chunk.iter().map(|s| &s.ids[..s.prompt_len]));
        let (ids, pmask, p) = left_padded(&prompts);
        let padded = prompts.iter().any(|x| x.len() != p);
        let len = chunk
            .iter()
            .map(|s| s.completion_len)
            .max()
            .unwrap_or(1)
            .max(1);
        let mut targets = Vec::with_capacity(rows * len);
        let mut mask = Vec::with_capacity(rows * len);
        let mut cont = Vec::with_capacity(rows * (len - 1));
        let mut cont_pos = Vec::with_capacity(rows * (len - 1));
        for s in chunk {
            let c = &s.ids[s.prompt_len..s.prompt_len + s.completion_len];
            for j in 0..len {
                targets.push(c.get(j).copied().unwrap_or(0));
                mask.push(if j < c.len() { 1f32 } else { 0.0 });
                if j + 1 < len {
                    cont.push(c.get(j).copied().unwrap_or(0));
                    cont_pos.push((s.prompt_len + j) as i64);
                }
            }
        }
        let u = prompts.len() as i64;
        let (b, l) = (rows as i64, len as i64);
        let sel: Vec<i64> = (0..mask.len() as i64)
            .filter(|&i| mask[i as usize] > 0.0)
            .collect();
        Ok(Batch {
            first,
            rows,
            prompts: Tensor::from_slice(&ids).view([u, p as i64]).to_device(dev),
            prompt_mask: padded.then(|| {
                Tensor::from_slice(&pmask)
                    .view([u, p as i64])
                    .to_device(dev)
            }),
            which: Tensor::from_slice(&which).to_device(dev),
            cont: Tensor::from_slice(&cont).view([b, l - 1]).to_device(dev),
            cont_pos: Tensor::from_slice(&cont_pos)
                .view([b, l - 1])
                .to_device(dev),
            targets: Tensor::from_slice(&targets).view([b, l]).to_device(dev),
            len: l,
            mask: Tensor::from_slice(&mask).view([b, l]).to_device(dev),
            sel: Tensor::from_slice(&sel).to_device(dev),
            adv: Tensor::from_slice(adv).to_device(dev),
        })
    }

    /// The last hidden states `[rows, len, dim]` of the positions predicting `targets` (the
    /// prompt's last position, then each completion position but the last), and the logits
    /// `[n, vocab]` (f32) of the completion targets among them (`sel`) under `model`: the
    /// output projection, the log-softmax and the entropy run on completion tokens only.
    fn outputs(&self, model: &Transformer) -> Result<(Tensor, Tensor)> {
        let (u, p) = (self.prompts.size()[0], self.prompts.size()[1]);
        let c = self.len - 1;
        let mut cache = model.new_cache(u, p + c);
        let positions = self
            .prompt_mask
            .as_ref()
            .map(|m| (m.cumsum(1, Kind::Int64) - 1).clamp_min(0));
        let extras = Extras {
            positions: positions.as_ref(),
            key_mask: self.prompt_mask.as_ref(),
            ..Extras::default()
        };
        let h = model.hidden(&self.prompts, &extras, true, false, Some(&mut cache))?;
        let last = h.select(1, p - 1).index_select(0, &self.which).unsqueeze(1);
        let hs = if c > 0 {
            // Every row gets its own copy of its prompt's keys and values (always a copy:
            // the prefill's attention keeps views of the original cache for its backward,
            // so the completions must not write into it).
            cache.select_rows(&self.which);
            let key_mask = self.prompt_mask.as_ref().map(|m| {
                let m = m.index_select(0, &self.which);
                let ones = Tensor::ones([self.rows as i64, c], (Kind::Int64, m.device()));
                Tensor::cat(&[m, ones], 1)
            });
            let extras = Extras {
                positions: Some(&self.cont_pos),
                key_mask: key_mask.as_ref(),
                ..Extras::default()
            };
            let hc = model.hidden(&self.cont, &extras, true, false, Some(&mut cache))?;
            Tensor::cat(&[last, hc], 1)
        } else {
            last
        };
        let dim = hs.size()[2];
        let picked = hs.reshape([-1, dim]).index_select(0, &self.sel);
        let logits = model.logits(&picked).to_kind(Kind::Float);
        Ok((hs, logits))
    }

    /// Logits `[n, vocab]` (f32) of the completion targets under `model`.
    fn logits(&self, model: &Transformer) -> Result<Tensor> {
        Ok(self.outputs(model)?.1)
    }

    /// Log-probabilities `[rows, len]` of the targets under `logits` (from
    /// [`Batch::outputs`]) at `temp`; 0 off the completion mask.
    fn token_logps(&self, logits: &Tensor, temp: f64) -> Tensor {
        let targets = self.targets.reshape([-1]).index_select(0, &self.sel);
        let lp = algo::token_logps(logits, &targets, temp);
        let (b, l) = (self.mask.size()[0], self.mask.size()[1]);
        Tensor::zeros([b * l], (Kind::Float, lp.device()))
            .index_add(0, &self.sel, &lp)
            .view([b, l])
    }

    /// Σ of the sampling distribution's entropy over the completion targets.
    fn entropy_sum(&self, logits: &Tensor, temp: f64) -> f64 {
        let ones = Tensor::ones([logits.size()[0]], (Kind::Float, logits.device()));
        algo::entropy_sum(&(logits.detach() / temp), &ones)
    }
}

/// Log-probabilities of each batch's targets under `model` at `temp`, without gradients (the
/// reference's, or the policy's before an update).
fn frozen_logps(model: &Transformer, batches: &[Batch], temp: f64) -> Result<Vec<Tensor>> {
    let _g = tch::no_grad_guard();
    batches
        .iter()
        .map(|b| Ok(b.token_logps(&b.logits(model)?, temp)))
        .collect()
}

fn write_tensors(path: &Path, tensors: &[(String, Tensor)]) -> Result<()> {
    let cpu: Vec<(String, Tensor)> = tensors
        .iter()
        .map(|(n, t)| (n.clone(), t.detach().to_device(Device::Cpu).contiguous()))
        .collect();
    Tensor::write_safetensors(&cpu, path)
        .map_err(|e| Error::usage(format!("writing {}: {e}", path.display())))?;
    store::sync_file(path)
}

/// The files of a run in its out_dir.
const RUN_FILES: [&str; 3] = ["metrics.jsonl", "checkpoints", "report.json"];

/// Refuses an out_dir holding a run unless resumed or forced (forced: removes that run's
/// files, nothing else).
fn claim_out_dir(dir: &Path, opts: &RlOptions) -> Result<()> {
    if opts.resume {
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
            "{} already holds a run ({}); pass --resume to continue it, or --force to replace it, or choose another out_dir",
            dir.display(),
            found.join(", ")
        )));
    }
    for f in found {
        let p = dir.join(f);
        if p.is_dir() {
            fs::remove_dir_all(&p).at(&p)?;
        } else {
            fs::remove_file(&p).at(&p)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_prompt_order_is_a_seeded_permutation_per_epoch() {
        let a = order(10, 7, 0, true);
        let mut sorted = a.clone();
        sorted.sort();
        assert_eq!(sorted, (0..10).collect::<Vec<_>>());
        assert_eq!(a, order(10, 7, 0, true));
        assert_ne!(a, order(10, 7, 1, true));
        assert_eq!(order(4, 7, 3, false), vec![0, 1, 2, 3]);
    }

    /// The shared-prompt layout (a group's prompt run once, its keys and values copied to
    /// each row) gives every row's completion log-probabilities and the parameters'
    /// gradients of each row run alone through a plain causal forward, under padding of the
    /// prompts (different lengths), of the completions (a one-token one among them), GQA and
    /// rotary positions.
    #[test]
    fn shared_prompts_give_each_rows_own_logps_and_gradients() {
        let _rng = crate::torch_rng_lock();
        tch::manual_seed(3);
        let cfg = ModelConfig::llama()
            .with_kv_heads(2)
            .with_layers(2)
            .with_dim(32)
            .with_seq_len(32)
            .with_vocab_size(40);
        let mut model = Transformer::new(&cfg, Device::Cpu);
        let seq = |prompt: &[i64], completion: &[i64]| Seq {
            ids: prompt.iter().chain(completion).copied().collect(),
            prompt_len: prompt.len(),
            completion_len: completion.len(),
            text: String::new(),
            truncated: false,
        };
        let (a, b) = ([1i64, 5, 7, 9, 2], [3i64, 8, 4]);
        let seqs = vec![
            seq(&a, &[11, 12, 13, 14]),
            seq(&b, &[15]),
            seq(&a, &[16, 17, 18]),
            seq(&a, &[19, 20]),
        ];
        let temp = 0.7;
        let batch = Batch::new(&seqs, 0, &[1.0, -0.5, 0.25, 2.0], Device::Cpu).unwrap();
        assert_eq!(batch.prompts.size(), vec![2, 5], "a runs once");
        model.params_mut().zero_grad();
        let logits = batch.logits(&model).unwrap();
        let lp = batch.token_logps(&logits, temp);
        (&lp * &batch.adv.unsqueeze(1)).sum(Kind::Float).backward();
        let grads: Vec<Tensor> = model
            .params()
            .params
            .iter()
            .map(|p| p.tensor.grad().copy())
            .collect();
        model.params_mut().zero_grad();
        let mut want_total = Tensor::zeros([], (Kind::Float, Device::Cpu));
        for (i, s) in seqs.iter().enumerate() {
            let ids = Tensor::from_slice(&s.ids).view([1, -1]);
            let logits = model.forward(&ids, true, false).squeeze_dim(0);
            let lps = (logits / temp).log_softmax(-1, Kind::Float);
            for j in 0..s.completion_len {
                let pos = (s.prompt_len + j - 1) as i64;
                let want = lps.get(pos).get(s.ids[s.prompt_len + j]);
                let got = lp.get(i as i64).get(j as i64);
                let d = (want.double_value(&[]) - got.double_value(&[])).abs();
                assert!(d < 1e-5, "row {i} token {j}: {d}");
                want_total += want * batch.adv.double_value(&[i as i64]);
            }
            for j in s.completion_len..batch.len as usize {
                assert_eq!(lp.double_value(&[i as i64, j as i64]), 0.0, "off the mask");
            }
        }
        want_total.backward();
        for (p, g) in model.params().params.iter().zip(&grads) {
            let w = p.tensor.grad();
            let rel = (&w - g).norm().double_value(&[]) / w.norm().double_value(&[]).max(1e-12);
            assert!(rel < 1e-4, "{}: gradient differs by {rel} relative", p.name);
        }
    }
}
