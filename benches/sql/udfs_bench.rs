//! Criterion bench of quern's SQL text functions (`word_count`, `char_count`, `xxh3`), as
//! vectorised kernels over an Arrow array and against the naive per-row definitions they
//! must equal. The text is this repository's own documentation and sources, repeated to
//! 8,192 rows (one DataFusion batch): real prose and code, ASCII with some Unicode.
//!
//! Not yet a bench target (it was never compiled): wire it with `[[bench]] name = "sql_udfs",
//! path = "benches/sql/udfs_bench.rs", harness = false` and `criterion` as a dev-dependency
//! of the root package, then `cargo bench --bench sql_udfs`.

use std::hint::black_box;
use std::sync::Arc;

use arrow::array::{ArrayRef, StringViewArray};
use arrow::datatypes::{Int64Type, UInt64Type};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use quern::sql::udfs;

/// Paragraphs of real text from files in the repository.
fn paragraphs() -> Vec<String> {
    let root = env!("CARGO_MANIFEST_DIR");
    let mut out = Vec::new();
    for f in [
        "docs/DEVELOPING.md",
        "src/sql/mod.rs",
        "src/sql/udfs.rs",
        "core/src/shard.rs",
        "core/src/manifest.rs",
    ] {
        let text =
            std::fs::read_to_string(format!("{root}/{f}")).unwrap_or_else(|e| panic!("{f}: {e}"));
        out.extend(
            text.split("\n\n")
                .filter(|p| !p.trim().is_empty())
                .map(str::to_string),
        );
    }
    // A little non-ASCII text, so the decoding path is measured too.
    out.push("Ωμέγα café naïve — 漢字かな交じり文\u{3000}and\u{a0}more".to_string());
    out
}

fn bench(c: &mut Criterion) {
    let paras = paragraphs();
    let rows: Vec<&str> = paras
        .iter()
        .map(String::as_str)
        .cycle()
        .take(8192)
        .collect();
    let bytes: usize = rows.iter().map(|s| s.len()).sum();
    let array: ArrayRef = Arc::new(StringViewArray::from(rows.clone()));

    let mut g = c.benchmark_group("sql_udfs");
    g.throughput(Throughput::Bytes(bytes as u64));
    g.bench_function("word_count/kernel", |b| {
        b.iter(|| {
            udfs::map_strings::<Int64Type>(black_box(&array), "word_count", |s| {
                udfs::word_count(s) as i64
            })
            .unwrap()
        })
    });
    g.bench_function("word_count/naive_split_whitespace", |b| {
        b.iter(|| {
            black_box(&rows)
                .iter()
                .map(|s| s.split_whitespace().count() as i64)
                .collect::<Vec<_>>()
        })
    });
    g.bench_function("char_count/kernel", |b| {
        b.iter(|| {
            udfs::map_strings::<Int64Type>(black_box(&array), "char_count", |s| {
                udfs::char_count(s) as i64
            })
            .unwrap()
        })
    });
    g.bench_function("char_count/naive_chars", |b| {
        b.iter(|| {
            black_box(&rows)
                .iter()
                .map(|s| s.chars().count() as i64)
                .collect::<Vec<_>>()
        })
    });
    g.bench_function("xxh3/kernel", |b| {
        b.iter(|| udfs::map_strings::<UInt64Type>(black_box(&array), "xxh3", udfs::xxh3).unwrap())
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
