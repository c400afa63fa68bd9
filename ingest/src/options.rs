//! What to read and how: the input [`Format`] and the [`IngestOptions`].
//!
//! Options come in the two forms the rest of quern uses: `with_*` builders in code, and a
//! serde struct (the pipeline TOML embeds it as `[input]`) that refuses unknown keys and has
//! a documented default for every field.

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use quern_core::{Error, Result};
use serde::{Deserialize, Serialize};

/// An input format. Chosen from the file name (after stripping `.gz`/`.zst`) unless forced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// One JSON object per line (`.jsonl`, `.ndjson`), optionally gzip- or zstd-compressed.
    Jsonl,
    /// A JSON array of objects (`.json`), streamed element by element. A `.json` file that
    /// does not start with `[` is read as a sequence of JSON values (JSONL or one object).
    Json,
    /// Apache Parquet with any schema (`.parquet`, `.pq`); the text field must be a string column.
    Parquet,
    /// Comma-separated values with a header row (`.csv`), RFC 4180 quoting.
    Csv,
    /// Tab-separated values with a header row (`.tsv`), no quoting (IANA text/tab-separated-values).
    Tsv,
    /// Plain text (`.txt`, `.md`, `.text`, `.markdown`): one document per file.
    Text,
    /// Web crawls (`.warc`, `.warc.gz`, WET's `.wet`/`.warc.wet.gz`): one document per HTML
    /// `response` (its main text) or WET `conversion` record; see the `warc` module.
    Warc,
}

/// Every format with its names, for parsing and for error messages.
const NAMES: [(Format, &str); 7] = [
    (Format::Jsonl, "jsonl"),
    (Format::Json, "json"),
    (Format::Parquet, "parquet"),
    (Format::Csv, "csv"),
    (Format::Tsv, "tsv"),
    (Format::Text, "text"),
    (Format::Warc, "warc"),
];

/// The compression of an input file, from its last extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    pub(crate) fn of(path: &Path) -> Compression {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().to_ascii_lowercase())
            .unwrap_or_default();
        if name.ends_with(".gz") || name.ends_with(".gzip") {
            Compression::Gzip
        } else if name.ends_with(".zst") || name.ends_with(".zstd") {
            Compression::Zstd
        } else {
            Compression::None
        }
    }
}

impl Format {
    /// The format a file name implies: its extension, after a `.gz`/`.zst` suffix is stripped.
    /// `None` for an extension quern does not know.
    pub fn from_path(path: &Path) -> Option<Format> {
        let name = path.file_name()?.to_string_lossy().to_ascii_lowercase();
        let inner = ["gz", "gzip", "zst", "zstd"]
            .iter()
            .find_map(|c| name.strip_suffix(&format!(".{c}")))
            .unwrap_or(&name);
        let ext = inner.rsplit_once('.')?.1;
        Some(match ext {
            "jsonl" | "ndjson" | "jsonlines" => Format::Jsonl,
            "json" => Format::Json,
            "parquet" | "pq" => Format::Parquet,
            "csv" => Format::Csv,
            "tsv" | "tab" => Format::Tsv,
            "txt" | "md" | "text" | "markdown" => Format::Text,
            "warc" | "wet" => Format::Warc,
            _ => return None,
        })
    }

    /// The name used by `--format` and in configs.
    pub fn name(self) -> &'static str {
        NAMES
            .iter()
            .find(|(f, _)| *f == self)
            .map(|(_, n)| *n)
            .unwrap_or("?")
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Format {
    type Err = Error;
    fn from_str(s: &str) -> Result<Format> {
        let lower = s.to_ascii_lowercase();
        let alias = match lower.as_str() {
            "ndjson" => "jsonl",
            "txt" | "md" => "text",
            "wet" => "warc",
            other => other,
        };
        NAMES
            .iter()
            .find(|(_, n)| *n == alias)
            .map(|(f, _)| *f)
            .ok_or_else(|| {
                let allowed: Vec<&str> = NAMES.iter().map(|(_, n)| *n).collect();
                Error::bad_config(
                    "format",
                    format!("unknown format `{s}`; allowed: {}", allowed.join(", ")),
                )
            })
    }
}

/// How to read input files into documents.
///
/// ```
/// use quern_ingest::{Format, IngestOptions};
/// let opts = IngestOptions::default().with_text_field("content").with_format(Format::Jsonl);
/// assert_eq!(opts.text_field, "content");
/// let from_toml: IngestOptions = serde_json::from_str(r#"{"text_field": "body", "strict": true}"#).unwrap();
/// assert_eq!(from_toml.batch_rows, 8192);
/// assert!(serde_json::from_str::<IngestOptions>(r#"{"txt_field": "body"}"#).is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestOptions {
    /// Force a format for every file. Default: none, chosen per file from its extension.
    pub format: Option<Format>,
    /// The field (JSON key, column, CSV header) holding the document text. Default `"text"`.
    pub text_field: String,
    /// The field holding a document id (string or number). Default: none, ids are generated
    /// from the file name and the line (`<file>:<line>`), row or element number.
    pub id_field: Option<String>,
    /// The `source` of every document. Default: none, taken from a string field `source` when
    /// a record has one, else the file stem (for text files, the name of their folder).
    pub source: Option<String>,
    /// Documents per emitted batch; memory is bounded by this, never by the file size.
    /// Default 8192.
    pub batch_rows: usize,
    /// Stop at the first malformed record with an error instead of quarantining it.
    /// Default false.
    pub strict: bool,
    /// WARC/WET: the largest record content kept in memory and extracted; a larger page is
    /// rejected (`page_too_large`) and its content skipped unread. Default 16 MiB (16777216).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_page_bytes: Option<u64>,
}

