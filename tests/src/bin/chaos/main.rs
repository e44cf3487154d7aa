//! `chaos`: the fault matrix. Runs the release binaries of the three services as real processes
//! against the local RabbitMQ, drives a bounded load of orders mixing the three outcomes through
//! them while injecting one fault at a time, waits until the system is quiet, and checks every
//! accepted order: one terminal status, at most one payment and refund, money that adds up, a
//! dispatched shipment if and only if completed, no unsent outbox row, dead-letter queues holding
//! exactly what was poisoned on purpose, and a graceful exit (code 0) on SIGTERM.
//!
//! ```text
//! chaos [--orders N] [--only name,name] [--ci] [--cluster] [--report FILE] [--bin-dir DIR]
//! ```
//! It stops, kills and freezes the local broker: run it alone, never next to other tests. Every
//! address it touches is on loopback.
//!
//! `--cluster` runs the cluster rows instead, against the three nodes of `make cluster`, with
//! `AMQP_URL` set to all of them (`make chaos` does both when the cluster is up).

mod attack;
mod cluster;
mod untidy;

use anyhow::{Context, Result, anyhow, bail};
use choreo_e2e::processes::{Proc, free_port, service_env};
use choreo_e2e::{amqp_url, delete_topology, drop_databases, order_request, postgres_url};
use choreo_events::topology::{ORDERS, SERVICES};
use choreo_messaging::Names;
use futures_util::StreamExt;
use lapin::options::{
    BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions, QueueBindOptions,
    QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Connection, ConnectionProperties};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::process::{Child, Command};

