//! `quern compress`: the libtorch side (the arguments are `quern::cmd::compress::Args`).

use std::collections::HashMap;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{bail, Context};
use quern::cmd::compress::{Args, CalibStats, Pattern, Prune, Quant, Range, Rounding, Scope};
use quern_models::compress::{self, PruneMethod, PruneOptions, QuantRecord, Scheme, Taps};
use quern_models::store::{self, ModelMeta};
use quern_models::Transformer;
use quern_train::data::{BatchSource, ShardRows};
use serde_json::json;
use tch::{Device, Kind, Tensor};

/// The report's file name in the output directory.
const REPORT: &str = "compress.json";

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    check_args(&args)?;
    if args.out.exists() && !args.force {
        bail!(
            "{} already exists; pass --force to replace it",
            args.out.display()
        );
    }
    let t0 = std::time::Instant::now();
    let src = store::load_weights(&args.model)
        .with_context(|| format!("compressing {}", args.model.display()))?;
    let mut cfg = src.meta.config.clone();
    if !src.meta.config.pruned.is_empty() || src.meta.quant.is_some() {
        eprintln!(
            "note: {} is already compressed; its dequantized weights are the starting point",
            args.model.display()
        );
    }
    if args.quant_head && cfg.head.is_some() {
        bail!(
            "--quant-head: {} is a classifier (or reward model): its output is its head, not the token projection",
            args.model.display()
        );
    }
    let weights_file = args.model.clone();
    let source = Transformer::from_weights(&cfg, Device::Cpu, &src.tensors, &weights_file)?;
    let calib = match &args.calib {
        Some(split) => Some(read_calibration(split, args.calib_rows, &source)?),
        None => None,
    };
    let mut tensors: HashMap<String, Tensor> = src
        .tensors
        .iter()
        .map(|(k, v)| (k.clone(), v.shallow_clone()))
        .collect();
    let mut steps: Vec<String> = Vec::new();

    // 1. Whole MLP neurons (the shapes change, so later steps calibrate again).
    if let Some(share) = args.prune_neurons {
        let taps = match &calib {
            Some(rows) => Some(calibrate(&cfg, &tensors, rows, false)?),
            None => None,
        };
        let removed = compress::prune_neurons(&mut cfg, &mut tensors, share, taps.as_ref())?;
        steps.push(format!(
            "prune_neurons: {removed} of {} MLP neurons per block ({})",
            removed + cfg.hidden() as i64,
            if taps.is_some() {
                "‖W_out[:, j]‖ · ‖X_j‖"
            } else {
                "‖W_out[:, j]‖ · ‖W_in[j, :]‖"
            }
        ));
    }
    // 2. Unstructured or 2:4 pruning.
    let mut pruned: Vec<String> = Vec::new();
    if let Some(p) = args.prune {
        let method = match p {
            Prune::Magnitude => PruneMethod::Magnitude,
            Prune::Wanda => PruneMethod::Wanda,
        };
        let scope = match args.scope.unwrap_or(match p {
            Prune::Magnitude => Scope::Layer,
            Prune::Wanda => Scope::Row,
        }) {
            Scope::Row => compress::Scope::Row,
            Scope::Layer => compress::Scope::Layer,
            Scope::Global => compress::Scope::Global,
        };
        let pattern = match args.pattern {
            Pattern::Unstructured => compress::Pattern::Unstructured,
            Pattern::TwoFour => compress::Pattern::TwoFour,
        };
        let opts = PruneOptions {
            method,
            sparsity: if pattern == compress::Pattern::TwoFour {
                0.5
            } else {
                args.sparsity
            },
            pattern,
            scope,
        };
        let global = scope == compress::Scope::Global;
        pruned = match (method, &calib) {
            (PruneMethod::Wanda, Some(rows))
                if stats_of(&args, global) == CalibStats::Sequential =>
            {
                let mut names = Vec::new();
                sequential(&cfg, &mut tensors, rows, false, |taps, tensors| {
                    // This block's matrices, pruned alone (row or layer scope).
                    let mut block: HashMap<String, Tensor> = taps
                        .keys()
                        .map(|n| (n.clone(), tensors[n].shallow_clone()))
                        .collect();
                    names.extend(compress::prune(&mut block, &opts, taps)?);
                    tensors.extend(block);
                    Ok(())
                })?;
                names.sort();
                names
            }
            (PruneMethod::Wanda, Some(rows)) => {
                let taps = calibrate(&cfg, &tensors, rows, false)?;
                compress::prune(&mut tensors, &opts, &taps)?
            }
            _ => compress::prune(&mut tensors, &opts, &Taps::new())?,
        };
        steps.push(format!(
            "prune: {} {}, {:?} scope, {} matrices",
            format!("{method:?}").to_lowercase(),
            match pattern {
                compress::Pattern::TwoFour => "2:4".to_string(),
                compress::Pattern::Unstructured => format!("unstructured {}", opts.sparsity),
            },
            scope,
            pruned.len()
        ));
        cfg.pruned = pruned.clone();
    }
    // 3. Quantization.
    let mut quant: Vec<(String, compress::QuantTensor)> = Vec::new();
    let mut record = None;
    if let Some(q) = args.quant {
        let scheme = match q {
            Quant::Int8 => Scheme::Int8,
            Quant::Int4 => Scheme::Int4 { group: args.group },
        };
        let rounding = match args.rounding {
            Rounding::Rtn => compress::Rounding::Rtn,
            Rounding::Gptq => compress::Rounding::Gptq {
                damp: args.damp,
                block: args.block,
                act_order: args.act_order,
            },
        };
        let range = match args.range {
            Range::Minmax => compress::Range::MinMax,
            Range::Search => compress::Range::Search,
        };
        let quantize = |name: &str, w: &Tensor, tap: Option<&compress::Tap>| {
            let h = tap.and_then(|t| t.hessian());
            let mut qt = compress::quantize(w, scheme, rounding, range, h.as_ref())
                .with_context(|| format!("quantizing {name}"))?;
            if pruned.iter().any(|p| p == name) {
                // Pruned zeros stay zero: int8 code 0 is exactly 0 (GPTQ may have moved
                // rounding error onto them).
                qt.codes = &qt.codes * w.ne(0.0).to_kind(qt.codes.kind());
            }
            anyhow::Ok(qt)
        };
        match &calib {
            Some(rows) if gptq(&args) && stats_of(&args, false) == CalibStats::Sequential => {
                sequential(&cfg, &mut tensors, rows, true, |taps, tensors| {
                    for (name, tap) in taps {
                        let tap = tap.lock().map_err(|_| anyhow::anyhow!("a poisoned tap"))?;
                        let qt = quantize(name, &tensors[name], Some(&tap))?;
                        // The next blocks calibrate on what this block computes now.
                        tensors.insert(name.clone(), qt.dequantize());
                        quant.push((name.clone(), qt));
                    }
                    Ok(())
                })?;
            }
            _ => {
                let taps = match &calib {
                    Some(rows) if gptq(&args) => calibrate(&cfg, &tensors, rows, true)?,
                    _ => Taps::new(),
                };
                let mut names: Vec<&String> = tensors
                    .keys()
                    .filter(|n| compress::compressible(n))
                    .collect();
                names.sort();
                for name in names {
                    let qt = match taps.get(name) {
                        Some(t) => {
                            let tap = t.lock().map_err(|_| anyhow::anyhow!("a poisoned tap"))?;
                            quantize(name, &tensors[name], Some(&tap))?
                        }
                        None => quantize(name, &tensors[name], None)?,
                    };
                    quant.push((name.clone(), qt));
                }
            }
        }
        if args.quant_head {
            // The output projection: untied first, so the token embeddings stay exact.
            if cfg.tie_embeddings {
                let emb = tensors
                    .get("tok_emb.weight")
                    .context("the model has no tok_emb.weight")?
                    .copy();
                tensors.insert(compress::HEAD.to_string(), emb);
                cfg.tie_embeddings = false;
            }
            let w = tensors
                .get(compress::HEAD)
                .context("the model has no output projection (lm_head.weight)")?;
            let qt = compress::quantize(w, scheme, compress::Rounding::Rtn, range, None)
                .context("quantizing lm_head.weight")?;
            quant.push((compress::HEAD.to_string(), qt));
        }
        quant.sort_by(|a, b| a.0.cmp(&b.0));
        let names: Vec<String> = quant.iter().map(|(n, _)| n.clone()).collect();
        steps.push(format!(
            "quant: {}{} {}, {} matrices",
            scheme.name(),
            if range == compress::Range::Search {
                " (range search)"
            } else {
                ""
            },
            match rounding {
                compress::Rounding::Rtn => "round-to-nearest".to_string(),
                compress::Rounding::Gptq {
                    damp,
                    block,
                    act_order,
                } => format!(
                    "GPTQ (damp {damp}, block {block}{})",
                    if act_order { ", act order" } else { "" }
                ),
            },
            names.len() - usize::from(args.quant_head)
        ));
        if args.quant_head {
            steps.push(format!(
                "quant: lm_head.weight {}, round-to-nearest (its own copy; the token embeddings stay f32)",
                scheme.name()
            ));
        }
        record = Some(QuantRecord {
            scheme,
            rounding,
            range,
            tensors: names,
        });
    }
    for (name, q) in &quant {
        tensors.insert(name.clone(), q.dequantize());
    }
    // The compressed model, as it will load (dequantized): it must build.
    let out_model = Transformer::from_weights(&cfg, Device::Cpu, &tensors, &args.out)?;

    let ppl = match &args.eval {
        Some(split) => {
            let opts = quern_eval::ppl::PplOptions {
                batch_size: 8,
                max_rows: args.eval_rows,
                docs: Vec::new(),
            };
            let before = quern_eval::ppl::perplexity(&source, split, &opts, &mut |_, _| {})
                .with_context(|| format!("perplexity of {}", args.model.display()))?;
            let after = quern_eval::ppl::perplexity(&out_model, split, &opts, &mut |_, _| {})
                .context("perplexity of the compressed model")?;
            Some(json!({
                "split": split.display().to_string(),
                "tokens": after.overall.tokens,
                "source": before.overall.ppl,
                "compressed": after.overall.ppl,
                "delta_pct": 100.0 * (after.overall.ppl / before.overall.ppl - 1.0),
            }))
        }
        None => None,
    };

    // What is written: quantized matrices as codes and scales, the rest as f32.
    let mut stored: Vec<(String, Tensor)> = Vec::new();
    let quant_names: HashMap<&str, &compress::QuantTensor> =
        quant.iter().map(|(n, q)| (n.as_str(), q)).collect();
    let mut names: Vec<&String> = tensors.keys().collect();
    names.sort();
    for name in names {
        match quant_names.get(name.as_str()) {
            Some(q) => stored.extend(q.stored(name)),
            None => stored.push((name.clone(), tensors[name].shallow_clone())),
        }
    }
    let mut meta = ModelMeta {
        config: cfg.clone(),
        quant: record,
        source: Some(format!("compress:{}", args.model.display())),
        quern_version: env!("CARGO_PKG_VERSION").into(),
        ..src.meta.clone()
    };
    meta.format = store::FORMAT.into();
    let block_src = block_stats(&src.tensors);
    let block_out = block_stats(&tensors);
    let bytes_stored: i64 = stored
        .iter()
        .map(|(_, t)| t.numel() as i64 * t.kind().elt_size_in_bytes() as i64)
        .sum();
    let mut report = json!({
        "source": args.model.display().to_string(),
        "out": args.out.display().to_string(),
        "steps": steps,
        "params": {
            "source": source.params().numel(),
            "compressed": out_model.params().numel(),
        },
        "block_matrices": {
            "params_source": block_src.0,
            "params_compressed": block_out.0,
            "nonzero_compressed": block_out.1,
            "sparsity": 1.0 - block_out.1 as f64 / block_out.0.max(1) as f64,
        },
        "bytes": {
            "source_f32": source.params().numel() * 4,
            "compressed_stored": bytes_stored,
        },
        "calibration": args.calib.as_ref().map(|c| json!({
            "split": c.display().to_string(),
            // Only Wanda and GPTQ have a choice (neurons always calibrate in one pass).
            "stats": (wanda(&args) || gptq(&args)).then(|| {
                match stats_of(&args, args.scope == Some(Scope::Global)) {
                    CalibStats::Sequential => "sequential",
                    CalibStats::Source => "source",
                }
            }),
            "rows": calib.as_ref().map_or(0, |r| r.size()[0]),
            "tokens": calib.as_ref().map_or(0, |r| r.numel()),
        })),
        "perplexity": ppl,
        "seconds": 0.0,
    });
    report["seconds"] = json!(t0.elapsed().as_secs_f64());
    let text = serde_json::to_vec_pretty(&report)?;
    store::save_with(
        &args.out,
        &meta,
        &stored,
        src.tokenizer_json.as_deref(),
        args.force,
        &[(REPORT, text.as_slice())],
    )?;
    if args.json {
        println!("{}", String::from_utf8_lossy(&text));
    } else {
        print_summary(&report);
    }
    Ok(ExitCode::SUCCESS)
}

