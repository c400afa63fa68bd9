//! quern-filters: the cleaning stages, one module per family.
//!
//! Why a crate: these stages are where most of a web corpus is dropped, users compare them
//! rule by rule with datatrove, and they carry their own data tables (spaCy's tokenizer
//! exceptions, datatrove's punctuation sets) and an embedded language-ID model.
//!
//! | stage `type` | module | what |
//! |---|---|---|
//! | `normalize` | [`normalize`] | Unicode NFC/NFKC, controls, whitespace, line endings, mojibake |
//! | `gopher_quality` | [`gopher_quality`] | Gopher quality rules (datatrove defaults and reasons) |
//! | `gopher_repetition` | [`gopher_repetition`] | Gopher repetition rules |
//! | `c4` | [`c4`] | C4 rules, with line-level removal rewriting `text` |
//! | `fineweb_quality` | [`fineweb`] | FineWeb quality rules |
//! | `length`, `url_filter`, `regex_filter`, `word_blocklist` | [`simple`] | simple filters |
//! | `language` | [`lang`] | language ID (`lang`, `lang_score`), keep list, threshold |
//! | `pii` | [`pii`] | PII redaction, `pii_redactions` count |
//!
//! Every per-document filter is a [`kernel::DocKernel`] run by [`kernel::KernelStage`]:
//! texts are read from the Arrow buffer, documents run in parallel with rayon, signals are
//! `Float64` columns named `<family>_<signal>`, dropped documents carry datatrove's reason
//! names. The same kernels are SQL functions ([`register_udfs`]).
//!
//! ```
//! use std::sync::Arc;
//! use arrow::array::{RecordBatch, StringArray};
//! use arrow::datatypes::{DataType, Field, Schema};
//! use quern_core::stage::{apply_sequence, BatchCtx, StageSpec};
//! use quern_core::StageRegistry;
//!
//! let mut reg = StageRegistry::new();
//! quern_filters::register_stages(&mut reg);
//! let spec = StageSpec {
//!     type_name: "gopher_quality".into(),
//!     name: "gopher".into(),
//!     key: "stages[0]".into(),
//!     params: serde_json::json!({}),
//!     ..Default::default()
//! };
//! let stage = reg.build(&spec).unwrap();
//! let schema = Arc::new(Schema::new(vec![Field::new("text", DataType::Utf8, false)]));
//! let batch = RecordBatch::try_new(schema, vec![Arc::new(StringArray::from(vec!["too short"]))]).unwrap();
//! let out = apply_sequence(&[stage.as_ref()], &BatchCtx::default(), batch).unwrap();
//! assert_eq!(out.rejected[0].reasons, vec!["gopher_short_doc".to_string()]);
//! ```

pub mod c4;
pub mod fineweb;
pub mod gopher_quality;
pub mod gopher_repetition;
mod grams;
pub mod kernel;
pub mod lang;
pub mod normalize;
pub mod pii;
pub mod simple;
pub mod text;
mod udf;
pub mod words;

use quern_core::stage::{parse_params, Stage, StageSpec};
use quern_core::{Result, StageRegistry};

use kernel::KernelStage;

pub use udf::register_udfs;

fn boxed<K: kernel::DocKernel + 'static>(
    spec: &StageSpec,
    column: &str,
    drop: bool,
    k: K,
) -> Result<Box<dyn Stage>> {
    Ok(Box::new(KernelStage::new(&spec.name, column, drop, k)))
}

/// Registers this crate's stage types (see [`quern_core::stage`]).
pub fn register_stages(reg: &mut StageRegistry) {
    reg.register(
        "normalize",
        "Unicode normal form, control characters, whitespace, line endings, mojibake",
        |spec| {
            let cfg: normalize::NormalizeConfig = parse_params(spec)?;
            let col = cfg.column.clone();
            boxed(spec, &col, false, normalize::Normalize { cfg })
        },
    );
    reg.register(
        "gopher_quality",
        "Gopher quality rules (datatrove's defaults and reasons)",
        |spec| {
            let cfg: gopher_quality::GopherQualityConfig = parse_params(spec)?;
            let (col, drop) = (cfg.column.clone(), cfg.drop);
            boxed(spec, &col, drop, gopher_quality::GopherQuality::new(cfg))
        },
    );
    reg.register(
        "gopher_repetition",
        "Gopher repetition rules (datatrove's defaults and reasons)",
        |spec| {
            let cfg: gopher_repetition::GopherRepetitionConfig = parse_params(spec)?;
            let (col, drop) = (cfg.column.clone(), cfg.drop);
            boxed(
                spec,
                &col,
                drop,
                gopher_repetition::GopherRepetition::new(cfg),
            )
        },
    );
    reg.register(
        "c4",
        "C4 quality rules; removes failing lines from text (datatrove's C4QualityFilter)",
        |spec| {
            let cfg: c4::C4Config = parse_params(spec)?;
            let (col, drop) = (cfg.column.clone(), cfg.drop);
            boxed(spec, &col, drop, c4::C4::new(cfg))
        },
    );
    reg.register(
        "fineweb_quality",
        "FineWeb quality rules (datatrove's defaults and reasons)",
        |spec| {
            let cfg: fineweb::FineWebConfig = parse_params(spec)?;
            let (col, drop) = (cfg.column.clone(), cfg.drop);
            boxed(spec, &col, drop, fineweb::FineWeb::new(cfg))
        },
    );
    reg.register("length", "bounds on characters, words and lines", |spec| {
        let cfg: simple::LengthConfig = parse_params(spec)?;
        let col = cfg.column.clone().unwrap_or_else(|| "text".into());
        let drop = cfg.drop.unwrap_or(true);
        boxed(spec, &col, drop, simple::Length { cfg })
    });
    reg.register(
        "url_filter",
        "URL/domain block lists (from files or inline)",
        |spec| {
            let mut cfg: simple::UrlFilterConfig = parse_params(spec)?;
            cfg.domains_file = cfg.domains_file.map(|p| spec.resolve(&p));
            cfg.url_substrings_file = cfg.url_substrings_file.map(|p| spec.resolve(&p));
            let k = simple::UrlFilter::new(&cfg, &spec.key)?;
            boxed(spec, &cfg.column, cfg.drop, k)
        },
    );
    reg.register(
        "regex_filter",
        "drop documents matching regexes, or not matching keep regexes",
        |spec| {
            let cfg: simple::RegexFilterConfig = parse_params(spec)?;
            let k = simple::RegexFilter::new(&cfg, &spec.key)?;
            boxed(spec, &cfg.column, true, k)
        },
    );
    reg.register(
        "word_blocklist",
        "drop documents containing listed words",
        |spec| {
            let mut cfg: simple::WordBlocklistConfig = parse_params(spec)?;
            cfg.words_file = cfg.words_file.map(|p| spec.resolve(&p));
            let k = simple::WordBlocklist::new(&cfg, &spec.key)?;
            boxed(spec, &cfg.column, cfg.drop, k)
        },
    );
    reg.register(
        "language",
        "language ID (whatlang): lang, lang_score; keep list and threshold",
        |spec| {
            let cfg: lang::LangConfig = parse_params(spec)?;
            Ok(Box::new(lang::LangStage::new(&spec.name, cfg)))
        },
    );
    reg.register(
        "pii",
        "redacts e-mails, phones, IPs, cards, IBANs, SSNs; pii_redactions count",
        |spec| {
            let cfg: pii::PiiConfig = parse_params(spec)?;
            let col = cfg.column.clone();
            boxed(spec, &col, false, pii::Pii::new(cfg))
        },
    );
}
