//! Running quern's SQL and builds on an Apache DataFusion Ballista cluster (issue 17).
//!
//! A cluster is Ballista's own scheduler and executors, started in-process by
//! `quern cluster scheduler` and `quern cluster executor` ([`run_scheduler`],
//! [`run_executor`]), so that every node carries quern's SQL functions. Ballista ships plans
//! between nodes as protobuf and names a function by its name only; a node that does not know
//! the name fails the query. Ballista's client-side session upgrade also replaces the
//! session's function list with its defaults. So the functions are registered three times:
//! on the scheduler's session builder ([`session_builder`], used to decode logical plans),
//! on every executor's function registry (used to decode physical plans), and on the client
//! after the upgrade ([`client_context`]).
//!
//! Tables: the listing tables of `quern sql` (exactly the manifest's shards) and views travel
//! in datafusion-proto's own messages. In-memory tables (`token_splits`, and the empty tables
//! of a directory that has no shards for them) do not; [`QuernCodec`] carries them as Arrow
//! IPC. Every node reads the shards by the same absolute path: the corpus must lie on storage
//! every node sees under the same path (docs/cluster.md).

pub mod build;

use std::io::Cursor;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context as _};
use arrow::array::RecordBatch;
use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::StreamWriter;
use ballista_core::extension::{SessionConfigExt, SessionStateExt};
use ballista_core::registry::BallistaFunctionRegistry;
use ballista_core::serde::BallistaLogicalExtensionCodec;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::TableProvider;
use datafusion::common::TableReference;
use datafusion::datasource::empty::EmptyTable;
use datafusion::datasource::file_format::FileFormatFactory;
use datafusion::datasource::MemTable;
use datafusion::error::DataFusionError;
use datafusion::execution::context::SessionState;
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::execution::TaskContext;
use datafusion::logical_expr::{Extension, LogicalPlan};
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion_proto::logical_plan::LogicalExtensionCodec;

/// The scheduler's default port (Ballista's).
pub const DEFAULT_SCHEDULER_PORT: u16 = 50050;

/// Registers every function a cluster node must know on `ctx`: `quern sql`'s functions and
/// the build's unit kernel ([`build::register`]).
pub fn register_node_functions(ctx: &SessionContext) {
    crate::sql::register_functions(ctx);
    build::register(ctx);
}

/// `state` with the node functions registered on it.
pub fn with_node_functions(state: SessionState) -> SessionState {
    let ctx = SessionContext::new_with_state(state);
    register_node_functions(&ctx);
    ctx.state()
}

/// The scheduler's session builder: Ballista's default one, plus quern's functions.
pub fn session_builder(config: SessionConfig) -> datafusion::error::Result<SessionState> {
    let state = ballista_core::utils::default_session_builder(config)?;
    Ok(with_node_functions(state))
}

/// The function registry every executor decodes physical plans with.
pub fn executor_registry() -> anyhow::Result<BallistaFunctionRegistry> {
    let state = session_builder(SessionConfig::new_with_ballista())
        .context("building the executor's session")?;
    Ok(BallistaFunctionRegistry::from(&state))
}

/// Parses `HOST:PORT` (a port alone means localhost), resolving the host.
pub fn parse_addr(text: &str, what: &str) -> anyhow::Result<(String, u16, SocketAddr)> {
    let (host, port) = match text.rsplit_once(':') {
        Some((h, p)) => (h.trim_start_matches('[').trim_end_matches(']'), p),
        None => {
            bail!("{what} `{text}`: expected HOST:PORT (e.g. 127.0.0.1:{DEFAULT_SCHEDULER_PORT})")
        }
    };
    let host = if host.is_empty() { "127.0.0.1" } else { host };
    let port: u16 = port
        .parse()
        .with_context(|| format!("{what} `{text}`: `{port}` is not a port number"))?;
    let addr = (host, port)
        .to_socket_addrs()
        .with_context(|| format!("{what} `{text}`: cannot resolve `{host}`"))?
        .next()
        .with_context(|| format!("{what} `{text}`: `{host}` resolves to no address"))?;
    Ok((host.to_string(), port, addr))
}

/// Checks that a scheduler answers at `text` (HOST:PORT) before any work starts, so an
/// unreachable one is one clear error instead of a gRPC retry loop. Returns the URL
/// Ballista's client takes.
pub fn check_scheduler(text: &str) -> anyhow::Result<String> {
    let (host, port, addr) = parse_addr(text, "--cluster")?;
    TcpStream::connect_timeout(&addr, Duration::from_secs(5)).with_context(|| {
        format!(
            "cannot reach the Ballista scheduler at {text} ({addr}); start one with \
             `quern cluster scheduler --bind {text}` and executors with \
             `quern cluster executor --scheduler {text}`"
        )
    })?;
    Ok(format!("df://{host}:{port}"))
}

