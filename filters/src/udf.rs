//! The filters as SQL functions, so `quern sql` can apply or inspect them after the fact.
//!
//! Each function takes a text column and runs the same kernel the pipeline stage runs, with
//! the default configuration: `gopher_quality(text)`, `gopher_repetition(text)`,
//! `c4_quality(text)` and `fineweb_quality(text)` return the rejection reason (NULL when
//! the document passes); `c4_clean(text)` the C4-rewritten text (NULL when rejected);
//! `spacy_word_count(text)` the number of words as datatrove counts them (spaCy's English
//! tokenizer; `quern sql`'s own `word_count` counts whitespace-separated words); `detect_lang(text)` and
//! `lang_score(text)` the language and its confidence; `pii_redact(text)` the redacted
//! text and `pii_count(text)` the number of redactions; `normalize_text(text)` the
//! normalized text.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, Float64Array, Int64Array, StringArray, UInt32Array};
use arrow::compute::cast;
use arrow::datatypes::DataType;
use datafusion::common::DataFusionError;
use datafusion::logical_expr::{create_udf, ColumnarValue, Volatility};
use datafusion::prelude::SessionContext;
use rayon::prelude::*;

use crate::c4::{C4Config, C4};
use crate::fineweb::{FineWeb, FineWebConfig};
use crate::gopher_quality::{GopherQuality, GopherQualityConfig};
use crate::gopher_repetition::{GopherRepetition, GopherRepetitionConfig};
use crate::kernel::{run_kernel, DocKernel};
use crate::normalize::{Normalize, NormalizeConfig};
use crate::pii::{Pii, PiiConfig};
use crate::words::WordTokenizer;

type ArrayFn = dyn Fn(&StringArray) -> ArrayRef + Send + Sync;

fn register(ctx: &SessionContext, name: &str, ret: DataType, f: Arc<ArrayFn>) {
    let fun = Arc::new(
        move |args: &[ColumnarValue]| -> datafusion::common::Result<ColumnarValue> {
            let [arg] = args else {
                return Err(DataFusionError::Plan("expects one text argument".into()));
            };
            let scalar = matches!(arg, ColumnarValue::Scalar(_));
            let arr = arg.clone().into_array(1)?;
            let arr = cast(&arr, &DataType::Utf8)?;
            let texts = arr.as_any().downcast_ref::<StringArray>().ok_or_else(|| {
                DataFusionError::Internal("text argument did not cast to Utf8".into())
            })?;
            let out = f(texts);
            if scalar {
                Ok(ColumnarValue::Scalar(
                    datafusion::common::ScalarValue::try_from_array(&out, 0)?,
                ))
            } else {
                Ok(ColumnarValue::Array(out))
            }
        },
    );
    ctx.register_udf(create_udf(
        name,
        vec![DataType::Utf8],
        ret,
        Volatility::Immutable,
        fun,
    ));
}

fn reason_fn<K: DocKernel + 'static>(k: K) -> Arc<ArrayFn> {
    Arc::new(move |texts: &StringArray| {
        let (outcomes, _) = run_kernel(&k, texts);
        let arr: StringArray = outcomes.iter().map(|o| o.reason.as_deref()).collect();
        Arc::new(arr) as ArrayRef
    })
}

fn text_fn<K: DocKernel + 'static>(k: K) -> Arc<ArrayFn> {
    Arc::new(move |texts: &StringArray| {
        let (outcomes, _) = run_kernel(&k, texts);
        let arr: StringArray = outcomes
            .iter()
            .enumerate()
            .map(|(i, o)| match (&o.reason, &o.text) {
                (Some(_), _) => None,
                (None, Some(t)) => Some(t.as_str()),
                (None, None) => (!texts.is_null(i)).then(|| texts.value(i)),
            })
            .collect();
        Arc::new(arr) as ArrayRef
    })
}

/// Registers the filters' SQL functions on a session.
pub fn register_udfs(ctx: &SessionContext) {
    register(
        ctx,
        "gopher_quality",
        DataType::Utf8,
        reason_fn(GopherQuality::new(GopherQualityConfig::default())),
    );
    register(
        ctx,
        "gopher_repetition",
        DataType::Utf8,
        reason_fn(GopherRepetition::new(GopherRepetitionConfig::default())),
    );
    register(
        ctx,
        "c4_quality",
        DataType::Utf8,
        reason_fn(C4::new(C4Config {
            rewrite: false,
            ..Default::default()
        })),
    );
    register(
        ctx,
        "fineweb_quality",
        DataType::Utf8,
        reason_fn(FineWeb::new(FineWebConfig::default())),
    );
    register(
        ctx,
        "c4_clean",
        DataType::Utf8,
        text_fn(C4::new(C4Config::default())),
    );
    register(
        ctx,
        "normalize_text",
        DataType::Utf8,
        text_fn(Normalize {
            cfg: NormalizeConfig::default(),
        }),
    );
    register(
        ctx,
        "pii_redact",
        DataType::Utf8,
        text_fn(Pii::new(PiiConfig::default())),
    );
    let pii = Pii::new(PiiConfig::default());
    register(
        ctx,
        "pii_count",
        DataType::UInt32,
        Arc::new(move |t: &StringArray| {
            let v: Vec<Option<u32>> = (0..t.len())
                .into_par_iter()
                .map(|i| (!t.is_null(i)).then(|| pii.redact(t.value(i)).1))
                .collect();
            Arc::new(UInt32Array::from(v)) as ArrayRef
        }),
    );
    register(
        ctx,
        "spacy_word_count",
        DataType::Int64,
        Arc::new(|t: &StringArray| {
            let v: Vec<Option<i64>> = (0..t.len())
                .into_par_iter()
                .map_init(Vec::new, |buf: &mut Vec<&str>, i| {
                    if t.is_null(i) {
                        return None;
                    }
                    buf.clear();
                    WordTokenizer::get().words(t.value(i), buf);
                    let n = buf.len() as i64;
                    buf.clear();
                    Some(n)
                })
                .collect();
            Arc::new(Int64Array::from(v)) as ArrayRef
        }),
    );
    register(
        ctx,
        "detect_lang",
        DataType::Utf8,
        Arc::new(|t: &StringArray| {
            let v: Vec<Option<&str>> = (0..t.len())
                .into_par_iter()
                .map(|i| {
                    if t.is_null(i) {
                        None
                    } else {
                        crate::lang::detect(t.value(i), 2000).map(|x| x.0)
                    }
                })
                .collect();
            Arc::new(StringArray::from(v)) as ArrayRef
        }),
    );
    register(
        ctx,
        "lang_score",
        DataType::Float64,
        Arc::new(|t: &StringArray| {
            let v: Vec<Option<f64>> = (0..t.len())
                .into_par_iter()
                .map(|i| {
                    if t.is_null(i) {
                        None
                    } else {
                        crate::lang::detect(t.value(i), 2000).map(|x| x.1)
                    }
                })
                .collect();
            Arc::new(Float64Array::from(v)) as ArrayRef
        }),
    );
}
