//! Batched KV-cache generation: the library API that `quern generate`, evaluation and
//! reinforcement learning call.
//!
//! Prompts of different lengths are left-padded into one batch; each row's positions come
//! from its mask (`cumsum(mask) - 1`), so a padded row computes exactly what it computes
//! alone. The prompt is run once (prefill), then one token per step through the
//! [`KvCache`](crate::transformer::KvCache). Identical prompts in a batch (a group of
//! reinforcement-learning samples) share one prefill: their rows start from copies of its
//! cache. Finished rows leave the batch (their cache rows are dropped), so a long answer does
//! not make the others pay.
//!
//! Sampling: greedy (`temperature = 0`), or temperature with top-k and top-p (nucleus),
//! after a repetition penalty (CTRL's, as `transformers` applies it: a seen token's positive
//! logit is divided by the penalty, a negative one multiplied). Each prompt draws from its
//! own generator seeded from `(seed, prompt index)`, so a prompt's sample does not depend on
//! what else is in the batch. Stops: end-of-sequence ids, extra stop ids, stop strings (the
//! text is cut before the string), `max_new_tokens`, and the model's context.
//!
//! ```no_run
//! # use quern_models::{store, generate::{Generator, GenerateConfig}};
//! let m = store::load(std::path::Path::new("model/"), tch::Device::Cpu)?;
//! let gen = Generator::new(&m.model, m.tokenizer.as_ref(), &m.meta.special);
//! let ids = gen.encode("Once upon a time", false)?;
//! let (out, timing) = gen.generate(&[ids], &GenerateConfig::greedy(20))?;
//! println!("{} ({:.0} tokens/s)", out[0].text, timing.decode_tokens_per_s());
//! # Ok::<(), quern_core::Error>(())
//! ```

use std::time::Instant;

use quern_core::{Error, Result};
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};
use tokenizers::Tokenizer;

use crate::chat::{self, Message};
use crate::store::Special;
use crate::transformer::{Extras, Transformer};

/// How to pick each next token.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Sampling {
    /// 0 = greedy (argmax); otherwise logits are divided by it before sampling. Default 0.
    pub temperature: f64,
    /// Keep only the k most likely tokens; 0 = off. Default 0.
    pub top_k: usize,
    /// Keep the smallest set of tokens whose probability reaches p; 1 = off. Default 1.
    pub top_p: f64,
    /// Penalise tokens already in the prompt or the output; 1 = off. Default 1.
    pub repetition_penalty: f64,
}

impl Default for Sampling {
    fn default() -> Self {
        Sampling {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            repetition_penalty: 1.0,
        }
    }
}

/// One generation request's settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GenerateConfig {
    /// New tokens at most per prompt. Default 64.
    pub max_new_tokens: usize,
    pub sampling: Sampling,
    /// Token ids that end a row, beside the model's end-of-sequence ids.
    pub stop_ids: Vec<u32>,
    /// Strings that end a row; the text is cut before the string.
    pub stop_strings: Vec<String>,
    /// Don't stop at the model's end-of-sequence ids (benchmarks). Default false.
    pub ignore_eos: bool,
    /// Seed of the sampling generators. Default 0.
    pub seed: u64,
}

impl Default for GenerateConfig {
    fn default() -> Self {
        GenerateConfig {
            max_new_tokens: 64,
            sampling: Sampling::default(),
            stop_ids: Vec::new(),
            stop_strings: Vec::new(),
            ignore_eos: false,
            seed: 0,
        }
    }
}

impl GenerateConfig {
    /// Greedy decoding of up to `n` tokens.
    pub fn greedy(n: usize) -> Self {
        GenerateConfig {
            max_new_tokens: n,
            ..GenerateConfig::default()
        }
    }

    /// Checks ranges; errors name the setting.
    pub fn validate(&self) -> Result<()> {
        let s = &self.sampling;
        if !(s.temperature >= 0.0 && s.temperature.is_finite()) {
            return Err(Error::bad_config(
                "temperature",
                format!("must be >= 0, got {}", s.temperature),
            ));
        }
        if !(s.top_p > 0.0 && s.top_p <= 1.0) {
            return Err(Error::bad_config(
                "top_p",
                format!("must be in (0, 1], got {}", s.top_p),
            ));
        }
        if !(s.repetition_penalty > 0.0 && s.repetition_penalty.is_finite()) {
            return Err(Error::bad_config(
                "repetition_penalty",
                format!("must be > 0, got {}", s.repetition_penalty),
            ));
        }
        if self.stop_strings.iter().any(|s| s.is_empty()) {
            return Err(Error::bad_config("stop", "a stop string must not be empty"));
        }
        Ok(())
    }
}

