//! What each process spends per order over a phase: CPU (user + system time from
//! `/proc/<pid>/stat`), bytes written to storage (`write_bytes` of `/proc/<pid>/io`) and
//! context switches (voluntary and involuntary, summed over `/proc/<pid>/task/*/status`),
//! read before and after and divided by the orders completed in between. What an order costs,
//! wherever it is spent: the services, the observer, the broker, PostgreSQL, the load generator.
//!
//! Context switches are summed over the threads alive at each reading: a thread that ends
//! within the phase takes its count with it (the services' threads live as long as they do;
//! SQLite's and Tokio's blocking threads may come and go).

use crate::procfs;
use serde::Serialize;

/// A process, or a group of processes counted together (PostgreSQL's backends).
#[derive(Debug, Clone)]
pub struct Watched {
    pub label: String,
    pub pids: Vec<u32>,
    /// What the process is, for the totals: a part of the suite, the broker, or neither.
    pub role: Role,
}

/// Which total a process counts in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// orders, billing, shipping.
    Service,
    Observer,
    Broker,
    /// PostgreSQL, when the deployment is on it.
    Database,
    /// The bench itself: counted apart, never in the machine's total.
    LoadGenerator,
}

impl Watched {
    pub fn one(label: &str, pid: u32, role: Role) -> Watched {
        Watched {
            label: label.to_owned(),
            pids: vec![pid],
            role,
        }
    }
}

/// One reading of a process's counters; `None` where `/proc` would not say (a process gone, or
/// `io` of another user's process without the right to read it).
#[derive(Debug, Clone, Copy, Default)]
struct Reading {
    ticks: Option<u64>,
    write_bytes: Option<u64>,
    switches: Option<(u64, u64)>,
}

impl Reading {
    fn of(pid: u32) -> Reading {
        Reading {
            ticks: procfs::cpu_ticks(pid),
            write_bytes: procfs::write_bytes(pid),
            switches: procfs::context_switches(pid),
        }
    }
}

/// What one watched process (or group) spent over a phase, per order.
#[derive(Debug, Clone, Serialize)]
pub struct Usage {
    pub process: String,
    pub role: Role,
    pub cpu_seconds: f64,
    /// CPU seconds per 1,000 orders: milliseconds of CPU per order.
    pub per_1000_orders: f64,
    /// Kilobytes (1,000 bytes) written to storage per order; None when `/proc` would not say.
    pub write_kb_per_order: Option<f64>,
    /// Context switches per order: voluntary (the thread waited) and involuntary (it was
    /// preempted).
    pub voluntary_switches_per_order: Option<f64>,
    pub involuntary_switches_per_order: Option<f64>,
}

/// The counters taken at the start of a phase.
#[derive(Debug)]
pub struct UsageMeter {
    start: Vec<(Watched, Vec<Reading>)>,
    ticks_per_second: f64,
}

impl UsageMeter {
    pub fn start(watched: Vec<Watched>) -> UsageMeter {
        let start = watched
            .into_iter()
            .map(|w| {
                let readings = w.pids.iter().map(|pid| Reading::of(*pid)).collect();
                (w, readings)
            })
            .collect();
        UsageMeter {
            start,
            ticks_per_second: procfs::ticks_per_second(),
        }
    }

    /// What each watched process spent since `start`, per order of `orders`. A process of a
    /// group that was not there at both ends (a PostgreSQL backend that came or went) is left
    /// out of its group.
    pub fn finish(&self, orders: usize) -> Vec<Usage> {
        let orders = orders.max(1) as f64;
        self.start
            .iter()
            .map(|(watched, before)| {
                let after: Vec<Reading> =
                    watched.pids.iter().map(|pid| Reading::of(*pid)).collect();
                let ticks = spent(before, &after, |r| r.ticks);
                let written = spent(before, &after, |r| r.write_bytes);
                let voluntary = spent(before, &after, |r| r.switches.map(|s| s.0));
                let involuntary = spent(before, &after, |r| r.switches.map(|s| s.1));
                let cpu_seconds = ticks.unwrap_or(0) as f64 / self.ticks_per_second;
                Usage {
                    process: watched.label.clone(),
                    role: watched.role,
                    cpu_seconds,
                    per_1000_orders: cpu_seconds * 1000.0 / orders,
                    write_kb_per_order: written.map(|b| b as f64 / 1000.0 / orders),
                    voluntary_switches_per_order: voluntary.map(|n| n as f64 / orders),
                    involuntary_switches_per_order: involuntary.map(|n| n as f64 / orders),
                }
            })
            .collect()
    }
}

