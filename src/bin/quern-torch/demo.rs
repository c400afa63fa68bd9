//! `quern demo`: the whole journey on a real corpus embedded in the binary.
//!
//! It writes the corpus and a pipeline into a directory (a new temporary one unless `--dir`
//! is given, kept afterwards so you can look at it), runs the build (exact and near dedup,
//! rule labels, decontamination against a small held-out passage set, a stratified split),
//! shows the funnel, trains a small BPE tokenizer and packs token shards per split, runs a
//! few `quern sql` queries, prints where everything is, generates a few lines from the model
//! it trained and evaluates it, then fine-tunes it into a classifier of the `topic` label the
//! build's rules gave (`train.objective = "cls"`, `[init] from` the run) and prints its
//! figures on the test split (`quern eval cls`).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;

pub use quern::cmd::demo::Args;

use quern::pipeline::{funnel_table, run_build, BuildOptions, Pipeline};

/// The demo corpus: real, redistributable text (see data/demo/README.md), zstd-compressed JSONL.
static CORPUS: &[u8] = include_bytes!("../../../data/demo/corpus.jsonl.zst");
/// The demo pipeline.
static PIPELINE: &str = include_str!("../../../data/demo/pipeline.toml");
/// The evaluation set the pipeline's `decontaminate` stage checks against (see
/// data/demo/README.md): written to `evals/` next to the pipeline.
static EVAL_SET: &str = include_str!("../../../data/demo/evals/heldout_passages.jsonl");

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let dir = match args.dir {
        Some(d) => {
            std::fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
            d
        }
        None => tempfile::Builder::new()
            .prefix("quern-demo-")
            .tempdir()?
            .keep(),
    };
    // The demo works inside its directory, as a user running `quern build pipeline.toml`
    // there would (the pipeline's paths are relative to the file, so either way works).
    let dir = dir
        .canonicalize()
        .with_context(|| format!("resolving {}", dir.display()))?;
    std::env::set_current_dir(&dir).with_context(|| format!("entering {}", dir.display()))?;
    let corpus_dir = dir.join("corpus");
    std::fs::create_dir_all(&corpus_dir)?;
    std::fs::write(corpus_dir.join("demo.jsonl.zst"), CORPUS)?;
    let pipeline_path = dir.join("pipeline.toml");
    std::fs::write(&pipeline_path, PIPELINE)?;
    std::fs::create_dir_all(dir.join("evals"))?;
    std::fs::write(dir.join("evals/heldout_passages.jsonl"), EVAL_SET)?;
    println!("quern demo in {}", dir.display());
    println!(
        "  corpus: {} ({} KB compressed)",
        corpus_dir.display(),
        CORPUS.len() / 1024
    );

    let pipeline = Pipeline::load(&pipeline_path)?;
    let reg = quern::stages::registry();
    let progress = std::io::IsTerminal::is_terminal(&std::io::stderr());
    println!("\n== build ({} stages)", pipeline.specs.len());
    let report = run_build(
        &pipeline,
        &reg,
        &BuildOptions {
            force: false,
            progress,
        },
    )?;
    print!("{}", funnel_table(&report.accounting));

    // Tokenize: train a small byte-level BPE on the train split, pack into 256-token rows.
    println!("\n== tokenize (byte-level BPE trained on the train split, packed rows of 256 + 1)");
    let manifest = quern_core::manifest::Manifest::load(&report.out)?
        .context("the build wrote no manifest")?;
    let docs: Vec<PathBuf> = manifest
        .tables()
        .get(quern_core::schema::DOCS_TABLE)
        .map(|v| v.iter().map(|s| report.out.join(&s.file)).collect())
        .unwrap_or_default();
    let tcfg: quern_tokenize::TokenizeConfig = serde_json::from_value(serde_json::json!({
        "train_tokenizer": { "vocab_size": 4096 },
        "objective": "clm",
        "seq_len": 256,
    }))?;
    let tokens_dir = dir.join("tokens");
    let t = quern_tokenize::tokenize_corpus(&docs, &tokens_dir, &tcfg)?;
    println!(
        "{:<8} {:>8} {:>10} {:>10}",
        "split", "rows", "tokens", "documents"
    );
    for (split, st) in &t.splits {
        println!(
            "{split:<8} {:>8} {:>10} {:>10}",
            st.rows, st.tokens, st.documents
        );
    }
    println!(
        "vocab {} · tokenizer {} · {}",
        t.vocab_size,
        t.tokenizer_hash,
        tokens_dir.display()
    );

    train_step(&dir, &tokens_dir, args.train_steps)?;

    let out = report.out.display().to_string();
    let queries = [
        "SELECT source, count(*) AS docs, sum(word_count(text)) AS words FROM docs GROUP BY source ORDER BY docs DESC LIMIT 8",
        "SELECT split, topic, count(*) AS docs FROM docs GROUP BY 1, 2 ORDER BY 1, docs DESC",
        "SELECT lang, count(*) AS docs, round(avg(lang_score), 2) AS score FROM docs GROUP BY 1 ORDER BY 2 DESC LIMIT 8",
        "SELECT rejected_by, reason, count(*) AS n FROM rejected GROUP BY 1, 2 ORDER BY n DESC LIMIT 8",
        "SELECT source, count(*) AS contaminated FROM rejected WHERE reason = 'contaminated' GROUP BY 1 ORDER BY 2 DESC, 1",
        "SELECT file, line, error FROM quarantine LIMIT 5",
    ];
    println!("\n== sql");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let ctx = quern::sql::session(&report.out, &quern::sql::SessionOptions::default()).await?;
        for q in queries {
            println!("\nquern sql \"{q}\"");
            let batches = quern::sql::query(&ctx, q, false).await?;
            if batches.iter().all(|b| b.num_rows() == 0) {
                println!("(no rows)");
            } else {
                println!("{}", arrow::util::pretty::pretty_format_batches(&batches)?);
            }
        }
        anyhow::Ok(())
    })?;

    println!("\nOutput: {out}");
    println!("Try:");
    for q in queries {
        println!("  quern sql \"{q}\" --corpus {out}");
    }
    println!("  quern sql --corpus {out}        # a SQL shell over docs, rejected, quarantine");
    if args.train_steps > 0 {
        generate_step(&dir.join("run"))?;
        eval_step(&dir.join("run"), &tokens_dir.join("val"))?;
        finetune_step(&dir, &docs, &tokens_dir, args.finetune_steps)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Trains a small GPT (2 layers, width 128, 128-token windows) on the demo's train split and
/// evaluates it on the val split: the last step of the journey, on CPU in about a minute.
fn train_step(
    dir: &std::path::Path,
    tokens_dir: &std::path::Path,
    steps: u64,
) -> anyhow::Result<()> {
    if steps == 0 {
        return Ok(());
    }
    println!("\n== train (a 2-layer GPT, width 128, on the train split; val split for evaluation)");
    let mut cfg = quern_train::TrainConfig::demo(
        tokens_dir.join("train"),
        Some(tokens_dir.join("val")),
        dir.join("run"),
    )?;
    cfg.train.max_steps = steps;
    cfg.train.eval_every = steps.div_ceil(2).max(1);
    cfg.validate()?;
    // The run directory is the demo's own: a demo run again in the same --dir replaces it.
    let report = quern_train::train_with(
        &cfg,
        &quern_train::TrainOptions {
            force: true,
            ..quern_train::TrainOptions::default()
        },
    )?;
    if let (Some(first), Some(last)) = (report.losses.first(), report.losses.last()) {
        println!(
            "{} parameters on {}: loss {:.3} (step {}) -> {:.3} (step {}), {:.0} tokens/s",
            report.parameters,
            report.device,
            first.loss,
            first.step,
            last.loss,
            last.step,
            report.tokens_per_s
        );
    }
    for e in &report.evals {
        println!(
            "val loss {:.3} at step {} (perplexity {:.1})",
            e.val_loss, e.step, e.val_ppl
        );
    }
    println!("metrics {}", cfg.out_dir.join("metrics.jsonl").display());
    Ok(())
}

/// Generates a few lines from the model just trained: the run's newest checkpoint, through
/// the same loader and generator as `quern generate`.
fn generate_step(run_dir: &std::path::Path) -> anyhow::Result<()> {
    use quern_models::generate::{GenerateConfig, Generator, Sampling};
    println!("\n== generate (KV-cache decoding from the model just trained)");
    let loaded = quern_models::store::load(run_dir, tch::Device::Cpu)?;
    let gen = Generator::new(
        &loaded.model,
        loaded.tokenizer.as_ref(),
        &loaded.meta.special,
    );
    let prompts = ["The history of", "In the city", "A new study"];
    let ids = prompts
        .iter()
        .map(|p| gen.encode(p, false))
        .collect::<quern_core::Result<Vec<_>>>()?;
    let cfg = GenerateConfig {
        max_new_tokens: 24,
        sampling: Sampling {
            temperature: 0.8,
            top_k: 40,
            top_p: 0.95,
            repetition_penalty: 1.2,
        },
        seed: 7,
        ..GenerateConfig::default()
    };
    let (outs, timing) = gen.generate(&ids, &cfg)?;
    for (p, o) in prompts.iter().zip(&outs) {
        println!("  {p}{}", o.text.replace('\n', " "));
    }
    println!(
        "  ({} prompts in one batch, {:.0} tokens/s decoding; try `quern generate --model {} \"Your prompt\"`)",
        prompts.len(),
        timing.decode_tokens_per_s(),
        run_dir.display()
    );
    Ok(())
}

/// Evaluates the model just trained on the val split: perplexity per source, through the
/// same code as `quern eval ppl`.
fn eval_step(run_dir: &std::path::Path, val: &std::path::Path) -> anyhow::Result<()> {
    println!("\n== eval (perplexity on the val split, per source: quern eval ppl)");
    let loaded = quern_models::store::load(run_dir, tch::Device::Cpu)?;
    let r = quern_eval::ppl::perplexity(
        &loaded.model,
        val,
        &quern_eval::ppl::PplOptions::default(),
        &mut |_, _| {},
    )?;
    println!("{:<24} {:>9} {:>9}", "source", "targets", "ppl");
    println!(
        "{:<24} {:>9} {:>9.1}",
        "(all)", r.overall.tokens, r.overall.ppl
    );
    for (s, p) in &r.sources {
        println!("{s:<24} {:>9} {:>9.1}", p.tokens, p.ppl);
    }
    println!(
        "  (try `quern eval ppl --model {} --data {}`; `quern eval mc` runs MMLU-style tasks)",
        run_dir.display(),
        val.display()
    );
    Ok(())
}

/// Fine-tunes the model just trained into a classifier of the `topic` label that the build's
/// `rules` stage gave every kept document: the documents are tokenized as `cls` rows with the
/// run's tokenizer, a head is put on the model (`[init] from` the run), trained on the train
/// split with the val split for evaluation, and scored on the test split by the same code as
/// `quern eval cls`.
fn finetune_step(
    dir: &std::path::Path,
    docs: &[PathBuf],
    tokens_dir: &std::path::Path,
    steps: u64,
) -> anyhow::Result<()> {
    if steps == 0 {
        return Ok(());
    }
    println!(
        "\n== fine-tune (the model just trained, with a classification head, on the build's `topic` labels)"
    );
    let tcfg: quern_tokenize::TokenizeConfig = serde_json::from_value(serde_json::json!({
        "tokenizer": tokens_dir.join("train").join("tokenizer.json"),
        "objective": "cls",
        "label_column": "topic",
        "seq_len": 128,
    }))?;
    let cls_dir = dir.join("tokens-topic");
    let t = quern_tokenize::tokenize_corpus(docs, &cls_dir, &tcfg)?;
    for (split, st) in &t.splits {
        println!("{split:<8} {:>8} rows", st.rows);
    }
    let run = dir.join("run-topic");
    let mut cfg = quern_train::TrainConfig::new(cls_dir.join("train"), &run);
    cfg.data.val = Some(cls_dir.join("val"));
    cfg.init.from = Some(dir.join("run"));
    cfg.optim.lr = 1e-3;
    cfg.optim.warmup_steps = 5;
    cfg.train.objective = "cls".into();
    cfg.train.micro_batch = 16;
    cfg.train.max_steps = steps;
    cfg.train.eval_every = steps.div_ceil(2).max(1);
    cfg.train.eval_batches = 8;
    cfg.checkpoint.every = 0;
    cfg.checkpoint.keep = 1;
    cfg.checkpoint.keep_best = false;
    cfg.validate()?;
    let report = quern_train::train_with(
        &cfg,
        &quern_train::TrainOptions {
            force: true,
            ..quern_train::TrainOptions::default()
        },
    )?;
    if let (Some(first), Some(last)) = (report.losses.first(), report.losses.last()) {
        println!(
            "loss {:.3} (step {}) -> {:.3} (step {})",
            first.loss, first.step, last.loss, last.step
        );
    }
    for e in &report.evals {
        if let (Some(acc), Some(f1)) = (e.accuracy, e.macro_f1) {
            println!(
                "val at step {}: loss {:.3}, accuracy {:.3}, macro-F1 {:.3}",
                e.step, e.val_loss, acc, f1
            );
        }
    }
    let loaded = quern_models::store::load(&run, tch::Device::Cpu)?;
    let test = cls_dir.join("test");
    let r = quern_eval::cls::evaluate(
        &loaded.model,
        &test,
        &quern_eval::cls::ClsOptions {
            batch_size: 32,
            max_rows: None,
        },
        &mut |_, _| {},
    )?;
    println!("\n== eval (the classifier on the test split: quern eval cls)");
    print!("{}", quern_eval::cls::table(&r));
    println!(
        "  (try `quern eval cls --model {} --data {}`)",
        run.display(),
        test.display()
    );
    Ok(())
}
