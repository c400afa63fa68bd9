//! `quern-torch`: quern with libtorch linked. It runs every command; `quern` hands it the
//! ones that need libtorch (`Command::needs_torch`), whose code lives here rather than in
//! the `quern` library, so that `quern` itself never loads libtorch.
use std::process::ExitCode;
use std::sync::Mutex;

use clap::Parser;
use quern::cli::{Cli, Command};

mod compress;
mod demo;
mod doctor;
mod eval;
mod export;
mod generate;
mod import;
mod merge;
mod rl;
mod sweep;
mod train;

/// The message and place of the last panic, kept by the panic hook.
static LAST_PANIC: Mutex<Option<String>> = Mutex::new(None);

fn main() -> ExitCode {
    let cli = Cli::parse();
    // tch turns a libtorch failure (a C++ exception: out of memory, a shape mismatch) into a
    // Rust panic. Catch it and report it as an error, with the fix for running out of memory,
    // instead of a panic message and a backtrace hint.
    std::panic::set_hook(Box::new(|info| {
        let msg = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("(no message)");
        let place = info
            .location()
            .map(|l| format!(" (at {}:{})", l.file(), l.line()))
            .unwrap_or_default();
        if let Ok(mut last) = LAST_PANIC.lock() {
            *last = Some(format!("{msg}{place}"));
        }
    }));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(cli)))
        .unwrap_or_else(|_| {
            let msg = LAST_PANIC
                .lock()
                .ok()
                .and_then(|mut l| l.take())
                .unwrap_or_else(|| "(no message)".into());
            Err(panic_error(&msg))
        });
    quern::finish(result)
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    #[cfg(debug_assertions)]
    test_fault();
    match cli.command {
        Command::Doctor(a) => doctor::run(a),
        Command::Demo(a) => demo::run(a),
        Command::Train(a) => train::run(a),
        Command::Rl(a) => rl::run(a),
        Command::Sweep(a) => sweep::run(a),
        Command::Import(a) => import::run(a),
        Command::Export(a) => export::run(a),
        Command::Compress(a) => compress::run(a),
        Command::Merge(a) => merge::run(a),
        Command::Generate(a) => generate::run(a),
        Command::Eval(a) => eval::run(a),
        _ => quern::cmd::dispatch_data(cli),
    }
}

/// The error for a panic's message: libtorch's own first lines (not its C++ backtrace), and
/// for an allocation failure, what to lower.
fn panic_error(msg: &str) -> anyhow::Error {
    // tch's panic is `called Result::unwrap() on an Err value: Torch("...")` with libtorch's
    // exception text Debug-escaped, its C++ trace after "Exception raised from" or "frame #".
    let inner = msg
        .split_once("Torch(\"")
        .map_or(msg, |(_, rest)| rest)
        .replace("\\n", "\n");
    let text: Vec<&str> = inner
        .lines()
        .map(str::trim)
        .take_while(|l| !l.starts_with("Exception raised from") && !l.starts_with("frame #"))
        .filter(|l| !l.is_empty())
        .take(4)
        .collect();
    let text = text.join(" ");
    // The end of tch's `Torch("...")` when libtorch's text had no trace after it.
    let text = text.strip_suffix("\")").unwrap_or(&text).trim_end();
    let lower = msg.to_ascii_lowercase();
    if lower.contains("out of memory") || lower.contains("can't allocate memory") {
        anyhow::anyhow!(
            "libtorch ran out of memory: {text}\n  fix: lower train.micro_batch (raise \
             train.grad_accum to keep the batch), or --batch-size for quern eval and quern \
             generate; a smaller model or a shorter sequence also helps"
        )
    } else {
        anyhow::anyhow!(
            "libtorch failed: {text}\n  this is a bug in quern when the inputs were valid: \
             please report it with the command that ran"
        )
    }
}

/// Test builds only: `QUERN_TEST_TORCH_FAULT=shape|oom` makes libtorch fail for real
/// before the command runs (a matmul of mismatched shapes, an allocation of 2^50 floats),
/// so tests can see what a user gets.
#[cfg(debug_assertions)]
fn test_fault() {
    match std::env::var("QUERN_TEST_TORCH_FAULT").as_deref() {
        Ok("shape") => {
            let a = tch::Tensor::zeros([2, 3], (tch::Kind::Float, tch::Device::Cpu));
            let _ = a.matmul(&a);
        }
        Ok("oom") => {
            let _ = tch::Tensor::empty([1i64 << 50], (tch::Kind::Float, tch::Device::Cpu));
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panic_messages_become_errors_without_the_cpp_trace() {
        // As tch's panic shows it: the exception text Debug-escaped.
        let oom = r#"called `Result::unwrap()` on an `Err` value: Torch("CUDA out of memory. Tried to allocate 20.00 GiB\nException raised from malloc at c10/cuda/CUDACachingAllocator.cpp:1234 (most recent call first):\nframe #0: ...")"#;
        let e = panic_error(oom).to_string();
        assert!(
            e.starts_with("libtorch ran out of memory: CUDA out of memory."),
            "{e}"
        );
        assert!(e.contains("Tried to allocate 20.00 GiB"), "{e}");
        assert!(
            e.contains("train.micro_batch") && !e.contains("frame #0"),
            "{e}"
        );
        let other =
            panic_error(r#"Torch("mat1 and mat2 shapes cannot be multiplied (2x3 and 2x3)\n")"#);
        assert!(
            other.to_string().starts_with(
                "libtorch failed: mat1 and mat2 shapes cannot be multiplied (2x3 and 2x3)\n"
            ),
            "{other}"
        );
    }
}
