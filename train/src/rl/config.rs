//! `rl.toml`: the configuration of `quern rl`, validated before anything is loaded.
//!
//! Every table refuses unknown keys (the error names the key) and every key but `init.from`,
//! `prompts.file` and the reward terms has a documented default. Relative paths (the
//! policy, the reference, the prompts, reward models, the out_dir, a reward command's
//! program when it names a path) resolve against the TOML file's directory, and a reward
//! command runs there.
//!
//! ```toml
//! out_dir = "runs/grpo"
//! [init]
//! from = "smollm2"                # the policy to start from (any model quern loads)
//! [prompts]
//! file = "gsm8k-train.jsonl"      # {"question", "answer": "... #### N"} per line
//! per_step = 4
//! [generation]
//! group_size = 8                  # G samples per prompt
//! max_new_tokens = 128
//! temperature = 1.0
//! [algorithm]
//! type = "grpo"                   # grpo | dr_grpo | rloo | ppo
//! beta = 0.04                     # KL to the reference (k3); 0 = none
//! [[reward]]
//! type = "exact_match"            # the final number against the answer's `#### N`
//! [[reward]]
//! type = "length"
//! weight = -0.1
//! [train]
//! steps = 200
//! ```

use std::path::{Path, PathBuf};

use quern_core::{Error, Result};
use serde::{Deserialize, Serialize};

use crate::config::{DeviceChoice, OptimConfig};

/// A whole RL run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RlConfig {
    /// Checkpoints, `metrics.jsonl` and `report.json`. Default `runs/rl`.
    #[serde(default = "default_out_dir")]
    pub out_dir: PathBuf,
    /// The policy to start from and the reference. Required: `init.from`.
    pub init: RlInit,
    /// The prompts and their answers. Required: `prompts.file`.
    pub prompts: PromptsConfig,
    /// Sampling of the completions. Default: see [`GenerationConfig`].
    #[serde(default)]
    pub generation: GenerationConfig,
    /// GRPO, Dr. GRPO, RLOO or PPO and their coefficients. Default: see [`AlgorithmConfig`].
    #[serde(default)]
    pub algorithm: AlgorithmConfig,
    /// The reward: a weighted sum of these terms (`[[reward]]`, at least one).
    #[serde(default)]
    pub reward: Vec<RewardTerm>,
    /// AdamW and the learning-rate schedule, as in `run.toml` (over `train.steps`).
    #[serde(default = "default_optim")]
    pub optim: OptimConfig,
    /// The loop. Default: see [`RlLoop`].
    #[serde(default)]
    pub train: RlLoop,
    /// Checkpoints. Default: see [`RlCheckpoint`].
    #[serde(default)]
    pub checkpoint: RlCheckpoint,
    /// LoRA adapters on the policy (`rank`, `alpha`, `targets`, as in `run.toml`; `dropout`
    /// must be 0): only they (and PPO's value head) train, and checkpoints hold only them.
    #[serde(default)]
    pub lora: Option<crate::config::LoraConfig>,
    /// The TOML's directory, where reward commands run (set by [`RlConfig::resolve`]; not
    /// a key of the file).
    #[serde(skip)]
    pub config_dir: Option<PathBuf>,
}

fn default_out_dir() -> PathBuf {
    PathBuf::from("runs/rl")
}

/// RL's optimizer defaults: `run.toml`'s, with a smaller learning rate (1e-6), no weight
/// decay and a constant schedule.
fn default_optim() -> OptimConfig {
    OptimConfig {
        lr: 1e-6,
        weight_decay: 0.0,
        decay: crate::config::Decay::Constant,
        ..OptimConfig::default()
    }
}

/// `[init]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RlInit {
    /// The policy's starting weights: a quern model directory, run or checkpoint, a GGUF
    /// file or a Hugging Face directory, with its tokenizer. Required.
    pub from: PathBuf,
    /// The frozen reference of the KL term (`algorithm.beta > 0`). Default: `init.from`.
    #[serde(default)]
    pub reference: Option<PathBuf>,
}

