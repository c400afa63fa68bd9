//! The page of a build output directory: `report.json` (accounting and timing) and
//! `manifest.json` (the docs shards, for the signal histograms and the per-split table; the
//! rejected shards, for the duplicate clusters; the pipeline config, whose stages are
//! rebuilt through [`crate::stages::registry`] to mark their [`Threshold`]s on the
//! histograms).

use std::collections::BTreeMap;
use std::path::Path;

use arrow::array::{Array, Float64Array, StringArray};
use arrow::datatypes::DataType;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::ProjectionMask;
use quern_core::error::{Context, Error, IoContext, Place, Result};
use quern_core::manifest::{Accounting, Manifest};
use quern_core::schema::{DETAILS, REJECTED_BY, TEXT};
use quern_core::stage::{StageSpec, Threshold};

use super::svg::{bar_chart, fmt_num, hbar_chart, histogram_marked, Mark};
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
    matches!(name, "source" | "lang" | "split") || is_tabled(name)
}

/// Whether a counted column also gets a table of documents, bytes and words: splits and
/// labels.
fn is_tabled(name: &str) -> bool {
    name == "split" || name.ends_with("label")
}

/// The dedup stages' columns (see `quern_dedup`): the kept representative's id on every
/// member of a cluster, and on a removed duplicate.
const DUP_CLUSTER: &str = "dup_cluster";
const DUP_OF: &str = "dup_of";
/// Distinct cluster sizes shown one bar each; beyond, sizes are grouped by powers of two.
const SIZE_BARS: usize = 12;

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
        let built = rebuild_stages(dir, m);
        // Documents, bytes and words per split and per label.
        b.push_str("<h2>Kept documents per split</h2>\n");
        let tally_rows = |t: &BTreeMap<String, Tally>| -> Vec<Vec<String>> {
            t.iter()
                .map(|(k, t)| {
                    vec![
                        k.clone(),
                        t.docs.to_string(),
                        t.bytes.to_string(),
                        t.words.to_string(),
                    ]
                })
                .collect()
        };
        let header = |col: &str| {
            [
                col.to_string(),
                "documents".into(),
                "bytes".into(),
                "words".into(),
            ]
        };
        match cols.counts.get("split") {
            Some(t) => {
                let h = header("split");
                b.push_str(&table(&h.each_ref().map(String::as_str), &tally_rows(t)));
            }
            None => {
                b.push_str("<p>No <code>split</code> column (a <code>split</code> stage adds one): all kept documents.</p>\n");
                let all = BTreeMap::from([("(all)".to_string(), cols.all)]);
                let h = header("documents");
                b.push_str(&table(&h.each_ref().map(String::as_str), &tally_rows(&all)));
            }
        }
        for (name, t) in cols
            .counts
            .iter()
            .filter(|(n, _)| is_tabled(n) && *n != "split")
        {
            b.push_str(&format!("<h3>By {}</h3>\n", escape(name)));
            let h = header(name);
            b.push_str(&table(&h.each_ref().map(String::as_str), &tally_rows(t)));
        }
        b.push_str("<p class=\"sub\">Bytes are the UTF-8 bytes of <code>text</code>; words are its runs of non-whitespace (Unicode White_Space).</p>\n");

        // Duplicate clusters.
        let clusters = dup_clusters(dir, m)?;
        let mut dedup: Vec<&str> = built.dedup.iter().map(String::as_str).collect();
        for s in clusters.keys() {
            if !dedup.contains(&s.as_str()) {
                dedup.push(s);
            }
        }
        if !dedup.is_empty() {
            b.push_str(&dup_section(
                &dedup,
                &clusters,
                &accounting,
                cols.in_cluster,
            ));
        }

        // Sources, languages, splits and labels.
        if !cols.counts.is_empty() {
            let names: Vec<&str> = cols.counts.keys().map(String::as_str).collect();
            b.push_str(&format!(
                "<h2>Kept documents by {}</h2>\n",
                escape(&names.join(", "))
            ));
            for (name, counts) in &cols.counts {
                let mut items: Vec<(String, f64)> = counts
                    .iter()
                    .map(|(k, n)| (k.clone(), n.docs as f64))
                    .collect();
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
        if !cols.floats.is_empty() || !built.thresholds.is_empty() {
            b.push_str("<h2>Signals of the kept documents</h2>\n");
            b.push_str(&thresholds_table(&built));
            if cols.stride > 1 {
                b.push_str(&format!(
                    "<p class=\"sub\">Histograms of one kept document in every {}.</p>\n",
                    cols.stride
                ));
            }
            for (name, values) in &cols.floats {
                let marks: Vec<Mark> = built
                    .thresholds
                    .iter()
                    .filter(|(_, t)| &t.column == name)
                    .map(|(stage, t)| Mark {
                        value: t.value,
                        label: format!("{} = {}", t.param, t.value),
                        note: format!(
                            "{stage}.{} = {}: {} unless {} {} {}",
                            t.param,
                            t.value,
                            t.reason,
                            t.column,
                            t.keeps.symbol(),
                            t.value
                        ),
                        rejects_below: t.keeps.rejects_below(),
                    })
                    .collect();
                b.push_str(&histogram_marked(name, name, values, BINS, &marks));
                b.push('\n');
            }
        }
    }
    Ok(page("quern build report", &b))
}