fn check_args(a: &Args) -> anyhow::Result<()> {
    if a.quant_head && a.quant.is_none() {
        bail!(
            "--quant-head quantizes the output projection like the blocks: give --quant int8|int4"
        );
    }
    if a.prune.is_none() && a.prune_neurons.is_none() && a.quant.is_none() {
        bail!("nothing to do: give --prune, --prune-neurons or --quant");
    }
    if a.prune.is_some() && a.pattern == Pattern::Unstructured && !(0.0..1.0).contains(&a.sparsity)
    {
        bail!("--sparsity must be in [0, 1), got {}", a.sparsity);
    }
    if a.prune.is_none() && (a.scope.is_some() || a.pattern != Pattern::Unstructured) {
        bail!("--scope and --pattern shape --prune's zeros: give --prune magnitude|wanda");
    }
    if a.scope == Some(Scope::Global) && a.pattern == Pattern::TwoFour {
        bail!("--scope global is for unstructured pruning; 2:4 is chosen within each group of 4");
    }
    if a.quant == Some(Quant::Int4) && a.prune.is_some() {
        bail!(
            "int4 is asymmetric (a minimum per group), so it cannot keep pruned weights at exactly 0: \
             quantize a pruned model with --quant int8"
        );
    }
    if a.quant == Some(Quant::Int4) && !(2..=4096).contains(&a.group) {
        bail!("--group must be between 2 and 4096, got {}", a.group);
    }
    if a.quant.is_none() && a.rounding == Rounding::Gptq {
        bail!("--rounding gptq rounds a quantization: give --quant int8|int4");
    }
    if a.act_order && a.rounding != Rounding::Gptq {
        bail!("--act-order orders GPTQ's columns: give --rounding gptq");
    }
    if a.range == Range::Search && a.quant != Some(Quant::Int4) {
        bail!("--range chooses int4 groups' ranges: give --quant int4");
    }
    if !(a.damp > 0.0 && a.damp.is_finite()) || a.block < 1 {
        bail!("--damp must be positive and --block at least 1");
    }
    let needs = [(wanda(a), "--prune wanda"), (gptq(a), "--rounding gptq")];
    for (on, what) in needs {
        if on && a.calib.is_none() {
            bail!(
                "{what} reads the model's activations: give --calib SPLIT (a tokenized clm split, e.g. the training data's val split)"
            );
        }
    }
    if a.calib_stats.is_some() && !wanda(a) && !gptq(a) {
        bail!("--calib-stats chooses Wanda's and GPTQ's statistics: give --prune wanda or --rounding gptq");
    }
    if a.calib_stats == Some(CalibStats::Sequential) && a.scope == Some(Scope::Global) {
        bail!(
            "--scope global ranks every matrix at once, so its statistics come from the source model: use --calib-stats source"
        );
    }
    if a.calib.is_some() && !wanda(a) && !gptq(a) && a.prune_neurons.is_none() {
        bail!("--calib feeds --prune wanda, --rounding gptq and --prune-neurons; none of them is asked for");
    }
    if a.calib_rows == 0 {
        bail!("--calib-rows must be at least 1");
    }
    Ok(())
}

