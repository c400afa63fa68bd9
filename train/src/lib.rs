//! quern's trainer, the only crate that links libtorch (through `tch`).
//!
//! It exists as its own crate so that the data side (ingest, filters, dedup, labeling,
//! tokenize) builds and tests without libtorch.

pub mod runtime;
