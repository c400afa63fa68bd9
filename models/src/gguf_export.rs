//! GGUF files out (`quern export --format gguf`): a Llama-like or GPT-2-like model as
//! llama.cpp's converter writes one, so that llama.cpp, Ollama and `transformers`' GGUF
//! loader read it.
//!
//! The file is GGUF version 3: the header, the metadata, the tensor table, then each
//! tensor's data at a 32-byte boundary. What goes in:
//!
//! - `general.*`: `architecture` (`llama` or `gpt2`), `name`, `alignment`, `file_type`
//!   (llama.cpp's `LLAMA_FTYPE`: 0 all F32, 1 mostly F16, 2 Q4_0, 3 Q4_1, 7 Q8_0, 32 BF16).
//! - `llama.*`: context, embedding and feed-forward lengths, block count, head counts,
//!   `rope.freq_base`, `rope.dimension_count`, `attention.layer_norm_rms_epsilon`,
//!   `vocab_size`; or `gpt2.*`: context, embedding and feed-forward lengths, block count,
//!   head count, `attention.layer_norm_epsilon`.
//! - `tokenizer.ggml.*` from the model's `tokenizer.json` (byte-level BPE only, as
//!   [`crate::gguf::tokenizer_json`] reads): `model = "gpt2"`, `pre` (the name of the split
//!   regex the tokenizer uses, `gpt2` for plain `ByteLevel`), `tokens` in id order, `token_type`
//!   (1 normal, 3 control for special added tokens, 4 user-defined for the other added ones),
//!   `merges`, the bos/eos/padding ids, `add_bos_token`, and `chat_template`.
//! - Llama tensors under llama.cpp's names (`token_embd`, `blk.N.attn_q`, ..., `output_norm`,
//!   `output` when untied), with q and k rows permuted into llama.cpp's interleaved rotary
//!   order (the inverse of the import's un-permutation).
//! - GPT-2 tensors as llama.cpp's converter names them (`token_embd`, `position_embd`,
//!   `blk.N.attn_norm`, `attn_qkv`, `attn_output`, `ffn_norm`, `ffn_up`, `ffn_down`, each with
//!   its bias, `output_norm`, and `output`, which the converter always writes: the embeddings
//!   again when tied). Matrices are stored `[out, in]` (the converter transposes GPT-2's
//!   Conv1D); a model without biases gets zero ones, as GPT-2 has them everywhere. The MLP
//!   must be `gelu` (tanh), llama.cpp's GPT-2 activation: a `gelu_erf` model is refused.
//!   `transformers`' GGUF loader makes a `GPT2Config`, which ties the output to the
//!   embeddings, takes the MLP as 4 × dim wide and has 1024 positions: an untied model, or
//!   one with another `mlp_hidden` or `seq_len`, reads right in llama.cpp only.
//! - Norms, biases and position embeddings stay F32; matrices take the requested type. Q8_0, Q4_0 and Q4_1 are quantized with ggml's reference rounding
//!   (`quantize_row_*_ref`), 32 values a block along each row, so a row's length must be a
//!   multiple of 32.
//!
//! The file is written to a temporary file beside it, fsynced and renamed
//! (`quern_core::shard::write_atomic`): an interrupted export leaves nothing at the
//! destination.

use std::path::Path;

use quern_core::{Error, Result};
use serde_json::Value as Json;
use tch::{Kind, Tensor};

use crate::config::{Mlp, ModelConfig};
use crate::gguf::Value;
use crate::hf_export::{Exported, Family, Source};
use crate::store::ModelMeta;

const ALIGNMENT: usize = 32;
const BLOCK: usize = 32;

/// The type of the exported matrices.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GgufType {
    F32,
    F16,
    Bf16,
    Q8_0,
    Q4_0,
    Q4_1,
}

