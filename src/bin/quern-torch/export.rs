//! `quern export`: the libtorch side (the arguments are `quern::cmd::export::Args`).

use std::process::ExitCode;

use quern::cmd::export::{Dtype, Format};
use quern_models::gguf_export::{self, GgufType};
use quern_models::hf_export;

pub use quern::cmd::export::Args;

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    use anyhow::Context;
    if args.out.exists() && !args.force {
        anyhow::bail!(
            "{} already exists; pass --force to replace it",
            args.out.display()
        );
    }
    let t0 = std::time::Instant::now();
    let w = quern_models::store::load_weights(&args.model)
        .with_context(|| format!("exporting {}", args.model.display()))?;
    // Build the model once: it checks every name and shape against the config.
    let model = quern_models::Transformer::from_weights(
        &w.meta.config,
        tch::Device::Cpu,
        &w.tensors,
        &args.model,
    )?;
    let done = match args.format {
        Format::Hf => {
            let dtype = match args.dtype {
                Dtype::F32 => hf_export::Dtype::F32,
                Dtype::F16 => hf_export::Dtype::F16,
                Dtype::Bf16 => hf_export::Dtype::Bf16,
                q => anyhow::bail!(
                    "--dtype {} is a GGUF block type; a Hugging Face export is f32, f16 or bf16",
                    format!("{q:?}").to_lowercase()
                ),
            };
            hf_export::export(
                &w.meta,
                &model.params().named(),
                w.tokenizer_json.as_deref(),
                &args.out,
                dtype,
                args.force,
            )
        }
        Format::Gguf => {
            let ty = match args.dtype {
                Dtype::F32 => GgufType::F32,
                Dtype::F16 => GgufType::F16,
                Dtype::Bf16 => GgufType::Bf16,
                Dtype::Q8_0 => GgufType::Q8_0,
                Dtype::Q4_0 => GgufType::Q4_0,
                Dtype::Q4_1 => GgufType::Q4_1,
            };
            gguf_export::export(
                &w.meta,
                &model.params().named(),
                w.tokenizer_json.as_deref(),
                &args.out,
                ty,
                args.force,
            )
        }
    }
    .with_context(|| format!("exporting {}", args.model.display()))?;
    let format = match args.format {
        Format::Hf => "hf",
        Format::Gguf => "gguf",
    };
    let total_s = t0.elapsed().as_secs_f64();
    if args.json {
        let summary = serde_json::json!({
            "model": args.model.display().to_string(),
            "kind": w.kind.name(),
            "out": args.out.display().to_string(),
            "format": format,
            "architecture": done.architecture,
            "tensors": done.tensors,
            "weights_bytes": done.weights_bytes,
            "files": done.files,
            "total_s": total_s,
        });
        println!("{}", serde_json::to_string_pretty(&summary)?);
    } else {
        println!(
            "exported {} ({}) to {} ({format}) as {}: {} tensors, {:.1} MB{}",
            args.model.display(),
            w.kind.name(),
            args.out.display(),
            done.architecture,
            done.tensors,
            done.weights_bytes as f64 / 1e6,
            if done.files.is_empty() {
                String::new()
            } else {
                format!(" of weights; {}", done.files.join(", "))
            }
        );
        if w.tokenizer_json.is_none() {
            println!("no tokenizer: the model has none, so none was written");
        }
    }
    Ok(ExitCode::SUCCESS)
}
