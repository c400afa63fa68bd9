//! `quern eval`: the libtorch side (the arguments are `quern::cmd::eval::Args`).

use std::process::ExitCode;

pub use quern::cmd::eval::{Args, ClsArgs, Common, GenArgs, McArgs, PplArgs, What};

mod imp {
    use super::*;
    use anyhow::Context;
    use indicatif::{ProgressBar, ProgressStyle};
    use quern_models::store::{Loaded, SourceKind};

    fn load(c: &Common) -> anyhow::Result<(Loaded, serde_json::Value)> {
        if c.batch_size == 0 {
            anyhow::bail!("--batch-size must be at least 1");
        }
        let loaded = crate::generate::load_model(&c.model, &c.device, &c.dtype, c.threads, false)?;
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

    pub fn cls(a: ClsArgs) -> anyhow::Result<ExitCode> {
        let (loaded, model) = load(&a.common)?;
        let meta = std::fs::read(a.data.join(quern_tokenize::meta::META_JSON)).unwrap_or_default();
        let opts = quern_eval::cls::ClsOptions {
            batch_size: a.common.batch_size,
            max_rows: a.max_rows,
        };
        let pb = bar(0, "cls");
        let r = quern_eval::cls::evaluate(&loaded.model, &a.data, &opts, &mut |done, total| {
            pb.set_length(total);
            pb.set_position(done);
        })?;
        pb.finish_and_clear();
        let table = format!(
            "classification by {} on {}\n{}{:.1} s\n",
            a.common.model.display(),
            a.data.display(),
            quern_eval::cls::table(&r),
            r.seconds
        );
        let result = serde_json::json!({
            "eval": "cls",
            "model": model,
            "data": { "split": a.data.display().to_string(),
                      "meta_xxh3": format!("{:016x}", xxhash_rust::xxh3::xxh3_64(&meta)) },
            "result": r,
        });
        finish(&a.common, result, table)
    }

    pub fn gen(a: GenArgs) -> anyhow::Result<ExitCode> {
        use quern_eval::generation::{GenOptions, GenTask};
        let task = GenTask::load(&a.task)?;
        let shots = a.shots_file.as_deref().map(GenTask::load).transpose()?;
        let (loaded, model) = load(&a.common)?;
        let tok = loaded.tokenizer.as_ref().with_context(|| {
            format!(
                "the model {} has no tokenizer.json, which a text task needs",
                a.common.model.display()
            )
        })?;
        if a.chat && loaded.meta.chat_template.is_none() && !a.common.json {
            eprintln!("note: the model has no chat template; using a plain ChatML layout");
        }
        let opts = GenOptions {
            shots: a.shots,
            chat: a.chat,
            max_new_tokens: a.max_tokens,
            batch_size: a.common.batch_size,
            limit: a.limit,
            stop: a.stop.clone(),
        };
        let pb = bar(0, "gen");
        let r = quern_eval::generation::run(
            &loaded.model,
            tok,
            &loaded.meta.special,
            loaded.meta.chat_template.as_deref(),
            &task,
            shots.as_ref(),
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
            "{} ({}-shot{}, greedy, at most {} tokens) on {}\n{:<18} {:>9} {:>8} {:>12} {:>8}\n",
            a.task.display(),
            r.shots,
            if r.chat { ", chat template" } else { "" },
            r.max_new_tokens,
            a.common.model.display(),
            "filter",
            "questions",
            "correct",
            "exact_match",
            "stderr"
        );
        for (name, m) in [
            ("strict-match", &r.strict_match),
            ("flexible-extract", &r.flexible_extract),
        ] {
            table.push_str(&format!(
                "{name:<18} {:>9} {:>8} {:>12.4} {:>8.4}\n",
                r.questions, m.correct, m.exact_match, m.stderr
            ));
        }
        let ends: Vec<String> = r.finish.iter().map(|(k, v)| format!("{k} {v}")).collect();
        table.push_str(&format!(
            "{} tokens generated in {:.1} s ({:.1} tokens/s); answers ended: {}\n",
            r.generated_tokens,
            r.seconds,
            r.generated_tokens as f64 / r.seconds.max(1e-9),
            ends.join(", ")
        ));
        let result = serde_json::json!({
            "eval": "gen",
            "model": model,
            "data": { "task": a.task.display().to_string(), "task_xxh3": r.task_xxh3,
                      "shots_file": r.shots_from, "shots_xxh3": r.shots_xxh3 },
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

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    match args.what {
        What::Ppl(a) => imp::ppl(a),
        What::Mc(a) => imp::mc(a),
        What::Cls(a) => imp::cls(a),
        What::Gen(a) => imp::gen(a),
    }
}
