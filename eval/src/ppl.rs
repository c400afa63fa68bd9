//! Perplexity of a model on a tokenized split, overall and per source.
//!
//! **What is scored.** `clm` splits: each packed row of `seq_len + 1` ids is read as inputs
//! `tokens[..seq_len]` and targets `tokens[1..]`, exactly as the trainer reads it. Rows do
//! not overlap, so every id is a target at most once: the first id of each row is only
//! context (it has no preceding id in the row), and the padding that ends a work unit's
//! last row is not scored. `sft` splits: the response tokens (`loss_mask` = 1), each
//! predicted from everything before it in its conversation (a packed split's rows are cut
//! at `doc_starts` and each conversation scored alone, as the trainer's block-diagonal
//! attention trains it, so packed and unpacked splits score the same). The figure is
//! token-weighted:
//! `exp(sum of the targets' negative log-likelihoods / targets)`.
//!
//! Rows longer than the model's context are cut into non-overlapping windows of the
//! context, each read from its own start, so every target is still scored once.
//!
//! **Padding.** Padded rows end in a run of the pad id (the end-of-text id when the
//! tokenizer has none). When pad and end-of-text are the same id, the first id of that run
//! is the last document's end-of-text and is kept; the rest is padding. The real ids found
//! this way are counted and checked against `meta.json`'s `tokens` when the whole split is
//! read.
//!
//! **Per source.** Every row names its documents (`doc_ids`) and where each starts
//! (`doc_starts`), so every target belongs to one document. A document's source comes from
//! the `docs` shards the split was tokenized from (listed in the tokenize output's
//! `manifest.json`, one directory up), or from shards given explicitly. Targets whose
//! document is in none of them count under `(unknown)`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::path::{Path, PathBuf};

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{Int32Type, Int8Type};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use quern_core::error::{Context, IoContext, Place};
use quern_core::{Error, Result};
use quern_models::transformer::{Extras, Transformer};
use quern_tokenize::meta::{Objective, TokenMeta};
use quern_tokenize::schema;
use serde::{Deserialize, Serialize};
use tch::{Kind, Tensor};

use crate::score::torch_err;

/// Name under which targets of documents without a known source are counted.
pub const UNKNOWN_SOURCE: &str = "(unknown)";

/// How to run a perplexity evaluation.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PplOptions {
    /// Rows per forward pass (default 8 when 0).
    pub batch_size: usize,
    /// Only the first N rows of the split (in shard order).
    pub max_rows: Option<u64>,
    /// `docs` shards (files or directories of `.parquet`) to find sources in, instead of
    /// those the tokenize manifest lists.
    pub docs: Vec<PathBuf>,
}

/// Perplexity of one group of targets.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Ppl {
    /// Targets scored.
    pub tokens: u64,
    /// Mean negative log-likelihood per target (nats).
    pub nll: f64,
    /// `exp(nll)`.
    pub ppl: f64,
}

/// The result of [`perplexity`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PplReport {
    pub split: String,
    pub objective: String,
    pub rows: u64,
    /// Real (non-padding) ids in the rows read.
    pub ids: u64,
    pub overall: Ppl,
    /// By source (empty when no `docs` shards could be found; see `sources_from`).
    pub sources: BTreeMap<String, Ppl>,
    /// Where the sources came from (`docs` shards), or why there are none.
    pub sources_from: String,
    pub seconds: f64,
}

#[derive(Default)]
struct Acc {
    tokens: u64,
    nll: f64,
}

impl Acc {
    fn finish(&self) -> Ppl {
        let nll = if self.tokens > 0 {
            self.nll / self.tokens as f64
        } else {
            0.0
        };
        Ppl {
            tokens: self.tokens,
            nll,
            ppl: nll.exp(),
        }
    }
}

/// One row, ready to score: the ids, which targets count, and each target's document.
struct Prepared {
    ids: Vec<i64>,
    /// For input position `p` (predicting `ids[p + 1]`): the document index, or `None`
    /// when the target is not scored.
    target_doc: Vec<Option<usize>>,
    doc_ids: Vec<String>,
}