/// Why a row stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Finish {
    /// An end-of-sequence or stop id (not included in `tokens`).
    Stop,
    /// A stop string (cut from `text`; the tokens that made it are kept).
    StopString,
    /// `max_new_tokens` reached.
    Length,
    /// The model's context is full.
    Context,
}

/// One prompt's result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Generation {
    /// The generated ids (without the stop id).
    pub tokens: Vec<u32>,
    /// The generated text (empty without a tokenizer).
    pub text: String,
    pub finish: Finish,
    /// The id that ended the row when `finish` is `Stop` (an end-of-sequence or stop id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_id: Option<u32>,
    pub prompt_tokens: usize,
}

/// Where the time went.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Timing {
    pub prefill_s: f64,
    pub decode_s: f64,
    /// Prompt tokens run in the prefill (padding excluded; a prompt given several times is
    /// run once).
    pub prompt_tokens: u64,
    /// Tokens generated after the first (each took a decoding step).
    pub decode_tokens: u64,
    /// Decoding steps run.
    pub steps: u64,
}

impl Timing {
    pub fn prefill_tokens_per_s(&self) -> f64 {
        self.prompt_tokens as f64 / self.prefill_s.max(1e-9)
    }
    pub fn decode_tokens_per_s(&self) -> f64 {
        self.decode_tokens as f64 / self.decode_s.max(1e-9)
    }
}

/// A generator over one model (and its tokenizer, for text and stop strings).
#[derive(Debug)]
pub struct Generator<'a> {
    model: &'a Transformer,
    tokenizer: Option<&'a Tokenizer>,
    special: &'a Special,
}

impl<'a> Generator<'a> {
    pub fn new(
        model: &'a Transformer,
        tokenizer: Option<&'a Tokenizer>,
        special: &'a Special,
    ) -> Self {
        Generator {
            model,
            tokenizer,
            special,
        }
    }

