//! What a test process leaves on the broker and in PostgreSQL when it is ended by a signal.
//!
//! A [`Suite`](crate::Suite) removes its exchanges, queues and databases when dropped. A test
//! ended by SIGTERM or SIGINT never drops it: nextest ends a test that runs past its time that
//! way (as `make mutants` does with a mutant that spins), and so does Ctrl-C. Its quorum queues
//! then stay on the broker for good, and a few hundred of them left by a mutation run made
//! RabbitMQ 3.10 on this 2-core machine stop answering logins. So every suite registers what it
//! owns here, and the first one starts a thread that waits for either signal, removes what the
//! live suites own, and ends the process as the signal would have. (SIGKILL cannot be caught;
//! `make mutants` sweeps what is left after each group, `e2e-service sweep`.)

use std::collections::BTreeMap;
use std::sync::{Mutex, Once};

/// What one live suite owns: its name prefix (None when the test chose it and cleans up itself)
/// and its PostgreSQL databases.
struct Owned {
    prefix: Option<String>,
    databases: Vec<String>,
}

static LIVE: Mutex<BTreeMap<u64, Owned>> = Mutex::new(BTreeMap::new());
static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Registers a live suite's topology prefix and databases; returns the key that
/// [`release`] takes when the suite cleans up after itself.
pub(crate) fn register(prefix: Option<String>, databases: Vec<String>) -> u64 {
    static WATCH: Once = Once::new();
    WATCH.call_once(|| {
        std::thread::Builder::new()
            .name("e2e-leftovers".to_owned())
            .spawn(watch)
            .expect("the leftovers thread starts");
    });
    let key = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    LIVE.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .insert(key, Owned { prefix, databases });
    key
}

/// The suite removes what it owns itself (it is being dropped).
pub(crate) fn release(key: u64) {
    LIVE.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .remove(&key);
}

/// Waits for SIGTERM or SIGINT, removes every live suite's topology and databases, and exits
/// with the signal's conventional status (143 or 130).
fn watch() {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return;
    };
    let status = runtime.block_on(async {
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            return None;
        };
        let status = tokio::select! {
            _ = term.recv() => 143,
            _ = int.recv() => 130,
        };
        let live = std::mem::take(
            &mut *LIVE
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        for owned in live.into_values() {
            if let Some(prefix) = &owned.prefix {
                crate::delete_topology(prefix, crate::RETRY_DELAYS_MS).await;
            }
            crate::drop_databases(&owned.databases).await;
        }
        Some(status)
    });
    if let Some(status) = status {
        std::process::exit(status);
    }
}