fn read_rows(
    split: &Path,
    meta: &TokenMeta,
    max_rows: Option<u64>,
    // Each piece to score, and whether it begins a stored row (a packed sft row gives one
    // piece per conversation).
    mut each: impl FnMut(Prepared, bool) -> Result<bool>,
) -> Result<()> {
    let pad = meta.pad_id.or(meta.eos_id).map(|p| p as i32);
    let pad_is_eos = pad.is_some() && pad.map(|p| p as u32) == meta.eos_id;
    let mut left = max_rows.unwrap_or(u64::MAX);
    for shard in &meta.shards {
        let path = split.join(&shard.file);
        let file = File::open(&path).at(&path)?;
        let reader = ParquetRecordBatchReaderBuilder::try_new(file)
            .with_context(|| format!("reading {}", path.display()))?
            .with_batch_size(256)
            .build()
            .with_context(|| format!("reading {}", path.display()))?;
        for batch in reader {
            let batch: RecordBatch =
                batch.with_context(|| format!("reading {}", path.display()))?;
            let col = |name: &str| {
                batch.column_by_name(name).ok_or_else(|| {
                    Error::bad_input(
                        Place::file(&path),
                        format!("no `{name}` column (not a {} shard)", meta.objective),
                    )
                })
            };
            let doc_ids = col(schema::DOC_IDS)?.as_list::<i32>();
            for r in 0..batch.num_rows() {
                if left == 0 {
                    return Ok(());
                }
                left -= 1;
                let docs: Vec<String> = {
                    let a = doc_ids.value(r);
                    let s = a.as_string::<i32>();
                    (0..s.len()).map(|i| s.value(i).to_string()).collect()
                };
                let prepared = match meta.objective {
                    // A packed sft row is scored as its conversations, each alone (as the
                    // trainer trains them), each counted for its own document.
                    Objective::Sft if meta.packed => {
                        let ids = col(schema::INPUT_IDS)?.as_list::<i32>().value(r);
                        let ids: Vec<i32> = ids.as_primitive::<Int32Type>().values().to_vec();
                        let mask = col(schema::LOSS_MASK)?.as_list::<i32>().value(r);
                        let mask: Vec<i8> = mask.as_primitive::<Int8Type>().values().to_vec();
                        let starts = col(schema::DOC_STARTS)?.as_list::<i32>().value(r);
                        let starts: Vec<i32> = starts.as_primitive::<Int32Type>().values().to_vec();
                        let ok = starts.first() == Some(&0)
                            && starts.windows(2).all(|w| w[0] < w[1])
                            && starts.last().is_some_and(|&l| (l as usize) < ids.len())
                            && starts.len() == docs.len()
                            && mask.len() == ids.len();
                        if !ok {
                            return Err(Error::bad_input(
                                Place::file(&path),
                                "a packed sft row whose doc_starts, doc_ids and loss_mask \
                                 do not fit its input_ids; rerun quern tokenize",
                            ));
                        }
                        let mut convs = Vec::with_capacity(starts.len());
                        for (k, &s) in starts.iter().enumerate() {
                            let (s, e) = (
                                s as usize,
                                starts.get(k + 1).map_or(ids.len(), |&e| e as usize),
                            );
                            convs.push(Prepared {
                                target_doc: (s..e.saturating_sub(1))
                                    .map(|p| (mask[p + 1] == 1).then_some(0))
                                    .collect(),
                                ids: ids[s..e].iter().map(|&x| x as i64).collect(),
                                doc_ids: vec![docs[k].clone()],
                            });
                        }
                        for (k, c) in convs.into_iter().enumerate() {
                            if !each(c, k == 0)? {
                                return Ok(());
                            }
                        }
                        continue;
                    }
                    Objective::Clm => {
                        let toks = col(schema::TOKENS)?.as_list::<i32>().value(r);
                        let toks: Vec<i32> = toks.as_primitive::<Int32Type>().values().to_vec();
                        let starts = col(schema::DOC_STARTS)?.as_list::<i32>().value(r);
                        let starts: Vec<i32> = starts.as_primitive::<Int32Type>().values().to_vec();
                        packed_targets(&toks, &starts, docs, pad, pad_is_eos)
                    }
                    Objective::Sft => {
                        let ids = col(schema::INPUT_IDS)?.as_list::<i32>().value(r);
                        let ids: Vec<i32> = ids.as_primitive::<Int32Type>().values().to_vec();
                        let mask = col(schema::LOSS_MASK)?.as_list::<i32>().value(r);
                        let mask: Vec<i8> = mask.as_primitive::<Int8Type>().values().to_vec();
                        Prepared {
                            target_doc: (0..ids.len().saturating_sub(1))
                                .map(|p| (mask.get(p + 1) == Some(&1)).then_some(0))
                                .collect(),
                            ids: ids.iter().map(|&x| x as i64).collect(),
                            doc_ids: docs,
                        }
                    }
                    other => {
                        return Err(Error::usage(format!(
                            "perplexity needs a clm or sft split; {} holds {other} rows",
                            split.display()
                        )))
                    }
                };
                if !each(prepared, true)? {
                    return Ok(());
                }
            }
        }
    }
    Ok(())
}

