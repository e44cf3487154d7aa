//! What `/proc` says about processes and the machine: CPU time, peak memory, which process is
//! the broker, how many cores and how much memory there are.

use anyhow::{Context, Result};
use std::path::Path;

/// CPU time (user + system) a process has used so far, in clock ticks. `None` once it is gone.
pub fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The second field, the command name in parentheses, may itself hold spaces and
    // parentheses: count fields from the last ')'. What follows it starts at field 3 (state),
    // so utime (field 14) and stime (field 15) are its 12th and 13th words.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// Bytes the process has caused to be written to storage so far (`write_bytes` of
/// `/proc/<pid>/io`: what reached the block layer, page cache write-back included, not what it
/// merely `write`s). `None` once it is gone, or when this process may not read it.
pub fn write_bytes(pid: u32) -> Option<u64> {
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).ok()?;
    io.lines()
        .find_map(|line| line.strip_prefix("write_bytes:"))
        .and_then(|value| value.trim().parse().ok())
}

/// Context switches of every thread of the process so far: (voluntary, involuntary), summed
/// over `/proc/<pid>/task/*/status`. `None` once it is gone.
pub fn context_switches(pid: u32) -> Option<(u64, u64)> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let field = |status: &str, name: &str| -> u64 {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
            .and_then(|value| value.trim().parse().ok())
            .unwrap_or(0)
    };
    let mut sum = (0, 0);
    for task in tasks.flatten() {
        // A thread that ended since the directory was listed is skipped.
        if let Ok(status) = std::fs::read_to_string(task.path().join("status")) {
            sum.0 += field(&status, "voluntary_ctxt_switches");
            sum.1 += field(&status, "nonvoluntary_ctxt_switches");
        }
    }
    Some(sum)
}

/// Clock ticks per second of `/proc/<pid>/stat` (`getconf CLK_TCK`; 100 on Linux when it
/// cannot be asked).
pub fn ticks_per_second() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .trim()
                .parse::<f64>()
                .ok()
        })
        .filter(|t| *t > 0.0)
        .unwrap_or(100.0)
}

/// A `kB` field of `/proc/<pid>/status` (`VmHWM`, `VmRSS`), in KiB.
pub fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|value| value.split_whitespace().next())
        .and_then(|kib| kib.parse().ok())
}

/// Every process whose command name is `comm` and whose command line contains `needle`.
pub fn pids_named(comm: &str, needle: &str) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut pids: Vec<u32> = entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
        .filter(|pid: &u32| {
            let dir = Path::new("/proc").join(pid.to_string());
            let name = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
            // The command line separates its arguments with NULs.
            let cmdline = std::fs::read(dir.join("cmdline")).unwrap_or_default();
            name.trim() == comm && String::from_utf8_lossy(&cmdline).contains(needle)
        })
        .collect();
    pids.sort_unstable();
    pids
}

/// The local RabbitMQ node: the Erlang VM (`beam.smp`) that booted `rabbit`.
pub fn broker_pid() -> Result<u32> {
    pids_named("beam.smp", "rabbit")
        .first()
        .copied()
        .context("no beam.smp process running RabbitMQ found in /proc")
}

/// The machine the numbers were taken on.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Machine {
    pub cores: usize,
    pub memory_gib: f64,
    pub cpu: String,
    pub kernel: String,
}

pub fn machine() -> Machine {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let memory_kib: f64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0);
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
        .unwrap_or_else(|| "unknown".to_owned());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|k| k.trim().to_owned())
        .unwrap_or_default();
    Machine {
        cores: std::thread::available_parallelism().map_or(0, |n| n.get()),
        memory_gib: memory_kib / 1024.0 / 1024.0,
        cpu,
        kernel,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_its_own_process() {
        let me = std::process::id();
        assert!(cpu_ticks(me).is_some());
        assert!(status_kib(me, "VmHWM").is_some_and(|kib| kib > 0));
        assert!(ticks_per_second() > 0.0);
        assert!(write_bytes(me).is_some());
        assert!(context_switches(me).is_some_and(|(voluntary, _)| voluntary > 0));
    }
}
