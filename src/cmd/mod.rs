//! One module per subcommand. The commands that need libtorch keep only their arguments
//! here; their code is in the `quern-torch` binary (`src/bin/quern-torch/`).

pub mod build;
pub mod cluster;
pub mod compress;
pub mod demo;
pub mod doctor;
pub mod eval;
pub mod export;
pub mod generate;
pub mod import;
pub mod ingest;
pub mod label;
pub mod merge;
pub mod report;
pub mod rl;
pub mod sql;
pub mod stages;
pub mod sweep;
pub mod tokenize;
pub mod tokenizer;
pub mod train;

use std::process::ExitCode;

use crate::cli::{Cli, Command};

impl Command {
    /// Whether the command runs libtorch. The `quern` binary does not link libtorch (loading
    /// it costs ~0.4 s and links the CUDA libraries); it hands these commands to
    /// `quern-torch`, installed next to it, which runs every command.
    pub fn needs_torch(&self) -> bool {
        matches!(
            self,
            Command::Doctor(_)
                | Command::Demo(_)
                | Command::Train(_)
                | Command::Rl(_)
                | Command::Sweep(_)
                | Command::Import(_)
                | Command::Export(_)
                | Command::Compress(_)
                | Command::Merge(_)
                | Command::Generate(_)
                | Command::Eval(_)
        )
    }
}

/// Runs a command that does not need libtorch; the others (see [`Command::needs_torch`])
/// are `quern-torch`'s, and an error here.
pub fn dispatch_data(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Ingest(a) => ingest::run(a),
        Command::Build(a) => build::run(a),
        Command::Cluster(a) => cluster::run(a),
        Command::Sql(a) => sql::run(a),
        Command::Label(a) => label::run(a),
        Command::Tokenize(a) => tokenize::run(a),
        Command::Tokenizer(a) => tokenizer::run(a),
        Command::Stages(a) => stages::run(a),
        Command::Report(a) => report::run(a),
        c => Err(anyhow::anyhow!(
            "internal error: `{c:?}` needs libtorch and runs in quern-torch"
        )),
    }
}
