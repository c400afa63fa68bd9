//! Benchmark decontamination: the `decontaminate` stage and the [`NgramIndex`] behind the
//! `quern_contaminated` SQL function.
//!
//! Training on a benchmark's test items makes its scores meaningless. Following GPT-3 and
//! datatrove (`NGramsDecontIndexer` / `NGramsDecontFilter`), every evaluation item is
//! normalised (lowercased, punctuation dropped, digit runs as `0`; see
//! [`crate::text::for_each_norm_word`]), cut into word n-grams (13 by default), and the
//! n-gram hashes go into an index with the name of the set they came from. A document is
//! contaminated when at least `min_matches` of its own n-grams are in the index. Items
//! shorter than `n` words have no n-gram and cannot match (as in datatrove), and documents
//! that share only phrases shorter than `n` words with a benchmark are left alone, which is
//! why `n` is large: common phrases ("in the united states of america") are shorter than
//! 13 words.
//!
//! N-grams are hashed as a polynomial rolling hash of 64-bit word hashes, so a document is
//! scanned in one pass with O(1) work per word, without building n-gram strings.
//!
//! The stage writes `<prefix>_set` (the matched set's name, null when clean),
//! `<prefix>_ngram` (the first matched n-gram, normalised) and `<prefix>_matches` (UInt32)
//! with `prefix = "contaminated"` by default. With `action = "drop"` contaminated documents
//! are dropped with reason `contaminated`, and those columns are in the rejected row's
//! details.
//!
//! ```toml
//! [[stages]]
//! type = "decontaminate"
//! n = 13                      # default 13
//! action = "drop"             # "flag" (default) or "drop"
//! min_matches = 1             # default 1
//! column = "text"             # default "text"
//! prefix = "contaminated"     # default "contaminated"
//! [[stages.eval_sets]]        # required, at least one
//! path = "evals/mmlu.jsonl"   # .jsonl, .parquet or .txt (one item per line); relative to the pipeline file
//! name = "mmlu"               # default: the file name without extension
//! fields = ["question", "answer"]   # default ["text"]; each field's value is one item
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, RecordBatch, StringArray, UInt32Array};
use arrow::datatypes::{DataType, Field};
use quern_core::stage::{
    parse_params, string_column, with_column, BatchCtx, Stage, StageSpec, Verdict,
};
use quern_core::{Error, Result};
use rayon::prelude::*;
use serde::Deserialize;

use crate::classifier::model::HashIndex;
use crate::text::{for_each_norm_word, hash_str, mix64};

/// Reason given to dropped documents.
pub const REASON: &str = "contaminated";

const BASE: u64 = 0x100_0000_01b3; // the FNV prime: odd, so multiplication is invertible mod 2^64

/// One evaluation set.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalSet {
    /// The file (`.jsonl`, `.parquet`, `.txt`). Required. Relative to the pipeline file.
    pub path: PathBuf,
    /// Its name in the output. Default: the file stem.
    #[serde(default)]
    pub name: Option<String>,
    /// Fields whose values are items (jsonl, parquet). Default `["text"]`.
    #[serde(default = "d_fields")]
    pub fields: Vec<String>,
}

fn d_fields() -> Vec<String> {
    vec!["text".into()]
}

/// What to do with a contaminated document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Keep it and fill in the columns (default).
    #[default]
    Flag,
    /// Drop it with reason `contaminated`.
    Drop,
}

/// Config of the `decontaminate` stage (defaults in the module docs).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecontConfig {
    pub eval_sets: Vec<EvalSet>,
    #[serde(default = "d_n")]
    pub n: usize,
    #[serde(default)]
    pub action: Action,
    #[serde(default = "d_one")]
    pub min_matches: u32,
    #[serde(default = "crate::classifier::default_text")]
    pub column: String,
    #[serde(default = "d_prefix")]
    pub prefix: String,
}

fn d_n() -> usize {
    13
}
fn d_one() -> u32 {
    1
}
fn d_prefix() -> String {
    "contaminated".into()
}

/// Word n-gram hashes of evaluation sets, with the set each came from.
#[derive(Debug, Clone)]
pub struct NgramIndex {
    n: usize,
    sets: Vec<String>,
    /// n-gram hash -> set index (the first set that has it).
    index: HashIndex<u32>,
    /// Items per set that were too short to give any n-gram.
    pub short_items: Vec<usize>,
}

/// A document's match against the index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Match {
    pub set: String,
    /// The first matched n-gram, normalised words joined by spaces.
    pub ngram: String,
    /// How many of the document's n-grams are in the index.
    pub matches: u32,
}

