//! The network faults of the untidy rows, on loopback only: packet loss by an iptables rule, and
//! delay by a proxy of our own between the services and the broker (this machine's kernel has no
//! `netem`, so `tc` cannot delay).
//!
//! Every rule goes into one chain of our own, `CHOREO-CHAOS`, jumped to from `INPUT` for the
//! loopback interface only, and matches one TCP port that must be one of the project's
//! ([`OUR_PORTS`]) and loopback addresses only; anything else is refused before a rule is
//! written. The chain is removed when the [`Rules`] that made it are dropped (a failed row
//! included), and [`clear_leftovers`] removes one an interrupted run left behind. Also: a
//! cluster node cut off from its peers ([`Cut`]).

use anyhow::{Context, Result, bail};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// Our chain of rules.
const CHAIN: &str = "CHOREO-CHAOS";

/// The ports a rule may match: the broker's AMQP port, the cluster's (`make cluster`), and
/// their distribution and epmd ports.
pub const OUR_PORTS: &[u16] = &[5672, 5681, 5682, 5683, 4369, 25672, 25681, 25682, 25683];

/// Our chain, jumped to from `INPUT` for loopback, with rules added one by one; removed, with
/// its rules, when dropped.
#[derive(Debug)]
pub struct Rules(());

impl Rules {
    pub fn start() -> Result<Rules> {
        clear_leftovers();
        iptables(&["-N", CHAIN])?;
        let rules = Rules(());
        iptables(&["-I", "INPUT", "-i", "lo", "-j", CHAIN])?;
        Ok(rules)
    }

    /// Drops TCP packets whose `direction` (`--dport` or `--sport`) is `port`, one of
    /// [`OUR_PORTS`], and that match `addresses` (`-s`/`-d` and a loopback address) and `more`.
    pub fn drop_tcp(
        &self,
        direction: &str,
        port: u16,
        addresses: &[(&str, &str)],
        more: &[&str],
    ) -> Result<()> {
        if !OUR_PORTS.contains(&port) {
            bail!("refusing a rule on port {port}: not one of the project's ({OUR_PORTS:?})");
        }
        if !["--dport", "--sport"].contains(&direction) {
            bail!("refusing a rule on {direction}");
        }
        let mut args = vec!["-A", CHAIN];
        for (flag, address) in addresses {
            if !["-s", "-d"].contains(flag) || !address.starts_with("127.") {
                bail!("refusing a rule on {flag} {address}: loopback only");
            }
            args.extend([*flag, *address]);
        }
        let port = port.to_string();
        args.extend(["-p", "tcp", direction, port.as_str()]);
        args.extend(more);
        args.extend(["-j", "DROP"]);
        iptables(&args)
    }

