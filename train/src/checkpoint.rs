//! Checkpoints: weights and optimizer state as safetensors, the rest as JSON, committed
//! atomically, the last K kept.
//!
//! A checkpoint is a directory `checkpoints/step-00000100/` holding `model.safetensors`
//! (weights under the model's parameter names), `optimizer.safetensors` (`exp_avg.<name>`,
//! `exp_avg_sq.<name>`) and `state.json` ([`CheckpointState`]: step, data cursor, seed, loss
//! scaler, the run's configuration), with a copy of the training split's `tokenizer.json` so
//! that `quern generate` and `quern import` can read a checkpoint alone. A LoRA run's
//! checkpoints hold only the adapters (and their optimizer state), with a `lora` record
//! naming the base model and its weights hash. It is written into a hidden temporary directory, every
//! file fsynced, then renamed into place, so a crash never leaves a half checkpoint where
//! `--resume` would look. Older checkpoints beyond `checkpoint.keep` are then removed.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use quern_core::error::{IoContext, Place};
use quern_core::{Error, Result};
use serde::{Deserialize, Serialize};
use tch::Tensor;

use crate::amp::LossScaler;
use crate::config::{ModelConfig, TrainConfig};
use crate::data::DataCursor;
use crate::model::ParamStore;
use quern_models::store::sync_file;

/// Everything but the tensors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointState {
    /// Optimizer steps completed (including skipped ones).
    pub step: u64,
    /// Steps the optimizer actually applied (AdamW's bias-correction count).
    pub optimizer_steps: u64,
    /// Training tokens consumed.
    pub tokens_seen: u64,
    /// Where the training data continues (rank 0's in a data-parallel run).
    pub cursor: DataCursor,
    /// Processes of the run that wrote it (`WORLD_SIZE`; absent: 1). `--resume` needs the
    /// same.
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub world_size: usize,
    /// A data-parallel run's data cursors, one per rank in rank order (`cursor` is the
    /// first); empty for one process.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cursors: Vec<DataCursor>,
    /// The run's seed (per-step generators derive from it and the step).
    pub seed: u64,
    pub scaler: LossScaler,
    /// Non-finite steps in a row at the time of the checkpoint, and in total.
    pub consecutive_skips: u64,
    pub skipped_steps: u64,
    /// The model's resolved shape (seq_len and vocab filled in).
    pub model: ModelConfig,
    /// The whole run configuration, as given.
    pub config: TrainConfig,
    pub quern_version: String,
    /// A LoRA run's adapters: their config, the base model and its weights hash. The
    /// weights file then holds only the adapters (`blocks.{i}.attn.q.lora_a`, ...), and
    /// loading the checkpoint as a model merges them into that base
    /// (`quern_models::lora::merged`). Absent for a run that trains every weight.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lora: Option<quern_models::lora::AdapterRecord>,
    /// The evaluation with the lowest validation loss so far, and how many evaluations
    /// since then did not improve on it (model selection and early stopping resume with them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub best: Option<Best>,
    #[serde(default)]
    pub evals_since_best: u64,
}

fn one() -> usize {
    1
}

fn is_one(n: &usize) -> bool {
    *n == 1
}

/// The best evaluation of a run.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Best {
    pub step: u64,
    pub val_loss: f64,
}

/// Where a run keeps its best weights.
pub fn best_dir(out_dir: &Path) -> PathBuf {
    out_dir.join("best")
}

/// Writes the model's weights and state (no optimizer state) to `out_dir/best`, atomically:
/// the previous best stays whole until the new one is complete.
pub fn save_best(out_dir: &Path, state: &CheckpointState, params: &ParamStore) -> Result<PathBuf> {
    let dest = best_dir(out_dir);
    let tmp = out_dir.join(format!(".best.tmp-{}", std::process::id()));
    write_dir(&tmp, state, params, None)?;
    // Old best out of the way first (a rename cannot replace a non-empty directory); a crash
    // in between leaves no best/ and the previous one in .best.old, never a half-written one.
    let old = out_dir.join(".best.old");
    if old.exists() {
        fs::remove_dir_all(&old).at(&old)?;
    }
    if dest.exists() {
        fs::rename(&dest, &old).at(&dest)?;
    }
    fs::rename(&tmp, &dest).at(&dest)?;
    quern_core::shard::sync_dir(out_dir)?;
    if old.exists() {
        fs::remove_dir_all(&old).at(&old)?;
    }
    Ok(dest)
}

/// The checkpoints directory of a run.
pub fn checkpoints_dir(out_dir: &Path) -> PathBuf {
    out_dir.join("checkpoints")
}

/// The directory of the checkpoint of `step` under `root` (`checkpoints_dir`).
pub fn step_dir(root: &Path, step: u64) -> PathBuf {
    root.join(format!("step-{step:08}"))
}

