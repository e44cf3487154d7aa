//! The async runtime a service runs on, chosen by `CHOREO_WORKER_THREADS`.
//!
//! On a small machine shared by a broker and several services, fewer threads mean fewer thread
//! hand-offs and context switches per message; docs/benchmarks.md has the measurement behind
//! the default.

use crate::CommonSettings;

/// A current-thread runtime for `worker_threads = 0`, a multi-thread one with that many workers
/// otherwise.
pub fn build(settings: &CommonSettings) -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = match settings.runtime.worker_threads {
        0 => tokio::runtime::Builder::new_current_thread(),
        workers => {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            builder.worker_threads(workers);
            builder
        }
    };
    builder.enable_all().build()
}
