//! quern's own SQL functions over text: `word_count`, `char_count`, `xxh3`, `xxh3_hex`.
//!
//! They exist because the questions people ask of a corpus first ("how long are the documents
//! of each source?", "which texts are exact duplicates?") need them, and DataFusion has no
//! word count nor a fast 64-bit content hash. Each is a vectorised [`ScalarUDFImpl`]: it reads
//! the strings in place from the Arrow buffers (no per-row `String`), writes one primitive
//! buffer, and passes the input's null buffer through unchanged, so a null text gives a null
//! result. Parallelism comes from DataFusion's partitions (one batch per partition at a time,
//! `target_partitions` = cores): a rayon pool inside each call would only oversubscribe the
//! cores DataFusion already keeps busy.
//!
//! | function | returns | definition |
//! |---|---|---|
//! | `word_count(text)` | `Int64` | maximal runs of non-whitespace characters, whitespace being Unicode `White_Space` (the same as Rust's `str::split_whitespace().count()`) |
//! | `char_count(text)` | `Int64` | Unicode scalar values (code points), the same as `length(text)` |
//! | `xxh3(text)` | `UInt64` | xxh3-64 (seed 0) of the UTF-8 bytes: group or join on it to find exact duplicates |
//! | `xxh3_hex(text)` | `Utf8` | the same hash as 16 lowercase hex digits, as the manifest writes checksums |
//!
//! Each accepts `Utf8`, `LargeUtf8` and `Utf8View` (DataFusion reads Parquet strings as views).
//! The per-string kernels are public, so the pipeline and the benches use the very same code.

use std::fmt::Write as _;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, PrimitiveArray, StringBuilder};
use arrow::datatypes::{ArrowPrimitiveType, DataType, Int64Type, UInt64Type};
use datafusion::common::{exec_err, Result, ScalarValue};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use datafusion::prelude::SessionContext;

/// ASCII bytes that are Unicode `White_Space`: `\t \n \x0b \x0c \r` and space.
const ASCII_WS: [bool; 128] = {
    let mut t = [false; 128];
    t[b'\t' as usize] = true;
    t[b'\n' as usize] = true;
    t[0x0b] = true;
    t[0x0c] = true;
    t[b'\r' as usize] = true;
    t[b' ' as usize] = true;
    t
};

/// Words in `s`: maximal runs of non-whitespace characters (Unicode `White_Space`).
///
/// Equal to `s.split_whitespace().count()`, but scans ASCII bytes through a table without
/// decoding them, and decodes a character only at a non-ASCII byte.
pub fn word_count(s: &str) -> u64 {
    let b = s.as_bytes();
    let mut n = 0u64;
    let mut in_word = false;
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let ws = if c < 0x80 {
            i += 1;
            ASCII_WS[c as usize]
        } else {
            // `s` is valid UTF-8 and `i` is on a char boundary, so a char starts here.
            let ch = s[i..].chars().next().expect("char at a boundary");
            i += ch.len_utf8();
            ch.is_whitespace()
        };
        n += (!ws & !in_word) as u64;
        in_word = !ws;
    }
    n
}

/// Unicode scalar values in `s`: the bytes that do not continue a UTF-8 sequence.
pub fn char_count(s: &str) -> u64 {
    // Continuation bytes are 0b10xx_xxxx, i.e. -64..-1 as i8; this loop auto-vectorises.
    s.as_bytes()
        .iter()
        .map(|&b| ((b as i8) >= -0x40) as u64)
        .sum()
}

/// xxh3-64 (seed 0) of the UTF-8 bytes of `s`.
pub fn xxh3(s: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64(s.as_bytes())
}

/// Applies `f` to every string of a `Utf8`, `LargeUtf8` or `Utf8View` array, keeping its nulls.
///
/// Null slots are computed too (over whatever bytes they hold, usually none) and then masked
/// by the input's null buffer: a branch-free loop, and a null buffer shared, not rebuilt.
pub fn map_strings<T: ArrowPrimitiveType>(
    array: &ArrayRef,
    name: &str,
    f: impl Fn(&str) -> T::Native,
) -> Result<PrimitiveArray<T>> {
    let values: Vec<T::Native> = match array.data_type() {
        DataType::Utf8 => {
            let a = array.as_string::<i32>();
            (0..a.len()).map(|i| f(a.value(i))).collect()
        }
        DataType::LargeUtf8 => {
            let a = array.as_string::<i64>();
            (0..a.len()).map(|i| f(a.value(i))).collect()
        }
        DataType::Utf8View => {
            let a = array.as_string_view();
            (0..a.len()).map(|i| f(a.value(i))).collect()
        }
        other => return exec_err!("{name}() takes a string, got {other}"),
    };
    Ok(PrimitiveArray::<T>::new(
        values.into(),
        array.logical_nulls(),
    ))
}

/// The hex form of [`xxh3`] for every string of an array, keeping its nulls.
fn xxh3_hex_array(array: &ArrayRef) -> Result<ArrayRef> {
    let hashes = map_strings::<UInt64Type>(array, "xxh3_hex", xxh3)?;
    let mut out = StringBuilder::with_capacity(hashes.len(), hashes.len() * 16);
    for h in hashes.iter() {
        match h {
            Some(h) => {
                write!(out, "{h:016x}").expect("writing to a string builder cannot fail");
                out.append_value("");
            }
            None => out.append_null(),
        }
    }
    Ok(Arc::new(out.finish()))
}

/// Which of the built-in text functions a [`TextUdf`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    WordCount,
    CharCount,
    Xxh3,
    Xxh3Hex,
}

/// One of quern's text functions as a DataFusion scalar UDF.
#[derive(Debug, PartialEq, Eq, Hash)]
struct TextUdf {
    kind: Kind,
    name: &'static str,
    signature: Signature,
}

