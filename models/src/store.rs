//! quern model directories, and loading a model from any source quern reads.
//!
//! A **quern model directory** is what `quern import` writes and what every model command
//! reads:
//!
//! ```text
//! model.json         ModelMeta: format, the ModelConfig, special token ids, chat template, source
//! model.safetensors  the weights under quern's names (see `transformer`), fp32
//! tokenizer.json     the tokenizer (Hugging Face format), when the model has one
//! ```
//!
//! [`load`] (and [`load_weights`], without building the model) accept, by what the path
//! holds:
//!
//! | path | read as |
//! |---|---|
//! | a directory with `model.json` | a quern model directory |
//! | a directory with `state.json` and `model.safetensors` | a training checkpoint (`checkpoints/step-N/`); a LoRA checkpoint's adapters merged into the base model it records ([`crate::lora`]) |
//! | a directory with `checkpoints/` | a training run: its newest checkpoint |
//! | a directory with `config.json` and `model.safetensors` | a Hugging Face model ([`crate::hf`]) |
//! | a file starting with the `GGUF` magic | a GGUF file ([`crate::gguf`], Llama architecture) |
//!
//! [`save`] writes a model directory atomically: into a hidden temporary directory
//! (`.NAME.tmp-PID`), every file fsynced, then renamed into place, so an interrupted import
//! or merge leaves nothing at the destination; the next save of that name removes the
//! temporary directory a killed writer left.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};

use quern_core::error::{IoContext, Place};
use quern_core::{Error, Result};
use serde::{Deserialize, Serialize};
use tch::{Device, Tensor};
use tokenizers::Tokenizer;

use crate::compress::{QuantRecord, QuantTensor};
use crate::config::ModelConfig;
use crate::transformer::Transformer;

/// File name of a model directory's metadata.
pub const MODEL_JSON: &str = "model.json";
/// File name of the weights in model and checkpoint directories.
pub const WEIGHTS: &str = "model.safetensors";
/// File name of the tokenizer beside the weights.
pub const TOKENIZER: &str = "tokenizer.json";
/// The `format` field of `model.json`.
pub const FORMAT: &str = "quern-model";

/// Special token ids a model was trained with, for generation and templates.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Special {
    /// Beginning of sequence.
    pub bos: Option<u32>,
    /// End of sequence / end of turn: generation stops at any of these.
    pub eos: Vec<u32>,
    /// Padding (generation pads on the left with it; any id works, it is masked).
    pub pad: Option<u32>,
    /// Whether a prompt starts with `bos` (when the chat template does not add it).
    pub add_bos: bool,
}

/// `model.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelMeta {
    /// Always `quern-model`.
    pub format: String,
    /// Layout version, 1.
    pub version: u32,
    /// The shape (seq_len and vocab_size set).
    pub config: ModelConfig,
    /// Special token ids.
    #[serde(default)]
    pub special: Special,
    /// Jinja chat template (Hugging Face conventions), when the model has one.
    #[serde(default)]
    pub chat_template: Option<String>,
    /// Where the weights came from (a file and its kind), for the record.
    #[serde(default)]
    pub source: Option<String>,
    /// The quern that wrote it.
    #[serde(default)]
    pub quern_version: String,
    /// Quantized block matrices (`quern compress`): stored as codes and scales, dequantized
    /// when loaded ([`crate::compress`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quant: Option<QuantRecord>,
}

impl ModelMeta {
    /// Metadata for a model of `config`, with nothing else known.
    pub fn new(config: ModelConfig) -> Self {
        ModelMeta {
            format: FORMAT.into(),
            version: 1,
            config,
            special: Special::default(),
            chat_template: None,
            source: None,
            quern_version: env!("CARGO_PKG_VERSION").into(),
            quant: None,
        }
    }
}

/// What a path given as a model turned out to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    QuernModel,
    Checkpoint,
    Run,
    HuggingFace,
    Gguf,
}

impl SourceKind {
    pub fn name(self) -> &'static str {
        match self {
            SourceKind::QuernModel => "quern model",
            SourceKind::Checkpoint => "quern checkpoint",
            SourceKind::Run => "quern run",
            SourceKind::HuggingFace => "Hugging Face model",
            SourceKind::Gguf => "GGUF file",
        }
    }
}

