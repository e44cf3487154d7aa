//! CPU seconds per 1,000 orders of each process over a phase: user + system time from
//! `/proc/<pid>/stat` before and after, divided by the orders completed in between. What an
//! order costs, wherever it is spent: the services, the broker, PostgreSQL, the load generator.

use crate::procfs;
use serde::Serialize;

/// A process, or a group of processes counted together (PostgreSQL's backends).
#[derive(Debug, Clone)]
pub struct Watched {
    pub label: String,
    pub pids: Vec<u32>,
}

impl Watched {
    pub fn one(label: &str, pid: u32) -> Watched {
        Watched {
            label: label.to_owned(),
            pids: vec![pid],
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct CpuShare {
    pub process: String,
    pub cpu_seconds: f64,
    pub per_1000_orders: f64,
}

/// Tick counts taken at the start of a phase.
#[derive(Debug)]
pub struct CpuMeter {
    start: Vec<(Watched, Vec<Option<u64>>)>,
    ticks_per_second: f64,
}

impl CpuMeter {
    pub fn start(watched: Vec<Watched>) -> CpuMeter {
        let start = watched
            .into_iter()
            .map(|w| {
                let ticks = w.pids.iter().map(|pid| procfs::cpu_ticks(*pid)).collect();
                (w, ticks)
            })
            .collect();
        CpuMeter {
            start,
            ticks_per_second: procfs::ticks_per_second(),
        }
    }

    /// What each watched process spent since `start`, per 1,000 of `orders`. A process of a
    /// group that was not there at both ends (a PostgreSQL backend that came or went) is left
    /// out of its group.
    pub fn finish(&self, orders: usize) -> Vec<CpuShare> {
        self.start
            .iter()
            .map(|(watched, before)| {
                let ticks: u64 = watched
                    .pids
                    .iter()
                    .zip(before)
                    .filter_map(|(pid, before)| {
                        let after = procfs::cpu_ticks(*pid)?;
                        Some(after.saturating_sub((*before)?))
                    })
                    .sum();
                let cpu_seconds = ticks as f64 / self.ticks_per_second;
                CpuShare {
                    process: watched.label.clone(),
                    cpu_seconds,
                    per_1000_orders: cpu_seconds * 1000.0 / orders.max(1) as f64,
                }
            })
            .collect()
    }
}
