//! Hugging Face model directories (`config.json`, `model.safetensors`, `tokenizer.json`).
//!
//! Read here: the BERT layout (`BertModel`, and the `bert.` prefix of `BertFor*` models),
//! e.g. all-MiniLM-L6-v2, into quern's BERT-like encoder; the Llama layout
//! (`LlamaForCausalLM`), whose rotary layout is already quern's (half rotation); and the
//! GPT-2 layout (`GPT2LMHeadModel`, `GPT2Model`), whose `Conv1D` weights come in transposed.
//!
//! BERT names map to quern's (see [`crate::transformer`]) as:
//!
//! | Hugging Face | quern |
//! |---|---|
//! | `embeddings.word_embeddings` | `tok_emb` |
//! | `embeddings.position_embeddings` | `pos_emb` |
//! | `embeddings.token_type_embeddings` | `type_emb` |
//! | `embeddings.LayerNorm` | `emb_norm` |
//! | `encoder.layer.{i}.attention.self.{query,key,value}` | `blocks.{i}.attn.qkv` (rows q, k, v) |
//! | `encoder.layer.{i}.attention.output.dense` | `blocks.{i}.attn.proj` |
//! | `encoder.layer.{i}.attention.output.LayerNorm` | `blocks.{i}.ln1` |
//! | `encoder.layer.{i}.intermediate.dense` | `blocks.{i}.mlp.fc` |
//! | `encoder.layer.{i}.output.dense` | `blocks.{i}.mlp.out` |
//! | `encoder.layer.{i}.output.LayerNorm` | `blocks.{i}.ln2` |
//!
//! The pretraining heads of `BertForMaskedLM` and `BertForPreTraining` come in too:
//!
//! | Hugging Face | quern |
//! |---|---|
//! | `cls.predictions.transform.dense` | `mlm_head.dense` ([`crate::mlm_head`]; sets `mlm_head`) |
//! | `cls.predictions.transform.LayerNorm` | `mlm_head.norm` |
//! | `cls.predictions.bias` (or `cls.predictions.decoder.bias`) | `mlm_head.bias` |
//! | `cls.predictions.decoder.weight` | tied to `embeddings.word_embeddings` (left out), or `lm_head` when `tie_word_embeddings` is false |
//! | `pooler.dense` with `cls.seq_relationship` | `head.pooler`, `head.out`: the NSP head ([`crate::head::nsp_head`]) |
//!
//! A pooler without `cls.seq_relationship` (all-MiniLM-L6-v2, `BertModel`) is left out, as
//! is a `cls.*` tensor of another head; `position_ids` buffers are skipped.

use std::collections::HashMap;
use std::fs;
use std::path::Path;

use quern_core::error::{IoContext, Place};
use quern_core::{Error, Result};
use serde_json::Value;
use tch::Tensor;

use crate::config::{Mlp, ModelConfig};
use crate::store::{self, ModelMeta, SourceKind, Special, Weights, TOKENIZER, WEIGHTS};

/// Reads a Hugging Face directory (BERT or Llama layout).
pub fn load_weights(dir: &Path) -> Result<Weights> {
    let cpath = dir.join("config.json");
    let text = fs::read_to_string(&cpath).at(&cpath)?;
    let cfg: Value = serde_json::from_str(&text).map_err(|e| {
        Error::bad_input(
            Place::file(&cpath).with_line(e.line() as u64),
            format!("not valid JSON: {e}"),
        )
    })?;
    let model_type = cfg.get("model_type").and_then(Value::as_str).unwrap_or("");
    let raw = store::read_safetensors(&dir.join(WEIGHTS))?;
    let wfile = dir.join(WEIGHTS);
    let (config, tensors) = match model_type {
        "bert" => bert(&cfg, &cpath, raw, &wfile)?,
        "llama" => llama(&cfg, &cpath, raw, &wfile)?,
        "gpt2" => gpt2(&cfg, &cpath, raw, &wfile)?,
        other => {
            return Err(Error::bad_input(
                Place::file(&cpath),
                format!("model_type `{other}` is not read by quern; supported: bert, gpt2, llama"),
            ))
        }
    };
    let tokenizer_json = match dir.join(TOKENIZER) {
        p if p.exists() => Some(fs::read_to_string(&p).at(&p)?),
        _ => None,
    };
    let mut meta = ModelMeta::new(config);
    meta.special = special(&cfg, tokenizer_json.as_deref())?;
    meta.source = Some(format!("hf:{}", dir.display()));
    Ok(Weights {
        kind: SourceKind::HuggingFace,
        path: dir.to_path_buf(),
        meta,
        tensors,
        tokenizer_json,
        quant: std::collections::HashMap::new(),
    })
}

