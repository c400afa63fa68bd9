//! The interactive shell of `quern sql` (run without a query).
//!
//! A line editor (rustyline) with history kept in `~/.quern_history`. SQL may span several
//! lines and runs once a line ends with `;`. Lines starting with `.` (when no statement is
//! pending) are shell commands: `.tables`, `.schema TABLE`, `.functions`, `.help`, `.quit`.
//! An error is printed and the shell goes on; Ctrl-C drops the pending statement, Ctrl-D
//! leaves. When standard input is not a terminal the same loop reads it line by line, so a
//! script can be piped in.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context as _;
use arrow::array::AsArray;
use arrow::datatypes::Int64Type;
use datafusion::prelude::SessionContext;
use rustyline::error::ReadlineError;
use rustyline::DefaultEditor;
use tokio::runtime::Runtime;

use super::output::{self, Format};

/// What the shell needs besides the session.
pub struct Shell<'a> {
    pub rt: &'a Runtime,
    pub ctx: &'a SessionContext,
    pub format: Format,
    pub allow_write: bool,
}

const HELP: &str = "\
Enter SQL ending with `;` (it may span several lines).
Tables: docs, rejected, quarantine, tokens, token_splits.
Shell commands:
  .tables          list the tables and their row counts
  .schema TABLE    show a table's columns and types
  .functions       list quern's SQL functions
  .help            this text
  .quit            leave (or Ctrl-D)";

/// Where the history is kept: `~/.quern_history`, or none without a home directory.
fn history_file() -> Option<PathBuf> {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(|h| PathBuf::from(h).join(".quern_history"))
}

impl Shell<'_> {
    /// Runs the shell until `.quit` or end of input.
    pub fn run(&self) -> anyhow::Result<()> {
        let mut rl = DefaultEditor::new().context("starting the line editor")?;
        let history = history_file();
        if let Some(h) = &history {
            // A missing history file is the normal first run.
            let _ = rl.load_history(h);
        }
        let mut pending = String::new();
        loop {
            let prompt = if pending.is_empty() {
                "quern> "
            } else {
                "   ...> "
            };
            let line = match rl.readline(prompt) {
                Ok(l) => l,
                Err(ReadlineError::Interrupted) => {
                    pending.clear();
                    continue;
                }
                Err(ReadlineError::Eof) => break,
                Err(e) => return Err(e).context("reading a line"),
            };
            let trimmed = line.trim();
            if pending.is_empty() && trimmed.starts_with('.') {
                let _ = rl.add_history_entry(trimmed);
                match self.command(trimmed) {
                    Ok(true) => break,
                    Ok(false) => {}
                    Err(e) => report(&e)?,
                }
                continue;
            }
            if trimmed.is_empty() && pending.is_empty() {
                continue;
            }
            pending.push_str(&line);
            pending.push('\n');
            if trimmed.ends_with(';') {
                let sql = std::mem::take(&mut pending);
                let _ = rl.add_history_entry(sql.trim());
                if let Err(e) = self.execute(&sql) {
                    report(&e)?;
                }
            }
        }
        if !pending.trim().is_empty() {
            // Input ended without `;`: run what was typed rather than drop it.
            if let Err(e) = self.execute(&pending) {
                report(&e)?;
            }
        }
        if let Some(h) = &history {
            let _ = rl.save_history(h);
        }
        Ok(())
    }

    /// Runs every statement of `sql`, printing each result and a line of timing to stderr.
    fn execute(&self, sql: &str) -> anyhow::Result<()> {
        for st in super::parse(sql)? {
            let start = Instant::now();
            let rows = self.rt.block_on(async {
                let text = st.to_string();
                let df = super::run_statement(self.ctx, st, self.allow_write).await?;
                let stream = df
                    .execute_stream()
                    .await
                    .with_context(|| format!("query failed:\n  {}", super::one_line(&text)))?;
                let mut out = std::io::BufWriter::new(std::io::stdout());
                let rows = output::write_stream(stream, self.format, &mut out).await?;
                std::io::Write::flush(&mut out)?;
                anyhow::Ok(rows)
            })?;
            eprintln!("({rows} rows in {:.3}s)", start.elapsed().as_secs_f64());
        }
        Ok(())
    }

    /// Runs a shell command; returns true to leave.
    fn command(&self, line: &str) -> anyhow::Result<bool> {
        let mut words = line.split_whitespace();
        let cmd = words.next().unwrap_or_default();
        let arg = words.next();
        let mut out = std::io::stdout().lock();
        match (cmd, arg) {
            (".quit" | ".exit", _) => return Ok(true),
            (".help", _) => writeln!(out, "{HELP}")?,
            (".tables", _) => {
                let mut names = self
                    .ctx
                    .catalog("datafusion")
                    .and_then(|c| c.schema("public"))
                    .map(|s| s.table_names())
                    .unwrap_or_default();
                names.sort();
                for t in names {
                    // Answered from the Parquet footers' statistics, without a scan.
                    let batches = self.rt.block_on(super::query(
                        self.ctx,
                        &format!("SELECT count(*) FROM \"{t}\""),
                        false,
                    ))?;
                    let n = batches
                        .first()
                        .and_then(|b| b.column(0).as_primitive_opt::<Int64Type>())
                        .map(|a| a.value(0))
                        .unwrap_or(0);
                    writeln!(out, "  {t:<16} {n:>12} rows")?;
                }
            }
            (".schema", Some(t)) => {
                let provider = self
                    .rt
                    .block_on(self.ctx.table_provider(t))
                    .with_context(|| format!("no table `{t}` (try .tables)"))?;
                for f in provider.schema().fields() {
                    let null = if f.is_nullable() { "" } else { " NOT NULL" };
                    writeln!(out, "  {:<24} {}{null}", f.name(), f.data_type())?;
                }
            }
            (".schema", None) => anyhow::bail!(".schema needs a table name, e.g. `.schema docs`"),
            (".functions", _) => {
                for (f, what) in super::udfs::FUNCTIONS {
                    writeln!(out, "  {f:<20} {what}")?;
                }
                writeln!(
                    out,
                    "  (and every DataFusion function: SHOW FUNCTIONS; lists them)"
                )?;
            }
            _ => anyhow::bail!("unknown command `{cmd}`; .help lists the commands"),
        }
        Ok(false)
    }
}

/// Prints an error with its causes and goes on; a closed stdout ends the shell.
fn report(e: &anyhow::Error) -> anyhow::Result<()> {
    if super::is_broken_pipe(e) {
        return Err(anyhow::anyhow!(std::io::Error::from(
            std::io::ErrorKind::BrokenPipe
        )));
    }
    eprintln!("error: {e}");
    for c in e.chain().skip(1) {
        eprintln!("  caused by: {c}");
    }
    Ok(())
}
