//! `quern merge`: the libtorch side (the arguments are `quern::cmd::merge::Args`).

use std::process::ExitCode;

pub use quern::cmd::merge::Args;

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    use anyhow::Context;
    use quern_models::lora;
    if args.out.exists() && !args.force {
        anyhow::bail!(
            "{} already exists; pass --force to replace it",
            args.out.display()
        );
    }
    let t0 = std::time::Instant::now();
    let dir = lora::checkpoint_dir(&args.adapter)?;
    let record = lora::read_record(&dir)?.with_context(|| {
        format!(
            "{} holds full weights, not LoRA adapters (no `lora` record in its state.json): \
             use `quern import` to turn it into a model directory",
            dir.display()
        )
    })?;
    let w = lora::merged(&dir, &record, args.base.as_deref())
        .with_context(|| format!("merging the adapters in {}", dir.display()))?;
    // Build the model once: it checks every name and shape against the base's config.
    let file = dir.join(quern_models::store::WEIGHTS);
    let model = quern_models::Transformer::from_weights(
        &w.meta.config,
        tch::Device::Cpu,
        &w.tensors,
        &file,
    )?;
    quern_models::store::save(
        &args.out,
        &w.meta,
        &model.params().named(),
        w.tokenizer_json.as_deref(),
        args.force,
    )?;
    let base = args.base.clone().unwrap_or_else(|| record.base.clone());
    let summary = serde_json::json!({
        "adapter": dir.display().to_string(),
        "base": base.display().to_string(),
        "base_hash": record.base_hash,
        "out": args.out.display().to_string(),
        "rank": record.lora.rank,
        "alpha": record.lora.alpha,
        "targets": record.lora.targets,
        "parameters": model.params().numel(),
        "tokenizer": w.tokenizer_json.is_some(),
        "total_s": t0.elapsed().as_secs_f64(),
    });
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        println!(
            "merged the LoRA adapters of {} (rank {}, alpha {}, targets {}) into {} ({} parameters)",
            dir.display(),
            record.lora.rank,
            record.lora.alpha,
            record.lora.targets.join(", "),
            base.display(),
            model.params().numel()
        );
        println!(
            "wrote {} in {:.1} s{}",
            args.out.display(),
            t0.elapsed().as_secs_f64(),
            if w.tokenizer_json.is_some() {
                ""
            } else {
                " (no tokenizer.json: neither the base nor the checkpoint has one)"
            }
        );
    }
    Ok(ExitCode::SUCCESS)
}
