//! Hugging Face directories out (`quern export --format hf`): a model any quern command
//! reads becomes a directory that `transformers` loads with `AutoModelFor...`, whose logits
//! equal quern's.
//!
//! What is written:
//!
//! | file | holds |
//! |---|---|
//! | `config.json` | the architecture (`architectures`, `model_type`) and its shape, special ids |
//! | `model.safetensors` | the weights under Hugging Face's names, `{"format": "pt"}` metadata, every tensor once (a tied output projection is left out and `tie_word_embeddings` says so) |
//! | `tokenizer.json` | the model's tokenizer, as quern has it |
//! | `tokenizer_config.json` | the special tokens (`bos_token`, `eos_token`, `pad_token`, BERT's `cls/sep/mask/unk`), `model_max_length`, and the chat template |
//! | `generation_config.json` | `bos_token_id`, `eos_token_id` (a list when the model stops at several), `pad_token_id` |
//!
//! The family decides the architecture, and a config no architecture can hold is refused
//! with the key that stands in the way:
//!
//! | quern model | Hugging Face class |
//! |---|---|
//! | rotary, RMSNorm, SwiGLU, no biases (Llama-like) | `LlamaForCausalLM`; with a `last`-pooling head without pooler, `LlamaForSequenceClassification` (`score`) |
//! | learned positions, LayerNorm, pre-norm, GELU (GPT-2-like) | `GPT2LMHeadModel` (`activation_function` `gelu_new` for the tanh GELU, `gelu` for erf) |
//! | learned positions, LayerNorm, post-norm (BERT-like) | `BertModel`; `BertForMaskedLM` with the MLM head; `BertForSequenceClassification` with a `first`-pooling head with pooler; `BertForPreTraining` with both (the NSP head) |
//!
//! Names are the inverse of [`crate::hf`]'s import: q, k and v are split out of quern's
//! `attn.qkv` (their rotary layout is already Hugging Face's half rotation, so nothing is
//! permuted); GPT-2's `Conv1D` weights are stored `[in, out]`, so quern's `[out, in]`
//! matrices are transposed, and its fused `c_attn` keeps quern's q, k, v row order; GPT-2's
//! causal-mask buffers (`attn.bias`) are not weights and are not written. A GPT-2-like or
//! BERT-like model trained without biases (`bias = false`) gets zero biases, which
//! computes the same function.
//!
//! The directory is written atomically ([`crate::store::write_dir_atomically`]): an
//! interrupted export leaves nothing at the destination.

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::path::Path;

use quern_core::error::IoContext;
use quern_core::{Error, Result};
use serde_json::{json, Map, Value};
use tch::{Device, Kind, Tensor};

use crate::config::{Mlp, ModelConfig, Norm, Positions};
use crate::head::{HeadConfig, Pooling};
use crate::store::{self, ModelMeta, TOKENIZER, WEIGHTS};

/// The floating-point type of the exported weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dtype {
    F32,
    F16,
    Bf16,
}

impl Dtype {
    fn kind(self) -> Kind {
        match self {
            Dtype::F32 => Kind::Float,
            Dtype::F16 => Kind::Half,
            Dtype::Bf16 => Kind::BFloat16,
        }
    }
    /// The safetensors name.
    fn safetensors(self) -> &'static str {
        match self {
            Dtype::F32 => "F32",
            Dtype::F16 => "F16",
            Dtype::Bf16 => "BF16",
        }
    }
    /// `torch_dtype` in config.json.
    fn torch(self) -> &'static str {
        match self {
            Dtype::F32 => "float32",
            Dtype::F16 => "float16",
            Dtype::Bf16 => "bfloat16",
        }
    }
    fn bytes(self) -> usize {
        match self {
            Dtype::F32 => 4,
            Dtype::F16 | Dtype::Bf16 => 2,
        }
    }
}

/// What an export wrote.
#[derive(Debug, Clone)]
pub struct Exported {
    /// The Hugging Face class (`LlamaForCausalLM`, ...).
    pub architecture: &'static str,
    /// Tensors in `model.safetensors`.
    pub tensors: usize,
    /// Size of `model.safetensors` in bytes.
    pub weights_bytes: u64,
    /// The files written, by name.
    pub files: Vec<&'static str>,
}

/// The Hugging Face family a quern config maps to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Family {
    Llama,
    Gpt2,
    Bert,
}

