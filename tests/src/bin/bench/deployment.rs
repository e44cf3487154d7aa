//! One deployment of the suite under test: the three release binaries as processes, with one or
//! more replicas each, on SQLite or on PostgreSQL (one database per service, created here and
//! shared by that service's replicas, as in `chaos`), under a prefix of its own, with the probe
//! bound once every process is ready; with the observer and the default logging when it is
//! measured as `make up` runs it. The services are black boxes: environment in, HTTP and events
//! out.

use crate::cleanup::Cleanup;
use crate::partitions;
use crate::probe::Probe;
use anyhow::{Context, Result, bail};
use choreo_e2e::postgres_url;
use choreo_e2e::processes::{Proc, free_port, service_env};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const SERVICES: [&str; 3] = ["orders", "billing", "shipping"];
const OBSERVER: &str = "observer";
/// How long a deployment may take from spawn to every process answering `/readyz` 200.
const READY_DEADLINE: Duration = Duration::from_secs(60);
/// The services' default `CHOREO_RETRY_DELAYS_MS`: they name the delay queues to delete.
const DEFAULT_RETRY_DELAYS_MS: &str = "1000,5000,30000";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Database {
    Sqlite,
    Postgres,
}

/// What to deploy.
#[derive(Debug, Clone)]
pub struct Spec {
    /// How tables name it: "SQLite, 1 replica".
    pub name: String,
    /// Short and unique within a run: part of the broker prefix and the database names.
    pub key: String,
    pub database: Database,
    pub replicas: usize,
    pub bin_dir: PathBuf,
    /// `--env` settings, given to every process after the bench's own (`process:KEY` to that
    /// process only).
    pub env: Vec<(String, String)>,
    /// Orders' events hashed by order over one queue per orders replica
    /// ([`crate::partitions`]), instead of the contract's one queue.
    pub partitioned: bool,
    /// The observer runs beside the services, as `make up` starts it.
    pub observer: bool,
    /// The bench's quiet logging (JSON, warnings and the messaging runtime's info), instead of
    /// the defaults `make up` runs with.
    pub quiet_logs: bool,
}

impl Spec {
    pub fn new(key: &str, database: Database, replicas: usize, bin_dir: &Path) -> Spec {
        let name = match database {
            Database::Sqlite => "SQLite",
            Database::Postgres => "PostgreSQL",
        };
        let plural = if replicas == 1 { "" } else { "s" };
        Spec {
            name: format!("{name}, {replicas} replica{plural}"),
            key: key.to_owned(),
            database,
            replicas,
            bin_dir: bin_dir.to_owned(),
            env: Vec::new(),
            partitioned: false,
            observer: false,
            quiet_logs: true,
        }
    }

    /// SQLite as `make up` runs it: the observer on, every process with its default logging.
    pub fn as_make_up(key: &str, bin_dir: &Path) -> Spec {
        Spec {
            name: "SQLite, as `make up` runs it (observer on, default logs)".to_owned(),
            observer: true,
            quiet_logs: false,
            ..Spec::new(key, Database::Sqlite, 1, bin_dir)
        }
    }

    /// The processes this deployment runs, each once per replica but the observer.
    fn processes(&self) -> Vec<&'static str> {
        let mut processes = SERVICES.to_vec();
        if self.observer {
            processes.push(OBSERVER);
        }
        processes
    }
}

#[derive(Debug)]
pub struct Deployment {
    pub procs: Vec<Proc>,
    pub probe: Probe,
    pub http: reqwest::Client,
    /// What this deployment's PostgreSQL database names start with ("bench_ab12cd34_pg1_").
    pub database_prefix: String,
    /// Kept until the deployment ends: the SQLite files and the logs are in it.
    _dir: tempfile::TempDir,
}