/// Decides what `path` holds (see the module docs), or says what was expected.
pub fn detect(path: &Path) -> Result<SourceKind> {
    if path.is_file() {
        let mut magic = [0u8; 4];
        use std::io::Read;
        let n = fs::File::open(path)
            .and_then(|mut f| f.read(&mut magic))
            .at(path)?;
        if n == 4 && &magic == b"GGUF" {
            return Ok(SourceKind::Gguf);
        }
        return Err(Error::bad_input(
            Place::file(path),
            "not a GGUF file (no GGUF magic) and not a directory: a model is a quern model \
             directory, a checkpoint, a run directory, a Hugging Face directory or a GGUF file",
        ));
    }
    if !path.is_dir() {
        return Err(Error::bad_input(
            Place::file(path),
            "no such file or directory",
        ));
    }
    let has = |f: &str| path.join(f).exists();
    Ok(if has(MODEL_JSON) {
        SourceKind::QuernModel
    } else if has("state.json") && has(WEIGHTS) {
        SourceKind::Checkpoint
    } else if path.join("checkpoints").is_dir() {
        SourceKind::Run
    } else if has("config.json") && has(WEIGHTS) {
        SourceKind::HuggingFace
    } else {
        return Err(Error::bad_input(
            Place::file(path),
            "not a model: expected model.json (quern model), state.json + model.safetensors \
             (checkpoint), checkpoints/ (run), or config.json + model.safetensors (Hugging Face)",
        ));
    })
}

/// Weights and metadata read from any source, before a model is built.
#[derive(Debug)]
pub struct Weights {
    pub kind: SourceKind,
    /// The file or directory the weights were read from (a run resolves to its checkpoint).
    pub path: PathBuf,
    pub meta: ModelMeta,
    pub tensors: HashMap<String, Tensor>,
    /// `tokenizer.json` text, when the source has a tokenizer.
    pub tokenizer_json: Option<String>,
    /// The quantized matrices of a compressed model (their dequantized weights are in
    /// `tensors`), for low-bit inference.
    pub quant: HashMap<String, QuantTensor>,
}

/// Reads weights and metadata from any source (see the module docs).
pub fn load_weights(path: &Path) -> Result<Weights> {
    let kind = detect(path)?;
    match kind {
        SourceKind::Gguf => {
            let imp = crate::gguf::import_llama(path)?;
            let mut meta = ModelMeta::new(imp.config);
            meta.special = Special {
                bos: imp.bos_id,
                eos: imp.eos_id.into_iter().collect(),
                pad: imp.pad_id,
                add_bos: imp.add_bos,
            };
            meta.chat_template = imp.chat_template;
            meta.source = Some(format!("gguf:{}", path.display()));
            Ok(Weights {
                kind,
                path: path.to_path_buf(),
                meta,
                tensors: imp.weights.into_iter().collect(),
                tokenizer_json: imp.tokenizer_json,
                quant: HashMap::new(),
            })
        }
        SourceKind::HuggingFace => crate::hf::load_weights(path),
        SourceKind::QuernModel => quern_model_weights(path, kind),
        SourceKind::Checkpoint => checkpoint_weights(path, kind),
        SourceKind::Run => {
            // A checkpoint that is also a model directory (`quern rl` writes the policy's
            // model.json with its special ids and chat template) is read as one.
            let ck = newest_checkpoint(path)?;
            if ck.join(MODEL_JSON).exists() {
                quern_model_weights(&ck, kind)
            } else {
                checkpoint_weights(&ck, kind)
            }
        }
    }
}