/// Calls `f(hash, first_word_start, last_word_end)` for every word n-gram of `text`.
fn for_each_ngram(
    text: &str,
    n: usize,
    buf: &mut String,
    ring: &mut Vec<(u64, usize)>,
    mut f: impl FnMut(u64, usize, usize),
) {
    let top = BASE.wrapping_pow(n as u32 - 1);
    ring.clear();
    ring.resize(n, (0, 0));
    let mut h = 0u64;
    let mut count = 0usize;
    for_each_norm_word(text, buf, |w, s, e| {
        let wh = hash_str(w, 0x5eed);
        let slot = count % n;
        if count >= n {
            h = h.wrapping_sub(ring[slot].0.wrapping_mul(top));
        }
        h = h.wrapping_mul(BASE).wrapping_add(wh);
        ring[slot] = (wh, s);
        count += 1;
        if count >= n {
            let first = ring[count % n].1;
            f(mix64(h), first, e);
        }
    });
}

impl NgramIndex {
    /// An empty index for `n`-grams.
    pub fn new(n: usize) -> Result<Self> {
        if n == 0 || n > 64 {
            return Err(Error::bad_config(
                "n",
                "n-gram length must be between 1 and 64",
            ));
        }
        Ok(NgramIndex {
            n,
            sets: Vec::new(),
            index: HashIndex::default(),
            short_items: Vec::new(),
        })
    }

    /// Adds a set's items.
    pub fn add_set(&mut self, name: &str, items: &[String]) {
        let s = self.sets.len() as u32;
        self.sets.push(name.to_string());
        let n = self.n;
        let hashes: Vec<Vec<u64>> = items
            .par_iter()
            .map_init(
                || (String::new(), Vec::new()),
                |(buf, ring), item| {
                    let mut out = Vec::new();
                    for_each_ngram(item, n, buf, ring, |h, _, _| out.push(h));
                    out
                },
            )
            .collect();
        self.short_items
            .push(hashes.iter().filter(|h| h.is_empty()).count());
        for h in hashes.into_iter().flatten() {
            self.index.entry(h).or_insert(s);
        }
    }

    /// Reads and adds an evaluation set from a file.
    pub fn add_file(&mut self, set: &EvalSet) -> Result<()> {
        let items = crate::data::read_items(&set.path, &set.fields)?;
        let name = set.name.clone().unwrap_or_else(|| stem(&set.path));
        self.add_set(&name, &items);
        Ok(())
    }

    pub fn n(&self) -> usize {
        self.n
    }

    pub fn sets(&self) -> &[String] {
        &self.sets
    }

    /// Distinct n-grams indexed.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Checks a text; `None` when fewer than `min_matches` of its n-grams are indexed.
    pub fn check(
        &self,
        text: &str,
        min_matches: u32,
        buf: &mut String,
        ring: &mut Vec<(u64, usize)>,
    ) -> Option<Match> {
        let mut first: Option<(u32, usize, usize)> = None;
        let mut matches = 0u32;
        for_each_ngram(text, self.n, buf, ring, |h, s, e| {
            if let Some(&set) = self.index.get(&h) {
                matches += 1;
                if first.is_none() {
                    first = Some((set, s, e));
                }
            }
        });
        let (set, s, e) = first?;
        if matches < min_matches.max(1) {
            return None;
        }
        Some(Match {
            set: self.sets[set as usize].clone(),
            ngram: crate::text::norm_words(&text[s..e]).join(" "),
            matches,
        })
    }
}

fn stem(p: &Path) -> String {
    p.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| p.display().to_string())
}

/// The `decontaminate` stage.
pub struct DecontStage {
    name: String,
    cfg: DecontConfig,
    index: Arc<NgramIndex>,
}

impl DecontStage {
    /// Builds the stage with an index already made.
    pub fn new(name: &str, cfg: DecontConfig, index: Arc<NgramIndex>) -> Self {
        DecontStage {
            name: name.to_string(),
            cfg,
            index,
        }
    }

    /// Builds the stage from a pipeline spec, reading every evaluation set.
    pub fn from_spec(spec: &StageSpec) -> Result<Self> {
        let cfg: DecontConfig = parse_params(spec)?;
        if cfg.eval_sets.is_empty() {
            return Err(Error::bad_config(
                format!("{}.eval_sets", spec.key),
                "give at least one evaluation set",
            ));
        }
        let mut index = NgramIndex::new(cfg.n)
            .map_err(|e| Error::bad_config(format!("{}.n", spec.key), e.to_string()))?;
        for (i, set) in cfg.eval_sets.iter().enumerate() {
            let set = EvalSet {
                path: spec.resolve(&set.path),
                ..set.clone()
            };
            index.add_file(&set).map_err(|e| {
                Error::bad_config(format!("{}.eval_sets[{i}].path", spec.key), e.to_string())
            })?;
        }
        Ok(Self::new(&spec.name, cfg, Arc::new(index)))
    }