/// Which targets of a packed row count, and their documents (see the module docs).
fn packed_targets(
    toks: &[i32],
    starts: &[i32],
    docs: Vec<String>,
    pad: Option<i32>,
    pad_is_eos: bool,
) -> Prepared {
    let mut real = toks.len();
    if let Some(p) = pad {
        let run = toks.iter().rev().take_while(|&&t| t == p).count();
        real = toks.len() - run;
        if pad_is_eos && run > 0 {
            real += 1;
        }
        // An empty document at the very end is one end-of-text id at its start.
        if let Some(&last) = starts.last() {
            real = real.max(last as usize + 1).min(toks.len());
        }
    }
    // `docs[0]` continues from the previous row unless a document starts at 0.
    let offset = usize::from(starts.first() != Some(&0));
    let mut target_doc = Vec::with_capacity(toks.len().saturating_sub(1));
    let mut k = 0; // starts at or before the target
    for p in 0..toks.len().saturating_sub(1) {
        let i = p + 1;
        while k < starts.len() && starts[k] as usize <= i {
            k += 1;
        }
        if i < real {
            let doc = (offset + k).saturating_sub(1);
            target_doc.push(Some(doc.min(docs.len().saturating_sub(1))));
        } else {
            target_doc.push(None);
        }
    }
    Prepared {
        ids: toks.iter().map(|&x| x as i64).collect(),
        target_doc,
        doc_ids: docs,
    }
}

/// Finds the `docs` shards the split was tokenized from: the tokenize output's manifest
/// (`split/../manifest.json`) lists them.
fn manifest_docs(split: &Path) -> Result<Vec<PathBuf>> {
    let dir = split
        .canonicalize()
        .at(split)?
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let Some(manifest) = quern_core::manifest::Manifest::load(&dir)? else {
        return Ok(Vec::new());
    };
    let mut files: Vec<PathBuf> = Vec::new();
    if let Some(acc) = &manifest.accounting {
        files.extend(acc.files.iter().map(|f| PathBuf::from(&f.file)));
    }
    for unit in manifest.units.values() {
        files.extend(unit.files.iter().map(|f| PathBuf::from(&f.file)));
    }
    files.sort();
    files.dedup();
    Ok(files)
}

fn expand(paths: &[PathBuf]) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut v: Vec<PathBuf> = std::fs::read_dir(p)
                .at(p)?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| f.extension().is_some_and(|e| e == "parquet"))
                .collect();
            v.sort();
            out.extend(v);
        } else {
            out.push(p.clone());
        }
    }
    Ok(out)
}

/// Reads `id` and `source` of the wanted documents from `docs` shards, or from the JSONL
/// files `quern tokenize` read directly (whose records may have neither: their targets then
/// count under [`UNKNOWN_SOURCE`]).
fn sources_of(files: &[PathBuf], wanted: &HashSet<String>) -> Result<HashMap<String, String>> {
    use quern_core::schema::{ID, SOURCE};
    use quern_tokenize::input::{is_jsonl, parquet_columns, read_columns};
    let mut map = HashMap::new();
    for path in files {
        let names = parquet_columns(path)?;
        if let Some(name) = [ID, SOURCE]
            .into_iter()
            .find(|c| !names.iter().any(|n| n == c))
        {
            if is_jsonl(path) {
                continue;
            }
            return Err(Error::bad_input(
                Place::file(path),
                format!("no `{name}` column: not a docs shard"),
            ));
        }
        for batch in read_columns(path, &[ID, SOURCE], 8192)? {
            let batch = batch?;
            let ids = arrow::compute::cast(
                batch.column_by_name(ID).expect("projected"),
                &arrow::datatypes::DataType::Utf8,
            )?;
            let srcs = arrow::compute::cast(
                batch.column_by_name(SOURCE).expect("projected"),
                &arrow::datatypes::DataType::Utf8,
            )?;
            let (ids, srcs) = (ids.as_string::<i32>(), srcs.as_string::<i32>());
            for i in 0..ids.len() {
                if ids.is_valid(i) && wanted.contains(ids.value(i)) {
                    let src = if srcs.is_valid(i) {
                        srcs.value(i)
                    } else {
                        UNKNOWN_SOURCE
                    };
                    map.insert(ids.value(i).to_string(), src.to_string());
                }
            }
        }
    }
    Ok(map)
}

