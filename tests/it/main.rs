//! quern's integration tests: one binary (it links once), one module per area.

mod common;

mod build;
mod dedup;
mod filters;
mod ingest;
mod labeling;
mod sql;
mod tokenize;
#[cfg(feature = "torch")]
mod train;
