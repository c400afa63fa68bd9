//! Training and loading tokenizers (Hugging Face `tokenizers`).
//!
//! quern does not implement a tokenizer: it drives the `tokenizers` crate, which is what
//! Python's `tokenizers` and `transformers` run underneath, so a `tokenizer.json` written
//! here loads there and encodes to the same ids (tested against the Python libraries).
//!
//! Three models, built the way their usual pipelines build them:
//!
//! - `bpe` (default): byte-level BPE as in GPT-2 (byte-level pre-tokenizer with GPT-2's
//!   regex, no prefix space, byte-level decoder, the 256 byte symbols as initial alphabet),
//!   so any text round-trips and there is no unknown token.
//! - `wordpiece`: BERT style (BERT normalizer and pre-tokenizer, `##` continuation).
//! - `unigram`: SentencePiece style (Metaspace pre-tokenizer and decoder).
//!
//! Special tokens get the first ids, in this order: `eos` (`<|endoftext|>`), `bos`, `pad`,
//! `mask`, `unk`, then the chat-role tokens the default chat template uses, then any extra
//! ones. [`SpecialIds`] finds them again in any `tokenizer.json` (ours, GPT-2's, BERT's,
//! Llama's) by their usual spellings, or by the names given in the configuration.

use std::collections::HashSet;
use std::path::Path;

use quern_core::error::{IoContext, Place};
use quern_core::{Error, Result};
use serde::{Deserialize, Serialize};
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::decoders::metaspace::Metaspace as MetaspaceDecoder;
use tokenizers::decoders::wordpiece::WordPiece as WordPieceDecoder;
use tokenizers::models::bpe::{BpeTrainerBuilder, BPE};
use tokenizers::models::unigram::{Unigram, UnigramTrainer};
use tokenizers::models::wordpiece::{WordPiece, WordPieceTrainerBuilder};
use tokenizers::models::TrainerWrapper;
use tokenizers::normalizers::bert::BertNormalizer;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::metaspace::{Metaspace, PrependScheme};
use tokenizers::{AddedToken, Tokenizer};

/// End of text: separates documents in packed sequences.
pub const EOS: &str = "<|endoftext|>";
pub const BOS: &str = "<|bos|>";
pub const PAD: &str = "<|pad|>";
pub const MASK: &str = "<|mask|>";
pub const UNK: &str = "<|unk|>";
/// Chat-role tokens of the default chat template.
pub const CHAT_TOKENS: [&str; 4] = ["<|system|>", "<|user|>", "<|assistant|>", "<|end|>"];

/// The tokenizer model to train.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelKind {
    /// Byte-level BPE (GPT-2 style). The default.
    #[default]
    Bpe,
    /// WordPiece (BERT style).
    Wordpiece,
    /// Unigram (SentencePiece style).
    Unigram,
}

impl ModelKind {
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "bpe" => Ok(ModelKind::Bpe),
            "wordpiece" => Ok(ModelKind::Wordpiece),
            "unigram" => Ok(ModelKind::Unigram),
            other => Err(Error::bad_config(
                "model",
                format!("`{other}` is not one of bpe, wordpiece, unigram"),
            )),
        }
    }
}

/// How to train a tokenizer. In a pipeline, the `[tokenize.train_tokenizer]` table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainTokenizerConfig {
    /// `bpe` (byte-level, default), `wordpiece` or `unigram`.
    pub model: ModelKind,
    /// Vocabulary size, special tokens included. Default 32,000.
    pub vocab_size: usize,
    /// Pairs (BPE, WordPiece) seen fewer times than this are not merged. Default 2.
    pub min_frequency: u64,
    /// Special tokens added after the built-in ones (eos, bos, pad, mask, unk and the chat
    /// roles). Default none.
    pub special_tokens: Vec<String>,
    /// Train on at most this many documents (the first ones, in input order). Default: all.
    pub max_documents: Option<u64>,
    /// Show the `tokenizers` trainer's progress bars on stderr (reading the texts, counting,
    /// merging). Default false; `quern tokenizer train` turns them on when stderr is a
    /// terminal.
    pub show_progress: bool,
}