/// Committed checkpoints, oldest first.
pub fn list(out_dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let root = checkpoints_dir(out_dir);
    if !root.exists() {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for e in fs::read_dir(&root).at(&root)? {
        let e = e.at(&root)?;
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(step) = name
            .strip_prefix("step-")
            .and_then(|s| s.parse::<u64>().ok())
        {
            if e.path().join("state.json").exists() {
                out.push((step, e.path()));
            }
        }
    }
    out.sort();
    Ok(out)
}

fn write_tensors(path: &Path, tensors: &[(String, Tensor)]) -> Result<()> {
    let cpu: Vec<(String, Tensor)> = tensors
        .iter()
        .map(|(n, t)| {
            (
                n.clone(),
                t.detach().to_device(tch::Device::Cpu).contiguous(),
            )
        })
        .collect();
    Tensor::write_safetensors(&cpu, path)
        .map_err(|e| Error::usage(format!("writing {}: {e}", path.display())))?;
    sync_file(path)
}

/// Fills a fresh directory `tmp` with a checkpoint's files, each synced: the weights, the
/// optimizer state when given, the data's tokenizer, and `state.json`. The caller renames
/// it into place.
fn write_dir(
    tmp: &Path,
    state: &CheckpointState,
    params: &ParamStore,
    optimizer: Option<&[(String, Tensor)]>,
) -> Result<()> {
    if tmp.exists() {
        fs::remove_dir_all(tmp).at(tmp)?;
    }
    fs::create_dir_all(tmp).at(tmp)?;
    let weights: Vec<(String, Tensor)> = params
        .params
        .iter()
        .map(|p| (p.name.clone(), p.tensor.shallow_clone()))
        .collect();
    write_tensors(&tmp.join("model.safetensors"), &weights)?;
    if let Some(optimizer) = optimizer {
        write_tensors(&tmp.join("optimizer.safetensors"), optimizer)?;
    }
    // The tokenizer travels with the weights, so a checkpoint generates and imports alone.
    let tok = state.config.data.train.join("tokenizer.json");
    if tok.exists() {
        let dest_tok = tmp.join("tokenizer.json");
        fs::copy(&tok, &dest_tok).at(&tok)?;
        sync_file(&dest_tok)?;
    }
    let state_path = tmp.join("state.json");
    fs::write(&state_path, serde_json::to_vec_pretty(state)?).at(&state_path)?;
    sync_file(&state_path)?;
    quern_core::shard::sync_dir(tmp)
}

/// Writes a checkpoint atomically and keeps the newest `keep`. Returns its directory.
pub fn save(
    out_dir: &Path,
    state: &CheckpointState,
    params: &ParamStore,
    optimizer: &[(String, Tensor)],
    keep: usize,
) -> Result<PathBuf> {
    let root = checkpoints_dir(out_dir);
    fs::create_dir_all(&root).at(&root)?;
    let dest = step_dir(&root, state.step);
    let tmp = root.join(format!(
        ".step-{:08}.tmp-{}",
        state.step,
        std::process::id()
    ));
    write_dir(&tmp, state, params, Some(optimizer))?;
    if dest.exists() {
        fs::remove_dir_all(&dest).at(&dest)?;
    }
    fs::rename(&tmp, &dest).at(&dest)?;
    quern_core::shard::sync_dir(&root)?;
    let all = list(out_dir)?;
    if all.len() > keep {
        for (_, old) in &all[..all.len() - keep] {
            fs::remove_dir_all(old).at(old)?;
        }
    }
    Ok(dest)
}

/// A checkpoint read back.
#[derive(Debug)]
pub struct Loaded {
    pub dir: PathBuf,
    pub state: CheckpointState,
    pub weights: HashMap<String, Tensor>,
    pub optimizer: HashMap<String, Tensor>,
}

impl Loaded {
    /// A tensor by name from `map`, or an error naming the file.
    pub fn tensor(map: &HashMap<String, Tensor>, file: &Path, name: &str) -> Result<Tensor> {
        map.get(name).map(|t| t.shallow_clone()).ok_or_else(|| {
            Error::bad_input(
                Place::file(file),
                format!("tensor `{name}` missing: checkpoint from a different model?"),
            )
        })
    }
}

/// Reads a checkpoint directory.
pub fn load(dir: &Path) -> Result<Loaded> {
    let state_path = dir.join("state.json");
    let text = fs::read_to_string(&state_path).at(&state_path)?;
    let state: CheckpointState = serde_json::from_str(&text).map_err(|e| {
        Error::bad_input(
            Place::file(&state_path).with_line(e.line() as u64),
            format!("not a quern checkpoint state: {e}"),
        )
    })?;
    Ok(Loaded {
        dir: dir.to_path_buf(),
        weights: quern_models::store::read_safetensors(&dir.join("model.safetensors"))?,
        optimizer: quern_models::store::read_safetensors(&dir.join("optimizer.safetensors"))?,
        state,
    })
}

/// The newest committed checkpoint of a run, if any.
pub fn latest(out_dir: &Path) -> Result<Option<PathBuf>> {
    Ok(list(out_dir)?.pop().map(|(_, p)| p))
}

/// Copies saved weights into the model's parameters, checking names and shapes.
pub fn restore_weights(
    params: &mut ParamStore,
    weights: &HashMap<String, Tensor>,
    file: &Path,
) -> Result<()> {
    let _g = tch::no_grad_guard();
    for p in params.params.iter_mut() {
        let t = Loaded::tensor(weights, file, &p.name)?;
        if t.size() != p.tensor.size() {
            return Err(Error::bad_input(
                Place::file(file),
                format!(
                    "tensor `{}` has shape {:?}, the model expects {:?}",
                    p.name,
                    t.size(),
                    p.tensor.size()
                ),
            ));
        }
        p.tensor.copy_(&t);
    }
    Ok(())
}
