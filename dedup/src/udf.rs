//! SQL functions over the same kernels the stages use.
//!
//! Why: `quern sql` answers questions about a corpus with the exact code that deduplicated
//! it, so a user can check a pair the pipeline joined (or did not) by hand:
//!
//! - `minhash(text) -> List<UInt32>`: the signature with the default (datatrove) parameters;
//!   NULL when the text has fewer than 5 words.
//! - `shingles(text) -> List<UInt64>`: the sorted, distinct hashed 5-word shingles.
//! - `jaccard(a, b) -> Float64`: exact Jaccard of the two texts' 5-word shingle sets.
//! - `minhash_jaccard(sig_a, sig_b) -> Float64`: estimated Jaccard of two signatures.
//!
//! ```sql
//! SELECT a.id, b.id, jaccard(a.text, b.text) FROM docs a JOIN docs b ON a.dup_cluster = b.id;
//! ```

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, Float64Builder, ListArray, ListBuilder, StringArray, UInt32Array,
    UInt32Builder, UInt64Builder,
};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field};
use datafusion::error::DataFusionError;
use datafusion::logical_expr::{create_udf, ColumnarValue, Volatility};
use datafusion::prelude::SessionContext;

use crate::minhash::{estimated_jaccard, MinHashParams, MinHasher, Scratch};
use crate::normalize::normalize;
use crate::shingle::{jaccard_sorted, shingle_set};

fn strings(a: &ArrayRef, f: &str) -> datafusion::error::Result<StringArray> {
    let c = cast(a, &DataType::Utf8)?;
    c.as_any()
        .downcast_ref::<StringArray>()
        .cloned()
        .ok_or_else(|| DataFusionError::Execution(format!("{f}: expected a text argument")))
}

fn default_set(text: &str, p: &MinHashParams) -> Vec<u64> {
    let norm = normalize(text, &p.normalize);
    shingle_set(
        &norm,
        p.shingle,
        p.ngram,
        p.seed,
        p.normalize.norm_whitespace,
    )
}

fn list_u32() -> DataType {
    DataType::List(Arc::new(Field::new("item", DataType::UInt32, true)))
}

fn list_u64() -> DataType {
    DataType::List(Arc::new(Field::new("item", DataType::UInt64, true)))
}

