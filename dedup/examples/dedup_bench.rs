//! Runs the dedup stages over a JSONL corpus the way the pipeline runner does (gather every
//! batch, end_gather, apply every batch), streaming, for the benchmarks in benches/dedup/.
//!
//! ```text
//! dedup_bench run CORPUS.jsonl [--exact] [--memory-limit 1GB] [--threshold T] [--verify T]
//!                 [--clusters OUT.tsv] [--spill-dir DIR]
//! dedup_bench truth CORPUS.jsonl OUT.tsv [--min 0.5]
//! ```
//!
//! `run` prints one JSON line: documents, duplicates, clusters, seconds (gather, cluster,
//! apply), documents per second, spilled runs, and `fingerprint`, an xxh3 of every
//! (id, kept id) pair in position order, so that two runs can be compared for identical
//! clusters. `truth` writes every pair with word-5-gram Jaccard >= --min (exact, through an
//! inverted index of shingles, so only pairs sharing a shingle are compared).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::sync::Arc;
use std::time::Instant;

use arrow::array::{Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use quern_core::stage::apply_sequence;
use quern_core::{BatchCtx, Stage};
use quern_dedup::normalize::normalize;
use quern_dedup::shingle::{jaccard_sorted, shingle_set, ShingleKind};
use quern_dedup::{
    ExactDedup, ExactDedupConfig, MinhashDedup, MinhashDedupConfig, NormalizeConfig,
};
use rayon::prelude::*;

const BATCH: usize = 8192;

fn batches(path: &str) -> impl Iterator<Item = RecordBatch> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Utf8, false),
        Field::new("text", DataType::Utf8, false),
    ]));
    let f = std::fs::File::open(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut lines = BufReader::with_capacity(1 << 20, f).lines().enumerate();
    let path = path.to_string();
    std::iter::from_fn(move || {
        let (mut ids, mut texts) = (Vec::with_capacity(BATCH), Vec::with_capacity(BATCH));
        for (n, line) in lines.by_ref() {
            let line = line.unwrap_or_else(|e| panic!("{path}:{}: {e}", n + 1));
            let v: serde_json::Value =
                serde_json::from_str(&line).unwrap_or_else(|e| panic!("{path}:{}: {e}", n + 1));
            ids.push(
                v["id"]
                    .as_str()
                    .unwrap_or_else(|| panic!("{path}:{}: no string `id`", n + 1))
                    .to_string(),
            );
            texts.push(
                v["text"]
                    .as_str()
                    .unwrap_or_else(|| panic!("{path}:{}: no string `text`", n + 1))
                    .to_string(),
            );
            if ids.len() == BATCH {
                break;
            }
        }
        (!ids.is_empty()).then(|| {
            RecordBatch::try_new(
                schema.clone(),
                vec![
                    Arc::new(StringArray::from(ids)),
                    Arc::new(StringArray::from(texts)),
                ],
            )
            .unwrap()
        })
    })
}

fn arg<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    args.iter()
        .position(|a| a == name)
        .map(|i| args[i + 1].as_str())
}

