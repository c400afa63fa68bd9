//! Tokenizing a corpus into tokenized shards: `quern tokenize` (run on a build's output; a
//! pipeline file has no `[tokenize]` section, `quern build` refuses one).
//!
//! Input is the `docs` shards of a build (or any Parquet with the configured columns).
//! Output, under `out/`:
//!
//! - one directory per split (the `split` column's values; everything goes to `train/`
//!   when there is no such column), each with shards `part-<unit>-<k>.parquet`,
//!   `meta.json` and a copy of `tokenizer.json`;
//! - `rejected/`: documents that could not become rows (for example an `sft` conversation
//!   without an assistant turn), with `rejected_by = "tokenize"` and a reason;
//! - `tokenizer.json` (the one used, trained here or copied), and `manifest.json`, whose
//!   `tokens` table lists every split's shards (so `quern sql --corpus out/` sees them).
//!
//! **Work units and resume.** Each input shard is one unit: its documents are encoded in
//! parallel batches (`encode_batch_fast`, rayon), packed in input order and written; then
//! the unit is recorded in the manifest. A rerun with the same inputs and config skips the
//! recorded units, so an interrupted run resumes; a different run into the same directory is
//! refused. Packing restarts in every unit, so each input shard ends with one padded row
//! (see [`crate::pack`]); rows never mix documents of two input shards, which keeps units
//! independent and the output deterministic.
//!
//! **Accounting.** Every input document is kept (it contributed ids to a row) or rejected
//! (with a reason); the totals are checked and stored in the manifest before the run
//! reports success. An empty document still contributes its end-of-text id.
//!
//! **sft rows.** One conversation per row, or several whole conversations per row with
//! `pack = true` (first fit, see [`crate::pack::SftPacker`]; `doc_starts` marks where each
//! begins, and `meta.json` says `"packed": true`): `{"messages": [{"role", "content"}...]}`
//! records (a `messages` column holding a JSON array or a list of `role`/`content` structs;
//! JSONL input gives the former) or prompt/response records (a two-turn conversation),
//! rendered with the plain `chat_template` or the model's Jinja template (`jinja_template`),
//! see [`crate::chat`]. `loss_mask` is 1 on every assistant turn's tokens, its end-of-turn
//! text included (and, with the plain template, the end-of-text id after the last turn), 0
//! elsewhere. The beginning-of-text id is added with `add_bos` unless the rendered text
//! already starts with it, so a template that writes `{{ bos_token }}` never doubles it.
//! A conversation longer than `seq_len` is cut to `seq_len` ids (counted in `truncated` and
//! `dropped`; rejected as `response_truncated` when the cut leaves no trained id), packed or
//! not: packed, it fills a row of its own.
//!
//! **nsp rows.** BERT's sentence pairs, `[CLS] A [SEP] B [SEP]` with token types and a
//! next-sentence label, made per split of each input shard once the shard is read (its
//! documents' sentences are held until then), as [`crate::nsp`] describes; a document
//! without text, or alone in its split of its shard with a single sentence, is rejected.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch, StringArray};
use arrow::compute::cast;
use arrow::datatypes::DataType;
use indicatif::{ProgressBar, ProgressStyle};
use quern_core::error::{Context, IoContext, Place};
use quern_core::manifest::{Accounting, FileCounts, Manifest, StageCounts, UnitRecord};
use quern_core::schema::{rejected_schema, ID, META, SOURCE, TEXT};
use quern_core::shard::{write_atomic, ShardInfo, ShardOptions, ShardWriter};
use quern_core::{Error, Result};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use tokenizers::Tokenizer;

use crate::chat::{self, ChatTemplate, Message, Reject, Segment};
use crate::input::{is_jsonl, parquet_columns, read_columns, utf8_column, TextSource, TextStream};
use crate::meta::{MetaShard, Objective, TokenMeta, TOKENIZER_JSON};
use crate::nsp::{NspDoc, PairConfig};
use crate::pack::{Packer, SftPacker, Tail};
use crate::schema::{split_schema, RowBuilder};
use crate::tokenizer::{
    load_tokenizer, save_tokenizer, train_tokenizer, SpecialIds, SpecialNames, TrainTokenizerConfig,
};

/// Manifest kind of a tokenize output.
pub const KIND: &str = "tokenize";
/// Table name of the tokenized shards in the manifest (and in `quern sql`).
pub const TOKENS_TABLE: &str = "tokens";
/// The stage name in `rejected/` and in the accounting.
pub const STAGE: &str = "tokenize";

/// How to tokenize: `quern tokenize`'s flags, or its `--config` file (the options alone or
/// as a `[tokenize]` table).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TokenizeConfig {
    /// Path of a `tokenizer.json` to use. Default none: then `train_tokenizer` must be set.
    pub tokenizer: Option<PathBuf>,
    /// Train a tokenizer on the corpus (its `train` split when there is a `split` column)
    /// instead of loading one. Default none.
    pub train_tokenizer: Option<TrainTokenizerConfig>,
    /// `clm` (default), `mlm`, `sft`, `cls`, `rm` or `dpo`.
    pub objective: Objective,
    /// Sequence length. Packed rows hold `seq_len + 1` ids; other rows at most `seq_len`.
    /// Default 1024.
    pub seq_len: usize,
    /// Put the beginning-of-text id before every document. Default false (GPT-2 style:
    /// documents are only separated by end-of-text).
    pub add_bos: bool,
    /// Packed objectives: `pad` (default) or `drop` the partial last row of each unit.
    pub tail: Tail,
    /// Special-token names, when the usual spellings do not find them. Default: found.
    pub special_tokens: SpecialNames,
    /// Column of the document text (`clm`, `mlm`, `cls`). Default `text`.
    pub text_column: String,
    /// Column of the document id. Default `id` (row numbers when missing).
    pub id_column: String,
    /// Column that routes documents to split directories. Default `split`; when the input
    /// has no such column every document goes to `train/`; a null value also means `train`.
    pub split_column: String,
    /// `sft`/`rm`/`dpo`: the prompt column. Default `prompt`.
    pub prompt_column: String,
    /// `sft`: the response column. Default `response`.
    pub response_column: String,
    /// `sft`: the conversation column: a JSON array of `{"role", "content"}` objects (as text;
    /// a JSONL input's `messages` field) or a list of `role`/`content` structs (Hugging Face
    /// Parquet). A row whose value is null falls back to the prompt/response columns.
    /// Default `messages`.
    pub messages_column: String,
    /// `sft`: render conversations with this Jinja chat template (Hugging Face conventions)
    /// instead of `chat_template`: a quern model directory (`model.json`), a Hugging Face
    /// model directory (`chat_template.jinja` or `tokenizer_config.json`), one of those files,
    /// or a file holding the template. For a GGUF model, `quern import` it and give the
    /// directory. Every assistant turn is trained (see `quern_tokenize::chat`); no
    /// end-of-text id is added (the template's end-of-turn text ends each turn). Default
    /// none (the plain `chat_template`).
    pub jinja_template: Option<PathBuf>,
    /// `sft`: pack several whole conversations into each row (up to `seq_len` ids, first
    /// fit; `doc_starts` marks where each begins), which the trainer trains with attention and
    /// positions kept inside each conversation. Default false: one conversation per row,
    /// right-padded by the trainer to the longest row of a micro-batch.
    pub pack: bool,
    /// `rm`/`dpo`: the preferred completion. Default `chosen`.
    pub chosen_column: String,
    /// `rm`/`dpo`: the dispreferred completion. Default `rejected`.
    pub rejected_column: String,
    /// `cls`: the label column (integers, booleans or strings). Default `label`.
    pub label_column: String,
    /// `cls` with string labels: the label names in id order. Default: the distinct values
    /// found in the corpus, sorted. A label outside a given list rejects the document.
    pub labels: Vec<String>,
    /// `nsp`: seed of the pairing (which B is random and from where, short targets, the
    /// truncation's sides); the same inputs and seed give the same rows. Default 12345
    /// (BERT's `random_seed`).
    pub nsp_seed: u64,
    /// `nsp`: probability, in [0, 1], that a document's pairs aim at a shorter length drawn
    /// from `2..=seq_len - 3` (BERT's `short_seq_prob`). Default 0.1.
    pub nsp_short_seq_prob: f64,
    /// `sft`/`rm`/`dpo`: how a prompt and a response become text; must contain `{prompt}`
    /// and then `{response}`. The loss counts on `{response}` and what follows it. A
    /// conversation (`messages`) is its assistant turns each rendered so, with the turns
    /// before each (system and user, joined by a blank line) as `{prompt}`.
    /// Default `<|user|>\n{prompt}<|end|>\n<|assistant|>\n{response}<|end|>`.
    pub chat_template: String,
    /// Documents per encode batch. Default 2048.
    pub batch_docs: usize,
    /// How output shards are cut. Default: core's defaults with row groups of 1024 rows.
    pub shard: ShardOptions,
}

