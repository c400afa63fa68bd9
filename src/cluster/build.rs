//! `quern build --cluster HOST:PORT`: a build whose units run on Ballista's executors.
//!
//! The build is one DataFusion plan over a table with one row (and one partition) per input
//! file not yet committed: `SELECT unit, quern_build_unit(job) FROM units`. Ballista runs a
//! task per partition on the executors; [`UNIT_FN`] reads its file and streams the record
//! batches through the pipeline's map stages with the local runner's own code
//! ([`run_input_unit`]), writes the unit's shards into the output directory (on storage every
//! node sees) and returns the unit's record. The client commits the records to the manifest
//! and finishes the build as a local one does ([`finish_build`]): the same shards, manifest,
//! accounting and reports, byte for byte, as a local build of the pipeline given by its
//! absolute path.
//!
//! A unit is the local build's unit, and a task's output is written under the unit's own
//! names, so a task that Ballista runs again (its executor died) rewrites the same files; a
//! unit that finished on a dead executor but was not committed is removed as unclaimed when
//! the build resumes. Global stages (exact and MinHash dedup, split) are not distributed yet:
//! a pipeline with one is refused before anything is written, naming the stage.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context as _};
use arrow::array::{Array, AsArray, RecordBatch, StringArray, StringBuilder, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema, UInt64Type};
use datafusion::datasource::MemTable;
use datafusion::error::DataFusionError;
use datafusion::logical_expr::{create_udf, ColumnarValue, Volatility};
use datafusion::prelude::{SessionConfig, SessionContext};
use quern_core::manifest::{config_hash, Manifest, UnitRecord};
use quern_core::schema::DOCS_TABLE;
use quern_core::stage::{Stage, StageKind};
use serde::{Deserialize, Serialize};

use crate::pipeline::runner::{
    build_stages, finish_build, ingest_options, open_build, run_input_unit, Faults, InputUnit,
    Opened, Progress, Todo,
};
use crate::pipeline::{BuildOptions, BuildReport, Pipeline};

/// The SQL function an executor runs one unit of a build with.
pub const UNIT_FN: &str = "quern_build_unit";

/// The table of pending units in the client's plan.
const UNITS_TABLE: &str = "quern_build_units";

/// One unit, as the client hands it to an executor (JSON in the `job` column).
#[derive(Debug, Serialize, Deserialize)]
struct UnitJob {
    /// The pipeline as TOML, with `file` (named in errors) and the absolute `base` its
    /// relative paths resolve against.
    pipeline: String,
    file: PathBuf,
    base: PathBuf,
    unit: usize,
    /// The input file, and its name in document ids.
    path: PathBuf,
    name: String,
}

/// What an executor returns for a unit (JSON).
#[derive(Debug, Serialize, Deserialize)]
struct UnitDone {
    record: UnitRecord,
    stage_seconds: serde_json::Map<String, serde_json::Value>,
}

/// Registers [`UNIT_FN`] on a cluster node.
pub fn register(ctx: &SessionContext) {
    ctx.register_udf(create_udf(
        UNIT_FN,
        vec![DataType::Utf8],
        DataType::Utf8,
        // It writes files: never folded, merged or skipped by the optimizer.
        Volatility::Volatile,
        Arc::new(
            |args: &[ColumnarValue]| -> datafusion::error::Result<ColumnarValue> {
                let arrays = ColumnarValue::values_to_arrays(args)?;
                let jobs = arrays[0].as_string_opt::<i32>().ok_or_else(|| {
                    DataFusionError::Execution(format!("{UNIT_FN} takes a string"))
                })?;
                let mut out = StringBuilder::new();
                for job in jobs.iter() {
                    match job {
                        None => out.append_null(),
                        Some(job) => {
                            let done = run_unit(job).map_err(|e| {
                                DataFusionError::Execution(format!("{UNIT_FN}: {e:#}"))
                            })?;
                            out.append_value(done);
                        }
                    }
                }
                Ok(ColumnarValue::Array(Arc::new(out.finish())))
            },
        ),
    ));
}