impl GgufType {
    /// The ggml type id.
    fn id(self) -> u32 {
        match self {
            GgufType::F32 => 0,
            GgufType::F16 => 1,
            GgufType::Q4_0 => 2,
            GgufType::Q4_1 => 3,
            GgufType::Q8_0 => 8,
            GgufType::Bf16 => 30,
        }
    }
    /// llama.cpp's `general.file_type`.
    fn file_type(self) -> u32 {
        match self {
            GgufType::F32 => 0,
            GgufType::F16 => 1,
            GgufType::Q4_0 => 2,
            GgufType::Q4_1 => 3,
            GgufType::Q8_0 => 7,
            GgufType::Bf16 => 32,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            GgufType::F32 => "F32",
            GgufType::F16 => "F16",
            GgufType::Bf16 => "BF16",
            GgufType::Q8_0 => "Q8_0",
            GgufType::Q4_0 => "Q4_0",
            GgufType::Q4_1 => "Q4_1",
        }
    }
    fn quantized(self) -> bool {
        matches!(self, GgufType::Q8_0 | GgufType::Q4_0 | GgufType::Q4_1)
    }
}

/// Checks that `c` is a Llama-like decoder; otherwise the key in the way.
/// The llama.cpp architecture `c` exports as: `llama` or `gpt2`; errors name the key that
/// rules the model out.
fn architecture(c: &ModelConfig) -> Result<Family> {
    let refuse = |key: &str, msg: &str| Err(Error::bad_config(format!("model.{key}"), msg));
    // The Hugging Face export's family check: a config no class holds is refused there,
    // naming its key.
    let family = crate::hf_export::family(c)?;
    match family {
        Family::Llama => {}
        Family::Bert => {
            return refuse(
                "post_norm",
                "GGUF export writes decoders (llama.cpp's llama and gpt2); this is a BERT-like \
                 encoder",
            )
        }
        Family::Gpt2 => {
            if c.mlp != Mlp::Gelu {
                return refuse(
                    "mlp",
                    "llama.cpp's gpt2 architecture computes the tanh GELU (`gelu`); this model \
                     uses the erf GELU (`gelu_erf`): export it with --format hf",
                );
            }
        }
    }
    if c.head.is_some() {
        return refuse(
            "head",
            "llama.cpp's decoder architectures have no classification head",
        );
    }
    Ok(family)
}

/// llama.cpp's converter's `permute`: within each head of `hd` rows, file row `2 j + i` is
/// half-rotation row `i * hd/2 + j`.
fn permute(w: &Tensor, n_head: i64) -> Tensor {
    let (rows, cols) = w.size2().unwrap_or((0, 0));
    w.reshape([n_head, 2, rows / n_head / 2, cols])
        .transpose(1, 2)
        .reshape([rows, cols])
}

/// The tensors under llama.cpp's names, in the converter's order.
fn llama_tensors(src: &Source) -> Result<Vec<(String, Tensor)>> {
    let c = src.cfg;
    let get = |n: &str| src.get(n);
    let (heads, kv) = (c.heads as i64, c.kv_heads() as i64);
    let mut out = vec![("token_embd.weight".to_string(), get("tok_emb.weight")?)];
    for i in 0..c.layers {
        let (b, q) = (format!("blk.{i}"), format!("blocks.{i}"));
        out.push((
            format!("{b}.attn_norm.weight"),
            get(&format!("{q}.ln1.weight"))?,
        ));
        let [wq, wk, wv] = src
            .qkv(i, "weight")?
            .ok_or_else(|| Error::bug("gguf export: a block without its qkv weight"))?;
        out.push((format!("{b}.attn_q.weight"), permute(&wq, heads)));
        out.push((format!("{b}.attn_k.weight"), permute(&wk, kv)));
        out.push((format!("{b}.attn_v.weight"), wv));
        for (ours, theirs) in [
            ("attn.proj", "attn_output"),
            ("ln2", "ffn_norm"),
            ("mlp.gate", "ffn_gate"),
            ("mlp.up", "ffn_up"),
            ("mlp.out", "ffn_down"),
        ] {
            out.push((
                format!("{b}.{theirs}.weight"),
                get(&format!("{q}.{ours}.weight"))?,
            ));
        }
    }
    out.push(("output_norm.weight".into(), get("ln_f.weight")?));
    if !c.tie_embeddings {
        out.push(("output.weight".into(), get("lm_head.weight")?));
    }
    Ok(out)
}