impl Default for TrainTokenizerConfig {
    fn default() -> Self {
        TrainTokenizerConfig {
            model: ModelKind::Bpe,
            vocab_size: 32_000,
            min_frequency: 2,
            special_tokens: Vec::new(),
            max_documents: None,
            show_progress: false,
        }
    }
}

impl TrainTokenizerConfig {
    pub fn with_vocab_size(mut self, n: usize) -> Self {
        self.vocab_size = n;
        self
    }
    pub fn with_model(mut self, m: ModelKind) -> Self {
        self.model = m;
        self
    }
    pub fn with_min_frequency(mut self, f: u64) -> Self {
        self.min_frequency = f;
        self
    }

    /// Every special token, in id order.
    pub fn all_special_tokens(&self) -> Vec<String> {
        let mut out: Vec<String> = [EOS, BOS, PAD, MASK, UNK]
            .iter()
            .map(|s| s.to_string())
            .collect();
        out.extend(CHAT_TOKENS.iter().map(|s| s.to_string()));
        for s in &self.special_tokens {
            if !out.contains(s) {
                out.push(s.clone());
            }
        }
        out
    }

    fn check(&self) -> Result<()> {
        let specials = self.all_special_tokens().len();
        let floor = match self.model {
            ModelKind::Bpe => 256 + specials,
            _ => specials + 1,
        };
        if self.vocab_size < floor {
            return Err(Error::bad_config(
                "vocab_size",
                format!(
                    "{} is too small: a {:?} vocabulary needs at least {floor} entries here",
                    self.vocab_size, self.model
                ),
            ));
        }
        Ok(())
    }
}

/// Trains a tokenizer on `texts`. Deterministic for the same texts and config.
pub fn train_tokenizer<I, S>(cfg: &TrainTokenizerConfig, texts: I) -> Result<Tokenizer>
where
    I: Iterator<Item = S> + Send,
    S: AsRef<str> + Send,
{
    cfg.check()?;
    let specials: Vec<AddedToken> = cfg
        .all_special_tokens()
        .into_iter()
        .map(|t| AddedToken::from(t, true))
        .collect();
    let fail = |e: tokenizers::Error| {
        Error::usage(format!(
            "training the {:?} tokenizer failed: {e}",
            cfg.model
        ))
    };
    let limit = cfg.max_documents.unwrap_or(u64::MAX) as usize;
    let texts = texts.take(limit);
    let mut tok = match cfg.model {
        ModelKind::Bpe => {
            let mut tok = Tokenizer::new(BPE::default());
            tok.with_pre_tokenizer(Some(ByteLevel::new(false, true, true)));
            tok.with_post_processor(Some(ByteLevel::new(false, true, true)));
            tok.with_decoder(Some(ByteLevelDecoder::default()));
            let trainer = BpeTrainerBuilder::new()
                .vocab_size(cfg.vocab_size)
                .min_frequency(cfg.min_frequency)
                .special_tokens(specials)
                .initial_alphabet(ByteLevel::alphabet().into_iter().collect::<HashSet<char>>())
                .show_progress(cfg.show_progress)
                .build();
            let mut trainer = TrainerWrapper::BpeTrainer(trainer);
            tok.train(&mut trainer, texts).map_err(fail)?;
            tok
        }
        ModelKind::Wordpiece => {
            let model = WordPiece::builder()
                .unk_token(UNK.to_string())
                .build()
                .map_err(fail)?;
            let mut tok = Tokenizer::new(model);
            tok.with_normalizer(Some(BertNormalizer::default()))
                .map_err(fail)?;
            tok.with_pre_tokenizer(Some(BertPreTokenizer));
            tok.with_decoder(Some(WordPieceDecoder::default()));
            let trainer = WordPieceTrainerBuilder::new()
                .vocab_size(cfg.vocab_size)
                .min_frequency(cfg.min_frequency)
                .special_tokens(specials)
                .show_progress(cfg.show_progress)
                .build();
            let mut trainer = TrainerWrapper::WordPieceTrainer(trainer);
            tok.train(&mut trainer, texts).map_err(fail)?;
            tok
        }
        ModelKind::Unigram => {
            let mut tok = Tokenizer::new(Unigram::default());
            tok.with_pre_tokenizer(Some(Metaspace::new('▁', PrependScheme::Always, true)));
            tok.with_decoder(Some(MetaspaceDecoder::new(
                '▁',
                PrependScheme::Always,
                true,
            )));
            let trainer = UnigramTrainer::builder()
                .vocab_size(cfg.vocab_size as u32)
                .special_tokens(specials)
                .unk_token(Some(UNK.to_string()))
                .show_progress(cfg.show_progress)
                .build()
                .map_err(|e| Error::bad_config("train_tokenizer", e.to_string()))?;
            let mut trainer = TrainerWrapper::UnigramTrainer(trainer);
            tok.train(&mut trainer, texts).map_err(fail)?;
            tok
        }
    };
    // Training leaves no padding or truncation configured; make that explicit so encoding
    // here and in Python gives raw ids.
    tok.with_padding(None);
    tok.with_truncation(None).map_err(fail)?;
    Ok(tok)
}

