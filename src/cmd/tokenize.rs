//! `quern tokenize`: docs shards in, tokenized shards out; and `quern tokenize export`.
//!
//! Raw flags live here; the resolved configuration is `quern_tokenize::TokenizeConfig`
//! (a `--config` file holds it, alone or as a `[tokenize]` table). Flags override a `--config`
//! file, which overrides the defaults.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use quern_tokenize::corpus::{tokenize_corpus_with, RunOptions, TokenizeConfig};
use quern_tokenize::export::{export_split_with, ExportFormat};
use quern_tokenize::input::resolve_docs;
use quern_tokenize::meta::META_JSON;
use quern_tokenize::pack::Tail;
use quern_tokenize::tokenizer::TrainTokenizerConfig;
use quern_tokenize::Objective;

/// Arguments of `quern tokenize`.
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Args {
    #[command(subcommand)]
    pub command: Option<Sub>,
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Debug, clap::Subcommand)]
pub enum Sub {
    /// Export packed splits as nanoGPT train.bin or Megatron .bin/.idx.
    Export(ExportArgs),
}

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// A build or ingest output directory (its docs table), Parquet files' directory, or a
    /// file (.parquet, or .jsonl records such as {"messages": [...]} for sft).
    #[arg(long)]
    pub corpus: Option<PathBuf>,
    /// The tokenizer.json to use.
    #[arg(long)]
    pub tokenizer: Option<PathBuf>,
    /// Train a byte-level BPE tokenizer of this size on the corpus instead of --tokenizer.
    #[arg(long, conflicts_with = "tokenizer")]
    pub train_vocab_size: Option<usize>,
    /// Output directory (one subdirectory per split).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Sequence length (packed rows hold seq_len + 1 ids).
    #[arg(long)]
    pub seq_len: Option<usize>,
    /// clm, mlm, sft, cls, nsp (BERT's sentence pairs: [CLS] A [SEP] B [SEP], half of the
    /// B's from another document), rm or dpo.
    #[arg(long)]
    pub objective: Option<String>,
    /// nsp: seed of the pairing (random B's, short targets, truncation); default 12345.
    #[arg(long)]
    pub nsp_seed: Option<u64>,
    /// Put the beginning-of-text id before every document (sft: unless the chat template
    /// already starts with it).
    #[arg(long)]
    pub add_bos: bool,
    /// sft: render conversations with this Jinja chat template: a model directory (quern
    /// `model.json`, or Hugging Face `chat_template.jinja`/`tokenizer_config.json`), one of
    /// those files, or a template file. Default: the plain `chat_template`.
    #[arg(long)]
    pub jinja_template: Option<PathBuf>,
    /// sft: pack several whole conversations into each row (first fit, up to --seq-len ids);
    /// `quern train` keeps attention and positions inside each conversation.
    #[arg(long)]
    pub pack: bool,
    /// pad or drop the partial last row of each input shard.
    #[arg(long)]
    pub tail: Option<String>,
    /// A TOML file with the tokenize options (a `[tokenize]` table, or the options alone);
    /// its relative paths are relative to the file.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Replace an output directory that holds a different run.
    #[arg(long)]
    pub force: bool,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct ExportArgs {
    /// A split directory (with meta.json), or a tokenize output (every split is exported).
    #[arg(long)]
    pub input: PathBuf,
    /// nanogpt or megatron.
    #[arg(long)]
    pub format: String,
    /// Output directory.
    #[arg(long)]
    pub out: PathBuf,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.command {
        Some(Sub::Export(a)) => export(a),
        None => tokenize(args.run),
    }
}

fn load_config(path: &std::path::Path) -> anyhow::Result<TokenizeConfig> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let value: toml::Table =
        toml::from_str(&text).with_context(|| format!("{} is not TOML", path.display()))?;
    let table = match value.get("tokenize") {
        Some(toml::Value::Table(t)) => t.clone(),
        _ => value,
    };
    let mut cfg: TokenizeConfig = toml::Value::Table(table)
        .try_into()
        .with_context(|| format!("bad tokenize options in {}", path.display()))?;
    // A relative path in the file is relative to the file, not to the working directory.
    let base = path.parent().unwrap_or(std::path::Path::new(""));
    cfg.tokenizer = cfg.tokenizer.map(|t| base.join(t));
    cfg.jinja_template = cfg.jinja_template.map(|t| base.join(t));
    Ok(cfg)
}

