//! The build runner: streams every input through the stages, commits shards unit by unit,
//! and checks that every document is accounted for.
//!
//! Work is split into *phases* at each global stage. Phase 0 reads the inputs and runs the
//! map stages before the first global stage; phase k (k ≥ 1) gathers global stage k over
//! the whole output of phase k-1, then applies it and the map stages after it. A *unit* is
//! one input file in one phase; its shards are committed atomically and then recorded in
//! the manifest, so a killed build resumes from the last committed unit. Units run in
//! parallel (rayon); inside a unit, batches stream through the stages, so memory is bounded
//! by batch size × units in flight, not by corpus size.
//!
//! Output names depend only on the phase, the unit's input index and the shard's position,
//! and stages are deterministic, so a resumed build is byte-identical to an uninterrupted one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use arrow::array::{ArrayRef, RecordBatch, StringArray};
use arrow::datatypes::SchemaRef;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use quern_core::error::{Context, Error, Result};
use quern_core::manifest::{Accounting, FileCounts, Manifest, StageCounts, UnitRecord};
use quern_core::schema::{self, rejected_schema, DOC_COLUMNS};
use quern_core::shard::{read_shard, ShardOptions, ShardWriter};
use quern_core::stage::{apply_sequence, BatchCtx, Dropped, SeqCounts, Stage, StageKind};
use quern_core::StageRegistry;
use rayon::prelude::*;

use super::config::Pipeline;

/// How a build runs (flags, not configuration: they do not change the output).
#[derive(Debug, Clone, Default)]
pub struct BuildOptions {
    /// Replace an output directory that holds a different build.
    pub force: bool,
    /// Draw progress bars (only on a terminal).
    pub progress: bool,
}

/// What a finished build reports.
#[derive(Debug, Clone)]
pub struct BuildReport {
    pub out: PathBuf,
    pub accounting: Accounting,
    /// False when the output directory already held this complete build.
    pub ran: bool,
    pub seconds: f64,
}

/// Fault injection for the crash-and-resume tests, read from `QUERN_TEST_FAULT`:
/// `before_commit:N` aborts the process after the N-th unit's shards are written but before
/// the manifest records them; `after_commit:N` aborts right after the N-th commit.
/// `QUERN_TEST_UNIT_DELAY_MS` sleeps after each unit, so a test can SIGKILL mid-build.
/// Neither changes what a build writes. Only debug builds (which the integration tests run)
/// read these variables: a release build ignores them, so a stray variable cannot abort a
/// real build.
#[derive(Debug, Default)]
pub(crate) struct Faults {
    before_commit: Option<usize>,
    after_commit: Option<usize>,
    pub(crate) delay: Option<std::time::Duration>,
    committed: std::sync::atomic::AtomicUsize,
}

impl Faults {
    pub(crate) fn from_env() -> Self {
        Self::from_vars(|k| std::env::var(k).ok())
    }

    /// The faults the variables ask for (`var` looks one up), in a debug build.
    #[cfg(debug_assertions)]
    fn from_vars(var: impl Fn(&str) -> Option<String>) -> Self {
        let spec = var("QUERN_TEST_FAULT").unwrap_or_default();
        let parse = |prefix: &str| spec.strip_prefix(prefix).and_then(|n| n.parse().ok());
        Faults {
            before_commit: parse("before_commit:"),
            after_commit: parse("after_commit:"),
            delay: var("QUERN_TEST_UNIT_DELAY_MS")
                .and_then(|v| v.parse().ok())
                .map(std::time::Duration::from_millis),
            committed: Default::default(),
        }
    }

    /// No faults: a release build does not read the test variables.
    #[cfg(not(debug_assertions))]
    fn from_vars(_var: impl Fn(&str) -> Option<String>) -> Self {
        Faults::default()
    }

    /// Runs `commit` for one unit, with the configured faults around it.
    fn commit(&self, commit: impl FnOnce() -> Result<()>) -> Result<()> {
        let n = self.committed.load(std::sync::atomic::Ordering::SeqCst) + 1;
        if self.before_commit == Some(n) {
            std::process::abort();
        }
        commit()?;
        self.committed
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if self.after_commit == Some(n) {
            std::process::abort();
        }
        if let Some(d) = self.delay {
            std::thread::sleep(d);
        }
        Ok(())
    }
}