fn refuse(key: &str, msg: impl Into<String>) -> Error {
    Error::bad_config(format!("model.{key}"), msg)
}

/// The family of `c`, or the key that keeps it from every Hugging Face architecture.
pub(crate) fn family(c: &ModelConfig) -> Result<Family> {
    if c.post_norm {
        if c.positions != Positions::Learned {
            return Err(refuse(
                "positions",
                "a post-norm (BERT-like) model exports as BERT, which has learned positions",
            ));
        }
        if c.norm != Norm::LayerNorm {
            return Err(refuse("norm", "BERT uses layernorm"));
        }
        if c.mlp == Mlp::SwiGlu {
            return Err(refuse("mlp", "BERT's MLP is gelu_erf or gelu, not swiglu"));
        }
        if c.kv_heads() != c.heads {
            return Err(refuse(
                "kv_heads",
                "BERT has no grouped-query attention: kv_heads must equal heads",
            ));
        }
        return Ok(Family::Bert);
    }
    if c.type_vocab_size > 0 {
        return Err(refuse(
            "type_vocab_size",
            "token types exist only in post-norm (BERT-like) models on the Hugging Face side",
        ));
    }
    if c.has_mlm_head() {
        return Err(refuse(
            "mlm_head",
            "the MLM head is BERT's; a decoder with one has no Hugging Face class",
        ));
    }
    match c.positions {
        Positions::Rotary => {
            if c.norm != Norm::RmsNorm {
                return Err(refuse(
                    "norm",
                    "a rotary model exports as Llama, which uses rmsnorm",
                ));
            }
            if c.mlp != Mlp::SwiGlu {
                return Err(refuse(
                    "mlp",
                    "a rotary model exports as Llama, whose MLP is swiglu",
                ));
            }
            if c.bias {
                return Err(refuse(
                    "bias",
                    "a rotary model exports as Llama, which has no biases",
                ));
            }
            Ok(Family::Llama)
        }
        Positions::Learned => {
            if c.norm != Norm::LayerNorm {
                return Err(refuse(
                    "norm",
                    "a learned-position decoder exports as GPT-2, which uses layernorm",
                ));
            }
            if c.mlp == Mlp::SwiGlu {
                return Err(refuse(
                    "mlp",
                    "a learned-position decoder exports as GPT-2, whose MLP is gelu or gelu_erf",
                ));
            }
            if c.kv_heads() != c.heads {
                return Err(refuse(
                    "kv_heads",
                    "GPT-2 has no grouped-query attention: kv_heads must equal heads",
                ));
            }
            Ok(Family::Gpt2)
        }
    }
}

/// The named weights being exported, looked up by quern name.
pub(crate) struct Source<'a> {
    tensors: HashMap<&'a str, &'a Tensor>,
    pub(crate) cfg: &'a ModelConfig,
}

impl<'a> Source<'a> {
    /// The model's `weights` by name, with its config.
    pub(crate) fn new(weights: &'a [(String, Tensor)], cfg: &'a ModelConfig) -> Self {
        Source {
            tensors: weights.iter().map(|(n, t)| (n.as_str(), t)).collect(),
            cfg,
        }
    }
    /// A weight as an f32 CPU tensor.
    pub(crate) fn get(&self, name: &str) -> Result<Tensor> {
        self.tensors
            .get(name)
            .map(|t| t.detach().to_device(Device::Cpu).to_kind(Kind::Float))
            .ok_or_else(|| Error::bug(format!("export: the model has no tensor `{name}`")))
    }
    /// A bias, or zeros of `n` when the model has no biases.
    pub(crate) fn bias(&self, name: &str, n: usize) -> Result<Tensor> {
        if self.tensors.contains_key(name) {
            self.get(name)
        } else {
            Ok(Tensor::zeros([n as i64], (Kind::Float, Device::Cpu)))
        }
    }
    /// q, k and v split out of block `i`'s fused `attn.qkv.<what>`.
    pub(crate) fn qkv(&self, i: usize, what: &str) -> Result<Option<[Tensor; 3]>> {
        let name = format!("blocks.{i}.attn.qkv.{what}");
        if what == "bias" && !self.tensors.contains_key(name.as_str()) {
            return Ok(None);
        }
        let t = self.get(&name)?;
        let hd = self.cfg.head_dim() as i64;
        let q = self.cfg.heads as i64 * hd;
        let kv = self.cfg.kv_heads() as i64 * hd;
        let parts = t.split_with_sizes([q, kv, kv], 0);
        let [a, b, c]: [Tensor; 3] = parts
            .try_into()
            .map_err(|_| Error::bug("export: qkv did not split in three"))?;
        Ok(Some([a, b, c]))
    }
}