/// The first global stage of a pipeline, which the cluster build cannot run yet.
fn refuse_global(stages: &[Box<dyn Stage>], p: &Pipeline) -> anyhow::Result<()> {
    if let Some((s, spec)) = stages
        .iter()
        .zip(&p.specs)
        .find(|(s, _)| s.kind() == StageKind::Global)
    {
        bail!(
            "`quern build --cluster` cannot run stage `{}` (type `{}`, {} in {}) yet: it is a \
             global stage (it sees the whole corpus before it decides), and only map stages run \
             on the cluster so far; build this pipeline without --cluster",
            s.name(),
            spec.type_name,
            spec.key,
            p.file.display()
        );
    }
    Ok(())
}

/// Runs one unit on an executor; returns its [`UnitDone`] as JSON.
fn run_unit(job: &str) -> anyhow::Result<String> {
    let job: UnitJob = serde_json::from_str(job).context("reading the unit's job")?;
    let p = Pipeline::parse(&job.pipeline, &job.file, &job.base)?;
    // Only a build the client has claimed (an incomplete manifest of this very config) is
    // written to: the function cannot be pointed at another directory from SQL.
    let want = config_hash(&p.manifest_config());
    match Manifest::load(&p.out)? {
        Some(m) if m.kind == "build" && !m.complete && m.config_hash == want => {}
        _ => bail!(
            "{} holds no unfinished build of this pipeline: {UNIT_FN} only runs units of a \
             `quern build --cluster`",
            p.out.display()
        ),
    }
    let reg = crate::stages::registry();
    let stages = build_stages(&p, &reg)?;
    refuse_global(&stages, &p)?;
    let seg: Vec<&dyn Stage> = stages.iter().map(|s| s.as_ref()).collect();
    let names: Vec<String> = stages.iter().map(|s| s.name().to_string()).collect();
    let ingest_opts = ingest_options(&p)?;
    let progress = Progress::new(false, 0, &names);
    let record = run_input_unit(&InputUnit {
        seg: &seg,
        ingest_opts: &ingest_opts,
        idx: job.unit,
        file: &job.path,
        name: &job.name,
        table: DOCS_TABLE,
        out: &p.out,
        shard_opts: &p.config.output.shard_options(),
        progress: &progress,
    })?;
    // The kill tests' window (debug builds only, as the local runner's).
    if let Some(d) = Faults::from_env().delay {
        std::thread::sleep(d);
    }
    Ok(serde_json::to_string(&UnitDone {
        record,
        stage_seconds: progress.busy_seconds(&names),
    })?)
}

/// The pipeline with its base directory made absolute, so every node resolves its paths
/// alike; returns it with the TOML text the executors parse.
fn absolute_pipeline(p: &Pipeline) -> anyhow::Result<(Pipeline, String)> {
    let base =
        std::path::absolute(&p.base).with_context(|| format!("resolving {}", p.base.display()))?;
    let text = toml::to_string(&p.config).context("writing the pipeline for the executors")?;
    let abs = Pipeline::parse(&text, &p.file, &base)?;
    Ok((abs, text))
}