/// Loads a `tokenizer.json`, naming the file when it cannot be used.
pub fn load_tokenizer(path: &Path) -> Result<Tokenizer> {
    let bytes = std::fs::read(path).at(path)?;
    let mut tok = Tokenizer::from_bytes(&bytes).map_err(|e| {
        Error::bad_input(
            Place::file(path),
            format!("not a Hugging Face tokenizer.json that this version can load: {e}"),
        )
    })?;
    // Ids are packed by quern, never padded or cut by the tokenizer.
    tok.with_padding(None);
    tok.with_truncation(None).map_err(|e| {
        Error::bad_input(Place::file(path), format!("cannot disable truncation: {e}"))
    })?;
    Ok(tok)
}

/// Writes a tokenizer as `tokenizer.json` (pretty, as `save_pretrained` does), atomically.
pub fn save_tokenizer(tok: &Tokenizer, path: &Path) -> Result<()> {
    let text = tok
        .to_string(true)
        .map_err(|e| Error::bug(format!("serialising the tokenizer: {e}")))?;
    quern_core::shard::write_atomic(path, text.as_bytes())
}

/// xxh3-64 (hex) of a file's bytes: `meta.json`'s `tokenizer_hash`.
pub fn file_hash(path: &Path) -> Result<String> {
    quern_core::shard::file_xxh3(path)
}

/// Names of the special tokens, to override the usual spellings. `None` finds them by the
/// usual spellings (see [`SpecialIds::find`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SpecialNames {
    /// End-of-document token. Default: the first of `<|endoftext|>`, `</s>`, `<|end_of_text|>`,
    /// `<eos>`, `[SEP]` the vocabulary has.
    pub eos: Option<String>,
    /// Beginning-of-document token. Default: `<|bos|>`, `<s>`, `<|begin_of_text|>`, `<bos>`, `[CLS]`.
    pub bos: Option<String>,
    /// Padding token. Default: `<|pad|>`, `<pad>`, `[PAD]`.
    pub pad: Option<String>,
    /// Mask token (for `mlm`). Default: `<|mask|>`, `<mask>`, `[MASK]`.
    pub mask: Option<String>,
}

/// The ids of the special tokens a tokenizer has.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpecialIds {
    pub eos: Option<u32>,
    pub bos: Option<u32>,
    pub pad: Option<u32>,
    pub mask: Option<u32>,
}