/// Table written by phase `p` when it is not the last phase.
fn work_table(p: usize) -> String {
    format!("_work/p{p}")
}

/// Builds every stage and checks that each reads only columns an earlier stage (or the
/// input) provides. Nothing is read.
pub fn build_stages(p: &Pipeline, reg: &StageRegistry) -> Result<Vec<Box<dyn Stage>>> {
    let mut stages = Vec::with_capacity(p.specs.len());
    let mut available: Vec<String> = DOC_COLUMNS.iter().map(|s| s.to_string()).collect();
    for spec in &p.specs {
        let stage = reg
            .build(spec)
            .map_err(|e| super::config::in_file(e, &p.file))?;
        for col in stage.reads() {
            if !available.contains(&col) {
                return Err(Error::bad_config(
                    spec.key.clone(),
                    format!(
                        "stage `{}` reads column `{col}`, which neither the input nor an earlier stage provides (available: {}) (in {})",
                        spec.name,
                        available.join(", "),
                        p.file.display()
                    ),
                ));
            }
        }
        for f in stage.adds() {
            if !available.contains(f.name()) {
                available.push(f.name().clone());
            }
        }
        stages.push(stage);
    }
    Ok(stages)
}

/// Splits stages into phases: phase 0 holds the map stages before the first global stage;
/// every later phase starts with a global stage.
pub(crate) fn phases(stages: &[Box<dyn Stage>]) -> Vec<Vec<&dyn Stage>> {
    let mut out: Vec<Vec<&dyn Stage>> = vec![Vec::new()];
    for s in stages {
        if s.kind() == StageKind::Global {
            out.push(Vec::new());
        }
        out.last_mut().expect("at least one phase").push(s.as_ref());
    }
    out
}

pub(crate) fn ingest_options(p: &Pipeline) -> Result<quern_ingest::IngestOptions> {
    let i = &p.config.input;
    let mut v = serde_json::json!({
        "text_field": i.text_field,
        "strict": i.strict,
        "batch_rows": i.batch_rows,
    });
    if let Some(f) = &i.format {
        v["format"] = f.clone().into();
    }
    if let Some(f) = &i.id_field {
        v["id_field"] = f.clone().into();
    }
    if let Some(f) = &i.source {
        v["source"] = f.clone().into();
    }
    if let Some(b) = i.max_page_bytes {
        v["max_page_bytes"] = b.into();
    }
    serde_json::from_value(v).map_err(|e| Error::bad_config("input", e.to_string()))
}

/// Converts rows a stage dropped into the fixed `rejected` schema: the four document
/// columns, `rejected_by`, `reason`, and `details` (every other column, as JSON).
pub fn to_rejected(d: &Dropped) -> Result<RecordBatch> {
    let b = &d.batch;
    let n = b.num_rows();
    let mut cols: Vec<ArrayRef> = Vec::with_capacity(7);
    for name in DOC_COLUMNS {
        let c = b.column_by_name(name).ok_or_else(|| {
            Error::bug(format!(
                "stage `{}` dropped rows without the `{name}` column",
                d.stage
            ))
        })?;
        cols.push(c.clone());
    }
    cols.push(std::sync::Arc::new(StringArray::from(vec![
        d.stage.as_str();
        n
    ])));
    cols.push(std::sync::Arc::new(StringArray::from(d.reasons.clone())));
    let others: Vec<usize> = b
        .schema()
        .fields()
        .iter()
        .enumerate()
        .filter(|(_, f)| !DOC_COLUMNS.contains(&f.name().as_str()))
        .map(|(i, _)| i)
        .collect();
    let details: ArrayRef = if others.is_empty() {
        std::sync::Arc::new(StringArray::new_null(n))
    } else {
        let proj = b.project(&others)?;
        let mut buf = Vec::new();
        {
            let mut w = arrow::json::LineDelimitedWriter::new(&mut buf);
            w.write(&proj)?;
            w.finish()?;
        }
        let text = String::from_utf8(buf).map_err(|e| Error::bug(e.to_string()))?;
        let lines: Vec<&str> = text.lines().collect();
        if lines.len() != n {
            return Err(Error::bug(format!(
                "details JSON has {} lines for {n} rows",
                lines.len()
            )));
        }
        std::sync::Arc::new(StringArray::from(lines))
    };
    cols.push(details);
    Ok(RecordBatch::try_new(rejected_schema(), cols)?)
}

