//! `quern train`: the libtorch side (the arguments are `quern::cmd::train::Args`).

use std::process::ExitCode;

pub use quern::cmd::train::Args;

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
    // Under torchrun, rank 0 alone writes the page and prints the summary.
    let rank = quern_train::dist::DistEnv::from_env()?.map_or(0, |e| e.rank);
    if rank != 0 {
        return Ok(ExitCode::SUCCESS);
    }
    // The page of the run, from the files the trainer wrote (issue 19). The run itself has
    // succeeded and is checkpointed, so a page that cannot be written is a warning.
    let html = quern::report::write(&cfg.out_dir, None);
    if let Err(e) = &html {
        eprintln!("warning: the run's report.html was not written: {e}");
    }
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
        match (e.accuracy, e.macro_f1) {
            (Some(acc), Some(f1)) => println!(
                "val loss {:.4}, accuracy {acc:.4}, macro-F1 {f1:.4}",
                e.val_loss
            ),
            _ if e.val_nsp_accuracy.is_some() => println!(
                "val loss {:.4} = MLM {:.4} (perplexity {:.2}) + NSP {:.4}, NSP accuracy {:.4}",
                e.val_loss,
                e.val_mlm_loss.unwrap_or(f64::NAN),
                e.val_ppl,
                e.val_nsp_loss.unwrap_or(f64::NAN),
                e.val_nsp_accuracy.unwrap_or(f64::NAN)
            ),
            _ => println!("val loss {:.4}, perplexity {:.2}", e.val_loss, e.val_ppl),
        }
    }
    if let Some(b) = &report.best {
        println!(
            "best val loss {:.4} at step {}{}",
            b.val_loss,
            b.step,
            report
                .best_dir
                .as_ref()
                .map(|d| format!(": {}", d.display()))
                .unwrap_or_default()
        );
    }
    if report.stopped_early {
        println!(
            "stopped early at step {} (train.early_stop_patience evaluations without a better val loss)",
            report.steps
        );
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
    if let Ok(html) = html {
        println!("report {}", html.display());
    }
    Ok(ExitCode::SUCCESS)
}
