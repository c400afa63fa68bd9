//! The ingest runner behind `quern ingest`: input files to committed shards and a manifest.
//!
//! Inputs (files, folders, globs) are expanded into a sorted list; each file is one unit of
//! work (consecutive small text files are grouped, so a folder of thousands of `.txt` files
//! does not become thousands of shards). Units run in parallel with rayon; inside a unit the
//! reader (itself parallel over batches) and the shard writer run pipelined on two threads.
//! Shard names derive from the unit's index (`docs/part-000004-00000.parquet`), so the
//! output is the same whatever order units finish in.
//!
//! Each unit's shards are committed, then the manifest is rewritten with the unit: a rerun
//! of the same ingest skips committed units, a different ingest into the same directory is
//! refused unless `force`. The accounting (`records = ingested + quarantined`, per file and
//! in total, against the rows of the committed shards) is checked before success. A file
//! that could not be read to the end keeps what was read before the break (the break is
//! quarantined with its offset), and is reported in [`IngestReport::failures`]; the manifest
//! is then not marked complete.
//!
//! It lives in this crate rather than in the binary so that the benchmark can run exactly
//! this code without building the whole `quern` binary.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::sync_channel;
use std::sync::Mutex;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};
use quern_core::manifest::{Accounting, FileCounts, Manifest, StageCounts, UnitRecord};
use quern_core::schema::{doc_schema, quarantine_schema, rejected_schema};
use quern_core::shard::{ShardOptions, ShardWriter};
use quern_core::{Context, Error, Result};
use rayon::prelude::*;

use crate::{expand_inputs, read_file_named, relative_names, Chunk, Format, IngestOptions};

/// What an ingest did.
#[derive(Debug, Clone)]
pub struct IngestReport {
    /// The checked accounting over every committed unit (this run's and earlier ones').
    pub accounting: Accounting,
    /// Files that could not be read to the end, with the error (path, message).
    pub failures: Vec<(String, String)>,
    /// Units already committed by an earlier run of the same ingest, skipped.
    pub skipped_units: usize,
    pub units: usize,
    /// True when every unit was already committed by an earlier run that had failures.
    pub previously_failed: bool,
    pub seconds: f64,
}

impl IngestReport {
    /// The per-file table `records = ingested + quarantined`, with a total line.
    pub fn table(&self) -> String {
        use std::fmt::Write as _;
        let files = &self.accounting.files;
        let w = files.iter().map(|f| f.file.len()).max().unwrap_or(4).max(5);
        let mut s = String::new();
        let _ = writeln!(
            s,
            "{:<w$}  {:>12} = {:>12} + {:>12}",
            "file", "records", "ingested", "quarantined"
        );
        for f in files {
            let mark = if self.failures.iter().any(|(p, _)| *p == f.file) {
                "  (broken: read up to the break)"
            } else {
                ""
            };
            let _ = writeln!(
                s,
                "{:<w$}  {:>12} = {:>12} + {:>12}{mark}",
                f.file, f.records, f.ingested, f.quarantined
            );
        }
        let (r, i, q) = files.iter().fold((0, 0, 0), |(r, i, q), f| {
            (r + f.records, i + f.ingested, q + f.quarantined)
        });
        let _ = writeln!(s, "{:<w$}  {:>12} = {:>12} + {:>12}", "total", r, i, q);
        s
    }
}

/// One unit of work: a file, or a run of consecutive small text files.
struct Unit {
    index: usize,
    files: Vec<usize>,
}

/// Text files grouped into one unit, at most this many…
const TEXT_GROUP_FILES: usize = 1000;
/// …and about this many bytes.
const TEXT_GROUP_BYTES: u64 = 64 << 20;