impl SpecialIds {
    /// Finds the special tokens by the configured names, else by their usual spellings. A
    /// configured name that the vocabulary lacks is an error.
    pub fn find(tok: &Tokenizer, names: &SpecialNames) -> Result<SpecialIds> {
        let pick = |key: &str, name: &Option<String>, usual: &[&str]| -> Result<Option<u32>> {
            match name {
                Some(n) => tok.token_to_id(n).map(Some).ok_or_else(|| {
                    Error::bad_config(
                        format!("special_tokens.{key}"),
                        format!("`{n}` is not in the tokenizer's vocabulary"),
                    )
                }),
                None => Ok(usual.iter().find_map(|u| tok.token_to_id(u))),
            }
        };
        Ok(SpecialIds {
            eos: pick(
                "eos",
                &names.eos,
                &[EOS, "</s>", "<|end_of_text|>", "<eos>", "[SEP]"],
            )?,
            bos: pick(
                "bos",
                &names.bos,
                &[BOS, "<s>", "<|begin_of_text|>", "<bos>", "[CLS]"],
            )?,
            pad: pick("pad", &names.pad, &[PAD, "<pad>", "[PAD]"])?,
            mask: pick("mask", &names.mask, &[MASK, "<mask>", "[MASK]"])?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str =
        "The quick brown fox jumps over the lazy dog. Pack my box with five dozen liquor jugs! \
        Ünïcödé text, emoji 🙂 and numbers 12345 survive a byte-level round trip.";

    fn corpus() -> Vec<String> {
        (0..200)
            .map(|i| {
                format!(
                    "{TEXT} Line {i} of the corpus, with words like token, tokenizer, tokenized."
                )
            })
            .collect()
    }

    #[test]
    fn bpe_round_trips_and_puts_specials_first() {
        let cfg = TrainTokenizerConfig::default().with_vocab_size(400);
        let tok = train_tokenizer(&cfg, corpus().into_iter()).unwrap();
        assert!(
            tok.get_vocab_size(true) <= 400 && tok.get_vocab_size(true) > 300,
            "{}",
            tok.get_vocab_size(true)
        );
        let ids = SpecialIds::find(&tok, &SpecialNames::default()).unwrap();
        assert_eq!(
            ids,
            SpecialIds {
                eos: Some(0),
                bos: Some(1),
                pad: Some(2),
                mask: Some(3)
            }
        );
        let enc = tok.encode(TEXT, false).unwrap();
        assert!(
            enc.get_ids().len() < TEXT.len() / 2,
            "merges were learned: {} ids",
            enc.get_ids().len()
        );
        assert_eq!(tok.decode(enc.get_ids(), false).unwrap(), TEXT);
        // Special tokens inside text are matched whole.
        let e = tok.encode("a<|endoftext|>b", false).unwrap();
        assert!(e.get_ids().contains(&0));
    }

    #[test]
    fn training_is_deterministic_and_saves_loadable_json() {
        let cfg = TrainTokenizerConfig::default().with_vocab_size(350);
        let a = train_tokenizer(&cfg, corpus().into_iter()).unwrap();
        let b = train_tokenizer(&cfg, corpus().into_iter()).unwrap();
        assert_eq!(a.to_string(false).unwrap(), b.to_string(false).unwrap());
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("tokenizer.json");
        save_tokenizer(&a, &p).unwrap();
        let c = load_tokenizer(&p).unwrap();
        assert_eq!(
            c.encode(TEXT, false).unwrap().get_ids(),
            a.encode(TEXT, false).unwrap().get_ids()
        );
    }

    #[test]
    fn wordpiece_and_unigram_train() {
        for model in [ModelKind::Wordpiece, ModelKind::Unigram] {
            let cfg = TrainTokenizerConfig::default()
                .with_vocab_size(150)
                .with_model(model)
                .with_min_frequency(1);
            let tok = train_tokenizer(&cfg, corpus().into_iter()).unwrap();
            let ids = tok
                .encode("the quick brown fox", false)
                .unwrap()
                .get_ids()
                .to_vec();
            assert!(!ids.is_empty(), "{model:?}");
            assert_eq!(tok.token_to_id(EOS), Some(0), "{model:?}");
            let unk = tok.token_to_id(UNK).unwrap();
            assert!(
                ids.iter().all(|&i| i != unk),
                "{model:?}: known words are not unknown: {ids:?}"
            );
        }
    }

    #[test]
    fn bad_inputs_are_named() {
        let e = train_tokenizer(
            &TrainTokenizerConfig::default().with_vocab_size(10),
            corpus().into_iter(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("vocab_size"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("tokenizer.json");
        std::fs::write(&p, "{\"model\": 3}").unwrap();
        let e = load_tokenizer(&p).unwrap_err().to_string();
        assert!(
            e.contains("tokenizer.json") && e.contains("not a Hugging Face tokenizer.json"),
            "{e}"
        );
        let tok = train_tokenizer(
            &TrainTokenizerConfig::default().with_vocab_size(300),
            corpus().into_iter(),
        )
        .unwrap();
        let names = SpecialNames {
            eos: Some("<|nope|>".into()),
            ..Default::default()
        };
        let e = SpecialIds::find(&tok, &names).unwrap_err().to_string();
        assert!(
            e.contains("special_tokens.eos") && e.contains("<|nope|>"),
            "{e}"
        );
    }
}
