//! Lexicon scores: how much of a document's text is made of the words (or phrases) of a
//! word list kept in a file, such as a profanity or toxicity list. The `lexicon` stage and
//! the `quern_lexicon_score` SQL function.
//!
//! Lists are one entry per line, `#` starts a comment, and an entry may carry a weight
//! after a tab (`word<TAB>2.5`; default 1). Entries and text are compared after the same
//! normalisation as decontamination (lowercase, punctuation dropped, digits as `0`), so
//! `"Damn!"` matches `damn`. Multi-word entries match as phrases.
//!
//! The score (`<name>_score`, Float64) is the summed weight of the matches divided by the
//! number of words (`normalize = "per_word"`, the default) or not divided (`"count"`).
//! With `max_score`, documents scoring above it are dropped with reason `lexicon_score`.
//!
//! ```toml
//! [[stages]]
//! type = "lexicon"
//! name = "profanity"
//! path = "lists/profanity.txt"   # required; relative to the pipeline file
//! column = "text"                # default "text"
//! normalize = "per_word"         # "per_word" (default) or "count"
//! max_score = 0.05               # default none: score only
//! ```

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, Float64Array, RecordBatch};
use arrow::datatypes::{DataType, Field};
use quern_core::error::{IoContext, Place};
use quern_core::stage::{
    parse_params, string_column, with_column, BatchCtx, Keeps, Stage, StageSpec, Threshold, Verdict,
};
use quern_core::{Error, Result};
use rayon::prelude::*;
use serde::Deserialize;

use crate::text::{for_each_norm_word, norm_words};

/// Reason given to dropped documents.
pub const REASON: &str = "lexicon_score";

/// How the summed weight becomes a score.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Normalize {
    /// Divided by the number of words (default).
    #[default]
    PerWord,
    /// Not divided.
    Count,
}

/// Config of the `lexicon` stage.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LexiconConfig {
    /// The word list. Required. Relative to the pipeline file.
    pub path: PathBuf,
    #[serde(default = "crate::classifier::default_text")]
    pub column: String,
    #[serde(default)]
    pub normalize: Normalize,
    #[serde(default)]
    pub max_score: Option<f64>,
}

/// A loaded word list.
#[derive(Debug, Clone)]
pub struct Lexicon {
    /// Entry (normalised words joined by one space) -> weight.
    entries: HashMap<String, f64>,
    /// Words in the longest entry.
    max_len: usize,
}

impl Lexicon {
    /// Builds a lexicon from `(entry, weight)` pairs.
    pub fn from_entries<'a>(entries: impl IntoIterator<Item = (&'a str, f64)>) -> Lexicon {
        let mut map = HashMap::new();
        let mut max_len = 0;
        for (e, w) in entries {
            let words = norm_words(e);
            if words.is_empty() {
                continue;
            }
            max_len = max_len.max(words.len());
            map.insert(words.join(" "), w);
        }
        Lexicon {
            entries: map,
            max_len,
        }
    }

    /// Reads a word list file (see the module docs).
    pub fn load(path: &Path) -> Result<Lexicon> {
        let text = std::fs::read_to_string(path).at(path)?;
        let mut pairs = Vec::new();
        for (i, line) in quern_core::text::strip_bom(&text).lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim_end();
            if line.trim().is_empty() {
                continue;
            }
            let (entry, weight) = match line.split_once('\t') {
                Some((e, w)) => {
                    let w: f64 = w.trim().parse().map_err(|_| {
                        Error::bad_input(
                            Place::file(path).with_line(i as u64 + 1),
                            format!("weight `{}` is not a number", w.trim()),
                        )
                    })?;
                    (e.trim(), w)
                }
                None => (line.trim(), 1.0),
            };
            pairs.push((entry.to_string(), weight));
        }
        let lex = Lexicon::from_entries(pairs.iter().map(|(e, w)| (e.as_str(), *w)));
        if lex.entries.is_empty() {
            return Err(Error::bad_input(
                Place::file(path),
                "the word list has no entries",
            ));
        }
        Ok(lex)
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// `(summed weight of matches, number of words)` of `text`.
    pub fn matches(&self, text: &str, buf: &mut String, words: &mut Vec<String>) -> (f64, usize) {
        words.clear();
        for_each_norm_word(text, buf, |w, _, _| words.push(w.to_string()));
        let mut total = 0.0;
        let mut key = String::new();
        for i in 0..words.len() {
            key.clear();
            for (k, w) in words[i..].iter().take(self.max_len).enumerate() {
                if k > 0 {
                    key.push(' ');
                }
                key.push_str(w);
                if let Some(wt) = self.entries.get(key.as_str()) {
                    total += wt;
                }
            }
        }
        (total, words.len())
    }

    /// The score of `text`.
    pub fn score(&self, text: &str, normalize: Normalize) -> f64 {
        let (s, n) = self.matches(text, &mut String::new(), &mut Vec::new());
        match normalize {
            Normalize::Count => s,
            Normalize::PerWord => {
                if n == 0 {
                    0.0
                } else {
                    s / n as f64
                }
            }
        }
    }
}