/// Lazily opened shard writers for one unit, by table name.
struct UnitWriters<'a> {
    root: &'a Path,
    stem: String,
    opts: ShardOptions,
    writers: BTreeMap<String, ShardWriter>,
}

impl<'a> UnitWriters<'a> {
    fn new(root: &'a Path, stem: String, opts: ShardOptions) -> Self {
        UnitWriters {
            root,
            stem,
            opts,
            writers: BTreeMap::new(),
        }
    }

    fn write(&mut self, table: &str, batch: &RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        if !self.writers.contains_key(table) {
            let w = ShardWriter::new(
                self.root,
                table,
                &self.stem,
                batch.schema(),
                self.opts.clone(),
            )?;
            self.writers.insert(table.to_string(), w);
        }
        let w = self.writers.get_mut(table).expect("inserted above");
        if w.schema().fields() != batch.schema().fields() {
            // Stages may add a column only in some batches; that is a stage bug, named here.
            return Err(Error::bug(format!(
                "table `{table}` got batches with different columns in one unit: {:?} vs {:?}",
                field_names(w.schema()),
                field_names(&batch.schema())
            )));
        }
        w.write(batch)
    }

    fn finish(self) -> Result<BTreeMap<String, Vec<quern_core::shard::ShardInfo>>> {
        let mut out = BTreeMap::new();
        for (t, w) in self.writers {
            out.insert(t, w.finish()?);
        }
        Ok(out)
    }
}

/// A message to a unit's writer thread.
enum ToWriter {
    Batch(String, RecordBatch),
    /// Every batch is sent: commit the shards. Without it (the unit failed) the writer drops
    /// its unfinished shards.
    Finish,
}

/// The sending side of a unit's output: batches go through a two-batch queue to a writer
/// thread, so Parquet encoding and compression overlap with reading and the stages, and
/// memory stays bounded by the queue (as in `quern ingest`).
struct UnitSink {
    tx: std::sync::mpsc::SyncSender<ToWriter>,
}

impl UnitSink {
    fn write(&self, table: &str, batch: RecordBatch) -> Result<()> {
        if batch.num_rows() == 0 {
            return Ok(());
        }
        self.tx
            .send(ToWriter::Batch(table.to_string(), batch))
            // The writer only hangs up after an error, which `with_unit_writer` reports.
            .map_err(|_| Error::bug("the shard writer thread stopped early"))
    }

    /// Runs one batch through a phase's stages: kept rows to `table`, dropped rows to
    /// `rejected`, counts added to `counts` and shown on the progress display.
    fn run_segment(
        &self,
        seg: &[&dyn Stage],
        ctx: &BatchCtx,
        batch: RecordBatch,
        table: &str,
        counts: &mut Vec<StageCounts>,
        progress: &Progress,
    ) -> Result<()> {
        let outp = apply_sequence(seg, ctx, batch)?;
        progress.stage_batch(&outp.counts);
        merge_counts(counts, &outp.counts);
        for d in &outp.rejected {
            self.write(schema::REJECTED_TABLE, to_rejected(d)?)?;
        }
        self.write(table, outp.kept)
    }
}

type UnitTables = BTreeMap<String, Vec<quern_core::shard::ShardInfo>>;

