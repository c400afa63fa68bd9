//! Rule labelers: named labels from keyword lists and regular expressions, with weights
//! and thresholds, declared in the pipeline config (the `rules` stage) or as JSON (the
//! `quern_rule_label` SQL function).
//!
//! Why: many useful labels need no model (a topic from a handful of terms, "contains
//! code", "mentions a price"); rules are transparent and can seed training data for the
//! classifier.
//!
//! Each label's score is the sum over its rules of `weight × hits`, where `hits` is 1 when
//! the rule matches at all (`count = "presence"`, the default) or the number of matches
//! (`count = "occurrences"`). Keywords match whole words, case-insensitively; each keyword
//! is a rule of weight `keyword_weight`. The stage writes one Float64 column per label,
//! `<name>_<label>`, and `<name>` (Utf8): the label with the highest score among those that
//! reach their threshold (the first declared on ties), else `default_label` (null unless
//! set). Documents whose label is in `drop` are dropped with reason `rule_label`.
//!
//! ```toml
//! [[stages]]
//! type = "rules"
//! name = "topic"
//! column = "text"            # default "text"
//! default_label = "other"    # default none (null)
//! drop = []                  # default []: labels whose documents are dropped
//! [[stages.labels]]
//! name = "finance"
//! keywords = ["loan", "mortgage", "interest rate"]   # default []
//! keyword_weight = 1.0       # default 1.0
//! patterns = [{ regex = '\$\d+', weight = 0.5 }]    # default []
//! count = "presence"         # "presence" (default) or "occurrences"
//! threshold = 2.0            # default 1.0
//! ```

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, Float64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field};
use quern_core::stage::{
    parse_params, string_column, with_column, BatchCtx, Stage, StageSpec, Verdict,
};
use quern_core::{Error, Result};
use rayon::prelude::*;
use regex::Regex;
use serde::Deserialize;

/// Reason given to dropped documents.
pub const REASON: &str = "rule_label";

/// One weighted regular expression.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pattern {
    /// Rust `regex` syntax. Required.
    pub regex: String,
    /// Default 1.0.
    #[serde(default = "d_one")]
    pub weight: f64,
}

/// How rule hits are counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Count {
    /// A rule adds its weight once if it matches at all (default).
    #[default]
    Presence,
    /// A rule adds its weight for every match.
    Occurrences,
}

/// One named label.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabelRule {
    /// Required; snake_case is best, as it becomes part of a column name.
    pub name: String,
    #[serde(default)]
    pub keywords: Vec<String>,
    #[serde(default = "d_one")]
    pub keyword_weight: f64,
    #[serde(default)]
    pub patterns: Vec<Pattern>,
    #[serde(default)]
    pub count: Count,
    #[serde(default = "d_one")]
    pub threshold: f64,
}

fn d_one() -> f64 {
    1.0
}

/// Config of the `rules` stage and of `quern_rule_label`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RulesConfig {
    /// At least one. Required.
    pub labels: Vec<LabelRule>,
    #[serde(default = "crate::classifier::default_text")]
    pub column: String,
    #[serde(default)]
    pub default_label: Option<String>,
    #[serde(default)]
    pub drop: Vec<String>,
}

struct Compiled {
    keywords: Option<Regex>,
    keyword_weight: f64,
    patterns: Vec<(Regex, f64)>,
    count: Count,
    threshold: f64,
}

/// Compiled rules.
pub struct RuleSet {
    names: Vec<String>,
    compiled: Vec<Compiled>,
    default_label: Option<String>,
}