/// Writes a Hugging Face directory for the model `meta` describes, with `weights` under
/// quern's names (checked by building the model first: see `quern export`), to `out`.
/// `source` names the model in messages.
pub fn export(
    meta: &ModelMeta,
    weights: &[(String, Tensor)],
    tokenizer_json: Option<&str>,
    out: &Path,
    dtype: Dtype,
    force: bool,
) -> Result<Exported> {
    let cfg = &meta.config;
    let fam = family(cfg)?;
    let src = Source::new(weights, cfg);
    let (architecture, mut tensors, mut config) = match fam {
        Family::Llama => llama(&src)?,
        Family::Gpt2 => gpt2(&src)?,
        Family::Bert => bert(&src)?,
    };
    // Special ids, shared by config.json and generation_config.json.
    let sp = &meta.special;
    let eos = match sp.eos.as_slice() {
        [] => Value::Null,
        [one] => json!(one),
        many => json!(many),
    };
    let obj = config
        .as_object_mut()
        .ok_or_else(|| Error::bug("export: config is not an object"))?;
    obj.insert("architectures".into(), json!([architecture]));
    obj.insert("torch_dtype".into(), json!(dtype.torch()));
    obj.insert("initializer_range".into(), json!(cfg.init_std));
    obj.insert("bos_token_id".into(), json!(sp.bos));
    obj.insert("eos_token_id".into(), eos.clone());
    obj.insert("pad_token_id".into(), json!(sp.pad));
    if let Some(h) = &cfg.head {
        labels(obj, h);
    }
    obj.insert("quern_version".into(), json!(env!("CARGO_PKG_VERSION")));
    let generation = json!({
        "bos_token_id": sp.bos,
        "eos_token_id": eos,
        "pad_token_id": sp.pad,
    });
    let tok_config = match tokenizer_json {
        Some(j) => Some(tokenizer_config(meta, j, fam)?),
        None => None,
    };
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    let n_tensors = tensors.len();
    let mut weights_bytes = 0;
    let mut files = vec!["config.json", WEIGHTS];
    if tokenizer_json.is_some() {
        files.extend([TOKENIZER, "tokenizer_config.json"]);
    }
    if fam != Family::Bert {
        files.push("generation_config.json");
    }
    store::write_dir_atomically(out, force, |tmp| {
        let w = tmp.join(WEIGHTS);
        weights_bytes = write_safetensors(&w, &tensors, dtype)?;
        write_json(&tmp.join("config.json"), &config)?;
        if fam != Family::Bert {
            write_json(&tmp.join("generation_config.json"), &generation)?;
        }
        if let (Some(j), Some(tc)) = (tokenizer_json, &tok_config) {
            let p = tmp.join(TOKENIZER);
            fs::write(&p, j).at(&p)?;
            store::sync_file(&p)?;
            write_json(&tmp.join("tokenizer_config.json"), tc)?;
        }
        Ok(())
    })?;
    Ok(Exported {
        architecture,
        tensors: n_tensors,
        weights_bytes,
        files,
    })
}

/// `num_labels`, `id2label` and `label2id` of a classification head.
fn labels(obj: &mut Map<String, Value>, h: &HeadConfig) {
    let names = h.label_names();
    let id2label: Map<String, Value> = names
        .iter()
        .enumerate()
        .map(|(i, n)| (i.to_string(), json!(n)))
        .collect();
    let label2id: Map<String, Value> = names
        .iter()
        .enumerate()
        .map(|(i, n)| (n.clone(), json!(i)))
        .collect();
    obj.insert("num_labels".into(), json!(h.num_labels));
    obj.insert("id2label".into(), Value::Object(id2label));
    obj.insert("label2id".into(), Value::Object(label2id));
    // A one-output head is a reward model's score: transformers calls that regression (and
    // refuses single-label classification with one label).
    let problem = if h.num_labels == 1 {
        "regression"
    } else {
        "single_label_classification"
    };
    obj.insert("problem_type".into(), json!(problem));
}

