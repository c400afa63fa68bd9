//! SQL over a quern output directory, through DataFusion.
//!
//! Every directory quern writes (an ingest, a build) holds a `manifest.json` listing the
//! committed Parquet shards of each table. [`session`] turns that into a DataFusion
//! [`SessionContext`] in which `docs`, `rejected`, `quarantine` and `tokens` (and any other
//! table the manifest names) are listing tables over *exactly* the manifest's shards, not a
//! directory glob: a shard left behind by a killed run, or a stray file, is never read, and
//! a query sees one consistent build. A table the manifest has no shards for is registered
//! empty with its contract schema ([`quern_core::schema`]), so a query never fails for a
//! missing table: `SELECT count(*) FROM rejected` on a plain ingest says 0.
//!
//! A tokenize output's `tokens` table has one more column than its shards: `split`, the
//! split directory a row's shard lies in, so `SELECT split, count(*) FROM tokens GROUP BY
//! split` counts sequences per split. `token_splits` is one row per split from its
//! `meta.json`: `split`, `objective`, `seq_len`, `vocab_size`, `sequences`, `tokens`
//! (document and separator ids, no padding) and `documents`.
//!
//! The session carries quern's built-in text functions ([`udfs`]) and every crate's stage
//! functions (through [`crate::stages::register_udfs`]), so what a pipeline computes can be
//! computed, checked or explored in SQL with the same kernels.
//!
//! Statements run through [`run_statement`], which refuses anything that writes or changes
//! the catalog (DDL, DML, `COPY`) unless asked, using DataFusion's [`SQLOptions`], and puts
//! the statement in front of DataFusion's error so the user sees what failed. `quern sql`
//! ([`crate::cmd::sql`]) adds the output formats ([`output`]) and the interactive shell
//! ([`repl`]).

pub mod output;
pub mod repl;
pub mod udfs;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context as _};
use arrow::array::{ArrayRef, RecordBatch, StringArray, UInt64Array};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::datasource::empty::EmptyTable;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::{
    ListingOptions, ListingTable, ListingTableConfig, ListingTableUrl,
};
use datafusion::datasource::{MemTable, TableProvider};
use datafusion::execution::context::SQLOptions;
use datafusion::prelude::{lit, DataFrame, SessionConfig, SessionContext};
use datafusion::scalar::ScalarValue;
use datafusion::sql::parser::{DFParser, Statement};
use quern_core::manifest::Manifest;
use quern_core::schema;
use quern_core::shard::ShardInfo;
use quern_tokenize::meta::TokenMeta;

/// The tables every session has, whether or not the manifest lists shards for them.
pub const TABLES: [&str; 4] = ["docs", "rejected", "quarantine", "tokens"];

/// The per-split summary of a tokenize output (from each split's `meta.json`).
pub const TOKEN_SPLITS: &str = "token_splits";

/// The column of `tokens` naming the split directory of the row's shard.
pub const SPLIT: &str = "split";

/// How a session is set up. Build it with the `with_*` methods; `Default` is what
/// `quern sql` uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionOptions {
    /// Partitions DataFusion plans each query across. Default 0: one per CPU core.
    pub target_partitions: usize,
    /// Rows per batch inside DataFusion. Default 8,192 (DataFusion's own default).
    pub batch_size: usize,
    /// Evaluate filters while decoding Parquet (late materialisation), so rows a `WHERE`
    /// drops are never decoded in full. Default true.
    pub pushdown_filters: bool,
    /// Run queries on the Ballista cluster whose scheduler is at this HOST:PORT
    /// ([`crate::cluster`]) instead of in this process. Default none.
    pub cluster: Option<String>,
}

impl Default for SessionOptions {
    fn default() -> Self {
        SessionOptions {
            target_partitions: 0,
            batch_size: 8192,
            pushdown_filters: true,
            cluster: None,
        }
    }
}

impl SessionOptions {
    pub fn with_target_partitions(mut self, n: usize) -> Self {
        self.target_partitions = n;
        self
    }
    pub fn with_batch_size(mut self, n: usize) -> Self {
        self.batch_size = n.max(1);
        self
    }
    pub fn with_pushdown_filters(mut self, on: bool) -> Self {
        self.pushdown_filters = on;
        self
    }
    pub fn with_cluster(mut self, scheduler: Option<String>) -> Self {
        self.cluster = scheduler;
        self
    }

    fn partitions(&self) -> usize {
        if self.target_partitions > 0 {
            self.target_partitions
        } else {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        }
    }
}

