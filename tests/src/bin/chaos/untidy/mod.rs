//! The untidy rows: faults that do not stop a process or close a connection cleanly, but leave
//! things half working. A link that drops packets or is slow, a full disk under a service or
//! under the broker, a broker away for minutes.
//!
//! Each row has a module of its own with three steps. [`setup`] runs before the services start.
//! `inject` runs under the steady load of orders; it holds the fault, watches what the services
//! say while it lasts, and returns when the fault is healed. [`expect`] runs once every order has
//! ended, and checks what that row promises beyond the matrix's own checks (no order lost or
//! doubled, no unsent outbox row, no dead letter). What each row found goes into its notes,
//! printed under the row.

pub mod clock;
pub mod disk;
pub mod link;
pub mod net;
pub mod outage;
pub mod partition;

use super::World;
use anyhow::{Context, Result};
use choreo_e2e::Scrape;
use choreo_e2e::processes::Proc;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// One untidy row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Untidy {
    /// 5% of the packets between the services and the broker dropped.
    LossyLink,
    /// Every chunk between the services and the broker held 50 ms, both ways.
    SlowLink,
    /// The service's data directory on a small file system that fills up.
    FullDisk(&'static str),
    /// The broker's own disk alarm: its free-disk limit above the disk's free space.
    BrokerDiskAlarm,
    /// The broker stopped for minutes while orders keep arriving.
    LongOutage,
    /// On the cluster: the services' node cut off from its peers, handled in this mode.
    Partition(partition::Mode),
    /// The service's wall clock an hour ahead, then an hour behind.
    ClockJump(&'static str),
}

impl Untidy {
    pub fn name(self) -> String {
        match self {
            Untidy::LossyLink => "link to the broker drops 5% of packets".into(),
            Untidy::SlowLink => "link to the broker 50 ms slow each way".into(),
            Untidy::FullDisk(service) => format!("disk full under {service}"),
            Untidy::BrokerDiskAlarm => "broker disk alarm blocks publishing".into(),
            Untidy::LongOutage => "broker down for minutes under load".into(),
            Untidy::ClockJump(service) => {
                format!("{service}'s wall clock jumps an hour each way")
            }
            Untidy::Partition(mode) => {
                format!("cluster: partition of the services' node ({})", mode.name())
            }
        }
    }

    /// How long the fault lasts: the lengths in the full matrix, short ones in CI's
    /// (fewer orders).
    pub fn length(self, count: usize) -> Duration {
        let full = count >= 1000;
        Duration::from_secs(match self {
            Untidy::LongOutage if full => 300,
            Untidy::LongOutage => 20,
            // Long enough, even short, for the nodes to notice (`net_ticktime` 10 s).
            Untidy::Partition(_) if !full => 20,
            _ if full => 30,
            _ => 8,
        })
    }

    /// The steady rate of orders, so that the load starts before the fault (a fifth of it is in
    /// when the fault begins) and lasts past it.
    pub fn rate(self, count: usize) -> f64 {
        count as f64 / (self.length(count).as_secs_f64() * 1.5)
    }
}

/// What a row keeps for its length: a proxy or a file system of its own, released when the row
/// ends, however it ends.
#[derive(Debug, Default)]
pub struct Held {
    pub proxy: Option<net::DelayProxy>,
    pub mount: Option<disk::Mount>,
}

/// What a row's injection found while the fault lasted.
#[derive(Debug)]
pub struct Injected {
    /// When the fault was healed.
    pub healed: Instant,
    pub problems: Vec<String>,
    pub notes: Vec<String>,
    /// Broker reconnects of every process before the fault.
    pub reconnects_before: f64,
}

/// Before the services start.
pub async fn setup(world: &mut World, row: Untidy) -> Result<()> {
    match row {
        Untidy::SlowLink => link::setup_slow(world).await,
        Untidy::FullDisk(service) => disk::setup(world, service),
        Untidy::ClockJump(service) => clock::setup(world, service),
        Untidy::LossyLink | Untidy::BrokerDiskAlarm | Untidy::LongOutage | Untidy::Partition(_) => {
            Ok(())
        }
    }
}

/// Under the load: waits for a fifth of it, injects the fault, holds it, heals it.
pub async fn inject(
    world: &World,
    row: Untidy,
    count: usize,
    accepted: Arc<AtomicUsize>,
) -> Result<Injected> {
    while accepted.load(Ordering::SeqCst) < count / 5 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let reconnects_before = reconnects(world).await?;
    let length = row.length(count);
    let mut injected = match row {
        Untidy::LossyLink => link::lossy(world, length).await?,
        Untidy::SlowLink => link::slow(world, length).await?,
        Untidy::FullDisk(service) => disk::fill(world, service, length).await?,
        Untidy::BrokerDiskAlarm => disk::broker_alarm(world, length).await?,
        Untidy::LongOutage => outage::run(world, length).await?,
        Untidy::Partition(mode) => partition::run(world, mode, length).await?,
        Untidy::ClockJump(service) => clock::jump(world, service, length).await?,
    };
    injected.reconnects_before = reconnects_before;
    Ok(injected)
}

/// Once every order has ended; a row may add to the notes of its injection.
pub async fn expect(world: &World, row: Untidy, injected: &mut Injected) -> Result<Vec<String>> {
    match row {
        Untidy::LossyLink | Untidy::SlowLink => link::expect(world, injected).await,
        Untidy::ClockJump(service) => clock::expect(world, service, &mut injected.notes).await,
        Untidy::FullDisk(_)
        | Untidy::BrokerDiskAlarm
        | Untidy::LongOutage
        | Untidy::Partition(_) => Ok(Vec::new()),
    }
}

/// One scrape of `proc`'s metrics.
pub async fn scrape(world: &World, proc: &Proc) -> Result<Scrape> {
    let text = world
        .http
        .get(proc.url("/metrics"))
        .send()
        .await?
        .text()
        .await?;
    Ok(Scrape::parse(&text))
}

/// The broker reconnects of every process so far.
pub async fn reconnects(world: &World) -> Result<f64> {
    let mut total = 0.0;
    for proc in &world.procs {
        total += scrape(world, proc)
            .await
            .with_context(|| format!("the metrics of {}", proc.service))?
            .value(choreo_messaging::metrics::RECONNECTS, &[]);
    }
    Ok(total)
}

/// The resident memory of `proc`, in MiB.
pub fn rss_mib(proc: &Proc) -> Option<f64> {
    let pid = proc.child.as_ref()?.id()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}