type Parts = (&'static str, Vec<(String, Tensor)>, Value);

fn llama(s: &Source) -> Result<Parts> {
    let c = s.cfg;
    let mut t: Vec<(String, Tensor)> = vec![
        ("model.embed_tokens.weight".into(), s.get("tok_emb.weight")?),
        ("model.norm.weight".into(), s.get("ln_f.weight")?),
    ];
    for i in 0..c.layers {
        let h = format!("model.layers.{i}");
        let [q, k, v] = s
            .qkv(i, "weight")?
            .ok_or_else(|| Error::bug("export: no qkv weight"))?;
        t.push((format!("{h}.self_attn.q_proj.weight"), q));
        t.push((format!("{h}.self_attn.k_proj.weight"), k));
        t.push((format!("{h}.self_attn.v_proj.weight"), v));
        for (from, to) in [
            ("attn.proj", "self_attn.o_proj"),
            ("mlp.gate", "mlp.gate_proj"),
            ("mlp.up", "mlp.up_proj"),
            ("mlp.out", "mlp.down_proj"),
            ("ln1", "input_layernorm"),
            ("ln2", "post_attention_layernorm"),
        ] {
            t.push((
                format!("{h}.{to}.weight"),
                s.get(&format!("blocks.{i}.{from}.weight"))?,
            ));
        }
    }
    let mut architecture = "LlamaForCausalLM";
    let mut tie = c.tie_embeddings;
    match &c.head {
        Some(h) => {
            if h.pooling != Pooling::Last || h.pooler {
                return Err(refuse(
                    "head",
                    format!(
                        "LlamaForSequenceClassification reads the last real token with no pooler; \
                         this head pools `{}`{}",
                        h.pooling.name(),
                        if h.pooler { " through a pooler" } else { "" }
                    ),
                ));
            }
            architecture = "LlamaForSequenceClassification";
            t.push(("score.weight".into(), s.get("head.out.weight")?));
            // The sequence classifier has no output projection to tie.
            tie = false;
        }
        None if !c.tie_embeddings => {
            t.push(("lm_head.weight".into(), s.get("lm_head.weight")?));
        }
        None => {}
    }
    let config = json!({
        "model_type": "llama",
        "hidden_size": c.dim,
        "intermediate_size": c.hidden(),
        "num_hidden_layers": c.layers,
        "num_attention_heads": c.heads,
        "num_key_value_heads": c.kv_heads(),
        "head_dim": c.head_dim(),
        "max_position_embeddings": c.seq_len,
        "vocab_size": c.vocab_size,
        "rms_norm_eps": c.norm_eps(),
        "rope_theta": c.rope_theta,
        "rope_parameters": {"rope_type": "default", "rope_theta": c.rope_theta},
        "hidden_act": "silu",
        "attention_bias": false,
        "mlp_bias": false,
        "attention_dropout": c.dropout,
        "tie_word_embeddings": tie,
        "use_cache": true,
    });
    Ok((architecture, t, config))
}

fn gpt2(s: &Source) -> Result<Parts> {
    let c = s.cfg;
    if c.head.is_some() {
        return Err(refuse(
            "head",
            "GPT-2 classification heads are not exported yet (GPT2ForSequenceClassification's \
             score has no bias); export the model without its head, or use a Llama-like model",
        ));
    }
    let d = c.dim;
    let hidden = c.hidden();
    let mut t: Vec<(String, Tensor)> = vec![
        ("transformer.wte.weight".into(), s.get("tok_emb.weight")?),
        ("transformer.wpe.weight".into(), s.get("pos_emb.weight")?),
        ("transformer.ln_f.weight".into(), s.get("ln_f.weight")?),
        ("transformer.ln_f.bias".into(), s.bias("ln_f.bias", d)?),
    ];
    for i in 0..c.layers {
        let h = format!("transformer.h.{i}");
        let b = format!("blocks.{i}");
        for (from, to) in [("ln1", "ln_1"), ("ln2", "ln_2")] {
            t.push((
                format!("{h}.{to}.weight"),
                s.get(&format!("{b}.{from}.weight"))?,
            ));
            t.push((
                format!("{h}.{to}.bias"),
                s.bias(&format!("{b}.{from}.bias"), d)?,
            ));
        }
        // Conv1D stores [in, out]: quern's [out, in] matrices transposed.
        for (from, to, out) in [
            ("attn.qkv", "attn.c_attn", 3 * d),
            ("attn.proj", "attn.c_proj", d),
            ("mlp.fc", "mlp.c_fc", hidden),
            ("mlp.out", "mlp.c_proj", d),
        ] {
            let w = s
                .get(&format!("{b}.{from}.weight"))?
                .transpose(0, 1)
                .contiguous();
            t.push((format!("{h}.{to}.weight"), w));
            t.push((
                format!("{h}.{to}.bias"),
                s.bias(&format!("{b}.{from}.bias"), out)?,
            ));
        }
    }
    if !c.tie_embeddings {
        t.push(("lm_head.weight".into(), s.get("lm_head.weight")?));
    }
    let act = match c.mlp {
        Mlp::Gelu => "gelu_new",
        _ => "gelu",
    };
    let config = json!({
        "model_type": "gpt2",
        "n_embd": d,
        "n_layer": c.layers,
        "n_head": c.heads,
        "n_inner": hidden,
        "n_positions": c.seq_len,
        "n_ctx": c.seq_len,
        "vocab_size": c.vocab_size,
        "layer_norm_epsilon": c.norm_eps(),
        "activation_function": act,
        "resid_pdrop": c.dropout,
        "embd_pdrop": c.dropout,
        "attn_pdrop": c.dropout,
        "scale_attn_weights": true,
        "tie_word_embeddings": c.tie_embeddings,
        "use_cache": true,
    });
    Ok(("GPT2LMHeadModel", t, config))
}

fn bert(s: &Source) -> Result<Parts> {
    let c = s.cfg;
    let d = c.dim;
    let hidden = c.hidden();
    let mlm = c.has_mlm_head();
    let head = c.head.as_ref();
    if let Some(h) = head {
        if h.pooling != Pooling::First || !h.pooler {
            return Err(refuse(
                "head",
                format!(
                    "BERT's classifiers read [CLS] through the pooler; this head pools `{}`{}",
                    h.pooling.name(),
                    if h.pooler { "" } else { " without a pooler" }
                ),
            ));
        }
        if mlm && h.num_labels != 2 {
            return Err(refuse(
                "head",
                "with the MLM head, a head exports as BERT's next-sentence head, which has 2 classes",
            ));
        }
    }
    let architecture = match (mlm, head.is_some()) {
        (false, false) => "BertModel",
        (true, false) => "BertForMaskedLM",
        (false, true) => "BertForSequenceClassification",
        (true, true) => "BertForPreTraining",
    };
    let p = if architecture == "BertModel" {
        ""
    } else {
        "bert."
    };
    let e = format!("{p}embeddings");
    // Hugging Face's BERT always has token types; a model without them gets one zero row,
    // which is what every token then adds.
    let types = if c.type_vocab_size > 0 {
        s.get("type_emb.weight")?
    } else {
        Tensor::zeros([1, d as i64], (Kind::Float, Device::Cpu))
    };
    let mut t: Vec<(String, Tensor)> = vec![
        (
            format!("{e}.word_embeddings.weight"),
            s.get("tok_emb.weight")?,
        ),
        (
            format!("{e}.position_embeddings.weight"),
            s.get("pos_emb.weight")?,
        ),
        (format!("{e}.token_type_embeddings.weight"), types),
        (format!("{e}.LayerNorm.weight"), s.get("emb_norm.weight")?),
        (format!("{e}.LayerNorm.bias"), s.bias("emb_norm.bias", d)?),
    ];
    for i in 0..c.layers {
        let h = format!("{p}encoder.layer.{i}");
        let b = format!("blocks.{i}");
        let [q, k, v] = s
            .qkv(i, "weight")?
            .ok_or_else(|| Error::bug("export: no qkv weight"))?;
        let zeros = || Tensor::zeros([d as i64], (Kind::Float, Device::Cpu));
        let [qb, kb, vb] = s
            .qkv(i, "bias")?
            .unwrap_or_else(|| [zeros(), zeros(), zeros()]);
        for (n, w, bias) in [("query", q, qb), ("key", k, kb), ("value", v, vb)] {
            t.push((format!("{h}.attention.self.{n}.weight"), w));
            t.push((format!("{h}.attention.self.{n}.bias"), bias));
        }
        for (from, to, out) in [
            ("attn.proj", "attention.output.dense", d),
            ("ln1", "attention.output.LayerNorm", d),
            ("mlp.fc", "intermediate.dense", hidden),
            ("mlp.out", "output.dense", d),
            ("ln2", "output.LayerNorm", d),
        ] {
            t.push((
                format!("{h}.{to}.weight"),
                s.get(&format!("{b}.{from}.weight"))?,
            ));
            t.push((
                format!("{h}.{to}.bias"),
                s.bias(&format!("{b}.{from}.bias"), out)?,
            ));
        }
    }
    if mlm {
        let v = c.vocab_size.unwrap_or(0);
        let cp = "cls.predictions";
        t.push((
            format!("{cp}.transform.dense.weight"),
            s.get("mlm_head.dense.weight")?,
        ));
        t.push((
            format!("{cp}.transform.dense.bias"),
            s.bias("mlm_head.dense.bias", d)?,
        ));
        t.push((
            format!("{cp}.transform.LayerNorm.weight"),
            s.get("mlm_head.norm.weight")?,
        ));
        t.push((
            format!("{cp}.transform.LayerNorm.bias"),
            s.bias("mlm_head.norm.bias", d)?,
        ));
        t.push((format!("{cp}.bias"), s.bias("mlm_head.bias", v)?));
        if !c.tie_embeddings {
            t.push((format!("{cp}.decoder.weight"), s.get("lm_head.weight")?));
        }
    }
    if let Some(h) = head {
        t.push((
            format!("{p}pooler.dense.weight"),
            s.get("head.pooler.weight")?,
        ));
        t.push((
            format!("{p}pooler.dense.bias"),
            s.bias("head.pooler.bias", d)?,
        ));
        let out = if mlm {
            "cls.seq_relationship"
        } else {
            "classifier"
        };
        t.push((format!("{out}.weight"), s.get("head.out.weight")?));
        t.push((
            format!("{out}.bias"),
            s.bias("head.out.bias", h.num_labels)?,
        ));
    }
    let act = match c.mlp {
        Mlp::Gelu => "gelu_new",
        _ => "gelu",
    };
    let config = json!({
        "model_type": "bert",
        "hidden_size": d,
        "num_hidden_layers": c.layers,
        "num_attention_heads": c.heads,
        "intermediate_size": hidden,
        "hidden_act": act,
        "max_position_embeddings": c.seq_len,
        "type_vocab_size": c.type_vocab_size.max(1),
        "vocab_size": c.vocab_size,
        "layer_norm_eps": c.norm_eps(),
        "hidden_dropout_prob": c.dropout,
        "attention_probs_dropout_prob": c.dropout,
        "position_embedding_type": "absolute",
        "tie_word_embeddings": c.tie_embeddings,
    });
    Ok((architecture, t, config))
}

/// `tokenizer_config.json`: the special tokens by text, the context length and the chat
/// template.
fn tokenizer_config(meta: &ModelMeta, json_text: &str, fam: Family) -> Result<Value> {
    let tok = tokenizers::Tokenizer::from_bytes(json_text.as_bytes())
        .map_err(|e| Error::usage(format!("the model's tokenizer.json does not load: {e}")))?;
    let text = |id: Option<u32>| id.and_then(|i| tok.id_to_token(i));
    let sp = &meta.special;
    let mut o = Map::new();
    o.insert("tokenizer_class".into(), json!("PreTrainedTokenizerFast"));
    o.insert("clean_up_tokenization_spaces".into(), json!(false));
    if let Some(n) = meta.config.seq_len {
        o.insert("model_max_length".into(), json!(n));
    }
    for (key, id) in [
        ("bos_token", sp.bos),
        ("eos_token", sp.eos.first().copied()),
        ("pad_token", sp.pad),
    ] {
        if let Some(t) = text(id) {
            o.insert(key.into(), json!(t));
        }
    }
    if fam == Family::Bert {
        for (key, t) in [
            ("cls_token", "[CLS]"),
            ("sep_token", "[SEP]"),
            ("mask_token", "[MASK]"),
            ("unk_token", "[UNK]"),
            ("pad_token", "[PAD]"),
        ] {
            if tok.token_to_id(t).is_some() && !o.contains_key(key) {
                o.insert(key.into(), json!(t));
            }
        }
    }
    if let Some(t) = &meta.chat_template {
        o.insert("chat_template".into(), json!(t));
    }
    Ok(Value::Object(o))
}

fn write_json(path: &Path, v: &Value) -> Result<()> {
    fs::write(path, serde_json::to_vec_pretty(v)?).at(path)?;
    store::sync_file(path)
}

/// Writes `tensors` (in this order) as a safetensors file in `dtype`, with `{"format":
/// "pt"}` metadata as `transformers` expects; returns the file's size. Tensors are converted
/// and written one at a time, so memory holds one tensor beyond the model.
fn write_safetensors(path: &Path, tensors: &[(String, Tensor)], dtype: Dtype) -> Result<u64> {
    let mut header = Map::new();
    header.insert("__metadata__".into(), json!({"format": "pt"}));
    let mut offset = 0usize;
    for (name, t) in tensors {
        let n = t.numel() * dtype.bytes();
        header.insert(
            name.clone(),
            json!({
                "dtype": dtype.safetensors(),
                "shape": t.size(),
                "data_offsets": [offset, offset + n],
            }),
        );
        offset += n;
    }
    let mut head = serde_json::to_vec(&Value::Object(header))?;
    // The data starts 8-byte aligned.
    while (8 + head.len()) % 8 != 0 {
        head.push(b' ');
    }
    let file = fs::File::create(path).at(path)?;
    let mut w = std::io::BufWriter::with_capacity(1 << 20, file);
    w.write_all(&(head.len() as u64).to_le_bytes()).at(path)?;
    w.write_all(&head).at(path)?;
    for (name, t) in tensors {
        let t = t.to_kind(dtype.kind()).contiguous();
        let numel = t.numel();
        let mut buf = vec![0u8; numel * dtype.bytes()];
        t.f_copy_data_u8(&mut buf, numel)
            .map_err(|e| Error::bug(format!("export: reading tensor `{name}`: {e}")))?;
        w.write_all(&buf).at(path)?;
    }
    let file = w
        .into_inner()
        .map_err(|e| Error::io(path, e.into_error()))?;
    file.sync_all().at(path)?;
    Ok((8 + head.len() + offset) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A written file reads back through libtorch's own safetensors reader with the same
    /// values, and its header carries the format and no alias.
    #[test]
    fn safetensors_round_trip_and_metadata() {
        let _g = crate::torch_rng_lock();
        tch::manual_seed(3);
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("w.safetensors");
        let ts = vec![
            (
                "a".to_string(),
                Tensor::randn([3, 5], (Kind::Float, Device::Cpu)),
            ),
            (
                "b".to_string(),
                Tensor::randn([7], (Kind::Float, Device::Cpu)),
            ),
        ];
        let size = write_safetensors(&p, &ts, Dtype::F32).unwrap();
        assert_eq!(size, fs::metadata(&p).unwrap().len());
        let back: HashMap<String, Tensor> =
            Tensor::read_safetensors(&p).unwrap().into_iter().collect();
        for (n, t) in &ts {
            assert!(back[n].equal(t), "{n} differs");
        }
        let bytes = fs::read(&p).unwrap();
        let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
        assert_eq!((8 + n) % 8, 0);
        let h: Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
        assert_eq!(h["__metadata__"]["format"], "pt");
        let p16 = dir.path().join("h.safetensors");
        write_safetensors(&p16, &ts, Dtype::Bf16).unwrap();
        let back: HashMap<String, Tensor> = Tensor::read_safetensors(&p16)
            .unwrap()
            .into_iter()
            .collect();
        assert_eq!(back["a"].kind(), Kind::BFloat16);
        assert!(back["a"].equal(&ts[0].1.to_kind(Kind::BFloat16)));
    }

    /// Configs no Hugging Face class holds are refused with the key in the way.
    #[test]
    fn refuses_configs_without_a_class() {
        let mut c = ModelConfig::llama();
        c.norm = Norm::LayerNorm;
        assert!(family(&c).unwrap_err().to_string().contains("model.norm"));
        let mut c = ModelConfig::gpt2();
        c.kv_heads = Some(1);
        assert!(family(&c)
            .unwrap_err()
            .to_string()
            .contains("model.kv_heads"));
        let mut c = ModelConfig::gpt2();
        c.type_vocab_size = 2;
        assert!(family(&c)
            .unwrap_err()
            .to_string()
            .contains("model.type_vocab_size"));
        assert_eq!(family(&ModelConfig::bert()).unwrap(), Family::Bert);
        assert_eq!(family(&ModelConfig::llama()).unwrap(), Family::Llama);
        assert_eq!(family(&ModelConfig::gpt2()).unwrap(), Family::Gpt2);
    }
}
