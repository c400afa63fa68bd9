//! Column names and the Arrow schemas of the tables quern writes.
//!
//! `docs` holds documents: [`ID`], [`TEXT`], [`SOURCE`], [`META`] and whatever columns
//! stages add (quality signals, `lang`, `dup_cluster`, labels, `split`). Stages add
//! columns and never drop any.
//!
//! `rejected` holds dropped documents with a fixed schema: the four document columns,
//! [`REJECTED_BY`] (the stage), [`REASON`], and [`DETAILS`], a JSON object with every
//! other column the document had when it was dropped. A fixed schema keeps the table
//! queryable as one, whichever stage dropped a row.
//!
//! `quarantine` holds records that could not be read: the file, line or byte offset, the
//! error, and the raw record (cut to [`RAW_LIMIT`] bytes).

use std::sync::{Arc, LazyLock};

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};

/// Table of kept documents.
pub const DOCS_TABLE: &str = "docs";
/// Table of dropped documents.
pub const REJECTED_TABLE: &str = "rejected";
/// Table of records that could not be read.
pub const QUARANTINE_TABLE: &str = "quarantine";
/// Table of tokenized sequences.
pub const TOKENS_TABLE: &str = "tokens";

/// Stable document id, unique in a build.
pub const ID: &str = "id";
/// The document's text.
pub const TEXT: &str = "text";
/// Where the document came from (a `--source` name, or the input file's stem).
pub const SOURCE: &str = "source";
/// The source record's other fields, as a JSON object (null when there were none).
pub const META: &str = "meta";

/// `rejected`: the stage that dropped the document.
pub const REJECTED_BY: &str = "rejected_by";
/// `rejected`: why, as a short snake_case reason name (e.g. `gopher_short_doc`).
pub const REASON: &str = "reason";
/// `rejected`: the document's other columns at the time it was dropped, as JSON.
pub const DETAILS: &str = "details";

/// `quarantine`: the input file.
pub const Q_FILE: &str = "file";
/// `quarantine`: 1-based line number, for line-oriented formats.
pub const Q_LINE: &str = "line";
/// `quarantine`: byte offset of the record (or of the failure) in the (decompressed) file.
pub const Q_BYTE_OFFSET: &str = "byte_offset";
/// `quarantine`: the error.
pub const Q_ERROR: &str = "error";
/// `quarantine`: the raw record, lossily decoded and cut to [`RAW_LIMIT`] bytes.
pub const Q_RAW: &str = "raw";

/// Raw records kept in quarantine are cut to this many bytes.
pub const RAW_LIMIT: usize = 4096;

/// The document columns every `docs` table starts with.
pub const DOC_COLUMNS: [&str; 4] = [ID, TEXT, SOURCE, META];

static DOC_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new(ID, DataType::Utf8, false),
        Field::new(TEXT, DataType::Utf8, false),
        Field::new(SOURCE, DataType::Utf8, false),
        Field::new(META, DataType::Utf8, true),
    ]))
});

static REJECTED_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    let mut fields: Vec<Field> = DOC_SCHEMA
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    fields.push(Field::new(REJECTED_BY, DataType::Utf8, false));
    fields.push(Field::new(REASON, DataType::Utf8, false));
    fields.push(Field::new(DETAILS, DataType::Utf8, true));
    Arc::new(Schema::new(fields))
});

static QUARANTINE_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new(Q_FILE, DataType::Utf8, false),
        Field::new(Q_LINE, DataType::UInt64, true),
        Field::new(Q_BYTE_OFFSET, DataType::UInt64, true),
        Field::new(Q_ERROR, DataType::Utf8, false),
        Field::new(Q_RAW, DataType::Utf8, true),
        Field::new(SOURCE, DataType::Utf8, false),
    ]))
});

/// Schema of a freshly ingested `docs` batch.
pub fn doc_schema() -> SchemaRef {
    DOC_SCHEMA.clone()
}

/// Schema of the `rejected` table.
pub fn rejected_schema() -> SchemaRef {
    REJECTED_SCHEMA.clone()
}

/// Schema of the `quarantine` table.
pub fn quarantine_schema() -> SchemaRef {
    QUARANTINE_SCHEMA.clone()
}

/// Cuts `raw` to at most [`RAW_LIMIT`] bytes on a char boundary, decoding lossily.
pub fn cut_raw(raw: &[u8]) -> String {
    let cut = &raw[..raw.len().min(RAW_LIMIT)];
    let s = String::from_utf8_lossy(cut);
    s.into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejected_extends_docs() {
        let r = rejected_schema();
        for (i, f) in doc_schema().fields().iter().enumerate() {
            assert_eq!(r.field(i), f.as_ref());
        }
        assert!(r.index_of(REASON).is_ok());
    }

    #[test]
    fn cut_raw_is_bounded_and_lossy() {
        let big = vec![b'a'; RAW_LIMIT * 2];
        assert_eq!(cut_raw(&big).len(), RAW_LIMIT);
        assert_eq!(cut_raw(b"a\xffb"), "a\u{fffd}b");
    }
}