impl RuleSet {
    /// Compiles the rules; `key` prefixes config errors (e.g. `stages[1]`).
    pub fn new(cfg: &RulesConfig, key: &str) -> Result<RuleSet> {
        if cfg.labels.is_empty() {
            return Err(Error::bad_config(
                format!("{key}.labels"),
                "give at least one label",
            ));
        }
        let mut names = Vec::new();
        let mut compiled = Vec::new();
        for (i, l) in cfg.labels.iter().enumerate() {
            let k = format!("{key}.labels[{i}]");
            if l.name.is_empty() || names.contains(&l.name) {
                return Err(Error::bad_config(
                    format!("{k}.name"),
                    format!("label names must be non-empty and unique (`{}`)", l.name),
                ));
            }
            if l.keywords.is_empty() && l.patterns.is_empty() {
                return Err(Error::bad_config(
                    k,
                    format!("label `{}` has neither keywords nor patterns", l.name),
                ));
            }
            let keywords = if l.keywords.is_empty() {
                None
            } else {
                let alts: Vec<String> = l
                    .keywords
                    .iter()
                    .map(|w| regex::escape(&w.to_lowercase()))
                    .collect();
                Some(
                    Regex::new(&format!(r"(?i)\b(?:{})\b", alts.join("|")))
                        .map_err(|e| Error::bad_config(format!("{k}.keywords"), e.to_string()))?,
                )
            };
            let mut patterns = Vec::new();
            for (j, p) in l.patterns.iter().enumerate() {
                let re = Regex::new(&p.regex).map_err(|e| {
                    Error::bad_config(format!("{k}.patterns[{j}].regex"), e.to_string())
                })?;
                patterns.push((re, p.weight));
            }
            names.push(l.name.clone());
            compiled.push(Compiled {
                keywords,
                keyword_weight: l.keyword_weight,
                patterns,
                count: l.count,
                threshold: l.threshold,
            });
        }
        for (i, d) in cfg.drop.iter().enumerate() {
            if !names.contains(d) && cfg.default_label.as_ref() != Some(d) {
                return Err(Error::bad_config(
                    format!("{key}.drop[{i}]"),
                    format!("`{d}` is not a declared label"),
                ));
            }
        }
        Ok(RuleSet {
            names,
            compiled,
            default_label: cfg.default_label.clone(),
        })
    }

    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// The score of every label for `text`.
    pub fn scores(&self, text: &str) -> Vec<f64> {
        self.compiled
            .iter()
            .map(|c| {
                let mut s = 0.0;
                if let Some(re) = &c.keywords {
                    match c.count {
                        Count::Occurrences => {
                            s += c.keyword_weight * re.find_iter(text).count() as f64
                        }
                        Count::Presence => {
                            let mut seen: Vec<String> = re
                                .find_iter(text)
                                .map(|m| m.as_str().to_lowercase())
                                .collect();
                            seen.sort();
                            seen.dedup();
                            s += c.keyword_weight * seen.len() as f64;
                        }
                    }
                }
                for (re, w) in &c.patterns {
                    s += w * match c.count {
                        Count::Occurrences => re.find_iter(text).count() as f64,
                        Count::Presence => re.is_match(text) as u8 as f64,
                    };
                }
                s
            })
            .collect()
    }

    /// The winning label for these scores (see the module docs).
    pub fn pick<'a>(&'a self, scores: &[f64]) -> Option<&'a str> {
        let mut best: Option<(usize, f64)> = None;
        for (i, (&s, c)) in scores.iter().zip(&self.compiled).enumerate() {
            if s >= c.threshold && best.is_none_or(|(_, b)| s > b) {
                best = Some((i, s));
            }
        }
        best.map(|(i, _)| self.names[i].as_str())
            .or(self.default_label.as_deref())
    }

    /// The label of `text`.
    pub fn label(&self, text: &str) -> Option<&str> {
        self.pick(&self.scores(text))
    }
}

/// The `rules` stage.
pub struct RulesStage {
    name: String,
    column: String,
    rules: RuleSet,
    drop: Vec<String>,
}

impl RulesStage {
    pub fn new(name: &str, cfg: &RulesConfig, key: &str) -> Result<Self> {
        Ok(RulesStage {
            name: name.to_string(),
            column: cfg.column.clone(),
            rules: RuleSet::new(cfg, key)?,
            drop: cfg.drop.clone(),
        })
    }

    pub fn from_spec(spec: &StageSpec) -> Result<Self> {
        Self::new(&spec.name, &parse_params(spec)?, &spec.key)
    }
}