    fn tokenizer(&self) -> Result<&'a Tokenizer> {
        self.tokenizer.ok_or_else(|| {
            Error::usage("the model has no tokenizer.json: give token ids, not text")
        })
    }

    /// Token ids of a plain prompt: the tokenizer's own special tokens, and a BOS when the
    /// model wants one and the tokenizer did not add it. `templated` text (a rendered chat
    /// template) gets neither: the template wrote what it wants.
    pub fn encode(&self, text: &str, templated: bool) -> Result<Vec<u32>> {
        let tok = self.tokenizer()?;
        let enc = tok
            .encode(text, !templated)
            .map_err(|e| Error::usage(format!("tokenizing the prompt: {e}")))?;
        let mut ids = enc.get_ids().to_vec();
        if !templated && self.special.add_bos {
            if let Some(b) = self.special.bos {
                if ids.first() != Some(&b) {
                    ids.insert(0, b);
                }
            }
        }
        Ok(ids)
    }

    /// Ids of a conversation through `template` (the model's, or [`chat::DEFAULT_TEMPLATE`]),
    /// with the assistant's turn opened.
    pub fn encode_chat(&self, template: &str, messages: &[Message]) -> Result<Vec<u32>> {
        let tok = self.tokenizer()?;
        let name = |id: Option<u32>| id.and_then(|i| tok.id_to_token(i)).unwrap_or_default();
        let text = chat::render(
            template,
            messages,
            true,
            &name(self.special.bos),
            &name(self.special.eos.first().copied()),
        )?;
        self.encode(&text, true)
    }

    /// Generates for every prompt (token ids) in one batch.
    pub fn generate(
        &self,
        prompts: &[Vec<u32>],
        cfg: &GenerateConfig,
    ) -> Result<(Vec<Generation>, Timing)> {
        cfg.validate()?;
        let m = self.model;
        if m.config().post_norm {
            return Err(Error::usage(
                "this is a BERT-like encoder (post_norm): it reads whole sequences and cannot generate; use a decoder (GPT-2- or Llama-like)",
            ));
        }
        let dev = m.device();
        let ctx = m.seq_len() as usize;
        let vocab = m.vocab_size();
        if prompts.is_empty() {
            return Ok((Vec::new(), Timing::default()));
        }
        for (i, p) in prompts.iter().enumerate() {
            if p.is_empty() {
                return Err(Error::usage(format!("prompt {i} is empty")));
            }
            if p.len() > ctx {
                return Err(Error::usage(format!(
                    "prompt {i} has {} tokens, longer than the model's context of {ctx} (model.seq_len)",
                    p.len()
                )));
            }
            if let Some(bad) = p.iter().find(|&&t| t as i64 >= vocab) {
                return Err(Error::usage(format!(
                    "prompt {i} has token id {bad}, outside the model's vocabulary of {vocab}"
                )));
            }
        }
        let b = prompts.len();
        let lens: Vec<usize> = prompts.iter().map(Vec::len).collect();
        let longest = *lens.iter().max().unwrap_or(&1);
        let padded = lens.iter().any(|&l| l != longest);
        let budget = cfg.max_new_tokens.min(ctx - longest);
        // Identical prompts (an RL group, several samples of one prompt) are prefilled once;
        // their rows then decode from copies of that prompt's cache and last logits, which
        // are what each would have computed alone.
        let (unique, slots) = distinct_rows(prompts.iter().map(Vec::as_slice));
        let u = unique.len();
        let (ids, mask, _) = left_padded(&unique);
        let _g = tch::no_grad_guard();
        let ids = Tensor::from_slice(&ids)
            .view([u as i64, longest as i64])
            .to_device(dev);
        let mut key_mask = Tensor::from_slice(&mask)
            .view([u as i64, longest as i64])
            .to_device(dev);
        let mut positions = (key_mask.cumsum(1, Kind::Int64) - 1).clamp_min(0);
        let mut cache = m.new_cache(u as i64, (longest + budget).max(1) as i64);
        let mut stops: Vec<u32> = cfg.stop_ids.clone();
        if !cfg.ignore_eos {
            stops.extend(&self.special.eos);
        }
        let mut rows: Vec<Row> = prompts
            .iter()
            .enumerate()
            .map(|(i, p)| Row {
                index: i,
                seen: p.clone(),
                out: Vec::new(),
                finish: None,
                stop_id: None,
                text_cut: None,
                rng: SplitMix::new(cfg.seed ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)),
            })
            .collect();

        let t0 = Instant::now();
        let extras = Extras {
            positions: padded.then_some(&positions),
            key_mask: padded.then_some(&key_mask),
            ..Extras::default()
        };
        let hidden = m.hidden(&ids, &extras, true, false, Some(&mut cache))?;
        let mut logits = m.logits(&hidden.narrow(1, longest as i64 - 1, 1).squeeze_dim(1));
        if u < b {
            let idx = Tensor::from_slice(&slots).to_device(dev);
            cache.select_rows(&idx);
            key_mask = key_mask.index_select(0, &idx);
            positions = positions.index_select(0, &idx);
            logits = logits.index_select(0, &idx);
        }
        sync(dev);
        let prefill_s = t0.elapsed().as_secs_f64();
        let t1 = Instant::now();
        let mut timing = Timing {
            prefill_s,
            prompt_tokens: unique.iter().map(|p| p.len()).sum::<usize>() as u64,
            ..Timing::default()
        };
        // Rows still generating, in cache order.
        let mut active: Vec<usize> = (0..b).collect();
        let mut produced = 0usize;
        loop {
            let next = self.pick(&logits, &mut rows, &active, &cfg.sampling)?;
            produced += 1;
            let mut keep = Vec::with_capacity(active.len());
            for (slot, &r) in active.iter().enumerate() {
                let row = &mut rows[r];
                let tok = next[slot];
                if stops.contains(&tok) {
                    row.finish = Some(Finish::Stop);
                    row.stop_id = Some(tok);
                    continue;
                }
                row.out.push(tok);
                row.seen.push(tok);
                if !cfg.stop_strings.is_empty() {
                    if let Some(cut) = self.stop_string_cut(&row.out, &cfg.stop_strings)? {
                        row.text_cut = Some(cut);
                        row.finish = Some(Finish::StopString);
                        continue;
                    }
                }
                if produced >= budget {
                    row.finish = Some(if budget < cfg.max_new_tokens {
                        Finish::Context
                    } else {
                        Finish::Length
                    });
                    continue;
                }
                keep.push(slot);
            }
            if keep.is_empty() {
                break;
            }
            if keep.len() != active.len() {
                let idx = Tensor::from_slice(&keep.iter().map(|&s| s as i64).collect::<Vec<_>>())
                    .to_device(dev);
                cache.select_rows(&idx);
                key_mask = key_mask.index_select(0, &idx);
                positions = positions.index_select(0, &idx);
                active = keep.iter().map(|&s| active[s]).collect();
            }
            let step_ids: Vec<i64> = active
                .iter()
                .map(|&r| *rows[r].out.last().unwrap_or(&0) as i64)
                .collect();
            let n = active.len() as i64;
            let step = Tensor::from_slice(&step_ids).view([n, 1]).to_device(dev);
            positions = positions.narrow(1, positions.size()[1] - 1, 1) + 1;
            key_mask = Tensor::cat(&[&key_mask, &Tensor::ones([n, 1], (Kind::Int64, dev))], 1);
            let extras = Extras {
                positions: padded.then_some(&positions),
                key_mask: padded.then_some(&key_mask),
                ..Extras::default()
            };
            let h = m.hidden(&step, &extras, true, false, Some(&mut cache))?;
            logits = m.logits(&h.squeeze_dim(1));
            timing.steps += 1;
            timing.decode_tokens += active.len() as u64;
        }
        sync(dev);
        timing.decode_s = t1.elapsed().as_secs_f64();
        let mut out = Vec::with_capacity(b);
        for row in rows {
            let mut text = match self.tokenizer {
                Some(t) => t
                    .decode(&row.out, true)
                    .map_err(|e| Error::usage(format!("decoding: {e}")))?,
                None => String::new(),
            };
            if let Some(cut) = row.text_cut {
                text.truncate(cut);
            }
            out.push(Generation {
                prompt_tokens: lens[row.index],
                tokens: row.out,
                text,
                finish: row.finish.unwrap_or(Finish::Length),
                stop_id: row.stop_id,
            });
        }
        Ok((out, timing))
    }

    /// The next token of every active row.
    fn pick(
        &self,
        logits: &Tensor,
        rows: &mut [Row],
        active: &[usize],
        s: &Sampling,
    ) -> Result<Vec<u32>> {
        if s.temperature == 0.0 && s.repetition_penalty == 1.0 {
            let ids = Vec::<i64>::try_from(logits.argmax(-1, false).to_device(tch::Device::Cpu))
                .map_err(|e| Error::bug(format!("argmax: {e}")))?;
            return Ok(ids.into_iter().map(|i| i as u32).collect());
        }
        let n = active.len();
        let v = logits.size()[1] as usize;
        let flat = Vec::<f32>::try_from(
            logits
                .to_kind(Kind::Float)
                .to_device(tch::Device::Cpu)
                .contiguous()
                .view([-1]),
        )
        .map_err(|e| Error::bug(format!("logits: {e}")))?;
        let mut out = Vec::with_capacity(n);
        for (slot, &r) in active.iter().enumerate() {
            let row = &mut rows[r];
            let mut l = flat[slot * v..(slot + 1) * v].to_vec();
            sample_row(&mut l, &row.seen, s, &mut row.rng, &mut out);
        }
        Ok(out)
    }

    /// Byte offset in the decoded text where the first stop string starts, if any.
    fn stop_string_cut(&self, out: &[u32], stops: &[String]) -> Result<Option<usize>> {
        let tok = self.tokenizer()?;
        let text = tok
            .decode(out, true)
            .map_err(|e| Error::usage(format!("decoding: {e}")))?;
        Ok(stops.iter().filter_map(|s| text.find(s.as_str())).min())
    }
}