impl Default for TokenizeConfig {
    fn default() -> Self {
        TokenizeConfig {
            tokenizer: None,
            train_tokenizer: None,
            objective: Objective::Clm,
            seq_len: 1024,
            add_bos: false,
            tail: Tail::Pad,
            special_tokens: SpecialNames::default(),
            text_column: TEXT.into(),
            id_column: ID.into(),
            split_column: "split".into(),
            prompt_column: "prompt".into(),
            response_column: "response".into(),
            messages_column: "messages".into(),
            jinja_template: None,
            pack: false,
            chosen_column: "chosen".into(),
            rejected_column: "rejected".into(),
            label_column: "label".into(),
            labels: Vec::new(),
            nsp_seed: 12345,
            nsp_short_seq_prob: 0.1,
            chat_template: "<|user|>\n{prompt}<|end|>\n<|assistant|>\n{response}<|end|>".into(),
            batch_docs: 2048,
            shard: ShardOptions::default().with_row_group_rows(1024),
        }
    }
}

impl TokenizeConfig {
    pub fn with_tokenizer(mut self, p: impl Into<PathBuf>) -> Self {
        self.tokenizer = Some(p.into());
        self
    }
    pub fn with_objective(mut self, o: Objective) -> Self {
        self.objective = o;
        self
    }
    pub fn with_seq_len(mut self, n: usize) -> Self {
        self.seq_len = n;
        self
    }
    pub fn with_train_tokenizer(mut self, t: TrainTokenizerConfig) -> Self {
        self.train_tokenizer = Some(t);
        self
    }

    /// Refuses a configuration that cannot work, before any data is read.
    pub fn check(&self) -> Result<()> {
        match (&self.tokenizer, &self.train_tokenizer) {
            (None, None) => {
                return Err(Error::bad_config(
                    "tokenizer",
                    "give a tokenizer.json path, or a train_tokenizer table",
                ));
            }
            (Some(_), Some(_)) => {
                return Err(Error::bad_config(
                    "train_tokenizer",
                    "give either tokenizer or train_tokenizer, not both",
                ));
            }
            _ => {}
        }
        if self.seq_len < 2 {
            return Err(Error::bad_config(
                "seq_len",
                format!("{} is too short; use at least 2", self.seq_len),
            ));
        }
        if self.seq_len > i32::MAX as usize / 2 {
            return Err(Error::bad_config("seq_len", "is too large"));
        }
        if self.batch_docs == 0 {
            return Err(Error::bad_config("batch_docs", "must be at least 1"));
        }
        if self.pack && self.objective != Objective::Sft {
            return Err(Error::bad_config(
                "pack",
                format!(
                    "applies to sft only (`{}` rows are {})",
                    self.objective,
                    if self.objective.is_packed() {
                        "always packed"
                    } else {
                        "never packed: each row is one example"
                    }
                ),
            ));
        }
        if self.objective == Objective::Nsp {
            if self.seq_len < 5 {
                return Err(Error::bad_config(
                    "seq_len",
                    format!(
                        "{} is too short for nsp rows ([CLS] A [SEP] B [SEP]); use at least 5",
                        self.seq_len
                    ),
                ));
            }
            if self.add_bos {
                return Err(Error::bad_config(
                    "add_bos",
                    "nsp rows always start with [CLS], the beginning-of-text token: leave add_bos out",
                ));
            }
            if !(0.0..=1.0).contains(&self.nsp_short_seq_prob) {
                return Err(Error::bad_config(
                    "nsp_short_seq_prob",
                    format!("must be in [0, 1], got {}", self.nsp_short_seq_prob),
                ));
            }
        } else {
            let d = TokenizeConfig::default();
            for (key, set) in [
                ("nsp_seed", self.nsp_seed != d.nsp_seed),
                (
                    "nsp_short_seq_prob",
                    self.nsp_short_seq_prob != d.nsp_short_seq_prob,
                ),
            ] {
                if set {
                    return Err(Error::bad_config(
                        key,
                        format!("applies to nsp only, not `{}`", self.objective),
                    ));
                }
            }
        }
        if self.jinja_template.is_some() && self.objective != Objective::Sft {
            return Err(Error::bad_config(
                "jinja_template",
                format!("applies to sft only, not `{}`", self.objective),
            ));
        }
        let t = &self.chat_template;
        match (t.find("{prompt}"), t.find("{response}")) {
            (Some(p), Some(r)) if p < r => {}
            _ => {
                return Err(Error::bad_config(
                    "chat_template",
                    format!("`{t}` must contain `{{prompt}}` and, after it, `{{response}}`"),
                ));
            }
        }
        Ok(())
    }

    /// The template cut in two: the text before `{response}` (with `{prompt}` in it), and
    /// the text after it.
    fn template_parts(&self) -> (String, String) {
        let r = self.chat_template.find("{response}").expect("checked");
        (
            self.chat_template[..r].to_string(),
            self.chat_template[r + "{response}".len()..].to_string(),
        )
    }
}

/// How a run is carried out (not part of the configuration's identity).
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Replace an output directory that holds a different run.
    pub force: bool,
    /// Print one line per finished unit to stderr.
    pub verbose: bool,
    /// Draw a progress bar on stderr (units done, documents and documents/s, time left).
    pub progress: bool,
}