fn units(files: &[PathBuf], opts: &IngestOptions, sizes: &[u64]) -> Result<Vec<Unit>> {
    let mut out: Vec<Unit> = Vec::new();
    let mut group_bytes = 0u64;
    let mut open_text = false;
    for (i, f) in files.iter().enumerate() {
        let text = opts.format_of(f)? == Format::Text;
        let fits = out.last().is_some_and(|u| u.files.len() < TEXT_GROUP_FILES)
            && group_bytes + sizes[i] <= TEXT_GROUP_BYTES;
        if text && open_text && fits {
            out.last_mut().expect("open group").files.push(i);
            group_bytes += sizes[i];
        } else {
            out.push(Unit {
                index: out.len(),
                files: vec![i],
            });
            group_bytes = sizes[i];
            open_text = text;
        }
    }
    Ok(out)
}

/// What one unit produced.
struct Done {
    record: UnitRecord,
    /// Files that broke, with the error.
    failures: Vec<(String, String)>,
}

/// Ingests `inputs` into `out`: `out/docs/`, `out/quarantine/` and `out/manifest.json`.
/// `progress` shows an indicatif bar on stderr (hidden when stderr is not a terminal).
pub fn ingest_to_dir(
    inputs: &[String],
    out: &Path,
    opts: &IngestOptions,
    force: bool,
    progress: bool,
) -> Result<IngestReport> {
    opts.validate()?;
    let files = expand_inputs(inputs)?;
    let names = relative_names(&files);
    let sizes: Vec<u64> = files
        .iter()
        .map(|f| std::fs::metadata(f).map(|m| m.len()).unwrap_or(0))
        .collect();
    let units = units(&files, opts, &sizes)?;
    let config = serde_json::json!({ "options": opts, "inputs": inputs });
    let manifest = Manifest::open_output(out, "ingest", config, force)?;
    let key = |u: &Unit| format!("{:06}", u.index);
    let todo: Vec<&Unit> = units
        .iter()
        .filter(|u| !manifest.units.contains_key(&key(u)))
        .collect();
    let skipped = units.len() - todo.len();
    let previously_failed = skipped == units.len()
        && !manifest.complete
        && !manifest.units.is_empty()
        && manifest.accounting.is_some();

    let total: u64 = sizes.iter().sum();
    let pb = if progress {
        ProgressBar::new(total)
    } else {
        ProgressBar::hidden()
    };
    pb.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} ({bytes_per_sec}, ETA {eta}) {msg}")
            .map_err(|e| Error::bug(format!("progress template: {e}")))?,
    );
    let done_bytes: u64 = units
        .iter()
        .filter(|u| manifest.units.contains_key(&key(u)))
        .flat_map(|u| &u.files)
        .map(|&i| sizes[i])
        .sum();
    pb.inc(done_bytes);
    if skipped > 0 {
        pb.println(format!(
            "resuming: {skipped} of {} units already committed in {}",
            units.len(),
            out.display()
        ));
    }
    let docs_seen = AtomicU64::new(0);
    let started = Instant::now();
    let manifest = Mutex::new(manifest);

    let results: Vec<Result<Done>> = todo
        .par_iter()
        .map(|u| {
            let stem = format!("part-{:06}", u.index);
            let mut docs_w =
                ShardWriter::new(out, "docs", &stem, doc_schema(), ShardOptions::default())?;
            let mut q_w = ShardWriter::new(
                out,
                "quarantine",
                &stem,
                quarantine_schema(),
                ShardOptions::default(),
            )?;
            // Readers that reject records themselves (WARC: request records, redirects,
            // non-HTML pages) write `rejected/` and count their rejections as a stage.
            let rejecting = u
                .files
                .iter()
                .any(|&fi| opts.format_of(&files[fi]).ok() == Some(Format::Warc));
            let mut rej_w = if rejecting {
                Some(ShardWriter::new(
                    out,
                    "rejected",
                    &stem,
                    rejected_schema(),
                    ShardOptions::default(),
                )?)
            } else {
                None
            };
            let mut reader_stage = StageCounts {
                stage: crate::READER_STAGE.to_string(),
                ..Default::default()
            };
            let mut done = Done {
                record: UnitRecord::default(),
                failures: Vec::new(),
            };
            for &fi in &u.files {
                let path = &files[fi];
                let mut counts = FileCounts {
                    file: path.display().to_string(),
                    bytes: sizes[fi],
                    ..Default::default()
                };
                let (read, wrote) = std::thread::scope(|s| {
                    let (tx, rx) = sync_channel::<Chunk>(2);
                    let (dw, qw, rw) = (&mut docs_w, &mut q_w, rej_w.as_mut());
                    let writer =
                        s.spawn(move || -> Result<()> {
                            let mut rw = rw;
                            for c in rx {
                                if c.docs.num_rows() > 0 {
                                    dw.write(&c.docs)?;
                                }
                                if c.quarantine.num_rows() > 0 {
                                    qw.write(&c.quarantine)?;
                                }
                                if c.rejected.num_rows() > 0 {
                                    match rw.as_deref_mut() {
                                        Some(w) => w.write(&c.rejected)?,
                                        None => return Err(Error::bug(
                                            "a reader rejected records but has no rejected table",
                                        )),
                                    }
                                }
                            }
                            Ok(())
                        });
                    let read = read_file_named(path, &names[fi], opts, &mut |c: Chunk| {
                        let (d, q) = (
                            (c.docs.num_rows() + c.rejected.num_rows()) as u64,
                            c.quarantine.num_rows() as u64,
                        );
                        counts.ingested += d;
                        counts.quarantined += q;
                        counts.records += d + q;
                        if rejecting {
                            crate::count_reader_stage(&c, &mut reader_stage);
                        }
                        let d = c.docs.num_rows() as u64;
                        pb.inc(c.bytes);
                        let n = docs_seen.fetch_add(d, Ordering::Relaxed) + d;
                        let secs = started.elapsed().as_secs_f64().max(1e-3);
                        pb.set_message(format!("{n} docs ({:.0} docs/s)", n as f64 / secs));
                        tx.send(c)
                            .map_err(|_| Error::usage("the shard writer stopped (see its error)"))
                    });
                    drop(tx);
                    let wrote = writer
                        .join()
                        .unwrap_or_else(|_| Err(Error::bug("the shard writer panicked")));
                    (read, wrote)
                });
                wrote.with_context(|| format!("writing the shards of {}", path.display()))?;
                match read {
                    Ok(c) => {
                        if c != counts {
                            return Err(Error::bug(format!(
                                "{} counted {c:?} but handed over {counts:?}",
                                path.display()
                            )));
                        }
                    }
                    Err(e) if opts.strict => {
                        return Err(e)
                            .with_context(|| format!("ingest stopped at {}", path.display()))
                    }
                    Err(e) => done
                        .failures
                        .push((path.display().to_string(), error_chain(&e))),
                }
                done.record.files.push(counts);
            }
            done.record.tables.insert("docs".into(), docs_w.finish()?);
            done.record
                .tables
                .insert("quarantine".into(), q_w.finish()?);
            if let Some(w) = rej_w {
                done.record.tables.insert("rejected".into(), w.finish()?);
                done.record.stages.push(reader_stage);
            }
            let mut m = manifest
                .lock()
                .map_err(|_| Error::bug("manifest lock poisoned"))?;
            m.units.insert(key(u), done.record.clone());
            m.save(out)?;
            Ok(done)
        })
        .collect();
    pb.finish_and_clear();

    let mut failures = Vec::new();
    for r in results {
        failures.extend(r?.failures);
    }
    let mut m = manifest
        .into_inner()
        .map_err(|_| Error::bug("manifest lock poisoned"))?;
    let acc = m.compute_accounting();
    acc.check()
        .context("checking that every input record is accounted for")?;
    m.accounting = Some(acc.clone());
    m.complete = failures.is_empty() && !previously_failed;
    m.save(out)?;
    Ok(IngestReport {
        accounting: acc,
        failures,
        skipped_units: skipped,
        units: units.len(),
        previously_failed,
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// An error with its causes, on one line.
fn error_chain(e: &Error) -> String {
    let mut s = e.to_string();
    let mut cur: Option<&dyn std::error::Error> = std::error::Error::source(e);
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ingest_groups_text_files_resumes_and_refuses_a_different_run() {
        let d = tempfile::tempdir().unwrap();
        let input = d.path().join("in");
        std::fs::create_dir_all(input.join("notes")).unwrap();
        std::fs::write(
            input.join("a.jsonl"),
            "{\"text\":\"one\"}\n{oops\n{\"text\":\"two\"}\n",
        )
        .unwrap();
        for (n, t) in [
            ("x.txt", "first note"),
            ("y.md", "# second"),
            ("z.txt", "third"),
        ] {
            std::fs::write(input.join("notes").join(n), t).unwrap();
        }
        let out = d.path().join("out");
        let inputs = vec![input.display().to_string()];
        let opts = IngestOptions::default();
        let r = ingest_to_dir(&inputs, &out, &opts, false, false).unwrap();
        assert_eq!(r.units, 2, "three text files make one unit");
        assert_eq!(
            (
                r.accounting.input,
                r.accounting.kept,
                r.accounting.quarantined
            ),
            (6, 5, 1)
        );
        assert!(r.failures.is_empty());
        let table = r.table();
        assert!(
            table.contains(&format!("{:>12} = {:>12} + {:>12}", 3, 2, 1)),
            "{table}"
        );
        assert!(table.lines().last().unwrap().starts_with("total"));
        let ids: Vec<String> = quern_core::shard::read_table(&out.join("docs"))
            .unwrap()
            .iter()
            .flat_map(|b| {
                use arrow::array::AsArray;
                b.column(0)
                    .as_string::<i32>()
                    .iter()
                    .map(|s| s.unwrap().to_string())
                    .collect::<Vec<_>>()
            })
            .collect();
        assert_eq!(
            ids,
            [
                "a.jsonl:1",
                "a.jsonl:3",
                "notes/x.txt",
                "notes/y.md",
                "notes/z.txt"
            ]
        );
        let m = Manifest::load(&out).unwrap().unwrap();
        assert!(m.complete);
        assert_eq!(m.units.keys().collect::<Vec<_>>(), ["000000", "000001"]);

        let again = ingest_to_dir(&inputs, &out, &opts, false, false).unwrap();
        assert_eq!(again.skipped_units, 2);
        assert_eq!(again.accounting, r.accounting);
        let e = ingest_to_dir(&inputs, &out, &opts.clone().with_source("s"), false, false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("different ingest run"), "{e}");
        let forced =
            ingest_to_dir(&inputs, &out, &opts.clone().with_source("s"), true, false).unwrap();
        assert_eq!(forced.skipped_units, 0);
    }

    #[test]
    fn a_broken_file_is_reported_and_the_manifest_stays_incomplete() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("bad.json");
        std::fs::write(&p, "[{\"text\":\"kept\"}, {\"text\": \"cut").unwrap();
        let out = d.path().join("out");
        let inputs = vec![p.display().to_string()];
        let r = ingest_to_dir(&inputs, &out, &IngestOptions::default(), false, false).unwrap();
        assert_eq!(r.failures.len(), 1);
        assert!(
            r.failures[0].1.contains("ends inside element 2"),
            "{:?}",
            r.failures
        );
        assert_eq!((r.accounting.kept, r.accounting.quarantined), (1, 1));
        assert!(r.table().contains("broken"));
        assert!(!Manifest::load(&out).unwrap().unwrap().complete);
        let again = ingest_to_dir(&inputs, &out, &IngestOptions::default(), false, false).unwrap();
        assert!(again.previously_failed);
        let e = ingest_to_dir(
            &inputs,
            &out,
            &IngestOptions::default().with_strict(true),
            true,
            false,
        )
        .unwrap_err();
        assert!(format!("{e:?}").contains("ends inside element 2"), "{e:?}");
    }
}