/// How a prompt is written for the model.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PromptFormat {
    /// `Question: {question}\nAnswer:` (lm-evaluation-harness's gsm8k prompt).
    #[default]
    Plain,
    /// The question as the user's turn through the model's chat template (ChatML when it
    /// has none), the assistant's turn opened.
    Chat,
}

/// `[prompts]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PromptsConfig {
    /// JSONL, one prompt per line: `question`, `answer` (GSM8K style, ending `#### N`), an
    /// optional `id`. Required.
    pub file: PathBuf,
    /// `plain` or `chat`. Default `plain`.
    #[serde(default)]
    pub format: PromptFormat,
    /// Prompts per step, >= 1 (each sampled `generation.group_size` times). Default 4.
    #[serde(default = "default_per_step")]
    pub per_step: usize,
    /// Visit the prompts in a fresh seeded order each epoch (else in file order). Default true.
    #[serde(default = "yes")]
    pub shuffle: bool,
}

fn default_per_step() -> usize {
    4
}
fn yes() -> bool {
    true
}

/// `[generation]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GenerationConfig {
    /// G: samples per prompt, >= 2. Default 4.
    pub group_size: usize,
    /// New tokens at most per sample, >= 1. Default 64.
    pub max_new_tokens: usize,
    /// Sampling temperature, > 0; the log-probabilities of the loss are taken at it too.
    /// Default 1.0.
    pub temperature: f64,
    /// Nucleus sampling, in (0, 1]. Default 1.0 (off).
    pub top_p: f64,
    /// Top-k sampling; 0 = off. Default 0.
    pub top_k: usize,
    /// Strings that end a sample (the text is cut before it; its tokens are kept). Default none.
    pub stop: Vec<String>,
    /// Samples per generation batch, >= 1; 0 = all of a step's in one batch. Default 0.
    pub batch_size: usize,
}

impl Default for GenerationConfig {
    fn default() -> Self {
        GenerationConfig {
            group_size: 4,
            max_new_tokens: 64,
            temperature: 1.0,
            top_p: 1.0,
            top_k: 0,
            stop: Vec::new(),
            batch_size: 0,
        }
    }
}

/// `algorithm.type`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Algorithm {
    /// Group-normalised advantages `(r − mean) / (std + ε)`, per-sequence token means.
    #[default]
    Grpo,
    /// `r − mean`, sequence sums over the constant `max_new_tokens`.
    DrGrpo,
    /// Leave-one-out baseline `r − mean of the others`, per-sequence token means.
    Rloo,
    /// PPO: a value head, per-token rewards (the KL penalty on every token, the score on
    /// the last), GAE, clipped policy and value losses, token means over the step.
    Ppo,
}

impl Algorithm {
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Grpo => "grpo",
            Algorithm::DrGrpo => "dr_grpo",
            Algorithm::Rloo => "rloo",
            Algorithm::Ppo => "ppo",
        }
    }
}

/// `[algorithm]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlgorithmConfig {
    /// `grpo`, `dr_grpo`, `rloo` or `ppo`. Default `grpo`.
    #[serde(rename = "type")]
    pub kind: Algorithm,
    /// ε of the clipped ratio (lower side: `1 − epsilon`), in (0, 1). Default 0.2.
    pub epsilon: f64,
    /// Upper side `1 + epsilon_high`, > 0. Default: `epsilon`.
    pub epsilon_high: Option<f64>,
    /// β of the KL to the reference, >= 0; 0 loads no reference. Default 0. GRPO, Dr. GRPO
    /// and RLOO add `β · k3` to the loss; PPO subtracts `β · (old − ref)` (k1) from each
    /// token's reward, as TRL's `kl_coef`.
    pub beta: f64,
    /// Optimisation passes over each step's samples (μ), >= 1; one optimizer step each.
    /// Default 1.
    pub epochs: usize,
    /// ε in GRPO's `(r − mean) / (std + ε)`, > 0. Default 1e-4.
    pub std_eps: f64,
    /// PPO's discount γ, in [0, 1]. Default 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gamma: Option<f64>,
    /// PPO's GAE λ, in [0, 1]. Default 0.95.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lam: Option<f64>,
    /// PPO's weight of the value loss, > 0. Default 0.1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vf_coef: Option<f64>,
    /// PPO's value clip around the stored values, > 0. Default 0.2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clip_value: Option<f64>,
}

