//! A lossy and a slow link between the services and the broker. Orders must still complete, and
//! the services must not turn the trouble into a storm of reconnects: heartbeats (2 s here) and
//! timeouts must ride out a lost packet or a slow answer. The rows count the reconnects of every
//! process and allow at most [`MAX_RECONNECTS_PER_PROCESS`] each.

use super::net::{DelayProxy, Loss};
use super::{Injected, World};
use anyhow::{Result, bail};
use std::time::{Duration, Instant};

/// How much of the traffic the lossy link drops, and how long the slow one holds each chunk.
pub const LOSS_PERCENT: u32 = 5;
pub const DELAY: Duration = Duration::from_millis(50);

/// At most this many reconnects per process over the whole row.
pub const MAX_RECONNECTS_PER_PROCESS: f64 = 1.0;

/// The AMQP port of the broker the single-broker rows use.
const BROKER_PORT: u16 = 5672;

/// The slow link's proxy, in front of the broker for every service from the start (without
/// delay until the fault).
pub async fn setup_slow(world: &mut World) -> Result<()> {
    let proxy = DelayProxy::start(BROKER_PORT).await?;
    let direct = format!("127.0.0.1:{BROKER_PORT}");
    for proc in &mut world.procs {
        for (name, value) in &mut proc.env {
            if name == "CHOREO_AMQP_URL" {
                if !value.contains(&direct) {
                    bail!("the slow-link row needs the broker at {direct}, not {value}");
                }
                *value = value.replace(&direct, &format!("127.0.0.1:{}", proxy.port));
            }
        }
    }
    world.untidy.proxy = Some(proxy);
    Ok(())
}

/// Drops a share of the packets to and from the broker's port for `length`.
pub async fn lossy(world: &World, length: Duration) -> Result<Injected> {
    let loss = Loss::start(BROKER_PORT, LOSS_PERCENT)?;
    eprintln!(
        "   dropping {LOSS_PERCENT}% of the packets to and from port {BROKER_PORT} for {length:?}"
    );
    let (problems, unready) = watch_readiness(world, length).await;
    let dropped = loss.dropped();
    drop(loss);
    Ok(Injected {
        healed: Instant::now(),
        problems,
        notes: vec![format!(
            "{dropped} packets dropped in {} s; /readyz of orders answered 503 in {unready} of its checks",
            length.as_secs()
        )],
        reconnects_before: 0.0,
    })
}

/// Holds every chunk between the services and the broker for [`DELAY`], for `length`.
pub async fn slow(world: &World, length: Duration) -> Result<Injected> {
    let Some(proxy) = &world.untidy.proxy else {
        bail!("the slow-link row's proxy was not set up");
    };
    proxy.set_delay(DELAY);
    eprintln!("   holding every chunk to and from the broker {DELAY:?} for {length:?}");
    let (problems, unready) = watch_readiness(world, length).await;
    proxy.set_delay(Duration::ZERO);
    Ok(Injected {
        healed: Instant::now(),
        problems,
        notes: vec![format!(
            "{} ms each way for {} s; /readyz of orders answered 503 in {unready} of its checks",
            DELAY.as_millis(),
            length.as_secs()
        )],
        reconnects_before: 0.0,
    })
}

/// Polls orders' `/readyz` every 250 ms for `length`: returns no problem (a slow or lossy link
/// may make a check fail; what is bounded is the reconnects) and how many checks answered 503.
async fn watch_readiness(world: &World, length: Duration) -> (Vec<String>, usize) {
    let until = Instant::now() + length;
    let mut unready = 0;
    while Instant::now() < until {
        if !world.ready(world.first("orders")).await {
            unready += 1;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    (Vec::new(), unready)
}

/// The reconnects the row caused, bounded.
pub async fn expect(world: &World, injected: &Injected) -> Result<Vec<String>> {
    let caused = super::reconnects(world).await? - injected.reconnects_before;
    let bound = MAX_RECONNECTS_PER_PROCESS * world.procs.len() as f64;
    eprintln!(
        "   {caused} broker reconnects across {} processes",
        world.procs.len()
    );
    Ok(if caused > bound {
        vec![format!(
            "{caused} broker reconnects across {} processes, more than {bound}",
            world.procs.len()
        )]
    } else {
        Vec::new()
    })
}