/// GPT-2's tensors under llama.cpp's converter's names, in its order (see the module docs).
fn gpt2_tensors(src: &Source) -> Result<Vec<(String, Tensor)>> {
    let c = src.cfg;
    let get = |n: &str| src.get(n);
    // GPT-2 has every bias; a bias-free model gets zeros of the layer's output size.
    let bias = |n: &str, size: usize| src.bias(n, size);
    let (d, hidden) = (c.dim, c.hidden());
    let embd = get("tok_emb.weight")?;
    let mut out = vec![
        ("token_embd.weight".to_string(), embd.shallow_clone()),
        ("position_embd.weight".to_string(), get("pos_emb.weight")?),
    ];
    for i in 0..c.layers {
        let (b, q) = (format!("blk.{i}"), format!("blocks.{i}"));
        for (ours, theirs, size) in [
            ("ln1", "attn_norm", d),
            ("attn.qkv", "attn_qkv", 3 * d),
            ("attn.proj", "attn_output", d),
            ("ln2", "ffn_norm", d),
            ("mlp.fc", "ffn_up", hidden),
            ("mlp.out", "ffn_down", d),
        ] {
            out.push((
                format!("{b}.{theirs}.weight"),
                get(&format!("{q}.{ours}.weight"))?,
            ));
            out.push((
                format!("{b}.{theirs}.bias"),
                bias(&format!("{q}.{ours}.bias"), size)?,
            ));
        }
    }
    out.push(("output_norm.weight".into(), get("ln_f.weight")?));
    out.push(("output_norm.bias".into(), bias("ln_f.bias", d)?));
    let output = if c.tie_embeddings {
        embd
    } else {
        get("lm_head.weight")?
    };
    out.push(("output.weight".into(), output));
    Ok(out)
}

// --- quantization (ggml's reference rounding) ---------------------------------------------

fn f16_bits(x: f32) -> [u8; 2] {
    half::f16::from_f32(x).to_le_bytes()
}

/// `quantize_row_q8_0_ref`: per block of 32, d = max|x| / 127, q = round(x / d).
fn q8_0(x: &[f32], out: &mut Vec<u8>) {
    for b in x.chunks(BLOCK) {
        let amax = b.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        out.extend(f16_bits(d));
        out.extend(b.iter().map(|v| (v * id).round() as i8 as u8));
    }
}

/// `quantize_row_q4_0_ref`: d = (the value of largest magnitude) / -8, q = min(15, x/d + 8.5)
/// truncated; the first 16 values in the low nibbles, the last 16 in the high ones.
fn q4_0(x: &[f32], out: &mut Vec<u8>) {
    for b in x.chunks(BLOCK) {
        let mut amax = 0f32;
        let mut max = 0f32;
        for &v in b {
            if v.abs() > amax {
                amax = v.abs();
                max = v;
            }
        }
        let d = max / -8.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        out.extend(f16_bits(d));
        for j in 0..BLOCK / 2 {
            let q = |v: f32| ((v * id + 8.5) as i8).min(15) as u8;
            out.push(q(b[j]) | (q(b[j + BLOCK / 2]) << 4));
        }
    }
}

/// `quantize_row_q4_1_ref`: d = (max - min) / 15, m = min, q = min(15, (x - m)/d + 0.5)
/// truncated.
fn q4_1(x: &[f32], out: &mut Vec<u8>) {
    for b in x.chunks(BLOCK) {
        let min = b.iter().copied().fold(f32::INFINITY, f32::min);
        let max = b.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let d = (max - min) / 15.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        out.extend(f16_bits(d));
        out.extend(f16_bits(min));
        for j in 0..BLOCK / 2 {
            let q = |v: f32| (((v - min) * id + 0.5) as i8).min(15) as u8;
            out.push(q(b[j]) | (q(b[j + BLOCK / 2]) << 4));
        }
    }
}