/// What one split received.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SplitStats {
    pub rows: u64,
    /// Ids of documents and separators (not padding).
    pub tokens: u64,
    pub documents: u64,
    /// Pad ids added to fill the last row of units.
    pub padding: u64,
    /// Ids dropped with the tail (`tail = "drop"`) or by truncation.
    pub dropped: u64,
    /// Rows (non-packed objectives; `sft`: conversations, packed or not) cut to `seq_len`.
    pub truncated: u64,
    /// `nsp`: rows whose B follows A (label 0).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub nsp_next: u64,
    /// `nsp`: rows whose B comes from another document (label 1).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub nsp_random: u64,
}

impl SplitStats {
    fn add(&mut self, o: &SplitStats) {
        self.rows += o.rows;
        self.tokens += o.tokens;
        self.documents += o.documents;
        self.padding += o.padding;
        self.dropped += o.dropped;
        self.truncated += o.truncated;
        self.nsp_next += o.nsp_next;
        self.nsp_random += o.nsp_random;
    }
}

/// What a run did.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TokenizeReport {
    pub splits: BTreeMap<String, SplitStats>,
    pub accounting: Accounting,
    pub tokenizer_hash: String,
    pub vocab_size: u64,
    /// Units skipped because an earlier run had committed them.
    pub resumed_units: u64,
    /// Bytes of text encoded in this run (resumed units excluded).
    pub text_bytes: u64,
    pub seconds: f64,
}

/// Per-unit sidecar: the split statistics, which the manifest's record has no place for.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct UnitStats {
    splits: BTreeMap<String, SplitStats>,
    text_bytes: u64,
}

const UNITS_DIR: &str = ".units";

/// Tokenizes `docs_shards` into `out` (see the module docs). The pipeline runner's entry point.
pub fn tokenize_corpus(
    docs_shards: &[PathBuf],
    out: &Path,
    cfg: &TokenizeConfig,
) -> Result<TokenizeReport> {
    tokenize_corpus_with(docs_shards, out, cfg, &RunOptions::default())
}

/// [`tokenize_corpus`] with run options.
pub fn tokenize_corpus_with(
    docs_shards: &[PathBuf],
    out: &Path,
    cfg: &TokenizeConfig,
    opts: &RunOptions,
) -> Result<TokenizeReport> {
    let started = Instant::now();
    cfg.check()?;
    if docs_shards.is_empty() {
        return Err(Error::usage("no docs shards to tokenize"));
    }
    let given_hash = match &cfg.tokenizer {
        Some(p) => Some(crate::tokenizer::file_hash(p).context("reading the tokenizer")?),
        None => None,
    };
    let jinja = match &cfg.jinja_template {
        Some(p) => Some(chat::load_template(p)?),
        None => None,
    };
    let identity = serde_json::json!({
        "config": cfg,
        "inputs": docs_shards.iter().map(|p| p.to_string_lossy().into_owned()).collect::<Vec<_>>(),
        "tokenizer_hash": given_hash,
        "jinja_template": jinja,
    });
    let mut manifest = Manifest::open_output(out, KIND, identity, opts.force)?;
    manifest.complete = false;

    // The tokenizer: copied, reused from an interrupted run, or trained.
    let tok_path = out.join(TOKENIZER_JSON);
    let tok = match &cfg.tokenizer {
        Some(p) => {
            let tok = load_tokenizer(p)?;
            let bytes = std::fs::read(p).at(p)?;
            write_atomic(&tok_path, &bytes)?;
            tok
        }
        None if tok_path.exists() => load_tokenizer(&tok_path)?,
        None => {
            let tcfg = cfg.train_tokenizer.clone().expect("checked");
            let has_split = parquet_columns(&docs_shards[0])?.contains(&cfg.split_column);
            let (jsonl, parquet): (Vec<PathBuf>, Vec<PathBuf>) =
                docs_shards.iter().cloned().partition(|p| is_jsonl(p));
            let mut sources: Vec<TextSource> = jsonl.into_iter().map(TextSource::Jsonl).collect();
            if !parquet.is_empty() {
                sources.push(TextSource::Parquet {
                    shards: parquet,
                    split: has_split.then(|| "train".to_string()),
                });
            }
            let stream = TextStream::new(sources, &cfg.text_column);
            let err = stream.error_slot();
            let tok = train_tokenizer(&tcfg, stream)?;
            if let Some(e) = err.lock().expect("not poisoned").take() {
                return Err(e).context("reading texts to train the tokenizer");
            }
            save_tokenizer(&tok, &tok_path)?;
            tok
        }
    };
    let tokenizer_hash = crate::tokenizer::file_hash(&tok_path)?;
    let specials = SpecialIds::find(&tok, &cfg.special_tokens)?;
    if specials.eos.is_none() && cfg.objective != Objective::Cls {
        return Err(Error::bad_config(
            "special_tokens.eos",
            "the tokenizer has no end-of-text token under a usual name; name it with special_tokens.eos",
        ));
    }
    if cfg.objective == Objective::Nsp && specials.bos.is_none() {
        return Err(Error::bad_config(
            "special_tokens.bos",
            "nsp rows start with [CLS], the tokenizer's beginning-of-text token, but it has none \
             under a usual name ([CLS], <s>, ...); name it with special_tokens.bos",
        ));
    }
    if cfg.add_bos && specials.bos.is_none() {
        return Err(Error::bad_config(
            "add_bos",
            "the tokenizer has no beginning-of-text token; name it with special_tokens.bos",
        ));
    }

    let labels = if cfg.objective == Objective::Cls {
        collect_labels(docs_shards, cfg)?
    } else {
        Vec::new()
    };
    let template = match &jinja {
        Some(src) => {
            let text = |id: Option<u32>| id.and_then(|i| tok.id_to_token(i)).unwrap_or_default();
            Some(ChatTemplate::new(
                src,
                &text(specials.bos),
                &text(specials.eos),
            )?)
        }
        None => None,
    };
    let bar = if opts.progress {
        ProgressBar::new(docs_shards.len() as u64)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} tokenize [{bar:30}] {pos}/{len} units {msg} ({elapsed}<{eta})",
        )
        .map_err(|e| Error::bug(format!("progress template: {e}")))?
        .progress_chars("=> "),
    );
    let ctx = UnitCtx {
        progress: &bar,
        docs_read: AtomicU64::new(0),
        started: Instant::now(),
        cfg,
        tok: &tok,
        specials,
        labels: &labels,
        out,
        template: template.as_ref(),
    };

    let units_dir = out.join(UNITS_DIR);
    let mut report = TokenizeReport {
        tokenizer_hash: tokenizer_hash.clone(),
        vocab_size: tok.get_vocab_size(true) as u64,
        ..Default::default()
    };
    for (i, shard) in docs_shards.iter().enumerate() {
        let key = format!("{i:06}");
        if manifest.units.contains_key(&key) && units_dir.join(format!("{key}.json")).exists() {
            report.resumed_units += 1;
            bar.inc(1);
            continue;
        }
        let t0 = Instant::now();
        let (record, stats) = ctx
            .run_unit(i, shard)
            .with_context(|| format!("tokenizing {}", shard.display()))?;
        bar.inc(1);
        write_atomic(
            &units_dir.join(format!("{key}.json")),
            &serde_json::to_vec(&stats)?,
        )?;
        report.text_bytes += stats.text_bytes;
        manifest.units.insert(key, record);
        manifest.save(out)?;
        if opts.verbose {
            let mb = stats.text_bytes as f64 / 1e6;
            bar.println(format!(
                "tokenize: {} ({mb:.1} MB of text, {:.1} MB/s)",
                shard.display(),
                mb / t0.elapsed().as_secs_f64().max(1e-9)
            ));
        }
    }
    bar.finish_and_clear();

    // Per split: meta.json and the tokenizer copy.
    let mut splits: BTreeMap<String, SplitStats> = BTreeMap::new();
    for key in manifest.units.keys() {
        let p = units_dir.join(format!("{key}.json"));
        let text = std::fs::read(&p).at(&p)?;
        let u: UnitStats = serde_json::from_slice(&text).map_err(|e| {
            Error::bad_input(
                Place::file(&p),
                format!("damaged unit record ({e}); rerun with --force"),
            )
        })?;
        for (s, st) in u.splits {
            splits.entry(s).or_default().add(&st);
        }
    }
    let tables = manifest.tables();
    let token_shards = tables.get(TOKENS_TABLE).cloned().unwrap_or_default();
    let tok_bytes = std::fs::read(&tok_path).at(&tok_path)?;
    for (split, st) in &splits {
        let dir = out.join(split);
        std::fs::create_dir_all(&dir).at(&dir)?;
        write_atomic(&dir.join(TOKENIZER_JSON), &tok_bytes)?;
        let prefix = format!("{split}/");
        let shards: Vec<MetaShard> = token_shards
            .iter()
            .filter_map(|s| {
                s.file.strip_prefix(&prefix).map(|f| MetaShard {
                    file: f.to_string(),
                    rows: s.rows,
                    xxh3: s.xxh3.clone(),
                })
            })
            .collect();
        TokenMeta {
            objective: cfg.objective,
            vocab_size: tok.get_vocab_size(true) as u64,
            seq_len: cfg.seq_len as u64,
            rows: st.rows,
            tokens: st.tokens,
            documents: st.documents,
            tokenizer_hash: tokenizer_hash.clone(),
            pad_id: specials.pad,
            bos_id: specials.bos,
            eos_id: specials.eos,
            mask_id: specials.mask,
            labels: labels.clone(),
            packed: cfg.pack && cfg.objective == Objective::Sft,
            shards,
        }
        .save(&dir)?;
    }

    // Accounting: every document kept or rejected.
    let mut acc = Accounting::default();
    let mut stage = StageCounts {
        stage: STAGE.into(),
        ..Default::default()
    };
    for u in manifest.units.values() {
        acc.files.extend(u.files.iter().cloned());
        for s in &u.stages {
            stage.add(s);
        }
    }
    acc.input = acc.files.iter().map(|f| f.records).sum();
    acc.kept = stage.kept;
    acc.rejected = stage.rejected;
    acc.stages = vec![stage];
    acc.check()?;
    manifest.accounting = Some(acc.clone());
    manifest.complete = true;
    manifest.save(out)?;
    report.splits = splits;
    report.accounting = acc;
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