fn special(cfg: &Value, tokenizer: Option<&str>) -> Result<Special> {
    let id = |k: &str| cfg.get(k).and_then(Value::as_u64).map(|v| v as u32);
    let mut s = match tokenizer {
        Some(j) => store::special_from_tokenizer(j)?,
        None => Special::default(),
    };
    if let Some(b) = id("bos_token_id") {
        s.bos = Some(b);
    }
    if let Some(e) = id("eos_token_id") {
        s.eos = vec![e];
    }
    if let Some(p) = id("pad_token_id") {
        s.pad = Some(p);
    }
    Ok(s)
}

/// A required integer from config.json.
fn int(cfg: &Value, key: &str, file: &Path) -> Result<usize> {
    cfg.get(key)
        .and_then(Value::as_u64)
        .map(|v| v as usize)
        .ok_or_else(|| {
            Error::bad_input(
                Place::file(file),
                format!("`{key}` missing or not a whole number"),
            )
        })
}

fn take(map: &mut HashMap<String, Tensor>, name: &str, file: &Path) -> Result<Tensor> {
    map.remove(name)
        .ok_or_else(|| Error::bad_input(Place::file(file), format!("tensor `{name}` missing")))
}

fn bert(
    cfg: &Value,
    cpath: &Path,
    raw: HashMap<String, Tensor>,
    wfile: &Path,
) -> Result<(ModelConfig, HashMap<String, Tensor>)> {
    let act = cfg
        .get("hidden_act")
        .and_then(Value::as_str)
        .unwrap_or("gelu");
    let mlp = match act {
        "gelu" => Mlp::GeluErf,
        "gelu_new" | "gelu_pytorch_tanh" => Mlp::Gelu,
        other => {
            return Err(Error::bad_input(
                Place::file(cpath),
                format!("hidden_act `{other}` is not supported; quern has gelu and gelu_new"),
            ))
        }
    };
    if let Some(p) = cfg.get("position_embedding_type").and_then(Value::as_str) {
        if p != "absolute" {
            return Err(Error::bad_input(
                Place::file(cpath),
                format!("position_embedding_type `{p}`: only absolute positions are supported"),
            ));
        }
    }
    let mut config = ModelConfig {
        layers: int(cfg, "num_hidden_layers", cpath)?,
        heads: int(cfg, "num_attention_heads", cpath)?,
        dim: int(cfg, "hidden_size", cpath)?,
        mlp_hidden: Some(int(cfg, "intermediate_size", cpath)?),
        seq_len: Some(int(cfg, "max_position_embeddings", cpath)?),
        vocab_size: Some(int(cfg, "vocab_size", cpath)?),
        type_vocab_size: int(cfg, "type_vocab_size", cpath)?,
        norm_eps: Some(
            cfg.get("layer_norm_eps")
                .and_then(Value::as_f64)
                .unwrap_or(1e-12),
        ),
        dropout: cfg
            .get("hidden_dropout_prob")
            .and_then(Value::as_f64)
            .unwrap_or(0.0),
        mlp,
        ..ModelConfig::bert()
    };
    config
        .validate()
        .map_err(|e| Error::bad_input(Place::file(cpath), e.to_string()))?;
    // `BertFor*` checkpoints prefix the encoder with `bert.`.
    let mut map: HashMap<String, Tensor> = raw
        .into_iter()
        .map(|(k, v)| {
            let k = k.strip_prefix("bert.").map(str::to_string).unwrap_or(k);
            // Old checkpoints name LayerNorm parameters gamma/beta.
            let k = k
                .replace("LayerNorm.gamma", "LayerNorm.weight")
                .replace("LayerNorm.beta", "LayerNorm.bias");
            (k, v)
        })
        .collect();
    let mut out: HashMap<String, Tensor> = HashMap::new();
    let mv = |map: &mut HashMap<String, Tensor>,
              out: &mut HashMap<String, Tensor>,
              from: &str,
              to: &str|
     -> Result<()> {
        out.insert(to.to_string(), take(map, from, wfile)?);
        Ok(())
    };
    mv(
        &mut map,
        &mut out,
        "embeddings.word_embeddings.weight",
        "tok_emb.weight",
    )?;
    mv(
        &mut map,
        &mut out,
        "embeddings.position_embeddings.weight",
        "pos_emb.weight",
    )?;
    mv(
        &mut map,
        &mut out,
        "embeddings.token_type_embeddings.weight",
        "type_emb.weight",
    )?;
    mv(
        &mut map,
        &mut out,
        "embeddings.LayerNorm.weight",
        "emb_norm.weight",
    )?;
    mv(
        &mut map,
        &mut out,
        "embeddings.LayerNorm.bias",
        "emb_norm.bias",
    )?;
    for i in 0..config.layers {
        let h = format!("encoder.layer.{i}");
        let q = format!("blocks.{i}");
        for part in ["weight", "bias"] {
            let qkv: Vec<Tensor> = ["query", "key", "value"]
                .iter()
                .map(|n| take(&mut map, &format!("{h}.attention.self.{n}.{part}"), wfile))
                .collect::<Result<_>>()?;
            out.insert(format!("{q}.attn.qkv.{part}"), Tensor::cat(&qkv, 0));
            mv(
                &mut map,
                &mut out,
                &format!("{h}.attention.output.dense.{part}"),
                &format!("{q}.attn.proj.{part}"),
            )?;
            mv(
                &mut map,
                &mut out,
                &format!("{h}.attention.output.LayerNorm.{part}"),
                &format!("{q}.ln1.{part}"),
            )?;
            mv(
                &mut map,
                &mut out,
                &format!("{h}.intermediate.dense.{part}"),
                &format!("{q}.mlp.fc.{part}"),
            )?;
            mv(
                &mut map,
                &mut out,
                &format!("{h}.output.dense.{part}"),
                &format!("{q}.mlp.out.{part}"),
            )?;
            mv(
                &mut map,
                &mut out,
                &format!("{h}.output.LayerNorm.{part}"),
                &format!("{q}.ln2.{part}"),
            )?;
        }
    }
    // BertForMaskedLM / BertForPreTraining: the MLM prediction head.
    if map.contains_key("cls.predictions.transform.dense.weight") {
        for (from, to) in [
            ("cls.predictions.transform.dense", "mlm_head.dense"),
            ("cls.predictions.transform.LayerNorm", "mlm_head.norm"),
        ] {
            for part in ["weight", "bias"] {
                mv(
                    &mut map,
                    &mut out,
                    &format!("{from}.{part}"),
                    &format!("{to}.{part}"),
                )?;
            }
        }
        // The decoder's bias is tied to `cls.predictions.bias`; a file keeps either name.
        let bias = match map.remove("cls.predictions.bias") {
            Some(b) => b,
            None => take(&mut map, "cls.predictions.decoder.bias", wfile)?,
        };
        map.remove("cls.predictions.decoder.bias");
        out.insert("mlm_head.bias".into(), bias);
        let tied = cfg
            .get("tie_word_embeddings")
            .and_then(Value::as_bool)
            .unwrap_or(true);
        match map.remove("cls.predictions.decoder.weight") {
            Some(w) if !tied => {
                out.insert("lm_head.weight".into(), w);
                config.tie_embeddings = false;
            }
            // Tied: the word embeddings themselves.
            _ => {}
        }
        config.mlm_head = Some(true);
    }
    // BertForPreTraining: the NSP head on the pooled [CLS] state.
    if map.contains_key("cls.seq_relationship.weight") {
        for (from, to) in [
            ("pooler.dense", "head.pooler"),
            ("cls.seq_relationship", "head.out"),
        ] {
            for part in ["weight", "bias"] {
                mv(
                    &mut map,
                    &mut out,
                    &format!("{from}.{part}"),
                    &format!("{to}.{part}"),
                )?;
            }
        }
        config.head = Some(crate::head::nsp_head());
    }
    leftovers(map, wfile, &["pooler.", "cls.", "embeddings.position_ids"])?;
    Ok((config, out))
}