    pub fn index(&self) -> &NgramIndex {
        &self.index
    }

    fn col(&self, what: &str) -> String {
        format!("{}_{what}", self.cfg.prefix)
    }
}

impl Stage for DecontStage {
    fn name(&self) -> &str {
        &self.name
    }
    fn reads(&self) -> Vec<String> {
        vec![self.cfg.column.clone()]
    }
    fn adds(&self) -> Vec<Field> {
        vec![
            Field::new(self.col("set"), DataType::Utf8, true),
            Field::new(self.col("ngram"), DataType::Utf8, true),
            Field::new(self.col("matches"), DataType::UInt32, false),
        ]
    }
    fn apply(&self, _ctx: &BatchCtx, batch: RecordBatch) -> Result<Verdict> {
        let text = string_column(&batch, &self.cfg.column, &self.name)?;
        let min = self.cfg.min_matches;
        let found: Vec<Option<Match>> = (0..batch.num_rows())
            .into_par_iter()
            .map_init(
                || (String::new(), Vec::new()),
                |(buf, ring), i| {
                    if text.is_null(i) {
                        None
                    } else {
                        self.index.check(text.value(i), min, buf, ring)
                    }
                },
            )
            .collect();
        let sets: StringArray = found
            .iter()
            .map(|m| m.as_ref().map(|m| m.set.as_str()))
            .collect();
        let ngrams: StringArray = found
            .iter()
            .map(|m| m.as_ref().map(|m| m.ngram.as_str()))
            .collect();
        let counts: UInt32Array = found
            .iter()
            .map(|m| Some(m.as_ref().map_or(0, |m| m.matches)))
            .collect();
        let mut batch = with_column(
            &batch,
            Field::new(self.col("set"), DataType::Utf8, true),
            Arc::new(sets) as ArrayRef,
        )?;
        batch = with_column(
            &batch,
            Field::new(self.col("ngram"), DataType::Utf8, true),
            Arc::new(ngrams) as ArrayRef,
        )?;
        batch = with_column(
            &batch,
            Field::new(self.col("matches"), DataType::UInt32, false),
            Arc::new(counts) as ArrayRef,
        )?;
        Ok(match self.cfg.action {
            Action::Flag => Verdict::columns(batch),
            Action::Drop => Verdict::with_reasons(
                batch,
                found
                    .iter()
                    .map(|m| m.as_ref().map(|_| REASON.to_string()))
                    .collect(),
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ngrams(text: &str, n: usize) -> Vec<(u64, String)> {
        let mut out = Vec::new();
        let (mut b, mut r) = (String::new(), Vec::new());
        for_each_ngram(text, n, &mut b, &mut r, |h, s, e| {
            out.push((h, text[s..e].to_string()))
        });
        out
    }

    #[test]
    fn rolling_hash_equals_hash_of_the_window() {
        let text = "one two three four five six seven";
        let all = ngrams(text, 3);
        assert_eq!(all.len(), 5);
        assert_eq!(all[0].1, "one two three");
        assert_eq!(all[4].1, "five six seven");
        // The hash of a window does not depend on what came before it.
        for (h, s) in &all {
            assert_eq!(ngrams(s, 3), vec![(*h, s.clone())]);
        }
        // Normalisation: case, punctuation and numbers do not matter.
        assert_eq!(ngrams("Five, SIX; seven!", 3)[0].0, all[4].0);
        assert_eq!(ngrams("a 1 b", 3)[0].0, ngrams("a 22 b", 3)[0].0);
        assert!(ngrams("too short", 3).is_empty());
    }

    #[test]
    fn index_finds_sets_and_counts_matches() {
        let mut idx = NgramIndex::new(4).unwrap();
        idx.add_set(
            "qa",
            &["the quick brown fox jumps over".into(), "tiny".into()],
        );
        idx.add_set("other", &["quick brown fox jumps".into()]);
        assert_eq!(idx.short_items, vec![1, 0]);
        let (mut b, mut r) = (String::new(), Vec::new());
        let m = idx
            .check(
                "Yesterday THE quick brown fox jumps over it.",
                1,
                &mut b,
                &mut r,
            )
            .unwrap();
        assert_eq!(m.set, "qa");
        assert_eq!(m.ngram, "the quick brown fox");
        assert_eq!(m.matches, 3);
        assert!(idx
            .check(
                "Yesterday THE quick brown fox jumps over it.",
                4,
                &mut b,
                &mut r
            )
            .is_none());
        assert!(idx
            .check("the quick brown dog", 1, &mut b, &mut r)
            .is_none());
    }
}