/// `cls`: the label names in id order (configured, or the sorted distinct string values).
fn collect_labels(shards: &[PathBuf], cfg: &TokenizeConfig) -> Result<Vec<String>> {
    if !cfg.labels.is_empty() {
        return Ok(cfg.labels.clone());
    }
    let mut names = BTreeSet::new();
    for shard in shards {
        for b in read_columns(shard, &[cfg.label_column.as_str()], 8192)? {
            let b = b?;
            let Some(col) = b.column_by_name(&cfg.label_column) else {
                return Err(Error::bad_input(
                    Place::file(shard),
                    format!("no `{}` column for the cls labels", cfg.label_column),
                ));
            };
            if !matches!(
                col.data_type(),
                DataType::Utf8
                    | DataType::LargeUtf8
                    | DataType::Utf8View
                    | DataType::Dictionary(_, _)
            ) {
                return Ok(Vec::new()); // numeric labels are their own ids
            }
            let col = utf8_column(&b, &cfg.label_column, shard)?.expect("present");
            names.extend(col.as_string::<i32>().iter().flatten().map(str::to_string));
        }
    }
    Ok(names.into_iter().collect())
}

struct UnitCtx<'a> {
    /// The run's progress bar (hidden unless `RunOptions::progress`) and documents read so
    /// far, for its message.
    progress: &'a ProgressBar,
    docs_read: AtomicU64,
    started: Instant,
    cfg: &'a TokenizeConfig,
    tok: &'a Tokenizer,
    specials: SpecialIds,
    labels: &'a [String],
    out: &'a Path,
    /// `sft` with `jinja_template`: the parsed template.
    template: Option<&'a ChatTemplate>,
}

/// A split's writer state within a unit.
struct SplitOut {
    writer: ShardWriter,
    rows: RowBuilder,
    packer: Packer,
    /// `sft` with `pack`: the conversations' packer.
    sft_packer: SftPacker,
    stats: SplitStats,
}

/// Rejections of one batch: row index and reason.
type Rejects = Vec<(usize, &'static str)>;

fn is_zero(n: &u64) -> bool {
    *n == 0
}

fn valid_split_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        && s != "rejected"
}

