//! `quern label`: train and evaluate the fastText-style text classifier that the
//! `classifier` stage applies (see `quern_labeling::classifier`).
//!
//! `quern label train` reads labelled JSONL or Parquet, holds out a deterministic split
//! (`--valid-frac`, by hash of the text so duplicates never straddle it) or uses `--test`,
//! trains, prints accuracy, macro-F1 and the confusion matrix on the held-out rows, and
//! writes the model (`.qcls`) with those scores in its header. `quern label eval` scores a
//! model on another labelled file.

use std::path::PathBuf;
use std::process::ExitCode;

use quern_labeling::classifier::{run_train_job, TrainJob, TrainOptions};

/// Arguments of `quern label`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: LabelCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum LabelCommand {
    /// Train a classifier on labelled JSONL or Parquet and report held-out scores.
    Train(TrainArgs),
    /// Score a trained classifier on labelled JSONL or Parquet.
    Eval(EvalArgs),
}

#[derive(Debug, clap::Args)]
pub struct TrainArgs {
    /// Labelled examples (.jsonl or .parquet).
    #[arg(long)]
    pub data: PathBuf,
    /// Field holding the label.
    #[arg(long)]
    pub label_field: String,
    /// Field holding the text.
    #[arg(long, default_value = "text")]
    pub text_field: String,
    /// Where to write the model (.qcls).
    #[arg(long)]
    pub out: PathBuf,
    /// Passes over the training data.
    #[arg(long, default_value_t = 5)]
    pub epochs: u32,
    /// Starting learning rate (decays linearly to 0).
    #[arg(long, default_value_t = 0.5)]
    pub lr: f32,
    /// Hidden vector width.
    #[arg(long, default_value_t = 64)]
    pub dim: usize,
    /// Longest word n-gram (1 = words only).
    #[arg(long, default_value_t = 2)]
    pub ngrams: u32,
    /// Character n-grams as MIN,MAX (e.g. 3,6); off by default.
    #[arg(long, value_parser = parse_pair)]
    pub char_ngrams: Option<(u32, u32)>,
    /// Keep case (by default tokens are lowercased).
    #[arg(long)]
    pub keep_case: bool,
    /// Minimum occurrences of a feature.
    #[arg(long, default_value_t = 1)]
    pub min_count: u32,
    /// Training threads (0 = all cores). The same data, options, seed and thread count give
    /// a byte-identical model (threads train in deterministic rounds, see
    /// `quern_labeling::classifier::train`).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Seed of the weights, the shuffling and the held-out split.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Fraction held out for scoring (ignored with --test; 0 = no scoring).
    #[arg(long, default_value_t = 0.1)]
    pub valid_frac: f64,
    /// Score on this labelled file instead of holding out part of --data.
    #[arg(long)]
    pub test: Option<PathBuf>,
    /// Print a JSON report instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct EvalArgs {
    /// The model (.qcls).
    #[arg(long)]
    pub model: PathBuf,
    /// Labelled examples (.jsonl or .parquet).
    #[arg(long)]
    pub data: PathBuf,
    /// Field holding the label.
    #[arg(long)]
    pub label_field: String,
    /// Field holding the text.
    #[arg(long, default_value = "text")]
    pub text_field: String,
    /// Print a JSON report instead of text.
    #[arg(long)]
    pub json: bool,
}

fn parse_pair(s: &str) -> Result<(u32, u32), String> {
    let (a, b) = s
        .split_once(',')
        .ok_or_else(|| format!("expected MIN,MAX, got `{s}`"))?;
    let a = a
        .trim()
        .parse()
        .map_err(|_| format!("`{a}` is not a number"))?;
    let b = b
        .trim()
        .parse()
        .map_err(|_| format!("`{b}` is not a number"))?;
    Ok((a, b))
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.command {
        LabelCommand::Train(a) => run_train(a),
        LabelCommand::Eval(a) => run_eval(a),
    }
}

fn run_train(a: TrainArgs) -> anyhow::Result<ExitCode> {
    let mut options = TrainOptions::default()
        .with_dim(a.dim)
        .with_epochs(a.epochs)
        .with_lr(a.lr)
        .with_word_ngrams(a.ngrams)
        .with_min_count(a.min_count)
        .with_threads(a.threads)
        .with_seed(a.seed);
    if let Some((lo, hi)) = a.char_ngrams {
        options = options.with_char_ngrams(lo, hi);
    }
    options.features.lowercase = !a.keep_case;
    let job = TrainJob {
        data: a.data,
        label_field: a.label_field,
        text_field: a.text_field,
        out: a.out,
        options,
        valid_frac: a.valid_frac,
        test: a.test,
    };
    let report = run_train_job(&job)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{report}");
    }
    Ok(ExitCode::SUCCESS)
}

fn run_eval(a: EvalArgs) -> anyhow::Result<ExitCode> {
    let m = quern_labeling::classifier::run_eval(&a.model, &a.data, &a.text_field, &a.label_field)?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&m)?);
    } else {
        print!("{m}");
    }
    Ok(ExitCode::SUCCESS)
}