/// A client session that runs its plans on the cluster at `url` (from [`check_scheduler`]):
/// `config`'s settings, Ballista's planner, [`QuernCodec`], and quern's functions registered
/// after Ballista's upgrade (which would drop them).
pub fn client_context(url: &str, config: SessionConfig) -> anyhow::Result<SessionContext> {
    let config = config
        .with_ballista_logical_extension_codec(Arc::new(QuernCodec::default()))
        .with_ballista_job_name("quern");
    let state = SessionStateBuilder::new()
        .with_default_features()
        .with_config(config)
        .build();
    let scheduler = url.replacen("df://", "http://", 1);
    let state = state
        .upgrade_for_ballista(scheduler)
        .map_err(anyhow::Error::from)
        .context("setting up the Ballista client session")?;
    let ctx = SessionContext::new_with_state(state);
    register_node_functions(&ctx);
    Ok(ctx)
}

/// Ballista's logical codec, plus in-memory tables ([`MemTable`], [`EmptyTable`]) as Arrow IPC
/// streams, which datafusion-proto has no message for.
#[derive(Debug, Default)]
pub struct QuernCodec {
    inner: BallistaLogicalExtensionCodec,
}

/// First byte of an encoded in-memory table.
const MEM_TABLE_TAG: u8 = 0xA7;

fn df_err(e: impl std::fmt::Display) -> DataFusionError {
    DataFusionError::Internal(format!("quern cluster codec: {e}"))
}

impl LogicalExtensionCodec for QuernCodec {
    fn try_decode(
        &self,
        buf: &[u8],
        inputs: &[LogicalPlan],
        ctx: &TaskContext,
    ) -> datafusion::error::Result<Extension> {
        self.inner.try_decode(buf, inputs, ctx)
    }

    fn try_encode(&self, node: &Extension, buf: &mut Vec<u8>) -> datafusion::error::Result<()> {
        self.inner.try_encode(node, buf)
    }

    fn try_decode_table_provider(
        &self,
        buf: &[u8],
        table_ref: &TableReference,
        schema: SchemaRef,
        ctx: &TaskContext,
    ) -> datafusion::error::Result<Arc<dyn TableProvider>> {
        let Some((&MEM_TABLE_TAG, mut rest)) = buf.split_first() else {
            return self
                .inner
                .try_decode_table_provider(buf, table_ref, schema, ctx);
        };
        // Partitions, each an 8-byte little-endian length and an Arrow IPC stream.
        let mut partitions = Vec::new();
        while !rest.is_empty() {
            let (len, tail) = rest
                .split_first_chunk::<8>()
                .ok_or_else(|| df_err(format!("table `{table_ref}`: truncated")))?;
            let len = usize::try_from(u64::from_le_bytes(*len)).map_err(df_err)?;
            if tail.len() < len {
                return Err(df_err(format!("table `{table_ref}`: truncated")));
            }
            let (ipc, tail) = tail.split_at(len);
            let reader = StreamReader::try_new(Cursor::new(ipc), None).map_err(df_err)?;
            partitions.push(reader.collect::<Result<Vec<_>, _>>().map_err(df_err)?);
            rest = tail;
        }
        if partitions.is_empty() {
            partitions.push(Vec::new());
        }
        Ok(Arc::new(MemTable::try_new(schema, partitions)?))
    }

    fn try_encode_table_provider(
        &self,
        table_ref: &TableReference,
        node: Arc<dyn TableProvider>,
        buf: &mut Vec<u8>,
    ) -> datafusion::error::Result<()> {
        let partitions: Vec<Vec<RecordBatch>> = if let Some(mem) = node.downcast_ref::<MemTable>() {
            let mut all = Vec::with_capacity(mem.batches.len());
            for part in &mem.batches {
                let part = part.try_read().map_err(|_| {
                    df_err(format!(
                        "table `{table_ref}` is being written while planned"
                    ))
                })?;
                all.push(part.clone());
            }
            all
        } else if node.downcast_ref::<EmptyTable>().is_some() {
            vec![Vec::new()]
        } else {
            return self.inner.try_encode_table_provider(table_ref, node, buf);
        };
        buf.push(MEM_TABLE_TAG);
        let schema = node.schema();
        for part in &partitions {
            let mut ipc = Vec::new();
            let mut w = StreamWriter::try_new(&mut ipc, &schema).map_err(df_err)?;
            for b in part {
                w.write(b).map_err(df_err)?;
            }
            w.finish().map_err(df_err)?;
            drop(w);
            buf.extend_from_slice(&(ipc.len() as u64).to_le_bytes());
            buf.extend_from_slice(&ipc);
        }
        Ok(())
    }