impl UnitCtx<'_> {
    /// Counts a batch of documents into the progress bar's message.
    fn show_progress(&self, docs: u64) {
        if self.progress.is_hidden() {
            return;
        }
        let d = self.docs_read.fetch_add(docs, Ordering::Relaxed) + docs;
        let secs = self.started.elapsed().as_secs_f64().max(1e-9);
        self.progress
            .set_message(format!("{d} docs, {:.0} docs/s", d as f64 / secs));
    }

    fn encode(&self, texts: Vec<&str>) -> Result<Vec<Vec<i32>>> {
        let encs = self
            .tok
            .encode_batch_fast(texts, false)
            .map_err(|e| Error::usage(format!("the tokenizer failed to encode a document: {e}")))?;
        Ok(encs
            .into_par_iter()
            .map(|e| e.get_ids().iter().map(|&i| i as i32).collect())
            .collect())
    }

    fn columns(&self) -> Vec<&str> {
        let c = self.cfg;
        let mut v = vec![
            c.id_column.as_str(),
            c.split_column.as_str(),
            TEXT,
            SOURCE,
            META,
        ];
        match c.objective {
            Objective::Clm | Objective::Mlm => v.push(c.text_column.as_str()),
            Objective::Cls => v.extend([c.text_column.as_str(), c.label_column.as_str()]),
            Objective::Nsp => v.push(c.text_column.as_str()),
            Objective::Sft => v.extend([
                c.prompt_column.as_str(),
                c.response_column.as_str(),
                c.messages_column.as_str(),
            ]),
            Objective::Rm | Objective::Dpo => v.extend([
                c.prompt_column.as_str(),
                c.chosen_column.as_str(),
                c.rejected_column.as_str(),
            ]),
        }
        v
    }

    fn run_unit(&self, unit: usize, shard: &Path) -> Result<(UnitRecord, UnitStats)> {
        let cfg = self.cfg;
        let names = parquet_columns(shard)?;
        let has_messages = names.iter().any(|c| c == &cfg.messages_column);
        let need: &[&str] = match cfg.objective {
            Objective::Clm | Objective::Mlm => &[&cfg.text_column],
            Objective::Cls => &[&cfg.text_column, &cfg.label_column],
            Objective::Nsp => &[&cfg.text_column],
            Objective::Sft if has_messages => &[],
            Objective::Sft => &[&cfg.prompt_column, &cfg.response_column],
            Objective::Rm | Objective::Dpo => {
                &[&cfg.prompt_column, &cfg.chosen_column, &cfg.rejected_column]
            }
        };
        for n in need {
            if !names.iter().any(|c| c == n) {
                return Err(Error::bad_input(
                    Place::file(shard),
                    format!(
                        "no `{n}` column, which the `{}` objective reads{} (set the *_column options to use another)",
                        cfg.objective,
                        if cfg.objective == Objective::Sft {
                            format!(", nor a `{}` column of conversations", cfg.messages_column)
                        } else {
                            String::new()
                        }
                    ),
                ));
            }
        }
        let stem = format!("part-{unit:06}");
        let mut splits: BTreeMap<String, SplitOut> = BTreeMap::new();
        let mut rejected = ShardWriter::new(
            self.out,
            "rejected",
            &stem,
            rejected_schema(),
            cfg.shard.clone(),
        )?;
        let mut rejected_rows = 0u64;
        let mut counts = StageCounts {
            stage: STAGE.into(),
            ..Default::default()
        };
        let mut text_bytes = 0u64;
        let mut row_number = 0u64;
        let (prefix, suffix) = self.cfg.template_parts();
        // `nsp`: each split's documents, paired when the unit has been read.
        let mut nsp_pools: BTreeMap<String, NspPool> = BTreeMap::new();

        for batch in read_columns(shard, &self.columns(), cfg.batch_docs)? {
            let batch = batch?;
            let n = batch.num_rows();
            counts.input += n as u64;
            self.show_progress(n as u64);
            let ids: Vec<String> = match utf8_column(&batch, &cfg.id_column, shard)? {
                Some(a) => {
                    let a = a.as_string::<i32>().clone();
                    (0..n)
                        .map(|i| {
                            if a.is_valid(i) {
                                a.value(i).to_string()
                            } else {
                                format!("row-{}", row_number + i as u64)
                            }
                        })
                        .collect()
                }
                None => (0..n)
                    .map(|i| format!("{}#{}", shard.display(), row_number + i as u64))
                    .collect(),
            };
            row_number += n as u64;
            let split_arr = utf8_column(&batch, &cfg.split_column, shard)?;
            let split_of = |i: usize| -> &str {
                match &split_arr {
                    Some(a) => {
                        let a = a.as_string::<i32>();
                        if a.is_valid(i) {
                            a.value(i)
                        } else {
                            "train"
                        }
                    }
                    None => "train",
                }
            };
            for (i, id) in ids.iter().enumerate() {
                let s = split_of(i);
                if !valid_split_name(s) {
                    return Err(Error::bad_input(
                        Place::file(shard),
                        format!(
                            "document `{id}` has split `{s}`, which cannot name a directory (use letters, digits, _ and -)"
                        ),
                    ));
                }
                if !splits.contains_key(s) {
                    let writer = ShardWriter::new(
                        self.out,
                        s,
                        &stem,
                        split_schema(cfg.objective, cfg.pack),
                        cfg.shard.clone(),
                    )?;
                    splits.insert(
                        s.to_string(),
                        SplitOut {
                            writer,
                            rows: RowBuilder::new(cfg.objective).with_packed(cfg.pack),
                            packer: Packer::new(cfg.seq_len + 1),
                            sft_packer: SftPacker::new(cfg.seq_len),
                            stats: SplitStats::default(),
                        },
                    );
                }
            }
            let text_col = |name: &str| -> Result<StringArray> {
                Ok(utf8_column(&batch, name, shard)?
                    .expect("checked")
                    .as_string::<i32>()
                    .clone())
            };
            let mut rejects: Rejects = Vec::new();
            match cfg.objective {
                Objective::Clm | Objective::Mlm => {
                    let text = text_col(&cfg.text_column)?;
                    let texts: Vec<&str> = (0..n)
                        .map(|i| if text.is_valid(i) { text.value(i) } else { "" })
                        .collect();
                    text_bytes += texts.iter().map(|t| t.len() as u64).sum::<u64>();
                    let enc = self.encode(texts)?;
                    let eos = self.specials.eos.expect("checked") as i32;
                    let mut doc = Vec::new();
                    for (i, e) in enc.iter().enumerate() {
                        if !text.is_valid(i) {
                            rejects.push((i, "missing_text"));
                            continue;
                        }
                        doc.clear();
                        if cfg.add_bos {
                            doc.push(self.specials.bos.expect("checked") as i32);
                        }
                        doc.extend_from_slice(e);
                        doc.push(eos);
                        let so = splits.get_mut(split_of(i)).expect("created");
                        so.packer.push(&ids[i], &doc, &mut so.rows);
                        so.stats.tokens += doc.len() as u64;
                        so.stats.documents += 1;
                    }
                }
                Objective::Cls => {
                    let text = text_col(&cfg.text_column)?;
                    let texts: Vec<&str> = (0..n)
                        .map(|i| if text.is_valid(i) { text.value(i) } else { "" })
                        .collect();
                    text_bytes += texts.iter().map(|t| t.len() as u64).sum::<u64>();
                    let labels = self.label_ids(&batch, shard)?;
                    let enc = self.encode(texts)?;
                    for (i, e) in enc.into_iter().enumerate() {
                        let Some(label) = labels[i] else {
                            rejects.push((
                                i,
                                if labels_null(&batch, &cfg.label_column, i) {
                                    "missing_label"
                                } else {
                                    "unknown_label"
                                },
                            ));
                            continue;
                        };
                        if !text.is_valid(i) {
                            rejects.push((i, "missing_text"));
                            continue;
                        }
                        let so = splits.get_mut(split_of(i)).expect("created");
                        let row = self.frame(e, &mut so.stats);
                        so.rows.push_cls(&row, label, &[&ids[i]]);
                        so.stats.tokens += row.len() as u64;
                        so.stats.documents += 1;
                        so.stats.rows += 1;
                    }
                }
                Objective::Sft => {
                    let convs = self.conversations(&batch, shard)?;
                    let mut texts: Vec<String> = Vec::new();
                    // Per kept row: its index and the range of its segments in `texts`.
                    let mut keep: Vec<(usize, std::ops::Range<usize>)> = Vec::with_capacity(n);
                    let mut trained: Vec<bool> = Vec::new();
                    for (i, conv) in convs.into_iter().enumerate() {
                        let segs = conv.and_then(|c| match self.template {
                            Some(t) => t.segments(&c).map_err(Reject::reason),
                            None => {
                                chat::plain_segments(&prefix, &suffix, &c).map_err(Reject::reason)
                            }
                        });
                        match segs {
                            Err(reason) => rejects.push((i, reason)),
                            Ok(segs) => {
                                let from = texts.len();
                                for Segment { text, trained: t } in segs {
                                    texts.push(text);
                                    trained.push(t);
                                }
                                keep.push((i, from..texts.len()));
                            }
                        }
                    }
                    text_bytes += texts.iter().map(|t| t.len() as u64).sum::<u64>();
                    let enc = self.encode(texts.iter().map(String::as_str).collect())?;
                    let bos = self.specials.bos.map(|b| b as i32);
                    let eos = self.specials.eos.expect("checked") as i32;
                    for (i, range) in keep {
                        let mut input = Vec::new();
                        let mut mask: Vec<i8> = Vec::new();
                        for k in range {
                            input.extend_from_slice(&enc[k]);
                            mask.extend(std::iter::repeat_n(i8::from(trained[k]), enc[k].len()));
                        }
                        if self.template.is_none() {
                            input.push(eos);
                            mask.push(1);
                        }
                        if cfg.add_bos && input.first().copied() != bos {
                            input.insert(0, bos.expect("checked"));
                            mask.insert(0, 0);
                        }
                        let so = splits.get_mut(split_of(i)).expect("created");
                        let mut dropped = 0;
                        if input.len() > cfg.seq_len {
                            dropped = input.len() - cfg.seq_len;
                            input.truncate(cfg.seq_len);
                            mask.truncate(cfg.seq_len);
                        }
                        // The first id is never a target; a row must keep one to train on.
                        if !mask.iter().skip(1).any(|&m| m == 1) {
                            rejects.push((
                                i,
                                if dropped > 0 {
                                    "response_truncated"
                                } else {
                                    "empty_response"
                                },
                            ));
                            continue;
                        }
                        if dropped > 0 {
                            so.stats.truncated += 1;
                            so.stats.dropped += dropped as u64;
                        }
                        if cfg.pack {
                            so.sft_packer.push(&ids[i], &input, &mask, &mut so.rows);
                        } else {
                            so.rows.push_sft(&input, &mask, &[&ids[i]]);
                            so.stats.rows += 1;
                        }
                        so.stats.tokens += input.len() as u64;
                        so.stats.documents += 1;
                    }
                }
                Objective::Nsp => {
                    let text = text_col(&cfg.text_column)?;
                    // Every document's sentences, encoded in one call.
                    let mut sentences: Vec<&str> = Vec::new();
                    let mut ranges = Vec::with_capacity(n);
                    for i in 0..n {
                        let from = sentences.len();
                        if text.is_valid(i) {
                            text_bytes += text.value(i).len() as u64;
                            sentences.extend(crate::nsp::sentences(text.value(i)));
                        }
                        ranges.push(from..sentences.len());
                    }
                    let mut enc = self.encode(sentences)?;
                    let raw = |name: &str| -> Result<Option<StringArray>> {
                        Ok(utf8_column(&batch, name, shard)?.map(|a| a.as_string::<i32>().clone()))
                    };
                    let (raw_text, source, meta) = (raw(TEXT)?, raw(SOURCE)?, raw(META)?);
                    let val = |a: &Option<StringArray>, i: usize| {
                        a.as_ref()
                            .filter(|a| a.is_valid(i))
                            .map(|a| a.value(i).to_string())
                    };
                    for (i, range) in ranges.into_iter().enumerate() {
                        if !text.is_valid(i) {
                            rejects.push((i, "missing_text"));
                            continue;
                        }
                        let segments: Vec<Vec<i32>> = enc[range]
                            .iter_mut()
                            .map(std::mem::take)
                            .filter(|s| !s.is_empty())
                            .collect();
                        if segments.is_empty() {
                            rejects.push((i, "empty_text"));
                            continue;
                        }
                        let pool = nsp_pools.entry(split_of(i).to_string()).or_default();
                        // Only a document alone in its split can fail to pair: keep what its
                        // rejection would need until a second one comes.
                        pool.lone = pool.docs.is_empty().then(|| LoneDoc {
                            id: ids[i].clone(),
                            text: val(&raw_text, i).unwrap_or_default(),
                            source: val(&source, i).unwrap_or_default(),
                            meta: val(&meta, i),
                        });
                        pool.docs.push(NspDoc {
                            id: ids[i].clone(),
                            segments,
                        });
                    }
                }
                Objective::Rm | Objective::Dpo => {
                    let p = text_col(&cfg.prompt_column)?;
                    let c = text_col(&cfg.chosen_column)?;
                    let r = text_col(&cfg.rejected_column)?;
                    let mut texts = Vec::with_capacity(3 * n);
                    let mut keep = Vec::with_capacity(n);
                    for i in 0..n {
                        if !p.is_valid(i) {
                            rejects.push((i, "missing_prompt"));
                        } else if !c.is_valid(i) {
                            rejects.push((i, "missing_chosen"));
                        } else if !r.is_valid(i) {
                            rejects.push((i, "missing_rejected"));
                        } else {
                            keep.push(i);
                            texts.push(prefix.replace("{prompt}", p.value(i)));
                            texts.push(format!("{}{suffix}", c.value(i)));
                            texts.push(format!("{}{suffix}", r.value(i)));
                        }
                    }
                    text_bytes += texts.iter().map(|t| t.len() as u64).sum::<u64>();
                    let enc = self.encode(texts.iter().map(String::as_str).collect())?;
                    let eos = self.specials.eos.expect("checked") as i32;
                    for (k, &i) in keep.iter().enumerate() {
                        let so = splits.get_mut(split_of(i)).expect("created");
                        let mut prompt = Vec::new();
                        if cfg.add_bos {
                            prompt.push(self.specials.bos.expect("checked") as i32);
                        }
                        prompt.extend_from_slice(&enc[3 * k]);
                        let mut chosen = enc[3 * k + 1].clone();
                        chosen.push(eos);
                        let mut rej = enc[3 * k + 2].clone();
                        rej.push(eos);
                        let before = prompt.len() + chosen.len() + rej.len();
                        // Keep the end of a long prompt (at most half the length), then cut
                        // the completions to what is left.
                        if prompt.len() + chosen.len().max(rej.len()) > cfg.seq_len {
                            so.stats.truncated += 1;
                            let keep_prompt = prompt.len().min(cfg.seq_len / 2);
                            prompt.drain(..prompt.len() - keep_prompt);
                            let room = cfg.seq_len - prompt.len();
                            chosen.truncate(room);
                            rej.truncate(room);
                        }
                        so.stats.dropped +=
                            (before - prompt.len() - chosen.len() - rej.len()) as u64;
                        so.rows.push_pref(&prompt, &chosen, &rej, &[&ids[i]]);
                        so.stats.tokens += (prompt.len() + chosen.len() + rej.len()) as u64;
                        so.stats.documents += 1;
                        so.stats.rows += 1;
                    }
                }
            }
            // Flush full batches of rows.
            for so in splits.values_mut() {
                if so.rows.len() >= cfg.shard.row_group_rows.max(1) {
                    let b = so.rows.finish()?;
                    so.writer.write(&b)?;
                }
            }
            if !rejects.is_empty() {
                rejected_rows += rejects.len() as u64;
                for (_, reason) in &rejects {
                    *counts.reasons.entry(reason.to_string()).or_default() += 1;
                }
                rejected.write(&rejected_batch(&batch, &ids, &rejects, shard)?)?;
            }
        }

        let eos = self.specials.eos.map(|e| e as i32).unwrap_or(0);
        let pad = self.specials.pad.map(|p| p as i32).unwrap_or(eos);
        let mut tables: BTreeMap<String, Vec<ShardInfo>> = BTreeMap::new();
        let mut stats = UnitStats {
            text_bytes,
            ..Default::default()
        };
        for (name, mut so) in splits {
            if cfg.objective == Objective::Nsp {
                let pool = nsp_pools.remove(&name).unwrap_or_default();
                let lone = self.write_pairs(unit, &name, &pool, &mut so)?;
                if let Some(doc) = lone {
                    rejected_rows += 1;
                    *counts.reasons.entry("no_pair".to_string()).or_default() += 1;
                    rejected.write(&lone_rejection(&doc, "no_pair")?)?;
                }
            }
            if cfg.objective.is_packed() {
                let (padding, dropped) = so.packer.finish(cfg.tail, pad, &mut so.rows);
                so.stats.padding += padding;
                so.stats.dropped += dropped;
                so.stats.tokens -= dropped;
                so.stats.rows = so.packer.rows;
            }
            if cfg.pack {
                so.sft_packer.finish(&mut so.rows);
                so.stats.rows = so.sft_packer.rows;
            }
            if !so.rows.is_empty() {
                let b = so.rows.finish()?;
                so.writer.write(&b)?;
            }
            tables
                .entry(TOKENS_TABLE.into())
                .or_default()
                .extend(so.writer.finish()?);
            stats.splits.insert(name, so.stats);
        }
        let rej_shards = rejected.finish()?;
        if !rej_shards.is_empty() {
            tables.insert("rejected".into(), rej_shards);
        }
        counts.rejected = rejected_rows;
        counts.kept = counts.input - rejected_rows;
        let file = FileCounts {
            file: shard.to_string_lossy().into_owned(),
            records: counts.input,
            ingested: counts.input,
            quarantined: 0,
            bytes: std::fs::metadata(shard).map(|m| m.len()).unwrap_or(0),
        };
        Ok((
            UnitRecord {
                tables,
                files: vec![file],
                stages: vec![counts],
            },
            stats,
        ))
    }

    /// `nsp`: pairs the documents of split `split` of input shard `unit` (see
    /// [`crate::nsp`]) and appends the rows. Returns the document to reject as `no_pair`,
    /// when the split's only document could not be paired.
    fn write_pairs(
        &self,
        unit: usize,
        split: &str,
        pool: &NspPool,
        so: &mut SplitOut,
    ) -> Result<Option<LoneDoc>> {
        let cfg = self.cfg;
        let pcfg = PairConfig {
            seq_len: cfg.seq_len,
            short_seq_prob: cfg.nsp_short_seq_prob,
            cls: self.specials.bos.expect("checked") as i32,
            sep: self.specials.eos.expect("checked") as i32,
            seed: crate::nsp::seed_for(cfg.nsp_seed, unit, split),
        };
        let made = crate::nsp::make_pairs(&pool.docs, &pcfg);
        for p in &made.pairs {
            let a = pool.docs[p.a_doc].id.as_str();
            if p.label == 0 {
                so.rows.push_nsp(&p.input_ids, &p.token_type_ids, 0, &[a]);
                so.stats.nsp_next += 1;
            } else {
                let b = pool.docs[p.b_doc].id.as_str();
                so.rows
                    .push_nsp(&p.input_ids, &p.token_type_ids, 1, &[a, b]);
                so.stats.nsp_random += 1;
            }
            so.stats.rows += 1;
            so.stats.tokens += p.input_ids.len() as u64;
            if p.truncated > 0 {
                so.stats.truncated += 1;
                so.stats.dropped += p.truncated as u64;
            }
            if so.rows.len() >= cfg.shard.row_group_rows.max(1) {
                let b = so.rows.finish()?;
                so.writer.write(&b)?;
            }
        }
        so.stats.dropped += made.dropped;
        so.stats.documents += (pool.docs.len() - made.unpaired.len()) as u64;
        match made.unpaired.as_slice() {
            [] => Ok(None),
            [0] if pool.docs.len() == 1 => Ok(pool.lone.clone()),
            _ => Err(Error::bug(
                "nsp: a document with other documents in its split gave no pair",
            )),
        }
    }

    /// `sft`: each row's conversation (the messages column, else the prompt and response as
    /// two turns), or the reason it has none.
    fn conversations(
        &self,
        batch: &RecordBatch,
        shard: &Path,
    ) -> Result<Vec<std::result::Result<Vec<Message>, &'static str>>> {
        let cfg = self.cfg;
        let n = batch.num_rows();
        let messages = messages_column(batch, &cfg.messages_column, shard)?;
        let text = |name: &str| -> Result<Option<StringArray>> {
            Ok(utf8_column(batch, name, shard)?.map(|a| a.as_string::<i32>().clone()))
        };
        let (p, r) = (text(&cfg.prompt_column)?, text(&cfg.response_column)?);
        Ok((0..n)
            .map(|i| {
                if let Some(m) = messages.as_ref().and_then(|m| m[i].clone()) {
                    return m.map_err(Reject::reason);
                }
                match (&p, &r) {
                    (Some(p), _) if !p.is_valid(i) => Err("missing_prompt"),
                    (Some(p), Some(r)) if r.is_valid(i) => Ok(vec![
                        Message::new("user", p.value(i)),
                        Message::new("assistant", r.value(i)),
                    ]),
                    (Some(_), _) => Err("missing_response"),
                    (None, _) => Err("missing_messages"),
                }
            })
            .collect())
    }

    /// `cls` rows: optional bos, the ids, eos; cut to `seq_len` keeping the final eos.
    fn frame(&self, ids: Vec<i32>, stats: &mut SplitStats) -> Vec<i32> {
        let mut row = Vec::with_capacity(ids.len() + 2);
        if self.cfg.add_bos {
            row.push(self.specials.bos.expect("checked") as i32);
        }
        row.extend(ids);
        if let Some(e) = self.specials.eos {
            row.push(e as i32);
        }
        if row.len() > self.cfg.seq_len {
            stats.truncated += 1;
            stats.dropped += (row.len() - self.cfg.seq_len) as u64;
            let last = *row.last().expect("non-empty");
            row.truncate(self.cfg.seq_len);
            if self.specials.eos.is_some() {
                *row.last_mut().expect("seq_len >= 2") = last;
            }
        }
        row
    }

    /// `cls`: the label id of every row, `None` for a missing or unknown label.
    fn label_ids(&self, batch: &RecordBatch, shard: &Path) -> Result<Vec<Option<i64>>> {
        let col = batch
            .column_by_name(&self.cfg.label_column)
            .expect("checked");
        let n = batch.num_rows();
        Ok(match col.data_type() {
            DataType::Utf8
            | DataType::LargeUtf8
            | DataType::Utf8View
            | DataType::Dictionary(_, _) => {
                let a = utf8_column(batch, &self.cfg.label_column, shard)?.expect("present");
                let a = a.as_string::<i32>();
                let index: BTreeMap<&str, i64> = self
                    .labels
                    .iter()
                    .enumerate()
                    .map(|(i, l)| (l.as_str(), i as i64))
                    .collect();
                (0..n)
                    .map(|i| {
                        if a.is_valid(i) {
                            index.get(a.value(i)).copied()
                        } else {
                            None
                        }
                    })
                    .collect()
            }
            DataType::Boolean
            | DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::UInt8
            | DataType::UInt16
            | DataType::UInt32
            | DataType::UInt64 => {
                let a: ArrayRef = cast(col, &DataType::Int64)?;
                let a = a.as_primitive::<arrow::datatypes::Int64Type>();
                (0..n)
                    .map(|i| {
                        if a.is_valid(i) && a.value(i) >= 0 {
                            Some(a.value(i))
                        } else {
                            None
                        }
                    })
                    .collect()
            }
            other => {
                return Err(Error::bad_input(
                    Place::file(shard),
                    format!(
                        "label column `{}` is {other}; use integers, booleans or strings",
                        self.cfg.label_column
                    ),
                ));
            }
        })
    }
}