/// Runs `body` with a sink whose batches a writer thread turns into this unit's shards;
/// returns `body`'s value and the committed shards. When `body` fails, nothing is committed.
/// A writer error (disk full, a stage sending mismatched columns) wins over the send error
/// it causes in `body`.
fn with_unit_writer<T>(
    root: &Path,
    stem: String,
    opts: ShardOptions,
    body: impl FnOnce(&UnitSink) -> Result<T>,
) -> Result<(T, UnitTables)> {
    std::thread::scope(|s| {
        let (tx, rx) = std::sync::mpsc::sync_channel::<ToWriter>(2);
        let writer = s.spawn(move || -> Result<Option<UnitTables>> {
            let mut w = UnitWriters::new(root, stem, opts);
            for msg in rx {
                match msg {
                    ToWriter::Batch(table, batch) => w.write(&table, &batch)?,
                    ToWriter::Finish => return w.finish().map(Some),
                }
            }
            Ok(None)
        });
        let sink = UnitSink { tx };
        let value = body(&sink);
        if value.is_ok() {
            // If the writer already stopped, its own error is reported below.
            let _ = sink.tx.send(ToWriter::Finish);
        }
        drop(sink);
        let written = writer
            .join()
            .map_err(|_| Error::bug("the shard writer thread panicked"))??;
        let value = value?;
        let tables =
            written.ok_or_else(|| Error::bug("the shard writer stopped without committing"))?;
        Ok((value, tables))
    })
}

/// Streams one unit's shards of the previous phase as batches, each with its place in the
/// unit (the same numbering for a global stage's gather and for its apply).
fn for_each_unit_batch(
    shards: &[PathBuf],
    batch_rows: usize,
    unit: usize,
    mut f: impl FnMut(&BatchCtx, RecordBatch) -> Result<()>,
) -> Result<()> {
    let mut first_row = 0u64;
    for shard in shards {
        for b in read_shard(shard, batch_rows)? {
            let b = b?;
            let ctx = BatchCtx {
                unit: unit as u64,
                first_row,
            };
            first_row += b.num_rows() as u64;
            f(&ctx, b)?;
        }
    }
    Ok(())
}

fn field_names(s: &SchemaRef) -> Vec<String> {
    s.fields().iter().map(|f| f.name().clone()).collect()
}

fn seq_to_stage_counts(c: &SeqCounts) -> StageCounts {
    StageCounts {
        stage: c.stage.clone(),
        input: c.input,
        kept: c.kept,
        rejected: c.input - c.kept,
        input_bytes: c.input_bytes,
        kept_bytes: c.kept_bytes,
        reasons: c.reasons.clone(),
    }
}

fn merge_counts(into: &mut Vec<StageCounts>, add: &[SeqCounts]) {
    for c in add {
        let sc = seq_to_stage_counts(c);
        match into.iter_mut().find(|x| x.stage == c.stage) {
            Some(x) => x.add(&sc),
            None => into.push(sc),
        }
    }
}

/// Progress display: one bar for the bytes read, one line per stage; and the time each
/// stage has spent, summed over the worker threads.
pub(crate) struct Progress {
    _multi: MultiProgress,
    input: ProgressBar,
    stages: BTreeMap<String, ProgressBar>,
    busy_nanos: BTreeMap<String, AtomicU64>,
}

impl Progress {
    pub(crate) fn new(enabled: bool, total_bytes: u64, stage_names: &[String]) -> Self {
        let multi = MultiProgress::with_draw_target(if enabled {
            ProgressDrawTarget::stderr_with_hz(5)
        } else {
            ProgressDrawTarget::hidden()
        });
        let input = multi.add(ProgressBar::new(total_bytes));
        input.set_style(
            ProgressStyle::with_template(
                "{prefix:>14} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta} {msg}",
            )
            .expect("valid template")
            .progress_chars("=> "),
        );
        input.set_prefix("read");
        let mut stages = BTreeMap::new();
        for name in stage_names {
            let pb = multi.add(ProgressBar::new_spinner());
            pb.set_style(
                ProgressStyle::with_template("{prefix:>14} {pos} docs in, {per_sec} {msg}")
                    .expect("valid template"),
            );
            pb.set_prefix(name.clone());
            stages.insert(name.clone(), pb);
        }
        Progress {
            _multi: multi,
            input,
            stages,
            busy_nanos: stage_names
                .iter()
                .map(|n| (n.clone(), AtomicU64::new(0)))
                .collect(),
        }
    }

