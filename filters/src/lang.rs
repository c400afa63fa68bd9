//! Language identification with an embedded model: `lang` and `lang_score` columns, a keep
//! list and a score threshold.
//!
//! Why whatlang: it is pure Rust with its trigram model compiled in (no download, no
//! native library) and detects 69 languages. Measured on 24,451 real paragraphs in 26
//! languages (BENCHMARKS.md `## filters`, language ID): 99.1% correct overall, >= 99.6% in
//! 22 languages, weakest on Danish vs Norwegian Bokmål (93.3% / 96.0%) and Japanese
//! (91.2%, mixed with English commands), at 3.8 MB/s on one core. lingua-rs (more accurate
//! on very short strings, with much larger embedded models) was not measured side by side
//! here; whatlang's figures on paragraph-length text are what decided it.
//!
//! Codes are ISO 639-1 where one exists (`en`, `de`, `zh`, ...), else whatlang's ISO 639-3.
//! Detection reads the first `max_chars` characters (default 2000): more text rarely
//! changes the answer and keeps the cost per document bounded.
//!
//! Reasons: `lang_unknown` (nothing detected while a keep list is set), `lang_not_kept`,
//! `lang_low_score`.
//!
//! ```toml
//! [[stages]]
//! type = "language"
//! keep = ["en", "de"]
//! min_score = 0.5
//! ```

use std::sync::Arc;

use arrow::array::{Array, Float64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field};
use quern_core::stage::{string_column, with_column, BatchCtx, Keeps, Stage, Threshold, Verdict};
use quern_core::Result;
use rayon::prelude::*;
use serde::Deserialize;

/// Configuration.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LangConfig {
    /// Text column. Default `"text"`.
    pub column: String,
    /// Languages to keep (ISO 639-1 or 639-3 codes); empty keeps all. Default empty.
    pub keep: Vec<String>,
    /// Minimum detection confidence (0–1) to keep a document. Default 0 (no threshold).
    pub min_score: f64,
    /// Characters read for detection. Default 2000.
    pub max_chars: usize,
}

impl Default for LangConfig {
    fn default() -> Self {
        LangConfig {
            column: "text".into(),
            keep: Vec::new(),
            min_score: 0.0,
            max_chars: 2000,
        }
    }
}

const ISO1: &[(&str, &str)] = &[
    ("eng", "en"),
    ("rus", "ru"),
    ("cmn", "zh"),
    ("spa", "es"),
    ("por", "pt"),
    ("ita", "it"),
    ("ben", "bn"),
    ("fra", "fr"),
    ("deu", "de"),
    ("ukr", "uk"),
    ("kat", "ka"),
    ("ara", "ar"),
    ("hin", "hi"),
    ("jpn", "ja"),
    ("heb", "he"),
    ("yid", "yi"),
    ("pol", "pl"),
    ("amh", "am"),
    ("jav", "jv"),
    ("kor", "ko"),
    ("nob", "nb"),
    ("dan", "da"),
    ("swe", "sv"),
    ("fin", "fi"),
    ("tur", "tr"),
    ("nld", "nl"),
    ("hun", "hu"),
    ("ces", "cs"),
    ("ell", "el"),
    ("bul", "bg"),
    ("bel", "be"),
    ("mar", "mr"),
    ("kan", "kn"),
    ("ron", "ro"),
    ("slv", "sl"),
    ("hrv", "hr"),
    ("srp", "sr"),
    ("mkd", "mk"),
    ("lit", "lt"),
    ("lav", "lv"),
    ("est", "et"),
    ("tam", "ta"),
    ("vie", "vi"),
    ("urd", "ur"),
    ("tha", "th"),
    ("guj", "gu"),
    ("uzb", "uz"),
    ("pan", "pa"),
    ("aze", "az"),
    ("ind", "id"),
    ("tel", "te"),
    ("pes", "fa"),
    ("mal", "ml"),
    ("ori", "or"),
    ("mya", "my"),
    ("nep", "ne"),
    ("sin", "si"),
    ("khm", "km"),
    ("tuk", "tk"),
    ("aka", "ak"),
    ("zul", "zu"),
    ("sna", "sn"),
    ("afr", "af"),
    ("lat", "la"),
    ("slk", "sk"),
    ("cat", "ca"),
    ("tgl", "tl"),
    ("hye", "hy"),
    ("epo", "eo"),
];