fn tokenize(a: RunArgs) -> anyhow::Result<ExitCode> {
    let corpus = a
        .corpus
        .context("--corpus is required (or use `quern tokenize export`)")?;
    let out = a.out.context("--out is required")?;
    let mut cfg = match &a.config {
        Some(p) => load_config(p)?,
        None => TokenizeConfig::default(),
    };
    if let Some(t) = a.tokenizer {
        cfg.tokenizer = Some(t);
        cfg.train_tokenizer = None;
    }
    if let Some(v) = a.train_vocab_size {
        cfg.tokenizer = None;
        cfg.train_tokenizer = Some(TrainTokenizerConfig::default().with_vocab_size(v));
    }
    if let Some(n) = a.seq_len {
        cfg.seq_len = n;
    }
    if let Some(o) = &a.objective {
        cfg.objective = Objective::parse(o)?;
    }
    if a.add_bos {
        cfg.add_bos = true;
    }
    if let Some(s) = a.nsp_seed {
        cfg.nsp_seed = s;
    }
    if a.pack {
        cfg.pack = true;
    }
    if let Some(t) = a.jinja_template {
        cfg.jinja_template = Some(t);
    }
    if let Some(t) = &a.tail {
        cfg.tail = match t.as_str() {
            "pad" => Tail::Pad,
            "drop" => Tail::Drop,
            other => anyhow::bail!("--tail `{other}` is not one of pad, drop"),
        };
    }
    let shards = resolve_docs(&corpus)?;
    let report = tokenize_corpus_with(
        &shards,
        &out,
        &cfg,
        &RunOptions {
            force: a.force,
            verbose: !a.json,
            progress: !a.json && std::io::IsTerminal::is_terminal(&std::io::stderr()),
        },
    )?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        for (split, s) in &report.splits {
            println!(
                "{split:<8} {:>10} rows {:>14} tokens {:>10} documents  (padding {}, dropped {}, truncated rows {}){}",
                s.rows,
                s.tokens,
                s.documents,
                s.padding,
                s.dropped,
                s.truncated,
                if s.nsp_next + s.nsp_random > 0 {
                    format!("; pairs: {} is next, {} random", s.nsp_next, s.nsp_random)
                } else {
                    String::new()
                }
            );
        }
        let acc = &report.accounting;
        println!(
            "documents: {} in = {} kept + {} rejected; vocab {}; tokenizer {}; {:.1} MB of text in {:.1}s{}",
            acc.input,
            acc.kept,
            acc.rejected,
            report.vocab_size,
            report.tokenizer_hash,
            report.text_bytes as f64 / 1e6,
            report.seconds,
            if report.resumed_units > 0 {
                format!(" ({} units resumed)", report.resumed_units)
            } else {
                String::new()
            }
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn export(a: ExportArgs) -> anyhow::Result<ExitCode> {
    let format = ExportFormat::parse(&a.format)?;
    let mut dirs = Vec::new();
    if a.input.join(META_JSON).exists() {
        dirs.push(a.input.clone());
    } else {
        for e in
            std::fs::read_dir(&a.input).with_context(|| format!("reading {}", a.input.display()))?
        {
            let p = e?.path();
            if p.join(META_JSON).exists() {
                dirs.push(p);
            }
        }
        dirs.sort();
    }
    if dirs.is_empty() {
        anyhow::bail!(
            "{} holds no tokenized split (no meta.json in it or its subdirectories)",
            a.input.display()
        );
    }
    for d in dirs {
        let progress = std::io::IsTerminal::is_terminal(&std::io::stderr());
        let r = export_split_with(&d, format, &a.out, progress)?;
        for f in &r.files {
            println!(
                "{} ({} tokens, {} documents, {})",
                f.display(),
                r.tokens,
                r.documents,
                r.dtype
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
