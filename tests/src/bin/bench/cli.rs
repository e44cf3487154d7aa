//! The command line (`bench --help`) and the plan it resolves to.
//!
//! Sizes are `Option`s on the command line so that `--quick` can pick its own defaults while a
//! value given explicitly still wins over both.

use anyhow::{Result, bail};
use clap::Parser;
use std::path::PathBuf;

/// Measures the Choreo suite the way its users see it: the broker's own ceiling and floor, then
/// the three release binaries as processes on SQLite and on PostgreSQL, loaded over HTTP and
/// observed on the bus.
#[derive(Debug, Parser)]
#[command(name = "bench", version)]
pub struct Cli {
    /// Directory of the service binaries under test (orders, billing, shipping).
    #[arg(long, value_name = "DIR", default_value = "target/release")]
    pub bin_dir: PathBuf,

    /// Orders of each closed-loop measurement [default: 5000; --quick: 300].
    #[arg(long, value_name = "N")]
    pub orders: Option<usize>,

    /// Concurrent clients of the closed loop, each posting its next order once the last was
    /// answered.
    #[arg(long, value_name = "C", default_value_t = 32)]
    pub concurrency: usize,

    /// Seconds of each open-loop phase [default: 10; --quick: 2].
    #[arg(long, value_name = "S")]
    pub phase_secs: Option<f64>,

    /// Orders placed one at a time for the single-order latency [default: 200; --quick: 50].
    #[arg(long, value_name = "N")]
    pub sequential: Option<usize>,

    /// The fixed open-loop rate measured on SQLite, besides the fractions of the peak.
    #[arg(long, value_name = "ORDERS_PER_SEC", default_value_t = 500.0)]
    pub fixed_rate: f64,

    /// The open-loop rate measured on PostgreSQL.
    #[arg(long, value_name = "ORDERS_PER_SEC", default_value_t = 300.0)]
    pub pg_rate: f64,

    /// How long after its phase's last request an order may take to reach its terminal event
    /// before it counts as lost.
    #[arg(long, value_name = "S", default_value_t = 60)]
    pub deadline_secs: u64,

    /// Also run the SQLite closed loop against the service binaries in DIR (say, built from an
    /// older commit) and report new / baseline.
    #[arg(long, value_name = "DIR")]
    pub baseline_bin_dir: Option<PathBuf>,

    /// A setting passed to every service process (repeatable), e.g. --env CHOREO_CONSUMER_BATCH=1;
    /// with a process's name first, to that process only: --env observer:CHOREO_CONSUMER_LINGER_MS=50.
    #[arg(long = "env", value_name = "KEY=VALUE", value_parser = parse_env)]
    pub env: Vec<(String, String)>,

    /// Skip the PostgreSQL measurements (when no PostgreSQL is at hand).
    #[arg(long)]
    pub no_postgres: bool,

    /// Measure PostgreSQL only, skipping the SQLite deployment (to profile or repeat the
    /// PostgreSQL rows alone; the broker's ceiling and floor are still measured).
    #[arg(long)]
    pub only_postgres: bool,

    /// Also measure PostgreSQL with orders' events partitioned by order over one queue per
    /// orders replica (RabbitMQ's consistent-hash exchange, enabled here with rabbitmq-plugins),
    /// for each replica count above 1 (with --quick: PostgreSQL with 2 replicas too, so that
    /// CI runs it). Not the contract's topology: an experiment (docs/benchmarks.md, "Replicas").
    #[arg(long)]
    pub partitioned: bool,

    /// Write the markdown report here (`make bench` passes docs/benchmark-results.md).
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,

    /// Write every number as JSON here [default with --report: the report's path with a .json
    /// extension, so docs/benchmark-results.json for `make bench`].
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,

    /// A short run for CI: a few hundred orders, 2 s phases, SQLite and PostgreSQL with one
    /// replica, no baseline. Fails if any order does not complete or anything errors; asserts no
    /// performance number.
    #[arg(long)]
    pub quick: bool,
}

/// The processes an `--env` may name.
const PROCESSES: [&str; 4] = ["orders", "billing", "shipping", "observer"];

fn parse_env(text: &str) -> Result<(String, String)> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() && !key.ends_with(':') => {
            if let Some((process, _)) = key.split_once(':')
                && !PROCESSES.contains(&process)
            {
                bail!("{process:?} in {text:?} is none of {PROCESSES:?}");
            }
            Ok((key.to_owned(), value.to_owned()))
        }
        _ => bail!("expected KEY=VALUE or PROCESS:KEY=VALUE, got {text:?}"),
    }
}

