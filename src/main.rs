//! The `quern` binary: parse arguments, run, print the whole cause chain on error.
use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = quern::cli::Cli::parse();
    match quern::run(cli) {
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
            for cause in err.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            ExitCode::from(2)
        }
    }
}