/// The sum over a group of what each counter grew by, counting only the processes read at both
/// ends; None when none was.
fn spent(
    before: &[Reading],
    after: &[Reading],
    counter: impl Fn(&Reading) -> Option<u64>,
) -> Option<u64> {
    before
        .iter()
        .zip(after)
        .filter_map(|(b, a)| Some(counter(a)?.saturating_sub(counter(b)?)))
        .reduce(|x, y| x + y)
}

/// The totals of a phase's usage: the three services, the observer, the broker, and the
/// machine (every watched process but the load generator).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Totals {
    /// Milliseconds of CPU per order.
    pub services_cpu_ms: f64,
    pub observer_cpu_ms: f64,
    pub broker_cpu_ms: f64,
    pub machine_cpu_ms: f64,
    /// Kilobytes written per order by every process but the load generator (those `/proc`
    /// would tell).
    pub machine_write_kb: f64,
}

impl Totals {
    pub fn of(usage: &[Usage]) -> Totals {
        let mut totals = Totals::default();
        for u in usage {
            match u.role {
                Role::Service => totals.services_cpu_ms += u.per_1000_orders,
                Role::Observer => totals.observer_cpu_ms += u.per_1000_orders,
                Role::Broker => totals.broker_cpu_ms += u.per_1000_orders,
                Role::Database | Role::LoadGenerator => {}
            }
            if u.role != Role::LoadGenerator {
                totals.machine_cpu_ms += u.per_1000_orders;
                totals.machine_write_kb += u.write_kb_per_order.unwrap_or(0.0);
            }
        }
        totals
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(role: Role, cpu_ms: f64, kb: Option<f64>) -> Usage {
        Usage {
            process: format!("{role:?}"),
            role,
            cpu_seconds: 0.0,
            per_1000_orders: cpu_ms,
            write_kb_per_order: kb,
            voluntary_switches_per_order: None,
            involuntary_switches_per_order: None,
        }
    }

    #[test]
    fn the_machine_total_leaves_out_the_load_generator_and_each_role_has_its_own() {
        let totals = Totals::of(&[
            usage(Role::Service, 0.5, Some(30.0)),
            usage(Role::Service, 0.25, None),
            usage(Role::Observer, 0.125, Some(10.0)),
            usage(Role::Broker, 1.0, Some(16.0)),
            usage(Role::LoadGenerator, 4.0, Some(100.0)),
        ]);
        assert_eq!(
            totals,
            Totals {
                services_cpu_ms: 0.75,
                observer_cpu_ms: 0.125,
                broker_cpu_ms: 1.0,
                machine_cpu_ms: 1.875,
                machine_write_kb: 56.0,
            }
        );
    }

    #[test]
    fn a_group_counts_only_the_processes_read_at_both_ends() {
        let reading = |ticks| Reading {
            ticks,
            ..Reading::default()
        };
        let before = [reading(Some(10)), reading(None), reading(Some(5))];
        let after = [reading(Some(15)), reading(Some(50)), reading(None)];
        assert_eq!(spent(&before, &after, |r| r.ticks), Some(5));
        assert_eq!(spent(&before[1..2], &after[1..2], |r| r.ticks), None);
    }

    #[test]
    fn its_own_process_spends_cpu_and_switches() {
        let meter = UsageMeter::start(vec![Watched::one(
            "me",
            std::process::id(),
            Role::LoadGenerator,
        )]);
        // Busy until the kernel has counted a tick of CPU (bounded), then one sleep: a
        // voluntary switch.
        let (me, started) = (std::process::id(), std::time::Instant::now());
        let first = procfs::cpu_ticks(me).expect("own ticks");
        while procfs::cpu_ticks(me).expect("own ticks") == first
            && started.elapsed() < std::time::Duration::from_secs(10)
        {
            std::hint::black_box(0);
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
        let usage = meter.finish(1);
        assert!(usage[0].cpu_seconds > 0.0, "{usage:?}");
        assert!(
            usage[0]
                .voluntary_switches_per_order
                .is_some_and(|n| n >= 1.0),
            "{usage:?}"
        );
    }
}