/// Reads `rows` calibration rows of a tokenized clm split, cut to the model's context.
fn read_calibration(split: &Path, rows: usize, model: &Transformer) -> anyhow::Result<Tensor> {
    let (mut reader, meta) =
        ShardRows::open(split, 0, 0, 1).with_context(|| format!("--calib {}", split.display()))?;
    if meta.vocab_size as i64 > model.vocab_size() {
        bail!(
            "--calib {}: the split's tokenizer has {} ids but the model only {}: tokenize it with the model's tokenizer",
            split.display(),
            meta.vocab_size,
            model.vocab_size()
        );
    }
    let n = rows.min(reader.rows());
    if n == 0 {
        bail!("--calib {}: the split has no rows", split.display());
    }
    let ids = reader.next_rows(n)?;
    let width = (reader.row_width() as i64 - 1).min(model.seq_len());
    Ok(ids.narrow(1, 0, width))
}

/// Whether Wanda pruning is asked for.
fn wanda(a: &Args) -> bool {
    a.prune == Some(Prune::Wanda)
}

/// Whether GPTQ quantization is asked for.
fn gptq(a: &Args) -> bool {
    a.quant.is_some() && a.rounding == Rounding::Gptq
}

/// Where Wanda's and GPTQ's statistics come from: `--calib-stats`, by default sequential,
/// or the source model's for a global scope (whose matrices compete all at once).
fn stats_of(args: &Args, global: bool) -> CalibStats {
    args.calib_stats.unwrap_or(if global {
        CalibStats::Source
    } else {
        CalibStats::Sequential
    })
}

