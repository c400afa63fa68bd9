//! `quern import`: the libtorch side (the arguments are `quern::cmd::import::Args`).

use std::process::ExitCode;

pub use quern::cmd::import::Args;

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    use anyhow::Context;
    if args.out.exists() && !args.force {
        anyhow::bail!(
            "{} already exists; pass --force to replace it",
            args.out.display()
        );
    }
    let t0 = std::time::Instant::now();
    let w = quern_models::store::load_weights(&args.source)
        .with_context(|| format!("importing {}", args.source.display()))?;
    let read_s = t0.elapsed().as_secs_f64();
    // Build the model once: it checks every name and shape against the config.
    let file = args.source.clone();
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
    let total_s = t0.elapsed().as_secs_f64();
    let c = &w.meta.config;
    let summary = serde_json::json!({
        "source": args.source.display().to_string(),
        "kind": w.kind.name(),
        "out": args.out.display().to_string(),
        "family": c.family(),
        "parameters": model.params().numel(),
        "layers": c.layers,
        "dim": c.dim,
        "heads": c.heads,
        "kv_heads": c.kv_heads(),
        "vocab_size": c.vocab_size,
        "context": c.seq_len,
        "tokenizer": w.tokenizer_json.is_some(),
        "chat_template": w.meta.chat_template.is_some(),
        "read_s": read_s,
        "total_s": total_s,
    });
    if args.json {
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        println!(
            "imported {} ({}): {}-like, {} parameters, {} layers, width {}, {} heads ({} key/value), vocab {}, context {}",
            args.source.display(),
            w.kind.name(),
            c.family(),
            model.params().numel(),
            c.layers,
            c.dim,
            c.heads,
            c.kv_heads(),
            c.vocab_size.unwrap_or(0),
            c.seq_len.unwrap_or(0)
        );
        println!(
            "tokenizer: {}; chat template: {}",
            if w.tokenizer_json.is_some() {
                "yes"
            } else {
                "no"
            },
            if w.meta.chat_template.is_some() {
                "yes"
            } else {
                "no"
            }
        );
        println!(
            "wrote {} in {:.1} s (read {:.1} s)",
            args.out.display(),
            total_s,
            read_s
        );
    }
    Ok(ExitCode::SUCCESS)
}