    fn stage_batch(&self, counts: &[SeqCounts]) {
        for c in counts {
            if let Some(pb) = self.stages.get(&c.stage) {
                pb.inc(c.input);
            }
            self.add_busy(&c.stage, c.nanos);
        }
    }

    fn add_busy(&self, stage: &str, nanos: u64) {
        if let Some(b) = self.busy_nanos.get(stage) {
            b.fetch_add(nanos, Ordering::Relaxed);
        }
    }

    /// Seconds per stage, in pipeline order.
    pub(crate) fn busy_seconds(
        &self,
        names: &[String],
    ) -> serde_json::Map<String, serde_json::Value> {
        names
            .iter()
            .map(|n| {
                let ns = self
                    .busy_nanos
                    .get(n)
                    .map_or(0, |b| b.load(Ordering::Relaxed));
                (n.clone(), serde_json::json!(ns as f64 / 1e9))
            })
            .collect()
    }

    fn finish(&self) {
        self.input.finish_and_clear();
        for pb in self.stages.values() {
            pb.finish_and_clear();
        }
    }
}

fn nanos_since(t: Instant) -> u64 {
    u64::try_from(t.elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// One input file of phase 0: what [`run_input_unit`] needs.
pub(crate) struct InputUnit<'a> {
    pub seg: &'a [&'a dyn Stage],
    pub ingest_opts: &'a quern_ingest::IngestOptions,
    pub idx: usize,
    pub file: &'a Path,
    /// The file's name in document ids (see [`quern_ingest::relative_names`]).
    pub name: &'a str,
    /// The table kept documents go to.
    pub table: &'a str,
    pub out: &'a Path,
    pub shard_opts: &'a ShardOptions,
    pub progress: &'a Progress,
}

/// Reads one input file through phase 0's map stages and writes its shards; returns the unit
/// record to commit (uncommitted: the caller records it in the manifest). The local runner
/// and the cluster build's executors (`crate::cluster::build`) both run units through here.
pub(crate) fn run_input_unit(u: &InputUnit) -> Result<UnitRecord> {
    let InputUnit {
        seg,
        ingest_opts,
        idx,
        file,
        name,
        table,
        out,
        shard_opts,
        progress,
    } = *u;
    let stem = format!("p0-u{idx:05}");
    let unit = with_unit_writer(out, stem, shard_opts.clone(), |writers| {
        let mut counts: Vec<StageCounts> = Vec::new();
        let mut first_row = 0u64;
        let (mut seen_docs, mut seen_quarantined, mut seen_bytes) = (0u64, 0u64, 0u64);
        let mut sink_failed = false;
        // A reader that rejects records itself (WARC) counts them as a stage of
        // its own, first in the funnel.
        let reader_rejects = ingest_opts.format_of(file).ok() == Some(quern_ingest::Format::Warc);
        let mut reader_stage = StageCounts::default();
        let mut sink = |chunk: quern_ingest::Chunk| -> Result<()> {
            progress.input.inc(chunk.bytes);
            seen_bytes += chunk.bytes;
            seen_quarantined += chunk.quarantine.num_rows() as u64;
            if reader_rejects {
                quern_ingest::count_reader_stage(&chunk, &mut reader_stage);
            }
            seen_docs += chunk.rejected.num_rows() as u64;
            writers.write(schema::QUARANTINE_TABLE, chunk.quarantine)?;
            writers.write(schema::REJECTED_TABLE, chunk.rejected)?;
            let n = chunk.docs.num_rows() as u64;
            seen_docs += n;
            let ctx = BatchCtx {
                unit: idx as u64,
                first_row,
            };
            first_row += n;
            writers.run_segment(seg, &ctx, chunk.docs, table, &mut counts, progress)
        };
        let mut on_chunk = |chunk: quern_ingest::Chunk| -> Result<()> {
            let r = sink(chunk);
            sink_failed |= r.is_err();
            r
        };
        let read = quern_ingest::read_file_named(file, name, ingest_opts, &mut on_chunk);
        let fc: FileCounts = match read {
            Ok(fc) => fc,
            // A broken file (truncated archive, corrupt Parquet): what was read before the
            // break is kept and the break is quarantined with its offset by the reader;
            // the build goes on unless the input is strict.
            Err(e)
                if !ingest_opts.strict
                    && !sink_failed
                    && !matches!(
                        e.root(),
                        Error::BadConfig { .. } | Error::Usage(_) | Error::Bug(_)
                    ) =>
            {
                progress.input.println(format!(
                    "warning: {e} (kept what was read before the break)"
                ));
                FileCounts {
                    file: file.display().to_string(),
                    records: seen_docs + seen_quarantined,
                    ingested: seen_docs,
                    quarantined: seen_quarantined,
                    bytes: seen_bytes,
                }
            }
            Err(e) => {
                return Err(e).with_context(|| format!("reading {}", file.display()));
            }
        };
        if reader_rejects {
            reader_stage.stage = quern_ingest::READER_STAGE.to_string();
            counts.insert(0, reader_stage);
        }
        Ok((fc, counts))
    });
    let ((fc, counts), tables) = unit?;
    Ok(UnitRecord {
        tables,
        files: vec![fc],
        stages: counts,
    })
}