impl Deployment {
    /// Creates the databases, starts every process, waits until all are ready, binds the probe.
    /// Everything created is listed in `cleanup` first, so a failure half-way leaves nothing
    /// behind after the sweep; the processes end when the returned value (or the half-built
    /// one) is dropped.
    pub async fn start(run_prefix: &str, spec: &Spec, cleanup: &Cleanup) -> Result<Deployment> {
        for service in spec.processes() {
            let binary = spec.bin_dir.join(service);
            if !binary.is_file() {
                bail!(
                    "{} is missing: build the services first (`cargo build --release`)",
                    binary.display()
                );
            }
        }
        let prefix = format!("{run_prefix}{}.", spec.key);
        cleanup.prefix(&prefix, &retry_delays(&spec.env));
        let database_prefix = prefix.replace(['-', '.'], "_");
        let dir = tempfile::tempdir()?;
        let mut databases = Vec::new();
        let mut procs = Vec::new();
        for service in spec.processes() {
            let database_url = match spec.database {
                // The observer keeps its own SQLite file, as `make up` runs it.
                Database::Sqlite => String::new(),
                Database::Postgres if service == OBSERVER => String::new(),
                Database::Postgres => {
                    let name = format!("{database_prefix}{service}");
                    databases.push(name.clone());
                    postgres_url(&name)
                }
            };
            let replicas = if service == OBSERVER {
                1
            } else {
                spec.replicas
            };
            for replica in 1..=replicas {
                let port = free_port()?;
                let mut env = service_env(&prefix, port, dir.path(), &database_url);
                if !spec.quiet_logs {
                    env.retain(|(key, _)| key != "CHOREO_LOG_FORMAT" && key != "RUST_LOG");
                }
                if spec.partitioned {
                    env.push(("CHOREO_DECLARE_TOPOLOGY".into(), "own".into()));
                    if service == "orders" {
                        env.push(("CHOREO_CONSUME_QUEUE".into(), partitions::queue(replica)));
                    }
                }
                env.extend(settings_for(service, &spec.env));
                procs.push(Proc {
                    service,
                    port,
                    env,
                    log: dir.path().join(format!("{service}-{replica}.log")),
                    child: None,
                });
            }
        }
        create_databases(&databases, cleanup).await?;
        if spec.partitioned {
            partitions::declare(&prefix, spec.replicas, cleanup).await?;
        }
        for proc in &mut procs {
            proc.start(&spec.bin_dir, &[])?;
        }
        let http = choreo_e2e::http_client()
            .timeout(Duration::from_secs(30))
            .tcp_nodelay(true)
            .build()?;
        wait_ready(&http, &mut procs).await?;
        let probe = Probe::start(&prefix, cleanup).await?;
        Ok(Deployment {
            procs,
            probe,
            http,
            database_prefix,
            _dir: dir,
        })
    }

    /// Where to post orders: every orders replica, for round-robin.
    pub fn orders_urls(&self) -> Vec<String> {
        self.procs
            .iter()
            .filter(|p| p.service == "orders")
            .map(|p| p.url("/orders"))
            .collect()
    }

    /// Each process with its label ("orders", or "orders 2" among replicas) and pid.
    pub fn pids(&self) -> Vec<(String, u32)> {
        let services = self.procs.iter().filter(|p| p.service != OBSERVER).count();
        let replicated = services > SERVICES.len();
        let mut labelled = Vec::with_capacity(self.procs.len());
        for (index, proc) in self.procs.iter().enumerate() {
            // Replicas of a service are numbered from 1.
            let nth = 1 + self.procs[..index]
                .iter()
                .filter(|p| p.service == proc.service)
                .count();
            let label = if replicated && proc.service != OBSERVER {
                format!("{} {nth}", proc.service)
            } else {
                proc.service.to_owned()
            };
            if let Some(pid) = proc.pid() {
                labelled.push((label, pid));
            }
        }
        labelled
    }

    /// An error if a process has exited while it should be serving.
    pub fn check_alive(&mut self) -> Result<()> {
        for proc in &mut self.procs {
            if let Some(code) = proc.exited() {
                bail!(
                    "{} exited with {code} during the run; its log ends:\n{}",
                    proc.service,
                    proc.log_tail(20)
                );
            }
        }
        Ok(())
    }

    /// Stops the probe, then every process with SIGTERM; returns the problems (a process that
    /// did not exit 0). The broker names and databases are left to the cleanup sweep.
    pub async fn stop(mut self) -> Vec<String> {
        let mut problems = Vec::new();
        self.probe.stop().await;
        for proc in &mut self.procs {
            match proc.terminate().await {
                Ok(0) => {}
                Ok(code) => problems.push(format!(
                    "{} exited {code} on SIGTERM; its log ends:\n{}",
                    proc.service,
                    proc.log_tail(10)
                )),
                Err(error) => problems.push(format!("{}: {error:#}", proc.service)),
            }
        }
        problems
    }
}

