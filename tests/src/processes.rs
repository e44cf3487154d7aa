//! Services as real processes (the release binaries), for the fault matrix and the benchmark:
//! what `kill -9`, SIGTERM and failpoint aborts need, which in-process services cannot give.

use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::process::{Child, Command};

/// The environment of one service process of an isolated suite.
pub fn service_env(
    prefix: &str,
    port: u16,
    data_dir: &Path,
    database_url: &str,
) -> Vec<(String, String)> {
    vec![
        ("CHOREO_AMQP_URL".to_owned(), crate::amqp_urls()),
        ("CHOREO_HTTP_ADDR".to_owned(), format!("127.0.0.1:{port}")),
        ("CHOREO_DATA_DIR".to_owned(), data_dir.display().to_string()),
        ("CHOREO_DATABASE_URL".to_owned(), database_url.to_owned()),
        ("CHOREO_PREFIX".to_owned(), prefix.to_owned()),
        ("CHOREO_RECONNECT_MAX_MS".to_owned(), "2000".to_owned()),
        ("CHOREO_LOG_FORMAT".to_owned(), "json".to_owned()),
        (
            "RUST_LOG".to_owned(),
            "warn,choreo_messaging=info".to_owned(),
        ),
    ]
}

/// A free port below the kernel's ephemeral range (32768 and up on Linux), so that while a
/// killed service is down, no outgoing connection can be handed its port as a source port.
pub fn free_port() -> Result<u16> {
    use rand::Rng;
    for _ in 0..100 {
        let port = rand::thread_rng().gen_range(20_000..32_000);
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    bail!("no free port between 20000 and 32000")
}

/// One running service process.
#[derive(Debug)]
pub struct Proc {
    pub service: &'static str,
    pub port: u16,
    pub env: Vec<(String, String)>,
    pub log: PathBuf,
    pub child: Option<Child>,
}

impl Proc {
    pub fn start(&mut self, bin_dir: &Path, extra: &[(&str, &str)]) -> Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let mut command = Command::new(bin_dir.join(self.service));
        command.envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        for (k, v) in extra {
            command.env(k, v);
        }
        command
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .stdin(Stdio::null())
            .kill_on_drop(true);
        self.child = Some(
            command
                .spawn()
                .with_context(|| format!("spawn {}", self.service))?,
        );
        Ok(())
    }

    /// The process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    /// Whether the process has already exited, with its exit code (-1 for a signal).
    pub fn exited(&mut self) -> Option<i32> {
        let child = self.child.as_mut()?;
        match child.try_wait() {
            Ok(Some(status)) => Some(status.code().unwrap_or(-1)),
            _ => None,
        }
    }

    /// The last `lines` lines of the process's log, to say why it failed.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill().await;
        }
    }

    /// SIGTERM, then waits for the exit; returns the exit code.
    pub async fn terminate(&mut self) -> Result<i32> {
        let Some(mut child) = self.child.take() else {
            return Ok(0);
        };
        if let Some(pid) = child.id() {
            std::process::Command::new("kill")
                .arg("-TERM")
                .arg(pid.to_string())
                .status()?;
        }
        let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
            .await
            .context("no exit within 30 s of SIGTERM")??;
        Ok(status.code().unwrap_or(-1))
    }
}