/// Documents, UTF-8 bytes of `text` and whitespace-separated words.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Tally {
    docs: u64,
    bytes: u64,
    words: u64,
}

/// What the report shows of the `docs` table's columns.
#[derive(Debug, Default)]
struct DocsColumns {
    /// The values of every `Float64` column (the quality signals), by column name.
    floats: BTreeMap<String, Vec<f64>>,
    /// Documents (with their bytes and words) per value of the counted Utf8 columns
    /// ([`is_counted`]); null as `(none)`.
    counts: BTreeMap<String, BTreeMap<String, Tally>>,
    /// Every kept document.
    all: Tally,
    /// Kept documents with a `dup_cluster` (the representatives the last dedup stage kept).
    in_cluster: u64,
    /// `floats` holds the values of every `stride`-th document (1: all of them).
    stride: u64,
}

/// What the report learns from rebuilding the build's stages from its recorded config.
#[derive(Debug, Default)]
struct Rebuilt {
    /// Every stage's thresholds, with the stage's name, in pipeline order.
    thresholds: Vec<(String, Threshold)>,
    /// Stages that add `dup_of` (the dedup stages), in pipeline order.
    dedup: Vec<String>,
    /// Stages that could not be rebuilt, and why.
    failed: Vec<(String, String)>,
}

/// Rebuilds the stages of the manifest's `config.stages` through the stage registry and asks
/// them for their thresholds. A stage that cannot be rebuilt (a word list moved, a stage
/// type this binary lacks) is noted, never an error: the page just marks none of its
/// thresholds. Relative paths in stage parameters resolve against the output directory's
/// parent, where the pipeline file usually sits (the manifest does not record it).
fn rebuild_stages(dir: &Path, m: &Manifest) -> Rebuilt {
    let mut out = Rebuilt::default();
    let Some(stages) = m.config.get("stages").and_then(|s| s.as_array()) else {
        return out;
    };
    let reg = crate::stages::registry();
    let base = dir
        .canonicalize()
        .ok()
        .and_then(|d| d.parent().map(Path::to_path_buf))
        .unwrap_or_default();
    for (i, table) in stages.iter().enumerate() {
        let mut params = table.as_object().cloned().unwrap_or_default();
        let type_name = params
            .remove("type")
            .and_then(|t| t.as_str().map(str::to_string))
            .unwrap_or_default();
        let name = params
            .remove("name")
            .and_then(|t| t.as_str().map(str::to_string))
            .unwrap_or_else(|| type_name.clone());
        let spec = StageSpec {
            type_name,
            name: name.clone(),
            key: format!("stages[{i}]"),
            params: serde_json::Value::Object(params),
            base_dir: base.clone(),
        };
        match reg.build(&spec) {
            Ok(stage) => {
                out.thresholds
                    .extend(stage.thresholds().into_iter().map(|t| (name.clone(), t)));
                if stage.adds().iter().any(|f| f.name() == DUP_OF) {
                    out.dedup.push(name);
                }
            }
            Err(e) => out.failed.push((name, e.to_string())),
        }
    }
    out
}