/// Where a build starts: a finished output directory (its report, nothing to run), or the
/// input files, the manifest (saved, so the directory is claimed) and whether units were
/// committed already. The local and the cluster build both start here.
pub(crate) enum Opened {
    Done(BuildReport),
    Todo(Todo),
}

/// A build with work left: its input files, their names in the manifest, the manifest, and
/// whether an earlier run's units are being resumed.
pub(crate) struct Todo {
    pub files: Vec<PathBuf>,
    pub file_names: Vec<String>,
    pub manifest: Manifest,
    pub resumed: bool,
}

pub(crate) fn open_build(p: &Pipeline, opts: &BuildOptions) -> Result<Opened> {
    let files = quern_ingest::expand_inputs(&p.input_paths()).context("expanding [input] paths")?;
    if files.is_empty() {
        return Err(Error::bad_config("input.paths", "matched no files"));
    }
    let file_names = quern_ingest::relative_names(&files);
    let manifest = Manifest::open_output(&p.out, "build", p.manifest_config(), opts.force)?;
    if manifest.complete {
        let accounting = manifest
            .accounting
            .clone()
            .unwrap_or_else(|| manifest.compute_accounting());
        return Ok(Opened::Done(BuildReport {
            out: p.out.clone(),
            accounting,
            ran: false,
            seconds: 0.0,
        }));
    }
    let resumed = !manifest.units.is_empty();
    // Claim the directory before the first shard lands, so a crash before the first commit
    // leaves a directory this build recognises and resumes.
    manifest.save(&p.out)?;
    Ok(Opened::Todo(Todo {
        files,
        file_names,
        manifest,
        resumed,
    }))
}

