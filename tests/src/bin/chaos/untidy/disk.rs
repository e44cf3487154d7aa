//! A full disk under a service, and the broker's own disk alarm.
//!
//! The service's data directory (its SQLite file) sits on a small tmpfs of its own; the row fills
//! it to the last byte while orders flow, holds it full, then frees it. While it is full, a write
//! fails with SQLite's "database or disk is full", which the store reports as the database being
//! unavailable: the consumer holds its batch unacked and retries it with backoff, spending none
//! of its retries and dead-lettering nothing; `POST /orders` answers 503 with a JSON error; and
//! `/readyz` says the database is failing. Once space is back, everything completes.
//!
//! The broker's disk alarm: its free-disk limit is raised above the disk's free space, so the
//! broker blocks every publishing connection until the limit is put back, as the memory alarm
//! row does with memory.

use super::{Injected, World};
use anyhow::{Context, Result, bail};
use serde_json::Value;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The size of the service's file system: room for a row's orders, and little to fill.
const SIZE: &str = "64m";

/// A tmpfs mounted for the row, unmounted when dropped.
#[derive(Debug)]
pub struct Mount {
    path: PathBuf,
}

impl Mount {
    fn new(path: &Path) -> Result<Mount> {
        std::fs::create_dir_all(path)?;
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={SIZE}"), "tmpfs"])
            .arg(path)
            .status()
            .context("mount (run as root)")?;
        if !status.success() {
            bail!("mount -t tmpfs on {} failed", path.display());
        }
        Ok(Mount {
            path: path.to_owned(),
        })
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        // Lazily: a process of the row may still hold a file there.
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.path)
            .status();
    }
}

/// Puts `service`'s data directory on a file system of its own.
pub fn setup(world: &mut World, service: &'static str) -> Result<()> {
    let path = world.dir.path().join(format!("disk-{service}"));
    let mount = Mount::new(&path)?;
    for proc in world.procs.iter_mut().filter(|p| p.service == service) {
        for (name, value) in &mut proc.env {
            if name == "CHOREO_DATA_DIR" {
                *value = path.display().to_string();
            }
        }
    }
    world.untidy.mount = Some(mount);
    Ok(())
}

/// Fills `service`'s file system, holds it full for `length`, then frees it. While full: its
/// `/readyz` must answer 503, and for orders a `POST /orders` must answer 503 with a JSON error.
pub async fn fill(world: &World, service: &'static str, length: Duration) -> Result<Injected> {
    let Some(mount) = &world.untidy.mount else {
        bail!("the disk row's file system was not set up");
    };
    let filler = mount.path.join("filler");
    let written = fill_to_the_last_byte(&filler)?;
    eprintln!(
        "   {service}'s disk full ({:.1} MiB of filler) for {length:?}",
        written as f64 / 1048576.0
    );
    let proc = world.first(service);
    let until = Instant::now() + length;
    let (mut checks, mut unready, mut refused, mut accepted) = (0, 0, 0, 0);
    let mut problems = Vec::new();
    let mut probe = 0;
    while Instant::now() < until {
        checks += 1;
        if !world.ready(proc).await {
            unready += 1;
        }
        if service == "orders" {
            probe += 1;
            let response = world
                .http
                .post(proc.url("/orders"))
                .header(
                    "Idempotency-Key",
                    format!("{}disk-probe-{probe}", world.prefix),
                )
                .json(&choreo_e2e::order_request(1000, 1, "DE"))
                .send()
                .await;
            match response {
                Ok(r) if r.status() == 503 => {
                    let body: Value = r.json().await.unwrap_or_default();
                    if body["error"].as_str().is_some_and(|e| !e.is_empty()) {
                        refused += 1;
                    } else {
                        problems.push(format!(
                            "POST /orders answered 503 without a JSON error: {body}"
                        ));
                    }
                }
                Ok(r) if r.status().is_success() => accepted += 1,
                Ok(r) => problems.push(format!(
                    "POST /orders answered {} on a full disk",
                    r.status()
                )),
                Err(_) => {}
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    std::fs::remove_file(&filler)?;
    let healed = Instant::now();
    if unready == 0 {
        problems.push(format!(
            "{service}'s /readyz never answered 503 in {checks} checks while its disk was full"
        ));
    }
    if service == "orders" && refused == 0 {
        problems.push(format!(
            "POST /orders never answered 503 in {probe} tries while the disk was full"
        ));
    }
    problems.truncate(3);
    Ok(Injected {
        healed,
        problems,
        notes: vec![format!(
            "while full: /readyz 503 in {unready} of {checks} checks{}",
            if service == "orders" {
                format!("; POST /orders 503 in {refused} of {probe} tries ({accepted} accepted)")
            } else {
                String::new()
            }
        )],
        reconnects_before: 0.0,
    })
}

/// Writes zeros to `path` until the file system has no byte left; returns how many.
fn fill_to_the_last_byte(path: &Path) -> Result<u64> {
    let mut file = std::fs::File::create(path)?;
    let mut written = 0u64;
    for chunk in [1 << 20, 4096, 1] {
        let zeros = vec![0u8; chunk];
        loop {
            match file.write(&zeros) {
                Ok(0) => break,
                Ok(n) => written += n as u64,
                Err(e) if e.raw_os_error() == Some(28) => break,
                Err(e) => return Err(e.into()),
            }
        }
    }
    let _ = file.sync_all();
    Ok(written)
}

/// The broker's disk alarm for `length`, its limit put back after.
pub async fn broker_alarm(world: &World, length: Duration) -> Result<Injected> {
    let _ = world;
    super::super::rabbitmqctl(&["set_disk_free_limit", "1000000GB"]).await?;
    eprintln!("   broker disk alarm (free-disk limit 1,000,000 GB) for {length:?}");
    tokio::time::sleep(length).await;
    super::super::rabbitmqctl(&["set_disk_free_limit", DEFAULT_DISK_FREE_LIMIT]).await?;
    Ok(Injected {
        healed: Instant::now(),
        problems: Vec::new(),
        notes: Vec::new(),
        reconnects_before: 0.0,
    })
}

/// RabbitMQ's default free-disk limit, which `heal_broker` puts back after every row.
pub const DEFAULT_DISK_FREE_LIMIT: &str = "50MB";