/// Perplexity of `model` on the tokenized split `split` (see the module docs).
/// `progress(rows_done, rows_total)` is called after every batch.
pub fn perplexity(
    model: &Transformer,
    split: &Path,
    opts: &PplOptions,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<PplReport> {
    let t0 = std::time::Instant::now();
    let meta = TokenMeta::load(split)?;
    if !matches!(meta.objective, Objective::Clm | Objective::Sft) {
        return Err(Error::usage(format!(
            "perplexity needs a clm or sft split; {} holds {} rows",
            split.display(),
            meta.objective
        )));
    }
    if meta.vocab_size as i64 > model.vocab_size() {
        return Err(Error::usage(format!(
            "the split's tokenizer has {} ids but the model only {}: they were not made for each other",
            meta.vocab_size,
            model.vocab_size()
        )));
    }
    let batch_size = if opts.batch_size == 0 {
        8
    } else {
        opts.batch_size
    };
    let total = opts.max_rows.unwrap_or(meta.rows).min(meta.rows);
    let max_len = model.seq_len() as usize;

    // Documents' sources, looked up for the documents the rows name.
    let mut wanted = HashSet::new();
    read_rows(split, &meta, opts.max_rows, |p, _| {
        wanted.extend(p.doc_ids);
        Ok(true)
    })?;
    let (source_files, sources_from) = if opts.docs.is_empty() {
        match manifest_docs(split) {
            Ok(f) if !f.is_empty() && f.iter().all(|p| p.is_file()) => {
                let from = format!("{} docs shards listed in the tokenize manifest", f.len());
                (f, from)
            }
            Ok(f) if !f.is_empty() => (
                Vec::new(),
                "the docs shards the tokenize manifest lists are gone; give them with --docs"
                    .into(),
            ),
            _ => (
                Vec::new(),
                "no tokenize manifest beside the split; give the docs shards with --docs".into(),
            ),
        }
    } else {
        let f = expand(&opts.docs)?;
        let from = format!("{} docs shards given", f.len());
        (f, from)
    };
    let source_of = sources_of(&source_files, &wanted)?;

    let mut overall = Acc::default();
    let mut by_source: BTreeMap<String, Acc> = BTreeMap::new();
    let mut rows = 0u64;
    let mut ids_seen = 0u64;
    let device = model.device();
    let _guard = tch::no_grad_guard();
    let mut batch: Vec<Prepared> = Vec::with_capacity(batch_size);
    let run_batch = |batch: &mut Vec<Prepared>,
                     overall: &mut Acc,
                     by_source: &mut BTreeMap<String, Acc>|
     -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        // At most `max_len`: rows were cut into windows of the model's context.
        let t = batch
            .iter()
            .map(|p| p.ids.len())
            .max()
            .unwrap_or(1)
            .saturating_sub(1);
        let b = batch.len();
        let mut inp = vec![0i64; b * t];
        let mut tgt = vec![-100i64; b * t];
        for (j, p) in batch.iter().enumerate() {
            for q in 0..p.ids.len().saturating_sub(1) {
                inp[j * t + q] = p.ids[q];
                if p.target_doc[q].is_some() {
                    tgt[j * t + q] = p.ids[q + 1];
                }
            }
        }
        let x = Tensor::from_slice(&inp)
            .view([b as i64, t as i64])
            .to(device);
        let y = Tensor::from_slice(&tgt).to(device);
        let h = model.hidden(&x, &Extras::default(), true, false, None)?;
        let logits = model.logits(&h).to_kind(Kind::Float);
        let v = logits.size()[2];
        let nll = logits
            .view([-1, v])
            .f_cross_entropy_loss::<Tensor>(&y, None, tch::Reduction::None, -100, 0.0)
            .map_err(torch_err("computing the loss"))?;
        let nll: Vec<f32> = Vec::try_from(nll.to_device(tch::Device::Cpu))
            .map_err(torch_err("reading the loss"))?;
        for (j, p) in batch.iter().enumerate() {
            for q in 0..p.ids.len().saturating_sub(1) {
                if tgt[j * t + q] == -100 {
                    continue;
                }
                let l = nll[j * t + q] as f64;
                overall.tokens += 1;
                overall.nll += l;
                let src = p.target_doc[q]
                    .and_then(|d| p.doc_ids.get(d))
                    .and_then(|id| source_of.get(id))
                    .map_or(UNKNOWN_SOURCE, String::as_str);
                let a = by_source.entry(src.to_string()).or_default();
                a.tokens += 1;
                a.nll += l;
            }
        }
        batch.clear();
        Ok(())
    };
    read_rows(split, &meta, opts.max_rows, |p, new_row| {
        rows += u64::from(new_row);
        ids_seen += real_ids(&p);
        for piece in windows(p, max_len) {
            batch.push(piece);
            if batch.len() == batch_size {
                run_batch(&mut batch, &mut overall, &mut by_source)?;
                progress(rows, total);
            }
        }
        Ok(true)
    })?;
    run_batch(&mut batch, &mut overall, &mut by_source)?;
    progress(rows, total);
    if meta.objective == Objective::Clm && opts.max_rows.is_none() && ids_seen != meta.tokens {
        return Err(Error::bad_input(
            Place::file(split.join(quern_tokenize::meta::META_JSON)),
            format!(
                "meta.json counts {} ids but the rows hold {ids_seen} besides padding",
                meta.tokens
            ),
        ));
    }
    if source_files.is_empty() {
        by_source.clear();
    }
    Ok(PplReport {
        split: split.display().to_string(),
        objective: meta.objective.to_string(),
        rows,
        ids: ids_seen,
        overall: overall.finish(),
        sources: by_source
            .iter()
            .map(|(k, a)| (k.clone(), a.finish()))
            .collect(),
        sources_from,
        seconds: t0.elapsed().as_secs_f64(),
    })
}

