//! The progress line on stderr: which phase runs, orders sent and completed, time elapsed.
//! Redrawn in place on a terminal; in a log (CI, `make bench | tee`) a line every few seconds
//! instead, so the log stays readable.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tokio::sync::watch;

#[derive(Debug)]
struct Phase {
    name: String,
    total: usize,
    started: Instant,
    /// The probe's count of arrivals, and its value when the phase began.
    completed: Option<(watch::Receiver<usize>, usize)>,
}

#[derive(Debug)]
pub struct Progress {
    phase: Mutex<Option<Phase>>,
    sent: AtomicUsize,
    run_started: Instant,
    terminal: bool,
}

impl Progress {
    /// Starts the printer; it lives as long as the process.
    pub fn start() -> Arc<Progress> {
        let progress = Arc::new(Progress {
            phase: Mutex::new(None),
            sent: AtomicUsize::new(0),
            run_started: Instant::now(),
            terminal: std::io::stderr().is_terminal(),
        });
        let printer = progress.clone();
        tokio::spawn(async move {
            let every = if printer.terminal {
                Duration::from_millis(250)
            } else {
                Duration::from_secs(5)
            };
            loop {
                tokio::time::sleep(every).await;
                printer.draw();
            }
        });
        progress
    }

    /// A new phase of `total` orders; `completed` is the probe's arrival counter, if the phase
    /// has one.
    pub fn phase(&self, name: &str, total: usize, completed: Option<watch::Receiver<usize>>) {
        self.sent.store(0, Ordering::Relaxed);
        let completed = completed.map(|counter| {
            let base = *counter.borrow();
            (counter, base)
        });
        *self.lock() = Some(Phase {
            name: name.to_owned(),
            total,
            started: Instant::now(),
            completed,
        });
        // In a log, the phase's summary line says enough about a short phase.
        if self.terminal {
            self.draw();
        }
    }

    /// One more order sent in the current phase.
    pub fn sent(&self) {
        self.sent.fetch_add(1, Ordering::Relaxed);
    }

    /// A line that stays: a phase's summary or a problem.
    pub fn note(&self, line: &str) {
        let mut stderr = std::io::stderr().lock();
        if self.terminal {
            let _ = write!(stderr, "\r\x1b[K");
        }
        let elapsed = self.run_started.elapsed().as_secs_f64();
        let _ = writeln!(stderr, "[{elapsed:6.1} s] {line}");
    }

    /// The phase is over: no more redraws until the next one.
    pub fn done(&self) {
        *self.lock() = None;
        if self.terminal {
            let _ = write!(std::io::stderr().lock(), "\r\x1b[K");
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Phase>> {
        self.phase.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn draw(&self) {
        let line = {
            let phase = self.lock();
            let Some(phase) = phase.as_ref() else {
                return;
            };
            let completed = phase
                .completed
                .as_ref()
                .map(|(counter, base)| {
                    format!(", completed {}", counter.borrow().saturating_sub(*base))
                })
                .unwrap_or_default();
            format!(
                "{}: sent {}/{}{completed}, {:.1} s",
                phase.name,
                self.sent.load(Ordering::Relaxed),
                phase.total,
                phase.started.elapsed().as_secs_f64()
            )
        };
        let mut stderr = std::io::stderr().lock();
        if self.terminal {
            let _ = write!(stderr, "\r\x1b[K{line}");
            let _ = stderr.flush();
        } else {
            let elapsed = self.run_started.elapsed().as_secs_f64();
            let _ = writeln!(stderr, "[{elapsed:6.1} s] {line}");
        }
    }
}
