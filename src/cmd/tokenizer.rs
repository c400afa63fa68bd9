//! `quern tokenizer`: train a tokenizer, or try one on a text.
//!
//! Training is a separate command because a tokenizer outlives the corpus it was trained on:
//! it is trained once (on a build's train split, any Parquet, or JSONL) and then used by
//! `quern tokenize`, the trainer and, through the same `tokenizer.json`, Python.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use quern_tokenize::input::{TextSource, TextStream};
use quern_tokenize::tokenizer::{
    load_tokenizer, save_tokenizer, train_tokenizer, ModelKind, SpecialIds, SpecialNames,
    TrainTokenizerConfig,
};

/// Arguments of `quern tokenizer`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: Sub,
}

#[derive(Debug, clap::Subcommand)]
pub enum Sub {
    /// Train a tokenizer and write its tokenizer.json.
    Train(TrainArgs),
    /// Encode a text with a tokenizer.json and print the ids and tokens.
    Encode(EncodeArgs),
}

#[derive(Debug, clap::Args)]
pub struct TrainArgs {
    /// Build/ingest output directories, Parquet files or directories, or JSONL files.
    #[arg(long, required = true, num_args = 1..)]
    pub input: Vec<PathBuf>,
    /// Vocabulary size, special tokens included.
    #[arg(long, default_value_t = 32_000)]
    pub vocab_size: usize,
    /// Where to write tokenizer.json.
    #[arg(long)]
    pub out: PathBuf,
    /// bpe (byte-level, GPT-2 style), wordpiece or unigram.
    #[arg(long, default_value = "bpe")]
    pub model: String,
    /// Pairs seen fewer times are not merged.
    #[arg(long, default_value_t = 2)]
    pub min_frequency: u64,
    /// Extra special tokens (after eos, bos, pad, mask, unk and the chat roles).
    #[arg(long, num_args = 1..)]
    pub special: Vec<String>,
    /// Train on at most this many documents.
    #[arg(long)]
    pub max_documents: Option<u64>,
    /// Only rows of this split, when the input has a `split` column.
    #[arg(long, default_value = "train")]
    pub split: String,
    /// The text column (Parquet) or field (JSONL).
    #[arg(long, default_value = "text")]
    pub text_column: String,
}

#[derive(Debug, clap::Args)]
pub struct EncodeArgs {
    /// The tokenizer.json to use.
    #[arg(long)]
    pub tokenizer: PathBuf,
    /// The text to encode.
    pub text: String,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.command {
        Sub::Train(a) => train(a),
        Sub::Encode(a) => {
            let tok = load_tokenizer(&a.tokenizer)?;
            let enc = tok
                .encode(a.text.as_str(), false)
                .map_err(|e| anyhow::anyhow!("encoding failed: {e}"))?;
            let out = serde_json::json!({"ids": enc.get_ids(), "tokens": enc.get_tokens()});
            println!("{}", serde_json::to_string(&out)?);
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn train(a: TrainArgs) -> anyhow::Result<ExitCode> {
    let cfg = TrainTokenizerConfig {
        model: ModelKind::parse(&a.model)?,
        vocab_size: a.vocab_size,
        min_frequency: a.min_frequency,
        special_tokens: a.special,
        max_documents: a.max_documents,
        // The tokenizers trainer's own bars (reading, counting, merging) on a terminal.
        show_progress: std::io::IsTerminal::is_terminal(&std::io::stderr()),
    };
    let mut sources = Vec::new();
    for p in &a.input {
        sources.push(TextSource::resolve(p, Some(&a.split))?);
    }
    let stream = TextStream::new(sources, &a.text_column);
    let err = stream.error_slot();
    let started = std::time::Instant::now();
    let tok = train_tokenizer(&cfg, stream)?;
    if let Some(e) = err
        .lock()
        .map_err(|_| anyhow::anyhow!("reader thread panicked"))?
        .take()
    {
        return Err(e).context("reading the training texts");
    }
    save_tokenizer(&tok, &a.out)?;
    let ids = SpecialIds::find(&tok, &SpecialNames::default())?;
    eprintln!(
        "tokenizer: {} ({:?}, {} entries; eos {:?}, bos {:?}, pad {:?}, mask {:?}) in {:.1}s",
        a.out.display(),
        cfg.model,
        tok.get_vocab_size(true),
        ids.eos,
        ids.bos,
        ids.pad,
        ids.mask,
        started.elapsed().as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}