impl AlgorithmConfig {
    /// PPO's γ.
    pub fn gamma(&self) -> f64 {
        self.gamma.unwrap_or(1.0)
    }
    /// PPO's λ.
    pub fn lam(&self) -> f64 {
        self.lam.unwrap_or(0.95)
    }
    /// PPO's value-loss weight.
    pub fn vf_coef(&self) -> f64 {
        self.vf_coef.unwrap_or(0.1)
    }
    /// PPO's value clip.
    pub fn clip_value(&self) -> f64 {
        self.clip_value.unwrap_or(0.2)
    }
}

impl Default for AlgorithmConfig {
    fn default() -> Self {
        AlgorithmConfig {
            kind: Algorithm::Grpo,
            epsilon: 0.2,
            epsilon_high: None,
            beta: 0.0,
            epochs: 1,
            std_eps: 1e-4,
            gamma: None,
            lam: None,
            vf_coef: None,
            clip_value: None,
        }
    }
}

/// `reward[i].type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RewardKind {
    /// 1 when the completion's final number equals the answer's (`extract`), else 0.
    ExactMatch,
    /// 1 when `pattern` matches somewhere in the completion, else 0.
    Regex,
    /// 1 when the completion has a `#### N` final answer (GSM8K's format), else 0.
    Format,
    /// The completion's tokens divided by `generation.max_new_tokens` (give it a negative
    /// weight to favour short answers).
    Length,
    /// 1 when the completion ran out of `generation.max_new_tokens` (or the context)
    /// without an end-of-sequence id or stop string, else 0: with `weight = -P` it is TRL's
    /// `missing_eos_penalty = P`.
    Truncated,
    /// An external program's score: JSONL on stdin, one JSON number per line on stdout.
    Command,
    /// A reward model trained by `quern train` (`objective = "rm"`): its score of prompt +
    /// completion.
    Rm,
}

/// How `exact_match` finds the completion's final number (`quern eval gen`'s two filters).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Extract {
    /// The first `#### N`.
    Strict,
    /// The last number in the text.
    #[default]
    Flexible,
}

/// One `[[reward]]` term.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RewardTerm {
    /// `exact_match`, `regex`, `format`, `length`, `truncated`, `command` or `rm`. Required.
    #[serde(rename = "type")]
    pub kind: RewardKind,
    /// The term's weight in the sum (finite). Default 1.
    #[serde(default = "one")]
    pub weight: f64,
    /// `exact_match`: `strict` or `flexible`. Default `flexible`.
    #[serde(default)]
    pub extract: Option<Extract>,
    /// `regex`: the pattern (Rust `regex` syntax). Required there.
    #[serde(default)]
    pub pattern: Option<String>,
    /// `command`: the program and its arguments. Required there.
    #[serde(default)]
    pub command: Option<Vec<String>>,
    /// `rm`: the reward model (a run, checkpoint or model directory). Required there.
    #[serde(default)]
    pub model: Option<PathBuf>,
}

fn one() -> f64 {
    1.0
}

impl RewardTerm {
    /// A short name for the metrics: `exact_match`, `regex`, ... (with the index when a type
    /// repeats; see [`RlConfig::term_names`]).
    pub fn kind_name(&self) -> &'static str {
        match self.kind {
            RewardKind::ExactMatch => "exact_match",
            RewardKind::Regex => "regex",
            RewardKind::Format => "format",
            RewardKind::Length => "length",
            RewardKind::Truncated => "truncated",
            RewardKind::Command => "command",
            RewardKind::Rm => "rm",
        }
    }
}

