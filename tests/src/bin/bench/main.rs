//! `bench`: the suite measured the way its users see it, next to what the broker alone can do on
//! the same machine, in one run.
//!
//! 1. The broker alone: its ceiling (confirmed persistent publishes to a quorum queue, consumed
//!    with acks: messages per second) and its floor (three hops, one message at a time).
//! 2. The release binaries as processes on SQLite, as `make up` runs them (the observer on,
//!    default logging): a closed loop (orders/s; CPU, disk writes and context switches per
//!    order of every process), open loops at 25/50/75% of that peak and at a fixed rate
//!    (latency from each order's intended send time to its terminal event on the bus; at the
//!    fixed rate, what every process spends per order), orders one at a time against the
//!    floor, and each process's peak memory.
//! 3. The same binaries without the observer and with quiet logs (the bench's deployment before
//!    it measured `make up`'s): the closed loop and the fixed rate; and optionally the same
//!    closed loop against baseline binaries (`--baseline-bin-dir`), deployed the same way.
//! 4. PostgreSQL with one and with two replicas of each service: closed loop, one open loop.
//!
//! Orders are posted over HTTP and seen to end by a probe queue on `orders.events`; nothing
//! reads the services' databases. `bench --help` lists the options; `docs/benchmarks.md` says
//! how to read the results. Every address it touches is on loopback.

mod broker;
mod ceiling;
mod cleanup;
mod cli;
mod client;
mod closed_loop;
mod deployment;
mod floor;
mod open_loop;
mod partitions;
mod probe;
mod procfs;
mod progress;
mod report;
mod results;
mod scenario;
mod sequential;
mod stats;
mod usage;

use crate::cleanup::Cleanup;
use crate::cli::{Cli, Plan};
use crate::deployment::{Database, Spec};
use crate::progress::Progress;
use crate::results::{Results, Settings};
use crate::scenario::{Measures, Rate};
use clap::Parser;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

// Two workers, as in `chaos`: the machine the suite is measured on has two cores, and the
// load generator should not pretend to have more.
#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let plan = match Plan::from_cli(&cli) {
        Ok(plan) => plan,
        Err(error) => {
            eprintln!("bench: {error:#}");
            return ExitCode::from(2);
        }
    };
    // The JSON goes next to the report unless told otherwise: `make bench` writes
    // docs/benchmark-results.md and docs/benchmark-results.json.
    let json = cli
        .json
        .clone()
        .or_else(|| cli.report.as_ref().map(|r| r.with_extension("json")));

    let cleanup = Cleanup::default();
    let progress = Progress::start();
    let started = Instant::now();
    // On a task of its own so that even a panic comes back here, to the cleanup.
    let mut measuring = tokio::spawn(run(plan, cleanup.clone(), progress.clone()));
    let results = tokio::select! {
        joined = &mut measuring => joined.map_err(|e| format!("the run failed: {e}")),
        _ = tokio::signal::ctrl_c() => {
            // Dropping the run's deployments ends their processes (kill on drop).
            measuring.abort();
            let _ = measuring.await;
            Err("interrupted".to_owned())
        }
    };
    progress.done();
    // Whatever happened: processes are gone with their deployments; names and databases here.
    let left: Vec<String> = cleanup
        .sweep()
        .await
        .into_iter()
        .map(|what| format!("could not delete {what}: delete it by hand"))
        .collect();
    let mut results = match results {
        Ok(results) => results,
        Err(why) => {
            eprintln!("bench: {why}");
            for problem in &left {
                eprintln!("bench: {problem}");
            }
            return ExitCode::FAILURE;
        }
    };
    results.errors.extend(left);
    results.seconds = started.elapsed().as_secs_f64();

    println!("{}", report::tables(&results));
    if let Some(path) = &cli.report
        && let Err(error) = report::write_markdown(path, &results)
    {
        results.errors.push(format!("{error:#}"));
    }
    if let Some(path) = &json
        && let Err(error) = report::write_json(path, &results)
    {
        results.errors.push(format!("{error:#}"));
    }
    eprintln!("bench: done in {:.0} s", results.seconds);
    if results.errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        eprintln!("bench: FAILED with {} error(s):", results.errors.len());
        for error in &results.errors {
            eprintln!("  - {error}");
        }
        ExitCode::FAILURE
    }
}