fn run(args: &[String]) {
    let path = &args[0];
    let limit = arg(args, "--memory-limit").map(str::to_string);
    let spill_dir = arg(args, "--spill-dir").map(Into::into);
    let (mut exact, mut near) = (None, None);
    if args.iter().any(|a| a == "--exact") {
        exact = Some(
            ExactDedup::new(
                "exact",
                "bench",
                ExactDedupConfig {
                    memory_limit: limit,
                    spill_dir,
                    ..Default::default()
                },
            )
            .unwrap(),
        );
    } else {
        let mut cfg = MinhashDedupConfig {
            memory_limit: limit,
            spill_dir,
            ..Default::default()
        };
        if let Some(t) = arg(args, "--threshold") {
            cfg = cfg.with_threshold(t.parse().unwrap());
        }
        if let Some(t) = arg(args, "--verify") {
            cfg = cfg.with_verify(t.parse().unwrap());
        }
        near = Some(MinhashDedup::new("near", "bench", cfg).unwrap());
    }
    let stage: &dyn Stage = match (&exact, &near) {
        (Some(e), _) => e,
        (_, Some(n)) => n,
        _ => unreachable!(),
    };
    let t0 = Instant::now();
    let mut rows = 0u64;
    let mut bytes = 0u64;
    for (unit, b) in batches(path).enumerate() {
        rows += b.num_rows() as u64;
        let t = b.column(1).as_any().downcast_ref::<StringArray>().unwrap();
        bytes += t.value_data().len() as u64;
        stage
            .gather(
                &BatchCtx {
                    unit: unit as u64,
                    first_row: 0,
                },
                &b,
            )
            .unwrap();
    }
    let t_gather = t0.elapsed().as_secs_f64();
    stage.end_gather().unwrap();
    let t_cluster = t0.elapsed().as_secs_f64() - t_gather;
    let mut out =
        arg(args, "--clusters").map(|p| BufWriter::new(std::fs::File::create(p).unwrap()));
    let mut fp = xxhash_rust::xxh3::Xxh3::new();
    let (mut kept, mut dups) = (0u64, 0u64);
    for (unit, b) in batches(path).enumerate() {
        let v = apply_sequence(
            &[stage],
            &BatchCtx {
                unit: unit as u64,
                first_row: 0,
            },
            b,
        )
        .unwrap();
        kept += v.kept.num_rows() as u64;
        // Position order within the batch is not kept across kept/rejected; hash a sorted list.
        let mut pairs: Vec<(String, String)> = Vec::new();
        for batch in std::iter::once(&v.kept).chain(v.rejected.iter().map(|d| &d.batch)) {
            let ids = batch
                .column_by_name("id")
                .unwrap()
                .as_any()
                .downcast_ref::<StringArray>()
                .unwrap();
            let cl = batch
                .column_by_name("dup_cluster")
                .unwrap()
                .as_any()
                .downcast_ref::<StringArray>()
                .unwrap();
            for i in 0..batch.num_rows() {
                let c = if cl.is_null(i) {
                    ids.value(i)
                } else {
                    cl.value(i)
                };
                pairs.push((ids.value(i).to_string(), c.to_string()));
            }
        }
        dups += v
            .rejected
            .iter()
            .map(|d| d.batch.num_rows() as u64)
            .sum::<u64>();
        pairs.sort();
        for (id, c) in pairs {
            fp.update(id.as_bytes());
            fp.update(b"\t");
            fp.update(c.as_bytes());
            fp.update(b"\n");
            if let Some(o) = out.as_mut() {
                writeln!(o, "{id}\t{c}").unwrap();
            }
        }
    }
    let total = t0.elapsed().as_secs_f64();
    let stats = match (&exact, &near) {
        (Some(e), _) => e.stats().unwrap(),
        (_, Some(n)) => n.stats().unwrap(),
        _ => unreachable!(),
    };
    println!(
        "{}",
        serde_json::json!({
            "documents": rows, "text_bytes": bytes, "kept": kept, "duplicates": dups,
            "gather_s": t_gather, "cluster_s": t_cluster, "apply_s": total - t_gather - t_cluster, "total_s": total,
            "docs_per_s": rows as f64 / total, "threads": rayon::current_num_threads(),
            "stats": stats, "fingerprint": format!("{:032x}", fp.digest128()),
        })
    );
}

fn truth(args: &[String]) {
    let min: f64 = arg(args, "--min").map_or(0.5, |m| m.parse().unwrap());
    let (mut ids, mut sets) = (Vec::new(), Vec::new());
    for b in batches(&args[0]) {
        let id = b.column(0).as_any().downcast_ref::<StringArray>().unwrap();
        let t = b.column(1).as_any().downcast_ref::<StringArray>().unwrap();
        let s: Vec<Vec<u64>> = (0..b.num_rows())
            .into_par_iter()
            .map(|i| {
                shingle_set(
                    &normalize(t.value(i), &NormalizeConfig::default()),
                    ShingleKind::Word,
                    5,
                    1,
                    true,
                )
            })
            .collect();
        ids.extend((0..b.num_rows()).map(|i| id.value(i).to_string()));
        sets.extend(s);
    }
    // Inverted index: shingle -> documents; candidate pairs share at least one shingle.
    let mut index: HashMap<u64, Vec<u32>> = HashMap::new();
    for (d, s) in sets.iter().enumerate() {
        for &h in s {
            index.entry(h).or_default().push(d as u32);
        }
    }
    let pairs: Vec<(u32, u32, f64)> = (0..sets.len())
        .into_par_iter()
        .flat_map_iter(|a| {
            let mut cands: Vec<u32> = sets[a]
                .iter()
                .flat_map(|h| index[h].iter().copied().filter(|&b| b as usize > a))
                .collect();
            cands.sort_unstable();
            cands.dedup();
            let sets = &sets;
            cands.into_iter().filter_map(move |b| {
                let j = jaccard_sorted(&sets[a], &sets[b as usize]);
                (j >= min).then_some((a as u32, b, j))
            })
        })
        .collect();
    let mut out = BufWriter::new(std::fs::File::create(&args[1]).unwrap());
    for (a, b, j) in &pairs {
        writeln!(out, "{}\t{}\t{j:.6}", ids[*a as usize], ids[*b as usize]).unwrap();
    }
    eprintln!(
        "truth: {} documents, {} pairs with Jaccard >= {min}",
        ids.len(),
        pairs.len()
    );
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("run") => run(&args[1..]),
        Some("truth") => truth(&args[1..]),
        _ => {
            eprintln!("usage: dedup_bench run CORPUS.jsonl [--exact] [--memory-limit 1GB] [--threshold T] [--verify T] [--clusters OUT.tsv]\n       dedup_bench truth CORPUS.jsonl OUT.tsv [--min 0.5]");
            std::process::exit(2);
        }
    }
}
