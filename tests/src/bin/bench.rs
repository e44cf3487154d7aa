//! `bench`: how fast the suite is, next to how fast the broker itself is on the same machine.
//!
//! 1. The broker alone: persistent messages published with confirms (a window of outstanding
//!    publishes, as the relay does) to a quorum queue and consumed with manual acks on another
//!    connection: messages per second through one hop.
//! 2. The suite: the release binaries as processes on SQLite; `--orders` happy-path orders posted
//!    with `--concurrency` clients; throughput from the first order's creation to the last one's
//!    completion, and latency per order from `created_at` to the commit that completed it.
//! 3. Memory: peak resident set (VmHWM) of each service process after the run.
//!
//! ```text
//! bench [--orders N] [--concurrency C] [--report FILE] [--bin-dir DIR]
//! ```

use anyhow::{Context, Result, bail};
use choreo_e2e::processes::{Proc, free_port, service_env};
use choreo_e2e::{amqp_url, delete_topology, order_request};
use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Connection, ConnectionProperties};
use sqlx::Row;
use std::path::PathBuf;
use std::time::{Duration, Instant};

struct Args {
    orders: usize,
    concurrency: usize,
    report: Option<PathBuf>,
    bin_dir: PathBuf,
}

fn parse_args() -> Result<Args> {
    let mut args = Args {
        orders: 5000,
        concurrency: 32,
        report: None,
        bin_dir: PathBuf::from("target/release"),
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--orders" => args.orders = it.next().context("--orders N")?.parse()?,
            "--concurrency" => args.concurrency = it.next().context("--concurrency C")?.parse()?,
            "--report" => args.report = Some(it.next().context("--report FILE")?.into()),
            "--bin-dir" => args.bin_dir = it.next().context("--bin-dir DIR")?.into(),
            other => bail!("unknown argument {other}"),
        }
    }
    Ok(args)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let args = parse_args()?;
    let broker_rate = broker_baseline(args.orders * 4).await?;
    let suite = suite_run(&args).await?;
    let events_rate = suite.orders_per_sec * 4.0;
    let mut out = String::new();
    out.push_str("| measure | value |\n|---|---:|\n");
    out.push_str(&format!("| broker alone: persistent, confirmed, quorum queue, consumed with acks (msg/s) | {broker_rate:.0} |\n"));
    out.push_str(&format!(
        "| suite: orders completed per second ({} orders, {} clients) | {:.0} |\n",
        args.orders, args.concurrency, suite.orders_per_sec
    ));
    out.push_str(&format!("| suite: events published per second (4 per order) | {events_rate:.0} ({:.0}% of the broker alone) |\n", 100.0 * events_rate / broker_rate));
    for (phase, latency) in [
        (
            format!("paced at {:.0} orders/s", suite.paced_rate),
            &suite.paced,
        ),
        (
            "during the burst (mostly queueing)".to_owned(),
            &suite.burst,
        ),
    ] {
        out.push_str(&format!(
            "| latency placed → completed, {phase}: p50 / p90 / p99 / max (ms) | {} / {} / {} / {} |\n",
            latency.p50, latency.p90, latency.p99, latency.max
        ));
    }
    for (service, hwm, rss) in &suite.memory {
        out.push_str(&format!(
            "| {service}: peak / final resident memory (MiB) | {:.1} / {:.1} |\n",
            *hwm as f64 / 1024.0,
            *rss as f64 / 1024.0
        ));
    }
    println!("{out}");
    if let Some(path) = &args.report {
        let command = std::env::args().collect::<Vec<_>>().join(" ");
        std::fs::write(
            path,
            format!(
                "# Benchmark: last run\n\n`{command}` on this project's machine (2 cores), broker and services on loopback.\n\n{out}"
            ),
        )?;
    }
    Ok(())
}