/// Cuts a row longer than the model's context into non-overlapping windows of at most
/// `max_len` inputs: window `j` reads `ids[j*max_len ..= (j+1)*max_len]`, so every target
/// is still scored once (the last target of a window is the first input of the next).
fn windows(p: Prepared, max_len: usize) -> Vec<Prepared> {
    let n = p.ids.len().saturating_sub(1);
    if n <= max_len || max_len == 0 {
        return vec![p];
    }
    (0..n)
        .step_by(max_len)
        .map(|start| {
            let end = (start + max_len).min(n);
            Prepared {
                ids: p.ids[start..=end].to_vec(),
                target_doc: p.target_doc[start..end].to_vec(),
                doc_ids: p.doc_ids.clone(),
            }
        })
        .collect()
}

/// Real ids of a packed row: the targets plus the row's first id.
fn real_ids(p: &Prepared) -> u64 {
    let scored = p.target_doc.iter().filter(|d| d.is_some()).count() as u64;
    scored + u64::from(!p.ids.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn docs(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("d{i}")).collect()
    }

    #[test]
    fn long_rows_are_cut_into_windows_that_score_every_target_once() {
        let p = packed_targets(&[1, 2, 3, 4, 5, 6, 7, 8], &[0, 5], docs(2), Some(0), false);
        let want = p.target_doc.clone();
        let w = windows(p, 3);
        assert_eq!(w.len(), 3);
        assert_eq!(w[0].ids, vec![1, 2, 3, 4]);
        assert_eq!(w[1].ids, vec![4, 5, 6, 7]);
        assert_eq!(w[2].ids, vec![7, 8]);
        let got: Vec<Option<usize>> = w.iter().flat_map(|x| x.target_doc.clone()).collect();
        assert_eq!(got, want);
        for x in &w {
            assert_eq!(x.target_doc.len() + 1, x.ids.len());
        }
    }

    #[test]
    fn packed_rows_map_targets_to_documents_and_skip_padding() {
        // A row continuing d0, then d1 starting at 3, then padding (pad = eos = 9).
        let p = packed_targets(&[5, 6, 9, 7, 8, 9, 9, 9], &[3], docs(2), Some(9), true);
        assert_eq!(
            p.target_doc,
            vec![Some(0), Some(0), Some(1), Some(1), Some(1), None, None]
        );
        assert_eq!(real_ids(&p), 6);
        // Starting with a document at 0, no padding, distinct pad id 0.
        let p = packed_targets(&[1, 2, 3, 4, 5], &[0, 2], docs(2), Some(0), false);
        assert_eq!(p.target_doc, vec![Some(0), Some(1), Some(1), Some(1)]);
        // A distinct pad id: the whole trailing run is padding.
        let p = packed_targets(&[1, 2, 3, 0, 0], &[0], docs(1), Some(0), false);
        assert_eq!(p.target_doc, vec![Some(0), Some(0), None, None]);
        assert_eq!(real_ids(&p), 3);
        // An empty document at the end (just its end-of-text id) is not padding.
        let p = packed_targets(&[1, 9, 9, 9], &[0, 2], docs(2), Some(9), true);
        assert_eq!(p.target_doc, vec![Some(0), Some(1), None]);
    }
}