/// Runs the build of `pipeline` on the cluster whose scheduler is at `scheduler`
/// (HOST:PORT). See the [module docs](self).
pub fn run(
    pipeline: &Pipeline,
    scheduler: &str,
    opts: &BuildOptions,
) -> anyhow::Result<BuildReport> {
    let started = Instant::now();
    let (p, text) = absolute_pipeline(pipeline)?;
    let reg = crate::stages::registry();
    let stages = build_stages(&p, &reg)?;
    refuse_global(&stages, &p)?;
    ingest_options(&p)?;
    let url = super::check_scheduler(scheduler)?;
    let Todo {
        files,
        file_names,
        mut manifest,
        resumed,
    } = match open_build(&p, opts)? {
        Opened::Done(report) => return Ok(report),
        Opened::Todo(todo) => todo,
    };
    let key = |idx: usize| format!("p0/{idx:05}");
    let pending: Vec<usize> = (0..files.len())
        .filter(|&i| !manifest.units.contains_key(&key(i)))
        .collect();
    let names: Vec<String> = stages.iter().map(|s| s.name().to_string()).collect();
    let mut stage_seconds: serde_json::Map<String, serde_json::Value> = names
        .iter()
        .map(|n| (n.clone(), serde_json::json!(0.0)))
        .collect();

    if !pending.is_empty() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("unit", DataType::UInt64, false),
            Field::new("job", DataType::Utf8, false),
        ]));
        // One partition per unit: Ballista runs one task per partition.
        let mut partitions = Vec::with_capacity(pending.len());
        for &idx in &pending {
            let job = UnitJob {
                pipeline: text.clone(),
                file: p.file.clone(),
                base: p.base.clone(),
                unit: idx,
                // Absolute, as the pipeline's base is: the same file on every node.
                path: files[idx].clone(),
                name: file_names[idx].clone(),
            };
            let batch = RecordBatch::try_new(
                schema.clone(),
                vec![
                    Arc::new(UInt64Array::from(vec![idx as u64])),
                    Arc::new(StringArray::from(vec![serde_json::to_string(&job)?])),
                ],
            )?;
            partitions.push(vec![batch]);
        }
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .context("starting the client runtime")?;
        let config = SessionConfig::new().with_target_partitions(pending.len());
        let batches = rt.block_on(async {
            let ctx = super::client_context(&url, config)?;
            ctx.register_table(
                UNITS_TABLE,
                Arc::new(MemTable::try_new(schema, partitions)?),
            )?;
            let df = ctx
                .sql(&format!(
                    "SELECT unit, {UNIT_FN}(job) AS done FROM {UNITS_TABLE}"
                ))
                .await?;
            df.collect()
                .await
                .map_err(anyhow::Error::from)
                .with_context(|| {
                    format!(
                        "the build's job on the cluster at {scheduler} failed; the units \
                         committed so far are kept in {}, and running the same command again \
                         resumes from them",
                        p.out.display()
                    )
                })
        })?;
        let mut seen = std::collections::BTreeSet::new();
        for b in &batches {
            let units = b.column(0).as_primitive::<UInt64Type>();
            let done = b.column(1).as_string::<i32>();
            for i in 0..b.num_rows() {
                let idx = units.value(i) as usize;
                if done.is_null(i) || !seen.insert(idx) {
                    bail!("the cluster returned unit {idx} twice or without a result");
                }
                let d: UnitDone = serde_json::from_str(done.value(i))
                    .with_context(|| format!("reading the result of unit {idx}"))?;
                for (k, v) in d.stage_seconds {
                    let add = v.as_f64().unwrap_or(0.0);
                    let e = stage_seconds.entry(k).or_insert(serde_json::json!(0.0));
                    *e = serde_json::json!(e.as_f64().unwrap_or(0.0) + add);
                }
                manifest.units.insert(key(idx), d.record);
            }
        }
        if let Some(missing) = pending.iter().find(|i| !seen.contains(i)) {
            bail!(
                "the cluster returned no result for unit {missing} ({})",
                files[*missing].display()
            );
        }
        manifest.save(&p.out)?;
    }
    // A task whose executor died mid-unit left temporary files, and one that finished on an
    // executor lost before the result came back, shards nobody committed (its unit ran
    // again elsewhere under the same names): neither belongs to the build.
    quern_core::manifest::remove_unclaimed_shards(&p.out, &manifest)?;
    Ok(finish_build(
        &p,
        manifest,
        &names,
        started,
        resumed,
        stage_seconds,
    )?)
}