/// A tensor's bytes in `ty` (1-D tensors and position embeddings stay F32, as llama.cpp's
/// converter keeps them).
fn encode(name: &str, t: &Tensor, ty: GgufType) -> Result<(u32, Vec<u8>)> {
    let ty = if t.dim() < 2 || name == "position_embd.weight" {
        GgufType::F32
    } else {
        ty
    };
    let numel = t.numel();
    if ty.quantized() {
        let cols = *t.size().last().unwrap_or(&0) as usize;
        if !cols.is_multiple_of(BLOCK) {
            return Err(Error::usage(format!(
                "tensor `{name}` has rows of {cols} values; {} quantizes blocks of {BLOCK} \
                 along a row, so rows must be a multiple of {BLOCK} (export with --dtype f16 \
                 or f32)",
                ty.name()
            )));
        }
        let x = Vec::<f32>::try_from(t.contiguous().view([-1]))
            .map_err(|e| Error::bug(format!("gguf export: reading `{name}`: {e}")))?;
        let mut out = Vec::with_capacity(numel);
        match ty {
            GgufType::Q8_0 => q8_0(&x, &mut out),
            GgufType::Q4_0 => q4_0(&x, &mut out),
            _ => q4_1(&x, &mut out),
        }
        return Ok((ty.id(), out));
    }
    let (kind, size) = match ty {
        GgufType::F16 => (Kind::Half, 2),
        GgufType::Bf16 => (Kind::BFloat16, 2),
        _ => (Kind::Float, 4),
    };
    let t = t.to_kind(kind).contiguous();
    let mut out = vec![0u8; numel * size];
    t.f_copy_data_u8(&mut out, numel)
        .map_err(|e| Error::bug(format!("gguf export: reading `{name}`: {e}")))?;
    Ok((ty.id(), out))
}

// --- tokenizer metadata ----------------------------------------------------------------------

/// `tokenizer.ggml.*` from a `tokenizer.json` (byte-level BPE).
fn tokenizer_kvs(
    meta: &ModelMeta,
    json_text: &str,
    vocab_size: usize,
) -> Result<Vec<(String, Value)>> {
    let bad = |msg: String| Error::usage(format!("the model's tokenizer.json: {msg}"));
    let doc: Json = serde_json::from_str(json_text).map_err(|e| bad(e.to_string()))?;
    let model = &doc["model"];
    if model["type"] != "BPE" {
        return Err(bad(format!(
            "GGUF export writes byte-level BPE tokenizers (`gpt2`); this one is {}",
            model["type"]
        )));
    }
    let vocab = model["vocab"]
        .as_object()
        .ok_or_else(|| bad("model.vocab is not an object".into()))?;
    let mut tokens: Vec<Option<String>> = vec![None; vocab_size];
    let mut types = vec![1i32; vocab_size];
    let mut place = |id: u64, t: &str, ty: Option<i32>| -> Result<()> {
        let slot = tokens.get_mut(id as usize).ok_or_else(|| {
            bad(format!(
                "token `{t}` has id {id}, past the model's vocabulary of {vocab_size}"
            ))
        })?;
        *slot = Some(t.to_string());
        if let Some(ty) = ty {
            types[id as usize] = ty;
        }
        Ok(())
    };
    for (t, id) in vocab {
        let id = id
            .as_u64()
            .ok_or_else(|| bad(format!("the id of `{t}` is not a number")))?;
        place(id, t, None)?;
    }
    for a in doc["added_tokens"]
        .as_array()
        .map_or(&[][..], Vec::as_slice)
    {
        let (Some(id), Some(t)) = (a["id"].as_u64(), a["content"].as_str()) else {
            continue;
        };
        let special = a["special"].as_bool().unwrap_or(false);
        place(id, t, Some(if special { 3 } else { 4 }))?;
    }
    // Rows of the embedding past the tokenizer's ids (vocabularies rounded up) get
    // placeholder tokens of type 5 (unused), which no merge produces, as llama.cpp's
    // converter pads.
    let tokens: Vec<Value> = tokens
        .into_iter()
        .enumerate()
        .map(|(i, t)| {
            Value::Str(t.unwrap_or_else(|| {
                types[i] = 5;
                format!("[PAD{i}]")
            }))
        })
        .collect();
    let merges: Vec<Value> = model["merges"]
        .as_array()
        .map_or(&[][..], Vec::as_slice)
        .iter()
        .map(|m| match m {
            Json::String(s) => Ok(Value::Str(s.clone())),
            Json::Array(p) if p.len() == 2 => Ok(Value::Str(format!(
                "{} {}",
                p[0].as_str().unwrap_or_default(),
                p[1].as_str().unwrap_or_default()
            ))),
            other => Err(bad(format!(
                "a merge is neither \"a b\" nor [a, b]: {other}"
            ))),
        })
        .collect::<Result<_>>()?;
    let pre = pre_name(&doc["pre_tokenizer"]).ok_or_else(|| {
        bad(format!(
            "its pre-tokenizer {} has no GGUF `tokenizer.ggml.pre` name quern knows",
            doc["pre_tokenizer"]
        ))
    })?;
    let mut kvs = vec![
        (
            "tokenizer.ggml.model".to_string(),
            Value::Str("gpt2".into()),
        ),
        ("tokenizer.ggml.pre".to_string(), Value::Str(pre.into())),
        ("tokenizer.ggml.tokens".to_string(), Value::Array(tokens)),
        (
            "tokenizer.ggml.token_type".to_string(),
            Value::Array(types.into_iter().map(Value::I32).collect()),
        ),
        ("tokenizer.ggml.merges".to_string(), Value::Array(merges)),
    ];
    let sp = &meta.special;
    for (key, id) in [
        ("bos_token_id", sp.bos),
        ("eos_token_id", sp.eos.first().copied()),
        ("padding_token_id", sp.pad),
    ] {
        if let Some(id) = id {
            kvs.push((format!("tokenizer.ggml.{key}"), Value::U32(id)));
        }
    }
    kvs.push((
        "tokenizer.ggml.add_bos_token".into(),
        Value::Bool(sp.add_bos),
    ));
    if let Some(t) = &meta.chat_template {
        kvs.push(("tokenizer.chat_template".into(), Value::Str(t.clone())));
    }
    Ok(kvs)
}

