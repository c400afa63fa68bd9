//! One JSON record to one document: validate, find the fields, build `meta` from raw slices.
//!
//! Parsing is the hot loop of JSONL ingest, so a record is never turned into a tree of
//! `serde_json::Value`s. serde_json first validates the record without allocating
//! (`IgnoredAny`, which also gives precise error messages); a small scanner then finds the
//! top-level keys and the byte spans of their values in the now known-valid text. The text
//! value is borrowed from the line when it has no escapes (most text does not), and `meta`
//! is assembled by copying the other fields' raw JSON, never re-serialising them.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::ops::Range;

use serde::de::IgnoredAny;

use crate::batch::Builders;

/// What the caller knows about a record besides its bytes.
pub(crate) struct RecordPlace<'a> {
    /// The file as quarantine rows name it.
    pub file: &'a str,
    /// The file's name for generated ids.
    pub name: &'a str,
    /// 1-based line where the record starts.
    pub line: u64,
    /// Byte offset of the record in the (decompressed) file.
    pub offset: u64,
    /// 1-based number used in a generated id (the line for JSONL, the element for arrays).
    pub ordinal: u64,
}

/// Field names and per-file defaults, plus reusable scratch buffers.
pub(crate) struct RecordParser<'o> {
    pub text_field: &'o str,
    pub id_field: Option<&'o str>,
    pub forced_source: Option<&'o str>,
    pub default_source: &'o str,
    fields: Vec<(Range<usize>, Range<usize>)>,
    meta: String,
    id: String,
}

/// The JSON type of a raw value, for error messages.
fn kind(raw: &[u8]) -> &'static str {
    match raw.first() {
        Some(b'"') => "a string",
        Some(b'{') => "an object",
        Some(b'[') => "an array",
        Some(b't') | Some(b'f') => "a boolean",
        Some(b'n') => "null",
        _ => "a number",
    }
}

/// Decodes a raw JSON string (with quotes), borrowing when it holds no escapes.
fn decode_str(raw: &str) -> Option<Cow<'_, str>> {
    let b = raw.as_bytes();
    if b.len() < 2 || b[0] != b'"' {
        return None;
    }
    let inner = &raw[1..raw.len() - 1];
    if memchr::memchr(b'\\', inner.as_bytes()).is_none() {
        return Some(Cow::Borrowed(inner));
    }
    serde_json::from_str::<String>(raw).ok().map(Cow::Owned)
}

fn ws(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && matches!(b[i], b' ' | b'\t' | b'\n' | b'\r') {
        i += 1;
    }
    i
}

/// End (exclusive) of the string starting at `b[i] == '"'`, in valid JSON.
fn string_end(b: &[u8], i: usize) -> usize {
    let mut j = i + 1;
    loop {
        match memchr::memchr2(b'"', b'\\', &b[j..]) {
            Some(k) if b[j + k] == b'\\' => j += k + 2,
            Some(k) => return j + k + 1,
            None => return b.len(),
        }
    }
}

/// End (exclusive) of the value starting at `i`, in valid JSON.
fn value_end(b: &[u8], i: usize) -> usize {
    match b.get(i) {
        Some(b'"') => string_end(b, i),
        Some(b'{') | Some(b'[') => {
            let mut depth = 0usize;
            let mut j = i;
            while j < b.len() {
                match b[j] {
                    b'"' => {
                        j = string_end(b, j);
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return j + 1;
                        }
                    }
                    _ => {}
                }
                j += 1;
            }
            b.len()
        }
        _ => {
            let mut j = i;
            while j < b.len() && !matches!(b[j], b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r')
            {
                j += 1;
            }
            j
        }
    }
}

/// The (key, value) spans of a valid JSON text's top-level object; false when it is not an
/// object.
fn object_fields(s: &str, out: &mut Vec<(Range<usize>, Range<usize>)>) -> bool {
    out.clear();
    let b = s.as_bytes();
    let mut i = ws(b, 0);
    if b.get(i) != Some(&b'{') {
        return false;
    }
    i = ws(b, i + 1);
    if b.get(i) == Some(&b'}') {
        return true;
    }
    while i < b.len() {
        let k_end = string_end(b, i);
        let key = i..k_end;
        i = ws(b, k_end);
        i = ws(b, i + 1); // ':'
        let v_end = value_end(b, i);
        out.push((key, i..v_end));
        i = ws(b, v_end);
        if b.get(i) != Some(&b',') {
            break;
        }
        i = ws(b, i + 1);
    }
    true
}

impl<'o> RecordParser<'o> {
    pub(crate) fn new(
        text_field: &'o str,
        id_field: Option<&'o str>,
        forced_source: Option<&'o str>,
        default_source: &'o str,
    ) -> Self {
        RecordParser {
            text_field,
            id_field,
            forced_source,
            default_source,
            fields: Vec::new(),
            meta: String::new(),
            id: String::new(),
        }
    }