    fn try_decode_file_format(
        &self,
        buf: &[u8],
        ctx: &TaskContext,
    ) -> datafusion::error::Result<Arc<dyn FileFormatFactory>> {
        self.inner.try_decode_file_format(buf, ctx)
    }

    fn try_encode_file_format(
        &self,
        buf: &mut Vec<u8>,
        node: Arc<dyn FileFormatFactory>,
    ) -> datafusion::error::Result<()> {
        self.inner.try_encode_file_format(buf, node)
    }
}

/// How a scheduler runs (`quern cluster scheduler`).
#[derive(Debug, Clone)]
pub struct SchedulerOptions {
    /// HOST:PORT to listen on; port 0 picks a free one (printed on stdout).
    pub bind: String,
    /// Seconds without a heartbeat after which an executor counts as dead and its tasks
    /// run elsewhere.
    pub executor_timeout_s: u64,
}

/// Runs a Ballista scheduler with quern's functions until the process is stopped. Prints
/// `quern cluster scheduler listening on HOST:PORT` once it accepts connections.
pub async fn run_scheduler(opts: &SchedulerOptions) -> anyhow::Result<()> {
    use ballista_scheduler::cluster::BallistaCluster;
    use ballista_scheduler::config::SchedulerConfig;
    use ballista_scheduler::scheduler_process::{
        create_scheduler, start_grpc_service_with_listener,
    };
    use datafusion_proto::protobuf::{LogicalPlanNode, PhysicalPlanNode};

    let (host, _, addr) = parse_addr(&opts.bind, "--bind")?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("listening on {addr}"))?;
    let bound = listener.local_addr()?;
    let timeout = opts.executor_timeout_s.max(1);
    let config = SchedulerConfig {
        bind_host: host.clone(),
        external_host: host,
        bind_port: bound.port(),
        executor_timeout_seconds: timeout,
        expire_dead_executor_interval_seconds: timeout.clamp(1, 15),
        no_executors_grace_period_seconds: timeout,
        // Tasks spread over the executors one at a time: a build's tasks are whole input
        // files, long and CPU-bound, which Ballista's default (fill one executor's slots
        // first) would pile onto one node.
        task_distribution: ballista_scheduler::config::TaskDistributionPolicy::RoundRobin,
        override_session_builder: Some(Arc::new(session_builder)),
        override_logical_codec: Some(Arc::new(QuernCodec::default())),
        ..SchedulerConfig::default()
    };
    let config = Arc::new(config);
    let cluster = BallistaCluster::new_from_config(&config)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))
        .context("setting up the scheduler's state")?;
    let scheduler = create_scheduler::<LogicalPlanNode, PhysicalPlanNode>(cluster, config)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))
        .context("starting the scheduler")?;
    println!("quern cluster scheduler listening on {bound}");
    start_grpc_service_with_listener(listener, scheduler)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))
        .context("serving the scheduler")
}

/// How an executor runs (`quern cluster executor`).
#[derive(Debug, Clone)]
pub struct ExecutorOptions {
    /// The scheduler's HOST:PORT.
    pub scheduler: String,
    /// HOST:PORT of the executor's Arrow Flight service (shuffle data); its gRPC service
    /// listens on `grpc_port`.
    pub bind: String,
    pub grpc_port: Option<u16>,
    /// The host name other nodes reach this executor by (default: the bind host).
    pub advertise: Option<String>,
    /// Where shuffle files go (default: a temporary directory).
    pub work_dir: Option<std::path::PathBuf>,
    /// Tasks run at once (default: one per CPU core).
    pub slots: usize,
    /// Seconds between heartbeats to the scheduler.
    pub heartbeat_s: u64,
}

