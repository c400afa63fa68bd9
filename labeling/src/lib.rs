//! Labels, splits and decontamination: what makes a cleaned corpus usable for supervised
//! learning, for choosing what to train on, and for evaluation that can be trusted.
//!
//! This crate exists apart from `filters` because its stages need side inputs (models,
//! word lists, evaluation sets) and whole-corpus passes (stratified splits), and because it
//! owns a model format and a trainer.
//!
//! | stage `type` | module | adds |
//! |---|---|---|
//! | `rules` | [`rules`] | `<name>` (label), `<name>_<label>` (scores) |
//! | `lexicon` | [`lexicon`] | `<name>_score` |
//! | `classifier` | [`classifier`] | `<name>_label`, `<name>_prob` |
//! | `split` | [`split`] | `split` |
//! | `decontaminate` | [`decontam`] | `contaminated_set`, `contaminated_ngram`, `contaminated_matches` |
//!
//! Every stage is also a SQL function ([`udf`]). The classifier is trained by
//! [`classifier::train()`] (the `quern label train` command).

pub mod classifier;
pub mod data;
pub mod decontam;
pub mod lexicon;
pub mod rules;
pub mod split;
pub mod text;
#[cfg(feature = "sql")]
pub mod udf;

#[cfg(feature = "sql")]
pub use udf::register_udfs;

use quern_core::StageRegistry;

/// Registers this crate's stage types (see `quern_core::stage`).
pub fn register_stages(reg: &mut StageRegistry) {
    reg.register(
        "rules",
        "labels documents from weighted keyword and regex rules",
        |spec| Ok(Box::new(rules::RulesStage::from_spec(spec)?)),
    );
    reg.register(
        "lexicon",
        "scores documents by the words of a word-list file (e.g. profanity)",
        |spec| Ok(Box::new(lexicon::LexiconStage::from_spec(spec)?)),
    );
    reg.register(
        "classifier",
        "labels documents with a model from `quern label train`; can drop by label",
        |spec| Ok(Box::new(classifier::ClassifierStage::from_spec(spec)?)),
    );
    reg.register(
        "split",
        "assigns train/val/test by hash, keeping near-duplicate clusters together",
        |spec| Ok(Box::new(split::SplitStage::from_spec(spec)?)),
    );
    reg.register(
        "decontaminate",
        "flags or drops documents sharing n-grams with evaluation sets",
        |spec| Ok(Box::new(decontam::DecontStage::from_spec(spec)?)),
    );
}