/// Runs a build. See the [module docs](self).
pub fn run_build(p: &Pipeline, reg: &StageRegistry, opts: &BuildOptions) -> Result<BuildReport> {
    let started = Instant::now();
    let stages = build_stages(p, reg)?;
    let ingest_opts = ingest_options(p)?;
    let Todo {
        files,
        file_names,
        mut manifest,
        resumed,
    } = match open_build(p, opts)? {
        Opened::Done(report) => return Ok(report),
        Opened::Todo(todo) => todo,
    };
    let phases = phases(&stages);
    let faults = Faults::from_env();
    let shard_opts = p.config.output.shard_options();
    let total_bytes: u64 = files
        .iter()
        .map(|f| std::fs::metadata(f).map(|m| m.len()).unwrap_or(0))
        .sum();
    let names: Vec<String> = stages.iter().map(|s| s.name().to_string()).collect();
    let progress = Progress::new(opts.progress, total_bytes, &names);
    let out = p.out.as_path();
    let last = phases.len() - 1;
    let docs_table = |phase: usize| {
        if phase == last {
            schema::DOCS_TABLE.to_string()
        } else {
            work_table(phase)
        }
    };

    // Phase 0: read inputs, run the first map stages.
    {
        let manifest_lock = Mutex::new(&mut manifest);
        let seg = &phases[0];
        files
            .par_iter()
            .enumerate()
            .try_for_each(|(idx, file)| -> Result<()> {
                let key = format!("p0/{idx:05}");
                if manifest_lock
                    .lock()
                    .expect("manifest lock")
                    .units
                    .contains_key(&key)
                {
                    progress
                        .input
                        .inc(std::fs::metadata(file).map(|m| m.len()).unwrap_or(0));
                    return Ok(());
                }
                let rec = run_input_unit(&InputUnit {
                    seg,
                    ingest_opts: &ingest_opts,
                    idx,
                    file,
                    name: &file_names[idx],
                    table: &docs_table(0),
                    out,
                    shard_opts: &shard_opts,
                    progress: &progress,
                })?;
                let mut m = manifest_lock.lock().expect("manifest lock");
                faults.commit(|| {
                    m.units.insert(key, rec);
                    m.save(out)
                })
            })?;
    }

    // Later phases: gather the global stage over the previous phase's output, then apply.
    for (phase, seg) in phases.iter().enumerate().skip(1) {
        let prev = work_table(phase - 1);
        let shards_of: Vec<Vec<PathBuf>> = (0..files.len())
            .map(|idx| {
                manifest
                    .units
                    .get(&format!("p{}/{idx:05}", phase - 1))
                    .and_then(|u| u.tables.get(&prev))
                    .map(|v| v.iter().map(|s| out.join(&s.file)).collect())
                    .unwrap_or_default()
            })
            .collect();
        let pending: Vec<usize> = (0..files.len())
            .filter(|i| !manifest.units.contains_key(&format!("p{phase}/{i:05}")))
            .collect();
        if pending.is_empty() {
            continue;
        }
        let global = seg[0];
        let batch_rows = p.config.input.batch_rows;
        shards_of
            .par_iter()
            .enumerate()
            .try_for_each(|(idx, shards)| -> Result<()> {
                for_each_unit_batch(shards, batch_rows, idx, |ctx, b| {
                    let t = Instant::now();
                    let r = global
                        .gather(ctx, &b)
                        .with_context(|| format!("stage `{}` gathering", global.name()));
                    progress.add_busy(global.name(), nanos_since(t));
                    r
                })
            })?;
        let t = Instant::now();
        global
            .end_gather()
            .with_context(|| format!("stage `{}`", global.name()))?;
        progress.add_busy(global.name(), nanos_since(t));
        let table = docs_table(phase);
        let manifest_lock = Mutex::new(&mut manifest);
        pending.par_iter().try_for_each(|&idx| -> Result<()> {
            let stem = format!("p{phase}-u{idx:05}");
            let (counts, tables) = with_unit_writer(out, stem, shard_opts.clone(), |writers| {
                let mut counts = Vec::new();
                for_each_unit_batch(&shards_of[idx], batch_rows, idx, |ctx, b| {
                    writers.run_segment(seg, ctx, b, &table, &mut counts, &progress)
                })?;
                Ok(counts)
            })?;
            let rec = UnitRecord {
                tables,
                files: Vec::new(),
                stages: counts,
            };
            let mut m = manifest_lock.lock().expect("manifest lock");
            faults.commit(|| {
                m.units.insert(format!("p{phase}/{idx:05}"), rec);
                m.save(out)
            })
        })?;
    }
    progress.finish();
    finish_build(
        p,
        manifest,
        &names,
        started,
        resumed,
        progress.busy_seconds(&names),
    )
}