/// Runs a Ballista executor with quern's functions, registered with the scheduler, until the
/// process is stopped (SIGTERM, Ctrl+C) or the scheduler tells it to stop.
pub async fn run_executor(opts: &ExecutorOptions) -> anyhow::Result<()> {
    use ballista_executor::executor_process::{start_executor_process, ExecutorProcessConfig};

    let (s_host, s_port, _) = parse_addr(&opts.scheduler, "--scheduler")?;
    let (host, port, _) = parse_addr(&opts.bind, "--bind")?;
    if port == 0 {
        bail!("--bind {}: an executor needs a fixed port (the scheduler tells other executors where to fetch its shuffle data)", opts.bind);
    }
    let grpc_port = match opts.grpc_port {
        Some(p) => p,
        None => port
            .checked_add(1)
            .context("--bind: give --grpc-port when the port is 65535")?,
    };
    let advertise = opts.advertise.clone().unwrap_or_else(|| host.clone());
    if advertise == "0.0.0.0" || advertise == "::" {
        bail!(
            "--bind {}: other nodes cannot reach a wildcard address; give --advertise HOST",
            opts.bind
        );
    }
    let work_dir = match &opts.work_dir {
        Some(d) => {
            std::fs::create_dir_all(d)
                .with_context(|| format!("creating the work directory {}", d.display()))?;
            Some(
                d.to_str()
                    .with_context(|| format!("{} is not valid UTF-8", d.display()))?
                    .to_string(),
            )
        }
        None => None,
    };
    let config = ExecutorProcessConfig {
        bind_host: host,
        external_host: Some(advertise),
        port,
        grpc_port,
        scheduler_host: s_host,
        scheduler_port: s_port,
        // Waits up to this long for the scheduler to come up (executors often start first).
        scheduler_connect_timeout_seconds: 30,
        vcores: opts.slots,
        work_dir,
        executor_heartbeat_interval_seconds: opts.heartbeat_s.max(1),
        print_thread_info: false,
        override_function_registry: Some(Arc::new(executor_registry()?)),
        override_logical_codec: Some(Arc::new(QuernCodec::default())),
        ..ExecutorProcessConfig::default()
    };
    println!(
        "quern cluster executor on {}:{} (gRPC {}), scheduler {}",
        config.bind_host, config.port, config.grpc_port, opts.scheduler
    );
    start_executor_process(Arc::new(config))
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))
        .context("running the executor")
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::Int64Array;
    use arrow::datatypes::{DataType, Field, Schema};

    /// In-memory tables cross the wire whole: every partition, in order, and an empty table
    /// keeps its schema.
    #[test]
    fn the_codec_carries_in_memory_tables_by_partition() {
        let schema = Arc::new(Schema::new(vec![Field::new("n", DataType::Int64, false)]));
        let batch = |v: Vec<i64>| {
            RecordBatch::try_new(schema.clone(), vec![Arc::new(Int64Array::from(v))]).unwrap()
        };
        let parts = vec![
            vec![batch(vec![1, 2]), batch(vec![3])],
            vec![],
            vec![batch(vec![4])],
        ];
        let codec = QuernCodec::default();
        let table = TableReference::bare("t");
        let ctx = TaskContext::default();
        let mut buf = Vec::new();
        let mem = Arc::new(MemTable::try_new(schema.clone(), parts.clone()).unwrap());
        codec
            .try_encode_table_provider(&table, mem, &mut buf)
            .unwrap();
        let back = codec
            .try_decode_table_provider(&buf, &table, schema.clone(), &ctx)
            .unwrap();
        let back = back.downcast_ref::<MemTable>().unwrap();
        let got: Vec<Vec<RecordBatch>> = back
            .batches
            .iter()
            .map(|p| p.try_read().unwrap().clone())
            .collect();
        assert_eq!(got, parts);

        let mut buf = Vec::new();
        let empty = Arc::new(EmptyTable::new(schema.clone()));
        codec
            .try_encode_table_provider(&table, empty, &mut buf)
            .unwrap();
        let back = codec
            .try_decode_table_provider(&buf, &table, schema.clone(), &ctx)
            .unwrap();
        assert_eq!(back.schema(), schema);
        let mem = back.downcast_ref::<MemTable>().unwrap();
        assert!(mem.batches[0].try_read().unwrap().is_empty());

        // A truncated message is an error, not a panic.
        let mut buf = Vec::new();
        let mem = Arc::new(MemTable::try_new(schema.clone(), parts).unwrap());
        codec
            .try_encode_table_provider(&table, mem, &mut buf)
            .unwrap();
        buf.truncate(buf.len() - 5);
        assert!(codec
            .try_decode_table_provider(&buf, &table, schema, &ctx)
            .is_err());
    }

    #[test]
    fn scheduler_addresses_are_checked() {
        assert_eq!(parse_addr("127.0.0.1:7", "--cluster").unwrap().1, 7);
        let e = parse_addr("somewhere", "--cluster")
            .unwrap_err()
            .to_string();
        assert!(e.contains("expected HOST:PORT"), "{e}");
        let e = format!(
            "{:#}",
            parse_addr("127.0.0.1:http", "--cluster").unwrap_err()
        );
        assert!(e.contains("not a port number"), "{e}");
    }
}
