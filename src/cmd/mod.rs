//! One module per subcommand.

pub mod build;
pub mod demo;
pub mod doctor;
pub mod eval;
pub mod generate;
pub mod import;
pub mod ingest;
pub mod label;
pub mod merge;
pub mod sql;
pub mod stages;
pub mod tokenize;
pub mod tokenizer;
pub mod train;

use std::process::ExitCode;

use crate::cli::{Cli, Command};

pub fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Doctor(a) => doctor::run(a),
        Command::Ingest(a) => ingest::run(a),
        Command::Build(a) => build::run(a),
        Command::Sql(a) => sql::run(a),
        Command::Label(a) => label::run(a),
        Command::Tokenize(a) => tokenize::run(a),
        Command::Tokenizer(a) => tokenizer::run(a),
        Command::Demo(a) => demo::run(a),
        Command::Stages(a) => stages::run(a),
        Command::Train(a) => train::run(a),
        Command::Import(a) => import::run(a),
        Command::Merge(a) => merge::run(a),
        Command::Generate(a) => generate::run(a),
        Command::Eval(a) => eval::run(a),
    }
}
