//! `quern build pipeline.toml`: the batch dataset build.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use crate::pipeline::{funnel_table, run_build, BuildOptions, Pipeline};

/// Arguments of `quern build`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The pipeline file (TOML): [input], [output], [[stages]].
    pub pipeline: PathBuf,
    /// Replace an output directory that holds a different build.
    #[arg(long)]
    pub force: bool,
    /// Validate the pipeline (keys, stage types, stage parameters, columns) and stop.
    #[arg(long)]
    pub check: bool,
    /// Never draw progress bars.
    #[arg(long)]
    pub quiet: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let pipeline = Pipeline::load(&args.pipeline)?;
    let reg = crate::stages::registry();
    if args.check {
        crate::pipeline::runner::build_stages(&pipeline, &reg)?;
        println!(
            "{}: ok ({} stages)",
            args.pipeline.display(),
            pipeline.specs.len()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let opts = BuildOptions {
        force: args.force,
        progress: !args.quiet && std::io::stderr().is_terminal(),
    };
    let report = run_build(&pipeline, &reg, &opts)?;
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
