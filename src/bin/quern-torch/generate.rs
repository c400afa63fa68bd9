//! `quern generate`: the libtorch side (the arguments are `quern::cmd::generate::Args`).

use std::io::BufRead;
use std::process::ExitCode;

pub use quern::cmd::generate::Args;

/// One prompt, as given.
#[derive(Debug, Clone)]
enum Prompt {
    Text(String),
    Chat(Vec<quern_models::chat::Message>),
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    use quern_models::chat::{Message, DEFAULT_TEMPLATE};
    use quern_models::generate::{GenerateConfig, Generator, Sampling};

    let mut prompts: Vec<Prompt> = args.prompts.iter().cloned().map(Prompt::Text).collect();
    if let Some(f) = &args.prompts_file {
        prompts.extend(read_prompts(f)?);
    }
    if args.prompt_tokens.is_some() && !args.bench {
        anyhow::bail!("--prompt-tokens goes with --bench");
    }
    if prompts.is_empty() && args.prompt_tokens.is_none() {
        anyhow::bail!("no prompts: give them as arguments or with --prompts-file FILE.jsonl");
    }
    if args.batch_size == 0 {
        anyhow::bail!("--batch-size must be at least 1");
    }
    let t0 = std::time::Instant::now();
    let loaded = load_model(
        &args.model,
        &args.device,
        &args.dtype,
        args.threads,
        !args.dequantize,
    )?;
    let load_s = t0.elapsed().as_secs_f64();
    let special = loaded.meta.special.clone();
    let gen = Generator::new(&loaded.model, loaded.tokenizer.as_ref(), &special);
    let template = loaded.meta.chat_template.clone();
    let chat = args.chat.unwrap_or(template.is_some());
    let template_text = template.as_deref().unwrap_or(DEFAULT_TEMPLATE);
    if chat && template.is_none() && !args.json {
        eprintln!("note: the model has no chat template; using a plain ChatML layout");
    }
    let mut ids = Vec::with_capacity(prompts.len());
    if let Some(n) = args.prompt_tokens {
        let v = loaded.model.vocab_size().max(11) as usize;
        // A different prompt per row: identical ones would share one prefill.
        ids.extend((0..args.batch_size).map(|r| {
            (0..n)
                .map(|i| (5 + (i + r * 7) % (v - 10)) as u32)
                .collect::<Vec<u32>>()
        }));
    }
    for p in &prompts {
        ids.push(match p {
            Prompt::Text(t) if !chat => gen.encode(t, false)?,
            Prompt::Text(t) => {
                let mut msgs = Vec::new();
                if let Some(s) = &args.system {
                    msgs.push(Message::new("system", s));
                }
                msgs.push(Message::new("user", t));
                gen.encode_chat(template_text, &msgs)?
            }
            Prompt::Chat(m) => gen.encode_chat(template_text, m)?,
        });
    }
    let cfg = GenerateConfig {
        max_new_tokens: args.max_tokens,
        sampling: Sampling {
            temperature: args.temperature,
            top_k: args.top_k,
            top_p: args.top_p,
            repetition_penalty: args.repetition_penalty,
        },
        stop_ids: args.stop_id.clone(),
        stop_strings: args.stop.clone(),
        ignore_eos: args.bench,
        seed: args.seed,
    };
    if args.bench {
        return bench(&gen, &ids, &cfg, &args, load_s, &loaded);
    }
    let mut index = 0usize;
    for chunk in ids.chunks(args.batch_size) {
        let (outs, _) = gen.generate(chunk, &cfg)?;
        for out in outs {
            let p = &prompts[index];
            index += 1;
            if args.json {
                let prompt = match p {
                    Prompt::Text(t) => serde_json::json!({ "prompt": t }),
                    Prompt::Chat(m) => serde_json::json!({ "messages": m }),
                };
                let mut row = prompt;
                row["completion"] = serde_json::Value::from(out.text.clone());
                row["tokens"] = serde_json::to_value(&out.tokens)?;
                row["finish_reason"] = serde_json::to_value(out.finish)?;
                row["prompt_tokens"] = serde_json::Value::from(out.prompt_tokens);
                println!("{}", serde_json::to_string(&row)?);
            } else {
                if prompts.len() > 1 {
                    let shown = match p {
                        Prompt::Text(t) => t.clone(),
                        Prompt::Chat(m) => m.last().map(|m| m.content.clone()).unwrap_or_default(),
                    };
                    println!("### {shown}");
                }
                if loaded.tokenizer.is_some() {
                    println!("{}", out.text);
                } else {
                    println!("{:?}", out.tokens);
                }
                if prompts.len() > 1 {
                    println!();
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Sets libtorch up (device, `--threads`, the CPU allocator) and loads `model` cast to
/// `dtype`: what `quern generate` and `quern eval` do first. With `low_bit`, a quantized
/// model's matrices run on low-bit products (CPU, fp32 activations outside them; int8 on
/// quern's decoding kernel for one to eight rows).
pub fn load_model(
    model: &std::path::Path,
    device: &str,
    dtype: &str,
    threads: Option<usize>,
    low_bit: bool,
) -> anyhow::Result<quern_models::store::Loaded> {
    use anyhow::Context;
    let device = quern_models::device::parse(device)?;
    let kind = quern_models::device::parse_dtype(dtype)?;
    if device == tch::Device::Cpu {
        quern_models::device::keep_freed_memory();
    }
    if let Some(n) = threads {
        if n == 0 {
            anyhow::bail!("--threads must be at least 1");
        }
        tch::set_num_threads(n as i32);
    }
    let mut loaded = quern_models::store::load(model, device)
        .with_context(|| format!("loading the model {}", model.display()))?;
    loaded.model.cast(kind);
    if low_bit && !loaded.quant.is_empty() {
        if device == tch::Device::Cpu && kind == tch::Kind::Float {
            let n = loaded.model.use_quantized(&loaded.quant)?;
            if n < loaded.quant.len() {
                eprintln!(
                    "note: {} of {} quantized matrices run on low-bit kernels; the others (int4 with outputs not a multiple of 16) run dequantized",
                    n,
                    loaded.quant.len()
                );
            }
        } else {
            eprintln!(
                "note: the quantized matrices run dequantized: low-bit kernels are used on the CPU with --dtype fp32"
            );
        }
    }
    Ok(loaded)
}

fn bench(
    gen: &quern_models::generate::Generator<'_>,
    ids: &[Vec<u32>],
    cfg: &quern_models::generate::GenerateConfig,
    args: &Args,
    load_s: f64,
    loaded: &quern_models::store::Loaded,
) -> anyhow::Result<ExitCode> {
    let batch = &ids[..ids.len().min(args.batch_size)];
    gen.generate(batch, cfg)?; // warm-up
    let mut runs = Vec::new();
    for _ in 0..args.repeat.max(1) {
        let t = std::time::Instant::now();
        let (_, timing) = gen.generate(batch, cfg)?;
        runs.push((timing, t.elapsed().as_secs_f64()));
    }
    // The median run by decoding speed.
    runs.sort_by(|a, b| {
        a.0.decode_tokens_per_s()
            .total_cmp(&b.0.decode_tokens_per_s())
    });
    let (t, total) = runs[runs.len() / 2];
    let bytes = loaded.model.weight_bytes_per_token();
    let row = serde_json::json!({
        "model": args.model.display().to_string(),
        "device": format!("{:?}", loaded.model.device()),
        "dtype": args.dtype,
        "threads": tch::get_num_threads(),
        "parameters": loaded.model.params().numel(),
        "low_bit_matrices": loaded.model.low_bit_matrices(),
        "batch": batch.len(),
        "prompt_tokens": t.prompt_tokens,
        "new_tokens_per_row": cfg.max_new_tokens,
        "load_s": load_s,
        "prefill_s": t.prefill_s,
        "prefill_tokens_per_s": t.prefill_tokens_per_s(),
        "decode_s": t.decode_s,
        "decode_steps": t.steps,
        "decode_tokens_per_s": t.decode_tokens_per_s(),
        "decode_steps_per_s": t.steps as f64 / t.decode_s.max(1e-9),
        "total_s": total,
        "weight_bytes_per_step": bytes,
        "weight_read_gb_per_s": bytes * t.steps as f64 / t.decode_s.max(1e-9) / 1e9,
    });
    if args.json {
        println!("{}", serde_json::to_string(&row)?);
    } else {
        println!(
            "batch {} on {:?} ({}): prefill {} tokens in {:.3} s ({:.0} tokens/s); decode {} steps in {:.3} s: {:.1} tokens/s, {:.1} steps/s, weights read at {:.1} GB/s",
            batch.len(),
            loaded.model.device(),
            args.dtype,
            t.prompt_tokens,
            t.prefill_s,
            t.prefill_tokens_per_s(),
            t.steps,
            t.decode_s,
            t.decode_tokens_per_s(),
            t.steps as f64 / t.decode_s.max(1e-9),
            bytes * t.steps as f64 / t.decode_s.max(1e-9) / 1e9
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Prompts from a JSONL file; errors name the file and line.
fn read_prompts(path: &std::path::Path) -> anyhow::Result<Vec<Prompt>> {
    let f = std::fs::File::open(path)
        .map_err(|e| anyhow::anyhow!("opening {}: {e}", path.display()))?;
    let mut out = Vec::new();
    for (i, line) in std::io::BufReader::new(f).lines().enumerate() {
        let line = line.map_err(|e| anyhow::anyhow!("{}:{}: {e}", path.display(), i + 1))?;
        let line = if i == 0 {
            quern_core::text::strip_bom(&line)
        } else {
            &line
        }
        .trim();
        if line.is_empty() {
            continue;
        }
        let bad = |m: String| anyhow::anyhow!("{}:{}: {m}", path.display(), i + 1);
        let v: serde_json::Value =
            serde_json::from_str(line).map_err(|e| bad(format!("not JSON: {e}")))?;
        if let Some(p) = v.get("prompt").and_then(|p| p.as_str()) {
            out.push(Prompt::Text(p.to_string()));
        } else if let Some(m) = v.get("messages") {
            let msgs: Vec<quern_models::chat::Message> = serde_json::from_value(m.clone())
                .map_err(|e| {
                    bad(format!(
                        "`messages` must be [{{\"role\", \"content\"}}...]: {e}"
                    ))
                })?;
            out.push(Prompt::Chat(msgs));
        } else {
            return Err(bad("expected a `prompt` string or a `messages` list".into()));
        }
    }
    Ok(out)
}