/// Calibrates and compresses one block at a time, in the order of the GPTQ and Wanda papers:
/// block i's taps (with the Gram matrix when `gram`) see inputs that passed through blocks
/// 0..i as `compress` already left them; `compress` gets them and replaces the block's
/// matrices in `tensors`, which the model then computes with. Costs about two passes over
/// the calibration rows, whatever the depth.
fn sequential(
    cfg: &quern_models::ModelConfig,
    tensors: &mut HashMap<String, Tensor>,
    rows: &Tensor,
    gram: bool,
    mut compress: impl FnMut(&Taps, &mut HashMap<String, Tensor>) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let _g = tch::no_grad_guard();
    let mut model = Transformer::from_weights(cfg, Device::Cpu, tensors, Path::new("(compress)"))?;
    let causal = !cfg.post_norm;
    let n = rows.size()[0];
    let mut xs = Vec::new();
    let mut at = 0;
    while at < n {
        let b = 8.min(n - at);
        xs.push(model.embed(&rows.narrow(0, at, b))?);
        at += b;
    }
    for i in 0..cfg.layers {
        let prefix = format!("blocks.{i}.");
        let taps = model.set_taps_on(gram, |name| name.starts_with(&prefix));
        for x in &xs {
            let _ = model.block_forward(i, x, causal)?;
        }
        model.clear_taps();
        compress(&taps, tensors)?;
        for name in taps.keys() {
            model.set_weight(name, &tensors[name])?;
        }
        if i + 1 < cfg.layers {
            for x in xs.iter_mut() {
                *x = model.block_forward(i, x, causal)?;
            }
        }
    }
    Ok(())
}