/// The short code of a whatlang language.
pub fn lang_code(l: whatlang::Lang) -> &'static str {
    let c = l.code();
    ISO1.iter()
        .find(|(three, _)| *three == c)
        .map_or(c, |(_, two)| two)
}

/// Detects the language of `text` (its first `max_chars` characters): `(code, confidence)`.
pub fn detect(text: &str, max_chars: usize) -> Option<(&'static str, f64)> {
    let cut = text
        .char_indices()
        .nth(max_chars)
        .map_or(text.len(), |(i, _)| i);
    whatlang::detect(&text[..cut]).map(|info| (lang_code(info.lang()), info.confidence()))
}

/// The language-ID stage.
pub struct LangStage {
    name: String,
    cfg: LangConfig,
    keep: Vec<String>,
}

impl LangStage {
    pub fn new(name: &str, cfg: LangConfig) -> Self {
        // Accept either code form in the keep list.
        let keep = cfg
            .keep
            .iter()
            .map(|k| {
                let k = k.to_ascii_lowercase();
                ISO1.iter()
                    .find(|(three, _)| *three == k)
                    .map_or(k.clone(), |(_, two)| two.to_string())
            })
            .collect();
        LangStage {
            name: name.to_string(),
            cfg,
            keep,
        }
    }
}

impl Stage for LangStage {
    fn name(&self) -> &str {
        &self.name
    }
    fn reads(&self) -> Vec<String> {
        vec![self.cfg.column.clone()]
    }
    fn adds(&self) -> Vec<Field> {
        vec![
            Field::new("lang", DataType::Utf8, true),
            Field::new("lang_score", DataType::Float64, true),
        ]
    }
    fn thresholds(&self) -> Vec<Threshold> {
        (self.cfg.min_score > 0.0)
            .then(|| {
                Threshold::new(
                    "lang_score",
                    Keeps::AtLeast,
                    self.cfg.min_score,
                    "min_score",
                    "lang_low_score",
                )
            })
            .into_iter()
            .collect()
    }
    fn apply(&self, _ctx: &BatchCtx, batch: RecordBatch) -> Result<Verdict> {
        let texts = string_column(&batch, &self.cfg.column, &self.name)?;
        let found: Vec<Option<(&'static str, f64)>> = (0..texts.len())
            .into_par_iter()
            .map(|i| {
                if texts.is_null(i) {
                    None
                } else {
                    detect(texts.value(i), self.cfg.max_chars)
                }
            })
            .collect();
        let langs: StringArray = found.iter().map(|f| f.map(|x| x.0)).collect();
        let scores: Float64Array = found.iter().map(|f| f.map(|x| x.1)).collect();
        let out = with_column(
            &batch,
            Field::new("lang", DataType::Utf8, true),
            Arc::new(langs),
        )?;
        let out = with_column(
            &out,
            Field::new("lang_score", DataType::Float64, true),
            Arc::new(scores),
        )?;
        if self.keep.is_empty() && self.cfg.min_score <= 0.0 {
            return Ok(Verdict::columns(out));
        }
        let reasons = found
            .iter()
            .map(|f| match f {
                None if !self.keep.is_empty() || self.cfg.min_score > 0.0 => {
                    Some("lang_unknown".to_string())
                }
                None => None,
                Some((code, _))
                    if !self.keep.is_empty() && !self.keep.iter().any(|k| k == code) =>
                {
                    Some("lang_not_kept".to_string())
                }
                Some((_, score)) if *score < self.cfg.min_score => {
                    Some("lang_low_score".to_string())
                }
                Some(_) => None,
            })
            .collect();
        Ok(Verdict::with_reasons(out, reasons))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_common_languages() {
        let cases = [
            ("The weather was cold and the children stayed inside to read books all afternoon.", "en"),
            ("Das Wetter war kalt und die Kinder blieben den ganzen Nachmittag drinnen, um Bücher zu lesen.", "de"),
            ("Il faisait froid et les enfants sont restés à l'intérieur pour lire des livres tout l'après-midi.", "fr"),
            ("Hacía frío y los niños se quedaron dentro leyendo libros toda la tarde.", "es"),
            ("Было холодно, и дети весь день сидели дома и читали книги.", "ru"),
        ];
        for (t, want) in cases {
            assert_eq!(detect(t, 2000).map(|x| x.0), Some(want), "{t}");
        }
        assert_eq!(detect("", 2000), None);
    }
}