struct Row {
    index: usize,
    /// Prompt and generated ids (for the repetition penalty).
    seen: Vec<u32>,
    out: Vec<u32>,
    finish: Option<Finish>,
    stop_id: Option<u32>,
    text_cut: Option<usize>,
    rng: SplitMix,
}

/// The distinct rows in first-seen order, and each row's index among them: rows that
/// repeat (an RL group's prompt) share one slot.
pub fn distinct_rows<'a, T: Eq + std::hash::Hash>(
    rows: impl IntoIterator<Item = &'a [T]>,
) -> (Vec<&'a [T]>, Vec<i64>) {
    let mut first = std::collections::HashMap::new();
    let mut distinct = Vec::new();
    let slots = rows
        .into_iter()
        .map(|r| {
            *first.entry(r).or_insert_with(|| {
                distinct.push(r);
                distinct.len() as i64 - 1
            })
        })
        .collect();
    (distinct, slots)
}

/// `rows` left-padded with id 0 to the longest (at least 1): the ids and a mask (1 on real
/// tokens), each `rows.len() × width` row-major, and the width.
pub fn left_padded<T: Copy + Into<i64>>(rows: &[&[T]]) -> (Vec<i64>, Vec<i64>, usize) {
    let width = rows.iter().map(|r| r.len()).max().unwrap_or(1).max(1);
    let mut ids = Vec::with_capacity(rows.len() * width);
    let mut mask = Vec::with_capacity(rows.len() * width);
    for r in rows {
        let pad = width - r.len();
        ids.extend(std::iter::repeat_n(0i64, pad));
        ids.extend(r.iter().map(|&t| t.into()));
        mask.extend(std::iter::repeat_n(0i64, pad));
        mask.extend(std::iter::repeat_n(1i64, r.len()));
    }
    (ids, mask, width)
}

