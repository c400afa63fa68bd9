//! The light core every quern crate stands on.
//!
//! It exists so that the data crates (`ingest`, `filters`, `dedup`, `labeling`, `tokenize`)
//! and the trainer agree on one document schema, one error type, one way to write and
//! commit shards, and one stage model, without depending on each other. It depends on
//! little more than arrow, parquet and serde.
//!
//! - [`schema`]: column names and the Arrow schemas of `docs`, `rejected` and `quarantine`.
//! - [`error`]: [`Error`], grouped by who is at fault, and the [`Context`] extension.
//! - [`shard`]: Parquet shard writing with atomic commit, and shard reading.
//! - [`manifest`]: the JSON manifest that records committed shards and the accounting.
//! - [`stage`]: the [`Stage`] trait, its closure adapter, and the registry of stage types.
//! - [`hint`]: cache prefetch hints for hot loops.

pub mod error;
pub mod hint;
pub mod manifest;
pub mod schema;
pub mod shard;
pub mod stage;
pub mod text;

pub use error::{Context, Error, Result};
pub use stage::{BatchCtx, Keeps, Stage, StageKind, StageRegistry, Threshold, Verdict};
