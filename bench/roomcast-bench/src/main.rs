//! roomcast-bench: roomcast's load generator and measurer (idle memory,
//! fan-out, rooms, churn, scale), run by `scripts/bench`.
//!
//! `roomcast-bench run …` measures one server (or several nodes) in one
//! scenario and writes a JSON result; `roomcast-bench report …` turns the
//! results of a whole `scripts/bench` run into `docs/BENCHMARKS.md` and its
//! SVG chart; `roomcast-bench worker` is the child process that holds
//! connections (started by `run`, never by hand).
//!
//! Parts: `clients` (sio4/sio3/ws/sse client connections), `net` (loopback
//! source addresses), `tls` (clients over TLS), `payload` (stamped payloads), `tally` (loss, duplicate
//! and reorder detection), `histogram` (latency), `publisher` (Redis/NATS/HTTP/MQTT,
//! Redis Cluster through `redis_cluster`,
//! rate or window), `proc_stats` (/proc sampling), `protocol` + `fleet` +
//! `worker` (worker processes), `run` (phases of a run), `node_metrics` (a
//! node's received-message counter), `result` (JSON and table), `report`
//! (markdown and chart; `report/cluster.rs` the cluster table, `report/recovery.rs` the
//! recovery table), `recovery` (the recovery scenario: a node killed, its clients resuming).

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod clients;
mod fleet;
mod histogram;
mod net;
mod node_metrics;
mod payload;
mod proc_stats;
mod protocol;
mod publisher;
mod recovery;
mod redis_cluster;
mod report;
mod result;
mod run;
mod tally;
mod tls;
mod worker;

#[derive(Parser)]
#[command(
    name = "roomcast-bench",
    about = "Load generator and measurer for roomcast and the Socket.IO peer"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Measure one scenario against running server(s); prints a table, writes JSON.
    Run(Box<run::RunArgs>),
    /// Build docs/BENCHMARKS.md and the SVG chart from result files.
    Report(report::ReportArgs),
    /// Write the cluster scenario's table (scripts/bench-cluster) into docs/BENCHMARKS.md.
    ClusterReport(report::SectionArgs),
    /// Write the recovery scenario's table (scripts/bench-cluster --recovery) into docs/BENCHMARKS.md.
    RecoveryReport(report::SectionArgs),
    /// Internal: a worker process holding connections (spawned by `run`).
    #[command(hide = true)]
    Worker,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Worker => worker::main(),
        Command::Report(args) => match report::write(&args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("roomcast-bench report: {error}");
                ExitCode::FAILURE
            }
        },
        Command::ClusterReport(args) => match report::cluster::write(&args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("roomcast-bench cluster-report: {error}");
                ExitCode::FAILURE
            }
        },
        Command::RecoveryReport(args) => match report::recovery::write(&args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("roomcast-bench recovery-report: {error}");
                ExitCode::FAILURE
            }
        },
        Command::Run(args) => {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(error) => {
                    eprintln!("roomcast-bench: cannot start the runtime: {error}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(run::run(*args)) {
                Ok(_) => ExitCode::SUCCESS,
                Err(error) => {
                    eprintln!("roomcast-bench run: {error}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