/// `nsp`: the documents of one split of a unit, in input order.
#[derive(Debug, Default)]
struct NspPool {
    docs: Vec<NspDoc>,
    /// While the split has a single document: what its rejection would record.
    lone: Option<LoneDoc>,
}

/// The columns of `rejected/` for a document no longer in a batch.
#[derive(Debug, Clone)]
struct LoneDoc {
    id: String,
    text: String,
    source: String,
    meta: Option<String>,
}

/// One rejected document in core's `rejected` schema.
fn lone_rejection(doc: &LoneDoc, reason: &str) -> Result<RecordBatch> {
    let one = |v: &str| -> ArrayRef { Arc::new(StringArray::from(vec![v])) };
    let cols: Vec<ArrayRef> = vec![
        one(&doc.id),
        one(&doc.text),
        one(&doc.source),
        Arc::new(StringArray::from(vec![doc.meta.as_deref()])),
        one(STAGE),
        one(reason),
        Arc::new(StringArray::from(vec![None::<&str>])),
    ];
    Ok(RecordBatch::try_new(rejected_schema(), cols)?)
}

/// A row's conversation, or why its value is not one.
type Conversation = std::result::Result<Vec<Message>, Reject>;

/// A conversation per row of column `name` (JSON text, or a list of `role`/`content`
/// structs): `None` where the value is null, `Some(Err)` where it is not a conversation.
/// `Ok(None)` when there is no such column.
fn messages_column(
    batch: &RecordBatch,
    name: &str,
    shard: &Path,
) -> Result<Option<Vec<Option<Conversation>>>> {
    let Some(col) = batch.column_by_name(name) else {
        return Ok(None);
    };
    let n = batch.num_rows();
    let structs = |v: ArrayRef| -> Conversation {
        let s = v.as_struct_opt().ok_or(Reject::BadMessages)?;
        let field = |f: &str| -> std::result::Result<StringArray, Reject> {
            let c = s.column_by_name(f).ok_or(Reject::BadMessages)?;
            let c = cast(c, &DataType::Utf8).map_err(|_| Reject::BadMessages)?;
            Ok(c.as_string::<i32>().clone())
        };
        let (role, content) = (field("role")?, field("content")?);
        (0..s.len())
            .map(|j| {
                if role.is_valid(j) && content.is_valid(j) {
                    Ok(Message::new(role.value(j), content.value(j)))
                } else {
                    Err(Reject::BadMessages)
                }
            })
            .collect()
    };
    Ok(Some(match col.data_type() {
        DataType::List(_) => {
            let l = col.as_list::<i32>();
            (0..n)
                .map(|i| l.is_valid(i).then(|| structs(l.value(i))))
                .collect()
        }
        DataType::LargeList(_) => {
            let l = col.as_list::<i64>();
            (0..n)
                .map(|i| l.is_valid(i).then(|| structs(l.value(i))))
                .collect()
        }
        _ => {
            let a = utf8_column(batch, name, shard)?.expect("present");
            let a = a.as_string::<i32>();
            (0..n)
                .map(|i| a.is_valid(i).then(|| chat::parse_messages(a.value(i))))
                .collect()
        }
    }))
}

