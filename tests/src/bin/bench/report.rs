//! The results as markdown tables (printed to the terminal, and with a header saying how, when
//! and where they were taken, written to `--report`) and as JSON (`--json`).

use crate::results::{EVENTS_PER_ORDER, Results};
use anyhow::{Context, Result};
use std::fmt::Write as _;
use std::path::Path;

/// Every table of the run.
pub fn tables(results: &Results) -> String {
    let mut out = String::new();
    broker(&mut out, results);
    throughput(&mut out, results);
    baseline(&mut out, results);
    open_loop(&mut out, results);
    one_at_a_time(&mut out, results);
    per_order(&mut out, results);
    errors(&mut out, results);
    out
}

/// The report file: what was run, when, on what, then every table.
pub fn markdown(results: &Results) -> String {
    let machine = &results.machine;
    let env = if results.settings.env.is_empty() {
        "none".to_owned()
    } else {
        results
            .settings
            .env
            .iter()
            .map(|e| format!("`{e}`"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut out = String::new();
    let _ = writeln!(out, "# Benchmark: last run\n");
    let _ = writeln!(out, "- command: `{}`", results.command);
    let _ = writeln!(out, "- date: {}", results.date);
    let _ = writeln!(
        out,
        "- source: {} (the commit of the tree the bench ran in; `make bench` builds the binaries \
         in `{}` from it)",
        results
            .source
            .as_deref()
            .map_or_else(|| "not a git checkout".to_owned(), |c| format!("`{c}`")),
        results.settings.bin_dir
    );
    let _ = writeln!(
        out,
        "- machine: {} cores ({}), {:.1} GiB RAM, Linux {}; the broker, PostgreSQL, the services \
         and the load generator all on it, talking over loopback",
        machine.cores, machine.cpu, machine.memory_gib, machine.kernel
    );
    let _ = writeln!(
        out,
        "- settings: {} orders per closed loop from {} clients (after {} warm-up orders), {} s per \
         open-loop phase, {} orders one at a time; extra service settings: {env}",
        results.settings.orders,
        results.settings.concurrency,
        results.settings.warmup,
        results.settings.phase_secs,
        results.settings.sequential
    );
    let _ = writeln!(out, "- took {:.0} s\n", results.seconds);
    let _ = writeln!(
        out,
        "How each number is taken and how to read it: [benchmarks.md](benchmarks.md).\n"
    );
    out.push_str(&tables(results));
    out
}

pub fn write_markdown(path: &Path, results: &Results) -> Result<()> {
    std::fs::write(path, markdown(results)).with_context(|| format!("write {}", path.display()))
}

pub fn write_json(path: &Path, results: &Results) -> Result<()> {
    let json = serde_json::to_string_pretty(results)?;
    std::fs::write(path, json + "\n").with_context(|| format!("write {}", path.display()))
}

fn broker(out: &mut String, results: &Results) {
    let _ = writeln!(out, "## The broker alone\n");
    let _ = writeln!(out, "| measure | value |\n|---|---:|");
    if let Some(ceiling) = &results.ceiling {
        let _ = writeln!(
            out,
            "| ceiling: persistent, confirmed publishes to a quorum queue, consumed with acks ({} messages) | {} msg/s |",
            thousands(ceiling.messages as f64),
            thousands(ceiling.messages_per_sec)
        );
    }
    if let Some(floor) = &results.floor {
        let _ = writeln!(
            out,
            "| floor: three hops, one message at a time, p50 / p99 ({} trips) | {} / {} ms |",
            floor.samples,
            ms(floor.p50),
            ms(floor.p99)
        );
    }
    out.push('\n');
}

fn throughput(out: &mut String, results: &Results) {
    let _ = writeln!(
        out,
        "## Throughput, closed loop\n\nOrders from the first send to the last terminal event at \
         the probe; events/s = {EVENTS_PER_ORDER} x orders/s; latency from each send to its \
         terminal event, mostly waiting behind the backlog.\n"
    );
    let _ = writeln!(
        out,
        "| deployment | orders | clients | seconds | orders/s | events/s | of the broker's ceiling | latency p50 / p99 (ms) | shed per order placed |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for deployment in results.deployments.iter().chain(&results.baseline) {
        let Some(closed) = &deployment.closed_loop else {
            let _ = writeln!(out, "| {} | failed | | | | | | | |", deployment.name);
            continue;
        };
        let overload = deployment
            .overload
            .as_ref()
            .map(|o| (format!("{}, overload", deployment.name), o));
        for (name, closed) in std::iter::once((deployment.name.clone(), closed)).chain(overload) {
            let share = results
                .share_of_ceiling(closed.orders_per_sec)
                .map(|s| format!("{:.0}%", s * 100.0))
                .unwrap_or_default();
            let latency = closed
                .latency
                .map(|l| format!("{} / {}", ms(l.p50), ms(l.p99)))
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "| {} | {} | {} | {:.1} | {} | {} | {share} | {latency} | {:.2} |",
                name,
                thousands(closed.orders as f64),
                closed.clients,
                closed.seconds,
                thousands(closed.orders_per_sec),
                thousands(closed.orders_per_sec * EVENTS_PER_ORDER),
                closed.shed as f64 / closed.orders.max(1) as f64,
            );
        }
    }
    out.push('\n');
}

fn baseline(out: &mut String, results: &Results) {
    let new = results.deployments.iter().find(|d| d.key == "sqlite");
    let (Some(baseline), Some(new)) = (&results.baseline, new) else {
        return;
    };
    let rate = |d: &crate::scenario::DeploymentResult| {
        d.closed_loop
            .as_ref()
            .map_or("failed".to_owned(), |c| thousands(c.orders_per_sec))
    };
    let _ = writeln!(
        out,
        "## Against the baseline (SQLite, 1 replica, no observer, quiet logs; closed loop)\n"
    );
    let _ = writeln!(out, "| binaries | orders/s |\n|---|---:|");
    let _ = writeln!(
        out,
        "| new: `{}` | {} |",
        results.settings.bin_dir,
        rate(new)
    );
    let _ = writeln!(
        out,
        "| baseline: `{}` | {} |",
        results.settings.baseline_bin_dir.as_deref().unwrap_or("?"),
        rate(baseline)
    );
    if let Some(ratio) = results.baseline_ratio {
        let _ = writeln!(out, "| **new / baseline** | **{ratio:.2}** |");
    }
    out.push('\n');
}

fn open_loop(out: &mut String, results: &Results) {
    let _ = writeln!(
        out,
        "## Latency, open loop\n\nOrders sent on a fixed schedule; latency from each order's \
         intended send time to its terminal event at the probe, in ms.\n"
    );
    let _ = writeln!(
        out,
        "| deployment | rate asked | achieved | orders | shed, sent again | p50 | p90 | p99 | p99.9 | max |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for deployment in &results.deployments {
        for phase in &deployment.open_loop {
            let asked = format!("{}/s ({})", thousands(phase.rate), phase.target);
            let Some(l) = &phase.latency else {
                let _ = writeln!(
                    out,
                    "| {} | {asked} | none completed | | | | | | | |",
                    deployment.name
                );
                continue;
            };
            let _ = writeln!(
                out,
                "| {} | {asked} | {}/s | {} | {} | {} | {} | {} | {} | {} |",
                deployment.name,
                thousands(phase.achieved),
                thousands(phase.orders as f64),
                thousands(phase.shed as f64),
                ms(l.p50),
                ms(l.p90),
                ms(l.p99),
                ms(l.p999),
                ms(l.max)
            );
        }
    }
    out.push('\n');
}

fn one_at_a_time(out: &mut String, results: &Results) {
    let _ = writeln!(
        out,
        "## One order at a time\n\nEach order sent once the last one completed; ms.\n"
    );
    let _ = writeln!(out, "| path | samples | p50 | p99 | p50 over the floor |");
    let _ = writeln!(out, "|---|---:|---:|---:|---:|");
    if let Some(floor) = &results.floor {
        let _ = writeln!(
            out,
            "| the floor: three broker hops, nothing else | {} | {} | {} | |",
            floor.samples,
            ms(floor.p50),
            ms(floor.p99)
        );
    }
    for deployment in &results.deployments {
        let Some(latency) = &deployment.one_at_a_time else {
            continue;
        };
        let over = results
            .floor
            .as_ref()
            .filter(|f| f.p50 > 0.0)
            .map(|f| format!("{:.1}x", latency.p50 / f.p50))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "| {}: POST → order.completed at the probe | {} | {} | {} | {over} |",
            deployment.name,
            latency.samples,
            ms(latency.p50),
            ms(latency.p99)
        );
    }
    out.push('\n');
}

fn per_order(out: &mut String, results: &Results) {
    let _ = writeln!(
        out,
        "## What each process spends per order\n\nOver the closed loop (saturation) and over the \
         open loop at the fixed rate (steady), divided by the orders completed in it: CPU (user + \
         system) in ms per order, which is CPU s per 1,000 orders; kilobytes written to storage \
         (`write_bytes` of `/proc/<pid>/io`); context switches, voluntary / involuntary, summed \
         over the process's threads. Peak resident memory (VmHWM) of each process at the end of \
         its deployment.\n"
    );
    let _ = writeln!(
        out,
        "| deployment | load | process | CPU ms / order | KB written / order | switches / order | peak RSS (MiB) |"
    );
    let _ = writeln!(out, "|---|---|---|---:|---:|---:|---:|");
    let mut totals = Vec::new();
    for deployment in results.deployments.iter().chain(&results.baseline) {
        let mut phases = vec![(
            "closed loop".to_owned(),
            &deployment.cpu,
            deployment.cpu_totals,
        )];
        if let Some(steady) = &deployment.steady {
            phases.push((
                format!("{}/s", thousands(steady.rate)),
                &steady.usage,
                Some(steady.totals),
            ));
        }
        for (load, usage, total) in phases {
            for u in usage {
                let memory = deployment
                    .memory
                    .iter()
                    .find(|m| m.process == u.process)
                    .map(|m| format!("{:.1}", m.peak_rss_mib))
                    .unwrap_or_default();
                let written = u
                    .write_kb_per_order
                    .map(|kb| format!("{kb:.1}"))
                    .unwrap_or_default();
                let switches = match (
                    u.voluntary_switches_per_order,
                    u.involuntary_switches_per_order,
                ) {
                    (Some(v), Some(i)) => format!("{v:.1} / {i:.1}"),
                    _ => String::new(),
                };
                let _ = writeln!(
                    out,
                    "| {} | {load} | {} | {:.2} | {written} | {switches} | {memory} |",
                    deployment.name, u.process, u.per_1000_orders
                );
            }
            if let Some(total) = total {
                totals.push((deployment.name.clone(), load, total));
            }
        }
    }
    out.push('\n');
    if totals.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "## Per order, in total\n\nThe machine: every process above but the load generator.\n"
    );
    let _ = writeln!(
        out,
        "| deployment | load | services CPU ms | observer CPU ms | broker CPU ms | machine CPU ms | machine KB written |"
    );
    let _ = writeln!(out, "|---|---|---:|---:|---:|---:|---:|");
    for (name, load, t) in totals {
        let _ = writeln!(
            out,
            "| {name} | {load} | {:.2} | {:.2} | {:.2} | **{:.2}** | **{:.1}** |",
            t.services_cpu_ms,
            t.observer_cpu_ms,
            t.broker_cpu_ms,
            t.machine_cpu_ms,
            t.machine_write_kb
        );
    }
    out.push('\n');
}

fn errors(out: &mut String, results: &Results) {
    if results.errors.is_empty() {
        let _ = writeln!(out, "No errors: every order placed completed.");
        return;
    }
    let _ = writeln!(out, "## Errors ({})\n", results.errors.len());
    for error in &results.errors {
        // Indented continuation lines (log tails) stay inside the list item.
        let _ = writeln!(out, "- {}", error.replace('\n', "\n  "));
    }
}

/// 12345.6 -> "12,346".
fn thousands(value: f64) -> String {
    let digits = format!("{:.0}", value.abs());
    let mut grouped = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(c);
    }
    if value < -0.5 {
        grouped.insert(0, '-');
    }
    grouped
}

/// Milliseconds: one decimal below 100, none above.
fn ms(value: f64) -> String {
    if value < 100.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.0}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_numbers() {
        assert_eq!(thousands(0.0), "0");
        assert_eq!(thousands(999.4), "999");
        assert_eq!(thousands(13705.2), "13,705");
        assert_eq!(thousands(1234567.0), "1,234,567");
        assert_eq!(ms(2.34), "2.3");
        assert_eq!(ms(123.4), "123");
    }
}