/// Messages per second through one confirmed publish and one acked delivery.
async fn broker_baseline(count: usize) -> Result<f64> {
    let queue = format!("bench-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let publishing = Connection::connect(&amqp_url(), ConnectionProperties::default()).await?;
    let consuming = Connection::connect(&amqp_url(), ConnectionProperties::default()).await?;
    let channel = publishing.create_channel().await?;
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString(LongString::from("quorum")),
    );
    channel
        .queue_declare(
            queue.as_str().into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            args,
        )
        .await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let consumer_channel = consuming.create_channel().await?;
    consumer_channel
        .basic_qos(64, BasicQosOptions::default())
        .await?;
    let mut consumer = consumer_channel
        .basic_consume(
            queue.as_str().into(),
            "bench".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let body = vec![b'x'; 700]; // about the size of an order.placed envelope
    let started = Instant::now();
    let consume = async {
        let mut received = 0;
        while received < count {
            let delivery = consumer.next().await.context("consumer ended")??;
            delivery.acker.ack(BasicAckOptions::default()).await?;
            received += 1;
        }
        Ok::<_, anyhow::Error>(())
    };
    let publish = async {
        let mut window = std::collections::VecDeque::new();
        for _ in 0..count {
            let confirm = channel
                .basic_publish(
                    "".into(),
                    queue.as_str().into(),
                    BasicPublishOptions::default(),
                    &body,
                    BasicProperties::default().with_delivery_mode(2),
                )
                .await?;
            window.push_back(confirm);
            if window.len() >= 256
                && let Some(confirm) = window.pop_front()
            {
                confirm.await?;
            }
        }
        for confirm in window {
            confirm.await?;
        }
        Ok::<_, anyhow::Error>(())
    };
    let (published, consumed) = tokio::join!(publish, consume);
    published?;
    consumed?;
    let rate = count as f64 / started.elapsed().as_secs_f64();
    channel
        .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
        .await?;
    let _ = publishing.close(200, "done".into()).await;
    let _ = consuming.close(200, "done".into()).await;
    eprintln!("broker alone: {count} messages, {rate:.0} msg/s");
    Ok(rate)
}

/// Latency percentiles of one phase, in milliseconds.
struct Latency {
    p50: i64,
    p90: i64,
    p99: i64,
    max: i64,
}

struct SuiteResult {
    orders_per_sec: f64,
    /// The burst: every order posted as fast as the clients go, so latency is mostly queueing.
    burst: Latency,
    /// Orders paced at half the measured throughput: the latency of one order in a busy system.
    paced_rate: f64,
    paced: Latency,
    memory: Vec<(String, u64, u64)>,
}

async fn suite_run(args: &Args) -> Result<SuiteResult> {
    let prefix = format!("bench-{}.", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let dir = tempfile::tempdir()?;
    let mut procs = Vec::new();
    for service in ["orders", "billing", "shipping"] {
        let port = free_port()?;
        let env = service_env(&prefix, port, dir.path(), "");
        let log = dir.path().join(format!("{service}.log"));
        let mut proc = Proc {
            service,
            port,
            env,
            log,
            child: None,
        };
        proc.start(&args.bin_dir, &[])?;
        procs.push(proc);
    }
    let result = measure(args, &procs, dir.path()).await;
    for proc in &mut procs {
        let _ = proc.terminate().await;
    }
    delete_topology(&prefix, &[1000, 5000, 30000]).await;
    result
}

async fn measure(args: &Args, procs: &[Proc], data_dir: &std::path::Path) -> Result<SuiteResult> {
    let http = reqwest::Client::new();
    let started = Instant::now();
    for proc in procs {
        while !matches!(http.get(proc.url("/readyz")).send().await, Ok(r) if r.status() == 200) {
            if started.elapsed() > Duration::from_secs(60) {
                bail!("{} not ready", proc.service);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let orders_url = procs[0].url("/orders");
    let body = order_request(1200, 1, "DE");
    sqlx::any::install_default_drivers();
    let url = format!("sqlite://{}/orders.db?mode=ro", data_dir.display());
    let pool = sqlx::any::AnyPoolOptions::new()
        .max_connections(1)
        .connect(&url)
        .await?;

    // Phase 1, throughput: a burst of orders from `concurrency` clients.
    let placed = futures_util::stream::iter(0..args.orders)
        .map(|_| {
            let request = http.post(&orders_url).json(&body).send();
            async move { matches!(request.await, Ok(r) if r.status() == 201) }
        })
        .buffer_unordered(args.concurrency)
        .filter(|ok| std::future::ready(*ok))
        .count()
        .await;
    if placed != args.orders {
        bail!("only {placed} of {} orders were accepted", args.orders);
    }
    wait_completed(&pool, args.orders).await?;
    let (burst, first, last) = latencies(&pool, "").await?;
    let orders_per_sec = args.orders as f64 / ((last - first).max(1) as f64 / 1000.0);
    let phase_two = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);

    // Phase 2, latency: orders paced at half that rate, each on its own.
    let paced_rate = (orders_per_sec / 2.0).max(1.0);
    let paced_count = args.orders / 2;
    let mut ticks = tokio::time::interval(Duration::from_secs_f64(1.0 / paced_rate));
    let mut posts = tokio::task::JoinSet::new();
    for _ in 0..paced_count {
        ticks.tick().await;
        let request = http.post(&orders_url).json(&body).send();
        posts.spawn(async move { matches!(request.await, Ok(r) if r.status() == 201) });
    }
    let accepted = posts.join_all().await.into_iter().filter(|ok| *ok).count();
    if accepted != paced_count {
        bail!("only {accepted} of {paced_count} paced orders were accepted");
    }
    wait_completed(&pool, args.orders + paced_count).await?;
    let (paced, _, _) = latencies(&pool, &phase_two).await?;

    let mut memory = Vec::new();
    for proc in procs {
        let pid = proc.child.as_ref().and_then(|c| c.id()).context("pid")?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let field = |name: &str| {
            status
                .lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        memory.push((proc.service.to_owned(), field("VmHWM:"), field("VmRSS:")));
    }
    pool.close().await;
    Ok(SuiteResult {
        orders_per_sec,
        burst,
        paced_rate,
        paced,
        memory,
    })
}

async fn wait_completed(pool: &sqlx::AnyPool, count: usize) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let done: i64 = sqlx::query("SELECT COUNT(*) AS n FROM orders WHERE status = 'completed'")
            .fetch_one(pool)
            .await?
            .try_get("n")?;
        if done as usize >= count {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("only {done} of {count} orders completed within 300 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Latency from creation to completion of the orders created at or after `since` (RFC 3339, so
/// text order is time order), with the first creation and last completion in epoch ms.
async fn latencies(pool: &sqlx::AnyPool, since: &str) -> Result<(Latency, i64, i64)> {
    let rows = sqlx::query("SELECT created_at, updated_at FROM orders WHERE created_at >= $1")
        .bind(since)
        .fetch_all(pool)
        .await?;
    let parse =
        |text: String| chrono::DateTime::parse_from_rfc3339(&text).map(|t| t.timestamp_millis());
    let mut all = Vec::with_capacity(rows.len());
    let (mut first, mut last) = (i64::MAX, i64::MIN);
    for row in rows {
        let created = parse(row.try_get("created_at")?)?;
        let completed = parse(row.try_get("updated_at")?)?;
        first = first.min(created);
        last = last.max(completed);
        all.push(completed - created);
    }
    if all.is_empty() {
        bail!("no orders to measure");
    }
    all.sort_unstable();
    let at = |q: f64| all[((all.len() as f64 - 1.0) * q).round() as usize];
    Ok((
        Latency {
            p50: at(0.5),
            p90: at(0.9),
            p99: at(0.99),
            max: at(1.0),
        },
        first,
        last,
    ))
}