/// Default [`IngestOptions::max_page_bytes`].
pub const DEFAULT_MAX_PAGE_BYTES: u64 = 16 << 20;

impl Default for IngestOptions {
    fn default() -> Self {
        IngestOptions {
            format: None,
            text_field: "text".into(),
            id_field: None,
            source: None,
            batch_rows: 8192,
            strict: false,
            max_page_bytes: None,
        }
    }
}

impl IngestOptions {
    pub fn with_format(mut self, format: Format) -> Self {
        self.format = Some(format);
        self
    }
    pub fn with_text_field(mut self, field: impl Into<String>) -> Self {
        self.text_field = field.into();
        self
    }
    pub fn with_id_field(mut self, field: impl Into<String>) -> Self {
        self.id_field = Some(field.into());
        self
    }
    pub fn with_source(mut self, source: impl Into<String>) -> Self {
        self.source = Some(source.into());
        self
    }
    pub fn with_batch_rows(mut self, rows: usize) -> Self {
        self.batch_rows = rows.max(1);
        self
    }
    pub fn with_strict(mut self, strict: bool) -> Self {
        self.strict = strict;
        self
    }
    pub fn with_max_page_bytes(mut self, bytes: u64) -> Self {
        self.max_page_bytes = Some(bytes);
        self
    }

    /// Checks the options before any data is read, naming the key at fault.
    pub fn validate(&self) -> Result<()> {
        if self.text_field.is_empty() {
            return Err(Error::bad_config("text_field", "must not be empty"));
        }
        if self.id_field.as_deref() == Some("") {
            return Err(Error::bad_config(
                "id_field",
                "must not be empty (leave it out to generate ids)",
            ));
        }
        if self.id_field.as_deref() == Some(self.text_field.as_str()) {
            return Err(Error::bad_config("id_field", "must differ from text_field"));
        }
        if self.max_page_bytes == Some(0) {
            return Err(Error::bad_config(
                "max_page_bytes",
                format!("must be at least 1 (default {DEFAULT_MAX_PAGE_BYTES})"),
            ));
        }
        if self.batch_rows == 0 {
            return Err(Error::bad_config(
                "batch_rows",
                "must be at least 1 (default 8192)",
            ));
        }
        Ok(())
    }

    /// The format of `path`: the forced one, else from its extension.
    pub fn format_of(&self, path: &Path) -> Result<Format> {
        if let Some(f) = self.format {
            return Ok(f);
        }
        Format::from_path(path).ok_or_else(|| {
            Error::usage(format!(
                "cannot tell the format of {} from its extension; pass --format (one of: {})",
                path.display(),
                NAMES.iter().map(|(_, n)| *n).collect::<Vec<_>>().join(", ")
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_from_extensions() {
        let cases = [
            ("a.jsonl", Some(Format::Jsonl)),
            ("a.ndjson", Some(Format::Jsonl)),
            ("dir/a.jsonl.gz", Some(Format::Jsonl)),
            ("a.JSONL.ZST", Some(Format::Jsonl)),
            ("a.json", Some(Format::Json)),
            ("a.json.gz", Some(Format::Json)),
            ("a.parquet", Some(Format::Parquet)),
            ("a.csv", Some(Format::Csv)),
            ("a.tsv", Some(Format::Tsv)),
            ("a.txt", Some(Format::Text)),
            ("CC-MAIN-1.warc.gz", Some(Format::Warc)),
            ("CC-MAIN-1.warc.wet.gz", Some(Format::Warc)),
            ("a.warc", Some(Format::Warc)),
            ("README.md", Some(Format::Text)),
            ("a.exe", None),
            ("noext", None),
            ("a.gz", None),
        ];
        for (p, want) in cases {
            assert_eq!(Format::from_path(Path::new(p)), want, "{p}");
        }
        assert_eq!(Compression::of(Path::new("a.jsonl.gz")), Compression::Gzip);
        assert_eq!(Compression::of(Path::new("a.jsonl.zst")), Compression::Zstd);
        assert_eq!(Compression::of(Path::new("a.jsonl")), Compression::None);
    }

    #[test]
    fn format_names_round_trip_and_unknown_is_refused() {
        for (f, n) in NAMES {
            assert_eq!(n.parse::<Format>().unwrap(), f);
            assert_eq!(f.to_string(), n);
        }
        let e = "yaml".parse::<Format>().unwrap_err().to_string();
        assert!(
            e.contains("`format`") && e.contains("yaml") && e.contains("jsonl"),
            "{e}"
        );
    }

    #[test]
    fn validation_names_the_key() {
        let e = IngestOptions::default()
            .with_text_field("")
            .validate()
            .unwrap_err()
            .to_string();
        assert!(e.contains("text_field"), "{e}");
        let e = IngestOptions::default()
            .with_id_field("text")
            .validate()
            .unwrap_err()
            .to_string();
        assert!(e.contains("id_field"), "{e}");
        IngestOptions::default().validate().unwrap();
        let e = IngestOptions::default()
            .format_of(Path::new("x.bin"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("x.bin") && e.contains("--format"), "{e}");
    }
}