fn llama(
    cfg: &Value,
    cpath: &Path,
    raw: HashMap<String, Tensor>,
    wfile: &Path,
) -> Result<(ModelConfig, HashMap<String, Tensor>)> {
    let heads = int(cfg, "num_attention_heads", cpath)?;
    let config = ModelConfig {
        layers: int(cfg, "num_hidden_layers", cpath)?,
        heads,
        kv_heads: Some(
            cfg.get("num_key_value_heads")
                .and_then(Value::as_u64)
                .map(|v| v as usize)
                .unwrap_or(heads),
        ),
        dim: int(cfg, "hidden_size", cpath)?,
        mlp_hidden: Some(int(cfg, "intermediate_size", cpath)?),
        seq_len: Some(int(cfg, "max_position_embeddings", cpath)?),
        vocab_size: Some(int(cfg, "vocab_size", cpath)?),
        rope_theta: llama_rope_theta(cfg, cpath)?,
        norm_eps: Some(
            cfg.get("rms_norm_eps")
                .and_then(Value::as_f64)
                .unwrap_or(1e-6),
        ),
        tie_embeddings: cfg
            .get("tie_word_embeddings")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        ..ModelConfig::llama()
    };
    let refuse = |msg: String| Err(Error::bad_input(Place::file(cpath), msg));
    if let Some(hd) = cfg.get("head_dim").and_then(Value::as_u64) {
        if hd as usize != config.head_dim() {
            return refuse(format!(
                "head_dim {hd} is not hidden_size / num_attention_heads ({}); quern's attention needs it to be",
                config.head_dim()
            ));
        }
    }
    for key in ["attention_bias", "mlp_bias"] {
        if cfg.get(key).and_then(Value::as_bool) == Some(true) {
            return refuse(format!(
                "`{key}` = true is not supported (Llama has no biases)"
            ));
        }
    }
    if let Some(act) = cfg.get("hidden_act").and_then(Value::as_str) {
        if act != "silu" {
            return refuse(format!("hidden_act `{act}`: quern's SwiGLU uses silu"));
        }
    }
    config
        .validate()
        .map_err(|e| Error::bad_input(Place::file(cpath), e.to_string()))?;
    let mut map = raw;
    let mut out = HashMap::new();
    out.insert(
        "tok_emb.weight".into(),
        take(&mut map, "model.embed_tokens.weight", wfile)?,
    );
    out.insert(
        "ln_f.weight".into(),
        take(&mut map, "model.norm.weight", wfile)?,
    );
    if config.tie_embeddings {
        map.remove("lm_head.weight");
    } else {
        out.insert(
            "lm_head.weight".into(),
            take(&mut map, "lm_head.weight", wfile)?,
        );
    }
    for i in 0..config.layers {
        let h = format!("model.layers.{i}");
        let q = format!("blocks.{i}");
        let qkv: Vec<Tensor> = ["q_proj", "k_proj", "v_proj"]
            .iter()
            .map(|n| take(&mut map, &format!("{h}.self_attn.{n}.weight"), wfile))
            .collect::<Result<_>>()?;
        out.insert(format!("{q}.attn.qkv.weight"), Tensor::cat(&qkv, 0));
        for (from, to) in [
            ("self_attn.o_proj", "attn.proj"),
            ("mlp.gate_proj", "mlp.gate"),
            ("mlp.up_proj", "mlp.up"),
            ("mlp.down_proj", "mlp.out"),
            ("input_layernorm", "ln1"),
            ("post_attention_layernorm", "ln2"),
        ] {
            out.insert(
                format!("{q}.{to}.weight"),
                take(&mut map, &format!("{h}.{from}.weight"), wfile)?,
            );
        }
    }
    leftovers(map, wfile, &["rotary_emb"])?;
    Ok((config, out))
}

