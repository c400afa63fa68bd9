//! One module per subcommand.

pub mod doctor;

use std::process::ExitCode;

use crate::cli::{Cli, Command};

pub fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Doctor(a) => doctor::run(a),
    }
}