/// The `tokenizer.ggml.pre` name of a pre-tokenizer: `gpt2` for plain `ByteLevel` with its
/// regex, else the name whose split regex it uses ([`crate::gguf`]'s table).
fn pre_name(pre: &Json) -> Option<&'static str> {
    if pre["type"] == "ByteLevel" && pre["use_regex"] != false {
        return Some("gpt2");
    }
    let regex = pre["pretokenizers"]
        .as_array()?
        .iter()
        .find(|p| p["type"] == "Split")?["pattern"]["Regex"]
        .as_str()?;
    ["llama-bpe", "tekken", "qwen2", "qwen35", "gpt-4o"]
        .into_iter()
        .find(|n| crate::gguf::pre_tokenizer_split(n) == Some(regex))
}

// --- the file --------------------------------------------------------------------------------

pub(crate) fn put_str(b: &mut Vec<u8>, s: &str) {
    b.extend((s.len() as u64).to_le_bytes());
    b.extend(s.as_bytes());
}

pub(crate) fn put_value(b: &mut Vec<u8>, v: &Value) {
    match v {
        Value::U8(x) => b.push(*x),
        Value::I8(x) => b.extend(x.to_le_bytes()),
        Value::U16(x) => b.extend(x.to_le_bytes()),
        Value::I16(x) => b.extend(x.to_le_bytes()),
        Value::U32(x) => b.extend(x.to_le_bytes()),
        Value::I32(x) => b.extend(x.to_le_bytes()),
        Value::F32(x) => b.extend(x.to_le_bytes()),
        Value::Bool(x) => b.push(u8::from(*x)),
        Value::Str(s) => put_str(b, s),
        Value::Array(items) => {
            b.extend(items.first().map_or(0, Value::type_id).to_le_bytes());
            b.extend((items.len() as u64).to_le_bytes());
            for i in items {
                put_value(b, i);
            }
        }
        Value::U64(x) => b.extend(x.to_le_bytes()),
        Value::I64(x) => b.extend(x.to_le_bytes()),
        Value::F64(x) => b.extend(x.to_le_bytes()),
    }
}

fn pad(b: &mut Vec<u8>) {
    while !b.len().is_multiple_of(ALIGNMENT) {
        b.push(0);
    }
}

