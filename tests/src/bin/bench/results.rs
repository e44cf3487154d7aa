//! Everything one run measured, as one value: what the report renders and what `--json`
//! writes.

use crate::ceiling::Ceiling;
use crate::procfs::Machine;
use crate::scenario::DeploymentResult;
use crate::stats::Percentiles;
use serde::Serialize;

/// Events each order publishes: `order.placed`, `payment.captured`, `shipment.dispatched`,
/// `order.completed`.
pub const EVENTS_PER_ORDER: f64 = 4.0;

#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    pub orders: usize,
    pub concurrency: usize,
    pub warmup: usize,
    pub phase_secs: f64,
    pub sequential: usize,
    pub deadline_secs: u64,
    pub quick: bool,
    /// `--env` settings given to every service process.
    pub env: Vec<String>,
    pub bin_dir: String,
    pub baseline_bin_dir: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Results {
    pub command: String,
    /// UTC, RFC 3339.
    pub date: String,
    pub bench_version: String,
    /// The commit of the tree the bench ran in (`git describe --always --dirty`): what `make
    /// bench` built the binaries from. `None` outside a git checkout.
    pub source: Option<String>,
    pub machine: Machine,
    pub settings: Settings,
    pub ceiling: Option<Ceiling>,
    /// Three broker hops, one message at a time.
    pub floor: Option<Percentiles>,
    pub deployments: Vec<DeploymentResult>,
    /// The SQLite closed loop against `--baseline-bin-dir`.
    pub baseline: Option<DeploymentResult>,
    /// Closed-loop orders/s of the new binaries over the baseline's.
    pub baseline_ratio: Option<f64>,
    /// Every error of the run; any makes the exit code 1.
    pub errors: Vec<String>,
    pub seconds: f64,
}

impl Results {
    /// Events per second of a closed loop over the broker's ceiling.
    pub fn share_of_ceiling(&self, orders_per_sec: f64) -> Option<f64> {
        let ceiling = self.ceiling.as_ref()?.messages_per_sec;
        (ceiling > 0.0).then(|| orders_per_sec * EVENTS_PER_ORDER / ceiling)
    }
}
