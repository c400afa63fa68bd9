//! `quern train run.toml`: train a model on tokenized shards.
//!
//! The TOML is read and validated (unknown keys and bad values are refused, naming the key)
//! before any data is read; then `quern_train::train_with` runs the loop with a progress bar,
//! writes `metrics.jsonl`, checkpoints and `report.json` under `out_dir`, and this command
//! prints a summary (or the report as JSON with `--json`). An `out_dir` that already holds a
//! run is refused unless `--resume` continues it or `--force` replaces it.

use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `quern train`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The run configuration (TOML: [data], [model], [optim], [train], [checkpoint]).
    pub config: PathBuf,
    /// Continue from the newest checkpoint in the run's out_dir.
    #[arg(long, conflicts_with = "force")]
    pub resume: bool,
    /// Replace the run already in out_dir (its metrics.jsonl, checkpoints/ and report.json)
    /// instead of refusing to start.
    #[arg(long)]
    pub force: bool,
    /// Override `train.max_steps`.
    #[arg(long)]
    pub max_steps: Option<u64>,
    /// No progress bar.
    #[arg(long, short)]
    pub quiet: bool,
    /// Print the final report as JSON.
    #[arg(long)]
    pub json: bool,
}

#[cfg(feature = "torch")]
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    use anyhow::Context;
    let mut cfg = quern_train::TrainConfig::load(&args.config)?;
    if let Some(n) = args.max_steps {
        cfg.train.max_steps = n;
        cfg.validate()?;
    }
    let opts = quern_train::TrainOptions {
        progress: !args.quiet,
        resume: args.resume,
        force: args.force,
        stop_after: None,
    };
    let report = quern_train::train_with(&cfg, &opts)
        .with_context(|| format!("training {}", args.config.display()))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(ExitCode::SUCCESS);
    }
    let lora = if report.trainable_parameters != report.parameters {
        format!(
            " through {} LoRA adapter parameters",
            report.trainable_parameters
        )
    } else {
        String::new()
    };
    println!(
        "trained {} parameters{lora} ({}) on {} for steps {}..{}: {} tokens, {:.0} tokens/s{}",
        report.parameters,
        report.objective,
        report.device,
        report.start_step,
        report.steps,
        report.tokens_seen,
        report.tokens_per_s,
        report
            .mfu
            .map(|m| format!(", MFU {:.1}%", 100.0 * m))
            .unwrap_or_default()
    );
    if let (Some(first), Some(last)) = (report.losses.first(), report.losses.last()) {
        println!(
            "loss {:.4} (step {}) -> {:.4} (step {})",
            first.loss, first.step, last.loss, last.step
        );
    }
    if let Some(e) = report.evals.last() {
        println!("val loss {:.4}, perplexity {:.2}", e.val_loss, e.val_ppl);
    }
    if report.skipped_steps > 0 {
        println!(
            "{} steps skipped (non-finite loss or gradient)",
            report.skipped_steps
        );
    }
    if let Some(c) = &report.checkpoint {
        println!("checkpoint {}", c.display());
    }
    println!("metrics {}", cfg.out_dir.join("metrics.jsonl").display());
    Ok(ExitCode::SUCCESS)
}

#[cfg(not(feature = "torch"))]
pub fn run(_args: Args) -> anyhow::Result<ExitCode> {
    anyhow::bail!("this quern was built without the `torch` feature, so it cannot train; rebuild with default features")
}
