//! Samples a server process from `/proc/PID`: resident memory (`VmRSS`) and
//! CPU time (`utime + stime` in `stat`), so a scenario can report memory per
//! connection and CPU per delivery. Linux only, as the bench is.

use std::time::Instant;

use serde::{Deserialize, Serialize};

/// Clock ticks per second of `/proc/PID/stat`; 100 on every Linux we run on.
const TICKS_PER_SECOND: f64 = 100.0;

#[derive(Debug, thiserror::Error)]
pub enum ProcError {
    #[error("cannot read /proc/{pid}/{file}: {source} (is the server running?)")]
    Read {
        pid: u32,
        file: &'static str,
        source: std::io::Error,
    },
    #[error("unexpected format of /proc/{pid}/{file}")]
    Format { pid: u32, file: &'static str },
}

/// One reading of one process.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub rss_kib: u64,
    pub cpu_seconds: f64,
}

pub fn sample(pid: u32) -> Result<Sample, ProcError> {
    let status = read(pid, "status")?;
    let rss_kib = status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
        .ok_or(ProcError::Format {
            pid,
            file: "status",
        })?;
    let stat = read(pid, "stat")?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let after_comm = stat
        .rfind(')')
        .map(|i| &stat[i + 1..])
        .ok_or(ProcError::Format { pid, file: "stat" })?;
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat, 12 and 13 after the name.
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok());
    let (Some(utime), Some(stime)) = (ticks(11), ticks(12)) else {
        return Err(ProcError::Format { pid, file: "stat" });
    };
    Ok(Sample {
        rss_kib,
        cpu_seconds: (utime + stime) as f64 / TICKS_PER_SECOND,
    })
}

fn read(pid: u32, file: &'static str) -> Result<String, ProcError> {
    std::fs::read_to_string(format!("/proc/{pid}/{file}")).map_err(|source| ProcError::Read {
        pid,
        file,
        source,
    })
}

/// All server processes of a run (several nodes in the scale scenario).
#[derive(Debug, Clone, Copy)]
pub struct GroupSample {
    pub rss_kib: u64,
    pub cpu_seconds: f64,
    pub at: Instant,
}

pub fn sample_all(pids: &[u32]) -> Result<(GroupSample, Vec<Sample>), ProcError> {
    let each = pids
        .iter()
        .map(|&pid| sample(pid))
        .collect::<Result<Vec<_>, _>>()?;
    let group = GroupSample {
        rss_kib: each.iter().map(|s| s.rss_kib).sum(),
        cpu_seconds: each.iter().map(|s| s.cpu_seconds).sum(),
        at: Instant::now(),
    };
    Ok((group, each))
}

/// Cores used between two samples (1.0 = one core busy all the time).
pub fn cores_between(a: &GroupSample, b: &GroupSample) -> f64 {
    let wall = b.at.duration_since(a.at).as_secs_f64();
    if wall <= 0.0 {
        return 0.0;
    }
    (b.cpu_seconds - a.cpu_seconds) / wall
}

/// What the report keeps about the server's resources.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ServerResources {
    pub pids: Vec<u32>,
    /// Before any bench connection.
    pub rss_before_kib: u64,
    /// All connections open and idle, after settling.
    pub rss_idle_kib: u64,
    /// Per node, idle (scale scenario).
    pub rss_idle_per_node_kib: Vec<u64>,
    /// Highest reading while publishing.
    pub rss_load_max_kib: u64,
    /// `(idle - before) / connections`.
    pub rss_per_connection_kib: f64,
    /// CPU while idle with every connection open (cores).
    pub cpu_idle_cores: f64,
    /// CPU while publishing (cores).
    pub cpu_load_cores: f64,
    /// Server CPU time per delivery while publishing, microseconds.
    pub cpu_us_per_delivery: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let me = std::process::id();
        let first = sample(me).expect("own /proc entry");
        assert!(first.rss_kib > 0);
        let spin = Instant::now();
        let mut x = 0u64;
        while spin.elapsed().as_millis() < 50 {
            x = x.wrapping_add(1);
        }
        assert!(x > 0);
        let second = sample(me).expect("own /proc entry");
        assert!(second.cpu_seconds >= first.cpu_seconds);
    }
}
