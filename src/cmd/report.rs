//! `quern report`: regenerates the HTML report of a build output directory or of a
//! training run directory, or writes that of a tokenized output (see [`crate::report`]).

use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `quern report`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// A build output directory (manifest.json, report.json), a training run directory
    /// (metrics.jsonl, report.json) or a tokenized output (split directories with
    /// meta.json).
    pub dir: PathBuf,
    /// Write the page here instead of DIR/report.html.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let path = crate::report::write(&args.dir, args.out.as_deref())?;
    println!("{}", path.display());
    Ok(ExitCode::SUCCESS)
}