/// The schema a table has when the manifest lists no shard for it.
///
/// `docs`, `rejected` and `quarantine` have their contract schemas. `tokens` gets the
/// `clm`/`mlm` layout (`tokens`, `doc_ids`, `doc_starts`), the one a plain tokenize writes,
/// and the `split` column the session adds.
pub fn empty_schema(table: &str) -> Option<SchemaRef> {
    let list = |t: DataType| DataType::List(Arc::new(Field::new("item", t, true)));
    match table {
        "docs" => Some(schema::doc_schema()),
        "rejected" => Some(schema::rejected_schema()),
        "quarantine" => Some(schema::quarantine_schema()),
        "tokens" => Some(Arc::new(Schema::new(vec![
            Field::new("tokens", list(DataType::Int32), false),
            Field::new("doc_ids", list(DataType::Utf8), false),
            Field::new("doc_starts", list(DataType::Int32), false),
            Field::new(SPLIT, DataType::Utf8, true),
        ]))),
        _ => None,
    }
}

/// Opens a SQL session over the quern output directory `corpus` (the folder holding
/// `manifest.json`).
///
/// Registers a listing table per table of the manifest over exactly its shards, the four
/// standard tables always (empty when the manifest has none of their shards), quern's text
/// functions and every crate's stage functions.
pub async fn session(corpus: &Path, opts: &SessionOptions) -> anyhow::Result<SessionContext> {
    let manifest = Manifest::load(corpus)
        .with_context(|| format!("reading the manifest of {}", corpus.display()))?
        .with_context(|| {
            format!(
                "{} has no {}: it is not a quern output directory (make one with `quern ingest INPUT --out DIR`)",
                corpus.display(),
                quern_core::manifest::MANIFEST
            )
        })?;
    let mut config = SessionConfig::new()
        .with_target_partitions(opts.partitions())
        .with_batch_size(opts.batch_size)
        .with_information_schema(true)
        .with_collect_statistics(true);
    {
        let parquet = &mut config.options_mut().execution.parquet;
        parquet.pushdown_filters = opts.pushdown_filters;
        parquet.reorder_filters = opts.pushdown_filters;
    }
    // On a cluster, the client session carries quern's functions already (and every node
    // has them too: see `crate::cluster`).
    let ctx = match &opts.cluster {
        Some(scheduler) => {
            let url = crate::cluster::check_scheduler(scheduler)?;
            crate::cluster::client_context(&url, config)?
        }
        None => {
            let ctx = SessionContext::new_with_config(config);
            register_functions(&ctx);
            ctx
        }
    };

    let mut tables: BTreeMap<String, Vec<ShardInfo>> = manifest.tables();
    for t in TABLES {
        tables.entry(t.to_string()).or_default();
    }
    for (name, shards) in &tables {
        let provider: Arc<dyn TableProvider> = if shards.is_empty() {
            let Some(schema) = empty_schema(name) else {
                continue;
            };
            Arc::new(EmptyTable::new(schema))
        } else if name == quern_core::schema::TOKENS_TABLE {
            tokens_table(&ctx, corpus, shards)
                .await
                .with_context(|| format!("registering table `{name}` of {}", corpus.display()))?
        } else {
            listing_table(&ctx, corpus, name, shards)
                .await
                .with_context(|| format!("registering table `{name}` of {}", corpus.display()))?
        };
        ctx.register_table(name.as_str(), provider)?;
    }
    let token_shards = tables
        .get(quern_core::schema::TOKENS_TABLE)
        .map(Vec::as_slice)
        .unwrap_or_default();
    ctx.register_table(TOKEN_SPLITS, token_splits(corpus, token_shards)?)?;
    Ok(ctx)
}

/// Registers quern's SQL functions on `ctx`: the built-in text functions ([`udfs`]) and every
/// crate's stage functions. docs/sql.md lists them (a test checks it).
pub fn register_functions(ctx: &SessionContext) {
    udfs::register(ctx);
    crate::stages::register_udfs(ctx);
}

