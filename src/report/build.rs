//! The page of a build output directory: `report.json` (accounting and timing) and
//! `manifest.json` (the docs shards, for the signal histograms).

use std::collections::BTreeMap;
use std::path::Path;

use arrow::array::{Array, Float64Array, StringArray};
use arrow::datatypes::DataType;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ProjectionMask;
use quern_core::error::{Context, Error, IoContext, Place, Result};
use quern_core::manifest::{Accounting, Manifest};

use super::svg::{bar_chart, fmt_num, hbar_chart, histogram};
use super::{cards, escape, page, read_json, table};

/// Bins of a signal histogram.
const BINS: usize = 40;
/// Bars of a count chart (the rest are summed as `(other)`).
const TOP_VALUES: usize = 20;
/// At most this many documents' values per signal histogram: a larger build is sampled,
/// every k-th kept document, so the page's memory and size do not grow with the corpus.
const MAX_SAMPLED: u64 = 250_000;

/// Whether a Utf8 column of `docs` is counted by value: sources, languages, splits, labels.
fn is_counted(name: &str) -> bool {
    matches!(name, "source" | "lang" | "split") || name.ends_with("label")
}

/// Renders the report of the build in `dir`.
pub fn build_html(dir: &Path) -> Result<String> {
    let path = dir.join("report.json");
    let report = read_json(&path)?;
    let bad = |m: String| Error::bad_input(Place::file(&path), m);
    let accounting: Accounting = report
        .get("accounting")
        .cloned()
        .ok_or_else(|| bad("no `accounting`: not a build's report.json".into()))
        .and_then(|a| {
            serde_json::from_value(a).map_err(|e| bad(format!("bad `accounting`: {e}")))
        })?;
    let timing = report.get("timing");
    let seconds: BTreeMap<String, f64> = timing
        .and_then(|t| t.get("stage_seconds"))
        .and_then(|s| s.as_object())
        .map(|o| {
            o.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_f64()?)))
                .collect()
        })
        .unwrap_or_default();
    let wall = timing
        .and_then(|t| t.get("wall_seconds"))
        .and_then(|v| v.as_f64());
    let resumed = timing
        .and_then(|t| t.get("resumed"))
        .and_then(|v| v.as_bool())
        .unwrap_or(false);
    let manifest = Manifest::load(dir)?;

    let a = &accounting;
    let mut b = String::new();
    b.push_str(&cards(&[
        (a.input.to_string(), "input documents"),
        (a.kept.to_string(), "kept"),
        (a.rejected.to_string(), "rejected"),
        (a.quarantined.to_string(), "quarantined"),
        (a.files.len().to_string(), "input files"),
        (
            wall.map_or("?".into(), |w| format!("{w:.1} s")),
            if resumed {
                "wall time (this resumed run)"
            } else {
                "wall time"
            },
        ),
    ]));

    // The funnel.
    b.push_str("<h2>Funnel</h2>\n");
    let mut cats = vec!["input".to_string()];
    let mut din = vec![a.input as f64];
    let mut kept = vec![(a.input - a.quarantined.min(a.input)) as f64];
    let mut rej = vec![a.quarantined as f64];
    for s in &a.stages {
        cats.push(s.stage.clone());
        din.push(s.input as f64);
        kept.push(s.kept as f64);
        rej.push(s.rejected as f64);
    }
    b.push_str(&bar_chart(
        "Documents per stage",
        "documents",
        &cats,
        &["in", "kept", "rejected"],
        &[din, kept, rej],
    ));
    b.push('\n');
    let pct = |n: u64, d: u64| {
        if d == 0 {
            "-".to_string()
        } else {
            format!("{:.1}%", 100.0 * n as f64 / d as f64)
        }
    };
    let rows: Vec<Vec<String>> = a
        .stages
        .iter()
        .map(|s| {
            let secs = seconds.get(&s.stage).copied();
            vec![
                s.stage.clone(),
                s.input.to_string(),
                s.kept.to_string(),
                s.rejected.to_string(),
                pct(s.kept, s.input),
                s.input_bytes.to_string(),
                s.kept_bytes.to_string(),
                secs.map_or("-".into(), |t| format!("{t:.3}")),
                secs.filter(|t| *t > 0.0)
                    .map_or("-".into(), |t| fmt_num((s.input as f64 / t).round())),
            ]
        })
        .collect();
    b.push_str(&table(
        &[
            "stage",
            "in",
            "kept",
            "rejected",
            "kept %",
            "bytes in",
            "bytes kept",
            "seconds",
            "docs/s",
        ],
        &rows,
    ));
    b.push_str("<p class=\"sub\">Seconds are the time the build spent inside each stage, summed over its worker threads; a resumed build times only what it ran.</p>\n");

    // Time and bytes.
    b.push_str("<h2>Time and bytes per stage</h2>\n");
    let time: Vec<(String, f64)> = a
        .stages
        .iter()
        .map(|s| {
            (
                s.stage.clone(),
                seconds.get(&s.stage).copied().unwrap_or(0.0),
            )
        })
        .collect();
    b.push_str(&hbar_chart("Seconds per stage", "seconds", &time));
    b.push('\n');
    let stages: Vec<String> = a.stages.iter().map(|s| s.stage.clone()).collect();
    b.push_str(&bar_chart(
        "Bytes per stage",
        "bytes",
        &stages,
        &["bytes in", "bytes kept"],
        &[
            a.stages.iter().map(|s| s.input_bytes as f64).collect(),
            a.stages.iter().map(|s| s.kept_bytes as f64).collect(),
        ],
    ));
    b.push('\n');

    // Rejection reasons.
    b.push_str("<h2>Rejection reasons</h2>\n");
    let mut any = false;
    for s in a.stages.iter().filter(|s| !s.reasons.is_empty()) {
        any = true;
        let mut reasons: Vec<(&String, &u64)> = s.reasons.iter().collect();
        reasons.sort_by(|x, y| y.1.cmp(x.1).then(x.0.cmp(y.0)));
        b.push_str(&format!("<h3>{}</h3>\n", escape(&s.stage)));
        let items: Vec<(String, f64)> = reasons
            .iter()
            .map(|(r, n)| ((*r).clone(), **n as f64))
            .collect();
        b.push_str(&hbar_chart(
            &format!("{}: rejected documents by reason", s.stage),
            "documents",
            &items,
        ));
        b.push('\n');
        let rows: Vec<Vec<String>> = reasons
            .iter()
            .map(|(r, n)| vec![(*r).clone(), n.to_string(), pct(**n, s.input)])
            .collect();
        b.push_str(&table(&["reason", "documents", "% of stage input"], &rows));
    }
    if !any {
        b.push_str("<p>No stage rejected a document.</p>\n");
    }

    // Inputs and quarantine.
    b.push_str("<h2>Input files and quarantine</h2>\n");
    b.push_str(&format!(
        "<p>{} of {} records quarantined (unreadable records, kept in the <code>quarantine</code> table).</p>\n",
        a.quarantined, a.input
    ));
    let rows: Vec<Vec<String>> = a
        .files
        .iter()
        .map(|f| {
            vec![
                f.file.clone(),
                f.records.to_string(),
                f.ingested.to_string(),
                f.quarantined.to_string(),
                f.bytes.to_string(),
            ]
        })
        .collect();
    b.push_str(&table(
        &["file", "records", "ingested", "quarantined", "bytes"],
        &rows,
    ));

    if let Some(m) = &manifest {
        let cols = docs_columns(dir, m)?;
        // Sources, languages, splits and labels.
        if !cols.counts.is_empty() {
            let names: Vec<&str> = cols.counts.keys().map(String::as_str).collect();
            b.push_str(&format!(
                "<h2>Kept documents by {}</h2>\n",
                escape(&names.join(", "))
            ));
            for (name, counts) in &cols.counts {
                let mut items: Vec<(String, f64)> =
                    counts.iter().map(|(k, n)| (k.clone(), *n as f64)).collect();
                items.sort_by(|x, y| y.1.total_cmp(&x.1).then(x.0.cmp(&y.0)));
                if items.len() > TOP_VALUES {
                    let rest: f64 = items[TOP_VALUES..].iter().map(|(_, n)| n).sum();
                    items.truncate(TOP_VALUES);
                    items.push(("(other)".into(), rest));
                }
                b.push_str(&hbar_chart(
                    &format!("Kept documents by {name}"),
                    "documents",
                    &items,
                ));
                b.push('\n');
            }
        }
        // Signal histograms.
        if !cols.floats.is_empty() {
            b.push_str("<h2>Signals of the kept documents</h2>\n");
            if cols.stride > 1 {
                b.push_str(&format!(
                    "<p class=\"sub\">Histograms of one kept document in every {}.</p>\n",
                    cols.stride
                ));
            }
            for (name, values) in &cols.floats {
                b.push_str(&histogram(name, name, values, BINS));
                b.push('\n');
            }
        }
    }
    Ok(page("quern build report", &b))
}