/// Ends a build whose every unit is committed: checks the books, drops the work tables,
/// marks the manifest complete and writes report.json and report.html. `stage_seconds` is
/// the time each stage took, summed over workers (for report.json).
pub(crate) fn finish_build(
    p: &Pipeline,
    mut manifest: Manifest,
    names: &[String],
    started: Instant,
    resumed: bool,
    stage_seconds: serde_json::Map<String, serde_json::Value>,
) -> Result<BuildReport> {
    let out = p.out.as_path();

    // Every unit of every phase is committed: check the books, drop the work tables.
    let mut accounting = manifest.compute_accounting();
    // Stages in pipeline order (units list them per phase), after the reader's own
    // rejections (WARC input).
    accounting.stages.sort_by_key(|s| {
        if s.stage == quern_ingest::READER_STAGE && !names.contains(&s.stage) {
            return 0;
        }
        names
            .iter()
            .position(|n| *n == s.stage)
            .map_or(usize::MAX, |p| p + 1)
    });
    accounting
        .check()
        .context("checking that every input document is accounted for")?;
    for u in manifest.units.values_mut() {
        u.tables.retain(|t, _| !t.starts_with("_work/"));
    }
    let work = out.join("_work");
    if work.exists() {
        std::fs::remove_dir_all(&work).map_err(|e| Error::io(&work, e))?;
    }
    manifest.accounting = Some(accounting.clone());
    manifest.complete = true;
    manifest.save(out)?;
    // Time is the one thing that differs between two runs of the same build, so it lives
    // here and not in the manifest. A resumed build only timed what this process ran.
    let report = serde_json::json!({
        "accounting": accounting,
        "timing": {
            "wall_seconds": started.elapsed().as_secs_f64(),
            "resumed": resumed,
            "stage_seconds": stage_seconds,
        },
    });
    quern_core::shard::write_atomic(
        &out.join("report.json"),
        &serde_json::to_vec_pretty(&report)?,
    )?;
    // The page people look at, made from report.json and the manifest alone (issue 19).
    let html = crate::report::build_html(out).context("writing the build's report.html")?;
    quern_core::shard::write_atomic(&out.join(crate::report::REPORT_HTML), html.as_bytes())?;
    Ok(BuildReport {
        out: p.out.clone(),
        accounting,
        ran: true,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// The funnel table printed at the end of a build.
pub fn funnel_table(a: &Accounting) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<24} {:>10} {:>10} {:>10}  top reasons",
        "stage", "in", "kept", "rejected"
    );
    let _ = writeln!(
        s,
        "{:<24} {:>10} {:>10} {:>10}",
        "input",
        a.input,
        a.input - a.quarantined,
        ""
    );
    let _ = writeln!(
        s,
        "{:<24} {:>10} {:>10} {:>10}",
        "  quarantined", "", "", a.quarantined
    );
    for st in &a.stages {
        let mut reasons: Vec<(&String, &u64)> = st.reasons.iter().collect();
        reasons.sort_by(|x, y| y.1.cmp(x.1).then(x.0.cmp(y.0)));
        let top: Vec<String> = reasons
            .iter()
            .take(3)
            .map(|(r, n)| format!("{r}={n}"))
            .collect();
        let _ = writeln!(
            s,
            "{:<24} {:>10} {:>10} {:>10}  {}",
            st.stage,
            st.input,
            st.kept,
            st.rejected,
            top.join(" ")
        );
    }
    let _ = writeln!(
        s,
        "{:<24} {:>10} = kept {} + rejected {} + quarantined {}",
        "total", a.input, a.kept, a.rejected, a.quarantined
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fault variables are read by debug builds only (issue 19: they shipped in release
    /// binaries, where `QUERN_TEST_FAULT=before_commit:1` aborted a real build).
    #[test]
    fn fault_injection_is_compiled_into_debug_builds_only() {
        let vars = |k: &str| match k {
            "QUERN_TEST_FAULT" => Some("before_commit:3".to_string()),
            "QUERN_TEST_UNIT_DELAY_MS" => Some("60".to_string()),
            _ => None,
        };
        let f = Faults::from_vars(vars);
        if cfg!(debug_assertions) {
            assert_eq!(f.before_commit, Some(3));
            assert_eq!(f.delay, Some(std::time::Duration::from_millis(60)));
        } else {
            assert_eq!(
                f.before_commit, None,
                "a release build read QUERN_TEST_FAULT"
            );
            assert_eq!(
                f.delay, None,
                "a release build read QUERN_TEST_UNIT_DELAY_MS"
            );
        }
        assert_eq!(f.after_commit, None);
    }
}