/// Registers `minhash`, `shingles`, `jaccard` and `minhash_jaccard` on `ctx`.
pub fn register_udfs(ctx: &SessionContext) {
    let h = Arc::new(MinHasher::new(MinHashParams::default()));
    ctx.register_udf(create_udf(
        "minhash",
        vec![DataType::Utf8],
        list_u32(),
        Volatility::Immutable,
        Arc::new(
            move |args: &[ColumnarValue]| -> datafusion::error::Result<ColumnarValue> {
                let arrays = ColumnarValue::values_to_arrays(args)?;
                let text = strings(&arrays[0], "minhash")?;
                let mut b = ListBuilder::new(UInt32Builder::new());
                let mut scratch = Scratch::default();
                for t in text.iter() {
                    match t.and_then(|t| h.signature(t, &mut scratch)) {
                        Some(sig) => {
                            b.values().append_slice(&sig);
                            b.append(true);
                        }
                        None => b.append(false),
                    }
                }
                Ok(ColumnarValue::Array(Arc::new(b.finish())))
            },
        ),
    ));
    ctx.register_udf(create_udf(
        "shingles",
        vec![DataType::Utf8],
        list_u64(),
        Volatility::Immutable,
        Arc::new(
            move |args: &[ColumnarValue]| -> datafusion::error::Result<ColumnarValue> {
                let arrays = ColumnarValue::values_to_arrays(args)?;
                let text = strings(&arrays[0], "shingles")?;
                let p = MinHashParams::default();
                let mut b = ListBuilder::new(UInt64Builder::new());
                for t in text.iter() {
                    match t {
                        Some(t) => {
                            b.values().append_slice(&default_set(t, &p));
                            b.append(true);
                        }
                        None => b.append(false),
                    }
                }
                Ok(ColumnarValue::Array(Arc::new(b.finish())))
            },
        ),
    ));
    ctx.register_udf(create_udf(
        "jaccard",
        vec![DataType::Utf8, DataType::Utf8],
        DataType::Float64,
        Volatility::Immutable,
        Arc::new(
            move |args: &[ColumnarValue]| -> datafusion::error::Result<ColumnarValue> {
                let arrays = ColumnarValue::values_to_arrays(args)?;
                let (a, b) = (
                    strings(&arrays[0], "jaccard")?,
                    strings(&arrays[1], "jaccard")?,
                );
                let p = MinHashParams::default();
                let mut out = Float64Builder::with_capacity(a.len());
                for (x, y) in a.iter().zip(b.iter()) {
                    match (x, y) {
                        (Some(x), Some(y)) => out
                            .append_value(jaccard_sorted(&default_set(x, &p), &default_set(y, &p))),
                        _ => out.append_null(),
                    }
                }
                Ok(ColumnarValue::Array(Arc::new(out.finish())))
            },
        ),
    ));
    ctx.register_udf(create_udf(
        "minhash_jaccard",
        vec![list_u32(), list_u32()],
        DataType::Float64,
        Volatility::Immutable,
        Arc::new(
            move |args: &[ColumnarValue]| -> datafusion::error::Result<ColumnarValue> {
                let arrays = ColumnarValue::values_to_arrays(args)?;
                let lists = |a: &ArrayRef| {
                    a.as_any()
                        .downcast_ref::<ListArray>()
                        .cloned()
                        .ok_or_else(|| {
                            DataFusionError::Execution(
                                "minhash_jaccard: expected two minhash() signatures".into(),
                            )
                        })
                };
                let (a, b) = (lists(&arrays[0])?, lists(&arrays[1])?);
                let mut out = Float64Builder::with_capacity(a.len());
                for i in 0..a.len() {
                    if a.is_null(i) || b.is_null(i) {
                        out.append_null();
                        continue;
                    }
                    let (x, y) = (a.value(i), b.value(i));
                    let (x, y) = (
                        x.as_any().downcast_ref::<UInt32Array>(),
                        y.as_any().downcast_ref::<UInt32Array>(),
                    );
                    match (x, y) {
                        (Some(x), Some(y)) => {
                            out.append_value(estimated_jaccard(x.values(), y.values()))
                        }
                        _ => {
                            return Err(DataFusionError::Execution(
                                "minhash_jaccard: expected List<UInt32> signatures".into(),
                            ))
                        }
                    }
                }
                Ok(ColumnarValue::Array(Arc::new(out.finish())))
            },
        ),
    ));
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::Float64Array;

    #[tokio::test]
    async fn sql_functions_agree_with_the_kernels() {
        let ctx = SessionContext::new();
        register_udfs(&ctx);
        let a = "the quick brown fox jumps over the lazy dog and runs far away";
        let b = "the quick brown fox jumps over the lazy cat and runs far away";
        let q = format!(
            "SELECT jaccard('{a}', '{b}') AS j, minhash_jaccard(minhash('{a}'), minhash('{b}')) AS e, \
             cardinality(shingles('{a}')) AS n, minhash('too short') IS NULL AS short"
        );
        let batches = ctx.sql(&q).await.unwrap().collect().await.unwrap();
        let r = &batches[0];
        let j = r
            .column(0)
            .as_any()
            .downcast_ref::<Float64Array>()
            .unwrap()
            .value(0);
        let p = MinHashParams::default();
        let want = jaccard_sorted(&default_set(a, &p), &default_set(b, &p));
        assert!((j - want).abs() < 1e-12);
        // 9 five-grams each; "lazy dog/cat" touches 5 of them: 4 shared of 14 distinct.
        assert!((j - 4.0 / 14.0).abs() < 1e-12, "{j}");
        let e = r
            .column(1)
            .as_any()
            .downcast_ref::<Float64Array>()
            .unwrap()
            .value(0);
        assert!(e < 0.6, "estimate {e}");
        let n = cast(r.column(2), &DataType::Int64).unwrap();
        assert_eq!(
            n.as_any()
                .downcast_ref::<arrow::array::Int64Array>()
                .unwrap()
                .value(0),
            9
        );
        let short = r
            .column(3)
            .as_any()
            .downcast_ref::<arrow::array::BooleanArray>()
            .unwrap()
            .value(0);
        assert!(short);
    }
}
