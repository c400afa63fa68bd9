//! `quern ingest`: raw corpora to Parquet shards in `DIR/docs/` and `DIR/quarantine/` (and
//! `DIR/rejected/` for web crawls, whose reader rejects records itself).
//!
//! The work is done by [`quern_ingest::run::ingest_to_dir`] (expansion of the inputs,
//! parallel reading, pipelined shard writing, the manifest, resume and refusal, the checked
//! accounting); this module maps flags to options and prints the per-file table. A file
//! that could not be read to the end makes the command fail, after printing what was read.

use std::path::PathBuf;
use std::process::ExitCode;

use quern_ingest::run::ingest_to_dir;
use quern_ingest::{Format, IngestOptions};

/// Raw flags of `quern ingest`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Input files, folders (read recursively) or globs.
    #[arg(required = true)]
    pub inputs: Vec<String>,
    /// Output directory (gets `docs/`, `quarantine/`, `manifest.json`, and `rejected/` for
    /// WARC/WET input).
    #[arg(long)]
    pub out: PathBuf,
    /// Force the input format: jsonl, json, parquet, csv, tsv, text or warc (WARC and WET)
    /// (default: by extension).
    #[arg(long)]
    pub format: Option<Format>,
    /// Field, column or header holding the document text.
    #[arg(long, default_value = "text")]
    pub text_field: String,
    /// Field holding the document id (default: `<file>:<line>`).
    #[arg(long)]
    pub id_field: Option<String>,
    /// Source name for every document (default: a `source` field, else the file stem).
    #[arg(long)]
    pub source: Option<String>,
    /// Records per batch (memory is bounded by this, not by file size).
    #[arg(long, default_value_t = 8192)]
    pub batch_rows: usize,
    /// Stop at the first malformed record instead of quarantining it.
    #[arg(long)]
    pub strict: bool,
    /// WARC/WET: the largest page kept in memory and extracted; larger ones are rejected
    /// as `page_too_large` [default: 16777216]
    #[arg(long)]
    pub max_page_bytes: Option<u64>,
    /// Replace an output directory that holds a different run.
    #[arg(long)]
    pub force: bool,
}

pub fn run(a: Args) -> anyhow::Result<ExitCode> {
    let opts = IngestOptions {
        format: a.format,
        text_field: a.text_field,
        id_field: a.id_field,
        source: a.source,
        batch_rows: a.batch_rows,
        strict: a.strict,
        max_page_bytes: a.max_page_bytes,
    };
    let r = ingest_to_dir(&a.inputs, &a.out, &opts, a.force, true)?;
    print!("{}", r.table());
    let acc = &r.accounting;
    if acc.rejected > 0 {
        println!(
            "rejected by the reader (in {}/rejected): {}",
            a.out.display(),
            reasons(acc)
        );
    }
    println!(
        "ingested {} documents, rejected {} and quarantined {} records from {} files ({} already committed) in {:.1}s into {}",
        acc.kept,
        acc.rejected,
        acc.quarantined,
        acc.files.len(),
        r.skipped_units,
        r.seconds,
        a.out.display()
    );
    if !r.failures.is_empty() {
        for (f, e) in &r.failures {
            eprintln!("error: {f} could not be read to the end: {e}");
        }
        anyhow::bail!(
            "{} of {} files could not be read to the end; what was read before each break is kept, and the break is in {}/quarantine",
            r.failures.len(),
            acc.files.len(),
            a.out.display()
        );
    }
    if r.previously_failed {
        anyhow::bail!(
            "every file was already committed by an earlier run of this ingest that could not read some files to the end \
             (their breaks are in {}/quarantine); pass --force to read them again",
            a.out.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The reader's rejections by reason, most frequent first: `warc_request=30 not_html=1`.
fn reasons(acc: &quern_core::manifest::Accounting) -> String {
    let mut all: Vec<(&String, &u64)> = acc.stages.iter().flat_map(|s| s.reasons.iter()).collect();
    all.sort_by(|x, y| y.1.cmp(x.1).then(x.0.cmp(y.0)));
    all.iter()
        .map(|(r, n)| format!("{r}={n}"))
        .collect::<Vec<_>>()
        .join(" ")
}