/// `[train]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RlLoop {
    /// RL steps (each: sample, score, optimise), >= 1. Default 100.
    pub steps: u64,
    /// Seed of the prompt order and the sampling. Default 1234.
    pub seed: u64,
    /// Sequences per forward/backward pass, >= 1 (gradients accumulate over a step). Default 8.
    pub micro_batch: usize,
    /// `auto`, `cpu` or `cuda`. Default `auto`.
    pub device: DeviceChoice,
    /// Steps whose reward failed (a reward command crashed or printed garbage) that the run
    /// tolerates: such a step is logged with its rows and skipped; one more stops the run.
    /// Default 0.
    pub max_failed_steps: u64,
}

impl Default for RlLoop {
    fn default() -> Self {
        RlLoop {
            steps: 100,
            seed: 1234,
            micro_batch: 8,
            device: DeviceChoice::Auto,
            max_failed_steps: 0,
        }
    }
}

/// `[checkpoint]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RlCheckpoint {
    /// Every this many steps (and at the end); 0 = only at the end. Default 50.
    pub every: u64,
    /// The newest this many are kept, >= 1. Default 3.
    pub keep: usize,
}

impl Default for RlCheckpoint {
    fn default() -> Self {
        RlCheckpoint { every: 50, keep: 3 }
    }
}

impl RlConfig {
    /// Parses TOML text and validates it; errors name the key.
    pub fn from_toml(text: &str) -> Result<Self> {
        let table: toml::Table = toml::from_str(text)
            .map_err(|e| Error::bad_config("rl.toml", format!("not valid TOML: {e}")))?;
        let mut value =
            serde_json::to_value(table).map_err(|e| Error::bug(format!("TOML to JSON: {e}")))?;
        // RL's [optim] defaults apply key by key, not only when the table is left out.
        if let Some(serde_json::Value::Object(o)) = value.get_mut("optim") {
            if let serde_json::Value::Object(d) = serde_json::to_value(default_optim())? {
                for (k, v) in d {
                    o.entry(k).or_insert(v);
                }
            }
        }
        let cfg: RlConfig = crate::config::deserialize_named(value, "rl.toml")?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Reads a file, validates it and resolves its paths against its directory.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let mut cfg = Self::from_toml(&text).map_err(|e| crate::config::in_config_file(e, path))?;
        let base = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        cfg.resolve(base);
        Ok(cfg)
    }

    /// Makes every relative path absolute against `base` (the TOML's directory). A reward
    /// command's program is resolved only when it names a path (holds a `/`); a bare name is
    /// looked up on PATH.
    pub fn resolve(&mut self, base: &Path) {
        self.config_dir = Some(base.to_path_buf());
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        fix(&mut self.out_dir);
        fix(&mut self.init.from);
        if let Some(r) = self.init.reference.as_mut() {
            fix(r);
        }
        fix(&mut self.prompts.file);
        for t in &mut self.reward {
            if let Some(m) = t.model.as_mut() {
                fix(m);
            }
            if let Some(prog) = t.command.as_mut().and_then(|c| c.first_mut()) {
                if prog.contains('/') && Path::new(prog.as_str()).is_relative() {
                    *prog = base.join(prog.as_str()).to_string_lossy().into_owned();
                }
            }
        }
    }

