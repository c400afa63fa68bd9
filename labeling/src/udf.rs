//! The labelers and the split function as DataFusion SQL functions, so `quern sql` can
//! label, split and check contamination with the same kernels as the pipeline.
//!
//! | function | returns |
//! |---|---|
//! | `quern_split(key [, seed [, train, val]])` | `'train'`/`'val'`/`'test'` by hash of `key` (defaults: seed 0, 0.8/0.1/0.1), as the `split` stage without stratification; pass `coalesce(dup_cluster, id)` to keep clusters together |
//! | `quern_classify(text, 'model.qcls')` | the most probable label |
//! | `quern_classify_prob(text, 'model.qcls')` | its probability |
//! | `quern_lexicon_score(text, 'list.txt')` | summed entry weight per word, as the `lexicon` stage |
//! | `quern_contaminated(text, 'eval.jsonl' [, n])` | the eval set's name when the text shares an `n`-gram (default 13) with it, else null |
//! | `quern_rule_label(text, '{"labels": [...]}')` | the label the rules give (JSON of the `rules` stage config) |
//!
//! Models, word lists, n-gram indexes and compiled rules are loaded once per distinct
//! argument and cached for the life of the process. File and config arguments must be
//! constants. Rows are processed sequentially: DataFusion already runs one call per
//! partition on every core, so a rayon pool inside a call would only oversubscribe them.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, LazyLock, Mutex};

use arrow::array::{Array, ArrayRef, Float64Array, StringArray};
use arrow::datatypes::DataType;
use datafusion::common::{DataFusionError, Result as DFResult};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, TypeSignature,
    Volatility,
};
use datafusion::prelude::SessionContext;

use crate::classifier::{Model, Scratch};
use crate::decontam::NgramIndex;
use crate::lexicon::{Lexicon, Normalize};
use crate::rules::{RuleSet, RulesConfig};
use crate::split::{assign, Ratios, SPLITS};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Func {
    Split,
    Classify,
    ClassifyProb,
    Lexicon,
    Contaminated,
    RuleLabel,
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct LabelUdf {
    func: Func,
    name: &'static str,
    signature: Signature,
}

fn ext_err(e: quern_core::Error) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}

fn exec_err(msg: String) -> DataFusionError {
    DataFusionError::Execution(msg)
}

/// A constant argument as a string.
fn const_str(f: &str, i: usize, v: &ColumnarValue) -> DFResult<String> {
    match v {
        ColumnarValue::Scalar(s) => {
            let arr = arrow::compute::cast(&s.to_array()?, &DataType::Utf8)?;
            let arr = arr
                .as_any()
                .downcast_ref::<StringArray>()
                .ok_or_else(|| exec_err("cast to Utf8 failed".into()))?;
            if arr.is_null(0) {
                return Err(exec_err(format!(
                    "{f}: argument {} must not be null",
                    i + 1
                )));
            }
            Ok(arr.value(0).to_string())
        }
        ColumnarValue::Array(_) => Err(exec_err(format!(
            "{f}: argument {} must be a constant, not a column",
            i + 1
        ))),
    }
}

fn const_f64(f: &str, i: usize, v: &ColumnarValue) -> DFResult<f64> {
    let s = const_str(f, i, v)?;
    s.parse().map_err(|_| {
        exec_err(format!(
            "{f}: argument {} must be a number, got `{s}`",
            i + 1
        ))
    })
}

/// A column argument as Utf8 (cast from Utf8View, LargeUtf8, numbers, ...).
fn text_arg(v: &ColumnarValue, rows: usize) -> DFResult<StringArray> {
    let arr = v.to_array(rows)?;
    let arr = arrow::compute::cast(&arr, &DataType::Utf8)?;
    Ok(arr
        .as_any()
        .downcast_ref::<StringArray>()
        .ok_or_else(|| exec_err("cast to Utf8 failed".into()))?
        .clone())
}