/// Writes the Llama-like or GPT-2-like model `meta` describes, with `weights` under quern's
/// names, as a GGUF file at `out` with matrices in `ty`.
pub fn export(
    meta: &ModelMeta,
    weights: &[(String, Tensor)],
    tokenizer_json: Option<&str>,
    out: &Path,
    ty: GgufType,
    force: bool,
) -> Result<Exported> {
    let c = &meta.config;
    let family = architecture(c)?;
    if out.exists() && !force {
        return Err(Error::usage(format!(
            "{} already exists; pass --force to replace it",
            out.display()
        )));
    }
    let vocab = c.vocab_size.unwrap_or(0);
    let seq_len = c.seq_len.unwrap_or(0);
    let name = meta.source.as_deref().unwrap_or("quern model").to_string();
    let u32v = |n: usize| Value::U32(n as u32);
    let arch = match family {
        Family::Gpt2 => "gpt2",
        _ => "llama",
    };
    let mut kvs: Vec<(String, Value)> = vec![
        ("general.architecture".into(), Value::Str(arch.into())),
        ("general.name".into(), Value::Str(name)),
        ("general.alignment".into(), Value::U32(ALIGNMENT as u32)),
        ("general.file_type".into(), Value::U32(ty.file_type())),
    ];
    if family == Family::Gpt2 {
        kvs.extend([
            ("gpt2.context_length".into(), u32v(seq_len)),
            ("gpt2.embedding_length".into(), u32v(c.dim)),
            ("gpt2.feed_forward_length".into(), u32v(c.hidden())),
            ("gpt2.block_count".into(), u32v(c.layers)),
            ("gpt2.attention.head_count".into(), u32v(c.heads)),
            (
                "gpt2.attention.layer_norm_epsilon".into(),
                Value::F32(c.norm_eps() as f32),
            ),
        ]);
    } else {
        kvs.extend(llama_kvs(c, seq_len, vocab));
    }
    if let Some(j) = tokenizer_json {
        kvs.extend(tokenizer_kvs(meta, j, vocab)?);
    }
    let src = Source::new(weights, c);
    let tensors = match family {
        Family::Gpt2 => gpt2_tensors(&src)?,
        _ => llama_tensors(&src)?,
    };
    write(out, &kvs, &tensors, ty)?;
    Ok(Exported {
        architecture: arch,
        tensors: tensors.len(),
        weights_bytes: fs_len(out),
        files: vec![],
    })
}

fn fs_len(p: &Path) -> u64 {
    std::fs::metadata(p).map_or(0, |m| m.len())
}

/// The `llama.*` hyperparameters.
fn llama_kvs(c: &ModelConfig, seq_len: usize, vocab: usize) -> Vec<(String, Value)> {
    let u32v = |n: usize| Value::U32(n as u32);
    vec![
        ("llama.context_length".into(), u32v(seq_len)),
        ("llama.embedding_length".into(), u32v(c.dim)),
        ("llama.block_count".into(), u32v(c.layers)),
        ("llama.feed_forward_length".into(), u32v(c.hidden())),
        ("llama.attention.head_count".into(), u32v(c.heads)),
        ("llama.attention.head_count_kv".into(), u32v(c.kv_heads())),
        (
            "llama.rope.freq_base".into(),
            Value::F32(c.rope_theta as f32),
        ),
        ("llama.rope.dimension_count".into(), u32v(c.head_dim())),
        (
            "llama.attention.layer_norm_rms_epsilon".into(),
            Value::F32(c.norm_eps() as f32),
        ),
        ("llama.vocab_size".into(), u32v(vocab)),
    ]
}

