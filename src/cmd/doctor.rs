//! `quern doctor`: the first thing to run when something is off.

/// Arguments of `quern doctor`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}