    /// Packets the rules on `port` dropped so far.
    pub fn dropped(&self, port: u16) -> u64 {
        let listing = std::process::Command::new("iptables")
            .args(["-L", CHAIN, "-n", "-v", "-x"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        listing
            .lines()
            .filter(|line| line.contains("DROP") && line.contains(&port.to_string()))
            .filter_map(|line| line.split_whitespace().next()?.parse::<u64>().ok())
            .sum()
    }
}

impl Drop for Rules {
    fn drop(&mut self) {
        clear_leftovers();
    }
}

/// Packets to and from `port` on loopback dropped at random, until dropped.
#[derive(Debug)]
pub struct Loss {
    port: u16,
    rules: Rules,
}

impl Loss {
    /// Drops `percent` of the packets to and from `port` on loopback.
    pub fn start(port: u16, percent: u32) -> Result<Loss> {
        if percent == 0 || percent > 100 {
            bail!("refusing to drop {percent}% of packets");
        }
        let rules = Rules::start()?;
        let probability = format!("{:.4}", f64::from(percent) / 100.0);
        let random = [
            "-m",
            "statistic",
            "--mode",
            "random",
            "--probability",
            probability.as_str(),
        ];
        for direction in ["--dport", "--sport"] {
            rules.drop_tcp(direction, port, &[], &random)?;
        }
        Ok(Loss { port, rules })
    }

    /// Packets dropped by the rules so far.
    pub fn dropped(&self) -> u64 {
        self.rules.dropped(self.port)
    }
}

/// Cluster node `node` cut off from the others of `nodes` (`scripts/cluster.sh`: node N's
/// distribution port is 2568N, and it connects to its peers from 127.0.0.(N+1)); clients, which
/// connect from 127.0.0.1, still reach every node. Until dropped.
#[derive(Debug)]
pub struct Cut {
    rules: Rules,
    node: usize,
}

impl Cut {
    pub fn start(node: usize, nodes: &[usize]) -> Result<Cut> {
        let rules = Rules::start()?;
        let address = |n: usize| format!("127.0.0.{}", n + 1);
        let port = |n: usize| u16::try_from(25680 + n).unwrap_or(0);
        for &other in nodes.iter().filter(|&&n| n != node) {
            // The node's connections to its peer, and its peer's to it, both ways.
            for (from, to) in [(node, other), (other, node)] {
                rules.drop_tcp("--dport", port(to), &[("-s", &address(from))], &[])?;
                rules.drop_tcp("--sport", port(to), &[("-d", &address(from))], &[])?;
            }
        }
        Ok(Cut { rules, node })
    }

    /// Packets dropped so far on the cut node's own distribution port.
    pub fn dropped(&self) -> u64 {
        self.rules
            .dropped(u16::try_from(25680 + self.node).unwrap_or(0))
    }
}

/// Removes our chain and its jump, if there; says nothing when there is none.
pub fn clear_leftovers() {
    let quiet = |args: &[&str]| {
        let _ = std::process::Command::new("iptables")
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
    };
    // As often as it was inserted (an interrupted run may have left it twice).
    for _ in 0..4 {
        quiet(&["-D", "INPUT", "-i", "lo", "-j", CHAIN]);
    }
    quiet(&["-F", CHAIN]);
    quiet(&["-X", CHAIN]);
}

fn iptables(args: &[&str]) -> Result<()> {
    let output = std::process::Command::new("iptables")
        .args(args)
        .output()
        .context("iptables (run as root, with the iptables package)")?;
    if !output.status.success() {
        bail!(
            "iptables {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}

/// A TCP proxy on loopback that holds every chunk it forwards, both ways, for the delay in
/// force (none until [`DelayProxy::set_delay`]), in order: a slow link between the services and
/// the broker.
#[derive(Debug)]
pub struct DelayProxy {
    pub port: u16,
    delay_ms: Arc<AtomicU64>,
    stop: CancellationToken,
}

impl DelayProxy {
    /// Listens on a free loopback port and forwards to `127.0.0.1:upstream`.
    pub async fn start(upstream: u16) -> Result<DelayProxy> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let port = listener.local_addr()?.port();
        let delay_ms = Arc::new(AtomicU64::new(0));
        let stop = CancellationToken::new();
        let (delay, until) = (delay_ms.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    accepted = listener.accept() => accepted,
                    () = until.cancelled() => return,
                };
                let Ok((client, _)) = accepted else { continue };
                let (delay, until) = (delay.clone(), until.clone());
                tokio::spawn(async move {
                    let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)).await else {
                        return;
                    };
                    let _ = client.set_nodelay(true);
                    let _ = server.set_nodelay(true);
                    let (client_read, client_write) = client.into_split();
                    let (server_read, server_write) = server.into_split();
                    tokio::select! {
                        () = pump(client_read, server_write, delay.clone()) => {}
                        () = pump(server_read, client_write, delay) => {}
                        () = until.cancelled() => {}
                    }
                });
            }
        });
        Ok(DelayProxy {
            port,
            delay_ms,
            stop,
        })
    }

    /// Holds every chunk read from now on for `delay` before it is written on.
    pub fn set_delay(&self, delay: Duration) {
        self.delay_ms.store(
            u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
            Ordering::SeqCst,
        );
    }
}

impl Drop for DelayProxy {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Copies `from` to `to`, each chunk written no sooner than the delay after it was read, in the
/// order read; returns when either side closes.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    delay_ms: Arc<AtomicU64>,
) {
    let (queue, mut held) =
        tokio::sync::mpsc::unbounded_channel::<(tokio::time::Instant, Vec<u8>)>();
    let writer = async move {
        while let Some((due, chunk)) = held.recv().await {
            tokio::time::sleep_until(due).await;
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
    };
    let reader = async move {
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
            match from.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    let due = tokio::time::Instant::now()
                        + Duration::from_millis(delay_ms.load(Ordering::SeqCst));
                    if queue.send((due, buffer[..n].to_vec())).is_err() {
                        return;
                    }
                }
            }
        }
    };
    // The reader ends first on a close; what it queued is still written.
    tokio::join!(reader, writer);
}
