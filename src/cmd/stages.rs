//! `quern stages`: the stage types a pipeline can use.

use std::process::ExitCode;

/// Arguments of `quern stages`.
#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(_args: Args) -> anyhow::Result<ExitCode> {
    for (name, doc) in crate::stages::registry().list() {
        println!("{name:<24} {doc}");
    }
    Ok(ExitCode::SUCCESS)
}
