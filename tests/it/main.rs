//! quern's integration tests: one binary (it links once), one module per area.

mod common;

mod build;
#[cfg(feature = "torch")]
mod cls;
mod cluster;
#[cfg(feature = "torch")]
mod compress;
mod dedup;
#[cfg(feature = "torch")]
mod dist;
#[cfg(feature = "torch")]
mod docs;
#[cfg(feature = "torch")]
mod eval;
#[cfg(feature = "torch")]
mod eval_gen;
#[cfg(feature = "torch")]
mod export;
mod filters;
mod ingest;
mod labeling;
#[cfg(feature = "torch")]
mod light;
#[cfg(feature = "torch")]
mod lora;
#[cfg(feature = "torch")]
mod mix;
#[cfg(feature = "torch")]
mod models;
#[cfg(feature = "torch")]
mod nsp;
#[cfg(feature = "torch")]
mod pref;
mod report;
#[cfg(feature = "torch")]
mod rl;
#[cfg(feature = "torch")]
mod sft;
#[cfg(feature = "torch")]
mod sft_pack;
mod snapshots;
mod sql;
#[cfg(feature = "torch")]
mod sweep;
mod tokenize;
#[cfg(feature = "torch")]
mod train;
mod web;