/// Writes the GGUF file: header, metadata, tensor table and data, atomically.
fn write(
    out: &Path,
    kvs: &[(String, Value)],
    tensors: &[(String, Tensor)],
    ty: GgufType,
) -> Result<()> {
    // Encode every tensor first (the table needs each one's offset and type).
    let mut encoded = Vec::with_capacity(tensors.len());
    for (n, t) in tensors {
        encoded.push(encode(n, t, ty)?);
    }
    let mut head = b"GGUF".to_vec();
    head.extend(3u32.to_le_bytes());
    head.extend((tensors.len() as u64).to_le_bytes());
    head.extend((kvs.len() as u64).to_le_bytes());
    for (k, v) in kvs {
        put_str(&mut head, k);
        head.extend(v.type_id().to_le_bytes());
        put_value(&mut head, v);
    }
    let mut offset = 0usize;
    for ((n, t), (tid, bytes)) in tensors.iter().zip(&encoded) {
        put_str(&mut head, n);
        let dims: Vec<i64> = t.size().into_iter().rev().collect();
        head.extend((dims.len() as u32).to_le_bytes());
        for d in dims {
            head.extend((d as u64).to_le_bytes());
        }
        head.extend(tid.to_le_bytes());
        head.extend((offset as u64).to_le_bytes());
        offset += bytes.len().div_ceil(ALIGNMENT) * ALIGNMENT;
    }
    pad(&mut head);
    // The file in memory, each tensor's bytes moved in (never two copies of one), then
    // written atomically (temporary file, fsync, rename).
    let mut file = head;
    file.reserve(offset);
    for (_, bytes) in encoded {
        file.extend_from_slice(&bytes);
        pad(&mut file);
    }
    quern_core::shard::write_atomic(out, &file)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gguf::{dequantize, GgmlType};
    use tch::Device;

    /// Each quantizer's blocks decode (with the reader's dequantizer) to within half a step
    /// of every value (Q4_0: except the clipped far end of its asymmetric range), and zero
    /// blocks come back exactly.
    #[test]
    fn quantizers_round_trip_through_the_reader() {
        let x: Vec<f32> = (0..256)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 13.0)
            .collect();
        for (ty, f, step) in [
            (GgufType::Q8_0, q8_0 as fn(&[f32], &mut Vec<u8>), 127.0),
            (GgufType::Q4_0, q4_0, 8.0),
            (GgufType::Q4_1, q4_1, 15.0),
        ] {
            let mut bytes = Vec::new();
            f(&x, &mut bytes);
            let back = dequantize(GgmlType::from_id(ty.id()), &bytes, x.len()).unwrap();
            for (b, blk) in back.chunks(BLOCK).zip(x.chunks(BLOCK)) {
                let amax = blk.iter().fold(0f32, |m, v| m.max(v.abs()));
                let range = blk.iter().copied().fold(f32::MIN, f32::max)
                    - blk.iter().copied().fold(f32::MAX, f32::min);
                let scale = if ty == GgufType::Q4_1 { range } else { amax };
                let d = scale / step;
                for (a, v) in b.iter().zip(blk) {
                    // Q4_0's levels run from -8d to 7d: a value beyond 7|d| on the side
                    // opposite the block's largest one clips to 7|d| (ggml does the same).
                    let bound = if ty == GgufType::Q4_0 && v.abs() > 7.0 * d {
                        v.abs() - 7.0 * d + 0.51 * d
                    } else {
                        0.51 * d
                    };
                    assert!(
                        (a - v).abs() <= bound + 1e-3,
                        "{}: {v} came back as {a}",
                        ty.name()
                    );
                }
            }
        }
        let zeros = vec![0f32; 64];
        let mut bytes = Vec::new();
        q4_0(&zeros, &mut bytes);
        let back = dequantize(GgmlType::from_id(2), &bytes, 64).unwrap();
        assert!(back.iter().all(|&v| v == 0.0));
    }

    /// llama.cpp's q/k permutation is undone by the reader's.
    #[test]
    fn permutation_is_the_inverse_of_the_import() {
        let w = Tensor::arange(8 * 3, (Kind::Float, Device::Cpu)).view([8, 3]);
        let p = permute(&w, 2);
        let v = Vec::<f32>::try_from(p.view([-1])).unwrap();
        let mut back = Vec::new();
        crate::gguf::push_unpermuted(&mut back, &v, 2, 4, 3);
        assert_eq!(back, Vec::<f32>::try_from(w.view([-1])).unwrap());
        assert_ne!(v, back, "the permutation moves rows");
    }
}
