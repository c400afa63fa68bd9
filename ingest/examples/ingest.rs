//! `quern ingest` without the rest of the binary, for the benchmark (`benches/ingest/run.sh`):
//! the same runner ([`quern_ingest::run::ingest_to_dir`]), so a release build needs only
//! arrow and parquet, not DataFusion and libtorch.
//!
//! Usage: `ingest INPUT... --out DIR [--text-field F]` (always `--force`).

use std::process::ExitCode;

use quern_ingest::run::ingest_to_dir;
use quern_ingest::IngestOptions;

fn main() -> ExitCode {
    let mut inputs = Vec::new();
    let mut out = None;
    let mut opts = IngestOptions::default();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--out" => out = args.next(),
            "--text-field" => opts.text_field = args.next().unwrap_or_default(),
            _ => inputs.push(a),
        }
    }
    let Some(out) = out else {
        eprintln!("usage: ingest INPUT... --out DIR [--text-field F]");
        return ExitCode::from(2);
    };
    match ingest_to_dir(&inputs, std::path::Path::new(&out), &opts, true, false) {
        Ok(r) => {
            print!("{}", r.table());
            if r.failures.is_empty() {
                ExitCode::SUCCESS
            } else {
                eprintln!("failures: {:?}", r.failures);
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("error: {e:?}");
            ExitCode::from(2)
        }
    }
}