/// A quern model directory: `model.json`, the weights, the tokenizer.
fn quern_model_weights(path: &Path, kind: SourceKind) -> Result<Weights> {
    let meta_path = path.join(MODEL_JSON);
    let text = fs::read_to_string(&meta_path).at(&meta_path)?;
    let meta: ModelMeta = serde_json::from_str(&text).map_err(|e| {
        Error::bad_input(
            Place::file(&meta_path).with_line(e.line() as u64),
            format!("not a quern model.json: {e}"),
        )
    })?;
    if meta.format != FORMAT || meta.version != 1 {
        return Err(Error::bad_input(
            Place::file(&meta_path),
            format!(
                "format `{}` version {} is not `{FORMAT}` version 1",
                meta.format, meta.version
            ),
        ));
    }
    meta.config.validate().map_err(|e| in_file(&meta_path, e))?;
    let wpath = path.join(WEIGHTS);
    let mut tensors = read_safetensors(&wpath)?;
    let mut quant = HashMap::new();
    if let Some(rec) = &meta.quant {
        for name in &rec.tensors {
            let (n, k) = crate::compress::weight_shape(&meta.config, name).ok_or_else(|| {
                Error::bad_input(
                    Place::file(&meta_path),
                    format!("quant.tensors: `{name}` is not a block matrix of this model"),
                )
            })?;
            let q = QuantTensor::take_stored(&mut tensors, name, rec.scheme, n, k)
                .map_err(|m| Error::bad_input(Place::file(&wpath), m))?;
            tensors.insert(name.clone(), q.dequantize());
            quant.insert(name.clone(), q);
        }
    }
    Ok(Weights {
        kind,
        path: path.to_path_buf(),
        tensors,
        tokenizer_json: read_optional(&path.join(TOKENIZER))?,
        meta,
        quant,
    })
}

/// The newest committed checkpoint (`checkpoints/step-N/` with a `state.json`) of a run.
pub fn newest_checkpoint(run: &Path) -> Result<PathBuf> {
    let root = run.join("checkpoints");
    let mut steps: Vec<PathBuf> = fs::read_dir(&root)
        .at(&root)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.join("state.json").exists()
                && p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("step-"))
        })
        .collect();
    steps.sort();
    steps
        .pop()
        .ok_or_else(|| Error::bad_input(Place::file(&root), "the run has no committed checkpoint"))
}

fn in_file(file: &Path, e: Error) -> Error {
    match e {
        Error::BadConfig { key, message } => {
            Error::bad_input(Place::file(file), format!("{key}: {message}"))
        }
        e => e,
    }
}

/// A training checkpoint: `state.json` holds the model's resolved config under `model`. A
/// LoRA checkpoint (a `lora` record in `state.json`) holds only adapters: they are merged
/// into the base model it records ([`crate::lora::merged`]).
fn checkpoint_weights(dir: &Path, kind: SourceKind) -> Result<Weights> {
    let state_path = dir.join("state.json");
    let text = fs::read_to_string(&state_path).at(&state_path)?;
    let value: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
        Error::bad_input(
            Place::file(&state_path).with_line(e.line() as u64),
            format!("not a quern checkpoint state: {e}"),
        )
    })?;
    if let Some(record) = crate::lora::record_of(&value, &state_path)? {
        let mut w = crate::lora::merged(dir, &record, None)?;
        w.kind = kind;
        return Ok(w);
    }
    let config: ModelConfig = value
        .get("model")
        .ok_or_else(|| {
            Error::bad_input(
                Place::file(&state_path),
                "no `model` config in the checkpoint state",
            )
        })
        .and_then(|m| {
            serde_json::from_value(m.clone())
                .map_err(|e| Error::bad_input(Place::file(&state_path), format!("`model`: {e}")))
        })?;
    config.validate().map_err(|e| in_file(&state_path, e))?;
    let tokenizer_json = read_optional(&dir.join(TOKENIZER))?;
    let mut meta = ModelMeta::new(config);
    if let Some(json) = &tokenizer_json {
        meta.special = special_from_tokenizer(json)?;
    }
    meta.source = Some(format!("checkpoint:{}", dir.display()));
    Ok(Weights {
        kind,
        path: dir.to_path_buf(),
        tensors: read_safetensors(&dir.join(WEIGHTS))?,
        tokenizer_json,
        meta,
        quant: HashMap::new(),
    })
}

/// Special ids of a quern-trained tokenizer, by the usual spellings (`<|endoftext|>` ends a
/// document; quern's packed rows start each document after it, with no BOS).
pub fn special_from_tokenizer(json: &str) -> Result<Special> {
    let tok = Tokenizer::from_bytes(json.as_bytes())
        .map_err(|e| Error::usage(format!("not a tokenizer.json: {e}")))?;
    let ids = quern_tokenize::tokenizer::SpecialIds::find(
        &tok,
        &quern_tokenize::tokenizer::SpecialNames::default(),
    )?;
    Ok(Special {
        bos: ids.bos,
        eos: ids.eos.into_iter().collect(),
        pad: ids.pad,
        add_bos: false,
    })
}

