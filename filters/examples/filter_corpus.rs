//! Runs quern's Gopher quality, Gopher repetition, C4 and FineWeb stages over a JSONL
//! corpus and writes each document's decision, for the side-by-side comparison with
//! datatrove (`benches/filters/parity.sh`).
//!
//! Usage: `filter_corpus CORPUS.jsonl LIMIT DECISIONS.tsv [FAMILY...]` (families: names of
//! [`FILTERS`], default all four; a subset is for profiling one).
//!
//! Prints one timing line per filter on one thread (`docs/s/core`), then all four families
//! together on every core (`MB/s`). Decisions are `id<TAB>filter<TAB>reason` (`keep` when
//! kept).

use std::io::{BufRead, BufWriter, Write};
use std::sync::Arc;
use std::time::Instant;

use arrow::array::{Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use quern_core::stage::{apply_sequence, BatchCtx, Stage, StageSpec};
use quern_core::StageRegistry;

const FILTERS: &[(&str, &str)] = &[
    ("gopher_quality", "gopher_quality"),
    ("gopher_repetition", "gopher_repetition"),
    ("c4", "c4"),
    ("fineweb", "fineweb_quality"),
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, corpus, limit, out, only @ ..] = &args[..] else {
        return Err("usage: filter_corpus CORPUS.jsonl LIMIT DECISIONS.tsv [FAMILY...]".into());
    };
    let families: Vec<(&str, &str)> = FILTERS
        .iter()
        .filter(|(n, _)| only.is_empty() || only.iter().any(|o| o == n))
        .copied()
        .collect();
    let limit: usize = limit.parse()?;
    let mut ids = Vec::new();
    let mut texts = Vec::new();
    for line in std::io::BufReader::new(std::fs::File::open(corpus)?)
        .lines()
        .take(limit)
    {
        let v: serde_json::Value = serde_json::from_str(&line?)?;
        ids.push(v["id"].as_str().unwrap_or_default().to_string());
        texts.push(v["text"].as_str().unwrap_or_default().to_string());
    }
    let bytes: usize = texts.iter().map(String::len).sum();
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Utf8, false),
        Field::new("text", DataType::Utf8, false),
    ]));
    let batches: Vec<RecordBatch> = ids
        .chunks(2048)
        .zip(texts.chunks(2048))
        .map(|(i, t)| {
            RecordBatch::try_new(
                schema.clone(),
                vec![
                    Arc::new(StringArray::from(i.to_vec())),
                    Arc::new(StringArray::from(t.to_vec())),
                ],
            )
        })
        .collect::<Result<_, _>>()?;
    let mut reg = StageRegistry::new();
    quern_filters::register_stages(&mut reg);
    let build = |t: &str, name: &str| {
        reg.build(&StageSpec {
            type_name: t.into(),
            name: name.into(),
            key: name.into(),
            params: serde_json::json!({}),
            ..Default::default()
        })
    };
    let mut w = BufWriter::new(std::fs::File::create(out)?);
    let one = rayon::ThreadPoolBuilder::new().num_threads(1).build()?;
    for (name, ty) in &families {
        let stage = build(ty, name)?;
        // Each family alone: no words left by the one before (see the shared word cache).
        quern_filters::words::clear_word_cache();
        let t0 = Instant::now();
        let results = one.install(|| -> quern_core::Result<Vec<_>> {
            batches
                .iter()
                .map(|b| apply_sequence(&[stage.as_ref()], &BatchCtx::default(), b.clone()))
                .collect()
        })?;
        let secs = t0.elapsed().as_secs_f64();
        println!(
            "quern {name}: {} docs in {secs:.2}s = {:.0} docs/s/core, {:.2} MB/s/core",
            ids.len(),
            ids.len() as f64 / secs,
            bytes as f64 / 1e6 / secs
        );
        for r in &results {
            let kept = r
                .kept
                .column_by_name("id")
                .unwrap()
                .as_any()
                .downcast_ref::<StringArray>()
                .unwrap();
            for i in 0..kept.len() {
                writeln!(w, "{}\t{name}\tkeep", kept.value(i))?;
            }
            for d in &r.rejected {
                let col = d
                    .batch
                    .column_by_name("id")
                    .unwrap()
                    .as_any()
                    .downcast_ref::<StringArray>()
                    .unwrap();
                for (i, reason) in d.reasons.iter().enumerate() {
                    writeln!(w, "{}\t{name}\t{reason}", col.value(i))?;
                }
            }
        }
    }
    // All four families, each on every document (as the per-filter comparison does), on
    // every core, one batch through the four stages after another as a pipeline runs them
    // (the later stages find the words of the first in the shared word cache).
    let stages: Vec<Box<dyn Stage>> = families
        .iter()
        .map(|(n, t)| build(t, n))
        .collect::<Result<_, _>>()?;
    quern_filters::words::clear_word_cache();
    let t0 = Instant::now();
    for b in &batches {
        for s in &stages {
            s.apply(&BatchCtx::default(), b.clone())?;
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    println!(
        "quern all {} families: {:.1} MB in {secs:.2}s = {:.1} MB/s on {} threads",
        families.len(),
        bytes as f64 / 1e6,
        bytes as f64 / 1e6 / secs,
        rayon::current_num_threads()
    );
    // The same stages as a build runs them: each on the documents the ones before it kept.
    let seq: Vec<&dyn Stage> = stages.iter().map(|s| s.as_ref()).collect();
    quern_filters::words::clear_word_cache();
    let t0 = Instant::now();
    let mut kept = 0;
    for b in &batches {
        kept += apply_sequence(&seq, &BatchCtx::default(), b.clone())?
            .kept
            .num_rows();
    }
    let secs = t0.elapsed().as_secs_f64();
    println!(
        "quern all {} families in sequence (each on the survivors of the one before; {kept} of {} kept): {:.1} MB in {secs:.2}s = {:.1} MB/s on {} threads",
        families.len(),
        ids.len(),
        bytes as f64 / 1e6,
        bytes as f64 / 1e6 / secs,
        rayon::current_num_threads()
    );
    Ok(())
}