/// How many of the most likely ids a draw without top-k or top-p sorts first.
const SAMPLE_HEAD: usize = 256;

/// Picks one token from a row's logits (modified in place) and pushes it on `out`.
fn sample_row(l: &mut [f32], seen: &[u32], s: &Sampling, rng: &mut SplitMix, out: &mut Vec<u32>) {
    if s.repetition_penalty != 1.0 {
        let p = s.repetition_penalty as f32;
        let mut done = std::collections::HashSet::new();
        for &t in seen {
            if done.insert(t) {
                if let Some(x) = l.get_mut(t as usize) {
                    *x = if *x > 0.0 { *x / p } else { *x * p };
                }
            }
        }
    }
    if s.temperature == 0.0 {
        out.push(argmax(l));
        return;
    }
    let inv_t = 1.0 / s.temperature as f32;
    // Most likely first; ties by id.
    let by_logit = |a: &u32, b: &u32| l[*b as usize].total_cmp(&l[*a as usize]).then(a.cmp(b));
    if (s.top_k == 0 || s.top_k >= l.len()) && s.top_p >= 1.0 {
        // Nothing is cut: the draw walks the whole softmax from the most likely token down,
        // as below (so a seed picks the same token either way), but only the head of that
        // order is sorted, and the rest only when the draw goes past it. Sorting all 50k ids
        // per row and step cost more than a decoding step of a small model.
        let max = l.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) * inv_t;
        let exps: Vec<f64> = l
            .iter()
            .map(|&x| ((x * inv_t - max) as f64).exp())
            .collect();
        let total: f64 = exps.iter().sum();
        let mut u = rng.next_f64() * total;
        let mut idx: Vec<u32> = (0..l.len() as u32).collect();
        let head = SAMPLE_HEAD.min(idx.len());
        if head < idx.len() {
            idx.select_nth_unstable_by(head - 1, by_logit);
        }
        idx[..head].sort_unstable_by(by_logit);
        let mut walk = |ids: &[u32]| {
            ids.iter().copied().find(|&i| {
                u -= exps[i as usize];
                u <= 0.0
            })
        };
        let picked = match walk(&idx[..head]) {
            Some(i) => Some(i),
            None => {
                idx[head..].sort_unstable_by(by_logit);
                walk(&idx[head..])
            }
        };
        out.push(picked.unwrap_or_else(|| *idx.last().unwrap_or(&0)));
        return;
    }
    // Candidates sorted by logit, cut by top-k, then by top-p on the softmax.
    let mut idx: Vec<u32> = (0..l.len() as u32).collect();
    let k = if s.top_k == 0 {
        l.len()
    } else {
        s.top_k.min(l.len())
    };
    if k < l.len() {
        idx.select_nth_unstable_by(k - 1, |&a, &b| l[b as usize].total_cmp(&l[a as usize]));
        idx.truncate(k);
    }
    idx.sort_unstable_by(by_logit);
    let max = l[idx[0] as usize] * inv_t;
    let mut probs: Vec<f64> = idx
        .iter()
        .map(|&i| ((l[i as usize] * inv_t - max) as f64).exp())
        .collect();
    let total: f64 = probs.iter().sum();
    probs.iter_mut().for_each(|p| *p /= total);
    if s.top_p < 1.0 {
        let mut acc = 0.0;
        let mut cut = probs.len();
        for (i, p) in probs.iter().enumerate() {
            acc += p;
            if acc >= s.top_p {
                cut = i + 1;
                break;
            }
        }
        probs.truncate(cut);
        idx.truncate(cut);
    }
    let total: f64 = probs.iter().sum();
    let mut u = rng.next_f64() * total;
    for (p, &i) in probs.iter().zip(&idx) {
        u -= p;
        if u <= 0.0 {
            out.push(i);
            return;
        }
    }
    out.push(*idx.last().unwrap_or(&0));
}

