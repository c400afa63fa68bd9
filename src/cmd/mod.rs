//! One module per subcommand.

pub mod doctor;
pub mod ingest;

use std::process::ExitCode;

use crate::cli::{Cli, Command};

pub fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Doctor(a) => doctor::run(a),
        Command::Ingest(a) => ingest::run(a),
    }
}
