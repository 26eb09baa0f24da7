//! The `roomcast` command: `roomcast [serve]` runs the server, `roomcast
//! publish CHANNEL DATA` publishes through a running server's HTTP API, and
//! `roomcast healthcheck` checks a running server.

use std::process::ExitCode;
use std::time::Duration;

use roomcast::config::{self, Command, LogFormat, ServeArgs};
use roomcast::shutdown::{self, Shutdown};

mod client;

fn main() -> ExitCode {
    let cli = match config::parse() {
        Ok(cli) => cli,
        Err(error) => {
            eprintln!("roomcast: {error}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("roomcast: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match cli.command {
        Some(Command::Publish(args)) => runtime.block_on(client::publish(args)),
        Some(Command::Healthcheck(args)) => runtime.block_on(client::healthcheck(args)),
        Some(Command::Serve(args)) => serve(runtime, *args),
        None => serve(runtime, cli.serve),
    }
}

fn serve(runtime: tokio::runtime::Runtime, args: ServeArgs) -> ExitCode {
    init_logging(&args);
    let shutdown = Shutdown::new();
    let deadline = args.http.shutdown_timeout();
    // The last word on exiting: even a runtime whose workers never yield
    // cannot keep the process past the drain deadline.
    let supervisor = shutdown::supervise(shutdown.clone(), deadline, |unfinished| {
        tracing::error!(%unfinished, "the drain deadline passed and the server did not stop; exiting");
        std::process::exit(1);
    });
    if let Err(error) = supervisor {
        eprintln!("roomcast: cannot start the shutdown supervisor: {error}");
        return ExitCode::FAILURE;
    }
    let result = runtime.block_on(roomcast::server::serve(args, shutdown));
    // A worker stuck in a task that never yields would block a plain drop.
    runtime.shutdown_timeout(RUNTIME_EXIT);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "roomcast stopped");
            ExitCode::FAILURE
        }
    }
}

/// How long the runtime's threads get to stop once the server has drained.
const RUNTIME_EXIT: Duration = Duration::from_secs(1);

fn init_logging(args: &ServeArgs) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&args.log))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let stderr = std::io::stderr();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&stderr))
        .with_writer(std::io::stderr);
    match args.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Human => builder.init(),
    }
}