impl Stage for RulesStage {
    fn name(&self) -> &str {
        &self.name
    }
    fn reads(&self) -> Vec<String> {
        vec![self.column.clone()]
    }
    fn adds(&self) -> Vec<Field> {
        let mut f: Vec<Field> = self
            .rules
            .names()
            .iter()
            .map(|l| Field::new(format!("{}_{l}", self.name), DataType::Float64, true))
            .collect();
        f.push(Field::new(&self.name, DataType::Utf8, true));
        f
    }
    fn apply(&self, _ctx: &BatchCtx, batch: RecordBatch) -> Result<Verdict> {
        let text = string_column(&batch, &self.column, &self.name)?;
        let scores: Vec<Option<Vec<f64>>> = (0..batch.num_rows())
            .into_par_iter()
            .map(|i| {
                if text.is_null(i) {
                    None
                } else {
                    Some(self.rules.scores(text.value(i)))
                }
            })
            .collect();
        let mut batch = batch;
        for (k, l) in self.rules.names().iter().enumerate() {
            let col: Float64Array = scores.iter().map(|s| s.as_ref().map(|s| s[k])).collect();
            batch = with_column(
                &batch,
                Field::new(format!("{}_{l}", self.name), DataType::Float64, true),
                Arc::new(col) as ArrayRef,
            )?;
        }
        let labels: Vec<Option<&str>> = scores
            .iter()
            .map(|s| s.as_ref().and_then(|s| self.rules.pick(s)))
            .collect();
        let reasons: Vec<Option<String>> = labels
            .iter()
            .map(|l| {
                l.filter(|l| self.drop.iter().any(|d| d == l))
                    .map(|_| REASON.to_string())
            })
            .collect();
        let col: StringArray = labels.into_iter().collect();
        batch = with_column(
            &batch,
            Field::new(&self.name, DataType::Utf8, true),
            Arc::new(col) as ArrayRef,
        )?;
        Ok(if self.drop.is_empty() {
            Verdict::columns(batch)
        } else {
            Verdict::with_reasons(batch, reasons)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(json: serde_json::Value) -> RulesConfig {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn scores_weights_and_thresholds() {
        let c = cfg(serde_json::json!({
            "labels": [
                {"name": "finance", "keywords": ["loan", "interest rate"], "patterns": [{"regex": "\\$\\d+", "weight": 0.5}], "threshold": 1.5},
                {"name": "sport", "keywords": ["goal"], "count": "occurrences"}
            ],
            "default_label": "other"
        }));
        let r = RuleSet::new(&c, "stages[0]").unwrap();
        let table: &[(&str, [f64; 2], &str)] = &[
            ("A LOAN at a low Interest Rate", [2.0, 0.0], "finance"),
            ("loan loan loan", [1.0, 0.0], "other"),
            ("a loan of $500", [1.5, 0.0], "finance"),
            ("goal! another goal", [0.0, 2.0], "sport"),
            ("goalkeeper loans", [0.0, 0.0], "other"),
        ];
        for (text, want, label) in table {
            assert_eq!(r.scores(text), want.to_vec(), "{text}");
            assert_eq!(r.label(text), Some(*label), "{text}");
        }
    }

    #[test]
    fn bad_rules_name_the_key() {
        let c = cfg(serde_json::json!({"labels": [{"name": "x", "patterns": [{"regex": "("}]}]}));
        let e = RuleSet::new(&c, "stages[4]").err().unwrap().to_string();
        assert!(e.contains("stages[4].labels[0].patterns[0].regex"), "{e}");
        let c = cfg(serde_json::json!({"labels": [{"name": "x"}]}));
        assert!(RuleSet::new(&c, "s")
            .err()
            .unwrap()
            .to_string()
            .contains("neither"));
        let c =
            cfg(serde_json::json!({"labels": [{"name": "x", "keywords": ["a"]}], "drop": ["y"]}));
        assert!(RuleSet::new(&c, "s")
            .err()
            .unwrap()
            .to_string()
            .contains("s.drop[0]"));
    }
}
