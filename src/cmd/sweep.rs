//! `quern sweep sweep.toml`: a grid or seeded random search over `run.toml` keys, one
//! `quern train` run per trial, ranked by each run's best validation loss.
//!
//! The sweep runs in `quern-torch` (`Command::needs_torch`), not in the light `quern`: every
//! trial's configuration is checked, before anything is written or run, by the trainer's own
//! parser (`quern_train::TrainConfig`), which lives in a crate that links libtorch. Each trial
//! then runs as its own `quern-torch train --resume` process, so a trial that fails or runs
//! out of memory is recorded and the sweep goes on, and every trial starts with fresh memory.
//! The code is in `src/bin/quern-torch/sweep.rs`; the file format is in `docs/sweep.md`.

use std::path::PathBuf;

/// Arguments of `quern sweep`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The sweep file (TOML): `base` (a run.toml), `out_dir`, `strategy` (`grid` or
    /// `random` with `trials` and `seed`) and `[params]` (run.toml keys such as "optim.lr",
    /// each a list of values, or for random search a distribution: { log_uniform = [a, b] },
    /// { uniform = [a, b] }, { int = [lo, hi] }, { choice = [...] }).
    pub config: PathBuf,
    /// Check the sweep and every trial's configuration and list the trials; run and write
    /// nothing.
    #[arg(long)]
    pub check: bool,
    /// Delete the trials and results already in out_dir (trial-*/, sweep.json, sweep.csv)
    /// and run every trial again. Without it, finished trials are kept and unfinished ones
    /// resumed.
    #[arg(long)]
    pub force: bool,
    /// Print the results as JSON (sweep.json's content) instead of a table.
    #[arg(long)]
    pub json: bool,
}
