//! The `quern` package: the command line, the pipeline runner and the SQL session.
//!
//! This library holds no libtorch code: the `quern` binary runs the data commands
//! ([`cmd::dispatch_data`]) and hands the model commands to the `quern-torch` binary
//! (`src/bin/quern-torch/`), which links libtorch. Each subcommand's arguments live in [`cmd`].

pub mod cli;
pub mod cluster;
pub mod cmd;
pub mod pipeline;
pub mod report;
pub mod sql;
pub mod stages;

use std::process::ExitCode;

/// The exit code for a command's result; an error is printed with its whole cause chain.
pub fn finish(result: anyhow::Result<ExitCode>) -> ExitCode {
    match result {
        Ok(code) => code,
        Err(err) => {
            // A closed pipe (`quern sql ... | head`) is not a failure.
            if err.chain().any(|c| {
                c.downcast_ref::<std::io::Error>()
                    .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
            }) {
                return ExitCode::SUCCESS;
            }
            eprintln!("error: {err}");
            // A cause its parent's message already spells out (an I/O error after its
            // path) is not printed twice.
            let mut shown = err.to_string();
            for cause in err.chain().skip(1) {
                let c = cause.to_string();
                if !shown.contains(&c) {
                    eprintln!("  caused by: {c}");
                }
                shown = c;
            }
            ExitCode::from(2)
        }
    }
}