impl TextUdf {
    fn new(kind: Kind, name: &'static str) -> Self {
        let strings = vec![DataType::Utf8View, DataType::Utf8, DataType::LargeUtf8];
        TextUdf {
            kind,
            name,
            signature: Signature::uniform(1, strings, Volatility::Immutable),
        }
    }

    fn eval(&self, array: &ArrayRef) -> Result<ArrayRef> {
        Ok(match self.kind {
            Kind::WordCount => Arc::new(map_strings::<Int64Type>(array, self.name, |s| {
                word_count(s) as i64
            })?),
            Kind::CharCount => Arc::new(map_strings::<Int64Type>(array, self.name, |s| {
                char_count(s) as i64
            })?),
            Kind::Xxh3 => Arc::new(map_strings::<UInt64Type>(array, self.name, xxh3)?),
            Kind::Xxh3Hex => xxh3_hex_array(array)?,
        })
    }
}

impl ScalarUDFImpl for TextUdf {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(match self.kind {
            Kind::WordCount | Kind::CharCount => DataType::Int64,
            Kind::Xxh3 => DataType::UInt64,
            Kind::Xxh3Hex => DataType::Utf8,
        })
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let [arg] = args.args.as_slice() else {
            return exec_err!(
                "{}() takes exactly one argument, got {}",
                self.name,
                args.args.len()
            );
        };
        match arg {
            ColumnarValue::Array(a) => Ok(ColumnarValue::Array(self.eval(a)?)),
            ColumnarValue::Scalar(s) => {
                // A literal: evaluate it once, as a one-row array.
                let out = self.eval(&s.to_array_of_size(1)?)?;
                Ok(ColumnarValue::Scalar(ScalarValue::try_from_array(&out, 0)?))
            }
        }
    }
}

/// Names and one-line descriptions of the built-in functions, for `.help` and the docs.
pub const FUNCTIONS: [(&str, &str); 4] = [
    (
        "word_count(text)",
        "Int64: whitespace-separated words (Unicode White_Space)",
    ),
    ("char_count(text)", "Int64: Unicode code points"),
    ("xxh3(text)", "UInt64: xxh3-64 (seed 0) of the UTF-8 bytes"),
    ("xxh3_hex(text)", "Utf8: the same hash as 16 hex digits"),
];

/// The built-in text functions as DataFusion UDFs.
pub fn udfs() -> Vec<ScalarUDF> {
    [
        (Kind::WordCount, "word_count"),
        (Kind::CharCount, "char_count"),
        (Kind::Xxh3, "xxh3"),
        (Kind::Xxh3Hex, "xxh3_hex"),
    ]
    .into_iter()
    .map(|(k, n)| ScalarUDF::from(TextUdf::new(k, n)))
    .collect()
}

/// Registers the built-in text functions on a session.
pub fn register(ctx: &SessionContext) {
    for f in udfs() {
        ctx.register_udf(f);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{LargeStringArray, StringArray, StringViewArray};

    #[test]
    fn kernels_match_the_naive_definitions() {
        let cases = [
            "",
            " ",
            "one",
            "  two words  ",
            "tabs\tand\nnew\r\nlines",
            "vertical\x0btab and form\x0cfeed",
            "no\u{a0}break\u{3000}ideographic\u{2029}para",
            "zero\u{200b}width is not white space",
            "accents: café naïve Ωμέγα",
            "emoji 🦀🦀 and 漢字かな交じり文",
            "\u{85}next-line\u{85}",
        ];
        for s in cases {
            assert_eq!(
                word_count(s),
                s.split_whitespace().count() as u64,
                "word_count({s:?})"
            );
            assert_eq!(char_count(s), s.chars().count() as u64, "char_count({s:?})");
        }
        assert_eq!(word_count("  two words  "), 2);
        assert_eq!(char_count("🦀é"), 2);
        // xxh3 of the empty input is a published constant of the algorithm.
        assert_eq!(xxh3(""), 0x2d06800538d394c2);
    }

    #[test]
    fn every_string_layout_gives_the_same_result_and_keeps_nulls() {
        let data = [Some("a b  c"), None, Some("é 漢字"), Some("")];
        let arrays: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from(data.to_vec())),
            Arc::new(LargeStringArray::from(data.to_vec())),
            Arc::new(StringViewArray::from(data.to_vec())),
        ];
        for a in &arrays {
            let wc = TextUdf::new(Kind::WordCount, "word_count").eval(a).unwrap();
            let wc = wc.as_primitive::<Int64Type>();
            assert_eq!(
                wc.iter().collect::<Vec<_>>(),
                vec![Some(3), None, Some(2), Some(0)],
                "{}",
                a.data_type()
            );
            let cc = TextUdf::new(Kind::CharCount, "char_count").eval(a).unwrap();
            assert_eq!(
                cc.as_primitive::<Int64Type>().iter().collect::<Vec<_>>(),
                vec![Some(6), None, Some(4), Some(0)]
            );
            let hx = TextUdf::new(Kind::Xxh3Hex, "xxh3_hex").eval(a).unwrap();
            let hx = hx.as_string::<i32>();
            assert!(hx.is_null(1));
            assert_eq!(hx.value(3), "2d06800538d394c2");
            assert_eq!(hx.value(0), format!("{:016x}", xxh3("a b  c")));
        }
    }

    #[test]
    fn a_non_string_argument_is_refused_by_name() {
        let a: ArrayRef = Arc::new(arrow::array::Int32Array::from(vec![1]));
        let e = TextUdf::new(Kind::WordCount, "word_count")
            .eval(&a)
            .unwrap_err();
        assert!(e.to_string().contains("word_count() takes a string"), "{e}");
    }
}