fn read_optional(path: &Path) -> Result<Option<String>> {
    if path.exists() {
        Ok(Some(fs::read_to_string(path).at(path)?))
    } else {
        Ok(None)
    }
}

/// Reads every tensor of a safetensors file (errors name the file).
pub fn read_safetensors(path: &Path) -> Result<HashMap<String, Tensor>> {
    if !path.exists() {
        return Err(Error::bad_input(Place::file(path), "no such file"));
    }
    let list = Tensor::read_safetensors(path).map_err(|e| {
        Error::bad_input(
            Place::file(path),
            format!("not a readable safetensors file: {e}"),
        )
    })?;
    Ok(list.into_iter().collect())
}

/// A model ready to run, with what it needs to read and write text.
#[derive(Debug)]
pub struct Loaded {
    pub model: Transformer,
    /// The quantized matrices of a compressed model ([`Transformer::use_quantized`]).
    pub quant: HashMap<String, QuantTensor>,
    pub meta: ModelMeta,
    pub tokenizer: Option<Tokenizer>,
    pub tokenizer_json: Option<String>,
    pub kind: SourceKind,
    pub path: PathBuf,
}

/// Loads a model from any source onto `device` (see the module docs).
pub fn load(path: &Path, device: Device) -> Result<Loaded> {
    let w = load_weights(path)?;
    let file = match w.kind {
        SourceKind::Gguf => w.path.clone(),
        _ => w.path.join(WEIGHTS),
    };
    let model = Transformer::from_weights(&w.meta.config, device, &w.tensors, &file)?;
    let tokenizer = match &w.tokenizer_json {
        Some(j) => Some(Tokenizer::from_bytes(j.as_bytes()).map_err(|e| {
            Error::bad_input(
                Place::file(w.path.join(TOKENIZER)),
                format!("not a readable tokenizer.json: {e}"),
            )
        })?),
        None => None,
    };
    Ok(Loaded {
        model,
        quant: w.quant,
        meta: w.meta,
        tokenizer,
        tokenizer_json: w.tokenizer_json,
        kind: w.kind,
        path: w.path,
    })
}

/// Writes a quern model directory atomically. An existing `dir` is refused unless `force`
/// (then it is replaced whole, after the new one is complete).
pub fn save(
    dir: &Path,
    meta: &ModelMeta,
    weights: &[(String, Tensor)],
    tokenizer_json: Option<&str>,
    force: bool,
) -> Result<()> {
    save_with(dir, meta, weights, tokenizer_json, force, &[])
}

/// [`save`], with more files (name, bytes) written into the directory beside the model's.
pub fn save_with(
    dir: &Path,
    meta: &ModelMeta,
    weights: &[(String, Tensor)],
    tokenizer_json: Option<&str>,
    force: bool,
    extra: &[(&str, &[u8])],
) -> Result<()> {
    write_dir_atomically(dir, force, |tmp| {
        for (name, bytes) in extra {
            let p = tmp.join(name);
            fs::write(&p, bytes).at(&p)?;
            sync_file(&p)?;
        }
        let cpu: Vec<(String, Tensor)> = weights
            .iter()
            .map(|(n, t)| (n.clone(), t.detach().to_device(Device::Cpu).contiguous()))
            .collect();
        let wpath = tmp.join(WEIGHTS);
        Tensor::write_safetensors(&cpu, &wpath)
            .map_err(|e| Error::usage(format!("writing {}: {e}", wpath.display())))?;
        sync_file(&wpath)?;
        let mpath = tmp.join(MODEL_JSON);
        fs::write(&mpath, serde_json::to_vec_pretty(meta)?).at(&mpath)?;
        sync_file(&mpath)?;
        if let Some(j) = tokenizer_json {
            let tpath = tmp.join(TOKENIZER);
            fs::write(&tpath, j).at(&tpath)?;
            sync_file(&tpath)?;
        }
        Ok(())
    })
}