/// The GPT-2 layout (`GPT2LMHeadModel`, or `GPT2Model` without the `transformer.` prefix):
/// learned positions, LayerNorm, GELU, biases everywhere. `Conv1D` weights are stored
/// `[in, out]` and come in transposed; the fused `c_attn` keeps its q, k, v row order; the
/// causal-mask buffers (`attn.bias`, `attn.masked_bias`) are skipped.
fn gpt2(
    cfg: &Value,
    cpath: &Path,
    raw: HashMap<String, Tensor>,
    wfile: &Path,
) -> Result<(ModelConfig, HashMap<String, Tensor>)> {
    let refuse = |msg: String| Err(Error::bad_input(Place::file(cpath), msg));
    let mlp = match cfg
        .get("activation_function")
        .and_then(Value::as_str)
        .unwrap_or("gelu_new")
    {
        "gelu_new" | "gelu_pytorch_tanh" => Mlp::Gelu,
        "gelu" => Mlp::GeluErf,
        other => {
            return refuse(format!(
                "activation_function `{other}`: quern's GPT-2 MLP is gelu_new (tanh) or gelu (erf)"
            ))
        }
    };
    for (key, want) in [
        ("scale_attn_by_inverse_layer_idx", false),
        ("reorder_and_upcast_attn", false),
        ("add_cross_attention", false),
    ] {
        if cfg.get(key).and_then(Value::as_bool).unwrap_or(false) != want {
            return refuse(format!("`{key}` = true is not supported"));
        }
    }
    if cfg.get("scale_attn_weights").and_then(Value::as_bool) == Some(false) {
        return refuse("`scale_attn_weights` = false is not supported".into());
    }
    let dim = int(cfg, "n_embd", cpath)?;
    let config = ModelConfig {
        layers: int(cfg, "n_layer", cpath)?,
        heads: int(cfg, "n_head", cpath)?,
        dim,
        mlp_hidden: Some(
            cfg.get("n_inner")
                .and_then(Value::as_u64)
                .map_or(4 * dim, |v| v as usize),
        ),
        seq_len: Some(int(cfg, "n_positions", cpath)?),
        vocab_size: Some(int(cfg, "vocab_size", cpath)?),
        norm_eps: Some(
            cfg.get("layer_norm_epsilon")
                .and_then(Value::as_f64)
                .unwrap_or(1e-5),
        ),
        mlp,
        tie_embeddings: cfg
            .get("tie_word_embeddings")
            .and_then(Value::as_bool)
            .unwrap_or(true),
        ..ModelConfig::gpt2()
    };
    config
        .validate()
        .map_err(|e| Error::bad_input(Place::file(cpath), e.to_string()))?;
    // GPT2Model's names have no prefix.
    let mut map: HashMap<String, Tensor> = raw
        .into_iter()
        .map(|(k, v)| match k.strip_prefix("transformer.") {
            Some(rest) => (rest.to_string(), v),
            None => (k, v),
        })
        .collect();
    let mut out = HashMap::new();
    for (from, to) in [
        ("wte.weight", "tok_emb.weight"),
        ("wpe.weight", "pos_emb.weight"),
        ("ln_f.weight", "ln_f.weight"),
        ("ln_f.bias", "ln_f.bias"),
    ] {
        out.insert(to.to_string(), take(&mut map, from, wfile)?);
    }
    if config.tie_embeddings {
        map.remove("lm_head.weight");
    } else {
        out.insert(
            "lm_head.weight".into(),
            take(&mut map, "lm_head.weight", wfile)?,
        );
    }
    for i in 0..config.layers {
        let (h, q) = (format!("h.{i}"), format!("blocks.{i}"));
        for (from, to) in [("ln_1", "ln1"), ("ln_2", "ln2")] {
            for w in ["weight", "bias"] {
                out.insert(
                    format!("{q}.{to}.{w}"),
                    take(&mut map, &format!("{h}.{from}.{w}"), wfile)?,
                );
            }
        }
        for (from, to) in [
            ("attn.c_attn", "attn.qkv"),
            ("attn.c_proj", "attn.proj"),
            ("mlp.c_fc", "mlp.fc"),
            ("mlp.c_proj", "mlp.out"),
        ] {
            let w = take(&mut map, &format!("{h}.{from}.weight"), wfile)?;
            out.insert(format!("{q}.{to}.weight"), w.transpose(0, 1).contiguous());
            out.insert(
                format!("{q}.{to}.bias"),
                take(&mut map, &format!("{h}.{from}.bias"), wfile)?,
            );
        }
    }
    leftovers(map, wfile, &["attn.bias", "attn.masked_bias"])?;
    Ok((config, out))
}