    /// Parses one record (trailing newline allowed) into a document or a quarantined row.
    /// Returns false for a blank record (whitespace only), which is not a record at all.
    pub(crate) fn parse(&mut self, raw: &[u8], at: &RecordPlace<'_>, out: &mut Builders) -> bool {
        let trimmed = raw.trim_ascii();
        if trimmed.is_empty() {
            return false;
        }
        let src = self.forced_source.unwrap_or(self.default_source);
        let result = match std::str::from_utf8(trimmed) {
            Ok(s) => self.parse_str(s, trimmed, at, out),
            Err(e) => Err(format!(
                "invalid UTF-8 at byte {} of the record",
                e.valid_up_to()
            )),
        };
        if let Err(msg) = result {
            out.quarantine(
                at.file,
                Some(at.line),
                Some(at.offset),
                &msg,
                Some(trimmed),
                src,
            );
        }
        true
    }

    /// Checks that a UTF-8 record is one JSON object and builds its document; the error is
    /// the quarantine message.
    fn parse_str(
        &mut self,
        s: &str,
        trimmed: &[u8],
        at: &RecordPlace<'_>,
        out: &mut Builders,
    ) -> Result<(), String> {
        serde_json::from_str::<IgnoredAny>(s).map_err(|e| format!("invalid JSON: {e}"))?;
        let mut fields = std::mem::take(&mut self.fields);
        let result = if object_fields(s, &mut fields) {
            self.build(s, &fields, at, out)
        } else {
            Err(format!("expected a JSON object, found {}", kind(trimmed)))
        };
        self.fields = fields;
        result
    }

    fn build(
        &mut self,
        s: &str,
        fields: &[(Range<usize>, Range<usize>)],
        at: &RecordPlace<'_>,
        out: &mut Builders,
    ) -> Result<(), String> {
        let mut text: Option<&str> = None;
        let mut id: Option<&str> = None;
        let mut source: Option<&str> = None;
        self.meta.clear();
        for (k, v) in fields {
            let key_raw = &s[k.clone()];
            let key = decode_str(key_raw).unwrap_or(Cow::Borrowed(""));
            let value = &s[v.clone()];
            if key == self.text_field {
                text = Some(value);
                continue;
            }
            if Some(key.as_ref()) == self.id_field {
                id = Some(value);
                continue;
            }
            if key == "source" {
                source = Some(value);
            }
            self.meta.push(if self.meta.is_empty() { '{' } else { ',' });
            self.meta.push_str(key_raw);
            self.meta.push(':');
            self.meta.push_str(value);
        }
        let tf = self.text_field;
        let text = text.ok_or_else(|| format!("missing text field `{tf}`"))?;
        let text = decode_str(text).ok_or_else(|| {
            format!(
                "text field `{tf}` is {}, expected a string",
                kind(text.as_bytes())
            )
        })?;
        self.id.clear();
        match (self.id_field, id) {
            (Some(f), None) => return Err(format!("missing id field `{f}`")),
            (Some(f), Some(raw)) => match raw.as_bytes()[0] {
                b'"' => self.id.push_str(&decode_str(raw).unwrap_or_default()),
                b'-' | b'0'..=b'9' => self.id.push_str(raw),
                _ => {
                    return Err(format!(
                        "id field `{f}` is {}, expected a string or a number",
                        kind(raw.as_bytes())
                    ))
                }
            },
            (None, _) => {
                let _ = write!(self.id, "{}:{}", at.name, at.ordinal);
            }
        }
        let decoded_source;
        let source = match (self.forced_source, source.and_then(decode_str)) {
            (Some(f), _) => f,
            (None, Some(s)) => {
                decoded_source = s;
                decoded_source.as_ref()
            }
            (None, None) => self.default_source,
        };
        let meta = if self.meta.is_empty() {
            None
        } else {
            self.meta.push('}');
            Some(self.meta.as_str())
        };
        out.doc(&self.id, &text, source, meta);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Array, AsArray};

    fn run(lines: &[&[u8]], id_field: Option<&str>, forced: Option<&str>) -> crate::Chunk {
        let mut p = RecordParser::new("text", id_field, forced, "stem");
        let mut b = Builders::new(8);
        for (i, l) in lines.iter().enumerate() {
            let at = RecordPlace {
                file: "f.jsonl",
                name: "f.jsonl",
                line: i as u64 + 1,
                offset: i as u64 * 100,
                ordinal: i as u64 + 1,
            };
            p.parse(l, &at, &mut b);
        }
        b.finish().unwrap()
    }

