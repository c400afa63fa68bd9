//! The `quern` binary: parse arguments, run, print the whole cause chain on error.
//!
//! It links the data side only, so `quern build`, `sql`, `stages`... start without loading
//! libtorch. The commands that run libtorch (train, sweep, generate, eval, import, merge, demo,
//! doctor) are handed, arguments unchanged, to the `quern-torch` binary installed next to
//! it: on Unix the process is replaced, so its exit code, output and signals are the
//! command's own.
use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = quern::cli::Cli::parse();
    if cli.command.needs_torch() {
        return quern::finish(run_torch());
    }
    quern::finish(quern::cmd::dispatch_data(cli))
}

/// Runs `quern-torch` with this process's arguments.
fn run_torch() -> anyhow::Result<ExitCode> {
    let exe = std::env::current_exe()?;
    let torch = exe.with_file_name(format!("quern-torch{}", std::env::consts::EXE_SUFFIX));
    if !torch.is_file() {
        anyhow::bail!(
            "this command runs libtorch, which quern loads through {}, and that file is \
             missing: build quern with its default `torch` feature (`cargo build --release`) \
             and keep quern-torch next to {}",
            torch.display(),
            exe.display()
        );
    }
    let mut cmd = std::process::Command::new(&torch);
    cmd.args(std::env::args_os().skip(1));
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        let err = cmd.exec();
        Err(anyhow::Error::new(err).context(format!("running {}", torch.display())))
    }
    #[cfg(not(unix))]
    {
        let status = cmd
            .status()
            .map_err(|e| anyhow::Error::new(e).context(format!("running {}", torch.display())))?;
        Ok(ExitCode::from(
            status.code().unwrap_or(2).clamp(0, 255) as u8
        ))
    }
}
