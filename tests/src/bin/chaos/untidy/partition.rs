//! A partition inside the cluster: the node that holds the services' connections is cut off from
//! its two peers (its distribution traffic dropped both ways) while the services can still reach
//! it, then the partition heals.
//!
//! Under `pause_minority`, the mode the project recommends, the cut node finds itself in a
//! minority once its peers are out of touch (`net_ticktime` 10 s in `make cluster`) and pauses:
//! it closes its client connections, and the services reconnect to the two nodes that still make
//! a majority, where their quorum queues carry on. When the partition heals it resumes by itself.
//! Under `autoheal` the cut node keeps its clients, which stall (its quorum queue replicas are in
//! a minority and cannot commit) until the partition heals; then the side with fewer clients
//! restarts. Either way no confirmed publish may be lost and no order done twice: the matrix's
//! own checks.

use super::net::Cut;
use super::{Injected, World};
use crate::cluster;
use anyhow::{Result, bail};
use std::time::{Duration, Instant};

/// How the cluster handles a partition (`cluster_partition_handling`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    PauseMinority,
    Autoheal,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::PauseMinority => "pause_minority",
            Mode::Autoheal => "autoheal",
        }
    }
}

/// How long the nodes may take to be one cluster again by themselves once the partition heals,
/// and after the cut node is restarted if they were not.
const REJOIN_DEADLINE: Duration = Duration::from_secs(90);

/// Cuts the services' node off for `length` under `mode`, then heals the partition and waits
/// for the three nodes to be one cluster again.
pub async fn run(world: &World, mode: Mode, length: Duration) -> Result<Injected> {
    for node in cluster::NODES {
        cluster::set_partition_handling(node, mode.name()).await?;
    }
    let cut_node = cluster::connected_node(&world.prefix).await?;
    let cut = Cut::start(cut_node, &cluster::NODES)?;
    let started = Instant::now();
    eprintln!(
        "   node {cut_node}, the services' node, cut off from its peers for {length:?} ({})",
        mode.name()
    );
    // Where the services' connections are while the partition lasts, as the majority sees it.
    let wanted = 2 * world.procs.len();
    let mut moved = None;
    let majority: Vec<usize> = cluster::NODES
        .into_iter()
        .filter(|n| *n != cut_node)
        .collect();
    while started.elapsed() < length {
        if moved.is_none()
            && let Ok(counts) = cluster::connections_seen_by(&world.prefix, &majority).await
        {
            let elsewhere: usize = counts
                .iter()
                .filter(|(node, _)| *node != cut_node)
                .map(|(_, count)| count)
                .sum();
            if elsewhere >= wanted {
                moved = Some(started.elapsed());
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let dropped = cut.dropped();
    drop(cut);
    let healing = Instant::now();
    // Seen here on 3.10 with Erlang 25 under pause_minority: the node that paused hangs as it
    // starts again once the partition heals (its log ends in `global`'s "Faking nodedown/nodeup"
    // lines), and `stop_app` hangs too. What an operator does then: kill -9 and start the node.
    let restarted = match cluster::await_one_cluster(REJOIN_DEADLINE).await {
        Ok(()) => false,
        Err(_) => {
            eprintln!(
                "   node {cut_node} not back {REJOIN_DEADLINE:?} after the heal: kill -9 and start it, as an operator would"
            );
            cluster::kill(cut_node).await?;
            cluster::start(cut_node).await?;
            cluster::await_one_cluster(REJOIN_DEADLINE).await?;
            true
        }
    };
    let rejoined = healing.elapsed();
    let mut problems = Vec::new();
    if mode == Mode::PauseMinority && moved.is_none() {
        problems.push(format!(
            "the services were still on node {cut_node} {} s into the partition",
            length.as_secs()
        ));
    }
    if dropped == 0 {
        bail!("the cut dropped no packet: node {cut_node} was never cut off");
    }
    Ok(Injected {
        healed: Instant::now(),
        problems,
        notes: vec![format!(
            "{}: node {cut_node} cut off {} s ({dropped} packets dropped on its distribution port); {}; one cluster again {:.1} s after the partition healed{}",
            mode.name(),
            length.as_secs(),
            match moved {
                Some(after) => format!(
                    "every service connection on the other nodes {:.1} s in",
                    after.as_secs_f64()
                ),
                None => "the services stayed on it".to_owned(),
            },
            rejoined.as_secs_f64(),
            if restarted {
                format!(", once node {cut_node}, hung in its boot, was killed and started again")
            } else {
                ", by itself".to_owned()
            }
        )],
        reconnects_before: 0.0,
    })
}