    #[test]
    fn documents_keep_text_and_other_fields_in_meta() {
        let c = run(
            &[
                br#"{"text": "plain", "url": "http://x", "n": [1, {"a": "}"}]}"#,
                br#"{"n":1,"text":"esc\"aped\nline \u00e9","source":"web"}"#,
                b"   \r\n",
                br#"{"text":""}"#,
            ],
            None,
            None,
        );
        assert_eq!(c.quarantine.num_rows(), 0);
        let d = &c.docs;
        let col = |n: &str| d.column_by_name(n).unwrap().as_string::<i32>().clone();
        assert_eq!(
            col("text").iter().collect::<Vec<_>>(),
            [Some("plain"), Some("esc\"aped\nline é"), Some("")]
        );
        assert_eq!(
            col("id").iter().collect::<Vec<_>>(),
            [Some("f.jsonl:1"), Some("f.jsonl:2"), Some("f.jsonl:4")]
        );
        assert_eq!(
            col("source").iter().collect::<Vec<_>>(),
            [Some("stem"), Some("web"), Some("stem")]
        );
        let meta = col("meta");
        let m0: serde_json::Value = serde_json::from_str(meta.value(0)).unwrap();
        assert_eq!(
            m0,
            serde_json::json!({"url": "http://x", "n": [1, {"a": "}"}]})
        );
        let m1: serde_json::Value = serde_json::from_str(meta.value(1)).unwrap();
        assert_eq!(m1, serde_json::json!({"n": 1, "source": "web"}));
        assert!(meta.is_null(2));
    }

    #[test]
    fn bad_records_are_quarantined_with_their_place_and_cause() {
        let cases: [(&[u8], &str); 8] = [
            (b"{\"text\": \"a\xffb\"}", "invalid UTF-8 at byte 11"),
            (br#"{"text": "unterminated"#, "invalid JSON"),
            (br#"{"text": "a"} trailing"#, "invalid JSON"),
            (br#"["text"]"#, "expected a JSON object, found an array"),
            (br#"{"body": "x"}"#, "missing text field `text`"),
            (br#"{"text": null}"#, "text field `text` is null"),
            (br#"{"text": 42}"#, "text field `text` is a number"),
            (br#"{"text": {"a": 1}}"#, "text field `text` is an object"),
        ];
        let lines: Vec<&[u8]> = cases.iter().map(|(l, _)| *l).collect();
        let c = run(&lines, None, Some("forced"));
        assert_eq!(c.docs.num_rows(), 0);
        let q = &c.quarantine;
        assert_eq!(q.num_rows(), cases.len());
        let err = q.column_by_name("error").unwrap().as_string::<i32>();
        let line = q
            .column_by_name("line")
            .unwrap()
            .as_primitive::<arrow::datatypes::UInt64Type>();
        let off = q
            .column_by_name("byte_offset")
            .unwrap()
            .as_primitive::<arrow::datatypes::UInt64Type>();
        let raw = q.column_by_name("raw").unwrap().as_string::<i32>();
        for (i, (_, want)) in cases.iter().enumerate() {
            assert!(
                err.value(i).contains(want),
                "case {i}: {} should contain {want}",
                err.value(i)
            );
            assert_eq!(line.value(i), i as u64 + 1);
            assert_eq!(off.value(i), i as u64 * 100);
        }
        assert_eq!(raw.value(4), r#"{"body": "x"}"#);
        assert_eq!(
            q.column_by_name("source")
                .unwrap()
                .as_string::<i32>()
                .value(0),
            "forced"
        );
    }

    #[test]
    fn id_field_takes_strings_and_numbers_and_requires_presence() {
        let c = run(
            &[
                br#"{"id": "a-1", "text": "x"}"#,
                br#"{"id": 17, "text": "y"}"#,
                br#"{"text": "z"}"#,
                br#"{"id": true, "text": "w"}"#,
            ],
            Some("id"),
            None,
        );
        let ids = c.docs.column(0).as_string::<i32>();
        assert_eq!(ids.iter().collect::<Vec<_>>(), [Some("a-1"), Some("17")]);
        assert!(c.docs.column(3).is_null(0), "id and text do not go to meta");
        let err = c
            .quarantine
            .column_by_name("error")
            .unwrap()
            .as_string::<i32>();
        assert!(err.value(0).contains("missing id field `id`"));
        assert!(err.value(1).contains("is a boolean"));
    }

    #[test]
    fn scanner_agrees_with_serde_json_on_tricky_objects() {
        let cases = [
            r#"{}"#,
            r#" { "a" : 1 , "b\"c" : "x\\" , "d" : [ "]" , { } ] , "e" : -1.5e3 , "f" : null } "#,
            r#"{"k":"\u005c\"}","z":true}"#,
        ];
        for s in cases {
            let mut f = Vec::new();
            assert!(object_fields(s, &mut f));
            let want: serde_json::Map<String, serde_json::Value> = serde_json::from_str(s).unwrap();
            assert_eq!(f.len(), want.len(), "{s}");
            for ((k, v), (wk, wv)) in f.iter().zip(want.iter()) {
                assert_eq!(serde_json::from_str::<String>(&s[k.clone()]).unwrap(), *wk);
                assert_eq!(
                    serde_json::from_str::<serde_json::Value>(&s[v.clone()]).unwrap(),
                    *wv
                );
            }
        }
    }
}
