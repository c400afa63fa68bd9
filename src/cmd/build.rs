//! `quern build pipeline.toml`: the batch dataset build.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use crate::pipeline::{funnel_table, run_build, BuildOptions, Pipeline};

/// Arguments of `quern build`.
#[derive(Debug, clap::Args)]
#[command(after_help = "One-off builds without a pipeline file: \
    quern build --stage exact_dedup --stage minhash_dedup --set minhash_dedup.ngram=3 \
    INPUT... --out DIR")]
pub struct Args {
    /// The pipeline file (TOML: [input], [output], [[stages]]); with --stage, the input
    /// files, folders or globs instead.
    #[arg(required = true, value_name = "PIPELINE | INPUT...")]
    pub paths: Vec<PathBuf>,
    /// Run these stage types, in order, over the INPUT paths (a one-off build without a
    /// pipeline file; `quern stages` lists the types). Needs --out.
    #[arg(long = "stage", value_name = "TYPE")]
    pub stages: Vec<String>,
    /// With --stage: a stage parameter, `TYPE.KEY=VALUE`; VALUE is read as TOML (a number,
    /// true/false, [a, list]) and otherwise as a string. Repeatable.
    #[arg(long = "set", value_name = "TYPE.KEY=VALUE", requires = "stages")]
    pub set: Vec<String>,
    /// With --stage: the output directory.
    #[arg(long, requires = "stages")]
    pub out: Option<PathBuf>,
    /// Replace an output directory that holds a different build.
    #[arg(long)]
    pub force: bool,
    /// Validate the pipeline (keys, stage types, stage parameters, columns) and stop.
    #[arg(long)]
    pub check: bool,
    /// Never draw progress bars.
    #[arg(long)]
    pub quiet: bool,
    /// Run the build on the Ballista cluster whose scheduler is at HOST:PORT (`quern
    /// cluster`): inputs, pipeline files and the output directory must be at the same path
    /// on every node. Map stages only so far (docs/cluster.md).
    #[arg(long, value_name = "HOST:PORT", conflicts_with = "check")]
    pub cluster: Option<String>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let (pipeline, name) = if args.stages.is_empty() {
        let [file] = args.paths.as_slice() else {
            anyhow::bail!(
                "give one pipeline file, or the inputs of a one-off build with --stage TYPE ... --out DIR"
            );
        };
        (Pipeline::load(file)?, file.display().to_string())
    } else {
        (one_off(&args)?, "the command line".to_string())
    };
    let reg = crate::stages::registry();
    if args.check {
        crate::pipeline::runner::build_stages(&pipeline, &reg)?;
        println!("{name}: ok ({} stages)", pipeline.specs.len());
        return Ok(ExitCode::SUCCESS);
    }
    let opts = BuildOptions {
        force: args.force,
        progress: !args.quiet && std::io::stderr().is_terminal(),
    };
    let report = match &args.cluster {
        Some(scheduler) => crate::cluster::build::run(&pipeline, scheduler, &opts)?,
        None => run_build(&pipeline, &reg, &opts)?,
    };
    if report.ran {
        eprintln!("built {} in {:.1}s", report.out.display(), report.seconds);
    } else {
        eprintln!(
            "{} already holds this complete build; nothing to do",
            report.out.display()
        );
    }
    print!("{}", funnel_table(&report.accounting));
    Ok(ExitCode::SUCCESS)
}

/// The pipeline of a one-off build: `--stage` types in order, `--set` parameters, the
/// positional inputs and `--out`. Relative paths resolve against the working directory.
fn one_off(args: &Args) -> anyhow::Result<Pipeline> {
    let out = args
        .out
        .as_ref()
        .ok_or_else(|| anyhow::anyhow!("a build with --stage needs --out DIR"))?;
    let mut stages: Vec<toml::Table> = args
        .stages
        .iter()
        .map(|t| {
            let mut table = toml::Table::new();
            table.insert("type".into(), toml::Value::String(t.clone()));
            table
        })
        .collect();
    for set in &args.set {
        let (key, value) = set
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("--set {set}: expected TYPE.KEY=VALUE"))?;
        let (stage, key) = key
            .split_once('.')
            .filter(|(s, k)| !s.is_empty() && !k.is_empty())
            .ok_or_else(|| anyhow::anyhow!("--set {set}: expected TYPE.KEY=VALUE"))?;
        let at: Vec<usize> = (0..args.stages.len())
            .filter(|&i| args.stages[i] == stage)
            .collect();
        let i = match at.as_slice() {
            [i] => *i,
            [] => anyhow::bail!(
                "--set {set}: no --stage {stage} (the stages are {})",
                args.stages.join(", ")
            ),
            _ => anyhow::bail!(
                "--set {set}: --stage {stage} is given more than once; write a pipeline file to \
                 set parameters of one of them"
            ),
        };
        if key == "type" {
            anyhow::bail!("--set {set}: a stage's type is set by --stage");
        }
        // `v = VALUE` as TOML: numbers, booleans, lists and quoted strings keep their type;
        // anything else is the string as written.
        let value = toml::from_str::<toml::Table>(&format!("v = {value}"))
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or_else(|| toml::Value::String(value.to_string()));
        stages[i].insert(key.to_string(), value);
    }
    let cwd = std::env::current_dir()?;
    let abs = |p: &PathBuf| {
        if p.is_absolute() {
            p.clone()
        } else {
            cwd.join(p)
        }
    };
    let mut input = toml::Table::new();
    input.insert(
        "paths".into(),
        toml::Value::Array(
            args.paths
                .iter()
                .map(|p| toml::Value::String(abs(p).display().to_string()))
                .collect(),
        ),
    );
    let mut output = toml::Table::new();
    output.insert(
        "dir".into(),
        toml::Value::String(abs(out).display().to_string()),
    );
    let mut doc = toml::Table::new();
    doc.insert("input".into(), toml::Value::Table(input));
    doc.insert("output".into(), toml::Value::Table(output));
    doc.insert(
        "stages".into(),
        toml::Value::Array(stages.into_iter().map(toml::Value::Table).collect()),
    );
    let text = toml::to_string(&doc)?;
    Ok(Pipeline::parse(
        &text,
        std::path::Path::new("the command line"),
        &cwd,
    )?)
}