/// The table of every stage's thresholds, and a note for stages that could not be rebuilt.
fn thresholds_table(built: &Rebuilt) -> String {
    let mut s = String::new();
    if !built.thresholds.is_empty() {
        s.push_str("<p>Thresholds of the stages, marked on the histograms below as red lines, the side they reject shaded:</p>\n");
        let rows: Vec<Vec<String>> = built
            .thresholds
            .iter()
            .map(|(stage, t)| {
                vec![
                    stage.clone(),
                    t.param.clone(),
                    t.column.clone(),
                    format!("{} {}", t.keeps.symbol(), t.value),
                    t.reason.clone(),
                ]
            })
            .collect();
        s.push_str(&table(
            &[
                "stage",
                "parameter",
                "column",
                "kept when",
                "else rejected as",
            ],
            &rows,
        ));
    }
    for (stage, why) in &built.failed {
        s.push_str(&format!(
            "<p class=\"sub\">Stage <code>{}</code> could not be rebuilt from the recorded config, so its thresholds are not marked: {}</p>\n",
            escape(stage),
            escape(why)
        ));
    }
    s
}

/// For every stage that removed duplicates: documents removed per kept representative
/// (`dup_of` in the `details` of its rejected rows), by the representative's id.
type Clusters = BTreeMap<String, BTreeMap<String, u64>>;

/// Reads the duplicates out of the `rejected` shards: a row whose `details` carry a
/// `dup_of` was removed by its `rejected_by` stage as a duplicate of that document.
fn dup_clusters(dir: &Path, m: &Manifest) -> Result<Clusters> {
    let tables = m.tables();
    let mut shards: Vec<&str> = tables
        .get("rejected")
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|s| s.file.as_str())
        .collect();
    shards.sort();
    let mut out = Clusters::new();
    for shard in shards {
        let path = dir.join(shard);
        let file = std::fs::File::open(&path).at(&path)?;
        let ctx = || format!("reading the duplicates in {}", path.display());
        let builder = ParquetRecordBatchReaderBuilder::try_new(file).with_context(ctx)?;
        let wanted: Vec<usize> = builder
            .schema()
            .fields()
            .iter()
            .enumerate()
            .filter(|(_, f)| f.name() == REJECTED_BY || f.name() == DETAILS)
            .map(|(i, _)| i)
            .collect();
        if wanted.len() != 2 {
            continue;
        }
        let mask = ProjectionMask::roots(builder.parquet_schema(), wanted);
        let reader = builder.with_projection(mask).build().with_context(ctx)?;
        for batch in reader {
            let batch = batch.with_context(ctx)?;
            let col = |name: &str| {
                batch
                    .column_by_name(name)
                    .and_then(|c| c.as_any().downcast_ref::<StringArray>())
            };
            let (Some(by), Some(details)) = (col(REJECTED_BY), col(DETAILS)) else {
                continue;
            };
            for (by, details) in by.iter().zip(details.iter()) {
                let (Some(by), Some(details)) = (by, details) else {
                    continue;
                };
                if !details.contains(DUP_OF) {
                    continue;
                }
                let v: serde_json::Value = serde_json::from_str(details).map_err(|e| {
                    Error::bad_input(
                        Place::file(&path),
                        format!("a `details` value is not JSON ({e}); rebuild the output"),
                    )
                })?;
                if let Some(rep) = v.get(DUP_OF).and_then(|d| d.as_str()) {
                    *out.entry(by.to_string())
                        .or_default()
                        .entry(rep.to_string())
                        .or_default() += 1;
                }
            }
        }
    }
    Ok(out)
}