/// The `lexicon` stage.
pub struct LexiconStage {
    name: String,
    cfg: LexiconConfig,
    lexicon: Arc<Lexicon>,
}

impl LexiconStage {
    pub fn new(name: &str, cfg: LexiconConfig, lexicon: Arc<Lexicon>) -> Self {
        LexiconStage {
            name: name.to_string(),
            cfg,
            lexicon,
        }
    }

    pub fn from_spec(spec: &StageSpec) -> Result<Self> {
        let cfg: LexiconConfig = parse_params(spec)?;
        let lex = Lexicon::load(&spec.resolve(&cfg.path))
            .map_err(|e| Error::bad_config(format!("{}.path", spec.key), e.to_string()))?;
        Ok(Self::new(&spec.name, cfg, Arc::new(lex)))
    }

    fn out_col(&self) -> String {
        format!("{}_score", self.name)
    }
}

impl Stage for LexiconStage {
    fn name(&self) -> &str {
        &self.name
    }
    fn reads(&self) -> Vec<String> {
        vec![self.cfg.column.clone()]
    }
    fn adds(&self) -> Vec<Field> {
        vec![Field::new(self.out_col(), DataType::Float64, true)]
    }
    fn thresholds(&self) -> Vec<Threshold> {
        self.cfg
            .max_score
            .map(|max| Threshold::new(self.out_col(), Keeps::AtMost, max, "max_score", REASON))
            .into_iter()
            .collect()
    }
    fn apply(&self, _ctx: &BatchCtx, batch: RecordBatch) -> Result<Verdict> {
        let text = string_column(&batch, &self.cfg.column, &self.name)?;
        let norm = self.cfg.normalize;
        let scores: Vec<Option<f64>> = (0..batch.num_rows())
            .into_par_iter()
            .map(|i| {
                if text.is_null(i) {
                    None
                } else {
                    Some(self.lexicon.score(text.value(i), norm))
                }
            })
            .collect();
        let reasons: Vec<Option<String>> = scores
            .iter()
            .map(|s| match (s, self.cfg.max_score) {
                (Some(s), Some(max)) if *s > max => Some(REASON.to_string()),
                _ => None,
            })
            .collect();
        let col: Float64Array = scores.into_iter().collect();
        let batch = with_column(
            &batch,
            Field::new(self.out_col(), DataType::Float64, true),
            Arc::new(col) as ArrayRef,
        )?;
        Ok(if self.cfg.max_score.is_some() {
            Verdict::with_reasons(batch, reasons)
        } else {
            Verdict::columns(batch)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_and_phrases_with_weights() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("l.txt");
        std::fs::write(&p, "# a list\ndamn\nfree money\t2\n\n").unwrap();
        let lex = Lexicon::load(&p).unwrap();
        assert_eq!(lex.len(), 2);
        let table: &[(&str, f64, f64)] = &[
            ("Damn! FREE money, free time", 3.0, 3.0 / 5.0),
            ("nothing here", 0.0, 0.0),
            ("", 0.0, 0.0),
        ];
        for (text, count, per_word) in table {
            assert_eq!(lex.score(text, Normalize::Count), *count, "{text}");
            assert!(
                (lex.score(text, Normalize::PerWord) - per_word).abs() < 1e-12,
                "{text}"
            );
        }
        std::fs::write(&p, "damn\tlots\n").unwrap();
        let e = Lexicon::load(&p).unwrap_err().to_string();
        assert!(e.contains("l.txt:1") && e.contains("lots"), "{e}");
    }

    /// `max_score` is declared as a maximum on the column the stage adds (so the names cannot
    /// drift apart), and only when set.
    #[test]
    fn max_score_is_a_threshold_on_the_score_column() {
        use arrow::datatypes::DataType;
        let lex = Arc::new(Lexicon::from_entries([("damn", 1.0)]));
        let cfg = |max_score| LexiconConfig {
            path: "l.txt".into(),
            column: "text".into(),
            normalize: Normalize::PerWord,
            max_score,
        };
        let none = LexiconStage::new("profanity", cfg(None), lex.clone());
        assert!(none.thresholds().is_empty());
        let stage = LexiconStage::new("profanity", cfg(Some(0.05)), lex);
        let t = stage.thresholds();
        assert_eq!(t.len(), 1);
        assert_eq!(
            (
                t[0].param.as_str(),
                t[0].value,
                t[0].keeps,
                t[0].reason.as_str()
            ),
            ("max_score", 0.05, Keeps::AtMost, REASON)
        );
        let f = stage.adds();
        assert!(
            f.iter()
                .any(|f| f.name() == &t[0].column && f.data_type() == &DataType::Float64),
            "{} not in {f:?}",
            t[0].column
        );
    }
}