fn labels_null(batch: &RecordBatch, col: &str, i: usize) -> bool {
    batch.column_by_name(col).is_none_or(|c| c.is_null(i))
}

/// The rejected documents of a batch in core's `rejected` schema.
fn rejected_batch(
    batch: &RecordBatch,
    ids: &[String],
    rejects: &Rejects,
    shard: &Path,
) -> Result<RecordBatch> {
    let get = |name: &str| -> Result<Option<StringArray>> {
        Ok(utf8_column(batch, name, shard)?.map(|a| a.as_string::<i32>().clone()))
    };
    let (text, source, meta) = (get(TEXT)?, get(SOURCE)?, get(META)?);
    let val = |a: &Option<StringArray>, i: usize| {
        a.as_ref()
            .filter(|a| a.is_valid(i))
            .map(|a| a.value(i).to_string())
    };
    let idx: Vec<usize> = rejects.iter().map(|r| r.0).collect();
    let cols: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from(
            idx.iter().map(|&i| ids[i].clone()).collect::<Vec<_>>(),
        )),
        Arc::new(StringArray::from(
            idx.iter()
                .map(|&i| val(&text, i).unwrap_or_default())
                .collect::<Vec<_>>(),
        )),
        Arc::new(StringArray::from(
            idx.iter()
                .map(|&i| val(&source, i).unwrap_or_default())
                .collect::<Vec<_>>(),
        )),
        Arc::new(StringArray::from(
            idx.iter().map(|&i| val(&meta, i)).collect::<Vec<_>>(),
        )),
        Arc::new(StringArray::from(vec![STAGE; idx.len()])),
        Arc::new(StringArray::from(
            rejects.iter().map(|r| r.1).collect::<Vec<_>>(),
        )),
        Arc::new(StringArray::from(vec![None::<&str>; idx.len()])),
    ];
    Ok(RecordBatch::try_new(rejected_schema(), cols)?)
}
