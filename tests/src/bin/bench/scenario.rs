//! Everything measured on one deployment, in order: a warm-up, the closed loop (with what every
//! process spent over it: CPU, disk writes, context switches), the open-loop phases (the fixed
//! rate's with the same), the one-at-a-time orders, and each process's peak memory. A failed phase ends the deployment's measurements (what follows would measure
//! a broken system) but not the run: its error is reported with the rest.

use crate::client::Poster;
use crate::closed_loop::{self, ClosedLoop};
use crate::deployment::{Database, Deployment, Spec};
use crate::open_loop::{self, OpenLoop};
use crate::progress::Progress;
use crate::stats::Percentiles;
use crate::usage::{Role, Totals, Usage, UsageMeter, Watched};
use crate::{cleanup::Cleanup, procfs, sequential};
use anyhow::{Result, bail};
use serde::Serialize;
use std::sync::Arc;
use std::time::Duration;

/// A rate of an open-loop phase.
#[derive(Debug, Clone, Copy)]
pub enum Rate {
    /// This fraction of the closed-loop throughput just measured.
    OfPeak(f64),
    Fixed(f64),
}

/// What to measure on a deployment.
#[derive(Debug, Clone)]
pub struct Measures {
    pub warmup: usize,
    pub orders: usize,
    pub clients: usize,
    pub open: Vec<Rate>,
    pub phase_secs: f64,
    pub sequential: usize,
    pub deadline: Duration,
    /// After the open loops, a closed loop of this many clients (twice the first's): overload,
    /// where admission control (`CHOREO_MAX_UNFINISHED_ORDERS`) must keep the accepted orders'
    /// latency bounded.
    pub overload_clients: Option<usize>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Memory {
    pub process: String,
    pub peak_rss_mib: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct DeploymentResult {
    pub name: String,
    /// Short and unique within the run ("up", "sqlite", "pg1").
    pub key: String,
    pub replicas: usize,
    pub closed_loop: Option<ClosedLoop>,
    /// The closed loop of [`Measures::overload_clients`].
    pub overload: Option<ClosedLoop>,
    pub open_loop: Vec<OpenLoop>,
    /// Placed to completed, one order at a time.
    pub one_at_a_time: Option<Percentiles>,
    /// What each process spent per order over the closed loop.
    pub cpu: Vec<Usage>,
    pub cpu_totals: Option<Totals>,
    /// The same over the open loop at the fixed rate, at which it runs.
    pub steady: Option<Steady>,
    pub memory: Vec<Memory>,
    pub errors: Vec<String>,
}

/// What each process spent per order at a steady rate (the open loop at the fixed rate).
#[derive(Debug, Clone, Serialize)]
pub struct Steady {
    pub rate: f64,
    pub orders: usize,
    pub usage: Vec<Usage>,
    pub totals: Totals,
}

pub async fn run(
    spec: &Spec,
    measures: &Measures,
    run_prefix: &str,
    cleanup: &Cleanup,
    progress: &Arc<Progress>,
) -> DeploymentResult {
    let mut result = DeploymentResult {
        name: spec.name.clone(),
        key: spec.key.clone(),
        replicas: spec.replicas,
        closed_loop: None,
        overload: None,
        open_loop: Vec::new(),
        one_at_a_time: None,
        cpu: Vec::new(),
        cpu_totals: None,
        steady: None,
        memory: Vec::new(),
        errors: Vec::new(),
    };
    progress.note(&format!("{}: starting", spec.name));
    let mut deployment = match Deployment::start(run_prefix, spec, cleanup).await {
        Ok(deployment) => deployment,
        Err(error) => {
            result.errors.push(format!("{}: {error:#}", spec.name));
            return result;
        }
    };
    if let Err(error) = measure(spec, measures, &mut deployment, &mut result, progress).await {
        result.errors.push(format!("{}: {error:#}", spec.name));
    }
    progress.done();
    result.errors.extend(
        deployment
            .stop()
            .await
            .into_iter()
            .map(|problem| format!("{}: {problem}", spec.name)),
    );
    for error in &result.errors {
        progress.note(&format!("ERROR {error}"));
    }
    result
}

async fn measure(
    spec: &Spec,
    measures: &Measures,
    deployment: &mut Deployment,
    result: &mut DeploymentResult,
    progress: &Arc<Progress>,
) -> Result<()> {
    let poster = Arc::new(Poster::new(
        deployment.http.clone(),
        deployment.orders_urls(),
        progress.clone(),
    ));
    let probe = &deployment.probe;
    let name = &spec.name;

    // Not counted: the first orders pay for connections, caches and cold pages.
    let phase = format!("{name}: warm-up");
    progress.phase(&phase, measures.warmup, Some(probe.counter()));
    let (_, problems) = closed_loop::run(
        &poster,
        probe,
        &phase,
        measures.warmup,
        measures.clients,
        measures.deadline,
    )
    .await?;
    result.errors.extend(problems);

    let phase = format!("{name}: closed loop");
    progress.phase(&phase, measures.orders, Some(probe.counter()));
    let meter = UsageMeter::start(watched(spec, deployment)?);
    let (closed, problems) = closed_loop::run(
        &poster,
        probe,
        &phase,
        measures.orders,
        measures.clients,
        measures.deadline,
    )
    .await?;
    let completed = closed.latency.map_or(0, |l| l.samples);
    result.cpu = meter.finish(completed);
    result.cpu_totals = Some(Totals::of(&result.cpu));
    progress.note(&format!(
        "{phase}: {completed} orders in {:.1} s, {:.0} orders/s",
        closed.seconds, closed.orders_per_sec
    ));
    result.errors.extend(problems);
    let peak = closed.orders_per_sec;
    result.closed_loop = Some(closed);
    deployment.check_alive()?;
    if completed == 0 {
        bail!("no order of the closed loop completed: nothing more to measure");
    }

    for rate in &measures.open {
        let (target, per_sec) = match *rate {
            Rate::OfPeak(fraction) => {
                (format!("{:.0}% of peak", fraction * 100.0), fraction * peak)
            }
            Rate::Fixed(per_sec) => ("fixed".to_owned(), per_sec),
        };
        let phase = format!("{name}: open loop at {per_sec:.0}/s ({target})");
        let orders = ((per_sec * measures.phase_secs).round() as usize).max(1);
        progress.phase(&phase, orders, Some(deployment.probe.counter()));
        let meter = matches!(rate, Rate::Fixed(_))
            .then(|| watched(spec, deployment))
            .transpose()?
            .map(UsageMeter::start);
        let (open, problems) = open_loop::run(
            &poster,
            &deployment.probe,
            &phase,
            &target,
            per_sec,
            measures.phase_secs,
            measures.deadline,
        )
        .await?;
        if let Some(latency) = &open.latency {
            progress.note(&format!(
                "{phase}: achieved {:.0}/s, p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms{}",
                open.achieved,
                latency.p50,
                latency.p99,
                latency.max,
                match open.shed {
                    0 => String::new(),
                    shed => format!(", {shed} requests shed by the service and sent again"),
                }
            ));
        }
        if let Some(meter) = meter {
            let completed = open.latency.map_or(0, |l| l.samples);
            let usage = meter.finish(completed);
            result.steady = Some(Steady {
                rate: per_sec,
                orders: completed,
                totals: Totals::of(&usage),
                usage,
            });
        }
        result.errors.extend(problems);
        result.open_loop.push(open);
        deployment.check_alive()?;
    }

    if let Some(clients) = measures.overload_clients {
        let phase = format!("{name}: overload, closed loop of {clients} clients");
        progress.phase(&phase, measures.orders, Some(deployment.probe.counter()));
        let (overload, problems) = closed_loop::run(
            &poster,
            &deployment.probe,
            &phase,
            measures.orders,
            clients,
            measures.deadline,
        )
        .await?;
        if let Some(latency) = &overload.latency {
            progress.note(&format!(
                "{phase}: {:.0} orders/s, p50 {:.1} ms, p99 {:.1} ms, {:.2} shed per order",
                overload.orders_per_sec,
                latency.p50,
                latency.p99,
                overload.shed as f64 / overload.orders.max(1) as f64
            ));
        }
        result.overload = Some(overload);
        result.errors.extend(problems);
        deployment.check_alive()?;
    }

    if measures.sequential > 0 {
        let phase = format!("{name}: one order at a time");
        progress.phase(
            &phase,
            measures.sequential,
            Some(deployment.probe.counter()),
        );
        let (latency, problems) = sequential::run(
            &poster,
            &deployment.probe,
            &phase,
            measures.sequential,
            measures.deadline,
        )
        .await?;
        if let Some(latency) = &latency {
            progress.note(&format!(
                "{phase}: p50 {:.1} ms, p99 {:.1} ms",
                latency.p50, latency.p99
            ));
        }
        result.one_at_a_time = latency;
        result.errors.extend(problems);
    }

    // Peak memory over the whole life of each service process, read before it stops.
    result.memory = deployment
        .pids()
        .into_iter()
        .filter_map(|(process, pid)| {
            let kib = procfs::status_kib(pid, "VmHWM")?;
            Some(Memory {
                process,
                peak_rss_mib: kib as f64 / 1024.0,
            })
        })
        .collect();
    deployment.check_alive()
}

/// The processes an order costs: the services, the observer (when it runs), the broker,
/// PostgreSQL's processes serving this deployment (when on PostgreSQL), and the bench itself
/// (the load generator).
fn watched(spec: &Spec, deployment: &Deployment) -> Result<Vec<Watched>> {
    let mut watched: Vec<Watched> = deployment
        .pids()
        .into_iter()
        .map(|(label, pid)| {
            let role = if label == "observer" {
                Role::Observer
            } else {
                Role::Service
            };
            Watched::one(&label, pid, role)
        })
        .collect();
    watched.push(Watched::one(
        "rabbitmq (beam.smp)",
        procfs::broker_pid()?,
        Role::Broker,
    ));
    if spec.database == Database::Postgres {
        // Its backends for this deployment's databases (named in their command line) and the
        // writers that flush what they commit.
        let mut pids = procfs::pids_named("postgres", &deployment.database_prefix);
        for writer in ["walwriter", "checkpointer", "background writer"] {
            pids.extend(procfs::pids_named("postgres", writer));
        }
        watched.push(Watched {
            label: "postgresql (backends, writers)".to_owned(),
            pids,
            role: Role::Database,
        });
    }
    watched.push(Watched::one(
        "bench (load generator)",
        std::process::id(),
        Role::LoadGenerator,
    ));
    Ok(watched)
}
