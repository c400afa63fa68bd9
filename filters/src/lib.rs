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

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::DataType;
    use quern_core::stage::Keeps;

    fn build(type_name: &str, params: serde_json::Value) -> Box<dyn Stage> {
        let mut reg = StageRegistry::new();
        register_stages(&mut reg);
        let spec = StageSpec {
            type_name: type_name.into(),
            name: type_name.into(),
            key: "stages[0]".into(),
            params,
            ..Default::default()
        };
        reg.build(&spec)
            .unwrap_or_else(|e| panic!("{type_name}: {e}"))
    }

    /// Every threshold a stage declares is on a `Float64` column the stage adds, so a report
    /// can find its histogram (the names cannot drift apart); every rule with a numeric cut
    /// on a signal is declared once configured, and none when the stage does not drop.
    #[test]
    fn thresholds_name_columns_the_stage_adds() {
        use serde_json::json;
        let dup: Vec<String> = (0..6).map(|k| format!("dup_n_grams[{k}]")).collect();
        let table: Vec<(&str, serde_json::Value, Vec<&str>)> = vec![
            (
                "gopher_quality",
                json!({}),
                vec![
                    "min_doc_words",
                    "max_doc_words",
                    "min_avg_word_length",
                    "max_avg_word_length",
                    "max_symbol_word_ratio",
                    "max_symbol_word_ratio",
                    "max_bullet_lines_ratio",
                    "max_ellipsis_lines_ratio",
                    "max_non_alpha_words_ratio",
                    "min_stop_words",
                ],
            ),
            (
                "gopher_quality",
                json!({"min_doc_words": 0, "max_doc_words": 0}),
                vec![
                    "min_avg_word_length",
                    "max_avg_word_length",
                    "max_symbol_word_ratio",
                    "max_symbol_word_ratio",
                    "max_bullet_lines_ratio",
                    "max_ellipsis_lines_ratio",
                    "max_non_alpha_words_ratio",
                    "min_stop_words",
                ],
            ),
            (
                "gopher_repetition",
                json!({}),
                [
                    "dup_para_frac",
                    "dup_para_char_frac",
                    "dup_line_frac",
                    "dup_line_char_frac",
                    "top_n_grams[0]",
                    "top_n_grams[1]",
                    "top_n_grams[2]",
                ]
                .into_iter()
                .chain(dup.iter().map(String::as_str))
                .collect(),
            ),
            (
                "gopher_repetition",
                json!({"dup_line_frac": 0, "top_n_grams": [[7, 0.5]], "dup_n_grams": []}),
                vec![
                    "dup_para_frac",
                    "dup_para_char_frac",
                    "dup_line_char_frac",
                    "top_n_grams[0]",
                ],
            ),
            ("c4", json!({}), vec!["min_num_sentences"]),
            ("c4", json!({"min_num_sentences": -1}), vec![]),
            (
                "fineweb_quality",
                json!({}),
                vec![
                    "line_punct_thr",
                    "short_line_thr",
                    "char_duplicates_ratio",
                    "new_line_ratio",
                ],
            ),
            ("length", json!({}), vec![]),
            (
                "length",
                json!({"min_chars": 1, "max_chars": 9, "min_words": 1, "max_words": 9,
                       "min_lines": 1, "max_lines": 9}),
                vec![
                    "min_chars",
                    "max_chars",
                    "min_words",
                    "max_words",
                    "min_lines",
                    "max_lines",
                ],
            ),
            ("word_blocklist", json!({}), vec![]),
            (
                "word_blocklist",
                json!({"words": ["spam"], "min_hits": 2}),
                vec!["min_hits"],
            ),
            ("language", json!({}), vec![]),
            ("language", json!({"min_score": 0.5}), vec!["min_score"]),
            ("pii", json!({}), vec![]),
        ];
        for (type_name, params, want) in table {
            let stage = build(type_name, params.clone());
            let adds = stage.adds();
            let t = stage.thresholds();
            let got: Vec<&str> = t.iter().map(|t| t.param.as_str()).collect();
            assert_eq!(got, want, "{type_name} {params}");
            for t in &t {
                let f = adds.iter().find(|f| f.name() == &t.column);
                assert!(
                    f.is_some_and(|f| f.data_type() == &DataType::Float64),
                    "{type_name}: threshold {} on `{}`, not a Float64 column of {:?}",
                    t.param,
                    t.column,
                    adds.iter().map(|f| f.name()).collect::<Vec<_>>()
                );
                assert!(t.value.is_finite() && !t.reason.is_empty(), "{t:?}");
            }
            // The same stage that only writes its signals rejects nothing.
            if !want.is_empty() && type_name != "language" {
                let mut quiet = params.clone();
                quiet["drop"] = json!(false);
                assert!(
                    build(type_name, quiet).thresholds().is_empty(),
                    "{type_name}"
                );
            }
        }
        // The values and sides of a few, as the rules read.
        let g = build("gopher_quality", json!({"min_doc_words": 20}));
        let t = &g.thresholds()[0];
        assert_eq!(
            (t.column.as_str(), t.keeps, t.value, t.reason.as_str()),
            (
                "gopher_word_count",
                Keeps::AtLeast,
                20.0,
                "gopher_short_doc"
            )
        );
        let r = build("gopher_repetition", json!({"top_n_grams": [[3, 0.25]]}));
        let top = r
            .thresholds()
            .into_iter()
            .find(|t| t.param == "top_n_grams[0]")
            .unwrap();
        assert_eq!(
            (
                top.column.as_str(),
                top.keeps,
                top.value,
                top.reason.as_str()
            ),
            ("gopher_rep_top_3_gram", Keeps::AtMost, 0.25, "top_3_gram")
        );
    }

    /// A threshold says which documents its stage keeps: the kernel's verdict on a document
    /// agrees with [`Keeps::keeps`] on the signal value it wrote, for a minimum and a maximum.
    #[test]
    fn thresholds_agree_with_the_kernels_verdicts() {
        use arrow::array::{Array, Float64Array, RecordBatch, StringArray};
        use quern_core::stage::{apply_sequence, BatchCtx};
        use std::sync::Arc;
        let texts: Vec<String> = (1..12).map(|n| "word ".repeat(n)).collect();
        let schema = Arc::new(arrow::datatypes::Schema::new(vec![
            arrow::datatypes::Field::new("text", DataType::Utf8, false),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![Arc::new(StringArray::from_iter_values(&texts))],
        )
        .unwrap();
        for params in [
            serde_json::json!({"min_words": 4}),
            serde_json::json!({"max_words": 6}),
        ] {
            let stage = build("length", params.clone());
            let t = stage.thresholds();
            assert_eq!(t.len(), 1);
            let out =
                apply_sequence(&[stage.as_ref()], &BatchCtx::default(), batch.clone()).unwrap();
            let kept = out.kept.column_by_name(&t[0].column).unwrap();
            let kept = kept.as_any().downcast_ref::<Float64Array>().unwrap();
            assert!(!kept.is_empty() && !out.rejected.is_empty(), "{params}");
            assert!(kept
                .values()
                .iter()
                .all(|v| t[0].keeps.keeps(*v, t[0].value)));
            let gone = out.rejected[0].batch.column_by_name(&t[0].column).unwrap();
            let gone = gone.as_any().downcast_ref::<Float64Array>().unwrap();
            assert!(gone
                .values()
                .iter()
                .all(|v| !t[0].keeps.keeps(*v, t[0].value)));
            assert!(out.rejected[0].reasons.iter().all(|r| *r == t[0].reason));
        }
    }
}