fn argmax(l: &[f32]) -> u32 {
    let mut best = 0usize;
    for (i, &x) in l.iter().enumerate() {
        if x > l[best] {
            best = i;
        }
    }
    best as u32
}

fn sync(dev: tch::Device) {
    if let tch::Device::Cuda(i) = dev {
        tch::Cuda::synchronize(i as i64);
    }
}

/// SplitMix64: a small, seedable generator (sampling must not depend on libtorch's global
/// generator, which training and other threads also draw from).
#[derive(Debug, Clone)]
struct SplitMix(u64);

impl SplitMix {
    fn new(seed: u64) -> Self {
        SplitMix(seed)
    }
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ModelConfig;
    use tch::Device;

    fn model() -> Transformer {
        let cfg = ModelConfig::llama()
            .with_kv_heads(2)
            .with_layers(2)
            .with_dim(32)
            .with_seq_len(40)
            .with_vocab_size(50);
        tch::manual_seed(11);
        Transformer::new(&cfg, Device::Cpu)
    }

    /// Greedy decoding without a cache: the whole sequence re-run each step.
    fn greedy_no_cache(m: &Transformer, prompt: &[u32], n: usize) -> Vec<u32> {
        let mut seq: Vec<i64> = prompt.iter().map(|&t| t as i64).collect();
        let mut out = Vec::new();
        for _ in 0..n {
            let ids = Tensor::from_slice(&seq).view([1, -1]);
            let l = m.forward(&ids, true, false);
            let next = l
                .get(0)
                .get(seq.len() as i64 - 1)
                .argmax(-1, false)
                .int64_value(&[]);
            out.push(next as u32);
            seq.push(next);
        }
        out
    }

    #[test]
    fn cached_batched_greedy_equals_full_recomputation() {
        let _rng = crate::torch_rng_lock();
        let m = model();
        let special = Special::default();
        let g = Generator::new(&m, None, &special);
        let prompts = vec![
            vec![1u32, 2, 3, 4, 5, 6, 7],
            vec![9u32, 8],
            vec![4u32, 4, 4, 4],
        ];
        let (out, timing) = g.generate(&prompts, &GenerateConfig::greedy(12)).unwrap();
        for (p, o) in prompts.iter().zip(&out) {
            assert_eq!(o.tokens, greedy_no_cache(&m, p, 12), "prompt {p:?}");
            assert_eq!(o.finish, Finish::Length);
        }
        // Each prompt alone (no padding) gives the same as in the batch.
        for (p, o) in prompts.iter().zip(&out) {
            let (alone, _) = g
                .generate(std::slice::from_ref(p), &GenerateConfig::greedy(12))
                .unwrap();
            assert_eq!(alone[0].tokens, o.tokens);
        }
        assert_eq!(timing.prompt_tokens, 13);
        assert_eq!(timing.steps, 11);
    }