/// What one run measures, every size resolved.
#[derive(Debug, Clone)]
pub struct Plan {
    pub bin_dir: PathBuf,
    pub orders: usize,
    pub concurrency: usize,
    /// Orders posted before a closed loop and not counted: connections, caches and the
    /// services' first transactions warm up.
    pub warmup: usize,
    pub phase_secs: f64,
    pub sequential: usize,
    /// Messages through the broker for its ceiling: as many as the closed loop publishes.
    pub broker_messages: usize,
    /// Fractions of the measured closed-loop peak run open loop on SQLite.
    pub peak_fractions: Vec<f64>,
    pub fixed_rate: f64,
    pub pg_rate: f64,
    /// Replica counts measured on PostgreSQL.
    pub pg_replicas: Vec<usize>,
    /// Each of `pg_replicas` above 1 measured partitioned too.
    pub partitioned: bool,
    /// Whether the SQLite deployment is measured (not with --only-postgres).
    pub sqlite: bool,
    pub deadline_secs: u64,
    pub baseline_bin_dir: Option<PathBuf>,
    pub env: Vec<(String, String)>,
    pub quick: bool,
}

impl Plan {
    pub fn from_cli(cli: &Cli) -> Result<Plan> {
        let quick = cli.quick;
        let orders = cli.orders.unwrap_or(if quick { 300 } else { 5000 });
        let phase_secs = cli.phase_secs.unwrap_or(if quick { 2.0 } else { 10.0 });
        if orders == 0 || cli.concurrency == 0 {
            bail!("--orders and --concurrency must be at least 1");
        }
        if !(phase_secs > 0.0 && cli.fixed_rate > 0.0 && cli.pg_rate > 0.0) {
            bail!("--phase-secs, --fixed-rate and --pg-rate must be positive");
        }
        if cli.partitioned && cli.no_postgres {
            bail!("--partitioned measures PostgreSQL replicas: not with --no-postgres");
        }
        if cli.only_postgres && (cli.no_postgres || cli.baseline_bin_dir.is_some()) {
            bail!(
                "--only-postgres measures no SQLite: not with --no-postgres or --baseline-bin-dir"
            );
        }
        if quick && cli.baseline_bin_dir.is_some() {
            bail!("--quick runs no baseline: drop --baseline-bin-dir or --quick");
        }
        let pg_replicas = match (cli.no_postgres, quick) {
            (true, _) => Vec::new(),
            // With --partitioned, two replicas too, so that the partitioned topology is run.
            (false, true) if cli.partitioned => vec![1, 2],
            (false, true) => vec![1],
            (false, false) => vec![1, 2],
        };
        Ok(Plan {
            bin_dir: cli.bin_dir.clone(),
            orders,
            concurrency: cli.concurrency,
            warmup: (cli.concurrency * 4).min(orders),
            phase_secs,
            sequential: cli.sequential.unwrap_or(if quick { 50 } else { 200 }),
            broker_messages: orders * 4,
            peak_fractions: vec![0.25, 0.5, 0.75],
            fixed_rate: cli.fixed_rate,
            pg_rate: cli.pg_rate,
            pg_replicas,
            partitioned: cli.partitioned,
            sqlite: !cli.only_postgres,
            deadline_secs: cli.deadline_secs,
            baseline_bin_dir: cli.baseline_bin_dir.clone(),
            env: cli.env.clone(),
            quick,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(args: &[&str]) -> Result<Plan> {
        let cli = Cli::try_parse_from(std::iter::once("bench").chain(args.iter().copied()))?;
        Plan::from_cli(&cli)
    }

    #[test]
    fn only_postgres_measures_no_sqlite_and_both_replica_counts() {
        let only = plan(&["--only-postgres"]).expect("plan");
        assert!(!only.sqlite);
        assert_eq!(only.pg_replicas, [1, 2]);
        let default = plan(&[]).expect("plan");
        assert!(default.sqlite);
        assert!(plan(&["--only-postgres", "--no-postgres"]).is_err());
        assert!(plan(&["--only-postgres", "--baseline-bin-dir", "x"]).is_err());
    }

    #[test]
    fn an_env_goes_to_every_process_or_to_the_one_it_names() {
        let both = plan(&[
            "--env",
            "CHOREO_CONSUMER_BATCH=1",
            "--env",
            "observer:CHOREO_CONSUMER_LINGER_MS=50",
        ])
        .expect("plan");
        assert_eq!(
            both.env,
            [
                ("CHOREO_CONSUMER_BATCH".to_owned(), "1".to_owned()),
                (
                    "observer:CHOREO_CONSUMER_LINGER_MS".to_owned(),
                    "50".to_owned()
                ),
            ]
        );
        assert!(plan(&["--env", "observr:CHOREO_CONSUMER_LINGER_MS=50"]).is_err());
        assert!(plan(&["--env", "=1"]).is_err());
        assert!(plan(&["--env", "observer:=1"]).is_err());
    }
}
