//! `quern rl`: the libtorch side (the arguments are `quern::cmd::rl::Args`).

use std::process::ExitCode;

pub use quern::cmd::rl::Args;

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    use anyhow::Context;
    let mut cfg = quern_train::rl::config::RlConfig::load(&args.config)?;
    if let Some(n) = args.steps {
        cfg.train.steps = n;
        cfg.validate()?;
    }
    let opts = quern_train::rl::RlOptions {
        progress: !args.quiet,
        resume: args.resume,
        force: args.force,
        stop_after: None,
    };
    let report = quern_train::rl::run_with(&cfg, &opts)
        .with_context(|| format!("rl {}", args.config.display()))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{} on {}: steps {}..{} of a policy of {} parameters in {:.1} s{}",
        report.algorithm,
        report.device,
        report.start_step,
        report.steps,
        report.parameters,
        report.seconds,
        if report.failed_steps > 0 {
            format!(", {} steps with a failed reward", report.failed_steps)
        } else {
            String::new()
        }
    );
    let n = (report.log.len() / 4).max(1);
    if let Some((first, last)) = report.reward_drift(n) {
        println!("mean reward {first:.4} (first {n} steps) -> {last:.4} (last {n} steps)");
    }
    if let Some(c) = &report.checkpoint {
        println!("checkpoint {}", c.display());
    }
    println!("metrics {}", cfg.out_dir.join("metrics.jsonl").display());
    Ok(ExitCode::SUCCESS)
}
