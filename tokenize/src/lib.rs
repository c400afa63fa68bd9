//! quern-tokenize: the hand-off from the data side to the trainer.
//!
//! A crate of its own because it carries a heavy dependency (Hugging Face `tokenizers`) and
//! a contract that both sides and outside tools rely on: the tokenized Parquet shards and
//! their `meta.json` (see `docs/DEVELOPING.md`, "Tokenized shards").
//!
//! - [`tokenizer`]: training (byte-level BPE, WordPiece, Unigram) and loading `tokenizer.json`.
//! - [`input`]: finding documents (build outputs, Parquet, JSONL).
//! - [`chat`]: chat templates (plain and Jinja) and conversations for `sft` rows.
//! - [`corpus`]: [`tokenize_corpus`], encoding in parallel, packing and writing shards.
//! - [`pack`]: packing documents into `seq_len + 1` rows.
//! - [`nsp`]: sentence pairs for next-sentence prediction, as BERT makes them.
//! - [`meta`]: `meta.json` of a split directory, and the [`Objective`]s.
//! - [`schema`]: column names and Arrow schemas of tokenized shards, and a row builder.
//! - [`reader`]: the seeded, rank-sharded, resumable row stream the trainer reads.
//! - [`export`]: nanoGPT `train.bin` and Megatron `.bin`/`.idx`.

pub mod chat;
pub mod corpus;
pub mod export;
pub mod input;
pub mod meta;
pub mod nsp;
pub mod pack;
pub mod reader;
pub mod schema;
pub mod tokenizer;

pub use corpus::{tokenize_corpus, TokenizeConfig, TokenizeReport};
pub use meta::{MetaShard, Objective, TokenMeta};
pub use reader::{Cursor, ReaderConfig, Row, TokenReader};