/// Every measurement of the plan, in order. Errors are collected, not returned: one failed
/// measurement still leaves the others to report.
async fn run(plan: Plan, cleanup: Cleanup, progress: Arc<Progress>) -> Results {
    let (plan, cleanup, progress) = (&plan, &cleanup, &progress);
    let run_prefix = format!("bench-{}.", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let mut errors = Vec::new();

    progress.note(&format!(
        "broker ceiling: {} messages",
        plan.broker_messages
    ));
    let ceiling = ceiling::measure(
        &format!("{run_prefix}ceiling"),
        plan.broker_messages,
        cleanup,
    )
    .await
    .inspect(|c| progress.note(&format!("broker ceiling: {:.0} msg/s", c.messages_per_sec)))
    .map_err(|e| errors.push(format!("broker ceiling: {e:#}")))
    .ok();
    progress.note(&format!(
        "broker floor: {} three-hop trips",
        plan.sequential
    ));
    let floor = floor::measure(&run_prefix, plan.sequential.max(1), cleanup)
        .await
        .inspect(|f| {
            progress.note(&format!(
                "broker floor: p50 {:.1} ms, p99 {:.1} ms",
                f.p50, f.p99
            ))
        })
        .map_err(|e| errors.push(format!("broker floor: {e:#}")))
        .ok();

    let deadline = Duration::from_secs(plan.deadline_secs);
    let closed_only = Measures {
        warmup: plan.warmup,
        orders: plan.orders,
        clients: plan.concurrency,
        open: Vec::new(),
        phase_secs: plan.phase_secs,
        sequential: 0,
        deadline,
        overload_clients: None,
    };
    let mut sqlite_measures = closed_only.clone();
    sqlite_measures.open = plan
        .peak_fractions
        .iter()
        .map(|f| Rate::OfPeak(*f))
        .collect();
    sqlite_measures.open.push(Rate::Fixed(plan.fixed_rate));
    sqlite_measures.sequential = plan.sequential;
    sqlite_measures.overload_clients = Some(plan.concurrency * 2);

    let with_env = |mut spec: Spec| {
        spec.env = plan.env.clone();
        spec
    };
    let mut deployments = Vec::new();
    let mut bare_rate = None;
    if plan.sqlite {
        let up = with_env(Spec::as_make_up("up", &plan.bin_dir));
        deployments
            .push(scenario::run(&up, &sqlite_measures, &run_prefix, cleanup, progress).await);
        cleanup.sweep().await;
        let mut bare_measures = closed_only.clone();
        bare_measures.open = vec![Rate::Fixed(plan.fixed_rate)];
        let mut bare = with_env(Spec::new("sqlite", Database::Sqlite, 1, &plan.bin_dir));
        bare.name = format!("{}, no observer, quiet logs", bare.name);
        let result = scenario::run(&bare, &bare_measures, &run_prefix, cleanup, progress).await;
        bare_rate = rate(&result);
        deployments.push(result);
        cleanup.sweep().await;
    }

    // Right after the new binaries' run, deployed as they were (no observer: an older
    // build may have none), so both meet the machine in the same state.
    let mut baseline = None;
    if let Some(dir) = &plan.baseline_bin_dir {
        let mut spec = with_env(Spec::new("baseline", Database::Sqlite, 1, dir));
        spec.name = format!("{} (baseline binaries)", spec.name);
        baseline = Some(scenario::run(&spec, &closed_only, &run_prefix, cleanup, progress).await);
        cleanup.sweep().await;
    }

    let mut pg_measures = closed_only.clone();
    pg_measures.open = vec![Rate::Fixed(plan.pg_rate)];
    for replicas in &plan.pg_replicas {
        let key = format!("pg{replicas}");
        let spec = with_env(Spec::new(
            &key,
            Database::Postgres,
            *replicas,
            &plan.bin_dir,
        ));
        deployments.push(scenario::run(&spec, &pg_measures, &run_prefix, cleanup, progress).await);
        cleanup.sweep().await;
        if plan.partitioned && *replicas > 1 {
            let mut spec = spec.clone();
            spec.key = format!("pg{replicas}p");
            spec.name = format!("{}, orders partitioned", spec.name);
            spec.partitioned = true;
            if let Err(error) = partitions::enable_plugin().await {
                errors.push(format!("{}: {error:#}", spec.name));
                continue;
            }
            deployments
                .push(scenario::run(&spec, &pg_measures, &run_prefix, cleanup, progress).await);
            cleanup.sweep().await;
        }
    }

    let baseline_ratio = match (bare_rate, baseline.as_ref().and_then(rate)) {
        (Some(new), Some(old)) if old > 0.0 => Some(new / old),
        _ => None,
    };
    for deployment in deployments.iter().chain(&baseline) {
        errors.extend(deployment.errors.iter().cloned());
    }
    Results {
        command: std::env::args().collect::<Vec<_>>().join(" "),
        date: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        bench_version: env!("CARGO_PKG_VERSION").to_owned(),
        source: source_commit(),
        machine: procfs::machine(),
        settings: settings(plan),
        ceiling,
        floor,
        deployments,
        baseline,
        baseline_ratio,
        errors,
        seconds: 0.0,
    }
}

/// A deployment's closed-loop orders per second.
fn rate(deployment: &scenario::DeploymentResult) -> Option<f64> {
    deployment.closed_loop.as_ref().map(|c| c.orders_per_sec)
}

fn settings(plan: &Plan) -> Settings {
    let display = |p: &PathBuf| p.display().to_string();
    Settings {
        orders: plan.orders,
        concurrency: plan.concurrency,
        warmup: plan.warmup,
        phase_secs: plan.phase_secs,
        sequential: plan.sequential,
        deadline_secs: plan.deadline_secs,
        quick: plan.quick,
        env: plan.env.iter().map(|(k, v)| format!("{k}={v}")).collect(),
        bin_dir: display(&plan.bin_dir),
        baseline_bin_dir: plan.baseline_bin_dir.as_ref().map(display),
    }
}

/// `git describe --always --dirty --abbrev=12` of the working directory: the commit `make bench`
/// built the binaries from, `-dirty` if the tree had changes. `None` outside a git checkout.
fn source_commit() -> Option<String> {
    let output = std::process::Command::new("git")
        .args(["describe", "--always", "--dirty", "--abbrev=12"])
        .output()
        .ok()?;
    let commit = String::from_utf8(output.stdout).ok()?.trim().to_owned();
    (output.status.success() && !commit.is_empty()).then_some(commit)
}
