//! `quern-torch`: quern with libtorch linked. It runs every command; `quern` hands it the
//! ones that need libtorch (`Command::needs_torch`), whose code lives here rather than in
//! the `quern` library, so that `quern` itself never loads libtorch.
use std::process::ExitCode;

use clap::Parser;
use quern::cli::{Cli, Command};

mod demo;
mod doctor;
mod eval;
mod generate;
mod import;
mod merge;
mod train;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Doctor(a) => doctor::run(a),
        Command::Demo(a) => demo::run(a),
        Command::Train(a) => train::run(a),
        Command::Import(a) => import::run(a),
        Command::Merge(a) => merge::run(a),
        Command::Generate(a) => generate::run(a),
        Command::Eval(a) => eval::run(a),
        _ => quern::cmd::dispatch_data(cli),
    };
    quern::finish(result)
}