/// One pass of the model of `tensors` over the calibration rows, collecting every block
/// matrix's input statistics.
fn calibrate(
    cfg: &quern_models::ModelConfig,
    tensors: &HashMap<String, Tensor>,
    rows: &Tensor,
    gram: bool,
) -> anyhow::Result<Taps> {
    let _g = tch::no_grad_guard();
    let mut model = Transformer::from_weights(cfg, Device::Cpu, tensors, Path::new("(compress)"))?;
    let taps = model.set_taps(gram);
    let n = rows.size()[0];
    let causal = !cfg.post_norm;
    let mut at = 0;
    while at < n {
        let b = 8.min(n - at);
        let _ = model.forward(&rows.narrow(0, at, b), causal, false);
        at += b;
    }
    model.clear_taps();
    Ok(taps)
}

/// (weights, non-zero weights) of the block matrices.
fn block_stats(tensors: &HashMap<String, Tensor>) -> (i64, i64) {
    let mut all = 0;
    let mut nz = 0;
    for (name, t) in tensors {
        if compress::compressible(name) {
            all += t.numel() as i64;
            nz += t.ne(0.0).sum(Kind::Int64).int64_value(&[]);
        }
    }
    (all, nz)
}

fn print_summary(r: &serde_json::Value) {
    println!(
        "compressed {} into {}",
        r["source"].as_str().unwrap_or("?"),
        r["out"].as_str().unwrap_or("?")
    );
    if let Some(steps) = r["steps"].as_array() {
        for s in steps {
            println!("  {}", s.as_str().unwrap_or(""));
        }
    }
    let b = &r["bytes"];
    println!(
        "  size: {:.1} MB stored (source {:.1} MB in f32); block matrices {:.1}% zero",
        b["compressed_stored"].as_f64().unwrap_or(0.0) / 1e6,
        b["source_f32"].as_f64().unwrap_or(0.0) / 1e6,
        100.0 * r["block_matrices"]["sparsity"].as_f64().unwrap_or(0.0)
    );
    if let Some(p) = r["perplexity"].as_object() {
        println!(
            "  perplexity on {}: {:.4} -> {:.4} ({:+.2}%)",
            p["split"].as_str().unwrap_or("?"),
            p["source"].as_f64().unwrap_or(f64::NAN),
            p["compressed"].as_f64().unwrap_or(f64::NAN),
            p["delta_pct"].as_f64().unwrap_or(f64::NAN)
        );
    }
    println!("  report: {REPORT} in the output directory");
}