fn cached<T>(
    cache: &LazyLock<Mutex<HashMap<String, Arc<T>>>>,
    key: &str,
    load: impl FnOnce() -> quern_core::Result<T>,
) -> DFResult<Arc<T>> {
    if let Some(v) = cache
        .lock()
        .map_err(|_| exec_err("cache lock poisoned".into()))?
        .get(key)
    {
        return Ok(v.clone());
    }
    let v = Arc::new(load().map_err(ext_err)?);
    cache
        .lock()
        .map_err(|_| exec_err("cache lock poisoned".into()))?
        .insert(key.to_string(), v.clone());
    Ok(v)
}

type Cache<T> = LazyLock<Mutex<HashMap<String, Arc<T>>>>;
static MODELS: Cache<Model> = LazyLock::new(Default::default);
static LEXICONS: Cache<Lexicon> = LazyLock::new(Default::default);
static INDEXES: Cache<NgramIndex> = LazyLock::new(Default::default);
static RULES: Cache<RuleSet> = LazyLock::new(Default::default);

impl ScalarUDFImpl for LabelUdf {
    fn name(&self) -> &str {
        self.name
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _args: &[DataType]) -> DFResult<DataType> {
        Ok(match self.func {
            Func::ClassifyProb | Func::Lexicon => DataType::Float64,
            _ => DataType::Utf8,
        })
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DFResult<ColumnarValue> {
        let rows = args.number_rows;
        let a = &args.args;
        let f = self.name;
        let text = text_arg(&a[0], rows)?;
        let out: ArrayRef = match self.func {
            Func::Split => {
                let seed = if a.len() > 1 {
                    const_f64(f, 1, &a[1])? as u64
                } else {
                    0
                };
                let (train, val) = if a.len() > 3 {
                    (const_f64(f, 2, &a[2])?, const_f64(f, 3, &a[3])?)
                } else {
                    (0.8, 0.1)
                };
                let ratios = Ratios::new(train, val, 1.0 - train - val, f).map_err(ext_err)?;
                Arc::new(
                    text.iter()
                        .map(|k| k.map(|k| SPLITS[assign(k, seed, ratios)]))
                        .collect::<StringArray>(),
                )
            }
            Func::Classify | Func::ClassifyProb => {
                let path = const_str(f, 1, &a[1])?;
                let model = cached(&MODELS, &path, || Model::load(Path::new(&path)))?;
                let mut s = Scratch::default();
                let preds: Vec<Option<(usize, f32)>> = (0..rows)
                    .map(|i| (!text.is_null(i)).then(|| model.predict(text.value(i), &mut s)))
                    .collect();
                if self.func == Func::Classify {
                    Arc::new(
                        preds
                            .iter()
                            .map(|p| p.map(|(l, _)| model.labels()[l].as_str()))
                            .collect::<StringArray>(),
                    )
                } else {
                    Arc::new(
                        preds
                            .iter()
                            .map(|p| p.map(|(_, p)| p as f64))
                            .collect::<Float64Array>(),
                    )
                }
            }
            Func::Lexicon => {
                let path = const_str(f, 1, &a[1])?;
                let lex = cached(&LEXICONS, &path, || Lexicon::load(Path::new(&path)))?;
                Arc::new(
                    text.iter()
                        .map(|t| t.map(|t| lex.score(t, Normalize::PerWord)))
                        .collect::<Float64Array>(),
                )
            }
            Func::Contaminated => {
                let path = const_str(f, 1, &a[1])?;
                let n = if a.len() > 2 {
                    const_f64(f, 2, &a[2])? as usize
                } else {
                    13
                };
                let idx = cached(&INDEXES, &format!("{n}\t{path}"), || {
                    let mut idx = NgramIndex::new(n)?;
                    idx.add_file(&crate::decontam::EvalSet {
                        path: path.clone().into(),
                        name: None,
                        fields: vec!["text".into()],
                    })?;
                    Ok(idx)
                })?;
                let (mut b, mut r) = (String::new(), Vec::new());
                let found: Vec<Option<String>> = (0..rows)
                    .map(|i| {
                        if text.is_null(i) {
                            None
                        } else {
                            idx.check(text.value(i), 1, &mut b, &mut r).map(|m| m.set)
                        }
                    })
                    .collect();
                Arc::new(found.into_iter().collect::<StringArray>())
            }
            Func::RuleLabel => {
                let json = const_str(f, 1, &a[1])?;
                let rules = cached(&RULES, &json, || {
                    let cfg: RulesConfig = serde_json::from_str(&json).map_err(|e| {
                        quern_core::Error::bad_config("quern_rule_label(rules)", e.to_string())
                    })?;
                    RuleSet::new(&cfg, "quern_rule_label(rules)")
                })?;
                Arc::new(
                    text.iter()
                        .map(|t| t.and_then(|t| rules.label(t)))
                        .collect::<StringArray>(),
                )
            }
        };
        Ok(ColumnarValue::Array(out))
    }
}

fn udf(func: Func, name: &'static str, arities: &[usize]) -> ScalarUDF {
    let sigs = arities.iter().map(|&n| TypeSignature::Any(n)).collect();
    ScalarUDF::from(LabelUdf {
        func,
        name,
        signature: Signature::one_of(sigs, Volatility::Immutable),
    })
}

/// Every SQL function of this crate.
pub fn udfs() -> Vec<ScalarUDF> {
    vec![
        udf(Func::Split, "quern_split", &[1, 2, 4]),
        udf(Func::Classify, "quern_classify", &[2]),
        udf(Func::ClassifyProb, "quern_classify_prob", &[2]),
        udf(Func::Lexicon, "quern_lexicon_score", &[2]),
        udf(Func::Contaminated, "quern_contaminated", &[2, 3]),
        udf(Func::RuleLabel, "quern_rule_label", &[2]),
    ]
}

/// Registers this crate's SQL functions on a DataFusion session.
pub fn register_udfs(ctx: &SessionContext) {
    for u in udfs() {
        ctx.register_udf(u);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::RecordBatch;
    use arrow::datatypes::{Field, Schema};

    async fn query(sql: &str) -> Vec<RecordBatch> {
        let ctx = SessionContext::new();
        register_udfs(&ctx);
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Utf8, false),
            Field::new("text", DataType::Utf8, false),
        ]));
        let batch = RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from(vec!["a", "b", "c"])),
                Arc::new(StringArray::from(vec![
                    "a loan at a low interest rate",
                    "the match ended with a goal",
                    "nothing",
                ])),
            ],
        )
        .unwrap();
        ctx.register_batch("docs", batch).unwrap();
        ctx.sql(sql).await.unwrap().collect().await.unwrap()
    }

    fn strings(batches: &[RecordBatch], col: usize) -> Vec<Option<String>> {
        batches
            .iter()
            .flat_map(|b| {
                let a = b
                    .column(col)
                    .as_any()
                    .downcast_ref::<StringArray>()
                    .unwrap()
                    .clone();
                (0..a.len())
                    .map(move |i| (!a.is_null(i)).then(|| a.value(i).to_string()))
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    #[test]
    fn split_and_rules_in_sql() {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let out = rt.block_on(query(
            "SELECT quern_split(id), quern_split(id, 3, 0.5, 0.25) FROM docs ORDER BY id",
        ));
        let r = Ratios::new(0.8, 0.1, 0.1, "k").unwrap();
        let want: Vec<Option<String>> = ["a", "b", "c"]
            .iter()
            .map(|k| Some(SPLITS[assign(k, 0, r)].to_string()))
            .collect();
        assert_eq!(strings(&out, 0), want);
        let r = Ratios::new(0.5, 0.25, 0.25, "k").unwrap();
        let want: Vec<Option<String>> = ["a", "b", "c"]
            .iter()
            .map(|k| Some(SPLITS[assign(k, 3, r)].to_string()))
            .collect();
        assert_eq!(strings(&out, 1), want);
        let rules = r#"{"labels":[{"name":"finance","keywords":["loan"]},{"name":"sport","keywords":["goal"]}]}"#;
        let out = rt.block_on(query(&format!(
            "SELECT quern_rule_label(text, '{rules}') FROM docs ORDER BY id"
        )));
        assert_eq!(
            strings(&out, 0),
            vec![Some("finance".into()), Some("sport".into()), None]
        );
    }
}
