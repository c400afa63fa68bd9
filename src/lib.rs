//! The `quern` package: the command line, the pipeline runner and the SQL session.
//!
//! `main` only parses arguments and calls [`run`]; each subcommand lives in [`cmd`].

pub mod cli;
pub mod cmd;
pub mod pipeline;
pub mod sql;
pub mod stages;

use std::process::ExitCode;

/// Runs a parsed command line.
pub fn run(cli: cli::Cli) -> anyhow::Result<ExitCode> {
    cmd::dispatch(cli)
}
