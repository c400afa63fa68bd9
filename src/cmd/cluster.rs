//! `quern cluster scheduler|executor`: the nodes of a DataFusion Ballista cluster, with
//! quern's functions registered on each (see [`crate::cluster`] and docs/cluster.md).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;

use crate::cluster::{ExecutorOptions, SchedulerOptions};

/// Arguments of `quern cluster`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub node: Node,
}

#[derive(Debug, clap::Subcommand)]
pub enum Node {
    /// Run Ballista's scheduler: it plans the jobs `quern sql --cluster` and `quern build
    /// --cluster` send and hands their tasks to the executors. Runs until stopped.
    Scheduler {
        /// Address to listen on, HOST:PORT (port 0: any free port; the line
        /// `quern cluster scheduler listening on HOST:PORT` says which).
        #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:50050")]
        bind: String,
        /// Seconds without a heartbeat after which an executor counts as lost and its
        /// tasks run on the others (Ballista's default is 180).
        #[arg(long, value_name = "SECS", default_value_t = 180)]
        executor_timeout: u64,
    },
    /// Run a Ballista executor that takes tasks from the scheduler. Runs until stopped
    /// (SIGTERM, Ctrl+C).
    Executor {
        /// The scheduler's HOST:PORT.
        #[arg(long, value_name = "HOST:PORT")]
        scheduler: String,
        /// Address of the executor's Arrow Flight service (shuffle data), HOST:PORT; its
        /// gRPC service listens on --grpc-port.
        #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:50051")]
        bind: String,
        /// Port of the executor's gRPC service (default: the --bind port + 1).
        #[arg(long, value_name = "PORT")]
        grpc_port: Option<u16>,
        /// The host name the other nodes reach this executor by (default: the --bind host).
        #[arg(long, value_name = "HOST")]
        advertise: Option<String>,
        /// Directory for shuffle files (default: a temporary directory).
        #[arg(long, value_name = "DIR")]
        work_dir: Option<PathBuf>,
        /// Tasks this executor runs at once (default: one per CPU core).
        #[arg(long, value_name = "N", default_value_t = 0)]
        slots: usize,
        /// Seconds between heartbeats to the scheduler.
        #[arg(long, value_name = "SECS", default_value_t = 60)]
        heartbeat: u64,
    },
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        // Ballista's own binaries use 32 MiB stacks: its plan (de)serialization recurses.
        .thread_stack_size(32 * 1024 * 1024)
        .build()
        .context("starting the runtime")?;
    match args.node {
        Node::Scheduler {
            bind,
            executor_timeout,
        } => rt.block_on(crate::cluster::run_scheduler(&SchedulerOptions {
            bind,
            executor_timeout_s: executor_timeout,
        }))?,
        Node::Executor {
            scheduler,
            bind,
            grpc_port,
            advertise,
            work_dir,
            slots,
            heartbeat,
        } => rt.block_on(crate::cluster::run_executor(&ExecutorOptions {
            scheduler,
            bind,
            grpc_port,
            advertise,
            work_dir,
            slots,
            heartbeat_s: heartbeat,
        }))?,
    }
    Ok(ExitCode::SUCCESS)
}