/// The `--env` settings that `service` gets: those that name no process, and those that name it
/// (`observer:KEY`), without the name.
fn settings_for(service: &str, env: &[(String, String)]) -> Vec<(String, String)> {
    env.iter()
        .filter_map(|(key, value)| match key.split_once(':') {
            None => Some((key.clone(), value.clone())),
            Some((only, key)) if only == service => Some((key.to_owned(), value.clone())),
            Some(_) => None,
        })
        .collect()
}

/// Every retry delay a process of this deployment may run with, for the cleanup's delay-queue
/// names: the default ones unless every process is given others, and each `--env`'s
/// `CHOREO_RETRY_DELAYS_MS` (for all processes or for one), together.
fn retry_delays(env: &[(String, String)]) -> Vec<u64> {
    let parse = |text: &str| -> Vec<u64> {
        text.split(',')
            .filter_map(|d| d.trim().parse().ok())
            .collect()
    };
    let mut delays = Vec::new();
    let for_all = env
        .iter()
        .rev()
        .find(|(k, _)| k == "CHOREO_RETRY_DELAYS_MS");
    delays.extend(parse(
        for_all.map_or(DEFAULT_RETRY_DELAYS_MS, |(_, v)| v.as_str()),
    ));
    for (key, value) in env {
        if key.ends_with(":CHOREO_RETRY_DELAYS_MS") {
            delays.extend(parse(value));
        }
    }
    delays.sort_unstable();
    delays.dedup();
    delays
}

async fn create_databases(databases: &[String], cleanup: &Cleanup) -> Result<()> {
    use sqlx::Connection as _;
    if databases.is_empty() {
        return Ok(());
    }
    let mut admin = sqlx::PgConnection::connect(&postgres_url("postgres"))
        .await
        .context("connect to PostgreSQL (PG_URL, default postgres://postgres@127.0.0.1:5432)")?;
    for database in databases {
        cleanup.database(database);
        sqlx::query(&format!("CREATE DATABASE {database}"))
            .execute(&mut admin)
            .await
            .with_context(|| format!("create database {database}"))?;
    }
    let _ = admin.close().await;
    Ok(())
}

/// Polls every process's `/readyz` until all answer 200; fails at once if one exits.
async fn wait_ready(http: &reqwest::Client, procs: &mut [Proc]) -> Result<()> {
    let started = Instant::now();
    for proc in procs.iter_mut() {
        loop {
            if let Some(code) = proc.exited() {
                bail!(
                    "{} exited with {code} before it was ready; its log ends:\n{}",
                    proc.service,
                    proc.log_tail(20)
                );
            }
            if matches!(http.get(proc.url("/readyz")).send().await, Ok(r) if r.status() == 200) {
                break;
            }
            if started.elapsed() > READY_DEADLINE {
                bail!(
                    "{} not ready within {READY_DEADLINE:?}; its log ends:\n{}",
                    proc.service,
                    proc.log_tail(20)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_setting_naming_a_process_goes_to_that_process_alone() {
        let env = [
            ("CHOREO_CONSUMER_BATCH".to_owned(), "1".to_owned()),
            (
                "observer:CHOREO_CONSUMER_LINGER_MS".to_owned(),
                "50".to_owned(),
            ),
        ];
        let pair = |k: &str, v: &str| (k.to_owned(), v.to_owned());
        assert_eq!(
            super::settings_for("observer", &env),
            [
                pair("CHOREO_CONSUMER_BATCH", "1"),
                pair("CHOREO_CONSUMER_LINGER_MS", "50")
            ]
        );
        assert_eq!(
            super::settings_for("orders", &env),
            [pair("CHOREO_CONSUMER_BATCH", "1")]
        );
    }

    #[test]
    fn the_cleanup_knows_every_delay_any_process_runs_with() {
        let pair = |k: &str, v: &str| (k.to_owned(), v.to_owned());
        let default = super::retry_delays(&[]);
        assert!(!default.is_empty());
        let one = super::retry_delays(&[pair("billing:CHOREO_RETRY_DELAYS_MS", "7,9")]);
        let mut expected = default.clone();
        expected.extend([7, 9]);
        expected.sort_unstable();
        assert_eq!(one, expected, "the others keep the default ones");
        assert_eq!(
            super::retry_delays(&[pair("CHOREO_RETRY_DELAYS_MS", "5")]),
            [5]
        );
    }
}