/// A listing table over exactly `shards` (paths relative to `root`), with the union of
/// their schemas (stages add columns; a shard that lacks one reads it as null).
async fn listing_table(
    ctx: &SessionContext,
    root: &Path,
    table: &str,
    shards: &[ShardInfo],
) -> anyhow::Result<Arc<dyn TableProvider>> {
    let state = ctx.state();
    let format = ParquetFormat::default().with_options(state.table_options().parquet.clone());
    let options = ListingOptions::new(Arc::new(format)).with_file_extension(".parquet");
    let mut urls = Vec::with_capacity(shards.len());
    let mut merged: Option<Schema> = None;
    for s in shards {
        let path = root.join(&s.file);
        if !path.is_file() {
            bail!(
                "the manifest lists {} for table `{table}`, but there is no such file: \
                 the directory is incomplete or was moved in parts; re-run the command that wrote it",
                path.display()
            );
        }
        let abs = path
            .canonicalize()
            .with_context(|| format!("resolving {}", path.display()))?;
        let text = abs
            .to_str()
            .with_context(|| format!("{} is not valid UTF-8", abs.display()))?;
        if text.contains(['*', '?', '[']) {
            bail!(
                "{text}: a shard path with `*`, `?` or `[` cannot be read by DataFusion's listing tables; move the corpus to a plainer path"
            );
        }
        let url = ListingTableUrl::parse(text)?;
        let schema = options
            .infer_schema(&state, &url)
            .await
            .with_context(|| format!("reading the Parquet footer of {}", abs.display()))?;
        merged = Some(match merged {
            None => schema.as_ref().clone(),
            Some(m) => Schema::try_merge([m, schema.as_ref().clone()]).with_context(|| {
                format!(
                    "{}: its columns conflict with the other shards of `{table}`",
                    abs.display()
                )
            })?,
        });
        urls.push(url);
    }
    let schema = Arc::new(merged.unwrap_or_else(Schema::empty));
    let config = ListingTableConfig::new_with_multi_paths(urls)
        .with_listing_options(options)
        .with_schema(schema);
    Ok(Arc::new(ListingTable::try_new(config)?))
}

/// The split of a tokenized shard: the directory its manifest path starts with.
fn split_of(shard: &ShardInfo) -> Option<&str> {
    shard.file.split_once('/').map(|(dir, _)| dir)
}

/// `tokens`: the listing table of each split's shards with a constant `split` column, all
/// splits unioned by column name (a shard written without the split directory has a null
/// split).
async fn tokens_table(
    ctx: &SessionContext,
    root: &Path,
    shards: &[ShardInfo],
) -> anyhow::Result<Arc<dyn TableProvider>> {
    let mut by_split: BTreeMap<Option<&str>, Vec<ShardInfo>> = BTreeMap::new();
    for s in shards {
        by_split.entry(split_of(s)).or_default().push(s.clone());
    }
    let mut all: Option<DataFrame> = None;
    for (split, shards) in by_split {
        let table = listing_table(ctx, root, quern_core::schema::TOKENS_TABLE, &shards).await?;
        let value = ScalarValue::Utf8(split.map(str::to_string));
        let df = ctx.read_table(table)?.with_column(SPLIT, lit(value))?;
        all = Some(match all {
            None => df,
            Some(a) => a.union_by_name(df)?,
        });
    }
    Ok(all.context("no shards")?.into_view())
}

/// `token_splits`: one row per split directory of the `tokens` shards, from its `meta.json`
/// (empty, with the same columns, when there are none).
fn token_splits(root: &Path, shards: &[ShardInfo]) -> anyhow::Result<Arc<dyn TableProvider>> {
    let schema = Arc::new(Schema::new(vec![
        Field::new(SPLIT, DataType::Utf8, false),
        Field::new("objective", DataType::Utf8, false),
        Field::new("seq_len", DataType::UInt64, false),
        Field::new("vocab_size", DataType::UInt64, false),
        Field::new("sequences", DataType::UInt64, false),
        Field::new("tokens", DataType::UInt64, false),
        Field::new("documents", DataType::UInt64, false),
    ]));
    let splits: std::collections::BTreeSet<&str> = shards.iter().filter_map(split_of).collect();
    let mut metas = Vec::with_capacity(splits.len());
    for split in &splits {
        let meta = TokenMeta::load(&root.join(split))
            .with_context(|| format!("reading the meta.json of split `{split}`"))?;
        metas.push(meta);
    }
    let u64s = |f: fn(&TokenMeta) -> u64| -> ArrayRef {
        Arc::new(UInt64Array::from_iter_values(metas.iter().map(f)))
    };
    let batch = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(StringArray::from_iter_values(splits.iter())),
            Arc::new(StringArray::from_iter_values(
                metas.iter().map(|m| m.objective.name()),
            )),
            u64s(|m| m.seq_len),
            u64s(|m| m.vocab_size),
            u64s(|m| m.rows),
            u64s(|m| m.tokens),
            u64s(|m| m.documents),
        ],
    )?;
    Ok(Arc::new(MemTable::try_new(schema, vec![vec![batch]])?))
}

