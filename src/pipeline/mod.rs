//! The batch build: `quern build pipeline.toml`.
//!
//! [`config`] parses and validates the pipeline file before any data is read; [`runner`]
//! streams the inputs through the stages, commits shards atomically unit by unit, resumes
//! from committed work and checks the accounting (`input = kept + rejected + quarantined`).

pub mod config;
pub mod runner;

pub use config::Pipeline;
pub use runner::{funnel_table, run_build, BuildOptions, BuildReport};