    /// A prompt given several times is prefilled once (an RL group): its rows decode from
    /// copies of that cache, each with its own sampler, and produce what each row computes
    /// with the copies prefilled separately.
    #[test]
    fn repeated_prompts_share_one_prefill() {
        let _rng = crate::torch_rng_lock();
        let m = model();
        let special = Special::default();
        let g = Generator::new(&m, None, &special);
        let a = vec![1u32, 2, 3, 4, 5, 6, 7];
        let b = vec![9u32, 8];
        let batch = vec![a.clone(), b.clone(), a.clone(), a.clone(), b.clone()];
        let (out, timing) = g.generate(&batch, &GenerateConfig::greedy(6)).unwrap();
        assert_eq!(
            timing.prompt_tokens, 9,
            "each distinct prompt prefilled once"
        );
        for (p, o) in batch.iter().zip(&out) {
            assert_eq!(o.tokens, greedy_no_cache(&m, p, 6), "prompt {p:?}");
            assert_eq!(o.prompt_tokens, p.len());
        }
        // Sampling: row i draws from its own generator, seeded by its index, so each copy
        // samples what it samples at the same index in a batch of distinct prompts.
        let cfg = GenerateConfig {
            sampling: Sampling {
                temperature: 1.3,
                ..Sampling::default()
            },
            seed: 5,
            ..GenerateConfig::greedy(8)
        };
        let shared = g.generate(&batch, &cfg).unwrap().0;
        assert_ne!(
            shared[0].tokens, shared[2].tokens,
            "copies sample independently"
        );
        for (i, p) in batch.iter().enumerate() {
            // The same row index with every other prompt different: no sharing at all.
            let mut distinct: Vec<Vec<u32>> = (0..batch.len())
                .map(|j| vec![10 + j as u32, 20, 30])
                .collect();
            distinct[i] = p.clone();
            let alone = g.generate(&distinct, &cfg).unwrap().0;
            assert_eq!(alone[i].tokens, shared[i].tokens, "row {i}");
        }
    }

    #[test]
    fn stop_ids_end_rows_and_the_context_is_respected() {
        let _rng = crate::torch_rng_lock();
        let m = model();
        let special = Special::default();
        let g = Generator::new(&m, None, &special);
        let free = g
            .generate(&[vec![1, 2, 3]], &GenerateConfig::greedy(8))
            .unwrap()
            .0;
        let stop_at = free[0].tokens[3];
        let first = free[0].tokens.iter().position(|&t| t == stop_at).unwrap();
        let cfg = GenerateConfig {
            stop_ids: vec![stop_at],
            ..GenerateConfig::greedy(8)
        };
        let stopped = g.generate(&[vec![1, 2, 3]], &cfg).unwrap().0;
        assert_eq!(stopped[0].finish, Finish::Stop);
        assert_eq!(stopped[0].stop_id, Some(stop_at));
        assert_eq!(stopped[0].tokens, free[0].tokens[..first].to_vec());
        // 38 prompt tokens leave room for 2 in a context of 40.
        let long: Vec<u32> = (0..38).map(|i| i % 50).collect();
        let out = g
            .generate(std::slice::from_ref(&long), &GenerateConfig::greedy(10))
            .unwrap()
            .0;
        assert_eq!((out[0].tokens.len(), out[0].finish), (2, Finish::Context));
        let too_long: Vec<u32> = (0..41).map(|i| i % 50).collect();
        let err = g
            .generate(&[too_long], &GenerateConfig::greedy(1))
            .unwrap_err()
            .to_string();
        assert!(err.contains("longer than the model's context"), "{err}");
        let err = g
            .generate(&[vec![99]], &GenerateConfig::greedy(1))
            .unwrap_err()
            .to_string();
        assert!(err.contains("outside the model's vocabulary"), "{err}");
    }

    #[test]
    fn sampling_is_seeded_per_prompt_and_respects_top_k() {
        let _rng = crate::torch_rng_lock();
        let m = model();
        let special = Special::default();
        let g = Generator::new(&m, None, &special);
        let cfg = GenerateConfig {
            sampling: Sampling {
                temperature: 1.5,
                top_k: 5,
                top_p: 0.9,
                repetition_penalty: 1.2,
            },
            seed: 42,
            ..GenerateConfig::greedy(10)
        };
        let a = g.generate(&[vec![1, 2], vec![3, 4, 5]], &cfg).unwrap().0;
        let b = g.generate(&[vec![1, 2], vec![3, 4, 5]], &cfg).unwrap().0;
        assert_eq!(a, b, "same seed, same samples");
        let other = GenerateConfig {
            seed: 43,
            ..cfg.clone()
        };
        let c = g.generate(&[vec![1, 2], vec![3, 4, 5]], &other).unwrap().0;
        assert_ne!(a, c, "another seed, other samples");
        let greedy = g
            .generate(&[vec![1, 2]], &GenerateConfig::greedy(10))
            .unwrap()
            .0;
        assert_ne!(a[0].tokens, greedy[0].tokens);
    }

