//! `quern sql [QUERY] --corpus DIR`: SQL over a quern output directory.
//!
//! With a query, runs it (one or more `;`-separated statements) and writes the result in
//! the chosen format to stdout or `--out`; without one, opens the interactive shell. The
//! session (tables, functions) is [`crate::sql::session`]; this file only resolves flags and
//! routes output.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context as _};

use crate::sql::output::{self, Format};
use crate::sql::{self, SessionOptions};

/// Arguments of `quern sql`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The SQL to run; several statements may be separated by `;`. Without it, an
    /// interactive shell (history in ~/.quern_history).
    pub query: Option<String>,
    /// The quern output directory to query (the folder holding manifest.json). Its tables:
    /// docs, rejected, quarantine, tokens.
    #[arg(long, short = 'c', value_name = "DIR")]
    pub corpus: PathBuf,
    /// Output format.
    #[arg(long, short = 'f', value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Write the result to this file instead of stdout (required for parquet).
    #[arg(long, short = 'o', value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Allow statements that write files or change the catalog (CREATE, INSERT, COPY, DROP).
    #[arg(long)]
    pub allow_write: bool,
    /// Partitions each query runs on (default: one per CPU core).
    #[arg(long, value_name = "N")]
    pub partitions: Option<usize>,
    /// Run the queries on the Ballista cluster whose scheduler is at HOST:PORT (`quern
    /// cluster`); the corpus must be at the same path on every node (docs/cluster.md).
    #[arg(long, value_name = "HOST:PORT")]
    pub cluster: Option<String>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    if args.format == Format::Parquet && args.out.is_none() {
        bail!("--format parquet writes a file: give it with --out FILE");
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the query runtime")?;
    let opts = SessionOptions::default()
        .with_target_partitions(args.partitions.unwrap_or(0))
        .with_cluster(args.cluster.clone());
    let ctx = rt.block_on(sql::session(&args.corpus, &opts))?;
    let Some(query) = args.query.as_deref() else {
        if args.out.is_some() {
            bail!("--out needs a query; the interactive shell prints to the terminal");
        }
        let shell = sql::repl::Shell {
            rt: &rt,
            ctx: &ctx,
            format: args.format,
            allow_write: args.allow_write,
        };
        return match shell.run() {
            Err(e) if sql::is_broken_pipe(&e) => Ok(ExitCode::SUCCESS),
            r => r.map(|()| ExitCode::SUCCESS),
        };
    };
    let statements = sql::parse(query)?;
    if statements.is_empty() {
        bail!("the query holds no SQL statement");
    }
    if args.out.is_some() && statements.len() > 1 {
        bail!(
            "--out takes the result of one statement, and the query has {}; run them one at a time",
            statements.len()
        );
    }
    let result = rt.block_on(async {
        for st in statements {
            let text = st.to_string();
            let df = sql::run_statement(&ctx, st, args.allow_write).await?;
            let stream = df
                .execute_stream()
                .await
                .with_context(|| format!("query failed:\n  {}", sql::one_line(&text)))?;
            match &args.out {
                Some(path) => {
                    write_file(path, stream, args.format).await?;
                }
                None => {
                    // Stdout (not its lock, which is not Send) behind a buffer, flushed here so
                    // a closed pipe surfaces as an error we can recognise.
                    let mut out = std::io::BufWriter::new(std::io::stdout());
                    output::write_stream(stream, args.format, &mut out).await?;
                    std::io::Write::flush(&mut out)?;
                }
            }
        }
        anyhow::Ok(())
    });
    match result {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e) if sql::is_broken_pipe(&e) => Ok(ExitCode::SUCCESS),
        Err(e) => Err(e),
    }
}

/// Writes one result to `path` atomically: into a hidden temporary file beside it, renamed
/// into place only once complete, so a failed query leaves no half-written output.
async fn write_file(
    path: &Path,
    stream: datafusion::physical_plan::SendableRecordBatchStream,
    format: Format,
) -> anyhow::Result<u64> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = tempfile::Builder::new()
        .prefix(".quern-sql-")
        .tempfile_in(dir)
        .with_context(|| format!("creating a temporary file in {} for --out", dir.display()))?;
    let rows = {
        let mut w = BufWriter::with_capacity(1 << 20, tmp.as_file());
        let rows = output::write_stream(stream, format, &mut w).await?;
        w.flush()
            .with_context(|| format!("writing {}", path.display()))?;
        rows
    };
    tmp.as_file()
        .sync_all()
        .with_context(|| format!("writing {}", path.display()))?;
    tmp.persist(path)
        .with_context(|| format!("moving the result into {}", path.display()))?;
    Ok(rows)
}