/// What `quern sql` may run: everything when `allow_write`, otherwise no DDL (`CREATE`,
/// `DROP`), no DML (`INSERT`, `COPY`). `SET` stays allowed: it only tunes this session.
pub fn sql_options(allow_write: bool) -> SQLOptions {
    SQLOptions::new()
        .with_allow_ddl(allow_write)
        .with_allow_dml(allow_write)
        .with_allow_statements(true)
}

/// Splits SQL text into statements (`;`-separated), with the parse error in context.
pub fn parse(sql: &str) -> anyhow::Result<Vec<Statement>> {
    let statements = DFParser::parse_sql(sql)
        .map_err(anyhow::Error::from)
        .with_context(|| format!("cannot parse the query:\n  {}", one_line(sql)))?;
    Ok(statements.into_iter().collect())
}

/// Plans one statement, refusing writes unless `allow_write`, and returns its [`DataFrame`]
/// (DDL has already run when this returns; a query runs when the frame is executed).
pub async fn run_statement(
    ctx: &SessionContext,
    statement: Statement,
    allow_write: bool,
) -> anyhow::Result<DataFrame> {
    let text = statement.to_string();
    let plan = ctx
        .state()
        .statement_to_plan(statement)
        .await
        .map_err(anyhow::Error::from)
        .with_context(|| format!("query failed:\n  {}", one_line(&text)))?;
    if sql_options(allow_write).verify_plan(&plan).is_err() {
        bail!(
            "refused: `{}` would write files or change the catalog, and `quern sql` is read-only; \
             pass --allow-write to run it",
            one_line(&text)
        );
    }
    ctx.execute_logical_plan(plan)
        .await
        .map_err(anyhow::Error::from)
        .with_context(|| format!("query failed:\n  {}", one_line(&text)))
}

/// Runs every statement of `sql` and returns the batches of the last one. For callers that
/// want a result in memory (`quern demo`, tests); `quern sql` streams instead.
pub async fn query(
    ctx: &SessionContext,
    sql: &str,
    allow_write: bool,
) -> anyhow::Result<Vec<RecordBatch>> {
    let mut last = Vec::new();
    for st in parse(sql)? {
        let text = st.to_string();
        let df = run_statement(ctx, st, allow_write).await?;
        last = df
            .collect()
            .await
            .map_err(anyhow::Error::from)
            .with_context(|| format!("query failed:\n  {}", one_line(&text)))?;
    }
    Ok(last)
}

/// A statement on one line, cut to a readable length, for error messages.
pub fn one_line(sql: &str) -> String {
    let flat: String = sql.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() > 300 {
        format!("{}…", flat.chars().take(300).collect::<String>())
    } else {
        flat
    }
}

/// Whether an error comes from writing to a closed pipe (`quern sql … | head`), which is
/// the reader's choice, not a failure.
pub fn is_broken_pipe(e: &anyhow::Error) -> bool {
    use std::io::ErrorKind::BrokenPipe;
    e.chain().any(|c| {
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            return io.kind() == BrokenPipe;
        }
        if let Some(arrow::error::ArrowError::IoError(_, io)) =
            c.downcast_ref::<arrow::error::ArrowError>()
        {
            return io.kind() == BrokenPipe;
        }
        if let Some(datafusion::error::DataFusionError::IoError(io)) =
            c.downcast_ref::<datafusion::error::DataFusionError>()
        {
            return io.kind() == BrokenPipe;
        }
        false
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use datafusion::prelude::SessionContext;

    /// docs/sql.md cannot drift (issue 19): its function table names every function a
    /// session registers beyond DataFusion's own, and no other.
    #[test]
    fn the_sql_guide_lists_every_quern_function() {
        let names = |ctx: &SessionContext| -> BTreeSet<String> {
            ctx.state().scalar_functions().keys().cloned().collect()
        };
        let plain = names(&SessionContext::new());
        let ctx = SessionContext::new();
        super::register_functions(&ctx);
        let ours: BTreeSet<String> = names(&ctx).difference(&plain).cloned().collect();
        assert!(ours.len() > 20, "{ours:?}");
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/sql.md");
        let guide = std::fs::read_to_string(path).unwrap();
        let documented: BTreeSet<String> = guide
            .lines()
            .filter_map(|l| l.strip_prefix("| `"))
            .filter_map(|rest| rest.split('`').next()?.split_once('('))
            .map(|(name, _)| name.to_string())
            .collect();
        let missing: Vec<_> = ours.difference(&documented).collect();
        let stale: Vec<_> = documented.difference(&ours).collect();
        assert!(
            missing.is_empty() && stale.is_empty(),
            "docs/sql.md: undocumented functions {missing:?}; documented but not registered {stale:?}"
        );
    }
}