/// Writes the directory `dir` atomically: `fill` writes (and fsyncs) its files into a hidden
/// temporary directory beside it (`.NAME.tmp-PID`), which is then renamed into place, so an
/// interrupted writer leaves nothing at `dir`. An existing `dir` is refused unless `force`
/// (then it is replaced whole, after the new one is complete); temporary directories that
/// killed writers of the same name left are removed first.
pub fn write_dir_atomically(
    dir: &Path,
    force: bool,
    fill: impl FnOnce(&Path) -> Result<()>,
) -> Result<()> {
    if dir.exists() && !force {
        return Err(Error::usage(format!(
            "{} already exists; pass --force to replace it",
            dir.display()
        )));
    }
    let parent = dir
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs::create_dir_all(parent).at(parent)?;
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".into());
    let tmp = parent.join(format!(".{name}.tmp-{}", std::process::id()));
    if tmp.exists() {
        fs::remove_dir_all(&tmp).at(&tmp)?;
    }
    remove_stale_temporaries(parent, &name)?;
    fs::create_dir_all(&tmp).at(&tmp)?;
    let result = (|| {
        fill(&tmp)?;
        quern_core::shard::sync_dir(&tmp)?;
        // Test hook (debug builds only): die with every file written but not yet in place.
        #[cfg(debug_assertions)]
        if std::env::var("QUERN_TEST_FAULT").as_deref() == Ok("model_before_rename") {
            std::process::abort();
        }
        if dir.exists() {
            fs::remove_dir_all(dir).at(dir)?;
        }
        fs::rename(&tmp, dir).at(dir)?;
        quern_core::shard::sync_dir(parent)
    })();
    if result.is_err() {
        let _ = fs::remove_dir_all(&tmp);
    }
    result
}

/// Removes the temporary directories (`.NAME.tmp-PID`) that writers of `NAME` killed before
/// their rename left in `parent`: those whose process is gone. A live writer's is kept.
fn remove_stale_temporaries(parent: &Path, name: &str) -> Result<()> {
    let prefix = format!(".{name}.tmp-");
    for e in fs::read_dir(parent).at(parent)? {
        let e = e.at(parent)?;
        let file = e.file_name();
        let Some(pid) = file
            .to_str()
            .and_then(|f| f.strip_prefix(&prefix))
            .and_then(|p| p.parse::<libc::pid_t>().ok())
        else {
            continue;
        };
        // SAFETY: kill with signal 0 sends nothing; it only asks whether `pid` exists.
        let gone = pid > 0
            && unsafe { libc::kill(pid, 0) } != 0
            && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
        if gone && e.path().is_dir() {
            fs::remove_dir_all(e.path()).at(e.path())?;
        }
    }
    Ok(())
}

/// fsyncs a written file (errors name it). Checkpoints use it too.
pub fn sync_file(path: &Path) -> Result<()> {
    fs::File::open(path).and_then(|f| f.sync_all()).at(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_saved_model_loads_back_the_same() {
        let _rng = crate::torch_rng_lock();
        let dir = tempfile::tempdir().unwrap();
        let cfg = ModelConfig::llama()
            .with_kv_heads(2)
            .with_seq_len(16)
            .with_vocab_size(30);
        tch::manual_seed(7);
        let m = Transformer::new(&cfg, Device::Cpu);
        let mut meta = ModelMeta::new(cfg.clone());
        meta.special.eos = vec![3];
        meta.chat_template = Some("{{ messages }}".into());
        let out = dir.path().join("m");
        save(&out, &meta, &m.params().named(), None, false).unwrap();
        assert_eq!(detect(&out).unwrap(), SourceKind::QuernModel);
        let back = load(&out, Device::Cpu).unwrap();
        assert_eq!(back.meta, meta);
        let ids = Tensor::from_slice(&[1i64, 2, 3]).view([1, 3]);
        let d = (m.forward(&ids, true, false) - back.model.forward(&ids, true, false))
            .abs()
            .max()
            .double_value(&[]);
        assert_eq!(d, 0.0);
        // Refused without force; nothing left behind either way.
        let err = save(&out, &meta, &m.params().named(), None, false).unwrap_err();
        assert!(err.to_string().contains("--force"), "{err}");
        save(&out, &meta, &m.params().named(), None, true).unwrap();
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec!["m".to_string()]);
    }

    #[test]
    fn what_is_not_a_model_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("x.bin");
        fs::write(&f, b"nope").unwrap();
        let err = detect(&f).unwrap_err().to_string();
        assert!(err.contains("x.bin") && err.contains("GGUF"), "{err}");
        let err = detect(dir.path()).unwrap_err().to_string();
        assert!(err.contains("model.json"), "{err}");
        let err = detect(&dir.path().join("missing")).unwrap_err().to_string();
        assert!(err.contains("missing"), "{err}");
    }
}