/// Clusters by size (documents per cluster, the kept representative included): one bar per
/// size when there are few, else sizes grouped by powers of two (`5-8`, `9-16`, ...).
fn size_bars(sizes: &BTreeMap<u64, u64>) -> Vec<(String, f64)> {
    if sizes.len() <= SIZE_BARS {
        return sizes
            .iter()
            .map(|(s, n)| (format!("{s} documents"), *n as f64))
            .collect();
    }
    let mut groups: BTreeMap<u64, (u64, u64, u64)> = BTreeMap::new();
    for (&s, &n) in sizes {
        // Sizes 2, 3, 4 alone; then (2^k, 2^(k+1)].
        let (lo, hi) = if s <= 4 {
            (s, s)
        } else {
            let hi = s.next_power_of_two();
            (hi / 2 + 1, hi)
        };
        groups.entry(lo).or_insert((lo, hi, 0)).2 += n;
    }
    groups
        .into_values()
        .map(|(lo, hi, n)| {
            let label = if lo == hi {
                format!("{lo} documents")
            } else {
                format!("{lo}-{hi} documents")
            };
            (label, n as f64)
        })
        .collect()
}

/// The duplicate-cluster section: per dedup stage, clusters, documents removed and the
/// clusters' sizes.
fn dup_section(
    stages: &[&str],
    clusters: &Clusters,
    accounting: &Accounting,
    in_cluster: u64,
) -> String {
    let mut s = String::from("<h2>Duplicate clusters</h2>\n");
    s.push_str("<p>A cluster is a kept document and the duplicates a dedup stage removed in its favour (<code>dup_of</code> in their <code>details</code>).</p>\n");
    let mut rows = Vec::new();
    let mut charts = String::new();
    // Accounting order first, then any other stage.
    let mut order: Vec<&str> = accounting
        .stages
        .iter()
        .map(|c| c.stage.as_str())
        .filter(|n| stages.contains(n))
        .collect();
    let rest: Vec<&str> = stages
        .iter()
        .copied()
        .filter(|n| !order.contains(n))
        .collect();
    order.extend(rest);
    for stage in order {
        let empty = BTreeMap::new();
        let reps = clusters.get(stage).unwrap_or(&empty);
        let removed: u64 = reps.values().sum();
        let mut sizes: BTreeMap<u64, u64> = BTreeMap::new();
        for n in reps.values() {
            *sizes.entry(n + 1).or_default() += 1;
        }
        let largest = sizes.keys().next_back().copied().unwrap_or(0);
        rows.push(vec![
            stage.to_string(),
            reps.len().to_string(),
            removed.to_string(),
            (removed + reps.len() as u64).to_string(),
            largest.to_string(),
        ]);
        if !reps.is_empty() {
            charts.push_str(&hbar_chart(
                &format!("{stage}: clusters by size"),
                "clusters",
                &size_bars(&sizes),
            ));
            charts.push('\n');
        }
    }
    s.push_str(&table(
        &[
            "stage",
            "clusters",
            "documents removed",
            "documents in clusters",
            "largest cluster",
        ],
        &rows,
    ));
    s.push_str(&format!(
        "<p>{in_cluster} kept documents carry a <code>dup_cluster</code>: the representatives the last dedup stage kept (a later stage may have dropped others).</p>\n"
    ));
    s.push_str(&charts);
    s
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
                    || (f.data_type() == &DataType::Utf8
                        && (is_counted(f.name()) || f.name() == TEXT || f.name() == DUP_CLUSTER))
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
            // Bytes and words of every row's text (0 for a null or missing text).
            let sizes: Vec<(u64, u64)> = match batch
                .column_by_name(TEXT)
                .and_then(|c| c.as_any().downcast_ref::<StringArray>())
            {
                Some(t) => t
                    .iter()
                    .map(|t| {
                        let t = t.unwrap_or("");
                        (t.len() as u64, t.split_whitespace().count() as u64)
                    })
                    .collect(),
                None => vec![(0, 0); batch.num_rows()],
            };
            for &(bytes, words) in &sizes {
                out.all.docs += 1;
                out.all.bytes += bytes;
                out.all.words += words;
            }
            for (field, col) in batch.schema().fields().iter().zip(batch.columns()) {
                if field.name() == TEXT {
                    continue;
                }
                if field.name() == DUP_CLUSTER {
                    out.in_cluster += (col.len() - col.null_count()) as u64;
                    continue;
                }
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
                    for (v, &(bytes, words)) in s.iter().zip(&sizes) {
                        let t = c.entry(v.unwrap_or("(none)").to_string()).or_default();
                        t.docs += 1;
                        t.bytes += bytes;
                        t.words += words;
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

    #[test]
    fn cluster_sizes_are_bars_or_power_of_two_groups() {
        let few = BTreeMap::from([(2, 5), (3, 1), (9, 2)]);
        assert_eq!(
            size_bars(&few),
            [
                ("2 documents".to_string(), 5.0),
                ("3 documents".to_string(), 1.0),
                ("9 documents".to_string(), 2.0)
            ]
        );
        let many: BTreeMap<u64, u64> = (2..=40).map(|s| (s, 1)).collect();
        let bars = size_bars(&many);
        let labels: Vec<&str> = bars.iter().map(|(l, _)| l.as_str()).collect();
        assert_eq!(
            labels,
            [
                "2 documents",
                "3 documents",
                "4 documents",
                "5-8 documents",
                "9-16 documents",
                "17-32 documents",
                "33-64 documents"
            ]
        );
        // Every cluster is counted once.
        assert_eq!(bars.iter().map(|(_, n)| n).sum::<f64>(), 39.0);
        assert_eq!(bars[3].1, 4.0);
        assert_eq!(bars[6].1, 8.0);
    }

    /// The stages are rebuilt from the recorded config: their thresholds come back with the
    /// stage's name, a word list resolves against the output directory's parent, and a stage
    /// that cannot be rebuilt (its list moved, an unknown type) is a note, not an error.
    #[test]
    fn stages_are_rebuilt_from_the_manifest_or_noted() {
        let root = tempfile::tempdir().unwrap();
        let out = root.path().join("out");
        std::fs::create_dir(&out).unwrap();
        std::fs::write(root.path().join("words.txt"), "spam\n").unwrap();
        let m = Manifest::new(
            "build",
            serde_json::json!({"stages": [
                {"type": "gopher_quality", "name": "gq", "min_doc_words": 20},
                {"type": "lexicon", "name": "spam", "path": "words.txt", "max_score": 0.25},
                {"type": "lexicon", "name": "moved", "path": "gone.txt", "max_score": 0.5},
                {"type": "exact_dedup"},
                {"type": "no_such_stage"},
            ]}),
        );
        let built = rebuild_stages(&out, &m);
        let t: Vec<(&str, &str, f64)> = built
            .thresholds
            .iter()
            .map(|(s, t)| (s.as_str(), t.param.as_str(), t.value))
            .collect();
        assert!(t.contains(&("gq", "min_doc_words", 20.0)), "{t:?}");
        assert!(t.contains(&("spam", "max_score", 0.25)), "{t:?}");
        assert!(!t.iter().any(|(s, _, _)| *s == "moved"));
        assert_eq!(built.dedup, ["exact_dedup"]);
        let failed: Vec<&str> = built.failed.iter().map(|(s, _)| s.as_str()).collect();
        assert_eq!(failed, ["moved", "no_such_stage"]);
        let html = thresholds_table(&built);
        assert!(
            html.contains("<code>moved</code> could not be rebuilt"),
            "{html}"
        );
        assert!(html.contains("gone.txt"), "{html}");
        assert!(
            html.contains("<td>spam_score</td><td>&lt;= 0.25</td>"),
            "{html}"
        );
    }
}
