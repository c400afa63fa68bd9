//! The `html_extract` stage: a column of raw HTML to its main text, with `title`,
//! `html_lang` and `description` columns.
//!
//! What: replaces the text column's HTML with the page's main text (see [`super`]) and adds
//! `title`, `html_lang` (the page's declared language, a hint; `lang` stays the language
//! stage's detection) and `description`. Why: corpora that hold raw HTML (a scrape saved as
//! JSONL, a WARC read with another tool) get the same extraction the WARC reader applies to
//! `response` records. Documents with no main text are rejected (`no_main_text`) unless
//! `drop_empty = false`.
//!
//! ```toml
//! [[stages]]
//! type = "html_extract"
//! column = "text"      # default
//! drop_empty = true    # default
//! ```

use std::sync::Arc;

use arrow::array::{Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field};
use quern_core::stage::{string_column, with_column, BatchCtx, Stage, Verdict};
use quern_core::Result;
use rayon::prelude::*;
use serde::Deserialize;

/// `html_extract` configuration.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HtmlExtractConfig {
    /// The column holding HTML, rewritten with the main text. Default `"text"`.
    pub column: String,
    /// Reject documents whose page has no main text (`no_main_text`). Default true.
    pub drop_empty: bool,
}

impl Default for HtmlExtractConfig {
    fn default() -> Self {
        HtmlExtractConfig {
            column: "text".into(),
            drop_empty: true,
        }
    }
}

/// The stage.
pub struct HtmlExtract {
    name: String,
    cfg: HtmlExtractConfig,
}

impl HtmlExtract {
    pub fn new(name: &str, cfg: HtmlExtractConfig) -> Self {
        HtmlExtract {
            name: name.to_string(),
            cfg,
        }
    }
}

const ADDS: [&str; 3] = ["title", "html_lang", "description"];

impl Stage for HtmlExtract {
    fn name(&self) -> &str {
        &self.name
    }
    fn reads(&self) -> Vec<String> {
        vec![self.cfg.column.clone()]
    }
    fn adds(&self) -> Vec<Field> {
        let mut f = vec![Field::new(&self.cfg.column, DataType::Utf8, false)];
        f.extend(ADDS.iter().map(|n| Field::new(*n, DataType::Utf8, true)));
        f
    }
    fn apply(&self, _ctx: &BatchCtx, batch: RecordBatch) -> Result<Verdict> {
        let html = string_column(&batch, &self.cfg.column, &self.name)?;
        let found: Vec<Option<super::Extracted>> = (0..html.len())
            .into_par_iter()
            .map(|i| (!html.is_null(i)).then(|| super::extract_str(html.value(i))))
            .collect();
        let text: StringArray = found
            .iter()
            .map(|e| Some(e.as_ref().map_or("", |e| e.text.as_str())))
            .collect();
        let nullable = batch
            .schema()
            .field_with_name(&self.cfg.column)
            .map(|f| f.is_nullable())
            .unwrap_or(false);
        let mut out = with_column(
            &batch,
            Field::new(&self.cfg.column, DataType::Utf8, nullable),
            Arc::new(text),
        )?;
        type Get = fn(&super::Extracted) -> Option<&str>;
        let getters: [(&str, Get); 3] = [
            ("title", |e| e.title.as_deref()),
            ("html_lang", |e| e.lang.as_deref()),
            ("description", |e| e.description.as_deref()),
        ];
        for (col, get) in getters {
            let a: StringArray = found.iter().map(|e| e.as_ref().and_then(get)).collect();
            out = with_column(&out, Field::new(col, DataType::Utf8, true), Arc::new(a))?;
        }
        if !self.cfg.drop_empty {
            return Ok(Verdict::columns(out));
        }
        let reasons = found
            .iter()
            .map(|e| match e {
                Some(e) if !e.text.is_empty() => None,
                _ => Some("no_main_text".to_string()),
            })
            .collect();
        Ok(Verdict::with_reasons(out, reasons))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::AsArray;
    use arrow::datatypes::Schema;

    #[test]
    fn html_column_becomes_main_text_with_metadata_and_empty_pages_are_rejected() {
        let page = "<html lang=fr><head><title>Titre</title></head><body><article><p>Le conseil municipal s'est réuni mardi soir, et il a voté le budget de l'année prochaine.</p></article></body></html>";
        let schema = Arc::new(Schema::new(vec![Field::new("text", DataType::Utf8, true)]));
        let b = RecordBatch::try_new(
            schema,
            vec![Arc::new(StringArray::from(vec![
                Some(page),
                Some("<nav><a href=/>home</a></nav>"),
                None,
            ]))],
        )
        .unwrap();
        let st = HtmlExtract::new("html", HtmlExtractConfig::default());
        let v = st.apply(&BatchCtx::default(), b).unwrap();
        let col = |n: &str| {
            v.batch
                .column_by_name(n)
                .unwrap()
                .as_string::<i32>()
                .clone()
        };
        assert_eq!(
            col("text").value(0),
            "Le conseil municipal s'est réuni mardi soir, et il a voté le budget de l'année prochaine."
        );
        assert_eq!(col("title").value(0), "Titre");
        assert_eq!(col("html_lang").value(0), "fr");
        assert!(col("description").is_null(0));
        let keep = v.keep.unwrap();
        assert_eq!(
            keep.iter().collect::<Vec<_>>(),
            [Some(true), Some(false), Some(false)]
        );
        assert_eq!(v.reasons.unwrap().value(1), "no_main_text");
    }
}
