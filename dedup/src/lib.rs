//! quern-dedup: exact and MinHash-LSH near-duplicate removal, deterministic and within a
//! stated memory budget.
//!
//! Why a crate: dedup is the one data step that must see the whole corpus before it can
//! decide anything about one document, which is where peers run out of memory or give
//! different answers from run to run. This crate keeps per-document state compact (a few
//! fixed-size records and a 24-byte table entry, see [`cluster`]), spills sorted runs past a
//! memory budget ([`spill`]), and orders everything by a document's position in the corpus,
//! never by thread timing.
//!
//! - [`normalize`]: datatrove's `simplify_text`, configurable.
//! - [`shingle`]: word or char n-gram hashing, exact Jaccard.
//! - [`minhash`]: signatures (SoA lanes, rayon), LSH bands, threshold → bands × rows.
//! - [`spill`]: the external sort.
//! - [`cluster`]: union-find clustering, keep rules, per-document memory.
//! - [`stage`]: the `exact_dedup` and `minhash_dedup` pipeline stages.
//! - [`udf`]: `minhash`, `shingles`, `jaccard`, `minhash_jaccard` SQL functions.

pub mod cluster;
pub mod minhash;
pub mod normalize;
pub mod shingle;
pub mod spill;
pub mod stage;
pub mod udf;

pub use cluster::{ClusterStats, KeepRule};
pub use minhash::{MinHashParams, MinHasher};
pub use normalize::NormalizeConfig;
pub use stage::{ExactDedup, ExactDedupConfig, MinhashDedup, MinhashDedupConfig, VerifyMode};

/// Registers `exact_dedup` and `minhash_dedup` (see quern_core::stage).
pub fn register_stages(reg: &mut quern_core::StageRegistry) {
    reg.register(
        "exact_dedup",
        "drops documents whose normalized text repeats an earlier one (128-bit xxh3; reason exact_duplicate)",
        |spec| Ok(Box::new(ExactDedup::from_spec(spec)?)),
    );
    reg.register(
        "minhash_dedup",
        "drops near duplicates found by MinHash-LSH (5-word shingles, 14x8 bands; reason near_duplicate)",
        |spec| Ok(Box::new(MinhashDedup::from_spec(spec)?)),
    );
}

/// Registers this crate's SQL functions on a DataFusion session.
pub fn register_udfs(ctx: &datafusion::prelude::SessionContext) {
    udf::register_udfs(ctx)
}