/// What the report shows of the `docs` table's columns.
#[derive(Debug, Default)]
struct DocsColumns {
    /// The values of every `Float64` column (the quality signals), by column name.
    floats: BTreeMap<String, Vec<f64>>,
    /// Documents per value of the counted Utf8 columns ([`is_counted`]); null as `(none)`.
    counts: BTreeMap<String, BTreeMap<String, u64>>,
    /// `floats` holds the values of every `stride`-th document (1: all of them).
    stride: u64,
}

/// Reads the `Float64` and counted columns of the `docs` shards the manifest lists.
fn docs_columns(dir: &Path, m: &Manifest) -> Result<DocsColumns> {
    let tables = m.tables();
    let docs = tables.get("docs").map(Vec::as_slice).unwrap_or_default();
    let rows: u64 = docs.iter().map(|s| s.rows).sum();
    let mut out = DocsColumns {
        stride: rows.div_ceil(MAX_SAMPLED).max(1),
        ..DocsColumns::default()
    };
    let mut shards: Vec<(&str, u64)> = docs.iter().map(|s| (s.file.as_str(), s.rows)).collect();
    shards.sort();
    // Index of the next batch's first row over all shards, for the sampling stride.
    let mut row0 = 0u64;
    for (shard, shard_rows) in shards {
        let path = dir.join(shard);
        let file = std::fs::File::open(&path).at(&path)?;
        let ctx = || format!("reading the signals of {}", path.display());
        let builder = ParquetRecordBatchReaderBuilder::try_new(file).with_context(ctx)?;
        let wanted: Vec<usize> = builder
            .schema()
            .fields()
            .iter()
            .enumerate()
            .filter(|(_, f)| {
                f.data_type() == &DataType::Float64
                    || (f.data_type() == &DataType::Utf8 && is_counted(f.name()))
            })
            .map(|(i, _)| i)
            .collect();
        if wanted.is_empty() {
            row0 += shard_rows;
            continue;
        }
        let mask = ProjectionMask::roots(builder.parquet_schema(), wanted);
        let reader = builder.with_projection(mask).build().with_context(ctx)?;
        for batch in reader {
            let batch = batch.with_context(ctx)?;
            for (field, col) in batch.schema().fields().iter().zip(batch.columns()) {
                if let Some(f) = col.as_any().downcast_ref::<Float64Array>() {
                    let v = out.floats.entry(field.name().clone()).or_default();
                    let skip = first_sampled(row0, out.stride);
                    v.extend(
                        f.iter()
                            .skip(skip as usize)
                            .step_by(out.stride as usize)
                            .flatten(),
                    );
                } else if let Some(s) = col.as_any().downcast_ref::<StringArray>() {
                    let c = out.counts.entry(field.name().clone()).or_default();
                    for v in s.iter() {
                        *c.entry(v.unwrap_or("(none)").to_string()).or_default() += 1;
                    }
                }
            }
            row0 += batch.num_rows() as u64;
        }
    }
    Ok(out)
}

/// The offset in a batch starting at global row `row0` of its first row whose index is a
/// multiple of `stride`.
fn first_sampled(row0: u64, stride: u64) -> u64 {
    (stride - row0 % stride) % stride
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampling_takes_every_stride_th_row_across_batches() {
        for (row0, stride, want) in [
            (0, 1, 0),
            (5, 1, 0),
            (0, 3, 0),
            (1, 3, 2),
            (3, 3, 0),
            (7, 4, 1),
        ] {
            assert_eq!(first_sampled(row0, stride), want, "{row0} {stride}");
        }
        // Batches of 5 rows, stride 3: rows 0, 3, 6, 9, 12 of 0..15.
        let mut got = Vec::new();
        for row0 in (0..15u64).step_by(5) {
            let first = first_sampled(row0, 3);
            got.extend((row0..row0 + 5).skip(first as usize).step_by(3));
        }
        assert_eq!(got, [0, 3, 6, 9, 12]);
    }
}