    /// The metrics name of each reward term: its type, with `_<index>` when a type repeats.
    pub fn term_names(&self) -> Vec<String> {
        self.reward
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let k = t.kind_name();
                if self.reward.iter().filter(|o| o.kind == t.kind).count() > 1 {
                    format!("{k}_{i}")
                } else {
                    k.to_string()
                }
            })
            .collect()
    }

    /// Value ranges and the keys each reward type needs; errors name the key in full.
    pub fn validate(&self) -> Result<()> {
        fn need(ok: bool, key: &str, rule: &str, got: impl std::fmt::Display) -> Result<()> {
            if ok {
                Ok(())
            } else {
                Err(Error::bad_config(key, format!("must be {rule}, got {got}")))
            }
        }
        let positive = |x: f64| x > 0.0 && x.is_finite();
        if let Some(l) = &self.lora {
            l.validate()?;
            if l.dropout != 0.0 {
                return Err(Error::bad_config(
                    "lora.dropout",
                    format!(
                        "must be 0 in quern rl, got {}: the policy's log-probabilities are taken without dropout, as the samples' were",
                        l.dropout
                    ),
                ));
            }
        }
        let g = &self.generation;
        if self.algorithm.kind == Algorithm::Ppo {
            need(
                g.group_size >= 1,
                "generation.group_size",
                "at least 1",
                g.group_size,
            )?;
        } else {
            need(
                g.group_size >= 2,
                "generation.group_size",
                "at least 2 (advantages compare the samples of a prompt; ppo needs only 1)",
                g.group_size,
            )?;
        }
        need(
            g.max_new_tokens >= 1,
            "generation.max_new_tokens",
            "at least 1",
            g.max_new_tokens,
        )?;
        need(
            positive(g.temperature),
            "generation.temperature",
            "a positive number (RL samples)",
            g.temperature,
        )?;
        need(
            g.top_p > 0.0 && g.top_p <= 1.0,
            "generation.top_p",
            "in (0, 1]",
            g.top_p,
        )?;
        if g.stop.iter().any(String::is_empty) {
            return Err(Error::bad_config(
                "generation.stop",
                "a stop string must not be empty",
            ));
        }
        need(
            self.prompts.per_step >= 1,
            "prompts.per_step",
            "at least 1",
            self.prompts.per_step,
        )?;
        let a = &self.algorithm;
        need(
            a.epsilon > 0.0 && a.epsilon < 1.0,
            "algorithm.epsilon",
            "in (0, 1)",
            a.epsilon,
        )?;
        if let Some(h) = a.epsilon_high {
            need(
                positive(h),
                "algorithm.epsilon_high",
                "a positive number",
                h,
            )?;
        }
        need(
            a.beta >= 0.0 && a.beta.is_finite(),
            "algorithm.beta",
            ">= 0",
            a.beta,
        )?;
        if self.init.reference.is_some() && a.beta == 0.0 {
            return Err(Error::bad_config(
                "init.reference",
                "the reference is only used by the KL term: set algorithm.beta > 0, or remove init.reference",
            ));
        }
        need(a.epochs >= 1, "algorithm.epochs", "at least 1", a.epochs)?;
        need(
            positive(a.std_eps),
            "algorithm.std_eps",
            "a positive number",
            a.std_eps,
        )?;
        if a.std_eps != AlgorithmConfig::default().std_eps && a.kind != Algorithm::Grpo {
            return Err(Error::bad_config(
                "algorithm.std_eps",
                format!(
                    "only grpo divides by the group's std; algorithm.type is `{}`",
                    a.kind.name()
                ),
            ));
        }
        let ppo_keys = [
            ("algorithm.gamma", a.gamma, 0.0, 1.0),
            ("algorithm.lam", a.lam, 0.0, 1.0),
            ("algorithm.vf_coef", a.vf_coef, f64::MIN_POSITIVE, f64::MAX),
            (
                "algorithm.clip_value",
                a.clip_value,
                f64::MIN_POSITIVE,
                f64::MAX,
            ),
        ];
        for (key, v, lo, hi) in ppo_keys {
            let Some(v) = v else { continue };
            if a.kind != Algorithm::Ppo {
                return Err(Error::bad_config(
                    key,
                    format!(
                        "only ppo has a value head and per-token returns; algorithm.type is `{}`",
                        a.kind.name()
                    ),
                ));
            }
            let rule = if hi == 1.0 {
                "in [0, 1]"
            } else {
                "a positive number"
            };
            need(v.is_finite() && v >= lo && v <= hi, key, rule, v)?;
        }
        if self.reward.is_empty() {
            return Err(Error::bad_config(
                "reward",
                "no reward: add at least one [[reward]] term (type = \"exact_match\", \"regex\", \"format\", \"length\", \"command\" or \"rm\")",
            ));
        }
        for (i, t) in self.reward.iter().enumerate() {
            let key = |k: &str| format!("reward[{i}].{k}");
            if !t.weight.is_finite() {
                return Err(Error::bad_config(
                    key("weight"),
                    format!("must be finite, got {}", t.weight),
                ));
            }
            let allowed: &[&str] = match t.kind {
                RewardKind::ExactMatch => &["extract"],
                RewardKind::Regex => &["pattern"],
                RewardKind::Command => &["command"],
                RewardKind::Rm => &["model"],
                RewardKind::Format | RewardKind::Length | RewardKind::Truncated => &[],
            };
            let given = [
                ("extract", t.extract.is_some()),
                ("pattern", t.pattern.is_some()),
                ("command", t.command.is_some()),
                ("model", t.model.is_some()),
            ];
            for (k, set) in given {
                if set && !allowed.contains(&k) {
                    return Err(Error::bad_config(
                        key(k),
                        format!("does not apply to a `{}` term", t.kind_name()),
                    ));
                }
                if !set && allowed.contains(&k) && k != "extract" {
                    return Err(Error::bad_config(
                        key(k),
                        format!("a `{}` term needs it", t.kind_name()),
                    ));
                }
            }
            if let Some(p) = &t.pattern {
                regex::Regex::new(p)
                    .map_err(|e| Error::bad_config(key("pattern"), format!("not a regex: {e}")))?;
            }
            if let Some(c) = &t.command {
                if c.is_empty() || c[0].is_empty() {
                    return Err(Error::bad_config(
                        key("command"),
                        "give the program and its arguments, e.g. [\"python3\", \"check.py\"]",
                    ));
                }
            }
        }
        let t = &self.train;
        need(t.steps >= 1, "train.steps", "at least 1", t.steps)?;
        need(
            t.micro_batch >= 1,
            "train.micro_batch",
            "at least 1",
            t.micro_batch,
        )?;
        need(
            self.checkpoint.keep >= 1,
            "checkpoint.keep",
            "at least 1",
            self.checkpoint.keep,
        )?;
        let o = &self.optim;
        need(positive(o.lr), "optim.lr", "a positive number", o.lr)?;
        if let Some(m) = o.min_lr {
            need(
                m >= 0.0 && m <= o.lr,
                "optim.min_lr",
                &format!("in [0, optim.lr = {}]", o.lr),
                m,
            )?;
        }
        need(
            o.weight_decay >= 0.0 && o.weight_decay.is_finite(),
            "optim.weight_decay",
            ">= 0",
            o.weight_decay,
        )?;
        need(
            (0.0..1.0).contains(&o.beta1),
            "optim.beta1",
            "in [0, 1)",
            o.beta1,
        )?;
        need(
            (0.0..1.0).contains(&o.beta2),
            "optim.beta2",
            "in [0, 1)",
            o.beta2,
        )?;
        need(positive(o.eps), "optim.eps", "a positive number", o.eps)?;
        need(
            o.grad_clip >= 0.0 && o.grad_clip.is_finite(),
            "optim.grad_clip",
            ">= 0 (0 turns clipping off)",
            o.grad_clip,
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: &str =
        "[init]\nfrom = \"m\"\n[prompts]\nfile = \"p.jsonl\"\n[[reward]]\ntype = \"exact_match\"\n";

    #[test]
    fn a_minimal_file_takes_the_defaults() {
        let c = RlConfig::from_toml(MIN).unwrap();
        assert_eq!(c.generation, GenerationConfig::default());
        assert_eq!(c.algorithm, AlgorithmConfig::default());
        assert_eq!(c.train, RlLoop::default());
        assert_eq!(c.optim, default_optim());
        // A table that sets one key keeps RL's defaults for the others.
        let c = RlConfig::from_toml(&format!("{MIN}[optim]\nlr = 0.5\n")).unwrap();
        assert_eq!(
            c.optim,
            OptimConfig {
                lr: 0.5,
                ..default_optim()
            }
        );
        assert_eq!(c.reward[0].weight, 1.0);
        assert_eq!(c.term_names(), vec!["exact_match"]);
    }

    #[test]
    fn errors_name_the_key() {
        let cases = [
            (
                format!("{MIN}[generation]\ngroup = 4\n"),
                "generation",
                "group",
            ),
            (format!("{MIN}zz = 1\n"), "reward[0]", "zz"),
            (
                format!("{MIN}[algorithm]\ntype = \"ppo2\"\n"),
                "algorithm.type",
                "ppo2",
            ),
            (
                format!("{MIN}[algorithm]\nlam = 0.9\n"),
                "algorithm.lam",
                "only ppo",
            ),
            (
                format!("{MIN}[algorithm]\ntype = \"ppo\"\ngamma = 1.5\n"),
                "algorithm.gamma",
                "[0, 1]",
            ),
            (
                format!("{MIN}[algorithm]\ntype = \"ppo\"\nvf_coef = 0.0\n"),
                "algorithm.vf_coef",
                "positive",
            ),
            (
                format!("{MIN}[generation]\ngroup_size = 0\n[algorithm]\ntype = \"ppo\"\n"),
                "generation.group_size",
                "at least 1",
            ),
            (
                format!("{MIN}[generation]\ngroup_size = 1\n"),
                "generation.group_size",
                "at least 2",
            ),
            (
                format!("{MIN}[algorithm]\nepsilon = 1.5\n"),
                "algorithm.epsilon",
                "(0, 1)",
            ),
            (
                format!("{MIN}[[reward]]\ntype = \"regex\"\n"),
                "reward[1].pattern",
                "needs it",
            ),
            (
                format!("{MIN}[[reward]]\ntype = \"regex\"\npattern = \"(\"\n"),
                "reward[1].pattern",
                "regex",
            ),
            (
                format!("{MIN}[[reward]]\ntype = \"length\"\nmodel = \"x\"\n"),
                "reward[1].model",
                "does not apply",
            ),
            (
                format!("{MIN}[[reward]]\ntype = \"command\"\ncommand = []\n"),
                "reward[1].command",
                "program",
            ),
            (format!("{MIN}[train]\nstep = 3\n"), "train", "step"),
            (
                format!("{MIN}[algorithm]\ntype = \"rloo\"\nstd_eps = 0.1\n"),
                "algorithm.std_eps",
                "grpo",
            ),
            (
                "[init]\nfrom = \"m\"\n[prompts]\nfile = \"p\"\n".to_string(),
                "reward",
                "[[reward]]",
            ),
            ("[prompts]\nfile = \"p\"\n".to_string(), "rl.toml", "init"),
            (
                MIN.replace("from = \"m\"\n", "from = \"m\"\nreference = \"r\"\n"),
                "init.reference",
                "algorithm.beta",
            ),
        ];
        for (text, key, needle) in cases {
            let msg = RlConfig::from_toml(&text).unwrap_err().to_string();
            assert!(
                msg.contains(key) && msg.contains(needle),
                "{text:?} gave {msg}"
            );
        }
    }

    #[test]
    fn paths_resolve_against_the_file() {
        let text = format!(
            "{MIN}[[reward]]\ntype = \"command\"\ncommand = [\"./score.py\", \"x\"]\n[[reward]]\ntype = \"command\"\ncommand = [\"python3\"]\n"
        );
        let mut c = RlConfig::from_toml(&text).unwrap();
        c.resolve(Path::new("/base"));
        assert_eq!(c.init.from, PathBuf::from("/base/m"));
        assert_eq!(c.prompts.file, PathBuf::from("/base/p.jsonl"));
        assert_eq!(c.out_dir, PathBuf::from("/base/runs/rl"));
        assert_eq!(c.reward[1].command.as_ref().unwrap()[0], "/base/./score.py");
        assert_eq!(c.reward[2].command.as_ref().unwrap()[0], "python3");
        assert_eq!(
            c.term_names(),
            vec!["exact_match", "command_1", "command_2"]
        );
    }
}
