//! The three-node cluster of `scripts/cluster.sh` (`make cluster`): where the services are
//! connected, which node leads their quorum queues, and faults on whole nodes. Every command goes
//! through the script, which owns the nodes' names, ports and directories.

use anyhow::{Context, Result, bail};
use std::time::{Duration, Instant};
use tokio::process::Command;

pub const NODES: [usize; 3] = [1, 2, 3];
const SCRIPT: &str = "scripts/cluster.sh";

async fn script(args: &[&str]) -> Result<String> {
    let output = Command::new("bash")
        .arg(SCRIPT)
        .args(args)
        .output()
        .await
        .with_context(|| format!("run {SCRIPT}"))?;
    if !output.status.success() {
        bail!(
            "{SCRIPT} {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// `rabbitmqctl` against node `n`.
async fn ctl(n: usize, args: &[&str]) -> Result<String> {
    let n = n.to_string();
    let mut all = vec!["ctl", n.as_str()];
    all.extend_from_slice(args);
    script(&all).await
}

/// Fails unless all three nodes answer: the cluster rows need `make cluster` first.
pub async fn require_running() -> Result<()> {
    script(&["running"])
        .await
        .map(drop)
        .context("the cluster is not running: start it with `make cluster`")
}

/// The CHOREO_AMQP_URL of the cluster: every node.
pub async fn urls() -> Result<String> {
    Ok(script(&["urls"]).await?.trim().to_owned())
}

/// Node `n`'s number in a node name (`choreo-2@localhost` is 2).
fn number(node: &str) -> Option<usize> {
    node.trim()
        .strip_prefix("choreo-")?
        .split('@')
        .next()?
        .parse()
        .ok()
}

/// How many of the suite's connections (named `<prefix><service>-<role>`) each node holds, as
/// the first node that answers sees the cluster: (node, count).
pub async fn connections(prefix: &str) -> Result<Vec<(usize, usize)>> {
    connections_seen_by(prefix, &NODES).await
}

/// The same, as the first of `asked` that answers sees the cluster (during a partition, each
/// side sees only its own).
pub async fn connections_seen_by(prefix: &str, asked: &[usize]) -> Result<Vec<(usize, usize)>> {
    let mut last = None;
    for &asked in asked {
        match ctl(
            asked,
            &[
                "list_connections",
                "port",
                "client_properties",
                "--no-table-headers",
            ],
        )
        .await
        {
            Ok(listed) => {
                let mut counts: Vec<(usize, usize)> = NODES.iter().map(|n| (*n, 0)).collect();
                let named = format!("\"{prefix}");
                for line in listed.lines().filter(|l| l.contains(&named)) {
                    // Node N listens on 568N (scripts/cluster.sh).
                    let port: usize = line
                        .split('\t')
                        .next()
                        .unwrap_or("")
                        .trim()
                        .parse()
                        .unwrap_or(0);
                    if let Some(count) = counts.iter_mut().find(|(n, _)| 5680 + n == port) {
                        count.1 += 1;
                    }
                }
                return Ok(counts);
            }
            Err(error) => last = Some(error),
        }
    }
    Err(last.unwrap_or_else(|| anyhow::anyhow!("no node answers")))
}

/// The node holding most of the suite's connections.
pub async fn connected_node(prefix: &str) -> Result<usize> {
    let counts = connections(prefix).await?;
    match counts.iter().max_by_key(|(_, count)| *count) {
        Some((node, count)) if *count > 0 => Ok(*node),
        _ => bail!("no node holds a connection of {prefix}"),
    }
}

/// The quorum queues of the suite `prefix`: (name, leader node, member count).
async fn quorum_queues(prefix: &str) -> Result<Vec<(String, usize, usize)>> {
    let listed = ctl(
        1,
        &[
            "list_queues",
            "name",
            "type",
            "leader",
            "members",
            "--no-table-headers",
        ],
    )
    .await?;
    let mut queues = Vec::new();
    for line in listed.lines() {
        let fields: Vec<&str> = line.split('\t').collect();
        if let [name, "quorum", leader, members] = fields[..]
            && name.starts_with(prefix)
        {
            let leader = number(leader).unwrap_or(0);
            queues.push((name.to_owned(), leader, members.matches("choreo-").count()));
        }
    }
    Ok(queues)
}

/// The node that leads most of the suite's quorum queues.
pub async fn leader_node(prefix: &str) -> Result<usize> {
    let queues = quorum_queues(prefix).await?;
    NODES
        .into_iter()
        .max_by_key(|n| queues.iter().filter(|(_, leader, _)| leader == n).count())
        .context("no quorum queue")
}

/// Every quorum queue of the suite must have a member on each of the three nodes.
pub async fn membership_problems(prefix: &str) -> Result<Vec<String>> {
    let queues = quorum_queues(prefix).await?;
    if queues.is_empty() {
        return Ok(vec![format!("no quorum queue of {prefix} found")]);
    }
    Ok(queues
        .into_iter()
        .filter(|(_, _, members)| *members != NODES.len())
        .map(|(name, _, members)| format!("{name} has {members} members, not 3"))
        .collect())
}

pub async fn stop_app(n: usize) -> Result<()> {
    ctl(n, &["stop_app"]).await.map(drop)
}

pub async fn start_app(n: usize) -> Result<()> {
    ctl(n, &["start_app"]).await?;
    ctl(n, &["-t", "60", "await_startup"]).await.map(drop)
}

/// `kill -9` of node `n`'s Erlang VM; returns once it is gone.
pub async fn kill(n: usize) -> Result<()> {
    let pid = script(&["pid", &n.to_string()]).await?.trim().to_owned();
    Command::new("kill").args(["-9", &pid]).status().await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::path::Path::new(&format!("/proc/{pid}")).exists() {
        if Instant::now() > deadline {
            bail!("node {n} (pid {pid}) survived kill -9");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// Starts node `n`'s VM again (after a kill) and waits for it.
pub async fn start(n: usize) -> Result<()> {
    script(&["node-start", &n.to_string()]).await.map(drop)
}

/// Waits until stopping node `n` would leave every quorum queue a majority: the check RabbitMQ
/// recommends before each step of a rolling restart.
pub async fn await_not_quorum_critical(n: usize) -> Result<()> {
    let node = format!("choreo-{n}@localhost");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let status = Command::new("rabbitmq-queues")
            .args(["-q", "-n", &node, "check_if_node_is_quorum_critical"])
            .output()
            .await?;
        if status.status.success() {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("node {n} is still quorum-critical after 120 s");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Sets how node `n` handles a partition from now on (`cluster_partition_handling`: RabbitMQ
/// reads it when it detects one).
pub async fn set_partition_handling(n: usize, mode: &str) -> Result<()> {
    ctl(
        n,
        &[
            "eval",
            &format!("application:set_env(rabbit, cluster_partition_handling, {mode})."),
        ],
    )
    .await
    .map(drop)
}

/// Waits until every node answers, runs its app and sees the three running with no partition.
pub async fn await_one_cluster(deadline: Duration) -> Result<()> {
    let started = Instant::now();
    loop {
        let mut whole = true;
        for n in NODES {
            let status = ctl(n, &["-t", "5", "cluster_status", "--formatter", "json"]).await;
            let status: serde_json::Value = status
                .ok()
                .and_then(|text| serde_json::from_str(&text).ok())
                .unwrap_or_default();
            let running = status["running_nodes"].as_array().map_or(0, Vec::len);
            let partitions = status["partitions"].as_object().map_or(1, |p| p.len());
            whole &= running == NODES.len()
                && partitions == 0
                && ctl(n, &["-t", "5", "await_startup"]).await.is_ok();
        }
        if whole {
            return Ok(());
        }
        if started.elapsed() > deadline {
            bail!(
                "the three nodes were not one cluster again {deadline:?} after the partition healed"
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Leaves every node running with its app started, handling partitions as `make cluster`
/// configures it.
pub async fn heal() {
    for n in NODES {
        let _ = set_partition_handling(n, "pause_minority").await;
        if ctl(n, &["-t", "5", "ping"]).await.is_err() {
            let _ = start(n).await;
        }
        if tokio::time::timeout(Duration::from_secs(90), start_app(n))
            .await
            .is_err()
        {
            // A node hung in its boot (see untidy::partition): kill -9 and start it.
            let _ = kill(n).await;
            let _ = start(n).await;
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn node_numbers_come_from_node_names() {
        assert_eq!(super::number("choreo-2@localhost"), Some(2));
        assert_eq!(super::number("rabbit@localhost"), None);
    }
}