    #[test]
    fn sample_row_filters() {
        let mut rng = SplitMix::new(1);
        let s = Sampling {
            temperature: 1.0,
            top_k: 2,
            ..Sampling::default()
        };
        let mut seen = std::collections::HashSet::new();
        for _ in 0..200 {
            let mut out = Vec::new();
            sample_row(&mut [0.0, 5.0, 4.9, 1.0], &[], &s, &mut rng, &mut out);
            seen.insert(out[0]);
        }
        assert_eq!(seen, [1u32, 2].into_iter().collect());
        // top_p small enough keeps only the best token.
        let s = Sampling {
            temperature: 1.0,
            top_p: 0.1,
            ..Sampling::default()
        };
        for _ in 0..50 {
            let mut out = Vec::new();
            sample_row(&mut [0.0, 5.0, 4.0, 1.0], &[], &s, &mut rng, &mut out);
            assert_eq!(out, vec![1]);
        }
        // The repetition penalty moves greedy off a seen token.
        let s = Sampling {
            repetition_penalty: 2.0,
            ..Sampling::default()
        };
        let mut out = Vec::new();
        sample_row(&mut [0.0, 5.0, 4.0, 1.0], &[1], &s, &mut rng, &mut out);
        assert_eq!(out, vec![2]);
        // Nothing cut (no top-k, top-p 1): draws follow the softmax at the temperature, and
        // a -inf logit is never drawn.
        let s = Sampling {
            temperature: 2.0,
            ..Sampling::default()
        };
        let logits = [0.0f32, 1.0, 3.0, f32::NEG_INFINITY, 2.0];
        let w: Vec<f64> = logits.iter().map(|&x| (x as f64 / 2.0).exp()).collect();
        let z: f64 = w.iter().sum();
        let n = 40_000;
        let mut counts = [0usize; 5];
        for _ in 0..n {
            let mut out = Vec::new();
            sample_row(&mut logits.clone(), &[], &s, &mut rng, &mut out);
            counts[out[0] as usize] += 1;
        }
        assert_eq!(counts[3], 0);
        // Past the sorted head: a flat softmax over 1,000 ids (many draws land beyond the
        // first SAMPLE_HEAD) picks what a walk over the fully sorted ids picks.
        let s = Sampling {
            temperature: 50.0,
            ..Sampling::default()
        };
        let mut g = SplitMix::new(9);
        let logits: Vec<f32> = (0..1000).map(|_| g.next_f64() as f32 * 10.0).collect();
        let mut order: Vec<u32> = (0..1000).collect();
        order.sort_by(|&a, &b| {
            logits[b as usize]
                .total_cmp(&logits[a as usize])
                .then(a.cmp(&b))
        });
        let rank: std::collections::HashMap<u32, usize> =
            order.iter().enumerate().map(|(r, &i)| (i, r)).collect();
        let max = logits.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b)) / 50.0;
        let e = |i: u32| ((logits[i as usize] / 50.0 - max) as f64).exp();
        let total: f64 = (0..1000).map(e).sum();
        let (mut a, mut b) = (SplitMix::new(77), SplitMix::new(77));
        let mut beyond = 0;
        for _ in 0..300 {
            let mut out = Vec::new();
            sample_row(&mut logits.clone(), &[], &s, &mut a, &mut out);
            let mut u = b.next_f64() * total;
            let want = *order
                .iter()
                .find(|&&i| {
                    u -= e(i);
                    u <= 0.0
                })
                .unwrap_or(&order[999]);
            assert_eq!(out[0], want);
            beyond += usize::from(rank[&want] >= SAMPLE_HEAD);
        }
        assert!(
            beyond > 100,
            "only {beyond} draws went past the sorted head"
        );
        for (i, c) in counts.iter().enumerate() {
            let f = *c as f64 / n as f64;
            // Four standard errors of a frequency near 0.3 over 40,000 draws is ~0.009.
            assert!((f - w[i] / z).abs() < 0.01, "id {i}: {f} vs {}", w[i] / z);
        }
    }
}