/// The heartbeat the services run with here, so a frozen broker is noticed within seconds.
const HEARTBEAT_SECS: &str = "2";
/// The retry delays of the services here: short, so a retried message settles quickly.
const RETRY_DELAYS_MS: &str = "200,1000,3000";
/// How long the system may take to settle after a fault.
const QUIET_DEADLINE: Duration = Duration::from_secs(180);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    None,
    BrokerRestart,
    BrokerKill,
    CloseConnections,
    BrokerHang,
    Kill(&'static str),
    Failpoint(&'static str, &'static str),
    /// The service's database unreachable (failpoint `store.before_commit=unavailable`) while
    /// orders flow, then SIGTERM while it holds what it could not commit, then restarted.
    StopDuringOutage(&'static str),
    Duplicates,
    Poison,
    MemoryAlarm,
    StartBeforeBroker,
    ReplicasOnPostgres,
    Attack,
    ClusterStopConnected,
    ClusterKillLeader,
    ClusterMajorityLost,
    ClusterRollingRestart,
    /// A fault that leaves things half working: see [`untidy`].
    Untidy(untidy::Untidy),
}

impl Fault {
    fn name(self) -> String {
        match self {
            Fault::None => "baseline (no fault)".into(),
            Fault::BrokerRestart => "broker stop_app/start_app".into(),
            Fault::BrokerKill => "broker kill -9, restarted".into(),
            Fault::CloseConnections => "broker closes all connections".into(),
            Fault::BrokerHang => "broker frozen (SIGSTOP) past heartbeat".into(),
            Fault::Kill(service) => format!("SIGKILL {service}, restarted"),
            Fault::Failpoint(service, point) => format!("{service} aborts at {point}"),
            Fault::StopDuringOutage(service) => {
                format!("{service}'s database unreachable, SIGTERM, restarted")
            }
            Fault::Duplicates => "burst of duplicated deliveries".into(),
            Fault::Poison => "malformed and unsupported-version messages".into(),
            Fault::MemoryAlarm => "memory alarm blocks publishing".into(),
            Fault::StartBeforeBroker => "services started before the broker".into(),
            Fault::ReplicasOnPostgres => "2 replicas each on PostgreSQL".into(),
            Fault::Attack => "hostile clients and forged events".into(),
            Fault::ClusterStopConnected => "cluster: stop_app of the services' node".into(),
            Fault::ClusterKillLeader => "cluster: kill -9 of the queues' leader node".into(),
            Fault::ClusterMajorityLost => "cluster: 2 of 3 nodes stopped, then back".into(),
            Fault::ClusterRollingRestart => "cluster: rolling restart of all 3 nodes".into(),
            Fault::Untidy(row) => row.name(),
        }
    }

    fn on_cluster(self) -> bool {
        matches!(
            self,
            Fault::ClusterStopConnected
                | Fault::ClusterKillLeader
                | Fault::ClusterMajorityLost
                | Fault::ClusterRollingRestart
                | Fault::Untidy(untidy::Untidy::Partition(_))
        )
    }

    fn short(self) -> String {
        self.name()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join("-")
            .replace(['(', ')', '/', ','], "")
    }
}

fn matrix() -> Vec<Fault> {
    vec![
        Fault::None,
        Fault::BrokerRestart,
        Fault::BrokerKill,
        Fault::CloseConnections,
        Fault::BrokerHang,
        Fault::Kill("orders"),
        Fault::Kill("billing"),
        Fault::Kill("shipping"),
        Fault::Failpoint("billing", "consumer.before_commit"),
        Fault::Failpoint("shipping", "store.before_commit"),
        Fault::StopDuringOutage("billing"),
        Fault::Failpoint("billing", "consumer.after_commit"),
        Fault::Failpoint("shipping", "consumer.after_commit"),
        Fault::Failpoint("orders", "relay.after_confirm"),
        Fault::Failpoint("billing", "relay.after_confirm"),
        Fault::Failpoint("orders", "orders.after_commit"),
        Fault::Duplicates,
        Fault::Poison,
        Fault::MemoryAlarm,
        Fault::StartBeforeBroker,
        Fault::ReplicasOnPostgres,
        Fault::Attack,
        Fault::Untidy(untidy::Untidy::LossyLink),
        Fault::Untidy(untidy::Untidy::SlowLink),
        Fault::Untidy(untidy::Untidy::FullDisk("orders")),
        Fault::Untidy(untidy::Untidy::FullDisk("billing")),
        Fault::Untidy(untidy::Untidy::BrokerDiskAlarm),
        Fault::Untidy(untidy::Untidy::ClockJump("billing")),
        Fault::Untidy(untidy::Untidy::LongOutage),
    ]
}

/// The rows against the three-node cluster (`--cluster`).
fn cluster_matrix() -> Vec<Fault> {
    vec![
        Fault::ClusterStopConnected,
        Fault::ClusterKillLeader,
        Fault::ClusterMajorityLost,
        Fault::ClusterRollingRestart,
        Fault::Untidy(untidy::Untidy::Partition(
            untidy::partition::Mode::PauseMinority,
        )),
        Fault::Untidy(untidy::Untidy::Partition(untidy::partition::Mode::Autoheal)),
    ]
}

/// The subset CI runs on every submission: one of each family, kept short.
fn ci_subset() -> Vec<Fault> {
    vec![
        Fault::CloseConnections,
        Fault::BrokerRestart,
        Fault::Kill("billing"),
        Fault::Failpoint("billing", "consumer.before_commit"),
        Fault::Failpoint("billing", "consumer.after_commit"),
        Fault::Failpoint("orders", "relay.after_confirm"),
        Fault::StopDuringOutage("billing"),
        Fault::Duplicates,
        Fault::Poison,
        Fault::Attack,
        Fault::Untidy(untidy::Untidy::FullDisk("orders")),
        Fault::Untidy(untidy::Untidy::LossyLink),
        Fault::Untidy(untidy::Untidy::ClockJump("billing")),
    ]
}

struct Args {
    orders: usize,
    faults: Vec<Fault>,
    cluster: bool,
    report: Option<PathBuf>,
    bin_dir: PathBuf,
}

/// The fault matrix: the three services as release binaries against the local RabbitMQ, one
/// fault at a time under a load of orders, every order checked afterwards. It stops, kills and
/// freezes the local broker: run it alone.
#[derive(clap::Parser, Debug)]
#[command(version)]
struct Cli {
    /// Orders placed per row (200 with --ci unless given).
    #[arg(long)]
    orders: Option<usize>,
    /// Only the rows whose names contain one of these words, comma-separated.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// The short subset CI runs.
    #[arg(long)]
    ci: bool,
    /// The cluster rows, against `make cluster` (AMQP_URL must name its three nodes).
    #[arg(long)]
    cluster: bool,
    /// Also write the results table to this Markdown file.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Where the release binaries of the services are.
    #[arg(long, default_value = "target/release")]
    bin_dir: PathBuf,
}

fn parse_args() -> Result<Args> {
    let cli = <Cli as clap::Parser>::parse();
    let all = if cli.cluster {
        cluster_matrix()
    } else {
        matrix()
    };
    let faults = if !cli.only.is_empty() {
        cli.only
            .iter()
            .map(|w| {
                all.iter()
                    .copied()
                    .find(|f| f.short().contains(w.as_str()))
                    .ok_or_else(|| anyhow!("no fault matches {w}"))
            })
            .collect::<Result<_>>()?
    } else if cli.ci && cli.cluster {
        // On the cluster, CI runs the failover row and the recommended partition row.
        vec![
            Fault::ClusterStopConnected,
            Fault::Untidy(untidy::Untidy::Partition(
                untidy::partition::Mode::PauseMinority,
            )),
        ]
    } else if cli.ci {
        ci_subset()
    } else {
        all
    };
    Ok(Args {
        orders: cli.orders.unwrap_or(if cli.ci { 200 } else { 2000 }),
        faults,
        cluster: cli.cluster,
        report: cli.report,
        bin_dir: cli.bin_dir,
    })
}

/// The result of one row of the matrix.
#[derive(Debug, Default)]
struct Row {
    fault: String,
    orders: usize,
    lost: usize,
    duplicated: usize,
    recover_secs: f64,
    problems: Vec<String>,
    /// What the row measured beyond the table's columns.
    notes: Vec<String>,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let args = parse_args()?;
    for binary in ["orders", "billing", "shipping"] {
        let path = args.bin_dir.join(binary);
        if !path.exists() {
            bail!(
                "{} is missing: run `cargo build --release` first (make chaos does)",
                path.display()
            );
        }
    }
    if args.cluster {
        cluster::require_running().await?;
        let urls = cluster::urls().await?;
        if choreo_e2e::amqp_urls() != urls {
            bail!("the cluster rows need AMQP_URL='{urls}' (make chaos sets it)");
        }
    }
    let mut rows = Vec::new();
    for fault in &args.faults {
        eprintln!("== {} ({} orders)", fault.name(), args.orders);
        let started = Instant::now();
        let row = match run_scenario(*fault, args.orders, &args.bin_dir).await {
            Ok(row) => row,
            Err(error) => Row {
                fault: fault.name(),
                orders: args.orders,
                problems: vec![format!("scenario failed: {error:#}")],
                ..Row::default()
            },
        };
        // Whatever happened, leave the broker up and unblocked for the next row.
        untidy::net::clear_leftovers();
        if args.cluster {
            cluster::heal().await;
        } else {
            heal_broker().await;
        }
        eprintln!(
            "   {} in {:.1} s: {}",
            if row.problems.is_empty() {
                "PASS"
            } else {
                "FAIL"
            },
            started.elapsed().as_secs_f64(),
            row.problems.join("; ")
        );
        rows.push(row);
    }
    let table = render(&rows);
    println!("{table}");
    if let Some(path) = &args.report {
        let header = format!(
            "# Fault matrix: last run\n\nRun on {} with `{}`.\n\n*lost*: accepted orders (201) that never reached a terminal status; *duplicated effects*: orders with more than one payment, refund or shipment, money that does not add up, or the wrong end; *seconds to recover*: from the end of the fault (broker back, process restarted) until every service answered `/readyz` 200. Every row also checks that no outbox row is left unsent, that the dead-letter queues hold exactly the poison sent on purpose, and that every service exits 0 on SIGTERM.\n\n",
            chrono_now(),
            std::env::args().collect::<Vec<_>>().join(" ")
        );
        std::fs::write(path, format!("{header}{table}\n"))?;
    }
    let failed = rows.iter().filter(|r| !r.problems.is_empty()).count();
    println!("{} passed, {failed} failed", rows.len() - failed);
    if failed > 0 {
        std::process::exit(1);
    }
    Ok(())
}

fn chrono_now() -> String {
    let output = std::process::Command::new("date")
        .arg("-u")
        .arg("+%Y-%m-%d %H:%M UTC")
        .output();
    output
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

fn render(rows: &[Row]) -> String {
    let mut out = String::from(
        "| fault | orders | lost | duplicated effects | seconds to recover | verdict |\n|---|---:|---:|---:|---:|---|\n",
    );
    for row in rows {
        let verdict = if row.problems.is_empty() {
            "PASS".to_owned()
        } else {
            format!("FAIL: {}", row.problems.join("; "))
        };
        out.push_str(&format!(
            "| {} | {} | {} | {} | {:.1} | {} |\n",
            row.fault, row.orders, row.lost, row.duplicated, row.recover_secs, verdict
        ));
    }
    let noted: Vec<&Row> = rows.iter().filter(|row| !row.notes.is_empty()).collect();
    if !noted.is_empty() {
        out.push_str("\nWhat the untidy rows measured while their fault lasted:\n\n");
        for row in noted {
            out.push_str(&format!("- *{}*: {}\n", row.fault, row.notes.join("; ")));
        }
    }
    out
}

/// One isolated copy of the suite as processes.
struct World {
    prefix: String,
    dir: tempfile::TempDir,
    procs: Vec<Proc>,
    http: reqwest::Client,
    databases: Vec<String>,
    postgres: bool,
    /// What an untidy row holds for its length (a proxy, a file system).
    untidy: untidy::Held,
}

impl World {
    async fn new(postgres: bool, replicas: usize) -> Result<World> {
        let prefix = format!("chaos-{}.", &uuid::Uuid::new_v4().simple().to_string()[..8]);
        let dir = tempfile::tempdir()?;
        let mut world = World {
            prefix,
            dir,
            procs: Vec::new(),
            http: choreo_e2e::http_client()
                .timeout(Duration::from_secs(10))
                .build()?,
            databases: Vec::new(),
            postgres,
            untidy: untidy::Held::default(),
        };
        for service in ["orders", "billing", "shipping"] {
            let database_url = if postgres {
                let name = format!(
                    "{}_{service}",
                    world.prefix.trim_end_matches('.').replace('-', "_")
                );
                world.databases.push(name.clone());
                postgres_url(&name)
            } else {
                String::new()
            };
            for instance in 0..replicas {
                let port = free_port()?;
                let mut env = service_env(&world.prefix, port, world.dir.path(), &database_url);
                env.push((
                    "CHOREO_HEARTBEAT_SECS".to_owned(),
                    HEARTBEAT_SECS.to_owned(),
                ));
                env.push((
                    "CHOREO_RETRY_DELAYS_MS".to_owned(),
                    RETRY_DELAYS_MS.to_owned(),
                ));
                let log = world.dir.path().join(format!("{service}-{instance}.log"));
                world.procs.push(Proc {
                    service,
                    port,
                    env,
                    log,
                    child: None,
                });
            }
        }
        if postgres {
            use sqlx::Connection as _;
            let mut admin = sqlx::PgConnection::connect(&postgres_url("postgres")).await?;
            for database in &world.databases {
                sqlx::query(&format!("CREATE DATABASE {database}"))
                    .execute(&mut admin)
                    .await?;
            }
        }
        // A tap on every exchange: the duplicates row republishes what it saw.
        let connection = Connection::connect(&amqp_url(), ConnectionProperties::default()).await?;
        let channel = connection.create_channel().await?;
        choreo_messaging::topology::declare_suite(
            &connection,
            &choreo_messaging::Names::new(world.prefix.clone()),
        )
        .await?;
        let tap = format!("{}tap", world.prefix);
        channel
            .queue_declare(
                tap.as_str().into(),
                QueueDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await?;
        for service in SERVICES {
            let exchange = format!("{}{}", world.prefix, service.exchange);
            channel
                .queue_bind(
                    tap.as_str().into(),
                    exchange.as_str().into(),
                    "#".into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await?;
        }
        let _ = connection.close(200, "declared".into()).await;
        Ok(world)
    }

    /// Adds the observer to the processes, on its own SQLite file, keeping at most
    /// `max_connections` HTTP connections.
    fn add_observer(&mut self, max_connections: usize) -> Result<()> {
        let port = free_port()?;
        let mut env = service_env(&self.prefix, port, self.dir.path(), "");
        env.push((
            "CHOREO_HTTP_MAX_CONNECTIONS".to_owned(),
            max_connections.to_string(),
        ));
        // The services' retry delays, so that the row's clean-up, which deletes the delay
        // queues of these delays, deletes the observer's too.
        env.push((
            "CHOREO_RETRY_DELAYS_MS".to_owned(),
            RETRY_DELAYS_MS.to_owned(),
        ));
        self.procs.push(Proc {
            service: "observer",
            port,
            env,
            log: self.dir.path().join("observer-0.log"),
            child: None,
        });
        Ok(())
    }

    fn start_all(&mut self, bin_dir: &Path, failpoint: Option<(&str, &str)>) -> Result<()> {
        for proc in &mut self.procs {
            let extra: Vec<(&str, &str)> = match failpoint {
                Some((service, point)) if service == proc.service => {
                    vec![("CHOREO_FAILPOINTS", point)]
                }
                _ => Vec::new(),
            };
            proc.start(bin_dir, &extra)?;
        }
        Ok(())
    }

    fn first(&self, service: &str) -> &Proc {
        self.procs
            .iter()
            .find(|p| p.service == service)
            .expect("every service has a process")
    }

    async fn ready(&self, proc: &Proc) -> bool {
        matches!(self.http.get(proc.url("/readyz")).send().await, Ok(r) if r.status() == 200)
    }

    /// Polls until every process answers /readyz 200; returns the seconds since `since`.
    async fn wait_ready(&self, since: Instant, deadline: Duration) -> Result<f64> {
        loop {
            let mut all = true;
            for proc in &self.procs {
                all &= self.ready(proc).await;
            }
            if all {
                return Ok(since.elapsed().as_secs_f64());
            }
            if since.elapsed() > deadline {
                bail!("services not ready within {deadline:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn stop_all(&mut self) -> Vec<String> {
        let mut problems = Vec::new();
        for proc in &mut self.procs {
            match proc.terminate().await {
                Ok(0) => {}
                Ok(code) => problems.push(format!("{} exited {code} on SIGTERM", proc.service)),
                Err(error) => problems.push(format!("{}: {error}", proc.service)),
            }
        }
        problems
    }

    async fn cleanup(&mut self) {
        for proc in &mut self.procs {
            proc.kill().await;
        }
        // The row's proxy stops and its file system is unmounted.
        self.untidy = untidy::Held::default();
        let delays = choreo_host::settings::parse_list::<u64>(RETRY_DELAYS_MS).unwrap_or_default();
        delete_topology(&self.prefix, &delays).await;
        drop_databases(&self.databases).await;
    }
}

/// A broker command; its failure is reported, not fatal, since the fault itself may cause it.
async fn rabbitmqctl(args: &[&str]) -> Result<()> {
    let status = Command::new("rabbitmqctl")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await?;
    if !status.success() {
        bail!("rabbitmqctl {} failed", args.join(" "));
    }
    Ok(())
}

async fn broker_pid() -> Result<String> {
    let output = Command::new("pgrep")
        .args(["-f", "beam.smp.*rabbit"])
        .output()
        .await?;
    let pids = String::from_utf8_lossy(&output.stdout);
    // The nodes of `make cluster` run the same VM: they are told apart by the node name in their
    // environment (scripts/cluster.sh).
    pids.lines()
        .find(|pid| {
            let environment = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
            !String::from_utf8_lossy(&environment).contains("RABBITMQ_NODENAME=choreo-")
        })
        .map(str::to_owned)
        .ok_or_else(|| anyhow!("no RabbitMQ process found"))
}

async fn await_broker() -> Result<()> {
    // `await_startup` fails at once while a freshly started node has not registered yet, so it
    // is polled until a deadline.
    let started = Instant::now();
    loop {
        if rabbitmqctl(&["-t", "10", "await_startup"]).await.is_ok() {
            return Ok(());
        }
        if started.elapsed() > Duration::from_secs(120) {
            bail!("RabbitMQ did not start within 120 s");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Leaves the broker running, its app started, not frozen, with no memory alarm.
async fn heal_broker() {
    if let Ok(pid) = broker_pid().await {
        let _ = Command::new("kill").args(["-CONT", &pid]).status().await;
    }
    if broker_pid().await.is_err() {
        let _ = Command::new("rabbitmq-server")
            .arg("-detached")
            .status()
            .await;
    }
    let _ = await_broker().await;
    let _ = rabbitmqctl(&["start_app"]).await;
    let _ = rabbitmqctl(&["set_vm_memory_high_watermark", "0.4"]).await;
    let _ = rabbitmqctl(&["set_disk_free_limit", untidy::disk::DEFAULT_DISK_FREE_LIMIT]).await;
    untidy::net::clear_leftovers();
    let _ = await_broker().await;
}

/// The outcome expected of an order, by construction of its request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    Completed,
    Declined,
    ShippingFailed,
}

/// Places `count` orders with bounded concurrency, each with an Idempotency-Key so a retry after
/// a dropped connection cannot create a second order. Returns (order id, total, expected end).
/// With `rate`, order `i` is not sent before `i / rate` seconds from the start (a steady
/// stream, for the attack row); without, as fast as 16 clients go.
async fn drive_load(
    world: &World,
    count: usize,
    accepted: Arc<AtomicUsize>,
    rate: Option<f64>,
) -> Vec<(String, i64, Expect)> {
    let start = tokio::time::Instant::now();
    let orders_urls: Vec<String> = world
        .procs
        .iter()
        .filter(|p| p.service == "orders")
        .map(|p| p.url("/orders"))
        .collect();
    let results = futures_util::stream::iter(0..count)
        .map(|i| {
            let (price, country, expect) = match i % 5 {
                0..=2 => (1000 + (i % 97) as i64, "DE", Expect::Completed),
                3 => (200_000, "FR", Expect::Declined),
                _ => (500 + (i % 13) as i64, "AQ", Expect::ShippingFailed),
            };
            let body = order_request(price, 2, country);
            let key = format!("{}-{i}", world.prefix);
            let url = orders_urls[i % orders_urls.len()].clone();
            let fallback = orders_urls[0].clone();
            let http = world.http.clone();
            let accepted = accepted.clone();
            async move {
                if let Some(rate) = rate {
                    tokio::time::sleep_until(start + Duration::from_secs_f64(i as f64 / rate))
                        .await;
                }
                let started = Instant::now();
                let mut attempt = 0usize;
                loop {
                    // Alternate between replicas after a failure, when there are two.
                    let target = if attempt.is_multiple_of(2) {
                        &url
                    } else {
                        &fallback
                    };
                    attempt += 1;
                    let sent = http
                        .post(target)
                        .header("Idempotency-Key", &key)
                        .json(&body)
                        .send()
                        .await;
                    if let Ok(response) = sent
                        && (response.status() == 201 || response.status() == 200)
                        && let Ok(order) = response.json::<Value>().await
                    {
                        accepted.fetch_add(1, Ordering::SeqCst);
                        return Some((
                            order["id"].as_str().unwrap_or_default().to_owned(),
                            price * 2,
                            expect,
                        ));
                    }
                    if started.elapsed() > Duration::from_secs(120) {
                        return None;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
    results.into_iter().flatten().collect()
}

async fn run_scenario(fault: Fault, count: usize, bin_dir: &Path) -> Result<Row> {
    let postgres = fault == Fault::ReplicasOnPostgres;
    let mut world = World::new(postgres, if postgres { 2 } else { 1 }).await?;
    let result = scenario_in(&mut world, fault, count, bin_dir).await;
    let failed = !matches!(&result, Ok(row) if row.problems.is_empty());
    if failed {
        // Keep the services' logs of a failed row for the post-mortem.
        let kept = PathBuf::from("run/chaos").join(fault.short());
        if std::fs::create_dir_all(&kept).is_ok() {
            for proc in &world.procs {
                if let Some(name) = proc.log.file_name() {
                    let _ = std::fs::copy(&proc.log, kept.join(name));
                }
            }
            eprintln!("   logs kept in {}", kept.display());
        }
    }
    world.cleanup().await;
    result
}

async fn scenario_in(world: &mut World, fault: Fault, count: usize, bin_dir: &Path) -> Result<Row> {
    let mut row = Row {
        fault: fault.name(),
        ..Row::default()
    };
    let failpoint = match fault {
        Fault::Failpoint(service, point) => Some((service, point)),
        Fault::StopDuringOutage(service) => Some((service, "store.before_commit=unavailable")),
        _ => None,
    };
    let mut recover = 0.0;
    if let Fault::Untidy(untidy) = fault {
        untidy::setup(world, untidy).await?;
    }
    if fault == Fault::StartBeforeBroker {
        rabbitmqctl(&["stop_app"]).await?;
        world.start_all(bin_dir, None)?;
        // Up and waiting: healthy, not ready.
        tokio::time::timeout(Duration::from_secs(20), async {
            loop {
                let proc = world.first("orders");
                if let Ok(r) = world.http.get(proc.url("/readyz")).send().await
                    && r.status() == 503
                {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await
        .context("orders did not come up (503) while the broker was away")?;
        rabbitmqctl(&["start_app"]).await?;
        recover = world
            .wait_ready(Instant::now(), Duration::from_secs(60))
            .await?;
    } else {
        if fault == Fault::Attack {
            // A short header-read timeout, so the slow clients are cut off within the row.
            for proc in &mut world.procs {
                proc.env.push((
                    "CHOREO_HTTP_HEADER_TIMEOUT_MS".to_owned(),
                    attack::HEADER_TIMEOUT_MS.to_string(),
                ));
                proc.env.push((
                    "CHOREO_HTTP_BODY_TIMEOUT_MS".to_owned(),
                    attack::BODY_TIMEOUT_MS.to_string(),
                ));
            }
            // The observer, for the stream flood: a bystander with a few connection places.
            world.add_observer(attack::OBSERVER_MAX_CONNECTIONS)?;
        }
        world.start_all(bin_dir, failpoint)?;
        world
            .wait_ready(Instant::now(), Duration::from_secs(60))
            .await?;
    }
    if fault.on_cluster() {
        row.problems
            .extend(cluster::membership_problems(&world.prefix).await?);
    }

    let accepted = Arc::new(AtomicUsize::new(0));
    let poisoned = if fault == Fault::Poison { 20 } else { 0 };
    let plan = attack::Plan::for_orders(count);
    let (rate, probe) = if fault == Fault::Attack {
        let probe = attack::TerminalProbe::start(&world.prefix).await?;
        (Some(plan.rate(count)), Some(probe))
    } else if let Fault::Untidy(untidy) = fault {
        (Some(untidy.rate(count)), None)
    } else {
        (None, None)
    };
    let untidy_injected = std::sync::Mutex::new(None);
    let load_started = Instant::now();
    // While a broker fault lasts, /readyz must say so: a watcher polls the orders service.
    let injecting = std::sync::atomic::AtomicBool::new(true);
    let saw_unready = std::sync::atomic::AtomicBool::new(false);
    let (placed, injected, (), attacked) = {
        let world_ref: &World = world;
        let load = drive_load(world_ref, count, accepted.clone(), rate);
        let attack = async {
            if fault != Fault::Attack {
                return None;
            }
            while accepted.load(Ordering::SeqCst) < count / 3 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Some(attack::run(world_ref, plan).await)
        };
        let inject = async {
            let injected = if let Fault::Untidy(untidy) = fault {
                match untidy::inject(world_ref, untidy, count, accepted.clone()).await {
                    Ok(injected) => {
                        let healed = injected.healed;
                        *untidy_injected.lock().expect("not poisoned") = Some(injected);
                        world_ref
                            .wait_ready(healed, Duration::from_secs(120))
                            .await
                            .map(|recovered| (recovered, Vec::new()))
                    }
                    Err(error) => Err(error),
                }
            } else {
                inject(world_ref, fault, count, accepted.clone(), bin_dir).await
            };
            injecting.store(false, Ordering::SeqCst);
            injected
        };
        let watch = async {
            while injecting.load(Ordering::SeqCst) {
                if let Ok(r) = world_ref
                    .http
                    .get(world_ref.first("orders").url("/readyz"))
                    .send()
                    .await
                    && r.status() == 503
                {
                    saw_unready.store(true, Ordering::SeqCst);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        };
        tokio::join!(load, inject, watch, attack)
    };
    let mut expected_forged = [0u32; 3];
    let mut forged_about = Vec::new();
    if let (Some(attacked), Some(probe)) = (attacked, &probe) {
        let attacked = attacked.context("the attack")?;
        let (started, ended) = (
            attacked.started.context("started")?,
            attacked.ended.context("ended")?,
        );
        // Before: from a quarter of the attack's length into the load (past the first
        // sagas' latency) to its start; during: from half a second in to its end.
        let before = probe.rate(load_started + plan.duration / 4, started);
        let during = probe.rate(started + Duration::from_millis(500), ended);
        eprintln!(
            "   attack: {}; honest orders completed {before:.0}/s before, {during:.0}/s during (asked {:.0}/s)",
            attacked.summary,
            plan.rate(count)
        );
        if during < attack::MIN_RATE_FRACTION * before {
            row.problems.push(format!(
                "honest orders completed at {during:.0}/s during the attack, under {:.0}% of the {before:.0}/s before it",
                attack::MIN_RATE_FRACTION * 100.0
            ));
        }
        row.problems.extend(attacked.problems);
        forged_about = attacked.targets;
        for (slot, (_, forged)) in expected_forged.iter_mut().zip(plan.forged_dead_letters()) {
            *slot = forged;
        }
    }
    if matches!(
        fault,
        Fault::BrokerRestart
            | Fault::BrokerKill
            | Fault::BrokerHang
            | Fault::ClusterMajorityLost
            | Fault::Untidy(untidy::Untidy::LongOutage)
    ) && !saw_unready.load(Ordering::SeqCst)
    {
        row.problems
            .push("/readyz never answered 503 while the broker was away".to_owned());
    }
    // Failpoint and kill rows restart processes: fold their new handles back in.
    let (recovered, restarted) = injected?;
    for (index, child) in restarted {
        world.procs[index].child = Some(child);
    }
    recover += recovered;
    row.recover_secs = recover;
    row.orders = placed.len();
    if placed.len() < count {
        row.problems.push(format!(
            "only {} of {count} orders were accepted",
            placed.len()
        ));
    }
    if fault == Fault::Duplicates {
        republish_tapped(world).await?;
    }

    // Quiet: every accepted order terminal.
    let started = Instant::now();
    let mut pending: Vec<&(String, i64, Expect)> = placed.iter().collect();
    let mut finals: Vec<(&(String, i64, Expect), Value)> = Vec::new();
    while !pending.is_empty() && started.elapsed() < QUIET_DEADLINE {
        let mut still = Vec::new();
        for order in pending {
            let response = world
                .http
                .get(world.first("orders").url(&format!("/orders/{}", order.0)))
                .send()
                .await;
            match response {
                Ok(r) if r.status() == 200 => {
                    let body: Value = r.json().await.unwrap_or_default();
                    if body["status"] == "completed" || body["status"] == "cancelled" {
                        finals.push((order, body));
                    } else {
                        still.push(order);
                    }
                }
                _ => still.push(order),
            }
        }
        pending = still;
        if !pending.is_empty() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    row.lost = pending.len();
    if !pending.is_empty() {
        row.problems.push(format!(
            "{} orders never reached a terminal status, e.g. {}",
            pending.len(),
            pending[0].0
        ));
    }

    // Effects per order.
    for ((id, total, expect), order) in &finals {
        let payments = get_list(
            world,
            "billing",
            &format!("/payments?order_id={id}"),
            "payments",
        )
        .await?;
        let shipments = get_list(
            world,
            "shipping",
            &format!("/shipments?order_id={id}"),
            "shipments",
        )
        .await?;
        let mut wrong = Vec::new();
        if payments.len() > 1 || shipments.len() > 1 {
            wrong.push(format!(
                "{} payments, {} shipments",
                payments.len(),
                shipments.len()
            ));
        }
        let payment = payments.first().map(|p| {
            (
                p["status"].as_str().unwrap_or_default().to_owned(),
                p["amount_cents"].as_i64().unwrap_or_default(),
            )
        });
        let dispatched = shipments
            .iter()
            .filter(|s| s["status"] == "dispatched")
            .count();
        let status = order["status"].as_str().unwrap_or_default();
        let reason = order["cancellation_reason"].as_str();
        // captured - refunded: completed keeps the total, cancelled keeps nothing.
        let kept = match &payment {
            Some((s, amount)) if s == "captured" => *amount,
            _ => 0,
        };
        match (status, reason) {
            ("completed", None) => {
                if kept != *total || dispatched != 1 {
                    wrong.push(format!(
                        "completed with {kept} kept of {total} and {dispatched} dispatched"
                    ));
                }
            }
            ("cancelled", Some(_)) => {
                if kept != 0 || dispatched != 0 {
                    wrong.push(format!(
                        "cancelled with {kept} kept and {dispatched} dispatched"
                    ));
                }
            }
            other => wrong.push(format!("impossible status {other:?}")),
        }
        let expected = match expect {
            Expect::Completed => ("completed", None),
            Expect::Declined => ("cancelled", Some("payment_declined")),
            Expect::ShippingFailed => ("cancelled", Some("shipping_failed")),
        };
        if (status, reason) != expected {
            wrong.push(format!("ended {status}/{reason:?}, expected {expected:?}"));
        }
        if !wrong.is_empty() {
            row.duplicated += 1;
            if row.duplicated <= 3 {
                row.problems
                    .push(format!("order {id}: {}", wrong.join(", ")));
            }
        }
    }

    // Outboxes drained (the relay may still be confirming the last terminal events).
    let unsent = wait_outboxes_empty(world).await?;
    if unsent > 0 {
        row.problems.push(format!("{unsent} outbox rows unsent"));
    }
    // Dead letters: exactly the poison.
    let dead = count_dead_letters(world).await?;
    let expected_dead = [
        ("orders", expected_forged[0]),
        ("billing", poisoned + expected_forged[1]),
        ("shipping", expected_forged[2]),
    ];
    for ((service, found), (_, expected)) in dead.iter().zip(expected_dead) {
        if *found != expected {
            row.problems
                .push(format!("{service}.dlq holds {found}, expected {expected}"));
        }
    }
    let mut untidy_injected = untidy_injected.into_inner().expect("not poisoned");
    if let (Fault::Untidy(untidy), Some(injected)) = (fault, &mut untidy_injected) {
        row.problems.extend(injected.problems.iter().cloned());
        row.problems
            .extend(untidy::expect(world, untidy, injected).await?);
        for note in &injected.notes {
            eprintln!("   {note}");
        }
        row.notes.extend(injected.notes.iter().cloned());
    }
    if fault == Fault::Attack && row.problems.is_empty() {
        row.problems
            .extend(redrive_the_forgeries(world, &forged_about, expected_dead[1].1).await?);
    }
    row.problems.extend(world.stop_all().await);
    Ok(row)
}

/// Redrives every one of billing's dead letters (the attack row's forgeries, laundered or not):
/// each must come back dead-lettered again, `letters` of them, and no payment of the orders the
/// forgeries were about may change. A problem for anything else.
async fn redrive_the_forgeries(
    world: &World,
    about: &[String],
    letters: u32,
) -> Result<Vec<String>> {
    use choreo_messaging::dead_letter::{DeadLetterQueue, Selection};
    let mut problems = Vec::new();
    let payments = |order_id: String| async move {
        get_list(
            world,
            "billing",
            &format!("/payments?order_id={order_id}"),
            "payments",
        )
        .await
    };
    let mut before = Vec::new();
    for order_id in about {
        before.push(payments(order_id.clone()).await?);
    }
    let connection = Connection::connect(&amqp_url(), ConnectionProperties::default()).await?;
    let names = choreo_messaging::Names::new(world.prefix.clone());
    let redriven = DeadLetterQueue::open(&connection, &names, &choreo_events::topology::BILLING)
        .await?
        .redrive(&Selection::All)
        .await?;
    let _ = connection.close(200, "redriven".into()).await;
    if redriven.len() != letters as usize {
        problems.push(format!(
            "redrove {} of billing's dead letters, expected {letters}",
            redriven.len()
        ));
    }
    let started = Instant::now();
    let mut found = 0;
    while started.elapsed() < Duration::from_secs(30) {
        found = count_dead_letters(world).await?[1].1;
        if found == letters {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if found != letters {
        problems.push(format!(
            "billing.dlq holds {found} after redriving the forgeries, expected all {letters} back"
        ));
    }
    for (order_id, before) in about.iter().zip(before) {
        let after = payments(order_id.clone()).await?;
        if after != before {
            problems.push(format!(
                "order {order_id}: a redriven forgery changed its payments: {before:?} -> {after:?}"
            ));
        }
    }
    Ok(problems)
}

async fn get_list(world: &World, service: &str, path: &str, key: &str) -> Result<Vec<Value>> {
    let body: Value = world
        .http
        .get(world.first(service).url(path))
        .send()
        .await?
        .json()
        .await?;
    Ok(body[key].as_array().cloned().unwrap_or_default())
}

/// Injects `fault` once a third of the load is accepted. Returns the seconds until every
/// service was ready again, and processes restarted (index, child).
async fn inject(
    world: &World,
    fault: Fault,
    count: usize,
    accepted: Arc<AtomicUsize>,
    bin_dir: &Path,
) -> Result<(f64, Vec<(usize, Child)>)> {
    let mut restarted = Vec::new();
    if matches!(
        fault,
        Fault::None
            | Fault::Duplicates
            | Fault::StartBeforeBroker
            | Fault::ReplicasOnPostgres
            | Fault::Attack
    ) {
        return Ok((0.0, restarted));
    }
    if let Fault::Failpoint(service, _) = fault {
        // The process aborts at its first hit; restart it without the failpoint.
        let index = world
            .procs
            .iter()
            .position(|p| p.service == service)
            .expect("process");
        let started = Instant::now();
        let pid = world.procs[index]
            .child
            .as_ref()
            .and_then(Child::id)
            .context("no pid")?;
        while Path::new(&format!("/proc/{pid}")).exists() && !is_zombie(pid) {
            if started.elapsed() > Duration::from_secs(60) {
                bail!("{service} never reached its failpoint");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let aborted = std::fs::read_to_string(&world.procs[index].log).unwrap_or_default();
        if !aborted.contains("failpoint") {
            bail!(
                "{service} exited without hitting its failpoint; see {}",
                world.procs[index].log.display()
            );
        }
        eprintln!(
            "   {service} aborted at its failpoint after {:.1} s; restarting it",
            started.elapsed().as_secs_f64()
        );
        let healed = Instant::now();
        restarted.push((index, restart(world, index, bin_dir).await?));
        return Ok((
            world.wait_ready(healed, Duration::from_secs(120)).await?,
            restarted,
        ));
    }
    while accepted.load(Ordering::SeqCst) < count / 3 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let healed = match fault {
        Fault::BrokerRestart => {
            rabbitmqctl(&["stop_app"]).await?;
            tokio::time::sleep(Duration::from_secs(3)).await;
            rabbitmqctl(&["start_app"]).await?;
            Instant::now()
        }
        Fault::BrokerKill => {
            let pid = broker_pid().await?;
            Command::new("kill").args(["-9", &pid]).status().await?;
            while broker_pid().await.is_ok() {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Command::new("rabbitmq-server")
                .arg("-detached")
                .status()
                .await?;
            await_broker().await?;
            Instant::now()
        }
        Fault::CloseConnections => {
            rabbitmqctl(&["close_all_connections", "chaos: closing every connection"]).await?;
            Instant::now()
        }
        Fault::BrokerHang => {
            let pid = broker_pid().await?;
            Command::new("kill").args(["-STOP", &pid]).status().await?;
            // Longer than two heartbeats: the services must notice and reconnect.
            tokio::time::sleep(Duration::from_secs(8)).await;
            Command::new("kill").args(["-CONT", &pid]).status().await?;
            Instant::now()
        }
        Fault::MemoryAlarm => {
            rabbitmqctl(&["set_vm_memory_high_watermark", "0"]).await?;
            tokio::time::sleep(Duration::from_secs(if count >= 1000 { 30 } else { 5 })).await;
            rabbitmqctl(&["set_vm_memory_high_watermark", "0.4"]).await?;
            Instant::now()
        }
        Fault::StopDuringOutage(service) => {
            let index = world
                .procs
                .iter()
                .position(|p| p.service == service)
                .expect("process");
            stop_while_holding(world, index).await?;
            let healed = Instant::now();
            restarted.push((index, restart(world, index, bin_dir).await?));
            healed
        }
        Fault::Kill(service) => {
            let index = world
                .procs
                .iter()
                .position(|p| p.service == service)
                .expect("process");
            let pid = world.procs[index]
                .child
                .as_ref()
                .and_then(Child::id)
                .context("no pid")?;
            Command::new("kill")
                .args(["-9", &pid.to_string()])
                .status()
                .await?;
            while Path::new(&format!("/proc/{pid}")).exists() && !is_zombie(pid) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            let healed = Instant::now();
            restarted.push((index, restart(world, index, bin_dir).await?));
            healed
        }
        Fault::Poison => {
            poison(world, 10).await?;
            Instant::now()
        }
        Fault::ClusterStopConnected => {
            // Recovered: every service reconnected to a node that is up, and ready; then the
            // node comes back.
            let node = cluster::connected_node(&world.prefix).await?;
            eprintln!("   stopping the app of node {node}, the services' node");
            cluster::stop_app(node).await?;
            let failover = failed_over(world, &[node], Instant::now()).await?;
            cluster::start_app(node).await?;
            return Ok((failover, restarted));
        }
        Fault::ClusterKillLeader => {
            let node = cluster::leader_node(&world.prefix).await?;
            eprintln!("   kill -9 of node {node}, which leads most of the suite's queues");
            cluster::kill(node).await?;
            let failover = failed_over(world, &[node], Instant::now()).await?;
            cluster::start(node).await?;
            return Ok((failover, restarted));
        }
        Fault::ClusterMajorityLost => {
            let first = cluster::connected_node(&world.prefix).await?;
            let second = first % cluster::NODES.len() + 1;
            eprintln!("   stopping nodes {first} and {second}: the queues lose their majority");
            cluster::stop_app(first).await?;
            cluster::stop_app(second).await?;
            // Orders are still taken (into the outbox) while the queues have no majority.
            let outage = Instant::now();
            let before = accepted.load(Ordering::SeqCst);
            let hold = Duration::from_secs(if count >= 1000 { 20 } else { 8 });
            while accepted.load(Ordering::SeqCst) < (before + 10).min(count) {
                if outage.elapsed() > hold {
                    bail!("no order was accepted while the majority was lost");
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            tokio::time::sleep(hold.saturating_sub(outage.elapsed())).await;
            cluster::start_app(first).await?;
            cluster::start_app(second).await?;
            Instant::now()
        }
        Fault::ClusterRollingRestart => {
            for node in cluster::NODES {
                cluster::await_not_quorum_critical(node).await?;
                eprintln!("   restarting node {node}");
                cluster::stop_app(node).await?;
                tokio::time::sleep(Duration::from_secs(2)).await;
                cluster::start_app(node).await?;
            }
            Instant::now()
        }
        Fault::None
        | Fault::Duplicates
        | Fault::StartBeforeBroker
        | Fault::ReplicasOnPostgres
        | Fault::Attack
        | Fault::Failpoint(..)
        // Injected by their own modules (scenario_in), never here.
        | Fault::Untidy(_) => Instant::now(),
    };
    Ok((
        world.wait_ready(healed, Duration::from_secs(120)).await?,
        restarted,
    ))
}

/// Seconds from `since` until no service is connected to a node of `gone`, every process holds
/// its two connections on the other nodes, and every service answers /readyz 200.
async fn failed_over(world: &World, gone: &[usize], since: Instant) -> Result<f64> {
    let wanted = 2 * world.procs.len();
    loop {
        let elsewhere: usize = cluster::connections(&world.prefix)
            .await
            .unwrap_or_default()
            .iter()
            .filter(|(node, _)| !gone.contains(node))
            .map(|(_, count)| count)
            .sum();
        if elsewhere >= wanted {
            let mut ready = true;
            for proc in &world.procs {
                ready &= world.ready(proc).await;
            }
            if ready {
                return Ok(since.elapsed().as_secs_f64());
            }
        }
        if since.elapsed() > Duration::from_secs(120) {
            bail!("{elsewhere} of {wanted} connections on the nodes that are up after 120 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Starts process `index` again, as a supervisor (systemd, Docker) would: if it exits at once
/// (the dead instance's listening socket can outlive its zombie for a moment, so the bind fails),
/// it is started again, until it answers /readyz or a deadline passes.
async fn restart(world: &World, index: usize, bin_dir: &Path) -> Result<Child> {
    let template = &world.procs[index];
    let started = Instant::now();
    loop {
        let mut proc = Proc {
            service: template.service,
            port: template.port,
            env: template.env.clone(),
            log: template.log.clone(),
            child: None,
        };
        proc.start(bin_dir, &[])?;
        let mut child = proc.child.take().context("child")?;
        loop {
            if world.ready(&proc).await {
                return Ok(child);
            }
            if child.try_wait()?.is_some() {
                break;
            }
            if started.elapsed() > Duration::from_secs(60) {
                bail!("{} did not come back within 60 s", template.service);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        eprintln!(
            "   {} exited at once after its restart; starting it again",
            template.service
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Waits until the service at `index` has tried one unit of work four times (it holds those
/// deliveries: its database is unreachable), then stops it with SIGTERM and waits for it to end.
/// A stop must leave what was never committed to the broker, never ack it.
async fn stop_while_holding(world: &World, index: usize) -> Result<()> {
    let proc = &world.procs[index];
    let tries = format!("{}_count", choreo_messaging::metrics::TRANSACTION_SECONDS);
    let started = Instant::now();
    loop {
        let text = match world.http.get(proc.url("/metrics")).send().await {
            Ok(response) => response.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        // `<name>_count` or `<name>_count{labels}`, then the value.
        let count: f64 = text
            .lines()
            .filter(|line| {
                line.strip_prefix(&tries)
                    .is_some_and(|rest| rest.starts_with([' ', '{']))
            })
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        if count >= 4.0 {
            break;
        }
        if started.elapsed() > Duration::from_secs(60) {
            bail!("{} never held a batch through its outage", proc.service);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let pid = proc.child.as_ref().and_then(Child::id).context("no pid")?;
    eprintln!(
        "   {} holds its batch with its database unreachable; SIGTERM",
        proc.service
    );
    Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .await?;
    let stopping = Instant::now();
    while Path::new(&format!("/proc/{pid}")).exists() && !is_zombie(pid) {
        if stopping.elapsed() > Duration::from_secs(60) {
            bail!("{} did not stop within 60 s of SIGTERM", proc.service);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| s.contains(") Z "))
        .unwrap_or(true)
}

/// Publishes `n` undecodable and `n` unsupported-version events that billing must dead-letter.
async fn poison(world: &World, n: usize) -> Result<()> {
    let connection = Connection::connect(&amqp_url(), ConnectionProperties::default()).await?;
    let channel = connection.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let exchange = Names::new(world.prefix.as_str()).of(ORDERS.exchange);
    for i in 0..n {
        let unsupported = serde_json::json!({
            "specversion": "1.0", "id": format!("poison-{}-{i}", world.prefix), "type": "order.placed", "source": "orders",
            "time": "2026-11-28T14:00:00.000Z", "schemaversion": 99, "correlationid": "poison", "data": {}
        });
        for body in [
            format!("poison {i}: not json").into_bytes(),
            unsupported.to_string().into_bytes(),
        ] {
            channel
                .basic_publish(
                    exchange.as_str().into(),
                    "order.placed".into(),
                    BasicPublishOptions::default(),
                    &body,
                    BasicProperties::default().with_delivery_mode(2),
                )
                .await?
                .await?;
        }
    }
    let _ = connection.close(200, "poisoned".into()).await;
    Ok(())
}

/// Republishes every event the tap saw, twice, to the exchange it was published to.
async fn republish_tapped(world: &World) -> Result<()> {
    let connection = Connection::connect(&amqp_url(), ConnectionProperties::default()).await?;
    let channel = connection.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let tap = format!("{}tap", world.prefix);
    let mut events = Vec::new();
    while let Some(message) = channel
        .basic_get(tap.as_str().into(), BasicGetOptions { no_ack: true })
        .await?
    {
        events.push((
            message.delivery.exchange.to_string(),
            message.delivery.routing_key.to_string(),
            message.delivery.data.clone(),
            message.delivery.properties.clone(),
        ));
    }
    for (exchange, key, body, properties) in events.iter().chain(events.iter()) {
        channel
            .basic_publish(
                exchange.as_str().into(),
                key.as_str().into(),
                BasicPublishOptions::default(),
                body,
                properties.clone(),
            )
            .await?
            .await?;
    }
    eprintln!("   republished {} events twice", events.len());
    let _ = connection.close(200, "duplicated".into()).await;
    Ok(())
}

async fn wait_outboxes_empty(world: &World) -> Result<i64> {
    sqlx::any::install_default_drivers();
    let started = Instant::now();
    loop {
        let mut unsent = 0;
        for service in ["orders", "billing", "shipping"] {
            let url = if world.postgres {
                postgres_url(&format!(
                    "{}_{service}",
                    world.prefix.trim_end_matches('.').replace('-', "_")
                ))
            } else {
                // The service's own data directory (an untidy row may have moved it).
                let dir = world
                    .first(service)
                    .env
                    .iter()
                    .find(|(name, _)| name == "CHOREO_DATA_DIR")
                    .map_or_else(
                        || world.dir.path().display().to_string(),
                        |(_, dir)| dir.clone(),
                    );
                format!("sqlite://{dir}/{service}.db?mode=ro")
            };
            let pool = sqlx::any::AnyPoolOptions::new()
                .max_connections(1)
                .connect(&url)
                .await?;
            let count: i64 =
                sqlx::query_scalar("SELECT COUNT(*) FROM outbox WHERE sent_at IS NULL")
                    .fetch_one(&pool)
                    .await?;
            unsent += count;
            pool.close().await;
        }
        if unsent == 0 || started.elapsed() > Duration::from_secs(30) {
            return Ok(unsent);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn count_dead_letters(world: &World) -> Result<Vec<(String, u32)>> {
    let connection = Connection::connect(&amqp_url(), ConnectionProperties::default()).await?;
    let mut counts = Vec::new();
    for service in SERVICES {
        let channel = connection.create_channel().await?;
        let queue = format!("{}{}", world.prefix, service.dead_letter_queue());
        let declared = channel
            .queue_declare(
                queue.as_str().into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await?;
        counts.push((service.name.to_owned(), declared.message_count()));
    }
    let _ = connection.close(200, "counted".into()).await;
    Ok(counts)
}
