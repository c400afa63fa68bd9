//! The filter stages over the real-text fixture, through the registry and as SQL functions:
//! every document is kept or rejected with a reason, signals land in Float64 columns, and
//! the SQL functions agree with the stages.

use std::sync::Arc;

use arrow::array::{Array, Float64Array, RecordBatch, StringArray, UInt32Array};
use arrow::datatypes::{DataType, Field, Schema};
use quern_core::stage::{apply_sequence, BatchCtx, Stage, StageSpec};
use serde_json::{json, Value};

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/corpus/mixed.jsonl");

fn fixture_batch() -> RecordBatch {
    let raw = std::fs::read_to_string(FIXTURE).unwrap();
    let (mut ids, mut texts) = (Vec::new(), Vec::new());
    for line in raw.lines() {
        let Ok(v) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        if let (Some(id), Some(text)) = (v["id"].as_str(), v["text"].as_str()) {
            ids.push(id.to_string());
            texts.push(text.to_string());
        }
    }
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Utf8, false),
        Field::new("text", DataType::Utf8, false),
    ]));
    RecordBatch::try_new(
        schema,
        vec![
            Arc::new(StringArray::from(ids)),
            Arc::new(StringArray::from(texts)),
        ],
    )
    .unwrap()
}

fn stage(type_name: &str, params: Value) -> Box<dyn Stage> {
    let reg = quern::stages::registry();
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

#[test]
fn every_document_is_kept_or_rejected_with_a_reason() {
    let batch = fixture_batch();
    let n = batch.num_rows();
    assert!(n > 400, "fixture has {n} documents");
    let stages: Vec<Box<dyn Stage>> = vec![
        stage("normalize", json!({})),
        stage("language", json!({})),
        stage("pii", json!({})),
        stage("gopher_quality", json!({})),
        stage("gopher_repetition", json!({})),
        stage("c4", json!({})),
        stage("fineweb_quality", json!({})),
    ];
    let refs: Vec<&dyn Stage> = stages.iter().map(|s| s.as_ref()).collect();
    let out = apply_sequence(&refs, &BatchCtx::default(), batch).unwrap();
    let rejected: usize = out.rejected.iter().map(|d| d.batch.num_rows()).sum();
    assert_eq!(out.kept.num_rows() + rejected, n);
    assert!(
        rejected > 0,
        "the fixture holds low-quality documents: some must be rejected"
    );
    for d in &out.rejected {
        assert_eq!(d.reasons.len(), d.batch.num_rows());
        assert!(
            d.reasons
                .iter()
                .all(|r| !r.is_empty() && r != "unspecified"),
            "{:?}",
            d.reasons
        );
    }
    let kept = &out.kept;
    for col in [
        "gopher_word_count",
        "gopher_rep_top_2_gram",
        "c4_sentences",
        "fineweb_list_ratio",
        "lang_score",
    ] {
        let f = kept.schema().field_with_name(col).unwrap().clone();
        assert_eq!(f.data_type(), &DataType::Float64, "{col}");
    }
    let pii = kept
        .column_by_name("pii_redactions")
        .unwrap()
        .as_any()
        .downcast_ref::<UInt32Array>()
        .unwrap();
    assert_eq!(pii.len(), kept.num_rows());
    let words = kept
        .column_by_name("gopher_word_count")
        .unwrap()
        .as_any()
        .downcast_ref::<Float64Array>()
        .unwrap();
    assert!(
        (0..words.len()).all(|i| words.value(i) >= 50.0),
        "kept documents pass the 50-word rule"
    );
}

#[test]
fn sql_functions_agree_with_the_stage() {
    let batch = fixture_batch();
    let ctx = datafusion::prelude::SessionContext::new();
    quern::stages::register_udfs(&ctx);
    ctx.register_batch("docs", batch.clone()).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let rows = rt
        .block_on(async {
            ctx.sql("SELECT gopher_quality(text) AS reason, count(*) AS n FROM docs GROUP BY 1 ORDER BY 2 DESC, 1")
                .await?
                .collect()
                .await
        })
        .unwrap();
    let mut sql_counts = std::collections::BTreeMap::new();
    for b in &rows {
        let r = b.column(0).as_any().downcast_ref::<StringArray>().unwrap();
        let n = b
            .column(1)
            .as_any()
            .downcast_ref::<arrow::array::Int64Array>()
            .unwrap();
        for i in 0..b.num_rows() {
            let key = if r.is_null(i) {
                "keep".to_string()
            } else {
                r.value(i).to_string()
            };
            sql_counts.insert(key, n.value(i) as u64);
        }
    }
    let out = apply_sequence(
        &[stage("gopher_quality", json!({})).as_ref()],
        &BatchCtx::default(),
        batch,
    )
    .unwrap();
    let mut stage_counts = out.counts[0].reasons.clone();
    stage_counts.insert("keep".into(), out.counts[0].kept);
    assert_eq!(sql_counts, stage_counts);
}

#[test]
fn bad_config_names_the_key() {
    let reg = quern::stages::registry();
    let spec = StageSpec {
        type_name: "gopher_quality".into(),
        name: "g".into(),
        key: "stages[3]".into(),
        params: json!({"min_doc_wrds": 10}),
        ..Default::default()
    };
    let e = reg.build(&spec).err().unwrap().to_string();
    assert!(e.contains("stages[3]") && e.contains("min_doc_wrds"), "{e}");
}