/// The rotary base: `rope_theta`, or `rope_parameters.rope_theta` (transformers 5 writes
/// the latter). Scaled rotary variants (`rope_type` other than `default`) are refused.
fn llama_rope_theta(cfg: &Value, cpath: &Path) -> Result<f64> {
    let params = cfg.get("rope_parameters").filter(|v| !v.is_null());
    let scaling = cfg.get("rope_scaling").filter(|v| !v.is_null());
    for p in [params, scaling].into_iter().flatten() {
        let ty = p
            .get("rope_type")
            .or_else(|| p.get("type"))
            .and_then(Value::as_str)
            .unwrap_or("default");
        if ty != "default" {
            return Err(Error::bad_input(
                Place::file(cpath),
                format!("rope_type `{ty}` is not supported yet (only default rotary positions)"),
            ));
        }
    }
    Ok(params
        .and_then(|p| p.get("rope_theta"))
        .or_else(|| cfg.get("rope_theta"))
        .and_then(Value::as_f64)
        .unwrap_or(10000.0))
}

/// Tensors nobody took: an error unless they are known to be left out.
fn leftovers(map: HashMap<String, Tensor>, file: &Path, skipped: &[&str]) -> Result<()> {
    let mut rest: Vec<String> = map
        .into_keys()
        .filter(|k| !skipped.iter().any(|s| k.contains(s)))
        .collect();
    rest.sort();
    match rest.first() {
        None => Ok(()),
        Some(first) => Err(Error::bad_input(
            Place::file(file),
            format!(
                "{} tensor(s) quern does not know where to put, e.g. `{first}`",
                rest.len()
            ),
        )),
    }
}
