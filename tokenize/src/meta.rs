//! `meta.json`: what a tokenized split directory holds.
//!
//! Every split directory (`train/`, `val/`, …) of a tokenize output carries a `meta.json`
//! next to its shards and its `tokenizer.json`. It is the contract between the data side
//! and the trainer: the trainer reads the objective, vocabulary size, sequence length and
//! special-token ids from here instead of guessing them, and checks `tokenizer_hash`
//! against the tokenizer it was given. The field names are those of `docs/DEVELOPING.md`
//! ("Tokenized shards").

use std::fs;
use std::path::Path;

use quern_core::error::{IoContext, Place};
use quern_core::shard::write_atomic;
use quern_core::{Error, Result};
use serde::{Deserialize, Serialize};

/// File name of the split metadata.
pub const META_JSON: &str = "meta.json";
/// File name of the tokenizer copy in every split directory.
pub const TOKENIZER_JSON: &str = "tokenizer.json";

/// What the rows of a split are for, which fixes their columns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Objective {
    /// Causal language modelling: packed `tokens` of `seq_len + 1` ids.
    #[default]
    Clm,
    /// Masked language modelling: packed `tokens` like `clm` (masking happens in the trainer).
    Mlm,
    /// Supervised fine-tuning: `input_ids` + `loss_mask` from prompt/response pairs.
    Sft,
    /// Classification: `input_ids` + `label`.
    Cls,
    /// BERT pretraining: sentence pairs, `input_ids` + `token_type_ids` +
    /// `next_sentence_label` (masking happens in the trainer).
    Nsp,
    /// Reward modelling: `prompt_ids` + `chosen_ids` + `rejected_ids`.
    Rm,
    /// Direct preference optimisation: same rows as `rm`.
    Dpo,
}

impl Objective {
    pub fn name(self) -> &'static str {
        match self {
            Objective::Clm => "clm",
            Objective::Mlm => "mlm",
            Objective::Sft => "sft",
            Objective::Cls => "cls",
            Objective::Nsp => "nsp",
            Objective::Rm => "rm",
            Objective::Dpo => "dpo",
        }
    }

    /// Whether rows are packed fixed-length `tokens` sequences.
    pub fn is_packed(self) -> bool {
        matches!(self, Objective::Clm | Objective::Mlm)
    }

    pub fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "clm" => Objective::Clm,
            "mlm" => Objective::Mlm,
            "sft" => Objective::Sft,
            "cls" => Objective::Cls,
            "nsp" => Objective::Nsp,
            "rm" => Objective::Rm,
            "dpo" => Objective::Dpo,
            other => {
                return Err(Error::bad_config(
                    "objective",
                    format!("`{other}` is not one of clm, mlm, sft, cls, nsp, rm, dpo"),
                ))
            }
        })
    }
}

impl std::fmt::Display for Objective {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A shard of a split as `meta.json` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetaShard {
    /// File name relative to the split directory.
    pub file: String,
    pub rows: u64,
    /// xxh3-64 of the file's bytes, hex.
    pub xxh3: String,
}

/// The parsed `meta.json` of a split directory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenMeta {
    pub objective: Objective,
    /// Size of the tokenizer's vocabulary, added tokens included.
    pub vocab_size: u64,
    /// Sequence length: packed rows hold `seq_len + 1` ids; other rows at most `seq_len`.
    pub seq_len: u64,
    /// Rows (sequences or examples) in the split.
    pub rows: u64,
    /// Token ids in the split (for packed rows: the ids of documents and separators, not
    /// padding; for other rows: every non-pad id).
    pub tokens: u64,
    /// Source documents that contributed rows.
    pub documents: u64,
    /// xxh3-64 (hex) of the bytes of `tokenizer.json`.
    pub tokenizer_hash: String,
    pub pad_id: Option<u32>,
    pub bos_id: Option<u32>,
    pub eos_id: Option<u32>,
    pub mask_id: Option<u32>,
    /// `cls`: label names in id order (label `i` is `labels[i]`); empty otherwise.
    #[serde(default)]
    pub labels: Vec<String>,
    /// `sft`: rows pack several whole conversations (`quern tokenize` with `pack = true`),
    /// with `doc_starts` marking where each begins; a trainer must keep attention and
    /// positions inside each. Absent (false) for one conversation per row and for every
    /// other objective, whose layout the objective fixes.
    #[serde(default, skip_serializing_if = "is_false")]
    pub packed: bool,
    pub shards: Vec<MetaShard>,
}

fn is_false(b: &bool) -> bool {
    !b
}

impl TokenMeta {
    /// Reads `split_dir/meta.json`.
    pub fn load(split_dir: &Path) -> Result<TokenMeta> {
        let path = split_dir.join(META_JSON);
        let text = fs::read_to_string(&path).at(&path)?;
        let meta: TokenMeta = serde_json::from_str(&text).map_err(|e| {
            Error::bad_input(
                Place::file(&path).with_line(e.line() as u64),
                format!("not a quern tokenized split's meta.json: {e}"),
            )
        })?;
        if meta.packed && meta.objective != Objective::Sft {
            return Err(Error::bad_input(
                Place::file(&path),
                format!(
                    "`packed` is true, which only sft splits can be, but `objective` is `{}`",
                    meta.objective
                ),
            ));
        }
        Ok(meta)
    }

    /// Writes `split_dir/meta.json` atomically.
    pub fn save(&self, split_dir: &Path) -> Result<()> {
        let mut text = serde_json::to_vec_pretty(self)?;
        text.push(b'\n');
        write_atomic(&split_dir.join(META_JSON), &text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objective_names_round_trip() {
        for o in [
            Objective::Clm,
            Objective::Mlm,
            Objective::Sft,
            Objective::Cls,
            Objective::Nsp,
            Objective::Rm,
            Objective::Dpo,
        ] {
            assert_eq!(Objective::parse(o.name()).unwrap(), o);
            assert_eq!(
                serde_json::to_string(&o).unwrap(),
                format!("\"{}\"", o.name())
            );
        }
        let e = Objective::parse("gpt").unwrap_err();
        assert!(e.to_string().contains("`gpt` is not one of"), "{e}");
    }

    #[test]
    fn meta_round_trips_and_names_bad_file() {
        let dir = tempfile::tempdir().unwrap();
        let m = TokenMeta {
            objective: Objective::Cls,
            vocab_size: 300,
            seq_len: 16,
            rows: 2,
            tokens: 20,
            documents: 2,
            tokenizer_hash: "00".into(),
            pad_id: Some(0),
            bos_id: None,
            eos_id: Some(1),
            mask_id: None,
            labels: vec!["neg".into(), "pos".into()],
            packed: false,
            shards: vec![MetaShard {
                file: "part-00000.parquet".into(),
                rows: 2,
                xxh3: "ab".into(),
            }],
        };
        m.save(dir.path()).unwrap();
        assert_eq!(TokenMeta::load(dir.path()).unwrap(), m);
        fs::write(dir.path().join(META_JSON), "{\"objective\": \"clm\"}").unwrap();
        let e = TokenMeta::load(dir.path()).unwrap_err().to_string();
        assert!(
            e.contains("meta.json") && e.contains("missing field"),
            "{e}"
        );
    }
}
